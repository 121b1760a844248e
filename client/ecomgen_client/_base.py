"""What the sync and async clients share: construction, endpoints, retries, contract lookup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from ._common import (
    SERVED_BY,
    EndpointPool,
    RetryPolicy,
    RetryThrottle,
    Send,
    channel_args,
    check_timeout,
    known_contract,
    parse_endpoints,
)
from ._methods import TypedMethods
from .contracts import Contract
from .errors import ServerError

TransportT = TypeVar("TransportT")


@dataclass(frozen=True)
class TlsConfig:
    """gRPC over TLS: the CA that signed the server, and a client certificate for mutual TLS."""

    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None

    def kwargs(self) -> dict[str, Any]:
        return {
            "ssl": True,
            "root_certificates": str(self.root_certificates) if self.root_certificates else None,
            "private_key": str(self.private_key) if self.private_key else None,
            "certificate_chain": str(self.certificate_chain) if self.certificate_chain else None,
        }


class ClientBase(TypedMethods, Generic[TransportT]):
    """``url`` is one ``host:port``, several (a list or ``"a:8001,b:8001"``: requests go round
    robin and fail over when one dies), or one ``dns:///svc:8001`` target for a headless
    Kubernetes Service, which gRPC balances per call. ``timeout_s`` is one deadline for the
    whole call, retries included; what is left of it goes to Triton as the request's own
    timeout, so the server drops work nobody waits for any more.
    """

    # tritonclient's sync or asyncio InferenceServerClient.
    transport_class: Any = None

    def __init__(
        self,
        url: str | Sequence[str] = "localhost:8001",
        *,
        timeout_s: float | None = 30.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        tls: TlsConfig | None = None,
        transport: TransportT | None = None,
        throttle: RetryThrottle | None = None,
        verbose: bool = False,
    ) -> None:
        self.urls = parse_endpoints(url)
        self.timeout_s = check_timeout(timeout_s)
        self.retry = RetryPolicy(retries, backoff_s, throttle=throttle or RetryThrottle())
        tls_kwargs = tls.kwargs() if tls else {}

        def make(target: str) -> TransportT:
            if transport is not None:
                return transport
            return self.transport_class(
                url=target, verbose=verbose, channel_args=channel_args(target), **tls_kwargs
            )

        # A transport passed in belongs to the caller, so close() leaves it open.
        self._owns_transport = transport is None
        self.pool: EndpointPool[TransportT] = EndpointPool(self.urls, make)
        self._contracts: dict[str, Contract] = {}

    @staticmethod
    def last_endpoint() -> str | None:
        """The endpoint that answered the last successful request made from this thread (or asyncio
        task), by any client; None before the first. Lets a caller count work per endpoint."""
        return SERVED_BY.get()

    def _timeout(self, timeout_s: float | None) -> float | None:
        return self.timeout_s if timeout_s is None else check_timeout(timeout_s)

    def _cached_contract(self, model: str | Contract) -> Contract | None:
        return known_contract(model) or self._contracts.get(str(model))

    def _learn_contract(self, name: str, config: Any) -> Contract:
        if not isinstance(config, dict):
            raise ServerError(f"{name}: unexpected model config {type(config).__name__}")
        self._contracts[name] = Contract.from_config(config)
        return self._contracts[name]

    @staticmethod
    def _infer_kwargs(request: Any, step: Send) -> dict[str, Any]:
        return {
            "outputs": request.outputs,
            "client_timeout": step.client_timeout,
            "timeout": step.server_timeout_us,
        }
