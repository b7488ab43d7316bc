"""Step schedules: how many tokens the sampler commits at each decoding step, and where.

A :class:`Schedule` is a plain record built by a pure function. The sampler follows it; the
:class:`~dllm_rl.rollout.trajectory.Trajectory` keeps it, so that every recorded step can be
rebuilt and checked later.

Two families:

* ``uniform`` (LLaDA, Nie et al. 2025, Alg. 5 with semi-autoregressive blocks): the completion is
  cut into blocks of ``block_length``; the total number of steps is split evenly across blocks;
  within a block of m masks over k steps each step commits ``m // k`` tokens and the first
  ``m % k`` steps one more (10 masks over 4 steps -> [3, 3, 2, 2]).
* ``ascending`` (ascending step size, "ASS"; the log-step schedule of CJ-GRPO): S = floor(log2 L)
  steps, step i commits 2^i tokens and the last step the rest (L=128 -> 1, 2, 4, ..., 32, 65).
  With several blocks, the blocks are sized geometrically from the right: the first block takes
  steps 0..S-b (L=128, 4 blocks -> [15, 16, 32, 65]) and every later block is decoded in one step.

Also here: the EOS-early-rejection factor gamma(s) (:func:`eos_gamma_factors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

ScheduleName = Literal["uniform", "ascending"]
GammaScheduleName = Literal["linear", "power"]
SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
GAMMA_SCHEDULES: tuple[str, ...] = get_args(GammaScheduleName)
# Trajectory.unmask_step is int16, and state_before(S) compares it with S itself.
MAX_STEPS = 2**15 - 1


@dataclass(frozen=True)
class Schedule:
    """Which tokens are committed at each of S decoding steps.

    Attributes:
        kind: name of the rule that built it ("uniform", "ascending", or a caller's own).
        counts: ``[S]`` tokens committed at step s (the same for every row of a batch).
        step_block: ``[S]`` index of the block decoded at step s (non-decreasing).
        block_bounds: ``[num_blocks]`` half-open ``(start, end)`` completion positions of each
            block; contiguous, covering ``[0, L)``.
    """

    kind: str
    counts: tuple[int, ...]
    step_block: tuple[int, ...]
    block_bounds: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if len(self.counts) > MAX_STEPS:
            raise ValueError(
                f"{self.kind!r} schedule has {len(self.counts)} steps; the trajectory records commit "
                f"steps as int16, so at most {MAX_STEPS}: commit several tokens per step"
            )
        problems = _schedule_problems(self)
        if problems:
            raise ValueError(f"inconsistent {self.kind!r} schedule {self}: " + "; ".join(problems))

    @property
    def num_steps(self) -> int:
        """S, the number of decoding steps (= model forwards per sample without CFG)."""
        return len(self.counts)

    @property
    def gen_length(self) -> int:
        """L, the number of completion positions."""
        return self.block_bounds[-1][1]

    @property
    def num_blocks(self) -> int:
        return len(self.block_bounds)

    def step_bounds(self, step: int) -> tuple[int, int]:
        """Half-open completion positions ``(start, end)`` of the block decoded at ``step``."""
        return self.block_bounds[self.step_block[step]]

    def open_before(self, step: int) -> int:
        """Masked positions left in the step's block before ``step`` (the same in every row)."""
        start, end = self.step_bounds(step)
        block = self.step_block[step]
        done = sum(c for c, b in zip(self.counts[:step], self.step_block[:step]) if b == block)
        return end - start - done


def _schedule_problems(schedule: Schedule) -> list[str]:
    """Everything wrong with a schedule (empty when it is consistent)."""
    problems = []
    bounds, counts, blocks = schedule.block_bounds, schedule.counts, schedule.step_block
    if not bounds or bounds[0][0] != 0:
        problems.append("blocks must start at position 0")
    if any(a[1] != b[0] for a, b in zip(bounds, bounds[1:])):
        problems.append("blocks must be contiguous")
    if any(end <= start for start, end in bounds):
        problems.append("every block must be non-empty")
    if len(counts) != len(blocks):
        problems.append(f"{len(counts)} counts but {len(blocks)} step blocks")
    if any(c < 1 for c in counts):
        problems.append("every step must commit at least one token")
    if list(blocks) != sorted(blocks) or set(blocks) != set(range(len(bounds))):
        problems.append("steps must visit every block once, in order")
    for b, (start, end) in enumerate(bounds):
        committed = sum(c for c, sb in zip(counts, blocks) if sb == b)
        if committed != end - start:
            problems.append(f"block {b} has {end - start} positions but commits {committed}")
    return problems


def split_evenly(num_tokens: int, num_steps: int) -> list[int]:
    """LLaDA's per-block quota: ``num_tokens // num_steps`` each, the remainder to the first steps.

    >>> split_evenly(10, 4)
    [3, 3, 2, 2]
    """
    if not 1 <= num_steps <= num_tokens:
        raise ValueError(
            f"cannot commit {num_tokens} tokens in {num_steps} steps (need 1 <= steps <= tokens)"
        )
    base, rem = divmod(num_tokens, num_steps)
    return [base + 1 if i < rem else base for i in range(num_steps)]


def uniform_schedule(gen_length: int, block_length: int, steps: int) -> Schedule:
    """LLaDA's schedule: ``L / block_length`` blocks, ``steps / num_blocks`` steps in each.

    Raises:
        ValueError: when L is not a multiple of ``block_length``, ``steps`` is not a multiple of
            the number of blocks, or a block would get more steps than it has tokens.
    """
    if gen_length < 1 or block_length < 1 or steps < 1:
        raise ValueError(
            f"gen_length, block_length and steps must be >= 1 (got {gen_length}, {block_length}, {steps})"
        )
    if gen_length % block_length:
        raise ValueError(
            f"gen_length={gen_length} is not a multiple of block_length={block_length}; "
            f"pick a block_length that divides it (e.g. {_divisor_hint(gen_length, block_length)})"
        )
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise ValueError(
            f"steps={steps} cannot be split evenly over {num_blocks} blocks "
            f"(gen_length {gen_length} / block_length {block_length}); use a multiple of {num_blocks}"
        )
    per_block = steps // num_blocks
    if per_block > block_length:
        raise ValueError(
            f"steps={steps} gives {per_block} steps per block of {block_length} tokens: more steps "
            f"than tokens; use steps <= {gen_length}"
        )
    quota = split_evenly(block_length, per_block)
    return Schedule(
        kind="uniform",
        counts=tuple(quota * num_blocks),
        step_block=tuple(b for b in range(num_blocks) for _ in range(per_block)),
        block_bounds=tuple((b * block_length, (b + 1) * block_length) for b in range(num_blocks)),
    )


def _divisor_hint(n: int, near: int) -> int:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: (abs(d - near), d))


def ascending_counts(gen_length: int) -> list[int]:
    """ASS quotas: floor(log2 L) steps of 1, 2, 4, ... tokens; the last step takes the rest.

    >>> ascending_counts(200)
    [1, 2, 4, 8, 16, 32, 137]
    """
    if gen_length < 2:
        raise ValueError(f"the ascending schedule needs gen_length >= 2 (got {gen_length})")
    num_steps = int(math.log2(gen_length))
    while 2**num_steps > gen_length:  # guard against float rounding of log2
        num_steps -= 1
    counts = [2**i for i in range(num_steps - 1)]
    return counts + [gen_length - sum(counts)]


def ascending_schedule(gen_length: int, num_blocks: int = 1) -> Schedule:
    """Ascending step size (ASS): step i commits 2^i tokens, ``floor(log2 L)`` steps in all.

    With ``num_blocks = b > 1`` the last b-1 steps each become a block of their own, decoded in one
    step, and the first block holds the earlier steps (L=128, b=4 -> blocks [15, 16, 32, 65]).

    Raises:
        ValueError: when ``num_blocks`` exceeds the number of steps.
    """
    counts = ascending_counts(gen_length)
    num_steps = len(counts)
    if not 1 <= num_blocks <= num_steps:
        raise ValueError(
            f"ascending schedule with gen_length={gen_length} has {num_steps} steps, so num_blocks "
            f"must be in [1, {num_steps}] (got {num_blocks})"
        )
    first = num_steps - num_blocks + 1  # steps 0..first-1 form block 0
    sizes = [sum(counts[:first])] + counts[first:]
    starts = [sum(sizes[:b]) for b in range(num_blocks)]
    return Schedule(
        kind="ascending",
        counts=tuple(counts),
        step_block=tuple(max(0, s - first + 1) for s in range(num_steps)),
        block_bounds=tuple((start, start + size) for start, size in zip(starts, sizes)),
    )


def eos_gamma_factors(
    num_steps: int, gamma_min: float = 0.01, gamma_max: float = 1.0, kind: str = "linear"
) -> tuple[float, ...]:
    """EOS early rejection factors gamma(s), s = 0..S-1, that scale the confidence of EOS proposals.

    * ``linear``: g_min + (g_max - g_min) * s / (S - 1)   (g_max when S = 1);
    * ``power`` (paired with ASS): g_min + (g_max - g_min) * (2^(s+1) - 1) / 2^S, which tracks the
      fraction of tokens ASS has committed after step s.

    With g_min = 0.01, g_max = 1, S = 7 the power factors are
    0.018, 0.033, 0.064, 0.126, 0.250, 0.497, 0.992.
    """
    if kind not in GAMMA_SCHEDULES:
        raise ValueError(f"unknown EOS gamma schedule {kind!r}; expected one of {GAMMA_SCHEDULES}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1 (got {num_steps})")
    span = gamma_max - gamma_min
    if kind == "linear":
        if num_steps == 1:
            return (float(gamma_max),)
        return tuple(gamma_min + span * s / (num_steps - 1) for s in range(num_steps))
    return tuple(gamma_min + span * (2 ** (s + 1) - 1) / 2**num_steps for s in range(num_steps))
