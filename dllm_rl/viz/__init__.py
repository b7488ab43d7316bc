"""Views for people: trajectory timelines (text), the HTML trajectory viewer, and (in
:mod:`dllm_rl.plot`) training curves."""

from dllm_rl.viz.trajectory import render_unmasking
from dllm_rl.viz.viewer import samples_from_jsonl, samples_from_trajectory, write_viewer

__all__ = ["render_unmasking", "samples_from_jsonl", "samples_from_trajectory", "write_viewer"]
