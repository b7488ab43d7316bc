"""Grader self-check: every dataset's gold answers, written the way a model would write them, must
score 1.0; the same answers shuffled across rows must score near chance; and the code sandbox must
report its isolation layers and contain a suite of hostile programs and the code grader's
red-team suite (``tests/attacks/redteam.py``).

    python scripts/check_rewards.py --data ../shared/data --out outputs/check_rewards.json
    python scripts/check_rewards.py --datasets gsm8k,countdown --limit 50 --out /tmp/check.json

Gold completions: ``<reasoning>...</reasoning>\\n<answer>...</answer>`` with, in the answer, the
maths answer in ``\\boxed{}``, the gold code in a fenced ```python block, the Countdown reference
expression (solved by brute force for d1's file, which has none), or the Sudoku solution. The
shuffled pass grades row i against the gold completion of row perm[i], perm a deterministic
derangement (Sattolo's algorithm, seed 0), so no row keeps its own answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

logger = logging.getLogger("check_rewards")

REASONING = "<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"


def gsm8k_gold(row: dict[str, Any]) -> str:
    worked = row["solution"].rsplit("####", 1)[0].strip()
    return REASONING.format(reasoning=worked, answer=f"\\boxed{{{row['answer']}}}")


def math500_gold(row: dict[str, Any]) -> str:
    return REASONING.format(reasoning=row["solution"].strip(), answer=f"\\boxed{{{row['answer']}}}")


def humaneval_gold(row: dict[str, Any]) -> str:
    code = row["code_prefix"] + row["canonical_solution"]
    return REASONING.format(reasoning="Complete the function.", answer=f"```python\n{code}\n```")


def mbpp_gold(row: dict[str, Any]) -> str:
    code = row["reference_code"]
    return REASONING.format(reasoning="Write the function.", answer=f"```python\n{code}\n```")


def countdown_gold(row: dict[str, Any]) -> str:
    from dllm_rl.data.countdown import solve_countdown

    expression = row.get("solution") or solve_countdown(row["numbers"], row["target"])
    if expression is None:
        expression = "no solution found"  # scores as a wrong expression and gets listed
    return REASONING.format(reasoning="Combine the numbers.", answer=expression)


def sudoku_gold(row: dict[str, Any]) -> str:
    return REASONING.format(reasoning="Fill the grid.", answer=row["solution"])


@dataclass(frozen=True)
class Check:
    """One dataset of the self-check: how to load it, write its gold, and grade it."""

    task: str
    split: str
    reward: str  # "math" | "countdown" | "sudoku" | "code"
    gold: Callable[[dict[str, Any]], str]
    load_kwargs: dict[str, Any] = field(default_factory=dict)


CHECKS: dict[str, Check] = {
    "gsm8k": Check("gsm8k", "test", "math", gsm8k_gold),
    "math500": Check("math500", "test", "math", math500_gold),
    "humaneval": Check("humaneval", "test", "code", humaneval_gold),
    "mbpp": Check("mbpp", "test", "code", mbpp_gold),
    "mbpp_sanitized": Check("mbpp_sanitized", "test", "code", mbpp_gold),
    "sudoku": Check("sudoku", "test", "sudoku", sudoku_gold),
    "countdown": Check("countdown", "test", "countdown", countdown_gold),
    "countdown_generated": Check(
        "countdown",
        "train",
        "countdown",
        countdown_gold,
        {"source": "generate", "size": 500, "seed": 0},
    ),
}


def derangement(n: int, seed: int = 0) -> list[int]:
    """A permutation of ``range(n)`` with no fixed point (Sattolo: one n-cycle), for n >= 2."""
    perm = list(range(n))
    rng = random.Random(seed)
    for i in range(n - 1, 0, -1):
        j = rng.randrange(i)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def make_reward(
    kind: str, workers: int, code_timeout_s: float = 10.0
) -> Callable[..., list[float | None]]:
    """The reward function for ``kind`` (the same functions training uses)."""
    if kind == "math":
        from dllm_rl.rewards.math import MathGrader

        return MathGrader(num_workers=workers).reward
    if kind == "countdown":
        from dllm_rl.rewards.planning import countdown_reward

        return countdown_reward
    if kind == "sudoku":
        from dllm_rl.rewards.planning import sudoku_reward

        return sudoku_reward
    if kind == "code":
        from dllm_rl.rewards.code import make_code_reward

        # code_reward itself, with the concurrency and time limit asked for
        return make_code_reward(max_concurrency=workers, timeout_s=code_timeout_s)
    raise ValueError(f"unknown reward kind {kind!r}")


def grade(
    reward: Callable[..., list[float | None]],
    rows: dict[str, list[Any]],
    completions: Sequence[str],
    batch_size: int,
    bar: Any,
) -> list[float | None]:
    """Scores of ``completions`` against the dataset columns ``rows``, in batches."""
    scores: list[float | None] = []
    for start in range(0, len(completions), batch_size):
        stop = min(start + batch_size, len(completions))
        columns = {k: v[start:stop] for k, v in rows.items() if k != "prompt"}
        scores.extend(reward(rows["prompt"][start:stop], list(completions[start:stop]), **columns))
        bar.update(stop - start)
    return scores


def failure_reason(
    check: Check, row: dict[str, Any], completion: str, score: Any, code_timeout_s: float = 10.0
) -> str:
    """A short, human-readable reason why a gold completion did not score 1.0."""
    if check.reward == "math":
        from dllm_rl.rewards.math import extract_answer

        if score is None:
            return f"gold {row['answer']!r} could not be parsed"
        return f"read {extract_answer(completion)!r} vs gold {row['answer']!r}"
    if check.reward == "countdown":
        answer = completion.rsplit("<answer>", 1)[-1].split("</answer>")[0].strip()
        return f"expression {answer!r} for {row['numbers']} -> {row['target']}"
    if check.reward == "sudoku":
        return f"puzzle {row['puzzle']} solution {row['solution']}"
    from dllm_rl.rewards.code import grade_code

    (result,) = grade_code(
        [completion],
        [row["tests"]],
        [row["test_setup"]],
        [row["code_prefix"]],
        [row["entry_point"]],
        timeout_s=code_timeout_s,
    )
    errors = "; ".join(
        f"{what}: {text.strip().splitlines()[-1][:120]}"
        for what, text in (("candidate", result.candidate_error), ("setup", result.setup_error))
        if text.strip()
    )
    # Re-run alone, so a pass here after a failure in the batch points at the time limit.
    again = f"re-graded alone: {result.outcome}, {result.passed}/{result.total} passed"
    if result.sandbox is not None and result.sandbox.timed_out:
        again += f" (timed out after {code_timeout_s:g} s)"
    return again + (f"; {errors}" if errors else "")


def mean(values: Sequence[float | None]) -> float:
    """Mean with ``None`` (ungradable) counted as 0.0."""
    return sum(v or 0.0 for v in values) / len(values) if values else float("nan")


def row_id(row: dict[str, Any], index: int) -> str:
    for key in ("task_id", "unique_id"):
        if row.get(key):
            return str(row[key])
    return str(index)


def run_check(name: str, check: Check, args: argparse.Namespace) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from dllm_rl.data import load_task

    kwargs = dict(check.load_kwargs)
    if "source" not in kwargs and args.data is not None:
        kwargs["source"] = args.data
    ds = load_task(check.task, check.split, limit=args.limit, **kwargs)
    rows = ds.to_dict()
    n = len(ds)
    records = [{k: rows[k][i] for k in rows} for i in range(n)]
    gold = [check.gold(r) for r in records]
    perm = derangement(n)
    shuffled = [gold[perm[i]] for i in range(n)]
    reward = make_reward(check.reward, args.workers, args.code_timeout)

    # Warm up (the maths pool spawns its workers on first use) so the timing is grading only.
    start = time.perf_counter()
    first = {k: v[:1] for k, v in rows.items() if k != "prompt"}
    reward(rows["prompt"][:1], gold[:1], **first)
    startup_seconds = time.perf_counter() - start

    with tqdm(total=2 * n, desc=name, unit="completion", leave=False) as bar:
        start = time.perf_counter()
        gold_scores = grade(reward, rows, gold, args.batch_size, bar)
        gold_seconds = time.perf_counter() - start
        shuffled_scores = grade(reward, rows, shuffled, args.batch_size, bar) if n > 1 else []
        seconds = time.perf_counter() - start
    close = getattr(getattr(reward, "__self__", None), "close", None)
    if close is not None:  # the math grader's worker processes
        close()

    failures = [
        {
            "index": i,
            "id": row_id(records[i], i),
            "score": score,
            "reason": failure_reason(check, records[i], gold[i], score, args.code_timeout),
        }
        for i, score in enumerate(gold_scores)
        if score != 1.0
    ]
    result = {
        "task": check.task,
        "split": check.split,
        "reward": check.reward,
        "n": n,
        "gold_mean": mean(gold_scores),
        "shuffled_mean": mean(shuffled_scores) if shuffled_scores else None,
        "seconds": round(seconds, 3),
        "startup_seconds": round(startup_seconds, 3),
        "gold_seconds": round(gold_seconds, 3),
        "gold_completions_per_s": round(n / gold_seconds, 1) if gold_seconds > 0 else None,
        "failures": failures,
    }
    if check.reward == "math":  # shuffled rows that score 1.0 because two golds are equal
        result["shuffled_same_gold"] = sum(
            rows["answer"][perm[i]] == rows["answer"][i] for i in range(n) if n > 1
        )
    return result


def isolation_report() -> dict[str, list[str]]:
    """The isolation layers a sandboxed program gets here, by default and in each forced
    degraded mode (what a host without namespaces, or a non-root caller, would get)."""
    from dllm_rl.rewards.sandbox import run_program
    from tests.attacks.redteam import DEGRADED

    modes = {"default": {}, **DEGRADED}
    layers = {}
    for mode, limits in modes.items():
        result = run_program("", timeout_s=15.0, **limits)
        layers[mode] = (
            list(result.isolation) if result.error is None else [f"error: {result.error}"]
        )
    return layers


def run_sandbox_suite() -> dict[str, Any]:
    """The code sandbox's isolation layers, its hostile-program suite and the red-team suite of
    the code grader (issue 10); ``all_contained`` counts a case the machine has no layer for
    (``contained`` is ``None``) as not failed, and lists it under ``not_applicable``."""
    from dllm_rl.rewards.sandbox import network_isolation_available
    from tests.attacks.hostile import run_hostile_suite
    from tests.attacks.redteam import run_redteam_suite

    start = time.perf_counter()
    layers = isolation_report()
    cases = run_hostile_suite()
    redteam = run_redteam_suite()
    return {
        "network_isolation": bool(network_isolation_available()),
        "isolation": layers,
        "all_contained": all(case.get("contained") for case in cases)
        and all(row.get("contained") is not False for row in redteam),
        "not_applicable": [row["case"] for row in redteam if row.get("contained") is None],
        "seconds": round(time.perf_counter() - start, 3),
        "cases": cases,
        "redteam": redteam,
    }


def print_summary(report: dict[str, Any]) -> None:
    header = f"{'dataset':<20} {'n':>5} {'gold':>7} {'shuffled':>9} {'seconds':>8} {'gold/s':>8} {'not 1.0':>8}"
    print(header)
    print("-" * len(header))
    for name, r in report["datasets"].items():
        if "error" in r:
            print(f"{name:<20} error: {r['error']}")
            continue
        shuffled = "-" if r["shuffled_mean"] is None else f"{r['shuffled_mean']:.3f}"
        print(
            f"{name:<20} {r['n']:>5} {r['gold_mean']:>7.3f} {shuffled:>9} {r['seconds']:>8.1f} "
            f"{r['gold_completions_per_s'] or 0:>8.1f} {len(r['failures']):>8}"
        )
    sandbox = report.get("sandbox")
    if sandbox is None:
        return
    print()
    if "error" in sandbox:
        print(f"sandbox suite: error: {sandbox['error']}")
        return
    print(f"network isolation active: {sandbox['network_isolation']}")
    for mode, layers in sandbox.get("isolation", {}).items():
        print(f"isolation ({mode}): {', '.join(layers) or 'limits only'}")
    print(f"{'hostile case':<32} {'outcome':<28} {'contained':>9} {'wall_s':>7}")
    for case in sandbox["cases"]:
        wall = case.get("wall_s")
        wall_text = f"{wall:7.2f}" if isinstance(wall, (int, float)) else f"{'-':>7}"
        print(
            f"{str(case.get('case')):<32} {str(case.get('outcome'))[:28]:<28} "
            f"{str(case.get('contained')):>9} {wall_text}"
        )
    if sandbox.get("redteam"):
        print()
        print(f"{'red-team case (finding)':<44} {'expected':<22} {'contained':>9}  observed")
        for row in sandbox["redteam"]:
            name = f"{row.get('case')} ({row.get('finding')})"
            contained = "n/a" if row.get("contained") is None else str(row.get("contained"))
            print(
                f"{name:<44} {str(row.get('expected'))[:22]:<22} {contained:>9}  "
                f"{str(row.get('observed'))[:90]}"
            )
    print(f"all contained: {sandbox.get('all_contained')}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder of the local dataset copies (default: $DLLM_RL_DATA or <repo>/../shared/data)",
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON report")
    parser.add_argument(
        "--datasets",
        default=",".join(CHECKS),
        help=f"comma-separated subset of: {', '.join(CHECKS)} (default: all)",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N rows of each dataset")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="grading worker processes (maths pool, code sandboxes)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="completions per reward call")
    parser.add_argument(
        "--code-timeout",
        type=float,
        default=10.0,
        help="wall-clock limit of each code program, s (the code reward's default: 10)",
    )
    parser.add_argument(
        "--no-sandbox-suite", action="store_true", help="skip the hostile sandbox suite"
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"unknown dataset(s) {unknown}; choose from {', '.join(CHECKS)}")
    args.names = names
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    import datasets

    datasets.disable_progress_bars()
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": str(args.data) if args.data else None,
        "limit": args.limit,
        "workers": args.workers,
        "code_timeout_s": args.code_timeout,
        "cpu_count": os.cpu_count(),
        "datasets": {},
    }
    for name in args.names:
        try:
            report["datasets"][name] = run_check(name, CHECKS[name], args)
        except ImportError as error:  # a reward module not written yet
            logger.error("%s: %s", name, error)
            report["datasets"][name] = {"error": f"{type(error).__name__}: {error}"}
    if not args.no_sandbox_suite:
        try:
            report["sandbox"] = run_sandbox_suite()
        except ImportError as error:
            report["sandbox"] = {"error": f"{type(error).__name__}: {error}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_summary(report)
    print(f"\nreport: {args.out}")
    gold_ok = all(r.get("gold_mean") == 1.0 for r in report["datasets"].values())
    contained = report.get("sandbox", {}).get("all_contained", True) is not False
    return 0 if gold_ok and contained else 1


if __name__ == "__main__":
    sys.exit(main())
