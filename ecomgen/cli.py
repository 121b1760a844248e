"""``ecomgen build`` writes the model repository; ``ecomgen serve`` runs it on the embedded Triton.

python -m ecomgen serve                      # build if needed, serve on 8001/8000/8002
python -m ecomgen serve --grpc-port 9001 --http-port 9000 --metrics-port 9002
python -m ecomgen build                      # export ONNX + write configs only
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ecomgen.server import REPO_ROOT, add_serve_arguments, serve
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="ecomgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the cpu repository on the embedded tritonserver")
    s.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    s.add_argument("--no-build", action="store_true", help="serve the repository as it is")
    add_serve_arguments(s)
    b = sub.add_parser("build", help="export ONNX files and write the cpu and gpu repositories")
    b.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    b.add_argument("--force", action="store_true", help="re-export even when up to date")
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    if opt.command == "build":
        build(opt.repository, force=opt.force)
        return 0
    if not opt.no_build:
        build(opt.repository)
    return serve(opt, opt.repository / "cpu")
