"""asyncio client over ``tritonclient.grpc.aio``; the same API as :class:`ProductClient`, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from ._base import ClientBase
from ._common import (
    Array,
    Call,
    Deadline,
    InferResultLike,
    Send,
    attempts,
    build_request,
    concat_outputs,
    plan_chunks,
    read_outputs,
)
from .contracts import PRODUCT_SCENE, Contract
from .errors import from_triton_error
from .ops import class_names, scene_names

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

    async def get_model_metadata(
        self, model_name: str, *, as_json: bool = False, client_timeout: float | None = None
    ) -> Any: ...

    async def close(self) -> None: ...


class AsyncProductClient(ClientBase["AsyncTransport"]):
    """Non-blocking client; see :class:`ecomgen_client.ProductClient` for the semantics.

    gRPC channels are opened on first use because grpc.aio binds them to the running loop.
    Chunks of a large batch are sent one after another, leaving concurrency to the caller.
    """

    transport_class = grpcaio.InferenceServerClient

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

    async def _send(self, model: str, deadline: Deadline, request: Any) -> InferResultLike:
        plan = attempts(self.pool, self.retry, model, deadline)
        step = next(plan)
        while True:
            try:
                if isinstance(step, Send):
                    try:
                        transport = self.pool.transport(step.url)
                        outcome: Any = await transport.infer(
                            model, request.inputs, **self._infer_kwargs(request, step)
                        )
                    except InferenceServerException as exc:
                        outcome = exc
                    step = plan.send(outcome)
                else:
                    await asyncio.sleep(step.seconds)
                    step = next(plan)
            except StopIteration as done:
                return done.value

    async def contract(self, model: str | Contract, *, timeout_s: float | None = None) -> Contract:
        found = self._cached_contract(model)
        if found is not None:
            return found
        return self._learn_contract(str(model), await self.model_config(str(model), timeout_s=timeout_s))

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
        return config

    async def class_names(self, *, timeout_s: float | None = None) -> tuple[str, ...]:
        config = await self.model_config(self.products_model.name, timeout_s=timeout_s)
        return class_names(config, self.products_model.class_names)

    async def model_metadata(
        self, model: str, *, url: str | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        target = url or self.pool.pick()
        try:
            meta = await self.pool.transport(target).get_model_metadata(
                model, as_json=True, client_timeout=self._timeout(timeout_s)
            )
        except InferenceServerException as exc:
            raise from_triton_error(exc) from exc
        return dict(meta)

    async def scene_names(self, *, timeout_s: float | None = None) -> tuple[str, ...]:
        return scene_names(await self.model_config(PRODUCT_SCENE.name, timeout_s=timeout_s))
