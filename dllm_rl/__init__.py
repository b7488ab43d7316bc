"""dllm-rl: RL post-training for masked diffusion language models."""

from . import _rewards_name

__version__ = "0.1.0"

_rewards_name.install()  # dllm_rl.rewards in a source checkout; the old name `rewards`, deprecated
