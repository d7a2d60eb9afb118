"""shared.utils: seeding, device choice, check_tensor and assert_close (including its messages)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.utils import assert_close, check_tensor, error_bound, pick_device, seed_everything

# ---------------------------------------------------------------- seed_everything


def _draws(gen: torch.Generator) -> tuple:
    legacy_numpy = float(np.random.rand())  # noqa: NPY002 (seed_everything seeds numpy's global state)
    return random.random(), legacy_numpy, torch.rand(3).tolist(), torch.rand(2, generator=gen).tolist()


def test_seed_everything_repeats_every_generator():
    first = _draws(seed_everything(123))
    second = _draws(seed_everything(123))
    assert first == second
    assert _draws(seed_everything(124)) != first


def test_seed_everything_returns_a_generator_seeded_like_torch():
    gen = seed_everything(7)
    assert isinstance(gen, torch.Generator) and gen.initial_seed() == 7
    assert torch.rand(4).tolist() == torch.rand(4, generator=torch.Generator().manual_seed(7)).tolist()
    assert torch.are_deterministic_algorithms_enabled()


def test_seed_everything_large_seed_wraps_for_numpy():
    seed_everything(2**40 + 5)  # numpy only takes 32-bit seeds
    a = np.random.rand()  # noqa: NPY002
    np.random.seed(5)  # noqa: NPY002
    assert a == np.random.rand()  # noqa: NPY002


@pytest.mark.parametrize("bad", [-1, 1.0, True, "0", None])
def test_seed_everything_bad_inputs(bad):
    with pytest.raises(ValueError, match="seed must be an int"):
        seed_everything(bad)


# ---------------------------------------------------------------- pick_device


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:1", "mps"])
def test_pick_device_prefer(name):
    assert pick_device(name) == torch.device(name)


def test_pick_device_default(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")


@pytest.mark.parametrize("bad", ["gpu", "CPU", "tpu", "", "cuda1"])
def test_pick_device_bad_inputs(bad):
    with pytest.raises(ValueError, match="prefer must be"):
        pick_device(bad)


# ---------------------------------------------------------------- check_tensor


def test_check_tensor_returns_its_input():
    x = torch.zeros(2, 3)
    assert check_tensor("x", x) is x
    assert check_tensor("x", x, ndim=2, dtype_kind="float") is x
    assert check_tensor("x", x, ndim=(1, 2)) is x
    assert check_tensor("i", torch.zeros(2, dtype=torch.int32), dtype_kind="int") is not None
    assert check_tensor("b", torch.zeros(2, dtype=torch.bool), dtype_kind="bool") is not None
    assert check_tensor("s", torch.tensor(1.0), ndim=0) is not None


@pytest.mark.parametrize(
    "x, kwargs, message",
    [
        ([1.0], {}, "x must be a torch.Tensor, got list"),
        (np.zeros(2), {}, "x must be a torch.Tensor, got ndarray"),
        (torch.zeros(2, 3), {"ndim": 3}, "x must have 3 dimensions, got shape (2, 3)"),
        (torch.zeros(2), {"ndim": (2, 4)}, "x must have 2 or 4 dimensions, got shape (2,)"),
        (
            torch.zeros(2, dtype=torch.long),
            {"dtype_kind": "float"},
            "must be a floating-point tensor, got torch.int64",
        ),
        (torch.zeros(2), {"dtype_kind": "int"}, "x must be an integer tensor, got torch.float32"),
        (
            torch.zeros(2, dtype=torch.bool),
            {"dtype_kind": "int"},
            "x must be an integer tensor, got torch.bool",
        ),
        (torch.zeros(2, dtype=torch.cfloat), {"dtype_kind": "int"}, "integer tensor, got torch.complex64"),
        (
            torch.zeros(2, dtype=torch.uint8),
            {"dtype_kind": "bool"},
            "x must be a bool tensor, got torch.uint8",
        ),
    ],
)
def test_check_tensor_messages(x, kwargs, message):
    with pytest.raises(ValueError) as info:
        check_tensor("x", x, **kwargs)
    assert message in str(info.value)


# ---------------------------------------------------------------- assert_close


def test_assert_close_returns_max_abs_error():
    a = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert assert_close(a, a.clone()) == 0.0
    err = assert_close(a + torch.tensor([0.0, 1e-7, -3e-7], dtype=torch.float64), a)
    assert err == pytest.approx(3e-7, rel=1e-6)
    assert isinstance(err, float)


def test_assert_close_uses_atol_plus_rtol_times_expected():
    expected = torch.tensor([100.0])
    assert_close(torch.tensor([100.5]), expected, atol=0.0, rtol=0.01)  # 0.5 <= 0.01 * 100
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([101.5]), expected, atol=0.0, rtol=0.01)
    assert_close(torch.tensor([101.5]), expected, atol=0.5, rtol=0.01)  # 1.5 <= 0.5 + 1.0
    with pytest.raises(AssertionError):  # rtol scales |expected|, not |actual|: not symmetric
        assert_close(torch.tensor([0.0]), torch.tensor([1.0]), atol=0.0, rtol=0.5)
    assert_close(torch.tensor([1.0]), torch.tensor([2.0]), atol=0.0, rtol=0.5)


def test_assert_close_failure_message_locates_the_worst_element():
    expected = torch.zeros(2, 3)
    actual = expected.clone()
    actual[0, 1] = 1e-3
    actual[1, 2] = -0.5
    with pytest.raises(AssertionError) as info:
        assert_close(actual, expected, atol=1e-4, rtol=0.0, name="logits")
    msg = str(info.value)
    assert msg.startswith("logits: 2 of 6 elements exceed atol=0.0001 + rtol=0*|expected|")
    assert "max abs error 0.5 at index (1, 2): -0.5 vs expected 0" in msg


def test_assert_close_scalar_and_empty():
    assert assert_close(torch.tensor(1.0), torch.tensor(1.0)) == 0.0
    with pytest.raises(AssertionError, match=r"at index \(\): 2 vs expected 1"):
        assert_close(torch.tensor(2.0), torch.tensor(1.0))
    assert assert_close(torch.zeros(0, 3), torch.zeros(0, 3)) == 0.0


def test_assert_close_shape_must_match_exactly():
    with pytest.raises(AssertionError, match=r"tensor: shape \(3,\) != expected \(1, 3\)"):
        assert_close(torch.zeros(3), torch.zeros(1, 3))  # would broadcast; refused


def test_assert_close_integers_and_bools_must_be_equal():
    assert assert_close(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3]), atol=10) == 0.0
    with pytest.raises(
        AssertionError, match=r"ids: 1 of 3 elements differ; first at index \(2,\): 4 != expected 3"
    ):
        assert_close(torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3]), atol=10, name="ids")
    with pytest.raises(
        AssertionError, match=r"1 of 4 elements differ; first at index \(1, 0\): True != expected False"
    ):
        assert_close(
            torch.tensor([[True, True], [True, False]]), torch.tensor([[True, True], [False, False]])
        )
    # an integer tensor against a float one is compared numerically
    assert assert_close(torch.tensor([1, 2]), torch.tensor([1.0, 2.0])) == 0.0


def test_assert_close_nan_and_inf():
    nan, inf = float("nan"), float("inf")
    assert assert_close(torch.tensor([1.0, nan]), torch.tensor([1.0, nan])) == 0.0  # NaN where expected: ok
    with pytest.raises(AssertionError, match=r"NaN in one tensor only, first at index \(1,\)"):
        assert_close(torch.tensor([1.0, nan]), torch.tensor([1.0, 2.0]))
    with pytest.raises(AssertionError, match="NaN in one tensor only"):
        assert_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, nan]))
    assert_close(torch.tensor([inf, -inf]), torch.tensor([inf, -inf]))  # equal infinities pass
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([inf]), torch.tensor([-inf]))
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([1.0]), torch.tensor([inf]))
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([inf]), torch.tensor([1.0]))


def test_assert_close_compares_on_cpu_in_float64_and_ignores_grad():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    assert assert_close(a * 1, torch.tensor([1.0, 2.0], dtype=torch.float64)) == 0.0
    assert assert_close(torch.tensor([0.1], dtype=torch.bfloat16), torch.tensor([0.1]), atol=1e-3) < 1e-3


def test_assert_close_bad_inputs():
    with pytest.raises(ValueError, match="compares two torch.Tensors"):
        assert_close([1.0], torch.tensor([1.0]))
    with pytest.raises(ValueError, match="compares two torch.Tensors"):
        assert_close(torch.tensor([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="atol and rtol must be finite numbers >= 0, got atol=-1"):
        assert_close(torch.tensor([1.0]), torch.tensor([1.0]), atol=-1)
    with pytest.raises(ValueError, match="rtol=-0.1"):
        assert_close(torch.tensor([1.0]), torch.tensor([1.0]), rtol=-0.1)


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=8),
    noise=st.floats(0.0, 1e-3),
    seed=st.integers(0, 2**16),
)
def test_assert_close_property_agrees_with_torch_isclose(values, noise, seed):
    expected = torch.tensor(values, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    actual = expected + noise * (2 * torch.rand(expected.shape, generator=g, dtype=torch.float64) - 1)
    atol, rtol = 1e-4, 1e-6
    ok = bool(torch.isclose(actual, expected, atol=atol, rtol=rtol).all())
    if ok:
        err = assert_close(actual, expected, atol=atol, rtol=rtol)
        assert err == pytest.approx(float((actual - expected).abs().max()))
    else:
        with pytest.raises(AssertionError):
            assert_close(actual, expected, atol=atol, rtol=rtol)


def test_check_tensor_rejects_unknown_dtype_kind():
    with pytest.raises(ValueError, match="dtype_kind must be"):
        check_tensor("x", torch.zeros(2), dtype_kind="floats")


@pytest.mark.parametrize(
    ("err", "floor", "expected"),
    [
        (3.6e-7, 1e-6, "< 1e-06"),
        (3.6e-7, 1e-9, "< 1e-06"),
        (1e-6, 1e-9, "< 1e-05"),
        (0.0, 1e-6, "< 1e-06"),
        (1.7e-16, 1e-12, "< 1e-12"),
        (0.02, 1e-6, "< 1e-01"),
    ],
)
def test_error_bound(err, floor, expected):
    assert error_bound(err, floor) == expected


@pytest.mark.parametrize(
    ("err", "floor"), [(-1.0, 1e-6), (float("nan"), 1e-6), (float("inf"), 1e-6), (1e-3, 0.0)]
)
def test_error_bound_rejects_bad_input(err, floor):
    with pytest.raises(ValueError):
        error_bound(err, floor)
