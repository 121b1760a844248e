"""gRPC over TLS and mutual TLS, with HTTP off (readiness is then checked over TLS gRPC).

Mirrors Triton qa/L0_secure_grpc: a CA, server and client certificates made at test time; a TLS
client succeeds, while plaintext clients and clients that trust another CA (or, with mutual TLS,
present no certificate or one from another CA) fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ecomgen.launcher import ServerConfig, TritonServer, listening_sockets, proc_uid
from tests.conftest import free_port
from tests.integration.launcher_fixtures import Pki, infer_add_one, launcher, make_pki, write_repository

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("tls_repo"))


def _config(repository: Path, pki: Pki, **kw: object) -> ServerConfig:
    return ServerConfig(
        repository,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        http=False,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def tls_server(
    repository: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    log = tmp_path_factory.mktemp("tls_log") / "triton.log"
    with TritonServer(_config(repository, pki, tls_ca=pki.ca), log=log) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(
    repository: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    log = tmp_path_factory.mktemp("mtls_log") / "triton.log"
    config = _config(
        repository,
        pki,
        tls_ca=pki.ca,
        tls_client_auth=True,
        # The server certificate is serverAuth-only: the launcher probes with a client identity.
        tls_probe_cert=pki.client_cert,
        tls_probe_key=pki.client_key,
    )
    with TritonServer(config, log=log) as server:
        yield server


def _client(url: str, **tls: object) -> grpcclient.InferenceServerClient:
    paths = {k: str(v) for k, v in tls.items() if v is not None}
    return grpcclient.InferenceServerClient(url, ssl=bool(tls), **paths)  # type: ignore[arg-type]


def _fails(client: grpcclient.InferenceServerClient) -> str:
    with pytest.raises(InferenceServerException) as e:
        infer_add_one(client, [1.0], client_timeout=5)
    client.close()
    return str(e.value)


def test_tls_client_succeeds(tls_server: TritonServer, pki: Pki) -> None:
    # 127.0.0.1 is in the server certificate's subjectAltName: no name override needed.
    with _client(tls_server.grpc_url, root_certificates=pki.ca) as c:
        assert infer_add_one(c, [1.0, 41.0]).tolist() == [[2.0, 42.0]]
        assert c.is_server_ready()


def test_plaintext_client_fails(tls_server: TritonServer) -> None:
    assert "UNAVAILABLE" in _fails(_client(tls_server.grpc_url))


def test_client_that_trusts_another_ca_fails(tls_server: TritonServer, pki: Pki) -> None:
    assert "UNAVAILABLE" in _fails(_client(tls_server.grpc_url, root_certificates=pki.rogue_ca))


def test_http_is_off_and_grpc_stays_on_loopback(tls_server: TritonServer) -> None:
    assert tls_server.process is not None
    c = tls_server.config
    sockets = listening_sockets(tls_server.process.pid)
    assert sockets == sorted({("127.0.0.1", c.grpc_port), ("127.0.0.1", c.metrics_port)}), sockets
    assert "--allow-http=false" in tls_server.command()


def test_certificate_copies_are_removed_once_ready(tls_server: TritonServer) -> None:
    """Triton read its certificate and key at startup; no copy stays for a stub to read."""
    runtime = tls_server._runtime_dir
    assert runtime is not None and runtime.is_dir()
    assert not list(runtime.glob("tls-*")), list(runtime.iterdir())


def test_mutual_tls_client_with_certificate_succeeds(mtls_server: TritonServer, pki: Pki) -> None:
    tls = {"root_certificates": pki.ca, "private_key": pki.client_key, "certificate_chain": pki.client_cert}
    with _client(mtls_server.grpc_url, **tls) as c:
        assert infer_add_one(c, [2.0]).tolist() == [[3.0]]


def test_mutual_tls_rejects_a_client_without_certificate(mtls_server: TritonServer, pki: Pki) -> None:
    assert "UNAVAILABLE" in _fails(_client(mtls_server.grpc_url, root_certificates=pki.ca))


def test_mutual_tls_rejects_a_certificate_from_another_ca(mtls_server: TritonServer, pki: Pki) -> None:
    rogue = {
        "root_certificates": pki.ca,
        "private_key": pki.rogue_client_key,
        "certificate_chain": pki.rogue_client_cert,
    }
    assert "UNAVAILABLE" in _fails(_client(mtls_server.grpc_url, **rogue))


def test_mutual_tls_rejects_plaintext(mtls_server: TritonServer) -> None:
    assert "UNAVAILABLE" in _fails(_client(mtls_server.grpc_url))


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_launcher_serves_tls_as_nobody_with_a_key_only_root_can_read(pki: Pki) -> None:
    """`ecomgen serve` flags end to end: the key stays 0600 root in a 0700 directory, and
    tritonserver, running as nobody, still gets it (a private copy, removed once ready)."""
    assert stat.S_IMODE(pki.server_key.stat().st_mode) == 0o600
    public = Path(tempfile.mkdtemp(prefix="ecomgen-test-"))
    try:
        public.chmod(0o755)
        (public / "empty").mkdir(mode=0o755)  # no Python models: only tritonserver runs as nobody
        tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-ca", str(pki.ca)]
        with launcher(public / "empty", *tls, "--no-http") as run:
            _, pid = run.wait_ready()
            assert proc_uid(pid) == 65534
            assert "gRPC uses TLS" in run.output() and "HTTP is off" in run.output()
            with _client(run.grpc_url, root_certificates=pki.ca) as c:
                assert c.is_server_ready()
            assert "UNAVAILABLE" in _fails(_client(run.grpc_url))
            run.proc.send_signal(signal.SIGTERM)
            assert run.wait(60) == 0
    finally:
        shutil.rmtree(public)
