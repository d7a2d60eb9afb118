"""Image-size arithmetic of the Qwen2-VL family's "naive dynamic resolution" (arXiv 2409.12191, §2.1).

Qwen2-VL, Qwen2.5-VL and Qwen3-VL do not resize every image to one fixed square: they keep its aspect
ratio, round both sides to a multiple of ``factor`` (patch 14 x merge 2 = 28 in Qwen2-VL), and rescale only
when the pixel count leaves ``[min_pixels, max_pixels]``. Each ``factor x factor`` square becomes one token
of the language model.
"""

from __future__ import annotations

import math

from shared.utils import check_int

__all__ = ["smart_resize"]


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 1280,
) -> tuple[int, int]:
    """The ``(height, width)`` the Qwen2-VL processor resizes an image to; both are multiples of ``factor``.

    1. Round each side to the nearest multiple of ``factor`` (Python's ``round``: halves go to even).
    2. If that has more than ``max_pixels`` pixels, scale both sides by ``beta = sqrt(h w / max_pixels)`` and
       round down to multiples of ``factor`` (at least ``factor``).
    3. If it has fewer than ``min_pixels``, scale by ``beta = sqrt(min_pixels / (h w))`` and round up.

    The aspect ratio is kept up to the rounding. Defaults are the processor's: ``min_pixels = 56 * 56``
    (4 tokens) and ``max_pixels = 28 * 28 * 1280`` (1280 tokens). Equal to
    ``transformers.models.qwen2_vl.image_processing_qwen2_vl.smart_resize``, which also refuses an aspect
    ratio above 200; this version further raises ``TypeError`` on non-integer sizes, ``ValueError`` on non-positive ones and on
    ``min_pixels > max_pixels`` or ``max_pixels < factor**2``.
    """
    height = check_int("height", height, minimum=1)
    width = check_int("width", width, minimum=1)
    factor = check_int("factor", factor, minimum=1)
    min_pixels = check_int("min_pixels", min_pixels, minimum=1)
    max_pixels = check_int("max_pixels", max_pixels, minimum=1)
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must be <= max_pixels ({max_pixels})")
    if max_pixels < factor * factor:
        raise ValueError(
            f"max_pixels ({max_pixels}) must be >= factor**2 ({factor * factor}): one token at least"
        )
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"aspect ratio must be at most 200, got {max(height, width) / min(height, width):.4g}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar
