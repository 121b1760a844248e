"""Transport-free logic shared by the sync and async clients.

Validation against the contract, request building and chunking, the retry policy with
its throttle, and the endpoint pool that spreads requests over several servers.
"""

from __future__ import annotations

import contextvars
import itertools
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient

from .contracts import CONTRACTS, Contract, TensorSpec
from .errors import (
    EcomgenError,
    InvalidInputError,
    RequestTimeoutError,
    ServerError,
    ServerOverloadedError,
    ServerUnavailableError,
)

Array = npt.NDArray[Any]
T = TypeVar("T")

# The endpoint that answered the last successful request of this thread (or asyncio task): set by
# the retry plan, read by callers that spread work over several endpoints (the batch tool).
SERVED_BY: contextvars.ContextVar[str | None] = contextvars.ContextVar("ecomgen_served_by", default=None)


class InferResultLike(Protocol):
    """What the clients need from ``tritonclient.grpc.InferResult`` (lets tests fake it)."""

    def as_numpy(self, name: str) -> Array | None: ...


def known_contract(model: str | Contract) -> Contract | None:
    if isinstance(model, Contract):
        return model
    return CONTRACTS.get(model)


# --- retries -----------------------------------------------------------------------------


class RetryThrottle:
    """gRPC's retry throttling: a token bucket shared by every call of one client.

    Each failed attempt takes a token, each success gives back ``token_ratio``; retries
    are allowed only while more than half the tokens are left. When a server is
    overloaded or down for everyone, retries stop after a few failures instead of
    multiplying the load (gRPC A6, "Retry Throttling").
    """

    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        if max_tokens <= 0 or token_ratio <= 0:
            raise ValueError("max_tokens and token_ratio must be > 0")
        self.max_tokens, self.token_ratio = max_tokens, token_ratio
        self.tokens = max_tokens
        self._lock = threading.Lock()

    def on_success(self) -> None:
        with self._lock:
            self.tokens = min(self.max_tokens, self.tokens + self.token_ratio)

    def on_failure(self) -> None:
        with self._lock:
            self.tokens = max(0.0, self.tokens - 1.0)

    def allows_retry(self) -> bool:
        with self._lock:
            return self.tokens > self.max_tokens / 2


@dataclass
class RetryPolicy:
    """``retries`` extra attempts after the first, within the call's deadline and the throttle.

    A server that is down or draining (UNAVAILABLE) is retried with exponential backoff
    and jitter, on another endpoint when there is one. An overloaded server (queue full,
    queue timeout) is never retried on the same endpoint: that would add load exactly when
    it is shedding it; with several endpoints the request may move to another one.
    """

    retries: int = 3
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    throttle: RetryThrottle = field(default_factory=RetryThrottle)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {self.backoff_s}")

    def should_retry(self, error: EcomgenError, attempt: int, endpoints: int = 1) -> bool:
        """``attempt`` counts from 0; other errors would fail the same way again.

        Failing over from an endpoint that is down to one not yet tried moves load rather than
        adding it, so it does not need a throttle token (once per other endpoint); every other
        retry does.
        """
        if attempt >= self.retries:
            return False
        if isinstance(error, ServerOverloadedError):
            return endpoints > 1 and self.throttle.allows_retry()
        if not isinstance(error, ServerUnavailableError):
            return False
        return attempt < endpoints - 1 or self.throttle.allows_retry()

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with "equal jitter": in [d/2, d] for d = backoff_s * 2**attempt.

        Jitter keeps many clients that failed together from retrying in lockstep.
        """
        d = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        uniform = rng.uniform if rng is not None else random.uniform
        return d / 2 + uniform(0.0, d / 2)

    def final(self, error: EcomgenError, attempt: int) -> EcomgenError:
        """The error to raise once we stop; says how often the call was tried."""
        if attempt > 0:
            return type(error)(f"{error.message} (gave up after {attempt + 1} attempts)", status=error.status)
        return error


class Deadline:
    """One deadline for a whole call: every attempt and retry gets only what is left."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.end = None if timeout_s is None else time.monotonic() + timeout_s

    def remaining(self) -> float | None:
        if self.end is None:
            return None
        left = self.end - time.monotonic()
        if left <= 0:
            raise RequestTimeoutError(
                f"deadline of {self.timeout_s:g} s exceeded", status="DEADLINE_EXCEEDED"
            )
        return left

    def server_timeout_us(self) -> int | None:
        """What is left, as Triton's per-request timeout: the server drops work nobody waits for."""
        left = self.remaining()
        return None if left is None else max(1, int(left * 1e6))


def check_timeout(timeout_s: float | None) -> float | None:
    if timeout_s is not None and timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s}")
    return timeout_s


# --- endpoints -------------------------------------------------------------------------


def parse_endpoints(url: str | Sequence[str]) -> list[str]:
    """``"a:8001"``, ``"a:8001,b:8001"``, a list of them, or one ``dns:///svc:8001`` target."""
    urls = [u.strip() for part in ([url] if isinstance(url, str) else url) for u in part.split(",")]
    urls = [u for u in urls if u]
    if not urls:
        raise ValueError("no endpoint given")
    if len(set(urls)) != len(urls):
        raise ValueError(f"duplicate endpoints in {urls}")
    return urls


def channel_args(url: str) -> list[tuple[str, Any]] | None:
    """A ``dns:///`` target resolves to every pod behind a headless Service; gRPC then
    balances calls round-robin across them instead of pinning one connection to one pod."""
    if url.startswith("dns:"):
        return [("grpc.lb_policy_name", "round_robin"), ("grpc.dns_min_time_between_resolutions_ms", 5000)]
    return None


class EndpointPool(Generic[T]):
    """Round-robin over several servers; an endpoint that fails is skipped for ``cooldown_s``."""

    def __init__(self, urls: Sequence[str], make: Callable[[str], T], cooldown_s: float = 2.0) -> None:
        self.urls = list(urls)
        self._make = make
        self._transports: dict[str, T] = {}
        self._down_until: dict[str, float] = {}
        self._cycle = itertools.cycle(range(len(self.urls)))
        self._lock = threading.Lock()
        self.cooldown_s = cooldown_s

    def __len__(self) -> int:
        return len(self.urls)

    def transport(self, url: str) -> T:
        with self._lock:
            if url not in self._transports:
                self._transports[url] = self._make(url)
            return self._transports[url]

    def pick(self, avoid: str | None = None) -> str:
        """The next endpoint in turn that is not cooling down (any, if all are)."""
        now = time.monotonic()
        with self._lock:
            start = next(self._cycle)
        order = self.urls[start:] + self.urls[:start]
        healthy = [u for u in order if self._down_until.get(u, 0.0) <= now and u != avoid]
        return (healthy or [u for u in order if u != avoid] or order)[0]

    def mark_down(self, url: str) -> None:
        self._down_until[url] = time.monotonic() + self.cooldown_s

    def mark_up(self, url: str) -> None:
        self._down_until.pop(url, None)

    def transports(self) -> list[T]:
        with self._lock:
            return list(self._transports.values())


# --- validation and requests --------------------------------------------------------------


def _dtype_ok(tensor: TensorSpec, arr: Array) -> bool:
    if tensor.dtype == "BYTES":
        return arr.dtype.kind in "OS"
    return arr.dtype == tensor.numpy_dtype


def _check_values(model: Contract, tensor: TensorSpec, arr: Array) -> None:
    if arr.size == 0:
        return
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InvalidInputError(f"{model.name}: input {tensor.name!r} contains NaN or Inf")
    if tensor.value_range is not None and arr.dtype.kind in "iuf":
        lo, hi = tensor.value_range
        # Python numbers: comparing int64 and uint64 extremes in numpy can go through float.
        got_lo, got_hi = arr.min().item(), arr.max().item()
        if got_lo < lo or got_hi > hi:
            bad = got_lo if got_lo < lo else got_hi
            raise InvalidInputError(
                f"{model.name}: input {tensor.name!r} value {bad} out of range [{lo:g}, {hi:g}]"
            )
    if tensor.dtype == "BYTES" and tensor.max_bytes:
        for v in arr.reshape(-1):
            if len(v) > tensor.max_bytes:
                raise InvalidInputError(
                    f"{model.name}: input {tensor.name!r} is {len(v)} bytes; the limit is {tensor.max_bytes}"
                )


def _check_shape(model: Contract, tensor: TensorSpec, arr: Array) -> None:
    batched = model.batched
    expected: tuple[int | str, ...] = ("N", *tensor.dims) if batched else tensor.dims
    fits = len(arr.shape) == len(expected) and all(
        e == "N" or (isinstance(e, int) and (e < 0 or e == s))
        for e, s in zip(expected, arr.shape, strict=True)
    )
    if not fits:
        shown = "[" + ", ".join(str(e) for e in expected) + "]"
        raise InvalidInputError(
            f"{model.name}: input {tensor.name!r} shape {list(arr.shape)} does not match {shown}"
        )
    inner = arr.shape[1:] if batched else arr.shape
    for i, (d, s) in enumerate(zip(tensor.dims, inner, strict=True)):
        lo = tensor.min_dims[i] if tensor.min_dims else 1
        hi = tensor.max_dims[i] if tensor.max_dims else None
        if d < 0 and (s < lo or (hi is not None and s > hi)):
            raise InvalidInputError(
                f"{model.name}: input {tensor.name!r} shape {list(arr.shape)}: dim {i} is {s}, "
                f"allowed [{lo}, {hi if hi is not None else 'any'}]"
            )


def validate_inputs(model: Contract, inputs: Mapping[str, Array]) -> int:
    """Check names, dtypes, shapes, bounds and values against the contract; return the batch size.

    Dtypes must match exactly: silently casting (e.g. float seeds) would hide caller bugs.
    """
    known = {t.name for t in model.inputs}
    unknown = sorted(set(inputs) - known)
    if unknown:
        raise InvalidInputError(f"{model.name}: unknown inputs {unknown}; expected {sorted(known)}")
    batch_sizes: dict[str, int] = {}
    for tensor in model.inputs:
        if tensor.name not in inputs:
            if not tensor.optional:
                raise InvalidInputError(f"{model.name}: missing required input {tensor.name!r}")
            continue
        arr = inputs[tensor.name]
        if not isinstance(arr, np.ndarray):
            raise InvalidInputError(
                f"{model.name}: input {tensor.name!r} must be a numpy array, got {type(arr).__name__}"
            )
        if not _dtype_ok(tensor, arr):
            raise InvalidInputError(
                f"{model.name}: input {tensor.name!r} has dtype {arr.dtype}, expected {tensor.numpy_dtype}"
            )
        _check_shape(model, tensor, arr)
        if model.batched:
            batch_sizes[tensor.name] = arr.shape[0]
        _check_values(model, tensor, arr)
    if not model.batched:
        return 1
    sizes = set(batch_sizes.values())
    if len(sizes) > 1:
        raise InvalidInputError(f"{model.name}: inputs disagree on the batch size: {batch_sizes}")
    batch = sizes.pop() if sizes else 0
    if batch == 0:
        raise InvalidInputError(f"{model.name}: empty batch")
    return batch


def chunk_slices(batch: int, max_batch_size: int) -> list[slice]:
    """Split ``batch`` rows into consecutive requests of at most ``max_batch_size`` (0 = no batching)."""
    if batch <= 0:
        return []
    if max_batch_size <= 0:
        return [slice(0, batch)]
    return [slice(i, min(i + max_batch_size, batch)) for i in range(0, batch, max_batch_size)]


@dataclass(frozen=True)
class PreparedRequest:
    """One gRPC request: serialized inputs for ``batch`` rows plus the outputs to return."""

    inputs: list[grpcclient.InferInput]
    outputs: list[grpcclient.InferRequestedOutput]
    batch: int


def plan_chunks(model: Contract, inputs: Mapping[str, Array]) -> list[slice | None]:
    """Validate ``inputs`` and return the row ranges to send (None: a model without batching)."""
    batch = validate_inputs(model, inputs)
    if not model.batched:
        return [None]
    return list(chunk_slices(batch, model.max_batch_size))


def build_request(
    model: Contract,
    inputs: Mapping[str, Array],
    rows: slice | None,
    requested: Sequence[str] | None = None,
) -> PreparedRequest:
    """Serialize rows ``rows`` of every given input (per chunk, so big batches are not copied twice).

    ``requested``: the outputs to ask for (default: all of the contract's).
    """
    infer_inputs = []
    batch = 1
    for tensor in model.inputs:
        if tensor.name not in inputs:
            continue
        arr = inputs[tensor.name]
        if rows is not None:
            arr = arr[rows]
            batch = arr.shape[0]
        arr = np.ascontiguousarray(arr)
        infer_input = grpcclient.InferInput(tensor.name, list(arr.shape), tensor.dtype)
        infer_input.set_data_from_numpy(arr)
        infer_inputs.append(infer_input)
    names = [t.name for t in model.outputs] if requested is None else list(requested)
    unknown = sorted(set(names) - {t.name for t in model.outputs})
    if unknown:
        raise InvalidInputError(f"{model.name}: unknown outputs {unknown}")
    outputs = [grpcclient.InferRequestedOutput(n) for n in names]
    return PreparedRequest(infer_inputs, outputs, batch)


def read_outputs(
    model: Contract, result: InferResultLike, batch: int, requested: Sequence[str] | None = None
) -> dict[str, Array]:
    """Extract every requested output and check it against the contract, so drift fails loudly."""
    out: dict[str, Array] = {}
    for tensor in model.outputs:
        if requested is not None and tensor.name not in requested:
            continue
        arr = result.as_numpy(tensor.name)
        if arr is None:
            if tensor.optional and requested is None:
                continue
            raise ServerError(f"{model.name}: response has no output {tensor.name!r}")
        if tensor.dtype != "BYTES" and arr.dtype != tensor.numpy_dtype:
            raise ServerError(
                f"{model.name}: output {tensor.name!r} dtype {arr.dtype} != {tensor.numpy_dtype}"
            )
        expected = tensor.batched_shape(batch) if model.batched else tensor.dims
        if len(arr.shape) != len(expected) or any(
            e >= 0 and e != s for e, s in zip(expected, arr.shape, strict=True)
        ):
            raise ServerError(
                f"{model.name}: output {tensor.name!r} shape {list(arr.shape)} != expected {list(expected)}"
            )
        out[tensor.name] = arr
    return out


def concat_outputs(parts: Sequence[dict[str, Array]]) -> dict[str, Array]:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}


@dataclass(frozen=True)
class Call(Generic[T]):
    """A typed operation: which model, which inputs, and how to turn the outputs into a result.

    The typed helpers (``generate_products``, ``try_on``, ...) build one of these once
    (``ecomgen_client.ops``); the sync and async clients only differ in how they send it.
    """

    model: Contract
    inputs: Mapping[str, Array]
    finish: Callable[[dict[str, Array]], T]
    outputs: tuple[str, ...] | None = None


# --- one call, with retries, as a plan both clients drive --------------------------------


@dataclass(frozen=True)
class Send:
    """Send the request to ``url`` with these timeouts, then report the result or the exception."""

    url: str
    client_timeout: float | None
    server_timeout_us: int | None


@dataclass(frozen=True)
class Sleep:
    seconds: float


Outcome = Any  # an InferResult, or the InferenceServerException the attempt raised


def attempts(
    pool: EndpointPool[Any], retry: RetryPolicy, model: str, deadline: Deadline
) -> Any:  # Generator[Send | Sleep, Outcome, InferResultLike]
    """The retry loop as a generator, so the sync and async clients share every decision.

    Yields :class:`Send` (the driver answers with the result or the exception) and
    :class:`Sleep`; returns the result, or raises the client error to give up with.
    """
    from tritonclient.utils import InferenceServerException

    from .errors import from_triton_error

    attempt, last = 0, None
    while True:
        url = pool.pick(avoid=last)
        outcome = yield Send(url, deadline.remaining(), deadline.server_timeout_us())
        if not isinstance(outcome, InferenceServerException):
            retry.throttle.on_success()
            pool.mark_up(url)
            SERVED_BY.set(url)
            return outcome
        error = from_triton_error(outcome, known_model=model in CONTRACTS)
        retry.throttle.on_failure()
        if isinstance(error, ServerUnavailableError):
            pool.mark_down(url)
        if not retry.should_retry(error, attempt, len(pool)):
            raise retry.final(error, attempt) from outcome
        left = deadline.remaining()
        yield Sleep(retry.delay(attempt) if left is None else min(retry.delay(attempt), left))
        attempt, last = attempt + 1, url
