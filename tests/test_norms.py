"""shared.norms against torch.nn.RMSNorm, torch.nn.LayerNorm and transformers' LlamaRMSNorm."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from shared.norms import LayerNorm, RMSNorm, layer_norm, rms_norm
from shared.utils import assert_close

FAST = settings(max_examples=25, deadline=None)


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module


@pytest.mark.parametrize("eps", [1e-6, 1e-5, 0.1])
def test_rmsnorm_matches_llama_and_torch_float32(eps):
    x = torch.randn(2, 3, 16) * 3
    llama = _randomise(LlamaRMSNorm(16, eps=eps))
    ours = RMSNorm(16, eps=eps)
    ours.load_state_dict(llama.state_dict())
    torch_norm = torch.nn.RMSNorm(16, eps=eps)
    torch_norm.load_state_dict(llama.state_dict())
    with torch.no_grad():
        assert_close(ours(x), llama(x), atol=0, rtol=0, name="vs LlamaRMSNorm")
        assert_close(ours(x), torch_norm(x), atol=1e-6, name="vs torch.nn.RMSNorm")
        assert_close(rms_norm(x, llama.weight, eps=eps), llama(x), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rmsnorm_low_precision_matches_llama_bitwise(dtype):
    x = (torch.randn(4, 32) * 50).to(dtype)  # squares of 50 overflow float16's 65504 without the upcast
    llama = _randomise(LlamaRMSNorm(32)).to(dtype)
    ours = RMSNorm(32).to(dtype)
    ours.load_state_dict(llama.state_dict())
    with torch.no_grad():
        out = ours(x)
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert_close(out, llama(x), atol=0, rtol=0)
        torch_norm = torch.nn.RMSNorm(32, eps=1e-6).to(dtype)
        torch_norm.load_state_dict(llama.state_dict())
        assert_close(out, torch_norm(x), atol=0.02, rtol=0.02)  # torch rounds once, Llama twice


def test_rmsnorm_weight_dtype_promotion_like_llama():
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    w = torch.randn(8)  # float32 weight on a bf16 input: Llama's output is float32
    llama = LlamaRMSNorm(8)
    with torch.no_grad():
        llama.weight.copy_(w)
        ref = llama(x)
    out = rms_norm(x, w)
    assert out.dtype == ref.dtype == torch.float32
    assert_close(out, ref, atol=0, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_layernorm_matches_torch(bias, eps):
    x = torch.randn(2, 5, 12) * 4 + 3
    ref = _randomise(torch.nn.LayerNorm(12, eps=eps, bias=bias))
    ours = LayerNorm(12, eps=eps, bias=bias)
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        assert_close(ours(x), ref(x), atol=2e-6, name="LayerNorm")
        assert_close(layer_norm(x, ref.weight, ref.bias, eps=eps), ref(x), atol=2e-6)
    assert_close(
        layer_norm(x, eps=eps), torch.nn.functional.layer_norm(x, (12,), eps=eps), atol=2e-6, name="no affine"
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_layernorm_low_precision_matches_torch(dtype):
    x = (torch.randn(4, 32) * 300 + 100).to(dtype)
    ref = _randomise(torch.nn.LayerNorm(32))  # float32 parameters on a low-precision input, as torch allows
    ours = LayerNorm(32)
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        out = ours(x)
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert_close(out, ref.to(dtype)(x), atol=0.05, rtol=0.02)


def test_layernorm_no_bias_has_no_bias_parameter():
    norm = LayerNorm(6, bias=False)
    assert norm.bias is None and set(norm.state_dict()) == {"weight"}
    assert "bias=False" in repr(norm) and "eps=1e-05" in repr(norm)
    assert "eps=1e-06" in repr(RMSNorm(6))


@FAST
@given(
    rows=st.integers(1, 4),
    dim=st.integers(2, 24),
    scale=st.floats(0.5, 100.0),
    shift=st.floats(-10.0, 10.0),
    seed=st.integers(0, 2**16),
)
def test_norm_invariances(rows, dim, scale, shift, seed):
    x = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x + 0.1 * torch.sign(x)  # keep every row away from all-zero
    x = (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)  # well conditioned: the compute is float32
    # RMSNorm (eps=0) is invariant to rescaling a row and gives unit mean square
    y = rms_norm(x, eps=0.0)
    assert_close(rms_norm(x * scale, eps=0.0), y, atol=1e-9)
    assert_close(y.pow(2).mean(-1), torch.ones(rows, dtype=torch.float64), atol=1e-5)
    # LayerNorm (eps=0) is also invariant to shifting a row, and gives mean 0, variance 1
    z = layer_norm(x, eps=0.0)
    assert_close(layer_norm(x * scale + shift, eps=0.0), z, atol=1e-4)
    assert_close(z.mean(-1), torch.zeros(rows, dtype=torch.float64), atol=1e-5)
    assert_close(z.pow(2).mean(-1), torch.ones(rows, dtype=torch.float64), atol=1e-4)
    # float32 compute: a float64 input comes back as float64 but with float32 precision
    assert z.dtype == torch.float64


def test_constant_row_is_zero_not_nan():
    x = torch.full((2, 8), 3.0)
    assert (layer_norm(x) == 0).all()  # variance 0: eps keeps it finite
    assert torch.isfinite(rms_norm(torch.zeros(2, 8))).all()


@pytest.mark.parametrize("fn", [rms_norm, layer_norm])
def test_functional_bad_inputs(fn):
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="torch.Tensor"):
        fn([1.0, 2.0])
    with pytest.raises(ValueError, match="floating-point"):
        fn(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 1"):
        fn(torch.tensor(1.0))
    for bad_eps in (-1e-6, float("inf"), float("nan"), True, "1e-6", None):
        with pytest.raises(ValueError, match="eps"):
            fn(x, eps=bad_eps)
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        fn(x, torch.ones(5))
    with pytest.raises(ValueError, match="1 dimensions"):
        fn(x, torch.ones(1, 4))
    with pytest.raises(ValueError, match="floating-point"):
        fn(x, torch.ones(4, dtype=torch.long))


def test_layer_norm_bad_bias():
    with pytest.raises(ValueError, match="bias"):
        layer_norm(torch.randn(2, 4), None, torch.zeros(3))
    with pytest.raises(ValueError, match="bias"):
        layer_norm(torch.randn(2, 4), None, torch.zeros(4, dtype=torch.int32))


@pytest.mark.parametrize("cls", [RMSNorm, LayerNorm])
def test_module_bad_inputs(cls):
    for bad_dim in (0, -3, 4.0, True):
        with pytest.raises(ValueError, match="dim"):
            cls(bad_dim)
    with pytest.raises(ValueError, match="eps"):
        cls(4, eps=-1.0)
    with pytest.raises(ValueError, match="last dim 5 must equal the norm's dim 4"):
        cls(4)(torch.randn(2, 5))
