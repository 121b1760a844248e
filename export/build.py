"""``ecomgen build``: write both targets' configs, export stale ONNX files, place them, and choose
each network's CPU runtime on this host.

The ``ecomgen`` console script finds this command through the ``ecomgen.commands`` entry point
(pyproject.toml), so the installed serving package never imports ``export``.

    ecomgen build [--repository DIR] [--force] [--no-calibrate] [--recalibrate]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ecomgen.registry import REGISTRY
from ecomgen.serving.calibrate import calibrate, write_choice
from export.onnx import ONNX_DIR, export_model, install_onnx, is_stale, onnx_path
from export.repository import write_repository
from training.paths import BUILD_DIR, MODEL_REPOSITORY

log = logging.getLogger("ecomgen")
CALIBRATION_DIR = BUILD_DIR / "calibration"


def build(repository: Path, force: bool = False, calibrate_cpu: bool = True) -> None:
    """Write both targets' configs, export stale ONNX files, place them, choose CPU runtimes."""
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
    if calibrate_cpu:
        calibrate_runtimes(repository)
    log.info("repository %s ready (%d ONNX files placed)", repository, len(placed))


def calibrate_runtimes(repository: Path, refresh: bool = False) -> None:
    """Measure each network's CPU runtime on this host (cached), and record the choice beside it."""
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
    p = argparse.ArgumentParser(prog="ecomgen build", description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY)
    p.add_argument("--force", action="store_true", help="re-export even when up to date")
    p.add_argument("--no-calibrate", action="store_true", help="skip the CPU runtime calibration")
    p.add_argument("--recalibrate", action="store_true", help="measure again even when cached")
    opt = p.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    build(opt.repository, force=opt.force, calibrate_cpu=not opt.no_calibrate)
    if opt.recalibrate:
        calibrate_runtimes(opt.repository, refresh=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
