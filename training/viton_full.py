"""Place the full VITON set (CP-VTON+ layout) in ``data/viton-full`` (git-ignored).

The public repository ``sahiljit/cp-vton-plus`` carries the complete set under ``data/``:
14,221 train and 2,032 test pairs (person, cloth, cloth-mask, image-parse, pose; about
480 MB unpacked). Research-only licence (Zalando images): it is never committed here.

    python -m training.viton_full --from /path/to/cp-vton-plus        # a clone or a download
    python -m training.viton_full --from /path/to/cp-vton-plus.git    # a bare git directory

A git directory (bare, or a clone's ``.git``) is read with ``git archive HEAD data`` (a
snapshot that lacks the repository's large checkpoint files is fine: git may warn about
them, only ``data/`` is read); an ordinary folder (a clone's work tree or an unpacked
download) is copied from its ``data/``.
Afterwards the test split is compared file by file with ``../shared/data/viton/test``
(the evaluation's split): it must hold the same 2,032 pairs. Train with ``--data-dir
data/viton-full``; the test split is only ever evaluated.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from training.viton import DEFAULT_VITON_DIR, FULL_VITON_DIR

TEST_FOLDERS = ("image", "cloth", "cloth-mask", "image-parse", "pose")


def _is_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def place(source: Path, out: Path = FULL_VITON_DIR) -> Path:
    """Extract ``data/`` of the repository at ``source`` into ``out``; returns ``out``."""
    source = Path(source)
    git_dir = source if _is_git_dir(source) else source / ".git" if _is_git_dir(source / ".git") else None
    out.mkdir(parents=True, exist_ok=True)
    if (source / "data" / "train_pairs.txt").exists():  # a work tree or a download: copy it
        shutil.copytree(source / "data", out, dirs_exist_ok=True)
    elif git_dir is not None:
        archive = subprocess.Popen(
            ["git", f"--git-dir={git_dir}", "archive", "--format=tar", "HEAD", "data"], stdout=subprocess.PIPE
        )
        assert archive.stdout is not None
        with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
            for member in tar:
                if not member.name.startswith("data/") or ".." in Path(member.name).parts:
                    continue
                member.name = member.name[len("data/") :]
                if member.name:
                    tar.extract(member, out, filter="data")
        if archive.wait() != 0:
            raise SystemExit(f"git archive failed in {git_dir}")
    else:
        raise SystemExit(f"{source}: neither a git directory nor a folder with data/train_pairs.txt")
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def compare_splits(full: Path, reference: Path = DEFAULT_VITON_DIR, split: str = "test") -> dict:
    """Compare ``full/split`` with ``reference/split`` folder by folder (file names and SHA-1).

    Returns ``{"identical": bool, "folders": {name: {"files": n, "same": n, "only_full": n,
    "only_reference": n, "differ": n}}, "pairs_file_identical": bool}``, or ``{"identical":
    None, "reason": ...}`` when either is missing.
    """
    a, b = Path(full) / split, Path(reference) / split
    if not a.is_dir() or not b.is_dir():
        return {"identical": None, "reason": f"{a if not a.is_dir() else b} not found"}
    folders = {}
    for name in TEST_FOLDERS:
        da, db = _digest(a / name), _digest(b / name)
        common = da.keys() & db.keys()
        folders[name] = {
            "files": len(da),
            "same": sum(da[k] == db[k] for k in common),
            "only_full": len(da.keys() - db.keys()),
            "only_reference": len(db.keys() - da.keys()),
            "differ": sum(da[k] != db[k] for k in common),
        }
    pa, pb = Path(full) / f"{split}_pairs.txt", Path(reference) / f"{split}_pairs.txt"
    same_pairs = pa.exists() and pb.exists() and pa.read_bytes() == pb.read_bytes()
    identical = same_pairs and all(
        f["differ"] == f["only_full"] == f["only_reference"] == 0 for f in folders.values()
    )
    return {"identical": identical, "pairs_file_identical": same_pairs, "folders": folders}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", type=Path, required=True, help="git dir, clone or download")
    p.add_argument("--out", type=Path, default=FULL_VITON_DIR)
    p.add_argument("--reference", type=Path, default=DEFAULT_VITON_DIR, help="the evaluation's VITON copy")
    opt = p.parse_args(argv)
    out = place(opt.source, opt.out)
    counts = {s: sum(1 for _ in (out / f"{s}_pairs.txt").open()) for s in ("train", "test")}
    print(f"placed {out}: {counts['train']} train pairs, {counts['test']} test pairs")
    check = compare_splits(out, opt.reference)
    print(f"test split vs {opt.reference}/test: {check}")
    if check["identical"] is False:
        sys.exit("the test split differs from the evaluation's: see above")


if __name__ == "__main__":
    main()
