"""Tests for shared.rope against transformers 5.23 (LlamaRotaryEmbedding, apply_rotary_pos_emb, ROPE_INIT_FUNCTIONS)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from shared.rope import (
    ROPE_KINDS,
    apply_rope,
    dynamic_ntk_inv_freq,
    linear_inv_freq,
    ntk_inv_freq,
    rope_cos_sin,
    rope_init,
    rope_inv_freq,
    rotate_half,
    sinusoidal_encoding,
    yarn_attention_factor,
    yarn_inv_freq,
)
from shared.utils import assert_close

HEAD_DIMS = [4, 8, 16, 64, 128]
FACTORS = [1.0, 2.0, 2.5, 4.0, 16.0]
BASES = [10000.0, 500000.0]
L = 64  # the "trained" length of the tiny configs


def llama_config(head_dim: int, rope_parameters: dict, max_position_embeddings: int = L) -> LlamaConfig:
    """A tiny LlamaConfig: 2 heads of ``head_dim``, one layer, the given ``rope_parameters``."""
    return LlamaConfig(
        vocab_size=32,
        hidden_size=2 * head_dim,
        intermediate_size=4 * head_dim,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        rope_parameters=dict(rope_parameters),
    )


def assert_equal(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Bitwise equality, with assert_close's explanation when it fails."""
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    assert_close(actual, expected, atol=0.0, rtol=0.0, name=name)


# ----------------------------------------------------------------------------------------------------------
# Inverse frequencies against ROPE_INIT_FUNCTIONS
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_default_matches_llama(head_dim: int, base: float) -> None:
    config = llama_config(head_dim, {"rope_type": "default", "rope_theta": base})
    expected, expected_scale = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    inv_freq, scale = rope_init("default", head_dim, base)
    assert_equal(inv_freq, expected, "default inv_freq")
    assert_equal(rope_inv_freq(head_dim, base), expected, "rope_inv_freq")
    assert scale == expected_scale == 1.0


@pytest.mark.parametrize("factor", FACTORS)
def test_linear_matches_transformers(factor: float) -> None:
    for head_dim in HEAD_DIMS:
        for base in BASES:
            config = llama_config(head_dim, {"rope_type": "linear", "rope_theta": base, "factor": factor})
            expected, expected_scale = ROPE_INIT_FUNCTIONS["linear"](config, None)
            inv_freq, scale = rope_init("linear", head_dim, base, factor=factor)
            assert_equal(inv_freq, expected, f"linear inv_freq (d={head_dim}, base={base})")
            assert_equal(linear_inv_freq(head_dim, base, factor=factor), expected, "linear_inv_freq")
            assert scale == expected_scale


@pytest.mark.parametrize("factor", FACTORS)
def test_dynamic_matches_transformers(factor: float) -> None:
    for head_dim in (4, 16, 128):
        config = llama_config(head_dim, {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": factor})
        for seq_len in (None, L // 2, L, 3 * L + 5, 10 * L):
            expected, expected_scale = ROPE_INIT_FUNCTIONS["dynamic"](config, None, seq_len=seq_len)
            inv_freq, scale = rope_init(
                "dynamic",
                head_dim,
                10000.0,
                factor=factor,
                original_max_position_embeddings=L,
                seq_len=seq_len,
            )
            assert_equal(inv_freq, expected, f"dynamic inv_freq (d={head_dim}, seq_len={seq_len})")
            assert scale == expected_scale == 1.0
            if seq_len is None or seq_len <= L:  # no growth up to the trained length: default frequencies
                assert_equal(inv_freq, rope_inv_freq(head_dim), "dynamic within L")


@pytest.mark.parametrize("factor", [1.5, 2.0, 2.5, 4.0, 8.0])
@pytest.mark.parametrize("head_dim", [4, 16, 64])
def test_ntk_is_dynamic_at_a_fixed_length(head_dim: int, factor: float) -> None:
    """Static NTK-aware (base * s^(d/(d-2))) equals "dynamic" with factor 1 evaluated at s * L tokens."""
    config = llama_config(head_dim, {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 1.0})
    expected, _ = ROPE_INIT_FUNCTIONS["dynamic"](config, None, seq_len=int(factor * L))
    assert_equal(ntk_inv_freq(head_dim, factor=factor), expected, "ntk vs dynamic")
    inv_freq, scale = rope_init("ntk", head_dim, factor=factor)
    assert_equal(inv_freq, expected, "rope_init ntk")
    assert scale == 1.0
    # The highest frequency is kept, the lowest is divided by exactly s.
    default = rope_inv_freq(head_dim)
    assert inv_freq[0] == default[0] == 1.0
    assert_close(inv_freq[-1], default[-1] / factor, rtol=1e-5, atol=0.0, name="lowest NTK frequency")


YARN_OPTIONS = [
    {},
    {"beta_fast": 16.0, "beta_slow": 2.0},
    {"beta_fast": 4.0, "beta_slow": 4.0},
    {"truncate": False},
    {"truncate": False, "beta_fast": 64.0, "beta_slow": 0.5},
    {"mscale": 0.707, "mscale_all_dim": 1.0},
    {"mscale": 1.0, "mscale_all_dim": 1.0},
    {"mscale": 1.0},  # mscale alone is ignored by the reference
    {"attention_factor": 1.25},
]


@pytest.mark.parametrize("options", YARN_OPTIONS)
def test_yarn_matches_transformers(options: dict) -> None:
    yarn_only = {k: v for k, v in options.items() if k in ("beta_fast", "beta_slow", "truncate")}
    for head_dim in HEAD_DIMS:
        for factor in FACTORS:
            for base in BASES:
                params = {"rope_type": "yarn", "rope_theta": base, "factor": factor}
                params |= {"original_max_position_embeddings": L} | options
                config = llama_config(head_dim, params, max_position_embeddings=int(factor * L))
                expected, expected_scale = ROPE_INIT_FUNCTIONS["yarn"](config, None)
                inv_freq, scale = rope_init(
                    "yarn", head_dim, base, factor=factor, original_max_position_embeddings=L, **options
                )
                where = f"(d={head_dim}, s={factor}, base={base})"
                assert_equal(inv_freq, expected, f"yarn inv_freq {where}")
                assert scale == expected_scale, where
                inv_freq_only = yarn_inv_freq(
                    head_dim, base, factor=factor, original_max_position_embeddings=L, **yarn_only
                )
                assert_equal(inv_freq_only, expected, f"yarn_inv_freq {where}")


def test_yarn_attention_factor_is_the_paper_formula() -> None:
    """YaRN §3.4: sqrt(1/t) = 0.1 ln(s) + 1, and 1 when nothing is stretched."""
    for s in (1.0, 2.0, 4.0, 16.0, 32.0):
        assert yarn_attention_factor(s) == pytest.approx(0.1 * math.log(s) + 1)
    assert yarn_attention_factor(40.0, mscale=1.0, mscale_all_dim=1.0) == 1.0  # DeepSeek-V3's setting


def test_yarn_keeps_fast_pairs_and_interpolates_slow_pairs() -> None:
    head_dim, factor = 128, 8.0
    default = rope_inv_freq(head_dim)
    yarn = yarn_inv_freq(head_dim, factor=factor, original_max_position_embeddings=4096)
    turns = 4096 * default / (2 * math.pi)  # r(d) = L / lambda_d, turns over the trained length
    assert torch.equal(yarn[turns > 32], default[turns > 32])
    assert_close(yarn[turns < 1], default[turns < 1] / factor, rtol=1e-6, atol=0.0, name="slow pairs")


# ----------------------------------------------------------------------------------------------------------
# cos/sin and the rotation against LlamaRotaryEmbedding and apply_rotary_pos_emb
# ----------------------------------------------------------------------------------------------------------

KIND_PARAMS = {
    "default": {"rope_type": "default"},
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 4.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": L},
}


@pytest.mark.parametrize("kind", list(KIND_PARAMS))
@pytest.mark.parametrize("head_dim", [8, 64])
def test_cos_sin_match_llama_rotary_embedding(kind: str, head_dim: int) -> None:
    params = {"rope_theta": 10000.0} | KIND_PARAMS[kind]
    max_pos = 4 * L if kind == "yarn" else L
    module = LlamaRotaryEmbedding(llama_config(head_dim, params, max_position_embeddings=max_pos))
    seq = 3 * L + 7  # past the trained length: "dynamic" recomputes its frequencies here
    position_ids = torch.arange(seq)[None].repeat(2, 1) + torch.tensor([[0], [5]])  # (2, seq)
    x = torch.zeros(2, seq, head_dim)
    cos_ref, sin_ref = module(x, position_ids)  # (2, seq, head_dim)
    inv_freq, scale = rope_init(
        kind, head_dim, factor=4.0, original_max_position_embeddings=L, seq_len=int(position_ids.max()) + 1
    )
    cos, sin = rope_cos_sin(position_ids, inv_freq, scale=scale)
    # "dynamic" recomputes its base from a tensor seq_len in float32 (we use Python floats): a last-bit
    # difference in the base; every other kind is bitwise equal.
    tol = {"atol": 2e-5, "rtol": 0.0} if kind == "dynamic" else {"atol": 0.0, "rtol": 0.0}
    assert_close(cos, cos_ref, name=f"{kind} cos", **tol)
    assert_close(sin, sin_ref, name=f"{kind} sin", **tol)


@pytest.mark.parametrize("head_dim", [4, 32])
def test_apply_rope_matches_apply_rotary_pos_emb(head_dim: int) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 11, head_dim, generator=g)  # (batch, heads, seq, head_dim)
    k = torch.randn(2, 3, 11, head_dim, generator=g)
    module = LlamaRotaryEmbedding(llama_config(head_dim, {"rope_type": "default", "rope_theta": 10000.0}))
    position_ids = torch.arange(11)[None].repeat(2, 1) + torch.tensor([[0], [40]])
    cos, sin = module(q, position_ids)  # (batch, seq, head_dim)
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    assert_equal(apply_rope(q, cos[:, None], sin[:, None]), q_ref, "q")
    assert_equal(apply_rope(k, cos[:, None], sin[:, None]), k_ref, "k")
    # rotate_half is transformers' rotate_half
    from transformers.models.llama.modeling_llama import rotate_half as rotate_half_ref

    assert_equal(rotate_half(q), rotate_half_ref(q), "rotate_half")


def test_apply_rope_keeps_low_precision_dtype() -> None:
    x = torch.randn(5, 8).to(torch.bfloat16)
    cos, sin = rope_cos_sin(torch.arange(5), rope_inv_freq(8))
    out = apply_rope(x, cos, sin)
    assert out.dtype == torch.bfloat16
    ref = x * cos.to(torch.bfloat16) + rotate_half(x) * sin.to(torch.bfloat16)
    assert torch.equal(out, ref)


# ----------------------------------------------------------------------------------------------------------
# Layouts: interleaved is complex multiplication; rotate-half is the same map up to a permutation of dims
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head_dim", [2, 8, 64])
def test_interleaved_is_complex_multiplication(head_dim: int) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 17, head_dim, dtype=torch.float64, generator=g)  # (batch, seq, head_dim)
    positions = torch.arange(17) * 13
    inv_freq = rope_inv_freq(head_dim)
    angles = (positions.float()[:, None] * inv_freq).double()  # (seq, head_dim/2), the same float32 angles
    z = torch.view_as_complex(x.reshape(3, 17, head_dim // 2, 2).contiguous())  # (x_2i + i x_2i+1)
    expected = torch.view_as_real(z * torch.polar(torch.ones_like(angles), angles)).reshape(3, 17, head_dim)
    cos, sin = rope_cos_sin(positions, inv_freq, layout="interleaved")
    actual = apply_rope(x, cos, sin, layout="interleaved")
    # cos/sin are float32 tables (as in transformers), so agreement is to float32 rounding.
    assert_close(actual, expected, atol=1e-6, rtol=1e-6, name="interleaved vs complex")


@pytest.mark.parametrize("head_dim", [2, 8, 64])
def test_layouts_differ_by_a_permutation(head_dim: int) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 9, head_dim, generator=g)  # interleaved storage: pairs (2i, 2i+1)
    perm = torch.cat((torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)))  # to halves: (i, i + d/2)
    positions, inv_freq = torch.arange(9) + 100, rope_inv_freq(head_dim)
    out_interleaved = apply_rope(
        x, *rope_cos_sin(positions, inv_freq, layout="interleaved"), layout="interleaved"
    )
    out_half = apply_rope(x[..., perm], *rope_cos_sin(positions, inv_freq))
    assert_equal(out_half, out_interleaved[..., perm], "rotate_half(x[perm]) vs interleaved(x)[perm]")


# ----------------------------------------------------------------------------------------------------------
# Relative position: q.k after RoPE depends only on n - m
# ----------------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(ROPE_KINDS),
    head_dim=st.sampled_from([4, 8, 32]),
    m=st.integers(0, 1000),
    n=st.integers(0, 1000),
    shift=st.integers(0, 1000),
    seed=st.integers(0, 2**16),
)
def test_scores_depend_only_on_relative_position(
    kind: str, head_dim: int, m: int, n: int, shift: int, seed: int
):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, head_dim, dtype=torch.float64, generator=g)
    inv_freq, scale = rope_init(
        kind, head_dim, factor=4.0, original_max_position_embeddings=256, seq_len=2048
    )

    def score(pos_q: int, pos_k: int) -> float:
        cos, sin = rope_cos_sin(torch.tensor([pos_q, pos_k]), inv_freq, scale=scale)  # (2, head_dim)
        rq, rk = apply_rope(torch.stack((q, k)), cos, sin)
        return float(rq @ rk)

    # float32 angles: at positions <= 2000 each angle is off by < 2e-4 rad, so allow 1e-3 |q||k| s^2.
    tol = 1e-3 * float(q.norm() * k.norm()) * scale**2
    assert abs(score(m + shift, n + shift) - score(m, n)) <= tol
    assert abs(score(m, n) - score(0, n - m) if n >= m else score(m, n) - score(m - n, 0)) <= tol


def test_rotation_matrices_compose_to_relative_rotation() -> None:
    """R_m^T R_n = R_(n-m) for the block-diagonal matrix of RoFormer §3.2.2, in float64."""
    head_dim, m, n = 6, 7, 19
    inv_freq = rope_inv_freq(head_dim).double()

    def rotation(pos: int) -> torch.Tensor:
        blocks = [
            torch.tensor([[math.cos(pos * t), -math.sin(pos * t)], [math.sin(pos * t), math.cos(pos * t)]])
            for t in inv_freq.tolist()
        ]
        return torch.block_diag(*blocks).double()

    assert_close(rotation(m).T @ rotation(n), rotation(n - m), atol=1e-12, name="R_m^T R_n")


# ----------------------------------------------------------------------------------------------------------
# Sinusoidal encoding
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_positions", "dim"), [(1, 2), (50, 16), (128, 64)])
def test_sinusoidal_matches_a_hand_loop(num_positions: int, dim: int) -> None:
    expected = torch.zeros(num_positions, dim, dtype=torch.float64)
    for pos in range(num_positions):
        for i in range(dim // 2):
            angle = pos / 10000.0 ** (2 * i / dim)
            expected[pos, 2 * i] = math.sin(angle)
            expected[pos, 2 * i + 1] = math.cos(angle)
    actual = sinusoidal_encoding(num_positions, dim)
    assert actual.shape == (num_positions, dim) and actual.dtype == torch.float32
    assert_close(actual.double(), expected, atol=2e-5, rtol=0.0, name="sinusoidal vs loop")
    reference = torch.empty(num_positions, dim)
    create_sinusoidal_embeddings(num_positions, dim, reference)  # DistilBERT's table
    assert_close(actual, reference, atol=2e-5, rtol=0.0, name="sinusoidal vs DistilBERT")


# ----------------------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head_dim", [0, 3, -4, 7.0, True, "8"])
def test_bad_head_dim(head_dim: object) -> None:
    with pytest.raises(ValueError, match="even int"):
        rope_inv_freq(head_dim)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="even int"):
        rope_init("yarn", head_dim, factor=2.0, original_max_position_embeddings=16)  # type: ignore[arg-type]


@pytest.mark.parametrize("factor", [0.5, 0.0, -2.0, float("nan"), float("inf"), None, True])
@pytest.mark.parametrize("kind", ["linear", "ntk", "dynamic", "yarn"])
def test_bad_factor(kind: str, factor: object) -> None:
    with pytest.raises(ValueError, match="factor"):
        rope_init(kind, 8, factor=factor, original_max_position_embeddings=16)  # type: ignore[arg-type]


@pytest.mark.parametrize("base", [1.0, 0.5, 0, -10000.0, float("nan"), "10000"])
def test_bad_base(base: object) -> None:
    with pytest.raises(ValueError, match="base"):
        rope_inv_freq(8, base)  # type: ignore[arg-type]


def test_bad_kind_and_missing_lengths() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        rope_init("longrope", 8)
    for kind in ("dynamic", "yarn"):
        with pytest.raises(ValueError, match="original_max_position_embeddings"):
            rope_init(kind, 8, factor=2.0)
        with pytest.raises(ValueError, match="original_max_position_embeddings"):
            rope_init(kind, 8, factor=2.0, original_max_position_embeddings=0)
    with pytest.raises(ValueError, match="seq_len"):
        dynamic_ntk_inv_freq(8, factor=2.0, original_max_position_embeddings=16, seq_len=-1)
    with pytest.raises(ValueError, match="even int >= 4"):
        ntk_inv_freq(2, factor=2.0)  # d / (d - 2) is undefined for one pair


def test_bad_yarn_options() -> None:
    with pytest.raises(ValueError, match="beta_fast >= beta_slow"):
        yarn_inv_freq(8, factor=2.0, original_max_position_embeddings=16, beta_fast=1.0, beta_slow=32.0)
    with pytest.raises(ValueError, match="beta_slow must be a finite number > 0"):
        yarn_inv_freq(8, factor=2.0, original_max_position_embeddings=16, beta_fast=32.0, beta_slow=0.0)
    with pytest.raises(ValueError, match="truncate"):
        yarn_inv_freq(8, factor=2.0, original_max_position_embeddings=16, truncate=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attention_factor"):
        rope_init("yarn", 8, factor=2.0, original_max_position_embeddings=16, attention_factor=-1.0)
    with pytest.raises(ValueError, match="mscale"):
        yarn_attention_factor(2.0, mscale="big")  # type: ignore[arg-type]


def test_bad_tensors_and_layouts() -> None:
    cos, sin = rope_cos_sin(torch.arange(4), rope_inv_freq(8))
    with pytest.raises(ValueError, match="layout"):
        rope_cos_sin(torch.arange(4), rope_inv_freq(8), layout="neox")
    with pytest.raises(ValueError, match="layout"):
        apply_rope(torch.randn(4, 8), cos, sin, layout="complex")
    with pytest.raises(ValueError, match="inv_freq"):
        rope_cos_sin(torch.arange(4), torch.arange(4))  # integer frequencies
    with pytest.raises(ValueError, match="scale"):
        rope_cos_sin(torch.arange(4), rope_inv_freq(8), scale=float("nan"))
    with pytest.raises(ValueError, match="floating-point"):
        apply_rope(torch.ones(4, 8, dtype=torch.int64), cos, sin)
    with pytest.raises(ValueError, match="head_dim"):
        apply_rope(torch.randn(4, 7), cos[:, :7], sin[:, :7])
    with pytest.raises(ValueError, match="last dim"):
        apply_rope(torch.randn(4, 6), cos, sin)
    with pytest.raises(ValueError, match="same shape"):
        apply_rope(torch.randn(4, 8), cos, sin[:2])
    with pytest.raises(ValueError, match="broadcast"):
        apply_rope(torch.randn(2, 3, 5, 8), cos, sin)  # seq 4 vs 5
    with pytest.raises(ValueError, match="num_positions"):
        sinusoidal_encoding(0, 8)
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_encoding(10, 7)
