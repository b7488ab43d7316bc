"""The masked-diffusion SFT trainer's schema: its ``data`` and ``sft`` sections on top of the
shared ``run``, ``model`` and ``training`` (:mod:`dllm_rl.config`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dllm_rl.config import ModelConfig, OptimConfig, RunConfig, check_rows
from dllm_rl.settings import setting as _help


@dataclass
class SFTDataConfig:
    """Prompt/response rows (``dllm_rl.data.sft.load_sft``)."""

    dataset: str = _help(
        "gsm8k, math500, addition (task names), a local file, or a datasets name with messages, "
        "prompt/completion or prompt/response columns",
        default="addition",
    )
    split: str = _help("training split", default="train")
    config: str | None = _help("datasets config name", default=None)
    template: str | None = _help("prompt template (task names only)", default=None)
    limit: int | None = _help("keep the first N rows", default=None)
    options: dict[str, Any] = _help("load_task options (size, digits, ...)", default_factory=dict)
    max_prompt_length: int | None = _help("the prompt keeps its last N tokens", default=None)
    max_length: int | None = _help("prompt + response at most N tokens", default=None)
    response_length: int | None = _help(
        "right-pad every response to N tokens (LLaDA's EOS-padded layout with sft.eos_padding)",
        default=None,
    )
    eval_split: str | None = _help("held-out split for eval/loss (null: none)", default="test")
    eval_options: dict[str, Any] = _help(
        "load_task options of the eval split", default_factory=dict
    )


@dataclass
class SFTSection:
    """Masked-diffusion SFT (LLaDA's recipe): t ~ U(eps, 1], CE on masked tokens weighted 1/t."""

    batch_size: int = _help("global rows per optimizer step (all processes)", default=16)
    per_device_batch_size: int = _help("rows per micro-batch forward", default=16)
    normalization: Literal["response_length", "masked_tokens"] = _help(
        "divide by each response's length (LLaDA's GUIDELINES) or by the masked tokens",
        default="response_length",
    )
    eos_padding: bool = _help(
        "response padding becomes EOS targets counted as answer tokens (as LLaDA trains)",
        default=False,
    )
    eps: float = _help("lower end of t", default=1e-3)
    eval_rows: int = _help("held-out rows scored for eval/loss (fixed draws)", default=64)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.per_device_batch_size < 1:
            raise ValueError("sft.batch_size and sft.per_device_batch_size must be >= 1")
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"sft.eps must be in (0, 1), got {self.eps}")


@dataclass
class SFTConfig:
    """A masked-diffusion SFT recipe."""

    algorithm: Literal["sft"] = _help("the trainer: sft", default="sft")
    run: RunConfig = _help("run directory, length, logging", default_factory=RunConfig)
    model: ModelConfig = _help("the model", default_factory=ModelConfig)
    data: SFTDataConfig = _help("prompt/response data", default_factory=SFTDataConfig)
    sft: SFTSection = _help("the SFT loss and batch sizes", default_factory=SFTSection)
    training: OptimConfig = _help("optimizer and schedule", default_factory=OptimConfig)

    def check_batch(self, world_size: int) -> int:
        return check_rows(
            "sft.batch_size", self.sft.batch_size, self.sft.per_device_batch_size, world_size
        )
