"""The rollout worker: prompt records in, scored groups of trajectories out.

Training and evaluation both call :meth:`RolloutWorker.rollout`; it is the one place another
generation engine would plug in. Each prompt's G completions stay together (rows ``g*G ..
g*G + G - 1`` belong to prompt g), so group statistics never need another process's rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.rewards.registry import RewardBatch, RewardSpec, compute_rewards
from dllm_rl.rollout.config import SamplerConfig
from dllm_rl.rollout.sampler import generate, left_pad_prompts, prompt_token_ids
from dllm_rl.rollout.trajectory import Trajectory


@dataclass
class RolloutBatch:
    """N = B * G scored completions of B prompts.

    Attributes:
        trajectory: ``[N]`` rows of the sampler's record (completion ids, unmask steps, commit
            log-probs).
        group_ids: ``[N]`` long, the prompt's index in the step's global prompt list.
        prompts: ``[N]`` prompt texts (each repeated G times).
        completions: ``[N]`` completion texts, cut at the first stop id.
        lengths: ``[N]`` long, completion tokens up to and including the first stop id (L when
            there is none).
        rewards: the reward batch (``values [N, R]``, ``total [N]``, metrics).
        rollout_s, score_s: wall time of generation and of the rewards.
        forwards: model forwards spent generating.
    """

    trajectory: Trajectory
    group_ids: torch.Tensor
    prompts: list[str]
    completions: list[str]
    lengths: torch.Tensor
    rewards: RewardBatch
    rollout_s: float = 0.0
    score_s: float = 0.0
    forwards: int = 0
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.completions)


def first_stop_lengths(completion_ids: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """``[N, L] -> [N]``: tokens up to and including the first stop id (L when none)."""
    stops = torch.isin(completion_ids, torch.tensor(list(stop_ids), device=completion_ids.device))
    length = completion_ids.shape[1]
    first = torch.where(stops.any(1), stops.int().argmax(1) + 1, length)  # [N]
    return first.long()


def generate_chunks(
    model: DiffusionLM,
    ids: torch.Tensor,
    mask: torch.Tensor,
    sampler: SamplerConfig,
    chunk_generator: Callable[[int], torch.Generator],
    size: int,
    first_row: int = 0,
) -> tuple[Trajectory, int]:
    """Sample ``ids`` ``[N, P]`` (``mask`` ``[N, P]``) in chunks of ``size`` rows.

    Chunk ``c`` draws from ``chunk_generator(first_row // size + c)``: ``first_row`` is the
    global index of row 0 in the step, so a row gets the same randomness whichever process
    samples it. Returns the concatenated trajectory and the number of chunks (each one ran
    ``sampler.plan.num_steps`` forwards).
    """
    parts = []
    first_chunk = first_row // size
    for c, lo in enumerate(range(0, len(ids), size)):
        rows = slice(lo, lo + size)
        parts.append(
            generate(
                model,
                ids[rows].to(model.device),
                mask[rows].to(model.device),
                sampler,
                chunk_generator(first_chunk + c),
            )
        )
    return Trajectory.concat(parts), len(parts)


class RolloutWorker:
    """Generates G completions per prompt and scores them with the recipe's rewards.

    Args:
        model: the policy (generation runs in eval mode, without grad).
        rewards: resolved reward specs.
        generation_batch_size: completions per sampler call.
        chat_template: wrap prompts in the tokenizer's chat template.
        max_prompt_length: left-truncate prompts to this many tokens (counted in
            ``truncated_prompts``).
    """

    def __init__(
        self,
        model: DiffusionLM,
        rewards: Sequence[RewardSpec],
        generation_batch_size: int,
        *,
        chat_template: bool = False,
        max_prompt_length: int | None = None,
    ) -> None:
        if model.tokenizer is None:
            raise ValueError("the rollout worker needs a model with a tokenizer")
        self.model, self.rewards = model, list(rewards)
        self.generation_batch_size = generation_batch_size
        self.chat_template, self.max_prompt_length = chat_template, max_prompt_length
        self.truncated_prompts = 0

    def prompt_tokens(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt (chat template, left truncation to ``max_prompt_length``)."""
        rows = prompt_token_ids(self.model, prompts, self.chat_template)
        if self.max_prompt_length is None:
            return rows
        return [r[-self.max_prompt_length :] for r in rows]

    def encode(
        self, prompts: Sequence[str], width: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``[N, P]`` and mask ``[N, P]``, left-padded with the model's pad id to
        ``width`` (default: the longest prompt); counts the prompts it truncated."""
        rows = prompt_token_ids(self.model, prompts, self.chat_template)
        if self.max_prompt_length is not None:
            self.truncated_prompts += sum(len(r) > self.max_prompt_length for r in rows)
            rows = [r[-self.max_prompt_length :] for r in rows]
        return left_pad_prompts(rows, self.model.ids.pad, width)

    @torch.no_grad()
    def rollout(
        self,
        records: Sequence[dict[str, Any]],
        num_generations: int,
        sampler: SamplerConfig,
        chunk_generator: Callable[[int], torch.Generator],
        group_offset: int = 0,
        prompt_width: int | None = None,
    ) -> RolloutBatch:
        """G completions for each record, scored.

        Args:
            records: B rows with a ``prompt`` and the columns the rewards read.
            num_generations: G.
            sampler: sampler settings (``record_logprobs`` should be on for training).
            chunk_generator: chunk index -> the generator of that chunk of
                ``generation_batch_size`` rows; the index counts chunks from ``group_offset *
                G / generation_batch_size``, so the same global rows get the same randomness
                whichever process draws them.
            group_offset: global index of ``records[0]`` in this step's prompt list.
            prompt_width: left-pad every prompt to this many tokens (the longest prompt of the
                step across all processes), so that the same row is computed the same way
                however the step is split.

        Returns:
            The :class:`RolloutBatch` of N = B * G rows, prompt-major.
        """
        g = num_generations
        prompts = [str(r["prompt"]) for r in records for _ in range(g)]  # [N]
        columns = {
            k: [r[k] for r in records for _ in range(g)] for k in records[0] if k != "prompt"
        }
        ids, mask = self.encode(prompts, prompt_width)
        was_training = self.model.model.training
        self.model.model.eval()
        start = time.perf_counter()
        trajectory, chunks = generate_chunks(
            self.model,
            ids,
            mask,
            sampler,
            chunk_generator,
            self.generation_batch_size,
            group_offset * g,
        )
        rollout_s = time.perf_counter() - start
        if was_training:
            self.model.model.train()
        start = time.perf_counter()
        lengths = first_stop_lengths(trajectory.completion_ids, self.model.ids.stop_ids)
        completions = self.decode(trajectory.completion_ids, lengths)
        rewards = compute_rewards(
            self.rewards,
            prompts=prompts,
            completions=completions,
            completion_ids=[
                row[:n].tolist() for row, n in zip(trajectory.completion_ids.cpu(), lengths)
            ],
            **columns,
        )
        score_s = time.perf_counter() - start
        groups = torch.arange(len(records)).repeat_interleave(g) + group_offset
        forwards = chunks * sampler.plan.num_steps
        return RolloutBatch(
            trajectory,
            groups,
            prompts,
            completions,
            lengths.cpu(),
            rewards,
            rollout_s,
            score_s,
            forwards,
            columns,
        )

    def decode(self, completion_ids: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Completion texts up to (not including) the first stop id."""
        stop = set(self.model.ids.stop_ids)
        texts = []
        for row, n in zip(completion_ids.cpu().tolist(), lengths.tolist()):
            cut = row[: n - 1] if n and row[n - 1] in stop else row[:n]
            texts.append(self.model.tokenizer.decode(cut, skip_special_tokens=True))
        return texts
