"""Exceptions raised by the ecomgen client, and the mapping from Triton's gRPC errors."""

from __future__ import annotations

from tritonclient.utils import InferenceServerException

__all__ = [
    "EcomgenError",
    "InvalidInputError",
    "RequestTimeoutError",
    "ServerError",
    "ServerUnavailableError",
    "from_triton_error",
    "grpc_status_code",
]


class EcomgenError(Exception):
    """Base class of every error the client raises on purpose."""

    def __init__(self, message: str, *, status: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # gRPC status code name (e.g. "INVALID_ARGUMENT"); None for client-side errors.
        self.status = status


class InvalidInputError(EcomgenError, ValueError):
    """Inputs rejected by client-side validation or by the server (INVALID_ARGUMENT)."""


class ServerUnavailableError(EcomgenError, ConnectionError):
    """The server stayed UNAVAILABLE (down, or its queue full) after every retry."""


class RequestTimeoutError(EcomgenError, TimeoutError):
    """The request's deadline expired (DEADLINE_EXCEEDED)."""


class ServerError(EcomgenError):
    """Any other server or transport failure, including responses that break the spec."""


def grpc_status_code(exc: InferenceServerException) -> str | None:
    """``"StatusCode.UNAVAILABLE"`` -> ``"UNAVAILABLE"``; None when tritonclient gave no status."""
    status = exc.status()
    if status is None:
        return None
    return str(status).rsplit(".", 1)[-1].upper()


_BY_STATUS: dict[str, type[EcomgenError]] = {
    "INVALID_ARGUMENT": InvalidInputError,
    "UNAVAILABLE": ServerUnavailableError,
    "DEADLINE_EXCEEDED": RequestTimeoutError,
}


def from_triton_error(exc: InferenceServerException) -> EcomgenError:
    """Translate a tritonclient exception; the caller should ``raise ... from exc``."""
    status = grpc_status_code(exc)
    cls = _BY_STATUS.get(status or "", ServerError)
    message = exc.message() or str(exc)
    return cls(f"[{status}] {message}" if status else message, status=status)
