"""Training loops, one per algorithm, on accelerate; they share the pieces in ``dllm_rl.run``."""
