# ---
# jupyter:
#   course:
#     cpu_seconds: 48
#     id: R7
#     papers:
#     - arxiv: '2402.03300'
#       title: 'DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language
#         Models'
#     - arxiv: '2503.20783'
#       title: 'Understanding R1-Zero-Like Training: A Critical Perspective'
#     - arxiv: '2503.14476'
#       title: 'DAPO: An Open-Source LLM Reinforcement Learning System at Scale'
#     part: rl
#     prerequisites:
#     - R4
#     - R6
#     title: GRPO, Dr. GRPO, DAPO
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
# # R7 · GRPO, Dr. GRPO, DAPO
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/rl/R7_grpo.ipynb)
#
# **Papers:** Zhihong Shao, Peiyi Wang, Qihao Zhu, Runxin Xu, Junxiao Song, et al. (DeepSeek-AI), *DeepSeekMath:
# Pushing the Limits of Mathematical Reasoning in Open Language Models*, 2024.
# [arXiv:2402.03300](https://arxiv.org/abs/2402.03300) (GRPO, §4.1) ·
# Zichen Liu, Changyu Chen, Wenjun Li, Penghui Qi, et al. (Sea AI Lab, NUS, SMU), *Understanding R1-Zero-Like
# Training: A Critical Perspective*, 2025. [arXiv:2503.20783](https://arxiv.org/abs/2503.20783) (Dr. GRPO, §3) ·
# Qiying Yu, Zheng Zhang, Ruofei Zhu, et al. (ByteDance Seed, Tsinghua AIR, HKU), *DAPO: An Open-Source LLM
# Reinforcement Learning System at Scale*, 2025. [arXiv:2503.14476](https://arxiv.org/abs/2503.14476)
#
# **Official code:** [deepseek-ai/DeepSeek-Math](https://github.com/deepseek-ai/DeepSeek-Math) (models and
# evaluation; no RL code) · [sail-sg/understand-r1-zero](https://github.com/sail-sg/understand-r1-zero) ·
# DAPO in [volcengine/verl](https://github.com/volcengine/verl) (`recipe/dapo`)
#
# **Prerequisites:** [R4 · PPO](R4_ppo.ipynb) (clipped surrogate, advantages) ·
# [R6 · DPO](R6_dpo.ipynb) (the reference policy and the KL to it)
#
# **CPU run time:** 48 s on a 2-core CPU (measured by `make run`, which rewrites this number)

# %% [markdown]
# ## TL;DR
#
# GRPO (DeepSeekMath §4.1) is PPO without a value model: sample $G$ answers per question, score them with a
# rule or reward model, and use **each answer's reward minus the mean reward of its own group**, divided by the
# group's std, as the advantage of every token of that answer; a k3 estimate of KL to a reference model is added
# to the loss. It took DeepSeekMath-Instruct 7B from 46.8% to 51.7% on MATH (Table 5). **Dr. GRPO** (2503.20783
# §3) shows that GRPO's $1/|o_i|$ length normalisation and std scaling bias the update (longer wrong answers,
# over-weighted easy/hard questions) and removes both. **DAPO** (2503.14476 §3) adds clip-higher
# ($\varepsilon_{\text{high}} = 0.28 > \varepsilon_{\text{low}} = 0.2$), dynamic sampling (drop groups whose answers
# are all right or all wrong), a token-level loss and overlong reward shaping: 50 on AIME 2024 with Qwen2.5-32B,
# where naive GRPO reached 30 (Table 1). Here each piece is derived, written from scratch, checked against the
# course's `shared.policy_losses` (itself tested against `trl` 1.16.0), and used to train a tiny policy. On that toy
# (2 seeds) all four variants learn; the KL term slows GRPO the most, DAPO ends highest at 3 times the samples,
# and Dr. GRPO's length bias does not show at this scale.

# %% [markdown]
# ## 中文速览
#
# GRPO（DeepSeekMath §4.1）是去掉价值模型的 PPO：每道题采样 $G$ 个回答，用规则或奖励模型打分，**以该回答的奖励减去
# 同一道题这一组回答的平均奖励、再除以组内标准差**作为该回答所有 token 的优势；损失里再加上到参考模型的 k3 KL 估计。
# 它把 DeepSeekMath-Instruct 7B 在 MATH 上从 46.8% 提到 51.7%（表 5）。**Dr. GRPO**（2503.20783 §3）指出 GRPO 的
# $1/|o_i|$ 长度归一化和标准差缩放会带来偏差（错误回答变长、过易/过难题权重过大），于是把两者都去掉。**DAPO**
# （2503.14476 §3）加入 clip-higher（$\varepsilon_{\text{high}}=0.28>\varepsilon_{\text{low}}=0.2$）、动态采样（丢弃全对或全错的组）、
# token 级损失和超长奖励整形：Qwen2.5-32B 在 AIME 2024 上达到 50 分，朴素 GRPO 只有 30 分（表 1）。本笔记逐项推导、
# 从零实现，与课程的 `shared.policy_losses`（已对照 `trl` 1.16.0 测试）核对，并用它们训练一个小策略。在这个玩具任务上
# （2 个随机种子）四种变体都能学会；KL 项对 GRPO 的拖慢最明显，DAPO 最终准确率最高但采样量是 3 倍，而 Dr. GRPO
# 所说的长度偏差在这个规模上看不出来。

# %% [markdown]
# ## Setup
#
# One cell installs the course helper on Colab only (CI skips it); the next imports, seeds and picks the
# device. Nothing here needs a GPU: the policy trained below has about 7k parameters.

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
import torch.nn as nn
from tqdm.auto import tqdm

from shared import policy_losses as shared_pl
from shared.utils import assert_close, error_bound, pick_device, seed_everything

seed_everything(0)
device = pick_device()  # every reading runs on CPU; a GPU only makes it faster
torch.set_num_threads(1)  # the tensors here are tiny: one thread is fastest, and steady on a busy machine
# float64 everywhere: training draws ~280k answers, and in float32 the last-bit differences between CPUs'
# kernels (AVX2 vs AVX-512) flip a few of them and change the printed curves. float64 shrinks those differences
# far below what can flip a sample, at about 1.4x the training time.
torch.set_default_dtype(torch.float64)
print("torch", torch.__version__)


# %% [markdown]
# ## The problem
#
# **PPO is expensive for LLMs.** PPO needs a value model "typically another model of comparable size as the
# policy model", a "substantial memory and computational burden", and in the LLM setting "usually only the last
# token is assigned a reward score by the reward model, which may complicate the training of a value function
# that is accurate at each token" (DeepSeekMath §4.1.1). GRPO "obviates the need for additional value function
# approximation as in PPO, and instead uses the average reward of multiple sampled outputs, produced in response
# to the same question, as the baseline" (§4.1.1, Figure 4). Trained with it on about 144K GSM8K/MATH
# questions, DeepSeekMath-RL 7B reaches 88.2% on GSM8K and 51.7% on MATH, from DeepSeekMath-Instruct 7B's 82.9%
# and 46.8% (Table 5).
#
# **GRPO's objective is biased.** Liu et al. argue that the response-length growth seen in R1-Zero-style runs
# "may also be attributed to a bias inherent in the GRPO [...] objective function" (2503.20783 §3.1): dividing by
# $|o_i|$ penalises long wrong answers less, and dividing by the group std over-weights questions that are too
# easy or too hard. With both terms removed (Dr. GRPO, §3.2), "GRPO tends to continually generate longer
# responses even when the reward improvement slows down", while Dr. GRPO "prevents the response length from
# growing wildly" and "the length of incorrect responses is substantially reduced" (§3.2, Figure 5; summarised in
# Figure 1 right). Their
# minimal recipe reaches 43.3% on AIME 2024 with a 7B base model (abstract).
#
# **Naive GRPO does not scale to long chains of thought.** DAPO's authors saw "entropy collapse, reward noise, and
# training instability" (§1): naive GRPO on Qwen2.5-32B reaches 30 points on AIME 2024 (avg@32), against 47 for
# DeepSeek-R1-Zero-Qwen-32B. Adding their techniques one by one gives 36 (overlong filtering), 38 (clip-higher),
# 41 (soft overlong punishment), 42 (token-level loss) and 50 (dynamic sampling) (Table 1), with 50% of the
# training steps of R1-Zero-Qwen-32B (Figure 1).

# %% [markdown]
# ## Derivations
#
# Notation: a question $q$, $G$ outputs $o_1, \dots, o_G \sim \pi_{\theta_{\text{old}}}(\cdot \mid q)$ with rewards
# $r_1, \dots, r_G$; $o_{i,t}$ is token $t$ of output $i$ and
# $\rho_{i,t} = \pi_\theta(o_{i,t} \mid q, o_{i,<t}) / \pi_{\theta_{\text{old}}}(o_{i,t} \mid q, o_{i,<t})$ its
# importance ratio.
#
# **1. The GRPO objective (DeepSeekMath eq. 3, maximised).**
#
# $$\mathcal J_{\text{GRPO}}(\theta) = \mathbb E\Big[\frac1G\sum_{i=1}^G \frac1{|o_i|}\sum_{t=1}^{|o_i|}
# \Big\{\min\big[\rho_{i,t}\hat A_{i,t},\ \text{clip}(\rho_{i,t}, 1-\varepsilon, 1+\varepsilon)\hat A_{i,t}\big]
# - \beta\, \mathbb D_{\text{KL}}[\pi_\theta \| \pi_{\text{ref}}]\Big\}\Big],$$
#
# with outcome supervision (§4.1.2) giving every token of $o_i$ the same advantage
#
# $$\hat A_{i,t} = \tilde r_i = \frac{r_i - \operatorname{mean}(\mathbf r)}{\operatorname{std}(\mathbf r)},
# \qquad \mathbf r = \{r_1, \dots, r_G\}\ \text{(the rewards of the same question's group)}.$$
#
# **2. Why the group mean is a valid baseline.** The policy gradient of $J = \mathbb E_{o \sim \pi_\theta}[R(o)]$
# is $\mathbb E[R(o)\nabla\log\pi_\theta(o)]$, and $\nabla\log\pi_\theta(o) = \sum_t \nabla\log\pi_\theta(o_t \mid q,
# o_{<t})$ (a **sum** over tokens). For i.i.d. samples and $b_i = \frac1G\sum_j r_j$:
#
# $$\mathbb E\big[(r_i - b_i)\nabla\log\pi(o_i)\big] = \big(1 - \tfrac1G\big)\mathbb E[r_i\nabla\log\pi(o_i)]
# - \tfrac1G\sum_{j\ne i}\mathbb E[r_j]\,\underbrace{\mathbb E[\nabla\log\pi(o_i)]}_{=\,0}
# = \tfrac{G-1}{G}\,\nabla J.$$
#
# So centring by the group mean is unbiased up to the constant $(G-1)/G$; it only reduces variance. The baseline
# is computed **per question** from samples of the current policy: not a running average of past returns.
#
# **3. The k3 KL estimator (eq. 4).** With $x = \pi_{\text{ref}}(o_{i,t} \mid \cdot) / \pi_\theta(o_{i,t} \mid \cdot)$
# at the sampled token,
#
# $$\hat k_3 = x - \log x - 1 \ \ge 0 \quad \text{since } \log x \le x - 1,$$
#
# with equality only at $x = 1$. Unbiased: for $o \sim \pi_\theta$, $\mathbb E[x] = \sum_o \pi_\theta(o)
# \frac{\pi_{\text{ref}}(o)}{\pi_\theta(o)} = 1$, so $\mathbb E[\hat k_3] = 1 - 1 - \mathbb E[\log x] =
# \mathbb E_{\pi_\theta}[\log\frac{\pi_\theta}{\pi_{\text{ref}}}] = \mathbb D_{\text{KL}}[\pi_\theta\|\pi_{\text{ref}}]$.
# The naive $\hat k_1 = -\log x$ is also unbiased but takes negative values (checked in walkthrough 6.2 below).
# GRPO adds this term to the loss, not to the reward as PPO-RLHF does (§4.1.1).
#
# **4. Per-token weights: the length bias (Dr. GRPO §3.1).** On-policy ($\rho = 1$, no clipping active) the
# gradient of the three aggregations puts weight $w_i$ on every $\nabla\log\pi(o_{i,t})$:
#
# | loss | aggregation | $w_i$ |
# | --- | --- | --- |
# | GRPO (eq. 3) | $\frac1G\sum_i\frac1{\lvert o_i\rvert}\sum_t$ | $\hat A_i / (G\,\lvert o_i\rvert)$ |
# | Dr. GRPO (§3.2) | $\frac{1}{G\,L_{\max}}\sum_i\sum_t$ | $\tilde A_i / (G\,L_{\max})$, with $\tilde A_i = r_i - \operatorname{mean}(\mathbf r)$ |
# | DAPO (eq. 12) | $\frac{1}{\sum_i\lvert o_i\rvert}\sum_i\sum_t$ | $\hat A_i / \sum_j\lvert o_j\rvert$ |
#
# Only GRPO's weight depends on the answer's own length: a wrong answer ($\hat A_i < 0$) of 30 tokens is pushed
# down 3 times less per token than one of 10 tokens, so long wrong answers survive, and short right answers are
# pushed up more. Dr. GRPO's constant $L_{\max}$ rescales the learning rate only, and gives back derivation 2's
# sum over tokens. DAPO's normaliser is shared by every token of the batch (checked in walkthrough 6.5 below).
#
# **5. The std: a per-question weight (Dr. GRPO §3.1).** For 0/1 rewards with $k$ of $G$ correct,
# $\hat p = k/G$ and the unbiased std is $\sqrt{\frac{G}{G-1}\hat p(1-\hat p)}$. Dividing by it multiplies the
# whole question's gradient by $1/\text{std}$, which is largest when $\hat p$ is near 0 or 1: the
# *question-level difficulty bias*. For $G = 8$: $1/\text{std} = 2.83$ for $k = 1$ and $1.87$ for $k = 4$. Dr.
# GRPO drops the division; `trl` calls this `scale_rewards="none"` (and `"batch"` divides by one batch-wide std,
# the usual RL advantage normalisation that §3.1 contrasts with the per-question one).
#
# **6. Clip-higher (DAPO §3.1, eq. 10).** With $\hat A > 0$ the clipped term caps the gain at
# $\rho \le 1 + \varepsilon_{\text{high}}$, i.e. $\pi_\theta \le (1+\varepsilon_{\text{high}})\,\pi_{\text{old}}$ per
# update: a token at $\pi_{\text{old}} = 0.01$ can reach 0.012 with $\varepsilon = 0.2$, while one at 0.9 can
# reach any probability ("1.08"); DAPO raises only the upper bound to $\varepsilon_{\text{high}} = 0.28$ (0.0128)
# to keep exploration tokens alive and keeps $\varepsilon_{\text{low}} = 0.2$ because increasing it "will
# suppress the probability of these tokens to 0, resulting in the collapse of the sampling space" (§3.1). When
# the ratio leaves the range in the direction the advantage pushes it (above $1+\varepsilon_{\text{high}}$ for
# $\hat A > 0$, below $1-\varepsilon_{\text{low}}$ for $\hat A < 0$), the min picks the clipped, constant branch
# and the token's gradient is exactly zero; in the other direction the unclipped term is smaller and is kept
# (PPO's pessimistic bound).
#
# **7. Dynamic sampling (DAPO §3.2, eq. 11).** If all $G$ rewards of a question are equal, every
# $r_i - \operatorname{mean}(\mathbf r) = 0$, so with $\beta = 0$ the whole group contributes zero gradient while
# still filling the batch. DAPO over-samples and keeps only groups with
# $0 < |\{o_i \text{ correct}\}| < G$ "until the batch is fully filled".
#
# **8. Overlong reward shaping (DAPO §3.4, eq. 13).** With a hard cap $L_{\max}$ and a soft buffer $L_{\text{cache}}$:
#
# $$R_{\text{length}}(y) = \begin{cases} 0, & |y| \le L_{\max} - L_{\text{cache}} \\
# \frac{(L_{\max} - L_{\text{cache}}) - |y|}{L_{\text{cache}}}, & L_{\max} - L_{\text{cache}} < |y| \le L_{\max} \\
# -1, & L_{\max} < |y| \end{cases}$$
#
# added to the correctness reward; DAPO uses $L_{\max} = 20{,}480$ and $L_{\text{cache}} = 4{,}096$ (§4.1).

# %% [markdown]
# ## Walkthrough
#
# Everything below works on padded batches: `rewards` is `(batch,)` with each question's $G$ answers next to each
# other (`batch = n_questions * G`), per-token tensors are `(batch, T)` with a 0/1 `mask` that marks real
# completion tokens. `logps[i, t]` is $\log\pi_\theta(o_{i,t} \mid q, o_{i,<t})$ of the token that was sampled.
#
# ### 6.1 Group-relative advantages (derivation 1, 5)
#
# Reshape to `(n_questions, G)`, subtract each row's mean, optionally divide by the row's std (GRPO), by one
# std of the whole batch, or not at all (Dr. GRPO). `torch.std` is the unbiased (Bessel) std, as in `trl`;
# `eps` keeps an all-equal group at 0 instead of 0/0.

# %%
def advantages_from_scratch(rewards, G, scale="group", eps=1e-4):
    grouped = rewards.view(-1, G)  # (n_questions, G): one row per question
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # r_i - mean(r) of the SAME question
    if scale == "group":
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)  # GRPO: / std of the question's group
    elif scale == "batch":
        centred = centred / (rewards.std() + eps)  # one std for the whole batch
    return centred.flatten()  # (batch,)


rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,   # a hard question: 1 of 8 right
                        1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0,   # a medium question: 4 of 8
                        1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # an easy one: all right, no signal
for scale in ("group", "none"):
    adv = advantages_from_scratch(rewards, 8, scale).view(3, 8)
    print(f"scale={scale:5s} correct answer's advantage: hard {adv[0, 0]:.3f}, medium {adv[1, 0]:.3f}, "
          f"easy {adv[2, 0]:.3f}")

# %% [markdown]
# With std scaling the lone right answer of the hard question gets 2.47 against 0.94 on the medium one
# (derivation 5: a factor $1/\text{std}$ of 2.83 vs 1.87 on top of the centred reward); the easy question gives
# zeros either way (derivation 7).
#
# ### 6.2 The k3 KL estimator (derivation 3)
#
# One line, on the log-probs of the sampled tokens. Below, a 5-token categorical: the exact KL, and the
# Monte-Carlo means of $\hat k_1 = -\log x$ and $\hat k_3$ over 200k samples from $\pi_\theta$.

# %%
def k3_from_scratch(logps, ref_logps):
    log_x = ref_logps - logps  # log(pi_ref / pi_theta) at the sampled token
    return torch.exp(log_x) - log_x - 1  # x - log x - 1 >= 0


gen = torch.Generator().manual_seed(0)
pi = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
ref = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.2])
exact = (pi * (pi / ref).log()).sum()
samples = torch.multinomial(pi, 200_000, replacement=True, generator=gen)  # o ~ pi_theta
k1 = -(ref[samples] / pi[samples]).log()
k3 = k3_from_scratch(pi[samples].log(), ref[samples].log())
print(f"exact KL {exact:.4f} | mean k1 {k1.mean():.4f} (min {k1.min():.3f}) | mean k3 {k3.mean():.4f} "
      f"(min {k3.min():.3f})")
print(f"std of one sample: k1 {k1.std():.3f}, k3 {k3.std():.3f}")

# %% [markdown]
# Both means match the exact KL; $\hat k_1$ is negative on some samples, $\hat k_3$ never is (derivation 3).
#
# ### 6.3 Importance ratios: per token (GRPO, DAPO) or per sequence (GSPO)
#
# The ratio is $\exp(\log\pi_\theta - \log\pi_{\text{old}})$ per token. GSPO (reading R8) uses one ratio per
# answer, the geometric mean of its token ratios over the mask; `trl` calls this
# `importance_sampling_level="sequence"`.

# %%
def log_ratios_from_scratch(logps, old_logps, mask, level="token"):
    log_ratio = logps - old_logps  # (batch, T): log rho_{i,t}
    if level == "token":
        return log_ratio
    mask = mask.to(logps.dtype)
    lengths = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (batch, 1): |o_i|
    return (log_ratio * mask).sum(dim=1, keepdim=True) / lengths  # (batch, 1): log of the geometric mean

# %% [markdown]
# ### 6.4 The clipped surrogate with decoupled bounds (derivation 6)
#
# As a loss to minimise: $-\min(\rho A, \text{clip}(\rho, 1-\varepsilon_{\text{low}}, 1+\varepsilon_{\text{high}})A)$.
# Below, a token whose probability rose 25% gets clipped (zero gradient) with $\varepsilon_{\text{high}} = 0.2$ but
# not with DAPO's 0.28.

# %%
def clipped_surrogate_from_scratch(log_ratio, advantages, eps_low=0.2, eps_high=0.2):
    ratio = torch.exp(log_ratio)  # (batch, T) or (batch, 1)
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (batch, 1): one A per answer
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    return -torch.min(ratio * adv, clipped * adv)  # per-token loss


log_ratio = torch.tensor([[math.log(1.25)]], requires_grad=True)
for eps_high in (0.2, 0.28):
    loss = clipped_surrogate_from_scratch(log_ratio, torch.tensor([1.0]), 0.2, eps_high).sum()
    (grad,) = torch.autograd.grad(loss, log_ratio)
    print(f"eps_high={eps_high}: loss {loss.item():.3f}, d loss / d log rho = {grad.item():.3f}")
print(f"max probability of a 0.01 token after one update: eps 0.2 -> {0.01 * 1.2:.4f}, "
      f"eps_high 0.28 -> {0.01 * 1.28:.4f}")

# %% [markdown]
# ### 6.5 Three ways to average: grpo, dr_grpo, dapo (derivation 4)
#
# The names are `trl`'s `loss_type` values. `bnpo` (sum over this batch's tokens / their number) equals `dapo`
# when the batch is the whole batch; `dapo` divides by the token count of the *whole* generation batch, so that
# losses of micro-batches add up to one token mean. Then a check of derivation 4 with autograd: two wrong
# answers ($\hat A = -1$) of 2 and 6 tokens.

# %%
def aggregate_from_scratch(per_token_loss, mask, loss_type, max_len=None, n_tokens=None):
    mask = mask.to(per_token_loss.dtype)
    masked = per_token_loss.expand(mask.shape) * mask  # (batch, T): padding contributes 0
    if loss_type == "grpo":  # eq. 3: mean over each answer's tokens, then over answers
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).mean()
    if loss_type == "dr_grpo":  # Dr. GRPO: a constant, batch * L_max
        return masked.sum() / (mask.shape[0] * max_len)
    if loss_type == "dapo":  # eq. 12: one token mean over the whole batch
        return masked.sum() / (mask.sum() if n_tokens is None else n_tokens)
    raise ValueError(loss_type)


mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
for loss_type in ("grpo", "dr_grpo", "dapo"):
    logps = torch.zeros(2, 6, requires_grad=True)
    per_token = -logps * torch.tensor([[-1.0], [-1.0]])  # on-policy: -rho*A has gradient -A per token
    loss = aggregate_from_scratch(per_token, mask, loss_type, max_len=6)
    (grad,) = torch.autograd.grad(loss, logps)
    print(f"{loss_type:8s} weight per token: short answer {grad[0, 0]:.4f}, long answer {grad[1, 0]:.4f}")

# %% [markdown]
# GRPO pushes each token of the 6-token wrong answer down 3 times less than the 2-token one; Dr. GRPO and DAPO
# treat both alike.
#
# ### 6.6 The whole loss
#
# Ratios, clipped surrogate, plus $\beta\,\hat k_3$, then one of the aggregations. `old_logps=None` is the
# on-policy case (a single update per batch, as DeepSeekMath §4.2): every ratio is 1 but its gradient is still
# $\nabla\log\pi_\theta$. `kl_ratio` multiplies the KL by the ratio, an option `trl` 1.16 turns on by default
# (`use_bias_correction_kl`, from DeepSeek-V3.2); DeepSeekMath's eq. 3 does not.

# %%
def grpo_loss_from_scratch(logps, advantages, mask, old_logps=None, ref_logps=None, beta=0.0,
                           eps_low=0.2, eps_high=0.2, loss_type="grpo", level="token", kl_ratio=False,
                           max_len=None, n_tokens=None):
    old_logps = logps.detach() if old_logps is None else old_logps
    log_ratio = log_ratios_from_scratch(logps, old_logps, mask, level)  # (batch, T) or (batch, 1)
    per_token = clipped_surrogate_from_scratch(log_ratio, advantages, eps_low, eps_high)
    if beta > 0:
        kl = k3_from_scratch(logps, ref_logps)  # (batch, T)
        per_token = per_token + beta * (kl * torch.exp(log_ratio) if kl_ratio else kl)
    return aggregate_from_scratch(per_token, mask, loss_type, max_len, n_tokens)

# %% [markdown]
# ### 6.7 DAPO's data-side tricks: overlong shaping and dynamic sampling (derivations 7, 8)
#
# Both act on rewards, before any loss. `informative_groups` returns the indices of the questions whose answers
# are neither all right nor all wrong (eq. 11).

# %%
def overlong_penalty(lengths, l_max, l_cache):
    """DAPO eq. 13 for lengths (batch,) -> (batch,) in [-1, 0]."""
    soft = ((l_max - l_cache) - lengths) / l_cache  # linear ramp inside the buffer
    return torch.where(lengths <= l_max - l_cache, 0.0, torch.where(lengths <= l_max, soft, -1.0))


def informative_groups(correct, G):
    """Questions with 0 < #correct < G (eq. 11); correct is (n_questions * G,) of 0/1."""
    n_correct = correct.view(-1, G).sum(dim=1)
    return ((n_correct > 0) & (n_correct < G)).nonzero().flatten()


print("penalty for lengths 14..22 with L_max=20, L_cache=4:",
      [round(v, 2) for v in overlong_penalty(torch.arange(14.0, 23.0), 20, 4).tolist()])
print("informative questions in the 6.1 batch:", informative_groups(rewards, 8).tolist())

# %% [markdown]
# ## Check against a reference
#
# The reference is the course's `shared.policy_losses`, which `tests/test_policy_losses.py` checks against
# `trl` 1.16.0's `GRPOTrainer._compute_loss` (loss types grpo / bnpo / dr_grpo / dapo, token- and
# sequence-level ratios, $\beta = 0$ and $\beta > 0$ with and without the ratio-weighted KL, on- and off-policy
# batches, values and gradients) and against the advantages `trl` computes from real rewards in
# `_generate_and_score_completions` (`scale_rewards` group / batch / none). Building a `GRPOTrainer` takes
# several seconds of imports, so this notebook checks against `shared` and leaves `trl` to the tests. The overlong
# shaping is checked against `trl.rewards.get_soft_overlong_punishment` directly.
#
# The batch below is random and off-policy (old log-probs differ by up to ±0.6, so both clip bounds are hit),
# with ragged lengths; every loss variant is compared, value and gradient.

# %%
from trl.rewards import get_soft_overlong_punishment  # light import, not the trainer

gen = torch.Generator().manual_seed(1)
B, T, G = 12, 7, 4
lengths = torch.tensor([7, 3, 1, 5, 7, 2, 6, 4, 7, 7, 1, 3])
mask = (torch.arange(T)[None] < lengths[:, None]).long()  # (B, T)
logps = -torch.rand(B, T, generator=gen) * 3 - 0.05  # (B, T) log-probs < 0
old_logps = logps + (torch.rand(B, T, generator=gen) - 0.5) * 1.2
ref_logps = logps + (torch.rand(B, T, generator=gen) - 0.5) * 2.0
reward_batch = torch.randint(0, 3, (B,), generator=gen).float()

errors = {}
for scale in shared_pl.SCALE_REWARDS:
    errors[f"advantages/{scale}"] = assert_close(
        advantages_from_scratch(reward_batch, G, scale),
        shared_pl.group_advantages(reward_batch, G, scale_rewards=scale), atol=1e-6, name=scale)
errors["k3"] = assert_close(k3_from_scratch(logps, ref_logps), shared_pl.k3_kl(logps, ref_logps), atol=1e-7)
adv = shared_pl.group_advantages(reward_batch, G)
for loss_type in ("grpo", "dr_grpo", "dapo"):
    for level in ("token", "sequence"):
        for beta, kl_ratio in ((0.0, False), (0.04, False), (0.04, True)):
            kw = dict(old_logps=old_logps, ref_logps=ref_logps, beta=beta, loss_type=loss_type)
            a = logps.clone().requires_grad_(True)
            ours = grpo_loss_from_scratch(a, adv, mask, eps_low=0.2, eps_high=0.28, level=level,
                                          kl_ratio=kl_ratio, max_len=10, n_tokens=60, **kw)
            b = logps.clone().requires_grad_(True)
            ref = shared_pl.grpo_loss(b, adv, mask, epsilon_low=0.2, epsilon_high=0.28,
                                      importance_sampling_level=level, kl_importance_correction=kl_ratio,
                                      max_completion_length=10, num_items_in_batch=60, **kw)
            name = f"{loss_type}/{level}/beta={beta}/kl_ratio={kl_ratio}"
            errors[name] = assert_close(ours, ref, atol=1e-6, rtol=1e-6, name=name)
            ga, gb = torch.autograd.grad(ours, a)[0], torch.autograd.grad(ref, b)[0]
            errors[name + "/grad"] = assert_close(ga, gb, atol=1e-7, rtol=1e-6, name=name + " grad")
trl_penalty = get_soft_overlong_punishment(max_completion_len=20, soft_punish_cache=4)
lens = torch.arange(10, 26)
errors["overlong vs trl"] = assert_close(
    overlong_penalty(lens.float(), 20, 4).double(),
    torch.tensor(trl_penalty([[0] * int(n) for n in lens])), atol=1e-12)
ratio = torch.exp(logps - old_logps)  # rho = pi_theta / pi_old
print(f"ratios clipped below 0.8: {(ratio[mask.bool()] < 0.8).sum().item()}, above 1.28: "
      f"{(ratio[mask.bool()] > 1.28).sum().item()} of {mask.sum().item()} tokens")
print(f"{len(errors)} comparisons, largest error {error_bound(max(errors.values()), 1e-7)}")

# %% [markdown]
# ## Reproduction
#
# **Task (verifiable, rule-based reward).** The prompt is a target $s \in \{5, \dots, 30\}$; the policy writes
# digits 1-9 and an end token, at most $L_{\max} = 10$ tokens; reward 1 if it stopped and its digits sum to $s$,
# else 0. Length is free (12 = "93" or "3333"), so the length biases of derivation 4 could act (whether they do
# is read after the results).
#
# **Policy.** A 7k-parameter autoregressive policy: the prompt is the target written as two digit tokens (tens,
# units); the state before token $t$ is the sum of the embeddings of the two prompt tokens, of position $t$ and of
# every token written so far (a causal bag of tokens), and a 2-layer MLP maps it to logits over the 10 tokens. GRPO only needs $\log\pi_\theta$ of the sampled tokens, so any autoregressive
# model would do; this one is fast enough to train four variants in the budget. All of its weights are trained.
#
# **Variants** (16 questions x $G = 8$ answers per step, 2 Adam steps per batch so the ratios move off 1 and
# clipping matters, 150 steps, 2 seeds each):
#
# | variant | advantage | aggregation | $\beta$ | clip | data tricks |
# | --- | --- | --- | --- | --- | --- |
# | GRPO (DeepSeekMath) | $/$ group std | grpo | 0.04 | 0.2 / 0.2 | none |
# | GRPO, $\beta = 0$ (control) | $/$ group std | grpo | 0 | 0.2 / 0.2 | none |
# | Dr. GRPO | centred only | dr_grpo ($L_{\max} = 10$) | 0 | 0.2 / 0.2 | none |
# | DAPO | $/$ group std | dapo | 0 | 0.2 / 0.28 | dynamic sampling (3x over-sampling), overlong shaping ($L_{\text{cache}} = 4$) |
#
# Every 10 steps the policy is evaluated on all 26 targets with 16 samples each (temperature 1).

# %%
EOS, VOCAB, L_MAX, L_CACHE = 0, 10, 10, 4  # token 0 ends the answer; tokens 1..9 are the digits
TARGETS = torch.arange(5, 31)


class BagOfTokensPolicy(nn.Module):
    """logits_t = MLP(E_tens[s // 10] + E_units[s % 10] + E_pos[t] + sum_{k<t} E_tok[o_k])."""

    def __init__(self, hidden=64):
        super().__init__()
        self.tens, self.units = nn.Embedding(10, hidden), nn.Embedding(10, hidden)  # the prompt's 2 tokens
        self.pos = nn.Embedding(L_MAX, hidden)
        self.tok = nn.Embedding(VOCAB, hidden)
        self.mlp = nn.Sequential(nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, VOCAB))

    def prompt(self, targets):  # (batch,) -> (batch, hidden)
        return self.tens(targets // 10) + self.units(targets % 10)

    def forward(self, targets, tokens):  # (batch,), (batch, T) -> logits (batch, T, VOCAB)
        e = self.tok(tokens)
        before = torch.cumsum(e, dim=1) - e  # (batch, T, hidden): sum over tokens strictly before t
        return self.mlp(self.prompt(targets)[:, None] + self.pos.weight[: tokens.shape[1]] + before)

    @torch.no_grad()
    def sample(self, targets, gen):  # -> tokens (batch, L_MAX), mask (batch, L_MAX)
        state, alive, tokens, mask = self.prompt(targets), torch.ones(len(targets), dtype=torch.bool), [], []
        for t in range(L_MAX):
            probs = torch.softmax(self.mlp(state + self.pos.weight[t]), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
            tokens.append(torch.where(alive, nxt, EOS))
            mask.append(alive.clone())  # the end token itself is part of the answer
            alive = alive & (nxt != EOS)
            state = state + self.tok(nxt)
        return torch.stack(tokens, 1), torch.stack(mask, 1)


def token_logps(policy, targets, tokens):  # (batch, T): log pi(o_t | s, o_<t) of the sampled tokens
    return torch.log_softmax(policy(targets, tokens), -1).gather(-1, tokens[..., None])[..., 0]


def correct(targets, tokens, mask):  # the verifier: stopped within L_MAX and digits sum to the target
    stopped = (mask & (tokens == EOS)).any(dim=1)
    return (((tokens * mask).sum(dim=1) == targets) & stopped).float()


def evaluate(policy, gen, n=16):
    targets = TARGETS.repeat_interleave(n)
    tokens, mask = policy.sample(targets, gen)
    ok, length = correct(targets, tokens, mask), mask.sum(1).float()
    stopped = (mask & (tokens == EOS)).any(dim=1).float()
    return [ok.mean().item(), length[ok == 0].mean().item(), length[ok == 1].mean().item(), 1 - stopped.mean().item()]


VARIANTS = {
    "GRPO (DeepSeekMath)": dict(scale="group", loss_type="grpo", beta=0.04, eps_high=0.2, dapo=False),
    "GRPO, beta=0": dict(scale="group", loss_type="grpo", beta=0.0, eps_high=0.2, dapo=False),
    "Dr. GRPO": dict(scale="none", loss_type="dr_grpo", beta=0.0, eps_high=0.2, dapo=False),
    "DAPO": dict(scale="group", loss_type="dapo", beta=0.0, eps_high=0.28, dapo=True),
}


def train(cfg, seed, steps=150, Q=16, G=8, updates=2, lr=3e-3):
    seed_everything(seed)
    gen, eval_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(1000 + seed)
    policy, ref_policy = BagOfTokensPolicy(), BagOfTokensPolicy()
    ref_policy.load_state_dict(policy.state_dict())  # pi_ref = the initial policy
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    log = {"eval": [], "zero_adv": [], "generated": 0}
    for step in range(steps + 1):
        if step % 10 == 0:
            log["eval"].append(evaluate(policy, eval_gen))
        if step == steps:
            break
        n_q = 3 * Q if cfg["dapo"] else Q  # DAPO over-samples questions, then filters
        targets = TARGETS[torch.randint(len(TARGETS), (n_q,), generator=gen)].repeat_interleave(G)
        tokens, mask = policy.sample(targets, gen)
        log["generated"] += len(targets)
        ok = correct(targets, tokens, mask)
        log["zero_adv"].append(1 - len(informative_groups(ok, G)) / n_q)  # groups with no signal
        rewards = ok.clone()
        if cfg["dapo"]:
            rewards = rewards + overlong_penalty(mask.sum(1).float(), L_MAX, L_CACHE)
            keep = informative_groups(ok, G)[:Q]
            rows = (keep[:, None] * G + torch.arange(G)).flatten()
            targets, tokens, mask, rewards = targets[rows], tokens[rows], mask[rows], rewards[rows]
            if len(rows) == 0:
                continue
        adv = advantages_from_scratch(rewards, G, cfg["scale"])
        with torch.no_grad():  # pi_old and pi_ref log-probs of the sampled tokens
            old = token_logps(policy, targets, tokens)
            ref = token_logps(ref_policy, targets, tokens)
        for _ in range(updates):
            loss = grpo_loss_from_scratch(
                token_logps(policy, targets, tokens), adv, mask, old_logps=old, ref_logps=ref,
                beta=cfg["beta"], eps_low=0.2, eps_high=cfg["eps_high"], loss_type=cfg["loss_type"],
                max_len=L_MAX)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return log

# %% tags=["nbval-ignore-output"]
SEEDS = (0, 1)
runs = {name: [] for name in VARIANTS}
with tqdm(total=len(VARIANTS) * len(SEEDS), desc="GRPO variants x seeds") as bar:
    for name, cfg in VARIANTS.items():
        for seed in SEEDS:
            runs[name].append(train(cfg, seed))
            bar.update()

# %%
curves = {name: torch.tensor([r["eval"] for r in rs]).mean(0) for name, rs in runs.items()}  # (16 evals, 4)
steps_axis = torch.arange(curves["DAPO"].shape[0]) * 10  # evaluations at steps 0, 10, ..., 150
print(f"{'variant':20s} {'acc@0':>6s} {'acc@50':>7s} {'acc@100':>8s} {'acc@150':>8s} | {'wrong len':>9s} "
      f"{'right len':>9s} {'no stop':>8s} | {'samples':>7s}")
for name, c in curves.items():
    during = c[1:].nanmean(0)  # lengths and no-stop share averaged over the evaluations at steps 10..150
    generated = sum(r["generated"] for r in runs[name]) / len(SEEDS)
    print(f"{name:20s} {c[0, 0]:6.2f} {c[5, 0]:7.2f} {c[10, 0]:8.2f} {c[-3:, 0].mean():8.2f} | "
          f"{during[1]:9.2f} {during[2]:9.2f} {during[3]:8.3f} | {generated:7.0f}")
print("per seed (0 / 1):")
for name, rs in runs.items():
    per_seed = [torch.tensor(r["eval"]) for r in rs]  # (16 evals, 4) each
    acc, d = [c[-3:, 0].mean() for c in per_seed], [c[1:].nanmean(0) for c in per_seed]
    print(f"  {name:20s} acc@150 {acc[0]:.2f} / {acc[1]:.2f} | wrong len {d[0][1]:.2f} / {d[1][1]:.2f} | "
          f"right len {d[0][2]:.2f} / {d[1][2]:.2f} | no stop {d[0][3]:.3f} / {d[1][3]:.3f}")
print("policy parameters:", sum(p.numel() for p in BagOfTokensPolicy().parameters()))
zero = {name: torch.tensor([r["zero_adv"] for r in rs]).mean(0) for name, rs in runs.items()}  # (150,)
print("share of sampled groups with all-equal rewards, steps 0-9 -> 140-149:")
for name, z in zero.items():
    print(f"  {name:20s} {z[:10].mean():.2f} -> {z[-10:].mean():.2f}")

# %%
def running_mean(x, k=10):  # mean of the last k values, for a readable per-step curve
    c = torch.cumsum(torch.cat([torch.zeros(1), x]), 0)
    idx = torch.arange(1, len(x) + 1)
    return (c[idx] - c[(idx - k).clamp(min=0)]) / (idx - (idx - k).clamp(min=0))


fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
for name, c in curves.items():
    axes[0].plot(steps_axis, c[:, 0], label=name)
    axes[1].plot(steps_axis, c[:, 1], label=name)
    axes[2].plot(torch.arange(1, 151), running_mean(zero[name]), label=name)
axes[0].set(xlabel="training step", ylabel="accuracy (16 samples x 26 targets)", title="Accuracy (mean of 2 seeds)")
axes[1].set(xlabel="training step", ylabel="mean length (tokens)", title="Length of incorrect answers")
axes[2].set(xlabel="training step", ylabel="share of sampled groups (10-step mean)",
            title="Groups with all-equal rewards (no gradient)")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the results.** `acc@150` is the mean of the evaluations at steps 130, 140 and 150; lengths and the
# no-stop share are averaged over the evaluations at steps 10-150. All four variants learn the task with a
# group-mean baseline and no value model, from 1% of answers right to 59-94% (69-94% at step 150 alone). Which
# of the papers' trends show up at this scale, and which do not:
#
# - **The KL term is the largest effect here.** GRPO with DeepSeekMath's $\beta = 0.04$ is the slowest (0.59,
#   against 0.82 for the same loss with $\beta = 0$; 0.63 / 0.55 against 0.81 / 0.84 per seed), its wrong answers
#   stay the longest (5.32 tokens against 4.17) and 4.9% of its answers never stop (against 1.0%): the k3 term
#   pulls the policy back towards the initial one, whose answers are long (6.0 tokens at step 0, middle panel).
#   Dr. GRPO and DAPO both drop this term (Misconceptions below), so comparing them with this run mixes the KL
#   with what the papers change.
# - **Length bias (Dr. GRPO §3.1-3.2, Figures 1 right and 5): not visible in this toy.** The clean comparison is
#   GRPO with $\beta = 0$ against Dr. GRPO: they differ only by the $1/|o_i|$ normaliser and the std. Their wrong
#   answers have the same length (4.17 against 4.20 tokens, and within 0.03 in each seed), and GRPO's right answers
#   are longer, not shorter (3.67 against 3.48, and the seeds disagree: 3.34 / 4.00 against 3.49 / 3.47), so
#   neither "favor brevity in correct answers" nor "prefer lengthier responses among incorrect ones" (§3.1) shows
#   up. Only the no-stop share leans the predicted way (1.0% against 0.6%, in both seeds), by about 25 answers
#   out of 6,240 per seed: too few to call. Right-answer lengths are also confounded with accuracy: they depend on
#   which targets get solved (30 needs at least 4 digits, 5 needs one), and the slowest variant, GRPO with the KL
#   term, has the shortest (3.20). Dropping the std, the other half of Dr. GRPO's change, leaves accuracy the
#   same too (0.84 against 0.82). Answers of 1-10 tokens over 150 steps give the $1/|o_i|$ weight little to act
#   on; the paper sees the bias as LLM responses, incorrect ones above all, growing longer over an RL run
#   (Figure 1 right).
# - **Groups without signal (DAPO §3.2, Figure 3b).** At first 83-88% of the sampled groups are all wrong; the share
#   drops to about half as the policy starts to solve targets, then climbs back as groups become all right (right
#   panel): over steps 140-149, 91% of the groups of GRPO ($\beta = 0$), 87% of Dr. GRPO's and 97% of DAPO's
#   give zero advantage (GRPO with the KL term, still learning, is at 42%). DAPO's filter trains only on the
#   informative groups: it leads from step 70 on and ends highest in both seeds (0.94), but it generates 3 times
#   more samples (the `samples` column): after the same 19,200 samples (its step 50) it is at 0.26, behind every
#   other variant at step 150. DAPO reports the same trade, fewer steps for more sampling (§4.2, Figure 6). Near
#   the end 97% of its 48 sampled groups are all-equal, so only 1-2 informative groups are left per step instead of
#   the 16 a batch holds: this notebook over-samples once, while DAPO keeps sampling "until the batch is fully
#   filled", which would cost still more samples.
# - **DAPO's lengths.** Its wrong answers are the shortest (3.57) and none fails to stop (0.000 in both seeds), in
#   line with the overlong penalty on lengths 7-10; its right answers are not the shortest (3.51, against 3.20 for
#   GRPO). DAPO changes four things at once and has no KL term, so the toy cannot credit the shaping alone.
#
# Two seeds on a toy task: differences of a few points are noise (Dr. GRPO's two seeds end 0.12 apart). What holds
# in both seeds: every variant learns; $\beta = 0.04$ slows GRPO and keeps long, unfinished answers; the no-signal
# share falls, then rises; DAPO ends highest at 3 times the samples. What does not show: Dr. GRPO's length bias
# between GRPO ($\beta = 0$) and Dr. GRPO.

# %% [markdown]
# ## Misconceptions
#
# - **Claim (seed README):** GRPO replaces the value function by a "historical average return"
#   $R^{old}_t = \frac1T\sum_{i=1}^T r_i$ and uses $A_t = G_t - R^{old}_t$. **Correction:** the baseline is the
#   mean reward of the $G$ outputs sampled *now*, from $\pi_{\theta_{\text{old}}}$, *for the same question*:
#   GRPO "uses the average reward of multiple sampled outputs, produced in response to the same question, as the
#   baseline" (DeepSeekMath §4.1.1), and $\hat A_{i,t} = (r_i - \operatorname{mean}(\mathbf r))/\operatorname{std}(\mathbf r)$
#   over that group (§4.1.2). `advantages_from_scratch` has no memory of earlier batches.
# - **Claim (seed README):** samples are grouped "by task type (dialogue, code generation)" and the advantage is
#   taken relative to the task group. **Correction:** a group is the $G$ answers to one question $q$
#   ($\{o_1, \dots, o_G\} \sim \pi_{\theta_{\text{old}}}(O \mid q)$, eq. 3). Pooling different questions would
#   compare answers to easy questions with answers to hard ones: the reward differences would measure question
#   difficulty, not answer quality.
# - **Claim (seed README):** GRPO trains "only LoRA adapters (rank 16, 0.1% of parameters)" with a learning rate
#   of 3e-4. **Correction:** GRPO is an objective; it says nothing about which parameters move. DeepSeekMath
#   trains the policy (DeepSeekMath-Instruct 7B) with learning rate 1e-6, KL coefficient 0.04, 64 samples per
#   question, batch size 1024 and "a single update following each exploration stage" (§4.2), with no mention of
#   LoRA. `trl`'s `GRPOTrainer` trains the full model unless a `peft_config` is passed; the toy above trains all
#   of its weights.
# - **Claim (seed slides):** the GRPO objective uses one ratio per answer, $\pi_\theta(o_i \mid q)/\pi_{\theta_{old}}(o_i \mid q)$.
#   **Correction:** eq. 3 has one ratio per token, averaged with $\frac{1}{|o_i|}\sum_t$. A per-answer ratio is
#   GSPO's choice (R8; Zheng et al., arXiv:2507.18071, §4.1, eq. 7): the $1/|o_i|$-th power of the sequence
#   ratio, i.e. the geometric mean of the token ratios (walkthrough 6.3 above), which GSPO adopts "to reduce the
#   variance and to control $s_i(\theta)$ within a unified numerical range": without it, "the likelihood changes
#   of a few tokens can result in dramatic fluctuations of the sequence-level importance ratio".
# - **Claim (common):** the KL term in GRPO is the exact KL, or the per-token penalty in the reward as in PPO-RLHF.
#   **Correction:** it is the k3 estimate at the sampled tokens, non-negative and unbiased only in expectation
#   over $o \sim \pi_\theta$ (DeepSeekMath eq. 4; walkthrough 6.2 above), added to the loss "instead of adding KL
#   penalty in the reward" (DeepSeekMath §4.1.1). DAPO drops the KL term because a long-CoT policy may diverge far
#   from the initial model anyway (DAPO §2.3); Dr. GRPO sets $\beta = 0$ because rule-based verifiers remove the
#   distribution-shift concern (Dr. GRPO §3).
# - **Claim (common):** "token-level loss" means the same thing in DAPO and Dr. GRPO. **Correction:** DAPO divides
#   by the number of tokens in the batch, $\sum_i |o_i|$ (eq. 12), which changes from batch to batch; Dr. GRPO
#   divides by a constant generation budget (§3.2, Listing 1). Both remove the per-answer $1/|o_i|$; only Dr.
#   GRPO also removes the std (DAPO keeps it, eq. 9).

# %% [markdown]
# ## Exercises
#
# 1. Four answers to one question get rewards $[1, 0, 0, 0]$. Give the GRPO advantages (`scale="group"`, unbiased
#    std, ignore `eps`) and the Dr. GRPO advantages, to 3 decimals.
# 2. With $G = 4$, GRPO (eq. 3) and on-policy ratios, what is $\partial L / \partial \log\pi(o_{i,t})$ ($L$ the loss
#    to minimise) for each token of a wrong answer of 5 tokens whose advantage is $-1$? And with Dr. GRPO's
#    normaliser, $L_{\max} = 10$, same advantage?
# 3. With DAPO's bounds, what is the largest probability a token with $\pi_{\text{old}} = 0.05$ and $\hat A > 0$ can
#    reach in one update before its gradient becomes zero?
# 4. (Open) Derivation 2 shows the group-mean baseline scales the gradient by $(G-1)/G$. Which baseline removes
#    that factor? (Hint: RLOO, Ahmadian et al. 2024, leaves one sample out.) Why does GRPO not need it?
#
# Fill in your answers and run the cell; `None` skips a question.

# %%
answers = {
    "1_grpo": None,     # e.g. [a1, a2, a3, a4]
    "1_dr_grpo": None,  # e.g. [a1, a2, a3, a4]
    "2_grpo": None,     # a number
    "2_dr_grpo": None,  # a number
    "3": None,          # a number
}
expected = {
    "1_grpo": [1.5, -0.5, -0.5, -0.5],
    "1_dr_grpo": [0.75, -0.25, -0.25, -0.25],
    "2_grpo": 1 / (4 * 5),  # -A / (G |o_i|): +0.05, so gradient descent pushes each token down
    "2_dr_grpo": 1 / (4 * 10),
    "3": 0.05 * 1.28,
}
for key, value in answers.items():
    if value is None:
        print(f"exercise {key}: not answered")
    else:
        ok = torch.allclose(torch.tensor(value, dtype=torch.float64),
                            torch.tensor(expected[key], dtype=torch.float64), atol=2e-3)
        print(f"exercise {key}: {'correct' if ok else 'not yet, try again'}")

# %% [markdown]
# ## References
#
# - Z. Shao, P. Wang, Q. Zhu, R. Xu, J. Song, et al. *DeepSeekMath: Pushing the Limits of Mathematical Reasoning
#   in Open Language Models.* arXiv:2402.03300, 2024. §4.1 (GRPO, eqs. 3-4, Algorithm 1), §4.2 and Table 5.
#   Code (models, evaluation): https://github.com/deepseek-ai/DeepSeek-Math
# - Z. Liu, C. Chen, W. Li, P. Qi, T. Pang, C. Du, W. S. Lee, M. Lin. *Understanding R1-Zero-Like Training: A
#   Critical Perspective.* arXiv:2503.20783, 2025. §3.1-3.2 (length and difficulty biases, Dr. GRPO).
#   Code: https://github.com/sail-sg/understand-r1-zero
# - Q. Yu, Z. Zhang, R. Zhu, et al. *DAPO: An Open-Source LLM Reinforcement Learning System at Scale.*
#   arXiv:2503.14476, 2025. §3.1-3.4 (eqs. 8-13), Table 1. Code: https://github.com/volcengine/verl (`recipe/dapo`)
# - C. Zheng, S. Liu, M. Li, et al. *Group Sequence Policy Optimization.* arXiv:2507.18071, 2025. §4.1, eq. 7
#   (the length-normalised sequence ratio; reading R8).
# - J. Schulman. *Approximating KL divergence*, 2020. http://joschu.net/blog/kl-approx.html (the k3 estimator).
# - Reference implementation: `trl` 1.16.0, `trl/trainer/grpo_trainer.py`, `GRPOTrainer._compute_loss` (loss
#   types, `importance_sampling_level`, `use_bias_correction_kl`) and the advantage code in
#   `_generate_and_score_completions` (`scale_rewards`); `trl/rewards/other_rewards.py`,
#   `get_soft_overlong_punishment` (DAPO eq. 13). The course's `shared/policy_losses.py` follows them and
#   `tests/test_policy_losses.py` checks it against them.
