#!/usr/bin/env python3
"""Variance of each estimator's per-completion log-likelihood estimate, on one model.

    python scripts/bench_logp_variance.py [--draws 128] [--completions 8] [--length 32]

A random-weight tiny LLaDA (init std 0.3: varied predictions) scores fixed random completions of
a few prompts many times with fresh random masks each time; the table gives, per estimator, the
mean over completions of the estimate's mean and variance across draws:

* ``one_step``: d1's estimate (prompt tokens masked with p = 0.15, the completion fully masked),
  summed over the completion: its only randomness is the prompt mask;
* ``single mask``: one random mask at t ~ U[0.2, 0.8], the masked tokens' log-probs / t (the
  ELBO's estimate from one draw);
* ``coupled pair``: coupled-GRPO's complementary pair at the same levels (every token once);
* ``coupled + full``: the pair averaged with the fully masked pass (the reference code);
* ``spg elbo`` / ``spg eubo``: SPG's two bounds from 2 block-wise draws (blocks of L / 4).

Estimators of different quantities have different means; the variance is what the coupling
changes against one mask.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dllm_rl.models.tiny import build_tiny_llada  # noqa: E402
from dllm_rl.objectives.coupled import coupled_masks, coupled_token_logps  # noqa: E402
from dllm_rl.objectives.logps import draw_prompt_mask, masked_logps, one_step_logps  # noqa: E402
from dllm_rl.objectives.spg import block_masks, elbo_terms, eubo_terms  # noqa: E402
from dllm_rl.rollout import encode_prompts  # noqa: E402

PROMPTS = ["What is 2+3?", "Tell me a story.", "Hi", "List three primes."]


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=128)
    parser.add_argument("--completions", type=int, default=8, help="a multiple of 4")
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = build_tiny_llada(args.seed, init_std=0.3)
    ids, mask = encode_prompts(model, PROMPTS)
    reps = args.completions // len(PROMPTS)
    ids, mask = ids.repeat_interleave(reps, 0), mask.repeat_interleave(reps, 0)
    n, length = len(ids), args.length
    g = torch.Generator().manual_seed(args.seed)
    completion = torch.randint(4, 50, (n, length), generator=g)  # no special id ([MASK] is 2)
    clean = torch.zeros_like(mask, dtype=torch.bool)
    counted = torch.ones(n, length, dtype=torch.bool)

    def scored(masked_prompt, masked):
        return masked_logps(model, ids, mask, completion, masked_prompt, masked, 1.0)[0]

    def one_step():
        masked = draw_prompt_mask(mask, 0.15, g)
        return one_step_logps(model, ids, mask, completion, masked, 1.0)[0].sum(1)

    def single_mask():
        first, t = coupled_masks((n, length), 0.2, 0.8, g)
        return (scored(clean, first) / t[:, None]).sum(1)

    def coupled(full: bool):
        first, t = coupled_masks((n, length), 0.2, 0.8, g)
        whole = one_step_logps(model, ids, mask, completion, clean, 1.0)[0] if full else None
        pair = coupled_token_logps(scored(clean, first), scored(clean, ~first), first, t, whole)
        return pair.sum(1)

    def spg(bound: str):
        m = block_masks(counted, mask, max(1, length // 4), 2, 0.15, g)
        draws = torch.stack([scored(m.prompt[:, k], m.masked[:, k]) for k in range(2)], dim=1)
        if bound == "elbo":
            return elbo_terms(draws, m.scored, counted).sum(1)
        return eubo_terms(draws, m.scored, counted, 1.5).sum(1)

    estimators = {
        "one_step": one_step,
        "single mask": single_mask,
        "coupled pair": lambda: coupled(False),
        "coupled + full": lambda: coupled(True),
        "spg elbo": lambda: spg("elbo"),
        "spg eubo": lambda: spg("eubo"),
    }
    results = {}
    print(
        f"{n} completions of L = {length}, {args.draws} draws each (tiny LLaDA, seed {args.seed})"
    )
    print(f"{'estimator':<16}{'mean':>12}{'variance':>12}")
    with torch.no_grad():
        for name, estimate in estimators.items():
            values = torch.stack([estimate() for _ in range(args.draws)])  # [D, N]
            mean, var = float(values.mean(0).mean()), float(values.var(0).mean())
            results[name] = (mean, var)
            print(f"{name:<16}{mean:>12.2f}{var:>12.2f}")
    ratio = results["single mask"][1] / results["coupled pair"][1]
    print(f"single mask / coupled pair variance: {ratio:.2f}x")
    return results


if __name__ == "__main__":
    main()
