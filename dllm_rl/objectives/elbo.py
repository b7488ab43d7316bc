"""ELBO estimates of log pi(y | x) for a masked diffusion LM (LLaDA 1.5, Zhu et al. 2025, App. A).

A masked diffusion LM has no exact likelihood; preference optimisation scores each response with
an unbiased Monte-Carlo estimate of its evidence lower bound. Two forms:

* ``"L/l"`` (Eq. 14-15, the default): draw l ~ U{1..L}, mask exactly l of the L response tokens
  uniformly without replacement, and take (L / l) * sum over the masked i of
  log p(y_i | x, y masked). Its only randomness beyond l is *which* tokens are masked.
* ``"1/t"`` (Eq. 12-13): draw t ~ U(0, 1], p = (1 - eps) t + eps, mask every response token
  independently with probability p, and take (1 / p) * sum over the masked i. The number of
  masked tokens is itself random (Binomial(L, p)), which makes this form noisier and heavy-tailed
  for small t.

L is the real response length: padding excluded, the response's own EOS included. The prompt is
never masked. A budget of n = n_t x n_yt draws is n_t values of l (or t), each with n_yt masks;
Proposition 1 of the paper shows n_t = n, n_yt = 1 minimises the variance for a fixed n.

The work is split in two so that the same draws can serve several models (antithetic sampling,
Proposition 2: the policy and the reference score the very same masks, so most of the noise
cancels in their difference), and can be stored with precomputed reference values:

1. :func:`draw_elbo_masks` draws from an explicit ``torch.Generator`` into an :class:`ElboDraws`
   record (masks ``[B, M, L]``, weights ``[B, M]``), with M = n_t * n_yt.
2. :func:`score_elbo` runs the M masked copies of each response through the model in batched
   forwards (``[B*M, P+L]`` rows, chunked to a token budget), with the LM head only at the masked
   positions, and returns the per-draw values (:class:`ElboEstimate`).

Log-probabilities are a softmax over the vocabulary without [MASK], at temperature 1, exactly
as the sampler proposes tokens (:func:`dllm_rl.rollout.proposal.exclude_mask_token`).

    draws = draw_elbo_masks(response_mask, n_t=8, n_yt=1, generator=g)
    policy = score_elbo(lm, prompt_ids, prompt_mask, response_ids, response_mask, draws)
    with torch.no_grad():
        ref = score_elbo(ref_lm, prompt_ids, prompt_mask, response_ids, response_mask, draws)
    policy.elbo - ref.elbo                                    # [B], the antithetic log-ratio
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm_rl.models.adapter import DiffusionLM
from dllm_rl.rollout.proposal import exclude_mask_token

ELBO_FORMS = ("L/l", "1/t")
DEFAULT_EPS = 1e-3


@dataclass(frozen=True)
class ElboDraws:
    """The Monte-Carlo draws of the ELBO of B responses: which response tokens are masked.

    Draw m of a response is timestep ``m // n_yt`` (its l or t) and mask ``m % n_yt`` of it.

    Attributes:
        masks: ``[B, M, L]`` bool, True where response token j is masked in draw m; never True
            on padding.
        weights: ``[B, M]`` float32, the draw's weight: L_b / l (``"L/l"``) or 1 / p (``"1/t"``).
        n_t: number of timesteps (values of l or t) per response.
        n_yt: masks per timestep; M = n_t * n_yt.
        form: ``"L/l"`` or ``"1/t"``.
    """

    masks: torch.Tensor
    weights: torch.Tensor
    n_t: int
    n_yt: int
    form: str = "L/l"

    def __post_init__(self) -> None:
        b, m = self.weights.shape
        if self.masks.dim() != 3 or tuple(self.masks.shape[:2]) != (b, m):
            raise ValueError(
                f"masks must be [B, M, L] with [B, M] = weights' {(b, m)}, got "
                f"{tuple(self.masks.shape)}"
            )
        if m != self.n_t * self.n_yt:
            raise ValueError(f"M = {m} draws but n_t * n_yt = {self.n_t} * {self.n_yt}")

    @property
    def num_draws(self) -> int:
        """M = n_t * n_yt."""
        return self.weights.shape[1]

    def select(self, index: torch.Tensor | slice | list[int]) -> ElboDraws:
        """The draws of a subset of the responses (rows of the batch), e.g. to store per example."""
        return ElboDraws(self.masks[index], self.weights[index], self.n_t, self.n_yt, self.form)

    def to(self, device: torch.device | str) -> ElboDraws:
        return ElboDraws(
            self.masks.to(device), self.weights.to(device), self.n_t, self.n_yt, self.form
        )

    @staticmethod
    def cat(parts: list[ElboDraws]) -> ElboDraws:
        """Concatenate draws of several batches along B (all with the same M and L)."""
        first = parts[0]
        return ElboDraws(
            torch.cat([p.masks for p in parts]),
            torch.cat([p.weights for p in parts]),
            first.n_t,
            first.n_yt,
            first.form,
        )


@dataclass(frozen=True)
class ElboEstimate:
    """The ELBO estimates of B responses.

    Attributes:
        per_draw: ``[B, M]`` float32, draw m's value w_m * sum over its masked i of
            log p(y_i | x, y masked); unbiased for the ELBO on its own.
    """

    per_draw: torch.Tensor

    @property
    def elbo(self) -> torch.Tensor:
        """``[B]``: the mean of the M draws (the estimate a loss uses)."""
        return self.per_draw.mean(dim=-1)

    @property
    def std(self) -> torch.Tensor:
        """``[B]``: the standard deviation of the M draws (0 when M = 1); the ``elbo/std`` metric."""
        if self.per_draw.shape[-1] < 2:
            return torch.zeros_like(self.per_draw[..., 0])
        return self.per_draw.detach().std(dim=-1)


def response_lengths(response_mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` long: L_b, the real tokens of each response (its EOS included, padding not)."""
    return response_mask.bool().sum(dim=-1)


def stratified_levels(k: torch.Tensor, lengths: torch.Tensor, n: int) -> torch.Tensor:
    """Stratified numbers of masked tokens: l_j = k + floor(j L / n), wrapped into [1, L].

    LLaDA's likelihood evaluation spreads the n draws of l evenly over [1, L] from one random
    offset k. ``floor`` (rather than rounding) keeps every l_j exactly uniform on {1..L} when k is,
    so each draw stays unbiased; with n = L the l_j are a permutation of 1..L.

    Args:
        k: ``[B]`` long offsets in [1, L_b].
        lengths: ``[B]`` long L_b >= 1.
        n: number of draws.

    Returns:
        ``[B, n]`` long l_j in [1, L_b].
    """
    j = torch.arange(n, device=lengths.device)  # [n]
    step = torch.div(j[None, :] * lengths[:, None], n, rounding_mode="floor")  # [B, n]
    return (k[:, None] - 1 + step) % lengths[:, None] + 1  # [B, n]


def draw_elbo_masks(
    response_mask: torch.Tensor,
    n_t: int = 8,
    n_yt: int = 1,
    *,
    form: str = "L/l",
    stratified: bool = False,
    eps: float = DEFAULT_EPS,
    generator: torch.Generator | None = None,
) -> ElboDraws:
    """Draw the n_t x n_yt masks of each response (LLaDA 1.5, Eq. 12-15).

    Args:
        response_mask: ``[B, L]`` bool/int, True on real response tokens (the EOS included).
        n_t: values of l (or t) per response.
        n_yt: masks per value; M = n_t * n_yt.
        form: ``"L/l"`` (exactly l masked, weight L / l) or ``"1/t"`` (Bernoulli(p), weight 1/p).
        stratified: spread the n_t values evenly from one random offset
            (:func:`stratified_levels` for l; t_j = frac(u + j / n_t) for t) instead of i.i.d.
        eps: the 1/t form's floor on the masking probability, p = (1 - eps) t + eps.
        generator: the source of every random number (drawn on its device, then moved to
            ``response_mask``'s device); pass the same seed to reproduce the draws.

    Returns:
        :class:`ElboDraws` with masks ``[B, M, L]`` and weights ``[B, M]``.

    Raises:
        ValueError: an unknown form, n_t or n_yt < 1, or a response with no real token.
    """
    if form not in ELBO_FORMS:
        raise ValueError(f"form must be one of {ELBO_FORMS}, got {form!r}")
    if n_t < 1 or n_yt < 1:
        raise ValueError(f"n_t and n_yt must be >= 1, got n_t={n_t}, n_yt={n_yt}")
    real = response_mask.bool()  # [B, L]
    lengths = response_lengths(real)  # [B]
    if bool((lengths == 0).any()):
        raise ValueError("every response needs at least one real token (its EOS counts)")
    b, length = real.shape
    m = n_t * n_yt
    gen_device = generator.device if generator is not None else torch.device("cpu")

    def rand(*shape: int) -> torch.Tensor:
        u = torch.rand(shape, generator=generator, device=gen_device, dtype=torch.float64)
        return u.to(real.device)

    if form == "L/l":
        lengths_f = lengths.double()  # [B]
        if stratified:
            k = (rand(b) * lengths_f).long().clamp_(max=lengths - 1) + 1  # [B] in [1, L_b]
            levels = stratified_levels(k, lengths, n_t)  # [B, n_t]
        else:
            levels = (rand(b, n_t) * lengths_f[:, None]).long()  # [B, n_t]
            levels = torch.minimum(levels, lengths[:, None] - 1) + 1  # [B, n_t] in [1, L_b]
        levels = levels.repeat_interleave(n_yt, dim=1)  # [B, M]
        # Exactly l of the real tokens, uniformly without replacement: the l smallest of i.i.d.
        # uniform keys; padding gets keys above every real one, so it is never chosen.
        keys = rand(b, m, length).masked_fill_(~real[:, None, :], 2.0)  # [B, M, L]
        ranks = keys.argsort(dim=-1).argsort(dim=-1)  # [B, M, L]
        masks = ranks < levels[..., None]  # [B, M, L]
        weights = lengths_f[:, None] / levels.double()  # [B, M]
    else:
        u = rand(b, 1) + torch.arange(n_t, device=real.device) / n_t if stratified else rand(b, n_t)
        t = 1.0 - torch.frac(u)  # [B, n_t] in (0, 1]
        p = ((1.0 - eps) * t + eps).repeat_interleave(n_yt, dim=1)  # [B, M]
        masks = (rand(b, m, length) < p[..., None]) & real[:, None, :]  # [B, M, L]
        weights = 1.0 / p  # [B, M]
    return ElboDraws(masks, weights.float(), n_t, n_yt, form)


def masked_positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row positions of the True entries, padded to the longest row.

    Args:
        mask: ``[R, N]`` bool.

    Returns:
        ``positions [R, K]`` long, each row's True positions in ascending order followed by some
        of its False positions (valid indices, used as dummies), with K = the largest row count
        (at least 1); and ``valid [R, K]`` bool, False on the dummies.
    """
    counts = mask.sum(dim=-1)  # [R]
    k = max(int(counts.max()) if mask.numel() else 0, 1)
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)  # [R, N] True first
    positions = order[:, :k]  # [R, K]
    valid = torch.arange(k, device=mask.device)[None, :] < counts[:, None]  # [R, K]
    return positions, valid


def masked_token_logps(
    model: DiffusionLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the clean tokens at the masked positions of each row, head on those only.

    Args:
        model: the diffusion LM.
        input_ids: ``[R, N]`` clean token ids.
        attention_mask: ``[R, N]`` padding mask (1 = real), or None.
        mask: ``[R, N]`` bool, the positions to mask and score.

    Returns:
        ``logps [R, K]`` float32, log p(clean token | masked row), softmax without [MASK]
        (with it under ``model.mask_in_softmax``) at temperature 1, 0 at dummy entries; and
        ``valid [R, K]`` bool (see :func:`masked_positions`).
    """
    positions, valid = masked_positions(mask)  # [R, K], [R, K]
    noisy = input_ids.masked_fill(mask, model.mask_token_id)  # [R, N]
    logits = model.logits(noisy, attention_mask, positions=positions).float()  # [R, K, V]
    if not model.mask_in_softmax:
        logits = exclude_mask_token(logits, model.mask_token_id)  # [R, K, V]
    targets = input_ids.gather(1, positions)  # [R, K]
    picked = logits.gather(-1, targets[..., None]).squeeze(-1)  # [R, K]
    logps = picked - torch.logsumexp(logits, dim=-1)  # [R, K]
    return logps.masked_fill(~valid, 0.0), valid


def score_elbo(
    model: DiffusionLM,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    draws: ElboDraws,
    *,
    max_tokens_per_forward: int | None = None,
) -> ElboEstimate:
    """Score the draws of each response: w_m * sum over masked i of log p(y_i | x, y masked).

    The M masked copies of the B responses form ``[B*M, P+L]`` rows scored in as few forwards as
    ``max_tokens_per_forward`` allows; the LM head runs on the masked positions only (padded to
    the chunk's largest count with dummies that are masked out). Gradients flow when the model's
    parameters require them (the policy); call under ``torch.no_grad()`` for the reference.

    Args:
        model: the diffusion LM.
        prompt_ids: ``[B, P]`` left-padded prompt ids.
        prompt_mask: ``[B, P]`` 1 on real prompt tokens, or None when there is no padding.
        response_ids: ``[B, L]`` right-padded response ids.
        response_mask: ``[B, L]`` 1 on real response tokens (EOS included).
        draws: the masks and weights (:func:`draw_elbo_masks`), shared across models for
            antithetic sampling.
        max_tokens_per_forward: bound on rows * (P + L) per forward (activations grow with it,
            the head's logits with rows * K * V); None scores all B * M rows at once.

    Returns:
        :class:`ElboEstimate` with ``per_draw [B, M]``.
    """
    b, p = prompt_ids.shape
    length = response_ids.shape[1]
    if tuple(draws.masks.shape) != (b, draws.num_draws, length):
        raise ValueError(
            f"draws.masks is {tuple(draws.masks.shape)}, expected [B={b}, M, L={length}]"
        )
    m, n = draws.num_draws, p + length
    ids = torch.cat([prompt_ids, response_ids], dim=1)  # [B, P+L]
    if prompt_mask is None:
        prompt_mask = torch.ones_like(prompt_ids, dtype=torch.bool)
    attn = torch.cat([prompt_mask.bool(), response_mask.bool()], dim=1)  # [B, P+L]
    rows = b * m
    ids = ids[:, None, :].expand(b, m, n).reshape(rows, n)  # [B*M, P+L]
    attn = attn[:, None, :].expand(b, m, n).reshape(rows, n)  # [B*M, P+L]
    no_prompt_mask = torch.zeros(rows, p, dtype=torch.bool, device=ids.device)  # [B*M, P]
    mask = torch.cat([no_prompt_mask, draws.masks.reshape(rows, length)], dim=1)  # [B*M, P+L]
    per_row = rows if max_tokens_per_forward is None else max(1, max_tokens_per_forward // n)
    sums = []
    for start in range(0, rows, per_row):
        chunk = slice(start, min(start + per_row, rows))
        if not bool(mask[chunk].any()):  # the 1/t form can mask nothing: the sum is 0
            sums.append(torch.zeros(chunk.stop - chunk.start, device=ids.device))
            continue
        attn_chunk = None if bool(attn[chunk].all()) else attn[chunk]
        logps, _ = masked_token_logps(model, ids[chunk], attn_chunk, mask[chunk])  # [c, K]
        sums.append(logps.sum(dim=-1))  # [c]
    masked_sum = torch.cat(sums).view(b, m)  # [B, M]
    return ElboEstimate(per_draw=draws.weights.to(masked_sum.device) * masked_sum)  # [B, M]


def estimate_elbo(
    model: DiffusionLM,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    n_t: int = 8,
    n_yt: int = 1,
    form: str = "L/l",
    stratified: bool = False,
    eps: float = DEFAULT_EPS,
    generator: torch.Generator | None = None,
    max_tokens_per_forward: int | None = None,
) -> tuple[ElboDraws, ElboEstimate]:
    """:func:`draw_elbo_masks` then :func:`score_elbo`; returns the draws (to reuse) and values."""
    draws = draw_elbo_masks(
        response_mask, n_t, n_yt, form=form, stratified=stratified, eps=eps, generator=generator
    )
    estimate = score_elbo(
        model,
        prompt_ids,
        prompt_mask,
        response_ids,
        response_mask,
        draws,
        max_tokens_per_forward=max_tokens_per_forward,
    )
    return draws, estimate


def reference_draws(
    policy_draws: ElboDraws,
    response_mask: torch.Tensor,
    *,
    antithetic: bool = True,
    stratified: bool = False,
    eps: float = DEFAULT_EPS,
    generator: torch.Generator | None = None,
) -> ElboDraws:
    """The draws the reference scores: the policy's own (antithetic, Proposition 2), or fresh
    independent ones of the same budget and form (the paper's naive baseline)."""
    if antithetic:
        return policy_draws
    return draw_elbo_masks(
        response_mask,
        policy_draws.n_t,
        policy_draws.n_yt,
        form=policy_draws.form,
        stratified=stratified,
        eps=eps,
        generator=generator,
    )
