"""The checks of ``test_bad_input.py`` must not refuse or change valid but unusual inputs.

Property-based (hypothesis) over the valid space: length 1, batch 1, head_dim 80, GQA/MQA, bf16, float64,
non-contiguous inputs, and float64 as the default dtype (reading R7 trains that way); each result is compared
with the reference the rest of the suite uses (``transformers`` or ``torch``), bit for bit where the
operations are the same.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding, apply_rotary_pos_emb

from shared import attention as A
from shared import norms as N
from shared import policy_losses as P
from shared import rope as R
from shared.mrope import IMAGE, TEXT, mrope_position_ids
from shared.utils import assert_close

DTYPES = st.sampled_from([torch.float32, torch.bfloat16, torch.float64])
FEW = settings(max_examples=25, deadline=None)


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32, strided: bool = False) -> torch.Tensor:
    """A random tensor; ``strided`` gives a non-contiguous view with the same shape (the last two dims swapped)."""
    g = torch.Generator().manual_seed(seed)
    if not strided:
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    swapped = (*shape[:-2], shape[-1], shape[-2])
    out = torch.randn(*swapped, generator=g, dtype=torch.float64).to(dtype).transpose(-1, -2)
    assert out.shape == shape
    return out


@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# ---------------------------------------------------------------- RoPE


@FEW
@given(
    batch=st.integers(1, 2),
    heads=st.integers(1, 3),
    seq=st.integers(1, 6),
    head_dim=st.sampled_from([2, 4, 8, 80]),
    dtype=DTYPES,
    strided=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_apply_rope_equals_transformers_bitwise(batch, heads, seq, head_dim, dtype, strided, seed):
    config = LlamaConfig(hidden_size=head_dim * heads, num_attention_heads=heads, head_dim=head_dim)
    rotary = LlamaRotaryEmbedding(config)
    q = _randn(batch, heads, seq, head_dim, seed=seed, dtype=dtype, strided=strided)
    positions = torch.arange(seq)[None].expand(batch, -1) + seed % 50  # (batch, seq)
    cos, sin = rotary(q, positions)  # (batch, seq, d) in q's dtype
    ref, _ = apply_rotary_pos_emb(q, q, cos, sin)
    ours_cos, ours_sin = R.rope_cos_sin(
        positions, R.rope_inv_freq(head_dim, config.rope_parameters["rope_theta"])
    )
    assert torch.equal(ours_cos.to(dtype), cos) and torch.equal(ours_sin.to(dtype), sin)
    assert torch.equal(R.apply_rope(q, ours_cos[:, None], ours_sin[:, None]), ref)
    # one table shared by the batch, (seq, d), broadcasts the same way
    if batch == 1:
        assert torch.equal(R.apply_rope(q, ours_cos[0], ours_sin[0]), ref)


def test_rope_tables_under_float64_default_equal_transformers(float64_default):
    config = LlamaConfig(hidden_size=160, num_attention_heads=2, head_dim=80)
    x = torch.randn(1, 7, 160)  # float64 by default
    cos, sin = LlamaRotaryEmbedding(config)(x, torch.arange(7)[None])  # float64 copies of float32 tables
    ours_cos, ours_sin = R.rope_cos_sin(torch.arange(7), R.rope_inv_freq(80))
    assert ours_cos.dtype == torch.float32  # the tables are float32 whatever the default dtype
    assert torch.equal(ours_cos.double(), cos[0]) and torch.equal(ours_sin.double(), sin[0])


@FEW
@given(n=st.integers(1, 5), heads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_apply_rope_vision_layout_keeps_working(n, heads, seed):
    """``(n, 1, d)`` tables against ``(n, heads, d)``: the position axis is -3 there (Qwen2-VL's ViT)."""
    q = _randn(n, heads, 8, seed=seed)
    cos, sin = R.rope_cos_sin(torch.arange(n), R.rope_inv_freq(8))  # (n, 8)
    expected = R.apply_rope(q.transpose(0, 1), cos, sin).transpose(0, 1)  # as (heads, n, d) with (n, d)
    assert torch.equal(R.apply_rope(q, cos[:, None], sin[:, None]), expected)


# ---------------------------------------------------------------- attention


def test_attention_module_in_float64_default(float64_default):
    torch.manual_seed(0)
    module = A.Attention(16, 4, 2)  # GQA, float64 weights
    x = torch.randn(2, 5, 16)
    cos, sin = R.rope_cos_sin(torch.arange(5), R.rope_inv_freq(4))
    out = module(x, A.causal_mask(5), cos=cos, sin=sin)
    assert out.dtype == torch.float64
    q = module.q_proj(x).view(2, 5, 4, 4).transpose(1, 2)
    k = module.k_proj(x).view(2, 5, 2, 4).transpose(1, 2)
    v = module.v_proj(x).view(2, 5, 2, 4).transpose(1, 2)
    q, k = R.apply_rope(q, cos, sin), R.apply_rope(k, cos, sin)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert_close(out, module.o_proj(ref.transpose(1, 2).reshape(2, 5, 16)), atol=1e-12, rtol=1e-12)


def test_attention_module_bf16_batch_1_length_1():
    module = A.Attention(8, 2, 1).to(torch.bfloat16)  # MQA
    out = module(torch.randn(1, 1, 8).to(torch.bfloat16), A.causal_mask(1))
    assert out.shape == (1, 1, 8) and out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_attention_module_under_autocast_takes_any_float_input():
    """Under autocast a float32 module takes bf16 input (autocast casts); only outside it is the mix refused."""
    torch.manual_seed(0)
    module = A.Attention(8, 2)
    x = torch.randn(1, 3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x.bfloat16(), A.causal_mask(3))
        ref = module(x, A.causal_mask(3))
    assert out.dtype == ref.dtype == torch.bfloat16
    assert_close(out, ref, atol=0, rtol=0)


def test_fully_masked_rows_still_give_zero():
    q = _randn(1, 1, 3, 4, seed=0)
    mask = A.causal_mask(3, 3, offset=-1)  # the first query sees no key
    out = A.scaled_dot_product_attention(q, q, q, mask)
    assert (out[0, 0, 0] == 0).all() and torch.isfinite(out).all()
    out_inf = A.scaled_dot_product_attention(
        q, q, q, torch.where(mask, 0.0, float("-inf"))
    )  # -inf is allowed
    assert torch.equal(out_inf, out)


# ---------------------------------------------------------------- norms


@FEW
@given(
    rows=st.integers(1, 3),
    dim=st.integers(1, 33),
    strided=st.booleans(),
    eps=st.sampled_from([1e-6, 1e-5, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_norms_in_float64_equal_torch_float64(rows, dim, strided, eps, seed):
    """float64 is normalised in float64 (it used to be downcast to float32: errors of 1e-5 on large means)."""
    x = _randn(rows, 2, dim, seed=seed, dtype=torch.float64, strided=strided) * 3 + 1e3
    w = _randn(dim, seed=seed + 1, dtype=torch.float64)
    b = _randn(dim, seed=seed + 2, dtype=torch.float64)
    assert_close(
        N.layer_norm(x, w, b, eps=eps), F.layer_norm(x, (dim,), w, b, eps=eps), atol=1e-11, rtol=1e-11
    )
    assert_close(N.rms_norm(x, w, eps=eps), F.rms_norm(x, (dim,), w, eps=eps), atol=1e-12, rtol=1e-12)


@FEW
@given(
    dim=st.sampled_from([1, 4, 80]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    strided=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_rms_norm_still_equals_llama_bitwise(dim, dtype, strided, seed):
    llama = LlamaRMSNorm(dim, eps=1e-6).to(dtype)
    with torch.no_grad():
        llama.weight.copy_(_randn(dim, seed=seed + 1))
    x = _randn(2, 3, dim, seed=seed, dtype=dtype, strided=strided)
    assert torch.equal(N.rms_norm(x, llama.weight, eps=1e-6), llama(x))


def test_norm_modules_in_float64_default(float64_default):
    x = torch.randn(2, 3, 6) + 50
    assert_close(N.LayerNorm(6)(x), torch.nn.LayerNorm(6)(x), atol=1e-12)
    assert_close(N.RMSNorm(6)(x), torch.nn.RMSNorm(6, eps=1e-6)(x), atol=1e-12)


# ---------------------------------------------------------------- policy losses


@FEW
@given(
    prompts=st.integers(1, 3),
    completion_len=st.integers(1, 5),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    loss_type=st.sampled_from(P.LOSS_TYPES),
    level=st.sampled_from(P.IMPORTANCE_SAMPLING_LEVELS),
    beta=st.sampled_from([0.0, 0.04]),
    kl_correction=st.booleans(),
    bad=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    seed=st.integers(0, 2**16),
)
def test_padding_values_never_reach_the_loss_or_its_gradient(
    prompts, completion_len, dtype, loss_type, level, beta, kl_correction, bad, seed
):
    """Any value at padding (finite, NaN, ±inf) gives bit for bit the same loss and gradient."""
    g = torch.Generator().manual_seed(seed)
    batch = 2 * prompts
    mask = (torch.rand(batch, completion_len, generator=g) < 0.6).long()
    mask[:, 0] = 1  # every completion has a first token
    logps = -torch.rand(batch, completion_len, generator=g, dtype=torch.float64).to(dtype) * 3
    old = logps + 0.3 * torch.randn(batch, completion_len, generator=g, dtype=torch.float64).to(dtype)
    ref = logps + 0.2
    adv = P.group_advantages(torch.randn(batch, generator=g, dtype=torch.float64).to(dtype), 2)
    options = {
        "beta": beta,
        "epsilon_high": 0.28,
        "loss_type": loss_type,
        "importance_sampling_level": level,
        "kl_importance_correction": kl_correction,
        "max_completion_length": completion_len + 2,
    }

    def loss_and_grad(fill):
        pad = mask == 0
        leaf = logps.masked_fill(pad, fill).requires_grad_(True)
        loss = P.grpo_loss(
            leaf,
            adv,
            mask,
            old_logps=old.masked_fill(pad, fill),
            ref_logps=ref.masked_fill(pad, fill),
            **options,
        )
        (grad,) = torch.autograd.grad(loss, leaf)
        return loss, grad

    clean_loss, clean_grad = loss_and_grad(-1.0)
    bad_loss, bad_grad = loss_and_grad(bad)
    assert torch.isfinite(clean_loss) and torch.equal(bad_loss, clean_loss)
    assert torch.equal(bad_grad, clean_grad)


@FEW
@given(
    values=st.lists(st.sampled_from([0.0, -0.0, 1.5, -2.25, 1e-30, -3e8]), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_masked_sum_is_bitwise_the_product_on_finite_values(values, seed):
    """torch.where keeps trl's x * mask bit for bit on finite values, signed zeros included."""
    x = torch.tensor([values])
    m = (torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) < 0.5).float()
    ours, theirs = P._masked(x, m), x * m
    assert torch.equal(ours, theirs) and torch.equal(ours.signbit(), theirs.signbit())


@FEW
@given(num_generations=st.integers(2, 4), prompts=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_group_advantages_on_a_strided_view(num_generations, prompts, seed):
    rewards = torch.randn(prompts * num_generations, 2, generator=torch.Generator().manual_seed(seed))
    for scale in P.SCALE_REWARDS:
        strided = P.group_advantages(rewards[:, 1], num_generations, scale_rewards=scale)
        assert torch.equal(
            strided, P.group_advantages(rewards[:, 1].contiguous(), num_generations, scale_rewards=scale)
        )


# ---------------------------------------------------------------- M-RoPE ids


@FEW
@given(
    text_before=st.integers(0, 3),
    text_after=st.integers(0, 3),
    h=st.sampled_from([2, 4]),
    w=st.sampled_from([2, 4, 6]),
)
def test_position_ids_of_one_image_keep_working(text_before, text_after, h, w):
    """Batch 1, a single image block (possibly the whole sequence, of length 1), and a strided token_types."""
    n_image = h * w // 4
    types = [TEXT] * text_before + [IMAGE] * n_image + [TEXT] * text_after
    grid = torch.tensor([[1, h, w]])
    ids, deltas = mrope_position_ids(torch.tensor([types]), grid)
    # the paper's rule, written out: text ids count up, an image block spans (h/2, w/2) from its start
    expected = list(range(text_before))
    start = text_before
    rows = [
        [start] * n_image,
        [start + i // (w // 2) for i in range(n_image)],
        [start + i % (w // 2) for i in range(n_image)],
    ]
    after = max(max(r) for r in rows) + 1
    full = [expected + rows[a] + list(range(after, after + text_after)) for a in range(3)]
    assert ids[:, 0].tolist() == full
    assert deltas.item() == after + text_after - len(types)
    strided = torch.tensor([[t, 0] for t in types])[:, 0][None]  # (1, n) with stride 2
    assert torch.equal(mrope_position_ids(strided, grid)[0], ids)
