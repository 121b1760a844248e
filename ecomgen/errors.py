"""Errors a serving step raises for one request; the backend turns them into Triton error codes."""

from __future__ import annotations


class RequestError(ValueError):
    """A problem with one request's inputs; answered with INVALID_ARG naming the input and the problem."""


class DeadlineExceeded(RuntimeError):
    """The request's deadline passed before this step ran; the work is dropped, nobody waits for it."""
