"""Returns and advantages of a rollout: discounted returns, TD errors and GAE (the lambda-return).

Paper: GAE, Schulman et al., "High-Dimensional Continuous Control Using Generalized Advantage Estimation" (arXiv
1506.02438, eqs. 16-18). :func:`gae` follows ``stable-baselines3`` 2.9.2's
``RolloutBuffer.compute_returns_and_advantage`` (``tests/test_returns.py`` checks it against that method, and
against the lambda-return written out from n-step returns).

Shapes: a rollout is ``T`` steps of ``n_envs`` environments run side by side, time first: ``rewards``,
``values`` and ``dones`` are ``(T,)`` or ``(T, n_envs)``; ``last_values`` is ``()`` or ``(n_envs,)``.

- ``rewards[t]``: the reward of step ``t`` (the transition ``s_t -> s_{t+1}``).
- ``values[t] = V(s_t)``, the critic's value of the state the step started from.
- ``dones[t]``: 1 when the episode **terminated** at step ``t``; then ``s_{t+1}`` belongs to a new episode
  and nothing is bootstrapped across the boundary. (``stable-baselines3`` stores the same flag shifted by one,
  as ``episode_starts[t + 1]``, and passes the last step's flag as ``dones``.)
- ``last_values = V(s_T)``, the state after the rollout's last step: the rollout is **truncated** there (it
  stops mid-episode), so the last step bootstraps from ``last_values`` unless ``dones[T - 1]``.
- An episode cut by a **time limit** inside the rollout (gymnasium's ``truncated``) is not a termination: the
  state was not terminal. ``stable-baselines3`` handles it by adding ``gamma * V(final observation)`` to that
  step's reward and then treating the step as done; do the same before calling :func:`gae`.

The recursion (GAE eq. 16 summed backwards, with ``nonterminal_t = 1 - dones[t]``)::

    delta_t = r_t + gamma * nonterminal_t * V(s_{t+1}) - V(s_t)            (the TD error)
    A_t     = delta_t + gamma * lam * nonterminal_t * A_{t+1}              (A_T = 0)
    G_t     = A_t + V(s_t)                                                 (the lambda-return, the critic's target)

``lam = 0`` gives the TD error ``delta_t`` (TD(0) advantage); ``lam = 1`` gives the discounted Monte Carlo
return (bootstrapped at the rollout's end) minus ``V(s_t)``.
"""

from __future__ import annotations

import torch

from shared.utils import InputTypeError, check_number, check_same_device, check_tensor

__all__ = ["td_errors", "gae", "discounted_returns"]


def _check_rollout(
    rewards: object, values: object | None, dones: object, last_values: object | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Validate a rollout's tensors; ``dones`` comes back as a float 0/1 tensor of ``rewards``' dtype."""
    r = check_tensor("rewards", rewards, ndim=(1, 2), dtype_kind="float", nonempty=True, finite=True)
    v = None
    if values is not None:
        v = check_tensor("values", values, ndim=(1, 2), dtype_kind="float", finite=True)
        if v.shape != r.shape:
            raise ValueError(f"values must have the shape of rewards {tuple(r.shape)}, got {tuple(v.shape)}")
        if v.dtype != r.dtype:
            raise InputTypeError(f"values is {v.dtype} but rewards is {r.dtype}; use one dtype")
    d = check_tensor("dones", dones, ndim=(1, 2), finite=True)
    if d.shape != r.shape:
        raise ValueError(f"dones must have the shape of rewards {tuple(r.shape)}, got {tuple(d.shape)}")
    if d.is_complex() or not bool(((d == 0) | (d == 1)).all()):
        raise ValueError("dones must hold 0/1 (or False/True): 1 where the episode terminated at that step")
    lv = None
    if last_values is not None:
        lv = check_tensor("last_values", last_values, ndim=(0, 1), dtype_kind="float", finite=True)
        if lv.shape != r.shape[1:]:
            raise ValueError(
                f"last_values must have shape {tuple(r.shape[1:])} (one value per environment), got {tuple(lv.shape)}"
            )
        if lv.dtype != r.dtype:
            raise InputTypeError(f"last_values is {lv.dtype} but rewards is {r.dtype}; use one dtype")
    check_same_device(rewards=r, values=v, dones=d, last_values=lv)
    return r, v, d.to(r.dtype), lv


def _check_discount(name: str, value: object) -> float:
    return check_number(name, value, ge=0, le=1)


def td_errors(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    *,
    gamma: float = 0.99,
) -> torch.Tensor:
    """TD errors ``delta_t = r_t + gamma * (1 - done_t) * V(s_{t+1}) - V(s_t)``, the shape of ``rewards``."""
    r, v, d, lv = _check_rollout(rewards, values, dones, last_values)
    assert v is not None and lv is not None
    gamma = _check_discount("gamma", gamma)
    next_values = torch.cat((v[1:], lv.unsqueeze(0)))  # (T, ...): V(s_{t+1}), last_values after the last step
    return r + gamma * (1 - d) * next_values - v


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    *,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lam) advantages and lambda-returns, ``(advantages, returns)``, each the shape of ``rewards``.

    ``returns = advantages + values`` is the TD(lambda) target of the critic (what ``stable-baselines3`` stores
    as ``RolloutBuffer.returns``). No gradient flows through: the inputs are detached.
    """
    delta = td_errors(rewards, values, dones, last_values, gamma=gamma).detach()  # (T, ...)
    lam = _check_discount("lam", lam)
    nonterminal = 1 - dones.to(delta.dtype)
    advantages = torch.empty_like(delta)
    next_advantage = torch.zeros_like(delta[0])  # A_T = 0: nothing after the rollout
    for t in reversed(range(delta.shape[0])):
        next_advantage = delta[t] + gamma * lam * nonterminal[t] * next_advantage
        advantages[t] = next_advantage
    return advantages, advantages + values.detach()


def discounted_returns(
    rewards: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor | None = None,
    *,
    gamma: float = 0.99,
) -> torch.Tensor:
    """Discounted returns ``G_t = r_t + gamma * (1 - done_t) * G_{t+1}``, the shape of ``rewards``.

    ``G_T = last_values`` (bootstrap a rollout truncated mid-episode) or 0 when ``last_values`` is ``None``
    (the rollout ends with its episodes). This is the Monte Carlo return REINFORCE uses.
    """
    r, _, d, lv = _check_rollout(rewards, None, dones, last_values)
    gamma = _check_discount("gamma", gamma)
    out = torch.empty_like(r)
    running = torch.zeros_like(r[0]) if lv is None else lv.detach().clone()
    for t in reversed(range(r.shape[0])):
        running = r[t] + gamma * (1 - d[t]) * running
        out[t] = running
    return out
