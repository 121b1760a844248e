"""Thin, typed gRPC client for ecomgen models served by Triton."""

from .aio import AsyncProductClient
from .client import ProductClient
from .errors import (
    EcomgenError,
    InvalidInputError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
    from_triton_error,
)
from .specs import PRODUCT_GAN, SPECS, ModelSpec, TensorSpec

__version__ = "0.1.0"

__all__ = [
    "PRODUCT_GAN",
    "SPECS",
    "AsyncProductClient",
    "EcomgenError",
    "InvalidInputError",
    "ModelSpec",
    "ProductClient",
    "RequestTimeoutError",
    "ServerError",
    "ServerUnavailableError",
    "TensorSpec",
    "__version__",
    "from_triton_error",
]
