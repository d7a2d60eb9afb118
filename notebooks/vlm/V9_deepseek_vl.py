# ---
# jupyter:
#   course:
#     cpu_seconds: 20
#     id: V9
#     papers:
#     - arxiv: '2403.05525'
#       title: 'DeepSeek-VL: Towards Real-World Vision-Language Understanding'
#       version: v2
#     - arxiv: '2412.10302'
#       title: 'DeepSeek-VL2: Mixture-of-Experts Vision-Language Models for Advanced
#         Multimodal Understanding'
#       version: v1
#     part: vlm
#     peak_memory_mb: 683
#     prerequisites:
#     - V6
#     title: DeepSeek-VL and DeepSeek-VL2
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
# # V9 · DeepSeek-VL and DeepSeek-VL2
#
# [![Open In Colab](../../docs/img/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/vlm/V9_deepseek_vl.ipynb)
#
# **Papers:** Haoyu Lu, Wen Liu, Bo Zhang, Bingxuan Wang, Kai Dong, Bo Liu, et al. (DeepSeek-AI), *DeepSeek-VL:
# Towards Real-World Vision-Language Understanding*, arXiv 2024, [arXiv:2403.05525v2](https://arxiv.org/abs/2403.05525v2);
# Zhiyu Wu, Xiaokang Chen, Zizheng Pan, Xingchao Liu, Wen Liu, et al. (DeepSeek-AI), *DeepSeek-VL2: Mixture-of-Experts
# Vision-Language Models for Advanced Multimodal Understanding*, arXiv 2024,
# [arXiv:2412.10302v1](https://arxiv.org/abs/2412.10302v1) ·
# **Official code:** [deepseek-ai/DeepSeek-VL](https://github.com/deepseek-ai/DeepSeek-VL) (commit `681bffb`) and
# [deepseek-ai/DeepSeek-VL2](https://github.com/deepseek-ai/DeepSeek-VL2) (commit `ef9f91e`)
#
# **Prerequisites:** [V6 · Qwen2-VL](V6_qwen2_vl.ipynb) (image tokens in an LLM, patch merging); V1 · ViT (not yet
# written, see the syllabus); for the language model of DeepSeek-VL2: F3 · Attention variants and the KV cache
# (MLA), L3 · DeepSeekMoE and L4 · DeepSeek-V2 (not yet written)
#
# **CPU run time:** 20 s on a 2-core CPU (measured by `make run`, which rewrites this number)
#
# **Peak memory:** 683 MB (the kernel's peak resident memory, measured by `make run`)

# %% [markdown]
# ## TL;DR
#
# - **DeepSeek-VL-7B:** a *hybrid* encoder, SigLIP-L at 384x384 for semantics plus SAM-B at 1024x1024 for
#   detail; SAM's 64x64x256 map is brought to 24x24x1024 by two stride-2 convs and joined channel-wise with SigLIP's
#   24x24 grid: **576 tokens** per image, fixed (§3.1 of 2403.05525v2). The released **1.3B uses SigLIP-L at 384
#   only** (its model card; `transformers` model type `deepseek_vl`, the 7B is `deepseek_vl_hybrid`), also 576 tokens.
# - **Keeping the language:** VL pre-training mixes pure text back in (language : multimodal about 7 : 3, 70% text,
#   §3.2.2 and Table 1) and trains the LLM from stage 2 on; the paper's Figure 4 shows that multimodal-only training
#   erodes language skill (its caption writes the ratio the other way round, see Misconceptions).
# - **DeepSeek-VL2 (DeepSeek-VL2-Tiny / -Small / DeepSeek-VL2, 1.0B / 2.8B / 4.5B activated):** one
#   SigLIP-SO400M-384 encoder on dynamic tiles (a 384 global view + an m x n grid, m n <= 9 in the released config,
#   chosen AnyRes-style), 2x2 merge: **196 tokens per tile**; a DeepSeekMoE language model, with MLA in
#   DeepSeek-VL2-Small and DeepSeek-VL2 (Table 1). A 4032x3024 photo costs 2,017 tokens.
# - **Toy:** after text pre-training, fine-tuning on a multimodal task with 0% text raises the text loss from
#   ~1.6 to ~10 nats; 70% text keeps it at ~1.6 for 8 points of multimodal accuracy (8 seeds, matched samples).

# %% [markdown]
# ## 中文速览
#
# - **DeepSeek-VL-7B：**混合视觉编码器：384x384 的 SigLIP-L 负责语义，1024x1024 的 SAM-B 负责细节；SAM 的
#   64x64x256 特征经两层步长 2 的卷积变成 24x24x1024，与 SigLIP 的 24x24 网格按通道拼接：每张图固定 **576 个 token**。
#   发布的 **1.3B 只用 384 的 SigLIP-L**（见其模型卡；`transformers` 中为 `deepseek_vl`，7B 为 `deepseek_vl_hybrid`），同样 576 个 token。
# - **保住语言能力：**VL 预训练中混入纯文本（语言 : 多模态约 7 : 3，即 70% 文本，§3.2.2 与 Table 1），并从第二阶段起训练 LLM；
#   论文 Figure 4 表明只用多模态数据会削弱语言能力（其题注把比例方向写反了，见 Misconceptions）。
# - **DeepSeek-VL2（DeepSeek-VL2-Tiny / -Small / DeepSeek-VL2，激活 1.0B / 2.8B / 4.5B）：**单个 SigLIP-SO400M-384 编码器处理动态切片（384 全局图 +
#   m x n 网格，m n <= 9，按 AnyRes 规则选择），2x2 合并后**每片 196 个 token**；语言模型为 DeepSeekMoE，Small 与 DeepSeek-VL2 使用 MLA（Table 1）。
#   按发布的配置（最多 9 个局部切片），一张 4032x3024 的照片占 2,017 个 token。
# - **小实验：**文本预训练后，只用多模态数据微调（0% 文本）使文本损失从约 1.6 升到约 10；混入 70% 文本则保持在约 1.6，多模态准确率低约 8 个点（8 个种子，样本数相同）。

# %% [markdown]
# ## Setup
#
# One cell installs the course helper on Colab only (CI skips it); the next imports, seeds and picks the device.
# Everything runs on a CPU: the models are tiny random ones built from configs, the only photograph ships with
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
import random

import matplotlib.cbook as cbook
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from matplotlib.ticker import FormatStrFormatter, NullFormatter
from PIL import Image, ImageOps
from transformers import DeepseekVLHybridConfig, DeepseekVLHybridForConditionalGeneration
from transformers.image_processing_utils import select_best_resolution
from transformers.models.deepseek_vl_hybrid.image_processing_pil_deepseek_vl_hybrid import (
    DeepseekVLHybridImageProcessorPil,
)
from transformers.models.deepseek_vl_hybrid.modeling_deepseek_vl_hybrid import DeepseekVLSamVisionProj

from shared.tiling import best_fit_grid, closest_ratio_grid, split_tiles, tile_grids, unfold_merge
from shared.utils import assert_close, error_bound, pick_device, seed_everything

seed_everything(0)
torch.set_num_threads(1)  # the toy trains tiny models: one thread is faster than two that fight
device = pick_device()  # every reading runs on CPU; a GPU only makes it faster
print("torch", torch.__version__, "| transformers", transformers.__version__)

# %% [markdown]
# ## The problem
#
# **DeepSeek-VL.** The paper names what held open models back (§1 of 2403.05525, paraphrased): most spend their
# compute on instruction tuning rather than on pre-training; they lean on
# academic data that miss real use; they read images at low resolution ("e.g., 336x336 or 448x448"), which
# fails on OCR and small objects; and many let the LLM's language ability degrade while training on multimodal
# data. Its answers: a hybrid encoder that reads 1024x1024 pixels at a fixed cost of 576 tokens (a CLIP-family
# encoder alone is semantic but low-resolution, §3.1), and a pre-training recipe that keeps the LLM's language:
# "Starting with a focus on text, we gradually adjust the ratio" of vision-language data (abstract; §3.2.2, §4.4).
#
# **DeepSeek-VL2.** A fixed 1024x1024 square still wastes pixels on a wide screenshot and cannot grow for a
# 4K document. DeepSeek-VL2 replaces the hybrid encoder with one SigLIP-SO400M-384 applied to a *dynamic* number
# of 384x384 tiles chosen from the image's aspect ratio, compresses each tile's 27x27 patches 4x, and swaps the
# dense LLM for a Mixture-of-Experts one with Multi-head Latent Attention (abstract and §2 of 2412.10302), which
# shrinks the KV cache that many image tokens fill. The effect on reading text is large: on OCRBench, Table 3 of
# 2412.10302 reports 456 for DeepSeek-VL 7B against 809 / 834 / 811 for DeepSeek-VL2-Tiny / -Small / DeepSeek-VL2
# (1.0B / 2.8B / 4.5B activated).
#
# **Where it comes from.** The hybrid pairs SigLIP (Zhai et al., [arXiv:2303.15343](https://arxiv.org/abs/2303.15343),
# a CLIP-style encoder trained with a *sigmoid* pairwise loss) with the image encoder of SAM (Kirillov et al.,
# [arXiv:2304.02643](https://arxiv.org/abs/2304.02643), a ViTDet-style ViT-B with windowed attention and a conv neck).
# The tiling of VL2 is LLaVA-NeXT's "AnyRes" canvas rule (the same `select_best_resolution` as in `transformers`),
# and its 2x2 merge is the pixel shuffle of InternVL 1.5 ([arXiv:2404.16821](https://arxiv.org/abs/2404.16821)), in
# another channel order.
#
# **What came after.** DeepSeek-OCR (arXiv 2510.18234) reuses the high-resolution half of this design: its
# "DeepEncoder" is again a SAM-base window-attention ViT at 1024 px followed by two 3x3 stride-2 convs 256 -> 512 ->
# 1024 (`net_2`, `net_3` in `deepencoder/sam_vary_sdpa.py` of deepseek-ai/DeepSeek-OCR, the block of DeepSeek-VL's
# `downsamples` without the interpolation to 96, so 64x64 -> 16x16 = 256 tokens), now feeding a CLIP-L
# (`build_clip_l`, 24 layers of width 1024, whose `forward(x, patch_embeds)` takes the SAM tokens as its patch
# embeddings), and then CLIP-L's output (CLS dropped) is concatenated channel-wise with the SAM tokens (1024 +
# 1024 = 2048 channels) before a linear projector (`input_dim` 2048 to `n_embed` 1280): in series *and*
# concatenated, DeepSeek-VL's channel join again. `transformers` 5.23.0
# ships its successor as `deepseek_ocr2` (checkpoint `deepseek-community/DeepSeek-OCR-2`): SAM ViT-B, the same two
# stride-2 convs (256 -> 512 -> 896, `DeepseekOcr2SamVisionProj`), then a small Qwen2-style encoder with learned
# queries instead of CLIP. DeepSeek's unified understanding-and-generation models Janus (arXiv 2410.13848) and
# Janus-Pro (arXiv 2501.17811) keep a SigLIP-L at 384 as the understanding encoder (`transformers`'
# `JanusVisionConfig`: width 1024, 384 px, patch 16) beside a separate VQ tokenizer for generation.

# %% [markdown]
# ## Derivations
#
# ### 1. The hybrid encoder's token count (DeepSeek-VL §3.1; the 7B model)
#
# SigLIP-L/16 at 384: $384/16 = 24$, so $24 \times 24 = 576$ patch tokens of width 1024. SAM-B/16 at 1024:
# $1024/16 = 64$, so its neck emits a $64 \times 64 \times 256$ map. The paper interpolates it to
# $96 \times 96 \times 256$ (bilinear) and applies two stride-2 $3\times3$ convolutions,
# $$96 \xrightarrow{\text{stride }2} 48 \xrightarrow{\text{stride }2} 24,\qquad 256 \to 512 \to 1024 \text{ channels},$$
# so SAM also ends on a $24\times24 = 576$-cell grid, now of width 1024. Cell $(i,j)$ of both grids covers the same
# $\tfrac{1}{24}$ of the image, so the two are concatenated **along channels**: 576 tokens of width 2048. The paper
# does not say why 96. A likely reason (this reading's inference, not the paper's): 64 is not $24 \cdot 2^k$, so
# stride-2 convs alone cannot reach 24 from it; the smallest $24 \cdot 2^k$ at or above 64 is $24 \cdot 4 = 96$, and
# two stride-2 convs then land exactly on SigLIP's grid (48 would mean downsampling 64 first). The code below
# checks the shapes at the real sizes with `transformers`' own projection module.
#
# This is the **7B** model. The released DeepSeek-VL-1.3B has no SAM branch: its model card
# (huggingface.co/deepseek-ai/deepseek-vl-1.3b-base) says "It uses the SigLIP-L as the vision encoder supporting
# 384 x 384 image input", while the 7B card names "SigLIP-L and SAM-B as the hybrid vision encoder supporting
# 1024 x 1024". `transformers` keeps the split: model type `deepseek_vl` (SigLIP + Llama only, checkpoint
# `deepseek-vl-1.3b-chat`, `configuration_deepseek_vl.py`) and `deepseek_vl_hybrid` (SigLIP + SAM + Llama, checkpoint
# `deepseek-vl-7b-chat`, `configuration_deepseek_vl_hybrid.py`). The 1.3B still gets 576 tokens, all of them SigLIP's
# $24 \times 24$ patches at 384 px. The paper's §3.1 describes only the hybrid and does not say that the smaller
# size lacks it.

# %%
sam_proj = DeepseekVLSamVisionProj(
    type("Cfg", (), {"output_channels": 256})(), output_size=384 // 16
)  # SAM-B's neck width 256; SigLIP-L/16 at 384 -> a 24 x 24 grid
with torch.no_grad():
    sam_map = torch.randn(1, 256, 1024 // 16, 1024 // 16)  # (B, 256, 64, 64): SAM-B's neck output at 1024 px
    up = F.interpolate(sam_map, size=(96, 96), mode="bilinear", align_corners=False)  # (B, 256, 96, 96)
    down = sam_proj(sam_map)  # (B, 1024, 24, 24): interpolate to 96, then two stride-2 convs
print("SAM-B neck", tuple(sam_map.shape[1:]), "-> interpolated", tuple(up.shape[1:]), "-> downsampled", tuple(down.shape[1:]))
print("SigLIP-L/16 at 384:", (384 // 16) ** 2, "tokens of width 1024; SAM cells:", down.shape[2] * down.shape[3])
print("fused: 576 tokens of width", 1024 + down.shape[1], "(channel concat) -> the VL adaptor -> the LLM width")

# %% [markdown]
# ### 2. The fusion, written out
#
# Let $s \in \mathbb{R}^{576 \times d_s}$ be SigLIP's tokens and $h \in \mathbb{R}^{576 \times d_h}$ SAM's. The
# adaptor of the official code (`deepseek_vl/models/projector.py`, `MlpProjector`, type
# `low_high_hybrid_split_mlp_gelu`, depth 2) is
# $$v = W_2\,\mathrm{GELU}\big([\,W_h h + b_h \;;\; W_s s + b_s\,]\big) + b_2, \qquad W_h, W_s: d \to D/2,\ W_2: D \to D,$$
# with SAM's half **first**. A linear map of the concatenation $[h; s]$ with a block-diagonal matrix is the same
# thing, so "concatenate along channels, then a two-layer MLP" (the paper's wording, §3.1) and "project each
# branch to $D/2$, then concatenate" (the code) agree. Two details of the code that the paper does not state:
#
# - SAM's output is the last block's neck map **plus** $\alpha\,\cdot$ (the same interpolate-and-downsample applied to a
#   second neck, `neck_hd`, on the output of SAM's first global-attention block); $\alpha$ (`hd_alpha_downsamples`
#   in `deepseek_vl/models/sam.py`, `high_res_vision_alpha` in `transformers`) starts at **zero**, so at
#   initialisation only the last layer counts.
# - The 384 input of SigLIP is the 1024 input resized (`HybridVisionTower.forward` in `clip_encoder.py`), so both
#   branches see the same padded square.
#
# **The paper's ablation of this adaptor** (2403.05525v2 §4.4, "Vision-Language Adaptor Design", Table 10, SigLIP +
# SAM): concatenating the two branches along the embedding dimension with the **Hybrid MLP** (per-branch layer, then
# a shared one: the adaptor above) averages **55.9** over its seven benchmarks, against 55.2 for a Shared MLP and
# 54.5 for Separate MLPs; concatenating along the sequence with token pooling along W or H gives 55.5 / 54.2
# (numbers read from the v2 text when this reading was written; the paper was not reachable to re-check them). The
# paper's evidence for having a second, vision-only encoder at all is Figure 10 (§4.4, "Vision Encoder
# Selection"): adding a vision-only self-supervised encoder lowers the stage-2 training loss; it plots losses and
# prints no numbers.
#
# The function below implements this with `torch.nn.functional` only, reading the weights of a tiny
# `transformers` model; §7 asserts it equals `DeepseekVLHybridModel.get_image_features`.

# %%
def layer_norm_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over channels of a (B, C, H, W) map."""
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), weight, bias, eps).permute(0, 3, 1, 2)


def sam_downsample(x: torch.Tensor, conv1: torch.Tensor, conv2: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, side, side): bilinear to 4*side, then two 3x3 stride-2 convs (derivation 1)."""
    x = F.interpolate(x, size=(4 * side, 4 * side), mode="bilinear", align_corners=False)  # (B, C, 4s, 4s)
    x = F.conv2d(x, conv1, stride=2, padding=1)  # (B, 2C, 2s, 2s)
    return F.conv2d(x, conv2, stride=2, padding=1)  # (B, 4C, s, s)


def hybrid_fusion(model, siglip_tokens, sam_last, sam_global):
    """DeepSeek-VL's fusion from scratch. siglip_tokens (B, s*s, d_s); sam_last (B, C, H, W) after SAM's neck;
    sam_global (B, H, W, d_sam) after SAM's first global-attention block. Returns (B, s*s, D)."""
    m = model.model
    side = int(math.isqrt(siglip_tokens.shape[1]))
    p, n = m.high_res_vision_proj, m.high_res_vision_neck
    g = sam_global.permute(0, 3, 1, 2)  # (B, d_sam, H, W)
    g = layer_norm_2d(F.conv2d(g, n.conv1.weight), n.layer_norm1.weight, n.layer_norm1.bias)  # neck_hd: 1x1 conv
    g = layer_norm_2d(F.conv2d(g, n.conv2.weight, padding=1), n.layer_norm2.weight, n.layer_norm2.bias)  # 3x3 conv
    high = sam_downsample(sam_last, p.conv1.weight, p.conv2.weight, side)  # (B, 4C, s, s)
    high = high + m.high_res_vision_alpha * sam_downsample(g, p.conv1.weight, p.conv2.weight, side)
    high = high.flatten(2).transpose(1, 2)  # (B, s*s, 4C): row-major cells, like SigLIP's patches
    a = m.aligner
    cat = torch.cat([F.linear(high, a.high_res_vision_proj.weight, a.high_res_vision_proj.bias),
                     F.linear(siglip_tokens, a.vision_proj.weight, a.vision_proj.bias)], dim=-1)  # SAM half first
    return F.linear(F.gelu(cat), a.proj.weight, a.proj.bias)  # (B, s*s, D)


# %% [markdown]
# ### 3. The three training stages and the text ratio (DeepSeek-VL §3.2)
#
# | stage | data | trained | frozen |
# |---|---|---|---|
# | 1. VL adaptor warm-up (§3.2.1) | image-text pairs, document OCR pairs | the VL adaptor | the vision encoder, the LLM |
# | 2. joint VL pre-training (§3.2.2) | Table 1: 70.0% text-only corpus, the rest VL | the LLM and the adaptor | the vision encoder |
# | 3. supervised fine-tuning (§3.2.3) | VL and pure-text chat (SFT) data | SigLIP-L, the adaptor, the LLM | SAM-B |
#
# (§3.2.1-§3.2.3 of 2403.05525v2 and the caption of its Figure 3; "SAM-B remains frozen due to the limited GPU
# memory", §3.2.3.) "SAM-B frozen" means the ViT body. The interpolate + two convs of derivation 1 live inside
# the SAM tower in the official code (`ImageEncoderViT.downsamples` in `sam.py`), and `HybridVisionTower` with
# `freeze_high=False` (its default, `clip_encoder.py`) freezes only the rest: every parameter whose name contains
# `downsamples` or `neck` stays trainable, so the convs, both necks and $\alpha$ (`hd_alpha_downsamples`) train
# with the adaptor. The training code and per-stage flags are not released, so which stages set `freeze_high`
# is not visible. Stage 1 alone cannot make a VLM: the adaptor is a small MLP, and "expanding the data scale at
# this stage does not provide benefits and may even lead to inferior performance" (§3.2.1, Table 8). The language
# question is stage 2. Training the LLM on multimodal data only gives "a stark and severe decline in language
# metrics" (§3.2.2, Figure 4, the 100%:0% curve). The paper varies the mixing ratio on its 1B model (§3.2.2, Figure 4;
# the released 1.3B is SigLIP-only, derivation 1, and the paper does not say which encoder its ablation model
# used). It finds that language data "significantly alleviates the decline" with no significant loss in
# multimodal performance, and opts "for a training ratio of language to multimodal data of roughly 7:3" (§3.2.2).
# Table 1 gives the text-only corpus 70.0%, and the modality warm-up lowers the language share from 1 "to the
# target ratio ... (e.g., 0.7)" (§4.4). Figure 4's caption writes the good ratio as "multimodal:language=70%:30%",
# the reverse of the body text, Table 1 and §4.4. Figure 4 is a plot: its values are not printed anywhere in the
# text, and no numbers could be read off it for this reading, so it gives the paper's findings as directions only.
# The §4.4 warm-up and modality-grouping ablations (Figures 8, 9) run at multimodal:language = 60%:40%. The
# Reproduction tests this mechanism on a toy.
#
# DeepSeek-VL2 (2412.10302 §4.1 and Table 2) keeps three stages but changes what trains. In its alignment stage
# the vision encoder **and** the adaptor train with the LLM frozen ("Fix language model" ✓ in stage 1 only, with a
# 0.1 learning-rate multiplier on the visual encoder in every stage). In pre-training and SFT "all model parameters
# ... are unlocked". Its pre-training mix turns the ratio round: "around 70% VL data to 30% text-only data"
# (§3.2), with a MoE LLM, so the two recipes are not a like-for-like comparison.
#
# ### 4. DeepSeek-VL2's tiling and token count (2412.10302 §2)
#
# Candidate canvases are $(m \cdot 384, n \cdot 384)$ with $m, n \ge 1$, $mn \le 9$: 23 grids. The bound 9 is the
# released `candidate_resolutions`, a config default, not the model's limit: for InfoVQA the paper evaluates with
# $mn \le 18$ (2412.10302 §5.1, footnote 2, "images with extreme aspect ratios and excessively large images").
# For an image of
# $W \times H$ pixels and a canvas $W_c \times H_c$, the scale that fits the image inside is
# $s = \min(W_c/W, H_c/H)$.
#
# **The paper's rule.** "For an input image of size (H, W), we calculate the padding area required for resizing it
# to each candidate resolution ... We select the resolution $(m_i \cdot 384, n_i \cdot 384)$ that minimizes the
# padding area" (2412.10302 §2, with footnote 1: resize until the long side matches, then pad the other side).
# Read literally, this picks $\arg\min_c\, W_c H_c - \lfloor sW \rfloor \lfloor sH \rfloor$.
#
# **The code's rule**, which the release runs. `select_best_resolution` in `processing_deepseek_vl_v2.py` first
# **maximises the effective resolution** $e = \min(\lfloor sW \rfloor \lfloor sH \rfloor, WH)$, the pixels that survive
# (upscaling adds none). Only among ties does it minimise the waste $W_c H_c - e$. The two rules differ because padding
# grows with the canvas: a literal minimum-padding rule prefers the smallest canvas whose shape is close to the
# image's, so a 4:3 photo stays on one 384 tile, however many pixels it has. The code's rule gives a large photo
# the largest canvas that keeps more of its pixels. The cell after (e) prints both rules side by side; the table in
# (f) and every token count here use the code's rule. The image is padded to the canvas with the mean
# colour (`ImageOps.pad`, which also resizes it to fit), cut into $n_w \times n_h$ tiles of 384, and a **global
# view** (the whole image padded to 384x384) is added in front.
#
# Each tile gives SigLIP-SO400M/14 $\lfloor 384/14 \rfloor = 27$ patches a side. The projector zero-pads 27 to 28
# and merges $2\times2$ neighbours into one token of $4\times1152$ channels (`F.unfold`): $14 \times 14 = 196$
# tokens per tile. With $h = w = 14$, a newline token after each row and one view separator, an image costs
# $$N = \underbrace{h(w+1)}_{\text{global, 210}} + \underbrace{1}_{\text{separator}} + \underbrace{(n_h h)(n_w w + 1)}_{\text{local tiles}}
# \tag{4}$$
# (`tokenize_with_images` in `processing_deepseek_vl_v2.py`; the layout is built in `prepare_inputs_embeds` of
# `modeling_deepseek_vl_v2.py`: the local tiles are stitched into one $(n_h h) \times (n_w w)$ grid *before* the
# newlines are added, so a row of tokens runs across all tiles of a tile row; §7 (4) checks this order). With three or more images the
# processor turns cropping off (`cropping=len(images) <= 2`) and the grid is forced to 1x1 (`tokenize_with_images`,
# `cropping=False` → `best_width = best_height = image_size`). Each image is then the 384 global view **plus** one
# 384 local tile (the same padded image): 2 SigLIP passes, $210 + 1 + 14 \cdot 15 = 421$ tokens, the same as any 1x1
# image. With the released grids an image costs at most $N(3,3) = 2{,}017$ tokens; with the InfoVQA setting
# ($mn \le 18$) the cap is higher.

# %% [markdown]
# ## Walkthrough
#
# ### (a) DeepSeek-VL preprocessing, from scratch
#
# The image's longer side is resized to the SAM size (1024 in the release, bicubic), the result is padded to a
# square with the mean colour, centred; the SigLIP input is that square resized to 384. The function below follows
# `transformers`' `DeepseekVLHybridImageProcessorPil`, the reference of §7. The official pipeline differs in two
# details:
#
# - **Size rounding.** The official `VLMImageProcessor.resize` (`deepseek_vl/models/image_processing_vlm.py`)
#   truncates, `max(int(height / max_size * image_size), min_size)`; `transformers` rounds,
#   `max(round(height * delta), min_size)`. grace_hopper.jpg (512x600) becomes 873x1024 officially, 874x1024 in
#   `transformers`.
# - **The 1024 -> 384 filter.** The official processor returns only the padded 1024 square; `HybridVisionTower`
#   (`clip_encoder.py`) resizes it to 384 *inside the model* with `torchvision.transforms.Resize(384,
#   antialias=True)`, whose default is **bilinear** (on a float tensor). `transformers` resizes the padded square
#   in the processor with PIL **bicubic** (on 8-bit pixels).
#
# The official pipeline is the one the released weights were trained with; §7 (1b) measures both differences at the
# real sizes. Here at toy sizes: SAM 64, SigLIP 32.

# %%
SAM_SIZE, SIGLIP_SIZE = 64, 32  # the release: 1024 and 384
SAM_MEAN, SAM_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CLIP's
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)


def pad_square(img: Image.Image, color: tuple) -> Image.Image:
    """Centre img on a square canvas of its longer side, filled with color."""
    w, h = img.size
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), color)
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def normalize(img: Image.Image, mean, std) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W) in [0, 1]
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def deepseek_vl_preprocess(img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (siglip_pixels (3, S, S), sam_pixels (3, H, H))."""
    w, h = img.size
    scale = SAM_SIZE / max(w, h)
    hi = img.resize((max(round(w * scale), 14), max(round(h * scale), 14)), Image.Resampling.BICUBIC)
    hi = pad_square(hi, tuple(int(c * 255) for c in SAM_MEAN))  # (H, H) square, mean colour
    lo = hi.resize((SIGLIP_SIZE, SIGLIP_SIZE), Image.Resampling.BICUBIC)  # from the padded square
    return normalize(lo, SIGLIP_MEAN, SIGLIP_STD), normalize(hi, SAM_MEAN, SAM_STD)


photo = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
lo_px, hi_px = deepseek_vl_preprocess(photo)
print("grace_hopper.jpg", photo.size, "(W, H) -> SigLIP", tuple(lo_px.shape), "| SAM", tuple(hi_px.shape))

# %% [markdown]
# ### (b) A tiny DeepSeek-VL built from a config
#
# SigLIP: 32 px, patch 4 (an 8x8 grid, standing in for 24x24); SAM: 64 px, patch 8, one windowed and one global
# block, neck width 16 (so the fused SAM width is $4 \cdot 16 = 64$); a 2-layer Llama of width 64. The image token
# id is 100. $\alpha$ is set to 0.5 so that the second neck is exercised (it is zero at initialisation).

# %%
cfg = DeepseekVLHybridConfig(
    vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, image_size=SIGLIP_SIZE, patch_size=4),
    high_res_vision_config=dict(model_type="sam_vision_model", hidden_size=32, output_channels=16, mlp_dim=64,
                                num_hidden_layers=2, num_attention_heads=2, image_size=SAM_SIZE, patch_size=8,
                                window_size=4, global_attn_indexes=[1]),
    text_config=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, vocab_size=128),
    image_token_id=100,
)
torch.manual_seed(0)
vlm = DeepseekVLHybridForConditionalGeneration(cfg).eval()
with torch.no_grad():
    vlm.model.high_res_vision_alpha.fill_(0.5)
N_IMG = (SIGLIP_SIZE // 4) ** 2  # image tokens per image: 64 here, 576 in the release
print(f"tiny DeepSeek-VL: {sum(p.numel() for p in vlm.parameters()):,} parameters, {N_IMG} image tokens per image")

# %% [markdown]
# ### (c) Run the two backbones, fuse with derivation 2
#
# The backbones (SigLIP's ViT, SAM's ViTDet) are the library's; the fusion is ours. SAM's hidden states are
# indexed from the patch embedding, so the first global block's output is `hidden_states[global_index + 1]`.

# %%
with torch.no_grad():
    pix_lo, pix_hi = lo_px[None], hi_px[None]  # (1, 3, 32, 32), (1, 3, 64, 64)
    siglip_out = vlm.model.vision_model(pix_lo).last_hidden_state  # (1, 64, 32)
    sam_out = vlm.model.high_res_vision_model(pixel_values=pix_hi, output_hidden_states=True)
    sam_last = sam_out.last_hidden_state  # (1, 16, 8, 8): after SAM's own neck
    sam_global = sam_out.hidden_states[cfg.high_res_vision_config.global_attn_indexes[0] + 1]  # (1, 8, 8, 32)
    fused = hybrid_fusion(vlm, siglip_out, sam_last, sam_global)  # (1, 64, 64)
print("SigLIP", tuple(siglip_out.shape), "| SAM last", tuple(sam_last.shape), "| SAM global", tuple(sam_global.shape),
      "-> fused", tuple(fused.shape))

# %% [markdown]
# ### (d) DeepSeek-VL2: the candidate grids and the best fit
#
# `shared.tiling.tile_grids(1, 9)` lists the 23 grids `(cols, rows)` with `cols * rows <= 9`;
# `shared.tiling.best_fit_grid` implements the rule of derivation 4. Below, an independent transcription of the
# official `select_best_resolution` (widths first, in pixels), which §7 compares with both.

# %%
TILE = 384
GRIDS = tile_grids(1, 9)  # [(cols, rows)], sorted by tile count
CANDIDATES = [(c * TILE, r * TILE) for c, r in GRIDS]  # (width, height) in pixels, as the official processor takes


def official_select_best_resolution(image_size, candidate_resolutions):
    """processing_deepseek_vl_v2.py, select_best_resolution, transcribed: image_size = (W, H)."""
    ow, oh = image_size
    best, max_eff, min_waste = None, 0, float("inf")
    for cw, ch in candidate_resolutions:
        s = min(cw / ow, ch / oh)
        eff = min(int(ow * s) * int(oh * s), ow * oh)
        waste = cw * ch - eff
        if eff > max_eff or (eff == max_eff and waste < min_waste):
            best, max_eff, min_waste = (cw, ch), eff, waste
    return best


print(len(GRIDS), "grids:", GRIDS)

# %% [markdown]
# ### (e) Token count of eq. (4), and the layout it counts
#
# `vl2_tokens` is eq. (4). `vl2_layout` builds the sequence the way `prepare_inputs_embeds` does: the global grid
# plus a newline column, the separator, then the local tiles stitched into one grid with
# `"(th tw) (h w) d -> (th h) (tw w) d"` plus a newline column. It takes one value per token (feature ids here,
# $d = 1$; the official code moves $D$-wide embeddings the same way) and marks newlines -1 and the separator -2.
# §7 checks its length against eq. (4) and its order against an index canvas cut into tiles.

# %%
H_TOK = math.ceil((TILE // 14) / 2)  # 27 patches -> 14 tokens a side after the 2x2 merge
NEWLINE, SEPARATOR = -1, -2  # marks of the two special tokens in vl2_layout's output


def vl2_tokens(cols: int, rows: int, h: int = H_TOK) -> int:
    """Eq. (4): image tokens of DeepSeek-VL2 for a cols x rows tile grid."""
    return h * (h + 1) + 1 + (rows * h) * (cols * h + 1)


def vl2_layout(glob: torch.Tensor, tiles: torch.Tensor, cols: int, rows: int) -> torch.Tensor:
    """prepare_inputs_embeds' image sequence. glob (h*h,) global-view values; tiles (rows*cols, h*h), the local
    tiles row by row (as split_tiles orders them). Returns (h(h+1) + 1 + rows*h*(cols*h+1),)."""
    h = math.isqrt(glob.numel())
    g = torch.cat([glob.reshape(h, h), torch.full((h, 1), NEWLINE)], dim=1).flatten()  # (h * (h + 1),)
    grid = tiles.reshape(rows, cols, h, h).permute(0, 2, 1, 3).reshape(rows * h, cols * h)  # "(th h) (tw w)"
    local = torch.cat([grid, torch.full((rows * h, 1), NEWLINE)], dim=1).flatten()  # (rows*h * (cols*h + 1),)
    return torch.cat([g, torch.tensor([SEPARATOR]), local])


def placeholder_layout(cols: int, rows: int, h: int = H_TOK) -> torch.Tensor:
    return vl2_layout(torch.zeros(h * h, dtype=torch.long), torch.zeros(rows * cols, h * h, dtype=torch.long), cols, rows)


lay = placeholder_layout(3, 2)
print("3x2 grid:", len(lay), "positions =", int((lay >= 0).sum()), "features +", int((lay == NEWLINE).sum()),
      "newlines +", int((lay == SEPARATOR).sum()), "separator")
lay11 = placeholder_layout(1, 1)  # the > 2 images case: cropping off, grid forced to 1x1, global view + one local tile
print("1x1 grid (also each image when > 2 images):", len(lay11), "positions,", int((lay11 >= 0).sum()),
      "features = 2 SigLIP passes x", H_TOK**2)
assert int((lay11 >= 0).sum()) == 2 * (27 + 1) ** 2 // 4 and len(lay11) == vl2_tokens(1, 1) == 421

# %% [markdown]
# **The paper's wording against the code's rule.** `paper_min_padding` is the literal rule of 2412.10302 §2
# (derivation 4): the least padding after a fit-inside resize, ties to the fewer tiles. The official rule is the
# transcription above. For each size: the grid each rule picks, its padding in px² and its token count (eq. 4).

# %%
def padding_area(image_size, canvas) -> int:
    """Canvas pixels left empty after resizing image_size = (W, H) to fit inside canvas = (W_c, H_c)."""
    s = min(canvas[0] / image_size[0], canvas[1] / image_size[1])
    return canvas[0] * canvas[1] - int(image_size[0] * s) * int(image_size[1] * s)


def paper_min_padding(image_size, candidate_resolutions):
    """2412.10302 §2 read literally: the canvas that needs the least padding; min keeps the fewest tiles on ties."""
    return min(candidate_resolutions, key=lambda c: padding_area(image_size, c))


def rule_line(size) -> str:
    out = []
    for name, pick in (("code", official_select_best_resolution(size, CANDIDATES)),
                       ("paper, literal", paper_min_padding(size, CANDIDATES))):
        c, r = pick[0] // TILE, pick[1] // TILE
        out.append(f"{name}: {c}x{r}, padding {padding_area(size, pick):,} px², {vl2_tokens(c, r):,} tokens")
    return f"{size[0]}x{size[1]}: " + " | ".join(out)


for size in [(4032, 3024), (200, 150), (3000, 1000), (1920, 1080)]:
    print(rule_line(size))

# %% [markdown]
# ### (f) The token budget of real photo sizes
#
# For each size: the chosen grid, the canvas, the share of the canvas the image fills, eq. (4), and for contrast
# the grid InternVL's closest-aspect-ratio rule (`shared.tiling.closest_ratio_grid`, 384 tiles, at most 9) would
# pick. A 384 tile costs 196 features; what grows the budget is the tile count, capped at 9 local tiles (2,017
# tokens) by the released `candidate_resolutions` ($mn \le 9$). That cap is a config default, not the model's limit:
# for InfoVQA the paper evaluates with $mn \le 18$ (2412.10302 §5.1, footnote 2). One pixel past 384 (385x384)
# already buys a second tile: 617 tokens instead of 421.

# %%
SIZES = [(640, 480), (600, 512), (1920, 1080), (1080, 1920), (4032, 3024), (3024, 4032), (3000, 1000),
         (1000, 3000), (4000, 300), (384, 384), (385, 384), (200, 150)]  # (W, H)
print(f"{'W x H':>11} {'grid c x r':>10} {'canvas':>11} {'filled':>7} {'tokens':>7} {'closest-ratio rule':>19}")
budget = {}
for w, h in SIZES:
    cols, rows = best_fit_grid(h, w, tile_size=TILE, grids=GRIDS)
    s = min(cols * TILE / w, rows * TILE / h)
    fill = int(w * s) * int(h * s) / (cols * rows * TILE**2)
    budget[(w, h)] = (cols, rows, vl2_tokens(cols, rows))
    ic, ir = closest_ratio_grid(h, w, tile_size=TILE, min_tiles=1, max_tiles=9)  # InternVL's rule, for contrast
    print(f"{w:>5}x{h:<5} {cols:>6}x{rows:<3} {cols * TILE:>5}x{rows * TILE:<5} {fill:>7.2f} {vl2_tokens(cols, rows):>7}"
          f" {ic:>15}x{ir}")
print("DeepSeek-VL, any size: 576 tokens (one 1024 square, 1024 px = 24 x 24 cells)")

# %% [markdown]
# ### (g) Tiling a real photo
#
# grace_hopper.jpg is 512 x 600 (W x H). Its grid, the padded canvas cut with `shared.tiling.split_tiles`, and the
# global view (`ImageOps.pad` to 384, as the official processor does).

# %%
mean_rgb = tuple(int(x * 255) for x in (0.5, 0.5, 0.5))  # SigLIP's mean, the official pad colour
cols, rows = best_fit_grid(photo.height, photo.width, tile_size=TILE, grids=GRIDS)
canvas = ImageOps.pad(photo, (cols * TILE, rows * TILE), color=mean_rgb)  # resize to fit, centre, pad
global_view = ImageOps.pad(photo, (TILE, TILE), color=mean_rgb)
canvas_t = torch.from_numpy(np.array(canvas)).permute(2, 0, 1)  # (3, rows*384, cols*384) uint8
tiles = split_tiles(canvas_t, TILE)  # (rows*cols, 3, 384, 384), row by row
print(f"grace_hopper {photo.size} -> grid {cols}x{rows}, canvas {canvas.size}, {tiles.shape[0]} tiles + 1 global view, "
      f"{vl2_tokens(cols, rows)} tokens (DeepSeek-VL: 576)")

fig, axes = plt.subplots(1, 3, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 2, 2]})
axes[0].imshow(global_view)
axes[0].set_title("global view 384x384\n14x(14+1) = 210 tokens")
axes[1].imshow(canvas)
for i in range(1, cols):
    axes[1].axvline(i * TILE, color="red", lw=2)
for i in range(1, rows):
    axes[1].axhline(i * TILE, color="red", lw=2)
axes[1].set_title(f"local views: {cols}x{rows} tiles of 384\n{rows * 14}x({cols * 14}+1) = "
                  f"{rows * 14 * (cols * 14 + 1)} tokens")
toks = [budget[s][2] for s in SIZES[:9]]
axes[2].barh(range(9), toks, color="tab:blue", label="DeepSeek-VL2 (eq. 4)")
axes[2].axvline(576, color="tab:orange", ls="--", label="DeepSeek-VL (576)")
axes[2].set_yticks(range(9), [f"{w}x{h} ({budget[(w, h)][0]}x{budget[(w, h)][1]})" for w, h in SIZES[:9]])
axes[2].set_xlabel("image tokens")
axes[2].set_xlim(0, 2900)  # room on the right for the legend, clear of the short bottom bars
axes[2].legend(fontsize=8, loc="lower right")
axes[2].set_title("token budget per image (grid c x r)")
for a in axes[:2]:
    a.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### (h) The 2x2 merge of VL2's projector
#
# `shared.tiling.unfold_merge` pads a 27x27 grid to 28x28 and merges 2x2 neighbours channel-major (the order of
# `F.unfold`); the official `MlpProjector.forward` (type `downsample_mlp_gelu`) is transcribed below for §7.

# %%
def official_downsample(x: torch.Tensor, ratio: int = 2) -> torch.Tensor:
    """modeling_deepseek_vl_v2.py MlpProjector.forward, the downsample branch: (B, h*w, C) -> (B, h'*w', C*r*r)."""
    bs, hw, c = x.shape
    h = w = int(hw**0.5)
    pad = ratio - h % ratio if h % ratio else 0
    x = x.reshape(bs, h, w, c)
    if pad > 0:
        x = F.pad(x, (0, 0, 0, pad, 0, pad), "constant", 0)
    x = x.permute(0, 3, 1, 2)  # (B, C, H, W)
    x = F.unfold(x, kernel_size=ratio, stride=ratio, padding=0)  # (B, C*r*r, H*W/r^2)
    return x.permute(0, 2, 1)


feat = torch.randn(2, 27 * 27, 24)  # (tiles, 729 patches, C): SO400M's width is 1152, 24 here
merged = unfold_merge(feat.reshape(2, 27, 27, 24))  # (2, 14, 14, 96)
print("27x27 patches ->", tuple(merged.shape[1:3]), "=", merged.shape[1] * merged.shape[2], "tokens of", merged.shape[3],
      "channels; the padded row and column make", 28 * 28 - 27 * 27, "of the 784 merged inputs zeros")

# %% [markdown]
# ### (i) The language model of DeepSeek-VL2
#
# | variant | activated, whole model (abstract) | language model (§1) | README (`inference.py` notes) | attention (Table 1) |
# |---|---|---|---|---|
# | DeepSeek-VL2-Tiny | 1.0B | DeepSeekMoE-3B, 0.57B activated | 3.37B total, 1B activated | Multi-Head Attention |
# | DeepSeek-VL2-Small | 2.8B | DeepSeekMoE-16B, 2.4B activated | 16.1B total, 2.4B activated | MLA (rank=512) |
# | DeepSeek-VL2 | 4.5B | DeepSeekMoE-27B, 4.1B activated | 27.5B total, 4.2B activated | MLA (rank=512) |
#
# (The attention row and the LLM sizes are read from §1, Table 1 and Table 2 of the report's text. Table 1 also
# lists 64 / 64 / 72 routed experts, 2 shared, top-6, and softmax / softmax / sigmoid routing.)
#
# The attention kind is a config switch in the official code: `use_mla` in `configuration_deepseek.py`
# ("Use multi-latent attention or multi-head attention"). MLA caches one latent of $d_c$ numbers plus the decoupled
# RoPE key of $d_h^R$ numbers per token and layer ($d_c + d_h^R$, e.g. 512 + 64) instead of $2 n_h d_h$ keys and
# values: with VL2's 1,000-2,000 image tokens per photo, the cache is what
# grows. MoE routes each token to a few fine-grained routed experts plus always-on shared experts. This reading
# does not re-derive them: see F3 (MLA and its KV cache), L3 (DeepSeekMoE) and L4 (DeepSeek-V2).

# %% [markdown]
# ### (j) Limits of the two designs
#
# - **DeepSeek-VL: one square at a fixed cost.** Every image is letterboxed into a 1024 square and read as 576
#   tokens. A 4000x300 strip keeps a content band of $\lfloor 300/4000 \cdot 1024 \rfloor = 76$ px for SAM and about
#   28 px for SigLIP; the rest of the square is padding. VL2 gives the same strip 9x1 tiles (table (f)).
# - **DeepSeek-VL2: the caps of the release.** The released `candidate_resolutions` ($mn \le 9$) cap the kept
#   resolution at 9 tiles of 384 px (e.g. 1152x1152 as 3x3, 3456x384 as 9x1); larger images are downscaled to fit. With three or more images
#   tiling is off and each image is read at 384 px (421 tokens).
# - **Context.** Both READMEs list a sequence length of 4,096 for every released model. Two photos at VL2's cap take
#   $2 \cdot 2{,}017 = 4{,}034$ of them; that is likely why the processor stops tiling beyond two images (the
#   reading's inference: the paper states the rule, not its reason).
# - **MoE memory.** Memory follows the total parameters, not the activated ones. The VL2 README: "You may need 80GB
#   GPU memory to run this script with deepseek-vl2-small" (16.1B total, 2.4B activated), 40 GB with incremental
#   prefilling (`chunk_size=512`, on a 40 GB A100); DeepSeek-VL2-Tiny (3.37B total) "can be run on a single GPU < 40GB".

# %% [markdown]
# ## Check against a reference
#
# **(1) Preprocessing** vs `transformers`' `DeepseekVLHybridImageProcessorPil` at the same toy sizes and means,
# on the real photo and on a wide crop of it (padding at the top and bottom).

# %%
proc = DeepseekVLHybridImageProcessorPil(
    size={"height": SIGLIP_SIZE, "width": SIGLIP_SIZE}, high_res_size={"height": SAM_SIZE, "width": SAM_SIZE},
    image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD, high_res_image_mean=SAM_MEAN, high_res_image_std=SAM_STD,
)
wide = photo.crop((0, 100, 512, 300))  # 512 x 200: padded top and bottom
errs = []
for img in (photo, wide):
    ref = proc(images=img, return_tensors="pt")
    lo, hi = deepseek_vl_preprocess(img)
    errs.append(assert_close(lo, ref["pixel_values"][0], atol=1e-5, name="SigLIP pixels"))
    errs.append(assert_close(hi, ref["high_res_pixel_values"][0], atol=1e-5, name="SAM pixels"))
print(f"preprocessing vs DeepseekVLHybridImageProcessorPil (2 images, both branches): max abs error {error_bound(max(errs))}")

# %% [markdown]
# **(1b) The official pipeline against `transformers`, at the real sizes** (1024 / 384, grace_hopper). A
# transcription of `VLMImageProcessor.resize` (`int()` sizes, bicubic, `expand2square` with CLIP's mean) and of
# `HybridVisionTower`'s in-model resize (`torchvision.transforms.Resize(384, antialias=True)` on a float tensor is
# `F.interpolate(..., mode="bilinear", antialias=True)`; torchvision is not installed here). Each tower then
# normalises its own input (`CLIPVisionTower.image_norm`, SigLIP with mean = std = 0.5, as in `clip_encoder.py`'s
# example config). This measures a difference, it asserts no equality: the rounding shifts the SAM image by a
# pixel column, and the filter changes the SigLIP input even on the same padded square.

# %%
def official_resize_size(w: int, h: int, image_size: int = 1024, min_size: int = 14) -> tuple[int, int]:
    """VLMImageProcessor.resize: (W, H) of the resized image before padding; int() truncates."""
    m = max(w, h)
    return max(int(w / m * image_size), min_size), max(int(h / m * image_size), min_size)


proc_real = DeepseekVLHybridImageProcessorPil(image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD,
                                             high_res_image_mean=SAM_MEAN, high_res_image_std=SAM_STD)
ref_real = proc_real(images=photo, return_tensors="pt")  # SigLIP (1, 3, 384, 384), SAM (1, 3, 1024, 1024)
w_off = official_resize_size(*photo.size)
w_hf = (round(photo.width * 1024 / max(photo.size)), round(photo.height * 1024 / max(photo.size)))
sam_off = pad_square(photo.resize(w_off, Image.Resampling.BICUBIC), tuple(int(c * 255) for c in SAM_MEAN))
sam_off = normalize(sam_off, SAM_MEAN, SAM_STD)  # (3, 1024, 1024)
d_sam = (sam_off - ref_real["high_res_pixel_values"][0]).abs()
sq01 = ref_real["high_res_pixel_values"] * torch.tensor(SAM_STD)[:, None, None] + torch.tensor(SAM_MEAN)[:, None, None]
lo_off = F.interpolate(sq01, size=(384, 384), mode="bilinear", antialias=True, align_corners=False)  # in the model
d_lo = ((lo_off - 0.5) / 0.5 - ref_real["pixel_values"]).abs()  # same padded square, two filters
print(f"SAM image before padding (W x H): official {w_off[0]}x{w_off[1]}, transformers {w_hf[0]}x{w_hf[1]}; "
      f"SAM pixels differ on {(d_sam.amax(0) > 1e-3).float().mean():.0%} of positions")
print(f"SigLIP input from the same padded square, bilinear-antialias (official) vs PIL bicubic (transformers): "
      f"mean |diff| {d_lo.mean():.3f}, max |diff| {d_lo.max():.2f} (normalised units, range [-1, 1])")

# %% [markdown]
# **(2) The fusion** (derivation 2) vs `DeepseekVLHybridModel.get_image_features` on the same weights and pixels,
# batch 2 (the photo and the wide crop).

# %%
batch_lo = torch.stack([deepseek_vl_preprocess(im)[0] for im in (photo, wide)])  # (2, 3, 32, 32)
batch_hi = torch.stack([deepseek_vl_preprocess(im)[1] for im in (photo, wide)])  # (2, 3, 64, 64)
with torch.no_grad():
    ref_feat = vlm.model.get_image_features(batch_lo, batch_hi, return_dict=True).pooler_output  # (2, 64, 64)
    so = vlm.model.vision_model(batch_lo).last_hidden_state
    sa = vlm.model.high_res_vision_model(pixel_values=batch_hi, output_hidden_states=True)
    ours = hybrid_fusion(vlm, so, sa.last_hidden_state, sa.hidden_states[cfg.high_res_vision_config.global_attn_indexes[0] + 1])
err = assert_close(ours, ref_feat, atol=1e-5, name="hybrid fusion")
print(f"fusion vs get_image_features, batch 2: max abs error {error_bound(err)}")
with torch.no_grad():  # the check can fail: SigLIP's half first and no alpha branch change the features
    a = vlm.model.aligner
    sam_only = sam_downsample(sa.last_hidden_state, vlm.model.high_res_vision_proj.conv1.weight,
                              vlm.model.high_res_vision_proj.conv2.weight, 8).flatten(2).transpose(1, 2)
    swapped = a.proj(F.gelu(torch.cat([a.vision_proj(so), a.high_res_vision_proj(sam_only)], -1)))
print(f"a wrong order (SigLIP half first, no alpha branch) differs by {(swapped - ref_feat).abs().max():.2f}")

# %% [markdown]
# **(3) End to end.** Our own preprocessing, our own prompt of image tokens, our fused features written into the
# embeddings, then the tiny Llama and the LM head; against `DeepseekVLHybridForConditionalGeneration` called with
# `input_ids`, `pixel_values` and `high_res_pixel_values`. Batch 2, the second prompt left-padded (the attention
# mask and position ids of a padded row).

# %%
IMG_ID, PAD_ID = cfg.image_token_id, 0
prompts = [[1, 5, 6] + [IMG_ID] * N_IMG + [7, 8, 9], [PAD_ID, PAD_ID, 1] + [IMG_ID] * N_IMG + [11, 12, 13]]
input_ids = torch.tensor(prompts)  # (2, 70)
attn = (input_ids != PAD_ID).long()
pos = (attn.cumsum(-1) - 1).clamp(min=0)  # positions count real tokens only
with torch.no_grad():
    ref_logits = vlm(input_ids=input_ids, pixel_values=batch_lo, high_res_pixel_values=batch_hi,
                     attention_mask=attn, position_ids=pos).logits  # (2, 70, 128)
    emb = vlm.model.language_model.embed_tokens(input_ids)  # (2, 70, 64)
    emb = emb.clone()
    emb[input_ids == IMG_ID] = ours.reshape(-1, ours.shape[-1])  # image k's 64 tokens, in order
    hid = vlm.model.language_model(inputs_embeds=emb, attention_mask=attn, position_ids=pos).last_hidden_state
    our_logits = vlm.lm_head(hid)
real = attn.bool()
err = assert_close(our_logits[real], ref_logits[real], atol=1e-4, name="end-to-end logits")
print(f"end-to-end logits (batch 2, left padding) vs DeepseekVLHybridForConditionalGeneration: max abs error {error_bound(err)}")

# %% [markdown]
# **(4) Tiling:** `shared.tiling.best_fit_grid` vs the transcribed official `select_best_resolution` (width first)
# vs `transformers.image_processing_utils.select_best_resolution` (height first), on the table's sizes and 3,000
# random sizes from 1 to 6,000 px. Then `split_tiles` vs the official crop loop (`local_view.crop` row by row). Then
# the layout: every token of the stitched local canvas gets its own id, the id canvas is cut into tiles with
# `split_tiles`, and `vl2_layout` of those tiles must have eq. (4)'s length and read the canvas back row by row,
# across tile boundaries, with a newline after each row (a layout without the tile-stitching permute fails here on
# every grid with two or more columns). Last, `unfold_merge` vs the official projector.

# %%
rng = random.Random(0)
sizes = SIZES + [(rng.randint(1, 6000), rng.randint(1, 6000)) for _ in range(3000)]
mismatch = 0
for w, h in sizes:
    c, r = best_fit_grid(h, w, tile_size=TILE, grids=GRIDS)
    off = official_select_best_resolution((w, h), CANDIDATES)
    hf = select_best_resolution((h, w), [(ch, cw) for cw, ch in CANDIDATES])
    mismatch += (off != (c * TILE, r * TILE)) + (hf != (r * TILE, c * TILE))
assert mismatch == 0
print(f"best_fit_grid == official select_best_resolution == transformers on {len(sizes)} sizes: {mismatch} mismatches")

crops = torch.stack([torch.from_numpy(np.array(canvas.crop((j, i, j + TILE, i + TILE)))).permute(2, 0, 1)
                     for i in range(0, rows * TILE, TILE) for j in range(0, cols * TILE, TILE)])
assert torch.equal(crops, tiles)
print(f"split_tiles == the official crop loop on grace_hopper's {cols}x{rows} canvas: exact")

for c, r in GRIDS:  # ids: global view 0..195; local token (y, x) of the stitched canvas gets 196 + y * (14c) + x
    canvas_ids = H_TOK**2 + torch.arange(r * H_TOK * c * H_TOK).reshape(1, r * H_TOK, c * H_TOK)  # (1, 14r, 14c)
    tile_ids = split_tiles(canvas_ids, H_TOK).reshape(c * r, -1)  # (tiles, 196), cut row by row like the crops
    seq = vl2_layout(torch.arange(H_TOK**2), tile_ids, c, r)
    expected = torch.cat([torch.arange(H_TOK**2).reshape(H_TOK, H_TOK), torch.full((H_TOK, 1), NEWLINE)], 1).flatten()
    expected = torch.cat([expected, torch.tensor([SEPARATOR]),
                          torch.cat([canvas_ids[0], torch.full((r * H_TOK, 1), NEWLINE)], 1).flatten()])
    assert len(seq) == vl2_tokens(c, r) and int((seq >= 0).sum()) == 196 * (1 + c * r)
    assert torch.equal(seq, expected), f"layout of {c}x{r}"
print("eq. (4) == the prepare_inputs_embeds layout for all 23 grids (features = 196 x (1 + tiles)), and its local part"
      " reads the canvas back row by row across tile boundaries")

for side in (27, 14, 9):
    x = torch.randn(3, side * side, 8)
    a = unfold_merge(x.reshape(3, side, side, 8)).reshape(3, -1, 32)
    err = assert_close(a, official_downsample(x), atol=0.0, name=f"unfold_merge {side}x{side}")
print(f"unfold_merge == official MlpProjector downsample (27x27 odd, 14x14 even, 9x9): max abs error {error_bound(err)}")

# %% [markdown]
# **Version notes.** (i) `transformers`' `DeepseekVLSamVisionProj` interpolates to `4 * output_size` where the
# official `sam.py` hard-codes `(96, 96)`; with SigLIP-L/16 at 384, `output_size = 24` and the two agree; they differ
# only for configs the release never uses (exercise 2). (ii) **Preprocessing, official vs `transformers`.** The
# official pipeline (`VLMImageProcessor` + `HybridVisionTower`) is the one the released weights were trained with,
# so where the two differ the official one is right. Its size rounding truncates where `transformers` rounds: the
# two differ by one pixel whenever the scaled short side has a fractional part above one half, or exactly one half with an odd integer part (Python's `round` goes to the
# even neighbour; grace_hopper:
# 873.8 -> 873 vs 874, (1b)); a square image, or one whose scaled side has a fractional part below one half, is unaffected. Its
# 1024 -> 384 resize is bilinear with antialiasing on float pixels, inside the model, where `transformers` uses PIL
# bicubic in the processor: this difference fires on every image (mean |diff| 0.008, max 0.24 on grace_hopper).
# The checks (1)-(3) above therefore pin the reading to `transformers`, not to the released pipeline. (iii) **The
# pad colour.** In both pipelines the SigLIP input is a resize of the already padded SAM square, so its padding
# always has the SAM pad colour: `high_res_image_mean` in `transformers` (CLIP's by default), the processor's
# `image_mean` officially. `transformers`' `image_mean` only feeds a `pad_to_square` of an already square image (a
# no-op) and the SigLIP normalisation, so passing `image_mean=(0.5,) * 3` as above changes the normalisation, not
# the pad colour. The released checkpoints' processor configs set their own values; pass them explicitly. (iv)
# `transformers` 5.23.0 has no DeepSeek-VL2 model; the tiling and token count above are checked against the
# official repository's code instead, and `select_best_resolution` against `transformers`' LLaVA-NeXT helper, which
# is the same rule.

# %% [markdown]
# ## Reproduction
#
# **Claim (DeepSeek-VL §3.2.2, Figure 4).** Training the LLM on multimodal data alone degrades its language
# ability; keeping pure text in the mix preserves it, "the inclusion of language data does not lead to a
# significant loss in multimodal performance". The final recipe is "language to multimodal data of roughly 7:3"
# (§3.2.2; Table 1: 70.0% text). Figure 4's caption says "multimodal:language=70%:30%", the other way round (see
# derivation 3). The paper's numbers for this ablation exist only as curves in Figure 4, run on the 1B model;
# they are not printed in the text, and they could not be read for this reading (which benchmarks the panels
# show is also not verified). The comparison below is therefore with the paper's direction only, not with a
# number. The paper does print numbers for the **outcome** of the 7:3 recipe (§4.2, Table 7): DeepSeek-VL-7B
# against its base DeepSeek-LLM-7B scores "68.4 vs. 68.5 on HellaSwag", beats it on MMLU and AGIEval, and shows
# "a certain degree of decline in mathematics (GSM8K)". §3.2.2's conclusion (3) names the trade-off: "the
# performance of different modalities is strongly correlated with their respective proportions in the training
# dataset".
#
# **Toy.** A tiny "LM" (embedding -> 2-layer MLP trunk -> head over 32 text tokens + 8 answer tokens) is first
# pre-trained on a text task: next-token prediction on a random bigram chain (the best possible loss is the
# chain's entropy). Then it learns a multimodal task: a 16-d "image" vector goes through a linear adaptor into
# the trunk, and the answer token is the argmax of a fixed random linear map of it. Arms of the multimodal stage,
# all starting from the **same** pre-trained weights of each seed and all seeing **the same 400 steps x 64 samples**:
#
# - text share 0% (multimodal only), 30%, **70%** (the paper's 7 : 3): 0, 19 or 45 of each batch's 64 samples;
# - ablation: 0% text with the LM **frozen**, only the adaptor trained (DeepSeek-VL's stage 1);
# - ablation: 70% text for the first half only, then 0% (text that is dropped).
#
# 8 seeds; all seeds train at once as one batched model (`torch.bmm`), so a seed is an independent model.

# %%
V_TEXT, N_ANS, D_EMB, D_HID, Z_DIM = 32, 8, 32, 64, 16
VOCAB = V_TEXT + N_ANS
SEEDS, STEPS, BATCH = 8, 400, 64


def make_tasks(n_seeds: int):
    g = torch.Generator().manual_seed(1234)
    trans = torch.softmax(3.0 * torch.randn(n_seeds, V_TEXT, V_TEXT, generator=g), -1)  # a bigram chain per seed
    w_ans = torch.randn(n_seeds, Z_DIM, N_ANS, generator=g)  # the multimodal task of each seed
    return trans, w_ans


def init_params(n_seeds: int) -> dict:
    g = torch.Generator().manual_seed(99)

    def lin(i, o):
        return torch.randn(n_seeds, i, o, generator=g) / math.sqrt(i)

    return {"emb": torch.randn(n_seeds, VOCAB, D_EMB, generator=g), "adapt": lin(Z_DIM, D_EMB),
            "w1": lin(D_EMB, D_HID), "w2": lin(D_HID, D_HID), "head": lin(D_HID, VOCAB)}


def trunk_logits(p: dict, x: torch.Tensor) -> torch.Tensor:
    """x (S, n, D_EMB) -> logits (S, n, VOCAB)."""
    return F.gelu(F.gelu(x @ p["w1"]) @ p["w2"]) @ p["head"]


def text_logits(p, tok):  # tok (S, n) -> (S, n, VOCAB)
    return trunk_logits(p, torch.gather(p["emb"], 1, tok[..., None].expand(-1, -1, D_EMB)))


def mm_logits(p, z):  # z (S, n, Z_DIM) -> (S, n, VOCAB)
    return trunk_logits(p, z @ p["adapt"])


def text_batch(trans, n, g):
    x = torch.randint(0, V_TEXT, (trans.shape[0], n), generator=g)  # (S, n)
    probs = torch.gather(trans, 1, x[..., None].expand(-1, -1, V_TEXT))  # (S, n, V_TEXT)
    y = torch.multinomial(probs.reshape(-1, V_TEXT), 1, generator=g).reshape(x.shape)
    return x, y


def mm_batch(w_ans, n, g):
    z = torch.randn(w_ans.shape[0], n, Z_DIM, generator=g)
    return z, V_TEXT + (z @ w_ans).argmax(-1)


def ce(logits, y):  # per-seed mean cross-entropy, summed over seeds (seeds are independent models)
    return F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1), reduction="none").reshape(y.shape).mean(1)


def train(p, steps, text_share, trans, w_ans, g, trainable, pretrain=False):
    p = {k: v.clone().requires_grad_(k in trainable) for k, v in p.items()}
    opt = torch.optim.Adam([p[k] for k in trainable], lr=1e-2)
    seen = {"text": 0, "mm": 0}
    for step in range(steps):
        share = text_share(step) if callable(text_share) else text_share
        n_text = BATCH if pretrain else round(share * BATCH)
        loss = torch.zeros(trans.shape[0])
        if n_text:
            x, y = text_batch(trans, n_text, g)
            loss = loss + ce(text_logits(p, x), y) * n_text / BATCH
        if BATCH - n_text:
            z, c = mm_batch(w_ans, BATCH - n_text, g)
            loss = loss + ce(mm_logits(p, z), c) * (BATCH - n_text) / BATCH
        seen["text"] += n_text
        seen["mm"] += BATCH - n_text
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    return {k: v.detach() for k, v in p.items()}, seen


@torch.no_grad()
def evaluate(p, trans, w_ans):
    g = torch.Generator().manual_seed(777)
    x, y = text_batch(trans, 4096, g)
    z, c = mm_batch(w_ans, 4096, g)
    return ce(text_logits(p, x), y), (mm_logits(p, z).argmax(-1) == c).double().mean(1)


# %% [markdown]
# The training runs (progress and time in this cell; the next prints the rounded results).

# %% tags=["nbval-ignore-output"]
from tqdm.auto import tqdm

trans, w_ans = make_tasks(SEEDS)
entropy = -(trans * trans.log()).sum(-1).mean(1)  # (S,): the best text loss each chain allows
g = torch.Generator().manual_seed(0)
pre, _ = train(init_params(SEEDS), STEPS, 1.0, trans, w_ans, g, trainable=["emb", "w1", "w2", "head"], pretrain=True)
text_pre, _ = evaluate(pre, trans, w_ans)
ALL = ["emb", "adapt", "w1", "w2", "head"]
ARMS = {
    "0% text": (0.0, ALL),
    "30% text": (0.3, ALL),
    "70% text (paper 7:3)": (0.7, ALL),
    "abl: 0% text, LM frozen": (0.0, ["adapt"]),
    "abl: 70% text, first half only": (lambda s: 0.7 if s < STEPS // 2 else 0.0, ALL),
}
results, budgets = {}, {}
for name, (share, trainable) in tqdm(ARMS.items(), desc="arms"):
    g = torch.Generator().manual_seed(1)  # the same data stream for every arm
    post, seen = train(pre, STEPS, share, trans, w_ans, g, trainable)
    results[name] = evaluate(post, trans, w_ans)
    budgets[name] = seen

# %%
print(f"pre-trained text loss {text_pre.mean():.3f} ± {text_pre.std():.3f} (chain entropy {entropy.mean():.3f}); "
      f"every arm: {STEPS} steps x {BATCH} samples = {STEPS * BATCH} samples, 8 seeds")
# accuracies to 2 decimals: their third decimal moves with the CPU kernels (ATEN_CPU_CAPABILITY)
print(f"{'arm':<32} {'text/mm samples':>16} {'text loss  mean ± std  [min, max]':>34} {'mm acc  mean ± std  [min, max]':>32}")
for name, (tl, acc) in results.items():
    b = budgets[name]
    print(f"{name:<32} {b['text']:>7}/{b['mm']:<8} {tl.mean():>9.3f} ± {tl.std():.3f}  [{tl.min():.2f}, {tl.max():.2f}]"
          f" {acc.mean():>11.2f} ± {acc.std():.2f}  [{acc.min():.2f}, {acc.max():.2f}]")

fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
names = list(results)
for i, name in enumerate(names):
    tl, acc = results[name]
    ax[0].scatter(np.full(SEEDS, i), tl.numpy(), s=14, color="tab:blue")
    ax[1].scatter(np.full(SEEDS, i), acc.numpy(), s=14, color="tab:green")
    ax[0].errorbar(i, tl.mean(), tl.std(), color="k", capsize=4, marker="_")
    ax[1].errorbar(i, acc.mean(), acc.std(), color="k", capsize=4, marker="_")
ax[0].axhline(text_pre.mean(), color="gray", ls="--", label="before the multimodal stage")
ax[0].set_yscale("log")
ax[0].set_yticks([1.5, 2, 3, 5, 10])
ax[0].yaxis.set_major_formatter(FormatStrFormatter("%g"))  # plain 1.5, 2, ... 10 rather than 10^0, 10^1
ax[0].yaxis.set_minor_formatter(NullFormatter())
ax[0].set_ylabel("text loss (nats, log scale)")
ax[0].legend(fontsize=8)
ax[1].set_ylabel("multimodal accuracy")
for a in ax:
    a.set_xticks(range(len(names)), ["0% text", "30% text", "70% text\n(paper 7:3)", "abl: 0%,\nLM frozen",
                                     "abl: 70%,\nthen 0%"], fontsize=8)
fig.suptitle("text kept in the multimodal stage (8 seeds, 25,600 samples per arm)")
fig.tight_layout()
plt.show()

# %% [markdown]
# **What the toy shows.** Without text the language task is destroyed: the shared head learns to put its mass on
# the answer tokens and the text loss goes from 1.6 to 9.9 nats (min 7.7 over 8 seeds). A text share keeps it:
# 30% already holds it within 0.1 of the pre-trained value and 70% (the paper's ratio) at it, for a multimodal
# accuracy 8 points lower (0.82 against 0.90), because at a matched sample count the 70% arm sees 30% as many
# multimodal examples. The paper reports the same direction for language (§3.2.2, Figure 4), but says the
# multimodal cost is not significant; the toy's 8-point cost is larger, and it comes from the matched sample
# budget, which the paper's curves may not hold fixed (not verified). It is the trade-off of §3.2.2's conclusion (3)
# (each modality's performance follows its proportion), seen from the multimodal side. The paper's final model
# shows the language side of the same picture: with 70% text it stays at the LLM's level on HellaSwag (68.4 vs.
# 68.5, Table 7), like the toy's 70% arm, which keeps its text loss; it still loses some GSM8K. Freezing the LM
# keeps the text loss exactly (nothing that produces text changes) but the adaptor alone cannot reach the multimodal
# accuracy of joint training, which is why DeepSeek-VL unfreezes the LLM in stage 2 (§3.2.1).
# Text that is dropped halfway protects
# only partly (1.9 nats against 1.6 and 9.9): 200 multimodal-only steps undo part of it, so the mix has to last
# until the end of the stage. What the toy cannot show: the paper's finding is about benchmark skills of a 1B model
# trained on billions of tokens; here forgetting is mostly the head's calibration, a much easier thing to lose and
# to keep.

# %% [markdown]
# ### What a healthy run prints
#
# Text loss before the multimodal stage ~1.6 (chain entropy ~1.5); after it, 0% text above 4 on every seed, 70%
# text within 0.2 of the pre-trained value; multimodal accuracy of the 0% arm above that of the 70% arm, and the
# frozen-LM arm below 0.5.

# %%
tl0, acc0 = results["0% text"]
tl7, acc7 = results["70% text (paper 7:3)"]
print(f"healthy: 0% text loss {tl0.min():.1f}+ (> 4); 70% text loss - pre {(tl7 - text_pre).abs().max():.2f} (< 0.2); "
      f"acc 0% {acc0.mean():.2f} > 70% {acc7.mean():.2f}; frozen LM acc {results['abl: 0% text, LM frozen'][1].mean():.2f} (< 0.5)")
assert tl0.min() > 4.0 and (tl7 - text_pre).abs().max() < 0.2
assert acc0.mean() > acc7.mean() and results["abl: 0% text, LM frozen"][1].mean() < 0.5

# %% [markdown]
# ## Misconceptions
#
# - **Claim (seed document):** DeepSeek-VL fuses "a ViT-S/16 at 224 and a ViT-B/32 at 56 with weights 0.7/0.3".
#   **Correction:** the two encoders are SigLIP-L (384x384 input) and SAM-B (1024x1024 input), §3.1 of 2403.05525v2;
#   they are not averaged with fixed weights but concatenated channel-wise on a shared 24x24 grid and mixed by a
#   learned two-layer MLP (derivation 2, checked in §7 against `transformers`). The only scalar weight in the code
#   is the learned $\alpha$ of SAM's second neck, initialised to 0.
# - **Claim:** "SigCLIP". **Correction:** the encoder is **SigLIP**, "Sigmoid Loss for Language Image Pre-Training"
#   (Zhai et al., arXiv:2303.15343): a CLIP-style dual encoder trained with a per-pair sigmoid (binary) loss
#   instead of CLIP's batch softmax.
# - **Claim:** both DeepSeek-VL sizes use the SAM-B hybrid encoder. **Correction:** only the 7B does. The 1.3B's model
#   card says "It uses the SigLIP-L as the vision encoder supporting 384 x 384 image input"; the 7B card says
#   "SigLIP-L and SAM-B as the hybrid vision encoder supporting 1024 x 1024 image input". `transformers` has two
#   model types for them, `deepseek_vl` (SigLIP only, `deepseek-vl-1.3b-chat`) and `deepseek_vl_hybrid`
#   (`deepseek-vl-7b-chat`). Both produce 576 image tokens.
# - **Claim:** the "7:3" ratio is image : text. **Correction:** it is **language : multimodal** (70% pure text) in
#   DeepSeek-VL's stage 2: "a training ratio of language to multimodal data of roughly 7:3" (§3.2.2), Table 1's
#   70.0% text-only corpus, and §4.4's target language ratio "0.7". The paper itself is not consistent: Figure 4's
#   caption calls the suitable ratio "multimodal:language=70%:30%". Three places against one, and the release
#   follows the three. (DeepSeek-VL2 does turn it round: about 70% VL and 30% text, 2412.10302 §3.2.)
# - **Claim:** DeepSeek-VL reads 1024x1024 images with 4,096 tokens. **Correction:** 576 tokens: SAM's 64x64 map is
#   downsampled to 24x24 (derivation 1).
# - **Claim:** the vision encoders are trained end to end in all stages. **Correction:** they are frozen in stages 1
#   and 2; in stage 3 SigLIP-L is trained and SAM-B stays frozen (§3.2.1-§3.2.3, Figure 3). In DeepSeek-VL2 the
#   encoder does train in every stage, at 0.1 times the learning rate (2412.10302 §4.1, Table 2).
# - **Claim:** DeepSeek-VL2 is DeepSeek-VL with tiles. **Correction:** it drops the hybrid encoder for one
#   SigLIP-SO400M-384, and moves to a DeepSeekMoE LLM (MLA in DeepSeek-VL2-Small and DeepSeek-VL2, MHA in
#   DeepSeek-VL2-Tiny) (2412.10302 §2, Table 1).
# - **Claim:** VL2 picks the grid by the closest aspect ratio (InternVL's rule). **Correction:** the released code
#   maximises the kept resolution, then minimises padding (`select_best_resolution`): 3000x1000 gets 4x2 (786k
#   pixels kept), not the 3x1 of the closest ratio (442k), and a 200x150 icon stays on one tile where the
#   closest-ratio rule would cut it into 3x2 (table (f)). A tile costs 196 tokens plus 14 newlines per tile row,
#   not 256 (InternVL's 448 tile).
# - **Claim:** VL2 picks the grid that "minimizes the padding area", as its paper says (2412.10302 §2).
#   **Correction:** that is the paper's wording, not what the code runs. Read literally, it keeps a 4032x3024 photo
#   on one tile (421 tokens) and a 3000x1000 panorama on 3x1; the release gives them 3x3 (2,017 tokens) and 4x2,
#   because it maximises the kept pixels first (derivation 4 and the cell after (e)).
# - **Claim:** VL2 always tiles. **Correction:** with three or more images the grid is forced to 1x1
#   (`cropping=len(images) <= 2` in the official processor; "we disable the dynamic tiling strategy when
#   processing multiple (> 2) images", 2412.10302 §2). Each image is then the 384 global view plus one 384 local
#   tile (the same padded image), 2 SigLIP passes, $210 + 1 + 14 \cdot 15 = 421$ tokens, the same as any 1x1 image
#   (`tokenize_with_images`: `cropping=False` → `best_width = best_height = image_size`), not the global view alone
#   (210). Nor is the 9-tile cap fixed: it is the released config; for InfoVQA the paper uses $mn \le 18$ (§5.1,
#   footnote 2).

# %% [markdown]
# ## Exercises
#
# 1. A 1280x720 screenshot: which grid does VL2 pick, and how many image tokens does it cost? Compute by hand with
#    derivation 4, then check in the cell below.
# 2. Put SigLIP-SO400M/14 at 384 (VL2's encoder, a $27 \times 27$ grid) in place of SigLIP-L/16 in DeepSeek-VL's
#    hybrid, SAM-B at 1024 unchanged. To which size does `transformers`' `DeepseekVLSamVisionProj` interpolate
#    SAM's 64x64 map, which grid do the two 3x3 stride-2 convs (padding 1) leave, and would the official `sam.py`,
#    which hard-codes `(96, 96)`, still line up cell by cell with SigLIP? (Version note (i); output side of one such
#    conv: $\lfloor (n - 1)/2 \rfloor + 1$.)
# 3. In the toy, make the text share ramp from 100% to 70% over the first half (the paper's "modality warm-up").
#    Does it change the final text loss or accuracy at the same sample budget?
# 4. An LLM layer with MHA of $n_h d_h = 2048$ versus MLA with $d_c = 512$, $d_h^R = 64$: how many KV-cache
#    numbers per token does each store, and how many bytes (bf16) does one 4032x3024 photo (eq. 4) then cost per
#    layer? (See F3.)

# %%
answer_grid, answer_tokens = None, None  # your answer for exercise 1: (cols, rows), tokens
c, r = best_fit_grid(720, 1280, tile_size=TILE, grids=GRIDS)
print(f"1280x720 -> grid {c}x{r}, {vl2_tokens(c, r)} tokens; your answer is",
      "right" if (c, r) == answer_grid and vl2_tokens(c, r) == answer_tokens else "not right yet")

# %% [markdown]
# Exercise 2, checked: the library's module built for a 27-cell grid (8 channels instead of 256: the shapes do not
# depend on the width), and the official hard-coded path (`sam_downsample` with side 24 interpolates to 96).

# %%
answer_interp, answer_side, answer_official_side = None, None, None  # your answer for exercise 2
proj27 = DeepseekVLSamVisionProj(type("Cfg", (), {"output_channels": 8})(), output_size=384 // 14)
with torch.no_grad():
    neck = torch.randn(1, 8, 64, 64)  # SAM-B's 64 x 64 neck map at 1024 px, 8 channels here
    side_lib = proj27(neck).shape[-1]
    side_official = sam_downsample(neck, proj27.conv1.weight, proj27.conv2.weight, 24).shape[-1]  # (96, 96) path
print(f"transformers: 64 -> {4 * 27} -> {side_lib} (SigLIP-SO400M: 27); official sam.py: 64 -> 96 -> {side_official}"
      f" -> no cell-by-cell match; your answer is",
      "right" if (answer_interp, answer_side, answer_official_side) == (4 * 27, side_lib, side_official) else "not right yet")

# %% [markdown]
# Exercise 3, checked: the warm-up arm (text share from 100% down to 70% over the first 200 steps, then 70%)
# against the fixed 70% arm, same seeds, same pre-trained weights, same 25,600 samples. Run it after your guess,
# and compare with §4.4 of the paper, where warm-up "consistently matches or surpasses" no warm-up (Figure 9, at
# multimodal:language = 60%:40%): there it prevents "a significant decline in language capabilities at the
# beginning of training" and ends comparatively better. In the toy the two arms end close (below), so at this
# scale the toy shows no such gain.

# %%
def warmup_share(step: int) -> float:  # §4.4's modality warm-up: language ratio 1 -> the target 0.7
    return 1.0 - 0.3 * min(step / (STEPS // 2), 1.0)


g = torch.Generator().manual_seed(1)  # the same data stream as every other arm
post, seen = train(pre, STEPS, warmup_share, trans, w_ans, g, ALL)
for name, (tl, acc), b in (("70% text, fixed", results["70% text (paper 7:3)"], budgets["70% text (paper 7:3)"]),
                           ("100% -> 70% warm-up", evaluate(post, trans, w_ans), seen)):
    print(f"{name:<20} text/mm samples {b['text']:>6}/{b['mm']:<6} text loss {tl.mean():.3f} ± {tl.std():.3f}"
          f"  mm acc {acc.mean():.2f} ± {acc.std():.2f} [{acc.min():.2f}, {acc.max():.2f}]")

# %% [markdown]
# Exercise 4, checked: per token and layer MHA caches a key and a value of $n_h d_h$ each; MLA caches the latent
# $c^{KV}$ ($d_c$) and the shared RoPE key ($d_h^R$). One photo at the released cap is eq. (4) with a 3x3 grid.

# %%
answer_mha_mb, answer_mla_mb = None, None  # your answer for exercise 4: MB per layer (bf16), MHA and MLA
N_HEADS_D_HEAD, D_C, D_ROPE, BF16 = 2048, 512, 64, 2
n_photo = vl2_tokens(3, 3)  # 4032x3024 -> 3x3 (table (f))
per_tok = {"MHA": 2 * N_HEADS_D_HEAD, "MLA": D_C + D_ROPE}  # cached numbers per token and layer
mb = {k: n_photo * v * BF16 / 1e6 for k, v in per_tok.items()}
for k in per_tok:
    print(f"{k}: {per_tok[k]:,} numbers/token/layer, {n_photo:,} tokens -> {mb[k]:.1f} MB per layer (bf16)")
print(f"ratio {mb['MHA'] / mb['MLA']:.2f}x; your answer is",
      "right" if answer_mha_mb is not None and abs(answer_mha_mb - mb["MHA"]) < 0.1
      and abs(answer_mla_mb - mb["MLA"]) < 0.1 else "not right yet")

# %% [markdown]
# ## References
#
# - Lu et al., *DeepSeek-VL: Towards Real-World Vision-Language Understanding*, [arXiv:2403.05525v2](https://arxiv.org/abs/2403.05525v2)
#   (read in its arXiv HTML text; v1 was not available here, so all numbers cited are v2's): §1 (motivation, "at
#   least 70%" language data), Table 1 (pre-training mix, 70.0% text), §3.1 (hybrid encoder, adaptor), §3.2.1-§3.2.3
#   and Figure 3 (three stages), Figure 4 (ratio ablation), Table 8 (stage-1 data scaling), §4.4 (modality warm-up,
#   Figures 8-9; Figure 10, vision encoder selection; Table 10, adaptor design), §4.2 and Table 7 (language
#   benchmarks of the final model).
# - Model cards: [deepseek-ai/deepseek-vl-1.3b-base](https://huggingface.co/deepseek-ai/deepseek-vl-1.3b-base)
#   (SigLIP-L, 384) and [deepseek-ai/deepseek-vl-7b-base](https://huggingface.co/deepseek-ai/deepseek-vl-7b-base)
#   (SigLIP-L + SAM-B, 1024).
# - Wu et al., *DeepSeek-VL2: Mixture-of-Experts Vision-Language Models for Advanced Multimodal Understanding*,
#   [arXiv:2412.10302v1](https://arxiv.org/abs/2412.10302v1) (read in a stored text copy of the report, which does
#   not print its arXiv version): §1 (LLM sizes), §2 (dynamic tiling, footnote 1, projector, MoE LLM), Table 1
#   (variants, MHA vs MLA), §3.2 (70% VL / 30% text), §4.1 and Table 2 (stages, what is frozen), Table 3
#   (OCRBench), §5.1 footnote 2 (InfoVQA evaluated with $mn \le 18$).
# - Official code: [deepseek-ai/DeepSeek-VL](https://github.com/deepseek-ai/DeepSeek-VL) at `681bffb`
#   (`deepseek_vl/models/image_processing_vlm.py` `VLMImageProcessor.resize`, `expand2square`;
#   `clip_encoder.py` `HybridVisionTower` (`freeze_high`, the in-model `Resize`); `sam.py` `ImageEncoderViT`
#   (`downsamples`, `neck_hd`, `hd_alpha_downsamples`); `projector.py` `MlpProjector`; README, sequence lengths);
#   [deepseek-ai/DeepSeek-VL2](https://github.com/deepseek-ai/DeepSeek-VL2) at `ef9f91e`
#   (`deepseek_vl2/models/processing_deepseek_vl_v2.py` `select_best_resolution`, `tokenize_with_images`;
#   `modeling_deepseek_vl_v2.py` `MlpProjector`, `prepare_inputs_embeds`; `configuration_deepseek.py` `use_mla`;
#   README, sequence lengths and GPU memory notes).
# - Reference implementation: `transformers` 5.23.0, `transformers.models.deepseek_vl` (SigLIP only, the 1.3B) and
#   `transformers.models.deepseek_vl_hybrid`
#   (`DeepseekVLHybridForConditionalGeneration`, `DeepseekVLHybridModel.get_image_features`,
#   `DeepseekVLSamVisionProj`, `DeepseekVLHybridImageProcessorPil`); `transformers.image_processing_utils.select_best_resolution`.
# - Course code: `shared.tiling` (`tile_grids`, `best_fit_grid`, `split_tiles`, `unfold_merge`), tested in `tests/test_tiling.py`.
# - Zhai et al., *Sigmoid Loss for Language Image Pre-Training*, arXiv:2303.15343; Kirillov et al., *Segment
#   Anything*, arXiv:2304.02643.
# - After this line: DeepSeek-OCR, arXiv:2510.18234, official code
#   [deepseek-ai/DeepSeek-OCR](https://github.com/deepseek-ai/DeepSeek-OCR) (`DeepSeek-OCR-master/DeepSeek-OCR-vllm/
#   deepencoder/sam_vary_sdpa.py` `net_2`, `net_3`; `clip_sdpa.py` `build_clip_l`); `transformers` 5.23.0
#   `transformers.models.deepseek_ocr2` (`DeepseekOcr2SamVisionProj`, `DeepseekOcr2VisionModel`); Janus,
#   arXiv:2410.13848, and Janus-Pro, arXiv:2501.17811 (`transformers.models.janus`, `JanusVisionConfig`).
# - Paper numbers not re-checked against the paper text in the latest revision (neither paper was reachable then;
#   they were read from the texts named above when the reading was written): Table 10 of 2403.05525 (adaptor
#   averages), the 60%:40% of its Figures 8-9; "DeepSeekMoE-3B, 0.57B activated", the 0.1 learning-rate multiplier
#   of Table 2 and the InfoVQA $mn \le 18$ of footnote 2 in 2412.10302.
