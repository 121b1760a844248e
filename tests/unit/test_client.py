"""Unit tests of ecomgen_client that need no server: fake transports stand in for tritonclient."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import ecomgen_client
from ecomgen_client import (
    PRODUCT_GAN,
    AsyncProductClient,
    EcomgenError,
    InvalidInputError,
    ProductClient,
    QueueFullError,
    QueueTimeoutError,
    RequestTimeoutError,
    ServerError,
    ServerOverloadedError,
    ServerUnavailableError,
    _images,
    cli,
    from_triton_error,
)
from ecomgen_client._common import EndpointPool, RetryPolicy, RetryThrottle, channel_args, chunk_slices
from ecomgen_client.cli import parse_seeds
from ecomgen_client.ops import class_names as parse_class_names

H, W = 64, 48


def triton_error(code: str, msg: str = "boom") -> InferenceServerException:
    return InferenceServerException(msg=msg, status=f"StatusCode.{code}")


def decode(infer_input: grpcclient.InferInput) -> np.ndarray:
    dtype = {"INT32": np.int32, "INT64": np.int64}[infer_input.datatype()]
    return np.frombuffer(infer_input._get_content(), dtype=dtype).reshape(infer_input.shape())


class FakeResult:
    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self._outputs = outputs

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self._outputs.get(name)


def fake_images(inputs: list[grpcclient.InferInput]) -> dict[str, np.ndarray]:
    """Each image is filled with seed % 256 and its class id in channel 1, so order is checkable."""
    by_name = {i.name(): decode(i) for i in inputs}
    seeds, classes = by_name["seed"][:, 0], by_name["class_id"][:, 0]
    images = np.empty((len(seeds), H, W, 3), dtype=np.uint8)
    images[...] = (seeds % 256).astype(np.uint8)[:, None, None, None]
    images[..., 1] = classes.astype(np.uint8)[:, None, None]
    return {"image": images}


class FakeTransport:
    """Sync stand-in for tritonclient.grpc.InferenceServerClient."""

    def __init__(
        self,
        failures: list[InferenceServerException] | None = None,
        config: dict[str, Any] | None = None,
        respond: Callable[[list[grpcclient.InferInput]], dict[str, np.ndarray]] = fake_images,
    ) -> None:
        self.failures = list(failures or [])
        self.config = config if config is not None else {"config": {"name": "product_gan"}}
        self.respond = respond
        self.calls: list[dict[str, Any]] = []
        self.closed = False

    def _maybe_fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    def infer(
        self,
        model_name: str,
        inputs: list[grpcclient.InferInput],
        *,
        outputs: list[grpcclient.InferRequestedOutput] | None = None,
        client_timeout: float | None = None,
        timeout: int | None = None,
    ) -> FakeResult:
        self.calls.append(
            {
                "model": model_name,
                "shapes": {i.name(): i.shape() for i in inputs},
                "dtypes": {i.name(): i.datatype() for i in inputs},
                "outputs": [o.name() for o in outputs or []],
                "timeout": client_timeout,
                "server_timeout_us": timeout,
            }
        )
        self._maybe_fail()
        return FakeResult(self.respond(inputs))

    def is_model_ready(self, model_name: str, *, client_timeout: float | None = None) -> bool:
        self.calls.append({"ready": model_name})
        self._maybe_fail()
        return True

    def get_model_config(
        self, model_name: str, *, as_json: bool = False, client_timeout: float | None = None
    ) -> Any:
        self.calls.append({"config": model_name, "as_json": as_json})
        self._maybe_fail()
        return self.config

    def close(self) -> None:
        self.closed = True


class AsyncFakeTransport:
    """Async stand-in for tritonclient.grpc.aio.InferenceServerClient, wrapping the sync fake."""

    def __init__(self, sync: FakeTransport) -> None:
        self.sync = sync

    async def infer(
        self,
        model_name: str,
        inputs: list[grpcclient.InferInput],
        *,
        outputs: list[grpcclient.InferRequestedOutput] | None = None,
        client_timeout: float | None = None,
        timeout: int | None = None,
    ) -> FakeResult:
        return self.sync.infer(
            model_name, inputs, outputs=outputs, client_timeout=client_timeout, timeout=timeout
        )

    async def is_model_ready(self, model_name: str, *, client_timeout: float | None = None) -> bool:
        return self.sync.is_model_ready(model_name, client_timeout=client_timeout)

    async def get_model_config(
        self, model_name: str, *, as_json: bool = False, client_timeout: float | None = None
    ) -> Any:
        return self.sync.get_model_config(model_name, as_json=as_json, client_timeout=client_timeout)

    async def close(self) -> None:
        self.sync.close()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    recorded: list[float] = []
    monkeypatch.setattr("ecomgen_client.client.time.sleep", recorded.append)
    yield recorded


def make_client(transport: FakeTransport, **kwargs: Any) -> ProductClient:
    return ProductClient(transport=transport, **kwargs)


def valid_inputs(n: int = 2) -> dict[str, np.ndarray]:
    return {
        "class_id": np.zeros((n, 1), dtype=np.int32),
        "seed": np.arange(n, dtype=np.int64).reshape(n, 1),
    }


# --- client-side validation: nothing may reach the transport ----------------------


@pytest.mark.parametrize(
    ("cls", "seeds", "match"),
    [
        ("Ballgowns", [0], "unknown class"),
        (10, [0], "out of range"),
        (-1, [0], "out of range"),
        ("10", [0], "out of range"),
        (True, [0], "class must be"),
        (1.0, [0], "class must be"),
        ("Dresses", [3, -1], "value -1 out of range"),
        ("Dresses", [], "no seeds"),
        ("Dresses", np.array([], dtype=np.int64), "no seeds"),
        ("Dresses", [0.5, 1.0], "must be integers"),
        ("Dresses", [2**63], "out of range"),
        ("Dresses", [2**64], "must be integers"),
        ("Dresses", np.array([2**63], dtype=np.uint64), "out of range"),
        ("Dresses", [[1, 2]], "flat sequence"),
    ],
)
def test_generate_products_rejects_bad_input_before_sending(cls: Any, seeds: Any, match: str) -> None:
    transport = FakeTransport()
    with pytest.raises(InvalidInputError, match=match) as info:
        make_client(transport).generate_products(cls, seeds)
    assert info.value.status is None
    assert isinstance(info.value, ValueError)
    assert transport.calls == []


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(class_id=d["class_id"].astype(np.int64)), "dtype int64, expected int32"),
        (lambda d: d.update(seed=d["seed"].astype(np.float32)), "dtype float32"),
        (lambda d: d.update(seed=d["seed"].reshape(-1)), r"shape \[2\] does not match \[N, 1\]"),
        (lambda d: d.update(seed=np.zeros((2, 2), dtype=np.int64)), "does not match"),
        (lambda d: d.pop("seed"), "missing required input 'seed'"),
        (lambda d: d.update(z=np.zeros((2, 128), dtype=np.float32)), "unknown inputs"),
        (lambda d: d.update(seed=np.zeros((3, 1), dtype=np.int64)), "disagree on the batch size"),
        (lambda d: d.update(seed=d["seed"].tolist()), "must be a numpy array"),
        (lambda d: d.update(class_id=np.full((2, 1), 10, dtype=np.int32)), "value 10 out of range"),
        (lambda d: d.update(seed=np.full((2, 1), -5, dtype=np.int64)), "value -5 out of range"),
        (
            lambda d: d.update(class_id=np.zeros((0, 1), np.int32), seed=np.zeros((0, 1), np.int64)),
            "empty batch",
        ),
    ],
)
def test_generic_infer_validates_against_spec(mutate: Callable[[dict[str, Any]], Any], match: str) -> None:
    transport = FakeTransport()
    inputs: dict[str, Any] = valid_inputs()
    mutate(inputs)
    with pytest.raises(InvalidInputError, match=match):
        make_client(transport).infer("product_gan", inputs)
    assert transport.calls == []


def test_unknown_model_contract_comes_from_the_server_config() -> None:
    config = {
        "config": {
            "name": "dummy",
            "max_batch_size": 4,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["2"]}],
            "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["2"]}],
            "parameters": {"contract.x": {"string_value": '{"value_range": [0, 1]}'}},
        }
    }
    transport = FakeTransport(config=config, respond=lambda inputs: {"y": np.ones((1, 2), np.float32)})
    client = make_client(transport)
    with pytest.raises(InvalidInputError, match=r"value 2\.0 out of range"):
        client.infer("dummy", {"x": np.full((1, 2), 2.0, np.float32)})
    with pytest.raises(InvalidInputError, match="unknown inputs"):
        client.infer("dummy", valid_inputs())
    out = client.infer("dummy", {"x": np.zeros((1, 2), np.float32)})
    assert out["y"].shape == (1, 2)
    assert [c for c in transport.calls if "config" in c] == [{"config": "dummy", "as_json": True}]  # cached


def test_generic_infer_round_trip() -> None:
    transport = FakeTransport()
    out = make_client(transport).infer(PRODUCT_GAN, valid_inputs(3))
    assert set(out) == {"image"}
    assert out["image"].shape == (3, H, W, 3) and out["image"].dtype == np.uint8
    (call,) = transport.calls
    assert call["shapes"] == {"class_id": [3, 1], "seed": [3, 1]}
    assert call["dtypes"] == {"class_id": "INT32", "seed": "INT64"}
    assert call["outputs"] == ["image"]


def test_constructor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="retries"):
        ProductClient(transport=FakeTransport(), retries=-1)
    with pytest.raises(ValueError, match="backoff_s"):
        ProductClient(transport=FakeTransport(), backoff_s=-0.1)
    with pytest.raises(ValueError, match="timeout_s"):
        ProductClient(transport=FakeTransport(), timeout_s=0)


# --- chunking ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "max_batch", "sizes"),
    [
        (1, 64, [1]),
        (64, 64, [64]),
        (65, 64, [64, 1]),
        (130, 64, [64, 64, 2]),
        (0, 64, []),
        (5, 0, [5]),
    ],
)
def test_chunk_slices(batch: int, max_batch: int, sizes: list[int]) -> None:
    slices = chunk_slices(batch, max_batch)
    assert [s.stop - s.start for s in slices] == sizes
    # Contiguous and covering every row exactly once.
    assert [i for s in slices for i in range(s.start, s.stop)] == list(range(batch))


def test_generate_products_chunks_and_keeps_order() -> None:
    transport = FakeTransport()
    seeds = list(range(1000, 1130))
    images = make_client(transport).generate_products("dresses", seeds)
    assert images.shape == (130, H, W, 3) and images.dtype == np.uint8
    assert [c["shapes"]["seed"] for c in transport.calls] == [[64, 1], [64, 1], [2, 1]]
    np.testing.assert_array_equal(images[:, 0, 0, 0], np.array(seeds) % 256)
    assert (images[..., 1] == PRODUCT_GAN.class_id("Dresses")).all()


def test_generate_products_accepts_numpy_seeds_and_class_ids() -> None:
    transport = FakeTransport()
    cls: Any = np.int64(3)  # typed int | str, but numpy ints from arrays are accepted at runtime
    images = make_client(transport).generate_products(cls, np.array([7, 8], dtype=np.int32))
    np.testing.assert_array_equal(images[:, 0, 0, 0], [7, 8])
    assert (images[..., 1] == 3).all()


def test_response_that_breaks_the_spec_is_a_server_error() -> None:
    def wrong_shape(inputs: list[grpcclient.InferInput]) -> dict[str, np.ndarray]:
        return {"image": np.zeros((1, 3, H, W), dtype=np.uint8)}

    with pytest.raises(ServerError, match="shape"):
        make_client(FakeTransport(respond=wrong_shape)).generate_products(0, [1])
    with pytest.raises(ServerError, match="no output 'image'"):
        make_client(FakeTransport(respond=lambda inputs: {})).generate_products(0, [1])


# --- seed ranges -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("0-15", list(range(16))),
        ("1,5,9", [1, 5, 9]),
        ("7", [7]),
        ("3-3", [3]),
        (" 0-2 , 10 ", [0, 1, 2, 10]),
        ("9,1-2", [9, 1, 2]),
    ],
)
def test_parse_seeds(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "5-3", "a", "-1", "1,,2", "1-", "1.5", "0-10001"])
def test_parse_seeds_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_seeds(text)


# --- error mapping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("StatusCode.INVALID_ARGUMENT", InvalidInputError),
        ("StatusCode.UNAVAILABLE", ServerUnavailableError),
        ("StatusCode.DEADLINE_EXCEEDED", RequestTimeoutError),
        ("StatusCode.INTERNAL", ServerError),
        ("StatusCode.NOT_FOUND", ServerError),
        ("StatusCode.CANCELLED", ServerUnavailableError),
        (None, ServerError),
    ],
)
def test_from_triton_error(status: str | None, expected: type[EcomgenError]) -> None:
    exc = InferenceServerException(msg="class_id 12 out of range", status=status)
    error = from_triton_error(exc)
    assert type(error) is expected
    assert "class_id 12 out of range" in str(error)
    assert error.status == (status.split(".")[-1] if status else None)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Exceeds maximum queue size", QueueFullError),
        ("Request timeout expired", QueueTimeoutError),
        ("Server is stopping", ServerUnavailableError),
        ("failed to connect to all addresses", ServerUnavailableError),
        ("tryon_post: deadline exceeded before this step ran", RequestTimeoutError),
        ("This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'", ServerError),
    ],
)
def test_overload_is_told_apart_from_a_server_that_is_down(message: str, expected: type) -> None:
    error = from_triton_error(triton_error("UNAVAILABLE", message))
    assert type(error) is expected
    assert isinstance(error, ServerOverloadedError) == (expected in (QueueFullError, QueueTimeoutError))


def test_not_found_for_a_known_model_means_draining() -> None:
    exc = triton_error("NOT_FOUND", "Request for unknown model: 'product_gan' is not found")
    assert type(from_triton_error(exc, known_model=True)) is ServerUnavailableError
    assert type(from_triton_error(exc)) is ServerError


def test_error_hierarchy_plays_well_with_builtins() -> None:
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(RequestTimeoutError, TimeoutError)
    assert issubclass(ServerUnavailableError, ConnectionError)
    for cls in (InvalidInputError, RequestTimeoutError, ServerUnavailableError, ServerError):
        assert issubclass(cls, EcomgenError)


# --- retries -----------------------------------------------------------------------------


def test_retries_unavailable_then_succeeds(sleeps: list[float]) -> None:
    transport = FakeTransport(failures=[triton_error("UNAVAILABLE")] * 2)
    images = make_client(transport, retries=3, backoff_s=0.1).generate_products(0, [5])
    assert images.shape == (1, H, W, 3)
    assert len(transport.calls) == 3
    assert len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2


def test_unavailable_gives_up_after_retries(sleeps: list[float]) -> None:
    transport = FakeTransport(failures=[triton_error("UNAVAILABLE")] * 10)
    with pytest.raises(ServerUnavailableError, match="gave up after 3 attempts") as info:
        make_client(transport, retries=2).generate_products(0, [5])
    assert isinstance(info.value.__cause__, InferenceServerException)
    assert len(transport.calls) == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("INVALID_ARGUMENT", InvalidInputError),
        ("DEADLINE_EXCEEDED", RequestTimeoutError),
        ("INTERNAL", ServerError),
        ("RESOURCE_EXHAUSTED", ServerError),
    ],
)
def test_other_errors_are_not_retried(sleeps: list[float], code: str, expected: type[EcomgenError]) -> None:
    transport = FakeTransport(failures=[triton_error(code)])
    with pytest.raises(expected):
        make_client(transport, retries=5).generate_products(0, [5])
    assert len(transport.calls) == 1
    assert sleeps == []


def test_zero_retries_means_one_attempt(sleeps: list[float]) -> None:
    transport = FakeTransport(failures=[triton_error("UNAVAILABLE")])
    with pytest.raises(ServerUnavailableError):
        make_client(transport, retries=0).generate_products(0, [5])
    assert len(transport.calls) == 1 and sleeps == []


@pytest.mark.parametrize("attempt", range(6))
def test_backoff_is_exponential_with_bounded_jitter(attempt: int) -> None:
    policy = RetryPolicy(retries=3, backoff_s=0.1)
    rng = random.Random(attempt)
    delays = [policy.delay(attempt, rng) for _ in range(50)]
    full = min(policy.max_backoff_s, 0.1 * 2**attempt)  # capped
    assert all(full / 2 <= d <= full for d in delays)
    assert len(set(delays)) > 1


def test_timeout_is_one_deadline_sent_to_the_server_too() -> None:
    transport = FakeTransport()
    client = make_client(transport, timeout_s=12.5)
    client.generate_products(0, [1])
    client.generate_products(0, [1], timeout_s=2.0)
    first, second = transport.calls
    assert 12.0 < first["timeout"] <= 12.5 and 1.5 < second["timeout"] <= 2.0
    # What is left of the deadline becomes Triton's per-request timeout (microseconds).
    assert 12_000_000 < first["server_timeout_us"] <= 12_500_000
    assert 1_500_000 < second["server_timeout_us"] <= 2_000_000
    with pytest.raises(ValueError, match="timeout_s"):
        client.generate_products(0, [1], timeout_s=-1)


def test_retries_stop_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("ecomgen_client._common.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("ecomgen_client.client.time.sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    transport = FakeTransport(failures=[triton_error("UNAVAILABLE")] * 20)
    with pytest.raises(RequestTimeoutError, match="deadline of 1 s"):
        make_client(transport, timeout_s=1.0, retries=50, backoff_s=0.3).generate_products(0, [1])
    assert clock[0] <= 1.0 + 1e-9
    assert all(c["timeout"] <= 1.0 for c in transport.calls)


def test_overload_is_not_retried_on_a_single_endpoint(sleeps: list[float]) -> None:
    transport = FakeTransport(failures=[triton_error("UNAVAILABLE", "Exceeds maximum queue size")] * 3)
    with pytest.raises(QueueFullError):
        make_client(transport, retries=3).generate_products(0, [1])
    assert len(transport.calls) == 1 and sleeps == []


def test_retry_throttle_stops_retries_when_most_calls_fail() -> None:
    throttle = RetryThrottle(max_tokens=10, token_ratio=0.1)
    policy = RetryPolicy(retries=100, throttle=throttle)
    down = ServerUnavailableError("down")
    allowed = 0
    for attempt in range(20):
        throttle.on_failure()
        if not policy.should_retry(down, attempt):
            break
        allowed += 1
    assert allowed == 4  # 10 tokens, retries only while more than 5 are left
    for _ in range(10):
        throttle.on_success()
    assert policy.should_retry(down, 0)


def test_failover_to_an_untried_endpoint_needs_no_token() -> None:
    throttle = RetryThrottle(max_tokens=10, token_ratio=0.1)
    for _ in range(10):
        throttle.on_failure()  # budget exhausted
    policy = RetryPolicy(retries=5, throttle=throttle)
    down = ServerUnavailableError("connection reset")
    assert policy.should_retry(down, 0, endpoints=2)  # move to the other endpoint
    assert not policy.should_retry(down, 1, endpoints=2)  # both tried: the throttle decides
    assert not policy.should_retry(down, 0, endpoints=1)
    assert not policy.should_retry(QueueFullError("full"), 0, endpoints=2)


def test_throttle_is_shared_by_every_call_of_a_client(sleeps: list[float]) -> None:
    transport = FakeTransport(failures=[triton_error("UNAVAILABLE")] * 100)
    client = make_client(transport, retries=3, backoff_s=0.0)
    for _ in range(5):
        with pytest.raises(ServerUnavailableError):
            client.generate_products(0, [1])
    # Without a throttle 5 calls x 4 attempts = 20 sends; the shared budget cuts that short.
    assert len(transport.calls) < 12


def test_endpoint_pool_round_robin_and_failover() -> None:
    pool = EndpointPool(["a", "b", "c"], lambda url: url)
    assert [pool.pick() for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    pool.mark_down("b")
    assert "b" not in {pool.pick() for _ in range(6)}
    assert pool.pick(avoid="a") in {"c"}
    pool.mark_up("b")
    assert {pool.pick() for _ in range(3)} == {"a", "b", "c"}


def test_several_endpoints_spread_load_and_fail_over(sleeps: list[float]) -> None:
    dead = FakeTransport(failures=[triton_error("UNAVAILABLE", "failed to connect")] * 100)
    live = FakeTransport()
    transports = {"a:1": dead, "b:1": live}
    client = ProductClient(["a:1", "b:1"], retries=2, backoff_s=0.0)
    client.pool = EndpointPool(client.urls, transports.__getitem__)
    for seed in range(6):
        client.generate_products(0, [seed])
    assert len(live.calls) == 6  # every call succeeded on the live endpoint
    assert len(dead.calls) == 1  # the dead one was tried once, then skipped while cooling down


def test_overload_moves_to_another_endpoint(sleeps: list[float]) -> None:
    full = FakeTransport(failures=[triton_error("UNAVAILABLE", "Exceeds maximum queue size")] * 100)
    free = FakeTransport()
    client = ProductClient(["a:1", "b:1"], retries=2, backoff_s=0.0)
    client.pool = EndpointPool(client.urls, {"a:1": full, "b:1": free}.__getitem__)
    client.generate_products(0, [1])
    assert len(full.calls) == 1 and len(free.calls) == 1


def test_dns_target_balances_per_call() -> None:
    assert ("grpc.lb_policy_name", "round_robin") in (channel_args("dns:///ecomgen:8001") or [])
    assert channel_args("localhost:8001") is None
    with pytest.raises(ValueError, match="duplicate"):
        ProductClient("a:1,a:1")


# --- readiness, class names, lifecycle -----------------------------------------------------


def test_is_ready_is_false_on_error_without_retrying(sleeps: list[float]) -> None:
    assert make_client(FakeTransport()).is_ready()
    transport = FakeTransport(failures=[triton_error("UNAVAILABLE")])
    assert not make_client(transport).is_ready()
    assert len(transport.calls) == 1 and sleeps == []


def _config_with(value: str) -> dict[str, Any]:
    return {"config": {"name": "product_gan", "parameters": {"class_names": {"string_value": value}}}}


def test_class_names_from_server_config() -> None:
    served = ["A", "B"]
    transport = FakeTransport(config=_config_with(json.dumps(served)))
    assert make_client(transport).class_names() == ("A", "B")
    assert transport.calls == [{"config": "product_gan", "as_json": True}]


@pytest.mark.parametrize(
    "config",
    [
        {"config": {"name": "product_gan"}},
        _config_with("not json"),
        _config_with('{"a": 1}'),
        _config_with("[]"),
        _config_with("[1, 2]"),
    ],
)
def test_class_names_fall_back_to_spec(config: dict[str, Any]) -> None:
    assert make_client(FakeTransport(config=config)).class_names() == PRODUCT_GAN.class_names
    assert parse_class_names(config, ["x"]) == ("x",)


def test_injected_transport_is_not_closed() -> None:
    transport = FakeTransport()
    with make_client(transport) as client:
        client.is_ready()
    assert not transport.closed


# --- async client ----------------------------------------------------------------------------


def test_async_client_matches_sync_behaviour() -> None:
    async def scenario() -> None:
        sync = FakeTransport(failures=[triton_error("UNAVAILABLE")], config=_config_with(json.dumps(["A"])))
        async with AsyncProductClient(transport=AsyncFakeTransport(sync), backoff_s=0.0) as client:
            images = await client.generate_products("Heels", list(range(70)))
            assert images.shape == (70, H, W, 3)
            np.testing.assert_array_equal(images[:, 0, 0, 0], np.arange(70))
            # One failed attempt, then two chunks.
            assert [c["shapes"]["seed"] for c in sync.calls] == [[64, 1], [64, 1], [6, 1]]
            assert await client.is_ready()
            assert await client.class_names() == ("A",)
            with pytest.raises(InvalidInputError):
                await client.generate_products("Heels", [-1])

        sync_fail = FakeTransport(failures=[triton_error("DEADLINE_EXCEEDED")] * 3)
        client = AsyncProductClient(transport=AsyncFakeTransport(sync_fail), backoff_s=0.0)
        with pytest.raises(RequestTimeoutError):
            await client.generate_products(0, [1])
        assert len(sync_fail.calls) == 1

        sync_down = FakeTransport(failures=[triton_error("UNAVAILABLE")] * 10)
        client = AsyncProductClient(transport=AsyncFakeTransport(sync_down), retries=2, backoff_s=0.0)
        with pytest.raises(ServerUnavailableError):
            await client.generate_products(0, [1])
        assert len(sync_down.calls) == 3
        assert not await client.is_ready()

    asyncio.run(scenario())


# --- images and CLI ----------------------------------------------------------------------------


def test_make_grid_layout() -> None:
    images = np.zeros((5, H, W, 3), dtype=np.uint8)
    grid = _images.make_grid(images, cols=2, pad=2)
    assert grid.shape == (3 * (H + 2) + 2, 2 * (W + 2) + 2, 3)
    assert _images.make_grid(images).shape[1] == 3 * (W + 2) + 2  # ceil(sqrt(5)) columns


def test_generate_products_pil() -> None:
    pytest.importorskip("PIL")
    pil = make_client(FakeTransport()).generate_products_pil("Watches", [1, 2, 3])
    assert [(im.size, im.mode) for im in pil] == [((W, H), "RGB")] * 3


@pytest.fixture
def cli_transport(monkeypatch: pytest.MonkeyPatch) -> FakeTransport:
    transport = FakeTransport()

    def factory(url: str, **kwargs: Any) -> ProductClient:
        return ProductClient(url, transport=transport, **kwargs)

    monkeypatch.setattr(cli, "ProductClient", factory)
    return transport


def test_cli_products_grid_and_each(cli_transport: FakeTransport, tmp_path: Path) -> None:
    pil_image = pytest.importorskip("PIL.Image")
    grid = tmp_path / "grids" / "dresses.png"
    assert cli.main(["products", "--class", "Dresses", "--seeds", "0-3", "--out", str(grid)]) == 0
    assert pil_image.open(grid).size == (2 * (W + 2) + 2, 2 * (H + 2) + 2)

    out_dir = tmp_path / "each"
    argv = ["products", "--class", "5", "--seeds", "1,9", "--out", str(out_dir), "--each"]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["casual_shoes_seed1.png", "casual_shoes_seed9.png"]


def test_cli_classes(cli_transport: FakeTransport, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["classes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "0\tTshirts" and len(lines) == len(PRODUCT_GAN.class_names)


def test_cli_bad_input(
    cli_transport: FakeTransport, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["products", "--class", "Ballgowns", "--out", str(tmp_path / "x.png")]) == 2
    assert "unknown class" in capsys.readouterr().err
    assert cli_transport.calls == []
    with pytest.raises(SystemExit):
        cli.main(["products", "--class", "0", "--seeds", "5-3", "--out", str(tmp_path / "x.png")])


# --- import hygiene ---------------------------------------------------------------------------------


def test_lazy_package_exports_what_it_lists() -> None:
    from ecomgen_client import _WHERE

    assert set(ecomgen_client.__all__) == {*_WHERE, "__version__"}
    for name in _WHERE:
        assert getattr(ecomgen_client, name) is not None


def test_import_pulls_in_neither_torch_nor_pillow() -> None:
    code = (
        "import sys, ecomgen_client; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'PIL')); "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"heavy modules imported: {proc.stdout} {proc.stderr}"
    assert ecomgen_client.ProductClient is ProductClient


# --- try-on --------------------------------------------------------------------------------


def fake_tryon(inputs: list[grpcclient.InferInput]) -> dict[str, np.ndarray]:
    n = inputs[0].shape()[0]
    return {
        "image": np.full((n, 256, 192, 3), 7, np.uint8),
        "warped_garment": np.full((n, 256, 192, 3), 8, np.uint8),
        "mask": np.full((n, 256, 192), 9, np.uint8),
    }


def test_try_on_sends_uint8_images_and_asks_only_for_the_image():
    transport = FakeTransport(respond=fake_tryon)
    with ProductClient(transport=transport) as client:
        out = client.try_on(np.zeros((300, 200, 3), np.uint8), np.zeros((64, 2048, 3), np.uint8))
    assert out.shape == (256, 192, 3) and (out == 7).all()
    call = transport.calls[-1]
    assert call["model"] == "tryon" and call["outputs"] == ["image"]
    assert call["shapes"] == {"person": [1, 300, 200, 3], "garment": [1, 64, 2048, 3]}
    assert call["dtypes"] == {"person": "UINT8", "garment": "UINT8"}


def test_try_on_pil_in_pil_out_and_debug_outputs():
    from PIL import Image

    transport = FakeTransport(respond=fake_tryon)
    with ProductClient(transport=transport) as client:
        out = client.try_on(Image.new("RGBA", (100, 120)), Image.new("L", (90, 90)))
        debug = client.try_on_debug(np.zeros((100, 100, 3), np.uint8), np.zeros((100, 100, 3), np.uint8))
    assert isinstance(out, Image.Image) and out.size == (192, 256)
    assert transport.calls[0]["shapes"]["person"] == [1, 120, 100, 3]  # RGBA/L converted to RGB
    assert (debug.warped_garment == 8).all() and debug.mask.shape == (256, 192)
    assert transport.calls[-1]["outputs"] == ["image", "warped_garment", "mask"]


@pytest.mark.parametrize(
    ("person", "message"),
    [
        (np.zeros((100, 100), np.uint8), "shape"),
        (np.zeros((100, 100, 4), np.uint8), "shape"),
        (np.zeros((100, 100, 3), np.float32), "dtype float32"),
        (np.zeros((63, 100, 3), np.uint8), "63x100 pixels"),
        (np.zeros((100, 2049, 3), np.uint8), "100x2049 pixels"),
        ("person.jpg", "PIL image or a numpy array"),
    ],
)
def test_try_on_rejects_bad_images_before_sending(person, message):
    transport = FakeTransport(respond=fake_tryon)
    with ProductClient(transport=transport) as client, pytest.raises(InvalidInputError, match=message):
        client.try_on(person, np.zeros((100, 100, 3), np.uint8))
    assert transport.calls == []


def test_async_try_on():
    transport = FakeTransport(respond=fake_tryon)

    async def go() -> np.ndarray:
        async with AsyncProductClient(transport=AsyncFakeTransport(transport)) as client:
            return await client.try_on(np.zeros((80, 80, 3), np.uint8), np.zeros((80, 80, 3), np.uint8))

    assert asyncio.run(go()).shape == (256, 192, 3)
