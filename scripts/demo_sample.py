#!/usr/bin/env python3
"""See the sampler work: decode with a tiny random-weight LLaDA on the CPU and show the order.

    python scripts/demo_sample.py                       # ASS + EOS early rejection, T = 1
    python scripts/demo_sample.py --schedule uniform --steps 16 --block-length 8
    python scripts/demo_sample.py --model /ckpt/llada-8b --device cuda --gen-length 128

Prints, for the first prompt, the canvas after every step (see the legend it prints: tokens
committed at that step in ⟦ ⟧, masks as ·, special tokens as ⟨EOS⟩, ids the tokenizer cannot
decode as ⟨id⟩), and with ``--out DIR`` saves a heat map of which position was committed at which
step over the batch (``DIR/commit_order.png``, titled with the schedule) and the HTML replay of
every prompt (``DIR/trajectories.html``). With random weights the text is noise; the decoding
order, the schedule and the trajectory record are real.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from dllm_rl.devices import pick_device  # noqa: E402
from dllm_rl.rollout import EosRejection, SamplerConfig, generate_text  # noqa: E402
from dllm_rl.viz.trajectory import MASK_GLYPH, commit_order_histogram, render_unmasking  # noqa: E402

HIGHLIGHT = ("⟦", "⟧")
LEGEND = (
    f"legend: ⟦x⟧ committed at this step;  {MASK_GLYPH} still masked;  ⟨EOS⟩ special token;  "
    "⟨123⟩ id the tokenizer cannot decode;  ⏎ newline"
)

PROMPTS = ["12+34=", "What is 7 times 6?", "Sort 3, 1, 2.", "Hello"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="tiny", help="'tiny' (random weights) or a checkpoint path")
    p.add_argument("--device", default="auto")
    p.add_argument("--gen-length", type=int, default=32)
    p.add_argument("--schedule", choices=("uniform", "ascending"), default="ascending")
    p.add_argument("--steps", type=int, default=None, help="uniform only (default: gen length)")
    p.add_argument("--block-length", type=int, default=None, help="uniform only")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--remasking", default="low_confidence")
    p.add_argument("--no-eos-rejection", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="folder for commit_order.png")
    return p.parse_args(argv)


def sampler_config(args: argparse.Namespace) -> SamplerConfig:
    """The settings, validated (bad combinations fail here, before any model loads)."""
    ascending = args.schedule == "ascending"
    return SamplerConfig(
        gen_length=args.gen_length,
        steps=args.steps,
        block_length=args.block_length,
        schedule=args.schedule,
        temperature=args.temperature,
        remasking=args.remasking,
        eos_rejection=EosRejection(
            enabled=not args.no_eos_rejection,
            gamma_schedule="power" if ascending else "linear",
        ),
    )


def token_label(token_id: int, tokenizer, special_names: dict[int, str]) -> str:
    """One token as the canvas shows it: text, ``⟨EOS⟩`` for specials, ``⟨id⟩`` if undecodable."""
    if token_id in special_names:
        return f"⟨{special_names[token_id]}⟩"
    if not 0 <= token_id < len(tokenizer):
        return f"⟨{token_id}⟩"
    text = tokenizer.decode([token_id])
    for mark in (*HIGHLIGHT, MASK_GLYPH):  # never confusable with the canvas markup
        text = text.replace(mark, f"⟨{ord(mark):x}⟩")
    return text or f"⟨{token_id}⟩"


def canvas_decoder(model):
    """``decode(ids)`` for :func:`render_unmasking`: one id -> its label, a prompt -> its text."""
    tok = model.tokenizer
    names = {model.ids.pad: "PAD", model.ids.mask: "MASK", model.ids.eos: "EOS"}  # LLaDA: pad = EOS
    if model.ids.eot is not None:
        names[model.ids.eot] = "EOT"
    for token_id in getattr(tok, "all_special_ids", []) or []:
        token = tok.convert_ids_to_tokens(token_id)
        names.setdefault(token_id, str(token).strip("<>|[]") or str(token_id))

    def decode(ids: list[int]) -> str:
        if len(ids) == 1:
            return token_label(int(ids[0]), tok, names)
        return tok.decode(ids, skip_special_tokens=True)

    return decode


def heatmap_title(config: SamplerConfig) -> str:
    plan = config.plan
    counts = list(plan.counts)
    shown = counts if len(counts) <= 10 else counts[:5] + ["..."] + counts[-2:]
    return (
        f"{config.schedule} schedule, {plan.num_steps} steps (tokens per step {shown}): "
        "commits per (step, position) over the batch"
    )


def save_heatmap(hist: torch.Tensor, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    image = ax.imshow(hist.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("completion position")
    ax.set_ylabel("decoding step")
    ax.set_title(title or "tokens committed per (step, position), over the batch", fontsize=9)
    fig.colorbar(image, ax=ax, label="count")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = sampler_config(args)
    device = pick_device(args.device)
    if args.model == "tiny":
        from dllm_rl.models.tiny import build_tiny_llada

        model = build_tiny_llada(seed=args.seed)
    else:
        from dllm_rl.models import load_model

        model = load_model(args.model, device=device)
    model.model.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        traj = generate_text(model, PROMPTS, config, generator)
    traj.validate()
    steps = config.plan.counts
    print(f"{config.schedule} schedule: {len(steps)} steps committing {list(steps)} tokens")
    print(LEGEND)
    print(render_unmasking(traj, canvas_decoder(model), highlight=HIGHLIGHT, max_steps=16))
    if args.out is not None:
        from dllm_rl.viz.viewer import samples_from_trajectory, write_viewer

        path = args.out / "commit_order.png"
        save_heatmap(commit_order_histogram(traj), path, heatmap_title(config))
        print(f"wrote {path}")
        views = samples_from_trajectory(traj, model.tokenizer, PROMPTS)
        page = write_viewer(
            views, args.out / "trajectories.html", f"demo_sample: {config.schedule}"
        )
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
