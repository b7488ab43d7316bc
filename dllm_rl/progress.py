"""Progress bars on terminals only: a log file gets no carriage-return redraws.

Every bar of the toolkit comes from :func:`progress_bar` (tqdm with ``disable=None``: shown when
the stream is a terminal, silent otherwise); :func:`quiet_library_bars` does the same for the bars
of ``datasets`` (``Dataset.map``) and ``transformers`` (weight loading and saving).
"""

from __future__ import annotations

import sys
from typing import Any


def is_terminal(stream: Any = None) -> bool:
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(*, enabled: bool = True, **kwargs: Any) -> Any:
    """``tqdm(**kwargs)`` shown only on a terminal (and only where ``enabled``, e.g. rank 0)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(disable=None if enabled else True, **kwargs)


def quiet_library_bars(stream: Any = None) -> bool:
    """Turn off the datasets and transformers bars unless ``stream`` is a terminal.

    Returns:
        True when the bars were turned off.
    """
    if is_terminal(stream):
        return False
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    return True
