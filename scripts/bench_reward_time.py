"""Milliseconds the two rewards that were quadratic take on the hostile inputs that showed it, at
20 kB, 80 kB and 1 MB (best of three, wall clock):

    python scripts/bench_reward_time.py

``reasoning_format``: ``<reasoning>`` then ``a</reasoning> `` repeated, then an answer block and a
stray character (a full-match regex with two lazy groups took 0.46 s / 8.3 s at 20 / 80 kB);
``exact_answer``: an answer of that many digits (``int(Decimal(...))`` took 5.1 s at 200k digits).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {"20 kB": 20_000, "80 kB": 80_000, "1 MB": 1_000_000}


def strict_near_miss(size: int) -> str:
    unit = "a</reasoning> "
    return "<reasoning>" + unit * (size // len(unit)) + "<answer>4</answer>x"


def digits(size: int) -> str:
    return "<answer>" + "7" * size + "</answer>"


def seconds(reward, text: str, columns: dict) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        reward(prompts=[""], completions=[text], **columns)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    from dllm_rl.rewards.registry import get_reward

    cases = {
        "reasoning_format": (strict_near_miss, {}),
        "exact_answer": (digits, {"answer": ["42"]}),
    }
    print(f"{'reward':<20}" + "".join(f"{size:>10}" for size in SIZES))
    for name, (make, columns) in cases.items():
        reward = get_reward(name)
        row = [seconds(reward, make(n), columns) for n in SIZES.values()]
        print(f"{name:<20}" + "".join(f"{s * 1000:>8.3f}ms" for s in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
