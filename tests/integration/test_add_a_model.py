"""Adding a model is one spec, one module and one registry line (README, "Adding a model").

This file is all three: the nn.Modules with ``load_networks``/``tiny_networks`` (the
module), a ``ServedModel`` with an ensemble of two network steps (the spec) and its
registration. Nothing else in the tree knows about ``dummy``: the generic repository
builder writes it for both targets, export writes its ONNX files, the real server loads it
through the ``ecomgen`` backend, and the client learns its contract from the server.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ecomgen.registry import Registry
from ecomgen.spec import Batching, NetworkSpec, NetworkStep, OptimizationProfile, QueuePolicy, ServedModel
from ecomgen_client import InvalidInputError, ProductClient
from ecomgen_client.contracts import Contract, TensorSpec
from export.onnx import export_model, install_onnx
from export.repository import check_repository, repository_models, write_repository
from tests.integration.conftest import start_server

pytestmark = pytest.mark.integration

# --- the module: networks, and how to load them ---------------------------------------------


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x))


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 4)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)


def tiny_networks(seed: int = 0) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    return {"dummy_encoder": Encoder().eval(), "dummy_decoder": Decoder().eval()}


def load_networks(checkpoint_dir: Path) -> dict[str, nn.Module]:
    return tiny_networks()


# --- the spec --------------------------------------------------------------------------------

X = TensorSpec("x", "FP32", (4,), value_range=(-10.0, 10.0))
HIDDEN = TensorSpec("hidden", "FP32", (8,))
Y = TensorSpec("y", "FP32", (4,))
BATCHING = Batching((4,), 500)
QUEUE = QueuePolicy(16, 2_000_000)


def _net(name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> NetworkSpec:
    return NetworkSpec(name, inputs, outputs, 8, OptimizationProfile(1, 4, 8), BATCHING, QUEUE)


DUMMY = ServedModel(
    contract=Contract("dummy", (X,), (Y,), max_batch_size=8, description="two linear layers"),
    steps=(
        NetworkStep(_net("dummy_encoder", (X,), (HIDDEN,))),
        NetworkStep(_net("dummy_decoder", (HIDDEN,), (Y,))),
    ),
    batching=BATCHING,
    queue=QUEUE,
    module=__name__,
    cpu_runtime="onnxruntime",
)


# --- the registry line, and the proof -------------------------------------------------------


def test_a_registered_model_is_built_served_and_callable(tmp_path):
    registry = Registry()
    registry.register(DUMMY)  # the one line a new model adds to ecomgen/registry.py

    for target in ("cpu", "gpu"):
        write_repository(tmp_path, target, registry)
    assert not check_repository(tmp_path, models=registry)
    gpu = {m.name: m.config for m in repository_models("gpu", registry)}
    assert [s.model_name for s in gpu["dummy"].ensemble_scheduling.step] == ["dummy_encoder", "dummy_decoder"]
    assert gpu["dummy_encoder"].platform == "tensorrt_plan"

    export_model(DUMMY, tmp_path / "onnx", tiny_networks())
    install_onnx(tmp_path, tmp_path / "onnx", registry)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4)).astype(np.float32)
    nets = tiny_networks()
    with torch.no_grad():
        expected = nets["dummy_decoder"](nets["dummy_encoder"](torch.from_numpy(x))).numpy()
    with start_server(tmp_path) as server, ProductClient(server.grpc_url) as client:
        out = client.infer("dummy", {"x": x})
        np.testing.assert_allclose(out["y"], expected, atol=1e-5)
        assert client.contract("dummy").input("x").value_range == (-10.0, 10.0)  # from the served config
        with pytest.raises(InvalidInputError, match="out of range"):
            client.infer("dummy", {"x": np.full((1, 4), 50.0, np.float32)})
