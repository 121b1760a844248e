"""Contracts and served-model specs: what construction refuses, and wiring by tensor name."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ecomgen.registry import REGISTRY, Registry
from ecomgen.spec import (
    Batching,
    NetworkSpec,
    NetworkStep,
    OptimizationProfile,
    PythonStep,
    QueuePolicy,
    ServedModel,
    WiringError,
    wire,
)
from ecomgen.specs.product_gan import GENERATOR, PRODUCT_GAN
from ecomgen_client.contracts import CONTRACTS, Contract, TensorSpec, contract_parameters

BATCH = Batching((4,), 0)
QUEUE = QueuePolicy(8, 1_000_000)


def net(name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], **kw) -> NetworkSpec:
    return NetworkSpec(name, inputs, outputs, 4, OptimizationProfile(1, 2, 4, **kw), BATCH, QUEUE)


X = TensorSpec("x", "FP32", (4,))
Y = TensorSpec("y", "FP32", (4,))
Z = TensorSpec("z", "FP32", (4,))


def model(steps, inputs=(X,), outputs=(Z,)) -> ServedModel:
    return ServedModel(Contract("m", inputs, outputs, 4), steps, BATCH, QUEUE)


def test_every_registered_model_is_wired_and_public_contracts_match_the_client():
    for m in REGISTRY:
        assert wire(m)
        assert CONTRACTS[m.name] is m.contract
    assert set(REGISTRY.names()) <= set(CONTRACTS)


def test_wiring_follows_names_not_positions():
    a = NetworkStep(net("a", (X,), (Y,)))
    b = NetworkStep(net("b", (Y, X), (Z,)))  # reads the public x and a's y, in another order
    wires = wire(model((a, b)))
    assert dict(wires[1].input_map) == {"y": "a.y", "x": "x"}
    assert dict(wires[1].output_map) == {"z": "z"}


def test_a_later_producer_shadows_an_earlier_one_and_bind_renames():
    image_f = TensorSpec("image", "FP32", (4,))
    image_u8 = TensorSpec("image", "UINT8", (4,))
    gen = NetworkStep(net("gen", (X,), (image_f,)))
    post = PythonStep("post", "h:P", (image_f,), (image_u8,))
    wires = wire(model((gen, post), outputs=(image_u8,)))
    assert dict(wires[1].input_map) == {"image": "gen.image"} and dict(wires[1].output_map) == {
        "image": "image"
    }
    lowres = TensorSpec("lowres", "FP32", (4,))
    sr = NetworkStep(net("sr", (lowres,), (Z,)), bind=(("lowres", "image"),))
    assert dict(wire(model((gen, sr)))[1].input_map) == {"lowres": "gen.image"}


@pytest.mark.parametrize(
    ("steps", "outputs", "message"),
    [
        ((NetworkStep(net("a", (Y,), (Z,))),), (Z,), "needs 'y', which no earlier step makes"),
        ((NetworkStep(net("a", (TensorSpec("x", "FP32", (5,)),), (Z,))),), (Z,), "does not fit 'x'"),
        ((NetworkStep(net("a", (X,), (Y,))),), (Z,), "no step produces public output 'z'"),
        ((PythonStep("p", "h:P", (Y,), (Z,)),), (Z,), "needs 'y'"),
    ],
)
def test_wiring_errors_name_the_tensor(steps, outputs, message):
    with pytest.raises(WiringError, match=message):
        model(steps, outputs=outputs)


def test_an_ensemble_cannot_reuse_an_input_name_for_an_output():
    a = NetworkStep(net("a", (X,), (Y,)))
    b = NetworkStep(net("b", (Y,), (TensorSpec("x", "FP32", (4,)),)))
    with pytest.raises(WiringError, match="one tensor namespace"):
        model((a, b), outputs=(X,))


def test_a_public_input_nobody_reads_is_an_error():
    with pytest.raises(WiringError, match="public input 'y' is read by no step"):
        model((NetworkStep(net("a", (X,), (Z,))),), inputs=(X, Y))


def test_batching_boundary_maps_the_first_dim_to_the_batch_axis():
    """A model without a batch axis (one shopper) feeds its rows to a batching network."""
    rows = TensorSpec("x", "FP32", (-1, 4))
    pre = PythonStep("pre", "h:P", (rows,), (rows,), max_batch_size=0)
    enc = NetworkStep(net("enc", (X,), (Y,)))
    post = PythonStep("post", "h:P", (TensorSpec("y", "FP32", (-1, 4)),), (Z,), max_batch_size=0)
    served = ServedModel(Contract("m", (rows,), (Z,), 0), (pre, enc, post), BATCH, QUEUE)
    assert [dict(w.input_map) for w in wire(served)] == [{"x": "x"}, {"x": "pre.x"}, {"y": "enc.y"}]


def test_profile_shapes_cover_variable_dims():
    lo, opt, hi = GENERATOR.profile.shapes(GENERATOR.input("z"))
    assert lo == (1, 128) and opt == (32, 128) and hi == (64, 128)
    image = TensorSpec("lowres", "FP32", (3, -1, -1))
    profile = OptimizationProfile(1, 4, 8, dims=(("lowres", ((16, 64, 512), (16, 48, 512))),))
    assert profile.shapes(image) == ((1, 3, 16, 16), (4, 3, 64, 48), (8, 3, 512, 512))
    with pytest.raises(ValueError, match="without a profile range"):
        OptimizationProfile(1, 1, 1).shapes(image)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: OptimizationProfile(min_batch=4, opt_batch=2, max_batch=8), "1 <= min"),
        (lambda: TensorSpec("x", "FLOAT", (1,)), "unknown Triton dtype"),
        (lambda: TensorSpec("x", "UINT8", (-1, 3), max_dims=(2,)), "do not match"),
        (lambda: dataclasses.replace(GENERATOR, max_batch_size=32), "profile max batch"),
        (lambda: net("n", (TensorSpec("a", "UINT8", (2,)),), (Y,)), "network tensors are FP32"),
        (lambda: dataclasses.replace(PRODUCT_GAN, batching=Batching((128,), 100)), "preferred batch size"),
        (lambda: dataclasses.replace(PRODUCT_GAN, cpu_runtime="tvm"), "cpu_runtime"),
        (lambda: dataclasses.replace(PRODUCT_GAN, steps=()), "at least one step"),
        (lambda: Contract("m", (X, X), (Y,), 1), "duplicate tensor names"),
    ],
)
def test_construction_refuses_inconsistent_specs(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_registry_refuses_duplicates_and_conflicting_shared_steps():
    registry = Registry([PRODUCT_GAN])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(PRODUCT_GAN)
    clash = dataclasses.replace(GENERATOR, gpu_instances=7)
    other = ServedModel(
        Contract("other", PRODUCT_GAN.contract.inputs, (GENERATOR.outputs[0],), 64),
        (PRODUCT_GAN.steps[0], NetworkStep(clash)),
        BATCH,
        QUEUE,
    )
    with pytest.raises(ValueError, match="declared differently"):
        registry.register(other)


@pytest.mark.parametrize(("given", "expected"), [("Dresses", 4), ("casual shoes", 5), (9, 9), ("3", 3)])
def test_class_id_resolution(given, expected):
    assert PRODUCT_GAN.contract.class_id(given) == expected


@pytest.mark.parametrize("bad", ["Socks", 10, -1])
def test_class_id_resolution_rejects(bad):
    with pytest.raises(ValueError):
        PRODUCT_GAN.contract.class_id(bad)


def test_contract_round_trips_through_a_config():
    photo = TensorSpec("p", "UINT8", (-1, -1, 3), min_dims=(16, 16, 3), max_dims=(512, 512, 3))
    seed = TensorSpec("seed", "INT64", (1,), value_range=(0, 10))
    blob = TensorSpec("b", "BYTES", (1,), max_bytes=100)
    params = {**contract_parameters(photo), **contract_parameters(seed), **contract_parameters(blob)}
    config = {
        "name": "m",
        "max_batch_size": 8,
        "input": [
            {"name": "p", "data_type": "TYPE_UINT8", "dims": ["-1", "-1", "3"]},
            {"name": "seed", "data_type": "TYPE_INT64", "dims": ["1"]},
            {"name": "b", "data_type": "TYPE_STRING", "dims": ["1"]},
        ],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["2"]}],
        "parameters": {k: {"string_value": v} for k, v in params.items()},
    }
    c = Contract.from_config(config)
    assert c.inputs == (photo, dataclasses.replace(seed, value_range=(0, 10)), blob)
    assert c.output("y").numpy_dtype == np.float32 and c.max_batch_size == 8


def test_examples_are_valid_values_of_their_inputs():
    """Load tests send a spec's ``example``: it must pass the contract's own checks."""
    from ecomgen_client._common import validate_inputs

    seen = 0
    for contract in CONTRACTS.values():
        for t in contract.inputs:
            if not t.example:
                continue
            seen += 1
            if t.dtype == "BYTES":
                assert 0 < len(t.example.encode()) <= (t.max_bytes or 1 << 20), t.name
                continue
            value = t.numpy_dtype.type(t.example)
            if t.value_range is not None:
                assert t.value_range[0] <= value <= t.value_range[1], (contract.name, t.name)
        # The payload a load test builds passes the client's validation.
        from benchmarks.payloads import payload

        p = payload(contract.name)
        validate_inputs(contract, p.inputs)
    assert seen >= 8
