"""Triton GPU kernels for the course's hot paths, each with the PyTorch reference in ``shared`` as fallback.

- :mod:`shared.kernels.rope`: fused RoPE / M-RoPE on q and k together (rotate-half, Qwen2-VL's sectioned
  and Qwen3-VL's interleaved layouts), forward and backward.
- :mod:`shared.kernels.rmsnorm`: RMSNorm with float32 statistics, forward and backward.
- :mod:`shared.kernels.flash_attention`: FlashAttention (online softmax; causal, sliding window, packed
  variable-length sequences via ``cu_seqlens``, GQA), forward and backward from the saved log-sum-exp.

Every public function has the signature of its reference and returns the same values (to the tolerance per
dtype stated in ``tests/test_kernels_*.py``). Where it runs:

- on CUDA tensors with Triton installed: the Triton kernel;
- on CPU tensors with ``TRITON_INTERPRET=1`` set before ``shared.kernels`` is first imported: the same
  kernel under Triton's interpreter (slow; how CI, which has no GPU, tests the kernels on small shapes);
- anywhere else: the PyTorch reference in ``shared`` (a reader's laptop).

:func:`backend` says which of the three a call on given tensors takes.
"""

from __future__ import annotations

import importlib.util
import os

import torch

__all__ = ["backend", "HAS_TRITON", "INTERPRET"]

#: Triton is importable (it is a Linux x86_64 test dependency; a reader's laptop may not have it).
HAS_TRITON = importlib.util.find_spec("triton") is not None
#: Triton's interpreter is on: read once, as ``triton.jit`` reads it when a kernel module is imported.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def backend(*tensors: torch.Tensor) -> str:
    """``"triton"``, ``"interpreter"`` or ``"torch"``: what a kernel call on ``tensors`` runs."""
    if not HAS_TRITON or not tensors:
        return "torch"
    devices = {t.device.type for t in tensors}
    if devices == {"cuda"} and not INTERPRET:
        return "triton"
    if devices == {"cpu"} and INTERPRET:
        return "interpreter"
    return "torch"
