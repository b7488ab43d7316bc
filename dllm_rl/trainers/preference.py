"""VRPO (LLaDA 1.5, Zhu et al. 2025) and naive DPO on ELBO estimates: one explicit loop.

A masked diffusion LM has no exact log-likelihood, so DPO's log-ratios use ELBO estimates
B(y) of log pi(y | x) (:mod:`dllm_rl.objectives.elbo`). VRPO cuts their variance with a budget of
n = n_t x n_yt draws allocated as n timesteps x 1 mask (Proposition 1) and the same draws for the
policy and the reference (antithetic, Proposition 2). Naive DPO is n = 1, antithetic off.

Each step: the next ``pairs_per_step`` pairs of the seeded order, split across processes and
micro-batches. Each response's draws come from a generator keyed by (seed, step, pair, side), so
micro-batching and the process count never change them. Chosen and rejected responses are scored
together: one policy pass (with grad) and one reference pass (no grad) per micro-batch.
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

from dllm_rl.data.preference import (
    PreferenceBatch,
    PreferenceExample,
    collate_preference,
    load_preference,
    tokenize_preference,
)
from dllm_rl.objectives.dpo import dpo_loss
from dllm_rl.objectives.elbo import ElboDraws, draw_elbo_masks, score_elbo
from dllm_rl.run.build import Reference, derive_seed, generator
from dllm_rl.run.errors import DataError
from dllm_rl.trainers.common import (
    EvalHook,
    Session,
    TrainLoop,
    all_reduce_sum,
    run_calls,
    shard_bounds,
)
from dllm_rl.trainers.preference_config import PreferenceConfig

logger = logging.getLogger(__name__)

METRIC_KEYS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "sft_loss",
    "elbo/std",
)


def pair_draws(response_mask: torch.Tensor, seeds: Sequence[int], section: Any) -> ElboDraws:
    """The ELBO draws of B responses, response i from a generator seeded by ``seeds[i]``."""
    parts = [
        draw_elbo_masks(
            response_mask[i : i + 1].cpu(),
            section.n_t,
            section.n_yt,
            form=section.form,
            stratified=section.stratified,
            eps=section.eps,
            generator=generator(seed),
        )
        for i, seed in enumerate(seeds)
    ]
    return ElboDraws.cat(parts).to(response_mask.device)


@dataclass
class PreferenceTrainer:
    """State of one VRPO/DPO run; :meth:`train` is the loop."""

    config: PreferenceConfig
    session: Session
    reference: Reference
    examples: Sequence[PreferenceExample]
    eval_examples: Sequence[PreferenceExample] = field(default_factory=list)
    truncated: int = 0
    eval_hooks: list[EvalHook] = field(default_factory=list)

    @property
    def policy(self):
        return self.session.policy

    def draws(self, batch: PreferenceBatch, keys: Sequence[Any], tag: str) -> ElboDraws:
        """Draws for chosen then rejected (``[2b, M, L]``), keyed per pair and side."""
        seed, p = self.config.run.seed, self.config.preference
        responses = torch.cat([batch.chosen_mask, batch.rejected_mask])  # [2b, L]
        seeds = [derive_seed(seed, tag, *k, side) for side in ("w", "l") for k in keys]
        return pair_draws(responses, seeds, p)

    def elbos(self, model, batch: PreferenceBatch, draws: ElboDraws):
        """ELBO estimates of chosen and rejected: ``[2b, M]`` per draw (one batched pass)."""
        prompt_ids = torch.cat([batch.prompt_ids, batch.prompt_ids])  # [2b, P]
        prompt_mask = torch.cat([batch.prompt_mask, batch.prompt_mask])  # [2b, P]
        ids = torch.cat([batch.chosen_ids, batch.rejected_ids])  # [2b, L]
        mask = torch.cat([batch.chosen_mask, batch.rejected_mask])  # [2b, L]
        return score_elbo(
            model,
            prompt_ids,
            prompt_mask,
            ids,
            mask,
            draws,
            max_tokens_per_forward=self.config.preference.max_tokens_per_forward,
        )

    def pair_loss(self, batch: PreferenceBatch, keys: Sequence[Any], tag: str):
        """The DPO/VRPO loss of one micro-batch and its ELBO spread."""
        p = self.config.preference
        draws = self.draws(batch, keys, tag)
        policy = self.elbos(self.policy, batch, draws)
        ref_draws = draws if p.antithetic else self.draws(batch, keys, tag + "/ref")
        with torch.no_grad(), self.reference.active(self.policy.model) as ref:
            reference = self.elbos(ref, batch, ref_draws)
        b = len(batch)
        pol, rf = policy.elbo, reference.elbo  # [2b]
        out = dpo_loss(
            pol[:b],
            pol[b:],
            rf[:b],
            rf[b:],
            beta=p.beta,
            loss_type=p.loss_type,
            label_smoothing=p.label_smoothing,
            chosen_lengths=batch.chosen_lengths,
            rejected_lengths=batch.rejected_lengths,
            length_normalize=p.length_normalize,
            sft_weight=p.sft_weight,
        )
        return out, float(policy.std.mean())

    def step(self, step: int, indices: list[int]) -> dict[str, float]:
        s, p = self.session, self.config.preference
        t0 = time.perf_counter()
        local = self.config.check_batch(s.world_size)
        first = s.rank * local
        mine = indices[first : first + local]
        self.policy.model.train()
        acc = {"sums": torch.zeros(len(METRIC_KEYS) + 1, dtype=torch.float64), "tokens": 0}

        def call(lo: int, scale: float = 1.0) -> Callable[[], torch.Tensor]:
            def run() -> torch.Tensor:
                rows = mine[lo : lo + p.per_device_batch_size]
                batch = collate_preference([self.examples[i] for i in rows], self.policy.ids.pad)
                batch = batch.to(s.device)
                keys = [(step, first + lo + j) for j in range(len(rows))]
                out, spread = self.pair_loss(batch, keys, "elbo")
                if scale:  # weighted by pairs
                    values = {**out.metrics(), "elbo/std": spread}
                    acc["sums"] += torch.tensor(
                        [values[k] * len(rows) for k in METRIC_KEYS] + [len(rows)],
                        dtype=torch.float64,
                    )
                    masks = batch.chosen_mask.sum() + batch.rejected_mask.sum()
                    acc["tokens"] += int(masks) * draws_per_response(p)
                return out.loss * (scale * len(rows) / p.pairs_per_step)

            return run

        starts = range(0, local, p.per_device_batch_size)
        run_calls(s, [call(lo) for lo in starts], lambda: [call(0, scale=0.0)])
        sums, tokens = acc["sums"], acc["tokens"]
        norm = s.optimizer_step()
        total = all_reduce_sum(s, sums)
        step_s = time.perf_counter() - t0
        metrics = {k: float(total[i] / total[-1]) for i, k in enumerate(METRIC_KEYS)}
        metrics.update(
            {
                "grad_norm": norm,
                "learning_rate": s.scheduler.get_last_lr()[0],
                "time/step_s": step_s,
                "elbo_tokens_per_s": tokens / step_s,
                "truncated_rows": self.truncated,
            }
        )
        return metrics

    @torch.no_grad()
    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out pairs on fixed draws: ``eval/rewards/accuracies``, margins, loss."""
        s = self.session
        rows = list(range(len(self.eval_examples)))
        if not rows:
            return {}
        lo, hi = shard_bounds(len(rows), s.world_size, s.rank)
        mine = rows[lo:hi]
        self.policy.model.eval()
        with s.full_parameters():
            sums = self._eval_sums(mine)
        loss, acc, margin, n = all_reduce_sum(s, sums).tolist()
        n = max(n, 1.0)
        return {
            "eval/loss": loss / n,
            "eval/rewards/accuracies": acc / n,
            "eval/rewards/margins": margin / n,
        }

    def _eval_sums(self, mine: list[int]) -> torch.Tensor:
        """``[4]`` float64: loss, accuracy and margin sums and the pair count of ``mine``."""
        s, p = self.session, self.config.preference
        sums = torch.zeros(4, dtype=torch.float64)
        for lo in range(0, len(mine), p.per_device_batch_size):
            part = mine[lo : lo + p.per_device_batch_size]
            batch = collate_preference([self.eval_examples[i] for i in part], self.policy.ids.pad)
            out, _ = self.pair_loss(batch.to(s.device), [(i,) for i in part], "eval")
            m = out.metrics()
            n = len(part)
            sums += torch.tensor(
                [m["loss"] * n, m["rewards/accuracies"] * n, m["rewards/margins"] * n, n],
                dtype=torch.float64,
            )
        return sums

    def train(self) -> None:
        TrainLoop(self.session, len(self.examples), self.config.preference.pairs_per_step).run(
            self.step, self.evaluate, self.eval_hooks
        )


def split_held_out(rows: list, eval_rows: int, source: str) -> tuple[list, list]:
    """``(training rows, held-out rows)``: the last ``eval_rows`` rows are held out.

    Raises:
        DataError: ``eval_rows`` would leave no row to train on.
    """
    if not eval_rows:
        return rows, []
    if eval_rows >= len(rows):
        raise DataError(
            f"data.eval_rows={eval_rows} holds out every row: {source!r} has {len(rows)} "
            f"row(s) (after data.limit); choose data.eval_rows below {len(rows)}"
        )
    return rows[: len(rows) - eval_rows], rows[len(rows) - eval_rows :]


def draws_per_response(section: Any) -> int:
    """Masked copies scored per response and model: n_t x n_yt (policy; the reference doubles)."""
    return section.n_t * section.n_yt


# ----------------------------------------------------------------------------- entry points
def check(config: PreferenceConfig, world_size: int) -> list[str]:
    """The dry run: batch arithmetic, the model source, the data location; nothing loaded."""
    from dllm_rl.data.paths import data_dir
    from dllm_rl.data.preference import GENERATED_PREFERENCES, PREFERENCE_DATASETS
    from dllm_rl.run.build import check_model_source

    local = config.check_batch(world_size)
    d, p = config.data, config.preference
    if d.dataset in PREFERENCE_DATASETS:
        path = data_dir() / PREFERENCE_DATASETS[d.dataset]
        if not path.is_file():
            raise FileNotFoundError(f"preference set {d.dataset!r}: no local copy at {path}")
    else:
        path = Path(d.dataset).expanduser()
    if d.dataset in GENERATED_PREFERENCES or path.is_file():  # read and checked, as the run will
        path = "generated" if d.dataset in GENERATED_PREFERENCES else path
        rows = load_preference(d.dataset, d.split, config=d.config, limit=d.limit)
        train_rows, held = split_held_out(list(rows), d.eval_rows, d.dataset)
        where = f"{path}: {len(train_rows)} pairs to train on, {len(held)} held out"
    else:
        where = f"{d.dataset!r} (a datasets name: not checked offline)"
    return [
        f"model: {check_model_source(config.model)} (reference: its frozen starting point)",
        f"data: {where}",
        f"ELBO: {p.form}, n = {p.n_t} x {p.n_yt}, antithetic {p.antithetic}, beta {p.beta}, "
        f"SFT weight {p.sft_weight}",
        f"batch: {p.pairs_per_step} pairs over {world_size} process(es) = {local} each, "
        f"micro-batches of {p.per_device_batch_size}",
    ]


def build_trainer(
    config: PreferenceConfig,
    recipe: str,
    argv: list[str],
    rows: Sequence[dict[str, Any]] | None = None,
) -> PreferenceTrainer:
    """Everything a VRPO/DPO run needs (``rows``: preference rows given directly)."""
    from dllm_rl.trainers.common import start_session

    config.check_batch(int(os.environ.get("WORLD_SIZE", "1")))
    d = config.data
    if rows is None:
        rows = load_preference(d.dataset, d.split, config=d.config, limit=d.limit)
    train_rows, held = split_held_out(list(rows), d.eval_rows, d.dataset)
    session = start_session(config, recipe, argv, needs_reference=True)
    tok = session.policy.tokenizer
    kwargs = {"max_prompt_length": d.max_prompt_length, "max_length": d.max_length}
    examples, stats = tokenize_preference(train_rows, tok, **kwargs)
    eval_examples, _ = tokenize_preference(held, tok, **kwargs) if held else ([], None)
    if stats.truncated:
        logger.warning("%d of %d preference pairs were truncated", stats.truncated, stats.rows)
    return PreferenceTrainer(
        config, session, session.reference, examples, eval_examples, stats.truncated
    )


def run(config: PreferenceConfig, recipe: str, argv: list[str]) -> PreferenceTrainer:
    trainer = build_trainer(config, recipe, argv)
    trainer.train()
    return trainer
