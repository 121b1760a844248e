"""A tiny self-contained model repository, test PKI, a launcher runner and a load generator.

The launcher's integration suites (L0_grpc, L0_secure_grpc, L0_lifecycle, test_launcher) use
these instead of the real models: two Python-backend models of a few lines each start in about a
second, so every suite can afford a handful of server starts.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecomgen.launcher import Launched, group_members, proc_cmdline, proc_stat
from tests.conftest import REPO_ROOT

_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: {max_batch}
input {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }}
output {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }}
instance_group {{ count: 1 kind: KIND_CPU }}
dynamic_batching {{
  max_queue_delay_microseconds: 1000
  default_queue_policy {{ max_queue_size: {max_queue} }}
}}
parameters {{ key: "delay_s" value {{ string_value: "{delay_s}" }} }}
"""

# OUTPUT0 = INPUT0 + 1, after sleeping `delay_s` once per batch (the "slow" model makes load).
_MODEL = """\
import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay_s = float(params.get("delay_s", {}).get("string_value", "0"))

    def execute(self, requests):
        time.sleep(self.delay_s)
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x + 1)]))
        return out
"""

MODELS = ("add_one", "slow")


def write_repository(root: Path, slow_delay_s: float = 0.2) -> Path:
    """``add_one`` (instant) and ``slow`` (sleeps per batch); both dynamic-batched, bounded queues."""
    for name, max_batch, max_queue, delay in (("add_one", 8, 32, 0.0), ("slow", 4, 64, slow_delay_s)):
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(
            _CONFIG.format(name=name, max_batch=max_batch, max_queue=max_queue, delay_s=delay)
        )
        (root / name / "1" / "model.py").write_text(_MODEL)
    return root


def infer_add_one(
    client: object, values: list[float], model: str = "add_one", **kwargs: object
) -> np.ndarray:
    """One request through a tritonclient gRPC client; returns OUTPUT0."""
    import tritonclient.grpc as grpcclient

    x = np.asarray([values], dtype=np.float32)
    inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], **kwargs)  # type: ignore[attr-defined]
    return np.asarray(result.as_numpy("OUTPUT0"))


# --- process checks --------------------------------------------------------------------------------


def alive(pids: list[int] | set[int]) -> list[int]:
    """The pids that still run (zombies count as dead)."""
    out = []
    for pid in pids:
        st = proc_stat(pid)
        if st is not None and st[0] != "Z":
            out.append(pid)
    return out


def wait_dead(pids: list[int] | set[int], timeout_s: float = 15.0) -> list[int]:
    """Wait until none of ``pids`` runs; the survivors (with their command lines) otherwise."""
    deadline = time.monotonic() + timeout_s
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)


def describe(pids: list[int]) -> str:
    return "; ".join(f"{p}: {' '.join(proc_cmdline(p))[:120]}" for p in pids)


def is_stub(pid: int) -> bool:
    cmd = proc_cmdline(pid)
    return bool(cmd) and cmd[0].endswith("triton_python_backend_stub")


def group_of(triton_pid: int) -> set[int]:
    """tritonserver and its Python stubs (its process group: the launcher makes Triton a session leader)."""
    return set(group_members(triton_pid))


# --- test PKI --------------------------------------------------------------------------------------


@dataclass
class Pki:
    root: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # another CA, trusted by nobody
    rogue_client_cert: Path
    rogue_client_key: Path


def make_pki(root: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a rogue CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def build(subject: str, issuer: x509.Name | None, pub: object, signer: object, **kind: object) -> object:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        b = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(pub)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
        )
        if kind.get("ca"):
            b = b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        else:
            b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        if kind.get("server"):
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        if kind.get("client"):
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return b.sign(signer, hashes.SHA256())  # type: ignore[arg-type]

    def write(path: Path, cert: object = None, private: object = None) -> Path:
        if cert is not None:
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))  # type: ignore[attr-defined]
        else:
            data = private.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            path.write_bytes(data)
            path.chmod(0o600)
        return path

    root.mkdir(parents=True, exist_ok=True)
    ca_key, rogue_key = key(), key()
    ca = build("ecomgen test CA", None, ca_key.public_key(), ca_key, ca=True)
    rogue = build("rogue CA", None, rogue_key.public_key(), rogue_key, ca=True)
    ca_name = ca.subject  # type: ignore[attr-defined]
    rogue_name = rogue.subject  # type: ignore[attr-defined]
    s_key, c_key, r_key = key(), key(), key()
    server = build("localhost", ca_name, s_key.public_key(), ca_key, server=True)
    client = build("backend-service", ca_name, c_key.public_key(), ca_key, client=True)
    rogue_client = build("backend-service", rogue_name, r_key.public_key(), rogue_key, client=True)
    return Pki(
        root=root,
        ca=write(root / "ca.crt", ca),
        server_cert=write(root / "server.crt", server),
        server_key=write(root / "server.key", private=s_key),
        client_cert=write(root / "client.crt", client),
        client_key=write(root / "client.key", private=c_key),
        rogue_ca=write(root / "rogue-ca.crt", rogue),
        rogue_client_cert=write(root / "rogue-client.crt", rogue_client),
        rogue_client_key=write(root / "rogue-client.key", private=r_key),
    )


# --- the launcher as a user runs it ----------------------------------------------------------------


class Launcher(Launched):
    """``python -m ecomgen.launcher`` in a child process, started at once, its output collected line by
    line (``ecomgen.launcher.spawn.Launched``); ``close()`` kills it (SIGKILL) if it still runs."""

    def __init__(
        self, repository: Path, *flags: str, env: dict[str, str] | None = None, ports: list[int] | None = None
    ):
        super().__init__(repository, *flags, ports=ports, env=env, cwd=REPO_ROOT, ready_timeout_s=60.0)
        self.start()

    def close(self) -> None:
        self.kill()


@contextlib.contextmanager
def launcher(repository: Path, *flags: str, ports: list[int] | None = None) -> Iterator[Launcher]:
    run = Launcher(repository, *flags, ports=ports)
    try:
        yield run
    finally:
        run.close()


def root_flags() -> list[str]:
    """As root (this machine, CI): the launcher would drop to nobody, which cannot read a pytest
    tmp dir; the suites that are not about the drop allow the fallback to root."""
    return ["--allow-root"] if os.geteuid() == 0 else []


# --- load -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    start: float
    end: float
    status: str  # "OK" or the gRPC status name


@dataclass
class Load:
    """Threads sending requests to one model back to back until stopped."""

    url: str
    model: str = "slow"
    threads: int = 4
    timeout_s: float = 30.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self, seed: int) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(self.url)
        i = 0
        try:
            while not self._stop.is_set():
                i += 1
                t0 = time.monotonic()
                try:
                    out = infer_add_one(
                        client, [float(seed), float(i)], self.model, client_timeout=self.timeout_s
                    )
                    status = "OK" if out.tolist() == [[seed + 1.0, i + 1.0]] else "WRONG"
                except InferenceServerException as e:
                    status = str(e.status()).replace("StatusCode.", "")
                    time.sleep(0.05)  # a down server answers at once: do not spin
                self.outcomes.append(Outcome(t0, time.monotonic(), status))
        finally:
            client.close()

    def start(self) -> Load:
        self._workers = [
            threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(self.threads)
        ]
        for w in self._workers:
            w.start()
        return self

    def stop(self, timeout_s: float) -> list[threading.Thread]:
        """Stop and join; the threads still stuck after ``timeout_s`` (must be none)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for w in self._workers:
            w.join(max(0.0, deadline - time.monotonic()))
        return [w for w in self._workers if w.is_alive()]

    def ok_between(self, t0: float, t1: float = float("inf")) -> int:
        return sum(1 for o in list(self.outcomes) if o.status == "OK" and t0 <= o.end <= t1)

    def wait_ok(self, n: int, after: float = 0.0, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.ok_between(after) < n:
            if time.monotonic() > deadline:
                seen = sorted({o.status for o in self.outcomes})
                raise AssertionError(f"fewer than {n} successful requests in {timeout_s} s (statuses {seen})")
            time.sleep(0.05)
