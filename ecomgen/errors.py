"""Errors a serving step raises for one request; the backend turns them into Triton error codes."""

from __future__ import annotations


class RequestError(ValueError):
    """A problem with one request's inputs; answered with INVALID_ARG naming the input and the problem."""


class DeadlineExceeded(RuntimeError):
    """The request's deadline passed before this step ran; the work is dropped, nobody waits for it."""


class Overloaded(RuntimeError):
    """The server cannot answer this request within its deadline now; the caller should back off.

    Answered like Triton's own queue-full error (UNAVAILABLE, "Exceeds maximum queue size ..."),
    which clients treat as overload rather than as a server to fail over from.
    """
