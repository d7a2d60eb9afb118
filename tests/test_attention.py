"""shared.attention against torch SDPA, transformers' eager attention, masks and LlamaAttention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention.bias import causal_lower_right, causal_upper_left
from transformers import LlamaConfig, MistralConfig
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import (
    causal_mask_function,
    create_causal_mask,
    create_sliding_window_causal_mask,
    eager_mask,
    sdpa_mask,
    sliding_window_causal_mask_function,
)
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaRotaryEmbedding,
    eager_attention_forward,
)
from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv
from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision

from shared.attention import (
    Attention,
    additive_to_bool,
    block_diagonal_mask,
    bool_to_additive,
    causal_mask,
    repeat_kv,
    scaled_dot_product_attention,
    sliding_window_mask,
    with_padding,
)
from shared.utils import assert_close

FAST = settings(max_examples=25, deadline=None)


def _qkv(batch=2, heads=4, kv_heads=2, q_len=5, kv_len=5, head_dim=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, head_dim, generator=g).to(dtype)
    k = torch.randn(batch, kv_heads, kv_len, head_dim, generator=g).to(dtype)
    v = torch.randn(batch, kv_heads, kv_len, head_dim, generator=g).to(dtype)
    return q, k, v


class _Groups(torch.nn.Module):
    """The two attributes transformers' eager_attention_forward reads from its module."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.training = False


# ---------------------------------------------------------------- repeat_kv


@FAST
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3))
def test_repeat_kv_matches_transformers_and_repeat_interleave(batch, kv_heads, seq, head_dim, n_rep):
    x = torch.randn(batch, kv_heads, seq, head_dim)
    out = repeat_kv(x, n_rep)
    assert_close(out, hf_repeat_kv(x, n_rep), atol=0, rtol=0)
    assert_close(out, torch.repeat_interleave(x, n_rep, dim=1), atol=0, rtol=0)


def test_repeat_kv_bad_inputs():
    with pytest.raises(ValueError, match="4 dimensions"):
        repeat_kv(torch.zeros(2, 3, 4), 2)
    with pytest.raises(ValueError, match="n_rep"):
        repeat_kv(torch.zeros(1, 2, 3, 4), 0)
    with pytest.raises(ValueError, match="n_rep"):
        repeat_kv(torch.zeros(1, 2, 3, 4), 2.0)
    with pytest.raises(ValueError, match="torch.Tensor"):
        repeat_kv([[1.0]], 2)


# ---------------------------------------------------------------- scaled_dot_product_attention


@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # MHA, GQA, MQA
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_sdpa_matches_torch(kv_heads, mask_kind):
    q, k, v = _qkv(kv_heads=kv_heads, q_len=5, kv_len=7)
    mask = None
    if mask_kind == "bool":
        mask = causal_mask(5, 7)
    elif mask_kind == "float":
        mask = torch.randn(2, 1, 5, 7)  # an arbitrary additive bias, ALiBi-like
    ours = scaled_dot_product_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=kv_heads != 4)
    assert_close(ours, ref, atol=1e-6, name="sdpa vs torch")


@FAST
@given(
    batch=st.integers(1, 2),
    kv_heads=st.integers(1, 3),
    groups=st.integers(1, 3),
    q_len=st.integers(1, 6),
    kv_extra=st.integers(0, 4),
    head_dim=st.sampled_from([1, 4, 8, 80]),
    window=st.integers(1, 6),
    scale=st.one_of(st.none(), st.floats(0.05, 2.0)),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    strided=st.booleans(),
)
def test_sdpa_property_matches_torch(
    batch, kv_heads, groups, q_len, kv_extra, head_dim, window, scale, dtype, strided
):
    """Also float64 (exact: the softmax stays in float64) and non-contiguous q/v (a transposed copy)."""
    q, k, v = _qkv(batch, kv_heads * groups, kv_heads, q_len, q_len + kv_extra, head_dim, dtype=dtype)
    if strided:
        q, v = (t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in (q, v))
    mask = sliding_window_mask(q_len, q_len + kv_extra, window=window)
    ours = scaled_dot_product_attention(q, k, v, mask, scale=scale)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert_close(ours, ref, atol=tol, rtol=tol)
    additive = bool_to_additive(mask, dtype)  # finfo.min blocks as -inf does on every row with a key
    assert_close(scaled_dot_product_attention(q, k, v, additive, scale=scale), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_sdpa_matches_transformers_eager(kv_heads):
    q, k, v = _qkv(kv_heads=kv_heads, q_len=6, kv_len=6)
    pad = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])  # left padding in row 1
    hf_mask = eager_mask(batch_size=2, q_length=6, kv_length=6, attention_mask=pad.bool())
    ours_mask = bool_to_additive(with_padding(causal_mask(6), pad))
    assert_close(ours_mask, hf_mask, atol=0, rtol=0, name="eager mask")
    ref_out, ref_w = eager_attention_forward(_Groups(4 // kv_heads), q, k, v, hf_mask, scaling=8**-0.5)
    out, w = scaled_dot_product_attention(q, k, v, ours_mask, return_weights=True)
    assert_close(out.transpose(1, 2), ref_out, atol=1e-6, name="output")  # eager returns (b, q, h, d)
    assert_close(w, ref_w, atol=1e-6, name="weights")
    # the bool version agrees on every row that has a key to attend to (all rows here: causal keeps the
    # diagonal, and the padded queries of row 1 are fully masked only for the first two positions)
    out_b = scaled_dot_product_attention(q, k, v, with_padding(causal_mask(6), pad))
    assert_close(out_b[0], out[0], atol=1e-6)
    assert_close(out_b[1, :, 2:], out[1, :, 2:], atol=1e-6)


def test_sdpa_bf16_matches_transformers_eager_exactly():
    q, k, v = _qkv(kv_heads=2, dtype=torch.bfloat16)
    hf_mask = eager_mask(batch_size=2, q_length=5, kv_length=5, dtype=torch.bfloat16)
    ref_out, ref_w = eager_attention_forward(_Groups(2), q, k, v, hf_mask, scaling=8**-0.5)
    out, w = scaled_dot_product_attention(
        q, k, v, bool_to_additive(causal_mask(5), torch.bfloat16), return_weights=True
    )
    assert out.dtype == w.dtype == torch.bfloat16
    assert_close(out.transpose(1, 2), ref_out, atol=0, rtol=0)
    assert_close(w, ref_w, atol=0, rtol=0)


def test_sdpa_weights_are_a_distribution_and_respect_mask():
    q, k, v = _qkv(q_len=6, kv_len=6)
    mask = sliding_window_mask(6, window=3)
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    assert_close(w.sum(-1), torch.ones(2, 4, 6), atol=1e-6)
    assert (w[..., ~mask] == 0).all()
    assert out.shape == (2, 4, 6, 8)


def test_sdpa_value_dim_may_differ():
    q, k, _ = _qkv()
    v = torch.randn(2, 2, 5, 3)
    ours = scaled_dot_product_attention(q, k, v)
    assert_close(ours, F.scaled_dot_product_attention(q, k, v, enable_gqa=True), atol=1e-6)


def test_sdpa_fully_masked_rows():
    q, k, v = _qkv(batch=1, q_len=3, kv_len=3)
    mask = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    out, w = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
    # bool mask: the empty row gives weights 0 and output 0, no NaN, as torch does
    assert (w[:, :, 1] == 0).all() and (out[:, :, 1] == 0).all()
    assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True), atol=1e-6)
    # -inf additive mask: the same
    inf_mask = torch.zeros(3, 3).masked_fill(~mask, float("-inf"))
    assert_close(scaled_dot_product_attention(q, k, v, inf_mask), out, atol=1e-6)
    # transformers-style finfo.min mask: the empty row becomes the uniform average of the values
    out_min, w_min = scaled_dot_product_attention(q, k, v, bool_to_additive(mask), return_weights=True)
    assert_close(w_min[:, :, 1], torch.full((1, 4, 3), 1 / 3), atol=1e-6)
    assert_close(out_min[:, :, 1], repeat_kv(v, 2).mean(dim=2), atol=1e-6)
    assert_close(out_min[:, :, [0, 2]], out[:, :, [0, 2]], atol=1e-6)


def test_sdpa_bad_inputs():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="q must have 4"):
        scaled_dot_product_attention(q[0], k, v)
    with pytest.raises(ValueError, match="floating-point"):
        scaled_dot_product_attention(q.long(), k, v)
    with pytest.raises(ValueError, match="share a dtype"):
        scaled_dot_product_attention(q, k.double(), v)
    with pytest.raises(ValueError, match="batch"):
        scaled_dot_product_attention(q, k[:1], v[:1])
    with pytest.raises(ValueError, match="head_dim"):
        scaled_dot_product_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="same"):
        scaled_dot_product_attention(q, k, v[:, :, :3])
    with pytest.raises(ValueError, match="multiple"):
        scaled_dot_product_attention(q[:, :3], k, v)
    for bad_scale in (0.0, -1.0, float("inf"), True, "0.5"):
        with pytest.raises(ValueError, match="scale"):
            scaled_dot_product_attention(q, k, v, scale=bad_scale)
    with pytest.raises(ValueError, match="bool"):
        scaled_dot_product_attention(q, k, v, torch.ones(5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="2 or 4 dimensions"):
        scaled_dot_product_attention(q, k, v, torch.ones(2, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="broadcast"):
        scaled_dot_product_attention(q, k, v, torch.ones(5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="broadcast"):
        scaled_dot_product_attention(q, k, v, torch.ones(3, 1, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="torch.Tensor"):
        scaled_dot_product_attention(q, k, v, [[True]])


# ---------------------------------------------------------------- mask builders


@FAST
@given(q_len=st.integers(1, 8), cached=st.integers(0, 8))
def test_causal_mask_matches_transformers_and_torch(q_len, cached):
    kv_len = q_len + cached
    ours = causal_mask(q_len, kv_len)  # default offset: queries are the newest tokens
    hf = sdpa_mask(
        1, q_len, kv_len, q_offset=cached, mask_function=causal_mask_function, allow_is_causal_skip=False
    )
    assert_close(ours, hf[0, 0], atol=0, rtol=0)
    assert_close(ours, causal_lower_right(q_len, kv_len)._materialize(), atol=0, rtol=0)
    assert_close(
        causal_mask(q_len, kv_len, offset=0), causal_upper_left(q_len, kv_len)._materialize(), atol=0, rtol=0
    )
    assert_close(causal_mask(q_len, offset=cached), ours, atol=0, rtol=0)  # kv_len inferred


def test_causal_mask_small_cases():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert causal_mask(1, 4).tolist() == [[True, True, True, True]]  # one decoding step sees the whole cache
    assert causal_mask(2, 2, offset=-1).tolist() == [[False, False], [True, False]]  # fully masked first row


def test_causal_mask_with_a_kv_cache_matches_create_causal_mask():
    config = LlamaConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1, vocab_size=10)
    config._attn_implementation = "eager"
    cache = DynamicCache(config=config)
    cache.update(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), 0)  # 4 tokens already cached
    embeds = torch.zeros(1, 3, 8)  # 3 new tokens
    hf = create_causal_mask(config, embeds, None, cache)  # (1, 1, 3, 7) additive
    assert_close(bool_to_additive(causal_mask(3, 7))[None, None], hf, atol=0, rtol=0)


@FAST
@given(q_len=st.integers(1, 8), cached=st.integers(0, 8), window=st.integers(1, 9))
def test_sliding_window_mask_matches_transformers(q_len, cached, window):
    kv_len = q_len + cached
    ours = sliding_window_mask(q_len, kv_len, window=window)
    hf = sdpa_mask(
        1,
        q_len,
        kv_len,
        q_offset=cached,
        mask_function=sliding_window_causal_mask_function(window),
        allow_is_causal_skip=False,
    )
    assert_close(ours, hf[0, 0], atol=0, rtol=0)
    # each query sees min(window, its position + 1) keys: the window counts the query itself
    assert ours.sum(-1).tolist() == [min(window, cached + i + 1) for i in range(q_len)]
    assert_close(ours & causal_mask(q_len, kv_len), ours, atol=0, rtol=0)


def test_sliding_window_small_case_and_full_window():
    assert sliding_window_mask(4, window=2).tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [False, True, True, False],
        [False, False, True, True],
    ]
    assert_close(sliding_window_mask(5, window=5), causal_mask(5), atol=0, rtol=0)
    assert_close(sliding_window_mask(5, window=1), torch.eye(5, dtype=torch.bool), atol=0, rtol=0)


def test_sliding_window_mask_with_mistral_sliding_cache():
    """The rolling cache keeps window-1 old keys; transformers' kv_offset maps onto our offset."""
    window = 3
    config = MistralConfig(
        hidden_size=8,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_hidden_layers=1,
        vocab_size=10,
        sliding_window=window,
    )
    config._attn_implementation = "eager"
    cache = DynamicCache(config=config)
    cache.update(torch.zeros(1, 1, 5, 4), torch.zeros(1, 1, 5, 4), 0)  # 5 tokens seen, window-1 = 2 kept
    q_len = 2
    hf = create_sliding_window_causal_mask(config, torch.zeros(1, q_len, 8), None, cache)
    kv_len = hf.shape[-1]  # window - 1 + q_len
    assert kv_len == window - 1 + q_len
    ours = sliding_window_mask(q_len, kv_len, window=window)
    assert_close(bool_to_additive(ours)[None, None], hf, atol=0, rtol=0)


def test_sliding_window_bad_inputs():
    for bad in (0, -1, 2.5, None, True):
        with pytest.raises(ValueError, match="window"):
            sliding_window_mask(4, window=bad)


def test_causal_mask_bad_inputs():
    for bad_q in (0, -2, 3.0, True):
        with pytest.raises(ValueError, match="q_len"):
            causal_mask(bad_q)
    with pytest.raises(ValueError, match="kv_len"):
        causal_mask(3, 0)
    with pytest.raises(ValueError, match="kv_len"):
        causal_mask(3, "4")
    with pytest.raises(ValueError, match="offset"):
        causal_mask(3, offset=1.5)
    with pytest.raises(ValueError, match="q_len \\+ offset"):
        causal_mask(3, offset=-3)


def test_block_diagonal_matches_per_segment_attention_like_qwen2_vl():
    cu = torch.tensor([0, 3, 4, 9], dtype=torch.int32)
    mask = block_diagonal_mask(cu)
    assert mask.shape == (9, 9) and mask.sum() == 9 + 1 + 25
    q, k, v = _qkv(batch=1, heads=2, kv_heads=2, q_len=9, kv_len=9)
    ours = scaled_dot_product_attention(q, k, v, mask)
    lengths = (cu[1:] - cu[:-1]).tolist()
    parts = [
        eager_attention_forward(_Groups(1), qi, ki, vi, None, scaling=8**-0.5)[0]
        for qi, ki, vi in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2), strict=True)
    ]  # Qwen2-VL VisionAttention without FlashAttention: one attention call per segment
    assert_close(ours.transpose(1, 2), torch.cat(parts, dim=1), atol=1e-6)


def test_block_diagonal_in_qwen2_vl_vision_attention():
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import VisionAttention

    config = Qwen2VLVisionConfig(embed_dim=16, num_heads=2)
    config._attn_implementation = "eager"
    attn = VisionAttention(config).eval()
    torch.manual_seed(0)
    x = torch.randn(10, 16)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    angles = torch.randn(10, 4)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    with torch.no_grad():
        ref = attn(x, cu_seqlens=cu, position_embeddings=(cos, sin))
        q, k, v = attn.qkv(x).reshape(10, 3, 2, 8).permute(1, 0, 2, 3).unbind(0)  # (seq, heads, d)
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
        q, k, v = (t.transpose(0, 1)[None] for t in (q, k, v))  # (1, heads, seq, d)
        out = scaled_dot_product_attention(q, k, v, block_diagonal_mask(cu))
        ours = attn.proj(out[0].transpose(0, 1).reshape(10, 16))
    assert_close(ours, ref, atol=1e-6)


def test_packed_causal_mask_matches_transformers_packing():
    """Packed sequences (found from position_ids restarting at 0) = block-diagonal AND causal."""
    config = LlamaConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1, vocab_size=10)
    config._attn_implementation = "eager"
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    hf = create_causal_mask(config, torch.zeros(1, 9, 8), None, None, position_ids=position_ids)
    ours = block_diagonal_mask(torch.tensor([0, 3, 5, 9])) & causal_mask(9)
    assert_close(bool_to_additive(ours)[None, None], hf, atol=0, rtol=0)


@FAST
@given(st.lists(st.integers(0, 4), min_size=1, max_size=5).filter(lambda ls: sum(ls) > 0))
def test_block_diagonal_property(lengths):
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    mask = block_diagonal_mask(cu)
    assert mask.shape == (sum(lengths), sum(lengths))
    assert int(mask.sum()) == sum(n * n for n in lengths)
    assert_close(mask, mask.T, atol=0, rtol=0)
    assert mask.diagonal().all()


def test_block_diagonal_bad_inputs():
    with pytest.raises(ValueError, match="integer"):
        block_diagonal_mask(torch.tensor([0.0, 3.0]))
    with pytest.raises(ValueError, match="1 dimensions"):
        block_diagonal_mask(torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="start with 0"):
        block_diagonal_mask(torch.tensor([1, 3]))
    with pytest.raises(ValueError, match="start with 0"):
        block_diagonal_mask(torch.tensor([0]))
    with pytest.raises(ValueError, match="non-decreasing"):
        block_diagonal_mask(torch.tensor([0, 3, 2]))
    with pytest.raises(ValueError, match="no tokens"):
        block_diagonal_mask(torch.tensor([0, 0]))


def test_with_padding_matches_transformers():
    pad = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # left, none, right padding
    hf = sdpa_mask(3, 5, 5, attention_mask=pad.bool(), allow_is_causal_skip=False)
    assert_close(with_padding(causal_mask(5), pad), hf, atol=0, rtol=0)
    assert_close(with_padding(causal_mask(5), pad.bool()), hf, atol=0, rtol=0)
    assert_close(with_padding(causal_mask(5)[None, None].expand(3, 1, 5, 5), pad), hf, atol=0, rtol=0)
    hf_sw = sdpa_mask(
        3,
        5,
        5,
        attention_mask=pad.bool(),
        mask_function=sliding_window_causal_mask_function(2),
        allow_is_causal_skip=False,
    )
    assert_close(with_padding(sliding_window_mask(5, window=2), pad), hf_sw, atol=0, rtol=0)


def test_with_padding_bad_inputs():
    pad = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="bool"):
        with_padding(torch.zeros(5, 5), pad)
    with pytest.raises(ValueError, match="0/1"):
        with_padding(causal_mask(5), pad.float())
    with pytest.raises(ValueError, match="0 \\(padding\\) or 1"):
        with_padding(causal_mask(5), pad * 2)
    with pytest.raises(ValueError, match="2 dimensions"):
        with_padding(causal_mask(5), pad[0])
    with pytest.raises(ValueError, match="match padding_mask"):
        with_padding(causal_mask(5, 6), pad)
    with pytest.raises(ValueError, match="match padding_mask"):
        with_padding(causal_mask(5)[None, None].expand(3, 1, 5, 5), pad)
    with pytest.raises(ValueError, match="match padding_mask"):
        with_padding(causal_mask(5)[None, None].expand(2, 2, 5, 5), pad)
    with pytest.raises(ValueError, match="2 or 4 dimensions"):
        with_padding(causal_mask(5)[None], pad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_bool_additive_round_trip(dtype):
    mask = sliding_window_mask(4, 6, window=2)
    add = bool_to_additive(mask, dtype)
    assert add.dtype == dtype
    hf = eager_mask(1, 4, 6, q_offset=2, mask_function=sliding_window_causal_mask_function(2), dtype=dtype)
    assert_close(add, hf[0, 0], atol=0, rtol=0)
    assert_close(additive_to_bool(add), mask, atol=0, rtol=0)
    inf_mask = torch.zeros(4, 6, dtype=dtype).masked_fill(~mask, float("-inf"))
    assert_close(additive_to_bool(inf_mask), mask, atol=0, rtol=0)


def test_additive_to_bool_keeps_finite_biases_as_attend():
    bias = torch.tensor([[0.0, -3.0, float("-inf"), torch.finfo(torch.float32).min]])
    assert additive_to_bool(bias).tolist() == [[True, True, False, False]]


def test_bool_additive_bad_inputs():
    with pytest.raises(ValueError, match="bool"):
        bool_to_additive(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="dtype"):
        bool_to_additive(causal_mask(2), torch.int64)
    with pytest.raises(ValueError, match="dtype"):
        bool_to_additive(causal_mask(2), "float32")
    with pytest.raises(ValueError, match="floating-point"):
        additive_to_bool(causal_mask(2))
    with pytest.raises(ValueError, match="torch.Tensor"):
        additive_to_bool([[0.0]])


# ---------------------------------------------------------------- Attention module vs LlamaAttention


def _llama_pair(kv_heads, bias):
    config = LlamaConfig(
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        head_dim=8,
        attention_bias=bias,
        num_hidden_layers=1,
        vocab_size=10,
        max_position_embeddings=64,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    ref = LlamaAttention(config, layer_idx=0).eval()
    if bias:  # biases start at zero-ish; make them matter
        for lin in (ref.q_proj, ref.k_proj, ref.v_proj, ref.o_proj):
            torch.nn.init.normal_(lin.bias)
    ours = Attention(32, 4, kv_heads, 8, qkv_bias=bias, out_bias=bias)
    ours.load_state_dict(ref.state_dict())
    return config, ref, ours.eval()


@pytest.mark.parametrize("kv_heads", [4, 2, 1])  # MHA, GQA, MQA
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_llama_attention(kv_heads, bias, masked):
    config, ref, ours = _llama_pair(kv_heads, bias)
    x = torch.randn(2, 6, 32)
    position_ids = torch.arange(6)[None].expand(2, 6)
    cos, sin = LlamaRotaryEmbedding(config)(x, position_ids)  # (batch, seq, head_dim)
    bool_mask = None
    if masked:
        bool_mask = with_padding(causal_mask(6), torch.tensor([[1] * 6, [0, 1, 1, 1, 1, 1]]))
    add_mask = None if bool_mask is None else bool_to_additive(bool_mask)
    with torch.no_grad():
        ref_out, ref_w = ref(x, position_embeddings=(cos, sin), attention_mask=add_mask)
        out, w = ours(x, add_mask, cos=cos, sin=sin, return_weights=True)
        out_b = ours(x, bool_mask, cos=cos, sin=sin)
        out_2d = ours(x, add_mask, cos=cos[0], sin=sin[0])  # (seq, head_dim) tables work too
    assert_close(out, ref_out, atol=1e-6, name="output")
    assert_close(w, ref_w, atol=1e-6, name="weights")
    # bool mask: identical except the fully masked row (left-padded query 0 of batch 1), which is
    # 0 before o_proj here and the uniform average in transformers' finfo.min convention
    assert_close(out_b[0], ref_out[0], atol=1e-6, name="bool-mask output")
    assert_close(out_b[1, 1:], ref_out[1, 1:], atol=1e-6, name="bool-mask output")
    assert_close(out_2d, ref_out, atol=1e-6, name="2D cos/sin output")


def test_attention_without_rope_is_permutation_equivariant():
    torch.manual_seed(0)
    attn = Attention(16, 4, 2).eval()
    x = torch.randn(1, 5, 16)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        assert_close(attn(x)[:, perm], attn(x[:, perm]), atol=1e-6)


def test_attention_shapes_and_defaults():
    attn = Attention(24, 3)
    assert (attn.n_kv_heads, attn.head_dim) == (3, 8)
    assert attn.q_proj.bias is None and attn.o_proj.bias is None
    out, w = attn(torch.randn(2, 4, 24), causal_mask(4), return_weights=True)
    assert out.shape == (2, 4, 24) and w.shape == (2, 3, 4, 4)
    mqa = Attention(24, 4, 1, head_dim=5, qkv_bias=True)
    assert mqa.k_proj.weight.shape == (5, 24) and mqa.q_proj.bias is not None and mqa.o_proj.bias is None


def test_attention_bad_inputs():
    for args, match in [
        ((0, 4), "hidden"),
        ((32, 0), "n_heads"),
        ((32, 4, 3), "multiple"),
        ((32, 4, 0), "n_kv_heads"),
        ((30, 4), "divisible"),
        ((32, 4, 2, 0), "head_dim"),
        ((32.0, 4), "hidden"),
    ]:
        with pytest.raises(ValueError, match=match):
            Attention(*args)
    attn = Attention(16, 2)
    with pytest.raises(ValueError, match="3 dimensions"):
        attn(torch.randn(5, 16))
    with pytest.raises(ValueError, match="hidden=16"):
        attn(torch.randn(1, 5, 8))
    with pytest.raises(ValueError, match="both cos and sin"):
        attn(torch.randn(1, 5, 16), cos=torch.ones(5, 8))
    with pytest.raises(ValueError, match="cos"):
        attn(torch.randn(1, 5, 16), cos=torch.ones(8), sin=torch.ones(8))
    with pytest.raises(ValueError, match="cos/sin"):
        attn(torch.randn(1, 5, 16), cos=torch.ones(5, 4), sin=torch.ones(5, 4))
    with pytest.raises(ValueError, match="broadcast"):
        attn(torch.randn(1, 5, 16), causal_mask(4))
