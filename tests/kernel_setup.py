"""What the kernel tests share: the device they run on, the skip when no kernel would run, dtype test ids.

Imported by ``tests/test_kernels_*.py`` (pytest puts ``tests/`` on ``sys.path``). Importing it skips the
importing module when Triton is missing (``shared.kernels`` still imports and falls back to the references)
or when Triton is present but a call would run the PyTorch reference, not a kernel (``TRITON_INTERPRET=1``
set by hand on a CUDA machine).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from shared.kernels import backend  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"
if backend(torch.empty(1, device=DEVICE)) == "torch":
    pytest.skip("shared.kernels would run the PyTorch reference here, not a kernel", allow_module_level=True)


def dtype_ids(value):
    """Test ids: "bfloat16" rather than "torch.bfloat16" or "dtype1"."""
    return str(value).removeprefix("torch.") if isinstance(value, torch.dtype) else None
