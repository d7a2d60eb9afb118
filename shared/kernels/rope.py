"""Fused RoPE / M-RoPE on q and k in one Triton kernel launch, forward and backward.

Three entry points, each equal to a reference in :mod:`shared` (which it falls back to without Triton):

- :func:`rope_qk` ``(q, k, cos, sin)``: the tables of :func:`shared.rope.rope_cos_sin` or
  :func:`shared.mrope.mrope_cos_sin` (or ``transformers``' rotary embeddings) applied to ``q`` and ``k``;
  equal to ``shared.rope.apply_rope`` on each.
- :func:`rope_qk_from_positions` ``(q, k, positions, inv_freq)``: 1D RoPE with the angles computed in the
  kernel (the cos/sin tables are never written to memory); equal to ``rope_cos_sin`` + ``apply_rope``.
- :func:`mrope_qk` ``(q, k, position_ids, inv_freq, mrope_section=...)``: M-RoPE of Qwen2-VL (``"sectioned"``)
  or Qwen3-VL (``"interleaved"``) from the ``(3, batch, seq)`` ids, angles in the kernel; equal to
  ``mrope_cos_sin`` + ``apply_rope``.

Shapes: ``q`` is ``(batch, heads, seq, head_dim)``, ``k`` is ``(batch, kv_heads, seq, head_dim)`` with
``kv_heads`` dividing ``heads`` (GQA, MQA); same dtype, same device. ``head_dim`` is even, at most
:data:`MAX_HEAD_DIM` = 256, any even number (80 for the Qwen2-VL ViT, 128 for its language model). Any strides:
the kernel reads and writes through them (a ``(batch, seq, heads, head_dim)`` buffer seen through
``.transpose(1, 2)``, as the attention layers of ``transformers`` make it, costs no copy); the outputs have the
layout of the inputs (``torch.empty_like``).

The tables of :func:`rope_qk`: ``(seq, head_dim)``, ``(batch or 1, seq, head_dim)`` (what ``rope_cos_sin`` and
``mrope_cos_sin`` return for ``(batch, seq)`` and ``(3, batch, seq)`` ids; read as ``cos[:, None]``, one table
per sequence for all heads, as ``transformers``' ``apply_rotary_pos_emb`` does with ``unsqueeze_dim=1``) or
``(batch or 1, 1, seq, head_dim)``. ``rope_qk(q, k, cos, sin)`` then equals
``apply_rope(q, c, s), apply_rope(k, c, s)`` with ``c, s = cos[:, None], sin[:, None]`` for 3D tables and
``cos, sin`` otherwise. float16, bfloat16 or float32 tables (float64: the reference), any strides.

Precision: the kernel rounds where the reference rounds. ``apply_rope`` computes ``x * cos + turn(x) * sin``
in ``x``'s dtype, so the kernel casts cos and sin to that dtype, rounds each product to it, then rounds the
sum (in float32 registers); a product of two bf16/fp16 numbers is exact in float32, so this is the
reference's arithmetic bit for bit, forward and backward (on a GPU the compiler may fuse a float32 multiply
and add into one FMA: an ulp at most). The in-kernel angles are ``float32(position) * float32(inv_freq)`` as
in ``rope_cos_sin``; their cos and sin (libdevice's on a GPU, NumPy's under the interpreter) may differ from
PyTorch's by an ulp. ``tests/test_kernels_rope.py`` states the tolerances measured per dtype.

Gradients: the rotation is linear in ``q`` and ``k``, and its backward is its transpose, the rotation by
``-theta`` (same kernel, sines negated and swapped between the two dims of a pair). ``q`` and ``k`` get
gradients; ``cos``, ``sin``, ``positions``, ``inv_freq`` get none (``None``: tables and frequencies are not
learned in these models).

Where it runs (:func:`shared.kernels.backend`): the Triton kernel on CUDA, the same kernel under Triton's
interpreter on CPU with ``TRITON_INTERPRET=1``, the reference otherwise. float64 ``q``/``k`` or tables always
take the reference (the kernel computes in float32). Every input is checked (type, dtype, shape, device,
numbers) before any work, on every path; the kernel path does not scan tensor values (that would be a
device sync and an extra pass): a NaN in ``q`` gives NaN where it is, and non-finite tables or real
positions, which the reference refuses, go through.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shared.kernels import HAS_TRITON, backend
from shared.mrope import mrope_axis_of_frequency, mrope_cos_sin
from shared.rope import apply_rope, rope_cos_sin
from shared.utils import InputTypeError, check_choice, check_number, check_same_device, check_tensor

if HAS_TRITON:
    import triton
    import triton.language as tl

    jit = triton.jit
else:  # a reader's laptop without Triton: the kernels below are defined but never launched

    def jit(fn):
        return fn


__all__ = ["MAX_HEAD_DIM", "rope_qk", "rope_qk_from_positions", "mrope_qk"]

#: The largest head_dim the kernel takes (one program holds a few heads of it in registers).
MAX_HEAD_DIM = 256


# ----------------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------------


@jit
def _round_to(v, dtype: tl.constexpr):
    """Round float32 ``v`` to ``dtype`` (round to nearest even) and return it as float32 again.

    For bfloat16 the rounding is done on the bits: Triton's interpreter (3.9) truncates float32 -> bfloat16
    casts where the GPU rounds to nearest even, and this gives the GPU's result on both. Adding 0x7FFF plus
    the lowest kept bit, then clearing the 16 dropped bits, is round-to-nearest-even on the bit pattern.
    """
    if dtype == tl.bfloat16:
        bits = v.to(tl.int32, bitcast=True).to(tl.int64)  # int64: the addition below cannot overflow
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.int32).to(tl.float32, bitcast=True)
    else:
        return v.to(dtype).to(tl.float32)


@jit
def _rotate_heads(
    x_ptr,
    out_ptr,
    b,
    s,
    n_heads,
    stride_xb,
    stride_xh,
    stride_xs,
    stride_xd,
    stride_ob,
    stride_oh,
    stride_os,
    stride_od,
    dim_a,
    dim_b,
    pair_ok,
    cos_a,
    sin_a,
    cos_b,
    sin_b,
    BLOCK_H: tl.constexpr,
):
    """Rotate every head of ``x[b, :, s, :]`` into ``out[b, :, s, :]``, ``BLOCK_H`` heads at a time.

    Pair ``j`` is the two dims ``dim_a[j]``, ``dim_b[j]`` (vectors of length BLOCK_HALF, masked by ``pair_ok``).
    With ``turn(x)[a] = -x[b]`` and ``turn(x)[b] = x[a]``, ``x * cos + turn(x) * sin`` is, per pair:
    ``out[a] = x[a] cos[a] - x[b] sin[a]`` and ``out[b] = x[b] cos[b] + x[a] sin[b]``.
    The cos/sin vectors arrive already rounded to x's dtype (as ``cos.to(x.dtype)`` in the reference).
    """
    dtype = out_ptr.dtype.element_ty
    heads = tl.arange(0, BLOCK_H)  # (BLOCK_H,)
    x_a = x_ptr + b * stride_xb + s * stride_xs + dim_a * stride_xd  # (BLOCK_HALF,): &x[b, 0, s, dim_a]
    x_b = x_ptr + b * stride_xb + s * stride_xs + dim_b * stride_xd
    out_a = out_ptr + b * stride_ob + s * stride_os + dim_a * stride_od
    out_b = out_ptr + b * stride_ob + s * stride_os + dim_b * stride_od
    # Loop over blocks of heads; a tile is (BLOCK_H heads) x (BLOCK_HALF pairs), masked on both axes:
    # heads past n_heads (the last block) and pairs past head_dim / 2 (BLOCK_HALF is a power of two).
    for h0 in range(0, n_heads, BLOCK_H):
        h = (h0 + heads)[:, None]  # (BLOCK_H, 1)
        mask = (h < n_heads) & pair_ok[None, :]  # (BLOCK_H, BLOCK_HALF)
        xa = tl.load(x_a[None, :] + h * stride_xh, mask=mask, other=0.0).to(tl.float32)
        xb = tl.load(x_b[None, :] + h * stride_xh, mask=mask, other=0.0).to(tl.float32)
        # Each product rounded to x's dtype, then the sum: the reference's two multiplies and one add.
        ya = _round_to(_round_to(xa * cos_a[None, :], dtype) - _round_to(xb * sin_a[None, :], dtype), dtype)
        yb = _round_to(_round_to(xb * cos_b[None, :], dtype) + _round_to(xa * sin_b[None, :], dtype), dtype)
        tl.store(out_a[None, :] + h * stride_oh, ya.to(dtype), mask=mask)
        tl.store(out_b[None, :] + h * stride_oh, yb.to(dtype), mask=mask)


@jit
def _pair_dims(half, INTERLEAVED: tl.constexpr, BLOCK_HALF: tl.constexpr):
    """The two dims of each pair ``j``: ``(j, j + half)`` for rotate-half, ``(2j, 2j + 1)`` for interleaved."""
    j = tl.arange(0, BLOCK_HALF)
    if INTERLEAVED:
        dim_a = 2 * j
        dim_b = 2 * j + 1
    else:
        dim_a = j
        dim_b = j + half
    return j, dim_a, dim_b


@jit
def _rope_tables_kernel(
    q_ptr,
    k_ptr,
    q_out_ptr,
    k_out_ptr,
    cos_ptr,
    sin_ptr,
    seq_len,
    n_q_heads,
    n_k_heads,
    half,
    stride_qb,
    stride_qh,
    stride_qs,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_kd,
    stride_oqb,
    stride_oqh,
    stride_oqs,
    stride_oqd,
    stride_okb,
    stride_okh,
    stride_oks,
    stride_okd,
    stride_tb,
    stride_ts,
    stride_td,
    INTERLEAVED: tl.constexpr,
    BACKWARD: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    """Grid ``(batch * seq,)``: program ``pid`` rotates token ``(b, s)`` of every q head and every k head.

    It loads the token's cos/sin row once (``BLOCK_HALF`` pairs, masked past ``head_dim / 2``) and uses it
    for all ``heads + kv_heads`` heads: that reuse is the point of rotating q and k in one launch.
    ``stride_tb`` is 0 when one table serves the whole batch.
    """
    pid = tl.program_id(0)
    b = (pid // seq_len).to(tl.int64)  # int64: offsets of large tensors overflow int32
    s = (pid % seq_len).to(tl.int64)
    j, dim_a, dim_b = _pair_dims(half, INTERLEAVED, BLOCK_HALF)
    pair_ok = j < half
    dtype = q_out_ptr.dtype.element_ty
    cos_row = cos_ptr + b * stride_tb + s * stride_ts
    sin_row = sin_ptr + b * stride_tb + s * stride_ts
    # cos.to(x.dtype) as in the reference (tables are float16/bfloat16/float32: exact in float32).
    cos_a = _round_to(tl.load(cos_row + dim_a * stride_td, mask=pair_ok, other=0.0).to(tl.float32), dtype)
    cos_b = _round_to(tl.load(cos_row + dim_b * stride_td, mask=pair_ok, other=0.0).to(tl.float32), dtype)
    sin_a = _round_to(tl.load(sin_row + dim_a * stride_td, mask=pair_ok, other=0.0).to(tl.float32), dtype)
    sin_b = _round_to(tl.load(sin_row + dim_b * stride_td, mask=pair_ok, other=0.0).to(tl.float32), dtype)
    if BACKWARD:
        # The transpose of [[cos_a, -sin_a], [sin_b, cos_b]] is [[cos_a, sin_b], [-sin_a, cos_b]]: the
        # forward formula with sin_a -> -sin_b and sin_b -> -sin_a (the rotation by -theta when the two
        # dims of a pair share one angle, as every RoPE table does).
        sin_a_fwd = sin_a
        sin_a = -sin_b
        sin_b = -sin_a_fwd
    _rotate_heads(
        q_ptr, q_out_ptr, b, s, n_q_heads,
        stride_qb, stride_qh, stride_qs, stride_qd, stride_oqb, stride_oqh, stride_oqs, stride_oqd,
        dim_a, dim_b, pair_ok, cos_a, sin_a, cos_b, sin_b, BLOCK_H,
    )  # fmt: skip
    _rotate_heads(
        k_ptr, k_out_ptr, b, s, n_k_heads,
        stride_kb, stride_kh, stride_ks, stride_kd, stride_okb, stride_okh, stride_oks, stride_okd,
        dim_a, dim_b, pair_ok, cos_a, sin_a, cos_b, sin_b, BLOCK_H,
    )  # fmt: skip


@jit
def _rope_positions_kernel(
    q_ptr,
    k_ptr,
    q_out_ptr,
    k_out_ptr,
    pos_ptr,
    inv_freq_ptr,
    seq_len,
    n_q_heads,
    n_k_heads,
    half,
    scale,
    section_t,
    section_h,
    section_w,
    stride_qb,
    stride_qh,
    stride_qs,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_kd,
    stride_oqb,
    stride_oqh,
    stride_oqs,
    stride_oqd,
    stride_okb,
    stride_okh,
    stride_oks,
    stride_okd,
    stride_pa,
    stride_pb,
    stride_ps,
    MROPE: tl.constexpr,
    INTERLEAVED: tl.constexpr,
    BACKWARD: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    """Grid ``(batch * seq,)``, as :func:`_rope_tables_kernel`, but the token's angles come from its ids.

    ``MROPE``: 0 = 1D RoPE (one id per token), 1 = Qwen2-VL sectioned, 2 = Qwen3-VL interleaved (three ids
    per token, ``stride_pa`` apart; frequency ``j`` takes the id of the axis the layout assigns it).
    ``stride_pb`` is 0 when one row of ids serves the whole batch.
    """
    pid = tl.program_id(0)
    b = (pid // seq_len).to(tl.int64)
    s = (pid % seq_len).to(tl.int64)
    j, dim_a, dim_b = _pair_dims(half, INTERLEAVED, BLOCK_HALF)
    pair_ok = j < half
    dtype = q_out_ptr.dtype.element_ty
    # Which id (0 temporal, 1 height, 2 width) drives frequency j: shared.mrope.mrope_axis_of_frequency.
    if MROPE == 1:  # sectioned: the first s_t frequencies, then s_h, then s_w
        axis = tl.where(j < section_t, 0, tl.where(j < section_t + section_h, 1, 2))
    elif MROPE == 2:  # interleaved: t, h, w, t, h, w, ... while h and w last, then t
        axis = tl.where(
            (j % 3 == 1) & (j < 3 * section_h), 1, tl.where((j % 3 == 2) & (j < 3 * section_w), 2, 0)
        )
    else:  # 1D RoPE: one id
        axis = j * 0
    pos = tl.load(pos_ptr + axis * stride_pa + b * stride_pb + s * stride_ps, mask=pair_ok, other=0)
    inv_freq = tl.load(inv_freq_ptr + j, mask=pair_ok, other=0.0).to(tl.float32)
    angle = pos.to(tl.float32) * inv_freq  # float32, as positions.float() * inv_freq.float() in rope_cos_sin
    # tl.cos / tl.sin are libdevice's cosf / sinf on NVIDIA GPUs (accurate for large angles too), NumPy's
    # float32 cos / sin under the interpreter.
    cos = _round_to(tl.cos(angle) * scale, dtype)  # the reference's float32 table, cast to x's dtype
    sin = _round_to(tl.sin(angle) * scale, dtype)
    if BACKWARD:  # both dims of a pair share one angle: the transpose is the rotation by -theta
        sin = -sin
    _rotate_heads(
        q_ptr, q_out_ptr, b, s, n_q_heads,
        stride_qb, stride_qh, stride_qs, stride_qd, stride_oqb, stride_oqh, stride_oqs, stride_oqd,
        dim_a, dim_b, pair_ok, cos, sin, cos, sin, BLOCK_H,
    )  # fmt: skip
    _rotate_heads(
        k_ptr, k_out_ptr, b, s, n_k_heads,
        stride_kb, stride_kh, stride_ks, stride_kd, stride_okb, stride_okh, stride_oks, stride_okd,
        dim_a, dim_b, pair_ok, cos, sin, cos, sin, BLOCK_H,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# Launchers (tensors already checked) and autograd
# ----------------------------------------------------------------------------------------------------------


def _next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _blocks(q: torch.Tensor, k: torch.Tensor) -> dict:
    """Block sizes: every pair of the head (padded to a power of two), up to 16 heads per tile."""
    block_half = _next_power_of_2(q.shape[-1] // 2)
    block_h = min(16, _next_power_of_2(max(q.shape[1], k.shape[1])))
    return {"BLOCK_H": block_h, "BLOCK_HALF": block_half, "num_warps": 4}


def _qk_args(q: torch.Tensor, k: torch.Tensor, q_out: torch.Tensor, k_out: torch.Tensor) -> tuple:
    return (*q.stride(), *k.stride(), *q_out.stride(), *k_out.stride())


def _launch_tables(q, k, cos3, sin3, interleaved: bool, backward: bool):
    """Rotate q, k by the ``(1 or batch, seq, head_dim)`` tables; ``backward``: by their transpose."""
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    batch, n_q_heads, seq_len, head_dim = q.shape
    if cos3.stride() != sin3.stride():  # the kernel takes one set of table strides
        cos3, sin3 = cos3.contiguous(), sin3.contiguous()
    stride_tb = cos3.stride(0) if cos3.shape[0] > 1 else 0  # one table for the whole batch
    _rope_tables_kernel[(batch * seq_len,)](
        q, k, q_out, k_out, cos3, sin3,
        seq_len, n_q_heads, k.shape[1], head_dim // 2,
        *_qk_args(q, k, q_out, k_out),
        stride_tb, cos3.stride(1), cos3.stride(2),
        INTERLEAVED=interleaved, BACKWARD=backward, **_blocks(q, k),
    )  # fmt: skip
    return q_out, k_out


def _launch_positions(
    q, k, pos3, inv_freq, scale: float, mrope: int, section, interleaved: bool, backward: bool
):
    """Rotate q, k by the angles of ids ``pos3`` ``(axes, 1 or batch, seq)``; ``backward``: by minus them."""
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    batch, n_q_heads, seq_len, head_dim = q.shape
    stride_pb = pos3.stride(1) if pos3.shape[1] > 1 else 0  # one row of ids for the whole batch
    _rope_positions_kernel[(batch * seq_len,)](
        q, k, q_out, k_out, pos3, inv_freq,
        seq_len, n_q_heads, k.shape[1], head_dim // 2, scale, *section,
        *_qk_args(q, k, q_out, k_out),
        pos3.stride(0), stride_pb, pos3.stride(2),
        MROPE=mrope, INTERLEAVED=interleaved, BACKWARD=backward, **_blocks(q, k),
    )  # fmt: skip
    return q_out, k_out


class _RopeTables(torch.autograd.Function):
    """Forward: rotate by the tables. Backward: rotate the gradients by the transpose (no grad for tables)."""

    @staticmethod
    def forward(ctx, q, k, cos3, sin3, interleaved):
        ctx.save_for_backward(cos3, sin3)
        ctx.interleaved = interleaved
        return _launch_tables(q, k, cos3, sin3, interleaved, backward=False)

    @staticmethod
    def backward(ctx, grad_q, grad_k):
        cos3, sin3 = ctx.saved_tensors
        dq, dk = _launch_tables(grad_q, grad_k, cos3, sin3, ctx.interleaved, backward=True)
        return dq, dk, None, None, None


class _RopePositions(torch.autograd.Function):
    """Forward: rotate by the ids' angles. Backward: by minus them (no grad for ids or frequencies)."""

    @staticmethod
    def forward(ctx, q, k, pos3, inv_freq, scale, mrope, section, interleaved):
        ctx.save_for_backward(pos3, inv_freq)
        ctx.options = (scale, mrope, section, interleaved)
        return _launch_positions(q, k, pos3, inv_freq, scale, mrope, section, interleaved, backward=False)

    @staticmethod
    def backward(ctx, grad_q, grad_k):
        pos3, inv_freq = ctx.saved_tensors
        dq, dk = _launch_positions(grad_q, grad_k, pos3, inv_freq, *ctx.options, backward=True)
        return dq, dk, None, None, None, None, None, None


# ----------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------


def _check_qk(q: object, k: object) -> tuple[int, int]:
    """Check q ``(batch, heads, seq, head_dim)`` and k ``(batch, kv_heads, seq, head_dim)``; return (batch, seq)."""
    check_tensor("q", q, ndim=4, dtype_kind="float", nonempty=True)
    check_tensor("k", k, ndim=4, dtype_kind="float", nonempty=True)
    if q.dtype != k.dtype:
        raise InputTypeError(f"q and k must have one dtype, got q {q.dtype} and k {k.dtype}")
    batch, heads, seq, head_dim = q.shape
    if head_dim % 2 or head_dim > MAX_HEAD_DIM:
        raise ValueError(
            f"q's last dim (head_dim) must be even and at most {MAX_HEAD_DIM} (RoPE rotates pairs of dims), "
            f"got {head_dim}"
        )
    if (k.shape[0], k.shape[2], k.shape[3]) != (batch, seq, head_dim):
        raise ValueError(
            f"k must have shape (batch, kv_heads, seq, head_dim) = ({batch}, kv_heads, {seq}, {head_dim}) "
            f"to match q of shape {tuple(q.shape)}, got {tuple(k.shape)}"
        )
    if heads % k.shape[1]:
        raise ValueError(f"k's kv_heads {k.shape[1]} must divide q's heads {heads} (grouped-query attention)")
    return batch, seq


def _check_inv_freq(inv_freq: object, head_dim: int) -> None:
    check_tensor("inv_freq", inv_freq, ndim=1, dtype_kind="float", nonempty=True)
    if inv_freq.shape[0] != head_dim // 2:
        raise ValueError(
            f"inv_freq must have shape (head_dim/2,) = ({head_dim // 2},) for q's head_dim {head_dim}, "
            f"got {tuple(inv_freq.shape)}"
        )


def _check_batch_rows(name: str, rows: int, batch: int, shape: torch.Size) -> None:
    if rows not in (1, batch):
        raise ValueError(
            f"{name} of shape {tuple(shape)} must hold 1 or batch = {batch} sequences, got {rows}"
        )


def _tables_3d(cos: torch.Tensor, sin: torch.Tensor, batch: int, seq: int, head_dim: int):
    """Check cos/sin and view them as ``(1 or batch, seq, head_dim)`` (no copy)."""
    check_tensor("cos", cos, dtype_kind="float", nonempty=True)
    check_tensor("sin", sin, dtype_kind="float", nonempty=True)
    if cos.shape != sin.shape:
        raise ValueError(
            f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )
    shape = cos.shape
    if cos.ndim == 4 and shape[1] != 1:
        raise ValueError(
            f"4D cos/sin must have shape (batch or 1, 1, seq, head_dim): one table for all heads, got {tuple(shape)}"
        )
    if cos.ndim not in (2, 3, 4) or shape[-2:] != (seq, head_dim):
        raise ValueError(
            f"cos/sin must have shape (seq, head_dim), (batch or 1, seq, head_dim) or "
            f"(batch or 1, 1, seq, head_dim) with seq = {seq}, head_dim = {head_dim}, got {tuple(shape)}"
        )
    if cos.ndim == 2:
        return cos[None], sin[None]
    _check_batch_rows("cos/sin", shape[0], batch, shape)
    if cos.ndim == 4:
        return cos[:, 0], sin[:, 0]
    return cos, sin


def _positions_3d(positions: object, batch: int, seq: int) -> torch.Tensor:
    """Check 1D RoPE positions ``(seq,)`` or ``(batch or 1, seq)``; view as ``(1, 1 or batch, seq)``."""
    check_tensor("positions", positions, ndim=(1, 2), nonempty=True)
    if positions.dtype == torch.bool or positions.is_complex():
        raise InputTypeError(f"positions must be integer or real, got {positions.dtype}")
    if positions.shape[-1] != seq:
        raise ValueError(
            f"positions must hold seq = {seq} ids on its last dim, got shape {tuple(positions.shape)}"
        )
    if positions.ndim == 1:
        return positions[None, None]
    _check_batch_rows("positions", positions.shape[0], batch, positions.shape)
    return positions[None]


def _position_ids_3d(position_ids: object, batch: int, seq: int) -> torch.Tensor:
    """Check M-RoPE ids ``(3, seq)`` or ``(3, batch or 1, seq)``; view as ``(3, 1 or batch, seq)``."""
    check_tensor("position_ids", position_ids, ndim=(2, 3), dtype_kind="int", nonempty=True)
    shape = tuple(position_ids.shape)
    if shape[0] != 3 or shape[-1] != seq:
        raise ValueError(
            f"position_ids must have shape (3, seq) or (3, batch, seq) with seq = {seq} (temporal, height, "
            f"width ids), got {shape}"
        )
    if position_ids.ndim == 2:
        return position_ids[:, None]
    _check_batch_rows("position_ids", shape[1], batch, position_ids.shape)
    return position_ids


def _use_kernel(values: tuple[torch.Tensor, ...], *others: torch.Tensor) -> bool:
    """Run the Triton kernel (compiled or interpreted) on these tensors (True) or the reference (False)?

    A float64 tensor among ``values`` (q, k, cos, sin) takes the reference: the kernel computes in float32.
    """
    if any(t.dtype == torch.float64 for t in values):
        return False
    return backend(*values, *others) in ("triton", "interpreter")


# ----------------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------------


def rope_qk(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, layout: str = "rotate_half"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate ``q`` ``(batch, heads, seq, head_dim)`` and ``k`` ``(batch, kv_heads, seq, head_dim)`` by cos/sin.

    ``cos``/``sin``: ``(seq, head_dim)``, ``(batch or 1, seq, head_dim)`` (as ``rope_cos_sin`` and
    ``mrope_cos_sin`` return them, or ``transformers``' rotary embeddings) or ``(batch or 1, 1, seq, head_dim)``,
    in ``layout`` ``"rotate_half"`` or ``"interleaved"`` (:mod:`shared.rope`). Returns ``(q_rot, k_rot)`` in
    q's dtype, equal to ``shared.rope.apply_rope`` on each (tables of 3 dims read as ``cos[:, None]``).
    Differentiable in q and k.
    """
    batch, seq = _check_qk(q, k)
    check_choice("layout", layout, ("rotate_half", "interleaved"))
    cos3, sin3 = _tables_3d(cos, sin, batch, seq, q.shape[-1])
    check_same_device(q=q, k=k, cos=cos, sin=sin)
    if not _use_kernel((q, k, cos, sin)):
        cos4, sin4 = cos3[:, None], sin3[:, None]  # (1 or batch, 1, seq, head_dim): all heads
        return apply_rope(q, cos4, sin4, layout=layout), apply_rope(k, cos4, sin4, layout=layout)
    return _RopeTables.apply(q, k, cos3, sin3, layout == "interleaved")


def rope_qk_from_positions(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    *,
    layout: str = "rotate_half",
    attention_scaling: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """1D RoPE of ``q`` and ``k`` at ``positions`` ``(seq,)`` or ``(batch or 1, seq)``, angles in the kernel.

    ``inv_freq`` ``(head_dim/2,)`` float (:func:`shared.rope.rope_init`); ``positions`` integer or real;
    ``attention_scaling`` multiplies cos and sin (YaRN's attention factor). Equal to
    ``rope_qk(q, k, *rope_cos_sin(positions, inv_freq, layout=layout, scale=attention_scaling), layout=layout)``
    without the tables in memory. Differentiable in q and k.
    """
    batch, seq = _check_qk(q, k)
    check_choice("layout", layout, ("rotate_half", "interleaved"))
    pos3 = _positions_3d(positions, batch, seq)
    _check_inv_freq(inv_freq, q.shape[-1])
    scale = check_number("attention_scaling", attention_scaling, gt=0)
    check_same_device(q=q, k=k, positions=positions, inv_freq=inv_freq)
    if not _use_kernel((q, k), positions, inv_freq):
        cos, sin = rope_cos_sin(positions, inv_freq, layout=layout, scale=scale)
        return rope_qk(q, k, cos, sin, layout=layout)
    inv_freq = inv_freq.contiguous()  # the kernel reads it with unit stride
    return _RopePositions.apply(q, k, pos3, inv_freq, scale, 0, (0, 0, 0), layout == "interleaved")


def mrope_qk(
    q: torch.Tensor,
    k: torch.Tensor,
    position_ids: torch.Tensor,
    inv_freq: torch.Tensor,
    *,
    mrope_section: Sequence[int],
    layout: str = "sectioned",
    attention_scaling: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE of ``q`` and ``k`` from ``position_ids`` ``(3, batch or 1, seq)`` (or ``(3, seq)``), angles in the kernel.

    ``mrope_section`` ``[s_t, s_h, s_w]`` sums to ``head_dim / 2``; ``layout`` is how frequencies are assigned to
    the three axes (:func:`shared.mrope.mrope_axis_of_frequency`): ``"sectioned"`` (Qwen2-VL, Qwen2.5-VL) or
    ``"interleaved"`` (Qwen3-VL). The memory layout of q and k is rotate-half, as in those models.
    ``inv_freq`` ``(head_dim/2,)`` float; ``attention_scaling`` multiplies cos and sin. Equal to
    ``rope_qk(q, k, *mrope_cos_sin(position_ids, inv_freq, mrope_section, layout=layout, scale=attention_scaling))``
    without the tables in memory. Differentiable in q and k.
    """
    batch, seq = _check_qk(q, k)
    pos3 = _position_ids_3d(position_ids, batch, seq)
    _check_inv_freq(inv_freq, q.shape[-1])
    axis = mrope_axis_of_frequency(mrope_section, layout)  # checks mrope_section and layout
    if axis.numel() != q.shape[-1] // 2:
        raise ValueError(
            f"mrope_section {list(mrope_section)} sums to {axis.numel()} but must sum to head_dim/2 = "
            f"{q.shape[-1] // 2}"
        )
    scale = check_number("attention_scaling", attention_scaling, gt=0)
    check_same_device(q=q, k=k, position_ids=position_ids, inv_freq=inv_freq)
    if not _use_kernel((q, k), position_ids, inv_freq):
        cos, sin = mrope_cos_sin(position_ids, inv_freq, mrope_section, layout=layout, scale=scale)
        return rope_qk(q, k, cos, sin)
    section = tuple(int(s) for s in mrope_section)
    mrope = 1 if layout == "sectioned" else 2
    return _RopePositions.apply(q, k, pos3, inv_freq.contiguous(), scale, mrope, section, False)
