"""Restricted protocols (gRPC) and APIs (HTTP) on the launcher's default configuration.

Regression tests for issue 9:
- finding 3: registering a 4 KiB /dev/shm file as a 64 MiB region, and registering the Python
  backend's own region, must not be open to any caller (both rejected; the server stays up);
- finding 4: ``POST /v2/logging {"log_file": ...}`` must not create a file;
- finding 5: every port binds 127.0.0.1 only by default (not 0.0.0.0, not ::).
Without the admin key the shared-memory, model-repository, logging and trace APIs answer "This
protocol is restricted" (gRPC) / "This API is restricted" (HTTP 403); with it they reach Triton's
real handlers. Inference, health, metadata, model config and statistics need no key.
"""

from __future__ import annotations

import json
import os
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from ecomgen.launcher import (
    ADMIN_APIS,
    ServerConfig,
    TritonServer,
    admin_headers,
    listening_sockets,
)
from tests.conftest import free_port
from tests.integration.launcher_fixtures import infer_add_one, is_stub, write_repository

pytestmark = pytest.mark.integration

ADMIN_KEY = "test-admin-key-0123456789abcdef"
GRPC_RESTRICTED = "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"
HTTP_RESTRICTED = "This API is restricted, expecting header 'admin-key'"


@dataclass
class Served:
    server: TritonServer
    log: Path
    grpc: grpcclient.InferenceServerClient
    http: httpclient.InferenceServerClient
    tmp: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("restricted")
    repo = write_repository(tmp / "repo")
    # The launcher's defaults: no address given (loopback), restricted admin APIs, stats open.
    config = ServerConfig(
        repo, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(), admin_key=ADMIN_KEY
    )
    log = tmp / "triton.log"
    with TritonServer(config, log=log) as server:
        g = grpcclient.InferenceServerClient(server.grpc_url)
        h = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        yield Served(server, log, g, h, tmp)
        g.close()
        h.close()


GRPC_KEY = admin_headers(ADMIN_KEY, "grpc")
HTTP_KEY = admin_headers(ADMIN_KEY, "http")
WRONG_GRPC = admin_headers("wrong-key-0123456789abcdef", "grpc")

# One call per restricted API family, as a hostile caller would make them.
GRPC_CALLS: dict[str, Callable[[grpcclient.InferenceServerClient, dict[str, str] | None], Any]] = {
    "shm-register": lambda c, h: c.register_system_shared_memory("r", "/ecomgen_probe", 4096, headers=h),
    "shm-status": lambda c, h: c.get_system_shared_memory_status(headers=h),
    "shm-unregister": lambda c, h: c.unregister_system_shared_memory(headers=h),
    "repository-index": lambda c, h: c.get_model_repository_index(headers=h),
    "repository-load": lambda c, h: c.load_model("add_one", headers=h),
    "repository-unload": lambda c, h: c.unload_model("add_one", headers=h),
    "logging-get": lambda c, h: c.get_log_settings(headers=h),
    "logging-update": lambda c, h: c.update_log_settings({"log_verbose_level": 0}, headers=h),
    "trace-get": lambda c, h: c.get_trace_settings(headers=h),
    "trace-update": lambda c, h: c.update_trace_settings(settings={"trace_rate": "1000"}, headers=h),
}
HTTP_CALLS: dict[str, Callable[[httpclient.InferenceServerClient, dict[str, str] | None], Any]] = {
    "shm-register": lambda c, h: c.register_system_shared_memory("r", "/ecomgen_probe", 4096, headers=h),
    "shm-status": lambda c, h: c.get_system_shared_memory_status(headers=h),
    "shm-unregister": lambda c, h: c.unregister_system_shared_memory(headers=h),
    "repository-index": lambda c, h: c.get_model_repository_index(headers=h),
    "repository-load": lambda c, h: c.load_model("add_one", headers=h),
    "repository-unload": lambda c, h: c.unload_model("add_one", headers=h),
    "logging-get": lambda c, h: c.get_log_settings(headers=h),
    "logging-update": lambda c, h: c.update_log_settings({"log_verbose_level": 0}, headers=h),
    "trace-get": lambda c, h: c.get_trace_settings(headers=h),
    "trace-update": lambda c, h: c.update_trace_settings(settings={"trace_rate": "1000"}, headers=h),
}


def _error(call: Callable[[], Any]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as e:
        call()
    return e.value


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_served_triton_is_the_pinned_version(served: Served) -> None:
    """Issue 9 finding 1: nvidia-pytriton 0.7.0 ships Triton 2.51.0."""
    assert served.http.get_server_metadata()["version"] == "2.51.0"


def test_admin_apis_are_the_documented_ones() -> None:
    assert set(ADMIN_APIS) == {"shared-memory", "model-repository", "logging", "trace"}


@pytest.mark.parametrize("name", sorted(GRPC_CALLS))
def test_grpc_admin_api_is_restricted_without_the_key(served: Served, name: str) -> None:
    for headers in (None, WRONG_GRPC, HTTP_KEY):  # no key, a wrong key, the HTTP header name
        e = _error(lambda h=headers: GRPC_CALLS[name](served.grpc, h))
        assert GRPC_RESTRICTED in str(e), e
        # Triton 2.51 answers a restricted gRPC call with UNAVAILABLE (a retryable code).
        assert e.status() == "StatusCode.UNAVAILABLE"
    assert served.grpc.is_server_live()


@pytest.mark.parametrize("name", sorted(HTTP_CALLS))
def test_http_admin_api_is_restricted_without_the_key(served: Served, name: str) -> None:
    for headers in (None, {"admin-key": "wrong-key-0123456789abcdef"}, GRPC_KEY):
        e = _error(lambda h=headers: HTTP_CALLS[name](served.http, h))
        assert HTTP_RESTRICTED in str(e) and e.status() == "403", e
    assert served.http.is_server_live()


def test_grpc_admin_key_reaches_the_real_handlers(served: Served) -> None:
    g = served.grpc
    assert [m.name for m in g.get_model_repository_index(headers=GRPC_KEY).models] == ["add_one", "slow"]
    # Explicit model control (the launcher reloads a model whose process died): with the key,
    # unload and load reach Triton; without it they are refused (the test above).
    before = set(served.server.stub_pids())
    g.unload_model("add_one", headers=GRPC_KEY)
    assert not g.is_model_ready("add_one")
    g.load_model("add_one", headers=GRPC_KEY)
    # The unloaded model's process exits on its own schedule: wait for it (a condition, not a sleep).
    deadline = time.monotonic() + 60
    while len(set(served.server.stub_pids())) != len(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(set(served.server.stub_pids())) == len(before)
    # A reload makes a new stub with a new shm region: the supervisor's stub watch protects it on
    # every change (stubwatch.py); this fixture has no supervisor, so do what it does.
    served.server.protect_regions()
    assert len(g.get_system_shared_memory_status(headers=GRPC_KEY).regions) == 0
    settings = g.update_log_settings({"log_verbose_level": 0}, headers=GRPC_KEY).settings
    assert settings["log_verbose_level"].uint32_param == 0
    assert g.get_trace_settings(headers=GRPC_KEY).settings["trace_rate"].value[0] == "1000"
    assert g.is_model_ready("add_one")


def test_http_admin_key_reaches_the_real_handlers(served: Served) -> None:
    h = served.http
    assert [m["name"] for m in h.get_model_repository_index(headers=HTTP_KEY)] == ["add_one", "slow"]
    assert h.get_system_shared_memory_status(headers=HTTP_KEY) == []
    assert h.get_log_settings(headers=HTTP_KEY)["log_file"] == ""
    assert h.get_trace_settings(headers=HTTP_KEY)["trace_rate"] == "1000"


def test_inference_health_metadata_config_and_statistics_need_no_key(served: Served) -> None:
    g, h = served.grpc, served.http
    assert g.is_server_live() and g.is_server_ready() and h.is_server_ready()
    assert infer_add_one(g, [1.0, 2.0]).tolist() == [[2.0, 3.0]]
    assert g.get_model_metadata("add_one").inputs[0].name == "INPUT0"
    assert h.get_model_metadata("add_one")["outputs"][0]["name"] == "OUTPUT0"
    assert g.get_model_config("add_one").config.max_batch_size == 8
    stats = g.get_inference_statistics("add_one").model_stats[0]
    assert stats.inference_stats.success.count >= 1


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_logging_api_cannot_create_files(served: Served, protocol: str) -> None:
    """Finding 4: a caller asks the server to log into a file of its choice."""
    target = served.tmp / f"pwned-{protocol}.log"
    settings = {"log_file": str(target)}
    if protocol == "grpc":
        e = _error(lambda: served.grpc.update_log_settings(settings))
        assert GRPC_RESTRICTED in str(e)
        # Even with the key Triton 2.51 refuses to move its log file over the network.
        e = _error(lambda: served.grpc.update_log_settings(settings, headers=GRPC_KEY))
    else:
        code, body = _post(f"{served.server.http_url}/v2/logging", settings)
        assert code == 403 and HTTP_RESTRICTED in body
        code, body = _post(f"{served.server.http_url}/v2/logging", settings, HTTP_KEY)
        assert code == 501, body  # Not Implemented
        e = InferenceServerException(body)
    assert "log file location can not be updated through network protocol" in str(e)
    assert not target.exists()
    assert served.grpc.is_server_live()


def test_trace_api_cannot_create_files(served: Served) -> None:
    target = served.tmp / "pwned-trace.json"
    code, body = _post(f"{served.server.http_url}/v2/trace/setting", {"trace_file": str(target)})
    assert code == 403 and HTTP_RESTRICTED in body
    e = _error(lambda: served.grpc.update_trace_settings(settings={"trace_file": str(target)}))
    assert GRPC_RESTRICTED in str(e)
    e = _error(
        lambda: served.grpc.update_trace_settings(settings={"trace_file": str(target)}, headers=GRPC_KEY)
    )
    assert "trace file location can not be updated through network protocol" in str(e)
    assert not target.exists()


@pytest.fixture
def small_shm_file() -> Iterator[str]:
    """A 4 KiB POSIX shared-memory object (finding 3 registered it as 64 MiB)."""
    name = f"/ecomgen_test_{os.getpid()}"
    fd = os.open(f"/dev/shm{name}", os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
    os.ftruncate(fd, 4096)
    os.close(fd)
    yield name
    os.unlink(f"/dev/shm{name}")


def test_oversized_shm_region_is_rejected_and_the_server_stays_up(
    served: Served, small_shm_file: str
) -> None:
    """Finding 3a: a 4 KiB file registered as a 64 MiB region, then read at offset 32 MiB,
    killed tritonserver with SIGBUS. Now the registration never reaches the shm manager."""
    big = 64 << 20
    for call in (
        lambda: served.grpc.register_system_shared_memory("big", small_shm_file, big),
        lambda: served.http.register_system_shared_memory("big", small_shm_file, big),
    ):
        assert "restricted" in str(_error(call))
    # Defence in depth: Triton 2.51 itself refuses the size mismatch even from an admin.
    e = _error(
        lambda: served.grpc.register_system_shared_memory("big", small_shm_file, big, headers=GRPC_KEY)
    )
    assert "invalid args" in str(e)
    x = np.zeros((1, 4), dtype=np.float32)
    inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_shared_memory("big", x.nbytes, offset=32 << 20)
    # Inference may name shm regions (it is open), but only registered ones exist.
    assert "Unable to find shared memory region: 'big'" in str(
        _error(lambda: served.grpc.infer("add_one", [inp]))
    )
    assert served.grpc.is_server_live()
    assert served.server.poll() is None


def test_python_backend_regions_cannot_be_registered(served: Served) -> None:
    """Finding 3b: the Python backend's own region (it carries other requests' tensors)."""
    regions = [a[2] for a in map(_cmdline, served.server.stub_pids()) if len(a) > 2]
    assert regions and all(r.startswith("triton_python_backend_shm_region_") for r in regions)
    for key in [f"/{r}" for r in regions] + ["/triton_python_backend_shm_region_1"]:
        for call in (
            lambda k=key: served.grpc.register_system_shared_memory("steal", k, 1 << 20),
            lambda k=key: served.http.register_system_shared_memory("steal", k, 1 << 20),
        ):
            assert "restricted" in str(_error(call))
    assert served.grpc.is_server_live()


def _cmdline(pid: int) -> list[str]:
    from ecomgen.launcher import proc_cmdline

    return proc_cmdline(pid)


def test_python_backend_regions_are_private_to_the_server_user(served: Served) -> None:
    """The stubs' shm regions carry request tensors; the Python backend creates them 0644."""
    regions = [Path("/dev/shm", a[2]) for a in map(_cmdline, served.server.stub_pids()) if len(a) > 2]
    assert len(regions) == 2
    for r in regions:
        assert stat.S_IMODE(r.stat().st_mode) == 0o600, r


def test_every_port_binds_loopback_only_by_default(served: Served) -> None:
    """Finding 5: HTTP and metrics bound 0.0.0.0 and gRPC bound every IPv4 and IPv6 interface."""
    c = served.server.config
    assert served.server.process is not None
    sockets = listening_sockets(served.server.process.pid)
    assert {port for _, port in sockets} == {c.grpc_port, c.http_port, c.metrics_port}
    assert {host for host, _ in sockets} == {"127.0.0.1"}, sockets


def test_the_key_is_never_logged(served: Served) -> None:
    assert served.log.exists() and served.log.stat().st_size > 0
    assert ADMIN_KEY not in served.log.read_text(errors="replace")
    assert all(ADMIN_KEY not in a for a in served.server.redact(served.server.command()))


def test_stubs_belong_to_the_server_process_group(served: Served) -> None:
    stubs = served.server.stub_pids()
    assert len(stubs) == 2 and all(map(is_stub, stubs))
    assert served.server.process is not None
    assert os.getpgid(served.server.process.pid) == served.server.process.pid
