"""Start the real embedded tritonserver once per session on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ecomgen.server import ServerConfig, TritonServer
from ecomgen_client.specs import PRODUCT_GAN, TRYON
from export.onnx import ensemble_checkpoints, export_ensemble, export_network, onnx_path
from export.repository import write_repository
from tests.conftest import REPO_ROOT, free_port, randomize_batchnorm

CHECKPOINT = REPO_ROOT / PRODUCT_GAN.checkpoint


@dataclass
class Served:
    server: TritonServer
    repository: Path
    generator: torch.nn.Module  # the exact PyTorch weights behind the served ONNX file
    trained: bool
    tryon: torch.nn.Module  # the PyTorch try-on pipeline behind the served tryon steps
    tryon_trained: bool

    @property
    def url(self) -> str:
        return self.server.grpc_url


def served_generator() -> tuple[torch.nn.Module, bool]:
    """The shipped checkpoint, or a tiny random one before any checkpoint exists."""
    if CHECKPOINT.exists():
        from training.product_gan import generator_from_checkpoint

        return generator_from_checkpoint(CHECKPOINT), True
    from training.product_gan import Generator

    torch.manual_seed(0)
    return randomize_batchnorm(Generator(ngf=8)).eval(), False


def served_tryon() -> tuple[torch.nn.Module, bool]:
    """The shipped try-on checkpoints, or a tiny random pipeline (with a non-zero flow)."""
    from training.tryon import build, pipeline_from_checkpoints

    if all(p.exists() for p in ensemble_checkpoints(TRYON)):
        return pipeline_from_checkpoints(), True
    torch.manual_seed(0)
    pipe = build({"parser": 8, "warp": 8, "synthesis": 8})
    for head in pipe.warp.heads:  # the flow heads start at zero; make the warp do something
        torch.nn.init.normal_(head.weight, std=0.05)
    return randomize_batchnorm(pipe).eval(), False


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("model_repository")
    write_repository(root, "cpu")
    generator, trained = served_generator()
    export_network(generator, PRODUCT_GAN.network, onnx_path(PRODUCT_GAN, root))
    from training.tryon import export_modules

    tryon, tryon_trained = served_tryon()
    export_ensemble(TRYON, root, export_modules(tryon))
    config = ServerConfig(
        repository=root / "cpu",
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        address="127.0.0.1",
    )
    server = TritonServer(config, log=root / "tritonserver.log")
    with server:
        yield Served(server, root, generator, trained, tryon, tryon_trained)
