"""RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467) and LayerNorm (Ba et al. 2016, arXiv 1607.06450).

Both normalise over the last dimension of ``x`` ``(..., dim)`` and return the same shape. The statistics
are computed in float32 whatever ``x``'s dtype (bf16/fp16 squares overflow or lose precision), then the
result is cast back:

- :func:`rms_norm` ``y = x / sqrt(mean(x^2) + eps) * weight``: cast back to ``x``'s dtype *before* the
  weight multiply, exactly as ``transformers``' ``LlamaRMSNorm`` (the output dtype is then the promotion
  of ``weight``'s and ``x``'s dtypes: bf16 with a bf16 model).
- :func:`layer_norm` ``y = (x - mean) / sqrt(var + eps) * weight + bias`` (biased variance): weight and
  bias applied in float32, then cast to ``x``'s dtype, as ``torch.nn.LayerNorm`` does.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from shared.utils import check_tensor

__all__ = ["rms_norm", "layer_norm", "RMSNorm", "LayerNorm"]


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 <= eps < math.inf):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    return float(eps)


def _check_param(name: str, p: torch.Tensor | None, dim: int) -> None:
    if p is not None:
        check_tensor(name, p, ndim=1, dtype_kind="float")
        if p.shape[0] != dim:
            raise ValueError(f"{name} must have shape ({dim},) to match x's last dim, got {tuple(p.shape)}")


def _check_last_dim(x: torch.Tensor, dim: int) -> None:
    check_tensor("x", x, dtype_kind="float")
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(f"x's last dim {x.shape[-1] if x.ndim else None} must equal the norm's dim {dim}")


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, *, eps: float = 1e-6) -> torch.Tensor:
    """Root-mean-square norm of ``x`` ``(..., dim)`` over the last dim, times ``weight`` ``(dim,)`` if given.

    No mean subtraction and no bias. Equal to ``LlamaRMSNorm`` and ``torch.nn.RMSNorm`` (same ``eps``).
    """
    check_tensor("x", x, dtype_kind="float")
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension (the one normalised)")
    eps = _check_eps(eps)
    _check_param("weight", weight, x.shape[-1])
    x32 = x.to(torch.float32)
    variance = x32.pow(2).mean(dim=-1, keepdim=True)  # (..., 1): mean square, not variance about the mean
    y = (x32 * torch.rsqrt(variance + eps)).to(x.dtype)
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
    check_tensor("x", x, dtype_kind="float")
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension (the one normalised)")
    eps = _check_eps(eps)
    _check_param("weight", weight, x.shape[-1])
    _check_param("bias", bias, x.shape[-1])
    x32 = x.to(torch.float32)
    centred = x32 - x32.mean(dim=-1, keepdim=True)  # (..., dim)
    variance = centred.pow(2).mean(dim=-1, keepdim=True)  # (..., 1), biased
    y = centred * torch.rsqrt(variance + eps)
    if weight is not None:
        y = y * weight.to(torch.float32)
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(x.dtype)


class RMSNorm(nn.Module):
    """:func:`rms_norm` with a learned ``weight`` ``(dim,)`` initialised to ones.

    ``state_dict`` compatible with ``LlamaRMSNorm`` and ``torch.nn.RMSNorm``.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.eps = _check_eps(eps)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., dim)`` -> ``(..., dim)``."""
        _check_last_dim(x, self.weight.shape[0])
        return rms_norm(x, self.weight, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class LayerNorm(nn.Module):
    """:func:`layer_norm` with a learned ``weight`` (ones) and, if ``bias``, a learned ``bias`` (zeros).

    ``state_dict`` compatible with ``torch.nn.LayerNorm``.
    """

    def __init__(self, dim: int, eps: float = 1e-5, *, bias: bool = True) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.eps = _check_eps(eps)
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., dim)`` -> ``(..., dim)``."""
        _check_last_dim(x, self.weight.shape[0])
        return layer_norm(x, self.weight, self.bias, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"
