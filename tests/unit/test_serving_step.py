"""The batched execute path without a server: per-request errors, isolation, deadlines.

``run_batch`` is what every Python model runs; ``triton_backend`` is driven here through
a fake ``triton_python_backend_utils`` so the pb_utils glue is tested too.
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ecomgen.errors import DeadlineExceeded, RequestError
from ecomgen.numerics import check_range, latents_from_seeds, one_hot, to_uint8_hwc
from ecomgen.serving.step import DEADLINE, Request, Step, StepConfig, TensorInfo, check_inputs, run_batch


def info(name: str, dtype: Any, dims: tuple[int, ...], **kw: Any) -> TensorInfo:
    return TensorInfo(name, np.dtype(dtype), dims, **kw)


class Doubler(Step):
    """Doubles ``x``; fails the whole batch when any row is exactly 13 (a "poison" request)."""

    def validate(self, arrays: dict[str, np.ndarray]) -> None:
        if (arrays["x"] == 7).any():
            raise RequestError("input 'x' may not contain 7")

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (batch["x"] == 13).any():
            raise ValueError("13 breaks the kernel")
        return {"y": batch["x"] * 2}


def doubler(max_batch: int = 8, outputs: dict[str, TensorInfo] | None = None) -> Doubler:
    config = StepConfig(
        name="doubler",
        max_batch_size=max_batch,
        inputs={"x": info("x", np.float32, (2,), value_range=(-100.0, 100.0))},
        outputs=outputs or {"y": info("y", np.float32, (2,))},
    )
    return Doubler(config)


def req(*rows: float, dtype: Any = np.float32) -> Request:
    return Request({"x": np.array([[r, r] for r in rows], dtype=dtype)})


def test_mixed_good_and_bad_batch_gives_per_request_errors():
    step = doubler()
    results = run_batch(
        step,
        [
            req(1, 2),
            Request({"x": np.zeros((0, 2), np.float32)}),  # batch 0
            req(3, dtype=np.float64),  # wrong dtype
            Request({"x": np.zeros((1, 3), np.float32)}),  # wrong shape
            req(float("nan")),
            req(500),  # out of range
            req(7),  # rejected by the step's own validate
            Request({}),  # missing input
            RequestError("an input could not be read (ValueError)"),  # failed in the backend glue
            req(4),
        ],
    )
    np.testing.assert_array_equal(results[0]["y"], [[2, 2], [4, 4]])
    np.testing.assert_array_equal(results[-1]["y"], [[8, 8]])
    messages = [str(r) for r in results[1:-1]]
    assert all(isinstance(r, RequestError) for r in results[1:-1])
    for fragment, message in zip(
        [
            "empty batch",
            "dtype float64",
            "shape [1, 3]",
            "NaN or Inf",
            "value 500",
            "may not contain 7",
            "missing required input 'x'",
            "could not be read",
        ],
        messages,
        strict=True,
    ):
        assert fragment in message, message


def test_a_request_that_breaks_the_batch_fails_alone():
    results = run_batch(doubler(), [req(1), req(13), req(2, 3)])
    assert results[0]["y"].tolist() == [[2, 2]]
    assert isinstance(results[1], RuntimeError) and "internal error" in str(results[1])
    assert "13" not in str(results[1])  # no traceback text or values leak into the answer
    assert results[2]["y"].tolist() == [[4, 4], [6, 6]]


def test_outputs_are_split_back_in_order_and_never_mixed():
    rng = np.random.default_rng(0)
    requests = [Request({"x": rng.uniform(-9, 9, (n, 2)).astype(np.float32)}) for n in (3, 1, 4)]
    results = run_batch(doubler(), requests)
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request.arrays["x"] * 2)


def test_unbatched_step_computes_each_request_alone():
    step = doubler(max_batch=0)
    step.config.inputs["x"] = info("x", np.float32, (-1, 2))
    results = run_batch(
        step, [Request({"x": np.ones((3, 2), np.float32)}), Request({"x": np.ones((1, 2), np.float32)})]
    )
    assert [r["y"].shape for r in results] == [(3, 2), (1, 2)]


def test_dim_bounds_and_bytes_limits_are_enforced():
    config = StepConfig(
        name="s",
        max_batch_size=4,
        inputs={
            "image": info("image", np.uint8, (-1, -1, 3), min_dims=(16, 16, 3), max_dims=(64, 64, 3)),
            "blob": info("blob", np.object_, (1,), max_bytes=10),
        },
        outputs={},
    )
    ok = {"image": np.zeros((1, 16, 64, 3), np.uint8), "blob": np.array([[b"x" * 10]], dtype=object)}
    assert check_inputs(config, ok) == 1
    with pytest.raises(RequestError, match="axis 1 is 15, allowed \\[16, 64\\]"):
        check_inputs(config, {**ok, "image": np.zeros((1, 15, 20, 3), np.uint8)})
    with pytest.raises(RequestError, match="axis 2 is 65"):
        check_inputs(config, {**ok, "image": np.zeros((1, 20, 65, 3), np.uint8)})
    with pytest.raises(RequestError, match="11 bytes; the limit is 10"):
        check_inputs(config, {**ok, "blob": np.array([[b"x" * 11]], dtype=object)})
    with pytest.raises(RequestError, match="holds a int"):
        check_inputs(config, {**ok, "blob": np.array([[5]], dtype=object)})


def test_deadline_is_stamped_by_the_first_step_and_honoured_by_later_ones(monkeypatch):
    first = doubler()
    first.config.stamps_deadline = True
    before = time.monotonic_ns()
    (stamped,) = run_batch(first, [Request({"x": np.ones((2, 2), np.float32)}, timeout_us=2_000_000)])
    due = stamped[DEADLINE]
    assert due.shape == (2, 1)
    assert before + 2_000_000_000 <= int(due[0, 0]) <= time.monotonic_ns() + 2_000_000_000
    # No client timeout: the model's default budget applies.
    (default,) = run_batch(first, [req(1)], default_deadline_us=5_000_000)
    assert int(default[DEADLINE][0, 0]) > time.monotonic_ns() + 4_000_000_000

    later = doubler()
    later.config.checks_deadline = True
    expired = Request({"x": np.ones((1, 2), np.float32), DEADLINE: np.array([[time.monotonic_ns() - 1]])})
    alive = Request({"x": np.ones((1, 2), np.float32), DEADLINE: np.array([[time.monotonic_ns() + 10**10]])})
    no_deadline = Request({"x": np.ones((1, 2), np.float32), DEADLINE: np.zeros((1, 1), np.int64)})
    results = run_batch(later, [expired, alive, no_deadline])
    assert isinstance(results[0], DeadlineExceeded)
    assert results[1]["y"].tolist() == [[2, 2]] and results[2]["y"].tolist() == [[2, 2]]


def test_latents_depend_only_on_the_seed():
    alone = latents_from_seeds(np.array([7]), 128)
    batch = latents_from_seeds(np.array([3, 7, 7, 11]), 128)
    assert batch.dtype == np.float32 and batch.shape == (4, 128)
    np.testing.assert_array_equal(alone[0], batch[1])
    np.testing.assert_array_equal(batch[1], batch[2])
    assert not np.allclose(batch[0], batch[1])
    assert abs(float(latents_from_seeds(np.arange(200), 128).std()) - 1.0) < 0.05
    # The contract: latent = Philox(seed) standard normal, on every host.
    expected = np.random.Generator(np.random.Philox(2**63 - 1)).standard_normal(4, dtype=np.float32)
    np.testing.assert_array_equal(latents_from_seeds(np.array([2**63 - 1]), 4)[0], expected)


def test_batched_key_derivation_is_numpys_seed_sequence_bit_for_bit():
    from ecomgen.numerics import philox_keys

    rng = np.random.default_rng(1)
    seeds = np.concatenate(
        [np.arange(50), rng.integers(0, 2**63 - 1, 300, dtype=np.int64), [2**32 - 1, 2**32]]
    )
    expected = np.stack([np.random.SeedSequence(int(s)).generate_state(2, np.uint64) for s in seeds])
    np.testing.assert_array_equal(philox_keys(seeds), expected)
    latents = latents_from_seeds(seeds[:40], 16)
    for s, z in zip(seeds[:40], latents, strict=True):
        np.testing.assert_array_equal(
            z, np.random.Generator(np.random.Philox(int(s))).standard_normal(16, np.float32)
        )


def test_one_hot_and_uint8_conversion():
    oh = one_hot(np.array([[2], [0], [2]], dtype=np.int32), 4)
    np.testing.assert_array_equal(oh, [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
    x = np.array([-2.0, -1.0, 0.0, 1.0, 5.0, np.nan], dtype=np.float32).reshape(1, 1, 1, 6).repeat(3, 1)
    out = to_uint8_hwc(x)
    assert out.shape == (1, 1, 6, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0, :, 0], [0, 0, 128, 255, 255, 0])


def test_check_range_reports_value_and_count():
    with pytest.raises(RequestError, match=r"'class_id' value 12 out of range \[0, 9\] \(2 of 3"):
        check_range("class_id", np.array([[12], [3], [-1]]), 0, 9)
    check_range("class_id", np.array([[0], [9]]), 0, 9)
    with pytest.raises(RequestError, match=r"value 1.5 out of range \[0, 1\]"):
        check_range("w", np.array([0.5, 1.5]), 0.0, 1.0)


# --- the pb_utils glue --------------------------------------------------------------------


class FakeTensor:
    def __init__(self, name: str, value: Any) -> None:
        self._name, self._value = name, value

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        if isinstance(self._value, Exception):
            raise self._value
        return self._value


class FakeRequest:
    def __init__(self, tensors: dict[str, Any], timeout: int = 0) -> None:
        self.tensors, self._timeout = tensors, timeout

    def is_cancelled(self) -> bool:
        raise AssertionError("a round trip to the server per request: the hot path must not call it")

    def timeout(self) -> int:
        return self._timeout


class FakeError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE = range(5)

    def __init__(self, message: str, code: int = 1) -> None:
        self.message, self.code = message, code


class FakeResponse:
    def __init__(
        self, output_tensors: list[FakeTensor] | None = None, error: FakeError | None = None
    ) -> None:
        self.output_tensors, self.error = output_tensors, error


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor = FakeTensor  # type: ignore[attr-defined]
    pb.TritonError = FakeError  # type: ignore[attr-defined]
    pb.InferenceResponse = FakeResponse  # type: ignore[attr-defined]
    pb.get_input_tensor_by_name = lambda r, name: (  # type: ignore[attr-defined]
        FakeTensor(name, r.tensors[name]) if name in r.tensors else None
    )
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    from ecomgen.serving.triton_backend import TritonPythonModel

    model = TritonPythonModel()
    config = {
        "name": "product_gan_post",
        "max_batch_size": 8,
        "input": [{"name": "image", "data_type": "TYPE_FP32", "dims": ["3", "2", "2"]}],
        "output": [{"name": "image", "data_type": "TYPE_UINT8", "dims": ["2", "2", "3"]}],
        "parameters": {"handler": {"string_value": "ecomgen.serving.handlers.convert:ToUint8"}},
    }
    model.initialize(
        {"model_config": json.dumps(config), "model_repository": str(tmp_path), "model_version": "1"}
    )
    return model


def test_backend_execute_answers_every_request_with_its_own_result_or_error(backend):
    good = np.zeros((2, 3, 2, 2), np.float32)
    responses = backend.execute(
        [
            FakeRequest({"image": good}),
            FakeRequest({"image": np.full((1, 3, 2, 2), np.nan, np.float32)}),
            FakeRequest({"image": ValueError("malformed BYTES")}),
            FakeRequest({"image": np.ones((1, 3, 2, 2), np.float32)}),
        ]
    )
    assert responses[0].error is None and responses[0].output_tensors[0].as_numpy().shape == (2, 2, 2, 3)
    assert responses[1].error.code == FakeError.INVALID_ARG and "NaN" in responses[1].error.message
    assert (
        responses[2].error.code == FakeError.INVALID_ARG and "could not be read" in responses[2].error.message
    )
    assert (responses[3].output_tensors[0].as_numpy() == 255).all()
    assert all(r.error is None or r.error.message.startswith("product_gan_post: ") for r in responses)


def test_backend_refuses_handlers_outside_the_serving_package():
    from ecomgen.serving.handlers import load_handler

    with pytest.raises(ValueError, match="must be"):
        load_handler("os:system")
    with pytest.raises(TypeError, match="not a Step"):
        load_handler("ecomgen.serving.handlers.convert:np")


def test_rows_that_would_answer_after_their_deadline_are_dropped_before_computing():
    """A batch runs only for the requests it can still answer in time (the step's time per row
    so far times the batch's rows): the others get DeadlineExceeded and cost no compute."""
    import time

    from ecomgen.errors import DeadlineExceeded
    from ecomgen.serving.step import DEADLINE

    step = doubler()
    seen: list[int] = []
    inner = step.compute
    step.compute = lambda batch: (seen.append(len(batch["x"])), inner(batch))[1]  # type: ignore[method-assign]
    step.row_s = 0.5  # half a second a row: a 3-row batch takes about 1.5 s
    now = time.monotonic_ns()

    def with_deadline(due_in_s: float, *rows: float) -> Request:
        r = req(*rows)
        r.arrays[DEADLINE] = np.full((len(rows), 1), now + int(due_in_s * 1e9), np.int64)
        return r

    results = run_batch(step, [with_deadline(60, 1), with_deadline(0.5, 2, 3), with_deadline(60, 4)])
    assert isinstance(results[1], DeadlineExceeded) and "dropped before computing" in str(results[1])
    assert [r["y"][0, 0] for r in (results[0], results[2])] == [2, 8]
    assert seen == [2]  # only the two rows that can make it were computed


def test_the_time_per_row_rises_at_once_and_falls_slowly():
    """Trimming must not keep a batch that the host, now busier, answers late: one slower
    execution raises the estimate to it at once; faster ones bring it down by an EWMA."""
    from ecomgen.serving.step import ROW_EWMA, row_estimate

    assert row_estimate(0.0, 0.01) == 0.01
    assert row_estimate(0.01, 0.05) == 0.05
    down = row_estimate(0.05, 0.01)
    assert down == pytest.approx(ROW_EWMA * 0.01 + (1 - ROW_EWMA) * 0.05) and 0.01 < down < 0.05
