"""One malformed request never fails its neighbours, for every public model (generated from the
registry): a burst of good requests with one bad one in the middle (a BYTES length prefix that
claims more than it carries, image bytes that are not an image, batch 0 that carries data). The
bad one gets INVALID_ARGUMENT naming its input; every good one succeeds.

The Python backend of Triton 2.51 reads a whole batch's BYTES framing at once and fails every
request of it on one lying prefix; steps that take BYTES therefore run one request an execution.
A batched ensemble of 2.51 answers batch 0 with data as one row without a batch axis; public
ensembles carry the rows as an explicit first dim so their door refuses it.
"""

from __future__ import annotations

import struct
import threading

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from benchmarks.payloads import payload
from ecomgen.registry import REGISTRY
from ecomgen_client.contracts import TensorSpec

pytestmark = pytest.mark.integration

GOOD_PER_BURST = 8


def _bytes_raw(values: np.ndarray) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + bytes(v) for v in values.reshape(-1))


def request(model: str, inputs: dict[str, np.ndarray], raw: dict[str, bytes] | None = None,
            shapes: dict[str, list[int]] | None = None) -> service_pb2.ModelInferRequest:  # fmt: skip
    contract = REGISTRY[model].contract
    req = service_pb2.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        t: TensorSpec = contract.input(name)
        shape = (shapes or {}).get(name, list(array.shape))
        req.inputs.add(name=name, datatype=t.dtype, shape=shape)
        data = (raw or {}).get(name)
        if data is None:
            data = _bytes_raw(array) if t.dtype == "BYTES" else np.ascontiguousarray(array).tobytes()
        req.raw_input_contents.append(data)
    return req


def _bad_cases(model: str) -> list[tuple[str, str, service_pb2.ModelInferRequest]]:
    """(case, input it names, request) for every kind of malformed row the model can receive."""
    contract = REGISTRY[model].contract
    p = payload(model, index=2)
    cases = []
    for name, array in p.inputs.items():
        t = contract.input(name)
        if t.dtype == "BYTES":
            first = bytes(array.reshape(-1)[0])
            lying = struct.pack("<I", len(first) + 1000) + first  # claims more than it carries
            cases.append(("lying BYTES prefix", name, request(model, p.inputs, raw={name: lying})))
            if len(first) > 1000:  # an encoded image: garbage of the same size
                junk = np.array([b"\x00not an image\xff" * 100], dtype=object).reshape(array.shape)
                cases.append(("garbage image bytes", name, request(model, {**p.inputs, name: junk})))
    if contract.batched:  # every input claims 0 rows and still carries one row's data
        zero = {n: [0, *a.shape[1:]] for n, a in p.inputs.items()}
        first = next(iter(p.inputs))
        cases.append(("batch 0 with data", first, request(model, p.inputs, shapes=zero)))
    return cases


CASES = [(m.name, case, name) for m in REGISTRY for case, name, _ in _bad_cases(m.name)]


@pytest.mark.parametrize(("model", "case", "name"), CASES, ids=lambda v: str(v))
def test_one_bad_request_fails_alone(served, model: str, case: str, name: str) -> None:
    (bad,) = [req for c, n, req in _bad_cases(model) if (c, n) == (case, name)]
    good = request(model, payload(model, index=1).inputs)
    results: dict[int, object] = {}
    with grpc.insecure_channel(served.url, options=[("grpc.max_receive_message_length", 1 << 30)]) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)

        def send(i: int, req: service_pb2.ModelInferRequest) -> None:
            try:
                results[i] = stub.ModelInfer(req, timeout=120)
            except grpc.RpcError as e:
                results[i] = e

        burst = [good] * (GOOD_PER_BURST // 2) + [bad] + [good] * (GOOD_PER_BURST // 2)
        threads = [threading.Thread(target=send, args=(i, r)) for i, r in enumerate(burst)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    bad_index = GOOD_PER_BURST // 2
    err = results[bad_index]
    assert isinstance(err, grpc.RpcError), f"{model}: the {case} request was answered"
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (model, case, err.details())
    named = [name] if case != "batch 0 with data" else [t.name for t in REGISTRY[model].contract.inputs]
    assert any(f"'{n}'" in err.details() for n in named), err.details()
    failed = [r.details() for i, r in results.items() if i != bad_index and isinstance(r, grpc.RpcError)]
    assert not failed, f"{model}: good neighbours of a {case} request failed: {failed[:3]}"
