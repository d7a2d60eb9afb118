"""FlashAttention in Triton: exact attention without the ``(q_len, kv_len)`` score matrix in memory.

:func:`flash_attention` computes what :func:`shared.attention.scaled_dot_product_attention` computes with the
masks of :mod:`shared.attention` (causal, sliding window, block-diagonal over packed sequences, and their
combinations), for MHA, GQA and MQA, forward and backward. Each program of the forward kernel holds one
block of ``BLOCK_M`` query rows and walks over the keys ``BLOCK_N`` at a time, keeping for each row a running
maximum ``m``, a running sum ``l`` and an output accumulator rescaled whenever ``m`` grows: the online
softmax of FlashAttention (Dao et al. 2022, arXiv:2205.14135), in the form of FlashAttention-2 (Dao 2023,
arXiv:2307.08691: one program per query block, normalised once at the end). It stores the output and the
log-sum-exp ``L = m + log l`` of each row; the backward recomputes the probabilities ``P = exp(S - L)``
block by block from ``L`` instead of storing them, with ``D = rowsum(dO * O)`` computed first, and dK/dV
and dQ in two separate kernels (FlashAttention-2's backward without its atomic adds).

Layout used by every kernel below: ``q``, ``o``, ``do``, ``dq`` are ``(batch, heads, seq_q, head_dim)`` and
``k``, ``v``, ``dk``, ``dv`` are ``(batch, kv_heads, seq_k, head_dim)``, contiguous (the wrapper makes them
so); the log-sum-exp ``L`` and ``D = rowsum(dO * O)`` are float32 ``(batch, heads, seq_q)``.

Positions: query row ``i`` of a sequence sits at position ``seq_k - seq_q + i`` and key ``j`` at ``j``
(bottom-right alignment, as :func:`shared.attention.causal_mask`: with a KV cache the queries are the newest
tokens). With ``cu_seqlens`` each packed segment is its own sequence (``seq_q = seq_k`` = its length).

Where it runs is :func:`shared.kernels.backend`'s answer; on ``"torch"`` it is the reference itself.
"""

import math

import torch
from torch.autograd.function import once_differentiable

from shared.attention import (
    block_diagonal_mask,
    causal_mask,
    check_qkv,
    scaled_dot_product_attention,
    sliding_window_mask,
)
from shared.kernels import HAS_TRITON, INTERPRET, backend
from shared.utils import (
    InputTypeError,
    check_bool,
    check_int,
    check_number,
    check_tensor,
)

if HAS_TRITON:
    import triton
    import triton.language as tl
else:  # a reader's laptop without Triton: the kernels are defined but never launched (backend() is "torch")

    class _NoTriton:
        constexpr = None

        @staticmethod
        def jit(fn):
            return fn

    triton = tl = _NoTriton

__all__ = ["flash_attention"]

#: dtypes the kernels take (fp16/bf16 on tensor cores; float32 with exact float32 matmuls, for tests).
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: the largest head_dim (the tiles of one query block must fit in registers and shared memory).
MAX_HEAD_DIM = 256


# ----------------------------------------------------------------------------------------------- kernels


@triton.jit
def _dot(a, b, FP32: tl.constexpr):
    """``a @ b`` accumulated in float32. ``FP32``: multiply in full float32 ("ieee", no TF32).

    FP32 is set for float32 inputs, and for bfloat16 under Triton's interpreter, whose ``dot`` would multiply
    bfloat16's raw bits (numpy has no bfloat16); the bf16 values are exact in float32, so the result is the
    GPU's up to the order of summation. On the GPU, fp16/bf16 take the tensor-core path (``tl.dot``'s default).
    """
    if FP32:
        c = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        c = tl.dot(a, b)
    return c


@triton.jit
def _visible(rows, cols, seqlen_q, seqlen_k, window, CAUSAL: tl.constexpr, WINDOWED: tl.constexpr):
    """Bool ``(BLOCK_M, BLOCK_N)``: may query row ``rows[i]`` attend to key ``cols[j]`` of its sequence?

    Out-of-range rows and columns (the ragged last block) are never visible. Query row ``i`` is at position
    ``p = seqlen_k - seqlen_q + i``; causal: key ``j <= p``; windowed (always causal): also ``j > p - window``,
    i.e. the ``window`` keys ``p - window + 1 .. p`` (:func:`shared.attention.sliding_window_mask`).
    """
    pos = rows[:, None] + (seqlen_k - seqlen_q)  # (BLOCK_M, 1): the position of each query row
    ok = (rows[:, None] < seqlen_q) & (cols[None, :] < seqlen_k)
    if CAUSAL:
        ok = ok & (cols[None, :] <= pos)
    if WINDOWED:
        ok = ok & (cols[None, :] > pos - window)
    return ok


@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O, LSE, CU_SEQLENS,  # pointers (CU_SEQLENS only read when VARLEN)
    scale_log2,  # softmax scale * log2(e): the scores are kept in base 2 so that exp2 can be used
    stride_qb, stride_qh, stride_qs,  # strides of q and o (the last one, head_dim, is 1)
    stride_kb, stride_kh, stride_ks,  # strides of k and v
    stride_lb, stride_lh,  # strides of the log-sum-exp (batch, heads, seq)
    n_rep, seqlen_q, seqlen_k, window,  # n_rep = heads // kv_heads
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,  # BLOCK_D: head_dim rounded up to a power of two
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, VARLEN: tl.constexpr, FP32: tl.constexpr,
):  # fmt: skip
    # The grid: axis 0 = which block of BLOCK_M query rows, axis 1 = which query head, axis 2 = which sequence
    # (a batch element, or a packed segment with VARLEN). Each program computes BLOCK_M rows of the output.
    start_m = tl.program_id(0) * BLOCK_M
    off_h = tl.program_id(1)
    off_b = tl.program_id(2)
    off_kvh = off_h // n_rep  # GQA: query head h reads kv head h // n_rep (what repeat_kv would copy)

    # Where this program's sequence lives. int64 offsets: batch * heads * seq * head_dim may exceed 2**31.
    if VARLEN:  # segment off_b of batch 0: rows cu_seqlens[off_b] .. cu_seqlens[off_b + 1] - 1
        seq_start = tl.load(CU_SEQLENS + off_b)
        seqlen_q = tl.load(CU_SEQLENS + off_b + 1) - seq_start
        seqlen_k = seqlen_q
        q_off = off_h.to(tl.int64) * stride_qh + seq_start.to(tl.int64) * stride_qs
        k_off = off_kvh.to(tl.int64) * stride_kh + seq_start.to(tl.int64) * stride_ks
        l_off = off_h.to(tl.int64) * stride_lh + seq_start
    else:
        q_off = off_b.to(tl.int64) * stride_qb + off_h.to(tl.int64) * stride_qh
        k_off = off_b.to(tl.int64) * stride_kb + off_kvh.to(tl.int64) * stride_kh
        l_off = off_b.to(tl.int64) * stride_lb + off_h.to(tl.int64) * stride_lh
    if start_m >= seqlen_q:  # a short segment has fewer blocks than the grid (sized for the longest)
        return

    rows = start_m + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query rows of this block
    offs_n = tl.arange(0, BLOCK_N)  # (BLOCK_N,) key offsets inside a key block
    offs_d = tl.arange(0, BLOCK_D)  # (BLOCK_D,) head_dim, padded: lanes >= HEAD_DIM load 0 and are not stored
    d_ok = offs_d[None, :] < HEAD_DIM

    # The query block stays in registers for the whole loop; rows past the sequence load 0 (not stored).
    q = tl.load(
        Q + q_off + rows[:, None] * stride_qs + offs_d[None, :],
        mask=(rows[:, None] < seqlen_q) & d_ok,
        other=0.0,
    )

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max of the (base-2) scores
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(score - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)  # running sum of exp2(score - m_i) * v

    # The key blocks that any row of this block may see: all, or up to the last row's position (causal),
    # and from the first row's window start on (sliding window). Blocks outside are skipped, not masked.
    offset = seqlen_k - seqlen_q  # position of query row 0
    lo = 0
    hi = seqlen_k
    if CAUSAL:
        hi = tl.minimum(seqlen_k, start_m + BLOCK_M + offset)
    if WINDOWED:
        lo = tl.maximum(start_m + offset - window + 1, 0)
        lo = (lo // BLOCK_N) * BLOCK_N  # start on a block boundary (aligned loads)

    # The block loop: one key/value block per step, BLOCK_N keys.
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n  # (BLOCK_N,) key indices
        kv_ok = (cols[:, None] < seqlen_k) & d_ok
        k = tl.load(K + k_off + cols[:, None] * stride_ks + offs_d[None, :], mask=kv_ok, other=0.0)
        v = tl.load(V + k_off + cols[:, None] * stride_ks + offs_d[None, :], mask=kv_ok, other=0.0)

        # Scores of this tile, times scale * log2(e): exp2 of these is exp of the scaled scores.
        s = _dot(q, tl.trans(k), FP32) * scale_log2  # (BLOCK_M, BLOCK_N)
        # Masking: a key a row may not see gets -inf, so it adds exp2(-inf) = 0 to the sums.
        s = tl.where(_visible(rows, cols, seqlen_q, seqlen_k, window, CAUSAL, WINDOWED), s, float("-inf"))

        # The online-softmax update. The new running max takes this tile's scores into account ...
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # ... (a row that has seen no visible key yet keeps m = -inf; subtract 0 there instead of -inf,
        # which would give -inf - (-inf) = NaN) ...
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        # ... the sums so far were taken relative to the old max: rescale them by exp2(m_old - m_new) <= 1 ...
        alpha = tl.exp2(m_i - m_sub)
        p = tl.exp2(s - m_sub[:, None])  # (BLOCK_M, BLOCK_N) unnormalised probabilities, <= 1
        l_i = l_i * alpha + tl.sum(p, 1)
        # ... and add this tile's contribution p @ v (p rounded to v's dtype for the tensor cores).
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, FP32)
        m_i = m_new

    # Normalise. A fully masked row (no visible key: l = 0, acc = 0) gives 0, as the reference does.
    l_div = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_div[:, None]
    tl.store(
        O + q_off + rows[:, None] * stride_qs + offs_d[None, :],
        out.to(O.dtype.element_ty),
        mask=(rows[:, None] < seqlen_q) & d_ok,
    )
    # Log-sum-exp of the scaled scores in natural log: L = (m + log2 l) * ln 2 (-inf for a fully masked row).
    lse = (m_i + tl.log2(l_div)) * 0.6931471805599453
    tl.store(LSE + l_off + rows, lse, mask=rows < seqlen_q)


@triton.jit
def _attn_bwd_preprocess_kernel(
    O, DO, DELTA, n_rows,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """``D = rowsum(dO * O)`` in float32, one row per query (o, do: ``(n_rows, HEAD_DIM)`` contiguous).

    ``D_i = sum_j P_ij dP_ij``: the term the softmax backward subtracts, ``dS = P * (dP - D)``.
    """
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (rows[:, None] < n_rows) & (offs_d[None, :] < HEAD_DIM)
    o = tl.load(O + rows[:, None].to(tl.int64) * HEAD_DIM + offs_d[None, :], mask=ok, other=0.0)
    do = tl.load(DO + rows[:, None].to(tl.int64) * HEAD_DIM + offs_d[None, :], mask=ok, other=0.0)
    tl.store(DELTA + rows, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=rows < n_rows)


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, CU_SEQLENS,
    scale, scale_log2,
    stride_qb, stride_qh, stride_qs,  # q, do
    stride_kb, stride_kh, stride_ks,  # k, v, dk, dv
    stride_lb, stride_lh,  # lse, delta
    n_rep, seqlen_q, seqlen_k, window,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, VARLEN: tl.constexpr, FP32: tl.constexpr,
):  # fmt: skip
    # The grid: axis 0 = block of BLOCK_N keys, axis 1 = kv head, axis 2 = sequence. Each program owns dK and
    # dV of its key block and sums them over every query block and over the n_rep query heads that share
    # this kv head (GQA), in registers: no atomics, so the result does not depend on scheduling.
    start_n = tl.program_id(0) * BLOCK_N
    off_kvh = tl.program_id(1)
    off_b = tl.program_id(2)
    if VARLEN:
        seq_start = tl.load(CU_SEQLENS + off_b)
        seqlen_q = tl.load(CU_SEQLENS + off_b + 1) - seq_start
        seqlen_k = seqlen_q
        k_off = off_kvh.to(tl.int64) * stride_kh + seq_start.to(tl.int64) * stride_ks
        q_seq_off = seq_start.to(tl.int64) * stride_qs  # + head offset, per head below
        l_seq_off = seq_start.to(tl.int64)
    else:
        k_off = off_b.to(tl.int64) * stride_kb + off_kvh.to(tl.int64) * stride_kh
        q_seq_off = off_b.to(tl.int64) * stride_qb
        l_seq_off = off_b.to(tl.int64) * stride_lb
    if start_n >= seqlen_k:
        return

    cols = start_n + tl.arange(0, BLOCK_N)  # (BLOCK_N,) the keys of this program
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d[None, :] < HEAD_DIM
    kv_ok = (cols[:, None] < seqlen_k) & d_ok
    k = tl.load(K + k_off + cols[:, None] * stride_ks + offs_d[None, :], mask=kv_ok, other=0.0)
    v = tl.load(V + k_off + cols[:, None] * stride_ks + offs_d[None, :], mask=kv_ok, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    # The query rows that may see a key of this block: all; from the first key's position on (causal:
    # row i sees key j when j <= i + offset); before the last key's position + window (sliding window).
    offset = seqlen_k - seqlen_q
    lo = 0
    hi = seqlen_q
    if CAUSAL:
        lo = tl.maximum(start_n - offset, 0)
        lo = (lo // BLOCK_M) * BLOCK_M
    if WINDOWED:
        hi = tl.minimum(seqlen_q, start_n + BLOCK_N - 1 - offset + window)

    for r in range(0, n_rep):  # the query heads that read this kv head
        off_h = off_kvh * n_rep + r
        q_off = q_seq_off + off_h.to(tl.int64) * stride_qh
        l_off = l_seq_off + off_h.to(tl.int64) * stride_lh
        for start_m in range(lo, hi, BLOCK_M):  # the block loop, over query blocks
            rows = start_m + offs_m
            q_ok = (rows[:, None] < seqlen_q) & d_ok
            q = tl.load(Q + q_off + rows[:, None] * stride_qs + offs_d[None, :], mask=q_ok, other=0.0)
            do = tl.load(DO + q_off + rows[:, None] * stride_qs + offs_d[None, :], mask=q_ok, other=0.0)
            lse = tl.load(LSE + l_off + rows, mask=rows < seqlen_q, other=0.0) * 1.4426950408889634  # base 2
            delta = tl.load(DELTA + l_off + rows, mask=rows < seqlen_q, other=0.0)

            # Recompute the probabilities of this tile from the saved log-sum-exp: P = exp(S - L), exactly the
            # forward's softmax. Masked entries are set to 0 (for a fully masked row L = -inf and exp2 would
            # give +inf; tl.where picks the 0 without using it).
            s = _dot(q, tl.trans(k), FP32) * scale_log2  # (BLOCK_M, BLOCK_N)
            p = tl.exp2(s - lse[:, None])
            p = tl.where(_visible(rows, cols, seqlen_q, seqlen_k, window, CAUSAL, WINDOWED), p, 0.0)

            dv += _dot(tl.trans(p.to(do.dtype)), do, FP32)  # dV += P^T dO
            dp = _dot(do, tl.trans(v), FP32)  # dP = dO V^T
            ds = p * (dp - delta[:, None])  # dS = P * (dP - D): the softmax backward
            dk += _dot(tl.trans(ds.to(q.dtype)), q, FP32)  # dK += dS^T Q (times scale, below)

    tl.store(
        DK + k_off + cols[:, None] * stride_ks + offs_d[None, :],
        (dk * scale).to(DK.dtype.element_ty),
        mask=kv_ok,
    )
    tl.store(DV + k_off + cols[:, None] * stride_ks + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=kv_ok)


@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, CU_SEQLENS,
    scale, scale_log2,
    stride_qb, stride_qh, stride_qs,  # q, do, dq
    stride_kb, stride_kh, stride_ks,  # k, v
    stride_lb, stride_lh,  # lse, delta
    n_rep, seqlen_q, seqlen_k, window,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, WINDOWED: tl.constexpr, VARLEN: tl.constexpr, FP32: tl.constexpr,
):  # fmt: skip
    # The grid and the key loop are the forward's: each program owns dQ of one block of query rows.
    start_m = tl.program_id(0) * BLOCK_M
    off_h = tl.program_id(1)
    off_b = tl.program_id(2)
    off_kvh = off_h // n_rep
    if VARLEN:
        seq_start = tl.load(CU_SEQLENS + off_b)
        seqlen_q = tl.load(CU_SEQLENS + off_b + 1) - seq_start
        seqlen_k = seqlen_q
        q_off = off_h.to(tl.int64) * stride_qh + seq_start.to(tl.int64) * stride_qs
        k_off = off_kvh.to(tl.int64) * stride_kh + seq_start.to(tl.int64) * stride_ks
        l_off = off_h.to(tl.int64) * stride_lh + seq_start
    else:
        q_off = off_b.to(tl.int64) * stride_qb + off_h.to(tl.int64) * stride_qh
        k_off = off_b.to(tl.int64) * stride_kb + off_kvh.to(tl.int64) * stride_kh
        l_off = off_b.to(tl.int64) * stride_lb + off_h.to(tl.int64) * stride_lh
    if start_m >= seqlen_q:
        return

    rows = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d[None, :] < HEAD_DIM
    q_ok = (rows[:, None] < seqlen_q) & d_ok
    q = tl.load(Q + q_off + rows[:, None] * stride_qs + offs_d[None, :], mask=q_ok, other=0.0)
    do = tl.load(DO + q_off + rows[:, None] * stride_qs + offs_d[None, :], mask=q_ok, other=0.0)
    lse = tl.load(LSE + l_off + rows, mask=rows < seqlen_q, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + l_off + rows, mask=rows < seqlen_q, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    offset = seqlen_k - seqlen_q
    lo = 0
    hi = seqlen_k
    if CAUSAL:
        hi = tl.minimum(seqlen_k, start_m + BLOCK_M + offset)
    if WINDOWED:
        lo = tl.maximum(start_m + offset - window + 1, 0)
        lo = (lo // BLOCK_N) * BLOCK_N

    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        kv_ok = (cols[:, None] < seqlen_k) & d_ok
        k = tl.load(K + k_off + cols[:, None] * stride_ks + offs_d[None, :], mask=kv_ok, other=0.0)
        v = tl.load(V + k_off + cols[:, None] * stride_ks + offs_d[None, :], mask=kv_ok, other=0.0)
        s = _dot(q, tl.trans(k), FP32) * scale_log2
        p = tl.exp2(s - lse[:, None])  # P = exp(S - L), as in the dK/dV kernel
        p = tl.where(_visible(rows, cols, seqlen_q, seqlen_k, window, CAUSAL, WINDOWED), p, 0.0)
        dp = _dot(do, tl.trans(v), FP32)  # dP = dO V^T
        ds = p * (dp - delta[:, None])  # dS = P * (dP - D)
        dq += _dot(ds.to(k.dtype), k, FP32)  # dQ += dS K (times scale, below)

    tl.store(
        DQ + q_off + rows[:, None] * stride_qs + offs_d[None, :],
        (dq * scale).to(DQ.dtype.element_ty),
        mask=q_ok,
    )


# ----------------------------------------------------------------------------------------------- launching


def _blocks(block_d: int, dtype: torch.dtype, backward: bool) -> dict:
    """Block sizes and launch options, chosen here only: ``BLOCK_M``, ``BLOCK_N``, ``num_warps``, ``num_stages``.

    Under the interpreter (CPU tests): 16 x 16 blocks, as every block costs Python time and 16 is the
    smallest block ``tl.dot`` takes on a GPU. On the GPU, by the padded head_dim: the forward keeps a
    (BLOCK_M, head_dim) query block and its float32 accumulator in registers and streams (BLOCK_N, head_dim)
    key/value blocks through shared memory ``num_stages`` deep; the backward holds two float32 accumulators
    (dK and dV) per program, so its blocks are smaller. float32 (exact float32 matmuls, no tensor cores; for
    tests) takes small blocks. Not autotuned and not yet timed: starting points for an H100/H200, checked only
    to compile for sm_90 (Triton 3.9, wgmma for fp16/bf16) without register spills up to head_dim 128.
    """
    if INTERPRET:
        return {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 1, "num_stages": 1}
    if dtype == torch.float32:  # the float32 dot is unrolled into FMAs: small tiles keep the code small
        return {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
    if not backward:
        if block_d <= 64:
            return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
        if block_d <= 128:  # head_dim 80 is padded to 128
            return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
    if block_d <= 64:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
    if block_d <= 128:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 8, "num_stages": 2}
    return {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}


def _common_args(q, k, causal, window, cu_seqlens):
    """Kernel arguments shared by the three attention kernels, and the sequence count of the grid."""
    batch, heads, seqlen_q, head_dim = q.shape
    n_seq = batch if cu_seqlens is None else cu_seqlens.numel() - 1
    # head_dim padded to a power of two (tl.arange needs one), at least 16 (tl.dot's smallest K)
    block_d = max(16, triton.next_power_of_2(head_dim))
    # float32 matmuls: float32 inputs, or bf16 under the interpreter (see _dot)
    fp32 = q.dtype == torch.float32 or (INTERPRET and q.dtype == torch.bfloat16)
    constexprs = {
        "HEAD_DIM": head_dim,
        "BLOCK_D": block_d,
        "CAUSAL": causal,
        "WINDOWED": window is not None,
        "VARLEN": cu_seqlens is not None,
        "FP32": fp32,
    }
    sizes = (heads // k.shape[1], seqlen_q, k.shape[2], window or 0)  # n_rep, seqlen_q, seqlen_k, window
    return n_seq, block_d, constexprs, sizes


def _forward(q, k, v, causal, window, cu_seqlens, max_seqlen, scale):
    """Run the forward kernel: ``(out, lse)``, ``lse`` float32 ``(batch, heads, q_len)`` in natural log."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    batch, heads, seqlen_q, head_dim = q.shape
    out = torch.empty_like(q)
    lse = torch.empty((batch, heads, seqlen_q), device=q.device, dtype=torch.float32)
    n_seq, block_d, constexprs, sizes = _common_args(q, k, causal, window, cu_seqlens)
    cfg = _blocks(block_d, q.dtype, backward=False)
    # grid: (query blocks of the longest sequence, heads, sequences)
    grid = (triton.cdiv(max_seqlen, cfg["BLOCK_M"]), heads, n_seq)
    cu = cu_seqlens if cu_seqlens is not None else lse  # any pointer: not read unless VARLEN
    _attn_fwd_kernel[grid](
        q, k, v, out, lse, cu,
        scale * math.log2(math.e),
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        lse.stride(0), lse.stride(1),
        *sizes,
        **constexprs, **cfg,
    )  # fmt: skip
    return out, lse


def _backward(do, q, k, v, out, lse, causal, window, cu_seqlens, max_seqlen, scale):
    """Run the three backward kernels: ``(dq, dk, dv)``."""
    do = do.contiguous()
    batch, heads, seqlen_q, head_dim = q.shape
    n_seq, block_d, constexprs, sizes = _common_args(q, k, causal, window, cu_seqlens)
    cfg = _blocks(block_d, q.dtype, backward=True)

    # 1. D = rowsum(dO * O), one float32 per query row.
    delta = torch.empty_like(lse)
    n_rows = batch * heads * seqlen_q
    block_r = 16 if INTERPRET else 64
    _attn_bwd_preprocess_kernel[(triton.cdiv(n_rows, block_r),)](
        out, do, delta, n_rows, HEAD_DIM=head_dim, BLOCK_D=block_d, BLOCK_R=block_r
    )

    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    cu = cu_seqlens if cu_seqlens is not None else lse
    common = (
        scale, scale * math.log2(math.e),
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        lse.stride(0), lse.stride(1),
        *sizes,
    )  # fmt: skip
    # 2. dK, dV: grid (key blocks of the longest sequence, kv heads, sequences).
    max_seqlen_k = max_seqlen if cu_seqlens is not None else k.shape[2]
    grid = (triton.cdiv(max_seqlen_k, cfg["BLOCK_N"]), k.shape[1], n_seq)
    _attn_bwd_dkdv_kernel[grid](q, k, v, do, lse, delta, dk, dv, cu, *common, **constexprs, **cfg)
    # 3. dQ: grid (query blocks, heads, sequences), a separate kernel (no atomics: deterministic).
    grid = (triton.cdiv(max_seqlen, cfg["BLOCK_M"]), heads, n_seq)
    _attn_bwd_dq_kernel[grid](q, k, v, do, lse, delta, dq, cu, *common, **constexprs, **cfg)
    return dq, dk, dv


class _FlashAttention(torch.autograd.Function):
    """Forward saves ``q, k, v, out, lse``; backward recomputes the probabilities from ``lse``."""

    @staticmethod
    def forward(ctx, q, k, v, causal, window, cu_seqlens, max_seqlen, scale):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out, lse = _forward(q, k, v, causal, window, cu_seqlens, max_seqlen, scale)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
        ctx.args = (causal, window, max_seqlen, scale)
        return out

    @staticmethod
    @once_differentiable  # the backward kernels are not differentiable themselves
    def backward(ctx, do):
        q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
        causal, window, max_seqlen, scale = ctx.args
        dq, dk, dv = _backward(do, q, k, v, out, lse, causal, window, cu_seqlens, max_seqlen, scale)
        return dq, dk, dv, None, None, None, None, None


# ----------------------------------------------------------------------------------------------- public API


def _check_inputs(q, k, v, causal, window, cu_seqlens, scale):
    """Validate; return ``(cu_seqlens as contiguous int32 or None, longest query sequence, scale)``."""
    check_qkv(q, k, v, cu_seqlens=cu_seqlens)  # shapes, dtypes, devices, finiteness: as the reference
    if q.dtype not in SUPPORTED_DTYPES:
        raise InputTypeError(f"q, k, v must be float16, bfloat16 or float32, got {q.dtype}")
    batch, heads, q_len, head_dim = q.shape
    if v.shape[3] != head_dim:
        raise ValueError(f"v's head_dim {v.shape[3]} must equal q's head_dim {head_dim} in this kernel")
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"q's head_dim must be <= {MAX_HEAD_DIM}, got {head_dim}")
    kv_len = k.shape[2]
    check_bool("causal", causal)
    if window is not None:
        check_int("window", window, minimum=1)
        if not causal:
            raise ValueError(
                "window is a causal sliding window (shared.attention.sliding_window_mask): pass causal=True with it"
            )
    scale = 1.0 / math.sqrt(head_dim) if scale is None else check_number("scale", scale, gt=0)
    if cu_seqlens is None:
        return None, q_len, scale
    check_tensor("cu_seqlens", cu_seqlens, ndim=1, dtype_kind="int")
    if batch != 1:
        raise ValueError(
            f"with cu_seqlens the sequences are packed along q_len: batch must be 1, got {batch}"
        )
    if q_len != kv_len:
        raise ValueError(
            f"with cu_seqlens q_len and kv_len must be equal (packed self-attention), got {q_len}, {kv_len}"
        )
    bounds = cu_seqlens.tolist()
    if len(bounds) < 2 or bounds[0] != 0:
        raise ValueError(f"cu_seqlens must start with 0 and have >= 2 entries, got {bounds}")
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if min(lengths) < 0:
        raise ValueError(f"cu_seqlens must be non-decreasing, got {bounds}")
    if bounds[-1] != q_len:
        raise ValueError(f"cu_seqlens must end at the packed length q_len = {q_len}, got {bounds[-1]}")
    if len(lengths) > 65535:
        raise ValueError(f"cu_seqlens may hold at most 65535 segments (a grid axis), got {len(lengths)}")
    return cu_seqlens.to(torch.int32).contiguous(), max(lengths), scale


def _reference_mask(q_len, kv_len, causal, window, cu_seqlens, device):
    """The bool mask of :mod:`shared.attention` that the options describe (``None``: attend everywhere)."""
    mask = None
    if window is not None:
        mask = sliding_window_mask(q_len, kv_len, window=window)
    elif causal:
        mask = causal_mask(q_len, kv_len)
    if cu_seqlens is not None:
        block = block_diagonal_mask(cu_seqlens.cpu())
        mask = block if mask is None else block & mask
    return None if mask is None else mask.to(device)


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    window: int | None = None,
    cu_seqlens: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """``softmax(q k^T * scale + mask) v`` without materialising the scores: ``(batch, heads, q_len, head_dim)``.

    Args:
        q: ``(batch, heads, q_len, head_dim)``, float16, bfloat16 or float32; ``head_dim <= 256`` (any value;
            a head_dim that is not a power of two, such as 80, is padded inside the kernel).
        k, v: ``(batch, kv_heads, kv_len, head_dim)``, ``heads % kv_heads == 0`` (GQA/MQA: query head ``h``
            reads kv head ``h // (heads // kv_heads)``, as :func:`shared.attention.repeat_kv`, without copying).
        causal: query ``i`` sits at position ``kv_len - q_len + i`` and sees keys ``j <= kv_len - q_len + i``
            (bottom-right, :func:`shared.attention.causal_mask`; with ``q_len > kv_len`` the first
            ``q_len - kv_len`` queries see no key and give 0).
        window: sliding window of ``window`` keys including the query's own: the query at position ``p``
            sees keys ``p - window + 1 .. p``, i.e. ``(p - window, p]``
            (:func:`shared.attention.sliding_window_mask`, ``transformers``' ``sliding_window``). It is causal
            by definition, so it needs ``causal=True``.
        cu_seqlens: ``(n_segments + 1,)`` integers ``[0, l_0, l_0 + l_1, ..., total]``: ``batch == 1`` and
            ``q_len == kv_len == total`` hold several sequences packed end to end, and each token attends only
            inside its own segment (:func:`shared.attention.block_diagonal_mask`; the ViT over several images,
            Qwen2.5-VL's window attention). Combines with ``causal`` and ``window`` (then applied within each
            segment). Empty segments are allowed. Converted to int32, on the device of ``q``.
        scale: multiplies the scores; default ``1 / sqrt(head_dim)``.

    Returns the output in ``q``'s dtype. Differentiable in ``q``, ``k``, ``v`` (once: no double backward).
    Non-contiguous inputs (e.g. ``x.view(b, s, h, d).transpose(1, 2)``) are copied to contiguous first.

    Where it runs (:func:`shared.kernels.backend`): the Triton kernels on CUDA, Triton's interpreter on CPU
    with ``TRITON_INTERPRET=1``, else :func:`shared.attention.scaled_dot_product_attention` with the masks of
    :mod:`shared.attention` (the same values to the tolerances of ``tests/test_kernels_attention.py``). The
    kernels accumulate in float32 and round the probabilities to the input dtype before ``P @ V`` (as
    FlashAttention does); float32 inputs use exact float32 matmuls (slow on a GPU: for tests).

    Fully masked rows (a query with no visible key: only ``causal`` with ``q_len > kv_len``; a window always
    holds the query itself and every token is in its segment) give output 0 and gradient 0, like the reference.

    Refused: NaN or ±inf in ``q``/``k``/``v`` (as the reference), dtypes other than the three, tensors on
    several devices, shapes that do not match, ``head_dim > 256``, a ``window`` that is not an int >= 1 or
    without ``causal``, a non-bool ``causal``, a ``scale`` that is not a finite number > 0, ``cu_seqlens`` that
    is not a 1D integer tensor starting at 0, non-decreasing and ending at ``q_len``, or comes with ``batch > 1``.
    """
    cu, max_seqlen, scale = _check_inputs(q, k, v, causal, window, cu_seqlens, scale)
    if backend(q, k, v) == "torch":
        mask = _reference_mask(q.shape[2], k.shape[2], causal, window, cu_seqlens, q.device)
        return scaled_dot_product_attention(q, k, v, mask, scale=scale)
    return _FlashAttention.apply(q, k, v, causal, window, cu, max_seqlen, scale)
