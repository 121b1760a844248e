"""Synchronous client over ``tritonclient.grpc``."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from . import _images
from ._common import (
    IMAGE_OUTPUT,
    TRYON_DEBUG_OUTPUTS,
    Array,
    ImageLike,
    InferResultLike,
    RetryPolicy,
    Seeds,
    ServedSpec,
    TryOnResult,
    build_request,
    check_timeout,
    concat_outputs,
    parse_class_names,
    plan_chunks,
    product_inputs,
    read_outputs,
    resolve_spec,
    tryon_inputs,
)
from ._common import (
    is_pil as _is_pil,
)
from .errors import InvalidInputError, from_triton_error
from .specs import PRODUCT_GAN, TRYON, ModelSpec

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["ProductClient", "SyncTransport"]

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
    ) -> InferResultLike: ...

    def is_model_ready(self, model_name: str, *, client_timeout: float | None = None) -> bool: ...

    def get_model_config(
        self, model_name: str, *, as_json: bool = False, client_timeout: float | None = None
    ) -> Any: ...

    def close(self) -> None: ...


class ProductClient:
    """Blocking client for ``product_gan`` (and, via :meth:`infer`, any model in ``SPECS``).

    Only UNAVAILABLE is retried (server down, or its bounded queue full); every other error
    would fail the same way again, so it is raised at once. ``timeout_s`` applies to each
    gRPC request (each chunk of a large batch), not to a whole call.
    """

    def __init__(
        self,
        url: str = "localhost:8001",
        *,
        timeout_s: float | None = 30.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        spec: ModelSpec | str = PRODUCT_GAN,
        transport: SyncTransport | None = None,
        verbose: bool = False,
    ) -> None:
        self.url = url
        resolved = resolve_spec(spec)
        if not isinstance(resolved, ModelSpec):
            raise InvalidInputError(f"{resolved.name} is not a product model; use try_on() for it")
        self.spec = resolved
        self.timeout_s = check_timeout(timeout_s)
        self.retry = RetryPolicy(retries, backoff_s)
        # A transport passed in belongs to the caller, so close() leaves it open.
        self._owns_transport = transport is None
        self._transport: SyncTransport = (
            transport if transport is not None else grpcclient.InferenceServerClient(url=url, verbose=verbose)
        )

    def __enter__(self) -> ProductClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_transport:
            self._transport.close()

    def _timeout(self, timeout_s: float | None) -> float | None:
        return self.timeout_s if timeout_s is None else check_timeout(timeout_s)

    def _call(self, op: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return op()
            except InferenceServerException as exc:
                error = from_triton_error(exc)
                if not self.retry.should_retry(error, attempt):
                    raise self.retry.final(error, attempt) from exc
            time.sleep(self.retry.delay(attempt))
            attempt += 1

    def infer(
        self,
        spec: ServedSpec | str,
        inputs: Mapping[str, Array],
        *,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
    ) -> dict[str, Array]:
        """Validate ``inputs`` against the spec, send them in chunks of max_batch_size, merge outputs."""
        model = resolve_spec(spec)
        timeout = self._timeout(timeout_s)
        parts = []
        for rows in plan_chunks(model, inputs):
            request = build_request(model, inputs, rows, outputs)
            op = functools.partial(
                self._transport.infer,
                model.name,
                request.inputs,
                outputs=request.outputs,
                client_timeout=timeout,
            )
            parts.append(read_outputs(model, self._call(op), request.batch, outputs))
        return concat_outputs(parts)

    def generate_products(
        self, cls: int | str, seeds: Seeds, *, timeout_s: float | None = None
    ) -> npt.NDArray[np.uint8]:
        """One image per seed of class ``cls`` (name, case-insensitive, or id): uint8 [N, H, W, 3]."""
        outputs = self.infer(self.spec, product_inputs(self.spec, cls, seeds), timeout_s=timeout_s)
        return outputs[IMAGE_OUTPUT]

    def generate_products_pil(
        self, cls: int | str, seeds: Seeds, *, timeout_s: float | None = None
    ) -> list[Image.Image]:
        """Like :meth:`generate_products` but as PIL images (needs Pillow)."""
        return _images.to_pil(self.generate_products(cls, seeds, timeout_s=timeout_s))

    def is_ready(self, *, timeout_s: float | None = None) -> bool:
        """True if the model is loaded and ready; never raises for an unreachable server."""
        try:
            return bool(
                self._transport.is_model_ready(self.spec.name, client_timeout=self._timeout(timeout_s))
            )
        except InferenceServerException:
            return False

    def class_names(self, *, timeout_s: float | None = None) -> tuple[str, ...]:
        """Class names from the served model config, or the spec's when the config has none."""
        op = functools.partial(
            self._transport.get_model_config,
            self.spec.name,
            as_json=True,
            client_timeout=self._timeout(timeout_s),
        )
        return parse_class_names(self._call(op), self.spec.class_names)

    def try_on(
        self,
        person: ImageLike,
        garment: ImageLike,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """``person`` wearing ``garment`` (``tryon``, 256x192). PIL or [H, W, 3] uint8 in, any size
        from 64 to 2048 px per side; returns the same kind: a PIL image or a uint8 [256, 192, 3] array.
        """
        out = self.infer(TRYON, tryon_inputs(TRYON, person, garment), timeout_s=timeout_s, outputs=("image",))
        image = out["image"][0]
        return _images.to_pil(image[None])[0] if _is_pil(person) else image

    def try_on_debug(
        self, person: ImageLike, garment: ImageLike, *, timeout_s: float | None = None
    ) -> TryOnResult:
        """The try-on plus the warped garment and the composition mask, as uint8 arrays."""
        out = self.infer(
            TRYON, tryon_inputs(TRYON, person, garment), timeout_s=timeout_s, outputs=TRYON_DEBUG_OUTPUTS
        )
        return TryOnResult(out["image"][0], out["warped_garment"][0], out["mask"][0])
