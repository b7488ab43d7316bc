"""DPO / VRPO losses on ELBO estimates against hand-derived numbers."""

from __future__ import annotations

import math

import pytest
import torch

from dllm_rl.objectives.dpo import dpo_loss, preference_losses, preference_scores

# Two pairs. Pair 0: policy/ref chosen -10/-12, rejected -15/-14, so
# h = (-10 + 12) - (-15 + 14) = 3 and, at beta = 0.5, s = 1.5.
# Pair 1: chosen -8/-8, rejected -9/-10: h = 0 - 1 = -1, s = -0.5.
POLICY_CHOSEN = torch.tensor([-10.0, -8.0])
REF_CHOSEN = torch.tensor([-12.0, -8.0])
POLICY_REJECTED = torch.tensor([-15.0, -9.0])
REF_REJECTED = torch.tensor([-14.0, -10.0])
BETA = 0.5


def _loss(**kwargs):
    return dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, beta=BETA, **kwargs)


def test_sigmoid_loss_scores_and_metrics():
    out = _loss()
    torch.testing.assert_close(out.scores, torch.tensor([1.5, -0.5]))
    # -log sigmoid(1.5) = log(1 + e^-1.5) = 0.2014133; -log sigmoid(-0.5) = log(1 + e^0.5)
    # = 0.9740770; mean 0.5877451.
    torch.testing.assert_close(out.losses, torch.tensor([0.2014133, 0.9740770]))
    assert float(out.loss) == pytest.approx(0.5877451, abs=1e-6)
    m = out.metrics()
    # rewards: chosen beta * (2, 0) = (1, 0); rejected beta * (-1, 1) = (-0.5, 0.5).
    assert m["rewards/chosen"] == pytest.approx(0.5)
    assert m["rewards/rejected"] == pytest.approx(0.0)
    assert m["rewards/accuracies"] == pytest.approx(0.5)  # 1 > -0.5 yes, 0 > 0.5 no
    assert m["rewards/margins"] == pytest.approx(0.5)  # mean(1.5, -0.5)
    assert m["logps/chosen"] == pytest.approx(-9.0)
    assert m["logps/rejected"] == pytest.approx(-12.0)
    assert m["sft_loss"] == 0.0 and m["loss"] == pytest.approx(0.5877451, abs=1e-6)


def test_gradient_of_the_sigmoid_loss():
    policy_chosen = POLICY_CHOSEN.clone().requires_grad_(True)
    out = dpo_loss(policy_chosen, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, beta=BETA)
    out.loss.backward()
    # d/dB_w of mean(-log sigmoid(s)) = -beta * sigmoid(-s) / B:
    # pair 0: -0.5 * sigmoid(-1.5) / 2 = -0.25 * 0.1824255 = -0.0456064;
    # pair 1: -0.25 * sigmoid(0.5) = -0.25 * 0.6224593 = -0.1556148.
    torch.testing.assert_close(policy_chosen.grad, torch.tensor([-0.0456064, -0.1556148]))


def test_label_smoothing():
    # 0.9 * log(1 + e^-1.5) + 0.1 * log(1 + e^1.5) = 0.9 * 0.2014133 + 0.1 * 1.7014133
    # = 0.3514133 (pair 0); pair 1: 0.9 * 0.9740770 + 0.1 * 0.4740770 = 0.9240770.
    out = _loss(label_smoothing=0.1)
    torch.testing.assert_close(out.losses, torch.tensor([0.3514133, 0.9240770]))


def test_ipo_and_hinge():
    # IPO on h: (h - 1 / (2 beta))^2 = (3 - 1)^2 = 4 and (-1 - 1)^2 = 4.
    torch.testing.assert_close(_loss(loss_type="ipo").losses, torch.tensor([4.0, 4.0]))
    # hinge: max(0, 1 - s) = max(0, -0.5) = 0 and max(0, 1.5) = 1.5.
    torch.testing.assert_close(_loss(loss_type="hinge").losses, torch.tensor([0.0, 1.5]))
    with pytest.raises(ValueError, match="label_smoothing"):
        _loss(loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="loss_type"):
        _loss(loss_type="kto")


def test_sft_term_is_per_token_negative_chosen_elbo():
    # -B_w / L_w = 10 / 5 = 2 and 8 / 4 = 2; mean 2; loss = 0.5877451 + 0.05 * 2 = 0.6877451.
    out = _loss(sft_weight=0.05, chosen_lengths=torch.tensor([5, 4]))
    assert float(out.sft_loss) == pytest.approx(2.0)
    assert float(out.loss) == pytest.approx(0.6877451, abs=1e-6)
    with pytest.raises(ValueError, match="chosen_lengths"):
        _loss(sft_weight=0.05)


def test_length_normalisation_is_opt_in():
    lengths_w, lengths_l = torch.tensor([5, 4]), torch.tensor([3, 2])
    out = _loss(chosen_lengths=lengths_w, rejected_lengths=lengths_l, length_normalize=True)
    # h = 2/5 - (-1)/3 = 0.7333333 and 0/4 - 1/2 = -0.5; s = beta h = 0.3666667, -0.25.
    torch.testing.assert_close(out.scores, torch.tensor([0.3666667, -0.25]))
    expected = [math.log1p(math.exp(-0.3666667)), math.log1p(math.exp(0.25))]
    torch.testing.assert_close(out.losses, torch.tensor(expected))
    # Unnormalised by default even when lengths are given.
    plain = _loss(chosen_lengths=lengths_w, rejected_lengths=lengths_l)
    torch.testing.assert_close(plain.scores, torch.tensor([1.5, -0.5]))
    # With normalisation the SFT term is still -B_w / L_w (2 for both pairs).
    both = _loss(
        chosen_lengths=lengths_w,
        rejected_lengths=lengths_l,
        length_normalize=True,
        sft_weight=1.0,
    )
    assert float(both.sft_loss) == pytest.approx(2.0)


def test_per_draw_scores_and_naive_dpo_shape():
    # Elementwise over [B, M]: the score of each draw, and the loss of per-draw scores.
    pw = torch.tensor([[-1.0, -2.0]])
    s = preference_scores(pw, pw - 1, pw + 0.5, pw - 1.5, beta=2.0)
    # (pw - (pw + 0.5)) - ((pw - 1) - (pw - 1.5)) = -0.5 - 0.5 = -1; s = -2.
    torch.testing.assert_close(s, torch.full((1, 2), -2.0))
    torch.testing.assert_close(
        preference_losses(s, beta=2.0), torch.full((1, 2), math.log1p(math.exp(2.0)))
    )
