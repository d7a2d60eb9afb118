"""Multimodal RoPE (M-RoPE) of Qwen2-VL / Qwen2.5-VL / Qwen3-VL, and the 2D RoPE of their vision tower.

Qwen2-VL (Wang et al. 2024, arXiv 2409.12191, §2.1 "Multimodal Rotary Position Embedding") gives every
token of the language model three position ids, (temporal, height, width):

- a text token carries the same id on all three axes, so on pure text M-RoPE is 1D RoPE;
- the tokens of an image or video block (one token per 2x2-merged patch) carry ``(start + t, start + h,
  start + w)``, where ``(t, h, w)`` is the token's cell in the merged grid;
- "position numbering for each modality is initialized by incrementing the maximum position ID of the
  preceding modality by one": every block (a run of text, an image, a video) starts at the largest id used
  so far plus one.

Qwen2.5-VL (arXiv 2502.13923, §2.1.3) aligns a video's temporal id with absolute time:
``t_id = floor(t * second_per_grid * tokens_per_second)``, computed in floating point.

Each of the ``head_dim / 2`` rotary frequencies is driven by one axis. Two layouts of that assignment:

- ``"sectioned"`` (Qwen2-VL, Qwen2.5-VL ``mrope_section``, e.g. ``[16, 24, 24]`` for head_dim 128): the first
  ``s_t`` frequencies (the highest) follow the temporal id, the next ``s_h`` the height, the last ``s_w`` the width.
- ``"interleaved"`` (Qwen3-VL): frequency ``j`` follows the height if ``j % 3 == 1 and j < 3 s_h``, the width if
  ``j % 3 == 2 and j < 3 s_w``, the temporal id otherwise, so every axis spans low and high frequencies.

Both keep the rotate-half memory layout of :mod:`shared.rope`: apply the tables with
``shared.rope.apply_rope(q, cos[:, None], sin[:, None])``.

Where ``transformers`` 5.23 differs from the paper's rule (the tests pin both values): its
``get_rope_index`` starts whatever follows a vision block at ``start + max(h, w) / merge``, which is the
largest id + 1 for images but not for a video whose (time-scaled) temporal ids outgrow its merged spatial
side: a video of 3 temporal patches on a 4x4 patch grid (2x2 after merging) ends at ``start + 2`` and the
next text token also gets ``start + 2``. Here that token gets ``start + 3``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shared.rope import rope_cos_sin, rope_inv_freq
from shared.utils import (
    InputTypeError,
    check_choice,
    check_int,
    check_number,
    check_same_device,
    check_tensor,
)

__all__ = [
    "TEXT",
    "IMAGE",
    "VIDEO",
    "mm_token_types",
    "mrope_position_ids",
    "mrope_axis_of_frequency",
    "mrope_cos_sin",
    "vision_position_ids",
    "vision_rope_cos_sin",
]

# Token types, as transformers' ``mm_token_type_ids``.
TEXT, IMAGE, VIDEO = 0, 1, 2


def mm_token_types(input_ids: torch.Tensor, image_token_id: int, video_token_id: int) -> torch.Tensor:
    """Token types ``(batch, seq)`` int64: ``IMAGE`` where ``input_ids == image_token_id``, ``VIDEO`` where
    ``input_ids == video_token_id``, ``TEXT`` elsewhere (what a Qwen2-VL processor returns as
    ``mm_token_type_ids``)."""
    check_tensor("input_ids", input_ids, ndim=2, dtype_kind="int", nonempty=True)
    check_int("image_token_id", image_token_id, minimum=0)
    check_int("video_token_id", video_token_id, minimum=0)
    if image_token_id == video_token_id:
        raise ValueError(f"image_token_id and video_token_id must differ, both are {image_token_id}")
    types = torch.full_like(input_ids, TEXT, dtype=torch.long)
    types[input_ids == image_token_id] = IMAGE
    types[input_ids == video_token_id] = VIDEO
    return types


def _check_grid(name: str, grid: torch.Tensor | None, merge: int) -> list[list[int]]:
    """A ``(n, 3)`` integer grid tensor as a list of ``[t, h, w]`` rows, after checking it."""
    if grid is None:
        return []
    check_tensor(name, grid, ndim=2, dtype_kind="int")
    if grid.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3) with rows (t, h, w), got {tuple(grid.shape)}")
    if (grid <= 0).any():
        raise ValueError(f"{name} entries must be positive, got {grid.tolist()}")
    if (grid[:, 1:] % merge).any():
        raise ValueError(f"{name} heights and widths must be divisible by spatial_merge_size={merge}")
    return grid.tolist()


def _temporal_ids(t: int, second_per_grid: float | None, tokens_per_second: float | None) -> torch.Tensor:
    """Temporal ids ``(t,)`` int64 of a block's temporal patches, before the block's start is added.

    Qwen2-VL: ``0, 1, ..., t-1``. Qwen2.5-VL (time-aligned): ``floor(i * second_per_grid * tokens_per_second)``
    computed in float32, as ``transformers`` does.
    """
    if tokens_per_second is None or second_per_grid is None:
        return torch.arange(t)
    interval = torch.tensor(second_per_grid, dtype=torch.float32) * tokens_per_second  # ids per patch
    ids = torch.floor(torch.arange(t, dtype=torch.float32) * interval)
    if not bool(ids[-1] < 2**62):  # float32 overflow (inf) or a float too large for int64 would wrap
        raise ValueError(
            f"temporal ids overflow: {t} patches x {second_per_grid} s x {tokens_per_second} tokens/s"
        )
    return ids.long()


def _seconds_per_grid(values: object) -> list[float]:
    """``second_per_grid_ts`` (a tensor or a sequence of numbers) as a list of floats."""
    if isinstance(values, torch.Tensor):
        check_tensor("second_per_grid_ts", values)
        if values.dtype == torch.bool or values.is_complex():
            raise InputTypeError(f"second_per_grid_ts must hold real numbers, got {values.dtype}")
        return [float(s) for s in values.detach().cpu().double().reshape(-1)]
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise InputTypeError(f"second_per_grid_ts must be a tensor or a sequence of numbers, got {values!r}")
    return [check_number("second_per_grid_ts entries", s) for s in values]


def _vision_block_ids(start: int, grid: list[int], merge: int, temporal: torch.Tensor) -> torch.Tensor:
    """Ids ``(3, t * h/merge * w/merge)`` of one vision block, tokens in (t, h, w) raster order."""
    _, h, w = grid
    tt, hh, ww = torch.meshgrid(temporal, torch.arange(h // merge), torch.arange(w // merge), indexing="ij")
    return torch.stack((tt, hh, ww)).reshape(3, -1) + start


def mrope_position_ids(
    token_types: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    *,
    spatial_merge_size: int = 2,
    tokens_per_second: float | None = None,
    second_per_grid_ts: torch.Tensor | Sequence[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """3D M-RoPE position ids for a padded batch of sequences mixing text, images and videos.

    Args:
        token_types: ``(batch, seq)`` ints, ``TEXT`` (0), ``IMAGE`` (1) or ``VIDEO`` (2) per token. A vision
            block is a run of ``t * h * w / merge**2`` tokens of one type; two blocks may touch.
        image_grid_thw: ``(n_images, 3)`` ViT patch grids ``(t, h, w)`` (before merging) of the images, in the
            order they appear, sequence after sequence (as the processor returns them).
        video_grid_thw: ``(n_videos, 3)`` the same for videos.
        attention_mask: ``(batch, seq)`` 1/True for real tokens, 0/False for padding (left, right or both);
            padding gets id 0 and does not advance the ids.
        spatial_merge_size: side of the square of patches merged into one token (2 in Qwen2-VL).
        tokens_per_second: ``None`` for Qwen2-VL (a video's temporal id grows by 1 per temporal patch); a
            number for Qwen2.5-VL's time-aligned ids (``vision_config.tokens_per_second``, 2 in the release).
        second_per_grid_ts: ``(n_videos,)`` seconds covered by one temporal patch of each video
            (``temporal_patch_size / fps``); only with ``tokens_per_second``; defaults to 1.0 per video.

    The tensors must share one device (any); the ids are built on the CPU and returned on that device.

    Returns:
        ``position_ids`` ``(3, batch, seq)`` int64 (rows: temporal, height, width), and ``rope_deltas``
        ``(batch, 1)`` int64 = largest id + 1 - number of real tokens, the offset that decoding adds to the
        plain token index of each new (text) token, as ``transformers``' ``get_rope_index`` returns.
    """
    check_tensor("token_types", token_types, ndim=2, dtype_kind="int", nonempty=True)
    merge = check_int("spatial_merge_size", spatial_merge_size, minimum=1)
    device = check_same_device(
        token_types=token_types,
        image_grid_thw=image_grid_thw,
        video_grid_thw=video_grid_thw,
        attention_mask=attention_mask,
        second_per_grid_ts=second_per_grid_ts if isinstance(second_per_grid_ts, torch.Tensor) else None,
    )
    token_types = token_types.cpu()  # a Python loop over blocks: work on the CPU, return on `device`
    if not ((token_types >= TEXT) & (token_types <= VIDEO)).all():
        raise ValueError("token_types must hold only TEXT (0), IMAGE (1) or VIDEO (2)")
    batch, seq = token_types.shape
    if attention_mask is None:
        attention_mask = torch.ones(batch, seq, dtype=torch.bool)
    check_tensor("attention_mask", attention_mask, ndim=2)
    if attention_mask.is_complex():
        raise InputTypeError(f"attention_mask must be bool or 0/1 numbers, got {attention_mask.dtype}")
    attention_mask = attention_mask.cpu()
    if attention_mask.shape != token_types.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} must equal token_types shape {(batch, seq)}"
        )
    if not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError("attention_mask must hold only 0/1 (or False/True)")
    grids = {IMAGE: _check_grid("image_grid_thw", image_grid_thw, merge)}
    grids[VIDEO] = _check_grid("video_grid_thw", video_grid_thw, merge)
    n_videos = len(grids[VIDEO])
    if tokens_per_second is None:
        if second_per_grid_ts is not None:
            raise ValueError("second_per_grid_ts needs tokens_per_second (Qwen2.5-VL time-aligned ids)")
        seconds = [None] * n_videos
    else:
        check_number("tokens_per_second", tokens_per_second, gt=0)
        if second_per_grid_ts is None:
            second_per_grid_ts = [1.0] * n_videos
        seconds = _seconds_per_grid(second_per_grid_ts)
        if len(seconds) != n_videos:
            raise ValueError(f"second_per_grid_ts has {len(seconds)} entries for {n_videos} videos")
        if any(not (s >= 0 and s < float("inf")) for s in seconds):
            raise ValueError(f"second_per_grid_ts must be finite and >= 0, got {seconds}")

    position_ids = torch.zeros(3, batch, seq, dtype=torch.long)  # on the CPU
    rope_deltas = torch.zeros(batch, 1, dtype=torch.long)
    used = {IMAGE: 0, VIDEO: 0}  # grids consumed so far, across the batch
    names = {IMAGE: "image", VIDEO: "video"}
    for b in range(batch):
        keep = attention_mask[b].bool()
        types = token_types[b][keep].tolist()
        if not types:
            raise ValueError(f"sequence {b} has no unmasked token")
        blocks = []  # (3, n) ids of each block, in order
        next_id = 0  # where the next block starts: largest id so far + 1 (paper §2.1)
        i = 0
        while i < len(types):
            kind = types[i]
            if kind == TEXT:
                j = i
                while j < len(types) and types[j] == TEXT:
                    j += 1
                ids = (torch.arange(j - i) + next_id).expand(3, -1)  # (3, n): one id on all three axes
            else:
                k = used[kind]
                if k == len(grids[kind]):
                    raise ValueError(f"more {names[kind]} blocks than the {k} {names[kind]}_grid_thw rows")
                grid = grids[kind][k]
                used[kind] += 1
                n_tokens = grid[0] * grid[1] * grid[2] // merge**2
                j = i + n_tokens
                if types[i:j] != [kind] * n_tokens:
                    raise ValueError(
                        f"sequence {b}: {names[kind]} block at token {i} is shorter than the {n_tokens} tokens "
                        f"its grid {grid} gives"
                    )
                seconds_k = seconds[k] if kind == VIDEO else None  # images keep integer temporal ids
                ids = _vision_block_ids(
                    next_id, grid, merge, _temporal_ids(grid[0], seconds_k, tokens_per_second)
                )
            blocks.append(ids)
            next_id = int(ids.max()) + 1
            i = j
        ids = torch.cat(blocks, dim=1)  # (3, n_real)
        position_ids[:, b, keep] = ids
        rope_deltas[b, 0] = next_id - len(types)
    for kind in (IMAGE, VIDEO):
        if used[kind] != len(grids[kind]):
            raise ValueError(
                f"{len(grids[kind])} {names[kind]}_grid_thw rows but {used[kind]} {names[kind]} blocks in the batch"
            )
    return position_ids.to(device), rope_deltas.to(device)


def mrope_axis_of_frequency(mrope_section: Sequence[int], layout: str = "sectioned") -> torch.Tensor:
    """Which axis (0 temporal, 1 height, 2 width) drives each rotary frequency: ``(sum(mrope_section),)`` int64.

    ``mrope_section = [s_t, s_h, s_w]`` counts the frequencies of each axis; their sum is ``head_dim / 2``.
    ``"sectioned"``: ``[0]*s_t + [1]*s_h + [2]*s_w``. ``"interleaved"`` (Qwen3-VL): ``j % 3 == 1 and j < 3 s_h``
    -> 1, ``j % 3 == 2 and j < 3 s_w`` -> 2, else 0; the counts must come out as ``mrope_section``.
    """
    if not isinstance(mrope_section, (list, tuple)):
        raise InputTypeError(f"mrope_section must be a list of 3 ints (t, h, w), got {mrope_section!r}")
    if len(mrope_section) != 3:
        raise ValueError(f"mrope_section must be a list of 3 ints (t, h, w), got {mrope_section!r}")
    section = [check_int("mrope_section entries", s, minimum=0) for s in mrope_section]
    half = sum(section)
    if half == 0:
        raise ValueError("mrope_section must not be all zeros")
    check_choice("layout", layout, ("sectioned", "interleaved"))
    if layout == "sectioned":
        return torch.repeat_interleave(torch.arange(3), torch.tensor(section))
    j = torch.arange(half)
    axis = torch.zeros(half, dtype=torch.long)
    axis[(j % 3 == 1) & (j < 3 * section[1])] = 1
    axis[(j % 3 == 2) & (j < 3 * section[2])] = 2
    counts = torch.bincount(axis, minlength=3).tolist()
    if counts != section:
        raise ValueError(
            f"interleaved layout of mrope_section {section} gives {counts} frequencies per axis; "
            f"each of s_h, s_w must be at most about a third of head_dim/2 = {half}"
        )
    return axis


def _pick_axes(tables: torch.Tensor, axis_of_freq: torch.Tensor) -> torch.Tensor:
    """From per-axis rotate-half tables ``(axes, ..., head_dim)``, take each frequency from its own axis."""
    pick = torch.cat((axis_of_freq, axis_of_freq)).to(tables.device)  # (head_dim,): both halves, one axis
    out = torch.empty_like(tables[0])
    for a in range(tables.shape[0]):
        out[..., pick == a] = tables[a][..., pick == a]
    return out


def mrope_cos_sin(
    position_ids: torch.Tensor,
    inv_freq: torch.Tensor,
    mrope_section: Sequence[int],
    *,
    layout: str = "sectioned",
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE cos/sin tables from 3D ids ``(3, ..., seq)`` and ``inv_freq`` ``(head_dim/2,)``.

    Computes the ordinary 1D RoPE tables (:func:`shared.rope.rope_cos_sin`, rotate-half layout) of the temporal,
    height and width ids, then lets each frequency take its values from the axis
    :func:`mrope_axis_of_frequency` assigns it. Returns two float32 tensors ``(..., seq, head_dim)``, equal to
    ``transformers``' ``Qwen2VLRotaryEmbedding`` (``"sectioned"``) or ``Qwen3VLTextRotaryEmbedding``
    (``"interleaved"``). On text (three equal rows) they equal the 1D tables.
    """
    check_tensor("position_ids", position_ids, dtype_kind="int", nonempty=True)
    if position_ids.ndim < 2 or position_ids.shape[0] != 3:
        raise ValueError(f"position_ids must have shape (3, ..., seq), got {tuple(position_ids.shape)}")
    check_tensor("inv_freq", inv_freq, ndim=1, dtype_kind="float")
    axis = mrope_axis_of_frequency(mrope_section, layout)
    if axis.numel() != inv_freq.numel():
        raise ValueError(
            f"mrope_section {list(mrope_section)} sums to {axis.numel()} but must sum to head_dim/2 = "
            f"{inv_freq.numel()} (the length of inv_freq)"
        )
    cos3, sin3 = rope_cos_sin(position_ids, inv_freq, scale=scale)  # (3, ..., seq, head_dim) each
    return _pick_axes(cos3, axis), _pick_axes(sin3, axis)


def vision_position_ids(grid_thw: torch.Tensor, spatial_merge_size: int = 2) -> torch.Tensor:
    """(h, w) patch coordinates ``(sum t*h*w, 2)`` int64 for the vision tower's 2D RoPE.

    Patches are listed in the order the Qwen2-VL image processor flattens them: frame by frame, and within
    a frame ``merge x merge`` block after block (row-major over blocks), row-major inside a block, so the
    ``merge**2`` patches that the merger fuses into one token are adjacent. Equal to
    ``transformers.vision_utils.get_vision_position_ids``.
    """
    merge = check_int("spatial_merge_size", spatial_merge_size, minimum=1)
    check_tensor("grid_thw", grid_thw, nonempty=True)
    rows = _check_grid("grid_thw", grid_thw, merge)
    out = []
    for t, h, w in rows:
        hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")  # (h, w) each
        blocks = (h // merge, merge, w // merge, merge)
        hh = hh.reshape(blocks).permute(0, 2, 1, 3).reshape(-1)  # (h*w,) in merge-block order
        ww = ww.reshape(blocks).permute(0, 2, 1, 3).reshape(-1)
        out.append(torch.stack((hh, ww), dim=-1).repeat(t, 1))  # (t*h*w, 2): same coordinates every frame
    return torch.cat(out)


def vision_rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """2D RoPE tables ``(n, head_dim)`` float32 of the Qwen2-VL ViT from (h, w) ids ``(n, 2)``.

    The ``head_dim / 2`` frequencies are ``head_dim / 4`` frequencies ``base^(-4i/head_dim)`` used twice: the
    first copy rotates by the row h, the second by the column w (a two-axis sectioned M-RoPE), in the
    rotate-half layout. Equal to ``Qwen2VLVisionRotaryEmbedding`` applied to
    :func:`vision_position_ids`; apply with ``shared.rope.apply_rope(q, cos[:, None], sin[:, None])`` for
    ``q`` ``(n, heads, head_dim)``.
    """
    check_tensor("position_ids", position_ids, ndim=2, dtype_kind="int", nonempty=True)
    if position_ids.shape[1] != 2:
        raise ValueError(
            f"position_ids must have shape (n, 2) with columns (h, w), got {tuple(position_ids.shape)}"
        )
    if check_int("head_dim", head_dim) <= 0 or head_dim % 4:
        raise ValueError(
            f"head_dim must be a positive multiple of 4 (two axes of rotated pairs), got {head_dim!r}"
        )
    inv = rope_inv_freq(head_dim // 2, base).to(position_ids.device)  # (head_dim/4,), on the ids' device
    inv_freq = torch.cat((inv, inv))  # (head_dim/2,): first half for h, second half for w
    axis = torch.repeat_interleave(torch.arange(2), head_dim // 4)  # (head_dim/2,)
    cos2, sin2 = rope_cos_sin(position_ids.T, inv_freq)  # (2, n, head_dim) each
    return _pick_axes(cos2, axis), _pick_axes(sin2, axis)
