"""Dynamic tiling and token compression of the tiling VLMs (InternVL, DeepSeek-VL2, LLaVA-NeXT).

A ViT trained at one square size (448 for InternViT, 384 for SigLIP) sees a large image as a grid of
``cols x rows`` tiles of that size, usually plus one global thumbnail. Two rules pick the grid:

- :func:`closest_ratio_grid` (InternVL 1.5 and later, arXiv 2404.16821 §3.2): among the grids with
  ``min_tiles <= cols * rows <= max_tiles`` take the one whose aspect ratio ``cols / rows`` is closest to the
  image's ``width / height``; on a tie prefer the larger grid while the image has more than half its pixels.
  The image is then resized (stretched) to ``(rows * T, cols * T)``.
- :func:`best_fit_grid` (LLaVA-NeXT's "AnyRes", DeepSeek-VL2 arXiv 2412.10302 §2): among candidate canvases
  take the one that keeps the most of the image's pixels when it is scaled to fit inside, then the one
  that wastes the fewest. The image is then scaled and padded to the canvas.

After the ViT, each tile's ``h x w`` grid of patch features is compressed by merging 2 x 2 neighbours into
one token with 4x the channels: :func:`pixel_shuffle` (InternVL's channel order) and
:func:`unfold_merge` (DeepSeek-VL2's projector, ``torch.nn.functional.unfold`` order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shared.utils import check_int, check_number, check_tensor

__all__ = [
    "tile_grids",
    "closest_ratio_grid",
    "best_fit_grid",
    "split_tiles",
    "pixel_shuffle",
    "unfold_merge",
]


def _check_tile_range(min_tiles: object, max_tiles: object) -> tuple[int, int]:
    min_tiles = check_int("min_tiles", min_tiles, minimum=1)
    max_tiles = check_int("max_tiles", max_tiles, minimum=1)
    if min_tiles > max_tiles:
        raise ValueError(f"min_tiles ({min_tiles}) must be <= max_tiles ({max_tiles})")
    return min_tiles, max_tiles


def tile_grids(min_tiles: int = 1, max_tiles: int = 12) -> list[tuple[int, int]]:
    """Every ``(cols, rows)`` with ``min_tiles <= cols * rows <= max_tiles``, sorted by tile count.

    Within one tile count the order is by ``cols``, then ``rows`` (a stable sort of the loop order), as in
    ``transformers.models.got_ocr2.image_processing_got_ocr2.get_all_supported_aspect_ratios``. InternVL's
    ``dynamic_preprocess`` sorts a ``set`` instead; the order inside one tile count only matters for ties
    between different grids of equal count, which :func:`closest_ratio_grid` never breaks by order.
    """
    min_tiles, max_tiles = _check_tile_range(min_tiles, max_tiles)
    grids = [
        (cols, rows)
        for cols in range(1, max_tiles + 1)
        for rows in range(1, max_tiles + 1)
        if min_tiles <= cols * rows <= max_tiles
    ]
    return sorted(grids, key=lambda g: g[0] * g[1])


def _check_size(height: object, width: object) -> tuple[int, int]:
    return check_int("height", height, minimum=1), check_int("width", width, minimum=1)


def closest_ratio_grid(
    height: int, width: int, *, tile_size: int = 448, min_tiles: int = 1, max_tiles: int = 12
) -> tuple[int, int]:
    """InternVL's grid ``(cols, rows)`` for an image of ``height x width`` pixels.

    For the grids of :func:`tile_grids` in order: keep the one with the smallest
    ``|width / height - cols / rows|``; when a later grid ties, take it if the image's area exceeds half the
    grid's, ``height * width > 0.5 * tile_size**2 * cols * rows`` (a bigger grid only when the image has the
    pixels to fill it). Defaults: 448-pixel tiles and 1 to 12 tiles, the setting of the InternVL3 training scripts
    (``--max_dynamic_patch 12``) and of ``transformers``' ``max_patches``; InternVL's ``dynamic_preprocess`` function
    itself defaults to ``max_num=6``.
    Equal to ``transformers.models.got_ocr2.image_processing_got_ocr2.get_optimal_tiled_canvas``.
    """
    height, width = _check_size(height, width)
    tile_size = check_int("tile_size", tile_size, minimum=1)
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in tile_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and height * width > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def best_fit_grid(
    height: int, width: int, *, tile_size: int, grids: Sequence[tuple[int, int]]
) -> tuple[int, int]:
    """The grid ``(cols, rows)`` whose canvas ``(rows * T) x (cols * T)`` fits the image best (AnyRes).

    The image is scaled by ``s = min(cols T / width, rows T / height)`` to fit inside the canvas;
    ``effective = min(int(width s) * int(height s), width * height)`` pixels of it survive (upscaling adds
    none) and ``wasted = canvas area - effective``. Take the largest ``effective``, then the smallest
    ``wasted``; on a full tie the first grid in ``grids`` wins, so their order matters (DeepSeek-VL2 passes
    its processor's ``candidate_resolutions`` in the released order). Equal to DeepSeek-VL2's
    ``select_best_resolution`` and ``transformers.image_processing_utils.select_best_resolution``
    (which take sizes in pixels, width-first and height-first respectively).
    """
    height, width = _check_size(height, width)
    tile_size = check_int("tile_size", tile_size, minimum=1)
    if isinstance(grids, (str, bytes)) or not isinstance(grids, Sequence) or len(grids) == 0:
        raise ValueError(f"grids must be a non-empty sequence of (cols, rows), got {grids!r}")
    best, best_effective, best_wasted = None, 0, float("inf")
    for i, grid in enumerate(grids):
        if not (isinstance(grid, (tuple, list)) and len(grid) == 2):
            raise ValueError(f"grids[{i}] must be a (cols, rows) pair, got {grid!r}")
        cols = check_int(f"grids[{i}][0]", grid[0], minimum=1)
        rows = check_int(f"grids[{i}][1]", grid[1], minimum=1)
        canvas_w, canvas_h = cols * tile_size, rows * tile_size
        scale = min(canvas_w / width, canvas_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = canvas_w * canvas_h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (cols, rows), effective, wasted
    assert best is not None  # every image keeps at least one pixel on any canvas
    return best


def split_tiles(image: torch.Tensor, tile_size: int) -> torch.Tensor:
    """Cut ``image`` ``(..., C, H, W)`` into its ``T x T`` tiles, row by row: ``(..., rows * cols, C, T, T)``.

    ``H`` and ``W`` must be multiples of ``T`` (resize or pad to the grid's canvas first). Tile ``i`` is at row
    ``i // cols``, column ``i % cols``, the order of InternVL's ``dynamic_preprocess`` and of DeepSeek-VL2's
    local views.
    """
    check_tensor("image", image, nonempty=True)
    tile_size = check_int("tile_size", tile_size, minimum=1)
    if image.ndim < 3:
        raise ValueError(f"image must be (..., C, H, W), got shape {tuple(image.shape)}")
    *lead, c, h, w = image.shape
    if h % tile_size or w % tile_size:
        raise ValueError(f"image height and width ({h}, {w}) must be multiples of tile_size ({tile_size})")
    rows, cols = h // tile_size, w // tile_size
    x = image.reshape(*lead, c, rows, tile_size, cols, tile_size)
    n = len(lead)
    # (..., C, rows, T, cols, T) -> (..., rows, cols, C, T, T)
    x = x.permute(*range(n), n + 1, n + 3, n, n + 2, n + 4)
    return x.reshape(*lead, rows * cols, c, tile_size, tile_size)


def _check_grid_features(name: str, x: torch.Tensor) -> None:
    check_tensor(name, x, ndim=4, dtype_kind="float", nonempty=True)


def pixel_shuffle(x: torch.Tensor, scale_factor: float = 0.5) -> torch.Tensor:
    """InternVL's pixel shuffle: ``(B, h, w, C)`` -> ``(B, h s, w s, C / s**2)``, ``s = scale_factor``.

    With ``s = 1/2`` each 2 x 2 block of patch features becomes one token of ``4 C`` channels: a 448 tile's
    32 x 32 = 1024 InternViT patches become 16 x 16 = 256 tokens. Output token ``(i, j)`` holds the features
    of input patches ``(2i + a, 2j + b)`` for ``a, b`` in ``{0, 1}``, channel block ``2 a + b`` (row-major within
    the block, from the two reshapes below, as in InternVL's ``InternVLChatModel.pixel_shuffle``). Equal to
    ``transformers.models.internvl.modeling_internvl.InternVLModel.pixel_shuffle``.
    """
    _check_grid_features("x", x)
    s = check_number("scale_factor", scale_factor, gt=0, le=1)
    inv = 1 / s
    if abs(inv - round(inv)) > 1e-9:
        raise ValueError(f"scale_factor must be 1/k for a positive integer k, got {scale_factor}")
    k = round(inv)
    b, h, w, c = x.shape
    if h % k or w % k:
        raise ValueError(f"x's grid ({h}, {w}) must be divisible by 1/scale_factor = {k}")
    x = x.reshape(b, h, w // k, c * k)  # merge k neighbours along w into the channels
    x = x.permute(0, 2, 1, 3).reshape(b, w // k, h // k, c * k * k)  # then k along h
    return x.permute(0, 2, 1, 3).contiguous()  # (B, h / k, w / k, k^2 C)


def unfold_merge(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """DeepSeek-VL2's token merge: ``(B, h, w, C)`` -> ``(B, ceil(h/f), ceil(w/f), C f^2)``.

    Odd grids are zero-padded at the bottom and right first (SigLIP-384's 27 x 27 patches -> 28 x 28 -> 14 x 14
    = 196 tokens). Output token ``(i, j)`` holds patch ``(f i + a, f j + b)`` at channels ``c f^2 + a f + b``:
    channel-major, the order of ``torch.nn.functional.unfold(kernel_size=f, stride=f)`` in the projector
    ``MlpProjector`` (``projector_type="downsample_mlp_gelu"``) of DeepSeek-VL2's ``modeling_deepseek_vl_v2.py``.
    """
    _check_grid_features("x", x)
    f = check_int("factor", factor, minimum=1)
    b, h, w, c = x.shape
    ph, pw = -h % f, -w % f
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, 0, 0, pw, 0, ph))
    h, w = h + ph, w + pw
    x = x.reshape(b, h // f, f, w // f, f, c)  # (B, i, a, j, b, C)
    x = x.permute(0, 1, 3, 5, 2, 4)  # (B, i, j, C, a, b)
    return x.reshape(b, h // f, w // f, c * f * f)
