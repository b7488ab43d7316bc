"""Views for people: trajectory timelines (text), the HTML trajectory viewer
(:mod:`dllm_rl.viz.viewer`), and (in :mod:`dllm_rl.plot`) training curves."""

from typing import Any

from dllm_rl.viz.trajectory import render_unmasking

__all__ = ["render_unmasking", "samples_from_jsonl", "samples_from_trajectory", "write_viewer"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that ``python -m dllm_rl.viz.viewer`` runs a fresh module.
    if name in ("samples_from_jsonl", "samples_from_trajectory", "write_viewer"):
        from dllm_rl.viz import viewer

        return getattr(viewer, name)
    raise AttributeError(f"module 'dllm_rl.viz' has no attribute {name!r}")
