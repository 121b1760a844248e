"""Process control for the embedded tritonserver: finding the binary and the Python backend,
the process group and /proc readings (members, uid, listening sockets), prctl (PDEATHSIG, child
subreaper), and the checks that an unprivileged user can read what Triton loads."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import os
import pwd
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# The embedded server's backend directory (copies of the Python backend, the shim): build/triton
# under the working directory unless ECOMGEN_BUILD_DIR says otherwise. The package never assumes
# a source checkout.
BUILD_DIR = Path(os.environ.get("ECOMGEN_BUILD_DIR", "build")).absolute() / "triton"

# Backends implemented in C++: a repository with only these (and ensembles) needs no Python stub.
NATIVE_BACKENDS = frozenset(
    {"onnxruntime", "tensorrt", "openvino", "pytorch", "tensorflow", "identity", "repeat", "square", "fil"}
)
STUB_NAME = "triton_python_backend_stub"
# The region of each stub: triton_<backend>_backend_shm_region_<uuid> (python, or a Python-based
# backend such as ecomgen's), a file in /dev/shm.
SHM_REGION_RE = re.compile(r"triton_[A-Za-z0-9_.-]+_backend_shm_region_[A-Za-z0-9_-]+")

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


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
    if LIBC.prctl(option, arg, 0, 0, 0) != 0:
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
