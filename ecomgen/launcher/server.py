"""``TritonServer``: one tritonserver process, secure by default (see the package docstring), with
start, readiness, stop/drain, the process-group cleanup and the stub processes it owns."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from ecomgen.launcher.config import EXIT_CRASH, STOP_MARGIN_S, ServerConfig
from ecomgen.launcher.process import (
    BUILD_DIR,
    LIBC,
    PR_SET_PDEATHSIG,
    SHM_REGION_RE,
    STUB_NAME,
    ConfigError,
    RunAs,
    ServerError,
    describe_returncode,
    group_members,
    library_dirs,
    listening_sockets,
    prepare_backend_dir,
    proc_cmdline,
    proc_stat,
    runtime_checks,
    set_child_subreaper,
    tritonserver_binary,
    unusable_paths,
)
from ecomgen.launcher.security import (
    ADMIN_HEADER,
    ADMIN_KEY_ENV,
    HTTP_INFERENCE_OFF_HEADER,
    STATS_HEADER,
    STATS_KEY_ENV,
    TlsMaterial,
    client_host,
    parse_ip,
)
from ecomgen.serving.admission import remove_tables

log = logging.getLogger("ecomgen")


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
        self._inference_lock = secrets.token_urlsafe(32)
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
        return [k for k in (self.admin_key, self.config.stats_key, self._inference_lock) if k]

    def restriction_flags(self) -> list[str]:
        c = self.config
        groups = []
        if c.admin_apis:
            groups.append((c.admin_apis, ADMIN_HEADER, self.admin_key))
        if c.stats_key is not None:
            groups.append((("statistics",), STATS_HEADER, c.stats_key))
        flags = []
        for apis, header, key in groups:
            flags.append(f"--grpc-restricted-protocol={','.join(apis)}:{header}={key}")
            if c.http:
                flags.append(f"--http-restricted-api={','.join(apis)}:{header}={key}")
        if c.http and not c.http_inference:
            # HTTP inference is off: its own header, whose name says so, with a key nobody holds
            # (not the admin key: a refusal must not suggest that a key would unlock it).
            flags.append(
                f"--http-restricted-api=inference:{HTTP_INFERENCE_OFF_HEADER}={self._inference_lock}"
            )
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
        ip = parse_ip(c.address)
        # gRPC takes "[v6]"; Triton's HTTP servers take "ipv6:v6" (with brackets they bind to ::).
        grpc_address = str(ip) if ip.version == 4 else f"[{ip}]"
        http_address = str(ip) if ip.version == 4 else f"ipv6:{ip}"
        backend = backend_dir if backend_dir is not None else BUILD_DIR / "backends"
        cmd = [
            str(tritonserver_binary()),
            f"--model-repository={Path(c.repository).resolve()}",
            f"--backend-directory={backend}",
            # Explicit, with every model loaded at start: the repository API (behind the admin key)
            # lets the launcher reload a model whose process died (stubwatch.py).
            "--model-control-mode=explicit",
            "--load-model=*",
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
        remove_tables()  # admission tables left by servers that died without cleaning up
        cmd = self.command(backend_dir, self._write_tls_files())
        with contextlib.suppress(OSError):  # not fatal: killpg still covers the group
            set_child_subreaper()
        parent = os.getpid()

        def in_child() -> None:  # runs after setsid and the uid/gid change, just before exec
            LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
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

    def ensembles(self) -> list[str]:
        """The ensemble models of the repository (read from their configs)."""
        return sorted(
            p.parent.name
            for p in Path(self.config.repository).glob("*/config.pbtxt")
            if 'platform: "ensemble"' in p.read_text()
        )

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
        if self.process is not None:
            remove_tables(self.process.pid)  # the ensembles' admission tickets (admission.py)
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
