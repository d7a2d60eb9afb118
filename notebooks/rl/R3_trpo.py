# ---
# jupyter:
#   course:
#     cpu_seconds: 39
#     id: R3
#     papers:
#     - arxiv: '1502.05477'
#       title: Trust Region Policy Optimization
#       version: v5
#     part: rl
#     peak_memory_mb: 612
#     prerequisites:
#     - R2
#     title: TRPO
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
# # R3 · TRPO
#
# [![Open In Colab](../../docs/img/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/rl/R3_trpo.ipynb)
#
# **Paper:** John Schulman, Sergey Levine, Philipp Moritz, Michael I. Jordan, Pieter Abbeel, *Trust Region Policy
# Optimization*, ICML 2015. [arXiv:1502.05477](https://arxiv.org/abs/1502.05477) (v5, 20 Apr 2017) ·
# **Code:** [joschu/modular_rl](https://github.com/joschu/modular_rl) (`modular_rl/trpo.py`, HEAD 6970cde), the first
# author's 2016 reference implementation, not the code behind the paper's experiments: its history starts on
# 2016-04-21 (`trpo.py` first appears in commit 48456f9 that day), it runs on OpenAI Gym, and it uses GAE
# (README reference [2], arXiv:1506.02438), which came after TRPO.
#
# **Prerequisites:** [R2 · Policy gradients and GAE](R2_policy_gradients_gae.ipynb). Next: [R4 · PPO](R4_ppo.ipynb).
#
# **CPU run time:** 39 s on a 2-core CPU (measured by `make run`, which rewrites this number)
#
# **Peak memory:** 612 MB (the kernel's peak resident memory, measured by `make run`)

# %% [markdown]
# ## TL;DR
#
# - TRPO maximises the surrogate (eq. 14) in an average-KL trust region (eq. 12) by CG on Fisher products and a line search.
# - On a torch CartPole (16 seeds) TRPO's KL stays $\le \delta$ on its batch, not always on the next batch's states; the
#   full step without the line search breaks $\delta$ on most updates.
# - Mean return over all updates: TRPO beats the plain gradient (+35, s.e. 11) and is within the spread of the empirical
#   Fisher and a tuned natural gradient, as reported; Max KL is slower, as in §8.1, but 43% lower (+71, s.e. 10), not "similar".

# %% [markdown]
# ## 中文速览
#
# - TRPO 在平均 KL 信任域（式 12）内最大化替代目标（式 14），用 Fisher 向量积上的共轭梯度加线搜索求解。
# - 在 torch CartPole 上（16 个种子），TRPO 在本批数据上的 KL 始终 $\le \delta$，在下一批数据的状态上则不总是；
#   去掉线搜索，满步长在大多数更新上超过 $\delta$。
# - 全部更新的平均回报：TRPO 高于普通梯度（+35，标准误 11），与经验 Fisher 和调好步长的自然梯度相差在种子波动之内，
#   与论文一致；Max KL 学得更慢，方向与 §8.1 一致，但低 43%（+71，标准误 10），并非论文所说的"相近"。

# %% [markdown]
# ## Setup
#
# One cell installs the course helper on Colab only; the next imports and seeds. Everything runs on a CPU in float64.

# %% tags=["nbval-skip"]
# Colab only: install the course helper package with its pinned versions. CI skips this cell.
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "vlm-llm-course[notebooks] @ git+https://github.com/open-vlm-course/vlm-llm-course@main",
        ],
        check=True,
    )

# %%
import math

import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch

from shared.returns import gae
from shared.utils import error_bound, pick_device, seed_everything

seed_everything(0)
device = pick_device()  # everything below is small and runs on the CPU
torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)
print("torch", torch.__version__, "gymnasium", gym.__version__)

# %% [markdown]
# ## The problem
#
# In the paper's words (§1): derivative-free methods such as CEM and CMA "are preferred on many problems", and "the
# inability of ADP and gradient-based methods to consistently beat gradient-free random search is unsatisfying,
# since gradient-based optimization algorithms enjoy much better sample complexity guarantees". Nonlinear policies
# "with tens of thousands of parameters" had "posed a major challenge for model-free policy search" (§1); the
# paper's Atari policy has 33,500 parameters (§8.2), its locomotion policies 364 to 8,206 (Table 2).
#
# The theory had a gap too. Kakade and Langford's conservative policy iteration bound (eq. 6) holds only for mixture
# policies $(1-\alpha)\pi_{\text{old}} + \alpha\pi'$ (eq. 5), a class the paper calls "unwieldy and restrictive in
# practice" (§2). TRPO's Theorem 1 (§3) extends the bound to any stochastic policy, but "if we used the penalty
# coefficient $C$ recommended by the theory above, the step sizes would be very small" (§4): with the paper's
# $\gamma = 0.99$ (Table 2), $C = 4\epsilon\gamma/(1-\gamma)^2 = 39{,}600\,\epsilon$ (exercise 2). The classic
# natural policy gradient uses a fixed step instead, and in Fig. 4, even with that step tuned, it "was unable to
# generate hopping and walking gaits that made forward progress" (§8.1; the caption: for hopper and walker "a score
# of $-1$ is achievable without any forward velocity"). The abstract's claim: "Despite its approximations that
# deviate from the theory, TRPO tends to give monotonic improvement, with little tuning of hyperparameters", on
# simulated swimming, hopping and walking and on Atari from screen images (§8).

# %% [markdown]
# ## Derivations
#
# **D1. Surrogate (§2).** With $\eta(\pi) = \mathbb E[\sum_t \gamma^t r(s_t)]$ and
# $\rho_\pi(s) = \sum_t \gamma^t P(s_t = s)$, eq. 1 (Kakade and Langford) is
# $\eta(\tilde\pi) = \eta(\pi) + \mathbb E_{\tau\sim\tilde\pi}[\sum_t\gamma^t A_\pi(s_t,a_t)]$: telescope
# $A_\pi(s_t,a_t) = \mathbb E[r_t + \gamma V_\pi(s_{t+1}) - V_\pi(s_t)]$ along $\tilde\pi$'s trajectories. Grouping by
# state gives eq. 2, $\eta(\tilde\pi) = \eta(\pi) + \sum_s \rho_{\tilde\pi}(s)\sum_a \tilde\pi(a|s) A_\pi(s,a)$.
# Replacing $\rho_{\tilde\pi}$ by $\rho_\pi$ gives the surrogate (eq. 3)
# $L_\pi(\tilde\pi) = \eta(\pi) + \sum_s \rho_\pi(s)\sum_a \tilde\pi(a|s) A_\pi(s,a)$. It matches $\eta$ to first
# order at $\tilde\pi = \pi$ (eq. 4): $L_\pi(\pi) = \eta(\pi)$ since $\sum_a\pi A_\pi = 0$, and the change of
# $\rho$ contributes to the gradient only through $\sum_a \pi A_\pi = 0$.
#
# **D2. Theorem 1 (§3) and a sketch of its proof (Appendix A).** Let $\alpha = D^{\max}_{TV}(\pi,\tilde\pi)$. Couple
# the two policies so that in every state the sampled actions differ with probability at most $\alpha$ (the
# maximal coupling). Write $\bar A(s) = \sum_a \tilde\pi(a|s)A_\pi(s,a)$, so $\eta(\tilde\pi) - \eta(\pi) =
# \sum_t\gamma^t\,\mathbb E_{s_t\sim\tilde\pi}\bar A(s_t)$ and $L_\pi(\tilde\pi) - \eta(\pi) = \sum_t\gamma^t\,
# \mathbb E_{s_t\sim\pi}\bar A(s_t)$. (i) Since $\mathbb E_{a\sim\pi}A_\pi = 0$, $\bar A(s) = \mathbb E[A_\pi(s,\tilde a) -
# A_\pi(s,a)]$ is non-zero only when the coupled actions differ: $|\bar A(s)| \le 2\alpha\epsilon$,
# $\epsilon = \max_{s,a}|A_\pi|$. (ii) The coupled trajectories agree up to time $t$ with probability at least
# $(1-\alpha)^t$, so the two state distributions at $t$ change $\bar A$'s expectation by at most
# $2(1-(1-\alpha)^t)\cdot 2\alpha\epsilon$. Summing,
# $|\eta - L| \le 4\alpha\epsilon\sum_t\gamma^t(1-(1-\alpha)^t) = \frac{4\alpha^2\gamma\epsilon}{(1-\gamma)(1-\gamma(1-\alpha))}
# \le \frac{4\epsilon\gamma}{(1-\gamma)^2}\alpha^2$. With $D_{TV}^2 \le D_{KL}$ this is eq. 9,
# $\eta(\tilde\pi) \ge L_\pi(\tilde\pi) - C D^{\max}_{KL}$. Maximising the right side never lowers $\eta$ (Algorithm 1,
# a minorise-maximise scheme); this guarantee is for the exact, penalised, max-KL objective only.
#
# **D3. Why the Hessian of the KL is the Fisher matrix.** $\bar D(\theta) = \mathbb E_s\sum_a \pi_{\text{old}}(a|s)
# [\log\pi_{\text{old}}(a|s) - \log\pi_\theta(a|s)]$. Its gradient at $\theta_{\text{old}}$ is
# $-\mathbb E_s\sum_a\nabla\pi_\theta = -\mathbb E_s\nabla\sum_a\pi_\theta = 0$. Its Hessian is
# $-\mathbb E_s\sum_a\pi_{\text{old}}\nabla^2\log\pi_\theta$, and $\nabla^2\log\pi = \nabla^2\pi/\pi -
# \nabla\log\pi\nabla\log\pi^\top$; at $\theta_{\text{old}}$ the first term sums to $\nabla^2\sum_a\pi = 0$. So
# $\nabla^2\bar D = \mathbb E_s\sum_a\pi\nabla\log\pi\nabla\log\pi^\top = F$, and $\bar D \approx \frac12\Delta^\top F\Delta$.
# $Fv = \nabla_\theta(\nabla_\theta\bar D\cdot v)$ costs two backward passes and never forms $F$. That is the
# "generic method for calculating Hessian-vector products" of Appendix C.1, which the paper calls "slightly less
# efficient" than its own form "but may be substantially easier to implement". The paper's form (eq. 57): with
# $\mu_\theta(s)$ the parameters of the action distribution and $J = \partial\mu/\partial\theta$, $F = J^\top M J$
# averaged over states, $M$ the Fisher matrix of the distribution in $\mu$. For a 2-way softmax take
# $\mu = z_0 - z_1$ (the logit difference): $M = \pi_0\pi_1$ and $F = \frac1N\sum_n \pi_0\pi_1\,d_n d_n^\top$,
# $d_n = \nabla_\theta(z_0 - z_1)(s_n)$, the explicit matrix of the batched check below.
#
# §6 uses this analytic Hessian "rather than using the covariance matrix of the gradients",
# $\frac1N\sum_n\nabla\log\pi(a_n|s_n)\nabla\log\pi(a_n|s_n)^\top$ (the "empirical FIM"). For the 2-way softmax,
# $\nabla\log\pi(a_n|s_n) = c_n d_n$ with $c_n = \pi_1$ if $a_n = 0$ and $c_n = -\pi_0$ if $a_n = 1$, so the empirical
# FIM is $J^\top M_{\text{emp}} J$ with $M_{\text{emp},n} = c_n^2$; its expectation over $a_n$ is
# $\pi_0\pi_1^2 + \pi_1\pi_0^2 = \pi_0\pi_1$, the analytic $M$. Fig. 4 runs it on cart-pole and swimmer, and §6 says
# "the rate of improvement in the policy is similar to the empirical FIM". The reproduction runs it as an arm.
#
# **D4. The trust-region step (§4 eq. 12; §7 eq. 17; App. C eq. 55) by its Lagrangian.** Maximise $g^\top\Delta$
# subject to $\frac12\Delta^\top F\Delta \le \delta$ (eq. 17, the linear-quadratic model of eq. 12). Stationarity of
# $g^\top\Delta - \lambda(\frac12\Delta^\top F\Delta - \delta)$ gives $\Delta = \lambda^{-1}F^{-1}g$: the natural-gradient
# direction $s = F^{-1}g$. The constraint is active, $\frac1{2\lambda^2}g^\top F^{-1}g = \delta$, so
# $\lambda = \sqrt{g^\top F^{-1}g/2\delta}$ and $\Delta = \sqrt{2\delta/g^\top F^{-1}g}\;F^{-1}g = \beta s$ with
# $\beta = \sqrt{2\delta/s^\top F s}$ ($s^\top F s = g^\top F^{-1}g$; Appendix C derives the same $\beta$).
#
# §7's unification: replacing $F$ by $I$ gives the plain gradient (eq. 18, an $\ell_2$ trust region). Fixing the step
# $1/\lambda$ instead of $\delta$ gives the classic natural policy gradient (Kakade; eq. 17's update
# $\theta_{\text{old}} + \frac1\lambda A^{-1}\nabla L$, "where the stepsize $\frac1\lambda$ is typically treated as an
# algorithm parameter"), the "Natural Gradient" baseline of Fig. 4. TRPO fixes $\delta$, so $\lambda$ is solved
# per update.
#
# CG solves $(F + \lambda_d I)s = g$ ($\lambda_d$ the damping) with only $Fv$ products. The paper uses $k = 10$
# iterations: "We found k = 10 to be quite effective, and using higher k did not result in faster policy
# improvement" (App. C.1), as `cg_iters=10` in `modular_rl`. The code computes $\beta$ from the damped
# $s^\top(F + \lambda_d I)s$, as `modular_rl` (damping inside `fisher_vector_product`), `baselines` and sb3-contrib
# (`cg_damping` added in `hessian_vector_product`) do, so a larger damping also shrinks $\beta$ directly, through
# $\lambda_d\|s\|^2$. A line search then makes the step hold exactly, not only in the quadratic model. Appendix C
# specifies it as: "We perform the line search on the objective $L_{\theta_{\text{old}}}(\theta) -
# \mathcal X[D_{KL}(\theta_{\text{old}}, \theta) \le \delta]$, where $\mathcal X[\ldots]$ equals zero when its argument
# is true and $+\infty$ when it is false. Starting with the maximal value of the step length $\beta$ ..., we shrink
# $\beta$ exponentially until the objective improves." The paper gives no shrink factor or number of tries; the
# factor 0.5 and the 10 tries used here are `modular_rl`'s (`linesearch(..., max_backtracks=10, ...)`, `trpo.py`
# lines 104 and 110).
#
# **D5. The surrogate the code optimises (§5, eq. 14).** For one state,
# $\sum_a\pi_\theta(a|s)A(s,a) = \mathbb E_{a\sim q}[\frac{\pi_\theta(a|s)}{q(a|s)}A(s,a)]$ for any sampling
# distribution $q$; the single-path estimator (§5.1) uses $q = \pi_{\text{old}}$, and $\sum_s\rho_{\text{old}}(s)$
# becomes an average over visited states (the factor $1/(1-\gamma)$ is dropped). The paper writes eq. 14 with
# $Q_{\text{old}}$: replacing $A$ by $Q$ or by $A + b(s)$ adds $\sum_a\pi_\theta b(s) = b(s)$, a constant in
# $\theta$. So the code's $\frac1N\sum_n\frac{\pi_\theta(a_n|s_n)}{\pi_{\text{old}}(a_n|s_n)}\hat A_n$ is eq. 14
# with GAE advantages (a later paper) for $Q$: $\gamma = 0.99$ as in Table 2, and $\lambda = 0.97$, this notebook's
# choice (`modular_rl` defaults to `lam=1.0`, `core.py` line 72). The advantages are standardised over the whole
# batch, as `modular_rl` does (`core.py` lines 57-62). That does two things. Dividing by the std scales $g$ and the
# surrogate's change by $c > 0$: $\beta s$ is unchanged by $g \to cg$ (D4; exactly so only while CG's absolute
# stopping test $r^\top r < 10^{-10}$, `residual_tol`, has not fired, since that test is not scale-invariant), and
# so is the sign test. Subtracting the batch mean is a baseline, unbiased only up to an $O(1/N)$ term (the mean
# includes sample $n$'s own $\hat A_n$, so it is not independent of $a_n$; a constant $b$ would be exact), but it
# changes the sampled $g$ (lower variance) and hence the step and the sign test. The scale matters for the
# fixed-step "Natural" arm below: standardising fixes it, so one step size means the same for every batch.

# %% [markdown]
# ## Walkthrough
#
# A random tabular MDP (6 states, 3 actions, $\gamma = 0.9$). $\eta$ is exact: $V = (I - \gamma P_\pi)^{-1} r_\pi$.

# %%
nS, nA, gamma_t = 6, 3, 0.9
g0 = torch.Generator().manual_seed(0)
P = torch.rand(nS, nA, nS, generator=g0) ** 3
P = P / P.sum(-1, keepdim=True)  # (S, A, S') transition probabilities
R = torch.rand(nS, nA, generator=g0)  # (S, A) rewards
mu0 = torch.full((nS,), 1.0 / nS)  # start distribution


def evaluate(pi):  # pi: (S, A) -> eta, V, Q, A, rho (all exact, by linear solves)
    P_pi = torch.einsum("sa,sat->st", pi, P)  # (S, S)
    r_pi = (pi * R).sum(-1)
    V = torch.linalg.solve(torch.eye(nS) - gamma_t * P_pi, r_pi)
    Q = R + gamma_t * P @ V  # (S, A)
    rho = torch.linalg.solve(torch.eye(nS) - gamma_t * P_pi.T, mu0)  # sum_t gamma^t P(s_t = s)
    return mu0 @ V, V, Q, Q - V[:, None], rho


def surrogate(pi, pi_new):  # eq. 3
    eta, _, _, A, rho = evaluate(pi)
    return eta + (rho[:, None] * pi_new * A).sum()


pi = torch.softmax(torch.randn(nS, nA, generator=g0), -1)
eta, V, Q, A, rho = evaluate(pi)
print("eta(pi) =", round(eta.item(), 4), " rho sums to 1/(1-gamma):", round(rho.sum().item(), 4))

# %% [markdown]
# The KL form of Theorem 1 (eq. 9) on 2000 random new policies at several distances: the bound must hold for every one. The cell
# also prints how tight it is: the largest observed $(L_\pi(\tilde\pi) - \eta(\tilde\pi))/D^{\max}_{KL}$ against $C$,
# and the largest observed $|\eta - L|$ against the tighter eq. 44 form $\frac{4\alpha^2\gamma\epsilon}{(1-\gamma)(1-\gamma(1-\alpha))}$,
# $\alpha = D^{\max}_{TV}$. The asserts test that both bounds hold (their sign and structure); they do not test the
# constant, because the bound would still hold with $C$ hundreds of times smaller. That slack is §4's point: a
# penalty this large makes "the step sizes ... very small".

# %%
eps_A = A.abs().max()  # epsilon = max |A_pi(s, a)|
C = 4 * eps_A * gamma_t / (1 - gamma_t) ** 2
worst_slack, worst_ratio, worst_eq44, n_checked = float("inf"), -float("inf"), 0.0, 0
for scale in (0.01, 0.1, 0.5, 2.0):
    for _ in range(500):
        logits = pi.log() + scale * torch.randn(nS, nA, generator=g0)
        pi_new = torch.softmax(logits, -1)
        kl_max = (pi * (pi.log() - pi_new.log())).sum(-1).max()
        tv_max = 0.5 * (pi - pi_new).abs().sum(-1).max()  # alpha
        L_new, eta_new = surrogate(pi, pi_new), evaluate(pi_new)[0]
        slack = eta_new - (L_new - C * kl_max)
        eq44 = 4 * tv_max**2 * gamma_t * eps_A / ((1 - gamma_t) * (1 - gamma_t * (1 - tv_max)))
        worst_slack = min(worst_slack, slack.item())
        worst_ratio = max(worst_ratio, ((L_new - eta_new) / kl_max).item())
        worst_eq44 = max(worst_eq44, ((L_new - eta_new).abs() / eq44).item())
        n_checked += 1
assert worst_slack >= 0 and worst_eq44 <= 1
print(
    f"C = {C.item():.1f}; bound holds on {n_checked} policies; smallest slack eta - bound = {worst_slack:.2e}"
)
print(
    f"largest (L - eta) / D_KL^max observed: {worst_ratio:.2f} (C is {C.item() / worst_ratio:.0f}x larger); "
    f"largest |eta - L| / eq. 44 bound: {worst_eq44:.3f}"
)

# %% [markdown]
# Two identities behind D1, checked exactly. Eq. 2 holds with $\rho$ of the *new* policy (this is what the
# surrogate approximates). Eq. 4: $L$ and $\eta$ agree in value and gradient at $\tilde\pi = \pi$ (softmax-logit
# parametrisation; autograd through the exact linear solves of `evaluate`, against autograd through the surrogate
# with $\rho$ and $A$ of the old policy held fixed).

# %%
eta_new, *_, rho_new = evaluate(pi_new)
exact = eta + (rho_new[:, None] * pi_new * A).sum()
print("eq. 2 error:", error_bound((exact - eta_new).abs().item(), 1e-12))
assert abs(exact - eta_new) < 1e-10
# eq. 4: gradients in the softmax logits z, of eta (through evaluate's solves) and of L (rho, A fixed)
z_eta, z_L = pi.log().clone().requires_grad_(), pi.log().clone().requires_grad_()
grad_eta = torch.autograd.grad(evaluate(torch.softmax(z_eta, -1))[0], z_eta)[0]
grad_L = torch.autograd.grad(surrogate(pi, torch.softmax(z_L, -1)), z_L)[0]
err_eq4 = (grad_eta - grad_L).abs().max().item()
print(
    "eq. 4: |L(pi) - eta(pi)|:",
    error_bound(abs(surrogate(pi, pi) - eta).item(), 1e-12),
    "| max |grad L - grad eta|:",
    error_bound(err_eq4, 1e-12),
    "| |grad eta| =",
    round(grad_eta.norm().item(), 3),
)
assert err_eq4 < 1e-10 and abs(surrogate(pi, pi) - eta) < 1e-10

# %% [markdown]
# A small policy network (4 -> 8 -> 2, 58 parameters) and a batch of states. `fvp` is the Fisher-vector product by
# double backprop of the mean KL; `cg` is conjugate gradient (as `cg` in `modular_rl/trpo.py`, with its
# `cg_iters=10` and `residual_tol=1e-10`). These single-net versions show the idea; the batched versions that the
# experiment runs are checked below.


# %%
def make_net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))


net = make_net(0)
params = list(net.parameters())
n_params = sum(p.numel() for p in params)
states = torch.randn(256, 4, generator=g0)  # (N, 4)
with torch.no_grad():
    logp_old = torch.log_softmax(net(states), -1)  # (N, 2), fixed


def mean_kl():  # KL(pi_old || pi_theta), averaged over states
    logp = torch.log_softmax(net(states), -1)
    return (logp_old.exp() * (logp_old - logp)).sum(-1).mean()


def flat_grad(y, create_graph=False):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(y, params, create_graph=create_graph)])


def fvp(v, damping=0.0):  # F v = d/dtheta (dKL/dtheta . v)
    g = flat_grad(mean_kl(), create_graph=True)
    return flat_grad(g @ v) + damping * v


def cg(f_Ax, b, iters=10, tol=1e-10):
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), r @ r
    for _ in range(iters):
        Ap = f_Ax(p)
        alpha = rr / (p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = r @ r
        if rr_new < tol:
            break
        p, rr = r + rr_new / rr * p, rr_new
    return x


adv = torch.randn(256, generator=g0)
actions = torch.randint(0, 2, (256,), generator=g0)
logp = torch.log_softmax(net(states), -1).gather(1, actions[:, None]).squeeze(1)
g_surr = flat_grad((torch.exp(logp - logp_old.gather(1, actions[:, None]).squeeze(1)) * adv).mean())
print("parameters:", n_params, " |g| =", round(g_surr.norm().item(), 4))

# %% [markdown]
# ## Check against a reference
#
# The explicit Fisher matrix from the score functions, $F = \frac1N\sum_s\sum_a \pi(a|s)\nabla\log\pi(a|s)
# \nabla\log\pi(a|s)^\top$ (built from per-state Jacobians, no KL involved), against the double-backprop products,
# and `torch.linalg.solve(F + λI, g)` against CG. Damping $\lambda = 10^{-3}$ as `cg_damping` in `modular_rl`.

# %%
F = torch.zeros(n_params, n_params)
for i in range(states.shape[0]):
    for a in range(2):
        lp = torch.log_softmax(net(states[i : i + 1]), -1)[0]  # (2,)
        score = flat_grad(lp[a])  # (P,): grad log pi(a|s)
        F += lp[a].exp().detach() * torch.outer(score, score) / states.shape[0]
v = torch.randn(n_params, generator=g0)
err_fvp = (fvp(v) - F @ v).abs().max().item()
damping = 1e-3
s_direct = torch.linalg.solve(F + damping * torch.eye(n_params), g_surr)
s_cg = cg(lambda x: fvp(x, damping), g_surr, iters=300, tol=1e-30)
s_cg10 = cg(lambda x: fvp(x, damping), g_surr, iters=10)
rel = ((s_cg - s_direct).norm() / s_direct.norm()).item()
print("Fv vs explicit F v, max error:", error_bound(err_fvp, 1e-12))
print("CG (to convergence) vs linalg.solve, relative error:", error_bound(rel, 1e-9))
print(
    "CG (10 iterations) vs linalg.solve, relative error:",
    round(((s_cg10 - s_direct).norm() / s_direct.norm()).item(), 2),
)
assert err_fvp < 1e-10 and rel < 1e-6

# %% [markdown]
# $F$ has exact null directions: a 2-way softmax is unchanged when the same number is added to both logits, so the
# output bias and the 8 "both columns of $W_2$ up by $c_j$" directions (9 of 58) are invariances. $g$ lies in the
# range of $F$ (it is a combination of the score vectors that span it), so $s$ has no null-space component. The
# cell prints the rank, the null-space part of $s$, the KL after moving a unit distance along a null direction
# (zero up to round-off), and the share of $\|s\|^2$ that sits on the non-zero eigenvalues below $10^{-3}$: this
# $F$ is ill-conditioned, with many eigenvalues tiny but not zero.

# %%
eig = torch.linalg.eigvalsh(F)
rank_F = torch.linalg.matrix_rank(F).item()
print(
    f"rank of F: {rank_F} of {n_params}; {int((eig.abs() < 1e-12).sum())} eigenvalues below 1e-12, largest {eig[-1].item():.2f}"
)
assert n_params - rank_F == 8 + 1  # bias of the output layer + one per hidden unit
ev, U = torch.linalg.eigh(F)
null, small = ev.abs() < 1e-12, (ev.abs() >= 1e-12) & (ev < 1e-3)
for lam in (1e-3, 1e-2):
    c = U.T @ torch.linalg.solve(F + lam * torch.eye(n_params), g_surr)  # s in F's eigenbasis
    share = ((c[small] ** 2).sum() / (c**2).sum()).item()
    print(
        f"damping {lam:g}: null-space part of s / |s| = {error_bound((c[null].norm() / c.norm()).item(), 1e-8)}; "
        f"share of |s|^2 on the {int(small.sum())} non-zero eigenvalues below 1e-3: {share:.2f}"
    )
    assert c[null].norm() < 1e-8 * c.norm()
theta0 = torch.nn.utils.parameters_to_vector(params).detach().clone()
torch.nn.utils.vector_to_parameters(theta0 + U[:, null][:, 0], params)  # a unit step along a null direction
with torch.no_grad():
    kl_null = mean_kl().item()
torch.nn.utils.vector_to_parameters(theta0, params)
print("mean KL after a unit step along a null direction of F:", error_bound(kl_null, 1e-12))
assert kl_null < 1e-12

# %% [markdown]
# The step size $\beta = \sqrt{2\delta/s^\top F s}$: the true KL after the step approaches $\delta$ as $\delta \to 0$
# (the quadratic model is exact to second order). With damping $10^{-3}$ the approach is slow: the damped solve
# $(F + \lambda I)^{-1}g$ puts most of $s$ on the tiny non-zero eigenvalues, where the quadratic model is accurate
# only for very small steps, so the true KL of the full step overshoots. A larger damping removes most of the
# overshoot. The null directions are *not* the cause (previous cell). Here $\beta$ uses the undamped $s^\top F s$,
# unlike the CartPole code.


# %%
def kl_ratio(delta, lam):  # true KL after the full step, divided by delta, for (F + lam I)^{-1} g
    s = torch.linalg.solve(F + lam * torch.eye(n_params), g_surr)
    beta = math.sqrt(2 * delta / (s @ F @ s).item())
    torch.nn.utils.vector_to_parameters(theta0 + beta * s, params)
    with torch.no_grad():
        r = mean_kl().item() / delta
    torch.nn.utils.vector_to_parameters(theta0, params)
    return r


print("true KL / delta after the full step beta s:")
print("  delta  " + "".join(f"{f'damping {lam:g}':>16s}" for lam in (1e-3, 1e-2, 1e-1)))
for delta in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
    print(f"  {delta:5.0e}  " + "".join(f"{kl_ratio(delta, lam):16.3f}" for lam in (1e-3, 1e-2, 1e-1)))
assert abs(kl_ratio(1e-6, 1e-3) - 1) < 0.05 and kl_ratio(1e-2, 1e-3) > 2 * kl_ratio(1e-2, 1e-2)

# %% [markdown]
# ## Reproduction
#
# **What the paper claims, and with how many runs.**
#
# - *Fig. 4 and §8.1.* Four panels: Cartpole, Swimmer, Hopper, Walker, each curve "averaged across five runs of
#   each algorithm with random initializations". The cart-pole is "the classic cart-pole balancing problem, based on
#   the formulation from Barto et al. (1983), using a linear policy with six parameters"; its panel shows 50 policy
#   iterations. $\delta = 0.01$ "for all experiments" (§8.1; Tables 2 and 3).
# - *TRPO.* "Single path and vine TRPO solved all of the problems, yielding the best solutions."
# - *Natural gradient.* Its fixed step was tuned: "we swept through the possible values of the stepsize in factors
#   of three, and took the best value according to the final performance". It "performed well on the two easier
#   problems" (cart-pole and swimmer), "but was unable to generate hopping and walking gaits that made forward
#   progress".
# - *Max KL*, run only on cart-pole ("only tractable on the cart-pole problem"): "The max KL method learned somewhat
#   more slowly than our final method, due to the more restrictive form of the constraint, but overall the result
#   suggests that the average KL divergence constraint has a similar effect as the theorecally [sic] justified maximum
#   KL divergence" (§8.1). §4 states it as a finding: "Our experiments also show that this type of constrained update
#   has similar empirical performance to the maximum KL divergence constraint in Equation (11)."
# - *Empirical FIM* (cart-pole and swimmer panels): "The rate of improvement in the policy is similar to the
#   empirical FIM" (§6).
# - *The line search* (Appendix C): "Without this line search, the algorithm occasionally computes large steps that
#   cause a catastrophic degradation of performance." No experiment in the paper isolates this.
# - *Atari* (Table 1): one run per game; "we could not obtain error statistics due to time constraints".
#
# The toy tests these claims on CartPole-v1: a 4-16-2 tanh network (114 parameters, not the paper's 6-parameter
# linear policy), 16 seeds (8 per step size in the natural-gradient sweep), 30 updates of 1,024 steps, single path
# with GAE advantages. It adds a plain-gradient arm, which the paper does not run.
#
# **CartPole in torch, batched.** The dynamics of gymnasium 1.4.0's `CartPoleEnv.step` (Euler integration,
# $|x| > 2.4$ or $|\theta| > 12°$ terminates, `CartPole-v1` truncates at 500 steps), over a batch of envs.
# It is asserted equal to gymnasium's, step for step, from gymnasium's own reset states.


# %%
class BatchCartPole:
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass, polemass_length = 1.1, 0.05
    theta_thr, x_thr, max_steps = 12 * 2 * math.pi / 360, 2.4, 500

    def __init__(self, n, gen):
        self.n, self.gen = n, gen
        self.state, self.t = torch.zeros(n, 4), torch.zeros(n, dtype=torch.long)
        self.reset_idx(torch.ones(n, dtype=torch.bool))

    def reset_idx(self, idx):
        self.state[idx] = torch.rand(int(idx.sum()), 4, generator=self.gen) * 0.1 - 0.05
        self.t[idx] = 0

    def physics(self, state, action):  # (n, 4), (n,) -> (n, 4)
        x, x_dot, th, th_dot = state.unbind(-1)
        force = torch.where(action == 1, self.force_mag, -self.force_mag)
        cos, sin = torch.cos(th), torch.sin(th)
        temp = (force + self.polemass_length * th_dot**2 * sin) / self.total_mass
        thacc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos**2 / self.total_mass)
        )
        xacc = temp - self.polemass_length * thacc * cos / self.total_mass
        return torch.stack(
            (
                x + self.tau * x_dot,
                x_dot + self.tau * xacc,
                th + self.tau * th_dot,
                th_dot + self.tau * thacc,
            ),
            -1,
        )

    def step(
        self, action
    ):  # reward 1 each step; returns next obs (reset where done), reward, term, trunc, final obs
        new = self.physics(self.state, action)
        self.t += 1
        term = (new[:, 0].abs() > self.x_thr) | (new[:, 2].abs() > self.theta_thr)
        trunc = (self.t >= self.max_steps) & ~term
        self.state = new.clone()
        self.reset_idx(term | trunc)
        return self.state.clone(), torch.ones(self.n), term, trunc, new


# Check against gymnasium: 20 episodes with random actions, and one long episode with a balancing controller
env = gym.make("CartPole-v1")
rng = np.random.default_rng(0)
max_err, n_steps, flags_ok = 0.0, 0, True
sim = BatchCartPole(1, torch.Generator().manual_seed(0))
for ep in range(21):
    obs, _ = env.reset(seed=ep)
    state = torch.tensor(env.unwrapped.state)[None].clone()
    sim.state, sim.t = state.clone(), torch.zeros(1, dtype=torch.long)
    while True:
        a = int(rng.integers(2)) if ep < 20 else int(state[0, 2] + 0.5 * state[0, 3] > 0)
        obs, r, term, trunc, _ = env.step(a)
        _, _, t_mine, tr_mine, new = sim.step(torch.tensor([a]))
        max_err = max(max_err, (new[0] - torch.tensor(env.unwrapped.state)).abs().max().item())
        flags_ok &= bool(t_mine[0]) == term and bool(tr_mine[0]) == trunc
        n_steps += 1
        state = new
        if term or trunc:
            break
print(
    f"{n_steps} steps compared; last episode length {sim.max_steps if trunc else 'short'}; "
    f"max state error {error_bound(max_err, 1e-12)}; flags equal: {flags_ok}"
)
assert max_err < 1e-10 and flags_ok and trunc

# %% [markdown]
# **TRPO on the batched CartPole, in pieces.** 16 seeds at once: each seed has its own policy (4-16-2) and value
# net (4-16-1), stored as batched weights `(seeds, ...)`. The per-seed Fisher matrices are then the blocks of one
# block-diagonal matrix, so one double backprop gives all 16 Fisher-vector products, and CG runs once per seed in
# one batched loop (one $\alpha$ per seed). A leading axis of $n$ rows is all the code assumes: the natural-gradient
# sweep below lays 4 step sizes x 8 seeds along it. `batched_fvp_emp` is the empirical-FIM product of D3,
# $J^\top\mathrm{diag}(c^2)Jv/N$, with $Jv$ by forward-mode autodiff (`torch.func.jvp`) and $J^\top$ by a backward pass.
# The batched functions below are the ones the experiment calls; the next check compares them with per-seed
# explicit Fisher matrices.

# %%
S, E, T, H, DELTA, UPDATES, DAMPING = 16, 16, 64, 16, 0.01, 30, 1e-3


def init(n_in, n_out, gen):  # batched weights: W1 (S, in, H), b1 (S, 1, H), W2 (S, H, out), b2 (S, 1, out)
    return [
        torch.randn(S, n_in, H, generator=gen) / math.sqrt(n_in),
        torch.zeros(S, 1, H),
        torch.randn(S, H, n_out, generator=gen) * 0.01,
        torch.zeros(S, 1, n_out),
    ]


def mlp(w, x):  # x (S, B, 4) -> (S, B, out)
    return torch.tanh(x @ w[0] + w[1]) @ w[2] + w[3]


def flat(gs):  # list of (S, ...) -> (S, P)
    return torch.cat([g.reshape(g.shape[0], -1) for g in gs], 1)


def add_flat(ws, v):  # weights + a flat step v (S, P), split back into the weight shapes
    out, off = [], 0
    for w in ws:
        n = math.prod(w.shape[1:])
        out.append(w + v[:, off : off + n].view(w.shape))
        off += n
    return out


def batched_fvp(
    gkl, pw, v, damping
):  # gkl = d mean-KL / d theta with a graph; (S, P) -> (S, P): (F + damping I) v
    return flat(torch.autograd.grad((gkl * v).sum(), pw, retain_graph=True)) + damping * v


def logit_gap(w, x):  # z0 - z1, the one "distribution parameter" mu of a 2-way softmax (App. C.1): (n, N)
    z = mlp(w, x)
    return z[..., 0] - z[..., 1]


def score_coef(lp_all, a):  # (n, N, 2), (n, N) -> (n, N)
    """d log pi(a) / d(z0 - z1) for a 2-way softmax: pi_1 if a = 0, -pi_0 if a = 1."""
    return torch.where(a == 0, lp_all[..., 1].exp(), -lp_all[..., 0].exp())


def batched_fvp_emp(pw, o_s, c2, v, damping):  # empirical FIM (D3): J^T diag(c^2) J v / N + damping v, (n, P)
    tangents = [t.view(w.shape) for t, w in zip(v.split([w[0].numel() for w in pw], 1), pw, strict=True)]
    Jv = torch.func.jvp(lambda *w: logit_gap(list(w), o_s), tuple(w.detach() for w in pw), tuple(tangents))[1]
    JtMJv = flat(torch.autograd.grad((logit_gap(pw, o_s) * (c2 * Jv)).sum(), pw))  # (n, N) -> (n, P)
    return JtMJv / o_s.shape[1] + damping * v


def batched_cg(f_Ax, b, iters=10, tol=1e-10):  # CG per row of b (S, P); a row with r.r < tol (modular_rl's
    x, r = torch.zeros_like(b), b.clone()  # residual_tol) stops, so no 0/0 noise
    p, rr = r.clone(), (r * r).sum(1, keepdim=True)
    for _ in range(iters):
        Ap = f_Ax(p)
        live = rr > tol
        alpha = torch.where(live, rr / (p * Ap).sum(1, keepdim=True), 0.0)
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = (r * r).sum(1, keepdim=True)
        p, rr = torch.where(live, r + rr_new / rr * p, p), torch.where(live, rr_new, rr)
    return x


# %% [markdown]
# **Check the batched code the experiment runs.** For a 2-action softmax,
# $\sum_a \pi_a \nabla\log\pi_a\nabla\log\pi_a^\top = \pi_0\pi_1\, d\,d^\top$ with $d = \nabla_\theta(z_0 - z_1)$,
# the gradient of the logit difference: the paper's $J^\top M J$ (App. C.1, eq. 57) with $\mu = z_0 - z_1$, $J = d^\top$,
# $M = \pi_0\pi_1$. $d$ is written out by hand for the 4-16-2 net (no autograd), giving each seed's explicit Fisher
# matrix; `batched_fvp` must equal $F_s v + \lambda v$ block by block, and `batched_cg` run to convergence must equal
# `torch.linalg.solve(F_s + λI, g_s)` for every seed. For the empirical FIM, random actions $a_n$ give
# $c_n$ (D3); `batched_fvp_emp` must equal $\frac1N\sum_n c_n^2 d_n d_n^\top v + \lambda v$, and on seed 0 the
# identity $\nabla\log\pi(a_n|s_n) = c_n d_n$ is checked against autograd, sample by sample.

# %%
gen_c = torch.Generator().manual_seed(5)
pw_c = [p.requires_grad_() for p in init(4, 2, gen_c)]
with torch.no_grad():
    for p in pw_c:
        p.add_(0.3 * torch.randn(p.shape, generator=gen_c))  # a non-uniform policy
o_c = torch.randn(S, 64, 4, generator=gen_c)  # (S, N, 4)
with torch.no_grad():
    lp_c = torch.log_softmax(mlp(pw_c, o_c), -1)  # (S, N, 2)
kl_c = (lp_c.exp() * (lp_c - torch.log_softmax(mlp(pw_c, o_c), -1))).sum(-1).mean(1)
gkl_c = flat(torch.autograd.grad(kl_c.sum(), pw_c, create_graph=True))  # (S, P)
n_pol = gkl_c.shape[1]
v_c, g_c = torch.randn(S, n_pol, generator=gen_c), torch.randn(S, n_pol, generator=gen_c)
Fv_c = batched_fvp(gkl_c, pw_c, v_c, DAMPING)
x_c = batched_cg(lambda u: batched_fvp(gkl_c, pw_c, u, DAMPING), g_c, iters=2000, tol=1e-26)
x_c10 = batched_cg(lambda u: batched_fvp(gkl_c, pw_c, u, DAMPING), g_c)  # the 10 iterations used in training
a_c = torch.randint(0, 2, (S, 64), generator=gen_c)  # (S, N) sampled actions, for the empirical FIM
c_c = score_coef(lp_c, a_c)  # (S, N); checked against autograd's score below
Fev_c = batched_fvp_emp(pw_c, o_c, c_c**2, v_c, DAMPING)
err_fvp_b, err_cg_b, err_emp, err_score, err_cg10, ranks = 0.0, 0.0, 0.0, 0.0, [], []
with torch.no_grad():
    for s in range(S):
        W1, b1, W2, b2 = (w[s] for w in pw_c)
        hid = torch.tanh(o_c[s] @ W1 + b1)  # (N, H)
        u = (1 - hid**2) * (W2[:, 0] - W2[:, 1])  # d(z0 - z1)/d(pre-activation), (N, H)
        d = torch.cat(
            [
                (o_c[s][:, :, None] * u[:, None, :]).reshape(-1, 4 * H),
                u,
                torch.stack((hid, -hid), -1).reshape(-1, 2 * H),
                torch.tensor([1.0, -1.0]).expand(len(u), 2),
            ],
            1,
        )  # (N, P), flat order W1, b1, W2, b2
        pr = lp_c[s].exp()
        F_s = (pr[:, 0] * pr[:, 1] * d.T) @ d / len(d)  # (P, P)
        err_fvp_b = max(err_fvp_b, (F_s @ v_c[s] + DAMPING * v_c[s] - Fv_c[s]).abs().max().item())
        exact = torch.linalg.solve(F_s + DAMPING * torch.eye(n_pol), g_c[s])
        err_cg_b = max(err_cg_b, ((x_c[s] - exact).norm() / exact.norm()).item())
        err_cg10.append(((x_c10[s] - exact).norm() / exact.norm()).item())
        ranks.append(torch.linalg.matrix_rank(F_s).item())
        F_emp = (c_c[s] ** 2 * d.T) @ d / len(d)  # (P, P): (1/N) sum_n c_n^2 d_n d_n^T
        err_emp = max(err_emp, (F_emp @ v_c[s] + DAMPING * v_c[s] - Fev_c[s]).abs().max().item())
        if s == 0:  # c_n d_n against autograd's score of each sampled action
            for n in range(64):
                with torch.enable_grad():
                    lp_n = torch.log_softmax(mlp(pw_c, o_c[:, n : n + 1]), -1)[0, 0, a_c[0, n]]
                    score = flat(torch.autograd.grad(lp_n, pw_c))[0]
                err_score = max(err_score, (score - c_c[0, n] * d[n]).abs().max().item())
print(
    f"{S} seeds x {n_pol} parameters: batched Fv vs explicit F_s v, max error {error_bound(err_fvp_b, 1e-12)}"
)
print("batched CG (to convergence) vs linalg.solve, worst relative error:", error_bound(err_cg_b, 1e-9))
print(
    "empirical FIM: batched_fvp_emp vs explicit, max error",
    error_bound(err_emp, 1e-12),
    "| c_n d_n vs autograd score on seed 0, max error",
    error_bound(err_score, 1e-12),
)
print(
    f"batched CG, 10 iterations: relative error {min(err_cg10):.2f}-{max(err_cg10):.2f} across seeds; "
    f"rank of F_s: {min(ranks)}-{max(ranks)} of {n_pol} (64 states)"
)
assert err_fvp_b < 1e-10 and err_cg_b < 1e-6 and err_emp < 1e-10 and err_score < 1e-10

# %% [markdown]
# **Rollout.** Per update and seed: 16 envs x 64 steps. GAE($\gamma = 0.99$, $\lambda = 0.97$) from
# `shared.returns.gae`; a time-limit truncation gets $\gamma V$ of its final state added to its reward. Actions are
# sampled by the inverse CDF from one uniform draw, so no kernel-dependent sampler is involved.


# %%
def rollout(pw, vw, env, obs, ep_len, gen):  # -> per-seed batches (n, T*E, ...), finished returns, next obs
    n = pw[0].shape[0]  # rows: seeds (x step sizes in the natural-gradient sweep)
    O, Aa, Rw, D, finished = [], [], [], [], [[] for _ in range(n)]
    with torch.no_grad():
        for _ in range(T):
            p0 = torch.softmax(mlp(pw, obs.view(n, E, 4)), -1).view(-1, 2)[:, 0]  # P(action 0)
            a = (torch.rand(n * E, generator=gen) >= p0).long()
            nxt, r, term, trunc, final = env.step(a)
            r = r + trunc * 0.99 * mlp(vw, final.view(n, E, 4)).view(-1)  # bootstrap a time limit
            O.append(obs), Aa.append(a), Rw.append(r), D.append(term | trunc)
            ep_len += 1
            for i in torch.nonzero(term | trunc).flatten().tolist():
                finished[i // E].append(ep_len[i].item())
            ep_len[term | trunc] = 0
            obs = nxt
        O, Aa, Rw, D = torch.stack(O), torch.stack(Aa), torch.stack(Rw), torch.stack(D)  # (T, n*E, ...)
        to_s = lambda x: x.view(T, n, E, *x.shape[2:]).transpose(0, 1).reshape(n, T * E, *x.shape[2:])  # noqa: E731
        o_s = to_s(O)  # (n, N, 4), N = T*E
        values = mlp(vw, o_s).view(n, T, E).transpose(0, 1).reshape(T, n * E)
        adv, ret = gae(Rw, values, D.double(), mlp(vw, obs.view(n, E, 4)).view(-1), gamma=0.99, lam=0.97)
    adv_s = to_s(adv)
    adv_s = (adv_s - adv_s.mean(1, keepdim=True)) / (adv_s.std(1, keepdim=True) + 1e-8)  # see D5
    return o_s, to_s(Aa), adv_s, to_s(ret), finished, obs


# %% [markdown]
# **One policy update** for all rows: the surrogate of §5 eq. 14 with $q = \pi_{\text{old}}$ (see D5), $g$, CG on
# `batched_fvp`, $\beta = \sqrt{2\delta/s^\top(F+\lambda_d I)s}$ (damped, as in the reference implementations),
# then the line search of Appendix C, with `modular_rl`'s schedule (D4): try 10 step fractions, 1 down to $0.5^9$,
# and accept the first step where the surrogate improved **and** $\bar D_{KL} \le \delta$. If none passes, the
# policy is left unchanged. Arms, all at the same samples per update:
#
# - `TRPO`.
# - `no line search`: always the full step $\beta s$, even when the surrogate drops. This is not `modular_rl`'s
#   Armijo rule, but it is the KL that any KL-blind test accepts whenever the full step passes it.
# - `plain gradient`: $s = g$, scaled to the same quadratic KL, same line search (§7, eq. 18).
# - `natural, fixed step`: the paper's "Natural Gradient" of Fig. 4, $\beta F^{-1}g$ with one fixed $\beta$ for every
#   seed and update (the fixed Lagrange multiplier of D4) and no line search; $\beta$ is swept below.
# - `empirical FIM`: as TRPO, but CG and $\beta$ use the empirical Fisher `batched_fvp_emp` (D3). The line search
#   still tests the true KL.
# - `max KL`: as TRPO, but the line search tests the largest per-state KL of the batch instead of the mean, the
#   constraint of eq. 11. The paper does not say how it solved eq. 11 on its cart-pole; this arm keeps TRPO's
#   direction and $\beta$ and only makes the acceptance test stricter.
#
# `sub` takes the Fisher on every `sub`-th sample (App. C.1's subsampling, used only in the damping ablation).


# %%
LINE_SEARCH_ARMS = ("TRPO", "plain gradient", "empirical FIM", "max KL")  # the rest take the step as it is


def policy_update(pw, o_s, a_s, adv_s, arm="TRPO", damping=DAMPING, beta_fixed=None, sub=1, beta_damped=True):
    n = o_s.shape[0]  # rows
    with torch.no_grad():
        lp_old_all = torch.log_softmax(mlp(pw, o_s), -1)  # (n, N, 2)
    lp_old = lp_old_all.gather(2, a_s[..., None]).squeeze(2)  # (n, N)

    def surr_kl(w):  # per row: importance-sampled surrogate (n,), and KL(old || new) per state (n, N)
        lp_all = torch.log_softmax(mlp(w, o_s), -1)
        surr = (torch.exp(lp_all.gather(2, a_s[..., None]).squeeze(2) - lp_old) * adv_s).mean(1)
        return surr, (lp_old_all.exp() * (lp_old_all - lp_all)).sum(-1)

    surr0, _ = surr_kl(pw)
    g = flat(torch.autograd.grad(surr0.sum(), pw))  # (n, P)
    if arm == "empirical FIM":
        c = score_coef(lp_old_all, a_s)  # (n, N), D3

        def Fv(v):
            return batched_fvp_emp(pw, o_s, c**2, v, damping)

    else:
        lp_sub = torch.log_softmax(mlp(pw, o_s[:, ::sub]), -1)  # Fisher on every sub-th sample
        kl_sub = (lp_old_all[:, ::sub].exp() * (lp_old_all[:, ::sub] - lp_sub)).sum(-1).mean(1)
        gkl = flat(torch.autograd.grad(kl_sub.sum(), pw, create_graph=True))  # zero at theta_old, has a graph

        def Fv(v):
            return batched_fvp(gkl, pw, v, damping)

    s = g if arm == "plain gradient" else batched_cg(Fv, g)
    sFs = (s * Fv(s)).sum(1, keepdim=True) - (0 if beta_damped else damping * (s * s).sum(1, keepdim=True))
    beta = (
        torch.sqrt(2 * DELTA / sFs) if beta_fixed is None else beta_fixed
    )  # (n, 1); sFs = s^T(F + damping I)s
    full = beta * s
    line_search = arm in LINE_SEARCH_ARMS
    chosen, n_back = torch.zeros_like(full), torch.full((n,), 10)
    accepted = torch.zeros(n, dtype=torch.bool)
    with torch.no_grad():
        for k in range(10 if line_search else 1):
            step = full * 0.5**k
            s_new, kl_new = surr_kl(add_flat(pw, step))
            if k == 0:
                full_kl = kl_new.mean(1)  # true mean KL of the full step
            kl_test = kl_new.amax(1) if arm == "max KL" else kl_new.mean(1)  # eq. 11 or eq. 12
            ok = (s_new > surr0) & (kl_test <= DELTA) if line_search else torch.ones(n, dtype=torch.bool)
            take = ok & ~accepted
            chosen[take], n_back[take] = step[take], k
            accepted |= ok
            if accepted.all():
                break
    return chosen, {"beta": beta, "full_kl": full_kl, "backtracks": n_back}


# %% [markdown]
# **Training loop.** The value net takes 20 Adam steps per update on the $\lambda$-returns (our choice). The
# logged KL is recomputed after the update with `torch.distributions.kl_divergence` on `Categorical` policies,
# independently of `surr_kl` that the line search used: its mean over the batch (`kl`, the quantity TRPO
# constrains) and its largest per-state value (`kl_state_max`). `kl_next` is the same mean KL between the policy
# before and after update $u$, measured on the states of the next batch, $u + 1$: fresh states, never seen by the
# line search, sampled by the *new* policy from where the envs had got to. `betas` turns the natural-gradient arm
# into a sweep: the first `n_seeds` initial nets are repeated once per $\beta$, so every step size starts from the
# same policies (those of the first `n_seeds` TRPO seeds).

# %%
from torch.distributions import Categorical, kl_divergence


def train(arm="TRPO", seed=0, damping=DAMPING, betas=None, n_seeds=S):
    gen = torch.Generator().manual_seed(seed)
    reps = 1 if betas is None else len(betas)
    pw = [p[:n_seeds].repeat(reps, 1, 1).requires_grad_() for p in init(4, 2, gen)]  # (reps * n_seeds, ...)
    vw = [p[:n_seeds].repeat(reps, 1, 1).requires_grad_() for p in init(4, 1, gen)]
    n = reps * n_seeds
    beta_fixed = None if betas is None else torch.tensor(betas).repeat_interleave(n_seeds)[:, None]  # (n, 1)
    vopt = torch.optim.Adam(vw, lr=3e-3)
    env = BatchCartPole(n * E, gen)
    obs, ep_len = env.state.clone(), torch.zeros(n * E)
    log = {k: [] for k in ("ret", "kl", "kl_state_max", "kl_next", "full_kl", "backtracks", "beta")}
    prev = None
    for _ in range(UPDATES):
        o_s, a_s, adv_s, ret_s, finished, obs = rollout(pw, vw, env, obs, ep_len, gen)
        log["ret"].append([float(np.mean(f)) if f else float("nan") for f in finished])
        with torch.no_grad():
            old = Categorical(logits=mlp(pw, o_s))
            if prev is not None:  # the previous update's KL on this fresh batch
                log["kl_next"].append(kl_divergence(Categorical(logits=mlp(prev, o_s)), old).mean(1).tolist())
            prev = [w.detach().clone() for w in pw]
        step, info = policy_update(pw, o_s, a_s, adv_s, arm, damping, beta_fixed)
        with torch.no_grad():
            for w, w_new in zip(pw, add_flat(pw, step), strict=True):
                w.copy_(w_new)
            kl_s = kl_divergence(old, Categorical(logits=mlp(pw, o_s)))  # (n, N)
            log["kl"].append(kl_s.mean(1).tolist())
            log["kl_state_max"].append(kl_s.amax(1).tolist())
        log["full_kl"].append(info["full_kl"].tolist())
        log["backtracks"].append(info["backtracks"].tolist())
        log["beta"].append(info["beta"].squeeze(1).tolist())
        for _ in range(20):  # value regression on the lambda-returns
            vopt.zero_grad()
            ((mlp(vw, o_s).squeeze(-1) - ret_s) ** 2).mean().backward()
            vopt.step()
    out = {k: np.array(v) for k, v in log.items()}  # each (updates, n); kl_next has UPDATES - 1 rows
    out["last"] = (pw, o_s, a_s, adv_s)  # the final policy and batch, for the damping ablation
    return out


# %% [markdown]
# **One concrete update, step by step.** Update 0 of the recorded TRPO run (`train("TRPO", seed=0)` draws the
# same initial weights and rollout), for the first of the 16 seeds. The cell recomputes $g$, the CG residual
# $\|g - (F+\lambda_d I)x_k\|$ after each of the 10 iterations (via `batched_cg` run for $k$ iterations), $\beta$
# damped and undamped, the full step's true KL, and the surrogate improvement and KL of every step fraction the
# line search tries. Its accepted step must equal the one `policy_update` returns. Values are rounded to 3
# significant digits; the cell after it prints only facts that hold under any CPU kernel. CG stops once
# $r^\top r < 10^{-10}$ (`modular_rl`'s `residual_tol`), so a residual can repeat in the last iterations. In the
# recorded output the full step lands just above $\delta$ (1.03 $\delta$), so the line search takes one halving.


# %% tags=["nbval-ignore-output"]
def sig3(x):
    return f"{float(x):.3g}"


gen_w = torch.Generator().manual_seed(0)  # the same draws as train("TRPO", seed=0) up to its first update
pw_w = [p.requires_grad_() for p in init(4, 2, gen_w)]
vw_w = [p.requires_grad_() for p in init(4, 1, gen_w)]
env_w = BatchCartPole(S * E, gen_w)
o_w, a_w, adv_w = rollout(pw_w, vw_w, env_w, env_w.state.clone(), torch.zeros(S * E), gen_w)[:3]
with torch.no_grad():
    lpo_all = torch.log_softmax(mlp(pw_w, o_w), -1)  # (S, N, 2)
lpo = lpo_all.gather(2, a_w[..., None]).squeeze(2)


def surr_kl_w(w):  # surrogate and mean KL(old || new) per seed, written again outside policy_update
    lp = torch.log_softmax(mlp(w, o_w), -1)
    ratio = torch.exp(lp.gather(2, a_w[..., None]).squeeze(2) - lpo)
    return (ratio * adv_w).mean(1), (lpo_all.exp() * (lpo_all - lp)).sum(-1).mean(1)


surr0_w = surr_kl_w(pw_w)[0]
g_w = flat(torch.autograd.grad(surr0_w.sum(), pw_w))
gkl_w = flat(torch.autograd.grad(surr_kl_w(pw_w)[1].sum(), pw_w, create_graph=True))


def Fv_w(v):
    return batched_fvp(gkl_w, pw_w, v, DAMPING)


res = [(g_w - Fv_w(batched_cg(Fv_w, g_w, iters=k)))[0].norm().item() for k in range(11)]
s_w = batched_cg(Fv_w, g_w)
sFs_d = (s_w * Fv_w(s_w)).sum(1)
sFs_u = sFs_d - DAMPING * (s_w * s_w).sum(1)
beta_d, beta_u = torch.sqrt(2 * DELTA / sFs_d), torch.sqrt(2 * DELTA / sFs_u)
print(f"seed 0, update 0: {n_pol} parameters, |g| = {sig3(g_w[0].norm())}")
print("CG residual |g - (F + damping I) x_k|, k = 0..10:", " ".join(sig3(r) for r in res))
print(f"beta damped {sig3(beta_d[0])}, undamped {sig3(beta_u[0])} (the code uses the damped one)")
full_w = beta_d[:, None] * s_w
rows, acc = [], None
with torch.no_grad():
    for k in range(10):
        sn, kn = surr_kl_w(add_flat(pw_w, full_w * 0.5**k))
        ok = bool(sn[0] > surr0_w[0]) and bool(kn[0] <= DELTA)
        rows.append((k, (sn - surr0_w)[0].item(), kn[0].item()))
        if ok and acc is None:
            acc = k
        if acc is not None:
            break
print(f"full-step KL / delta = {sig3(rows[0][2] / DELTA)}")
print(f"{'fraction':>8s} {'surrogate gain':>14s} {'KL':>9s} {'KL/delta':>8s}")
for k, dL, kl in rows:
    print(
        f"{0.5**k:8.4g} {sig3(dL):>14s} {sig3(kl):>9s} {sig3(kl / DELTA):>8s}"
        + ("  <- accepted" * (k == acc))
    )
chosen_w, info_w = policy_update(pw_w, o_w, a_w, adv_w)
gap_w = (chosen_w[0] - full_w[0] * 0.5**acc).norm() / full_w[0].norm()
print("policy_update's accepted step vs this one, relative difference:", error_bound(gap_w.item(), 1e-10))

# %%
print(
    "walkthrough: a step was accepted:",
    acc is not None,
    "| accepted KL <= delta:",
    rows[-1][2] <= DELTA,
    "| accepted surrogate gain > 0:",
    rows[-1][1] > 0,
    "| same step and halvings as policy_update:",
    bool(gap_w < 1e-10) and int(info_w["backtracks"][0]) == acc,
)
assert acc is not None and rows[-1][2] <= DELTA and gap_w < 1e-10 and int(info_w["backtracks"][0]) == acc

# %% [markdown]
# **The runs.** Five arms at 16 seeds, then the natural-gradient sweep. TRPO's own $\beta$ is mostly between about
# 0.4 and 1.1 (printed below), so the sweep takes $\beta \in \{1/9, 1/3, 1, 3\}$, factors of 3 as in §8.1, with 8
# seeds each; the best value "according to the final performance" is then compared with TRPO. The sweep spends 4
# times the samples of one arm on tuning; TRPO uses $\delta = 0.01$ untuned, the paper's value. Each arm takes a few
# seconds of CPU.

# %% tags=["nbval-ignore-output"]
import time

ARMS = ("TRPO", "no line search", "plain gradient", "empirical FIM", "max KL")
BETAS, NAT_SEEDS = (1 / 9, 1 / 3, 1.0, 3.0), 8
c0 = time.process_time()
runs = {}
for name in ARMS:
    runs[name] = train(name)
    print(f"{name}: cpu {time.process_time() - c0:.1f} s")
sweep = train("natural, fixed step", betas=BETAS, n_seeds=NAT_SEEDS)  # rows: beta-major, 8 seeds per beta
print(f"natural-gradient sweep: cpu {time.process_time() - c0:.1f} s")
nat = {
    b: {k: v[:, i * NAT_SEEDS : (i + 1) * NAT_SEEDS] for k, v in sweep.items() if k != "last"}
    for i, b in enumerate(BETAS)
}
print(
    "TRPO's beta, 5/50/95% quantiles over seeds and updates:",
    np.round(np.quantile(runs["TRPO"]["beta"], [0.05, 0.5, 0.95]), 2),
)

# %% [markdown]
# **Results.** Per seed: the final return (mean of the last 5 updates), the mean return over all 30 updates (the
# area under the learning curve, which rewards fast learning), and the number of *collapses*, updates whose return
# falls below half the seed's best return so far. That last count tests Appendix C's "catastrophic degradation"
# directly; it also counts sampling noise (late in training an update finishes only a few long episodes), so the
# count of the TRPO arm is the noise floor to compare with. The KL table gives, per arm: the mean KL on the batch
# (the constrained quantity: its largest value and the share of updates above $\delta$); the median over updates of
# the largest per-state KL, in units of $\delta$; the held-out `kl_next` in units of $\delta$ (median, max, share
# above 1); the mean number of halvings and the share of updates where no step passed; and the median KL of the
# full step $\beta s$.


# %% tags=["nbval-ignore-output"]
# Exact returns depend on the CPU's float64 round-off (see the note below), so this cell's output is not checked.
def per_seed(lg):  # -> final return, mean over all updates, number of collapses; each (seeds,)
    r = lg["ret"]  # (updates, seeds); NaN where no episode finished
    best = np.maximum.accumulate(np.nan_to_num(r, nan=-np.inf), 0)
    best_before = np.vstack([np.full(r.shape[1], -np.inf), best[:-1]])
    return np.nanmean(r[-5:], 0), np.nanmean(r, 0), (r < 0.5 * best_before).sum(0)


def ms(x):  # mean ± s.e.
    return f"{x.mean():6.1f} ± {x.std(ddof=1) / math.sqrt(len(x)):4.1f}"


b_best = max(
    BETAS, key=lambda b: per_seed(nat[b])[0].mean()
)  # "best value according to the final performance"
arms = {**runs, f"natural, beta={b_best:.3g}": nat[b_best]}
stats = {name: per_seed(lg) for name, lg in arms.items()}
print(
    f"{'arm':20s} {'seeds':>5s} {'final return':>14s} {'std (min-max)':>20s} {'all-update mean':>15s} {'collapses':>12s}"
)
for name, (fin, auc, col) in stats.items():
    print(
        f"{name:20s} {len(fin):5d} {ms(fin):>14s} {fin.std(ddof=1):6.1f} ({fin.min():5.1f}-{fin.max():5.1f}) "
        f"{ms(auc):>15s} {col.sum():4d} ({(col > 0).sum():2d} seeds)"
    )
print(
    f"\n{'arm':20s} {'batch KL: max':>13s} {'> delta':>8s} {'state max/d':>11s} | {'next-batch KL/delta: med':>24s} "
    f"{'max':>5s} {'> delta':>7s} | {'halvings':>8s} {'no step':>7s} {'full step/d':>11s}"
)
for name, lg in arms.items():
    kn = lg["kl_next"] / DELTA
    print(
        f"{name:20s} {lg['kl'].max():13.3f} {(lg['kl'] > DELTA).mean():8.0%} {np.median(lg['kl_state_max']) / DELTA:11.1f} | "
        f"{np.median(kn):24.2f} {kn.max():5.1f} {(kn > 1).mean():7.0%} | {lg['backtracks'].mean():8.2f} "
        f"{(lg['backtracks'] == 10).mean():7.1%} {np.median(lg['full_kl']) / DELTA:11.2f}"
    )
kl_mk = runs["max KL"]["kl"] / DELTA
print(
    f"max KL arm, batch KL / delta over seed-updates: median {np.median(kl_mk):.3f}, 90th percentile "
    f"{np.quantile(kl_mk, 0.9):.3f}, max {kl_mk.max():.3f}"
)
print(f"\nnatural-gradient sweep, {NAT_SEEDS} seeds per beta:")
for b in BETAS:
    fin, auc, col = per_seed(nat[b])
    print(
        f"  beta {b:5.3f}: final {ms(fin)}, all-update mean {ms(auc)}, batch KL > delta on "
        f"{(nat[b]['kl'] > DELTA).mean():4.0%} of updates (max {nat[b]['kl'].max():.3f}), collapses {col.sum()}"
    )
print("\nTRPO minus each arm (s.e.; Welch):")
for name in list(arms)[1:]:
    d_fin, d_auc = (stats["TRPO"][i].mean() - stats[name][i].mean() for i in (0, 1))
    se_fin, se_auc = (
        math.sqrt(stats["TRPO"][i].var(ddof=1) / S + stats[name][i].var(ddof=1) / len(stats[name][i]))
        for i in (0, 1)
    )
    print(f"  {name:20s} final {d_fin:+6.1f} ({se_fin:4.1f})   all-update mean {d_auc:+6.1f} ({se_auc:4.1f})")
col_d = stats["no line search"][2] - stats["TRPO"][2]
print(
    f"collapses, no line search minus TRPO, per seed: {col_d.mean():+.2f} (s.e. {col_d.std(ddof=1) / math.sqrt(S):.2f})"
)
lead = np.nanmean(runs["no line search"]["ret"], 1) > np.nanmean(runs["TRPO"]["ret"], 1)
print("updates where the no-line-search mean return is above TRPO's:", np.flatnonzero(lead).tolist())

fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
for name, lg in arms.items():
    m = np.nanmean(lg["ret"], 1)
    se = np.nanstd(lg["ret"], 1, ddof=1) / math.sqrt(lg["ret"].shape[1])
    ax[0].plot(m, label=name)
    ax[0].fill_between(range(UPDATES), m - se, m + se, alpha=0.15)
    ax[1].plot(lg["kl"].max(1), label=name)
# kl_next row u: update u measured on batch u + 1, so it is drawn at x = u
ax[1].plot(range(UPDATES - 1), runs["TRPO"]["kl_next"].max(1), "k:", label="TRPO, next-batch states")
ax[1].axhline(DELTA, color="k", ls="--", label="delta")
ax[1].set_yscale("log")
fin_b = [per_seed(nat[b])[0] for b in BETAS]
ax[2].errorbar(
    BETAS,
    [f.mean() for f in fin_b],
    [f.std(ddof=1) / math.sqrt(NAT_SEEDS) for f in fin_b],
    marker="o",
    capsize=3,
    label=f"natural, fixed beta ({NAT_SEEDS} seeds)",
)
ax[2].axhspan(
    *(stats["TRPO"][0].mean() + np.array([-1, 1]) * stats["TRPO"][0].std(ddof=1) / math.sqrt(S)),
    color="C0",
    alpha=0.3,
    label="TRPO, mean ± s.e.",
)
ax[2].set_xscale("log")
ax[0].set(xlabel="update", ylabel="episode return (mean ± s.e. over seeds)", title="learning curves")
ax[1].set(
    xlabel="update", ylabel="mean KL(old || new), max over seeds", title="KL of each update on its batch"
)
ax[2].set(xlabel="fixed step beta", ylabel="final return (mean ± s.e.)", title="natural-gradient step sweep")
for a in ax:
    a.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Damping and Fisher subsampling on the CartPole policy itself.** On each TRPO seed's final policy and batch:
# the true KL of the full step $\beta s$ divided by $\delta$, for three dampings, with the Fisher from the whole
# batch and from every 10th sample (App. C.1: "we can compute it on 10% of the data"; `baselines` uses `[::5]` for
# the Fisher-vector products only; sb3-contrib's `sub_sampling_factor` subsamples the whole batch, gradient and
# line search included), and, on the whole batch, with $\beta$ from the undamped $s^\top F s$. The damped row mixes
# two effects of damping: better conditioning of $s$ and the $\lambda_d\|s\|^2$ term in $\beta$; the undamped row
# shows the first alone. This is the quantity that decides whether the no-line-search arm breaks $\delta$.

# %% tags=["nbval-ignore-output"]
pw_f, o_f, a_f, adv_f = runs["TRPO"]["last"]
print(f"{'Fisher from':22s}" + "".join(f"{f'damping {lam:g}':>20s}" for lam in (1e-3, 1e-2, 1e-1)))
for label, sub, damped in (
    ("all, beta damped", 1, True),
    ("all, beta undamped", 1, False),
    ("10th, beta damped", 10, True),
):
    cells = []
    for lam in (1e-3, 1e-2, 1e-1):
        info = policy_update(pw_f, o_f, a_f, adv_f, "no line search", lam, sub=sub, beta_damped=damped)[1]
        r = info["full_kl"].numpy() / DELTA
        cells.append(f"{np.median(r):6.2f} ({r.min():.2f}-{r.max():.2f})")
    print(f"{label:22s}" + "".join(f"{c:>20s}" for c in cells))
print("(median over seeds, min-max in brackets)")

# %% [markdown]
# ### What a healthy run prints
#
# One run on this course's build machine (AVX-512 kernels; 30 updates of 1,024 steps per seed; final return = mean
# of the last 5 updates; mean ± standard error over seeds; "next-batch" = the update's KL on the next batch's states):
#
# | arm | seeds | final return | mean over all updates | collapses (seeds) | batch KL $> \delta$ | next-batch KL $> \delta$ | halvings |
# |---|---|---|---|---|---|---|---|
# | TRPO | 16 | 244.2 ± 19.2 | 166.6 ± 9.3 | 18 (9) | 0% | 10% | 0.77 |
# | no line search | 16 | 233.5 ± 20.3 | 160.4 ± 9.9 | 44 (11) | 71% | 69% | 0 |
# | plain gradient (same KL step, same line search) | 16 | 203.2 ± 9.3 | 131.3 ± 5.4 | 18 (7) | 0% | 11% | 0.52 |
# | empirical FIM | 16 | 264.9 ± 25.3 | 173.3 ± 12.5 | 9 (6) | 0% | 11% | 0.72 |
# | max KL | 16 | 177.1 ± 9.5 | 95.2 ± 2.9 | 2 (2) | 0% | 0% | 2.60 |
# | natural, fixed $\beta = 1/3$ (best of the sweep) | 8 | 277.4 ± 36.5 | 164.4 ± 13.3 | 2 (1) | 5% | 6% | 0 |
#
# The sweep, $\beta$ = 1/9, 1/3, 1, 3 (8 seeds each): final return 163.2 ± 6.8, 277.4 ± 36.5, 169.5 ± 48.4,
# 102.8 ± 19.2; batch KL $> \delta$ on 0%, 5%, 94% and 100% of updates; 2, 2, 44 and 113 collapses.
#
# *The trust region.* TRPO's KL on its batch, recomputed with `torch.distributions`, is at most $\delta$ on every
# update (asserted below); without the line search the full step breaks it on 71% of updates. The full TRPO step
# overshoots $\delta$ (median 1.39 x), hence 0.77 halvings per update. On the next batch's states TRPO's KL has
# median 0.38 $\delta$, but exceeds $\delta$ on 10% of updates, up to 2.9 $\delta$: the constraint is enforced on
# the sampled states only. Two effects mix in the next-batch number: sampling error, and the shift to states drawn by
# $\pi_{\rm new}$ rather than $\rho_{\rm old}$. Max KL keeps even the next-batch KL at most 0.34 $\delta$, at the price of small
# steps: a batch KL of at most 0.003 and 2.6 halvings per update (it always found an acceptable step within the
# 10 tries).
#
# *The line search (App. C's claim).* Without it there are more collapses, 44 against 18 (per seed +1.62, s.e. 0.93,
# suggestive but not resolved), and the final return is not resolved (TRPO +10.7, s.e. 28.0). The no-line-search
# arm's mean return is above TRPO's on every update from 1 to 8 (1 to 12 with the portable kernels) and below it on most
# later ones (17 of the last 21; 15 with the portable kernels), and its mean over all updates is not resolved from
# TRPO's (TRPO +6.3, s.e. 13.6; portable kernels +0.6, s.e. 14.9). Steps that are too large do cause the degradation
# App. C describes: the natural gradient at $\beta = 1$ and 3 collapses 44 and 113 times in 8 seeds.
#
# *The plain gradient.* At the same quadratic KL and line search, TRPO learns faster: mean over all updates +35.3
# (s.e. 10.8). The final-return gap, +41.1 (s.e. 21.4, 95% CI -0.8 to +83.0), is not resolved at 16 seeds. The
# paper runs no plain-gradient arm (§7 derives it as the $\ell_2$-constrained special case, eq. 18).
#
# *The natural gradient, tuned as in §8.1.* The best step by final performance is $\beta = 1/3$. TRPO minus it:
# final -33.2 (s.e. 41.2), mean over all updates +2.3 (s.e. 16.2). No difference is resolved, which agrees with the
# paper's cart-pole panel ("performed well on the two easier problems"). Two caveats: $\beta$ was picked on these
# same runs, which flatters it; and the sweep spent 4 times the samples of one TRPO run. Which $\beta$ wins is itself
# within the noise: with the portable kernels (below) the same code picks $\beta = 1$ (266.3 ± 50.7, against
# 239.2 ± 21.2 for 1/3), and TRPO minus the winner is -23.6 (s.e. 54.5), again unresolved. The toy cannot test the
# hopper and walker failures.
#
# *The paper's cart-pole ablations.* The empirical FIM is within the spread of TRPO (TRPO -6.7, s.e. 15.6, on the mean
# over all updates), as §6 says. Max KL reproduces the direction of §8.1 ("learned somewhat more slowly") but not its
# conclusion ("a similar effect"; §4: "similar empirical performance"). Its mean return over all updates is 95.2 ± 2.9
# against TRPO's 166.6 ± 9.3, 43% lower (TRPO +71.4, s.e. 9.7), and its final return 177.1 ± 9.5 against 244.2 ± 19.2,
# 27% lower (+67.2, s.e. 21.4); with the portable kernels the gaps are 42% and 29%. That is not "somewhat".
#
# The KL table shows why. At TRPO's accepted steps the largest per-state KL is a median 8.4 $\delta$, while the batch
# mean is at most $\delta$ on every update: on at least half of the updates the maximum over the 1,024 sampled states
# is more than 8 times the mean. Holding that maximum at $\delta$ keeps Max KL's batch KL at most 0.003 (about $\delta/3$), and typically far
# less (median about $\delta/60$ over seed-updates, printed with the results table), at 2.6 halvings per update. The coarse halving is not the main cause: Max KL's accepted steps have a median per-state
# maximum of 0.5 $\delta$, so even an exact line search could raise it only to $\delta$, a step about $\sqrt 2$ longer
# at the median (the KL is about quadratic in the step), while TRPO's steps reach 8.4 $\delta$ (an argument from the
# table; a finer line search is not run here). Three caveats. This arm keeps TRPO's mean-KL direction and $\beta$ and
# only makes the acceptance test stricter; a solver built for eq. 11 might do better. The paper's cart-pole policy is
# linear with 6 parameters, where the per-state KLs are plausibly more uniform (a conjecture, not tested here). And
# the paper's five-run comparison gives no spread, so its "somewhat" cannot be checked further.
#
# *Damping* (damping cell, final policies, damped $\beta$): the median full-step overshoot falls from 1.38 to 0.74 to
# 0.62 as the damping goes from $10^{-3}$ to $10^{-2}$ to $10^{-1}$. With $\beta$ from the undamped $s^\top F s$ it is
# 1.62, 1.08, 0.98: better conditioning removes most of the overshoot, and the rest of the drop is the
# $\lambda_d\|s\|^2$ term in $\beta$. A Fisher from 10% of the batch raises it to 4.28 at $10^{-3}$.
#
# **Why the return numbers are not checked by CI.** The arms that use CG are sensitive to float64 round-off: with
# `ATEN_CPU_CAPABILITY=default` (portable kernels, which sum in a different order) the same code gives different
# returns. CG with damping $10^{-3}$ solves an ill-conditioned system, so last-bit differences grow from update to
# update until a sampled action flips. The conclusions above do not depend on it: with the portable kernels, one
# run gives TRPO 242.7 ± 20.1 (final) and 163.4 ± 10.5 (mean over all updates); TRPO minus the plain gradient
# +32.1 (s.e. 11.8) on the mean over all updates; minus Max KL +69.2 (s.e. 10.7); minus the empirical FIM +6.6
# (s.e. 12.9); collapses 52 without the line search against 16 with it. The plain-gradient arm has no CG and gives
# the same numbers under both kernels. The checked cell below prints only facts that hold under both kernels.

# %%
print(
    "healthy run: batch KL <= delta on every update of the line-search arms:",
    all(runs[a]["kl"].max() <= DELTA for a in LINE_SEARCH_ARMS),
    "| max KL arm: every per-state KL <= delta:",
    bool(runs["max KL"]["kl_state_max"].max() <= DELTA),
    "| TRPO final mean return > 100:",
    bool(per_seed(runs["TRPO"])[0].mean() > 100),
)
print(
    "no line search and natural beta = 3 break delta on some update:",
    bool((runs["no line search"]["kl"] > DELTA).any() and (nat[3.0]["kl"] > DELTA).any()),
    "| TRPO's KL on next-batch states exceeds delta on some update:",
    bool((runs["TRPO"]["kl_next"] > DELTA).any()),
)
assert all(runs[a]["kl"].max() <= DELTA for a in LINE_SEARCH_ARMS)
assert runs["max KL"]["kl_state_max"].max() <= DELTA

# %% [markdown]
# ### What the paper does that this toy does not
#
# - **§5 estimators.** The paper estimates $Q_{\text{old}}$ by Monte Carlo, with no learned value function.
#   *Single path* (§5.1): run $\pi_{\text{old}}$, and use the discounted sum of future rewards along each
#   trajectory as $\hat Q(s_t, a_t)$, with $q = \pi_{\text{old}}$ in eq. 14 (this notebook's estimator, with GAE in
#   place of the Monte Carlo return). *Vine* (§5.2): from the trajectories, pick a "rollout set" of states; from
#   each, try several actions and roll out from each action, with common random numbers to lower the variance of
#   the differences. With every action tried, eq. 15 sums $\pi_\theta(a_k|s_n)\hat Q(s_n, a_k)$; with sampled
#   actions, eq. 16 is the self-normalised importance-sampling estimator, which "removes the need to use a
#   baseline". On continuous tasks $q = \pi_{\text{old}}$ "works well", on Atari the uniform $q$ "can sometimes
#   achieve better exploration". The vine gives lower-variance advantages but needs the simulator to be reset to
#   arbitrary states.
# - **App. C.1 practical details.** $k = 10$ CG iterations, as here. Fisher-vector products "on 10% of the data", so
#   that "the total cost of Hessian-vector products will be about the same as computing the gradient"; the runs
#   above use the whole batch. The damping cell shows that a Fisher from 10% of the batch, with damping $10^{-3}$,
#   makes the full step overshoot far more; that is one reason libraries damp more (`baselines`
#   `cg_damping=1e-2`, sb3-contrib `cg_damping=0.1`).
# - **§8 experiments.** MuJoCo swimmer, hopper and walker (policies of 364, 4,806 and 8,206 parameters, 50K to 1M
#   simulation steps per iteration, Table 2) and the 6-parameter cart-pole; 7 Atari games (Beam Rider, Breakout,
#   Enduro, Pong, Q*bert, Seaquest, Space Invaders) from raw screen images with a 33,500-parameter convolutional
#   policy; "the 500 iterations of our algorithm took about 30 hours" on a 16-core computer (§8.2). Fig. 4
#   compares single path, vine, "Natural Gradient" (fixed step, D4), "Max KL" (cart-pole only), "Empirical FIM"
#   (cart-pole and swimmer), CEM, CMA and reward-weighted regression; its results and seed counts are listed at the
#   start of the Reproduction.
#   Table 1 compares the Atari scores with random play, a human, deep Q-learning and UCC-I: for example Pong 20.9
#   (single path and vine) against 20.0 for deep Q-learning, Q*bert 7732.5 (vine) against 1952, and Breakout 10.8
#   (single path) and 34.2 (vine) against 168.0. "Our method only outperformed the prior methods on some of the
#   games" (§8.2). The toy tests none of this directly: its CartPole is closest to Fig. 4's cart-pole panel.
#
# **Lineage.** Conservative policy iteration (Kakade and Langford 2002) gave the mixture bound. The natural policy
# gradient (Kakade, NIPS 14, 2001; the paper cites it as Kakade 2002) and natural actor-critic (Peters and Schaal
# 2008) gave the $F^{-1}g$ direction with a fixed step. REPS (Peters et al. 2010) bounds the KL of state-action
# distributions (§7: "REPS constrains the state-action marginals $p(s, a)$, while TRPO constrains the conditionals
# $p(a|s)$"). After TRPO: GAE (Schulman et al. 2015, arXiv:1506.02438) added the learned value function and
# $\lambda$-advantages used here; ACKTR (Wu et al. 2017) replaces CG with a Kronecker-factored Fisher; PPO (2017,
# [R4](R4_ppo.ipynb)) replaces the constraint by a clipped ratio and first-order SGD; CPO (Achiam et al. 2017) adds
# safety constraints to the same trust region.
#
# **Limits.** Each update needs about 10 CG iterations, each a double backprop, plus line-search forward passes.
# A shared policy/value network does not fit the constrained step easily. The average-KL constraint, the sample
# estimates and the fixed $\delta$ are "approximations that deviate from the theory" (abstract), so Theorem 1
# does not cover the practical algorithm; and the KL bound itself holds on the sampled states only (the
# next-batch KL above).

# %% [markdown]
# ## Misconceptions
#
# - **"TRPO is from 2017."** No: ICML 2015 (arXiv:1502.05477, first version February 2015). PPO is 2017; the v5
#   revision cited here is stamped "20 Apr 2017" (its acknowledgements thank readers "for pointing our errors in a
#   previous version"), a likely source of the wrong year.
# - **"The official implementation ignores its line search."** Only briefly. In `modular_rl`, `theta = thprev +
#   fullstep` after the line search, which discarded its result, is in the first commit (9a243dd, 2016-04-21,
#   `core.py` line 666) and was carried into the new `trpo.py` (line 95) by 48456f9 the same day. Commit
#   46a6f9a (2016-06-25, "fix line search ...") deleted that line. At HEAD (6970cde) `set_params_flat(theta)`
#   applies the line search's result.
# - **"The official line search guarantees KL ≤ δ."** It does not. `modular_rl`'s `linesearch(f, x, fullstep,
#   expected_improve_rate, max_backtracks=10, accept_ratio=.1)` is an Armijo-type test. It tries 10 step
#   fractions, 1 down to $0.5^9$ (9 halvings), and accepts when the actual over expected improvement of the
#   surrogate exceeds 0.1 and the improvement is positive. It never evaluates the KL. The paper (Appendix C) checks
#   $\bar D_{KL} \le \delta$. `openai/baselines` (`trpo_mpi.py`) halves until the surrogate improves and rejects only
#   `kl > max_kl * 1.5`. sb3-contrib (`sb3_contrib/trpo/trpo.py`) shrinks by 0.8 until `kl_div < target_kl` and the
#   objective improved. This notebook follows the paper. The no-line-search arm always takes the full step (it does
#   not implement `modular_rl`'s Armijo rule); it shows the KL of the full step, which a KL-blind test accepts
#   whenever that step passes its surrogate test.
# - **"The trust region bounds how much the policy changes where it will act."** Only on the states of the batch.
#   Eq. 14 is an expectation over $\rho_{\theta_{\text{old}}}$, and "all that remains is to replace the expectations
#   by sample averages" (§5); the line search tests that sample average. On the next batch's states, TRPO's KL
#   exceeded $\delta$ on about 10% of updates in the recorded run, up to about 3 $\delta$ (results table). The
#   constraint is a property of the sample.
# - **"TRPO guarantees monotonic improvement in practice."** Theorem 1 covers the penalised objective with the
#   exact max-KL and exact advantages. The practical algorithm uses the average KL, a fixed $\delta$ and sample
#   estimates, so it has no guarantee; the paper says it "tends to give" monotonic improvement. The toy's TRPO arm
#   has collapses too (results table).
# - **"TRPO enforces the max-KL bound of Theorem 1."** It constrains the *average* KL, a heuristic (§4, eq. 12),
#   and $\delta$ replaces the penalty $C$, which is far too large to use (C above). In the toy, the largest
#   per-state KL of a TRPO update is a median 8 $\delta$, while the batch mean is at most $\delta$. The paper ran "Max KL" (eq. 11)
#   only on cart-pole ("only tractable on the cart-pole problem"); it "learned somewhat more slowly" with "a similar
#   effect" (§8.1). The toy's Max KL arm is much slower (mean return over all updates 43% lower), because holding that
#   per-state maximum at $\delta$ forces far smaller steps: here the average KL is not a close stand-in for eq. 11.
# - **"The tuned natural gradient fails where TRPO succeeds."** Only on the hard tasks. In Fig. 4 it "performed
#   well on the two easier problems" (cart-pole and swimmer) and failed on hopper and walker (§8.1). On the toy
#   CartPole, the best step of the sweep is within the seed spread of TRPO; the paper's case for TRPO is that
#   $\delta = 0.01$ works everywhere untuned, while the natural gradient's step must be swept per task.
# - **"TRPO learns a value function (with LSTD or GAE)."** The paper estimates $Q$ by Monte Carlo returns
#   (single path) or extra rollouts (vine) (§5). The learned value function with GAE came later (arXiv:1506.02438).
#   `modular_rl` and this notebook use that later estimator.
# - **"The KL direction does not matter."** The paper, `modular_rl` and `baselines` constrain
#   $\bar D_{KL}(\pi_{\text{old}}\|\pi_\theta)$ averaged over visited states. sb3-contrib computes
#   `kl_divergence(distribution, old_distribution)` with stable-baselines3's wrapper (`trpo.py` line 10 at 0ca7fdd:
#   `from stable_baselines3.common.distributions import kl_divergence`; it replaced torch's own function in 087951d,
#   v1.6.0, 2022-07-12), which returns KL(dist_true‖dist_pred) (sb3 2.9.2 `distributions.py` L705-737), so the call is
#   KL(new‖old). The two have the same Fisher
#   Hessian at $\theta_{\text{old}}$ (same step direction and $\beta$), but the line search accepts different steps.
# - **"The natural gradient needs $F^{-1}$."** CG needs only products $Fv$ (D3). The checks above never invert the
#   114-parameter $F$ inside training.

# %% [markdown]
# ## Exercises
#
# 1. Derive $\beta = \sqrt{2\delta / s^\top F s}$ from the Lagrangian of D4, and show that $\beta s$ does not
#    change when $g$ is multiplied by $c > 0$.
# 2. Why does $C = 4\epsilon\gamma/(1-\gamma)^2$ make the penalised step tiny? Compute $C$ for $\gamma = 0.99$,
#    $\epsilon = 1$ and check with the cell below.
# 3. The 4-8-2 net has 9 null directions of $F$ (asserted above). How many does a 4-$H$-2 softmax net have, given
#    enough states? Give the number for the CartPole policy ($H = 16$).

# %%
answer_2 = None  # a number
answer_3 = None  # an integer
key_2 = 4 * 1 * 0.99 / (1 - 0.99) ** 2
key_3 = H + 1
for k, ans, key in ((2, answer_2, key_2), (3, answer_3, key_3)):
    print(
        f"exercise {k}:",
        "not answered"
        if ans is None
        else ("correct" if (abs(ans - key) < 1 if k == 2 else ans == key) else "try again"),  # 3: exactly
    )

# %% [markdown]
# <details><summary>Solutions</summary>
#
# 1. See D4: $\Delta = \lambda^{-1}F^{-1}g$ and the active constraint give $\beta = \sqrt{2\delta/s^\top F s}$.
#    With $g \to cg$: $s \to cs$, $\beta \to \beta/c$, so $\beta s$ is unchanged.
# 2. $C = 39{,}600$: a KL of $10^{-4}$ already costs 3.96 in return, so the penalised optimum barely moves.
# 3. $H + 1$: adding $c$ to both logits changes nothing, so the output bias (1 direction) and, for each hidden unit
#    $j$, raising $W_2[j, 0]$ and $W_2[j, 1]$ together ($H$ directions) are null. For $H = 16$: 17.
#
# </details>

# %% [markdown]
# ## References
#
# - J. Schulman, S. Levine, P. Moritz, M. I. Jordan, P. Abbeel. *Trust Region Policy Optimization.* ICML 2015;
#   arXiv:1502.05477 (v5, 20 Apr 2017): §1; §2 (eqs. 1-6); §3 (eqs. 7-10, Theorem 1, Algorithm 1); §4 (eqs. 11-12);
#   §5 (eqs. 13-16, single path, vine); §6; §7 (eqs. 17-18); §8 (Figs. 2-4, Table 1); App. A (eqs. 19-45);
#   App. C (eqs. 55-57, C.1); App. E (Tables 2-3).
# - Authors' reference implementation (2016): https://github.com/joschu/modular_rl, `modular_rl/trpo.py` at HEAD
#   6970cde (`cg` with `cg_iters=10`, `residual_tol=1e-10`; `linesearch` with `max_backtracks=10`, factor 0.5;
#   `cg_damping=1e-3`, `max_kl=1e-2`), `modular_rl/core.py` (advantage standardisation, lines 57-62; `lam=1.0`
#   default, line 72); the line-search bug, present from the first commit 9a243dd (`core.py`),
#   moved into `trpo.py` by 48456f9, fixed in 46a6f9a.
# - `openai/baselines` `baselines/trpo_mpi/trpo_mpi.py` (ea25b9e): `kl > max_kl * 1.5` rejection, `arr[::5]` Fisher
#   subsample, `cg_damping=1e-2`. Stable-Baselines-Team/stable-baselines3-contrib `sb3_contrib/trpo/trpo.py`
#   (0ca7fdd): `kl_div < target_kl`, shrink 0.8, `cg_damping=0.1`, `sub_sampling_factor`.
# - Reference implementations used here: gymnasium 1.4.0 `gymnasium/envs/classic_control/cartpole.py`
#   (`CartPoleEnv.step`); `torch.linalg.solve` (explicit Fisher solves); `torch.distributions.kl_divergence`
#   (logged KL); `torch.func.jvp` (empirical-FIM products); `shared.returns.gae` (stable-baselines3 2.9.2).
# - A. Barto, R. Sutton, C. Anderson. *Neuronlike adaptive elements that can solve difficult learning control
#   problems.* IEEE Trans. Systems, Man and Cybernetics, 1983 (the cart-pole).
# - S. Kakade, J. Langford. *Approximately Optimal Approximate Reinforcement Learning.* ICML 2002.
# - S. Kakade. *A Natural Policy Gradient.* NIPS 14 (2001; proceedings 2002). J. Peters, S. Schaal. *Natural
#   Actor-Critic.* Neurocomputing 2008. J. Peters, K. Mülling, Y. Altun. *Relative Entropy Policy Search.* AAAI 2010.
# - J. Schulman et al. *High-Dimensional Continuous Control Using Generalized Advantage Estimation.*
#   arXiv:1506.02438. Y. Wu et al. *ACKTR.* arXiv:1708.05144. J. Schulman et al. *PPO.* arXiv:1707.06347.
#   J. Achiam et al. *Constrained Policy Optimization.* arXiv:1705.10528.
