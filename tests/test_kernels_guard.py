"""Every public kernel of ``shared.kernels`` comes with bad-input tests, as every function of ``shared`` does.

``tests/test_bad_input.py`` guards the PyTorch modules; the kernels keep their cases beside their exactness
tests (``tests/test_kernels_<module>.py``): a ``test_<name>_bad_inputs`` test, or calls of ``<name>(`` in
the file's ``BAD = [...]`` list. Runs without Triton (the kernel modules import without it).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("module", ["rope", "rmsnorm", "flash_attention"])
def test_every_public_kernel_has_a_bad_input_test(module):
    mod = importlib.import_module(f"shared.kernels.{module}")
    name = "attention" if module == "flash_attention" else module
    source = (TESTS / f"test_kernels_{name}.py").read_text()
    bad = re.search(r"^BAD = \[(.*?)^\]", source, flags=re.S | re.M)
    public = [n for n in mod.__all__ if callable(getattr(mod, n))]
    assert public, f"shared.kernels.{module} exports no function"
    missing = [
        n
        for n in public
        if f"def test_{n}_bad_inputs" not in source and not (bad and f"{n}(" in bad.group(1))
    ]
    assert not missing, f"no bad-input test for shared.kernels.{module}.{missing}"
