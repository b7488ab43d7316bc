"""Trainer CPU seconds per graded completion, for an honest completion and for one that fills
every descriptor it can reach with 4 MB of reports (the red-team suite's flooding completion),
graded by this checkout and, with ``--against``, by another commit, in one run:

    python scripts/bench_grader_cpu.py --against 1977b9b

Each figure is the trainer process's own CPU time (``time.process_time``: parsing, decoding,
bookkeeping; the sandboxes' CPU is not in it) over ``--n`` completions, divided by ``--n``.
"""

from __future__ import annotations

import argparse
import sys

from _worktree import REPO, run_in, worktree

if __package__ in (None, ""):  # run as a file: make the checkout importable
    sys.path.insert(0, str(REPO))

HONEST = "```python\ndef f(x):\n    return x + 1\n```"

# Runs inside the checkout being measured (its own grader).
MEASURE = """
import json, sys, time
from dllm_rl.rewards.code import grade_code
job = json.load(sys.stdin)
tests = [["assert f(1) == 2"]] * job["n"]
grade_code([job["honest"]], tests[:1])  # warm-up: sandbox probes, caches
out = {}
for name in ("honest", "flood"):
    start = time.process_time()
    grades = grade_code([job[name]] * job["n"], tests)
    out[name] = (time.process_time() - start) / job["n"]
    out[name + "_rewards"] = sorted({g.reward for g in grades})
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default=None, help="another commit to measure too")
    parser.add_argument("--n", type=int, default=8, help="completions of each kind")
    args = parser.parse_args(argv)
    from tests.attacks.redteam import _REPORT_FLOOD

    job = {"honest": HONEST, "flood": f"```python\n{_REPORT_FLOOD}\n```", "n": args.n}
    rows = {}
    if args.against:
        with worktree(args.against) as checkout:
            rows[args.against] = run_in(checkout, MEASURE, job)
    rows["this checkout"] = run_in(REPO, MEASURE, job)
    print(f"{'commit':<16}{'honest s/compl.':>17}{'flood s/compl.':>16}  rewards (honest; flood)")
    for name, r in rows.items():
        print(
            f"{name:<16}{r['honest']:>17.4f}{r['flood']:>16.4f}  "
            f"{r['honest_rewards']}; {r['flood_rewards']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
