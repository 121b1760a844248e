"""Adding a model, through the real path (README, "Adding a model").

A realistic model: ``sharpen``, uint8 photos of any size in (a batch), the same photos sharpened
out, as a shop would call it. What a new model needs, and what this file holds in their place:

1. its client contract (client/ecomgen_client/contracts.py): ``CONTRACT`` below;
2. its model module (ecomgen/models/<name>.py: nn.Modules, network names, ``load_networks`` and
   ``tiny_networks``): the ``Sharpen`` module and the two functions below;
3. its spec module (ecomgen/specs/<name>.py): ``SHARPEN``, a pre step (uint8 -> network tensor),
   the network, a post step (network tensor -> uint8). The pre/post handlers are the generic ones
   in ecomgen/serving/handlers/convert.py; a model whose pre/post logic they cannot express adds
   a handler module (4.), as the studio's ecomgen/serving/handlers/studio.py does;
5. its training module (training/<name>.py; none here: the weights are tiny);
6. one line in ecomgen/registry.py: here it is registered beside every model of the real registry,
   which must accept it (shared step names agree, the repository of both targets is generated).

Nothing else is edited: the builder writes both targets, export writes the ONNX file, the real
server loads it through the ``ecomgen`` backend, and the client learns its contract from the
server. The door checks, the admission ticket and the deadline come with the ensemble.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ecomgen.registry import REGISTRY, Registry
from ecomgen.spec import (
    Batching,
    NetworkSpec,
    NetworkStep,
    OptimizationProfile,
    PythonStep,
    QueuePolicy,
    ServedModel,
)
from ecomgen.specs.common import FROM_UINT8, TO_UINT8
from ecomgen_client import InvalidInputError, ProductClient
from ecomgen_client.contracts import Contract, TensorSpec
from export.onnx import export_model, install_onnx
from export.repository import check_repository, repository_models, write_repository
from tests.integration.conftest import start_server

pytestmark = pytest.mark.integration

# --- 1. the client contract --------------------------------------------------------------------

CONTRACT = Contract(
    name="sharpen",
    description="Unsharp-masked product photos (16-256 px a side), batched.",
    inputs=(TensorSpec("photo", "UINT8", (-1, -1, 3), min_dims=(16, 16, 3), max_dims=(256, 256, 3)),),
    outputs=(TensorSpec("sharpened", "UINT8", (-1, -1, 3), max_dims=(256, 256, 3)),),
    max_batch_size=4,
)

# --- 2. the model module -----------------------------------------------------------------------

NETWORK = "sharpen_net"


class Sharpen(nn.Module):
    """x + amount * (x - blur(x)): a learnable unsharp mask."""

    def __init__(self) -> None:
        super().__init__()
        self.blur = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
        nn.init.constant_(self.blur.weight, 1 / 9)
        self.amount = nn.Parameter(torch.tensor(0.7))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.clamp(image + self.amount * (image - self.blur(image)), -1.0, 1.0)


def tiny_networks(seed: int = 0) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    return {NETWORK: Sharpen().eval()}


def load_networks(checkpoint_dir: Path) -> dict[str, nn.Module]:
    return tiny_networks()


# --- 3. the spec module ------------------------------------------------------------------------

IMAGE = TensorSpec("image", "FP32", (3, -1, -1), min_dims=(3, 16, 16), max_dims=(3, 256, 256), kind="image")
OUT = TensorSpec("sharp", "FP32", (3, -1, -1), max_dims=(3, 256, 256), kind="image")
BATCHING = Batching((4,), 0)
QUEUE = QueuePolicy(16, 5_000_000)
NET = NetworkSpec(
    NETWORK,
    (IMAGE,),
    (OUT,),
    4,
    OptimizationProfile(1, 2, 4, dims=(("image", ((16, 64, 256), (16, 48, 256))),)),
    BATCHING,
    QUEUE,
)
SHARPEN = ServedModel(
    contract=CONTRACT,
    steps=(
        PythonStep("sharpen_pre", FROM_UINT8, CONTRACT.inputs, (IMAGE,), (("source.image", "photo"),)),
        NetworkStep(NET),
        PythonStep("sharpen_post", TO_UINT8, (OUT,), CONTRACT.outputs, (("source.sharpened", "sharp"),)),
    ),
    batching=BATCHING,
    queue=QUEUE,
    module=__name__,
    cpu_runtime="onnxruntime",
)


# --- 6. the registry line, and the proof -------------------------------------------------------


def test_a_new_model_is_accepted_by_the_real_registry_built_served_and_callable(tmp_path):
    everything = Registry([*REGISTRY, SHARPEN])  # what ecomgen/registry.py holds with the new line
    for target in ("cpu", "gpu"):
        names = {m.name for m in repository_models(target, everything)}
        assert {"sharpen", "sharpen_pre", "sharpen_net", "sharpen_post"} <= names
    gpu = {m.name: m.config for m in repository_models("gpu", everything)}
    assert [s.model_name for s in gpu["sharpen"].ensemble_scheduling.step] == [
        "sharpen_pre",
        "sharpen_net",
        "sharpen_post",
    ]
    assert gpu["sharpen_net"].platform == "tensorrt_plan"

    served = Registry([SHARPEN])  # serve just this one: the rest has its own tests
    for target in ("cpu", "gpu"):
        write_repository(tmp_path, target, served)
    assert not check_repository(tmp_path, models=served)
    export_model(SHARPEN, tmp_path / "onnx", tiny_networks())
    install_onnx(tmp_path, tmp_path / "onnx", served)

    rng = np.random.default_rng(0)
    photos = rng.integers(0, 256, (3, 40, 30, 3), dtype=np.uint8)
    net = tiny_networks()[NETWORK]
    with torch.no_grad():
        x = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 127.5 - 1
        expected = ((net(x) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    with start_server(tmp_path) as server, ProductClient(server.grpc_url) as client:
        out = client.infer("sharpen", {"photo": photos})
        assert np.abs(out["sharpened"].astype(int) - expected.astype(int)).max() <= 1
        contract = client.contract("sharpen")  # learnt from the served config
        assert contract.max_batch_size == 4 and contract.input("photo").max_dims == (256, 256, 3)
        with pytest.raises(InvalidInputError, match="photo"):
            client.infer("sharpen", {"photo": np.zeros((1, 300, 30, 3), np.uint8)})
        with pytest.raises(InvalidInputError, match=r"missing|photo"):
            client.infer("sharpen", {})
