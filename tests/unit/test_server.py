"""The launcher without a server: the command line it builds, its flags, checks and exit codes."""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecomgen import launcher as srv
from ecomgen.launcher import (
    ADMIN_APIS,
    EXIT_CODES_HELP,
    EXIT_CONFIG,
    EXIT_DRAIN,
    EXIT_OK,
    ConfigError,
    RestartPolicy,
    RunAs,
    ServerConfig,
    TritonServer,
    add_serve_arguments,
    admin_headers,
    client_host,
    config_from_args,
    describe_returncode,
    exit_code_after_stop,
    group_members,
    is_crash,
    listening_sockets,
    read_key,
    repository_needs_python,
    security_summary,
    unusable_paths,
)

KEY = "k" * 24
STATS = "s" * 24


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "config.pbtxt").write_text('name: "m"\nbackend: "python"\n')
    return tmp_path


def flags(cmd: list[str], name: str) -> list[str]:
    return [a.split("=", 1)[1] for a in cmd if a.startswith(f"--{name}=")]


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    return p.parse_args(list(argv))


# --- the command line -------------------------------------------------------------------------------


def test_defaults_bind_loopback_and_restrict_the_admin_apis(repo: Path) -> None:
    cmd = TritonServer(ServerConfig(repo, admin_key=KEY)).command()
    for name in ("grpc-address", "http-address", "metrics-address"):
        assert flags(cmd, name) == ["127.0.0.1"], name
    restricted = f"{','.join(ADMIN_APIS)}:admin-key={KEY}"
    assert flags(cmd, "grpc-restricted-protocol") == [restricted]
    # HTTP also locks inference (JSON wraps out-of-range integers; gRPC is the inference protocol),
    # behind a header that says so and a key nobody holds: the admin key does not unlock it.
    admin, inference = flags(cmd, "http-restricted-api")
    assert admin == restricted
    name, _, lock = inference.removeprefix("inference:").partition("=")
    assert name == "http-inference-is-off-use-grpc" and lock != KEY and len(lock) >= 32
    assert set(ADMIN_APIS) == {"shared-memory", "model-repository", "logging", "trace"}
    # The hardened flags stay; explicit model control lets the launcher reload a dead model.
    for f in (
        "--model-control-mode=explicit",
        "--load-model=*",
        "--strict-readiness=true",
        "--exit-on-error=true",
    ):
        assert f in cmd
    assert "--disable-auto-complete-config" in cmd and flags(cmd, "exit-timeout-secs") == ["30"]
    assert "--grpc-use-ssl=true" not in cmd


def test_without_a_key_the_admin_apis_get_a_random_one(repo: Path) -> None:
    a, b = TritonServer(ServerConfig(repo)), TritonServer(ServerConfig(repo))
    assert a.admin_key_generated and a.admin_key != b.admin_key and len(a.admin_key) >= 32
    assert flags(a.command(), "grpc-restricted-protocol")[0].endswith(f"admin-key={a.admin_key}")


def test_the_stats_key_is_a_separate_group(repo: Path) -> None:
    cmd = TritonServer(ServerConfig(repo, admin_key=KEY, stats_key=STATS)).command()
    assert flags(cmd, "grpc-restricted-protocol")[1] == f"statistics:stats-key={STATS}"
    assert flags(cmd, "http-restricted-api")[1] == f"statistics:stats-key={STATS}"


def test_no_http_turns_http_off_and_keeps_metrics(repo: Path) -> None:
    cmd = TritonServer(ServerConfig(repo, http=False)).command()
    assert "--allow-http=false" in cmd
    assert not flags(cmd, "http-restricted-api") and not flags(cmd, "http-port")
    assert flags(cmd, "metrics-address") == ["127.0.0.1"]
    assert "--allow-metrics=false" in TritonServer(ServerConfig(repo, metrics=False)).command()


@pytest.mark.parametrize(
    ("address", "grpc", "http", "url"),
    [
        ("0.0.0.0", "0.0.0.0", "0.0.0.0", "127.0.0.1"),
        ("10.1.2.3", "10.1.2.3", "10.1.2.3", "10.1.2.3"),
        # Triton's HTTP servers take "ipv6:<addr>"; "ipv6:[::1]" silently binds every interface.
        ("::1", "[::1]", "ipv6:::1", "[::1]"),
        ("::", "[::]", "ipv6:::", "[::1]"),
    ],
)
def test_address_forms(repo: Path, address: str, grpc: str, http: str, url: str) -> None:
    server = TritonServer(ServerConfig(repo, address=address))
    cmd = server.command()
    assert flags(cmd, "grpc-address") == [grpc]
    assert flags(cmd, "http-address") == flags(cmd, "metrics-address") == [http]
    assert server.grpc_url == f"{url}:8001" and server.http_url == f"http://{url}:8000"
    assert client_host(address) == url


def test_tls_flags(repo: Path, tmp_path: Path) -> None:
    c, k, ca = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    cmd = TritonServer(ServerConfig(repo, tls_cert=c, tls_key=k)).command()
    assert "--grpc-use-ssl=true" in cmd and flags(cmd, "grpc-server-cert") == [str(c)]
    assert flags(cmd, "grpc-server-key") == [str(k)] and "--grpc-use-ssl-mutual=true" not in cmd
    mutual = TritonServer(
        ServerConfig(repo, tls_cert=c, tls_key=k, tls_ca=ca, tls_client_auth=True)
    ).command()
    assert "--grpc-use-ssl-mutual=true" in mutual and flags(mutual, "grpc-root-cert") == [str(ca)]


def test_redact_hides_every_key(repo: Path) -> None:
    server = TritonServer(ServerConfig(repo, admin_key=KEY, stats_key=STATS))
    text = " ".join(server.redact(server.command()))
    # Admin and stats keys on gRPC and HTTP, and the lock of HTTP inference.
    assert KEY not in text and STATS not in text and text.count("<redacted>") == 5


def test_environment_drops_the_key_variables(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECOMGEN_ADMIN_KEY", KEY)
    monkeypatch.setenv("ECOMGEN_STATS_KEY", STATS)
    env = TritonServer(ServerConfig(repo)).environment()
    assert "ECOMGEN_ADMIN_KEY" not in env and "ECOMGEN_STATS_KEY" not in env
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_admin_headers() -> None:
    assert admin_headers(KEY) == {"triton-grpc-protocol-admin-key": KEY}
    assert admin_headers(KEY, "http") == {"admin-key": KEY}
    assert admin_headers(KEY, "http", "stats-key") == {"stats-key": KEY}


# --- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"address": "localhost"}, "must be an IPv4 or IPv6 address"),
        ({"address": "::ffff:127.0.0.1"}, "use the IPv4 form"),
        ({"admin_apis": ("shared-memory", "model-reposit")}, "unknown API(s) model-reposit"),
        ({"admin_apis": ("logging", "logging")}, "listed twice"),
        ({"admin_apis": ("health",)}, "health must stay open"),
        ({"admin_apis": ("statistics",), "stats_key": STATS}, "both the admin key and the stats key"),
        ({"admin_key": "short"}, "at least 16 characters"),
        ({"admin_key": "with space 0123456789"}, "printable ASCII"),
        ({"admin_key": KEY, "stats_key": KEY}, "must differ"),
        ({"http_port": 8001}, "ports must differ"),
        ({"grpc_port": 70000}, "not in 1..65535"),
        ({"tls_cert": Path("c")}, "both --tls-cert and --tls-key"),
        ({"tls_client_auth": True}, "need --tls-cert"),
        ({"tls_cert": Path("c"), "tls_key": Path("k"), "tls_client_auth": True}, "needs --tls-ca"),
        ({"tls_cert": Path("c"), "tls_key": Path("k"), "tls_probe_cert": Path("p")}, "both --tls-probe"),
    ],
)
def test_validate_rejects(repo: Path, kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ServerConfig(repo, **kw).validate()  # type: ignore[arg-type]


def test_validate_rejects_a_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        ServerConfig(tmp_path / "nope").validate()


def test_metrics_port_may_repeat_when_metrics_are_off(repo: Path) -> None:
    ServerConfig(repo, metrics_port=8001, metrics=False).validate()
    ServerConfig(repo, http_port=8001, http=False).validate()


# --- TLS material -----------------------------------------------------------------------------------


def _cert(
    tmp: Path, name: str, *, issuer: tuple[object, object] | None = None, eku: str | None = None
) -> tuple:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_name, signer_key = issuer if issuer else (subject, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_name)  # type: ignore[arg-type]
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{name}.example")]), critical=False)
    )
    if eku:
        oid = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}[eku]
        b = b.add_extension(x509.ExtendedKeyUsage([oid]), critical=False)
    cert = b.sign(signer_key, hashes.SHA256())  # type: ignore[arg-type]
    cpath, kpath = tmp / f"{name}.crt", tmp / f"{name}.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cpath, kpath, (subject, key)


def test_load_tls_checks_the_files(repo: Path, tmp_path: Path) -> None:
    crt, key, _ = _cert(tmp_path, "server")
    _, other_key, _ = _cert(tmp_path, "other")
    material = ServerConfig(repo, tls_cert=crt, tls_key=key).load_tls()
    assert material is not None and material.target_name == "server.example"
    assert material.probe_root == crt.read_bytes()  # self-signed: it is its own root
    with pytest.raises(ConfigError, match="does not belong to certificate"):
        ServerConfig(repo, tls_cert=crt, tls_key=other_key).load_tls()
    with pytest.raises(ConfigError, match="cannot read the TLS key"):
        ServerConfig(repo, tls_cert=crt, tls_key=tmp_path / "missing.key").load_tls()
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        ServerConfig(repo, tls_cert=key, tls_key=key).load_tls()
    with pytest.raises(ConfigError, match="is not a PEM private key"):
        ServerConfig(repo, tls_cert=crt, tls_key=crt).load_tls()


def test_load_tls_rejects_an_encrypted_key(repo: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    crt, key, (_, private) = _cert(tmp_path, "server")
    key.write_bytes(
        private.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError, match="is encrypted"):
        ServerConfig(repo, tls_cert=crt, tls_key=key).load_tls()


def test_readiness_over_tls_needs_a_way_to_verify_and_authenticate(repo: Path, tmp_path: Path) -> None:
    ca_crt, _, ca = _cert(tmp_path, "ca")
    crt, key, _ = _cert(tmp_path, "server", issuer=ca, eku="server")
    probe_crt, probe_key, _ = _cert(tmp_path, "probe", issuer=ca, eku="client")
    base = {"tls_cert": crt, "tls_key": key, "http": False}
    with pytest.raises(ConfigError, match="pass --tls-ca"):  # CA-signed: the probe needs the CA
        ServerConfig(repo, **base).load_tls()  # type: ignore[arg-type]
    assert ServerConfig(repo, tls_ca=ca_crt, **base).load_tls() is not None  # type: ignore[arg-type]
    mutual = {**base, "tls_ca": ca_crt, "tls_client_auth": True}
    with pytest.raises(ConfigError, match="does not allow clientAuth"):
        ServerConfig(repo, **mutual).load_tls()  # type: ignore[arg-type]
    m = ServerConfig(repo, tls_probe_cert=probe_crt, tls_probe_key=probe_key, **mutual).load_tls()  # type: ignore[arg-type]
    assert m is not None and m.probe_cert == probe_crt.read_bytes() and m.probe_root == ca_crt.read_bytes()
    # With HTTP on, readiness goes over HTTP: no probe identity needed.
    assert ServerConfig(repo, **{**mutual, "http": True}).load_tls() is not None  # type: ignore[arg-type]


# --- keys -------------------------------------------------------------------------------------------


def test_read_key_from_file_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECOMGEN_ADMIN_KEY", raising=False)
    assert read_key(None, "ECOMGEN_ADMIN_KEY", "admin key") == (None, "")
    monkeypatch.setenv("ECOMGEN_ADMIN_KEY", KEY)
    assert read_key(None, "ECOMGEN_ADMIN_KEY", "admin key") == (KEY, "$ECOMGEN_ADMIN_KEY")
    f = tmp_path / "admin.key"
    f.write_text(STATS + "\n")
    f.chmod(0o600)
    assert read_key(f, "ECOMGEN_ADMIN_KEY", "admin key") == (STATS, f"file {f}")
    f.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16"):
        read_key(f, "ECOMGEN_ADMIN_KEY", "admin key")
    with pytest.raises(ConfigError, match="cannot read the admin key file"):
        read_key(tmp_path / "missing", "ECOMGEN_ADMIN_KEY", "admin key")


def test_a_world_readable_key_file_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "admin.key"
    f.write_text(KEY)
    f.chmod(0o644)
    read_key(f, "X", "admin key")
    assert "readable by every user" in caplog.text
    caplog.clear()
    f.chmod(0o440)  # a Kubernetes secret with fsGroup: fine
    read_key(f, "X", "admin key")
    assert "readable" not in caplog.text
    assert KEY not in caplog.text


# --- flags --------------------------------------------------------------------------------------------


def test_flag_defaults(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECOMGEN_ADMIN_KEY", raising=False)
    monkeypatch.delenv("ECOMGEN_STATS_KEY", raising=False)
    opt = parse()
    assert (opt.address, opt.grpc_port, opt.http_port, opt.metrics_port) == ("127.0.0.1", 8001, 8000, 8002)
    assert (opt.on_crash, opt.max_crashes, opt.crash_window, opt.exit_timeout) == ("restart", 5, 300.0, 30)
    config, _ = config_from_args(opt, repo)
    assert config.address == "127.0.0.1" and config.http and config.metrics and not config.tls
    assert config.admin_key is None and config.admin_apis == ADMIN_APIS and config.stats_key is None
    assert config.user == ("nobody" if os.geteuid() == 0 else None)
    assert not config.allow_root
    config.validate()


def test_flags_to_config(repo: Path, tmp_path: Path) -> None:
    key = tmp_path / "admin.key"
    key.write_text(KEY)
    stats = tmp_path / "stats.key"
    stats.write_text(STATS)
    opt = parse(
        "--address", "0.0.0.0", "--no-http", "--no-metrics", "--admin-key-file", str(key),
        "--admin-apis", "shared-memory, logging", "--stats-key-file", str(stats),
        "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "ca", "--tls-client-auth",
        "--on-crash", "exit", "--exit-timeout", "5", "--allow-root",
    )  # fmt: skip
    config, sources = config_from_args(opt, repo)
    assert config.address == "0.0.0.0" and not config.http and not config.metrics
    assert config.admin_key == KEY and config.stats_key == STATS
    assert config.admin_apis == ("shared-memory", "logging")
    assert sources == {"admin": f"file {key}", "stats": f"file {stats}"}
    assert config.tls_client_auth and config.tls_ca == Path("ca") and config.exit_timeout_s == 5
    assert config.allow_root and opt.on_crash == "exit"


def test_help_documents_the_exit_codes() -> None:
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    text = p.format_help()
    assert EXIT_CODES_HELP in text
    for code in range(6):
        assert f"\n  {code}  " in EXIT_CODES_HELP


def test_security_summary_never_shows_a_key(repo: Path) -> None:
    server = TritonServer(ServerConfig(repo, admin_key=KEY, stats_key=STATS))
    text = "\n".join(security_summary(server, {"admin": "file /k", "stats": "$ECOMGEN_STATS_KEY"}))
    assert KEY not in text and STATS not in text
    assert "need header admin-key (gRPC: triton-grpc-protocol-admin-key); key from file /k" in text
    generated = "\n".join(security_summary(TritonServer(ServerConfig(repo)), {}))
    assert "random key nobody knows" in generated
    assert "open to every caller: health, metadata, inference, model-config, statistics" in generated
    assert "open to every caller: health, metadata, inference, model-config\n" in text + "\n"
    assert "gRPC is plaintext (no --tls-cert)" in generated
    exposed = "\n".join(security_summary(TritonServer(ServerConfig(repo, address="0.0.0.0")), {}))
    assert "WARNING: gRPC is plaintext on 0.0.0.0" in exposed


def test_serve_exits_2_on_a_bad_configuration(repo: Path) -> None:
    assert srv.serve(parse("--address", "example.com"), repo) == EXIT_CONFIG
    assert srv.serve(parse("--admin-apis", "health"), repo) == EXIT_CONFIG
    assert srv.serve(parse("--tls-cert", "missing.crt", "--tls-key", "missing.key"), repo) == EXIT_CONFIG


# --- supervision ---------------------------------------------------------------------------------------


def test_exit_codes_after_a_requested_stop() -> None:
    assert exit_code_after_stop(0) == EXIT_OK
    assert exit_code_after_stop(None) == EXIT_OK  # nothing was running
    assert exit_code_after_stop(-signal.SIGKILL) == EXIT_DRAIN  # killed after the grace period
    assert exit_code_after_stop(1) == EXIT_DRAIN


def test_what_counts_as_a_crash() -> None:
    assert not is_crash(0)  # a clean drain, whoever sent the SIGTERM
    assert (
        is_crash(1) and is_crash(-signal.SIGKILL) and is_crash(-signal.SIGBUS) and is_crash(-signal.SIGSEGV)
    )
    assert describe_returncode(-9) == "killed by SIGKILL" and describe_returncode(1) == "exit code 1"
    assert describe_returncode(None) == "still running"


def test_exit_codes_are_distinct() -> None:
    codes = [srv.EXIT_OK, srv.EXIT_CONFIG, srv.EXIT_STARTUP, srv.EXIT_CRASH, srv.EXIT_DRAIN]
    assert len(set(codes)) == len(codes) and 1 not in codes  # 1 is left to Python's own errors


def test_restart_backoff_doubles_is_capped_and_gives_up() -> None:
    policy = RestartPolicy(max_crashes=8, window_s=1000, base_delay_s=1, max_delay_s=30)
    delays = [policy.record_crash(float(t)) for t in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, None]


def test_restart_window_forgets_old_crashes() -> None:
    policy = RestartPolicy(max_crashes=2, window_s=60)
    assert policy.record_crash(0.0) == 1
    assert policy.record_crash(61.0) == 1  # the first crash left the window
    assert policy.record_crash(100.0) is None  # two within 60 s


# --- /proc helpers and the access check ----------------------------------------------------------


def test_listening_sockets_reports_what_is_bound() -> None:
    with socket.socket() as s4, socket.socket(socket.AF_INET6) as s6:
        s4.bind(("127.0.0.1", 0))
        s4.listen()
        s6.bind(("::1", 0))
        s6.listen()
        found = listening_sockets(os.getpid())
        assert ("127.0.0.1", s4.getsockname()[1]) in found
        assert ("::1", s6.getsockname()[1]) in found


def test_group_members_finds_a_whole_process_group() -> None:
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while len(group_members(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(group_members(proc.pid)) == 3 and proc.pid in group_members(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_repository_needs_python(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.pbtxt").write_text('platform: "ensemble"\n')
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.pbtxt").write_text('backend: "onnxruntime"\n')
    assert not repository_needs_python(tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.pbtxt").write_text('name: "c"\n  backend: "ecomgen"\n')
    assert repository_needs_python(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="checking access as another user needs root")
def test_unusable_paths_checks_as_the_target_user(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "f").write_text("x")
    nobody = RunAs.lookup("nobody")
    found = unusable_paths(nobody, [("d", private), ("r", private / "f"), ("x", Path("/bin/sh"))])
    assert found == [str(private), str(private / "f")]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_user_root_needs_allow_root(repo: Path) -> None:
    with pytest.raises(ConfigError, match="refusing to run tritonserver as root"):
        TritonServer(ServerConfig(repo, user="root")).resolve_user(repo)


def test_another_user_needs_root(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(srv.os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match="only root can run tritonserver as another user"):
        TritonServer(ServerConfig(repo, user="nobody")).resolve_user(repo)
    with pytest.raises(ConfigError, match="only root can run tritonserver as root"):
        TritonServer(ServerConfig(repo, user="root", allow_root=True)).resolve_user(repo)
