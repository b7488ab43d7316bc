"""What every RL estimator shares: the rollout buffer, the step's context, the per-token loss,
the loss statistics and the :class:`Estimator` protocol itself.

An estimator decides how a rollout becomes per-token log-probs and a loss. It is one object
with three methods, chosen by name from :data:`dllm_rl.trainers.estimators.ESTIMATORS`:

- ``advantages(rewards, config) -> Tensor``: each completion's coefficient in the loss, from the
  rewards of the whole step (GRPO's group-relative advantages, :func:`group_relative`, or wd1's
  group weights);
- ``prepare(ctx, buf) -> int``: the no-grad work before the inner iterations (old and reference
  log-probs, random masks), kept in its own typed ``buf.tables``; returns the forwards spent;
- ``calls(ctx, buf, rows, iteration, stats) -> list[Call]``: the forward/backward units of one
  micro-batch (:func:`~dllm_rl.trainers.common.run_calls` runs them on every engine).

The GRPO loop (:mod:`dllm_rl.trainers.grpo`) holds nothing estimator-specific: the token weights
(which carry the global normaliser) are computed once, for every estimator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch

from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.objectives.grpo import SurrogateTerms, clipped_surrogate, group_advantages, k3_kl
from dllm_rl.rollout.trajectory import Trajectory
from dllm_rl.run.build import Reference
from dllm_rl.trainers.grpo_config import GRPOConfig

Call = Callable[[], torch.Tensor]
"""One forward/backward unit of a step: runs its forward(s) and returns the loss to
back-propagate (:func:`~dllm_rl.trainers.common.run_calls`)."""


@dataclass
class Buffer:
    """One process's rollout buffer, ready for the inner iterations (N local completions).

    Attributes:
        traj: ``[N]`` trajectories.
        advantages: ``[N]`` float32.
        weights: ``[N, L]`` float32 token weights with the global normaliser.
        counted: ``[N, L]`` bool positions in the loss.
        global_rewards: ``[N_global]`` total rewards of every process's rows, in rank order.
        trained: ``[n]`` long, the rows the inner iterations forward (all rows, or those with a
            nonzero advantage under ``grpo.skip_zero_advantage``).
        tables: the estimator's own no-grad results (its ``prepare`` sets them; a typed record
            per estimator, e.g. :class:`~dllm_rl.trainers.estimators.trajectory.TrajectoryTables`).
    """

    traj: Trajectory
    advantages: torch.Tensor
    weights: torch.Tensor
    counted: torch.Tensor
    global_rewards: torch.Tensor
    trained: torch.Tensor
    tables: Any = None


@dataclass(frozen=True)
class StepContext:
    """What an estimator may use from the trainer during one step.

    Attributes:
        policy: the model being trained.
        reference: the frozen reference, ``None`` when ``beta`` is 0.
        config: the run's configuration.
        step: the RL step (seeds the estimator's random draws).
        rank: this process's rank.
        shards_parameters: the engine shards parameters (ZeRO-3, FSDP2): every micro-batch must
            make the same forwards, so nothing may be skipped.
        generator: ``generator(tag)(chunk)`` a ``torch.Generator`` seeded by the run seed, the
            tag, the step and the chunk (process-count invariant draws).
    """

    policy: DiffusionLM
    reference: Reference | None
    config: GRPOConfig
    step: int
    rank: int
    shards_parameters: bool
    generator: Callable[[str], Callable[[int], torch.Generator]]


class Estimator(Protocol):
    """How a GRPO step turns its rollouts into a loss (see the module docstring)."""

    name: str

    def advantages(self, rewards: torch.Tensor, config: GRPOConfig) -> torch.Tensor:
        """``[N_global]`` coefficients from the ``[N_global]`` total rewards of the step (rows
        whose coefficient is 0 add nothing to the gradient without a KL term)."""
        ...

    def prepare(self, ctx: StepContext, buf: Buffer) -> int:
        """No-grad passes and draws before the inner iterations; sets ``buf.tables``; returns
        the forwards spent."""
        ...

    def calls(
        self,
        ctx: StepContext,
        buf: Buffer,
        rows: torch.Tensor,
        iteration: int,
        stats: LossStats | None,
    ) -> list[Call]:
        """One micro-batch's calls (``stats`` None: a zero-weighted padding micro-batch)."""
        ...


def group_relative(rewards: torch.Tensor, config: GRPOConfig) -> torch.Tensor:
    """GRPO's group-relative advantages under ``grpo.scale_rewards``."""
    g = config.grpo
    return group_advantages(rewards, g.num_generations, g.scale_rewards)


class GroupRelative:
    """The ``advantages`` of every estimator but wd1: GRPO's group-relative advantages."""

    def advantages(self, rewards: torch.Tensor, config: GRPOConfig) -> torch.Tensor:
        return group_relative(rewards, config)


def ratio_free_terms(loss: torch.Tensor) -> SurrogateTerms:
    """The statistics of an objective without an importance ratio (SPG, wd1): the ratio is 1 and
    nothing is clipped, so ``ratio_mean`` reads 1 and the clip fractions 0."""
    never = torch.zeros_like(loss, dtype=torch.bool)
    return SurrogateTerms(loss, torch.ones_like(loss), never, never, never)


def token_loss(
    logps: torch.Tensor,
    old: torch.Tensor,
    adv: torch.Tensor,
    ref: torch.Tensor | None,
    config: GRPOConfig,
) -> tuple[torch.Tensor, SurrogateTerms, torch.Tensor | None]:
    """Clipped surrogate (+ beta k3) per token: ``[n, k]`` each."""
    g = config.grpo
    eps_high = g.epsilon if g.epsilon_high is None else g.epsilon_high
    terms = clipped_surrogate(logps, old, adv, g.epsilon, eps_high)
    loss = terms.loss
    kl = None
    if ref is not None:
        kl = k3_kl(logps, ref)
        loss = loss + g.beta * kl
    return loss, terms, kl


@dataclass(frozen=True)
class LossTotals:
    """The step's loss statistics, summed over counted tokens and processes."""

    tokens: float = 0.0
    ratio: float = 0.0
    ratio_tokens: float = 0.0
    low: float = 0.0
    high: float = 0.0
    region: float = 0.0
    kl: float = 0.0
    entropy: float = 0.0
    entropy_tokens: float = 0.0
    loss: float = 0.0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_sums(cls, sums: torch.Tensor) -> LossTotals:
        return cls(*(float(v) for v in sums.tolist()))


@dataclass
class LossStats:
    """Sums over counted tokens, kept on the model's device (no host sync inside the loss loop)
    and reduced across processes once per step (:class:`LossTotals`)."""

    sums: torch.Tensor | None = None  # [len(LossTotals.names())] float64
    forwards: int = 0

    def add(
        self,
        counted: torch.Tensor,
        terms: SurrogateTerms,
        kl: torch.Tensor | None,
        entropy: torch.Tensor | None,
        loss: torch.Tensor,
        first_iteration: bool,
        entropy_at: torch.Tensor | None = None,
    ) -> None:
        """Add one scored block of tokens (``[n, k]`` tensors; ``counted`` selects; the entropy
        is averaged over ``entropy_at`` when given, the positions a random mask scored)."""
        c = counted.double()  # [n, k]
        n = c.sum()
        zero = n.new_zeros(())

        def total(x: torch.Tensor | None, where: torch.Tensor = c) -> torch.Tensor:
            return zero if x is None else (x.detach().double() * where).sum()

        e = c if entropy_at is None else entropy_at.double()  # [n, k]

        part = torch.stack(
            [
                n,
                total(terms.ratio) if first_iteration else zero,
                n if first_iteration else zero,
                total(terms.is_low_clipped),
                total(terms.is_high_clipped),
                total(terms.is_region_clipped),
                total(kl),
                total(entropy, e),
                e.sum() if entropy is not None else zero,
                loss.detach().double(),
            ]
        )  # in the order of LossTotals' fields
        self.sums = part if self.sums is None else self.sums + part

    def values(self) -> torch.Tensor:
        """``[len(LossTotals.names())]`` float64 on the CPU (zeros before any token)."""
        if self.sums is None:
            return torch.zeros(len(LossTotals.names()), dtype=torch.float64)
        return self.sums.cpu()


def weighted_loss(
    buf: Buffer,
    rows: torch.Tensor,
    loss: torch.Tensor,
    stats: LossStats | None,
    *,
    first_iteration: bool,
    forwards: int,
    terms: SurrogateTerms | None = None,
    kl: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    entropy_at: torch.Tensor | None = None,
) -> torch.Tensor:
    """A micro-batch's share of the step's loss, ``sum(token weights x per-token loss)`` over
    ``[n, L]`` tensors of ``rows``, with its statistics added (``terms`` None: a ratio-free
    objective). A padding call (``stats`` None) weighs everything 0 and records nothing."""
    if stats is None:
        return (torch.zeros_like(loss) * loss).sum()
    term = (buf.weights[rows] * loss).sum()
    stats.forwards += forwards
    stats.add(
        buf.counted[rows],
        ratio_free_terms(loss) if terms is None else terms,
        kl,
        entropy,
        term.detach(),
        first_iteration,
        entropy_at=entropy_at,
    )
    return term


def old_and_reference(
    ctx: StepContext,
    buf: Buffer,
    table: Callable[[DiffusionLM, torch.Tensor | None], tuple[torch.Tensor, int]],
) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """The no-grad passes of an estimator whose draws are fixed per inner iteration:
    ``table(model, rows)`` scores ``[mu, n, L]`` log-probs of ``rows`` (None: every row).

    Returns ``(old, reference, forwards)``: the old log-probs of the trained rows when mu > 1
    (with mu = 1 the first pass's own detached log-probs serve), the reference's of every row
    when beta > 0, else None.
    """
    old = ref = None
    forwards = 0
    if ctx.config.grpo.num_iterations > 1 and len(buf.trained):
        part, f = table(ctx.policy, buf.trained)
        old = on_rows(part, buf.trained, len(buf.traj), dim=1)
        forwards += f
    if ctx.reference is not None:
        with ctx.reference.active(ctx.policy.model) as reference:
            ref, f = table(reference, None)
        forwards += f
    return old, ref, forwards


def draw_per_chunk(
    ctx: StepContext, n: int, tag: str, draw: Callable[[int, int, torch.Generator], Any]
) -> list[Any]:
    """``draw(lo, hi, generator)`` for each rollout chunk of this process's ``n`` rows, the
    generator seeded by the chunk's GLOBAL index: a row's draws do not depend on the number of
    processes."""
    size = ctx.config.grpo.generation_batch_size
    gen = ctx.generator(tag)
    first = ctx.rank * n // size
    return [draw(lo, min(lo + size, n), gen(first + c)) for c, lo in enumerate(range(0, n, size))]


def on_rows(part: torch.Tensor, rows: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """A table over ``n`` rows (along ``dim``) holding ``part``, computed on ``rows`` only; the
    other rows are zeros, never read (the inner iterations forward ``rows`` only)."""
    if len(rows) == n:
        return part
    shape = list(part.shape)
    shape[dim] = n
    return part.new_zeros(shape).index_copy_(dim, rows, part)
