"""Errors a user can act on at start-up: ``train.py`` prints the message on one line and exits
with status 2; a traceback is kept for the toolkit's own bugs."""

from __future__ import annotations


class StartError(ValueError):
    """A run cannot start as asked (launch, output folder, checkpoint); the message says what
    was wrong and what to do instead."""


class DataError(StartError):
    """A data file or row is not what the trainer reads: the message names the file, the
    line or row, the column, and what was expected."""
