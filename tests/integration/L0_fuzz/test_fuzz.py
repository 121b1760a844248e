"""Bounded property-based fuzzing of tensors and bytes against the real server (hypothesis).

Whatever a caller sends, the answer is a result or INVALID_ARGUMENT naming the problem:
never INTERNAL or UNKNOWN (a Python traceback), and the server stays live.
"""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tritonclient.grpc import service_pb2, service_pb2_grpc

pytestmark = pytest.mark.integration

ACCEPTABLE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
DTYPES = {"UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "FP32": np.float32, "FP16": np.float16}
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples every run: CI failures reproduce
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def stub(served):
    with grpc.insecure_channel(served.url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def send(stub, model: str, tensors: list[tuple[str, str, list[int], bytes]]) -> grpc.StatusCode:
    req = service_pb2.ModelInferRequest(model_name=model)
    for name, dtype, shape, payload in tensors:
        req.inputs.add(name=name, datatype=dtype, shape=shape)
        req.raw_input_contents.append(payload)
    try:
        stub.ModelInfer(req, timeout=60)
    except grpc.RpcError as e:
        assert e.code() in ACCEPTABLE, f"{model}: {e.code()} {e.details()}"
        assert "Traceback" not in e.details()
        return e.code()
    return grpc.StatusCode.OK


shapes = st.lists(st.integers(0, 70), min_size=0, max_size=5)


@st.composite
def tensor(draw, name: str):  # type: ignore[no-untyped-def]
    """Any dtype, any shape, any bytes: with a length that may or may not match the shape."""
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    shape = draw(shapes)
    size = int(np.prod(shape)) * np.dtype(DTYPES[dtype]).itemsize if shape else 0
    size = draw(st.sampled_from([size, max(0, size - 1), size + 4])) if size < 1 << 20 else 16
    values = draw(st.sampled_from(["zeros", "random", "nan", "extremes"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if values == "random":
        payload = rng.integers(0, 256, size, np.uint8).tobytes()
    elif values == "nan" and dtype in ("FP32", "FP16"):
        payload = np.full(size // np.dtype(DTYPES[dtype]).itemsize, np.nan, DTYPES[dtype]).tobytes()[:size]
    elif values == "extremes":
        payload = b"\xff" * size
    else:
        payload = bytes(size)
    return name, dtype, shape, payload


@FUZZ
@given(class_id=tensor("class_id"), seed=tensor("seed"))
def test_product_gan_survives_any_tensor(stub, class_id, seed):
    send(stub, "product_gan", [class_id, seed])


@FUZZ
@given(person=tensor("person"), garment=tensor("garment"))
def test_tryon_survives_any_tensor(stub, person, garment):
    send(stub, "tryon", [person, garment])


@FUZZ
@given(image=tensor("image"), warped=tensor("warped_garment"), mask=tensor("mask"))
def test_an_internal_step_survives_any_tensor(stub, image, warped, mask):
    send(stub, "tryon_post", [image, warped, mask])


def _png(rng: np.random.Generator, h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@st.composite
def encoded(draw):  # type: ignore[no-untyped-def]
    """Random bytes, a real PNG cut at any point, or a PNG with bytes flipped anywhere."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "tiny", "valid"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    png = _png(rng, draw(st.integers(1, 200)), draw(st.integers(1, 200)))
    if kind == "truncated":
        return png[: draw(st.integers(0, len(png)))]
    if kind == "flipped":
        data = bytearray(png)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    return png


def bytes_tensor(name: str, elements: list[bytes], shape: list[int]) -> tuple[str, str, list[int], bytes]:
    payload = b"".join(len(e).to_bytes(4, "little") + e for e in elements)
    return name, "BYTES", shape, payload


@FUZZ
@given(person=encoded(), garment=encoded(), lie=st.sampled_from([None, "count", "length"]))
def test_tryon_bytes_survives_any_bytes(stub, person, garment, lie):
    p = bytes_tensor("person", [person], [1, 1])
    g = bytes_tensor("garment", [garment], [1, 1])
    if lie == "count":  # shape says two elements, payload holds one
        p = bytes_tensor("person", [person], [1, 2])
    elif lie == "length":  # the length prefix claims more bytes than follow
        p = ("person", "BYTES", [1, 1], (len(person) + 100).to_bytes(4, "little") + person)
    send(stub, "tryon_bytes", [p, g])


def test_the_server_is_still_live_and_serving(served, stub):
    live = stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10)
    assert live.live
    ready = stub.ModelReady(service_pb2.ModelReadyRequest(name="tryon_bytes"), timeout=10)
    assert ready.ready
