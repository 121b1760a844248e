"""Thin, typed gRPC client for ecomgen models served by Triton."""

from ._common import TryOnResult
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
from .specs import ENSEMBLES, PRODUCT_GAN, SPECS, TRYON, EnsembleSpec, ModelSpec, TensorSpec

__version__ = "0.1.0"

__all__ = [
    "ENSEMBLES",
    "PRODUCT_GAN",
    "SPECS",
    "TRYON",
    "AsyncProductClient",
    "EcomgenError",
    "EnsembleSpec",
    "InvalidInputError",
    "ModelSpec",
    "ProductClient",
    "RequestTimeoutError",
    "ServerError",
    "ServerUnavailableError",
    "TensorSpec",
    "TryOnResult",
    "__version__",
    "from_triton_error",
]
