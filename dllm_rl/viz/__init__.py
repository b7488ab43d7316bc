"""Views for people: trajectory timelines (text) and, with the trainers, reward curves."""

from dllm_rl.viz.trajectory import render_unmasking

__all__ = ["render_unmasking"]
