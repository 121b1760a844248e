"""Thin, typed gRPC client for ecomgen models served by Triton."""

from . import ops
from .aio import AsyncProductClient
from .client import ProductClient, TlsConfig
from .contracts import CONTRACTS, PRODUCT_GAN, TRYON, TRYON_BYTES, Contract, TensorSpec
from .errors import (
    EcomgenError,
    InvalidInputError,
    QueueFullError,
    QueueTimeoutError,
    RequestTimeoutError,
    ServerError,
    ServerOverloadedError,
    ServerUnavailableError,
    from_triton_error,
)
from .ops import TryOnResult

__version__ = "0.2.0"

__all__ = [
    "CONTRACTS",
    "PRODUCT_GAN",
    "TRYON",
    "TRYON_BYTES",
    "AsyncProductClient",
    "Contract",
    "EcomgenError",
    "InvalidInputError",
    "ProductClient",
    "QueueFullError",
    "QueueTimeoutError",
    "RequestTimeoutError",
    "ServerError",
    "ServerOverloadedError",
    "ServerUnavailableError",
    "TensorSpec",
    "TlsConfig",
    "TryOnResult",
    "__version__",
    "from_triton_error",
    "ops",
]
