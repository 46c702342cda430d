"""``python -m stepgym ...``: the ``stepgym`` command (also under ``torchrun -m stepgym``)."""

import sys

from stepgym.cli import main

sys.exit(main())
