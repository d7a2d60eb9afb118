"""The course's small helper package.

Mechanisms used by two or more readings live here, each tested against a reference in ``tests/``:

- :mod:`shared.utils`: seeding, device choice, :func:`~shared.utils.assert_close`.
- :mod:`shared.rope`: 1D rotary position embeddings and their long-context scalings (PI, NTK, YaRN).
- :mod:`shared.mrope`: multimodal RoPE (Qwen2-VL / Qwen2.5-VL / Qwen3-VL) and vision-tower 2D positions.
- :mod:`shared.vision`: image preprocessing shared by the Qwen-VL readings (`smart_resize`).
- :mod:`shared.tiling`: dynamic tiling (InternVL, DeepSeek-VL2 / AnyRes) and 2x2 token merges (pixel shuffle).
- :mod:`shared.attention`: reference attention, mask builders, ``repeat_kv``, an MHA/GQA/MQA module.
- :mod:`shared.norms`: RMSNorm and LayerNorm.
- :mod:`shared.policy_losses`: group-relative advantages, clipped surrogates, k3 KL, GRPO-family losses.
- :mod:`shared.returns`: discounted returns, TD errors and GAE (the lambda-return) of a rollout.
- :mod:`shared.preference_losses`: DPO-family losses on sequence log-probs (sigmoid, BCO pair, SFT) and MPO.
- :mod:`shared.kernels`: Triton GPU kernels (fused RoPE / M-RoPE, RMSNorm, FlashAttention), forward and
  backward, with the references above as their fallback on a machine without a GPU.

Import the submodule you need (``from shared.rope import apply_rope``); importing ``shared`` itself is cheap.
"""

__version__ = "0.1.0"
