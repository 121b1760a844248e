"""The launcher's configuration: ``ServerConfig``, its validation, the ``ecomgen serve`` flags and
the exit codes an orchestrator reads."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from ecomgen.launcher.process import ConfigError, RunAs
from ecomgen.launcher.security import (
    ADMIN_APIS,
    ADMIN_HEADER,
    ADMIN_KEY_ENV,
    GRPC_HEADER_PREFIX,
    RESTRICTABLE_APIS,
    STATS_HEADER,
    STATS_KEY_ENV,
    TlsMaterial,
    allows_client_auth,
    check_key,
    client_host,
    load_certificates,
    load_private_key,
    parse_ip,
    read_key,
    same_public_key,
    target_name,
)

# --- exit codes of `ecomgen serve` -----------------------------------------------------------------
EXIT_OK = 0  # stopped cleanly: a SIGTERM/SIGINT drained Triton, whoever sent it
EXIT_CONFIG = 2  # bad flags or files (also argparse's usage error): fix the configuration, do not retry
EXIT_STARTUP = 3  # Triton did not become ready at the first start (model failed to load, port in use)
EXIT_CRASH = 4  # Triton crashed (--on-crash exit), or crashed --max-crashes times in --crash-window
EXIT_DRAIN = 5  # a stop was requested but Triton did not drain in time and was killed

EXIT_CODES_HELP = """\
exit codes:
  0  stopped cleanly: SIGTERM/SIGINT drained Triton (sent to the launcher or to tritonserver itself)
  1  unexpected error in the launcher itself (a bug: please report it)
  2  configuration error: bad flags, unreadable key/certificate files, or the --user cannot read
     the model repository or the Python runtime; retrying will not help
  3  startup failure: tritonserver exited or was not ready within --ready-timeout at its first start
  4  tritonserver crashed (--on-crash exit), or crashed --max-crashes times within --crash-window
  5  a stop was requested but Triton did not drain within --exit-timeout and was killed
"""
# Margin on top of Triton's own --exit-timeout-secs before the launcher SIGKILLs the group.
STOP_MARGIN_S = 10.0


# --- configuration ----------------------------------------------------------------------------------


@dataclass
class ServerConfig:
    repository: Path
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    # Loopback unless told otherwise; an IPv4 or IPv6 address (0.0.0.0 makes gRPC bind IPv6 too).
    address: str = "127.0.0.1"
    log_verbose: int = 0
    exit_timeout_s: int = 30
    # Shared memory region of each Python-backend instance (64 images of 64x48x3 fit in 1 MB).
    python_shm_bytes: int = 16 * 1024 * 1024
    extra_args: tuple[str, ...] = field(default=())
    http: bool = True  # False: --allow-http=false; readiness is then checked over gRPC
    # Inference over HTTP/JSON: off unless asked for. Triton 2.51's JSON decoder silently wraps
    # out-of-range integers (class_id 2**40 arrives as 0), so no server-side check can see them;
    # gRPC (binary tensors) is the inference protocol. Health and metadata stay open on HTTP.
    http_inference: bool = False
    metrics: bool = True
    # Key of the restricted admin APIs; None: a random key nobody knows (the APIs are off).
    admin_key: str | None = None
    admin_apis: tuple[str, ...] = ADMIN_APIS
    # With a key, `statistics` needs the stats-key header; None: statistics stay open.
    stats_key: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # trust root of client certificates (mutual TLS) and of the probe
    tls_client_auth: bool = False  # mutual TLS: clients must present a certificate signed by tls_ca
    # The launcher's own client identity for gRPC readiness probes under mutual TLS without HTTP
    # (default: the server certificate, which must then allow clientAuth).
    tls_probe_cert: Path | None = None
    tls_probe_key: Path | None = None
    # Run tritonserver as this account (needs root); None: as the calling user.
    user: str | None = None
    # With `user`: when that account cannot read the runtime, run as root instead of failing.
    allow_root: bool = False

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def validate(self) -> None:
        """Flag-level checks; raise ConfigError with a message a user can act on."""
        if not Path(self.repository).is_dir():
            raise ConfigError(f"model repository {self.repository} is not a directory")
        ip = parse_ip(self.address)
        if ip.version == 6 and ip.ipv4_mapped is not None:
            raise ConfigError("--address: use the IPv4 form instead of an IPv4-mapped IPv6 address")
        ports = {"gRPC": self.grpc_port}
        if self.http:
            ports["HTTP"] = self.http_port
        if self.metrics:
            ports["metrics"] = self.metrics_port
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                raise ConfigError(f"{name} port {port} is not in 1..65535")
        if len(set(ports.values())) != len(ports):
            raise ConfigError(f"ports must differ: {ports}")
        if self.exit_timeout_s < 0:
            raise ConfigError("exit timeout must be >= 0")
        apis = list(self.admin_apis)
        unknown = sorted(set(apis) - set(RESTRICTABLE_APIS))
        if unknown:
            raise ConfigError(
                f"unknown API(s) {', '.join(unknown)}; Triton 2.51 knows {', '.join(RESTRICTABLE_APIS)}"
            )
        if len(set(apis)) != len(apis):
            raise ConfigError("an API is listed twice in the admin APIs")
        if "health" in apis:
            raise ConfigError("health must stay open: load balancers and probes send no key")
        if self.stats_key is not None and "statistics" in apis:
            raise ConfigError("statistics cannot be behind both the admin key and the stats key")
        if self.admin_key is not None:
            check_key(self.admin_key, "admin key")
        if self.stats_key is not None:
            check_key(self.stats_key, "stats key")
            if self.stats_key == self.admin_key:
                raise ConfigError("the stats key must differ from the admin key")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        if not self.tls and (
            self.tls_ca or self.tls_client_auth or self.tls_probe_cert or self.tls_probe_key
        ):
            raise ConfigError("--tls-ca, --tls-client-auth and --tls-probe-* need --tls-cert and --tls-key")
        if self.tls_client_auth and self.tls_ca is None:
            raise ConfigError("--tls-client-auth needs --tls-ca (the CA that signs client certificates)")
        if (self.tls_probe_cert is None) != (self.tls_probe_key is None):
            raise ConfigError("the probe identity needs both --tls-probe-cert and --tls-probe-key")

    def load_tls(self) -> TlsMaterial | None:
        """Read and check the certificate files (they exist, parse, and the keys match)."""
        if not self.tls:
            return None
        assert self.tls_cert is not None and self.tls_key is not None
        cert, certs = load_certificates(self.tls_cert, "TLS certificate")
        key, private = load_private_key(self.tls_key, "TLS key")
        if not same_public_key(private.public_key(), certs[0].public_key()):
            raise ConfigError(f"TLS key {self.tls_key} does not belong to certificate {self.tls_cert}")
        ca: bytes | None = None
        if self.tls_ca is not None:
            ca, _ = load_certificates(self.tls_ca, "TLS CA certificate")
        probe_cert, probe_key = cert, key
        if self.tls_probe_cert is not None and self.tls_probe_key is not None:
            probe_cert, probe_certs = load_certificates(self.tls_probe_cert, "probe certificate")
            probe_key, probe_private = load_private_key(self.tls_probe_key, "probe key")
            if not same_public_key(probe_private.public_key(), probe_certs[0].public_key()):
                raise ConfigError(f"probe key {self.tls_probe_key} does not belong to {self.tls_probe_cert}")
        elif self.tls_client_auth and not self.http and not allows_client_auth(certs[0]):
            raise ConfigError(
                "with --tls-client-auth and --no-http the launcher checks readiness over mutual TLS, but "
                f"{self.tls_cert} does not allow clientAuth: pass --tls-probe-cert/--tls-probe-key"
            )
        self_signed = certs[0].issuer == certs[0].subject
        if ca is None and not self_signed and not self.http:
            raise ConfigError(
                "with --no-http the launcher checks readiness over TLS and must verify the server: "
                "pass --tls-ca (the CA that signed the server certificate)"
            )
        root = ca if ca is not None else cert
        host = client_host(self.address).strip("[]")
        return TlsMaterial(cert, key, ca, probe_cert, probe_key, root, target_name(certs[0], host))


# --- command line -----------------------------------------------------------------------------------


_HELP = {
    "address": "IP address for gRPC, HTTP and metrics (default 127.0.0.1: this host only; "
    "0.0.0.0 makes gRPC listen on every IPv4 and IPv6 interface)",
    "admin-key-file": f"file holding the key of the admin APIs (else ${ADMIN_KEY_ENV}; with neither, "
    "a random key nobody knows: the admin APIs are off)",
    "admin-apis": f"APIs behind the admin key (header {ADMIN_HEADER}; on gRPC "
    f"{GRPC_HEADER_PREFIX}{ADMIN_HEADER}); default %(default)s",
    "stats-key-file": f"put the statistics API behind this key (header {STATS_HEADER}; "
    f"else ${STATS_KEY_ENV}; default: statistics stay open)",
    "tls-probe-cert": "client certificate of the launcher's own readiness probe under mutual TLS with "
    "--no-http (default: the server certificate, if it allows clientAuth)",
    "allow-root": "run tritonserver as root when the --user cannot read the model repository or the "
    "Python runtime (default: fail with exit code 2)",
    "on-crash": "restart Triton with exponential backoff (default), or exit 4 for an orchestrator "
    "to restart the launcher (Kubernetes)",
    "max-crashes": "restart mode: exit 4 after this many crashes within --crash-window (default %(default)s)",
    "exit-timeout": "seconds Triton drains in-flight requests after SIGTERM (default %(default)s); "
    f"the group is SIGKILLed {STOP_MARGIN_S:.0f} s after that",
}


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The launcher's flags (``ecomgen serve``, ``python -m ecomgen.launcher``)."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EXIT_CODES_HELP + "\nSee SECURITY.md for the threat model and a TLS walk-through."
    net = p.add_argument_group("network")
    net.add_argument("--address", default="127.0.0.1", help=_HELP["address"])
    net.add_argument("--grpc-port", type=int, default=8001)
    net.add_argument("--http-port", type=int, default=8000)
    net.add_argument("--metrics-port", type=int, default=8002)
    net.add_argument("--no-http", action="store_true", help="turn the HTTP endpoint off (gRPC only)")
    net.add_argument(
        "--http-inference",
        action="store_true",
        help="allow inference over HTTP/JSON too (off by default: Triton 2.51's JSON decoder silently "
        "wraps out-of-range integers; use gRPC, or HTTP binary tensors with in-range values)",
    )
    net.add_argument("--no-metrics", action="store_true", help="turn the Prometheus endpoint off")
    sec = p.add_argument_group("security")
    sec.add_argument("--admin-key-file", type=Path, help=_HELP["admin-key-file"])
    sec.add_argument("--admin-apis", default=",".join(ADMIN_APIS), help=_HELP["admin-apis"])
    sec.add_argument("--stats-key-file", type=Path, help=_HELP["stats-key-file"])
    sec.add_argument("--tls-cert", type=Path, help="PEM server certificate: gRPC over TLS")
    sec.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert (unencrypted)")
    sec.add_argument("--tls-ca", type=Path, help="PEM CA that signs client certificates (mutual TLS)")
    sec.add_argument("--tls-client-auth", action="store_true", help="mutual TLS: require client certificates")
    sec.add_argument("--tls-probe-cert", type=Path, help=_HELP["tls-probe-cert"])
    sec.add_argument("--tls-probe-key", type=Path, help="private key of --tls-probe-cert")
    sec.add_argument("--user", help="when started as root, run tritonserver as this user (default nobody)")
    sec.add_argument("--allow-root", action="store_true", help=_HELP["allow-root"])
    sup = p.add_argument_group("supervision")
    sup.add_argument("--on-crash", choices=("restart", "exit"), default="restart", help=_HELP["on-crash"])
    sup.add_argument("--max-crashes", type=int, default=5, help=_HELP["max-crashes"])
    sup.add_argument("--crash-window", type=float, default=300.0, help="seconds (default %(default)s)")
    sup.add_argument("--exit-timeout", type=int, default=30, help=_HELP["exit-timeout"])
    sup.add_argument("--ready-timeout", type=float, default=180.0, help="seconds (default %(default)s)")
    sup.add_argument("--log-verbose", type=int, default=0)


def config_from_args(opt: argparse.Namespace, repository: Path) -> tuple[ServerConfig, dict[str, str]]:
    """The ServerConfig of the flags, and where each key came from (for the startup log)."""
    admin_key, admin_from = read_key(opt.admin_key_file, ADMIN_KEY_ENV, "admin key")
    stats_key, stats_from = read_key(opt.stats_key_file, STATS_KEY_ENV, "stats key")
    user = opt.user
    if user is None and os.geteuid() == 0:
        user = "nobody"  # never serve untrusted callers as root by default
    if user is not None and os.geteuid() != 0 and RunAs.lookup(user).uid != os.geteuid():
        raise ConfigError(f"--user {user}: only root can run tritonserver as another user")
    apis = tuple(a.strip() for a in opt.admin_apis.split(",") if a.strip())
    config = ServerConfig(
        repository=repository,
        grpc_port=opt.grpc_port,
        http_port=opt.http_port,
        metrics_port=opt.metrics_port,
        address=opt.address,
        log_verbose=opt.log_verbose,
        exit_timeout_s=opt.exit_timeout,
        http=not opt.no_http,
        http_inference=opt.http_inference,
        metrics=not opt.no_metrics,
        admin_key=admin_key,
        admin_apis=apis,
        stats_key=stats_key,
        tls_cert=opt.tls_cert,
        tls_key=opt.tls_key,
        tls_ca=opt.tls_ca,
        tls_client_auth=opt.tls_client_auth,
        tls_probe_cert=opt.tls_probe_cert,
        tls_probe_key=opt.tls_probe_key,
        user=user,
        allow_root=opt.allow_root,
    )
    return config, {"admin": admin_from, "stats": stats_from}
