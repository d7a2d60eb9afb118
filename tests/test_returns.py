"""``shared.returns`` (GAE, TD errors, discounted returns) and PPO's losses in ``shared.policy_losses``.

References: ``stable-baselines3`` 2.9.2's ``RolloutBuffer.compute_returns_and_advantage`` (GAE, with episode
boundaries inside the rollout and a truncated last step), ``PPO.train`` (its logged policy and value losses on
the same tensors), and the lambda-return written out from its definition as a weighted sum of n-step returns
(GAE paper, arXiv 1506.02438, eqs. 17-18), an independent computation.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.logger import Logger

from shared import policy_losses as P
from shared import returns as RT

DT = torch.float64


def _rollout(seed: int, T: int, n_envs: int, p_done: float = 0.2):
    g = np.random.default_rng(seed)
    rewards = g.normal(size=(T, n_envs)).astype(np.float32)
    values = g.normal(size=(T, n_envs)).astype(np.float32)
    dones = (g.random((T, n_envs)) < p_done).astype(np.float32)  # dones[t]: terminated at step t
    last_values = g.normal(size=n_envs).astype(np.float32)
    return rewards, values, dones, last_values


def _sb3_gae(rewards, values, dones, last_values, gamma, lam):
    """Fill an sb3 RolloutBuffer: episode_starts[t] is the done flag of step t - 1, the last done goes in ``dones``."""
    T, n_envs = rewards.shape
    buf = RolloutBuffer(
        T,
        gym.spaces.Box(-1, 1, (1,)),
        gym.spaces.Discrete(2),
        "cpu",
        gae_lambda=lam,
        gamma=gamma,
        n_envs=n_envs,
    )
    episode_start = np.ones(n_envs, dtype=np.float32)  # the rollout begins with fresh episodes
    for t in range(T):
        buf.add(
            np.zeros((n_envs, 1), np.float32),
            np.zeros((n_envs, 1)),
            rewards[t],
            episode_start,
            torch.as_tensor(values[t]),
            torch.zeros(n_envs),
        )
        episode_start = dones[t]
    buf.compute_returns_and_advantage(torch.as_tensor(last_values), dones[-1])
    return buf.advantages, buf.returns


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    T=st.integers(1, 12),
    n_envs=st.integers(1, 3),
    gamma=st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]),
    lam=st.sampled_from([0.0, 0.3, 0.95, 1.0]),
)
def test_gae_equals_stable_baselines3(seed, T, n_envs, gamma, lam):
    r, v, d, lv = _rollout(seed, T, n_envs)
    adv_ref, ret_ref = _sb3_gae(r, v, d, lv, gamma, lam)
    adv, ret = RT.gae(*(torch.as_tensor(x, dtype=DT) for x in (r, v, d, lv)), gamma=gamma, lam=lam)
    np.testing.assert_allclose(adv.numpy(), adv_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret.numpy(), ret_ref, rtol=1e-5, atol=1e-5)


def _lambda_return_brute_force(r, v, d, lv, gamma, lam):
    """G^lambda_t = (1 - lam) sum_n lam^(n-1) G^(n)_t, the tail weight on the return that reaches the end.

    G^(n)_t = r_t + ... + gamma^(n-1) r_{t+n-1} + gamma^n V(s_{t+n}), stopped at a termination (no bootstrap)
    or at the rollout's end (bootstrap from last_values). One environment, float64, explicit sums.
    """
    T = len(r)
    values_next = list(v[1:]) + [lv]
    out = np.zeros(T)
    for t in range(T):
        # the steps t..end reachable before a termination or the rollout's end
        end = t
        while end < T - 1 and not d[end]:
            end += 1
        n_max = end - t + 1
        terminal = bool(d[end])

        def n_step(n, t=t, terminal=terminal, n_max=n_max):
            g = sum(gamma**k * r[t + k] for k in range(n))
            if n < n_max or not terminal:
                g += gamma**n * values_next[t + n - 1]
            return g

        if lam == 1.0:
            out[t] = n_step(n_max)
        else:
            out[t] = sum((1 - lam) * lam ** (n - 1) * n_step(n) for n in range(1, n_max)) + lam ** (
                n_max - 1
            ) * n_step(n_max)
    return out


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_gae_returns_are_the_lambda_return(seed, lam):
    r, v, d, lv = (x.astype(np.float64) for x in _rollout(seed, 15, 1, p_done=0.15))
    r, v, d, lv = r[:, 0], v[:, 0], d[:, 0], lv[0]
    _, ret = RT.gae(*(torch.as_tensor(x) for x in (r, v, d, lv)), gamma=0.9, lam=lam)
    np.testing.assert_allclose(ret.numpy(), _lambda_return_brute_force(r, v, d, lv, 0.9, lam), atol=1e-12)


def test_lambda_zero_is_td_and_one_is_monte_carlo():
    r, v, d, lv = (torch.as_tensor(x, dtype=DT) for x in _rollout(7, 20, 2))
    adv0, _ = RT.gae(r, v, d, lv, gamma=0.9, lam=0.0)
    torch.testing.assert_close(adv0, RT.td_errors(r, v, d, lv, gamma=0.9))
    adv1, _ = RT.gae(r, v, d, lv, gamma=0.9, lam=1.0)
    torch.testing.assert_close(adv1, RT.discounted_returns(r, d, lv, gamma=0.9) - v)


def test_discounted_returns_by_hand():
    r = torch.tensor([1.0, 2.0, 3.0, 4.0])
    d = torch.tensor([0, 1, 0, 0])
    # episode 1 = steps 0-1, episode 2 = steps 2-3 (no bootstrap: last_values None)
    expected = torch.tensor([1 + 0.5 * 2, 2, 3 + 0.5 * 4, 4])
    torch.testing.assert_close(RT.discounted_returns(r, d, gamma=0.5), expected)
    torch.testing.assert_close(
        RT.discounted_returns(r, d, torch.tensor(8.0), gamma=0.5),
        expected + torch.tensor([0, 0, 0.5 * 4.0, 4.0]),
    )


@pytest.mark.parametrize("clip_range_vf", [None, 0.05])
def test_ppo_losses_equal_stable_baselines3_train(clip_range_vf):
    """sb3's PPO.train on a perturbed CartPole rollout logs the policy and value losses of shared's functions."""
    n = 64
    model = PPO(
        "MlpPolicy", gym.make("CartPole-v1"), n_steps=n, batch_size=n, n_epochs=1, clip_range=0.2,
        clip_range_vf=clip_range_vf, seed=0, device="cpu",
    )  # fmt: skip
    model.set_logger(Logger(folder=None, output_formats=[]))  # no files, no output
    model._setup_learn(n)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, n)
    buf = model.rollout_buffer
    g = np.random.default_rng(0)
    buf.log_probs += g.normal(scale=0.3, size=buf.log_probs.shape).astype(np.float32)  # ratios away from 1
    buf.values += g.normal(scale=0.2, size=buf.values.shape).astype(np.float32)  # old values away from now
    obs = torch.as_tensor(buf.observations.reshape(n, -1))
    actions = torch.as_tensor(buf.actions.reshape(n)).long()
    with torch.no_grad():
        values, log_prob, _ = model.policy.evaluate_actions(obs, actions)
    adv = torch.as_tensor(buf.advantages.reshape(n))
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)  # sb3's per-minibatch advantage normalisation
    log_w = log_prob - torch.as_tensor(buf.log_probs.reshape(n))
    policy_loss = P.clipped_surrogate(log_w, adv).mean()
    value_loss = P.clipped_value_loss(
        values.flatten(), torch.as_tensor(buf.values.reshape(n)), torch.as_tensor(buf.returns.reshape(n)),
        clip_range=clip_range_vf,
    )  # fmt: skip
    model.train()
    logged = model.logger.name_to_value
    assert float((log_w.exp() - 1).abs().gt(0.2).float().mean()) > 0.2  # the clip fires on many samples
    # float32 means of 64 terms: equal to a few ulps of the loss itself (the value loss is ~1e2, one ulp ~8e-6),
    # and the sum order differs between sb3's F.mse_loss and shared's mean, so compare relatively.
    assert logged["train/policy_gradient_loss"] == pytest.approx(float(policy_loss), rel=1e-6, abs=1e-6)
    assert logged["train/value_loss"] == pytest.approx(float(value_loss), rel=1e-6, abs=1e-6)


def test_value_clip_forms_by_hand():
    values, old, ret = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([2.0, -1.0])
    # v_clip = [0.5, 0.0]: prediction form ((2 - 0.5)^2 + 1) / 2; max form (max(1, 2.25) + max(1, 1)) / 2
    assert float(P.clipped_value_loss(values, old, ret, clip_range=0.5)) == pytest.approx((2.25 + 1) / 2)
    assert float(P.clipped_value_loss(values, old, ret, clip_range=0.5, form="max")) == pytest.approx(
        (2.25 + 1) / 2
    )
    values = torch.tensor([3.0])  # beyond the band on the far side of the target: max keeps the larger error
    assert float(P.clipped_value_loss(values, old[:1], ret[:1], clip_range=0.5)) == pytest.approx(2.25)
    assert float(P.clipped_value_loss(values, old[:1], ret[:1], clip_range=0.5, form="max")) == pytest.approx(
        2.25
    )
    values = torch.tensor([5.0])
    assert float(P.clipped_value_loss(values, old[:1], ret[:1], clip_range=0.5, form="max")) == pytest.approx(
        9.0
    )
    assert float(P.clipped_value_loss(values, old[:1], ret[:1])) == pytest.approx(9.0)


def test_clipped_surrogate_one_dimensional_matches_two_dimensional():
    g = torch.Generator().manual_seed(0)
    lw, adv = torch.randn(10, generator=g) * 0.3, torch.randn(10, generator=g)
    ratio = lw.exp()
    expected = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv)  # PPO eq. 7, written out
    torch.testing.assert_close(P.clipped_surrogate(lw, adv), expected)
