# ---
# jupyter:
#   course:
#     cpu_seconds: 15
#     id: V6
#     papers:
#     - arxiv: '2409.12191'
#       title: 'Qwen2-VL: Enhancing Vision-Language Model''s Perception of the World
#         at Any Resolution'
#     part: vlm
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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/vlm/V6_qwen2_vl.ipynb)
#
# **Paper:** Peng Wang, Shuai Bai, Sinan Tan, Shijie Wang, Zhihao Fan, Jinze Bai, et al. (Qwen Team, Alibaba
# Group), *Qwen2-VL: Enhancing Vision-Language Model's Perception of the World at Any Resolution*, arXiv 2024.
# [arXiv:2409.12191](https://arxiv.org/abs/2409.12191) ·
# **Official code:** [QwenLM/Qwen2-VL](https://github.com/QwenLM/Qwen2-VL)
#
# **Prerequisites:** [F2 · Positional encodings](../foundations/F2_positional_encodings.ipynb) (RoPE, rotate-half
# layout), [V1 · ViT](V1_vit.ipynb) (patches, the ViT block)
#
# **CPU run time:** 15 s on a 2-core CPU (measured by `make run`, which rewrites this number)

# %% [markdown]
# ## TL;DR
#
# Qwen2-VL stops squeezing every image into one fixed square. `smart_resize` keeps the aspect ratio and
# rounds each side to a multiple of 28; a 675M-parameter ViT with **2D RoPE** (no learned position table)
# reads 14x14 patches (2 frames deep: an image is two identical frames, a video is sampled at 2 fps); an
# **MLP merges each 2x2 block** into one LLM token, so a 224x224 image costs 64 tokens + 2 markers = 66
# (§2.1). The LLM reads positions with **M-RoPE**: every token has (temporal, height, width) ids, equal for
# text (plain 1D RoPE), grid coordinates for images and videos. Table 7: dynamic resolution comes within 1.4
# points of the best fixed budget on InfoVQA (75.89 with 1924 tokens on average vs 77.27 with a fixed 3136) and
# wins OCRBench (866 vs at most 828); Table 8: M-RoPE beats 1D RoPE on video (NextQA 46.0 vs 43.9).

# %% [markdown]
# ## 中文速览
#
# Qwen2-VL 不再把所有图片压成固定的正方形：`smart_resize` 保持长宽比、把两边取整到 28 的倍数；675M 参数的
# ViT 用 **2D RoPE**（去掉了可学习的绝对位置表）读取 14x14 的 patch（时间方向深度为 2：图片复制成两帧，视频按
# 2 fps 采样）；之后一个 **MLP 把相邻 2x2 个 token 合并成一个**送入 LLM，所以 224x224 的图片只占 64 + 2 = 66
# 个 token（§2.1）。LLM 端用 **M-RoPE**：每个 token 有（时间、高、宽）三个位置 id，文本三者相同（即普通 1D
# RoPE），图片和视频取网格坐标。表 7：动态分辨率平均只用 1924 个 token，InfoVQA 为 75.89，接近最佳固定预算
# （固定 3136 个 token）的 77.27；OCRBench 最高（866，固定预算最多 828）；表 8：M-RoPE 在视频任务上优于 1D RoPE
# （NextQA 46.0 对 43.9）。

# %% [markdown]
# ## Setup
#
# One cell installs the course helper on Colab only (CI skips it); the next imports, seeds and picks the
# device. Everything below runs on a CPU in well under a minute: the models are tiny random ones built from
# configs, and the only images are the photographs that ship with matplotlib.

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
# The paper measures both fixes. Table 7 (Qwen2-VL-7B): fixed budgets of 64 / 576 / 1600 / 3136 image tokens
# score 28.85 / 65.72 / 74.99 / 77.27 on InfoVQA and 572 / 828 / 824 / 786 on OCRBench; dynamic resolution
# scores 75.89 and **866** with 1924 tokens on average: "no single fixed resolution achieves optimal performance
# across all benchmarks" (§3.3.1). Table 8 (§3.3.2; pre-trained Qwen2-1.5B + ViT-L): M-RoPE vs 1D RoPE gives
# 46.0 vs 43.9 on NextQA, 57.9 vs 55.5 on STAR, 43.4 vs 39.2 on MathVista, and is slightly lower on RealWorldQA
# (53.7 vs 54.5) and InfoVQA (50.3 vs 50.8). Figure 5 (§3.3.2, Video-MME medium-length videos): the 72B
# model, trained with at most 16K tokens per video, still performs robustly at inference lengths up to 80K
# tokens.

# %% [markdown]
# ## Derivations
#
# **1. Resizing (naive dynamic resolution, §2.1).** With patch $p = 14$ and merge $m = 2$, every side must be a
# multiple of $f = pm = 28$. For an $H \times W$ image, first round: $\bar H = f\,\mathrm{round}(H/f)$,
# $\bar W = f\,\mathrm{round}(W/f)$. If $\bar H \bar W > P_{\max}$, shrink with
# $\beta = \sqrt{HW / P_{\max}}$: $\bar H = f \lfloor H / (\beta f) \rfloor$ (same for $W$), so
# $\bar H \bar W \le HW/\beta^2 = P_{\max}$. If $\bar H \bar W < P_{\min}$, grow with
# $\beta = \sqrt{P_{\min}/(HW)}$ and round up. (The paper gives no formula; these are the official
# `smart_resize` of `qwen_vl_utils` in QwenLM/Qwen2-VL and of `transformers`.) The LLM then sees
#
# $$N_{\text{tokens}} = \frac{\bar H}{28}\cdot\frac{\bar W}{28} \;(+2 \text{ for } \texttt{<|vision\_start|>}, \texttt{<|vision\_end|>}).$$
#
# For $224 \times 224$: $N = 8 \cdot 8 = 64$, plus 2 markers $= 66$, the paper's number (checked in §7).
#
# **2. Patches are tubes.** A video frame pair and an image (two identical frames, §2.1) are cut into
# $2 \times 14 \times 14$ tubes of $3 \cdot 2 \cdot 14 \cdot 14 = 1176$ values. A `Conv3d` with kernel = stride =
# $(2, 14, 14)$ applied to one tube is a dot product per output channel, i.e. a linear map
# $\mathbb{R}^{1176} \to \mathbb{R}^{1280}$ (checked in §7).
#
# **3. 2D RoPE in the ViT.** Of the $d/2$ rotated pairs of a head, the first $d/4$ turn by the patch row $h$
# and the other $d/4$ by the column $w$, both with the same $d/4$ frequencies $\theta_i = 10000^{-4i/d}$. The rotation is block diagonal, $R(h, w) = R_h(h) \oplus R_w(w)$, and each block
# satisfies $R(a)^\top R(b) = R(b - a)$, so
#
# $$\langle R(h_1, w_1) q,\, R(h_2, w_2) k \rangle = q^\top R_h(h_2 - h_1) \oplus R_w(w_2 - w_1)\, k,$$
#
# a score that depends only on the 2D offset, at any image size: nothing to interpolate (checked in §7).
#
# **4. The 2x2 merger (§2.1).** The 4 patch features $x_1..x_4 \in \mathbb{R}^{1280}$ of a $2 \times 2$ block are
# layer-normed, concatenated and passed through an MLP:
# $z = W_2\,\mathrm{GELU}(W_1 [\mathrm{LN}(x_1); \dots; \mathrm{LN}(x_4)] + b_1) + b_2$, with
# $W_1 \in \mathbb{R}^{5120 \times 5120}$, $W_2 \in \mathbb{R}^{d_{\text{LLM}} \times 5120}$. Its size is
# $2 \cdot 1280 + 5120^2 + 5120 + 5120\, d_{\text{LLM}} + d_{\text{LLM}}$: 44.6M for the 7B ($d_{\text{LLM}} = 3584$).
#
# **5. M-RoPE (§2.1).** Every LLM token gets ids $(p_t, p_h, p_w)$: text $(n, n, n)$; a vision token at merged
# cell $(t, h, w)$ of a block starting at $s$ gets $(s + t, s + h, s + w)$, where an image has the single
# temporal cell $t = 0$; every block starts at $s = 1 + $ the largest id so far. Rotary frequency $i$ of
# $\theta_i = \text{base}^{-2i/d}$ rotates by $p_{a(i)}\theta_i$, where the section $[16, 24, 24]$ of the 64
# frequencies (head dim 128; `mrope_section` in the released `config.json`, not given in the paper) assigns the
# first 16 to $t$, the next 24 to $h$, the last 24 to $w$. For text
# $p_t = p_h = p_w = n$, so every frequency rotates by $n\theta_i$: **exactly 1D RoPE** (checked in §7).
#
# **6. ViT size (Table 1: 675M).** Width 1280, 32 blocks, MLP ratio 4: each block has
# $2 \cdot 2 \cdot 1280$ (LayerNorms) $+ 1280 \cdot 3840 + 3840$ (qkv) $+ 1280^2 + 1280$ (out)
# $+ 2 (1280 \cdot 5120) + 5120 + 1280$ (MLP) $= 19{,}677{,}440$ parameters; 32 blocks give 629.7M, the patch
# embedding $1176 \cdot 1280 = 1.5$M, the merger 44.6M: 675.8M in all (checked in §8).

# %% [markdown]
# ## Walkthrough
#
# ### 6.1 How many tokens does a real photograph cost?
#
# `smart_resize` from the equations of derivation 1, with the `transformers` image processor's class defaults:
# at least $56^2$ pixels (4 tokens), at most $28^2 \cdot 1280$ pixels (1280 tokens). The released checkpoints'
# `preprocessor_config.json` keep the minimum but raise `max_pixels` to $16384 \cdot 28^2$, the cap of §3.3.1.

# %%
def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
    """Sides (multiples of `factor`) the image is resized to (derivation 1)."""
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor  # nearest multiples
    if h_bar * w_bar > max_pixels:  # too big: shrink by beta, round down
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:  # too small: grow by beta, round up
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


# %% [markdown]
# The photographs that ship with matplotlib (`mpl-data/sample_data`), and common camera sizes. Only
# `grace_hopper.jpg` is a photograph; `logo2.png` (a wide logo) shows the aspect ratio being kept.

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
print(f"{'image':26s} {'H x W':>11s} -> {'resized':>11s}  tokens  (fixed 448x448 would give 256)")
for name, (h, w) in sizes.items():
    rh, rw = smart_resize(h, w)
    print(f"{name:26s} {h:>5d} x {w:<5d}-> {rh:>5d} x {rw:<5d}  {(rh // 28) * (rw // 28):>5d}")

# %% [markdown]
# ### 6.2 Pixels to patches: the processor's layout
#
# Resize with bicubic interpolation, scale to $[0, 1]$, normalise with the CLIP mean and std (the processor's
# defaults), duplicate the frame (derivation 2), and cut into $2 \times 14 \times 14$ tubes. The order of the
# rows matters: the 4 patches of each $2 \times 2$ merge block are consecutive, so that the merger can fuse
# them with a plain `view`. Each row is flattened as (channel, frame, row, column).

# %%
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
PATCH, MERGE, TEMPORAL = 14, 2, 2


def preprocess(image: Image.Image) -> torch.Tensor:
    """Resized, normalised image (3, H', W') float32 (derivation 1)."""
    h, w = smart_resize(image.height, image.width)
    x = np.asarray(image.resize((w, h), Image.BICUBIC), dtype=np.float32) / 255.0  # (H', W', 3)
    return torch.from_numpy((x - CLIP_MEAN) / CLIP_STD).permute(2, 0, 1)  # (3, H', W')


def patchify(frames: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """(T, 3, H, W) frames -> rows (T/2 * H/14 * W/14, 1176) in merge-block order, and the grid (t, h, w)."""
    T, C, H, W = frames.shape
    t, gh, gw = T // TEMPORAL, H // PATCH, W // PATCH
    x = frames.reshape(t, TEMPORAL, C, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    # axes: t, frame, C, block row, row in block, pixel row, block col, col in block, pixel col
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # t, block row, block col, row in block, col in block | C, frame, py, px
    return x.reshape(t * gh * gw, C * TEMPORAL * PATCH * PATCH), [t, gh, gw]


photo_pixels = preprocess(photo)  # (3, 588, 504)
photo_rows, photo_grid = patchify(torch.stack([photo_pixels, photo_pixels]))  # an image is 2 identical frames
logo_rows, logo_grid = patchify(torch.stack([preprocess(logo)] * 2))
pixel_values = torch.cat([photo_rows, logo_rows])  # (1512 + 380, 1176): images packed into one sequence
grid_thw = torch.tensor([photo_grid, logo_grid])
print("pixel_values", tuple(pixel_values.shape), "| grid_thw", grid_thw.tolist())

# %% [markdown]
# ### 6.3 The vision tower's 2D RoPE
#
# Each patch's (row, column) in the same merge-block order as the rows above, then the tables of derivation 3.
# In the rotate-half layout of F2, dim $j$ pairs with $j + d/2$, so the angle vector is
# [row angles, column angles] written twice.

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


vit_pos = vit_positions(grid_thw)
print("first 8 patch positions (row, col):", vit_pos[:8].tolist())

# %% [markdown]
# ### 6.4 The ViT forward and the 2x2 merger
#
# A Qwen2-VL ViT block is the pre-norm block of V1 with LayerNorm, a `quick_gelu` MLP, and 2D RoPE on $q$ and
# $k$; each image (and each temporal patch of a video) attends only to itself: the packed sequence is
# block-diagonal, as `transformers` builds it from `grid_thw` (`get_vision_cu_seqlens`). The merger (derivation 4)
# layer-norms the patches, views each 4 consecutive rows as one vector of $4 \cdot 1280$, and applies the MLP.
# The function reads the weights of a `transformers` tower, so that §7 can compare the outputs.

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
# ### 6.5 M-RoPE position ids for one sequence
#
# Derivation 5 for a single sequence: walk over runs of text and vision blocks; text gets consecutive equal
# ids, a vision block gets its merged grid coordinates offset by its start; each block starts at the largest
# id so far + 1. `0` marks text, `1` image and `2` video tokens (`mm_token_type_ids` in `transformers`). The
# course's `shared.mrope.mrope_position_ids` does the same for padded batches.

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


# A chat turn: text, an image (1 x 4 x 6 patches -> 2 x 3 tokens), text, a 2 s video at 2 fps (4 frames ->
# 2 temporal patches of 4 x 6 patches -> 2 x 2 x 3 tokens), text. Tokens 3 and 14 stand for <|vision_start|>,
# 10 and 27 for <|vision_end|>.
types = [0] * 4 + [1] * 6 + [0] * 5 + [2] * 12 + [0] * 4
grids = [[1, 4, 6], [2, 4, 6]]
ids = mrope_ids(types, grids)
print("temporal:", ids[0].tolist())
print("height:  ", ids[1].tolist())
print("width:   ", ids[2].tolist())

# %% [markdown]
# ### 6.6 M-RoPE cos/sin tables
#
# Derivation 5's angles: compute a 1D RoPE angle table for each of the three id rows, then let frequency $i$
# take the row of its section ($[16, 24, 24]$ for head dim 128). On text the three rows are equal, so the
# result cannot differ from 1D RoPE.

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


cos_m, sin_m = mrope_tables(ids)
print("cos table", tuple(cos_m.shape))

# %% [markdown]
# ## Check against a reference
#
# Everything above against `transformers` 5.23 (`Qwen2VLImageProcessorPil`, `Qwen2VisionTransformerPretrainedModel`
# with its `PatchEmbed`, `Qwen2VLVisionRotaryEmbedding` and `PatchMerger`, `Qwen2VLModel.get_rope_index`,
# `Qwen2VLRotaryEmbedding`) built from tiny random configs, and against the course's `shared` module.
#
# **Resizing** for the sizes above and a sweep of 2000 random sizes (`smart_resize` of the image processor):

# %%
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

g = torch.Generator().manual_seed(0)
sweep = list(sizes.values()) + torch.randint(1, 5000, (2000, 2), generator=g).tolist()
sweep = [(h, w) for h, w in sweep if max(h, w) / min(h, w) <= 200]
for h, w in sweep:
    assert smart_resize(h, w) == hf_smart_resize(h, w) == shared_smart_resize(h, w), (h, w)
print(f"smart_resize equals transformers and shared.vision on {len(sweep)} sizes")
assert (224 // 28) ** 2 + 2 == 66  # paper §2.1: 224 x 224 -> 66 tokens

# %% [markdown]
# **Patches** equal the image processor's `pixel_values` and `image_grid_thw` (the PIL backend: it needs no
# torchvision and runs offline with its defaults):

# %%
processor = Qwen2VLImageProcessorPil()
ref = processor(images=[photo, logo], return_tensors="pt")
err = assert_close(pixel_values, ref["pixel_values"], atol=1e-6, name="pixel_values")
assert torch.equal(grid_thw, ref["image_grid_thw"])
print(f"pixel_values {tuple(pixel_values.shape)}: max abs error {error_bound(err)}; grid_thw {grid_thw.tolist()} equal")

# %% [markdown]
# **The vision tower.** A tiny random tower (2 blocks, width 64, 4 heads, merger to 96) with the default patch,
# merge and temporal sizes; our `vit_forward` reads its weights. First the pieces (patch positions,
# 2D RoPE tables, `PatchEmbed` = linear map), then the whole forward and the merger on the two images:

# %%
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    PatchMerger,
    Qwen2VisionTransformerPretrainedModel,
    apply_rotary_pos_emb_vision,
)
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
assert_close(cos_v, vision_rope_cos_sin(vit_pos, head_dim)[0], atol=0, rtol=0, name="shared vision cos")
q, k = torch.randn(2, len(vit_pos), 4, head_dim).unbind(0)
err_q = assert_close(apply_rope(q, cos_v[:, None], sin_v[:, None]),
                     apply_rotary_pos_emb_vision(q, k, ref_cos, ref_sin)[0], atol=1e-5, name="rotated q")
with torch.no_grad():
    err_pe = assert_close(pixel_values @ tower.patch_embed.proj.weight.reshape(64, -1).T,
                          tower.patch_embed(pixel_values), atol=1e-5, name="PatchEmbed")
print(f"2D positions equal; cos error {error_bound(err_cos)}; rotated q error {error_bound(err_q)}; "
      f"Conv3d = linear map: error {error_bound(err_pe, 1e-4)}")

with torch.no_grad():
    out = tower(pixel_values, grid_thw=grid_thw)
    feats, tokens = vit_forward(tower, pixel_values, grid_thw)
err_f = assert_close(feats, out.last_hidden_state, atol=1e-4, name="ViT features")
err_t = assert_close(tokens, out.pooler_output, atol=1e-4, name="merged tokens")
print(f"ViT features {tuple(feats.shape)}: max abs error {error_bound(err_f, 1e-4)}; "
      f"merged tokens {tuple(tokens.shape)}: {error_bound(err_t, 1e-4)}")

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
# **M-RoPE ids** of 6.5 against `Qwen2VLModel.get_rope_index` (a tiny random model; `get_rope_index` only
# reads `mm_token_type_ids` and the grids) and `shared.mrope`, then the cos/sin tables against
# `Qwen2VLRotaryEmbedding` with the released section $[16, 24, 24]$ and head dim 128:

# %%
from transformers import Qwen2VLConfig
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
assert torch.equal(ids, ref_ids[:, 0]) and torch.equal(ours_shared, ref_ids) and torch.equal(delta, ref_delta)
print(f"M-RoPE ids equal get_rope_index and shared.mrope; rope delta {delta.item()} (largest id + 1 - length)")

rotary = Qwen2VLRotaryEmbedding(Qwen2VLTextConfig(**tiny_text))
ref_cos, ref_sin = rotary(torch.zeros(1, len(types), 128), ref_ids)
err_c = assert_close(cos_m[None], ref_cos, atol=1e-6, name="M-RoPE cos")
err_s = assert_close(sin_m[None], ref_sin, atol=1e-6, name="M-RoPE sin")
assert_close(cos_m[None], mrope_cos_sin(ref_ids, rope_inv_freq(128, 1e6), [16, 24, 24])[0], atol=0, rtol=0)
print(f"M-RoPE cos/sin vs Qwen2VLRotaryEmbedding: max abs error {error_bound(max(err_c, err_s))}")

# %% [markdown]
# **M-RoPE reduces to 1D RoPE on text** (derivation 5): for a text-only sequence the ids are $0, 1, 2, \dots$ on
# all three axes, and Qwen2-VL's tables equal those of the Qwen2 LLM's plain `Qwen2RotaryEmbedding`:

# %%
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

n = 50
text_ids, text_delta = mrope_position_ids(torch.zeros(1, n, dtype=torch.long))
assert torch.equal(text_ids, torch.arange(n).expand(3, 1, n)) and text_delta.item() == 0
qwen2_rotary = Qwen2RotaryEmbedding(Qwen2Config(hidden_size=256, num_attention_heads=2,
                                                rope_parameters={"rope_type": "default", "rope_theta": 1e6}))
cos_1d, sin_1d = qwen2_rotary(torch.zeros(1, n, 128), torch.arange(n)[None])
cos_3d, sin_3d = rotary(torch.zeros(1, n, 128), text_ids)
err_1d = max(assert_close(cos_3d, cos_1d, atol=0, rtol=0), assert_close(sin_3d, sin_1d, atol=0, rtol=0))
assert err_1d == 0.0
print("text only: the M-RoPE tables are bit for bit the 1D RoPE tables")

# %% [markdown]
# **Where `transformers` 5.23 departs from the paper.** `get_rope_index` advances the start after a vision block
# by `max(h, w) / merge` instead of "the maximum position ID of the preceding modality" + 1 (§2.1). For
# images the two agree (the largest id is the last row or column). For a video whose temporal patches
# outnumber its merged side they do not: 3 temporal patches on a 4x4 patch grid (2x2 tokens per frame) after
# two text tokens has temporal ids 2, 3, 4, and the next text token gets id 4 from `transformers`, the id of
# the video's last frame, instead of 5.

# %%
types_v = [0, 0] + [2] * 12 + [0, 0]
ref_v, ref_delta_v = hf_rope_index(types_v, video_grids=torch.tensor([[3, 4, 4]]))
ours_v, delta_v = mrope_position_ids(torch.tensor([types_v]), video_grid_thw=torch.tensor([[3, 4, 4]]))
assert torch.equal(ours_v[0, 0, 2:14], ref_v[0, 0, 2:14])  # the video's own ids agree
print("video temporal ids:        ", ours_v[0, 0, 2:14].tolist())
print("text after it, paper rule: ", ours_v[0, 0, 14:].tolist(), "| rope delta", delta_v.item())
print("text after it, transformers:", ref_v[0, 0, 14:].tolist(), "| rope delta", ref_delta_v.item())
assert ours_v[0, 0, 14:].tolist() == [5, 6] and ref_v[0, 0, 14:].tolist() == [4, 5]

# %% [markdown]
# The same rule in Qwen2.5-VL's `get_rope_index` matters more, because its temporal ids are scaled by time
# (`tokens_per_second`, V7): with 2 tokens per second and 1 s per temporal patch, a 3 x 4 x 4 video's temporal
# ids reach start + 4 while the text restarts at start + 2. An older pitfall is gone in 5.23: transformers 4.x
# cast `second_per_grid_ts` to an integer tensor before scaling (`torch.as_tensor(second_per_grid_t,
# dtype=range_tensor.dtype)`), turning 0.5 s into 0 and every temporal id into 0; 5.23 multiplies first and
# floors after (`(arange(t) * time_interval).long()`), which is what `shared.mrope` does (V7 and the tests
# check it).

# %% [markdown]
# ## Reproduction
#
# **(a) The token budget of dynamic resolution.** §2.1: "an image with a resolution of 224 × 224 ... will be
# compressed to 66 tokens" (reproduced in §7). Below, the LLM tokens of an image as its side grows, for the
# processor's default limits and the limits of the ablation in §3.3.1 (`min_pixels` $= 100 \cdot 28^2$,
# `max_pixels` $= 16384 \cdot 28^2$), against the fixed budgets of Table 7.

# %%
sides = np.arange(28, 4200, 28)
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for label, kw in [("default limits (4..1280 tokens)", {}),
                  ("§3.3.1 limits (100..16384 tokens)", dict(min_pixels=100 * 28 * 28, max_pixels=16384 * 28 * 28))]:
    n_tok = [np.prod(smart_resize(int(s), int(s * 4 / 3), **kw)) // 28 ** 2 for s in sides]
    ax.plot(sides, n_tok, label=label)
for fixed in (64, 576, 1600, 3136):
    ax.axhline(fixed, color="grey", lw=0.8, ls=":")
ax.set(xscale="log", yscale="log", xlabel="image height in pixels (4:3 photo)", ylabel="LLM tokens",
       title="tokens follow the pixels (dotted: Table 7's fixed budgets)")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Between the two limits the token count is proportional to the pixel count (slope 2 against the side), so a
# small icon costs a few tokens and a document scan up to the cap, where a fixed budget spends the same on both.
#
# **(b) The M-RoPE ids of 6.5, drawn** in the manner of the paper's Figure 3: one row per axis, one column per
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
# videos, enabling the model to extrapolate to longer sequences". A video sampled at 2 fps (§2.1) has one
# temporal patch per second; with 336 x 448 frames each temporal patch is 12 x 16 = 192 tokens. The largest
# position id after 10 text tokens + the video, with 1D RoPE (one id per token) and with M-RoPE:

# %%
print(f"{'video':>8s} {'frames':>7s} {'tokens':>7s} {'1D RoPE max id':>15s} {'M-RoPE max id':>14s}")
for seconds in (4, 30, 60, 120):
    frames = 2 * seconds  # 2 fps
    grid = [frames // TEMPORAL, 336 // PATCH, 448 // PATCH]
    n_video = grid[0] * grid[1] * grid[2] // MERGE**2
    vid_types = torch.tensor([[0] * 10 + [2] * n_video])
    vid_ids, _ = mrope_position_ids(vid_types, video_grid_thw=torch.tensor([grid]))
    print(f"{seconds:>6d} s {frames:>7d} {n_video:>7d} {10 + n_video - 1:>15d} {int(vid_ids.max()):>14d}")

# %% [markdown]
# Once the video is longer than its frames are wide (here 16 s), the M-RoPE ids grow with the duration in
# seconds, not with the token count: a 2-minute video spends 23040 tokens but only reaches id 129. (Training
# capped videos at 16384 tokens by lowering the frame resolution, §2.1.) Small ids are the paper's argument for
# why the 72B model trained on 16K-token videos still works at 80K tokens (Figure 5; that evaluation cannot
# be rerun here).
#
# **(d) The ViT has about 675M parameters (Table 1).** Count the tower on the meta device (no memory, no
# download) with `Qwen2VLVisionConfig`'s defaults, which are the released Qwen2-VL-7B values (its
# `config.json` sets only `in_chans` and `spatial_patch_size` in `vision_config`; width 1280, 32 blocks,
# 16 heads, MLP ratio 4, patch 14, temporal patch 2, merge 2, output width 3584). The 2B and 72B towers differ
# only in the merger's output width, the LLM's hidden size (1536 and 8192):

# %%
for llm, width in [("2B", 1536), ("7B", 3584), ("72B", 8192)]:
    with torch.device("meta"):
        vit = Qwen2VisionTransformerPretrainedModel(Qwen2VLVisionConfig(hidden_size=width))
    total = sum(p.numel() for p in vit.parameters())
    body = total - sum(p.numel() for p in vit.merger.parameters())
    print(f"Qwen2-VL-{llm:3s} ViT: {total / 1e6:6.1f}M (blocks + patch embed {body / 1e6:.1f}M, "
          f"merger {(total - body) / 1e6:.1f}M)")
    if llm == "7B":
        c = Qwen2VLVisionConfig()
        block = 4 * c.embed_dim + 3 * c.embed_dim**2 + 3 * c.embed_dim + c.embed_dim**2 + c.embed_dim \
            + 2 * 4 * c.embed_dim**2 + 4 * c.embed_dim + c.embed_dim
        formula = 32 * block + 1176 * 1280 + 2 * 1280 + 5120**2 + 5120 + 5120 * 3584 + 3584
        assert total == formula, (total, formula)  # derivation 6
assert c.depth == 32 and c.embed_dim == 1280 and c.num_heads == 16 and c.mlp_ratio == 4 and c.patch_size == 14

# %% [markdown]
# 675.8M for the 7B, matching Table 1's 675M; Table 1 lists 675M for all three sizes, but counted exactly the
# 2B's tower is 665.3M and the 72B's 699.4M, since the shared 631.2M body feeds a merger sized for each LLM.

# %% [markdown]
# ## Misconceptions
#
# - **Claim (seed):** the vision-language bridge is a "1×1 convolution with attention fusion" from 768-dim text
#   to 1024-dim visual features, "only 5M parameters". **Correction:** "a simple MLP layer is employed after the
#   ViT to compress adjacent 2 × 2 tokens into a single token" (§2.1): LayerNorm, concatenation of the four
#   1280-dim patch features, Linear 5120→5120, GELU, Linear 5120→LLM width (3584 for the 7B). That is 44.6M
#   parameters (§8 (d) above), there is no attention in it, and the widths are 1280 in and 1536 / 3584 / 8192 out.
# - **Claim:** the ViT is small (a ViT-L of about 300M). **Correction:** "a Vision Transformer (ViT) with
#   approximately 675 million parameters" (§2.1), the same for all sizes (§2, Table 1); counted above: 675.8M
#   for the 7B. (The M-RoPE ablation of §3.3.2 uses a ViT-L backbone instead.)
# - **Claim (seed):** images of different sizes are zero-padded at the borders to align tensors, or switched
#   between 224x224 (phone) and 1024x1024 (cloud) with "feature interpolation". **Correction:** each image is
#   resized to its own multiple-of-28 size (6.1 above), patches of all images are packed into one sequence
#   (paper §2.1) with block-diagonal attention (6.4 above), and there is no position table to interpolate: the
#   ViT's absolute position embeddings were removed for 2D RoPE (paper §2.1).
# - **Claim:** with M-RoPE, text positions are encoded differently from a text-only LLM. **Correction:** text
#   ids are equal on the three axes, so M-RoPE is exactly 1D RoPE on text (§2.1; checked bit for bit in §7).
# - **Claim:** an image has two temporal positions because it is duplicated into two frames. **Correction:**
#   the two frames form one $2 \times 14 \times 14$ tube, so an image has a single temporal cell and a constant
#   temporal id (§2.1); a video at 2 fps gets one temporal id per second.
# - **Interview trap:** "the next modality starts at the previous block's start + its side". The paper says
#   the largest id + 1, which `transformers` 5.23 only matches when the video is not longer than it is wide
#   (§7).

# %% [markdown]
# ## Exercises
#
# 1. How many LLM tokens (without the two markers) does a 1000 x 1000 image cost with the default limits?
#    Work it out by hand with derivation 1, then set `answer_1` and run the cell.
# 2. A 10-second clip sampled at 2 fps with 336 x 336 frames: how many LLM tokens, and what is the largest
#    M-RoPE id if the clip starts at id 0? Set `answer_2 = (tokens, largest_id)`.
# 3. Why must the ViT's head dimension be a multiple of 4 for its 2D RoPE, while the LLM's M-RoPE only needs
#    an even head dimension whose half is split by `mrope_section`?
# 4. Show that the attention score between two tokens of the same image row depends only on their column
#    offset. Which frequencies of the $[16, 24, 24]$ section does the score then depend on?

# %%
answer_1 = None  # your number of tokens
answer_2 = None  # (tokens, largest id)

if answer_1 is not None:
    h1, w1 = smart_resize(1000, 1000)
    print("exercise 1:", "correct" if answer_1 == (h1 // 28) * (w1 // 28) else "not quite, check the rounding")
if answer_2 is not None:
    g2 = [20 // 2, 336 // 14, 336 // 14]
    ids2, _ = mrope_position_ids(torch.tensor([[2] * (g2[0] * g2[1] * g2[2] // 4)]), video_grid_thw=torch.tensor([g2]))
    print("exercise 2:", "correct" if answer_2 == (ids2.shape[-1], int(ids2.max())) else "not quite")

# %% [markdown]
# ## References
#
# - Peng Wang, Shuai Bai, Sinan Tan, et al. *Qwen2-VL: Enhancing Vision-Language Model's Perception of the World
#   at Any Resolution.* arXiv:2409.12191, 2024. §1 (fixed resolutions, 1D positions), §2 and Table 1 (675M ViT),
#   §2.1 (naive dynamic resolution, 2D RoPE, 2x2 MLP merger, 66 tokens for 224 × 224, M-RoPE, 2 fps, two
#   identical frames per image, 16384 tokens per video), Table 7 and §3.3.1 (dynamic vs fixed tokens,
#   `min_pixels` / `max_pixels`), Table 8 and Figure 5 in §3.3.2 (M-RoPE ablation and extrapolation).
# - Official code: [QwenLM/Qwen2-VL](https://github.com/QwenLM/Qwen2-VL) (`qwen-vl-utils`:
#   `qwen_vl_utils/vision_process.py`, `smart_resize`).
# - Qwen2.5-VL (arXiv:2502.13923) §2.1.3, time-aligned M-RoPE: reading V7.
# - Reference implementation used in §7: `transformers` 5.23.0,
#   `models/qwen2_vl/image_processing_pil_qwen2_vl.py` (`smart_resize`, `Qwen2VLImageProcessorPil`),
#   `models/qwen2_vl/modeling_qwen2_vl.py` (`PatchEmbed`, `PatchMerger`, `Qwen2VLVisionRotaryEmbedding`,
#   `Qwen2VisionTransformerPretrainedModel`, `Qwen2VLModel.get_rope_index`, `Qwen2VLRotaryEmbedding`),
#   `vision_utils.get_vision_position_ids`, `models/qwen2/modeling_qwen2.py` (`Qwen2RotaryEmbedding`); the
#   course's `shared.mrope` and `shared.vision` (tested in `tests/test_mrope.py`, `tests/test_vision.py`).
