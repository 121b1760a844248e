"""Synchronous client over ``tritonclient.grpc``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ._common import (
    Array,
    Call,
    Deadline,
    EndpointPool,
    InferResultLike,
    RetryPolicy,
    RetryThrottle,
    Send,
    attempts,
    build_request,
    channel_args,
    check_timeout,
    concat_outputs,
    known_contract,
    parse_endpoints,
    plan_chunks,
    read_outputs,
)
from ._methods import TypedMethods
from .contracts import Contract
from .errors import ServerError
from .ops import class_names

__all__ = ["ProductClient", "SyncTransport", "TlsConfig"]

T = TypeVar("T")


class SyncTransport(Protocol):
    """The subset of ``tritonclient.grpc.InferenceServerClient`` used; tests inject fakes."""

    def infer(
        self,
        model_name: str,
        inputs: list[grpcclient.InferInput],
        *,
        outputs: list[grpcclient.InferRequestedOutput] | None = None,
        client_timeout: float | None = None,
        timeout: int | None = None,
    ) -> InferResultLike: ...

    def is_model_ready(self, model_name: str, *, client_timeout: float | None = None) -> bool: ...

    def get_model_config(
        self, model_name: str, *, as_json: bool = False, client_timeout: float | None = None
    ) -> Any: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class TlsConfig:
    """gRPC over TLS: the CA that signed the server, and a client certificate for mutual TLS."""

    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None

    def kwargs(self) -> dict[str, Any]:
        return {
            "ssl": True,
            "root_certificates": str(self.root_certificates) if self.root_certificates else None,
            "private_key": str(self.private_key) if self.private_key else None,
            "certificate_chain": str(self.certificate_chain) if self.certificate_chain else None,
        }


class ProductClient(TypedMethods):
    """Blocking client for every ecomgen model (typed helpers plus a generic :meth:`infer`).

    ``url`` is one ``host:port``, several (a list or ``"a:8001,b:8001"``: requests go round
    robin and fail over when one dies), or one ``dns:///svc:8001`` target for a headless
    Kubernetes Service, which gRPC balances per call. ``timeout_s`` is one deadline for the
    whole call, retries included; what is left of it goes to Triton as the request's own
    timeout, so the server drops work nobody waits for any more.
    """

    def __init__(
        self,
        url: str | Sequence[str] = "localhost:8001",
        *,
        timeout_s: float | None = 30.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        tls: TlsConfig | None = None,
        transport: SyncTransport | None = None,
        throttle: RetryThrottle | None = None,
        verbose: bool = False,
    ) -> None:
        self.urls = parse_endpoints(url)
        self.timeout_s = check_timeout(timeout_s)
        self.retry = RetryPolicy(retries, backoff_s, throttle=throttle or RetryThrottle())
        tls_kwargs = tls.kwargs() if tls else {}

        def make(target: str) -> SyncTransport:
            if transport is not None:
                return transport
            return grpcclient.InferenceServerClient(
                url=target, verbose=verbose, channel_args=channel_args(target), **tls_kwargs
            )

        # A transport passed in belongs to the caller, so close() leaves it open.
        self._owns_transport = transport is None
        self.pool: EndpointPool[SyncTransport] = EndpointPool(self.urls, make)
        self._contracts: dict[str, Contract] = {}

    def __enter__(self) -> ProductClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_transport:
            for transport in self.pool.transports():
                transport.close()

    def _timeout(self, timeout_s: float | None) -> float | None:
        return self.timeout_s if timeout_s is None else check_timeout(timeout_s)

    def _send(self, model: str, deadline: Deadline, request: Any) -> InferResultLike:
        plan = attempts(self.pool, self.retry, model, deadline)
        step = next(plan)
        while True:
            try:
                if isinstance(step, Send):
                    try:
                        outcome: Any = self.pool.transport(step.url).infer(
                            model,
                            request.inputs,
                            outputs=request.outputs,
                            client_timeout=step.client_timeout,
                            timeout=step.server_timeout_us,
                        )
                    except InferenceServerException as exc:
                        outcome = exc
                    step = plan.send(outcome)
                else:
                    time.sleep(step.seconds)
                    step = next(plan)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def contract(self, model: str | Contract, *, timeout_s: float | None = None) -> Contract:
        """A model's contract: known to this client, or read from the server's config once."""
        found = known_contract(model)
        if found is not None:
            return found
        name = str(model)
        if name not in self._contracts:
            self._contracts[name] = Contract.from_config(self.model_config(name, timeout_s=timeout_s))
        return self._contracts[name]

    def infer(
        self,
        model: str | Contract,
        inputs: Mapping[str, Array],
        *,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
    ) -> dict[str, Array]:
        """Validate ``inputs`` against the contract, send them in chunks of max_batch_size, merge outputs."""
        deadline = Deadline(self._timeout(timeout_s))
        contract = self.contract(model, timeout_s=deadline.remaining())
        parts = []
        for rows in plan_chunks(contract, inputs):
            request = build_request(contract, inputs, rows, outputs)
            result = self._send(contract.name, deadline, request)
            parts.append(read_outputs(contract, result, request.batch, outputs))
        return concat_outputs(parts)

    def call(self, call: Call[T], *, timeout_s: float | None = None) -> T:
        """Run a typed operation from :mod:`ecomgen_client.ops`."""
        return call.finish(self.infer(call.model, call.inputs, timeout_s=timeout_s, outputs=call.outputs))

    _run = call

    def is_ready(self, model: str | None = None, *, timeout_s: float | None = None) -> bool:
        """True if ``model`` (default: the product model) is ready on every endpoint; never raises."""
        name = model or self.products_model.name
        try:
            return all(
                bool(self.pool.transport(u).is_model_ready(name, client_timeout=self._timeout(timeout_s)))
                for u in self.urls
            )
        except InferenceServerException:
            return False

    def model_config(self, model: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        url = self.pool.pick()
        try:
            config = self.pool.transport(url).get_model_config(
                model, as_json=True, client_timeout=self._timeout(timeout_s)
            )
        except InferenceServerException as exc:
            from .errors import from_triton_error

            raise from_triton_error(exc) from exc
        if not isinstance(config, dict):
            raise ServerError(f"{model}: unexpected model config {type(config).__name__}")
        return config

    def class_names(self, *, timeout_s: float | None = None) -> tuple[str, ...]:
        """Class names from the served model config, or the contract's when the config has none."""
        config = self.model_config(self.products_model.name, timeout_s=timeout_s)
        return class_names(config, self.products_model.class_names)
