"""Generated from the registry: every public model refuses a request with a required input left
out, or an input it does not know, at once and by name (INVALID_ARGUMENT), before any step runs.

Ensembles with optional inputs used to answer "unexpected deadlock" for a missing required one:
their door now declares every input optional and checks the contract's required ones itself.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from benchmarks.payloads import payload
from ecomgen.registry import REGISTRY

pytestmark = pytest.mark.integration

# Refusals come from Triton's request checks or the door's, never after a queue or a network:
# well under this, on any host.
ANSWER_WITHIN_S = 1.0


def _cases() -> list[tuple[str, str]]:
    cases = []
    for model in REGISTRY:
        for t in model.contract.inputs:
            if not t.optional:
                cases.append((model.name, t.name))
        cases.append((model.name, "+unknown"))
    return cases


def _inputs(model: str, leave_out: str = "", extra: str = "") -> list[grpcclient.InferInput]:
    contract = REGISTRY[model].contract
    p = payload(model, index=1)
    out = []
    for name, array in p.inputs.items():
        if name == leave_out:
            continue
        t = grpcclient.InferInput(name, list(array.shape), contract.input(name).dtype)
        t.set_data_from_numpy(array)
        out.append(t)
    if extra:
        first = next(iter(p.inputs.values()))
        t = grpcclient.InferInput(extra, list(first.shape), contract.input(next(iter(p.inputs))).dtype)
        t.set_data_from_numpy(first)
        out.append(t)
    return out


@pytest.mark.parametrize(("model", "name"), _cases(), ids=lambda v: v)
def test_missing_or_unknown_inputs_are_named_at_once(served, model: str, name: str) -> None:
    if name == "+unknown":
        # A near miss of a real input name, like a typo.
        real = REGISTRY[model].contract.inputs[0].name
        wrong = real[:-1] + ("x" if real[-1] != "x" else "y")
        inputs, expect = _inputs(model, extra=wrong), wrong
    else:
        inputs, expect = _inputs(model, leave_out=name), name
    with grpcclient.InferenceServerClient(served.url) as client:
        start = time.monotonic()
        with pytest.raises(InferenceServerException) as info:
            client.infer(model, inputs, client_timeout=30)
        took = time.monotonic() - start
    e = info.value
    assert e.status() == "StatusCode.INVALID_ARGUMENT", e.message()
    assert f"'{expect}'" in e.message(), e.message()
    assert "deadlock" not in e.message()
    if name != "+unknown":
        assert "missing required input" in e.message() or "expected" in e.message(), e.message()
    assert took < ANSWER_WITHIN_S, f"{model} took {took:.2f} s to refuse"


def test_a_complete_payload_is_still_answered(served) -> None:
    """The refusals above are about the input left out, not about the payload."""
    with grpcclient.InferenceServerClient(served.url) as client:
        result = client.infer("ad_creative", _inputs("ad_creative"), client_timeout=60)
    assert result.as_numpy("images") is not None and np.asarray(result.as_numpy("images")).size >= 1
