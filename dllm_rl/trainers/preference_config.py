"""The VRPO / DPO trainer's schema: its ``data`` and ``preference`` sections on top of the shared
``run``, ``model`` and ``training`` (:mod:`dllm_rl.config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dllm_rl.config import ModelConfig, OptimConfig, RunConfig, check_rows
from dllm_rl.settings import setting as _help


@dataclass
class PreferenceDataConfig:
    """Preference pairs in TRL's format (``dllm_rl.data.preference.load_preference``)."""

    dataset: str = _help(
        "hh_rlhf (local slice), a local file, or a datasets name", default="hh_rlhf"
    )
    split: str = _help("split of a datasets name", default="train")
    config: str | None = _help("datasets config name", default=None)
    limit: int | None = _help("keep the first N rows", default=None)
    max_prompt_length: int | None = _help("the prompt keeps its last N tokens", default=256)
    max_length: int | None = _help("prompt + each response at most N tokens", default=512)
    eval_rows: int = _help("rows held out from the end of the data for evaluation", default=0)


@dataclass
class PreferenceSection:
    """DPO / VRPO on ELBO estimates (LLaDA 1.5, Zhu et al. 2025)."""

    pairs_per_step: int = _help("global preference pairs per optimizer step", default=8)
    per_device_batch_size: int = _help("pairs per micro-batch", default=8)
    beta: float = _help("DPO beta (LLaDA 1.5: 0.2)", default=0.2)
    loss_type: Literal["sigmoid", "ipo", "hinge"] = _help("preference loss", default="sigmoid")
    label_smoothing: float = _help("conservative-DPO flip rate (sigmoid only)", default=0.0)
    n_t: int = _help("timesteps per response: the budget n = n_t x n_yt", default=8)
    n_yt: int = _help("masks per timestep (Proposition 1: 1 is optimal)", default=1)
    form: Literal["L/l", "1/t"] = _help("ELBO estimator (Eq. 14-15 or 12-13)", default="L/l")
    antithetic: bool = _help("share the draws between policy and reference (Prop. 2)", default=True)
    stratified: bool = _help("stratified l across the n_t draws", default=False)
    eps: float = _help("1/t form: p = (1 - eps) t + eps", default=1e-3)
    sft_weight: float = _help(
        "weight of the SFT term on the chosen response (paper: 0.05)", default=0.0
    )
    length_normalize: bool = _help("divide each ELBO by its response length", default=False)
    max_tokens_per_forward: int | None = _help(
        "bound on rows x sequence length per ELBO forward (memory)", default=None
    )

    def __post_init__(self) -> None:
        if self.pairs_per_step < 1 or self.per_device_batch_size < 1:
            raise ValueError("preference.pairs_per_step and per_device_batch_size must be >= 1")
        if self.n_t < 1 or self.n_yt < 1:
            raise ValueError(f"preference.n_t and n_yt must be >= 1, got {self.n_t}, {self.n_yt}")
        if self.beta <= 0:
            raise ValueError(f"preference.beta must be > 0, got {self.beta}")


@dataclass
class PreferenceConfig:
    """A VRPO (or naive DPO: n_t = n_yt = 1, antithetic off) recipe."""

    algorithm: Literal["vrpo", "dpo"] = _help(
        "the trainer: vrpo or dpo (same loop)", default="vrpo"
    )
    run: RunConfig = _help("run directory, length, logging", default_factory=RunConfig)
    model: ModelConfig = _help(
        "the policy (the reference is its starting point)", default_factory=ModelConfig
    )
    data: PreferenceDataConfig = _help("preference pairs", default_factory=PreferenceDataConfig)
    preference: PreferenceSection = _help(
        "the loss, its ELBO budget and batch sizes", default_factory=PreferenceSection
    )
    training: OptimConfig = _help("optimizer and schedule", default_factory=OptimConfig)

    def check_batch(self, world_size: int) -> int:
        p = self.preference
        return check_rows(
            "preference.pairs_per_step", p.pairs_per_step, p.per_device_batch_size, world_size
        )
