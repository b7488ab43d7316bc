"""The CPU demo: labels are scarce, the verifier is free.

    python -m dllm_rl.demo --out outputs/demo            # about 3.5 minutes on 2 CPU cores
    python -m dllm_rl.demo --quick --out /tmp/demo       # the shortened run of the test

A tiny LLaDA (built locally, random weights, ~0.36M parameters) learns 3-digit addition
(``123+456=`` -> ``0579``). No download, no GPU, and every budget is counted in steps, so the
numbers do not depend on the machine's speed.

1. **SFT** with the masked-diffusion loss on a fixed set of 300 labelled examples (the same
   for every ``--seed``) for 1000 steps: the model memorises its 300 answers and, depending on
   the seed, generalises partly (51% on seed 0) or hardly at all.
2. **RL** from those weights with the verifier as the only signal: fresh prompts without
   labels, G completions each at T = 3, the ``exact_answer`` reward checks each sum (the
   ``answer`` column of a prompt record is the program's ``a + b``, never a labelled example),
   CJ-GRPO's ``trajectory`` estimator through :mod:`dllm_rl.trainers.grpo`.
3. **Control**: the SFT run continued on the same 300 labels for as many optimizer steps
   (a resume of stage 1), so a gain is visibly the verifier's, not more training.

Held-out accuracy is greedy (T = 0) exact match on ~1000 prompts of the test split (disjoint
from every training prompt by construction), through the same rollout worker and the same
reward the RL trainer uses. The run directory gets ``summary.json``, ``table.md``,
``reward.png``, ``trajectories.html`` and the three stages' own run directories (``sft/``,
``rl/``, ``control/``, each with its ``metrics.jsonl``, config and final checkpoint).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dllm_rl.trainers.common import EvalHook

logger = logging.getLogger(__name__)

DIGITS = 3
ANSWER_DIGITS = DIGITS + 1  # answers are zero-padded to the widest sum: 0579
GEN_LENGTH = ANSWER_DIGITS + 1  # the answer and its EOS
TINY = {"d_model": 96, "n_layers": 3, "n_heads": 4, "mlp_hidden_size": 256}
"""The demo model: ~0.36M parameters. On two cores a model this small learns faster in wall-clock
time than larger ones (a 0.69M model, d_model 128 x 4 layers, costs 1.5-2x per step and needs
more SFT steps to reach its plateau)."""


@dataclass(frozen=True)
class Budget:
    """Every length of the demo, in steps and rows (never in seconds).

    Attributes:
        labelled: labelled examples of stage 1 (and of the control).
        label_seed: the seed that draws the labelled examples (``None``: the run's seed). Fixed
            by default, so that ``--seed`` varies the initial weights and the RL prompts and
            sampling, not which 300 sums are labelled: which examples are drawn decided whether
            and when stage 1 left memorisation more than the initial weights did.
        sft_steps: optimizer steps of stage 1 (batch ``sft_batch``).
        rl_steps: RL steps (``prompts_per_step`` fresh prompts x ``num_generations`` each, one
            optimizer step per RL step); the control gets as many optimizer steps.
        rl_reward: the RL reward, ``exact_answer`` (the held-out metric). ``digit_credit``
            (1.0 for the right sum, else up to 0.5 for right digits in the right places; then
            ``exact_answer`` is logged at weight 0) gives a group of 8 wrong answers a gradient,
            but measured from seed 0's checkpoint it ended RL at 67.9% instead of 80.8%.
        rl_temperature: the rollouts' temperature. The SFT'd policy is nearly deterministic
            (about 0.1 nats per token): at T = 1, 75-90% of the groups drew 8 equal rewards and
            gave no gradient, and RL stalled near 66% held-out from seed 0's 51%, whatever the
            learning rate or batch; T = 3 explores its confident mistakes (measured from the same
            checkpoint: 81% after 200 steps of 32 prompts). The trajectory estimator scores the
            transitions at the same temperature, and the held-out accuracy is greedy.
        heldout: held-out prompts of every accuracy figure.
        eval_every: RL and control steps between held-out evaluations.
        sft_eval_every: stage-1 steps between held-out evaluations.
    """

    labelled: int = 300
    label_seed: int | None = 0
    sft_steps: int = 1000
    rl_steps: int = 200
    heldout: int = 1000
    eval_every: int = 50
    sft_eval_every: int = 250
    sft_batch: int = 128
    sft_lr: float = 1e-3
    prompts_per_step: int = 32
    num_generations: int = 8
    rl_lr: float = 3e-4
    rl_temperature: float = 3.0
    rl_reward: str = "exact_answer"


FULL = Budget()
QUICK = Budget(
    sft_steps=300,
    rl_steps=25,
    heldout=300,
    eval_every=25,
    sft_eval_every=300,
    prompts_per_step=16,
    rl_lr=1e-4,
    rl_temperature=1.0,
)
"""The test's shortened run: the same code path, fewer steps and a smaller held-out set. Its
300-step SFT model is right on only ~16% of held-out prompts, so its rollouts stay at T = 1 (at
T = 3 they draw almost no right answer and RL first unlearns: 16% -> 1% in 25 steps)."""


RL_EXACT = "eval/rewards/exact_answer/mean"
"""The RL run's held-out exact match (its evaluation logs every reward; exact_answer at weight 0
when it trains on another)."""


# ----------------------------------------------------------------------------- data
@dataclass
class DemoData:
    """The three disjoint prompt sets.

    Attributes:
        labelled: ``labelled`` prompt/response rows (``datasets.Dataset``) for SFT.
        unlabelled: RL prompt records (``prompt``, ``answer`` = the verifier's ``a + b``), none
            of them among the labelled prompts.
        heldout: test-split prompt records (the test split never meets the train split).
    """

    labelled: Any
    unlabelled: list[dict[str, Any]]
    heldout: list[dict[str, Any]]


def load_data(seed: int, budget: Budget) -> DemoData:
    """Labelled, unlabelled and held-out addition prompts, all a function of ``seed``.

    The labelled set is the first ``labelled`` rows of the train split's stream drawn with
    ``budget.label_seed``; the RL prompts are the first ``rl_steps * prompts_per_step`` rows of
    the stream drawn with ``seed`` that are not labelled; the held-out prompts come from the
    test split (disjoint from the train split by construction).
    """
    from dllm_rl.data import load_task
    from dllm_rl.data.sft import load_sft

    opts = {"digits": DIGITS, "template": "compact"}
    label_seed = seed if budget.label_seed is None else budget.label_seed
    n_rl = budget.rl_steps * budget.prompts_per_step
    labelled = load_sft(
        "addition", "train", size=budget.labelled, zero_pad=True, seed=label_seed, **opts
    )
    seen = set(labelled["prompt"])
    train = load_task("addition", "train", size=budget.labelled + n_rl, seed=seed, **opts)
    unlabelled = [dict(r) for r in train if r["prompt"] not in seen][:n_rl]
    if len(unlabelled) < n_rl:
        raise RuntimeError(f"{len(unlabelled)} RL prompts left of {n_rl} after the labelled ones")
    heldout = [
        dict(r) for r in load_task("addition", "test", size=budget.heldout, seed=seed, **opts)
    ]
    return DemoData(labelled, unlabelled, heldout)


# ----------------------------------------------------------------------------- held-out accuracy
def greedy_sampler() -> Any:
    """T = 0, one token per decoding step over the answer's positions."""
    from dllm_rl.rollout.config import SamplerConfig

    return SamplerConfig(gen_length=GEN_LENGTH, steps=GEN_LENGTH, temperature=0.0)


def heldout_rollout(policy: Any, records: Sequence[dict[str, Any]], batch_size: int = 256):
    """Greedy completions of ``records`` scored by ``exact_answer`` (the RL trainer's worker).

    Returns:
        The :class:`~dllm_rl.rollout.worker.RolloutBatch`; ``rewards.total`` ``[N]`` is 1 where
        the sum is right.
    """
    from dllm_rl.rewards.registry import resolve_rewards
    from dllm_rl.rollout.worker import RolloutWorker
    from dllm_rl.run.build import generator

    worker = RolloutWorker(policy, resolve_rewards(["exact_answer"]), batch_size)
    return worker.rollout(records, 1, greedy_sampler(), lambda chunk: generator(chunk))


def heldout_exact(policy: Any, records: Sequence[dict[str, Any]]) -> float:
    """Greedy exact match on ``records`` (a fraction)."""
    return float(heldout_rollout(policy, records).rewards.total.mean())


# ----------------------------------------------------------------------------- the stages
def _model(path: str | None, seed: int) -> dict[str, Any]:
    if path is None:
        return {"name_or_path": "tiny", "tiny": {**TINY, "seed": seed}}
    return {"name_or_path": path}


def sft_config(root: Path, seed: int, budget: Budget, device: str, **run: Any) -> Any:
    """Stage 1 (and, with ``resume_from`` and more ``max_steps``, the control)."""
    from dllm_rl.run.cli import build_config
    from dllm_rl.trainers.sft_config import SFTConfig

    data = {
        "run": {
            "output_dir": str(root),
            "seed": seed,
            "max_steps": budget.sft_steps,
            "eval_steps": budget.sft_eval_every,
            "logging_steps": max(1, budget.sft_eval_every // 5),  # a line in logs meanwhile
            "device": device,
            "save_total_limit": 1,
            **run,
        },
        "model": _model(None, seed),
        "data": {"dataset": "addition", "eval_split": None},
        "sft": {"batch_size": budget.sft_batch, "per_device_batch_size": budget.sft_batch},
        "training": {"lr": budget.sft_lr, "max_grad_norm": 1.0},
    }
    return build_config(SFTConfig, data)


def rl_config(root: Path, seed: int, budget: Budget, device: str, model_path: str) -> Any:
    """Stage 2: CJ-GRPO from the SFT weights at ``model_path``."""
    from dllm_rl.run.cli import build_config
    from dllm_rl.trainers.grpo_config import GRPOConfig

    completions = budget.prompts_per_step * budget.num_generations
    data = {
        "run": {
            "output_dir": str(root),
            "seed": seed,
            "max_steps": budget.rl_steps,
            "eval_steps": budget.eval_every,
            "logging_steps": budget.eval_every,
            "device": device,
            "save_total_limit": 1,
        },
        "model": _model(model_path, seed),
        "rewards": [budget.rl_reward]
        + ([{"name": "exact_answer", "weight": 0.0}] if budget.rl_reward != "exact_answer" else []),
        "rollout": {
            "gen_length": GEN_LENGTH,
            "steps": GEN_LENGTH,  # one token per decoding step
            "schedule": "uniform",
            "temperature": budget.rl_temperature,
        },
        "grpo": {
            "prompts_per_step": budget.prompts_per_step,
            "num_generations": budget.num_generations,
            "per_device_batch_size": completions,
            "generation_batch_size": completions,
            "num_iterations": 1,
            "estimator": "trajectory",
            "scale_rewards": "group",
            "beta": 0.0,
        },
        "training": {"lr": budget.rl_lr, "max_grad_norm": 1.0},
        "eval": {"prompts": budget.heldout, "temperature": 0.0, "num_generations": 1},
    }
    return build_config(GRPOConfig, data)


def run_sft(root: Path, seed: int, budget: Budget, data: DemoData, device: str, **run: Any):
    """Train stage 1 (or the control) through :mod:`dllm_rl.trainers.sft`; returns the trainer.

    Every evaluation adds ``eval/exact`` (greedy held-out exact match) to the trainer's own
    held-out metrics.
    """
    from dllm_rl.trainers import sft

    config = sft_config(root, seed, budget, device, **run)
    trainer = sft.build_trainer(config, "demo", [], rows=data.labelled, eval_rows=[])
    stage = "control" if run.get("resume_from") else "sft"
    trainer.eval_hooks += [
        lambda step, _: {"eval/exact": heldout_exact(trainer.policy, data.heldout)},
        reporter(stage, "eval/exact"),
    ]
    trainer.train()
    return trainer


def run_rl(root: Path, seed: int, budget: Budget, data: DemoData, device: str, model_path: str):
    """Train stage 2 through :mod:`dllm_rl.trainers.grpo` on the unlabelled prompts; its
    periodic evaluation (:data:`RL_EXACT`) is greedy held-out exact match."""
    from dllm_rl.trainers import grpo

    config = rl_config(root, seed, budget, device, model_path)
    trainer = grpo.build_trainer(
        config, "demo", [], records=data.unlabelled, eval_records=data.heldout
    )
    trainer.eval_hooks.append(reporter("rl", RL_EXACT))
    trainer.train()
    return trainer


def reporter(stage: str, key: str) -> EvalHook:
    """An evaluation hook that prints the held-out exact match (one line per evaluation)."""

    def report(step: int, metrics: dict[str, Any]) -> None:
        if key in metrics:
            say(f"  {stage:>7} step {step:4d}: held-out exact match {100 * metrics[key]:5.1f}%")

    return report


def latest_checkpoint(run_root: Path) -> Path:
    from dllm_rl.run.checkpoint import resolve_checkpoint

    return resolve_checkpoint("latest", run_root / "checkpoints")


# ----------------------------------------------------------------------------- outputs
def eval_curve(
    run_root: Path, key: str, ends: tuple[float, float], steps: int, offset: int = 0
) -> tuple[list[int], list[float]]:
    """``(steps, percent)`` of an ``eval/...`` key in a run's ``metrics.jsonl``, counted from
    ``offset``, with the accuracies ``ends`` at step 0 and ``steps`` where the run logged none."""
    from dllm_rl.run.metrics import read_metrics

    rows = read_metrics(run_root / "metrics.jsonl")
    points = {r["step"] - offset: r[key] for r in rows if r.get(key) is not None}
    points = {k: v for k, v in points.items() if 0 <= k <= steps}
    points.setdefault(0, ends[0])
    points.setdefault(steps, ends[1])
    x = sorted(points)
    return x, [100 * float(points[k]) for k in x]


def train_curve(run_root: Path, key: str) -> tuple[list[int], list[float]]:
    from dllm_rl.plot import series
    from dllm_rl.run.metrics import read_metrics

    return series(read_metrics(run_root / "metrics.jsonl"), key)


def plot_demo(out: Path, summary: dict[str, Any]) -> Path:
    """``reward.png``: stage 1's held-out accuracy, then RL's training reward and held-out
    accuracy against the control's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dllm_rl.plot import ema

    budget = summary["budget"]
    sft_steps, rl_steps = budget["sft_steps"], budget["rl_steps"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    x, y = eval_curve(out / "sft", "eval/exact", (0.0, summary["sft_exact"]), sft_steps)
    a.plot(x, y, "o-", color="tab:gray")
    a.set(
        title=f"stage 1: SFT on {budget['labelled']} labelled examples",
        xlabel="optimizer step",
        ylabel="held-out exact match (%)",
        ylim=(0, 100),
    )
    a.grid(alpha=0.3)
    x, y = train_curve(out / "rl", "reward")
    b.plot(x, [100 * v for v in y], color="tab:blue", alpha=0.2)
    label = f"RL: training reward (T={budget['rl_temperature']:g})"
    b.plot(x, [100 * v for v in ema(y, 0.1)], color="tab:blue", label=label)
    for run, key, color, label in (
        ("rl", RL_EXACT, "tab:blue", "RL: held-out exact match"),
        ("control", "eval/exact", "tab:orange", "SFT control: held-out exact match"),
    ):
        ends = (summary["sft_exact"], summary[f"{run}_exact"])
        offset = sft_steps if run == "control" else 0
        x, y = eval_curve(out / run, key, ends, rl_steps, offset)
        b.plot(x, y, "o-", color=color, label=label, ms=4)
    b.axhline(
        100 * summary["sft_exact"], color="tab:gray", ls="--", lw=1, label="after stage 1 SFT"
    )
    b.set(
        title="stage 2: RL with the verifier vs more SFT",
        xlabel="optimizer step after SFT",
        ylabel="%",
        ylim=(0, 100),
    )
    b.grid(alpha=0.3)
    b.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=8, frameon=False)
    path = out / "reward.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_trajectories(out: Path, before: Any, after: Any, records: Sequence[dict]) -> Path:
    """``trajectories.html``: each held-out prompt decoded by the SFT model, then by the RL
    model (the viewer replays the commit order step by step)."""
    from dllm_rl.viz.viewer import samples_from_trajectory, write_viewer

    views = []
    for name, policy in (("before RL", before), ("after RL", after)):
        batch = heldout_rollout(policy, records)
        titles = [
            f"{name}: {r['prompt']}{c or '∅'}  "
            + ("right" if ok else f"wrong, the sum is {int(r['answer']):0{ANSWER_DIGITS}d}")
            for r, c, ok in zip(records, batch.completions, batch.rewards.total.tolist())
        ]
        views.append(
            samples_from_trajectory(
                batch.trajectory, policy.tokenizer, batch.prompts, batch.completions, titles
            )
        )
    samples = [s for pair in zip(*views) for s in pair]  # before, after, per prompt
    return write_viewer(samples, out / "trajectories.html", "dllm-rl demo: before and after RL")


def table(summary: dict[str, Any]) -> str:
    """The before/after table (Markdown)."""
    b = summary["budget"]
    n_rl = b["rl_steps"] * b["prompts_per_step"]
    rows = [
        ("SFT (stage 1)", f"{b['labelled']} labelled", b["sft_steps"], summary["sft_exact"]),
        (
            "+ SFT control (same labels)",
            f"{b['labelled']} labelled",
            f"+{b['rl_steps']}",
            summary["control_exact"],
        ),
        (
            "+ RL with the verifier",
            f"{n_rl} unlabelled",
            f"+{b['rl_steps']}",
            summary["rl_exact"],
        ),
    ]
    lines = [
        f"held-out exact match, {b['heldout']} unseen prompts, greedy (seed {summary['seed']})",
        "",
        "| stage | training prompts | optimizer steps | exact match |",
        "|---|---|---|---|",
    ]
    lines += [f"| {s} | {p} | {n} | {100 * v:.1f}% |" for s, p, n, v in rows]
    lines += ["", f"wall time {summary['wall_s']:.0f} s"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the demo
def run_demo(out: str | Path, seed: int = 0, budget: Budget = FULL, device: str = "cpu"):
    """Run the three stages and write the run directory; returns the summary.

    Returns:
        ``summary.json``'s content: ``sft_exact``, ``rl_exact``, ``control_exact`` (fractions of
        the held-out set), ``wall_s``, ``seed``, ``budget`` and the stage timings.
    """
    start, cpu = time.perf_counter(), time.process_time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(seed, budget)
    say(
        f"data: {len(data.labelled)} labelled, {len(data.unlabelled)} unlabelled RL prompts, "
        f"{len(data.heldout)} held-out"
    )

    t = time.perf_counter()
    sft = run_sft(out / "sft", seed, budget, data, device)
    sft_exact = heldout_exact(sft.policy, data.heldout)
    sft_s = time.perf_counter() - t
    say(
        f"stage 1 SFT: {budget.sft_steps} steps, held-out exact match {100 * sft_exact:.1f}% "
        f"({sft_s:.0f} s)"
    )
    checkpoint = latest_checkpoint(out / "sft")

    t = time.perf_counter()
    rl = run_rl(out / "rl", seed, budget, data, device, str(checkpoint))
    rl_exact = heldout_exact(rl.policy, data.heldout)
    rl_s = time.perf_counter() - t
    say(
        f"stage 2 RL: {budget.rl_steps} steps, held-out exact match {100 * rl_exact:.1f}% "
        f"({rl_s:.0f} s)"
    )

    t = time.perf_counter()
    control = run_sft(
        out / "control",
        seed,
        budget,
        data,
        device,
        max_steps=budget.sft_steps + budget.rl_steps,
        eval_steps=budget.eval_every,
        resume_from=str(checkpoint),
    )
    control_exact = heldout_exact(control.policy, data.heldout)
    control_s = time.perf_counter() - t
    say(
        f"control SFT: +{budget.rl_steps} steps, held-out exact match "
        f"{100 * control_exact:.1f}% ({control_s:.0f} s)"
    )

    before = _load(checkpoint / "model", device)
    write_trajectories(out, before, rl.policy, data.heldout[:8])
    summary = {
        "seed": seed,
        "sft_exact": sft_exact,
        "rl_exact": rl_exact,
        "control_exact": control_exact,
        "wall_s": time.perf_counter() - start,
        "stage_s": {"sft": sft_s, "rl": rl_s, "control": control_s},
        "parameters": sum(p.numel() for p in rl.policy.model.parameters()),
        "budget": asdict(budget),
    }
    plot_demo(out, summary)
    summary["wall_s"] = time.perf_counter() - start
    summary["cpu_s"] = time.process_time() - cpu
    text = table(summary)
    (out / "table.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    say("\n" + text + f"\nwritten to {out}: summary.json table.md reward.png trajectories.html")
    return summary


def _load(path: Path, device: str) -> Any:
    from dllm_rl.models.load import load_model

    return load_model(path, device=None if device == "auto" else device)


def _quiet_libraries() -> None:
    """No dataset-map or weight-loading bars between the demo's lines (the training bars stay)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dllm_rl.demo",
        description="SFT a tiny LLaDA on 300 labelled additions, then RL with the verifier on "
        "unlabelled prompts (and an SFT control); prints held-out exact match before and after.",
    )
    parser.add_argument("--out", default=None, help="run directory (default outputs/demo/<time>)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, model and runs")
    parser.add_argument("--quick", action="store_true", help="the test's shortened budget")
    parser.add_argument("--sft-steps", type=int, help="stage-1 optimizer steps")
    parser.add_argument("--rl-steps", type=int, help="RL steps (and control optimizer steps)")
    parser.add_argument("--heldout", type=int, help="held-out prompts")
    parser.add_argument("--device", default="cpu", help="cpu (default), auto, cuda, ...")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else FULL
    for name in ("sft_steps", "rl_steps", "heldout"):
        if getattr(args, name) is not None:
            budget = replace(budget, **{name: getattr(args, name)})
    out = args.out or f"outputs/demo/{time.strftime('%Y%m%d-%H%M%S')}"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from dllm_rl.trainers.common import RunStopped

    logging.getLogger("dllm_rl.run.metrics").setLevel(logging.INFO)  # progress lines in logs
    try:
        summary = run_demo(out, args.seed, budget, args.device)
    except (RunStopped, KeyboardInterrupt) as stopped:
        where = f" after step {stopped.step}" if isinstance(stopped, RunStopped) else ""
        print(
            f"interrupted{where}: the demo does not resume (each stage is minutes long); run the "
            f"same command again to start it afresh ({out} keeps what was written)",
            file=sys.stderr,
            flush=True,
        )
        return 130
    return 0 if math.isfinite(summary["rl_exact"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
