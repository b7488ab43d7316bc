"""Variance of VRPO's preference score under budget allocation and antithetic sampling
(LLaDA 1.5, Zhu et al. 2025, Table 2), measured on a tiny model.

    python scripts/bench_vrpo_variance.py --out /tmp/vrpo_variance.json

Setup: a tiny LLaDA is trained briefly with the masked-diffusion SFT loss on synthetic addition
answers ("12+34=" -> "46. The sum is 46."), so that its predictions are non-trivial; that is the
reference. The policy is the reference after a few VRPO steps on separate pairs whose rejected
answer carries a wrong sum. Then, for each configuration (n_t, n_yt, antithetic), the score

    s_hat = beta [(B_theta(y_w) - B_ref(y_w)) - (B_theta(y_l) - B_ref(y_l))]

of P evaluation pairs is estimated R times with fresh draws, and we report

- ``var_score``: Var over the R repeats of s_hat, averaged over the P pairs;
- ``var_loss``: the same for the per-pair loss -log sigmoid(s_hat);
- ``grad_cov_trace``: the trace of the covariance, over the R repeats, of the gradient of the
  mean loss over the P pairs with respect to one weight matrix (``--grad-param``);
- ``seconds``: wall time of the R repeats (forward, backward), averaged over seeds.

Each figure is averaged over ``--seeds`` independent sets of draws; the per-seed values and the
ratios the paper discusses are in the JSON too. Every generator is seeded from ``zlib.crc32`` of
a descriptive string (stable across runs and Python versions, unlike ``hash``).

What to expect: with n_yt = 1, Var(1,1) / Var(8,1) is 8 in expectation for any model; antithetic
sampling removes most of the variance at a fixed budget; whether (4,1) beats (1,4) depends on the
share of between-timestep variance, which is small on a tiny model (see the stub-model test of the
allocation ordering in ``tests/objectives/test_elbo.py``).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
import zlib
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dllm_rl.data.addition import generate_addition  # noqa: E402
from dllm_rl.data.preference import (  # noqa: E402
    PreferenceBatch,
    collate_preference,
    tokenize_preference,
)
from dllm_rl.models import build_tiny_llada  # noqa: E402
from dllm_rl.objectives.dpo import dpo_loss, preference_losses, preference_scores  # noqa: E402
from dllm_rl.objectives.elbo import draw_elbo_masks, reference_draws, score_elbo  # noqa: E402
from dllm_rl.objectives.mdlm import mdlm_sft_loss  # noqa: E402

CONFIGS = ((1, 1, True), (1, 4, True), (2, 2, True), (4, 1, True), (8, 1, True))
CONFIGS += ((4, 1, False), (1, 1, False))


def stable_seed(*parts: object) -> int:
    """A seed from a stable hash of ``parts`` (never Python's salted ``hash``)."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(stable_seed(*parts))


def addition_pairs(n: int, name: str) -> list[dict[str, str]]:
    """Pairs: the correct sum written twice vs a wrong sum written twice (about 24 tokens)."""
    rows = generate_addition(n, f"bench_vrpo/{name}", digits=2)
    pairs = []
    for i, row in enumerate(rows):
        a, b = row["a"], row["b"]
        right = a + b
        wrong = right + (1 + stable_seed(name, i) % 9) * (
            1 if stable_seed(name, i, "s") % 2 else -1
        )
        pairs.append(
            {
                "prompt": f"{a}+{b}=",
                "chosen": f"{right}. The sum is {right}.",
                "rejected": f"{abs(wrong)}. The sum is {abs(wrong)}.",
            }
        )
    return pairs


def batch_of(pairs: list[dict[str, str]], tokenizer) -> PreferenceBatch:
    examples, _ = tokenize_preference(pairs, tokenizer)
    return collate_preference(examples, tokenizer.pad_token_id)


def pair_scores(
    policy, reference, batch: PreferenceBatch, n_t: int, n_yt: int, antithetic: bool, g, beta
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Policy and reference ELBOs ``[P]`` of chosen and rejected, chosen and rejected in one
    ``[2P]`` batch; the reference under no_grad, on the policy's draws when antithetic."""
    prompt_ids = batch.prompt_ids.repeat(2, 1)  # [2P, Pl]
    prompt_mask = batch.prompt_mask.repeat(2, 1)
    response_ids = torch.cat([batch.chosen_ids, batch.rejected_ids])  # [2P, L]
    response_mask = torch.cat([batch.chosen_mask, batch.rejected_mask])  # [2P, L]
    draws = draw_elbo_masks(response_mask, n_t, n_yt, generator=g)
    ref_draws = reference_draws(draws, response_mask, antithetic=antithetic, generator=g)
    pol = score_elbo(policy, prompt_ids, prompt_mask, response_ids, response_mask, draws).elbo
    with torch.no_grad():
        ref = score_elbo(
            reference, prompt_ids, prompt_mask, response_ids, response_mask, ref_draws
        ).elbo
    p = len(batch)
    return pol[:p], pol[p:], ref[:p], ref[p:]  # [P] each


def train_reference(lm, pairs, tokenizer, steps: int, lr: float, batch_size: int) -> list[float]:
    """Masked-diffusion SFT on the chosen answers; returns the loss curve."""
    examples, _ = tokenize_preference(pairs, tokenizer)
    optimizer = torch.optim.AdamW(lm.model.parameters(), lr=lr, weight_decay=0.0)
    g = generator("bench_vrpo", "sft")
    losses = []
    lm.model.train()
    for _ in range(steps):
        idx = torch.randint(len(examples), (batch_size,), generator=g).tolist()
        batch = collate_preference([examples[i] for i in idx], tokenizer.pad_token_id)
        out = mdlm_sft_loss(
            lm,
            batch.prompt_ids,
            batch.prompt_mask,
            batch.chosen_ids,
            batch.chosen_mask,
            generator=g,
        )
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    lm.model.eval()
    return losses


def train_policy(policy, reference, batch, steps: int, lr: float, beta: float) -> list[dict]:
    """A few VRPO steps ((4, 1), antithetic) away from the reference; returns the metrics."""
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=lr, weight_decay=0.0)
    history = []
    for step in range(steps):
        g = generator("bench_vrpo", "dpo", step)
        pw, pl, rw, rl = pair_scores(policy, reference, batch, 4, 1, True, g, beta)
        out = dpo_loss(pw, pl, rw, rl, beta=beta)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        history.append(out.metrics())
    policy.model.eval()
    return history


def measure(policy, reference, batch, config, seed: int, repeats: int, beta: float, param):
    """Var of the score and loss over repeats (mean over pairs) and the gradient covariance."""
    n_t, n_yt, antithetic = config
    scores, losses, grads = [], [], []
    start = time.perf_counter()
    for r in range(repeats):
        g = generator("bench_vrpo", "measure", seed, n_t, n_yt, antithetic, r)
        pw, pl, rw, rl = pair_scores(policy, reference, batch, n_t, n_yt, antithetic, g, beta)
        s = preference_scores(pw, pl, rw, rl, beta)  # [P]
        loss = preference_losses(s, beta)  # [P]
        policy.model.zero_grad(set_to_none=True)
        loss.mean().backward()
        scores.append(s.detach())
        losses.append(loss.detach())
        grads.append(param.grad.detach().flatten().clone())
    seconds = time.perf_counter() - start
    scores, losses, grads = torch.stack(scores), torch.stack(losses), torch.stack(grads)  # [R, .]
    return {
        "var_score": float(scores.var(dim=0).mean()),
        "var_loss": float(losses.var(dim=0).mean()),
        "grad_cov_trace": float(grads.var(dim=0).sum()),
        "seconds": seconds,
        "mean_score": float(scores.mean()),
    }


def ratio_summary(records: list[dict], key: str) -> dict[str, dict]:
    by = {(r["n_t"], r["n_yt"], r["antithetic"]): r for r in records}
    pairs = {
        "(1,1,on)/(8,1,on)": ((1, 1, True), (8, 1, True)),
        "(1,4,on)/(4,1,on)": ((1, 4, True), (4, 1, True)),
        "(4,1,off)/(4,1,on)": ((4, 1, False), (4, 1, True)),
        "(1,1,off)/(1,1,on)": ((1, 1, False), (1, 1, True)),
        "(1,1,off)/(8,1,on)": ((1, 1, False), (8, 1, True)),
    }
    out = {}
    for name, (num, den) in pairs.items():
        per_seed = [a / b for a, b in zip(by[num][key + "_per_seed"], by[den][key + "_per_seed"])]
        mean = sum(per_seed) / len(per_seed)
        spread = (sum((x - mean) ** 2 for x in per_seed) / max(1, len(per_seed) - 1)) ** 0.5
        out[name] = {
            "ratio_of_means": by[num][key] / by[den][key],
            "per_seed": per_seed,
            "per_seed_std": spread,
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--pairs", type=int, default=64, help="P evaluation pairs")
    parser.add_argument("--repeats", type=int, default=8, help="R estimates per pair")
    parser.add_argument("--seeds", type=int, default=3, help="independent sets of draws")
    parser.add_argument("--beta", type=float, default=0.2)
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--sft-lr", type=float, default=3e-3)
    parser.add_argument("--dpo-steps", type=int, default=5)
    parser.add_argument("--dpo-lr", type=float, default=1e-3)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument(
        "--grad-param",
        default="model.transformer.blocks.1.attn_out.weight",
        help="the weight matrix whose gradient covariance is traced",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    reference = build_tiny_llada(
        seed=stable_seed("bench_vrpo", "model"), d_model=args.d_model, n_layers=args.n_layers
    )
    tokenizer = reference.tokenizer
    sft_curve = train_reference(
        reference, addition_pairs(512, "sft"), tokenizer, args.sft_steps, args.sft_lr, 32
    )
    reference.model.requires_grad_(False)
    policy = copy.deepcopy(reference)
    policy.model.requires_grad_(True)
    dpo_batch = batch_of(addition_pairs(64, "dpo"), tokenizer)
    dpo_history = train_policy(policy, reference, dpo_batch, args.dpo_steps, args.dpo_lr, args.beta)
    params = dict(policy.model.named_parameters())
    if args.grad_param not in params:
        raise SystemExit(f"--grad-param {args.grad_param!r} not found; choose from {list(params)}")
    param = params[args.grad_param]
    batch = batch_of(addition_pairs(args.pairs, "eval"), tokenizer)
    records = []
    for config in CONFIGS:
        per_seed = [
            measure(policy, reference, batch, config, seed, args.repeats, args.beta, param)
            for seed in range(args.seeds)
        ]
        record = {"n_t": config[0], "n_yt": config[1], "antithetic": config[2]}
        for key in ("var_score", "var_loss", "grad_cov_trace", "seconds"):
            values = [m[key] for m in per_seed]
            record[key] = sum(values) / len(values)
            record[key + "_per_seed"] = values
        records.append(record)
        print(
            f"(n_t={config[0]}, n_yt={config[1]}, antithetic={'on' if config[2] else 'off'}): "
            f"var_score {record['var_score']:.4g}  var_loss {record['var_loss']:.4g}  "
            f"grad_cov_trace {record['grad_cov_trace']:.4g}  {record['seconds']:.2f}s",
            flush=True,
        )
    response_lengths = torch.cat([batch.chosen_lengths, batch.rejected_lengths]).float()
    result = {
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "mean_response_length": float(response_lengths.mean()),
            "sft_loss_first_last": [sft_curve[0], sft_curve[-1]],
            "dpo_metrics_first_last": [dpo_history[0], dpo_history[-1]] if dpo_history else [],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "total_seconds": None,
        },
        "records": records,
        "ratios": {key: ratio_summary(records, key) for key in ("var_score", "grad_cov_trace")},
    }
    result["settings"]["total_seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result["ratios"]["var_score"].items():
        print(f"var_score {name}: {r['ratio_of_means']:.2f} (per seed {r['per_seed_std']:.2f} std)")
    return result


if __name__ == "__main__":
    main()
