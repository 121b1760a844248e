"""Unit tests of the catalogue batch tool (``ecomgen_client.batch``) against an in-process fake server."""

from __future__ import annotations

import _thread
import hashlib
import io
import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ecomgen_client import EcomgenError, ProductClient, batch, cli
from ecomgen_client._catalogue import AssetPlan, read_catalogue, safe_name
from ecomgen_client._common import EndpointPool
from ecomgen_client._manifest import Manifest, write_atomic
from tests.unit.studio_fakes import StudioServer, fake_alpha, triton_error

Image = pytest.importorskip("PIL.Image")

FULL = "cutout,white,scenes:2,ads:1080x1080,1200x628,inventory"
HEADER = "sku,photo,class,seed,title,price,currency,badge,stock,low_stock_threshold,restock_date\n"


def write_photo(path: Path, shade: int) -> None:
    img = np.full((40, 30, 3), 255, np.uint8)
    img[10:30, 8:22] = (shade, 40, 90)
    Image.fromarray(img).save(path)


@pytest.fixture
def catalogue(tmp_path: Path) -> Path:
    """Four good rows (three photos, one generated product) and one with a missing photo."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        write_photo(photos / f"p{i}.jpg", 20 * i)
    path = tmp_path / "cat.csv"
    path.write_text(
        HEADER
        + "A-1,photos/p0.jpg,,,Linen shirt,49.90,EUR,-20%,12,,\n"
        + "A/2,photos/p1.jpg,,,Bag,120,EUR,,0,,2026-12-24\n"
        + f"A-3,{photos / 'p2.jpg'},,,Watch,99,USD,,3,5,\n"
        + "G-1,,Handbags,4,Generated bag,10,EUR,,7,,\n"
        + "BAD,photos/missing.jpg,,,Nope,1,EUR,,1,,\n"
    )
    return path


def make_client(server: StudioServer, urls: tuple[str, ...] = ("a:1", "b:1")) -> ProductClient:
    return ProductClient(list(urls), transport=server, backoff_s=0.0, retries=2)


def run(catalogue: Path, out: Path, server: StudioServer, plan: str = FULL, **kw: Any) -> batch.Summary:
    kw.setdefault("progress", False)
    client = kw.pop("client", None) or make_client(server)
    return batch.run_batch(catalogue, out, client.urls, AssetPlan.parse(plan), client=client, **kw)


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def assert_consistent(out: Path) -> list[dict[str, Any]]:
    """Every manifest line names a complete file with its sha256; no (sku, asset) twice."""
    entries = manifest(out)
    for e in entries:
        data = (out / e["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["sha256"] and len(data) == e["bytes"], e
    assert len({(e["sku"], e["asset"]) for e in entries}) == len(entries)
    return entries


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch, "BACKOFF_S", 0.0)


# --- the catalogue and the plan -----------------------------------------------------------------------


def test_csv_catalogue_good_and_bad_rows(catalogue: Path) -> None:
    with catalogue.open("a") as f:
        f.write(
            ",photos/p0.jpg,,,,,,,,,\n"  # no sku
            "A-1,photos/p0.jpg,,,,,,,,,\n"  # duplicate
            "a-3,,Tshirts,1,,,,,,,\n"  # duplicate as a folder name on a case-insensitive disk
            "C-1,,Ballgowns,1,,,,,,,\n"  # unknown class
            "C-2,,Tops,-4,,,,,,,\n"  # negative seed
            "C-3,,,,,,,,,,\n"  # no product
            "C-4,,Tops,1,,,,,,,,extra\n"  # too many fields
            "C-5,,3,x,,,,,,,\n"  # seed not a number
            "\n"
        )
    rows, bad = read_catalogue(catalogue)
    assert [r.sku for r in rows] == ["A-1", "A/2", "A-3", "G-1"]
    assert rows[1].name == "A_2" and rows[1].photo == catalogue.parent / "photos/p1.jpg"
    assert rows[2].photo is not None and rows[2].photo.is_absolute()
    assert rows[3].class_id == 7 and rows[3].seed == 4 and rows[3].photo is None
    assert rows[0].text == {"title": "Linen shirt", "price": "49.90", "currency": "EUR", "badge": "-20%"}
    assert (rows[1].stock, rows[2].low_stock_threshold, rows[1].text["restock_date"]) == (0, 5, "2026-12-24")
    reasons = {b.line: b.reason for b in bad}
    assert reasons[6].startswith("photo not found: photos/missing.jpg")
    assert reasons[7] == "no sku"
    assert reasons[8] == "duplicate sku (as a folder name) of line 2"
    assert reasons[9] == "duplicate sku (as a folder name) of line 4"
    assert "unknown class 'Ballgowns'" in reasons[10]
    assert "seed -4 out of range" in reasons[11]
    assert reasons[12].startswith("no product")
    assert "more fields" in reasons[13]
    assert "seed must be an integer" in reasons[14]


def test_jsonl_catalogue(tmp_path: Path) -> None:
    write_photo(tmp_path / "p.png", 10)
    lines = [
        {"sku": 101, "photo": "p.png", "title": "Shoe", "price": 59.9, "currency": "EUR", "stock": 3.0},
        {"SKU": "G 2", "Class ID": 2, "seed": 9, "Brand Color": "#0A3D62"},
        "not json",
        [1, 2],
        {"sku": "X", "class": "Tops", "stock": True},
    ]
    path = tmp_path / "cat.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    rows, bad = read_catalogue(path)
    assert [(r.sku, r.name) for r in rows] == [("101", "101"), ("G 2", "G_2")]
    assert rows[0].text["price"] == "59.9" and rows[0].stock == 3
    assert rows[1].class_id == 2 and rows[1].text == {"brand_colour": "#0A3D62"}
    assert [(b.line, b.reason.split(":")[0]) for b in bad] == [
        (3, "not a JSON object"),
        (4, "not a JSON object"),
        (5, "stock must be an integer, got True"),
    ]


@pytest.mark.parametrize(
    ("sku", "name"),
    [("A-1", "A-1"), ("a/b c", "a_b_c"), ("../etc/passwd", "_etc_passwd"), (".hidden", "hidden"), ("ü", "_")],
)
def test_sku_folder_names_are_safe(sku: str, name: str) -> None:
    assert safe_name(sku) == name


def test_asset_plan_parsing() -> None:
    plan = AssetPlan.parse(
        "cutout, white,scenes:3,ads:1080x1080,1200x628,inventory", scene_format="2000x2000"
    )
    assert (plan.cutout, plan.white, plan.scenes, plan.ads, plan.inventory) == (
        True,
        True,
        3,
        ("1080x1080", "1200x628"),
        True,
    )
    assert plan.scene_format == "2000x2000" and AssetPlan.parse("scenes").scenes == 1
    for spec, message in (
        ("scenes:9", "scenes must be"),
        ("ads:2000x2000", "ad format"),
        ("cutout,1080x1080", "unknown asset"),
        ("thumbnails", "unknown asset"),
        ("", "unknown asset"),
    ):
        with pytest.raises(ValueError, match=message):
            AssetPlan.parse(spec)
    with pytest.raises(ValueError, match="asks for nothing"):
        AssetPlan(cutout=False, white=False)
    with pytest.raises(ValueError, match="white format"):
        AssetPlan(white_format="640x480")


# --- a whole run --------------------------------------------------------------------------------------


def test_full_run_writes_every_asset_and_a_manifest(catalogue: Path, tmp_path: Path) -> None:
    server = StudioServer()
    out = tmp_path / "out"
    summary = run(catalogue, out, server)
    per_photo_row = ["cutout", "white", "scene-1", "scene-2", "ad-1080x1080", "ad-1200x628", "inventory"]
    assert sorted(p.name for p in (out / "A-1").iterdir()) == sorted(
        [
            "cutout.png",
            "white.png",
            "scene-1.png",
            "scene-2.png",
            "ad-1080x1080.jpg",
            "ad-1200x628.jpg",
            "inventory.png",
        ]
    )
    assert not (out / "G-1" / "cutout.png").exists() and (out / "G-1" / "white.png").exists()
    assert (out / "A_2" / "white.png").exists()  # the sku's folder name is sanitised
    entries = assert_consistent(out)
    assert len(entries) == 3 * len(per_photo_row) + len(per_photo_row) - 1
    assert (summary.rows, summary.written, summary.resumed, summary.failed, summary.no_photo) == (
        5,
        27,
        0,
        0,
        1,
    )
    assert [(b.line, b.sku) for b in summary.bad_rows] == [(6, "BAD")]
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert errors == [
        {"kind": "bad_row", "line": 6, "sku": "BAD", "reason": "photo not found: photos/missing.jpg"}
    ]
    e = next(e for e in entries if e["sku"] == "A/2" and e["asset"] == "scene-2")
    assert e["file"] == "A_2/scene-2.png" and e["model"] == {"name": "product_scene", "version": "1"}
    assert e["endpoint"] in ("a:1", "b:1") and e["seconds"] >= 0 and e["line"] == 3
    assert e["client_version"] == batch.__version__ and len(e["request"]) == 16
    # Requests: 3 cut-outs + 4 white + 4 scene sets + 8 ads + 4 inventory, spread over both endpoints.
    assert len(server.calls) == 23 and sum(summary.per_endpoint.values()) == 23
    assert min(summary.per_endpoint.values()) >= 9
    assert summary.assets_per_minute > 0 and not summary.ok
    report = summary.report()
    assert "27 written" in report and "line 6, sku 'BAD'" in report and "a:1" in report


def test_requests_carry_the_row(catalogue: Path, tmp_path: Path) -> None:
    server = StudioServer()
    run(catalogue, tmp_path / "out", server)
    ads = [v for v in server.inferences("ad_creative") if bytes(v["title"][0]) == b"Linen shirt"]
    assert sorted(bytes(v["format"][0]).decode() for v in ads) == ["1080x1080", "1200x628"]
    assert all(bytes(v["badge"][0]) == b"-20%" and v["variants"].tolist() == [1] for v in ads)
    inv = {
        bytes(v["restock_date"][0]) if "restock_date" in v else None: v
        for v in server.inferences("inventory_image")
    }
    assert inv[b"2026-12-24"]["stock"].tolist() == [0]
    scenes = server.inferences("product_scene")
    generated = [v for v in scenes if "class_id" in v]
    assert len(generated) == 2 and all(
        v["class_id"].tolist() == [7] and v["seed"].tolist() == [4] for v in generated
    )
    assert {bytes(v["scene"][0]) for v in scenes} == {b"white", b"auto"}


def test_cutout_file_is_the_photo_with_the_served_alpha_labelled(catalogue: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(catalogue, out, StudioServer(), plan="cutout")
    with Image.open(out / "A-1" / "cutout.png") as im:
        assert im.mode == "RGBA"
        xmp = im.info["XML:com.adobe.xmp"]
        rgba = np.asarray(im)
    src = np.asarray(Image.open(catalogue.parent / "photos/p0.jpg").convert("RGB"))
    np.testing.assert_array_equal(rgba[..., :3], src)
    np.testing.assert_array_equal(rgba[..., 3], fake_alpha(src[None])[0])
    assert "compositeWithTrainedAlgorithmicMedia" in xmp and "product_cutout v1" in xmp


# --- resume -----------------------------------------------------------------------------------------------


def test_rerun_does_nothing(catalogue: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run(catalogue, out, StudioServer())
    before = (out / "manifest.jsonl").read_bytes()
    server = StudioServer()
    again = run(catalogue, out, server)
    assert (again.written, again.resumed, again.failed) == (0, first.written, 0)
    assert server.calls == [] and (out / "manifest.jsonl").read_bytes() == before
    assert len(again.bad_rows) == 1  # still reported


def test_deleted_or_corrupted_files_are_remade(catalogue: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(catalogue, out, StudioServer())
    (out / "A-1" / "white.png").unlink()
    (out / "A-3" / "cutout.png").write_bytes(b"corrupt")
    (out / "G-1" / "scene-2.png").write_bytes(b"")  # one file of a two-scene request
    server = StudioServer()
    again = run(catalogue, out, server)
    assert (again.written, again.remade, again.resumed) == (4, 4, 23)  # both scenes of G-1 re-made
    assert sorted(m for m, _ in server.calls) == ["product_cutout", "product_scene", "product_scene"]
    entries = assert_consistent(out)
    assert len(entries) == 27


def test_a_changed_plan_or_row_remakes_what_it_changes(catalogue: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(catalogue, out, StudioServer(), plan="white,scenes:2")
    again = run(catalogue, out, StudioServer(), plan="white,scenes:2", **{})
    assert again.written == 0
    client = make_client(StudioServer())
    plan = AssetPlan(cutout=False, white=True, scenes=2, scene_format="2000x2000")
    changed = batch.run_batch(catalogue, out, client.urls, plan, client=client, progress=False)
    assert (changed.written, changed.resumed) == (8, 4)  # the scenes again, the white images kept
    text = catalogue.read_text().replace("Linen shirt", "Silk shirt")
    catalogue.write_text(text)
    ads = run(catalogue, out, StudioServer(), plan="ads:1080x1080")
    assert ads.written == 4
    ads = run(catalogue, out, StudioServer(), plan="ads:1080x1080")
    assert ads.written == 0


def test_a_torn_manifest_line_is_dropped_and_its_file_remade(catalogue: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(catalogue, out, StudioServer(), plan="white")
    lines = (out / "manifest.jsonl").read_text().splitlines(keepends=True)
    (out / "manifest.jsonl").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    (out / "A-1" / ".white.png.123.456.ecomgen-tmp").write_bytes(b"half")  # a crash mid-write
    again = run(catalogue, out, StudioServer(), plan="white")
    assert (again.written, again.resumed) == (1, 3)
    assert len(assert_consistent(out)) == 4
    assert not list(out.glob("*/.*ecomgen-tmp"))


def test_manifest_never_glues_a_line_to_an_unterminated_one(tmp_path: Path) -> None:
    write_atomic(tmp_path / "f", b"x")
    entry = {"sku": "s", "asset": "a", "file": "f", "sha256": hashlib.sha256(b"x").hexdigest()}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(entry))  # no newline at the end
    m = Manifest(tmp_path)
    assert list(m.load_verified()[0]) == [("s", "a")]
    m.open()
    assert m.append([entry | {"asset": "b"}])
    m.close()
    assert not m.append([entry])
    assert len(Manifest(tmp_path).load_verified()[0]) == 2


def test_manifest_paths_cannot_escape_the_output(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(b"s")
    entry = {"sku": "s", "asset": "a", "file": "../secret", "sha256": hashlib.sha256(b"s").hexdigest()}
    (tmp_path / "out" / "manifest.jsonl").write_text(json.dumps(entry) + "\n")
    assert Manifest(tmp_path / "out").load_verified()[0] == {}


# --- bad rows, failures, retries ------------------------------------------------------------------------


def test_server_invalid_argument_marks_the_row_bad_and_the_rest_goes_on(
    catalogue: Path, tmp_path: Path
) -> None:
    def fail(model: str, values: dict[str, Any]) -> Exception | None:
        if "title" in values and bytes(values["title"][0]) == b"Bag":
            return triton_error("INVALID_ARGUMENT", "input 'title': the fonts cannot draw it")
        return None

    out = tmp_path / "out"
    (catalogue.parent / "photos" / "p2.jpg").write_bytes(b"not a photo at all")
    summary = run(catalogue, out, StudioServer(fail=fail), plan="cutout,white,ads:1080x1080", concurrency=1)
    reasons = {b.sku: b.reason for b in summary.bad_rows}
    assert set(reasons) == {"A/2", "A-3", "BAD"}
    assert "fonts cannot draw" in reasons["A/2"] and "not a JPEG/PNG/WebP image" in reasons["A-3"]
    assert summary.failed == 0 and {e["sku"] for e in assert_consistent(out)} == {"A-1", "A/2", "G-1"}
    assert len(manifest(out)) == 3 + 2 + 2  # A-1 all; A/2 what came before its ad; G-1 white and ad


def test_overload_is_retried_with_backoff_then_reported(catalogue: Path, tmp_path: Path) -> None:
    full = triton_error("UNAVAILABLE", "Exceeds maximum queue size")
    budget = {"n": 2}

    def fail(model: str, values: dict[str, Any]) -> Exception | None:
        if model == "product_scene" and budget["n"] > 0:
            budget["n"] -= 1
            return full
        return None

    client = make_client(StudioServer(fail=fail), urls=("a:1",))
    ok = run(catalogue, tmp_path / "out", StudioServer(), plan="white", client=client, concurrency=1)
    assert ok.written == 4 and ok.failed == 0
    always = make_client(StudioServer(fail=lambda m, v: full), urls=("a:1",))
    bad = run(catalogue, tmp_path / "out2", StudioServer(), plan="white", client=always, retries=1)
    assert bad.failed == 4 and bad.written == 0 and len(bad.failures) == 4
    assert "queue size" in bad.failures[0].reason
    assert len(manifest(tmp_path / "out2")) == 0


def test_a_dead_endpoint_is_failed_over(catalogue: Path, tmp_path: Path) -> None:
    dead = StudioServer(fail=lambda m, v: triton_error("UNAVAILABLE", "failed to connect"))
    live = StudioServer()
    client = ProductClient(["a:1", "b:1"], backoff_s=0.0, retries=2)
    client.pool = EndpointPool(client.urls, {"a:1": dead, "b:1": live}.__getitem__)
    summary = run(catalogue, tmp_path / "out", live, plan="white", client=client, concurrency=1)
    assert summary.written == 4 and summary.per_endpoint == {"a:1": 0, "b:1": 4}


def test_a_model_no_endpoint_serves_stops_the_run_before_any_request(catalogue: Path, tmp_path: Path) -> None:
    server = StudioServer(served=("product_cutout",))
    with pytest.raises(EcomgenError, match="no endpoint serves product_scene"):
        run(catalogue, tmp_path / "out", server, plan="cutout,white")
    assert server.calls == []


# --- Ctrl-C ----------------------------------------------------------------------------------------------


@pytest.fixture
def python_sigint():  # type: ignore[no-untyped-def]
    """SIGINT raises KeyboardInterrupt while the test runs, whatever this process inherited: under a
    shell's background job (``make test &``) SIGINT is ignored, and ``interrupt_main`` then does
    nothing."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def interrupt_when(out: Path, lines: int, hold: float | threading.Event) -> Callable[..., None]:
    """A fake server's ``fail`` hook: Ctrl-C (KeyboardInterrupt in the main thread) once the manifest
    holds ``lines`` lines; from then on every answer is held back (``hold`` seconds, or until the
    event is set), so the batch cannot finish before the interrupt reaches it, however busy the
    machine (a watcher thread polling the manifest lost that race on a loaded runner)."""
    fired = threading.Event()

    def hook(_model: str, _values: dict[str, np.ndarray]) -> None:
        if not fired.is_set():
            path = out / "manifest.jsonl"
            if path.exists() and len(path.read_text().splitlines()) >= lines:
                fired.set()
                _thread.interrupt_main()
        if fired.is_set():
            if isinstance(hold, threading.Event):
                hold.wait(30)
            else:
                time.sleep(hold)

    return hook


def big_catalogue(tmp_path: Path, rows: int) -> Path:
    write_photo(tmp_path / "p.png", 50)
    path = tmp_path / "big.csv"
    path.write_text("sku,photo\n" + "".join(f"S{i},p.png\n" for i in range(rows)))
    return path


@pytest.mark.usefixtures("python_sigint")
def test_ctrl_c_leaves_a_consistent_manifest_and_resume_finishes(tmp_path: Path) -> None:
    cat, out = big_catalogue(tmp_path, 40), tmp_path / "out"
    server = StudioServer(delay_s=0.02, fail=interrupt_when(out, 6, hold=0.2))
    stopped = run(cat, out, server, plan="cutout,white", concurrency=4, grace_s=2.0)
    assert stopped.interrupted and 6 <= stopped.written < 80
    entries = assert_consistent(out)
    assert len(entries) == stopped.written  # the tally is exactly what the manifest lists
    assert not list(out.glob("*/.*ecomgen-tmp"))
    rest = run(cat, out, StudioServer(), plan="cutout,white", concurrency=4)
    assert not rest.interrupted and rest.resumed == stopped.written
    assert rest.written + rest.resumed == 80 and len(assert_consistent(out)) == 80


@pytest.mark.usefixtures("python_sigint")
def test_ctrl_c_with_slow_requests_gives_up_waiting_after_the_grace(tmp_path: Path) -> None:
    cat, out = big_catalogue(tmp_path, 12), tmp_path / "out"
    release = threading.Event()
    server = StudioServer(delay_s=0.3, fail=interrupt_when(out, 1, hold=release))
    start = time.monotonic()
    stopped = run(cat, out, server, plan="white", concurrency=3, grace_s=0.0)
    # Answers held until released: a batch that waited for them would not be back yet.
    assert stopped.interrupted and time.monotonic() - start < 3.0
    release.set()
    time.sleep(0.5)  # the requests that were in flight come back after the manifest closed
    entries = assert_consistent(out)
    assert len(entries) == stopped.written and len(server.calls) < 12


# --- progress and CLI --------------------------------------------------------------------------------------


def test_progress_line(catalogue: Path, tmp_path: Path) -> None:
    stream = io.StringIO()
    run(catalogue, tmp_path / "out", StudioServer(), plan="white", progress=True, stream=stream)
    assert stream.getvalue().splitlines()[-1].startswith("batch 4/4 assets [" + "#" * 24 + "] 100%")
    quiet = io.StringIO()
    run(catalogue, tmp_path / "out2", StudioServer(), plan="white", progress=False, stream=quiet)
    assert quiet.getvalue() == ""


def test_cli_batch(
    catalogue: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = StudioServer()
    made: list[Any] = []

    def factory(url: Any, **kwargs: Any) -> ProductClient:
        made.append((url, kwargs))
        return ProductClient(url, transport=server, **kwargs)

    monkeypatch.setattr(batch, "ProductClient", factory)
    out = tmp_path / "out"
    argv = ["batch", str(catalogue), "--out", str(out), "--assets", "cutout,white,scenes:2", "--no-progress"]
    assert cli.main([*argv, "--url", "a:1", "--url", "b:1", "--concurrency", "2"]) == 2  # a bad row
    assert made == [(["a:1", "b:1"], {"timeout_s": 120.0, "retries": 3})]
    report = capsys.readouterr().out
    assert "15 written" in report and "3 cut-outs" not in report and "bad rows" in report
    assert cli.main([*argv, "--url", "a:1"]) == 2 and "0 written" in capsys.readouterr().out
    assert cli.main(["batch", str(catalogue), "--out", str(out), "--assets", "thumbnails"]) == 2
    assert "unknown asset" in capsys.readouterr().err


def test_one_run_at_a_time_per_output_folder(catalogue: Path, tmp_path: Path) -> None:
    from ecomgen_client._manifest import exclusive

    out = tmp_path / "out"
    with exclusive(out), pytest.raises(BlockingIOError, match="in use by another"):
        run(catalogue, out, StudioServer(), plan="white")
    assert run(catalogue, out, StudioServer(), plan="white").written == 4
