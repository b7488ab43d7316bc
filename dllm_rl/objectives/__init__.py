"""Pure tensor maths of the training objectives: tensors in, tensors out, no trainer state.

Modules: ``grpo`` (group advantages, clipped surrogate, k3 KL, token weights of the reductions),
``logps`` (CJ-GRPO per-step log-probs and d1's one-step estimate), ``elbo`` (ELBO estimates for
VRPO/DPO), ``dpo`` (preference losses), ``mdlm`` (masked-diffusion SFT loss).
"""
