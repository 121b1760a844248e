"""The numpy helpers the Python-backend models share with training and tests."""

from __future__ import annotations

import numpy as np
import pytest

from export.triton_python.ecomgen_common import (
    RequestError,
    check_batched,
    check_range,
    latents_from_seeds,
    one_hot,
    to_uint8_hwc,
)


def test_latents_depend_only_on_the_seed():
    alone = latents_from_seeds(np.array([7]), 128)
    batch = latents_from_seeds(np.array([3, 7, 7, 11]), 128)
    assert batch.dtype == np.float32 and batch.shape == (4, 128)
    np.testing.assert_array_equal(alone[0], batch[1])
    np.testing.assert_array_equal(batch[1], batch[2])
    assert not np.allclose(batch[0], batch[1])
    assert abs(float(latents_from_seeds(np.arange(200), 128).std()) - 1.0) < 0.05


def test_latents_accept_the_largest_seed():
    assert latents_from_seeds(np.array([2**63 - 1]), 4).shape == (1, 4)


def test_one_hot_per_row():
    oh = one_hot(np.array([[2], [0], [2]], dtype=np.int32), 4)
    np.testing.assert_array_equal(oh, [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0]])


def test_to_uint8_hwc_rounds_and_clips():
    x = np.array([-2.0, -1.0, 0.0, 1.0, 5.0], dtype=np.float32).reshape(1, 1, 1, 5).repeat(3, 1)
    out = to_uint8_hwc(x)
    assert out.shape == (1, 1, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0, :, 0], [0, 0, 128, 255, 255])


def test_check_batched_names_the_problem():
    good = np.zeros((2, 1), np.int32)
    check_batched("class_id", good, (1,), np.dtype(np.int32))
    with pytest.raises(RequestError, match="'class_id' has dtype float32"):
        check_batched("class_id", good.astype(np.float32), (1,), np.dtype(np.int32))
    with pytest.raises(RequestError, match=r"shape \[2, 2\], expected \[batch, 1\]"):
        check_batched("class_id", np.zeros((2, 2), np.int32), (1,), np.dtype(np.int32))
    with pytest.raises(RequestError, match="empty batch"):
        check_batched("class_id", np.zeros((0, 1), np.int32), (1,), np.dtype(np.int32))


def test_check_range_reports_value_and_count():
    with pytest.raises(RequestError, match=r"'class_id' value 12 out of range \[0, 9\] \(2 of 3"):
        check_range("class_id", np.array([[12], [3], [-1]]), 0, 9)
    check_range("class_id", np.array([[0], [9]]), 0, 9)
