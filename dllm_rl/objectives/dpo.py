"""Preference losses on ELBO estimates: DPO as VRPO uses it (LLaDA 1.5, Zhu et al. 2025, Eq. 5-6).

A masked diffusion LM has no exact log-likelihood, so DPO's log-ratios are taken between ELBO
estimates B(y) (:mod:`dllm_rl.objectives.elbo`):

    s = beta [(B_theta(y_w) - B_ref(y_w)) - (B_theta(y_l) - B_ref(y_l))]       (LLaDA 1.5, Eq. 6)
    loss = -log sigmoid(s)                                                      (DPO, Eq. 7)

The paper sums over tokens (no length normalisation); per-length normalisation (each ELBO divided
by its response's real length, IPO-style) is an explicit option. Loss types, named as TRL names
them (``loss_type``):

* ``"sigmoid"``: -(1 - ls) log sigmoid(s) - ls log sigmoid(-s), with ``label_smoothing`` ls the
  assumed rate of flipped labels (conservative DPO, Mitchell 2023); ls = 0 is plain DPO.
* ``"ipo"``: (h - 1 / (2 beta))^2 on the log-ratio difference h = s / beta (Azar et al. 2023,
  Eq. 17). The IPO paper averages log-likelihoods over tokens; pass ``length_normalize=True``
  for that.
* ``"hinge"``: max(0, 1 - s) (SLiC, Zhao et al. 2023, with beta as the inverse margin).

Optional SFT term (LLaDA 1.5 adds one with weight 0.05): ``sft_weight`` times the chosen
response's negative ELBO per token, -B_theta(y_w) / L_w, averaged over the batch. Dividing by
L_w puts it on the scale of LLaDA's SFT loss (normalised by the answer length), so the weight does
not have to change with the response length.

All functions are elementwise over any leading shape: ``[B]`` for the loss, or ``[B, M]`` per
draw (antithetic sampling with pi_theta = pi_ref gives s = 0 exactly for every draw).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


@dataclass(frozen=True)
class PreferenceLoss:
    """The outcome of :func:`dpo_loss` on B pairs.

    Attributes:
        loss: ``[]`` the scalar to backpropagate: mean preference loss + sft_weight * sft_loss.
        losses: ``[B]`` per-pair preference loss (without the SFT term).
        scores: ``[B]`` s = chosen_rewards - rejected_rewards (with grad).
        chosen_rewards: ``[B]`` beta (B_theta(y_w) - B_ref(y_w)), detached (TRL's implicit reward).
        rejected_rewards: ``[B]`` beta (B_theta(y_l) - B_ref(y_l)), detached.
        policy_chosen: ``[B]`` the policy's chosen ELBOs as used (normalised if asked), detached.
        policy_rejected: ``[B]`` the same for the rejected responses.
        sft_loss: ``[]`` mean over the batch of -B_theta(y_w) / L_w (0 when no weight is given).
    """

    loss: torch.Tensor
    losses: torch.Tensor
    scores: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    sft_loss: torch.Tensor

    def metrics(self) -> dict[str, float]:
        """Batch means under TRL's DPO metric names (``logps/*`` are the ELBO estimates here)."""
        chosen, rejected = self.chosen_rewards.float(), self.rejected_rewards.float()
        return {
            "loss": float(self.loss.detach()),
            "rewards/chosen": float(chosen.mean()),
            "rewards/rejected": float(rejected.mean()),
            "rewards/accuracies": float((chosen > rejected).float().mean()),
            "rewards/margins": float((chosen - rejected).mean()),
            "logps/chosen": float(self.policy_chosen.float().mean()),
            "logps/rejected": float(self.policy_rejected.float().mean()),
            "sft_loss": float(self.sft_loss.detach()),
        }


def preference_scores(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """s = beta [(B_theta(y_w) - B_ref(y_w)) - (B_theta(y_l) - B_ref(y_l))] (LLaDA 1.5, Eq. 6).

    Args:
        policy_chosen, policy_rejected, ref_chosen, ref_rejected: ELBO estimates of one shape,
            ``[B]`` or ``[B, M]`` per draw.
        beta: the KL coefficient.

    Returns:
        s, of the inputs' shape.
    """
    # Each model's difference first: with shared draws and equal models both are exactly 0.
    return beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))


def preference_losses(
    scores: torch.Tensor, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0
) -> torch.Tensor:
    """Per-pair loss of the scores s (see the module docstring for each ``loss_type``).

    Args:
        scores: ``[...]`` s = beta h.
        beta: the coefficient s was scaled with (IPO's target is 1 / (2 beta) on h = s / beta).
        loss_type: ``"sigmoid"``, ``"ipo"`` or ``"hinge"``.
        label_smoothing: in [0, 0.5), sigmoid only.

    Returns:
        ``[...]`` losses.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies to loss_type='sigmoid' only, not {loss_type!r}")
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(scores)
        if label_smoothing:
            losses = (1.0 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-scores)
        return losses
    if loss_type == "ipo":
        return (scores / beta - 1.0 / (2.0 * beta)) ** 2
    return torch.relu(1.0 - scores)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    length_normalize: bool = False,
    sft_weight: float = 0.0,
) -> PreferenceLoss:
    """DPO / VRPO loss of B pairs from their ELBO estimates.

    Args:
        policy_chosen: ``[B]`` B_theta(y_w) (with grad).
        policy_rejected: ``[B]`` B_theta(y_l) (with grad).
        ref_chosen: ``[B]`` B_ref(y_w) (no grad; precomputed or on the fly, same draws).
        ref_rejected: ``[B]`` B_ref(y_l).
        beta: the KL coefficient (LLaDA 1.5: 0.2).
        loss_type: ``"sigmoid"``, ``"ipo"`` or ``"hinge"``.
        label_smoothing: conservative-DPO flip rate (sigmoid only).
        chosen_lengths: ``[B]`` real lengths L_w (needed by ``length_normalize`` and the SFT term).
        rejected_lengths: ``[B]`` real lengths L_l (needed by ``length_normalize``).
        length_normalize: divide every ELBO by its response length before taking the ratios.
        sft_weight: weight of the SFT term -B_theta(y_w) / L_w (LLaDA 1.5: 0.05).

    Returns:
        :class:`PreferenceLoss`.
    """
    if (length_normalize or sft_weight) and chosen_lengths is None:
        raise ValueError("length_normalize and sft_weight need chosen_lengths (the real L_w)")
    if length_normalize and rejected_lengths is None:
        raise ValueError("length_normalize needs rejected_lengths (the real L_l)")
    if length_normalize:
        lw, ll = chosen_lengths.to(policy_chosen), rejected_lengths.to(policy_rejected)
        policy_chosen, ref_chosen = policy_chosen / lw, ref_chosen / lw
        policy_rejected, ref_rejected = policy_rejected / ll, ref_rejected / ll
    scores = preference_scores(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
    losses = preference_losses(scores, beta, loss_type, label_smoothing)  # [B]
    loss = losses.mean()
    sft = torch.zeros((), device=losses.device)
    if sft_weight:
        # Undo the length normalisation, if any: the SFT term is always per token of y_w.
        per_token = (
            policy_chosen if length_normalize else policy_chosen / chosen_lengths.to(policy_chosen)
        )
        sft = -per_token.mean()
        loss = loss + sft_weight * sft
    return PreferenceLoss(
        loss=loss,
        losses=losses,
        scores=scores,
        chosen_rewards=beta * (policy_chosen - ref_chosen).detach(),
        rejected_rewards=beta * (policy_rejected - ref_rejected).detach(),
        policy_chosen=policy_chosen.detach(),
        policy_rejected=policy_rejected.detach(),
        sft_loss=sft.detach(),
    )
