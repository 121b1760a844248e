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
from export.onnx import CHECKPOINT_DIR, export_model, install_onnx
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


def network_modules() -> dict[str, tuple[torch.nn.Module, bool]]:
    """Every registered network: its shipped checkpoint when its model module has one, else tiny
    random weights (decided per model module, so a model that runs networks of several modules
    serves each one's trained weights as soon as it exists)."""
    import importlib

    out: dict[str, tuple[torch.nn.Module, bool]] = {}
    for module in dict.fromkeys(m for model in REGISTRY for m in model.modules if model.networks):
        mod = importlib.import_module(module)
        try:
            nets, trained = mod.load_networks(CHECKPOINT_DIR), True
        except (FileNotFoundError, OSError, KeyError, ValueError, RuntimeError):
            nets, trained = mod.tiny_networks(0), False
        out.update({name: (net, trained) for name, net in nets.items()})
    return out


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
    networks = network_modules()
    exported: set[str] = set()  # networks shared by two models export once
    for model in REGISTRY:
        names = [n.name for n in model.networks]
        if not names:
            continue
        modules[model.name] = {n: networks[n][0] for n in names}
        trained[model.name] = all(networks[n][1] for n in names)
        if not set(names) <= exported:
            export_model(model, onnx_dir, modules[model.name])
            exported.update(names)
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
