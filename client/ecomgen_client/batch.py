"""Catalogue batch jobs: every asset of every row of a catalogue, resumable (``ecomgen-client batch``).

::

    from ecomgen_client.batch import AssetPlan, run_batch

    summary = run_batch(
        Path("catalogue.csv"), Path("out"), ["pod-a:8001", "pod-b:8001"],
        AssetPlan.parse("cutout,white,scenes:3,ads:1080x1080,inventory"), concurrency=8,
    )
    print(summary.report())

The catalogue is CSV or JSON lines, one product a row: ``sku`` (required, unique), ``photo`` (a
path relative to the catalogue's folder, or absolute) or ``class`` (name or id) and ``seed``, and
for ads and stock images ``title``, ``price``, ``currency``, ``badge``, ``cta``, ``brand_colour``,
``stock``, ``low_stock_threshold``, ``restock_date``.

Output: ``out_dir/<sku>/<asset>.<ext>`` (``cutout.png``, ``white.png``, ``scene-1.png`` ...,
``ad-1080x1080.jpg``, ``inventory.png``), ``out_dir/manifest.jsonl`` (one line per file written:
sku, asset, file, sha256, bytes, model name and served version, endpoint, seconds, client version,
the request's fingerprint and the catalogue line) and ``out_dir/errors.jsonl`` (this run's bad rows
and failed assets). How the manifest stays consistent: :mod:`ecomgen_client._manifest`.

Requests go round robin over every endpoint (the client's pool, which also fails over from one that
is down), ``concurrency`` at a time from worker threads; the client retries UNAVAILABLE, and the
batch backs off and retries overload (queue full) and unavailability ``retries`` times more. A bad
row (no product, a photo that is missing or not an image, an unknown class, no title for an ad, the
server's INVALID_ARGUMENT) is reported and skipped. Ctrl-C stops submitting, lets the requests in
flight finish for up to ``grace_s`` seconds, closes the manifest and returns a summary with
``interrupted`` set (the CLI exits 130).
"""

from __future__ import annotations

import queue
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import __version__, _images
from ._catalogue import (
    AssetPlan,
    BadRow,
    Row,
    RowError,
    Task,
    no_photo,
    plan_problem,
    read_catalogue,
    tasks_for,
)
from ._manifest import ErrorLog, Manifest, exclusive, remove_stale_temporaries, sha256_bytes, write_atomic
from .client import ProductClient
from .errors import EcomgenError, InvalidInputError, ServerOverloadedError, ServerUnavailableError
from .ops import latest_version

__all__ = ["AssetPlan", "BadRow", "Failure", "Summary", "cutout_label", "cutout_png", "run_batch"]

BACKOFF_S, MAX_BACKOFF_S = 0.5, 10.0  # the batch's own retries of overload, after the client's


@dataclass(frozen=True)
class Failure:
    """Assets of a good row that could not be made this time (server errors): a rerun tries again."""

    line: int
    sku: str
    assets: tuple[str, ...]
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": "failed",
            "line": self.line,
            "sku": self.sku,
            "assets": list(self.assets),
            "reason": self.reason,
        }


@dataclass
class Summary:
    """What a run did. ``written`` counts files written (and listed) by this run, ``remade`` those of
    them that the manifest listed but were missing or changed; ``resumed`` the assets already done."""

    out_dir: Path
    rows: int = 0
    written: int = 0
    remade: int = 0
    resumed: int = 0
    failed: int = 0
    no_photo: int = 0  # rows without a photo, for which no cut-out is made (not an error)
    bad_rows: list[BadRow] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    per_endpoint: dict[str, int] = field(default_factory=dict)  # requests answered by each
    wall_s: float = 0.0
    interrupted: bool = False

    @property
    def assets_per_minute(self) -> float:
        return 60.0 * self.written / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not (self.failed or self.bad_rows or self.interrupted)

    def report(self) -> str:
        lines = [
            f"rows: {self.rows} ({len(self.bad_rows)} bad)",
            f"assets: {self.written} written ({self.remade} re-made), {self.resumed} already done, "
            f"{self.failed} failed; {self.no_photo} cut-outs skipped: no photo",
            f"time: {self.wall_s:.1f} s, {self.assets_per_minute:.0f} assets/min",
            "endpoints: "
            + ("; ".join(f"{u} {n} requests" for u, n in self.per_endpoint.items()) or "none used"),
            f"manifest: {self.out_dir / 'manifest.jsonl'}",
        ]
        if self.bad_rows:
            lines.append(f"bad rows (also in {self.out_dir / 'errors.jsonl'}):")
            lines += [f"  line {b.line}, sku {b.sku!r}: {b.reason}" for b in self.bad_rows]
        if self.failures:
            lines.append("failed (run again to retry):")
            lines += [
                f"  line {f.line}, sku {f.sku!r}, {', '.join(f.assets)}: {f.reason}" for f in self.failures
            ]
        if self.interrupted:
            lines.append("interrupted: the manifest lists every complete file; run again to resume")
        return "\n".join(lines)


class Progress:
    """A progress line on stderr: redrawn in place on a terminal, a line every 10 s otherwise."""

    def __init__(self, total: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total, self.enabled = total, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = self.last = time.monotonic()
        self.width = 0

    def show(self, done: int, written: int, failed: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < (0.2 if self.tty else 10.0)):
            return
        self.last, elapsed = now, max(now - self.start, 1e-6)
        share = done / self.total if self.total else 1.0
        bar = "#" * int(24 * share)
        eta = f"{(self.total - done) * elapsed / done:.0f} s" if done else "?"
        text = (
            f"batch {done}/{self.total} assets [{bar:.<24}] {100 * share:3.0f}% "
            f"{60 * written / elapsed:.0f}/min eta {eta} failed {failed}"
        )
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self, done: int, written: int, failed: int) -> None:
        if self.enabled:
            self.show(done, written, failed, force=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()


class _Stopped(Exception):
    """Ctrl-C while a task waited to retry."""


def _versions(client: ProductClient, models: Sequence[str]) -> dict[str, dict[str, str | None]]:
    """model -> endpoint -> the served version, read from each endpoint's model metadata once. An
    endpoint that does not answer is left out; a model that no endpoint serves is an error."""
    found: dict[str, dict[str, str | None]] = {m: {} for m in models}
    problems: dict[str, list[str]] = {m: [] for m in models}
    for model in models:
        for url in client.urls:
            try:
                found[model][url] = latest_version(client.model_metadata(model, url=url, timeout_s=10.0))
            except EcomgenError as exc:
                problems[model].append(f"{url}: {exc}")
        if not found[model]:
            raise EcomgenError(f"no endpoint serves {model}: {'; '.join(problems[model])}")
    return found


class _Batch:
    """One run: its plan, client, manifest and tallies; the tallies change under the manifest lock."""

    def __init__(self, client: ProductClient, plan: AssetPlan, summary: Summary, retries: int) -> None:
        self.client, self.plan, self.summary, self.retries = client, plan, summary, retries
        self.manifest = Manifest(summary.out_dir)
        self.errors = ErrorLog(summary.out_dir)
        self.stop = threading.Event()
        self.bad_lines: set[int] = set()
        self.remake: set[tuple[str, str]] = set()  # listed, but the file was missing or changed
        self.versions: dict[str, dict[str, str | None]] = {}
        self.xmp = b""

    # --- tallies (each under the manifest lock, and only while it is open) ---------------------------

    def bad(self, row: Row, reason: str) -> None:
        def record() -> None:
            if row.line not in self.bad_lines:
                self.bad_lines.add(row.line)
                self.summary.bad_rows.append(BadRow(row.line, row.sku, reason))
                self.errors.write(self.summary.bad_rows[-1].as_json())

        self.manifest.while_open(record)

    def fail(self, task: Task, reason: str) -> None:
        def record() -> None:
            self.summary.failed += len(task.assets)
            self.summary.failures.append(Failure(task.row.line, task.row.sku, task.assets, reason))
            self.errors.write(self.summary.failures[-1].as_json())

        self.manifest.while_open(record)

    def _written(self, task: Task, endpoint: str | None) -> None:
        self.summary.written += len(task.assets)
        self.summary.remade += sum((task.row.sku, a) in self.remake for a in task.assets)
        if endpoint is not None:
            self.summary.per_endpoint[endpoint] = self.summary.per_endpoint.get(endpoint, 0) + 1

    # --- one task ---------------------------------------------------------------------------------------

    def _product(self, row: Row) -> dict[str, Any]:
        if row.photo is None:
            return {"class_id": row.class_id, "seed": row.seed}
        try:
            return {"product": row.photo.read_bytes()}
        except OSError as exc:
            raise RowError(f"cannot read photo {row.photo}: {exc.strerror}") from None

    def _cutout(self, row: Row) -> list[bytes]:
        data = self._product(row)["product"]
        try:
            photo = _images.decode_photo(data)
        except Exception as exc:  # whatever Pillow says, the photo is unusable
            raise RowError(f"photo is not a JPEG/PNG/WebP image ({type(exc).__name__}: {exc})") from None
        return [_images.encode_png(self.client.cutout_rgba(photo), self.xmp)]

    def request(self, task: Task) -> list[bytes]:
        """The encoded files of one task, in the order of ``task.assets``."""
        row, plan, client = task.row, self.plan, self.client
        if task.kind == "cutout":
            return self._cutout(row)
        product = self._product(row)
        if task.kind == "white":
            return [client.white_main_image(**product, format=task.fmt, encoding=plan.encoding)]
        if task.kind == "scenes":
            n = len(task.assets)
            scene = plan.scene
            return list(
                client.product_scene(
                    **product, scene=scene, format=task.fmt, variants=n, encoding=plan.encoding
                )
            )
        if task.kind == "ad":
            text = dict(row.text)
            title, price, currency = text.pop("title"), text.pop("price"), text.pop("currency")
            extra: dict[str, Any] = {k: text[k] for k in ("badge", "cta", "brand_colour") if k in text}
            fmt, enc = task.fmt, plan.ad_encoding
            return list(
                client.ad_creatives(
                    title, price, currency, variants=1, format=fmt, encoding=enc, **product, **extra
                )
            )
        stock, threshold, date = row.stock or 0, row.low_stock_threshold, row.text.get("restock_date")
        image = client.inventory_image(
            stock, low_stock_threshold=threshold, restock_date=date, encoding="png", **product
        )
        return [image]

    def request_with_retries(self, task: Task) -> list[bytes]:
        """Overload and unavailability the client gave up on are retried here, backing off longer."""
        for attempt in range(self.retries + 1):
            try:
                return self.request(task)
            except (ServerOverloadedError, ServerUnavailableError):
                if attempt == self.retries:
                    raise
                delay = min(MAX_BACKOFF_S, BACKOFF_S * 2.0**attempt)
                if self.stop.wait(delay / 2 + random.uniform(0.0, delay / 2)):
                    raise _Stopped from None
        raise AssertionError("unreachable")

    def entry(
        self, task: Task, asset: str, data: bytes, endpoint: str | None, seconds: float
    ) -> dict[str, Any]:
        by_url = self.versions.get(task.model, {})
        version = by_url.get(endpoint or "") or next((v for v in by_url.values() if v), None)
        return {
            "sku": task.row.sku,
            "asset": asset,
            "file": task.file(asset),
            "sha256": sha256_bytes(data),
            "bytes": len(data),
            "model": {"name": task.model, "version": version},
            "endpoint": endpoint,
            "seconds": round(seconds, 3),
            "client_version": __version__,
            "request": task.key,
            "line": task.row.line,
        }

    def run_task(self, task: Task) -> None:
        """Request, write each file atomically, then list them: never a listed file that is incomplete."""
        if self.stop.is_set() or task.row.line in self.bad_lines:
            return
        start = time.monotonic()
        try:
            outputs = self.request_with_retries(task)
        except _Stopped:
            return
        except (RowError, InvalidInputError) as exc:
            self.bad(task.row, str(exc))
            return
        except EcomgenError as exc:
            self.fail(task, str(exc))
            return
        if len(outputs) != len(task.assets):
            self.fail(task, f"the server returned {len(outputs)} images, expected {len(task.assets)}")
            return
        seconds, endpoint = time.monotonic() - start, self.client.last_endpoint()
        entries = []
        for asset, data in zip(task.assets, outputs, strict=True):
            if self.manifest.closed:
                return
            try:
                write_atomic(self.summary.out_dir / task.file(asset), data)
            except OSError as exc:
                self.fail(task, f"cannot write {task.file(asset)}: {exc}")
                return
            entries.append(self.entry(task, asset, data, endpoint, seconds))
        self.manifest.append(entries, then=lambda: self._written(task, endpoint))

    # --- the run ------------------------------------------------------------------------------------

    def prepare(self, catalogue: Path, workers: int) -> list[Task]:
        """Read and check the catalogue, verify the manifest, and return the requests still to make."""
        rows, bad = read_catalogue(catalogue)
        self.summary.rows = len(rows) + len(bad)
        for b in bad:
            self.bad(Row(b.line, b.sku, ""), b.reason)
        remove_stale_temporaries(self.summary.out_dir)
        done, self.remake = self.manifest.load_verified(workers)
        pending: list[Task] = []
        for row in rows:
            problem = plan_problem(row, self.plan)
            if problem is not None:
                self.bad(row, problem)
                continue
            self.summary.no_photo += no_photo(row, self.plan)
            for task in tasks_for(row, self.plan):
                listed = [done.get((row.sku, a), {}) for a in task.assets]
                if all(
                    e.get("request") == task.key and e.get("file") == task.file(a)
                    for e, a in zip(listed, task.assets, strict=True)
                ):
                    self.summary.resumed += len(task.assets)
                else:
                    pending.append(task)
        # A request made again rewrites all its files (the scenes of one request belong together):
        # unlist first the ones still listed, so no line ever names a file about to change.
        again = {(t.row.sku, a) for t in pending for a in t.assets} & set(done)
        if again:
            self.manifest.rewrite(e for k, e in done.items() if k not in again)
        return pending

    def _worker(self, todo: queue.Queue[Task | None], finished: queue.Queue[Task]) -> None:
        while (task := todo.get()) is not None:
            try:
                self.run_task(task)
            except Exception as exc:  # one task's surprise must not stop the others
                self.fail(task, f"{type(exc).__name__}: {exc}")
            finally:
                finished.put(task)

    def _collect(self, finished: queue.Queue[Task], timeout: float) -> None:
        try:
            task = finished.get(timeout=timeout)
        except queue.Empty:
            return
        self.left -= 1
        self.done += len(task.assets)

    def execute(self, pending: list[Task], concurrency: int, bar: Progress, grace_s: float) -> None:
        """Run ``pending`` on ``concurrency`` threads; on Ctrl-C stop submitting and wait up to
        ``grace_s`` for the requests in flight (a second Ctrl-C stops waiting)."""
        todo: queue.Queue[Task | None] = queue.Queue()
        finished: queue.Queue[Task] = queue.Queue()
        for task in [*pending, *[None] * concurrency]:
            todo.put(task)
        self.left, self.done = len(pending), 0
        for i in range(concurrency):
            args = (todo, finished)
            threading.Thread(target=self._worker, args=args, name=f"ecomgen-batch-{i}", daemon=True).start()
        try:
            while self.left > 0:
                self._collect(finished, 0.25)
                bar.show(self.done, self.summary.written, self.summary.failed)
        except KeyboardInterrupt:
            self.summary.interrupted = True
            self.stop.set()
            if bar.enabled:
                bar.stream.write(
                    f"\ninterrupted: letting the requests in flight finish (up to {grace_s:g} s)\n"
                )
            end = time.monotonic() + grace_s
            try:
                while self.left > 0 and time.monotonic() < end:
                    self._collect(finished, min(0.25, max(0.0, end - time.monotonic())))
            except KeyboardInterrupt:
                pass
        bar.close(self.done, self.summary.written, self.summary.failed)


def _cutout_xmp(version: str | None) -> bytes:
    """The label of a cut-out PNG: IPTC compositeWithTrainedAlgorithmicMedia (the photo's own pixels
    with an alpha a trained model made), and which client and model made it."""
    tool = f"ecomgen-client {__version__} (product_cutout{' v' + version if version else ''})"
    return _images.xmp_packet(_images.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA, tool)


def cutout_png(rgba: Any, client: ProductClient) -> bytes:
    """A cut-out (``client.cutout_rgba``'s PIL "RGBA" image or [H, W, 4] array) as the labelled PNG
    the batch and ``ecomgen-client cutout`` write: XMP in an iTXt ``XML:com.adobe.xmp`` chunk."""
    return _images.encode_png(np.asarray(rgba), cutout_label(client))


def cutout_label(client: ProductClient) -> bytes:
    """The XMP packet for a cut-out made by ``client`` (the served version when the server says it)."""
    try:
        version = latest_version(client.model_metadata("product_cutout", timeout_s=10.0))
    except EcomgenError:
        version = None
    return _cutout_xmp(version)


def run_batch(
    catalogue: Path,
    out_dir: Path,
    endpoints: Sequence[str],
    assets: AssetPlan | None = None,
    concurrency: int = 8,
    retries: int = 3,
    progress: bool = True,
    *,
    timeout_s: float = 120.0,
    grace_s: float = 5.0,
    client: ProductClient | None = None,
    stream: TextIO | None = None,
) -> Summary:
    """Make ``assets`` (default: cut-out and white main image) for every row of ``catalogue`` into
    ``out_dir``, skipping what its manifest already holds; see the module's documentation.

    ``endpoints``: gRPC ``host:port`` of every server to use. ``client``: an existing client to use
    instead (it is not closed). Raises only for what stops the whole run (no server serves a
    model the plan needs, Pillow missing for cut-outs); a Ctrl-C returns with ``interrupted``.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    started, plan = time.monotonic(), assets if assets is not None else AssetPlan()
    summary = Summary(out_dir=Path(out_dir))
    own = client is None
    client = (
        client if client is not None else ProductClient(list(endpoints), timeout_s=timeout_s, retries=retries)
    )
    summary.per_endpoint = dict.fromkeys(client.urls, 0)
    try:
        with exclusive(summary.out_dir):
            _run(
                _Batch(client, plan, summary, retries),
                Path(catalogue),
                concurrency,
                grace_s,
                progress,
                stream,
            )
    finally:
        if own:
            client.close()
        summary.wall_s = time.monotonic() - started
    return summary


def _run(
    batch: _Batch, catalogue: Path, concurrency: int, grace_s: float, progress: bool, stream: TextIO | None
) -> None:
    try:
        if batch.plan.cutout:
            _images.require_pillow()  # cut-outs are composed and encoded here: fail before any request
        pending = batch.prepare(catalogue, concurrency)
        if pending:
            batch.versions = _versions(batch.client, sorted({t.model for t in pending}))
            versions = batch.versions.get("product_cutout", {}).values()
            batch.xmp = _cutout_xmp(next((v for v in versions if v), None))
            batch.manifest.open()
            total = sum(len(t.assets) for t in pending)
            batch.execute(pending, concurrency, Progress(total, progress, stream), grace_s)
    except KeyboardInterrupt:
        batch.summary.interrupted = True
    finally:
        batch.stop.set()
        batch.manifest.close()
        batch.errors.close()
