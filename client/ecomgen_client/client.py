"""Synchronous client over ``tritonclient.grpc``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ._base import ClientBase, TlsConfig
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

    def get_model_metadata(
        self, model_name: str, *, as_json: bool = False, client_timeout: float | None = None
    ) -> Any: ...

    def close(self) -> None: ...


class ProductClient(ClientBase["SyncTransport"]):
    """Blocking client for every ecomgen model: typed helpers plus a generic :meth:`infer`.

    See :class:`~ecomgen_client._base.ClientBase` for endpoints, deadlines and retries.
    """

    transport_class = grpcclient.InferenceServerClient

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

    def _send(self, model: str, deadline: Deadline, request: Any) -> InferResultLike:
        plan = attempts(self.pool, self.retry, model, deadline)
        step = next(plan)
        while True:
            try:
                if isinstance(step, Send):
                    try:
                        transport = self.pool.transport(step.url)
                        outcome: Any = transport.infer(
                            model, request.inputs, **self._infer_kwargs(request, step)
                        )
                    except InferenceServerException as exc:
                        outcome = exc
                    step = plan.send(outcome)
                else:
                    time.sleep(step.seconds)
                    step = next(plan)
            except StopIteration as done:
                return done.value

    def contract(self, model: str | Contract, *, timeout_s: float | None = None) -> Contract:
        """A model's contract: known to this client, or read from the server's config once."""
        found = self._cached_contract(model)
        if found is not None:
            return found
        return self._learn_contract(str(model), self.model_config(str(model), timeout_s=timeout_s))

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
            raise from_triton_error(exc) from exc
        return config

    def class_names(self, *, timeout_s: float | None = None) -> tuple[str, ...]:
        """Class names from the served model config, or the contract's when the config has none."""
        config = self.model_config(self.products_model.name, timeout_s=timeout_s)
        return class_names(config, self.products_model.class_names)

    def model_metadata(
        self, model: str, *, url: str | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """The model's metadata (``versions``, inputs, outputs) from ``url`` (default: the next endpoint)."""
        target = url or self.pool.pick()
        try:
            meta = self.pool.transport(target).get_model_metadata(
                model, as_json=True, client_timeout=self._timeout(timeout_s)
            )
        except InferenceServerException as exc:
            raise from_triton_error(exc) from exc
        return dict(meta)

    def scene_names(self, *, timeout_s: float | None = None) -> tuple[str, ...]:
        """Scene names ``product_scene`` reports in its config (``scenes``); () when it lists none."""
        return scene_names(self.model_config(PRODUCT_SCENE.name, timeout_s=timeout_s))
