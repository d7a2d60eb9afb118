"""Tests for shared.mrope against transformers 5.23 (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) built from tiny configs.

Where transformers 5.23 departs from the paper's rule (Qwen2-VL, arXiv 2409.12191, §2.1: each modality's
numbering starts at the largest preceding id + 1), the tests pin our hand-derived value and transformers'
value side by side, so that a change in transformers is noticed.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import Qwen2_5_VLConfig, Qwen2VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig, Qwen2VLVisionConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    Qwen2VisionTransformerPretrainedModel,
    Qwen2VLModel,
    Qwen2VLRotaryEmbedding,
    apply_rotary_pos_emb,
    apply_rotary_pos_emb_vision,
)
from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLTextConfig
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding
from transformers.vision_utils import get_vision_position_ids

from shared.mrope import (
    IMAGE,
    TEXT,
    VIDEO,
    mm_token_types,
    mrope_axis_of_frequency,
    mrope_cos_sin,
    mrope_position_ids,
    vision_position_ids,
    vision_rope_cos_sin,
)
from shared.rope import apply_rope, rope_cos_sin, rope_inv_freq
from shared.utils import assert_close

T, I, V = TEXT, IMAGE, VIDEO
TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 64,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
}


@pytest.fixture(scope="module")
def qwen2_vl() -> Qwen2VLModel:
    vision = {"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2}
    return Qwen2VLModel(Qwen2VLConfig(vision_config=vision, text_config=TINY_TEXT)).eval()


@pytest.fixture(scope="module")
def qwen2_5_vl() -> Qwen2_5_VLModel:
    vision = {
        "depth": 1,
        "hidden_size": 16,
        "out_hidden_size": 32,
        "num_heads": 2,
        "intermediate_size": 32,
        "fullatt_block_indexes": [0],
        "tokens_per_second": 2,  # the released Qwen2.5-VL value
    }
    return Qwen2_5_VLModel(Qwen2_5_VLConfig(vision_config=vision, text_config=TINY_TEXT)).eval()


def batch(*seqs: tuple[list[int], str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token types and attention mask for sequences padded 'left' or 'right' to the longest."""
    length = max(len(s) for s, _ in seqs)
    types = torch.zeros(len(seqs), length, dtype=torch.long)
    mask = torch.zeros(len(seqs), length, dtype=torch.long)
    for b, (s, side) in enumerate(seqs):
        span = slice(0, len(s)) if side == "right" else slice(length - len(s), length)
        types[b, span] = torch.tensor(s)
        mask[b, span] = 1
    return types, mask


def hf_index(model, types, mask=None, **kw):
    return model.get_rope_index(torch.zeros_like(types), types, attention_mask=mask, **kw)


# ---------------------------------------------------------------------------------------------------------
# Position ids: agreement with transformers where it follows the paper's rule
# ---------------------------------------------------------------------------------------------------------


def test_batch_with_images_videos_and_padding_matches_qwen2_vl(qwen2_vl) -> None:
    # Sequence 0 (right padding): text, image 1x4x6, text, video 2x4x4, text.
    # Sequence 1 (left padding): text, image 1x4x4, text, image 1x6x4, text.
    # Sequence 2 (no padding): text, video 2x8x4, text, image 1x2x2, text (two videos per batch, 3 per seq).
    types, mask = batch(
        ([T] * 3 + [I] * 6 + [T] * 2 + [V] * 8 + [T], "right"),
        ([T] * 2 + [I] * 4 + [T] * 2 + [I] * 6 + [T] * 3, "left"),
        ([T] + [V] * 16 + [T] * 2 + [I] + [T], "left"),
    )
    images = torch.tensor([[1, 4, 6], [1, 4, 4], [1, 6, 4], [1, 2, 2]])
    videos = torch.tensor([[2, 4, 4], [2, 8, 4]])
    ours, deltas = mrope_position_ids(types, images, videos, mask)
    ref, ref_deltas = hf_index(qwen2_vl, types, mask, image_grid_thw=images, video_grid_thw=videos)
    assert_close(ours, ref, name="position_ids")
    assert_close(deltas, ref_deltas, name="rope_deltas")


def test_hand_derived_text_image_text(qwen2_vl) -> None:
    # Paper §2.1: 2 text tokens, a 1x4x6 patch grid (2x3 tokens after 2x2 merging), 2 text tokens.
    types = torch.tensor([[T, T] + [I] * 6 + [T, T]])
    ids, delta = mrope_position_ids(types, torch.tensor([[1, 4, 6]]))
    expected = torch.tensor(
        [
            [0, 1, 2, 2, 2, 2, 2, 2, 5, 6],  # temporal: constant over the image
            [0, 1, 2, 2, 2, 3, 3, 3, 5, 6],  # height: row of the merged token
            [0, 1, 2, 3, 4, 2, 3, 4, 5, 6],  # width: column; text resumes at max id (4) + 1
        ]
    )
    assert torch.equal(ids[:, 0], expected)
    assert delta.item() == 7 - 10
    assert torch.equal(hf_index(qwen2_vl, types, image_grid_thw=torch.tensor([[1, 4, 6]]))[0][:, 0], expected)


def test_adjacent_blocks_without_separator() -> None:
    # Two images with no text between them: blocks are cut by their grid sizes.
    types = torch.tensor([[T] + [I] * 4 + [I] * 1 + [T]])
    ids, _ = mrope_position_ids(types, torch.tensor([[1, 4, 4], [1, 2, 2]]))
    assert ids[:, 0].tolist() == [
        [0, 1, 1, 1, 1, 3, 4],
        [0, 1, 1, 2, 2, 3, 4],
        [0, 1, 2, 1, 2, 3, 4],
    ]


def test_mm_token_types() -> None:
    ids = torch.tensor([[5, 9, 9, 7, 8, 8, 5]])
    assert mm_token_types(ids, image_token_id=9, video_token_id=8).tolist() == [[T, I, I, T, V, V, T]]


def test_time_aligned_matches_qwen2_5_vl_when_no_overlap(qwen2_5_vl) -> None:
    # tokens_per_second = 2, 1 s per temporal patch: temporal ids 0, 2 of a 2x8x8 video (4x4 tokens): the
    # largest id is the spatial one, so transformers' text restart equals the paper's.
    types, mask = batch(
        ([T] * 2 + [V] * 32 + [T] * 3 + [I] * 4 + [T], "left"),
        ([T] + [V] * 16 + [T] * 2, "right"),
    )
    videos = torch.tensor([[2, 8, 8], [1, 8, 8]])
    images = torch.tensor([[1, 4, 4]])
    spg = torch.tensor([1.0, 0.5])
    ours, deltas = mrope_position_ids(
        types, images, videos, mask, tokens_per_second=2, second_per_grid_ts=spg
    )
    ref, ref_deltas = hf_index(
        qwen2_5_vl, types, mask, image_grid_thw=images, video_grid_thw=videos, second_per_grid_ts=spg
    )
    assert_close(ours, ref, name="position_ids")
    assert_close(deltas, ref_deltas, name="rope_deltas")


# ---------------------------------------------------------------------------------------------------------
# Where transformers 5.23 departs from the paper: pin both values
# ---------------------------------------------------------------------------------------------------------


def test_video_longer_than_wide_restarts_text_after_largest_id(qwen2_vl) -> None:
    # A video with 3 temporal patches on a 4x4 patch grid (2x2 tokens per frame) after 2 text tokens.
    # Paper §2.1: temporal ids 2, 3, 4 (one per frame), h, w in {2, 3}; the next text starts at max + 1 = 5.
    types = torch.tensor([[T, T] + [V] * 12 + [T, T]])
    videos = torch.tensor([[3, 4, 4]])
    ours, delta = mrope_position_ids(types, video_grid_thw=videos)
    assert ours[:, 0, :2].tolist() == [[0, 1]] * 3
    assert ours[0, 0, 2:14].tolist() == [2] * 4 + [3] * 4 + [4] * 4
    assert ours[:, 0, 14:].tolist() == [[5, 6]] * 3
    assert delta.item() == 7 - 16
    # transformers 5.23 advances by max(h, w) / merge = 2 only: the text after the video starts at 4, the
    # same id as the video's last frame (overlap), and the rope delta is one smaller.
    ref, ref_delta = hf_index(qwen2_vl, types, video_grid_thw=videos)
    assert ref[0, 0, 2:14].tolist() == ours[0, 0, 2:14].tolist()  # the video itself agrees
    assert ref[:, 0, 14:].tolist() == [[4, 5]] * 3
    assert ref_delta.item() == 6 - 16


def test_time_aligned_video_restarts_text_after_largest_id(qwen2_5_vl) -> None:
    # Qwen2.5-VL, tokens_per_second 2, 1 s per temporal patch: temporal ids 1 + {0, 2, 4} for a 3x4x4 video
    # after one text token. Largest id 5, so the next text is at 6 (paper); transformers 5.23 gives 1 + 2 = 3.
    types = torch.tensor([[T] + [V] * 12 + [T]])
    videos = torch.tensor([[3, 4, 4]])
    ours, _ = mrope_position_ids(types, video_grid_thw=videos, tokens_per_second=2, second_per_grid_ts=[1.0])
    ref, _ = hf_index(qwen2_5_vl, types, video_grid_thw=videos, second_per_grid_ts=torch.tensor([1.0]))
    assert ours[0, 0, 1:13].tolist() == ref[0, 0, 1:13].tolist() == [1] * 4 + [3] * 4 + [5] * 4
    assert ours[:, 0, 13].tolist() == [6, 6, 6]
    assert ref[:, 0, 13].tolist() == [3, 3, 3]


def test_fractional_second_per_grid_is_scaled_before_flooring(qwen2_5_vl) -> None:
    # Qwen2.5-VL §2.1.3: temporal ids follow absolute time. With 0.5 s per temporal patch (fps 4, temporal
    # patch 2) and tokens_per_second 25: ids floor(t * 0.5 * 25) = 0, 12, 25 (hand-derived). transformers 4.x
    # cast second_per_grid_t to int64 first (0.5 -> 0, all temporal ids 0); 5.23 scales first, as here.
    types = torch.tensor([[T] + [V] * 12 + [T]])
    videos = torch.tensor([[3, 4, 4]])
    ours, _ = mrope_position_ids(types, video_grid_thw=videos, tokens_per_second=25, second_per_grid_ts=[0.5])
    assert ours[0, 0, 1:13].tolist() == [1] * 4 + [13] * 4 + [26] * 4
    assert ours[:, 0, 13].tolist() == [27, 27, 27]
    qwen2_5_vl.config.vision_config.tokens_per_second = 25
    try:
        ref, _ = hf_index(qwen2_5_vl, types, video_grid_thw=videos, second_per_grid_ts=torch.tensor([0.5]))
    finally:
        qwen2_5_vl.config.vision_config.tokens_per_second = 2
    assert ref[0, 0, 1:13].tolist() == ours[0, 0, 1:13].tolist()  # 5.23 agrees on the video's ids
    assert ref[:, 0, 13].tolist() == [3, 3, 3]  # but restarts text at 1 + max(h, w) / 2 (overlap)


# ---------------------------------------------------------------------------------------------------------
# cos / sin tables
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("section", "head_dim"), [([2, 3, 3], 16), ([16, 24, 24], 128)])
def test_sectioned_cos_sin_matches_qwen2_vl_rotary(section: list[int], head_dim: int) -> None:
    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": section}
    cfg = Qwen2VLTextConfig(**{**TINY_TEXT, "hidden_size": 2 * head_dim, "rope_parameters": rope})
    rotary = Qwen2VLRotaryEmbedding(cfg)
    types = torch.tensor([[T] * 3 + [I] * 6 + [T] * 2 + [V] * 8 + [T]])
    ids, _ = mrope_position_ids(types, torch.tensor([[1, 4, 6]]), torch.tensor([[2, 4, 4]]))
    x = torch.zeros(1, ids.shape[-1], head_dim)
    ref_cos, ref_sin = rotary(x, ids)
    cos, sin = mrope_cos_sin(ids, rope_inv_freq(head_dim, 1e6), section)
    assert_close(cos, ref_cos, atol=0, rtol=0, name="cos")
    assert_close(sin, ref_sin, atol=0, rtol=0, name="sin")
    # Rotating q and k with our tables equals the Qwen2-VL attention's apply_rotary_pos_emb.
    q, k = torch.randn(2, 1, 2, ids.shape[-1], head_dim, generator=torch.Generator().manual_seed(0))
    ref_q, ref_k = apply_rotary_pos_emb(q, k, ref_cos, ref_sin)
    assert_close(apply_rope(q, cos[:, None], sin[:, None]), ref_q, atol=1e-6, name="q")
    assert_close(apply_rope(k, cos[:, None], sin[:, None]), ref_k, atol=1e-6, name="k")


@pytest.mark.parametrize(("section", "head_dim"), [([3, 3, 2], 16), ([24, 20, 20], 128)])
def test_interleaved_cos_sin_matches_qwen3_vl_rotary(section: list[int], head_dim: int) -> None:
    cfg = Qwen3VLTextConfig(
        hidden_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=head_dim,
        num_hidden_layers=1,
        intermediate_size=64,
        vocab_size=64,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": section,
            "mrope_interleaved": True,
        },
    )
    rotary = Qwen3VLTextRotaryEmbedding(cfg)
    ids = torch.randint(0, 50, (3, 2, 9), generator=torch.Generator().manual_seed(1))
    ref_cos, ref_sin = rotary(torch.zeros(2, 9, head_dim), ids)
    cos, sin = mrope_cos_sin(ids, rope_inv_freq(head_dim, 5e6), section, layout="interleaved")
    assert_close(cos, ref_cos, atol=0, rtol=0, name="cos")
    assert_close(sin, ref_sin, atol=0, rtol=0, name="sin")


def test_axis_of_frequency_layouts() -> None:
    assert mrope_axis_of_frequency([2, 3, 3]).tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert mrope_axis_of_frequency([3, 3, 2], "interleaved").tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    counts = torch.bincount(mrope_axis_of_frequency([24, 20, 20], "interleaved"), minlength=3)
    assert counts.tolist() == [24, 20, 20]


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    section_layout=st.sampled_from(
        [
            ([2, 3, 3], "sectioned"),
            ([16, 24, 24], "sectioned"),
            ([3, 3, 2], "interleaved"),
            ([24, 20, 20], "interleaved"),
            ([4, 2, 2], "interleaved"),
        ]
    ),
    pad_left=st.booleans(),
)
def test_pure_text_reduces_to_1d_rope(lengths: list[int], section_layout: tuple, pad_left: bool) -> None:
    # Paper §2.1: on text the three ids are equal, so M-RoPE is 1D RoPE (rope delta 0).
    section, layout = section_layout
    types, mask = batch(*[([T] * n, "left" if pad_left else "right") for n in lengths])
    ids, deltas = mrope_position_ids(types, attention_mask=mask)
    plain = (mask.cumsum(-1) - 1).clamp(min=0) * mask  # (batch, seq): 0, 1, 2, ... over real tokens
    assert torch.equal(ids, plain.expand(3, -1, -1))
    assert not deltas.any()
    inv_freq = rope_inv_freq(2 * sum(section))
    cos, sin = mrope_cos_sin(ids, inv_freq, section, layout=layout)
    cos1, sin1 = rope_cos_sin(plain, inv_freq)
    assert_close(cos, cos1, atol=0, rtol=0, name="cos")
    assert_close(sin, sin1, atol=0, rtol=0, name="sin")


# ---------------------------------------------------------------------------------------------------------
# Vision tower 2D RoPE
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("merge", [1, 2])
def test_vision_position_ids_match_transformers(merge: int) -> None:
    grid = torch.tensor([[1, 4, 6], [2, 2, 4], [1, 6, 2]])
    assert torch.equal(vision_position_ids(grid, merge), get_vision_position_ids(grid, merge))


def test_vision_rope_matches_qwen2_vl_vision_tower() -> None:
    cfg = Qwen2VLVisionConfig(depth=1, embed_dim=32, hidden_size=16, num_heads=2, mlp_ratio=2)
    tower = Qwen2VisionTransformerPretrainedModel(cfg).eval()
    grid = torch.tensor([[1, 4, 6], [2, 2, 2]])
    pos = vision_position_ids(grid, cfg.spatial_merge_size)
    n, head_dim = pos.shape[0], cfg.embed_dim // cfg.num_heads
    ref_cos, ref_sin = tower.rotary_pos_emb(torch.zeros(n, cfg.embed_dim), get_vision_position_ids(grid, 2))
    cos, sin = vision_rope_cos_sin(pos, head_dim)
    assert_close(cos, ref_cos, atol=0, rtol=0, name="cos")
    assert_close(sin, ref_sin, atol=0, rtol=0, name="sin")
    q, k = torch.randn(2, n, cfg.num_heads, head_dim, generator=torch.Generator().manual_seed(2))
    ref_q, _ = apply_rotary_pos_emb_vision(q, k, ref_cos, ref_sin)
    assert_close(apply_rope(q, cos[:, None], sin[:, None]), ref_q, atol=1e-6, name="q")


def test_vision_rope_is_relative_in_2d() -> None:
    # 2D RoPE: the score between a query at (h1, w1) and a key at (h2, w2) depends only on the offsets.
    pos = torch.tensor([[0, 0], [1, 2], [3, 1], [4, 3]])
    cos, sin = vision_rope_cos_sin(pos, 16)
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)
    rq = apply_rope(q.expand(4, 16), cos, sin)
    rk = apply_rope(k.expand(4, 16), cos, sin)
    # (0,0)->(1,2) and (3,1)->(4,3) share the offset (1, 2).
    assert_close(rq[0] @ rk[1], rq[2] @ rk[3], atol=1e-5, name="score")


# ---------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------

GOOD_TYPES = torch.tensor([[T] + [I] * 4 + [T]])
GOOD_IMAGE = torch.tensor([[1, 4, 4]])


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((GOOD_TYPES,), {}),  # an image block but no grid
        ((GOOD_TYPES, torch.tensor([[1, 4, 4], [1, 2, 2]])), {}),  # more grids than blocks
        ((GOOD_TYPES, torch.tensor([[1, 4, 6]])), {}),  # grid says 6 tokens, block has 4
        ((GOOD_TYPES, torch.tensor([[1, 4, 3]])), {}),  # width not divisible by merge 2
        ((GOOD_TYPES, torch.tensor([[0, 4, 4]])), {}),  # non-positive grid
        ((GOOD_TYPES, torch.tensor([1, 4, 4])), {}),  # grid not (n, 3)
        ((GOOD_TYPES, torch.tensor([[1.0, 4.0, 4.0]])), {}),  # float grid
        ((GOOD_TYPES, GOOD_IMAGE, None, torch.ones(1, 5)), {}),  # mask shape
        ((GOOD_TYPES, GOOD_IMAGE, None, torch.full((1, 6), 2)), {}),  # mask values
        ((GOOD_TYPES, GOOD_IMAGE, None, torch.zeros(1, 6)), {}),  # fully masked sequence
        ((GOOD_TYPES[0], GOOD_IMAGE), {}),  # 1-D token types
        ((GOOD_TYPES + 5, GOOD_IMAGE), {}),  # unknown token type
        ((GOOD_TYPES.float(), GOOD_IMAGE), {}),  # float token types
        ((GOOD_TYPES, GOOD_IMAGE), {"spatial_merge_size": 0}),
        ((GOOD_TYPES, GOOD_IMAGE), {"second_per_grid_ts": [1.0]}),  # needs tokens_per_second
        ((GOOD_TYPES, GOOD_IMAGE), {"tokens_per_second": 0}),
        (
            (torch.tensor([[T] + [V] * 4]), None, GOOD_IMAGE),
            {"tokens_per_second": 2, "second_per_grid_ts": [1, 2]},
        ),
        (
            (torch.tensor([[T] + [V] * 4]), None, GOOD_IMAGE),
            {"tokens_per_second": 2, "second_per_grid_ts": [-1.0]},
        ),
        ((torch.tensor([[T] + [V] * 4]), GOOD_IMAGE), {}),  # video block given as image grid
    ],
)
def test_position_ids_bad_inputs(args: tuple, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        mrope_position_ids(*args, **kwargs)


@pytest.mark.parametrize(
    ("ids", "inv_freq", "section", "layout"),
    [
        (torch.zeros(3, 1, 4), rope_inv_freq(16), [2, 3, 2], "sectioned"),  # sums to 7, head_dim/2 is 8
        (torch.zeros(3, 1, 4), rope_inv_freq(16), [2, 3, 3, 0], "sectioned"),  # 4 sections
        (torch.zeros(3, 1, 4), rope_inv_freq(16), [2, -1, 7], "sectioned"),  # negative
        (torch.zeros(3, 1, 4), rope_inv_freq(16), (2.0, 3, 3), "sectioned"),  # float
        (torch.zeros(3, 1, 4), rope_inv_freq(16), [2, 3, 3], "interleaved"),  # W needs slots 2, 5, 8 of 0..7
        (torch.zeros(3, 1, 4), rope_inv_freq(16), [2, 3, 3], "chunked"),  # unknown layout
        (torch.zeros(2, 1, 4), rope_inv_freq(16), [2, 3, 3], "sectioned"),  # 2 rows of ids
        (torch.zeros(3, 1, 4), rope_inv_freq(16).double()[None], [2, 3, 3], "sectioned"),  # 2-D inv_freq
    ],
)
def test_cos_sin_bad_inputs(ids, inv_freq, section, layout) -> None:
    with pytest.raises(ValueError):
        mrope_cos_sin(ids, inv_freq, section, layout=layout)


def test_vision_bad_inputs() -> None:
    pos = torch.zeros(4, 2, dtype=torch.long)
    for head_dim in (15, 18, 0, 16.0):
        with pytest.raises(ValueError):
            vision_rope_cos_sin(pos, head_dim)  # head_dim must be a positive multiple of 4
    with pytest.raises(ValueError):
        vision_rope_cos_sin(torch.zeros(4, 3, dtype=torch.long), 16)
    with pytest.raises(ValueError):
        vision_position_ids(torch.tensor([[1, 3, 4]]), 2)  # 3 rows of patches cannot merge 2x2
    with pytest.raises(ValueError):
        vision_position_ids(torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        mm_token_types(torch.zeros(1, 3, dtype=torch.long), 5, 5)
