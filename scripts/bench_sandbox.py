"""Code-grading throughput: sandbox overhead per program and programs/s on MBPP gold solutions.

    python scripts/bench_sandbox.py --data ../shared/data --limit 100 --out /tmp/bench.json

Two figures, each on the machine's CPUs (``--workers`` programs at a time):

- ``empty_programs_per_s``: ``run_program("")``, the fixed cost of one sandbox (spawn, isolate,
  supervise, tear down);
- ``mbpp_gold_programs_per_s``: the code reward on the first ``--limit`` MBPP test rows with their
  gold solution (each completion is one program that runs the candidate and all its tests).

Results are printed and written as JSON to ``--out``. ``--against COMMIT`` measures that commit
too, in the same run (its own copy of this script, in a temporary worktree, alternating with this
checkout ``--repeat`` times, best of each), and prints both with their ratio:

    python scripts/bench_sandbox.py --data ../shared/data --against 1977b9b --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
            check=False,
        ).stdout.strip()
    except OSError:
        return ""


def bench_empty(n: int, workers: int) -> dict:
    from dllm_rl.rewards.sandbox import run_programs

    run_programs([""], max_concurrency=1)  # warm-up: probes, caches
    start = time.perf_counter()
    results = run_programs([""] * n, max_concurrency=workers)
    seconds = time.perf_counter() - start
    return {
        "n": n,
        "seconds": round(seconds, 3),
        "empty_programs_per_s": round(n / seconds, 2),
        "errors": sum(r.error is not None for r in results),
        "isolation": list(results[0].isolation),
    }


def bench_mbpp(data: Path | None, limit: int, workers: int) -> dict:
    from dllm_rl.data import load_task
    from dllm_rl.rewards.code import make_code_reward

    kwargs = {"source": data} if data is not None else {}
    rows = load_task("mbpp", "test", limit=limit, **kwargs).to_dict()
    gold = [f"```python\n{code}\n```" for code in rows["reference_code"]]
    columns = {k: rows[k] for k in ("tests", "test_setup", "code_prefix", "entry_point")}
    reward = make_code_reward(max_concurrency=workers)
    reward(None, gold[:1], **{k: v[:1] for k, v in columns.items()})  # warm-up
    start = time.perf_counter()
    scores = reward(None, gold, **columns)
    seconds = time.perf_counter() - start
    return {
        "n": len(gold),
        "seconds": round(seconds, 3),
        "mbpp_gold_programs_per_s": round(len(gold) / seconds, 2),
        "gold_mean": sum(s or 0.0 for s in scores) / len(scores),
    }


def _best(measure, repeat: int) -> dict:
    """The fastest of ``repeat`` measurements (the machine is shared: others add noise)."""
    runs = [measure() for _ in range(max(1, repeat))]
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "all_seconds": [r["seconds"] for r in runs]}


def _measure_in(checkout: Path, args: argparse.Namespace) -> dict:
    """One measurement by ``checkout``'s own copy of this script, in a fresh process."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "figures.json"
        command = [sys.executable, str(checkout / "scripts" / "bench_sandbox.py")]
        command += ["--limit", str(args.limit), "--empty", str(args.empty)]
        command += ["--workers", str(args.workers), "--out", str(out)]
        if args.data is not None:
            command += ["--data", str(args.data.resolve())]
        done = subprocess.run(command, cwd=checkout, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the benchmark failed in {checkout}:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def compare(args: argparse.Namespace) -> int:
    """This checkout against ``args.against``, alternating, best of ``args.repeat`` each."""
    from _worktree import REPO, worktree

    keys = (("empty", "empty_programs_per_s"), ("mbpp", "mbpp_gold_programs_per_s"))
    runs: dict[str, list[dict]] = {args.against: [], "this checkout": []}
    with worktree(args.against) as old:
        for _ in range(max(1, args.repeat)):
            runs[args.against].append(_measure_in(old, args))
            runs["this checkout"].append(_measure_in(REPO, args))
    best = {
        name: {key: max(r[part][key] for r in rs) for part, key in keys}
        for name, rs in runs.items()
    }
    report = {
        "against": args.against,
        "commit": _commit(),
        "workers": args.workers,
        "repeat": args.repeat,
        "best": best,
        "gold_mean": {name: rs[-1]["mbpp"]["gold_mean"] for name, rs in runs.items()},
        "ratio": {
            key: round(best["this checkout"][key] / best[args.against][key], 2) for _, key in keys
        },
    }
    print(f"{'':<16}{'empty programs/s':>18}{'MBPP gold programs/s':>22}{'gold mean':>11}")
    for name, figures in best.items():
        print(
            f"{name:<16}{figures['empty_programs_per_s']:>18.1f}"
            f"{figures['mbpp_gold_programs_per_s']:>22.1f}{report['gold_mean'][name]:>11.3f}"
        )
    empty, mbpp = (
        report["ratio"]["empty_programs_per_s"],
        report["ratio"]["mbpp_gold_programs_per_s"],
    )
    print(f"{'ratio':<16}{empty:>17.2f}x{mbpp:>21.2f}x")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="local dataset copies")
    parser.add_argument("--limit", type=int, default=100, help="MBPP rows to grade")
    parser.add_argument("--empty", type=int, default=40, help="empty programs to run")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeat", type=int, default=1, help="measure N times, keep the best")
    parser.add_argument("--label", default="", help="a name for this measurement")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON figures")
    parser.add_argument("--against", default=None, help="another commit to measure in this run")
    args = parser.parse_args(argv)
    if args.against:
        return compare(args)
    report = {
        "label": args.label,
        "commit": _commit(),
        "cpu_count": os.cpu_count(),
        "workers": args.workers,
        "python": platform.python_version(),
        "repeat": args.repeat,
        "load_average_before": list(os.getloadavg()),
        "empty": _best(lambda: bench_empty(args.empty, args.workers), args.repeat),
        "mbpp": _best(lambda: bench_mbpp(args.data, args.limit, args.workers), args.repeat),
        "load_average_after": list(os.getloadavg()),
    }
    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
