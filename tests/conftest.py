"""Shared fixtures: tiny random-weight models for fast tests, and the real server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from training.paths import REPO_ROOT  # noqa: F401  (re-exported to the tests)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tiny_generator() -> torch.nn.Module:
    from ecomgen.models.product_gan import tiny_networks

    return tiny_networks()["product_gan_generator"]


@pytest.fixture
def fixture_products() -> Path:
    return FIXTURES / "fashion-products"


@pytest.fixture(scope="session")
def torch_threads() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
