"""Hostile requests against every model in the repository, public and internal (Triton's L0_input_validation).

Each gets INVALID_ARGUMENT naming the problem, never INTERNAL; nothing another caller
sent ever comes back; the server stays up. Requests are built as raw gRPC messages where
tritonclient would refuse to build them (short payloads, batch 0).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from export.trt_runtime import TRITON_VERSION

pytestmark = pytest.mark.integration

# Bytes no real image contains; if they ever show up in another request's answer, data leaked.
MARKER = b"ECOMGEN-SHOPPER-PHOTO-MARKER-"
# The marker read as the integers an error message could echo ("value 1296254541 out of range").
MARKER_NUMBERS = {
    str(int.from_bytes(MARKER[i : i + n], order, signed=True))
    for n in (4, 8)
    for order in ("little", "big")
    for i in range(len(MARKER) - n)
}
NP_TO_TRITON = {
    "TYPE_UINT8": np.uint8,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP32": np.float32,
}


def configs(served) -> dict[str, mc.ModelConfig]:
    out = {}
    for path in sorted((served.repository / "cpu").glob("*/config.pbtxt")):
        out[path.parent.name] = text_format.Parse(path.read_text(), mc.ModelConfig())
    return out


@pytest.fixture(scope="module")
def stub(served) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(served.url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def concrete(dims, batched: bool, batch: int = 1, side: int = 64) -> list[int]:
    shape = [d if d > 0 else side for d in dims]
    return [batch, *shape] if batched else shape


def raw_request(
    cfg: mc.ModelConfig, batch: int = 1, short_by: int = 0, fill: bytes = b"", smallest: bool = False
) -> service_pb2.ModelInferRequest:
    """A request for every required input of ``cfg`` with ``batch`` rows; contents optionally short."""
    req = service_pb2.ModelInferRequest(model_name=cfg.name)
    for t in cfg.input:
        if t.optional:
            continue
        dtype = mc.DataType.Name(t.data_type)
        shape = concrete(t.dims, cfg.max_batch_size > 0, batch)
        if smallest:  # variable dims at their declared minimum (contract.<name>), else 1
            key = f"contract.{t.name}"  # not cfg.parameters[key]: that inserts a missing key
            low = json.loads(cfg.parameters[key].string_value if key in cfg.parameters else "{}").get(
                "min_dims"
            )
            dims = [d if d > 0 else max(1, low[i] if low else 1) for i, d in enumerate(t.dims)]
            shape = [batch, *dims] if cfg.max_batch_size > 0 else dims
        tensor = req.inputs.add(
            name=t.name, datatype="BYTES" if dtype == "TYPE_STRING" else dtype[5:], shape=shape
        )
        del tensor
        if dtype == "TYPE_STRING":
            count = int(np.prod(shape))
            payload = b"".join(len(b"x").to_bytes(4, "little") + b"x" for _ in range(count))
        else:
            size = int(np.prod(shape)) * np.dtype(NP_TO_TRITON[dtype]).itemsize
            payload = (fill * (size // max(1, len(fill)) + 1))[:size] if fill else bytes(size)
        req.raw_input_contents.append(payload[: max(0, len(payload) - short_by)])
    return req


def rejected(stub, req) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(req, timeout=30)
    return info.value


def test_the_served_triton_is_the_pinned_one(served):
    with urllib.request.urlopen(f"{served.http_url}/v2", timeout=10) as r:
        meta = json.loads(r.read())
    assert meta["version"] == TRITON_VERSION == "2.51.0"
    pyproject = (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text()
    assert '"nvidia-pytriton==0.7.0"' in pyproject and '"tritonclient[grpc,http]==2.51.0"' in pyproject


def test_batch_zero_is_refused_by_every_batching_model(served, stub):
    """Finding 2: Triton 2.41 answered a batch-0 tryon with the previous caller's person photo."""
    checked = 0
    for name, cfg in configs(served).items():
        if cfg.max_batch_size == 0:
            continue
        err = rejected(stub, raw_request(cfg, batch=0))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.details())
        checked += 1
    assert checked >= 5


def test_a_short_payload_is_refused_by_every_model(served, stub):
    for name, cfg in configs(served).items():
        if all(mc.DataType.Name(t.data_type) == "TYPE_STRING" for t in cfg.input if not t.optional):
            continue
        err = rejected(stub, raw_request(cfg, short_by=1))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.details())
        assert "byte size" in err.details() or "expected" in err.details(), err.details()


def test_no_answer_ever_carries_another_callers_photo(served, stub, pairs):
    """A tryon with a marked person photo, then every malformed request: no marker comes back."""
    person = pairs.person[0].copy()
    person.reshape(-1)[: len(MARKER) * 4] = np.frombuffer(MARKER * 4, np.uint8)
    cfgs = configs(served)
    with grpcclient.InferenceServerClient(served.url) as c:
        ins = []
        for name, arr in (("person", person[None]), ("garment", pairs.cloth[:1])):
            i = grpcclient.InferInput(name, list(arr.shape), "UINT8")
            i.set_data_from_numpy(arr)
            ins.append(i)
        c.infer("tryon", ins)
    for cfg in (cfgs["tryon"], cfgs["tryon_pre"], cfgs["tryon_bytes"], cfgs["tryon_decode"]):
        for req in (raw_request(cfg, batch=0), raw_request(cfg, short_by=7)):
            try:
                response = stub.ModelInfer(req, timeout=30)
            except grpc.RpcError as e:
                assert MARKER[:8] not in e.details().encode(), e.details()
                assert not any(n in e.details() for n in MARKER_NUMBERS), e.details()
                continue
            # A model that answers must not answer with the earlier caller's bytes.
            assert all(MARKER[:8] not in out for out in response.raw_output_contents), cfg.name


def _float_request(cfg: mc.ModelConfig, poison: float) -> service_pb2.ModelInferRequest | None:
    req = raw_request(cfg, smallest=True)  # within every dim bound, so the poison is the problem
    poisoned = False
    for t, payload_i in zip(
        [t for t in cfg.input if not t.optional], range(len(req.raw_input_contents)), strict=True
    ):
        dtype = mc.DataType.Name(t.data_type)
        if dtype == "TYPE_FP32" and not poisoned:
            arr = np.frombuffer(req.raw_input_contents[payload_i], np.float32).copy()
            arr[0] = poison
            req.raw_input_contents[payload_i] = arr.tobytes()
            poisoned = True
        elif dtype != "TYPE_STRING":
            # Other inputs in range (zeros are not, e.g. variants 1-16), so the poison is the problem.
            params = {k: v.string_value for k, v in cfg.parameters.items()}
            extra = json.loads(params.get(f"contract.{t.name}") or "{}")
            if "value_range" in extra:
                arr = np.frombuffer(req.raw_input_contents[payload_i], NP_TO_TRITON[dtype]).copy()
                arr[:] = extra["value_range"][0]
                req.raw_input_contents[payload_i] = arr.tobytes()
    return req if poisoned else None


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_nan_and_inf_are_refused_by_every_step_that_takes_floats(served, stub, poison):
    """Finding 9: tryon_post and tryon_encode accepted NaN. Internal steps are callable directly."""
    checked = []
    for name, cfg in configs(served).items():
        req = _float_request(cfg, poison)
        if req is None:
            continue
        err = rejected(stub, req)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, err.details())
        assert "NaN or Inf" in err.details()
        checked.append(name)
    assert {"tryon_post", "tryon_encode", "tryon_parser"} <= set(checked)


def test_inference_over_http_json_is_off_by_default(served):
    """Finding 9: over HTTP/JSON, class_id 2**40 returned 200 and silently wrapped to class 0.

    Triton 2.51's JSON decoder wraps it before any model code runs, so no step can refuse it;
    inference is gRPC only unless the launcher is given --http-inference (SECURITY.md).
    """
    body = {
        "inputs": [
            {"name": "class_id", "shape": [1, 1], "datatype": "INT32", "data": [2**40]},
            {"name": "seed", "shape": [1, 1], "datatype": "INT64", "data": [1]},
        ]
    }
    request = urllib.request.Request(
        f"{served.http_url}/v2/models/product_gan/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)
    assert info.value.code == 403
    # The refusal names why (a header called "http-inference-is-off-use-grpc" that nobody holds
    # a key for), not the admin key: no key unlocks HTTP inference.
    error = json.loads(info.value.read())["error"]
    assert "expecting header 'http-inference-is-off-use-grpc'" in error, error
    with urllib.request.urlopen(f"{served.http_url}/v2/health/ready", timeout=10) as r:
        assert r.status == 200  # probes still work
    with urllib.request.urlopen(f"{served.http_url}/v2/models/product_gan", timeout=10) as r:
        assert json.loads(r.read())["name"] == "product_gan"


@pytest.mark.parametrize(
    ("fmt", "accepted"), [("GIF", False), ("BMP", False), ("TIFF", False), ("PNG", True), ("WEBP", True)]
)
def test_only_the_documented_formats_are_decoded(served, pairs, fmt, accepted):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pairs.person[0]).save(buf, format=fmt)
    good = io.BytesIO()
    Image.fromarray(pairs.cloth[0]).save(good, format="PNG")
    ins = []
    for name, data in (("person", buf.getvalue()), ("garment", good.getvalue())):
        i = grpcclient.InferInput(name, [1, 1], "BYTES")
        i.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        ins.append(i)
    with grpcclient.InferenceServerClient(served.url) as c:
        if accepted:
            assert c.infer("tryon_bytes", ins).as_numpy("image").shape == (1, 1)
        else:
            with pytest.raises(InferenceServerException) as info:
                c.infer("tryon_bytes", ins)
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert "person" in info.value.message() and "JPEG/PNG/WEBP" in info.value.message()


def test_malformed_bytes_elements_fail_alone(served, stub, pairs):
    """Finding 6: a malformed BYTES request got INTERNAL with Python exception text."""
    cfg = configs(served)["tryon_bytes"]
    req = raw_request(cfg)
    req.raw_input_contents[0] = (1000).to_bytes(4, "little") + b"short"  # length prefix lies
    err = rejected(stub, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "Traceback" not in err.details()
    with grpcclient.InferenceServerClient(served.url) as c:
        assert c.is_server_live() and c.is_model_ready("tryon_bytes")
