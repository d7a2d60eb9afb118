"""shared.kernels.rmsnorm (Triton) against shared.norms.rms_norm, transformers' LlamaRMSNorm and torch's.

Without a GPU the kernels run under Triton's interpreter (conftest sets ``TRITON_INTERPRET=1``) on tiny
shapes; with one, the same tests run the compiled kernels on CUDA, plus the full-size tests at the end.

Tolerances (kernel vs the reference with autograd, ``(atol, rtol)``), measured under the interpreter on the
cases below:

- bf16/fp16: forward and backward bitwise (the kernel rounds where the reference rounds: the cast back, the
  weight product, the gradient at the cast). Allowed: 0 forward, 1 ulp backward (the float32 sums of
  ``dy * n`` over a row, and of the weight gradient over rows, are in another order: a different float32
  value can round to the other bf16 neighbour), 1 ulp forward on a GPU (``rsqrt`` may differ).
- float32: y within 4.8e-7, dx within 2.4e-7, dweight within 1.9e-6 (sums in another order). Allowed 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from kernel_setup import DEVICE, ON_GPU, dtype_ids  # skips this module without Triton
from transformers.models.llama.modeling_llama import LlamaRMSNorm

import shared.kernels.rmsnorm as kernel_rmsnorm
from shared.kernels.rmsnorm import rms_norm
from shared.norms import rms_norm as rms_norm_reference
from shared.utils import InputTypeError, assert_close

ULP = {torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}


def tol(dtype: torch.dtype, *, forward: bool) -> dict:
    """(atol, rtol) of kernel vs reference for a result of ``dtype`` (see the module docstring)."""
    if dtype == torch.float32:
        return {"atol": 1e-5, "rtol": 1e-5}
    if forward and not ON_GPU:
        return {"atol": 0.0, "rtol": 0.0}
    return {"atol": ULP[dtype], "rtol": ULP[dtype]}


def randn(*shape: int, dtype=torch.float32, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    t = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale
    return t.to(device=DEVICE, dtype=dtype)


def forward_backward(fn, x: torch.Tensor, weight: torch.Tensor | None, seed: int = 1):
    """``fn(x, weight)`` and the gradients of ``<y, g>`` for a fixed random ``g``."""
    x = x.detach().clone().requires_grad_()
    weight = None if weight is None else weight.detach().clone().requires_grad_()
    y = fn(x, weight)
    y.backward(randn(*y.shape, dtype=y.dtype, seed=seed))
    return y.detach(), x.grad, None if weight is None else weight.grad


def assert_same(ours: tuple, ref: tuple) -> None:
    for name, a, e in zip(("y", "x.grad", "weight.grad"), ours, ref, strict=True):
        if e is None:
            assert a is None, name
            continue
        assert a.dtype == e.dtype and a.shape == e.shape, name
        assert_close(a, e, name=name, **tol(a.dtype, forward=name == "y"))


def kernel(x, weight, eps=1e-6):
    return rms_norm(x, weight, eps=eps)


def reference(x, weight, eps=1e-6):
    return rms_norm_reference(x, weight, eps=eps)


# (x dtype, weight dtype or None): same dtypes as a model, a float32 weight on bf16 activations (the output
# is then float32, as in LlamaRMSNorm), no weight.
DTYPES = [
    (torch.float32, torch.float32),
    (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.float16),
    (torch.bfloat16, torch.float32),
    (torch.float32, None),
    (torch.bfloat16, None),
]


@pytest.mark.parametrize(("x_dtype", "w_dtype"), DTYPES, ids=dtype_ids)
@pytest.mark.parametrize(("shape", "eps"), [((3, 5, 8), 1e-6), ((13, 80), 1e-5), ((2, 1000), 0.1)], ids=str)
def test_rms_norm_matches_reference(x_dtype, w_dtype, shape, eps) -> None:
    """Forward and backward; dims 8, 80, 1000 (masked in blocks of 8, 128, 1024); 15 and 13 rows over the
    backward's 4 programs (the last one's chunk is short)."""
    x = randn(*shape, dtype=x_dtype, scale=3.0)
    weight = None if w_dtype is None else randn(shape[-1], dtype=w_dtype, seed=2)
    ours = forward_backward(lambda x, w: kernel(x, w, eps), x, weight)
    assert_same(ours, forward_backward(lambda x, w: reference(x, w, eps), x, weight))


def test_rms_norm_large_values_in_float16() -> None:
    """Squares of 300 overflow float16 (65504): the statistics must be float32."""
    x = randn(4, 64, dtype=torch.float16, scale=300.0)
    weight = randn(64, dtype=torch.float16, seed=2)
    ours = forward_backward(kernel, x, weight)
    assert torch.isfinite(ours[0]).all() and torch.isfinite(ours[1]).all()
    assert_same(ours, forward_backward(reference, x, weight))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=dtype_ids)
def test_rms_norm_matches_llama_rmsnorm(dtype) -> None:
    """transformers' LlamaRMSNorm (weight in the model's dtype), forward and backward."""
    x = randn(2, 7, 48, dtype=dtype, scale=2.0)
    llama = LlamaRMSNorm(48, eps=1e-6).to(device=DEVICE, dtype=dtype)
    with torch.no_grad():
        llama.weight.copy_(randn(48, dtype=dtype, seed=2))

    def through_llama(x, weight):  # LlamaRMSNorm.forward with `weight` as its parameter
        return torch.func.functional_call(llama, {"weight": weight}, (x,))

    assert_same(forward_backward(kernel, x, llama.weight), forward_backward(through_llama, x, llama.weight))


def test_rms_norm_matches_torch_functional() -> None:
    """torch.nn.functional.rms_norm (float32: it computes as the reference does, up to summation order)."""
    x, weight = randn(6, 40, scale=2.0), randn(40, seed=2)
    ours = forward_backward(kernel, x, weight)
    ref = forward_backward(lambda x, w: torch.nn.functional.rms_norm(x, (40,), w, eps=1e-6), x, weight)
    assert_same(ours, ref)


def test_rms_norm_strided_input_and_gradient() -> None:
    """A transposed x (its rows are not contiguous: copied) and a gradient that arrives expanded."""
    x = randn(16, 6, scale=2.0).T  # (6, 16), column stride 6
    weight = randn(16, seed=2)

    def summed(fn):
        return lambda x, w: fn(x, w).sum(dim=0)  # backward: an expanded (stride 0) gradient

    assert_same(forward_backward(summed(kernel), x, weight), forward_backward(summed(reference), x, weight))


def test_rms_norm_weight_gradient_is_deterministic() -> None:
    """21 rows over 4 programs: per-program partial sums, then one sum: the same bits on every run."""
    x, weight = randn(21, 24, dtype=torch.bfloat16, scale=2.0), randn(24, dtype=torch.bfloat16, seed=2)
    first = forward_backward(kernel, x, weight)
    second = forward_backward(kernel, x, weight)
    assert torch.equal(first[2], second[2]) and torch.equal(first[1], second[1])
    assert_same(first, forward_backward(reference, x, weight))


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_rms_norm_eps_zero() -> None:
    """eps = 0 works unless a row is all zeros (0/0), which is refused as in the reference."""
    x = randn(3, 8)
    assert_close(kernel(x, None, eps=0), reference(x, None, eps=0), atol=1e-6, rtol=1e-6)
    x[1] = 0
    for fn in (kernel, reference):
        with pytest.raises(ValueError, match="eps=0 with a row of zero variance"):
            fn(x, None, eps=0)


# ---------------------------------------------------------------------------------------------------------
# Dispatch: the torch fallback, float64
# ---------------------------------------------------------------------------------------------------------


def test_torch_backend_gives_the_reference(monkeypatch) -> None:
    monkeypatch.setattr(kernel_rmsnorm, "backend", lambda *tensors: "torch")
    monkeypatch.setattr(kernel_rmsnorm, "_RMSNorm", None)  # a kernel launch would fail loudly
    x, weight = randn(3, 16, dtype=torch.bfloat16), randn(16, seed=2)
    ours, ref = forward_backward(kernel, x, weight), forward_backward(reference, x, weight)
    for a, e in zip(ours, ref, strict=True):
        assert_close(a, e, atol=0, rtol=0)


def test_float64_takes_the_reference(monkeypatch) -> None:
    """float64 x, or a float64 weight (a float64 result): the reference, with its float64 statistics."""
    monkeypatch.setattr(kernel_rmsnorm, "_RMSNorm", None)
    x64, x32 = randn(3, 16, dtype=torch.float64), randn(3, 16)
    w64, w32 = randn(16, dtype=torch.float64, seed=2), randn(16, seed=2)
    for x, weight in ((x64, w64), (x64, w32), (x32, w64)):
        ours, ref = forward_backward(kernel, x, weight), forward_backward(reference, x, weight)
        assert ours[0].dtype == torch.float64
        for a, e in zip(ours, ref, strict=True):
            assert_close(a, e, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------

X = torch.zeros(2, 8)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (([1.0],), {}, InputTypeError, "x must be a torch.Tensor"),
        ((X.long(),), {}, InputTypeError, "x must be a floating-point"),
        ((torch.tensor(1.0),), {}, ValueError, "x must have at least 1 dimension"),
        ((torch.zeros(2, 0),), {}, ValueError, "x must not be empty"),
        ((X.to("meta"),), {}, ValueError, "x is on the meta device"),
        ((torch.zeros(1, 65537),), {}, ValueError, "x's last dim must be at most 65536"),
        ((X, torch.ones(7)), {}, ValueError, r"weight must have shape \(8,\)"),
        ((X, torch.ones(1, 8)), {}, ValueError, "weight must have 1 dimensions"),
        ((X, torch.ones(8, dtype=torch.long)), {}, InputTypeError, "weight must be a floating-point"),
        ((X, [1.0] * 8), {}, InputTypeError, "weight must be a torch.Tensor"),
        ((X,), {"eps": float("nan")}, ValueError, "eps must be a finite number"),
        ((X,), {"eps": float("inf")}, ValueError, "eps must be a finite number"),
        ((X,), {"eps": -1e-6}, ValueError, "eps must be a finite number >= 0"),
        ((X,), {"eps": "1e-6"}, InputTypeError, "eps must be a number"),
    ],
)  # fmt: skip
def test_rms_norm_bad_inputs(args, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        rms_norm(*args, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
def test_mixed_devices_refused() -> None:
    with pytest.raises(ValueError, match="must be on one device"):
        rms_norm(X.cuda(), torch.ones(8))


def test_bench_module_imports_without_a_gpu() -> None:
    """tools/bench_rope_rmsnorm.py (run on a GPU machine) imports cleanly here."""
    import tools.bench_rope_rmsnorm as bench

    assert callable(bench.run)


# ---------------------------------------------------------------------------------------------------------
# Full size, GPU only
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="full-size kernel test needs CUDA")
@pytest.mark.parametrize(("rows", "dim"), [(16384, 4096), (64, 65536), (1000, 5120)])
def test_full_size_rms_norm_on_gpu(rows, dim) -> None:
    x = torch.randn(rows, dim, device="cuda", dtype=torch.bfloat16) * 2
    weight = torch.randn(dim, device="cuda", dtype=torch.bfloat16)
    ours = forward_backward(kernel, x, weight)
    ref = forward_backward(reference, x, weight)
    assert_close(ours[0], ref[0], name="y", **tol(torch.bfloat16, forward=True))
    assert_close(ours[1], ref[1], name="x.grad", **tol(torch.bfloat16, forward=False))
    # dweight sums `rows` products: bf16 rounding of the sum dominates (both sum in float32 first).
    assert_close(
        ours[2], ref[2], name="weight.grad", atol=2 * ULP[torch.bfloat16], rtol=2 * ULP[torch.bfloat16]
    )
