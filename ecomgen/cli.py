"""``ecomgen build`` writes the model repository; ``ecomgen serve`` runs it on the embedded Triton.

python -m ecomgen serve                      # build if needed, serve on 8001/8000/8002
python -m ecomgen serve --grpc-port 9001 --http-port 9000 --metrics-port 9002
python -m ecomgen build                      # export ONNX + write configs only
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from ecomgen.server import REPO_ROOT, ServerConfig, ServerError, TritonServer
from ecomgen_client.specs import ENSEMBLES, SPECS

log = logging.getLogger("ecomgen")


def build(repository: Path, force: bool = False) -> None:
    """Export every model's ONNX file (when stale) and write the cpu and gpu configs."""
    from export.onnx import (
        check_parity,
        ensemble_checkpoints,
        export_ensemble,
        export_network,
        load_trained,
        onnx_path,
    )
    from export.repository import write_repository

    for target in ("cpu", "gpu"):
        write_repository(repository, target)
    for spec in SPECS.values():
        out = onnx_path(spec, repository)
        checkpoint = REPO_ROOT / spec.checkpoint
        if not force and out.exists() and out.stat().st_mtime >= checkpoint.stat().st_mtime:
            log.info("%s: %s is up to date", spec.name, out)
            continue
        model = load_trained(spec, checkpoint)
        export_network(model, spec.network, out)
        log.info("%s: %s", spec.name, check_parity(model, spec.network, out))
    for ensemble in ENSEMBLES.values():
        outs = [onnx_path(net, repository) for net in ensemble.networks]
        newest = max(p.stat().st_mtime for p in ensemble_checkpoints(ensemble))
        if not force and all(o.exists() and o.stat().st_mtime >= newest for o in outs):
            log.info("%s: ONNX files are up to date", ensemble.name)
            continue
        for name, report in export_ensemble(ensemble, repository).items():
            log.info("%s: %s", name, report)


def serve(opt: argparse.Namespace) -> int:
    if not opt.no_build:
        build(opt.repository)
    config = ServerConfig(
        repository=opt.repository / "cpu",
        grpc_port=opt.grpc_port,
        http_port=opt.http_port,
        metrics_port=opt.metrics_port,
        address=opt.address,
        log_verbose=opt.log_verbose,
    )
    server = TritonServer(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping tritonserver", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server.start()
    try:
        server.wait_ready(opt.ready_timeout)
        print(
            f"ecomgen: ready. gRPC {server.grpc_url}  HTTP {server.http_url}  "
            f"metrics http://{server.grpc_url.split(':')[0]}:{config.metrics_port}/metrics  "
            f"models: {', '.join([*SPECS, *ENSEMBLES, *(e.bytes_model for e in ENSEMBLES.values())])}  "
            "(Ctrl-C to stop)",
            flush=True,
        )
        while not stop.wait(0.5):
            if server.process is None or server.process.poll() is not None:
                log.error("tritonserver exited unexpectedly")
                return 1
        return 0
    except ServerError as e:
        log.error("%s", e)
        return 1
    finally:
        code = server.stop()
        log.info("tritonserver stopped (exit code %s)", code)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="ecomgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the cpu repository on the embedded tritonserver")
    s.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--metrics-port", type=int, default=8002)
    s.add_argument("--address", default="0.0.0.0", help="address to bind the three endpoints to")
    s.add_argument("--log-verbose", type=int, default=0)
    s.add_argument("--ready-timeout", type=float, default=180.0)
    s.add_argument("--no-build", action="store_true", help="serve the repository as it is")
    b = sub.add_parser("build", help="export ONNX files and write the cpu and gpu repositories")
    b.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    b.add_argument("--force", action="store_true", help="re-export even when up to date")
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    if opt.command == "build":
        build(opt.repository, force=opt.force)
        return 0
    return serve(opt)
