# ---
# jupyter:
#   course:
#     cpu_seconds: 63
#     id: F2
#     papers:
#     - arxiv: '2104.09864'
#       title: 'RoFormer: Enhanced Transformer with Rotary Position Embedding'
#       version: v5
#     - arxiv: '2306.15595'
#       title: Extending Context Window of Large Language Models via Positional Interpolation
#       version: v2
#     - arxiv: null
#       title: NTK-Aware Scaled RoPE allows LLaMA models to have extended (8k+) context
#         size without any fine-tuning and minimal perplexity degradation
#       url: https://www.reddit.com/r/LocalLLaMA/comments/14lz7j5/ntkaware_scaled_rope_allows_llama_models_to_have/
#     - arxiv: null
#       title: Dynamically Scaled RoPE further increases performance of long context
#         LLaMA with zero fine-tuning
#       url: https://www.reddit.com/r/LocalLLaMA/comments/14mrgpr/dynamically_scaled_rope_further_increases/
#     - arxiv: '2309.00071'
#       title: 'YaRN: Efficient Context Window Extension of Large Language Models'
#       version: v2
#     - arxiv: '2108.12409'
#       title: 'Train Short, Test Long: Attention with Linear Biases Enables Input Length
#         Extrapolation'
#       version: v2
#     - arxiv: '2407.21783'
#       title: The Llama 3 Herd of Models
#       version: v3
#     part: foundations
#     peak_memory_mb: 985
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
# [![Open In Colab](../../docs/img/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/foundations/F2_positional_encodings.ipynb)
#
# **Papers** (the arXiv version whose section, equation and figure numbers this reading cites):
# Su, Lu, Pan, Murtadha, Wen, Liu, *RoFormer: Enhanced Transformer with Rotary Position Embedding*,
# Neurocomputing 2024, [arXiv:2104.09864 v5](https://arxiv.org/abs/2104.09864v5) ·
# Chen, Wong, Chen, Tian, *Extending Context Window of Large Language Models via Positional Interpolation*
# (PI), 2023, [arXiv:2306.15595 v2](https://arxiv.org/abs/2306.15595v2) ·
# bloc97, *NTK-Aware Scaled RoPE allows LLaMA models to have extended (8k+) context size without any
# fine-tuning and minimal perplexity degradation*, r/LocalLLaMA, June 2023
# ([post](https://www.reddit.com/r/LocalLLaMA/comments/14lz7j5/ntkaware_scaled_rope_allows_llama_models_to_have/);
# YaRN ref. [6]) · emozilla, *Dynamically Scaled RoPE further increases performance of long context LLaMA
# with zero fine-tuning*, r/LocalLLaMA, 2023
# ([post](https://www.reddit.com/r/LocalLLaMA/comments/14mrgpr/dynamically_scaled_rope_further_increases/);
# YaRN ref. [14], "It first appeared in public as a reddit post") ·
# Peng, Quesnelle, Fan, Shippole, *YaRN: Efficient Context Window Extension of Large Language Models*,
# ICLR 2024, [arXiv:2309.00071 v2](https://arxiv.org/abs/2309.00071v2) (Nov 2023; the same PDF the authors
# committed as [`paper/yarn.pdf`](https://github.com/jquesnelle/yarn/blob/70d45d3a23e3eeda90f7bdd04b0d5051e7145171/paper/yarn.pdf);
# later arXiv versions may number sections differently: the numbers here are v2's) ·
# Press, Smith, Lewis, *Train Short, Test Long: Attention with Linear Biases Enables Input Length
# Extrapolation* (ALiBi), ICLR 2022, [arXiv:2108.12409 v2](https://arxiv.org/abs/2108.12409v2)
#
# **Official code:** [ZhuiyiTechnology/roformer](https://github.com/ZhuiyiTechnology/roformer) ·
# [jquesnelle/yarn](https://github.com/jquesnelle/yarn) (NTK-aware, Dynamic NTK, YaRN) ·
# [ofirpress/attention_with_linear_biases](https://github.com/ofirpress/attention_with_linear_biases)
#
# **Prerequisites:** [F1 · The Transformer](../../docs/syllabus.md#f1) (not yet written; its syllabus entry) (attention, the sinusoidal encoding).
# **Next:** 2D RoPE and M-RoPE for images and video in [V6 · Qwen2-VL](../vlm/V6_qwen2_vl.ipynb).
#
# **CPU run time:** 63 s on a 2-core CPU (measured by `make run`, which rewrites this number)
#
# **Peak memory:** 985 MB

# %% [markdown]
# ## TL;DR
#
# - **RoPE** rotates pair `i` of `q` and `k` by `m·θ_i`, `θ_i = b^{−2i/d}`, so `q_m·k_n` depends on `n − m` only (RoFormer v5 eq. 16): the sinusoidal encoding's shift property, applied multiplicatively.
# - **Past the trained length `L`** the slow pairs reach unseen angles. **PI** divides every `θ_i` by `s = L'/L`; **NTK-aware** raises the base to `b·s^{d/(d−2)}`; **YaRN** ramps each pair, by its turns `r_i` over `L`, between `θ_i` and `θ_i/s` (`γ(r) = (r−α)/(β−α)`, eq. 18) and scales cos/sin by `√(1/t) = 0.1 ln s + 1` (eq. 22, a fit); Llama 3.1's `llama3` is that ramp with `β = 4` and no temperature.
# - **Papers' evidence, all fine-tuned:** PI takes LLaMA 7B from 2K to 32K in 1,000 steps (PG-19 perplexity 6.77 at 32K, v2 Table 1); at `s = 2` YaRN matches PI with 2.5× fewer tokens (3.35 vs 3.34, YaRN v2 Table 1) and at `s = 32` reaches 128K (Table 2).
# - **Toy** (one attention layer trained at `L = 64`, 8 seeds, no fine-tuning, two head splits): vanilla RoPE holds to `2L`–`4L`, then falls (0.58 and 0.72 at `8L`); YaRN beats vanilla and PI at `8L`; its temperature moves accuracy there by 0.02 or less on average (asserted within 0.03); ALiBi stays flat from a lower start, on a task that needs only the last few tokens.

# %% [markdown]
# ## 中文速览
#
# - **RoPE** 把 `q`、`k` 的第 `i` 对维度旋转 `m·θ_i`（`θ_i = b^{−2i/d}`），于是 `q_m·k_n` 只依赖 `n − m`（RoFormer v5 式 16）：即正弦位置编码的平移性质，改为乘在 `q`、`k` 上。
# - **超过训练长度 `L`** 后，慢维度对转到未见过的角度。**PI** 把所有 `θ_i` 除以 `s = L'/L`；**NTK-aware** 把底数改为 `b·s^{d/(d−2)}`；**YaRN** 按每对在 `L` 内的圈数 `r_i` 在 `θ_i` 与 `θ_i/s` 之间做斜坡（`γ(r) = (r−α)/(β−α)`，式 18），并把 cos/sin 乘以 `√(1/t) = 0.1 ln s + 1`（式 22，拟合所得）；Llama 3.1 的 `llama3` 是 `β = 4`、无温度的同一斜坡。
# - **论文证据（均经微调）：** PI 用 1000 步把 LLaMA 7B 从 2K 扩到 32K（PG-19 困惑度 32K 处 6.77，v2 表 1）；`s = 2` 时 YaRN 用少 2.5 倍的 token 追平 PI（3.35 对 3.34，YaRN v2 表 1），`s = 32` 时达到 128K（表 2）。
# - **小实验**（单层注意力，在 `L = 64` 上训练，8 个种子，不微调，两种头划分）：原始 RoPE 撑到 `2L`–`4L` 后下降（`8L` 处 0.58 与 0.72）；`8L` 处 YaRN 优于原始 RoPE 和 PI；其温度对 `8L` 准确率的平均影响不超过 0.02（断言在 0.03 之内）；ALiBi 不随长度下降，但起点更低，而且该任务只需要最近几个 token。

# %% [markdown]
# ## Setup
#
# The first cell installs the course helper on Colab only (CI skips it). The next imports, seeds and picks
# the device. Everything runs on a CPU in under a minute.

# %% tags=["nbval-skip"]
# Colab only: install the course helper package with its pinned versions. CI skips this cell.
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         "vlm-llm-course[notebooks] @ git+https://github.com/open-vlm-course/vlm-llm-course@main"],
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
# then contains content–position cross terms, and relative position is only implicit. RoFormer (v5 §3.1,
# eq. 11) asks instead for query/key maps `f_q(x_m, m)`, `f_k(x_n, n)` whose inner product is a function
# `g(x_m, x_n, m − n)` of the contents and the *relative* position only.
#
# **Relative does not mean "works at any length".** RoFormer's abstract (v5) lists "the flexibility of
# sequence length" among RoPE's properties, but a model only ever trains on distances below its context
# length `L`:
#
# - ALiBi v2, Fig. 1: language models trained on WikiText-103 with `L = 512` or `1024` and evaluated on
#   longer inputs; "current position methods (sinusoidal, rotary, and T5) show degraded perplexity", ALiBi
#   does not.
# - PI v2, §2.2: extrapolating LLaMA past `L = 2048`, "the perplexity may shoot up to very high numbers
#   (i.e., >10³), comparable to untrained models"; Fig. 2 shows why (reproduced in the Walkthrough), and
#   Theorem 2.1 bounds interpolation "at least ∼600× smaller than" RoFormer's extrapolation bound.
# - YaRN v2, abstract: RoPE models "fail to generalize past the sequence length they were trained on".
#
# **What the papers' fixes buy, with fine-tuning** (the papers' own key numbers; sliding-window perplexity
# with stride `S = 256`, lower is better):
#
# | source | setting | result |
# |---|---|---|
# | PI v2 Table 1 (PG-19, 100 test books) | LLaMA 7B, `L = 2048`; PI fine-tuned 1,000 steps to 32,768 | original: 7.20 at 2,048, >10³ at 4,096 and beyond; PI: 7.23 / 6.91 / 6.77 at 2,048 / 8,192 / 32,768 |
# | PI v2 Table 3 (PG-19) | LLaMA 7B, PI to 8,192, by fine-tuning step | 16.10 at step 0 (no fine-tuning), 7.12 at 200, 6.95 at 1,000 |
# | PI v2 Table 4 (passkey; `k_max`, the largest distance `k` with at least 20 % retrieval success at every `k′ ≤ k`, §3.3) | LLaMA 7B to 8,192 | PI: 8,192 after 200 steps; direct fine-tuning (FT): 2,560 after 10,000 |
# | YaRN v2 Table 1 (Proof-pile, 10 documents) | Llama 2 7B, 4,096 → 8,192 (`s = 2`) | at 8,192: PI (1B tokens) 3.34, NTK-aware (base 20k, 1B) 3.59, YaRN (400M) 3.35; at 10,240, past the fine-tuned 8K: 8.07 / 6.24 / 6.04 |
# | YaRN v2 Table 2 (same documents) | Llama 2 7B, `s = 32`, fine-tuned on 64K sequences only (§4.2) | YaRN 3.56 at 8,192 and 2.37 at 131,072; Together's 32K PI model >10⁴ and Code Llama (NTK-aware) 2.71 at 131,072 |
#
# Passkey retrieval of the `s = 32` YaRN model: "very high accuracy (> 99%) within the entire context
# window size" up to 128K (YaRN v2 §4.3.2). YaRN's abstract credits it with "10x less tokens and 2.5x less
# training steps than previous methods": §4 puts the 10× against Code Llama and the 2.5× against PI, and
# Table 1 is the like-for-like comparison behind the latter ("the same methodology but 2.5x less training
# steps and data", §4.3.1).
#
# **YaRN's fine-tuning recipe** (YaRN v2 §4.1–4.2), what a reproduction needs:
#
# - *Models and change.* Llama 2 7B and 13B; nothing in the architecture changes but the embedding
#   frequencies (YaRN as in §3.4, with `s = 16` and `s = 32`).
# - *Optimiser.* AdamW with betas 0.9 and 0.95, learning rate 2×10⁻⁵, no weight decay, a linear warm-up
#   of 20 steps.
# - *`s = 16`.* 400 steps at global batch size 64 on PG19 chunked into 64K-token segments, each bookended
#   with the BOS and EOS tokens (400 × 64 × 64K ≈ 1.6–1.7 billion tokens).
# - *`s = 32`.* The same procedure started from the finished `s = 16` checkpoint, for 200 more steps on the
#   same 64K data. That model extrapolates to 128K without seeing such lengths in training, which §4.2
#   calls transfer learning: "the s = 32 model is equivalent to the s = 16 model across the entire context
#   size".
# - *Cost.* §4: the 400 steps represent "approximately 0.1% of the model's original pre-training corpus".
#
# **What the extension costs inside the original window** (the papers' own numbers, after fine-tuning):
#
# - PI v2 §3.2: on Proof-pile at 2,048 tokens, "a degradation ranging from 0.01 to 0.05" in perplexity for
#   all PI-extended models. §3.4 and Table 5 (zero-shot benchmarks within 2,048 tokens): "a degradation of
#   up to 2%" for the models extended to 8,192, though the table's 7B model fine-tuned on the Pile loses
#   2.9 points on BoolQ (76.1 → 73.2). Longer extensions lose more, most on BoolQ: 69.8 at 16K and 64.7 at
#   32K.
# - YaRN v2 §4.3.3 and Table 3 (ARC-c / HellaSwag / MMLU / TruthfulQA of the Open LLM benchmarks): Llama 2
#   7B scores 53.1 / 77.8 / 43.8 / 39.0, YaRN `s = 32` (128K) 52.1 / 78.4 / 41.7 / 37.3; on 13B, MMLU falls
#   from 55.8 to 51.9. The paper calls this "minimal performance degradation".
#
# Training at the long length from the start costs attention's quadratic price on every step, so in
# practice models are pretrained short (Llama 3: 8K tokens, then a continued pre-training stage to 128K,
# Llama 3 report arXiv 2407.21783 §2; in the 405B recipe even the 8K stage starts shorter, with sequences
# of 4,096 tokens for the first 252M tokens, §3.4.1, and §3.4 says the 8B and 70B models follow "similar
# recipes"; Qwen2.5: 4,096, then 32,768, report arXiv 2412.15115 §3.3) and
# extended afterwards. This reading derives RoPE from the sinusoidal encoding, then the extension recipes
# (PI, NTK-aware, Dynamic NTK, YaRN) and ALiBi, implements all of them next to their derivations, checks them
# against `transformers` and against the papers' own equations, and watches them hold or fail on a tiny
# model.

# %% [markdown]
# ## Derivations
#
# ### 1. From the sinusoidal encoding to a rotation
#
# The sinusoidal encoding (Vaswani §3.5) is `PE[pos, 2i] = sin(pos·ω_i)`, `PE[pos, 2i+1] = cos(pos·ω_i)`,
# `ω_i = 10000^{−2i/d}`. Vaswani et al. chose it because "for any fixed offset k, PE_{pos+k} can be
# represented as a linear function of PE_pos". The angle-addition formulas give that linear map:
#
# $$\begin{pmatrix}\sin((p+k)\omega)\\ \cos((p+k)\omega)\end{pmatrix} =
#   \underbrace{\begin{pmatrix}\cos k\omega & \sin k\omega\\ -\sin k\omega & \cos k\omega\end{pmatrix}}_{M_k}
#   \begin{pmatrix}\sin p\omega\\ \cos p\omega\end{pmatrix},$$
#
# a 2×2 rotation (by `−kω`) per pair that depends on the offset `k` only, not on `p`. The next cell builds
# `M_k` from this formula and compares `M_k · PE[p]` with the encoding evaluated directly at `p + k`
# (`shared.rope.sinusoidal_encoding`).

# %%
def shift_matrix(k: int, d: int, base: float = 10000.0) -> torch.Tensor:
    """M_k: block-diagonal [[cos kw, sin kw], [-sin kw, cos kw]] acting on (sin, cos) pairs. -> (d, d) float64."""
    w = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # omega_i: (d/2,)
    c, s = torch.cos(k * w), torch.sin(k * w)
    return torch.block_diag(*[torch.tensor([[ci, si], [-si, ci]], dtype=torch.float64) for ci, si in zip(c.tolist(), s.tolist(), strict=True)])


d_pe, k_shift = 16, 7
pe = shared_rope.sinusoidal_encoding(64 + k_shift, d_pe).double()  # (positions, d): sin, cos, sin, cos, ...
M = shift_matrix(k_shift, d_pe)
err = assert_close(pe[:64] @ M.T, pe[k_shift:], atol=1e-5, rtol=0.0, name="PE(p+k) = M_k PE(p)")
print(f"PE(p + {k_shift}) vs M_{k_shift} · PE(p) for p = 0..63: max error {error_bound(err, 1e-6)} (float32 encoding)")
print(f"M_k is orthogonal: |M_k^T M_k - I| {error_bound((M.T @ M - torch.eye(d_pe, dtype=torch.float64)).abs().max().item(), 1e-12)}")

# %% [markdown]
# Added to the input, this structure is mixed with content by `W_q`, `W_k` and the cross terms. RoFormer's
# step is to *multiply* instead: rotate `q` by the rotation of position `m` and `k` by that of `n`. Because
# rotations compose, only the rotation by `n − m` survives in `qᵀk`:
#
# ### 2. Two dimensions: a rotation, or a complex phase
#
# Read a 2D query `q = W_q x_m` as a complex number `q = q₁ + i q₂` and set `f_q(x_m, m) = q e^{i m θ}`,
# `f_k(x_n, n) = k e^{i n θ}` (RoFormer v5 §3.2.1). The real dot product of two 2D vectors is
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
# ### 3. `d` dimensions: one rotation per pair
#
# Split the `d` dims into `d/2` pairs and rotate pair `i` by `m θ_i`, `θ_i = b^{−2i/d}`,
# `i = 0 … d/2 − 1`, base `b = 10000` (RoFormer v5 §3.2.2 writes `θ_i = 10000^{−2(i−1)/d}` with `i` from 1).
# `R^d_{Θ,m}` is block diagonal, each block a 2D rotation, so block by block the same identity gives
# `q_mᵀ k_n = (R^d_{Θ,m} W_q x_m)ᵀ (R^d_{Θ,n} W_k x_n) = x_mᵀ W_qᵀ R^d_{Θ,n−m} W_k x_n` (RoFormer eq. 16).
# The cell builds `R^d_{Θ,m}` block by block and compares `R_3ᵀ R_10` with `R_7` built directly.

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
err = (R[3].T @ R[10] - R[7]).abs().max().item()  # a property of the derivation, printed (not a reference check)
print(f"max |R_3^T R_10 - R_7| {error_bound(err, 1e-12)}")

# %% [markdown]
# The complex form of §2 for all pairs at once: read interleaved pairs `(x_{2i}, x_{2i+1})` as complex
# numbers and multiply by `e^{i m θ_i}`; it must equal the block matrix applied row by row.

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
err = assert_close(rope_complex(x, pos, theta), by_matrix, atol=1e-12, rtol=0.0, name="complex vs matrix")
print(f"complex form vs block matrix: {error_bound(err, 1e-12)}")

# %% [markdown]
# ### 4. The cheap form and the two layouts
#
# The block matrix is never built: `R x = x ⊙ cos + turn(x) ⊙ sin` where `turn` maps each pair `(a, b)` to
# `(−b, a)` (RoFormer v5 §3.4.2). Where the two members of a pair live in memory is a convention:
#
# - **interleaved** (RoFormer, GPT-J, Meta's original Llama code): pair `i` is dims `(2i, 2i+1)`;
# - **rotate-half** (GPT-NeoX, `transformers`' Llama/Qwen): pair `i` is dims `(i, i + d/2)`.
#
# With the permutation `P` that lists even dims then odd dims, `RoPE_half(P x) = P · RoPE_interleaved(x)`.
# `P` is orthogonal, so permuting the output rows of `W_q` and `W_k` by `P` gives *identical* attention
# scores. That is exactly what `transformers`' Llama checkpoint converter does ("permute for sliced rotary"
# in `models/llama/convert_llama_weights_to_hf.py` of the GitHub repository; the script is not in the pip
# wheel; checked in §Check). The cell implements rotate-half with an optional `scale` on cos and sin
# (YaRN's `√(1/t)`, Walkthrough §5) and checks the permutation identity.

# %%
def rope_half(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Rotate-half RoPE: pair i is dims (i, i + d/2). x: (..., seq, d), positions: (seq,) -> (..., seq, d)."""
    angles = positions.double()[:, None] * inv_freq  # (seq, d/2)
    cos, sin = angles.cos().repeat(1, 2) * scale, angles.sin().repeat(1, 2) * scale  # (seq, d)
    x1, x2 = x.chunk(2, dim=-1)  # (..., seq, d/2) each
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


P = torch.cat((torch.arange(0, 8, 2), torch.arange(1, 8, 2)))  # even dims, then odd dims
err = assert_close(rope_half(x[:, P], pos, theta), rope_complex(x, pos, theta)[:, P], atol=1e-12, rtol=0.0, name="layouts")
print(f"rope_half(x[:, P]) vs rope_complex(x)[:, P]: {error_bound(err, 1e-12)}")

# %% [markdown]
# ### 5. Wavelengths, and which pairs see a full turn in training
#
# Pair `i` has wavelength `λ_i = 2π/θ_i = 2π b^{2i/d}` tokens, from `2π ≈ 6.3` (fast pairs, local detail)
# up to `2π b^{(d−2)/d}` (slow pairs, coarse position). Over the trained length `L` it turns
# `r_i = L/λ_i` times (YaRN v2 eq. 17). Pairs with `λ_i > L` never complete a turn in training: they
# have only seen a slice of the circle, and past `L` they produce angles never seen. Raising the base
# (Llama 3's 500,000, "Xiong et al. (2023) showed this value to be effective for context lengths up to
# 32,768", Llama 3 report §3.2; Qwen2.5's 1,000,000 "using the ABF technique", Qwen2.5 report §3.3) slows
# every pair down. The plot shows `λ_i` for `d = 128` and three bases with the length each was
# (pre-)trained at: Llama 2 `b = 10⁴` at 4,096; Llama 3 `b = 5·10⁵` at 8,192 (before its long-context
# stage); Qwen2.5 `b = 10⁶` at 32,768 (its long-context pre-training stage).

# %%
d_model_head = 128
settings = {"Llama 2 (b=1e4, L=4096)": (1e4, 4096), "Llama 3 (b=5e5, L=8192)": (5e5, 8192),
            "Qwen2.5 (b=1e6, L=32768)": (1e6, 32768)}
fig, ax = plt.subplots(figsize=(7, 3.4))
for j, (label, (base_j, L_j)) in enumerate(settings.items()):
    wavelength = 2 * math.pi / inv_freq_default(d_model_head, base_j)  # (64,) tokens per turn
    ax.semilogy(wavelength.numpy(), color=f"C{j}", label=label)
    ax.axhline(L_j, color=f"C{j}", ls=":", lw=1)
ax.set(xlabel="pair index i (fast → slow)", ylabel="wavelength λ_i (tokens)",
       title="RoPE wavelengths, d = 128 (dotted: trained length)")
ax.legend(fontsize=8)
plt.show()
wavelength = 2 * math.pi / inv_freq_default(d_model_head, 1e4)
print(f"b = 1e4: wavelengths {wavelength[0]:.1f} .. {wavelength[-1]:.0f} tokens; "
      f"pairs with λ_i > 4096 (never a full turn at L = 4096): {int((wavelength > 4096).sum())} of 64")

# %% [markdown]
# ### 6. Long-term decay (RoFormer v5 §3.4.3), with the Abel summation written out
#
# Write the score in complex form, `qᵀR_{n−m}k = Re Σ_{i=0}^{d/2−1} h_i e^{iΔθ_i}` with `Δ = m − n` and
# `h_i = q_[2i:2i+1] k*_[2i:2i+1]` the product of the `i`-th pairs read as complex numbers (RoFormer writes
# the sum with `e^{i(m−n)θ_i}`). Define the partial sums `S_j = Σ_{i<j} e^{iΔθ_i}`, so `S_0 = 0` and
# `e^{iΔθ_i} = S_{i+1} − S_i`, and set `h_{d/2} = 0`. **Summation by parts** (Abel), with `N = d/2`:
#
# $$\sum_{i=0}^{N-1} h_i (S_{i+1} - S_i) = \sum_{i=0}^{N-1} h_i S_{i+1} - \sum_{i=1}^{N-1} h_i S_i
#   = \sum_{i=0}^{N-1} h_i S_{i+1} - \sum_{i=0}^{N-2} h_{i+1} S_{i+1}
#   = -\sum_{i=0}^{N-1} (h_{i+1} - h_i)\, S_{i+1},$$
#
# (the second step drops `S_0 = 0` and shifts the index; the last uses `h_N = 0` to put the `i = N−1` term
# `h_{N−1} S_N` into the sum). The triangle inequality then gives RoFormer's bound (§3.4.3):
#
# $$\Big|\sum_{i} h_i e^{i\Delta\theta_i}\Big| \le \Big(\max_i |h_{i+1}-h_i|\Big) \sum_{j=1}^{d/2} |S_j| .$$
#
# The `h`'s carry all the content; the factor `(1/(d/2)) Σ_j |S_j|` depends on the distance only and
# decays as `|Δ|` grows (RoFormer Fig. 2). The cell checks the summation-by-parts step against the direct
# sum, and that the bound holds for random `q, k` at every distance up to 2,000. Both asserts are
# **bookkeeping**: they check this reading's own algebra (the index shift and the triangle inequality)
# on random numbers, not the code against an outside reference (there is none for an inequality); §Check
# does that for the code.

# %%
d_decay = 128
theta = inv_freq_default(d_decay)  # (64,)
dist = torch.arange(0, 2001, dtype=torch.float64)  # Delta
phases = torch.exp(1j * dist[:, None] * theta)  # e^{i Delta theta_i}: (dist, d/2)
S = torch.cumsum(phases, dim=1)  # S_{i+1} for i = 0..d/2-1: (dist, d/2)
g = torch.Generator().manual_seed(0)
qk = torch.randn(2, 256, d_decay, dtype=torch.float64, generator=g)  # 256 random (q, k) pairs
h = torch.view_as_complex(qk[0].reshape(256, -1, 2)) * torch.view_as_complex(qk[1].reshape(256, -1, 2)).conj()  # (256, d/2)
direct = h @ phases.T  # sum_i h_i e^{i Delta theta_i}: (256, dist)
h_next = torch.cat([h[:, 1:], torch.zeros(256, 1, dtype=h.dtype)], dim=1)  # h_{i+1}, with h_{d/2} = 0
by_parts = -(h_next - h) @ S.T  # -sum_i (h_{i+1} - h_i) S_{i+1}: (256, dist)
err = (direct - by_parts).abs().max().item()
assert err < 1e-9, "summation by parts disagrees with the direct sum"  # bookkeeping: the algebra, not a reference
bound = (h_next - h).abs().max(dim=1).values[:, None] * S.abs().sum(dim=1)[None]  # (256, dist)
assert (direct.abs() <= bound + 1e-9).all(), "RoFormer §3.4.3 bound violated"
print(f"summation by parts vs direct sum: max error {error_bound(err, 1e-9)}; "
      f"bound holds at all {bound.numel()} (q, k, distance) points; "
      f"largest |score| / bound: {(direct.abs() / bound).max():.2f}")

# %% [markdown]
# The bound is about the worst case. What a *typical* pair does: if `k = q` (a key with the query's own
# content) and `q ~ N(0, I)`, the expected score is `E[qᵀR_Δ q] = tr R_Δ = 2 Σ_i cos(Δθ_i)`, which starts at
# `d` and decays with oscillations. The plot shows the bound's distance factor (RoFormer Fig. 2), the exact
# expectation, and a Monte-Carlo estimate over 256 random `q` (same seed), which must agree with it within
# sampling error. That assert is a **sanity check** of the trace formula (`E[qᵀAq] = tr A` for
# `q ~ N(0, I)`), not a reference check.

# %%
expected = 2 * torch.cos(dist[:, None] * theta).sum(dim=1)  # tr R_Delta: (dist,)
qs = qk[0]  # (256, d)
mc = torch.stack([(rope_half(qs, torch.tensor([0]), theta) * rope_half(qs, torch.tensor([int(D)]), theta)).sum(-1).mean()
                  for D in range(0, 2001, 50)])  # q·R_Delta q, one query at 0 and the same content at Delta
stderr = torch.sqrt(torch.tensor(2.0 * d_decay / 256))  # std of q^T R q is at most sqrt(2 d) for Gaussian q
assert ((mc - expected[::50]).abs() < 5 * stderr).all()  # sanity check of E[q^T R q] = tr R, not a reference
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(dist.numpy(), (S.abs().mean(dim=1)).numpy(), label="bound factor (1/(d/2)) Σ|S_j| (RoFormer Fig. 2)")
ax.plot(dist.numpy(), (expected / 2).numpy(), label="E[qᵀR_Δq]/2 = Σ cos(Δθ_i), exact")
ax.plot(dist[::50].numpy(), (mc / 2).numpy(), "o", ms=3, label="Monte Carlo, 256 random q")
ax.set(xlabel="relative distance |m − n|", ylabel="value", title="RoPE long-term decay, d = 128, b = 10⁴")
ax.legend(fontsize=8)
plt.show()
print("bound factor at distance 0, 10, 100, 1000:", [round(S.abs().mean(dim=1)[i].item(), 1) for i in (0, 10, 100, 1000)])
print("exact Σ cos(Δθ_i) at distance 0, 10, 100, 1000:", [round(expected[i].item() / 2, 1) for i in (0, 10, 100, 1000)])
rises = int((expected[1:] > expected[:-1]).sum())  # not monotone: the typical score oscillates as it decays
rebound = (expected - torch.cummin(expected, dim=0).values).max().item() / 2
print(f"exact Σ cos(Δθ_i) rises on {rises} of the 2000 one-token steps; largest rebound above its minimum over "
      f"shorter distances {rebound:.1f}")

# %% [markdown]
# ## Walkthrough
#
# The long-context recipes, each derivation followed by the code that implements it. Everything is written
# from scratch in float64, independent of `shared.rope` (which §Check compares against `transformers`). All
# recipes have the form `θ_i → θ'_i` for an extension ratio `s = L'/L`.
#
# ### 1. Why extrapolation breaks and interpolation does not: PI v2 Fig. 2 and Theorem 2.1
#
# PI (v2 §2.2, eq. 3) reads the score as a function of the relative offset `Δ`,
# `a(Δ) = Re Σ_j h_j e^{iΔθ_j}`, a sum of `d/2` sinusoids (PI calls the offset `s`; here `s` stays the
# extension ratio, and `Δ` is the offset as in Derivations §6). Fit such a sum to random values at the
# integer offsets `0 … L−1` (least squares, as the paper's App. C.1 does for LLaMA 7B's `d = 128`,
# `L = 2048`): inside `[0, L]` it stays bounded (PI's caption: "approximately within [−1, 1]"; here
# `max |a| ≤ 0.58`, printed below), but nothing controls it past `L`, where "it may goes beyond 8000".
# Between integers it stays smooth. Theorem 2.1 (eq. 5) bounds how far `a` can stray from the straight
# line `a_linear` between two integer neighbours `Δ₁ < Δ < Δ₂`:
#
# $$|a(\Delta) - a_{\text{linear}}(\Delta)| \le d\,\big(\max_j |h_j|\big)\,\frac{(\Delta-\Delta_1)(\Delta_2-\Delta)}{8\ln c}, \quad c = 10000,$$
#
# from a Taylor expansion: linear interpolation between `Δ₁` and `Δ₂` misses by at most
# `max|a''| · (Δ−Δ₁)(Δ₂−Δ)/2`, and `|a''(Δ)| ≤ Σ_j |h_j| θ_j² ≤ max_j|h_j| · Σ_j θ_j²` (PI App. A). The last
# sum is a geometric series with ratio `c^{−4/d}`:
#
# $$\sum_{j=0}^{d/2-1} \theta_j^2 = \sum_{j=0}^{d/2-1} c^{-4j/d} = \frac{1-c^{-2}}{1-c^{-4/d}}
#   \;\approx\; \frac{d}{4\ln c} \quad\text{using } 1-c^{-4/d} \approx \frac{4\ln c}{d}\ (\text{large } d).$$
#
# PI's constant `d/(8 ln c)` in eq. 5 is this approximation divided by 2. It is **not** an upper bound:
# `1 − e^{−x} < x`, so the exact sum is larger: 3.998 against `d/(4 ln c)` = 3.474 at `d = 128`,
# `c = 10⁴` (printed below), i.e. the exact sum is 15 % larger than PI's constant, and the in-phase worst
# case below exceeds eq. 5 as printed by 9 %; the exact form
# `max|h_j| · (1−c^{−2})/(1−c^{−4/d}) · (Δ−Δ₁)(Δ₂−Δ)/2` is a bound. PI v2 App. A reaches its constant in two
# steps. Eq. 13 writes `Σ_{j=0}^{d/2−1} c^{−4j/d} = 1/(1−c^{−4/d})` as an
# *equality*, which holds only for the infinite series; for the finite sum it is an upper bound (it drops
# the factor `1−c^{−2} < 1`), a harmless direction. Eq. 14 then bounds `1/(1−c^{−4/d})` by `d/(4 ln c)`,
# justified by "when x<0 and c>1, c^x ≤ 1+x ln c" (the wording of the
# HTML rendering of the paper on ar5iv). That lemma is backwards:
# `c^x = e^{x ln c}` is convex, so it lies *above* its tangent at 0, `c^x ≥ 1 + x ln c` for every `x`
# (e.g. `c = 10⁴`, `x = −1`: `10⁻⁴ ≥ 1 − 9.21`). With `x = −4/d` it gives `1 − c^{−4/d} ≤ (4 ln c)/d`, an
# upper bound on the denominator and hence a *lower* bound on the sum: PI's step fails, and its constant is
# too small by the factor 1.15 above (`d = 128`, `c = 10⁴`); the check below uses the exact sum. The "∼600×" gap to extrapolation that PI draws
# from the theorem survives a 15 % constant. PI (eq. 4) therefore
# replaces `f(x, m)` by `f(x, mL/L')`: every position lands between trained integers. The first cell refits
# the paper's Figure 2 (with three regularisation strengths) and reports the growth past `L`; the next one
# checks the bound.

# %%
d_pi, L_pi, c_pi = 128, 2048, 10000.0
freqs = inv_freq_default(d_pi, c_pi)  # (64,)
gen = torch.Generator().manual_seed(0)
off_int = torch.arange(L_pi, dtype=torch.float64)  # integer offsets Delta
y = torch.randn(L_pi, dtype=torch.float64, generator=gen)  # random "scores" to fit at integer offsets


def basis(offsets: torch.Tensor) -> torch.Tensor:
    """[sin(Delta theta_j), cos(Delta theta_j)] for each offset Delta. -> (len(offsets), d)."""
    ang = offsets[:, None] * freqs
    return torch.cat([ang.sin(), ang.cos()], dim=1)


def ridge_fit(eps: float) -> torch.Tensor:
    """Least squares (X^T X + eps I) c = X^T y, PI App. C.1's solve (its eps = 0; a tiny eps keeps it reproducible)."""
    X = basis(off_int)
    return torch.linalg.solve(X.T @ X + eps * torch.eye(d_pi, dtype=torch.float64), X.T @ y)


off_ext = torch.arange(0, 2 * L_pi, dtype=torch.float64)
fits = {eps: ridge_fit(eps) for eps in (1e-8, 1e-4, 1.0)}
for eps, coef_eps in fits.items():
    a_eps = basis(off_ext) @ coef_eps
    print(f"ridge eps = {eps:g}: max |a(Δ)| on [0, L) {a_eps[:L_pi].abs().max():.2f}, on [L, 2L) {a_eps[L_pi:].abs().max():.1e}")
coef = fits[1e-8]  # the nearly unregularised fit of the paper's figure
h_abs = torch.sqrt(coef[: d_pi // 2] ** 2 + coef[d_pi // 2:] ** 2)  # |h_j| of a(Delta) = Re sum h_j e^{i Delta theta_j}
a_ext = basis(off_ext) @ coef
off_fine = torch.arange(25, 75, 0.125, dtype=torch.float64)
a_fine = basis(off_fine) @ coef
inside, outside = a_ext[:L_pi].abs().max().item(), a_ext[L_pi:].abs().max().item()
a_ridge = basis(off_ext) @ fits[1.0]
assert outside > 100 * inside and a_ridge[L_pi:].abs().max() < 10 * a_ridge[:L_pi].abs().max()
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
axes[0].scatter(off_int[:200].numpy(), y[:200].numpy(), s=4)
axes[0].plot(off_ext[:200].numpy(), a_ext[:200].numpy(), "r", lw=1)
axes[0].set(title="fit on [0, L] (first 200 offsets)", xlabel="offset Δ", ylabel="attention score a(Δ)")
axes[1].plot(off_ext.numpy(), a_ext.numpy(), "r", lw=0.8, label="eps = 1e-8")
axes[1].plot(off_ext.numpy(), a_ridge.numpy(), "b", lw=0.8, label="ridge, eps = 1")
axes[1].axvline(L_pi, color="k", ls="--", lw=0.5)
axes[1].set(title="extrapolation past L = 2048", xlabel="offset Δ", yscale="symlog")
axes[1].legend(fontsize=8)
axes[2].plot(off_fine.numpy(), a_fine.numpy(), "r", lw=1)
for i in range(25, 76):
    axes[2].axvline(i, color="k", ls=":", lw=0.3)
axes[2].set(title="interpolation (dotted: integer offsets)", xlabel="offset Δ")
fig.suptitle("PI v2 Fig. 2 refitted: d = 128, L = 2048, random targets")
plt.show()
print(f"this fit has max |h_j| = {h_abs.max():.0f}: large coefficients, which is what blows up past L")

# %% [markdown]
# **Checking Theorem 2.1 where it is tight.** With coefficients of size 1 the bound is close to the truth,
# so the check can fail: random unit phases `h_j = e^{iφ_j}`, and the in-phase worst case `h_j = 1` (all
# cosines peak together at `Δ = 0`), at the 350 fractional offsets of the grid `0, 0.125, …, 49.875`
# (400 points minus the 50 integers). The exact sum `Σ θ_j²` is printed twice (brute force and the
# closed form above; that they agree is arithmetic, not a check). Asserted: the linear interpolant stays within
# the exact bound; the worst case comes within a factor 10 of it; the in-phase case *exceeds* PI's printed
# constant `d/(8 ln c)` (the approximation is not a bound); and a wrong interpolant (the floor neighbour
# `a(Δ₁)`, i.e. no interpolation) violates the bound, so the check has teeth.

# %%
sum_theta2 = (freqs**2).sum().item()  # brute force
closed_form = (1 - c_pi**-2) / (1 - c_pi ** (-4 / d_pi))  # geometric series
pi_constant = d_pi / (4 * math.log(c_pi))  # PI's large-d approximation of the sum
print(f"sum_j theta_j^2: brute force {sum_theta2:.3f}, closed form {closed_form:.3f}; PI's d/(4 ln c) = {pi_constant:.3f} "
      f"(the exact sum is {100 * (sum_theta2 / pi_constant - 1):.0f} % larger)")


def score_at(h: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """a(Delta) = Re sum_j h_j e^{i Delta theta_j} for complex h (d/2,) and offsets Delta (n,). -> (n,)."""
    return (h * torch.exp(1j * offsets[:, None] * freqs)).real.sum(-1)


off_frac = torch.arange(0, 50, 0.125, dtype=torch.float64)
off_frac = off_frac[off_frac != off_frac.floor()]  # fractional offsets only: (350,)
print(f"{len(off_frac)} fractional offsets in (0, 50)")
off1, off2 = off_frac.floor(), off_frac.floor() + 1  # the integer neighbours Delta_1 < Delta < Delta_2
width = (off_frac - off1) * (off2 - off_frac)  # (Delta - Delta_1)(Delta_2 - Delta)
phases_h = 2 * math.pi * torch.rand(d_pi // 2, dtype=torch.float64, generator=gen)
ratios = {}
for label, h in [("random unit phases", torch.exp(1j * phases_h)),
                 ("in phase, h_j = 1", torch.ones(d_pi // 2, dtype=torch.complex128))]:
    a_true = score_at(h, off_frac)
    a_lin = (off2 - off_frac) * score_at(h, off1) + (off_frac - off1) * score_at(h, off2)
    exact_bound = h.abs().max() * closed_form * width / 2
    pi_bound = d_pi * h.abs().max() * width / (8 * math.log(c_pi))  # eq. 5 as printed
    gap = (a_true - a_lin).abs()
    assert (gap <= exact_bound + 1e-12).all(), f"{label}: Theorem 2.1 (exact constant) violated"
    assert ((a_true - score_at(h, off1)).abs() > exact_bound).any(), "the floor neighbour should violate the bound"
    ratios[label] = (gap / exact_bound).max().item()
    print(f"{label:19s}: max |a - a_lin| / exact bound {ratios[label]:.2f}; "
          f"/ PI's printed bound {(gap / pi_bound).max():.2f}; floor neighbour / exact bound "
          f"{((a_true - score_at(h, off1)).abs() / exact_bound).max():.0f}")
assert max(ratios.values()) > 0.1
assert ratios["in phase, h_j = 1"] * closed_form / pi_constant > 1, "PI's constant should be exceeded in phase"

# %% [markdown]
# The smaller the regularisation, the wilder the extrapolation (PI's own solve in App. C.1 uses `eps = 0.000`
# in float32, since its `freqs` are `.float()` and its offsets `torch.zeros(L)`; its caption says the fit
# "may goes beyond 8000"), while every fit stays bounded inside `[0, L)` (`max |a|` 0.50–0.58). A strong ridge (`eps = 1`) keeps
# the extrapolated values "comparable to that within [0, L]", as PI v2 §2.3 remarks ("if we enforce a
# regularization on |h_j| during LLM training, it is possible that the catastrophic extrapolation error
# can be mitigated"): the blow-up comes from large `|h_j|`, which nothing in pre-training discourages.

# %% [markdown]
# ### 2. Position Interpolation: `θ'_i = θ_i / s`
#
# Since the angle is `m θ_i`, PI's `f(x, m/s)` (eq. 4) is the same as dividing every frequency by `s`. Every
# relative distance in `[0, L')` maps into `[0, L)`, but neighbouring tokens are now `1/s` of a step apart
# on the fast pairs: YaRN v2 §3.1 calls this the "loss of high frequency information", and PI itself
# fine-tunes ("within 1000 steps", abstract; §3.1).

# %%
def inv_freq_pi(d: int, base: float, s: float) -> torch.Tensor:
    """Position Interpolation: every theta_i / s (PI eq. 4). -> (d/2,)."""
    return inv_freq_default(d, base) / s


print("PI, d = 8, s = 4: θ'/θ =", [round(v, 3) for v in (inv_freq_pi(8, 1e4, 4.0) / inv_freq_default(8)).tolist()])

# %% [markdown]
# ### 3. NTK-aware scaling: change the base
#
# bloc97's idea (YaRN v2 §3.1, Definition 1, eq. 14–16): spread the interpolation "by scaling high
# frequencies less and low frequencies more", via a new base `b'`. The deduction (YaRN v2 **App. A.1**):
# require the *last* pair, `i = d/2 − 1` (dimension `d − 2`, since each pair uses two dims), to have PI's
# wavelength, `b'^{(d−2)/d} = s · b^{(d−2)/d}` (eq. 23), so
#
# $$b' = b \cdot s^{\,d/(d-2)} \quad(\text{eq. } 24), \qquad \frac{\theta'_i}{\theta_i} = \Big(\frac{b}{b'}\Big)^{2i/d} = s^{-2i/(d-2)} .$$
#
# **Why it works.** The scale factor runs geometrically from 1 at `i = 0` (the fastest pair, `λ = 2π`, is
# kept exactly: local order stays sharp) to `1/s` at the slowest pair (interpolated like PI: no unseen
# angles there). Fast pairs can be extrapolated safely because they turned many times during training:
# every angle on their circle was already seen. **Its flaw** (YaRN §3.1): the pairs in between are divided
# by *less* than `s`, so if their wavelength exceeds `L`, the angle at `L'` is beyond the slice they saw,
# "some dimensions are slightly extrapolated to 'out-of-bound' values", and "the scale value s has to be set
# higher than the expected scale for a given context length extension". The cell prints, for the toy
# head of §Reproduction (`d = 16`, `b = 10⁴`, `L = 64`) stretched to `T = 8L`, the largest angle each pair
# reaches as a multiple of the largest angle it saw in training (`(L−1)θ_i`, or a full turn if it turned):
# anything above 1 is out of bound.

# %%
def inv_freq_ntk(d: int, base: float, s: float) -> torch.Tensor:
    """NTK-aware: base b * s^(d/(d-2)) (YaRN v2 App. A.1, eq. 24). -> (d/2,)."""
    return inv_freq_default(d, base * s ** (d / (d - 2)))


d_toy, L_toy, T_toy = 16, 64, 512
theta_toy = inv_freq_default(d_toy)
seen = torch.clamp((L_toy - 1) * theta_toy, max=2 * math.pi)  # largest angle pair i saw in training
print("pair i:                      " + " ".join(f"{i:5d}" for i in range(d_toy // 2)))
print("wavelength (tokens):         " + " ".join(f"{v:5.0f}" for v in (2 * math.pi / theta_toy).tolist()))
for label, new in [("vanilla", theta_toy), ("PI, s = T/L", inv_freq_pi(d_toy, 1e4, 8.0)),
                   ("NTK, s = T/L", inv_freq_ntk(d_toy, 1e4, 8.0)), ("NTK, s = 2T/L", inv_freq_ntk(d_toy, 1e4, 16.0))]:
    reach = torch.clamp((T_toy - 1) * new, max=2 * math.pi) / seen  # > 1: angles never seen in training
    print(f"{label:14s} θ'/θ:           " + " ".join(f"{v:5.2f}" for v in (new / theta_toy).tolist()))
    print(f"{label:14s} reach / seen:   " + " ".join(f"{v:5.2f}" for v in reach.tolist()))

# %% [markdown]
# Read the rows: vanilla overshoots on every pair whose wavelength exceeds `L` (pairs 3–7, by up to 8×); PI
# stays at 1 (1.01 = (T−1)/s over L−1); NTK at `s = T/L` still overshoots pairs 3–6 (by up to about 3×):
# the out-of-bound effect; at `s = 2T/L` the overshoot shrinks (pairs 3–5, at most 2.5×) and the two slowest
# pairs are compressed below their trained range, at the cost of compressing the middle pairs more.
# §Reproduction 2 measures both choices.
#
# ### 4. Dynamic NTK
#
# Any fixed-`s` recipe hurts inputs shorter than `L'`. **Dynamic Scaling** (YaRN v2 §3.3; emozilla's post,
# YaRN ref. [14]) recomputes `s = max(1, l'/L)` from the current length `l'` at every forward pass, so
# nothing changes until the text is longer than `L`; with NTK-aware it is "Dynamic NTK". With a whole
# sequence of length `T` in one forward pass it is NTK-aware at `s = T/L`. `transformers`' `"dynamic"` (and
# the authors' own `LlamaDynamicScaledRotaryEmbedding`, line 30 of
# [`scaled_rope/LlamaDynamicScaledRotaryEmbedding.py`](https://github.com/jquesnelle/yarn/blob/995db5b575e75230b3384d658f8b944c9662f775/scaled_rope/LlamaDynamicScaledRotaryEmbedding.py))
# take a configured `factor` `f` and use `s = f·l/L − (f − 1)` for `l > L`: the paper's `l/L` when `f = 1`,
# and faster growth otherwise, a generalisation rather than a discrepancy. With a KV cache, YaRN v2 §3.3
# warns: "The correct implementation should cache the kv-embeddings before applying RoPE, as the RoPE
# embedding of every token changes when s changes." `transformers` caches keys *after* RoPE; §Check
# measures what that changes.

# %%
def inv_freq_dynamic(d: int, base: float, factor: float, L: int, seq_len: int) -> torch.Tensor:
    """Dynamic NTK as transformers computes it: NTK-aware with s = factor*l/L - (factor-1), l = max(seq_len, L)."""
    s = factor * max(seq_len, L) / L - (factor - 1)  # = max(1, seq_len/L) when factor = 1 (YaRN v2 §3.3)
    return inv_freq_ntk(d, base, s)


for l_now in (32, 64, 128, 256):
    ratio = (inv_freq_dynamic(d_toy, 1e4, 1.0, L_toy, l_now) / theta_toy)[-1].item()
    print(f"Dynamic NTK (factor 1), current length {l_now:3d}: slowest pair θ'/θ = {ratio:.3f}")

# %% [markdown]
# ### 5. YaRN: NTK-by-parts plus an attention temperature
#
# **NTK-by-parts** (YaRN v2 §3.2). Think per pair in turns over `L`, `r(d) = L/λ_d` (eq. 17; the paper
# prints the base there as `b′`, but the ramp is computed on the *original* wavelengths, as the official
# code and `transformers` do). Pairs that turn many times encode relative position only and must not be
# interpolated; pairs with `λ ≥ L` must be interpolated and never extrapolated. With two thresholds
# `α < β` and the ramp
#
# $$\gamma(r) = \begin{cases} 0 & r < \alpha \\ 1 & r > \beta \\ \dfrac{r-\alpha}{\beta-\alpha} & \text{otherwise}\end{cases}
#   \quad(\text{eq. } 18), \qquad h(\theta_d) = \big(1-\gamma(r(d))\big)\frac{\theta_d}{s} + \gamma(r(d))\,\theta_d \quad(\text{eq. } 20),$$
#
# each pair moves *between the unchanged frequency `θ_d` (`γ = 1`) and PI's `θ_d/s` (`γ = 0`)*; "for the
# Llama family of models, good values for α and β are α = 1 and β = 32" (§3.2). Unlike NTK-aware, nothing is
# extrapolated past what it saw: pairs that did not complete a turn get exactly PI's `θ/s`.
#
# **The official code differs from eq. 18 in two ways.** It makes the ramp linear in the pair *index*
# between the indices where `L` holds `β` and `α` turns, `i(r) = d ln(L/(2πr)) / (2 ln b)` (linear in
# `ln r`, not in `r`), and it rounds those indices outwards (`floor`, `ceil`):
# `find_correction_range` and `linear_ramp_mask` in
# [`scaled_rope/LlamaYaRNScaledRotaryEmbedding.py`](https://github.com/jquesnelle/yarn/blob/995db5b575e75230b3384d658f8b944c9662f775/scaled_rope/LlamaYaRNScaledRotaryEmbedding.py)
# (lines 4–22), copied by `transformers` (`truncate=True` by default; `truncate=False` drops the rounding).
# The two agree outside `α < r < β` and differ inside. Which is right? For using a released YaRN model,
# the code: the Yarn-Llama-2 checkpoints were fine-tuned with it, and the paper itself says the ramp "may
# have alternatives" (footnote 4). Below are both, written from the equations: `yarn_paper` is eq. 17, 18,
# 20 literally; `yarn_code` is the same structure with the code's ramp. §Check compares them with
# `transformers` and with each other.

# %%
def yarn_paper(d: int, base: float, s: float, L: int, alpha: float = 1.0, beta: float = 32.0) -> torch.Tensor:
    """NTK-by-parts exactly as YaRN v2 eq. 17, 18, 20: gamma linear in the turns r. -> (d/2,)."""
    theta = inv_freq_default(d, base)
    r = L * theta / (2 * math.pi)  # eq. 17: turns of pair i over L
    gamma = ((r - alpha) / (beta - alpha)).clamp(0, 1)  # eq. 18
    return (1 - gamma) * theta / s + gamma * theta  # eq. 20


def yarn_code(d: int, base: float, s: float, L: int, alpha: float = 1.0, beta: float = 32.0,
              rounded: bool = True) -> torch.Tensor:
    """NTK-by-parts as the official code: gamma linear in the pair index between i(beta) and i(alpha). -> (d/2,)."""
    theta = inv_freq_default(d, base)

    def index_for_turns(r: float) -> float:  # the (real) pair index whose wavelength fits r times in L
        return d * math.log(L / (2 * math.pi * r)) / (2 * math.log(base))

    lo, hi = index_for_turns(beta), index_for_turns(alpha)  # fast end, slow end
    if rounded:
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, d - 1)
    gamma = 1 - ((torch.arange(d // 2, dtype=torch.float64) - lo) / max(hi - lo, 1e-3)).clamp(0, 1)
    return (1 - gamma) * theta / s + gamma * theta


d, b, L_llama, s = 128, 10000.0, 4096, 4.0  # Llama-2-like head: d = 128, base 10^4, trained at L = 4096
yarn_freq = yarn_code(d, b, s, L_llama)
theta = inv_freq_default(d, b)
turns = L_llama * theta / (2 * math.pi)  # r_i
between = (turns > 1) & (turns < 32)
gap = ((yarn_paper(d, b, s, L_llama) - yarn_freq).abs() / theta)[between]
print(f"Llama-2 head, s = {s:g}: {int((turns > 32).sum())} pairs kept (r > 32), {int((turns < 1).sum())} "
      f"interpolated (r < 1), {int(between.sum())} on the ramp")
print(f"eq. 18 (linear in r) vs the code (linear in log r, rounded): largest gap on the ramp {gap.max():.2f}·θ_i")
toy_code, toy_paper = yarn_code(d_toy, 1e4, 8.0, L_toy), yarn_paper(d_toy, 1e4, 8.0, L_toy)
print("toy head (d = 16, L = 64), s = 8, θ'/θ per pair: code  " + " ".join(f"{v:.2f}" for v in (toy_code / theta_toy).tolist()))
print("                                             eq. 18 " + " ".join(f"{v:.2f}" for v in (toy_paper / theta_toy).tolist()))

# %% [markdown]
# What each recipe does to each pair: the ratio `θ'_i/θ_i` for that head stretched `s = 4` times. The
# dotted lines mark the pairs that turn 32 times and once over `L` (YaRN's `β` and `α`). NTK-aware is a
# straight line in this log plot (geometric in `i`); YaRN is flat at 1, ramps, and is flat at `1/s`.

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
for label, new in [("PI", inv_freq_pi(d, b, s)), ("NTK-aware", inv_freq_ntk(d, b, s)),
                   ("YaRN, eq. 18 (linear in r)", yarn_paper(d, b, s, L_llama)), ("YaRN, code (linear in log r)", yarn_freq)]:
    ax.semilogy(range(d // 2), (new / theta).numpy(), label=label)
for r in (32, 1):
    ax.axvline(int((turns > r).sum()) - 0.5, color="grey", ls=":", lw=1)
ax.set(xlabel="pair index i (fast → slow)", ylabel="θ'_i / θ_i", title=f"d={d}, b={b:g}, L={L_llama}, s={s:g}")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **Temperature** (YaRN v2 §3.4, eq. 21): divide the logits by `t`, `softmax(q_mᵀk_n / (t√|D|))`,
# implemented for free by multiplying cos and sin, hence both `q` and `k`, by `√(1/t)`; for LLaMA and
# Llama 2 (eq. 22)
#
# $$\sqrt{1/t} = 0.1 \ln s + 1 ,$$
#
# "found by fitting `√(1/t)` at the lowest perplexity against the scale extension by various factors `s`"
# on LLaMA 7B–65B without fine-tuning. The logits are multiplied by `(0.1 ln s + 1)²`.
#
# YaRN v2 App. A.2 is the paper's evidence for the fit: for LLaMA 7B at `s = 8`, over 896 RedPajama
# documents of 16K tokens, the best `t` is "mostly consistent across different samples and different
# positions", the recommended value is `√(1/t) = 0.1 ln 8 + 1 ≈ 1.208` (eq. 25), and "the best value of t
# follows our recommended formula (Eq. 22) closely" for other `s`.
#
# **DeepSeek-V2-style `mscale`**, in `transformers`' `_compute_yarn_parameters`:
#
# - eq. 22 is written `get_mscale(s, mscale) = 0.1·mscale·ln s + 1` (1 for `s ≤ 1`);
# - when no `attention_factor` is given but both `mscale` and `mscale_all_dim` are, cos and sin are
#   multiplied by `get_mscale(s, mscale)/get_mscale(s, mscale_all_dim)` instead of `get_mscale(s, 1)`
#   (`mscale` alone is ignored);
# - DeepSeek-V2's attention then multiplies its softmax scale, which covers its non-rotary query/key dims
#   too, by `get_mscale(s, mscale_all_dim)²` (`yarn_apply_mscale` in
#   `models/deepseek_v2/modeling_deepseek_v2.py`);
# - so the rotary part of a logit gets `get_mscale(s, mscale)²` in all and the non-rotary part
#   `get_mscale(s, mscale_all_dim)²`; equal values move the whole temperature into the softmax scale.
#
# The cell implements eq. 22 (`yarn_temperature`); §Check compares it, and the `mscale` ratio, with
# `transformers`.

# %%
def yarn_temperature(s: float) -> float:
    """sqrt(1/t) = 0.1 ln s + 1 (YaRN v2 eq. 22), 1 for s <= 1."""
    return 0.1 * math.log(s) + 1 if s > 1 else 1.0


yarn_scale = yarn_temperature(s)
print(f"s = {s:g}: sqrt(1/t) = {yarn_scale:.4f}: logits multiplied by {yarn_scale**2:.4f}")

# %% [markdown]
# **Why a temperature.** A query spreads its attention over every key it can see; with more keys the softmax
# gets flatter (for `n` keys of equal logit its entropy is `ln n`), and interpolation makes far keys look
# closer (smaller angles), which raises their logits and flattens it further. YaRN's erratum states the
# direction: interpolation "increases the average entropy of the attention softmax" and the goal is "to
# reverse the increase of entropy" ([Errata.md](https://github.com/jquesnelle/yarn/blob/32c9f217c4462c25ea0a8bc70357c0f936d4201b/Errata.md),
# the authors' correction of the v1 preprint's inverted §3.4; the file left the repository once v2 fixed
# the text). Dividing the logits by `t < 1` sharpens it back.
#
# **Why `ln s`: a derivation from two assumptions.** Take one query and `n` keys with logits `τ z_j`, where
# `τ` is the scale the temperature sets (`τ = 1/t` relative to the trained model, whose own scale is
# `τ_1 = 1`). In this derivation `τ` is the logit scale and `μ` the logit multiplier, since `λ` is a
# wavelength and `m` a position elsewhere in the reading. The softmax entropy is exactly
#
# $$H = \ln \sum_j e^{\tau z_j} - \tau \sum_j p_j z_j , \qquad p_j = e^{\tau z_j} \Big/ \sum_k e^{\tau z_k} .$$
#
# Differentiate it at fixed `n`. The first term gives `Σ_j p_j z_j`; the derivative of the mean
# `Σ_j p_j z_j` is the attention-weighted variance `Var_p(z) = Σ_j p_j z_j² − (Σ_j p_j z_j)²`; so
#
# $$\frac{\partial H}{\partial \tau} = \sum_j p_j z_j - \Big(\sum_j p_j z_j + \tau\,\mathrm{Var}_p(z)\Big) = -\tau\,\mathrm{Var}_p(z) \;\le 0 \qquad\text{(exact, for } \tau \ge 0\text{)}.$$
#
# *Assumption (A): the keys are statistically alike*, i.e. the `z_j` behave like `n` draws from one
# distribution whatever `n` is. With its cumulant generating function `K(τ) = ln E[e^{τz}]`, for large `n`
# `Σ_j e^{τz_j} ≈ n e^{K(τ)}` and `Σ_j p_j z_j ≈ K'(τ)` (the mean of `z` under the tilted weights), so
#
# $$H(n, \tau) \approx \ln n - G(\tau), \qquad G(\tau) = \tau K'(\tau) - K(\tau), \quad G(0) = 0, \quad G'(\tau) = \tau K''(\tau) > 0 \ \text{for } \tau > 0 .$$
#
# This law-of-large-numbers step needs **no single key to dominate** `Σ_j e^{τz_j}`. For Gaussian logits
# `z ~ N(ν, σ²)` the sum's relative variance is `(e^{τ²σ²} − 1)/n`, so it concentrates only while
# `τ²σ² ≪ ln n`; where one key takes most of the weight ("peaked" attention), (A)'s approximation fails.
#
# *Assumption (B), the target: keep the entropy at its trained value `H_L`* (YaRN's erratum asks to
# "reverse the increase of entropy"; eq. 22 itself was fitted to perplexity, not to entropy). Under (A), `s`
# times more keys add `ln s` nats at a fixed scale, so (B) asks for
#
# $$G(\tau_s) = G(\tau_1) + \ln s, \qquad G(\tau_1) = \ln L - H_L \ \text{(the trained attention's entropy deficit)} .$$
#
# Two things follow for the logit multiplier `μ = τ_s/τ_1`:
#
# 1. **`μ` depends on `s` only through `ln s`**, the only place `s` enters.
# 2. **Its first-order coefficient.** Differentiate both sides with respect to `ln s`:
#    `G'(τ_s) · dτ_s/d ln s = 1`. At `s = 1`, `dτ_s/d ln s = 1/G'(τ_1) = 1/(τ_1 K''(τ_1))`, and `K''(τ_1)`,
#    the variance of `z` under weights `∝ e^{τ_1 z}`, is for large `n` the trained softmax's `Var_p(z)`.
#    Dividing by `τ_1`:
#
# $$\mu = 1 + \kappa \ln s + O(\ln^2 s), \qquad \kappa = \frac{1}{\tau_1^2\,\mathrm{Var}_p(z)} = \frac{1}{\mathrm{Var}_p(\tau_1 z)} .$$
#
#    The same result without `G`: at fixed `n` the exact identity gives `dH = −τ Var_p(z) dτ`; at fixed `τ`,
#    (A) gives `dH = d ln n`. Keeping `H` fixed while `ln n` grows by `d ln s` therefore needs
#    `dτ = d ln s / (τ Var_p(z))`.
#
# **Closed forms.** *Gaussian logits*: `K = ντ + σ²τ²/2`, `G = σ²τ²/2`, so `μ² = 1 + ln s/(ln L − H_L)`,
# concave in `ln s`. Its `κ = 1/(2(ln L − H_L))` agrees with the general `1/Var_p(τ_1 z)`: for a Gaussian,
# the tilted variance is `Var_p(z) = σ²` and the deficit is `ln L − H_L = G(τ_1) = σ²τ_1²/2`. For other
# logit distributions the two values differ; the uniform-logit test below separates them.

# %% [markdown]
# **Measuring it: attention entropy on a Llama-like head** (`d = 128`, `b = 10⁴`, trained length
# `L = 1024`). Each query `q ~ N(0, I)` looks back over keys that share half its content, `k = q/2 + ε`
# with `ε ~ N(0, I)`, at distances `Δ = 0, 1, 2, …` behind it. Its logit needs no `d`-dim key. With the
# query at position `p` and the key at `p − Δ`, §2's identity gives `qᵀR_{−Δ}(q/2 + ε)`, which splits in
# two:
#
# - `½ qᵀR_{−Δ} q = ½ Σ_i ρ_i cos(Δθ_i)`, with `ρ_i` the squared length of pair `i` of `q`: it decays with
#   distance (Derivations §6's trace, for one query);
# - `qᵀR_{−Δ} ε = (R_Δ q)ᵀ ε`: a fixed vector of length `|q|` against an independent standard normal
#   vector, so it is `N(0, |q|²)`, independently for every key.
#
# So the logits are `(½ Σ_i ρ_i cos(Δθ_i) + |q| g_Δ)/√d` with `g_Δ` i.i.d. `N(0, 1)`: cheap enough for many
# queries and `n` up to 8,192. The cell checks both identities against `rope_half` on explicit keys.

# %%
def key_logits(queries: torch.Tensor, noise: torch.Tensor, inv_freq: torch.Tensor, n: int) -> torch.Tensor:
    """Logits of each query against its n nearest keys q/2 + eps, at distances 0..n-1:
    (1/2 sum_i rho_i cos(D theta_i) + |q| g_D) / sqrt(d). queries (nq, d), noise g (nq, >= n) -> (nq, n)."""
    dd = queries.shape[-1]
    rho = queries[:, : dd // 2] ** 2 + queries[:, dd // 2:] ** 2  # |pair i|^2, rotate-half layout: (nq, d/2)
    cos_table = torch.cos(torch.arange(n, dtype=torch.float64)[:, None] * inv_freq)  # cos(D theta_i): (n, d/2)
    return (rho @ cos_table.T / 2 + queries.norm(dim=1, keepdim=True) * noise[:, :n]) / math.sqrt(dd)


gen_c = torch.Generator().manual_seed(5)
q_c, eps_c = torch.randn(2, d, dtype=torch.float64, generator=gen_c), torch.randn(2, 50, d, dtype=torch.float64, generator=gen_c)
dist_c = torch.arange(50)  # Delta; the query sits at position 49, key Delta at position 49 - Delta
q_at_49 = rope_half(q_c[:, None], torch.tensor([49]), theta)  # (2, 1, d)
content_part = (q_at_49 * rope_half(q_c[:, None].expand(-1, 50, -1) / 2, 49 - dist_c, theta)).sum(-1)  # (2, 50)
noise_part = (q_at_49 * rope_half(eps_c, 49 - dist_c, theta)).sum(-1)  # q^T R_{-Delta} eps: (2, 50)
err_content = assert_close(content_part, key_logits(q_c, torch.zeros(2, 50), theta, 50) * math.sqrt(d),
                           atol=1e-10, rtol=0.0, name="1/2 q^T R q = 1/2 sum rho_i cos")
err_noise = assert_close(noise_part, (rope_half(q_c[:, None].expand(-1, 50, -1), dist_c, theta) * eps_c).sum(-1),
                         atol=1e-10, rtol=0.0, name="q^T R_{-D} eps = (R_D q)^T eps")
print(f"content part vs ½ Σ ρ_i cos(Δθ_i): {error_bound(err_content, 1e-10)}; "
      f"noise part vs (R_Δ q)ᵀε: {error_bound(err_noise, 1e-10)}")

# %% [markdown]
# **Two rival predictions.** *Su's heuristic is not a consequence of (A).* J. Su's entropy-invariance
# argument ([spaces.ac.cn/archives/9034](https://spaces.ac.cn/archives/9034), the short derivation behind
# the length-dependent scale `∝ log n / d` of [/8823](https://spaces.ac.cn/archives/8823); Su's `λ` and `s_i`
# are this reading's `τ` and `z_j`) writes `H = ln n + ln((1/n) Σ_j e^{τz_j}) − τ Σ_j p_j z_j` and mixes two
# opposite limits:
#
# - the middle term gets its small-`τ` (mean-field) value `τ z̄`;
# - the last term gets its large-`τ` value `τ z_max`, "softmax picks the max".
#
# That gives `H ≈ ln n − τ(z_max − z̄)`, linear in `τ`. For `τ ≥ 0` both replacements err the same way
# (`ln((1/n) Σ e^{τz}) ≥ τ z̄` by Jensen, and `Σ p_j z_j ≤ z_max`), so `ln n − τ(z_max − z̄)` is a
# *lower bound* on `H`, equal only when all logits are equal. Under (A), `G` starts quadratic
# (`G(0) = G'(0) = 0`, `G''(0) = Var z`) and `z_max` grows with `n`, so no regime of (A) makes `G` linear
# through the origin. Su concludes `τ ∝ ln n`, i.e. `μ = ln(sL)/ln L = 1 + ln s/ln L`: `κ = 1/ln L`, which
# is 0.13 at LLaMA's `L = 2048` and 0.12 at Llama 2's 4096.
#
# *Eq. 22.* Its logit multiplier is `(0.1 ln s + 1)² = 1 + 0.2 ln s + 0.01 ln² s`:
#
# - `κ = 0.2`, one constant fitted to perplexity (§3.4, quoted above), where (A) and (B) give
#   `κ = 1/Var_p(τ_1 z)`, which depends on how the trained attention spreads (0.2 means `Var_p(τ_1 z) = 5`);
# - it is convex in `ln s`, where the Gaussian solution is concave, so the fit and the entropy picture part
#   as `s` grows.

# %% [markdown]
# **The test.** 8 draws of 16 queries each, and with each query 8,192 keys; for `n` keys a query sees its
# `n` nearest, so the `n = sL` keys are the `n = L` keys plus farther ones, and the number of keys is the
# only thing that changes. Entropies are averaged over a draw's 16 queries. Two tables:
#
# 1. the entropy for each recipe (mean over the draws);
# 2. the logit multiplier `μ` that brings the entropy at `n = sL` back to `H_L`, mean ± std over the 8
#    draws. It is found by bisection, which works because `H` falls monotonically in `μ` (the exact
#    identity above). It is found twice: with vanilla frequencies ("measured"), where only the number of
#    keys changes, and with YaRN's frequencies, where the interpolation adds entropy too. The measured one
#    is compared with four predictions:
#    - (A)'s, from the `n = L` logits alone (solve `H(L, μ) = H_L − ln s` there);
#    - the first-order `1 + κ ln s`, with `κ = 1/Var_p(z)` from the `n = L` logits;
#    - the Gaussian form;
#    - Su's `τ ∝ ln n`; and eq. 22.
#
# The cell also prints the measured slope `(μ − 1)/ln s` just above `s = 1` (`n = L + 10, 20, 40, 64`
# keys), against `κ`. Asserted, with SE the standard error over the 8 draws (std/√8):
#
# - the slope of (A)'s own solution at `s → 1` (`s = 1.01`) is `κ` within 1 % on every draw: the algebra
#   of the first-order result;
# - the measured multiplier at `s = 1.25` is within 3 % of `1 + κ ln s` (`|mean gap| + 3 SE < 0.03`): the
#   first-order result against the real entropy; eq. 22's `κ = 0.2` and Su's `1/ln L` fail that same
#   criterion, so it can fail for a wrong coefficient (the Gaussian `κ` passes it: see the next cell);
# - (A)'s full prediction is within 20 % of the measured multiplier up to `s = 8` (same rule), and its gap
#   grows with `s`;
# - the measured multiplier grows with `s` (every mean step more than 3 SE above zero).

# %%
L_ent, N_DRAWS, N_QUERIES = 1024, 8, 16
S_GRID = (1.25, 2.0, 4.0, 8.0)
NEAR_ONE = (10, 20, 40, 64)  # keys added to the L nearest, for the slope just above s = 1
lengths_ent = (L_ent, 2 * L_ent, 4 * L_ent, 8 * L_ent)
draws = []
for k in range(N_DRAWS):
    gen_k = torch.Generator().manual_seed(k)
    draws.append((torch.randn(N_QUERIES, d, dtype=torch.float64, generator=gen_k),  # queries (16, d)
                  torch.randn(N_QUERIES, 8 * L_ent, dtype=torch.float64, generator=gen_k)))  # g_Delta (16, 8L)


def entropy_at(logits: torch.Tensor, mu: float) -> float:
    """Mean entropy (nats) of softmax(mu * logits) over the rows."""
    p = torch.softmax(logits * mu, dim=-1)
    return -(p * p.log()).sum(-1).mean().item()


def restoring_multiplier(logits: torch.Tensor, target: float) -> float:
    """The logit multiplier mu with entropy_at(logits, mu) = target, by bisection (the entropy falls as mu grows)."""
    lo, hi = 0.25, 16.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if entropy_at(logits, mid) > target else (lo, mid)
    return (lo + hi) / 2


def weighted_variance(logits: torch.Tensor) -> float:
    """Var_p(z) under p = softmax(z), averaged over the rows (the -dH/dmu of entropy_at at mu = 1)."""
    p = torch.softmax(logits, dim=-1)
    return ((p * logits**2).sum(-1) - (p * logits).sum(-1) ** 2).mean().item()


recipes_ent = {"vanilla": lambda sn: theta, "PI": lambda sn: inv_freq_pi(d, b, sn),
               "YaRN": lambda sn: yarn_code(d, b, sn, L_ent)}
entropy = {n: {"vanilla": [], "PI": [], "YaRN, no temperature": [], "YaRN": []} for n in lengths_ent}
per_draw = []  # one dict of results per draw
for queries, noise_g in draws:
    for n in lengths_ent:
        sn = n / L_ent
        z = {name: key_logits(queries, noise_g, freq(sn), n) for name, freq in recipes_ent.items()}
        for name, value in [("vanilla", entropy_at(z["vanilla"], 1.0)), ("PI", entropy_at(z["PI"], 1.0)),
                            ("YaRN, no temperature", entropy_at(z["YaRN"], 1.0)),
                            ("YaRN", entropy_at(z["YaRN"], yarn_temperature(sn) ** 2))]:  # logits x (sqrt(1/t))^2
            entropy[n][name].append(value)
    z_L = key_logits(queries, noise_g, theta, L_ent)
    H_L = entropy_at(z_L, 1.0)
    r = {"H_L": H_L, "deficit": math.log(L_ent) - H_L, "kappa": 1 / weighted_variance(z_L),
         "kappa_A": (restoring_multiplier(z_L, H_L - math.log(1.01)) - 1) / math.log(1.01),  # (A)'s slope at s -> 1
         "max_weight": torch.softmax(z_L, -1).max(-1).values.mean().item(), "logit_std": z_L.std(-1).mean().item()}
    for sn in S_GRID:
        r[f"measured {sn}"] = restoring_multiplier(key_logits(queries, noise_g, theta, int(sn * L_ent)), H_L)
        r[f"(A) {sn}"] = restoring_multiplier(z_L, H_L - math.log(sn))  # G(mu) = G(1) + ln s, at n = L
        r[f"YaRN freq {sn}"] = restoring_multiplier(key_logits(queries, noise_g, yarn_code(d, b, sn, L_ent), int(sn * L_ent)), H_L)
    for extra in NEAR_ONE:  # measured slope (mu - 1)/ln s with n = L + extra keys
        mu_near = restoring_multiplier(key_logits(queries, noise_g, theta, L_ent + extra), H_L)
        r[f"near {extra}"] = (mu_near - 1) / math.log((L_ent + extra) / L_ent)
    per_draw.append(r)
R = {key: torch.tensor([r[key] for r in per_draw]) for key in per_draw[0]}  # (draws,) each


def mean_std(t: torch.Tensor, digits: int = 2) -> str:
    return f"{t.mean():.{digits}f} ± {t.std():.{digits}f}"


def se(t: torch.Tensor) -> float:
    return (t.std() / math.sqrt(len(t))).item()


print(f"entropy (nats), mean over {N_DRAWS} draws of {N_QUERIES} queries:")
print(f"{'keys n':>8s} {'ln n':>6s}" + "".join(f"{k:>22s}" for k in entropy[L_ent]))
for n, row in entropy.items():
    print(f"{n:8d} {math.log(n):6.2f}" + "".join(f"{sum(v) / len(v):22.2f}" for v in row.values()))
print(f"\nn = L: H_L = {mean_std(R['H_L'])} nats, deficit ln L - H_L = {mean_std(R['deficit'])}; "
      f"κ = 1/Var_p(z) = {mean_std(R['kappa'], 3)}; slope of (A)'s solution at s = 1.01: {mean_std(R['kappa_A'], 3)}; "
      f"Gaussian 1/(2 deficit) = {mean_std(1 / (2 * R['deficit']), 3)}; Su 1/ln L = {1 / math.log(L_ent):.3f}")
print(f"validity of (A): largest attention weight of a query {R['max_weight'].mean():.2f} on average; logit variance "
      f"over the keys τ²σ² = {(R['logit_std'] ** 2).mean():.2f} against ln L = {math.log(L_ent):.2f}")
print("\nlogit multiplier μ that restores H_L, mean ± std over the draws:")
print(f"{'s':>5s} {'measured':>12s} {'(A), n=L':>12s} {'1 + κ ln s':>12s} {'Gauss':>12s} {'Su':>5s} {'eq. 22':>7s} "
      f"{'measured, YaRN freq':>20s}")
for sn in S_GRID:
    print(f"{sn:5.2f} {mean_std(R[f'measured {sn}']):>12s} {mean_std(R[f'(A) {sn}']):>12s} "
          f"{mean_std(1 + R['kappa'] * math.log(sn)):>12s} {mean_std(torch.sqrt(1 + math.log(sn) / R['deficit'])):>12s} "
          f"{math.log(sn * L_ent) / math.log(L_ent):5.2f} {yarn_temperature(sn) ** 2:7.2f} {mean_std(R[f'YaRN freq {sn}']):>20s}")
steps = [R[f"measured {b_}"] - R[f"measured {a_}"] for a_, b_ in zip(S_GRID[1:], S_GRID[2:], strict=False)]
eq22_steps = [yarn_temperature(b_) ** 2 - yarn_temperature(a_) ** 2 for a_, b_ in ((2.0, 4.0), (4.0, 8.0))]
print("rise per doubling of s (2 -> 4, 4 -> 8): measured " + ", ".join(mean_std(t, 3) for t in steps)
      + "; eq. 22 " + ", ".join(f"{v:.3f}" for v in eq22_steps))

assert ((R["kappa_A"] / R["kappa"] - 1).abs() < 0.01).all(), "first-order coefficient: (A)'s slope at s = 1 is not 1/Var_p"
kappa_rivals = {"κ = 1/Var_p": R["kappa"], "Gaussian": 1 / (2 * R["deficit"]),
                "eq. 22": torch.full_like(R["kappa"], 0.2), "Su": torch.full_like(R["kappa"], 1 / math.log(L_ent))}
criterion = {}  # |mean gap| + 3 SE of 1 + κ ln s against the measured multiplier at s = 1.25, per coefficient
for name, kappa_values in kappa_rivals.items():
    gap_first = (1 + kappa_values * math.log(1.25)) / R["measured 1.25"] - 1  # (draws,)
    criterion[name] = abs(gap_first.mean().item()) + 3 * se(gap_first)
assert criterion["κ = 1/Var_p"] < 0.03, "1 + κ ln s misses the measured multiplier at s = 1.25"
assert criterion["eq. 22"] > 0.03 and criterion["Su"] > 0.03, "the s = 1.25 criterion should reject 0.2 and 1/ln L"
gap_A = {sn: R[f"(A) {sn}"] / R[f"measured {sn}"] - 1 for sn in S_GRID[1:]}
assert all(abs(t.mean()) + 3 * se(t) < 0.2 for t in gap_A.values()), "(A) is more than 20 % off"
assert gap_A[2.0].mean() < gap_A[4.0].mean() < gap_A[8.0].mean(), "(A)'s gap should grow with s"
assert all(t.mean() > 3 * se(t) for t in [R["measured 2.0"] - R["measured 1.25"], *steps]), "μ should grow with s"
gap_line = {sn: (1 + R["kappa"] * math.log(sn)) / R[f"measured {sn}"] - 1 for sn in S_GRID}
print("gap to the measured multiplier, μ_predicted / μ_measured - 1, mean ± std over the draws:")
print("  1 + κ ln s at s = 1.25, 2, 4, 8: " + ", ".join(f"{t.mean():+.3f} ± {t.std():.3f}" for t in gap_line.values()))
print("  (A), n = L  at s =       2, 4, 8: " + ", ".join(f"{t.mean():+.3f} ± {t.std():.3f}" for t in gap_A.values()))
print("s = 1.25 criterion |mean gap| + 3 SE (passes below 0.03): "
      + ", ".join(f"{name} {value:.3f}" for name, value in criterion.items()))
slope = (R["measured 1.25"] - 1) / math.log(1.25)
print(f"slope (μ - 1)/ln s at s = 1.25: measured {mean_std(slope, 2)}; κ {mean_std(R['kappa'], 2)}, Gaussian "
      f"{mean_std(1 / (2 * R['deficit']), 2)}, Su {1 / math.log(L_ent):.2f}, eq. 22 {(yarn_temperature(1.25) ** 2 - 1) / math.log(1.25):.2f}")
print("measured slope just above s = 1, over κ: "
      + ", ".join(f"n = L + {e} {mean_std(R[f'near {e}'] / R['kappa'])}" for e in NEAR_ONE)
      + f"; Gaussian value over κ {mean_std(1 / (2 * R['deficit']) / R['kappa'])}")

# %% [markdown]
# **Separating `κ = 1/Var_p` from the Gaussian value, where (A) holds.** On the head the two candidates
# differ by about 15 % (the Gaussian value is 1.15 κ on average), and the checks above cannot tell them
# apart: the `s = 1.25` criterion passes both (last lines of the output), and just above `s = 1` the measured slope drifts from about the Gaussian
# value at `n = L + 10` to below `κ` at `L + 64`. The keys added there are the far ones, whose logits have
# decayed, so they are not like the first `L` keys and (A) does not describe them even at first order. The
# coefficient itself can be tested where (A) holds by construction: i.i.d. logits `z ~ Uniform(0, 4)`, which
# are not Gaussian (and `τ²σ² = 16/12 ≈ 1.3 < ln L`, no dominant key). For them, with the tilted density
# `∝ e^z` on `[0, 4]`, the exact values are `κ = 1/Var_p(z) = 1/(1 − 16e⁴/(e⁴ − 1)²) ≈ 1.44` and, from
# the deficit `G(1) = K'(1) − K(1) ≈ 0.48`, the Gaussian `1/(2 G(1)) ≈ 1.04`. The cell draws 8 sets of 16
# rows of `L = 1024` such logits plus 51 fresh ones (`s = 1075/1024 ≈ 1.05`), finds the multiplier that
# restores the first `L` keys' entropy by the same bisection, and compares the slope `(μ − 1)/ln s` with
# both coefficients computed from the first `L` logits of each draw. Asserted (SE over the 8 draws): the
# slope is within 8 % of `κ` (`|mean(slope/κ − 1)| + 3 SE < 0.08`), and the Gaussian value is rejected
# (`|mean(slope/κ_Gauss − 1)| − 3 SE > 0.08`).

# %%
WIDTH_U, EXTRA_U = 4.0, 51  # logits Uniform(0, WIDTH_U); fresh keys added to L_ent
s_u = (L_ent + EXTRA_U) / L_ent
uniform = {"slope": [], "kappa": [], "gauss": []}
for k in range(N_DRAWS):
    z_u = WIDTH_U * torch.rand(N_QUERIES, L_ent + EXTRA_U, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(2000 + k))  # (16, L + 51) i.i.d. logits
    H_u = entropy_at(z_u[:, :L_ent], 1.0)  # the entropy of the first L keys
    uniform["kappa"].append(1 / weighted_variance(z_u[:, :L_ent]))
    uniform["gauss"].append(1 / (2 * (math.log(L_ent) - H_u)))
    uniform["slope"].append((restoring_multiplier(z_u, H_u) - 1) / math.log(s_u))  # all L + 51 keys
U = {key: torch.tensor(v) for key, v in uniform.items()}  # (draws,) each
e_w = math.exp(WIDTH_U)
exact_kappa = 1 / (1 - WIDTH_U**2 * e_w / (e_w - 1) ** 2)  # 1/Var_p(z), tilted density e^z on [0, WIDTH_U]
exact_deficit = (WIDTH_U * e_w / (e_w - 1) - 1) - math.log((e_w - 1) / WIDTH_U)  # G(1) = K'(1) - K(1)
ratio_kappa, ratio_gauss = U["slope"] / U["kappa"] - 1, U["slope"] / U["gauss"] - 1
print(f"i.i.d. logits Uniform(0, {WIDTH_U:g}), n = {L_ent} + {EXTRA_U} keys (s = {s_u:.3f}), "
      f"{N_DRAWS} draws of {N_QUERIES} rows:")
print(f"  κ = 1/Var_p(z) {mean_std(U['kappa'], 3)} (exact {exact_kappa:.3f}); Gaussian 1/(2 deficit) "
      f"{mean_std(U['gauss'], 3)} (exact {1 / (2 * exact_deficit):.3f})")
print(f"  measured slope (μ - 1)/ln s {mean_std(U['slope'], 3)}: slope/κ - 1 = {mean_std(ratio_kappa, 3)}, "
      f"slope/Gaussian - 1 = {mean_std(ratio_gauss, 3)}")
assert abs(ratio_kappa.mean()) + 3 * se(ratio_kappa) < 0.08, "where (A) holds the slope should be 1/Var_p"
assert abs(ratio_gauss.mean()) - 3 * se(ratio_gauss) > 0.08, "the Gaussian coefficient should fail for uniform logits"

# %% [markdown]
# **Reading the tables.** Vanilla's entropy rises by 0.65–0.68 nats per doubling of `n`, a little less
# than `ln 2 ≈ 0.69`: more keys compete, as (A) says, but the added keys are the far ones, whose logits
# have decayed. Interpolation adds to it (PI about 0.70 per doubling, YaRN without temperature 0.75–0.80),
# because lower frequencies make far keys look closer. YaRN's temperature pulls it back below vanilla's,
# though not to the `n = L` value (6.28, 6.69, 7.07 against 5.83).
#
# The second table tests the derivation on a head whose attention is spread: `H_L = 5.83` of
# `ln L = 6.93` nats, a query's largest weight is 0.07 on average, and `τ²σ² = 1.6` is well below
# `ln L`, so (A)'s no-dominant-key condition roughly holds.
#
# - *First order.* `κ = 1/Var_p(z) = 0.40 ± 0.06`, and (A)'s own solution has that slope at `s → 1`
#   (asserted on every draw). At `s = 1.25`, `1 + κ ln s` is 1 % above the measured multiplier; the same
#   criterion rejects eq. 22's 0.20 and Su's 0.14 (asserted) but not the Gaussian 0.46. The measured slope
#   `(μ − 1)/ln s` is 0.35 at `s = 1.25`. Just above `s = 1` it falls from 1.14 κ at `n = L + 10` (about
#   the Gaussian value, 1.15 κ) through 1.02 κ at `L + 20` to 0.93 κ at `L + 64`, so on this head it
#   singles out neither value: the keys added are far ones, not like the first `L`.
# - *The coefficient where (A) holds.* With i.i.d. uniform logits (the last cell) the measured slope is
#   `κ` to within 0.1 % ± 1.3 % over the draws, and 38 % above the Gaussian value (both asserted). So
#   `κ = 1/Var_p` is the first-order coefficient of (A) and (B), and the Gaussian form is a special case.
# - *Beyond first order the assumption, not the algebra, gives way.* (A)'s full prediction overshoots by
#   3 %, 7 % and 14 % at `s = 2, 4, 8`, and the first-order line by 5 %, 13 % and 22 %. With RoPE the
#   extra keys are far and their logits have decayed, so they add less than `ln s` of entropy and need
#   less sharpening than (A) assumes.
# - *Shape.* The measured multiplier is concave in `ln s`: it rises by 0.16, then 0.13, per doubling, as
#   the Gaussian solution does. Eq. 22's rises by 0.15, then 0.16 (convex).
# - *Eq. 22.* Its values (1.14, 1.30, 1.46) are below the measured 1.21 at `s = 2` and close to it at
#   `s = 8` (1.50). They are well below what YaRN's interpolated frequencies need (1.31, 1.59, 1.87), which
#   is why its temperature does not bring the entropy back to `H_L`. That does not make eq. 22 wrong: it
#   was fitted to LLaMA perplexity, and `κ` depends on the head through `Var_p`.
#
# §Reproduction asks whether the temperature helps on a trained toy.
#
# ### 6. Llama 3.1's `rope_type="llama3"`: by-parts in wavelength, no temperature (and LongRoPE)
#
# Llama 3.1 extends its 8,192-token pre-training context with a fixed per-pair rule (the released
# `rope_scaling` of Llama-3.1-8B: `factor 8`, `low_freq_factor 1`, `high_freq_factor 4`,
# `original_max_position_embeddings 8192`, base 500,000; `transformers`' `_compute_llama3_parameters`
# notes the same values as "the original implementation"). Meta's reference code hard-codes them in
# `apply_scaling` with the comment "Values obtained from grid search"
# ([`models/llama3/model.py`](https://github.com/meta-llama/llama-models/blob/d42f3959d14418bbf1ae1bebe54a84f757b89410/models/llama3/model.py)
# in meta-llama/llama-models). The Llama 3 report does not describe the rule: its 128K context comes from
# the continued long-context pre-training stage (§3.4.2), and the released checkpoints carry the rule in
# their config, so it is part of a model trained at long length, not a training-free extension like the
# toy of §Reproduction. With `λ_i = 2π/θ_i`, `L = 8192`, `s = 8`, it is
# three lines in the wavelength:
#
# 1. `λ_i < L / high_freq_factor = L/4`, i.e. the pair turns `r_i = L/λ_i > 4` times in `L`: keep `θ_i`;
# 2. `λ_i > L / low_freq_factor = L`, i.e. `r_i < 1`: `θ_i / s` (PI);
# 3. otherwise `θ'_i = (1 − γ) θ_i/s + γ θ_i` with `γ = (L/λ_i − 1)/(4 − 1) = (r_i − 1)/(4 − 1)`.
#
# Line 3 is YaRN's eq. 18 + 20 in its *paper* form (linear in `r`, not the code's `ln r`), with `α = 1`,
# `β = 4`, and there is no attention temperature (`attention_factor = 1`). So the from-scratch version is
# `yarn_paper(..., alpha=1, beta=4)`; §Check compares it with `ROPE_INIT_FUNCTIONS["llama3"]`. With
# `β = 4` instead of 32 far more fast pairs are left untouched, as the counts below show.
# **LongRoPE** (Ding et al. 2024, arXiv 2402.13753) replaces the hand-made ramp by one searched rescale
# factor per pair (separate lists for short and long inputs; `rope_type="longrope"` in `transformers`);
# it is the next step of this lineage and is not implemented here.

# %%
def inv_freq_llama3(d: int, base: float, s: float, L: int, low_freq_factor: float = 1.0,
                    high_freq_factor: float = 4.0) -> torch.Tensor:
    """Llama 3.1 scaling: NTK-by-parts linear in the turns r (YaRN eq. 18/20), alpha = low, beta = high."""
    return yarn_paper(d, base, s, L, alpha=low_freq_factor, beta=high_freq_factor)


llama3_freq = inv_freq_llama3(128, 5e5, 8.0, 8192)
turns_l3 = 8192 * inv_freq_default(128, 5e5) / (2 * math.pi)  # r_i for Llama 3 (d = 128, b = 5e5, L = 8192)
print(f"Llama 3.1 (b = 5e5, L = 8192, s = 8): {int((turns_l3 > 4).sum())} pairs kept (r > 4), "
      f"{int((turns_l3 < 1).sum())} divided by s (r < 1), {int(((turns_l3 >= 1) & (turns_l3 <= 4)).sum())} on the ramp; "
      f"YaRN's beta = 32 would keep only {int((turns_l3 > 32).sum())}")

# %% [markdown]
# ### 7. ALiBi
#
# ALiBi (Press et al., v2 §3) drops position embeddings altogether and adds a fixed bias `−m_h · (i − j)` to
# the logit of query `i` and key `j`, with head slopes the geometric sequence `m_h = 2^{−8h/H}`,
# `h = 1 … H` ("for a model with 8 heads, the slopes that we used are the geometric sequence
# 1/2¹, 1/2², …, 1/2⁸"). It is not a RoPE variant: no rotation, just a recency penalty that grows without
# bound, so far keys never gain weight at lengths beyond training. BLOOM and MPT use it (`transformers`:
# `build_alibi_tensor` in `models/bloom/modeling_bloom.py`, `build_mpt_alibi_tensor` in
# `models/mpt/modeling_mpt.py`).
#
# **What "extrapolates" means here, by the paper's own limit (ALiBi v2 App. B.2).** Evaluated with a
# sliding window of stride 1, which gives every prediction its full context, ALiBi's perplexity stays flat
# instead of improving as the input grows past `L`. The paper concludes that "when L_valid > L, ALiBi
# might not be using contexts longer than the ones it was trained on": its gains from longer inputs in
# nonoverlapping evaluation come from fewer predictions with little context (the "early token curse"). So
# ALiBi keeps a model from breaking past `L`; it does not show that the model uses the extra context.

# %%
def alibi_bias(num_heads: int, seq: int) -> torch.Tensor:
    """ALiBi bias -m_h (i - j) for keys j <= i (ALiBi §3; num_heads a power of 2). -> (heads, seq, seq)."""
    slopes = 2.0 ** (-8.0 * torch.arange(1, num_heads + 1) / num_heads)  # (heads,)
    distance = (torch.arange(seq)[:, None] - torch.arange(seq)[None, :]).clamp(min=0)  # (seq, seq): i - j
    return -slopes[:, None, None] * distance  # future keys are masked anyway


print("ALiBi slopes for 8 heads:", [f"1/{int(round(1 / -alibi_bias(8, 2)[h, 1, 0].item()))}" for h in range(8)])
print("ALiBi slopes for 4 heads:", [f"1/{int(round(1 / -alibi_bias(4, 2)[h, 1, 0].item()))}" for h in range(4)])

# %% [markdown]
# ### 8. Beyond one dimension: 2D RoPE and M-RoPE
#
# Nothing above needs the position to be a single number: each pair only needs *an* angle. Vision
# transformers with **2D RoPE** give half of a head's pairs the patch row and half the column, so
# `qᵀk` depends on the 2D offset; Qwen2-VL's **M-RoPE** gives every token three ids (temporal, height,
# width; equal for text, so text is plain 1D RoPE) and splits the 64 pairs of a 128-dim head as
# `mrope_section = [16, 24, 24]`: the 16 fastest pairs follow the temporal id, the next 24 the height, the
# last 24 the width. Both are built, checked against `transformers` and explained in
# [V6 · Qwen2-VL](../vlm/V6_qwen2_vl.ipynb) (`shared.mrope`). The cell shows the 2D case in three lines:
# with half the pairs turned by the row and half by the column, the score of two patches depends only on
# their (row, column) offset.

# %%
theta_2d = inv_freq_default(16)  # (8,) pairs: pairs 0-3 follow the row, pairs 4-7 the column (a toy split)


def rope_2d(x: torch.Tensor, row: int, col: int) -> torch.Tensor:
    """2D RoPE on interleaved pairs: the first half of the pairs turn by row, the second half by col. x: (16,)."""
    angles_2d = torch.cat([row * theta_2d[:4], col * theta_2d[4:]])  # (8,)
    return rotation_matrix(1.0, angles_2d) @ x


q2, k2 = torch.randn(2, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
same_offset = torch.stack([rope_2d(q2, r, c) @ rope_2d(k2, r + 2, c - 3) for r, c in [(0, 5), (7, 3), (11, 9)]])
# a property check, not a reference check: both sides use rotation_matrix; this side rotates k only, by the
# offset itself (row +2 on pairs 0-3, column -3 on pairs 4-7), as in §2
by_offset = q2 @ rotation_matrix(1.0, torch.cat([2 * theta_2d[:4], -3 * theta_2d[4:]])) @ k2
other_offset = rope_2d(q2, 0, 5) @ rope_2d(k2, 3, 2)  # offset (+3, -3): a different score
assert (same_offset - by_offset).abs().max() < 1e-12 and abs(other_offset - by_offset) > 1e-3
print("score at (row, col) offset (+2, -3) from three different patches:", [round(v.item(), 4) for v in same_offset],
      f"| q·R(+2, -3) k directly: {by_offset.item():.4f} | offset (+3, -3): {other_offset.item():.4f}")

# %% [markdown]
# ## Check against a reference
#
# Three independent references. (1) `transformers` 5.23: `LlamaRotaryEmbedding` (default frequencies and
# the cos/sin tables), `modeling_rope_utils.ROPE_INIT_FUNCTIONS` (`"linear"` = PI, `"dynamic"`, `"yarn"`, `"llama3"`),
# `apply_rotary_pos_emb`, a whole `LlamaAttention` layer and a whole two-layer `LlamaModel`, and MPT's ALiBi. (2) The papers' own equations,
# written independently above (YaRN eq. 18/20/22). (3) The course's `shared.rope`, which must equal
# `transformers` bit for bit. The from-scratch float64 code must agree with float32 `transformers` to float32
# rounding (`rtol = 1e-6`).

# %%
import transformers
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)
from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor


def tiny_llama_config(rope_parameters: dict, max_position_embeddings: int, heads: int = 2, kv_heads: int = 2,
                      head_dim: int = d) -> LlamaConfig:
    """A config only (no weights) with the given RoPE parameters."""
    return LlamaConfig(hidden_size=heads * head_dim, num_attention_heads=heads, num_key_value_heads=kv_heads,
                       head_dim=head_dim, num_hidden_layers=1, intermediate_size=4 * head_dim, vocab_size=32,
                       max_position_embeddings=max_position_embeddings, rope_parameters=dict(rope_parameters))


seq_now = 3 * L_llama + 100  # a current length past L, for Dynamic NTK
yarn_params = {"rope_type": "yarn", "rope_theta": b, "factor": s, "original_max_position_embeddings": L_llama}
llama3_params = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}  # Llama-3.1-8B's rope_scaling
cases = {  # name: (transformers config, its init function, from-scratch (inv_freq, scale), shared.rope kind)
    "default": (tiny_llama_config({"rope_type": "default", "rope_theta": b}, L_llama),
                LlamaRotaryEmbedding.compute_default_rope_parameters, (inv_freq_default(d, b), 1.0), "default"),
    "linear (PI)": (tiny_llama_config({"rope_type": "linear", "rope_theta": b, "factor": s}, L_llama),
                    ROPE_INIT_FUNCTIONS["linear"], (inv_freq_pi(d, b, s), 1.0), "linear"),
    "dynamic": (tiny_llama_config({"rope_type": "dynamic", "rope_theta": b, "factor": s}, L_llama),
                ROPE_INIT_FUNCTIONS["dynamic"], (inv_freq_dynamic(d, b, s, L_llama, seq_now), 1.0), "dynamic"),
    "yarn": (tiny_llama_config(yarn_params, int(s * L_llama)), ROPE_INIT_FUNCTIONS["yarn"], (yarn_freq, yarn_scale), "yarn"),
    "llama3": (tiny_llama_config(llama3_params, 131072), ROPE_INIT_FUNCTIONS["llama3"], (llama3_freq, 1.0), None),
}
for name, (config, init_fn, (ours, our_scale), _) in cases.items():
    ref, ref_scale = init_fn(config, device=None, seq_len=seq_now)  # seq_len is read by "dynamic" only
    err = assert_close(ours, ref.double(), rtol=1e-6, atol=0.0, name=name)
    assert abs(our_scale - ref_scale) < 1e-12, name
    print(f"{name:12s} from scratch (float64) vs transformers: max abs error {error_bound(err, 1e-7)}, "
          f"attention factor {ref_scale:.4f}")

# Static NTK-aware has no rope_type of its own: it is "dynamic" with factor 1 at s * L tokens.
ntk_config = tiny_llama_config({"rope_type": "dynamic", "rope_theta": b, "factor": 1.0}, L_llama)
ntk_ref, _ = ROPE_INIT_FUNCTIONS["dynamic"](ntk_config, device=None, seq_len=int(s * L_llama))
err = assert_close(inv_freq_ntk(d, b, s), ntk_ref.double(), rtol=1e-6, atol=0.0, name="ntk")
print(f"{'ntk':12s} from scratch vs transformers 'dynamic' (factor 1, s*L tokens): {error_bound(err, 1e-7)}")
# llama3 is the paper's linear-in-r ramp with beta = 4; YaRN's beta = 32 in the same place would not match:
wrong_beta = yarn_paper(128, 5e5, 8.0, 8192, alpha=1.0, beta=32.0)
ref_l3, _ = ROPE_INIT_FUNCTIONS["llama3"](cases["llama3"][0], device=None)
assert ((wrong_beta - ref_l3.double()).abs() / ref_l3.double()).max() > 0.1
print("llama3 with YaRN's beta = 32 instead of 4: largest relative gap "
      f"{((wrong_beta - ref_l3.double()).abs() / ref_l3.double()).max():.2f} (so the match above is not trivial)")

# %% [markdown]
# The course's `shared.rope` (used by §Reproduction and later readings) must return *bitwise* the same
# float32 frequencies and attention factor as `transformers` for every kind it supports (it has no `llama3`).

# %%
for name, (config, init_fn, _, kind) in cases.items():
    if kind is None:
        continue
    ref, ref_scale = init_fn(config, device=None, seq_len=seq_now)
    shared, shared_scale = shared_rope.rope_init(kind, d, b, factor=s, original_max_position_embeddings=L_llama,
                                                 seq_len=seq_now)
    assert torch.equal(shared, ref) and shared_scale == ref_scale, name  # bitwise
assert torch.equal(shared_rope.rope_init("ntk", d, b, factor=s)[0], ntk_ref)
print("shared.rope == transformers bitwise for default, linear, dynamic, yarn and ntk")

# %% [markdown]
# **YaRN against the paper's own equations.** `yarn_paper` is eq. 17/18/20 as printed; `transformers`
# follows the official code. They must agree exactly on the pairs outside the ramp (kept, `r > β`, and
# interpolated, `r < α`); on the ramp they differ, by design of the code (Walkthrough §5). With
# `truncate=False` (`transformers`' switch for the code's rounding), `transformers` must equal `yarn_code`
# unrounded, the ramp linear in `ln r`. The attention factor must equal eq. 22 for several `s`, and the
# `mscale` ratio of Walkthrough §5 when `mscale` and `mscale_all_dim` are given.

# %%
ref_yarn, _ = ROPE_INIT_FUNCTIONS["yarn"](cases["yarn"][0], device=None)
outside = (turns >= 32) | (turns <= 1)
err = assert_close(yarn_paper(d, b, s, L_llama)[outside], ref_yarn.double()[outside], rtol=1e-6, atol=0.0,
                   name="YaRN eq. 20 off the ramp")
ramp_gap = ((yarn_paper(d, b, s, L_llama) - ref_yarn.double()).abs() / theta)[~outside]
print(f"eq. 20 vs transformers on the {int(outside.sum())} pairs off the ramp: {error_bound(err, 1e-7)}; on the "
      f"{int((~outside).sum())} ramp pairs they differ by up to {ramp_gap.max():.2f}·θ_i (the ramp is linear in log r there)")
untruncated = tiny_llama_config({**yarn_params, "truncate": False}, int(s * L_llama))
ref_untrunc, _ = ROPE_INIT_FUNCTIONS["yarn"](untruncated, device=None)
err = assert_close(yarn_code(d, b, s, L_llama, rounded=False), ref_untrunc.double(), rtol=1e-6, atol=0.0,
                   name="YaRN, truncate=False")
print(f"ramp linear in log r, unrounded, vs transformers truncate=False: {error_bound(err, 1e-7)}")
for s_test in (1.0, 2.0, 8.0, 32.0):
    _, factor_ref = ROPE_INIT_FUNCTIONS["yarn"](tiny_llama_config({**yarn_params, "factor": s_test}, int(s_test * L_llama)), device=None)
    assert abs(factor_ref - yarn_temperature(s_test)) < 1e-12, s_test
print("attention factor == eq. 22, 0.1 ln s + 1, for s = 1, 2, 8, 32:",
      [round(yarn_temperature(v), 4) for v in (1.0, 2.0, 8.0, 32.0)])
for extra in ({"mscale": 0.707, "mscale_all_dim": 1.0}, {"mscale": 0.707, "mscale_all_dim": 0.707}, {"mscale": 0.707}):
    _, factor_ref = ROPE_INIT_FUNCTIONS["yarn"](tiny_llama_config({**yarn_params, **extra}, int(s * L_llama)), device=None)
    m_q, m_all = extra["mscale"], extra.get("mscale_all_dim")
    ours = (0.1 * m_q * math.log(s) + 1) / (0.1 * m_all * math.log(s) + 1) if m_all else yarn_temperature(s)
    assert abs(factor_ref - ours) < 1e-12, extra
    print(f"s = {s:g}, {extra}: cos/sin factor {factor_ref:.4f}")

# %% [markdown]
# **Dynamic NTK through the module, the path a user hits.** `LlamaRotaryEmbedding.forward` with
# `rope_type="dynamic"` recomputes the frequencies from the current length `l = max(position_ids) + 1` once
# `l > L`. A short input must get plain RoPE and a long one (`l = 3L + 100`) the NTK base for
# `s = f·l/L − (f − 1)`, compared with `rope_half`-style tables built from `inv_freq_dynamic` (float64;
# tolerance for `transformers`' float32 angles as in the next cell).

# %%
dyn_module = LlamaRotaryEmbedding(cases["dynamic"][0])
probe = torch.zeros(1, 1, d)
for length in (100, seq_now):
    pid = torch.arange(length - 5, length)[None]  # the last five positions of an input of this length
    cos_dyn, _ = dyn_module(probe, pid)  # (1, 5, d)
    ang = pid[0].double()[:, None] * inv_freq_dynamic(d, b, s, L_llama, length)  # (5, d/2)
    tol_dyn = 2 * length * 2**-24
    err = assert_close(cos_dyn[0].double(), ang.cos().repeat(1, 2), atol=tol_dyn, rtol=0.0, name=f"dynamic at l={length}")
    print(f"dynamic, input length {length:5d}: LlamaRotaryEmbedding.forward vs inv_freq_dynamic, max error "
          f"< 1 x the float32-angle tolerance 2·m·2^-24 = {tol_dyn:.1e}")  # asserted above; the ratio is CPU-dependent

# %% [markdown]
# **Dynamic NTK with a KV cache: what `generate()` computes.**
#
# - *The method.* Dynamic scaling picks `s` from the current length, so at decoding step `t` (length
#   `l = t + 1 > L`) *every* key should be rotated with the base for that `l` (YaRN v2 §3.3, quoted in
#   Walkthrough §4).
# - *`transformers`.* It caches keys *after* RoPE: the key of token `j` keeps the rotation of the step that
#   wrote it (base for `l = j + 1`, or the original base while `l ≤ L`), and only the new token's query and
#   key get the current base.
# - *The check.* A one-layer `LlamaForCausalLM` (random float64 weights, head dim 16,
#   `max_position_embeddings = L = 16`, `"dynamic"` with `factor = 2`, and the same model with default
#   RoPE), a prompt of 8 tokens, then 32 tokens one at a time with the cache, against the method's
#   definition: each step recomputed without cache (the last step is a plain full forward over all 40
#   tokens). With default RoPE the two agree to float64 rounding at every step; with Dynamic NTK they agree
#   while `l ≤ L` and differ from the first step past `L` on.
# - *For a practitioner.* With `use_cache=True` (the default of `generate()`) a Dynamic-NTK model past `L`
#   runs a different function than the paper's, one in which the score of a cached key is no longer a
#   function of `n − m` alone, and cached and uncached generation of the same prompt differ. Perplexity
#   computed with one full forward pass per window and no cache does not see it.
# - *The fix and its status.* Cache keys before the rotation (or do not cache, at quadratic cost). The
#   discrepancy was reported in [issue #25104](https://github.com/huggingface/transformers/issues/25104)
#   (closed); on [PR #27227](https://github.com/huggingface/transformers/pull/27227) (closed, not merged) a
#   maintainer wrote that the known fixes "massively decrease the inference speed, which makes it a net
#   negative change".
# - *Does it hurt quality?* An empirical question the toy does not answer (it has random weights). On the
#   PR that added the scaling ([#24653](https://github.com/huggingface/transformers/pull/24653)) bloc97
#   reported that with the rotated keys cached "the model works without problems".

# %%
from transformers import LlamaForCausalLM

L_kv, T_kv, prompt = 16, 40, 8  # trained length (max_position_embeddings), total tokens, prompt length
ids_kv = torch.randint(0, 32, (1, T_kv), generator=torch.Generator().manual_seed(0))  # (batch, T)
kv_gap, logit_size = {}, {}
for name, params in {"default": {"rope_type": "default", "rope_theta": b},
                     "dynamic": {"rope_type": "dynamic", "rope_theta": b, "factor": 2.0}}.items():
    cfg_kv = tiny_llama_config(params, L_kv, head_dim=16)
    cfg_kv.initializer_range = 0.2  # larger random weights: position effects are O(1)
    torch.manual_seed(0)  # the same weights for both RoPE kinds
    lm = LlamaForCausalLM(cfg_kv).double().eval()
    with torch.no_grad():
        cache = lm(ids_kv[:, :prompt], use_cache=True).past_key_values  # the prompt (l = 8 <= L: no scaling)
        with_cache = torch.stack([lm(ids_kv[:, t : t + 1], past_key_values=cache, use_cache=True).logits[0, -1]
                                  for t in range(prompt, T_kv)])  # one token per step: (T - prompt, vocab)
        no_cache = torch.stack([lm(ids_kv[:, : t + 1], use_cache=False).logits[0, -1]
                                for t in range(prompt, T_kv)])  # every step recomputed from scratch
    kv_gap[name] = (with_cache - no_cache).abs().amax(-1)  # (T - prompt,): one max gap per decoding step
    logit_size[name] = no_cache.abs().max().item()
within, past = slice(0, L_kv - prompt), slice(L_kv - prompt, None)  # steps with l <= L, steps with l > L
assert kv_gap["default"].max() < 1e-12 and kv_gap["dynamic"][within].max() < 1e-12
assert kv_gap["dynamic"][past].min() > 1e-6  # every step past L differs
print(f"default RoPE, cached vs recomputed logits: max gap over all {T_kv - prompt} steps "
      f"{error_bound(kv_gap['default'].max().item(), 1e-12)} (largest |logit| {logit_size['default']:.1f})")
print(f"dynamic NTK, cached vs recomputed logits: steps with l <= L {error_bound(kv_gap['dynamic'][within].max().item(), 1e-12)}; "
      f"steps with l > L {kv_gap['dynamic'][past].min():.2f} to {kv_gap['dynamic'][past].max():.2f} "
      f"(largest |logit| {logit_size['dynamic']:.1f})")

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

# %% [markdown]
# **The same rotation in one fused pass.** A model rotates q and k in every layer; the course's Triton kernel
# (`shared.kernels.rope_qk_from_positions`, in `shared/kernels/rope.py`; [F7](F7_fast_attention.ipynb) walks
# through its sibling, the attention kernel) computes the angles $m\theta_i$ inside the kernel, so the cos/sin tables are never
# written to memory, and rotates q and k in one launch. On a GPU (`device` is `cuda`) this cell runs the kernel; on
# a CPU it runs the PyTorch reference `shared.rope`, with the same signature. Either way the result must match
# `transformers`' YaRN rotation above, to the float32-angle tolerance (the kernel's `cos`/`sin` are the GPU's, not
# the CPU's, so bitwise equality is not expected there):

# %%
from shared.kernels.rope import rope_qk_from_positions

q_dev, k_dev = q.float().to(device), k.float().to(device)  # (2, 1, 50, d): batch, heads, seq, d
q_fused, k_fused = rope_qk_from_positions(q_dev, k_dev, position_ids.to(device), inv.to(device),
                                          attention_scaling=scale)
err_fused = max(assert_close(q_fused.cpu(), q_ref, atol=tol, rtol=0.0, name="fused RoPE q"),
                assert_close(k_fused.cpu(), k_ref, atol=tol, rtol=0.0, name="fused RoPE k"))
print(f"shared.kernels.rope_qk_from_positions on {device.type}: q and k equal transformers' YaRN rotation "
      f"within {tol:.1e}")


def permute_for_sliced_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """transformers' convert_llama_weights_to_hf `permute`: interleaved rows -> rotate-half rows, per head."""
    dim1, dim2 = w.shape
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


h_in = torch.randn(12, 16, dtype=torch.float64, generator=g)  # (seq, hidden) inputs
wq, wk = torch.randn(2, d, 16, dtype=torch.float64, generator=g)  # one head of d = 128 in Meta's layout
pos = torch.arange(12)
scores_meta = rope_complex(h_in @ wq.T, pos, theta) @ rope_complex(h_in @ wk.T, pos, theta).T  # (seq, seq)
wq_hf, wk_hf = permute_for_sliced_rotary(wq, 1), permute_for_sliced_rotary(wk, 1)
scores_hf = rope_half(h_in @ wq_hf.T, pos, theta) @ rope_half(h_in @ wk_hf.T, pos, theta).T
err = assert_close(scores_hf, scores_meta, atol=1e-9, rtol=1e-9, name="interleaved vs rotate-half scores")
print(f"attention scores, interleaved (Meta) vs permuted weights + rotate-half (HF): max error {error_bound(err, 1e-12)}")

# %% [markdown]
# **End to end: a whole `LlamaAttention` layer** from a tiny YaRN config (4 query heads, 2 key/value heads,
# so grouped-query attention; `head_dim = 16`; trained length 64 stretched 4×), batch 2, positions 100–109
# (past the trained length), causal mask, random weights. The reading's pieces (`yarn_code`,
# `yarn_temperature`, `rope_half`, a plain softmax attention with the key/value heads repeated) must give
# the layer's output.

# %%
attn_cfg = tiny_llama_config({"rope_type": "yarn", "rope_theta": b, "factor": 4.0, "original_max_position_embeddings": 64},
                             256, heads=4, kv_heads=2, head_dim=16)
attn_cfg._attn_implementation = "eager"
torch.manual_seed(0)
layer = LlamaAttention(attn_cfg, layer_idx=0).double()
hidden = torch.randn(2, 10, 64, dtype=torch.float64, generator=g)  # (batch, seq, hidden)
pids = torch.arange(100, 110)
cos_l, sin_l = LlamaRotaryEmbedding(attn_cfg)(hidden, pids[None].expand(2, -1))
causal_add = torch.full((10, 10), float("-inf"), dtype=torch.float64).triu(1)  # (seq, seq) additive mask


def split(w: torch.nn.Linear, n: int) -> torch.Tensor:
    """Project the hidden states and split into n heads of 16. -> (batch, heads, seq, 16)."""
    return (hidden @ w.weight.T).view(2, 10, n, 16).transpose(1, 2)


with torch.no_grad():
    out_ref, _ = layer(hidden, position_embeddings=(cos_l, sin_l), attention_mask=causal_add[None, None])
    freq16, scale16 = yarn_code(16, b, 4.0, 64), yarn_temperature(4.0)
    q_l = rope_half(split(layer.q_proj, 4), pids, freq16, scale16)
    k_l = rope_half(split(layer.k_proj, 2), pids, freq16, scale16).repeat_interleave(2, dim=1)  # GQA: 2 -> 4 heads
    v_l = split(layer.v_proj, 2).repeat_interleave(2, dim=1)
    att = torch.softmax(q_l @ k_l.transpose(-1, -2) / math.sqrt(16) + causal_add, dim=-1)  # (batch, heads, seq, seq)
    out_ours = layer.o_proj((att @ v_l).transpose(1, 2).reshape(2, 10, 64))
err = assert_close(out_ours, out_ref, atol=1e-5, rtol=0.0, name="LlamaAttention with YaRN")
print(f"LlamaAttention (YaRN, GQA, batch 2, positions 100-109) vs the reading's pieces: max error {error_bound(err, 1e-6)}")

# %% [markdown]
# **A whole model.** YaRN changes nothing in a Llama model but the rotary frequencies and the cos/sin
# factor. So a two-layer `LlamaModel` built from the YaRN config above (hidden size 64, 4 query heads, 2
# key/value heads, random float64 weights) must give the same hidden states as the same weights built
# with *default* RoPE, once that model's rotary embedding gets the reading's `yarn_code` frequencies and
# `yarn_temperature` factor. Positions 100–119 are past the trained 64; the default model as built is the
# control.

# %%
from transformers import LlamaModel

whole = {}
for kind, params in {"yarn": attn_cfg.rope_parameters, "default": {"rope_type": "default", "rope_theta": b}}.items():
    cfg_whole = tiny_llama_config(dict(params), 256, heads=4, kv_heads=2, head_dim=16)
    cfg_whole.num_hidden_layers, cfg_whole.initializer_range = 2, 0.2  # larger random weights: position effects O(1)
    whole[kind] = LlamaModel(cfg_whole).double().eval()
whole["default"].load_state_dict(whole["yarn"].state_dict())  # the same weights (rotary buffers are not saved)
ids_w = torch.randint(0, 32, (2, 20), generator=torch.Generator().manual_seed(7))  # (batch, seq)
pos_w = torch.arange(100, 120)[None].expand(2, -1)
with torch.no_grad():
    hidden_yarn = whole["yarn"](ids_w, position_ids=pos_w).last_hidden_state  # (batch, seq, 64)
    hidden_default = whole["default"](ids_w, position_ids=pos_w).last_hidden_state
    whole["default"].rotary_emb.inv_freq = yarn_code(16, b, 4.0, 64).float()  # the reading's pieces
    whole["default"].rotary_emb.attention_scaling = yarn_temperature(4.0)
    hidden_ours = whole["default"](ids_w, position_ids=pos_w).last_hidden_state
# float32 angles: our float64 frequencies rounded to float32 may differ from transformers' in the last bit,
# i.e. by ~1e-7 relative, times positions ~100, through two layers of large random weights
err = assert_close(hidden_ours, hidden_yarn, atol=1e-4, rtol=0.0, name="LlamaModel with YaRN")
control = (hidden_default - hidden_yarn).abs().max().item()
assert control > 0.1
print(f"2-layer LlamaModel, YaRN config vs default RoPE + yarn_code/yarn_temperature: max error "
      f"{error_bound(err, 1e-4)} (float32 angles); default RoPE as built differs by {control:.1f}")

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
# **Where the reference and the papers differ, and when it fires.**
#
# - *YaRN ramp*: `transformers` (= the official code) ramps linearly in the pair index, i.e. in `ln r`, with
#   the ends rounded outwards; eq. 18 is linear in `r`. It fires for every pair with `α < r_i < β` (for the
#   Llama-2 head above, the ramp pairs counted in the first YaRN cell) and never elsewhere (checked). The
#   code is what released checkpoints use; eq. 18 would give a different model.
# - *Dynamic NTK*: `transformers` and the authors' code use `s = f·l/L − (f − 1)`; the paper's `max(1, l/L)`
#   is the case `f = 1`. It fires only when `factor ≠ 1` and `l > L`.
# - *Dynamic NTK with a KV cache*: `transformers` caches keys after RoPE, so each cached key keeps the base
#   of the step that wrote it; YaRN v2 §3.3 says to cache them before RoPE, which gives what recomputing
#   without cache gives, the method as defined, so the paper is right and the cached run computes a
#   different function. It fires in cached decoding (`generate()`'s default) from the first step past `L`.
# - *Static NTK-aware* has no `rope_type`; it is `"dynamic"` with `factor = 1` evaluated at `l = sL`
#   (checked above).

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


assert toeplitz_gap(S_rope) < 1e-9 < toeplitz_gap(S_abs)
print(f"RoPE:       max spread along a diagonal {error_bound(toeplitz_gap(S_rope), 1e-12)}  (score range {S_rope.min():.2f} .. {S_rope.max():.2f})")
print(f"sinusoidal: max spread along a diagonal {toeplitz_gap(S_abs):.2f}")

# %% [markdown]
# ### 2. Past the trained length: vanilla vs PI vs NTK vs YaRN vs ALiBi on a tiny model
#
# **Claim under test.** Vanilla RoPE degrades past `L` (ALiBi v2 Fig. 1, PI v2 §2.2); PI, NTK-aware and YaRN
# recover without fine-tuning to different degrees (YaRN v2 App. B.3, Fig. 5: Dynamic-PI and Dynamic-YaRN
# on Llama 2 without fine-tuning; its headline numbers are *with* fine-tuning, not reproduced here); NTK-aware needs `s` above `T/L`
# (YaRN v2 §3.1); YaRN adds a temperature (§3.4); ALiBi extrapolates (ALiBi v2 Fig. 1).
#
# **Task: "which signal token came last?"** Tokens from a vocabulary of 16; 4 of them are *signal* tokens,
# each position holds one with probability 0.15 (position 0 always does), the rest are noise tokens. The
# target at every position `t` is the most recent signal token at or before `t`. One attention layer can
# solve it with content (attend to signal tokens) plus a **recency preference** (the nearest one wins), the
# kind of position use language models need, and ALiBi provides recency by construction. A RoPE model has
# to learn recency from the rotation; past `L` the slow pairs turn back and far keys can look recent again.
# The task needs little context: the target sits on average `(1 − 0.15)/0.15 ≈ 5.7` positions back, and
# more than 30 back with probability `0.85³¹ ≈ 0.6 %`. So it tests whether a recipe *breaks* past `L`,
# not whether it uses the longer context, and it is ALiBi's best case (ALiBi v2 App. B.2, Walkthrough §7).
#
# **Models.** Embedding (dim 32) → one causal attention layer → output layer, no MLP, no bias, `b = 10⁴`.
# Four families with the same parameter count, the same initial weights and the same data stream per seed:
#
# - **RoPE 2x16**: 2 heads of `d = 16` (8 pairs, wavelengths 6 to 19,869 tokens);
# - **RoPE 4x8**: 4 heads of `d = 8` (4 pairs, wavelengths 6, 63, 628, 6,283), the *same head split as
#   ALiBi*, so RoPE and ALiBi differ only in the position mechanism;
# - **ALiBi 4x8**: 4 heads of `d = 8` with slopes 1/4, 1/16, 1/64, 1/256, the main ALiBi arm;
# - **ALiBi 2x16** (the head-count ablation): 2 heads of `d = 16` with slopes 1/16 and 1/256, trained in
#   the same batch as RoPE 2x16. It shows why ALiBi gets 4 heads: with 2 it fails *in distribution*
#   (printed below; Exercise 4(a) explains why).
#
# **Budget.** 8 seeds per family, each trained for 170 Adam steps (lr 1e-2) on batches of 16 sequences of
# length `L = 64`; the models of a family are trained at once as a batch of independent models (stacked
# weights, `einsum`; the loss is a sum of per-model losses and Adam is elementwise, so mathematically these
# are 8 separate runs), and the two families with the same head split share one batch of 16 (RoPE 2x16
# with ALiBi 2x16, RoPE 4x8 with ALiBi 4x8). A second seed set of RoPE 4x8 (8 more models, other init and
# data seeds, same budget) is trained further down for the two 4x8 findings that one set does not settle.
# **Evaluation.** Lengths `T = L, 2L, 4L, 8L`, 1,536 fresh tokens per model and length (at `8L` that is
# 1,344 scored positions per model, and every recipe sees the same tokens), accuracy on the
# positions past `L` (all positions for `T = L`), *no fine-tuning*. How much the draw of evaluation tokens
# matters is measured below, after the paired differences (a standard error from the spread between each
# model's sequences, and one fresh draw of the `8L` tokens). The RoPE recipes are applied to the same
# trained RoPE models at `s = T/L` (which is also what Dynamic NTK picks for a length-`T` forward pass),
# plus the ablations: NTK-aware at `s = 2T/L`, YaRN without its temperature, YaRN with the paper's eq. 18
# ramp instead of the code's, and that eq. 18 ramp with `β = 4` instead of 32 (next paragraph).
#
# **YaRN's `α`, `β` at toy scale.** The paper says they "should be tuned on a case-by-case basis" and gives
# `α = 1`, `β = 32` for the Llama family (§3.2), where a `d = 128` head at `L = 4096` has 21 pairs above 32
# turns (Walkthrough §5). In the toy no pair comes near 32: the fastest pair (`θ_0 = 1` for every head
# size) turns `L/2π = 10.2` times in `L = 64` (printed below). So the ramp's upper end never fires: eq. 18
# gives every pair `γ < 1`, even the fastest one (`θ'/θ = 0.38` at `s = 8`), and the code's ramp keeps
# pair 0 only because its start index, `i(β = 32) < 0`, is clamped to 0. With the code's outward rounding,
# `β = 4` gives the same ramp ends on both toy heads, so the code arm cannot tell `β = 4` from 32 (checked
# below); in eq. 18's form `β = 4` keeps pair 0. The arm "YaRN, eq. 18, β = 4" (Llama 3.1's `α`, `β`, with
# YaRN's temperature) measures what that retuning is worth against eq. 18 with `β = 32`.

# %%
VOCAB, N_SIGNAL, P_SIGNAL, L_TRAIN, DIM = 16, 4, 0.15, 64, 32
N_SEEDS, STEPS, BATCH, LR = 8, 170, 16, 1e-2
FAMILIES = {"RoPE 2x16": 2, "RoPE 4x8": 4, "ALiBi 4x8": 4, "ALiBi 2x16": 2}  # family -> heads (head dim = 32 / heads)
ROPE_FAMILIES = ("RoPE 2x16", "RoPE 4x8")
EVAL = {L_TRAIN: 24, 2 * L_TRAIN: 12, 4 * L_TRAIN: 6, 8 * L_TRAIN: 3}  # length T -> sequences per model (1,536 tokens)


def make_batch(gen: torch.Generator, n_models: int, batch: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens (n_models, batch, T) and targets: the most recent signal token (< N_SIGNAL) at or before t."""
    noise = torch.randint(N_SIGNAL, VOCAB, (n_models, batch, T), generator=gen)
    signal = torch.randint(0, N_SIGNAL, (n_models, batch, T), generator=gen)
    is_signal = torch.rand(n_models, batch, T, generator=gen) < P_SIGNAL
    is_signal[..., 0] = True
    x = torch.where(is_signal, signal, noise)
    last = torch.cummax(torch.where(is_signal, torch.arange(T), 0), dim=-1).values  # index of the last signal
    return x, torch.gather(x, -1, last)


x_demo, y_demo = make_batch(torch.Generator().manual_seed(0), 1, 1, 16)
print("tokens: ", x_demo[0, 0].tolist(), "\ntargets:", y_demo[0, 0].tolist(), "(signal tokens are 0-3)")


def init_models(n_models: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Stacked weights of n_models independent models: embedding, fused q/k/v projection, output."""
    def param(*shape: int, scale: float) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale).requires_grad_()
    return {"emb": param(n_models, VOCAB, DIM, scale=1.0), "wqkv": param(n_models, DIM, 3 * DIM, scale=DIM**-0.5),
            "wo": param(n_models, DIM, VOCAB, scale=DIM**-0.5)}


def cos_sin(T: int, inv_freq: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate-half cos/sin tables (T, d), times YaRN's sqrt(1/t) when given."""
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq.float()
    return torch.cat([ang.cos()] * 2, -1) * scale, torch.cat([ang.sin()] * 2, -1) * scale


def forward(p: dict, x: torch.Tensor, heads: int, rope: tuple | None = None, bias: torch.Tensor | None = None,
            return_attention: bool = False) -> torch.Tensor:
    """Batched models. x: (n_models, batch, T) -> logits (n_models, batch, T, vocab). RoPE and/or additive bias;
    cos/sin (T, hd) or per model (n, 1, 1, T, hd), bias (heads, T, T) or per model (n, 1, heads, T, T)."""
    n, bsz, T = x.shape
    hd = DIM // heads
    h = p["emb"][torch.arange(n)[:, None, None], x]  # (n, batch, T, DIM)
    qkv = torch.einsum("nbtd,nde->nbte", h, p["wqkv"]).view(n, bsz, T, 3, heads, hd).permute(3, 0, 1, 4, 2, 5)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (n, batch, heads, T, hd)
    if rope is not None:
        cos, sin = rope
        q = q * cos + torch.cat((-q[..., hd // 2:], q[..., : hd // 2]), -1) * sin
        k = k * cos + torch.cat((-k[..., hd // 2:], k[..., : hd // 2]), -1) * sin
    additive = torch.full((T, T), float("-inf")).triu(1)  # causal mask, (T, T)
    if bias is not None:
        additive = additive + bias  # ALiBi: added to the small table, then once to the logits
    att = torch.softmax((q / math.sqrt(hd)) @ k.transpose(-1, -2) + additive, dim=-1)  # (n, batch, heads, T, T)
    if return_attention:
        return att
    out = (att @ v).transpose(2, 3).reshape(n, bsz, T, DIM)
    return torch.einsum("nbtd,ndv->nbtv", out, p["wo"])


# RoPE and ALiBi models with the same head split train as one batch of 16 models: RoPE models get a zero
# bias, ALiBi models the identity rotation (cos 1, sin 0), so each model computes exactly its own function.
is_rope = torch.arange(2 * N_SEEDS) < N_SEEDS  # models 0-7: RoPE, models 8-15: ALiBi
sel = is_rope[:, None, None, None, None]


def mixed_run(heads: int) -> tuple[int, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(heads, RoPE tables (16, 1, 1, L, hd), bias (16, 1, heads, L, L)) for 8 RoPE then 8 ALiBi models."""
    cos_h, sin_h = cos_sin(L_TRAIN, shared_rope.rope_inv_freq(DIM // heads))  # (L, hd)
    rope = (torch.where(sel, cos_h, 1.0), torch.where(sel, sin_h, 0.0))
    return heads, rope, torch.where(sel, 0.0, alibi_bias(heads, L_TRAIN).float())


TRAIN_RUNS = {("RoPE 2x16", "ALiBi 2x16"): mixed_run(2), ("RoPE 4x8", "ALiBi 4x8"): mixed_run(4)}  # families: run

# %% [markdown]
# The turns `r_i = Lθ_i/2π` of each toy pair over `L = 64`, and what YaRN's ramp does with them at `s = 8`
# (`θ'_i/θ_i`): the code's ramp with `β = 32` and `β = 4`, and eq. 18 with `β = 32` and `β = 4`.

# %%
for heads in (2, 4):
    hd = DIM // heads
    theta_h = inv_freq_default(hd)
    code32 = shared_rope.rope_init("yarn", hd, factor=8.0, original_max_position_embeddings=L_TRAIN)[0]
    code4 = shared_rope.rope_init("yarn", hd, factor=8.0, original_max_position_embeddings=L_TRAIN, beta_fast=4.0)[0]
    same = all(torch.equal(shared_rope.rope_init("yarn", hd, factor=f, original_max_position_embeddings=L_TRAIN)[0],
                           shared_rope.rope_init("yarn", hd, factor=f, original_max_position_embeddings=L_TRAIN,
                                                 beta_fast=4.0)[0]) for f in (2.0, 4.0, 8.0))
    turns_h = L_TRAIN * theta_h / (2 * math.pi)  # r_i, (hd/2,)
    print(f"{heads}x{hd}: turns over L per pair " + " ".join(f"{v:.2f}" for v in turns_h.tolist())
          + f" (largest {turns_h.max():.1f} < beta = 32); code ramp identical for beta = 4 and 32 at s = 2, 4, 8: {same}")
    for label, new in [("code, beta = 32", code32.double()), ("code, beta = 4", code4.double()),
                       ("eq. 18, beta = 32", yarn_paper(hd, 1e4, 8.0, L_TRAIN)),
                       ("eq. 18, beta = 4", yarn_paper(hd, 1e4, 8.0, L_TRAIN, beta=4.0))]:
        print(f"   {label:18s} θ'/θ " + " ".join(f"{v:.3f}" for v in (new / theta_h).tolist()))

# %% [markdown]
# Training: four families, 8 seeds each, 170 steps; the loss is the sum over models of each model's mean
# cross-entropy, so each model gets exactly its own gradient.

# %% tags=["nbval-ignore-output"]
def train(n_fams: int, heads: int, rope: tuple, bias: torch.Tensor | None, init_seed: int = 0, data_seed: int = 1,
          progress: tqdm | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Train n_fams x N_SEEDS models for STEPS steps; model k of every family starts from the weights of seed k
    and sees the data stream of seed k. -> (detached weights, final training-batch loss per model)."""
    n = N_SEEDS * n_fams
    params = {key: torch.cat([w.detach()] * n_fams).requires_grad_()
              for key, w in init_models(N_SEEDS, torch.Generator().manual_seed(init_seed)).items()}
    opt = torch.optim.Adam(params.values(), lr=LR)
    data = torch.Generator().manual_seed(data_seed)
    for _ in range(STEPS):
        x, y = make_batch(data, N_SEEDS, BATCH, L_TRAIN)
        x, y = torch.cat([x] * n_fams), torch.cat([y] * n_fams)
        out = forward(params, x, heads, rope=rope, bias=bias)
        per_model = F.cross_entropy(out.reshape(-1, VOCAB), y.reshape(-1), reduction="none").view(n, -1).mean(1)
        opt.zero_grad()
        per_model.sum().backward()
        opt.step()
        if progress is not None:
            progress.update()
    return {key: w.detach() for key, w in params.items()}, per_model.detach()


models, final_loss = {}, {}
progress = tqdm(total=len(TRAIN_RUNS) * STEPS, desc="train 4 x 8 models at L=64")
for fams, (heads, rope, bias) in TRAIN_RUNS.items():
    params, last_loss = train(len(fams), heads, rope, bias, progress=progress)
    for j, fam in enumerate(fams):
        models[fam] = {key: w[j * N_SEEDS:(j + 1) * N_SEEDS] for key, w in params.items()}
        final_loss[fam] = last_loss[j * N_SEEDS:(j + 1) * N_SEEDS]
progress.close()

# %% [markdown]
# Evaluation of every recipe on both RoPE families at every length, and of both ALiBi arms. `acc[family][recipe][T]`
# holds one accuracy per seed.

# %%
RECIPES = {  # name: (shared.rope kind, factor as a multiple of T/L, keep YaRN's temperature)
    "vanilla RoPE": ("default", 1, True), "PI": ("linear", 1, True),
    "NTK-aware, s=T/L": ("ntk", 1, True), "NTK-aware, s=2T/L": ("ntk", 2, True),
    "YaRN, no temperature": ("yarn", 1, False), "YaRN": ("yarn", 1, True), "YaRN, eq. 18 ramp": ("yarn_paper", 1, True),
    "YaRN, eq. 18, β=4": ("yarn_paper_beta4", 1, True),
}
YARN_PAPER_BETA = {"yarn_paper": 32.0, "yarn_paper_beta4": 4.0}  # eq. 18's beta for the two eq. 18 arms


def accuracy_per_sequence(logits: torch.Tensor, y: torch.Tensor, start: int) -> torch.Tensor:
    """Accuracy of each model on each sequence, over positions >= start. -> (models, sequences)."""
    return (logits.argmax(-1) == y)[..., start:].float().mean(dim=2)


@torch.no_grad()
def evaluate(family: str, name: str, T: int, return_attention: bool = False, per_sequence: bool = False,
             data_seed: int | None = None, weights: dict | None = None) -> torch.Tensor:
    """Per-seed accuracy past L (all positions if T = L) on fresh data (seed T unless data_seed is given):
    (seeds,), or (seeds, sequences) with per_sequence, or the attention probabilities. weights: other trained
    models of the family (default: models[family])."""
    heads, weights = FAMILIES[family], models[family] if weights is None else weights
    x, y = make_batch(torch.Generator().manual_seed(T if data_seed is None else data_seed), N_SEEDS, EVAL[T], T)
    if family.startswith("ALiBi"):
        kwargs = {"bias": alibi_bias(heads, T).float()}
    else:
        kind, mult, temperature = RECIPES[name]
        factor = mult * T / L_TRAIN if T > L_TRAIN else 1.0
        if kind in YARN_PAPER_BETA:  # the paper's ramp, linear in r (Walkthrough §5)
            inv = yarn_paper(DIM // heads, 1e4, factor, L_TRAIN, beta=YARN_PAPER_BETA[kind])
            attn_factor = yarn_temperature(factor)
        else:
            inv, attn_factor = shared_rope.rope_init(kind, DIM // heads, factor=factor,
                                                     original_max_position_embeddings=L_TRAIN)
        kwargs = {"rope": cos_sin(T, inv, attn_factor if temperature else 1.0)}
    out = torch.cat([forward({key: w[i : i + 2] for key, w in weights.items()}, x[i : i + 2], heads,
                             return_attention=return_attention, **kwargs)
                     for i in range(0, N_SEEDS, 2)])  # two models at a time: the same numbers, less memory
    if return_attention:
        return out
    per_seq = accuracy_per_sequence(out, y, L_TRAIN if T > L_TRAIN else 0)  # (seeds, sequences)
    return per_seq if per_sequence else per_seq.mean(dim=1)


acc_seq = {fam: {name: {T: evaluate(fam, name, T, per_sequence=True) for T in EVAL} for name in RECIPES}
           for fam in ROPE_FAMILIES}  # (seeds, sequences) each, kept for the noise estimate below
acc = {fam: {name: {T: a.mean(dim=1) for T, a in per_T.items()} for name, per_T in rec.items()}
       for fam, rec in acc_seq.items()}
for fam in ("ALiBi 4x8", "ALiBi 2x16"):
    acc[fam] = {"ALiBi": {T: evaluate(fam, "ALiBi", T) for T in EVAL}}
MAIN = ("RoPE 2x16", "RoPE 4x8", "ALiBi 4x8")  # the main families (ALiBi 2x16 is the head-count ablation)
print("final training-batch loss, min-max over 8 seeds: " + "; ".join(
    f"{fam} {final_loss[fam].min():.2f}-{final_loss[fam].max():.2f}" for fam in FAMILIES))
print("accuracy past L (all positions at T = L): mean ± std [min, max] over 8 seeds; chance 0.25")
for fam, per_recipe in acc.items():
    print(f"{fam + ':':22s}" + "".join(f"{f'T = {T}':>26s}" for T in EVAL))
    for name, per_T in per_recipe.items():
        print(f"  {name:20s}" + "".join(f"{f'{a.mean():.2f} ± {a.std():.2f} [{a.min():.2f}, {a.max():.2f}]':>26s}"
                                        for a in per_T.values()))

# %% [markdown]
# The ablations compare recipes on the *same* trained models and the same evaluation data, so the fair
# statistic is the paired difference per seed: its mean ± std at `T = 8L`, and on how many of the 8 seeds
# the component helps, for each head split.

# %%
PAIRS = [("PI", "vanilla RoPE"), ("YaRN", "vanilla RoPE"), ("NTK-aware, s=2T/L", "NTK-aware, s=T/L"),
         ("YaRN", "YaRN, no temperature"), ("YaRN", "YaRN, eq. 18 ramp"), ("YaRN", "PI"), ("YaRN", "NTK-aware, s=T/L"),
         ("YaRN, eq. 18, β=4", "YaRN, eq. 18 ramp"), ("YaRN", "YaRN, eq. 18, β=4")]  # (with, without)
for fam in ROPE_FAMILIES:
    for with_, without in PAIRS:
        diff = acc[fam][with_][8 * L_TRAIN] - acc[fam][without][8 * L_TRAIN]  # (seeds,)
        print(f"{fam:9s} {with_:17s} minus {without:20s} at 8L: {diff.mean():+.3f} ± {diff.std():.3f}, "
              f"better on {int((diff > 0).sum())} of 8 seeds")

# %% [markdown]
# **How much of this is the draw of evaluation tokens?** At `8L` each model is scored on 3 sequences. Two
# estimates of the noise that a different draw would add, both for the 8-seed means and for the paired
# differences above. (1) A standard error from the data already scored: the variance between a model's 3
# sequences, divided by 3, averaged over the 8 models and divided by 8 (`SE² = mean_i(var_i/3)/8`, the
# variance of an 8-seed mean of independent 3-sequence averages). (2) One fresh draw of the `8L` tokens
# (another generator seed) for every recipe on the same trained models: how far each mean and each paired
# difference moves, and whether any paired difference changes sign. A move between two draws has standard
# deviation `√2·SE`; asserted: the fresh draw's largest moves stay below `4·√2` times the largest SE, i.e.
# the two estimates agree.

# %%
T8 = 8 * L_TRAIN


def seed_mean_se(a: torch.Tensor) -> float:
    """Standard error of the seed mean due to the token draw. a: (seeds, sequences) per-sequence accuracies."""
    return ((a.var(dim=1) / a.shape[1]).mean() / a.shape[0]).sqrt().item()


redraw = {fam: {name: evaluate(fam, name, T8, data_seed=10_000 + T8) for name in RECIPES} for fam in ROPE_FAMILIES}
noise = {}
for fam in ROPE_FAMILIES:
    se_mean = max(seed_mean_se(acc_seq[fam][name][T8]) for name in RECIPES)
    se_diff = max(seed_mean_se(acc_seq[fam][w][T8] - acc_seq[fam][wo][T8]) for w, wo in PAIRS)
    move_mean = max(abs(redraw[fam][name].mean() - acc[fam][name][T8].mean()).item() for name in RECIPES)
    stored_diff = {p: (acc[fam][p[0]][T8] - acc[fam][p[1]][T8]).mean().item() for p in PAIRS}
    new_diff = {p: (redraw[fam][p[0]] - redraw[fam][p[1]]).mean().item() for p in PAIRS}
    move_diff = max(abs(new_diff[p] - stored_diff[p]) for p in PAIRS)
    flips = [p for p in PAIRS if stored_diff[p] * new_diff[p] < 0]
    noise[fam] = (se_mean, se_diff, move_mean, move_diff)
    assert move_mean < 4 * math.sqrt(2) * se_mean and move_diff < 4 * math.sqrt(2) * se_diff, fam  # the two agree
    print(f"{fam}: token-draw SE of an 8L mean at most {se_mean:.3f}, of a paired difference at most {se_diff:.3f}; "
          f"fresh draw moves a mean by at most {move_mean:.3f}, a paired difference by at most {move_diff:.3f}; "
          f"sign changes: {', '.join(f'{a} - {b}' for a, b in flips) if flips else 'none'}")
    for p in flips:
        print(f"   {p[0]} - {p[1]}: {stored_diff[p]:+.3f} on the table's draw, {new_diff[p]:+.3f} on the fresh one")

# %% [markdown]
# **A second seed set for RoPE 4x8.** Two 4x8 paired differences above are small against their seed
# spread: PI − vanilla (+0.024 ± 0.102, positive on 5 of 8) and the temperature (+0.008 ± 0.017, 5 of 8).
# The cell trains 8 more RoPE 4x8 models with the same budget but init seed 1000 and data seed 1001
# (set 2; the models above are set 1: init seed 0, data seed 1, about 4 s). It scores the four recipes
# involved, plus the two eq. 18 arms (`β = 32` and `β = 4`), on the same evaluation tokens and prints the
# paired differences on each set and pooled over the 16 models. Asserted on set 2, as the healthy-run cell
# asserts them on set 1: YaRN above vanilla and PI by 0.03, PI no worse than vanilla (within 0.02), the
# temperature within 0.03, and eq. 18 with `β = 4` below eq. 18 with `β = 32` on average.

# %%
set2, set2_loss = train(1, 4, cos_sin(L_TRAIN, shared_rope.rope_inv_freq(DIM // 4)), None, init_seed=1000, data_seed=1001)
RECIPES_2 = ("vanilla RoPE", "PI", "YaRN, no temperature", "YaRN", "YaRN, eq. 18 ramp", "YaRN, eq. 18, β=4")
acc_set = {"set 1": acc["RoPE 4x8"],
           "set 2": {name: {T: evaluate("RoPE 4x8", name, T, weights=set2) for T in (4 * L_TRAIN, T8)} for name in RECIPES_2}}
print(f"set 2: final training-batch loss {set2_loss.min():.2f}-{set2_loss.max():.2f}")
for name in RECIPES_2:
    print(f"  {name:21s} mean accuracy at 4L / 8L: "
          + "; ".join(f"{k} {a[name][4 * L_TRAIN].mean():.2f} / {a[name][T8].mean():.2f}" for k, a in acc_set.items()))
for with_, without in (("PI", "vanilla RoPE"), ("YaRN", "YaRN, no temperature"), ("YaRN", "vanilla RoPE"), ("YaRN", "PI"),
                       ("YaRN, eq. 18, β=4", "YaRN, eq. 18 ramp")):
    diffs = {k: a[with_][T8] - a[without][T8] for k, a in acc_set.items()}  # (seeds,) per set
    diffs["pooled"] = torch.cat(list(diffs.values()))  # (16,)
    print(f"RoPE 4x8 {with_} minus {without} at 8L: "
          + "; ".join(f"{k} {t.mean():+.3f} ± {t.std():.3f} ({int((t > 0).sum())}/{len(t)})" for k, t in diffs.items()))
m2 = {name: acc_set["set 2"][name][T8].mean().item() for name in RECIPES_2}
assert m2["YaRN"] > max(m2["vanilla RoPE"], m2["PI"]) + 0.03 and m2["PI"] > m2["vanilla RoPE"] - 0.02
assert abs(m2["YaRN"] - m2["YaRN, no temperature"]) < 0.03
assert m2["YaRN, eq. 18, β=4"] < m2["YaRN, eq. 18 ramp"]

# %% [markdown]
# **Where YaRN loses to NTK-aware on 4x8: one pair.** The 4x8 head has four pairs (wavelengths 6, 63, 628,
# 6,283 tokens). At `s = 8` the code's ramp, which starts at index max(i(β), 0) = 0, keeps the fastest pair exactly, as NTK-aware does, and
# both divide the slowest by 8; they differ on pair 1 a little (0.56 vs 0.50) and on pair 2 (`λ = 628`, which
# does not turn within `L = 64`) a lot: YaRN compresses it 8× like PI, NTK-aware only 4×, so at `T = 8L`
# NTK-aware's pair 2 reaches 2.03× the angle range it saw in training. The ablation swaps pair 2 between the two recipes on
# the same trained models and the same evaluation tokens (no temperature, so only the frequencies differ),
# and prints the share of the NTK-aware − YaRN gap that pair 2 accounts for, swapped in either direction.

# %%
@torch.no_grad()
def accuracy_with(family: str, inv: torch.Tensor, T: int) -> torch.Tensor:
    """Per-seed accuracy past L with given RoPE frequencies (no temperature), on evaluate()'s tokens. -> (seeds,)."""
    heads = FAMILIES[family]
    x, y = make_batch(torch.Generator().manual_seed(T), N_SEEDS, EVAL[T], T)  # the same tokens as evaluate()
    rope = cos_sin(T, inv)
    out = torch.cat([forward({key: w[i : i + 2] for key, w in models[family].items()}, x[i : i + 2], heads, rope=rope)
                     for i in range(0, N_SEEDS, 2)])
    return accuracy_per_sequence(out, y, L_TRAIN).mean(dim=1)  # the same reduction as evaluate()


T8, theta4 = 8 * L_TRAIN, inv_freq_default(8)
ntk4 = shared_rope.rope_init("ntk", 8, factor=8.0)[0].double()
yarn4 = shared_rope.rope_init("yarn", 8, factor=8.0, original_max_position_embeddings=L_TRAIN)[0].double()
seen4 = torch.clamp((L_TRAIN - 1) * theta4, max=2 * math.pi)  # largest angle each pair saw in training
swap = {"YaRN (code ramp)": yarn4, "NTK-aware, s=T/L": ntk4,
        "YaRN, pair 2 from NTK": torch.cat([yarn4[:2], ntk4[2:3], yarn4[3:]]),
        "NTK, pair 2 from YaRN": torch.cat([ntk4[:2], yarn4[2:3], ntk4[3:]])}
swap_acc = {name: accuracy_with("RoPE 4x8", inv, T8) for name, inv in swap.items()}
print("same value as the table's 'YaRN, no temperature':",
      torch.equal(swap_acc["YaRN (code ramp)"], acc["RoPE 4x8"]["YaRN, no temperature"][T8]))
for name, inv in swap.items():
    a = swap_acc[name]
    reach2 = (T8 - 1) * inv[2] / seen4[2]
    print(f"RoPE 4x8 at 8L, {name:22s} θ'/θ = " + " ".join(f"{v:.3f}" for v in (inv / theta4).tolist())
          + f"  pair 2 reach/seen {reach2:.2f}: {a.mean():.2f} ± {a.std():.2f} [{a.min():.2f}, {a.max():.2f}]")
full_gap = (swap_acc["NTK-aware, s=T/L"] - swap_acc["YaRN (code ramp)"]).mean().item()  # what pair 2 should explain
print(f"NTK-aware minus YaRN (both without temperature): {full_gap:+.3f}")
for name, base_name in [("YaRN, pair 2 from NTK", "YaRN (code ramp)"), ("NTK-aware, s=T/L", "NTK, pair 2 from YaRN")]:
    diff = swap_acc[name] - swap_acc[base_name]
    print(f"{name} minus {base_name}: {diff.mean():+.3f} ± {diff.std():.3f}, better on {int((diff > 0).sum())} of 8 seeds; "
          f"pair 2's share of the gap {diff.mean().item():.3f} / {full_gap:.3f} = {100 * diff.mean().item() / full_gap:.0f} %")

# %% [markdown]
# The plot: mean accuracy against the evaluation length for each head split (ALiBi on both panels), with the
# seed standard deviation as error bars and the min–max range shaded; the dotted line is the trained length.
# The `β = 4` arm is left out to keep the legend readable (it is in the table and the paired differences).

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True, layout="constrained")
lengths = list(EVAL)
for ax, fam in zip(axes, ROPE_FAMILIES, strict=True):
    curves = {**{k: v for k, v in acc[fam].items() if k != "YaRN, eq. 18, β=4"}, "ALiBi 4x8": acc["ALiBi 4x8"]["ALiBi"]}
    if fam == "RoPE 2x16":  # the head-count ablation of ALiBi, on the panel with its head split
        curves["ALiBi 2x16"] = acc["ALiBi 2x16"]["ALiBi"]
    for j, (name, per_T) in enumerate(curves.items()):
        a = torch.stack([per_T[T] for T in lengths])  # (lengths, seeds)
        ax.errorbar(lengths, a.mean(1).numpy(), yerr=a.std(1).numpy(), color=f"C{j}", marker="o", ms=3, capsize=3,
                    label=name, ls="--" if any(k in name for k in ("no temperature", "2T", "eq. 18", "2x16")) else "-")
        ax.fill_between(lengths, a.min(1).values.numpy(), a.max(1).values.numpy(), color=f"C{j}", alpha=0.08)
    ax.axvline(L_TRAIN, color="grey", ls=":", lw=1)
    ax.set(xscale="log", xticks=lengths, xticklabels=[f"{T // L_TRAIN}L" for T in lengths], ylim=(0.3, 1.02),
           xlabel="evaluation length T (trained at L = 64)", title=f"{fam} (heads x head dim), 8 seeds per recipe")
    ax.minorticks_off()
axes[0].set_ylabel("accuracy past L")
axes[0].legend(fontsize=7, loc="lower left", ncol=2)
fig.suptitle("last-signal task, no fine-tuning")
plt.show()

# %% [markdown]
# **Why the temperature matters so little here: entropy.** The mean entropy of the RoPE models' attention
# (queries past `L`, averaged over heads, sequences and seeds) at `T = L` with no stretch, and at `T = 8L`
# with YaRN with and without its temperature.

# %%
def mean_entropy(att: torch.Tensor, start: int) -> float:
    """Entropy (nats) of attention rows for queries >= start. att: (n, batch, heads, T, T)."""
    rows = att[..., start:, :]
    return -(rows * rows.clamp_min(1e-30).log()).sum(-1).mean().item()


entropies = {}
for fam in ROPE_FAMILIES:
    entropies[fam] = {"T = L": mean_entropy(evaluate(fam, "vanilla RoPE", L_TRAIN, return_attention=True), 0)}
    for nm in ("YaRN, no temperature", "YaRN"):
        entropies[fam][f"8L, {nm}"] = mean_entropy(evaluate(fam, nm, 8 * L_TRAIN, return_attention=True), L_TRAIN)
    print(f"{fam}: attention entropy " + ", ".join(f"{k} {v:.2f}" for k, v in entropies[fam].items()) + " nats")

# %% [markdown]
# ### What a healthy run prints
#
# The stored outputs are checked on the course's CI machine twice, with PyTorch's native CPU kernels
# (`make notebooks`) and with its portable ones (`ATEN_CPU_CAPABILITY=default`, `make portable`), and must
# match both times. Other CPUs, BLAS builds or PyTorch versions may round float32 training differently,
# so there a printed number can differ in its last digits; the asserts below check ranges, not digits.
# The next cell asserts what holds on **both** RoPE head splits (the robust findings below): every main model's final
# training-batch loss below 0.25; every recipe, ALiBi included, at least 0.9 at `T = L`; vanilla RoPE at
# least 0.9 at `2L` and below 0.8 at `8L`; YaRN above vanilla and above PI at `8L` by at least 0.03 each,
# and PI no worse than vanilla (within 0.02); YaRN with and without temperature within 0.03 of each other;
# ALiBi within 0.05 of its `T = L` accuracy at `8L`; eq. 18 with `β = 4` below eq. 18 with `β = 32` at `8L`.
# Plus the two ablations: 2-head ALiBi below 0.9 at `L` with every final loss above 0.25, and, on 4x8, YaRN
# with NTK's pair 2 at least 0.05 above YaRN. The NTK-`s` and YaRN-vs-NTK orderings flip between the
# splits, so they are printed, not asserted.

# %%
mean = {fam: {name: {T: a.mean().item() for T, a in per_T.items()} for name, per_T in rec.items()}
        for fam, rec in acc.items()}
L1, L2, L8 = L_TRAIN, 2 * L_TRAIN, 8 * L_TRAIN
checks = {"final losses < 0.25 (main families)": max(final_loss[fam].max() for fam in MAIN).item() < 0.25,
          "ALiBi >= 0.9 at L, flat to 8L": mean["ALiBi 4x8"]["ALiBi"][L1] >= 0.9
          and abs(mean["ALiBi 4x8"]["ALiBi"][L8] - mean["ALiBi 4x8"]["ALiBi"][L1]) < 0.05,
          "ALiBi 2x16 < 0.9 at L, final losses > 0.25": mean["ALiBi 2x16"]["ALiBi"][L1] < 0.9
          and final_loss["ALiBi 2x16"].min().item() > 0.25,
          "4x8: YaRN with NTK's pair 2 > YaRN + 0.05": swap_acc["YaRN, pair 2 from NTK"].mean().item()
          > swap_acc["YaRN (code ramp)"].mean().item() + 0.05}
for fam in ROPE_FAMILIES:
    m = mean[fam]
    checks[f"{fam}: all recipes >= 0.9 at L"] = all(m[nm][L1] >= 0.9 for nm in RECIPES)
    checks[f"{fam}: vanilla >= 0.9 at 2L, < 0.8 at 8L"] = m["vanilla RoPE"][L2] >= 0.9 > 0.8 > m["vanilla RoPE"][L8]
    checks[f"{fam}: YaRN > vanilla + 0.03 at 8L"] = m["YaRN"][L8] > m["vanilla RoPE"][L8] + 0.03
    checks[f"{fam}: YaRN > PI + 0.03 at 8L"] = m["YaRN"][L8] > m["PI"][L8] + 0.03
    checks[f"{fam}: PI no worse than vanilla at 8L"] = m["PI"][L8] > m["vanilla RoPE"][L8] - 0.02
    checks[f"{fam}: YaRN temperature within 0.03"] = abs(m["YaRN"][L8] - m["YaRN, no temperature"][L8]) < 0.03
    checks[f"{fam}: eq. 18 beta 4 < beta 32 at 8L"] = m["YaRN, eq. 18, β=4"][L8] < m["YaRN, eq. 18 ramp"][L8]
for what, ok in checks.items():
    print(f"{what:46s} {'ok' if ok else 'UNEXPECTED'}")
for fam in ROPE_FAMILIES:  # split-dependent: printed only
    m = mean[fam]
    print(f"{fam} at 8L (not asserted): NTK s=2T/L {m['NTK-aware, s=2T/L'][L8]:.2f} vs s=T/L "
          f"{m['NTK-aware, s=T/L'][L8]:.2f}; YaRN {m['YaRN'][L8]:.2f} vs NTK s=T/L {m['NTK-aware, s=T/L'][L8]:.2f}")
assert all(checks.values()), "this run is outside the expected ranges"

# %% [markdown]
# **Reading the results against the papers.** Accuracy past `L`, 8 seeds; a paired Δ is the mean ± std over
# seeds of the per-seed difference at `8L` (same models, same tokens), with the number of seeds on which it
# is positive. The token draw adds a standard error of at most 0.014 to a mean and 0.019 to a paired Δ (the
# noise cell, largest over all recipes and pairs). Each model is scored on its own tokens, so this noise is
# part of the seed-to-seed spread: for any one paired Δ it is at most about its std/√8 (e.g. 0.005 for
# −0.027 ± 0.013). A Δ of 0.01–0.03 with mixed signs across seeds is not resolved; one with the same sign
# on all 8 seeds is not a token-draw artefact.
#
# | finding | RoPE 2x16 | RoPE 4x8 | on both splits? |
# |---|---|---|---|
# | vanilla at `L`, `2L`, `4L`, `8L` | 0.97, 0.95, 0.75, 0.58 | 0.98, 0.94, 0.91, 0.72 | yes (asserted) |
# | YaRN − vanilla | +0.29 ± 0.09 (8/8) | +0.09 ± 0.06 (7/8) | yes (asserted) |
# | YaRN − PI | +0.10 ± 0.06 (7/8) | +0.06 ± 0.05 (8/8) | yes (asserted) |
# | YaRN − YaRN without temperature | +0.001 ± 0.009 (3/8) | +0.008 ± 0.017 (5/8); set 2: +0.015 ± 0.012 (8/8) | yes: 0.02 or less on average, within 0.03 (asserted); not resolved on 2x16, small and positive on 4x8's set 2 |
# | eq. 18 with `β = 4` − with `β = 32` | −0.11 ± 0.08 (0/8) | −0.03 ± 0.01 (0/8); set 2: −0.01 ± 0.01 (0/8) | yes: the mean is below (asserted, and on set 2) |
# | code ramp − eq. 18 ramp | +0.05 ± 0.06 (6/8) | +0.04 ± 0.06 (7/8) | same sign, within one std |
# | PI − vanilla | +0.19 ± 0.10 (8/8) | +0.02 ± 0.10 (5/8); set 2: +0.11 ± 0.11 (8/8) | not below vanilla on either (asserted); on 4x8 its size is not stable across seed sets |
# | NTK-aware `s = 2T/L` − `s = T/L` | +0.08 ± 0.04 (8/8) | −0.04 ± 0.03 (0/8) | no: flips |
# | YaRN − NTK-aware `s = T/L` | +0.03 ± 0.05 (7/8) | −0.10 ± 0.04 (0/8) | no: flips |
#
# "Set 2" is the second seed set of RoPE 4x8 (8 more models, printed above). ALiBi 4x8 (the same models on
# both panels): 0.95 at `L`, 0.96 at `8L`, flat.
#
# - *Vanilla RoPE degrades past `2L`–`4L`*, not at `L`: the trend of the rotary curve in ALiBi Fig. 1, but
#   gradual. The slow pairs that can turn back (wavelengths from 199 tokens in the 2x16 head, from 628 in
#   the 4x8 head, Walkthrough §3) need distances of the order of half their wavelength, so the 4x8 head,
#   whose first slow pair is slower, holds longer. Real LLMs fail much sooner past `L` (PI v2 §2.2 and
#   Table 1: perplexity >10³).
# - *YaRN beats vanilla and PI without fine-tuning*: it keeps the fastest pairs (local order) and
#   interpolates the slow ones. That is in line with YaRN v2 App. B.3 (Dynamic-YaRN above Dynamic-PI on
#   Llama 2 without fine-tuning); §3.4's "surpasses all previous methods in both fine-tuned and non-fine-tuned
#   scenarios" holds here against vanilla and PI, not against NTK-aware on 4x8 (below).
# - *YaRN's temperature barely moves accuracy*: 0.02 or less on average on both splits and both 4x8 seed
#   sets (pooled over the 16 RoPE 4x8 models, +0.012 ± 0.015, positive on 13). Yet it does what the paper
#   says to the attention (entropy at `8L`, the entropy cell above: 1.47 → 1.02 nats on 2x16 and
#   1.79 → 1.28 on 4x8, against 0.67 and 0.78 at `L`): the most recent signal already dominates each attention row, so a sharper softmax rarely
#   changes which token wins. Eq. 22 was fitted to LLaMA perplexity (§3.4, App. A.2), a soft quantity
#   that does respond to sharpening.
# - *`α`, `β` matter at toy scale, but Llama 3.1's `β = 4` is the wrong way to retune here.* With `β = 4`
#   eq. 18 keeps the fastest pair instead of interpolating it (on 4x8 nearly the only change: pair 1 moves
#   from `θ'/θ = 0.126` to 0.130), and on average it loses on both splits (asserted, and on 4x8's set 2).
#   On these seed sets it loses on every seed, but that count is a property of the seed sets, not a
#   finding: on 4x8 the per-seed gap is small (−0.03 ± 0.01 on set 1, −0.01 ± 0.01 on set 2), so another
#   seed set can have seeds where `β = 4` wins; only the sign of the mean is asserted. What helps on this
#   task is compressing the pair that turns about once in `L` (`r = 1.02`, `λ = 63`) *less* than `s`: the
#   code's ramp gives it `γ = 0.33` (2x16) or `0.5` (4x8), eq. 18 with `α = 1` gives it `γ < 0.01` whatever
#   `β` is, and the code's YaRN beats eq. 18 with `β = 4` by +0.16 on all 8 seeds (2x16) and +0.06 on 7 of
#   8 (4x8; there that pair is the only difference between the two; paired differences above). A relative
#   of the slower-pair effect in the YaRN-vs-NTK swap below; the paper's "tuned on a case-by-case basis"
#   (§3.2) applies.
# - *ALiBi is flat*: its bias only grows with distance, so far keys never gain weight; it extrapolates by
#   construction (ALiBi v2 Fig. 1). Read the flat curve against its lower start: in distribution ALiBi 4x8
#   scores 0.95 ± 0.02 against 0.97 and 0.98 for the RoPE splits, with final training-batch losses of
#   0.04–0.22 against 0.01–0.10, at the same 170 steps; at `8L` it is ahead (0.96 against the best RoPE
#   recipe's 0.92) because the RoPE curves fall, not because it fits the task better. It also needs its
#   own pre-training and enough steep heads: the 2-head ablation (slopes 1/16, 1/256) reaches only
#   0.81 ± 0.03 at `L` (0.79 ± 0.03 at `8L`), with final losses 0.33–0.47 (Exercise 4(a) explains why).
#   And the flat curve says nothing about *using* long context: the task needs only the last few tokens,
#   and ALiBi v2 App. B.2 finds that past `L` ALiBi "might not be using contexts longer than the ones it was
#   trained on" (Walkthrough §7).
# - *PI without fine-tuning* is not below vanilla at `8L` on either split. On 2x16 it gains a lot (+0.19,
#   8 of 8 seeds). On 4x8 the two seed sets disagree on how much (+0.02 ± 0.10 on set 1, +0.11 ± 0.11 on
#   set 2), so this toy does not show whether PI's gain depends on the head split. The task needs an order
#   ("the most recent"), which PI's compression preserves; it blurs neighbouring positions, so tasks that
#   need exact offsets should suit it worse (not tested here). PI itself fine-tunes (v2 §3.1; Table 3:
#   16.10 → 6.95 perplexity).
# - *NTK-aware's `s`*: on 2x16 the larger `s` wins, as YaRN v2 §3.1's "the scale value s has to be set
#   higher than the expected scale" predicts from the out-of-bound pairs of Walkthrough §3; on 4x8 the
#   smaller one wins on all 8 seeds. At `s = T/L` the 2x16 head has four pairs overshooting (up to 3.15×),
#   the 4x8 head one (λ = 628, 2.03×); doubling `s` barely helps 2x16's worst pair (2.47×) but halves the
#   slowest pair's range in both. With one mild overshoot there is little to fix and the extra compression
#   costs more than it saves.
# - *YaRN vs NTK-aware*: on 4x8 most of YaRN's deficit is pair 2 (`λ = 628`, no full turn in `L = 64`).
#   NTK-aware divides it by 4 only, so at `8L` it reaches 2.03× the angle range seen in training (mild
#   extrapolation), while YaRN divides it by 8 like PI and stays inside. The pair-swap ablation isolates it
#   (without temperature, NTK-aware − YaRN is +0.106): YaRN with NTK's pair 2 gains +0.098 on all 8 seeds
#   (93 % of the gap), and NTK-aware with YaRN's pair 2 loses 0.074 on all 8 (70 %). YaRN v2 §3.2 wants
#   pairs with `λ ≥ L` to "only interpolate and avoid any extrapolation (unlike the previous "NTK-aware"
#   method)"; on this toy, without fine-tuning, mild extrapolation of that pair beats its full compression,
#   against that premise. The paper's argument is mainly about fine-tuning (§3.1: fine-tuning with
#   NTK-aware "yields inferior results to PI"; Table 1 above: 3.59 vs 3.34), which the toy does not test.
# - *The paper's eq. 18 ramp* instead of the code's is slightly worse on both splits: on the 2x16 head it
#   also interpolates the fastest pair (θ'/θ = 0.38), while the code's ramp, clamped to start at index 0,
#   keeps it.
#
# The papers' headline numbers are *with* fine-tuning (The problem's table), which this toy does not
# reproduce.

# %% [markdown]
# ## Misconceptions
#
# - **Claim (seed interview answer): "RoPE extrapolates well because it is a continuous function of position
#   and models relative distance explicitly."** **Correction:** relative ≠ length-generalising. Past the
#   trained length vanilla RoPE degrades: ALiBi v2 Fig. 1 (rotary perplexity rises beyond `L`), PI v2 §2.2
#   (perplexity "may shoot up to very high numbers (i.e., >10³)"), YaRN v2 abstract ("fail to generalize past
#   the sequence length they were trained on"), Walkthrough §1 (nothing bounds the score past `L`), and
#   §Reproduction 2 (0.97 → 0.58 at `8L` on the 2x16 head, 0.98 → 0.72 on 4x8). That failure is the reason PI, NTK-aware scaling and YaRN exist.
#   The honest nuance: on a small toy it holds for a while (`2L` to `4L` here) before it fails.
# - **Claim (interview trap): "RoPE has long-term decay, so attention to far tokens decays."**
#   **Correction:** RoFormer v5 §3.4.3 shows that an *upper bound* on the score decays with distance; the
#   score itself does not have to. For random `q, k` the score reaches at most about 4 % of the bound (Derivations §6),
#   and even the expected score of a key with the query's own content, `2 Σ_i cos(Δθ_i)`, decays with
#   oscillations: it rises on 972 of 2,000 one-token steps and climbs back 17.3 above its minimum over
#   shorter distances (printed there). How much a model attends far away is set by the learned `q` and `k`:
#   PI v2 §2.2 calls the bound possibly "too loose" and "thus vacuous", and its Fig. 2 (Walkthrough §1) fits
#   scores that are small inside `[0, L]` and huge outside.
# - **Claim (seed table): "ALiBi is used by RWKV, Mamba."** **Correction:** ALiBi is Press, Smith and Lewis
#   (ICLR 2022, arXiv 2108.12409): a per-head linear distance penalty added to attention logits. RWKV and
#   Mamba are recurrent / state-space models without softmax attention, so there is no logit to bias.
#   ALiBi's best-known users are BLOOM and MPT: `transformers` builds it in `models/bloom/modeling_bloom.py`
#   (`build_alibi_tensor`) and `models/mpt/modeling_mpt.py` (`build_mpt_alibi_tensor`, checked above).
# - **Claim: "ALiBi gives a model long context."** **Correction:** ALiBi keeps perplexity from blowing up
#   past the trained length (ALiBi v2 Fig. 1); that is not the same as using the extra context. With a
#   stride-1 sliding window, which gives every prediction its full context, its perplexity stays flat
#   instead of improving, and the authors conclude that "when L_valid > L, ALiBi might not be using
#   contexts longer than the ones it was trained on" (App. B.2). §Reproduction's flat ALiBi curve cannot
#   show long-context use either: its task needs only the last few tokens.
# - **Claim (seed table): "Qwen2.5 uses ALiBi plus sliding windows for 256k context."** **Correction:** the
#   Qwen2.5 report (arXiv 2412.15115) lists RoPE with GQA, SwiGLU, QKV bias and RMSNorm in its architecture
#   section (§2); its long-context pre-training (§3.3) raises the RoPE base from 10,000 to 1,000,000 with ABF
#   (Xiong et al. 2023) while extending from 4,096 to 32,768 tokens, and adds YaRN and Dual Chunk Attention
#   (DCA) at inference for a four-fold longer context (131,072 tokens; Qwen2.5-Turbo is trained up to
#   262,144 with base 10⁷ and reaches 1M). The cell below shows that `transformers`' Qwen2 architecture
#   (which Qwen2.5 checkpoints load into) builds a rotary embedding and no ALiBi.
# - **Claim (seed table): "NTK-aware RoPE comes from GPT-4-related speculation."** **Correction:** it is a
#   June 2023 Reddit post by bloc97 (YaRN v2 §3.1, ref. [6]; Bowen Peng, YaRN's first author, is bloc97);
#   Dynamic NTK is emozilla's Reddit post (YaRN v2 §3.3, ref. [14]; Jeffrey Quesnelle, second author, is
#   emozilla). YaRN v2 §1 notes NTK-aware's use in Code Llama and Dynamic NTK's in Qwen 7B.
# - **Claim: "interleaved and rotate-half RoPE are different encodings, so Meta and HF Llama weights are
#   incompatible."** **Correction:** same function up to a permutation of dims (Derivations §4); the HF
#   converter permutes the `W_q`/`W_k` rows once and the scores are identical (checked above).
# - **Claim: "YaRN ramps between PI and NTK-aware."** **Correction:** the ramp is per pair, between the
#   pair's *unchanged* frequency `θ_i` and PI's `θ_i/s`, by the turns `r_i` (eq. 18, 20); NTK-aware's base
#   change is not one of the two ends. The official code ramps in `ln r` rather than in `r` (Walkthrough §5).
# - **Claim: "YaRN multiplies the logits by `0.1 ln s + 1`."** **Correction:** `0.1 ln s + 1` is `√(1/t)`
#   and multiplies cos and sin, i.e. both `q` and `k`; the logits get `(0.1 ln s + 1)²` (YaRN v2 §3.4,
#   eq. 21–22). The authors' errata for the v1 preprint
#   ([Errata.md at commit 32c9f21](https://github.com/jquesnelle/yarn/blob/32c9f217c4462c25ea0a8bc70357c0f936d4201b/Errata.md))
#   note that v1 had the temperature inverted (`√t` for `√(1/t)`, and the entropy argument backwards).
# - **Claim: "PI extends the context without training."** **Correction:** PI fine-tunes ("within 1000
#   steps", PI v2 abstract, §3.1) and reports the fine-tuned models; how well untuned PI does depends on the
#   task: it keeps order but blurs neighbours. On §Reproduction's recency task untuned PI helps on the
#   2x16 head (0.89 at `4L` against vanilla's 0.75). On 4x8 the two seed sets disagree (set 1: 0.87
#   against 0.91 at `4L`, 0.74 against 0.72 at `8L`; set 2: 0.88 against 0.84, 0.76 against 0.64), so its
#   gain there is not resolved. A task that needs exact offsets, which PI blurs, is not tested.
# - **Claim: "a bigger RoPE base is free long context."** **Correction:** ABF changes the model's
#   frequencies, so it is applied *with* training at the longer length (Llama 3: base 500,000 from the start,
#   then a continued pre-training stage to 128K, Llama 3 report §3.2, §3.4.2; Qwen2.5: 10⁶ together with the
#   32,768-token stage); Derivations §5 shows what it buys: fewer pairs that never turn within `L`.

# %% [markdown]
# The Qwen2 check, by behaviour rather than by reading the source: a one-layer `Qwen2Model` with random
# weights. (1) Shifting every `position_id` by 7 leaves the output unchanged (relative positions only)
# while doubling them changes it: positions enter through the rotary embedding. (2) With the rotary
# frequencies set to zero, the last token's output no longer changes when the earlier tokens are
# shuffled: no other position signal is left, so there is no ALiBi bias (which would penalise the shuffled
# tokens by their new distances) and no learned absolute embedding. With RoPE on, the same shuffle does
# change it.

# %%
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model

torch.manual_seed(0)
qwen = Qwen2Model(Qwen2Config(hidden_size=32, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=1,
                              intermediate_size=64, vocab_size=32, max_position_embeddings=256,
                              initializer_range=0.2)).double().eval()  # larger weights: position effects are O(1)
ids = torch.randint(0, 32, (1, 12), generator=torch.Generator().manual_seed(0))
pos12 = torch.arange(12)[None]
shuffled = torch.cat([torch.randperm(11, generator=torch.Generator().manual_seed(1)), torch.tensor([11])])
with torch.no_grad():
    run = {"positions": qwen(ids, position_ids=pos12).last_hidden_state,
           "positions + 7": qwen(ids, position_ids=pos12 + 7).last_hidden_state,
           "positions x 2": qwen(ids, position_ids=2 * pos12).last_hidden_state,
           "shuffled prefix": qwen(ids[:, shuffled], position_ids=pos12).last_hidden_state}
    qwen.rotary_emb.inv_freq.zero_()  # no rotation at all
    no_rope = [qwen(t, position_ids=pos12).last_hidden_state[0, -1] for t in (ids, ids[:, shuffled])]
gaps = {"shift by 7": (run["positions"] - run["positions + 7"]).abs().max().item(),
        "double": (run["positions"] - run["positions x 2"]).abs().max().item(),
        "shuffle, RoPE on": (run["positions"] - run["shuffled prefix"])[0, -1].abs().max().item(),
        "shuffle, RoPE off": (no_rope[0] - no_rope[1]).abs().max().item()}
assert gaps["shift by 7"] < 1e-5 < 0.1 < gaps["double"] and gaps["shuffle, RoPE off"] < 1e-12 < 0.1 < gaps["shuffle, RoPE on"]
print(f"Qwen2 output change: positions shifted by 7 {error_bound(gaps['shift by 7'], 1e-5)} (float32 angles), doubled "
      f"{gaps['double']:.2f}; last token after shuffling the prefix: RoPE on {gaps['shuffle, RoPE on']:.2f}, "
      f"rotary frequencies zeroed {error_bound(gaps['shuffle, RoPE off'], 1e-12)}")

# %% [markdown]
# ## Exercises
#
# 1. **Which pairs never turn once during pretraining?** For a head with `d = 128` and Llama 3's base
#    `b = 500 000`, pre-trained at `L = 8192` (Llama 3 report §2: "a context window of 8K tokens"), how many
#    of the 64 pairs have a wavelength longer than `L`? Compute it by hand from `λ_i = 2π b^{2i/d} > L`,
#    then fill in `answer_1`. (Derivations §5 printed the answer for `b = 10⁴`, `L = 4096`.)
# 2. **NTK at the ends.** Show from `b' = b s^{d/(d−2)}` that `θ'_0 = θ_0` and `θ'_{d/2−1} = θ_{d/2−1}/s`.
#    What is `θ'_{d/2−1}/θ_{d/2−1}` for `d = 128`, `s = 8`? Fill in `answer_2`.
# 3. **YaRN's temperature.** For `s = 16`, by what factor does YaRN multiply the attention logits?
#    Fill in `answer_3` (3 decimals are enough).
# 4. **Open questions.** (a) §Reproduction 2 trains ALiBi with 2 heads of 16 as well as 4 of 8: with 2
#    heads the slopes are 1/16 and 1/256 and the accuracy is about 0.81 already at `T = L`. Why can a
#    one-layer ALiBi model with only flat slopes not pick the most recent of two nearby signal tokens?
#    (Answer below the next cell.) (b) Fine-tune a copy of each RoPE family for 50 Adam steps (lr 1e-2)
#    on batches of 4 sequences of `T = 4L` (the 1,024 tokens per step of training) with PI (`s = 4`), and,
#    as the control, a copy with vanilla RoPE the same way; compare their accuracy at `4L` before and after.
#    Does PI's fast adaptation ("within 1000 steps") show up, and is it PI's? (Answer at the end.)

# %%
answer_1 = None  # number of pairs with wavelength > 8192 for b = 500000, d = 128
answer_2 = None  # theta'_{63} / theta_{63} for d = 128, s = 8
answer_3 = None  # logit multiplier for s = 16

checks = {
    "1": (answer_1, int((2 * math.pi / inv_freq_default(128, 500_000.0) > 8192).sum())),
    "2": (answer_2, (inv_freq_ntk(128, 1e4, 8.0) / inv_freq_default(128))[-1].item()),
    "3": (answer_3, yarn_temperature(16.0) ** 2),
}
for name, (given, expected) in checks.items():
    if given is None:
        print(f"exercise {name}: not answered yet")
    else:
        print(f"exercise {name}:", "correct" if abs(given - expected) < 1e-3 * max(1.0, abs(expected)) else "not quite, try again")

# %% [markdown]
# **Answer to 4(a).** In §Reproduction 2 (8 seeds, 170 steps) 2-head ALiBi reaches only 0.81 ± 0.03 at
# `T = L` (0.79 ± 0.03 at `8L`: still flat), against 0.95 with 4 heads, and its final training-batch
# losses stay at 0.33–0.47 (all 4-head ALiBi models end below 0.25). Why: with one
# layer and no MLP, nothing in a signal token's content says how recent it is, so only the bias can
# favour the most recent one. Signal tokens are on average `1/0.15 ≈ 6.7` positions apart, so the nearest
# one out-weighs the next older one by `e^{m_h·6.7}`; the cell computes the share of the two that the
# nearest gets for each slope. With slope 1/4 it is 0.84; with the steepest 2-head slope, 1/16, it is
# 0.60, and the older signals (each a different token with probability 3/4) add up to outvote it often.

# %%
gap = 1 / P_SIGNAL  # mean distance between signal tokens
for m_h in (1 / 4, 1 / 16, 1 / 256):
    print(f"slope 1/{round(1 / m_h):3d}: nearest signal's share against the next older one "
          f"{1 / (1 + math.exp(-m_h * gap)):.2f}")

# %% [markdown]
# **Answer to 4(b).** Fast, yes; PI's, no, on this toy. The next cell is skipped by default (set
# `RUN_EXERCISE_4B = True` to run it; it adds about 15 s). Run, it prints the accuracy at `4L` past `L`,
# mean ± std over the 8 seeds, before → after the 50 steps:
#
# | family | PI (`s = 4`) | control: vanilla RoPE |
# |---|---|---|
# | RoPE 2x16 | 0.89 ± 0.04 → 0.98 ± 0.02 | 0.75 ± 0.08 → 0.96 ± 0.02 |
# | RoPE 4x8 | 0.87 ± 0.04 → 0.97 ± 0.02 | 0.91 ± 0.05 → 0.98 ± 0.01 |
#
# 50 steps bring PI back to its `T = L` accuracy (0.97 and 0.98), but vanilla RoPE fine-tuned on the same
# tokens gets there too: after fine-tuning, PI minus vanilla is +0.01 ± 0.02 (better on 7 of 8 seeds) on
# 2x16 and −0.01 ± 0.02 (4 of 8) on 4x8. A one-layer model relearns this task's position use at `4L` in
# 50 steps whatever the encoding, so the toy cannot show an advantage of PI's fine-tuning; PI's claim is
# about LLaMA 7B–65B (v2 §3), which it does not test.

# %%
RUN_EXERCISE_4B = False  # set to True to run Exercise 4(b) (about 15 s)


def exercise_4b() -> None:
    """Fine-tune copies of each RoPE family for 50 steps at T = 4L, with PI (s = 4) and with vanilla RoPE.
    accuracy_with() reads the module-level models: each fine-tuned copy is swapped in, scored and swapped out."""
    for fam in ROPE_FAMILIES:
        tuned = {}
        for kind in ("linear", "default"):  # PI (s = 4), then the control: vanilla RoPE
            heads, saved = FAMILIES[fam], models[fam]
            p = {key: w.clone().requires_grad_() for key, w in saved.items()}  # a copy of the 8 trained models
            inv = shared_rope.rope_init(kind, DIM // heads, factor=4.0)[0]
            rope, opt, data = cos_sin(4 * L_TRAIN, inv), torch.optim.Adam(p.values(), lr=LR), torch.Generator().manual_seed(2)
            for _ in range(50):
                x, y = make_batch(data, N_SEEDS, 4, 4 * L_TRAIN)  # 4 sequences of 4L: 1,024 tokens, as in training
                loss = F.cross_entropy(forward(p, x, heads, rope=rope).reshape(-1, VOCAB), y.reshape(-1),
                                       reduction="none").view(N_SEEDS, -1).mean(1).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            before = accuracy_with(fam, inv, 4 * L_TRAIN)
            models[fam] = {key: w.detach() for key, w in p.items()}
            after = accuracy_with(fam, inv, 4 * L_TRAIN)
            models[fam], tuned[kind] = saved, after
            print(f"{fam} {kind:7s} at 4L: before {before.mean():.3f} ± {before.std():.3f}, "
                  f"after {after.mean():.3f} ± {after.std():.3f} [{after.min():.2f}, {after.max():.2f}]")
        diff = tuned["linear"] - tuned["default"]
        print(f"{fam} after fine-tuning, PI minus vanilla: {diff.mean():+.3f} ± {diff.std():.3f}, "
              f"better on {int((diff > 0).sum())} of 8 seeds")


if RUN_EXERCISE_4B:
    exercise_4b()
else:
    print("Exercise 4(b) skipped (RUN_EXERCISE_4B = False); its printed results are in the table above.")

# %% [markdown]
# ## References
#
# - J. Su, Y. Lu, S. Pan, A. Murtadha, B. Wen, Y. Liu. *RoFormer: Enhanced Transformer with Rotary Position
#   Embedding.* arXiv:2104.09864 v5 (2023); Neurocomputing 568 (2024). Code:
#   [ZhuiyiTechnology/roformer](https://github.com/ZhuiyiTechnology/roformer).
# - S. Chen, S. Wong, L. Chen, Y. Tian. *Extending Context Window of Large Language Models via Positional
#   Interpolation.* arXiv:2306.15595 v2 (2023) (Fig. 2 and its code in App. C.1; Theorem 2.1, proof in App. A;
#   §3.2; §3.3 and Tables 1, 3, 4, 5). The quoted wording, table numbers and App. C.1 code were checked against the HTML
#   rendering of the paper on ar5iv ([ar5iv.labs.arxiv.org/html/2306.15595](https://ar5iv.labs.arxiv.org/html/2306.15595)).
# - bloc97. *NTK-Aware Scaled RoPE allows LLaMA models to have extended (8k+) context size without any
#   fine-tuning and minimal perplexity degradation.* r/LocalLLaMA, June 2023.
#   [Link](https://www.reddit.com/r/LocalLLaMA/comments/14lz7j5/ntkaware_scaled_rope_allows_llama_models_to_have/).
# - emozilla. *Dynamically Scaled RoPE further increases performance of long context LLaMA with zero
#   fine-tuning.* r/LocalLLaMA, 2023.
#   [Link](https://www.reddit.com/r/LocalLLaMA/comments/14mrgpr/dynamically_scaled_rope_further_increases/).
# - B. Peng, J. Quesnelle, H. Fan, E. Shippole. *YaRN: Efficient Context Window Extension of Large Language
#   Models.* ICLR 2024; arXiv:2309.00071 v2 (Nov 2023; section and equation numbers as cited here). Code: [jquesnelle/yarn](https://github.com/jquesnelle/yarn), files cited at
#   commit [995db5b](https://github.com/jquesnelle/yarn/tree/995db5b575e75230b3384d658f8b944c9662f775); the
#   v1 errata at commit [32c9f21](https://github.com/jquesnelle/yarn/blob/32c9f217c4462c25ea0a8bc70357c0f936d4201b/Errata.md).
# - O. Press, N. A. Smith, M. Lewis. *Train Short, Test Long: Attention with Linear Biases Enables Input
#   Length Extrapolation.* ICLR 2022, arXiv:2108.12409 v2 (Fig. 1; App. B.2 on sliding-window evaluation). Code:
#   [ofirpress/attention_with_linear_biases](https://github.com/ofirpress/attention_with_linear_biases).
# - J. Su. Blog posts on entropy-invariant attention scaling: [spaces.ac.cn/archives/8823](https://spaces.ac.cn/archives/8823)
#   (a softmax scale `∝ log n / d`) and [spaces.ac.cn/archives/9034](https://spaces.ac.cn/archives/9034) (its
#   short derivation, `H ≈ log n − λ(s_max − s̄)` in Su's notation, `ln n − τ(z_max − z̄)` in Walkthrough §5's,
#   which mixes a small-scale and a large-scale approximation and is a heuristic outside §5's assumption (A)).
# - A. Vaswani et al. *Attention Is All You Need.* NeurIPS 2017, arXiv:1706.03762 (§3.5, sinusoidal encoding).
# - Llama Team, AI @ Meta. *The Llama 3 Herd of Models.* arXiv:2407.21783 (2024) (§2: 8K-token pre-training
#   context; §3.2: RoPE base 500,000; §3.4.1, the 405B recipe: 4,096-token sequences for the first 252M tokens, then 8,192; §3.4: 8B and 70B
#   "similar recipes"; §3.4.2: continued pre-training to 128K). Meta's reference RoPE scaling:
#   `apply_scaling` in [meta-llama/llama-models `models/llama3/model.py`](https://github.com/meta-llama/llama-models/blob/d42f3959d14418bbf1ae1bebe54a84f757b89410/models/llama3/model.py).
# - Qwen Team. *Qwen2.5 Technical Report.* arXiv:2412.15115 (2024) (§3.3: ABF to 10⁶, YaRN + DCA).
# - W. Xiong et al. *Effective Long-Context Scaling of Foundation Models.* arXiv:2309.16039 (2023) (ABF).
# - Y. Ding et al. *LongRoPE: Extending LLM Context Window Beyond 2 Million Tokens.* arXiv:2402.13753 (2024)
#   (searched per-pair rescale factors; `rope_type="longrope"` in `transformers`).
# - Llama 3.1's `rope_type="llama3"`: `transformers.modeling_rope_utils._compute_llama3_parameters` (5.23),
#   with the values of Llama-3.1-8B's released `rope_scaling` (factor 8, low/high frequency factors 1 and 4,
#   original length 8,192).
# - Dynamic NTK and the KV cache in `transformers`: [issue #25104](https://github.com/huggingface/transformers/issues/25104)
#   (July 2023, closed), [PR #27227](https://github.com/huggingface/transformers/pull/27227) (closed, not
#   merged; the maintainer's comment on speed), [PR #24653](https://github.com/huggingface/transformers/pull/24653)
#   (the PR that added RoPE scaling; bloc97's comment on cached keys).
# - Next in this course: 2D RoPE and M-RoPE (temporal, height, width position ids) in
#   [V6 · Qwen2-VL](../vlm/V6_qwen2_vl.ipynb).
# - Reference implementation used in the checks: `transformers` 5.23.0,
#   `transformers.models.llama.modeling_llama` (`LlamaRotaryEmbedding`, `apply_rotary_pos_emb`,
#   `LlamaAttention`, `LlamaModel`, `LlamaForCausalLM` with its KV cache), `transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS`
#   (`"linear"`, `"dynamic"`, `"yarn"` with `mscale`/`mscale_all_dim`, `"llama3"`), `dynamic_rope_update`,
#   `transformers.models.deepseek_v2.modeling_deepseek_v2.yarn_apply_mscale` (read, not run),
#   `transformers.models.mpt.modeling_mpt.build_mpt_alibi_tensor`,
#   `transformers.models.qwen2.modeling_qwen2.Qwen2Model`; the course's `shared.rope`
#   (tested against the same functions in `tests/test_rope.py`).
