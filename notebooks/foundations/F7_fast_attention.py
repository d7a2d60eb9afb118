# ---
# jupyter:
#   course:
#     cpu_seconds: 29
#     id: F7
#     papers:
#     - arxiv: '2205.14135'
#       title: 'FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness'
#       version: v2
#     - arxiv: '2307.08691'
#       title: 'FlashAttention-2: Faster Attention with Better Parallelism and Work
#         Partitioning'
#       version: v1
#     - arxiv: '1710.03740'
#       title: Mixed Precision Training
#       version: v3
#     - arxiv: '1910.02054'
#       title: 'ZeRO: Memory Optimizations Toward Training Trillion Parameter Models'
#       version: v3
#     part: foundations
#     peak_memory_mb: 513
#     prerequisites:
#     - F1
#     title: 'Fast attention and fast training: FlashAttention, mixed precision, ZeRO'
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
# # F7 · Fast attention and fast training: FlashAttention, mixed precision, ZeRO
#
# [![Open In Colab](../../docs/img/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/foundations/F7_fast_attention.ipynb)
#
# **Papers** (the arXiv version whose section, equation, algorithm and figure numbers this reading cites):
# Dao, Fu, Ermon, Rudra, Ré, *FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness*,
# NeurIPS 2022, [arXiv:2205.14135 v2](https://arxiv.org/abs/2205.14135v2) (June 2022) ·
# Dao, *FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning*, ICLR 2024,
# [arXiv:2307.08691 v1](https://arxiv.org/abs/2307.08691v1) (July 2023) ·
# Micikevicius, Narang, Alben, Diamos, Elsen, Garcia, Ginsburg, Houston, Kuchaiev, Venkatesh, Wu, *Mixed
# Precision Training*, ICLR 2018, [arXiv:1710.03740 v3](https://arxiv.org/abs/1710.03740v3) ·
# Rajbhandari, Rasley, Ruwase, He, *ZeRO: Memory Optimizations Toward Training Trillion Parameter Models*,
# SC 2020, [arXiv:1910.02054 v3](https://arxiv.org/abs/1910.02054v3). Cited below as FA1, FA2, Mixed
# Precision Training and ZeRO, always in these versions.
#
# **Official code:** [Dao-AILab/flash-attention](https://github.com/Dao-AILab/flash-attention) (FlashAttention
# 1 and 2) · [microsoft/DeepSpeed](https://github.com/microsoft/DeepSpeed) (ZeRO) · Mixed Precision Training
# released no code; its loss scaling lives on in `torch.amp.GradScaler`, the reference used here. The course's
# own Triton kernel: [`shared/kernels/flash_attention.py`](../../shared/kernels/flash_attention.py).
#
# **Prerequisites:** [F1 · The Transformer](../../docs/syllabus.md#f1) (not yet written; its syllabus entry) (scaled dot-product attention, masks).
# The packed (`cu_seqlens`) case checked here is the block-diagonal attention of a ViT over several images in
# [V6 · Qwen2-VL](../vlm/V6_qwen2_vl.ipynb).
#
# **CPU run time:** 29 s on a 2-core CPU (measured by `make run`, which rewrites this number)
#
# **Peak memory:** 513 MB

# %% [markdown]
# ## TL;DR
#
# - **FlashAttention** (FA1) computes *exact* attention tile by tile, so the `N×N` matrix never reaches HBM: `Θ(N²d²/M)` accesses instead of `Θ(Nd + N²)` (Theorem 2), optimal for a range of SRAM sizes (Proposition 3).
# - **FlashAttention-2** normalises once at the end, saves only `L = m + log ℓ` and parallelises over query blocks: about 2× FA1 (§3–4).
# - **Mixed precision** (Micikevicius §3.1–3.3): fp16 compute with fp32 master weights, loss scaling and fp32 accumulation. Not in the paper: bf16 has fp32's range (no loss scaling) but only 8 significand bits.
# - **ZeRO** splits mixed-precision Adam's 16 bytes per parameter over the data-parallel ranks (Table 1).
# - **Here**, on CPU, the blocked code and the course's Triton kernel equal exact attention; in a toy, fp16 without loss scaling is behind fp32 on every seed from a gradient divisor of 2¹⁸ (by 0.001), more from 2²⁰, far at 2²⁴.

# %% [markdown]
# ## 中文速览
#
# - **FlashAttention**（FA1）分块计算*精确*注意力，`N×N` 矩阵从不写入 HBM：HBM 访问量为 `Θ(N²d²/M)` 而非 `Θ(Nd + N²)`（定理 2），对一定范围的 SRAM 大小是最优的（命题 3）。
# - **FlashAttention-2** 只在最后归一化一次，只保存 `L = m + log ℓ`，并在查询块上并行：约为 FA1 的 2 倍（§3–4）。
# - **混合精度**（Micikevicius §3.1–3.3）：fp16 计算，配合 fp32 主权重、损失缩放和 fp32 累加。论文中没有的：bf16 的范围与 fp32 相同（无需损失缩放），但只有 8 位有效位（二进制，7 位尾数加隐含位）。
# - **ZeRO** 把混合精度 Adam 每个参数的 16 字节切分到各数据并行进程（表 1）。
# - **本篇**在 CPU 上：分块代码与课程的 Triton 内核等于精确注意力；小实验中，不做损失缩放的 fp16 从梯度除数 2¹⁸ 起在每个种子上都落后于 fp32（差 0.001），从 2²⁰ 起差距变大，除数 2²⁴ 时远远落后。

# %% [markdown]
# ## Setup
#
# The first cell installs the course helper on Colab only (CI skips it). The next one imports, seeds and
# picks the device. Without a GPU it sets `TRITON_INTERPRET=1` **before** `shared.kernels` is imported, so
# that the course's Triton kernels run on CPU under Triton's interpreter (slow: the kernel cells use tiny
# shapes). Everything else runs on CPU in float32 or float64.

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
import inspect
import json
import math
import os
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from pathlib import Path

import torch

if not torch.cuda.is_available():
    # No GPU: run the Triton kernels under Triton's interpreter. shared.kernels (and triton.jit) read this
    # variable when they are first imported, so it must be set before the imports below.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import matplotlib.pyplot as plt
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import shared.kernels as kernels
from shared.attention import (
    block_diagonal_mask,
    causal_mask,
    repeat_kv,
    scaled_dot_product_attention,
    sliding_window_mask,
)
from shared.kernels import flash_attention as fa_kernel
from shared.utils import assert_close, error_bound, pick_device, seed_everything

seed_everything(0)
device = pick_device()  # the Triton kernel cells use it; everything else stays on CPU
torch.set_num_threads(1)  # the tensors here are tiny: one thread beats two that wait on each other
print("torch", torch.__version__, "| Triton installed:", kernels.HAS_TRITON)
print("the course's kernels run here as:", kernels.backend(torch.zeros(1, device=device)))

# %% [markdown]
# ## The problem
#
# **Attention is memory-bound, not compute-bound.** FA1 §2.1: "the A100 GPU has 40-80GB of
# high bandwidth memory (HBM) with bandwidth 1.5-2.0TB/s and 192KB of on-chip SRAM per each of 108 streaming
# multiprocessors with bandwidth estimated around 19TB/s"; its Figure 1 (left) draws the hierarchy as SRAM
# 19 TB/s (20 MB), HBM 1.5 TB/s (40 GB), CPU DRAM 12.8 GB/s (> 1 TB). Standard attention (§2.2, Algorithm 0)
# writes `S = QKᵀ` to HBM, reads it back for the softmax, writes `P`, reads `P` again for `PV`: the `N×N`
# matrices cost `O(N²)` memory and `Θ(Nd + N²)` HBM accesses, and softmax, masking and dropout are
# elementwise passes that do little arithmetic per byte. Approximate attention cut FLOPs instead, and §1
# observes that "many of them do not display wall-clock speedup against standard attention".
#
# **The papers' numbers** (all on A100 GPUs):
#
# | source | setting | standard attention | FlashAttention |
# |---|---|---|---|
# | FA1 Fig. 2 (left) | GPT-2 medium attention, seq. 1024, head dim 64, 16 heads, batch 64, forward + backward | 66.6 GFLOPs, 40.3 GB HBM read/write, 41.7 ms | 75.2 GFLOPs, 4.4 GB, 7.3 ms |
# | FA1 Fig. 1 (right) | GPT-2 attention | PyTorch | 7.6× faster |
# | FA1 abstract | end-to-end training | MLPerf 1.1 BERT-large record; GPT-2 (seq. 1K); long-range arena (1K–4K) | 15% faster; 3×; 2.4× |
# | FA2 abstract, §1 | FlashAttention's share of A100 peak FLOPs/s | | 25–40% (forward 30–50%, backward 25–35%) |
# | FA2 abstract, §4 | FlashAttention-2 | | about 2× FlashAttention, 50–73% of peak; 225 TFLOPs/s per A100 end to end (72% model FLOPs utilisation) |
#
# FlashAttention-2 §3.1 explains why even the leftover non-matmul work matters: the A100 does 312 TFLOPs/s
# of FP16/BF16 matmul "but only 19.5 TFLOPs/s of non-matmul FP32", so "each non-matmul FLOP is 16× more
# expensive than a matmul FLOP".
#
# **Fast training has two more limits: number formats and the memory of model states.** Mixed Precision
# Training v3 §3.1: "any value whose magnitude is smaller than 2⁻²⁴ becomes zero in FP16", and in its Figure 2b
# "approximately 5% of weight gradient values have exponents smaller than −24"; updating fp16 weights directly
# on their Mandarin speech model gave "80% relative accuracy loss". ZeRO v3 §3.1: mixed-precision Adam keeps
# `2Ψ + 2Ψ + KΨ = 16Ψ` bytes for `Ψ` parameters (`K = 12`), so GPT-2 with 1.5B parameters needs "at least
# 24 GB" against 3 GB for its fp16 weights; plain data parallelism "runs out of memory for models with more
# than 1.4B parameters on current generation of GPUs with 32 GB memory" (§1).
#
# The next cell turns Figure 2's workload into bytes, to see what "materialise the `N×N` matrix" means there.

# %%
batch, heads, n, d = 64, 16, 1024, 64  # FA1 Fig. 2: GPT-2 medium attention
one_nxn_fp16 = batch * heads * n * n * 2  # bytes of one fp16 N x N tensor (S, P, dP or dS) for the whole batch
print(f"one fp16 N x N tensor (S or P): {one_nxn_fp16 / 1e9:.2f} GB; Q, K, V or O: {batch * heads * n * d * 2 / 1e9:.3f} GB")
print(f"standard attention's 40.3 GB of HBM traffic = {40.3e9 / one_nxn_fp16:.0f} passes over such a tensor")
for name, gb, ms in (("standard", 40.3, 41.7), ("FlashAttention", 4.4, 7.3)):
    print(f"{name:15s} {gb:5.1f} GB at 1.5 TB/s takes at least {gb / 1.5:4.1f} ms; Fig. 2 measured {ms} ms")

# %% [markdown]
# Moving 40.3 GB at the A100's 1.5 TB/s already takes 26.9 ms of the 41.7 ms: standard attention spends
# most of its time moving `N×N` tensors. FlashAttention moves 9× fewer bytes while computing 13% more FLOPs,
# and wins 5.7×. Making the memory traffic small without changing the result is the whole idea; the rest of
# this reading derives how, then does the same accounting for mixed precision and ZeRO.
#
# **Lineage.** The online softmax is Milakov and Gimelshein's (2018). Rabe and Staats (2021) already tiled
# attention and recomputed it in the backward to save *memory*; FA1 Appendix B.5 contrasts them: their
# method "is around the same speed or slightly slower than standard attention", FlashAttention counts memory
# *accesses* and is 2–4× faster, updates one output accumulator instead of keeping one per block, and derives
# the backward analytically instead of checkpointing. FA2 swaps the loops (outer over query blocks) and adds
# parallelism over the sequence, ideas it credits to Phil Tillet's Triton implementation (§3.2); the course's
# kernel follows that form. On the training-systems side, ZeRO's first release (ZeRO-100B, v3 §1) implemented
# stages 1–2 plus its residual-memory optimisations (ZeRO-R); stage 3 was announced there as the next step.

# %% [markdown]
# ## Derivations
#
# ### 1. Online softmax: a running max `m` and normaliser `ℓ`
#
# For a row of scores `x ∈ ℝᴮ`, FA1 §3.1 writes the stable softmax with three statistics:
#
# $$m(x) = \max_i x_i,\qquad f(x) = \big[e^{x_1 - m(x)}, \dots, e^{x_B - m(x)}\big],\qquad
# \ell(x) = \sum_i f(x)_i,\qquad \mathrm{softmax}(x) = \frac{f(x)}{\ell(x)}. \tag{1}$$
#
# Subtracting `m` changes nothing (multiply top and bottom by `e^{-m}`) and keeps every exponent `≤ 0`.
# Now split the row into two blocks, `x = [x⁽¹⁾, x⁽²⁾]`. The max of the whole is the max of the maxes, and
# each block's sum can be moved to the new reference point by one factor, because
# `e^{x_j − m} = e^{m(x⁽¹⁾) − m} · e^{x_j − m(x⁽¹⁾)}`:
#
# $$m(x) = \max\big(m(x^{(1)}), m(x^{(2)})\big),\qquad
# \ell(x) = e^{m(x^{(1)}) - m(x)}\,\ell(x^{(1)}) + e^{m(x^{(2)}) - m(x)}\,\ell(x^{(2)}). \tag{2}$$
#
# Applied block after block to a running pair `(m, ℓ)` this is the *online softmax* (Milakov and
# Gimelshein 2018, FlashAttention's ref. [60]): with `m_new = max(m, max(x_block))`,
#
# $$\ell \leftarrow e^{m - m_{\text{new}}}\,\ell + \textstyle\sum_{j \in \text{block}} e^{x_j - m_{\text{new}}},\qquad m \leftarrow m_{\text{new}}. \tag{3}$$
#
# The factor `e^{m − m_new} ≤ 1` rescales what was summed so far; starting from `m = −∞, ℓ = 0` the first
# block needs no special case (`e^{−∞} = 0`). The cell runs eq. (3) on eight scores in two blocks of four,
# prints `(m, ℓ)` after each block, and compares the result with `torch.softmax` in float64.

# %%
def online_softmax_stats(x: torch.Tensor, block: int) -> list[tuple[float, float]]:
    """Eq. (3) over a vector x (n,), `block` entries at a time: the running (m, l) after each block."""
    m = torch.tensor(-math.inf, dtype=x.dtype)  # () running max
    l = torch.tensor(0.0, dtype=x.dtype)  # () running sum of exp(x_j - m)
    history = []
    for start in range(0, x.numel(), block):
        xb = x[start : start + block]  # (<= block,) this block's scores
        m_new = torch.maximum(m, xb.max())  # eq. (2), first half
        l = torch.exp(m - m_new) * l + torch.exp(xb - m_new).sum()  # eq. (3): rescale the old sum, add the new
        m = m_new
        history.append((m.item(), l.item()))
    return history


x = torch.tensor([3.0, 1.0, -2.0, 0.5, 6.0, 2.0, -1.0, 4.0], dtype=torch.float64)  # (8,) one row of scores
history = online_softmax_stats(x, block=4)
for b, (m, l) in enumerate(history, 1):
    print(f"after block {b}: m = {m:.4f}, l = {l:.6f}")
m, l = history[-1]
print(f"direct:        m = {x.max().item():.4f}, l = {torch.exp(x - x.max()).sum().item():.6f}")
online = torch.exp(x - m) / l  # (8,) softmax from the online statistics
err = assert_close(online, torch.softmax(x, dim=0), atol=1e-15, rtol=0, name="online softmax")
print("online softmax:", [round(v, 4) for v in online.tolist()], f"| max error vs torch.softmax {error_bound(err, 1e-15)}")

# %% [markdown]
# After block 1, `m = 3` and `ℓ = e⁰ + e⁻² + e⁻⁵ + e^{−2.5}`; block 2 raises the max to 6, so the first
# sum is multiplied by `e^{3−6}` before block 2's terms are added. Two numbers per row are all that has to
# survive between blocks.
#
# ### 2. Attention with an output accumulator (FlashAttention-2, Algorithm 1)
#
# Attention needs `O_i = Σ_j softmax(S_i)_j v_j`, not the softmax itself. Keep, for a block `i` of `B_r`
# query rows, an *unnormalised* accumulator `Õ_i = Σ_{j seen} e^{S_ij − m_i} v_j` next to `(m_i, ℓ_i)`. When
# the max grows, every term of `Õ` was computed against the old `m`, so it is rescaled by the same factor as
# `ℓ` in eq. (3). FlashAttention-2 v1 Algorithm 1, lines 8–13, for key block `j` (tile `S_i^{(j)} =
# Q_i K_jᵀ · τ`, with `τ = 1/√d` the softmax scale of FA1 Appendix B.3):
#
# $$m_i^{(j)} = \max\big(m_i^{(j-1)}, \mathrm{rowmax}(S_i^{(j)})\big),\qquad
# \tilde P_i^{(j)} = \exp\big(S_i^{(j)} - m_i^{(j)}\big),\qquad
# \ell_i^{(j)} = e^{m_i^{(j-1)} - m_i^{(j)}}\,\ell_i^{(j-1)} + \mathrm{rowsum}\big(\tilde P_i^{(j)}\big) \tag{4}$$
#
# $$\tilde O_i^{(j)} = \mathrm{diag}\big(e^{m_i^{(j-1)} - m_i^{(j)}}\big)\,\tilde O_i^{(j-1)} + \tilde P_i^{(j)} V_j \tag{5}$$
#
# $$O_i = \mathrm{diag}\big(\ell_i^{(T_c)}\big)^{-1}\,\tilde O_i^{(T_c)},\qquad L_i = m_i^{(T_c)} + \log \ell_i^{(T_c)}. \tag{6}$$
#
# By induction over `j`, `Õ_i^{(j)} = Σ_{keys so far} e^{S − m_i^{(j)}} V` and `ℓ_i^{(j)} = Σ e^{S − m_i^{(j)}}`,
# so eq. (6) is exactly `softmax(S_i) V`: nothing is approximated, only the order of the sums changes (FA1
# Theorem 1; FA2 §3.1.1 "with no approximation"). FlashAttention (FA1) divided by `ℓ` after
# every tile; FlashAttention-2's first tweak is to divide once at the end (eq. 6), its second to save only the
# log-sum-exp `L` for the backward instead of both `m` and `ℓ`. Masks (causal, padding, packed sequences) set
# scores to `−∞`; a tile that is entirely masked is skipped, which is where causal attention saves half the
# work ("around 1.7-1.8× speedup", FA2 §3.1.1).
#
# **Paper erratum.** As printed, Algorithm 1 line 10 of FA2 reads `diag(e^{m^{(j−1)} − m^{(j)}})^{−1}
# Õ^{(j−1)}`: the `−1` is a typo (eq. 5 multiplies by the factor `≤ 1`, as the derivation above requires),
# reported in [Dao-AILab/flash-attention#991](https://github.com/Dao-AILab/flash-attention/issues/991) (open);
# the course's kernel multiplies, as does Triton's fused-attention tutorial (a comment in that issue). The
# check section runs the printed line too. The FlashAttention-3 paper (arXiv:2407.08608) has the same `^{−1}`
# in its Algorithm 1 (line 21), reported in [#1303](https://github.com/Dao-AILab/flash-attention/issues/1303)
# (closed; the reply: "it will be fixed in the upcoming revision of the paper").
#
# The cell implements eqs. (4)–(6) in plain PyTorch, FlashAttention-2's loop order (outer loop over query
# blocks, inner over key blocks), with an optional bool mask, and prints one query row's `(m, ℓ)` as the key
# blocks stream past.

# %%
def flash_attention_blocked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    block_m: int = 16,
    block_n: int = 16,
    line10_as_printed: bool = False,
    history: list | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact attention, tile by tile (FA2 Algorithm 1 = eqs. 4-6). Returns (out, lse).

    q: (batch, heads, n_q, d); k, v: (batch, heads, n_k, d); mask: bool (n_q, n_k), True = attend, or None.
    out: (batch, heads, n_q, d); lse: (batch, heads, n_q), L = m + log l of the scaled scores.
    line10_as_printed: divide by the rescaling factor instead of multiplying (the paper's typo, see above).
    history: if a list, gets (key block start, m, l) of query row 0 after each key block.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])  # tau = 1/sqrt(d)
    n_q, n_k = q.shape[2], k.shape[2]
    out = torch.empty_like(q)  # (batch, heads, n_q, d)
    lse = torch.empty(q.shape[:3], dtype=q.dtype)  # (batch, heads, n_q)
    for i0 in range(0, n_q, block_m):  # outer loop: one block of query rows (one GPU program in FA2)
        qi = q[:, :, i0 : i0 + block_m]  # (batch, heads, Br, d)
        m = torch.full(qi.shape[:3], -math.inf, dtype=q.dtype)  # (batch, heads, Br) running max
        l = torch.zeros(qi.shape[:3], dtype=q.dtype)  # (batch, heads, Br) running normaliser
        acc = torch.zeros_like(qi)  # (batch, heads, Br, d) unnormalised output O~
        for j0 in range(0, n_k, block_n):  # inner loop: stream the key/value blocks
            visible = None if mask is None else mask[i0 : i0 + block_m, j0 : j0 + block_n]  # (Br, Bc)
            if visible is not None and not visible.any():
                continue  # a fully masked tile: skipped, no FLOPs (causal attention's saving)
            s = qi @ k[:, :, j0 : j0 + block_n].transpose(-1, -2) * scale  # (batch, heads, Br, Bc) S_i^(j)
            if visible is not None:
                s = s.masked_fill(~visible, -math.inf)
            m_new = torch.maximum(m, s.amax(dim=-1))  # eq. (4), first
            m_ref = torch.where(m_new == -math.inf, 0.0, m_new)  # a row with no visible key yet: avoid -inf - -inf
            alpha = torch.exp(m - m_ref)  # (batch, heads, Br) e^{m_old - m_new} <= 1
            p = torch.exp(s - m_ref[..., None])  # (batch, heads, Br, Bc) P~ of eq. (4)
            l = alpha * l + p.sum(dim=-1)  # eq. (4), last
            if line10_as_printed:  # the printed line 10: divide by the factor (first tile: nothing to rescale)
                rescale = torch.where(m == -math.inf, 0.0, 1.0 / alpha)
            else:
                rescale = alpha
            acc = rescale[..., None] * acc + p @ v[:, :, j0 : j0 + block_n]  # eq. (5)
            m = m_new
            if history is not None:
                history.append((j0, m[0, 0, 0].item(), l[0, 0, 0].item()))
        out[:, :, i0 : i0 + block_m] = acc / l[..., None]  # eq. (6): normalise once
        lse[:, :, i0 : i0 + block_m] = m + torch.log(l)  # eq. (6): the one statistic saved for the backward
    return out, lse


g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(1, 1, 8, 4, generator=g, dtype=torch.float64) for _ in range(3))  # (1, 1, 8, 4) tiny
trace = []
out, lse = flash_attention_blocked(q, k, v, block_m=4, block_n=2, history=trace)
for j0, m_row, l_row in trace[:4]:  # query block 0 meets key blocks 0, 2, 4, 6
    print(f"query row 0 after keys {j0}..{j0 + 1}: m = {m_row:+.4f}, l = {l_row:.4f}")
exact = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v  # (1, 1, 8, 4) softmax(QK^T/sqrt(4)) V
print("row 0, blocked:", [round(t, 4) for t in out[0, 0, 0].tolist()])
print("row 0, exact:  ", [round(t, 4) for t in exact[0, 0, 0].tolist()])

# %% [markdown]
# The blocked row equals the exact one, and `L = m + log ℓ` is the row's log-sum-exp. The check section
# asserts this on larger shapes, with masks, against float64 attention and `F.scaled_dot_product_attention`.
#
# ### 3. The backward pass from the saved log-sum-exp
#
# With `O = PV`, `P = softmax(S)` row-wise and `S = τ QKᵀ`, the chain rule gives (FA1 Appendix B.2; FA2 §2.2)
#
# $$dV = P^\top dO,\qquad dP = dO\,V^\top,\qquad dQ = \tau\, dS\,K,\qquad dK = \tau\, dS^\top Q. \tag{7}$$
#
# For one row `p = softmax(s)` the Jacobian is `diag(p) − ppᵀ`, so
# `ds = (diag(p) − ppᵀ) dp = p∘dp − (pᵀdp) p`, i.e.
#
# $$dS_{ij} = P_{ij}\,(dP_{ij} - D_i),\qquad D_i = \sum_j P_{ij}\,dP_{ij}. \tag{8}$$
#
# `D_i` looks like an `N`-long reduction over two `N×N` matrices. It is not: substitute `dP_ij = dO_i·v_j`,
#
# $$D_i = \sum_j P_{ij}\, dO_i^\top v_j = dO_i^\top \sum_j P_{ij} v_j = dO_i^\top O_i
# \quad\Longrightarrow\quad D = \mathrm{rowsum}(dO \circ O), \tag{9}$$
#
# a dot product of two `d`-vectors per row, computed once before the tiles (FA1 Appendix B.4 observation 2;
# FA2 Algorithm 2 line 4). And `P` itself never has to be stored: `P_ij = exp(S_ij − L_i)` (FA2 Algorithm 2
# line 11) is recomputed tile by tile from `Q`, `K` and the saved `L`. That costs one extra `QKᵀ` per tile
# (FLOPs go up, §5 below) but reads `N` numbers of `L` instead of `N²` of `P`: for Figure 2's workload, the
# fp32 `L` is `64·16·1024·4` bytes = 4.2 MB against 2.1 GB for an fp16 `P`. The cell implements eqs. (7)–(9)
# tile by tile (FA2 Algorithm 2: outer loop over key blocks, inner over query blocks) and checks eq. (9)
# numerically against the long form `rowsum(P∘dP)`.

# %%
def flash_attention_backward_blocked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dout: torch.Tensor,
    mask: torch.Tensor | None = None,
    block_m: int = 16,
    block_n: int = 16,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of eqs. (7)-(9), tile by tile, from the saved out and lse (FA2 Algorithm 2).

    Shapes as flash_attention_blocked; dout: (batch, heads, n_q, d).
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    n_q, n_k = q.shape[2], k.shape[2]
    delta = (dout * out).sum(dim=-1)  # (batch, heads, n_q) eq. (9): D = rowsum(dO o O), Algorithm 2 line 4
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for j0 in range(0, n_k, block_n):  # outer loop over key blocks (line 5): this block's dK_j, dV_j
        kj, vj = k[:, :, j0 : j0 + block_n], v[:, :, j0 : j0 + block_n]  # (batch, heads, Bc, d)
        for i0 in range(0, n_q, block_m):  # inner loop over query blocks (line 8)
            visible = None if mask is None else mask[i0 : i0 + block_m, j0 : j0 + block_n]
            if visible is not None and not visible.any():
                continue
            qi, doi = q[:, :, i0 : i0 + block_m], dout[:, :, i0 : i0 + block_m]  # (batch, heads, Br, d)
            s = qi @ kj.transpose(-1, -2) * scale  # (batch, heads, Br, Bc) line 10: recompute S
            p = torch.exp(s - lse[:, :, i0 : i0 + block_m, None])  # line 11: P = exp(S - L), no softmax pass
            if visible is not None:
                p = torch.where(visible, p, 0.0)
            dv[:, :, j0 : j0 + block_n] += p.transpose(-1, -2) @ doi  # line 12: dV_j += P^T dO_i
            dp = doi @ vj.transpose(-1, -2)  # line 13: dP = dO_i V_j^T
            ds = p * (dp - delta[:, :, i0 : i0 + block_m, None])  # line 14, eq. (8): dS = P o (dP - D)
            dq[:, :, i0 : i0 + block_m] += ds @ kj * scale  # line 15: dQ_i += dS K_j (times tau)
            dk[:, :, j0 : j0 + block_n] += ds.transpose(-1, -2) @ qi * scale  # line 16: dK_j += dS^T Q_i
    return dq, dk, dv


dout = torch.randn(1, 1, 8, 4, generator=g, dtype=torch.float64)  # (1, 1, 8, 4) an output gradient
p_full = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # (1, 1, 8, 8) P, only for this check
d_long = (p_full * (dout @ v.transpose(-1, -2))).sum(dim=-1)  # rowsum(P o dP): N x N work
d_short = (dout * out).sum(dim=-1)  # rowsum(dO o O), eq. (9): N x d work
err = assert_close(d_short, d_long, atol=1e-12, rtol=0, name="D")
print("D = rowsum(dO o O):", [round(t, 4) for t in d_short[0, 0].tolist()], f"| vs rowsum(P o dP) {error_bound(err, 1e-12)}")

# %% [markdown]
# ### 4. IO complexity (FA1 Theorem 2)
#
# **Theorem 2** (FA1 §3.2): "Let `N` be the sequence length, `d` be the head dimension, and `M` be size of
# SRAM with `d ≤ M ≤ Nd`. Standard attention (Algorithm 0) requires `Θ(Nd + N²)` HBM accesses, while
# FlashAttention (Algorithm 1) requires `Θ(N²d²M⁻¹)` HBM accesses." The theorem does not give `M` a unit; its
# gloss a few lines later, "`M` (around 100KB)", is in bytes. The counts below are in *elements* (numbers read
# or written), so we take `M` in elements too: an A100 SM's 192 KB of SRAM holds 98,304 fp16 elements, and the
# paper's 100 KB would hold about 50K.
#
# *Standard attention* (Algorithm 0): read `Q, K` (`2Nd`), write `S` (`N²`); read `S`, write `P` (`2N²`);
# read `P, V` (`N² + Nd`), write `O` (`Nd`):
#
# $$\text{HBM}_{\text{std}} = 4Nd + 4N^2. \tag{10}$$
#
# *FlashAttention* (FA1's Algorithm 1, whose loops run the other way round: outer over key blocks, inner over
# query blocks, with `O, ℓ, m` kept in HBM between tiles). Block sizes `B_c = ⌈M/4d⌉`, `B_r = min(⌈M/4d⌉, d)`
# (line 1). Why these: the proof of Theorem 2 (Appendix C) needs the `B_c × d` blocks `K_j, V_j`, the `B_r × d`
# blocks `Q_i, O_i` and the `B_r × B_c` tile `S_ij` each to take `O(M)` of SRAM. With four `B × d` blocks on
# chip, `B ≈ M/4d` gives each a quarter of `M` (the 4); and capping `B_r` at `d` keeps the tile at
# `B_r B_c ≤ d · M/4d = M/4` (the `min(…, d)`; App. C writes it `B_r = Θ(min(M/d, M/B_c)) = Θ(min(M/d, d))`).
# Each element of `K` and `V` is read once (line 6: `2Nd`); each of the `T_c = ⌈N/B_c⌉` outer iterations reads
# all of `Q, O, ℓ, m` (line 8: `2Nd + 2N`) and writes `O, ℓ, m` back (lines 12–13: `Nd + 2N`):
#
# $$\text{HBM}_{\text{flash}} = 2Nd + T_c\,(3Nd + 4N),\qquad T_c = \lceil N / \lceil M/4d \rceil \rceil \approx 4Nd/M
# \;\Rightarrow\; \Theta\!\left(\frac{N^2 d^2}{M}\right). \tag{11}$$
#
# The appendix C proof is the same count ("`Θ(Nd + NdT_c) = Θ(NdT_c)`", `T_c = Θ(Nd/M)`). The ratio
# `HBM_std / HBM_flash ≈ (4N²)/(12N²d²/M) = M/(3d²)`: at `d = 64` it is 8 for `M` = 98,304 elements (192 KB of
# fp16) and about 4 for the paper's 100 KB (about 50K fp16 elements), the sense of "For typical values of `d`
# (64-128) and `M` (around 100KB), `d²` is many times smaller than `M`".
#
# **No exact algorithm does asymptotically better for every SRAM size.** FA1 Proposition 3: "There does not
# exist an algorithm to compute exact attention with `o(N²d²M⁻¹)` HBM accesses for all `M` in the range
# `[d, Nd]`." The proof (Appendix C) is one line: at `M = Θ(Nd)` such an algorithm would make `o(Nd)` accesses,
# but `Q, K, V` (`Nd` elements each) start in HBM and the `Nd` elements of `O` must end there, so any exact
# algorithm needs `Ω(Nd)`. It is a lower bound over a range of `M`, not for each `M` (the paper leaves
# "parameterized complexity" bounds to future work). The backward pass has the same bounds (Theorem 5, Appendix B.4:
# `Θ(Nd + N²)` for standard attention's backward, `Θ(N²d²M⁻¹)` for FlashAttention's). The cell runs both
# algorithms literally (FA1 Algorithm 1 lines 1–15 with the scale `τ` of Appendix
# B.3, and Algorithm 0) on one head, counting every element moved between the "HBM" tensors and "SRAM", and
# asserts that the counts equal eqs. (10)–(11) and that both outputs equal exact attention.

# %%
class HBM:
    """Counts the elements read from and written to "HBM" (the tensors passed in) by the algorithms below."""

    def __init__(self) -> None:
        self.reads = 0
        self.writes = 0

    def load(self, t: torch.Tensor) -> torch.Tensor:
        self.reads += t.numel()
        return t.clone()  # the copy is the on-chip (SRAM) value

    def store(self, dst: torch.Tensor, rows: slice, t: torch.Tensor) -> None:
        self.writes += t.numel()
        dst[rows] = t


def standard_attention_counted(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, HBM]:
    """FA1 Algorithm 0 on one head, q, k, v: (N, d). Returns (O, counter)."""
    hbm, n = HBM(), q.shape[0]
    S, P, O = torch.empty(n, n, dtype=q.dtype), torch.empty(n, n, dtype=q.dtype), torch.empty_like(q)  # in HBM
    hbm.store(S, slice(None), hbm.load(q) @ hbm.load(k).T / math.sqrt(q.shape[1]))  # line 1
    hbm.store(P, slice(None), torch.softmax(hbm.load(S), dim=-1))  # line 2
    hbm.store(O, slice(None), hbm.load(P) @ hbm.load(v))  # line 3
    return O, hbm


def flash_attention_v1_counted(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sram: int, block_c: int | None = None
) -> tuple[torch.Tensor, HBM, int, int]:
    """FA1 Algorithm 1 (tau of App. B.3) on one head, q, k, v: (N, d), SRAM of `sram` elements.

    Returns (O, counter, B_c, the largest number of elements held on chip at once). block_c overrides B_c.
    """
    n, d = q.shape
    tau = 1.0 / math.sqrt(d)
    bc = block_c or math.ceil(sram / (4 * d))  # line 1
    br = min(math.ceil(sram / (4 * d)), d)
    O = torch.zeros_like(q)  # line 2: O, l, m live in HBM
    l = torch.zeros(n, dtype=q.dtype)
    m = torch.full((n,), -math.inf, dtype=q.dtype)
    hbm, on_chip = HBM(), 0
    for j in range(0, n, bc):  # line 5: outer loop over key/value blocks
        kj, vj = hbm.load(k[j : j + bc]), hbm.load(v[j : j + bc])  # line 6, (Bc, d) each
        for i in range(0, n, br):  # line 7: inner loop over query blocks
            rows = slice(i, i + br)
            qi, oi, li, mi = hbm.load(q[rows]), hbm.load(O[rows]), hbm.load(l[rows]), hbm.load(m[rows])  # line 8
            sij = tau * qi @ kj.T  # line 9, (Br, Bc)
            m_t = sij.amax(dim=1)  # line 10: rowmax, P~ = exp(S - m~), l~ = rowsum(P~)
            p_t = torch.exp(sij - m_t[:, None])
            l_t = p_t.sum(dim=1)
            m_new = torch.maximum(mi, m_t)  # line 11
            l_new = torch.exp(mi - m_new) * li + torch.exp(m_t - m_new) * l_t
            o_new = ((li * torch.exp(mi - m_new))[:, None] * oi + torch.exp(m_t - m_new)[:, None] * (p_t @ vj)) / l_new[:, None]
            hbm.store(O, rows, o_new)  # line 12
            hbm.store(l, rows, l_new)  # line 13
            hbm.store(m, rows, m_new)
            on_chip = max(on_chip, 2 * kj.numel() + 2 * qi.numel() + sij.numel() + 4 * len(li))
    return O, hbm, bc, on_chip


def hbm_standard(n: int, d: int) -> int:
    return 4 * n * d + 4 * n * n  # eq. (10)


def hbm_flash(n: int, d: int, sram: int) -> int:
    t_c = math.ceil(n / math.ceil(sram / (4 * d)))
    return 2 * n * d + t_c * (3 * n * d + 4 * n)  # eq. (11)


print(f"{'N':>5} {'d':>3} {'M':>6} {'B_c':>4} | {'std counted':>11} {'eq. 10':>9} | {'flash counted':>13} {'eq. 11':>9} | ratio | on chip / M")
for n, d, sram in ((64, 16, 1024), (100, 16, 2000), (256, 32, 8192), (1024, 64, 98_304)):
    qh, kh, vh = (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(3))  # (N, d) one head
    o_std, c_std = standard_attention_counted(qh, kh, vh)
    o_fl, c_fl, bc, on_chip = flash_attention_v1_counted(qh, kh, vh, sram)
    exact = torch.softmax(qh @ kh.T / math.sqrt(d), dim=-1) @ vh  # (N, d) the definition, in one line
    assert_close(o_std, exact, atol=1e-12, rtol=0, name="Algorithm 0")
    assert_close(o_fl, exact, atol=1e-12, rtol=0, name="Algorithm 1")
    assert c_std.reads + c_std.writes == hbm_standard(n, d)
    assert c_fl.reads + c_fl.writes == hbm_flash(n, d, sram)
    std, fl = c_std.reads + c_std.writes, c_fl.reads + c_fl.writes
    print(f"{n:5d} {d:3d} {sram:6d} {bc:4d} | {std:11,d} {hbm_standard(n, d):9,d} | {fl:13,d} {hbm_flash(n, d, sram):9,d} "
          f"| {std / fl:5.2f} | {on_chip / sram:.2f}")

# %% [markdown]
# Both algorithms return exact attention; the counts from the running code equal eqs. (10)–(11), including
# ragged last blocks (`N = 100`). On the `N = 1024, d = 64` row, `M` is an A100 SM's 192 KB of SRAM in fp16
# elements (98,304): FlashAttention moves 6.1× fewer elements in the forward pass. The blocks occupy up to
# about 1.3 `M` (the constant hidden in the `Θ`); real kernels pick block sizes by hand (FA2 §3.3: "Typically we
# choose blocks of size {64,128} × {64,128}"). The Reproduction section tabulates eqs. (10)–(11) for long
# sequences.
#
# ### 5. FLOPs are unchanged in the forward pass and grow in the backward
#
# Theorem 1 (FA1): Algorithm 1 "returns `O = softmax(QKᵀ)V` with `O(N²d)` FLOPs". Counting matmuls
# (`2mnk` FLOPs for an `m×k` by `k×n` product): each tile does `QᵢKⱼᵀ` and `P̃Vⱼ`, `2·B_r·B_c·d` each, and the
# tiles cover the `N × N` scores once, so the forward is `4N²d` per head, exactly the standard
# implementation's `QKᵀ` plus `PV` (FA2 §4.1 uses `4 · seqlen² · head dim · heads` for its TFLOPs/s). The
# backward of standard attention does four matmuls (`dV, dP, dQ, dK`: `8N²d`); FlashAttention's adds the
# recomputation of `S`, five matmuls (`10N²d`; FA2 §4.1 multiplies the forward count by 2.5 "since there are
# 2 matmuls in the forward pass and 5 matmuls in the backward pass, due to recomputation"). Forward plus
# backward: `14N²d` against `12N²d`, 17% more. The cell counts them with PyTorch's `FlopCounterMode` (which
# counts every matmul that runs), for materialised attention with autograd and for the blocked code above.

# %%
def materialised_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v with the N x N matrix built (FA1 Algorithm 0). Shapes (b, h, n, d)."""
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (b, h, n_q, n_k)
    if mask is not None:
        s = s.masked_fill(~mask, -math.inf)
    return torch.softmax(s, dim=-1) @ v


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


b_, h_, n_, d_ = 2, 3, 96, 16
qf, kf, vf, dof = (torch.randn(b_, h_, n_, d_, generator=g) for _ in range(4))  # (2, 3, 96, 16)
formula = 4 * b_ * h_ * n_ * n_ * d_  # 4 N^2 d per head
qg, kg, vg = (t.clone().requires_grad_() for t in (qf, kf, vf))  # all three need gradients
flops = {
    "standard forward": count_flops(lambda: materialised_attention(qg, kg, vg)),
    "blocked forward": count_flops(lambda: flash_attention_blocked(qf, kf, vf, block_m=16, block_n=32)),
}
out_std = materialised_attention(qg, kg, vg)
flops["standard backward (autograd)"] = count_flops(lambda: out_std.backward(dof))
o_b, l_b = flash_attention_blocked(qf, kf, vf)
flops["blocked backward (recompute S)"] = count_flops(lambda: flash_attention_backward_blocked(qf, kf, vf, o_b, l_b, dof))
cm = causal_mask(n_)
flops["blocked forward, causal, tiles skipped"] = count_flops(lambda: flash_attention_blocked(qf, kf, vf, cm))
flops["standard forward, causal (mask only)"] = count_flops(lambda: materialised_attention(qf, kf, vf, cm))
for name, f in flops.items():
    print(f"{name:40s} {f:>10,d} FLOPs = {f / formula:.3f} x 4N^2d")
assert flops["blocked forward"] == flops["standard forward"] == formula
fwd_bwd_ratio = (flops["blocked forward"] + flops["blocked backward (recompute S)"]) / (flops["standard forward"] + flops["standard backward (autograd)"])
print(f"forward + backward, blocked / standard: {fwd_bwd_ratio:.3f} (FA1 Fig. 2: 75.2 / 66.6 = {75.2 / 66.6:.3f})")
fig2_fwd = 4 * 1024**2 * 64 * (64 * 16)  # 4 N^2 d per head times batch x heads, Fig. 2's workload
print(f"Fig. 2's workload counted the same way: standard {3 * fig2_fwd / 1e9:.1f} GFLOPs, FlashAttention "
      f"{3.5 * fig2_fwd / 1e9:.1f} GFLOPs forward + backward; the figure prints 66.6 and 75.2")

# %% [markdown]
# The forward FLOPs are identical (asserted), the backward grows from 2.0× to 2.5× the forward, and the
# causal version skips the tiles above the diagonal: with 16-row tiles it does 0.583 of the dense work
# (`(1 + 2 + … + 6)/36`, the diagonal tiles are computed in full and masked), where the materialised version
# does all of it. Figure 2 reports 13% more FLOPs for FlashAttention (75.2 vs 66.6 GFLOPs) where our count gives
# 17%. We cannot say where the difference comes from: counted our way, the matmuls of the workload in its
# caption (batch 64, 16 heads, seq. 1024, head dim 64) come to 824.6 and 962.1 GFLOPs forward + backward (last
# line), about 12× the figure's absolute numbers, and the paper does not say how its GFLOPs were counted. So we
# put the two ratios side by side without decomposing the figure's.
#
# ### 6. fp16 and bf16: range against precision
#
# A binary float with `e` exponent bits and `t` stored fraction bits has: largest finite value
# `(2 − 2^{−t}) · 2^{bias}` with `bias = 2^{e−1} − 1`; smallest normal `2^{1−bias}`; smallest subnormal
# `2^{1−bias−t}`; machine epsilon (the gap above 1) `2^{−t}`. IEEE fp16 has `e = 5, t = 10`; bfloat16 keeps
# float32's `e = 8` and cuts the fraction to `t = 7`. So fp16's normal range is `[2⁻¹⁴, 65504]` and its
# subnormals go down to `2⁻²⁴`. bf16 has float32's range (largest ≈ `3.4·10³⁸`, the same smallest normal
# `2⁻¹²⁶`; its subnormals stop at `2⁻¹³³` where float32's go on to `2⁻¹⁴⁹`), but 8 significand bits (7 stored
# plus the implicit leading 1) against fp16's 11: 3 bits fewer, about one decimal digit (`log₁₀ 2³ ≈ 0.9`).
# Below the smallest subnormal `2^{1−bias−t}`, round-to-nearest-even decides: a magnitude above half of it
# rounds up to it, one at most half of it becomes 0 (exactly half is a tie, and the even neighbour is 0). For
# fp16: magnitudes `≤ 2⁻²⁵` become 0, those in `(2⁻²⁵, 2⁻²⁴)` become `2⁻²⁴`. The cell prints `torch.finfo`,
# checks the formula, the bit patterns (the 16-bit word `0x0001` is the smallest subnormal; `0x3C01` in fp16
# and `0x3F81` in bf16 are the next number above 1), bf16's and float32's shared smallest normal, and the
# rounding at the bottom of each 16-bit format.

# %%
formats = {torch.float16: (5, 10, 0x3C01), torch.bfloat16: (8, 7, 0x3F81), torch.float32: (8, 23, None)}
print(f"{'dtype':9s} {'exp':>3s} {'frac':>4s} {'max':>10s} {'min normal':>11s} {'min subnormal':>13s} {'eps':>10s}")
for dt, (e, t, above_one) in formats.items():
    fi = torch.finfo(dt)
    bias = 2 ** (e - 1) - 1
    sub = 2.0 ** (1 - bias - t)
    assert fi.max == (2 - 2.0**-t) * 2.0**bias and fi.smallest_normal == 2.0 ** (1 - bias) and fi.eps == 2.0**-t
    if above_one is not None:  # the bit patterns, read as numbers: independent of finfo
        word = torch.tensor([1, above_one], dtype=torch.int16).view(dt)
        assert word[0].item() == sub and word[1].item() - 1 == fi.eps
    print(f"{str(dt)[6:]:9s} {e:3d} {t:4d} {fi.max:10.4g} {fi.smallest_normal:11.4g} {sub:13.4g} {fi.eps:10.4g}")
assert torch.finfo(torch.bfloat16).smallest_normal == torch.finfo(torch.float32).smallest_normal == 2.0**-126
for dt, sub in ((torch.float16, 2.0**-24), (torch.bfloat16, 2.0**-133)):  # round to nearest even at the bottom
    half, above_half = torch.tensor(sub / 2), torch.tensor(sub / 2 * (1 + 2.0**-10))  # float32, exact
    assert half.to(dt).item() == 0.0 and above_half.to(dt).item() == sub
    print(f"{str(dt)[6:]}: 2^{math.log2(sub):.0f} / 2 rounds to {half.to(dt).item():g}, "
          f"a hair above it to {above_half.to(dt).item():.4g} = 2^{math.log2(sub):.0f}")
grads = torch.tensor([1e-3, 1e-5, 1e-7, 3e-8, 1e-9, 1e-12])  # float32 gradient values
print("float32 values:   ", [f"{t:.0e}" for t in grads.tolist()])
print("rounded to fp16:  ", [f"{t:.2e}" for t in grads.half().float().tolist()])
print("rounded to bf16:  ", [f"{t:.2e}" for t in grads.bfloat16().float().tolist()])

# %% [markdown]
# In fp16, `10⁻⁷` survives only as a subnormal with 1–2 significant bits (`1.19·10⁻⁷ = 2·2⁻²⁴`),
# `3·10⁻⁸` rounds *up* to the smallest subnormal `2⁻²⁴ = 5.96·10⁻⁸` (twice its value), and `10⁻⁹`, `10⁻¹²`
# become zero; bf16 keeps all six to 2–3 digits. The paper's "any value whose magnitude is smaller than
# `2⁻²⁴` becomes zero in FP16" (§3.1) is the right picture up to rounding: as printed above, magnitudes
# `≤ 2⁻²⁵` become zero and those in `(2⁻²⁵, 2⁻²⁴)` round up to `2⁻²⁴`.
#
# ### 7. Loss scaling and fp32 master weights
#
# **Loss scaling** (Mixed Precision Training v3 §3.2). Multiply the loss by `S` before the backward pass; by
# the chain rule every gradient is multiplied by `S`, which moves small gradients out of fp16's flush-to-zero
# zone; divide the weight gradients by `S` (in fp32) before the update, so the update is unchanged. With `S` a
# power of two, scaling and unscaling are exact (they only change the exponent). The constraint is the top of
# the range: the paper picks a constant `S` empirically, or so that its product with the largest gradient stays
# below 65,504, and detects overflow (infinities or NaNs in the weight gradients) to skip that update. *Dynamic* loss scaling
# automates the choice; in `torch.amp.GradScaler` (the version used here, `torch` 2.13): on any inf/NaN skip
# the step and multiply `S` by `backoff_factor = 0.5`; after `growth_interval = 2000` clean steps in a row
# multiply it by `growth_factor = 2`; start at `init_scale = 2¹⁶` (its `__init__` defaults and `update`).
#
# **Master weights** (§3.1). An update `u` added to a weight `w` in a format with `t` fraction bits is lost
# when `|u|` is at most half the gap between `w` and its neighbour (a tie rounds to the even neighbour, here
# `w`). For `2^e ≤ |w| < 2^{e+1}` that gap is `2^{e−t}`, so for `w` a power of two an update that increases
# `|w|` is lost once `|w|/|u| ≥ 2^{t+1}`, and for other weights in the binade once the ratio passes a value
# between `2^{t+1}` and `2^{t+2}`. An update *toward zero* at a power of two meets the gap below it, half as
# large (`2^{e−t−1}`), so there the threshold is `2^{t+2}`. For fp16 (`t = 10`), `2^{t+1}` is 2048, the paper's number ("the magnitude of a normalized weight
# value is at least 2048 times larger that of the weight update"; it reasons in exponents: a right shift by 11
# positions "potentially" creates a zero, by 12 or more always); for bf16 (`t = 7`) it is 256. Keeping the
# weights in fp32 (`t = 23`) and rounding a copy to fp16/bf16 for the forward and backward passes removes the
# problem. The cell sweeps `|w|/|u|` for `w = 1` and finds where `w + u == w` starts, for `u > 0` and for
# `u < 0`, then defines the dynamic scaler used below.

# %%
def first_lost_ratio(dt: torch.dtype, w: float = 1.0, sign: float = 1.0) -> float:
    """Smallest power-of-two ratio |w|/|u| (2**1 .. 2**30) at which w + u rounds back to w in dtype dt; u = sign * |u|."""
    for e in range(1, 31):
        wt, ut = torch.tensor(w, dtype=dt), torch.tensor(sign * w * 2.0**-e, dtype=dt)
        if (wt + ut) == wt:
            return 2.0**e
    return math.inf


for dt in (torch.float16, torch.bfloat16, torch.float32):
    ratio = first_lost_ratio(dt)
    toward_zero = first_lost_ratio(dt, sign=-1.0)
    assert ratio == 2 / torch.finfo(dt).eps and toward_zero == 4 / torch.finfo(dt).eps  # the formulas 2^(t+1), 2^(t+2)
    print(f"{str(dt)[6:]:9s} w + u == w once |w|/|u| >= {ratio:,.0f} (u > 0), {toward_zero:,.0f} (u < 0)")
w16 = torch.tensor(1.0, dtype=torch.float16)
print("fp16: 1 + 1e-4 =", (w16 + torch.tensor(1e-4, dtype=torch.float16)).item(), "| fp32 master: 1 + 1e-4 =", 1.0 + 1e-4)


class DynamicLossScaler:
    """Dynamic loss scaling with one scale per run (seed), the rule of torch.amp.GradScaler.update.

    Each step: finite (n,) bool = all gradients of that run are finite. Not finite: skip the step,
    scale *= backoff, streak = 0. Finite: streak += 1; when streak reaches `interval`, scale *= growth, streak = 0.
    """

    def __init__(self, n: int, init_scale: float = 2.0**16, growth: float = 2.0, backoff: float = 0.5, interval: int = 2000):
        self.scale = torch.full((n,), init_scale)  # (n,)
        self.streak = torch.zeros(n, dtype=torch.long)  # (n,) clean steps in a row
        self.growth, self.backoff, self.interval = growth, backoff, interval

    def update(self, finite: torch.Tensor) -> None:
        streak = torch.where(finite, self.streak + 1, 0)
        grow = streak == self.interval
        self.scale = torch.where(~finite, self.scale * self.backoff, torch.where(grow, self.scale * self.growth, self.scale))
        self.streak = torch.where(grow, 0, streak)

# %% [markdown]
# The sweep agrees with `2/eps = 2^{t+1}` for all three formats (asserted): a bf16 weight of 1 ignores an
# update of 1/256 of itself or less, an fp16 weight of 1 one of 1/2048 or less (weights just below the next
# power of two tolerate twice smaller updates before losing them). Toward zero the threshold is `4/eps =
# 2^{t+2}` (asserted): `1 − 2⁻¹¹` is an fp16 number, `1 − 2⁻¹²` is a tie that rounds back to the even `1`.
#
# ### 8. FP32 accumulation of fp16 products (Mixed Precision Training §3.3)
#
# The paper's third technique is about sums, not storage: "we found that some networks require that FP16
# vector dot-product accumulates the partial products into an FP32 value, which is converted to FP16 before
# writing to memory. Without this accumulation in FP32, some FP16 models did not match the accuracy of the
# baseline models" (§3.3). Large reductions, "batch-normalization layers when accumulating statistics and
# softmax layers", are also done in FP32, while point-wise operations may use either. Why: a running sum `s`
# with `t` fraction bits absorbs a term `x` only if `|x|` is more than half the gap `2^{e−t}` above `s`, the same
# rule as the master-weight argument of §7; larger terms are rounded to a multiple of that gap. So once `s` is
# large against its terms, each addition is coarse or lost: for fp16 (`t = 10`) a sum of ones stops at
# `2^{t+1} = 2048`, and a long dot product of numbers below 1 drifts once its running sum reaches the hundreds
# (gap 0.5 or 1). An fp16 × fp16 product is exact in fp32 (11 + 11 significand bits fit in 24), so the fix
# costs nothing in the multiplies: keep the running sum in fp32 and round once, at the store.
#
# The course's kernel does exactly this. `_dot` returns `tl.dot(a, b)` for fp16 inputs (and bf16 on a GPU), and
# Triton's `dot` gives a float32 result when no accumulator dtype is passed (`out_dtype = tl.float32 if acc is
# None`, `triton/language/semantic.py`, Triton 3.9); the running `acc`, `l_i` (forward) and `dk`, `dv`, `dq`
# (backward) are `tl.zeros(…, dtype=tl.float32)`; `D` is summed in float32. The roundings to fp16/bf16 are of
# the *inputs* of a product (`p.to(v.dtype)` in the forward, `p` and `ds` in the backward, as on tensor cores)
# and of the final stores, never of a running sum. The cell sums 64
# dot products of length 4096 (fp16 entries in `[0, 1)`, like a row of `P̃` against a column of `V`) with an
# fp16 running sum (each step rounded to fp16) and with an fp32 one, against float64.

# %%
gen_acc = torch.Generator().manual_seed(3)
p_acc, v_acc = (torch.rand(64, 4096, generator=gen_acc).half() for _ in range(2))  # (64, 4096) fp16 entries
products = p_acc.float() * v_acc.float()  # (64, 4096) fp16 x fp16 products: exact in float32
exact_dot = (p_acc.double() * v_acc.double()).sum(dim=1)  # (64,) float64 reference
acc16, acc32, ones16 = torch.zeros(64, dtype=torch.float16), torch.zeros(64), torch.zeros((), dtype=torch.float16)
for j in range(products.shape[1]):
    acc16 = (acc16.float() + products[:, j]).half()  # fp16 running sum: rounded to fp16 after every add
    acc32 = acc32 + products[:, j]  # fp32 running sum
    ones16 = ones16 + 1  # 4096 ones summed in fp16
rel16, rel32 = ((acc - exact_dot).abs() / exact_dot for acc in (acc16.double(), acc32.double()))
print(f"4096 ones summed in fp16: {ones16.item():.0f}")
print(f"64 dot products, exact value {exact_dot.mean():.0f} on average: fp16 running sum {acc16.double().mean():.0f} "
      f"on average, relative error {rel16.min():.3f} to {rel16.max():.3f}; fp32 running sum: relative error "
      f"{error_bound(rel32.max().item())}")
assert ones16 == 2048 and (acc16.double() < exact_dot).all() and rel16.min() > 0.05 and rel32.max() < 1e-5

# %% [markdown]
# The fp16 sum of ones stops at `2048 = 2^{t+1}`. The fp16 running sums of the dot products all end low, by 6–9%:
# above 512 the sum moves in steps of 0.5, above 1024 in steps of 1, and a product (mean 0.25) below half a
# step is dropped. The fp32 running sums are right to float32 rounding. FlashAttention's `Õ` and `ℓ` are such
# long sums (over all `N` keys, tile after tile), which is why the kernel keeps them in float32.
#
# ### 9. ZeRO: 16 bytes per parameter and where they go
#
# Mixed-precision Adam (ZeRO v3 §3.1) holds, per parameter: an fp16 parameter (2 bytes) and fp16 gradient
# (2 bytes) for the forward and backward passes, and optimizer states of `K = 12` bytes: the fp32 master
# parameter, momentum and variance (4 + 4 + 4). Plain data parallelism replicates all `(2 + 2 + K)Ψ` on each
# of the `N_d` ranks. ZeRO-DP partitions them instead (§5): rank `i` keeps the `i`-th `1/N_d` slice, updates
# only its slice, and gathers what it needs when it needs it. Cumulatively (Figure 1, §5.1–5.3):
#
# $$\underbrace{(2 + 2 + K)\Psi}_{\text{baseline}},\qquad
# \underbrace{2\Psi + 2\Psi + \frac{K\Psi}{N_d}}_{P_{os}\ \text{(stage 1)}},\qquad
# \underbrace{2\Psi + \frac{(2 + K)\Psi}{N_d}}_{P_{os+g}\ \text{(stage 2)}},\qquad
# \underbrace{\frac{(2 + 2 + K)\Psi}{N_d}}_{P_{os+g+p}\ \text{(stage 3)}}. \tag{12}$$
#
# Communication (§7): data parallelism's all-reduce of the gradients moves `2Ψ` elements per rank per step
# (a reduce-scatter plus an all-gather, `Ψ` each); stages 1 and 2 replace it by a reduce-scatter of the
# gradients and an all-gather of the updated fp16 parameters, the same `2Ψ`; stage 3 gathers the parameters
# once for the forward and once more for the backward, `3Ψ` = 1.5×. The cell writes eq. (12); the check and
# reproduction sections compare it with bytes counted from real tensors and with all of the paper's Table 1.

# %%
ZERO_STAGES = ("baseline DP", "stage 1 (P_os)", "stage 2 (P_os+g)", "stage 3 (P_os+g+p)")


def zero_bytes_per_device(psi: float, n_d: int, stage: int, k: int = 12) -> float:
    """Model-state bytes per data-parallel rank, ZeRO v3 Figure 1 / eq. (12). psi: number of parameters."""
    params, grads, optim = 2 * psi, 2 * psi, k * psi  # fp16 params, fp16 grads, fp32 master + momentum + variance
    if stage >= 1:
        optim /= n_d
    if stage >= 2:
        grads /= n_d
    if stage >= 3:
        params /= n_d
    return params + grads + optim


for s, name in enumerate(ZERO_STAGES):
    print(f"{name:19s} {zero_bytes_per_device(1, 64, s):7.4f} bytes per parameter per GPU (N_d = 64)")

# %% [markdown]
# ## Walkthrough
#
# The course's own Triton kernel, [`shared/kernels/flash_attention.py`](../../shared/kernels/flash_attention.py),
# implements eqs. (4)–(9) for the GPU: causal, sliding-window and packed (`cu_seqlens`) masks, GQA, head_dim
# up to 256, fp16/bf16/fp32, forward and backward as one `torch.autograd.Function`. Each cell below prints a
# piece of its source (with the file's line numbers) and maps it to the equations. Triton in brief: a
# *program* is one GPU thread block; `tl.program_id(axis)` is its index in the launch grid; `tl.load`/`tl.store`
# move tiles between HBM and registers/SRAM (with `mask=` for the ragged edge); `tl.dot` is a tile matmul.
#
# ### 1. Where a call runs
#
# `shared.kernels.backend` decides: CUDA tensors with Triton installed take the compiled kernel; CPU tensors
# with `TRITON_INTERPRET=1` (set in Setup when there is no GPU) take the *same* kernel code under Triton's
# interpreter, which executes it with NumPy one program at a time; anything else (a laptop without Triton)
# falls back to `shared.attention.scaled_dot_product_attention` with the matching mask.

# %%
def show_source(fn, first: str, last: str, occurrence: int = 1) -> None:
    """Print fn's source from the first line containing `first` to the `occurrence`-th after it containing `last`."""
    fn = getattr(fn, "fn", fn)  # a triton.jit kernel keeps its Python function in .fn
    lines, start = inspect.getsourcelines(fn)
    i = next(n for n, line in enumerate(lines) if first in line)
    j = [n for n, line in enumerate(lines) if n >= i and last in line][occurrence - 1]
    for n in range(i, j + 1):
        print(f"{start + n:4d} {lines[n].rstrip()}")


show_source(kernels.backend, "if not HAS_TRITON", 'return "torch"', occurrence=2)

# %% [markdown]
# ### 2. The forward kernel: one program per block of query rows
#
# FlashAttention-2's parallelisation (§3.2): the grid is (query blocks, heads, sequences), and each program
# owns `BLOCK_M` query rows, like one iteration of the outer loop of `flash_attention_blocked`. GQA needs no
# copy of `K`/`V`: query head `h` reads kv head `h // n_rep` ("we implicitly manipulate the indices into the
# head", FA2 §3.1.2). With `cu_seqlens` (packed sequences, `VARLEN`), axis 2 is the segment, and the
# program's rows are offset to where the segment starts. The launch (first print) sizes the grid by the
# longest sequence; the block sizes come from `_blocks` (second print, the forward's branch): 16 × 16 under the
# interpreter and for float32, and for fp16/bf16 on a GPU fixed starting points by head_dim (128 × 64 up to
# head_dim 128), not autotuned and, as its docstring says, not yet timed. The third print is the start of the kernel.

# %%
show_source(fa_kernel._forward, "cfg = _blocks", "grid = (")
show_source(fa_kernel._blocks, "if INTERPRET:", '"BLOCK_M": 64, "BLOCK_N": 32')
print()
show_source(fa_kernel._attn_fwd_kernel, "start_m = tl.program_id(0)", "return")

# %% [markdown]
# ### 3. The online-softmax loop
#
# Lines below are eqs. (4)–(5) in base 2. The scores are multiplied by `scale_log2 = τ · log₂ e`, so
# `exp2(s − m) = exp(τ q·k − m')`: `exp2` is the GPU's native instruction. `m_i`, `l_i`, `acc` are `m`, `ℓ`,
# `Õ` in float32. `alpha = exp2(m_i − m_new)` is eq. (5)'s factor, *multiplied* into `l_i` and `acc` (not
# divided, see the erratum above); `m_sub` guards a row that has seen no visible key yet (`m = −∞`), exactly
# as `m_ref` does in `flash_attention_blocked`. `p.to(v.dtype)` rounds the probabilities to fp16/bf16 for the
# tensor cores before `P̃V` (as FlashAttention does, says the module's docstring); the accumulator stays
# float32 (Mixed Precision Training §3.3, Derivation 8).

# %%
show_source(fa_kernel._attn_fwd_kernel, "m_i = tl.full", "acc = tl.zeros")
show_source(fa_kernel._attn_fwd_kernel, "# The block loop", "m_i = m_new")

# %% [markdown]
# ### 4. Masks: tiles skipped, and the ragged edge
#
# Before the loop, `lo`/`hi` restrict it to the key blocks any row of this block may see (causal: up to the
# last row's position; window: from the first row's window start), so fully masked tiles are never visited:
# the `continue` of `flash_attention_blocked`. Inside a visited tile, `_visible` builds the bool mask from
# positions: query row `i` sits at `seqlen_k − seqlen_q + i` (bottom-right alignment, right for a KV cache),
# and out-of-range rows and columns of the last, ragged block are invisible. The kernel applies `_visible` to
# every tile it visits, also to the tiles that are fully visible; FA2 §3.1.1 notes that with causal masking
# "for each row, we only need apply causal mask to 1 block (assuming square block)". Masking the others too
# costs elementwise work on each tile (a `where` per score), not correctness; whether it costs time on a GPU is
# for `make bench` to say. After the source, the cell recomputes `lo`/`hi` in plain Python with the same
# formulas for the tiny call of §10 (causal, 21 tokens, 16 × 16 blocks) and for check 3's window of 5 over 37
# tokens (where `lo` skips key block 0 for rows 32–36), lists the key blocks each query block visits, and asserts that they are exactly the tiles the
# float64 `flash_attention_blocked` does not skip. It then prints `_visible` (same formula, in torch) for the
# ragged block's diagonal tile: 5 real rows, causal inside, and 0 for every row or key past token 20.

# %%
show_source(fa_kernel._attn_fwd_kernel, "offset = seqlen_k - seqlen_q", "start on a block boundary")
show_source(fa_kernel._visible, "pos = rows", "return ok")


def kernel_tiles(seqlen_q, seqlen_k, block_m, block_n, causal=True, window=None):
    """Key-block starts range(lo, hi, BLOCK_N) per query block, with the formulas printed above, in plain Python."""
    offset = seqlen_k - seqlen_q
    visits = {}
    for start_m in range(0, seqlen_q, block_m):  # one program per query block (grid axis 0)
        lo, hi = 0, seqlen_k
        if causal:
            hi = min(seqlen_k, start_m + block_m + offset)
        if window is not None:
            lo = max(start_m + offset - window + 1, 0) // block_n * block_n
        visits[start_m] = list(range(lo, hi, block_n))
    return visits


def visible_mask(rows, cols, seqlen_q, seqlen_k, window=None):
    """The printed _visible in torch, causal: bool (len(rows), len(cols))."""
    pos = rows[:, None] + (seqlen_k - seqlen_q)
    ok = (rows[:, None] < seqlen_q) & (cols[None, :] < seqlen_k) & (cols[None, :] <= pos)
    return ok & (cols[None, :] > pos - window) if window is not None else ok


def reference_tiles(n, mask, block_m, block_n):
    """Key blocks the float64 flash_attention_blocked visits (not skipped by its `continue`), per query block."""
    x = torch.zeros(1, 1, n, 4, dtype=torch.float64)
    visits = {}
    for i0 in range(0, n, block_m):
        trace = []  # one query block at a time, so the history holds only its key blocks
        flash_attention_blocked(x[:, :, i0 : i0 + block_m], x, x, mask[i0 : i0 + block_m], block_m, block_n, history=trace)
        visits[i0] = [j0 for j0, _, _ in trace]
    return visits


cfg = fa_kernel._blocks(16, torch.float32, backward=False)  # the tiny call of §10: float32, head_dim 16
bm, bn = cfg["BLOCK_M"], cfg["BLOCK_N"]
for label, n, win, msk in (("causal, N = 21 (the call of §10)", 21, None, causal_mask(21)),
                           ("window 5, N = 37 (check 3)", 37, 5, sliding_window_mask(37, window=5))):
    kt = kernel_tiles(n, n, bm, bn, window=win)
    assert kt == reference_tiles(n, msk, bm, bn), label  # the kernel's lo/hi = the reference's non-skipped tiles
    print(f"{label}, {bm} x {bn} blocks: key blocks visited, by query block")
    for start_m, starts in kt.items():
        print(f"  rows {start_m:2d}-{min(start_m + bm, n) - 1:2d}: keys " + ", ".join(f"{j}-{min(j + bn, n) - 1}" for j in starts))
rows, cols = torch.arange(16, 16 + bm), torch.arange(16, 16 + bn)  # the ragged query block x key block 1, N = 21
tile = visible_mask(rows, cols, 21, 21)
assert torch.equal(tile[:5, :5], causal_mask(21)[16:, 16:]) and not tile[5:].any() and not tile[:, 5:].any()
print(f"_visible of the ragged tile (query rows 16-31 x keys 16-31, N = 21; {tile.sum().item()} of {tile.numel()} visible):")
print("       keys " + "".join(str(c % 10) for c in cols.tolist()))
for r, line in zip(rows.tolist(), tile.int().tolist(), strict=True):
    print(f"  row {r:2d}   " + "".join(str(b) for b in line) + ("" if r < 21 else "  (past the sequence)"))

# %% [markdown]
# ### 5. Normalise once, save the log-sum-exp
#
# Eq. (6): divide by `ℓ` once (a fully masked row, `ℓ = 0`, gives 0 like the reference) and store
# `L = (m + log₂ ℓ) · ln 2`, which converts the base-2 statistics back to the natural log-sum-exp of the scaled
# scores. `L` is float32, one number per query row: the `O(N)` extra memory of Theorem 1.

# %%
show_source(fa_kernel._attn_fwd_kernel, "# Normalise.", "tl.store(LSE")

# %% [markdown]
# ### 6. Backward, step 1: `D = rowsum(dO ∘ O)`
#
# Eq. (9), in its own small kernel, one float32 per query row, before any tile is touched (FA2 Algorithm 2
# line 4).

# %%
show_source(fa_kernel._attn_bwd_preprocess_kernel, "rows = tl.program_id(0)", "tl.store(DELTA")

# %% [markdown]
# ### 7. Backward, step 2: `dK` and `dV`, one program per key block
#
# FA2 Algorithm 2's outer loop (lines 5–18): a program owns one block of keys, keeps `dK`, `dV` in float32
# registers, and loops over the query blocks that can see it (and, for GQA, over the `n_rep` query heads
# sharing this kv head: the sum of FA2 §3.1.2). Each tile recomputes `P = exp2(S − L)` from the saved `L`
# (line 11), then `dV += Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ∘ (dP − D)`, `dK += dSᵀ Q` (lines 12–14 and 16, eqs.
# 7–8). Line 15, the `dQ` update, is not here: see the next step. The scale `τ` is applied once, when `dK` is
# stored.

# %%
show_source(fa_kernel._attn_bwd_dkdv_kernel, "for r in range(0, n_rep)", "dk += _dot")

# %% [markdown]
# ### 8. Backward, step 3: `dQ` in a separate kernel
#
# Here the course's kernel departs from FA2 on purpose. The paper computes `dQ` inside the same loop and
# combines the contributions of different key blocks with atomic adds (§3.2: "We use atomic adds to
# communicate between different thread blocks to update dQ"); floating-point atomics make the result depend
# on scheduling. The course runs a second kernel with the forward's grid (one program per query block) that
# recomputes `S`, `P` and `dP` and accumulates `dQ += dS K` in registers: deterministic, at the price of
# recomputing two matmuls, so 7 tile matmuls in the backward instead of FA2's 5.

# %%
show_source(fa_kernel._attn_bwd_dq_kernel, "for start_n in range(lo, hi, BLOCK_N)", "dq += _dot")

# %% [markdown]
# ### 9. The autograd glue: what is saved
#
# `forward` saves `q, k, v, out, lse` (and `cu_seqlens`): inputs and output plus `N` floats per head, never an
# `N×N` tensor. `backward` hands them to the three kernels above. `once_differentiable`: the backward kernels
# are not themselves differentiable (no double backward).

# %%
show_source(fa_kernel._FlashAttention, "def forward", "return dq, dk, dv, None")

# %% [markdown]
# ### 10. Running it on a tiny shape
#
# One causal GQA call (4 query heads sharing 2 kv heads, 21 tokens: one full 16-row block and a ragged one of
# 5), forward and backward. Under the interpreter this takes a fraction of a second; on a GPU it is the
# compiled kernel. The cell prints where it ran, the output's first row next to the reference
# (`shared.attention.scaled_dot_product_attention` in float64 with `causal_mask`), and the saved `L` of row 0.
# The check section asserts all of it on three cases.

# %%
def kernel_inputs(batch, heads, kv_heads, n_q, n_k, d, seed):
    """Random float32 q (batch, heads, n_q, d), k, v (batch, kv_heads, n_k, d) and dout, on `device`."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n_q, d, generator=gen)
    k, v = (torch.randn(batch, kv_heads, n_k, d, generator=gen) for _ in range(2))
    dout = torch.randn(batch, heads, n_q, d, generator=gen)
    return [t.to(device) for t in (q, k, v, dout)]


qk, kk, vk, dok = kernel_inputs(1, 4, 2, 21, 21, 16, seed=1)
qk.requires_grad_()
out_k = fa_kernel.flash_attention(qk, kk, vk, causal=True)  # (1, 4, 21, 16)
out_k.backward(dok)
ref = scaled_dot_product_attention(qk.detach().cpu().double(), kk.cpu().double(), vk.cpu().double(), causal_mask(21))
print("ran as:", kernels.backend(qk), "| out", tuple(out_k.shape), "| dq", tuple(qk.grad.shape))
print("row 0, kernel:   ", [round(t, 4) for t in out_k[0, 0, 0, :6].tolist()])
print("row 0, reference:", [round(t, 4) for t in ref[0, 0, 0, :6].tolist()])
if kernels.backend(qk) != "torch":  # _forward launches the kernel itself: not without Triton
    with torch.no_grad():
        _, lse_k = fa_kernel._forward(qk, kk, vk, True, None, None, 21, 1 / 4)  # (1, 4, 21) float32 L
    print(f"L of row 0 (it sees only key 0): {lse_k[0, 0, 0].item():.4f} = q0.k0 / 4 = {(qk[0, 0, 0] @ kk[0, 0, 0]).item() / 4:.4f}")
    s_head0 = (qk[0, 0].detach().cpu().double() @ kk[0, 0].cpu().double().T / 4).masked_fill(~causal_mask(21), -math.inf)
    lse_ref = torch.logsumexp(s_head0, dim=-1)  # (21,) natural log-sum-exp of the visible scaled scores
    err = assert_close(lse_k[0, 0].cpu().double(), lse_ref, atol=1e-5, rtol=1e-5, name="saved L")
    print("saved L, head 0, rows 0-5:", [round(t, 3) for t in lse_k[0, 0, :6].tolist()])
    print("logsumexp of the scores:  ", [round(t, 3) for t in lse_ref[:6].tolist()], f"| all 21 rows {error_bound(err, 1e-5)}")

# %% [markdown]
# Row 0 of a causal mask sees only key 0, so its output is `v₀` and its log-sum-exp is the single scaled
# score `q₀·k₀/√16`, which is what the kernel saved. The saved row `L` is the kernel's book-keeping made
# visible: `L_i = m_i + log ℓ_i` (converted from base 2) for each query row, the only statistic the backward
# needs; it equals `logsumexp` of that row's visible scaled scores, computed here directly in float64.
#
# ## Check against a reference
#
# Every check compares two independent computations with an explicit tolerance and prints the measured error
# as a bound (`error_bound`: the same on every CPU). References: exact attention from its definition in
# float64; `torch.nn.functional.scaled_dot_product_attention` (float32, bool `attn_mask`); autograd through
# `shared.attention.scaled_dot_product_attention` in float64; `torch.logsumexp`; `torch.amp.GradScaler`;
# bytes counted from real parameter, gradient and Adam-state tensors.
#
# **1. Blocked attention (eqs. 4–6) against exact attention and SDPA.** Batch 2, three heads, lengths that are
# not multiples of the blocks, rectangular blocks, a causal mask, a KV-cache shape (5 new queries after 32
# cached keys, bottom-right causal), a packed batch of three sequences (block-diagonal mask), single-row and
# single-column blocks, and the log-sum-exp against `torch.logsumexp`.

# %%
def exact_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d) + mask) v in float64, from the definition (softmax written out)."""
    q, k, v = q.double(), k.double(), v.double()
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, -math.inf)
    e = torch.exp(s - s.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True) @ v, torch.logsumexp(s, dim=-1)


cu_pack = torch.tensor([0, 7, 20, 37])
cases = {  # name: (batch, heads, n_q, n_k, d, mask, block_m, block_n)
    "dense, ragged blocks": (2, 3, 37, 37, 16, None, 16, 16),
    "dense, rectangular blocks": (2, 3, 37, 29, 8, None, 8, 32),
    "causal": (1, 2, 50, 50, 16, causal_mask(50), 16, 8),
    "KV cache (5 after 32)": (2, 2, 5, 37, 16, causal_mask(5, 37), 4, 16),
    "packed 7+13+17, causal": (1, 2, 37, 37, 16, block_diagonal_mask(cu_pack) & causal_mask(37), 16, 16),
    "1 x 1 blocks": (1, 1, 9, 9, 4, None, 1, 1),
}
print(f"{'case':27s} {'float64 vs exact':>16s} {'float32 vs SDPA':>15s} {'lse vs logsumexp':>16s}")
for name, (bt, hd, nq, nk, dd, msk, bm, bn) in cases.items():
    qc = torch.randn(bt, hd, nq, dd, generator=g)
    kc, vc = (torch.randn(bt, hd, nk, dd, generator=g) for _ in range(2))
    ref_o, ref_l = exact_attention(qc, kc, vc, msk)
    o64, l64 = flash_attention_blocked(qc.double(), kc.double(), vc.double(), msk, bm, bn)
    o32, _ = flash_attention_blocked(qc, kc, vc, msk, bm, bn)
    sdpa = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=msk)
    e1 = assert_close(o64, ref_o, atol=1e-12, rtol=0, name=name)
    e2 = assert_close(o32, sdpa, atol=1e-5, rtol=1e-5, name=name)
    e3 = assert_close(l64, ref_l, atol=1e-12, rtol=0, name=name)
    print(f"{name:27s} {error_bound(e1, 1e-12):>16s} {error_bound(e2):>15s} {error_bound(e3, 1e-12):>16s}")

# %% [markdown]
# **2. The blocked backward (eqs. 7–9) against autograd.** The same masks, float64, `dq, dk, dv` from
# `flash_attention_backward_blocked` (which uses only the saved `out` and `lse`) against autograd through
# the materialised softmax.

# %%
for name in ("dense, ragged blocks", "causal", "KV cache (5 after 32)", "packed 7+13+17, causal"):
    bt, hd, nq, nk, dd, msk, bm, bn = cases[name]
    qc = torch.randn(bt, hd, nq, dd, generator=g, dtype=torch.float64).requires_grad_()
    kc, vc = (torch.randn(bt, hd, nk, dd, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    doc = torch.randn(bt, hd, nq, dd, generator=g, dtype=torch.float64)
    ref_grads = torch.autograd.grad(exact_attention(qc, kc, vc, msk)[0], (qc, kc, vc), doc)
    o64, l64 = flash_attention_blocked(qc.detach(), kc.detach(), vc.detach(), msk, bm, bn)
    ours = flash_attention_backward_blocked(qc.detach(), kc.detach(), vc.detach(), o64, l64, doc, msk, bm, bn)
    errs = [assert_close(a, r, atol=1e-10, rtol=0, name=f"{name} {w}") for a, r, w in zip(ours, ref_grads, "qkv", strict=True)]
    print(f"{name:27s} dq, dk, dv vs autograd: {', '.join(error_bound(e, 1e-12) for e in errs)}")

# %% [markdown]
# **3. The course's Triton kernel against autograd, forward and backward.** Five cases that exercise the
# kernel's bookkeeping: causal GQA with a ragged block (the Walkthrough's call), a KV-cache shape (queries at
# the end, `q_len ≠ kv_len`, bottom-right causal), a packed batch of three sequences given by `cu_seqlens`
# with a causal mask inside each, a sliding window of 5 keys over 37 tokens (the window's `lo` of Walkthrough
# §4 skips key blocks here), and the first case again in fp16 (the tensor-core path of `_dot` and
# `p.to(v.dtype)`). The reference is autograd through `shared.attention.scaled_dot_product_attention` in
# float64 with `repeat_kv` for GQA and the mask built by `shared.attention` (`sliding_window_mask` for the
# window); the kernel's saved `L` is compared with the blocked implementation's `lse`. Tolerances as in
# `tests/test_kernels_attention.py`: float32 kernel against float64 `1e-5`, printed as bounds at that level
# (measured, they are about `1e-6`; their last digits move with the BLAS that the interpreter's NumPy matmuls
# use, so the exact values are not printed). fp16: the kernel's largest error against float64 must be at most
# twice that of the same reference computed in fp16 on the same fp16 inputs, plus `2e-3`
# (FlashAttention's own test criterion, with a floor); the measured errors and tolerances are printed as bounds.

# %%
kernel_cases = {  # name: (batch, heads, kv_heads, n_q, n_k, d, kernel options, reference mask)
    "causal GQA 4/2 heads, N = 21": (1, 4, 2, 21, 21, 16, {"causal": True}, causal_mask(21)),
    "KV cache, 5 queries after 32 keys": (2, 2, 2, 5, 37, 16, {"causal": True}, causal_mask(5, 37)),
    "packed cu_seqlens [0, 7, 20, 33]": (1, 2, 1, 33, 33, 16,
                                         {"causal": True, "cu_seqlens": torch.tensor([0, 7, 20, 33], dtype=torch.int32)},
                                         block_diagonal_mask(torch.tensor([0, 7, 20, 33])) & causal_mask(33)),
    "sliding window 5, GQA 4/2, N = 37": (1, 4, 2, 37, 37, 16, {"causal": True, "window": 5},
                                          sliding_window_mask(37, window=5)),
}
if not kernels.HAS_TRITON:
    print("Triton is not installed here: flash_attention() runs the PyTorch reference, so the kernel checks are skipped.")
for name, (bt, hd, kvh, nq, nk, dd, opts, msk) in kernel_cases.items():
    if not kernels.HAS_TRITON:
        break
    qk, kk, vk, dok = kernel_inputs(bt, hd, kvh, nq, nk, dd, seed=2)
    qk, kk, vk = (t.requires_grad_() for t in (qk, kk, vk))
    opts = {key: (val.to(device) if torch.is_tensor(val) else val) for key, val in opts.items()}
    out_k = fa_kernel.flash_attention(qk, kk, vk, **opts)
    grads_k = torch.autograd.grad(out_k, (qk, kk, vk), dok)
    q64, k64, v64 = (t.detach().cpu().double().requires_grad_() for t in (qk, kk, vk))
    ref = scaled_dot_product_attention(q64, repeat_kv(k64, hd // kvh), repeat_kv(v64, hd // kvh), msk)
    grads_ref = torch.autograd.grad(ref, (q64, k64, v64), dok.cpu().double())  # repeat_kv's backward sums the heads
    errs = [assert_close(out_k.detach().cpu().double(), ref, atol=1e-5, rtol=1e-5, name=f"{name} out")]
    errs += [assert_close(a.cpu().double(), r, atol=1e-5, rtol=1e-5, name=f"{name} d{w}") for a, r, w in zip(grads_k, grads_ref, "qkv", strict=True)]
    cu = opts.get("cu_seqlens")
    max_len = nq if cu is None else int((cu[1:] - cu[:-1]).max())
    with torch.no_grad():
        _, lse_k = fa_kernel._forward(qk, kk, vk, True, opts.get("window"), cu, max_len, 1 / math.sqrt(dd))
    _, lse_b = flash_attention_blocked(q64.detach(), repeat_kv(k64.detach(), hd // kvh), repeat_kv(v64.detach(), hd // kvh), msk)
    errs.append(assert_close(lse_k.cpu().double(), lse_b, atol=1e-5, rtol=1e-5, name=f"{name} lse"))
    print(f"{name:34s} [{kernels.backend(qk)}] out, dq, dk, dv, L: {', '.join(error_bound(e, 1e-5) for e in errs)}")

if kernels.HAS_TRITON:  # fp16: the same causal GQA case, against float64 and against the reference run in fp16
    q16, k16, v16, do16 = (t.half() for t in kernel_inputs(1, 4, 2, 21, 21, 16, seed=2))
    q16, k16, v16 = (t.requires_grad_() for t in (q16, k16, v16))
    out16 = fa_kernel.flash_attention(q16, k16, v16, causal=True)
    ours16 = (out16, *torch.autograd.grad(out16, (q16, k16, v16), do16))
    ref_lp = scaled_dot_product_attention(q16.cpu(), repeat_kv(k16.cpu(), 2), repeat_kv(v16.cpu(), 2), causal_mask(21))
    refs_lp = (ref_lp, *torch.autograd.grad(ref_lp, (q16, k16, v16), do16.cpu()))  # same fp16 inputs, fp16 math
    q64, k64, v64 = (t.detach().cpu().double().requires_grad_() for t in (q16, k16, v16))
    ref64 = scaled_dot_product_attention(q64, repeat_kv(k64, 2), repeat_kv(v64, 2), causal_mask(21))
    refs64 = (ref64, *torch.autograd.grad(ref64, (q64, k64, v64), do16.cpu().double()))
    headroom = []
    for w, ours_t, lp, exact in zip(("out", "dq", "dk", "dv"), ours16, refs_lp, refs64, strict=True):
        assert ours_t.dtype == torch.float16
        err, err_lp = ((t.detach().cpu().double() - exact).abs().max().item() for t in (ours_t, lp))
        assert err <= 2 * err_lp + 2e-3, (w, err, err_lp)
        assert err < 2e-3 < 4e-3 < 2 * err_lp + 2e-3, (w, err, err_lp)  # the bounds printed below
        headroom.append((2 * err_lp + 2e-3) / err)
    print(f"{'causal GQA 4/2 heads, N = 21, fp16':34s} [{kernels.backend(q16)}] out, dq, dk, dv within 2x the fp16 "
          "reference's error + 2e-3")
    print(f"{'':34s} errors < 2e-03 each, tolerances > 4e-03 each: at least {math.floor(min(headroom))}x headroom")

# %% [markdown]
# **4. Our dynamic loss scaler against `torch.amp.GradScaler`.** One fp32 master weight vector, an fp16
# forward (`w.half()`), SGD. Nine steps; steps 2 and 6 get an input large enough that the scaled fp16
# gradients overflow. `GradScaler("cpu", init_scale=2¹⁶, growth_interval=3)` drives one copy, our
# `DynamicLossScaler` with the same settings and a hand-written skip-or-update drives the other; the scales,
# the skipped steps and the final weights must agree.

# %%
def scaled_fp16_grad(w: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """Gradient of scale * loss w.r.t. the fp32 master w, with the forward in fp16. loss = sum((w x)^2) / 2."""
    w = w.detach().requires_grad_()
    y = w.half() @ x  # (4,) fp16 forward
    (torch.as_tensor(scale) * y.float().pow(2).sum() / 2).backward()
    return w.grad  # fp32, may hold inf from the fp16 backward


xs = [torch.full((4, 4), 1e3 if t in (2, 6) else 0.01, dtype=torch.float16) for t in range(9)]  # (4, 4) inputs
w_torch = torch.nn.Parameter(torch.ones(4))
opt = torch.optim.SGD([w_torch], lr=0.1)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=3)
w_ours, ours = torch.ones(4), DynamicLossScaler(1, init_scale=2.0**16, interval=3)
log = []
for x_t in xs:
    opt.zero_grad()
    scaler.scale((w_torch.half() @ x_t).float().pow(2).sum() / 2).backward()
    scaler.step(opt)
    scaler.update()
    grad = scaled_fp16_grad(w_ours, x_t, ours.scale.item())
    finite = torch.isfinite(grad).all().reshape(1)
    if finite.item():
        w_ours = w_ours - 0.1 * grad / ours.scale  # unscale in fp32, then the SGD step
    ours.update(finite)
    log.append((scaler.get_scale(), ours.scale.item(), bool(finite)))
for t, (s_torch, s_ours, ok) in enumerate(log):
    assert s_torch == s_ours
    print(f"step {t}: GradScaler scale {s_torch:>8,.0f} | ours {s_ours:>8,.0f} | {'stepped' if ok else 'skipped (inf)'}")
err = assert_close(w_ours, w_torch.detach(), atol=1e-7, rtol=1e-6, name="weights")
print(f"final weights {[round(t, 5) for t in w_ours.tolist()]}, vs GradScaler + SGD: {error_bound(err)}")

# %% [markdown]
# On step 2 the fp16 backward overflows (the loss itself is float32, as under autocast: had it been fp16,
# the starting scale `2¹⁶ = 65536`, above fp16's largest value 65,504, would overflow on the first step). Both
# scalers skip the step and halve the scale; after three clean steps both double it; the weights agree.
#
# **5. ZeRO's bytes, counted from real tensors.** A tiny MLP (`Ψ` = 16,576 parameters) trained one step in
# mixed precision: fp16 parameters and gradients from an fp16 forward/backward, fp32 master copies, and
# `torch.optim.Adam`'s `exp_avg`/`exp_avg_sq` states after `step()`, and for comparison the same model
# trained in plain fp32. We sum `numel · element_size` over the actual tensors, flatten each kind into one buffer, split it into `N_d = 64` shards as ZeRO does (`torch.chunk`),
# and count what rank 0 holds at each stage. The counts must equal eq. (12).

# %%
mlp16 = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64)).half()
mlp16(torch.randn(8, 64, generator=g).half()).float().pow(2).mean().backward()  # fp16 forward and backward
master = [p.detach().float().clone().requires_grad_() for p in mlp16.parameters()]  # fp32 master weights
for m_, p_ in zip(master, mlp16.parameters(), strict=True):
    m_.grad = p_.grad.float()
adam = torch.optim.Adam(master, lr=1e-3)
adam.step()
model_states = {
    "fp16 parameters": list(mlp16.parameters()),
    "fp16 gradients": [p.grad for p in mlp16.parameters()],
    "fp32 master parameters": master,
    "fp32 Adam momentum": [adam.state[m_]["exp_avg"] for m_ in master],
    "fp32 Adam variance": [adam.state[m_]["exp_avg_sq"] for m_ in master],
}
psi = sum(p.numel() for p in mlp16.parameters())
per_param = {kind: sum(t.numel() * t.element_size() for t in ts) / psi for kind, ts in model_states.items()}
for kind, b in per_param.items():
    print(f"{kind:23s} {b:.0f} bytes per parameter")
print(f"total {sum(per_param.values()):.0f} bytes per parameter (Psi = {psi:,}); Adam's `step` counters: {len(master)} scalars")
mlp32 = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64))  # plain fp32 training
mlp32(torch.randn(8, 64, generator=g)).pow(2).mean().backward()
adam32 = torch.optim.Adam(mlp32.parameters(), lr=1e-3)
adam32.step()
fp32_states = [t for p in mlp32.parameters() for t in (p, p.grad, adam32.state[p]["exp_avg"], adam32.state[p]["exp_avg_sq"])]
bytes_fp32 = sum(t.numel() * t.element_size() for t in fp32_states) / psi
print(f"the same model in plain fp32 with Adam (weights, gradients, momentum, variance): {bytes_fp32:.0f} bytes per parameter")

N_D = 64


def rank0_bytes(tensors: list[torch.Tensor], partitioned: bool) -> int:
    """Bytes rank 0 holds of one kind of state: all of it, or its 1/N_D shard of the flattened buffer."""
    flat = torch.cat([t.detach().flatten() for t in tensors])
    part = torch.chunk(flat, N_D)[0] if partitioned else flat
    return part.numel() * part.element_size()


optim_kinds = ("fp32 master parameters", "fp32 Adam momentum", "fp32 Adam variance")
counted_per_param = {}  # stage -> bytes per parameter on rank 0, from the tensors
for stage, name in enumerate(ZERO_STAGES):
    counted = (
        rank0_bytes(model_states["fp16 parameters"], stage >= 3)
        + rank0_bytes(model_states["fp16 gradients"], stage >= 2)
        + sum(rank0_bytes(model_states[kind], stage >= 1) for kind in optim_kinds)
    )
    assert counted == zero_bytes_per_device(psi, N_D, stage)
    counted_per_param[stage] = counted / psi
    print(f"{name:19s} rank 0 holds {counted:>7,d} bytes = {counted / psi:7.4f} per parameter = eq. (12)")

# %% [markdown]
# **Version notes.**
#
# - *FA2 Algorithm 1, line 10, as printed* divides by `e^{m^{(j−1)} − m^{(j)}}` (a `^{−1}` too many):
#   [flash-attention#991](https://github.com/Dao-AILab/flash-attention/issues/991), open since June 2024, says
#   so, and the same issue notes the same slip in the two-block example of §3.1.1. The next cell runs the line
#   as printed: it is wrong whenever a later tile raises the row max (almost always), and right only when the
#   max never changes. The course's kernel multiplies (`acc = acc * alpha[:, None] + …`, Walkthrough §3).
# - *FA1 Appendix C, proof of Theorem 1* has `diag(ℓ^{(j)})` where `diag(ℓ^{(j)})^{−1}` is meant; the first
#   author confirmed it in [flash-attention#273](https://github.com/Dao-AILab/flash-attention/issues/273). The
#   theorem and Algorithm 1 are unaffected (our `flash_attention_v1_counted` follows Algorithm 1 line 12 and
#   matches exact attention above).
# - *The course's kernel against FA2's backward*: a separate `dQ` kernel instead of atomic adds
#   (Walkthrough §8), so 7 instead of 5 tile matmuls, but bitwise reproducible results. Both compute the same
#   gradients (check 3).
# - *Causal alignment*: `F.scaled_dot_product_attention(..., is_causal=True)` aligns the triangle to the top
#   left (`torch.nn.attention.bias.causal_upper_left`, "equivalent to the `is_causal=True` argument" in its
#   docstring); the course's kernel and `shared.attention.causal_mask` align it to the bottom right, which is
#   what a KV cache needs. They differ exactly when `q_len ≠ kv_len`; the KV-cache checks above pass a
#   bottom-right bool mask to SDPA instead of `is_causal`.

# %%
qv, kv_, vv = (torch.randn(1, 2, 40, 16, generator=g, dtype=torch.float64) for _ in range(3))
ref_o, _ = exact_attention(qv, kv_, vv)
printed, _ = flash_attention_blocked(qv, kv_, vv, line10_as_printed=True)
fixed, _ = flash_attention_blocked(qv, kv_, vv)
print(f"line 10 as printed: max error vs exact {(printed - ref_o).abs().max().item():.3f}; "
      f"with the factor multiplied: {error_bound((fixed - ref_o).abs().max().item(), 1e-12)}")
assert (printed - ref_o).abs().max() > 1e-2 and (fixed - ref_o).abs().max() < 1e-12
x_sorted = torch.zeros(1, 1, 40, 16, dtype=torch.float64)  # all scores 0: the max never changes ...
same, _ = flash_attention_blocked(x_sorted, x_sorted, vv[:, :1])
print(f"... and when the row max never changes the printed line is harmless: error {error_bound((same - vv[:, :1].mean(dim=2, keepdim=True)).abs().max().item(), 1e-12)}")

# %% [markdown]
# ## Reproduction
#
# ### 1. Theorem 2 at scale, and Figure 2 (middle): fewer HBM accesses as blocks grow
#
# **Claim** (FA1 §3.2, Fig. 2 middle): FlashAttention needs `Θ(N²d²/M)` HBM accesses against
# `Θ(Nd + N²)`; "As block size increases, the number of HBM accesses decreases (as we make fewer passes over
# the input)". The paper measures the GPT-2 medium forward (seq. 1024, head dim 64) for block sizes 64–512
# and finds the runtime falls with them until "beyond 256" other factors dominate. We have no GPU, so we
# reproduce the *accesses* and not the runtime: eqs. (10)–(11) (checked against the instrumented algorithms
# above) for long sequences and three SRAM sizes, and the instrumented Algorithm 1 on one head at `N = 1024,
# d = 64` for the paper's block sizes.

# %%
d_tab = 64
srams = {"M = 16K": 16_384, "M = 64K": 65_536, "M = 96K (A100 SM, fp16)": 98_304}
ns = [1024, 2048, 4096, 8192, 16384, 32768]
print(f"{'N':>6} {'standard':>15} " + " ".join(f"{name:>24}" for name in srams))
for n in ns:
    row = " ".join(f"{hbm_flash(n, d_tab, m_):>15,d} ({hbm_standard(n, d_tab) / hbm_flash(n, d_tab, m_):4.1f}x)" for m_ in srams.values())
    print(f"{n:6d} {hbm_standard(n, d_tab):>15,d} {row}")

qh, kh, vh = (torch.randn(1024, 64, generator=g, dtype=torch.float64) for _ in range(3))
block_sizes = [64, 128, 256, 512]
by_block = {}
for bc in block_sizes:
    _, counter, _, _ = flash_attention_v1_counted(qh, kh, vh, sram=98_304, block_c=bc)
    by_block[bc] = counter.reads + counter.writes
print("\nN = 1024, d = 64, forward, counted:", ", ".join(f"B_c = {bc}: {c / 1e6:.2f}M elements" for bc, c in by_block.items()),
      f"| standard: {hbm_standard(1024, 64) / 1e6:.2f}M")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
axes[0].loglog(ns, [hbm_standard(n, d_tab) for n in ns], "k-o", label="standard, eq. (10)")
for name, m_ in srams.items():
    axes[0].loglog(ns, [hbm_flash(n, d_tab, m_) for n in ns], "-o", label=f"FlashAttention, {name}")
axes[0].set(xlabel="sequence length N", ylabel="HBM accesses (elements), one head", title="Theorem 2, d = 64")
axes[0].legend(fontsize=8)
axes[1].plot(range(len(block_sizes)), [by_block[b] / 1e6 for b in block_sizes], "o-", label="FlashAttention (counted)")
axes[1].axhline(hbm_standard(1024, 64) / 1e6, color="k", ls="--", label="standard")
axes[1].set_xticks(range(len(block_sizes)), block_sizes)
axes[1].set(xlabel="block size B_c", ylim=(0, 5), ylabel="HBM accesses (M elements), one head",
            title="Fig. 2 (middle), N = 1024, d = 64, forward")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# Standard attention's accesses grow 4× per doubling of `N` (the `N²` term); FlashAttention's grow 4× too
# (`N²d²/M`), so the ratio levels off near `M/(3d²)`: 1.3× with `M = 16K` elements, 5.2× with 64K, 7.7× with
# 96K at `N = 32K`. It does not grow without bound because both counts are quadratic in `N`; what disappears is
# the `N²`-sized *memory* (Theorem 1: `O(N)` extra) and most of the traffic. Halving the passes over `Q` and `O` by doubling `B_c`
# nearly halves the forward accesses (3.34M elements at `B_c = 64`, 0.53M at 512), the trend of Figure 2
# (middle). The paper's "up to 9× fewer" is its forward + backward measurement (40.3 vs 4.4 GB in Fig. 2,
# bytes moved on an A100); our count is of elements, forward only, in the idealised two-level model of
# Theorem 2, and gives 6.1× at `M = 96K`. The two are not the same quantity, so we do not expect them to agree.
#
# ### 2. Loss scaling and fp32 master weights on a toy, 8 seeds
#
# **Claims** (Mixed Precision Training v3): without loss scaling, small fp16 gradients become zero and hurt
# training (§3.2, where the paper motivates loss scaling with a histogram of activation gradient values,
# Figure 3); with a scaled loss, fp16 training matches fp32; without an fp32 master copy, updates
# of about 1/2048 of a weight or less are lost (§3.1); the paper's CNNs matched fp32 "using identical
# hyper-parameters" and "Loss-scaling technique was not required" for them (§4.1, Table 1), so whether a
# network needs it depends on where its gradients sit.
#
# **Toy.** 8 seeds, each its own data and initial weights: a 2-layer tanh MLP (16 → 32 → 8 classes) labels
# 256 tokens generated by a random linear teacher. The loss is that of *one micro-batch of a global batch of
# `D` tokens*: gradient accumulation divides each micro-batch's summed loss by the global token count, so the
# gradient of each logit is `(p − y)/D`. The main runs take `D = 2²⁴` (16.8M tokens), a stated assumption
# chosen to put the logit gradients below fp16's `2⁻²⁴` whenever `|p − y| < 1`; a sweep over `D` below shows
# where underflow starts to matter. Plain SGD, learning rate `0.5 · D/256` (the
# `0.5` of a per-token mean loss), 200 steps for every arm: the same data, initialisation and number of
# attempted steps (a matched budget). Forward and backward run in the arm's dtype; the update in fp32.
#
# *Part A, loss scaling* (fp32 master weights in every arm): fp32; fp16 without scaling; fp16 with a static
# `S = 2¹²`; fp16 with our `DynamicLossScaler` started deliberately too high (`2⁴⁰`, growth every 50 steps),
# to watch it back off; bf16 without scaling; and an ablation of the setting itself: fp16 without scaling on
# the per-token *mean* loss of the micro-batch (divided by 256, not by 2²⁴).
#
# *Part B, master weights* (fp16 arms with `S = 2¹²`, bf16 arms unscaled; learning rate 0.002 · 2²⁴/256, the
# small late-training rate at which updates are tiny): fp32 master weights against weights stored in fp16 or
# bf16 and updated in place.

# %%
SEEDS, TOKENS, D_IN, D_H, N_CLS, GLOBAL_TOKENS, STEPS = 8, 256, 16, 32, 8, 2**24, 200


def make_toy(seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(TOKENS, D_IN, generator=gen)  # (tokens, 16)
    y = (x @ torch.randn(D_IN, N_CLS, generator=gen)).argmax(dim=-1)  # (tokens,) labels of a random linear teacher
    w1 = torch.randn(D_IN, D_H, generator=gen) / math.sqrt(D_IN)  # (16, 32)
    w2 = torch.randn(D_H, N_CLS, generator=gen) / math.sqrt(D_H)  # (32, 8)
    return x, y, w1, w2


toys = [make_toy(s) for s in range(SEEDS)]
X_TOY, Y_TOY, W1_INIT, W2_INIT = (torch.stack([t[i] for t in toys]) for i in range(4))  # seeds stacked first


def toy_loss(w1: torch.Tensor, w2: torch.Tensor, dtype: torch.dtype, divide_by: int = GLOBAL_TOKENS):
    """Forward in `dtype` for all seeds at once: (summed CE / divide_by per seed (seeds,), fp16/bf16 logits, mean CE)."""
    h = torch.tanh(torch.bmm(X_TOY.to(dtype), w1.to(dtype)))  # (seeds, tokens, 32)
    logits = torch.bmm(h, w2.to(dtype))  # (seeds, tokens, 8) in dtype
    ce = F.cross_entropy(logits.float().flatten(0, 1), Y_TOY.flatten(), reduction="none").view(SEEDS, TOKENS)
    return ce.sum(dim=1) / divide_by, logits, ce.mean(dim=1)


def train_toy(dtype, scaling="none", lr=0.5, store=torch.float32, static_scale=2.0**12, divide_by=GLOBAL_TOKENS):
    """Train all seeds; returns final mean CE per seed (seeds,) and diagnostics of the first step."""
    w1, w2 = W1_INIT.to(store), W2_INIT.to(store)  # the stored weights: fp32 master, or fp16/bf16 without one
    scaler = DynamicLossScaler(SEEDS, init_scale=2.0**40, interval=50) if scaling == "dynamic" else None
    skipped, first = torch.zeros(SEEDS), {}
    for step in range(STEPS):
        scale = scaler.scale if scaler else torch.full((SEEDS,), static_scale if scaling == "static" else 1.0)
        a, b = (w.detach().to(dtype).requires_grad_() for w in (w1, w2))  # the compute copies
        loss, logits, _ = toy_loss(a, b, dtype, divide_by)
        ga, gb, glog = torch.autograd.grad((loss * scale).sum(), (a, b, logits))
        ga, gb = ga.float() / scale[:, None, None], gb.float() / scale[:, None, None]  # unscale in fp32
        finite = torch.isfinite(ga).flatten(1).all(1) & torch.isfinite(gb).flatten(1).all(1)  # (seeds,)
        keep = finite[:, None, None]  # a run whose gradients overflowed skips the step
        step_lr = lr * divide_by / TOKENS  # lr of the per-token mean loss, whatever the normalisation
        n1 = (w1.float() - step_lr * torch.where(keep, ga, 0.0)).to(store)
        n2 = (w2.float() - step_lr * torch.where(keep, gb, 0.0)).to(store)
        if step == 0:
            first["zero logit grads"] = (glog == 0).float().mean().item()  # fp32 would have none: p - y != 0
            tiny = torch.finfo(glog.dtype).tiny  # smallest normal of the compute format (fp16: 2^-14)
            first["subnormal logit grads"] = ((glog != 0) & (glog.abs() < tiny)).float().mean().item()
            first["zero weight grads"] = torch.cat([(ga == 0).flatten(), (gb == 0).flatten()]).float().mean().item()
            moved = torch.cat([(n1 != w1).flatten(), (n2 != w2).flatten()])
            wanted = torch.cat([(ga != 0).flatten(), (gb != 0).flatten()])
            first["lost updates"] = 1 - (moved & wanted).sum().item() / wanted.sum().item()
        w1, w2 = n1, n2
        if scaler:
            skipped += (~finite).float()
            scaler.update(finite)
    _, _, ce = toy_loss(w1.float(), w2.float(), torch.float32)
    return ce, first, skipped


arms_a = {
    "fp32": dict(dtype=torch.float32),
    "fp16, no scaling": dict(dtype=torch.float16),
    "fp16, static S = 2^12": dict(dtype=torch.float16, scaling="static"),
    "fp16, dynamic (from 2^40)": dict(dtype=torch.float16, scaling="dynamic"),
    "bf16, no scaling": dict(dtype=torch.bfloat16),
    "fp16, no scaling, mean loss": dict(dtype=torch.float16, divide_by=TOKENS),  # ablation: no accumulation
}
arms_b = {
    "fp16 compute, fp32 master": dict(dtype=torch.float16, scaling="static", lr=0.002),
    "fp16 weights, no master": dict(dtype=torch.float16, scaling="static", lr=0.002, store=torch.float16),
    "bf16 compute, fp32 master": dict(dtype=torch.bfloat16, lr=0.002),
    "bf16 weights, no master": dict(dtype=torch.bfloat16, lr=0.002, store=torch.bfloat16),
}
results = {name: train_toy(**kw) for name, kw in {**arms_a, **arms_b}.items()}
init_ce = toy_loss(W1_INIT, W2_INIT, torch.float32)[2]  # (seeds,)

# %% [markdown]
# Results, mean ± std over the 8 seeds with the range (the runs are deterministic: each seed's data and
# initialisation are fixed). `zero logit grads`: fraction of the fp16/bf16 gradient entries at the logits that
# are exactly 0 at step 0 (none are in fp32); `lost updates`: fraction of the first step's nonzero updates
# that did not change the stored weight. For the dynamic scaler both describe a skipped step: at `2⁴⁰` the
# scaled gradients overflow at step 0, so that step applies no update (lost updates 1.000) and its logit
# gradients are large or infinite, never zero (0.000).

# %%
print(f"initial CE {init_ce.mean():.3f} ± {init_ce.std():.3f}; {STEPS} attempted steps per arm, {SEEDS} seeds\n")
print(f"{'arm':27s} {'final CE':>15s} {'min-max':>13s} {'zero logit grads':>16s} {'lost updates':>12s} {'skipped':>7s}")
table = {}
for name, (ce, first, skipped) in results.items():
    if name == "fp16 compute, fp32 master":
        print()
    table[name] = ce
    print(f"{name:27s} {ce.mean():7.3f} ± {ce.std():.3f} {ce.min():6.3f}-{ce.max():.3f} {first['zero logit grads']:16.3f} "
          f"{first['lost updates']:12.3f} {skipped.mean():7.1f}")
base_b = table["fp16 compute, fp32 master"]
for name in ("fp16 weights, no master", "bf16 weights, no master"):
    gap = table[name] - base_b
    print(f"{name} minus fp32 master: {gap.mean():+.3f} ± {gap.std():.3f}, worse on {(gap > 0).sum().item()} of 8 seeds")

fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
panels = (
    (axes[0], arms_a, lambda name: table[name], "final cross-entropy (initial 2.23)",
     "A: loss scaling, lr 0.5 (8 seeds, mean ± std)"),
    (axes[1], arms_b, lambda name: table[name] - base_b, "final CE minus fp16 + fp32 master, same seed",
     "B: master weights, lr 0.002 (8 seeds paired, mean ± std)"),
)
for ax, arms, value, ylabel, title in panels:
    for i, name in enumerate(arms):
        y = value(name)  # (seeds,)
        ax.scatter([i] * SEEDS, y, s=14, alpha=0.6)
        ax.errorbar(i, y.mean(), yerr=y.std(), fmt="k_", capsize=6, markersize=18)
    labels = [name.replace(", ", "\n").replace(" (from", "\n(from").replace("static ", "static\n") for name in arms]
    ax.set_xticks(range(len(arms)), labels, fontsize=8)
    ax.set(ylabel=ylabel, title=title)
plt.show()

# %% [markdown]
# **What the toy shows.** Part A: at step 0, 87% of fp16 logit gradients are exactly zero without loss
# scaling; training still moves (the surviving subnormal gradients are few and coarse) but ends at CE 0.346
# against 0.078 in fp32, worse on all 8 seeds. A static `S = 2¹²` restores fp32's result to three decimals.
# The dynamic scaler, started at `2⁴⁰`, skips its first 5 steps while it halves its way down (the scaled
# gradients overflow fp16's 65,504), then trains normally: 0.081, the price of 5 skipped steps out of 200
# attempted (a matched budget of attempts, not of updates). bf16
# needs no scaling (its range is float32's): it lands on fp32's loss. The toy is built to put its gradients
# below fp16's range, the situation loss scaling is for (§3.2). The ablation shows it is the setting, not fp16
# as such: on the micro-batch's per-token mean loss, fp16 without any scaling also ends at 0.078 ± 0.008, as
# the paper's ILSVRC CNNs needed no loss scaling (§4.1); the sweep after Part B maps the range in between.
#
# Part B: at the small learning rate, two thirds of the first step's fp16 updates and 95% of the bf16 ones
# are rounded away in the stored weights. Without a master copy, fp16 weights lose a little (CE +0.030 ±
# 0.005) and bf16 weights barely train (2.213 against 2.234 at the start and 2.075 with a master copy: +0.139 ±
# 0.024), worse than with fp32 master weights on every seed. With the master copy, fp16 and bf16 compute give
# the same loss here. bf16 is *more* in need of fp32 master weights than fp16, because of its 7 fraction bits
# (Derivation 6); the paper, written for fp16 on Volta GPUs (§4.1), makes the argument for fp16.
#
# **When does loss scaling matter? A sweep over the divisor `D`.** Part A's effect depends on the assumed
# global batch `D = 2²⁴`. The cell reruns "fp16, no scaling" (8 seeds, 200 steps, learning rate `0.5 · D/256`)
# for `D` from `2⁸` to `2²⁴`, and fp32 at `D = 2⁸` for comparison: in fp32 a power-of-two `D` and the matching
# learning rate cancel exactly, so its run must equal the `D = 2²⁴` fp32 arm bit for bit (asserted), and any
# change with `D` in fp16 comes from fp16's range alone.

# %% tags=["nbval-ignore-output"]
DIVISORS = [2**8, 2**12, 2**16, 2**18, 2**20, 2**21, 2**22, 2**23, 2**24]
fp32_small_d = train_toy(torch.float32, divide_by=2**8)[0]
assert torch.equal(fp32_small_d, table["fp32"])  # D only rescales exactly in fp32: the same run
sweep = {dv: (results["fp16, no scaling"] if dv == GLOBAL_TOKENS else train_toy(torch.float16, divide_by=dv)) for dv in DIVISORS}
print(f"{'D':>5s} {'fp16 no scaling, CE':>19s} {'min-max':>13s} {'mean gap to fp32':>16s} {'seeds worse by > 5e-4':>21s} "
      f"{'zero logit grads':>16s} {'subnormal':>9s}")
for dv, (ce, first, _) in sweep.items():
    gap = ce - table["fp32"]  # (seeds,) paired by seed
    gap_text = "< 5e-4" if gap.mean() < 5e-4 else f"{gap.mean():.2g}"  # 2 digits: the fp16 runs' 4th digit varies by CPU
    print(f"2^{int(math.log2(dv)):<3d} {ce.mean():11.3f} ± {ce.std():.3f} {ce.min():6.3f}-{ce.max():.3f} {gap_text:>16s} "
          f"{(gap > 5e-4).sum().item():16d} of 8 {first['zero logit grads']:16.3f} {first['subnormal logit grads']:9.3f}")
fig, (ax, ax3) = plt.subplots(1, 2, figsize=(12, 3.6), layout="constrained")
logd = [math.log2(dv) for dv in DIVISORS]
ax.errorbar(logd, [sweep[dv][0].mean().item() for dv in DIVISORS], yerr=[sweep[dv][0].std().item() for dv in DIVISORS], fmt="o-",
            capsize=4, label="fp16, no loss scaling")
ax.axhline(table["fp32"].mean().item(), color="k", ls="--", label="fp32 (any D)")
ax2 = ax.twinx()
ax2.plot(logd, [sweep[dv][1]["zero logit grads"] for dv in DIVISORS], "s:", color="tab:red", label="zero logit grads, step 0")
ax2.set(ylabel="fraction of logit gradients = 0", ylim=(0, 1))
ax.set(xlabel="log2 of the divisor D (global tokens)", ylabel="final CE (8 seeds, mean ± std)",
       title="fp16 without loss scaling: where underflow starts to hurt")
ax.legend(loc="upper left", fontsize=8)
ax2.legend(loc="center left", fontsize=8)
for seed in range(8):  # right: the paired gap, seed by seed (the left panel's seed spread hides the small gaps)
    ax3.plot(logd, [(sweep[dv][0] - table["fp32"])[seed].item() for dv in DIVISORS], ".-", color="tab:blue",
             alpha=0.45, lw=0.8, label="one seed" if seed == 0 else None)
ax3.plot(logd, [(sweep[dv][0] - table["fp32"]).mean().item() for dv in DIVISORS], "o-", color="k", label="mean of 8 seeds")
ax3.axhline(0, color="gray", lw=0.6)
ax3.axhspan(-5e-4, 5e-4, color="tab:green", alpha=0.15, label="within 5e-4")
ax3.set_yscale("symlog", linthresh=1e-4)
ax3.set(xlabel="log2 of the divisor D (global tokens)", ylabel="CE fp16 - CE fp32, same seed (symlog)",
        title="paired gap per seed: +0.001 at 2^18, growing from 2^20")
ax3.legend(loc="upper left", fontsize=8)
plt.show()

# %%
# The table above, to the digits that do not depend on the CPU's fp16 kernels (its std's third digit does:
# 0.004 or 0.005 at 2^23 between AVX2 and the portable path); these are the values the notebook check compares.
for dv, (ce, first, _) in sweep.items():
    gap = ce - table["fp32"]  # (seeds,) paired by seed
    print(f"2^{int(math.log2(dv)):<3d} CE {ce.mean():.2f}, gap to fp32 {'< 5e-4' if gap.mean() < 5e-4 else f'{gap.mean():.1g}':>7s}, "
          f"{(gap > 5e-4).sum().item()} of 8 seeds worse, zero logit grads {first['zero logit grads']:.2f}")

# %% [markdown]
# **What the sweep shows.** The fp32 run does not depend on `D` (asserted bit for bit). The right panel plots
# each seed's gap `CE_fp16 − CE_fp32` (same seed, same data) on a symmetric log axis, linear within ±1e-4. Up to `D = 2¹⁶`, fp16
# without any scaling ends within 0.0005 of fp32 on every seed. Already at `2¹⁸` it is behind on all 8 seeds,
# by a small 0.001, although virtually no logit gradient is flushed to zero at step 0 (the table's 0.000).
# The `subnormal` column (fraction of the logit gradients that are nonzero and below fp16's smallest normal) says why:
# `|p − y| < 1`, so from `D = 2¹⁶` every nonzero logit gradient `(p − y)/D` is below fp16's smallest normal `2⁻¹⁴`
# (asserted): it is an integer multiple of `2⁻²⁴` and keeps fewer significant bits, at most 8 of fp16's 11 at
# `2¹⁶` and at most 6 at `2¹⁸` (one fewer per doubling of `D`). Precision is lost before anything is flushed. From
# `2²⁰` the smallest gradients also flush (2.8% zero at step 0) and the gap grows: +0.0031 at `2²⁰`, +0.012 at
# `2²²` (53% zero), +0.068 at `2²³` (81%), +0.27 at `2²⁴` (87%). The subnormal fraction is already 0.81 at
# `2¹²` while every seed stays within 5e-4 of fp32: what hurts is how few bits the gradients keep, not being subnormal. So in this toy fp16 without loss scaling is
# within 0.0005 of fp32 up to `D = 2¹⁶`, slightly behind at `2¹⁸` (reduced precision), and increasingly behind
# from `2²⁰` (flushed gradients), by a lot from `2²³`, once most gradients fall below `2⁻²⁴`.
# Part A's large gap is a property of the chosen `D = 2²⁴`, not of fp16 alone. Where the threshold lies for a
# real network depends on its gradient magnitudes, which the paper measures instead of assuming (§3.1,
# Fig. 2b: "approximately 5% of weight gradient values have exponents smaller than −24").
#
# ### 3. ZeRO's Table 1 recomputed, Figure 1 and the model sizes of §5.4 and Table 2
#
# **Claim** (ZeRO v3 Table 1, Fig. 1, §5.1–5.4, Table 2). Table 1 prints the model-state memory per device for
# three models (7.5B, 128B, 1T parameters), six data-parallel degrees `N_d` (1, 4, 16, 64, 256, 1024) and
# the three stages, 54 numbers in GB (10⁹ bytes: 16 · 7.5·10⁹ = 120·10⁹), with bold for "the combinations for
# which the model can fit into a cluster of 32GB V100 GPUs". Figure 1 is its `7.5B, N_d = 64` row (120, 31.4,
# 16.6, 1.9 GB; Table 1 prints the last as 1.88). §5.4: "with `N_d = 64`, ZeRO can train models with up to
# 7.5B, 14B, and 128B parameters using `P_os`, `P_os+g`, and `P_os+g+p`, respectively"; Table 2 gives the same
# "Max Theoretical Model Size" at 64 GPUs as 2B (baseline), 7.6B, 14.4B and 128B, and the *measured* sizes
# 1.3B (baseline) and 6.2B (`P_os`). The cell recomputes all 54 entries of Table 1 from eq. (12) and checks them
# against the printed values at the precision printed, the bold cells against "fits in 32 GB", and Table 2's
# first row against the largest `Ψ` that fits.

# %%
TABLE1_ND = (1, 4, 16, 64, 256, 1024)
table1 = {  # ZeRO v3 Table 1 as printed: model -> stage (1, 2, 3) -> GB per device for N_d in TABLE1_ND
    7.5e9: {1: "120 52.5 35.6 31.4 30.4 30.1", 2: "120 41.3 21.6 16.6 15.4 15.1", 3: "120 30 7.5 1.88 0.47 0.12"},
    128e9: {1: "2048 896 608 536 518 513", 2: "2048 704 368 284 263 257", 3: "2048 512 128 32 8 2"},
    1e12: {1: "16000 7000 4750 4187 4046 4011", 2: "16000 5500 2875 2218 2054 2013", 3: "16000 4000 1000 250 62.5 15.6"},
}
bold = {(7.5e9, 1, 64), (7.5e9, 2, 16), (7.5e9, 3, 4), (128e9, 3, 64), (1e12, 3, 1024)}  # bold in Table 1
truncated = []
MODEL_NAMES = {7.5e9: "7.5B", 128e9: "128B", 1e12: "1T"}
print("eq. (12), GB per device; columns P_os, P_os+g, P_os+g+p for each model")
print(f"{'N_d':>5s} |" + "|".join(f"{MODEL_NAMES[psi]:^27s}" for psi in table1))
for i, n_d in enumerate(TABLE1_ND):
    cells = []
    for psi, stages in table1.items():
        for stage, printed_row in stages.items():
            printed = printed_row.split()[i]
            value = zero_bytes_per_device(psi, n_d, stage) / 1e9
            digits = len(printed.partition(".")[2])
            unit = Decimal(1).scaleb(-digits)  # the last printed digit
            exact = Decimal(repr(value))
            if value < 100:  # below 100 GB: rounded half up to the digits shown
                assert exact.quantize(unit, ROUND_HALF_UP) == Decimal(printed), (psi, stage, n_d, value, printed)
            else:  # from 100 GB up: an integer, the fraction cut off
                assert exact.quantize(unit, ROUND_DOWN) == Decimal(printed), (psi, stage, n_d, value, printed)
                if exact.quantize(unit, ROUND_HALF_UP) != Decimal(printed):
                    truncated.append(f"{value:g} -> {printed}")
            fits_first = value <= 32 and (i == 0 or zero_bytes_per_device(psi, TABLE1_ND[i - 1], stage) / 1e9 > 32)
            assert fits_first == ((psi, stage, n_d) in bold)  # bold = the smallest N_d of the table that fits
            cells.append(f"{value:.5g}".rjust(8) + ("*" if fits_first else " "))
        cells.append("|")
    print(f"{n_d:5d} |" + "".join(cells[:-1]))
print("all 54 entries of Table 1 reproduced (* = bold in the paper: the first N_d at which 32 GB suffices)")
print("entries from 100 GB up where the paper cut the fraction off instead of rounding:", ", ".join(truncated))

print("\nTable 2, largest model whose model states fit in 32 GB, 64 GPUs (N_d = 64, no model parallelism):")
table2_row1 = {0: 2.0, 1: 7.6, 2: 14.4, 3: 128.0}  # billions of parameters, as printed
for stage, name in enumerate(ZERO_STAGES):
    psi_max = 32e9 / zero_bytes_per_device(1, 64, stage) / 1e9
    assert round(psi_max, 1) == table2_row1[stage]
    print(f"  {name:19s} {psi_max:7.2f}B (Table 2: {table2_row1[stage]:g}B)")
table2_pos = {2: 15.2, 4: 30.4, 8: 60.8, 16: 121.6}  # Table 2, P_os column, model-parallel degree N_m (64 N_m GPUs)
for n_m, printed in table2_pos.items():
    assert math.isclose(printed, n_m * table2_row1[1])  # N_m times the rounded 7.6B
print("Table 2's P_os column for N_m = 2, 4, 8, 16:", ", ".join(f"{v:g}B" for v in table2_pos.values()),
      "= N_m x 7.6B; unrounded:", ", ".join(f"{n_m * 32 / zero_bytes_per_device(1, 64, 1):.1f}B" for n_m in table2_pos))
print(f"1T parameters, stage 3, N_d = 1024: {zero_bytes_per_device(1e12, 1024, 3) / 1e9:.1f} GB per GPU")

# %% [markdown]
# All 54 entries of Table 1 come out of eq. (12) (asserted). Two roundings are at work: below 100 GB the paper
# rounds half up to the digits it prints (41.25 → 41.3, 1.875 → 1.88), from 100 GB up it cuts the fraction off
# (513.5 → 513, 4187.5 → 4187, 2013.67 → 2013: the eight entries listed). The bold cells are exactly the
# smallest `N_d` in the table at which a model's states fit in 32 GB (128B at `N_d = 64` is exactly 32 GB).
# Figure 1's 1.9 GB is Table 1's 1.88 (1.875) rounded once more.
#
# Table 2's first row is the largest `Ψ` that fits: 2B, 7.64B, 14.42B, 128B, printed as 2B, 7.6B, 14.4B, 128B
# (and in §5.4 as 7.5B, 14B, 128B). Its rows with model parallelism are `N_m` times that row *as rounded* (for
# example 121.6B = 16 × 7.6B, where 16 × 7.64B = 122.3B): with `N_m`-way model parallelism each GPU holds
# `1/N_m` of the model. The measured limits are lower: 1.3B without ZeRO and 6.2B with `P_os` on 64 GPUs
# (Table 2; §1 says plain data parallelism "runs out of memory for models with more than 1.4B parameters", and
# §5.4 "less than 1.5 Billion"), because activations, temporary buffers and fragmentation, the "residual
# states" of §1, also need room, and eq. (12) leaves them out. The paper's caption reads the `P_os` result as
# the measured size matching the theoretical maximum; 6.2B is 81% of it.
#
# ### 4. Benchmark on a GPU
#
# The course measures its Triton kernels against their peers with `make bench` (`tools/bench.py`, kernel time
# with `triton.testing.do_bench`, median of repeats), which writes `bench/results.json` with the date, device
# and versions. **It has not been run on a GPU yet**: no GPU was available to the sessions that wrote this
# reading, so there is no measured table here and none is made up. The cell below shows the file when it
# exists. For orientation only, the course's issue 7 quotes figures measured on an H100 in bf16 for the
# *peers* (not for the course's kernel, and not measured by the course): causal attention `(4, 32, 4096,
# 128)` forward at 328 TFLOP/s with SDPA's flash backend, 549 with cuDNN, 382 with FlexAttention; sliding
# window 512: FlexAttention 0.54 ms against SDPA with a dense mask 3.3 ms; packed ViT attention over 8 images
# of 1024 patches (16 heads, head_dim 80): SDPA per image 0.58 ms, SDPA with a dense block mask 1.91 ms,
# FlexAttention 0.19 ms. The kernel's goal there is at least 0.9× SDPA-flash forward on the causal shape.
# When the table exists, read its TFLOP/s as FlashAttention's benchmark convention (`tools/bench_attention.py`):
# forward + backward counted as 3.5 × the forward's `4N²d`, FA2's "5 matmuls in the backward". The course's
# kernel does 7 tile matmuls in its backward (Walkthrough §8), so its real work is 4.5 × the forward: the
# convention compares peers at the same nominal work and understates what ours computes.

# %%
bench_file = Path("../../bench/results.json")
if bench_file.exists():
    bench = json.loads(bench_file.read_text())
    print(json.dumps({key: bench[key] for key in bench if key != "rows"}, indent=1))
    for row in bench.get("rows", []):
        print(row)
else:
    print(f"{bench_file.as_posix()} is absent: the GPU benchmark (make bench) has not been run yet")

# %% [markdown]
# ### 5. Where the papers stop, and what came after
#
# **Limits the papers state.** FA1 §5: "Our current approach to building IO-aware implementations of attention
# requires writing a new CUDA kernel for each new attention implementation", and "Implementations may also not
# be transferrable across GPU architectures"; its IO model has two levels (HBM and one SRAM), and it is
# "optimal within constants for computing attention on a single GPU", leaving multi-GPU IO to future work.
# ZeRO: stage 3 costs 1.5× data parallelism's communication (§7.2.2); eq. (12) covers model states only, the
# residual states go to ZeRO-R (§6); the released ZeRO-100B implemented stages 1–2 only, stage 3 was announced
# (§1). Mixed Precision Training analyses fp16 on Volta GPUs (§3, §4.1), so its bf16 consequences (no loss
# scaling, a greater need for master weights) are this reading's derivations, not the paper's; its loss scale
# is constant or set from gradient statistics (§3.2), and the dynamic rule used here is `GradScaler`'s.
#
# **What built on them** (pointers, not covered here): *FlashAttention-3* (arXiv:2407.08608) for Hopper GPUs,
# using the asynchrony of Tensor Cores and TMA, warp specialisation and FP8; PyTorch's
# `scaled_dot_product_attention` backends and FlexAttention (the peers of `make bench`); the FP8 training
# formats E4M3 and E5M2 (*FP8 Formats for Deep Learning*, arXiv:2209.05433); ZeRO-Offload
# (arXiv:2101.06840, optimizer states and computation on the CPU) and ZeRO-Infinity (arXiv:2104.07857, GPU, CPU
# and NVMe memory); PyTorch FSDP (arXiv:2304.11277), fully sharded data parallelism in PyTorch.
#
# ### What a healthy run prints
#
# - Blocked attention and its backward: float64 errors `< 1e-12` against exact attention and autograd, float32
#   `< 1e-06` against SDPA; the kernel's out, dq, dk, dv and L `< 1e-05` (`[interpreter]` on CPU, `[triton]`
#   on a GPU), including the sliding-window case, and the fp16 case within twice the fp16 reference's error
#   plus `2e-3`; the scaler's scales equal GradScaler's step by step; fp32 accumulation of 4096 fp16 products
#   correct to `< 1e-05`, fp16 accumulation 6–9% low.
# - FLOPs: forward `1.000 × 4N²d` for both implementations; backward 2.000 (standard) and 2.500 (blocked).
# - HBM counts equal eqs. (10)–(11); 6.1× fewer accesses at `N = 1024, d = 64, M = 98,304`.
# - Toy A: fp32, static-scaled fp16 and bf16 end at CE 0.078 ± 0.008, the dynamic scaler at 0.081 after 5
#   skipped steps, fp16 without scaling at 0.346 ± 0.023 with 87% of its first logit gradients exactly zero
#   (and at 0.078 on the per-token mean loss);
#   toy B: bf16 weights without a master copy lose 95% of their first updates and end near the initial CE;
#   divisor sweep: fp16 without scaling within 0.0005 of fp32 up to `D = 2¹⁶`, behind it on every seed from
#   `2¹⁸` (by about 0.001 there, every logit gradient subnormal), the gap growing with `D` from `2²⁰` (+0.27 at `2²⁴`).
# - ZeRO: 16 bytes per parameter; all 54 entries of Table 1 (7.5B on 64 GPUs: 120 / 31.4 / 16.6 / 1.88 GB);
#   Table 2's 2B, 7.6B, 14.4B, 128B.
#
# The cell asserts these.

# %%
print("healthy: fp16 without scaling > 0.3; static-scaled fp16 and bf16 within 0.002 of fp32, dynamic within 0.01; "
      "divisor sweep: no harm up to 2^16, behind on every seed from 2^18, gap growing from 2^20; ZeRO 16 bytes/param")
assert flops["blocked backward (recompute S)"] == 2.5 * formula and flops["standard backward (autograd)"] == 2 * formula
assert round(hbm_standard(1024, 64) / hbm_flash(1024, 64, 98_304), 1) == 6.1
fp32_ce = table["fp32"]
assert table["fp16, no scaling"].mean() > 0.3 > fp32_ce.mean() and (table["fp16, no scaling"] > fp32_ce).all()
for name in ("fp16, static S = 2^12", "bf16, no scaling"):
    assert (table[name] - fp32_ce).abs().max() < 2e-3, name
assert (table["fp16, dynamic (from 2^40)"] - fp32_ce).abs().max() < 1e-2 and results["fp16, dynamic (from 2^40)"][2].max() < 10
assert results["fp16, no scaling"][1]["zero logit grads"] > 0.8 and results["bf16 weights, no master"][1]["lost updates"] > 0.9
assert (table["bf16 weights, no master"] > table["bf16 compute, fp32 master"]).all()
assert (table["fp16, no scaling, mean loss"] - fp32_ce).abs().max() < 2e-3  # the ablation: no underflow, no harm
assert sum(per_param.values()) == 16 == bytes_fp32
gaps = [(sweep[dv][0] - fp32_ce).mean().item() for dv in DIVISORS]  # the divisor sweep, 2^8 .. 2^24
assert all((sweep[dv][0] - fp32_ce).abs().max() < 5e-4 for dv in DIVISORS if dv <= 2**16)
assert (sweep[2**18][0] - fp32_ce).abs().max() < 2e-3 and sweep[2**18][1]["zero logit grads"] < 1e-3
assert all(sweep[dv][1]["subnormal logit grads"] + sweep[dv][1]["zero logit grads"] == 1 for dv in DIVISORS if dv >= 2**16)
assert all((sweep[dv][0] > fp32_ce).all() for dv in DIVISORS if dv >= 2**18) and gaps[-5:] == sorted(gaps[-5:])

# %% [markdown]
# ## Misconceptions
#
# - **"FlashAttention approximates attention"** (a classic interview trap: it is usually listed among the
#   "efficient attention" variants next to Linformer and Performer). **Correction:** it is exact: Algorithm 1
#   "returns `O = softmax(QKᵀ)V`" (FA1 Theorem 1), and FA2 gets "the right result (with no approximation)"
#   (§2.3.1). The blocked code here equals float64 attention to `1e-12` for every block shape tried (1 × 1 to
#   16 × 16 and 8 × 32, masks included); in float32 it equals SDPA to rounding (the summation order differs, so not
#   bitwise). Block-*sparse* FlashAttention (§3.3) is the approximate variant.
# - **"FlashAttention reduces attention's `O(N²)` compute"** / "breaks the softmax `O(n²)` bottleneck" (seed).
#   **Correction:** the FLOPs stay `O(N²d)` (Theorem 1); the forward does exactly the same `4N²d` matmul FLOPs
#   (counted above) and the backward *more* (2.5× the forward instead of 2×: recomputation). What falls is the
#   HBM traffic, `Θ(N²d²/M)` instead of `Θ(Nd + N²)` (Theorem 2), and the extra memory, `O(N)` instead of
#   `O(N²)`. Figure 2: 75.2 vs 66.6 GFLOPs, yet 7.3 vs 41.7 ms.
# - **"FlashAttention is an inference optimisation"** (the seed lists it among inference optimisations, with
#   the KV cache and speculative decoding). **Correction:** the
#   paper's results are training speed-ups (BERT-large 15% over the MLPerf record, GPT-2 3×, §4.1) and its
#   backward pass (Appendix B) is half the method; the same forward kernel also serves inference.
# - **"Mixed precision halves the memory a model needs"**. **Correction:** not the model states: with Adam
#   they are 16 bytes per parameter either way, 4 + 4 + 4 + 4 in fp32 training (weights, gradients, momentum,
#   variance) and 2 + 2 + 12 in mixed precision (ZeRO v3 §3.1; both counted from tensors in check 5). The paper
#   says where its saving is (Mixed Precision Training §3.1): "Even though maintaining an additional copy of
#   weights increases the memory requirements for the weights by 50% compared with single precision training,
#   impact on overall memory usage is much smaller. For training memory consumption is dominated by
#   activations, [...] Since activations are also stored in half-precision format, the overall memory
#   consumption for training deep neural networks is roughly halved." So "roughly halved" is about training
#   memory dominated by activations, which is consistent with the 16 bytes: where model states dominate (as
#   ZeRO §1 finds "for large models"), mixed precision alone saves little memory.
# - **"bf16 is more precise than fp16"**. **Correction:** less: 7 fraction bits against 10 (eps `2⁻⁷` vs `2⁻¹⁰`);
#   it has float32's 8 exponent bits, hence the range that makes loss scaling unnecessary. Its updates vanish
#   from about 1/256 of a weight down, so it needs fp32 master weights even more (toy B).
# - **"Loss scaling changes the optimisation"**. **Correction:** the gradients are unscaled before the update,
#   and with a power-of-two `S` scaling and unscaling are exact (only the exponent changes). So, without
#   overflow, the update is the one the same fp16 backward would give if fp16 had no lower range limit: the
#   small values that would flush to zero survive, while fp16's rounding of every product and sum is still
#   there. It does not turn the run into an fp32 one; in toy A the statically scaled run ends within 0.002 of
#   fp32's final CE on every seed, a measurement, not an identity. An overflowing step is skipped, not applied.
# - **"ZeRO is model parallelism"**. **Correction:** it is data parallelism with the model states partitioned
#   instead of replicated (§4.1, §5): every rank still runs the whole model on its own micro-batch; stages 1 and
#   2 keep data parallelism's communication volume (`2Ψ`), stage 3 costs 1.5× (§7). ZeRO can be combined with
#   model parallelism (§1).
# - **"ZeRO stage 3 makes memory independent of the model"**. **Correction:** eq. (12) divides the model
#   states by `N_d`; activations and buffers (ZeRO-R, §6) are separate, and each layer's full parameters are
#   gathered while it runs.

# %% [markdown]
# ## Exercises
#
# 1. **SRAM and passes.** For `N = 8192`, `d = 128` and `M = 98,304` elements, how many passes `T_c` over `Q`
#    and `O` does FlashAttention's Algorithm 1 make, and how many HBM accesses does eq. (11) give? (Use
#    `B_c = ⌈M/4d⌉`.)
# 2. **ZeRO.** A 70B-parameter model is trained with mixed-precision Adam on `N_d = 256` GPUs with ZeRO stage
#    2. How many GB (10⁹ bytes) of model states does each GPU hold?
# 3. **Loss scale.** A gradient of magnitude `10⁻⁹` must become at least fp16's smallest *normal* number
#    (`2⁻¹⁴`) after scaling. What is the smallest power-of-two loss scale `S` that does it? With that `S`,
#    what is the largest gradient magnitude that still does not overflow (65,504)?
# 4. **Why recompute?** FlashAttention's backward does 25% more matmul FLOPs than the standard backward and
#    runs faster. Using Figure 2's workload (`N = 1024`, `d = 64`, 16 heads, batch 64, fp16), how many bytes
#    would storing `P` for the backward cost, and how many does storing `L` (float32) cost? (No checking
#    cell: the numbers are in Derivation 3.)
#
# Fill in the answers and run the cell.

# %%
answer_1 = None  # (T_c, HBM accesses) for N = 8192, d = 128, M = 98304
answer_2 = None  # GB per GPU, 70B parameters, N_d = 256, stage 2
answer_3 = None  # (S, largest gradient magnitude) for exercise 3

checks = {
    "1": (answer_1, (math.ceil(8192 / math.ceil(98_304 / (4 * 128))), hbm_flash(8192, 128, 98_304))),
    "2": (answer_2, zero_bytes_per_device(70e9, 256, 2) / 1e9),
    "3": (answer_3, (2.0 ** math.ceil(math.log2(2.0**-14 / 1e-9)), 65504 / 2.0 ** math.ceil(math.log2(2.0**-14 / 1e-9)))),
}
def close(given, expected) -> bool:
    given, expected = (t if isinstance(t, tuple) else (t,) for t in (given, expected))
    return len(given) == len(expected) and all(abs(a - b) <= 1e-3 * max(1.0, abs(b)) for a, b in zip(given, expected, strict=True))


for name, (given, expected) in checks.items():
    if given is None:
        print(f"exercise {name}: not answered yet")
    else:
        print(f"exercise {name}:", "correct" if close(given, expected) else "not quite, try again")

# %% [markdown]
# ## References
#
# - T. Dao, D. Y. Fu, S. Ermon, A. Rudra, C. Ré. *FlashAttention: Fast and Memory-Efficient Exact Attention
#   with IO-Awareness.* NeurIPS 2022; arXiv:2205.14135 v2 (June 2022; §2.1, Fig. 1, Fig. 2, Algorithms 0–1,
#   Theorems 1–2, Proposition 3, §3.3, §4.1, §5, Appendices B.2–B.5 (Theorem 5 in B.4) and C as cited). Code:
#   [Dao-AILab/flash-attention](https://github.com/Dao-AILab/flash-attention). Errata discussed:
#   [#273](https://github.com/Dao-AILab/flash-attention/issues/273) (App. C proof).
# - T. Dao. *FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning.* ICLR 2024;
#   arXiv:2307.08691 v1 (July 2023; §2.2, §2.3.1, §3.1 Algorithms 1–2 and the causal-masking notes of §3.1.1,
#   §3.2 parallelism and atomic adds for dQ, §3.3, §4.1 FLOP counting). Erratum:
#   [#991](https://github.com/Dao-AILab/flash-attention/issues/991) (Algorithm 1 line 10).
# - P. Micikevicius, S. Narang, J. Alben, G. Diamos, E. Elsen, D. Garcia, B. Ginsburg, M. Houston,
#   O. Kuchaiev, G. Venkatesh, H. Wu. *Mixed Precision Training.* ICLR 2018; arXiv:1710.03740 v3 (§3.1 master
#   weights and memory, Fig. 2b, §3.2 loss scaling, §3.3 arithmetic precision, §4.1 Table 1).
# - S. Rajbhandari, J. Rasley, O. Ruwase, Y. He. *ZeRO: Memory Optimizations Toward Training Trillion
#   Parameter Models.* SC 2020; arXiv:1910.02054 v3 (§1, §3.1, Fig. 1, §5.1–5.4, Table 1, Table 2, §6, §7). Code:
#   [microsoft/DeepSpeed](https://github.com/microsoft/DeepSpeed).
# - M. Milakov, N. Gimelshein. *Online normalizer calculation for softmax.* arXiv:1805.02867 (2018), the
#   online softmax (FlashAttention's ref. [60]).
# - Later work pointed to, not used: *FlashAttention-3* (arXiv:2407.08608); *FP8 Formats for Deep Learning*
#   (arXiv:2209.05433); *ZeRO-Offload* (arXiv:2101.06840); *ZeRO-Infinity* (arXiv:2104.07857); *PyTorch FSDP*
#   (arXiv:2304.11277).
# - The course's kernel: `shared.kernels.flash_attention` (`_attn_fwd_kernel`, `_attn_bwd_preprocess_kernel`,
#   `_attn_bwd_dkdv_kernel`, `_attn_bwd_dq_kernel`, `_FlashAttention`), run under Triton 3.9's interpreter
#   (`TRITON_INTERPRET=1`) on CPU; its tests: `tests/test_kernels_attention.py`; its benchmark: `make bench`
#   (`tools/bench.py`, `tools/bench_attention.py`).
# - References used in the checks: `torch` 2.13 (`torch.nn.functional.scaled_dot_product_attention`,
#   `torch.amp.GradScaler` with `torch._amp_update_scale_`, `torch.utils.flop_counter.FlopCounterMode`,
#   `torch.optim.Adam`, `torch.nn.attention.bias.causal_upper_left`); Triton 3.9 (`triton/language/semantic.py`,
#   `dot`'s float32 default result); the course's `shared.attention.scaled_dot_product_attention`,
#   `causal_mask`, `sliding_window_mask`, `block_diagonal_mask`, `repeat_kv`.
