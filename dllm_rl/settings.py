"""The one helper every config schema uses: a dataclass field with its help text
(``train.py --help`` and ``eval.py --help`` print it)."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def setting(help: str, **kwargs: Any) -> Any:  # noqa: A002 (the word the help printer reads)
    """``dataclasses.field`` carrying ``help`` in its metadata."""
    return field(metadata={"help": help}, **kwargs)
