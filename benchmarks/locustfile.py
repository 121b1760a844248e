"""Locust load over gRPC (KServe v2), against Triton or benchmarks/baseline_server.py alike.

Follows Locust's gRPC recipe: gRPC is switched to gevent-friendly I/O with
``grpc.experimental.gevent.init_gevent()`` before any channel exists, and every
call fires a Locust ``request`` event (request_type "grpc"). Calls go through the
synchronous ``tritonclient.grpc`` client, which cooperates with gevent after that.

Scenarios are tags, one per served model (``--tags product_gan``, ``--tags tryon``, ...;
default: every model). The models come from the registry (``ecomgen.registry``, or the
client's ``ecomgen_client.contracts.CONTRACTS`` when only the client is installed), and
each request's payload from the model's contract (``benchmarks/payloads.py``). A model
that is not ready on a server (the health API, which a hardened server leaves open) is
skipped with a message, checked once per endpoint, so ``--tags tryon`` against a server
without try-on ends cleanly.

* ``--rows N``: rows per request on batched models (default 1; capped at max_batch_size):
  ``--tags product_gan --rows 16`` is the 16-image ad-creative batch;
* ``--image-size HxW``: the size of variable-size image inputs (default: see payloads.py).

Endpoints: ``--host`` (or ``$ECOMGEN_ENDPOINTS`` when --host is not given) is one
``host:port`` or a comma-separated list; users take them round robin (user i -> endpoint
i mod n), and with several endpoints each statistics row is named ``model[...]@endpoint``.

Users run closed-loop (no wait time), so ``-u`` is the concurrency. The quitting
hook fails the process (exit code 1) when any request failed or when the p99
latency is above ``--p99-budget-ms``:

    locust -f benchmarks/locustfile.py --headless -u 32 -r 32 -t 30s \\
        --host 127.0.0.1:8001,127.0.0.1:9001 --tags product_gan --csv out/run --p99-budget-ms 500
"""

from __future__ import annotations

import contextlib
import itertools
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
import tritonclient.grpc as grpcclient
from locust import User, constant, events, tag  # importing locust monkey-patches the stdlib
from locust.env import Environment
from locust.exception import StopUser
from tritonclient.utils import InferenceServerException

from benchmarks.payloads import PayloadMaker, contracts, parse_size
from ecomgen_client.contracts import Contract

# After gevent's monkey-patching (done by importing locust), before any gRPC channel exists.
grpc_gevent.init_gevent()

log = logging.getLogger("ecomgen.locust")
ENDPOINTS_ENV = "ECOMGEN_ENDPOINTS"
DEFAULT_ENDPOINT = "127.0.0.1:8001"
CONTRACTS: dict[str, Contract] = contracts()


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--p99-budget-ms",
        type=float,
        default=0.0,
        help="exit with code 1 when the p99 response time is above this (0: no latency budget)",
    )
    parser.add_argument("--request-timeout-s", type=float, default=120.0, help="gRPC deadline per request")
    parser.add_argument("--rows", type=int, default=1, help="rows (images) per request on batched models")
    parser.add_argument(
        "--image-size", default="", help="HxW of variable-size image inputs (default: per model)"
    )
    parser.add_argument(
        "--summary-json",
        default="",
        help="write final statistics and the client's CPU use over the measured window to this file",
    )


def scenario_name(rows: int) -> str:
    """What compare.py's reports call a request size: ``single`` or ``batch16``."""
    return "single" if rows == 1 else f"batch{rows}"


def endpoints(host: str | None) -> list[str]:
    """``--host`` (else $ECOMGEN_ENDPOINTS, else the default) as a list of ``host:port``."""
    text = host or os.environ.get(ENDPOINTS_ENV, "") or DEFAULT_ENDPOINT
    urls = [u.strip().removeprefix("grpc://") for u in text.split(",") if u.strip()]
    if len(set(urls)) != len(urls):
        raise ValueError(f"duplicate endpoints in {text!r}")
    return urls


# --- the run-time clock ---------------------------------------------------------------


@events.init.add_listener
def _fresh_clock(**_kwargs: Any) -> None:
    # libev caches "now" per loop iteration, and nothing ran the loop while this file and its
    # imports loaded (seconds on a busy runner): `-t` would otherwise count that time too and
    # could end the run before the first request was answered.
    gevent.get_hub().loop.update_now()


# --- failure gate (Locust docs: running-without-web-ui) ---------------------------


@events.quitting.add_listener
def _gate(environment: Environment, **_kwargs: Any) -> None:
    total = environment.stats.total
    budget = float(getattr(environment.parsed_options, "p99_budget_ms", 0.0) or 0.0)
    p99 = total.get_response_time_percentile(0.99) if total.num_requests else 0.0
    if total.num_requests == 0:
        # A run that measured nothing (the run time ended before any answer) is not a pass.
        log.error("test failed: no request completed")
        environment.process_exit_code = 1
    elif total.fail_ratio > 0:
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


def _model_task(model: str) -> Callable[[Any], None]:
    def run(user: TritonGrpcUser) -> None:
        user.call_model(model, run)

    run.__name__ = f"load_{model}"
    return tag(model)(run)


_user_numbers = itertools.count()


class TritonGrpcUser(User):
    """One closed-loop client over KServe v2 gRPC; ``--host`` is ``host:port[,host:port...]``."""

    host = ""
    wait_time = constant(0)
    # One task per model the registry (or the client) knows; --tags picks among them.
    tasks = [_model_task(name) for name in CONTRACTS]  # noqa: RUF012 (Locust reads it from the class)
    # (endpoint, model) -> served there (checked once per process).
    _served: ClassVar[dict[tuple[str, str], bool]] = {}
    _served_lock: ClassVar[Any] = None
    _warned: ClassVar[set[tuple[str, str]]] = set()

    def on_start(self) -> None:
        urls = endpoints(self.host or None)
        self.url = urls[next(_user_numbers) % len(urls)]  # round robin over the users
        self.suffix = f"@{self.url}" if len(urls) > 1 else ""
        self.client = _Client(url=self.url)
        _clients.append(self.client)
        options = self.environment.parsed_options
        self.timeout_s = float(getattr(options, "request_timeout_s", 120.0))
        self.rows = int(getattr(options, "rows", 1) or 1)
        self.image_size = parse_size(str(getattr(options, "image_size", "") or ""))
        seed = os.getpid() ^ id(self)
        self.rng = random.Random(seed)
        self.makers: dict[str, PayloadMaker] = {}

    def on_stop(self) -> None:
        self.client.close()

    def _fire(self, name: str, start: float, start_time: float, length: int, exc: Exception | None) -> None:
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

    def call_model(self, model: str, task: Callable[[Any], None]) -> None:
        """One timed inference of ``model`` with a fresh payload; reports success or failure."""
        if not self._is_served(model):
            return self._skip(task)
        maker = self.makers.get(model)
        if maker is None:
            maker = self.makers[model] = PayloadMaker(
                CONTRACTS[model], self.rows, self.image_size, seed=self.rng.randrange(2**32)
            )
            maker.count = self.rng.randrange(1 << 16)  # users start on different photos
        p = maker()
        contract = CONTRACTS[model]
        inputs = []
        for name, array in p.inputs.items():
            inputs.append(grpcclient.InferInput(name, list(array.shape), contract.input(name).dtype))
            inputs[-1].set_data_from_numpy(array)
        outputs = [grpcclient.InferRequestedOutput(n) for n in p.outputs]
        expected = p.expected_bytes(contract)
        start, start_time = time.perf_counter(), time.time()
        exc: Exception | None = None
        length = 0
        try:
            result = self.client.infer(model, inputs, outputs=outputs, client_timeout=self.timeout_s)
            raw = result.get_response().raw_output_contents
            length = sum(len(r) for r in raw)
            # A wrong-sized answer is a failure, not a fast success.
            if len(raw) != len(p.outputs) or any(len(r) == 0 for r in raw):
                raise ValueError(f"expected {len(p.outputs)} non-empty outputs, got {[len(r) for r in raw]}")
            if expected is not None and length != expected:
                raise ValueError(f"expected {expected} bytes of outputs, got {length}")
        except InferenceServerException as e:
            exc = GrpcCallError(f"{e.status() or 'no status'}: {e.message()}")
        except ValueError as e:
            exc = e
        self._fire(f"{model}[{scenario_name(p.rows)}]{self.suffix}", start, start_time, length, exc)
        return None

    def _is_served(self, model: str) -> bool:
        cls = type(self)
        if cls._served_lock is None:
            cls._served_lock = gevent.lock.Semaphore()
        key = (self.url, model)
        with cls._served_lock:  # one readiness request per process, endpoint and model, not one per user
            if key not in cls._served:
                cls._served[key] = self._model_ready(model)
            if cls._served[key] or key in cls._warned:
                return cls._served[key]
            cls._warned.add(key)
        log.warning(
            "%s scenario skipped: model '%s' is not ready on %s (not served there)", model, model, self.url
        )
        return False

    def _model_ready(self, model: str) -> bool:
        """The health API's model readiness (open on a hardened server, unlike the repository index)."""
        start, start_time = time.perf_counter(), time.time()
        try:
            return bool(self.client.is_model_ready(model, client_timeout=self.timeout_s))
        except InferenceServerException as e:
            # The server is unreachable: that is a failure, not a reason to skip.
            self._fire(
                f"model_ready{self.suffix}",
                start,
                start_time,
                0,
                GrpcCallError(f"{e.status() or 'no status'}: {e.message()}"),
            )
            raise StopUser() from e

    def _skip(self, task: Callable[[Any], None]) -> None:
        """Drop a scenario from this user; the user stops when nothing is left for it to run, and
        the test ends cleanly once no user is left (users of other endpoints may still have work)."""
        self.tasks = [t for t in self.tasks if t is not task]
        if not self.tasks:
            runner = self.environment.runner
            if runner is not None:
                gevent.spawn(_quit_when_no_users, runner)
            raise StopUser()


def _quit_when_no_users(runner: Any) -> None:
    while True:
        gevent.sleep(0.2)
        spawning = getattr(runner, "spawning_greenlet", None)
        if spawning is not None and not spawning.dead:
            continue  # more users are on their way
        if runner.user_count == 0:
            runner.quit()
        return
