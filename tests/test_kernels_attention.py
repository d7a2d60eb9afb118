"""shared.kernels.flash_attention against the plain-PyTorch reference of shared.attention (and torch's SDPA).

Without a GPU the Triton kernels run under Triton's interpreter on CPU (``tests/conftest.py`` sets
``TRITON_INTERPRET=1``), on tiny shapes (lengths 1..40, odd ones included; head_dim 16 and 80; blocks of 16,
so every case crosses block edges). With a GPU the same tests run compiled on CUDA, plus the full-size ones at
the end. The reference is :func:`shared.attention.scaled_dot_product_attention` in float64 with a mask built
here from the definitions (loops over positions), and its gradients by autograd.

Tolerances: float32 kernels against the float64 reference, ``atol = rtol = 1e-5`` on the output, the three
gradients and the log-sum-exp (measured under the interpreter: at most about 1e-6). float16/bfloat16: the
kernel's largest error against float64 must stay within twice the largest error of the reference run in
that dtype, plus ``LOWP_FLOOR`` (FlashAttention's own test criterion, with a floor for near-zero cases);
measured under the interpreter over 8 seeds: at most 2.1x in fp16. In bf16 up to 3.3x, because Triton
3.9's interpreter converts float32 to bfloat16 by truncation where the GPU rounds to nearest even (with
rounding patched in, the same runs stay under 2x); the test probes that and then allows 4x.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton")

import triton.language as tl  # noqa: E402
from torch.nn.attention.bias import causal_lower_right  # noqa: E402

from shared.attention import scaled_dot_product_attention  # noqa: E402
from shared.kernels import backend  # noqa: E402
from shared.kernels import flash_attention as FA  # noqa: E402
from shared.utils import InputTypeError, assert_close  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {"atol": 1e-5, "rtol": 1e-5}  # float32 kernel vs float64 reference
LOWP_FLOOR = {torch.float16: 2e-3, torch.bfloat16: 1e-2}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _inputs(batch, heads, kv_heads, q_len, kv_len, head_dim, dtype=torch.float32, seed=0, device=DEVICE):
    """Random q, k, v (requiring grad) and an output gradient ``do``."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(batch, heads, q_len, head_dim), (batch, kv_heads, kv_len, head_dim)]
    q, k, v, do = (torch.randn(*shapes[i in (1, 2)], generator=g) for i in range(4))
    q, k, v = (t.to(device=device, dtype=dtype).requires_grad_() for t in (q, k, v))
    return q, k, v, do.to(device=device, dtype=dtype)


def _definition_mask(q_len, kv_len, causal=False, window=None, cu=None):
    """Bool ``(q_len, kv_len)`` by the definitions, loop by loop (independent of shared's mask builders).

    Query ``i`` sits at position ``p = kv_len - q_len + i``; causal: key ``j <= p``; window: also
    ``j > p - window``; packed: ``i`` and ``j`` in the same segment of ``cu``.
    """
    if cu is None:
        seg_q, seg_k = [0] * q_len, [0] * kv_len
    else:
        bounds = [int(b) for b in cu]
        seg_q = seg_k = [s for s in range(len(bounds) - 1) for _ in range(bounds[s + 1] - bounds[s])]
    mask = torch.zeros(q_len, kv_len, dtype=torch.bool)
    for i in range(q_len):
        p = kv_len - q_len + i
        for j in range(kv_len):
            mask[i, j] = (
                seg_q[i] == seg_k[j] and (not causal or j <= p) and (window is None or j > p - window)
            )
    return mask


def _reference(q, k, v, do, mask, scale=None):
    """shared.attention's reference in float64: output and (dq, dk, dv)."""
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = scaled_dot_product_attention(q64, k64, v64, mask.to(q.device), scale=scale)
    return out, torch.autograd.grad(out, (q64, k64, v64), do.double())


def _ours(q, k, v, do, **options):
    out = FA.flash_attention(q, k, v, **options)
    return out, torch.autograd.grad(out, (q, k, v), do)


# (batch, heads, kv_heads, q_len, kv_len, head_dim, options)
CASES = {
    "dense": (2, 2, 2, 17, 23, 16, {}),
    "causal": (1, 2, 2, 33, 33, 16, {"causal": True}),
    "causal_kv_cache_gqa": (2, 2, 1, 5, 37, 16, {"causal": True}),
    "decode_one_token": (1, 2, 2, 1, 40, 16, {"causal": True}),
    "single_token": (1, 1, 1, 1, 1, 16, {"causal": True}),
    "fully_masked_rows": (1, 2, 2, 20, 7, 16, {"causal": True}),  # q_len > kv_len: 13 rows see no key
    "window_gqa": (1, 4, 2, 29, 29, 16, {"causal": True, "window": 4}),
    "window_kv_cache_d80": (1, 2, 2, 9, 31, 80, {"causal": True, "window": 8}),
    "window_1": (1, 1, 1, 19, 19, 16, {"causal": True, "window": 1}),
    "causal_d80": (1, 2, 2, 19, 19, 80, {"causal": True}),
    "mqa_batch3_scale": (3, 3, 1, 13, 13, 16, {"scale": 0.3}),
    "packed": (1, 2, 1, 33, 33, 16, {"cu_seqlens": [0, 7, 20, 33]}),
    "packed_causal_d80": (1, 2, 2, 33, 33, 80, {"cu_seqlens": [0, 7, 20, 33], "causal": True}),
    "packed_window": (1, 2, 2, 39, 39, 16, {"cu_seqlens": [0, 3, 20, 39], "causal": True, "window": 6}),
    "packed_empty_segment": (1, 2, 2, 12, 12, 16, {"cu_seqlens": [0, 5, 5, 12]}),
}


def _options(options, device=DEVICE):
    """The case's options with cu_seqlens as an int32 tensor on ``device``."""
    out = dict(options)
    if "cu_seqlens" in out:
        out["cu_seqlens"] = torch.tensor(out["cu_seqlens"], dtype=torch.int32, device=device)
    return out


def _mask_for(q_len, kv_len, options):
    return _definition_mask(
        q_len, kv_len, options.get("causal", False), options.get("window"), options.get("cu_seqlens")
    )


def test_kernel_path_is_taken():
    """These tests exercise the kernel (compiled or interpreted), not the PyTorch fallback."""
    assert backend(torch.zeros(1, device=DEVICE)) in ("triton", "interpreter")


@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_backward_match_reference_float32(case):
    batch, heads, kv_heads, q_len, kv_len, head_dim, options = CASES[case]
    q, k, v, do = _inputs(batch, heads, kv_heads, q_len, kv_len, head_dim)
    out, grads = _ours(q, k, v, do, **_options(options))
    ref, ref_grads = _reference(q, k, v, do, _mask_for(q_len, kv_len, options), options.get("scale"))
    assert out.dtype == q.dtype and out.shape == q.shape
    assert_close(out.double(), ref, **TOL, name=f"{case} out")
    for name, g, r in zip(("dq", "dk", "dv"), grads, ref_grads, strict=True):
        assert_close(g.double(), r, **TOL, name=f"{case} {name}")


def test_fully_masked_rows_give_zero():
    q, k, v, do = _inputs(1, 2, 2, 20, 7, 16)
    out, (dq, _, _) = _ours(q, k, v, do, causal=True)
    assert torch.equal(out[:, :, :13], torch.zeros_like(out[:, :, :13]))  # rows 0..12 see no key
    assert torch.equal(dq[:, :, :13], torch.zeros_like(dq[:, :, :13]))
    assert out[:, :, 13:].abs().sum() > 0


@pytest.mark.parametrize("case", ["dense", "causal", "causal_kv_cache_gqa", "mqa_batch3_scale"])
def test_forward_matches_torch_sdpa(case):
    """An independent implementation: torch's SDPA (lower-right causal bias for the KV-cache case)."""
    batch, heads, kv_heads, q_len, kv_len, head_dim, options = CASES[case]
    q, k, v, _ = _inputs(batch, heads, kv_heads, q_len, kv_len, head_dim)
    out = FA.flash_attention(q, k, v, **options)
    mask = causal_lower_right(q_len, kv_len) if options.get("causal") else None
    q64, k64, v64 = (t.detach().double() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(
        q64, k64, v64, attn_mask=mask, scale=options.get("scale"), enable_gqa=heads != kv_heads
    )
    assert_close(out.double(), ref, **TOL, name=case)


@pytest.mark.parametrize(
    "case", ["causal_kv_cache_gqa", "fully_masked_rows", "window_gqa", "packed_causal_d80"]
)
def test_log_sum_exp_matches_torch_logsumexp(case):
    batch, heads, kv_heads, q_len, kv_len, head_dim, options = CASES[case]
    q, k, v, _ = _inputs(batch, heads, kv_heads, q_len, kv_len, head_dim)
    opts = _options(options)
    cu = opts.get("cu_seqlens")
    max_seqlen = q_len if cu is None else int((cu[1:] - cu[:-1]).max())
    scale = 1 / math.sqrt(head_dim)
    with torch.no_grad():
        _, lse = FA._forward(q, k, v, opts.get("causal", False), opts.get("window"), cu, max_seqlen, scale)
    k64 = k.detach().double().repeat_interleave(heads // kv_heads, dim=1)
    scores = q.detach().double() @ k64.transpose(-1, -2) * scale
    scores = scores.masked_fill(~_mask_for(q_len, kv_len, options).to(q.device), float("-inf"))
    ref = torch.logsumexp(scores, dim=-1)  # -inf on fully masked rows
    assert lse.dtype == torch.float32 and lse.shape == (batch, heads, q_len)
    assert torch.equal(lse.isinf(), ref.isinf())
    assert_close(lse.double(), ref, **TOL, name=f"{case} lse")


@triton.jit
def _to_bf16_kernel(X, Y, N: tl.constexpr):
    offs = tl.arange(0, N)
    tl.store(Y + offs, tl.load(X + offs).to(tl.bfloat16))


@functools.cache
def _bf16_cast_truncates() -> bool:
    """Does Triton here round float32 -> bfloat16 toward zero (the interpreter) rather than to nearest even?"""
    x = torch.linspace(1, 2, 64, device=DEVICE)
    y = torch.empty(64, dtype=torch.bfloat16, device=DEVICE)
    _to_bf16_kernel[(1,)](x, y, N=64)
    if torch.equal(y, x.bfloat16()):  # torch rounds to nearest even
        return False
    assert torch.equal(y.view(torch.int16), (x.view(torch.int32) >> 16).to(torch.int16)), "neither rounding"
    return True


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", ["causal_d80", "packed_window"])
def test_low_precision_within_twice_the_reference_error(case, dtype):
    """Error against float64 <= 2 x the error of the reference computed in the same dtype, + a floor."""
    ratio = 4 if dtype == torch.bfloat16 and _bf16_cast_truncates() else 2
    batch, heads, kv_heads, q_len, kv_len, head_dim, options = CASES[case]
    q, k, v, do = _inputs(batch, heads, kv_heads, q_len, kv_len, head_dim, dtype=dtype, seed=1)
    mask = _mask_for(q_len, kv_len, options).to(q.device)
    out, grads = _ours(q, k, v, do, **_options(options))
    ref64, grads64 = _reference(q, k, v, do, mask)
    ref_lp = scaled_dot_product_attention(q, k, v, mask)
    grads_lp = torch.autograd.grad(ref_lp, (q, k, v), do)
    for name, ours, lowp, exact in zip(
        ("out", "dq", "dk", "dv"), (out, *grads), (ref_lp, *grads_lp), (ref64, *grads64), strict=True
    ):
        assert ours.dtype == dtype
        err = (ours.double() - exact).abs().max().item()
        err_lowp = (lowp.double() - exact).abs().max().item()
        assert err <= ratio * err_lowp + LOWP_FLOOR[dtype], (
            f"{case} {name}: {err:.3g} vs reference {err_lowp:.3g}"
        )


def test_cu_seqlens_int64_and_int32_agree():
    q, k, v, _ = _inputs(1, 2, 2, 20, 20, 16)
    cu = [0, 9, 20]
    out32 = FA.flash_attention(q, k, v, cu_seqlens=torch.tensor(cu, dtype=torch.int32, device=DEVICE))
    out64 = FA.flash_attention(q, k, v, cu_seqlens=torch.tensor(cu, dtype=torch.int64, device=DEVICE))
    assert torch.equal(out32, out64)


def test_backward_is_deterministic():
    q, k, v, do = _inputs(1, 2, 1, 21, 21, 16)
    first = _ours(q, k, v, do, causal=True)[1]
    second = _ours(q, k, v, do, causal=True)[1]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_non_contiguous_inputs():
    """q, k, v as the transposed views an attention layer makes: (batch, seq, heads, d).transpose(1, 2)."""
    q, k, v, do = _inputs(1, 2, 1, 17, 17, 16)
    qt, kt, vt = (t.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for t in (q, k, v))
    assert not qt.is_contiguous()
    out, grads = _ours(qt, kt, vt, do, causal=True)
    out_c, grads_c = _ours(q, k, v, do, causal=True)
    assert torch.equal(out, out_c)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_c, strict=True))


@pytest.mark.parametrize(
    "case", ["dense", "causal_kv_cache_gqa", "window_gqa", "packed_window", "fully_masked_rows"]
)
def test_torch_fallback_is_the_reference(case, monkeypatch):
    """Where no kernel runs, flash_attention is shared.attention's reference with shared's masks, bit for bit."""
    batch, heads, kv_heads, q_len, kv_len, head_dim, options = CASES[case]
    monkeypatch.setattr(FA, "backend", lambda *tensors: "torch")
    q, k, v, do = _inputs(batch, heads, kv_heads, q_len, kv_len, head_dim, device="cpu")
    out = FA.flash_attention(q, k, v, **_options(options, device="cpu"))
    ref = scaled_dot_product_attention(q, k, v, _mask_for(q_len, kv_len, options))
    assert torch.equal(out, ref)
    assert torch.autograd.grad(out, q, do)[0].shape == q.shape


# ---------------------------------------------------------------- bad input, each naming the argument

Q = torch.randn(1, 2, 8, 16)
K = torch.randn(1, 1, 8, 16)
CU = torch.tensor([0, 3, 8], dtype=torch.int32)
T, V = InputTypeError, ValueError


def _with(t, index, value):
    t = t.clone()
    t.view(-1)[index] = value
    return t


BAD = [
    ("q not a tensor", lambda: FA.flash_attention(Q.tolist(), K, K), T, "q must be a torch.Tensor"),
    ("q 3D", lambda: FA.flash_attention(Q[0], K, K), V, "q must have 4 dimensions"),
    ("k integer", lambda: FA.flash_attention(Q, K.long(), K), T, "k must be a floating-point"),
    ("v float64", lambda: FA.flash_attention(Q, K, K.double()), T, "q, k, v must share a dtype"),
    (
        "all float64",
        lambda: FA.flash_attention(Q.double(), K.double(), K.double()),
        T,
        "must be float16, bfloat16 or float32",
    ),
    ("q NaN", lambda: FA.flash_attention(_with(Q, 3, math.nan), K, K), V, "q must be finite"),
    ("k inf", lambda: FA.flash_attention(Q, _with(K, 0, math.inf), K), V, "k must be finite"),
    ("v -inf", lambda: FA.flash_attention(Q, K, _with(K, 5, -math.inf)), V, "v must be finite"),
    ("q empty", lambda: FA.flash_attention(Q[:, :, :0], K, K), V, "q must not be empty"),
    ("q meta", lambda: FA.flash_attention(Q.to("meta"), K, K), V, "q is on the meta device"),
    ("dtypes differ", lambda: FA.flash_attention(Q, K.half(), K.half()), T, "q, k, v must share a dtype"),
    ("batch differs", lambda: FA.flash_attention(Q, K.expand(2, -1, -1, -1), K), V, "batch sizes differ"),
    (
        "k head_dim",
        lambda: FA.flash_attention(Q, K[..., :8], K[..., :8]),
        V,
        "k's head_dim 8 must equal q's head_dim",
    ),
    ("v head_dim", lambda: FA.flash_attention(Q, K, K[..., :8]), V, "v's head_dim"),
    (
        "head_dim 288",
        lambda: FA.flash_attention(*(torch.zeros(1, 1, 2, 288),) * 3),
        V,
        "q's head_dim must be <= 256",
    ),
    ("kv_len differs", lambda: FA.flash_attention(Q, K, K[:, :, :5]), V, "k and v must have the same"),
    (
        "heads",
        lambda: FA.flash_attention(Q[:, :1], K.expand(1, 2, 8, 16), K.expand(1, 2, 8, 16)),
        V,
        "q's heads",
    ),
    ("causal int", lambda: FA.flash_attention(Q, K, K, causal=1), T, "causal must be a bool"),
    ("causal str", lambda: FA.flash_attention(Q, K, K, causal="yes"), T, "causal must be a bool"),
    ("window 0", lambda: FA.flash_attention(Q, K, K, causal=True, window=0), V, "window must be an int >= 1"),
    (
        "window float",
        lambda: FA.flash_attention(Q, K, K, causal=True, window=2.0),
        T,
        "window must be an int",
    ),
    (
        "window bool",
        lambda: FA.flash_attention(Q, K, K, causal=True, window=True),
        T,
        "window must be an int",
    ),
    (
        "window non-causal",
        lambda: FA.flash_attention(Q, K, K, window=4),
        V,
        "window is a causal sliding window",
    ),
    ("scale 0", lambda: FA.flash_attention(Q, K, K, scale=0.0), V, "scale must be a finite number > 0"),
    ("scale negative", lambda: FA.flash_attention(Q, K, K, scale=-1), V, "scale must be a finite number > 0"),
    ("scale NaN", lambda: FA.flash_attention(Q, K, K, scale=math.nan), V, "scale must be a finite number"),
    ("scale inf", lambda: FA.flash_attention(Q, K, K, scale=math.inf), V, "scale must be a finite number"),
    ("scale str", lambda: FA.flash_attention(Q, K, K, scale="0.1"), T, "scale must be a number"),
    (
        "cu list",
        lambda: FA.flash_attention(Q, K, K, cu_seqlens=[0, 3, 8]),
        T,
        "cu_seqlens must be a torch.Tensor",
    ),
    (
        "cu float",
        lambda: FA.flash_attention(Q, K, K, cu_seqlens=CU.float()),
        T,
        "cu_seqlens must be an integer",
    ),
    (
        "cu 2D",
        lambda: FA.flash_attention(Q, K, K, cu_seqlens=CU[None]),
        V,
        "cu_seqlens must have 1 dimensions",
    ),
    (
        "cu meta",
        lambda: FA.flash_attention(Q, K, K, cu_seqlens=CU.to("meta")),
        V,
        "cu_seqlens must be on one",
    ),
    (
        "cu one entry",
        lambda: FA.flash_attention(Q, K, K, cu_seqlens=CU[:1] * 0),
        V,
        "cu_seqlens must start with 0",
    ),
    ("cu start 1", lambda: FA.flash_attention(Q, K, K, cu_seqlens=CU + 1), V, "cu_seqlens must start with 0"),
    (
        "cu decreasing",
        lambda: FA.flash_attention(Q, K, K, cu_seqlens=torch.tensor([0, 5, 3, 8])),
        V,
        "cu_seqlens must be non-decreasing",
    ),
    (
        "cu short",
        lambda: FA.flash_attention(Q, K, K, cu_seqlens=torch.tensor([0, 3, 7])),
        V,
        "cu_seqlens must end at the packed length",
    ),
    (
        "cu batch 2",
        lambda: FA.flash_attention(
            Q.expand(2, -1, -1, -1), K.expand(2, -1, -1, -1), K.expand(2, -1, -1, -1), cu_seqlens=CU
        ),
        V,
        "with cu_seqlens .* batch must be 1",
    ),
    (
        "cu q_len != kv_len",
        lambda: FA.flash_attention(Q, torch.randn(1, 1, 9, 16), torch.randn(1, 1, 9, 16), cu_seqlens=CU),
        V,
        "with cu_seqlens q_len and kv_len must be equal",
    ),
]


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(*c[1:], id=c[0]) for c in BAD])
def test_bad_input_is_refused_clearly(call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert type(info.value) is error  # a wrong type is an InputTypeError, a wrong value a plain ValueError


@needs_cuda
def test_mixed_devices_are_refused():
    with pytest.raises(ValueError, match="q, k, v must be on one device"):
        FA.flash_attention(Q.cuda(), K, K)
    with pytest.raises(ValueError, match="cu_seqlens on cpu"):
        FA.flash_attention(Q.cuda(), K.cuda(), K.cuda(), cu_seqlens=CU)


# ---------------------------------------------------------------- full size, on a GPU only


def _check_full_size(q, k, v, do, mask, atol, **options):
    """FlashAttention's criterion against a float32 reference, next to the reference in the input dtype."""
    out, grads = _ours(q, k, v, do, **options)
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref32 = scaled_dot_product_attention(q32, k32, v32, mask)
    grads32 = torch.autograd.grad(ref32, (q32, k32, v32), do.float())
    ref_lp = scaled_dot_product_attention(q, k, v, mask)
    grads_lp = torch.autograd.grad(ref_lp, (q, k, v), do)
    for name, ours, lowp, exact in zip(
        ("out", "dq", "dk", "dv"), (out, *grads), (ref_lp, *grads_lp), (ref32, *grads32), strict=True
    ):
        err = (ours.float() - exact).abs().max().item()
        err_lowp = (lowp.float() - exact).abs().max().item()
        assert err <= 2 * err_lowp + atol, f"{name}: {err:.3g} vs reference in {q.dtype} {err_lowp:.3g}"


@needs_cuda
def test_full_size_causal_bf16():
    q, k, v, do = _inputs(2, 16, 16, 2048, 2048, 128, dtype=torch.bfloat16)
    mask = _causal(2048, 2048)
    _check_full_size(q, k, v, do, mask, 1e-2, causal=True)


@needs_cuda
def test_full_size_packed_head_dim_80_bf16():
    lengths = [1000, 1024, 777, 1297]  # four images of different sizes, packed
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    total = sum(lengths)
    q, k, v, do = _inputs(1, 16, 16, total, total, 80, dtype=torch.bfloat16)
    segment = torch.repeat_interleave(
        torch.arange(len(lengths), device="cuda"), torch.tensor(lengths, device="cuda")
    )
    mask = segment[:, None] == segment[None, :]
    _check_full_size(q, k, v, do, mask, 1e-2, cu_seqlens=cu)


@needs_cuda
def test_full_size_window_gqa_kv_cache_fp16():
    q, k, v, do = _inputs(1, 8, 2, 1536, 2048, 64, dtype=torch.float16)
    window = 256
    pos = torch.arange(1536, device="cuda")[:, None] + 512
    keys = torch.arange(2048, device="cuda")[None, :]
    mask = (keys <= pos) & (keys > pos - window)
    _check_full_size(q, k, v, do, mask, 2e-3, causal=True, window=window)


@needs_cuda
def test_full_size_head_dim_256_bf16():
    q, k, v, do = _inputs(1, 4, 4, 777, 777, 256, dtype=torch.bfloat16)
    _check_full_size(q, k, v, do, _causal(777, 777), 1e-2, causal=True)


def _causal(q_len, kv_len):
    pos = torch.arange(q_len, device="cuda")[:, None] + (kv_len - q_len)
    return torch.arange(kv_len, device="cuda")[None, :] <= pos
