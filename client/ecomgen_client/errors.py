"""Exceptions raised by the ecomgen client, and the mapping from Triton's gRPC errors.

The classes tell a caller what to do: fix the request (InvalidInputError), back off
because the server is overloaded (ServerOverloadedError: its bounded queue is full or a
request waited past its queue timeout), or wait for a server that is down or restarting
(ServerUnavailableError).
"""

from __future__ import annotations

from tritonclient.utils import InferenceServerException

__all__ = [
    "EcomgenError",
    "InvalidInputError",
    "QueueFullError",
    "QueueTimeoutError",
    "RequestTimeoutError",
    "ServerError",
    "ServerOverloadedError",
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
    """The server is down, starting or draining (UNAVAILABLE, or NOT_FOUND for a known model)."""


class ServerOverloadedError(EcomgenError):
    """The server is up but rejected the request to protect itself; retrying now adds load."""


class QueueFullError(ServerOverloadedError):
    """The model's bounded queue was full (Triton: "Exceeds maximum queue size")."""


class QueueTimeoutError(ServerOverloadedError):
    """The request waited in a queue past its timeout (Triton: "Request timeout expired")."""


class RequestTimeoutError(EcomgenError, TimeoutError):
    """The request's deadline expired (DEADLINE_EXCEEDED, or the server dropped expired work)."""


class ServerError(EcomgenError):
    """Any other server or transport failure, including responses that break the contract."""


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
    # Triton cancels in-flight calls while it drains on shutdown: the server is going away.
    "CANCELLED": ServerUnavailableError,
}
# Triton answers overload with UNAVAILABLE too; these messages tell it apart from "down".
_OVERLOAD = (("exceeds maximum queue size", QueueFullError), ("request timeout expired", QueueTimeoutError))


def from_triton_error(exc: InferenceServerException, *, known_model: bool = False) -> EcomgenError:
    """Translate a tritonclient exception; the caller should ``raise ... from exc``.

    ``known_model``: NOT_FOUND for a model this client knows means the server is draining
    or restarting (it unloads models on shutdown), so it is reported as unavailable.
    """
    status = grpc_status_code(exc)
    message = exc.message() or str(exc)
    text = f"[{status}] {message}" if status else message
    lowered = message.lower()
    if "is restricted" in lowered:  # an API locked behind a key: retrying cannot help
        return ServerError(text, status=status)
    if status == "UNAVAILABLE":
        for fragment, cls in _OVERLOAD:
            if fragment in lowered:
                return cls(text, status=status)
        if "deadline exceeded" in lowered:
            return RequestTimeoutError(text, status=status)
    if status == "NOT_FOUND" and known_model:
        return ServerUnavailableError(text, status=status)
    return _BY_STATUS.get(status or "", ServerError)(text, status=status)
