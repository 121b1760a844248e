"""The batch tool's output: files written atomically, and the JSON-lines manifest that lists them.

The invariant: every line of ``manifest.jsonl`` names a complete file with that sha256. A file is
written to a temporary name, flushed, fsynced and renamed into place; only then is its line
appended (flush + fsync), under a lock that :meth:`Manifest.close` takes too, so a run that stops
(Ctrl-C, an error, a kill between the two steps) leaves at worst a file the manifest does not list,
which the next run makes again. A rerun re-reads the manifest, keeps the lines whose file still
has its sha256 (rewriting the manifest atomically when any were dropped), and skips those assets.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

MANIFEST = "manifest.jsonl"
ERRORS = "errors.jsonl"
TMP_SUFFIX = ".ecomgen-tmp"


LOCK = ".ecomgen-batch.lock"


@contextmanager
def exclusive(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir`` for one run: a second run on the same folder (it would rewrite the manifest
    under the first) fails at once with BlockingIOError. POSIX ``flock``; a no-op elsewhere."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with (out_dir / LOCK).open("w") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BlockingIOError(f"{out_dir} is in use by another ecomgen-client batch") from None
        yield


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str | None:
    """The file's sha256, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is never seen half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(out_dir: Path) -> int:
    """Temporary files an interrupted run left in the SKU folders (never listed anywhere)."""
    removed = 0
    for tmp in out_dir.glob(f"*/.*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The manifest's entries; a line cut short by a crash (or otherwise unreadable) is ignored."""
    entries = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for raw in text.splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and all(
            isinstance(entry.get(k), str) for k in ("sku", "asset", "file", "sha256")
        ):
            entries.append(entry)
    return entries


def _safe_file(out_dir: Path, rel: str) -> Path | None:
    """``out_dir / rel`` when it stays inside ``out_dir`` (a manifest is data, not instructions)."""
    path = (out_dir / rel).resolve()
    root = out_dir.resolve()
    return path if path.is_relative_to(root) and path != root else None


class Manifest:
    """``out_dir/manifest.jsonl``: what is verified done, and the appends of this run."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / MANIFEST
        self.lock = threading.Lock()
        self.closed = False
        self._file: IO[str] | None = None

    def load_verified(
        self, workers: int = 4
    ) -> tuple[dict[tuple[str, str], dict[str, Any]], set[tuple[str, str]]]:
        """The entries whose file exists with its recorded sha256 (the last line of an asset wins),
        and every (sku, asset) listed at all. The manifest is rewritten atomically to hold exactly
        the verified entries when it held anything else (lines cut short, duplicates, bad files)."""
        lines = _read_lines(self.path)
        latest = {(e["sku"], e["asset"]): e for e in lines}

        def ok(entry: dict[str, Any]) -> bool:
            path = _safe_file(self.out_dir, entry["file"])
            return path is not None and sha256_file(path) == entry["sha256"]

        pool = ThreadPoolExecutor(max(1, workers))
        try:
            verdicts = list(pool.map(ok, latest.values()))
        finally:  # on Ctrl-C, do not hash the rest first
            pool.shutdown(wait=False, cancel_futures=True)
        verified = {k: e for (k, e), good in zip(latest.items(), verdicts, strict=True) if good}
        if self.path.exists() and len(verified) != self._line_count():
            self.rewrite(verified.values())
        return verified, set(latest)

    def _line_count(self) -> int:
        return sum(1 for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip())

    def rewrite(self, entries: Iterable[dict[str, Any]]) -> None:
        """Replace the manifest with ``entries`` at once (before this run appends anything)."""
        write_atomic(self.path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries).encode())

    def open(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        if self._file.tell() > 0:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a last line without its newline: never glue a new one to it
                    self._file.write("\n")

    def append(self, entries: list[dict[str, Any]], then: Callable[[], None] | None = None) -> bool:
        """Append lines for files already in place (flush + fsync); False once closed. ``then`` runs
        under the same lock, so whoever closes the manifest sees its effect (the run's tallies)."""
        with self.lock:
            if self.closed or self._file is None:
                return False
            for entry in entries:
                self._file.write(json.dumps(entry, sort_keys=True) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            if then is not None:
                then()
            return True

    def while_open(self, action: Callable[[], None]) -> bool:
        """Run ``action`` under the lock unless the manifest is closed (the run's tallies)."""
        with self.lock:
            if self.closed:
                return False
            action()
            return True

    def close(self) -> None:
        """No line is appended after this returns; an append in progress finishes first."""
        with self.lock:
            self.closed = True
            if self._file is not None:
                self._file.close()
                self._file = None


class ErrorLog:
    """``out_dir/errors.jsonl``: this run's bad rows and failed assets, one JSON object a line."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / ERRORS
        self._lock = threading.Lock()
        self._file = self.path.open("w", encoding="utf-8")

    def write(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(json.dumps(entry, sort_keys=True) + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
