"""Seeding, device choice, a tensor comparison that explains itself, and the input checks of ``shared``.

The ``check_*`` helpers are what every function of ``shared`` uses to refuse bad input: a wrong type raises
:class:`InputTypeError` (a ``TypeError`` that is also a ``ValueError``), a wrong value ``ValueError``, each naming
the argument and what was expected.
"""

from __future__ import annotations

import math
import numbers
import random
import re

import numpy as np
import torch

__all__ = [
    "InputTypeError",
    "seed_everything",
    "pick_device",
    "assert_close",
    "error_bound",
    "check_tensor",
    "check_same_device",
    "check_module_input",
    "check_int",
    "check_number",
    "check_bool",
    "check_choice",
]


class InputTypeError(TypeError, ValueError):
    """An argument of the wrong type (a float where an int is expected, a str for a bool, a float tensor for ids).

    A ``TypeError``, and also a ``ValueError`` (as ``numpy.exceptions.AxisError`` is both a ``ValueError`` and an
    ``IndexError``), so that code written when ``shared`` raised ``ValueError`` for everything still catches it.
    """


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) and return a ``torch.Generator`` seeded the same.

    Also asks PyTorch for deterministic algorithms where it has them (``warn_only``: an op without a
    deterministic version warns instead of failing), so a notebook prints the same numbers on every run.
    """
    seed = check_int("seed", seed, minimum=0)
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
        if not isinstance(prefer, str):
            raise InputTypeError(f"prefer must be None or a str, got {type(prefer).__name__} {prefer!r}")
        if prefer not in {"cpu", "cuda", "mps"} and not re.fullmatch(r"cuda:[0-9]+", prefer):
            raise ValueError(f"prefer must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {prefer!r}")
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """Return ``value`` as an ``int``; ``TypeError`` unless it is an integer (``bool`` is refused),
    ``ValueError`` if it is below ``minimum``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_number(
    name: str,
    value: object,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> float:
    """Return ``value`` as a ``float``; ``TypeError`` unless it is a real number (``bool`` is refused),
    ``ValueError`` unless it is finite and within the bounds given (``ge`` means ``>=``, ``gt`` ``>``, ...)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    ok = math.isfinite(v)
    ok = (
        ok
        and (ge is None or v >= ge)
        and (gt is None or v > gt)
        and (le is None or v <= le)
        and (lt is None or v < lt)
    )
    if not ok:
        bounds = ((ge, ">="), (gt, ">"), (le, "<="), (lt, "<"))
        want = "".join(
            f" {'and ' if i else ''}{sign} {b:g}"
            for i, (b, sign) in enumerate(x for x in bounds if x[0] is not None)
        )
        raise ValueError(f"{name} must be a finite number{want}, got {value!r}")
    return v


def check_bool(name: str, value: object) -> bool:
    """Return ``value``; ``TypeError`` unless it is a ``bool`` (``0``/``1`` or a string is refused)."""
    if not isinstance(value, bool):
        raise InputTypeError(f"{name} must be a bool (True or False), got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value``; ``TypeError`` unless it is a ``str``, ``ValueError`` unless it is one of ``choices``."""
    if not isinstance(value, str):
        raise InputTypeError(f"{name} must be one of {choices} (a str), got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_tensor(
    name: str,
    x: object,
    *,
    ndim: int | tuple[int, ...] | None = None,
    dtype_kind: str | None = None,
    nonempty: bool = False,
    finite: bool | torch.Tensor = False,
) -> torch.Tensor:
    """Check that ``x`` is a usable tensor and return it.

    Raises ``TypeError`` unless ``x`` is a ``torch.Tensor`` of the dtype kind asked for (``"float"``,
    ``"int"``: integer, not bool, or ``"bool"``), and ``ValueError`` if it is on the ``meta`` device (it has no
    values), has other than ``ndim`` dims, has a dimension of size 0 when ``nonempty``, or holds NaN/±inf when
    ``finite`` (``True``: anywhere; a bool tensor broadcastable to ``x``: where it is ``True``, e.g. the real
    tokens of a padded batch). The finiteness check is one ``isfinite(...).all()``, a single device sync.
    """
    if dtype_kind not in (None, "float", "int", "bool"):
        raise ValueError(f"dtype_kind must be None, 'float', 'int' or 'bool', got {dtype_kind!r}")
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_meta:
        raise ValueError(f"{name} is on the meta device (shape only, no values); move it to a real device")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if dtype_kind == "float" and not x.is_floating_point():
        raise InputTypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if dtype_kind == "int" and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise InputTypeError(f"{name} must be an integer tensor, got {x.dtype}")
    if dtype_kind == "bool" and x.dtype != torch.bool:
        raise InputTypeError(f"{name} must be a bool tensor, got {x.dtype}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if not isinstance(finite, bool) and not (isinstance(finite, torch.Tensor) and finite.dtype == torch.bool):
        raise InputTypeError(f"finite must be a bool or a bool tensor, got {type(finite).__name__}")
    if finite is not False and x.is_floating_point():
        ok = torch.isfinite(x)
        where = ""
        if finite is not True:
            ok, where = ok | ~finite, " where the mask is 1"  # masked positions may hold anything
        if not bool(ok.all()):
            raise ValueError(
                f"{name} must be finite (no NaN or ±inf){where}, got {int((~ok).sum())} non-finite"
            )
    return x


def check_same_device(**tensors: torch.Tensor | None) -> torch.device | None:
    """Raise ``ValueError`` unless the tensors given (``None`` skipped) are all on one device; return it.

    Any single device is accepted (CPU, ``cuda:0``, ...), so the same call works on GPU tensors.
    """
    given = {name: t for name, t in tensors.items() if isinstance(t, torch.Tensor)}
    devices = {t.device for t in given.values()}
    if len(devices) > 1:
        where = ", ".join(f"{name} on {t.device}" for name, t in given.items())
        raise ValueError(f"{', '.join(given)} must be on one device, got {where}")
    return next(iter(devices), None)


def check_module_input(
    module: torch.nn.Module, x: torch.Tensor, *, name: str = "x", dtype: bool = True
) -> None:
    """Raise unless ``x`` is on the device of ``module``'s weights and (if ``dtype``) has their dtype.

    Without it a float64 input into float32 weights fails deep inside the matmul; here the message says
    what to change (``ValueError`` for the device, ``TypeError`` for the dtype).
    """
    weight = next(module.parameters(), None)
    if weight is None:
        return
    label = type(module).__name__
    if weight.is_meta:
        raise ValueError(f"{label}'s weights are on the meta device (no values); materialise them first")
    if x.device != weight.device:
        raise ValueError(f"{name} is on {x.device} but {label}'s weights are on {weight.device}; move one")
    autocast = torch.is_autocast_enabled(x.device.type)  # there a dtype mix is what autocast resolves
    if dtype and not autocast and x.dtype != weight.dtype:
        raise InputTypeError(
            f"{name} is {x.dtype} but {label}'s weights are {weight.dtype}; "
            f"convert one (module.to({x.dtype}) or x.to({weight.dtype}))"
        )


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
        raise InputTypeError("assert_close compares two torch.Tensors")
    if not isinstance(name, str):
        raise InputTypeError(f"name must be a str, got {type(name).__name__} {name!r}")
    for label, t in (("actual", actual), ("expected", expected)):
        check_tensor(label, t)
        if t.is_complex():
            raise InputTypeError(
                f"{label} is complex ({t.dtype}); compare .real and .imag (or torch.view_as_real)"
            )
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    for label, tol in (("atol", atol), ("rtol", rtol)):  # a NaN tolerance would pass every comparison
        if isinstance(tol, bool | np.bool_) or not isinstance(tol, numbers.Real):
            raise InputTypeError(f"{label} must be a number, got {type(tol).__name__} {tol!r}")
    if not (math.isfinite(atol) and math.isfinite(rtol) and atol >= 0 and rtol >= 0):
        raise ValueError(f"atol and rtol must be finite numbers >= 0, got atol={atol}, rtol={rtol}")
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
    err = check_number("err", err, ge=0)
    floor = check_number("floor", floor, gt=0)
    bound = 10.0 ** (math.floor(math.log10(err)) + 1) if err > 0 else 0.0
    return f"< {max(floor, bound):.0e}"
