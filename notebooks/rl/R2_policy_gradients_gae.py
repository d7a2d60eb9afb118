# ---
# jupyter:
#   course:
#     cpu_seconds: 14
#     id: R2
#     papers:
#     - title: Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement
#         Learning
#       url: https://doi.org/10.1007/BF00992696
#       venue: Machine Learning 8, 229-256 (1992)
#     - arxiv: '1506.02438'
#       title: High-Dimensional Continuous Control Using Generalized Advantage Estimation
#       version: v6
#     part: rl
#     peak_memory_mb: 701
#     prerequisites:
#     - R1
#     title: Policy gradients and GAE
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
# # R2 · Policy gradients and GAE
#
# [![Open In Colab](../../docs/img/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/rl/R2_policy_gradients_gae.ipynb)
#
# **Papers:** Ronald J. Williams, *Simple Statistical Gradient-Following Algorithms for Connectionist
# Reinforcement Learning*, Machine Learning 8, 229-256, 1992. [doi:10.1007/BF00992696](https://doi.org/10.1007/BF00992696)
# (REINFORCE) · John Schulman, Philipp Moritz, Sergey Levine, Michael I. Jordan, Pieter Abbeel, *High-Dimensional
# Continuous Control Using Generalized Advantage Estimation*, ICLR 2016.
# [arXiv:1506.02438](https://arxiv.org/abs/1506.02438) (first posted 8 June 2015; GAE is §3, eq. 16)
#
# **Reference code:** `stable-baselines3` 2.9.2, `RolloutBuffer.compute_returns_and_advantage` and
# `OnPolicyAlgorithm.collect_rollouts`; the course's `shared/returns.py` (tested against sb3 in
# `tests/test_returns.py`). The first author's own TRPO + GAE code is
# [joschu/modular_rl](https://github.com/joschu/modular_rl) (`modular_rl/core.py`, `compute_advantage`).
#
# **Prerequisites:** [R1 · MDPs and the Bellman equations](R1_mdps_bellman.ipynb) (value functions, the linear
# Bellman equation $v_\pi = r_\pi + \gamma P_\pi v_\pi$, TD errors). Next: [R3 · TRPO](R3_trpo.ipynb).
#
# **CPU run time:** 14 s on a 2-core CPU (measured by `make run`, which rewrites this number)
#
# **Peak memory:** 701 MB (the kernel's peak resident memory, measured by `make run`)

# %% [markdown]
# ## TL;DR
#
# - The **policy-gradient theorem** $\nabla J = \sum_t \gamma^t\,\mathbb E[Q_t(s_t,a_t)\nabla\log\pi(a_t|s_t)]$ is derived by the log-derivative trick, causality and the tower property, with a time-indexed $Q_t$ on a finite horizon. It matches autograd to $10^{-12}$ or better on all 216 trajectories of a tabular MDP. Dropping the $\gamma^t$, as GAE, sb3 and PPO do, moves the vector by 0.047 (the largest gradient entry is 0.42). It then lies within 0.006 of the gradient of the *undiscounted* return.
# - A **baseline** $b(s)$ leaves the gradient unbiased. On a contextual bandit, 4,096 independent batches show every baseline unbiased. The value baseline cuts the variance about 70x when every reward carries an offset of 10, and only 1.2x without it. $V(s)$ is not the variance-optimal baseline: Greensmith et al.'s $b^*$ does slightly better (exact and Monte Carlo).
# - **GAE** (§3) is $\hat A_t = \sum_l (\gamma\lambda)^l\delta_{t+l}$, which equals the $\lambda$-return minus $V$: $\lambda = 0$ gives the TD error and $\lambda = 1$ the Monte Carlo return minus $V$. `shared.returns.gae` matches `stable-baselines3` in float32, including terminations inside the rollout, a termination on its last step, a rollout cut mid-episode, and sb3's time-limit bootstrap $r + \gamma V(s_{\text{final}})$ run through a real `PPO.collect_rollouts`.
# - On a chain MDP with exact advantages, 20-step rollouts (14% are truncated) and a fixed imperfect critic, $\lambda$ trades action-dependent bias (0.206 at $\lambda = 0$, 0.0145 at 0.95) against variance (0.12 at $\lambda = 0$, 0.63 at 1). Bias² + variance of one estimate is lowest at $\lambda = 0.3$ in all 8 groups of 500 rollouts; averaging 100-1000 estimates moves the optimum to 0.9-0.98. Truncation leaves a small bias even at $\lambda = 1$ (0.0019). With the perfect critic $\lambda$ biases nothing, but $\gamma < 1$ still does, measured against the undiscounted advantage: these are GAE's two knobs.

# %% [markdown]
# ## 中文速览
#
# - **策略梯度定理** $\nabla J = \sum_t \gamma^t\,\mathbb E[Q_t(s_t,a_t)\nabla\log\pi(a_t|s_t)]$：用对数导数技巧、因果性和全期望公式（塔性质）推导；有限时域下 $Q_t$ 依赖于时刻 $t$。在表格 MDP 的全部 216 条轨迹上与自动微分一致（误差不超过 $10^{-12}$）。像 GAE、sb3、PPO 那样去掉 $\gamma^t$，向量偏移 0.047（最大梯度分量 0.42），此时它与*不打折*回报的梯度只差 0.006。
# - **基线** $b(s)$ 不改变梯度的期望。在上下文老虎机上，4096 个独立批次表明各种基线都无偏。奖励整体偏移 10 时，价值基线把方差降低约 70 倍；无偏移时只有 1.2 倍。$V(s)$ 并不是方差最优的基线：Greensmith 等人的 $b^*$ 略好（精确值与蒙特卡洛一致）。
# - **GAE**（§3）为 $\hat A_t = \sum_l (\gamma\lambda)^l\delta_{t+l}$，等于 $\lambda$-回报减 $V$：$\lambda=0$ 为 TD 误差，$\lambda=1$ 为蒙特卡洛回报减 $V$。`shared.returns.gae` 与 `stable-baselines3` 在 float32 精度内一致，覆盖以下情形：rollout 内部终止、最后一步终止、rollout 在回合中途截断，以及 sb3 对时间上限截断的自举 $r + \gamma V(s_{\text{final}})$（在真实的 `PPO.collect_rollouts` 中验证）。
# - 在优势可精确求得的链式 MDP 上（rollout 长 20 步，14% 被截断；价值函数固定且不准确），$\lambda$ 在与动作相关的偏差（$\lambda=0$ 时 0.206，0.95 时 0.0145）与方差（$\lambda=0$ 时 0.12，$\lambda=1$ 时 0.63）之间权衡。单个估计的 偏差² + 方差 在 $\lambda=0.3$ 处最小，8 组、每组 500 条 rollout 的结果都是如此；对 100-1000 个估计取平均时，最优 $\lambda$ 移到 0.9-0.98。截断使 $\lambda=1$ 时仍留有小偏差（0.0019）。价值函数准确时 $\lambda$ 不引入偏差，但相对于不打折的优势，$\gamma<1$ 仍然引入偏差：这就是 GAE 的两个旋钮。

# %% [markdown]
# ## Setup
#
# One cell installs the course helper on Colab only (CI skips it); the next imports and seeds. Everything is
# float64 numpy or torch on a CPU, one thread.

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
import itertools

import matplotlib.pyplot as plt
import numpy as np
import torch

from shared import returns as shared_returns
from shared.utils import assert_close, error_bound, seed_everything

seed_everything(0)
torch.set_num_threads(1)  # small arrays: one thread is fastest and steady on a busy machine
torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(0)
print("torch", torch.__version__, "| numpy", np.__version__)

# %% [markdown]
# ## The problem
#
# **Policy gradients estimate $\nabla_\theta J$ from samples alone.** Williams (1992) introduced REINFORCE, a
# family of algorithms whose weight change is $\Delta w_{ij} = \alpha_{ij}\,(r - b_{ij})\,\partial \ln g_i/\partial
# w_{ij}$: "reward minus reinforcement baseline" times the characteristic eligibility. His Theorem 1 (as we recall
# it; section numbers not re-checked) says that the inner product of the expected update $\mathbb E[\Delta W|W]$
# with $\nabla_W\mathbb E[r|W]$ is nonnegative. When every learning rate is the same, $\alpha_{ij} = \alpha$, the
# expected update *equals* $\alpha\nabla_W\mathbb E[r|W]$: the update is then an unbiased gradient estimate. The
# baseline may depend on the unit's input but must be conditionally independent of its output $y_i$. No model of
# the environment is needed, only the log-probability of the actions taken.
#
# **The estimate is noisy.** The return of a whole trajectory multiplies every action's score, so the variance
# grows with the horizon and with the size of the rewards. GAE's §2 lists the choices of the weight $\Psi_t$ in
# $g = \mathbb E[\sum_t \Psi_t \nabla\log\pi(a_t|s_t)]$: the total return, the reward-to-go, the same with a
# baseline, $Q^\pi$, $A^\pi$ and the TD residual. It argues that the advantage gives "almost the lowest possible
# variance". The advantage must be estimated, and a learned critic $V$ is never exact.
#
# **Two knobs, $\gamma$ and $\lambda$.** GAE's objective is the *undiscounted* expected return. §2 introduces
# "a parameter $\gamma$ that allows us to reduce variance by downweighting rewards corresponding to delayed
# effects, at the cost of introducing bias", treated "as a variance reduction parameter in an undiscounted
# problem". $\hat A_t$ then estimates the discounted advantage $A^{\pi,\gamma}$, and the target is
# $g^\gamma = \mathbb E[\sum_t A^{\pi,\gamma}(s_t,a_t)\nabla\log\pi(a_t|s_t)]$. Note that there is no $\gamma^t$ in
# it (D1 returns to this). An estimator that gives $g^\gamma$ in expectation is called $\gamma$-just (§2,
# Definition 1 and Proposition 1, as we recall the numbering). §3 contrasts the two knobs. Taking $\gamma < 1$ biases the policy
# gradient whatever the value function's accuracy; $\lambda < 1$ biases it only when the value function is
# inaccurate. The paper also reports that empirically the best $\lambda$ is much lower than the best $\gamma$.
# (The §2 sentence is quoted verbatim as it is widely reproduced. The §3 points are paraphrased from memory and
# were not re-checked against the PDF.) Reproduction (b) and (d) below measure both knobs.
#
# **GAE's answer** (§3): an exponentially weighted sum of TD residuals, $\hat A^{\text{GAE}(\gamma,\lambda)}_t =
# \sum_{l\ge 0}(\gamma\lambda)^l\delta^V_{t+l}$. Here $\lambda$ interpolates between the TD residual (low
# variance, biased unless $V = V^{\pi,\gamma}$) and the Monte Carlo return minus $V$ ($\gamma$-just whatever $V$
# is, high variance). §4 reads the same sum as reward shaping with potential $V$. The paper pairs it with TRPO
# for the policy and a trust-region fit of the value function (§5), and tests it on cart-pole (a 2D classic
# control task) and on 3D locomotion: a biped, a quadruped, and a biped standing up (§6). This reading derives
# each piece and measures the bias and variance the paper talks about, on problems where the exact answer is
# known.
#
# **Lineage.** TD($\lambda$) and the $\lambda$-return (Sutton 1988; Sutton & Barto ch. 12): GAE is their
# advantage analogue. REINFORCE (Williams 1992). $\lambda$-weighted actor-critic advantage estimators before GAE
# (Kimura & Kobayashi 1998; Wawrzyński 2009, which GAE's related-work discussion credits, to our recollection).
# The policy-gradient theorem with function approximation (Sutton et al., NeurIPS 1999, proceedings 2000; cited
# here as 1999). GAE (2015) with TRPO ([R3](R3_trpo.ipynb)). A3C (Mnih et al. 2016) uses $n$-step advantages,
# which are GAE's $\hat A^{(k)}$. PPO (Schulman et al. 2017; R4) uses truncated GAE as its advantage, and so
# does `stable-baselines3`'s `PPO` (`gae_lambda=0.95`).

# %% [markdown]
# ## Derivations
#
# Notation: a trajectory $\tau = (s_0, a_0, r_0, s_1, \dots)$ of horizon $H$; $\pi_\theta(a|s)$ a softmax over
# logits $\theta[s, :]$; $J_\gamma(\theta) = \mathbb E_\tau[R(\tau)]$ with $R(\tau) = \sum_{t<H} \gamma^t r_t$.
#
# ### D1. The policy-gradient theorem: log-derivative trick, causality, tower property
#
# **Log-derivative trick.** $p_\theta(\tau) = \rho_0(s_0)\prod_t \pi_\theta(a_t|s_t)P(s_{t+1}|s_t,a_t)$. Since
# $\nabla p = p\,\nabla\log p$,
#
# $$\nabla J = \sum_\tau \nabla p_\theta(\tau) R(\tau) = \mathbb E_\tau\big[R(\tau)\,\nabla\log p_\theta(\tau)\big]
# = \mathbb E_\tau\Big[R(\tau)\sum_t \nabla\log\pi_\theta(a_t|s_t)\Big],$$
#
# because $\rho_0$ and $P$ do not depend on $\theta$: **the dynamics drop out**.
#
# **Causality.** For $t' < t$,
# $\mathbb E[\gamma^{t'} r_{t'}\nabla\log\pi(a_t|s_t)] = \mathbb E\big[\gamma^{t'} r_{t'}\,\mathbb E[\nabla\log\pi(a_t|s_t)
# \mid s_{0:t}, a_{0:t-1}]\big] = 0$ (D2's identity). So each score needs only the reward-to-go
# $G_t = \sum_{t'\ge t}\gamma^{t'} r_{t'}$ (note: discounted from time 0), and
# $\nabla J = \mathbb E[\sum_t \nabla\log\pi(a_t|s_t)\,G_t]$.
#
# **Tower property.** Define the time-indexed action value by the backward recursion
# $Q_t(s,a) = r(s,a) + \gamma\sum_{s'}P(s'|s,a)V_{t+1}(s')$, $V_t(s) = \sum_a\pi(a|s)Q_t(s,a)$, $V_H = 0$. It
# depends on $t$ because the remaining horizon $H - t$ does (with $H = \infty$ it is the stationary $Q^\pi$). By
# the Markov property the rewards after $(s_t, a_t)$ depend on the past only through $(s_t, a_t)$, so
# $\mathbb E[G_t \mid s_{0:t}, a_{0:t}] = \gamma^t Q_t(s_t, a_t)$. The score $\nabla\log\pi(a_t|s_t)$ is a function
# of $(s_t, a_t)$, hence
# $\mathbb E[\nabla\log\pi(a_t|s_t)\,G_t] = \mathbb E\big[\nabla\log\pi(a_t|s_t)\,\mathbb E[G_t|s_{0:t},a_{0:t}]\big] =
# \gamma^t\,\mathbb E[\nabla\log\pi(a_t|s_t)\,Q_t(s_t,a_t)]$. Write the expectation with the state distribution
# $d_t(s) = \Pr(s_t = s)$, where $d_0 = \rho_0$ and $d_{t+1}(s') = \sum_{s,a}d_t(s)\pi(a|s)P(s'|s,a)$. This gives
# the **policy-gradient theorem**:
#
# $$\nabla J_\gamma = \sum_{t<H}\gamma^t\sum_s d_t(s)\sum_a \pi(a|s)\,Q_t(s,a)\,\nabla\log\pi(a|s)
# = \sum_{t<H}\gamma^t\sum_s d_t(s)\sum_a \nabla\pi(a|s)\,Q_t(s,a).$$
#
# With $H = \infty$, $Q_t = Q^\pi$ and the discounted visitation $d^\pi_\gamma(s) = \sum_t\gamma^t d_t(s)$, it is
# Sutton et al.'s form $\nabla J_\gamma = \sum_s d^\pi_\gamma(s)\sum_a\nabla\pi(a|s)Q^\pi(s,a)$. By D2, $Q$ may be
# replaced by the advantage $A = Q - V$.
#
# **The $\gamma^t$ that practice drops.** GAE, sb3 and PPO weight every step's $\nabla\log\pi(a_t|s_t)\hat A_t$
# equally; there is no $\gamma^t$. The result is not $\nabla J_\gamma$: Thomas (2014) showed the bias, and Nota &
# Thomas (2020) showed that in general it is not the gradient of any function. Read GAE's way, it is a
# $\gamma$-biased estimate of the gradient of the undiscounted $J_1$. The second cell computes all three vectors
# exactly.
#
# The first cell builds a 3-state, 2-action MDP with horizon 3 and enumerates all $(3 \cdot 2)^3 = 216$
# trajectories. It gets $\nabla J$ by autograd of the exact $J$ and compares it with the two score-function sums
# computed exactly. The weights are $p(\tau)$, and the scores $\nabla_{\theta[s]}\log\pi(a|s) = e_a - \pi(\cdot|s)$
# are written by hand.

# %%
nS, nA, H, gamma_d1 = 3, 2, 3, 0.9
P_d1 = rng.dirichlet(np.ones(nS), size=(nS, nA))  # P[s, a, s']
r_d1 = rng.normal(size=(nS, nA))                   # deterministic reward r(s, a)
rho0 = np.array([0.5, 0.3, 0.2])
theta_d1 = torch.tensor(rng.normal(size=(nS, nA)), requires_grad=True)
trajs = list(itertools.product(range(nS), range(nA), repeat=H))  # (s0, a0, s1, a1, s2, a2)


def enumerated_J(theta, gamma):
    """J = sum over all 216 trajectories of p(tau) * sum_t gamma^t r_t; differentiable in theta."""
    pi = torch.softmax(theta, dim=1)
    J = 0.0
    for tr in trajs:
        s, a = tr[0::2], tr[1::2]
        p = rho0[s[0]] * torch.prod(torch.stack([pi[s[t], a[t]] for t in range(H)]))
        p = p * np.prod([P_d1[s[t], a[t], s[t + 1]] for t in range(H - 1)])
        J = J + p * sum(gamma**t * r_d1[s[t], a[t]] for t in range(H))
    return J


J = enumerated_J(theta_d1, gamma_d1)
grad_autograd = torch.autograd.grad(J, theta_d1)[0].numpy()

pi_np = torch.softmax(theta_d1, dim=1).detach().numpy()
g_full, g_togo, g_past = np.zeros((nS, nA)), np.zeros((nS, nA)), np.zeros((nS, nA))
for tr in trajs:
    s, a = tr[0::2], tr[1::2]
    p = rho0[s[0]] * np.prod([pi_np[s[t], a[t]] for t in range(H)])
    p *= np.prod([P_d1[s[t], a[t], s[t + 1]] for t in range(H - 1)])
    rew = np.array([gamma_d1**t * r_d1[s[t], a[t]] for t in range(H)])
    for t in range(H):
        score = np.zeros((nS, nA))
        score[s[t]] = np.eye(nA)[a[t]] - pi_np[s[t]]  # d log pi(a_t|s_t) / d theta
        g_full += p * rew.sum() * score
        g_togo += p * rew[t:].sum() * score
        g_past += p * rew[:t].sum() * score  # the terms causality drops
print(f"J = {J.item():.4f} from {len(trajs)} trajectories; dJ/dtheta (autograd, rows = states):")
print(np.round(grad_autograd, 4))
print("|full-return estimator - autograd|:", error_bound(np.abs(g_full - grad_autograd).max(), 1e-12))
print("|reward-to-go estimator - autograd|:", error_bound(np.abs(g_togo - grad_autograd).max(), 1e-12))
print("|expected past-reward terms|:", error_bound(np.abs(g_past).max(), 1e-12))

# %% [markdown]
# The theorem's form, computed without trajectories: $Q_t$ by the backward recursion, $d_t$ by the forward one,
# then $\sum_t w_t\sum_s d_t(s)\sum_a\pi(a|s)Q_t(s,a)(e_a - \pi(\cdot|s))$. With $w_t = \gamma^t$ this must equal
# autograd of the enumerated $J_\gamma$. With $w_t = 1$ it is what GAE-style code estimates in expectation (its
# $\hat A_t$ estimates $A_t$, with no $\gamma^t$). We compare the dropped form with $\nabla J_\gamma$ and with the
# gradient of the undiscounted $J_1$, the latter again by autograd of the enumeration.

# %%
scores_d1 = np.eye(nA)[None, :, :] - pi_np[:, None, :]  # (nS, nA, nA): scores_d1[s, a] = e_a - pi(.|s)


def q_table(gamma):
    """Time-indexed Q_t(s, a), shape (H, nS, nA), by Q_t = r + gamma P V_{t+1}, V_H = 0."""
    Q, V = np.zeros((H, nS, nA)), np.zeros(nS)
    for t in reversed(range(H)):
        Q[t] = r_d1 + gamma * P_d1 @ V  # (nS, nA)
        V = (pi_np * Q[t]).sum(1)       # V_t, (nS,)
    return Q


def theorem_gradient(gamma, discount_weight):
    """sum_t w_t sum_s d_t(s) sum_a pi(a|s) Q_t(s, a) score(s, a); w_t = gamma^t, or 1 when dropped."""
    Q, d, g = q_table(gamma), rho0.copy(), np.zeros((nS, nA))
    for t in range(H):
        w = gamma**t if discount_weight else 1.0
        g += w * np.einsum("s,sa,sa,sak->sk", d, pi_np, Q[t], scores_d1)
        d = np.einsum("s,sa,sat->t", d, pi_np, P_d1)  # d_{t+1}, (nS,)
    return g


g_theorem = theorem_gradient(gamma_d1, True)
g_dropped = theorem_gradient(gamma_d1, False)
grad_J1 = torch.autograd.grad(enumerated_J(theta_d1, 1.0), theta_d1)[0].numpy()
err_thm = assert_close(torch.tensor(g_theorem), torch.tensor(grad_autograd), atol=1e-12, rtol=0, name="PG theorem")
cos = (g_dropped * grad_autograd).sum() / np.linalg.norm(g_dropped) / np.linalg.norm(grad_autograd)
print("sum_t gamma^t d_t pi Q_t score vs autograd of J_gamma:", error_bound(err_thm, 1e-12))
print(f"gamma^t dropped: max |. - grad J_gamma| = {np.abs(g_dropped - grad_autograd).max():.4f} "
      f"(largest |grad J_gamma| entry {np.abs(grad_autograd).max():.4f}; cosine {cos:.6f})")
print(f"gamma^t dropped: max |. - grad J_1|     = {np.abs(g_dropped - grad_J1).max():.4f} "
      f"(for scale: max |grad J_1 - grad J_gamma| = {np.abs(grad_J1 - grad_autograd).max():.4f})")
print("dropped-gamma^t vector (rows = states):\n", np.round(g_dropped, 4))

# %% [markdown]
# The dropped form is off from $\nabla J_\gamma$ by about a tenth of the gradient's size, yet its direction is
# almost the same (cosine near 1). It sits close to $\nabla J_1$, which is the paper's view: $\gamma$ is a bias
# knob for the undiscounted problem, not part of the objective. The residual 0.006 is the bias that $\gamma$
# buys.
#
# ### D2. A baseline leaves the gradient unbiased
#
# For any $b(s)$ that does not depend on the action,
# $\mathbb E_{a\sim\pi}[\nabla\log\pi(a|s)\,b(s)] = b(s)\sum_a \pi(a|s)\frac{\nabla\pi(a|s)}{\pi(a|s)} =
# b(s)\,\nabla\sum_a\pi(a|s) = b(s)\,\nabla 1 = 0.$ So $\nabla J = \mathbb E[\sum_t\nabla\log\pi(a_t|s_t)(G_t - b(s_t))]$
# for every such $b$, and a good choice lowers the variance. With $b = V^\pi$ the weight is an advantage estimate.
# A baseline that depends on $a_t$ (or on the sample it multiplies) is not covered, and in general it biases.
#
# The cell checks the identity exactly (the sum over actions) and by Monte Carlo over 200,000 draws. It also
# shows that an action-dependent "baseline" $b(a)$ is *not* zero in expectation.

# %%
logits = rng.normal(size=5)
p5 = np.exp(logits) / np.exp(logits).sum()
scores = np.eye(5) - p5  # row a: d log pi(a) / d logits
print("exact   E[score] * b:", error_bound(np.abs(p5 @ scores * 3.7).max(), 1e-12))
draws = rng.choice(5, size=200_000, p=p5)
mc = scores[draws].mean(0) * 3.7
print(f"Monte Carlo E[score] * b: max |.| = {np.abs(mc).max():.4f} (standard error about "
      f"{3.7 * scores[draws].std(0).max() / np.sqrt(len(draws)):.4f})")
b_action = np.arange(5.0)  # depends on the action: not a valid baseline
print("exact E[score * b(a)] (nonzero):", np.round(p5 @ (scores * b_action[:, None]), 4))

# %% [markdown]
# ### D3. GAE: the sum of discounted TD errors, and the $\lambda$-return
#
# TD error $\delta_t = r_t + \gamma V(s_{t+1}) - V(s_t)$. The $k$-step advantage estimator telescopes (GAE §3):
#
# $$\hat A^{(k)}_t = \sum_{l=0}^{k-1}\gamma^l\delta_{t+l} = -V(s_t) + r_t + \gamma r_{t+1} + \dots +
# \gamma^{k-1}r_{t+k-1} + \gamma^k V(s_{t+k}) = G^{(k)}_t - V(s_t),$$
#
# where $G^{(k)}_t$ is the $k$-step return. GAE is their exponentially weighted average:
#
# $$\hat A^{\text{GAE}}_t = (1-\lambda)\sum_{k\ge1}\lambda^{k-1}\hat A^{(k)}_t
# = (1-\lambda)\sum_{l\ge0}\gamma^l\delta_{t+l}\sum_{k>l}\lambda^{k-1} = \sum_{l\ge0}(\gamma\lambda)^l\delta_{t+l}.$$
#
# The middle step swaps the sums, using $\sum_{k>l}\lambda^{k-1} = \lambda^l/(1-\lambda)$. The weights
# $(1-\lambda)\lambda^{k-1}$, $k \ge 1$, sum to 1, so the same average of $G^{(k)}_t$ gives
# $\hat A_t = G^\lambda_t - V(s_t)$: the **$\lambda$-return** minus $V$.
#
# On a rollout of $T$ steps (bootstrapped with $V(s_T)$), $\hat A^{(k)}$ stops changing at $k = T - t$, so all
# the weight $\lambda^{T-t-1}$ of the longer estimators lands on $G^{(T-t)}_t$. Run backwards, the sum is the
# recursion $\hat A_t = \delta_t + \gamma\lambda\hat A_{t+1}$ that every implementation uses.
#
# **Special cases.** $\lambda = 0$ gives $\hat A_t = \delta_t$ (TD(0)). $\lambda = 1$ gives
# $\hat A_t = \sum_l\gamma^l r_{t+l} + \gamma^{T-t}V(s_T) - V(s_t)$, the Monte Carlo return minus $V$.
#
# **Reward shaping (GAE §4).** With potential $\Phi = V$, the shaped reward $r_t + \gamma\Phi(s_{t+1}) -
# \Phi(s_t)$ is exactly $\delta_t$. $\hat A^{\text{GAE}}$ is then the return of the shaped rewards discounted by
# $\gamma\lambda$: a good $V$ makes the shaped rewards short-range, so a steep discount loses little.
#
# Three independent computations on one random rollout: the recursion (from scratch), the explicit double sum
# $\sum_l(\gamma\lambda)^l\delta_{t+l}$, and the $\lambda$-return built from $k$-step returns. Then come
# `shared.returns.gae` and the two special cases.

# %%
def gae_from_scratch(rewards, values, dones, last_value, gamma, lam):
    """One environment, numpy: dones[t] = 1 when the episode terminated at step t (no bootstrap across it)."""
    T = len(rewards)
    adv, next_adv, next_value = np.zeros(T), 0.0, last_value
    for t in reversed(range(T)):
        nonterminal = 1.0 - dones[t]
        delta = rewards[t] + gamma * nonterminal * next_value - values[t]
        next_adv = delta + gamma * lam * nonterminal * next_adv
        adv[t], next_value = next_adv, values[t]
    return adv


T3, g3, l3 = 9, 0.9, 0.7
r3, v3, lv3 = rng.normal(size=T3), rng.normal(size=T3), rng.normal()
v_next = np.append(v3[1:], lv3)
delta3 = r3 + g3 * v_next - v3
double_sum = np.array([sum((g3 * l3) ** l * delta3[t + l] for l in range(T3 - t)) for t in range(T3)])


def k_step_return(t, k):
    return sum(g3**i * r3[t + i] for i in range(k)) + g3**k * (v3[t + k] if t + k < T3 else lv3)


lam_return = np.array([
    (1 - l3) * sum(l3 ** (k - 1) * k_step_return(t, k) for k in range(1, T3 - t))
    + l3 ** (T3 - t - 1) * k_step_return(t, T3 - t)
    for t in range(T3)
])
no_dones = np.zeros(T3)
adv_loop = gae_from_scratch(r3, v3, no_dones, lv3, g3, l3)
as_t = [torch.tensor(x) for x in (r3, v3, no_dones, lv3)]
adv_shared, ret_shared = shared_returns.gae(*as_t, gamma=g3, lam=l3)
print("recursion vs double sum of TD errors:", error_bound(np.abs(adv_loop - double_sum).max(), 1e-12))
print("recursion vs lambda-return - V:      ", error_bound(np.abs(adv_loop - (lam_return - v3)).max(), 1e-12))
print("shared.returns.gae vs double sum:    ", error_bound(np.abs(adv_shared.numpy() - double_sum).max(), 1e-12))
# returns = advantages + values, so this restates the line above for the critic's target (not a new check)
print("shared critic target (A + V) is the lambda-return:",
      error_bound(np.abs(ret_shared.numpy() - lam_return).max(), 1e-12))
adv0, _ = shared_returns.gae(*as_t, gamma=g3, lam=0.0)
adv1, _ = shared_returns.gae(*as_t, gamma=g3, lam=1.0)
mc = shared_returns.discounted_returns(as_t[0], as_t[2], as_t[3], gamma=g3)
print("lambda=0 vs TD errors:               ", error_bound(np.abs(adv0.numpy() - delta3).max(), 1e-12))
print("lambda=1 vs MC return - V:           ", error_bound((adv1 - (mc - as_t[1])).abs().max().item(), 1e-12))

# %% [markdown]
# ## Walkthrough
#
# ### W1. REINFORCE on a contextual bandit with an analytic gradient
#
# Contexts $x \in \{0..3\}$ are uniform; there are 5 actions and $\pi(a|x) = \mathrm{softmax}(\theta[x])_a$. The
# reward is $r = \mu(x,a) + c + \varepsilon$ with $\varepsilon\sim\mathcal N(0,1)$ and an offset $c$, a constant
# added to every reward that changes nothing in the problem. $J = \sum_x p(x)\sum_a\pi(a|x)(\mu(x,a)+c)$, and its
# gradient is exact: $\partial J/\partial\theta[x,a] = p(x)\,\pi(a|x)\,(\mu(x,a) - V(x))$ with
# $V(x) = \sum_b\pi(b|x)\mu(x,b)$ (the offset cancels). REINFORCE with $N$ samples is
# $\hat g = \frac1N\sum_i (r_i - b_i)\,e_{x_i}\otimes(e_{a_i} - \pi(\cdot|x_i))$.
#
# Five baselines are compared:
#
# - none;
# - the constant $J$;
# - the exact state value $V(x) + c$;
# - the leave-one-out mean of the other $N-1$ rewards of the batch (independent of sample $i$, so unbiased,
#   and learned from data);
# - the **variance-optimal** state baseline of Greensmith, Bartlett & Baxter (2004). (Weaver & Tao 2001 study a
#   different object, the best *constant* baseline, which tends to the long-run average reward.)
#
# The total variance is $\frac1N\big(\mathbb E[(r-b(x))^2\|\nabla\log\pi\|^2] - \|g\|^2\big)$. Minimising it over
# $b(x)$ for each $x$ gives
# $b^*(x) = \mathbb E[\|\nabla\log\pi\|^2 r\mid x]/\mathbb E[\|\nabla\log\pi\|^2\mid x]$. This is a
# score-norm-weighted mean of the rewards, not the plain mean $V(x)$. The same formula gives each baseline's
# *exact* variance, which the reproduction checks against Monte Carlo. The reward noise adds
# $\mathbb E[\|\nabla\log\pi\|^2]/N$, which no baseline removes.
#
# `n_batches` independent batches are drawn at once, vectorised.

# %%
K, A = 4, 5
p_x = np.full(K, 1 / K)
mu = rng.normal(size=(K, A))
theta_b = 0.7 * rng.normal(size=(K, A))
pi_b = np.exp(theta_b) / np.exp(theta_b).sum(1, keepdims=True)
V_b = (pi_b * mu).sum(1)
grad_exact = p_x[:, None] * pi_b * (mu - V_b[:, None])
score_sq = ((np.eye(A)[None] - pi_b[:, None]) ** 2).sum(-1)  # (K, A): ||e_a - pi(.|x)||^2
b_opt = (pi_b * score_sq * mu).sum(1) / (pi_b * score_sq).sum(1)  # Greensmith et al.'s b*(x), offset 0
baselines = ("none", "constant J", "V(x)", "optimal b*(x)", "leave-one-out")


def baseline_of_x(baseline, offset):
    """The baseline as a function of the context, (K,); None for leave-one-out (it depends on the batch)."""
    return {"none": np.zeros(K), "constant J": np.full(K, p_x @ V_b + offset), "V(x)": V_b + offset,
            "optimal b*(x)": b_opt + offset}.get(baseline)


def reinforce_estimates(n_batches, N, offset, baseline, gen):
    """(n_batches, K, A) REINFORCE gradient estimates, one per independent batch of N samples."""
    x = gen.choice(K, size=(n_batches, N), p=p_x)
    u = gen.random((n_batches, N, 1))
    a = (u > np.cumsum(pi_b[x], axis=-1)).sum(-1)  # inverse-CDF sampling of a ~ pi(.|x)
    r = mu[x, a] + offset + gen.normal(size=(n_batches, N))
    if baseline == "leave-one-out":
        b = (r.sum(1, keepdims=True) - r) / (N - 1)
    else:
        b = baseline_of_x(baseline, offset)[x]
    score = np.eye(A)[a] - pi_b[x]  # (n_batches, N, A)
    return np.einsum("snk,sna,sn->ska", np.eye(K)[x], score, r - b) / N


def exact_variance(N, offset, b_x):
    """Exact total variance sum_{x,a} Var[g_hat] for a state baseline b_x of shape (K,)."""
    second = (p_x[:, None] * pi_b * ((mu + offset - b_x[:, None]) ** 2 + 1) * score_sq).sum()
    return (second - (grad_exact**2).sum()) / N


g_demo = reinforce_estimates(4096, 16, 0.0, "V(x)", np.random.default_rng(1))
print("exact gradient (rows = contexts):\n", np.round(grad_exact, 3))
print("mean of 4096 estimates (V(x) baseline, N = 16):\n", np.round(g_demo.mean(0), 3))
print("V(x):  ", np.round(V_b, 3), "\nb*(x): ", np.round(b_opt, 3))
print(f"exact variance, N = 16: V(x) {exact_variance(16, 0, V_b):.5f}, b*(x) {exact_variance(16, 0, b_opt):.5f}, "
      f"reward-noise part no baseline removes {(p_x[:, None] * pi_b * score_sq).sum() / 16:.5f}")

# %% [markdown]
# ### W2. A chain MDP with exact advantages
#
# Eight states lie in a row, with a terminal state to the right of state 7. The actions are left and right; each
# "slips" to the other direction with probability 0.1, and state 0's left is a wall. The reward is $-0.05$ per
# step and $+1$ on entering the terminal, plus $\mathcal N(0, 0.3^2)$ noise; $\gamma = 0.95$; the policy goes right
# with probability 0.75. Everything exact comes from R1's linear solve $V = (I - \gamma P_\pi)^{-1}r_\pi$ over the
# nonterminal states, then $Q(s,a) = r(s,a) + \gamma\sum_{s'}P(s'|s,a)V(s')$ and $A = Q - V$. The function takes
# $\gamma$ as an argument: Reproduction (d) needs the undiscounted values ($\gamma = 1$ is fine here, since the
# policy reaches the terminal with probability 1).

# %%
nC, gamma_c, slip, p_right, noise_sd = 8, 0.95, 0.1, 0.75, 0.3
P_c = np.zeros((nC, 2, nC + 1))  # P[s, a, s'], s' = nC is the terminal
for s in range(nC):
    for a, move in ((0, -1), (1, +1)):
        for direction, prob in ((move, 1 - slip), (-move, slip)):
            P_c[s, a, min(max(s + direction, 0), nC)] += prob
r_c = -0.05 + P_c[:, :, nC]  # expected reward: step cost + 1 on entering the terminal
pi_c = np.array([1 - p_right, p_right])
P_pi = np.einsum("a,sat->st", pi_c, P_c)[:, :nC]  # nonterminal block (substochastic)


def chain_values(gamma):
    """Exact V^{pi,gamma} (nC,) and A^{pi,gamma} (nC, 2) by the linear Bellman equation."""
    V = np.linalg.solve(np.eye(nC) - gamma * P_pi, r_c @ pi_c)
    Q = r_c + gamma * P_c[:, :, :nC] @ V
    return V, Q - V[:, None]


V_true, A_true = chain_values(gamma_c)
print("V:", np.round(V_true, 3))
print("A(s, left):", np.round(A_true[:, 0], 3))
print("A(s, right):", np.round(A_true[:, 1], 3))

# %% [markdown]
# ### W3. Rollouts and GAE from `shared.returns.gae`
#
# Each of the 16 pairs $(s, a)$ starts `M` independent rollouts of $T = 20$ steps; the first action is forced to
# $a$, and the rest follow $\pi$. A rollout that reaches the terminal stays there with reward 0 and `dones = 1`.
# One that does not is **truncated** at $T$ and bootstraps from $\hat V(s_T)$; at $T = 20$ this path fires for a
# sizeable share of the rollouts, printed below. `shared.returns.gae` takes the whole `(T, 16 M)` batch, and
# $\hat A_0$ of each column estimates $A(s, a)$ of its pair.
#
# The critic is $\hat V = V + e$ with a fixed error $e(s) = 0.2 + 0.5\,\xi(s)$, $\xi \sim \mathcal N(0, 1)$
# drawn once, and $\hat V = 0$ at the terminal. Its RMS error is printed below. Expect the means of $\hat A_0$
# below to be far from W2's $A$: with a wrong critic $\hat A_0$ estimates $A - e(s)$ plus a smaller
# action-dependent term. W4 computes that expectation exactly and prints it beside these means.

# %%
T_c = 20
e_critic = 0.2 + 0.5 * np.random.default_rng(7).normal(size=nC)


def chain_rollouts(M, gen, T=T_c):
    """States (T+1, 16M), rewards and dones (T, 16M); column j starts at pair j // M = (s, a)."""
    n = 2 * nC * M
    s = np.repeat(np.arange(nC), 2 * M)
    a = np.tile(np.repeat([0, 1], M), nC)
    states, rewards, dones = [s], [], []
    for t in range(T):
        if t > 0:
            a = (gen.random(n) < p_right).astype(int)
        alive = s < nC
        move = np.where(a == 1, 1, -1) * np.where(gen.random(n) < slip, -1, 1)
        s_next = np.where(alive, np.clip(s + move, 0, nC), nC)
        r = np.where(alive, -0.05 + (s_next == nC) + noise_sd * gen.normal(size=n), 0.0)
        states.append(s_next)
        rewards.append(r)
        dones.append((s_next == nC).astype(float))
        s = s_next
    return np.array(states), np.array(rewards), np.array(dones)


def gae_first_step(states, rewards, dones, V_hat, lam, gamma=gamma_c):
    """A_0 of every column, from shared.returns.gae on the whole batch (bootstraps V_hat(s_T) if not done)."""
    v_ext = np.append(V_hat, 0.0)  # V_hat(terminal) = 0
    adv, _ = shared_returns.gae(torch.tensor(rewards), torch.tensor(v_ext[states[:-1]]), torch.tensor(dones),
                                torch.tensor(v_ext[states[-1]]), gamma=gamma, lam=lam)
    return adv[0].numpy()


states_c, rewards_c, dones_c = chain_rollouts(500, np.random.default_rng(2))
a0 = gae_first_step(states_c, rewards_c, dones_c, V_true + e_critic, 0.95).reshape(nC, 2, 500)
print(f"critic error e: {np.round(e_critic, 2)} (RMS {np.sqrt((e_critic**2).mean()):.3f})")
print("rollouts:", rewards_c.shape, f"| truncated at T (not terminated): {1 - dones_c[-1].mean():.3f}")
print("mean A_0 estimate (lambda = 0.95, imperfect critic), right:", np.round(a0[:, 1].mean(-1), 2))

# %% [markdown]
# ### W4. The exact expectation of GAE with an imperfect critic
#
# The expectation can be computed exactly for any critic $\hat V$ (with $\hat V(\text{terminal}) = 0$).
#
# - **Step 0.** $\mathbb E[\delta_0|s,a] = r(s,a) + \gamma P_{sa}\hat V - \hat V(s)$.
# - **Steps $l \ge 1$.** Let $d_l = P_{sa}P_\pi^{l-1}$ be the distribution over nonterminal states after $l$
#   steps. Then $\mathbb E[\delta_l|s,a] = d_l\,u$ with $u = r_\pi + \gamma P_\pi\hat V - \hat V$. A terminated
#   rollout contributes $\delta = 0$. A truncated one contributes its last $\delta_{T-1}$, bootstrapped from
#   $\hat V(s_T)$, which is the same formula.
#
# So $\mathbb E[\hat A_0|s,a] = \sum_{l<T}(\gamma\lambda)^l\,\mathbb E[\delta_l|s,a]$. With $\hat V = V + e$ the
# Bellman equation $r_\pi + \gamma P_\pi V - V = 0$ removes $V$:
# $\mathbb E[\delta_0|s,a] = A(s,a) + \gamma P_{sa}e - e(s)$ and $u = \gamma P_\pi e - e$. With $e = 0$ every term
# but $A$ vanishes: **a perfect critic gives an unbiased advantage for every $\lambda$**.
#
# At $\lambda = 1$ the sum telescopes to
#
# $$\mathbb E[\hat A_0|s,a] = A(s,a) - e(s) + \gamma^T d_T\,e.$$
#
# The term $-e(s)$ depends on the state only, so by D2 it does not bias the policy gradient. The part that
# matters is the **action-dependent bias**: the bias minus its $\pi$-average over the actions at each state.
# At $\lambda = 1$ it is the action-dependent part of $\gamma^T d_T e$, the **truncation term**. The critic is
# wrong at the state where the rollout is cut, and $d_T$ depends on the first action. That term is zero only if
# the critic is exact at $s_T$, or if every rollout terminates before $T$.
#
# The cell computes the expectation, checks the $\lambda = 1$ closed form against the sum, and prints the exact
# expectation beside W3's Monte Carlo means.

# %%
def expected_gae(V_hat, lam, gamma=gamma_c, T=T_c):
    """Exact E[A_0 | s, a], shape (nC, 2), of GAE(gamma, lam) on T-step rollouts with critic V_hat (nC,)."""
    v_ext = np.append(V_hat, 0.0)
    mean = r_c + gamma * P_c @ v_ext - V_hat[:, None]  # E[delta_0 | s, a]
    u = r_c @ pi_c + gamma * P_pi @ V_hat - V_hat       # E[delta_l | s_l = s'], nonterminal s'
    d = P_c[:, :, :nC]                                  # d_1, (nC, 2, nC)
    for l in range(1, T):
        mean = mean + (gamma * lam) ** l * d @ u
        d = d @ P_pi
    return mean


def action_dependent(bias):
    """The bias minus its pi-average over actions at each state: the part that biases the policy gradient."""
    return bias - (bias @ pi_c)[:, None]


def rms(x):
    return np.sqrt((x**2).mean())


d_T = P_c[:, :, :nC] @ np.linalg.matrix_power(P_pi, T_c - 1)  # (nC, 2, nC): Pr(s_T = s', not terminated)
truncation_term = gamma_c**T_c * d_T @ e_critic
closed_form = A_true - e_critic[:, None] + truncation_term
err_cf = np.abs(expected_gae(V_true + e_critic, 1.0) - closed_form).max()
print("lambda = 1: sum over l vs closed form A - e + gamma^T d_T e:", error_bound(err_cf, 1e-12))
print(f"exact share of rollouts truncated at T = {T_c}: {d_T.sum(-1).mean():.3f}")
exact_095 = expected_gae(V_true + e_critic, 0.95)
print("state            ", np.arange(nC))
print("A(s, right)      ", np.round(A_true[:, 1], 2))
print("exact E[A_0] 0.95", np.round(exact_095[:, 1], 2))
print("Monte Carlo (W3) ", np.round(a0[:, 1].mean(-1), 2))
print("  its std. error ", np.round(a0[:, 1].std(-1) / np.sqrt(a0.shape[-1]), 2))
for lam in (0.0, 0.95, 1.0):
    b = expected_gae(V_true + e_critic, lam) - A_true
    print(f"lambda={lam:4.2f}: RMS bias {rms(b):.4f}, RMS action-dependent bias {rms(action_dependent(b)):.4f}; "
          f"perfect critic: {error_bound(np.abs(expected_gae(V_true, lam) - A_true).max(), 1e-12)}")
print(f"truncation term, action-dependent part: RMS {rms(action_dependent(truncation_term)):.4f}")

# %% [markdown]
# ## Check against a reference
#
# 1. **`stable-baselines3` 2.9.2's `RolloutBuffer.compute_returns_and_advantage`**, against `gae_from_scratch`
#    and `shared.returns.gae`. The rollout has 3 environments and 16 steps. There are terminations inside it;
#    env 2 terminates on the **last** step, the branch where sb3 reads its `dones` argument (`buffers.py`
#    l.427-429); envs 0 and 1 are cut mid-episode at the end, and bootstrap from `last_values`.
#    **Conventions:** sb3 stores `episode_starts[t]`, "the observation at step $t$ starts an episode", which is
#    the done flag of step $t - 1$. It takes the last step's flag as the `dones` argument. `shared` and this
#    notebook store `dones[t]`, "step $t$ terminated". So `episode_starts[t + 1] = dones[t]` and
#    `episode_starts[0] = 1`. sb3's buffer is float32, hence errors near $10^{-7}$. Passing `dones` where sb3
#    expects `episode_starts` (an off-by-one) gives a different answer, printed at the end.

# %%
import gymnasium as gym
from stable_baselines3.common.buffers import RolloutBuffer

T_sb, n_env, gam_sb, lam_sb = 16, 3, 0.97, 0.9
g_sb = np.random.default_rng(3)
r_sb = g_sb.normal(size=(T_sb, n_env)).astype(np.float32).astype(np.float64)
v_sb = g_sb.normal(size=(T_sb, n_env)).astype(np.float32).astype(np.float64)
lv_sb = g_sb.normal(size=n_env).astype(np.float32).astype(np.float64)
d_sb = np.zeros((T_sb, n_env))
d_sb[[4, 11], 0] = 1.0       # env 0 terminates twice inside the rollout, then is cut at the end
d_sb[7, 1] = 1.0             # env 1 once, then is cut at the end
d_sb[[2, T_sb - 1], 2] = 1.0  # env 2 once inside and once on the last step (sb3's `dones` argument)


def sb3_gae(rewards, values, dones, last_values, episode_starts):
    buf = RolloutBuffer(T_sb, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2), "cpu",
                        gae_lambda=lam_sb, gamma=gam_sb, n_envs=n_env)
    for t in range(T_sb):
        buf.add(np.zeros((n_env, 1), np.float32), np.zeros((n_env, 1)), rewards[t].astype(np.float32),
                episode_starts[t].astype(np.float32), torch.tensor(values[t], dtype=torch.float32),
                torch.zeros(n_env))
    buf.compute_returns_and_advantage(torch.tensor(last_values, dtype=torch.float32), dones[-1])
    return buf.advantages.astype(np.float64), buf.returns.astype(np.float64)


episode_starts = np.vstack([np.ones((1, n_env)), d_sb[:-1]])  # episode_starts[t + 1] = dones[t]
adv_sb3, ret_sb3 = sb3_gae(r_sb, v_sb, d_sb, lv_sb, episode_starts)
adv_mine = np.stack([gae_from_scratch(r_sb[:, j], v_sb[:, j], d_sb[:, j], lv_sb[j], gam_sb, lam_sb)
                     for j in range(n_env)], axis=1)
adv_sh, ret_sh = shared_returns.gae(*(torch.tensor(x) for x in (r_sb, v_sb, d_sb, lv_sb)), gamma=gam_sb, lam=lam_sb)
err_mine = assert_close(torch.tensor(adv_mine), torch.tensor(adv_sb3), atol=1e-5, rtol=1e-5, name="scratch vs sb3")
err_shared = assert_close(adv_sh, torch.tensor(adv_sb3), atol=1e-5, rtol=1e-5, name="shared vs sb3")
err_ret = assert_close(ret_sh, torch.tensor(ret_sb3), atol=1e-5, rtol=1e-5, name="returns vs sb3")
err_ms = assert_close(torch.tensor(adv_mine), adv_sh, atol=1e-12, rtol=0, name="scratch vs shared")
print("from-scratch GAE vs sb3:", error_bound(err_mine, 1e-6))
print("shared.returns.gae vs sb3:", error_bound(err_shared, 1e-6), "| returns:", error_bound(err_ret, 1e-6))
print("from-scratch vs shared (float64):", error_bound(err_ms, 1e-12))
print(f"last step of env 2: sb3 A = {adv_sb3[-1, 2]:.4f}, r - V = {r_sb[-1, 2] - v_sb[-1, 2]:.4f} (no bootstrap)")
adv_wrong, _ = sb3_gae(r_sb, v_sb, d_sb, lv_sb, d_sb)  # the off-by-one: dones passed as episode_starts
print(f"dones passed as episode_starts: max |difference| = {np.abs(adv_wrong - adv_sb3).max():.3f}")

# %% [markdown]
# 2. **A time limit inside the rollout is not a termination.** A gymnasium `TimeLimit` ends the episode with
#    `truncated=True`: the state reached is not terminal, and its value is not 0. sb3 handles this in
#    `OnPolicyAlgorithm.collect_rollouts` (`on_policy_algorithm.py` l.234-245 in the installed 2.9.2, "see
#    GitHub issue #633"). When a step is `done` with `TimeLimit.truncated` set, it adds
#    $\gamma\,V(\text{terminal\_observation})$ to that step's reward and then treats the step as done (l.256,
#    `_last_episode_starts = dones`). The GAE recursion then stops there, with exactly the bootstrap a cut
#    rollout gets.
#
#    The check runs a real `PPO.collect_rollouts` on a tiny environment that never terminates and has a time
#    limit of 5 steps, for 12 steps; the reward is 1 every step and the observation is the step count / 5.
#    sb3's whole pipeline (reward patch, `episode_starts`, GAE) is compared against `shared.returns.gae` run
#    **separately on each episode segment**, with the raw rewards and an explicit bootstrap: $V$ of the final
#    observation for a segment cut by the time limit, and sb3's `last_values` for the segment cut by the rollout's
#    end. The values come from the same policy network. The last line shows the error of treating the time limit
#    as a termination.
#
#    The author's own [modular_rl](https://github.com/joschu/modular_rl) (`core.py`, `compute_advantage`) takes a
#    different shortcut. A path cut by its time limit bootstraps with `b[-1]`, the value of the last *observed*
#    state $s_{T-1}$, not $s_T$, because the final observation is not stored; its critic target `discount(reward,
#    gamma)` is not bootstrapped at all. This is an approximation, and it only matters for paths cut by the time
#    limit; sb3's $V(s_T)$ is the one the derivation in W4 asks for.

# %%
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv


class Clock(gym.Env):
    """Observation = steps taken / 5; reward 1 every step; it never terminates (only a time limit ends it)."""

    observation_space = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t / 5], np.float32), 1.0, False, False, {}


limit, n_steps, gam_tl, lam_tl = 5, 12, 0.9, 0.8
venv = DummyVecEnv([lambda: gym.wrappers.TimeLimit(Clock(), max_episode_steps=limit)])
torch.set_default_dtype(torch.float32)  # sb3's networks are float32; this notebook's default is float64
ppo = PPO("MlpPolicy", venv, n_steps=n_steps, batch_size=n_steps, gamma=gam_tl, gae_lambda=lam_tl, seed=0,
          device="cpu")
_, callback = ppo._setup_learn(n_steps, callback=None)  # what ppo.learn() does before collecting
ppo.collect_rollouts(ppo.env, callback, ppo.rollout_buffer, n_rollout_steps=n_steps)  # runs GAE at its end
torch.set_default_dtype(torch.float64)
buf = ppo.rollout_buffer


def v_of(obs):
    """The PPO critic's V at a scalar observation."""
    with torch.no_grad():
        return ppo.policy.predict_values(torch.tensor([[obs]], dtype=torch.float32))[0].item()


v_final, v_last = v_of(limit / 5), v_of(float(ppo._last_obs[0, 0]))  # after a time limit; after step 12
values_tl = buf.values[:, 0].astype(np.float64)  # V(s_t) that sb3 stored, (12,)
print("sb3 episode_starts:", buf.episode_starts[:, 0].astype(int))
print("sb3 reward minus raw reward:", np.round(buf.rewards[:, 0] - 1.0, 4),
      f"| gamma * V(final obs) = {gam_tl * v_final:.4f}")
segments = [(0, 5, v_final), (5, 10, v_final), (10, 12, v_last)]  # (start, end, value to bootstrap from)
adv_segments = np.concatenate([
    shared_returns.gae(torch.ones(b - a), torch.tensor(values_tl[a:b]), torch.zeros(b - a), torch.tensor(v_end),
                       gamma=gam_tl, lam=lam_tl)[0].numpy()
    for a, b, v_end in segments
])
err_tl = assert_close(torch.tensor(adv_segments), torch.tensor(buf.advantages[:, 0].astype(np.float64)),
                      atol=1e-5, rtol=1e-5, name="time-limit bootstrap")
print("sb3 collect_rollouts (time limits inside) vs shared.gae per segment:", error_bound(err_tl, 1e-6))
dones_as_term = np.zeros(n_steps)
dones_as_term[[4, 9]] = 1.0  # the mistake: a time limit treated as a termination, no bootstrap
adv_term, _ = shared_returns.gae(torch.ones(n_steps), torch.tensor(values_tl), torch.tensor(dones_as_term),
                                 torch.tensor(v_last), gamma=gam_tl, lam=lam_tl)
print(f"time limit treated as termination: max |A difference| = "
      f"{np.abs(adv_term.numpy() - adv_segments).max():.3f} (at the cut step: gamma * V = {gam_tl * v_final:.3f})")

# %% [markdown]
# 3. **The exact bandit gradient** is checked against autograd of $J(\theta)$. The REINFORCE estimates' means are
#    checked against it in the reproduction (within 5 standard errors).
# 4. **The chain's $V$** from the linear solve is checked against iterative policy evaluation. The Monte Carlo
#    mean of GAE is checked against W4's exact expectation (within 5 standard errors) at $\lambda = 0.95$ and
#    at $\lambda = 1$, on the W3 rollouts, where the truncation path fires.

# %%
th = torch.tensor(theta_b, requires_grad=True)
J_b = (torch.tensor(p_x)[:, None] * torch.softmax(th, 1) * torch.tensor(mu)).sum()
err_g = assert_close(torch.tensor(grad_exact), torch.autograd.grad(J_b, th)[0], atol=1e-12, rtol=0)
print("analytic bandit gradient vs autograd:", error_bound(err_g, 1e-12))

V_iter = np.zeros(nC)
for _ in range(2000):
    V_iter = r_c @ pi_c + gamma_c * P_pi @ V_iter
err_v = assert_close(torch.tensor(V_iter), torch.tensor(V_true), atol=1e-10, rtol=0)
print("chain V: linear solve vs iterative evaluation:", error_bound(err_v, 1e-12))

for lam in (0.95, 1.0):
    est = gae_first_step(states_c, rewards_c, dones_c, V_true + e_critic, lam).reshape(nC, 2, -1)
    z = np.abs(est.mean(-1) - expected_gae(V_true + e_critic, lam)) / (est.std(-1) / np.sqrt(est.shape[-1]))
    print(f"lambda = {lam:4.2f}: Monte Carlo mean of GAE vs exact expectation, max |z| = {z.max():.2f} "
          f"over 16 pairs ({1 - dones_c[-1].mean():.0%} of rollouts truncated)")
    assert z.max() < 5

# %% [markdown]
# ## Reproduction
#
# **The claims.** GAE §3 says that $\lambda$ trades bias for variance, and biases only through an inaccurate
# critic. It says that $\gamma$ is a second bias-for-variance knob that biases whatever the critic. In §6 the
# best results came at $\lambda$ in roughly $[0.9, 0.99]$ with $\gamma$ around 0.99-0.995 on its tasks (as we
# recall the ranges; not re-checked against the PDF). The syllabus asks for the bias and variance of the
# advantage estimate against $\lambda$ on a chain MDP. Four measurements follow.
#
# - **(a) Baselines.** 4,096 independent batches of $N = 16$ samples per estimator, the same budget for each, on
#   common random numbers: every baseline sees the same draws, so their differences are paired. The reward
#   offset is $c = 0$ and $c = 10$. Reported: the bias $\|\bar g - g^*\|$ with its Monte Carlo noise floor; the
#   total variance $\sum_{x,a}\mathrm{Var}[\hat g]$, Monte Carlo against exact; and the spread of the error
#   $\|\hat g - g^*\|$ over batches (mean, std, min-max).
# - **(b) $\lambda$.** 13 values, $\lambda \in \{0, 0.1, \dots, 0.9, 0.95, 0.98, 1\}$, on the same rollouts:
#   8 independent groups of 500 rollouts per $(s, a)$ pair (64,000 rollouts of 20 steps in all). The bias is
#   exact (W4). The variance is measured in each group, so bias² + variance has a spread over the 8 groups. The
#   ablation is the perfect critic.
# - **(c) Truncation.** The exact action-dependent bias at $\lambda = 1$ and at $0.95$ for $T = 10, 20, 30$ and
#   150 (no sampling needed).
# - **(d) $\gamma$.** The same rollouts with $\gamma \in \{0.8, \dots, 1\}$ at $\lambda = 0.95$. The bias is
#   measured against the **undiscounted** advantage $A^{\pi,1}$, the paper's objective, with the perfect critic
#   $V^{\pi,\gamma}$ and with the imperfect one $V^{\pi,\gamma} + e$.

# %%
rows, exact_var = {}, {}
for offset in (0.0, 10.0):
    for baseline in baselines:
        g = reinforce_estimates(4096, 16, offset, baseline, np.random.default_rng(100))  # common random numbers
        err = np.linalg.norm((g - grad_exact).reshape(len(g), -1), axis=1)
        se = g.std(0) / np.sqrt(len(g))
        rows[offset, baseline] = err
        b_x = baseline_of_x(baseline, offset)
        exact_var[offset, baseline] = np.nan if b_x is None else exact_variance(16, offset, b_x)
        print(f"c={offset:4.1f} {baseline:14s} bias {np.linalg.norm(g.mean(0) - grad_exact):.4f} "
              f"(floor {np.linalg.norm(se):.4f}, max|z| {np.max(np.abs(g.mean(0) - grad_exact) / se):.2f}) "
              f"var {g.var(0).sum():8.5f} (exact {exact_var[offset, baseline]:8.5f})  "
              f"error {err.mean():.3f} ± {err.std():.3f} [{err.min():.3f}, {err.max():.3f}]")
        assert np.max(np.abs(g.mean(0) - grad_exact) / se) < 5, (offset, baseline)  # unbiased, within 5 s.e.
paired = rows[0.0, "V(x)"] ** 2 - rows[0.0, "optimal b*(x)"] ** 2  # per-batch squared-error difference
print(f"paired E||g - g*||^2, V(x) minus b*(x): {paired.mean():.5f} ± {paired.std() / np.sqrt(len(paired)):.5f}"
      " (standard error; same 4,096 batches)")

# %%
lams = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0]
M, n_groups = 500, 8
states_r, rewards_r, dones_r = chain_rollouts(M * n_groups, np.random.default_rng(4))
print("rollouts:", rewards_r.shape, f"| truncated at T: {1 - dones_r[-1].mean():.3f}")
results = {}
for critic, e in (("imperfect", e_critic), ("perfect", np.zeros(nC))):
    for lam in lams:
        est = gae_first_step(states_r, rewards_r, dones_r, V_true + e, lam).reshape(nC, 2, n_groups, M)
        bias_ex = expected_gae(V_true + e, lam) - A_true
        var = est.var(-1).mean((0, 1))  # (n_groups,): variance of A_0, averaged over the 16 pairs
        results[critic, lam] = dict(
            bias=rms(action_dependent(bias_ex)), raw_bias=rms(bias_ex),
            bias_mc=rms(action_dependent(est.mean((-2, -1)) - A_true)), var=var,
            mse=rms(action_dependent(bias_ex)) ** 2 + var,  # (n_groups,)
        )
print(f"{'critic':9s} {'lambda':>6s} {'bias (exact)':>12s} {'(MC)':>7s} {'raw bias':>8s} "
      f"{'variance':>15s} {'bias^2 + variance, mean ± std [min, max] over 8 groups':>40s}")
for (critic, lam), q in results.items():
    print(f"{critic:9s} {lam:6.2f} {q['bias']:12.4f} {q['bias_mc']:7.4f} {q['raw_bias']:8.4f} "
          f"{q['var'].mean():8.4f} ± {q['var'].std():.4f}   {q['mse'].mean():.4f} ± {q['mse'].std():.4f} "
          f"[{q['mse'].min():.4f}, {q['mse'].max():.4f}]")
for critic in ("imperfect", "perfect"):
    mse = np.stack([results[critic, lm]["mse"] for lm in lams])  # (n_lambda, n_groups)
    best = [lams[i] for i in mse.argmin(0)]
    print(f"{critic}: argmin over lambda of bias^2 + variance, per group: {best}")
    for N in (10, 100, 1000):  # a batch of N estimates divides the variance by N, not the bias
        b2 = np.array([results[critic, lm]["bias"] ** 2 for lm in lams])
        v = np.array([results[critic, lm]["var"].mean() for lm in lams])
        print(f"    bias^2 + variance / {N:4d}: argmin lambda = {lams[int(np.argmin(b2 + v / N))]}")

# %%
print(f"{'T':>4s} {'truncated':>9s} {'bias, lambda=1':>15s} {'bias, lambda=0.95':>18s}   (exact, action-dependent RMS)")
for T in (10, 20, 30, 150):
    alive = (P_c[:, :, :nC] @ np.linalg.matrix_power(P_pi, T - 1)).sum(-1).mean()
    b1 = rms(action_dependent(expected_gae(V_true + e_critic, 1.0, T=T) - A_true))
    b95 = rms(action_dependent(expected_gae(V_true + e_critic, 0.95, T=T) - A_true))
    print(f"{T:4d} {alive:9.3f} {f'{b1:.2e}' if b1 > 1e-12 else '< 1e-12':>15s} {b95:18.4f}")

# %%
V_1, A_1 = chain_values(1.0)  # the undiscounted problem: the paper's objective
gammas, gamma_rows = [0.8, 0.9, 0.95, 0.98, 0.99, 1.0], {}
print(f"{'gamma':>5s} {'critic':>9s} {'bias vs A^(pi,1)':>16s} {'variance':>16s}   (lambda = 0.95)")
for g in gammas:
    V_g, _ = chain_values(g)
    for critic, e in (("perfect", np.zeros(nC)), ("imperfect", e_critic)):
        est = gae_first_step(states_r, rewards_r, dones_r, V_g + e, 0.95, gamma=g).reshape(nC, 2, n_groups, M)
        bias = rms(action_dependent(expected_gae(V_g + e, 0.95, gamma=g) - A_1))
        var = est.var(-1).mean((0, 1))
        gamma_rows[g, critic] = (bias, var)
        print(f"{g:5.2f} {critic:>9s} {bias:16.4f} {var.mean():9.4f} ± {var.std():.4f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
ax = axes[0]
short = {"none": "none", "constant J": "const J", "V(x)": "V(x)", "optimal b*(x)": "b*(x)", "leave-one-out": "LOO"}
labels = [f"{short[b]}\nc={int(o)}" for (o, b) in rows]
ax.boxplot(list(rows.values()), whis=(0, 100))
ax.set_xticks(range(1, len(rows) + 1), labels, fontsize=7)
ax.set_ylabel(r"$\|\hat g - g^*\|$ over 4,096 independent batches")
ax.set_yscale("log")
ax.set_title("REINFORCE: error vs the exact gradient\n(N = 16; c = reward offset; LOO = leave-one-out; "
             "whiskers min-max)", fontsize=9)
ax = axes[1]
for critic, style, marker in (("imperfect", "-", "o"), ("perfect", "--", "s")):
    b2 = [results[critic, lm]["bias"] ** 2 for lm in lams]
    ax.plot(lams, b2, marker + style, color="C0" if critic == "imperfect" else "C7", label=f"{critic} critic")
ax.set_xlabel(r"$\lambda$")
ax.set_ylabel(r"bias$^2$ of $\hat A_0$ (action-dependent, exact)")
ax.set_yscale("symlog", linthresh=1e-6)
ax.set_title(r"GAE on the chain: bias$^2$ vs $\lambda$ (T = 20; perfect critic: exactly 0)", fontsize=9)
ax.legend(fontsize=7)
ax = axes[2]
var_i = np.array([results["imperfect", lm]["var"] for lm in lams])  # (n_lambda, n_groups)
mse_i = np.array([results["imperfect", lm]["mse"] for lm in lams])
var_p = np.array([results["perfect", lm]["var"] for lm in lams])
ax.errorbar(lams, mse_i.mean(1), yerr=mse_i.std(1), fmt="^-", color="C2", ms=5, capsize=2,
            label=r"bias$^2$ + variance, imperfect critic")
ax.errorbar(lams, var_i.mean(1), yerr=var_i.std(1), fmt="s:", color="C1", ms=4, capsize=2,
            label="variance, imperfect critic")
ax.errorbar(lams, var_p.mean(1), yerr=var_p.std(1), fmt="o--", color="C7", ms=4, capsize=2,
            label=r"perfect critic (bias 0: variance = bias$^2$ + variance)")
best = lams[int(np.argmin(mse_i.mean(1)))]
ax.axvline(best, color="C2", lw=0.8, alpha=0.6)
ax.annotate(rf"min at $\lambda$ = {best}", (best, mse_i.mean(1).min()), xytext=(best + 0.05, 0.3), fontsize=8,
            arrowprops=dict(arrowstyle="->", lw=0.6))
ax.set_xlabel(r"$\lambda$")
ax.set_ylabel(r"variance, bias$^2$ + variance of $\hat A_0$")
ax.set_yscale("log")
ax.set_title("mean ± std over 8 groups of 500 rollouts per (s, a)", fontsize=9)
ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

# %% [markdown]
# **What the numbers say.**
#
# **(a) Baselines.**
#
# - Every estimator's mean sits within Monte Carlo noise of the exact gradient (all $|z| < 2$). As D2 says, no
#   baseline biases it, including the leave-one-out mean learned from the batch.
# - The offset $c = 10$ changes nothing in the problem, but it multiplies the variance without a baseline by 60
#   (0.076 → 4.60). Every baseline removes that exactly: their rows at $c = 0$ and $c = 10$ are identical (common
#   random numbers, same centred rewards).
# - Without the offset the baselines matter little. Against 0.0761 with none, $V(x)$ gives 0.0642 and the
#   constant 0.0748. Leave-one-out is slightly *worse* (0.0799): with $N = 16$ its own noise adds variance.
# - Greensmith et al.'s $b^*(x)$ does beat $V(x)$, but only by 0.4% here (exact 0.06435 vs 0.06458; the paired
#   difference in squared error is $0.00013 \pm 0.00005$). $b^*$ differs from $V$ by up to 0.1, but the variance
#   is flat near its minimum.
# - The Monte Carlo variances match the exact ones within 1%. Most of the variance (0.047 of 0.077) is reward
#   noise, which no baseline removes.
#
# **(b) $\lambda$.**
#
# - With the imperfect critic the action-dependent bias falls monotonically in $\lambda$: 0.206 at 0, 0.119 at
#   0.5, 0.028 at 0.9, 0.0145 at 0.95 and 0.0019 at 1. The variance is flat up to $\lambda \approx 0.3$ (0.119,
#   0.117, 0.118, 0.122), then rises to 0.63. The wrong critic's TD errors are correlated, so the smallest
#   $\lambda$ is not the lowest-variance one.
# - Bias² + variance of a single estimate is lowest at the $\lambda$ printed above: **0.3 in all 8 groups**
#   ($0.1457 \pm 0.0018$, against $0.1619 \pm 0.0023$ at $\lambda = 0$ and $0.432 \pm 0.007$ at 0.95). Every
#   $\lambda$ uses the same rollouts, so the comparison is paired: 0.3 wins in each group, even though its
#   neighbours' means differ by less than one group std.
# - **Batch size moves the optimum.** A gradient averages many estimates. Their variance averages down, but the
#   bias does not. With bias² + variance$/N$ (a simplification that treats the estimates as independent), the
#   best $\lambda$ is 0.7 at $N = 10$, 0.9 at $N = 100$ and 0.98 at $N = 1000$.
# - **Against the paper.** GAE §6 found its best results at $\lambda$ of roughly 0.9-0.99 (as we recall). This
#   toy's single-estimate optimum of 0.3 is far below that, and only the batch-averaged criterion reaches the
#   paper's range. Other differences: the critic here is fixed and poor (RMS error 0.375, against $|A| \le 0.24$),
#   while the paper's critic is refitted every iteration; and the paper measures learning curves, not the MSE of
#   $\hat A$.
# - With the **perfect critic** the exact bias is zero ($< 10^{-12}$) for every $\lambda$, and small $\lambda$ is
#   simply better: the argmin is 0 in every group and for every $N$. The Monte Carlo bias column only shows its
#   noise floor (0.002-0.008).
#
# **(c) Truncation.** At $\lambda = 1$ the remaining action-dependent bias is W4's truncation term
# $\gamma^T d_T e$:
#
# | $T$ | share truncated | bias at $\lambda = 1$ |
# |---|---|---|
# | 10 | 47% | $7.0\cdot10^{-3}$ |
# | 20 | 14% | $1.9\cdot10^{-3}$ |
# | 30 | 4% | $3.5\cdot10^{-4}$ |
# | 150 | none | $< 10^{-12}$ |
#
# It is small next to $\lambda = 0.95$'s 0.014, because after $T$ steps the state distributions that follow the
# two first actions have nearly merged. Still, no amount of sampling removes it, and the Monte Carlo column
# cannot resolve it at this budget (noise floor 0.008). At $\lambda = 0.95$ the bias hardly depends on $T$: the
# weights $(\gamma\lambda)^l$ have decayed by then.
#
# **(d) $\gamma$.** With the perfect critic $V^{\pi,\gamma}$, GAE is unbiased for $A^{\pi,\gamma}$ but not for the
# undiscounted $A^{\pi,1}$. The bias against $A^{\pi,1}$ is 0.081 at $\gamma = 0.8$, 0.052 at 0.9, 0.032 at 0.95,
# 0.008 at 0.99 and 0 at $\gamma = 1$. Meanwhile the variance falls from 0.60 at $\gamma = 1$ to 0.23 at 0.8. This
# is the paper's point: $\gamma < 1$ biases whatever the critic, since even the exact critic leaves the bias. At
# equal values of 0.95, $\gamma$'s bias (0.032) is twice $\lambda$'s bias with this poor critic (0.0145); the two
# are measured against different targets ($\gamma$'s against the undiscounted $A^{\pi,1}$ with the exact critic,
# $\lambda$'s against the discounted $A^{\pi,\gamma}$ with the poor critic), so compare their sizes only roughly. That
# fits the paper's remark that the best $\lambda$ sits below the best $\gamma$.
#
# ### What a healthy run prints
#
# These values are fixed by the mechanics, not by luck:
#
# - **Baselines.** Every REINFORCE estimator is unbiased within 5 standard errors (checked in the table). At
#   $c = 10$ the value baseline's variance is at least 20 times smaller than no baseline's. The Monte Carlo
#   variances match the exact formula within 6%.
# - **$\lambda$, imperfect critic.** The action-dependent bias decreases in $\lambda$; it is about 0.2 at
#   $\lambda = 0$ and small but nonzero at $\lambda = 1$ (the truncation term, $10^{-4}$ to $10^{-2}$). The
#   variance at $\lambda = 1$ is at least 3 times that at $\lambda = 0$. The argmin of bias² + variance lies
#   inside $[0.1, 0.6]$ in every group.
# - **$\lambda$, perfect critic.** The exact bias is below $10^{-12}$ for every $\lambda$, and the argmin is
#   $\lambda = 0$.
# - **$\gamma$, perfect critic.** The bias against $A^{\pi,1}$ decreases in $\gamma$ and is below $10^{-12}$ at
#   $\gamma = 1$.

# %%
var_of = {k: (v**2).mean() for k, v in rows.items()}  # E||g - g*||^2 = variance + bias^2, bias ~ 0
biases = [results["imperfect", lm]["bias"] for lm in lams]
argmins = {c: [lams[i] for i in np.stack([results[c, lm]["mse"] for lm in lams]).argmin(0)]
           for c in ("imperfect", "perfect")}
mc_vs_exact = max(abs(var_of[k] / exact_var[k] - 1) for k in rows if not np.isnan(exact_var[k]))
gamma_bias = [gamma_rows[g, "perfect"][0] for g in gammas]
checks = {
    "MSE ratio none / V(x), offset 10": (var_of[10.0, "none"] / var_of[10.0, "V(x)"], 20, 1e4),
    "MSE ratio none / V(x), offset 0": (var_of[0.0, "none"] / var_of[0.0, "V(x)"], 1.0, 1e4),
    "max |MC variance / exact - 1|, state baselines": (mc_vs_exact, 0, 0.06),
    "action-dependent bias at lambda=0": (biases[0], 0.02, 10),
    "action-dependent bias at lambda=1 (truncation)": (biases[-1], 1e-4, 1e-2),
    "bias decreasing in lambda (1 = yes)": (float(all(np.diff(biases) < 0)), 1, 1),
    "variance ratio lambda=1 / lambda=0": (results["imperfect", 1.0]["var"].mean()
                                           / results["imperfect", 0.0]["var"].mean(), 3, 100),
    "argmin lambda, imperfect critic, min over groups": (min(argmins["imperfect"]), 0.1, 0.6),
    "argmin lambda, imperfect critic, max over groups": (max(argmins["imperfect"]), 0.1, 0.6),
    "argmin lambda, perfect critic, max over groups": (max(argmins["perfect"]), 0, 0),
    "perfect critic, max exact bias over lambda": (max(results["perfect", lm]["bias"] for lm in lams), 0, 1e-12),
    "gamma bias decreasing in gamma (1 = yes)": (float(all(np.diff(gamma_bias) < 0)), 1, 1),
    "gamma bias at gamma=1, perfect critic": (gamma_bias[-1], 0, 1e-12),
}
for label, (value, low, high) in checks.items():
    shown = f"{value:10.4g}" if value == 0 or abs(value) >= 1e-12 else f"{'< 1e-12':>10s}"  # no float dust
    print(f"{label:48s} {shown}   expected in [{low:.3g}, {high:.3g}]")
    assert low <= value <= high, label

# %% [markdown]
# ## Misconceptions
#
# - **Claim (seed table):** GAE is a 2016 paper. **Correction:** it was first posted to arXiv on 8 June 2015
#   (1506.02438); 2016 is the ICLR conference year.
# - **Claim (seed table):** GAE "reduces the standard deviation of the advantage estimate from 0.5 to 0.2",
#   "raises policy-update stability by 50%", halves Atari convergence from 10M to 5M steps and "improves
#   generalisation by 30%". **Correction:** these numbers are not in the paper. GAE's experiments (§6) use
#   TRPO, not Atari: cart-pole (2D classic control) and 3D locomotion (a biped, a quadruped, and a biped standing
#   up). Its $\lambda$ study is a set of learning curves over $\gamma$ and $\lambda$, with the best results at
#   high intermediate $\lambda$ (roughly 0.9-0.99 as we recall; not re-verified). How much any $\lambda$ reduces
#   the variance depends on the problem and the critic. This notebook measures it for its chain instead of
#   quoting a number.
# - **Claim (seed table):** the $k$ of the $k$-step estimator is "adjusted dynamically with task complexity (3-5
#   for short tasks, 10-20 for long ones)". **Correction:** GAE has no $k$ to choose. It averages *all* $k$ with
#   weights $(1-\lambda)\lambda^{k-1}$ (D3), and $\gamma$ and $\lambda$ are fixed hyperparameters.
# - **Claim (seed table, its own inconsistency):** the prose gives the weights of the $k$-step returns as
#   "$\lambda^k$", while its formula uses $(1-\lambda)\lambda^{k-1}$. **Correction:** the formula is right. The
#   weights $(1-\lambda)\lambda^{k-1}$, $k \ge 1$, sum to 1 (D3). Weights $(1-\lambda)\lambda^k$ would sum to
#   $\lambda$ and shrink every return by that factor.
# - **Claim (common):** "subtracting a baseline biases the gradient, trading bias for variance."
#   **Correction:** any baseline that does not depend on the action is unbiased (D2; 4,096 independent batches in
#   the reproduction). Only the variance changes. The bias in actor-critic methods comes from using an
#   *imperfect critic inside the advantage* ($\lambda < 1$), and from $\gamma < 1$; not from the baseline.
# - **Claim (common):** "$V(s)$ is the variance-minimising baseline." **Correction:** it is not. The
#   variance-optimal state baseline weights the rewards by the squared score norm,
#   $b^*(s) = \mathbb E[\|\nabla\log\pi\|^2 G|s]/\mathbb E[\|\nabla\log\pi\|^2|s]$ (Greensmith, Bartlett & Baxter
#   2004). On W1's bandit it gives 0.06435 against $V$'s 0.06458, exactly. $V$ is used because it is near-optimal,
#   because it is what the critic learns anyway, and because it turns the weight into an advantage.
# - **Claim (common):** "$\lambda$ always trades bias for variance." **Correction:** only when
#   $V \ne V^{\pi,\gamma}$. With the exact value function every $\lambda$ gives an unbiased advantage (W4,
#   exactly), and smaller $\lambda$ has less variance. GAE §3 says as much: $\lambda < 1$ is $\gamma$-just when
#   $V = V^{\pi,\gamma}$.
# - **Claim (common):** "the discount in the policy-gradient theorem can be dropped harmlessly" (every PPO
#   implementation weights all steps equally). **Correction:** $\nabla J_\gamma$ has a factor $\gamma^t$ (D1).
#   Without it, the vector is not $\nabla J_\gamma$: on D1's MDP it is off by 0.047, against a largest entry of
#   0.42. In general it is not the gradient of any function (Thomas 2014; Nota & Thomas 2020). It is close to
#   the gradient of the *undiscounted* return (0.006 here), which is how GAE reads it: $\gamma$ is a
#   variance-for-bias knob on an undiscounted objective, and Reproduction (d) measures that bias.
# - **Claim (common):** "$\lambda = 1$ GAE is an unbiased estimate of $A(s, a)$." **Correction:** its expectation
#   is $A(s, a) - e(s) + \gamma^T d_T e$ (W4). The $-e(s)$ part is a state-only shift, harmless to the gradient
#   (the sense of GAE's "$\gamma$-just"). But a rollout cut at $T$ bootstraps from the wrong $\hat V(s_T)$ and
#   leaves an action-dependent bias (Reproduction (c)).
# - **Claim (common):** "a time-limit cut is a termination." **Correction:** the state where a time limit cuts
#   the episode is not terminal, so its value is not 0. Treating it as terminal is a bias in every advantage
#   before the cut; the check above shows 0.205 at the cut step of a toy rollout. Bootstrap with
#   $\gamma V(s_{\text{cut}})$, as sb3 does (`on_policy_algorithm.py` l.234-245; Pardo et al. 2018 discuss the
#   issue at length). The rollout's own end is handled the same way, through `last_values`.

# %% [markdown]
# ## Exercises
#
# 1. A rollout has rewards $[1, 0, 2]$, values $[0.5, 0.2, 1.0]$, no terminations and $V(s_3) = 0.4$; with
#    $\gamma = 0.9$ and $\lambda = 0.5$, give $\hat A_0$ to 4 decimals.
# 2. Same rollout, but the episode terminates at step 1 (`dones = [0, 1, 0]`). Give $\hat A_0$.
# 3. A two-action softmax policy has $\pi = (0.25, 0.75)$. With reward 1 for action 0 and 0 otherwise, what is
#    $\partial J/\partial\theta_0$? (Use the bandit formula of W1.)
# 4. In sb3's convention, what are `episode_starts` (3 steps, one env) for `dones = [0, 1, 0]`?
#
# Fill in your answers and run the cell; `None` skips a question. The cell computes the answers with this
# notebook's functions and prints only whether yours match.

# %%
answers = {"1": None, "2": None, "3": None, "4": None}


def exercise_key():
    r, v, lv = np.array([1.0, 0.0, 2.0]), np.array([0.5, 0.2, 1.0]), 0.4
    key = {"1": gae_from_scratch(r, v, np.zeros(3), lv, 0.9, 0.5)[0],
           "2": gae_from_scratch(r, v, np.array([0.0, 1.0, 0.0]), lv, 0.9, 0.5)[0]}
    th = torch.log(torch.tensor([0.25, 0.75])).requires_grad_(True)
    key["3"] = torch.autograd.grad((torch.softmax(th, 0) * torch.tensor([1.0, 0.0])).sum(), th)[0][0].item()
    key["4"] = [1.0, 0.0, 1.0]
    return key


key = exercise_key()
for name, value in answers.items():
    if value is None:
        print(f"exercise {name}: not answered")
    else:
        ok = np.allclose(np.asarray(value, dtype=float), np.asarray(key[name], dtype=float), atol=1e-3)
        print(f"exercise {name}: {'correct' if ok else 'not yet, try again'}")

# %% [markdown]
# <details>
# <summary><b>Solutions</b> (click to open once you have tried)</summary>
#
# 1. $\delta = [1 + 0.18 - 0.5,\ 0 + 0.9 - 0.2,\ 2 + 0.36 - 1] = [0.68, 0.70, 1.36]$; $\gamma\lambda = 0.45$:
#    $\hat A_0 = 0.68 + 0.45\cdot0.70 + 0.45^2\cdot1.36 = 1.2704$.
# 2. Step 1 terminates: $\delta_1 = 0 - 0.2 = -0.2$ and nothing after it counts: $\hat A_0 = 0.68 - 0.45\cdot0.2 = 0.59$.
# 3. $\pi_0(1 - V) = 0.25\,(1 - 0.25) = 0.1875$.
# 4. `episode_starts[0] = 1` (a fresh episode), `episode_starts[t + 1] = dones[t]`: $[1, 0, 1]$.
#
# </details>

# %% [markdown]
# ## References
#
# - R. J. Williams. *Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement Learning.*
#   Machine Learning 8, 229-256, 1992. https://doi.org/10.1007/BF00992696 (REINFORCE, the baseline, Theorem 1).
# - J. Schulman, P. Moritz, S. Levine, M. I. Jordan, P. Abbeel. *High-Dimensional Continuous Control Using
#   Generalized Advantage Estimation.* ICLR 2016; arXiv:1506.02438. The metadata names v6, the latest revision
#   as far as we know. The version number, the equation number (§3, eq. 16, as `shared/returns.py` cites it),
#   the Definition/Proposition numbers, the §3 and §6 paraphrases and the $\lambda$ ranges were not re-checked
#   against the PDF in this session. §2: the $\Psi_t$ choices, $\gamma$ as a variance-reduction parameter,
#   $\gamma$-just estimators. §3: GAE. §4: the reward-shaping view. §5: the value-function fit. §6: experiments.
# - Official code of the first author: [joschu/modular_rl](https://github.com/joschu/modular_rl),
#   `modular_rl/core.py` (`compute_advantage`: GAE, with `b[-1]` as the bootstrap of a cut path).
# - R. S. Sutton. *Learning to Predict by the Methods of Temporal Differences.* Machine Learning 3, 9-44, 1988
#   (TD($\lambda$)).
# - R. S. Sutton, D. McAllester, S. Singh, Y. Mansour. *Policy Gradient Methods for Reinforcement Learning with
#   Function Approximation.* NeurIPS 1999 (NIPS 12, proceedings published 2000): the policy-gradient theorem.
# - H. Kimura, S. Kobayashi. *An Analysis of Actor/Critic Algorithms Using Eligibility Traces: Reinforcement
#   Learning with Imperfect Value Function.* ICML 1998. P. Wawrzyński. *Real-Time Reinforcement Learning by
#   Sequential Actor-Critics and Experience Replay.* Neural Networks 22, 2009. (The earlier $\lambda$-weighted
#   advantage estimators, as we recall GAE's related work.)
# - E. Greensmith, P. L. Bartlett, J. Baxter. *Variance Reduction Techniques for Gradient Estimates in
#   Reinforcement Learning.* JMLR 5, 2004 (optimal baselines). L. Weaver, N. Tao. *The Optimal Reward Baseline
#   for Gradient-Based Reinforcement Learning.* UAI 2001.
# - P. Thomas. *Bias in Natural Actor-Critic Algorithms.* ICML 2014. C. Nota, P. S. Thomas. *Is the Policy
#   Gradient a Gradient?* AAMAS 2020 (the dropped $\gamma^t$).
# - V. Mnih et al. *Asynchronous Methods for Deep Reinforcement Learning.* ICML 2016 (A3C, $n$-step advantages).
#   J. Schulman et al. *Proximal Policy Optimization Algorithms.* arXiv:1707.06347, 2017 (PPO with GAE).
# - F. Pardo, A. Tavakoli, V. Levdik, P. Kormushev. *Time Limits in Reinforcement Learning.* ICML 2018.
# - R. S. Sutton, A. G. Barto. *Reinforcement Learning: An Introduction*, 2nd ed., 2018, ch. 12 ($\lambda$-returns)
#   and ch. 13 (REINFORCE with baseline, the policy-gradient theorem).
# - Reference implementation: `stable-baselines3` 2.9.2: `stable_baselines3/common/buffers.py`,
#   `RolloutBuffer.compute_returns_and_advantage` (l.403-438: GAE, `episode_starts`, the last step's `dones`);
#   `stable_baselines3/common/on_policy_algorithm.py`, `collect_rollouts` (l.234-245: the time-limit bootstrap,
#   issue #633; l.256: `_last_episode_starts = dones`); `ppo/ppo.py` (`gae_lambda=0.95`, l.89). The course's
#   `shared/returns.py` (`gae`, `td_errors`, `discounted_returns`) and `tests/test_returns.py`.
