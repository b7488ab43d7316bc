"""Masked-diffusion decoding: fill L masked positions after each left-padded prompt.

At each step s of the :class:`~dllm_rl.rollout.schedules.Schedule`: one forward on the canvas
(prompt + partly committed completion), then, inside the current block only, propose a token per
position (:func:`~dllm_rl.rollout.proposal.propose_tokens`), rank the still-masked positions
(:func:`~dllm_rl.rollout.proposal.confidence_scores`, EOS scores scaled by gamma(s) under EOS
early rejection), and commit the top ``counts[s]`` of every row. Every row commits the same number
of tokens per step, so the whole batch moves with one fixed-k top-k; there is no per-row loop.
Committed tokens are never revisited, so the :class:`Trajectory` (final ids + commit step) is an
exact record of the path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dllm_rl.devices import sampling_float_dtype
from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.rollout.config import SamplerConfig
from dllm_rl.rollout.proposal import (
    commit_logprobs,
    confidence_scores,
    exclude_mask_token,
    exclude_tokens,
    guided_logits,
    open_positions,
    propose_tokens,
    rank_last,
    reject_early_eos,
    select_commits,
)
from dllm_rl.rollout.trajectory import Trajectory


@dataclass
class _Canvas:
    """Mutable decoding state of one batch (internal)."""

    ids: torch.Tensor  # [B, P+L] prompt + completion, masks where not yet committed
    attention_mask: torch.Tensor | None  # [B, P+L], None when nothing is padded
    uncond_prompt: torch.Tensor | None  # [B, P] prompt with real tokens masked (CFG only)
    unmask_step: torch.Tensor  # [B, L] int16, -1 until committed
    logprobs: torch.Tensor | None  # [B, L] float32 (record_logprobs only)
    prompt_length: int


@torch.no_grad()
def generate(
    model: DiffusionLM,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None = None,
    config: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
) -> Trajectory:
    """Decode ``config.gen_length`` tokens after each prompt.

    Args:
        model: the diffusion LM (only ``.logits``, ``.ids`` and ``.device`` are used).
        prompt_ids: ``[B, P]`` left-padded prompt ids.
        prompt_mask: ``[B, P]`` 1 on real tokens, 0 on left padding (None: no padding).
        config: sampler settings (default :class:`SamplerConfig`).
        generator: the only source of randomness (Gumbel noise, random ranking), on the model's
            device; None uses torch's default generator.

    Returns:
        The :class:`Trajectory` (completion ids ``[B, L]``, commit steps, schedule, log-probs).

    Raises:
        ValueError: on malformed prompts, before any forward pass.
    """
    config = config or SamplerConfig()
    prompt_mask = _check_prompts(prompt_ids, prompt_mask)
    if generator is not None and generator.device.type != model.device.type:
        raise ValueError(
            f"the generator is on {generator.device} but the model on {model.device}; create it "
            f"with torch.Generator(device={str(model.device)!r})"
        )
    _check_context(model, prompt_ids.shape[1], config.gen_length)
    schedule = config.plan
    canvas = _new_canvas(model, prompt_ids.to(model.device), prompt_mask.to(model.device), config)
    eos_ids = torch.tensor(config.eos_rejection.resolve_ids(model.ids), device=model.device)
    gammas = config.eos_rejection.factors(schedule.num_steps)
    noise_dtype = sampling_float_dtype(model.device)
    stops = _StopIds(
        torch.tensor([model.ids.eos], device=model.device) if config.logits_eos_inf else None,
        torch.tensor(model.ids.stop_ids, device=model.device)
        if config.confidence_eos_eot_inf
        else None,
    )
    for step in range(schedule.num_steps):
        gamma = None if gammas is None else gammas[step]
        _decode_step(model, canvas, config, step, gamma, eos_ids, noise_dtype, generator, stops)
    p = canvas.prompt_length
    return Trajectory(
        prompt_ids=canvas.ids[:, :p].clone(),
        prompt_mask=prompt_mask.to(model.device),
        completion_ids=canvas.ids[:, p:].clone(),
        unmask_step=canvas.unmask_step,
        schedule=schedule,
        mask_token_id=model.mask_token_id,
        pad_token_id=model.ids.pad,
        step_logprobs=canvas.logprobs,
    )


@dataclass(frozen=True)
class _StopIds:
    """LLaDA's EOS options (internal): ids never proposed, ids ranked last; None when off."""

    never_proposed: torch.Tensor | None = None  # [1] EOS (logits_eos_inf)
    ranked_last: torch.Tensor | None = None  # [E] EOS and EOT (confidence_eos_eot_inf)


def context_limit(model: DiffusionLM) -> int | None:
    """The longest canvas the network was built for (None when its config does not say)."""
    config = getattr(model.model, "config", None)
    for name in ("max_sequence_length", "max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_context(model: DiffusionLM, prompt_length: int, gen_length: int) -> None:
    limit = context_limit(model)
    if limit is not None and prompt_length + gen_length > limit:
        raise ValueError(
            f"prompt ({prompt_length} tokens, left-padded batch width) + gen_length "
            f"({gen_length}) = {prompt_length + gen_length} tokens exceeds the model's context "
            f"of {limit}: shorten or left-truncate the prompts (data.max_prompt_length), or "
            "lower gen_length"
        )


def _check_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor | None) -> torch.Tensor:
    """Validate the prompt batch; return its padding mask (all ones when None was given)."""
    if prompt_ids.dim() != 2 or prompt_ids.shape[0] == 0:
        raise ValueError(
            f"prompt_ids must be [B, P] with B >= 1, got shape {tuple(prompt_ids.shape)}"
        )
    if prompt_ids.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(f"prompt_ids must hold integer token ids, got {prompt_ids.dtype}")
    if prompt_mask is None:
        return torch.ones_like(prompt_ids, dtype=torch.long)
    if prompt_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"prompt_mask shape {tuple(prompt_mask.shape)} != prompt_ids shape {tuple(prompt_ids.shape)}"
        )
    mask = prompt_mask.long()
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ValueError(
            "prompts must be left-padded: padding (mask 0) must come before real tokens"
        )
    return mask


def _new_canvas(
    model: DiffusionLM, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, config: SamplerConfig
) -> _Canvas:
    b, p = prompt_ids.shape
    length = config.gen_length
    masks = prompt_ids.new_full((b, length), model.mask_token_id)  # [B, L]
    ids = torch.cat([prompt_ids.long(), masks], dim=1)  # [B, P+L]
    padded = bool((prompt_mask == 0).any())
    attention = torch.cat([prompt_mask, torch.ones_like(masks)], dim=1) if padded else None
    uncond = None
    if config.cfg_scale > 0:
        uncond = torch.where(prompt_mask.bool(), model.mask_token_id, prompt_ids.long())  # [B, P]
    logprobs = torch.zeros(b, length, device=ids.device) if config.record_logprobs else None
    unmask_step = torch.full((b, length), -1, dtype=torch.int16, device=ids.device)
    return _Canvas(ids, attention, uncond, unmask_step, logprobs, p)


def _block_logits(
    model: DiffusionLM, canvas: _Canvas, lo: int, hi: int, cfg_scale: float
) -> torch.Tensor:
    """One forward (two batched for CFG) that scores canvas positions [lo, hi) only: ``[B, K, V]``.

    The whole canvas is attended to, but families with ``keeps_logits`` (LLaDA, Dream) run the
    LM head on the block alone: no ``[B, P+L, V]`` tensor is built.
    """
    block = slice(lo, hi)
    if canvas.uncond_prompt is None:
        return model.logits(canvas.ids, canvas.attention_mask, positions=block)  # [B, K, V]
    p = canvas.prompt_length
    uncond = torch.cat([canvas.uncond_prompt, canvas.ids[:, p:]], dim=1)  # [B, P+L]
    both_ids = torch.cat([canvas.ids, uncond], dim=0)  # [2B, P+L]
    mask = canvas.attention_mask
    both_mask = None if mask is None else torch.cat([mask, mask], dim=0)
    cond, unc = model.logits(both_ids, both_mask, positions=block).chunk(2, dim=0)  # [B, K, V]
    return guided_logits(cond, unc, cfg_scale)


def _decode_step(
    model: DiffusionLM,
    canvas: _Canvas,
    config: SamplerConfig,
    step: int,
    gamma: float | None,
    eos_ids: torch.Tensor,
    noise_dtype: torch.dtype,
    generator: torch.Generator | None,
    stops: _StopIds | None = None,
) -> None:
    """Commit ``counts[step]`` tokens per row inside the step's block (in place).

    Only the m still-masked positions of the block are scored: proposal, ranking and log-probs
    run on ``[B, m, V]``, not on the whole sequence.
    """
    schedule, p = config.plan, canvas.prompt_length
    lo, hi = schedule.step_bounds(step)
    k, m = schedule.counts[step], schedule.open_before(step)
    logits = _block_logits(model, canvas, p + lo, p + hi, config.cfg_scale)  # [B, K, V]
    block = canvas.ids[:, p + lo : p + hi]  # [B, K] view into the canvas
    if m < hi - lo:  # part of the block is committed: keep the m open positions only
        where = open_positions(block, model.mask_token_id, m)  # [B, m]
        logits = logits.gather(1, where.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    else:
        where = torch.arange(m, device=block.device).expand(block.shape[0], -1)  # [B, m]
    stops = stops or _StopIds()
    if stops.never_proposed is not None:
        logits = exclude_tokens(logits, stops.never_proposed)  # [B, m, V]
    # What scores and records (confidences, commit log-probs): [MASK] out of the softmax, or in
    # it under model.mask_in_softmax (the references' convention). [MASK] is never drawn.
    scored = logits.clone() if model.mask_in_softmax else None
    logits = exclude_mask_token(logits, model.mask_token_id)  # [B, m, V]
    scored = logits if scored is None else scored
    tokens = propose_tokens(logits, config.temperature, generator, noise_dtype)  # [B, m]
    if k == m:  # the rest of the block in one step: no ranking needed
        picks = torch.arange(k, device=block.device).expand(block.shape[0], -1)  # [B, k]
    else:
        scores = confidence_scores(scored, tokens, config.remasking, generator)  # [B, m]
        if gamma is not None:
            scores = reject_early_eos(scores, tokens, eos_ids, gamma)
        if stops.ranked_last is not None:
            scores = rank_last(scores, tokens, stops.ranked_last)
        picks = select_commits(scores, k)  # [B, k] indices into the m open positions
    chosen = tokens.gather(1, picks)  # [B, k]
    positions = where.gather(1, picks)  # [B, k] block positions
    block.scatter_(1, positions, chosen)
    canvas.unmask_step[:, lo:hi].scatter_(1, positions, step)
    if canvas.logprobs is not None:
        logps = commit_logprobs(scored, picks, chosen, config.temperature)  # [B, k]
        canvas.logprobs[:, lo:hi].scatter_(1, positions, logps)


def prompt_token_ids(
    model: DiffusionLM, prompts: Sequence[str], chat_template: bool = False
) -> list[list[int]]:
    """Token ids of each prompt string (one user turn of the chat template when asked)."""
    tok = model.tokenizer
    if tok is None:
        raise ValueError("this DiffusionLM has no tokenizer; tokenize the prompts yourself")
    _check_prompt_texts(prompts)
    if chat_template:
        rows = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True
            )
            for p in prompts
        ]
        rows = [r["input_ids"] if isinstance(r, dict) or hasattr(r, "keys") else r for r in rows]
    else:
        rows = tok(list(prompts), add_special_tokens=True)["input_ids"]
    return [list(r) for r in rows]


def left_pad_prompts(
    rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids [B, P]`` left-padded with ``pad_id`` and ``mask [B, P]`` long (1 = real token), P the
    longest row or ``width`` if larger."""
    width = max([len(r) for r in rows] + [width or 0])
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):  # tokenization only, not the decoding hot path
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def encode_prompts(
    model: DiffusionLM, prompts: Sequence[str], chat_template: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize prompt strings and left-pad them with the model's pad id.

    Args:
        model: a :class:`DiffusionLM` with a ``tokenizer``.
        prompts: B prompt strings.
        chat_template: wrap each prompt as one user turn with the tokenizer's chat template.

    Returns:
        ``prompt_ids [B, P]`` and ``prompt_mask [B, P]`` on the model's device.
    """
    rows = prompt_token_ids(model, prompts, chat_template)
    ids, mask = left_pad_prompts(rows, model.ids.pad)
    return ids.to(model.device), mask.to(model.device)


def _check_prompt_texts(prompts: Sequence[str]) -> None:
    if isinstance(prompts, (str, bytes)):
        raise TypeError(
            f"prompts must be a list of strings, got one string {prompts[:40]!r}: a string would "
            "be read as one prompt per character. Pass [prompt]."
        )
    if len(prompts) == 0:
        raise ValueError("prompts is empty: pass a list of at least one prompt string")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(
            f"prompts[{bad[0]}] is a {type(prompts[bad[0]]).__name__}, not a string; pass "
            "prompt strings (or token ids to generate())"
        )


def generate_text(
    model: DiffusionLM,
    prompts: Sequence[str],
    config: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    chat_template: bool = False,
) -> Trajectory:
    """:func:`generate` from prompt strings (tokenized and left-padded by :func:`encode_prompts`)."""
    ids, mask = encode_prompts(model, prompts, chat_template)
    return generate(model, ids, mask, config, generator)
