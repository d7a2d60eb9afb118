"""Seeding, device choice and a tensor comparison that explains itself."""

from __future__ import annotations

import math
import random

import numpy as np
import torch

__all__ = ["seed_everything", "pick_device", "assert_close", "check_tensor", "error_bound"]


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) and return a ``torch.Generator`` seeded the same.

    Also asks PyTorch for deterministic algorithms where it has them (``warn_only``: an op without a
    deterministic version warns instead of failing), so a notebook prints the same numbers on every run.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeding the legacy global generator is the point)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def pick_device(prefer: str | None = None) -> torch.device:
    """The device a reading runs on: ``prefer`` if given, else CUDA when present, else CPU.

    Every reading runs on CPU; a GPU only makes it faster.
    """
    if prefer is not None:
        if prefer not in {"cpu", "cuda", "mps"} and not prefer.startswith("cuda:"):
            raise ValueError(f"prefer must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {prefer!r}")
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_tensor(
    name: str,
    x: object,
    *,
    ndim: int | tuple[int, ...] | None = None,
    dtype_kind: str | None = None,
) -> torch.Tensor:
    """Raise a ``ValueError`` unless ``x`` is a tensor with ``ndim`` dims and the dtype kind asked for.

    ``dtype_kind`` is ``"float"``, ``"int"`` (integer, not bool) or ``"bool"``. Returns ``x``.
    """
    if dtype_kind not in (None, "float", "int", "bool"):
        raise ValueError(f"dtype_kind must be None, 'float', 'int' or 'bool', got {dtype_kind!r}")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if dtype_kind == "float" and not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if dtype_kind == "int" and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise ValueError(f"{name} must be an integer tensor, got {x.dtype}")
    if dtype_kind == "bool" and x.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor, got {x.dtype}")
    return x


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    name: str = "tensor",
) -> float:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise; return the max abs error.

    On failure the message says how many elements differ, where the worst one is, and both values
    there, which is what a reader needs to find a bug (``torch.allclose`` only says ``False``).
    Shapes must match exactly (no broadcasting), and integer/bool tensors must be equal.
    """
    if not isinstance(actual, torch.Tensor) or not isinstance(expected, torch.Tensor):
        raise ValueError("assert_close compares two torch.Tensors")
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol and rtol must be >= 0, got atol={atol}, rtol={rtol}")
    a = actual.detach().cpu()
    e = expected.detach().cpu()
    if not (a.is_floating_point() or e.is_floating_point()):
        bad = a != e
        if bad.any():
            idx = tuple(int(i) for i in bad.nonzero()[0])
            raise AssertionError(
                f"{name}: {int(bad.sum())} of {a.numel()} elements differ; first at index {idx}: "
                f"{a[idx].item()} != expected {e[idx].item()}"
            )
        return 0.0
    a64, e64 = a.double(), e.double()
    nan_mismatch = a64.isnan() != e64.isnan()
    if nan_mismatch.any():
        idx = tuple(int(i) for i in nan_mismatch.nonzero()[0])
        raise AssertionError(f"{name}: NaN in one tensor only, first at index {idx}")
    diff = (a64 - e64).abs().nan_to_num(0.0)
    bad = diff > atol + rtol * e64.abs().nan_to_num(0.0)
    max_err = float(diff.max()) if diff.numel() else 0.0
    if bad.any():
        flat = int(diff.argmax())
        idx = tuple(int(i) for i in np.unravel_index(flat, tuple(a.shape))) if a.ndim else ()
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {a.numel()} elements exceed atol={atol:g} + rtol={rtol:g}*|expected|; "
            f"max abs error {max_err:.3g} at index {idx}: {a64[idx].item():.6g} vs expected {e64[idx].item():.6g}"
        )
    return max_err


def error_bound(err: float, floor: float = 1e-6) -> str:
    """A measured error as the next power of ten above it, e.g. ``"< 1e-06"``; never below ``floor``.

    The last digits of a float error change between CPUs (AVX2 vs AVX-512 kernels, BLAS builds), so a
    notebook that printed ``3.6e-07`` would fail its stored-output check elsewhere. A bound prints the same
    everywhere. Use ``floor`` near the precision compared: ``1e-6`` for float32, ``1e-12`` for float64.
    """
    if not (isinstance(err, int | float) and math.isfinite(err) and err >= 0):
        raise ValueError(f"err must be a finite number >= 0, got {err!r}")
    if not (isinstance(floor, int | float) and floor > 0):
        raise ValueError(f"floor must be a number > 0, got {floor!r}")
    bound = 10.0 ** (math.floor(math.log10(err)) + 1) if err > 0 else 0.0
    return f"< {max(floor, bound):.0e}"
