"""Start the real embedded tritonserver once per session on free ports, with every registered model.

Each model serves its shipped checkpoints when they exist, else tiny random weights, so
the tests compare the server with the exact PyTorch modules behind it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from ecomgen.launcher import ServerConfig, TritonServer
from ecomgen.registry import REGISTRY
from ecomgen.serving.runners import RUNTIME_ENV
from export.onnx import CHECKPOINT_DIR, export_model, install_onnx, load_modules, tiny_modules
from export.repository import write_repository
from tests.conftest import free_port


@dataclass
class Served:
    server: TritonServer
    repository: Path
    modules: dict[str, dict[str, torch.nn.Module]] = field(default_factory=dict)
    trained: dict[str, bool] = field(default_factory=dict)
    c2pa_ca: bytes = b""  # the test CA that signed the server's C2PA identity

    @property
    def url(self) -> str:
        return self.server.grpc_url

    @property
    def http_url(self) -> str:
        return self.server.http_url

    def network(self, name: str) -> torch.nn.Module:
        for modules in self.modules.values():
            if name in modules:
                return modules[name]
        raise KeyError(name)

    # The old fixture's names, for the product_gan and try-on tests.
    @property
    def generator(self) -> torch.nn.Module:
        return self.network("product_gan_generator")


def served_modules(model) -> tuple[dict[str, torch.nn.Module], bool]:  # type: ignore[no-untyped-def]
    """The shipped checkpoints, or tiny random networks before any checkpoint exists."""
    if model.checkpoints and all((CHECKPOINT_DIR / c).exists() for c in model.checkpoints):
        return load_modules(model), True
    return tiny_modules(model), False


def start_server(root: Path, **config: object) -> TritonServer:
    """A server on free loopback ports for ``root/cpu``."""
    settings = {
        "repository": root / "cpu",
        "grpc_port": free_port(),
        "http_port": free_port(),
        "metrics_port": free_port(),
        "address": "127.0.0.1",
        **config,
    }
    return TritonServer(ServerConfig(**settings), log=root / "tritonserver.log")  # type: ignore[arg-type]


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="session")
def pairs():  # type: ignore[no-untyped-def]
    """The four VITON test fixtures, unpaired (person i with another person's garment)."""
    from training.viton import load_pairs, read_pairs

    return load_pairs(read_pairs(FIXTURES / "viton", "test", paired=False))


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # The served runtime is the fallback (OpenVINO fp32) unless a test asks otherwise, so
    # outputs are compared with PyTorch at fp32 tolerances on every host.
    os.environ.pop(RUNTIME_ENV, None)
    root = tmp_path_factory.mktemp("model_repository")
    onnx_dir = root / "onnx"
    write_repository(root, "cpu")
    modules, trained = {}, {}
    exported: dict[str, tuple[torch.nn.Module, bool]] = {}  # networks shared by two models export once
    for model in REGISTRY:
        names = [n.name for n in model.networks]
        if not names:
            continue
        if all(n in exported for n in names):
            modules[model.name] = {n: exported[n][0] for n in names}
            trained[model.name] = all(exported[n][1] for n in names)
            continue
        modules[model.name], trained[model.name] = served_modules(model)
        export_model(model, onnx_dir, modules[model.name])
        exported.update({n: (modules[model.name][n], trained[model.name]) for n in names})
    install_onnx(root, onnx_dir)
    # Sign C2PA manifests with a throwaway identity made here (never a committed key).
    from tests.c2pa_certs import make_test_identity

    identity = make_test_identity()
    chain, key, _ = identity.write(root / "c2pa")
    os.environ["ECOMGEN_C2PA_CERT"], os.environ["ECOMGEN_C2PA_KEY"] = str(chain), str(key)
    server = start_server(root)
    try:
        with server:
            yield Served(server, root, modules, trained, identity.ca_pem)
    finally:
        os.environ.pop("ECOMGEN_C2PA_CERT", None)
        os.environ.pop("ECOMGEN_C2PA_KEY", None)
