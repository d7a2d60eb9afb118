"""shared.kernels.rope (Triton) against the PyTorch references in shared and against transformers 5.23.

Without a GPU the kernels run under Triton's interpreter (conftest sets ``TRITON_INTERPRET=1``) on tiny
shapes; with one, the same tests run the compiled kernels on CUDA, plus the full-size tests at the end.

Tolerances (kernel vs reference, ``(atol, rtol)``), measured under the interpreter on the cases below:

- cos/sin tables (:func:`rope_qk`): bitwise in float32, bfloat16 and float16, forward and backward (the
  kernel rounds where ``apply_rope`` and its autograd round; products of two bf16/fp16 numbers are exact in
  float32). Allowed: 0.
- angles in the kernel (:func:`rope_qk_from_positions`, :func:`mrope_qk`): float32 within 4.8e-7 (NumPy's
  float32 cos/sin and PyTorch's differ by an ulp on about one value in seven), allowed 2e-6; bf16/fp16
  bitwise, allowed 1 ulp (a cos an ulp apart in float32 can round to the other bf16 neighbour).

On a GPU the compiler may fuse float32 multiply-adds, and cos/sin are libdevice's: allowed 1e-6 (tables)
and 1e-5 (angles in the kernel) in float32, one ulp in bf16/fp16 (not yet measured on a GPU).
"""

from __future__ import annotations

import pytest
import torch
import transformers.models.qwen2_vl.modeling_qwen2_vl as qwen2_vl
from kernel_setup import DEVICE, ON_GPU, dtype_ids  # skips this module without Triton
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig
from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLTextConfig
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding

import shared.kernels.rope as kernel_rope
from shared.kernels.rope import mrope_qk, rope_qk, rope_qk_from_positions
from shared.mrope import mrope_cos_sin
from shared.rope import apply_rope, rope_cos_sin, rope_inv_freq
from shared.utils import InputTypeError, assert_close

ULP = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}


def tol(dtype: torch.dtype, angles_in_kernel: bool) -> dict:
    """(atol, rtol) of kernel vs reference (see the module docstring)."""
    if dtype == torch.float32:
        if angles_in_kernel:
            atol = 1e-5 if ON_GPU else 2e-6
        else:
            atol = 1e-6 if ON_GPU else 0.0
        return {"atol": atol, "rtol": atol}
    if angles_in_kernel or ON_GPU:  # one ulp: an ulp of v is at most ULP * |v| (atol for v near 0)
        return {"atol": ULP[dtype], "rtol": ULP[dtype]}
    return {"atol": 0.0, "rtol": 0.0}


def randn(*shape: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device=DEVICE, dtype=dtype)


def forward_backward(fn, q: torch.Tensor, k: torch.Tensor, seed: int = 1):
    """``fn(q, k)`` and the gradients of ``<q_rot, gq> + <k_rot, gk>`` for fixed random ``gq``, ``gk``."""
    q = q.detach().clone().requires_grad_()
    k = k.detach().clone().requires_grad_()
    q_rot, k_rot = fn(q, k)
    grad_q = randn(*q_rot.shape, dtype=q_rot.dtype, seed=seed)
    grad_k = randn(*k_rot.shape, dtype=k_rot.dtype, seed=seed + 1)
    torch.autograd.backward((q_rot, k_rot), (grad_q, grad_k))
    return q_rot.detach(), k_rot.detach(), q.grad, k.grad


def assert_same(ours: tuple, ref: tuple, **tolerance) -> None:
    for name, a, e in zip(("q_rot", "k_rot", "q.grad", "k.grad"), ours, ref, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape, name
        assert_close(a, e, name=name, **tolerance)


def reference_tables(cos: torch.Tensor, sin: torch.Tensor, layout: str = "rotate_half"):
    """The reference of rope_qk: apply_rope on q and on k, 3D tables read as cos[:, None]."""
    c, s = (cos[:, None], sin[:, None]) if cos.ndim == 3 else (cos, sin)
    return lambda q, k: (apply_rope(q, c, s, layout=layout), apply_rope(k, c, s, layout=layout))


# ---------------------------------------------------------------------------------------------------------
# rope_qk: cos/sin tables
# ---------------------------------------------------------------------------------------------------------

# (batch, heads, kv_heads, seq, head_dim, layout, table shape, dtype): GQA, MQA, odd seq, head_dim 80 (not a
# power of two), 2 and 256 (the extremes), the five table shapes, every dtype.
TABLE_CASES = [
    (2, 4, 2, 3, 8, "rotate_half", "seq", torch.float32),
    (2, 4, 2, 3, 8, "rotate_half", "seq", torch.bfloat16),
    (2, 4, 2, 3, 8, "rotate_half", "seq", torch.float16),
    (2, 2, 1, 3, 80, "interleaved", "batch", torch.float32),
    (2, 2, 1, 3, 80, "interleaved", "batch", torch.bfloat16),
    (1, 2, 1, 13, 64, "rotate_half", "batch,1", torch.bfloat16),
    (2, 4, 1, 3, 2, "interleaved", "1,1", torch.float32),
    (1, 2, 1, 2, 256, "rotate_half", "1", torch.float16),
]


def tables(batch: int, seq: int, head_dim: int, layout: str, shape: str, dtype=torch.float32):
    positions = torch.randint(0, 4096, (batch, seq), generator=torch.Generator().manual_seed(3))
    cos, sin = rope_cos_sin(positions.to(DEVICE), rope_inv_freq(head_dim).to(DEVICE), layout=layout)
    cos, sin = cos.to(dtype), sin.to(dtype)  # (batch, seq, head_dim)
    if shape == "seq":
        return cos[0], sin[0]
    if shape == "1":
        return cos[:1], sin[:1]
    if shape == "batch,1":
        return cos[:, None], sin[:, None]
    if shape == "1,1":
        return cos[:1, None], sin[:1, None]
    return cos, sin


@pytest.mark.parametrize(
    ("batch", "heads", "kv_heads", "seq", "head_dim", "layout", "shape", "dtype"), TABLE_CASES, ids=dtype_ids
)
def test_rope_qk_matches_apply_rope(batch, heads, kv_heads, seq, head_dim, layout, shape, dtype) -> None:
    q = randn(batch, heads, seq, head_dim, dtype=dtype)
    k = randn(batch, kv_heads, seq, head_dim, dtype=dtype, seed=1)
    cos, sin = tables(batch, seq, head_dim, layout, shape)
    ours = forward_backward(lambda q, k: rope_qk(q, k, cos, sin, layout=layout), q, k)
    ref = forward_backward(reference_tables(cos, sin, layout), q, k)
    assert_same(ours, ref, **tol(dtype, angles_in_kernel=False))


@pytest.mark.parametrize("table_dtype", [torch.bfloat16, torch.float16], ids=dtype_ids)
def test_rope_qk_low_precision_tables(table_dtype) -> None:
    """Tables in another dtype than q (transformers returns them in x's dtype): cast as cos.to(q.dtype)."""
    q, k = randn(2, 2, 5, 16), randn(2, 1, 5, 16, seed=1)
    cos, sin = tables(2, 5, 16, "rotate_half", "batch", dtype=table_dtype)
    ours = forward_backward(lambda q, k: rope_qk(q, k, cos, sin), q, k)
    assert_same(ours, forward_backward(reference_tables(cos, sin), q, k), **tol(torch.float32, False))


def test_rope_qk_matches_llama_apply_rotary_pos_emb() -> None:
    """bf16 q, k and LlamaRotaryEmbedding's bf16 tables through transformers' apply_rotary_pos_emb."""
    head_dim = 16
    config = LlamaConfig(
        hidden_size=4 * head_dim, num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )  # fmt: skip
    q = randn(2, 4, 3, head_dim, dtype=torch.bfloat16)
    k = randn(2, 2, 3, head_dim, dtype=torch.bfloat16, seed=1)
    positions = torch.tensor([[0, 1, 2], [100, 1000, 4000]], device=DEVICE)
    cos, sin = LlamaRotaryEmbedding(config).to(DEVICE)(q, positions)  # (batch, seq, head_dim), bf16
    ours = forward_backward(lambda q, k: rope_qk(q, k, cos, sin), q, k)
    ref = forward_backward(lambda q, k: apply_rotary_pos_emb(q, k, cos, sin), q, k)
    assert_same(ours, ref, **tol(torch.bfloat16, angles_in_kernel=False))


def test_rope_qk_strided_inputs_and_gradients() -> None:
    """q as transformers makes it ((batch, seq, heads, d) transposed), k a slice of a wider buffer, and
    gradients that arrive transposed: read and written through their strides, outputs in the inputs' layout."""
    q = randn(2, 3, 4, 8).transpose(1, 2)  # (2, 4, 3, 8), not contiguous
    k = randn(2, 3, 3, 12, seed=1)[:, :2, :, 2:10]  # (2, 2, 3, 8): a slice of a wider buffer
    cos, sin = tables(2, 3, 8, "rotate_half", "batch")
    assert not q.is_contiguous() and not k.is_contiguous()
    q_rot, _ = rope_qk(q, k, cos, sin)
    assert q_rot.stride() == q.stride()

    def transposed(fn):  # q_rot seen as (batch, seq, heads, d): its gradient arrives transposed
        def run(q, k):
            q_rot, k_rot = fn(q, k)
            return q_rot.transpose(1, 2), k_rot

        return run

    ours = forward_backward(transposed(lambda q, k: rope_qk(q, k, cos, sin)), q, k)
    ref = forward_backward(transposed(reference_tables(cos, sin)), q, k)
    assert_same(ours, ref, **tol(torch.float32, angles_in_kernel=False))
    # ... and the outputs equal the kernel's on contiguous copies.
    q_rot_contiguous, k_rot_contiguous = rope_qk(q.contiguous(), k.contiguous(), cos, sin)
    assert_close(ours[0], q_rot_contiguous.transpose(1, 2), atol=0, rtol=0)
    assert_close(ours[1], k_rot_contiguous, atol=0, rtol=0)


def test_rope_qk_is_one_rotation_per_pair() -> None:
    """An independent check of the rotation itself: q_rot . k_rot depends on the position offset only."""
    q, k = randn(1, 1, 1, 8).expand(1, 1, 6, 8), randn(1, 1, 1, 8, seed=1).expand(1, 1, 6, 8)
    inv_freq = rope_inv_freq(8).to(DEVICE)
    positions = torch.tensor([0, 1, 2, 10, 11, 12], device=DEVICE)
    q_rot, k_rot = rope_qk_from_positions(q, k, positions, inv_freq)
    # <q at m, k at n> depends on m - n: (1, 0) == (2, 1) == (11, 10) == (12, 11).
    dots = [float(q_rot[0, 0, m] @ k_rot[0, 0, n]) for m, n in [(1, 0), (2, 1), (4, 3), (5, 4)]]
    assert max(dots) - min(dots) < 1e-5
    # and a rotation keeps norms
    assert_close(q_rot.norm(dim=-1), q.norm(dim=-1), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Angles in the kernel: rope_qk_from_positions and mrope_qk
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "positions_shape", "scale", "head_dim", "dtype"),
    [
        ("rotate_half", "batch", 1.0, 8, torch.float32),
        ("rotate_half", "batch", 1.0, 8, torch.bfloat16),
        ("interleaved", "seq", 1.25, 80, torch.float32),
        ("interleaved", "seq", 1.25, 80, torch.float16),
        ("rotate_half", "1", 0.5, 64, torch.bfloat16),
    ],
    ids=dtype_ids,
)
def test_rope_qk_from_positions_matches_reference(layout, positions_shape, scale, head_dim, dtype) -> None:
    batch, seq = 2, 3
    q = randn(batch, 4, seq, head_dim, dtype=dtype)
    k = randn(batch, 2, seq, head_dim, dtype=dtype, seed=1)
    positions = torch.randint(0, 32768, (batch, seq), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    positions = {"batch": positions, "seq": positions[0], "1": positions[:1]}[positions_shape]
    inv_freq = rope_inv_freq(head_dim, 500000.0).to(DEVICE)
    cos, sin = rope_cos_sin(positions, inv_freq, layout=layout, scale=scale)

    def ours_fn(q, k):
        return rope_qk_from_positions(q, k, positions, inv_freq, layout=layout, attention_scaling=scale)

    ref_fn = reference_tables(
        cos[None] if cos.ndim == 2 else cos, sin[None] if sin.ndim == 2 else sin, layout
    )
    assert_same(forward_backward(ours_fn, q, k), forward_backward(ref_fn, q, k), **tol(dtype, True))


def test_rope_qk_from_real_positions() -> None:
    """Real (float) positions, as rope_cos_sin accepts (position interpolation by hand)."""
    q, k = randn(1, 2, 4, 16), randn(1, 1, 4, 16, seed=1)
    positions = torch.tensor([0.0, 0.5, 1.25, 1000.75], device=DEVICE)
    inv_freq = rope_inv_freq(16).to(DEVICE)
    cos, sin = rope_cos_sin(positions, inv_freq)
    ours = forward_backward(lambda q, k: rope_qk_from_positions(q, k, positions, inv_freq), q, k)
    assert_same(ours, forward_backward(reference_tables(cos, sin), q, k), **tol(torch.float32, True))


@pytest.mark.parametrize(
    ("section", "layout", "ids_shape", "dtype"),
    [
        ([2, 3, 3], "sectioned", "batch", torch.float32),
        ([16, 24, 24], "sectioned", "seq", torch.bfloat16),
        ([24, 20, 20], "interleaved", "batch", torch.float32),
        ([24, 20, 20], "interleaved", "batch", torch.bfloat16),
    ],
    ids=dtype_ids,
)
def test_mrope_qk_matches_mrope_cos_sin(section, layout, ids_shape, dtype) -> None:
    head_dim = 2 * sum(section)
    batch, seq = 2, 3
    q = randn(batch, 2, seq, head_dim, dtype=dtype)
    k = randn(batch, 1, seq, head_dim, dtype=dtype, seed=1)
    ids = torch.randint(0, 3000, (3, batch, seq), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    ids = ids if ids_shape == "batch" else ids[:, 0]
    inv_freq = rope_inv_freq(head_dim, 1e6).to(DEVICE)
    cos, sin = mrope_cos_sin(ids, inv_freq, section, layout=layout, scale=1.5)
    cos, sin = (cos, sin) if cos.ndim == 3 else (cos[None], sin[None])

    def ours_fn(q, k):
        return mrope_qk(q, k, ids, inv_freq, mrope_section=section, layout=layout, attention_scaling=1.5)

    ours = forward_backward(ours_fn, q, k)
    assert_same(ours, forward_backward(reference_tables(cos, sin), q, k), **tol(dtype, True))


def test_mrope_qk_on_text_is_1d_rope() -> None:
    """Three equal rows of ids (text tokens): M-RoPE is 1D RoPE, in either layout."""
    q, k = randn(2, 2, 3, 16), randn(2, 1, 3, 16, seed=1)
    positions = torch.randint(0, 100, (2, 3), generator=torch.Generator().manual_seed(5)).to(DEVICE)
    inv_freq = rope_inv_freq(16).to(DEVICE)
    expected = rope_qk_from_positions(q, k, positions, inv_freq)
    for section, layout in (([2, 3, 3], "sectioned"), ([3, 3, 2], "interleaved")):
        got = mrope_qk(q, k, positions.expand(3, -1, -1), inv_freq, mrope_section=section, layout=layout)
        for a, e in zip(got, expected, strict=True):
            assert_close(a, e, atol=0, rtol=0, name=layout)


@pytest.mark.parametrize(
    ("section", "interleaved"), [([2, 3, 3], False), ([3, 3, 2], True)], ids=["qwen2_vl", "qwen3_vl"]
)
def test_mrope_qk_matches_transformers(section, interleaved) -> None:
    """Qwen2-VL's / Qwen3-VL's rotary embedding + apply_rotary_pos_emb on float32 q, k."""
    head_dim, theta = 16, 1e6
    rope = {"rope_type": "default", "rope_theta": theta, "mrope_section": section}
    if interleaved:
        rope["mrope_interleaved"] = True
        config = Qwen3VLTextConfig(
            hidden_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=head_dim,
            num_hidden_layers=1, intermediate_size=64, vocab_size=64, rope_parameters=rope,
        )  # fmt: skip
        rotary = Qwen3VLTextRotaryEmbedding(config)
    else:
        config = Qwen2VLTextConfig(
            hidden_size=2 * head_dim, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=1, vocab_size=64, rope_parameters=rope,
        )  # fmt: skip
        rotary = qwen2_vl.Qwen2VLRotaryEmbedding(config)
    ids = torch.randint(0, 2000, (3, 2, 3), generator=torch.Generator().manual_seed(6)).to(DEVICE)
    q, k = randn(2, 2, 3, head_dim), randn(2, 1, 3, head_dim, seed=1)
    cos, sin = rotary.to(DEVICE)(q, ids)
    inv_freq = rope_inv_freq(head_dim, theta).to(DEVICE)
    layout = "interleaved" if interleaved else "sectioned"
    ours = forward_backward(
        lambda q, k: mrope_qk(q, k, ids, inv_freq, mrope_section=section, layout=layout), q, k
    )
    ref = forward_backward(lambda q, k: qwen2_vl.apply_rotary_pos_emb(q, k, cos, sin), q, k)
    assert_same(ours, ref, **tol(torch.float32, True))


# ---------------------------------------------------------------------------------------------------------
# Dispatch: the torch fallback, float64
# ---------------------------------------------------------------------------------------------------------


def test_torch_backend_gives_the_reference(monkeypatch) -> None:
    """With backend "torch" (no Triton, or tensors where no kernel runs) every function is its reference."""
    monkeypatch.setattr(kernel_rope, "backend", lambda *tensors: "torch")
    monkeypatch.setattr(kernel_rope, "_launch_tables", None)  # a kernel launch would fail loudly
    monkeypatch.setattr(kernel_rope, "_launch_positions", None)
    q, k = randn(2, 2, 5, 16), randn(2, 1, 5, 16, seed=1)
    positions = torch.arange(5, device=DEVICE)
    inv_freq = rope_inv_freq(16).to(DEVICE)
    cos, sin = rope_cos_sin(positions, inv_freq)
    ref = forward_backward(reference_tables(cos, sin), q, k)
    exact = {"atol": 0.0, "rtol": 0.0}
    assert_same(forward_backward(lambda q, k: rope_qk(q, k, cos, sin), q, k), ref, **exact)
    ours = forward_backward(lambda q, k: rope_qk_from_positions(q, k, positions, inv_freq), q, k)
    assert_same(ours, ref, **exact)
    ids = positions.expand(3, 2, -1)
    ours = forward_backward(lambda q, k: mrope_qk(q, k, ids, inv_freq, mrope_section=[2, 3, 3]), q, k)
    assert_same(ours, ref, **exact)


def test_float64_takes_the_reference(monkeypatch) -> None:
    monkeypatch.setattr(kernel_rope, "_launch_tables", None)
    monkeypatch.setattr(kernel_rope, "_launch_positions", None)
    q, k = randn(1, 2, 3, 8, dtype=torch.float64), randn(1, 1, 3, 8, dtype=torch.float64, seed=1)
    inv_freq = rope_inv_freq(8).to(DEVICE)
    cos, sin = rope_cos_sin(torch.arange(3, device=DEVICE), inv_freq)
    ref = forward_backward(reference_tables(cos, sin), q, k)
    ours = forward_backward(lambda q, k: rope_qk(q, k, cos, sin), q, k)
    assert_same(ours, ref, atol=0.0, rtol=0.0)
    # float64 tables on float32 q: the reference too (cos.to(q.dtype) from float64).
    q32, k32 = q.float(), k.float()
    ref = forward_backward(reference_tables(cos.double(), sin.double()), q32, k32)
    ours = forward_backward(lambda q, k: rope_qk(q, k, cos.double(), sin.double()), q32, k32)
    assert_same(ours, ref, atol=0.0, rtol=0.0)


# ---------------------------------------------------------------------------------------------------------
# Bad inputs: every public function names the argument
# ---------------------------------------------------------------------------------------------------------

Q, K = torch.zeros(2, 4, 5, 8), torch.zeros(2, 2, 5, 8)
COS = torch.zeros(5, 8)
POS = torch.arange(5)
INV = rope_inv_freq(8)
IDS = torch.zeros(3, 2, 5, dtype=torch.long)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (([1.0], K, COS, COS), {}, InputTypeError, "q must be a torch.Tensor"),
        ((Q.long(), K, COS, COS), {}, InputTypeError, "q must be a floating-point"),
        ((Q[0], K, COS, COS), {}, ValueError, "q must have 4 dimensions"),
        ((Q, K.half(), COS, COS), {}, InputTypeError, "q and k must have one dtype"),
        ((Q[..., :7], K[..., :7], COS[:, :7], COS[:, :7]), {}, ValueError, "head_dim.*even"),
        ((torch.zeros(1, 1, 5, 258), torch.zeros(1, 1, 5, 258), torch.zeros(5, 258), torch.zeros(5, 258)), {},
         ValueError, "head_dim.*at most 256"),
        ((Q, K[:, :, :4], COS, COS), {}, ValueError, "k must have shape"),
        ((Q, torch.zeros(2, 3, 5, 8), COS, COS), {}, ValueError, "kv_heads 3 must divide"),
        ((Q, K, COS, COS[:4]), {}, ValueError, "cos and sin must have the same shape"),
        ((Q, K, COS[:4], COS[:4]), {}, ValueError, "cos/sin must have shape"),
        ((Q, K, torch.zeros(3, 5, 8), torch.zeros(3, 5, 8)), {}, ValueError, "cos/sin of shape"),
        ((Q, K, torch.zeros(2, 4, 5, 8), torch.zeros(2, 4, 5, 8)), {}, ValueError, "one table for all heads"),
        ((Q, K, COS.long(), COS.long()), {}, InputTypeError, "cos must be a floating-point"),
        ((Q, K, COS, COS.to("meta")), {}, ValueError, "sin is on the meta device"),
        ((Q, K, COS, COS), {"layout": "half"}, ValueError, "layout"),
    ],
)  # fmt: skip
def test_rope_qk_bad_inputs(args, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        rope_qk(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((Q, K, POS.bool(), INV), {}, InputTypeError, "positions must be integer or real"),
        ((Q, K, POS[:4], INV), {}, ValueError, "positions must hold seq = 5"),
        ((Q, K, POS.expand(3, 5), INV), {}, ValueError, "positions of shape"),
        ((Q, K, POS.expand(2, 2, 5), INV), {}, ValueError, "positions must have 1 or 2 dimensions"),
        ((Q, K, POS, INV[:3]), {}, ValueError, "inv_freq must have shape"),
        ((Q, K, POS, INV.long()), {}, InputTypeError, "inv_freq must be a floating-point"),
        ((Q, K, POS, INV), {"attention_scaling": 0.0}, ValueError, "attention_scaling"),
        ((Q, K, POS, INV), {"attention_scaling": float("nan")}, ValueError, "attention_scaling"),
        ((Q, K, POS, INV), {"layout": "sectioned"}, ValueError, "layout"),
        ((Q[..., :7], K[..., :7], POS, INV), {}, ValueError, "head_dim"),
    ],
)  # fmt: skip
def test_rope_qk_from_positions_bad_inputs(args, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        rope_qk_from_positions(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((Q, K, IDS.float(), INV), {}, InputTypeError, "position_ids must be an integer tensor"),
        ((Q, K, IDS[:2], INV), {}, ValueError, r"position_ids must have shape \(3, seq\)"),
        ((Q, K, IDS[..., :4], INV), {}, ValueError, "position_ids must have shape"),
        ((Q, K, torch.zeros(3, 3, 5, dtype=torch.long), INV), {}, ValueError, "position_ids of shape"),
        ((Q, K, IDS, INV[:2]), {}, ValueError, "inv_freq must have shape"),
        ((Q, K, IDS, INV), {"mrope_section": [1, 1, 1]}, ValueError, "mrope_section .* must sum to head_dim/2 = 4"),
        ((Q, K, IDS, INV), {"mrope_section": (1, 1)}, ValueError, "mrope_section must be a list of 3"),
        ((Q, K, IDS, INV), {"mrope_section": "112"}, InputTypeError, "mrope_section"),
        ((Q, K, IDS, INV), {"mrope_section": [1, 1.5, 1.5]}, InputTypeError, "mrope_section entries"),
        ((Q, K, IDS, INV), {"mrope_section": [1, 1, 2], "layout": "thw"}, ValueError, "layout"),
        ((Q, K, IDS, INV), {"mrope_section": [0, 0, 4], "layout": "interleaved"}, ValueError, "interleaved layout"),
        ((Q, K, IDS, INV), {"mrope_section": [1, 1, 2], "attention_scaling": float("inf")}, ValueError,
         "attention_scaling"),
        ((Q, K.double(), IDS, INV), {"mrope_section": [1, 1, 2]}, InputTypeError, "q and k must have one dtype"),
    ],
)  # fmt: skip
def test_mrope_qk_bad_inputs(args, kwargs, error, match) -> None:
    kwargs = {"mrope_section": [1, 1, 2], **kwargs}
    with pytest.raises(error, match=match):
        mrope_qk(*args, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
def test_mixed_devices_refused() -> None:
    q, k = Q.cuda(), K.cuda()
    with pytest.raises(ValueError, match="must be on one device"):
        rope_qk(q, k, COS, COS)
    with pytest.raises(ValueError, match="must be on one device"):
        rope_qk_from_positions(q, k, POS, INV.cuda())
    with pytest.raises(ValueError, match="must be on one device"):
        mrope_qk(q, k, IDS, INV.cuda(), mrope_section=[1, 1, 2])


# ---------------------------------------------------------------------------------------------------------
# Full size, GPU only
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="full-size kernel test needs CUDA")
def test_full_size_rope_and_mrope_on_gpu() -> None:
    batch, heads, kv_heads, seq, head_dim = 2, 32, 8, 2048, 128
    q = torch.randn(batch, heads, seq, head_dim, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, kv_heads, seq, head_dim, device="cuda", dtype=torch.bfloat16)
    inv_freq = rope_inv_freq(head_dim, 1e6).cuda()
    positions = torch.arange(seq, device="cuda").expand(batch, -1)
    cos, sin = rope_cos_sin(positions, inv_freq)
    bf16_tol = tol(torch.bfloat16, angles_in_kernel=True)
    ours = forward_backward(lambda q, k: rope_qk(q, k, cos, sin), q, k)
    assert_same(ours, forward_backward(reference_tables(cos, sin), q, k), **bf16_tol)
    ours = forward_backward(lambda q, k: rope_qk_from_positions(q, k, positions, inv_freq), q, k)
    assert_same(ours, forward_backward(reference_tables(cos, sin), q, k), **bf16_tol)
    ids = torch.randint(0, seq, (3, batch, seq), device="cuda")
    cos, sin = mrope_cos_sin(ids, inv_freq, [16, 24, 24])
    ours = forward_backward(lambda q, k: mrope_qk(q, k, ids, inv_freq, mrope_section=[16, 24, 24]), q, k)
    assert_same(ours, forward_backward(reference_tables(cos, sin), q, k), **bf16_tol)
    # float32 with far positions (32k): the range reduction keeps the in-kernel angles accurate.
    q32, k32 = q[:1, :4].float(), k[:1, :1].float()
    far = torch.arange(seq, device="cuda") + 30000
    cos, sin = rope_cos_sin(far, inv_freq)
    ours = forward_backward(lambda q, k: rope_qk_from_positions(q, k, far, inv_freq), q32, k32)
    assert_same(ours, forward_backward(reference_tables(cos, sin), q32, k32), **tol(torch.float32, True))
