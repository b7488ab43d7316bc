"""Log-probabilities of completion tokens under a masked diffusion LM, for policy-gradient losses.

Shapes: ``B`` rows (completions), ``P`` prompt length, ``L`` completion length, ``V`` vocabulary,
``k_s`` tokens committed at decoding step s.

Two estimators here (SPG's and coupled-GRPO's random masks score through :func:`masked_logps`):

* :func:`trajectory_step_logps` (CJ-GRPO, Yang et al. 2025, "Taming masked diffusion language
  models via consistency trajectory RL", sec. 3.2): for each recorded decoding step s, one forward
  on the state before s and the log-probs of exactly the tokens the rollout committed at s. The
  optimised transitions are the rollout's own, so the importance ratio against the recorded
  ``Trajectory.step_logprobs`` is 1 on-policy.
* :func:`one_step_logps` (d1's diffu-GRPO, Zhao et al. 2025, "d1: Scaling reasoning in diffusion
  large language models via reinforcement learning", sec. 3.1): the completion fully masked, the
  prompt partly masked (:func:`draw_prompt_mask`), one forward, the log-prob of every completion
  token as a mean-field estimate of its sequence log-likelihood.

Both use one convention, the sampler's: ``log_softmax(logits / T)`` in float32 with [MASK] given
zero probability (:func:`~dllm_rl.rollout.proposal.exclude_mask_token`), or kept in the softmax
under ``model.mask_in_softmax`` (the reference trainers' convention), and TRL's convention of
scoring at the rollout temperature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.objectives.elbo import masked_positions
from dllm_rl.rollout.trajectory import Trajectory

NEG_INF = float("-inf")


def token_logps(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float,
    mask_token_id: int | None,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log_softmax(logits / T)`` of ``tokens``, [MASK] excluded, as the sampler records it.

    The arithmetic is the sampler's (:func:`~dllm_rl.rollout.proposal.commit_logprobs` after
    :func:`~dllm_rl.rollout.proposal.exclude_mask_token`): float32 logits with the [MASK] column at
    -inf, divided by T, ``chosen - logsumexp``. So the same logits give the recorded
    ``Trajectory.step_logprobs`` bit for bit. The caller's logits are never modified (the float32
    copy is made out of place, so autograd flows back to them).

    Args:
        logits: ``[.., V]`` scores (any float dtype; differentiable).
        tokens: ``[..]`` token ids to score.
        temperature: T > 0, the rollout's temperature.
        mask_token_id: the [MASK] id, excluded from the vocabulary; ``None`` keeps it
            (``model.mask_in_softmax``).
        with_entropy: also return the entropy of ``softmax(logits / T)`` (without [MASK]).

    Returns:
        ``logps [..]`` float32 and ``entropy [..]`` float32 (or None).

    Raises:
        ValueError: T <= 0.
    """
    _check_temperature(temperature)
    excluded = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)  # [V]
    if mask_token_id is not None:
        excluded[mask_token_id] = True
    scaled = logits.float().masked_fill(excluded, NEG_INF) / temperature  # [.., V] a new tensor
    lse = scaled.logsumexp(dim=-1)  # [..]
    chosen = scaled.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)  # [..]
    logps = chosen - lse  # [..]
    if not with_entropy:
        return logps, None
    logp_all = (scaled - lse.unsqueeze(-1)).masked_fill(excluded, 0.0)  # [.., V]; 0 log 0 = 0
    entropy = -(logp_all.exp().masked_fill(excluded, 0.0) * logp_all).sum(dim=-1)  # [..]
    return logps, entropy


@dataclass
class StepLogps:
    """Log-probs of the tokens committed at one decoding step.

    Attributes:
        positions: ``[B, k_s]`` long completion positions committed at the step, ascending.
        logps: ``[B, k_s]`` float32 log-probs of the committed tokens (differentiable).
        entropy: ``[B, k_s]`` float32 entropy of the distribution at each position, or None.
    """

    positions: torch.Tensor
    logps: torch.Tensor
    entropy: torch.Tensor | None = None


def trajectory_step_logps(
    model: DiffusionLM,
    traj: Trajectory,
    step: int,
    temperature: float,
    with_entropy: bool = False,
) -> StepLogps:
    """CJ-GRPO log-probs of one recorded transition (Yang et al. 2025, eq. 9-11).

    One forward on ``traj.model_input(step)`` (the prompt, tokens committed before ``step``, masks
    elsewhere); the LM head runs only at the ``k_s`` positions committed at ``step`` (per-row
    positions, offset by the prompt length P), and the log-probs are those of the tokens the
    rollout committed there. Gradients flow to the model: the trainer calls this with grad
    enabled and backwards per step, so only one step's graph is alive at a time.

    The recorded ``step_logprobs`` of a rollout with classifier-free guidance (``cfg_scale > 0``)
    are of the guided distribution, which this single forward does not reproduce.

    Args:
        model: the policy (or the reference).
        traj: the rollout record.
        step: decoding step s in ``[0, S)``.
        temperature: the rollout's T > 0.
        with_entropy: also return the per-position entropy.

    Returns:
        :class:`StepLogps` with ``positions``, ``logps`` and ``entropy`` of shape ``[B, k_s]``.
    """
    _check_temperature(temperature)
    if not 0 <= step < traj.num_steps:
        raise IndexError(f"step {step} outside [0, {traj.num_steps})")
    positions = traj.committed_at(step)  # [B, k_s] completion positions
    ids, mask = traj.model_input(step)  # [B, P+L] each
    logits = model.logits(ids, _padding_or_none(mask), positions=positions + traj.prompt_length)
    tokens = traj.completion_ids.gather(1, positions)  # [B, k_s]
    mask_id = None if model.mask_in_softmax else traj.mask_token_id
    logps, entropy = token_logps(logits, tokens, temperature, mask_id, with_entropy)
    return StepLogps(positions, logps, entropy)  # [B, k_s] each


def draw_prompt_mask(
    prompt_mask: torch.Tensor, p_mask_prompt: float, generator: torch.Generator
) -> torch.Tensor:
    """d1's random prompt masking (Zhao et al. 2025, sec. 3.1): each real token with prob. p.

    Unlike d1 (which reseeds the global RNG from one of 4096 seeds and also masks left padding),
    the draw comes only from ``generator`` and padding is never masked. The caller draws one mask
    per inner iteration and reuses it for the old, reference and current policies.

    Args:
        prompt_mask: ``[B, P]`` 1 on real prompt tokens, 0 on left padding.
        p_mask_prompt: p in [0, 1].
        generator: the only source of randomness, on ``prompt_mask``'s device.

    Returns:
        ``[B, P]`` bool, True where the prompt token is replaced by [MASK].
    """
    if not 0.0 <= p_mask_prompt <= 1.0:
        raise ValueError(f"p_mask_prompt must lie in [0, 1], got {p_mask_prompt}")
    if generator.device.type != prompt_mask.device.type:
        raise ValueError(
            f"the generator is on {generator.device} but the prompts on {prompt_mask.device}; "
            f"create it with torch.Generator(device={str(prompt_mask.device)!r})"
        )
    u = torch.rand(prompt_mask.shape, generator=generator, device=prompt_mask.device)  # [B, P]
    return (u < p_mask_prompt) & prompt_mask.bool()  # [B, P]


def masked_input(
    model: DiffusionLM,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    masked_prompt: torch.Tensor,
    masked_completion: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[B, P+L]`` ids with [MASK] at the masked prompt and completion positions, and the
    padding mask (None when nothing is padded, as the sampler passes it)."""
    mask_id = model.mask_token_id
    prompt = torch.where(masked_prompt.bool(), mask_id, prompt_ids.long())  # [B, P]
    completion = torch.where(masked_completion.bool(), mask_id, completion_ids.long())  # [B, L]
    ones = torch.ones_like(completion_ids, dtype=prompt_mask.dtype)  # [B, L]
    attention = torch.cat([prompt_mask, ones], dim=1)  # [B, P+L]
    return torch.cat([prompt, completion], dim=1), _padding_or_none(attention)


def one_step_logps(
    model: DiffusionLM,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    masked_prompt: torch.Tensor,
    temperature: float,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """d1's one-step estimate of per-token log-probs (diffu-GRPO, Zhao et al. 2025, eq. 2-3).

    Input: the prompt with ``masked_prompt`` positions replaced by [MASK], then L masks. One
    forward, LM head on the completion window only, log-prob of every completion token. d1 itself
    scores ``log_softmax(logits)`` (no temperature, [MASK] kept in the vocabulary) and attends to
    padding; we follow the sampler and TRL (``logits / T``, [MASK] excluded, padding masked out),
    so that a policy and its rollout agree on what a probability is.

    Args:
        model: the policy (or the reference).
        prompt_ids: ``[B, P]`` left-padded prompt ids.
        prompt_mask: ``[B, P]`` 1 on real tokens, 0 on padding.
        completion_ids: ``[B, L]`` completion tokens to score.
        masked_prompt: ``[B, P]`` bool from :func:`draw_prompt_mask`.
        temperature: the rollout's T > 0.
        with_entropy: also return the per-position entropy.

    Returns:
        ``logps [B, L]`` float32 (differentiable) and ``entropy [B, L]`` float32 or None.
    """
    _check_temperature(temperature)
    b, p = prompt_ids.shape
    length = completion_ids.shape[1]
    if prompt_mask.shape != (b, p) or masked_prompt.shape != (b, p) or completion_ids.shape[0] != b:
        raise ValueError(
            f"shapes disagree: prompt_ids {tuple(prompt_ids.shape)}, prompt_mask "
            f"{tuple(prompt_mask.shape)}, masked_prompt {tuple(masked_prompt.shape)}, "
            f"completion_ids {tuple(completion_ids.shape)}"
        )
    everything = torch.ones_like(completion_ids, dtype=torch.bool)  # [B, L]
    ids, attention = masked_input(
        model, prompt_ids, prompt_mask, completion_ids, masked_prompt, everything
    )
    logits = model.logits(ids, attention, positions=slice(p, p + length))
    excluded = None if model.mask_in_softmax else model.mask_token_id
    return token_logps(logits, completion_ids, temperature, excluded, with_entropy)  # [B, L]


def masked_logps(
    model: DiffusionLM,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    masked_prompt: torch.Tensor,
    masked_completion: torch.Tensor,
    temperature: float,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the completion tokens under a partly masked input (one forward).

    The general form of :func:`one_step_logps` (which masks the whole completion), for the
    estimators that score random masks (SPG's block-wise draws, coupled-GRPO's pairs): the
    prompt's ``masked_prompt`` and the completion's ``masked_completion`` positions hold [MASK],
    the LM head runs on the masked completion positions only, and each is scored with the
    sampler's convention at temperature T.

    Args:
        model: the policy (or the reference).
        prompt_ids: ``[B, P]`` left-padded prompt ids.
        prompt_mask: ``[B, P]`` 1 on real tokens, 0 on padding.
        completion_ids: ``[B, L]`` completion tokens.
        masked_prompt: ``[B, P]`` bool.
        masked_completion: ``[B, L]`` bool, the completion positions masked and scored.
        temperature: the rollout's T > 0.
        with_entropy: also return the per-position entropy.

    Returns:
        ``logps [B, L]`` float32 (differentiable), 0 where not masked, and ``entropy [B, L]``
        (0 where not masked) or None.
    """
    _check_temperature(temperature)
    p = prompt_ids.shape[1]
    ids, attention = masked_input(
        model, prompt_ids, prompt_mask, completion_ids, masked_prompt, masked_completion
    )
    positions, valid = masked_positions(masked_completion.bool())  # [B, K] each
    logits = model.logits(ids, attention, positions=positions + p)  # [B, K, V]
    tokens = completion_ids.gather(1, positions)  # [B, K]
    excluded = None if model.mask_in_softmax else model.mask_token_id
    logps, entropy = token_logps(logits, tokens, temperature, excluded, with_entropy)  # [B, K]

    def spread(values: torch.Tensor) -> torch.Tensor:  # [B, K] -> [B, L]; dummies are distinct
        zeros = torch.zeros(completion_ids.shape, dtype=values.dtype, device=values.device)
        return zeros.scatter(1, positions, values.masked_fill(~valid, 0.0))

    return spread(logps), (None if entropy is None else spread(entropy))


# ----------------------------------------------------------------------------- whole tables
# The no-grad passes of an RL step (old and reference log-probs), in micro-batches of ``size``.


@torch.no_grad()
def trajectory_logps_table(
    model: DiffusionLM, traj: Trajectory, temperature: float, size: int
) -> tuple[torch.Tensor, int]:
    """``[N, L]`` log-prob of every token at its commit step (S forwards per micro-batch)."""
    table = torch.zeros(traj.completion_ids.shape, dtype=torch.float32, device=traj.device)
    forwards = 0
    for lo in range(0, len(traj), size):
        part = traj[lo : lo + size]
        for s in range(part.num_steps):
            out = trajectory_step_logps(model, part, s, temperature)
            table[lo : lo + size].scatter_(1, out.positions, out.logps.float())
            forwards += 1
    return table, forwards


@torch.no_grad()
def one_step_logps_table(
    model: DiffusionLM,
    traj: Trajectory,
    masks: Sequence[torch.Tensor],
    temperature: float,
    size: int,
) -> tuple[torch.Tensor, int]:
    """``[mu, N, L]`` one-step log-probs under each iteration's prompt mask ``[N, P]`` (and the
    forwards spent), in micro-batches of ``size``."""
    out = []
    forwards = 0
    for masked in masks:
        rows = []
        for lo in range(0, len(traj), size):
            part = traj[lo : lo + size]
            logps, _ = one_step_logps(
                model,
                part.prompt_ids,
                part.prompt_mask,
                part.completion_ids,
                masked[lo : lo + size],
                temperature,
            )
            rows.append(logps.float())
            forwards += 1
        out.append(torch.cat(rows))
    return torch.stack(out), forwards


def _padding_or_none(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """None when nothing is padded, as the sampler passes it (same attention path, same bits)."""
    return None if bool(attention_mask.all()) else attention_mask


def _check_temperature(temperature: float) -> None:
    if not temperature > 0.0:  # also catches NaN
        raise ValueError(
            f"training log-probs need temperature > 0, got {temperature}: at T = 0 the rollout is "
            "greedy, every completion of a group is the same, advantages are all 0 and nothing "
            "is learned. Sample the training rollouts at T > 0 (e.g. 1.0) and score at that T."
        )
