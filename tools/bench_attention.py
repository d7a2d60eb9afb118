"""Attention benchmark: ``shared.kernels.flash_attention`` against the attention a reader would otherwise use.

GPU only (``run`` is called by ``tools/bench.py``; this module imports on a CPU machine too). bf16, forward and
forward+backward, kernel time by ``triton.testing.do_bench`` (median of repeats, L2 cleared between runs):

- ``causal``: ``(batch, heads, seq, head_dim) = (4, 32, 4096, 128)``;
- ``window 512``: the same shape, causal sliding window of 512 keys;
- ``packed ViT``: 8 images of 1024 patches packed into one sequence of 8192, 16 heads, head_dim 80,
  block-diagonal attention (one block per image, bidirectional), as a ViT over several images.

Peers (each in its own ``try``; a failure is recorded in the row's ``error`` instead of stopping the run):
``torch.nn.functional.scaled_dot_product_attention`` restricted to the FLASH_ATTENTION or CUDNN_ATTENTION
backend (``torch.nn.attention.sdpa_kernel``; causal only: neither takes a window or a block-diagonal mask
there), SDPA with a dense bool mask (PyTorch picks the backend), SDPA once per image (the loop
``transformers``' Qwen2-VL vision attention runs without FlashAttention), SDPA FLASH with the equal-sized
images as a batch (possible only because they are equal), and FlexAttention
(``torch.nn.attention.flex_attention`` compiled with ``torch.compile``, its ``create_block_mask``).

Row keys: ``name``, ``case``, ``pass`` (``fwd`` or ``fwd+bwd``), ``ms``, ``TFLOP/s``, ``ratio`` (this row's
time over ours on the same case and pass: 2.0 = twice as slow as ours), ``max_abs_diff`` (forward output
against ours), ``error``. "ours" calls the autograd function directly, without the input checks of
:func:`flash_attention` (whose ``isfinite`` pass and host sync are measured separately as "ours, checked").

FLOPs, FlashAttention's benchmark convention: 4 * head_dim * (number of (query, key) pairs the mask allows,
summed over batch and heads) for the forward (two matmuls, 2 FLOPs per multiply-add), 2.5 times that for the
backward, 3.5 times for forward+backward. FlashAttention's script counts ``seq**2 / 2`` pairs for causal; here
the exact count ``seq * (seq + 1) / 2`` (0.02 % more at 4096) and, for window and packed, the exact counts.
So TFLOP/s is *useful* work: a dense-mask peer that computes every pair is not credited for the masked ones.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable

import torch

from tools.bench_timing import forward_backward, median_ms

BATCH, HEADS, SEQ, HEAD_DIM = 4, 32, 4096, 128
WINDOW = 512
IMAGES, PATCHES, VIT_HEADS, VIT_HEAD_DIM = 8, 1024, 16, 80
DTYPE = torch.bfloat16


def _pairs_causal(n: int, window: int | None = None) -> int:
    """Visible (query, key) pairs of one causal head of length n: row p sees min(p + 1, window) keys."""
    if window is None or window >= n:
        return n * (n + 1) // 2
    return window * (window + 1) // 2 + (n - window) * window


def _tflops(pairs: int, head_dim: int, ms: float | None, backward: bool) -> float | None:
    if ms is None:
        return None
    flops = 4 * head_dim * pairs * (3.5 if backward else 1.0)
    return flops / (ms * 1e-3) / 1e12


def _error(exc: BaseException) -> str:
    """The exception's last lines, short enough for a table."""
    lines = traceback.format_exception_only(type(exc), exc)
    return " ".join(line.strip() for line in lines)[-300:]


def _inputs(shape_q, shape_kv, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(shape_q, device=device, dtype=DTYPE, generator=g).requires_grad_()
    k = torch.randn(shape_kv, device=device, dtype=DTYPE, generator=g).requires_grad_()
    v = torch.randn(shape_kv, device=device, dtype=DTYPE, generator=g).requires_grad_()
    do = torch.randn(shape_q, device=device, dtype=DTYPE, generator=g)
    return q, k, v, do


def _measure(fn: Callable[[], torch.Tensor], tensors, do) -> tuple[float, float, torch.Tensor]:
    """(forward ms, forward+backward ms, forward output) of ``fn``; the forward with autograd on, as in training."""
    out = fn().detach()
    return median_ms(fn), median_ms(forward_backward(fn, (do,)), grad_to_none=tensors), out


def _bench_case(case: str, peers: dict, tensors, do, pairs: int, head_dim: int) -> list[dict]:
    """Time each peer (the first is ours), two rows each; a failing peer gives rows with its error."""
    rows: list[dict] = []
    ours: dict[str, float | None] = {"fwd": None, "fwd+bwd": None}
    ours_out = None
    for name, (fn, context) in peers.items():
        try:
            with context():
                fwd, both, out = _measure(fn, tensors, do)
            if name == "ours":  # the first peer: the rows' time and output reference
                ours_out, ours = out, {"fwd": fwd, "fwd+bwd": both}
            diff = None if ours_out is None else float((out.float() - ours_out.float()).abs().max())
            results = {"fwd": fwd, "fwd+bwd": both}
            error = None
        except Exception as exc:  # a peer that does not run on this machine/version: record why
            results, diff, error = {"fwd": None, "fwd+bwd": None}, None, _error(exc)
        for pass_, ms in results.items():
            base = ours[pass_]
            rows.append(
                {
                    "name": name,
                    "case": case,
                    "pass": pass_,
                    "ms": ms,
                    "TFLOP/s": _tflops(pairs, head_dim, ms, pass_ == "fwd+bwd"),
                    "ratio": None if ms is None or base is None else ms / base,
                    "max_abs_diff": diff,
                    "error": error,
                }
            )
        for t in tensors:
            t.grad = None
        torch.cuda.empty_cache()
    return rows


def _no_context():
    import contextlib

    return contextlib.nullcontext()


def _backend(which: str):
    """A context factory that restricts SDPA to one backend (imported when entered, inside the peer's try)."""

    def context():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(getattr(SDPBackend, which))

    return context


def _flex(block_mask_fn):
    """FlexAttention compiled with torch.compile; the block mask and the compiled function are made at the
    first call, inside the peer's ``try`` (an old torch without FlexAttention then only fails that peer)."""
    state: dict = {}

    def call(q, k, v):
        if not state:
            from torch.nn.attention.flex_attention import flex_attention

            state["fn"] = torch.compile(flex_attention, dynamic=False)
            state["mask"] = block_mask_fn()
        return state["fn"](q, k, v, block_mask=state["mask"])

    return call


def _ours(q, k, v, causal=False, window=None, cu=None, max_seqlen=None):
    """The autograd function of shared.kernels.flash_attention, without the public input checks."""
    from shared.kernels import flash_attention as fa

    scale = 1.0 / math.sqrt(q.shape[3])
    return fa._FlashAttention.apply(q, k, v, causal, window, cu, max_seqlen or q.shape[2], scale)


def _block_mask(mask_mod, seq: int, device: str):
    """FlexAttention's block mask for one (seq, seq) pattern, shared by all batches and heads."""
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=seq, KV_LEN=seq, device=device)


def _case_causal(device: str) -> list[dict]:
    import torch.nn.functional as F

    from shared.kernels.flash_attention import flash_attention

    shape = (BATCH, HEADS, SEQ, HEAD_DIM)
    q, k, v, do = _inputs(shape, shape, device)
    flex = _flex(lambda: _block_mask(lambda b, h, qi, ki: ki <= qi, SEQ, device))
    sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731 (square: top-left = bottom-right)
    peers = {
        "ours": (lambda: _ours(q, k, v, causal=True), _no_context),
        "ours, checked": (lambda: flash_attention(q, k, v, causal=True), _no_context),
        "SDPA FLASH": (sdpa, _backend("FLASH_ATTENTION")),
        "SDPA cuDNN": (sdpa, _backend("CUDNN_ATTENTION")),
        "FlexAttention": (lambda: flex(q, k, v), _no_context),
    }
    pairs = BATCH * HEADS * _pairs_causal(SEQ)
    return _bench_case(f"causal {BATCH}x{HEADS}x{SEQ}x{HEAD_DIM}", peers, (q, k, v), do, pairs, HEAD_DIM)


def _case_window(device: str) -> list[dict]:
    import torch.nn.functional as F

    shape = (BATCH, HEADS, SEQ, HEAD_DIM)
    q, k, v, do = _inputs(shape, shape, device)
    pos = torch.arange(SEQ, device=device)
    dense = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - WINDOW)  # (SEQ, SEQ) bool
    flex = _flex(lambda: _block_mask(lambda b, h, qi, ki: (ki <= qi) & (qi - ki < WINDOW), SEQ, device))
    peers = {
        "ours": (lambda: _ours(q, k, v, causal=True, window=WINDOW), _no_context),
        "SDPA dense mask": (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense), _no_context),
        "FlexAttention": (lambda: flex(q, k, v), _no_context),
    }
    pairs = BATCH * HEADS * _pairs_causal(SEQ, WINDOW)
    case = f"window {WINDOW} {BATCH}x{HEADS}x{SEQ}x{HEAD_DIM}"
    return _bench_case(case, peers, (q, k, v), do, pairs, HEAD_DIM)


def _case_packed(device: str) -> list[dict]:
    import torch.nn.functional as F

    from shared.kernels.flash_attention import flash_attention

    total = IMAGES * PATCHES
    shape = (1, VIT_HEADS, total, VIT_HEAD_DIM)
    q, k, v, do = _inputs(shape, shape, device, seed=1)
    cu = torch.arange(0, total + 1, PATCHES, device=device, dtype=torch.int32)  # [0, 1024, ..., 8192]
    image = torch.arange(total, device=device) // PATCHES  # the image of each patch
    dense = image[:, None] == image[None, :]  # (total, total) bool, block-diagonal

    def per_image():  # one SDPA call per image, as transformers' Qwen2-VL vision attention without FA
        outs = [
            F.scaled_dot_product_attention(
                q[:, :, s : s + PATCHES], k[:, :, s : s + PATCHES], v[:, :, s : s + PATCHES]
            )
            for s in range(0, total, PATCHES)
        ]
        return torch.cat(outs, dim=2)

    def as_batch():  # equal-sized images only: (1, h, images * patches, d) -> (images, h, patches, d)
        def split(t):
            return t.view(VIT_HEADS, IMAGES, PATCHES, VIT_HEAD_DIM).transpose(0, 1)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return out.transpose(0, 1).reshape(1, VIT_HEADS, total, VIT_HEAD_DIM)

    flex = _flex(lambda: _block_mask(lambda b, h, qi, ki: image[qi] == image[ki], total, device))
    peers = {
        "ours": (lambda: _ours(q, k, v, cu=cu, max_seqlen=PATCHES), _no_context),
        "ours, checked": (lambda: flash_attention(q, k, v, cu_seqlens=cu), _no_context),
        "SDPA dense mask": (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense), _no_context),
        "SDPA per image": (per_image, _no_context),
        "SDPA FLASH, images as batch": (as_batch, _backend("FLASH_ATTENTION")),
        "FlexAttention": (lambda: flex(q, k, v), _no_context),
    }
    pairs = VIT_HEADS * IMAGES * PATCHES * PATCHES
    case = f"packed ViT {IMAGES}x{PATCHES} h{VIT_HEADS} d{VIT_HEAD_DIM}"
    return _bench_case(case, peers, (q, k, v), do, pairs, VIT_HEAD_DIM)


def run(device: str = "cuda") -> list[dict]:
    """Benchmark the three cases; return one row per (peer, case, pass). Needs a CUDA device."""
    if not torch.cuda.is_available():
        raise RuntimeError("tools/bench_attention.py needs a CUDA device")
    rows: list[dict] = []
    for case in (_case_causal, _case_window, _case_packed):
        try:
            rows += case(device)
        except Exception as exc:  # e.g. out of memory while making the inputs: keep the other cases
            rows.append({"name": "setup", "case": case.__name__, "error": _error(exc)})
        torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tools.bench import print_table

    print_table(run())
