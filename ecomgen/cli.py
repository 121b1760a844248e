"""``ecomgen build`` writes the model repository; ``ecomgen serve`` runs it on the embedded Triton.

python -m ecomgen serve                      # build if needed, serve on 127.0.0.1:8001/8000/8002
python -m ecomgen serve --grpc-port 9001 --http-port 9000 --metrics-port 9002
python -m ecomgen build                      # export ONNX, calibrate the CPU runtimes, write configs
python -m ecomgen verify FILE...             # provenance of a generated image (XMP, C2PA, watermark)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ecomgen.registry import REGISTRY
from ecomgen.server import REPO_ROOT, add_serve_arguments, serve

log = logging.getLogger("ecomgen")
CALIBRATION_DIR = REPO_ROOT / "build" / "calibration"


def build(repository: Path, force: bool = False, calibrate: bool = True) -> None:
    """Write both targets' configs, export stale ONNX files, place them, choose CPU runtimes."""
    from export.onnx import ONNX_DIR, export_model, install_onnx, is_stale
    from export.repository import write_repository

    for target in ("cpu", "gpu"):
        write_repository(repository, target)
    for model in REGISTRY:
        if not model.networks:
            continue
        if not force and not is_stale(model):
            log.info("%s: ONNX files are up to date", model.name)
            continue
        for name, report in export_model(model, ONNX_DIR).items():
            log.info("%s: %s", name, report)
    placed = install_onnx(repository, ONNX_DIR)
    if calibrate:
        calibrate_runtimes(repository)
    log.info("repository %s ready (%d ONNX files placed)", repository, len(placed))


def calibrate_runtimes(repository: Path, refresh: bool = False) -> None:
    """Measure each network's CPU runtime on this host (cached), and record the choice beside it."""
    from ecomgen.serving.calibrate import calibrate, write_choice
    from export.onnx import ONNX_DIR, onnx_path

    for model in REGISTRY:
        if model.cpu_runtime != "auto":
            continue
        for net in model.networks:
            choice = calibrate(
                net, onnx_path(net, ONNX_DIR), CALIBRATION_DIR, model.cpu_threads, refresh=refresh
            )
            for placed in (repository / "cpu").glob(f"*/1/{net.name}.onnx"):
                write_choice(placed, choice)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="ecomgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the cpu repository on the embedded tritonserver")
    s.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    s.add_argument("--no-build", action="store_true", help="serve the repository as it is")
    s.add_argument(
        "--cpu-runtime",
        choices=["auto", "onnxruntime", "openvino-f32", "openvino-bf16"],
        default="auto",
        help="override the calibrated CPU runtime of every network (default: the per-host choice)",
    )
    add_serve_arguments(s)
    b = sub.add_parser("build", help="export ONNX files, calibrate CPU runtimes, write the repositories")
    b.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    b.add_argument("--force", action="store_true", help="re-export even when up to date")
    b.add_argument("--no-calibrate", action="store_true", help="skip the CPU runtime calibration")
    b.add_argument("--recalibrate", action="store_true", help="measure again even when cached")
    v = sub.add_parser("verify", help="report the provenance of generated images (XMP, C2PA, watermark)")
    v.add_argument("files", nargs="+", type=Path)
    opt, rest = p.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    if opt.command == "verify":
        from ecomgen.verify import main as verify_main

        return verify_main([str(f) for f in opt.files])
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if opt.command == "build":
        build(opt.repository, force=opt.force, calibrate=not opt.no_calibrate)
        if opt.recalibrate:
            calibrate_runtimes(opt.repository, refresh=True)
        return 0
    if not opt.no_build:
        build(opt.repository)
    if opt.cpu_runtime != "auto":
        from ecomgen.serving.runners import RUNTIME_ENV

        os.environ[RUNTIME_ENV] = opt.cpu_runtime  # tritonserver and its Python stubs inherit it
    return serve(opt, opt.repository / "cpu")
