"""Rotary position embeddings (RoPE, Su et al. 2021, arXiv 2104.09864) and long-context scalings.

Shapes: ``x`` is ``(..., seq, head_dim)``; ``cos``/``sin`` are ``(seq, head_dim)`` or broadcastable to ``x``.
Two memory layouts of the same rotation:

- ``"rotate_half"`` (GPT-NeoX, Llama, Qwen, ``transformers``): dimension ``i`` pairs with ``i + head_dim/2``.
- ``"interleaved"`` (the RoFormer paper, GPT-J, Meta's original Llama code): dimension ``2i`` pairs with ``2i+1``.

Inverse frequencies for a context ``s`` times longer than the trained length ``L`` (``kind`` in
:func:`rope_init`), each equal to ``transformers``' ``modeling_rope_utils.ROPE_INIT_FUNCTIONS`` (5.23):

- ``"default"``: ``theta_i = base^(-2i/d)`` (RoFormer §3.2.2).
- ``"linear"``: Position Interpolation (2306.15595), ``theta_i / s`` (``rope_type="linear"``).
- ``"ntk"``: NTK-aware base change (bloc97, 2023), ``base * s^(d/(d-2))``; no ``rope_type`` of its own,
  it is ``"dynamic"`` at a fixed length (see :func:`ntk_inv_freq`).
- ``"dynamic"``: NTK-aware with ``s`` grown from the current length (``rope_type="dynamic"``).
- ``"yarn"``: YaRN (arXiv 2309.00071v2; section numbers here are v2's), a per-frequency ramp between ``theta_i`` and ``theta_i / s`` plus the
  attention factor ``0.1 ln s + 1`` on cos and sin (``rope_type="yarn"``).

:func:`rope_init` dispatches on ``kind`` and returns ``(inv_freq, attention_factor)`` like the
``transformers`` functions; the per-kind functions are what it calls.
"""

from __future__ import annotations

import math

import torch

from shared.utils import (
    InputTypeError,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_same_device,
    check_tensor,
)

__all__ = [
    "ROPE_KINDS",
    "rope_inv_freq",
    "linear_inv_freq",
    "ntk_inv_freq",
    "dynamic_ntk_inv_freq",
    "yarn_inv_freq",
    "yarn_attention_factor",
    "rope_init",
    "rope_cos_sin",
    "rotate_half",
    "apply_rope",
    "sinusoidal_encoding",
]

ROPE_KINDS = ("default", "linear", "ntk", "dynamic", "yarn")


# ----------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------


def _check_head_dim(head_dim: int, *, name: str = "head_dim", minimum: int = 2) -> None:
    message = f"{name} must be an even int >= {minimum} (RoPE rotates pairs of dims), got {head_dim!r}"
    if isinstance(head_dim, bool) or not isinstance(head_dim, int):
        raise InputTypeError(message)
    if head_dim < minimum or head_dim % 2:
        raise ValueError(message)


def _check_base(base: float) -> None:
    check_number("base", base, gt=1)


def _check_factor(factor: float) -> None:
    check_number("factor (the context extension ratio s = L'/L)", factor, ge=1)


def _check_length(name: str, value: int | None, *, allow_none: bool = False) -> None:
    if not (value is None and allow_none):
        check_int(name, value, minimum=1)


def _check_layout(layout: str) -> None:
    check_choice("layout", layout, ("rotate_half", "interleaved"))


# ----------------------------------------------------------------------------------------------------------
# Frequencies
# ----------------------------------------------------------------------------------------------------------


def rope_inv_freq(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Default RoPE inverse frequencies ``theta_i = base^(-2i/head_dim)``, ``i = 0 .. head_dim/2 - 1``.

    RoFormer §3.2.2. Returns a float32 tensor of shape ``(head_dim // 2,)``, equal to ``transformers``'
    default (``LlamaRotaryEmbedding.compute_default_rope_parameters``).
    """
    _check_head_dim(head_dim)
    _check_base(base)
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def linear_inv_freq(head_dim: int, base: float = 10000.0, *, factor: float) -> torch.Tensor:
    """Position Interpolation (Chen et al. 2023): ``theta_i / factor``, i.e. position ``m`` read as ``m / s``.

    Since the angle is ``m * theta_i``, dividing the frequencies equals dividing the positions. Returns
    ``(head_dim // 2,)`` float32, equal to ``ROPE_INIT_FUNCTIONS["linear"]``.
    """
    _check_factor(factor)
    return rope_inv_freq(head_dim, base) / factor


def ntk_inv_freq(head_dim: int, base: float = 10000.0, *, factor: float) -> torch.Tensor:
    """NTK-aware scaling (bloc97, Reddit 2023; YaRN v2 §3.1, derived in App. A.1): default frequencies with base ``b * s^(d/(d-2))``.

    The lowest frequency ``b^(-(d-2)/d)`` becomes exactly ``1/s`` of itself (interpolated like PI) while the
    highest, ``theta_0 = 1``, is unchanged (extrapolated). Not in ``ROPE_INIT_FUNCTIONS`` under its own name:
    it equals ``"dynamic"`` with ``factor=1`` at ``seq_len = factor * L`` (checked in the tests). Needs
    ``head_dim >= 4``. Returns ``(head_dim // 2,)`` float32.
    """
    _check_head_dim(head_dim, minimum=4)
    _check_factor(factor)
    _check_base(base)
    return rope_inv_freq(head_dim, base * factor ** (head_dim / (head_dim - 2)))


def dynamic_ntk_inv_freq(
    head_dim: int,
    base: float = 10000.0,
    *,
    factor: float,
    original_max_position_embeddings: int,
    seq_len: int | None = None,
) -> torch.Tensor:
    """Dynamic NTK (emozilla, Reddit 2023; YaRN v2 §3.3): NTK-aware base change recomputed from the current length.

    With ``L = original_max_position_embeddings`` (``transformers``' ``config.max_position_embeddings``) and
    ``l = max(seq_len, L)`` (``seq_len=None`` means ``L``), the base becomes
    ``b * (factor * l / L - (factor - 1)) ^ (d / (d - 2))``: unchanged up to ``L``, growing after.
    Returns ``(head_dim // 2,)`` float32, equal to ``ROPE_INIT_FUNCTIONS["dynamic"](config, seq_len=seq_len)``.
    """
    _check_head_dim(head_dim, minimum=4)
    _check_factor(factor)
    _check_base(base)
    _check_length("original_max_position_embeddings", original_max_position_embeddings)
    _check_length("seq_len", seq_len, allow_none=True)
    length = (
        original_max_position_embeddings
        if seq_len is None
        else max(seq_len, original_max_position_embeddings)
    )
    ratio = factor * length / original_max_position_embeddings - (factor - 1)
    return rope_inv_freq(head_dim, base * ratio ** (head_dim / (head_dim - 2)))


def _yarn_correction_dim(num_rotations: float, head_dim: int, base: float, length: int) -> float:
    """The (real) pair index ``i`` whose wavelength ``2 pi base^(2i/d)`` fits ``num_rotations`` times in ``length``."""
    return head_dim * math.log(length / (num_rotations * 2 * math.pi)) / (2 * math.log(base))


def _check_yarn_options(beta_fast: float, beta_slow: float, truncate: bool) -> None:
    check_number("beta_fast", beta_fast, gt=0)
    check_number("beta_slow", beta_slow, gt=0)
    if not beta_fast >= beta_slow:
        raise ValueError(
            f"need beta_fast >= beta_slow > 0 (turns over L), got {beta_fast!r} and {beta_slow!r}"
        )
    check_bool("truncate", truncate)


def yarn_inv_freq(
    head_dim: int,
    base: float = 10000.0,
    *,
    factor: float,
    original_max_position_embeddings: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    truncate: bool = True,
) -> torch.Tensor:
    """YaRN's "NTK-by-parts" frequencies (Peng et al. 2023, v2 §3.2): keep fast pairs, interpolate slow ones.

    A pair that turns more than ``beta_fast`` times over the trained length ``L`` keeps ``theta_i``; one
    that turns fewer than ``beta_slow`` times gets ``theta_i / factor`` (PI); in between a linear ramp in
    the pair index ``i`` mixes the two (the official code's ramp; since ``r`` falls geometrically with ``i``,
    it is linear in ``ln r``, whereas v2 eq. 18 writes ``gamma`` linear in ``r``). The ramp ends ``low``/``high`` are the indices where ``L`` holds
    ``beta_fast``/``beta_slow`` turns, rounded outwards when ``truncate``. Returns ``(head_dim // 2,)``
    float32, equal to ``ROPE_INIT_FUNCTIONS["yarn"]`` (whose attention factor is
    :func:`yarn_attention_factor`).
    """
    _check_head_dim(head_dim)
    _check_factor(factor)
    _check_base(base)
    _check_length("original_max_position_embeddings", original_max_position_embeddings)
    _check_yarn_options(beta_fast, beta_slow, truncate)
    # Ramp ends, as pair indices: low = where L holds beta_fast turns, high = where it holds beta_slow turns.
    low = _yarn_correction_dim(beta_fast, head_dim, base, original_max_position_embeddings)
    high = _yarn_correction_dim(beta_slow, head_dim, base, original_max_position_embeddings)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # avoid dividing by zero, as the reference does
    # ramp_i: 0 for fast pairs (i <= low), 1 for slow pairs (i >= high), linear in i between.
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # weight of the original frequency ("extrapolation")
    pos_freqs = base ** (torch.arange(0, head_dim, 2).float() / head_dim)  # 1 / theta_i
    inv_freq_extrapolation = 1.0 / pos_freqs  # theta_i
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)  # theta_i / s
    return inv_freq_interpolation * (1 - keep) + inv_freq_extrapolation * keep


def yarn_attention_factor(
    factor: float, *, mscale: float | None = None, mscale_all_dim: float | None = None
) -> float:
    """YaRN's length scaling ``sqrt(1/t) = 0.1 ln(s) + 1`` (YaRN v2 §3.4, eq. 22), which multiplies cos and sin.

    Scaling both ``q`` and ``k`` by ``sqrt(1/t)`` divides the logits by the temperature ``t``. With both
    ``mscale`` and ``mscale_all_dim`` set and non-zero (DeepSeek-V2/V3 configs), the factor is
    ``(0.1 mscale ln s + 1) / (0.1 mscale_all_dim ln s + 1)``, as in ``transformers``; ``s <= 1`` gives 1.
    """
    _check_factor(factor)
    for name, value in (("mscale", mscale), ("mscale_all_dim", mscale_all_dim)):
        if value is not None:  # a negative one could make the factor 0, negative or infinite
            check_number(name, value, ge=0)

    def get_mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if mscale and mscale_all_dim:  # both given and non-zero, exactly the reference's test
        return float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
    return get_mscale(factor)


def rope_init(
    kind: str,
    head_dim: int,
    base: float = 10000.0,
    *,
    factor: float = 1.0,
    original_max_position_embeddings: int | None = None,
    seq_len: int | None = None,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    mscale: float | None = None,
    mscale_all_dim: float | None = None,
    attention_factor: float | None = None,
    truncate: bool = True,
) -> tuple[torch.Tensor, float]:
    """Inverse frequencies ``(head_dim // 2,)`` float32 and the attention factor for one RoPE ``kind``.

    ``kind`` is one of :data:`ROPE_KINDS`. ``head_dim`` is the rotated dim (``int(head_dim *
    partial_rotary_factor)`` in ``transformers`` terms); ``base`` is ``rope_theta``; ``factor`` is the
    extension ratio ``s``; ``original_max_position_embeddings`` is the trained length ``L`` (needed by
    ``"dynamic"``, where ``transformers`` reads it from ``config.max_position_embeddings``, and by
    ``"yarn"``); ``seq_len`` is the current length (``"dynamic"`` only). ``beta_fast``, ``beta_slow``,
    ``mscale``, ``mscale_all_dim``, ``attention_factor`` (an explicit override) and ``truncate`` are YaRN's.
    Arguments a kind does not use are ignored, as ``transformers`` ignores them (but a malformed one, such as
    ``factor=nan``, is still refused). The attention factor is
    1.0 except for ``"yarn"``; multiply cos and sin by it (``rope_cos_sin(..., scale=...)``).
    """
    check_choice("kind", kind, ROPE_KINDS)
    # Arguments a kind does not use are ignored, but a malformed one is still an error.
    _check_factor(factor)
    _check_length("original_max_position_embeddings", original_max_position_embeddings, allow_none=True)
    _check_length("seq_len", seq_len, allow_none=True)
    _check_yarn_options(beta_fast, beta_slow, truncate)
    yarn_attention_factor(factor, mscale=mscale, mscale_all_dim=mscale_all_dim)  # checks mscale*
    if attention_factor is not None:
        check_number("attention_factor", attention_factor, gt=0)
    if kind == "default":
        return rope_inv_freq(head_dim, base), 1.0
    if kind == "linear":
        return linear_inv_freq(head_dim, base, factor=factor), 1.0
    if kind == "ntk":
        return ntk_inv_freq(head_dim, base, factor=factor), 1.0
    if original_max_position_embeddings is None:
        raise ValueError(f"kind {kind!r} needs original_max_position_embeddings (the trained length L)")
    if kind == "dynamic":
        inv_freq = dynamic_ntk_inv_freq(
            head_dim,
            base,
            factor=factor,
            original_max_position_embeddings=original_max_position_embeddings,
            seq_len=seq_len,
        )
        return inv_freq, 1.0
    inv_freq = yarn_inv_freq(
        head_dim,
        base,
        factor=factor,
        original_max_position_embeddings=original_max_position_embeddings,
        beta_fast=beta_fast,
        beta_slow=beta_slow,
        truncate=truncate,
    )
    if attention_factor is None:
        attention_factor = yarn_attention_factor(factor, mscale=mscale, mscale_all_dim=mscale_all_dim)
    return inv_freq, float(attention_factor)


# ----------------------------------------------------------------------------------------------------------
# Applying the rotation
# ----------------------------------------------------------------------------------------------------------


def rope_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, *, layout: str = "rotate_half", scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos/sin tables for integer or real (finite, not bool) ``positions`` ``(..., seq)`` and ``inv_freq`` ``(head_dim/2,)``.

    Angles are ``positions[..., None] * inv_freq`` in float32; each angle is repeated for the two dims
    of its pair (``[f0..f_{d/2-1}, f0..f_{d/2-1}]`` for rotate-half, ``[f0, f0, f1, f1, ...]`` for
    interleaved). ``scale`` multiplies cos and sin (YaRN's attention factor). Returns two float32
    tensors of shape ``(..., seq, head_dim)``, equal to ``LlamaRotaryEmbedding.forward`` for rotate-half.
    """
    check_tensor("positions", positions, nonempty=True, finite=True)
    if positions.dtype == torch.bool or positions.is_complex():
        raise InputTypeError(f"positions must be integer or real, got {positions.dtype}")
    check_tensor("inv_freq", inv_freq, ndim=1, dtype_kind="float", nonempty=True, finite=True)
    check_same_device(positions=positions, inv_freq=inv_freq)
    _check_layout(layout)
    check_number("scale", scale, gt=0)
    angles = positions.float()[..., None] * inv_freq.float()  # (..., seq, head_dim/2)
    if layout == "rotate_half":
        emb = torch.cat((angles, angles), dim=-1)  # (..., seq, head_dim)
    else:
        emb = torch.repeat_interleave(angles, 2, dim=-1)  # (..., seq, head_dim)
    return emb.cos() * scale, emb.sin() * scale


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dim, split in halves: the 90-degree turn of each pair."""
    check_tensor("x", x, dtype_kind="float")
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (head_dim last)")
    _check_head_dim(x.shape[-1], name="x's last dim (head_dim)")
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    """``(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)``: the same turn for adjacent pairs."""
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((-x_odd, x_even), dim=-1).flatten(-2)


def _check_tables_fit(table: torch.Size, x: torch.Size) -> None:
    """Refuse cos/sin that broadcast to a shape other than ``x``'s, or one position over several."""
    try:
        fits = torch.broadcast_shapes(table, x) == x
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"cos/sin of shape {tuple(table)} do not broadcast to x of shape {tuple(x)}")
    # The position axis is -2 ((seq, d) against (..., seq, d)), or -3 when the tables carry a size-1 heads
    # axis at -2 ((n, 1, d) against (n, heads, d)). A size-1 position axis there would rotate every
    # position by the angles of one.
    axis = -3 if len(table) >= 3 and table[-2] == 1 and x[-2] != 1 else -2
    held = table[axis] if len(table) >= -axis else 1
    if len(x) >= -axis and held != x[axis]:
        raise ValueError(
            f"cos/sin of shape {tuple(table)} hold {held} position(s) along dim {axis} but x of shape "
            f"{tuple(x)} has {x[axis]}: pass one row of cos/sin per position"
        )


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, layout: str = "rotate_half"
) -> torch.Tensor:
    """Rotate ``x`` ``(..., seq, head_dim)`` by the angles in ``cos``/``sin``: ``x cos + turn(x) sin``.

    ``cos``/``sin`` come from :func:`rope_cos_sin` with the same ``layout`` and must broadcast to ``x``
    (``(seq, head_dim)`` against ``(batch, heads, seq, head_dim)``, or ``(batch, 1, seq, head_dim)``).
    The result has ``x``'s dtype; the product is done in ``x``'s dtype, as ``transformers`` does.

    Broadcasting may not grow ``x`` nor spread one position over several: the tables must hold ``x``'s number
    of positions on its position axis (dim -2, or -3 when the tables carry a size-1 heads axis at -2, as
    ``(n, 1, d)`` against ``(n, heads, d)``); ``ValueError`` otherwise.
    """
    check_tensor("x", x, dtype_kind="float", nonempty=True)
    check_tensor("cos", cos, dtype_kind="float", finite=True)
    check_tensor("sin", sin, dtype_kind="float", finite=True)
    check_same_device(x=x, cos=cos, sin=sin)
    _check_layout(layout)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (head_dim last)")
    _check_head_dim(x.shape[-1], name="x's last dim (head_dim)")
    if cos.shape != sin.shape:
        raise ValueError(
            f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )
    if cos.ndim == 0 or cos.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"cos/sin last dim must equal x's head_dim {x.shape[-1]}, got shape {tuple(cos.shape)}"
        )
    _check_tables_fit(cos.shape, x.shape)
    turn = rotate_half(x) if layout == "rotate_half" else _rotate_interleaved(x)
    return x * cos.to(x.dtype) + turn * sin.to(x.dtype)


# ----------------------------------------------------------------------------------------------------------
# The Transformer's absolute encoding
# ----------------------------------------------------------------------------------------------------------


def sinusoidal_encoding(num_positions: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Sinusoidal position encoding (Vaswani et al. 2017, §3.5), float32 of shape ``(num_positions, dim)``.

    ``PE[pos, 2i] = sin(pos / base^(2i/dim))`` and ``PE[pos, 2i+1] = cos(pos / base^(2i/dim))``: the
    same frequencies as RoPE (:func:`rope_inv_freq`), added to the embeddings instead of rotating q and k.
    """
    _check_length("num_positions", num_positions)
    _check_head_dim(dim, name="dim")
    angles = torch.arange(num_positions, dtype=torch.float32)[:, None] * rope_inv_freq(
        dim, base
    )  # (P, dim/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (P, dim): sin, cos, sin, cos, ...
