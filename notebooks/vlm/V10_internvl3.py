# ---
# jupyter:
#   course:
#     cpu_seconds: 50
#     id: V10
#     papers:
#     - arxiv: '2504.10479'
#       title: 'InternVL3: Exploring Advanced Training and Test-Time Recipes for Open-Source
#         Multimodal Models'
#       version: v1
#     - arxiv: '2412.09616'
#       title: 'V2PE: Improving Multimodal Long-Context Capability of Vision-Language
#         Models with Variable Visual Position Encoding'
#       version: v1
#     - arxiv: '2411.10442'
#       title: Enhancing the Reasoning Ability of Multimodal Large Language Models via
#         Mixed Preference Optimization
#       version: v1
#     part: vlm
#     peak_memory_mb: 1405
#     prerequisites:
#     - V6
#     - V9
#     title: InternVL3
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
# # V10 · InternVL3
#
# [![Open In Colab](../../docs/img/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/vlm/V10_internvl3.ipynb)
#
# **Paper:** Jinguo Zhu, Weiyun Wang, Zhe Chen, Zhaoyang Liu, Shenglong Ye, et al. (Shanghai AI Laboratory and
# partners), *InternVL3: Exploring Advanced Training and Test-Time Recipes for Open-Source Multimodal Models*, arXiv
# 2025, [arXiv:2504.10479v1](https://arxiv.org/abs/2504.10479v1) · V2PE: Junqi Ge, Ziyi Chen, Jintao Lin, Jinguo Zhu,
# et al., *V2PE: Improving Multimodal Long-Context Capability of Vision-Language Models with Variable Visual Position
# Encoding*, [arXiv:2412.09616v1](https://arxiv.org/abs/2412.09616v1) · **Official code:**
# [OpenGVLab/InternVL](https://github.com/OpenGVLab/InternVL) (`internvl_chat/`) and
# [OpenGVLab/V2PE](https://github.com/OpenGVLab/V2PE)
#
# **Prerequisites:** [V6 · Qwen2-VL](V6_qwen2_vl.ipynb) (image tokens in an LLM, RoPE position ids);
# [V9 · DeepSeek-VL](V9_deepseek_vl.ipynb) (dynamic tiling, pixel-shuffle-style merges, keeping text in the mix).
# Next: [V11 · InternVL3.5](V11_internvl3_5.ipynb) (Cascade RL = MPO then GSPO). R9 · MPO is not yet written.
#
# **CPU run time:** 50 s on a 2-core CPU (measured by `make run`, which rewrites this number)
#
# **Peak memory:** 1405 MB (the kernel's peak resident memory, measured by `make run`)
#
# > **What I could and could not verify.** The full text of arXiv 2504.10479 and 2412.09616 was not readable with
# > this course's offline tools. Verified: the InternVL3 abstract (its words and the 72.2 MMMU of InternVL3-78B), the
# > ablation text of the official InternVL3 model cards, the official code (OpenGVLab/V2PE's `get_rope_pos_id`;
# > OpenGVLab/InternVL's `dynamic_preprocess`, `pixel_shuffle` and InternVL3 MPO script), `transformers` 5.23.0 and
# > `trl` 1.16.0. Section, table and figure numbers of the paper are therefore **not
# > given**, and every number that would need them is marked "not verified" rather than invented.

# %% [markdown]
# ## TL;DR
#
# - **Native multimodal pre-training:** one pre-training stage on pure text *and* multimodal data together, instead of
#   adapting a finished text LLM with an MLP warm-up and later stages (abstract); the ViT-MLP-LLM layout is kept.
# - **V2PE:** text tokens advance the RoPE position by 1, visual tokens by $\delta < 1$ (official code:
#   $\delta$ = `rope_pos_id_stride / 256`), so long image-heavy contexts stay inside the position range the LLM knows.
# - **Tiles and tokens:** 448 tiles on the closest-ratio grid (1-12 tiles, plus a 448 thumbnail when there is more
#   than one); pixel shuffle folds InternViT's 32x32 = 1024 patches into **256 tokens per tile**; all checked
#   against `transformers` (`get_optimal_tiled_canvas`, `InternVLModel.pixel_shuffle`, a tiny end-to-end forward).
# - **V2PE through `transformers`:** the reading's fractional ids fed to the tiny `InternVLForConditionalGeneration`
#   match our own forward; **trap:** without an `attention_mask` and with `use_cache=False`, `transformers` 5.23 reads
#   non-unit id steps as packed sequences (1,793 fake sequences here) and silently changes the logits; pass a mask.
# - **MPO** (post-training): $0.8\,$DPO $+ 0.2\,$BCO-pair $+ 1\,$SFT (InternVL3 script), derived and checked from
#   scratch against `trl` 1.16's `DPOTrainer` loss; BCO shift $\delta = 0$ here, a running mean in InternVL's trainer.
# - **Toy, V2PE ids vs standard ids (8 seeds, matched budget, 32 models trained at once):** key-value recall across
#   "visual" blocks, trained at 4 visual tokens per block, tested at 16 and 32: standard ids 0.45 / 0.16 (chance
#   0.125), $\delta = 1/16$ 0.64 / 0.58 (ahead on 7/8 and 8/8 seeds), $\delta = 1/4$ in between, a cut-down
#   `v2pe_rnd` (random $\delta \geq 1/16$ per image) 0.53 / 0.49. At the training length small and random $\delta$
#   learned more slowly (0.66 and 0.50 vs 0.90).
# - **Toy, the test-time controls:** on the same standard-id models, with no extra training, position interpolation
#   gives about 0.86 / 0.76 and compressing only the visual ids about 0.90 / 0.87, better than every V2PE-trained arm.
#   The toy's visual tokens carry no information, so it shows the positional-range mechanism V2PE exploits, not that
#   training with V2PE beats test-time interpolation (the V2PE repository evaluates such baselines; not reproduced).
# - **Limitation:** native pre-training is explained, not reproduced (no toy of it here).

# %% [markdown]
# ## 中文速览
#
# - **原生多模态预训练：**在一个预训练阶段里同时使用纯文本和多模态数据，而不是先做 MLP 预热、再多阶段地改造一个已训练好的文本 LLM（摘要）；结构仍是 ViT-MLP-LLM。
# - **V2PE：**文本 token 的 RoPE 位置加 1，视觉 token 只加 $\delta < 1$（官方代码中 $\delta$ = `rope_pos_id_stride / 256`），使图像很多的长上下文仍落在 LLM 熟悉的位置范围内。
# - **切片与 token：**按最接近宽高比的网格切成 448 切片（1-12 片，多于一片时再加一张 448 缩略图）；pixel shuffle 把 InternViT 的 32x32 = 1024 个 patch 折成**每片 256 个 token**；均与 `transformers` 对照（`get_optimal_tiled_canvas`、`InternVLModel.pixel_shuffle`、一个小模型端到端前向）。
# - **V2PE 与 `transformers`：**把本篇的分数位置编号送入小型 `InternVLForConditionalGeneration`，与我们自己的前向一致；**陷阱：**若不传 `attention_mask` 且 `use_cache=False`，`transformers` 5.23 会把步长不为 1 的位置编号当作拼接（packed）序列（此处出现 1,793 个假序列），输出被悄悄改变；务必传入 mask。
# - **MPO（后训练）：**$0.8\,$DPO $+ 0.2\,$BCO-pair $+ 1\,$SFT（InternVL3 官方脚本），逐项推导，并与 `trl` 1.16 `DPOTrainer` 的损失逐项核对；本篇 BCO 平移量 $\delta = 0$，InternVL 的训练器用奖励的滑动均值。
# - **小实验之一，V2PE 位置编号对标准编号（8 个种子，预算相同，32 个模型一次并行训练）：**在"视觉块"之间做键值检索，训练时每块 4 个视觉 token，测试时 16 与 32 个：标准位置编号为 0.45 / 0.16（随机猜为 0.125），$\delta = 1/16$ 为 0.64 / 0.58（分别在 7/8 与 8/8 个种子上更好），$\delta = 1/4$ 居中，简化版 `v2pe_rnd`（按图像随机抽取 $\delta \geq 1/16$）为 0.53 / 0.49。在训练长度上小 $\delta$ 与随机 $\delta$ 学得更慢（0.66 与 0.50 对 0.90）。
# - **小实验之二，测试时对照：**在同一批标准位置编号训练的模型上、不再训练，位置插值（PI）约 0.86 / 0.76，只压缩视觉 token 的编号约 0.90 / 0.87，均好于所有用 V2PE 训练的组。这个小实验里视觉 token 不含信息，所以它展示的是 V2PE 利用的位置范围机制，而不能说明用 V2PE 训练胜过测试时插值（V2PE 仓库评测了插值基线，本篇未复现）。
# - **局限：**原生预训练只做讲解，未复现（本篇没有它的小实验）。

# %% [markdown]
# ## Setup
#
# One cell installs the course helper on Colab only (CI skips it); the next imports, seeds and picks the device.
# Everything runs on a CPU: the InternVL model is a tiny random one built from a config, the photo ships with
# matplotlib.

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

import matplotlib.cbook as cbook
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from PIL import Image
from transformers import InternVLConfig, InternVLForConditionalGeneration, Qwen2Config
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (  # the PIL backend: no torchvision needed
    GotOcr2ImageProcessorPil,
    get_optimal_tiled_canvas,
)
from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

from shared.preference_losses import mpo_loss
from shared.tiling import closest_ratio_grid, pixel_shuffle, split_tiles, tile_grids
from shared.utils import assert_close, error_bound, pick_device, seed_everything

seed_everything(0)
torch.set_num_threads(1)  # the toy trains tiny models: one thread is faster than two that fight
device = pick_device()  # every reading runs on CPU; a GPU only makes it faster
print("torch", torch.__version__, "| transformers", transformers.__version__)

# %% [markdown]
# ## The problem
#
# In the abstract's words, the usual way to build an MLLM is "adapting a text-only large language model (LLM) into a
# multimodal large language model (MLLM) that supports visual inputs", a "post-hoc" multi-stage pipeline with
# "complexities and alignment challenges". InternVL3 instead "jointly acquires multimodal and linguistic capabilities
# from both diverse multimodal data and pure-text corpora during a single pre-training stage", adds "variable visual
# position encoding (V2PE) to support extended multimodal contexts", post-trains with "supervised fine-tuning (SFT)
# and mixed preference optimization (MPO)" and uses test-time scaling. Headline number (abstract): **InternVL3-78B
# scores 72.2 on MMMU**, "a new state-of-the-art among open-source MLLMs".
#
# **The paper's own ablation of native pre-training** (quoted from the official InternVL3 model cards' "Ablation
# Study", which reproduce the paper's; the paper's figure number is not verified): "We conduct experiments on the
# InternVL2-8B model while keeping its architecture, initialization parameters, and training data entirely
# unchanged. Traditionally, InternVL2-8B employs a training pipeline that begins with an MLP warmup phase for feature
# alignment followed by an Instruction Tuning stage. In our experiments, we substitute the conventional MLP warmup
# phase with a native multimodal pre-training process." Result: "performance on most benchmarks that is comparable to
# the fully multi-stage-trained InternVL2-8B baseline", and further gains after instruction tuning on higher-quality
# data. The per-benchmark numbers are in a figure I could not read (not verified); so the verified claim is
# "comparable or better with one stage", not a specific margin. **Native pre-training is explained, not reproduced
# here:** this reading runs no toy of it (the Reproduction states the objective and points to V9's closest toy).
#
# **Architecture** (abstract: the InternVL "ViT-MLP-LLM" family; the official code and `transformers`' `InternVL`
# classes): an InternViT encoder (300M or 6B; which model size uses which is on the model cards, not verified here)
# reads 448x448 tiles with 14x14 patches; pixel shuffle folds 2x2 patches into one token; a 2-layer MLP projects to
# the LLM (Qwen2.5 or InternLM3 per the model cards, not verified against the paper's table). Because the
# pre-training is one stage, the LLM is trained from the start on text and multimodal data together.
#
# **Data scale (not verified against the PDF; the abstract gives no numbers).** As recalled secondhand, not read:
# about 200B pre-training tokens at text : multimodal $\approx$ 1 : 3, about 21.7M SFT samples and about 300K MPO
# samples. Treat these as orders of magnitude to check, not as figures of the paper.
#
# **Lineage.** Tiling + pixel shuffle come from InternVL 1.5 ([arXiv:2404.16821](https://arxiv.org/abs/2404.16821));
# MPO from InternVL2.5-MPO ([arXiv:2411.10442](https://arxiv.org/abs/2411.10442)); V2PE from its own paper
# (2412.09616). [V11 · InternVL3.5](V11_internvl3_5.ipynb) keeps all of this and adds Cascade RL.

# %% [markdown]
# ## Derivations
#
# ### 1. The tile grid (InternVL's `dynamic_preprocess`)
#
# For an image of $W \times H$ pixels and the grids $\{(c, r): 1 \le cr \le 12\}$, take the grid whose ratio $c/r$
# is closest to $W/H$:
# $$ (c^*, r^*) = \arg\min_{(c,r)} \left| \tfrac{W}{H} - \tfrac{c}{r} \right|, $$
# and on a tie (e.g. 1x1, 2x2, 3x3 for a square) move to the later, larger grid only if the image has the pixels to
# fill it: $WH > \tfrac12 \cdot 448^2 \cdot c\,r$. The image is then **resized** (not padded: the aspect ratio is
# distorted by at most the ratio gap) to $448c \times 448r$ and cut into $cr$ tiles, row by row. If $cr > 1$ a
# thumbnail (the whole image resized to 448x448) is appended, so the model sees a global view too.
#
# Below: the official `find_closest_aspect_ratio` written out from `internvl_chat/internvl/train/dataset.py` (a
# `set` of grids sorted by area, as the official code does), against `shared.tiling.closest_ratio_grid` and
# `transformers`' `get_optimal_tiled_canvas`, on real photo, screen and document sizes and on a sweep.

# %%
def official_find_closest_aspect_ratio(width: int, height: int, image_size: int = 448, lo: int = 1, hi: int = 12):
    """InternVL's find_closest_aspect_ratio as in internvl/train/dataset.py (transcribed). Returns (cols, rows)."""
    ratios = sorted({(i, j) for n in range(lo, hi + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                     if lo <= i * j <= hi}, key=lambda x: x[0] * x[1])
    aspect = width / height
    best_diff, best = float("inf"), (1, 1)
    area = width * height
    for ratio in ratios:
        diff = abs(aspect - ratio[0] / ratio[1])
        if diff < best_diff:
            best_diff, best = diff, ratio
        elif diff == best_diff and area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
            best = ratio
    return best


REAL_SIZES = {"iPhone 4:3 photo": (4032, 3024), "iPhone portrait": (3024, 4032), "DSLR 3:2": (6000, 4000),
              "1080p screen": (1920, 1080), "4K screen": (3840, 2160), "A4 scan 300 dpi": (2480, 3508),
              "phone screenshot": (1170, 2532), "COCO photo": (640, 480), "icon": (200, 150),
              "panorama": (8000, 1000), "receipt": (600, 3000), "grace_hopper.jpg": (512, 600)}
TILE = 448
print(f"{'image':18s} {'W x H':>11s}  grid (c x r)  tiles+thumb  tokens")
for name, (w, h) in REAL_SIZES.items():
    c, r = closest_ratio_grid(h, w, tile_size=TILE)
    n = c * r + (c * r > 1)
    print(f"{name:18s} {w:>5d}x{h:<5d}  {c} x {r}          {n:>2d}       {256 * n:>5d}")

# %% [markdown]
# Token count per image is $256\,(cr + [cr > 1])$ (plus `<img>` / `</img>`): 13 tiles = 3,328 tokens at most with
# the default 12. A 4:3 phone photo gets the 4x3 grid. Now the three implementations on every size above and a
# sweep of 4,000 sizes (including tiny and extreme ratios):

# %%
rng = np.random.default_rng(0)
sweep = [tuple(int(v) for v in rng.integers(1, 5000, 2)) for _ in range(4000)] + list(REAL_SIZES.values())
sweep += [(s, s) for s in (100, 300, 448, 633, 634, 950, 951, 1000, 1345)]  # square ties around the area rule
mismatch = 0
for w, h in sweep:
    ours = closest_ratio_grid(h, w, tile_size=TILE)
    lib = get_optimal_tiled_canvas((h, w), (TILE, TILE), 1, 12)  # (cols, rows)
    off = official_find_closest_aspect_ratio(w, h)
    mismatch += (ours != tuple(lib)) + (ours != off)
print(f"{len(sweep)} sizes: shared.tiling vs transformers vs official: {mismatch} mismatches")
assert mismatch == 0
print("square 633 ->", closest_ratio_grid(633, 633), "| 634 ->", closest_ratio_grid(634, 634), "| 950 ->",
      closest_ratio_grid(950, 950), "| 951 ->", closest_ratio_grid(951, 951),
      "(area rule: 634^2 > 0.5 * 448^2 * 4, 951^2 > 0.5 * 448^2 * 9)")

# %% [markdown]
# ### 2. Pixel shuffle: 1024 patches -> 256 tokens per tile
#
# A 448 tile with 14-pixel patches gives $448/14 = 32$ patches a side, $32^2 = 1024$ ViT tokens (the class token is
# dropped). With ratio $s = 1/2$, pixel shuffle maps $(B, 32, 32, C) \to (B, 16, 16, 4C)$: each 2x2 block of
# neighbouring patches becomes one token of 4x the channels, **256 tokens per tile**, at no loss of information (a
# permutation), and the MLP then mixes the four. Checked against `transformers`' `InternVLModel.pixel_shuffle`
# (which names its axes (batch, width, height) but applies the same reshapes) and against a brute-force gather.

# %%
x = torch.randn(3, 32, 32, 8)  # (tiles, 448/14, 448/14, C)
ours = pixel_shuffle(x, 0.5)  # (3, 16, 16, 32)
lib = transformers.models.internvl.modeling_internvl.InternVLModel.pixel_shuffle(None, x, scale_factor=0.5)
brute = torch.empty(3, 16, 16, 32)
for i in range(16):
    for j in range(16):  # channel block 2a + b holds patch (2i + a, 2j + b)
        brute[:, i, j] = torch.cat([x[:, 2 * i + a, 2 * j + b] for a in (0, 1) for b in (0, 1)], -1)
print("shape", tuple(x.shape), "->", tuple(ours.shape), "| tokens per tile:", ours.shape[1] * ours.shape[2])
e1 = assert_close(ours, lib, atol=0.0, name="pixel_shuffle vs transformers")
e2 = assert_close(ours, brute, atol=0.0, name="pixel_shuffle vs brute force")
print(f"vs transformers: {error_bound(e1)} | vs brute-force gather: {error_bound(e2)}")
print("token (0,0) takes patches", [(a, b) for a in (0, 1) for b in (0, 1)], "in channel-block order")

# %% [markdown]
# ### 3. V2PE position ids
#
# Standard ids give every token, text or visual, $p_{i} = p_{i-1} + 1$. V2PE (2412.09616) uses
# $$ p_i = p_{i-1} + \begin{cases} 1 & x_i \text{ text} \\ \delta & x_i \text{ visual} \end{cases}, \qquad \delta < 1, $$
# then feeds the real-valued $p_i$ to RoPE (rotation angles $p_i \theta_k$: nothing in RoPE needs integers). The
# official implementation is `get_rope_pos_id` in [OpenGVLab/V2PE](https://github.com/OpenGVLab/V2PE) (HEAD
# `f96f189`), used both by the **training** dataset (`internvl/train/internvl_chat_finetune.py`) and by the model at
# evaluation (`internvl/model/internvl_chat/modeling_internvl_chat.py`); it is not in OpenGVLab/InternVL. Version
# `v2pe_fix` sets $\delta$ = `rope_pos_id_stride / num_image_token` with 256 tokens per tile, places the visual
# tokens at $p_{\rm img} + \delta, \dots, p_{\rm img} + n\delta$ with
# `torch.arange(last, last + δ (n + 1), δ)[1:]`, and resumes text at $\lceil p_{\rm img} + n\delta \rceil + 1$.
# For the strides the code allows, $\delta = 2^k/256$ is an exact binary fraction, so `arange` gives exactly
# `linspace`'s ids (checked below); for a $\delta$ that is not a power of two, `arange` with a float step can return
# one element too many or too few. Version `v2pe_rnd` (training) draws the stride from $\{1, 2, 4, \dots, 256\}$,
# i.e. $\delta \in \{1/256, \dots, 1\}$, **once per image** (`random.choice` sits inside the loop over the images of
# a sample, so two images of one sample can get different $\delta$), so the model sees many $\delta$ and one can be
# picked at test time. The official evaluation scripts take **one** stride from the environment
# (`STRIDE=${STRIDE:-"-1"}` in `scripts/evaluate_*.sh`; the README's example is `STRIDE=64`); nothing in the
# repository sweeps strides, and `eval/mm_niah/eval_mm_niah_long.py` also compares with linear and NTK RoPE
# interpolation at stride 256. The paper's own ablation of $\delta$ is not verified here. (Which $\delta$ the
# released InternVL3 checkpoints use by default is not verified either.)
#
# **Why it helps long context.** With $N$ images of $T$ tiles, standard ids span $\approx 256 N T$ positions; a
# 12-tile image alone spans 3,328. V2PE spans $256 N T \delta$: with $\delta = 1/16$, 16x less, so a long interleaved
# document stays in the range of relative distances the LLM was trained on, while text keeps unit steps (and so the
# LLM's text behaviour). The price: visual tokens closer than $1/\delta$ apart are nearly indistinguishable by
# position (their RoPE angles differ little), so the spatial order inside a tile must come from the ViT features.

# %%
def v2pe_position_ids(is_visual: torch.Tensor, delta: float | torch.Tensor) -> torch.Tensor:
    """is_visual (L,) bool -> position ids (L,) float: +1 per text token, +delta per visual token, ceil after a block.

    delta: one number, or a (L,) tensor of per-token steps (one delta per image, as v2pe_rnd draws them)."""
    step = torch.where(is_visual, torch.as_tensor(delta, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    pos, out, prev_vis = -1.0, [], False
    for v, s in zip(is_visual.tolist(), step.tolist(), strict=True):
        if prev_vis and not v:
            pos = math.ceil(pos - 1e-9)  # the official code rounds up after the image
        pos += s
        out.append(pos)
        prev_vis = v
    return torch.tensor(out, dtype=torch.float64)


def official_v2pe_fix(n_before: int, n_image: int, n_after: int, stride: float, num_image_token: int = 256):
    """V2PE's get_rope_pos_id(version='v2pe_fix') for one image, transcribed: text, <img>, image, </img>, text."""
    pre = torch.arange(n_before + 1, dtype=torch.float64)  # text ... <img>
    last = pre[-1]
    small = stride / num_image_token
    img = torch.arange(last, last + small * (n_image + 1), small, dtype=torch.float64)[1:]  # as the official code
    last = torch.ceil(img[-1])
    post = last + 1 + torch.arange(n_after + 1, dtype=torch.float64)  # </img> text ...
    return torch.cat([pre, img, post])


n_img = 2 * 256  # one image of 2 tiles (256 tokens each)
layout = torch.tensor([False] * 4 + [True] * n_img + [False] * 4)  # 3 text + <img>, image, </img> + 3 text
for stride in (256, 64, 16, 1):
    ours = v2pe_position_ids(layout, stride / 256)
    ref = official_v2pe_fix(3, n_img, 3, stride)
    err = assert_close(ours, ref, atol=1e-9, name=f"v2pe stride {stride}")
    lin = torch.linspace(3, 3 + stride / 256 * n_img, n_img + 1, dtype=torch.float64)[1:]
    assert torch.equal(ref[4:4 + n_img], lin)  # arange with a 2^k/256 step = linspace, bit for bit
    print(f"stride {stride:3d} (delta {stride / 256:.4f}): last text id {ours[-1].item():6.1f}, "
          f"image spans {ours[4 + n_img - 1] - ours[3]:.2f} positions | vs official {error_bound(err)}")
print("standard ids are stride 256 (delta 1): last id", len(layout) - 1, "| arange == linspace for these strides")
bad = torch.arange(0.0, 0.1 * (100 + 1), 0.1, dtype=torch.float64)  # delta 0.1 is no binary fraction
print(f"arange with step 0.1 for 100 tokens: {len(bad) - 1} ids after [1:] (expected 100: one too many)")
assert len(bad) - 1 == 101
small_layout = torch.tensor([False] * 2 + [True] * 8 + [False] * 2)  # text, text, 8 visual, text, text
print("walkthrough, 2 text + 8 visual + 2 text at delta 1/4:", v2pe_position_ids(small_layout, 0.25).tolist())

# %% [markdown]
# **The multi-image path, against the official loop.** The check above is one image. InternVL's use case is many
# images per row, with different tile counts, and a batch is left-padded. Below, `official_get_rope_pos_id` is the
# `v2pe_fix` branch of `get_rope_pos_id` transcribed from OpenGVLab/V2PE `f96f189`,
# `internvl/model/internvl_chat/modeling_internvl_chat.py` L637-709: the text run before each `<img>` is
# `attention_mask.cumsum - 1` with pads `masked_fill_`ed to 1 (L659-660), each image is the `arange` of L667 with
# `num_tiles` as a per-image list, text resumes after `ceil` (L669), and the tail is the same cumsum (L696-698).
# It is compared with `v2pe_position_ids` on rows of 2-3 images (tiles 3/1/7 and 2/5) with 4 left pads.

# %%
def official_get_rope_pos_id(input_ids, attention_mask, num_tiles, stride, start_id, end_id, num_image_token=256):
    """OpenGVLab/V2PE get_rope_pos_id, version 'v2pe_fix', one row (transcribed; the 'default'/'v2pe_rnd' arms cut)."""
    starts = torch.where(input_ids == start_id)[0]
    out, last, start = [], -1, 0
    for i in range(len(starts)):
        pre = attention_mask[start:starts[i] + 1].long().cumsum(-1) - 1 + (last + 1)
        pre.masked_fill_(attention_mask[start:starts[i] + 1] == 0, 1)
        out.append(pre)
        last = pre[-1].long()
        small = stride / num_image_token
        img = torch.arange(last, last + small * (num_image_token * num_tiles[i] + 1), small)[1:].to(torch.float32)
        out.append(img)
        last = torch.ceil(img[-1]).long()
        start = starts[i] + num_tiles[i] * num_image_token + 1
        assert input_ids[start] == end_id
    post = attention_mask[start:].long().cumsum(-1) - 1 + (last + 1)
    post.masked_fill_(attention_mask[start:] == 0, 1)
    out.append(post)
    return torch.cat(out).to(torch.float32)


IMG_S, IMG_E, IMG_C, N_PAD = 251, 252, 250, 4  # <img>, </img>, image-context token ids; left pads
worst_multi = 0.0
for stride in (1, 16, 64):
    for tiles in ([3, 1, 7], [2, 5]):
        ids = [5, 6]
        for t in tiles:
            ids += [IMG_S] + [IMG_C] * (256 * t) + [IMG_E] + [7, 8, 9]
        row = torch.tensor([0] * N_PAD + ids)
        mask = torch.tensor([0] * N_PAD + [1] * len(ids))
        ref = official_get_rope_pos_id(row, mask, tiles, stride, IMG_S, IMG_E)
        ours = torch.ones(len(row))  # pads get id 1, as masked_fill_ does
        ours[N_PAD:] = v2pe_position_ids(torch.tensor(ids) == IMG_C, stride / 256).float()
        worst_multi = max(worst_multi, assert_close(ours, ref, atol=1e-6, name=f"multi-image stride {stride}"))
print(f"2-3 images (tiles 3/1/7 and 2/5), 4 left pads, strides 1/16/64: ours vs official v2pe_fix loop "
      f"{error_bound(worst_multi)}; last id at stride 64, tiles 2/5: {ref[-1].item():.0f} (2 + 128, ceil, +5 text, +320, +4 text)")

# %% [markdown]
# ## Walkthrough
#
# The full image path of InternVL, from pixels to logits, with the reading's own pieces: tiles (derivation 1) and
# normalisation by hand, the library's InternViT (the ViT itself is not this paper's contribution), our pixel
# shuffle (derivation 2), the MLP projector written with `torch.nn.functional`, and the image tokens placed by hand.
#
# **Preprocessing.** Resize to the grid's canvas with PIL bicubic, cut with `shared.tiling.split_tiles`, append the
# thumbnail, scale to [0, 1] and normalise with ImageNet's mean/std (InternVL's `build_transform`). The real photo
# is matplotlib's `grace_hopper.jpg` (512x600), shrunk to 300x200 and 200x420 so that the tiny model runs fast and
# the two images of the batch get different grids.

# %%
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # IMAGENET mean/std, as InternVL's build_transform
with cbook.get_sample_data("grace_hopper.jpg") as f:
    photo = Image.open(f).convert("RGB")
images = [photo.resize((300, 200), Image.BICUBIC), photo.resize((200, 420), Image.BICUBIC)]


def our_tiles(img: Image.Image, tile: int = TILE, max_tiles: int = 12) -> torch.Tensor:
    """PIL image -> (n_tiles [+1 thumbnail], 3, tile, tile), normalised."""
    c, r = closest_ratio_grid(img.height, img.width, tile_size=tile, max_tiles=max_tiles)

    def to_tensor(im):
        a = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W)
        return (a - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]

    canvas = to_tensor(img.resize((c * tile, r * tile), Image.BICUBIC))  # (3, r T, c T)
    tiles = split_tiles(canvas, tile)  # (r c, 3, T, T), row by row
    if c * r > 1:
        tiles = torch.cat([tiles, to_tensor(img.resize((tile, tile), Image.BICUBIC))[None]])
    return tiles


ours_px = [our_tiles(im) for im in images]
proc = GotOcr2ImageProcessorPil(crop_to_patches=True, size={"height": TILE, "width": TILE}, image_mean=MEAN,
                                image_std=STD, max_patches=12, min_patches=1)
lib_out = proc(images=images, return_tensors="pt")
lib_px = lib_out["pixel_values"]
print("tiles per image (ours):", [t.shape[0] for t in ours_px], "| library num_patches:",
      lib_out["num_patches"].tolist())
err_px = assert_close(torch.cat(ours_px), lib_px, atol=1e-5, name="pixel values")  # one uint8 step would be 1/255/0.225 = 0.017
print(f"pixel values vs GotOcr2ImageProcessorPil (InternVL's processor): max abs error {error_bound(err_px)}")

# %% [markdown]
# The pixel values agree to float rounding (asserted at 1e-5, far below one uint8 step, 0.017 after normalising):
# PIL resizes in uint8 in both; the library rescales and normalises in another order. Next, a tiny
# `InternVLForConditionalGeneration` from a config: a 1-layer InternViT of width 32 at 448 with 14-pixel patches (so a tile really is 1024 patches)
# and a 2-layer Qwen2 LM of width 64. Random weights, nothing downloaded.

# %%
IMG_TOK, IMG_START, IMG_END, VOCAB_LM = 250, 251, 252, 256
vcfg = InternVLVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                            image_size=[TILE, TILE], patch_size=[14, 14])
tcfg = Qwen2Config(vocab_size=VOCAB_LM, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
cfg = InternVLConfig(vision_config=vcfg, text_config=tcfg, image_token_id=IMG_TOK, image_seq_length=256,
                     downsample_ratio=0.5)
torch.manual_seed(0)
model = InternVLForConditionalGeneration(cfg).eval()
print("vision tower params", sum(p.numel() for p in model.model.vision_tower.parameters()),
      "| LM params", sum(p.numel() for p in model.model.language_model.parameters()))

# %% [markdown]
# **Image tokens.** Each image becomes `<img>` + $256 \times$ (tiles) `<IMG_CONTEXT>` + `</img>` inside the text
# (InternVL's chat template; the `<IMG_CONTEXT>` slots are overwritten by the projected features). Batch of two
# sequences with different tile counts, left-padded to one length (pad id 0, masked).

# %%
def build_ids(n_tiles: int, prefix: list[int], suffix: list[int]) -> list[int]:
    return prefix + [IMG_START] + [IMG_TOK] * (256 * n_tiles) + [IMG_END] + suffix


seqs = [build_ids(ours_px[0].shape[0], [5, 6, 7], [8, 9]), build_ids(ours_px[1].shape[0], [10], [11, 12, 13, 14])]
L = max(map(len, seqs))
input_ids = torch.tensor([[0] * (L - len(s)) + s for s in seqs])  # (2, L), left padding
attn = torch.tensor([[0] * (L - len(s)) + [1] * len(s) for s in seqs])
pixel_values = torch.cat(ours_px)  # (total tiles, 3, 448, 448), in the order the images appear
print("input_ids", tuple(input_ids.shape), "| image tokens per sequence", (input_ids == IMG_TOK).sum(1).tolist(),
      "| pixel_values", tuple(pixel_values.shape))


@torch.no_grad()
def our_forward(model, input_ids, attention_mask, pixel_values, position_ids=None):
    """InternVL's forward with the reading's pieces: ViT (library) -> pixel shuffle (ours) -> MLP (F) -> scatter."""
    m = model.model
    feats = m.vision_tower(pixel_values=pixel_values).last_hidden_state[:, 1:]  # (tiles, 1024, C): drop CLS
    side = int(math.isqrt(feats.shape[1]))  # 32
    feats = pixel_shuffle(feats.reshape(-1, side, side, feats.shape[-1]), 0.5)  # (tiles, 16, 16, 4C)
    feats = feats.reshape(feats.shape[0], -1, feats.shape[-1])  # (tiles, 256, 4C)
    p = m.multi_modal_projector
    h = F.layer_norm(feats, (feats.shape[-1],), p.layer_norm.weight, p.layer_norm.bias, p.layer_norm.eps)
    h = F.linear(F.gelu(F.linear(h, p.linear_1.weight, p.linear_1.bias)), p.linear_2.weight, p.linear_2.bias)
    emb = m.get_input_embeddings()(input_ids).clone()  # (B, L, D)
    where = (input_ids == IMG_TOK).nonzero()  # row-major: sequence 0's slots first, in order
    emb[where[:, 0], where[:, 1]] = h.reshape(-1, h.shape[-1])  # tile 0's 256 tokens, tile 1's, ...
    pos = (attention_mask.cumsum(-1) - 1).clamp(min=0) if position_ids is None else position_ids  # standard by default
    out = m.language_model(inputs_embeds=emb, attention_mask=attention_mask, position_ids=pos)
    return model.lm_head(out.last_hidden_state)


with torch.no_grad():
    ref_logits = model(input_ids=input_ids, attention_mask=attn, pixel_values=pixel_values).logits
    pos_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    ref_logits_pos = model(input_ids=input_ids, attention_mask=attn, pixel_values=pixel_values,
                           position_ids=pos_ids).logits
mine = our_forward(model, input_ids, attn, pixel_values)
real = attn.bool()
err_default = (mine - ref_logits)[real].abs().max().item()
err = assert_close(mine[real], ref_logits_pos[real], atol=1e-5, name="end-to-end logits")
print(f"logits {tuple(mine.shape)} vs InternVLForConditionalGeneration (same position ids): max abs error {error_bound(err)}")
print(f"vs the model's default position ids (arange, pads counted): {error_bound(err_default)}")

# %% [markdown]
# With left padding, the library's default position ids are `arange(L)` for both rows (the pads take positions),
# while ours count from the first real token; relative positions are the same, and RoPE depends only on them, so
# both errors are at float-rounding level. Passing the same `position_ids` makes the comparison exact in intent.
#
# **The same forward with V2PE ids.** `transformers` 5.23 has no V2PE, but its Qwen2 RoPE takes any real-valued
# `position_ids`, so the reading's own fractional ids (derivation 3, $\delta = 1/16$, pads set to 1 as the official
# `masked_fill_(attention_mask == 0, 1)`) can be fed to both forwards. Three checks: (a) ours = library with V2PE ids;
# (b) the fractions are used (`floor(ids)` changes the logits); (c) **the trap**: with no `attention_mask` and
# `use_cache=False` (as in training), `transformers` 5.23 reads position ids as *packed sequences*
# (`masking_utils.find_packed_sequence_indices`: a new sequence starts wherever the id does not step by exactly 1),
# so every V2PE visual token becomes its own "sequence" and attention is silently cut. Standard ids are immune.
# The right way: always pass `attention_mask` (all ones if there is no padding) together with V2PE ids.

# %%
from transformers.masking_utils import find_packed_sequence_indices  # noqa: E402

v2pe_pos = torch.ones(input_ids.shape, dtype=torch.float32)  # pads: 1, as the official masked_fill_
for b in range(len(input_ids)):
    real_b = attn[b].bool()
    v2pe_pos[b, real_b] = v2pe_position_ids(input_ids[b, real_b] == IMG_TOK, 1 / 16).float()
with torch.no_grad():
    lib_v2pe = model(input_ids=input_ids, attention_mask=attn, pixel_values=pixel_values, position_ids=v2pe_pos).logits
    lib_floor = model(input_ids=input_ids, attention_mask=attn, pixel_values=pixel_values,
                      position_ids=v2pe_pos.floor()).logits
mine_v2pe = our_forward(model, input_ids, attn, pixel_values, position_ids=v2pe_pos)
e_v2pe = assert_close(mine_v2pe[real], lib_v2pe[real], atol=1e-5, name="end-to-end logits, V2PE ids")
d_floor = (lib_v2pe - lib_floor)[real].abs().max().item()
print(f"(a) V2PE ids (delta 1/16), ours vs InternVLForConditionalGeneration: {error_bound(e_v2pe)}; "
      f"last id of each row {[round(v, 2) for v in v2pe_pos[:, -1].tolist()]} vs {L - 1} standard")
print(f"(b) V2PE ids vs floor(ids), library: max abs logit change {d_floor:.1e} (the fractions are used)")
assert d_floor > 1e-4
# (c) the trap, on the unpadded row (so that "no mask" is otherwise harmless)
row = int(attn.sum(1).argmax())
one = dict(input_ids=input_ids[row:row + 1], pixel_values=ours_px[row])
std_pos = torch.arange(L, dtype=torch.float32)[None]
with torch.no_grad():
    trap = {}
    for ids_name, pos in (("V2PE", v2pe_pos[row:row + 1]), ("standard", std_pos)):
        masked = model(**one, attention_mask=torch.ones_like(one["input_ids"]), position_ids=pos).logits
        no_mask = model(**one, position_ids=pos, use_cache=False).logits
        trap[ids_name] = ((masked - no_mask).abs().max().item(), find_packed_sequence_indices(pos))
for ids_name, (d, packed) in trap.items():
    n_seq = 1 if packed is None else int(packed.max()) + 1
    print(f"(c) {ids_name:8s} ids, no attention_mask + use_cache=False vs with mask: max abs logit difference "
          f"{d:.2g}; 'packed sequences' detected: {n_seq}")
assert trap["V2PE"][0] > 1e-2 and trap["standard"][0] < 1e-5  # the trap fires for V2PE ids only

# %% [markdown]
# ## Check against a reference
#
# Summary of the checks above, each two independent computations:
#
# | piece | ours | reference | error |
# |---|---|---|---|
# | grid choice, 4,021 sizes | `shared.tiling.closest_ratio_grid` | `transformers` `get_optimal_tiled_canvas` and the official `find_closest_aspect_ratio` (transcribed) | 0 mismatches |
# | pixel values, 2 real images | PIL resize + `split_tiles` + thumbnail | `GotOcr2ImageProcessorPil(crop_to_patches=True)` | < 1e-5 (asserted) |
# | pixel shuffle | `shared.tiling.pixel_shuffle` | `InternVLModel.pixel_shuffle`, brute-force gather | 0 |
# | V2PE ids | `v2pe_position_ids` (step rule) | official `v2pe_fix` (`arange` + `ceil`) transcribed; `linspace` | < 1e-9; equal |
# | end-to-end logits, batch 2 | `our_forward` | `InternVLForConditionalGeneration.forward` | < 1e-5 |
# | end-to-end logits, V2PE ids, batch 2 | `our_forward(position_ids=v2pe)` | same, `position_ids=v2pe` (with mask) | < 1e-5 |
# | MPO loss, 3 terms and the sum | written out from equation (M) | `trl` 1.16 `DPOTrainer._compute_loss` | < 1e-12 |
# | toy training, 32 models at once (Reproduction) | `stacked_forward`, `train_stacked` | `ToyLM.forward`, `train_arm` one model at a time | printed there |
#
# ### MPO, InternVL3's preference stage
#
# After SFT, InternVL3 is post-trained with MPO (arXiv 2411.10442, InternVL2.5-MPO's recipe) on MMPR-v1.2
# (`--meta_path "MMPR-v1.2/meta.json"` in the official `internvl_chat/shell/internvl3.0/mpo/internvl3_8b_mpo.sh`).
# With the implicit reward $r(y) = \beta \log \frac{\pi_\theta(y|x)}{\pi_{\rm ref}(y|x)}$ of a chosen $y_c$ and a
# rejected $y_r$,
# $$ \mathcal L_{\rm MPO} = w_p\,\underbrace{-\log\sigma\big(r(y_c) - r(y_r)\big)}_{\rm DPO\ (sigmoid)}
#  + w_q\,\underbrace{\Big[-\log\sigma\big(r(y_c) - \delta\big) - \log\sigma\big(-(r(y_r) - \delta)\big)\Big]}_{\rm BCO\ pair}
#  + w_g\,\underbrace{\Big(-\tfrac{1}{|y_c|}\textstyle\sum_t \log \pi_\theta(y_{c,t} \mid x, y_{c,<t})\Big)}_{\rm SFT}
#  \tag{M} $$
# averaged over the batch (SFT: over all chosen tokens of the batch, as `trl`). Why each term: DPO learns the
# **relative** preference (only $r_c - r_r$ matters, so both can drift down together); BCO classifies each response
# **absolutely** (chosen reward above the shift $\delta$, rejected below), which stops that joint drift; SFT keeps the
# chosen text likely (the generation quality term). Weights in the InternVL3 script:
# `--loss_type sigmoid,bco_pair --sigmoid_loss_weight 0.8 --bco_pair_loss_weight 0.2 --rpo_alpha 1`, i.e.
# $(w_p, w_q, w_g) = (0.8, 0.2, 1)$ (verified in code at InternVL HEAD `2410d1d`; `rpo_alpha` adds the SFT term).
#
# **The BCO shift $\delta$.** InternVL's `MultimodalDPOTrainer` (`internvl_chat/internvl/train/trainer_dpo.py`,
# `__init__`) creates a `RunningMoments` whenever `bco_pair` is mixed with other losses, so the **official** BCO term
# uses $\delta$ = a running mean of the rewards (`trl` <= 0.28 behaviour). **This reading sets $\delta = 0$**, as
# `trl` 1.16 does; the running-mean version and its check are in [V11](V11_internvl3_5.ipynb), which also treats
# MPO at length (a toy, and the check with a real `DPOTrainer` on a tiny LM). Here: (M) written from scratch, on
# fixed per-token log-probs, against `trl` 1.16's own `DPOTrainer._compute_loss` (called on a stub trainer whose
# "model" returns those log-probs, so no LM is needed) and against `shared.preference_losses.mpo_loss`.
#
# **What a healthy run prints:** at $\pi_\theta = \pi_{\rm ref}$ every reward is 0, so DPO $= \ln 2 = 0.693$ and
# BCO $= 2 \ln 2 = 1.386$; every difference at float64 rounding.

# %%
import collections  # noqa: E402
import types  # noqa: E402

import trl  # noqa: E402

B_PAIRS, T_MAX, beta = 3, 7, 0.1
g_mpo = torch.Generator().manual_seed(0)
tok_lp = -3 * torch.rand(2 * B_PAIRS, T_MAX, generator=g_mpo, dtype=torch.float64)  # policy, rows [chosen; rejected]
ref_tok_lp = -3 * torch.rand(2 * B_PAIRS, T_MAX, generator=g_mpo, dtype=torch.float64)  # reference
resp_len = torch.tensor([7, 4, 6, 5, 7, 3])  # ragged responses
comp_mask = (torch.arange(T_MAX + 1) >= 1) & (torch.arange(T_MAX + 1) <= resp_len[:, None])  # token 0 = prompt
tok_mask = comp_mask[:, 1:].double()  # position t predicts token t + 1


def mpo_from_scratch(lp, ref_lp, mask, w=(0.8, 0.2, 1.0), beta=0.1, delta=0.0):
    """Equation (M) from per-token log-probs (2B, T): returns (total, dpo, bco, sft)."""
    seq, ref_seq = (lp * mask).sum(1), (ref_lp * mask).sum(1)
    r_c, r_r = (beta * (seq - ref_seq)).chunk(2)
    dpo = -F.logsigmoid(r_c - r_r).mean()
    bco = (-F.logsigmoid(r_c - delta) - F.logsigmoid(-(r_r - delta))).mean()
    m_c = mask.chunk(2)[0]
    sft = -(lp.chunk(2)[0] * m_c).sum() / m_c.sum()
    return w[0] * dpo + w[1] * bco + w[2] * sft, dpo, bco, sft


def trl_mpo(lp, ref_lp, loss_types, loss_weights, beta=0.1):
    """trl 1.16 DPOTrainer._compute_loss on a stub trainer; the 'model' returns the given per-token log-probs."""
    out = types.SimpleNamespace(log_probs=lp * tok_mask, entropy=torch.zeros_like(lp), mean_logits=torch.zeros_like(lp),
                                is_top1=torch.zeros(lp.shape, dtype=torch.bool))

    def stub_model(**kwargs):
        return out

    stub_model.training = True
    acc = types.SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x)
    stub = types.SimpleNamespace(model=stub_model, accelerator=acc, aux_loss_enabled=False, ld_alpha=None,
                                 precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=loss_types,
                                 loss_weights=loss_weights, beta=beta, use_weighting=False, _tp_size=1,
                                 _metrics={"train": collections.defaultdict(list)}, _total_train_tokens=0)
    ref_seq = (ref_lp * tok_mask).sum(1)
    inputs = {"input_ids": torch.zeros(comp_mask.shape, dtype=torch.long), "attention_mask": comp_mask.long(),
              "completion_mask": comp_mask.long(), "ref_chosen_logps": ref_seq[:B_PAIRS],
              "ref_rejected_logps": ref_seq[B_PAIRS:]}
    return trl.DPOTrainer._compute_loss(stub, stub_model, inputs, return_outputs=False)


total, dpo, bco, sft = mpo_from_scratch(tok_lp, ref_tok_lp, tok_mask)
seq_lp, ref_seq_lp = (tok_lp * tok_mask).sum(1), (ref_tok_lp * tok_mask).sum(1)
shared_total = mpo_loss(*seq_lp.chunk(2), *ref_seq_lp.chunk(2), tok_mask.chunk(2)[0].sum(1), beta=beta)
print(f"{'term':26s} {'from scratch':>12s} {'trl 1.16':>10s}  error")
for name, ours_v, types_, weights in (("DPO (sigmoid)", dpo, ["sigmoid"], [1.0]), ("BCO pair (delta 0)", bco,
                                      ["bco_pair"], [1.0]), ("SFT", sft, ["sft"], [1.0]),
                                      ("MPO 0.8 / 0.2 / 1", total, ["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0])):
    theirs = trl_mpo(tok_lp, ref_tok_lp, types_, weights)
    e = assert_close(ours_v, theirs, atol=1e-12, name=name)
    print(f"{name:26s} {ours_v.item():12.4f} {theirs.item():10.4f}  {error_bound(e)}")
e = assert_close(shared_total, total, atol=1e-12, name="shared mpo_loss")
print(f"shared.preference_losses.mpo_loss {shared_total.item():.4f} vs from scratch: {error_bound(e)}")
_, dpo0, bco0, _ = mpo_from_scratch(tok_lp, tok_lp, tok_mask)  # policy = reference
print(f"at pi = pi_ref: DPO {dpo0.item():.4f} (ln 2 = {math.log(2):.4f}), BCO {bco0.item():.4f} "
      f"(2 ln 2 = {2 * math.log(2):.4f})")
assert abs(dpo0.item() - math.log(2)) < 1e-12 and abs(bco0.item() - 2 * math.log(2)) < 1e-12

# %% [markdown]
# **Version notes.** (i) `transformers`' `pixel_shuffle` calls its axes (batch, width, height) where InternVL's
# `InternVLChatModel.pixel_shuffle` says (N, W, H) too; both apply the same two reshapes to a (B, 32, 32, C) grid,
# and the ViT grid is row-major (h, w), so the channel order is the one of the brute force above. (ii)
# `transformers` 5.23.0's `InternVL` has no V2PE: by default it uses integer ids, so the released InternVL3 `-hf`
# checkpoints run without V2PE's fractional ids there (the consequence for long-context accuracy is not verified).
# Fractional `position_ids` can be passed and are used (check (a)-(b) above), **but only with an `attention_mask`**:
# without one and without a cache, `masking_utils` treats every id step other than 1 as the start of a new packed
# sequence, so V2PE ids silently cut attention into one "sequence" per visual token (check (c) above). (iii) The official `dynamic_preprocess` sorts a `set` of grids; `get_optimal_tiled_canvas` a list:
# the order differs only inside one tile count, and the 4,021 sizes above all agree (a random sweep cannot prove
# "never"; equal-count grids have different ratios, so a tie between them needs the image ratio exactly midway). (iv) This reading
# imports `get_optimal_tiled_canvas` from `image_processing_pil_got_ocr2` (the PIL backend, no `torchvision` needed);
# in 5.23.0 its body is line-for-line the one of `image_processing_got_ocr2` ("Adapted from" it; diffed, identical).

# %% [markdown]
# ## Reproduction
#
# **Claim (V2PE abstract and InternVL3 abstract):** smaller position increments for visual tokens let a model handle
# longer multimodal contexts than it was trained on; V2PE reports that models fine-tuned with it generalise to
# much longer contexts (the paper's exact numbers and tables were not readable here: not verified).
#
# **Toy.** Key-value recall across "images": a sequence is 3 pairs `key value` each followed by a block of $n$
# random visual tokens, then a query key; the model must output the value that followed it. A 2-layer, 2-head
# transformer with RoPE (width 32) trains for 400 steps x 16 sequences at $n = 4$ (19 tokens) and is tested at
# $n = 4$, $16$ and $32$ (4x and 8x the visual tokens). **Only the position-id rule changes between arms**: the same
# model, initial weights per seed, data stream, steps and optimiser; standard ids ($\delta = 1$), $\delta = 1/4$,
# $1/16$ (the ablation of $\delta$), and **a cut-down version of V2PE's training recipe `v2pe_rnd`**: a random
# $\delta \in \{1, 1/2, 1/4, 1/8, 1/16\}$ (the official `random_from = [1, 2, ..., 256]` goes down to $1/256$), one
# per visual block, drawn afresh every step and **shared by the 16 sequences of a batch**; the official code draws
# per image *of each sample* (`random.choice` inside the per-image loop of `get_rope_pos_id`, called once per sample:
# `modeling_internvl_chat.py` L655/L672-673; the training dataset's copy, `internvl_chat_finetune.py` L569/L588,
# is called per sample at L544). Tested at $\delta = 1/16$. 8 seeds.
#
# `ToyLM` is the model, written for one sequence batch; `train_arm` trains one of them. The 32 runs (4 arms x 8
# seeds) are trained **at once** instead: `torch.func.stack_module_state` stacks the 32 models' parameters on a
# leading model axis, `stacked_forward` is `ToyLM.forward` with every linear layer as one batched matmul
# (`torch.baddbmm`) over that axis, and one Adam steps all of them (Adam is elementwise, so one Adam on stacked
# tensors is 32 Adams). The loss is the **sum** of the 32 per-model losses, so each model's gradient is that of its
# own loss. Two checks below: `stacked_forward` against `ToyLM.forward` for all 32 models, and a few steps of the
# stacked training against `train_arm` run model by model (2 seeds of every arm).

# %%
from torch.func import stack_module_state

NK, NV, NVIS, P_PAIRS, D_MODEL, HEADS = 8, 8, 16, 3, 32, 2
V_TOY = NK + NV + NVIS
STEPS, BATCH, N_TRAIN, SEEDS = 400, 16, 4, 8
TEST_N, N_TEST = (4, 16, 32), 256


def toy_batch(n: int, n_vis: int, g: torch.Generator):
    """Returns tokens (n, L), is_visual (L,), target values (n,). All rows share one layout."""
    keys = torch.argsort(torch.rand(n, NK, generator=g), 1)[:, :P_PAIRS]  # distinct keys per row
    vals = NK + torch.randint(0, NV, (n, P_PAIRS), generator=g)
    vis = NK + NV + torch.randint(0, NVIS, (n, P_PAIRS, n_vis), generator=g)
    seq = torch.cat([keys[..., None], vals[..., None], vis], -1).reshape(n, -1)
    qi = torch.randint(0, P_PAIRS, (n,), generator=g)
    seq = torch.cat([seq, keys[torch.arange(n), qi][:, None]], 1)
    is_vis = torch.tensor(([False, False] + [True] * n_vis) * P_PAIRS + [False])
    return seq, is_vis, vals[torch.arange(n), qi]


def rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, d), pos (L,) real-valued -> rotated x (half-split RoPE, base 100 for a short toy)."""
    d = x.shape[-1]
    ang = pos[:, None] * 100.0 ** (-torch.arange(0, d, 2) / d)  # (L, d/2)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * ang.cos() - x2 * ang.sin(), x1 * ang.sin() + x2 * ang.cos()], -1)


class ToyLM(nn.Module):
    def __init__(self, layers: int = 2):
        super().__init__()
        self.emb = nn.Embedding(V_TOY, D_MODEL)
        self.qkv = nn.ModuleList(nn.Linear(D_MODEL, 3 * D_MODEL) for _ in range(layers))
        self.o = nn.ModuleList(nn.Linear(D_MODEL, D_MODEL) for _ in range(layers))
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(D_MODEL, 2 * D_MODEL), nn.GELU(),
                                               nn.Linear(2 * D_MODEL, D_MODEL)) for _ in range(layers))
        self.ln = nn.ModuleList(nn.LayerNorm(D_MODEL) for _ in range(2 * layers))
        self.head = nn.Linear(D_MODEL, V_TOY)

    def forward(self, seq, pos):  # seq (B, L), pos (L,) -> logits at the last token (B, V)
        x = self.emb(seq)
        b, L, _ = x.shape
        for i in range(len(self.qkv)):
            q, k, v = self.qkv[i](self.ln[2 * i](x)).reshape(b, L, 3, HEADS, -1).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(rope(q, pos), rope(k, pos), v, is_causal=True)  # (B, H, L, d)
            x = x + self.o[i](a.transpose(1, 2).reshape(b, L, D_MODEL))
            x = x + self.mlp[i](self.ln[2 * i + 1](x))
        return self.head(x[:, -1])


POS_CACHE: dict = {}


def pos_ids(is_vis: torch.Tensor, delta: float | tuple) -> torch.Tensor:
    """delta: one number, or a tuple with one delta per visual block (the random arm)."""
    key = (len(is_vis), delta)
    if key not in POS_CACHE:
        if isinstance(delta, tuple):  # block index of every token -> that block's delta
            starts = is_vis & ~torch.cat([torch.tensor([False]), is_vis[:-1]])
            delta = torch.tensor(delta, dtype=torch.float64)[(starts.cumsum(0) - 1).clamp(min=0)]
        POS_CACHE[key] = v2pe_position_ids(is_vis, delta).float()
    return POS_CACHE[key]


RANDOM_DELTAS = (1.0, 0.5, 0.25, 0.125, 0.0625)
ARMS = {"standard ids (delta 1)": (1.0, 1.0), "V2PE delta 1/4": (0.25, 0.25), "V2PE delta 1/16": (0.0625, 0.0625),
        "V2PE random delta": ("random", 0.0625)}  # (train delta, test delta); random: tested at 1/16
ARM_SHORT = ["delta 1", "1/4", "1/16", "random", "std+PI", "std, vis 4/n"]  # + 2 test-time controls


def draw_delta(train_delta, gd: torch.Generator) -> float | tuple:
    """Fixed arms: the delta. Random arm (cut-down v2pe_rnd): one delta per visual block, per step, shared by the batch."""
    if train_delta != "random":
        return train_delta
    return tuple(RANDOM_DELTAS[int(i)] for i in torch.randint(0, len(RANDOM_DELTAS), (P_PAIRS,), generator=gd))


def train_arm(seed: int, train_delta, steps: int = STEPS) -> ToyLM:
    """One model, one arm: the reference that train_stacked must reproduce."""
    torch.manual_seed(seed)  # same initial weights for every arm of a seed
    net = ToyLM()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1000 + seed)  # same data stream for every arm of a seed
    gd = torch.Generator().manual_seed(5000 + seed)  # delta draws (used by the random arm only)
    for _ in range(steps):
        seq, is_vis, y = toy_batch(BATCH, N_TRAIN, g)
        loss = F.cross_entropy(net(seq, pos_ids(is_vis, draw_delta(train_delta, gd))), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


# %% [markdown]
# The toy's `rope` against the library: `transformers`' Qwen2 `apply_rotary_pos_emb` (the same half-split
# convention) with cos/sin built from base 100 at real-valued positions.

# %%
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

x_r = torch.randn(2, HEADS, 10, D_MODEL // HEADS, generator=torch.Generator().manual_seed(11))
pos_r = (torch.rand(10, generator=torch.Generator().manual_seed(12)) * 3).cumsum(0)  # fractional, increasing
inv_freq = 1.0 / (100.0 ** (torch.arange(0, D_MODEL // HEADS, 2).float() / (D_MODEL // HEADS)))
emb_r = torch.cat([pos_r[:, None] * inv_freq] * 2, -1)
q_lib, _ = apply_rotary_pos_emb(x_r, x_r, emb_r.cos()[None], emb_r.sin()[None])
e_rope = assert_close(rope(x_r, pos_r), q_lib, atol=1e-5, name="toy rope vs transformers apply_rotary_pos_emb")
print(f"toy rope vs transformers' apply_rotary_pos_emb (base 100, fractional positions): {error_bound(e_rope)}")

# %% [markdown]
# The stacked version. Two exact shortcuts, both checked against `ToyLM` below: a LayerNorm's scale and shift are
# folded into the next linear layer ($W(\gamma \odot \hat x + \beta) + b = (W \operatorname{diag}\gamma)\hat x +
# (W\beta + b)$, a product of weights instead of activations), and in the last layer only the last token's query is
# computed, because only the last token's output is read (it attends to every key, so no mask is needed).

# %%
def stacked_linear(P: dict, name: str, x: torch.Tensor, ln: int | None = None) -> torch.Tensor:
    """Linear layer `name` of M models at once: x (M, N, d_in) -> (M, N, d_out); ln=j applies LayerNorm j first."""
    w, b = P[f"{name}.weight"], P[f"{name}.bias"]  # (M, d_out, d_in), (M, d_out)
    if ln is not None:
        gamma, beta = P[f"ln.{ln}.weight"], P[f"ln.{ln}.bias"]
        b = b + torch.einsum("moi,mi->mo", w, beta)
        w = w * gamma[:, None, :]
        x = F.layer_norm(x, x.shape[-1:])
    return torch.baddbmm(b[:, None], x, w.transpose(1, 2))


def stacked_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """rope() with precomputed tables: x (M, B, H, L, d); cos, sin (M, 1, 1, L, d), angles repeated per half."""
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], -1) * sin


def stacked_forward(P: dict, seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """ToyLM.forward for M models: P = stacked parameters, seq (M, B, L), pos (M, L) -> logits (M, B, V)."""
    m, b, L = seq.shape
    d = D_MODEL // HEADS
    ang = pos[..., None] * 100.0 ** (-torch.arange(0, d, 2) / d)  # (M, L, d/2), as in rope()
    ang = torch.cat([ang, ang], -1)[:, None, None]
    cos, sin = ang.cos(), ang.sin()
    x = P["emb.weight"][torch.arange(m)[:, None, None], seq].reshape(m, b * L, D_MODEL)
    n_layers = sum(k.startswith("qkv.") and k.endswith(".weight") for k in P)
    for i in range(n_layers):
        qkv = stacked_linear(P, f"qkv.{i}", x, ln=2 * i).reshape(m, b, L, 3, HEADS, d)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # each (M, B, H, L, d)
        k = stacked_rope(k, cos, sin).flatten(0, 1)
        if i < n_layers - 1:
            q = stacked_rope(q, cos, sin).flatten(0, 1)
            a = F.scaled_dot_product_attention(q, k, v.flatten(0, 1), is_causal=True)  # (M B, H, L, d)
            a = a.reshape(m, b, HEADS, L, d).transpose(2, 3).reshape(m, b * L, D_MODEL)
        else:  # last layer: only the last token is read, and its query sees every key
            x = x.reshape(m, b, L, D_MODEL)[:, :, -1]  # (M, B, D)
            q = stacked_rope(q[..., -1:, :], cos[..., -1:, :], sin[..., -1:, :]).flatten(0, 1)
            a = F.scaled_dot_product_attention(q, k, v.flatten(0, 1)).reshape(m, b, D_MODEL)
        x = x + stacked_linear(P, f"o.{i}", a)
        x = x + stacked_linear(P, f"mlp.{i}.2", F.gelu(stacked_linear(P, f"mlp.{i}.0", x, ln=2 * i + 1)))
    return stacked_linear(P, "head", x)  # (M, B, V)


def train_stacked(arms: dict, seeds: int, steps: int = STEPS, progress=None) -> dict:
    """Trains len(arms) x seeds ToyLMs in one loop; model a * seeds + s is (arm a, seed s), as train_arm(s, arm)."""
    models = []
    for _ in arms:
        for s in range(seeds):
            torch.manual_seed(s)  # same initial weights for every arm of a seed
            models.append(ToyLM())
    P, _ = stack_module_state(models)  # name -> (M, ...) leaf tensors
    opt = torch.optim.Adam(P.values(), lr=3e-3)
    gens = [torch.Generator().manual_seed(1000 + s) for s in range(seeds)]  # one data stream per seed
    gds = [torch.Generator().manual_seed(5000 + s) for _ in arms for s in range(seeds)]
    train_deltas = [td for td, _ in arms.values() for _ in range(seeds)]
    for _ in progress(range(steps)) if progress else range(steps):
        batches = [toy_batch(BATCH, N_TRAIN, g) for g in gens]
        seq = torch.stack([bt[0] for bt in batches]).repeat(len(arms), 1, 1)  # (M, B, L): each arm, same data
        y = torch.stack([bt[2] for bt in batches]).repeat(len(arms), 1)  # (M, B)
        pos = torch.stack([pos_ids(batches[0][1], draw_delta(td, gd)) for td, gd in zip(train_deltas, gds,
                                                                                        strict=True)])
        logits = stacked_forward(P, seq, pos)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(len(seq), -1).mean(1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return P


def unstack(P: dict, j: int) -> ToyLM:
    net = ToyLM()
    net.load_state_dict({k: v[j].detach() for k, v in P.items()})
    return net


# check 1: stacked_forward = ToyLM.forward for each of 32 models (random init, a different delta per arm)
P0 = train_stacked(ARMS, SEEDS, steps=0)
seq, is_vis, _ = toy_batch(32, 16, torch.Generator().manual_seed(3))
pos = torch.stack([pos_ids(is_vis, td) for _, td in ARMS.values() for _ in range(SEEDS)])
with torch.no_grad():
    stacked = stacked_forward(P0, seq.expand(len(pos), -1, -1), pos)
    one_by_one = torch.stack([unstack(P0, j)(seq, pos[j]) for j in range(len(pos))])
e_fwd = assert_close(stacked, one_by_one, atol=1e-5, name="stacked_forward vs ToyLM")
# check 2: 5 steps of train_stacked = train_arm, model by model (logits on the same batch afterwards)
P5 = train_stacked(ARMS, SEEDS, steps=5)
CHECK_SEEDS = 2  # every arm, 2 of its seeds, one model at a time (the CPU budget)
nets5 = {a * SEEDS + s: train_arm(s, td, steps=5) for a, (td, _) in enumerate(ARMS.values()) for s in range(CHECK_SEEDS)}
with torch.no_grad():
    stacked = stacked_forward(P5, seq.expand(len(pos), -1, -1), pos)[list(nets5)]
    one_by_one = torch.stack([net(seq, pos[j]) for j, net in nets5.items()])
e_train = assert_close(stacked, one_by_one, atol=1e-3, name="train_stacked vs train_arm")
print(f"{len(pos)} models: stacked forward vs ToyLM {error_bound(e_fwd)} | after 5 Adam steps, stacked vs one model "
      f"at a time ({len(nets5)} models, {CHECK_SEEDS} seeds per arm) {error_bound(e_train)} "
      f"(logits of size ~{one_by_one.abs().mean():.1f})")

# %% [markdown]
# The training run: 32 models in one loop (progress and time in this cell, the next prints the rounded results).

# %% tags=["nbval-ignore-output"]
from tqdm.auto import tqdm

P_toy = train_stacked(ARMS, SEEDS, progress=lambda r: tqdm(r, desc=f"steps ({len(ARMS) * SEEDS} models each)"))
g_test = torch.Generator().manual_seed(7)
tests = {n: toy_batch(N_TEST, n, g_test) for n in TEST_N}
acc = {arm: torch.zeros(SEEDS, len(TEST_N)) for arm in ARMS}
with torch.no_grad():
    for j, n in enumerate(TEST_N):
        seq, is_vis, y = tests[n]
        pos = torch.stack([pos_ids(is_vis, test_delta) for _, test_delta in ARMS.values() for _ in range(SEEDS)])
        pred = torch.cat([stacked_forward(P_toy, c.expand(len(pos), -1, -1), pos).argmax(-1)
                          for c in seq.split(64)], 1)  # (M, N_TEST), 64 sequences at a time
        for a, arm in enumerate(ARMS):
            acc[arm][:, j] = (pred[a * SEEDS:(a + 1) * SEEDS] == y).double().mean(1)
# two test-time controls on the SAME standard-id models (no extra training): only the test position ids change
L_TRAIN = (2 + N_TRAIN) * P_PAIRS + 1  # 19 tokens


def control_pos(name: str, is_vis: torch.Tensor, n: int) -> torch.Tensor:
    if name == "std-trained + PI at test":  # position interpolation: every id scaled into the trained span
        return pos_ids(is_vis, 1.0) * (L_TRAIN - 1) / (len(is_vis) - 1)
    return pos_ids(is_vis, N_TRAIN / n)  # visual ids only: delta = 4/n, each block spans 4 positions as in training


CONTROLS = ("std-trained + PI at test", "std-trained, visual delta 4/n at test")
P_std = {k: v[:SEEDS] for k, v in P_toy.items()}  # the 8 standard-id models
for name in CONTROLS:
    acc[name] = acc["standard ids (delta 1)"].clone()  # n = 4: both controls are the standard ids (asserted)
    assert torch.equal(control_pos(name, tests[N_TRAIN][1], N_TRAIN), pos_ids(tests[N_TRAIN][1], 1.0))
with torch.no_grad():
    for j, n in enumerate(TEST_N[1:], 1):
        seq, is_vis, y = tests[n]
        pos = torch.stack([control_pos(name, is_vis, n) for name in CONTROLS for _ in range(SEEDS)])
        P_ctl = {k: v.repeat(len(CONTROLS), *[1] * (v.dim() - 1)) for k, v in P_std.items()}
        pred = torch.cat([stacked_forward(P_ctl, c.expand(len(pos), -1, -1), pos).argmax(-1)
                          for c in seq.split(64)], 1)
        for a, name in enumerate(CONTROLS):
            acc[name][:, j] = (pred[a * SEEDS:(a + 1) * SEEDS] == y).double().mean(1)

# %%
print(f"every arm: {STEPS} steps x {BATCH} sequences of {len(toy_batch(1, N_TRAIN, g_test)[1])} tokens, "
      f"same init and data per seed; {SEEDS} seeds; {N_TEST} test sequences per n; chance = {1 / NV:.3f}")
print(f"{'arm':38s}" + "".join(f" | n={n:<2d} ({len(tests[n][1])} tok): mean ± std [min, max]" for n in TEST_N))
for arm, a in acc.items():
    print(f"{arm:38s}" + "".join(f" |      {a[:, j].mean():.2f} ± {a[:, j].std():.2f} [{a[:, j].min():.2f}, "
                                 f"{a[:, j].max():.2f}]      " for j in range(len(TEST_N))))
print(f"{'last position id':38s}" + "".join(
    f" | {' / '.join(f'{pos_ids(tests[n][1], td)[-1].item():.0f}' for _, td in ARMS.values()):^38s}" for n in TEST_N)
    + "  (the 4 trained arms; both controls: 18)")
print(f"seeds above 0.9 at n = {N_TRAIN} (found the recall circuit): "
      + " / ".join(f"{int((acc[arm][:, 0] > 0.9).sum())}" for arm in ARMS) + f" of {SEEDS} (trained arms)")
fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
for arm, a in acc.items():
    ax[0].errorbar(TEST_N, a.mean(0).numpy(), a.std(0).numpy(), marker="o", capsize=3, label=arm)
ax[0].axvline(N_TRAIN, color="gray", ls=":", label=f"trained at n = {N_TRAIN}")
ax[0].axhline(1 / NV, color="k", ls="--", lw=0.8, label="chance")
ax[0].set_xlabel("visual tokens per block at test")
ax[0].set_ylabel(f"recall accuracy (mean ± std, {SEEDS} seeds)")
ax[0].legend(fontsize=7)
for i, a in enumerate(acc.values()):
    ax[1].scatter(np.full(SEEDS, i), a[:, -1].numpy(), s=14)
    ax[1].errorbar(i, a[:, -1].mean(), a[:, -1].std(), color="k", capsize=4, marker="_")
ax[1].set_xticks(range(len(acc)), ARM_SHORT)
ax[1].set_ylabel(f"accuracy at n = {TEST_N[-1]} (each seed)")
fig.suptitle("V2PE toy: only the position-id rule differs between arms")
fig.tight_layout()
plt.show()

# %% [markdown]
# **What the toy shows.** Read it from the table above (mean ± std over 8 seeds, [min, max]). The last row of
# the table is the mechanism: the position id of the query token. With standard ids it grows with $n$ (18 in
# training, 54 and 102 at test), so the query-key distances at test were never seen in training and RoPE's
# rotations at unseen distances disturb the content match; standard ids fall from 0.90 (n = 4) to 0.45 at 4x and
# 0.16 at 8x (chance 0.125). 0.45 is about what picking one of the three values in the context at random gives
# ($(1 + 2/8)/3 \approx 0.42$, values can repeat): the model still copies a value, not the right one. With
# $\delta = 1/16$ the query sits at 9 in training, 9 at n = 16 (the text tokens land on exactly their training
# positions, only the visual ids in between get finer) and 12 at n = 32, so it degrades little: 0.66, 0.64, 0.58,
# and it beats standard ids on 7/8 seeds at 4x and 8/8 at 8x. $\delta = 1/4$ is in between (query at 9, 18, 30:
# 0.68, 0.54, 0.45). So far this looks like the mechanism the V2PE and InternVL3 abstracts claim, but the two
# test-time controls change the reading.
#
# **The two test-time controls (the same 8 standard-id models, no extra training; only the test ids change).**
# (i) **Position interpolation (PI):** every id, text included, multiplied by $18/(L-1)$, so the query sits at 18 as in
# training. (ii) **Visual ids only, at test:** the V2PE rule applied at test time only, with $\delta = 4/n$, so each
# visual block spans 4 positions as in training and every text token lands on exactly its training position. At
# n = 4 both are the standard ids (asserted). At n = 16 / 32, PI gives about 0.86 / 0.76 and the visual-only control
# about 0.90 / 0.87 (table above). **Both beat every V2PE-trained arm** (each is ahead of the $1/16$-trained arm on
# 8 of 8 seeds at both lengths), and the visual-only control matches the
# standard ids' own accuracy at the training length. The reason: in this toy the visual tokens carry no information
# (they are random filler), so the task only needs the key, value and query tokens to keep the distances seen in
# training. Any compression that keeps the text distances in the trained range solves the task, and training with a
# small $\delta$ only costs learning speed. **What the toy shows, then**, is the positional-range mechanism that V2PE
# exploits: unseen query-key distances break a RoPE model, and compressing visual positions removes them. It does
# **not** show that *training* with V2PE beats free test-time interpolation. The V2PE repository does compare the
# two: its MM-NIAH long-context evaluation (`eval/mm_niah/eval_mm_niah_long.py`, HEAD `f96f189`) has `--interp linear`
# and `--interp ntk` options, which swap in InternLM2's linear or dynamic-NTK RoPE scaling and are allowed only with
# stride 256, i.e. standard ids. So the paper evidently reports interpolation baselines; their numbers, and how they
# compare with V2PE, are not verified here. This toy does not reproduce that comparison. A toy that could would make
# the answer depend on the visual tokens, for example the k-th visual token of a block. Then squeezing the text or the
# visual ids at test time on a model that never saw them should hurt. That toy is not run here.
#
# **The random-$\delta$ arm** (the cut-down `v2pe_rnd`: $\delta \geq 1/16$, per batch; tested at $1/16$) is flat in $n$ like fixed $1/16$ (0.50,
# 0.53, 0.49) and far above standard ids at 8x (ahead on 8/8 seeds), but in this budget it learned the slowest of all (1 of 8 seeds above
# 0.9 at n = 4) and is below fixed $1/16$ on average at every $n$: training on a mix of $\delta$ costs steps here. The
# paper's reason for it, choosing $\delta$ at test time for each context length, is not something a toy trained at
# one length can show.
#
# What else it shows. At the training length small $\delta$ learned *more slowly* here: fewer seeds found the recall
# circuit in 400 steps (above 0.9 at n = 4: 5, 2 and 1 of 8 seeds for $\delta$ = 1, 1/4, 1/16; the slowest sit near
# the 0.42 copy level), so at n = 4 standard ids lead ($\delta = 1/16$ is ahead on 0 of 8 seeds). Why is not tested
# here (a guess: four visual tokens packed into a quarter of a position are hard to tell apart from the value next
# to them). Only one budget is run here (400 steps x 16 sequences); whether the ranking holds at other budgets
# is not shown by this notebook. Caveats: in this toy the visual tokens carry no information, so
# the cost of small $\delta$ (visual tokens that are positionally nearly indistinguishable) can only show as the
# slower learning above, and the paper's gains are on real long-context benchmarks with InternVL3 at 1B-78B (V2PE's
# own experiments are at a smaller scale; the model is not verified here), which a 19k-parameter model cannot speak to.
#
# **Native pre-training vs adapter-first: explained, not reproduced.** This reading runs no toy of it (the CPU
# budget went to the V2PE forward, the MPO check and the random-$\delta$ arm). The objective, stated: next-token
# prediction with the loss on text tokens only (visual tokens are conditioning, $\mathcal L = -\sum_{t \in
# \text{text}} w_t \log p_\theta(x_t \mid x_{<t})$), every module (ViT, MLP, LLM) trainable from the start, on a
# mixture of pure-text and multimodal sequences. The token weights $w_t$: InternVL2.5's `internvl_chat/README.md`
# (L91) names "square averaging"; the formula is in the code, `len2weight` in
# `internvl_chat/internvl/train/internvl_chat_finetune.py` L786-794 (OpenGVLab/InternVL `2410d1d`):
# `loss_reduction == 'square'` gives $w = 1/l^{0.5}$ for a sample of $l$ tokens. That InternVL3's native stage uses
# it too is not verified here. [V9](V9_deepseek_vl.ipynb) runs the closest toy (keeping text in the multimodal
# stage prevents forgetting, 8 seeds). The paper's evidence is the InternVL2-8B ablation quoted in The problem
# ("comparable" on most benchmarks, better after instruction tuning); its numbers are in a figure I could not read.
#
# ### What a healthy run prints
#
# At n = 4 every fixed-$\delta$ arm above 0.5 on average (unconverged seeds sit near 0.42); standard ids fall with n,
# to below 0.25 at n = 32; $\delta = 1/16$ above standard ids on average at n = 16 and n = 32, and on at least 6 of 8
# seeds at 32; the random-$\delta$ arm at n = 32 at least 0.1 above standard ids and ahead on at least 6 of 8 seeds.
# Both test-time controls above the $\delta = 1/16$-trained arm on average at n = 16 and 32, and the visual-only
# control ahead of standard ids on at least 6 of 8 seeds at n = 32. (If a change made the trained V2PE arm beat the
# controls, that would be the interesting finding, and these asserts would say so by failing.)

# %%
a1, a16 = acc["standard ids (delta 1)"], acc["V2PE delta 1/16"]
wins = [int((a16[:, j] > a1[:, j]).sum()) for j in range(len(TEST_N))]
print(" | ".join(f"n={n}: standard {a1[:, j].mean():.2f}, 1/16 {a16[:, j].mean():.2f}, 1/16 ahead on {wins[j]}/{SEEDS}"
                 for j, n in enumerate(TEST_N)))
a_rnd = acc["V2PE random delta"]
wins_rnd = int((a_rnd[:, 2] > a1[:, 2]).sum())
print(f"random delta (tested at 1/16): {' / '.join(f'{v:.2f}' for v in a_rnd.mean(0).tolist())} at n = "
      f"{' / '.join(map(str, TEST_N))}; ahead of standard ids at n = 32 on {wins_rnd}/{SEEDS} seeds")
assert all(acc[arm][:, 0].mean() > 0.5 for arm in list(ARMS)[:3])  # the three fixed-delta arms
assert a_rnd[:, 2].mean() > a1[:, 2].mean() + 0.1 and wins_rnd >= 6
assert a1[:, 0].mean() > a1[:, 1].mean() > a1[:, 2].mean() and a1[:, 2].mean() < 0.25
assert a16[:, 1].mean() > a1[:, 1].mean() and a16[:, 2].mean() > a1[:, 2].mean() and wins[2] >= 6
a_pi, a_vis = acc[CONTROLS[0]], acc[CONTROLS[1]]
for name, a in ((CONTROLS[0], a_pi), (CONTROLS[1], a_vis)):
    beats = [int((a[:, j] > a16[:, j]).sum()) for j in (1, 2)]
    print(f"{name}: {' / '.join(f'{v:.2f}' for v in a.mean(0).tolist())}; ahead of the 1/16-trained arm on "
          f"{beats[0]}/{SEEDS} (n=16) and {beats[1]}/{SEEDS} (n=32) seeds")
assert all(a[:, j].mean() > a16[:, j].mean() for a in (a_pi, a_vis) for j in (1, 2))
assert int((a_vis[:, 2] > a1[:, 2]).sum()) >= 6

# %% [markdown]
# ### Practitioner notes (completeness)
#
# - **No V2PE in the public InternVL code.** At OpenGVLab/InternVL HEAD `2410d1d`, `git grep -i v2pe` finds nothing
#   in `internvl_chat/` (not in the `shell/internvl3.0/` training scripts, not in the inference model), and
#   `git grep rope_pos_id` finds nothing in the whole repository. The public InternVL3 fine-tuning recipe and
#   `transformers` therefore both use integer ids. Fractional ids live only in OpenGVLab/V2PE. Whether InternVL3's
#   own pre-training used V2PE, and with which $\delta$, rests on the abstract (which names V2PE); the $\delta$ is not
#   verified.
# - **Test-time scaling.** The InternVL README (HEAD `2410d1d`) lists "Multimodal Test-Time Scaling"
#   ([arXiv:2503.10291](https://arxiv.org/abs/2503.10291), VisualPRM) among InternVL3-78B's key designs. The
#   repository also ships the VisualPRM data-construction scripts (`internvl_chat/shell/internvl3.0/
#   visualprm_data_construction/`). The idea: a process reward model scores each step of N sampled answers, and
#   the best-scored one is kept (Best-of-N). The paper's section and its gains are not verified here.
# - **The model family** (InternVL README at `2410d1d`, vision part / language part):
#
#   | model | vision | LLM |
#   |---|---|---|
#   | InternVL3-1B / 2B / 8B / 14B | InternViT-300M-448px-V2_5 | Qwen2.5-0.5B / 1.5B / 7B / 14B |
#   | InternVL3-9B | InternViT-300M-448px-V2_5 | internlm3-8b-instruct |
#   | InternVL3-38B / 78B | InternViT-6B-448px-V2_5 | Qwen2.5-32B / 72B |
#
# - **V2PE's positions are float32.** The official code calls `get_rope_pos_id(..., torch.float32, ...)` in training
#   (`internvl/train/internvl_chat_finetune.py` L544, L705, L803) and in evaluation
#   (`eval/mm_niah/eval_mm_niah_long.py` L303), at V2PE HEAD `f96f189`. This matters because a float with $m$
#   significand bits has spacing $2^{e-m+1}$ in $[2^e, 2^{e+1})$, so a step $\delta$ is lost from $p = 2^m \delta$ on.
#   In **bf16** ($m = 8$), a step of $1/16$ is lost from position 16 on, and past 256 not even every integer is
#   representable. So fractional ids must never be cast to the model's bf16 dtype. In **fp32** ($m = 24$), the
#   smallest stride $1/256$ survives only below $2^{16} = 65{,}536$, which long-context runs can reach. Checked below
#   against `torch`.
# - **Limitation: native pre-training is explained, not reproduced.** No toy of it runs here (see the paragraph
#   above and [V9](V9_deepseek_vl.ipynb)), and the paper's per-benchmark numbers are not verified.

# %%
for dtype, m in ((torch.bfloat16, 8), (torch.float32, 24)):
    for step in (1 / 16, 1 / 256):
        first_lost = 2.0 ** (m + math.log2(step))  # p + step is a tie there and rounds back to the even p
        p = torch.tensor([first_lost / 2, first_lost], dtype=dtype)
        kept = ((p + step) != p).tolist()
        print(f"{str(dtype):15s} step 1/{round(1 / step):<3d}: p + step != p at p = {first_lost / 2:g}: {kept[0]}, "
              f"at p = {first_lost:g}: {kept[1]}")
        assert kept == [True, False]
x_ps = torch.randn(2, 8, 8, 3)  # "pixel shuffle" here is space-to-depth, torch's pixel_UNshuffle, up to channel order
un = F.pixel_unshuffle(x_ps.permute(0, 3, 1, 2), 2)  # (2, 3 * 4, 4, 4): channel c * 4 + (2a + b)
ours_ps = pixel_shuffle(x_ps, 0.5)  # (2, 4, 4, 4 * 3): channel (2a + b) * 3 + c
reorder = un.reshape(2, 3, 4, 4, 4).permute(0, 3, 4, 2, 1).reshape(2, 4, 4, 12)
print("pixel shuffle (8, 8, 3) ->", tuple(ours_ps.shape[1:]), "= F.pixel_unshuffle up to channel order:",
      torch.equal(ours_ps, reorder))
assert torch.equal(ours_ps, reorder)

# %% [markdown]
# ## Misconceptions
#
# - **Claim (seed table):** InternVL3's native pre-training uses "a 12-layer Transformer text encoder and a ViT-H
#   image encoder (14x14 patch)", with "InfoNCE image-text matching, captioning and an MSE loss for generating image
#   features", on "1B+ image-text pairs". **Correction:** InternVL3 is a decoder-only ViT-MLP-LLM: an InternViT
#   encoder, a 2-layer MLP and a full pre-trained LLM (abstract; `InternVLForConditionalGeneration` above). Native
#   pre-training is next-token prediction of the LLM on text and multimodal sequences in one stage (abstract: "jointly
#   acquires multimodal and linguistic capabilities ... during a single pre-training stage"); there is no separate
#   text encoder, no contrastive loss and no image-feature regression. The data count is not verified here.
# - **Claim (seed):** "V2PE dynamically adjusts the position-vector dimension (512-2048) to image resolution
#   (256x256 to 2048x2048)." **Correction:** V2PE changes no dimension; it changes the *position index increment* of
#   visual tokens to $\delta < 1$ (derivation 3, official `get_rope_pos_id`); the RoPE dimension is the LLM's.
# - **Claim (seed):** "native pre-training lowers the alignment error by 40%" and "MMMU 72.2 beats Gemini Pro
#   (70.5)"; "MPO uses 50k+ human preference pairs, 2 iterations". **Correction:** the abstract reports 72.2 MMMU for
#   InternVL3-78B as an open-source state of the art, "highly competitive" with ChatGPT-4o, Claude 3.5 Sonnet and
#   Gemini 2.5 Pro; "40%", "70.5", "50k+" and "2 iterations" appear in neither abstract nor code (not found). The MPO
#   data of InternVL are the MMPR sets, built automatically, not human pairwise ratings (MPO paper, 2411.10442
#   abstract; see V11).
# - **Claim (seed, stated outright in its InternVL3.5 row, L29, not its V10 row):** "Intern-VL3仅支持单图输入"
#   ("InternVL3 only supports single-image input"). **Correction:** InternVL's chat
#   template and processor take several images and video frames per sequence, and V2PE exists to make such long
#   multimodal contexts fit.
# - **Claim:** "one tile = 1024 tokens" or "256 = 16x16 patches of a 224 image". **Correction:** 448/14 = 32, so 1024
#   patches, and pixel shuffle 1/2 makes 256 tokens per 448 tile (derivation 2); an image costs 256 per tile plus
#   one thumbnail when it has more than one tile.
# - **Claim:** "V2PE is position interpolation." **Correction:** position interpolation rescales *every* position,
#   text included, by (training length)/(test length); V2PE keeps unit steps for text and compresses only the visual
#   tokens (derivation 3). The V2PE repository's long-context evaluation compares the two.
# - **Claim (seed):** "SFT用10万+多模态指令" (SFT uses 100k+ multimodal instructions). **Correction:** no such count
#   is in the abstract or the official code; the paper's own SFT data count is not verified here, so the point is
#   only that nothing supports "100k+".
# - **Claim (seed):** "V2PE使不同分辨率图像的理解准确率差异<3%" (V2PE keeps accuracy across resolutions within 3%).
#   **Correction:** V2PE is about *context length* (its title: "Multimodal Long-Context Capability"): it shrinks the
#   position increment of visual tokens (derivation 3), and has nothing to do with resolution. Resolution is handled
#   by tiling (derivation 1). "<3%" is not found in the abstracts or the code.
# - **Claim (seed):** InternVL3 "开源…10亿+图文数据集" (open-sourced a 1B+ image-text data set). **Correction:** not
#   found in the abstract or the InternVL README at `2410d1d`. The data set the official MPO script names is MMPR-v1.2,
#   a preference set. Which pre-training data were released is not verified here.
# - **Claim:** "pixel shuffle upsamples." **Correction:** here it goes the other way, space to depth. (B, 32, 32, C)
#   becomes (B, 16, 16, 4C): the grid shrinks 2x per side and the channels grow 4x. That is `torch`'s
#   `pixel_unshuffle` (checked above, up to channel order), the inverse of the super-resolution `PixelShuffle`.
#   The InternVL model cards call it pixel unshuffle.
# - **Claim:** "InternVL pads the image to the grid." **Correction:** it resizes to the grid's canvas, stretching by
#   at most the ratio gap (derivation 1); padding is DeepSeek-VL2's/LLaVA's AnyRes choice ([V9](V9_deepseek_vl.ipynb)).

# %% [markdown]
# ## Exercises
#
# 1. How many image tokens does a 1920x1080 screenshot cost InternVL3 with the defaults (1-12 tiles, thumbnail)?
#    Compute with derivation 1, then check below.
# 2. A 10-image interleaved document, 6 tiles + thumbnail each: how many positions does it span with standard ids,
#    and with $\delta = 1/16$ (ignore the text and the ceil)? Checked below.
# 3. In the toy, train the standard-ids arm at $n = 16$ directly (set `N_TRAIN = 16`, same steps) and test at
#    $n = 16$: does the gap to $\delta = 1/16$ close? What does that say about V2PE versus simply training long?
#    (A prediction, not run here: at the length it was trained on, standard ids should not suffer the
#    unseen-distance failure, so most of the gap should close.) Then compare with the test-time controls of the
#    Reproduction, which need no training at all.
# 4. Make the visual tokens matter: let the query ask for the first visual token of the block after a key, instead
#    of the value. Do position interpolation and the visual-only control still beat the $\delta$-trained arms?
#    (Not run here; this is the toy that could separate V2PE training from test-time rescaling.)

# %%
answer_1 = None  # your token count for 1920x1080
c, r = closest_ratio_grid(1080, 1920)
expected_1 = 256 * (c * r + (c * r > 1))
assert expected_1 == 256 * (math.prod(get_optimal_tiled_canvas((1080, 1920), (448, 448), 1, 12)) + 1)
if answer_1 is not None:
    print("correct" if answer_1 == expected_1 else f"not quite: {expected_1}")
answer_2 = None  # (standard, delta 1/16)
expected_2 = (10 * 7 * 256, 10 * 7 * 256 / 16)
assert abs(v2pe_position_ids(torch.ones(7 * 256, dtype=torch.bool), 1 / 16)[-1].item() + 1 - expected_2[1] / 10) < 1e-9
if answer_2 is not None:
    print("correct" if tuple(answer_2) == expected_2 else f"not quite: {expected_2}")
print("candidate grids with at most 12 tiles:", len(tile_grids(1, 12)))

# %% [markdown]
# Starters for Exercises 3 and 4 (off by default: each is a new training run of about the Reproduction's cost).

# %%
RUN_EXERCISE_3 = False  # Exercise 3: the standard-id arm trained at n = 16 directly
if RUN_EXERCISE_3:
    N_TRAIN = 16  # train_stacked reads this global
    P_ex3 = train_stacked({"standard ids (delta 1)": ARMS["standard ids (delta 1)"]}, SEEDS)
    seq, is_vis, y = tests[16]
    with torch.no_grad():
        pred = stacked_forward(P_ex3, seq.expand(SEEDS, -1, -1), pos_ids(is_vis, 1.0).expand(SEEDS, -1)).argmax(-1)
    print("trained at n = 16, tested at n = 16:", (pred == y).double().mean(1))
    N_TRAIN = 4


def toy_batch_visual(n: int, n_vis: int, g: torch.Generator):
    """Exercise 4: as toy_batch, but the target is the first visual token of the queried key's block."""
    seq, is_vis, _ = toy_batch(n, n_vis, g)
    blocks = seq[:, :-1].reshape(n, P_PAIRS, 2 + n_vis)
    qi = (blocks[:, :, 0] == seq[:, -1:]).float().argmax(1)  # which pair the query key names
    return seq, is_vis, blocks[torch.arange(n), qi, 2]


seq_e4, _, y_e4 = toy_batch_visual(4, 5, torch.Generator().manual_seed(0))
assert ((y_e4 >= NK + NV) & (y_e4 < V_TOY)).all()  # targets are visual tokens; the head already covers them
print("Exercise 4 starter: targets", y_e4.tolist(), "| to train, set toy_batch = toy_batch_visual and rerun")

# %% [markdown]
# ## References
#
# - J. Zhu et al., *InternVL3: Exploring Advanced Training and Test-Time Recipes for Open-Source Multimodal Models*,
#   [arXiv:2504.10479v1](https://arxiv.org/abs/2504.10479v1) (abstract read; full text not available offline);
#   ablation text from the official model cards (`OpenGVLab/InternVL3-*`, "Ablation Study").
# - J. Ge et al., *V2PE*, [arXiv:2412.09616v1](https://arxiv.org/abs/2412.09616v1) (abstract level; not verified in detail).
# - Official code: [OpenGVLab/InternVL](https://github.com/OpenGVLab/InternVL) `internvl_chat/internvl/train/dataset.py`
#   (`find_closest_aspect_ratio`, `dynamic_preprocess`), `internvl/model/internvl_chat/modeling_internvl_chat.py`
#   (`pixel_shuffle`), `internvl_chat/shell/internvl3.0/mpo/internvl3_8b_mpo.sh` (MPO weights, MMPR-v1.2) and
#   `internvl_chat/internvl/train/trainer_dpo.py` (`MultimodalDPOTrainer`, `RunningMoments`), HEAD `2410d1d`.
# - [OpenGVLab/V2PE](https://github.com/OpenGVLab/V2PE) (HEAD `f96f189`): `get_rope_pos_id` (`v2pe_fix`, `v2pe_rnd`) in
#   `internvl/train/internvl_chat_finetune.py` (training) and `internvl/model/internvl_chat/modeling_internvl_chat.py`;
#   `scripts/evaluate_*.sh` (`STRIDE`).
# - W. Wang et al., *Enhancing the Reasoning Ability of Multimodal Large Language Models via Mixed Preference
#   Optimization* (MPO, InternVL2.5-MPO), [arXiv:2411.10442v1](https://arxiv.org/abs/2411.10442v1) (abstract level;
#   the loss and weights are checked in code, not in the paper's text).
# - Reference implementation: `transformers` 5.23.0, `transformers.models.internvl` (`InternVLForConditionalGeneration`,
#   `InternVLModel.pixel_shuffle`, `InternVLMultiModalProjector`) and `transformers.models.got_ocr2`
#   (`get_optimal_tiled_canvas`, `GotOcr2ImageProcessorPil.crop_to_patches`).
# - Course code: `shared.tiling` (`closest_ratio_grid`, `tile_grids`, `split_tiles`, `pixel_shuffle`),
#   `shared.preference_losses.mpo_loss`; MPO and Cascade RL in full: [V11](V11_internvl3_5.ipynb).
