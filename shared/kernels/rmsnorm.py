"""RMSNorm as Triton kernels: float32 statistics, forward and backward, equal to :func:`shared.norms.rms_norm`.

``y = weight * cast(x / sqrt(mean(x^2) + eps))``: the mean square and ``1 / rms`` (``rstd``) in float32, the
normalised row cast back to ``x``'s dtype *before* the weight multiply, the output in the promotion of
``weight``'s and ``x``'s dtypes, exactly as ``transformers``' ``LlamaRMSNorm`` and the reference. The kernels
round where the reference rounds (the cast back, the product with the weight), so bf16/fp16 outputs are
the reference's up to the float32 order of summation of ``mean(x^2)``.

Forward: one program per row (grid ``(rows,)``); the whole row sits in one block of ``BLOCK`` = the next power
of two of ``dim`` (masked past ``dim``), so ``dim`` is at most :data:`MAX_DIM` = 65536. It saves ``rstd``
``(rows,)`` float32 for the backward.

Backward, with ``g = dL/dy`` and ``n = x * rstd`` (float32): ``dL/dn = g * weight`` (rounded to ``y``'s then
``x``'s dtype, as autograd casts the gradient at the cast), ``dx = rstd * (dL/dn - n * mean(dL/dn * n))``,
``dweight = sum over rows of g * cast(n)``. For ``dweight`` each of ``P`` programs (a few per GPU multiprocessor) sums a contiguous chunk
of rows into its own float32 row of a ``(P, dim)`` buffer, and one ``torch.sum`` over the ``P`` rows adds the
chunks: no atomics, the same result on every run.

Where it runs (:func:`shared.kernels.backend`): the Triton kernel on CUDA, the same kernel under Triton's
interpreter on CPU with ``TRITON_INTERPRET=1``, the reference otherwise. float64 ``x`` or ``weight`` always
takes the reference (whose statistics are then float64). ``x`` is read as ``(rows, dim)`` through its row
stride (a view when ``x.reshape(-1, dim)`` is one with unit column stride, else a copy); the output is
contiguous. Checks, on every path: dtypes, shapes, device, ``eps`` (finite, ``>= 0``). The kernel path does
not scan ``x``'s values (a device sync and an extra pass; the reference refuses a non-finite ``x``): a NaN in
``x`` gives a NaN row. ``eps = 0`` with an all-zero row is refused as in the reference (one sync, only when
``eps = 0``).
"""

from __future__ import annotations

import torch

from shared.kernels import HAS_TRITON, backend
from shared.kernels.rope import _round_to  # round float32 to a dtype, nearest even, on GPU and interpreter
from shared.norms import rms_norm as rms_norm_reference
from shared.utils import check_number, check_same_device, check_tensor

if HAS_TRITON:
    import triton
    import triton.language as tl

    jit = triton.jit
else:  # a reader's laptop without Triton: the kernels below are defined but never launched

    def jit(fn):
        return fn


__all__ = ["MAX_DIM", "rms_norm"]

#: The largest last dim the kernels take: one row is one block of registers.
MAX_DIM = 65536


# ----------------------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------------------


@jit
def _rms_norm_forward_kernel(
    x_ptr,
    w_ptr,
    y_ptr,
    rstd_ptr,
    n_cols,
    stride_x,
    stride_y,
    eps,
    HAS_WEIGHT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Grid ``(rows,)``: program ``row`` normalises ``x[row, :]``; columns past ``n_cols`` are masked off."""
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride overflows int32 on large inputs
    cols = tl.arange(0, BLOCK)
    col_ok = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=col_ok, other=0.0).to(tl.float32)
    # Masked columns load as 0 and add nothing to the sum; divide by the true n_cols.
    mean_square = tl.sum(x * x, axis=0) / n_cols
    rstd = tl.rsqrt(mean_square + eps)
    tl.store(rstd_ptr + row, rstd)
    # Cast back to x's dtype before the weight multiply (LlamaRMSNorm), then multiply in the output's dtype.
    y = _round_to(x * rstd, x_ptr.dtype.element_ty)
    if HAS_WEIGHT:
        w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        y = _round_to(y * w, y_ptr.dtype.element_ty)
    tl.store(y_ptr + row * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=col_ok)


@jit
def _rms_norm_backward_kernel(
    x_ptr,
    w_ptr,
    dy_ptr,
    rstd_ptr,
    dx_ptr,
    dw_partial_ptr,
    n_rows,
    n_cols,
    rows_per_program,
    stride_x,
    stride_dy,
    stride_dx,
    HAS_WEIGHT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Grid ``(P,)``: program ``pid`` does rows ``pid * rows_per_program ...`` (``+ rows_per_program - 1``).

    Rows past ``n_rows`` (the last program's chunk may be short) are skipped; columns past ``n_cols`` are
    masked off (they load as 0 and store nothing). The program's partial sum of the weight gradient goes
    to row ``pid`` of ``dw_partial`` ``(P, n_cols)`` float32.
    """
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    col_ok = cols < n_cols
    x_dtype = x_ptr.dtype.element_ty
    y_dtype = dy_ptr.dtype.element_ty  # the output's dtype, which its gradient has
    if HAS_WEIGHT:
        w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        dw = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(rows_per_program):
        row = (pid * rows_per_program + i).to(tl.int64)
        if row < n_rows:  # the last program's chunk may be short
            x = tl.load(x_ptr + row * stride_x + cols, mask=col_ok, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + row * stride_dy + cols, mask=col_ok, other=0.0).to(tl.float32)
            rstd = tl.load(rstd_ptr + row)
            n = x * rstd  # the normalised row, float32 (before the cast back)
            if HAS_WEIGHT:
                # y = weight * cast(n): the gradient at cast(n) is dy * weight in y's dtype, then x's dtype.
                dn = _round_to(_round_to(dy * w, y_dtype), x_dtype)
                dw += _round_to(dy * _round_to(n, x_dtype), y_dtype)  # dy * cast(n), in y's dtype
            else:
                dn = dy
            # d/dx of x * rsqrt(mean(x^2) + eps): rstd * (dn - n * mean(dn * n)).
            dx = rstd * (dn - n * (tl.sum(dn * n, axis=0) / n_cols))
            tl.store(dx_ptr + row * stride_dx + cols, _round_to(dx, x_dtype).to(x_dtype), mask=col_ok)
    if HAS_WEIGHT:
        tl.store(dw_partial_ptr + pid * n_cols + cols, dw, mask=col_ok)


# ----------------------------------------------------------------------------------------------------------
# Launchers and autograd
# ----------------------------------------------------------------------------------------------------------


def _next_power_of_2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _num_warps(block: int) -> int:
    """More warps for longer rows, so each thread holds a handful of columns (4 .. 32 warps)."""
    if block >= 32768:
        return 32
    if block >= 8192:
        return 16
    if block >= 2048:
        return 8
    return 4


def _num_programs(x2: torch.Tensor) -> int:
    """Programs of the backward: 4 per multiprocessor on a GPU (enough to fill it), 4 under the interpreter."""
    if x2.device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(x2.device).multi_processor_count
    return 4


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``(..., dim)`` as ``(rows, dim)`` with unit column stride (a view when possible, else a copy)."""
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


class _RMSNorm(torch.autograd.Function):
    """Forward saves (x, weight, rstd); backward returns dx, dweight (None for eps)."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        x2 = _rows(x)
        n_rows, n_cols = x2.shape
        out_dtype = x.dtype if weight is None else torch.promote_types(weight.dtype, x.dtype)
        y = torch.empty((n_rows, n_cols), dtype=out_dtype, device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        w = weight.contiguous() if weight is not None else x2  # x2: a placeholder pointer, never read
        block = _next_power_of_2(n_cols)
        _rms_norm_forward_kernel[(n_rows,)](
            x2, w, y, rstd, n_cols, x2.stride(0), y.stride(0), eps,
            HAS_WEIGHT=weight is not None, BLOCK=block, num_warps=_num_warps(block),
        )  # fmt: skip
        if eps == 0 and not bool(
            torch.isfinite(rstd).all()
        ):  # one sync, only when eps = 0 (as the reference)
            raise ValueError("eps=0 with a row of zero variance would divide 0 by 0 (NaN); use eps > 0")
        ctx.save_for_backward(x2, weight, rstd)
        ctx.x_shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, rstd = ctx.saved_tensors
        n_rows, n_cols = x2.shape
        dy2 = _rows(dy)
        dx = torch.empty_like(x2, memory_format=torch.contiguous_format)
        programs = min(n_rows, _num_programs(x2))
        rows_per_program = -(-n_rows // programs)  # ceil
        programs = -(-n_rows // rows_per_program)  # no program without rows
        has_weight = weight is not None
        dw_partial = torch.empty(
            (programs, n_cols) if has_weight else (1,), dtype=torch.float32, device=x2.device
        )
        block = _next_power_of_2(n_cols)
        _rms_norm_backward_kernel[(programs,)](
            x2, weight.contiguous() if has_weight else x2, dy2, rstd, dx, dw_partial,
            n_rows, n_cols, rows_per_program, x2.stride(0), dy2.stride(0), dx.stride(0),
            HAS_WEIGHT=has_weight, BLOCK=block, num_warps=_num_warps(block),
        )  # fmt: skip
        dweight = None
        if has_weight:
            # The reference's weight gradient is a sum in y's dtype, then cast to weight's dtype.
            dweight = dw_partial.sum(dim=0).to(dy.dtype).to(weight.dtype)
        return dx.view(ctx.x_shape), dweight, None


# ----------------------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------------------


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, *, eps: float = 1e-6) -> torch.Tensor:
    """Root-mean-square norm of ``x`` ``(..., dim)`` over the last dim, times ``weight`` ``(dim,)`` if given.

    Same signature, semantics and output dtype as :func:`shared.norms.rms_norm` (``LlamaRMSNorm``); bf16,
    fp16 and fp32 ``x`` and ``weight`` run the kernel, float64 the reference. ``dim`` at most :data:`MAX_DIM`.
    Differentiable in ``x`` and ``weight``.
    """
    check_tensor("x", x, dtype_kind="float", nonempty=True)
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension (the one normalised)")
    if x.shape[-1] > MAX_DIM:
        raise ValueError(f"x's last dim must be at most {MAX_DIM} (one row is one block), got {x.shape[-1]}")
    if weight is not None:
        check_tensor("weight", weight, ndim=1, dtype_kind="float")
        if weight.shape[0] != x.shape[-1]:
            raise ValueError(
                f"weight must have shape ({x.shape[-1]},) to match x's last dim, got {tuple(weight.shape)}"
            )
    check_same_device(x=x, weight=weight)
    eps = check_number("eps", eps, ge=0)
    tensors = (x,) if weight is None else (x, weight)
    if any(t.dtype == torch.float64 for t in tensors) or backend(*tensors) == "torch":
        return rms_norm_reference(x, weight, eps=eps)
    return _RMSNorm.apply(x, weight, eps)
