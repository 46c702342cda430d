"""Root pytest configuration: the docstring examples of stepgym and steppo run as tests.

``--doctest-modules`` (see ``[tool.pytest.ini_options]`` in pyproject.toml) collects every
module of both packages. The test command installs the ``all`` extra, so everything below is
a no-op there; it only keeps a partial install (say without ``train``) from erroring:

* ``collect_ignore`` / ``collect_ignore_glob``: modules that cannot even be imported without an optional dependency
  (steppo needs torch at import; the TextWorld / TextArena adapters raise
  :class:`~stepgym.errors.DependencyNotInstalled` at import).
* a doctest that stops on a missing optional dependency (one named in pyproject's
  ``optional-dependencies``, or a ``DependencyNotInstalled``) is reported as skipped.

Doctests also get ``tmp_dir`` (a fresh ``pathlib.Path`` per docstring) for examples that
write files.
"""

from __future__ import annotations

import doctest
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from _pytest.doctest import DoctestItem

ROOT = Path(__file__).resolve().parent


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module blocked with sys.modules[name] = None
        return False


def _optional_modules() -> set[str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0] for reqs in extras.values() for req in reqs}
    return {n.replace("-", "_") for n in names if n != "stepgym"}


OPTIONAL = _optional_modules()

collect_ignore: list[str] = []
collect_ignore_glob: list[str] = []
if not (_installed("torch") and _installed("transformers")):
    collect_ignore_glob.append("steppo/*")  # a glob: "steppo" itself is a testpath, never ignored
if not _installed("textworld"):
    collect_ignore.append("stepgym/envs/textworld_adapter.py")
if not _installed("textarena"):
    collect_ignore.append("stepgym/envs/textarena_adapter.py")
if not _installed("verifiers"):
    collect_ignore.append("stepgym/integrations/verifiers_env.py")
if not _installed("skyrl_gym"):
    collect_ignore.append("stepgym/integrations/skyrl.py")


def _missing_optional(exc: BaseException | None) -> str | None:
    """The optional dependency whose absence raised ``exc`` (or its causes), if any."""
    from stepgym.errors import DependencyNotInstalled

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DependencyNotInstalled):
            return str(exc)
        if isinstance(exc, ModuleNotFoundError) and exc.name:
            top = exc.name.split(".")[0]
            if top in OPTIONAL and not _installed(top):
                return top
        exc = exc.__cause__ or exc.__context__
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    try:
        return (yield)
    except doctest.UnexpectedException as failure:
        missing = _missing_optional(failure.exc_info[1]) if isinstance(item, DoctestItem) else None
        if missing:
            pytest.skip(f"optional dependency not installed: {missing}")
        raise


@pytest.fixture(autouse=True)
def _doctest_tmp_dir(request: pytest.FixtureRequest) -> None:
    if isinstance(request.node, DoctestItem):
        request.getfixturevalue("doctest_namespace")["tmp_dir"] = request.getfixturevalue("tmp_path")
