"""Reward functions with the TRL signature: f(prompts, completions, completion_ids=None, **columns)."""
