"""Locust load over gRPC (KServe v2), against Triton or benchmarks/baseline_server.py alike.

Follows Locust's gRPC recipe: gRPC is switched to gevent-friendly I/O with
``grpc.experimental.gevent.init_gevent()`` before any channel exists, and every
call fires a Locust ``request`` event (request_type "grpc"). Calls go through the
synchronous ``tritonclient.grpc`` client, which cooperates with gevent after that.

Scenarios are tags (pick with ``--tags``; default: all):

* ``single``  - product_gan, one image per request
* ``batch16`` - product_gan, 16 images per request (an ad-creative batch)
* ``tryon``   - the try-on model on fixture image pairs; skipped with a message
  when no ``tryon`` model is in the server's repository index

Users run closed-loop (no wait time), so ``-u`` is the concurrency. The quitting
hook fails the process (exit code 1) when any request failed or when the p99
latency is above ``--p99-budget-ms``:

    locust -f benchmarks/locustfile.py --headless -u 32 -r 32 -t 30s \\
        --host 127.0.0.1:8001 --tags single --csv out/run --p99-budget-ms 500
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import gevent
import gevent.lock
import grpc.experimental.gevent as grpc_gevent
import numpy as np
import tritonclient.grpc as grpcclient
from locust import User, constant, events, tag, task  # importing locust monkey-patches the stdlib
from locust.env import Environment
from locust.exception import StopUser
from tritonclient.utils import InferenceServerException

from benchmarks.common import tryon_pairs
from ecomgen_client.specs import ENSEMBLES, PRODUCT_GAN

# After gevent's monkey-patching (done by importing locust), before any gRPC channel exists.
grpc_gevent.init_gevent()

log = logging.getLogger("ecomgen.locust")
TRYON_MODEL = "tryon"
BATCH = {"single": 1, "batch16": 16}


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--p99-budget-ms",
        type=float,
        default=0.0,
        help="exit with code 1 when the p99 response time is above this (0: no latency budget)",
    )
    parser.add_argument("--request-timeout-s", type=float, default=120.0, help="gRPC deadline per request")
    parser.add_argument(
        "--summary-json",
        default="",
        help="write final statistics and the client's CPU use over the measured window to this file",
    )


# --- failure gate (Locust docs: running-without-web-ui) ---------------------------


@events.quitting.add_listener
def _gate(environment: Environment, **_kwargs: Any) -> None:
    total = environment.stats.total
    budget = float(getattr(environment.parsed_options, "p99_budget_ms", 0.0) or 0.0)
    p99 = total.get_response_time_percentile(0.99) if total.num_requests else 0.0
    if total.fail_ratio > 0:
        log.error("test failed: %.1f%% of %d requests failed", 100 * total.fail_ratio, total.num_requests)
        environment.process_exit_code = 1
    elif budget > 0 and p99 > budget:
        log.error("test failed: p99 %.0f ms above the budget of %.0f ms", p99, budget)
        environment.process_exit_code = 1


# --- final summary: Locust 2.18 writes its CSV once a second, so the last second can be missing ----

_window: dict[str, float] = {}


@events.spawning_complete.add_listener
def _window_start(user_count: int, **_kwargs: Any) -> None:
    # --reset-stats resets the statistics here too, so statistics and CPU cover the same window.
    _window.update(start=time.time(), cpu_start=time.process_time(), users=user_count)


@events.test_stop.add_listener
def _window_end(**_kwargs: Any) -> None:
    if "start" in _window and "end" not in _window:
        _window.update(end=time.time(), cpu_end=time.process_time())


class _Client(grpcclient.InferenceServerClient):
    """tritonclient's ``__del__`` closes the channel (again) during interpreter shutdown, where
    under gevent ``channel.close()`` can block forever (seen with the tryon and batch16
    scenarios: Locust printed its stats, then never exited). Clients are closed once, at
    test_stop, while the gevent hub still runs; ``__del__`` does nothing."""

    _closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            super().close()

    def __del__(self) -> None:
        pass


# Every user's gRPC client; users killed at the time limit skip on_stop.
_clients: list[_Client] = []


@events.test_stop.add_listener
def _close_clients(**_kwargs: Any) -> None:
    while _clients:
        with contextlib.suppress(Exception):
            _clients.pop().close()


def _entry(stats: Any) -> dict[str, float]:
    pct = {f"p{int(q * 100)}_ms": stats.get_response_time_percentile(q) for q in (0.5, 0.95, 0.99)}
    return {
        "requests": stats.num_requests,
        "failures": stats.num_failures,
        "rps": stats.total_rps,
        "avg_ms": stats.avg_response_time,
        "max_ms": stats.max_response_time,
        **(pct if stats.num_requests else {k: float("nan") for k in pct}),
    }


@events.quitting.add_listener
def _write_summary(environment: Environment, **_kwargs: Any) -> None:
    path = getattr(environment.parsed_options, "summary_json", "")
    if not path:
        return
    _window_end()
    wall = _window.get("end", 0.0) - _window.get("start", 0.0)
    cpu = _window.get("cpu_end", 0.0) - _window.get("cpu_start", 0.0)  # every thread, gRPC's C-core too
    stats = environment.stats
    payload = {
        "window": {**_window, "wall_s": wall, "cpu_s": cpu, "client_cores": cpu / wall if wall > 0 else None},
        "total": _entry(stats.total),
        "entries": {name: _entry(e) for (name, _method), e in stats.entries.items()},
        "errors": {f"{e.name}: {e.error!r}": e.occurrences for e in stats.errors.values()},
    }
    Path(path).write_text(json.dumps(payload, indent=2, default=float) + "\n")


# --- requests -------------------------------------------------------------------------


class GrpcCallError(Exception):
    """A failed call, named by status and message (InferenceServerException's repr is empty)."""


class TritonGrpcUser(User):
    """One closed-loop client over KServe v2 gRPC; ``--host`` is ``host:port`` (no scheme)."""

    host = "127.0.0.1:8001"
    wait_time = constant(0)
    # Per host: the try-on model's pairs, or None when it is not served (checked once per process).
    _tryon: ClassVar[dict[str, list[dict[str, np.ndarray]] | None]] = {}
    _tryon_lock: ClassVar[Any] = None

    def on_start(self) -> None:
        self.url = self.host.removeprefix("grpc://")
        self.client = _Client(url=self.url)
        _clients.append(self.client)
        self.timeout_s = float(getattr(self.environment.parsed_options, "request_timeout_s", 120.0))
        self.rng = random.Random(os.getpid() ^ id(self))

    def on_stop(self) -> None:
        self.client.close()

    def _call(
        self, name: str, model: str, inputs: list[grpcclient.InferInput], check: Callable[[Any], int]
    ) -> None:
        """One timed inference; reports success or failure to Locust."""
        start = time.perf_counter()
        start_time = time.time()
        exc: Exception | None = None
        length = 0
        try:
            result = self.client.infer(model, inputs, client_timeout=self.timeout_s)
            length = check(result)
        except InferenceServerException as e:
            exc = GrpcCallError(f"{e.status() or 'no status'}: {e.message()}")
        except ValueError as e:
            exc = e
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exc,
            context={},
            response=None,
            start_time=start_time,
            url=self.url,
        )

    def _product(self, scenario: str) -> None:
        n = BATCH[scenario]
        classes = np.asarray([self.rng.randrange(len(PRODUCT_GAN.class_names)) for _ in range(n)], np.int32)
        seeds = np.asarray([self.rng.randrange(2**62) for _ in range(n)], np.int64)
        inputs = [
            grpcclient.InferInput("class_id", [n, 1], "INT32"),
            grpcclient.InferInput("seed", [n, 1], "INT64"),
        ]
        inputs[0].set_data_from_numpy(classes.reshape(n, 1))
        inputs[1].set_data_from_numpy(seeds.reshape(n, 1))
        expected = n * int(np.prod(PRODUCT_GAN.output("image").dims))

        def check(result: Any) -> int:
            raw = result.get_response().raw_output_contents
            size = sum(len(r) for r in raw)
            if size != expected:  # a wrong-sized answer is a failure, not a fast success
                raise ValueError(f"expected {expected} bytes of images, got {size}")
            return size

        self._call(f"{PRODUCT_GAN.name}[{scenario}]", PRODUCT_GAN.name, inputs, check)

    @tag("single")
    @task
    def product_single(self) -> None:
        self._product("single")

    @tag("batch16")
    @task
    def product_batch16(self) -> None:
        self._product("batch16")

    @tag("tryon")
    @task
    def tryon(self) -> None:
        pairs = self._tryon_pairs()
        if pairs is None:
            return self._skip(self.tryon)
        feeds = pairs[self.rng.randrange(len(pairs))]
        inputs = []
        for name, array in feeds.items():
            dtype = "UINT8" if array.dtype == np.uint8 else grpcclient.np_to_triton_dtype(array.dtype)
            inputs.append(grpcclient.InferInput(name, list(array.shape), dtype))
            inputs[-1].set_data_from_numpy(array)
        self._call(f"{TRYON_MODEL}[pair]", TRYON_MODEL, inputs, lambda r: r.get_response().ByteSize())

    def _tryon_pairs(self) -> list[dict[str, np.ndarray]] | None:
        cls = type(self)
        if cls._tryon_lock is None:
            cls._tryon_lock = gevent.lock.Semaphore()
        with cls._tryon_lock:  # one repository-index request per process, not one per user
            if self.url not in cls._tryon:
                cls._tryon[self.url] = self._check_tryon()
        return cls._tryon[self.url]

    def _check_tryon(self) -> list[dict[str, np.ndarray]] | None:
        start = time.perf_counter()
        try:
            index = self.client.get_model_repository_index(client_timeout=self.timeout_s)
        except InferenceServerException as e:
            # The server is unreachable: that is a failure, not a reason to skip.
            self.environment.events.request.fire(
                request_type="grpc",
                name="repository_index",
                response_time=(time.perf_counter() - start) * 1000.0,
                response_length=0,
                exception=GrpcCallError(f"{e.status() or 'no status'}: {e.message()}"),
                context={},
            )
            raise StopUser() from e
        served = {m.name for m in index.models if m.state in ("", "READY")}
        if TRYON_MODEL not in served:
            reason = (
                f"model '{TRYON_MODEL}' is not in the repository index of {self.url} (has {sorted(served)})"
            )
        elif TRYON_MODEL not in ENSEMBLES:
            reason = f"ecomgen_client.specs has no '{TRYON_MODEL}' spec to build its inputs from"
        else:
            return tryon_pairs(ENSEMBLES[TRYON_MODEL])
        log.warning("tryon scenario skipped: %s", reason)
        return None

    def _skip(self, method: Callable[..., Any]) -> None:
        """Drop a scenario from this user; end the test cleanly when nothing else is left to run."""
        func = getattr(method, "__func__", method)
        self.tasks = [t for t in self.tasks if t is not func]
        if not self.tasks:
            runner = self.environment.runner
            if runner is not None:
                gevent.spawn(runner.quit)
            raise StopUser()
