"""Bundled recipes (YAML). Installed as the package data of ``dllm_rl.recipes``."""
