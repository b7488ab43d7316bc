"""The rollout record: final tokens plus the step at which each one was committed.

Because the sampler never re-masks a committed token, ``(completion_ids, unmask_step)`` is an exact
and O(L) description of the whole decoding path: the state before step s is "tokens committed
before s, masks elsewhere". CJ-GRPO rebuilds each state with :meth:`Trajectory.state_before` and
scores exactly the transitions the rollout made.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from dllm_rl.rollout.schedules import Schedule


@dataclass(eq=False)
class Trajectory:
    """One batch of masked-diffusion rollouts.

    Attributes:
        prompt_ids: ``[B, P]`` left-padded prompt ids.
        prompt_mask: ``[B, P]`` 1 on real prompt tokens, 0 on left padding.
        completion_ids: ``[B, L]`` final completion tokens.
        unmask_step: ``[B, L]`` int16, the decoding step (0..S-1) at which each token was committed.
        schedule: the :class:`Schedule` the sampler followed (S steps, per-step quota and block).
        mask_token_id: the [MASK] id used to rebuild intermediate states.
        pad_token_id: the id used for left padding (needed to concatenate prompts of different P).
        step_logprobs: ``[B, L]`` float32 or None: log-probability of each committed token under the
            rollout's own distribution at commit time: ``log_softmax(logits / T)`` after CFG
            (``log_softmax(logits)`` at T = 0), with [MASK] excluded from the vocabulary
            (:func:`~dllm_rl.rollout.proposal.exclude_mask_token`).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    unmask_step: torch.Tensor
    schedule: Schedule
    mask_token_id: int
    pad_token_id: int
    step_logprobs: torch.Tensor | None = None

    # ----------------------------------------------------------------------------- shapes
    @property
    def batch_size(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def prompt_length(self) -> int:
        return self.prompt_ids.shape[1]

    @property
    def gen_length(self) -> int:
        return self.completion_ids.shape[1]

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def device(self) -> torch.device:
        return self.completion_ids.device

    def __len__(self) -> int:
        return self.batch_size

    # ----------------------------------------------------------------------------- states
    def state_before(self, step: int) -> torch.Tensor:
        """Completion canvas before ``step``: tokens with ``unmask_step < step``, masks elsewhere.

        ``state_before(0)`` is all masks; ``state_before(S)`` is the final completion.

        Returns:
            ``[B, L]`` token ids.
        """
        if not 0 <= step <= self.num_steps:
            raise IndexError(f"step {step} outside [0, {self.num_steps}]")
        known = self.unmask_step < step  # [B, L]
        return torch.where(known, self.completion_ids, self.mask_token_id)  # [B, L]

    def model_input(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Full model input before ``step``: prompt + :meth:`state_before`.

        Returns:
            ``input_ids [B, P+L]`` and ``attention_mask [B, P+L]`` (prompt padding is 0).
        """
        ids = torch.cat([self.prompt_ids, self.state_before(step)], dim=1)  # [B, P+L]
        return ids, self.attention_mask

    @property
    def attention_mask(self) -> torch.Tensor:
        """``[B, P+L]`` padding mask of the full sequence (completions are never padding)."""
        ones = torch.ones_like(self.completion_ids, dtype=self.prompt_mask.dtype)  # [B, L]
        return torch.cat([self.prompt_mask, ones], dim=1)  # [B, P+L]

    def committed_mask(self, step: int) -> torch.Tensor:
        """``[B, L]`` bool, True at the positions committed at ``step``."""
        return self.unmask_step == step

    def committed_at(self, step: int) -> torch.Tensor:
        """Positions committed at ``step``, ascending; every row commits the same number.

        Returns:
            ``[B, counts[step]]`` long completion positions.
        """
        k = self.schedule.counts[step]
        cols = torch.nonzero(self.committed_mask(step))[:, 1]  # [B*k], row-major order
        return cols.view(self.batch_size, k)

    # ----------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Assert the no-re-masking invariant against the schedule.

        Every position is committed exactly once (one step in [0, S)), each step commits exactly
        its quota in every row, and only inside that step's block.

        Raises:
            AssertionError: naming the first violated property.
        """
        b, length = self.completion_ids.shape
        s = self.schedule
        assert self.unmask_step.shape == (b, length), (
            f"unmask_step shape {tuple(self.unmask_step.shape)}"
        )
        assert self.prompt_ids.shape == self.prompt_mask.shape, "prompt ids/mask shapes differ"
        assert self.prompt_ids.shape[0] == b, "prompt and completion batch sizes differ"
        assert length == s.gen_length, (
            f"completion length {length} != schedule length {s.gen_length}"
        )
        steps = self.unmask_step.long()
        assert bool(((steps >= 0) & (steps < s.num_steps)).all()), "a position was never committed"
        assert not bool((self.completion_ids == self.mask_token_id).any()), "a [MASK] was committed"
        per_step = torch.zeros(b, s.num_steps, dtype=torch.long, device=steps.device)
        per_step.scatter_add_(1, steps, torch.ones_like(steps))  # [B, S]
        expected = torch.tensor(s.counts, device=steps.device).expand(b, -1)
        assert torch.equal(per_step, expected), "tokens committed per step differ from the schedule"
        lo = torch.tensor([s.step_bounds(t)[0] for t in range(s.num_steps)], device=steps.device)
        hi = torch.tensor([s.step_bounds(t)[1] for t in range(s.num_steps)], device=steps.device)
        pos = torch.arange(length, device=steps.device).expand(b, -1)  # [B, L]
        inside = (pos >= lo[steps]) & (pos < hi[steps])
        assert bool(inside.all()), "a token was committed outside its step's block"
        if self.step_logprobs is not None:
            assert self.step_logprobs.shape == (b, length), "step_logprobs shape"
            assert bool((self.step_logprobs <= 1e-5).all()), "a log-probability is positive"

    # ----------------------------------------------------------------------------- batching
    def __getitem__(self, index: int | slice | torch.Tensor | Sequence[int]) -> Trajectory:
        """Select rows; an int keeps the batch dimension (``traj[3]`` has B = 1).

        A 0-dim integer tensor or a numpy integer counts as an int (plain indexing would drop the
        batch dimension of every field).
        """
        if isinstance(index, torch.Tensor) and index.dim() == 0 and index.dtype != torch.bool:
            index = int(index)
        elif isinstance(index, numbers.Integral) and not isinstance(index, bool):
            index = int(index)
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda t: t[index])

    def split(self, split_size: int | Sequence[int]) -> list[Trajectory]:
        """Split along the batch like :func:`torch.split`."""
        chunks = {f: _get(self, f) for f in _BATCH_FIELDS}
        chunks = {f: (None if t is None else t.split(split_size)) for f, t in chunks.items()}
        n = len(chunks["completion_ids"])
        return [
            replace(self, **{f: (None if c is None else c[i]) for f, c in chunks.items()})
            for i in range(n)
        ]

    def to(self, device: torch.device | str) -> Trajectory:
        return self._map(lambda t: t.to(device))

    @classmethod
    def concat(cls, parts: Sequence[Trajectory]) -> Trajectory:
        """Concatenate along the batch; shorter prompts are left-padded to the longest.

        Raises:
            ValueError: when the parts were decoded with different schedules or special ids, or
                only some of them carry ``step_logprobs``.
        """
        if not parts:
            raise ValueError("cannot concatenate an empty list of trajectories")
        first = parts[0]
        for p in parts[1:]:
            if (p.schedule, p.mask_token_id, p.pad_token_id) != (
                first.schedule,
                first.mask_token_id,
                first.pad_token_id,
            ):
                raise ValueError("trajectories decoded with different schedules or special ids")
            if (p.step_logprobs is None) != (first.step_logprobs is None):
                raise ValueError("only some trajectories carry step_logprobs")
        width = max(p.prompt_length for p in parts)
        ids = torch.cat([_left_pad(p.prompt_ids, width, first.pad_token_id) for p in parts])
        mask = torch.cat([_left_pad(p.prompt_mask, width, 0) for p in parts])
        logps = None if first.step_logprobs is None else torch.cat([p.step_logprobs for p in parts])
        return replace(
            first,
            prompt_ids=ids,
            prompt_mask=mask,
            completion_ids=torch.cat([p.completion_ids for p in parts]),
            unmask_step=torch.cat([p.unmask_step for p in parts]),
            step_logprobs=logps,
        )

    def _map(self, fn) -> Trajectory:
        fields = {f: _get(self, f) for f in _BATCH_FIELDS}
        return replace(self, **{f: (None if t is None else fn(t)) for f, t in fields.items()})


_BATCH_FIELDS = ("prompt_ids", "prompt_mask", "completion_ids", "unmask_step", "step_logprobs")


def _get(traj: Trajectory, name: str) -> torch.Tensor | None:
    return getattr(traj, name)


def _left_pad(x: torch.Tensor, width: int, value: int) -> torch.Tensor:
    """``[B, P] -> [B, width]`` with ``value`` on the left."""
    pad = width - x.shape[1]
    if pad == 0:
        return x
    return torch.cat([x.new_full((x.shape[0], pad), value), x], dim=1)
