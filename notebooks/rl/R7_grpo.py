# ---
# jupyter:
#   course:
#     cpu_seconds: 31
#     id: R7
#     papers:
#     - arxiv: '2402.03300'
#       title: 'DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language
#         Models'
#       version: v3
#     - arxiv: '2503.20783'
#       title: 'Understanding R1-Zero-Like Training: A Critical Perspective'
#       version: v2
#     - arxiv: '2503.14476'
#       title: 'DAPO: An Open-Source LLM Reinforcement Learning System at Scale'
#       version: v1
#     part: rl
#     peak_memory_mb: 841
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
# [![Open In Colab](../../docs/img/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/rl/R7_grpo.ipynb)
#
# **Papers:** Zhihong Shao, Peiyi Wang, Qihao Zhu, Runxin Xu, Junxiao Song, et al. (DeepSeek-AI), *DeepSeekMath:
# Pushing the Limits of Mathematical Reasoning in Open Language Models*, 2024.
# [arXiv:2402.03300](https://arxiv.org/abs/2402.03300) (v3; GRPO is §4.1) ·
# Zichen Liu, Changyu Chen, Wenjun Li, Penghui Qi, et al. (Sea AI Lab, NUS, SMU), *Understanding R1-Zero-Like
# Training: A Critical Perspective*, COLM 2025. [arXiv:2503.20783](https://arxiv.org/abs/2503.20783) (v2; Dr. GRPO, §3) ·
# Qiying Yu, Zheng Zhang, Ruofei Zhu, et al. (ByteDance Seed, Tsinghua AIR, HKU), *DAPO: An Open-Source LLM
# Reinforcement Learning System at Scale*, NeurIPS 2025. [arXiv:2503.14476](https://arxiv.org/abs/2503.14476) (v1)
#
# **Official code:** [deepseek-ai/DeepSeek-Math](https://github.com/deepseek-ai/DeepSeek-Math) (models and
# evaluation; no RL code) · [sail-sg/understand-r1-zero](https://github.com/sail-sg/understand-r1-zero) ·
# [BytedTsinghua-SIA/DAPO](https://github.com/BytedTsinghua-SIA/DAPO) (project; its training code is `recipe/dapo` in [volcengine/verl](https://github.com/volcengine/verl))
#
# **Prerequisites:** [R4 · PPO](R4_ppo.ipynb) (clipped surrogate, the learned critic, GAE) and [R6 · DPO](../../docs/syllabus.md#r6)
# (the reference policy and the KL to it; not yet written: its syllabus entry)
#
# **CPU run time:** 31 s on a 2-core CPU (measured by `make run`, which rewrites this number)
#
# **Peak memory:** 841 MB (the kernel's peak resident memory, measured by `make run`)

# %% [markdown]
# ## TL;DR
#
# - **GRPO** (DeepSeekMath §4.1) is PPO with the critic replaced by each question's group-normalised reward.
# - **Dr. GRPO** (2503.20783 §3) removes GRPO's $1/|o_i|$ and std; **DAPO** (2503.14476 §3) adds four tricks for long chains of thought.
# - Every piece is derived beside its code and checked against `trl` 1.16 and Liger-Kernel; the k3 loss has the gradient of the *forward* KL.
# - At a matched budget (15 variants x 8 replicates), plain GRPO with β = 0 ends as accurate as any variant, near the ceiling; mid-run, process supervision leads; dynamic sampling is ahead per step, as DAPO claims, but behind per generated answer.
# - The toy shows Dr. GRPO's length effect, small; it does **not** show Dr. GRPO's accuracy gain (App. C), "RL raises Maj@K, not Pass@K" or "GRPO beats online RFT".

# %% [markdown]
# ## 中文速览
#
# - **GRPO**（DeepSeekMath §4.1）是用每道题的组内归一化奖励代替价值模型的 PPO。
# - **Dr. GRPO**（2503.20783 §3）去掉 GRPO 的 $1/|o_i|$ 和标准差；**DAPO**（2503.14476 §3）为长思维链加入四项技巧。
# - 每一部分都在其代码旁推导，并与 `trl` 1.16 和 Liger-Kernel 对照；k3 作为损失时的梯度是**前向** KL 的梯度。
# - 在相同预算下（15 种变体 × 8 个重复），$\beta=0$ 的朴素 GRPO 的最终准确率不输于任何变体（接近上限）；训练中途过程监督领先；动态采样按训练步数领先（与 DAPO 的说法一致），但按生成的回答数计则落后。
# - 玩具任务显示出 Dr. GRPO 的长度效应（很小）；**未**显示 Dr. GRPO 的准确率提升（附录 C）、"RL 提高 Maj@K 而不提高 Pass@K"，也未显示"GRPO 优于在线 RFT"。

# %% [markdown]
# ## Setup
#
# One cell installs the course helper on Colab only (CI skips it); the next imports, seeds and picks the
# device. Nothing here needs a GPU: the policies trained below are tables of 5,070 logits each.

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
from tqdm.auto import tqdm

from shared import policy_losses as shared_pl
from shared.utils import assert_close, error_bound, pick_device, seed_everything

seed_everything(0)
device = pick_device()  # every reading runs on CPU; a GPU only makes it faster
torch.set_num_threads(1)  # the tensors here are small: one thread is fastest, and steady on a busy machine
# float64 everywhere: training draws ~1.2M answers, and in float32 the last-bit differences between CPUs'
# kernels (AVX2 vs AVX-512) can flip a sample and change the printed curves; float64 makes that vanishingly rare.
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
# questions (§4.2), DeepSeekMath-RL 7B reaches 88.2% on GSM8K and 51.7% on MATH, from DeepSeekMath-Instruct 7B's
# 82.9% and 46.8% (Table 5).
#
# **GRPO's objective is biased.** Liu et al. argue that the response-length growth seen in R1-Zero-style runs
# "may also be attributed to a bias inherent in the GRPO [...] objective function" (2503.20783 §3.1): dividing by
# $|o_i|$ penalises long wrong answers less, and dividing by the group std gives more weight to questions whose
# rewards vary little (too easy or too hard). With both terms removed (Dr. GRPO, §3.2), the length of incorrect
# responses is "substantially reduced" (Figure 5; Figure 1 right). Their minimal recipe reaches 43.3% on AIME 2024
# with a 7B base model (abstract).
#
# **Naive GRPO does not scale to long chains of thought.** DAPO's authors saw "entropy collapse, reward noise, and
# training instability" (§1): naive GRPO on Qwen2.5-32B reaches 30 points on AIME 2024 (avg@32), against 47 for
# DeepSeek-R1-Zero-Qwen-32B. Adding their techniques one by one gives 36 (overlong filtering), 38 (clip-higher),
# 41 (soft overlong punishment), 42 (token-level loss) and 50 (dynamic sampling) (Table 1), with 50% of the
# training steps of R1-Zero-Qwen-32B (Figure 1).
#
# **Lineage.** GRPO is PPO (Schulman et al. 2017, arXiv:1707.06347; reading R4) with the critic replaced by a
# group baseline, a relative of RLOO's leave-one-out baseline (Ahmadian et al. 2024, arXiv:2402.14740); DeepSeek-R1
# (arXiv:2501.12948) trained with it at scale; Dr. GRPO and DAPO (2025) remove its biases and fix its behaviour
# on long chains of thought; GSPO (arXiv:2507.18071, reading R8) moves the ratio and the clipping to the sequence
# level; DeepSeek-V3.2 (arXiv:2512.02556) weights the k3 KL by the ratio, which `trl` 1.16 adopts by default.

# %% [markdown]
# ## Derivations
#
# Notation: a question $q$, $G$ outputs $o_1, \dots, o_G \sim \pi_{\theta_{\text{old}}}(\cdot \mid q)$ with rewards
# $r_1, \dots, r_G$; $o_{i,t}$ is token $t$ of output $i$ and
# $\rho_{i,t} = \pi_\theta(o_{i,t} \mid q, o_{i,<t}) / \pi_{\theta_{\text{old}}}(o_{i,t} \mid q, o_{i,<t})$ its
# importance ratio. Each derivation is followed by the code that implements it (sections 5 and 6 interleave).
# Every batch is padded: `rewards` is `(batch,)` with each question's $G$ answers next to each other
# (`batch = n_questions * G`), per-token tensors are `(batch, T)` with a 0/1 `mask` on real completion tokens,
# and `logps[i, t]` is $\log\pi_\theta(o_{i,t} \mid q, o_{i,<t})$ of the sampled token.
#
# ### D1. The GRPO objective (DeepSeekMath eq. 3, maximised) and the outcome advantage (§4.1.2)
#
# $$\mathcal J_{\text{GRPO}}(\theta) = \mathbb E\Big[\frac1G\sum_{i=1}^G \frac1{|o_i|}\sum_{t=1}^{|o_i|}
# \Big\{\min\big[\rho_{i,t}\hat A_{i,t},\ \text{clip}(\rho_{i,t}, 1-\varepsilon, 1+\varepsilon)\hat A_{i,t}\big]
# - \beta\, \mathbb D_{\text{KL}}[\pi_\theta \| \pi_{\text{ref}}]\Big\}\Big],
# \qquad \hat A_{i,t} = \tilde r_i = \frac{r_i - \operatorname{mean}(\mathbf r)}{\operatorname{std}(\mathbf r)},$$
#
# with $\mathbf r = \{r_1, \dots, r_G\}$ the rewards of **the same question's** group: outcome supervision gives
# every token of $o_i$ the same advantage.
#
# **Why the group mean is a valid baseline.** The policy gradient of $J = \mathbb E_{o \sim \pi_\theta}[R(o)]$
# is $\mathbb E[R(o)\nabla\log\pi_\theta(o)]$ with $\nabla\log\pi_\theta(o) = \sum_t \nabla\log\pi_\theta(o_t \mid q,
# o_{<t})$. For i.i.d. samples and $b_i = \frac1G\sum_j r_j$, since $\mathbb E[\nabla\log\pi(o_i)] = 0$ and $o_j$ is
# independent of $o_i$ for $j \ne i$:
#
# $$\mathbb E\big[(r_i - b_i)\nabla\log\pi(o_i)\big] = \big(1 - \tfrac1G\big)\mathbb E[r_i\nabla\log\pi(o_i)]
# - \tfrac1G\sum_{j\ne i}\mathbb E[r_j]\,\mathbb E[\nabla\log\pi(o_i)] = \tfrac{G-1}{G}\,\nabla J.$$
#
# Centring by the group mean is unbiased up to the constant $(G-1)/G$ and typically reduces variance. The baseline is
# computed **per question**, from samples of the current policy; it is not a running average of past returns.
#
# The code: reshape to `(n_questions, G)`, subtract each row's mean, optionally divide by the row's std (GRPO),
# by one std of the whole batch, or not at all (Dr. GRPO). `torch.std` is the unbiased (Bessel) std, as in `trl`;
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
                        1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])  # an easy one: 7 of 8
for scale in ("group", "none"):
    adv = advantages_from_scratch(rewards, 8, scale).view(3, 8)
    print(f"scale={scale:5s} advantages of answer 1 / answer 8: hard {adv[0, 0]:.3f} / {adv[0, 7]:.3f}, "
          f"medium {adv[1, 0]:.3f} / {adv[1, 7]:.3f}, easy {adv[2, 0]:.3f} / {adv[2, 7]:.3f}")

# %% [markdown]
# ### D2. What dividing by the group std does (Dr. GRPO §3.1), and why a constant scale does not matter
#
# For 0/1 rewards with $k$ of $G$ correct, $\hat p = k/G$ and the unbiased std is
# $\sigma_k = \sqrt{\frac{G}{G-1}\hat p(1-\hat p)}$. Dividing by it multiplies **the whole question's** gradient by
# $1/\sigma_k$. The centred rewards alone already give a question a total weight $\sum_i |r_i - \bar r| =
# 2G\hat p(1-\hat p)$, largest at $\hat p = 1/2$ and small for the nearly-solved or nearly-hopeless; dividing by
# $\sigma_k \propto \sqrt{\hat p(1-\hat p)}$ turns that into $\propto\sqrt{\hat p(1-\hat p)}$: relative to a medium
# question, a question with 1 right answer of 8 goes from 0.44 to 0.66 of its weight (1.75/4.00 and 4.95/7.48 in
# the printout below). Dividing by the std **up-weights the questions whose rewards vary little: too easy or too
# hard ones** (Dr. GRPO §3.1: "Questions with lower standard deviations (e.g., those that are too easy or too
# hard, with the outcome rewards being almost all 1 or 0) are given higher weights during policy updates"). Above: one right answer out of 8 gets advantage 2.47 with the std and 0.875 without; the medium
# question's right answers get 0.94 and 0.5. A batch-wide std (`scale_rewards="batch"`) is one constant for every
# question, so it does not change their relative weights.
#
# **A constant rescaling of the loss is irrelevant under Adam.** Adam's step is
# $\hat m_t/(\sqrt{\hat v_t} + \epsilon)$; multiplying every gradient by $c > 0$ multiplies $\hat m_t$ by $c$ and
# $\sqrt{\hat v_t}$ by $c$, so the step is unchanged up to $\epsilon$ (Dr. GRPO's Listing 1 caption says as much of its
# constant: "Other constants also work with differences in gradient norm"). So Dr. GRPO's constant $1/(G L_{\max})$,
# a $\pm1$ reward instead of 0/1 when the advantages are not divided by the std (it doubles every advantage), or a
# batch-wide std that barely changes between steps, change the learning rate of SGD but (almost) nothing under Adam. What Adam cannot
# undo is a weight that differs **between** questions or answers in the same batch: $1/\sigma_k$ and $1/|o_i|$. Two
# limits to "constants do not matter": gradient-norm clipping, which Dr. GRPO uses at 1.0 (Appendix G, Table 6), acts
# on the raw gradient, so a constant changes how often it binds; and a constant such as $1/(G \cdot 20{,}480)$ can
# bring gradients near Adam's $\epsilon$, where the step does shrink (the toy clips nothing). The cell prints
# $1/\sigma_k$ for $G = 8$ and runs Adam on a loss and on 1000 times that loss.

# %%
G8 = 8
for k in range(1, G8):
    p = k / G8
    sigma = math.sqrt(G8 / (G8 - 1) * p * (1 - p))
    print(f"k={k}: 1/std = {1 / sigma:.2f}, total |centred| = {2 * G8 * p * (1 - p):.2f}, "
          f"with std: {2 * G8 * p * (1 - p) / sigma:.2f}")

w_target = torch.randn(20, generator=torch.Generator().manual_seed(0))
params = [torch.zeros(20, requires_grad=True), torch.zeros(20, requires_grad=True)]
opts = [torch.optim.Adam([p], lr=0.01) for p in params]
for _ in range(50):
    for scale, p, opt in zip((1.0, 1000.0), params, opts, strict=True):
        opt.zero_grad()
        (scale * ((p - w_target) ** 4).sum()).backward()
        opt.step()
print("Adam, loss vs 1000 x loss, after 50 steps: max |difference of the parameters| "
      f"{error_bound((params[0] - params[1]).abs().max().item(), 1e-6)}; parameters moved "
      f"{params[0].abs().max().item():.2f}")

# %% [markdown]
# ### D3. The k3 KL estimator: its value estimates KL$(\pi_\theta\|\pi_{\text{ref}})$, its gradient is that of KL$(\pi_{\text{ref}}\|\pi_\theta)$
#
# DeepSeekMath eq. 4 writes, at the sampled token, with $x = \pi_{\text{ref}}(o_{i,t} \mid \cdot) / \pi_\theta(o_{i,t} \mid \cdot)$,
#
# $$\hat k_3 = x - \log x - 1 \ \ge 0 \quad \text{since } \log x \le x - 1 .$$
#
# **Its value.** For $o \sim \pi_\theta$, $\mathbb E[x] = \sum_o \pi_\theta(o)\frac{\pi_{\text{ref}}(o)}{\pi_\theta(o)} = 1$,
# so $\mathbb E[\hat k_3] = \mathbb E_{\pi_\theta}[\log\frac{\pi_\theta}{\pi_{\text{ref}}}] =
# \mathrm{KL}(\pi_\theta\|\pi_{\text{ref}})$: unbiased for the **reverse** KL (Schulman 2020). The naive
# $\hat k_1 = -\log x$ is unbiased too but takes negative values.
#
# **Its gradient, used as a loss.** The trainer samples $o \sim \pi_\theta$, treats the samples as fixed and
# differentiates $\hat k_3(o)$. Per sample, $\nabla_\theta \hat k_3 = (1 - x)\,\nabla\log\pi_\theta(o)$ (from
# $\nabla x = -x\,\nabla\log\pi_\theta$). In expectation:
#
# $$\mathbb E_{o\sim\pi_\theta}\big[\nabla\hat k_3\big] = \sum_o \big(\pi_\theta(o) - \pi_{\text{ref}}(o)\big)\nabla\log\pi_\theta(o)
# = \underbrace{\textstyle\sum_o \nabla\pi_\theta(o)}_{=\,\nabla 1\,=\,0} - \sum_o\pi_{\text{ref}}(o)\nabla\log\pi_\theta(o)
# = \nabla_\theta\,\mathrm{KL}(\pi_{\text{ref}}\|\pi_\theta).$$
#
# So GRPO's KL term pulls with the gradient of the **forward** KL, not of the reverse KL whose value it reports.
# (For $\hat k_1$ the same computation gives $\mathbb E[\nabla\log\pi_\theta] = 0$: as a loss it does nothing on
# average.) **The importance-weighted form** that `trl` 1.16 uses by default (`use_bias_correction_kl=True`,
# from DeepSeek-V3.2, arXiv:2512.02556) multiplies $\hat k_3$ by $\rho = \pi_\theta/\pi_{\theta_{\text{old}}}$, which
# equals 1 on-policy but carries the gradient $\nabla\rho = \nabla\log\pi_\theta$:
#
# $$\nabla(\rho\,\hat k_3) = \big(\hat k_3 + 1 - x\big)\nabla\log\pi_\theta = -\log x\,\nabla\log\pi_\theta
# = \log\tfrac{\pi_\theta}{\pi_{\text{ref}}}\,\nabla\log\pi_\theta,\qquad
# \mathbb E_{\pi_\theta}\big[\nabla(\rho\hat k_3)\big] = \sum_o \pi_\theta\log\tfrac{\pi_\theta}{\pi_{\text{ref}}}\nabla\log\pi_\theta
# = \nabla_\theta\,\mathrm{KL}(\pi_\theta\|\pi_{\text{ref}}),$$
#
# the reverse-KL gradient (the last step uses $\sum_o \pi_\theta\nabla\log\pi_\theta = 0$). Both statements hold per
# token with the prefix held fixed; the prefix distribution's own dependence on $\theta$ is not differentiated by
# either form, so summed over an answer neither is the gradient of a KL between whole-sequence distributions.
# DeepSeekMath's own derivation says the same of its loss: GRPO's gradient coefficient (Appendix A.1, eq. 21) is
# $\hat A_{i,t} + \beta\big(\frac{\pi_{\text{ref}}}{\pi_\theta} - 1\big)$, and $\beta(x - 1)\nabla\log\pi_\theta$ is exactly
# $-\beta\nabla\hat k_3$ above: the forward-KL direction. With `importance_sampling_level="sequence"`, `trl` multiplies
# each token's $\hat k_3$ by the *sequence* ratio, whose gradient is $\frac{1}{|o|}\sum_s\nabla\log\pi_\theta(o_s)$ rather
# than the token's own, and the reverse-KL property is lost; `trl`'s help text says so ("The unbiased reverse-KL
# property holds for `importance_sampling_level='token'`; with 'sequence' a sequence-level weight is broadcast onto
# the per-token KL", `grpo_config.py`).
#
# The cell checks this on a 5-outcome categorical $\pi_\theta = \mathrm{softmax}(\theta)$: the expected gradient of
# each surrogate, computed exactly as $\sum_o \mathrm{sg}[\pi_\theta(o)]\,\nabla(\cdot)(o)$ (the sampling weights
# are not differentiated, as in training), against autograd of the closed-form KLs, an independent computation.
# A Monte-Carlo mean over 200k samples shows the same from samples, and that both values estimate the reverse KL.

# %%
def k3_from_scratch(logps, ref_logps):
    log_x = ref_logps - logps  # log(pi_ref / pi_theta) at the sampled token
    return torch.exp(log_x) - log_x - 1  # x - log x - 1 >= 0


theta_cat = torch.tensor([1.0, 0.3, -0.2, 0.5, -1.0], requires_grad=True)  # a categorical policy's logits
ref_cat = torch.softmax(torch.tensor([0.0, 0.8, 0.0, -0.5, 0.2]), 0)  # pi_ref, fixed


def expected_grad(surrogate):  # sum_o sg[pi(o)] * grad surrogate(o): the gradient training sees on average
    logp = torch.log_softmax(theta_cat, 0)  # (5,)
    per_outcome = surrogate(logp, ref_cat.log())  # (5,)
    return torch.autograd.grad((logp.exp().detach() * per_outcome).sum(), theta_cat)[0]


g_k3 = expected_grad(k3_from_scratch)
g_k3_is = expected_grad(lambda lp, rl: torch.exp(lp - lp.detach()) * k3_from_scratch(lp, rl))  # rho * k3
g_k1 = expected_grad(lambda lp, rl: lp - rl)
pi_cat = torch.softmax(theta_cat, 0)
g_forward = torch.autograd.grad((ref_cat * (ref_cat.log() - pi_cat.log())).sum(), theta_cat)[0]  # KL(ref||pi)
pi_cat = torch.softmax(theta_cat, 0)
g_reverse = torch.autograd.grad((pi_cat * (pi_cat.log() - ref_cat.log())).sum(), theta_cat)[0]  # KL(pi||ref)
kl_errors = {
    "k3 -> forward": assert_close(g_k3, g_forward, atol=1e-12, name="E[grad k3] vs grad KL(ref||pi)"),
    "rho*k3 -> reverse": assert_close(g_k3_is, g_reverse, atol=1e-12, name="E[grad rho k3] vs grad KL(pi||ref)"),
    "k1 -> 0": assert_close(g_k1, torch.zeros(5), atol=1e-12, name="E[grad k1] vs 0"),
}
print("grad KL(ref||pi)  :", [round(v, 4) for v in g_forward.tolist()])
print("grad KL(pi||ref)  :", [round(v, 4) for v in g_reverse.tolist()])
print(f"k3 -> forward, rho*k3 -> reverse, k1 -> 0: largest error {error_bound(max(kl_errors.values()), 1e-12)}; "
      f"the two KL gradients differ by {(g_forward - g_reverse).norm():.3f} (norms {g_forward.norm():.3f}, "
      f"{g_reverse.norm():.3f})")

with torch.no_grad():
    pi_cat = torch.softmax(theta_cat, 0)
    o = torch.multinomial(pi_cat, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    k1_s, k3_s = pi_cat.log()[o] - ref_cat.log()[o], k3_from_scratch(pi_cat.log()[o], ref_cat.log()[o])
    exact_rev = (pi_cat * (pi_cat / ref_cat).log()).sum()
    exact_fwd = (ref_cat * (ref_cat / pi_cat).log()).sum()
print(f"values: KL(pi||ref) {exact_rev:.4f}, KL(ref||pi) {exact_fwd:.4f} | mean k1 {k1_s.mean():.4f} "
      f"(min {k1_s.min():.3f}), mean k3 {k3_s.mean():.4f} (min {k3_s.min():.3f})")
logp_mc = torch.log_softmax(theta_cat, 0)[o]  # Monte Carlo: autograd through the sampled tokens' log-probs
g_mc = torch.autograd.grad(k3_from_scratch(logp_mc, ref_cat.log()[o]).mean(), theta_cat)[0]
print("MC mean of grad k3:", [round(v, 3) for v in g_mc.tolist()], "(compare with grad KL(ref||pi))")

# %% [markdown]
# Both means estimate the reverse KL (0.316 here; the forward KL is 0.325); as gradients, plain $\hat k_3$ follows the forward KL and
# $\rho\hat k_3$ the reverse one, and they point in visibly different directions. GRPO adds the term to the loss,
# not to the reward as PPO-RLHF does (§4.1.1). Which one a trainer uses changes training: the reproduction below
# runs both (`GRPO b=0.04 (k3)` and `... IS-KL (trl)`).
#
# **`trl` and the paper differ here, and both are "right" for a different objective.** DeepSeekMath's eq. 3 uses
# plain $\hat k_3$, so the paper's GRPO follows the forward-KL gradient; `trl` 1.16 multiplies by $\rho$ by default
# (`use_bias_correction_kl=True`, `grpo_config.py`; its help text cites DeepSeek-V3.2 for "the unbiased
# reverse-KL gradient"), which matches the KL$(\pi_\theta\|\pi_{\text{ref}})$ written in eq. 3. The difference fires
# whenever β ≠ 0, on-policy too (the ratio's value is 1 but its gradient is not); `trl`'s default β is 0.0, where
# neither form exists. To reproduce DeepSeekMath with `trl`, set `use_bias_correction_kl=False`.
#
# ### D4. Importance ratios and the clipped surrogate with decoupled bounds (DAPO §3.1, eq. 10)
#
# With $\hat A > 0$ the clipped term caps the gain at $\rho \le 1 + \varepsilon_{\text{high}}$, i.e.
# $\pi_\theta \le (1+\varepsilon_{\text{high}})\,\pi_{\text{old}}$ per update: a token at $\pi_{\text{old}} = 0.01$
# can reach 0.012 with $\varepsilon = 0.2$, while one at 0.9 can reach any probability; DAPO raises only the upper
# bound to $\varepsilon_{\text{high}} = 0.28$ (0.0128) to keep low-probability "exploration" tokens alive and keeps
# $\varepsilon_{\text{low}} = 0.2$, because increasing it "will suppress the probability of these tokens to 0,
# resulting in the collapse of the sampling space" (§3.1). When the ratio leaves the range in the direction the
# advantage pushes it, the min picks the clipped constant and the token's gradient is exactly zero; in the other
# direction the unclipped term is smaller and is kept (PPO's pessimistic bound). GSPO (reading R8) uses one ratio
# per answer, the geometric mean of its token ratios (`trl`'s `importance_sampling_level="sequence"`). Below, a
# token whose probability rose 25% is clipped (zero gradient) with $\varepsilon_{\text{high}} = 0.2$, not with 0.28.

# %%
def log_ratios_from_scratch(logps, old_logps, mask, level="token"):
    log_ratio = logps - old_logps  # (batch, T): log rho_{i,t}
    if level == "token":
        return log_ratio
    mask = mask.to(logps.dtype)
    lengths = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (batch, 1): |o_i|
    return (log_ratio * mask).sum(dim=1, keepdim=True) / lengths  # (batch, 1): log of the geometric mean


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

# %% [markdown]
# ### D5. How the per-token losses are averaged: the length bias, and DAPO's eq. 12 per question vs per batch
#
# On-policy ($\rho = 1$, no clipping active) each aggregation puts a weight $w_i$ on every
# $\nabla\log\pi(o_{i,t})$ of answer $i$:
#
# | loss | aggregation | $w_i$ |
# | --- | --- | --- |
# | GRPO (eq. 3) | $\frac1G\sum_i\frac1{\lvert o_i\rvert}\sum_t$ | $\hat A_i / (G\,\lvert o_i\rvert)$ |
# | Dr. GRPO (Figure 1 left; §3.2: eq. 3 without $1/\lvert o_i\rvert$ and std, i.e. $\frac1G\sum_i\sum_t$; the constant $1/L_{\max}$ from Listing 1 and `trl`'s `dr_grpo`) | $\frac{1}{G\,L_{\max}}\sum_i\sum_t$ | $\tilde A_i / (G\,L_{\max})$, $\tilde A_i = r_i - \operatorname{mean}(\mathbf r)$ |
# | DAPO eq. 12, as written | $\mathbb E_q\big[\frac{1}{\sum_{i=1}^G\lvert o_i\rvert}\sum_i\sum_t\big]$ | $\hat A_i / (n_q \sum_{j \in q}\lvert o_j\rvert)$ |
# | `verl` at the DAPO recipe (`use_token_level_loss`), and default `verl` today (`token-mean`), per micro-batch $b$ of $n_b$ answers | $\frac{n_b}{N}\frac{1}{\sum_{j\in b}\lvert o_j\rvert}\sum_{j\in b}\sum_t$, summed over micro-batches | $\hat A_i\, n_b / (N \sum_{j \in b}\lvert o_j\rvert)$ |
# | `verl` model engine (opt-in, `use_legacy_worker_impl=disable`) `token-mean`; `trl` `dapo` | $\frac{1}{\sum_{\text{batch}}\lvert o_j\rvert}\sum_{\text{batch}}\sum_t$ | $\hat A_i / \sum_{\text{all } j}\lvert o_j\rvert$ |
#
# Only GRPO's weight depends on the answer's own length: a wrong answer ($\hat A_i < 0$) of 30 tokens is pushed
# down 3 times less per token than one of 10 tokens, so long wrong answers survive (Dr. GRPO §3.1). Dr. GRPO's
# $L_{\max}$ is a constant (irrelevant under Adam, D2). §3.2 states the change in words, "we propose to simply remove
# the $1/|o_i|$ and std(...) normalization terms" from eq. 3, which leaves $\frac1G\sum_i\sum_t$ with no per-answer
# normaliser (the formula is drawn in Figure 1, left); it adds that "we could replace the mask.sum(axis=dim) with a
# constant value (e.g., generation budget) in the masked_mean function in listing 1".
#
# **Listing 1 (§3.1) shows two biased losses, not one.** Its caption: "Comparison between a typical open-source PPO
# loss implementation that is biased (red) and our implementation (green)". One `masked_mean`, whose red line is
# `return (tensor * mask).sum(axis=dim) / mask.sum(axis=dim)` and whose green line is
# `return (tensor * mask).sum(axis=-1) / MAX_TOKENS`, is called in two ways:
#
# ```python
# # per-response length normalization (e.g., OpenRLHF)
# loss_variant1 = masked_mean(ppo_loss, response_mask, dim=-1).mean()
# # OR per-batch length normalization (e.g., trl, verl)
# loss_variant2 = masked_mean(ppo_loss, response_mask, dim=None).mean()
# ```
#
# Variant 1 is the table's GRPO row (a mean over each answer's own tokens, $1/|o_i|$); variant 2 is one token mean
# over the batch, the table's last row. The paper counts both as biased (its Table 2 marks the PPO losses of `trl`,
# OpenRLHF, `verl`, SimpleRL-Zero and Open-Reasoner-Zero as not unbiased). The green line replaces either denominator
# by a constant: each answer's sum divided by `MAX_TOKENS`, then the mean over answers, $1/(G L_{\max})$ per group
# ("Other constants also work with differences in gradient norm"). The official code does the same
# (`train_zero_math.py`: `masked_sum(..., constant_normalizer=args.generate_max_length)` for
# `critic_type="drgrpo"`), as `trl`'s `dr_grpo` does with `max_completion_length`. Why variant 2 is biased although
# within a batch every token gets the same weight $1/\sum_{\text{batch}}|o_j|$: that weight depends on the length of
# every answer in the batch, so it shrinks the step on batches of long answers and weighs questions by their
# answers' total length (below).
#
# `trl`'s GRPO loss has been both variants. It was variant 1 until
# [pull request #2881](https://github.com/huggingface/trl/pull/2881) (opened 17 Feb 2025: "The current GRPO
# implementation uses `per-sequence normalization`, this PR corrects this to be `global normalization`");
# [issue #2995](https://github.com/huggingface/trl/issues/2995) (1 Mar 2025) quotes the resulting line,
# `(per_token_loss * completion_mask).sum() / completion_mask.sum()`, and the maintainer traces it to #2881; then
# [pull request #3256](https://github.com/huggingface/trl/pull/3256) (Apr 2025) made it a choice, `loss_type`. In
# `trl` 1.16 (`grpo_trainer.py`, `_compute_loss`), `grpo` is variant 1, `bnpo` is variant 2 per micro-batch,
# `dr_grpo` is the green line with `max_completion_length`, and the default, `dapo`, is one token mean over the
# whole generation batch (`num_items_in_batch`).
#
# **DAPO eq. 12 normalises per question.** The paper writes the token-level loss inside the expectation over
# $(q, a)$: $\mathbb E_{(q,a)\sim\mathcal D}\big[\frac{1}{\sum_{i=1}^{G}|o_i|}\sum_{i=1}^{G}\sum_{t=1}^{|o_i|}\cdots\big]$,
# so each question's $G$ answers share one token mean and questions are then averaged with equal weight $1/n_q$.
# DAPO's own code does not do that. The released recipe (`verl`, `recipe/dapo`, `use_token_level_loss=True`) takes a
# token mean **per micro-batch**, scaled by the micro-batch's share $n_b/N$ of the mini-batch's answers (the table's
# fourth row), and `verl` still does by default; `verl`'s opt-in model engine takes one token mean per mini-batch,
# and `trl`'s `dapo` one per generation batch (the last row). The recipe's README reports that it reproduces the
# paper: 52% on AIME 2024 for full DAPO and 50% without dynamic sampling. The evidence, commit by commit, is in the
# note below.
#
# <details>
# <summary><b>Provenance: which token mean <code>verl</code> computes, version by version</b> (click to open)</summary>
#
# - **The released recipe** (verl pull request #790; its commits, like the others cited here except 8ed5bafc, are on
#   pull-request branches, not on `main`). The run script
#   [`recipe/dapo/run_dapo_qwen2.5_32b.sh`](https://github.com/volcengine/verl/blob/03150d4fa825bcca1ec5c0a3f582cf6449148112/recipe/dapo/run_dapo_qwen2.5_32b.sh)
#   (commit 03150d4, 27 Mar 2025) sets `use_token_level_loss=True`, which the recipe's
#   [README](https://github.com/volcengine/verl/blob/04f41b77f4d0235d2ef7bada2d2ff6177b0dac23/recipe/dapo/README.md)
#   (commit 04f41b77, 18 Mar 2025) documents as "mean the policy gradient loss across all the tokens in all the
#   sequences in a batch" (`verl_F.masked_mean(pg_losses, eos_mask)`). That line runs in
#   `verl/workers/actor/dp_actor.py` once per micro-batch on each GPU: with `use_dynamic_bsz=True`, as the recipe
#   sets, the micro-batch's token mean is scaled by `len(data) / ppo_mini_batch_size`, the gradients are accumulated
#   and then averaged over the data-parallel GPUs. Micro-batches are packed by token count
#   (`ppo_max_token_len_per_gpu`), and one optimizer step sees a mini-batch of 32 prompts x 16 answers
#   (`train_prompt_mini_bsz=32`; 16 mini-batches per 512-prompt batch). The reproduction numbers are in "Reproduction
#   Runs" of the [README at 476a33ec](https://github.com/volcengine/verl/blob/476a33ec14269622c5b990389cd9462fe9a8cd22/recipe/dapo/README.md).
# - **`loss_agg_mode`.** On a parallel pull-request branch (commit 2ec29d99, 27 Mar 2025, whose README says "in a
#   mini-batch"), `use_token_level_loss` became `loss_agg_mode="token-mean"`, implemented by `agg_loss` as
#   `masked_mean(loss_mat, loss_mask)`
#   ([`core_algos.py` at tag v0.4.0](https://github.com/volcengine/verl/blob/v0.4.0/verl/trainer/ppo/core_algos.py)),
#   still called per micro-batch.
# - **The model engine (opt-in, Nov 2025 on).** With the model-engine workers, `agg_loss` divides by the whole
#   mini-batch's token count summed over the data-parallel GPUs, times `dp_size` to undo the gradient averaging
#   ([`core_algos.py`](https://github.com/volcengine/verl/blob/8ed5bafc052bd8f172b8a4a0e777c028db1f48bd/verl/trainer/ppo/core_algos.py)
#   `agg_loss`, fed by
#   [`transformer_impl.py`](https://github.com/volcengine/verl/blob/8ed5bafc052bd8f172b8a4a0e777c028db1f48bd/verl/workers/engine/fsdp/transformer_impl.py)
#   `forward_backward_batch`). These workers run only with `trainer.use_legacy_worker_impl=disable`; the default,
#   `auto`, still loads the legacy `fsdp_workers.py` and `dp_actor.py` (`verl/trainer/main_ppo.py`,
#   `add_actor_rollout_worker`, at
#   [b178a3cd](https://github.com/volcengine/verl/blob/b178a3cd56f58b2d502255daba591e92833930a7/verl/trainer/main_ppo.py),
#   29 Jan 2026), which pass no global token count (`global_batch_info` is filled only by the engine's
#   `verl/workers/utils/losses.py`) and so still take a token mean per micro-batch, scaled by
#   `loss_scale_factor = response_mask.shape[0] / ppo_mini_batch_size`.
# - **`trl` 1.16**'s `loss_type="dapo"` divides by `num_items_in_batch`, the token count of the whole generation
#   batch gathered over all processes, rescaled to one optimizer step (`grpo_trainer.py`, `_compute_loss`); its
#   `bnpo` is a token mean per micro-batch, divided by the accumulation steps.
#
# </details>
#
# Per-batch and per-question normalisation agree when a batch holds one question, or when every question's
# answers have the same total length; otherwise per-batch normalisation (any of the rows above, with "batch" the
# micro-, mini- or generation batch) gives question $q$ the weight $\sum_{j\in q}|o_j| / \sum_{\text{batch}}|o_j|$
# instead of $1/n_q$: questions with long answers count more. The equation is the paper's definition, and the
# released recipe, which runs the per-micro-batch form, is reported to reproduce the paper's result; the text of
# §3.3 motivates only the within-question effect ("longer sequences can have more influence on the overall gradient
# update"), which both forms have. In the recipe a micro-batch, packed to at most 8 x 22,528 tokens
# (`ppo_max_token_len_per_gpu` times the sequence-parallel size 8), holds a few dozen long answers, so the run's
# weighting sat somewhere between the per-question and the per-mini-batch forms. This notebook implements `dapo`
# (one token mean per batch: the toy has one batch per update and no micro-batches) and `dapo_per_question` (eq. 12
# as written), and trains both below; its `DAPO` recipe uses the per-batch form.
#
# The check of the table: two wrong answers ($\hat A = -1$) of 2 and 6 tokens in one question, and a second
# question whose two answers have 1 token each.

# %%
def aggregate_from_scratch(per_token_loss, mask, loss_type, max_len=None, n_tokens=None, G=None):
    mask = mask.to(per_token_loss.dtype)
    masked = per_token_loss.expand(mask.shape) * mask  # (batch, T): padding contributes 0
    if loss_type == "grpo":  # eq. 3: mean over each answer's tokens, then over answers
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).mean()
    if loss_type == "dr_grpo":  # Dr. GRPO: a constant, batch * L_max
        return masked.sum() / (mask.shape[0] * max_len)
    if loss_type == "dapo":  # verl token-mean / trl dapo: one token mean over the whole batch
        return masked.sum() / (mask.sum() if n_tokens is None else n_tokens)
    if loss_type == "dapo_per_question":  # DAPO eq. 12 as written: token mean per question, then mean over questions
        per_q = masked.sum(dim=1).view(-1, G).sum(dim=1) / mask.sum(dim=1).view(-1, G).sum(dim=1).clamp(min=1.0)
        return per_q.mean()
    raise ValueError(loss_type)


mask_d5 = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
for loss_type in ("grpo", "dr_grpo", "dapo", "dapo_per_question"):
    logps = torch.zeros(4, 6, requires_grad=True)
    per_token = -logps * torch.tensor([[-1.0], [-1.0], [1.0], [-1.0]])  # on-policy: d(-rho A)/d log pi = -A
    loss = aggregate_from_scratch(per_token, mask_d5, loss_type, max_len=6, G=2)
    (grad,) = torch.autograd.grad(loss, logps)
    print(f"{loss_type:18s} weight per token: q1 short {grad[0, 0]:.4f}, q1 long {grad[1, 0]:.4f}, "
          f"q2 {grad[2, 0]:.4f} / {grad[3, 0]:.4f}; total weight q1 {grad[:2].abs().sum():.3f}, "
          f"q2 {grad[2:].abs().sum():.3f}")

# %% [markdown]
# GRPO pushes each token of the 6-token wrong answer down 3 times less than the 2-token one; Dr. GRPO and both
# DAPO forms treat them alike. The per-batch DAPO form gives question 2's tokens the same weight as question 1's
# (1/10 each), so question 1, with 8 tokens, carries 4 times question 2's total weight (0.8 against 0.2); the
# per-question form gives each question the same total weight, 0.5: 1/16 per token in q1 (1/8 within the question,
# halved by the mean over the 2 questions) and 1/4 in q2 (1/2 within it, halved).
#
# ### D6. The whole loss
#
# Ratios, clipped surrogate, plus $\beta\,\hat k_3$ (optionally $\rho$-weighted, D3), then one of the aggregations.
# `old_logps=None` is the on-policy case (a single update per batch, as DeepSeekMath §4.2): every ratio is 1 but
# its gradient is still $\nabla\log\pi_\theta$.

# %%
def grpo_loss_from_scratch(logps, advantages, mask, old_logps=None, ref_logps=None, beta=0.0,
                           eps_low=0.2, eps_high=0.2, loss_type="grpo", level="token", kl_ratio=False,
                           max_len=None, n_tokens=None, G=None):
    old_logps = logps.detach() if old_logps is None else old_logps
    log_ratio = log_ratios_from_scratch(logps, old_logps, mask, level)  # (batch, T) or (batch, 1)
    per_token = clipped_surrogate_from_scratch(log_ratio, advantages, eps_low, eps_high)
    if beta > 0:
        kl = k3_from_scratch(logps, ref_logps)  # (batch, T)
        per_token = per_token + beta * (kl * torch.exp(log_ratio) if kl_ratio else kl)
    return aggregate_from_scratch(per_token, mask, loss_type, max_len, n_tokens, G)

# %% [markdown]
# ### D7. Rewards and masks from DAPO: the $\pm1$ reward, overlong filtering, overlong shaping (§2.4, §3.4, eq. 13)
#
# **The $\pm1$ reward** (§2.4): $R(\hat y, y) = 1$ if the answer is equivalent to the reference, else $-1$. With the
# group std, $(r - \bar r)/\sigma$ is invariant to any affine map $r \mapsto a r + b$, $a > 0$, so $\pm1$ and 0/1
# give the same advantages (up to `eps`); without the std they are doubled, a constant that Adam ignores (D2). It
# matters only next to another reward term: added to the length penalty below, $\pm1$ halves the penalty's weight
# relative to correctness.
#
# **Overlong filtering** (§3.4, Table 1: 30 to 36) is a strategy "which masks the loss of truncated samples";
# `trl` calls it `mask_truncated_completions`. A completion counts as truncated when its last token is neither EOS nor padding
# (`grpo_trainer.py`, `_generate_and_score_completions`); its completion mask is zeroed, but its reward still
# enters the group's mean and std, which are computed from all $G$ rewards. **A version note.** The losses that
# divide by `num_items_in_batch` (`dapo`, the default, `cispo` and `vespo`) need that count taken after the
# masking, and `trl` 1.16.0 takes it there (`loss_mask.sum()`, just after the `mask_truncated_completions` block).
# Earlier code counted the tokens before the masking: [issue #6369](https://github.com/huggingface/trl/issues/6369)
# (July 2026) reports that the truncated tokens then stay in the denominator while leaving the numerator, which
# dilutes the loss (its example: 25 real tokens over a count of 30, a loss about 17% too small), and
# [pull request #6439](https://github.com/huggingface/trl/pull/6439) moved the count after the masking. The
# difference fires only with `mask_truncated_completions=True` and one of those three losses; `grpo`, `bnpo` and
# `dr_grpo` divide by the masked mask or by a constant. The `trl` generation check below asserts where 1.16.0 takes
# the count and prints both counts for its batch of 16 completions.
#
# **Soft overlong punishment** (eq. 13), with a hard cap $L_{\max}$ and a buffer $L_{\text{cache}}$:
#
# $$R_{\text{length}}(y) = \begin{cases} 0, & |y| \le L_{\max} - L_{\text{cache}} \\
# \frac{(L_{\max} - L_{\text{cache}}) - |y|}{L_{\text{cache}}}, & L_{\max} - L_{\text{cache}} < |y| \le L_{\max} \\
# -1, & L_{\max} < |y| \end{cases}$$
#
# added to the correctness reward; DAPO uses an expected maximum of 16,384 tokens plus a 4,096-token cache, so
# $L_{\max} = 20{,}480$ (§4.1).

# %%
def overlong_penalty(lengths, l_max, l_cache):
    """DAPO eq. 13 for lengths (batch,) -> (batch,) in [-1, 0]."""
    soft = ((l_max - l_cache) - lengths) / l_cache  # linear ramp inside the buffer
    return torch.where(lengths <= l_max - l_cache, 0.0, torch.where(lengths <= l_max, soft, -1.0))


def overlong_filter(mask, tokens, eos_id):
    """Zero the loss mask of completions that never emitted EOS (truncated at the length cap)."""
    stopped = ((tokens == eos_id) & mask.bool()).any(dim=1, keepdim=True)  # (batch, 1)
    return mask * stopped


correct_d7 = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
print("advantages, 0/1 reward:", [round(v, 3) for v in advantages_from_scratch(correct_d7, 4).tolist()])
print("advantages, +-1 reward:", [round(v, 3) for v in advantages_from_scratch(2 * correct_d7 - 1, 4).tolist()])
print("penalty for lengths 14..22 with L_max=20, L_cache=4:",
      [round(v, 2) for v in overlong_penalty(torch.arange(14.0, 23.0), 20, 4).tolist()])
toks_d7 = torch.tensor([[3, 0, 0], [2, 2, 2], [1, 1, 0]])  # token 0 = EOS; row 2 hit the cap without EOS
print("filtered mask:", overlong_filter(torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]]), toks_d7, 0).tolist())

# %% [markdown]
# The two advantage rows agree to 4 decimals (the `eps` in $\sigma + \epsilon$ makes the last digits differ).
#
# ### D8. Dynamic sampling as DAPO defines it (§3.2, eq. 11, Algorithm 1)
#
# If all $G$ rewards of a question are equal, every $r_i - \operatorname{mean}(\mathbf r) = 0$, so with $\beta = 0$ the
# group contributes zero gradient while still filling the batch. DAPO's constraint is on **accuracy**,
# $0 < |\{o_i \mid \text{is\_equivalent}(a, o_i)\}| < G$, and the paper's remedy is to "over-sample and filter out
# prompts with the accuracy equal to 1 and 0 [...] we keep sampling until the batch is fully filled with samples
# whose accuracy is neither 0 nor 1" (§3.2). `verl`'s recipe over-samples 3x (`gen_prompt_bsz = 3 *
# train_prompt_bsz`) and draws at most `max_num_gen_batches=10` generation batches per step, raising an error if
# they do not fill the batch (`recipe/dapo/README.md` and the run script at 03150d4). The toy's trainer draws rounds of 16 questions, at most 10, and trains
# on the groups it has when 10 rounds fall short, as they do in the first steps, when only about 1 group in 11 is
# informative. The readable version
# below loops over rounds of candidate groups; the trainer below does the same selection on a whole stack of
# policies at once (`first_informative`), and the two are compared.

# %%
def dynamic_sampling_readable(rounds_of_correct, Q):
    """rounds_of_correct: list of (Q, G) 0/1 tensors, one per sampling round. Returns the (round, group) kept."""
    kept = []
    for r, correct in enumerate(rounds_of_correct):  # keep sampling...
        for g, row in enumerate(correct):
            if 0 < row.sum() < len(row) and len(kept) < Q:  # ...groups that are neither all right nor all wrong
                kept.append((r, g))
        if len(kept) == Q:  # ...until the batch is full
            break
    return kept


def first_informative(informative, Q):
    """informative: (models, candidates) bool, candidates in sampling order -> indices (models, Q), valid mask."""
    keep = informative & (informative.cumsum(dim=1) <= Q)  # the first Q informative candidates of each model
    pos = torch.arange(informative.shape[1]).expand_as(informative)
    order = torch.argsort(torch.where(keep, pos, pos + informative.shape[1]), dim=1)[:, :Q]  # kept ones first
    return order, keep.gather(1, order)


gen_d8 = torch.Generator().manual_seed(0)
rounds = [(torch.rand(4, 8, generator=gen_d8) < p).long() for p in (0.02, 0.5, 0.97)]  # 3 rounds, Q=4, G=8
print("kept (round, group):", dynamic_sampling_readable(rounds, 4))

# %% [markdown]
# ### D9. Process supervision (DeepSeekMath §4.1.3)
#
# A process reward model scores each reasoning step: output $i$ has steps $j = 1, \dots, K_i$ ending at token
# $\text{index}(j)$, with rewards $r_i^{\text{index}(j)}$. All step rewards of the group, $\mathbf R$, are normalised
# together, $\tilde r_i^{\text{index}(j)} = (r_i^{\text{index}(j)} - \operatorname{mean}(\mathbf R))/\operatorname{std}(\mathbf R)$,
# and a token's advantage is the sum of the normalised rewards of the steps that end at or after it:
#
# $$\hat A_{i,t} = \sum_{\text{index}(j) \ge t} \tilde r_i^{\text{index}(j)} .$$
#
# So a token is credited for the quality of every later step of its answer, like a Monte-Carlo return with the
# group as baseline. Vectorised: put each step's reward on its last token, normalise over the step-end tokens of
# the group, and take a reverse cumulative sum along the answer. The loop version below is the paper's formula
# written out, an independent computation; the paper does not say which std, and this uses the unbiased one as
# the outcome case does.

# %%
def process_advantages(step_rewards, step_end, mask, G, eps=1e-4):
    """step_rewards, step_end, mask: (batch, T); step_end marks the last token of each step. -> (batch, T)."""
    ends = step_end.to(step_rewards.dtype)
    r = (step_rewards * ends).view(-1, G * step_rewards.shape[1])  # (n_questions, G*T): one row per group
    e = ends.view_as(r)
    n = e.sum(dim=1, keepdim=True)
    mean = r.sum(dim=1, keepdim=True) / n
    std = (((r - mean) ** 2 * e).sum(dim=1, keepdim=True) / (n - 1)).sqrt()  # unbiased, over step ends only
    normed = ((r - mean) / (std + eps) * e).view_as(step_rewards)  # normalised reward on each step's end token
    return normed.flip(1).cumsum(1).flip(1) * mask  # sum over steps ending at or after t


def process_advantages_loop(steps_per_output, T, eps=1e-4):
    """steps_per_output: per output, a list of (end_index, reward). The paper's formula, token by token."""
    all_r = torch.tensor([r for steps in steps_per_output for _, r in steps])
    mean, std = all_r.mean(), all_r.std()
    adv = torch.zeros(len(steps_per_output), T)
    for i, steps in enumerate(steps_per_output):
        for t in range(T):
            adv[i, t] = sum((r - mean) / (std + eps) for end, r in steps if end >= t)
    return adv


steps_d9 = [[(1, 1.0), (3, 0.0)], [(0, 1.0), (2, 1.0), (4, 1.0)], [(2, 0.0)], [(1, 1.0), (4, 0.0)]]  # G = 4
T9 = 5
sr, se = torch.zeros(4, T9), torch.zeros(4, T9, dtype=torch.bool)
for i, steps in enumerate(steps_d9):
    for end, r in steps:
        sr[i, end], se[i, end] = r, True
mask_d9 = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
adv_d9 = process_advantages(sr, se, mask_d9, G=4)
err_d9 = assert_close(adv_d9, process_advantages_loop(steps_d9, T9) * mask_d9, atol=1e-12, name="process adv")
print(adv_d9.round(decimals=3))
print(f"vectorised vs loop: max error {error_bound(err_d9, 1e-12)}")

# %% [markdown]
# Output 2 (three good steps) gets positive advantages that shrink towards its end; output 3 (one bad step)
# is negative throughout. Padding gets 0.
#
# ### D10. Iterative GRPO (DeepSeekMath §4.1.4) and Algorithm 1
#
# "As the reinforcement learning training process progresses, the old reward model may not be sufficient to
# supervise the current policy model": iterative GRPO retrains the reward model on samples of the current policy,
# with "a replay mechanism that incorporates 10% of historical data", then "set[s] the reference model as the
# policy model" and continues (§4.1.4; in Figure 6 the first iteration brings the largest gain). Algorithm 1:
#
# ```
# policy pi_theta <- pi_init
# for iteration = 1..I:                       # iterative GRPO (I = 1 is plain GRPO)
#     pi_ref <- pi_theta                       # the KL anchor moves with every iteration
#     for step = 1..M:
#         sample a batch D_b of questions
#         pi_old <- pi_theta
#         sample G outputs o_i ~ pi_old(.|q) for each q in D_b
#         compute rewards r_i with the reward model r_phi
#         compute A_{i,t} by group-relative advantage estimation (D1 outcome, or D9 process)
#         for GRPO iteration = 1..mu:         # mu updates per batch; ratios leave 1 after the first
#             update pi_theta by maximising J_GRPO
#     update r_phi by continuous training with replay (10% historical data)
# ```
#
# DeepSeekMath itself uses $\mu = 1$ ("a single update following each exploration stage", §4.2), 64 samples per
# question, batch size 1024, learning rate 1e-6 and $\beta = 0.04$. The toy below has an exact verifier, so only
# the reference update of iterative GRPO can be exercised (`GRPO β=0.04, iterative`, $\pi_{\text{ref}} \leftarrow
# \pi_\theta$ every 20 steps); the training loop in the walkthrough follows this algorithm line by line.
#
# **Where GRPO sits among the other methods (DeepSeekMath §5.2.1, "Towards to a Unified Paradigm"; Table 10;
# the derivations in Appendix A.1).** The paper writes the gradient of SFT, RFT, online RFT, DPO, PPO and GRPO in
# one form,
# $\nabla_\theta\mathcal J_{\mathcal A} = \mathbb E_{(q,o)\sim\mathcal D}\big[\frac{1}{|o|}\sum_t GC_{\mathcal A}(q,o,t,\pi_{rf})\,\nabla_\theta\log\pi_\theta(o_t\mid q,o_{<t})\big]$,
# and sorts them by three components: the data source $\mathcal D$, the reward function $\pi_{rf}$, and the
# algorithm $\mathcal A$, which produces the gradient coefficient $GC$ from the data and the reward. Data: SFT uses
# human-selected SFT data; RFT and DPO use offline samples from the SFT model; online RFT, PPO and GRPO sample
# from the current policy. Reward (Table 10): a rule (the answer's correctness) for RFT, online RFT and DPO; a
# model for PPO and GRPO. Coefficient: $GC = 1$ for SFT; for RFT and online RFT 1 for a right answer and 0
# otherwise (eq. 10); for DPO a sigmoid-weighted coefficient on the chosen/rejected pair (eq. 14); for PPO the
# advantage $A_t$, computed by GAE from a learned value model (eq. 18); for GRPO the group-normalised reward plus
# the KL term, $GC = \hat A_{i,t} + \beta\big(\frac{\pi_{\text{ref}}}{\pi_\theta} - 1\big)$ (eq. 21; D1, D3):
# unlike RFT it also pushes wrong answers down, unlike DPO it learns from online data, and unlike PPO it needs no
# value model. The paper's experiments in this frame (Figure 5) find online sampling better than offline, and
# GRPO better than online RFT; the toy runs the second comparison (online RFT is the advantage $GC = r \in \{0, 1\}$,
# `rft=True`) in the second run of the Reproduction.

# %% [markdown]
# ## Walkthrough
#
# A GRPO trainer written from the pieces above, in Algorithm 1's order, for a **stack of independent policies**
# trained at once: 15 variants x 8 replicates = 120 policies share every tensor operation, so 8 replicates of every
# ablation fit in the time budget. Nothing couples two policies: each has its own parameters, optimiser state,
# samples, rewards, advantages and loss; the total loss is a sum whose gradient with respect to policy $m$'s
# parameters is the gradient of policy $m$'s own loss.
#
# ### W1. The task and the policy
#
# **Task (verifiable, rule-based reward).** The prompt is a target $s \in \{5, \dots, 30\}$; the policy writes digits
# 1-9 and an end token (EOS = 0), at most $L = 10$ tokens including EOS; reward 1 if it stopped and its digits sum
# to $s$, else 0. Length is free (12 = "93" or "3333"), so length effects can act; an answer that never stops is
# truncated at 10 tokens.
#
# **Policy.** Autoregressive and tabular: $\pi_\theta(o_t \mid s, o_{<t}) = \mathrm{softmax}(\theta[s, \textstyle\sum_{k<t} o_k])$,
# one row of 10 logits per (target, running sum) state, running sums $0..s+1$ for target $s$ ($s + 1$ = overshot,
# a dead end). The running sum is a sufficient statistic for this task, so the table can represent the optimal
# policy; it has $\sum_{s=5}^{30}(s + 2) = 507$ states, $5{,}070$ logits, all trained, and starts at zero, i.e. uniform, so every run starts with per-token entropy
# exactly $\ln 10 = 2.303$ and about 1.4% of answers right (computed exactly below). GRPO only needs $\log\pi_\theta$ of the sampled tokens,
# so any autoregressive model would do; this one is cheap enough for 120 runs.
#
# `sample` draws tokens for a stack of policies from one cumulative-probability table `cdf` of shape
# `(models * 507, 10)`: the row of policy `m`, target index `j` and running sum `c` is
# `m * 507 + OFFSET[j] + min(c, TARGETS[j] + 1)`, with `OFFSET[j]` the rows of the targets before `j`.

# %%
EOS, VOCAB, L_GEN, L_CACHE = 0, 10, 10, 4  # token 0 ends the answer; tokens 1..9 are digits
TARGETS = torch.arange(5, 31)
N_TGT = len(TARGETS)
OFFSET = torch.cat([torch.zeros(1, dtype=torch.long), (TARGETS + 2).cumsum(0)[:-1]])  # first row of each target
STATES = int((TARGETS + 2).sum())  # 507 rows of one policy's table: sums 0..s+1 for each target s


def sample(cdf, models, tgt, gen):
    """cdf: (all_models * STATES, VOCAB); models: (m,) policy ids; tgt: (m, B) target indices.

    Returns tokens, states (flat row of each token's logits), mask (1 up to and including EOS), all (m, B, L_GEN),
    and the digit sum and stopped flag (m, B)."""
    u = torch.rand(*tgt.shape, L_GEN, generator=gen)  # (m, B, L_GEN) uniforms: inverse-CDF sampling
    total = torch.zeros(tgt.shape, dtype=torch.long)
    alive = torch.ones(tgt.shape, dtype=torch.bool)
    base = models[:, None] * STATES + OFFSET[tgt]  # (m, B): row of running sum 0
    cap = TARGETS[tgt] + 1  # (m, B): the overshot state
    tokens, states, mask = [], [], []
    for _ in range(L_GEN):
        state = base + total  # (m, B)
        tok = (cdf[state] < u[..., len(tokens), None]).sum(-1).clamp(max=VOCAB - 1)  # (m, B)
        tok = torch.where(alive, tok, EOS)  # after EOS: padding (masked out)
        tokens.append(tok), states.append(state), mask.append(alive)
        total = torch.where(alive, torch.minimum(total + tok, cap), total)
        alive = alive & (tok != EOS)
    tokens, mask = torch.stack(tokens, -1), torch.stack(mask, -1)  # (m, B, L_GEN)
    stopped = (mask & (tokens == EOS)).any(-1)  # (m, B): emitted EOS within L_GEN
    return tokens, torch.stack(states, -1), mask, total, stopped


def table_cdf(theta):  # (rows, VOCAB) logits -> cumulative probabilities for `sample`
    return torch.softmax(theta, -1).cumsum(-1)


demo_theta = torch.zeros(STATES, VOCAB)  # one uniform policy
tok_demo, st_demo, mask_demo, sum_demo, stop_demo = sample(
    table_cdf(demo_theta), torch.tensor([0]), torch.tensor([[0, 7, 25]]), torch.Generator().manual_seed(1))
for j in range(3):
    print(f"target {TARGETS[[0, 7, 25][j]].item():2d}: tokens {tok_demo[0, j].tolist()}, mask "
          f"{mask_demo[0, j].int().tolist()}, digit sum {(tok_demo[0, j] * mask_demo[0, j]).sum().item()}, state sum "
          f"{sum_demo[0, j].item()}, stopped {stop_demo[0, j].item()}")
print("P(answer reaches 7+ tokens) for the uniform policy = 0.9**6 =", round(0.9**6, 3))
ways = torch.zeros(L_GEN, 9 * L_GEN + 1)  # ways[k, s]: the number of k-digit strings (digits 1-9) with digit sum s
ways[0, 0] = 1
for k in range(1, L_GEN):
    for d in range(1, 10):
        ways[k, d:] += ways[k - 1, :-d]
p_right = sum(ways[k, TARGETS] * 0.1 ** (k + 1) for k in range(1, L_GEN))  # (26,) k digits, then EOS
print(f"uniform policy, exact share of right answers: {p_right.mean():.2%} averaged over the 26 targets "
      f"(target 5: {p_right[0]:.2%}, target 30: {p_right[-1]:.3%})")

# %% [markdown]
# ### W2. Rewards, advantages and the loss for the whole stack
#
# `batched_loss` is D6 for every policy at once, on `(models, batch, T)` tensors, with each policy's own settings
# read from per-model tensors in `cfg` (β, ρ-weighted KL or not, $\varepsilon_{\text{high}}$, aggregation 0-3 =
# grpo, dr_grpo, dapo (per batch), dapo_per_question). `valid` marks the groups a policy trains on (dynamic
# sampling may leave a batch short). It returns one loss per policy, `(models,)`; the reference check compares
# each policy's loss and gradient with `grpo_loss_from_scratch`.

# %%
def batched_loss(logp, old, ref, adv, lmask, valid, cfg, G):
    """logp, old, ref, adv, lmask: (M, B, T); valid: (M, B // G) groups in the batch. Returns (M,) losses."""
    ratio = torch.exp(logp - old)
    eps_high = cfg["eps_high"][:, None, None]
    clipped = torch.minimum(torch.maximum(ratio, torch.tensor(0.8)), 1 + eps_high)  # eps_low = 0.2 everywhere
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    k3 = torch.exp(ref - logp) - (ref - logp) - 1
    k3 = torch.where(cfg["kl_ratio"][:, None, None], k3 * ratio, k3)  # trl's use_bias_correction_kl
    per_token = (per_token + cfg["beta"][:, None, None] * k3) * lmask
    M, B, T = logp.shape
    rows = (valid.sum(1) * G).clamp(min=1)  # answers in the batch
    seq = per_token.sum(-1)  # (M, B)
    grpo = (seq / lmask.sum(-1).clamp(min=1)).sum(1) / rows  # eq. 3
    dr_grpo = seq.sum(1) / (rows * T)  # Dr. GRPO, L_max = T
    dapo = seq.sum(1) / lmask.sum((1, 2)).clamp(min=1)  # one token mean over the batch (verl, trl)
    per_q = seq.view(M, -1, G).sum(-1) / lmask.view(M, -1, G * T).sum(-1).clamp(min=1)  # (M, n_q)
    dapo_q = (per_q * valid).sum(1) / valid.sum(1).clamp(min=1)  # eq. 12 as written
    agg = cfg["agg"]
    return torch.where(agg == 0, grpo, torch.where(agg == 1, dr_grpo, torch.where(agg == 2, dapo, dapo_q)))


def oracle_step_rewards(tokens, mask, target, stopped, total):
    """A process reward for the toy (D9): every token is one step. A digit step scores 1 if the target can still
    be reached exactly in the tokens left, the EOS step scores 1 if the answer is right. (m, B, T) each."""
    psum = (tokens * mask).cumsum(-1)
    rem = target[..., None] - psum  # what is left to write after this token
    digits_left = (L_GEN - torch.arange(L_GEN) - 2).clamp(min=0)  # one slot must stay free for EOS
    reachable = (rem == 0) | ((rem > 0) & (rem <= 9 * digits_left))
    right = (stopped & (total == target))[..., None].expand_as(tokens)
    return torch.where(tokens == EOS, right, reachable).to(torch.get_default_dtype())


# %% [markdown]
# A tiny example of both. `batched_loss` on a stack of 2 policies that see the same on-policy batch of one
# question with 2 answers (a right one of 1 token, $\hat A = +1$; a wrong one of 3 tokens, $\hat A = -1$), policy 0
# with eq. 3's aggregation and policy 1 with the per-batch token mean; printed, $\partial L/\partial\log\pi$ of each
# real token (D5's weights: $\mp 1/(G|o_i|)$ against $\mp 1/\sum|o_j|$). Then the process reward of three answers to
# the target 12: "9 3" (right), "9 9" (overshoots at its second digit) and "5" (stops short).

# %%
cfg_w2 = dict(beta=torch.zeros(2), kl_ratio=torch.zeros(2, dtype=torch.bool), eps_high=torch.full((2,), 0.2),
              agg=torch.tensor([0, 2]))  # policy 0: grpo, policy 1: dapo (per batch)
lp_w2 = torch.log(torch.tensor([[0.5, 1.0, 1.0], [0.2, 0.4, 0.5]])).expand(2, 2, 3).clone().requires_grad_(True)
lmask_w2 = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]).expand(2, 2, 3)  # (M, B, T): lengths 1 and 3
adv_w2 = torch.tensor([1.0, -1.0])[None, :, None].expand(2, 2, 3)  # one advantage per answer
loss_w2 = batched_loss(lp_w2, lp_w2.detach(), lp_w2.detach(), adv_w2, lmask_w2, torch.ones(2, 1, dtype=torch.bool),
                       cfg_w2, G=2)  # (M,)
(grad_w2,) = torch.autograd.grad(loss_w2.sum(), lp_w2)
for m, label in enumerate(("grpo", "dapo (per batch)")):
    print(f"policy {m}, {label:16s}: loss {loss_w2[m].item():+.3f}; d loss / d log pi: right answer "
          f"{grad_w2[m, 0, 0].item():+.3f}, wrong answer {[round(v, 3) for v in grad_w2[m, 1].tolist()]}")
tok_w2 = torch.zeros(1, 3, L_GEN, dtype=torch.long)  # (m, B, T), EOS = 0 after the digits
tok_w2[0, 0, :2], tok_w2[0, 1, :2], tok_w2[0, 2, :1] = torch.tensor([9, 3]), torch.tensor([9, 9]), torch.tensor([5])
len_w2 = torch.tensor([3, 3, 2])  # digits + EOS
mask_w2 = (torch.arange(L_GEN) < len_w2[:, None])[None]  # (1, 3, L_GEN)
total_w2 = torch.minimum((tok_w2 * mask_w2).sum(-1), torch.tensor(13))  # the running sum, capped at s + 1
steps_w2 = oracle_step_rewards(tok_w2, mask_w2, torch.full((1, 3), 12), torch.ones(1, 3, dtype=torch.bool), total_w2)
for i in range(3):
    n = int(len_w2[i])
    print(f"target 12, tokens {tok_w2[0, i, :n].tolist()} (0 = EOS): step rewards {steps_w2[0, i, :n].int().tolist()}")

# %% [markdown]
# ### W3. Adam for a stack of policies
#
# Adam is element-wise, so one Adam over the stacked table is 120 independent Adams, as long as each policy keeps
# its own step count and a policy that has spent its sample budget stops moving (its moments are frozen too).
# The reference check compares one policy's trajectory with `torch.optim.Adam`.

# %%
def adam_step(theta, grad, state, active, lr, betas=(0.9, 0.999), eps=1e-8):
    """theta, grad: (M * STATES, VOCAB); state: dict m, v (like theta), t (M,) steps taken; active: (M,) bool."""
    M = len(active)
    state["t"] = state["t"] + active
    th, g, m, v = (x.view(M, -1) for x in (theta, grad, state["m"], state["v"]))  # one row per policy
    rows = active.nonzero()[:, 0]
    full = len(rows) == M  # usually every policy moves: skip the indexing

    def sel(x):
        return x if full else x[rows]

    t = state["t"][rows][:, None]  # (k, 1): each moving policy's own step count
    gk = sel(g)
    m_new = (betas[0] * sel(m)).add_((1 - betas[0]) * gk)  # beta1 m + (1 - beta1) g
    v_new = (betas[1] * sel(v)).add_(gk.square().mul_(1 - betas[1]))  # beta2 v + (1 - beta2) g^2
    step = (m_new / (1 - betas[0] ** t)).mul_(lr).div_((v_new / (1 - betas[1] ** t)).sqrt_().add_(eps))
    if full:
        state["m"], state["v"] = m_new.view_as(theta), v_new.view_as(theta)
        return (th - step).view_as(theta)
    m[rows], v[rows] = m_new, v_new  # frozen policies keep their moments
    new = th.clone()
    new[rows] = th[rows] - step
    return new.view_as(theta)


# %% [markdown]
# A tiny example: one step for a stack of 2 policies, the second out of budget. Adam's first step is
# $\mathrm{lr}\cdot g/(|g| + \epsilon)$ (the bias-corrected moments are $g$ and $g^2$), so policy 0 moves by
# $-0.1\,\mathrm{sign}(g)$ in every logit; policy 1 must not move, and its step count stays 0.

# %%
theta_w3 = torch.zeros(2 * STATES, VOCAB)  # (M * STATES, VOCAB)
grad_w3 = torch.randn(2 * STATES, VOCAB, generator=torch.Generator().manual_seed(0))
state_w3 = dict(m=torch.zeros_like(theta_w3), v=torch.zeros_like(theta_w3), t=torch.zeros(2))
theta_w3 = adam_step(theta_w3, grad_w3, state_w3, torch.tensor([True, False]), lr=0.1)
print(f"step counts {state_w3['t'].tolist()}; policy 0: max |theta + 0.1 sign(g)| "
      f"{error_bound((theta_w3[:STATES] + 0.1 * grad_w3[:STATES].sign()).abs().max().item(), 1e-6)}; policy 1 "
      f"moved {theta_w3[STATES:].abs().max().item():.1f}, its moments {state_w3['v'][STATES:].abs().max().item():.1f}")


# %% [markdown]
# ### W4. The training loop (Algorithm 1) in four pieces
#
# One call trains every variant x replicate. Per step, for every policy still within its budget of sampled
# answers: (a) sample a batch and, for dynamic sampling, more rounds; (b) rewards, advantages and loss masks;
# (c) $\mu = 4$ Adam updates on the same batch, with the logs; (d) the iterative-GRPO reference reset and the
# evaluation checkpoints. Each piece is one function below, and `train` composes them. The variants' settings
# are per-policy tensors in `cfg`, built from `DEFAULT` and each variant's changes.
#
# **(a) Sampling** (Algorithm 1: $\pi_{\text{old}} \leftarrow \pi_\theta$, sample $G$ outputs per question). $Q = 16$
# questions x $G = 8$ answers per policy; policies with dynamic sampling keep drawing rounds of 16 more questions
# until 16 informative groups are found or 10 rounds are spent (D8). Every sampled answer counts against the
# budget (`used`), including the ones dynamic sampling throws away; `tokens_used` counts their tokens. Logged from
# the first round (all variants alike): the share of groups with no signal and the mean length of the wrong and
# of the right answers (Dr. GRPO's Figure 5 quantity). Returns the batch each policy trains on, `(M, Q*G, T)`
# tensors, and `valid`, `(M, Q)`, the groups it kept.

# %%
DEFAULT = dict(beta=0.0, kl_ratio=False, ref_every=0, std=True, agg=0, eps_high=0.2, pm1=False, shaping=False,
               l_cache=L_CACHE, filt=False, dyn=False, process=False, rft=False)


def draw_batch(cdf, cfg, active, used, tokens_used, gen, Q, G, max_rounds, logs, step):
    M = len(active)
    all_m = torch.arange(M)
    tgt = torch.randint(N_TGT, (M, Q), generator=gen)  # a batch D_b of questions per policy
    tok, st, mask, total, stopped = sample(cdf, all_m, tgt.repeat_interleave(G, 1), gen)  # pi_old = pi_theta
    used += active * Q * G
    tokens_used += active * mask.sum((1, 2))
    right0 = (stopped & (total == TARGETS[tgt].repeat_interleave(G, 1))).double()  # (M, Q*G)
    n_right = right0.view(M, Q, G).sum(-1)
    informative = (n_right > 0) & (n_right < G)  # (M, Q): neither all right nor all wrong
    logs["no_signal"][step] = torch.where(active, 1 - informative.double().mean(1), math.nan)
    len0 = mask.sum(-1).double()
    for key, w in (("len_wrong", 1 - right0), ("len_right", right0)):  # mean length of wrong / right answers
        logs[key][step] = torch.where(active, (len0 * w).sum(1) / w.sum(1), math.nan)
    valid = torch.ones(M, Q, dtype=torch.bool)
    dyn = (cfg["dyn"] & active).nonzero()[:, 0]
    if len(dyn):  # dynamic sampling: more rounds for these policies until Q informative groups
        pool = [(tgt[dyn], tok[dyn], st[dyn], mask[dyn], total[dyn], stopped[dyn], informative[dyn])]
        for _ in range(max_rounds - 1):
            need = torch.cat([p[-1] for p in pool], 1).sum(1) < Q  # (len(dyn),)
            if not need.any():
                break
            t2 = torch.randint(N_TGT, (len(dyn), Q), generator=gen)
            out = sample(cdf, dyn, t2.repeat_interleave(G, 1), gen)
            used[dyn] += need * Q * G
            tokens_used[dyn] += need * out[2].sum((1, 2))
            r2 = (out[4] & (out[3] == TARGETS[t2].repeat_interleave(G, 1))).view(len(dyn), Q, G).sum(-1)
            pool.append((t2, *out, (r2 > 0) & (r2 < G) & need[:, None]))
        order, kept = first_informative(torch.cat([p[-1] for p in pool], 1), Q)  # (len(dyn), Q)
        rows = (order[..., None] * G + torch.arange(G)).flatten(1)  # (len(dyn), Q * G) answer rows

        def gather(i):  # field i over rounds, the chosen groups (i = 0) or their answers' rows
            x = torch.cat([p[i] for p in pool], 1)
            idx = order if i == 0 else rows
            return x.gather(1, idx.view(*idx.shape, *[1] * (x.dim() - 2)).expand(*idx.shape, *x.shape[2:]))

        tgt[dyn], tok[dyn], st[dyn], mask[dyn] = gather(0), gather(1), gather(2), gather(3)
        total[dyn], stopped[dyn], valid[dyn] = gather(4), gather(5), kept
    return dict(tgt=tgt, tok=tok, st=st, mask=mask, total=total, stopped=stopped, valid=valid)


# %% [markdown]
# **(b) Rewards, advantages, masks.** The reward is 1 for a right answer, else 0, or ±1 (DAPO §2.4), plus eq. 13's
# penalty with $L_{\max} = 10$, $L_{\text{cache}} = 4$ (D7); the advantages are D1's group baseline, divided by the
# group std or not, or D9's process advantages with every token a step; the loss mask is the completion mask,
# restricted to the kept groups and the policies still in budget, minus truncated answers under overlong
# filtering (D7). The check section compares this piece, through a whole `train` step, with
# `advantages_from_scratch`, `overlong_penalty` and `overlong_filter`.

# %%
def rewards_advantages_masks(b, cfg, active, G):
    tok, mask, total, stopped = b["tok"], b["mask"], b["total"], b["stopped"]
    M, B, T = tok.shape
    target = TARGETS[b["tgt"]].repeat_interleave(G, 1)  # (M, B)
    right = (stopped & (total == target)).double()
    length = mask.sum(-1).double()
    reward = torch.where(cfg["pm1"][:, None], 2 * right - 1, right)  # DAPO's +-1 reward (§2.4)
    reward = reward + cfg["shaping"][:, None] * overlong_penalty(length, L_GEN, cfg["l_cache"][:, None])  # eq. 13
    grouped = reward.view(M, -1, G)  # (M, Q, G)
    centred = grouped - grouped.mean(-1, keepdim=True)  # the group baseline (D1)
    adv = torch.where(cfg["std"][:, None, None], centred / (grouped.std(-1, keepdim=True) + 1e-4), centred)
    adv = torch.where(cfg["rft"][:, None, None], grouped, adv)  # online RFT: GC = 1 if right, else 0 (eq. 10)
    adv = adv.view(M, B, 1).expand(M, B, T)
    if cfg["process"].any():  # D9, every token a step
        step_r = oracle_step_rewards(tok, mask, target, stopped, total)
        p_adv = process_advantages(step_r.view(-1, T), mask.view(-1, T), mask.view(-1, T).double(), G).view(M, B, T)
        adv = torch.where(cfg["process"][:, None, None], p_adv, adv)
    lmask = mask & b["valid"].repeat_interleave(G, 1)[..., None] & active[:, None, None]
    lmask = lmask & ~(cfg["filt"][:, None, None] & ~stopped[..., None])  # overlong filtering (D7)
    return adv, lmask.double()


# %% [markdown]
# **(c) The update and its logs.** $\mu$ Adam steps on the same batch: before the first, $\pi_\theta = \pi_{\text{old}}$,
# so the ratios are 1; after it they leave 1 and clipping acts. Logged per step: the mean per-token entropy of
# $\pi_{\text{old}}$ at the sampled states (exact, from the table), the mean k3 to $\pi_{\text{ref}}$ (`trl`'s `kl`,
# logged here even when $\beta = 0$), and the clip fraction of the last update (`trl`'s `clip_ratio/region_mean`,
# computed by `clip_fraction` and `token_mean`, the same functions the `trl` check below calls:
# $\rho < 1 - \varepsilon_{\text{low}}$ with $\hat A < 0$, or $\rho > 1 + \varepsilon_{\text{high}}$ with $\hat A > 0$).

# %%
def token_mean(x, lmask):  # (..., B, T) -> (...,): mean over the real tokens, as trl's masked metrics
    return (x * lmask).sum((-2, -1)) / lmask.sum((-2, -1)).clamp(min=1)


def clip_fraction(ratio, adv, lmask, eps_high, eps_low=0.2):  # trl's clip_ratio/region_mean
    clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))  # where the clip binds
    return token_mean(clipped.to(lmask.dtype), lmask)


def update(theta, adam, ref_logp_table, b, adv, lmask, cfg, active, mu, lr, G, logs, step):
    flat = b["st"] * VOCAB + b["tok"]  # index of each sampled token's logit in the flat table
    ref = ref_logp_table.view(-1)[flat]  # (M, B, T) log pi_ref of the sampled tokens
    for it in range(mu):  # GRPO iterations on the same batch
        leaf = theta.clone().requires_grad_(True)
        logp_table = torch.log_softmax(leaf, -1)
        logp = logp_table.view(-1)[flat]  # (M, B, T)
        if it == 0:  # before the first update pi_theta is pi_old
            old = logp.detach()
            lt = logp_table.detach()
            entropy = -(lt.exp() * lt).sum(-1)[b["st"]]  # (M, B, T) exact entropy of pi_old at the sampled states
            logs["entropy"][step] = torch.where(active, token_mean(entropy, lmask), math.nan)
            logs["kl"][step] = torch.where(active, token_mean(k3_from_scratch(old, ref), lmask), math.nan)
        loss = batched_loss(logp, old, ref, adv, lmask, b["valid"], cfg, G)  # (M,)
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
        theta = adam_step(theta, grad, adam, active, lr)
    with torch.no_grad():  # clip fraction of the last update, as trl's clip_ratio/region_mean
        clip = clip_fraction(torch.exp(logp.detach() - old), adv, lmask, cfg["eps_high"][:, None, None])
        logs["clip"][step] = torch.where(active, clip, math.nan)
    return theta


# %% [markdown]
# A tiny example of (a)-(c) together: a stack of 2 policies, both starting from a table that gives the right next
# token probability 0.6 (so that groups have signal), the control and Dr. GRPO with DAPO's ±1 reward and overlong
# shaping; $Q = 2$ questions x $G = 4$ answers each, one round. Printed, for each policy's first group: the
# answers' tokens (up to EOS), right or wrong, length, advantage and loss mask; then the logs of $\mu = 4$ updates
# and how far the logits moved. With the std, the group's advantages have unit (unbiased) variance; Dr. GRPO's are
# only centred ±1 rewards, and the length penalty of eq. 13 (answers of 7 tokens or more; −0.5 for 8 tokens) makes
# the long wrong answer the most negative.

# %%
row_tgt = torch.repeat_interleave(torch.arange(N_TGT), TARGETS + 2)  # target index of each of the 507 rows
row_sum = torch.arange(STATES) - OFFSET[row_tgt]  # running digit sum of each row (s + 1 = overshot)
guided = torch.zeros(STATES, VOCAB)  # the right next token (the rest of the target, at most 9; EOS once there)
right_tok = torch.where(row_sum < TARGETS[row_tgt], (TARGETS[row_tgt] - row_sum).clamp(max=9), EOS)
guided[torch.arange(STATES), right_tok] = math.log(13.5)  # probability 13.5 / (13.5 + 9) = 0.6 for the right token
demo_w4 = {"control": dict(), "Dr. GRPO, +-1 & shaping": dict(std=False, agg=1, pm1=True, shaping=True)}
cfg_w4 = {k: torch.tensor([{**DEFAULT, **v}[k] for v in demo_w4.values()]) for k in DEFAULT}
theta_w4 = guided.repeat(2, 1)  # (2 * STATES, VOCAB)
logs_w4 = {k: torch.full((1, 2), math.nan) for k in ("no_signal", "len_wrong", "len_right", "entropy", "kl", "clip")}
active_w4, used_w4, tokens_w4 = torch.ones(2, dtype=torch.bool), torch.zeros(2), torch.zeros(2)
b_w4 = draw_batch(table_cdf(theta_w4), cfg_w4, active_w4, used_w4, tokens_w4, torch.Generator().manual_seed(2),
                  2, 4, 1, logs_w4, 0)  # (a): Q = 2, G = 4, one round
adv_w4, lmask_w4 = rewards_advantages_masks(b_w4, cfg_w4, active_w4, 4)  # (b): (M, Q*G, T) each
right_w4 = b_w4["stopped"] & (b_w4["total"] == TARGETS[b_w4["tgt"]].repeat_interleave(4, 1))  # (M, Q*G)
for m, name in enumerate(demo_w4):
    print(f"{name}: target {TARGETS[b_w4['tgt'][m, 0]].item()}")
    for i in range(4):
        n = int(b_w4["mask"][m, i].sum())
        print(f"  tokens {str(b_w4['tok'][m, i, :n].tolist()):28s} {'right' if right_w4[m, i] else 'wrong'}, "
              f"{n} tokens, advantage {adv_w4[m, i, 0].item():+.3f}, loss mask {lmask_w4[m, i].int().tolist()}")
adam_w4 = dict(m=torch.zeros_like(theta_w4), v=torch.zeros_like(theta_w4), t=torch.zeros(2))
theta_w4_new = update(theta_w4, adam_w4, torch.log_softmax(theta_w4, -1), b_w4, adv_w4, lmask_w4, cfg_w4, active_w4,
                      4, 0.1, 4, logs_w4, 0)  # (c): mu = 4, lr = 0.1; pi_ref = the starting table
print(f"answers drawn {used_w4.tolist()}, tokens {tokens_w4.tolist()}; after 4 updates: "
      + "; ".join(f"{name}: entropy of pi_old {logs_w4['entropy'][0, m]:.3f}, clip fraction {logs_w4['clip'][0, m]:.3f}, "
                  f"logits moved up to {(theta_w4_new - theta_w4).view(2, -1)[m].abs().max():.2f}"
                  for m, name in enumerate(demo_w4)))


# %% [markdown]
# **(d) Evaluation, and the loop.** Each policy is evaluated (8 samples at temperature 1 for each of the 26 targets)
# at the first step at or past each multiple of 1,280 sampled answers: for the fixed-batch variants exactly at
# 1,280, 2,560, ...; for dynamic sampling, whose steps draw up to 1,280 answers, up to 1,280 answers past the mark
# (`acc_at` records where). At the end, 32 samples per target. Iterative GRPO resets $\pi_{\text{ref}} \leftarrow
# \pi_\theta$ every `ref_every` steps (D10). All policies draw from **one random stream** (`gen_seed`), so the 8
# replicates of a variant are independent draws, but no replicate can be re-run alone.

# %%
def evaluate(theta, models, gen, n):  # accuracy of each policy over all 26 targets, n samples each (temp. 1)
    tgt = torch.arange(N_TGT).repeat_interleave(n)[None].expand(len(models), -1)
    _, _, _, total, stopped = sample(table_cdf(theta), models, tgt, gen)
    return (stopped & (total == TARGETS[tgt])).to(torch.get_default_dtype()).mean(1)


def train(variants, seeds, steps=80, Q=16, G=8, mu=4, lr=0.1, ckpt=1280, max_rounds=10, gen_seed=0, progress=True):
    names = [n for n in variants for _ in seeds]
    M = len(names)
    cfg = {k: torch.tensor([{**DEFAULT, **variants[n]}[k] for n in names]) for k in DEFAULT}
    gen = torch.Generator().manual_seed(gen_seed)  # one stream for all M policies
    theta = torch.zeros(M * STATES, VOCAB)  # every policy starts uniform
    ref_theta = theta.clone()  # pi_ref <- pi_theta (Algorithm 1, line 3)
    ref_logp_table = torch.log_softmax(ref_theta, -1)
    adam = dict(m=torch.zeros_like(theta), v=torch.zeros_like(theta), t=torch.zeros(M))
    budget, all_m = steps * Q * G, torch.arange(M)
    used, tokens_used = torch.zeros(M), torch.zeros(M)
    n_ck = budget // ckpt
    acc, acc_at = torch.full((n_ck + 1, M), math.nan), torch.full((n_ck + 1, M), math.nan)
    acc[0], acc_at[0] = evaluate(theta, all_m, gen, 8), 0.0
    logs = {k: torch.full((steps, M), math.nan)
            for k in ("entropy", "clip", "kl", "no_signal", "samples", "len_wrong", "len_right")}
    snapshot = None
    for step in tqdm(range(steps), desc=f"GRPO, {M} policies", disable=not progress):
        active = used < budget
        if not active.any():
            break
        b = draw_batch(table_cdf(theta), cfg, active, used, tokens_used, gen, Q, G, max_rounds, logs, step)  # (a)
        adv, lmask = rewards_advantages_masks(b, cfg, active, G)  # (b)
        logs["samples"][step] = torch.where(active, used, math.nan)
        theta = update(theta, adam, ref_logp_table, b, adv, lmask, cfg, active, mu, lr, G, logs, step)  # (c)
        every = cfg["ref_every"]  # (d)
        reset = active & (every > 0) & ((step + 1) % every.clamp(min=1) == 0)  # iterative GRPO: pi_ref <- pi_theta
        if reset.any():
            ref_theta = torch.where(reset.repeat_interleave(STATES)[:, None], theta, ref_theta)
            ref_logp_table = torch.log_softmax(ref_theta, -1)
        k_next = acc_at.isnan().int().argmax(0)  # next checkpoint index of each policy
        due = (used >= k_next * ckpt) & acc_at[-1].isnan()  # the first step at or past the mark
        if due.any():
            d = due.nonzero()[:, 0]
            acc[k_next[d], d], acc_at[k_next[d], d] = evaluate(theta, d, gen, 8), used[d]
        if snapshot is None and (used >= ckpt).all():
            snapshot = theta.clone()  # every policy after its first 1,280 samples (for Maj@K vs Pass@K)
    final = evaluate(theta, all_m, gen, 32)
    return dict(names=names, acc=acc, acc_at=acc_at, final=final, used=used, tokens=tokens_used, logs=logs,
                theta=theta, snapshot=snapshot, cfg=cfg, last_batch=b)

# %% [markdown]
# ## Check against a reference
#
# Eight checks, each between two independent computations:
#
# 1. **`trl` 1.16.0's `GRPOTrainer._compute_loss`, directly.** A `GRPOTrainer` is built offline from a 1-layer
#    Llama with a 13-token character vocabulary (as `tests/test_policy_losses.py` does); its
#    `_get_per_token_logps_and_entropies` is replaced by a function that returns fixed log-probs, so `trl` and
#    `grpo_loss_from_scratch` see the same numbers. Compared: the loss and its gradient for `loss_type` grpo, bnpo,
#    dr_grpo and dapo (with a `num_items_in_batch` larger than this micro-batch's tokens, as when the generation
#    batch is split), token and sequence ratios, $\beta = 0$, and $\beta = 0.04$ with and without
#    `use_bias_correction_kl`, on an off-policy batch that hits both clip bounds; one pass with gradient
#    accumulation over 4 micro-batches (D5's rescaling to one optimizer step); and the metrics `trl` logs
#    (`clip_ratio/region_mean`, `kl`) against the functions the trainer above logs them with (`clip_fraction`, `token_mean`).
# 2. **`trl`'s group advantages and `mask_truncated_completions`**, run through `trl`'s own
#    `_generate_and_score_completions` (tiny generation on CPU), against `advantages_from_scratch` for
#    `scale_rewards` group, batch and none, and against `overlong_filter`, with `num_items_in_batch` (D7's version
#    note) against the filtered mask's token count; and `trl.rewards.get_soft_overlong_punishment` against
#    `overlong_penalty`.
# 3. **Liger-Kernel's `LigerFusedLinearGRPOLoss`** (`liger_kernel.chunked_loss`, 0.8.5, on CPU), a second
#    implementation that takes the hidden states and the LM head instead of log-probs, for the same four loss types,
#    token and sequence ratios, with and without the ratio-weighted KL.
# 4. **The course's `shared.policy_losses`** (tested against `trl` in `tests/`) against the from-scratch pieces.
# 5. **The stacked trainer's `batched_loss`** against `grpo_loss_from_scratch`, policy by policy, for all four
#    aggregations, value and gradient; and `first_informative` against `dynamic_sampling_readable`.
# 6. **`adam_step`** against `torch.optim.Adam` on one policy of the stack (the others frozen).
# 7. **Three whole `train` steps** (sampling, dynamic sampling, rewards, outcome and process advantages, masks,
#    4 updates each, the KL to a reference that differs from $\pi_{\text{old}}$, the iterative reset on its
#    schedule, online RFT's advantages, a per-policy shaping buffer) for five policies, replayed from their tokens
#    alone with the single-batch from-scratch pieces and `torch.optim.Adam`; and every logged quantity (clip
#    fraction, k3, entropy, lengths, no-signal share) recomputed from the replay.
# 8. **`evaluate`** against right/wrong recomputed from the sampled tokens, and **dynamic sampling's budget**
#    (`used`, `tokens_used`, the kept groups) against a readable replay of its rounds.
#
# (D3's KL gradients and D9's process advantages were checked above, against autograd of the exact KLs and the
# paper's formula as a loop.)

# %%
import tempfile
import warnings

from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import GRPOConfig, GRPOTrainer
from trl.rewards import get_soft_overlong_punishment


def reward_trl(completions, **kw):  # a reward with ties and spread, for the advantage check: odd digits, mod 3
    return [float(sum(ch in "13579" for ch in c) % 3) for c in completions]


chars = ["<eos>", "<unk>", *"0123456789+"]  # 13 tokens; EOS doubles as padding
tok_trl = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token="<unk>"))
tok_trl.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")  # one token per character
tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok_trl, pad_token="<eos>", eos_token="<eos>", unk_token="<unk>")
torch.manual_seed(0)
llama = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                     pad_token_id=0, eos_token_id=0, bos_token_id=None)).double()
B_T, G_T, T_T = 8, 4, 6  # 2 prompts x 4 generations, completion length 6
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # transformers' and trl's notices about a config this small
    trainer = GRPOTrainer(
        model=llama, reward_funcs=reward_trl,
        args=GRPOConfig(output_dir=tempfile.mkdtemp(), report_to="none", use_cpu=True,
                        per_device_train_batch_size=B_T, num_generations=G_T, max_completion_length=T_T,
                        beta=0.0, logging_strategy="no", save_strategy="no"),
        train_dataset=Dataset.from_dict({"prompt": ["1+2", "3+4"]}), processing_class=tokenizer)
trainer.current_gradient_accumulation_steps = 1  # one micro-batch per update
trainer.model.train()

g_t = torch.Generator().manual_seed(1)
lengths_t = torch.tensor([6, 3, 1, 5, 6, 2, 4, 6])
mask_t = (torch.arange(T_T)[None] < lengths_t[:, None]).long()  # (B, T), ragged
logps_t = -torch.nn.functional.softplus(torch.randn(B_T, T_T, generator=g_t)) - 0.5
ent_t = torch.rand(B_T, T_T, generator=g_t) * 2  # entropies trl expects back (its entropy metric only averages them)
inputs_t = {
    "prompt_ids": torch.randint(2, 12, (B_T, 3), generator=g_t), "prompt_mask": torch.ones(B_T, 3, dtype=torch.long),
    "completion_ids": torch.randint(2, 12, (B_T, T_T), generator=g_t), "completion_mask": mask_t,
    "advantages": advantages_from_scratch(torch.randint(0, 3, (B_T,), generator=g_t).double(), G_T),
    "old_per_token_logps": logps_t + 0.3 * torch.randn(B_T, T_T, generator=g_t),
    "ref_per_token_logps": logps_t + 0.5 * torch.randn(B_T, T_T, generator=g_t),
    "num_items_in_batch": mask_t.sum().double() + 17,  # the generation batch holds 17 more tokens elsewhere
}
trl_errors, metric_errors = {}, {}  # metrics: trl casts the clip masks to float32
for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):
    for level in ("token", "sequence"):
        for beta, kl_ratio in ((0.0, False), (0.04, False), (0.04, True)):
            trainer.loss_type, trainer.importance_sampling_level, trainer.beta = loss_type, level, beta
            trainer.epsilon_low, trainer.epsilon_high = 0.2, 0.28
            trainer.args.use_bias_correction_kl = kl_ratio
            leaf_trl = logps_t.clone().requires_grad_(True)
            trainer._get_per_token_logps_and_entropies = lambda *a, leaf=leaf_trl, **k: (leaf, ent_t, None)
            loss_trl = trainer._compute_loss(trainer.model, inputs_t)
            grad_trl = torch.autograd.grad(loss_trl, leaf_trl)[0]
            leaf = logps_t.clone().requires_grad_(True)
            ours = grpo_loss_from_scratch(
                leaf, inputs_t["advantages"], mask_t, old_logps=inputs_t["old_per_token_logps"],
                ref_logps=inputs_t["ref_per_token_logps"], beta=beta, eps_low=0.2, eps_high=0.28,
                loss_type="dapo" if loss_type in ("bnpo", "dapo") else loss_type, level=level, kl_ratio=kl_ratio,
                max_len=T_T, n_tokens=inputs_t["num_items_in_batch"] if loss_type == "dapo" else None)
            name = f"trl {loss_type}/{level}/beta={beta}/is_kl={kl_ratio}"
            trl_errors[name] = assert_close(ours, loss_trl.detach(), atol=1e-12, rtol=1e-10, name=name)
            trl_errors[name + "/grad"] = assert_close(torch.autograd.grad(ours, leaf)[0], grad_trl, atol=1e-12,
                                                      rtol=1e-10, name=name + " grad")
            metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
            if level == "token":  # the metrics the trainer above logs, by the trainer's own functions
                ratio_t = torch.exp(logps_t - inputs_t["old_per_token_logps"])
                m = mask_t.double()
                clip_ours = clip_fraction(ratio_t, inputs_t["advantages"][:, None], m, eps_high=0.28)
                metric_errors[name + "/clip"] = abs(clip_ours.item() - metrics["clip_ratio/region_mean"])
                if beta > 0:
                    kl_t = k3_from_scratch(logps_t, inputs_t["ref_per_token_logps"]) * (ratio_t if kl_ratio else 1)
                    metric_errors[name + "/kl"] = abs(token_mean(kl_t, m).item() - metrics["kl"])
assert max(metric_errors.values()) < 1e-6, max(metric_errors, key=metric_errors.get)
# Gradient accumulation: 4 micro-batches per optimizer step, one generation batch per step (trl's default
# steps_per_generation = gradient_accumulation_steps). grpo, bnpo, dr_grpo divide by the 4 steps; dapo's
# num_items_in_batch already counts the whole generation batch, so its loss is not divided again.
trainer.current_gradient_accumulation_steps, trainer.args.steps_per_generation = 4, 4
trainer.importance_sampling_level, trainer.beta = "token", 0.0
for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):
    trainer.loss_type = loss_type
    leaf_trl = logps_t.clone().requires_grad_(True)
    trainer._get_per_token_logps_and_entropies = lambda *a, leaf=leaf_trl, **k: (leaf, ent_t, None)
    loss_trl = trainer._compute_loss(trainer.model, inputs_t).detach()
    ours = grpo_loss_from_scratch(
        logps_t, inputs_t["advantages"], mask_t, old_logps=inputs_t["old_per_token_logps"], eps_low=0.2,
        eps_high=0.28, loss_type="dapo" if loss_type in ("bnpo", "dapo") else loss_type, max_len=T_T,
        n_tokens=inputs_t["num_items_in_batch"] if loss_type == "dapo" else None)
    name = f"trl {loss_type}/gradient accumulation 4"
    trl_errors[name] = assert_close(ours / (1 if loss_type == "dapo" else 4), loss_trl, atol=1e-12, rtol=1e-10,
                                    name=name)
trainer.current_gradient_accumulation_steps, trainer.args.steps_per_generation = 1, 1
ratio_t = torch.exp(logps_t - inputs_t["old_per_token_logps"])[mask_t.bool()]
print(f"vs trl GRPOTrainer._compute_loss: {len(trl_errors)} loss and gradient comparisons (4 of them with gradient "
      f"accumulation over 4 micro-batches: grpo, bnpo, dr_grpo = ours / 4, dapo = ours), largest error "
      f"{error_bound(max(trl_errors.values()), 1e-12)}; {len(metric_errors)} logged metrics (clip fraction, "
      f"kl), largest error {error_bound(max(metric_errors.values()), 1e-7)}; ratios < 0.8: {(ratio_t < 0.8).sum().item()}, "
      f"> 1.28: {(ratio_t > 1.28).sum().item()} of {mask_t.sum().item()} tokens")

# %% [markdown]
# `trl`'s `bnpo` and `dapo` are the same token mean when `num_items_in_batch` is this batch's token count; `dapo`
# divides by the whole generation batch's, so it matches `aggregate_from_scratch(..., "dapo", n_tokens=...)` (per
# batch, as `verl`), not eq. 12's per-question mean (D5). Next, `trl`'s generation path: 16 completions (4 prompts x
# 4) of at most 6 tokens from the random tiny model, some stopped and some truncated, scored by a reward with ties
# (the number of odd digits, mod 3). `trl` computes the group advantages inside `_generate_and_score_completions`
# (there is no standalone function for them in 1.16), so the check runs that method once per `scale_rewards`
# setting and compares its `advantages` with `advantages_from_scratch` (D1) on the rewards recomputed from the
# decoded completions; then the same completions' loss mask with `overlong_filter`.

# %%
del trainer._get_per_token_logps_and_entropies  # back to trl's real forward pass
trainer.mask_truncated_completions, trainer.beta = True, 0.0
adv_errors, gen_outs = {}, {}
for scale in ("group", "batch", "none"):  # trl's scale_rewards: the group std (GRPO), one batch std, none (Dr. GRPO)
    trainer.scale_rewards = scale
    torch.manual_seed(3)  # the same 16 completions each time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen_outs[scale] = trainer._generate_and_score_completions(
            [{"prompt": p} for p in ["1+2", "3+4", "5+6", "7+8"] for _ in range(G_T)])
    texts_trl = tokenizer.batch_decode(gen_outs[scale]["completion_ids"], skip_special_tokens=True)
    rewards_trl = torch.tensor(reward_trl(texts_trl))  # (16,) recomputed from the decoded completions
    adv_errors[scale] = assert_close(advantages_from_scratch(rewards_trl, G_T, scale), gen_outs[scale]["advantages"],
                                     atol=1e-12, name=f"advantages vs trl, scale_rewards={scale}")
gen_out = gen_outs["group"]
ids_trl = gen_out["completion_ids"]  # (16, <= 6), padded with EOS
assert all(torch.equal(g["completion_ids"], ids_trl) for g in gen_outs.values())
n_tied = (rewards_trl.view(-1, G_T).std(1) == 0).sum().item()  # groups whose rewards are all equal
assert 0 < n_tied < len(rewards_trl) // G_T, "the advantage check needs tied groups and groups with spread"
is_eos = ids_trl == tokenizer.eos_token_id
first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), ids_trl.shape[1])
raw_mask = (torch.arange(ids_trl.shape[1])[None] <= first_eos[:, None]).long()  # up to and including EOS
err_filter = assert_close(overlong_filter(raw_mask, ids_trl, tokenizer.eos_token_id), gen_out["completion_mask"].long(),
                          atol=0, name="overlong filtering vs trl mask_truncated_completions")
n_trunc = (~is_eos.any(1)).sum().item()
assert 0 < n_trunc < len(ids_trl), "the check needs both stopped and truncated completions"
# trl 1.16 counts num_items_in_batch (dapo's denominator) after the masking; before #6439 it counted raw_mask
n_items_trl, n_before = int(gen_out["num_items_in_batch"]), int(raw_mask.sum())
assert n_items_trl == int(overlong_filter(raw_mask, ids_trl, tokenizer.eos_token_id).sum()) < n_before
trl_penalty = get_soft_overlong_punishment(max_completion_len=20, soft_punish_cache=4)
lens = torch.arange(10, 26)
err_pen = assert_close(overlong_penalty(lens.double(), 20, 4), torch.tensor(trl_penalty([[0] * int(n) for n in lens])),
                       atol=1e-12, name="overlong penalty vs trl")
print(f"group advantages vs trl's _generate_and_score_completions, scale_rewards group / batch / none: largest "
      f"error {error_bound(max(adv_errors.values()), 1e-12)} (rewards {rewards_trl.view(-1, G_T).int().tolist()}, "
      f"{n_tied} group(s) all equal)")
print(f"overlong filtering vs trl: exact ({len(ids_trl) - n_trunc} stopped, {n_trunc} truncated completions); soft "
      f"overlong punishment vs trl: {error_bound(err_pen, 1e-12)}")
print(f"num_items_in_batch: {n_items_trl} tokens, the mask after filtering; before it the mask holds {n_before}, "
      f"so a count taken before the masking (trl before #6439) would make dapo's loss {n_before / n_items_trl:.1f} "
      f"times too small on this batch")

# %% [markdown]
# **Liger-Kernel.** `LigerFusedLinearGRPOLoss` fuses the LM head into the loss: it takes the last hidden states and
# the head's weight, computes the sampled tokens' log-probs chunk by chunk (here `chunk_size=3` rows,
# `compiled=False` on CPU) and returns the loss, so the comparison covers the gradients with respect to the hidden
# states and the head, through the log-softmax. Same batch shape, ragged lengths and clip bounds as the `trl`
# check, off-policy, for `grpo`, `bnpo`, `dr_grpo` and `dapo` (with a `num_items_in_batch` larger than this batch's
# tokens): token-level and sequence-level ratios, each with β = 0.04 and the KL with and without the ratio
# (`use_bias_correction_kl`; at sequence level the ratio that weights the KL is the answer's, D3), and
# sequence-level ratios with β = 0. Liger-Kernel is a pure-Python package that requires Triton, and Triton
# publishes wheels for Linux only (x86_64 and aarch64), so the course installs both on Linux and the cell skips
# on macOS and Windows. One default differs:
# Liger's `use_bias_correction_kl` is False, `trl` 1.16's is True, so the same flag name gives plain $\hat k_3$ in
# one library and $\rho\hat k_3$ in the other (D3). The last line measures what that changes on-policy, with zero
# advantages so that only the KL term pulls: the same loss value (the ratio is 1) and a different gradient. (`trl`
# 1.16 no longer routes its GRPO loss through Liger: `use_liger_kernel` is deprecated in `grpo_trainer.py`.)

# %%
import importlib.util

if importlib.util.find_spec("liger_kernel") is None:
    print("liger_kernel is not installed (it requires Triton, whose wheels are Linux-only): the Liger check is skipped")
else:
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    g_l = torch.Generator().manual_seed(4)
    B_L, T_L, H_L, V_L = 8, 6, 8, 13  # 2 prompts x 4 answers, hidden size 8, a 13-token vocabulary
    hidden_l = torch.randn(B_L, T_L, H_L, generator=g_l)  # the last hidden states of a policy
    head_l = torch.randn(V_L, H_L, generator=g_l) * 0.5  # its LM head: logits = hidden @ head.T
    tok_l = torch.randint(0, V_L, (B_L, T_L), generator=g_l)  # the sampled tokens
    mask_l = (torch.arange(T_L)[None] < lengths_t[:, None]).long()  # the ragged lengths of the trl check
    with torch.no_grad():
        lp_l = torch.log_softmax(hidden_l @ head_l.T, -1).gather(-1, tok_l[..., None])[..., 0]
    old_l = lp_l + 0.3 * torch.randn(B_L, T_L, generator=g_l)  # off-policy: both clip bounds are hit
    ref_l = lp_l + 0.5 * torch.randn(B_L, T_L, generator=g_l)
    adv_l = advantages_from_scratch(torch.randint(0, 3, (B_L,), generator=g_l).double(), 4)
    n_items_l = mask_l.sum().double() + 17  # dapo: the generation batch holds 17 more tokens elsewhere

    def liger_and_ours(loss_type, level, beta, bias_kl, liger_kwargs=None, adv=adv_l, old=old_l):
        """Loss and gradients (w.r.t. the hidden states and the head) from Liger and from scratch."""
        h1, w1 = hidden_l.clone().requires_grad_(True), head_l.clone().requires_grad_(True)
        kw = dict(use_bias_correction_kl=bias_kl) if liger_kwargs is None else liger_kwargs
        liger = LigerFusedLinearGRPOLoss(beta=beta, compiled=False, use_ref_model=beta > 0, chunk_size=3,
                                         epsilon_low=0.2, epsilon_high=0.28, loss_type=loss_type,
                                         max_completion_length=T_L, importance_sampling_level=level, **kw)
        out = liger(h1, w1, tok_l, mask_l, adv, ref_per_token_logps=ref_l if beta > 0 else None,
                    old_per_token_logps=old, num_items_in_batch=n_items_l if loss_type == "dapo" else None)
        loss_lig = out[0] if isinstance(out, tuple) else out
        h2, w2 = hidden_l.clone().requires_grad_(True), head_l.clone().requires_grad_(True)
        logp = torch.log_softmax(h2 @ w2.T, -1).gather(-1, tok_l[..., None])[..., 0]  # (B, T)
        ours = grpo_loss_from_scratch(logp, adv, mask_l, old_logps=old, ref_logps=ref_l, beta=beta, eps_low=0.2,
                                      eps_high=0.28, loss_type="dapo" if loss_type == "bnpo" else loss_type,
                                      level=level, kl_ratio=bias_kl, max_len=T_L,
                                      n_tokens=n_items_l if loss_type == "dapo" else None)
        return (loss_lig, *torch.autograd.grad(loss_lig, (h1, w1))), (ours, *torch.autograd.grad(ours, (h2, w2)))

    liger_errors = {}
    for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):
        for level, beta, bias_kl in (("token", 0.04, True), ("token", 0.04, False), ("sequence", 0.04, True),
                                     ("sequence", 0.04, False), ("sequence", 0.0, False)):
            lig, ours = liger_and_ours(loss_type, level, beta, bias_kl)
            for part, a, b in zip(("loss", "grad hidden", "grad head"), lig, ours, strict=True):
                liger_errors[f"{loss_type}/{level}/beta={beta}/bias_kl={bias_kl}/{part}"] = assert_close(
                    a.double(), b, atol=1e-6, rtol=1e-5, name=f"liger {loss_type} {level} {part}")
    print(f"vs liger_kernel LigerFusedLinearGRPOLoss: {len(liger_errors)} comparisons (loss, gradients w.r.t. "
          f"the hidden states and the LM head), largest error {error_bound(max(liger_errors.values()), 1e-6)} "
          f"(Liger computes in float32)")
    # The same flag, two defaults: on-policy (old = current) and with zero advantages only the KL term pulls
    kl_only = dict(adv=torch.zeros(B_L), old=lp_l)
    lig_default, _ = liger_and_ours("dapo", "token", 0.04, False, liger_kwargs={}, **kl_only)  # Liger's default
    _, trl_default = liger_and_ours("dapo", "token", 0.04, True, **kl_only)  # from scratch, trl's default rho * k3
    kl_gap = (lig_default[2].double() - trl_default[2]).norm() / trl_default[2].norm()
    print(f"use_bias_correction_kl: Liger's default False vs trl's default True, beta=0.04, on-policy, KL term only: "
          f"loss {lig_default[0].item():.4g} vs {trl_default[0].item():.4g} (the ratio is 1), LM-head gradients "
          f"differ by {kl_gap:.0%} of their norm")


# %% [markdown]
# The same from-scratch pieces against the course's `shared.policy_losses` (its `dapo` with `num_items_in_batch`
# is `trl`'s), on a random off-policy batch of 12 answers in groups of 4 with ragged lengths, values and gradients:

# %%
gen = torch.Generator().manual_seed(1)
B, T, G = 12, 7, 4
lengths = torch.tensor([7, 3, 1, 5, 7, 2, 6, 4, 7, 7, 1, 3])
mask = (torch.arange(T)[None] < lengths[:, None]).long()  # (B, T)
logps = -torch.rand(B, T, generator=gen) * 3 - 0.05  # (B, T) log-probs < 0
old_logps = logps + (torch.rand(B, T, generator=gen) - 0.5) * 1.2
ref_logps = logps + (torch.rand(B, T, generator=gen) - 0.5) * 2.0
reward_batch = torch.randint(0, 3, (B,), generator=gen).double()
errors = {}
for scale in shared_pl.SCALE_REWARDS:
    errors[f"advantages/{scale}"] = assert_close(
        advantages_from_scratch(reward_batch, G, scale),
        shared_pl.group_advantages(reward_batch, G, scale_rewards=scale), atol=1e-12, name=scale)
errors["k3"] = assert_close(k3_from_scratch(logps, ref_logps), shared_pl.k3_kl(logps, ref_logps), atol=1e-12)
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
            errors[name] = assert_close(ours, ref, atol=1e-12, rtol=1e-10, name=name)
            ga, gb = torch.autograd.grad(ours, a)[0], torch.autograd.grad(ref, b)[0]
            errors[name + "/grad"] = assert_close(ga, gb, atol=1e-12, rtol=1e-10, name=name + " grad")
print(f"vs shared.policy_losses: {len(errors)} comparisons, largest error {error_bound(max(errors.values()), 1e-12)}")

# %% [markdown]
# The stacked trainer's pieces: `batched_loss` on 4 random policies, one per aggregation, each with its own β, KL
# form and $\varepsilon_{\text{high}}$, and one group left out of policy 1's and policy 3's batches (as dynamic sampling may), against
# the single-batch from-scratch loss; `first_informative` against the readable loop; `adam_step` against
# `torch.optim.Adam`.

# %%
gen = torch.Generator().manual_seed(2)
Mb, Qb, Gb, Tb = 4, 3, 4, 6
cfg_b = dict(beta=torch.tensor([0.0, 0.04, 0.04, 0.0]), kl_ratio=torch.tensor([False, False, True, False]),
             eps_high=torch.tensor([0.2, 0.28, 0.2, 0.28]), agg=torch.tensor([0, 1, 2, 3]))
lens_b = torch.randint(1, Tb + 1, (Mb, Qb * Gb), generator=gen)
mask_b = (torch.arange(Tb) < lens_b[..., None]).double()  # (M, B, T)
valid_b = torch.ones(Mb, Qb, dtype=torch.bool)
valid_b[3, 1] = valid_b[1, 2] = False  # groups left out of the dr_grpo and the per-question policies
mask_b = mask_b * valid_b.repeat_interleave(Gb, 1)[..., None]
lp_b = -torch.rand(Mb, Qb * Gb, Tb, generator=gen) * 2 - 0.05
old_b = lp_b + (torch.rand(Mb, Qb * Gb, Tb, generator=gen) - 0.5) * 1.0
ref_b = lp_b + (torch.rand(Mb, Qb * Gb, Tb, generator=gen) - 0.5) * 1.0
adv_b = torch.randn(Mb, Qb * Gb, 1, generator=gen).expand(Mb, Qb * Gb, Tb)
leaf_b = lp_b.clone().requires_grad_(True)
loss_b = batched_loss(leaf_b, old_b, ref_b, adv_b, mask_b, valid_b, cfg_b, Gb)
grad_b = torch.autograd.grad(loss_b.sum(), leaf_b)[0]
stack_errors = {}
for m, loss_type in enumerate(("grpo", "dr_grpo", "dapo", "dapo_per_question")):
    rows = valid_b[m].repeat_interleave(Gb)  # the answers policy m trains on
    leaf = lp_b[m, rows].clone().requires_grad_(True)
    ours = grpo_loss_from_scratch(leaf, adv_b[m, rows, 0], mask_b[m, rows], old_logps=old_b[m, rows],
                                  ref_logps=ref_b[m, rows], beta=float(cfg_b["beta"][m]), eps_high=float(cfg_b["eps_high"][m]),
                                  loss_type=loss_type, kl_ratio=bool(cfg_b["kl_ratio"][m]), max_len=Tb, G=Gb)
    stack_errors[loss_type] = assert_close(loss_b[m], ours, atol=1e-12, name=f"batched {loss_type}")
    stack_errors[loss_type + "/grad"] = assert_close(grad_b[m, rows], torch.autograd.grad(ours, leaf)[0], atol=1e-12,
                                                     name=f"batched {loss_type} grad")
rounds_b = [(torch.rand(5, 8, generator=gen) < p).long() for p in (0.05, 0.3, 0.9, 0.5)]  # 4 rounds, Q=5
inf_b = torch.cat([((r.sum(1) > 0) & (r.sum(1) < 8))[None] for r in rounds_b], 1)  # (1, 20)
order_b, kept_b = first_informative(inf_b, 5)
readable = [r * 5 + g for r, g in dynamic_sampling_readable(rounds_b, 5)]
assert order_b[0, : len(readable)].tolist() == readable and kept_b.sum().item() == len(readable)

theta_a = torch.randn(2 * STATES, VOCAB, generator=gen)
probe = torch.randn(2 * STATES, VOCAB, generator=gen)
frozen = theta_a[STATES:].clone()
state_a = dict(m=torch.zeros_like(theta_a), v=torch.zeros_like(theta_a), t=torch.zeros(2))
torch_p = [theta_a[:STATES].clone().requires_grad_(True), theta_a[STATES:].clone().requires_grad_(True)]
torch_opt = [torch.optim.Adam([p], lr=0.1) for p in torch_p]
for it in range(5):  # policy 0 moves 5 times; policy 1 moves 3 times, then its budget is spent
    active_a = torch.tensor([True, it < 3])
    grad_a = 2 * (theta_a - probe) * (it + 1)  # gradient of a quadratic, changing scale
    theta_a = adam_step(theta_a, grad_a, state_a, active_a, lr=0.1)
    for k in range(2):
        if active_a[k]:
            torch_opt[k].zero_grad()
            torch_p[k].grad = 2 * (torch_p[k].detach() - probe[k * STATES:(k + 1) * STATES]) * (it + 1)
            torch_opt[k].step()
    if it == 2:
        frozen = theta_a[STATES:].clone()
stack_errors["adam"] = assert_close(theta_a[:STATES], torch_p[0].detach(), atol=1e-12, name="adam_step vs torch Adam")
stack_errors["adam frozen"] = assert_close(theta_a[STATES:], torch_p[1].detach(), atol=1e-12, name="frozen policy")
assert torch.equal(theta_a[STATES:], frozen)  # a policy out of budget does not move
print(f"batched loss (4 aggregations) and Adam vs the references: largest error "
      f"{error_bound(max(stack_errors.values()), 1e-12)}; dynamic-sampling selection matches the loop "
      f"({len(readable)} groups kept)")

# %% [markdown]
# **Three real `train` steps, end to end.** The pieces above are checked one by one; this checks their wiring
# inside `train`: the ±1 reward plus the penalty (with each policy's own $L_{\text{cache}}$), the group advantages and
# online RFT's baseline-free ones, the loss masks from overlong filtering,
# dynamic sampling's batch assembly over rounds, process supervision's advantages, the ratios against
# $\pi_{\text{old}}$ over $\mu = 4$ updates, the KL to $\pi_{\text{ref}}$, the reference reset of iterative GRPO and
# the aggregation. Five policies, each with a different combination of settings, take three steps of `train` (three
# calls, 1, 2 and 3 steps, on the same random stream, so call $k$ returns the batch of step $k$). At steps 2 and 3
# the KL target differs from $\pi_{\text{old}}$ for `Dr. GRPO + k3` (it stays uniform); the iterative policy has
# `ref_every=2`, so its $\pi_{\text{ref}}$ is uniform at step 2 and the policy after step 2 at step 3 (a reset
# every step, never, or one step early fails the replay). The batches are then replayed, policy
# by policy, with the single-batch from-scratch pieces and `torch.optim.Adam` on a fresh table, from the tokens and
# targets alone: the loss mask is recomputed from the first EOS, each token's state row from the running digit sum
# (capped at $s + 1$), right/wrong from the digit sum, the kept groups of dynamic sampling are checked to be
# informative, and the process advantages come from the loop form of D9 (`process_advantages_loop`), group by
# group. The dynamic-sampling policy is limited to 4 rounds here, so it trains on a short batch (fewer than 16
# groups, as in the main run's first steps), and it draws 4 x 128 = 512 answers in step 1, more than the 3-step run's
# whole budget of 384, so at steps 2 and 3 it must not move. The replay also recomputes each step's logs (the clip
# fraction of the 4th update with the policy's own $\varepsilon_{\text{high}}$, the k3 to $\pi_{\text{ref}}$, the
# entropy of $\pi_{\text{old}}$, and, for the fixed-batch policies, the wrong/right lengths and the no-signal share)
# and compares them with `train`'s. The check stream (`gen_seed=10`) is one on which the comparisons cannot pass
# vacuously, and the cell asserts it: every policy has a group with signal in step 1 (so it moves), and at steps 2
# and 3 the sampled tokens' $\pi_{\text{ref}}$ differs from $\pi_{\text{old}}$ (`Dr. GRPO + k3`, the iterative policy at
# step 2) or from the uniform start (the iterative policy at step 3, after its reset).

# %%
CHECK_VARIANTS = {  # five policies that together exercise every path of the trainer
    "DAPO-like + filtering": dict(agg=2, eps_high=0.28, pm1=True, shaping=True, filt=True),
    "Dr. GRPO + k3": dict(std=False, agg=1, beta=0.04),  # step 2: pi_ref (uniform) != pi_old
    "per question + IS-KL, iterative": dict(agg=3, beta=0.04, kl_ratio=True, ref_every=2),  # reset after step 2
    "dyn. sampling + process": dict(dyn=True, process=True),
    "online RFT + shaping, L_cache=1": dict(rft=True, shaping=True, l_cache=1),  # the second run's new paths
}
CHECK_ROUNDS, CHECK_SEED = 4, 10  # at most 4 rounds, so that dynamic sampling trains on a short batch; a stream on
# which every check policy has a group with signal in step 1 (asserted below)
runs = [train(CHECK_VARIANTS, range(1), steps=k, max_rounds=CHECK_ROUNDS, gen_seed=CHECK_SEED, progress=False)
        for k in (1, 2, 3)]
RESETS_AFTER = {2: {2}}  # ref_every=2 over 3 steps: pi_ref <- pi_theta after step 2 only (D10), written out
Qc, Gc = 16, 8
theta_1 = runs[0]["theta"].view(len(CHECK_VARIANTS), -1)
assert (theta_1 != 0).any(1).all(), "every check policy must move in step 1, or its step-2 check is vacuous"

# %% [markdown]
# The replay helper: a policy's batch recomputed from its tokens and targets alone (the loss mask from the first
# EOS, each token's state row from the running digit sum capped at $s + 1$, right/wrong from the digit sum).

# %%
def replay_inputs(b, m):
    """Policy m's batch recomputed from its tokens and targets only: mask, state rows, right/wrong."""
    tok, tgt_idx = b["tok"][m], b["tgt"][m].repeat_interleave(Gc)  # (128, 10), (128,)
    target = TARGETS[tgt_idx]
    is_eos = tok == EOS
    first_eos = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), L_GEN)
    mask = (torch.arange(L_GEN) <= first_eos[:, None]).double()  # up to and including the first EOS
    digits = tok * mask
    before = digits.cumsum(-1) - digits  # running sum before each token
    rows = OFFSET[tgt_idx][:, None] + torch.minimum(before, target[:, None] + 1).long()  # capped at s + 1
    stopped = is_eos.any(-1)
    return tok, target, mask, rows, stopped, (stopped & (digits.sum(-1) == target)).double()


# %% [markdown]
# The replay itself, policy by policy and step by step, with `torch.optim.Adam` on a fresh table, and the
# comparison of its parameters and logs with `train`'s.

# %%
step_errors, log_errors, kept_counts = {}, {}, []
for m, name in enumerate(CHECK_VARIANTS):
    c = {**DEFAULT, **CHECK_VARIANTS[name]}
    table = torch.zeros(STATES, VOCAB, requires_grad=True)
    opt = torch.optim.Adam([table], lr=0.1)
    ref_table = torch.zeros(STATES, VOCAB)  # pi_ref starts uniform
    for k, run_k in enumerate(runs):
        b, logs_k = run_k["last_batch"], {key: v[k, m].item() for key, v in run_k["logs"].items()}
        if math.isnan(runs[-1]["logs"]["samples"][k, m]):  # out of budget at this step: the policy must not move
            step_errors[f"{name}/step {k + 1} frozen"] = assert_close(
                run_k["theta"][m * STATES:(m + 1) * STATES], table.detach(), atol=1e-10, name=f"{name} frozen")
            continue
        tok_m, target_m, mask_m, rows_m, stopped_m, right_m = replay_inputs(b, m)
        assert torch.equal(mask_m.bool(), b["mask"][m]) and torch.equal(rows_m + m * STATES, b["st"][m]), name
        reward_m = 2 * right_m - 1 if c["pm1"] else right_m
        if c["shaping"]:
            reward_m = reward_m + overlong_penalty(mask_m.sum(-1), L_GEN, c["l_cache"])
        n_right = right_m.view(Qc, Gc).sum(1)
        valid = b["valid"][m]
        if c["dyn"]:  # every kept group informative; fewer than Q kept only when all 10 rounds were spent
            assert ((n_right[valid] > 0) & (n_right[valid] < Gc)).all(), name
            assert valid.all() or runs[0]["used"][m] == CHECK_ROUNDS * Qc * Gc, name
        else:
            assert valid.all(), name
        kept_counts.append(int(valid.sum()))
        keep = valid.repeat_interleave(Gc)  # the answers this policy trains on
        if c["process"]:  # D9 as a loop over each kept group's steps (every token a step)
            step_r = oracle_step_rewards(tok_m, mask_m, target_m, stopped_m, (tok_m * mask_m).sum(-1))
            adv_m = torch.zeros(len(tok_m), L_GEN)
            for g in valid.nonzero()[:, 0].tolist():
                ans = range(g * Gc, (g + 1) * Gc)
                steps = [[(t, step_r[i, t].item()) for t in range(L_GEN) if mask_m[i, t]] for i in ans]
                adv_m[g * Gc:(g + 1) * Gc] = process_advantages_loop(steps, L_GEN) * mask_m[g * Gc:(g + 1) * Gc]
        elif c["rft"]:  # online RFT: the reward itself, no baseline and no std
            adv_m = reward_m
        else:
            adv_m = advantages_from_scratch(reward_m, Gc, "group" if c["std"] else "none")
        lmask_m = overlong_filter(mask_m, tok_m, EOS) if c["filt"] else mask_m
        ref_m = torch.log_softmax(ref_table, -1)[rows_m, tok_m][keep]
        old_m = None
        for _ in range(4):
            logp_m = torch.log_softmax(table, -1)[rows_m, tok_m][keep]  # (kept answers, 10)
            if old_m is None:  # pi_old, and the exact entropy of its table at the sampled states
                old_m = logp_m.detach()
                lt_old = torch.log_softmax(table.detach(), -1)[rows_m][keep]  # (kept answers, 10, VOCAB)
                ent_m = -(lt_old.exp() * lt_old).sum(-1)
            loss_m = grpo_loss_from_scratch(
                logp_m, adv_m[keep], lmask_m[keep], old_logps=old_m, ref_logps=ref_m,
                beta=c["beta"], eps_high=c["eps_high"], kl_ratio=c["kl_ratio"], max_len=L_GEN, G=Gc,
                loss_type=("grpo", "dr_grpo", "dapo", "dapo_per_question")[c["agg"]])
            opt.zero_grad()
            loss_m.backward()
            opt.step()
        reset_before = any(r < k + 1 for r in RESETS_AFTER.get(c["ref_every"], ()))
        if k >= 1 and c["beta"] > 0:  # non-vacuous: pi_ref differs from pi_old, or from uniform once reset
            real = lmask_m[keep].bool()
            gap = (ref_m + math.log(VOCAB)) if reset_before else (ref_m - old_m)
            assert gap[real].abs().max() > 1e-3, f"{name}: step {k + 1} cannot tell the KL target apart"
        # the logs of this step, recomputed: clip fraction of the last (4th) update, k3 to pi_ref, entropy of pi_old
        ratio_m = torch.exp(logp_m.detach() - old_m)
        adv_tok = adv_m[keep] if adv_m.dim() == 2 else adv_m[keep, None]
        real_m = lmask_m[keep]
        clip_m = (((ratio_m < 0.8) & (adv_tok < 0)) | ((ratio_m > 1 + c["eps_high"]) & (adv_tok > 0))).double()
        recomputed = dict(clip=(clip_m * real_m).sum() / real_m.sum(), entropy=(ent_m * real_m).sum() / real_m.sum(),
                          kl=(k3_from_scratch(old_m, ref_m) * real_m).sum() / real_m.sum())
        if not c["dyn"]:  # first-round logs; dynamic sampling's batch is no longer its first round
            length_m = mask_m.sum(-1)
            recomputed["no_signal"] = ((n_right == 0) | (n_right == Gc)).double().mean()
            if 0 < right_m.sum() < len(right_m):
                recomputed |= dict(len_wrong=length_m[right_m == 0].mean(), len_right=length_m[right_m == 1].mean())
        for key, val in recomputed.items():
            log_errors[f"{name}/step {k + 1}/{key}"] = assert_close(
                torch.tensor(logs_k[key]), val, atol=1e-12, name=f"logged {key}, step {k + 1}: {name}")
        if k + 1 in RESETS_AFTER.get(c["ref_every"], ()):  # iterative GRPO: pi_ref <- pi_theta
            ref_table = table.detach().clone()
        step_errors[f"{name}/step {k + 1}"] = assert_close(
            run_k["theta"][m * STATES:(m + 1) * STATES], table.detach(), atol=1e-10,
            name=f"train step {k + 1} vs from scratch: {name}")
moved = runs[-1]["theta"].abs().max().item()
print(f"three train() steps vs from-scratch pieces + torch.optim.Adam, {len(CHECK_VARIANTS)} policies: "
      f"{len(step_errors)} comparisons, "
      f"largest error {error_bound(max(step_errors.values()), 1e-10)}; groups trained on per policy and step "
      f"{kept_counts}; logits moved up to {moved:.2f}")
print(f"logged clip fraction, kl, entropy, lengths, no-signal share vs recomputed: {len(log_errors)} comparisons, "
      f"largest error {error_bound(max(log_errors.values()), 1e-12)}")

# %% [markdown]
# **`evaluate` and dynamic sampling's budget, directly.** Every accuracy in the results comes from `evaluate`, and
# every budget from `draw_batch`'s counters; the replay above covers neither (its dynamic policy always spends all
# 4 rounds). `evaluate` is run on the three-step policies above plus a hand-made policy that almost never writes
# EOS (so many truncated answers have the right digit sum and must count as wrong); the same stream is sampled
# again and right/wrong recomputed from the tokens alone (`replay_inputs`: digit sum up to the first EOS). For the
# budget, `draw_batch` runs dynamic sampling for two policies, a hand-made one that finds its 4 informative groups
# early and the uniform one that rarely does; a readable loop replays the rounds on the same stream and counts,
# per policy, the rounds until it has 4 informative groups: `used` must be those rounds x 4 x 8 answers and
# `tokens_used` their real tokens, even when the other policy keeps drawing, and the kept groups must be the first 4
# informative ones. Both checks use their own generators, so the main run's stream is untouched.

# %%
no_eos = torch.zeros(STATES, VOCAB)  # (row_tgt, row_sum and guided come from the walkthrough's example of W4)
no_eos[:, EOS], no_eos[:, 1:4] = -4.0, 2.0  # small digits, EOS almost never: 10-digit answers, sums 10-30
theta_e = torch.cat([runs[-1]["theta"], no_eos])  # the check policies and the no-EOS one
tgt_e = torch.arange(N_TGT)[None].expand(len(theta_e) // STATES, -1)  # Gc samples per target, one target per "group"
acc_e = evaluate(theta_e, torch.arange(len(tgt_e)), torch.Generator().manual_seed(11), Gc)
tok_e = sample(table_cdf(theta_e), torch.arange(len(tgt_e)), tgt_e.repeat_interleave(Gc, 1),
               torch.Generator().manual_seed(11))[0]
replayed = [replay_inputs(dict(tok=tok_e, tgt=tgt_e), m) for m in range(len(tgt_e))]
err_eval = assert_close(acc_e, torch.stack([r[-1].mean() for r in replayed]), atol=1e-12, name="evaluate")
fooled = sum(int((~r[4] & ((r[0] * r[2]).sum(-1) == r[1])).sum()) for r in replayed)  # truncated, right sum
assert fooled > 0 and 0 < acc_e[:-1].min(), "evaluate's check needs truncated answers with the right digit sum"

cdf_d = table_cdf(torch.cat([guided, torch.zeros(STATES, VOCAB)]))
cfg_d = {k: torch.tensor([DEFAULT[k]] * 2) for k in DEFAULT} | dict(dyn=torch.tensor([True, True]))
Qd, Rd = 4, 6  # 4 groups of Gc answers per round, at most 6 rounds
used_d, tokens_d = torch.zeros(2), torch.zeros(2)
logs_d = {k: torch.full((1, 2), math.nan) for k in ("no_signal", "len_wrong", "len_right")}
b_d = draw_batch(cdf_d, cfg_d, torch.ones(2, dtype=torch.bool), used_d, tokens_d, torch.Generator().manual_seed(3),
                 Qd, Gc, Rd, logs_d, 0)
gen_r, rounds = torch.Generator().manual_seed(3), []  # readable replay: (targets, tokens, informative) per round
while len(rounds) < Rd and (len(rounds) == 0 or min(sum(int(r[2][m].sum()) for r in rounds) for m in range(2)) < Qd):
    t_r = torch.randint(N_TGT, (2, Qd), generator=gen_r)
    tok_r = sample(cdf_d, torch.arange(2), t_r.repeat_interleave(Gc, 1), gen_r)[0]
    right_r = torch.stack([replay_inputs(dict(tok=tok_r, tgt=t_r), m)[-1] for m in range(2)]).view(2, Qd, Gc).sum(-1)
    rounds.append((t_r, tok_r, (right_r > 0) & (right_r < Gc)))
for m in range(2):
    found = torch.cat([r[2][m] for r in rounds]).long().cumsum(0)  # informative groups found so far
    k_m = int((found >= Qd).nonzero()[0]) // Qd + 1 if found[-1] >= Qd else len(rounds)  # rounds it needed
    n_tok = sum(int((replay_inputs(dict(tok=r[1], tgt=r[0]), m)[2]).sum()) for r in rounds[:k_m])
    assert used_d[m] == k_m * Qd * Gc and tokens_d[m] == n_tok, f"dynamic sampling budget, policy {m}"
    if m == 0:
        k_0 = k_m
        first = torch.cat([r[0][0] for r in rounds])[torch.cat([r[2][0] for r in rounds])][:Qd]
        assert k_0 < len(rounds) and torch.equal(b_d["tgt"][0], first), "policy 0 must stop before policy 1"
print(f"evaluate vs right/wrong recomputed from the tokens: {error_bound(err_eval, 1e-12)} ({fooled} truncated "
      f"answers with the right digit sum counted wrong); dynamic sampling: the first policy needed {k_0} round(s), "
      f"the second drew {len(rounds)}, answers and tokens counted per policy exactly")


# %% [markdown]
# ## Reproduction
#
# **Claims.** DeepSeekMath: GRPO improves DeepSeekMath-Instruct 7B on MATH from 46.8% to 51.7% (Table 5), process
# supervision beats outcome supervision and iterative RL adds more, most in its first iteration (§5.2.1,
# Figures 5 and 6), GRPO surpasses online RFT (§5.2.1, Figure 5), and RL raises Maj@K but not Pass@K (§5.2.2,
# Figure 7). Dr. GRPO: removing the $1/|o_i|$ and std terms keeps wrong answers from growing long (§3.2, Figure 5)
# "while preserving reasoning performance" (§4), and removing either term improves accuracy (Appendix C: Figure 8,
# the ablation of the two terms; Figure 9, three seeds). DAPO: each of its techniques adds AIME points (Table 1:
# 30 → 36 → 38 → 41 → 42 → 50) and DAPO needs 50% of R1-Zero-Qwen-32B's training *steps* (Figure 1); dynamic
# sampling gives every trained batch a full set of groups with signal (§3.2), needs fewer steps (§4.2), and costs
# little extra training time on a synchronous system (§3.2, §4.2, Figure 6). DAPO trains on DAPO-Math-17K, 17K math
# prompts whose answers the authors rewrote as integers so that a rule can check them; the toy's targets are integers
# for the same reason.
#
# **Design.** 15 variants: the control (GRPO with β = 0: group std, eq. 3's aggregation, ε = 0.2/0.2, 0/1 reward,
# μ = 4 updates per batch, Adam with learning rate 0.1); **one change** from it for β = 0.04, no std, each
# token-mean form, clip-higher, overlong shaping (with its ±1 reward, which alone changes nothing under the std, D7),
# overlong filtering, dynamic sampling and process supervision; one change from β = 0.04 for the IS-weighted KL and
# iterative GRPO; and the combinations Dr. GRPO (2 changes), DAPO (4) and shaping + dynamic sampling (2). The
# hyperparameters (learning rate 0.1, $\mu = 4$, $Q = 16$, $G = 8$) were chosen for the control, and every trick is
# tested at those settings, not re-tuned.
#
# **Budget.** Every run gets the **same budget of 10,240 sampled answers** (80 steps of 16 questions x 8 answers;
# dynamic sampling spends it in fewer steps, counting the groups it discards). A dynamic-sampling step draws whole
# rounds of 128 answers, so these variants overshoot by up to one round, and their answers are longer on average:
# the line under the table prints the overshoot (about 1-2% more answers, up to 14% more tokens than the control). The accuracy "at 5,120" is taken at the first step at or past 5,120
# answers, so for dynamic sampling up to 1,280 answers later.
#
# **Replicates.** 8 per variant, all 120 policies drawn from **one random stream** (`gen_seed=0`): the replicates
# are independent draws, but a single replicate cannot be re-run alone. The table reports accuracy after the full
# budget (32 samples per target, mean ± std over the 8 replicates, min-max) and at 5,120 answers (mean ± std), each
# with its difference from the control and the standard error of that difference, and the answers and tokens
# actually drawn. A **second run** on its own stream (`gen_seed=1`, 16 replicates per arm, after the figures) repeats
# the control and the arms whose differences the discussion leans on, and adds online RFT and two smaller shaping
# buffers; its control is also compared with every arm of the main run.
#
# **DAPO's recipe without overlong filtering.** Table 1 reads as cumulative (each row adds one technique to the row
# above), so its 50 includes overlong filtering; but the released recipe leaves it out: "Most experiments in the
# paper, including the best-performant one, are run without Overlong Filtering because it's somehow overlapping
# with Overlong Reward Shaping in terms of properly learning from the longest outputs. So we don't implement it
# here" (`recipe/dapo/README.md` at
# [476a33ec](https://github.com/volcengine/verl/blob/476a33ec14269622c5b990389cd9462fe9a8cd22/recipe/dapo/README.md)).
# The toy's DAPO follows the recipe; filtering is tested on its own.
#
# | variant | changes from the control |
# | --- | --- |
# | GRPO β=0.04 (k3) | k3 KL to $\pi_{\text{ref}}$ as in eq. 3, with DeepSeekMath's β = 0.04 (its μ = 1 is not used: μ = 4 as in the control) |
# | GRPO β=0.04, IS-KL (trl default) | the same, $\rho\hat k_3$ (`use_bias_correction_kl`, D3) |
# | GRPO β=0.04, iterative | the same, $\pi_{\text{ref}} \leftarrow \pi_\theta$ every 20 steps (§4.1.4) |
# | GRPO β=0 (control) | - |
# | no std | advantages $r_i - \bar r$ (half of Dr. GRPO) |
# | Dr. GRPO | no std, and $\frac{1}{G L_{\max}}\sum\sum$ (§3.2) |
# | token-mean per batch | DAPO's token-level loss as `verl`/`trl` run it (D5) |
# | token-mean per question | DAPO eq. 12 as written (D5) |
# | clip-higher | $\varepsilon_{\text{high}} = 0.28$ (§3.1) |
# | overlong shaping | ±1 reward + eq. 13, $L_{\max} = 10$, $L_{\text{cache}} = 4$ (§3.4) |
# | overlong shaping + dyn. sampling | the same with dynamic sampling (tests why shaping hurts) |
# | overlong filtering | truncated answers masked (§3.4) |
# | dynamic sampling | resample until 16 informative groups, at most 10 rounds (§3.2) |
# | DAPO | token-mean per batch + clip-higher + dynamic sampling + ±1 & shaping |
# | process supervision | D9 advantages from an exact per-step verifier (§4.1.3) |

# %%
VARIANTS = {
    "GRPO b=0.04 (k3)": dict(beta=0.04),
    "GRPO b=0.04, IS-KL (trl)": dict(beta=0.04, kl_ratio=True),
    "GRPO b=0.04, iterative": dict(beta=0.04, ref_every=20),
    "GRPO b=0 (control)": dict(),
    "no std": dict(std=False),
    "Dr. GRPO": dict(std=False, agg=1),
    "token-mean per batch": dict(agg=2),
    "token-mean per question": dict(agg=3),
    "clip-higher": dict(eps_high=0.28),
    "overlong shaping": dict(pm1=True, shaping=True),
    "overlong shaping + dyn.": dict(pm1=True, shaping=True, dyn=True),
    "overlong filtering": dict(filt=True),
    "dynamic sampling": dict(dyn=True),
    "DAPO": dict(agg=2, eps_high=0.28, pm1=True, shaping=True, dyn=True),
    "process supervision": dict(process=True),
}
SEEDS = range(8)

# %% tags=["nbval-ignore-output"]
run = train(VARIANTS, SEEDS)

# %%
names, n_s = list(VARIANTS), len(SEEDS)
nv, ctrl = len(names), list(VARIANTS).index("GRPO b=0 (control)")
final = run["final"].view(nv, n_s)  # (variants, seeds): accuracy after the budget, 32 samples x 26 targets
half = run["acc"][4].view(nv, n_s)  # after 5,120 sampled answers
used, toks = run["used"].view(nv, n_s), run["tokens"].view(nv, n_s)
lw = run["logs"]["len_wrong"].view(-1, nv, n_s).nanmean(0)  # mean length of wrong answers over the run, per seed
lr_ = run["logs"]["len_right"].view(-1, nv, n_s).nanmean(0)
print(f"{'variant':27s} {'final acc (8 replicates)':>26s} {'vs control':>13s} | {'at 5,120':>11s} {'vs control':>12s} | "
      f"{'answers':>7s} {'tokens':>6s} | {'wrong len':>12s} {'right len':>12s}")
for i, name in enumerate(names):
    f, h = final[i], half[i]
    diff = f.mean() - final[ctrl].mean()
    se = (f.var() / n_s + final[ctrl].var() / n_s).sqrt()  # standard error of the difference of two means
    diff_h, se_h = h.mean() - half[ctrl].mean(), (h.var() / n_s + half[ctrl].var() / n_s).sqrt()
    print(f"{name:27s} {f.mean():.3f} ± {f.std():.3f} [{f.min():.2f}-{f.max():.2f}] "
          f"{diff:+.3f} ± {se:.3f} | {h.mean():.2f} ± {h.std():.2f} {diff_h:+.2f} ± {se_h:.2f} | {used[i].mean():7.0f} "
          f"{toks[i].mean():6.0f} | {lw[i].mean():5.2f} ± {lw[i].std():.2f} {lr_[i].mean():5.2f} ± {lr_[i].std():.2f}")
logs = {k: v.view(-1, nv, n_s) for k, v in run["logs"].items()}  # (steps, variants, seeds)
steps_taken = (~logs["samples"].isnan()).sum(0).double().mean(1)  # optimizer steps (x 4 updates) per variant
over = [(n, used[i].mean() / used[ctrl].mean() - 1, toks[i].mean() / toks[ctrl].mean() - 1)
        for i, n in enumerate(names) if used[i].mean() > used[ctrl].mean()]
print("overshoot of the budget vs the control: " + "; ".join(f"{n} {a:+.1%} answers, {t:+.1%} tokens" for n, a, t in over))
learned = final.mean(1)[[i for i, n in enumerate(names) if n != "overlong shaping"]]  # replicate means
print(f"accuracy after the budget, every variant but overlong shaping: {learned.min():.1%}-{learned.max():.1%} "
      f"(replicate means)")

# %% [markdown]
# The training diagnostics, per variant (mean ± std over the 8 replicates): the entropy of $\pi_{\text{old}}$ after 2,560 answers and
# at the end of the budget, the clip fraction and the share of sampled groups without signal averaged over the run,
# and the k3 to $\pi_{\text{ref}}$ at the end (for the iterative variant, to the latest reference; the no-signal
# share is a mean). Then two differences the discussion relies on, with their standard errors, and the same budget
# counted in optimizer steps.

# %%
def at_samples(key, n):  # each policy's logged value at the first step whose cumulative answers reach n
    x, s = logs[key], logs["samples"]
    idx = (s.nan_to_num(0) >= n).int().argmax(0)  # (variants, seeds)
    return x.gather(0, idx[None])[0]


def last_active(key):
    x = logs[key]
    idx = (~logs["samples"].isnan()).sum(0) - 1
    return x.gather(0, idx[None])[0]


ent_2560, ent_end = at_samples("entropy", 2560), last_active("entropy")  # (variants, seeds)
clip_run, k3_end = logs["clip"].nanmean(0), last_active("kl")  # clip fraction averaged over each run's steps
print(f"{'variant':27s} {'entropy @2,560':>14s} {'entropy @end':>13s} | {'clip fraction':>13s} | {'k3 to ref @end':>14s} | "
      f"{'no-signal':>9s}")
for i, name in enumerate(names):
    print(f"{name:27s} " + " ".join(f"{x[i].mean():.3f} ± {x[i].std():.3f}" for x in (ent_2560, ent_end))
          + f" | {clip_run[i].mean():.3f} ± {clip_run[i].std():.3f} | {k3_end[i].mean():6.3f} ± {k3_end[i].std():.3f}"
          f"  | {logs['no_signal'][:, i].nanmean():9.2f}")


def diff_se(x, i, j):  # difference of the replicate means of variants i and j, and its standard error
    return (x[i].mean() - x[j].mean()).item(), (x[i].var() / n_s + x[j].var() / n_s).sqrt().item()


ch, k3v, isv = names.index("clip-higher"), names.index("GRPO b=0.04 (k3)"), names.index("GRPO b=0.04, IS-KL (trl)")
for label, (d, se) in (("entropy @2,560, clip-higher - control", diff_se(ent_2560, ch, ctrl)),
                       ("final accuracy, k3 - rho*k3 (IS-KL)", diff_se(final, k3v, isv)),
                       ("entropy @end, k3 - rho*k3 (IS-KL)", diff_se(ent_end, k3v, isv))):
    print(f"{label:40s} {d:+.3f} ± {se:.3f}  ({abs(d) / se:.1f} standard errors)")
dapo = names.index("DAPO")
k_near = int((steps_taken[dapo] / 10).round())  # the control's checkpoints fall every 10 steps (1,280 answers)
print(f"optimizer steps within the budget: DAPO {steps_taken[dapo]:.1f}, dynamic sampling "
      f"{steps_taken[names.index('dynamic sampling')]:.1f}, every other variant 80. Per step, DAPO is ahead: after "
      f"{10 * k_near} steps the control is at {run['acc'][k_near].view(nv, n_s)[ctrl].mean():.2f}, DAPO ends at "
      f"{final[dapo].mean():.2f}; per sampled answer it is behind ({final[dapo].mean():.2f} vs "
      f"{final[ctrl].mean():.2f}).")

# %% [markdown]
# The numbers the discussion below quotes, computed from the tables above so that the text and the run agree:

# %%
plain = [names.index(n) for n in ("GRPO b=0.04 (k3)", "GRPO b=0.04, IS-KL (trl)", "GRPO b=0.04, iterative",
                                  "GRPO b=0 (control)", "no std", "clip-higher")]  # keep 1/|o_i|, no other change
no_norm = [names.index(n) for n in ("Dr. GRPO", "token-mean per batch", "token-mean per question")]
lw_mean = lw.mean(1)  # (variants,) mean length of the wrong answers sampled during training
lowest_clip = min(range(nv), key=lambda i: clip_run[i].mean())
spread = (final.max(1).values - final.min(1).values)  # (variants,) max - min over the 8 replicates
widest = int(spread.argmax())
d_len, se_len = diff_se(lw, names.index("Dr. GRPO"), ctrl)
print(f"clip fraction: clip-higher {clip_run[ch].mean():.3f} vs control {clip_run[ctrl].mean():.3f}; lowest of all "
      f"variants: {names[lowest_clip]} ({clip_run[lowest_clip].mean():.3f})")
print(f"widest replicate range of final accuracy: {names[widest]}, {final[widest].min():.2f}-{final[widest].max():.2f} "
      f"({spread[widest]:.3f}); the control's {spread[ctrl]:.3f}")
print(f"wrong-answer length: without 1/|o_i| (Dr. GRPO, both token means) {lw_mean[no_norm].min():.2f}-"
      f"{lw_mean[no_norm].max():.2f}; the six plain variants that keep it (beta, std, clip) {lw_mean[plain].min():.2f}-"
      f"{lw_mean[plain].max():.2f}; Dr. GRPO - control {d_len:+.2f} ± {se_len:.2f} ({abs(d_len) / se_len:.1f} SE)")


# %%
def band(ax, x, y, label):  # mean over seeds with a min-max band
    line, = ax.plot(x.mean(1), y.mean(1), label=label)
    ax.fill_between(x.mean(1), y.min(1).values, y.max(1).values, color=line.get_color(), alpha=0.15)


acc, acc_at = run["acc"].view(-1, nv, n_s), run["acc_at"].view(-1, nv, n_s)
groups = [("GRPO b=0.04 (k3)", "GRPO b=0.04, IS-KL (trl)", "GRPO b=0.04, iterative", "GRPO b=0 (control)",
           "process supervision"),
          ("GRPO b=0 (control)", "Dr. GRPO", "clip-higher", "token-mean per question", "overlong filtering"),
          ("GRPO b=0 (control)", "dynamic sampling", "overlong shaping", "overlong shaping + dyn.", "DAPO")]
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), sharey=True)
titles = ("The KL term and DeepSeekMath's variants", "Dr. GRPO and DAPO's loss changes", "DAPO's data-side changes")
for ax, group, title in zip(axes, groups, titles, strict=True):
    for name in group:
        i = names.index(name)
        band(ax, acc_at[:, i], acc[:, i], name)
    ax.set(xlabel="sampled answers (matched budget)", title=title)
    ax.legend(fontsize=7)
axes[0].set_ylabel("accuracy, 8 replicates (mean, min-max)")
plt.tight_layout()
plt.show()

# %%
fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
for name in ("GRPO b=0.04 (k3)", "GRPO b=0 (control)", "clip-higher", "Dr. GRPO", "DAPO"):
    i = names.index(name)
    x = logs["samples"][:, i].nanmean(1)
    for ax, key in zip(axes, ("entropy", "clip", "kl", "len_wrong"), strict=True):
        y = logs[key][:, i].nanmean(1)
        if key == "len_wrong":  # noisy per step: a 5-step running mean
            y = torch.nn.functional.avg_pool1d(y[None, None], 5, 1, 2, count_include_pad=False)[0, 0]
        ax.plot(x, y, label=name)
for ax, title in zip(axes, ("Entropy of pi_old (nats/token)", "Clip fraction, 4th update",
                            "k3 to pi_ref (mean/token)", "Wrong answers: length (5-step mean)"), strict=True):
    ax.set(xlabel="sampled answers", title=title)
axes[0].legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# **A second run on its own stream: the mid-run control, online RFT, the KL, and overlong shaping.** The comparisons
# at 5,120 answers above all lean on one control, and some questions need arms the main table does not have. A
# separate run on its own random stream (`gen_seed=1`, so the 15 variants above keep their draws), **16 replicates**
# per arm at the same budget of 10,240 answers, with its own control; every arm is compared with this control:
#
# - **online RFT** (DeepSeekMath §5.2.1, Figure 5, eq. 10): the gradient coefficient is 1 for a right answer and 0
#   for a wrong one, with no baseline and no std, and otherwise the control's settings (eq. 3's $\frac{1}{|o_i|}$,
#   $\mu = 4$ with clipping). GRPO's coefficient differs in pushing wrong answers down and in scaling by the group;
#   the paper: "GRPO surpasses online RFT, thereby highlighting the efficiency of altering positive and negative
#   gradient coefficients";
# - **process supervision**, and **β = 0.04 with both KL forms**, to see whether the main run's mid-run and final
#   differences hold on a fresh control;
# - **overlong shaping** with the main run's buffer $L_{\text{cache}} = 4$, without the group std, and with
#   $L_{\text{cache}} = 2$ and $1$ (with $L_{\text{cache}} = 1$ only answers of the full 10 tokens are penalised).
#
# Before training, the cell prints the share of the uniform start's answers that each buffer penalises, from the
# exact distribution: an answer has at least $k$ tokens with probability $0.9^{k-1}$ (each token is EOS with
# probability 1/10).

# %%
for lc in (4, 2, 1):  # eq. 13 penalises |y| > L_max - L_cache = 10 - lc: probability 0.9 ** (10 - lc)
    print(f"L_cache={lc}: uniform start, share of answers in the penalty zone (|y| >= {L_GEN - lc + 1}) "
          f"= 0.9**{L_GEN - lc} = {0.9 ** (L_GEN - lc):.3f}")
print(f"share of answers at the 10-token cap (9 digits, then EOS or truncation) = 0.9**9 = {0.9 ** 9:.3f}")
probe_variants = {
    "GRPO b=0 (control)": dict(),
    "online RFT": dict(rft=True),
    "process supervision": dict(process=True),
    "GRPO b=0.04 (k3)": dict(beta=0.04),
    "GRPO b=0.04, IS-KL (trl)": dict(beta=0.04, kl_ratio=True),
    "overlong shaping": dict(pm1=True, shaping=True),
    "overlong shaping, no std": dict(pm1=True, shaping=True, std=False),
    "overlong shaping, L_cache=2": dict(pm1=True, shaping=True, l_cache=2),
    "overlong shaping, L_cache=1": dict(pm1=True, shaping=True, l_cache=1),
}
PROBE_SEEDS = range(16)
probe = train(probe_variants, PROBE_SEEDS, gen_seed=1, progress=False)
pn, pv = len(PROBE_SEEDS), list(probe_variants)
p_final, p_half = probe["final"].view(len(pv), pn), probe["acc"][4].view(len(pv), pn)
p_lw = probe["logs"]["len_wrong"].view(-1, len(pv), pn).nanmean(0)  # mean wrong-answer length over the run


def diff_se_p(x, i, j=0):  # difference of two arms' means over the 16 replicates, and its standard error
    return (x[i].mean() - x[j].mean()).item(), (x[i].var() / pn + x[j].var() / pn).sqrt().item()


print(f"\nstream 1, 16 replicates  {'final acc':>13s} {'vs control':>15s} | {'at 5,120':>11s} {'vs control':>15s} | "
      f"{'wrong len':>9s}")
for i, name in enumerate(pv):
    (d, se), (dh, seh) = diff_se_p(p_final, i), diff_se_p(p_half, i)
    print(f"{name:28s} {p_final[i].mean():.3f} ± {p_final[i].std():.3f} {d:+.3f} ± {se:.3f} | "
          f"{p_half[i].mean():.2f} ± {p_half[i].std():.2f} {dh:+.3f} ± {seh:.3f} | {p_lw[i].mean():9.2f}")
for label, i, j in (("final, k3 - rho*k3 (IS-KL)", 3, 4), ("final, shaping: no std - with std", 6, 5),
                    ("final, shaping: L_cache=1 - L_cache=4", 8, 5)):
    d, se = diff_se_p(p_final, i, j)
    print(f"{label:40s} {d:+.3f} ± {se:.3f}  ({abs(d) / se:.1f} standard errors)")
print(f"first step: share of groups whose answers are all wrong or all right (no correctness signal) "
      f"{probe['logs']['no_signal'][0].view(len(pv), pn)[5].mean():.2f}")

# %% [markdown]
# **The main run's arms against the second run's control.** The two runs draw from independent streams, so each
# arm of the main run (8 replicates) can be compared with the second run's control (16 replicates), a control that
# does not share the main run's draws; the standard error of the difference combines the two spreads. The table
# gives the differences at 5,120 answers and at the end of the budget; then the largest gap at 5,120 among the small changes (β, std, normalisers,
# clip range, filtering), and how often a gap that large would appear somewhere among the 14 comparisons (every arm
# but the main run's control) if none had an effect and they were independent (two-sided, normal).

# %%
print(f"{'main-run arm (8) - second-run control (16)':42s} {'at 5,120 answers':>24s} {'at the end':>24s}")
z_half = []
for i, name in enumerate(names):
    row = []
    for x, y in ((half, p_half), (final, p_final)):
        d, se = (x[i].mean() - y[0].mean()).item(), (x[i].var() / n_s + y[0].var() / pn).sqrt().item()
        row.append(f"{d:+.3f} ± {se:.3f} ({d / se:+.1f} SE)")
        if x is half and i != ctrl:
            z_half.append((abs(d / se), name))
    print(f"{name:42s} {row[0]:>24s} {row[1]:>24s}")
small = [z for z in z_half if not z[1].startswith(("overlong shaping", "dynamic", "DAPO", "process"))]
z_max, worst = max(small)
p_any = 1 - (1 - math.erfc(z_max / math.sqrt(2))) ** len(z_half)
print(f"largest gap at 5,120 among the small changes (beta, std, normalisers, clip, filtering): {worst}, "
      f"{z_max:.1f} SE; P(some |z| >= {z_max:.1f} among {len(z_half)} independent comparisons | no effect) = "
      f"{p_any:.2f}")
others = [names.index(n) for n in ("no std", "token-mean per batch", "token-mean per question", "clip-higher",
                                   "overlong filtering")]
print(f"replicates ending below 0.97 (one of the 26 targets is worth about 0.04): main-run control "
      f"{int((final[ctrl] < 0.97).sum())}/{n_s}, Dr. GRPO {int((final[names.index('Dr. GRPO')] < 0.97).sum())}/{n_s}, "
      f"no std, token means, clip-higher, filtering {int((final[others] < 0.97).sum())}/{len(others) * n_s}; "
      f"second-run control {int((p_final[0] < 0.97).sum())}/{pn}, online RFT {int((p_final[1] < 0.97).sum())}/{pn}")

# %% [markdown]
# **Reading the results: every variant but one learns the task, and the end point sits near a ceiling.** Every run
# has the same budget of 10,240 sampled answers; "vs control" is the difference of the 8-replicate means with its
# standard error, so a difference inside about two standard errors is noise. The variants go from 1.4% of answers
# right (the uniform start, exact, W1; the Maj@K table below measures 1.5% from samples) to 91.5-98.5% (the replicate
# means, printed under the table). That end point sits near a ceiling (the control at 0.973, the best variant at
# 0.985), which compresses every difference: "no effect at the end" means no effect that survives to near-perfect
# accuracy.

# %% [markdown]
# **At 5,120 answers, the small changes' lead over this run's control is mostly the control's luck.** On this stream
# all ten variants that change little sit above the control, seven of them by more than two standard errors
# (clip-higher +0.09 ± 0.02, no std and the per-batch token mean +0.08 ± 0.03, even β = 0.04 +0.05 ± 0.02, process
# supervision +0.14 ± 0.02). But on the second stream (16 replicates, the second run's table) the control is at 0.85
# at 5,120 answers, not 0.76, and β = 0.04 is *below* it there (−0.046 ± 0.021). Against that control (the
# cross-stream table, whose two streams are independent draws):
#
# - the main run's small changes are level or behind: clip-higher −0.001 ± 0.024, the per-batch token mean
#   −0.005 ± 0.027, no std −0.013 ± 0.029, overlong filtering −0.024 ± 0.019, the per-question token mean
#   −0.035 ± 0.024 and the three β = 0.04 arms −0.037 to −0.056;
# - the main run's own control is 0.089 ± 0.024 (3.7 standard errors) below it;
# - the lowest of the small changes is Dr. GRPO, −0.075 ± 0.028 (2.7 standard errors). With 14 arms against one
#   control, a gap that large somewhere has a chance of about 0.09 under no effect at all (printed under the table,
#   counting the comparisons as independent, which they are not quite: they share the control), so it is a lead to
#   re-test, not a finding.

# %% [markdown]
# **At the end, gaps of a point or two are weak evidence; the clear effects are the ones both streams show.** The
# cross-stream table puts the main run's control and its six small β = 0 changes (no std, Dr. GRPO, both token means,
# clip-higher, filtering) 0.008-0.021 below the second run's control (the control itself −0.012 ± 0.010, Dr. GRPO
# lowest at −0.021 ± 0.007), and process supervision level with it. Near the ceiling the final accuracies are lumpy
# rather than normal: most replicates end at 0.975-1.0 and a minority at 0.91-0.97 (one target of 26 is worth about
# 0.04); the second run's control drew 1 replicate below 0.97 in 16, the main run's small changes about 1 in 4
# (printed under the table). Standard errors from 8-16 replicates of such a distribution understate the tail, so a
# single gap of one or two points at the end is weak evidence; the two KL forms' difference below counts because it
# has the same sign and size on both streams. Of the mid-run differences that hold on both streams, process
# supervision's lead (this run's arm +0.055 ± 0.019 against the second run's control; the second run's own arm
# +0.042 ± 0.017 against the same control) and the large cost of shaping are the clear ones. What the toy shows,
# trick by trick, follows.

# %% [markdown]
# **The KL term costs accuracy, and its gradient matters.** GRPO with DeepSeekMath's β = 0.04 (plain k3) ends 3.7
# points below the control (−0.037 ± 0.012) and keeps more entropy (0.66 against 0.24 nats at the end). The
# importance-weighted KL (`trl`'s default) costs less (−0.016 ± 0.012); the direct difference between the two KL forms
# is −0.021 ± 0.010 (2.1 standard errors) here and −0.025 ± 0.008 (3.2) on the second stream, where β = 0.04 costs
# −0.050 ± 0.007 with k3 and −0.025 ± 0.005 with $\rho\hat k_3$. So the two forms train differently, and plain k3
# costs more. Why is suggestive, not established: against a uniform $\pi_{\text{ref}}$, the forward
# KL$(\pi_{\text{ref}}\|\pi_\theta) = -\log 10 - \frac{1}{10}\sum_v\log\pi_\theta(v)$ grows without bound as any
# token's probability goes to 0, while the reverse KL is $\log 10 - H(\pi_\theta) \le \log 10$, so plain k3, whose
# gradient is the forward one, may resist the sharpening that solving the task needs more; the end entropies do not
# separate the two forms (+0.08 ± 0.09, printed under the diagnostics). Iterative GRPO's reference reset every 20
# steps removes the cost (+0.002 ± 0.011): the anchor follows the policy. **Why drop the KL at all** is argued by the
# papers. Dr. GRPO (§3, after eq. 1): the KL "helps prevent $\pi_\theta$ from deviating too far from the distribution
# where the reward model is accurate", but "RL-tuning reasoning models typically employs rule-based verifiers as r
# (Lambert et al., 2024), eliminating the concerns of distributional shift. This allows us to remove the KL term,
# which not only saves the memory and computation required by $\pi_{ref}$ during training, but also potentially leads
# to better performance for R1-Zero-like training (Hu et al., 2025). We will assume β = 0 throughout this paper." DAPO
# (§2.3): "during training the long-CoT reasoning model, the model distribution can diverge significantly from the
# initial model, thus this restriction is not necessary". DeepSeekMath (§4.2) kept β = 0.04 with a learned reward
# model. The toy is Dr. GRPO's case, an exact verifier: there is no reward model for the KL to guard, and it only
# costs.

# %% [markdown]
# **Dr. GRPO: a small length effect in the predicted direction; the accuracy gain of its Appendix C is not
# reproduced.** The paper's claim on accuracy goes beyond "preserving reasoning performance" (§4): in Appendix C
# (Qwen2.5-1.5B on 3K math questions), "Dr. GRPO and the other ablated variants consistently outperform vanilla GRPO
# in both training rewards and evaluation accuracy. This indicates that removing bias terms (either length or std)
# improves policy learning" (Figure 8: Dr. GRPO, GRPO without length normalisation, GRPO without std normalisation,
# vanilla GRPO), and over 3 independent runs "Dr. GRPO consistently demonstrates statistically significant
# improvements—both in token efficiency and final accuracy—across different random seeds" (Figure 9). In the toy,
# dropping the std (−0.001 ± 0.011 at the end), Dr. GRPO's full change (−0.010 ± 0.012) and the per-batch token mean
# (+0.003 ± 0.013; the closest arm to Figure 8's "without length normalisation": it keeps the std and drops $1/|o_i|$,
# but divides by the batch's token count, not a constant) all end level with the control, and mid-run, against the
# second stream's control, none is ahead (−0.013 ± 0.029, −0.075 ± 0.028, −0.005 ± 0.027). Against that control Dr.
# GRPO also ends the lowest of the six small β = 0 changes (−0.021 ± 0.007, 2.9 standard errors; 4 of its 8 replicates
# end below 0.97, 1 of that control's 16): weak evidence near a lumpy ceiling, but in the direction opposite to
# Appendix C's. So the accuracy claim is **not reproduced at this scale**: the end point is near the ceiling, and the
# toy has no questions that stay too hard or too easy (the std's difficulty bias) and no long answers (the length
# bias). The length effect is there, small: the three variants that drop the $1/|o_i|$ normaliser (Dr. GRPO, both
# token-mean forms: 6.73-6.78 tokens) sample shorter wrong answers during training than the six plain variants that
# keep it and change only β, the std or the clip range (6.91-7.00; printed above), by about 0.16 tokens between Dr.
# GRPO and the control, about 2.5 standard errors (variants that also change the reward or the data, such as overlong
# filtering at 7.54 or process supervision at 6.16, are not comparable): the bias of D5, at the scale of answers of at
# most 10 tokens. The paper's effect is responses growing by hundreds of tokens over a long run (Figure 5).

# %% [markdown]
# **Token-level loss, per batch or per question: no difference** (+0.003 ± 0.013 and +0.000 ± 0.012): the targets'
# answer lengths differ little, so the two weightings of D5 nearly coincide. The distinction matters when some
# questions draw much longer answers than others (long chains of thought on hard problems).

# %% [markdown]
# **Clip-higher: no measurable effect** (+0.004 ± 0.010 at the end). Its clip fraction is below the control's (0.084
# against 0.096) because the upper bound clips less, and its entropy at 2,560 answers is lower, not higher (1.70
# against 1.82, −0.12 ± 0.06, about 2 standard errors: suggestive only). Either way, with 10 tokens per state and a
# uniform start there is no entropy collapse to prevent.

# %% [markdown]
# **Overlong shaping hurts badly (−0.520 ± 0.030), and a smaller buffer does not cure it.** At the start 91% of the
# groups are all wrong (90% on the second stream), and in an all-wrong group the only reward differences are the
# length penalties, so the whole advantage says "stop earlier": the policy learns to stop (wrong answers of 2.1
# tokens, entropy 1.19 at 2,560 answers) before it learns to add, and short answers cannot reach large targets. How
# many answers the penalty hits is set by the 10-token cap more than by the buffer: 39% of the uniform start's answers
# ($0.9^9$) reach the cap, and the penalty zone holds 53%, 43% and 39% of all answers for $L_{\text{cache}}$ = 4, 2
# and 1 (printed above the second-stream table). On the second stream a smaller buffer harms less but still badly:
# shaping ends at 0.456 with $L_{\text{cache}} = 4$, 0.596 with 2 and 0.683 with 1, against 0.985 for that stream's
# control (−0.302 ± 0.024 even when only answers at the cap are penalised), and every arm's wrong answers shrink to
# 2.1-2.8 tokens. The group std adds to the harm, and the second stream measures it: without the std shaping ends
# +0.110 ± 0.028 higher (3.9 standard errors; in an all-wrong group the std turns penalty differences of 0.25-1 into
# advantages of order 1), and still −0.419 ± 0.022 below the control. Adding dynamic sampling, which filters on
# *accuracy* so that all-wrong groups never reach the loss, gives 0.920 (0.915 for dynamic sampling alone). DAPO's
# setting differs in the part that matters: its penalty zone starts at 16,384 tokens, far above the lengths a base
# model writes at the start of training, so the penalty acts only once answers have grown long; in the toy it hits
# 39-53% of the answers from the first step.

# %% [markdown]
# **Overlong filtering: harmless here** (−0.004 ± 0.011); truncated answers are no longer pushed down, so wrong
# answers are longer (7.54 tokens against 6.91).

# %% [markdown]
# **Dynamic sampling and DAPO: ahead per step, as DAPO claims; behind per generated answer; the time claim cannot be
# tested here.** DAPO makes three claims for dynamic sampling:
#
# 1. *Each trained batch carries more signal*: in a group whose rewards are all equal, "a zero advantage results in
#    zero policy gradients, shrinking the magnitude and increasing the noise sensitivity of the batch gradient,
#    thereby degrading sample efficiency" (§3.2), and filtering such groups leaves "all prompts in the batch with
#    effective gradients" (§3.2).
# 2. *Fewer steps*: DAPO beats DeepSeek-R1-Zero-Qwen-32B "using 50% training steps" (Figure 1, whose "x-axis
#    represents the gradient update steps"; §1, §4.2), and with dynamic sampling "the model's convergence time is
#    even reduced, due to fewer training steps required" (§4.2).
# 3. *Little extra time*: "although more data needs to be sampled due to the filtering out of zero-gradient data, the
#    overall training time is not significantly affected" (§4.2), because "the generation time is typically
#    dominated by the generation of long-tail samples if the RL system is synchronized and the generation stage is
#    not pipelined", and "with dynamic sampling the experiment achieves the same performance faster as shown in
#    Figure 6" (§3.2).

# %% [markdown]
# **What the toy shows, claim by claim: (2) holds, (1) holds by construction, (3) is out of reach, and the cost per
# answer is high.**
#
# - **(1) holds by construction.** At first 91% of the groups have no signal. Every group dynamic sampling keeps has
#   both right and wrong answers, so every answer in it has a nonzero advantage and every token is pushed. What the
#   toy adds is the consequence: 4 updates clip 2-3 times more tokens (0.26-0.27 against 0.10).
# - **The toy confirms (2).** Per step DAPO is far ahead (last line of the diagnostics: after 30 steps the control is
#   at 0.65; DAPO ends at 0.92 after 28).
# - **It cannot test (3).** It has no generation time to measure, and its answers, at most 10 tokens, have no long
#   tail (a synchronous round lasts about as long as its longest answer, whatever the number of prompts in it).
# - **Per generated answer, the budget it matches, dynamic sampling is behind.** Filling 16 informative groups takes
#   up to 10 rounds (1,280 answers) per step, so dynamic sampling spends the budget in 28 optimizer steps instead of
#   80 and ends at 0.915 (−0.058 ± 0.021; 0.45 at 5,120 answers), DAPO at 0.921 (−0.052 ± 0.013). DAPO's "sample
#   efficiency" (§3.2) is about the samples a batch trains on; per generated sample, the discarded groups are paid
#   for and not learned from. A comparison by steps is how an earlier version of this notebook credited DAPO with a
#   lead that came from about 3 times more samples.

# %% [markdown]
# **Process supervision learns fastest.** At 5,120 answers it is the best variant: this run's arm is at 0.91 ± 0.02,
# +0.14 ± 0.02 over this run's low control. The lead holds against the second run's control, for both arms: the second
# run's own process arm is +0.042 ± 0.017 (2.5 standard errors) above it, and this run's arm +0.055 ± 0.019 (3.0, the
# cross-stream table); the two arms share that control, so they are two replications of the arm, not of the
# comparison. At the end it is level, near the ceiling (+0.012 ± 0.010 here, −0.003 ± 0.003 on the second stream).
# That is in line with DeepSeekMath's finding that process beats outcome supervision (§5.2.1, Figure 5), here with an
# exact step verifier, which a learned process reward model is not. Its right answers are longer (4.99 tokens against
# 4.02): every step that keeps the target reachable is rewarded, and a token collects the rewards of all later steps.

# %% [markdown]
# **Online RFT: as good as GRPO here, on average** (second stream, 16 replicates: −0.000 ± 0.005 at the end, −0.001 ±
# 0.021 at 5,120 answers), though its final accuracies spread twice as wide (std 0.020 against the control's 0.010; 5
# of 16 replicates end below 0.97, against 1). The toy does **not** reproduce DeepSeekMath's "GRPO surpasses online
# RFT" (§5.2.1, Figure 5, on DeepSeekMath-Instruct 1.3B). The paper's explanation is the coefficient: GRPO "uniquely
# adjusts its gradient coefficient based on the reward value provided by the reward model", while online RFT "does not
# penalize incorrect responses and uniformly reinforces all responses with correct answers at the same level of
# intensity". In the paper the two also differ in the reward (a rule for online RFT, a learned reward model for GRPO,
# Table 10); here both get the same exact 0/1 verifier, so only the coefficient differs, and with a 0/1 reward GRPO's
# graded values carry no more information than right/wrong. Two possible reasons the coefficient does not matter here,
# neither tested: in a softmax table, raising a right answer's tokens lowers the others at the same states, and online
# RFT also learns from all-right groups, which GRPO's zero advantage skips.

# %% [markdown]
# **What two replicates would have said.** With both runs in hand: the same comparison with the control, but each
# variant's 8 replicates cut into 4 disjoint pairs, each pair compared with the matching pair of the control's
# replicates: the 4 two-replicate differences a two-seed study could have reported, next to the 8-replicate difference
# and its standard error. An effect counts as real when the 8-replicate difference is beyond 2 standard errors, or,
# for the four arms the second run repeats (the two KL forms, process supervision, overlong shaping), when that run's
# 16-replicate difference is. A two-replicate difference is marked `*` (an effect the replicates do not support) when
# it is at least 0.02 and either there is no real effect or the real one has the other sign, and `o` (a missed effect)
# when there is a real effect but the pair's difference is under 0.02 or of the other sign.

# %%
pairs = torch.arange(n_s).view(-1, 2)  # (4, 2) disjoint pairs of replicates
two = final[:, pairs].mean(-1) - final[ctrl, pairs].mean(-1)  # (variants, 4) two-replicate differences
misleading, missed = [], []
print(f"{'variant':27s} {'8 replicates':>15s} {'second run (16)':>16s} | two-replicate differences (4 disjoint pairs)")
for i, name in enumerate(names):
    if i == ctrl:
        continue
    d8, se8 = diff_se(final, i, ctrl)
    d, real = d8, abs(d8) >= 2 * se8
    d16, se16 = diff_se_p(p_final, pv.index(name)) if name in pv else (math.nan, math.nan)
    if not real and abs(d16) >= 2 * se16:  # the second run's 16 replicates show an effect 8 replicates miss
        d, real = d16, True
    mark = ["*" if ((x * d < 0) or not real) and abs(x) >= 0.02 else
            "o" if real and (abs(x) < 0.02 or x * d < 0) else " " for x in two[i].tolist()]
    misleading += [name] if "*" in mark else []
    missed += [name] if "o" in mark else []
    col16 = f"{d16:+.3f} ± {se16:.3f}" if name in pv else ""
    print(f"{name:27s} {d8:+.3f} ± {se8:.3f} {col16:>16s} | " + "  ".join(f"{x:+.3f}{m}" for x, m in
                                                                        zip(two[i].tolist(), mark, strict=True)))
print(f"{len(misleading)} of {nv - 1} comparisons have a pair reporting an effect of 0.02 or more that the replicates "
      f"do not support (*); {len(missed)} have a pair that misses a real effect (o): {', '.join(missed)}")
isk = names.index("GRPO b=0.04, IS-KL (trl)")
(d8, se8), (d16, se16) = diff_se(final, isk, ctrl), diff_se_p(p_final, pv.index(names[isk]))
assert abs(d8) < 2 * se8 and abs(d16) >= 2 * se16  # the example the text draws: 8 replicates miss a real effect
print(f"IS-KL's cost: {d8:+.3f} ± {se8:.3f} ({abs(d8) / se8:.1f} SE) with 8 replicates, {d16:+.3f} ± {se16:.3f} "
      f"({abs(d16) / se16:.1f} SE) with the second run's 16")


# %% [markdown]
# **Replicates.** The 8 replicates of one variant span up to 0.195 in final accuracy (overlong shaping, 0.34-0.53;
# dynamic sampling 0.80-0.96), more than most differences between variants. The two-replicate table above shows what
# two seeds would have concluded, and it errs in both directions:
#
# - **Unsupported effects.** For 8 of the 14 comparisons some pair of replicates reports a gain or loss of 2-4 points
#   that the replicates do not support (process supervision at +0.034, both token means at +0.028 and +0.038,
#   Dr. GRPO at −0.038).
# - **Missed effects.** One pair each of dynamic sampling (+0.001), DAPO (−0.001) and shaping + dynamic sampling
#   (−0.015) would have shown little or no cost. IS-KL is the sharper lesson: its cost is real, −0.025 ± 0.005
#   (5.0 standard errors) with the second run's 16 replicates, yet within 2 standard errors with this run's 8
#   (−0.016 ± 0.012, printed under the table), and two of its four pairs would have missed it (−0.013) or reversed
#   it (+0.020). Two replicates, and even 8, can miss a 2-point effect.
# - **A second stream.** The main table comes from one random stream (`gen_seed=0`); the second run (`gen_seed=1`,
#   16 replicates) repeats the control, both KL forms, process supervision and overlong shaping on a fresh stream,
#   and its control is compared with every arm of the main run. The final costs of the KL and of shaping, and
#   process supervision's mid-run lead, hold there; the mid-run lead of the small changes over the control does not
#   (against the second stream's control, at 5,120 answers, they sit between −0.075 for Dr. GRPO and −0.001,
#   process supervision apart).

# %% [markdown]
# **Maj@K vs Pass@K (DeepSeekMath §5.2.2, Figure 7).** The paper compares the Instruct and RL models at temperature
# 0.7: "RL enhances Maj@K's performance but not Pass@K", i.e. RL makes the output distribution more robust, "boosting
# the correct response from TopK rather than the enhancement of fundamental capabilities". The same measurement on
# the control's 8 replicates at three points: the uniform start, after 1,280 sampled answers, and after the budget;
# 64 samples per target, Pass@K by the unbiased estimator $1 - \binom{n-c}{K}/\binom{n}{K}$ (Chen et al. 2021),
# Maj@K as the share of disjoint blocks of $K$ samples whose most frequent answer (the digit sum of the answers
# that stopped; ties to the smaller sum) is the target.

# %%
def pass_and_maj(theta, models, gen, ks, n=64):
    tgt = torch.arange(N_TGT).repeat_interleave(n)[None].expand(len(models), -1)
    tokens, _, mask, total, stopped = sample(table_cdf(theta), models, tgt, gen)
    right = (stopped & (total == TARGETS[tgt])).view(len(models), N_TGT, n)
    digit_sum = (tokens * mask).sum(-1)  # the answer itself (total stops at target + 1)
    answers = torch.nn.functional.one_hot(digit_sum, 9 * L_GEN + 1) * stopped[..., None]  # answers that stopped vote
    c = right.sum(-1)  # (models, targets) correct samples out of n
    out = {}
    for k in ks:
        i = torch.arange(1, n + 1).double()
        # 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)
        fail = torch.where(i > n - c[..., None], 1 - k / i, torch.ones(())).prod(-1)
        votes = answers.view(len(models), N_TGT, n // k, k, -1).sum(3)  # (models, targets, blocks, sums)
        maj = (votes.argmax(-1) == TARGETS[:, None]).double().mean(-1)
        out[k] = ((1 - fail).mean(1), maj.mean(1))  # each (models,)
    return out


KS = (1, 4, 16, 64)
ctrl_models = torch.arange(ctrl * n_s, (ctrl + 1) * n_s)  # the control's 8 policies in the stack
gen_eval = torch.Generator().manual_seed(123)
points = {"start (uniform)": torch.zeros_like(run["theta"]), "after 1,280 answers": run["snapshot"],
          "after 10,240 answers": run["theta"]}
pm = {label: pass_and_maj(th, ctrl_models, gen_eval, KS) for label, th in points.items()}
print(f"{'':22s}" + "".join(f"{'Pass@' + str(k):>14s}" for k in KS) + "".join(f"{'Maj@' + str(k):>14s}" for k in KS))
for label, res in pm.items():
    print(f"{label:22s}" + "".join(f"{res[k][0].mean():8.3f}±{res[k][0].std():.3f}" for k in KS)
          + "".join(f"{res[k][1].mean():8.3f}±{res[k][1].std():.3f}" for k in KS))

# %% [markdown]
# **Maj@K vs Pass@K: the toy does not reproduce the paper's finding.** Pass@K rises as well as Maj@K: Pass@64 goes
# 0.64 (uniform start) → 0.75 (1,280 answers) → 0.99 (end), Maj@64 0.005 → 0.23 → 0.99. At the end both are at
# the ceiling (every target is solved), so the larger gain of Maj@64 over the run is partly a ceiling effect, not
# evidence that RL only re-ranks answers the policy could already find. The setting differs from the paper's in
# two ways that explain it: the toy starts from a uniform policy that has not learnt the task (DeepSeekMath starts
# RL from an SFT model that already solves most problems sometimes, where Pass@K has little room to rise), and it
# samples at temperature 1, the paper at 0.7.

# %% [markdown]
# ### What a healthy run prints
#
# Values a correct implementation of this notebook's trainer gives, from the mechanics rather than from luck:
# every policy starts uniform, so the entropy of the first batch is $\ln 10 = 2.303$ nats per token and its k3 to
# $\pi_{\text{ref}}$ is exactly 0 (the policy *is* the reference); with 0/1 rewards and about 1.4% of answers right (W1),
# about 9 groups in 10 have no signal at first; the 4 updates per batch move the ratios enough that a few percent
# of tokens are clipped (0 would mean the ratios never leave 1: $\mu = 1$ or a learning rate of zero); the control
# ends above 90% with its entropy below 0.5 nats and right answers of 2-6 tokens (the digits plus EOS); dynamic
# sampling spends the same budget in 20-40 optimizer steps instead of 80 (its first steps need up to 10 rounds of
# 128 answers each, its last ones 1-2). The cell prints the run's values and asserts these ranges.

# %%
c0 = logs["entropy"][0, ctrl]
checks = {
    "entropy at step 0 (ln 10 = 2.303)": (logs["entropy"][0].min().item(), 2.29, 2.31),
    "k3 to pi_ref at step 0": (logs["kl"][0].abs().max().item(), 0.0, 1e-12),
    "no-signal share at step 0": (logs["no_signal"][0, ctrl].mean().item(), 0.8, 0.97),
    "clip fraction, control, first 10 steps": (logs["clip"][:10, ctrl].mean().item(), 0.01, 0.3),
    "control accuracy after the budget": (final[ctrl].mean().item(), 0.9, 1.0),
    "control entropy at the end": (logs["entropy"][-1, ctrl].mean().item(), 0.0, 0.5),
    "control right-answer length, last 10 steps": (logs["len_right"][-10:, ctrl].nanmean().item(), 2.0, 6.0),
    "DAPO optimizer steps within the budget": (steps_taken[names.index("DAPO")].item(), 20, 40),
}
for label, (value, low, high) in checks.items():
    print(f"{label:44s} {value:7.3f}   expected in [{low:.3g}, {high:.3g}]")
    assert low <= value <= high, label

# %% [markdown]
# ## Misconceptions
#
# - **Claim (seed README):** GRPO replaces the value function by a "historical average return"
#   $R^{old}_t = \frac1T\sum_{i=1}^T r_i$ and uses $A_t = G_t - R^{old}_t$. **Correction:** the baseline is the
#   mean reward of the $G$ outputs sampled *now*, from $\pi_{\theta_{\text{old}}}$, *for the same question*:
#   GRPO "uses the average reward of multiple sampled outputs, produced in response to the same question, as the
#   baseline" (DeepSeekMath §4.1.1), and $\hat A_{i,t} = (r_i - \operatorname{mean}(\mathbf r))/\operatorname{std}(\mathbf r)$
#   over that group (§4.1.2). `advantages_from_scratch` and the trainer have no memory of earlier batches.
# - **Claim (seed README):** samples are grouped "by task type (dialogue, code generation)" and the advantage is
#   taken relative to the task group. **Correction:** a group is the $G$ answers to one question $q$
#   ($\{o_1, \dots, o_G\} \sim \pi_{\theta_{\text{old}}}(O \mid q)$, eq. 3). Pooling different questions would
#   compare answers to easy questions with answers to hard ones: the reward differences would measure question
#   difficulty, not answer quality.
# - **Claim (seed README):** GRPO trains "only LoRA adapters (rank 16, 0.1% of parameters)" with a learning rate
#   of 3e-4. **Correction:** GRPO is an objective; it says nothing about which parameters move, and it does not
#   require LoRA. DeepSeekMath trains the policy (DeepSeekMath-Instruct 7B) with learning rate 1e-6, KL coefficient
#   0.04, 64 samples per question, batch size 1024 and "a single update following each exploration stage" (§4.2),
#   with no mention of LoRA. `trl`'s `GRPOTrainer` trains the full model unless a `peft_config` is passed; the toy
#   above trains every logit of its policies.
# - **Claim (common):** "the k3 term is an unbiased KL penalty, so it pushes the policy down the gradient of
#   KL$(\pi_\theta\|\pi_{\text{ref}})$." **Correction:** its *value* is unbiased for that KL; its *gradient*, with the
#   samples held fixed as every trainer does, is the gradient of the forward KL$(\pi_{\text{ref}}\|\pi_\theta)$ (D3,
#   checked exactly). Multiplying by the importance ratio (`trl`'s `use_bias_correction_kl`, on by default in 1.16)
#   gives the reverse-KL gradient; the toy shows the two forms train differently.
# - **Claim (seed slides):** the GRPO objective uses one ratio per answer, $\pi_\theta(o_i \mid
#   q)/\pi_{\theta_{old}}(o_i \mid q)$.
#   **Correction:** eq. 3 has one ratio per token, averaged with $\frac{1}{|o_i|}\sum_t$. A per-answer ratio is
#   GSPO's choice (R8; Zheng et al., arXiv:2507.18071, §4.1, eq. 7): the $1/|o_i|$-th power of the sequence ratio,
#   i.e. the geometric mean of the token ratios (D4).
# - **Claim (common):** "DAPO's token-level loss averages over all tokens in the batch." **Correction:** that is
#   what `trl`'s `dapo` (per generation batch) and `verl`'s opt-in model engine (per mini-batch,
#   `trainer.use_legacy_worker_impl=disable`) run. The released DAPO recipe, and `verl` today with its default
#   workers (`use_legacy_worker_impl=auto`, legacy `dp_actor.py`), take a token mean per micro-batch, weighted by the
#   micro-batch's share $n_b/N$ of the answers; DAPO's eq. 12 averages tokens per question and then questions (D5). The two differ
#   when questions' answers differ in total length. And "token-level loss" does not mean the same in DAPO and Dr.
#   GRPO: Dr. GRPO divides by a constant generation budget (§3.2) and also removes the std, which DAPO keeps.
# - **Claim (a common reading of DAPO):** "dynamic sampling makes RL more sample-efficient", read as: it reaches a
#   given accuracy with fewer *generated* samples. **Correction:** DAPO's claims are per trained batch, per step
#   and in time. Groups whose answers are all right or all wrong have zero advantage, "shrinking the magnitude and
#   increasing the noise sensitivity of the batch gradient, thereby degrading sample efficiency" (§3.2), so filling
#   the batch with groups that have signal makes each trained sample count; DAPO needs "50% training steps" of
#   DeepSeek-R1-Zero-Qwen-32B (Figure 1, in gradient updates), and with dynamic sampling "the model's convergence
#   time is even reduced, due to fewer training steps required" (§4.2); and the extra generation costs little time
#   because "the generation time is typically dominated by the generation of long-tail samples if the RL system is
#   synchronized and the generation stage is not pipelined" (§3.2, Figure 6). The discarded groups are still
#   generated: at a matched budget of generated answers, the budget the toy controls, its dynamic sampling is behind
#   (−0.058 ± 0.021), while per step it is far ahead, as DAPO says (it spends the budget in 28 steps instead of 80
#   and ends at 0.915; the control is at 0.65 after 30 steps). The time claim needs long-tail generation on a
#   synchronous system, which the toy does not have; it is not tested here.

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
# 4. A policy over 2 outcomes has $\pi_\theta = (0.8, 0.2)$ and $\pi_{\text{ref}} = (0.5, 0.5)$, with
#    $\pi_\theta = \mathrm{softmax}(\theta)$. Give the expected gradient with respect to $\theta_1$ of plain $\hat k_3$
#    used as a loss, and of $\rho\hat k_3$ (D3), to 3 decimals.
#
# Fill in your answers and run the cell; `None` skips a question. The cell computes the answers with this
# notebook's own functions (`advantages_from_scratch`, `grpo_loss_from_scratch`, `clipped_surrogate_from_scratch`,
# `k3_from_scratch`) and prints only whether yours match, so it checks your derivation against the code.

# %%
answers = {
    "1_grpo": None,     # e.g. [a1, a2, a3, a4]
    "1_dr_grpo": None,  # e.g. [a1, a2, a3, a4]
    "2_grpo": None,     # a number
    "2_dr_grpo": None,  # a number
    "3": None,          # a number
    "4_k3": None,       # a number
    "4_rho_k3": None,   # a number
}


def exercise_key():  # the answers, computed by the notebook's functions (nothing is printed)
    key, r1 = {}, torch.tensor([1.0, 0.0, 0.0, 0.0])
    key["1_grpo"] = advantages_from_scratch(r1, 4, "group", eps=0.0).tolist()
    key["1_dr_grpo"] = advantages_from_scratch(r1, 4, "none").tolist()
    adv2 = torch.tensor([-1.0, 1.0, 0.5, -0.5])  # answer 0 is the wrong one; the others do not matter
    for name, loss_type in (("2_grpo", "grpo"), ("2_dr_grpo", "dr_grpo")):
        lp = torch.zeros(4, 5, requires_grad=True)  # on-policy, 5 tokens each
        loss = grpo_loss_from_scratch(lp, adv2, torch.ones(4, 5), loss_type=loss_type, max_len=10)
        key[name] = torch.autograd.grad(loss, lp)[0][0, 0].item()
    ratios = torch.linspace(1.0, 1.5, 50_001, requires_grad=True)  # ratio = pi / pi_old after some update
    surrogate = clipped_surrogate_from_scratch(ratios.log(), torch.tensor([1.0]), 0.2, 0.28).sum()
    moving = torch.autograd.grad(surrogate, ratios)[0] != 0  # where the gradient is still nonzero
    key["3"] = 0.05 * ratios[moving].max().item()
    theta2 = torch.log(torch.tensor([0.8, 0.2])).requires_grad_(True)
    ref2 = torch.log(torch.tensor([0.5, 0.5]))
    for name, weight in (("4_k3", False), ("4_rho_k3", True)):
        lp = torch.log_softmax(theta2, 0)
        per_outcome = k3_from_scratch(lp, ref2) * (torch.exp(lp - lp.detach()) if weight else 1.0)
        key[name] = torch.autograd.grad((lp.exp().detach() * per_outcome).sum(), theta2)[0][0].item()
    return key


key = exercise_key()
for name, value in answers.items():
    if value is None:
        print(f"exercise {name}: not answered")
    else:
        ok = torch.allclose(torch.tensor(value, dtype=torch.float64), torch.tensor(key[name], dtype=torch.float64),
                            atol=2e-3)
        print(f"exercise {name}: {'correct' if ok else 'not yet, try again'}")

# %% [markdown]
# <details>
# <summary><b>Solutions</b> (click to open once you have tried)</summary>
#
# 1. Mean 0.25, unbiased std $\sqrt{(0.75^2 + 3 \cdot 0.25^2)/3} = 0.5$: GRPO $[1.5, -0.5, -0.5, -0.5]$; Dr. GRPO only
#    centres, $[0.75, -0.25, -0.25, -0.25]$.
# 2. $L = -\frac1G\sum_i\frac1{|o_i|}\sum_t \rho_{i,t}\hat A_i$ and $\partial\rho/\partial\log\pi = \rho = 1$, so
#    $\partial L/\partial\log\pi(o_{i,t}) = -\hat A_i/(G|o_i|) = 1/20 = 0.05$ (gradient descent lowers each token);
#    Dr. GRPO: $-\hat A_i/(G L_{\max}) = 1/40 = 0.025$.
# 3. The clipped term binds once $\rho > 1 + \varepsilon_{\text{high}} = 1.28$: $0.05 \times 1.28 = 0.064$.
# 4. Plain $\hat k_3$ has the forward-KL gradient (D3), $\partial_{\theta_1}\mathrm{KL}(\pi_{\text{ref}}\|\pi_\theta) =
#    \pi_1 - \pi_{\text{ref},1} = 0.3$; $\rho\hat k_3$ the reverse one, $\pi_1\big(\log\frac{\pi_1}{\pi_{\text{ref},1}} -
#    \mathrm{KL}(\pi_\theta\|\pi_{\text{ref}})\big) = 0.8\,(\log 1.6 - 0.1927) = 0.2218$.
#
# </details>

# %% [markdown]
# ## References
#
# - Z. Shao, P. Wang, Q. Zhu, R. Xu, J. Song, et al. *DeepSeekMath: Pushing the Limits of Mathematical Reasoning
#   in Open Language Models.* arXiv:2402.03300 (v3), 2024. §4.1 (GRPO, eqs. 3-4, Algorithm 1; §4.1.3 process
#   supervision, §4.1.4 iterative RL), §4.2 and Table 5, §5.2 (Figures 5-7: process vs outcome, iterative RL,
#   Maj@K vs Pass@K). Code (models, evaluation): https://github.com/deepseek-ai/DeepSeek-Math
# - Z. Liu, C. Chen, W. Li, P. Qi, T. Pang, C. Du, W. S. Lee, M. Lin. *Understanding R1-Zero-Like Training: A
#   Critical Perspective.* Conference on Language Modeling (COLM) 2025; arXiv:2503.20783 (v2). §3 (β = 0 with
#   rule-based verifiers), §3.1-3.2 (length and difficulty biases, Dr. GRPO; Figure 1, Listing 1, Table 2),
#   Appendix C (Figures 8-9: the bias-term ablation and three seeds), Appendix G (Table 6: gradient clipping 1.0).
#   Code: https://github.com/sail-sg/understand-r1-zero (`train_zero_math.py`: the constant normaliser and the advantage without std)
# - Q. Yu, Z. Zhang, R. Zhu, et al. *DAPO: An Open-Source LLM Reinforcement Learning System at Scale.*
#   NeurIPS 2025 (poster); arXiv:2503.14476 (v1). §2.3 (no KL), §2.4 (±1 reward), §3.1-3.4 (eqs. 10-13; §3.2 and
#   §4.2 on dynamic sampling: sample efficiency, training steps and training time, Figure 6), §4.1, Table 1,
#   Figure 1. Code:
#   https://github.com/BytedTsinghua-SIA/DAPO (project page, data, weights); the training code is in `volcengine/verl`
#   (the recipe's commits below are on pull-request branches, #790 and #2090, not on `main`):
#   `recipe/dapo/README.md` at [04f41b77](https://github.com/volcengine/verl/blob/04f41b77f4d0235d2ef7bada2d2ff6177b0dac23/recipe/dapo/README.md)
#   (the token-level loss quote) and at [476a33ec](https://github.com/volcengine/verl/blob/476a33ec14269622c5b990389cd9462fe9a8cd22/recipe/dapo/README.md)
#   (no overlong filtering in the best run),
#   [`recipe/dapo/run_dapo_qwen2.5_32b.sh`](https://github.com/volcengine/verl/blob/03150d4fa825bcca1ec5c0a3f582cf6449148112/recipe/dapo/run_dapo_qwen2.5_32b.sh)
#   and `verl/workers/actor/dp_actor.py` at 03150d4 (the per-micro-batch loss), `agg_loss` in `verl/trainer/ppo/core_algos.py` at
#   [v0.4.0](https://github.com/volcengine/verl/blob/v0.4.0/verl/trainer/ppo/core_algos.py) and at
#   [8ed5bafc](https://github.com/volcengine/verl/blob/8ed5bafc052bd8f172b8a4a0e777c028db1f48bd/verl/trainer/ppo/core_algos.py) (global token count);
#   `verl/trainer/main_ppo.py` at [b178a3cd](https://github.com/volcengine/verl/blob/b178a3cd56f58b2d502255daba591e92833930a7/verl/trainer/main_ppo.py)
#   (the model engine only with `trainer.use_legacy_worker_impl=disable`).
# - DeepSeek-AI. *DeepSeek-V3.2.* arXiv:2512.02556, 2025 (the importance-weighted KL that `trl` adopts).
# - C. Zheng, S. Liu, M. Li, et al. *Group Sequence Policy Optimization.* arXiv:2507.18071, 2025. §4.1, eq. 7
#   (the length-normalised sequence ratio; reading R8).
# - M. Chen et al. *Evaluating Large Language Models Trained on Code.* arXiv:2107.03374, 2021 (the unbiased
#   Pass@K estimator).
# - J. Schulman. *Approximating KL divergence*, 2020. http://joschu.net/blog/kl-approx.html (the k3 estimator).
# - Reference implementation: `trl` 1.16.0, `trl/trainer/grpo_trainer.py`: `GRPOTrainer._compute_loss` (loss
#   types, `importance_sampling_level`, `use_bias_correction_kl`, the logged `clip_ratio/*`, `kl`, `entropy`) and
#   `_generate_and_score_completions` (`mask_truncated_completions`, `scale_rewards`); `trl/trainer/grpo_config.py`;
#   `trl/rewards/other_rewards.py`, `get_soft_overlong_punishment` (DAPO eq. 13). The course's
#   `shared/policy_losses.py` follows them and `tests/test_policy_losses.py` checks it against them. The history of
#   `trl`'s GRPO loss: [pull request #2881](https://github.com/huggingface/trl/pull/2881) (per-sequence to global
#   normalisation), [issue #2995](https://github.com/huggingface/trl/issues/2995),
#   [pull request #3256](https://github.com/huggingface/trl/pull/3256) (`loss_type`, Dr. GRPO).
# - Second reference implementation: Liger-Kernel 0.8.5, `liger_kernel/chunked_loss/grpo_loss.py`,
#   `LigerFusedLinearGRPOLoss` (loss types, `importance_sampling_level`, `use_bias_correction_kl`, default False),
#   https://github.com/linkedin/Liger-Kernel
