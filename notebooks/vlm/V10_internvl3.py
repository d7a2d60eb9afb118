# ---
# jupyter:
#   course:
#     cpu_seconds: 38
#     id: V10
#     papers:
#     - arxiv: '2504.10479'
#       title: 'InternVL3: Exploring Advanced Training and Test-Time Recipes for Open-Source
#         Multimodal Models'
#       version: v1
#     - arxiv: '2412.09616'
#       title: 'V2PE: Improving Multimodal Long-Context Capability of Vision-Language
#         Models with Variable Visual Position Encoding'
#       version: v2
#     - arxiv: '2411.10442'
#       title: Enhancing the Reasoning Ability of Multimodal Large Language Models via
#         Mixed Preference Optimization
#       version: v1
#     part: vlm
#     peak_memory_mb: 1350
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
# Encoding*, [arXiv:2412.09616v2](https://arxiv.org/abs/2412.09616v2) · **Official code:**
# [OpenGVLab/InternVL](https://github.com/OpenGVLab/InternVL) (`internvl_chat/`) and
# [OpenGVLab/V2PE](https://github.com/OpenGVLab/V2PE)
#
# **Prerequisites:** [V6 · Qwen2-VL](V6_qwen2_vl.ipynb) (image tokens in an LLM, RoPE position ids);
# [V9 · DeepSeek-VL](V9_deepseek_vl.ipynb) (dynamic tiling, pixel-shuffle-style merges, keeping text in the mix).
# Next: [V11 · InternVL3.5](V11_internvl3_5.ipynb) (Cascade RL = MPO then GSPO). R9 · MPO is not yet written.
#
# **CPU run time:** 38 s on a 2-core CPU (measured by `make run`, which rewrites this number)
#
# **Peak memory:** 1350 MB (the kernel's peak resident memory, measured by `make run`)
#
# > **Sources, and what they do not cover.** Read: the InternVL3 abstract (2504.10479v1); the V2PE abstract of
# > **v2** (arxiv.org/html/2412.09616v2, the version cited here); the official InternVL3 model cards
# > (`OpenGVLab/InternVL3-*` on Hugging Face: introduction, architecture and ablation text); the official code and
# > READMEs at OpenGVLab/InternVL `2410d1d` and OpenGVLab/V2PE `f96f189` (cited below by file and line);
# > `transformers` 5.23.0 and `trl` 1.16.0. The papers' full text (sections, tables, figures) was not readable with
# > this course's offline tools, so **no section, table or figure number of either paper is given**, and these
# > points stay open: the paper's per-benchmark numbers for native pre-training (in a figure); its data mixture and
# > sizes (pre-training tokens, SFT and MPO sample counts: none is quoted here); which modules are unfrozen during
# > native pre-training (the abstract implies the LLM learns; the ViT's status is not in the texts read); which
# > $\delta$ InternVL3 pre-trained with, and the paper's own $\delta$ ablation; the test-time-scaling gains. Everything
# > else below is either quoted from those sources or computed in this notebook.

# %% [markdown]
# ## TL;DR
#
# - **Native multimodal pre-training:** InternVL3 continues pre-training a *base* LLM (Qwen2.5; the 9B from
#   `internlm3-8b-instruct`), InternViT and a fresh MLP on text and multimodal data in **one stage**, where InternVL2.5
#   first warmed up the adapter on a frozen chat LLM. Not from scratch. Explained here (a cited recipe table), not run.
# - **V2PE:** text advances the RoPE position by 1, visual tokens by $\delta$ = `rope_pos_id_stride / 256`. Attention
#   depends only on $p_j - p_i$, so long image-heavy contexts stay inside the distances the LLM was trained on. Checked
#   against the official code and through a tiny `InternVLForConditionalGeneration` (**trap:** without an
#   `attention_mask`, `transformers` 5.23 reads fractional ids as packed sequences and silently changes the logits).
# - **Tiles, tokens, MPO:** closest-ratio grid of 448 tiles (+ a thumbnail), **256 tokens per tile** after pixel
#   shuffle, one tile per video frame, all equal to `transformers`; MPO = 0.8 DPO + 0.2 BCO-pair + 1 SFT, checked
#   against `trl` 1.16.
# - **Toy A, recall across filler "images" (8 seeds, matched budget):** at 8x the training length standard ids keep
#   0.19 of their accuracy, $\delta = 1/16$ keeps 0.89 (but learns more slowly: 0.66 vs 0.90 at the training length);
#   rescaling the standard-id models at test time, with no training, does better still (0.76-0.87).
# - **Toy B, the answer is a visual token:** test-time rescaling collapses (0.09 and 0.17 at 8x, chance 0.06) and the
#   $\delta = 1/16$-trained arm leads (0.37, ahead of both on 7-8 of 8 seeds).

# %% [markdown]
# ## 中文速览
#
# - **原生多模态预训练：**InternVL3 从 *base* LLM（Qwen2.5；9B 例外，用 internlm3-8b-instruct）、InternViT 和新初始化的 MLP 出发，在**一个阶段**里同时用纯文本和多模态数据继续预训练；InternVL2.5 则先在冻结的 chat LLM 上预热适配器。不是从零训练。本篇用有出处的流程对照表讲解，不做复现。
# - **V2PE：**文本 token 的 RoPE 位置加 1，视觉 token 只加 $\delta$ = `rope_pos_id_stride / 256`。注意力只依赖 $p_j - p_i$，所以图像很多的长上下文仍落在 LLM 训练时见过的距离内。与官方代码对照，并通过小型 `InternVLForConditionalGeneration` 检验（**陷阱：**不传 `attention_mask` 时，`transformers` 5.23 把分数位置编号当作拼接序列，输出被悄悄改变）。
# - **切片、token、MPO：**按最接近宽高比的网格切成 448 切片（另加缩略图），pixel shuffle 后**每片 256 个 token**，视频每帧一片，均与 `transformers` 一致；MPO = 0.8 DPO + 0.2 BCO-pair + 1 SFT，与 `trl` 1.16 核对。
# - **小实验 A，跨"填充图像"的键值检索（8 个种子，预算相同）：**在 8 倍训练长度上，标准编号只保留 0.19 的准确率，$\delta = 1/16$ 保留 0.89（但学得更慢：训练长度上 0.66 对 0.90）；对标准编号模型做免训练的测试时缩放更好（0.76-0.87）。
# - **小实验 B，答案是一个视觉 token：**测试时缩放失效（8 倍长度上 0.09 与 0.17，随机猜 0.06），用 $\delta = 1/16$ 训练的组领先（0.37，在 8 个种子中的 7-8 个上胜过两者）。

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
import types

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
# V2PE's problem, in its abstract's words (2412.09616v2): "directly applying the positional encoding mechanism used
# for textual tokens to visual tokens is suboptimal, and VLM performance degrades sharply when the position encoding
# exceeds the model's context window".
#
# **Adapter-first (InternVL2.5) vs native (InternVL3): the recipes side by side.** Both start from pre-trained parts;
# what differs is which LLM checkpoint they start from and how many stages it takes to make it multimodal. Sources:
# `internvl_chat/README.md` ("Single Model Training Pipeline" of InternVL2.5) and the top-level `README.md` (model
# table) at OpenGVLab/InternVL `2410d1d`; the InternVL3 abstract and model cards; the InternVL3 MPO script.
#
# | | **InternVL2.5: adapter-first** | **InternVL3: native** |
# |---|---|---|
# | LLM it starts from | an **instruct / chat** model: Qwen2.5-0.5B-Instruct, internlm2_5-7b-chat, ..., Qwen2.5-72B-Instruct (`internvl_chat/README.md` L35-L41) | the **base** model: Qwen2.5-0.5B, -1.5B, -7B, -14B, -32B, -72B (`README.md` L144-L186); one exception, InternVL3-9B starts from `internlm3-8b-instruct` (L165) |
# | ViT and MLP it starts from | InternViT-300M / 6B-448px-V2_5 and "a randomly initialized MLP projector" (L35-L41, L45) | the same InternViT-300M/6B-448px-V2_5 (`README.md` L143-L185); model card: "a newly incrementally pre-trained InternViT ... using a randomly initialized MLP projector" |
# | stage 1 | **MLP warm-up**: "only the MLP projector is trained while the vision encoder and language model are frozen" (L71) | **native multimodal pre-training**, the only pre-training stage: "diverse multimodal data and pure-text corpora" together (abstract) |
# | stage 1.5 | optional **ViT incremental learning**, ViT + MLP on stage-1 data (L73) | none |
# | stage 2 | **full-model instruction tuning** (L75) | **SFT** (the `-Pretrained` cards: "has undergone native multimodal pre-trainin [sic] but has not undergone post-training (i.e., SFT and MPO)") |
# | preference stage | none in this pipeline; MPO (2411.10442) was introduced with InternVL2-8B-MPO (`README.md` L50, 2024/11/14) and then applied to the separate InternVL2.5-MPO models (L47, 2024/12/20) | **MPO** on MMPR-v1.2 (`shell/internvl3.0/mpo/internvl3_8b_mpo.sh` L40) |
# | test time | chain-of-thought reasoning (the InternVL2.5 report, 2412.05271, has "Test-Time Scaling" in its title; its abstract credits CoT with +3.7 on MMMU); VisualPRM's Best-of-8 was first shown on InternVL2.5-8B / -78B (`README.md` L46, `README_zh.md` L45) | **Best-of-N with the VisualPRM reward model** (`README.md` L45: "Multimodal Test-Time Scaling", 2503.10291) |
#
# So "native" does **not** mean training the LLM from scratch. The model cards say so outright: "we compare InternVL3
# with Qwen2.5 Chat models, whose corresponding pre-trained base models are employed as the initialization of the
# langauge [sic] component in InternVL3. Benefitting from Native Multimodal Pre-Training, the InternVL3 series achieves
# even better overall text performance than the Qwen2.5 series." What changes is that the LLM learns language and
# vision *in the same stage*, starting from a base checkpoint that has had no chat post-training, instead of a
# finished chat model being adapted to images afterwards.
#
# **The paper's own ablation of native pre-training** (the model cards' "Ablation Study"): "We conduct experiments on
# the InternVL2-8B model while keeping its architecture, initialization parameters, and training data entirely
# unchanged. Traditionally, InternVL2-8B employs a training pipeline that begins with an MLP warmup phase for feature
# alignment followed by an Instruction Tuning stage. In our experiments, we substitute the conventional MLP warmup
# phase with a native multimodal pre-training process." Result: "performance on most benchmarks that is comparable to
# the fully multi-stage-trained InternVL2-8B baseline", and "when followed by instruction tuning on higher-quality
# data, the model demonstrates further performance gains". The per-benchmark numbers are in a figure, so the claim
# taken here is "comparable, then better", not a margin. **Native pre-training is explained, not reproduced:** this
# reading runs no toy of it (the Reproduction states the objective and points to V9's closest toy).
#
# **Architecture** (the InternVL "ViT-MLP-LLM" layout; the official code and `transformers`' `InternVL` classes): an
# InternViT encoder reads 448x448 tiles with 14x14 patches; pixel shuffle folds 2x2 patches into one token; a 2-layer
# MLP projects into the LLM. The family (`README.md` L141-L188 at `2410d1d`, vision part / language part):
#
# | model | vision | LLM it starts from |
# |---|---|---|
# | InternVL3-1B / 2B / 8B / 14B | InternViT-300M-448px-V2_5 | Qwen2.5-0.5B / 1.5B / 7B / 14B (base) |
# | InternVL3-9B | InternViT-300M-448px-V2_5 | internlm3-8b-instruct |
# | InternVL3-38B / 78B | InternViT-6B-448px-V2_5 | Qwen2.5-32B / 72B (base) |
#
# **Lineage.** Pixel shuffle is older than tiling: InternVL-Chat-V1-2 (released 2024/02/12, `README.md` L70) already
# used it (its model card: "in order to reduce the number of visual tokens, we use a pixel shuffle", 448 x 448 -> 256
# tokens; its script `shell/internvl1.2/2nd_finetune/internvl_chat_v1_2_hermes2_yi34b_448_res_2nd_finetune_lora.sh`
# passes `--down_sample_ratio 0.5`, L39, and `--ps_version 'v1'`, L66). Dynamic 448 tiling comes from InternVL 1.5
# ([arXiv:2404.16821](https://arxiv.org/abs/2404.16821), April 2024), which keeps the pixel shuffle. MPO comes from its
# own paper ([arXiv:2411.10442](https://arxiv.org/abs/2411.10442)), introduced with InternVL2-8B-MPO (`README.md` L50)
# and applied later to InternVL2.5-MPO (L47); V2PE from its own paper
# (2412.09616, on InternVL2-2B); test-time Best-of-N from VisualPRM ([arXiv:2503.10291](https://arxiv.org/abs/2503.10291)).
# [V11 · InternVL3.5](V11_internvl3_5.ipynb) keeps all of this and adds Cascade RL.

# %% [markdown]
# ## Derivations
#
# ### 1. The tile grid (InternVL's `dynamic_preprocess`)
#
# For an image of $W \times H$ pixels and the grids $\{(c, r): 1 \le cr \le n_{\max}\}$, take the grid whose ratio
# $c/r$ is closest to $W/H$:
# $$ (c^*, r^*) = \arg\min_{(c,r)} \left| \tfrac{W}{H} - \tfrac{c}{r} \right|, $$
# and on a tie (e.g. 1x1, 2x2, 3x3 for a square) move to the later, larger grid only if the image has the pixels to
# fill it: $WH > \tfrac12 \cdot 448^2 \cdot c\,r$. The image is then **resized** (not padded: the aspect ratio is
# distorted by at most the ratio gap) to $448c \times 448r$ and cut into $cr$ tiles, row by row. If $cr > 1$ a
# thumbnail (the whole image resized to 448x448) is appended, so the model sees a global view too.
#
# **Which $n_{\max}$.** The official function `dynamic_preprocess` defaults to `max_num=6`
# (`internvl_chat/internvl/train/dataset.py` L830). The InternVL3 fine-tuning scripts set 12
# (`--max_dynamic_patch 12` in every `internvl_chat/shell/internvl3.0/2nd_finetune/*.sh`, L39, L47 in the 38B and 78B
# ones; also the default of
# the fine-tuning dataclass, `internvl_chat_finetune.py` L211-212), and so does `transformers` (the class default
# `max_patches = 12` of `GotOcr2ImageProcessorPil`, which `InternVLProcessor` runs with `crop_to_patches=True`). This
# reading uses $n_{\max} = 12$ throughout.
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
# Token count per image is $256\,(cr + [cr > 1])$ (plus `<img>` / `</img>`): 12 tiles + thumbnail = 3,328 tokens at
# most with $n_{\max} = 12$. The grid depends on the aspect ratio only (the size breaks ties), so small images are
# **upscaled**: a 200x150 icon gets the same 4x3 grid + thumbnail, 3,328 tokens, as a 640x480 photo (the lever is `max_num`,
# `max_patches` in `transformers`; the official trainer can also switch `dynamic_image_size` off). A 4:3 phone photo gets the 4x3 grid. Now the three implementations on every size above and a
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
# `v2pe_fix` takes any integer stride (`rope_pos_id_stride: Optional[int]`, V2PE `internvl/train/internvl_chat_finetune.py`
# L316; `type=int` in the eval scripts), so $\delta = k/256$ is always an exact binary fraction and, in exact arithmetic,
# `arange` gives `linspace`'s ids (checked below in float64 from position 3). A $\delta$ such as 0.1, which the code
# cannot produce, makes `arange` return one element too many or too few. **So can the official code itself, at long
# context, for some strides:** `last_record_pos_id` is a long tensor (`modeling_internvl_chat.py` L663; the training
# copy, `internvl_chat_finetune.py` L577), so the end point `last + small_stride * (...)` is computed in float32. For a
# stride $2^j \cdot$ odd that end point is a multiple of $2^{j-8}$, exact in float32 only below $2^{16+j}$; past that it
# can round, and then `arange` returns one id too many or too few (checked below: 255 or 257 ids for 256 tokens at
# position 70,000 with strides 1 and 3; stride 2 past 131,072, stride 8 past 524,288; the V2PE README's `STRIDE=64`
# only past $2^{22} \approx 4.2$M, so 256 at 100,000). The shape assert then fires (`modeling_internvl_chat.py` L707;
# training L623): a loud failure, not a silent one. Version `v2pe_rnd` (training) draws the stride from $\{1, 2, 4, \dots, 256\}$,
# i.e. $\delta \in \{1/256, \dots, 1\}$, **once per image** (`random.choice` sits inside the loop over the images of
# a sample, so two images of one sample can get different $\delta$), so the model sees many $\delta$ and one can be
# picked at test time. The official evaluation scripts take **one** stride from the environment
# (`STRIDE=${STRIDE:-"-1"}` in `scripts/evaluate_*.sh`; the README's example is `STRIDE=64`); nothing in the
# repository sweeps strides, and `eval/mm_niah/eval_mm_niah_long.py` also compares with linear and NTK RoPE
# interpolation at stride 256.
#
# **Why it helps long context: RoPE sees only differences.** RoPE rotates a query at position $p_i$ and a key at
# $p_j$ by block-diagonal rotations $R_{p}$ with angles $p\,\theta_k$, and since $R_a^\top R_b = R_{b-a}$,
# $$ \langle R_{p_i} q_i,\; R_{p_j} k_j \rangle = q_i^\top R_{p_j - p_i}\, k_j : $$
# the attention logit depends on the positions only through $p_j - p_i$ (real-valued here, checked numerically below).
# What the LLM has to have seen in training is therefore the range of *distances*. From one text token to a later one, with
# $n_{\rm txt}$ text tokens after the first up to and including the last, and images of $n_{{\rm vis},k}$ visual tokens
# between them, the step rule gives
# $$ \Delta p_{\rm standard} = n_{\rm txt} + \textstyle\sum_k n_{{\rm vis},k}, \qquad
#    \Delta p_{\rm V2PE} = n_{\rm txt} + \textstyle\sum_k \lceil \delta\, n_{{\rm vis},k} \rceil $$
# (each image block ends on a ceil). With $N$ images of $T$ tiles, the visual part drops from $256NT$ to about
# $256NT\delta$: an image of 12 tiles + thumbnail alone spans 3,328 standard positions, 208 at $\delta = 1/16$. A long interleaved
# document thus stays inside the distances the LLM was trained on, while text keeps unit steps (and so the LLM's text
# behaviour). The price: neighbouring visual tokens are a factor $\delta$ less separated by position than text tokens
# (RoPE's fastest pair still turns $k\delta$ rad over $k$ visual tokens, its slow pairs almost nothing), so the spatial order inside a tile must come from the ViT features. The closed form
# above is checked below against the step rule, and the toy's "last position id" row in the Reproduction is exactly
# $\Delta p$ from the first key to the query.

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
for stride in (256, 64, 16, 3, 1):  # powers of two and an odd stride
    ours = v2pe_position_ids(layout, stride / 256)
    ref = official_v2pe_fix(3, n_img, 3, stride)
    err = assert_close(ours, ref, atol=1e-9, name=f"v2pe stride {stride}")
    lin = torch.linspace(3, 3 + stride / 256 * n_img, n_img + 1, dtype=torch.float64)[1:]
    assert torch.equal(ref[4:4 + n_img], lin)  # arange with a k/256 step = linspace, bit for bit (float64)
    print(f"stride {stride:3d} (delta {stride / 256:.4f}): last text id {ours[-1].item():6.1f}, "
          f"image spans {ours[4 + n_img - 1] - ours[3]:.2f} positions | vs official {error_bound(err)}")
print("standard ids are stride 256 (delta 1): last id", len(layout) - 1, "| arange == linspace for these strides")
bad = torch.arange(0.0, 0.1 * (100 + 1), 0.1, dtype=torch.float64)  # delta 0.1 is no binary fraction
print(f"arange with step 0.1 for 100 tokens: {len(bad) - 1} ids after [1:] (expected 100: one too many)")
assert len(bad) - 1 == 101
# the official expression, with a long start as in modeling_internvl_chat.py L663/L668 -> expected id count
for (start, stride), expected in {(40_000, 3): 256, (70_000, 3): 257, (70_000, 1): 255, (140_000, 2): 255,
                                  (600_000, 8): 255, (100_000, 64): 256}.items():
    last = torch.tensor(start)
    got = len(torch.arange(last, last + stride / 256 * (256 + 1), stride / 256)[1:])
    print(f"official arange from position {start:,}, stride {stride}: {got} ids for 256 tokens")
    assert got == expected
small_layout = torch.tensor([False] * 2 + [True] * 8 + [False] * 2)  # text, text, 8 visual, text, text
print("walkthrough, 2 text + 8 visual + 2 text at delta 1/4:", v2pe_position_ids(small_layout, 0.25).tolist())
# RoPE sees only p_j - p_i: the library's rotation (Qwen2 apply_rotary_pos_emb) at (p_i, p_j) and shifted by 100.37
rot = transformers.models.qwen2.modeling_qwen2.apply_rotary_pos_emb
inv = 1.0 / (10000.0 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16))
qk = torch.randn(2, 1, 1, 1, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def rope_logit(p_i: float, p_j: float) -> float:
    ang = torch.tensor([p_i, p_j], dtype=torch.float64)[:, None] * inv
    cos, sin = torch.cat([ang, ang], -1).cos()[None], torch.cat([ang, ang], -1).sin()[None]  # (1, 2, 16)
    q_rot, k_rot = rot(qk[0].expand(1, 1, 2, 16), qk[1].expand(1, 1, 2, 16), cos, sin)
    return (q_rot[0, 0, 0] @ k_rot[0, 0, 1]).item()  # query at p_i, key at p_j


shift_err = max(abs(rope_logit(a, b) - rope_logit(a + 100.37, b + 100.37)) for a, b in ((0, 9.25), (3.0625, 40), (7, 7.5)))
assert shift_err < 1e-10  # float64 rounding only
print("RoPE logit at (p_i, p_j) vs (p_i + 100.37, p_j + 100.37), 3 fractional pairs: equal to < 1e-10 in float64 "
      "(the logit depends on p_j - p_i only)")
# the closed form: first -> last text token spans n_txt + sum_k ceil(delta * n_vis_k), text runs and images alternating
g_cf = torch.Generator().manual_seed(4)
for delta in (1.0, 0.25, 0.0625, 1 / 256):
    for _ in range(20):
        runs = torch.randint(1, 6, (4,), generator=g_cf).tolist()  # 4 text runs around 3 images
        n_vis = torch.randint(1, 600, (3,), generator=g_cf).tolist()
        lay = [False] * runs[0]
        for n_v, t in zip(n_vis, runs[1:], strict=True):
            lay += [True] * n_v + [False] * t
        span = v2pe_position_ids(torch.tensor(lay), delta)
        closed = (sum(runs) - 1) + sum(math.ceil(delta * n_v) for n_v in n_vis)
        assert span[-1].item() - span[0].item() == closed, (delta, runs, n_vis)
print("closed form n_txt + sum ceil(delta n_vis) = step rule, 80 random layouts (4 deltas, 3 images each): equal")

# %% [markdown]
# **The multi-image path, against the official loop.** The check above is one image. InternVL's use case is many
# images per row, with different tile counts, and a batch is left-padded. Below, `official_get_rope_pos_id` is the
# `v2pe_fix` branch of `get_rope_pos_id` transcribed from OpenGVLab/V2PE `f96f189`,
# `internvl/model/internvl_chat/modeling_internvl_chat.py` L637-709: the text run before each `<img>` is
# `attention_mask.cumsum - 1` with pads `masked_fill_`ed to 1 (L659-660), each image is the `arange` of L668 (with
# `small_stride` from L667 and `num_tiles` as a per-image list), text resumes after `ceil` (L670), and the tail is the
# same cumsum (L696-697).
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
# ### 4. Video frames and the multi-image tile budget
#
# **Video.** The official trainer (`video_get_item`, `internvl_chat/internvl/train/internvl_chat_finetune.py`
# L525-555 at `2410d1d`) samples frames, writes one `Frame-{i}: <image>` line per frame (L548), and transforms
# each frame to **one** 448 tile: no grid, so no thumbnail either (the README, `internvl_chat/README.md` L63: "each
# frame is resized to 448×448"). Each `<image>` then becomes `<img>` + 256 `<IMG_CONTEXT>` + `</img>`, as for an image
# tile. The official inference example reaches the same count through `dynamic_preprocess(..., max_num=1)` (one
# tile; the thumbnail is added only for more than one) and labels frames `Frame{i+1}: ` without the dash
# (`internvl_chat/README.md` L439-460); `transformers`' `InternVLProcessor.replace_video_token`
# (`processing_internvl.py` L145-150 in 5.23.0) writes `Frame{i}: <img>` + 256 image tokens + `</img>` per frame,
# joined by newlines. **The three agree on tiles and tokens; only the label differs** (`Frame-1` in the official
# training code, also in the top-level `README.md` L1145; `Frame-1` also in `internvl_chat/README.md` L63; `Frame1` in that README's inference example, L460, and in `transformers`),
# which changes a text token, not the image-token count or the positions of a frame's tokens relative to each other.
# (`transformers`' `InternVLVideoProcessor` needs `torchvision`, which this course does not install, so only its
# token layout is checked; its class default size is 384x384, so the 448 must come from a checkpoint's config.)
#
# Below: our frame prompt from the official rule against `replace_video_token` (called on a stub holding the
# processor's four token attributes, so no tokenizer is loaded), the one-tile-per-frame rule, and where 8 frames land
# under standard and V2PE ids (each frame label stands in as 3 text tokens, then `<img>`; after the frame,
# `</img>` and the newline).
#
# **Multi-image.** In training, the $n_{\max}$ tiles are **shared** by the images of a sample: each image gets
# `max_num=max(1, max_dynamic_patch // num_image)` (`internvl_chat_finetune.py` L488; README L61: "the total number
# of tiles `n_max` are distributed across all images in a sample"). The official inference examples instead load
# every image with `max_num=12` (`internvl_chat/README.md` L378-379), and `transformers` applies `max_patches` per
# image. So the sharing fires only in training with the official trainer: an image in a 3-image training sample
# costs far fewer tokens than the same image at inference (printed below).

# %%
from transformers.models.internvl.processing_internvl import InternVLProcessor  # noqa: E402

N_FRAMES = 8


def official_video_prompt(n_frames: int, dash: bool = True) -> str:
    """The official trainer's video prompt (L548, 'Frame-{i}: <image>' joined by newlines), <image> expanded."""
    one = "<img>" + "<IMG_CONTEXT>" * 256 + "</img>"  # one 448 tile per frame: 256 tokens, no thumbnail
    return "\n".join(f"Frame{'-' if dash else ''}{i + 1}: {one}" for i in range(n_frames))


stub = types.SimpleNamespace(start_image_token="<img>", end_image_token="</img>", image_token="<IMG_CONTEXT>",
                             image_seq_length=256)
lib_prompt = InternVLProcessor.replace_video_token(stub, {"pixel_values_videos": [torch.zeros(N_FRAMES, 3, 448, 448)]}, 0)
ours_prompt = official_video_prompt(N_FRAMES)
print(f"{N_FRAMES} frames: <IMG_CONTEXT> tokens, ours {ours_prompt.count('<IMG_CONTEXT>')} vs transformers "
      f"{lib_prompt.count('<IMG_CONTEXT>')} (= 256 x {N_FRAMES}); prompts equal once the label dash is dropped: "
      f"{official_video_prompt(N_FRAMES, dash=False) == lib_prompt}; with it: {ours_prompt == lib_prompt}")
assert lib_prompt == official_video_prompt(N_FRAMES, dash=False) and lib_prompt.count("<IMG_CONTEXT>") == 256 * N_FRAMES
frame_grids = {(h, w): closest_ratio_grid(h, w, max_tiles=1) for h, w in ((1080, 1920), (720, 1280), (1920, 1080))}
assert all(g == (1, 1) for g in frame_grids.values())  # max_num = 1: one tile, and c * r = 1 means no thumbnail
frame = [False] * 4 + [True] * 256 + [False] * 2  # "Frame{i}:" as 3 tokens + <img>, 256 visual, </img> + newline
video = torch.tensor(frame * N_FRAMES + [False] * 5)  # then 5 text tokens of question
for name, delta in (("standard", 1.0), ("V2PE 1/16", 1 / 16)):
    ids = v2pe_position_ids(video, delta)
    starts = [ids[k * len(frame) + 4].item() for k in range(N_FRAMES)]  # first visual token of each frame
    print(f"{name:10s}: frames start at ids {[round(v, 2) for v in starts]}; last id {ids[-1].item():.0f}")
print(f"{'':12s}{'images':>6s}  max_num  tiles+thumb per 1080p image  tokens per image  (training | inference, 12 each)")
for n_img in (1, 2, 3, 6, 13):
    m = max(1, 12 // n_img)  # the official trainer's per-image budget
    c_t, r_t = closest_ratio_grid(1080, 1920, max_tiles=m)
    c_i, r_i = get_optimal_tiled_canvas((1080, 1920), (448, 448), 1, 12)
    t_train, t_inf = c_t * r_t + (c_t * r_t > 1), c_i * r_i + (c_i * r_i > 1)
    print(f"{'':12s}{n_img:>6d}  {m:>7d}  {t_train:>5d} | {t_inf:<5d}{'':16s}{256 * t_train:>5d} | {256 * t_inf}")

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
# | V2PE ids, 2-3 images, left pads | `v2pe_position_ids` | official `get_rope_pos_id` loop (transcribed) | < 1e-6 |
# | distance $\Delta p$ across images | closed form $n_{\rm txt} + \sum_k \lceil \delta n_{{\rm vis},k} \rceil$ | step rule, 80 random layouts | equal |
# | RoPE depends on $p_j - p_i$ only | logit at $(p_i, p_j)$ | at $(p_i + c, p_j + c)$, `transformers`' `apply_rotary_pos_emb` | < 1e-10 |
# | video frame layout | official trainer's `Frame-{i}: <image>` rule, 1 tile per frame | `InternVLProcessor.replace_video_token` | equal (label dash aside) |
# | `ps_version` | official `pixel_shuffle` v1 / v2 (transcribed) | `InternVLModel.pixel_shuffle` | v2 equal; v1 = transposed |
# | end-to-end logits, batch 2 | `our_forward` | `InternVLForConditionalGeneration.forward` | < 1e-5 |
# | end-to-end logits, V2PE ids, batch 2 | `our_forward(position_ids=v2pe)` | same, `position_ids=v2pe` (with mask) | < 1e-5 |
# | MPO loss, 3 terms and the sum | written out from equation (M) | `trl` 1.16 `DPOTrainer._compute_loss` | < 1e-12 |
# | toy training, 32 models at once (Reproduction) | `stacked_forward`, `train_stacked` | `ToyLM.forward`, `train_arm` one model at a time | printed there |
#
# ### MPO, InternVL3's preference stage
#
# After SFT, InternVL3 is post-trained with MPO (arXiv 2411.10442; introduced with InternVL2-8B-MPO, then used for InternVL2.5-MPO) on MMPR-v1.2
# (`--meta_path "MMPR-v1.2/meta.json"` in the official `internvl_chat/shell/internvl3.0/mpo/internvl3_8b_mpo.sh`).
# With the implicit reward $r(y) = \beta \log \frac{\pi_\theta(y|x)}{\pi_{\rm ref}(y|x)}$ of a chosen $y_c$ and a
# rejected $y_r$,
# $$ \mathcal L_{\rm MPO} = w_p\,\underbrace{-\log\sigma\big(r(y_c) - r(y_r)\big)}_{\rm DPO\ (sigmoid)}
#  + w_q\,\underbrace{\Big[-\log\sigma\big(r(y_c) - \delta_{\rm BCO}\big) - \log\sigma\big(-(r(y_r) - \delta_{\rm BCO})\big)\Big]}_{\rm BCO\ pair}
#  + w_g\,\underbrace{\Big(-\tfrac{1}{|y_c|}\textstyle\sum_t \log \pi_\theta(y_{c,t} \mid x, y_{c,<t})\Big)}_{\rm SFT}
#  \tag{M} $$
# averaged over the batch (SFT: over all chosen tokens of the batch, as `trl`). Why each term: DPO learns the
# **relative** preference (only $r_c - r_r$ matters, so both can drift down together); BCO classifies each response
# **absolutely** (chosen reward above the shift $\delta_{\rm BCO}$, rejected below), which stops that joint drift; SFT keeps the
# chosen text likely (the generation quality term). Weights in the InternVL3 script:
# `--loss_type sigmoid,bco_pair --sigmoid_loss_weight 0.8 --bco_pair_loss_weight 0.2 --rpo_alpha 1`, i.e.
# $(w_p, w_q, w_g) = (0.8, 0.2, 1)$ (verified in code at InternVL HEAD `2410d1d`; `rpo_alpha` adds the SFT term).
#
# **The BCO shift $\delta_{\rm BCO}$** (no relation to V2PE's $\delta$)**.** InternVL's `MultimodalDPOTrainer` (`internvl_chat/internvl/train/trainer_dpo.py`,
# `__init__`) creates a `RunningMoments` whenever `bco_pair` is mixed with other losses, so the **official** BCO term
# uses $\delta_{\rm BCO}$ = a running mean of the rewards (`trl` <= 0.28 behaviour). **This reading sets $\delta_{\rm BCO} = 0$**, as
# `trl` 1.16 does; the running-mean version and its check are in [V11](V11_internvl3_5.ipynb), which also treats
# MPO at length (a toy, and the check with a real `DPOTrainer` on a tiny LM). Here: (M) written from scratch, on
# fixed per-token log-probs, against `trl` 1.16's own `DPOTrainer._compute_loss` (called on a stub trainer whose
# "model" returns those log-probs, so no LM is needed) and against `shared.preference_losses.mpo_loss`.
#
# **What a healthy run prints:** at $\pi_\theta = \pi_{\rm ref}$ every reward is 0, so DPO $= \ln 2 = 0.693$ and
# BCO $= 2 \ln 2 = 1.386$; every difference at float64 rounding.

# %%
import collections  # noqa: E402

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
# **Version notes.** (i) **`ps_version`.** InternVL's own `InternVLChatModel.pixel_shuffle`
# (`internvl_chat/internvl/model/internvl_chat/modeling_internvl_chat.py` L257-271 at `2410d1d`) applies the same
# view/permute/view as `transformers`, then a final `permute(0, 2, 1, 3)` **only when `ps_version != 'v1'`**; with
# `'v1'` it skips it and warns that "the height and width have not been swapped back, which results in a transposed
# image" (L266-270). `'v1'` is what the InternVL 1.2 scripts pass (`--ps_version 'v1'`, e.g.
# `shell/internvl1.2/2nd_finetune/internvl_chat_v1_2_hermes2_yi34b_448_res_2nd_finetune_lora.sh` L66) and what
# `InternVLChatConfig` falls back to when a config has no `ps_version` (`configuration_internvl_chat.py` L37); the
# InternVL3 scripts pass `'v2'` (`shell/internvl3.0/2nd_finetune/*.sh` L66, L74 in the 38B and 78B ones;
# `mpo/internvl3_8b_mpo.sh` L71), and
# `transformers` implements v2 only (`modeling_internvl.py` L699-700). So v2 is right for InternVL3; the difference
# fires when a v1 checkpoint (InternVL 1.2) or a config without the key is run with v2 code, or the reverse. On a
# square grid the shapes agree, so nothing fails loudly: the tokens come out spatially transposed (checked below).
# Both name their axes (N, W, H) but apply the reshapes to the row-major (h, w) ViT grid, so the channel order is the
# brute force's above. (ii)
# `transformers` 5.23.0's `InternVL` has no V2PE: by default it uses integer ids, so the released InternVL3 `-hf`
# checkpoints run there with standard ids.
# Fractional `position_ids` can be passed and are used (check (a)-(b) above), **but only with an `attention_mask`**:
# without one and without a cache, `masking_utils` treats every id step other than 1 as the start of a new packed
# sequence, so V2PE ids silently cut attention into one "sequence" per visual token (check (c) above). (iii) The
# official `dynamic_preprocess` sorts a `set` of grids; `get_optimal_tiled_canvas` a list: the order differs only
# inside one tile count, and the 4,021 sizes above all agree (a random sweep cannot prove "never"; equal-count grids
# have different ratios, so a tie between them needs the image ratio exactly midway). (iv) This reading imports
# `get_optimal_tiled_canvas` from `image_processing_pil_got_ocr2` (the PIL backend, no `torchvision` needed); in 5.23.0
# its body is line-for-line the one of `image_processing_got_ocr2` ("Adapted from" it; diffed, identical).

# %%
def official_pixel_shuffle(x: torch.Tensor, scale_factor: float = 0.5, ps_version: str = "v2") -> torch.Tensor:
    """InternVLChatModel.pixel_shuffle (modeling_internvl_chat.py L257-271), transcribed, without the warning."""
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
    return x if ps_version == "v1" else x.permute(0, 2, 1, 3).contiguous()


x_v = torch.randn(2, 32, 32, 8)
lib_v = transformers.models.internvl.modeling_internvl.InternVLModel.pixel_shuffle(None, x_v, scale_factor=0.5)
v1, v2 = official_pixel_shuffle(x_v, ps_version="v1"), official_pixel_shuffle(x_v, ps_version="v2")
print(f"ps_version v2 == transformers: {torch.equal(v2, lib_v)} | v1 == transformers: {torch.equal(v1, lib_v)} | "
      f"v1 == transformers with rows and columns swapped: {torch.equal(v1, lib_v.transpose(1, 2))} (same shape "
      f"{tuple(v1.shape)})")
assert torch.equal(v2, lib_v) and not torch.equal(v1, lib_v) and torch.equal(v1, lib_v.transpose(1, 2))

# %% [markdown]
# ## Reproduction
#
# **The claim, in the V2PE abstract's words (2412.09616v2).** "VLM performance degrades sharply when the position
# encoding exceeds the model's context window"; V2PE "employs variable and smaller increments for visual tokens,
# enabling more efficient management of long multimodal sequences", and "when the sequence length of the training
# dataset is increased to 256K tokens, the model is capable of processing multimodal sequences up to 1M tokens". The
# model is InternVL2-2B fine-tuned with V2PE (V2PE README L22 and L39: "Our models are built from InternVL2-2B"), with
# the random-stride recipe (`--rope_pos_id_version 'v2pe_rnd'`,
# `shell/internlm2_2b/internvl_chat_v2_internlm2_2b_dynamic_res_v2pe_32k.sh` L101, `--max_seq_length 34000` L85).
# InternVL3's abstract adopts V2PE "to support extended multimodal contexts". Two toys test the mechanism at 4x and 8x
# the training length, not the 1M-token result: toy A, that unseen position ranges break a RoPE model and smaller
# visual increments avoid them; toy B, whether *training* with them beats rescaling a standard-id model at test.
#
# **Toy A.** Key-value recall across "images": a sequence is 3 pairs `key value` each followed by a block of $n$
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


def train_stacked(arms: dict, seeds: int, steps: int = STEPS, progress=None, n_train: int = N_TRAIN,
                  batch_fn=toy_batch) -> dict:
    """Trains len(arms) x seeds ToyLMs in one loop; model a * seeds + s is (arm a, seed s), as train_arm(s, arm).

    n_train: visual tokens per block in training; batch_fn: the task (toy_batch, or toy B's toy_batch_visual)."""
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
        batches = [batch_fn(BATCH, n_train, g) for g in gens]
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


@torch.no_grad()
def accuracy(P: dict, test: tuple, pos: torch.Tensor) -> torch.Tensor:
    """Accuracy of each stacked model (M,) on a test set (seq (N, L), is_vis, y (N,)) with its ids pos (M, L)."""
    seq, _, y = test
    pred = torch.cat([stacked_forward(P, c.expand(len(pos), -1, -1), pos).argmax(-1) for c in seq.split(64)], 1)
    return (pred == y).double().mean(1)  # (M,), 64 sequences at a time


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
# Adam divides by sqrt(v): after a few steps, float-rounding differences between the batched and the one-model
# matmuls grow to 1e-5..1e-4 in the logits, by an amount that depends on the CPU kernel path; a wrong batching
# would differ by O(0.1). So the tolerance, not the measured value, is printed.
TOL_TRAIN = 1e-3
assert_close(stacked, one_by_one, atol=TOL_TRAIN, name="train_stacked vs train_arm")
print(f"{len(pos)} models: stacked forward vs ToyLM {error_bound(e_fwd)} | after 5 Adam steps, stacked vs one model "
      f"at a time ({len(nets5)} models, {CHECK_SEEDS} seeds per arm) < {TOL_TRAIN:g} (asserted) "
      f"(logits of size ~{one_by_one.abs().mean():.1f})")

# %% [markdown]
# The training run: 32 models in one loop (progress and time in this cell, the next prints the rounded results).

# %% tags=["nbval-ignore-output"]
from tqdm.auto import tqdm

P_toy = train_stacked(ARMS, SEEDS, progress=lambda r: tqdm(r, desc=f"steps ({len(ARMS) * SEEDS} models each)"))
g_test = torch.Generator().manual_seed(7)
tests = {n: toy_batch(N_TEST, n, g_test) for n in TEST_N}
L_TRAIN = (2 + N_TRAIN) * P_PAIRS + 1  # 19 tokens
CONTROLS = ("std-trained + PI at test", "std-trained, visual delta 4/n at test")


def control_pos(name: str, is_vis: torch.Tensor, n: int) -> torch.Tensor:
    if name == CONTROLS[0]:  # position interpolation: every id scaled into the trained span
        return pos_ids(is_vis, 1.0) * (L_TRAIN - 1) / (len(is_vis) - 1)
    return pos_ids(is_vis, N_TRAIN / n)  # visual ids only: delta = 4/n, each block spans 4 positions as in training


def evaluate(P: dict, arms: dict, tests: dict) -> dict:
    """(seeds, len(TEST_N)) accuracies: every trained arm at its test delta, then the two test-time controls, which
    re-use the first arm's models (the standard-id ones) with other test ids and no extra training."""
    acc = {arm: torch.zeros(SEEDS, len(TEST_N)) for arm in (*arms, *CONTROLS)}
    P_std = {k: v[:SEEDS] for k, v in P.items()}
    P_ctl = {k: v.repeat(len(CONTROLS), *[1] * (v.dim() - 1)) for k, v in P_std.items()}
    for j, n in enumerate(TEST_N):
        is_vis = tests[n][1]
        a = accuracy(P, tests[n], torch.stack([pos_ids(is_vis, td) for _, td in arms.values() for _ in range(SEEDS)]))
        for k, arm in enumerate(arms):
            acc[arm][:, j] = a[k * SEEDS:(k + 1) * SEEDS]
        if n == N_TRAIN:  # at the training length both controls are the standard ids
            assert all(torch.equal(control_pos(c, is_vis, n), pos_ids(is_vis, 1.0)) for c in CONTROLS)
            for c in CONTROLS:
                acc[c][:, j] = acc[next(iter(arms))][:, j]
            continue
        a = accuracy(P_ctl, tests[n], torch.stack([control_pos(c, is_vis, n) for c in CONTROLS for _ in range(SEEDS)]))
        for k, c in enumerate(CONTROLS):
            acc[c][:, j] = a[k * SEEDS:(k + 1) * SEEDS]
    return acc


assert next(iter(ARMS)) == "standard ids (delta 1)"  # the controls re-use the first arm's models
acc = evaluate(P_toy, ARMS, tests)

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
# learning speed (accuracy at n = 4) vs length generalisation (what survives at n = 32), per seed
print(f"\n{'arm':38s} | retention acc(n=32) / acc(n=4), per seed: mean ± std [min, max] | n = 32 accuracy of the "
      f"seeds above 0.9 at n = {N_TRAIN}")
for arm, a in acc.items():
    ret = a[:, 2] / a[:, 0]
    conv = a[:, 0] > 0.9
    print(f"{arm:38s} |       {ret.mean():.2f} ± {ret.std():.2f} [{ret.min():.2f}, {ret.max():.2f}]{'':29s}| "
          f"{int(conv.sum())} seed(s): {', '.join(f'{v:.2f}' for v in a[conv, 2].tolist())}")


def plot_arms(ax, acc: dict, labels: dict, ylabel: str, chance: float) -> None:
    """Accuracy vs n, mean ± std over seeds, each arm shifted a little in x so the error bars do not overlap."""
    for k, (arm, a) in enumerate(acc.items()):
        x = np.array(TEST_N) * (1 + 0.035 * (k - (len(acc) - 1) / 2))  # multiplicative jitter on the log axis
        ax.errorbar(x, a.mean(0).numpy(), a.std(0).numpy(), marker=MARKERS[arm], ms=4, capsize=3, label=labels[arm],
                    color=COLORS[arm])
    ax.axvline(N_TRAIN, color="gray", ls=":", label=f"trained at n = {N_TRAIN}")
    ax.axhline(chance, color="k", ls="--", lw=0.8, label=f"chance ({chance:.3f})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(TEST_N, [str(n) for n in TEST_N])
    ax.set_xlabel("visual tokens per block at test, n")
    ax.set_ylabel(ylabel)


LABELS = {arm: arm for arm in acc}  # the table's names, in the legend too
COLORS = {arm: f"C{k}" for k, arm in enumerate(acc)}  # one colour and marker per arm, in every figure
MARKERS = dict(zip(acc, "os^vDP", strict=True))
fig, ax = plt.subplots(1, 2, figsize=(11, 4.6))
plot_arms(ax[0], acc, LABELS, f"recall accuracy (mean ± std, {SEEDS} seeds)", 1 / NV)
for arm, a in acc.items():
    ax[1].scatter(a[:, 0].numpy(), a[:, 2].numpy(), s=18, color=COLORS[arm], marker=MARKERS[arm], alpha=0.8)
ax[1].plot([0, 1], [0, 1], color="gray", lw=0.8, label="acc(n=32) = acc(n=4): full retention")
ax[1].axhline(1 / NV, color="k", ls="--", lw=0.8)
ax[1].set_xlabel(f"accuracy at n = {N_TRAIN}, the training length (learning speed)")
ax[1].set_ylabel(f"accuracy at n = {TEST_N[-1]} (length generalisation)")
ax[1].set_title("each point: one seed", fontsize=9)
ax[1].legend(fontsize=7, loc="upper left")
handles, labels = ax[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
fig.suptitle("V2PE toy: only the position-id rule differs between arms")
fig.tight_layout(rect=(0, 0.14, 1, 1))
plt.show()

# %% [markdown]
# **What toy A shows.** Read it from the tables above (mean ± std over 8 seeds, [min, max]). The "last position id"
# row is the mechanism: it is the distance $\Delta p$ from the first key (id 0) to the query, the closed form of
# derivation 3. With standard ids it grows with $n$ (18 in training, 54 and 102 at test), so the query-key distances at
# test were never seen in training and RoPE's rotations at unseen distances disturb the content match: standard ids
# fall from 0.90 (n = 4) to 0.45 at 4x and 0.16 at 8x (chance 0.125). 0.45 is about what picking one of the three
# values in the context at random gives ($(1 + 2/8)/3 \approx 0.42$, values can repeat): the model still copies a
# value, not the right one. With $\delta = 1/16$ the query sits at 9 in training, 9 at n = 16 (the text tokens land on
# exactly their training positions, only the visual ids in between get finer) and 12 at n = 32, so it degrades
# little: 0.66, 0.64, 0.58, ahead of standard ids on 7/8 seeds at 4x and 8/8 at 8x. $\delta = 1/4$ is in between
# (query at 9, 18, 30: 0.68, 0.54, 0.45).
#
# **Learning speed vs length generalisation.** The $\delta$ arms start lower at n = 4, so their flat curves could
# just mean "learned little, so had little to lose". The per-seed retention table and the right panel separate the
# two. At the training length small $\delta$ learned *more slowly*: above 0.9 at n = 4 on 5, 2, 1 and 1 of 8 seeds
# for $\delta$ = 1, 1/4, 1/16 and random (unconverged seeds sit near the 0.42 copy level), and $\delta = 1/16$ is
# ahead of standard ids at n = 4 on 0 of 8 seeds. But what survives to n = 32 is set by the id rule: standard ids keep
# $0.19 \pm 0.06$ of their n = 4 accuracy, $\delta = 1/4$ $0.70 \pm 0.18$, $\delta = 1/16$ $0.89 \pm 0.08$. The seeds
# that did find the circuit make it plain: the 5 converged standard-id seeds fall to 0.12-0.20 at n = 32, while the
# one converged seed of $\delta = 1/16$ keeps 0.93 and that of the random arm 0.91 (single seeds, so an illustration,
# not a statistic). So length generalisation comes from the small $\delta$, and the price of small $\delta$ in this
# toy is learning speed. Why it learns more slowly is not tested here (a guess: four visual tokens packed into a
# quarter of a position are hard to tell apart from the value next to them). Only one budget is run (400 steps x 16
# sequences); whether a longer one lets more $\delta$ seeds converge is not tested here.
#
# **The two test-time controls (the same 8 standard-id models, no extra training; only the test ids change).**
# (i) **Position interpolation (PI):** every id, text included, multiplied by $18/(L-1)$, so the query sits at 18 as
# in training. (ii) **Visual ids only, at test:** the V2PE rule applied at test time only, with $\delta = 4/n$, so each
# visual block spans 4 positions as in training and every text token lands on exactly its training position. At n = 4
# both are the standard ids (asserted). At n = 16 / 32, PI gives 0.86 / 0.76 and the visual-only control 0.90 / 0.87:
# **both beat every V2PE-trained arm on toy A** (each is ahead of the $1/16$-trained arm on 8 of 8 seeds at both
# lengths). The reason: toy A's visual tokens are random filler, so the task only needs the key, value and query to
# keep the distances seen in training, and any compression that does so solves it for free.
#
# **Toy B (below) removes that loophole**: the answer is the visual token right after the value, so the model must use
# a visual token's position. Rescaling at test then shows a standard-id model value-to-visual distances it never saw
# in training (Exercise 4), while the $\delta$-trained model sees its training distances again. That is the regime
# V2PE is built for, and the toy there finds the trained $\delta = 1/16$ arm ahead of both controls. The V2PE
# repository makes the same kind of comparison at scale: its MM-NIAH long-context evaluation
# (`eval/mm_niah/eval_mm_niah_long.py`, HEAD `f96f189`) has `--interp linear` and `--interp ntk` options (L144,
# L154), which swap in InternLM2's linear or dynamic-NTK RoPE scaling and are allowed only with stride 256, i.e.
# standard ids; the paper's numbers for that comparison are not reproduced here.
#
# **The random-$\delta$ arm** (the cut-down `v2pe_rnd`: $\delta \geq 1/16$, per batch; tested at $1/16$) is flat in
# $n$ like fixed $1/16$ (0.50, 0.53, 0.49) and far above standard ids at 8x (ahead on 8/8 seeds). It has the lowest
# mean accuracy at n = 4 (0.50 vs 0.66 for fixed 1/16; tied with 1/16 on seeds above 0.9, 1 of 8 each) and is below
# fixed $1/16$ on average at every $n$: training on a mix of $\delta$ costs steps here. The paper's reason for it,
# choosing $\delta$ at test time for each context length, is not something a toy trained at one length can show.
#
# **Scale.** The paper's gains are on real long-context benchmarks with InternVL3 at 1B-78B, and V2PE's own on
# InternVL2-2B trained at 32K and 256K tokens; a 19k-parameter model at 19-103 tokens speaks only to the mechanism.
#
# **Native pre-training vs adapter-first: explained, not reproduced.** This reading runs no toy of it (the CPU
# budget went to the V2PE forward, the MPO check and the two toys). The objective, stated: next-token prediction with
# the loss on text tokens only (visual tokens are conditioning, $\mathcal L = -\sum_{t \in \text{text}} w_t \log
# p_\theta(x_t \mid x_{<t})$), starting from the base LLM, the InternViT and a random MLP (table in The problem), on a
# mixture of pure-text and multimodal sequences. The token weights $w_t$: InternVL2.5's `internvl_chat/README.md`
# (L91) names "square averaging"; the formula is in the code, `len2weight` in
# `internvl_chat/internvl/train/internvl_chat_finetune.py` L786-795 (OpenGVLab/InternVL `2410d1d`):
# `loss_reduction == 'square'` gives $w = 1/l^{0.5}$ for a sample of $l$ tokens (the InternVL2.5 recipe; whether the
# native stage uses it is the paper's detail). [V9](V9_deepseek_vl.ipynb) runs the closest toy (keeping text in the
# multimodal stage prevents forgetting, 8 seeds). The paper's evidence is the InternVL2-8B ablation quoted in The
# problem ("comparable" on most benchmarks, better after instruction tuning).
#
# ### What a healthy run prints
#
# At n = 4 every fixed-$\delta$ arm above 0.5 on average (unconverged seeds sit near 0.42); standard ids fall with n,
# to below 0.25 at n = 32; $\delta = 1/16$ above standard ids on average at n = 16 and n = 32, and on at least 6 of 8
# seeds at 32; the random-$\delta$ arm at n = 32 at least 0.1 above standard ids and ahead on at least 6 of 8 seeds.
# Retention acc(32)/acc(4) below 0.3 on average for standard ids and above 0.7 for $\delta = 1/16$, higher on at least
# 7 of 8 seeds. On toy A, both test-time controls above the $\delta = 1/16$-trained arm on average at n = 16 and 32,
# and the visual-only control ahead of standard ids on at least 6 of 8 seeds at n = 32 (if a change made the trained
# V2PE arm beat the controls on toy A, these asserts would say so by failing). Toy B's healthy run is asserted in its
# own cell below: the $\delta = 1/16$-trained arm above both controls and standard ids on average at n = 16 and 32.

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
ret1, ret16 = a1[:, 2] / a1[:, 0], a16[:, 2] / a16[:, 0]
print(f"retention acc(32)/acc(4): standard {ret1.mean():.2f}, 1/16 {ret16.mean():.2f}; 1/16 higher on "
      f"{int((ret16 > ret1).sum())}/{SEEDS} seeds")
assert ret1.mean() < 0.3 and ret16.mean() > 0.7 and int((ret16 > ret1).sum()) >= 7

# %% [markdown]
# ### Toy B: the answer is a visual token
#
# Toy A cannot tell V2PE *training* from free test-time rescaling, because its visual tokens are filler. Toy B keeps
# everything (model, seeds, initial weights, data stream, the same test sequences, 400 steps x 16) and changes only
# the target: the query now asks for the **first visual token of the block after the queried key** (16 possible
# tokens, chance 1/16). To answer, the model must locate the token right after the value by position. Two arms are
# trained, standard ids and $\delta = 1/16$ (16 models, the CPU budget), and the same two test-time controls are
# applied to the standard-id models. Prediction from the relative-distance derivation: the value-to-first-visual-token
# distance is 1 in standard-id training but $4/n$ under the visual-only control and $18/(L-1)$ under PI at test, a
# distance never seen in training, while the $\delta = 1/16$ arm sees $1/16$ in training and at test (Exercise 4
# computes these).

# %%
def toy_batch_visual(n: int, n_vis: int, g: torch.Generator):
    """Toy B: as toy_batch (same draws, same sequences), but the target is the first visual token of the queried
    key's block, i.e. the token right after its value."""
    seq, is_vis, _ = toy_batch(n, n_vis, g)
    blocks = seq[:, :-1].reshape(n, P_PAIRS, 2 + n_vis)  # (n, pairs, key value visual...)
    qi = (blocks[:, :, 0] == seq[:, -1:]).float().argmax(1)  # which pair the query key names (keys are distinct)
    return seq, is_vis, blocks[torch.arange(n), qi, 2]


ARMS_B = {arm: ARMS[arm] for arm in ("standard ids (delta 1)", "V2PE delta 1/16")}
seq_b, _, y_b = toy_batch_visual(4, 5, torch.Generator().manual_seed(0))
assert ((y_b >= NK + NV) & (y_b < V_TOY)).all()  # targets are visual tokens; the head already covers them
print("toy B targets of 4 sequences:", y_b.tolist(), "(visual token ids 16-31)")

# %% tags=["nbval-ignore-output"]
P_b = train_stacked(ARMS_B, SEEDS, batch_fn=toy_batch_visual,
                    progress=lambda r: tqdm(r, desc=f"toy B steps ({len(ARMS_B) * SEEDS} models each)"))
g_test_b = torch.Generator().manual_seed(7)  # the same seed as toy A's tests: the same sequences, new targets
tests_b = {n: toy_batch_visual(N_TEST, n, g_test_b) for n in TEST_N}
acc_b = evaluate(P_b, ARMS_B, tests_b)

# %%
assert all(torch.equal(tests_b[n][0], tests[n][0]) for n in TEST_N)  # toy A's test sequences, other targets
print(f"toy B, {SEEDS} seeds, chance = {1 / NVIS:.4f}")
print(f"{'arm':38s}" + "".join(f" | n={n:<2d}: mean ± std [min, max]" for n in TEST_N))
for arm, a in acc_b.items():
    print(f"{arm:38s}" + "".join(f" | {a[:, j].mean():.2f} ± {a[:, j].std():.2f} [{a[:, j].min():.2f}, "
                                 f"{a[:, j].max():.2f}]" for j in range(len(TEST_N))))
b1, b16 = acc_b["standard ids (delta 1)"], acc_b["V2PE delta 1/16"]
for name in CONTROLS:
    ahead = [int((b16[:, j] > acc_b[name][:, j]).sum()) for j in (1, 2)]
    print(f"1/16-trained ahead of '{name}' on {ahead[0]}/{SEEDS} (n=16) and {ahead[1]}/{SEEDS} (n=32) seeds")
print(f"1/16-trained ahead of standard ids on {int((b16[:, 2] > b1[:, 2]).sum())}/{SEEDS} seeds at n = 32")
fig, ax = plt.subplots(figsize=(6.5, 4.2))
plot_arms(ax, acc_b, LABELS, f"toy B accuracy (mean ± std, {SEEDS} seeds)", 1 / NVIS)
ax.set_title("toy B: the answer is the first visual token after the value", fontsize=9)
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
fig.tight_layout()
plt.show()
# what a healthy run prints: the 1/16-trained arm above both controls and standard ids on average at n = 16 and 32
assert all(b16[:, j].mean() > max(acc_b[c][:, j].mean() for c in (*CONTROLS, "standard ids (delta 1)"))
           for j in (1, 2))

# %% [markdown]
# **What toy B shows.** At the training length the standard ids learn toy B well (0.85) and the $\delta = 1/16$ arm
# more slowly (0.56), as on toy A. At 4x and 8x the picture flips: standard ids fall to 0.17 / 0.07 (chance 0.06),
# PI to 0.13 / 0.09 and the visual-only control to 0.30 / 0.17, while the $\delta = 1/16$-trained arm keeps 0.47 / 0.37,
# ahead of PI on 8 of 8 seeds and of the visual-only control on 7 of 8 at both lengths. The test-time controls that
# won toy A for free lose here because they put the value-to-visual-token distance (1 in training) at 0.18 or 0.125 at $n = 32$ (0.33 or 0.25 at $n = 16$),
# distances the standard-id model never saw (Exercise 4 computes them). So, at toy scale and at matched budget: when
# the content the model needs *is* positioned among the visual tokens, training with the small visual step (what
# V2PE does) generalises in length where test-time rescaling of a standard-id model does not; when the visual tokens
# are filler (toy A), rescaling is enough. The trained arm is far from perfect (0.37 at 8x), and it has the slower
# start of toy A.

# %% [markdown]
# ### Practitioner notes (completeness)
#
# - **No V2PE in the public InternVL code.** At OpenGVLab/InternVL HEAD `2410d1d`, `git grep -i v2pe` finds nothing
#   in `internvl_chat/` (not in the `shell/internvl3.0/` training scripts, not in the inference model), and
#   `git grep rope_pos_id` finds nothing in the whole repository. The public InternVL3 fine-tuning recipe and
#   `transformers` therefore both use integer ids; fractional ids live only in OpenGVLab/V2PE. That InternVL3's own
#   pre-training used V2PE rests on its abstract, which names it.
# - **Test-time scaling.** The InternVL README (`2410d1d`, L45) lists "Multimodal Test-Time Scaling"
#   ([arXiv:2503.10291](https://arxiv.org/abs/2503.10291), VisualPRM) among InternVL3-78B's key designs, and the
#   repository ships the VisualPRM data-construction scripts (`internvl_chat/shell/internvl3.0/
#   visualprm_data_construction/`). The idea: a process reward model scores each step of N sampled answers, and the
#   best-scored answer is kept (Best-of-N).
# - **Post-training data.** The MPO script trains on MMPR-v1.2 (`--meta_path "MMPR-v1.2/meta.json"`,
#   `internvl3_8b_mpo.sh` L40), a preference set built automatically (MPO paper, 2411.10442, abstract), with
#   `--ps_version 'v2'` (L71) as in the fine-tuning scripts.
# - **Tile budgets in practice.** 12 tiles for one image; shared across the images of a training sample; 1 tile per
#   video frame (derivation 4). A 1080p image costs 2,304 tokens alone but 768 in a 3-image training sample.
# - **V2PE's positions are float32.** The official code calls `get_rope_pos_id(..., torch.float32, ...)` in training
#   (`internvl/train/internvl_chat_finetune.py` L544, L705, L803) and in evaluation
#   (`eval/mm_niah/eval_mm_niah_long.py` L303), at V2PE HEAD `f96f189`. This matters because a float with $m$
#   significand bits has spacing $2^{e-m+1}$ in $[2^e, 2^{e+1})$, so a step $\delta$ is lost from $p = 2^m \delta$ on.
#   In **bf16** ($m = 8$), a step of $1/16$ is lost from position 16 on, and past 256 not even every integer is
#   representable. So fractional ids must never be cast to the model's bf16 dtype. In **fp32** ($m = 24$), the
#   smallest stride $1/256$ survives only below $2^{16} = 65{,}536$, which long-context runs can reach. Checked below
#   against `torch`.
# - **Limitation: native pre-training is explained, not reproduced.** No toy of it runs here (see the paragraph
#   above and [V9](V9_deepseek_vl.ipynb)).

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
# - **Claim (seed, InternVL3 row):** "传统多模态模型（如FLAVA）采用'文本预训练→图像预训练→跨模态对齐'多阶段流程"
#   (traditional models such as FLAVA pre-train text, then images, then align), and that is what native pre-training
#   replaces. **Correction:** FLAVA is a different kind of model (image, text and multimodal *encoders* trained with
#   contrastive and masked objectives, no LLM that generates text), so it is not InternVL3's baseline. The abstract
#   names the one it replaces: "Rather than adapting a text-only large language model (LLM) into a multimodal large
#   language model (MLLM) that supports visual inputs, InternVL3 jointly acquires multimodal and linguistic
#   capabilities ... during a single pre-training stage", i.e. the adapter-first MLLM recipe of InternVL2.5 and the
#   LLaVA family (the recipe table in The problem, `internvl_chat/README.md` L71-L75).
# - **Claim (a common summary):** "native multimodal pre-training means InternVL3 trains its LLM from scratch on text
#   and images", or, the other way, "InternVL3 adapts a finished chat LLM like everyone else". **Correction:** neither.
#   The language part starts from the **pre-trained base** checkpoints: the InternVL README links `Qwen/Qwen2.5-0.5B`
#   ... `Qwen/Qwen2.5-72B` for InternVL3 (`README.md` L144-L186 at `2410d1d`; the 9B is the exception, from
#   `internlm3-8b-instruct`, L165), where InternVL2.5 linked the Instruct/chat models (`internvl_chat/README.md`
#   L35-L41). The model cards: "Qwen2.5 Chat models, whose corresponding pre-trained base models are employed as the
#   initialization of the langauge [sic] component in InternVL3", and "a newly incrementally pre-trained InternViT ...
#   using a randomly initialized MLP projector". Native means one continued pre-training stage in which the base LLM
#   learns from text and multimodal data together, instead of an MLP warm-up on a frozen chat LLM followed by
#   instruction tuning (table in The problem). Only the MLP is new.
# - **Claim (seed table):** InternVL3's native pre-training uses "a 12-layer Transformer text encoder and a ViT-H
#   image encoder (14x14 patch)", with "InfoNCE image-text matching, captioning and an MSE loss for generating image
#   features", on "1B+ image-text pairs". **Correction:** InternVL3 is a decoder-only ViT-MLP-LLM: an InternViT
#   encoder, a 2-layer MLP and a full pre-trained LLM (abstract; `InternVLForConditionalGeneration` above). Native
#   pre-training is next-token prediction of the LLM on text and multimodal sequences in one stage (abstract: "jointly
#   acquires multimodal and linguistic capabilities ... during a single pre-training stage"); there is no separate
#   text encoder, no contrastive loss and no image-feature regression. No "1B+ pairs" figure is in the sources read.
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
#   ("InternVL3 only supports single-image input"). **Correction:** InternVL's chat template and processor take
#   several images (`Image-1: <image>` ...) and video frames (`Frame-1: <image>` ..., one 448 tile each) per sequence,
#   with the tile budget shared across a training sample's images (derivation 4), and V2PE exists to make such long
#   multimodal contexts fit.
# - **Claim:** "one tile = 1024 tokens" or "256 = 16x16 patches of a 224 image". **Correction:** 448/14 = 32, so 1024
#   patches, and pixel shuffle 1/2 makes 256 tokens per 448 tile (derivation 2); an image costs 256 per tile plus
#   one thumbnail when it has more than one tile.
# - **Claim:** "V2PE is position interpolation." **Correction:** position interpolation rescales *every* position,
#   text included, by (training length)/(test length); V2PE keeps unit steps for text and compresses only the visual
#   tokens (derivation 3), and it is a *training* recipe. The toy shows the difference matters: with filler visual
#   tokens (toy A) interpolating a standard-id model at test beats V2PE training, but when the answer is a visual token
#   (toy B) interpolation collapses to 0.09 at 8x while the $\delta = 1/16$-trained model keeps 0.37. The V2PE
#   repository's long-context evaluation compares the two at scale (`--interp linear` / `ntk`).
# - **Claim (seed):** "SFT用10万+多模态指令" (SFT uses 100k+ multimodal instructions). **Correction:** no such count
#   is in the abstract, the model cards' text read here or the official code; nothing read supports "100k+".
# - **Claim (seed):** "V2PE使不同分辨率图像的理解准确率差异<3%" (V2PE keeps accuracy across resolutions within 3%).
#   **Correction:** V2PE is about *context length* (its title: "Multimodal Long-Context Capability"): it shrinks the
#   position increment of visual tokens (derivation 3), and has nothing to do with resolution. Resolution is handled
#   by tiling (derivation 1). "<3%" is not found in the abstracts or the code.
# - **Claim (seed):** InternVL3 "开源…10亿+图文数据集" (open-sourced a 1B+ image-text data set). **Correction:** not
#   found in the abstract or the InternVL README at `2410d1d` (the abstract promises to "publicly release both the
#   training data and model weights", with no size). The data set the official MPO script names is MMPR-v1.2, a
#   preference set.
# - **Claim:** "pixel shuffle upsamples." **Correction:** here it goes the other way, space to depth. (B, 32, 32, C)
#   becomes (B, 16, 16, 4C): the grid shrinks 2x per side and the channels grow 4x. That is `torch`'s
#   `pixel_unshuffle` (checked above, up to channel order), the inverse of the super-resolution `PixelShuffle`.
#   The InternVL model cards call it pixel unshuffle.
# - **Claim:** "InternVL pads the image to the grid." **Correction:** it resizes to the grid's canvas, stretching by
#   at most the ratio gap (derivation 1); padding is DeepSeek-VL2's/LLaVA's AnyRes choice ([V9](V9_deepseek_vl.ipynb)).

# %% [markdown]
# ## Exercises
#
# 1. How many image tokens does a 1920x1080 screenshot cost InternVL3 with the InternVL3 scripts' setting
#    ($n_{\max} = 12$, thumbnail)?
#    Compute with derivation 1, then check below.
# 2. A 10-image interleaved document, 6 tiles + thumbnail each: how many positions does it span with standard ids,
#    and with $\delta = 1/16$ (ignore the text and the ceil)? Checked below.
# 3. In toy A, train the standard-ids arm at $n = 16$ directly (same 400 steps x 16 sequences, so 3x the tokens) and
#    test it at $n = 16$ and $32$. Does training long close the gap to the $\delta = 1/16$ arm trained at $n = 4$, and
#    to the test-time controls? Predict first; an answer key and a starter (off by default: about 20 s of CPU) are
#    below.
# 4. Toy B's mechanism, by hand: with the toy's ids (derivation 3), what is the position distance from the value to
#    the first visual token after it (a) in training ($n = 4$), for standard ids and for $\delta = 1/16$; (b) at
#    $n = 32$, for the $\delta = 1/16$ arm, for position interpolation ($\times 18/(L-1)$) and for the visual-only
#    control ($\delta = 4/n$)? Which of them shows the model, at test, a distance it saw in training, and what does
#    that predict for toy B? Checked below against the ids the notebook used.

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

answer_4 = None  # ((standard, 1/16) in training, (1/16, PI, visual-only) at n = 32), each a number
is4, is32 = tests[4][1], tests[32][1]  # layout: key 0, value 1, first visual token 2, ...
gap = {"train standard": pos_ids(is4, 1.0), "train 1/16": pos_ids(is4, 1 / 16), "n=32, 1/16": pos_ids(is32, 1 / 16),
       "n=32, PI": control_pos(CONTROLS[0], is32, 32), "n=32, visual-only": control_pos(CONTROLS[1], is32, 32)}
gap = {k: round((v[2] - v[1]).item(), 4) for k, v in gap.items()}
assert gap == {"train standard": 1.0, "train 1/16": 0.0625, "n=32, 1/16": 0.0625, "n=32, PI": round(18 / 102, 4),
               "n=32, visual-only": 0.125}
if answer_4 is not None:
    print("correct" if [round(v, 4) for v in (*answer_4[0], *answer_4[1])] == list(gap.values()) else f"not quite: {gap}")

# %% [markdown]
# **Answer 4.** Distances value to first visual token: in training 1 (standard ids) and $1/16$ ($\delta = 1/16$); at
# $n = 32$, $1/16$ for the $\delta = 1/16$ arm (unchanged), $18/102 \approx 0.18$ under PI and $4/32 = 0.125$ under
# the visual-only control. Only the V2PE-trained arm sees a trained distance at test; both controls show a
# standard-id model distances between 0 and 1 it never saw. So the controls should fail on toy B, and they do
# (toy B in the Reproduction): toy A's "test-time rescaling wins" rested on the answer never needing a visual token's
# position.
#
# **Answer 3 (a hypothesis; its run is the starter below, off by default to keep the CPU budget).** Expect training
# long *not* to close the gap at this budget. At $n = 16$ every sequence is 55 tokens and consecutive keys sit 18
# positions apart instead of 6, so the same 400 steps must find the recall circuit across 3x as much filler (toy A
# already shows that what makes the task harder in training, there a small $\delta$, costs convergence); and tested
# at $n = 32$, the standard ids again meet distances they never saw (up to 102 against 54). Training long also costs
# 3x the tokens, while the test-time controls need no training and V2PE needs none at the long length. Set
# `RUN_EXERCISE_3 = True` to check the hypothesis with the same seeds and budget. One run of it (8 seeds, mean ± std
# over seeds; accuracy at $n = 16$ / $n = 32$), which bears the hypothesis out:
#
# | arm | $n = 16$ | $n = 32$ |
# |---|---|---|
# | standard ids, trained at $n = 16$ | 0.50 ± 0.15 | 0.32 ± 0.08 |
# | standard ids, trained at $n = 4$ | 0.45 ± 0.04 | 0.16 ± 0.03 |
# | V2PE $\delta = 1/16$, trained at $n = 4$ | 0.64 ± 0.18 | 0.58 ± 0.17 |
# | PI at test / visual-only at test (standard ids, $n = 4$) | 0.86 / 0.90 | 0.76 / 0.87 |
#
# Training long lifts the standard ids at $n = 16$ a little and at $n = 32$ from 0.16 to 0.32, but stays below the
# $\delta = 1/16$ arm and far below both test-time controls.

# %%
RUN_EXERCISE_3 = False  # Exercise 3: the standard-id arm trained at n = 16 directly (8 models, ~20 s of CPU)
if RUN_EXERCISE_3:
    P_ex3 = train_stacked({"standard ids (delta 1)": ARMS["standard ids (delta 1)"]}, SEEDS, n_train=16)
    acc_ex3 = torch.stack([accuracy(P_ex3, tests[n], pos_ids(tests[n][1], 1.0).expand(SEEDS, -1)) for n in (16, 32)], 1)
    for name, a in {"standard ids, trained at n = 16": acc_ex3, "standard ids, trained at n = 4": acc["standard ids (delta 1)"][:, 1:],
                    "V2PE delta 1/16, trained at n = 4": acc["V2PE delta 1/16"][:, 1:],
                    CONTROLS[0]: acc[CONTROLS[0]][:, 1:], CONTROLS[1]: acc[CONTROLS[1]][:, 1:]}.items():
        print(f"{name:38s}" + "".join(f" | n={n}: {a[:, j].mean():.2f} ± {a[:, j].std():.2f}" for j, n in enumerate((16, 32))))

# %% [markdown]
# ## References
#
# - J. Zhu et al., *InternVL3: Exploring Advanced Training and Test-Time Recipes for Open-Source Multimodal Models*,
#   [arXiv:2504.10479v1](https://arxiv.org/abs/2504.10479v1) (abstract read); the official model cards
#   (`OpenGVLab/InternVL3-*` and `-Pretrained` on Hugging Face: introduction, architecture, "Ablation Study").
# - J. Ge et al., *V2PE: Improving Multimodal Long-Context Capability of Vision-Language Models with Variable Visual
#   Position Encoding*, [arXiv:2412.09616v2](https://arxiv.org/abs/2412.09616v2) (abstract of v2, quoted in The
#   problem and the Reproduction).
# - W. Wang et al., *Enhancing the Reasoning Ability of Multimodal Large Language Models via Mixed Preference
#   Optimization* (MPO, introduced with InternVL2-8B-MPO), [arXiv:2411.10442v1](https://arxiv.org/abs/2411.10442v1) (abstract; the loss
#   and weights are checked in code).
# - Z. Chen et al., *How Far Are We to GPT-4V? Closing the Gap to Commercial Multimodal Models with Open-Source
#   Suites* (InternVL 1.5: dynamic 448 tiling), [arXiv:2404.16821](https://arxiv.org/abs/2404.16821).
# - Z. Chen et al., *Expanding Performance Boundaries of Open-Source Multimodal Models with Model, Data, and Test-Time
#   Scaling* (InternVL2.5, the adapter-first recipe contrasted here), [arXiv:2412.05271](https://arxiv.org/abs/2412.05271)
#   (abstract).
# - W. Wang et al., *VisualPRM: An Effective Process Reward Model for Multimodal Reasoning* (Best-of-N at test time),
#   [arXiv:2503.10291](https://arxiv.org/abs/2503.10291).
# - Official code, [OpenGVLab/InternVL](https://github.com/OpenGVLab/InternVL) at `2410d1d`: `README.md` (InternVL3
#   family, L141-L188), `internvl_chat/README.md` (InternVL2.5 family and training pipeline, L35-L75),
#   `internvl_chat/internvl/train/dataset.py` (`find_closest_aspect_ratio`, `dynamic_preprocess`),
#   `internvl_chat/internvl/train/internvl_chat_finetune.py` (multi-image budget L488, video L525-555, `len2weight`),
#   `internvl_chat/internvl/model/internvl_chat/modeling_internvl_chat.py` (`pixel_shuffle`, `ps_version`),
#   `internvl_chat/shell/internvl3.0/` (2nd-finetune and MPO scripts) and `internvl_chat/internvl/train/trainer_dpo.py`
#   (`MultimodalDPOTrainer`, `RunningMoments`).
# - [OpenGVLab/V2PE](https://github.com/OpenGVLab/V2PE) at `f96f189`: `get_rope_pos_id` (`v2pe_fix`, `v2pe_rnd`) in
#   `internvl/train/internvl_chat_finetune.py` (training) and `internvl/model/internvl_chat/modeling_internvl_chat.py`;
#   `shell/internlm2_2b/*_v2pe_32k.sh`; `scripts/evaluate_*.sh` (`STRIDE`); `eval/mm_niah/eval_mm_niah_long.py`.
# - Reference implementation: `transformers` 5.23.0, `transformers.models.internvl` (`InternVLForConditionalGeneration`,
#   `InternVLModel.pixel_shuffle`, `InternVLMultiModalProjector`, `InternVLProcessor.replace_video_token`),
#   `transformers.models.got_ocr2` (`get_optimal_tiled_canvas`, `GotOcr2ImageProcessorPil`) and
#   `transformers.masking_utils.find_packed_sequence_indices`; `trl` 1.16.0 (`DPOTrainer._compute_loss`).
# - Course code: `shared.tiling` (`closest_ratio_grid`, `tile_grids`, `split_tiles`, `pixel_shuffle`),
#   `shared.preference_losses.mpo_loss`; MPO and Cascade RL in full: [V11](V11_internvl3_5.ipynb).
