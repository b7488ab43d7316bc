"""Masked-diffusion rollouts: step schedules, the sampler, and the trajectory record."""

from dllm_rl.rollout.config import REMASKING, EosRejection, SamplerConfig
from dllm_rl.rollout.proposal import commit_logprobs, exclude_mask_token
from dllm_rl.rollout.sampler import encode_prompts, generate, generate_text
from dllm_rl.rollout.schedules import (
    Schedule,
    ascending_schedule,
    eos_gamma_factors,
    uniform_schedule,
)
from dllm_rl.rollout.trajectory import Trajectory

__all__ = [
    "REMASKING",
    "EosRejection",
    "SamplerConfig",
    "Schedule",
    "Trajectory",
    "ascending_schedule",
    "commit_logprobs",
    "encode_prompts",
    "eos_gamma_factors",
    "exclude_mask_token",
    "generate",
    "generate_text",
    "uniform_schedule",
]
