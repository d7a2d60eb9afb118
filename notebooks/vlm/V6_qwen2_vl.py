# ---
# jupyter:
#   course:
#     cpu_seconds: 43
#     id: V6
#     papers:
#     - arxiv: '2409.12191'
#       title: 'Qwen2-VL: Enhancing Vision-Language Model''s Perception of the World
#         at Any Resolution'
#       version: v2
#     part: vlm
#     peak_memory_mb: 823
#     prerequisites:
#     - F2
#     - V1
#     title: Qwen2-VL
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
# # V6 · Qwen2-VL
#
# [![Open In Colab](../../docs/img/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/vlm/V6_qwen2_vl.ipynb)
#
# **Paper:** Peng Wang, Shuai Bai, Sinan Tan, Shijie Wang, Zhihao Fan, Jinze Bai, et al. (Qwen Team, Alibaba
# Group), *Qwen2-VL: Enhancing Vision-Language Model's Perception of the World at Any Resolution*, arXiv 2024.
# [arXiv:2409.12191v2](https://arxiv.org/abs/2409.12191v2) (the version cited throughout: §, Table and Figure numbers refer to v2) ·
# **Official code:** [QwenLM/Qwen3-VL](https://github.com/QwenLM/Qwen3-VL) (the repository the paper links,
# `QwenLM/Qwen2-VL`, renamed to `Qwen2.5-VL` and then to `Qwen3-VL`; the old addresses redirect)
#
# **Prerequisites:** [F2 · Positional encodings](../foundations/F2_positional_encodings.ipynb) (RoPE, rotate-half
# layout); [V1 · ViT](../../docs/syllabus.md#v1) (patches, the ViT block; not yet written: its syllabus entry)
#
# **CPU run time:** 43 s on a 2-core CPU (measured by `make run`, which rewrites this number)
#
# **Peak memory:** 823 MB (the kernel's peak resident memory, measured by `make run`)

# %% [markdown]
# ## TL;DR
#
# - **Resizing:** `smart_resize` keeps the aspect ratio with sides a multiple of 28; 224x224 costs 64 tokens + 2 markers (§2.1).
# - **Model:** a 675M ViT with 2D RoPE, an MLP merging 2x2 tokens into one, and M-RoPE: (time, height, width) ids, 1D on text.
# - **Evidence:** dynamic resolution (1924 tokens on average) is best on OCRBench and within 1.4 points of the best fixed budget on the other three (Table 7); M-RoPE gains more on video than on images (+1.8 vs +0.8 on average, Table 8).
# - **Toy (f):** with rotary ids alone the released split cannot tell left from right, Qwen3-VL's interleaving can; with a per-cell position vector all three codes reach ~0.99.
# - **Bugs:** `transformers` ≥ 5.3.0 starts text after a long video below the largest id + 1 (17 s+ at 448 px); 5.2.0 starts generation at the prompt length.

# %% [markdown]
# ## 中文速览
#
# - **缩放：**`smart_resize` 保持长宽比，两边取整到 28 的倍数；224x224 占 64 个 token + 2 个标记（§2.1）。
# - **模型：**675M 参数、带 2D RoPE 的 ViT，把 2x2 个 token 合成一个的 MLP，以及 M-RoPE：（时间、高、宽）id，文本上为 1D。
# - **证据：**动态分辨率（平均 1924 个 token）在 OCRBench 上最好，其余三个基准与最佳固定预算相差不到 1.4 分（表 7）；M-RoPE 在视频上的提升大于图像（平均 +1.8 对 +0.8，表 8）。
# - **小实验 (f)：**只有旋转位置编码时，发布版划分分不清左右，Qwen3-VL 的交错布局可以；加上每格位置向量后三种编码都约达 0.99。
# - **Bug：**`transformers` ≥ 5.3.0 在长视频（448 像素时 17 秒及以上）之后让文本从低于"最大 id + 1"处开始；5.2.0 从提示长度处开始生成。

# %% [markdown]
# ## Setup
#
# One cell installs the course helper on Colab only (CI skips it); the next imports, seeds and picks the
# device. Everything below runs on a CPU in well under a minute: the models are tiny random ones built from
# configs, the only photographs are those that ship with matplotlib, and the video is drawn in the notebook.

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
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image

from shared.mrope import mrope_cos_sin, mrope_position_ids, vision_position_ids, vision_rope_cos_sin
from shared.rope import apply_rope, rope_inv_freq, rotate_half
from shared.utils import assert_close, error_bound, pick_device, seed_everything
from shared.vision import smart_resize as shared_smart_resize

seed_everything(0)
device = pick_device()  # every reading runs on CPU; a GPU only makes it faster
print("torch", torch.__version__, "| transformers", transformers.__version__)


# %% [markdown]
# ## The problem
#
# Before Qwen2-VL, "standard LVLMs encode input images to a fixed resolution (e.g., 224×224), often by either
# downsampling or upsampling the images, or by employing a scale-then-padding approach", which leads to "a
# significant loss of detailed information in high-resolution images" (§1). A 3024x4032 phone photo and a
# 130x542 logo (height x width) both become 224x224: the photo loses 99.6% of its pixels, the logo is stretched.
#
# The second problem is position: "the use of one-dimensional position embeddings in current models
# significantly limits their ability to model three-dimensional space and temporal dynamics" (§1). Flattening
# an image into a 1D sequence puts the pixel below a given one a whole row of tokens away, and the ids of a
# long video run into the tens of thousands.
#
# The paper measures both fixes. Table 7 (Qwen2-VL-7B): fixed budgets of 64 / 576 / 1600 / 3136 image tokens score
# 28.85 / 65.72 / 74.99 / 77.27 on InfoVQA and 572 / 828 / 824 / 786 on OCRBench; dynamic resolution scores 75.89
# and **866** with 1924 tokens on average: "no single fixed resolution achieves optimal performance across all
# benchmarks" (§3.3.1; Table 7's other columns, RealWorldQA and MMMU, are in (e)). Table 8 (§3.3.2: "We employ
# Qwen2-1.5B and ViT-L as the backbone and report the results of the pre-trained models"), M-RoPE vs 1D RoPE: on
# video 46.0 vs 43.9 (NextQA), 57.9 vs 55.5 (STAR), 47.4 vs 46.6 (PerceptionTest); on images 43.4 vs 39.2
# (MathVista) and 60.6 vs 58.6 (MMBench), 0 to +0.5 on four more (MMStar, DocVQA, ChartQA, TextVQA), and slightly
# lower on RealWorldQA (53.7 vs 54.5) and InfoVQA (50.3 vs 50.8). The paper concludes that M-RoPE does better
# downstream, "particularly in video benchmarks"; (e) computes the mean gain of each group. Figure 5 (§3.3.2,
# Video-MME medium-length videos): the 72B model, trained with at most 16K tokens per video, still performs
# robustly at inference lengths up to 80K tokens.
#
# **Headline results** (Tables 2 and 4): Qwen2-VL-72B scores 96.5 on DocVQA and 877 on OCRBench (GPT-4o: 92.8
# and 736) but 64.5 on MMMU (GPT-4o: 69.1); the 7B scores 94.5, 866 and 54.1. On video the 72B gets 77.9 on
# EgoSchema (GPT-4o: 72.2) and 71.2 / 77.8 on Video-MME without / with subtitles (GPT-4o: 71.9 / 77.2).
#
# **Where it comes from.** Qwen-VL ([arXiv:2308.12966](https://arxiv.org/abs/2308.12966)) fed a 1.9B ViT-bigG
# images at one fixed size (448x448 after its first stage) and squeezed them into 256 tokens with a cross-attention
# adapter of learned queries. NaViT ([arXiv:2307.06304](https://arxiv.org/abs/2307.06304), "Patch n' Pack") showed
# that a ViT can read images at their native aspect ratio by packing the patches of many images into one sequence
# with per-image attention masks. The paper cites it (Dehghani et al., 2024) for "naive dynamic resolution" and
# packs the same way: "At the inference stage, images of varying resolutions are packed into a single sequence"
# (§2.1; `cu_seqlens` in `transformers`, block-diagonal attention, checked in §7). Where NaViT uses factorised
# position embeddings, Qwen2-VL removes the absolute position embeddings of the DFN ViT it starts from and uses 2D
# RoPE (§2.1, §2.2): RoFormer's rotary embedding ([arXiv:2104.09864](https://arxiv.org/abs/2104.09864), F2) applied
# to rows and columns, carried into the LLM as M-RoPE. The same 675M tower serves the 2B, 7B and 72B models (Table
# 1). **What came after:** Qwen2.5-VL ([arXiv:2502.13923](https://arxiv.org/abs/2502.13923), reading V7, not yet
# written) aligns the temporal id with absolute time and adds window attention to the ViT; Qwen3-VL interleaves the
# M-RoPE axes over the frequencies (the `"interleaved"` layout of `shared.mrope`), so that every axis gets fast and
# slow pairs; compare the split of derivation 6.

# %% [markdown]
# ## Derivations
#
# Each derivation sits next to the code that implements it; §7 checks every piece against `transformers`
# 5.23, the official `qwen-vl-utils` or an independent computation.
#
# **1. Resizing (naive dynamic resolution, §2.1).** With patch $p = 14$ and merge $m = 2$, every side must be a
# multiple of $f = pm = 28$. For an $H \times W$ image, first round: $\bar H = f\,\mathrm{round}(H/f)$,
# $\bar W = f\,\mathrm{round}(W/f)$ (Python's `round`: halves go to even, so 14 px rounds to 0). If
# $\bar H \bar W > P_{\max}$, shrink with $\beta = \sqrt{HW / P_{\max}}$: $\bar H = f \lfloor H / (\beta f) \rfloor$
# (same for $W$), so $\bar H \bar W \le HW/\beta^2 = P_{\max}$. If $\bar H \bar W < P_{\min}$, grow with
# $\beta = \sqrt{P_{\min}/(HW)}$ and round up, so $\bar H \bar W \ge P_{\min}$. Both branches scale the two sides
# by the same $\beta$: the aspect ratio is kept up to the rounding. The paper gives no formula; this is
# `smart_resize` of `transformers`. The official `qwen-vl-utils` differs in two clamps (§7 shows where). The LLM
# then sees
#
# $$N_{\text{tokens}} = \frac{\bar H}{28}\cdot\frac{\bar W}{28} \;(+2 \text{ for } \texttt{<|vision\_start|>}, \texttt{<|vision\_end|>}).$$
#
# For $224 \times 224$: $N = 8 \cdot 8 = 64$, plus 2 markers $= 66$, the paper's number (checked in §7 with the
# image processor).
#
# **Limits: the processor's class defaults are not the model's.** `Qwen2VLImageProcessor` defaults to
# $P_{\min} = 56^2$ (4 tokens) and $P_{\max} = 28^2 \cdot 1280$ (1280 tokens). The released checkpoints'
# `preprocessor_config.json` ([Qwen2-VL-7B-Instruct](https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct/blob/main/preprocessor_config.json))
# set `min_pixels` 3136 $= 4 \cdot 28^2$ and `max_pixels` 12845056 $= 16384 \cdot 28^2$ ("the default range for
# the number of visual tokens per image in the model is 4-16384", model card), the same 16384 as the paper's
# ablation cap (§3.3.1) and as `qwen-vl-utils`.

# %%
def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """Sides (multiples of `factor`) the image is resized to (derivation 1, transformers' version)."""
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor  # nearest multiples
    if h_bar * w_bar > max_pixels:  # too big: shrink by beta, round down (at least one factor)
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:  # too small: grow by beta, round up
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


PROCESSOR_DEFAULT = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)  # transformers class defaults
RELEASED = dict(min_pixels=3136, max_pixels=12845056)  # Qwen2-VL-*-Instruct preprocessor_config.json
for name, lim in [("class defaults", PROCESSOR_DEFAULT), ("released", RELEASED)]:
    print(f"{name:14s}: {lim['min_pixels']:>8d} .. {lim['max_pixels']:>8d} pixels = "
          f"{lim['min_pixels'] / 28**2:g} .. {lim['max_pixels'] / 28**2:g} merged tokens of 28 x 28 pixels")

# %% [markdown]
# **2. Patches are tubes.** A video frame pair and an image (two identical frames, §2.1) are cut into
# $2 \times 14 \times 14$ tubes of $3 \cdot 2 \cdot 14 \cdot 14 = 1176$ values. A `Conv3d` with kernel = stride =
# $(2, 14, 14)$ applied to one tube is a dot product per output channel, i.e. a linear map
# $\mathbb{R}^{1176} \to \mathbb{R}^{1280}$ (checked in §7 against `PatchEmbed`, and against a real `Conv3d` over
# a whole video). The processor resizes with bicubic interpolation, scales to $[0, 1]$, normalises with the CLIP
# mean and std, and orders the rows so that the 4 patches of each $2 \times 2$ merge block are consecutive: the
# merger can then fuse them with a plain `view`. Each row is flattened as (channel, frame, row, column). A
# video of $T$ sampled frames becomes $T/2$ temporal patches; an image is the case $T = 2$ with two equal frames.

# %%
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
PATCH, MERGE, TEMPORAL = 14, 2, 2


def normalise(frame: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """PIL frame -> resized (bicubic), scaled, CLIP-normalised (3, H', W') float32; size = (H', W')."""
    x = np.asarray(frame.resize((size[1], size[0]), Image.BICUBIC), dtype=np.float32) / 255.0  # (H', W', 3)
    return torch.from_numpy((x - CLIP_MEAN) / CLIP_STD).permute(2, 0, 1)  # (3, H', W')


def preprocess(image: Image.Image) -> torch.Tensor:
    """An image at its smart_resize size (derivation 1), (3, H', W')."""
    return normalise(image, smart_resize(image.height, image.width))


def patchify(frames: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """(T, 3, H, W) frames -> rows (T/2 * H/14 * W/14, 1176) in merge-block order, and the grid (t, h, w)."""
    T, C, H, W = frames.shape
    t, gh, gw = T // TEMPORAL, H // PATCH, W // PATCH
    x = frames.reshape(t, TEMPORAL, C, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    # axes: t, frame, C, block row, row in block, pixel row, block col, col in block, pixel col
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # t, block row, block col, row in block, col in block | C, frame, py, px
    return x.reshape(t * gh * gw, C * TEMPORAL * PATCH * PATCH), [t, gh, gw]


# %% [markdown]
# **3. 2D RoPE in the ViT.** Of the $d/2$ rotated pairs of a head, the first $d/4$ turn by the patch row $h$
# and the other $d/4$ by the column $w$, both with the same $d/4$ frequencies $\theta_i = 10000^{-4i/d}$. The
# rotation is block diagonal, $R(h, w) = R_h(h) \oplus R_w(w)$, and each block satisfies $R(a)^\top R(b) = R(b - a)$,
# so
#
# $$\langle R(h_1, w_1) q,\, R(h_2, w_2) k \rangle = q^\top \big(R_h(h_2 - h_1) \oplus R_w(w_2 - w_1)\big)\, k,$$
#
# a score that depends only on the 2D offset, at any image size: nothing to interpolate (checked in §7). Each
# patch's (row, column) is listed in the same merge-block order as the rows of derivation 2; every temporal
# patch of a video repeats the same coordinates (time enters only in the LLM). In the rotate-half layout of
# F2, dim $j$ pairs with $j + d/2$, so the angle vector is [row angles, column angles] written twice.

# %%
def vit_positions(grid: torch.Tensor) -> torch.Tensor:
    """(row, col) of every patch, (sum t*h*w, 2), in the processor's merge-block order."""
    out = []
    for t, h, w in grid.tolist():
        rc = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), dim=-1)  # (h, w, 2)
        rc = rc.reshape(h // MERGE, MERGE, w // MERGE, MERGE, 2).permute(0, 2, 1, 3, 4)  # blocks, then inside
        out.append(rc.reshape(-1, 2).repeat(t, 1))  # (t*h*w, 2): the same positions in every frame pair
    return torch.cat(out)


def vit_rope(pos: torch.Tensor, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (n, head_dim) of derivation 3: frequencies base^(-4i/d), i < d/4, for the row then the column."""
    theta = base ** (-torch.arange(0, head_dim // 2, 2).float() / (head_dim // 2))  # (d/4,)
    angles = torch.cat([pos[:, :1] * theta, pos[:, 1:] * theta], dim=-1)  # (n, d/2): rows | columns
    angles = torch.cat([angles, angles], dim=-1)  # (n, d): rotate-half pairs i and i + d/2
    return angles.cos(), angles.sin()


print("first 8 patch positions (row, col) of a 4x6 grid:", vit_positions(torch.tensor([[1, 4, 6]]))[:8].tolist())

# %% [markdown]
# **4. The ViT block and the 2x2 merger (§2.1).** A Qwen2-VL ViT block is the pre-norm block of V1 with
# LayerNorm, a `quick_gelu` MLP ($x\,\sigma(1.702x)$) and 2D RoPE on $q$ and $k$. Each image, and each temporal
# patch of a video, attends only to itself: the packed sequence is block-diagonal, as `transformers` builds it
# from `grid_thw` (`cu_seqlens`: one segment per temporal patch). The merger layer-norms the 4 patch features
# $x_1..x_4 \in \mathbb{R}^{1280}$ of a $2 \times 2$ block, concatenates them and applies an MLP:
# $z = W_2\,\mathrm{GELU}(W_1 [\mathrm{LN}(x_1); \dots; \mathrm{LN}(x_4)] + b_1) + b_2$, with
# $W_1 \in \mathbb{R}^{5120 \times 5120}$, $W_2 \in \mathbb{R}^{d_{\text{LLM}} \times 5120}$. Its size is
# $2 \cdot 1280 + 5120^2 + 5120 + 5120\, d_{\text{LLM}} + d_{\text{LLM}}$: 44.6M for the 7B ($d_{\text{LLM}} = 3584$).
# The function reads the weights of a `transformers` tower so that §7 can compare the outputs.

# %%
def merger(x: torch.Tensor, m) -> torch.Tensor:
    """(n, C) patch features -> (n/4, d_llm) tokens: LN, concat 2x2 neighbours, Linear-GELU-Linear."""
    x = F.layer_norm(x, x.shape[-1:], m.ln_q.weight, m.ln_q.bias, eps=1e-6)
    x = x.reshape(-1, MERGE * MERGE * x.shape[-1])  # (n/4, 4C): the 4 rows of a merge block are consecutive
    return F.linear(F.gelu(F.linear(x, m.mlp[0].weight, m.mlp[0].bias)), m.mlp[2].weight, m.mlp[2].bias)


def vit_forward(tower, pixel_values: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch features (n, C) and merged LLM tokens (n/4, d_llm) of a Qwen2-VL vision tower's weights."""
    C, heads = tower.config.embed_dim, tower.config.num_heads
    d = C // heads
    x = pixel_values @ tower.patch_embed.proj.weight.reshape(C, -1).T  # (n, C): Conv3d = linear map (deriv. 2)
    cos, sin = vit_rope(vit_positions(grid), d)  # (n, d)
    frame_len = torch.repeat_interleave(grid[:, 1] * grid[:, 2], grid[:, 0])  # patches per temporal patch
    segment = torch.repeat_interleave(torch.arange(len(frame_len)), frame_len)  # (n,): image / frame pair
    same_segment = segment[:, None] == segment[None, :]  # (n, n): block-diagonal attention
    for blk in tower.blocks:
        h = F.layer_norm(x, (C,), blk.norm1.weight, blk.norm1.bias, eps=1e-6)
        q, k, v = F.linear(h, blk.attn.qkv.weight, blk.attn.qkv.bias).reshape(-1, 3, heads, d).unbind(1)
        q, k = (t * cos[:, None] + rotate_half(t) * sin[:, None] for t in (q, k))  # 2D RoPE, (n, heads, d)
        a = F.scaled_dot_product_attention(*(t.transpose(0, 1) for t in (q, k, v)), attn_mask=same_segment)
        x = x + F.linear(a.transpose(0, 1).reshape(-1, C), blk.attn.proj.weight, blk.attn.proj.bias)
        h = F.layer_norm(x, (C,), blk.norm2.weight, blk.norm2.bias, eps=1e-6)
        h = F.linear(h, blk.mlp.fc1.weight, blk.mlp.fc1.bias)
        x = x + F.linear(h * torch.sigmoid(1.702 * h), blk.mlp.fc2.weight, blk.mlp.fc2.bias)  # quick_gelu
    return x, merger(x, tower.merger)


# %% [markdown]
# **5. M-RoPE position ids (§2.1).** Every LLM token gets ids $(p_t, p_h, p_w)$: text $(n, n, n)$; a vision token
# at merged cell $(t, h, w)$ of a block starting at $s$ gets $(s + t, s + h, s + w)$, where an image has the single
# temporal cell $t = 0$ and a video one cell per temporal patch (one per second at 2 fps). The paper: "position
# numbering for each modality is initialized by incrementing the maximum position ID of the preceding modality
# by one", so every block starts at $s = 1 + $ the largest id so far. For an image block of merged size
# $H' \times W'$ the largest id is $s + \max(H', W') - 1$; for a video of $T$ temporal patches it is
# $s + \max(T, H', W') - 1$. `0` marks text, `1` image and `2` video tokens (`mm_token_type_ids` in
# `transformers`); `shared.mrope.mrope_position_ids` does the same for padded batches.
#
# **Paper vs code: one temporal id per tube, not per frame.** §2.1 says "the temporal ID increments for each
# frame". The code (`transformers`' `get_rope_index`, vLLM, the Qwen team's own fine-tuning code, all linked in
# §7) gives one temporal id per temporal patch, `arange(T)` over the $T$ tubes (half the sampled frames), so the id advances
# once per 2 frames: once per second at 2 fps. The code is the one to follow: every implementation read here
# computes it, and the tube is the token, so the two frames inside it have no separate token to carry a second
# id. 6.7 prints the ids of a real clip.
#
# **`rope_deltas`.** After the prompt, generation only adds text, one id per token on all three axes. The next
# id is $1 + $ the largest id, which is smaller than the prompt length $L$ because a vision block of $N$ tokens
# uses only about $\max(T, H', W')$ distinct ids. Decoding therefore adds a per-sequence constant to the plain
# token index: new token $j \ge L$ gets id $j + \delta$ with $\delta = \max(\text{ids}) + 1 - L$ (negative),
# which `get_rope_index` returns as `rope_deltas` and the model caches for generation.

# %%
def mrope_ids(types: list[int], grids: list[list[int]]) -> torch.Tensor:
    """(3, seq) ids (temporal, height, width) for token types (0 text, 1 image, 2 video) and the blocks' grids."""
    cols, start, i, grids = [], 0, 0, iter(grids)
    while i < len(types):
        if types[i] == 0:  # text: one id on all axes
            ids = torch.full((3, 1), start)
            i += 1
        else:  # a vision block: (start + t, start + h, start + w) over the merged grid
            t, h, w = next(grids)
            tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h // MERGE), torch.arange(w // MERGE),
                                        indexing="ij")
            ids = torch.stack([tt, hh, ww]).reshape(3, -1) + start
            i += ids.shape[1]
        cols.append(ids)
        start = int(ids.max()) + 1  # paper §2.1: the next block starts at the largest id + 1
    return torch.cat(cols, dim=1)


def rope_delta(ids: torch.Tensor) -> int:
    """rope_deltas of derivation 5: largest id + 1 - prompt length."""
    return int(ids.max()) + 1 - ids.shape[-1]


# %% [markdown]
# **6. The M-RoPE frequencies and the $[16, 24, 24]$ split.** The LLM's head dimension is 128, so RoPE rotates 64
# pairs with $\theta_i = \text{base}^{-2i/128}$, $\text{base} = 10^6$, $i = 0..63$ (fast to slow). M-RoPE lets pair
# $i$ rotate by $p_{a(i)}\theta_i$, where `mrope_section` $= [16, 24, 24]$ (released `config.json`, not given in
# the paper) gives the first 16 pairs to $t$, the next 24 to $h$, the last 24 to $w$. On text
# $p_t = p_h = p_w = n$, so every pair rotates by $n\theta_i$: **exactly 1D RoPE** (checked bit for bit in §7).
# Since the frequencies fall geometrically, the split also decides *which wavelengths* $\lambda_i = 2\pi/\theta_i$
# each axis gets: time the 16 fastest ($\lambda$ from 6.3 to 160 ids), height the middle 24 (199 to about
# 28 000), width the 24 slowest (about 35 000 to 5 million). The score between two tokens depends on their offset
# only through $\cos(\Delta p_a \theta_i)$ and $\sin(\Delta p_a\theta_i)$ (F2), so an offset of $\Delta$ columns
# moves the width pairs by at most $\Delta\,\theta_{40} = \Delta \cdot 1.8 \times 10^{-4}$ rad. The walkthrough
# prints and plots what this means for a real photo.

# %%
def mrope_tables(ids: torch.Tensor, head_dim: int = 128, base: float = 1e6,
                 section: tuple[int, int, int] = (16, 24, 24)) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (..., seq, head_dim) from ids (3, ..., seq): frequency i rotates by ids[axis(i)] * theta_i."""
    theta = rope_inv_freq(head_dim, base)  # (d/2,) base^(-2i/d)
    angles = ids[..., None].float() * theta  # (3, ..., seq, d/2): one 1D table per axis
    axis = torch.repeat_interleave(torch.arange(3), torch.tensor(section))  # (d/2,): 0 x16, 1 x24, 2 x24
    picked = angles.gather(0, axis.expand_as(angles[:1])).squeeze(0)  # (..., seq, d/2)
    emb = torch.cat([picked, picked], dim=-1)  # rotate-half layout
    return emb.cos(), emb.sin()


theta_llm = rope_inv_freq(128, 1e6).double()  # (64,) the LLM's frequencies
wavelength = 2 * math.pi / theta_llm  # (64,) ids per full turn
axis_of = torch.repeat_interleave(torch.arange(3), torch.tensor([16, 24, 24]))  # (64,)
for a, name in enumerate(["temporal", "height", "width"]):
    lam = wavelength[axis_of == a]
    print(f"{name:8s} pairs {int((axis_of < a).sum()):2d}-{int((axis_of <= a).sum()) - 1:2d}: wavelength "
          f"{lam.min():11.1f} to {lam.max():11.1f} ids")

# %% [markdown]
# **7. ViT size (Table 1: 675M) and cost.** Width 1280, 32 blocks, MLP ratio 4: each block has
# $2 \cdot 2 \cdot 1280$ (LayerNorms) $+ 1280 \cdot 3840 + 3840$ (qkv) $+ 1280^2 + 1280$ (out)
# $+ 2 (1280 \cdot 5120) + 5120 + 1280$ (MLP) $= 19{,}677{,}440$ parameters; 32 blocks give 629.7M, the patch
# embedding $1176 \cdot 1280 = 1.5$M, the merger 44.6M: 675.8M in all (checked in §8 on the meta device).
# **FLOPs**, counting a multiply-add as 2: a transformer with $P$ parameters in its linear layers spends $2nP$ on
# $n$ tokens, plus $4n^2 d$ per layer for the scores $QK^\top$ and the mix $AV$ ($d$ the attention width, the full
# $n \times n$ matrix as a dense kernel computes it; a causal kernel can skip about half). The ViT sees
# $n = 4N$ patches for $N$ LLM tokens and attends over the whole image (Qwen2-VL has no windowed attention), so
# its quadratic term grows with the square of the pixel count; §6.3 prints it against the LLM's.

# %% [markdown]
# ## Walkthrough
#
# ### 6.1 How many tokens does a real photograph cost?
#
# Derivation 1 on the photographs that ship with matplotlib (`mpl-data/sample_data`; only `grace_hopper.jpg`
# is a photograph, `logo2.png` is a wide logo) and on common camera sizes, once with the processor's class
# defaults and once with the released limits. "kept" is the share of the original pixels that survive.

# %%
sample_dir = Path(matplotlib.get_data_path()) / "sample_data"
print("matplotlib sample images:", sorted(p.name for p in sample_dir.glob("*.[jp][pn]g")))
photo = Image.open(sample_dir / "grace_hopper.jpg").convert("RGB")
logo = Image.open(sample_dir / "logo2.png").convert("RGB")

sizes = {  # name: (height, width)
    "grace_hopper.jpg": (photo.height, photo.width),
    "logo2.png": (logo.height, logo.width),
    "224 x 224 (paper §2.1)": (224, 224),
    "VGA 480 x 640": (480, 640),
    "Full HD 1080 x 1920": (1080, 1920),
    "12 MP phone 3024 x 4032": (3024, 4032),
}
print(f"{'image':24s} {'H x W':>11s} | {'class defaults (4..1280)':>28s} | {'released (4..16384)':>28s}")
for name, (h, w) in sizes.items():
    cells = []
    for lim in (PROCESSOR_DEFAULT, RELEASED):
        rh, rw = smart_resize(h, w, **lim)
        cells.append(f"{rh:>4d} x {rw:<4d} {rh * rw // 28**2:>5d} tok {min(1, rh * rw / (h * w)):>4.0%} kept")
    print(f"{name:24s} {h:>5d} x {w:<5d}| {cells[0]:>28s} | {cells[1]:>28s}")

# %% [markdown]
# A 12-megapixel phone photo costs 1230 + 2 tokens at 8% of its pixels under the class defaults, and 15552 + 2
# tokens at full resolution under the released limits (it is just under $16384 \cdot 28^2$ pixels). Which one a
# user gets depends on the processor config loaded, not on the model.
#
# ### 6.2 Pixels to patches: two images packed into one sequence
#
# Derivation 2 on the two sample images: resize, normalise, duplicate the frame, cut into tubes, and
# concatenate the rows of both images into one packed sequence (NaViT-style; `grid_thw` records where each
# image starts).

# %%
photo_pixels = preprocess(photo)  # (3, 588, 504)
photo_rows, photo_grid = patchify(torch.stack([photo_pixels, photo_pixels]))  # an image is 2 identical frames
logo_rows, logo_grid = patchify(torch.stack([preprocess(logo)] * 2))
pixel_values = torch.cat([photo_rows, logo_rows])  # (1512 + 380, 1176): images packed into one sequence
grid_thw = torch.tensor([photo_grid, logo_grid])
vit_pos = vit_positions(grid_thw)  # (1892, 2) (row, col) per patch, derivation 3
print("pixel_values", tuple(pixel_values.shape), "| grid_thw", grid_thw.tolist(),
      "| LLM tokens per image", (grid_thw.prod(-1) // MERGE**2).tolist())

# %% [markdown]
# ### 6.3 What the ViT costs next to the LLM
#
# Derivation 7's FLOPs for the released sizes, with the parameters counted from `transformers` modules built on
# the meta device (no memory, no download): the ViT from `Qwen2VLVisionConfig` defaults (the released values,
# see §8 (d)), the LLMs from the released `config.json` shapes of Qwen2-VL-2B / 7B / 72B (hidden 1536 / 3584 /
# 8192, 28 / 28 / 80 layers, MLP 8960 / 18944 / 29568, 12 / 28 / 64 query heads, 2 / 4 / 8 key-value heads).
# Only the image's own tokens are counted (no text), at the released limits.

# %%
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2Model
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel


def linear_params(module: torch.nn.Module) -> int:
    """Weights and biases of every nn.Linear (and the patch Conv3d) in a module: the 2nP part of the FLOPs."""
    return sum(p.numel() for m in module.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv3d)
               for p in m.parameters(recurse=False))


# (hidden, layers, MLP width, heads, kv heads); vocab 152064 below is the 7B/72B value (the released 2B has
# 151936, tied): no printed number depends on it except the 7B total
LLM_SHAPES = {"2B": (1536, 28, 8960, 12, 2), "7B": (3584, 28, 18944, 28, 4), "72B": (8192, 80, 29568, 64, 8)}
llm_cost, llm_params = {}, {}  # name: (linear params, layers, attention width); name: all parameters
with torch.device("meta"):
    vit_meta = Qwen2VisionTransformerPretrainedModel(Qwen2VLVisionConfig())  # the 7B's tower (merger -> 3584)
    for llm, (hid, layers, mlp, heads, kv) in LLM_SHAPES.items():
        lm = Qwen2Model(Qwen2Config(hidden_size=hid, num_hidden_layers=layers, intermediate_size=mlp,
                                    num_attention_heads=heads, num_key_value_heads=kv, vocab_size=152064))
        llm_cost[llm] = (linear_params(lm.layers), layers, hid)  # embeddings cost no FLOPs (a lookup)
        llm_params[llm] = sum(p.numel() for p in lm.parameters())  # embeddings + layers + final norm, no head
vit_merger = linear_params(vit_meta.merger)  # runs on the n/4 merged tokens, the rest on the n patches
vit_lin, vit_layers, vit_d = linear_params(vit_meta) - vit_merger, 32, 1280


def gflops(n_tokens: int, lin: int, layers: int, d: int) -> tuple[float, float]:
    """(linear, attention) forward GFLOPs of n tokens: 2 n P and layers * 4 n^2 d (derivation 7)."""
    return 2 * n_tokens * lin / 1e9, layers * 4 * n_tokens**2 * d / 1e9


print(f"{'image':24s} {'patches':>8s} {'tokens':>7s} {'ViT lin':>9s} {'ViT attn':>9s} | "
      f"{'LLM 2B':>8s} {'LLM 7B':>8s} {'LLM 72B':>8s}   (GFLOPs)")
for name in ["224 x 224 (paper §2.1)", "VGA 480 x 640", "Full HD 1080 x 1920", "12 MP phone 3024 x 4032"]:
    rh, rw = smart_resize(*sizes[name], **RELEASED)
    n_patch = (rh // 14) * (rw // 14)
    v_lin, v_att = gflops(n_patch, vit_lin, vit_layers, vit_d)
    v_lin += gflops(n_patch // 4, vit_merger, 0, 0)[0]
    lms = [sum(gflops(n_patch // 4, *llm_cost[k])) for k in LLM_SHAPES]
    print(f"{name:24s} {n_patch:>8d} {n_patch // 4:>7d} {v_lin:>9.0f} {v_att:>9.0f} | "
          + " ".join(f"{x:>8.0f}" for x in lms))

# %% [markdown]
# Per LLM token the ViT's linear layers cost about $4 \cdot 2 \cdot 0.63\text{G} \approx 5$ GFLOPs (4 patches
# through 631M parameters), against about 13 for the 7B LLM and 2.6 for the 2B: at 224 x 224 the same 675M tower
# costs 0.4 times what the 7B LLM spends on the image's tokens and twice what the 2B LLM does. Its full attention
# grows with the square of the patch count: at Full HD the ViT already costs about as much as the 7B LLM, and at
# 12 megapixels (62208 patches) its attention alone is about 630 TFLOPs, twice the 7B LLM's 300. That is the cost
# Qwen2.5-VL attacked with window attention in the ViT (V7).
#
# ### 6.4 M-RoPE position ids for one sequence
#
# Derivation 5 for a chat turn: text, an image (1 x 4 x 6 patches -> 2 x 3 tokens), text, a 2 s video at 2 fps
# (4 frames -> 2 temporal patches of 4 x 6 patches -> 2 x 2 x 3 tokens), text. Tokens 3 and 14 stand for
# `<|vision_start|>`, 10 and 27 for `<|vision_end|>` (they are text tokens).

# %%
types = [0] * 4 + [1] * 6 + [0] * 5 + [2] * 12 + [0] * 4
grids = [[1, 4, 6], [2, 4, 6]]
ids = mrope_ids(types, grids)  # (3, 31)
print("temporal:", ids[0].tolist())
print("height:  ", ids[1].tolist())
print("width:   ", ids[2].tolist())
print(f"largest id {int(ids.max())}, length {len(types)}: rope_deltas = {rope_delta(ids)}, so the first generated "
      f"token (index {len(types)}) gets id {len(types) + rope_delta(ids)}")

# %% [markdown]
# ### 6.5 M-RoPE cos/sin tables and what the [16, 24, 24] split means
#
# Derivation 6's tables for the sequence of 6.4 (on text the three rows are equal, so the result cannot differ
# from 1D RoPE), then the wavelength of each of the 64 pairs coloured by the axis that drives it, against the
# offsets a real input produces: the 12 MP photo's 108 merged rows and 144 columns, and a 16384-token context.

# %%
cos_m, sin_m = mrope_tables(ids)  # (31, 128) each
print("cos table", tuple(cos_m.shape))

fig, ax = plt.subplots(figsize=(7, 3.4))
colors = ["tab:green", "tab:blue", "tab:orange"]
for a, name in enumerate(["temporal (16 pairs)", "height (24)", "width (24)"]):
    idx = torch.nonzero(axis_of == a).squeeze(1)
    ax.scatter(idx, wavelength[idx], s=12, color=colors[a], label=name)
for y in (108, 144, 16384):
    ax.axhline(y, color="grey", lw=0.8, ls=":")
ax.text(63, 144 * 1.3, "108 rows, 144 columns (12 MP photo)", ha="right", fontsize=7, color="grey")
ax.text(63, 16384 * 1.3, "16384 tokens", ha="right", fontsize=7, color="grey")
ax.set(yscale="log", xlabel="rotary pair i (theta_i = 1e6^(-i/64))", ylabel="wavelength 2 pi / theta_i (ids)",
       title="M-RoPE: which wavelengths each axis gets (mrope_section [16, 24, 24])")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

span = {"temporal": 120, "height": 108, "width": 144}  # a 2-minute video's seconds; the photo's rows, columns
for a, name in enumerate(span):
    fastest = theta_llm[axis_of == a].max().item()
    print(f"{name:8s}: fastest pair turns {fastest:.2e} rad per id; across {span[name]:3d} ids: "
          f"{span[name] * fastest:7.3f} rad")

# %% [markdown]
# The temporal axis gets the fastest pairs: neighbouring seconds differ by up to 1 rad. The height axis still
# turns about 3.4 rad across a 108-row photo, but the width axis gets only the 24 slowest pairs: across the
# photo's 144 columns its fastest pair turns by 0.026 rad, so left-right offsets inside an image reach the score
# only through very small rotations (at any $|q||k|$, the change of $q^\top R(\Delta)k$ is at most
# $|q||k|\,\Delta\theta$). On text nothing of this matters (all three axes carry the same id). This limits only
# what the LLM can read from the rotary code alone: the visual tokens arrive from a ViT whose 2D RoPE
# (derivation 3) gives the column its own full spectrum, from $\theta_0 = 1$ rad per patch down, so each token's
# content already carries its place in the layout. The imbalance is a property of the released section, not of
# M-RoPE as such; it is what Qwen3-VL's interleaved layout, which gives every axis fast and slow pairs, was
# introduced to remove ([Qwen3-VL Technical Report, arXiv:2511.21631](https://arxiv.org/abs/2511.21631):
# "an enhanced interleaved-MRoPE for stronger spatial-temporal modeling across images and video").
# Reproduction (f) trains a toy to see what the slow width pairs cost when the rotary code is the only signal,
# and what a content-position channel changes.
#
# ### 6.6 The special tokens
#
# The processor writes one placeholder per image or video and expands it to one `<|image_pad|>` (or
# `<|video_pad|>`) per merged token, $t \cdot h \cdot w / 4$ of them, between `<|vision_start|>` and
# `<|vision_end|>`. The model replaces the embeddings at the pad positions with the merger's outputs (in order),
# and `mm_token_type_ids` (1 at image pads, 2 at video pads, 0 elsewhere, the markers included) tells
# `get_rope_index` where the vision blocks are. The ids are the `Qwen2VLConfig` defaults, which are those of
# the released tokenizer:

# %%
from transformers import Qwen2VLConfig

qcfg = Qwen2VLConfig()
special = {"<|vision_start|>": qcfg.vision_start_token_id, "<|vision_end|>": qcfg.vision_end_token_id,
           "<|image_pad|>": qcfg.image_token_id, "<|video_pad|>": qcfg.video_token_id}
print(special)
n_photo = int(grid_thw[0].prod()) // MERGE**2
prompt = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Who is this?<|im_end|>\n"
expanded = prompt.replace("<|image_pad|>", "<|image_pad|>" * n_photo)
print(f"grace_hopper.jpg: grid {grid_thw[0].tolist()} -> {n_photo} x <|image_pad|>; prompt grows from "
      f"{len(prompt)} to {len(expanded)} characters, {expanded.count('<|image_pad|>')} pads")

# %% [markdown]
# ### 6.7 A real video pipeline on generated frames
#
# A 3-second clip at 30 fps, 224 x 224, a red square moving left to right, drawn here. The official
# `qwen-vl-utils` (0.0.14, `vision_process.py`, transcribed below because it imports `torchvision`, which the
# course does not install) samples `nframes` $=$ duration $\times$ 2 fps, rounded down to an even number and at
# least 4 (`smart_nframes`), at `linspace(0, total - 1, nframes).round()`; it resizes every frame with
# `smart_resize` between `VIDEO_MIN_TOKEN_NUM` $= 128$ and `VIDEO_MAX_TOKEN_NUM` $= 768$ tokens' worth of
# pixels, further capped by a total budget of $0.9 \cdot 128000 \cdot 28^2$ pixels spent over the temporal
# patches (each frame gets at most `total_pixels / nframes * 2`, since two frames make one patch). Each pair
# of frames is one temporal patch (derivation 2), so the clip becomes $T = 3$ temporal patches: one per second.

# %%
FPS, FPS_MIN_FRAMES = 2.0, 4  # qwen-vl-utils defaults
fps_in, seconds, side = 30, 3, 224
n_in = fps_in * seconds
canvas = np.full((n_in, side, side, 3), 235, dtype=np.uint8)  # (90, 224, 224, 3) light grey
for f in range(n_in):
    x0 = int(8 + f * (side - 56) / (n_in - 1))  # the square moves left to right
    canvas[f, 84:140, x0:x0 + 40] = (200, 30, 30)

min_frames, max_frames = FPS_MIN_FRAMES, min(768, n_in) // 2 * 2  # smart_nframes' bounds (even)
nframes = math.floor(min(max(n_in / fps_in * FPS, min_frames), max_frames, n_in) / 2) * 2  # 3 s x 2 fps = 6
frame_idx = torch.linspace(0, n_in - 1, nframes).round().long()  # qwen-vl-utils' sampling
total_pixels = 128000 * 28 * 28 * 0.9
vmin = 128 * 28 * 28
vmax = max(min(768 * 28 * 28, total_pixels / nframes * 2), int(vmin * 1.05))
vh, vw = smart_resize(side, side, min_pixels=vmin, max_pixels=int(vmax))  # 64 tokens' worth < 128: grows to 336
# (our smart_resize equals qwen-vl-utils' for sides above 14 px, §7)
video = torch.stack([normalise(Image.fromarray(canvas[i]), (vh, vw)) for i in frame_idx.tolist()])  # (6,3,336,336)
video_rows, video_grid = patchify(video)  # (3 * 24 * 24, 1176), [3, 24, 24]
video_grid_thw = torch.tensor([video_grid])
n_video = int(video_grid_thw.prod()) // MERGE**2
print(f"{n_in} frames at {fps_in} fps -> sample {nframes} at 2 fps: frames {frame_idx.tolist()}")
print(f"each frame {side}x{side} -> {vh}x{vw} (at least 128 tokens per frame); rows {tuple(video_rows.shape)}, "
      f"grid_thw {video_grid}, {n_video} LLM tokens")

video_types = [0] * 5 + [2] * n_video + [0] * 6  # "<|im_start|>user\n<|vision_start|>", video, question
video_ids = mrope_ids(video_types, [video_grid])
vt = video_ids[0, 5:5 + n_video].reshape(video_grid[0], -1)  # temporal ids per temporal patch
print("temporal id of each temporal patch:", vt[:, 0].tolist(), "| text after the video starts at",
      int(video_ids[0, 5 + n_video]), "| rope_deltas", rope_delta(video_ids))

fig, axes = plt.subplots(1, nframes, figsize=(9, 1.8))
for k, (axk, i) in enumerate(zip(axes, frame_idx.tolist(), strict=True)):
    axk.imshow(canvas[i])
    axk.set_title(f"frame {i}\ntemporal patch {k // 2}", fontsize=7)
    axk.axis("off")
plt.suptitle("the 6 frames sampled at 2 fps; each pair is one 2x14x14 tube deep", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### 6.8 Training stages and data (§2.2)
#
# "Following Qwen-VL, we adopt a three-stage training methodology" (§2.2):
#
# | stage | trained | data | tokens |
# |---|---|---|---|
# | 1. ViT pre-training | the ViT only | image-text pairs, OCR, image classification: "image-text relationships, textual content recognition within images through OCR, and image classification" | about 600B |
# | 2. full pre-training | all parameters | more mixed image-text content, VQA and multi-task datasets, pure text | 800B more (1.4T in all) |
# | 3. instruction fine-tuning | the LLM (ViT frozen) | ChatML instruction data: pure-text dialogues and multimodal conversations (image QA, document parsing, multi-image comparison, video comprehension, video-stream dialogue, agent interactions) | not given |
#
# The LLM starts from Qwen2 and the ViT from DFN's ViT, whose fixed position embedding is replaced by 2D RoPE
# (§2.2). Only text tokens are supervised; image tokens are inputs. The pre-training data lists image-text pairs, OCR data,
# interleaved articles, VQA, video dialogues and image knowledge; the sources are "cleaned web pages,
# open-source datasets, and synthetic data" (§2.2). Grounding uses the same vocabulary as text: boxes are
# written as `<|box_start|>(x1,y1),(x2,y2)<|box_end|>` with coordinates normalised to $[0, 1000)$, and the
# referred phrase between `<|object_ref_start|>` and `<|object_ref_end|>` (§2.2.1). The course reproduces the
# architecture, not the 1.4T-token run; the one thing it trains is the toy of Reproduction (f).

# %% [markdown]
# ## Check against a reference
#
# Everything above against `transformers` 5.23 (`Qwen2VLImageProcessorPil`, `Qwen2VisionTransformerPretrainedModel`
# with its `PatchEmbed`, `Qwen2VLVisionRotaryEmbedding` and `PatchMerger`, `Qwen2VLModel.get_rope_index`,
# `Qwen2VLRotaryEmbedding`, `Qwen2VLForConditionalGeneration`) built from tiny random configs, against the
# official `qwen-vl-utils`, against a plain `Conv3d`, and against the course's `shared` module.
#
# **Resizing, against two implementations and the spec.** `transformers`' `smart_resize` and `shared.vision`
# on the sizes above and 2000 random ones; then the properties derivation 1 promises (multiples of 28, pixels
# within the limits, aspect ratio kept up to one factor per side), which are checked on the outputs, not on
# the code.

# %%
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

g = torch.Generator().manual_seed(0)
sweep = list(sizes.values()) + torch.randint(1, 5000, (2000, 2), generator=g).tolist()
sweep = [(h, w) for h, w in sweep if max(h, w) / min(h, w) <= 200]
for lim in (PROCESSOR_DEFAULT, RELEASED):
    for h, w in sweep:
        out = smart_resize(h, w, **lim)
        assert out == hf_smart_resize(h, w, **lim) == shared_smart_resize(h, w, **lim), (h, w)
        rh, rw = out
        assert rh % 28 == 0 and rw % 28 == 0 and rh >= 28 and rw >= 28, (h, w, out)  # the spec
        assert lim["min_pixels"] <= rh * rw <= lim["max_pixels"] or min(h, w) < 28, (h, w, out)
        # one common scale s for both sides, each rounded by at most one factor: the s-intervals must meet
        assert max((rh - 28) / h, (rw - 28) / w) <= min((rh + 28) / h, (rw + 28) / w) or min(h, w) < 28, (h, w)
print(f"smart_resize equals transformers and shared.vision, and keeps the spec, on {len(sweep)} sizes x 2 limits")

# the grow branch (h_bar * w_bar < min_pixels) is rare among random sizes: sweep every small image too
small = [(h, w) for h in range(1, 61) for w in range(1, 61)]
grown = 0
for h, w in small:
    out = smart_resize(h, w, **PROCESSOR_DEFAULT)
    assert out == hf_smart_resize(h, w, **PROCESSOR_DEFAULT) == shared_smart_resize(h, w, **PROCESSOR_DEFAULT)
    assert out[0] * out[1] >= PROCESSOR_DEFAULT["min_pixels"]  # the grow branch's promise, on the output
    grown += round(h / 28) * round(w / 28) * 28**2 < PROCESSOR_DEFAULT["min_pixels"]
in_sweep = sum(round(h / 28) * round(w / 28) * 28**2 < PROCESSOR_DEFAULT["min_pixels"] for h, w in sweep)
print(f"grow branch at the class defaults: {in_sweep} of the {len(sweep)} random sizes, {grown} of the "
      f"{len(small)} sizes up to 60 x 60 px; all three implementations agree on them")

# %% [markdown]
# **`qwen-vl-utils` against `transformers`.** The official package's `smart_resize` (0.0.14, identical in 0.0.8
# and 0.0.10), transcribed from `qwen_vl_utils/vision_process.py` (the package imports `torchvision` at import time,
# which its requirements do not list and the course does not install, and it requires `av` and `requests`), so
# the transcription is compared with the package by reading its code, not by running it. Two clamps differ from
# `transformers`:
#
# 1. it rounds with `max(factor, round_by_factor(side, factor))`, so a side that rounds to 0 (at most 14 px, since
#    `round(0.5) = 0`) becomes 28 and the grow branch is not taken; `transformers` gets $\bar H = 0$,
#    $\bar H\bar W = 0 < P_{\min}$, and grows both sides by $\beta = \sqrt{P_{\min}/(HW)}$;
# 2. in the shrink branch it has no `max(factor, ...)`, so a very thin image can get a side of 0, which only
#    happens when $P_{\max} < 200 \cdot 28^2$ (a thin side below 28 after shrinking needs
#    $HW/\beta^2 = P_{\max}$ with $H/\beta < 28$ and $W/H \le 200$).
#
# Sweep every height 1..60 px against widths up to 200 times as large, at the released limits:

# %%
def qvu_smart_resize(height: int, width: int, factor: int = 28, min_pixels: int | None = None,
                     max_pixels: int | None = None) -> tuple[int, int]:
    """qwen-vl-utils 0.0.14 smart_resize (vision_process.py), transcribed; defaults 4..16384 tokens."""
    max_pixels = max_pixels if max_pixels is not None else 16384 * factor**2
    min_pixels = min_pixels if min_pixels is not None else 4 * factor**2
    if max(height, width) / min(height, width) > 200:
        raise ValueError("absolute aspect ratio must be smaller than 200")
    h_bar = max(factor, round(height / factor) * factor)  # round_by_factor, clamped at one factor
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor  # floor_by_factor, no clamp
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


differ, same = [], 0
for h in range(1, 61):
    for w in range(h, 200 * h + 1, max(1, h // 2)):
        a, b = hf_smart_resize(h, w, **RELEASED), qvu_smart_resize(h, w)
        if a != b:
            differ.append((h, w, a, b))
        else:
            same += 1
print(f"{same} sizes agree, {len(differ)} differ; every difference has a side <= "
      f"{max(min(d[0], d[1]) for d in differ)} px")
assert differ and all(min(h, w) <= 14 for h, w, _, _ in differ)  # clamp 1, and only clamp 1, fires here
for h, w in [(10, 1000), (14, 2000), (15, 2000), (28, 28)]:
    print(f"  {h:>3d} x {w:<5d} transformers {hf_smart_resize(h, w, **RELEASED)}  qwen-vl-utils {qvu_smart_resize(h, w)}")
tiny_budget = dict(min_pixels=4 * 28**2, max_pixels=16 * 28**2)  # clamp 2: a 16-token budget
print("  20 x 3000 with a 16-token budget: transformers", hf_smart_resize(20, 3000, **tiny_budget),
      "qwen-vl-utils", qvu_smart_resize(20, 3000, **tiny_budget))
assert qvu_smart_resize(20, 3000, **tiny_budget)[0] == 0 and hf_smart_resize(20, 3000, **tiny_budget)[0] == 28

# %% [markdown]
# So for every image taller and wider than 14 px the two agree at the released limits; below that,
# `transformers` rescales the long side too (10 x 1000 becomes 28 x 560 instead of 28 x 1008), and with budgets
# under 200 tokens `qwen-vl-utils` can return a zero side, which the processor would then fail on. Neither case
# occurs for photographs; both are worth knowing when tiling thin strips (receipts, text lines).
#
# **66 tokens for 224 x 224 (paper §2.1)**, counted by the image processor from its `image_grid_thw`, and the
# patches of the two sample images against the processor's `pixel_values` (the PIL backend: it needs no
# torchvision and runs offline with its defaults):

# %%
processor = Qwen2VLImageProcessorPil()
grid_224 = processor(images=[Image.new("RGB", (224, 224))], return_tensors="pt")["image_grid_thw"]
assert int(grid_224.prod()) // MERGE**2 + 2 == 66  # the processor's count + 2 markers = the paper's number
ref = processor(images=[photo, logo], return_tensors="pt")
err = assert_close(pixel_values, ref["pixel_values"], atol=1e-6, name="pixel_values")
assert torch.equal(grid_thw, ref["image_grid_thw"])
print(f"224 x 224: grid {grid_224.tolist()} -> {int(grid_224.prod()) // 4} + 2 = 66 tokens (paper §2.1)")
print(f"pixel_values {tuple(pixel_values.shape)}: max abs error {error_bound(err)}; grid_thw {grid_thw.tolist()} equal")

# %% [markdown]
# **The vision tower on images.** A tiny random tower (2 blocks, width 64, 4 heads, merger to 96) with the
# default patch, merge and temporal sizes; our `vit_forward` reads its weights. First the pieces (patch
# positions, 2D RoPE tables, `PatchEmbed` = linear map) and the offset property of derivation 3; the whole
# forward and the merger on the two packed images follow:

# %%
from transformers.models.qwen2_vl.modeling_qwen2_vl import PatchMerger, apply_rotary_pos_emb_vision
from transformers.vision_utils import get_vision_position_ids

tiny_vit = Qwen2VLVisionConfig(depth=2, embed_dim=64, num_heads=4, hidden_size=96, mlp_ratio=2)
tower = Qwen2VisionTransformerPretrainedModel(tiny_vit).eval()
head_dim = tiny_vit.embed_dim // tiny_vit.num_heads

assert torch.equal(vit_pos, get_vision_position_ids(grid_thw, MERGE))
assert torch.equal(vit_pos, vision_position_ids(grid_thw, MERGE))
cos_v, sin_v = vit_rope(vit_pos, head_dim)
ref_cos, ref_sin = tower.rotary_pos_emb(pixel_values, get_vision_position_ids(grid_thw, MERGE))
err_cos = assert_close(cos_v, ref_cos, atol=1e-6, name="vision cos")
assert_close(sin_v, ref_sin, atol=1e-6, name="vision sin")
assert_close(cos_v, vision_rope_cos_sin(vit_pos, head_dim)[0], atol=1e-6, name="shared vision cos")
q, k = torch.randn(2, len(vit_pos), 4, head_dim).unbind(0)
err_q = assert_close(apply_rope(q, cos_v[:, None], sin_v[:, None]),
                     apply_rotary_pos_emb_vision(q, k, ref_cos, ref_sin)[0], atol=1e-5, name="rotated q")
with torch.no_grad():
    err_pe = assert_close(pixel_values @ tower.patch_embed.proj.weight.reshape(64, -1).T,
                          tower.patch_embed(pixel_values), atol=1e-5, name="PatchEmbed")
print(f"2D positions equal; cos error {error_bound(err_cos)}; rotated q error {error_bound(err_q)}; "
      f"Conv3d = linear map: error {error_bound(err_pe, 1e-4)}")

# derivation 3's claim, on HF's tables: the score depends only on the 2D offset (here (+2, +3) twice, then (+3, +2))
q1, k1 = torch.randn(2, 1, 1, head_dim).unbind(0)  # (1, 1, d): one token, one head


def score(pos_q: tuple[int, int], pos_k: tuple[int, int]) -> float:
    """<R(pos_q) q1, R(pos_k) k1> with transformers' 2D RoPE tables and rotation."""
    cq, sq = tower.rotary_pos_emb(q1, torch.tensor([pos_q]))
    ck, sk = tower.rotary_pos_emb(k1, torch.tensor([pos_k]))
    return (apply_rotary_pos_emb_vision(q1, q1, cq, sq)[0] * apply_rotary_pos_emb_vision(k1, k1, ck, sk)[0]).sum().item()


s1, s2, s3 = score((0, 0), (2, 3)), score((5, 7), (7, 10)), score((0, 0), (3, 2))
assert abs(s1 - s2) < 1e-5 and abs(s1 - s3) > 1e-2
print(f"score at offset (2, 3) from (0, 0) and from (5, 7): {s1:.3f}, {s2:.3f}; at offset (3, 2): {s3:.3f}")


# %% [markdown]
# Then the whole forward. One helper runs the tower's own forward and `vit_forward` on the same packed rows and
# compares the patch features (`last_hidden_state`) and the merged tokens (`pooler_output`); it serves the two
# images here and the video below:

# %%
def check_tower(rows: torch.Tensor, grid: torch.Tensor, what: str) -> tuple[tuple, tuple, str, str]:
    """vit_forward vs the tower on packed rows (n, 1176): shapes of features (n, C) and tokens (n/4, d_llm), errors."""
    with torch.no_grad():
        out = tower(rows, grid_thw=grid)
        feats, tokens = vit_forward(tower, rows, grid)
    err_f = assert_close(feats, out.last_hidden_state, atol=1e-4, name=f"{what} features")
    err_t = assert_close(tokens, out.pooler_output, atol=1e-4, name=f"{what} merged tokens")
    return tuple(feats.shape), tuple(tokens.shape), error_bound(err_f, 1e-4), error_bound(err_t, 1e-4)


f_shape, t_shape, f_err, t_err = check_tower(pixel_values, grid_thw, "ViT image")
print(f"ViT features {f_shape}: max abs error {f_err}; merged tokens {t_shape}: {t_err}")

# %% [markdown]
# **Packed attention without the mask.** `vit_forward` builds the $n \times n$ block-diagonal mask
# `same_segment`, which grows with the square of the patch count. The course's FlashAttention kernel
# (`shared.kernels.flash_attention`, [F7](../foundations/F7_fast_attention.ipynb)) takes the segment boundaries
# instead, `cu_seqlens = [0, l_0, l_0 + l_1, ...]` (here the two images, 1512 and 380 patches), and never visits a
# tile of keys outside a query's segment. On a GPU this cell runs the kernel; on a CPU the PyTorch reference in
# `shared`. It must equal attention with `vit_forward`'s own mask:

# %%
from shared.kernels.flash_attention import flash_attention

frame_len = torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0])  # patches per segment
cu_seqlens = F.pad(torch.cumsum(frame_len, 0), (1, 0))  # (segments + 1,)
segment = torch.repeat_interleave(torch.arange(len(frame_len)), frame_len)
same_segment = segment[:, None] == segment[None, :]  # (n, n), as in vit_forward
qa, ka, va = torch.randn(3, 1, 4, len(segment), head_dim).unbind(0)  # (1, heads, n, head_dim): one packed row
dense = F.scaled_dot_product_attention(qa, ka, va, attn_mask=same_segment)
packed = flash_attention(qa.to(device), ka.to(device), va.to(device), cu_seqlens=cu_seqlens.to(device))
err_pack = assert_close(packed.cpu(), dense, atol=1e-4, name="packed attention")
print(f"cu_seqlens {cu_seqlens.tolist()}: shared.kernels.flash_attention on {device.type} equals SDPA with the "
      f"{len(segment)} x {len(segment)} block-diagonal mask within 1e-4")

# %% [markdown]
# **The video path.** `transformers`' own video processor (`Qwen2VLVideoProcessor`) imports `torchvision`, which
# the course does not install, so 6.7's rows cannot be compared with it directly; instead the video path is checked
# against a plain convolution and against the tower. The frame sampling itself is computed with a transcription of
# `qwen-vl-utils` (6.7), not checked against the running package. First the layout of 6.7's video rows against a
# plain `torch` `Conv3d` with kernel = stride = (2, 14, 14) run over the whole (channel, time, height, width)
# video, which never sees `patchify`: row $r$ must equal the convolution's output at that row's (temporal patch,
# patch row, patch column). Then the tower's video path (three temporal patches, each its own attention segment)
# against `vit_forward`. Since the segments are per temporal patch, the ViT never mixes information across seconds:
# time is mixed only inside a 2-frame tube and, later, by the LLM through the temporal ids:

# %%
with torch.no_grad():
    conv = F.conv3d(video.permute(1, 0, 2, 3)[None], tower.patch_embed.proj.weight,
                    stride=(TEMPORAL, PATCH, PATCH))[0]  # (64, 3, 24, 24): channel, t, patch row, patch col
    t_of_row = torch.arange(video_grid[0]).repeat_interleave(video_grid[1] * video_grid[2])  # (1728,)
    rc = vit_positions(video_grid_thw)  # (1728, 2)
    err_layout = assert_close(tower.patch_embed(video_rows), conv[:, t_of_row, rc[:, 0], rc[:, 1]].T,
                              atol=1e-4, name="video rows vs Conv3d")
print(f"video rows {tuple(video_rows.shape)} through PatchEmbed vs a Conv3d over the whole clip: "
      f"{error_bound(err_layout, 1e-4)}")

# %% [markdown]
# Then the tower's own video path (three temporal patches, three attention segments) against `vit_forward`, with
# the same `check_tower`:

# %%
f_shape, t_shape, f_err, t_err = check_tower(video_rows, video_grid_thw, "ViT video")
print(f"tower video features {f_shape}: {f_err}; merged video tokens {t_shape}: {t_err}")

# %% [markdown]
# The merger alone against a stand-alone `PatchMerger` whose weights we copy (a second, independent check of
# derivation 4):

# %%
pm = PatchMerger(dim=48, context_dim=32, spatial_merge_size=2).eval()
mine = torch.nn.Module()
mine.ln_q = torch.nn.LayerNorm(32)
mine.mlp = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.GELU(), torch.nn.Linear(128, 48))
mine.load_state_dict(pm.state_dict())  # same parameter names: copy the weights
x = torch.randn(24, 32)  # 24 patch features = 6 merge blocks
with torch.no_grad():
    err_m = assert_close(merger(x, mine), pm(x), atol=1e-6, name="PatchMerger")
print(f"merger (24, 32) -> {tuple(pm(x).shape)}: max abs error vs PatchMerger {error_bound(err_m)}")

# %% [markdown]
# **M-RoPE ids** of 6.4 and of the video of 6.7 against `Qwen2VLModel.get_rope_index` (a tiny random model;
# `get_rope_index` only reads `mm_token_type_ids` and the grids) and `shared.mrope`, then the cos/sin tables
# against `Qwen2VLRotaryEmbedding` with the released section $[16, 24, 24]$ and head dim 128:

# %%
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel, Qwen2VLRotaryEmbedding

tiny_text = dict(hidden_size=256, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=64, bos_token_id=0, eos_token_id=1,
                 rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
qwen2_vl = Qwen2VLModel(Qwen2VLConfig(vision_config=dict(depth=1, embed_dim=16, hidden_size=256, num_heads=2),
                                      text_config=tiny_text)).eval()


def hf_rope_index(types: list[int], image_grids=None, video_grids=None) -> tuple[torch.Tensor, torch.Tensor]:
    tt = torch.tensor([types])
    return qwen2_vl.get_rope_index(torch.zeros_like(tt), tt, image_grid_thw=image_grids, video_grid_thw=video_grids)


ref_ids, ref_delta = hf_rope_index(types, torch.tensor(grids[:1]), torch.tensor(grids[1:]))
ours_shared, delta = mrope_position_ids(torch.tensor([types]), torch.tensor(grids[:1]), torch.tensor(grids[1:]))
assert torch.equal(ids, ref_ids[:, 0]) and torch.equal(ours_shared, ref_ids)
assert rope_delta(ids) == ref_delta.item() == delta.item()
ref_vid, ref_vdelta = hf_rope_index(video_types, video_grids=video_grid_thw)
assert torch.equal(video_ids, ref_vid[:, 0]) and rope_delta(video_ids) == ref_vdelta.item()
print(f"M-RoPE ids and rope_deltas ({rope_delta(ids)}, video {rope_delta(video_ids)}) equal get_rope_index "
      "and shared.mrope")

# a padded batch of both sequences (left padding for the shorter one), as generation batches them
L = max(len(types), len(video_types))
batch_types = torch.tensor([[0] * (L - len(types)) + types, video_types])  # (2, 443)
mask = torch.tensor([[0] * (L - len(types)) + [1] * len(types), [1] * L])  # (2, 443)
hf_b, hf_bd = qwen2_vl.get_rope_index(torch.zeros_like(batch_types), batch_types, attention_mask=mask,
                                      image_grid_thw=torch.tensor(grids[:1]),
                                      video_grid_thw=torch.tensor([grids[1], video_grid]))
assert torch.equal(hf_b[:, 0, L - len(types):], ids) and torch.equal(hf_b[:, 1], video_ids)
assert hf_bd.flatten().tolist() == [rope_delta(ids), rope_delta(video_ids)]
print(f"padded batch {tuple(batch_types.shape)}: ids and rope_deltas {hf_bd.flatten().tolist()} equal ours per sequence")

rotary = Qwen2VLRotaryEmbedding(Qwen2VLTextConfig(**tiny_text))
ref_cos, ref_sin = rotary(torch.zeros(1, len(types), 128), ref_ids)
err_c = assert_close(cos_m[None], ref_cos, atol=1e-6, name="M-RoPE cos")
err_s = assert_close(sin_m[None], ref_sin, atol=1e-6, name="M-RoPE sin")
assert_close(cos_m[None], mrope_cos_sin(ref_ids, rope_inv_freq(128, 1e6), [16, 24, 24])[0], atol=1e-6)
print(f"M-RoPE cos/sin vs Qwen2VLRotaryEmbedding: max abs error {error_bound(max(err_c, err_s))}")

# %% [markdown]
# **The fused M-RoPE kernel.** In a model the tables above are only an intermediate: the course's Triton kernel
# `shared.kernels.mrope_qk` (in `shared/kernels/rope.py`, tested under Triton's interpreter) takes the
# `(3, batch, seq)` ids themselves, picks each frequency's axis by `mrope_section` and computes the angles inside
# the kernel, rotating q and k in one launch. On a GPU this cell runs it; on a CPU the PyTorch reference in
# `shared`, with the same signature. It must rotate q and k as `transformers`' `apply_rotary_pos_emb` does with
# the `Qwen2VLRotaryEmbedding` tables:

# %%
from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb

from shared.kernels.rope import mrope_qk

q_t, k_t = torch.randn(2, 1, 2, len(types), 128).unbind(0)  # (batch, heads, seq, head_dim); k: 2 heads too
q_hf, k_hf = apply_rotary_pos_emb(q_t, k_t, ref_cos, ref_sin)
q_mk, k_mk = mrope_qk(q_t.to(device), k_t.to(device), ref_ids.to(device), rope_inv_freq(128, 1e6).to(device),
                      mrope_section=[16, 24, 24])
err_mk = max(assert_close(q_mk.cpu(), q_hf, atol=1e-4, name="fused M-RoPE q"),
             assert_close(k_mk.cpu(), k_hf, atol=1e-4, name="fused M-RoPE k"))
print(f"shared.kernels.mrope_qk on {device.type}: q and k equal transformers' M-RoPE rotation within 1e-4")

# %% [markdown]
# **M-RoPE reduces to 1D RoPE on text** (derivation 6): for a text-only sequence the ids are $0, 1, 2, \dots$ on
# all three axes, and Qwen2-VL's tables equal those of the Qwen2 LLM's plain `Qwen2RotaryEmbedding`:

# %%
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

n = 50
text_ids, text_delta = mrope_position_ids(torch.zeros(1, n, dtype=torch.long))
assert torch.equal(text_ids, torch.arange(n).expand(3, 1, n)) and text_delta.item() == 0
qwen2_rotary = Qwen2RotaryEmbedding(Qwen2Config(hidden_size=256, num_attention_heads=2,
                                                rope_parameters={"rope_type": "default", "rope_theta": 1e6}))
cos_1d, sin_1d = qwen2_rotary(torch.zeros(1, n, 128), torch.arange(n)[None])
cos_3d, sin_3d = rotary(torch.zeros(1, n, 128), text_ids)
err_1d = max(assert_close(cos_3d, cos_1d, atol=0, rtol=0), assert_close(sin_3d, sin_1d, atol=0, rtol=0))
print(f"text only: the M-RoPE tables equal the 1D RoPE tables bit for bit (max abs difference {err_1d})")

# %% [markdown]
# **End to end.** A tiny random `Qwen2VLForConditionalGeneration` (1 ViT block of width 32, a 1-layer LLM of
# width 64 with head dim 32, so `mrope_section` $[4, 6, 6]$) reads a prompt with the logo (95 tokens) and the
# generated video of 6.7 (432 tokens). The model's own path (`input_ids`, `pixel_values`, grids,
# `mm_token_type_ids`) against the reading's: vision tokens from `vit_forward` written into the text
# embeddings at the pad positions, and position ids from `mrope_ids`, passed as `inputs_embeds` and
# `position_ids`.

# %%
from transformers import Qwen2VLForConditionalGeneration

e2e_text = dict(hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, vocab_size=64, bos_token_id=0, eos_token_id=1, initializer_range=0.1,
                rope_parameters={"rope_type": "default", "rope_theta": 100.0, "mrope_section": [4, 6, 6]})
IMG, VID, VSTART, VEND = 60, 61, 62, 63  # a 64-word vocabulary: the last four ids are the special tokens
e2e_cfg = Qwen2VLConfig(vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, initializer_range=0.1),
                        text_config=e2e_text, image_token_id=IMG, video_token_id=VID,
                        vision_start_token_id=VSTART, vision_end_token_id=VEND)
torch.manual_seed(0)
vlm = Qwen2VLForConditionalGeneration(e2e_cfg).eval()

n_logo = int(torch.tensor(logo_grid).prod()) // MERGE**2
prompt_ids = [5, 6, VSTART] + [IMG] * n_logo + [VEND, 7, VSTART] + [VID] * n_video + [VEND, 8, 9, 10]
input_ids = torch.tensor([prompt_ids])  # (1, 537)
mm_types = (input_ids == IMG).long() + 2 * (input_ids == VID).long()  # (1, 537): 0 text, 1 image, 2 video
with torch.no_grad():
    ref_logits = vlm(input_ids=input_ids, mm_token_type_ids=mm_types, pixel_values=logo_rows,
                     image_grid_thw=torch.tensor([logo_grid]), pixel_values_videos=video_rows,
                     video_grid_thw=video_grid_thw).logits  # (1, 537, 64)
    embeds = vlm.get_input_embeddings()(input_ids)  # (1, 537, 64)
    embeds[input_ids == IMG] = vit_forward(vlm.model.visual, logo_rows, torch.tensor([logo_grid]))[1]
    embeds[input_ids == VID] = vit_forward(vlm.model.visual, video_rows, video_grid_thw)[1]
    e2e_ids = mrope_ids(mm_types[0].tolist(), [logo_grid, video_grid])[:, None]  # (3, 1, 537)
    our_logits = vlm(inputs_embeds=embeds, position_ids=e2e_ids).logits
err_e2e = assert_close(our_logits, ref_logits, atol=1e-4, name="end-to-end logits")
print(f"logits {tuple(our_logits.shape)} from our vision tokens and position ids vs the model's own path: "
      f"max abs error {error_bound(err_e2e, 1e-4)}")

# %% [markdown]
# **The end-to-end check is loud on positions.** The tiny LLM uses `rope_theta` $= 100$ instead of $10^6$, so
# that even its slowest pairs turn noticeably per id, and weights drawn with std 0.1 instead of 0.02, so that
# its attention is far from uniform and its vision tokens are not negligible; with the defaults a wrong position would move the random logits by only
# about $10^{-3}$ or less, too close to the tolerance to trust. Three wrong inputs, each must move the logits by
# more than 100 times the tolerance of $10^{-4}$: the video block shifted by one id (an off-by-one start),
# the video's height and width ids swapped, and two image tokens written in the wrong order.

# %%
vid_cols = (input_ids[0] == VID).nonzero().squeeze(1)  # (432,) positions of the video tokens
shifted = e2e_ids.clone()
shifted[:, :, vid_cols] += 1  # the video starts one id late
swapped = e2e_ids.clone()
swapped[1:3, :, vid_cols] = e2e_ids[[2, 1]][:, :, vid_cols]  # height and width ids exchanged
img_cols = (input_ids[0] == IMG).nonzero().squeeze(1)
reordered = embeds.clone()
reordered[0, img_cols[[0, 50]]] = embeds[0, img_cols[[50, 0]]]  # image tokens 0 and 50 swapped
with torch.no_grad():
    moved = {"video ids + 1": vlm(inputs_embeds=embeds, position_ids=shifted).logits,
             "video h <-> w ids": vlm(inputs_embeds=embeds, position_ids=swapped).logits,
             "image tokens 0, 50 swapped": vlm(inputs_embeds=reordered, position_ids=e2e_ids).logits}
for name, logits in moved.items():
    delta = (logits - ref_logits).abs().max().item()
    print(f"{name:26s}: logits move by {delta:.2g} (tolerance 1e-04)")
    assert delta > 100 * 1e-4, name

# %% [markdown]
# **Where `transformers` 5.23 departs from the paper: a regression, not a second reading.** In short: the
# paper's rule (the next block starts at the largest id + 1) is right; `transformers` 5.3.0 and later start it
# lower after a long video, and no release has fixed that yet.
#
# - **The two rules.** 5.23's `get_rope_index` advances the start after a vision block by
#   `current_pos += max(grid_thw[1], grid_thw[2]) // spatial_merge_size`. The paper (§2.1), `transformers` 4.49
#   to 5.2 (every release read here: `st_idx = llm_pos_ids_list[-1].max() + 1`), vLLM
#   ([`get_mrope_input_positions`](https://github.com/vllm-project/vllm/blob/002d181a55a03803d7d69547846630069d2378b8/vllm/model_executor/models/qwen2_vl.py))
#   and the Qwen team's fine-tuning code
#   ([`qwen-vl-finetune/qwenvl/data/rope2d.py`](https://github.com/QwenLM/Qwen3-VL/blob/96588727e44c78b25ba03ea03b8e12f7e64fd0da/qwen-vl-finetune/qwenvl/data/rope2d.py),
#   `get_rope_index_2`, the same line) start at the largest id + 1.
# - **Upstream.** The new loop shipped in 5.3.0. Issue
#   [huggingface/transformers#45381](https://github.com/huggingface/transformers/issues/45381) reported 5.3.0's
#   video ids for Qwen2.5-VL: text after a video started at 348 in 5.2.0 (largest temporal id 347 + 1) and at 31
#   in 5.3.0 (start 15 + 16 merged columns). Its fix, [PR #45400](https://github.com/huggingface/transformers/pull/45400)
#   ("Fix Qwen2.5VL temporal grid positions"), repaired the temporal ids inside the video only: the advance is
#   unchanged in 5.23.0 and in 5.24.0, the latest release, so that text would still start at 31, inside the
#   video's temporal range 15..347.
# - **5.2.0 generates from the wrong id.** 4.49 to 5.2 follow the paper's rule for where blocks start, but
#   decoding also reads `rope_deltas`, and in 5.2.0 Qwen2-VL's `get_rope_index` clamps it at 0:
#   `mrope_position_deltas.append(max(llm_positions.max() + 1 - len(total_input_ids[i]), 0))`
#   ([`modeling_qwen2_vl.py` at v5.2.0](https://github.com/huggingface/transformers/blob/v5.2.0/src/transformers/models/qwen2_vl/modeling_qwen2_vl.py)).
#   Of the releases read for this (4.49.0, 4.51.3, 4.52.0, 4.52.1, 4.57.6, 5.0.0, 5.1.0, 5.2.0, 5.3.0, 5.17.0,
#   5.18.0, 5.24.0 and the installed 5.23), only 5.2.0 has the clamp: not its neighbours 5.1.0 and 5.3.0, and
#   not Qwen2.5-VL's code in 5.2.0. Any image or video with at least 2 merged rows and 2 merged columns has more
#   tokens than ids, so the true delta is negative and the clamp fires: generation continues at the prompt
#   length, not at the largest id + 1. On 6.4's sequence the delta of -12 becomes 0 and the first generated
#   token gets id 31 instead of 19 (5.2.0's function run from its wheel, outside this notebook; the course pins
#   5.23). So of those releases, 4.49.0 to 5.1.0 have both the paper's block starts and an unclamped delta.
# - **When it fires.** An image's largest id is $s + \max(H', W') - 1$, so both rules agree on images. A video's is
#   $s + \max(T, H', W') - 1$, so they differ exactly when $T > \max(H', W')$. With `qwen-vl-utils` at 2 fps,
#   $T = \lfloor \text{duration in s} \rfloor$ temporal patches up to 384 (its cap of 768 frames), and
#   $\max(H', W')$ is the longer resized side over 28: at 448 x 448, any video of 17 s or more. The total-pixel budget of long videos
#   lowers the resolution, which makes it fire earlier. `get_rope_index` itself shows it below (ids only, no
#   model).
# - **What it costs in practice.** Fine-tuning on such videos with code that leaves the ids to `transformers`
#   5.3 or later trains on positions that vLLM and `transformers` 4.x will not reproduce at inference: a
#   mismatch between training and serving. The official fine-tuning scripts are not affected: they compute
#   the ids with their own `rope2d.py` and pass them in.
#
# Where the two rules diverge, the reading's ids are checked against two more computations that do not share
# its code: `shared.mrope.mrope_position_ids`, and `transformers` 4.57's `Qwen2VLModel.get_rope_index`
# ([`modeling_qwen2_vl.py` at v4.57.0](https://github.com/huggingface/transformers/blob/v4.57.0/src/transformers/models/qwen2_vl/modeling_qwen2_vl.py)),
# transcribed below for one unpadded sequence. It finds each block from the token after a `<|vision_start|>`
# and starts every block at `st_idx = llm_pos_ids_list[-1].max() + 1`, the paper's rule:

# %%
def rope_index_457(tokens: torch.Tensor, image_grid_thw=None, video_grid_thw=None) -> tuple[torch.Tensor, int]:
    """transformers 4.57 Qwen2VLModel.get_rope_index, transcribed for one sequence (no padding): ids (3, seq), delta."""
    input_tokens = tokens.tolist()
    vision_tokens = tokens[torch.argwhere(tokens == VSTART).squeeze(1) + 1]  # the token after each vision_start
    remain_images, remain_videos = int((vision_tokens == IMG).sum()), int((vision_tokens == VID).sum())
    llm_pos_ids_list, st, image_index, video_index = [], 0, 0, 0
    for _ in range(remain_images + remain_videos):
        ed_image = input_tokens.index(IMG, st) if IMG in input_tokens and remain_images > 0 else len(input_tokens) + 1
        ed_video = input_tokens.index(VID, st) if VID in input_tokens and remain_videos > 0 else len(input_tokens) + 1
        if ed_image < ed_video:
            t, h, w = image_grid_thw[image_index]
            image_index, remain_images, ed = image_index + 1, remain_images - 1, ed_image
        else:
            t, h, w = video_grid_thw[video_index]
            video_index, remain_videos, ed = video_index + 1, remain_videos - 1, ed_video
        llm_grid_t, llm_grid_h, llm_grid_w = t.item(), h.item() // MERGE, w.item() // MERGE
        text_len = ed - st
        st_idx = llm_pos_ids_list[-1].max() + 1 if len(llm_pos_ids_list) > 0 else 0  # largest id + 1
        llm_pos_ids_list.append(torch.arange(text_len).view(1, -1).expand(3, -1) + st_idx)
        t_index = torch.arange(llm_grid_t).view(-1, 1).expand(-1, llm_grid_h * llm_grid_w).flatten()
        h_index = torch.arange(llm_grid_h).view(1, -1, 1).expand(llm_grid_t, -1, llm_grid_w).flatten()
        w_index = torch.arange(llm_grid_w).view(1, 1, -1).expand(llm_grid_t, llm_grid_h, -1).flatten()
        llm_pos_ids_list.append(torch.stack([t_index, h_index, w_index]) + text_len + st_idx)
        st = ed + llm_grid_t * llm_grid_h * llm_grid_w
    if st < len(input_tokens):
        st_idx = llm_pos_ids_list[-1].max() + 1 if len(llm_pos_ids_list) > 0 else 0
        llm_pos_ids_list.append(torch.arange(len(input_tokens) - st).view(1, -1).expand(3, -1) + st_idx)
    llm_positions = torch.cat(llm_pos_ids_list, dim=1).reshape(3, -1)
    return llm_positions, int(llm_positions.max()) + 1 - len(input_tokens)


def as_tokens(kinds: list[int]) -> torch.Tensor:
    """Token ids for a list of kinds (0 text, 1 image, 2 video): vision_start before each block, text id 5 else."""
    tok = torch.tensor([{0: 5, 1: IMG, 2: VID}[k] for k in kinds])
    starts = [i for i in range(len(kinds) - 1) if kinds[i] == 0 and kinds[i + 1] != 0]
    tok[starts] = VSTART
    return tok


def check_paper_rule(kinds: list[int], video_grids: list[list[int]]) -> None:
    """The reading's ids == shared.mrope == transformers 4.57 (transcribed), with rope_deltas."""
    ours = mrope_ids(kinds, video_grids)
    shared_ids, shared_delta = mrope_position_ids(torch.tensor([kinds]), video_grid_thw=torch.tensor(video_grids))
    ids_457, delta_457 = rope_index_457(as_tokens(kinds), video_grid_thw=torch.tensor(video_grids))
    assert torch.equal(ours, shared_ids[:, 0]) and torch.equal(ours, ids_457)
    assert rope_delta(ours) == shared_delta.item() == delta_457


# %% [markdown]
# Now the next text id after one video, by 5.23 and by the paper's rule, for durations around the 16 s where
# they part:

# %%
def next_text_id(seconds: int, side_px: int = 448) -> tuple[int, int]:
    """Id of the first text token after one video of `seconds` s at 2 fps (after 1 text token): (5.23, paper)."""
    g = [seconds, side_px // PATCH, side_px // PATCH]
    kinds = [0] + [2] * (g[0] * g[1] * g[2] // MERGE**2) + [0]
    hf_ids, _ = hf_rope_index(kinds, video_grids=torch.tensor([g]))
    return int(hf_ids[0, 0, -1]), int(mrope_ids(kinds, [g])[0, -1])


for s in (15, 16, 17, 30):
    hf_next, paper_next = next_text_id(s)
    print(f"{s:>2d} s at 448x448 (largest temporal id {s}): text after it gets {hf_next} in 5.23, {paper_next} by "
          f"the paper's rule{'' if hf_next == paper_next else '  <- differs'}")
assert next_text_id(16) == (17, 17) and next_text_id(17) == (17, 18)
for s in (16, 17, 30):  # the paper's rule, three ways, where 5.23 departs from it
    g = [s, 32, 32]
    check_paper_rule([0] + [2] * (g[0] * g[1] * g[2] // MERGE**2) + [0], [g])
print("paper-rule ids for 16, 17 and 30 s equal shared.mrope and transformers 4.57's get_rope_index (transcribed)")

# %% [markdown]
# **Two videos overlap.** A 30 s clip, a short question, a second 30 s clip (both 448 x 448): in 5.23 the second
# video starts inside the first one's temporal range, so tokens of different videos share temporal ids.

# %%
g30 = [30, 32, 32]
n30 = 30 * 16 * 16
two = [0] + [2] * n30 + [0] * 3 + [2] * n30 + [0]
hf_two, _ = hf_rope_index(two, video_grids=torch.tensor([g30, g30]))
paper_two = mrope_ids(two, [g30, g30])
for name, t_ids in [("5.23", hf_two[0, 0]), ("paper", paper_two[0])]:
    first, second = t_ids[1:1 + n30], t_ids[4 + n30:4 + 2 * n30]
    shared_ids = sorted(set(first.tolist()) & set(second.tolist()))
    print(f"{name:5s}: video 1 temporal ids {int(first.min())}..{int(first.max())}, video 2 "
          f"{int(second.min())}..{int(second.max())}; shared temporal ids: {len(shared_ids)}")
assert len(set(hf_two[0, 0, 1:1 + n30].tolist()) & set(hf_two[0, 0, 4 + n30:4 + 2 * n30].tolist())) > 0
check_paper_rule(two, [g30, g30])  # the paper's ids of both videos, against shared.mrope and 4.57
print("paper-rule ids of the two videos equal shared.mrope and transformers 4.57's get_rope_index (transcribed)")

# %% [markdown]
# The same ids, drawn: the paper's rule climbs past the first video before the second starts; 5.23's dashed
# line drops back into the first video's range.

# %%
fig, ax = plt.subplots(figsize=(7, 2.8))
ax.plot(paper_two[0].numpy(), label="paper / 4.x / vLLM: largest id + 1", lw=1.5)
ax.plot(hf_two[0, 0].numpy(), label="transformers 5.23: start + max(h, w) / 2", lw=1.5, ls="--")
ax.axvspan(1, 1 + n30, color="tab:blue", alpha=0.08)
ax.axvspan(4 + n30, 4 + 2 * n30, color="tab:orange", alpha=0.08)
ax.set(xlabel="token index (shaded: video 1, video 2)", ylabel="temporal id",
       title="two 30 s videos at 448 x 448: the second starts inside the first in 5.23")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **5.23 is inconsistent with itself.** Generation continues from `rope_deltas` = largest id + 1 - length, the
# paper's rule, while `get_rope_index` on the same tokens places text after a long video lower. With the tiny
# model: a 6-temporal-patch video of 2 x 2 merged tokens (as if the frames were 56 x 56), then 3 text tokens;
# then one more token, once in a single full forward (ids from `get_rope_index`) and once decoded from the
# KV cache (ids from `rope_deltas`). They put the same token at different positions, and its logits differ.
# With the paper's ids both paths agree.

# %%
from transformers import DynamicCache

g6 = torch.tensor([[6, 4, 4]])
vid6 = torch.randn(6 * 16, 1176, generator=torch.Generator().manual_seed(1))  # (96, 1176) random frames
short = torch.tensor([[5, VSTART] + [VID] * 24 + [VEND, 7, 8]])  # (1, 29)
longer = torch.cat([short, torch.tensor([[9]])], dim=1)  # (1, 30): one more token
types_s, types_l = 2 * (short == VID).long(), 2 * (longer == VID).long()
with torch.no_grad():
    full_ids, _ = vlm.model.get_rope_index(longer, types_l, video_grid_thw=g6)
    full = vlm(input_ids=longer, mm_token_type_ids=types_l, pixel_values_videos=vid6, video_grid_thw=g6).logits
    vlm.model.rope_deltas = None
    pre = vlm(input_ids=short, mm_token_type_ids=types_s, pixel_values_videos=vid6, video_grid_thw=g6,
              past_key_values=DynamicCache(config=e2e_cfg), use_cache=True)
    hf_delta = int(vlm.model.rope_deltas)
    step = vlm(input_ids=longer[:, -1:], mm_token_type_ids=types_l[:, -1:], past_key_values=pre.past_key_values,
               use_cache=True).logits
print(f"5.23: full pass puts the new token at id {int(full_ids[0, 0, -1])}; decoding puts it at 29 + rope_deltas "
      f"({hf_delta}) = {29 + hf_delta}; logits differ by more than 1e-2: "
      f"{(step[0, -1] - full[0, -1]).abs().max().item() > 1e-2}")
assert int(full_ids[0, 0, -1]) != 29 + hf_delta and (step[0, -1] - full[0, -1]).abs().max().item() > 1e-2

# %% [markdown]
# The same two paths with the paper's ids, passed explicitly as `position_ids` to the prefill, the full pass
# and the decoding step: both put the new token at the same id, and the logits agree. The prompt's ids and the
# new token's id (29 + `rope_deltas`) are also compared with the transcribed `transformers` 4.57 rule above.

# %%
with torch.no_grad():
    paper_ids = mrope_ids(types_l[0].tolist(), [[6, 4, 4]])[:, None]  # (3, 1, 30)
    paper_full = vlm(input_ids=longer, pixel_values_videos=vid6, video_grid_thw=g6, mm_token_type_ids=types_l,
                     position_ids=paper_ids).logits
    pre_p = vlm(input_ids=short, pixel_values_videos=vid6, video_grid_thw=g6, mm_token_type_ids=types_s,
                position_ids=paper_ids[..., :29], past_key_values=DynamicCache(config=e2e_cfg), use_cache=True)
    paper_step = vlm(input_ids=longer[:, -1:], position_ids=paper_ids[..., 29:],
                     past_key_values=pre_p.past_key_values, use_cache=True).logits
err_paper = assert_close(paper_step[0, -1], paper_full[0, -1], atol=1e-5, name="paper ids: decode vs full")
ids_457, delta_457 = rope_index_457(short[0], video_grid_thw=g6)  # transformers 4.57's code, not the reading's
assert torch.equal(paper_ids[:, 0, :29], ids_457) and int(paper_ids[0, 0, -1]) == 29 + delta_457
print(f"paper rule: id {int(paper_ids[0, 0, -1])} both ways (= 29 + 4.57's rope_deltas {delta_457}); "
      f"decode vs full logits {error_bound(err_paper, 1e-5)}")

# %% [markdown]
# **Which is right.** The paper's rule: it is what the paper states and what vLLM, `transformers` 4.x and the
# Qwen team's own fine-tuning code compute, and it is the only one of the two that agrees with `transformers`'
# own generation path. For images and for videos with no more temporal patches than merged rows or columns, 5.23
# and the paper agree, and every check above holds bit for bit.
#
# **An older, separate version note: fractional `second_per_grid_ts`** (Qwen2.5-VL's time-aligned ids, V7).
# The release boundaries below come from reading one function, `Qwen2_5_VLModel.get_rope_index`
# (`transformers/models/qwen2_5_vl/modeling_qwen2_5_vl.py`), in the release wheels 4.49.0, 4.50.0, 4.51.0,
# 4.51.3, 4.52.0, 4.52.1, 4.53.0 to 4.56.0, 4.57.0, 4.57.6, 5.0.0, 5.2.0, 5.3.0, 5.16.1 to 5.20.2 and 5.24.0; a
# boundary can only be placed between two releases read.
#
# - 4.49-4.51 multiply the float `second_per_grid_t` into the ids.
# - 4.52.0 (yanked from PyPI, so 4.52.1 is the first installable release with it) through 4.57.6 first cast it
#   with `torch.as_tensor(second_per_grid_t, dtype=range_tensor.dtype)`, an int64: 0.5 s per temporal patch
#   (4 fps) becomes 0 and every temporal id collapses. 5.0-5.2 keep that cast; 5.3.0-5.17.0 truncate with
#   `int(next(second_per_grid_ts))`.
# - [PR #48669](https://github.com/huggingface/transformers/pull/48669) keeps the interval in floating point and
#   floors after multiplying ("Quantization happens after multiplying by the grid index", its description).
#   5.18.0 is the first release with it; 5.23 computes `(torch.arange(llm_grid_t) * time_interval).long()`, as
#   `shared.mrope` does; [`tests/test_mrope.py`](../../tests/test_mrope.py)
#   (`test_fractional_second_per_grid_is_scaled_before_flooring`) checks that against `transformers` 5.23.
#
# The PR's reading is the right one, because the code it must match does the same: vLLM at the pinned commit
# (`get_mrope_input_positions` above, which takes `second_per_grid_ts`) computes
# `(arange * video_second_per_grid_t * tokens_per_second).long()`, and the Qwen team's `rope2d.py`
# (`get_rope_index_25`, linked above) computes `time_tensor = expanded_range * second_per_grid_t * 2` and only
# then `time_tensor.long()`: both floor the product, never the interval. At exactly 2 fps the interval is 1.0 s
# and survives the cast; any interval below 1 s collapses to 0, for instance the "~0.958 for typical videos"
# (a sampled rate slightly above 2 fps) that [lmms-eval PR #1269](https://github.com/EvolvingLMMs-Lab/lmms-eval/pull/1269)
# reports; [lmms-eval#1393](https://github.com/EvolvingLMMs-Lab/lmms-eval/issues/1393) documents the collapse
# for fps > 2. Qwen2-VL's own `get_rope_index` has no time scaling, so this note concerns Qwen2.5-VL only.

# %% [markdown]
# ## Reproduction
#
# The paper's ablations need the trained models, so they are quoted, not rerun ((e)). What can be reproduced
# exactly is the bookkeeping the paper's claims rest on ((a) to (d), deterministic: seeds do not apply); and
# one learning experiment, (f), asks at toy scale a narrower question under §3.3.2's claim (better downstream
# results, "particularly in video benchmarks"): can the rotary code alone carry a 2D relation? It also tests
# this reading's own claim (6.5) that the released split leaves the width axis only slow rotations.
#
# **(a) The token budget of dynamic resolution.** §2.1: "an image with a resolution of 224 × 224 ... will be
# compressed to 66 tokens" (reproduced in §7). Below, the LLM tokens of a 4:3 photo as its side grows, under
# the processor's class defaults, the released limits and the ablation's limits (§3.3.1: `min_pixels`
# $= 100 \cdot 28^2$, `max_pixels` $= 16384 \cdot 28^2$), against the fixed budgets of Table 7.

# %%
LIMITS = {"class defaults (4..1280)": PROCESSOR_DEFAULT, "released (4..16384)": RELEASED,
          "§3.3.1 ablation (100..16384)": dict(min_pixels=100 * 28 * 28, max_pixels=16384 * 28 * 28)}
sides = np.arange(28, 4200, 28)
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for (label, kw), ls in zip(LIMITS.items(), ["-", "--", ":"], strict=True):
    n_tok = [np.prod(smart_resize(int(s), int(s * 4 / 3), **kw)) // 28 ** 2 for s in sides]
    ax.plot(sides, n_tok, ls, label=label)
for fixed in (64, 576, 1600, 3136):
    ax.axhline(fixed, color="grey", lw=0.8, ls=":")
ax.set(xscale="log", yscale="log", xlabel="image height in pixels (4:3 photo)", ylabel="LLM tokens",
       title="tokens follow the pixels (dotted: Table 7's fixed budgets)")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

print(f"{'4:3 photo height':>16s} " + " ".join(f"{k:>29s}" for k in LIMITS))
for h in (112, 480, 1080, 3024, 4000):
    print(f"{h:>16d} " + " ".join(f"{np.prod(smart_resize(h, h * 4 // 3, **kw)) // 28**2:>29d}" for kw in LIMITS.values()))

# %% [markdown]
# Between the limits the token count is proportional to the pixel count (slope 2 against the side), so a small
# icon costs a few tokens and a document scan up to the cap, where a fixed budget spends the same on both. The
# class defaults flatten at about 1230 tokens (just under the cap of 1280, since both sides are floored to
# multiples of 28) from about 870-900 px high on (the 1280-token cap; the shrink branch starts at 896 px); the released limits follow the
# pixels up to 12.8 megapixels.
#
# **(b) The M-RoPE ids of 6.4, drawn** in the manner of the paper's Figure 3: one row per axis, one column per
# token. Text climbs the diagonal with equal ids; the image is a 2 x 3 grid at a constant temporal id; the
# video repeats its 2 x 3 grid at two temporal ids; each block starts one past the largest id before it.

# %%
kind = {0: "text", 1: "image", 2: "video"}
fig, ax = plt.subplots(figsize=(12, 2.4))
ax.imshow(ids.numpy(), cmap="viridis", aspect="auto")
for row in range(3):
    for col in range(len(types)):
        ax.text(col, row, int(ids[row, col]), ha="center", va="center", fontsize=7,
                color="white" if ids[row, col] < ids.max() * 0.6 else "black")
ax.set_yticks(range(3), ["temporal", "height", "width"])
ax.set_xticks(range(len(types)), [kind[t][0].upper() for t in types], fontsize=7)
for col, t in enumerate(types):
    ax.get_xticklabels()[col].set_color({0: "black", 1: "tab:blue", 2: "tab:orange"}[t])
ax.set_xlabel("token (T text, I image 1x4x6 patches = 2x3 tokens, V video 2x4x6 = 2x2x3 tokens)")
ax.set_title("M-RoPE position ids of text + image + video")
plt.tight_layout()
plt.show()

# %% [markdown]
# **(c) Smaller position ids for long videos.** §2.1: M-RoPE "reduces the value of position IDs for images and
# videos, enabling the model to extrapolate to longer sequences". A video sampled at 2 fps has one temporal
# patch per second; with 336 x 448 frames each temporal patch is 12 x 16 = 192 tokens. The largest position id
# after 10 text tokens + the video, with 1D RoPE (one id per token) and with M-RoPE, and the id of the text
# that follows by the paper's rule and in `transformers` 5.23 (§7):

# %%
print(f"{'video':>8s} {'frames':>7s} {'tokens':>7s} {'1D RoPE max id':>15s} {'M-RoPE max id':>14s} "
      f"{'next text: paper':>17s} {'5.23':>5s}")
long_rows = []
for seconds in (4, 16, 30, 60, 120):
    frames = 2 * seconds  # 2 fps
    grid = [frames // TEMPORAL, 336 // PATCH, 448 // PATCH]
    n_vid = grid[0] * grid[1] * grid[2] // MERGE**2
    kinds = [0] * 10 + [2] * n_vid + [0]
    vid_ids = mrope_ids(kinds, [grid])
    hf_next = int(hf_rope_index(kinds, video_grids=torch.tensor([grid]))[0][0, 0, -1])
    long_rows.append((seconds, n_vid, int(vid_ids[:, :-1].max()), int(vid_ids[0, -1]), hf_next))
    print(f"{seconds:>6d} s {frames:>7d} {n_vid:>7d} {10 + n_vid - 1:>15d} {long_rows[-1][2]:>14d} "
          f"{long_rows[-1][3]:>17d} {hf_next:>5d}")

# %% [markdown]
# Once the video is longer than its frames are wide in merged tokens (here 16 s), the M-RoPE ids grow with the
# duration in seconds, not with the token count: a 2-minute video spends 23040 tokens but only reaches id 129.
# (Training capped videos at 16384 tokens by lowering the frame resolution, §2.1.) Small ids are the paper's
# argument for why the 72B model trained on 16K-token videos still works at 80K tokens (Figure 5; that
# evaluation cannot be rerun here). Beyond the same 16 s, 5.23 restarts the text inside the video's temporal
# range (the last column).
#
# **(d) The ViT has about 675M parameters (Table 1).** Count the tower on the meta device (no memory, no
# download) with `Qwen2VLVisionConfig`'s defaults, which `transformers` documents against the
# `Qwen/Qwen2-VL-7B-Instruct` checkpoint (width 1280, 32 blocks, 16 heads, MLP ratio 4, patch 14, temporal
# patch 2, merge 2, output width 3584; compare the released
# [`config.json`](https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct/blob/main/config.json)). The 2B and 72B
# towers differ only in the merger's output width, the LLM's hidden size (1536 and 8192). The count is compared
# with derivation 7's formula, written out independently of the modules; then the whole 7B model, with the LLM
# counted on the meta device in 6.3:

# %%
vit_total = {}
for llm, width in [("2B", 1536), ("7B", 3584), ("72B", 8192)]:
    with torch.device("meta"):
        vit = Qwen2VisionTransformerPretrainedModel(Qwen2VLVisionConfig(hidden_size=width))
    total = sum(p.numel() for p in vit.parameters())
    body = total - sum(p.numel() for p in vit.merger.parameters())
    vit_total[llm] = total
    print(f"Qwen2-VL-{llm:3s} ViT: {total / 1e6:6.1f}M (blocks + patch embed {body / 1e6:.1f}M, "
          f"merger {(total - body) / 1e6:.1f}M)")
block = 4 * 1280 + (1280 * 3840 + 3840) + (1280**2 + 1280) + 2 * 1280 * 5120 + 5120 + 1280  # derivation 7
print(f"derivation 7: {block:,} parameters per block")
assert vit_total["7B"] == 32 * block + 1176 * 1280 + 2 * 1280 + 5120**2 + 5120 + 5120 * 3584 + 3584

llm_7b = llm_params["7B"] + 152064 * 3584  # Qwen2Model (6.3) + the untied output layer (vocabulary x hidden)
assert round(llm_7b / 1e9, 1) == 7.6  # Table 1's LLM size for Qwen2-VL-7B
print(f"Qwen2-VL-7B in all: LLM {llm_7b / 1e9:.2f}B (Table 1: 7.6B) + ViT {vit_total['7B'] / 1e9:.2f}B "
      f"= {(llm_7b + vit_total['7B']) / 1e9:.2f}B")

# %% [markdown]
# 675.8M for the 7B, matching Table 1's 675M; Table 1 lists 675M for all three sizes, but counted exactly the
# 2B's tower is 665.3M and the 72B's 699.4M, since the shared 631.2M body feeds a merger sized for each LLM.
# The model called Qwen2-VL-7B (§2, Table 1) has 8.3B parameters in all, which is why the paper gives the total
# sizes as "2B, 8B, and 72B" (abstract), "2 billion, 8 billion, and 72 billion" (§1) and "2, 8, and 72 billion"
# (conclusion).
#
# **(e) The paper's own ablations, and what each teaches.** Quoted from the paper (no rerun is possible
# without the trained models); the right column says which part of this reading it bears on.
#
# | ablation | setting | result | lesson |
# |---|---|---|---|
# | Table 7, §3.3.1 | Qwen2-VL-7B, fixed 64 / 576 / 1600 / 3136 tokens vs dynamic (1924 on average) | InfoVQA 28.85 / 65.72 / 74.99 / 77.27 vs 75.89; RealWorldQA 56.47 / 65.88 / 69.54 / 70.59 vs 70.07; OCRBench 572 / 828 / 824 / 786 vs 866; MMMU 53.33 / 52.78 / 52.89 / 53.44 vs 53.44 | dynamic resolution is near the best fixed budget on InfoVQA and RealWorldQA with 61% of its tokens, ties it on MMMU, and is best on OCRBench, where more fixed tokens even hurt (786 at 3136): the paper's "no single fixed resolution achieves optimal performance across all benchmarks" |
# | Table 8, §3.3.2 (all 11 columns in the cell below) | pre-trained models, Qwen2-1.5B LLM + ViT-L, 1D RoPE vs M-RoPE | video: NextQA 43.9 vs 46.0, STAR 55.5 vs 57.9, PerceptionTest 46.6 vs 47.4; image: MathVista 39.2 vs 43.4, MMBench 58.6 vs 60.6, four more within 0 to +0.5, RealWorldQA 54.5 vs 53.7, InfoVQA 50.8 vs 50.3 | M-RoPE is ahead on all 3 video benchmarks and, on average, gains more there (+1.8 vs +0.8 points, computed below), which is the paper's "particularly in video benchmarks"; but the largest single gain is an image one (MathVista +4.2), MMBench's +2.0 is as large as NextQA's +2.1, and the other six image columns move by less than 1 point either way. One run per arm, no spread reported: small differences are not established |
# | Figure 5, §3.3.2 | Qwen2-VL-72B on Video-MME (medium) at inference lengths up to 80K tokens | robust beyond the 16K training length | the small ids of (c) are what lets video length extrapolate |
# | Figure 4, §3.3.1 | Qwen2-VL-7B, small images upscaled to above a given `min_pixels` before inference | upscaling helps perception tasks (InfoVQA, HallusionBench, OCRBench), which the paper attributes to the extra computation; too high a `min_pixels` hurts OCRBench, whose many tiny images become out of distribution when blown up; MMMU barely moves | `min_pixels` is a knob worth tuning per task: more tokens help until the resize leaves the training distribution |
# | Figure 6, §3.3.3 | 2B / 7B / 72B; and 7B over the second pre-training stage's tokens | scores grow with model size, mathematics most; over stage-2 tokens AI2D and InfoVQA rise steadily while VQA fluctuates; OCR-type tasks are strong already at small sizes | with the ViT fixed at 675M for every size, the gains come from the LLM's scale and from data, but not on every benchmark at once |
#
# Table 8 in full, as the paper prints it (1D-RoPE, M-RoPE), and the mean gain of each group:

# %%
TABLE8 = {"image": {"MathVista": (39.2, 43.4), "MMB": (58.6, 60.6), "MMStar": (36.7, 36.7), "RWQ": (54.5, 53.7),
                    "DocVQA": (82.5, 82.8), "ChartQA": (68.0, 68.4), "InfoVQA": (50.8, 50.3),
                    "TextVQA": (71.3, 71.8)},
          "video": {"PerceptionTest": (46.6, 47.4), "NextQA": (43.9, 46.0), "STAR": (55.5, 57.9)}}
table8_mean = {}
for group, cols in TABLE8.items():
    gain = {name: round(m_rope - rope_1d, 1) for name, (rope_1d, m_rope) in cols.items()}  # M-RoPE - 1D-RoPE
    table8_mean[group] = sum(gain.values()) / len(gain)
    ahead = sum(g > 0 for g in gain.values())
    print(f"{group}: M-RoPE ahead on {ahead} of {len(gain)}, mean gain {table8_mean[group]:+.2f} points; "
          + ", ".join(f"{k} {g:+.1f}" for k, g in gain.items()))

# %% [markdown]
# **Limits the paper states.** There is no limitations section, but the paper names its limits where it
# reports the results:
#
# - **Long videos** (§3.2.6): in the Video-MME evaluation "we limited the maximum number of frames extracted per
#   video to 768 during evaluation, potentially impacting performance on longer videos. Future work will focus
#   on extending Qwen2-VL to support longer sequences". In training, videos were capped at 16384 tokens by
#   lowering the frame resolution (§2.1). The same 768 bounds the "videos over 20 minutes" of §1 in practice:
#   `qwen-vl-utils` samples at most `FPS_MAX_FRAMES` $= 768$ frames, so above 384 s the rate falls below 2 fps;
#   a 20-minute video gets 768 frames (0.64 fps), $T = 384$ temporal patches.
# - **Navigation and 3D space** (§3.2.7): on vision-language navigation (R2R, REVERIE) Qwen2-VL-72B is
#   comparable to GPT-4o, "but both models fall significantly behind current specialized VLN models"; the paper
#   attributes the gap to "the incomplete and unstructured map information generated by the model from multiple
#   images" and concludes that "accurately modeling maps and locations in a 3D environment remains a major
#   challenge for multimodal models".
# - **Hard reasoning** (§3.1, §3.3.1): on MMMU the 72B "still lags behind GPT-4o to some extent", and raising
#   `min_pixels` barely moves MMMU: "the performance bottleneck in MMMU is more related to the model's reasoning
#   capability rather than image resolution".
# - **More pixels are not always better** (§3.3.1, Figure 4): "a too-high min_pixels value leads to a severe
#   performance decline" on OCRBench, whose tiny images become out of distribution when blown up.
# - **M-RoPE is not ahead everywhere** (Table 8): slightly behind 1D RoPE on RealWorldQA and InfoVQA.
#
# **(f) A toy learning reproduction: which position code lets attention tell left from right?** The claim
# (§3.3.2, Table 8) is that M-RoPE beats 1D RoPE downstream, "particularly in video benchmarks" (mean gain
# +1.8 on video against +0.8 on images, (e)); the paper runs no spatial-relation probe. The toy asks the
# narrower question under that claim, whether the rotary code alone lets attention read a 2D relation. The
# toy: an 8 x 8 grid of patch tokens, two marked tokens A and B, all others alike; one attention head (head
# dim 32, 16 rotary pairs, base $10^6$ as the released LLM) reads from A's position, and a linear layer on its
# output says whether B is **above** A (height task) or **left of** A (width task). The only position
# information is the rotary code on $q$ and $k$, so whatever the head learns about the relation must come
# through those rotations. Three codes, everything else equal:
#
# - **1D RoPE** on the flattened raster id $8h + w$, all 16 pairs;
# - **M-RoPE sectioned** $[4, 6, 6]$ (the released $[16, 24, 24]$ scaled to 16 pairs, so each section starts at
#   the same frequency as in the 7B: the width pairs turn at most $1.8 \times 10^{-4}$ rad per column);
# - **M-RoPE interleaved** (Qwen3-VL's layout, `shared.mrope`'s `"interleaved"`), $[6, 5, 5]$, the counts that
#   layout gives 16 pairs: every axis gets fast and slow pairs.
#
# An image has a constant temporal id, so in both M-RoPE layouts the temporal pairs carry nothing here. The
# toy leaves out on purpose the other channel the real model has: in Qwen2-VL the visual tokens come out of a
# ViT with its own 2D RoPE, so their content already says where they sit. Four more arms put that channel
# back: **+ content position**, each of the three codes on the width task and the sectioned split on the
# height task, with a learned vector per grid cell added to every token before the projections (standing in
# for the position a ViT writes into a patch). Matched budget: per seed the same initial weights and the same
# 250 batches of 128 (A, B) pairs for all arms, Adam at $10^{-2}$, float64; 8 seeds run side by side as a
# batch of independent models; accuracy on 2000 held-out pairs per seed. Two more arms rerun the sectioned
# split without content at twice the steps (500, the same first 250 batches and then 250 more), to tell a
# budget effect from a limit. First the tables, built here from the axis assignment of derivation 6, checked
# against `transformers`' own rotary classes on the same (3, 1, 64) ids: `Qwen2RotaryEmbedding` (plain 1D
# RoPE) on the raster ids, `Qwen2VLRotaryEmbedding` with `mrope_section` [4, 6, 6], and Qwen3-VL's
# `Qwen3VLTextRotaryEmbedding` (interleaved) with [6, 5, 5], all with head dim 32 and base $10^6$:

# %%
from shared.mrope import mrope_axis_of_frequency

torch.set_num_threads(1)  # a training cell: one thread, as every reading that trains
TOY_G, TOY_D, TOY_SEEDS, TOY_STEPS, TOY_BATCH, TOY_HELDOUT = 8, 32, 8, 250, 128, 2000
toy_h, toy_w = (t.flatten() for t in torch.meshgrid(torch.arange(TOY_G), torch.arange(TOY_G), indexing="ij"))
toy_theta = 1e6 ** (-torch.arange(0, TOY_D, 2, dtype=torch.float64) / TOY_D)  # (16,) fast to slow
TOY_CODES = {"1D RoPE (raster 8h + w)": ("sectioned", [16, 0, 0], True),
             "M-RoPE sectioned [4, 6, 6]": ("sectioned", [4, 6, 6], False),
             "M-RoPE interleaved [6, 5, 5]": ("interleaved", [6, 5, 5], False)}


def toy_tables(layout: str, section: list[int], raster: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 cos/sin (64, 32) of the 64 grid cells, and their (3, 64) ids; raster: 1D ids on all axes."""
    ids3 = (toy_h * TOY_G + toy_w).expand(3, -1) if raster else torch.stack([torch.zeros_like(toy_h), toy_h, toy_w])
    axis = mrope_axis_of_frequency(section, layout)  # (16,) which axis drives each pair
    ang = ids3[axis].double().T * toy_theta  # (64, 16): pair i turns by id[axis(i)] * theta_i
    ang = torch.cat([ang, ang], dim=-1)  # rotate-half layout
    return ang.cos(), ang.sin(), ids3


from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLTextConfig
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding

toy_rope = {"rope_type": "default", "rope_theta": 1e6}
toy_dims = dict(hidden_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=TOY_D)
toy_refs = {"1D RoPE (raster 8h + w)": Qwen2RotaryEmbedding(Qwen2Config(**toy_dims, rope_parameters=toy_rope)),
            "M-RoPE sectioned [4, 6, 6]": Qwen2VLRotaryEmbedding(Qwen2VLTextConfig(
                **toy_dims, rope_parameters={**toy_rope, "mrope_section": [4, 6, 6]})),
            "M-RoPE interleaved [6, 5, 5]": Qwen3VLTextRotaryEmbedding(Qwen3VLTextConfig(
                **toy_dims, rope_parameters={**toy_rope, "mrope_section": [6, 5, 5], "mrope_interleaved": True}))}
for name, code in TOY_CODES.items():
    c64, s64, ids3 = toy_tables(*code)
    ref_ids = ids3[0, None] if code[2] else ids3[:, None]  # (1, 64) raster ids for 1D, (3, 1, 64) for M-RoPE
    ref_c, ref_s = toy_refs[name](torch.zeros(1, TOY_G**2, TOY_D), ref_ids)  # (1, 64, 32) float32
    toy_err = max(assert_close(c64.float(), ref_c[0], atol=1e-5, name=name),
                  assert_close(s64.float(), ref_s[0], atol=1e-5, name=name))
    w_pairs = toy_theta[mrope_axis_of_frequency(code[1], code[0]) == 2]
    fastest_w = 1.0 if code[2] else (w_pairs.max().item() if len(w_pairs) else 0.0)
    print(f"{name:30s} = {type(toy_refs[name]).__name__} (max abs error {error_bound(toy_err)}); fastest pair "
          f"driven by the width turns {fastest_w:.1e} rad per column" + (" (via the raster id)" if code[2] else ""))

# %% [markdown]
# The model, written for speed: the query is A's token, so a score needs only the keys of the three token types
# (A, B, unmarked) rotated to the 64 cells. Output $o = \sum_j a_j v_j$, logit $= w^\top o + b$, binary
# cross-entropy. Two forward paths share the attention step:
#
# - **no content position** (`toy_logits_plain`): each token type is one vector, so the 62 unmarked tokens share
#   one key and one value and differ only by their rotation; their share of the output is
#   $(1 - a_A - a_B)\,v_{\text{unmarked}}$;
# - **content position** (`toy_logits_content`): each token is its type's vector plus a learned vector of its
#   cell, so every cell has its own key and value and the unmarked share is a real weighted sum over cells.

# %%
def toy_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin  # rotate-half RoPE (F2)


def toy_batch(n: int, task: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(seeds, n) cells of A and B (distinct) and labels: B above A (height) or B left of A (width)."""
    a = torch.randint(0, TOY_G**2, (TOY_SEEDS, n), generator=gen)
    b = torch.randint(0, TOY_G**2 - 1, (TOY_SEEDS, n), generator=gen)
    b = b + (b >= a)  # never the same cell
    axis = toy_h if task == "height" else toy_w
    return a, b, (axis[b] < axis[a]).double()


def toy_cell(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """Rows of t (S, 64, D), one per cell, at cells i (S, n) -> (S, n, D)."""
    return t.gather(1, i[..., None].expand(-1, -1, TOY_D))


def toy_attention(q, key_everywhere, k_a, k_b, a, b, cos, sin) -> torch.Tensor:
    """Softmax weights (S, n, 64) of A's query q (S, n, D): the unmarked key (S, 1 or 64, D) rotated to every cell,
    then A's key k_a and B's key k_b (S, 1 or n, D) rotated to their own cells and written over their columns."""
    scores = q @ toy_rotate(key_everywhere, cos, sin).transpose(1, 2)  # (S, n, 64)
    s_a = (q * toy_rotate(k_a, cos[a], sin[a])).sum(-1, keepdim=True)  # (S, n, 1)
    s_b = (q * toy_rotate(k_b, cos[b], sin[b])).sum(-1, keepdim=True)
    return torch.softmax(scores.scatter(2, a[..., None], s_a).scatter(2, b[..., None], s_b) / TOY_D**0.5, -1)


def toy_logits_plain(p: dict, a: torch.Tensor, b: torch.Tensor, cos, sin) -> torch.Tensor:
    """Logits (S, n) without content positions: only the rotations say where a token sits."""
    x = p["emb"][:, :, None]  # (S, 3, 1, D): token types A, B, unmarked
    q = toy_rotate(x[:, 0] @ p["W"][:, 0], cos[a], sin[a])  # (S, n, D): A's query at A's cell
    keys, vals = x @ p["W"][:, 1, None], x @ p["W"][:, 2, None]  # (S, 3, 1, D): one key, one value per type
    att = toy_attention(q, keys[:, 2], keys[:, 0], keys[:, 1], a, b, cos, sin)  # (S, n, 64)
    p_a, p_b = att.gather(2, a[..., None]), att.gather(2, b[..., None])  # (S, n, 1)
    o = p_a * vals[:, 0] + p_b * vals[:, 1] + (1 - p_a - p_b) * vals[:, 2]  # (S, n, D): 62 cells share one value
    return (o * p["w_out"][:, None]).sum(-1) + p["b_out"]


def toy_logits_content(p: dict, a: torch.Tensor, b: torch.Tensor, cos, sin) -> torch.Tensor:
    """Logits (S, n) with content positions: token type + the cell's learned vector P, for every token."""
    x = p["emb"][:, :, None] + p["P"]  # (S, 3, 64, D): each type at each cell
    q = toy_rotate(toy_cell(x[:, 0] @ p["W"][:, 0], a), cos[a], sin[a])  # (S, n, D): A's query at A's cell
    keys, vals = x @ p["W"][:, 1, None], x @ p["W"][:, 2, None]  # (S, 3, 64, D): a key and value per cell
    att = toy_attention(q, keys[:, 2], toy_cell(keys[:, 0], a), toy_cell(keys[:, 1], b), a, b, cos, sin)
    p_a, p_b = att.gather(2, a[..., None]), att.gather(2, b[..., None])  # (S, n, 1)
    rest = att.scatter(2, a[..., None], 0).scatter(2, b[..., None], 0) @ vals[:, 2]  # (S, n, D): unmarked cells
    o = p_a * toy_cell(vals[:, 0], a) + p_b * toy_cell(vals[:, 1], b) + rest  # (S, n, D)
    return (o * p["w_out"][:, None]).sum(-1) + p["b_out"]


def toy_train(code: tuple, task: str, content: bool = False,
              steps: int = TOY_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Train 8 seeds at once; returns held-out accuracy (8,) and the training loss curve (steps, 8).
    content: add a learned vector per grid cell to every token (a stand-in for the ViT's position signal)."""
    cos, sin, _ = toy_tables(*code)
    init = torch.Generator().manual_seed(0)  # the same initial weights for every code
    p = {"emb": (0.5 * torch.randn(TOY_SEEDS, 3, TOY_D, generator=init, dtype=torch.float64)).requires_grad_(),
         "W": (torch.randn(TOY_SEEDS, 3, TOY_D, TOY_D, generator=init, dtype=torch.float64)
               / TOY_D**0.5).requires_grad_()}
    if content:  # drawn after emb and W, so both paths start from the same emb and W
        p["P"] = (0.5 * torch.randn(TOY_SEEDS, 1, TOY_G**2, TOY_D, generator=init, dtype=torch.float64)).requires_grad_()
    p["w_out"] = torch.zeros(TOY_SEEDS, TOY_D, dtype=torch.float64, requires_grad=True)
    p["b_out"] = torch.zeros(TOY_SEEDS, 1, dtype=torch.float64, requires_grad=True)
    logits = toy_logits_content if content else toy_logits_plain  # the two paths above
    opt = torch.optim.Adam([p[k] for k in ("emb", "W", "w_out", "b_out", "P") if k in p], lr=1e-2)
    data = torch.Generator().manual_seed(1)  # the same batches for every code
    curve = []
    for _ in range(steps):
        a, b, y = toy_batch(TOY_BATCH, task, data)
        loss = F.binary_cross_entropy_with_logits(logits(p, a, b, cos, sin), y, reduction="none").mean(1)  # (S,)
        opt.zero_grad()
        loss.sum().backward()  # the seeds are independent: summing keeps each one's own gradient
        opt.step()
        curve.append(loss.detach())
    a, b, y = toy_batch(TOY_HELDOUT, task, torch.Generator().manual_seed(2))  # each seed its own held-out pairs
    with torch.no_grad():
        return ((logits(p, a, b, cos, sin) > 0).double() == y).double().mean(1), torch.stack(curve)


TOY_CONTENT = {"1D RoPE (raster 8h + w)": "1D RoPE + content position",
               "M-RoPE sectioned [4, 6, 6]": "M-RoPE sectioned + content position",
               "M-RoPE interleaved [6, 5, 5]": "M-RoPE interleaved + content position"}
toy_acc, toy_curves = {}, {}
for task in ("height", "width"):
    for name, code in TOY_CODES.items():
        toy_acc[task, name], toy_curves[task, name] = toy_train(code, task)
for name, arm in TOY_CONTENT.items():  # the same codes, plus a learned vector per cell
    toy_acc["width", arm], toy_curves["width", arm] = toy_train(TOY_CODES[name], "width", content=True)
SECTIONED = "M-RoPE sectioned [4, 6, 6]"  # and the released split's content arm on the height task
toy_acc["height", TOY_CONTENT[SECTIONED]], toy_curves["height", TOY_CONTENT[SECTIONED]] = toy_train(
    TOY_CODES[SECTIONED], "height", content=True)
TOY_LONG = f"M-RoPE sectioned, {2 * TOY_STEPS} steps"  # twice the budget (no curve: the plot shows 250 steps)
for task in ("height", "width"):
    toy_acc[task, TOY_LONG] = toy_train(TOY_CODES[SECTIONED], task, steps=2 * TOY_STEPS)[0]


def toy_majority(task: str) -> torch.Tensor:
    """(8,) accuracy of always answering the majority class, on each seed's own held-out pairs."""
    y = toy_batch(TOY_HELDOUT, task, torch.Generator().manual_seed(2))[2]  # (8, 2000): the pairs toy_train scores
    return torch.maximum(y.mean(1), 1 - y.mean(1))


majority = {t: toy_majority(t) for t in ("height", "width")}

# %% [markdown]
# Results: mean ± std and min-max over the 8 seeds, beside the training-loss curves (mean over seeds, band =
# min-max; the 500-step rows have no curve). "always the majority class" is the accuracy of a model that ignores
# positions, on each seed's own 2000 held-out pairs.

# %%
print(f"{'task':7s} {'position code':38s} {'accuracy mean ± std':>20s} {'min':>6s} {'max':>6s}")
for task in ("height", "width"):
    rows = [(name, acc) for (t, name), acc in toy_acc.items() if t == task]
    for name, acc in rows + [("always the majority class", majority[task])]:
        print(f"{task:7s} {name:38s} {acc.mean():>12.3f} ± {acc.std():.3f} {acc.min():>6.3f} {acc.max():>6.3f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
for axk, task in zip(axes, ("height", "width"), strict=True):
    for (t, name), curve in toy_curves.items():
        if t == task:
            line, = axk.plot(curve.mean(1).numpy(), label=name, lw=1.2)
            axk.fill_between(range(TOY_STEPS), curve.min(1).values.numpy(), curve.max(1).values.numpy(),
                             color=line.get_color(), alpha=0.15)
    axk.set(title=f"is B {'above' if task == 'height' else 'left of'} A? ({task} task)", xlabel="training step")
axes[0].set_ylabel("training BCE loss (8 seeds)")
for axk in axes:
    axk.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# What could a head that sees only one feature of the pair reach at best? For each feature, enumerate all
# $64 \cdot 63$ ordered (A, B) pairs of distinct cells and predict, for each value of the feature, its majority
# label: the raster offset $\Delta = (8h_B + w_B) - (8h_A + w_A)$ (all 1D RoPE's rotation can see), $\Delta \bmod 8$
# (what a pair with a period of 8 ids sees), and A's column (what the softmax normaliser over the bounded grid
# can carry).

# %%
toy_pairs = [(a, b) for a in range(TOY_G**2) for b in range(TOY_G**2) if a != b]


def toy_best(feature, task: str) -> float:
    """Best accuracy of any rule that sees only feature(a, b): predict each feature value's majority label."""
    counts = {}
    for a, b in toy_pairs:
        (ha, wa), (hb, wb) = divmod(a, TOY_G), divmod(b, TOY_G)
        label = hb < ha if task == "height" else wb < wa
        counts.setdefault(feature(a, b), [0, 0])[label] += 1
    return sum(max(c) for c in counts.values()) / len(toy_pairs)


toy_ceiling = {("height", "majority class"): toy_best(lambda a, b: 0, "height"),
               ("width", "majority class"): toy_best(lambda a, b: 0, "width"),
               ("width", "Delta"): toy_best(lambda a, b: b - a, "width"),
               ("width", "Delta mod 8"): toy_best(lambda a, b: (b - a) % TOY_G, "width"),
               ("width", "A's column"): toy_best(lambda a, b: a % TOY_G, "width"),
               ("width", "Delta and A's column"): toy_best(lambda a, b: (b - a, a % TOY_G), "width"),
               ("height", "Delta"): toy_best(lambda a, b: b - a, "height")}
for (task, feat), best in toy_ceiling.items():
    print(f"{task:6s} task, best possible from {feat:20s}: {best:.3f}")
print(f"1D RoPE reaches {toy_acc['width', '1D RoPE (raster 8h + w)'].mean():.3f} (width) and "
      f"{toy_acc['height', '1D RoPE (raster 8h + w)'].mean():.3f} (height)")

# %% [markdown]
# **Exact rates against held-out rates.** The enumeration is exact; a held-out accuracy is not: each seed is
# scored on its own 2000 random pairs, so a rate $p$ measured there has the binomial standard error
# $\sqrt{p(1-p)/2000}$, and the mean over the 8 seeds' sets $\sqrt 8$ times less. The cell puts the majority
# class's exact rate, its held-out rates and the stuck sectioned seed on the height task side by side:

# %%
p_major = toy_ceiling["height", "majority class"]  # exact, over all 4032 ordered pairs
se_set = math.sqrt(p_major * (1 - p_major) / TOY_HELDOUT)  # one seed's held-out rate
se_mean = se_set / math.sqrt(TOY_SEEDS)  # the mean over the 8 seeds' held-out sets
m_h, sec_h = majority["height"], toy_acc["height", SECTIONED]  # (8,) each
stuck = int(sec_h.argmin())
print(f"height, always the majority class: exact {p_major:.4f}; held-out {m_h.mean():.4f} on average over the 8 "
      f"sets ({m_h.min():.4f} to {m_h.max():.4f}, std {m_h.std():.4f})")
print(f"binomial standard error: {se_set:.4f} for one set of {TOY_HELDOUT} pairs, {se_mean:.4f} for the mean of 8; "
      f"the mean of the 8 sets is {(p_major - m_h.mean()) / se_mean:.1f} of the latter below the exact rate")
print(f"sectioned height, seed {stuck}: {sec_h[stuck]:.4f}; always-majority on the same pairs: {m_h[stuck]:.4f}; "
      f"the exact rate is {(p_major - sec_h[stuck]) / se_set:.1f} standard errors of one set above it")
for task in ("height", "width"):  # sampled against enumerated: every held-out rate within 4 standard errors
    assert (majority[task] - toy_ceiling[task, "majority class"]).abs().max() < 4 * se_set, task

# %% [markdown]
# **What the toy shows.**
#
# - **Width, rotary code only.** The released split fails: on every seed sectioned M-RoPE scores exactly what
#   always answering the majority class scores on that seed's held-out pairs (mean 0.557; the exact rate over
#   all 4032 ordered pairs is 0.556). Its width pairs turn at most $1.8 \times 10^{-4}$ rad per column, 0.0013
#   rad across the grid, too little to show through a softmax. Twice the steps change nothing: at 500 steps it
#   is still at the majority class on every seed. Interleaving, which gives the width a pair turning 0.18 rad per
#   column, solves it on every seed.
# - **1D RoPE on width** reaches 0.591. Its score of B depends only on the raster offset
#   $\Delta = 8\Delta h + \Delta w$, and the sign of $\Delta w$ is not a function of $\Delta$ ($\Delta = 3$ is
#   $(0, +3)$ or $(+1, -5)$). The enumeration bounds what one signal can give: 0.757 from $\Delta$, 0.746 from
#   $\Delta \bmod 8$, 0.754 from A's column (which reaches the head through the softmax normaliser over the
#   bounded grid). The two together determine the label ($w_B = (w_A + \Delta) \bmod 8$: 1.000), so the
#   information is there; 0.591 is what 250 steps of one head find. Whether one head can read A's column through
#   the softmax normaliser with more steps is not tested here, and the toy does not show which signal it uses.
# - **Height.** 1D RoPE is good but not perfect (0.965 ± 0.007): the raster id orders rows, but the offsets
#   $8\Delta h + \Delta w$ of neighbouring rows overlap, and $\Delta$ alone allows at most 0.971. The best seed's
#   0.975 lies above that by about one standard error of its 2000 held-out pairs (0.004); since $\Delta$ with A's
#   column determines the label, the excess may be sampling error or real. Interleaving is perfect. The sectioned
#   split reaches 1.000 on 7 of the 8 seeds, but seed 7 stays at the majority class after 250 steps (its height
#   pairs turn at most 0.03 rad per row), hence the lower mean (0.942 ± 0.163). That is a budget effect: at 500
#   steps all 8 seeds reach 1.000.
# - **Sampling error** (the cell above). Seed 7's 0.5385 is exactly what the majority class scores on its own
#   held-out pairs, 1.5 standard errors of one set (0.011) below the exact 0.556. The table's majority row (0.546,
#   the mean of the 8 sets) is 2.4 standard errors of the mean (0.004) below it: an unlucky but plain draw.
# - **Content arms.** With a learned vector per cell added to every token (same budget, seeds and data), on the
#   width task the sectioned split reaches 0.989 ± 0.012 (min 0.964), 1D RoPE 0.989 ± 0.008 (min 0.977) and
#   interleaved M-RoPE 0.998 ± 0.004 (min 0.987); on the height task the sectioned split reaches 0.993 ± 0.010
#   (min 0.971). With a content-position channel the toy no longer separates the three codes, so it cannot say
#   which of them the real model, whose ViT supplies that channel, is better off with.
#
# So the toy says something narrower than "Qwen2-VL cannot tell left from right". When the rotary code is the
# only position signal, separate axes help only if each axis gets frequencies fast enough for the offsets it must
# resolve, and the released $[16, 24, 24]$ split leaves the width with slow pairs only: the imbalance that
# Qwen3-VL's interleaved layout was introduced to remove (6.5). In Qwen2-VL the visual tokens come out of a ViT
# whose 2D RoPE turns its column pairs from 1 rad per patch (derivation 3), so the layout is already in their
# content, and the content arms show that such a channel is enough for this head. The slow width pairs limit
# what the LLM can read from M-RoPE alone, not what it can know. This is a toy: the 7B model has 28 layers, many
# heads and 1.4T tokens, and the paper reports no per-axis ablation.

# %% [markdown]
# ### What a healthy run prints
#
# A summary of this run. The reference checks were asserted where they ran (§7: `pixel_values` < 1e-06, ViT
# features, tokens and end-to-end logits < 1e-04, each wrong input moving the logits by more than 1e-02), so
# they are not repeated here. This cell asserts only what no earlier cell asserts. Exact values, the same on
# every machine: 1230 and 15552 visual tokens (+ 2 markers) for a 12 MP phone photo under the class defaults
# and the released limits; 675.8M ViT parameters and 8.3B in all for the 7B; Table 8's mean M-RoPE gain, +0.76
# on the image and +1.77 on the video benchmarks; a 2-minute video at 336 x 448 reaching id 129;
# `transformers` 5.23 agreeing with the paper for every length up to 16 s of video at 448 x 448 and differing
# from 17 s on; the toy's best-possible accuracies of (f), as regression values of this run's enumeration
# (majority 0.556 on both tasks; width from $\Delta$ 0.757, from $\Delta \bmod 8$ 0.746, from A's column 0.754,
# from both 1.000; height from $\Delta$ 0.971). The toy's results, as ranges: interleaved M-RoPE above 0.98 on
# every seed and both tasks (1.000 here); sectioned M-RoPE on the width task within 0.02 of the majority-class
# rate of its own held-out pairs on every seed (0.000 here); 1D RoPE on the width task below 0.757, the best a
# rule seeing $\Delta$ alone can reach, on every seed (0.591 on average); each code + content position on the
# width task above 0.95 on every seed (0.964 at the lowest, sectioned), and sectioned + content on the height
# task too (0.971 at the lowest); at 500 steps, sectioned M-RoPE above 0.99 on every height seed (1.000 here) and
# still within 0.02 of its own majority-class rate on every width seed (0.000 here).

# %%
healthy = {
    "12 MP tokens (class defaults)": int(np.prod(smart_resize(3024, 4032, **PROCESSOR_DEFAULT))) // 28**2,
    "12 MP tokens (released)": int(np.prod(smart_resize(3024, 4032, **RELEASED))) // 28**2,
    "ViT params 7B (M)": round(vit_total["7B"] / 1e6, 1),
    "Qwen2-VL-7B params (B)": round((llm_7b + vit_total["7B"]) / 1e9, 1),
    "Table 8 mean gain, image": round(table8_mean["image"], 2),
    "Table 8 mean gain, video": round(table8_mean["video"], 2),
    "2-min video max id": long_rows[-1][2],
    "5.23 first wrong second at 448": min(s for s in range(1, 40) if len(set(next_text_id(s))) > 1),
    **{f"toy best, {task} from {feat}": round(best, 3) for (task, feat), best in toy_ceiling.items()},
}
for k, v in healthy.items():
    print(f"{k:44s} {v}")
assert healthy == {"12 MP tokens (class defaults)": 1230, "12 MP tokens (released)": 15552,
                   "ViT params 7B (M)": 675.8, "Qwen2-VL-7B params (B)": 8.3, "Table 8 mean gain, image": 0.76,
                   "Table 8 mean gain, video": 1.77, "2-min video max id": 129, "5.23 first wrong second at 448": 17,
                   "toy best, height from majority class": 0.556,
                   "toy best, width from majority class": 0.556, "toy best, width from Delta": 0.757,
                   "toy best, width from Delta mod 8": 0.746, "toy best, width from A's column": 0.754,
                   "toy best, width from Delta and A's column": 1.0, "toy best, height from Delta": 0.971}
toy_range = {"interleaved, min over seeds and tasks": min(toy_acc[t, "M-RoPE interleaved [6, 5, 5]"].min().item()
                                                           for t in ("height", "width")),
             "sectioned width, max |acc - own majority|": (toy_acc["width", SECTIONED]
                                                           - majority["width"]).abs().max().item(),
             "1D width, max": toy_acc["width", "1D RoPE (raster 8h + w)"].max().item(),
             "+ content width, min over seeds and codes": min(toy_acc["width", arm].min().item()
                                                              for arm in TOY_CONTENT.values()),
             "+ content height (sectioned), min over seeds": toy_acc["height", TOY_CONTENT[SECTIONED]].min().item(),
             "sectioned height at 500 steps, min": toy_acc["height", TOY_LONG].min().item(),
             "sectioned width at 500 steps, max |acc - majority|": (toy_acc["width", TOY_LONG]
                                                                    - majority["width"]).abs().max().item()}
for k, v in toy_range.items():
    print(f"toy: {k:50s} {v:.3f}")
assert toy_range["interleaved, min over seeds and tasks"] > 0.98
assert toy_range["sectioned width, max |acc - own majority|"] < 0.02
assert toy_range["1D width, max"] < toy_ceiling["width", "Delta"]
assert toy_range["+ content width, min over seeds and codes"] > 0.95
assert toy_range["+ content height (sectioned), min over seeds"] > 0.95
assert toy_range["sectioned height at 500 steps, min"] > 0.99
assert toy_range["sectioned width at 500 steps, max |acc - majority|"] < 0.02

# %% [markdown]
# ## Misconceptions
#
# - **Claim (seed):** the vision-language bridge is a "1×1 convolution with attention fusion" from 768-dim text
#   to 1024-dim visual features, "only 5M parameters". **Correction:** "a simple MLP layer is employed after the
#   ViT to compress adjacent 2 × 2 tokens into a single token" (§2.1): LayerNorm, concatenation of the four
#   1280-dim patch features, Linear 5120→5120, GELU, Linear 5120→LLM width (3584 for the 7B). That is 44.6M
#   parameters (§8 (d)), there is no attention in it, and the widths are 1280 in and 1536 / 3584 / 8192 out
#   (checked against `PatchMerger` in §7).
# - **Claim:** the ViT is small (a ViT-L of about 300M). **Correction:** "a Vision Transformer (ViT) with
#   approximately 675 million parameters" (§2.1), the same for all sizes (§2, Table 1); counted above: 675.8M
#   for the 7B. (The M-RoPE ablation of §3.3.2 uses a ViT-L backbone instead.) Nor is it cheap: at high
#   resolution its full attention costs more than the 7B LLM (6.3).
# - **Claim (seed):** Qwen2-VL handles phone photos by switching between 224x224 (phone) and 1024x1024 (cloud)
#   with "feature interpolation", trains on "60% phone photos" with a "real data first" sampler, and so
#   understands phone photos "35% better". **Correction:** there is no resolution switch and nothing to
#   interpolate: each image is resized to its own multiple-of-28 size (derivation 1; a 12 MP photo keeps its
#   full 3024 x 4032 under the released limits, 6.1), the patches of all images are packed into one sequence
#   with block-diagonal attention (the released code; 6.2 and §7), and the ViT's absolute position embeddings were replaced by
#   2D RoPE (§2.1, §2.2). The paper's data description (§2.2) lists data kinds and sources (cleaned web pages,
#   open-source datasets, synthetic data) and gives no phone-photo share, no such sampler and no 35% figure; its
#   evidence for native resolution is Table 7 (dynamic vs fixed token budgets), quoted in (e).
# - **Claim:** the processor's `max_pixels` of $28^2 \cdot 1280$ is the model's limit. **Correction:** it is the
#   `transformers` class default; the released `preprocessor_config.json` allows 16384 tokens
#   ($12845056 = 16384 \cdot 28^2$ pixels), the cap of §3.3.1 (derivation 1, 6.1).
# - **Claim:** with M-RoPE, text positions are encoded differently from a text-only LLM. **Correction:** text
#   ids are equal on the three axes, so M-RoPE is exactly 1D RoPE on text (§2.1; checked bit for bit in §7).
# - **Claim:** an image has two temporal positions because it is duplicated into two frames. **Correction:**
#   the two frames form one $2 \times 14 \times 14$ tube, so an image has a single temporal cell and a constant
#   temporal id (§2.1); a video at 2 fps gets one temporal id per second.
# - **Claim:** a video gets one temporal id per frame, as §2.1 words it ("the temporal ID increments for each
#   frame"). **Correction:** one per 2-frame tube: `arange(T)` over the $T$ temporal patches in `transformers`,
#   vLLM and the Qwen team's `rope2d.py`, so at 2 fps the id advances once per second (derivation 5, 6.7).
# - **Claim:** Qwen2-VL-7B has 7B parameters. **Correction:** its LLM has 7.6B and its ViT 0.68B, 8.3B in all
#   (counted in (d)); the paper names it Qwen2-VL-7B (§2, Table 1) but gives the three models' total sizes as
#   2B, 8B and 72B (the abstract's words; §1 and the conclusion write them out in billions).
# - **Claim:** the three M-RoPE axes share the frequency spectrum. **Correction:** with the released
#   `mrope_section` $[16, 24, 24]$ time gets the 16 fastest pairs and width the 24 slowest (derivation 6, 6.5);
#   the toy of Reproduction (f) shows what that costs a single attention head.
# - **Interview trap:** "the next modality starts at the previous block's start + its side", as `transformers`
#   5.23 computes it. The paper says the largest id + 1 (§2.1); 5.23's rule is a regression introduced in 5.3.0 that
#   makes text restart inside a long video, makes two videos share temporal ids, and disagrees with its own
#   generation path (§7).

# %% [markdown]
# ## Exercises
#
# 1. How many LLM tokens (without the two markers) does a 1000 x 1000 image cost with the processor's class
#    defaults? Work it out by hand with derivation 1, then set `answer_1` and run the cell.
# 2. A 10-second clip sampled at 2 fps with 336 x 336 frames: how many LLM tokens, and what is the largest
#    M-RoPE id if the clip starts at id 0? Set `answer_2 = (tokens, largest_id)`.
# 3. With the released limits, what is the largest 16:9 image (height x width, multiples of 28) that keeps its
#    full resolution, and how many tokens does it cost? Set `answer_3 = (height, width, tokens)`.
# 4. Why must the ViT's head dimension be a multiple of 4 for its 2D RoPE, while the LLM's M-RoPE only needs
#    an even head dimension whose half is split by `mrope_section`? Which pairs of the $[16, 24, 24]$ section
#    does the score between two tokens of the same image row depend on, and how fast do they turn?

# %%
answer_1 = None  # your number of tokens
answer_2 = None  # (tokens, largest id)
answer_3 = None  # (height, width, tokens)

if answer_1 is not None:
    h1, w1 = smart_resize(1000, 1000)
    print("exercise 1:", "correct" if answer_1 == (h1 // 28) * (w1 // 28) else "not quite, check the rounding")
if answer_2 is not None:
    g2 = [20 // 2, 336 // 14, 336 // 14]
    ids2, _ = mrope_position_ids(torch.tensor([[2] * (g2[0] * g2[1] * g2[2] // 4)]), video_grid_thw=torch.tensor([g2]))
    print("exercise 2:", "correct" if answer_2 == (ids2.shape[-1], int(ids2.max())) else "not quite")
if answer_3 is not None:
    best = max((h * w, h, w) for h in range(28, 4000, 28) for w in range(28, 7000, 28)
               if 9 * w == 16 * h and h * w <= RELEASED["max_pixels"] and smart_resize(h, w, **RELEASED) == (h, w))
    print("exercise 3:", "correct" if answer_3 == (best[1], best[2], best[0] // 28**2) else "not quite")

# %% [markdown]
# ### Worked answers (try first)
#
# 1. **1225.** $\mathrm{round}(1000/28) = 36$, so $\bar H = \bar W = 1008$ and $1008^2 = 1{,}016{,}064 > 28^2 \cdot 1280
#    = 1{,}003{,}520$: the shrink branch fires with $\beta = \sqrt{10^6 / 1{,}003{,}520} = 0.99825$, and
#    $\lfloor 1000 / (0.99825 \cdot 28) \rfloor = \lfloor 35.78 \rfloor = 35$: $980 \times 980$, $35^2 = 1225$ tokens
#    (not $36^2 = 1296$: rounding up overshoots the cap, and the shrink floors).
# 2. **(1440, 11).** 20 frames make $T = 10$ temporal patches; $336/14 = 24$ patches per side, 12 after merging:
#    $10 \cdot 12 \cdot 12 = 1440$ tokens. The largest id is $\max(T, 12, 12) - 1 = 11$ (derivation 5).
# 3. **(2520, 4480, 14400).** A 16:9 size in multiples of 28 is $28 \cdot 9k \times 28 \cdot 16k$, i.e. $144k^2$
#    tokens; $144k^2 \le 16384$ gives $k = 10$: $2520 \times 4480$, 14400 tokens, and `smart_resize` leaves it as
#    it is (rounding changes nothing and it is under both limits).
# 4. The ViT splits its $d/2$ pairs equally between row and column, so $d/2$ must be even: $d$ a multiple of 4.
#    M-RoPE only needs the three section sizes to add up to $d/2$. Two tokens of one image row share the
#    temporal and height ids, so on pairs 0-39 their relative rotation is zero and the score depends on the
#    offset only through the 24 width pairs 40-63, which turn at most $\theta_{40} = 1.8 \times 10^{-4}$ rad per
#    column. The cell checks each answer against an independent computation.

# %%
# 1 and 3: transformers' smart_resize; 2: transformers' get_rope_index; 3 also by brute force over 16:9 sizes
h1, w1 = hf_smart_resize(1000, 1000, **PROCESSOR_DEFAULT)
assert (h1 // 28) * (w1 // 28) == 1225
ids2, _ = hf_rope_index([2] * 1440, video_grids=torch.tensor([[10, 24, 24]]))
assert ids2.shape[-1] == 1440 and int(ids2.max()) == 11
best3 = max((h * w, h, w) for k in range(1, 20) for h, w in [(28 * 9 * k, 28 * 16 * k)]
            if hf_smart_resize(h, w, **RELEASED) == (h, w))
assert (best3[1], best3[2], best3[0] // 28**2) == (2520, 4480, 14400)
# 4: the score of two tokens in one image row (t = 0, h = 5; columns 3 and 146), with transformers' M-RoPE tables,
# against the complex-number form in which only the width pairs 40..63 rotate, by (3 - 146) * theta_i
q4, k4 = torch.randn(2, 128, generator=torch.Generator().manual_seed(4), dtype=torch.float64).unbind(0)
row_ids = torch.tensor([[[0, 0]], [[5, 5]], [[3, 146]]])  # (3, 1, 2): (t, h, w) of the two tokens
c4, s4 = rotary(torch.zeros(1, 2, 128), row_ids)  # (1, 2, 128) float32
rq = q4.float() * c4[0, 0] + rotate_half(q4.float()) * s4[0, 0]
rk = k4.float() * c4[0, 1] + rotate_half(k4.float()) * s4[0, 1]
zq, zk = torch.complex(q4[:64], q4[64:]), torch.complex(k4[:64], k4[64:])  # pair i = (x_i, x_{i+64})
phase = torch.zeros(64, dtype=torch.float64)
phase[40:] = (3 - 146) * theta_llm[40:]  # only the width pairs turn
score_pairs = (zq * zk.conj() * torch.exp(1j * phase)).real.sum().item()
assert abs((rq * rk).sum().item() - score_pairs) < 1e-3
print(f"exercises: 1225 tokens; (1440, 11); (2520, 4480, 14400); same-row score {score_pairs:.3f} from the 24 "
      f"width pairs alone, whose fastest turns {143 * theta_llm[40].item():.3f} rad over 143 columns")

# %% [markdown]
# ## References
#
# - Peng Wang, Shuai Bai, Sinan Tan, et al. *Qwen2-VL: Enhancing Vision-Language Model's Perception of the World at
#   Any Resolution.* arXiv:2409.12191v2, 2024 (the version cited throughout). Abstract, §1 and Conclusion (fixed
#   resolutions, 1D positions, the 2B / 8B / 72B total sizes), §2 and Table 1 (675M ViT, 7.6B LLM), §2.1 (naive
#   dynamic resolution, 2D RoPE, 2x2 MLP merger, 66 tokens for 224 × 224, M-RoPE, 2 fps, two identical frames per
#   image, 16384 tokens per video), §2.2 and §2.2.1 (three training stages, data, data format), §3.1 and
#   §3.2.6-§3.2.7 (MMMU, the 768-frame cap, navigation), Table 7, Figure 4 and §3.3.1 (dynamic vs fixed tokens,
#   `min_pixels` / `max_pixels`, upscaling small images), Table 8 and Figure 5 in §3.3.2 (M-RoPE ablation and
#   extrapolation), Figure 6 in §3.3.3 (model and data scaling).
# - Official code: [QwenLM/Qwen3-VL](https://github.com/QwenLM/Qwen3-VL) (formerly `QwenLM/Qwen2-VL`, the
#   address the paper gives, then `QwenLM/Qwen2.5-VL`), including
#   [`qwen-vl-finetune/qwenvl/data/rope2d.py`](https://github.com/QwenLM/Qwen3-VL/blob/96588727e44c78b25ba03ea03b8e12f7e64fd0da/qwen-vl-finetune/qwenvl/data/rope2d.py)
#   (`get_rope_index_2`, `get_rope_index_25`); `qwen-vl-utils` 0.0.14 on PyPI,
#   `qwen_vl_utils/vision_process.py` (`smart_resize`, `smart_nframes`, `fetch_video`), transcribed in §7 and 6.7.
#   Released processor limits: [Qwen2-VL-7B-Instruct `preprocessor_config.json`](https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct/blob/main/preprocessor_config.json)
#   and its model card.
# - Lineage: Qwen-VL, arXiv:2308.12966; NaViT (Patch n' Pack), arXiv:2307.06304; RoFormer (RoPE),
#   arXiv:2104.09864; Qwen2.5-VL, arXiv:2502.13923 §2.1.3 (time-aligned M-RoPE): reading V7 (not yet written).
# - Reference implementation used in §7: `transformers` 5.23.0,
#   `models/qwen2_vl/image_processing_pil_qwen2_vl.py` (`smart_resize`, `Qwen2VLImageProcessorPil`),
#   `models/qwen2_vl/modeling_qwen2_vl.py` (`PatchEmbed`, `PatchMerger`, `Qwen2VLVisionRotaryEmbedding`,
#   `Qwen2VisionTransformerPretrainedModel`, `Qwen2VLModel.get_rope_index`, `Qwen2VLRotaryEmbedding`,
#   `Qwen2VLForConditionalGeneration`), `vision_utils.get_vision_position_ids`, `models/qwen2/modeling_qwen2.py`
#   (`Qwen2RotaryEmbedding`, `Qwen2Model`); the course's `shared.mrope` and `shared.vision` (tested in
#   `tests/test_mrope.py`, `tests/test_vision.py`). Version history read from release wheels between 4.49.0 and 5.24.0
#   (listed in §7) (`Qwen2VLModel.get_rope_index`, `Qwen2_5_VLModel.get_rope_index`); upstream threads:
#   [transformers#45381](https://github.com/huggingface/transformers/issues/45381),
#   [#45400](https://github.com/huggingface/transformers/pull/45400),
#   [#48669](https://github.com/huggingface/transformers/pull/48669),
#   [lmms-eval PR #1269](https://github.com/EvolvingLMMs-Lab/lmms-eval/pull/1269) and
#   [issue #1393](https://github.com/EvolvingLMMs-Lab/lmms-eval/issues/1393); vLLM
#   [`qwen2_vl.py`](https://github.com/vllm-project/vllm/blob/002d181a55a03803d7d69547846630069d2378b8/vllm/model_executor/models/qwen2_vl.py).
