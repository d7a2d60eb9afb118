"""Tests for shared.vision: smart_resize against transformers' Qwen2-VL image processor."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from shared.vision import smart_resize

# Real photo sizes (grace_hopper.jpg is 600 x 512), phone and camera formats, tiny and extreme shapes.
SIZES = [
    (600, 512),
    (224, 224),
    (480, 640),
    (1080, 1920),
    (3024, 4032),
    (4000, 6000),
    (28, 28),
    (10, 10),
    (14, 300),
    (1, 200),
    (42, 42),  # 42 / 28 = 1.5: a tie that round() sends to the even multiple
    (70, 70),  # 70 / 28 = 2.5: the other tie
    (2000, 10),
]


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_matches_transformers_defaults(height: int, width: int) -> None:
    assert smart_resize(height, width) == hf_smart_resize(height, width)


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_matches_transformers_paper_ablation_limits(height: int, width: int) -> None:
    # Qwen2-VL §3.3.1: min_pixels = 100 * 28 * 28, max_pixels = 16384 * 28 * 28.
    kw = {"factor": 28, "min_pixels": 100 * 28 * 28, "max_pixels": 16384 * 28 * 28}
    assert smart_resize(height, width, **kw) == hf_smart_resize(height, width, **kw)


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(1, 5000),
    width=st.integers(1, 5000),
    factor=st.sampled_from([14, 28, 32]),
    min_tokens=st.integers(1, 64),
    extra_tokens=st.integers(0, 2000),
)
def test_matches_transformers_property(
    height: int, width: int, factor: int, min_tokens: int, extra_tokens: int
):
    if max(height, width) / min(height, width) > 200:
        return
    min_pixels = min_tokens * factor * factor
    max_pixels = (min_tokens + extra_tokens) * factor * factor
    h, w = smart_resize(height, width, factor, min_pixels, max_pixels)
    assert (h, w) == hf_smart_resize(height, width, factor, min_pixels, max_pixels)
    assert h % factor == 0 and w % factor == 0 and h >= factor and w >= factor


def test_paper_224_image_gives_66_tokens() -> None:
    # Qwen2-VL §2.1: a 224 x 224 image becomes 66 tokens: (224/28)^2 = 64 merged tokens + vision_start/end.
    h, w = smart_resize(224, 224)
    assert (h, w) == (224, 224)
    assert (h // 28) * (w // 28) + 2 == 66


def test_limits_respected() -> None:
    h, w = smart_resize(3024, 4032)
    assert h * w <= 28 * 28 * 1280
    h, w = smart_resize(10, 10)
    assert h * w >= 56 * 56


@pytest.mark.parametrize(
    "kwargs",
    [
        {"height": 0, "width": 10},
        {"height": 10, "width": -1},
        {"height": 10.0, "width": 10},
        {"height": True, "width": 10},
        {"height": 10, "width": 10, "factor": 0},
        {"height": 10, "width": 10, "min_pixels": 0},
        {"height": 10, "width": 10, "min_pixels": 5000, "max_pixels": 4000},
        {"height": 10, "width": 10, "max_pixels": 100},
        {"height": 1, "width": 201},
    ],
)
def test_bad_inputs(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        smart_resize(**kwargs)


def test_transformers_also_refuses_extreme_aspect_ratio() -> None:
    with pytest.raises(ValueError):
        hf_smart_resize(1, 201)
