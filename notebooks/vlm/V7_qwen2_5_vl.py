# ---
# jupyter:
#   course:
#     cpu_seconds: 17
#     id: V7
#     papers:
#     - arxiv: '2502.13923'
#       title: Qwen2.5-VL Technical Report
#       version: v1
#     part: vlm
#     peak_memory_mb: 656
#     prerequisites:
#     - V6
#     - F2
#     - F7
#     title: Qwen2.5-VL
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
# # V7 · Qwen2.5-VL
#
# [![Open In Colab](../../docs/img/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/vlm/V7_qwen2_5_vl.ipynb)
#
# **Paper:** Shuai Bai, Keqin Chen, Xuejing Liu, et al. (Qwen Team, Alibaba Group), *Qwen2.5-VL Technical
# Report*, arXiv 2025. [arXiv:2502.13923v1](https://arxiv.org/abs/2502.13923v1) ·
# **Official code:** [QwenLM/Qwen2.5-VL](https://github.com/QwenLM/Qwen2.5-VL) (read here at
# commit `f0af299`: `README.md`, `qwen-vl-utils/src/qwen_vl_utils/vision_process.py`, the cookbooks)
#
# **Prerequisites:** [V6 · Qwen2-VL](V6_qwen2_vl.ipynb) (smart_resize, patches, 2D RoPE, M-RoPE: read it first);
# [F2 · Positional encodings](../foundations/F2_positional_encodings.ipynb) (RoPE);
# [F7 · Fast attention](../foundations/F7_fast_attention.ipynb) (FlashAttention, packed `cu_seqlens`)
#
# **CPU run time:** 17 s on a 2-core CPU (measured by `make run`, which rewrites this number)
#
# **Peak memory:** 656 MB (the kernel's peak resident memory, measured by `make run`)
#
# **Sources.** Every number below is computed here, or read from the installed `transformers` 5.23.0 source,
# the official repository at `f0af299` (README, `qwen-vl-utils`), the released `config.json` of the checkpoints
# (as reproduced in public code; the Hub is offline here), or the paper, cited by section and table of v1. The
# PDF could not be opened in this offline session: the paper's wording and table values were read from public
# transcriptions of v1 (Table 1 from several that agree); the README quotations were read at `f0af299`.

# %% [markdown]
# ## TL;DR
#
# - **ViT cost:** 28 of the 32 ViT layers attend only inside 112 x 112-pixel windows (8 x 8 patches = 4 x 4 LLM tokens); layers 7, 15, 23, 31 keep full attention (Table 1). At 12 MP (3024 x 4032) the ViT's attention falls from 634 to 80 TFLOPs, 7.9x (computed in 6.2); the saving tends to 8x, not to n/64, because 4 layers stay full. The blocks now use RMSNorm and SwiGLU, like the Qwen2.5 LLM.
# - **Time:** a video's temporal id is $\lfloor i \cdot \texttt{second\_per\_grid} \cdot 2\rfloor$, i.e. 2 ids per second whatever the frame rate; Qwen2-VL counted tubes. `transformers` >= 5.3 starts the text after a long video too early (a regression from the Qwen team's own code, shown in §7).
# - **Grounding** boxes are written in absolute pixels of the *resized* image, not in [0, 1000).
# - **Training and results (§2.2-2.3, Tables 2 and 8):** 4.1T tokens of pre-training in three phases (ViT only; everything; long context at 32 768), then SFT and DPO with the ViT frozen; the 72B reaches 50.9 mIoU on Charades-STA (GPT-4o: 35.7).
# - **Toy:** one rotary attention score reads "within 3 s?" perfectly across 1/2/4 fps with time ids (8 seeds: 1.000), while tube-index ids reach only 0.822 +- 0.016 (exact ceiling 0.833); at a single frame rate both reach 1.000.

# %% [markdown]
# ## 中文速览
#
# - **ViT 开销：**32 层中 28 层只在 112x112 像素窗口内做注意力（8x8 个 patch = 4x4 个 LLM token）；第 7、15、23、31 层保留全局注意力（表 1）。12 MP（3024x4032）图像上 ViT 注意力从 634 降到 80 TFLOPs，即 7.9 倍（6.2 节计算）；因 4 层仍是全局注意力，节省上限趋于 8 倍，而非 n/64。ViT 模块改用 RMSNorm 与 SwiGLU，与 Qwen2.5 LLM 一致。
# - **时间：**视频的时间 id 为 $\lfloor i \cdot \texttt{second\_per\_grid} \cdot 2\rfloor$，即不论帧率每秒 2 个 id；Qwen2-VL 按 tube 计数。`transformers` 5.3 及以后版本让长视频之后的文本位置起得过早（相对 Qwen 团队自己代码的回归，见第 7 节）。
# - **定位：**框坐标是*缩放后*图像的绝对像素，而不是 [0, 1000)。
# - **训练与结果（§2.2-2.3，表 2、表 8）：**预训练共 4.1T token，分三阶段（只训 ViT；全部参数；32768 长上下文），之后 SFT 与 DPO，ViT 冻结；72B 在 Charades-STA 上 mIoU 50.9（GPT-4o 为 35.7）。
# - **小实验：**单个旋转注意力分数在 1/2/4 fps 混合下用时间 id 判断"是否在 3 秒内"完全正确（8 个种子：1.000），用 tube 序号 id 仅 0.822 ± 0.016（精确上限 0.833）；单一帧率下两者都是 1.000。

# %% [markdown]
# ## Setup
#
# One cell installs the course helper on Colab only (CI skips it); the next imports, seeds and picks the
# device. Everything runs on a CPU: tiny random models from configs, the photograph that ships with matplotlib,
# and frames drawn here.

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
import json
import math
import re
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from matplotlib import cbook
from PIL import Image

from shared.attention import block_diagonal_mask
from shared.kernels import backend
from shared.kernels.flash_attention import flash_attention
from shared.mrope import mrope_position_ids, vision_position_ids, vision_rope_cos_sin
from shared.norms import rms_norm
from shared.rope import apply_rope
from shared.utils import assert_close, error_bound, pick_device, seed_everything
from shared.vision import smart_resize

seed_everything(0)
device = pick_device()  # every reading runs on CPU; a GPU only makes it faster
print("torch", torch.__version__, "| transformers", transformers.__version__)

# %% [markdown]
# ## The problem
#
# Qwen2-VL (V6) made the ViT read images at their own resolution, and paid for it: its 32 ViT layers all attend
# over every patch of an image, so the attention cost grows with the *square* of the pixel count. Counted in 6.2
# below with the released widths: at 12 megapixels (3024 x 4032, 62 208 patches) 32 full-attention layers cost
# 634 TFLOPs in attention alone, about 8 times the 78 TFLOPs of the 32 blocks' linear layers. Qwen2.5-VL's
# answer, in the official README: "We
# enhance both training and inference speeds by strategically implementing window attention into the ViT. The
# ViT architecture is further optimized with SwiGLU and RMSNorm, aligning it with the structure of the Qwen2.5
# LLM." The paper (§2.1.1) states the layout: "only four layers employ full self-attention, while the remaining
# layers utilize windowed attention with a maximum window size of 112×112 (corresponding to 8×8 patches)";
# regions smaller than a window "are processed without padding". Its Table 1 gives the ViT of all three sizes
# (3B, 7B, 72B) the same configuration: hidden size 1280, 32 layers, 16 heads, patch size 14, window size 112,
# full-attention block indexes {7, 15, 23, 31}, and a merger from 1280 channels to the LLM width 2048 / 3584 /
# 8192.
#
# The second problem is time. In Qwen2-VL the temporal id of a video token counts temporal patches (tubes), so
# one id step means 1 s at 2 fps but 0.25 s at 8 fps: the id says nothing about how much time has passed unless
# the frame rate is fixed. The README: "We extend dynamic resolution to the temporal dimension by adopting
# dynamic FPS sampling, enabling the model to comprehend videos at various sampling rates. Accordingly, we update
# mRoPE in the time dimension with IDs and absolute time alignment, enabling the model to learn temporal sequence
# and speed, and ultimately acquire the ability to pinpoint specific moments." (paper §2.1.2 and §2.1.3).
#
# The third is grounding: Qwen2-VL wrote boxes in coordinates normalised to [0, 1000), which discards the image's
# scale. Qwen2.5-VL writes them in the pixel coordinates of the image the model actually sees (§2.2.1, "Grounding
# Data with Absolute Position Coordinates"; README: "accommodating absolute coordinate and JSON formats").
#
# **Lineage.** Window attention over non-overlapping windows is Swin's (Liu et al., 2021,
# [arXiv:2103.14030](https://arxiv.org/abs/2103.14030)). The direct precedent of "4 full + 28 windowed" is ViTDet
# (Li et al., 2022, [arXiv:2203.16527](https://arxiv.org/abs/2203.16527)), which splits a plain ViT into 4 equal
# groups of blocks, attends inside windows, and uses global attention in the last block of each group: for 32
# blocks, exactly blocks 7, 15, 23, 31. RMSNorm (Zhang and Sennrich, 2019) and SwiGLU (Shazeer, 2020) come from
# the LLM side (Qwen2.5). What came after: Qwen3-VL interleaves the M-RoPE axes over the frequencies (V6 §6.5;
# `mrope_interleaved` in `transformers`' `qwen3_vl` config) and replaces the time-scaled ids by textual
# timestamps: `Qwen3VLProcessor.replace_video_token` writes `<t seconds>` before each **temporal patch's** block of
# tokens (one per `video_grid_thw[0]`, i.e. per 2 frames), not before each frame. Qwen2.5-VL's own §2.1.2 had
# argued the other way: "Unlike other approaches that incorporate textual timestamps or utilize additional heads
# to enable temporal grounding, we introduce a novel and efficient strategy that aligns MRoPE IDs directly with
# the timestamps".

# %% [markdown]
# ## Derivations
#
# Each derivation sits next to the code that implements it; "Check against a reference" compares every piece
# with `transformers` 5.23.0 (`models/qwen2_5_vl/modeling_qwen2_5_vl.py`, `vision_utils.py`) built from tiny
# random configs.
#
# **1. The window in pixels, patches and tokens.** Table 1 of the paper gives window size 112, patch size 14
# and full-attention blocks {7, 15, 23, 31} for all three sizes; the released `vision_config` (e.g.
# [Qwen2.5-VL-7B-Instruct `config.json`](https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/blob/main/config.json))
# holds the same values as `window_size`, `patch_size`, `fullatt_block_indexes`, and adds what the table lacks:
# `spatial_merge_size` 2 (the paper's text: "group spatially adjacent sets of four patch features"). So a window
# is $112/14 = 8$ patches a side, i.e. $8/2 = 4$ merged (LLM) tokens a side: at most $4 \cdot 4 = 16$ tokens $= 64$ patches. Windows are cut on the **merged** grid, so a 2 x 2 merge
# block never straddles two windows, and the merger (which fuses 4 consecutive rows) still works. For a merged
# grid $H' \times W'$ the windows are $\lceil H'/4\rceil \times \lceil W'/4\rceil$; the last row and column of
# windows are smaller when $H'$ or $W'$ is not a multiple of 4 ("processed without padding"). Each temporal
# patch of a video is windowed on its own.
#
# **The window index** is a permutation of the merged tokens: window after window (row-major over windows), and
# inside a window row-major. Our version sorts each token by the key (temporal patch, window row, window column,
# row in window, column in window), which is a different computation from `transformers`' pad-reshape-unpad;
# `cu_window_seqlens` are the cumulative window sizes, times 4 because they count patches.

# %%
PATCH, MERGE, TEMPORAL, WINDOW_PX = 14, 2, 2, 112
WIN = WINDOW_PX // PATCH // MERGE  # 4 merged tokens per window side
FULL_LAYERS = [7, 15, 23, 31]  # released vision_config.fullatt_block_indexes


def window_index(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Window order of merged tokens (n/4,) and cu_window_seqlens (n_windows + 1,) in patches, for grids (k, 3)."""
    order, sizes, offset = [], [], 0
    for t, h, w in grid.tolist():
        hm, wm = h // MERGE, w // MERGE  # merged grid of this image / video
        tt, rr, cc = (a.flatten() for a in torch.meshgrid(torch.arange(t), torch.arange(hm), torch.arange(wm),
                                                           indexing="ij"))  # raster order of merged tokens
        nwh, nww = -(-hm // WIN), -(-wm // WIN)  # ceil: the last windows may be partial
        win = (tt * nwh + rr // WIN) * nww + cc // WIN  # (t*hm*wm,) window id of each token
        key = win * WIN * WIN + (rr % WIN) * WIN + cc % WIN  # unique: window, then row and column inside it
        order.append(torch.argsort(key) + offset)
        sizes.append(torch.bincount(win, minlength=t * nwh * nww))  # tokens per window (none is empty)
        offset += t * hm * wm
    cu = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(torch.cat(sizes) * MERGE**2, 0)])
    return torch.cat(order), cu


def full_cu_seqlens(grid: torch.Tensor) -> torch.Tensor:
    """cu_seqlens (segments + 1,) of the full-attention layers: one segment per temporal patch of each input."""
    lengths = torch.repeat_interleave(grid[:, 1] * grid[:, 2], grid[:, 0])
    return torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])


demo = torch.tensor([[1, 12, 20]])  # 168 x 280 px: merged 6 x 10, not a multiple of 4 either way
widx, cu_demo = window_index(demo)
print("merged grid 6 x 10 -> windows of", (torch.diff(cu_demo) // 4).tolist(), "tokens")
print("first 20 entries of the window index:", widx[:20].tolist())
print("cu_window_seqlens (patches):", cu_demo.tolist(), "| full-attention cu_seqlens:", full_cu_seqlens(demo).tolist())

# %% [markdown]
# The 6 x 10 merged grid has $\lceil 6/4\rceil \cdot \lceil 10/4\rceil = 2 \cdot 3 = 6$ windows: 16, 16 and 8
# tokens in the first window row (4 x 4, 4 x 4, 4 x 2), then 8, 8, 4 (2 x 4, 2 x 4, 2 x 2). The index starts
# 0, 1, 2, 3, 10, 11, 12, 13, 20, ...: the first four tokens of merged rows 0, 1, 2, 3.
#
# On the grace_hopper photograph (the only photograph in matplotlib's sample data), resized by `smart_resize`
# to 588 x 504 px (42 x 36 patches, 21 x 18 merged): $6 \times 5 = 30$ windows, the last row 1 token high and
# the last column 2 tokens wide. Each colour is one window; the grey grid is the 28-pixel merged token grid.

# %%
photo = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
ph, pw = smart_resize(photo.height, photo.width)  # (588, 504) with the class defaults
photo_grid = torch.tensor([[1, ph // PATCH, pw // PATCH]])
p_widx, p_cu = window_index(photo_grid)
win_of_token = torch.empty(len(p_widx), dtype=torch.long)
win_of_token[p_widx] = torch.repeat_interleave(torch.arange(len(p_cu) - 1), torch.diff(p_cu) // 4)
fig, ax = plt.subplots(figsize=(4.2, 4.6))
ax.imshow(photo.resize((pw, ph)))
ax.imshow(win_of_token.reshape(ph // 28, pw // 28).numpy() % 7, cmap="tab10", alpha=0.35,
          extent=(0, pw, ph, 0), interpolation="nearest")
for x in range(0, pw + 1, 28):
    ax.axvline(x, color="grey", lw=0.3)
for y in range(0, ph + 1, 28):
    ax.axhline(y, color="grey", lw=0.3)
ax.set(title=f"{len(p_cu) - 1} windows of <= 112 x 112 px on {ph} x {pw}", xlabel="x (px)", ylabel="y (px)")
plt.tight_layout()
plt.show()
print("window sizes (tokens):", (torch.diff(p_cu) // 4).tolist())

# %% [markdown]
# **2. Cost of a windowed layer vs a full one.** Counting a multiply-add as 2 FLOPs, the scores $QK^\top$ and the
# mix $AV$ of one layer over $n$ patches of width $d$ cost $4n^2 d$ (V6, derivation 7). A windowed layer does the
# same inside each window $w$ of $n_w \le 64$ patches:
#
# $$C_{\text{win}} = 4d\sum_w n_w^2 \;\le\; 4d \cdot 64 \sum_w n_w = 4d \cdot 64\, n,$$
#
# linear in $n$, against $C_{\text{full}} = 4dn^2$. The ratio is $C_{\text{full}}/C_{\text{win}} \ge n/64$: at 1024
# patches (448 x 448) a full layer costs 16 times a windowed one, at 62 208 patches (12 MP) 972 times. The linear
# layers ($2nP$, $P$ the parameters) are the same in both. The whole ViT has 4 full and 28 windowed layers:
# $C_{\text{ViT}} = 4\,C_{\text{full}} + 28\,C_{\text{win}}$, so at large $n$ the four full layers dominate and the
# saving tends to $32/4 = 8$ times, not 972 (printed in 6.3). This function counts both exactly from the
# windows the index produces:

# %%
def attention_flops(grid: torch.Tensor, d: int = 1280) -> tuple[int, int]:
    """(full, windowed) FLOPs of one attention layer (scores + mix), 4 d sum(n_seg^2), from the segments."""
    full = 4 * d * int((torch.diff(full_cu_seqlens(grid)) ** 2).sum())
    win = 4 * d * int((torch.diff(window_index(grid)[1]) ** 2).sum())
    return full, win


for side in (448, 896, 1792):
    f_, w_ = attention_flops(torch.tensor([[1, side // 14, side // 14]]))
    print(f"{side} x {side}: {(side // 14) ** 2:5d} patches, full {f_ / 1e9:8.1f} GFLOPs, windowed {w_ / 1e9:6.2f}, "
          f"ratio {f_ / w_:.0f} (n/64 = {(side // 14) ** 2 / 64:.0f})")

# %% [markdown]
# **3. Packed attention with two kinds of `cu_seqlens`.** Several images (and the temporal patches of a video)
# are packed into one sequence (NaViT, V6). A full-attention layer attends inside each temporal patch of each
# input (`cu_seqlens` from `grid_thw`); a windowed layer inside each window (`cu_window_seqlens`). Both are
# block-diagonal masks over the packed sequence, `shared.attention.block_diagonal_mask(cu)`, and both run through
# one varlen kernel, `shared.kernels.flash_attention(q, k, v, cu_seqlens=cu)`. For the windowed segments to be
# contiguous, the patches are **permuted into window order once**, before the first block (the merge blocks of 4
# patches move together); the full-attention segments stay contiguous after that permutation, because windows
# never cross an image or a temporal patch, so the same permuted sequence serves both layer kinds. The 2D RoPE
# tables are permuted with the patches, and the merger's output is permuted back with the inverse index
# (`argsort`).

# %%
grids = torch.tensor([[1, 12, 20], [2, 8, 8], [1, 10, 14]])  # an image, a 2-tube video, an image (k, 3)
b_widx, b_cu_win = window_index(grids)
b_cu_full = full_cu_seqlens(grids)
patch_perm = (b_widx[:, None] * MERGE**2 + torch.arange(MERGE**2)).flatten()  # (n,) merged order -> patches
m_full, m_win = block_diagonal_mask(b_cu_full), block_diagonal_mask(b_cu_win)
print(f"packed: {int(b_cu_full[-1])} patches; full-attention segments {torch.diff(b_cu_full).tolist()}")
print(f"window segments ({len(b_cu_win) - 1}): {torch.diff(b_cu_win).tolist()}")
print(f"attended pairs: full {int(m_full.sum())}, windowed {int(m_win.sum())} "
      f"({m_win.sum() / m_full.sum():.1%}); every window lies inside one full segment: "
      f"{bool((m_win <= m_full[patch_perm][:, patch_perm]).all())}")

# %% [markdown]
# **4. RMSNorm and SwiGLU in the ViT block.** Qwen2-VL's block (V6, derivation 4) is
# $x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x))$, $x \leftarrow x + W_2\,\mathrm{QuickGELU}(W_1 \mathrm{LN}(x))$ with
# LayerNorm $\mathrm{LN}(x) = \gamma \odot (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta$ and width-5120 MLP. Qwen2.5-VL
# keeps the pre-norm structure and 2D RoPE but uses
#
# $$\mathrm{RMSNorm}(x) = \gamma \odot \frac{x}{\sqrt{\tfrac{1}{C}\sum_j x_j^2 + \epsilon}}, \qquad
# \mathrm{SwiGLU}(x) = W_{\text{down}}\big(\mathrm{SiLU}(W_{\text{gate}}x + b_g) \odot (W_{\text{up}}x + b_u)\big) + b_d,$$
#
# with $\mathrm{SiLU}(z) = z\,\sigma(z)$, $\epsilon = 10^{-6}$, and biases on all three projections (as in
# `Qwen2_5_VLMLP(config, bias=True)`; the LLM's MLP has none). RMSNorm drops the mean and the bias: one statistic
# instead of two. SwiGLU has three matrices instead of two, so for the same parameter count the hidden width is
# $2/3$ of the GELU MLP's: the released `intermediate_size` is 3420 ($\approx \tfrac{2}{3} \cdot 5120 = 3413$), giving
# $3 \cdot 1280 \cdot 3420 = 13.13$M weights per block against Qwen2-VL's $2 \cdot 1280 \cdot 5120 = 13.11$M. The
# paper's Table 1 (v1) lists the ViT intermediate size as **3456** for all three sizes, which would give
# $3 \cdot 1280 \cdot 3456 = 13.27$M; the released checkpoints hold **3420** (the 3B and 7B `config.json`, and the
# 7B's weight shapes, `gate_proj` 1280 -> 3420, as printed in public code; the 72B's files were not read here). The
# weights are what runs, so 3420 is right for the released models and this reading uses it; the table's 3456 may
# describe an earlier design or be a slip (6.1 sets the two side by side). The
# merger also switches its pre-norm to RMSNorm (`Qwen2_5_VLPatchMerger.ln_q`). The code below reads the weights of
# a `transformers` block, so that the check section can compare outputs.

# %%
def rope_vision(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """2D RoPE (V6 derivation 3) on (n, heads, d) with tables (n, d)."""
    return apply_rope(x, cos[:, None], sin[:, None])


def vit_block(blk, x: torch.Tensor, cos, sin, cu: torch.Tensor, heads: int) -> torch.Tensor:
    """One Qwen2.5-VL ViT block on packed patches x (n, C); attention inside the segments of cu."""
    n, C = x.shape
    d = C // heads
    h = rms_norm(x, blk.norm1.weight, eps=1e-6)  # RMSNorm, no mean, no bias
    q, k, v = F.linear(h, blk.attn.qkv.weight, blk.attn.qkv.bias).reshape(n, 3, heads, d).unbind(1)
    q, k = rope_vision(q, cos, sin), rope_vision(k, cos, sin)  # (n, heads, d)
    a = flash_attention(*(t.transpose(0, 1)[None] for t in (q, k, v)), cu_seqlens=cu)  # (1, heads, n, d)
    x = x + F.linear(a[0].transpose(0, 1).reshape(n, C), blk.attn.proj.weight, blk.attn.proj.bias)
    h = rms_norm(x, blk.norm2.weight, eps=1e-6)
    gate = F.silu(F.linear(h, blk.mlp.gate_proj.weight, blk.mlp.gate_proj.bias))  # SiLU(W_g x + b_g)
    return x + F.linear(gate * F.linear(h, blk.mlp.up_proj.weight, blk.mlp.up_proj.bias),
                        blk.mlp.down_proj.weight, blk.mlp.down_proj.bias)


# %% [markdown]
# **5. The whole tower.** Patch embedding (a `Conv3d` with kernel = stride = (2, 14, 14) and no bias, i.e. a
# linear map of each 1176-value tube, V6 derivation 2); permute into window order; 2D RoPE tables from each patch's
# (row, column), permuted the same way; 32 blocks, the full-attention ones on `cu_seqlens`, the others on
# `cu_window_seqlens`; the merger (RMSNorm, concatenate the 4 patches of a merge block, Linear-GELU-Linear); undo
# the permutation. One subtlety of `transformers`: its `last_hidden_state` stays in **window order**; only the
# merged tokens (`pooler_output`) are put back in the processor's order.

# %%
def vit25_forward(tower, rows: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch features (n, C) in window order and merged tokens (n/4, d_llm) in input order."""
    cfg = tower.config
    C, heads = cfg.hidden_size, cfg.num_heads
    x = rows @ tower.patch_embed.proj.weight.reshape(C, -1).T  # (n, C): Conv3d as a linear map
    w_idx, cu_win = window_index(grid)
    perm = (w_idx[:, None] * MERGE**2 + torch.arange(MERGE**2)).flatten()  # (n,) patches in window order
    cos, sin = vision_rope_cos_sin(vision_position_ids(grid, MERGE)[perm], C // heads)  # (n, d) each
    x, cu_full = x[perm], full_cu_seqlens(grid)
    for i, blk in enumerate(tower.blocks):
        x = vit_block(blk, x, cos, sin, cu_full if i in cfg.fullatt_block_indexes else cu_win, heads)
    m = tower.merger
    z = rms_norm(x, m.ln_q.weight, eps=1e-6).reshape(-1, MERGE**2 * C)  # (n/4, 4C): 4 rows of a block
    z = F.linear(F.gelu(F.linear(z, m.mlp[0].weight, m.mlp[0].bias)), m.mlp[2].weight, m.mlp[2].bias)
    return x, z[torch.argsort(w_idx)]  # tokens back in the processor's (merge-block raster) order


# %% [markdown]
# **6. Time-aligned M-RoPE (§2.1.3).** A video of $T$ temporal patches (tubes of 2 frames) sampled at $f$ frames
# per second has tubes $\Delta = 2/f$ seconds apart: the processor passes this as `second_per_grid_ts`
# ($= \texttt{temporal\_patch\_size}/f$, `processing_qwen2_5_vl.py`). With `tokens_per_second` $\tau$ (2 in the 3B and
# 7B `vision_config`), tube $i$ gets the temporal id
#
# $$p_t(i) = s + \lfloor i\,\Delta\,\tau \rfloor, \qquad \text{so} \qquad \frac{p_t(i) - s}{\tau} \approx i\Delta = \text{the tube's start time in seconds}.$$
#
# One id is half a second, whatever $f$. Qwen2-VL's id is $s + i$: one id per tube, i.e. per $2/f$ seconds. The
# height and width ids are unchanged ($s + h$, $s + w$ over the merged grid), and text and images are as in
# Qwen2-VL (V6, derivation 5). The floor is taken **after** multiplying: `transformers` 5.23
# (`Qwen2_5_VLModel.get_vision_position_ids`) computes `(arange(T) * interval).long()` with
# `interval = tokens_per_second * second_per_grid_ts`. Some 5.x releases before the installed one cast
# `second_per_grid_ts` to an integer first, which truncates 0.5 s (4 fps) to 0 and gives every tube the same id; that was fixed by
# [transformers PR #48669](https://github.com/huggingface/transformers/pull/48669) ("Fix Qwen2.5-VL temporal RoPE
# for fractional video intervals"), so the installed version matters for any clip sampled above 2 fps.
# `shared.mrope.mrope_position_ids(..., tokens_per_second=2, second_per_grid_ts=...)` implements the reference
# rule of the Qwen team's code (§7): the next block starts at the largest id + 1. So does the function below, written for one sequence:

# %%
def mrope25_ids(types: list[int], grids: list[list[int]], seconds: list[float], tps: float = 2.0) -> torch.Tensor:
    """(3, seq) ids for token types (0 text, 1 image, 2 video); videos use seconds-per-tube (derivation 6)."""
    cols, start, i, grids, secs = [], 0, 0, iter(grids), iter(seconds)
    while i < len(types):
        if types[i] == 0:
            ids = torch.full((3, 1), start)
            i += 1
        else:
            t, h, w = next(grids)
            t_ids = torch.arange(t) if types[i] == 1 else torch.floor(torch.arange(t) * next(secs) * tps).long()
            tt, hh, ww = torch.meshgrid(t_ids, torch.arange(h // MERGE), torch.arange(w // MERGE), indexing="ij")
            ids = torch.stack([tt, hh, ww]).reshape(3, -1) + start
            i += ids.shape[1]
        cols.append(ids)
        start = int(ids.max()) + 1  # the next block starts at the largest id + 1
    return torch.cat(cols, dim=1)


# the same 8 s of video at three frame rates, 24 x 24 patches per frame (12 x 12 tokens)
clips = {f: [int(8 * f) // TEMPORAL, 24, 24] for f in (1.0, 2.0, 4.0)}  # fps: grid (T, h, w)
for f, g in clips.items():
    ids = mrope25_ids([0] + [2] * (g[0] * 144) + [0], [g], [TEMPORAL / f])
    tube_ids = ids[0, 1:-1:144].tolist()
    print(f"{f:.0f} fps: {g[0]:2d} tubes, second_per_grid {TEMPORAL / f:.1f} s, temporal ids {tube_ids}; "
          f"text after the video starts at {int(ids[0, -1])}")

# %% [markdown]
# At every frame rate the tube that starts at second $x$ gets id $1 + 2x$ (the 1 is the text token before it): the
# id measures time. The last tube starts one tube before the end (at 6, 7 or 7.5 s), so the text after the clip
# starts at 14, 16 or 17; Qwen2-VL's tube-index ids for the same 8 seconds would end at 4, 8 or 16.
#
# **7. Dynamic FPS sampling.** Training samples videos at varying frame rates ("dynamic FPS sampling", §2.1.2),
# which is what makes the time-aligned ids necessary. At inference the official `qwen-vl-utils`
# (`vision_process.py` in the official repository: `FPS = 2.0`, `FPS_MIN_FRAMES = 4`, `FPS_MAX_FRAMES = 768`,
# `FRAME_FACTOR = 2`) picks $n = \lfloor \min(\max(N/f_{\text{video}} \cdot f, 4), 768, N)/2 \rfloor \cdot 2$ frames
# from the $N$ frames of a video at $f_{\text{video}}$ fps, at `linspace(0, N - 1, n).round()`, and reports
# `sample_fps` $= n/N \cdot f_{\text{video}}$; `second_per_grid_ts` is then $2/\texttt{sample\_fps}$. Two frames make one
# tube, so $n$ is kept even. Each sampled frame is then resized by
# `smart_resize` within `VIDEO_MIN_PIXELS` $= 128 \cdot 28^2$ and `VIDEO_MAX_PIXELS` $= 768 \cdot 28^2$ (128 to 768
# tokens per tube), the upper bound lowered to `VIDEO_TOTAL_PIXELS / n * 2` (floored at $1.05\,\times$ the lower
# bound) so that the whole clip fits `VIDEO_TOTAL_PIXELS` $= 128000 \cdot 28^2 \cdot 0.9$ (an environment
# variable; the source comment ties it to a 128K-token context): a long video gets fewer pixels per frame as
# well as a lower frame rate. `transformers`' `Qwen2VLVideoProcessor.sample_frames` (used by Qwen2.5-VL) computes
# the same $n$ but takes the frames at `arange(0, N, N/n).int()`, and only when asked: the class attribute
# `do_sample_frames = False` (`video_processing_qwen2_vl.py`, line 130 in 5.23, "for BC") means a video handed to
# the `transformers` processor keeps every frame it was given unless the caller passes `do_sample_frames=True`
# (or samples beforehand, e.g. with `qwen-vl-utils`), so a user expecting `qwen-vl-utils`' 2 fps gets all frames
# (`second_per_grid_ts` then follows from the frames' metadata via `VideoMetadata.sampled_fps`, which falls back
# to 24 fps when no fps is known). Both samplers are transcribed here (the processor module
# imports `torchvision`, which the course does not install); the check section compares them, and
# `second_per_grid_ts` through `transformers`' own `VideoMetadata.sampled_fps`.

# %%
def qvu_frames(total: int, video_fps: float, fps: float = 2.0, min_frames: int = 4,
               max_frames: int = 768) -> torch.Tensor:
    """qwen-vl-utils smart_nframes + linspace sampling (transcribed): indices of the sampled frames."""
    lo = math.ceil(min_frames / 2) * 2
    hi = math.floor(min(max_frames, total) / 2) * 2
    n = math.floor(min(max(total / video_fps * fps, lo), hi, total) / 2) * 2
    return torch.linspace(0, total - 1, n).round().long()


def hf_frames(total: int, video_fps: float, fps: float = 2.0, min_frames: int = 4,
              max_frames: int = 768) -> torch.Tensor:
    """transformers Qwen2VLVideoProcessor.sample_frames with fps (transcribed from 5.23)."""
    max_frames = math.floor(min(max_frames, total) / 2) * 2
    n = min(max(total / video_fps * fps, min_frames), max_frames, total)
    n = math.floor(n / 2) * 2
    return torch.arange(0, total, total / n).int()


for total, vfps in [(90, 30.0), (250, 25.0), (1800, 30.0), (30000, 25.0)]:
    a, b = qvu_frames(total, vfps), hf_frames(total, vfps)
    sample_fps = len(a) / total * vfps
    print(f"{total / vfps:6.0f} s at {vfps:.0f} fps: {len(a):3d} frames ({len(a) // 2:3d} tubes), sample_fps "
          f"{sample_fps:.3f}, second_per_grid {2 / sample_fps:.3f} s; first indices qwen-vl-utils "
          f"{a[:4].tolist()}, transformers {b[:4].tolist()}")

# %% [markdown]
# ## Walkthrough
#
# ### 6.1 The released ViT, counted
#
# `Qwen2_5_VisionTransformerPretrainedModel` built on the meta device (no memory, no download) with the released
# `vision_config` shapes (width 1280, 32 blocks, 16 heads, SwiGLU width 3420, merger to the LLM width 2048 / 3584 /
# 8192 for 3B / 7B / 72B). The merger width cannot be otherwise: its output tokens replace `<|image_pad|>`
# embeddings in the LLM's input, so it must equal the LLM's hidden size (Table 1 lists the same out channels). The
# paper gives no ViT parameter count, so the counts below are computed from these shapes, not quoted. The first
# lines set Table 1's ViT row beside the released config: they agree except for the intermediate size
# (derivation 4). Note that the `transformers` class defaults are *not* these: `Qwen2_5_VLVisionConfig()`
# has `hidden_size` 3584 and `tokens_per_second` 4 (its docstring even says 41 and a `window_size` of 11, while the
# field's default is 112), so a tiny or default config does not describe a checkpoint.

# %%
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

RELEASED_VIT = dict(depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420, patch_size=14,
                    window_size=112, fullatt_block_indexes=FULL_LAYERS, tokens_per_second=2)
TABLE1_VIT = dict(depth=32, hidden_size=1280, num_heads=16, intermediate_size=3456, patch_size=14,
                  window_size=112, fullatt_block_indexes=[7, 15, 23, 31])  # paper v1, Table 1 (same for all sizes)
for key, val in TABLE1_VIT.items():
    print(f"{key:22s} Table 1 {str(val):16s} released config {str(RELEASED_VIT[key]):16s}"
          f"{'' if val == RELEASED_VIT[key] else '  <- differs: the weights hold the config value'}")
print("tokens_per_second      not in Table 1   released config", RELEASED_VIT["tokens_per_second"])
vit_params = {}
with torch.device("meta"):
    for name, width in [("3B", 2048), ("7B", 3584), ("72B", 8192)]:
        vit = Qwen2_5_VisionTransformerPretrainedModel(Qwen2_5_VLVisionConfig(**RELEASED_VIT, out_hidden_size=width))
        vit_params[name] = sum(p.numel() for p in vit.parameters())
        body = sum(p.numel() for p in vit.blocks.parameters())
        print(f"Qwen2.5-VL-{name:3s} ViT {vit_params[name] / 1e6:6.1f}M (32 blocks {body / 1e6:.1f}M, "
              f"merger {sum(p.numel() for p in vit.merger.parameters()) / 1e6:.1f}M)")
default_cfg = Qwen2_5_VLVisionConfig()
print("class defaults:", {k: getattr(default_cfg, k) for k in ("hidden_size", "tokens_per_second", "window_size")})
block = 2 * 1280 + (1280 * 3840 + 3840) + (1280**2 + 1280) + 2 * (1280 * 3420 + 3420) + 3420 * 1280 + 1280
assert sum(p.numel() for p in vit.blocks.parameters()) == 32 * block  # derivation 4, written out
print(f"per block: {block:,} parameters (RMSNorms 2 x 1280, qkv, proj, SwiGLU with biases)")

# %% [markdown]
# ### 6.2 What window attention saves as the image grows
#
# Derivation 2 on square images from 224 to 4032 px and the 12 MP phone photo (3024 x 4032, under the
# `qwen-vl-utils` limit of 16384 tokens it keeps its size), with the released widths: attention FLOPs of the whole
# ViT if all 32 layers were full (Qwen2-VL's layout) and with Qwen2.5-VL's 4 full + 28 windowed, beside the linear
# layers ($2nP$, P = the 32 blocks' weights).

# %%
P_LIN = 32 * (1280 * 3840 + 1280**2 + 3 * 1280 * 3420)  # weights of the linear layers in the 32 blocks
cost_rows = []
print(f"{'image (px)':>12s} {'patches':>8s} | {'32 full':>9s} {'4 full+28 win':>14s} {'saving':>7s} | "
      f"{'linear':>8s}  (TFLOPs)")
for h, w in [(224, 224), (448, 448), (896, 896), (1792, 1792), (3024, 4032), (4032, 4032)]:
    g = torch.tensor([[1, h // 14, w // 14]])
    full1, win1 = attention_flops(g)
    all_full, qwen25 = 32 * full1, 4 * full1 + 28 * win1
    n = int(g.prod())
    cost_rows.append((n, full1, win1))
    print(f"{h:>5d} x {w:<5d} {n:>8d} | {all_full / 1e12:9.2f} {qwen25 / 1e12:14.2f} {all_full / qwen25:6.1f}x | "
          f"{2 * n * P_LIN / 1e12:8.2f}")
    if (h, w) == (3024, 4032):
        mp12 = (all_full / 1e12, qwen25 / 1e12, 2 * n * P_LIN / 1e12, 4 * full1 / qwen25)
print(f"12 MP: attention {mp12[0]:.0f} TFLOPs with 32 full layers -> {mp12[1]:.0f} with 4 full + 28 windowed "
      f"({mp12[0] / mp12[1]:.1f}x); the 4 full layers are {mp12[3]:.1%} of what is left; linear layers {mp12[2]:.0f}")

# %% [markdown]
# At 448 x 448 the saving is 5.6x but the attention (0.17 TFLOPs all-full) is small next to the linear layers
# (1.29) anyway; at 12 MP the attention falls from 634 to 80 TFLOPs, and of the remaining 80 almost all is the
# four full layers (their share tends to 100% as $n$ grows, so the saving tends to 8x). The linear layers (78
# TFLOPs at 12 MP) are not touched by windowing, so at 12 MP the whole ViT goes from about 712 to about 158
# TFLOPs of these two kinds of work.
#
# **Measured time** of one attention layer (one head of width 80, as the released model's 1280/16; float32,
# PyTorch SDPA) over $n$ patches, full vs windowed (all windows full here, batched as $(n/64, 1, 64, 80)$): one
# warm-up call, then the median of 7 timed calls per point. Timings depend on the machine and its load, so this
# cell's output is not checked; it asserts only what survives noise: at the largest size, full attention is more
# than 3 times slower than windowed (the FLOPs ratio there is 100).

# %% tags=["nbval-ignore-output"]
def median_time(fn, repeats: int = 7) -> float:
    """Seconds per call: one warm-up call, then the median of `repeats` timed calls."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


timing = {"n": [], "full": [], "window": []}
gen = torch.Generator().manual_seed(0)
with torch.no_grad():
    for side in (224, 448, 672, 896, 1120):
        n = (side // 14) ** 2
        q, k, v = torch.randn(3, 1, 1, n, 80, generator=gen).unbind(0)  # (1, 1, n, 80) each
        qw, kw, vw = (t.reshape(n // 64, 1, 64, 80) for t in (q, k, v))  # windows (n/64, 1, 64, 80)
        timing["n"].append(n)
        timing["full"].append(median_time(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v)))
        timing["window"].append(median_time(lambda q=qw, k=kw, v=vw: F.scaled_dot_product_attention(q, k, v)))
t_slope = {m: np.polyfit(np.log(timing["n"]), np.log(timing[m]), 1)[0] for m in ("full", "window")}
print("patches:", timing["n"])
print("full (ms):  ", [round(1e3 * t, 2) for t in timing["full"]])
print("window (ms):", [round(1e3 * t, 2) for t in timing["window"]])
print(f"on this machine: log-log slopes full {t_slope['full']:.2f}, window {t_slope['window']:.2f}; "
      f"full / windowed at {timing['n'][-1]} patches {timing['full'][-1] / timing['window'][-1]:.0f}x")
assert timing["full"][-1] > 3 * timing["window"][-1]  # robust: the FLOPs ratio at 6400 patches is 100

# %% [markdown]
# The plot: derivation 2's FLOPs per layer (left, from the table's rows) and the measured times (right), on
# log-log axes, where a slope of 1 is linear and a slope of 2 quadratic. This cell prints only what does not
# depend on the machine: the fitted FLOPs slopes and the FLOPs ratio at the largest timed size.

# %%
flop_n = np.array([r[0] for r in cost_rows], dtype=float)
f_slope = {"full": np.polyfit(np.log(flop_n), np.log([r[1] for r in cost_rows]), 1)[0],
           "window": np.polyfit(np.log(flop_n), np.log([r[2] for r in cost_rows]), 1)[0]}
f_big, w_big = attention_flops(torch.tensor([[1, 80, 80]]))  # 6400 patches, the largest timed size
print(f"log-log slope of FLOPs per layer: full {f_slope['full']:.3f}, window {f_slope['window']:.3f}; "
      f"FLOPs ratio full / windowed at 6400 patches: {f_big / w_big:.0f}")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
axes[0].loglog(flop_n, [r[1] / 1e9 for r in cost_rows], "o-", label="full layer: 4 d n^2")
axes[0].loglog(flop_n, [r[2] / 1e9 for r in cost_rows], "s-", label="windowed layer: 4 d sum n_w^2")
axes[0].set(xlabel="patches n", ylabel="GFLOPs per layer (d = 1280)", title="attention FLOPs (derivation 2)")
axes[1].loglog(timing["n"], [1e3 * t for t in timing["full"]], "o-", label="full")
axes[1].loglog(timing["n"], [1e3 * t for t in timing["window"]], "s-", label="windowed (64-patch windows)")
axes[1].set(xlabel="patches n", ylabel="ms, median of 7 (this machine)", title="measured attention time, 1 head of 80")
for ax, ticks in [(axes[0], [256, 1024, 4096, 16384, 82944]), (axes[1], timing["n"])]:
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# FLOPs: slope exactly 2 for full attention and 1 for windows (the windows are all full on these sizes; partial
# windows only lower the constant), so the ratio grows as $n/64$: 100 at 6400 patches. The measured times keep
# the ordering, full above windowed and growing faster, but their slopes and the size of the gap depend on the
# machine, the PyTorch kernel and the load (at these sizes fixed per-call overheads and cache effects still
# matter, and a CPU SDPA kernel is not FLOP-bound), so they are printed above for this run and not quoted here.
#
# ### 6.3 Time ids for two frame rates, drawn
#
# Derivation 6 for the 8-second clip of above at 1 fps (4 tubes, 2 s apart) and at 8 fps (32 tubes, 0.25 s apart),
# and Qwen2-VL's tube-index ids for the same clips: temporal id against the tube's start time. With time-aligned
# ids both frame rates lie on one line (slope $\tau = 2$ ids per second; 1 fps drawn filled, 8 fps hollow); with
# tube-index ids the slope is $f/2$ ids per second, 0.5 at 1 fps and 4 at 8 fps. Two frame rates other than 4 are
# drawn because at **4 fps the two schemes coincide**: a tube lasts $\Delta = 2/4 = 0.5$ s, so
# $\lfloor i\,\Delta\,\tau\rfloor = \lfloor i \cdot 0.5 \cdot 2\rfloor = i$, the tube index itself (the cell checks
# it): Qwen2-VL's ids are what the time-aligned rule gives a 4 fps video. At 8 fps, $\Delta\tau = 0.5$: the floor gives consecutive tubes the
# same id in pairs (0, 0, 1, 1, ...), the staircase of the hollow squares; the ids cannot resolve less than half a
# second.

# %%
ids_4fps = torch.floor(torch.arange(16) * (TEMPORAL / 4.0) * 2).long()
assert torch.equal(ids_4fps, torch.arange(16))  # at 4 fps time-aligned ids equal the tube index
print("4 fps: time-aligned ids = tube index:", bool(torch.equal(ids_4fps, torch.arange(16))),
      "| 8 fps, first 8 time-aligned ids:", torch.floor(torch.arange(8) * (TEMPORAL / 8.0) * 2).long().tolist())
fig, ax = plt.subplots(figsize=(6.4, 3.4))
for f, style, color in [(1.0, "o", "tab:blue"), (8.0, "s", "tab:orange")]:
    T = int(8 * f) // TEMPORAL
    start_s = torch.arange(T) * TEMPORAL / f  # seconds at which each tube starts
    ax.plot(start_s, torch.floor(torch.arange(T) * (TEMPORAL / f) * 2), style + "-", color=color, ms=7 if f == 1 else 4,
            mfc=color if f == 1 else "none", label=f"{f:.0f} fps, time-aligned")
    ax.plot(start_s, torch.arange(T), style + ":", color=color, ms=4, alpha=0.6, label=f"{f:.0f} fps, tube index (Qwen2-VL)")
ax.set(xlabel="tube start time (s)", ylabel="temporal id - start", title="temporal ids of an 8 s clip")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 6.4 Grounding in absolute pixel coordinates
#
# Qwen2-VL wrote a box as `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` with coordinates in $[0, 1000)$ of the image
# (V6 §6.8). Qwen2.5-VL answers in plain text, typically JSON such as
# `[{"bbox_2d": [x1, y1, x2, y2], "label": "..."}]`, in **pixels of the image the model saw**, i.e. after
# `smart_resize` (§2.2.1). To draw on the original $H \times W$ photo, the official cookbook
# (`cookbooks/spatial_understanding.ipynb`, `plot_bounding_boxes`, read from public copies of it: the notebook
# itself is not in the mirror read here) scales by the ratio of the sides:
# $x_{\text{orig}} = x \cdot W / W'$, $y_{\text{orig}} = y \cdot H / H'$, with $(H', W')$ = the resized size
# (`image_grid_thw` $\times 14$). The two conventions on the same box:
#
# $$x_{\text{orig}} = \frac{x_{2.5}}{W'}\,W \qquad\text{vs}\qquad x_{\text{orig}} = \frac{x_{2}}{1000}\,W .$$
#
# The strings below are written by hand in the format the model emits (no model is run here), for the grace_hopper
# photo at its `smart_resize` size; the parser strips the Markdown fence and reads the JSON.

# %%
answer_25 = """```json
[
  {"bbox_2d": [134, 52, 372, 327], "label": "head"},
  {"bbox_2d": [18, 330, 488, 588], "label": "uniform jacket"}
]
```"""
answer_2 = "<|object_ref_start|>head<|object_ref_end|><|box_start|>(266,88),(738,556)<|box_end|>"


def parse_json_boxes(text: str) -> list[dict]:
    """The JSON list inside a ```json fence (or the bare text), as the cookbook's parse_json does."""
    m = re.search(r"```json\s*(.*?)```", text, re.S)
    return json.loads(m.group(1) if m else text)


def parse_qwen2_boxes(text: str) -> list[tuple[str, list[int]]]:
    """Qwen2-VL's <|object_ref|> ... <|box|>(x1,y1),(x2,y2) format: (label, [x1, y1, x2, y2]) in [0, 1000)."""
    pat = r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|><\|box_start\|>\((\d+),(\d+)\),\((\d+),(\d+)\)<\|box_end\|>"
    return [(m[0], [int(v) for v in m[1:]]) for m in re.findall(pat, text)]


H0, W0 = photo.height, photo.width  # (600, 512): the original photo
Hr, Wr = smart_resize(H0, W0)  # (588, 504): what the model sees
to_orig_25 = lambda b: [b[0] * W0 / Wr, b[1] * H0 / Hr, b[2] * W0 / Wr, b[3] * H0 / Hr]  # noqa: E731
to_orig_2 = lambda b: [b[0] * W0 / 1000, b[1] * H0 / 1000, b[2] * W0 / 1000, b[3] * H0 / 1000]  # noqa: E731
boxes = [(d["label"], to_orig_25(d["bbox_2d"])) for d in parse_json_boxes(answer_25)]
boxes_2 = [(lab, to_orig_2(b)) for lab, b in parse_qwen2_boxes(answer_2)]
for lab, b in boxes + [(lab + " (Qwen2-VL string)", b) for lab, b in boxes_2]:
    print(f"{lab:28s} original-pixel box {[round(v, 1) for v in b]}")
phone = smart_resize(3024, 4032)  # the class defaults (1280-token cap)
print(f"a 12 MP photo is seen at {phone[0]} x {phone[1]}: its resized coordinates are {4032 / phone[1]:.2f}x too small")

fig, ax = plt.subplots(figsize=(4.2, 4.8))
ax.imshow(photo)
for (lab, b), color in zip(boxes, ["tab:red", "tab:cyan"], strict=True):
    ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color=color, lw=2))
    ax.text(b[0] + 3, b[1] + 14, lab, color=color, fontsize=8, weight="bold")
for _lab, b in boxes_2:
    ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color="yellow", lw=1, ls="--"))
ax.set(title=f"boxes from {Hr} x {Wr} coords, drawn on {H0} x {W0}", xlabel="x (px)", ylabel="y (px)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The red head box and the dashed yellow Qwen2-VL-style box are the same region written two ways (about 136 to
# 378 px horizontally). Two consequences of absolute coordinates: the numbers mean pixels only for the resized
# image, so a caller that changes `min_pixels`/`max_pixels` must rescale with the size actually used (the
# processor's `image_grid_thw`), not with the original; and the same object in a bigger image gets bigger
# numbers, which lets the model read scale from the coordinates (the paper's motivation, §2.2.1). Drawing the
# resized coordinates directly on the original photo is the classic bug: here it would shift boxes by up to
# 2% (600/588), and by the factor printed above for a 12 MP photo under the class-default 1280-token cap.

# %% [markdown]
# ### 6.5 How it was trained, what the paper reports, and the limits
#
# Nothing here is rerun (it needs the data and the compute); the numbers are the paper's, cited by section and
# table of v1.
#
# **The ViT is trained from scratch** (§2.1.1: "CLIP pre-training, vision-language alignment, and end-to-end
# fine-tuning", at native resolutions with images sampled by their aspect ratios; §2.2.2: initialised "using
# DataComp and some in-house datasets"), unlike Qwen2-VL's, which started from a pre-trained ViT. The LLM starts
# from Qwen2.5. **Pre-training** has three phases (§2.2.2, Table 2), about 4.1T tokens in all (Table 1, "# Trained
# Tokens 4.1T"; §2.2.1 says "approximately 4 trillion", against Qwen2-VL's 1.2 trillion):
#
# | phase | trained | data added | tokens | sequence length |
# |---|---|---|---|---|
# | visual pre-training | ViT only | image captions, visual knowledge, OCR | 1.5T | 8192 |
# | multimodal pre-training | ViT and LLM | pure text, interleaved data, VQA, multimodal math, video, grounding, agent | 2T | 8192 |
# | long-context pre-training | ViT and LLM | long video, long agent trajectories, long documents | 0.6T | 32 768 |
#
# Samples are packed by their length in the LLM so that every GPU gets a similar load (§2.2.2). **The data**
# (§2.2.1) that matters for this reading: grounding boxes and points written in the input image's own pixel
# coordinates, over 10 000 object categories, in JSON, XML and custom formats; videos trained with "dynamically
# sampled FPS ... to achieve a more evenly distributed representation of FPS", long-video captions for videos
# over half an hour, and timestamps written in seconds and in hour-minute-second-frame form. Also interleaved
# image-text data scored by an internal model on four criteria, document "omni-parsing" into HTML with a
# `data-bbox` per element, multilingual OCR, charts and tables, and GUI-agent trajectories.
#
# **Post-training** (§2.3): SFT on about 2 million entries, half pure text and half multimodal, in ChatML,
# filtered in two stages (a Qwen2-VL-72B-derived classifier into 8 domains and 30 subcategories, then rule- and
# reward-model-based filters) and enriched by rejection sampling of chain-of-thought answers; then DPO on
# image-text and pure-text preference data, "each sample processed only once". Both stages keep the ViT frozen
# (§2.3.4).
#
# **Results on what this reading teaches.** Video grounding: on Charades-STA the 72B reaches 50.9 mIoU (7B 43.6,
# 3B 38.8) against GPT-4o's 35.7 (Table 8). Long video: LVBench 47.3 for the 72B against GPT-4o's 30.8 and
# Gemini 1.5 Pro's 33.1, but Video-MME without subtitles 73.3 against Gemini 1.5 Pro's 75.0 (Table 8; all video
# benchmarks run with at most 768 frames and 24 576 video tokens per video, §3.3.4). Grounding: RefCOCO val 92.7
# for the 72B (InternVL2.5-78B: 93.7), ODinW-13 43.1 mAP, CountBench 93.6 (Tables 6 and 7). The report has no
# ablation of window attention, of RMSNorm/SwiGLU, of the positions of the four full layers or of the time
# alignment, so none of these numbers can be attributed to one mechanism, and none is reproduced here.
#
# **Limits.**
#
# - **Time resolution is half a second.** The ids are $\lfloor i\Delta\tau\rfloor$ with $\tau = 2$: above 4 fps,
#   consecutive tubes share an id (6.3), and two events less than 0.5 s apart cannot be told apart by their
#   position alone. The id range also grows with duration, about 7200 ids for an hour (Misconceptions).
# - **The ids carry time only if the model uses them.** Users report that Qwen2.5-VL often infers time from the
#   content rather than from the ids: [QwenLM/Qwen3-VL#893](https://github.com/QwenLM/Qwen3-VL/issues/893)
#   ("rather than perceiving absolute time, the model tends to estimate time based on its understanding of the
#   picture content", after asking the 7B for the length of 200 Momentor-10M videos), and shifted timestamps in
#   [QwenLM/Qwen3-VL#752](https://github.com/QwenLM/Qwen3-VL/issues/752), where a maintainer recommends "an fps of
#   at least 2 for inference". Qwen3-VL went back to textual timestamps (Lineage).
# - **The ViT stays quadratic.** Four full layers remain, so the saving is at most 8x (6.2), and the windows
#   cannot see across a 112-pixel boundary except in those four layers.
# - **Coordinates depend on the resize.** Boxes are meaningful only together with the `min_pixels`/`max_pixels`
#   the processor used (6.4).
# - **Versions matter.** The released configs differ from Table 1 (3420 vs 3456), and `transformers` releases
#   differ in how they compute the video ids (derivation 6, §7).

# %% [markdown]
# ## Check against a reference
#
# Everything above against `transformers` 5.23.0: `vision_utils.get_vision_window_index`,
# `get_vision_cu_seqlens`, `get_vision_position_ids`; `Qwen2_5_VLVisionBlock`, `Qwen2_5_VLRMSNorm`,
# `Qwen2_5_VLMLP`, `Qwen2_5_VLPatchMerger`, `Qwen2_5_VisionTransformerPretrainedModel`,
# `Qwen2_5_VLModel.get_rope_index`, `Qwen2_5_VLForConditionalGeneration`, built from tiny random configs; and the
# course's `shared` module.
#
# **The window index** against `get_vision_window_index` (which the tower's `forward` calls; in 5.23 it is a
# function of `vision_utils`, where 4.x releases had the method
# `Qwen2_5_VisionTransformerPretrainedModel.get_window_index`, not re-checked here) on grids that divide
# by the window, grids that do not (in one or both directions), a one-token image, a video, and a batch of all
# of them packed together. `transformers` pads each grid up to a multiple of 4 merged tokens (a full empty window
# when it already divides: `pad = 4 - h % 4`), drops the padding, and removes the resulting repeated boundaries with
# `unique_consecutive`; the sort above never creates an empty window.

# %%
from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

test_grids = [[1, 16, 16], [1, 8, 8], [1, 10, 14], [1, 6, 22], [1, 2, 2], [1, 42, 36], [3, 12, 20], [2, 18, 10]]
for g in test_grids + [None]:
    grid = torch.tensor(test_grids if g is None else [g])
    ours, cu = window_index(grid)
    ref, ref_cu = get_vision_window_index(grid, spatial_merge_size=MERGE, window_size=WINDOW_PX, patch_size=PATCH)
    assert torch.equal(ours, ref) and cu.tolist() == ref_cu.tolist(), g
    assert full_cu_seqlens(grid).tolist() == get_vision_cu_seqlens(grid).tolist()
    assert torch.equal(vision_position_ids(grid, MERGE), get_vision_position_ids(grid, MERGE))
print(f"window index and cu_window_seqlens equal get_vision_window_index on {len(test_grids)} grids and their batch; "
      f"full cu_seqlens equal get_vision_cu_seqlens; {len(cu) - 1} windows in the batch")

# %% [markdown]
# **The padded-window quirk, and why it does not matter.** On an 8 x 8 merged grid (divisible) `transformers`
# builds a 12 x 12 padded grid, i.e. 9 windows of which 5 are empty; their zero lengths repeat the last
# boundary, and `unique_consecutive` removes the repeats. A kernel given the repeated boundaries would see empty
# segments (which `shared.kernels.flash_attention` accepts), so the result would be the same either way; the loop
# of the eager path in `transformers` (`torch.split` by lengths) also tolerates zeros. The check above shows the
# final boundaries are identical.
#
# **Packed attention with both `cu_seqlens`**, through `shared.kernels.flash_attention` (which runs the Triton
# kernel on a GPU and the PyTorch reference on a CPU), against a dense softmax with the block-diagonal mask of
# `shared.attention`, and against `transformers`' per-segment loop (`Qwen2_5_VLVisionAttention` without
# FlashAttention splits the packed sequence at the boundaries and attends inside each piece): the batch of three
# inputs of derivation 3 in window order.

# %% tags=["nbval-ignore-output"]
n_pack = int(b_cu_full[-1])
qp, kp, vp = torch.randn(3, 1, 2, n_pack, 16, generator=torch.Generator().manual_seed(3)).unbind(0)
print("shared.kernels backend on this machine:", backend(qp, kp, vp))

# %%
def segment_loop(q, k, v, cu):
    """transformers' non-flash path: split at the boundaries, plain softmax attention in each piece."""
    parts = [F.scaled_dot_product_attention(*(t[:, :, a:b] for t in (q, k, v)))
             for a, b in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)]
    return torch.cat(parts, dim=2)


for name, cu in [("full", b_cu_full), ("window", b_cu_win)]:
    kern = flash_attention(qp, kp, vp, cu_seqlens=cu)
    mask = block_diagonal_mask(cu)  # (n, n)
    scores = (qp @ kp.transpose(-1, -2)) / 4.0 + torch.where(mask, 0.0, float("-inf"))
    dense = torch.softmax(scores, -1) @ vp
    e1 = assert_close(kern, dense, atol=1e-5, name=f"{name} kernel vs masked softmax")
    e2 = assert_close(kern, segment_loop(qp, kp, vp, cu), atol=1e-5, name=f"{name} kernel vs segment loop")
    print(f"{name:6s} attention over {len(cu) - 1:2d} segments: kernel vs masked softmax {error_bound(e1, 1e-5)}, "
          f"vs per-segment loop {error_bound(e2, 1e-5)}")

# %% [markdown]
# **RMSNorm, SwiGLU, the block and the merger** against `Qwen2_5_VLRMSNorm`, `Qwen2_5_VLMLP`, a whole
# `Qwen2_5_VLVisionBlock` and a stand-alone `Qwen2_5_VLPatchMerger` (RMSNorm, 4 rows concatenated, Linear-GELU-
# Linear) of a tiny config (width 64, 4 heads, SwiGLU width 96), with window-attention
# `cu_seqlens` and the 2D RoPE tables of `transformers`' `Qwen2_5_VLVisionRotaryEmbedding`. Then a contrast that
# must fail: Qwen2-VL's LayerNorm + QuickGELU computation on the same weights gives a different output.

# %%
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VLPatchMerger,
    Qwen2_5_VLRMSNorm,
    Qwen2_5_VLVisionBlock,
)

tiny_vit = Qwen2_5_VLVisionConfig(depth=4, hidden_size=64, num_heads=4, intermediate_size=96, out_hidden_size=48,
                                  fullatt_block_indexes=[1, 3], window_size=112, tokens_per_second=2)
torch.manual_seed(0)
tblk = Qwen2_5_VLVisionBlock(tiny_vit).eval()
with torch.no_grad():
    for prm in tblk.parameters():  # random norms and biases too, so that none of them is a no-op
        prm.add_(0.1 * torch.randn_like(prm))
grid1 = torch.tensor([[1, 10, 14]])
n1 = int(grid1.prod())
x1 = torch.randn(n1, 64)
tower_tmp = Qwen2_5_VisionTransformerPretrainedModel(tiny_vit).eval()
cos1, sin1 = tower_tmp.rotary_pos_emb(x1, get_vision_position_ids(grid1, MERGE))  # transformers' 2D RoPE tables
assert_close(cos1, vision_rope_cos_sin(vision_position_ids(grid1, MERGE), 16)[0], atol=1e-6, name="vision cos")
_, cu1 = window_index(grid1)
with torch.no_grad():
    norm_ref = Qwen2_5_VLRMSNorm(64)
    norm_ref.weight.copy_(tblk.norm1.weight)
    e_norm = assert_close(rms_norm(x1, tblk.norm1.weight, eps=1e-6), norm_ref(x1), atol=1e-6, name="RMSNorm")
    e_mlp = assert_close(F.linear(
        F.silu(F.linear(x1, tblk.mlp.gate_proj.weight, tblk.mlp.gate_proj.bias))
        * F.linear(x1, tblk.mlp.up_proj.weight, tblk.mlp.up_proj.bias), tblk.mlp.down_proj.weight,
        tblk.mlp.down_proj.bias), tblk.mlp(x1), atol=1e-5, name="SwiGLU")
    ref_blk = tblk(x1, cu_seqlens=cu1.int(), position_embeddings=(cos1, sin1))
    ours_blk = vit_block(tblk, x1, cos1, sin1, cu1, heads=4)
    e_blk = assert_close(ours_blk, ref_blk, atol=1e-5, name="ViT block")
    ln = lambda t: F.layer_norm(t, (64,), eps=1e-6)  # noqa: E731  (Qwen2-VL's norm, affine-free here)
    h = ln(x1)
    q, k, v = F.linear(h, tblk.attn.qkv.weight, tblk.attn.qkv.bias).reshape(n1, 3, 4, 16).unbind(1)
    q, k = rope_vision(q, cos1, sin1), rope_vision(k, cos1, sin1)
    a = flash_attention(*(t.transpose(0, 1)[None] for t in (q, k, v)), cu_seqlens=cu1)[0].transpose(0, 1)
    y2 = x1 + F.linear(a.reshape(n1, 64), tblk.attn.proj.weight, tblk.attn.proj.bias)
    hh = F.linear(ln(y2), tblk.mlp.up_proj.weight, tblk.mlp.up_proj.bias)
    qwen2_style = y2 + F.linear(hh * torch.sigmoid(1.702 * hh), tblk.mlp.down_proj.weight, tblk.mlp.down_proj.bias)
    pm = Qwen2_5_VLPatchMerger(dim=48, context_dim=64, spatial_merge_size=MERGE).eval()  # stand-alone merger
    for prm in pm.parameters():
        prm.add_(0.1 * torch.randn_like(prm))
    zm = rms_norm(x1, pm.ln_q.weight, eps=1e-6).reshape(-1, MERGE**2 * 64)  # (n/4, 256): 4 rows of a block
    ours_pm = F.linear(F.gelu(F.linear(zm, pm.mlp[0].weight, pm.mlp[0].bias)), pm.mlp[2].weight, pm.mlp[2].bias)
    e_pm = assert_close(ours_pm, pm(x1), atol=1e-5, name="PatchMerger")
gap = (qwen2_style - ref_blk).abs().max().item()
assert gap > 0.1
print(f"RMSNorm {error_bound(e_norm)}, SwiGLU {error_bound(e_mlp, 1e-5)}, whole block {error_bound(e_blk, 1e-5)}, "
      f"merger {tuple(ours_pm.shape)} {error_bound(e_pm, 1e-5)}; a LayerNorm + QuickGELU block on the same weights "
      f"is off by {gap:.2f}")

# %% [markdown]
# **The whole vision tower** (4 blocks, blocks 1 and 3 full attention): `vit25_forward` with our window index,
# our `cu_seqlens`, `shared.mrope`'s 2D RoPE tables and `shared.kernels.flash_attention`, against the tower's own
# `forward`, on a batch of two images (one not divisible by the window) and a 3-tube video, packed. Random
# processor-order rows stand in for pixels (the pixel pipeline is V6's and is unchanged). Both outputs are
# compared: the patch features in window order, the merged tokens in input order. Then two wrong inputs that
# must move the output: every layer windowed (no full layers), and the windows left in raster order.

# %%
torch.manual_seed(1)
tower = Qwen2_5_VisionTransformerPretrainedModel(tiny_vit).eval()
with torch.no_grad():
    for prm in tower.parameters():
        prm.add_(0.05 * torch.randn_like(prm))
e2e_grid = torch.tensor([[1, 10, 14], [1, 16, 8], [3, 8, 12]])  # (3, 3): image, image, 3-tube video
rows = torch.randn(int(e2e_grid.prod(-1).sum()), 3 * TEMPORAL * PATCH * PATCH)  # (n, 1176)
with torch.no_grad():
    ref_out = tower(rows, grid_thw=e2e_grid)
    feats, tokens = vit25_forward(tower, rows, e2e_grid)
    e_feat = assert_close(feats, ref_out.last_hidden_state, atol=1e-4, name="tower features (window order)")
    e_tok = assert_close(tokens, ref_out.pooler_output, atol=1e-4, name="tower merged tokens")
    tower.config.fullatt_block_indexes = []  # wrong: every layer windowed
    no_full = vit25_forward(tower, rows, e2e_grid)[1]
    tower.config.fullatt_block_indexes = [1, 3]
print(f"tower on {len(rows)} packed patches: features {tuple(feats.shape)} {error_bound(e_feat, 1e-4)}, "
      f"tokens {tuple(tokens.shape)} {error_bound(e_tok, 1e-4)}")
moved = (no_full - ref_out.pooler_output).abs().max().item()
assert moved > 1e-2
print(f"without the full-attention layers the tokens move by {moved:.3f}")

# %% [markdown]
# **Time-aligned M-RoPE ids** against `Qwen2_5_VLModel.get_rope_index` (with `second_per_grid_ts`) and
# `shared.mrope.mrope_position_ids` (with `tokens_per_second=2`): a padded batch of two sequences, one with an
# image and the 8-second clip at 1 fps, one with the same clip at 4 fps and 2 fps. With derivation 6's 12 x 12
# merged tokens per tube the clips' temporal offsets (12 to 15) reach the merged side of 12, which is where
# `transformers` 5.23's start rule departs from the reference rule, "largest id + 1" (in the 5.23 source,
# `modeling_qwen2_5_vl.py` line 1034, `get_rope_index` advances `current_pos += max(grid_thw[1], grid_thw[2]) //
# spatial_merge_size` after a vision block, so the text after a video starts at start + max(h, w)/2). So this
# comparison uses frames of 40 x 40 patches (20 x 20
# merged tokens), where both rules agree; the departure is shown right after.

# %%
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

tiny_text = dict(hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=64, bos_token_id=0, eos_token_id=1,
                 rope_parameters={"rope_type": "default", "rope_theta": 100.0,
                                                                        "mrope_section": [4, 6, 6]})
IMG, VID, VSTART, VEND = 60, 61, 62, 63
vl_cfg = Qwen2_5_VLConfig(vision_config=tiny_vit.to_dict() | {"out_hidden_size": 64}, text_config=tiny_text,
                          image_token_id=IMG, video_token_id=VID, vision_start_token_id=VSTART,
                          vision_end_token_id=VEND)
qwen25 = Qwen2_5_VLModel(vl_cfg).eval()
big = {f: [int(8 * f) // TEMPORAL, 40, 40] for f in (1.0, 2.0, 4.0)}  # 400 tokens per tube
tok = lambda g: g[0] * g[1] * g[2] // MERGE**2  # noqa: E731
seq_a = [0] * 3 + [1] * 6 + [0] * 2 + [2] * tok(big[1.0]) + [0] * 4  # text, image 1x4x6, text, 1 fps clip, text
seq_b = [0] * 2 + [2] * tok(big[4.0]) + [0] * 3 + [2] * tok(big[2.0]) + [0] * 2  # 4 fps clip, text, 2 fps clip
L = max(len(seq_a), len(seq_b))
types_batch = torch.tensor([[0] * (L - len(seq_a)) + seq_a, [0] * (L - len(seq_b)) + seq_b])  # left padding
attn = torch.tensor([[0] * (L - len(seq_a)) + [1] * len(seq_a), [0] * (L - len(seq_b)) + [1] * len(seq_b)])
img_grid = torch.tensor([[1, 4, 6]])
vid_grid = torch.tensor([big[1.0], big[4.0], big[2.0]])
spg = torch.tensor([TEMPORAL / 1.0, TEMPORAL / 4.0, TEMPORAL / 2.0])  # second_per_grid_ts
ref_ids, ref_delta = qwen25.get_rope_index(torch.zeros_like(types_batch), types_batch, image_grid_thw=img_grid,
                                           video_grid_thw=vid_grid, second_per_grid_ts=spg, attention_mask=attn)
sh_ids, sh_delta = mrope_position_ids(types_batch, img_grid, vid_grid, attn, tokens_per_second=2,
                                      second_per_grid_ts=spg)
ours_a = mrope25_ids(seq_a, [[1, 4, 6], big[1.0]], [2.0])
ours_b = mrope25_ids(seq_b, [big[4.0], big[2.0]], [0.5, 1.0])
assert torch.equal(ref_ids[:, 0, L - len(seq_a):], ours_a) and torch.equal(ref_ids[:, 1, L - len(seq_b):], ours_b)
assert torch.equal(ref_ids * attn, sh_ids * attn) and torch.equal(ref_delta.reshape(-1), sh_delta.reshape(-1))
print(f"padded batch {tuple(types_batch.shape)}: ids equal get_rope_index and shared.mrope; rope_deltas "
      f"{ref_delta.reshape(-1).tolist()}")
for name, ids, lo in [("1 fps", ours_a, 11), ("4 fps", ours_b, 2)]:
    print(f"  {name} clip: temporal ids of its tubes {ids[0, lo:lo + tok(big[1.0 if name == '1 fps' else 4.0]):400].tolist()}")

# %% [markdown]
# Where 5.23's start rule departs (the clips at 12 x 12 merged tokens of derivation 6): the reference rule and
# `shared.mrope` start the text after the 8-second clip at 14, 16 or 17 (1, 2, 4 fps); `get_rope_index` starts it
# at 13 (= 1 + 12 merged columns) at every frame rate, inside the video's temporal range (up to 13, 15 or 16).
#
# **When it fires.** With start $s$, $T$ tubes $\Delta$ s apart and a merged grid $H' \times W'$, $M' = \max(H', W')$,
# the largest id of the video is $s + \max(\lfloor (T-1)\Delta\tau\rfloor, M' - 1)$. The two rules give the same
# start, $s + M'$, as long as $\lfloor (T-1)\Delta\tau\rfloor \le M' - 1$; they differ once
# $\lfloor (T-1)\Delta\tau\rfloor \ge M'$, i.e. (with $\tau = 2$) once **the last tube starts at or after $M'/2$
# seconds**: here 6 s for $M' = 12$, 12 s for $M' = 24$ (a 672-pixel side). Most real videos are longer.
# With Qwen2-VL's tube-index ids it needed more tubes than merged columns, which is rarer. Images never trigger it
# (their temporal id is constant).
#
# **Which is right: largest id + 1.** It is a regression in `transformers`, not a second reading of the paper:
#
# - The Qwen team's own contribution of Qwen2.5-VL to `transformers`,
#   [PR #35569](https://github.com/huggingface/transformers/pull/35569) ("add qwen2.5vl", by ShuaiBai623, January
#   2025), documents it in `get_rope_index`'s docstring: "Here we calculate the text start position_ids
#   as the max vision position_ids plus one", and codes it as `st_idx = llm_pos_ids_list[-1].max() + 1`. That is
#   the implementation the model's authors contributed when the checkpoints came out, and the rule the Qwen2-VL
#   paper states (§2.1:
#   "incrementing the maximum position ID of the preceding modality by one").
# - [Issue #45381](https://github.com/huggingface/transformers/issues/45381) ("transformers==5.3.0, qwen2.5-vl video
#   input vision_position_ids seems to be wrong") prints both for a video after 15 text tokens, with a merged grid
#   of 12 x 16: in v5.2.0 the video's temporal ids end at 347 and the text starts at **348** (= max + 1); on the
#   `main` of that time (>= 5.3) the text starts at **31** (= 15 + 16 merged columns). The fix merged for that
#   issue ([PR #45400](https://github.com/huggingface/transformers/pull/45400), "Fix Qwen2.5VL temporal grid
#   positions") repaired the video's temporal ids, which were constant in that output, but line 1034 of 5.23
#   still holds the `max(h, w) // merge` start, as the cell below shows.
#
# `shared.mrope` (and `mrope25_ids` here) follow PR #35569. `qwen-vl-utils` only samples and resizes; the ids come
# from whichever `transformers` release is installed, so a video prompt's positions depend on that version. In
# the end-to-end check below the clips stay short enough that both rules agree.

# %%
for f, g in clips.items():
    kinds = [0] + [2] * tok(g) + [0]
    hf_next = int(qwen25.get_rope_index(torch.zeros(1, len(kinds), dtype=torch.long), torch.tensor([kinds]),
                                        video_grid_thw=torch.tensor([g]),
                                        second_per_grid_ts=torch.tensor([TEMPORAL / f]))[0][0, 0, -1])
    sh_next = int(mrope_position_ids(torch.tensor([kinds]), video_grid_thw=torch.tensor([g]), tokens_per_second=2,
                                     second_per_grid_ts=[TEMPORAL / f])[0][0, 0, -1])
    ours_next = int(mrope25_ids(kinds, [g], [TEMPORAL / f])[0, -1])
    print(f"{f:.0f} fps: text after the clip starts at {ours_next} (ours), {sh_next} (shared.mrope), "
          f"{hf_next} (transformers 5.23)")
    assert ours_next == sh_next > hf_next == 13

# %% [markdown]
# **End to end: the whole `Qwen2_5_VLForConditionalGeneration`** (tiny: the 4-block tower above, a 1-layer LLM of
# width 64 with `rope_theta` 100 so that positions move the logits visibly, weights drawn with std 0.1), on a
# **padded batch of two prompts**: prompt A holds the grace_hopper photo and a clip sampled at 1 fps, prompt B
# (longer, so A is left-padded) the same clip sampled at 2 fps. The two sides share only the weights and the video rows:
#
# - **the reading's side**: our own preprocessing (`smart_resize`, bicubic resize, CLIP normalisation,
#   `patchify` below), `vit25_forward` for the vision tokens written into the text embeddings, and position ids
#   from `shared.mrope.mrope_position_ids` with `tokens_per_second=2` and our `second_per_grid_ts` from
#   `qvu_frames`; the LLM is called with `inputs_embeds` and `position_ids` only;
# - **the model's side**: `input_ids`, `attention_mask`, `mm_token_type_ids`, the image processor's
#   `pixel_values` and `image_grid_thw` (`Qwen2VLImageProcessorPil`, which Qwen2.5-VL uses), the video rows and
#   grids, and `second_per_grid_ts`: the model runs its own tower and computes its own rope index.
#
# The video rows cannot come from `transformers`' video processor (it imports `torchvision`, which the course does
# not install), so the model is given our video rows; their layout is checked independently against a plain
# `Conv3d` over the whole clip, which never sees `patchify`. The source clip is 4 s at 30 fps (120 frames: the
# photo at 196 x 196 px sliding 2 px per frame); `qwen-vl-utils` sampling at 1 fps keeps 4 frames (2 tubes,
# `second_per_grid_ts` 2.0 s, temporal ids 0, 4), at 2 fps 8 frames (4 tubes, 1.0 s, ids 0, 2, 4, 6). With
# 7 x 7 merged tokens per tube the temporal ids stay below the merged side, where `transformers`' start rule and the
# reference's agree (the departure is the previous cell's).

# %%
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def normalise(frame: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """PIL frame -> resized (bicubic) to size = (H', W'), scaled to [0, 1], CLIP-normalised: (3, H', W')."""
    x = np.asarray(frame.resize((size[1], size[0]), Image.BICUBIC), dtype=np.float32) / 255.0  # (H', W', 3)
    return torch.from_numpy((x - CLIP_MEAN) / CLIP_STD).permute(2, 0, 1)


def patchify(frames: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """(T, 3, H, W) frames -> rows (T/2 * H/14 * W/14, 1176) in merge-block order, and the grid (t, h, w)."""
    T, C, H, W = frames.shape
    t, gh, gw = T // TEMPORAL, H // PATCH, W // PATCH
    x = frames.reshape(t, TEMPORAL, C, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # t, block row, block col, row in block, col in block | C, frame, py, px
    return x.reshape(t * gh * gw, C * TEMPORAL * PATCH * PATCH), [t, gh, gw]


SMALL = 28 * 28 * 48  # a small max_pixels, so that the check runs in a second
img_size = smart_resize(photo.height, photo.width, max_pixels=SMALL)  # (196, 168)
img_rows, img_g = patchify(normalise(photo, img_size)[None].repeat(TEMPORAL, 1, 1, 1))  # an image = 2 equal frames
proc = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=SMALL)(images=[photo], return_tensors="pt")
e_pix = assert_close(img_rows, proc["pixel_values"], atol=1e-5, name="pixel_values")
assert img_g == proc["image_grid_thw"][0].tolist()

square = photo.resize((196, 196), Image.BICUBIC)
source = [Image.fromarray(np.roll(np.asarray(square), 2 * i, axis=1)) for i in range(120)]  # 4 s at 30 fps
clips_e2e, vid_rows, vid_gs, spg_e2e = {}, [], [], []
for f in (1.0, 2.0):
    idx = qvu_frames(len(source), 30.0, fps=f)  # dynamic FPS sampling (derivation 7)
    frames = torch.stack([normalise(source[i], (196, 196)) for i in idx.tolist()])  # (n, 3, 196, 196)
    rows_f, g_f = patchify(frames)
    clips_e2e[f] = frames
    vid_rows.append(rows_f)
    vid_gs.append(g_f)
    spg_e2e.append(TEMPORAL * len(source) / (len(idx) * 30.0))  # 2 / sample_fps
with torch.no_grad():  # layout of the video rows vs a Conv3d over the whole clip (C, T, H, W)
    w_pe = 0.05 * torch.randn(8, 3, TEMPORAL, PATCH, PATCH, generator=torch.Generator().manual_seed(7))
    conv = F.conv3d(clips_e2e[2.0].permute(1, 0, 2, 3)[None], w_pe, stride=(TEMPORAL, PATCH, PATCH))[0]
    t_of_row = torch.arange(vid_gs[1][0]).repeat_interleave(vid_gs[1][1] * vid_gs[1][2])
    rc = vision_position_ids(torch.tensor([vid_gs[1]]), MERGE)  # (n, 2): (row, col) of each row, merge order
    e_conv = assert_close(vid_rows[1] @ w_pe.reshape(8, -1).T, conv[:, t_of_row, rc[:, 0], rc[:, 1]].T, atol=1e-4,
                          name="video rows vs Conv3d")
print(f"image {img_size}: our rows {tuple(img_rows.shape)} vs the image processor's {error_bound(e_pix, 1e-5)}, "
      f"grid {img_g}; video grids {vid_gs}, second_per_grid_ts {spg_e2e}; video rows vs Conv3d "
      f"{error_bound(e_conv, 1e-4)}")

# %% [markdown]
# The prompts, the padded batch, and the two forwards. `tok` counts the merged tokens of a grid.

# %%
torch.manual_seed(2)
vl_cfg.text_config.initializer_range = 0.1  # std 0.1 instead of 0.02: attention far from uniform
vl_cfg.vision_config.initializer_range = 0.1
vlm = Qwen2_5_VLForConditionalGeneration(vl_cfg).eval()
n_img, n_v1, n_v2 = tok(img_g), tok(vid_gs[0]), tok(vid_gs[1])
prompt_a = [5, 6, 7, VSTART] + [IMG] * n_img + [VEND, 8, 9, VSTART] + [VID] * n_v1 + [VEND, 10, 11]
prompt_b = [5, 6, VSTART] + [VID] * n_v2 + [VEND, 12, 13, 14]
L_e2e = max(len(prompt_a), len(prompt_b))
input_ids = torch.tensor([[0] * (L_e2e - len(p)) + p for p in (prompt_a, prompt_b)])  # (2, L): left padding
attn_e2e = torch.tensor([[0] * (L_e2e - len(p)) + [1] * len(p) for p in (prompt_a, prompt_b)])
mm = (input_ids == IMG).long() + 2 * (input_ids == VID).long()  # (2, L): 0 text, 1 image, 2 video
img_grid_t, vid_grid_t = torch.tensor([img_g]), torch.tensor(vid_gs)
ref_kw = dict(input_ids=input_ids, attention_mask=attn_e2e, mm_token_type_ids=mm, image_grid_thw=img_grid_t,
              pixel_values=proc["pixel_values"], pixel_values_videos=torch.cat(vid_rows), video_grid_thw=vid_grid_t,
              second_per_grid_ts=torch.tensor(spg_e2e))
e2e_ids, _ = mrope_position_ids(mm, img_grid_t, vid_grid_t, attn_e2e, tokens_per_second=2,
                                second_per_grid_ts=spg_e2e)  # (3, 2, L): ours, largest id + 1


def our_embeds(video_rows: list[torch.Tensor]) -> torch.Tensor:
    """Text embeddings with our vision tokens written at the pad positions, (2, L, 64)."""
    emb = vlm.get_input_embeddings()(input_ids)
    emb[input_ids == IMG] = vit25_forward(vlm.model.visual, img_rows, img_grid_t)[1]
    emb[input_ids == VID] = torch.cat([vit25_forward(vlm.model.visual, r, torch.tensor([g]))[1]
                                       for r, g in zip(video_rows, vid_gs, strict=True)])
    return emb


real = attn_e2e.bool()  # compare the logits of real tokens only (padding's are arbitrary)
with torch.no_grad():
    ref_logits = vlm(**ref_kw).logits  # (2, L, 64): the model's own tower and rope index
    embeds = our_embeds(vid_rows)
    our_logits = vlm(inputs_embeds=embeds, attention_mask=attn_e2e, position_ids=e2e_ids).logits
err_e2e = assert_close(our_logits[real], ref_logits[real], atol=1e-4, name="end-to-end logits")
vcols = [(mm[b] == 2).nonzero().squeeze(1) for b in range(2)]
print(f"batch {tuple(input_ids.shape)} (prompt A left-padded by {L_e2e - len(prompt_a)}): logits of the real tokens, "
      f"ours vs the model's own path {error_bound(err_e2e, 1e-4)}")
for b, name in [(0, "A, 1 fps"), (1, "B, 2 fps")]:
    print(f"  {name}: video temporal ids {sorted(set(e2e_ids[0, b, vcols[b]].tolist()))}, "
          f"last text ids {e2e_ids[0, b, -3:].tolist()}")

# %% [markdown]
# **The check is loud on what it claims to test.** Three wrong inputs on our side must move the logits of the
# real tokens by more than 100 times the tolerance: the videos' temporal ids as Qwen2-VL's tube index (no time
# scaling; the 2-tube clip then spans ids 0, 1 instead of 0, 4), the image's tokens left in window order (the
# inverse permutation forgotten), and prompt A's clip declared at 2 fps (`second_per_grid_ts` 1.0 instead of 2.0).

# %%
with torch.no_grad():
    wrong = {}
    tube_ids, _ = mrope_position_ids(mm, img_grid_t, vid_grid_t, attn_e2e)  # Qwen2-VL: no time scaling
    wrong["tube-index temporal ids"] = vlm(inputs_embeds=embeds, attention_mask=attn_e2e, position_ids=tube_ids)
    win_order = embeds.clone()
    win_order[input_ids == IMG] = embeds[input_ids == IMG][window_index(img_grid_t)[0]]
    wrong["image tokens in window order"] = vlm(inputs_embeds=win_order, attention_mask=attn_e2e,
                                                position_ids=e2e_ids)
    ids_2fps, _ = mrope_position_ids(mm, img_grid_t, vid_grid_t, attn_e2e, tokens_per_second=2,
                                     second_per_grid_ts=[1.0, spg_e2e[1]])
    wrong["clip A declared at 2 fps"] = vlm(inputs_embeds=embeds, attention_mask=attn_e2e, position_ids=ids_2fps)
for name, out in wrong.items():
    delta = (out.logits[real] - ref_logits[real]).abs().max().item()
    print(f"  {name:30s} moves the logits by {delta:.3f}")
    assert delta > 100 * 1e-4, name

# %% [markdown]
# **Frame sampling** (derivation 7): the two transcriptions pick the same number of frames, so the same
# `sample_fps`; `transformers`' own `VideoMetadata.sampled_fps` (from `video_utils`, importable without
# `torchvision`) gives `second_per_grid_ts` $= 2/\texttt{sampled\_fps}$, as `Qwen2_5_VLProcessor._process_videos`
# computes it. The indices themselves differ slightly (`linspace(...).round()` vs `arange(0, N, N/n)`), by at most
# one sampling step; the timestamps the model is told (via the ids) assume even spacing, which both give.

# %%
from transformers.video_utils import VideoMetadata

for total, vfps in [(90, 30.0), (250, 25.0), (61, 30.0), (1800, 30.0), (30000, 25.0), (7, 24.0)]:
    a, b = qvu_frames(total, vfps), hf_frames(total, vfps)
    assert len(a) == len(b) and len(a) % 2 == 0
    meta = VideoMetadata(total_num_frames=total, fps=vfps, frames_indices=b.tolist())
    assert abs(TEMPORAL / meta.sampled_fps - TEMPORAL * total / (len(a) * vfps)) < 1e-12
    step = total / len(a)
    assert (a - b).abs().max().item() <= step + 1
print("frame counts agree; second_per_grid_ts = 2 / VideoMetadata.sampled_fps; indices within one step")

# %% [markdown]
# ## Reproduction
#
# **(a) Linear vs quadratic cost.** The paper's claim (§2.1.1): windowed attention in most layers "ensures that
# computational cost scales linearly with the number of patches rather than quadratically"; the paper gives no
# speed or FLOPs number for it. Reproduced exactly in FLOPs (6.2): slopes 2.000 (full) and 1.000 (windowed) on
# these sizes, a per-layer ratio of $n/64$ (100 at 6400 patches), and a whole-ViT saving bounded by 8x because
# four layers stay full (7.9x at 12 MP). The measured CPU times (6.2, not checked) keep the ordering, and the
# notebook asserts only that full attention is more than 3 times slower than windowed at 6400 patches; their
# slopes and the size of the gap depend on the machine.
#
# **(b) A toy for time-aligned ids: can one attention score read elapsed time across frame rates?** The paper's
# claim (§2.1.3): "by leveraging the intervals between temporal IDs, the model is able to learn consistent
# temporal alignment across videos with different FPS sampling rates"; its evidence is benchmark-level, e.g.
# 50.9 mIoU for the 72B on Charades-STA temporal grounding against GPT-4o's 35.7 (Table 8, §3.3.4), with no
# ablation that switches the time alignment off. The toy isolates the mechanism: a video of 16 tubes sampled at
# 1, 2 or 4 fps (tubes 2, 1 or 0.5 s apart), two marked tubes A and B; the label is whether B is within 3 s of A.
# The model is one rotary attention score, $\text{logit} = a \cdot q^\top R(p_B - p_A) k/\sqrt{16} + b$ (16 dims,
# 8 frequencies $100^{-2j/16}$): exactly what a head can compute from positions alone, since RoPE makes the score a
# function of the id difference (F2). Two id schemes, everything else equal: **time-aligned** $p = \lfloor i\Delta\tau\rfloor$
# ($\tau = 2$) and **tube index** $p = i$ (Qwen2-VL). The ablation: the same two schemes when every video is at 2 fps
# (there the two are the same up to a factor 2, so both should succeed). Matched budget: per seed the same
# initial weights and the same 150 batches of 256 pairs for all four arms, Adam $0.05$, float64; 8 seeds run as a
# batch of independent models; accuracy on 4000 held-out pairs per seed. The exact ceiling of the tube-index code
# under mixed frame rates is computed by enumerating all (A, B, fps) triples: for each id difference the best
# constant answer.

# %%
torch.set_num_threads(1)  # a training cell: one thread, as every reading that trains
TOY_S, TOY_T, TOY_D, TOY_STEPS, TOY_B = 8, 16, 16, 150, 256
TOY_FPS = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
toy_theta = 100.0 ** (-torch.arange(0, TOY_D, 2, dtype=torch.float64) / TOY_D)  # (8,)


def toy_ids(i: torch.Tensor, fps: torch.Tensor, scheme: str) -> torch.Tensor:
    """Temporal ids of tubes i at frame rates fps: floor(i * (2 / fps) * 2) or the tube index."""
    return torch.floor(i * (TEMPORAL / fps) * 2) if scheme == "time-aligned" else i.double()


def toy_batch(n: int, gen: torch.Generator, mixed: bool):
    """(seeds, n) tubes A, B (distinct), frame rates, labels |t_B - t_A| <= 3 s."""
    a = torch.randint(0, TOY_T, (TOY_S, n), generator=gen)
    b = torch.randint(0, TOY_T - 1, (TOY_S, n), generator=gen)
    b = b + (b >= a)
    f = TOY_FPS[torch.randint(0, 3, (TOY_S, n), generator=gen)] if mixed else torch.full((TOY_S, n), 2.0,
                                                                                          dtype=torch.float64)
    return a, b, f, ((b - a).abs() * TEMPORAL / f <= 3.0).double()


def toy_rotate(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """RoPE (rotate-half) of x (S, D) at positions pos (S, n) -> (S, n, D)."""
    ang = pos[..., None] * toy_theta
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    return apply_rope(x[:, None].expand(-1, pos.shape[1], -1), cos, sin)


def toy_train(scheme: str, mixed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out accuracy (S,) and per-fps accuracy (3, S) of 8 seeds trained together."""
    init = torch.Generator().manual_seed(0)  # the same initial weights for every arm
    p = [torch.randn(TOY_S, TOY_D, generator=init, dtype=torch.float64).requires_grad_() for _ in range(2)]
    p += [torch.zeros(TOY_S, 1, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    opt = torch.optim.Adam(p, lr=0.05)
    data = torch.Generator().manual_seed(1)  # the same batches for every arm

    def logit(a, b, f):
        s = (toy_rotate(p[0], toy_ids(a, f, scheme)) * toy_rotate(p[1], toy_ids(b, f, scheme))).sum(-1)
        return p[2] * s / TOY_D**0.5 + p[3]  # (S, n)

    for _ in range(TOY_STEPS):
        a, b, f, y = toy_batch(TOY_B, data, mixed)
        loss = F.binary_cross_entropy_with_logits(logit(a, b, f), y, reduction="none").mean(1)
        opt.zero_grad()
        loss.sum().backward()  # independent seeds: each gets its own gradient
        opt.step()
    a, b, f, y = toy_batch(4000, torch.Generator().manual_seed(2), mixed)
    with torch.no_grad():
        hit = ((logit(a, b, f) > 0).double() == y).double()
    per_fps = torch.stack([(hit * (f == r)).sum(1) / (f == r).sum(1).clamp(min=1) for r in TOY_FPS.tolist()])
    return hit.mean(1), per_fps


# %% tags=["nbval-ignore-output"]
from tqdm.auto import tqdm

ARMS = [("time-aligned", True), ("tube index", True), ("time-aligned", False), ("tube index", False)]
toy_acc, toy_fps = {}, {}
for arm in tqdm(ARMS, desc="toy arms (8 seeds each)"):
    toy_acc[arm], toy_fps[arm] = toy_train(*arm)

# %%
pairs = [(a, b, f) for a in range(TOY_T) for b in range(TOY_T) if a != b for f in (1.0, 2.0, 4.0)]
by_delta = {}
for a, b, f in pairs:
    by_delta.setdefault(b - a, []).append(abs(b - a) * TEMPORAL / f <= 3.0)
ceiling = sum(max(sum(v), len(v) - sum(v)) for v in by_delta.values()) / len(pairs)
base = sum(sum(v) for v in by_delta.values()) / len(pairs)
print(f"exact ceiling of the tube-index code under mixed fps: {ceiling:.3f}; share of positives {base:.3f}")
print(f"{'ids':13s} {'frame rates':12s} {'mean':>6s} {'std':>6s} {'min':>6s} {'max':>6s} | per fps 1 / 2 / 4 (mean)")
for (scheme, mixed), acc in toy_acc.items():
    pf = " / ".join(f"{v:.3f}" for v in toy_fps[scheme, mixed].mean(1).tolist()) if mixed else "-"
    print(f"{scheme:13s} {'1, 2, 4' if mixed else '2 only':12s} {acc.mean():6.3f} {acc.std():6.3f} "
          f"{acc.min():6.3f} {acc.max():6.3f} | {pf}")

fig, ax = plt.subplots(figsize=(6.4, 3.2))
for k, acc in enumerate(toy_acc.values()):
    ax.scatter(torch.full((TOY_S,), k) + torch.linspace(-0.15, 0.15, TOY_S), acc, s=14)
ax.axhline(ceiling, color="grey", ls=":", lw=1)
ax.text(3.4, ceiling - 0.02, "tube-index ceiling", fontsize=7, color="grey", ha="right", va="top")
ax.set_xticks(range(4), [f"{s}\n{'1/2/4 fps' if m else '2 fps'}" for s, m in toy_acc])
ax.set(ylabel="held-out accuracy (8 seeds)", title="'B within 3 s of A?' from one rotary score", ylim=(0.5, 1.02))
plt.tight_layout()
plt.show()

# %% [markdown]
# With time-aligned ids every seed is perfect at all three frame rates: the id difference is twice the elapsed
# seconds, so one threshold on the rotary score separates the classes. With tube-index ids and mixed frame rates
# the same difference means 2, 1 or 0.5 s, and the head can only learn the best compromise: the 8 seeds reach 0.822 +- 0.016
# (0.796 to 0.840), i.e. the exact ceiling of 0.833 within the noise of 4000 held-out pairs (std about 0.006) and
# of training; worst at 4 fps (0.695), where one id step is only 0.5 s. The ablation shows where the gain comes from: at a single frame rate
# the tube index is as good as time (both 1.000), which is why Qwen2-VL, sampled at a fixed 2 fps, did not need
# it. This is the mechanism of the paper's claim at toy scale, not its benchmark numbers (the paper reports
# video-benchmark results for the full model, which cannot be rerun here); the toy also leaves out what a real
# model could use instead (the frame rate written in the prompt, or motion cues in the content; users report
# the released model leans on the content, 6.5).
#
# ### What a healthy run prints
#
# FLOPs slopes 2.000 (full) and 1.000 (windowed); at 12 MP the ViT's attention 634 TFLOPs with 32 full layers
# against 80 with Qwen2.5-VL's layout; ViT parameters 668.7M / 676.6M / 700.1M (3B / 7B / 72B); the toy's exact
# ceiling 0.833; time-aligned ids 1.000 on every seed with mixed frame rates; tube-index ids between 0.78 and
# the ceiling + 0.02 (held-out noise); both schemes 1.000 at a single frame rate.

# %%
full12, win12 = attention_flops(torch.tensor([[1, 216, 288]]))
healthy = {"FLOPs slope full": round(float(f_slope["full"]), 3), "FLOPs slope window": round(float(f_slope["window"]), 3),
           "12 MP attention TFLOPs, 32 full": round(32 * full12 / 1e12),
           "12 MP attention TFLOPs, 4 full + 28 win": round((4 * full12 + 28 * win12) / 1e12),
           "ViT params 7B (M)": round(vit_params["7B"] / 1e6, 1), "toy ceiling": round(ceiling, 3)}
for k_, v_ in healthy.items():
    print(f"{k_:40s} {v_}")
assert healthy == {"FLOPs slope full": 2.0, "FLOPs slope window": 1.0, "12 MP attention TFLOPs, 32 full": 634,
                   "12 MP attention TFLOPs, 4 full + 28 win": 80, "ViT params 7B (M)": 676.6, "toy ceiling": 0.833}
assert toy_acc["time-aligned", True].min() == 1.0
assert 0.78 < toy_acc["tube index", True].min() and toy_acc["tube index", True].max() <= ceiling + 0.02
assert toy_acc["time-aligned", False].min() == 1.0 and toy_acc["tube index", False].min() == 1.0

# %% [markdown]
# ## Misconceptions
#
# - **Claim (seed):** Qwen2.5-VL uses a "ViT-G/14 at 4096x4096 with NER + Hungarian entity alignment" (the
#   SYLLABUS row). The seed document it comes from (`paper-table-readme.txt`, Qwen2.5-VL row) says, in Chinese,
#   "采用ViT-G/14模型，分辨率提升至4096×4096，通过**patch合并策略**（16×16→32×32）减少计算量" and
#   "用NER模型识别文本实体 … 通过匈牙利算法实现实体匹配，对齐准确率提升至95%". **Correction:** the ViT is a
#   redesigned dynamic-resolution ViT trained from scratch, hidden size 1280, 32 layers, 16 heads, 14 x 14 patches
#   (Table 1; 676.6M parameters for the 7B, counted in 6.1), not a ViT-G; there is no fixed input size at all:
#   images keep their own size, resized to multiples of 28 within `min_pixels`/`max_pixels` (§2.1; V6
#   derivation 1); the merge is 2 x 2 patches into one token by an MLP (§2.1, `Qwen2_5_VLPatchMerger`), not
#   16x16 to 32x32; and vision and language meet only because the merged tokens replace `<|image_pad|>`
#   embeddings in the LLM's input. The paper describes no NER model, no entity-alignment module and no
#   Hungarian matching, and reports no "95%" alignment accuracy; grounding is learned from data written with
#   absolute coordinates, for which off-the-shelf Grounding DINO and SAM served only to synthesise training
#   data (§2.2.1, 6.4).
# - **Claim:** window attention makes the whole ViT linear in the pixel count. **Correction:** 28 layers are
#   linear, but 4 stay full (`fullatt_block_indexes` [7, 15, 23, 31]), so the total is still quadratic; the
#   saving over an all-full ViT tends to 8x, not to $n/64$ (6.2: 5.6x at 448 x 448, 7.9x at 12 MP).
# - **Claim:** windows are 112 x 112 patches, or 8 x 8 tokens. **Correction:** 112 x 112 *pixels* = 8 x 8 patches
#   = 4 x 4 merged tokens (derivation 1); border windows are smaller, not padded.
# - **Claim:** the processor's `max_pixels` ($28^2 \cdot 1280$ in `transformers`' class, or the README's example
#   `max_pixels = 1280*28*28`) is the model's limit. **Correction:** it is a default and an example; the README
#   itself says "You can set min_pixels and max_pixels according to your needs", and the official
#   `qwen-vl-utils` allows 4 to 16384 tokens per image (`MIN_PIXELS = 4 * 28 * 28`, `MAX_PIXELS = 16384 * 28 * 28`).
#   Likewise `tokens_per_second` is 2 in the 3B and 7B configs, not the class default 4.
# - **Claim:** a Qwen2.5-VL box is in [0, 1000) like Qwen2-VL's, or in pixels of the original image.
#   **Correction:** pixels of the resized image (6.4); rescale by $W/W'$, $H/H'$ with the size the processor used.
# - **Claim:** time-aligned M-RoPE gives each *frame* its timestamp. **Correction:** each *tube* of 2 frames, at
#   $\lfloor i \cdot \texttt{second\_per\_grid} \cdot 2\rfloor$ (derivation 6); two ids per second, so a 1-hour
#   video spans about 7200 temporal ids (at 30 fps `qwen-vl-utils` keeps its 768-frame cap: 384 tubes 9.375 s
#   apart, the last at id $\lfloor 383 \cdot 9.375 \cdot 2 \rfloor = 7181$).
# - **Interview trap:** "`last_hidden_state` of the vision tower is in the processor's patch order." In
#   `transformers` it is in window order; only `pooler_output` is permuted back (derivation 5, checked in §7).

# %% [markdown]
# ## Exercises
#
# 1. A 1000 x 1500 image under the class defaults: how many windows does the ViT use, and how many of them are
#    partial? Set `answer_1 = (windows, partial)`.
# 2. A 20-second clip at 30 fps, sampled by `qwen-vl-utils` at its default 2 fps: how many tubes, and what are the
#    temporal ids of its first three tubes (block start 0)? Set `answer_2 = (tubes, [id0, id1, id2])`.
# 3. At what number of patches $n$ (square images, all windows full) does one full-attention layer cost as much
#    as the 28 windowed layers together? Set `answer_3 = n`.
# 4. Why are windows cut on the merged 4 x 4 grid rather than on an 8 x 8 patch grid aligned anywhere? What would
#    break in the merger if a window boundary split a 2 x 2 merge block?

# %%
answer_1 = None  # (windows, partial windows)
answer_2 = None  # (tubes, [first three temporal ids])
answer_3 = None  # number of patches

if answer_1 is not None:
    h1, w1 = smart_resize(1000, 1500)
    sz = torch.diff(window_index(torch.tensor([[1, h1 // 14, w1 // 14]]))[1]) // 4
    print("exercise 1:", "correct" if answer_1 == (len(sz), int((sz < 16).sum())) else "not quite")
if answer_2 is not None:
    fr = qvu_frames(600, 30.0)
    ids2 = mrope_position_ids(torch.tensor([[2] * (len(fr) // 2)]), video_grid_thw=torch.tensor([[len(fr) // 2, 2, 2]]),
                              tokens_per_second=2, second_per_grid_ts=[2 * 600 / (len(fr) * 30.0)])[0][0, 0]
    print("exercise 2:", "correct" if answer_2 == (len(fr) // 2, ids2[:3].tolist()) else "not quite")
if answer_3 is not None:
    print("exercise 3:", "correct" if answer_3 == 28 * 64 else "not quite")

# %% [markdown]
# ### Worked answers (try first)
#
# 1. **(88, 18).** Rounding to multiples of 28 gives 1008 x 1512 = 1 524 096 px, above the class default
#    `max_pixels` $= 28^2 \cdot 1280 = 1\,003\,520$, so $\beta = \sqrt{1\,500\,000 / 1\,003\,520} = 1.223$ and the sides
#    become $\lfloor 1000/1.223/28 \rfloor \cdot 28 = 812$ and $\lfloor 1500/1.223/28 \rfloor \cdot 28 = 1204$: 58 x 86
#    patches, 29 x 43 merged tokens. Windows: $\lceil 29/4 \rceil \cdot \lceil 43/4 \rceil = 8 \cdot 11 = 88$. Partial:
#    the last window row is $29 - 28 = 1$ token high (11 windows), the last column $43 - 40 = 3$ tokens wide (8
#    windows), one window is both: $11 + 8 - 1 = 18$. The next cell computes it with `transformers`'
#    `get_vision_window_index`.
# 2. **(20, [0, 2, 4]).** 600 frames / 30 fps x 2 fps = 40 frames, 20 tubes 1 s apart; ids $\lfloor i \cdot 1 \cdot 2 \rfloor$.
# 3. **1792.** $4dn^2 = 28 \cdot 4d \cdot 64 n$ gives $n = 28 \cdot 64 = 1792$ patches (about 593 x 593 px).
# 4. The merger concatenates 4 consecutive rows of the permuted sequence; windows of whole merge blocks keep each
#    block's 4 patches adjacent and in one window, so the merger and the inverse permutation work on merged
#    tokens. A split block would have its 4 patches in two attention segments and not adjacent in the sequence.

# %%
h1, w1 = smart_resize(1000, 1500)
sz1 = torch.diff(get_vision_window_index(torch.tensor([[1, h1 // 14, w1 // 14]]), spatial_merge_size=2,
                                         window_size=112, patch_size=14)[1]) // 4  # transformers' windows
fr2 = qvu_frames(600, 30.0)
ref2 = qwen25.get_rope_index(torch.zeros(1, len(fr2) // 2, dtype=torch.long),
                             torch.full((1, len(fr2) // 2), 2), video_grid_thw=torch.tensor([[len(fr2) // 2, 2, 2]]),
                             second_per_grid_ts=torch.tensor([2 * 600 / (len(fr2) * 30.0)]))[0][0, 0]
assert (h1, w1, len(sz1), int((sz1 < 16).sum())) == (812, 1204, 88, 18)  # the worked answer, by hand
f3, w3 = attention_flops(torch.tensor([[1, 42, 42]]))  # 1764 patches, near 1792
print(f"1: {h1} x {w1} px -> {len(sz1)} windows, {int((sz1 < 16).sum())} partial; 2: {len(fr2) // 2} tubes, ids "
      f"{ref2[:3].tolist()}; 3: at 1764 patches one full layer / 28 windowed = {f3 / (28 * w3):.3f}")

# %% [markdown]
# ## References
#
# - Shuai Bai, Keqin Chen, Xuejing Liu, et al. *Qwen2.5-VL Technical Report.* arXiv:2502.13923v1, 2025: §2.1
#   (architecture: ViT with 2D RoPE and window attention, inputs resized to multiples of 28, 2 x 2 MLP merger),
#   §2.1.1 (window attention: four full layers, 112 x 112 windows = 8 x 8 patches, no padding), §2.1.2 (dynamic
#   FPS sampling, two consecutive frames grouped), §2.1.3 (M-RoPE aligned to absolute time), §2.2.1 (grounding data
#   with absolute position coordinates; pre-training data), §2.2.2 (training recipe), §2.3 (SFT, data filtering,
#   rejection sampling, DPO, §2.3.4 ViT frozen), §3.3.3-3.3.4 (grounding and video results); Table 1
#   (configuration), Table 2 (pre-training phases), Tables 6-8 (grounding, counting, video). Read from public
#   transcriptions of v1; the PDF was offline here.
# - Official code: [QwenLM/Qwen2.5-VL](https://github.com/QwenLM/Qwen2.5-VL) at `f0af299`: `README.md` (the quoted
#   summary of window attention, SwiGLU/RMSNorm, dynamic FPS and absolute time, absolute coordinates; the
#   `min_pixels`/`max_pixels` example), `qwen-vl-utils/src/qwen_vl_utils/vision_process.py` (`smart_resize`
#   and `VIDEO_*` limits, `smart_nframes`, frame sampling, `sample_fps`), `cookbooks/spatial_understanding.ipynb`
#   (`plot_bounding_boxes`: resized-to-original rescaling; read from public copies). Released `vision_config`:
#   [Qwen2.5-VL-7B-Instruct `config.json`](https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/blob/main/config.json)
#   (`window_size` 112, `fullatt_block_indexes` [7, 15, 23, 31], `tokens_per_second` 2, `intermediate_size` 3420;
#   the same vision values in the 3B's, merger width 2048; both read from copies in public code, the Hub being
#   offline here).
# - Upstream `transformers` threads on the video position ids:
#   [PR #35569](https://github.com/huggingface/transformers/pull/35569) (the Qwen team's Qwen2.5-VL port, largest
#   id + 1), [issue #45381](https://github.com/huggingface/transformers/issues/45381) and
#   [PR #45400](https://github.com/huggingface/transformers/pull/45400) (the >= 5.3 video ids),
#   [PR #48669](https://github.com/huggingface/transformers/pull/48669) (fractional `second_per_grid_ts`). User
#   reports on time perception: [QwenLM/Qwen3-VL#893](https://github.com/QwenLM/Qwen3-VL/issues/893),
#   [QwenLM/Qwen3-VL#752](https://github.com/QwenLM/Qwen3-VL/issues/752).
# - Lineage: Qwen2-VL, arXiv:2409.12191 (reading [V6](V6_qwen2_vl.ipynb)); Swin Transformer, arXiv:2103.14030;
#   ViTDet, arXiv:2203.16527; NaViT, arXiv:2307.06304; RMSNorm, arXiv:1910.07467; GLU variants (SwiGLU),
#   arXiv:2002.05202; RoFormer, arXiv:2104.09864 ([F2](../foundations/F2_positional_encodings.ipynb));
#   FlashAttention and varlen packing ([F7](../foundations/F7_fast_attention.ipynb)).
# - Reference implementation used in §7: `transformers` 5.23.0, `vision_utils.py` (`get_vision_window_index`,
#   `get_vision_cu_seqlens`, `get_vision_position_ids`), `models/qwen2_5_vl/modeling_qwen2_5_vl.py`
#   (`Qwen2_5_VLRMSNorm`, `Qwen2_5_VLMLP`, `Qwen2_5_VLVisionBlock`, `Qwen2_5_VLPatchMerger`,
#   `Qwen2_5_VLVisionRotaryEmbedding`, `Qwen2_5_VisionTransformerPretrainedModel`, `Qwen2_5_VLModel.get_rope_index`,
#   `Qwen2_5_VLForConditionalGeneration`), `models/qwen2_5_vl/processing_qwen2_5_vl.py` (`second_per_grid_ts`),
#   `models/qwen2_vl/image_processing_pil_qwen2_vl.py` (`Qwen2VLImageProcessorPil`, the end-to-end pixels),
#   `models/qwen2_vl/video_processing_qwen2_vl.py` (`sample_frames`, transcribed), `video_utils.VideoMetadata`;
#   the course's `shared.attention.block_diagonal_mask`, `shared.kernels.flash_attention`, `shared.mrope`,
#   `shared.norms.rms_norm`, `shared.vision.smart_resize`.
