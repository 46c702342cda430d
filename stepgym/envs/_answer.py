"""Action text helpers shared by the puzzle and game envs.

Every puzzle accepts its command either bare (``up``, ``crane``, ``25*4+3``) or inside
``<answer>...</answer>`` tags, the format RL recipes for reasoning models use; when a
model writes several answer blocks, the last one counts (its final word).
"""

from __future__ import annotations

import re

__all__ = ["extract_answer", "normalize_command"]

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)


def extract_answer(text: str) -> str:
    """The content of the last ``<answer>...</answer>`` block, else the stripped text.

    Example:
        >>> extract_answer("I think left is safe. <answer> left </answer>")
        'left'
        >>> extract_answer("  up\\n")
        'up'
    """
    # Fast path: most actions carry no tag, and a substring test costs far less than a regex.
    if "<" in text:
        found = _ANSWER_RE.findall(text)
        if found:
            return found[-1].strip()
    return text.strip()


def normalize_command(text: str) -> str:
    """Lower-cased answer with inner whitespace collapsed and trailing punctuation dropped.

    Example:
        >>> normalize_command("<answer>Push  LEFT.</answer>")
        'push left'
    """
    cmd = extract_answer(text).lower()
    if cmd[-1:] in ".!;":
        cmd = cmd.rstrip(".!;").rstrip()
    if "  " in cmd or "\n" in cmd or "\t" in cmd:
        cmd = " ".join(cmd.split())
    return cmd
