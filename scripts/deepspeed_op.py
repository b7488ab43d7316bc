"""Build DeepSpeed's CPU communication op once, clearing a stale build lock first.

DeepSpeed JIT-compiles ``deepspeed_shm_comm`` (g++ and ninja; about 75 s of CPU) the first time
it starts on a machine without a GPU, and caches it under the torch extensions folder. A start
killed mid-compile leaves a ``lock`` file there that makes every later start wait forever.

    python scripts/deepspeed_op.py          # what .ci/run does before the suite

The engine tests call :func:`build_deepspeed_op` too, so the 2-process launches never compile.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

STALE_AFTER_S = 900.0
"""A lock older than this belongs to a build that died (a live build takes ~75 s)."""


def extensions_root() -> Path:
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


def clear_stale_locks(root: Path | None = None, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove ``deepspeed_*/lock`` files older than ``older_than_s`` under the extensions root."""
    root = extensions_root() if root is None else root
    removed = []
    for lock in root.glob("**/deepspeed_*/lock"):
        if time.time() - lock.stat().st_mtime > older_than_s:
            lock.unlink(missing_ok=True)
            removed.append(lock)
    return removed


def build_deepspeed_op(older_than_s: float = STALE_AFTER_S) -> bool:
    """Clear stale locks and load (building if needed) the op; False when this DeepSpeed has
    no such op or it is incompatible here (DeepSpeed then falls back to torch.distributed)."""
    for lock in clear_stale_locks(older_than_s=older_than_s):
        print(f"removed a stale build lock: {lock}", file=sys.stderr)
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not builder.is_compatible():
        return False
    builder.load(verbose=False)
    return True


if __name__ == "__main__":
    # Nothing else builds while CI runs this, so any lock is stale.
    built = build_deepspeed_op(older_than_s=0.0)
    print("deepspeed_shm_comm op ready" if built else "no deepspeed_shm_comm op on this machine")
