"""Masked-diffusion SFT (LLaDA's recipe): one explicit loop on the shared session.

Each step takes the next ``sft.batch_size`` rows of the seeded order, split across processes and
into micro-batches; every row draws its own t ~ U(eps, 1] and mask from a generator keyed by
(seed, step, row), so neither micro-batching nor the process count changes the draws; each part
of the loss is divided by the step's global normaliser (rows, or masked tokens), and gradients
are summed (:mod:`dllm_rl.trainers.common`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dllm_rl.data.sft import SFTExample, collate_sft, load_sft, tokenize_sft
from dllm_rl.objectives.mdlm import draw_sft_masks, mdlm_sft_loss
from dllm_rl.run.build import derive_seed, generator
from dllm_rl.trainers.common import (
    EvalHook,
    Session,
    TrainLoop,
    all_reduce_sum,
    run_calls,
    shard_bounds,
)
from dllm_rl.trainers.sft_config import SFTConfig

logger = logging.getLogger(__name__)


def row_masks(
    real: torch.Tensor, seeds: Sequence[int], eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One (t, mask) draw per row, row i from a generator seeded by ``seeds[i]``.

    Returns:
        ``masks [B, L]`` bool and ``t [B]``.
    """
    masks, ts = [], []
    for i, seed in enumerate(seeds):
        m, t = draw_sft_masks(real[i : i + 1], eps=eps, generator=generator(seed))
        masks.append(m)
        ts.append(t)
    return torch.cat(masks), torch.cat(ts)


@dataclass
class SFTTrainer:
    """State of one SFT run; :meth:`train` is the loop."""

    config: SFTConfig
    session: Session
    examples: Sequence[SFTExample]
    eval_examples: Sequence[SFTExample] = field(default_factory=list)
    truncated: int = 0
    eval_hooks: list[EvalHook] = field(default_factory=list)
    """Run after each evaluation (:data:`~dllm_rl.trainers.common.EvalHook`), e.g. the demo's
    greedy exact match through the rollout worker."""

    @property
    def policy(self):
        return self.session.policy

    def batch(self, rows: Sequence[int], examples: Sequence[SFTExample]):
        width = self.config.data.response_length
        picked = [examples[i] for i in rows]
        return collate_sft(picked, self.policy.ids.pad, width).to(self.session.device)

    def real_mask(self, batch) -> torch.Tensor:
        """The positions a mask may hit: real response tokens, or all of them with EOS padding."""
        if self.config.sft.eos_padding:
            return torch.ones_like(batch.response_mask, dtype=torch.bool)
        return batch.response_mask.bool()

    def micro_loss(self, batch, masks, t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(per_row [b], lengths [b], masked [b])`` of one micro-batch."""
        c = self.config.sft
        out = mdlm_sft_loss(
            self.policy,
            batch.prompt_ids,
            batch.prompt_mask,
            batch.response_ids,
            batch.response_mask,
            normalization=c.normalization,
            eos_padding=c.eos_padding,
            masks=masks,
            t=t,
        )
        return out.per_row, out.lengths, out.num_masked

    def part(self, per_row, lengths, masked, totals) -> torch.Tensor:
        """This micro-batch's share of the step loss, with the global normaliser."""
        rows, masked_total = totals[0], totals[1]
        if self.config.sft.normalization == "response_length":
            return (per_row / lengths.to(per_row).clamp(min=1)).sum() / rows.clamp(min=1)
        return per_row.sum() / masked_total.clamp(min=1)

    def step(self, step: int, indices: list[int]) -> dict[str, float]:
        s, c = self.session, self.config.sft
        t0 = time.perf_counter()
        local = self.config.check_batch(s.world_size)
        first = s.rank * local
        mine = indices[first : first + local]
        micro = []
        for lo in range(0, local, c.per_device_batch_size):
            rows = mine[lo : lo + c.per_device_batch_size]
            batch = self.batch(rows, self.examples)
            seeds = [
                derive_seed(self.config.run.seed, "sft", step, first + lo + j)
                for j in range(len(rows))
            ]
            masks, t = row_masks(self.real_mask(batch).cpu(), seeds, c.eps)
            micro.append((batch, masks.to(s.device), t.to(s.device)))
        counts = torch.tensor(
            [float(local), float(sum(int(m.sum()) for _, m, _ in micro))], dtype=torch.float64
        )
        totals = all_reduce_sum(s, counts).to(s.device)
        self.policy.model.train()
        sums = {"loss": 0.0, "tokens": 0}

        def call(batch, masks, t, scale: float = 1.0) -> Callable[[], torch.Tensor]:
            def run() -> torch.Tensor:
                per_row, lengths, masked = self.micro_loss(batch, masks, t)
                part = self.part(per_row, lengths, masked, totals) * scale
                if scale:
                    sums["loss"] += float(part.detach())
                    sums["tokens"] += int(lengths.sum())
                return part

            return run

        run_calls(s, [call(*m) for m in micro], lambda: [call(*micro[0], scale=0.0)])
        loss_sum, tokens = sums["loss"], sums["tokens"]
        norm = s.optimizer_step()
        loss, tokens = all_reduce_sum(s, torch.tensor([loss_sum, float(tokens)])).tolist()
        step_s = time.perf_counter() - t0
        return {
            "loss": loss,
            "masked_tokens": float(totals[1]),
            "grad_norm": norm,
            "learning_rate": s.scheduler.get_last_lr()[0],
            "time/step_s": step_s,
            "tokens_per_s": tokens / step_s,
            "truncated_rows": self.truncated,
        }

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out loss (:meth:`eval_loss`)."""
        return self.eval_loss(step)

    @torch.no_grad()
    def eval_loss(self, step: int) -> dict[str, float]:
        """Held-out loss on fixed draws (the same masks at every evaluation)."""
        s, c = self.session, self.config.sft
        rows = list(range(min(c.eval_rows, len(self.eval_examples))))
        if not rows:
            return {}
        lo, hi = shard_bounds(len(rows), s.world_size, s.rank)
        mine = rows[lo:hi]
        self.policy.model.eval()
        with s.full_parameters():
            sums = self._eval_sums(mine)
        total, n, masked = all_reduce_sum(s, sums).tolist()
        denominator = n if c.normalization == "response_length" else masked
        return {"eval/loss": total / max(denominator, 1.0)}

    def _eval_sums(self, mine: list[int]) -> torch.Tensor:
        """``[3]`` float64: normalised loss sum, rows, masked tokens of this process's rows."""
        s, c = self.session, self.config.sft
        sums = torch.zeros(3, dtype=torch.float64)  # normalised sum, rows, masked
        for lo in range(0, len(mine), c.per_device_batch_size):
            part = mine[lo : lo + c.per_device_batch_size]
            if not part:
                continue
            batch = self.batch(part, self.eval_examples)
            seeds = [derive_seed(self.config.run.seed, "sft-eval", i) for i in part]
            masks, t = row_masks(self.real_mask(batch).cpu(), seeds, c.eps)
            per_row, lengths, masked = self.micro_loss(batch, masks.to(s.device), t.to(s.device))
            if c.normalization == "response_length":
                value = float((per_row / lengths.to(per_row).clamp(min=1)).sum())
            else:
                value = float(per_row.sum())
            sums += torch.tensor(
                [value, float(len(part)), float(masked.sum())], dtype=torch.float64
            )
        return sums

    def train(self) -> None:
        TrainLoop(self.session, len(self.examples), self.config.sft.batch_size).run(
            self.step, self.evaluate, self.eval_hooks
        )


# ----------------------------------------------------------------------------- entry points
def _rows(config: SFTConfig, split: str, options: dict[str, Any]):
    d = config.data
    return load_sft(
        d.dataset,
        split,
        template=d.template,
        chat=config.model.chat_template,
        limit=d.limit,
        seed=config.run.seed,
        config=d.config,
        **options,
    )


def check(config: SFTConfig, world_size: int) -> list[str]:
    """The dry run: batch arithmetic, the model source and the data (a local file is read and
    checked row by row); no model is loaded."""
    from dllm_rl.data.sft import SFT_TASKS
    from dllm_rl.run.build import check_model_source

    local = config.check_batch(world_size)
    d = config.data
    where = f"task {d.dataset!r}" if d.dataset in SFT_TASKS else repr(d.dataset)
    if d.dataset in SFT_TASKS:
        from dllm_rl.data.registry import get_task

        spec = get_task(d.dataset)
        for split in [d.split] + ([d.eval_split] if d.eval_split and config.run.eval_steps else []):
            if split not in spec.splits:
                raise ValueError(f"task {d.dataset!r} has no split {split!r}: {spec.splits}")
    path = Path(str(d.dataset)).expanduser()
    if path.is_file():  # read and checked row by row, as the run will
        where = f"{path}: {len(_rows(config, d.split, d.options))} rows"
    return [
        f"model: {check_model_source(config.model)}",
        f"data: {where} split {d.split}",
        f"batch: {config.sft.batch_size} rows over {world_size} process(es) = {local} each, "
        f"micro-batches of {config.sft.per_device_batch_size}; loss normalised by "
        f"{config.sft.normalization}",
    ]


def build_trainer(
    config: SFTConfig,
    recipe: str,
    argv: list[str],
    rows: Sequence[dict[str, Any]] | None = None,
    eval_rows: Sequence[dict[str, Any]] | None = None,
) -> SFTTrainer:
    """Everything an SFT run needs (``rows``: prompt/response rows given directly)."""
    from dllm_rl.trainers.common import start_session

    config.check_batch(int(os.environ.get("WORLD_SIZE", "1")))
    d = config.data
    if rows is None:
        rows = _rows(config, d.split, d.options)
    if eval_rows is None:
        eval_rows = []
        if config.run.eval_steps and d.eval_split:
            eval_rows = _rows(config, d.eval_split, d.eval_options)
    session = start_session(config, recipe, argv)
    tok = session.policy.tokenizer
    kwargs = {"max_prompt_length": d.max_prompt_length, "max_length": d.max_length}
    examples, stats = tokenize_sft(rows, tok, **kwargs)
    eval_examples, _ = tokenize_sft(eval_rows, tok, **kwargs) if len(eval_rows) else ([], None)
    if stats.truncated:
        logger.warning("%d of %d training rows were truncated", stats.truncated, stats.rows)
    return SFTTrainer(config, session, examples, eval_examples, stats.truncated)


def run(config: SFTConfig, recipe: str, argv: list[str]) -> SFTTrainer:
    trainer = build_trainer(config, recipe, argv)
    trainer.train()
    return trainer
