"""Tests for shared.tiling against transformers (InternVL / GOT-OCR2 tiling, LLaVA-NeXT's best fit,
InternVLModel.pixel_shuffle) and torch.nn.functional.unfold (DeepSeek-VL2's token merge)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.image_processing_utils import select_best_resolution
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
    get_all_supported_aspect_ratios,
    get_optimal_tiled_canvas,
)
from transformers.models.internvl.modeling_internvl import InternVLModel

from shared.tiling import (
    best_fit_grid,
    closest_ratio_grid,
    pixel_shuffle,
    split_tiles,
    tile_grids,
    unfold_merge,
)

# Real photo sizes (height, width): grace_hopper.jpg, phone and camera formats, panoramas, tiny images.
SIZES = [
    (600, 512),
    (480, 640),
    (1080, 1920),
    (3024, 4032),
    (4032, 3024),
    (1000, 4000),
    (448, 448),
    (10, 700),
    (1, 1),
]


@pytest.mark.parametrize(("min_tiles", "max_tiles"), [(1, 1), (1, 6), (1, 12), (2, 9), (4, 4), (1, 40)])
def test_tile_grids_equal_transformers(min_tiles, max_tiles):
    assert tile_grids(min_tiles, max_tiles) == get_all_supported_aspect_ratios(min_tiles, max_tiles)


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize(("min_tiles", "max_tiles"), [(1, 12), (1, 6), (1, 1), (2, 9)])
def test_closest_ratio_grid_equals_transformers(height, width, min_tiles, max_tiles):
    ours = closest_ratio_grid(height, width, tile_size=448, min_tiles=min_tiles, max_tiles=max_tiles)
    assert ours == get_optimal_tiled_canvas((height, width), (448, 448), min_tiles, max_tiles)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6000),
    st.integers(1, 6000),
    st.integers(1, 4),
    st.integers(0, 12),
    st.sampled_from([224, 384, 448]),
)
def test_closest_ratio_grid_equals_transformers_everywhere(height, width, min_tiles, extra, tile):
    max_tiles = min_tiles + extra
    ours = closest_ratio_grid(height, width, tile_size=tile, min_tiles=min_tiles, max_tiles=max_tiles)
    assert ours == get_optimal_tiled_canvas.__wrapped__((height, width), (tile, tile), min_tiles, max_tiles)


def test_closest_ratio_grid_tie_prefers_bigger_grid_only_with_pixels():
    # A square image ties 1x1, 2x2, 3x3 (ratio difference 0): a bigger grid only while area > half its canvas.
    assert closest_ratio_grid(448, 448) == (1, 1)
    assert closest_ratio_grid(700, 700) == (2, 2)  # 490000 > 0.5 * 448^2 * 4 = 401408
    assert closest_ratio_grid(1000, 1000) == (3, 3)  # 1e6 > 0.5 * 448^2 * 9 = 903168


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6000), st.integers(1, 6000), st.sampled_from([336, 384]), st.integers(1, 9))
def test_best_fit_grid_equals_transformers_select_best_resolution(height, width, tile, max_tiles):
    grids = tile_grids(1, max_tiles)
    cols, rows = best_fit_grid(height, width, tile_size=tile, grids=grids)
    canvases = [(r * tile, c * tile) for c, r in grids]  # transformers: (height, width) in pixels
    assert select_best_resolution((height, width), canvases) == (rows * tile, cols * tile)


def test_best_fit_grid_order_breaks_full_ties():
    # A 1x1 image keeps its one pixel on any canvas; the least wasted canvas is the 1x1 grid wherever it is.
    assert best_fit_grid(1, 1, tile_size=384, grids=[(2, 1), (1, 1)]) == (1, 1)
    # Equal canvases (a repeated grid) tie fully: the first wins.
    assert best_fit_grid(300, 900, tile_size=384, grids=[(3, 1), (3, 1)]) == (3, 1)


def test_split_tiles_row_major_against_slicing():
    torch.manual_seed(0)
    image = torch.randn(2, 3, 6, 8)  # (batch, C, H, W): a 3-row, 4-column grid of 2x2 tiles
    tiles = split_tiles(image, 2)
    assert tiles.shape == (2, 12, 3, 2, 2)
    for i in range(12):
        r, c = divmod(i, 4)
        assert torch.equal(tiles[:, i], image[:, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2])
    assert split_tiles(image[0], 2).shape == (12, 3, 2, 2)


@pytest.mark.parametrize("shape", [(1, 32, 32, 8), (3, 16, 16, 4), (2, 4, 8, 6)])
def test_pixel_shuffle_equals_internvl(shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    assert torch.equal(pixel_shuffle(x), InternVLModel.pixel_shuffle(None, x))
    assert torch.equal(pixel_shuffle(x, 1.0), InternVLModel.pixel_shuffle(None, x, 1.0))


def test_pixel_shuffle_block_layout():
    # Output token (i, j), channel block 2a + b holds input patch (2i + a, 2j + b) (the docstring's claim).
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 3)
    y = pixel_shuffle(x)
    for i, j, a, b in [(0, 0, 1, 0), (1, 2, 0, 1), (1, 1, 1, 1)]:
        block = 2 * a + b
        assert torch.equal(y[0, i, j, 3 * block : 3 * block + 3], x[0, 2 * i + a, 2 * j + b])


@pytest.mark.parametrize(("h", "w"), [(27, 27), (28, 28), (5, 8), (1, 1)])
def test_unfold_merge_equals_f_unfold(h, w):
    torch.manual_seed(0)
    x = torch.randn(2, h, w, 5)
    y = unfold_merge(x)
    # DeepSeek-VL2's MlpProjector: pad to even (bottom/right, zeros), F.unfold 2x2 stride 2 on (B, C, H, W).
    xc = F.pad(x.permute(0, 3, 1, 2), (0, w % 2, 0, h % 2))
    ref = F.unfold(xc, kernel_size=2, stride=2).transpose(1, 2)  # (B, h/2 * w/2, 4C)
    assert y.shape == (2, (h + 1) // 2, (w + 1) // 2, 20)
    assert torch.equal(y.reshape(2, -1, 20), ref)


def test_siglip_384_tile_is_196_tokens():
    assert unfold_merge(torch.zeros(1, 27, 27, 4)).shape[1:3] == (14, 14)
    assert pixel_shuffle(torch.zeros(1, 32, 32, 4)).shape[1:3] == (16, 16)  # InternViT 448 tile: 256 tokens
