"""A serving step and the batched execute path, free of Triton's ``pb_utils``.

Triton hands a Python model every request the dynamic batcher grouped. :func:`run_batch`
checks each request on its own (declared dtype and shape, batch >= 1, dim bounds,
NaN/Inf, value ranges, BYTES sizes, the deadline), lets the step validate and prepare
it, computes the good ones as one batch and splits the outputs back. A bad request gets
a :class:`~ecomgen.errors.RequestError` naming the problem; its neighbours are
unaffected. If computing the batch fails, each request is computed alone, so only the
request that caused the failure fails. ``triton_backend`` turns the results into Triton
responses; tests drive this module directly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecomgen.errors import DeadlineExceeded, Overloaded, RequestError
from ecomgen.numerics import check_finite, check_range
from ecomgen.serving.admission import Admission
from ecomgen.serving.networks import InProcess, Networks
from ecomgen_client.contracts import TensorSpec

log = logging.getLogger("ecomgen.serving")

DEADLINE = "deadline_ns"
ROW_EWMA = 0.2  # weight of the newest execution in a step's time per row, when it is faster


@dataclass(frozen=True)
class TensorInfo:
    """A declared tensor as a step sees it (dims exclude the batch axis, -1 = any)."""

    name: str
    dtype: np.dtype
    dims: tuple[int, ...]
    optional: bool = False
    value_range: tuple[float, float] | None = None
    min_dims: tuple[int, ...] | None = None
    max_dims: tuple[int, ...] | None = None
    max_bytes: int = 0

    @classmethod
    def from_config(cls, t: Mapping[str, Any], params: Mapping[str, str]) -> TensorInfo:
        spec = TensorSpec.from_config(t, params)
        return cls(
            spec.name,
            spec.numpy_dtype,
            spec.dims,
            spec.optional,
            spec.value_range,
            spec.min_dims,
            spec.max_dims,
            spec.max_bytes,
        )


@dataclass
class StepConfig:
    """What a step knows about itself: its config.pbtxt, as Triton passes it, plus its directory.

    The deadline tensor is not among ``inputs``/``outputs``: the executor handles it
    (``stamps_deadline``: this step makes it; ``checks_deadline``: this step honours it),
    so a step's own code only sees its data.
    """

    name: str
    max_batch_size: int
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    params: dict[str, str] = field(default_factory=dict)
    model_dir: Path = Path(".")
    stamps_deadline: bool = False
    checks_deadline: bool = False
    # The ensemble's door (first step) takes an admission ticket per request; its exit (last step
    # with the deadline) gives it back. ``admission_size`` is the bound on requests inside.
    admits: str = ""
    releases: str = ""
    admission_size: int = 0

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    @classmethod
    def from_model_config(cls, config: Mapping[str, Any], model_dir: Path) -> StepConfig:
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        inputs = {t["name"]: TensorInfo.from_config(t, params) for t in config.get("input", [])}
        outputs = {t["name"]: TensorInfo.from_config(t, params) for t in config.get("output", [])}
        checks, stamps = inputs.pop(DEADLINE, None) is not None, outputs.pop(DEADLINE, None) is not None
        # The door of an ensemble declares every input optional (so Triton always runs it) and
        # lists the ones the contract requires: it names a missing one instead of a deadlock.
        for name in json.loads(params.get("required_inputs", "[]")):
            if name in inputs:
                inputs[name] = dataclasses.replace(inputs[name], optional=False)
        return cls(
            name=config["name"],
            max_batch_size=int(config.get("max_batch_size", 0)),
            inputs=inputs,
            outputs=outputs,
            params=params,
            model_dir=model_dir,
            stamps_deadline=stamps,
            checks_deadline=checks,
            admits=params.get("admission.admit", ""),
            releases=params.get("admission.release", ""),
            admission_size=int(params.get("admission.size", "0")),
        )


class Step:
    """Subclasses implement ``compute`` (per batch) and may add ``validate``/``prepare`` (per request).

    Declared dtypes, shapes, dim bounds, value ranges and NaN/Inf are checked before
    ``validate`` is called, so a step only checks what its config cannot express.
    """

    def __init__(self, config: StepConfig, networks: Networks | None = None) -> None:
        self.config = config
        self.params = config.params
        door = config.admits or config.releases
        self.admission = Admission(door, config.admission_size) if door and config.admission_size else None
        # The deadline of the request an unbatched step is computing (0: none).
        self.deadline_ns = 0
        # Seconds of compute per row (EWMA over executions): what a batch will take (``_trim``).
        self.row_s = 0.0
        # The networks the step runs itself (``PythonStep.calls``): in this process on the cpu target,
        # through Triton's BLS API on the gpu target (the backend passes that one in).
        calls = json.loads(config.params.get("calls", "{}"))
        self.networks: Networks = networks or InProcess(config.model_dir, calls, config.params)
        self.setup()

    def setup(self) -> None:
        """Load weights etc.; ``self.params`` holds the config's parameters."""

    def validate(self, arrays: dict[str, np.ndarray]) -> None:
        """Raise RequestError for a bad request."""

    def prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-request transform after ``validate`` (e.g. decode or resize), so requests concatenate."""
        return arrays

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


@dataclass
class Request:
    """One request's input arrays as read from Triton, and its timeout (0 = none)."""

    arrays: dict[str, np.ndarray]
    timeout_us: int = 0


Result = dict[str, np.ndarray] | Exception


def _shape_error(info: TensorInfo, shape: tuple[int, ...], batched: bool) -> str | None:
    dims = (-1, *info.dims) if batched else info.dims
    if len(shape) != len(dims) or any(d >= 0 and s != d for s, d in zip(shape, dims, strict=True)):
        shown = ", ".join("batch" if batched and i == 0 else str(d) for i, d in enumerate(dims))
        return f"input '{info.name}' has shape {list(shape)}, expected [{shown}]"
    inner = shape[1:] if batched else shape
    for i, (s, d) in enumerate(zip(inner, info.dims, strict=True)):
        lo = info.min_dims[i] if info.min_dims else 0
        hi = info.max_dims[i] if info.max_dims else None
        if d < 0 and (s < max(lo, 1) or (hi is not None and s > hi)):
            # Axes are counted in the shape as sent, the batch axis (if any) being axis 0.
            axis = i + 1 if batched else i
            return (
                f"input '{info.name}' has shape {list(shape)}: axis {axis} is {s}, "
                f"allowed [{max(lo, 1)}, {hi if hi is not None else 'any'}]"
                + (" (axis 0 is the batch)" if batched else "")
            )
    return None


def check_inputs(config: StepConfig, arrays: Mapping[str, np.ndarray]) -> int:
    """The declared checks of one request; returns its batch size (1 for unbatched steps)."""
    batch: int | None = None
    for name, info in config.inputs.items():
        if name not in arrays:
            if info.optional:
                continue
            raise RequestError(f"missing required input '{name}'")
        array = arrays[name]
        # Triton hands a batch-size-0 request to the backend with the batch axis dropped.
        if config.batched and (array.ndim == len(info.dims) or (array.ndim > 0 and array.shape[0] == 0)):
            raise RequestError(f"input '{name}' is an empty batch (batch size 0)")
        if array.dtype != info.dtype and not (info.dtype == np.object_ and array.dtype.kind in "OS"):
            raise RequestError(f"input '{name}' has dtype {array.dtype}, expected {info.dtype}")
        problem = _shape_error(info, tuple(array.shape), config.batched)
        if problem:
            raise RequestError(problem)
        if config.batched:
            if batch is not None and array.shape[0] != batch:
                raise RequestError(f"input '{name}' has batch {array.shape[0]}, other inputs {batch}")
            batch = int(array.shape[0])
        if info.dtype == np.object_:
            for value in array.reshape(-1):
                size = len(value) if isinstance(value, bytes | str) else -1
                if size < 0:
                    raise RequestError(f"input '{name}' holds a {type(value).__name__}, expected bytes")
                if info.max_bytes and size > info.max_bytes:
                    raise RequestError(f"input '{name}' is {size} bytes; the limit is {info.max_bytes}")
            continue
        check_finite(name, array)
        if info.value_range is not None:
            check_range(name, array, *info.value_range)
    return batch or 1


def deadline_ns(request: Request, default_us: int) -> int:
    """The absolute deadline of a request arriving now (CLOCK_MONOTONIC is shared by every process)."""
    budget = request.timeout_us or default_us
    return time.monotonic_ns() + budget * 1000 if budget > 0 else 0


def due_ns(request: Request | Exception) -> int:
    """The deadline a request carries from the ensemble's door (0: none)."""
    if isinstance(request, Exception) or DEADLINE not in request.arrays:
        return 0
    values = request.arrays[DEADLINE].reshape(-1)
    return int(values.min()) if values.size else 0


def check_deadline(due: int) -> None:
    if due > 0 and time.monotonic_ns() > due:
        raise DeadlineExceeded("deadline exceeded before this step ran; the request was dropped")


def _parse(
    step: Step, request: Request | Exception, default_deadline_us: int, admitted: list[int]
) -> tuple[dict[str, np.ndarray], int]:
    if isinstance(request, Exception):
        raise request
    arrays = dict(request.arrays)
    check_deadline(due_ns(request))
    arrays.pop(DEADLINE, None)
    batch = check_inputs(step.config, arrays)
    step.validate(arrays)
    arrays = step.prepare(arrays)
    if step.config.stamps_deadline or step.config.admits:
        due = deadline_ns(request, default_deadline_us)
        if step.admission is not None and step.config.admits:
            step.admission.admit(due)  # Overloaded: refused here, before any expensive step
            admitted.append(due)
        # Kept beside the inputs: the step's own compute may read it (``deadline_of``), and the
        # ensemble passes it on when the step stamps it.
        shape = (batch, 1) if step.config.batched else (1,)
        arrays[DEADLINE] = np.full(shape, due, dtype=np.int64)
    return arrays, batch


def _compute(step: Step, parsed: list[dict[str, np.ndarray]], sizes: list[int]) -> list[Result]:
    passthrough = step.config.stamps_deadline
    if step.config.batched:
        keys = [k for k in parsed[0] if k != DEADLINE]
        batch = {
            k: parsed[0][k] if len(parsed) == 1 else np.concatenate([p[k] for p in parsed]) for k in keys
        }
        out = step.compute(batch)
        offsets = np.cumsum([0, *sizes])
        results: list[Result] = []
        for p, start, stop in zip(parsed, offsets[:-1], offsets[1:], strict=True):
            part = {k: v[start:stop] for k, v in out.items()}
            if passthrough:
                part[DEADLINE] = p[DEADLINE]
            results.append(part)
        return results
    results = []
    for p in parsed:
        # One request at a time: its deadline is the step's while it computes (networks it calls
        # drop the work once it has passed).
        step.deadline_ns = int(p[DEADLINE].reshape(-1)[0]) if DEADLINE in p else 0
        part = step.compute({k: v for k, v in p.items() if k != DEADLINE})
        if passthrough:
            part[DEADLINE] = p[DEADLINE]
        results.append(part)
    return results


def _check_outputs(step: Step, out: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    final = {DEADLINE: out[DEADLINE]} if step.config.stamps_deadline else {}
    for name, info in step.config.outputs.items():
        if name not in out:
            if info.optional:
                continue
            raise RuntimeError(f"{step.config.name} produced no output {name!r}")
        value = np.asarray(out[name])
        if step.config.batched and value.shape[0] != batch:
            raise RuntimeError(
                f"{step.config.name}: output {name!r} has batch {value.shape[0]}, expected {batch}"
            )
        if info.max_bytes and info.dtype == np.object_:
            # The declared bound is what /dev/shm and the pod's memory are sized for.
            largest = max((len(v) for v in value.reshape(-1)), default=0)
            if largest > info.max_bytes:
                raise RuntimeError(f"output {name!r} is {largest} bytes, above its {info.max_bytes}")
        final[name] = np.ascontiguousarray(value.astype(info.dtype, copy=False))
    return final


def run_batch(
    step: Step, requests: Sequence[Request | Exception], default_deadline_us: int = 0
) -> list[Result]:
    """Every request's outputs, or the exception that answers it."""
    results: list[Result] = [RuntimeError("not computed")] * len(requests)
    good: list[int] = []
    parsed: list[dict[str, np.ndarray]] = []
    sizes: list[int] = []
    # The tickets this step took as a door; an ensemble's exit gives back those its requests carry.
    admitted: list[int] = []
    for i, request in enumerate(requests):
        try:
            arrays, batch = _parse(step, request, default_deadline_us, admitted)
        except (RequestError, DeadlineExceeded, Overloaded) as e:
            results[i] = e
            continue
        except Exception as e:  # a bug, or an input no check foresaw: answer, log, keep serving
            log.exception("%s: preparing a request failed", step.config.name)
            results[i] = RuntimeError(f"internal error while preparing the request ({type(e).__name__})")
            continue
        good.append(i)
        parsed.append(arrays)
        sizes.append(batch)
    good, parsed, sizes = _trim(step, requests, good, parsed, sizes, results)
    if good:
        start = time.perf_counter()
        _compute_good(step, good, parsed, sizes, results)
        per_row = (time.perf_counter() - start) / max(1, sum(sizes))
        step.row_s = row_estimate(step.row_s, per_row)
    if step.admission is not None and step.config.releases:
        # The exit answers every request that reached it, good or not: its ticket is free again.
        # (A model of one step is its own door and exit: the tickets it took just now.)
        dues = admitted if step.config.admits else [due_ns(r) for r in requests]
        for due in dues:
            step.admission.release(due)
    return results


def row_estimate(previous: float, newest: float) -> float:
    """A step's time per row for trimming: up at once when an execution was slower (the host got
    busier: a kept batch must still answer in time), down slowly (EWMA) when it was faster."""
    if previous == 0.0 or newest >= previous:
        return newest
    return ROW_EWMA * newest + (1 - ROW_EWMA) * previous


def _trim(
    step: Step,
    requests: Sequence[Request | Exception],
    good: list[int],
    parsed: list[dict[str, np.ndarray]],
    sizes: list[int],
    results: list[Result],
) -> tuple[list[int], list[dict[str, np.ndarray]], list[int]]:
    """Drop, before computing, the requests this batch would answer after their deadline (this
    step's time per row so far, times the batch's rows): no work for rows that cannot make it."""
    if step.row_s == 0.0 or not good:
        return good, parsed, sizes
    finish = time.monotonic_ns() + int(step.row_s * sum(sizes) * 1e9)
    keep = []
    for k, i in enumerate(good):
        due = due_ns(requests[i]) or (int(parsed[k][DEADLINE].reshape(-1)[0]) if DEADLINE in parsed[k] else 0)
        if 0 < due < finish:
            results[i] = DeadlineExceeded(
                "deadline exceeded: this step would answer after it; dropped before computing"
            )
        else:
            keep.append(k)
    if len(keep) == len(good):
        return good, parsed, sizes
    return [good[k] for k in keep], [parsed[k] for k in keep], [sizes[k] for k in keep]


def _compute_good(
    step: Step, good: list[int], parsed: list[dict[str, np.ndarray]], sizes: list[int], results: list[Result]
) -> None:
    try:
        computed = _compute(step, parsed, sizes)
    except Exception:
        if len(good) == 1:
            computed = [_isolated(step, parsed[0], sizes[0])]
        else:  # find the request that breaks the batch: compute each one alone
            computed = [_isolated(step, p, n) for p, n in zip(parsed, sizes, strict=True)]
    for i, out, n in zip(good, computed, sizes, strict=True):
        if isinstance(out, Exception):
            results[i] = out
            continue
        try:
            results[i] = _check_outputs(step, out, n)
        except Exception as e:
            log.exception("%s: bad output", step.config.name)
            results[i] = RuntimeError(f"internal error: {e}")


def _isolated(step: Step, parsed: dict[str, np.ndarray], size: int) -> Result:
    try:
        return _compute(step, [parsed], [size])[0]
    except (RequestError, DeadlineExceeded) as e:
        return e
    except Exception as e:
        log.exception("%s: compute failed", step.config.name)
        return RuntimeError(f"internal error while computing ({type(e).__name__})")
