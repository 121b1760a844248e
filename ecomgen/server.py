"""Launch and supervise the tritonserver that ships inside the nvidia-pytriton wheel.

The wheel carries Triton 2.51 (CPU) and its Python backend; the backend needs the stub built for
the running Python, and the stub needs this interpreter's site-packages on its path.
``TritonServer`` arranges both and starts one tritonserver process, secure by default:

- every endpoint binds 127.0.0.1 unless an address is given;
- the shared-memory, model-repository, logging and trace APIs sit behind an admin key on gRPC
  and HTTP (a random key nobody knows when none is configured, so they are effectively off);
- gRPC can use TLS, optionally mutual; HTTP can be turned off;
- the process can run as an unprivileged user (``ecomgen serve`` drops root to ``nobody``);
- Triton and its Python stubs live in their own process group. Triton gets SIGKILL when the
  launcher thread that started it dies (PR_SET_PDEATHSIG), a watchdog process kills the whole
  group when the launcher dies, and the launcher is a child subreaper, so stubs orphaned by a dead
  tritonserver come back to it and are killed and reaped. No stub outlives the launcher.

``serve`` (``ecomgen serve`` / ``python -m ecomgen.server``) supervises it: a clean drain exits
0 whoever sent the SIGTERM, a crash either restarts Triton with exponential backoff or exits
with a distinct code for an orchestrator (``--on-crash``). See ``EXIT_CODES_HELP`` and SECURITY.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import ctypes.util
import ipaddress
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO_ROOT / "build" / "triton"
log = logging.getLogger("ecomgen")

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

# --- restricted APIs (Triton 2.51 names for --grpc-restricted-protocol / --http-restricted-api) ------
RESTRICTABLE_APIS = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
# The APIs that let a caller touch server memory or files, or change what is served.
ADMIN_APIS = ("shared-memory", "model-repository", "logging", "trace")
ADMIN_HEADER = "admin-key"
STATS_HEADER = "stats-key"
# Triton 2.51 expects restricted gRPC headers with this prefix (HTTP takes the bare name).
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
ADMIN_KEY_ENV = "ECOMGEN_ADMIN_KEY"
STATS_KEY_ENV = "ECOMGEN_STATS_KEY"
MIN_KEY_CHARS = 16

# Backends implemented in C++: a repository with only these (and ensembles) needs no Python stub.
NATIVE_BACKENDS = frozenset(
    {"onnxruntime", "tensorrt", "openvino", "pytorch", "tensorflow", "identity", "repeat", "square", "fil"}
)
STUB_NAME = "triton_python_backend_stub"
# The region of each stub: triton_<backend>_backend_shm_region_<uuid> (python, or a Python-based
# backend such as ecomgen's), a file in /dev/shm.
SHM_REGION_RE = re.compile(r"triton_[A-Za-z0-9_.-]+_backend_shm_region_[A-Za-z0-9_-]+")
# Margin on top of Triton's own --exit-timeout-secs before the launcher SIGKILLs the group.
STOP_MARGIN_S = 10.0

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class ServerError(RuntimeError):
    """The server failed to start, exited, or did not become ready in time."""


class ConfigError(ServerError):
    """The configuration is wrong (flags, key or certificate files, permissions); do not retry."""


def pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as e:  # pragma: no cover - setup problem
        raise ServerError("nvidia-pytriton is not installed: run `make setup`") from e
    return Path(pytriton.__file__).resolve().parent


def tritonserver_binary() -> Path:
    path = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not path.exists():
        raise ServerError(f"tritonserver not found at {path}")
    return path


def library_dirs() -> list[Path]:
    """Shared libraries the bundled server and the Python stub link against."""
    libs = pytriton_root().parent / "nvidia_pytriton.libs"
    return [libs, Path(sysconfig.get_config_var("LIBDIR") or "/usr/lib")]


def prepare_backend_dir(build_dir: Path = BUILD_DIR) -> Path:
    """A backend directory whose Python backends (``python`` and ``ecomgen``) have the stub for
    this interpreter."""
    src = pytriton_root() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / version / STUB_NAME
    if not stub.exists():
        raise ServerError(f"no Python backend stub for Python {version} in {stub.parent.parent}")
    dest = build_dir / "backends" / "python"
    dest.mkdir(parents=True, exist_ok=True)
    for f in (src / "backends" / "python").iterdir():
        if f.is_file() and not (dest / f.name).exists():
            (dest / f.name).symlink_to(f)
    target = dest / STUB_NAME
    if not target.exists() or target.stat().st_size != stub.stat().st_size:
        shutil.copy2(stub, target)
    # The `ecomgen` Python-based backend every generated Python model names.
    from ecomgen.serving.triton_backend import install

    install(build_dir / "backends" / "ecomgen", dest)
    return build_dir / "backends"


# --- small process helpers (Linux /proc) ----------------------------------------------------------


def _prctl(option: int, arg: int) -> None:
    if _LIBC.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def set_child_subreaper() -> None:
    """Orphaned descendants (stubs of a dead tritonserver) are re-parented to this process."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, or None when it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def group_members(pgid: int, include_zombies: bool = False) -> list[int]:
    """Processes whose process group is ``pgid`` (zombies are dead: left out unless asked)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = proc_stat(int(entry))
        if st is not None and st[2] == pgid and (include_zombies or st[0] != "Z"):
            out.append(int(entry))
    return out


def proc_uid(pid: int) -> int | None:
    """The real UID of a process (from /proc/<pid>/status), or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """The TCP (host, port) pairs that process ``pid`` listens on, from /proc.

    The truth for the banner and the tests: IPv4-mapped IPv6 addresses (gRPC binds 127.0.0.1 as
    ::ffff:127.0.0.1) are reported as IPv4; ``::`` means every IPv4 and IPv6 interface.
    """
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    out = []
    for family, table in ((socket.AF_INET, "tcp"), (socket.AF_INET6, "tcp6")):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A = LISTEN
                continue
            hex_addr, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_addr)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # per-word byte order
            ip = ipaddress.ip_address(socket.inet_ntop(family, raw))
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            out.append((str(ip), int(hex_port, 16)))
    return sorted(set(out))


def describe_returncode(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


# --- keys, addresses, TLS ---------------------------------------------------------------------------


def check_key(key: str, what: str) -> str:
    key = key.strip()
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"the {what} must have at least {MIN_KEY_CHARS} characters")
    if not all(33 <= ord(c) <= 126 for c in key):
        raise ConfigError(f"the {what} must be printable ASCII without spaces (it travels in a header)")
    return key


def read_key(path: Path | None, env: str, what: str) -> tuple[str | None, str]:
    """A key from a file (first) or an environment variable; (key, where it came from)."""
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read the {what} file {path}: {e.strerror}") from e
        with contextlib.suppress(OSError):
            if Path(path).stat().st_mode & 0o007:  # group-readable is how Kubernetes mounts secrets
                log.warning("%s file %s is readable by every user; chmod 600 it", what, path)
        return check_key(text, what), f"file {path}"
    value = os.environ.get(env)
    if value:
        return check_key(value, what), f"${env}"
    return None, ""


def admin_headers(key: str, protocol: str = "grpc", header: str = ADMIN_HEADER) -> dict[str, str]:
    """The request headers that unlock the APIs restricted with ``key``."""
    name = GRPC_HEADER_PREFIX + header if protocol == "grpc" else header
    return {name: key}


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(address.strip("[]"))
    except ValueError as e:
        raise ConfigError(f"--address must be an IPv4 or IPv6 address, not {address!r}") from e


def client_host(address: str) -> str:
    """Where a local client reaches a server bound to ``address`` (URL form, IPv6 in brackets)."""
    ip = _ip(address)
    if ip.is_unspecified:
        ip = ipaddress.ip_address("127.0.0.1" if ip.version == 4 else "::1")
    return str(ip) if ip.version == 4 else f"[{ip}]"


def _load_certificates(path: Path, what: str) -> tuple[bytes, list[Any]]:
    from cryptography import x509

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} {path}: {e.strerror}") from e
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ConfigError(f"{what} {path} is not a PEM certificate: {e}") from e
    return data, certs


def _load_private_key(path: Path, what: str) -> tuple[bytes, Any]:
    from cryptography.hazmat.primitives import serialization

    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the {what} {path}: {e.strerror}") from e
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as e:
        raise ConfigError(f"{what} {path} is encrypted; Triton needs an unencrypted PEM key") from e
    except ValueError as e:
        raise ConfigError(f"{what} {path} is not a PEM private key: {e}") from e
    return data, key


def _same_public_key(a: Any, b: Any) -> bool:
    from cryptography.hazmat.primitives import serialization

    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(a.public_bytes(*fmt) == b.public_bytes(*fmt))


@dataclass
class TlsMaterial:
    """The certificate files, read and checked once (each start writes them for Triton again)."""

    cert: bytes
    key: bytes
    ca: bytes | None
    probe_cert: bytes
    probe_key: bytes
    probe_root: bytes
    target_name: str | None  # gRPC ssl_target_name_override for the launcher's own probe


def _target_name(cert: Any, host: str) -> str | None:
    """The name the launcher's readiness probe must verify the server certificate against."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if _ip(host) in san.get_values_for_type(x509.IPAddress):
            return None
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return str(names[0]).replace("*.", "probe.", 1)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else None


def _allows_client_auth(cert: Any) -> bool:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku


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
        ip = _ip(self.address)
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
        cert, certs = _load_certificates(self.tls_cert, "TLS certificate")
        key, private = _load_private_key(self.tls_key, "TLS key")
        if not _same_public_key(private.public_key(), certs[0].public_key()):
            raise ConfigError(f"TLS key {self.tls_key} does not belong to certificate {self.tls_cert}")
        ca: bytes | None = None
        if self.tls_ca is not None:
            ca, _ = _load_certificates(self.tls_ca, "TLS CA certificate")
        probe_cert, probe_key = cert, key
        if self.tls_probe_cert is not None and self.tls_probe_key is not None:
            probe_cert, probe_certs = _load_certificates(self.tls_probe_cert, "probe certificate")
            probe_key, probe_private = _load_private_key(self.tls_probe_key, "probe key")
            if not _same_public_key(probe_private.public_key(), probe_certs[0].public_key()):
                raise ConfigError(f"probe key {self.tls_probe_key} does not belong to {self.tls_probe_cert}")
        elif self.tls_client_auth and not self.http and not _allows_client_auth(certs[0]):
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
        return TlsMaterial(cert, key, ca, probe_cert, probe_key, root, _target_name(certs[0], host))


def repository_needs_python(repository: Path) -> bool:
    """Whether any model runs in a Python stub (a backend that is not a native C++ one)."""
    for config in Path(repository).glob("*/config.pbtxt"):
        with contextlib.suppress(OSError):
            for backend in re.findall(r'^\s*backend\s*:\s*"([^"]+)"', config.read_text(), re.M):
                if backend not in NATIVE_BACKENDS:
                    return True
    return False


@dataclass(frozen=True)
class RunAs:
    """The account tritonserver runs as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: Path

    @classmethod
    def lookup(cls, name: str) -> RunAs:
        try:
            pw = pwd.getpwnam(name)
        except KeyError as e:
            raise ConfigError(f"--user {name}: no such user") from e
        return cls(name, pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(name, pw.pw_gid)), Path(pw.pw_dir))

    @classmethod
    def current(cls) -> RunAs:
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, os.getegid(), tuple(os.getgroups()), Path.home())


# Run as the target user: print every path it cannot use ("d": list+traverse, "r": read, "x": run).
_ACCESS_CHECK = (
    'for a do m=${a%%:*}; p=${a#*:}; case $m in d) [ -r "$p" ] && [ -x "$p" ] ;; '
    'r) [ -r "$p" ] ;; x) [ -x "$p" ] ;; esac || printf "%s\\n" "$p"; done'
)


def unusable_paths(run_as: RunAs, checks: Sequence[tuple[str, Path]]) -> list[str]:
    """The paths of ``checks`` that ``run_as`` cannot read/traverse/execute (needs root)."""
    args = [f"{mode}:{path}" for mode, path in checks]
    done = subprocess.run(
        ["/bin/sh", "-c", _ACCESS_CHECK, "sh", *args],
        user=run_as.uid,
        group=run_as.gid,
        extra_groups=list(run_as.groups),
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    if done.returncode != 0:
        raise ServerError(f"access check as {run_as.name} failed: {done.stderr.strip()}")
    return [line for line in done.stdout.splitlines() if line]


def _tree(root: Path) -> Iterable[tuple[str, Path]]:
    yield "d", root
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        # Python falls back to the source when a bytecode cache is unreadable (e.g. a stub that
        # once ran as root wrote it with Triton's umask 077).
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for d in dirnames:
            yield "d", Path(dirpath, d)
        for f in filenames:
            yield "r", Path(dirpath, f)


def runtime_checks(repository: Path, backend_dir: Path) -> list[tuple[str, Path]]:
    """Everything tritonserver and its Python stubs open, for the access check as --user."""
    checks: list[tuple[str, Path]] = list(_tree(Path(repository).resolve()))
    checks += [("x", tritonserver_binary()), ("d", library_dirs()[0]), *_tree(backend_dir)]
    checks.append(("x", backend_dir / "python" / STUB_NAME))
    if repository_needs_python(repository):
        # The stub finds its prefix through the `python3` first on PATH (this interpreter).
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        checks += [("x", Path(sys.executable).resolve()), ("d", stdlib), ("r", stdlib / "os.py")]
        checks += [("d", Path(p)) for p in site.getsitepackages() if Path(p).exists()]
    return checks


# --- the server process -----------------------------------------------------------------------------

# Runs beside each tritonserver: when the launcher dies without saying goodbye (SIGKILL, OOM, crash),
# its end of the pipe closes, and the watchdog kills Triton's whole group, stubs included.
# The launcher also tells it the stubs' shm regions ("region NAME" lines), which it then removes,
# with the launcher's runtime directory.
_WATCHDOG = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
regions = []
for line in sys.stdin.buffer:
    if line.strip() == b"stop":
        sys.exit(0)
    if line.startswith(b"region "):
        regions.append(line[7:].strip().decode())
try:
    os.killpg(int(sys.argv[1]), signal.SIGKILL)
except OSError:
    pass
for name in regions:
    try:
        os.unlink("/dev/shm/" + name)
    except OSError:
        pass
import shutil
shutil.rmtree(sys.argv[2], ignore_errors=True)
"""


class TritonServer:
    """A tritonserver child process in its own process group; usable as a context manager.

    ``start()`` must be called from a thread that outlives the server (the main thread): Linux
    delivers PR_SET_PDEATHSIG when the *thread* that forked the child exits.
    """

    def __init__(self, config: ServerConfig, log: IO[bytes] | Path | None = None):
        self.config = config
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.admin_key_generated = config.admin_key is None
        # Without a configured key nobody, not even the operator, knows this one.
        self.admin_key = config.admin_key if config.admin_key is not None else secrets.token_urlsafe(32)
        self.run_as: RunAs = RunAs.current()
        self.pgid: int | None = None
        self.returncode: int | None = None
        self._log_file: IO[bytes] | None = None
        self._tls: TlsMaterial | None = None
        self._runtime_dir: Path | None = None
        self._tls_dir: Path | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._stub_regions: set[str] = set()

    # -- the command line ------------------------------------------------------------------------

    def _secrets(self) -> list[str]:
        return [k for k in (self.admin_key, self.config.stats_key) if k]

    def restriction_flags(self) -> list[str]:
        c = self.config
        groups = []
        if c.admin_apis:
            groups.append((c.admin_apis, ADMIN_HEADER, self.admin_key))
        if c.stats_key is not None:
            groups.append((("statistics",), STATS_HEADER, c.stats_key))
        http_only = () if c.http_inference else ("inference",)
        if http_only and not c.admin_apis:
            groups.append(((), ADMIN_HEADER, self.admin_key))
        flags = []
        for apis, header, key in groups:
            if apis:
                flags.append(f"--grpc-restricted-protocol={','.join(apis)}:{header}={key}")
            http_apis = (*apis, *http_only) if header == ADMIN_HEADER else apis
            if c.http and http_apis:
                flags.append(f"--http-restricted-api={','.join(http_apis)}:{header}={key}")
        return flags

    def tls_flags(
        self, cert: Path | None = None, key: Path | None = None, ca: Path | None = None
    ) -> list[str]:
        c = self.config
        if not c.tls:
            return []
        flags = [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={cert or c.tls_cert}",
            f"--grpc-server-key={key or c.tls_key}",
        ]
        if c.tls_client_auth:
            flags += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={ca or c.tls_ca}"]
        return flags

    def command(self, backend_dir: Path | None = None, tls_paths: Sequence[Path | None] = ()) -> list[str]:
        c = self.config
        ip = _ip(c.address)
        # gRPC takes "[v6]"; Triton's HTTP servers take "ipv6:v6" (with brackets they bind to ::).
        grpc_address = str(ip) if ip.version == 4 else f"[{ip}]"
        http_address = str(ip) if ip.version == 4 else f"ipv6:{ip}"
        backend = backend_dir if backend_dir is not None else BUILD_DIR / "backends"
        cmd = [
            str(tritonserver_binary()),
            f"--model-repository={Path(c.repository).resolve()}",
            f"--backend-directory={backend}",
            "--model-control-mode=none",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={c.exit_timeout_s}",
            f"--grpc-address={grpc_address}",
            f"--grpc-port={c.grpc_port}",
        ]
        if c.http:
            cmd += [f"--http-address={http_address}", f"--http-port={c.http_port}"]
        else:
            cmd.append("--allow-http=false")
        if c.metrics:
            cmd += [
                "--allow-metrics=true",
                "--allow-gpu-metrics=false",
                f"--metrics-address={http_address}",
                f"--metrics-port={c.metrics_port}",
            ]
        else:
            cmd.append("--allow-metrics=false")
        cmd += self.restriction_flags()
        cmd += self.tls_flags(*tls_paths)
        cmd += [
            f"--backend-config=python,shm-default-byte-size={c.python_shm_bytes}",
            f"--log-verbose={c.log_verbose}",
            *c.extra_args,
        ]
        return cmd

    def redact(self, args: Iterable[str]) -> list[str]:
        """The command line with every key replaced (for logs: never print a key)."""
        out = []
        for a in args:
            for k in self._secrets():
                a = a.replace(k, "<redacted>")
            out.append(a)
        return out

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in (ADMIN_KEY_ENV, STATS_KEY_ENV)}
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [*map(str, library_dirs()), *filter(None, [env.get("LD_LIBRARY_PATH")])]
        )
        # The stub embeds libpython and ignores PYTHONPATH; it derives sys.prefix from the first
        # `python3` on PATH, so putting this interpreter's bin/ first gives it this venv's packages.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        if sys.prefix != sys.base_prefix:
            env["VIRTUAL_ENV"] = sys.prefix
        paths = [*site.getsitepackages(), *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        if self._dropping and self._runtime_dir is not None:
            env.update(HOME=str(self._runtime_dir), USER=self.run_as.name, LOGNAME=self.run_as.name)
        return env

    @property
    def _dropping(self) -> bool:
        return self.run_as.uid != os.geteuid()

    # -- preparing and starting ------------------------------------------------------------------

    def resolve_user(self, backend_dir: Path) -> RunAs:
        """The account to run as, after checking it can read everything Triton needs."""
        c = self.config
        if c.user is None:
            return RunAs.current()
        target = RunAs.lookup(c.user)
        if target.uid == 0:
            if os.geteuid() != 0:
                raise ConfigError("--user root: only root can run tritonserver as root")
            if not c.allow_root:
                raise ConfigError("refusing to run tritonserver as root; pass --allow-root to do it anyway")
            return target
        if target.uid == os.geteuid():
            return target
        if os.geteuid() != 0:
            raise ConfigError(f"--user {c.user}: only root can run tritonserver as another user")
        missing = unusable_paths(target, runtime_checks(Path(c.repository), backend_dir))
        if not missing:
            return target
        shown = "\n  ".join(missing[:5]) + ("\n  ..." if len(missing) > 5 else "")
        message = (
            f"tritonserver would run as {target.name} (uid {target.uid}), which cannot read:\n  {shown}\n"
            f"Make these readable by {target.name} (e.g. a Python installed outside /root), choose "
            "another --user, or pass --allow-root to run tritonserver as root when the drop is impossible"
        )
        if c.allow_root:
            log.warning(
                "tritonserver cannot run as %s (it cannot read %s); --allow-root: running it as root",
                target.name,
                ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else ""),
            )
            return RunAs.current()
        raise ConfigError(message)

    def prepare(self) -> Path:
        """Validate, prepare the backend directory and choose the account; the backend dir."""
        self.config.validate()
        self._tls = self.config.load_tls()
        backend_dir = prepare_backend_dir()
        self.run_as = self.resolve_user(backend_dir)
        return backend_dir

    def _write_tls_files(self) -> list[Path | None]:
        """TLS files Triton can read as its user: copies in a private directory, removed once ready."""
        if self._tls is None or self._runtime_dir is None:
            return []
        d = Path(tempfile.mkdtemp(prefix="tls-", dir=self._runtime_dir))
        paths: list[Path | None] = []
        for name, data in (
            ("server.crt", self._tls.cert),
            ("server.key", self._tls.key),
            ("ca.crt", self._tls.ca),
        ):
            if data is None:
                paths.append(None)
                continue
            p = d / name
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            if self._dropping:
                os.chown(p, self.run_as.uid, self.run_as.gid)
            paths.append(p)
        if self._dropping:
            os.chown(d, self.run_as.uid, self.run_as.gid)
        self._tls_dir = d
        return paths

    def _make_runtime_dir(self) -> None:
        # RAM-backed where possible: the TLS key copy never reaches a disk.
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self._runtime_dir = Path(tempfile.mkdtemp(prefix="ecomgen-triton-", dir=base))
        if self._dropping:
            os.chown(self._runtime_dir, self.run_as.uid, self.run_as.gid)

    def start(self) -> TritonServer:
        if self.process is not None:
            raise ServerError("server already started")
        backend_dir = self.prepare()
        out: IO[bytes] | None = None
        if isinstance(self.log, Path):
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = out = self.log.open("ab")
        elif self.log is not None:
            out = self.log
        self._make_runtime_dir()
        cmd = self.command(backend_dir, self._write_tls_files())
        with contextlib.suppress(OSError):  # not fatal: killpg still covers the group
            set_child_subreaper()
        parent = os.getpid()

        def in_child() -> None:  # runs after setsid and the uid/gid change, just before exec
            _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent:  # the launcher died before prctl took effect
                os._exit(EXIT_CRASH)

        drop: dict[str, Any] = {}
        if self._dropping:
            drop = {
                "user": self.run_as.uid,
                "group": self.run_as.gid,
                "extra_groups": list(self.run_as.groups),
            }
        log.debug("starting %s", " ".join(self.redact(cmd)))
        self.returncode = self.pgid = None
        try:
            # preexec_fn runs Python between fork and exec; it only calls prctl and getppid.
            self.process = subprocess.Popen(
                cmd,
                env=self.environment(),
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # own session and process group: pgid == pid
                preexec_fn=in_child,
                umask=0o077,  # files Triton creates are owner-only (shm regions: see protect_regions)
                cwd=str(self._runtime_dir) if self._dropping else None,
                **drop,
            )
        except BaseException:
            self._cleanup()
            raise
        self.pgid = self.process.pid
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(self.pgid), str(self._runtime_dir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            self.kill()
            self.stop()
            raise
        return self

    # -- URLs and readiness ----------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"http://{client_host(self.config.address)}:{self.config.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{client_host(self.config.address)}:{self.config.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{client_host(self.config.address)}:{self.config.metrics_port}/metrics"

    def grpc_client(self) -> Any:
        """A tritonclient gRPC client the launcher itself uses (with its TLS identity)."""
        import grpc
        import tritonclient.grpc as grpcclient

        if self._tls is None:
            return grpcclient.InferenceServerClient(self.grpc_url)
        t = self._tls
        creds = grpc.ssl_channel_credentials(
            root_certificates=t.probe_root,
            private_key=t.probe_key if self.config.tls_client_auth else None,
            certificate_chain=t.probe_cert if self.config.tls_client_auth else None,
        )
        args = [("grpc.ssl_target_name_override", t.target_name)] if t.target_name else None
        return grpcclient.InferenceServerClient(self.grpc_url, creds=creds, channel_args=args)

    def is_ready(self, client: Any = None) -> bool:
        if self.config.http:
            try:
                with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                    return bool(r.status == 200)
            except (urllib.error.URLError, OSError):
                return False
        from tritonclient.utils import InferenceServerException

        own = client is None
        client = client or self.grpc_client()
        try:
            return bool(client.is_server_ready(client_timeout=2.0))
        except InferenceServerException:
            return False
        finally:
            if own:
                client.close()

    def wait_ready(self, timeout_s: float = 120.0, cancel: threading.Event | None = None) -> bool:
        """Block until ready; False if ``cancel`` was set first. ServerError on exit or timeout."""
        deadline = time.monotonic() + timeout_s
        client = None if self.config.http else self.grpc_client()
        try:
            while time.monotonic() < deadline:
                if self.process is None:
                    raise ServerError("server not started")
                code = self.process.poll()
                if code is not None:
                    how = describe_returncode(code)
                    raise ServerError(f"tritonserver exited ({how}) before it was ready{self._log_hint()}")
                if self.is_ready(client) and self.owns_ports():
                    self._forget_tls_files()
                    self.protect_regions()
                    return True
                if cancel is not None and cancel.wait(0.25):
                    return False
                if cancel is None:
                    time.sleep(0.25)
        finally:
            if client is not None:
                client.close()
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s{self._log_hint()}")

    def owns_ports(self) -> bool:
        """Whether *this* tritonserver listens on the probed ports: another server already on the
        port would answer the probe while ours fails to bind ("already in use") and exits."""
        if self.process is None:
            return False
        wanted = {self.config.grpc_port} | ({self.config.http_port} if self.config.http else set())
        return wanted <= {port for _, port in listening_sockets(self.process.pid)}

    def _forget_tls_files(self) -> None:
        # Triton read them when its gRPC service started; a compromised stub cannot read them now.
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

    def _log_hint(self) -> str:
        if isinstance(self.log, Path) and self.log.exists():
            tail = self.log.read_text(errors="replace").splitlines()[-30:]
            return "; log tail:\n" + "\n".join(self.redact(tail))
        return ""

    # -- supervision -------------------------------------------------------------------------------

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def group_pids(self) -> list[int]:
        """Live processes of Triton's group: tritonserver and its Python stubs."""
        return [] if self.pgid is None else group_members(self.pgid)

    def stub_pids(self) -> list[int]:
        return [
            p for p in self.group_pids() if proc_cmdline(p)[:1] and proc_cmdline(p)[0].endswith(STUB_NAME)
        ]

    def kill(self) -> None:
        """SIGKILL the whole group now (tritonserver and every stub)."""
        self._remember_regions()
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)

    def protect_regions(self) -> list[Path]:
        """chmod 600 the stubs' shm regions: they carry request tensors (shoppers' photos), and the
        Python backend creates them world-readable (0644) whatever the umask. The regions changed."""
        self._remember_regions()
        changed = []
        for region in self._stub_regions:
            path = Path("/dev/shm", region)
            with contextlib.suppress(OSError):
                if path.stat().st_mode & 0o077:
                    path.chmod(0o600)
                    changed.append(path)
        return changed

    def _remember_regions(self) -> None:
        """The shm regions of live stubs (argv[2]): a killed stub cannot unlink its own, so the
        launcher (or, when the launcher dies, the watchdog) removes them after a kill."""
        for pid in self.stub_pids():
            args = proc_cmdline(pid)
            if len(args) > 2 and SHM_REGION_RE.fullmatch(args[2]):
                if args[2] not in self._stub_regions and self._watchdog is not None:
                    with contextlib.suppress(OSError, ValueError):
                        assert self._watchdog.stdin is not None
                        self._watchdog.stdin.write(f"region {args[2]}\n".encode())
                        self._watchdog.stdin.flush()
                self._stub_regions.add(args[2])

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, wait for Triton's own drain, then SIGKILL the group; Triton's return code.

        Also the cleanup after Triton exited on its own: the rest of its group is killed and
        reaped, and the shm regions of killed stubs are removed.
        """
        proc = self.process
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                self._remember_regions()
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                grace = timeout_s if timeout_s is not None else self.config.exit_timeout_s + STOP_MARGIN_S
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    log.warning("tritonserver did not stop within %.0f s; killing its process group", grace)
                    self.kill()
                    proc.wait()
        finally:
            self.returncode = proc.returncode
            self._cleanup()
            self.process = None
        return proc.returncode

    def _cleanup(self) -> None:
        if self.pgid is not None:
            if self.group_pids():
                self.kill()
            self._reap_group(timeout_s=10.0)
        for region in self._stub_regions:
            with contextlib.suppress(OSError):
                os.unlink(f"/dev/shm/{region}")
        self._stub_regions.clear()
        if self._watchdog is not None:
            with contextlib.suppress(OSError, ValueError):
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.write(b"stop\n")
                self._watchdog.stdin.close()
            try:
                self._watchdog.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None
        self._tls_dir = None
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _reap_group(self, timeout_s: float) -> None:
        """Wait until no process of the group is alive, reaping those re-parented to us."""
        assert self.pgid is not None
        deadline = time.monotonic() + timeout_s
        me = os.getpid()
        while True:
            members = group_members(self.pgid, include_zombies=True)
            for pid in members:
                st = proc_stat(pid)
                if st is not None and st[1] == me and pid != (self.process.pid if self.process else -1):
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
            if not group_members(self.pgid) or time.monotonic() > deadline:
                if time.monotonic() > deadline:
                    log.error("processes of group %d still alive: %s", self.pgid, group_members(self.pgid))
                return
            time.sleep(0.05)

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- supervision policy -----------------------------------------------------------------------------


@dataclass
class RestartPolicy:
    """Exponential backoff between restarts; give up after ``max_crashes`` within ``window_s``."""

    max_crashes: int = 5
    window_s: float = 300.0
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    crashes: collections.deque[float] = field(default_factory=collections.deque)

    def record_crash(self, now: float) -> float | None:
        """The delay before the next start, or None to give up."""
        self.crashes.append(now)
        while self.crashes and now - self.crashes[0] > self.window_s:
            self.crashes.popleft()
        if len(self.crashes) >= self.max_crashes:
            return None
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** (len(self.crashes) - 1)))


def exit_code_after_stop(returncode: int | None) -> int:
    """The launcher's exit code after a requested stop (SIGTERM/SIGINT to the launcher)."""
    return EXIT_OK if returncode in (0, None) else EXIT_DRAIN


def is_crash(returncode: int) -> bool:
    """Triton exited without a stop request from the launcher: 0 is a clean drain (someone sent
    SIGTERM/SIGINT to tritonserver itself); anything else is a crash."""
    return returncode != 0


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
    """The launcher's flags (``ecomgen serve``, ``python -m ecomgen.server``)."""
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


def security_summary(server: TritonServer, sources: dict[str, str]) -> list[str]:
    """What the startup log says about keys, TLS and the user (never a key itself)."""
    c = server.config
    lines = []
    if c.admin_apis:
        if server.admin_key_generated:
            lines.append(
                f"admin APIs ({', '.join(c.admin_apis)}) are locked with a random key nobody knows "
                f"(no --admin-key-file or ${ADMIN_KEY_ENV}): they are off"
            )
        else:
            lines.append(
                f"admin APIs ({', '.join(c.admin_apis)}) need header {ADMIN_HEADER} "
                f"(gRPC: {GRPC_HEADER_PREFIX}{ADMIN_HEADER}); key from {sources.get('admin') or 'config'}"
            )
    else:
        lines.append("WARNING: no admin APIs restricted (--admin-apis is empty)")
    if c.stats_key is not None:
        lines.append(f"statistics need header {STATS_HEADER}; key from {sources.get('stats') or 'config'}")
    locked = {*c.admin_apis, *(["statistics"] if c.stats_key is not None else [])}
    open_apis = [a for a in RESTRICTABLE_APIS if a not in locked]
    lines.append(f"open to every caller: {', '.join(open_apis)}")
    if c.http and not c.http_inference:
        lines.append("HTTP serves health and metadata; inference is gRPC only (--http-inference to allow it)")
    if c.tls:
        mode = "mutual TLS (client certificates from --tls-ca)" if c.tls_client_auth else "TLS"
        lines.append(f"gRPC uses {mode}")
    elif _ip(c.address).is_loopback:
        lines.append("gRPC is plaintext (no --tls-cert)")
    else:
        lines.append(
            f"WARNING: gRPC is plaintext on {c.address}: shoppers' photos cross the network unencrypted "
            "unless a proxy or mesh adds TLS (--tls-cert/--tls-key)"
        )
    if not c.http:
        lines.append("HTTP is off")
    elif c.tls:
        lines.append(
            "WARNING: HTTP stays plaintext with TLS on gRPC; pass --no-http unless a proxy terminates TLS"
        )
    who = server.run_as
    if who.uid == 0:
        lines.append("WARNING: tritonserver runs as root")
    else:
        lines.append(f"tritonserver runs as {who.name} (uid {who.uid})")
    return lines


def banner(server: TritonServer, models: Sequence[str], restarts: int) -> str:
    c = server.config
    again = f" (restart {restarts})" if restarts else ""
    parts = [f"ecomgen: ready{again}. gRPC {server.grpc_url}"]
    if c.http:
        parts.append(f"HTTP {server.http_url}")
    if c.metrics:
        parts.append(f"metrics {server.metrics_url}")
    parts.append(f"models: {', '.join(models)}  (Ctrl-C to stop)")
    return "  ".join(parts)


def listening_line(server: TritonServer) -> str:
    """Where tritonserver really listens (read back from /proc, not from the flags)."""
    c = server.config
    names = {c.grpc_port: "gRPC", c.http_port: "HTTP", c.metrics_port: "metrics"}
    pid = server.process.pid if server.process else -1
    found = []
    for host, port in listening_sockets(pid):
        where = f"[{host}]" if ":" in host else host
        scope = (
            " (all IPv4 and IPv6 interfaces)"
            if host == "::"
            else " (all IPv4 interfaces)"
            if host == "0.0.0.0"
            else ""
        )
        found.append(f"{names.get(port, 'port')} {where}:{port}{scope}")
    who = server.run_as
    return (
        f"ecomgen: listening on {', '.join(found) or 'nothing?'} "
        f"(tritonserver pid {pid}, user {who.name}, uid {who.uid})"
    )


def _models(repository: Path) -> list[str]:
    return sorted(p.name for p in Path(repository).iterdir() if (p / "config.pbtxt").exists())


def serve(opt: argparse.Namespace, repository: Path) -> int:
    """Run and supervise Triton on ``repository`` until SIGINT/SIGTERM; the exit code (EXIT_*)."""
    try:
        config, sources = config_from_args(opt, repository)
        config.validate()
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_CONFIG
    server = TritonServer(config)
    policy = RestartPolicy(max_crashes=opt.max_crashes, window_s=opt.crash_window)
    stop = threading.Event()
    first_signal: list[float] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # A second signal at least a second later (an impatient Ctrl-C) kills at once; one sent
        # twice at the same moment (a wrapper forwarding it, a process-group kill) still drains.
        if not first_signal or time.monotonic() - first_signal[0] < 1.0:
            first_signal.append(time.monotonic())
            name = signal.Signals(signum).name
            log.info("received %s: draining tritonserver (up to %d s)", name, config.exit_timeout_s)
        else:
            log.warning("received %s again: killing tritonserver now", signal.Signals(signum).name)
            server.kill()
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    models = _models(repository)
    restarts = 0
    while True:
        try:
            server.start()
        except ConfigError as e:
            log.error("%s", e)
            return EXIT_CONFIG
        except (ServerError, OSError) as e:
            log.error("cannot start tritonserver: %s", e)
            server.stop()
            return EXIT_STARTUP
        if restarts == 0:
            for line in security_summary(server, sources):
                log.info("%s", line)
        startup_failed = False
        try:
            ready = server.wait_ready(opt.ready_timeout, cancel=stop)
        except ServerError as e:
            log.error("%s", e)
            server.stop()
            if restarts == 0:
                return EXIT_STARTUP
            ready = startup_failed = True  # a restart that never became ready counts as a crash
        if ready and not startup_failed:
            print(banner(server, models, restarts), flush=True)
            print(listening_line(server), flush=True)
            while not stop.wait(0.2):
                if server.poll() is not None:
                    break
        if stop.is_set():
            code = server.stop()
            log.info("tritonserver stopped (%s)", describe_returncode(code))
            return exit_code_after_stop(code)
        if not startup_failed:
            returncode = server.stop()
            if returncode is not None and not is_crash(returncode):
                log.info("tritonserver stopped (exit code 0): it drained after a signal sent to it directly")
                return EXIT_OK
            log.error("tritonserver crashed (%s)", describe_returncode(returncode))
        if opt.on_crash == "exit":
            return EXIT_CRASH
        delay = policy.record_crash(time.monotonic())
        if delay is None:
            log.error("giving up: %d crashes within %.0f s", len(policy.crashes), policy.window_s)
            return EXIT_CRASH
        restarts += 1
        log.warning("restarting tritonserver in %.0f s (restart %d)", delay, restarts)
        if stop.wait(delay):
            log.info("stop requested while tritonserver was down")
            return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m ecomgen.server --repository DIR``: the launcher without the build step."""
    p = argparse.ArgumentParser(prog="python -m ecomgen.server", description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, required=True, help="the model repository to serve")
    add_serve_arguments(p)
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    return serve(opt, opt.repository)


if __name__ == "__main__":
    raise SystemExit(main())
