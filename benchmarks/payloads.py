"""Request payloads for any served model, built from its public contract.

Locust, perf_analyzer, the baseline comparison and the ensemble benchmark all send what
this module builds, so no benchmark names a model's tensors. Torch-free (the Locust
process imports it): numpy, Pillow and the contracts.

How an input gets its values, from its ``TensorSpec``:

* an image (``kind == "image"``, or UINT8 ``[..., 3]``): a fixture photo from
  ``tests/fixtures``. Inputs named like a VITON folder take that folder (``person`` ->
  ``test/image``, ``garment`` -> ``test/cloth``; every image input of one request uses the
  same row of ``test_pairs.txt``, the unpaired protocol); any other image input takes the
  product photos. Fixed dims: resized to them. Variable dims: the opt shape of the first
  network of the model whose image input has variable sides (what the TensorRT profile is
  tuned for, e.g. 64x48 for an upscaler), else the photo's own size, clamped to the bounds;
  ``image_size`` overrides both;
* an encoded image (BYTES with ``kind == "image"`` or a size limit of at least 64 KiB): the
  same photo as JPEG (quality 90);
* an input whose spec gives an ``example`` (``format`` "1080x1080", ``price`` "129.00",
  ``count`` 4): that value;
* integers: uniform over ``value_range`` (``class_id`` 0..9, ``seed`` 0..2^63-1), else 0..99;
* floats: one-hot rows for ``kind == "onehot"``, uniform over ``value_range``, else N(0, 1);
* other BYTES: a short UTF-8 text;
* a stack of images with a variable count (a shopper's ``history``): 8 photos.

Optional inputs are left out unless their spec gives an example (the product's ``class_id`` and
``seed`` of an ad, rather than an upload); the outputs asked for are the required ones (what
the thin client asks for, e.g. ``image`` only for ``tryon``).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecomgen_client.contracts import CONTRACTS, Contract, TensorSpec
from training.paths import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "fixtures"
VITON = FIXTURES / "viton"
PRODUCT_PHOTOS = FIXTURES / "fashion-products" / "images"
# Input name -> VITON fixture folder (column of test_pairs.txt); other image inputs: product photos.
VITON_COLUMNS = {"person": 0, "garment": 1}
VITON_FOLDERS = ("test/image", "test/cloth")
MIN_ENCODED_IMAGE_BYTES = 64 << 10
TEXT = "ecomgen benchmark request"


def contracts() -> dict[str, Contract]:
    """Every model a benchmark can load: the registry's contracts, plus the client's known ones."""
    out = dict(CONTRACTS)
    for model in _registry():
        out[model.name] = model.contract
    return out


@functools.cache
def _registry() -> tuple[Any, ...]:
    try:
        from ecomgen.registry import REGISTRY
    except ImportError:  # the client alone (a load generator host without the server package)
        return ()
    return tuple(REGISTRY)


def is_image(t: TensorSpec) -> bool:
    """An image ([H, W, 3]), a stack of them ([N, H, W, 3], e.g. a shopper's history) or an encoded one."""
    if t.kind == "image":
        return True
    if t.dtype == "UINT8":
        return len(t.dims) in (3, 4) and t.dims[-1] == 3
    return t.dtype == "BYTES" and t.max_bytes >= MIN_ENCODED_IMAGE_BYTES


@functools.cache
def _photos(group: str) -> tuple[np.ndarray, ...]:
    """Fixture photos as uint8 HWC: a VITON column ("0", "1") in test_pairs.txt order, or products."""
    from PIL import Image

    if group == "products":
        paths = sorted(PRODUCT_PHOTOS.glob("*.jpg"))
    else:
        column = int(group)
        rows = [line.split() for line in (VITON / "test_pairs.txt").read_text().splitlines() if line.strip()]
        paths = [VITON / VITON_FOLDERS[column] / row[column] for row in rows]
    if not paths:
        raise FileNotFoundError(f"no fixture photos for {group!r} under {FIXTURES}")
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return tuple(out)


def _group(name: str) -> str:
    return str(VITON_COLUMNS[name]) if name in VITON_COLUMNS else "products"


def typical_image_size(model_name: str) -> tuple[int, int] | None:
    """(H, W) of the opt profile of the model's first network with a variable-size image input."""
    for model in _registry():
        if model.name != model_name:
            continue
        for net in model.networks:
            for t in net.inputs:
                if t.kind == "image" and t.variable:
                    opt = net.profile.shapes(t)[1]
                    return int(opt[-2]), int(opt[-1])
    return None


STACK = 8  # images in a stack input ([N, H, W, 3]) when N is variable: a shopper's 8 browsed photos


def _fit(t: TensorSpec, hw: tuple[int, int]) -> tuple[int, int]:
    """``hw`` inside the tensor's bounds (fixed dims win)."""
    if t.dtype == "BYTES" or len(t.dims) < 3:
        return hw
    first = len(t.dims) - 3  # 1 for a stack [N, H, W, 3]
    out = []
    for k, want in enumerate(hw):
        i = first + k
        d = t.dims[i]
        if d >= 0:
            out.append(d)
            continue
        lo = t.min_dims[i] if t.min_dims else 1
        hi = t.max_dims[i] if t.max_dims else want
        out.append(min(max(want, lo), hi))
    return out[0], out[1]


@functools.cache
def _image(group: str, index: int, hw: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    photos = _photos(group)
    photo = photos[index % len(photos)]
    if hw is None or photo.shape[:2] == hw:
        return photo
    return np.asarray(Image.fromarray(photo).resize((hw[1], hw[0]), Image.Resampling.BICUBIC), np.uint8)


@functools.cache
def _jpeg(group: str, index: int, hw: tuple[int, int] | None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_image(group, index, hw)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@dataclass(frozen=True)
class Payload:
    """Inputs of one request (``rows`` rows on a batched model) and the outputs to ask for."""

    model: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    rows: int

    def expected_bytes(self, contract: Contract) -> int | None:
        """Bytes of the fixed-size outputs asked for; None when some output's size varies."""
        total = 0
        for name in self.outputs:
            t = contract.output(name)
            if t.dtype == "BYTES" or t.variable:
                return None
            total += (self.rows if contract.batched else 1) * int(np.prod(t.dims)) * t.numpy_dtype.itemsize
        return total


class PayloadMaker:
    """Builds varied payloads for one model; ``rng`` seeds the values, ``index`` picks the photo."""

    def __init__(
        self, contract: Contract, rows: int = 1, image_size: tuple[int, int] | None = None, seed: int = 0
    ) -> None:
        self.contract = contract
        self.rows = max(1, min(rows, contract.max_batch_size)) if contract.batched else 1
        self.image_size = image_size or typical_image_size(contract.name)
        self.rng = np.random.default_rng(seed)
        self.count = 0
        self.outputs = tuple(t.name for t in contract.outputs if not t.optional)

    def __call__(self) -> Payload:
        index = self.count
        self.count += 1
        arrays = {t.name: self._tensor(t, index) for t in self.contract.inputs if not t.optional or t.example}
        return Payload(self.contract.name, arrays, self.outputs, self.rows)

    def _shape(self, t: TensorSpec) -> tuple[int, ...]:
        dims = []
        for i, d in enumerate(t.dims):
            if d >= 0:
                dims.append(d)
            else:
                lo = t.min_dims[i] if t.min_dims else 1
                hi = t.max_dims[i] if t.max_dims else 4
                dims.append(min(max(4, lo), hi))
        return (self.rows, *dims) if self.contract.batched else tuple(dims)

    def _tensor(self, t: TensorSpec, index: int) -> np.ndarray:
        if is_image(t):
            return self._image(t, index)
        shape = self._shape(t)
        if t.example:
            value = t.example.encode() if t.dtype == "BYTES" else t.numpy_dtype.type(t.example)
            return np.full(shape, value, dtype=t.numpy_dtype)
        if t.dtype == "BYTES":
            return np.full(shape, TEXT.encode(), dtype=np.object_)
        if t.dtype == "BOOL":
            return self.rng.integers(0, 2, shape).astype(np.bool_)
        if t.numpy_dtype.kind in "iu":
            lo, hi = t.value_range or (0, 99)
            return self.rng.integers(int(lo), int(hi), shape, dtype=t.numpy_dtype, endpoint=True)
        if t.kind == "onehot":
            arr = np.zeros(shape, t.numpy_dtype)
            classes = self.rng.integers(0, shape[-1], shape[:-1])
            np.put_along_axis(arr, classes[..., None], 1, axis=-1)
            return arr
        if t.value_range is not None:
            return self.rng.uniform(t.value_range[0], t.value_range[1], shape).astype(t.numpy_dtype)
        return self.rng.standard_normal(shape).astype(t.numpy_dtype)

    def _image(self, t: TensorSpec, index: int) -> np.ndarray:
        group = _group(t.name)
        rows = self.rows if self.contract.batched else 1
        photo = _photos(group)[index % len(_photos(group))]
        hw = _fit(t, self.image_size or (int(photo.shape[0]), int(photo.shape[1])))
        if t.dtype == "BYTES":
            values = [_jpeg(group, index + r, hw) for r in range(rows)]
            arr = np.empty(len(values), dtype=np.object_)
            arr[:] = values
            return arr.reshape((rows, 1) if self.contract.batched else (1,))
        if len(t.dims) == 4:  # a stack of images per row
            n = t.dims[0]
            if n < 0:
                n = min(
                    max(STACK, t.min_dims[0] if t.min_dims else 1), t.max_dims[0] if t.max_dims else STACK
                )
            stacks = [np.stack([_image(group, index + r * n + j, hw) for j in range(n)]) for r in range(rows)]
            images = np.stack(stacks)
        else:
            images = np.stack([_image(group, index + r, hw) for r in range(rows)])
        if t.dtype != "UINT8":  # a float image contract: NCHW in [-1, 1]
            images = np.moveaxis(images.astype(np.float32) / 127.5 - 1.0, -1, -3).astype(t.numpy_dtype)
        return images if self.contract.batched else images[0]


def payload(model: str, rows: int = 1, index: int = 0, image_size: tuple[int, int] | None = None) -> Payload:
    """One payload of ``model`` (convenience for scripts and tests)."""
    maker = PayloadMaker(contracts()[model], rows, image_size, seed=index)
    maker.count = index
    return maker()


def parse_size(text: str) -> tuple[int, int] | None:
    """``"64x48"`` -> (64, 48) (height x width); ``""`` -> None."""
    if not text:
        return None
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def describe(p: Payload, contract: Contract | None = None) -> str:
    """``class_id INT32 [1, 1], seed INT64 [1, 1] -> image`` (for reports)."""
    contract = contract or contracts()[p.model]
    parts = []
    for name, arr in p.inputs.items():
        parts.append(f"{name} {contract.input(name).dtype} {list(arr.shape)}")
    return ", ".join(parts) + " -> " + ", ".join(p.outputs)


def product_jpeg(index: int, hw: tuple[int, int] | None = None) -> bytes:
    """Fixture product photo ``index`` (cycled) as a JPEG (quality 90), resized to ``hw`` (H, W) if given:
    ``product_jpeg(0, (1000, 750))`` is a 1,000 px shop photo."""
    return _jpeg("products", index % len(_photos("products")), hw)


def infer_inputs(inputs: dict[str, np.ndarray], model: str) -> list[Any]:
    """tritonclient gRPC inputs with the contract's datatypes."""
    import tritonclient.grpc as grpcclient

    contract = contracts()[model]
    out = []
    for name, array in inputs.items():
        t = grpcclient.InferInput(name, list(array.shape), contract.input(name).dtype)
        t.set_data_from_numpy(array)
        out.append(t)
    return out


def fetch(url: str, p: Payload, timeout_s: float = 120.0) -> dict[str, np.ndarray]:
    """Send one payload over gRPC; the outputs asked for, as numpy arrays."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        result = client.infer(
            p.model,
            infer_inputs(p.inputs, p.model),
            outputs=[grpcclient.InferRequestedOutput(n) for n in p.outputs],
            client_timeout=timeout_s,
        )
    out = {}
    for name in p.outputs:
        value = result.as_numpy(name)
        if value is None:
            raise RuntimeError(f"{p.model}: no output {name!r} in the response")
        out[name] = value
    return out
