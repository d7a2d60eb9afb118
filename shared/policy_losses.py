"""GRPO-family policy losses: group-relative advantages, clipped surrogates, the k3 KL, loss aggregations.

Papers: GRPO (DeepSeekMath, arXiv 2402.03300, §4.1, eqs. 3-4), Dr. GRPO (arXiv 2503.20783), DAPO (arXiv
2503.14476), GSPO (arXiv 2507.18071). The functions follow ``trl`` 1.16.0's ``GRPOTrainer._compute_loss`` and the
advantage code of ``GRPOTrainer._generate_and_score_completions`` line by line (``tests/test_policy_losses.py``
checks them against it).

Shapes: a batch holds ``batch = num_prompts * num_generations`` completions, the ``num_generations`` samples of
one prompt next to each other (prompt-major, as ``trl`` lays them out). Per-token tensors are ``(batch,
completion_len)``: ``logps[i, t] = log pi_theta(o_{i,t} | q, o_{i,<t})`` and a ``mask`` that is 1 on real
completion tokens and 0 on padding (bool, integer or float with values 0/1).

Padding may hold anything: a ``-inf`` log-prob, NaN. The functions that take a mask keep those values out of
the loss *and* its gradient with ``torch.where`` (``trl`` multiplies by the mask, and NaN * 0 = NaN); on real
tokens every value must be finite (``ValueError`` otherwise). On finite inputs the results are ``trl``'s bit for
bit. :func:`k3_kl` and :func:`clipped_surrogate` have no mask and work elementwise.

PPO (arXiv 1707.06347, eq. 7) uses the same :func:`clipped_surrogate` on one ratio per action, and
:func:`clipped_value_loss` for its critic (``stable-baselines3``'s form and the baselines/CleanRL form).
"""

from __future__ import annotations

import torch

from shared.utils import (
    InputTypeError,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_same_device,
    check_tensor,
)

__all__ = [
    "LOSS_TYPES",
    "SCALE_REWARDS",
    "IMPORTANCE_SAMPLING_LEVELS",
    "group_advantages",
    "k3_kl",
    "log_importance_weights",
    "clipped_surrogate",
    "VALUE_CLIP_FORMS",
    "clipped_value_loss",
    "aggregate_loss",
    "grpo_loss",
]

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
VALUE_CLIP_FORMS = ("prediction", "max")


def _check_mask(mask: object, like: torch.Tensor) -> torch.Tensor:
    """Validate a 0/1 completion mask of ``like``'s shape and return it as ``like``'s float dtype."""
    check_tensor("mask", mask, ndim=2)
    assert isinstance(mask, torch.Tensor)
    if mask.is_complex():
        raise InputTypeError(f"mask must be bool, integer or float 0/1, got {mask.dtype}")
    check_same_device(mask=mask, like=like)
    if mask.shape != like.shape:
        raise ValueError(
            f"mask must have shape {tuple(like.shape)} (batch, completion_len), got {tuple(mask.shape)}"
        )
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must contain only 0 and 1 (1 on completion tokens, 0 on padding)")
    return mask.to(like.dtype)


def _check_per_token(
    name: str, x: object, like: torch.Tensor | None = None, *, where: torch.Tensor | None = None
) -> torch.Tensor:
    """A ``(batch, completion_len)`` float tensor (``like``'s shape); finite where the 0/1 mask ``where`` is 1.

    Padding may hold anything (a ``-inf`` log-prob, NaN): :func:`_masked` keeps it out of every sum.
    """
    check_tensor(name, x, ndim=2, dtype_kind="float", nonempty=True)
    assert isinstance(x, torch.Tensor)
    if like is not None and x.shape != like.shape:
        raise ValueError(
            f"{name} must have shape {tuple(like.shape)} (batch, completion_len), got {tuple(x.shape)}"
        )
    check_same_device(**{name: x, "logps": like})
    if where is not None:
        check_tensor(name, x, finite=where.bool())
    return x


def _clean_padding(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``x`` with NaN/±inf at padding (``m == 0``) replaced by 0; finite values are kept bit for bit.

    Done on the inputs so that the backward pass stays finite too: ``torch.where`` sends a zero gradient to
    the branch it drops, but a NaN computed from a NaN input would still multiply that zero (0 * NaN = NaN).
    """
    return torch.where(m.bool() | torch.isfinite(x), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _masked(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``x * m`` for a 0/1 float mask ``m``, but 0 (not NaN) where ``m`` is 0 and ``x`` is NaN or ±inf.

    ``torch.where`` instead of the product because NaN * 0 = NaN; the zero keeps ``x``'s sign, so on finite
    values the result is bit for bit ``x * m`` (``trl``'s form), signed zeros included.
    """
    return torch.where(m.bool(), x, torch.zeros_like(x).copysign(x))


def group_advantages(
    rewards: torch.Tensor, num_generations: int, *, scale_rewards: str = "group", eps: float = 1e-4
) -> torch.Tensor:
    """Group-relative advantages ``A_i = (r_i - mean(group)) / (std + eps)`` (DeepSeekMath §4.1.2).

    ``rewards``: ``(batch,)`` float, ``batch = num_prompts * num_generations``, each prompt's
    ``num_generations`` rewards contiguous. The baseline is always the mean of the prompt's own group.
    ``scale_rewards`` is ``trl``'s option: ``"group"`` divides by the group's std, ``"batch"`` by the std of
    the whole batch (PPO-Lite), ``"none"`` does not divide (Dr. GRPO). The std is the unbiased (Bessel) one,
    as ``trl``'s ``nanstd``; ``eps`` keeps a zero-std group at advantage 0. Returns ``(batch,)``.
    """
    check_tensor("rewards", rewards, ndim=1, dtype_kind="float", nonempty=True, finite=True)
    check_int("num_generations (a group needs a baseline)", num_generations, minimum=2)
    if rewards.numel() % num_generations:
        raise ValueError(
            f"rewards has {rewards.numel()} entries, not a multiple of num_generations={num_generations}"
        )
    check_choice("scale_rewards", scale_rewards, SCALE_REWARDS)
    eps = check_number("eps", eps, ge=0)
    grouped = rewards.reshape(-1, num_generations)  # (num_prompts, G); reshape: rewards may be a strided view
    mean = grouped.mean(dim=1).repeat_interleave(num_generations)  # (batch,): each prompt's own mean
    advantages = rewards - mean  # (batch,)
    if scale_rewards == "group":
        std = grouped.std(dim=1).repeat_interleave(num_generations)  # (batch,)
        advantages = advantages / _nonzero(std + eps, eps)
    elif scale_rewards == "batch":
        advantages = advantages / _nonzero(rewards.std() + eps, eps)
    return advantages


def _nonzero(std: torch.Tensor, eps: float) -> torch.Tensor:
    if eps == 0 and bool((std == 0).any()):  # one sync, only when eps = 0
        raise ValueError("eps=0 with a group (or batch) of equal rewards would divide 0 by 0; use eps > 0")
    return std


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref) (DeepSeekMath eq. 4; Schulman 2020).

    ``exp(ref - logp) - (ref - logp) - 1``, with ``logps``/``ref_logps`` the log-probs of the *sampled* tokens,
    both ``(batch, completion_len)`` float. It is >= 0 everywhere (``e^x >= 1 + x``) and, for tokens sampled from
    pi_theta, its expectation is the exact KL. Returns ``(batch, completion_len)``.
    """
    _check_per_token("logps", logps)
    _check_per_token("ref_logps", ref_logps, logps)
    delta = ref_logps - logps  # (batch, T): log(pi_ref / pi_theta)
    return torch.exp(delta) - delta - 1


def log_importance_weights(
    logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, *, level: str = "token"
) -> torch.Tensor:
    """Log importance ratios ``log(pi_theta / pi_old)``.

    ``level="token"``: one ratio per token, ``(batch, completion_len)`` (GRPO, DAPO). ``level="sequence"``:
    the GSPO ratio ``s_i = (pi_theta(o_i) / pi_old(o_i)) ** (1 / |o_i|)``, i.e. the mean of the token log-ratios
    over the mask (the log of their geometric mean), shape ``(batch, 1)``; an empty row gives 0.
    """
    _check_per_token("logps", logps)
    m = _check_mask(mask, logps)
    _check_per_token("logps", logps, where=m)
    _check_per_token("old_logps", old_logps, logps, where=m)
    check_choice("level", level, IMPORTANCE_SAMPLING_LEVELS)
    log_ratio = _clean_padding(logps, m) - _clean_padding(old_logps, m)  # (batch, T)
    if level == "token":
        return log_ratio
    lengths = m.sum(dim=-1).clamp(min=1.0)  # (batch,): |o_i|
    return (_masked(log_ratio, m).sum(dim=-1) / lengths).unsqueeze(-1)  # (batch, 1)


def clipped_surrogate(
    log_weights: torch.Tensor,
    advantages: torch.Tensor,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
) -> torch.Tensor:
    """PPO/GRPO clipped surrogate, as a loss: ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)``.

    ``log_weights``: ``(batch, completion_len)`` or ``(batch, 1)`` log-ratios from
    :func:`log_importance_weights`; ``advantages``: ``(batch,)`` (one per completion) or the shape of
    ``log_weights``. ``epsilon_high > epsilon_low`` is DAPO's clip-higher. Returns the per-token (or
    per-sequence) loss, the shape of ``log_weights``. PPO on actions (one ratio per step): ``log_weights`` and
    ``advantages`` both ``(batch,)``; ``stable-baselines3``'s policy loss is the mean of the result.
    """
    check_tensor("log_weights", log_weights, ndim=(1, 2), dtype_kind="float", nonempty=True)
    check_tensor("advantages", advantages, ndim=(1, 2), dtype_kind="float", finite=True)
    check_same_device(log_weights=log_weights, advantages=advantages)
    if log_weights.ndim == 1:
        if advantages.shape != log_weights.shape:
            raise ValueError(
                f"advantages must have the shape of the 1-D log_weights {tuple(log_weights.shape)}, "
                f"got {tuple(advantages.shape)}"
            )
        log_weights, advantages = log_weights.unsqueeze(1), advantages.unsqueeze(1)  # (batch, 1)
        return clipped_surrogate(
            log_weights, advantages, epsilon_low=epsilon_low, epsilon_high=epsilon_high
        ).squeeze(1)
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(1)  # (batch, 1)
    if advantages.shape[0] != log_weights.shape[0] or advantages.shape[1] not in (1, log_weights.shape[1]):
        raise ValueError(
            f"advantages must have shape ({log_weights.shape[0]},) or {tuple(log_weights.shape)}, "
            f"got {tuple(advantages.shape)}"
        )
    eps_low = check_number(
        "epsilon_low (the lower clip bound 1 - epsilon_low must be > 0)", epsilon_low, ge=0, lt=1
    )
    eps_high = check_number("epsilon_high", epsilon_high, ge=0)
    ratio = torch.exp(log_weights)  # r = pi_theta / pi_old
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)  # clip(r, 1 - eps_low, 1 + eps_high)
    return -torch.min(ratio * advantages, clipped * advantages)


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    *,
    clip_range: float | None = None,
    form: str = "prediction",
) -> torch.Tensor:
    """PPO's value loss, a scalar: the mean squared error of the critic against its targets, optionally clipped.

    ``values``: ``(batch,)`` the critic now; ``old_values``: ``(batch,)`` the critic when the rollout was
    collected; ``returns``: ``(batch,)`` the targets (the lambda-returns of :func:`shared.returns.gae`).
    With ``v_clip = old + clip(values - old, -clip_range, clip_range)``:

    - ``clip_range=None``: ``mean((returns - values) ** 2)``.
    - ``form="prediction"`` (``stable-baselines3`` 2.9.2, ``PPO.train``, ``clip_range_vf``):
      ``mean((returns - v_clip) ** 2)``: the clipped prediction only, so no gradient once a value left the band.
    - ``form="max"`` (OpenAI baselines ``ppo2``, CleanRL ``clip_vloss``): ``mean(max((values - returns) ** 2,
      (v_clip - returns) ** 2))``, the pessimistic of the two, like the policy's clipped surrogate.

    No factor 1/2: baselines and CleanRL multiply this by 0.5 before ``vf_coef``, ``stable-baselines3`` does not.
    """
    check_tensor("values", values, ndim=1, dtype_kind="float", nonempty=True, finite=True)
    for name, x in (("old_values", old_values), ("returns", returns)):
        check_tensor(name, x, ndim=1, dtype_kind="float", finite=True)
        if x.shape != values.shape:
            raise ValueError(
                f"{name} must have the shape of values {tuple(values.shape)}, got {tuple(x.shape)}"
            )
    check_same_device(values=values, old_values=old_values, returns=returns)
    check_choice("form", form, VALUE_CLIP_FORMS)
    if clip_range is None:
        return ((returns - values) ** 2).mean()
    c = check_number("clip_range", clip_range, gt=0)
    v_clip = old_values + torch.clamp(values - old_values, -c, c)  # (batch,)
    if form == "prediction":
        return ((returns - v_clip) ** 2).mean()
    return torch.max((values - returns) ** 2, (v_clip - returns) ** 2).mean()


def aggregate_loss(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce a ``(batch, completion_len)`` (or ``(batch, 1)``, broadcast) loss over the mask to a scalar.

    - ``"grpo"``: mean over each sequence's tokens, then mean over sequences (DeepSeekMath eq. 3:
      ``1/G sum_i 1/|o_i| sum_t``).
    - ``"bnpo"``: sum over all tokens / number of tokens in this batch.
    - ``"dr_grpo"``: sum over all tokens / (batch * ``max_completion_length``), a constant (Dr. GRPO).
    - ``"dapo"``: sum over all tokens / ``num_items_in_batch``, the token count of the whole batch that one
      update averages over (DAPO eq. 12); summing the losses of its micro-batches gives a token mean. When
      ``None``, this batch is the whole batch and ``"dapo"`` equals ``"bnpo"``.

    ``trl`` also divides the first three by the number of gradient-accumulation steps; with one micro-batch per
    update that factor is 1.
    """
    check_tensor("per_token_loss", per_token_loss, ndim=2, dtype_kind="float", nonempty=True)
    m = check_tensor("mask", mask, ndim=2, nonempty=True)
    if per_token_loss.shape[0] != m.shape[0] or per_token_loss.shape[1] not in (1, m.shape[1]):
        raise ValueError(
            f"per_token_loss must have shape {tuple(m.shape)} or ({m.shape[0]}, 1), got {tuple(per_token_loss.shape)}"
        )
    full = per_token_loss.expand(m.shape)  # (batch, T)
    m = _check_mask(m, full)
    check_tensor("per_token_loss", full, finite=m.bool())
    check_choice("loss_type", loss_type, LOSS_TYPES)
    if max_completion_length is not None:
        check_int("max_completion_length", max_completion_length, minimum=1)
    n = _num_items(num_items_in_batch)
    masked = _masked(full, m)  # (batch, T)
    if loss_type == "grpo":
        return (masked.sum(dim=-1) / m.sum(dim=-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return masked.sum() / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("loss_type='dr_grpo' needs max_completion_length (an int)")
        if max_completion_length < m.shape[1]:
            raise ValueError(
                f"max_completion_length ({max_completion_length}) must be >= completion_len ({m.shape[1]})"
            )
        return masked.sum() / (m.shape[0] * max_completion_length)
    # dapo
    if n is None:
        return masked.sum() / m.sum().clamp(min=1.0)
    if n < float(m.sum()):
        raise ValueError(f"num_items_in_batch ({n}) must be >= the tokens in this batch ({int(m.sum())})")
    return masked.sum() / max(n, 1.0)


def _num_items(value: float | torch.Tensor | None) -> float | None:
    """``num_items_in_batch`` (a number or a one-element tensor) as a float ``>= 0``, or ``None``."""
    if isinstance(value, torch.Tensor):
        check_tensor("num_items_in_batch", value)
        if value.numel() != 1 or value.dtype == torch.bool or value.is_complex():
            raise ValueError(
                f"num_items_in_batch must be one real number, got a {value.dtype} tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    return None if value is None else check_number("num_items_in_batch", value, ge=0)


def grpo_loss(
    logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "grpo",
    importance_sampling_level: str = "token",
    kl_importance_correction: bool = False,
    max_completion_length: int | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """The GRPO-family loss (to minimise) of one batch, as ``trl`` 1.16's ``GRPOTrainer._compute_loss``.

    Args:
        logps: ``(batch, completion_len)`` log-probs of the sampled tokens under the current policy.
        advantages: ``(batch,)`` from :func:`group_advantages` (or ``(batch, completion_len)``).
        mask: ``(batch, completion_len)``, 1 on completion tokens, 0 on padding.
        old_logps: log-probs under the sampling policy pi_old; ``None`` means on-policy (``logps.detach()``,
            every ratio 1).
        ref_logps: log-probs under the reference policy; required when ``beta > 0``.
        beta: weight of the k3 KL penalty (0 turns it off, as DAPO and Dr. GRPO do).
        epsilon_low, epsilon_high: clip range ``[1 - epsilon_low, 1 + epsilon_high]``; ``epsilon_high=None``
            means symmetric (``= epsilon_low``).
        loss_type: ``"grpo"``, ``"bnpo"``, ``"dr_grpo"`` or ``"dapo"`` (see :func:`aggregate_loss`).
        importance_sampling_level: ``"token"`` (GRPO) or ``"sequence"`` (GSPO).
        kl_importance_correction: multiply the per-token KL by the importance ratio (``trl``'s
            ``use_bias_correction_kl``, on by default in ``trl`` 1.16; DeepSeekMath eq. 3 does not).
        max_completion_length: needed by ``"dr_grpo"``.
        num_items_in_batch: token count of the whole batch for ``"dapo"`` (default: this batch's).

    Returns a scalar tensor: the mean over tokens/sequences of ``-min(r A, clip(r) A) + beta * KL``.
    """
    _check_per_token("logps", logps)
    m = _check_mask(mask, logps)
    beta = check_number("beta", beta, ge=0)
    check_bool("kl_importance_correction", kl_importance_correction)
    if ref_logps is not None:
        _check_per_token("ref_logps", ref_logps, logps, where=m)
        ref_logps = _clean_padding(ref_logps, m)
    logps = _clean_padding(logps, m)  # padding may hold -inf or NaN; real tokens are checked finite
    if old_logps is None:
        old_logps = logps.detach()
    if epsilon_high is None:
        epsilon_high = epsilon_low
    log_w = log_importance_weights(logps, old_logps, m, level=importance_sampling_level)  # (B, T) or (B, 1)
    per_token_loss = clipped_surrogate(log_w, advantages, epsilon_low=epsilon_low, epsilon_high=epsilon_high)
    if beta > 0:
        if ref_logps is None:
            raise ValueError("ref_logps is required when beta > 0")
        kl = k3_kl(logps, ref_logps)  # (B, T)
        if kl_importance_correction:
            kl = kl * torch.exp(log_w)
        per_token_loss = per_token_loss + beta * kl  # (B, T)
    return aggregate_loss(
        per_token_loss,
        m,
        loss_type=loss_type,
        max_completion_length=max_completion_length,
        num_items_in_batch=num_items_in_batch,
    )
