"""A text view of a trajectory: the completion canvas after each decoding step.

Masked diffusion decodes in an order that a final string hides; this view shows it. Each line is
the canvas after one step: committed tokens as text, the tokens committed at that very step
highlighted, masks as a placeholder. It reads only ``Trajectory.state_before``, so what it shows is
exactly what CJ-GRPO replays.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dllm_rl.rollout.trajectory import Trajectory

MASK_GLYPH = "·"


def _token_texts(ids: list[int], decode: Callable[[list[int]], str]) -> list[str]:
    """Each token decoded alone, with newlines and tabs made visible."""
    return [decode([i]).replace("\n", "⏎").replace("\t", "⇥") for i in ids]


def render_unmasking(
    trajectory: Trajectory,
    decode: Callable[[list[int]], str],
    row: int = 0,
    highlight: tuple[str, str] = ("[", "]"),
    max_steps: int | None = None,
) -> str:
    """The canvas of one row after every step, one line per step.

    Args:
        trajectory: the rollout record.
        decode: token ids -> text, e.g. ``tokenizer.decode``.
        row: which completion of the batch to show.
        highlight: strings put around the tokens committed at each line's step.
        max_steps: show only the first and last steps when S is larger (None: all).

    Returns:
        ``S + 1`` lines (fewer with ``max_steps``): the prompt, then ``step s (+k): canvas``.
    """
    if not 0 <= row < trajectory.batch_size:
        raise IndexError(f"row {row} outside a batch of {trajectory.batch_size}")
    prompt_ids = trajectory.prompt_ids[row][trajectory.prompt_mask[row].bool()].tolist()
    texts = _token_texts(trajectory.completion_ids[row].tolist(), decode)  # [L]
    steps = trajectory.unmask_step[row].long()  # [L]
    num_steps = trajectory.num_steps
    shown = list(range(num_steps))
    if max_steps is not None and num_steps > max_steps:
        half = max(1, max_steps // 2)
        shown = shown[:half] + shown[-half:]
    width = len(str(num_steps - 1))
    lines = [f"prompt: {decode(prompt_ids)!r}"]
    for s in shown:
        if lines and s > 0 and shown[shown.index(s) - 1] != s - 1:
            lines.append("...")
        now = steps == s  # [L]
        cells = [
            f"{highlight[0]}{t}{highlight[1]}" if now[i] else (t if steps[i] < s else MASK_GLYPH)
            for i, t in enumerate(texts)
        ]
        lines.append(f"step {s:>{width}} (+{int(now.sum())}): {''.join(cells)}")
    return "\n".join(lines)


def commit_order_histogram(trajectory: Trajectory) -> torch.Tensor:
    """``[S, L]`` counts over the batch of which position was committed at which step."""
    s, length = trajectory.num_steps, trajectory.gen_length
    hist = torch.zeros(s, length, dtype=torch.long)
    steps = trajectory.unmask_step.long().cpu()  # [B, L]
    cols = torch.arange(length).expand_as(steps)  # [B, L]
    hist.index_put_(
        (steps.flatten(), cols.flatten()),
        torch.ones(steps.numel(), dtype=torch.long),
        accumulate=True,
    )
    return hist
