"""HumanEval against a completion that implements nothing: the probe-and-replay attack of the
red-team suite (``tests.attacks.redteam.PROBE_AND_REPLAY``) and the gold solutions, graded by
this checkout and, with ``--against``, by another commit (checked out in a temporary worktree),
in one run:

    python scripts/redteam_humaneval.py --data ../shared/data --against 1977b9b

Prints one row per commit: the attack's mean reward, how many problems it scores 1.0 on, and the
gold mean. The attack's text always comes from this checkout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _worktree import REPO, run_in, worktree

if __package__ in (None, ""):  # run as a file: make the checkout importable
    sys.path.insert(0, str(REPO))

# Runs inside the checkout being measured (its own rewards and data loaders).
GRADE = """
import json, sys
from dllm_rl.data import load_task
from dllm_rl.rewards.code import grade_code
job = json.load(sys.stdin)
rows = load_task("humaneval", "test", source=job["data"]).to_dict()
n = len(rows["tests"])
columns = [rows[k] for k in ("tests", "test_setup", "code_prefix", "entry_point")]
attack = grade_code([job["attack"]] * n, *columns)
gold = grade_code(rows["canonical_solution"], *columns)
print(json.dumps({"attack": [g.reward for g in attack], "gold": [g.reward for g in gold]}))
"""


def grade_in(checkout: Path, data: Path, attack: str) -> dict:
    rewards = run_in(checkout, GRADE, {"data": str(data.resolve()), "attack": attack})
    attack_rewards = [r or 0.0 for r in rewards["attack"]]
    return {
        "attack_mean": round(sum(attack_rewards) / len(attack_rewards), 4),
        "attack_at_1": sum(r == 1.0 for r in attack_rewards),
        "gold_mean": round(sum(r or 0.0 for r in rewards["gold"]) / len(rewards["gold"]), 4),
        "problems": len(attack_rewards),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="local dataset copies")
    parser.add_argument("--against", default=None, help="another commit to grade with too")
    args = parser.parse_args(argv)
    from tests.attacks.redteam import PROBE_AND_REPLAY

    attack = f"```python\n{PROBE_AND_REPLAY}\n```"
    rows = {}
    if args.against:
        with worktree(args.against) as checkout:
            rows[args.against] = grade_in(checkout, args.data, attack)
    rows["this checkout"] = grade_in(REPO, args.data, attack)
    print(f"{'commit':<16}{'attack mean':>12}{'attack 1.0':>12}{'gold mean':>11}")
    for name, row in rows.items():
        print(
            f"{name:<16}{row['attack_mean']:>12.3f}"
            f"{str(row['attack_at_1']) + '/' + str(row['problems']):>12}{row['gold_mean']:>11.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
