#!/usr/bin/env python3
"""Sweep sampler settings on one eval recipe and print one table (accuracy and NFE per setting).

    python scripts/eval_matrix.py recipe=eval_tiny
    python scripts/eval_matrix.py recipe=eval_d1_gsm8k limit=200 output_dir=outputs/matrix
    python scripts/eval_matrix.py recipe=eval_tiny --setting "greedy_L=sampler.steps=8" \\
        --setting "t1=sampler.temperature=1.0,sampler.steps=4"

Every ``key=value`` argument applies to every setting (as on ``dllm_rl.eval``'s command line);
each ``--setting NAME=k=v,k=v`` adds a row of sampler overrides. Without ``--setting`` the default
sweep runs: d1's protocol (blocks of 32, L/2 steps), one token per step, CJ-GRPO's ascending
schedule without and with EOS early rejection, and LLaDA's two EOS options. The model loads once.
Writes ``OUTPUT_DIR/<setting>/{results.json,samples.jsonl}`` and ``OUTPUT_DIR/matrix.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from dllm_rl import eval as ev  # noqa: E402


def default_settings(gen_length: int) -> dict[str, list[str]]:
    """The default sweep for a completion length L (d1's block 32 shrinks to L when L < 32)."""
    block = min(32, gen_length)
    d1 = [
        "sampler.schedule=uniform",
        f"sampler.block_length={block}",
        f"sampler.steps={max(gen_length // 2, gen_length // block)}",
    ]
    eoser = ["sampler.eos_rejection.enabled=true", "sampler.eos_rejection.gamma_schedule=power"]
    return {
        "d1 (block 32, L/2 steps)": d1,
        "uniform, 1 token/step": [
            "sampler.schedule=uniform",
            "sampler.block_length=null",
            f"sampler.steps={gen_length}",
        ],
        "ascending": [
            "sampler.schedule=ascending",
            "sampler.steps=null",
            "sampler.block_length=null",
            "sampler.eos_rejection.enabled=false",
        ],
        "ascending + EOS rejection": [
            "sampler.schedule=ascending",
            "sampler.steps=null",
            "sampler.block_length=null",
            *eoser,
        ],
        "d1 + logits_eos_inf": [*d1, "sampler.logits_eos_inf=true"],
        "d1 + confidence_eos_eot_inf": [*d1, "sampler.confidence_eos_eot_inf=true"],
    }


def parse_setting(text: str) -> tuple[str, list[str]]:
    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise SystemExit(f"--setting {text!r}: expected NAME=key=value[,key=value]")
    return name, [kv.strip() for kv in rest.split(",") if kv.strip()]


def combine(base: list[str], extra: list[str]) -> list[str]:
    """``key=value`` lists merged by key, ``extra`` winning (a setting overrides the command)."""
    merged = {arg.partition("=")[0]: arg for arg in base}
    merged.update({arg.partition("=")[0]: arg for arg in extra})
    return list(merged.values())


def table(rows: list[dict]) -> str:
    head = ("setting", "accuracy", "NFE", "steps", "mean len", "samples/s", "tokens/s")
    body = [
        (
            r["setting"],
            f"{r['accuracy']:.4f}",
            str(r["nfe"]),
            str(r["num_steps"]),
            f"{r['mean_length']:.1f}",
            f"{r['samples_per_s']:.2f}",
            f"{r['tokens_per_s']:.0f}",
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("overrides", nargs="+", help="recipe=NAME and key=value for every setting")
    p.add_argument("--setting", action="append", default=[], help="NAME=key=value[,key=value]")
    args = p.parse_args(argv)
    base_name, base, _ = ev.resolve(args.overrides)
    settings = dict(map(parse_setting, args.setting)) or default_settings(base.sampler.gen_length)
    root = Path(
        base.output_dir or Path("outputs", "eval_matrix", base_name, time.strftime("%Y%m%d-%H%M%S"))
    )
    recipes = {}
    for name, extra in settings.items():  # validate every setting before loading the model
        folder = root / "".join(c if c.isalnum() else "_" for c in name).strip("_")
        _, recipe, _ = ev.resolve(combine(args.overrides, [*extra, f"output_dir={folder}"]))
        ev.check(recipe)
        recipes[name] = recipe
    from dllm_rl.run.build import make_accelerator

    loaded = ev.load_eval_model(base.model, make_accelerator(base.device).device)
    rows = []
    for name, recipe in recipes.items():
        results = ev.evaluate(recipe, base_name, loaded)
        if results is None:  # not the main process
            continue
        s = results.sampler
        rows.append(
            {
                "setting": name,
                "accuracy": results.accuracy,
                "nfe": s["nfe"],
                "num_steps": s["num_steps"],
                "mean_length": results.mean_length,
                "samples_per_s": results.samples_per_s,
                "tokens_per_s": results.tokens_per_s,
                "output_dir": results.output_dir,
            }
        )
    if rows:
        root.mkdir(parents=True, exist_ok=True)
        (root / "matrix.json").write_text(json.dumps(rows, indent=2) + "\n")
        print(
            f"{base_name}: {base.data.task}/{base.data.split}, {rows and results.samples} "
            f"samples, model {base.model.name_or_path}"
        )
        print(table(rows))
        print(f"-> {root / 'matrix.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
