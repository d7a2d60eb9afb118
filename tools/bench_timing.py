"""The one timing rule of ``make bench``: kernel time by ``triton.testing.do_bench``, median of repeats.

Both benchmark modules (``tools/bench_rope_rmsnorm.py``, ``tools/bench_attention.py``) and the copy-bandwidth
yardstick in ``tools/bench.py`` time through :func:`median_ms`, so every row of the table is measured alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["median_ms", "forward_backward"]


def median_ms(fn: Callable[[], object], grad_to_none: Sequence[torch.Tensor] | None = None) -> float:
    """Median time of ``fn()`` in ms: two untimed calls first (Triton and ``torch.compile`` compile there),
    then ``do_bench`` (25 ms warm-up, 100 ms of repeats, L2 flushed before each; ``.grad`` of
    ``grad_to_none`` reset between repeats so a backward does not accumulate)."""
    import triton.testing

    fn()
    fn()
    torch.cuda.synchronize()
    return float(
        triton.testing.do_bench(
            fn,
            warmup=25,
            rep=100,
            grad_to_none=list(grad_to_none) if grad_to_none else None,
            return_mode="median",
        )
    )


def forward_backward(fn: Callable[[], object], grads: Sequence[torch.Tensor]) -> Callable[[], None]:
    """A step running ``fn()`` then the backward from the fixed output gradients ``grads`` (one per output)."""

    def step() -> None:
        outputs = fn()
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        torch.autograd.backward(outputs, tuple(grads))

    return step
