"""RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467) and LayerNorm (Ba et al. 2016, arXiv 1607.06450).

Both normalise over the last dimension of ``x`` ``(..., dim)`` and return the same shape. The statistics
are computed in float32 for bf16/fp16/fp32 ``x`` (bf16/fp16 squares overflow or lose precision) and in float64
for float64 ``x`` (no silent downcast), then the result is cast back:

- :func:`rms_norm` ``y = x / sqrt(mean(x^2) + eps) * weight``: cast back to ``x``'s dtype *before* the
  weight multiply, exactly as ``transformers``' ``LlamaRMSNorm`` (the output dtype is then the promotion
  of ``weight``'s and ``x``'s dtypes: bf16 with a bf16 model).
- :func:`layer_norm` ``y = (x - mean) / sqrt(var + eps) * weight + bias`` (biased variance): weight and
  bias applied in float32, then cast to ``x``'s dtype, as ``torch.nn.LayerNorm`` does.
"""

from __future__ import annotations

import torch
from torch import nn

from shared.utils import (
    check_bool,
    check_int,
    check_module_input,
    check_number,
    check_same_device,
    check_tensor,
)

__all__ = ["rms_norm", "layer_norm", "RMSNorm", "LayerNorm"]


def _check_eps(eps: object) -> float:
    return check_number("eps", eps, ge=0)


def _check_x(x: torch.Tensor, eps: object, **params: torch.Tensor | None) -> float:
    """Check ``x`` ``(..., dim)``, ``eps`` and the ``(dim,)`` parameters given; return ``eps`` as a float."""
    check_tensor("x", x, dtype_kind="float", nonempty=True, finite=True)
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension (the one normalised)")
    for name, p in params.items():
        if p is not None:
            check_tensor(name, p, ndim=1, dtype_kind="float", finite=True)
            if p.shape[0] != x.shape[-1]:
                raise ValueError(
                    f"{name} must have shape ({x.shape[-1]},) to match x's last dim, got {tuple(p.shape)}"
                )
    check_same_device(x=x, **params)
    return _check_eps(eps)


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for bf16/fp16/fp32 (as transformers and torch), float64 for float64 (no silent downcast)."""
    return torch.promote_types(x.dtype, torch.float32)


def _rsqrt(variance: torch.Tensor, eps: float) -> torch.Tensor:
    if eps == 0 and bool((variance == 0).any()):  # one sync, only when eps = 0
        raise ValueError("eps=0 with a row of zero variance would divide 0 by 0 (NaN); use eps > 0")
    return torch.rsqrt(variance + eps)


def _check_last_dim(x: torch.Tensor, module: nn.Module) -> None:
    check_tensor("x", x, dtype_kind="float")
    dim = module.weight.shape[0]
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(f"x's last dim {x.shape[-1] if x.ndim else None} must equal the norm's dim {dim}")
    check_module_input(module, x, dtype=False)  # a dtype mix is promoted, as in transformers


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, *, eps: float = 1e-6) -> torch.Tensor:
    """Root-mean-square norm of ``x`` ``(..., dim)`` over the last dim, times ``weight`` ``(dim,)`` if given.

    No mean subtraction and no bias. Equal to ``LlamaRMSNorm`` and ``torch.nn.RMSNorm`` (same ``eps``); in float64
    to ``torch.nn.RMSNorm`` (``LlamaRMSNorm`` computes float64 input in float32). ``eps=0`` is allowed unless a
    row is all zeros (0/0); ``x`` must be finite and non-empty.
    """
    eps = _check_x(x, eps, weight=weight)
    x32 = x.to(_stat_dtype(x))
    variance = x32.pow(2).mean(dim=-1, keepdim=True)  # (..., 1): mean square, not variance about the mean
    y = (x32 * _rsqrt(variance, eps)).to(x.dtype)
    return y if weight is None else weight * y


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Layer norm of ``x`` ``(..., dim)`` over the last dim, then ``* weight + bias`` (each ``(dim,)``, optional).

    Uses the biased variance (divide by ``dim``). Equal to ``torch.nn.functional.layer_norm``.
    """
    eps = _check_x(x, eps, weight=weight, bias=bias)
    x32 = x.to(_stat_dtype(x))
    centred = x32 - x32.mean(dim=-1, keepdim=True)  # (..., dim)
    variance = centred.pow(2).mean(dim=-1, keepdim=True)  # (..., 1), biased
    y = centred * _rsqrt(variance, eps)
    if weight is not None:
        y = y * weight.to(x32.dtype)
    if bias is not None:
        y = y + bias.to(x32.dtype)
    return y.to(x.dtype)


class RMSNorm(nn.Module):
    """:func:`rms_norm` with a learned ``weight`` ``(dim,)`` initialised to ones.

    ``state_dict`` compatible with ``LlamaRMSNorm`` and ``torch.nn.RMSNorm``.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        check_int("dim", dim, minimum=1)
        self.eps = _check_eps(eps)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., dim)`` -> ``(..., dim)``."""
        _check_last_dim(x, self)
        return rms_norm(x, self.weight, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class LayerNorm(nn.Module):
    """:func:`layer_norm` with a learned ``weight`` (ones) and, if ``bias``, a learned ``bias`` (zeros).

    ``state_dict`` compatible with ``torch.nn.LayerNorm``.
    """

    def __init__(self, dim: int, eps: float = 1e-5, *, bias: bool = True) -> None:
        super().__init__()
        check_int("dim", dim, minimum=1)
        check_bool("bias", bias)
        self.eps = _check_eps(eps)
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., dim)`` -> ``(..., dim)``."""
        _check_last_dim(x, self)
        return layer_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"
