"""Pieces every trainer shares: config parsing, the run directory, metrics logging, checkpoints."""
