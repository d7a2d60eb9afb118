# ---
# jupyter:
#   course:
#     cpu_seconds: 32
#     id: F2
#     papers:
#     - arxiv: '2104.09864'
#       title: 'RoFormer: Enhanced Transformer with Rotary Position Embedding'
#     - arxiv: '2306.15595'
#       title: Extending Context Window of Large Language Models via Positional Interpolation
#     - arxiv: null
#       title: NTK-Aware Scaled RoPE allows LLaMA models to have extended (8k+) context
#         size without any fine-tuning and minimal perplexity degradation
#       url: https://www.reddit.com/r/LocalLLaMA/comments/14lz7j5/ntkaware_scaled_rope_allows_llama_models_to_have/
#     - arxiv: '2309.00071'
#       title: 'YaRN: Efficient Context Window Extension of Large Language Models'
#     - arxiv: '2108.12409'
#       title: 'Train Short, Test Long: Attention with Linear Biases Enables Input Length
#         Extrapolation'
#     part: foundations
#     prerequisites:
#     - F1
#     title: 'Positional encodings: sinusoidal to RoPE to long context'
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: course
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # F2 · Positional encodings: sinusoidal to RoPE to long context
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/foundations/F2_positional_encodings.ipynb)
#
# **Papers:** Su, Lu, Pan, Murtadha, Wen, Liu, *RoFormer: Enhanced Transformer with Rotary Position Embedding*,
# arXiv 2021 (Neurocomputing 2024). [arXiv:2104.09864](https://arxiv.org/abs/2104.09864) ·
# Chen, Wong, Chen, Tian, *Extending Context Window of Large Language Models via Positional Interpolation*
# (PI), 2023. [arXiv:2306.15595](https://arxiv.org/abs/2306.15595) ·
# bloc97, *NTK-Aware Scaled RoPE allows LLaMA models to have extended (8k+) context size without any
# fine-tuning and minimal perplexity degradation*, r/LocalLLaMA, June 2023 (no paper:
# [the post](https://www.reddit.com/r/LocalLLaMA/comments/14lz7j5/ntkaware_scaled_rope_allows_llama_models_to_have/)) ·
# Peng, Quesnelle, Fan, Shippole, *YaRN: Efficient Context Window Extension of Large Language Models*,
# ICLR 2024. [arXiv:2309.00071](https://arxiv.org/abs/2309.00071) (section numbers here follow this ICLR
# version, arXiv v3; in arXiv v2, Dynamic Scaling is §3.3 and YaRN §3.4) ·
# Press, Smith, Lewis, *Train Short, Test Long: Attention with Linear Biases Enables Input Length
# Extrapolation* (ALiBi), ICLR 2022. [arXiv:2108.12409](https://arxiv.org/abs/2108.12409)
#
# **Official code:** [ZhuiyiTechnology/roformer](https://github.com/ZhuiyiTechnology/roformer) ·
# [jquesnelle/yarn](https://github.com/jquesnelle/yarn) (NTK-aware, Dynamic NTK, YaRN) ·
# [ofirpress/attention_with_linear_biases](https://github.com/ofirpress/attention_with_linear_biases)
#
# **Prerequisites:** [F1 · The Transformer](F1_transformer.ipynb) (attention, the sinusoidal encoding)
#
# **CPU run time:** 32 s on a 2-core CPU (measured by `make run`, which rewrites this number)

# %% [markdown]
# ## TL;DR
#
# - **RoPE** rotates each pair of query/key dims by an angle `m·θ_i` proportional to the position `m`, so
#   `q_m·k_n` depends on content and on `n − m` only: relative position from an absolute operation
#   (RoFormer §3.2, eq. 16). The two common memory layouts (interleaved pairs, rotate-half) are the same
#   function up to a permutation of dims.
# - Relative is not length-proof: past the trained length `L` the slow pairs reach angles never seen in
#   training and attention breaks (ALiBi Fig. 1; PI abstract; reproduced below).
# - **PI** divides every frequency by `s = L'/L` (and needs fine-tuning, "within 1000 steps" per its
#   abstract); **NTK-aware** changes the base `b → b·s^(d/(d−2))`, keeping fast pairs and interpolating slow
#   ones; **YaRN** ramps per pair between the two and adds an attention temperature `√(1/t) = 0.1 ln s + 1`
#   (YaRN §3.3, eq. 15), with "10x less tokens and 2.5x less training steps than previous methods" (abstract).
# - On a tiny model trained at `L = 64` and stretched without any fine-tuning, accuracy past `L` at `4L`
#   (mean of 3 seeds): vanilla RoPE 58% (100% within `L`), PI 6% (chance), NTK-aware 94%, YaRN 87%
#   (§Reproduction 3).

# %% [markdown]
# ## 中文速览
#
# - **RoPE（旋转位置编码）** 把 query/key 的每一对维度旋转角度 `m·θ_i`（`m` 是位置），于是 `q_m·k_n` 只依赖内容和相对位置
#   `n − m`：用绝对位置的操作得到相对位置编码（RoFormer §3.2，式 16）。两种内存布局（相邻成对 interleaved、前后两半
#   rotate-half）只差一个维度置换，是同一个函数。
# - "相对" 不等于 "能外推"：超过训练长度 `L` 后，低频维度会转到训练中从未见过的角度，注意力失效（ALiBi 图 1；PI 摘要；
#   本文复现）。
# - **PI（位置插值）** 把所有频率除以 `s = L'/L`，需要微调（摘要称 1000 步以内）；**NTK-aware** 把底数改成
#   `b·s^(d/(d−2))`，高频维度不变、低频维度被插值；**YaRN** 按维度在两者之间做斜坡过渡，并加注意力温度
#   `√(1/t) = 0.1 ln s + 1`（YaRN §3.3，式 15），摘要称比以往方法少用 10 倍 token、2.5 倍训练步数。
# - 在 `L = 64` 上训练的小模型、不做任何微调直接拉长到 `4L`（3 个随机种子的平均，统计超出 `L` 的位置）：原始 RoPE 准确率
#   58%（`L` 以内为 100%），PI 6%（随机水平），NTK-aware 94%，YaRN 87%（见复现第 3 节）。

# %% [markdown]
# ## Setup
#
# The first cell installs the course helper on Colab only (CI skips it). The next imports, seeds and picks
# the device. Everything runs on a CPU in well under a minute.

# %% tags=["nbval-skip"]
# Colab only: install the course helper package with its pinned versions. CI skips this cell.
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         "vlm-llm-course[notebooks] @ git+https://github.com/open-vlm-course/vlm-llm-course"],
        check=True,
    )

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from shared import rope as shared_rope
from shared.utils import assert_close, error_bound, pick_device, seed_everything

seed_everything(0)
device = pick_device()  # every reading runs on CPU; a GPU only makes it faster
torch.set_num_threads(1)  # the tensors here are tiny: one thread beats two that wait on each other
print("torch", torch.__version__)

# %% [markdown]
# ## The problem
#
# **Absolute encodings mix position into content.** The Transformer adds a fixed sinusoid `p_m` to the
# token embedding (Vaswani et al. 2017, §3.5; see F1). The attention logit `(x_m + p_m)ᵀ W_qᵀ W_k (x_n + p_n)`
# then contains content–position cross terms, and relative position is only implicit. RoFormer (§3.1, eq. 11)
# asks instead for query/key maps `f_q(x_m, m)`, `f_k(x_n, n)` whose inner product is a function
# `g(x_m, x_n, m − n)` of the contents and the *relative* position only.
#
# **Relative does not mean "works at any length".** RoFormer's abstract lists "the flexibility of sequence
# length" among RoPE's properties (arXiv v5; earlier versions: "flexibility of being expand to any sequence
# lengths"), but a model only ever trains on distances below its context length `L`:
#
# - ALiBi, Fig. 1: language models trained on WikiText-103 with `L = 512` or `1024` and evaluated on longer
#   inputs; "current position methods (sinusoidal, rotary, and T5) show degraded perplexity", ALiBi does not.
# - PI, abstract: extrapolating a RoPE model "beyond the trained context length ... may lead to
#   catastrophically high attention scores that completely ruin the self-attention mechanism"; their bound for
#   interpolation is "at least ∼600× smaller than that of extrapolation".
# - YaRN, abstract: RoPE models "fail to generalize past the sequence length they were trained on".
#
# Training at the long length from the start costs attention's quadratic price on every step, so in
# practice models are pretrained short and extended afterwards. This reading derives RoPE, then the three
# extension recipes (PI, NTK-aware/Dynamic NTK, YaRN), implements all of them, checks them against
# `transformers`, and watches them fail or hold on a tiny model.

# %% [markdown]
# ## Derivations
#
# ### 1. Two dimensions: a rotation, or a complex phase
#
# Read a 2D query `q = W_q x_m` as a complex number `q = q₁ + i q₂` and set `f_q(x_m, m) = q e^{i m θ}`,
# `f_k(x_n, n) = k e^{i n θ}` (RoFormer §3.2.1). The real dot product of two 2D vectors is
# `⟨a, b⟩ = Re[a b̄]`, so
#
# $$\langle f_q, f_k\rangle = \mathrm{Re}\big[q e^{im\theta}\,\overline{k e^{in\theta}}\big]
#   = \mathrm{Re}\big[q \bar k\, e^{i(m-n)\theta}\big],$$
#
# a function of `q`, `k` and `m − n` only. In real coordinates, multiplying by `e^{imθ}` is the rotation
# matrix `R_m = [[cos mθ, −sin mθ], [sin mθ, cos mθ]]`. Rotations compose by adding angles and the transpose
# of a rotation is its inverse, `R_mᵀ = R_{−m}`, hence
#
# $$R_m^\top R_n = R_{-m} R_n = R_{n-m}, \qquad (R_m q)^\top (R_n k) = q^\top R_{n-m}\, k .$$
#
# (checked numerically in the Walkthrough.)
#
# ### 2. `d` dimensions: one rotation per pair
#
# Split the `d` dims into `d/2` pairs and rotate pair `i` by `m θ_i`, with `θ_i = b^{−2i/d}`,
# `i = 0 … d/2 − 1`, base `b = 10000` (RoFormer §3.2.2 writes `θ_i = 10000^{−2(i−1)/d}` with `i` from 1).
# `R^d_{Θ,m}` is block diagonal, each block a 2D rotation, so block by block the same identity gives
# `q_mᵀ k_n = (R^d_{Θ,m} W_q x_m)ᵀ (R^d_{Θ,n} W_k x_n) = x_mᵀ W_qᵀ R^d_{Θ,n−m} W_k x_n` (RoFormer eq. 16).
# Pair `i` has wavelength `λ_i = 2π/θ_i = 2π b^{2i/d}` tokens: from `2π ≈ 6.3` tokens (fast pairs, local
# detail) to `2π b^{(d−2)/d}`, about 54 000 tokens for `d = 128` (slow pairs, coarse position).
#
# ### 3. The cheap form and the two layouts
#
# The block matrix is never built: `R x = x ⊙ cos + turn(x) ⊙ sin` where `turn` maps each pair `(a, b)` to
# `(−b, a)` (RoFormer §3.4.2). Where the two members of a pair live in memory is a convention:
#
# - **interleaved** (RoFormer, GPT-J, Meta's original Llama code): pair `i` is dims `(2i, 2i+1)`;
# - **rotate-half** (GPT-NeoX, `transformers`' Llama/Qwen): pair `i` is dims `(i, i + d/2)`.
#
# With the permutation `P` that lists even dims then odd dims, `RoPE_half(P x) = P · RoPE_interleaved(x)`.
# `P` is orthogonal, so permuting the output rows of `W_q` and `W_k` by `P` gives *identical* attention
# scores. That is exactly what `transformers`' Llama checkpoint converter does ("permute for sliced rotary" in
# `models/llama/convert_llama_weights_to_hf.py` of the GitHub repository; the script is not in the pip wheel).
#
# ### 4. Long-term decay (RoFormer §3.4.3)
#
# In complex form the score is $\mathrm{Re}\sum_i h_i e^{i(m-n)\theta_i}$ with $h_i = q_i \bar k_i$, the
# product of the `i`-th pairs read as complex numbers. Let $S_j = \sum_{i<j} e^{i(m-n)\theta_i}$ (so
# $S_0 = 0$ and $e^{i(m-n)\theta_i} = S_{i+1} - S_i$). Abel summation (summation by parts) gives
#
# $$\Big|\sum_{i=0}^{d/2-1} h_i e^{i(m-n)\theta_i}\Big| = \Big|\sum_{i} S_{i+1}(h_{i+1}-h_i)\Big|
#   \le \Big(\max_i |h_{i+1}-h_i|\Big) \sum_{i=0}^{d/2-1} |S_{i+1}| ,$$
#
# (with `h_{d/2} = 0`), and the average `(1/(d/2)) Σ_j |S_j|` decays as `|m − n|` grows (RoFormer Fig. 2,
# reproduced below): an upper bound on how much far tokens can interact, not a guarantee for a given `q, k`.
#
# ### 5. Longer than `L`: what goes out of distribution
#
# During training at length `L` a pair turns `r_i = L/λ_i = L θ_i/(2π)` times. Fast pairs (`r_i ≫ 1`) have
# seen every angle; slow pairs (`r_i < 1`, wavelength longer than `L`) have only seen a slice of the circle.
# Past `L` the slow pairs produce unseen angles. Three fixes, all of the form `θ_i → θ'_i`, for an extension
# ratio `s = L'/L`:
#
# - **PI** (PI §2.3, eq. 4): `f'(x, m) = f(x, mL/L')`, i.e. `θ'_i = θ_i / s` for every pair. Every angle
#   stays in range, but neighbouring tokens are now `1/s` of a step apart on the fast pairs.
# - **NTK-aware** (bloc97; YaRN §3.1 and App. A.2): change the base, `b' = b · s^{d/(d−2)}`. Then
#   `θ'_i = θ_i · s^{−2i/(d−2)}`: the fastest pair (`i = 0`) is unchanged, the slowest (`i = d/2 − 1`) gets
#   exactly `θ/s`, in between a geometric blend. **Dynamic NTK** (YaRN §3.4) recomputes `s` from the current
#   length `l`, `s = max(1, l/L)`, so nothing changes until the text is longer than `L`. (`transformers`'
#   `"dynamic"` takes a configured `factor` `f` and uses `s = f·l/L − (f − 1)` for `l > L`, which is the
#   paper's `l/L` when `f = 1` and grows faster otherwise.)
# - **YaRN** (YaRN §3.2 "NTK-by-parts" + §3.3): by turns `r_i`, keep pairs with `r_i > β` (`θ'_i = θ_i`),
#   interpolate pairs with `r_i < α` (`θ'_i = θ_i/s`), and blend in between,
#   `θ'_i = (1 − γ_i) θ_i/s + γ_i θ_i` (eq. 13); for "the Llama family of models" the paper finds `α = 1`,
#   `β = 32` good (§3.2). Then (§3.3) it divides the logits by a temperature `t`, recommending for LLaMA and
#   Llama 2 (eq. 15)
#
# $$\sqrt{1/t} = 0.1 \ln s + 1 ,$$
#
# applied for free by multiplying cos and sin by `√(1/t)` (both `q` and `k` are scaled, so the logit is
# scaled by `1/t`). The paper writes the blend weight `γ` as linear in `r` (eq. 11); the official code and
# `transformers` make it linear in the pair index `i` between the two boundary indices (so linear in `log r`)
# and round those indices outwards. The two agree at the ends; we implement the code's version, which is what
# released checkpoints use. The boundary index for `r` turns solves `L b^{−2i/d}/(2π) = r`:
#
# $$i(r) = \frac{d \,\ln\!\big(L / (2\pi r)\big)}{2 \ln b}.$$
#
# All five frequency sets are checked against `transformers` below; the decay bound and the behaviour past `L`
# are reproduced in §Reproduction.

# %% [markdown]
# ## Walkthrough
#
# Everything here is written from scratch in float64, independent of `shared.rope` (which the next section
# compares against). First, the block-diagonal rotation `R^d_{Θ,m}` of §2 and the identity
# `R_mᵀ R_n = R_{n−m}` of §1.

# %%
def inv_freq_default(d: int, base: float = 10000.0) -> torch.Tensor:
    """theta_i = base^(-2i/d), i = 0 .. d/2-1 (RoFormer §3.2.2). -> (d/2,) float64."""
    return base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)


def rotation_matrix(m: float, inv_freq: torch.Tensor) -> torch.Tensor:
    """R^d_{Theta,m}: block-diagonal 2x2 rotations by m*theta_i (interleaved pairs). -> (d, d) float64."""
    c, s = torch.cos(m * inv_freq), torch.sin(m * inv_freq)  # (d/2,)
    return torch.block_diag(*[torch.stack([torch.stack([ci, -si]), torch.stack([si, ci])]) for ci, si in zip(c, s, strict=True)])


theta = inv_freq_default(8)
R = {m: rotation_matrix(m, theta) for m in (3, 10, 7)}
err = (R[3].T @ R[10] - R[7]).abs().max().item()  # R_3^T R_10 = R_7
print(f"max |R_3^T R_10 - R_7| {error_bound(err, 1e-12)}")

# %% [markdown]
# The complex form of §1 for all pairs at once: read interleaved pairs `(x_{2i}, x_{2i+1})` as complex
# numbers and multiply by `e^{i m θ_i}`.

# %%
def rope_complex(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Interleaved RoPE as complex multiplication. x: (..., seq, d), positions: (seq,) -> (..., seq, d)."""
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())  # (..., seq, d/2)
    angles = positions.double()[:, None] * inv_freq  # m * theta_i: (seq, d/2)
    phase = torch.polar(torch.ones_like(angles), angles)  # e^{i m theta_i}: (seq, d/2)
    return torch.view_as_real(z * phase).flatten(-2)  # (..., seq, d)


x = torch.randn(5, 8, dtype=torch.float64)  # (seq, d)
pos = torch.arange(5)
by_matrix = torch.stack([rotation_matrix(int(m), theta) @ x[j] for j, m in enumerate(pos)])  # (seq, d)
print(f"complex form vs block matrix: {error_bound((rope_complex(x, pos, theta) - by_matrix).abs().max().item(), 1e-12)}")

# %% [markdown]
# The cheap form of §3 in the rotate-half layout, the one `transformers` uses: `x ⊙ cos + turn(x) ⊙ sin`
# with `turn([x₁, x₂]) = [−x₂, x₁]` on the two halves, and an optional `scale` on cos and sin (YaRN's
# `√(1/t)`).

# %%
def rope_half(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Rotate-half RoPE: pair i is dims (i, i + d/2). x: (..., seq, d), positions: (seq,) -> (..., seq, d)."""
    angles = positions.double()[:, None] * inv_freq  # (seq, d/2)
    cos, sin = angles.cos().repeat(1, 2) * scale, angles.sin().repeat(1, 2) * scale  # (seq, d)
    x1, x2 = x.chunk(2, dim=-1)  # (..., seq, d/2) each
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


# §3: the two layouts differ by the permutation P = [even dims, odd dims]
P = torch.cat((torch.arange(0, 8, 2), torch.arange(1, 8, 2)))
print(f"rope_half(x[:, P]) vs rope_complex(x)[:, P]: {error_bound((rope_half(x[:, P], pos, theta) - rope_complex(x, pos, theta)[:, P]).abs().max().item(), 1e-12)}")

# %% [markdown]
# The long-context recipes of §5 (PI, NTK-aware, Dynamic NTK as `transformers` computes it, YaRN), each a
# function that returns new frequencies. YaRN also returns its attention factor `√(1/t)`.

# %%
def inv_freq_pi(d: int, base: float, s: float) -> torch.Tensor:
    """Position Interpolation: every theta_i / s (PI §2.3). -> (d/2,)."""
    return inv_freq_default(d, base) / s


def inv_freq_ntk(d: int, base: float, s: float) -> torch.Tensor:
    """NTK-aware: base b * s^(d/(d-2)) (bloc97; YaRN §3.1). -> (d/2,)."""
    return inv_freq_default(d, base * s ** (d / (d - 2)))


def inv_freq_dynamic(d: int, base: float, factor: float, L: int, seq_len: int) -> torch.Tensor:
    """Dynamic NTK as transformers computes it: NTK-aware with s = factor*l/L - (factor-1), l = max(seq_len, L)."""
    s = factor * max(seq_len, L) / L - (factor - 1)  # = max(1, seq_len/L) when factor = 1 (YaRN §3.4)
    return inv_freq_ntk(d, base, s)


def yarn(d: int, base: float, s: float, L: int, alpha: float = 1.0, beta: float = 32.0) -> tuple[torch.Tensor, float]:
    """YaRN: NTK-by-parts frequencies (YaRN §3.2, ramp as in the official code) and sqrt(1/t) (§3.3)."""
    theta = inv_freq_default(d, base)  # (d/2,)

    def index_for_turns(r: float) -> float:  # the pair index i whose wavelength fits r times in L
        return d * math.log(L / (2 * math.pi * r)) / (2 * math.log(base))

    lo = max(math.floor(index_for_turns(beta)), 0)  # pairs i <= lo turn > beta times: keep theta
    hi = min(math.ceil(index_for_turns(alpha)), d - 1)  # pairs i >= hi turn < alpha times: theta / s
    ramp = ((torch.arange(d // 2, dtype=torch.float64) - lo) / max(hi - lo, 1e-3)).clamp(0, 1)
    gamma = 1 - ramp  # 1 = keep the original frequency
    inv_freq = (1 - gamma) * theta / s + gamma * theta
    return inv_freq, (0.1 * math.log(s) + 1 if s > 1 else 1.0)


d, b, L_llama, s = 128, 10000.0, 4096, 4.0  # Llama-2-like head: d = 128, base 10^4, trained at L = 4096
yarn_freq, yarn_scale = yarn(d, b, s, L_llama)
print(f"YaRN sqrt(1/t) at s = {s:g}: {yarn_scale:.4f}, so logits are multiplied by {yarn_scale**2:.4f}")

# %% [markdown]
# What each recipe does to each pair: the ratio `θ'_i/θ_i` for a Llama-2-like head (`d = 128`, `b = 10⁴`,
# `L = 4096`) stretched `s = 4` times. The dotted lines mark the pairs that turn 32 times and once over `L`
# (YaRN's `β` and `α`).

# %%
theta = inv_freq_default(d, b)
turns = L_llama * theta / (2 * math.pi)  # r_i, turns over the trained length
fig, ax = plt.subplots(figsize=(7, 3.2))
for label, new in [("PI", inv_freq_pi(d, b, s)), ("NTK-aware", inv_freq_ntk(d, b, s)), ("YaRN", yarn_freq)]:
    ax.plot(range(d // 2), (new / theta).numpy(), label=label)
for r in (32, 1):
    ax.axvline(int((turns > r).sum()) - 0.5, color="grey", ls=":", lw=1)
ax.set(xlabel="pair index i (fast → slow)", ylabel="θ'_i / θ_i", title=f"d={d}, b={b:g}, L={L_llama}, s={s:g}")
ax.legend()
plt.show()
print(f"pairs with r_i > 32: {int((turns > 32).sum())}, with r_i < 1 (never a full turn in training): {int((turns < 1).sum())}")

# %% [markdown]
# ALiBi (Press et al. 2022, §3) drops position embeddings altogether and adds a fixed bias `−m_h · (i − j)` to
# the logit of query `i` and key `j`, with head slopes the geometric sequence `m_h = 2^{−8h/H}`,
# `h = 1 … H` (for 8 heads: 1/2, 1/4, …, 1/256). It is not a RoPE variant; it appears here because it is
# the classic "train short, test long" baseline.

# %%
def alibi_bias(num_heads: int, seq: int) -> torch.Tensor:
    """ALiBi bias -m_h (i - j) for keys j <= i (ALiBi §3; num_heads a power of 2). -> (heads, seq, seq)."""
    slopes = 2.0 ** (-8.0 * torch.arange(1, num_heads + 1) / num_heads)  # (heads,)
    distance = (torch.arange(seq)[:, None] - torch.arange(seq)[None, :]).clamp(min=0)  # (seq, seq): i - j
    return -slopes[:, None, None] * distance  # future keys are masked anyway


print("ALiBi slopes for 8 heads:", [f"1/{int(round(1 / -alibi_bias(8, 2)[h, 1, 0].item()))}" for h in range(8)])

# %% [markdown]
# ## Check against a reference
#
# The reference is `transformers` 5.23: `LlamaRotaryEmbedding` (default frequencies and the cos/sin tables),
# `modeling_rope_utils.ROPE_INIT_FUNCTIONS` (`"linear"` = PI, `"dynamic"`, `"yarn"`), `apply_rotary_pos_emb`,
# and MPT's ALiBi. The course's `shared.rope` must equal `transformers` bit for bit; the from-scratch float64
# code above must agree to float32 rounding (`rtol = 1e-6`).

# %%
import transformers
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor


def tiny_llama_config(rope_parameters: dict, max_position_embeddings: int) -> LlamaConfig:
    """A config only (no weights): 2 heads of d = 128, with the given RoPE parameters."""
    return LlamaConfig(hidden_size=2 * d, num_attention_heads=2, head_dim=d, num_hidden_layers=1,
                       intermediate_size=4 * d, vocab_size=32, max_position_embeddings=max_position_embeddings,
                       rope_parameters=dict(rope_parameters))


seq_now = 3 * L_llama + 100  # a current length past L, for Dynamic NTK
cases = {  # name: (transformers config, its init function, from-scratch (inv_freq, scale), shared.rope kind)
    "default": (tiny_llama_config({"rope_type": "default", "rope_theta": b}, L_llama),
                LlamaRotaryEmbedding.compute_default_rope_parameters, (inv_freq_default(d, b), 1.0), "default"),
    "linear (PI)": (tiny_llama_config({"rope_type": "linear", "rope_theta": b, "factor": s}, L_llama),
                    ROPE_INIT_FUNCTIONS["linear"], (inv_freq_pi(d, b, s), 1.0), "linear"),
    "dynamic": (tiny_llama_config({"rope_type": "dynamic", "rope_theta": b, "factor": s}, L_llama),
                ROPE_INIT_FUNCTIONS["dynamic"], (inv_freq_dynamic(d, b, s, L_llama, seq_now), 1.0), "dynamic"),
    "yarn": (tiny_llama_config({"rope_type": "yarn", "rope_theta": b, "factor": s,
                                "original_max_position_embeddings": L_llama}, int(s * L_llama)),
             ROPE_INIT_FUNCTIONS["yarn"], (yarn_freq, yarn_scale), "yarn"),
}
for name, (config, init_fn, (ours, our_scale), kind) in cases.items():
    ref, ref_scale = init_fn(config, device=None, seq_len=seq_now)  # seq_len is read by "dynamic" only
    shared, shared_scale = shared_rope.rope_init(kind, d, b, factor=s, original_max_position_embeddings=L_llama,
                                                 seq_len=seq_now)
    assert torch.equal(shared, ref) and shared_scale == ref_scale, name  # bitwise
    err = assert_close(ours, ref.double(), rtol=1e-6, atol=0.0, name=name)
    assert abs(our_scale - ref_scale) < 1e-12, name
    print(f"{name:12s} shared.rope == transformers bitwise; from scratch max abs error {error_bound(err, 1e-7)}, "
          f"attention factor {ref_scale:.4f}")

# Static NTK-aware has no rope_type of its own: it is "dynamic" with factor 1 at s * L tokens.
ntk_config = tiny_llama_config({"rope_type": "dynamic", "rope_theta": b, "factor": 1.0}, L_llama)
ref, _ = ROPE_INIT_FUNCTIONS["dynamic"](ntk_config, device=None, seq_len=int(s * L_llama))
err = assert_close(inv_freq_ntk(d, b, s), ref.double(), rtol=1e-6, atol=0.0, name="ntk")
assert torch.equal(shared_rope.rope_init("ntk", d, b, factor=s)[0], ref)
print(f"{'ntk':12s} shared.rope == transformers 'dynamic'(factor 1, s*L tokens) bitwise; from scratch {error_bound(err, 1e-7)}")

# %% [markdown]
# The rotation itself: YaRN cos/sin from `LlamaRotaryEmbedding.forward` (which folds the attention factor in)
# applied with `apply_rotary_pos_emb`, against `rope_half` and `shared.rope.apply_rope`. Then the layouts:
# a query/key pair in Meta's interleaved layout, scored with `rope_complex`, must score the same after
# `transformers`' checkpoint permutation of the weight rows and rotate-half RoPE.

# %%
g = torch.Generator().manual_seed(0)
q, k = torch.randn(2, 1, 2, 50, d, generator=g)  # (batch, heads, seq, d)
position_ids = torch.arange(50)[None] + L_llama  # just past the trained length
yarn_module = LlamaRotaryEmbedding(cases["yarn"][0])
cos, sin = yarn_module(q, position_ids)  # (batch, seq, d), already times the attention factor
q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
ours = rope_half(q.double(), position_ids[0], yarn_freq, scale=yarn_scale)
# transformers forms the angles m*theta_i in float32: each is off by up to half an ulp of m (m * 2^-24 rad),
# so the rotated values may differ by about that times |q|; we allow twice it.
tol = 2 * position_ids.max().item() * 2**-24 * yarn_scale * q.abs().max().item()
err_scratch = assert_close(ours, q_ref.double(), atol=tol, rtol=0.0, name="rope_half vs transformers")
inv, scale = shared_rope.rope_init("yarn", d, b, factor=s, original_max_position_embeddings=L_llama)
cos_s, sin_s = shared_rope.rope_cos_sin(position_ids, inv, scale=scale)
assert torch.equal(cos_s, cos) and torch.equal(sin_s, sin)
assert torch.equal(shared_rope.apply_rope(k, cos_s[:, None], sin_s[:, None]), k_ref)
print(f"YaRN rotation at positions {L_llama}+: shared.rope == transformers bitwise; "
      f"from scratch (float64 angles) max error {error_bound(err_scratch, 1e-7)} within the float32-angle tolerance {tol:.1e}")


def permute_for_sliced_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """transformers' convert_llama_weights_to_hf `permute`: interleaved rows -> rotate-half rows, per head."""
    dim1, dim2 = w.shape
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


h_in = torch.randn(12, 16, dtype=torch.float64, generator=g)  # (seq, hidden) inputs
wq, wk = torch.randn(2, d, 16, dtype=torch.float64, generator=g)  # one head of d = 128 in Meta's layout
theta = inv_freq_default(d, b)
pos = torch.arange(12)
scores_meta = rope_complex(h_in @ wq.T, pos, theta) @ rope_complex(h_in @ wk.T, pos, theta).T  # (seq, seq)
wq_hf, wk_hf = permute_for_sliced_rotary(wq, 1), permute_for_sliced_rotary(wk, 1)
scores_hf = rope_half(h_in @ wq_hf.T, pos, theta) @ rope_half(h_in @ wk_hf.T, pos, theta).T
err = assert_close(scores_hf, scores_meta, atol=1e-9, rtol=1e-9, name="interleaved vs rotate-half scores")
print(f"attention scores, interleaved (Meta) vs permuted weights + rotate-half (HF): max error {error_bound(err, 1e-12)}")

# %% [markdown]
# ALiBi against MPT's implementation in `transformers`. MPT stores one bias row per head, `m_h (j − (T−1))`,
# and relies on softmax ignoring a constant added to a whole row; so the last query row must match exactly
# and every row must give the same softmax.

# %%
H, T = 8, 10
ours = alibi_bias(H, T)  # (heads, T, T)
mpt = build_mpt_alibi_tensor(H, T)  # (heads, 1, T)
assert_close(ours[:, -1, :], mpt[:, 0, :].float(), atol=1e-7, name="ALiBi last row")
causal = torch.ones(T, T, dtype=torch.bool).tril()
logits = torch.randn(H, T, T, generator=g)
p_ours = torch.softmax((logits + ours).masked_fill(~causal, float("-inf")), dim=-1)
p_mpt = torch.softmax((logits + mpt).masked_fill(~causal, float("-inf")), dim=-1)
err = assert_close(p_ours, p_mpt, atol=1e-6, name="ALiBi attention")
print(f"ALiBi vs transformers MPT: attention probabilities max error {error_bound(err, 1e-12)} (transformers {transformers.__version__})")

# %% [markdown]
# ## Reproduction
#
# ### 1. Scores depend on `n − m` only (RoFormer eq. 16)
#
# Put one query vector at every position `m` and one key vector at every position `n` and form the score
# matrix `S[m, n]`. With RoPE it must be Toeplitz (constant along each diagonal `n − m`). With the additive
# sinusoidal encoding (`shared.rope.sinusoidal_encoding`, Vaswani §3.5) it is not.

# %%
d_small, n_pos = 64, 200
qv, kv = torch.randn(2, d_small, dtype=torch.float64, generator=g)
positions = torch.arange(n_pos)
theta_small = inv_freq_default(d_small)
S_rope = rope_half(qv.expand(n_pos, d_small), positions, theta_small) @ rope_half(kv.expand(n_pos, d_small), positions, theta_small).T
pe = shared_rope.sinusoidal_encoding(n_pos, d_small).double()  # (n_pos, d): sin, cos, sin, cos, ...
S_abs = (qv + pe) @ (kv + pe).T


def toeplitz_gap(S: torch.Tensor) -> float:
    """Largest spread of S along any diagonal n - m (0 for a function of n - m only)."""
    return max((S.diagonal(o).max() - S.diagonal(o).min()).item() for o in range(-S.shape[0] + 1, S.shape[0]))


print(f"RoPE:       max spread along a diagonal {error_bound(toeplitz_gap(S_rope), 1e-12)}  (score range {S_rope.min():.2f} .. {S_rope.max():.2f})")
print(f"sinusoidal: max spread along a diagonal {toeplitz_gap(S_abs):.2f}")

# %% [markdown]
# ### 2. Long-term decay (RoFormer §3.4.3, Fig. 2)
#
# The bound of Derivation §4: `(1/(d/2)) Σ_j |S_j|` against the relative distance, for `d = 128`,
# `b = 10⁴`.

# %%
dist = torch.arange(0, 1001, dtype=torch.float64)
theta = inv_freq_default(128)
S_partial = torch.cumsum(torch.exp(1j * dist[:, None] * theta), dim=1)  # S_j for j = 1..d/2: (dist, d/2)
bound = S_partial.abs().mean(dim=1)  # (dist,)
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(dist.numpy(), bound.numpy())
ax.set(xlabel="relative distance |m − n|", ylabel="(1/(d/2)) Σ_j |S_j|", title="RoPE long-term decay, d = 128")
plt.show()
print("bound at distance 0, 10, 100, 1000:", [round(bound[i].item(), 1) for i in (0, 10, 100, 1000)])

# %% [markdown]
# ### 3. Past the trained length: vanilla vs PI vs NTK vs YaRN on a tiny model
#
# **Task.** Random tokens from a vocabulary of 16; the target at position `t` is the token at `t − 5` (a
# "lag-5 copy"). It needs precise *local* position (fast pairs) and nothing else, which is the case PI
# handles worst and YaRN §3.1–3.2 argue about. **Model.** One attention layer, 2 heads of `d = 16`
# (8 rotation pairs), RoPE with `b = 10⁴` on `q` and `k`, an embedding and an output layer. **Training.**
# Length `L = 64`, 300 Adam steps, three seeds. **Evaluation.** Lengths `T = L, 2L, 4L, 8L` with each recipe at
# `s = T/L` (the smallest stretch that maps `T` into the trained range, as Dynamic NTK would choose), *no
# fine-tuning*, accuracy on the positions beyond `L`.

# %%
class TinyRoPEAttention(torch.nn.Module):
    """Embedding -> one causal RoPE attention layer (2 heads) -> logits. x: (batch, seq) -> (batch, seq, vocab)."""

    def __init__(self, vocab: int = 16, dim: int = 32, heads: int = 2):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.emb = torch.nn.Embedding(vocab, dim)
        self.q, self.k, self.v = (torch.nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.out = torch.nn.Linear(dim, vocab)

    def project(self, h: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
        b, t, _ = h.shape
        return layer(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (batch, heads, seq, head_dim)

    def forward(self, x: torch.Tensor, inv_freq: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        cos, sin = shared_rope.rope_cos_sin(torch.arange(x.shape[1], device=x.device), inv_freq.to(x.device), scale=scale)
        h = self.emb(x)  # (batch, seq, dim)
        q = shared_rope.apply_rope(self.project(h, self.q), cos, sin)
        k = shared_rope.apply_rope(self.project(h, self.k), cos, sin)
        a = F.scaled_dot_product_attention(q, k, self.project(h, self.v), is_causal=True)  # (batch, heads, seq, hd)
        return self.out(a.transpose(1, 2).flatten(2))


VOCAB, LAG, L_TRAIN, STEPS, SEEDS = 16, 5, 64, 300, (0, 1, 2)
RECIPES = {"vanilla": "default", "PI": "linear", "NTK-aware": "ntk", "YaRN": "yarn"}
EVAL_LENGTHS = [L_TRAIN, 2 * L_TRAIN, 4 * L_TRAIN, 8 * L_TRAIN]
head_dim = 16
inv_freq_train, _ = shared_rope.rope_init("default", head_dim)  # plain RoPE during training

# %% [markdown]
# Three models (seeds 0, 1, 2), each trained for 300 steps on batches of 32 sequences of length 64, to
# predict `x[t − 5]` at every position `t ≥ 5`.

# %% tags=["nbval-ignore-output"]
models, final_losses = {}, {}
progress = tqdm(total=len(SEEDS) * STEPS, desc="train at L=64")
for seed in SEEDS:
    seed_everything(seed)
    model = TinyRoPEAttention(VOCAB).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    data_gen = torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        x = torch.randint(0, VOCAB, (32, L_TRAIN), generator=data_gen).to(device)  # (batch, L)
        logits = model(x, inv_freq_train)  # (batch, L, vocab)
        loss = F.cross_entropy(logits[:, LAG:].reshape(-1, VOCAB), x[:, :-LAG].reshape(-1))  # predict x[t - 5]
        opt.zero_grad()
        loss.backward()
        opt.step()
        progress.update()
    models[seed], final_losses[seed] = model, loss.item()
progress.close()

# %% [markdown]
# Evaluation: 256 fresh sequences per length, each recipe at `s = T/L`. The table gives the accuracy on the
# positions past `L` (all positions for `T = L`), as the mean over the 3 seeds and, in brackets, the lowest
# and highest seed.

# %%
print("every final training loss below 1e-3:", all(v < 1e-3 for v in final_losses.values()))


@torch.no_grad()
def per_position_accuracy(model: TinyRoPEAttention, kind: str, T: int) -> torch.Tensor:
    """Accuracy at each position t >= LAG over 256 fresh sequences of length T, recipe at s = T/L. -> (T - LAG,)."""
    x = torch.randint(0, VOCAB, (256, T), generator=torch.Generator().manual_seed(1)).to(device)
    inv_freq, scale = shared_rope.rope_init(
        kind, head_dim, factor=T / L_TRAIN, original_max_position_embeddings=L_TRAIN
    )
    pred = model(x, inv_freq, scale)[:, LAG:].argmax(-1)  # (batch, T - LAG)
    return (pred == x[:, :-LAG]).float().mean(0).cpu()


acc = {  # acc[name][T]: (seeds, T - LAG) per-position accuracy
    name: {T: torch.stack([per_position_accuracy(models[sd], kind, T) for sd in SEEDS]) for T in EVAL_LENGTHS}
    for name, kind in RECIPES.items()
}
print("accuracy past L, mean over 3 seeds [min, max]; chance is 1/16 = 0.06")
print(f"{'recipe':10s}" + "".join(f"{f'T={T}':>18s}" for T in EVAL_LENGTHS))
for name in RECIPES:
    cells = []
    for T in EVAL_LENGTHS:
        per_seed = acc[name][T][:, (L_TRAIN - LAG) if T > L_TRAIN else 0 :].mean(1)  # (seeds,)
        cells.append(f"{per_seed.mean():.2f} [{per_seed.min():.2f}, {per_seed.max():.2f}]")
    print(f"{name:10s}" + "".join(f"{c:>18s}" for c in cells))

# %% [markdown]
# Top: accuracy along the sequence at `T = 4L = 256` (mean over seeds and sequences, in bins of 8
# positions). Bottom, to see *why*: the attention logit of the last query against each earlier key, by
# distance, for head 0 of the seed-0 model (mean over the sequences). The dashed line is the logit at the
# trained peak, distance 5; red dots mark distances whose logit beats it, i.e. keys that steal attention.

# %%
@torch.no_grad()
def logit_by_distance(model: TinyRoPEAttention, kind: str, T: int) -> torch.Tensor:
    """Mean pre-softmax logit of the last query against keys at distance 0..T-1, head 0. -> (T,)."""
    x = torch.randint(0, VOCAB, (256, T), generator=torch.Generator().manual_seed(2)).to(device)
    inv_freq, scale = shared_rope.rope_init(
        kind, head_dim, factor=T / L_TRAIN, original_max_position_embeddings=L_TRAIN
    )
    cos, sin = shared_rope.rope_cos_sin(torch.arange(T, device=device), inv_freq.to(device), scale=scale)
    h = model.emb(x)  # (batch, T, dim)
    q = shared_rope.apply_rope(model.project(h, model.q), cos, sin)[:, 0, -1]  # (batch, hd): last query, head 0
    k = shared_rope.apply_rope(model.project(h, model.k), cos, sin)[:, 0]  # (batch, T, hd)
    return (torch.einsum("bd,btd->bt", q, k) / math.sqrt(head_dim)).mean(0).flip(0).cpu()  # index = distance


T_PLOT = 4 * L_TRAIN
logits_by = {name: logit_by_distance(models[0], kind, T_PLOT) for name, kind in RECIPES.items()}
fig = plt.figure(figsize=(11, 6), layout="constrained")
grid = fig.add_gridspec(2, len(RECIPES))
ax_acc = fig.add_subplot(grid[0, :])
for name in RECIPES:
    a = acc[name][T_PLOT].mean(0)  # (T - LAG,)
    bins = a[: len(a) // 8 * 8].view(-1, 8).mean(1)
    ax_acc.plot(LAG + 8 * torch.arange(len(bins)) + 4, bins.numpy(), label=name)
ax_acc.axvline(L_TRAIN, color="grey", ls=":", lw=1)
ax_acc.set(xlabel="position t", ylabel="accuracy", title=f"lag-5 copy at T = {T_PLOT}, trained at L = {L_TRAIN} (dotted)")
ax_acc.legend(loc="center left")
for j, (name, lg) in enumerate(logits_by.items()):
    ax = fig.add_subplot(grid[1, j])
    over = (lg > lg[LAG]).nonzero().flatten()  # distances whose logit beats the trained peak
    ax.plot(lg.numpy(), lw=0.8, color=f"C{j}")
    ax.axhline(lg[LAG].item(), color="black", ls="--", lw=0.8)
    ax.scatter(over.numpy(), lg[over].numpy(), color="red", s=8, zorder=3)
    ax.axvline(L_TRAIN, color="grey", ls=":", lw=1)
    ax.set(xlabel="distance to the key", title=name, ylim=(-25, 25))
    if j == 0:
        ax.set_ylabel("logit, last query (head 0)")
plt.show()
for name, lg in logits_by.items():
    over = (lg > lg[LAG]).nonzero().flatten().tolist()
    print(f"{name:10s} logit at distance {LAG}: {lg[LAG]:6.2f}; distances with a higher logit: {over[:8]}"
          + (" ..." if len(over) > 8 else ""))

# %% [markdown]
# **Reading the results against the papers.**
#
# - *Vanilla RoPE* is perfect up to `L` and degrades past it, more the longer the input: the trend of the
#   rotary curve in ALiBi Fig. 1. The logit panel shows the mechanism PI's abstract describes: distances
#   never seen in training (beyond `L = 64`) get logits as high as the trained peak at distance 5, some
#   higher (red), so attention spreads to wrong tokens. Accuracy holds a little past `L` and falls as such
#   distances come into view (the panel shows one head and one query; the other head has its own).
# - *PI without fine-tuning* is at chance past `L` (at `T = L`, `s = 1` changes nothing): dividing positions
#   by `s` moves the learned peak to distance `5s` (its logits peak at 20 for `s = 4`). This is the "loss of
#   relative local distances" of YaRN §3.2 and the motivation of bloc97's post ("it prevents the network to
#   distinguish the order and positions of tokens that are very close by"). The task is PI's worst case,
#   being purely local, and the PI paper never claims training-free use: it fine-tunes (1000 steps, PI §3.1)
#   and reports the fine-tuned models; untuned it notes only "certain language modeling capability" (PI §3.2,
#   Table 3: LLaMA 7B perplexity < 20 at 8192 tokens at step 0, against > 10³ for plain extrapolation). The
#   fine-tuned result is not reproduced here.
# - *NTK-aware* and *YaRN* keep the fast pairs, so the peak stays at distance 5 and accuracy stays well above
#   vanilla at `4L` without any training, in line with the NTK-aware post (its title: LLaMA models reach "8k+
#   context size without any fine-tuning and minimal perplexity degradation"). Both degrade at `8L`. YaRN's
#   main results are *with* fine-tuning (YaRN §4), which this toy does not reproduce; its temperature was
#   fitted on the LLaMA family (YaRN §3.3), and on this toy YaRN is not better than plain NTK-aware at `4L`. Both also
#   lose a little *inside* `L` (top plot, `t < 64`), because the stretched frequencies apply to every
#   position of the sequence; Dynamic NTK (YaRN §3.4) keeps `s = 1` until the input is longer than `L`, so
#   short inputs are untouched.
# - Caveats of scale: this head has 8 pairs and `L = 64`, so the fastest pair turns only `L/(2π) ≈ 10` times
#   and no pair reaches YaRN's `β = 32`; on Llama 2 (`d = 128`, `L = 4096`) 21 pairs do (Walkthrough
#   plot). The seeds disagree in detail (see the brackets): the robust findings are vanilla's drop past
#   `L`, PI's collapse without fine-tuning, and NTK-aware/YaRN beating vanilla on average at `4L` and `8L`.

# %% [markdown]
# ## Misconceptions
#
# - **Claim (seed interview answer): "RoPE extrapolates well because it is a continuous function of position
#   and models relative distance explicitly."** **Correction:** relative ≠ length-generalising. Past the
#   trained length vanilla RoPE degrades: ALiBi Fig. 1 (rotary perplexity rises beyond `L`), PI's abstract
#   ("catastrophically high attention scores"), YaRN's abstract ("fail to generalize past the sequence length
#   they were trained on"), and §Reproduction 3 here. That failure is the reason PI, NTK-aware scaling and
#   YaRN exist.
# - **Claim (seed table): "ALiBi is used by RWKV, Mamba."** **Correction:** ALiBi is Press, Smith and Lewis
#   (ICLR 2022): a per-head linear distance penalty added to attention logits. RWKV and Mamba are recurrent /
#   state-space models without softmax attention, so there is no logit to bias. ALiBi's best-known users are
#   BLOOM and MPT: `transformers` builds it in `models/bloom/modeling_bloom.py` (`build_alibi_tensor`) and
#   `models/mpt/modeling_mpt.py` (`build_mpt_alibi_tensor`, checked above).
# - **Claim (seed table): "Qwen2.5 uses ALiBi plus sliding windows for 256k context."** **Correction:** the
#   Qwen2.5 report (arXiv 2412.15115) lists RoPE with GQA, SwiGLU, QKV bias and RMSNorm in its architecture
#   section (§2); its long-context pre-training (§3.3) raises the RoPE base from 10,000 to 1,000,000 (ABF) at
#   32,768 tokens and adds YaRN and Dual Chunk Attention (DCA) at inference for a four-fold longer context
#   (131,072 tokens; 1M for the API model Qwen2.5-Turbo). The cell below shows that `transformers`' Qwen2
#   architecture (which Qwen2.5 checkpoints load into) builds a rotary embedding and no ALiBi.
# - **Claim (seed table): "NTK-aware RoPE comes from GPT-4-related speculation."** **Correction:** it is a
#   June 2023 Reddit post by bloc97 (credited as such in YaRN §1 and §3.1, whose first author, Bowen Peng, is
#   bloc97); YaRN §1 notes its use in Code Llama, and Dynamic NTK's in Qwen 7B.
# - **Claim: "interleaved and rotate-half RoPE are different encodings, so Meta and HF Llama weights are
#   incompatible."** **Correction:** same function up to a permutation of dims (Derivation §3); the HF
#   converter permutes the `W_q`/`W_k` rows once and the scores are identical (checked above: equal to float64 rounding, error below 1e-12).
# - **Claim: "YaRN multiplies the logits by `0.1 ln s + 1`."** **Correction:** `0.1 ln s + 1` is `√(1/t)`
#   and multiplies cos and sin, i.e. both `q` and `k`; the logits get `(0.1 ln s + 1)²` (YaRN §3.3). The
#   authors' own errata (`Errata.md` in jquesnelle/yarn) note that the early preprint had the temperature
#   inverted (`√t` for `√(1/t)`).
# - **Claim: "PI extends the context without training."** **Correction:** PI fine-tunes (within 1000 steps,
#   PI abstract); untuned, the paper reports only "certain language modeling capability" (PI §3.2, Table 3),
#   and on a purely local task it destroys local resolution (§Reproduction 3: chance accuracy).

# %%
import inspect

from transformers.models.qwen2 import modeling_qwen2

source = inspect.getsource(modeling_qwen2)
print("Qwen2 modeling has Qwen2RotaryEmbedding:", hasattr(modeling_qwen2, "Qwen2RotaryEmbedding"),
      "| mentions 'alibi':", "alibi" in source.lower())

# %% [markdown]
# ## Exercises
#
# 1. **Which pairs never turn once during pretraining?** For a head with `d = 128` and Llama 3's base
#    `b = 500 000`, trained at `L = 4096`, how many of the 64 pairs have a wavelength longer than `L`?
#    Compute it by hand from `λ_i = 2π b^{2i/d} > L`, then fill in `answer_1`. (The Walkthrough printed the
#    answer for `b = 10⁴`.)
# 2. **NTK at the ends.** Show from `b' = b s^{d/(d−2)}` that `θ'_0 = θ_0` and `θ'_{d/2−1} = θ_{d/2−1}/s`.
#    What is `θ'_{d/2−1}/θ_{d/2−1}` for `d = 128`, `s = 8`? Fill in `answer_2`.
# 3. **YaRN's temperature.** For `s = 16`, by what factor does YaRN multiply the attention logits?
#    Fill in `answer_3` (3 decimals are enough).
# 4. **Open question.** In §Reproduction 3, fine-tune a copy of `models[0]` for 50 steps at `T = 4L` with PI
#    (`s = 4`) and another with vanilla RoPE, and compare their accuracy at `4L`. Does PI's fast adaptation
#    ("within 1000 steps", PI abstract) show up on this task? Why might a purely local task be a poor test
#    of it?

# %%
answer_1 = None  # number of pairs with wavelength > 4096
answer_2 = None  # theta'_{63} / theta_{63} for d = 128, s = 8
answer_3 = None  # logit multiplier for s = 16

theta = inv_freq_default(128)
checks = {
    "1": (answer_1, int((2 * math.pi / inv_freq_default(128, 500_000.0) > 4096).sum())),
    "2": (answer_2, (inv_freq_ntk(128, 1e4, 8.0) / theta)[-1].item()),
    "3": (answer_3, (0.1 * math.log(16) + 1) ** 2),
}
for name, (given, expected) in checks.items():
    if given is None:
        print(f"exercise {name}: not answered yet")
    else:
        print(f"exercise {name}:", "correct" if abs(given - expected) < 1e-3 * max(1.0, abs(expected)) else "not quite, try again")

# %% [markdown]
# ## References
#
# - J. Su, Y. Lu, S. Pan, A. Murtadha, B. Wen, Y. Liu. *RoFormer: Enhanced Transformer with Rotary Position
#   Embedding.* arXiv:2104.09864 (2021); Neurocomputing 568 (2024). Code:
#   [ZhuiyiTechnology/roformer](https://github.com/ZhuiyiTechnology/roformer).
# - S. Chen, S. Wong, L. Chen, Y. Tian. *Extending Context Window of Large Language Models via Positional
#   Interpolation.* arXiv:2306.15595 (2023).
# - bloc97. *NTK-Aware Scaled RoPE allows LLaMA models to have extended (8k+) context size without any
#   fine-tuning and minimal perplexity degradation.* r/LocalLLaMA, June 2023.
#   [Link](https://www.reddit.com/r/LocalLLaMA/comments/14lz7j5/ntkaware_scaled_rope_allows_llama_models_to_have/).
# - B. Peng, J. Quesnelle, H. Fan, E. Shippole. *YaRN: Efficient Context Window Extension of Large Language
#   Models.* ICLR 2024, arXiv:2309.00071 (section numbers as in v3). Code and errata:
#   [jquesnelle/yarn](https://github.com/jquesnelle/yarn).
# - O. Press, N. A. Smith, M. Lewis. *Train Short, Test Long: Attention with Linear Biases Enables Input
#   Length Extrapolation.* ICLR 2022, arXiv:2108.12409. Code:
#   [ofirpress/attention_with_linear_biases](https://github.com/ofirpress/attention_with_linear_biases).
# - A. Vaswani et al. *Attention Is All You Need.* NeurIPS 2017, arXiv:1706.03762 (§3.5, sinusoidal encoding).
# - Qwen Team. *Qwen2.5 Technical Report.* arXiv:2412.15115 (2024).
# - Reference implementation used in the checks: `transformers` 5.23.0,
#   `transformers.models.llama.modeling_llama` (`LlamaRotaryEmbedding`, `apply_rotary_pos_emb`),
#   `transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS` (`"linear"`, `"dynamic"`, `"yarn"`),
#   `transformers.models.mpt.modeling_mpt.build_mpt_alibi_tensor`; the course's `shared.rope`
#   (tested against the same functions in `tests/test_rope.py`).
