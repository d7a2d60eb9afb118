# ---
# jupyter:
#   course:
#     cpu_seconds: 11
#     id: R1
#     papers:
#     - title: 'Reinforcement Learning: An Introduction (2nd edition), chapters 3-6'
#       url: http://incompleteideas.net/book/the-book-2nd.html
#       version: 2nd edition, 2018
#     part: rl
#     peak_memory_mb: 527
#     prerequisites: []
#     title: MDPs and the Bellman equations
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
# # R1 · MDPs and the Bellman equations
#
# [![Open In Colab](../../docs/img/colab-badge.svg)](https://colab.research.google.com/github/open-vlm-course/vlm-llm-course/blob/main/notebooks/rl/R1_mdps_bellman.ipynb)
#
# **Book:** Richard S. Sutton and Andrew G. Barto, *Reinforcement Learning: An Introduction*, 2nd edition, MIT
# Press, 2018, chapters 3 (finite MDPs), 4 (dynamic programming), 5 (Monte Carlo) and 6 (temporal-difference
# learning). Free online: [incompleteideas.net/book/the-book-2nd.html](http://incompleteideas.net/book/the-book-2nd.html) ·
# **Reference code:** the book has no official library; the widely used Python reproduction of its figures is
# [ShangtongZhang/reinforcement-learning-an-introduction](https://github.com/ShangtongZhang/reinforcement-learning-an-introduction)
# (Example 6.2 in `chapter06/random_walk.py`). The transition tables here are checked against `gymnasium` 1.4.0's
# `FrozenLakeEnv`.
#
# **Prerequisites:** none beyond probability (expectations) and linear algebra (solving $Ax = b$). This is the
# first reading of the RL part.
#
# **CPU run time:** 11 s on a 2-core CPU (measured by `make run`, which rewrites this number)
#
# **Peak memory:** 527 MB (the kernel's peak resident memory, measured by `make run`)

# %% [markdown]
# ## TL;DR
#
# - A finite MDP's value function satisfies a **linear** Bellman equation, $v_\pi = r_\pi + \gamma P_\pi v_\pi$
#   (S&B §3.5, eq. 3.14), solved exactly here by `numpy.linalg.solve`; the optimal value satisfies the
#   **nonlinear** Bellman optimality equation (§3.6), whose max sits *outside* an expectation over $s'$.
# - Both Bellman operators are $\gamma$-contractions in the sup norm (shown on 2,000 random pairs): value iteration
#   converges at least as fast as $\gamma^k$ (here, once the greedy policy settles, asymptotically at the rate
#   $\gamma\rho \approx 0.49$ per sweep, $\rho$ the spectral radius of $\pi^*$'s transitions among non-terminal
#   states: derived and asserted), policy iteration in a handful of steps (§4.3-4.4).
# - Value iteration, policy iteration, Monte Carlo and TD(0) all reach the same $V^*$ on a slippery grid world,
#   each asserted against the linear solve; brute force over all 16,384 deterministic policies of a tiny MDP
#   confirms policy iteration's optimum, and shows the optimal policy is not unique.
# - On S&B's random walk (Example 6.2), over 100 runs on the same episodes, every TD(0) curve of the book's step
#   sizes ends below every constant-$\alpha$ MC curve (0.035-0.071 vs 0.077-0.101 RMS after 100 episodes), as the
#   book reports; the ablation finds the exception, $\alpha = 0.01$, where MC is ahead. Figure 4.1 is reproduced.

# %% [markdown]
# ## 中文速览
#
# - 有限 MDP 的价值函数满足**线性**的贝尔曼期望方程 $v_\pi = r_\pi + \gamma P_\pi v_\pi$（S&B §3.5，式 3.14），
#   本文用 `numpy.linalg.solve` 精确求解；最优价值满足**非线性**的贝尔曼最优方程（§3.6），其中 max 在对 $s'$ 的期望**之外**。
# - 两个贝尔曼算子在无穷范数下都是 $\gamma$-压缩（2000 对随机向量上验证）：价值迭代的收敛至少与 $\gamma^k$ 一样快
#   （本例中贪心策略稳定后，误差渐近地每次迭代按 $\gamma\rho \approx 0.49$ 收缩，$\rho$ 为 $\pi^*$ 在非终止状态之间转移矩阵的谱半径；
#   已推导并断言），策略迭代几步即收敛（§4.3-4.4）。
# - 在带滑动的网格世界上，价值迭代、策略迭代、蒙特卡洛和 TD(0) 都得到同一个 $V^*$，均与线性求解对照断言；
#   在小 MDP 上穷举全部 16384 个确定性策略，确认策略迭代的最优解，并显示最优策略不唯一。
# - 在 S&B 的随机游走（例 6.2）上，100 次运行、相同的回合：书中各步长下 TD(0) 的最终 RMS 误差全部低于常数步长 MC
#   （100 回合后 0.035-0.071 对 0.077-0.101），与书中结论一致；步长消融发现一个例外 $\alpha=0.01$（MC 领先）。图 4.1 被复现。

# %% [markdown]
# ## Setup
#
# One cell installs the course helper on Colab only (CI skips it); the next imports and seeds. Everything is
# NumPy float64 on a CPU; `torch` only carries the course's `assert_close`.

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

import gymnasium
import matplotlib.pyplot as plt
import numpy as np
import torch
from gymnasium.envs.toy_text.frozen_lake import FrozenLakeEnv

from shared.returns import discounted_returns
from shared.utils import assert_close, error_bound, seed_everything

seed_everything(0)
rng = np.random.default_rng(0)  # every random draw below comes from this generator, in order
np.set_printoptions(precision=3, suppress=True)
print("numpy", np.__version__, "| gymnasium", gymnasium.__version__)


def close(a, b, atol, name):
    """assert_close on two float64 NumPy arrays; returns the max abs error."""
    return assert_close(torch.tensor(np.array(a, float)), torch.tensor(np.array(b, float)),
                        atol=atol, rtol=0.0, name=name)


# %% [markdown]
# ## The problem
#
# An agent in state $S_t$ picks $A_t$, the environment returns $R_{t+1}$ and $S_{t+1}$ drawn from
# $p(s', r \mid s, a)$ (S&B §3.1); the agent wants a policy $\pi(a\mid s)$ that maximises the expected
# discounted return $G_t = R_{t+1} + \gamma R_{t+2} + \gamma^2 R_{t+3} + \dots$ (§3.3). Two questions follow:
# how good is a given policy (**prediction**: compute $v_\pi(s) = \mathbb{E}_\pi[G_t \mid S_t = s]$, §3.5), and
# which policy is best (**control**: $v_*(s) = \max_\pi v_\pi(s)$, §3.6).
#
# The book's chapters 4-6 answer them in three ways that differ in what they need: dynamic programming needs the
# model $p$ and sweeps over all states (ch. 4); Monte Carlo needs only sampled *complete episodes* (ch. 5);
# temporal-difference learning needs only single transitions, because it *bootstraps* from its own current
# estimate (ch. 6). Dynamic programming itself is Bellman's (R. Bellman, *Dynamic Programming*, 1957; S&B §1.7
# and the bibliographical notes of ch. 3-4). This reading derives the equations behind all three, implements
# each, and checks every one against an exact answer computed independently.

# %% [markdown]
# ## Derivations
#
# ### D1. The Bellman expectation equation (S&B §3.5, eq. 3.14) and its matrix form
#
# The return satisfies $G_t = R_{t+1} + \gamma G_{t+1}$. Take $\mathbb{E}_\pi[\cdot \mid S_t = s]$ and condition on
# the first action and transition:
#
# $$v_\pi(s) = \sum_a \pi(a\mid s) \sum_{s', r} p(s', r\mid s, a)\,\big[r + \gamma\, v_\pi(s')\big].$$
#
# The inner sum averages over **every** next state $s'$ (the Markov property lets $\mathbb{E}[G_{t+1}\mid S_{t+1}=s']
# = v_\pi(s')$). With $P_\pi[s, s'] = \sum_a \pi(a\mid s) p(s'\mid s,a)$ and $r_\pi(s) = \sum_a \pi(a\mid s)\, r(s,a)$,
# $r(s,a) = \sum_{s'} p(s'\mid s,a)\, r(s,a,s')$, it is one linear system:
#
# $$v_\pi = r_\pi + \gamma P_\pi v_\pi \iff (I - \gamma P_\pi)\, v_\pi = r_\pi .$$
#
# $I - \gamma P_\pi$ is invertible for $\gamma < 1$: $P_\pi$ is row-stochastic, so $\|\gamma P_\pi x\|_\infty \le
# \gamma\|x\|_\infty$ and $(I - \gamma P_\pi) x = 0$ forces $x = 0$. This exact solve is the reference of every check
# below. The grid world: 5x5, walls `#`, goal `G` (+1) and hole `H` (-1) end the episode; each move succeeds
# with probability 0.8 and slips to either perpendicular direction with 0.1 each; bumping into a wall or the edge
# leaves the agent in place. The perpendicular-slip pattern and the action order (left, down, right, up) are
# FrozenLake's; the 0.8 is this reading's choice, `success_rate=0.8` in gymnasium's terms (gymnasium's default is
# `success_rate=1/3`: all three directions equally likely).

# %%
MOVES = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]])  # left, down, right, up (FrozenLake's order)
ARROWS = "<v>^"


def build_grid(rows, success=0.8, step_reward=0.0, goal_reward=1.0, hole_reward=-1.0):
    """Tables of a grid MDP: P (n, 4, n), expected reward R (n, 4), reward on arrival Rsas (n, 4, n)."""
    grid = np.array([list(r) for r in rows])
    nrow, ncol = grid.shape
    cells = [(i, j) for i in range(nrow) for j in range(ncol) if grid[i, j] != "#"]
    index = {c: k for k, c in enumerate(cells)}
    n = len(cells)
    P, Rsas = np.zeros((n, 4, n)), np.zeros((n, 4, n))
    terminal = np.array([grid[c] in "GH" for c in cells])
    for k, (i, j) in enumerate(cells):
        for a in range(4):
            if terminal[k]:  # absorbing, reward 0 forever: v(terminal) = 0
                P[k, a, k] = 1.0
                continue
            for b, p in (((a - 1) % 4, (1 - success) / 2), (a, success), ((a + 1) % 4, (1 - success) / 2)):
                ni, nj = i + MOVES[b, 0], j + MOVES[b, 1]
                if not (0 <= ni < nrow and 0 <= nj < ncol) or grid[ni, nj] == "#":
                    ni, nj = i, j  # blocked: stay
                t = index[(ni, nj)]
                P[k, a, t] += p
                Rsas[k, a, t] = step_reward + {"G": goal_reward, "H": hole_reward}.get(grid[ni, nj], 0.0)
    return dict(P=P, R=(P * Rsas).sum(-1), Rsas=Rsas, terminal=terminal, cells=cells, shape=(nrow, ncol))


def policy_matrices(mdp, pi):
    """P_pi (n, n) and r_pi (n,) of a stochastic policy pi (n, 4)."""
    return np.einsum("sa,sat->st", pi, mdp["P"]), (pi * mdp["R"]).sum(1)


def solve_v(mdp, pi, gamma):
    """The exact v_pi: numpy.linalg.solve of (I - gamma P_pi) v = r_pi (D1)."""
    P_pi, r_pi = policy_matrices(mdp, pi)
    return np.linalg.solve(np.eye(len(r_pi)) - gamma * P_pi, r_pi)


def show(mdp, v):
    """Print a per-state vector on the grid (walls as ###)."""
    out = np.full(mdp["shape"], "  ### ", dtype=object)
    for k, c in enumerate(mdp["cells"]):
        out[c] = f"{round(float(v[k]), 3) + 0.0:6.3f}" if not isinstance(v[k], str) else f"{v[k]:>6}"
    print("\n".join(" ".join(row) for row in out))


GRID = ["....G", ".##.H", "...#.", ".#...", "S...."]
GAMMA = 0.95
mdp = build_grid(GRID)
n = len(mdp["cells"])
uniform = np.full((n, 4), 0.25)
v_uniform = solve_v(mdp, uniform, GAMMA)
print(f"{n} states ({mdp['terminal'].sum()} terminal); v of the uniform random policy, gamma = {GAMMA}:")
show(mdp, v_uniform)

# %% [markdown]
# ### D2. The Bellman optimality equation (S&B §3.6, eqs. 3.17-3.20)
#
# $v_*(s) = \max_\pi v_\pi(s)$ and $q_*(s,a) = \max_\pi q_\pi(s,a)$, with $q_\pi(s,a) = \mathbb{E}_\pi[G_t \mid
# S_t = s, A_t = a]$; an optimal policy $\pi_*$ attains both in every state (§3.6). Four steps give the equation:
#
# $$\begin{aligned}
# v_*(s) &= \max_a q_{\pi_*}(s, a) && \text{(i) an optimal policy is greedy for its own } q\\
# &= \max_a \mathbb{E}_{\pi_*}\big[G_t \mid S_t = s, A_t = a\big] && \text{(ii) definition of } q_\pi\\
# &= \max_a \mathbb{E}_{\pi_*}\big[R_{t+1} + \gamma G_{t+1} \mid S_t = s, A_t = a\big] && \text{(iii) } G_t = R_{t+1} +
# \gamma G_{t+1} \text{ (eq. 3.9)}\\
# &= \max_a \mathbb{E}\big[R_{t+1} + \gamma v_*(S_{t+1}) \mid S_t = s, A_t = a\big] && \text{(iv) Markov property
# (eq. 3.18)}\\
# &= \max_a \sum_{s', r} p(s', r\mid s, a)\,\big[r + \gamma\, v_*(s')\big] && \text{(eq. 3.19)}
# \end{aligned}$$
#
# - (i): $v_{\pi_*}(s) = \sum_a \pi_*(a\mid s)\, q_{\pi_*}(s,a) \le \max_a q_{\pi_*}(s,a)$, an average is at most its
#   largest term. Equality holds: if some $a$ had $q_{\pi_*}(s,a) > v_{\pi_*}(s)$, the policy that takes $a$ in $s$
#   and follows $\pi_*$ elsewhere would, by the policy improvement theorem (D4), be strictly better than $\pi_*$
#   in $s$, which contradicts $\pi_*$ being optimal. So $\pi_*$ only puts weight on actions that maximise $q_{\pi_*}$.
# - (iv): given $S_{t+1} = s'$, what happens after $t+1$ does not depend on $S_t, A_t$ (Markov property), and
#   the expected return from $s'$ on under $\pi_*$ is $v_{\pi_*}(s') = v_*(s')$. The last line writes the
#   expectation out with $p$.
#
# The same steps for $q_*$: (ii)-(iii) give $q_*(s,a) = \mathbb{E}_{\pi_*}[R_{t+1} + \gamma G_{t+1} \mid s, a]$, (iv)
# replaces $G_{t+1}$ by $v_*(S_{t+1})$, and (i) at $S_{t+1}$ replaces $v_*(s')$ by $\max_{a'} q_*(s', a')$:
#
# $$q_*(s, a) = \sum_{s', r} p(s', r\mid s, a)\,\big[r + \gamma \max_{a'} q_*(s', a')\big] \quad\text{(eq. 3.20)}.$$
#
# The max is over actions, the expectation over next states, and the **expectation is inside the max**: the agent
# chooses $a$, the environment chooses $s'$. Writing $v(s) = \max_a [r + \gamma v(s')]$ with one $s'$ is only right
# for deterministic transitions. The cell below measures the difference on the slippery grid, using the $V^*$
# computed by value iteration in W1: the version without the expectation ("the intended cell is where you land")
# is not a fixed-point equation of this MDP.

# %% [markdown]
# ### D3. Both Bellman operators are $\gamma$-contractions in the sup norm
#
# Define $(T_\pi v)(s) = r_\pi(s) + \gamma (P_\pi v)(s)$ and $(T_* v)(s) = \max_a q_v(s,a)$ with
# $q_v(s,a) = r(s,a) + \gamma\sum_{s'} p(s'\mid s,a) v(s')$. For any $v, u$:
#
# - $|(T_\pi v - T_\pi u)(s)| = \gamma\,|\sum_{s'} P_\pi[s,s'](v - u)(s')| \le \gamma \|v - u\|_\infty$ (a convex
#   combination is at most the largest entry);
# - $|\max_a f(a) - \max_a g(a)| \le \max_a |f(a) - g(a)|$, so $|(T_* v - T_* u)(s)| \le \max_a \gamma\,|\sum_{s'}
#   p(s'\mid s,a)(v-u)(s')| \le \gamma\|v - u\|_\infty$.
#
# By Banach's fixed-point theorem each has exactly one fixed point ($v_\pi$, resp. $v_*$), and iterating from any
# $v_0$ gives $\|v_k - v_*\|_\infty \le \gamma^k\|v_0 - v_*\|_\infty$: that is why **$v_*$ is unique** even when
# optimal policies are not (S&B §3.6 states uniqueness; §4.4 value iteration). The cell checks the ratio on 2,000
# random pairs for both operators; the worst ratio must not exceed $\gamma$.

# %%
# Every function takes the MDP and gamma as arguments, so the same code runs on the tiny MDP of the Check.
def T_pi(mdp, gamma, v, pi):  # v (..., n) -> (..., n)
    P_pi, r_pi = policy_matrices(mdp, pi)
    return r_pi + gamma * v @ P_pi.T


def q_from_v(mdp, gamma, v):  # v (..., n) -> q (..., n, 4)
    return mdp["R"] + gamma * np.einsum("sat,...t->...sa", mdp["P"], v)


def T_star(mdp, gamma, v):
    return q_from_v(mdp, gamma, v).max(-1)


V1, V2 = rng.normal(size=(2, 2000, n)) * rng.exponential(3.0, size=(2, 2000, 1))  # pairs at many scales
dist = np.abs(V1 - V2).max(-1)
ratio_pi = np.abs(T_pi(mdp, GAMMA, V1, uniform) - T_pi(mdp, GAMMA, V2, uniform)).max(-1) / dist
ratio_star = np.abs(T_star(mdp, GAMMA, V1) - T_star(mdp, GAMMA, V2)).max(-1) / dist
print(f"sup-norm ratio ||Tv - Tu|| / ||v - u|| over 2000 pairs (gamma = {GAMMA}):")
print(f"  T_pi (uniform policy): max {ratio_pi.max():.4f}, median {np.median(ratio_pi):.4f}")
print(f"  T_*                  : max {ratio_star.max():.4f}, median {np.median(ratio_star):.4f}")
assert ratio_pi.max() <= GAMMA + 1e-12 and ratio_star.max() <= GAMMA + 1e-12

# %% [markdown]
# ### D4. Policy improvement, policy iteration, value iteration (S&B §4.2-4.4)
#
# **Policy improvement theorem (§4.2).** Let $\pi'$ be deterministic with $q_\pi(s, \pi'(s)) \ge v_\pi(s)$ for all
# $s$ (true when $\pi'$ is greedy for $q_\pi$: the max is at least the $\pi$-average). Unrolling the inequality
# along trajectories of $\pi'$ (S&B eq. 4.7):
#
# $$\begin{aligned}
# v_\pi(s) &\le q_\pi(s, \pi'(s)) = \mathbb{E}_{\pi'}\big[R_{t+1} + \gamma v_\pi(S_{t+1}) \mid S_t = s\big]
# \le \mathbb{E}_{\pi'}\big[R_{t+1} + \gamma q_\pi(S_{t+1}, \pi'(S_{t+1})) \mid S_t = s\big]\\
# &= \mathbb{E}_{\pi'}\big[R_{t+1} + \gamma R_{t+2} + \gamma^2 v_\pi(S_{t+2}) \mid S_t = s\big] \le \dots \le
# \mathbb{E}_{\pi'}\big[R_{t+1} + \gamma R_{t+2} + \gamma^2 R_{t+3} + \dots \mid S_t = s\big] = v_{\pi'}(s).
# \end{aligned}$$
#
# If the inequality is strict in some $s$, so is $v_{\pi'}(s) > v_\pi(s)$. **Policy iteration** alternates exact
# evaluation (D1) and greedy improvement, changing an action only on a strict improvement; each step then
# improves strictly in some state, no policy can come back, and there are finitely many deterministic policies,
# so it stops. **Why stopping means optimal:** if no action improves, $v_\pi(s) = \max_a \sum_{s',r}
# p(s',r\mid s,a)[r + \gamma v_\pi(s')]$ for all $s$, so $v_\pi$ solves D2's equation, i.e. $v_\pi = T_* v_\pi$. This
# shows $v_\pi = v_*$ only because $T_*$ has **exactly one** fixed point (D3); without uniqueness a policy could
# satisfy the equation and still be beaten. **Value iteration** applies $T_*$ directly: $v_{k+1} = T_* v_k$, which
# converges by D3.
#
# ### D5. Monte Carlo and TD(0) prediction (S&B §5.1, §6.1)
#
# Both estimate $v_\pi$ from samples, with the updates
#
# $$\text{MC (6.1):}\; V(S_t) \leftarrow V(S_t) + \alpha\big[G_t - V(S_t)\big], \qquad
# \text{TD(0) (6.2):}\; V(S_t) \leftarrow V(S_t) + \alpha\big[R_{t+1} + \gamma V(S_{t+1}) - V(S_t)\big].$$
#
# $G_t$ is an unbiased sample of $v_\pi(S_t)$ but needs the episode to end and sums many random rewards (high
# variance). The TD target uses the current estimate $V(S_{t+1})$ in place of $v_\pi(S_{t+1})$: it is **biased**
# while $V \ne v_\pi$, but depends on one random transition only (lower variance), and is available after one
# step (§6.2). Its expectation is $(T_\pi V)(S_t)$, so TD(0) is a sampled, damped version of iterative policy
# evaluation; with step sizes satisfying $\sum \alpha = \infty$, $\sum\alpha^2 < \infty$ it converges to $v_\pi$.

# %% [markdown]
# ## Walkthrough
#
# ### W1. Value iteration and policy iteration
#
# `value_iteration` applies $T_*$ (D2, D4) and records the sup-norm change per sweep; `policy_iteration` alternates
# the exact solve (D1) and greedy improvement, keeping the old action on ties so it cannot cycle.

# %%
def value_iteration(mdp, gamma, tol=1e-12, max_iter=5000):
    n = len(mdp["cells"])
    v, trace = np.zeros(n), [np.zeros(n)]
    for _ in range(max_iter):
        v_new = T_star(mdp, gamma, v)  # (n,)
        trace.append(v_new)
        if np.abs(v_new - v).max() < tol:
            break
        v = v_new
    return v_new, np.array(trace)


def greedy(mdp, gamma, v):  # (n,) -> deterministic policy as action indices (n,)
    return q_from_v(mdp, gamma, v).argmax(-1)


def one_hot(actions):  # (n,) -> (n, 4)
    return np.eye(4)[actions]


def policy_iteration(mdp, gamma, actions=None):
    n = len(mdp["cells"])
    actions = np.zeros(n, dtype=int) if actions is None else actions
    values = []
    while True:
        v = solve_v(mdp, one_hot(actions), gamma)  # exact evaluation (D1)
        values.append(v)
        q = q_from_v(mdp, gamma, v)
        better = q.max(-1) > q[np.arange(n), actions] + 1e-12  # change only on a strict improvement
        if not better.any():
            return actions, np.array(values)
        actions = np.where(better, q.argmax(-1), actions)


v_star, vi_trace = value_iteration(mdp, GAMMA)
pi_star, pi_values = policy_iteration(mdp, GAMMA)
print(f"value iteration: {len(vi_trace) - 1} sweeps; policy iteration: {len(pi_values)} evaluations")
show(mdp, v_star)
show(mdp, np.array([("*" if t else ARROWS[a]) for a, t in zip(pi_star, mdp["terminal"], strict=True)],
                   dtype=object))

# %% [markdown]
# Back to D2: the residual of the optimality equation at $V^*$ with the expectation over $s'$ (machine zero) and
# without it, taking $s'$ to be the intended cell; and the residual of the $q_*$ equation (3.20) at
# $Q^* = r + \gamma P V^*$.

# %%
intended = build_grid(GRID, success=1.0)["P"].argmax(-1)  # (n, 4): where each action lands without slipping
with_expectation = np.abs(T_star(mdp, GAMMA, v_star) - v_star).max()
no_expectation = (mdp["Rsas"][np.arange(n)[:, None], np.arange(4), intended] + GAMMA * v_star[intended]).max(-1)
q_star = q_from_v(mdp, GAMMA, v_star)  # (n, 4)
q_residual = np.abs(mdp["R"] + GAMMA * mdp["P"] @ q_star.max(-1) - q_star).max()  # eq. 3.20: max inside the sum
print(f"max |T_* V* - V*| with the expectation over s': {error_bound(with_expectation, 1e-12)}")
print(f"max |eq. 3.20 right side - Q*|               : {error_bound(q_residual, 1e-12)}")
assert with_expectation < 1e-12 and q_residual < 1e-12
print(f"max |max_a [r + gamma V*(s_intended)] - V*|   : {np.abs(no_expectation - v_star).max():.3f}")

# %% [markdown]
# ### W2. Monte Carlo and TD(0) on the grid, evaluating $\pi^*$
#
# To see all four methods land on the same $V^*$, MC and TD(0) evaluate the policy $\pi^*$ found by policy
# iteration: $v_{\pi^*} = v_*$. `rollout_returns` starts `m` episodes from every non-terminal state, all in
# parallel, samples $s' \sim p(\cdot\mid s, \pi^*(s))$ by inverse-CDF, and records the rewards; the discounted
# return of each is computed by the course's `shared.returns.discounted_returns` and by a
# direct $\sum_t\gamma^t r_t$ (asserted equal in the Check). Episodes are cut at 300 steps, a bias of at most
# $\gamma^{300} < 10^{-6}$. `td0_sync` applies eq. 6.2 to one sampled transition from every state per sweep
# (a synchronous variant of the book's online TD(0); W4 uses the online one), with $\alpha_k = 1/(1 + k/10)$ and
# 16 independent replicates. The 2,000 MC episodes per state are also split into 16 replicates of 125 for the
# spread in the Reproduction.

# %%
def sample_next(mdp, states, actions):  # (N,), (N,) -> next states (N,), rewards (N,)
    cdf = mdp["P"][states, actions].cumsum(-1)  # (N, n)
    nxt = np.minimum((rng.random(len(states))[:, None] > cdf).sum(-1), len(mdp["cells"]) - 1)
    return nxt, mdp["Rsas"][states, actions, nxt]


def rollout_returns(mdp, actions, m, horizon=300):
    starts = np.repeat(np.flatnonzero(~mdp["terminal"]), m)  # (N,)
    s, rewards, done = starts.copy(), np.zeros((horizon, len(starts))), np.zeros((horizon, len(starts)))
    for t in range(horizon):
        s, rewards[t] = sample_next(mdp, s, actions[s])
        done[t] = mdp["terminal"][s]  # rewards after the terminal step are 0 (absorbing)
        if done[t].all():  # every episode has ended: drop the unused steps
            return starts, rewards[: t + 1], done[: t + 1]
    return starts, rewards, done


def td0_sync(mdp, gamma, actions, v_ref, sweeps, replicates):
    n = len(mdp["cells"])
    V, errors = np.zeros((replicates, n)), []
    states = np.tile(np.arange(n), replicates)  # every state, every replicate
    for k in range(sweeps):
        nxt, r = sample_next(mdp, states, actions[states])
        target = r + gamma * V.ravel()[np.repeat(np.arange(replicates) * n, n) + nxt]
        V += (1.0 / (1.0 + k / 10)) * (target.reshape(replicates, n) - V)  # eq. 6.2 on every state
        errors.append(np.abs(V - v_ref).max(-1))
    return V, np.array(errors)  # (replicates, n), (sweeps, replicates)


M_EPISODES = 2000
starts, rewards, done = rollout_returns(mdp, pi_star, M_EPISODES)
G0 = (GAMMA ** np.arange(rewards.shape[0]))[:, None] * rewards  # (T, N)
returns = G0.sum(0).reshape(-1, M_EPISODES)  # (non-terminal states, m): G_0 of each episode
v_mc = np.zeros(n)
v_mc[~mdp["terminal"]] = returns.mean(1)
v_td, td_err = td0_sync(mdp, GAMMA, pi_star, v_star, sweeps=4000, replicates=16)
print(f"MC: {M_EPISODES} episodes per state, max |V_MC - V*| = {np.abs(v_mc - v_star).max():.4f}")
print(f"TD(0): 4000 sweeps x 16 replicates, max |V_TD - V*| = {np.abs(v_td - v_star).max():.4f} (worst replicate), "
      f"{np.abs(v_td.mean(0) - v_star).max():.4f} (mean of the 16)")

# %% [markdown]
# ### W3. S&B Figure 4.1: iterative policy evaluation on the 4x4 gridworld (Example 4.1)
#
# Sixteen cells, the two shaded corners terminal, four deterministic moves (off-grid leaves the agent in place),
# reward $-1$ on every transition, $\gamma = 1$, the equiprobable random policy. $\gamma = 1$ is allowed because
# every episode terminates with probability 1: restricted to non-terminal states, $P_\pi$ is substochastic
# with spectral radius $< 1$, so $(I - P_\pi)$ is still invertible (S&B §4.1 requires $\gamma < 1$ *or* guaranteed
# termination). The grid builder makes it with `success=1`, step reward $-1$ and goal reward $0$; the sweep is
# the two-array update $v_{k+1} = T_\pi v_k$ of §4.1. The exact $k = 2$ value next to a terminal is $-1.75$:
# Figure 4.1 prints it as $-1.7$, NumPy's round-half-to-even prints $-1.8$.

# %%
grid41 = build_grid(["G...", "....", "....", "...G"], success=1.0, step_reward=-1.0, goal_reward=0.0)
P41, r41 = policy_matrices(grid41, np.full((16, 4), 0.25))
v41, snapshots = np.zeros(16), {}
for k in range(1, 1000):
    v41_new = r41 + P41 @ v41  # (16,): one synchronous sweep, gamma = 1
    if k in (1, 2, 3, 10):
        snapshots[k] = v41_new
    if np.abs(v41_new - v41).max() < 1e-12:
        break
    v41 = v41_new
print(f"converged after {k} sweeps; the k = 1, 2, 3, 10 and final values (Figure 4.1, left column):")
for kk, v in [*snapshots.items(), ("inf", v41)]:
    print(f"k = {kk}:\n{np.round(v.reshape(4, 4), 1)}")

# %% [markdown]
# ### W4. The random walk of S&B Example 6.2, MC and TD(0) online
#
# Five states A-E in a row between two terminals; every episode starts in C, moves left or right with
# probability 1/2; reaching the right end gives $+1$, everything else $0$; $\gamma = 1$. So $v_\pi(s)$ is the
# probability of exiting right, $1/6, \dots, 5/6$ (Example 6.2). Episodes are generated once, `(runs, episodes,
# steps)` padded with $-1$, and **both methods learn from the same episodes**. TD(0) updates online after each
# step (eq. 6.2). Constant-$\alpha$ MC (eq. 6.1) updates every visit at the episode's end; here every visit in an
# episode has the same return $G$ (one terminal reward, $\gamma = 1$), and $n$ successive updates toward the same
# $G$ collapse to $V \leftarrow G + (1-\alpha)^n (V - G)$. Values start at 0.5, as in the book. Example 6.2 does not
# say whether its MC is every-visit or first-visit; every-visit is used here, as in the common Python reproduction
# of the book's figures, `chapter06/random_walk.py` of ShangtongZhang/reinforcement-learning-an-introduction: its
# `monte_carlo` applies `values[state_] += alpha * (returns - values[state_])` once per visit, in order, toward the
# same return (exactly the closed form above), with values starting at 0.5, 100 runs, TD $\alpha \in \{0.15, 0.1,
# 0.05\}$ and MC $\alpha \in \{0.01, \dots, 0.04\}$.

# %%
TRUE_RW = np.arange(1, 6) / 6  # A..E


def random_walk_episodes(runs, episodes):
    """States 0..6 (0, 6 terminal, start 3), shape (runs, episodes, max_len), padded with -1."""
    pos, paths = np.full(runs * episodes, 3), [np.full(runs * episodes, 3)]
    while (live := (pos > 0) & (pos < 6)).any():
        pos = np.where(live, pos + rng.choice([-1, 1], size=pos.shape), -1)
        paths.append(pos.copy())
        pos = np.where(paths[-1] == -1, 0, pos)  # padded walks stay out
    traj = np.stack(paths, -1)
    return traj.reshape(runs, episodes, -1)


def rms(V):  # V (..., 7) -> RMS error over A..E (...)
    return np.sqrt(((V[..., 1:6] - TRUE_RW) ** 2).mean(-1))


def mc_constant_alpha(traj, alphas):
    runs, episodes, _ = traj.shape
    V = np.tile(np.r_[0.0, [0.5] * 5, 0.0], (len(alphas), runs, 1))  # (n_alpha, runs, 7)
    a = np.asarray(alphas)[:, None, None]
    errs = [rms(V)]
    for e in range(episodes):
        ep = traj[:, e]  # (runs, L)
        G = (ep == 6).any(-1).astype(float)[None, :, None]  # (1, runs, 1): 1 if it exits right
        visits = np.stack([((ep[:, :-1] == s) & (ep[:, 1:] >= 0)).sum(-1) for s in range(7)], -1)  # (runs, 7)
        V = G + (1 - a) ** visits[None] * (V - G)  # n every-visit updates toward the same G
        V[..., [0, 6]] = 0.0
        errs.append(rms(V))
    return np.stack(errs, -1)  # (n_alpha, runs, episodes + 1)


def td0_online(traj, alphas):
    runs, episodes, L = traj.shape
    V = np.tile(np.r_[0.0, [0.5] * 5, 0.0], (len(alphas), runs, 1))
    a, idx = np.asarray(alphas)[:, None], np.arange(runs)
    errs = [rms(V)]
    for e in range(episodes):
        for t in range(L - 1):
            s, s2 = traj[:, e, t], traj[:, e, t + 1]
            live = s2 >= 0  # (runs,): this run's episode has a step t -> t + 1
            if not live.any():
                break
            s2c = np.where(live, s2, 0)
            target = (s2c == 6) + V[:, idx, s2c]  # r + gamma V(s'), gamma = 1, V(terminal) = 0
            V[:, idx, s] += a * (target - V[:, idx, s]) * live
        errs.append(rms(V))
    return np.stack(errs, -1)


RUNS, EPISODES = 100, 100
traj = random_walk_episodes(RUNS, EPISODES)
print(f"{RUNS} runs x {EPISODES} episodes; mean length {(traj >= 0).sum(-1).mean() - 1:.2f} steps, "
      f"longest {(traj >= 0).sum(-1).max() - 1}")
print("first episode of run 0:", "".join(" ABCDE "[s] if 0 < s < 6 else "|" for s in traj[0, 0] if s >= 0))

# %% [markdown]
# ## Check against a reference
#
# Each assert compares two independent computations:
#
# 1. the grid builder's tables vs `gymnasium` 1.4.0's `FrozenLakeEnv(...).P` on the FrozenLake 4x4 map (a grid
#    without walls, which `gymnasium` does not have), slippery with `success_rate=0.8`, rewards via `reward_schedule`;
#    and two rows of the 5x5 grid next to a wall against rows written out by hand;
# 2. value iteration's $V^*$ and policy iteration's policy vs the linear solve of $(I-\gamma P_{\pi^*})v = r_{\pi^*}$;
# 3. policy iteration vs brute force over all $4^7 = 16384$ deterministic policies of a tiny MDP (batched solves);
# 4. MC and TD(0) estimates vs the linear solve, with statistical tolerances (MC: 5 standard errors per state);
# 5. Figure 4.1's printed values and the random walk's $1/6..5/6$ vs the iteration and the linear solve;
#    then the vectorised MC and TD(0) learners of W4 vs plain loops of eqs. 6.1 and 6.2.

# %%
# 1. Transition and reward tables vs gymnasium's FrozenLake.
LAKE = ["SFFF", "FHFH", "FFFH", "HFFG"]
STEP, GOAL, HOLE = -0.04, 1.0, -1.0
lake = build_grid([r.replace("F", ".").replace("S", ".") for r in LAKE], success=0.8, step_reward=STEP,
                  goal_reward=GOAL, hole_reward=HOLE)
env = FrozenLakeEnv(desc=LAKE, is_slippery=True, success_rate=0.8, reward_schedule=(GOAL + STEP, HOLE + STEP, STEP))
P_gym, R_gym = np.zeros((16, 4, 16)), np.zeros((16, 4))
for s, a in itertools.product(range(16), range(4)):
    for p, s2, r, _ in env.P[s][a]:  # FrozenLake lists a slip twice when two directions hit the same wall
        P_gym[s, a, s2] += p
        R_gym[s, a] += p * r
e_p = close(lake["P"], P_gym, 1e-12, "P vs FrozenLake")
e_r = close(lake["R"], R_gym, 1e-12, "R vs FrozenLake")
print(f"transition table vs gymnasium FrozenLake {error_bound(e_p, 1e-12)}; expected reward {error_bound(e_r, 1e-12)}")

# FrozenLake has no walls, so two rows of the 5x5 grid next to a wall, written out by hand (GRID row 1 ".##.H"):
# at (1,0) "right" hits the wall at (1,1) and stays (0.8), slips down to (2,0) (0.1) or up to (0,0) (0.1);
# at (2,4) "up" enters the hole at (1,4) (0.8, reward -1), its slips hit the wall at (2,3) and the edge: stay (0.2).
cell = mdp["cells"].index
by_hand = {(cell((1, 0)), 2): ({(1, 0): 0.8, (2, 0): 0.1, (0, 0): 0.1}, 0.0),
           (cell((2, 4)), 3): ({(1, 4): 0.8, (2, 4): 0.2}, -0.8)}
for (k_s, a), (row, r_expected) in by_hand.items():
    p_row = np.zeros(n)
    for c, p in row.items():
        p_row[cell(c)] = p
    close(mdp["P"][k_s, a], p_row, 1e-12, f"P row of {mdp['cells'][k_s]}, {ARROWS[a]}")
    close(mdp["R"][k_s, a], r_expected, 1e-12, f"R of {mdp['cells'][k_s]}, {ARROWS[a]}")
print("rows next to a wall, (1,0) right and (2,4) up: builder = hand-written rows (atol 1e-12)")

# %%
# 2. Value iteration and policy iteration vs the exact linear solve.
v_exact = solve_v(mdp, one_hot(pi_star), GAMMA)
e_vi = close(v_star, v_exact, 1e-10, "value iteration vs solve")
e_vi_pi = close(solve_v(mdp, one_hot(greedy(mdp, GAMMA, v_star)), GAMMA), v_exact, 1e-10, "greedy(V_VI) vs PI")
monotone = all((b >= a - 1e-12).all() for a, b in itertools.pairwise(pi_values))  # D4: v_pi' >= v_pi everywhere
assert monotone and (v_exact >= pi_values[0] - 1e-12).all()
print(f"value iteration V* vs solve for PI's policy {error_bound(e_vi, 1e-12)}; "
      f"policy greedy for V_VI, solved {error_bound(e_vi_pi, 1e-12)}")
print(f"PI's values improve monotonically in every state, over {len(pi_values)} evaluations: {monotone}")

# %%
# 3. Brute force over every deterministic policy of a tiny MDP vs policy iteration.
tiny = build_grid(["...", ".#.", "..G"], success=0.8, step_reward=-0.05)  # symmetric about the diagonal
nt = np.flatnonzero(~tiny["terminal"])  # 7 non-terminal states; the terminal's action does not matter
policies = np.zeros((4 ** len(nt), len(tiny["cells"])), dtype=int)
policies[:, nt] = np.array(list(itertools.product(range(4), repeat=len(nt))))  # (16384, 8)
n_tiny = len(tiny["cells"])  # 8 cells, one of them the goal
P_all = tiny["P"][np.arange(n_tiny), policies]  # (16384, 8, 8)
r_all = tiny["R"][np.arange(n_tiny), policies]  # (16384, 8)
V_all = np.linalg.solve(np.eye(n_tiny) - 0.9 * P_all, r_all[..., None])[..., 0]  # 16384 exact evaluations
best = V_all.max(0)  # the state-wise best over all policies
dominant = np.flatnonzero((V_all >= best - 1e-12).all(-1))  # policies optimal in every state at once

pi_tiny, v_tiny = policy_iteration(tiny, 0.9)  # the same function, given the tiny MDP and its gamma
e_bf = close(v_tiny[-1], best, 1e-10, "PI vs brute force")
assert len(dominant) > 0 and (V_all[dominant] >= best - 1e-12).all()
assert any((policies[d, nt] == pi_tiny[nt]).all() for d in dominant)  # PI's policy is one of the optimal ones
print(f"{len(policies)} policies; PI's V vs the state-wise max over all of them {error_bound(e_bf, 1e-12)}")
print(f"policies optimal in every state: {len(dominant)} (V* is unique, the optimal policy is not)")

# %%
# 4. Monte Carlo and TD(0) estimates of v_pi* vs the exact solve.
G_shared = discounted_returns(torch.as_tensor(rewards), torch.as_tensor(done), gamma=GAMMA)[0].numpy()
e_ret = close(G_shared.reshape(-1, M_EPISODES), returns, 1e-12, "returns vs shared.returns")
se = returns.std(1, ddof=1) / np.sqrt(M_EPISODES)  # standard error of each state's MC mean
z = np.abs(v_mc[~mdp["terminal"]] - v_exact[~mdp["terminal"]]) / np.maximum(se, 1e-12)
assert (z < 5).all(), z.max()
e_td = close(v_td.mean(0), v_exact, 0.02, "TD(0), mean of 16, vs solve")
e_td_worst = close(v_td, np.tile(v_exact, (16, 1)), 0.08, "TD(0), each replicate, vs solve")
print(f"MC returns: sum_t gamma^t r_t vs shared.returns.discounted_returns {error_bound(e_ret, 1e-12)}")
print(f"MC: worst |V_MC - v| = {z.max():.1f} standard errors (< 5); TD(0): max error {e_td:.3f} (mean of 16, < 0.02), "
      f"{e_td_worst:.3f} (worst replicate, < 0.08)")

# %%
# 5. Figure 4.1 and Example 6.2 reference values.
FIG41 = np.array([[0, -14, -20, -22], [-14, -18, -20, -20], [-20, -20, -18, -14], [-22, -20, -14, 0]], float)
nterm = ~grid41["terminal"]
v41_solve = np.zeros(16)
v41_solve[nterm] = np.linalg.solve(np.eye(nterm.sum()) - P41[np.ix_(nterm, nterm)], r41[nterm])
e41 = close(v41.reshape(4, 4), FIG41, 1e-9, "Figure 4.1 vs iteration")
e41s = close(v41_solve.reshape(4, 4), FIG41, 1e-9, "Figure 4.1 vs solve")
P_rw = np.zeros((5, 5))
for i in range(5):  # the walk restricted to A..E: move to a neighbour with 1/2, exits leave the system
    for j in (i - 1, i + 1):
        if 0 <= j < 5:
            P_rw[i, j] = 0.5
e_rw = close(np.linalg.solve(np.eye(5) - P_rw, np.r_[0, 0, 0, 0, 0.5]), TRUE_RW, 1e-12, "random walk")
print(f"Figure 4.1 values vs iterative evaluation {error_bound(e41, 1e-9)}, vs the solve {error_bound(e41s, 1e-12)}")
print(f"random walk: solve vs 1/6..5/6 {error_bound(e_rw, 1e-12)}")

# %% [markdown]
# A second look at the closed form for MC: `mc_constant_alpha` on one run against a plain loop of eq. 6.1 over
# the visits in order.

# %%
one = traj[:1, :20]  # run 0, first 20 episodes
V_loop = np.r_[0.0, [0.5] * 5, 0.0]
for ep in one[0]:
    path = ep[ep >= 0]
    G = float(path[-1] == 6)
    for s in path[:-1]:
        V_loop[s] += 0.1 * (G - V_loop[s])
e_mc = close(mc_constant_alpha(one, [0.1])[0, 0, -1], rms(V_loop), 1e-12, "MC closed form vs loop")
print(f"MC closed form vs per-visit loop (RMS after 20 episodes) {error_bound(e_mc, 1e-12)}")

# %% [markdown]
# The same for TD(0): `td0_online` (vectorised over runs and step sizes, with masking of finished episodes)
# against a plain loop of eq. 6.2, one run and one transition at a time, on 3 runs x 30 episodes, comparing the
# RMS error after every episode.

# %%
few = traj[:3, :30]
rms_loop = np.zeros((3, 31))
for run in range(3):
    V_loop = np.r_[0.0, [0.5] * 5, 0.0]
    rms_loop[run, 0] = rms(V_loop)
    for e, ep in enumerate(few[run]):
        path = ep[ep >= 0]
        for s, s2 in itertools.pairwise(path):
            V_loop[s] += 0.1 * (float(s2 == 6) + V_loop[s2] - V_loop[s])  # r + gamma V(s'), V(terminal) = 0
        rms_loop[run, e + 1] = rms(V_loop)
e_td_loop = close(td0_online(few, [0.1])[0], rms_loop, 1e-12, "td0_online vs loop")
print(f"td0_online vs a plain eq. 6.2 loop (RMS after each of 30 episodes, 3 runs) {error_bound(e_td_loop, 1e-12)}")

# %% [markdown]
# ## Reproduction
#
# ### A. Error vs iteration on the grid world
#
# **Claims.** Value iteration converges at least as fast as $\gamma^k$ (D3); policy iteration converges in few
# iterations (S&B §4.3); MC and TD(0) converge to the same values from samples. The left panel
# plots $\|v_k - v_*\|_\infty$ per sweep, measured against the exact linear solve $v_* = (I - \gamma
# P_{\pi^*})^{-1} r_{\pi^*}$ (not against value iteration's own last iterate), with the bound
# $\gamma^k\|v_0 - v_*\|_\infty$, for value iteration, for iterative evaluation of $\pi^*$ (the $T_\pi$ contraction)
# and for policy iteration (one point per exact evaluation); the right panel the sample methods: MC's error vs
# episodes per state, TD(0)'s vs sweeps (16 replicates each, mean and min-max).
#
# **Why value iteration ends up much faster than $\gamma^k$.** Once the greedy policy of $v_k$ is $\pi^*$ and stays
# there, $T_* v_k = T_{\pi^*} v_k$, so the error $e_k = v_k - v_*$ obeys $e_{k+1} = T_{\pi^*} v_k - T_{\pi^*} v_* =
# \gamma P_{\pi^*} e_k$. Terminal states have $e_k = 0$ (they stay at 0), so only $Q$, the block of $P_{\pi^*}$ among
# non-terminal states, matters: $e_{k+j} = (\gamma Q)^j e_k$, and $\|(\gamma Q)^j\|^{1/j} \to \gamma\rho(Q)$ (Gelfand's
# formula, $\rho$ the spectral radius). $Q$ is substochastic: $(Q^j \mathbf 1)(s)$ is the probability that an
# episode from $s$ is still running after $j$ steps, so $\rho(Q) < 1$ is the rate at which long episodes die out.
# D3's $\gamma$ is the worst case over all policies and all error vectors; here the asymptotic factor per sweep is
# $\gamma\rho(Q)$. The cell computes it with `numpy.linalg.eigvals` and asserts that the measured late ratio of
# successive errors matches it.

# %%
vi_err = np.abs(vi_trace - v_exact).max(-1)  # against the exact solve (Check 2), not VI's last iterate
pe_trace = [np.zeros(n)]
for _ in range(len(vi_trace) - 1):
    pe_trace.append(T_pi(mdp, GAMMA, pe_trace[-1], one_hot(pi_star)))
pe_err = np.abs(np.array(pe_trace) - v_exact).max(-1)
pi_err = np.abs(pi_values - v_exact).max(-1)
k = np.arange(len(vi_err))

live_s = ~mdp["terminal"]
Q_opt = policy_matrices(mdp, one_hot(pi_star))[0][np.ix_(live_s, live_s)]  # (19, 19), pi*'s non-terminal block
rate = GAMMA * np.abs(np.linalg.eigvals(Q_opt)).max()
wrong = (greedy(mdp, GAMMA, vi_trace)[:, live_s] != pi_star[live_s]).any(-1)  # (sweeps,) greedy(v_k) != pi*
settled = np.flatnonzero(wrong).max() + 1  # from this sweep on, greedy(v_k) = pi* for good
late = np.flatnonzero((k >= settled) & (vi_err < 1e-6) & (vi_err > 1e-11))  # past the transient, above round-off
ratios = vi_err[late[1:]] / vi_err[late[:-1]]
measured = (vi_err[late[-1]] / vi_err[late[0]]) ** (1 / (late[-1] - late[0]))  # geometric mean over the window

m_rep = M_EPISODES // 16  # 16 MC replicates of 125 episodes per state
mc_rep = returns.reshape(live_s.sum(), 16, m_rep)  # (19, 16, 125)
m_grid = np.unique(np.geomspace(1, m_rep, 30).astype(int))
mc_err = np.abs(np.cumsum(mc_rep, -1)[..., m_grid - 1] / m_grid - v_exact[live_s][:, None, None]).max(0)  # (16, m)

fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
ax[0].semilogy(k, np.maximum(vi_err, 1e-16), label="value iteration")
ax[0].semilogy(k, np.maximum(pe_err, 1e-16), "--", label=r"iterative evaluation of $\pi^*$")
ax[0].semilogy(np.arange(len(pi_err)), np.maximum(pi_err, 1e-16), "o-", label="policy iteration (per evaluation)")
ax[0].semilogy(k, GAMMA ** k * vi_err[0], "k:", label=r"bound $\gamma^k \|v_0 - v_*\|$")
k_line = k[20:]  # a line of slope gamma * rho(Q) through the last measured point, shifted down 10x to be visible
ax[0].semilogy(k_line, 0.1 * vi_err[late[-1]] * rate ** (k_line - late[-1]), "r-", lw=0.8,
               label=rf"slope $\gamma\rho(Q)$ = {rate:.3f} (shifted 10x down)")
ax[0].set(xlabel="iteration k", ylabel=r"$\|v_k - v_*\|_\infty$ (vs the solve)", title="dynamic programming",
          ylim=(1e-16, 10))
ax[0].legend(fontsize=7)
ax[1].loglog(m_grid, mc_err.mean(0), label="Monte Carlo, mean of 16 (episodes per state)")
ax[1].fill_between(m_grid, mc_err.min(0), mc_err.max(0), alpha=0.3)
sweeps = np.arange(1, len(td_err) + 1)
ax[1].loglog(sweeps, td_err.mean(1), label="TD(0), mean of 16 (sweeps)")
ax[1].fill_between(sweeps, td_err.min(1), td_err.max(1), alpha=0.3)
ax[1].set(xlabel="samples per state", ylabel=r"$\|V - v_*\|_\infty$",
          title=r"sample-based prediction of $v_{\pi^*}$ (bands: min-max)")
ax[1].legend(fontsize=8)
plt.tight_layout()
plt.show()
print(f"VI reaches 1e-8 after {np.argmax(vi_err < 1e-8)} sweeps (bound: "
      f"{int(np.ceil(np.log(1e-8 / vi_err[0]) / np.log(GAMMA)))}); PI is exact after {len(pi_err) - 1} improvements")
live = vi_err[vi_err > 1e-13]  # before round-off: ||v_k+1 - v*|| = ||T v_k - T v*|| <= gamma ||v_k - v*||
print(f"worst ratio of successive VI errors {np.max(live[1:] / live[:-1]):.4f} <= gamma = {GAMMA}")
print(f"greedy(v_k) = pi* from sweep {settled} on; gamma * rho(Q) = {GAMMA} x {rate / GAMMA:.4f} = {rate:.4f}")
print(f"measured ratio over sweeps {late[0]}-{late[-1]}: geometric mean {measured:.4f}, "
      f"per sweep {ratios.min():.3f}-{ratios.max():.3f}")
print(f"MC, 16 replicates x {m_rep} episodes per state: error {mc_err[:, -1].mean():.3f} ± {mc_err[:, -1].std():.3f} "
      f"(min-max {mc_err[:, -1].min():.3f}-{mc_err[:, -1].max():.3f}); TD(0) after 4000 sweeps "
      f"{td_err[-1].mean():.3f} ± {td_err[-1].std():.3f} ({td_err[-1].min():.3f}-{td_err[-1].max():.3f})")
assert np.max(live[1:] / live[:-1]) <= GAMMA + 1e-9
assert abs(measured / rate - 1) < 0.05, (measured, rate)  # the late phase contracts at gamma * rho(Q)

# %% [markdown]
# **Reading the result.** The $\gamma^k$ bound holds (worst ratio of successive errors 0.944 $\le \gamma$) but is
# loose. For the first ~11 sweeps value iteration's error shrinks by 0.93-0.94 per sweep, close to $\gamma$: the
# error sits in the states far from the goal, which the values propagating back from the goal have not reached
# yet. The greedy policy is $\pi^*$ from sweep 8 on, and the ratio then falls gradually to 0.49-0.50 (geometric
# mean 0.493 over sweeps 36-52), within 1.4% of $\gamma\rho(Q) = 0.95 \times 0.512 = 0.487$; the approach is
# gradual because $Q$'s next eigenvalues have modulus 0.437, not far below 0.512. So value iteration reaches
# $10^{-8}$ after 43 sweeps where the bound promises 359. Iterative evaluation of $\pi^*$ obeys $e_{k+1} = \gamma Q
# e_k$ from the first sweep and behaves the same. Policy iteration is exact after 6 improvements (7 solves, each
# an $n \times n$ linear system, so more work per step). The right panel's two x-axes count different things:
# one MC sample is a whole episode (many transitions), one TD sweep is one transition per state, so the panel
# shows both converging to $v_* = v_{\pi^*}$ (MC like $1/\sqrt{m}$: after 125 episodes per state the sup-norm error
# is 0.079 ± 0.035, min-max 0.029-0.144, over 16 replicates), not a matched-budget race; part B below is the
# matched comparison.

# %% [markdown]
# ### B. MC vs TD(0) on the random walk (S&B Example 6.2), with a step-size ablation
#
# **Claim (Example 6.2, right panel).** Averaged over 100 runs, the RMS error over the five states falls faster
# with TD(0) than with constant-$\alpha$ MC on this task, for the step sizes shown (TD
# $\alpha \in \{0.05, 0.1, 0.15\}$, MC $\alpha \in \{0.01, 0.02, 0.03, 0.04\}$). The book gives this result only
# as a figure, with no table of numbers; this reading does not read values off the plot, so what is compared
# is the ordering of the curves (every TD curve below every MC curve by episode 100) and the dip of TD
# $\alpha = 0.15$, not end values. Here both methods see the **same
# 100 runs x 100 episodes**; the ablation sweeps $\alpha$ over the union of the book's values plus 0.2 and 0.3 for
# both. The spread is over the 100 runs (each a different seed of the episode stream).

# %%
ALPHAS = [0.01, 0.02, 0.03, 0.04, 0.05, 0.1, 0.15, 0.2, 0.3]
err_td = td0_online(traj, ALPHAS)  # (n_alpha, runs, episodes + 1)
err_mc = mc_constant_alpha(traj, ALPHAS)
print(f"{'alpha':>6} | {'TD(0) RMS at ep. 100: mean ± std':>32} {'min-max':>12} | "
      f"{'MC':>15} {'min-max':>12} | TD < MC in runs")
for i, a in enumerate(ALPHAS):
    t, m = err_td[i, :, -1], err_mc[i, :, -1]
    print(f"{a:>6} | {t.mean():>24.3f} ± {t.std():.3f} {t.min():>6.3f}-{t.max():.3f} | "
          f"{m.mean():>7.3f} ± {m.std():.3f} {m.min():>6.3f}-{m.max():.3f} | {(t < m).mean():>6.0%}")

fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
ep = np.arange(EPISODES + 1)
colour = {}
for i, a in enumerate(ALPHAS):
    if a in (0.05, 0.1, 0.15):
        colour[a] = ax[0].plot(ep, err_td[i].mean(0), label=rf"TD $\alpha$={a}")[0].get_color()
    if a in (0.01, 0.02, 0.03, 0.04):
        ax[0].plot(ep, err_mc[i].mean(0), "--", label=rf"MC $\alpha$={a}")
i01 = ALPHAS.index(0.1)
ax[0].fill_between(ep, *np.percentile(err_td[i01], [10, 90], axis=0), alpha=0.2, color=colour[0.1])
ax[0].set(xlabel="episodes", ylabel="RMS error (mean of 100 runs)", title="Example 6.2 (band: TD 0.1, 10-90%)")
ax[0].legend(fontsize=7, ncol=2)
ax[1].errorbar(ALPHAS, err_td[:, :, -10:].mean((1, 2)), err_td[:, :, -10:].mean(2).std(1), fmt="o-", label="TD(0)")
ax[1].errorbar(ALPHAS, err_mc[:, :, -10:].mean((1, 2)), err_mc[:, :, -10:].mean(2).std(1), fmt="s--", label="MC")
ax[1].set(xscale="log", xlabel=r"step size $\alpha$", ylabel="RMS, episodes 91-100 (± std over runs)",
          title="step-size ablation")
ax[1].legend()
plt.tight_layout()
plt.show()
curve = err_td[ALPHAS.index(0.15)].mean(0)
print(f"TD alpha=0.15: lowest mean RMS {curve.min():.3f} at episode {curve.argmin()}, {curve[-1]:.3f} at episode 100")

# %% [markdown]
# **Reading the result.** The trend matches Example 6.2: each TD(0) curve at the book's step sizes (0.05, 0.1,
# 0.15) ends below each MC curve at the book's (0.01-0.04), and TD's best $\alpha$ (0.04, RMS 0.032) beats MC's
# best (0.02, 0.077). It is not true at every step size: at $\alpha = 0.01$ MC is ahead after 100 episodes
# (0.095 vs 0.128, TD wins in 6% of runs), because TD moves each estimate only a fraction $\alpha$ toward a
# target that is itself still near its 0.5 start, so with a tiny $\alpha$ information from the ends creeps in one
# state at a time, while MC's target is the true outcome. At $\alpha = 0.02$ TD's mean is lower but it wins only
# 57% of runs. Large step sizes make both noisy: with a constant $\alpha$ neither converges, the error plateaus
# at a level set by $\alpha$, and MC's plateau is higher (its target has the larger variance, D5); the std and
# min-max columns show MC's spread over runs is 2-10 times TD's. The book's TD $\alpha = 0.15$ curve dips and
# then rises slightly (its Exercise 6.5 asks why); the toy shows it too: the mean RMS bottoms at 0.053 around
# episode 23 and is back at 0.071 by episode 100 (line printed above).
#
# ### What a healthy run prints
#
# The grid checks pass at machine precision (< 1e-12); value iteration's late error ratio is within 5% of
# $\gamma\rho(Q) \approx 0.487$ (asserted in part A); the tiny MDP has several optimal policies; TD(0) with
# $\alpha = 0.1$ ends near an RMS error of 0.056 (healthy range 0.04-0.12), below the best MC step size (about
# 0.077); the book's TD curves all end below its MC curves.

# %%
best_mc = err_mc[:, :, -1].mean(1).min()
td01 = err_td[i01, :, -1].mean()
print(f"healthy: TD(0) alpha=0.1 RMS {td01:.3f} in [0.04, 0.12]; best MC {best_mc:.3f} > TD(0); "
      f"optimal policies of the tiny MDP {len(dominant)} > 1")
assert 0.04 < td01 < 0.12 and best_mc > td01 and len(dominant) > 1
book_td = [ALPHAS.index(a) for a in (0.05, 0.1, 0.15)]
book_mc = [ALPHAS.index(a) for a in (0.01, 0.02, 0.03, 0.04)]
assert err_td[book_td, :, -1].mean(1).max() < err_mc[book_mc, :, -1].mean(1).min()  # Example 6.2's ordering

# %% [markdown]
# ### C. The rest of chapters 3-6, in brief, with two checks
#
# This reading implements prediction (evaluating a fixed policy) and model-based control. The chapters also
# contain, in order of appearance:
#
# - **The Bellman equation for $q_\pi$** (§3.5, left there as an exercise): by D1's steps,
#   $q_\pi(s,a) = \sum_{s',r} p(s',r\mid s,a)\,[r + \gamma \sum_{a'} \pi(a'\mid s')\, q_\pi(s',a')]$, again one linear
#   system, now of size $|\mathcal S||\mathcal A|$. The cell below solves it directly and compares it with
#   $q_\pi = r + \gamma P v_\pi$ from D1's solve.
# - **Asynchronous DP (§4.5):** update states one at a time, in any order, in place, each with the latest values
#   of the others; it still converges to $v_*$ if every state keeps being updated (each single-state update is a
#   $\gamma$-contraction in that coordinate). W3's sweeps use two arrays, the synchronous form.
# - **Generalized policy iteration (§4.6):** evaluation and improvement interleaved at any granularity (policy
#   iteration: full evaluation; value iteration: one sweep; asynchronous DP: one state). Both processes are stable
#   together only when the value is consistent with the policy and the policy greedy for the value, i.e. at the
#   solution of D2 (the stopping argument of D4). Almost every RL method is described in the book as a GPI.
# - **Control from samples:** MC control with exploring starts (§5.3) or with $\varepsilon$-soft policies (§5.4);
#   off-policy prediction by importance sampling, ordinary and weighted (§5.5); Sarsa (§6.4), on-policy TD
#   control on $Q$; Q-learning (§6.5), whose target $R_{t+1} + \gamma \max_{a'} Q(S_{t+1}, a')$ is a sampled
#   version of eq. 3.20. R2 onward takes another route to control: a parametrised policy trained by gradients.
# - **Batch TD and certainty equivalence (§6.3: Example 6.3 and its Figure 6.2, the random walk under batch updating; Example 6.4 for certainty equivalence):** replaying a fixed set of episodes
#   until convergence, batch MC converges to the average return observed from each state (least squares on the
#   data), batch TD(0) to the exact value of the maximum-likelihood Markov model of the data (the
#   *certainty-equivalence* estimate). This is the book's explanation of why TD beats MC on the random walk; the
#   second cell below checks it on part B's episodes.

# %%
# The Bellman equation for q_pi as its own linear system, (I - gamma P Pi) q = r over (s, a) pairs.
PPi = np.einsum("sat,tb->satb", mdp["P"], uniform).reshape(4 * n, 4 * n)  # [(s,a), (s',a')] = p(s'|s,a) pi(a'|s')
q_solve = np.linalg.solve(np.eye(4 * n) - GAMMA * PPi, mdp["R"].ravel()).reshape(n, 4)
e_q = close(q_solve, q_from_v(mdp, GAMMA, v_uniform), 1e-12, "q_pi solve vs r + gamma P v_pi")
e_vq = close((uniform * q_solve).sum(1), v_uniform, 1e-12, "v_pi = sum_a pi q_pi")
print(f"q_pi of the uniform policy, own {4 * n}x{4 * n} solve vs r + gamma P v_pi {error_bound(e_q, 1e-12)}; "
      f"sum_a pi(a|s) q_pi(s,a) vs v_pi {error_bound(e_vq, 1e-12)}")


# %%
# Batch TD(0) and batch MC on the first E episodes of each run of part B (S&B §6.3).
def batch_estimates(episodes):
    """Certainty-equivalence solve and batch (every-visit) MC from a set of episodes (E, L); unvisited: 0.5."""
    s, s2 = episodes[:, :-1].ravel(), episodes[:, 1:].ravel()
    ok = s2 >= 0
    counts = np.zeros((7, 7))
    np.add.at(counts, (s[ok], s2[ok]), 1.0)
    seen = counts[1:6].sum(1) > 0
    P_hat = counts[1:6] / np.maximum(counts[1:6].sum(1, keepdims=True), 1)  # (5, 7) maximum-likelihood model
    A = np.where(seen[:, None], np.eye(5) - P_hat[:, 1:6], np.eye(5))
    V_ce = np.r_[0.0, np.linalg.solve(A, np.where(seen, P_hat[:, 6], 0.5)), 0.0]
    G = np.repeat((episodes == 6).any(-1), episodes.shape[1] - 1)  # each transition's episode return
    n_visits = np.bincount(s[ok], minlength=7)
    V_mc = np.bincount(s[ok], weights=G[ok], minlength=7) / np.maximum(n_visits, 1)
    V_mc[1:6] = np.where(seen, V_mc[1:6], 0.5)
    return V_ce, V_mc, (s[ok], s2[ok])


def batch_td(transitions, tol=1e-13, max_iter=50_000):
    """Batch TD(0) as in §6.3: sum the eq. 6.2 increments over all transitions, apply, repeat until they vanish."""
    s, s2 = transitions
    V = np.r_[0.0, [0.5] * 5, 0.0]
    alpha = 0.5 / np.bincount(s).max()
    for _ in range(max_iter):
        U = np.bincount(s, weights=(s2 == 6) + V[s2] - V[s], minlength=7)
        V += alpha * U
        if np.abs(U).max() < tol:
            break
    return V


print(f"{'episodes':>8} | {'batch TD (= CE) RMS':>20} {'min-max':>12} | {'batch MC RMS':>14} {'min-max':>12} | TD < MC")
batch = {}
for E in (10, 30, 100):
    est = [batch_estimates(traj[r, :E]) for r in range(RUNS)]
    ce, mc = np.array([rms(e[0]) for e in est]), np.array([rms(e[1]) for e in est])
    batch[E] = ce, mc
    print(f"{E:>8} | {ce.mean():>12.3f} ± {ce.std():.3f} {ce.min():>6.3f}-{ce.max():.3f} | "
          f"{mc.mean():>6.3f} ± {mc.std():.3f} {mc.min():>6.3f}-{mc.max():.3f} | {(ce < mc).mean():>5.0%}")
e_ce = 0.0
for r in range(3):
    V_ce, _, transitions = batch_estimates(traj[r, :30])
    e_ce = max(e_ce, close(batch_td(transitions), V_ce, 1e-9, "batch TD vs certainty equivalence"))
print(f"batch TD(0) iterated to convergence vs the certainty-equivalence solve (3 runs, 30 episodes) "
      f"{error_bound(e_ce, 1e-9)}")

# %% [markdown]
# Batch TD(0) lands on the certainty-equivalence estimate (asserted above, to $10^{-9}$). On the same episodes its
# mean RMS error is below batch MC's at every batch size (0.113 vs 0.160 after 10 episodes, 0.036 vs 0.056 after
# 100), in about three runs out of four, the ordering of Figure 6.2. The online learners of part B
# only move part of the way toward these two targets after each episode, which is how the book connects §6.3 to
# Example 6.2.

# %% [markdown]
# ## Misconceptions
#
# - **Claim (seed table, Bellman row):** "$V(s) = \max_a[r + \gamma V(s')]$". **Correction:** that omits the
#   expectation over the next state. The optimality equation is $v_*(s) = \max_a \sum_{s',r} p(s',r\mid s,a)[r +
#   \gamma v_*(s')]$ (S&B §3.6); on the slippery grid the version without the expectation is off by the amount
#   printed in W1, the right one by < 1e-12.
# - **Claim (seed table):** the Bellman equation arrived in the 1990s to fix early RL. **Correction:** dynamic
#   programming and the principle of optimality are Bellman's, 1950s (R. Bellman, *Dynamic Programming*,
#   Princeton University Press, 1957; S&B §1.7 traces RL's optimal-control thread to it).
# - **Claim (seed table):** the Bellman framework cut value-estimation error "from 20% to 5%", Monte Carlo needs
#   "1000+ samples", iterate "until error < 1e-4" with $\gamma$ "0.9-0.99". **Correction:** these figures are
#   invented; the error of an exact method is set by the stopping tolerance (machine precision here), a sample
#   method's by its variance and number of samples (W2, part B of the Reproduction), and $\gamma$ is part of the problem's definition.
# - **Claim:** "minimising the Bellman error by gradient descent gives accurate values" (seed). **Correction:**
#   not what chapters 3-6 do: TD(0) is a sampled fixed-point iteration (D5), not gradient descent on an error, and
#   S&B ch. 11 (§11.5-11.6, gradient descent in the Bellman error; the Bellman error is not learnable) explains
#   why minimising the Bellman error is not the fix; not reproduced here.
# - **Claim:** "the optimal policy is unique". **Correction:** $v_*$ is unique (D3), optimal policies need not be:
#   the brute force in the Check found 2 policies optimal in every state of the tiny MDP (they differ
#   only in the start corner, where going right or down around the wall are mirror images).
# - **Claim:** "TD is unbiased like MC, just faster" / "MC is always more accurate because it is unbiased".
#   **Correction:** TD's target is biased while $V \ne v_\pi$ but has lower variance; on the random walk that wins
#   at every step size from 0.02 up, but not at 0.01 (part B of the Reproduction; S&B's Exercise 6.4 asks
#   whether a wider range of $\alpha$ would change the conclusion, and the ablation is that experiment on this
#   toy). Which converges faster in general is, S&B §6.2 says, an open question.
# - **Claim:** "Monte Carlo works on continuing tasks". **Correction:** MC's target $G_t$ needs the episode to end
#   (S&B ch. 5 is defined for episodic tasks); TD(0) updates after every step.

# %% [markdown]
# ## Exercises
#
# 1. In Figure 4.1's gridworld, what is $v_\pi$ of a cell next to a terminal corner (e.g. state 1)? And of
#    state 1 if $\gamma = 0.9$ (solve, to 3 decimals)?
# 2. Value iteration starts from $v_0 = 0$ on the grid world, where $\|v_*\|_\infty \le 1$. Using only D3's bound,
#    how many sweeps guarantee $\|v_k - v_*\|_\infty < 10^{-6}$ with $\gamma = 0.95$?
# 3. In the random walk, change the left exit's reward to $-1$ (right stays $+1$, $\gamma = 1$). What is the true
#    value of state A?
# 4. How many deterministic policies does the 5x5 grid world have, counting only non-terminal states?
#
# Fill in your answers and run the cell; `None` skips a question. The key is computed by code (not printed).

# %%
answers = {"1_gamma1": None, "1_gamma09": None, "2": None, "3": None, "4": None}


def exercise_key():
    key = {"1_gamma1": v41[1]}
    v09 = np.linalg.solve(np.eye(nterm.sum()) - 0.9 * P41[np.ix_(nterm, nterm)], r41[nterm])
    key["1_gamma09"] = v09[0]  # state 1 is the first non-terminal state
    key["2"] = int(np.ceil(np.log(1e-6) / np.log(0.95)))
    key["3"] = np.linalg.solve(np.eye(5) - P_rw, np.r_[-0.5, 0, 0, 0, 0.5])[0]
    key["4"] = 4 ** int((~mdp["terminal"]).sum())
    return key


key = exercise_key()
for name, value in answers.items():
    if value is None:
        print(f"exercise {name}: not answered")
    else:
        print(f"exercise {name}: {'correct' if abs(value - key[name]) < 2e-3 else 'not yet, try again'}")

# %% [markdown]
# <details>
# <summary><b>Solutions</b> (click to open once you have tried)</summary>
#
# 1. $-14$ (Figure 4.1). With $\gamma = 0.9$ solve $(I - 0.9 P_\pi) v = -1$ on the 14 non-terminal states; state 1
#    gets $-5.278$.
# 2. $\gamma^k \cdot 1 < 10^{-6}$ gives $k > \ln 10^{-6} / \ln 0.95 \approx 269.3$, so 270 sweeps.
# 3. $v(s) = P(\text{right}) - P(\text{left}) = 2\cdot\frac{s}{6} - 1$: A gets $-2/3$.
# 4. $4^{19} = 274{,}877{,}906{,}944$: far too many to enumerate, which is why policy iteration matters.
#
# </details>
#
# **Next:** [R2 · Policy gradients and GAE](R2_policy_gradients_gae.ipynb) replaces the table $V$ by a learned critic and the greedy step
# by a gradient on the policy; GAE's $\lambda$ interpolates between TD(0) ($\lambda = 0$) and Monte Carlo ($\lambda = 1$).

# %% [markdown]
# ## References
#
# - R. S. Sutton, A. G. Barto. *Reinforcement Learning: An Introduction*, 2nd ed. MIT Press, 2018.
#   http://incompleteideas.net/book/the-book-2nd.html. §3.1-3.6 (MDPs, returns, value functions, Bellman equation
#   eq. 3.14, Bellman optimality equation), §4.1-4.4 (iterative policy evaluation, Example 4.1 and Figure 4.1,
#   policy improvement, policy iteration, value iteration), §4.5-4.6 (asynchronous DP, GPI), §5.1 (MC prediction),
#   §5.3-5.5 (MC control, importance sampling), §6.1-6.2 (TD(0), eqs. 6.1-6.2, Example 6.2, the random walk),
#   §6.3 (batch TD, certainty equivalence, Figure 6.2), §6.4-6.5 (Sarsa, Q-learning), §11.5-11.6 (the Bellman error).
# - R. Bellman. *Dynamic Programming.* Princeton University Press, 1957.
# - Reference implementation for the tables: `gymnasium` 1.4.0, `gymnasium/envs/toy_text/frozen_lake.py`,
#   `FrozenLakeEnv(desc, is_slippery, success_rate, reward_schedule)` and its `P[s][a]` list of
#   `(probability, next_state, reward, terminated)`.
# - Shangtong Zhang and contributors, Python reproduction of the book's figures,
#   https://github.com/ShangtongZhang/reinforcement-learning-an-introduction, `chapter06/random_walk.py`
#   (`temporal_difference`, `monte_carlo`, `rms_error` for Example 6.2, `batch_updating` for Figure 6.2); read at
#   commit 96bc203 (2024-04). Whether the book's website links to it was not checked (no web access here).
# - `shared/returns.py` (`discounted_returns`), the course's return helper, used in the MC check.
