"""Start the real embedded tritonserver once per session on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ecomgen.server import ServerConfig, TritonServer
from ecomgen_client.specs import PRODUCT_GAN
from export.onnx import export_network, onnx_path
from export.repository import write_repository
from tests.conftest import REPO_ROOT, free_port, randomize_batchnorm

CHECKPOINT = REPO_ROOT / PRODUCT_GAN.checkpoint


@dataclass
class Served:
    server: TritonServer
    repository: Path
    generator: torch.nn.Module  # the exact PyTorch weights behind the served ONNX file
    trained: bool

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


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("model_repository")
    write_repository(root, "cpu")
    generator, trained = served_generator()
    export_network(generator, PRODUCT_GAN.network, onnx_path(PRODUCT_GAN, root))
    config = ServerConfig(
        repository=root / "cpu",
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        address="127.0.0.1",
    )
    server = TritonServer(config, log=root / "tritonserver.log")
    with server:
        yield Served(server, root, generator, trained)
