"""An in-process stand-in for a server with the product-studio models, for the client's unit tests.

It answers ``product_cutout`` (alpha = 255 where a pixel is not near-white), ``product_scene``,
``ad_creative`` and ``inventory_image`` (small real PNGs that say what was asked), model metadata and
config, like ``tritonclient.grpc.InferenceServerClient`` does; tests can make it slow, overloaded or
reject a product.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

STUDIO_MODELS = ("product_cutout", "product_scene", "ad_creative", "inventory_image")


def triton_error(code: str, msg: str = "boom") -> InferenceServerException:
    return InferenceServerException(msg=msg, status=f"StatusCode.{code}")


def decode_input(infer_input: grpcclient.InferInput) -> np.ndarray:
    raw = infer_input._get_content()
    shape = infer_input.shape()
    if infer_input.datatype() == "BYTES":
        return deserialize_bytes_tensor(raw).reshape(shape)
    dtype = {"UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "FP32": np.float32}[
        infer_input.datatype()
    ]
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def fake_alpha(images: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] -> [N, H, W]: 255 where the pixel is darker than near-white, else 0."""
    return np.where(images.min(axis=-1) < 240, 255, 0).astype(np.uint8)


def png(text: str) -> bytes:
    """A tiny real PNG whose text chunk says what it is (so every answer differs and decodes)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("request", text)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 255, 255)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _photo_ok(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=["JPEG", "PNG", "WEBP"]) as im:
            im.load()
    except Exception:
        return False
    return True


class FakeResult:
    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self._outputs = outputs

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self._outputs.get(name)


class StudioServer:
    """Sync transport: ``calls`` records (model, {input: value}) of every inference.

    ``delay_s``: each inference sleeps this long. ``fail``: called with (model, inputs) before
    answering; an exception it returns is raised (an INVALID_ARGUMENT, a full queue, ...).
    ``served``: the models it serves (metadata of any other is NOT_FOUND). ``scenes``: the library
    its product_scene config lists (None: no ``scenes`` parameter).
    """

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        fail: Callable[[str, dict[str, np.ndarray]], Exception | None] | None = None,
        served: tuple[str, ...] = STUDIO_MODELS,
        scenes: list[str] | None = None,
        versions: tuple[str, ...] = ("1",),
    ) -> None:
        self.delay_s, self.fail, self.served = delay_s, fail, served
        self.scenes, self.versions = scenes, versions
        self.calls: list[tuple[str, dict[str, np.ndarray]]] = []
        self.lock = threading.Lock()
        self.closed = False

    def infer(
        self,
        model_name: str,
        inputs: list[grpcclient.InferInput],
        *,
        outputs: list[grpcclient.InferRequestedOutput] | None = None,
        client_timeout: float | None = None,
        timeout: int | None = None,
    ) -> FakeResult:
        values = {i.name(): decode_input(i) for i in inputs}
        with self.lock:
            self.calls.append((model_name, values))
        if self.delay_s:
            time.sleep(self.delay_s)
        error = self.fail(model_name, values) if self.fail else None
        if error is not None:
            raise error
        return FakeResult(self.answer(model_name, values))

    def answer(self, model: str, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if model == "product_cutout":
            return {"alpha": fake_alpha(values["image"])}
        if "product" in values and not _photo_ok(bytes(values["product"][0])):
            raise triton_error("INVALID_ARGUMENT", "input 'product' is not a decodable JPEG/PNG/WEBP image")
        what = {k: (v.tolist() if k != "product" else len(v[0])) for k, v in values.items()}
        n = int(values["variants"][0]) if "variants" in values else 1
        images = np.array(
            [png(json.dumps({"model": model, "k": k, **what}, default=str)) for k in range(n)],
            dtype=np.object_,
        )
        name = "image" if model == "inventory_image" else "images"
        return {name: images}

    def inferences(self, model: str | None = None) -> list[dict[str, np.ndarray]]:
        return [v for m, v in self.calls if model is None or m == model]

    def get_model_metadata(
        self, model_name: str, *, as_json: bool = False, client_timeout: float | None = None
    ) -> Any:
        if model_name not in self.served:
            raise triton_error("NOT_FOUND", f"Request for unknown model: '{model_name}' is not found")
        return {"name": model_name, "versions": list(self.versions), "platform": "ensemble"}

    def get_model_config(
        self, model_name: str, *, as_json: bool = False, client_timeout: float | None = None
    ) -> Any:
        params = {} if self.scenes is None else {"scenes": {"string_value": json.dumps(self.scenes)}}
        return {"config": {"name": model_name, "parameters": params}}

    def is_model_ready(self, model_name: str, *, client_timeout: float | None = None) -> bool:
        return model_name in self.served

    def close(self) -> None:
        self.closed = True


class AsyncStudioServer:
    """The same, for ``AsyncProductClient``."""

    def __init__(self, sync: StudioServer) -> None:
        self.sync = sync

    async def infer(self, model_name: str, inputs: list[grpcclient.InferInput], **kw: Any) -> FakeResult:
        return self.sync.infer(model_name, inputs, **kw)

    async def get_model_metadata(self, model_name: str, **kw: Any) -> Any:
        return self.sync.get_model_metadata(model_name, **kw)

    async def get_model_config(self, model_name: str, **kw: Any) -> Any:
        return self.sync.get_model_config(model_name, **kw)

    async def is_model_ready(self, model_name: str, **kw: Any) -> bool:
        return self.sync.is_model_ready(model_name, **kw)

    async def close(self) -> None:
        self.sync.close()
