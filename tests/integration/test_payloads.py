"""The load-test payloads (benchmarks/payloads.py) are requests every served model accepts.

Locust, perf_analyzer, the ensemble benchmark and the soak all send them: a payload the server
refuses would measure the cost of an INVALID_ARGUMENT instead of the model.
"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from benchmarks.payloads import payload
from ecomgen.registry import REGISTRY
from ecomgen_client.contracts import TensorSpec

pytestmark = pytest.mark.integration


def infer_input(name: str, array: np.ndarray, spec: TensorSpec) -> grpcclient.InferInput:
    t = grpcclient.InferInput(name, list(array.shape), spec.dtype)
    t.set_data_from_numpy(array)
    return t


@pytest.mark.parametrize("model", REGISTRY.names())
def test_every_models_payload_is_answered(served, model):
    contract = REGISTRY[model].contract
    p = payload(model, index=3)
    inputs = [infer_input(k, v, contract.input(k)) for k, v in p.inputs.items()]
    outputs = [grpcclient.InferRequestedOutput(name) for name in p.outputs]
    with grpcclient.InferenceServerClient(served.url) as client:
        result = client.infer(model, inputs, outputs=outputs, client_timeout=120)
    for name in p.outputs:
        out = result.as_numpy(name)
        assert out is not None and out.size > 0, name
        if contract.batched:
            assert out.shape[0] == p.rows, name
