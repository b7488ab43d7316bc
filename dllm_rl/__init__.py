"""dllm-rl: RL post-training for masked diffusion language models."""

__version__ = "0.1.0"
