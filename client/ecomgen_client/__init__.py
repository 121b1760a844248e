"""Thin, typed gRPC client for ecomgen models served by Triton.

Attributes load on first use: ``ecomgen_client.contracts`` (numpy only) imports on a
host without tritonclient, such as the GPU benchmark machine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from .ops import Personalized, SheetItem, TryOnResult

__version__ = "0.2.0"

_WHERE = {
    "ops": ".ops",
    "AsyncProductClient": ".aio",
    "ProductClient": ".client",
    "TlsConfig": ".client",
    **dict.fromkeys(
        ("CONTRACTS", "PRODUCT_GAN", "TRYON", "TRYON_BYTES", "Contract", "TensorSpec"), ".contracts"
    ),
    **dict.fromkeys(
        (
            "EcomgenError",
            "InvalidInputError",
            "QueueFullError",
            "QueueTimeoutError",
            "RequestTimeoutError",
            "ServerError",
            "ServerOverloadedError",
            "ServerUnavailableError",
            "from_triton_error",
        ),
        ".errors",
    ),
    "Personalized": ".ops",
    "SheetItem": ".ops",
    "TryOnResult": ".ops",
}
__all__ = [
    "CONTRACTS",
    "PRODUCT_GAN",
    "TRYON",
    "TRYON_BYTES",
    "AsyncProductClient",
    "Contract",
    "EcomgenError",
    "InvalidInputError",
    "Personalized",
    "ProductClient",
    "QueueFullError",
    "QueueTimeoutError",
    "RequestTimeoutError",
    "ServerError",
    "ServerOverloadedError",
    "ServerUnavailableError",
    "SheetItem",
    "TensorSpec",
    "TlsConfig",
    "TryOnResult",
    "__version__",
    "from_triton_error",
    "ops",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ecomgen_client' has no attribute {name!r}")
    module = importlib.import_module(_WHERE[name], __name__)
    value = module if name == "ops" else getattr(module, name)
    globals()[name] = value
    return value
