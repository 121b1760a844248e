"""asyncio client over ``tritonclient.grpc.aio``; the same API as :class:`ProductClient`, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
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
from .client import TlsConfig
from .contracts import Contract
from .errors import ServerError, from_triton_error
from .ops import class_names

__all__ = ["AsyncProductClient", "AsyncTransport"]

T = TypeVar("T")


class AsyncTransport(Protocol):
    """The subset of ``tritonclient.grpc.aio.InferenceServerClient`` used; tests inject fakes."""

    async def infer(
        self,
        model_name: str,
        inputs: list[grpcclient.InferInput],
        *,
        outputs: list[grpcclient.InferRequestedOutput] | None = None,
        client_timeout: float | None = None,
        timeout: int | None = None,
    ) -> InferResultLike: ...

    async def is_model_ready(self, model_name: str, *, client_timeout: float | None = None) -> bool: ...

    async def get_model_config(
        self, model_name: str, *, as_json: bool = False, client_timeout: float | None = None
    ) -> Any: ...

    async def close(self) -> None: ...


class AsyncProductClient(TypedMethods):
    """Non-blocking client; see :class:`ecomgen_client.ProductClient` for the semantics.

    gRPC channels are opened on first use because grpc.aio binds them to the running loop.
    Chunks of a large batch are sent one after another, leaving concurrency to the caller.
    """

    def __init__(
        self,
        url: str | Sequence[str] = "localhost:8001",
        *,
        timeout_s: float | None = 30.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        tls: TlsConfig | None = None,
        transport: AsyncTransport | None = None,
        throttle: RetryThrottle | None = None,
        verbose: bool = False,
    ) -> None:
        self.urls = parse_endpoints(url)
        self.timeout_s = check_timeout(timeout_s)
        self.retry = RetryPolicy(retries, backoff_s, throttle=throttle or RetryThrottle())
        tls_kwargs = tls.kwargs() if tls else {}

        def make(target: str) -> AsyncTransport:
            if transport is not None:
                return transport
            return grpcaio.InferenceServerClient(
                url=target, verbose=verbose, channel_args=channel_args(target), **tls_kwargs
            )

        self._owns_transport = transport is None
        self.pool: EndpointPool[AsyncTransport] = EndpointPool(self.urls, make)
        self._contracts: dict[str, Contract] = {}

    async def __aenter__(self) -> AsyncProductClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_transport:
            for transport in self.pool.transports():
                await transport.close()

    def _timeout(self, timeout_s: float | None) -> float | None:
        return self.timeout_s if timeout_s is None else check_timeout(timeout_s)

    async def _send(self, model: str, deadline: Deadline, request: Any) -> InferResultLike:
        plan = attempts(self.pool, self.retry, model, deadline)
        step = next(plan)
        while True:
            try:
                if isinstance(step, Send):
                    try:
                        outcome: Any = await self.pool.transport(step.url).infer(
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
                    await asyncio.sleep(step.seconds)
                    step = next(plan)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def contract(self, model: str | Contract, *, timeout_s: float | None = None) -> Contract:
        found = known_contract(model)
        if found is not None:
            return found
        name = str(model)
        if name not in self._contracts:
            self._contracts[name] = Contract.from_config(await self.model_config(name, timeout_s=timeout_s))
        return self._contracts[name]

    async def infer(
        self,
        model: str | Contract,
        inputs: Mapping[str, Array],
        *,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
    ) -> dict[str, Array]:
        deadline = Deadline(self._timeout(timeout_s))
        contract = await self.contract(model, timeout_s=deadline.remaining())
        parts = []
        for rows in plan_chunks(contract, inputs):
            request = build_request(contract, inputs, rows, outputs)
            result = await self._send(contract.name, deadline, request)
            parts.append(read_outputs(contract, result, request.batch, outputs))
        return concat_outputs(parts)

    async def call(self, call: Call[T], *, timeout_s: float | None = None) -> T:
        out = await self.infer(call.model, call.inputs, timeout_s=timeout_s, outputs=call.outputs)
        return call.finish(out)

    _run = call

    async def is_ready(self, model: str | None = None, *, timeout_s: float | None = None) -> bool:
        name = model or self.products_model.name
        try:
            for u in self.urls:
                if not await self.pool.transport(u).is_model_ready(
                    name, client_timeout=self._timeout(timeout_s)
                ):
                    return False
            return True
        except InferenceServerException:
            return False

    async def model_config(self, model: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        url = self.pool.pick()
        try:
            config = await self.pool.transport(url).get_model_config(
                model, as_json=True, client_timeout=self._timeout(timeout_s)
            )
        except InferenceServerException as exc:
            raise from_triton_error(exc) from exc
        if not isinstance(config, dict):
            raise ServerError(f"{model}: unexpected model config {type(config).__name__}")
        return config

    async def class_names(self, *, timeout_s: float | None = None) -> tuple[str, ...]:
        config = await self.model_config(self.products_model.name, timeout_s=timeout_s)
        return class_names(config, self.products_model.class_names)
