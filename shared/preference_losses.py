"""DPO-family preference losses on per-sequence log-probs, and MPO (their weighted sum).

Papers: DPO (arXiv 2305.18290, eq. 7), BCO (arXiv 2404.04656), MPO (InternVL2.5-MPO, arXiv 2411.10442), used as
the offline stage of InternVL3.5's Cascade RL (arXiv 2508.18265). The functions follow ``trl`` 1.16.0's
``DPOTrainer._compute_loss`` (``loss_type`` ``"sigmoid"``, ``"bco_pair"``, ``"sft"``, ``loss_weights``);
``tests/test_preference_losses.py`` checks them against it on a tiny model.

Inputs are per-sequence log-probs, each ``(batch,)`` float: ``log pi(y | x) = sum_t log pi(y_t | x, y_<t)``
summed over the response tokens, for the policy and the frozen reference, on the chosen ``y_c`` and the
rejected ``y_r`` response of each pair. The implicit reward is ``r(y) = beta * (log pi(y) - log pi_ref(y))``.

- :func:`dpo_sigmoid_loss`: ``-log sigmoid(r(y_c) - r(y_r))`` per pair.
- :func:`bco_pair_loss`: ``-log sigmoid(r(y_c) - delta) - log sigmoid(-(r(y_r) - delta))`` per pair.
  **The shift delta.** BCO subtracts a reward shift ``delta``. ``trl`` 0.x (up to 0.28.0; InternVL3.5's code pins
  ``trl==0.21.0``) kept it as a running mean: at every loss computation (every micro-batch forward, in training and in
  evaluation alike), *before* the loss, it computed the batch mean of the
  ``2 * batch`` rewards ``mean(cat(r(y_c), r(y_r)))`` (detached) and fed that one number to
  ``RunningMoments.update``; ``delta`` is then the running mean, which for one number per micro-batch (count 1 each) is
  the plain average of all batch means so far, the current one included (:class:`RunningRewardMean`). With
  several processes each contributes its own batch mean (merged by ``get_global_statistics``). InternVL3.5's
  scripts run one sample per device with gradient accumulation, so the shift moves once per micro-batch, not
  once per optimiser step. ``trl`` 1.16.0 (after "Refactor DPO", PR #3906, first
  released in 0.29.0) dropped the shift: its ``bco_pair`` is this loss with ``delta = 0``, the default here.
- :func:`sft_loss`: the NLL of the chosen responses. ``trl`` (0.21 and 1.16) normalises **per token over the
  batch**: ``-sum_i log pi(y_c,i) / sum_i |y_c,i|`` (the mean over every chosen token of the batch, so a long
  response weighs more than a short one); ``normalize="sequence"`` gives the mean over pairs of each response's
  own mean token NLL instead.
- :func:`mpo_loss`: ``w_p * mean(dpo) + w_q * mean(bco) + w_g * sft`` with MPO's weights ``(0.8, 0.2, 1.0)``, the
  values InternVL's ``internvl_chat_gpt_oss/internvl/train/internvl_chat_mpo.py`` sets
  (``loss_type = ['sigmoid', 'bco_pair', 'sft']``, ``loss_weights = [0.8, 0.2, 1.0]``).

Every function checks its inputs: a wrong type raises :class:`~shared.utils.InputTypeError` (a ``TypeError``),
a wrong value (shape, NaN, a negative length, beta <= 0) ``ValueError``, naming the argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shared.utils import (
    InputTypeError,
    check_choice,
    check_number,
    check_same_device,
    check_tensor,
)

__all__ = [
    "MPO_WEIGHTS",
    "SFT_NORMALIZATIONS",
    "implicit_rewards",
    "dpo_sigmoid_loss",
    "bco_pair_loss",
    "bco_batch_reward_mean",
    "RunningRewardMean",
    "sft_loss",
    "mpo_loss",
]

MPO_WEIGHTS = (0.8, 0.2, 1.0)  # (w_p preference = DPO sigmoid, w_q quality = BCO pair, w_g generation = SFT)
SFT_NORMALIZATIONS = ("token", "sequence")
_NAMES = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def _check_logps(*tensors: object) -> tuple[torch.Tensor, ...]:
    """Four ``(batch,)`` finite float tensors of one shape, dtype and device (the order of ``_NAMES``)."""
    for name, x in zip(_NAMES, tensors, strict=True):
        check_tensor(name, x, ndim=1, dtype_kind="float", nonempty=True, finite=True)
    first = tensors[0]
    assert isinstance(first, torch.Tensor)
    for name, x in zip(_NAMES[1:], tensors[1:], strict=True):
        assert isinstance(x, torch.Tensor)
        if x.shape != first.shape:
            raise ValueError(
                f"{name} must have the shape of policy_chosen_logps {tuple(first.shape)}, got {tuple(x.shape)}"
            )
        if x.dtype != first.dtype:
            raise InputTypeError(
                f"{name} is {x.dtype} but policy_chosen_logps is {first.dtype}; use one dtype"
            )
    check_same_device(**dict(zip(_NAMES, tensors, strict=True)))  # type: ignore[arg-type]
    return tensors  # type: ignore[return-value]


def _check_beta(beta: object) -> float:
    return check_number("beta (the KL weight of the implicit reward)", beta, gt=0)


def implicit_rewards(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(r(y_c), r(y_r))``, each ``(batch,)``: ``beta * (log pi - log pi_ref)`` (DPO eq. 5's reparameterisation)."""
    pc, pr, rc, rr = _check_logps(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    beta = _check_beta(beta)
    return beta * (pc - rc), beta * (pr - rr)


def dpo_sigmoid_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO (eq. 7): ``-log sigmoid(beta * [(log pi(y_c) - log pi_ref(y_c)) - (log pi(y_r) - log pi_ref(y_r))])``.

    Returns the per-pair loss, ``(batch,)``; ``trl`` averages it over the batch. It is ``ln 2`` when the policy
    equals the reference.
    """
    pc, pr, rc, rr = _check_logps(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    beta = _check_beta(beta)
    delta_score = (pc - rc) - (pr - rr)  # (batch,): trl's chosen_logratios - rejected_logratios
    return -F.logsigmoid(beta * delta_score)


def _check_delta(delta: object) -> float | torch.Tensor:
    if isinstance(delta, torch.Tensor):
        check_tensor("delta", delta, dtype_kind="float", finite=True)
        if delta.numel() != 1:
            raise ValueError(f"delta must be one number (the reward shift), got shape {tuple(delta.shape)}")
        return delta.detach().reshape(())
    return check_number("delta", delta)


def bco_pair_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    delta: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """BCO on pairs: ``-log sigmoid(r(y_c) - delta) - log sigmoid(-(r(y_r) - delta))``, ``(batch,)``.

    A binary classifier with logit ``r(y) - delta``: chosen responses labelled 1, rejected 0 (MPO's "quality
    loss": the absolute quality of each response, not only the difference). ``delta`` is the reward shift: 0 in
    ``trl`` 1.16; in ``trl`` <= 0.28 the running mean of :func:`bco_batch_reward_mean` (see
    :class:`RunningRewardMean`). It is treated as a constant (no gradient flows into it).
    """
    pc, pr, rc, rr = _check_logps(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    beta = _check_beta(beta)
    d = _check_delta(delta)
    if isinstance(d, torch.Tensor):
        check_same_device(delta=d, policy_chosen_logps=pc)
    chosen_rewards = beta * (pc - rc)  # (batch,)
    rejected_rewards = beta * (pr - rr)  # (batch,)
    return -F.logsigmoid(chosen_rewards - d) - F.logsigmoid(-(rejected_rewards - d))


def bco_batch_reward_mean(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
) -> float:
    """The number ``trl`` <= 0.28 fed to its running mean at each loss computation: ``mean(cat(r(y_c), r(y_r)))``, detached."""
    chosen, rejected = implicit_rewards(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta
    )
    return float(torch.cat((chosen, rejected)).mean().detach())


class RunningRewardMean:
    """BCO's reward shift as ``trl`` 0.21's ``RunningMoments.mean`` kept it (one process).

    ``update(m)`` takes one batch mean (count 1) and returns the new shift
    ``delta_k = (m_1 + ... + m_k) / k``; ``trl`` calls it before computing the loss, so the current batch is
    included. (``RunningMoments`` starts from ``count = 1e-24``, so the first shift is ``m_1`` up to 1e-24.)
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.count = 0

    def update(self, batch_mean: float) -> float:
        m = check_number("batch_mean", batch_mean)
        self.count += 1
        self.mean += (m - self.mean) / self.count
        return self.mean


def _check_lengths(lengths: object, like: torch.Tensor) -> torch.Tensor:
    check_tensor("chosen_lengths", lengths, ndim=1, finite=True)
    assert isinstance(lengths, torch.Tensor)
    if lengths.dtype == torch.bool or lengths.is_complex():
        raise InputTypeError(
            f"chosen_lengths must be an integer or float tensor of token counts, got {lengths.dtype}"
        )
    if lengths.shape != like.shape:
        raise ValueError(
            f"chosen_lengths must have the shape of policy_chosen_logps {tuple(like.shape)}, got {tuple(lengths.shape)}"
        )
    check_same_device(chosen_lengths=lengths, policy_chosen_logps=like)
    if bool((lengths < 0).any()) or bool((lengths != lengths.round()).any()):
        raise ValueError("chosen_lengths must hold token counts (whole numbers >= 0)")
    return lengths.to(like.dtype)


def sft_loss(
    policy_chosen_logps: torch.Tensor, chosen_lengths: torch.Tensor, *, normalize: str = "token"
) -> torch.Tensor:
    """NLL of the chosen responses, a scalar (MPO's generation loss ``L_g``).

    ``policy_chosen_logps``: ``(batch,)`` summed token log-probs; ``chosen_lengths``: ``(batch,)`` token counts.
    ``normalize="token"`` (``trl``): ``-sum(logps) / sum(lengths)``, the mean NLL over all chosen tokens of the
    batch. ``"sequence"``: ``mean_i(-logps_i / lengths_i)``. A batch (or, for ``"sequence"``, a response) with
    no tokens raises ``ValueError`` (``trl`` would return NaN).
    """
    check_tensor(
        "policy_chosen_logps", policy_chosen_logps, ndim=1, dtype_kind="float", nonempty=True, finite=True
    )
    n = _check_lengths(chosen_lengths, policy_chosen_logps)
    check_choice("normalize", normalize, SFT_NORMALIZATIONS)
    if normalize == "token":
        total = n.sum()
        if float(total) == 0:
            raise ValueError("chosen_lengths sums to 0: no chosen token to take the NLL of")
        return -policy_chosen_logps.sum() / total
    if bool((n == 0).any()):
        raise ValueError("normalize='sequence' needs every chosen_lengths entry >= 1")
    return (-policy_chosen_logps / n).mean()


def mpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    *,
    beta: float = 0.1,
    weights: tuple[float, float, float] = MPO_WEIGHTS,
    bco_delta: float | torch.Tensor = 0.0,
    sft_normalize: str = "token",
) -> torch.Tensor:
    """MPO: ``w_p * mean(L_dpo) + w_q * mean(L_bco) + w_g * L_sft``, a scalar (``trl``'s ``loss_weights`` sum).

    ``weights = (w_p, w_q, w_g)``, default MPO's ``(0.8, 0.2, 1.0)``; each must be a finite number >= 0.
    ``bco_delta`` is the BCO reward shift (0 as in ``trl`` 1.16; pass :class:`RunningRewardMean`'s value to
    reproduce ``trl`` <= 0.28). ``beta`` is shared by the two preference terms, as in ``trl``.
    """
    if not isinstance(weights, tuple | list) or len(weights) != 3:
        raise InputTypeError(f"weights must be a tuple (w_p, w_q, w_g) of three numbers, got {weights!r}")
    w_p, w_q, w_g = (
        check_number(f"weights[{i}] ({n})", w, ge=0)
        for i, (n, w) in enumerate(zip(("w_p", "w_q", "w_g"), weights, strict=True))
    )
    args = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    dpo = dpo_sigmoid_loss(*args, beta=beta).mean()
    bco = bco_pair_loss(*args, beta=beta, delta=bco_delta).mean()
    sft = sft_loss(policy_chosen_logps, chosen_lengths, normalize=sft_normalize)
    return w_p * dpo + w_q * bco + w_g * sft
