"""VITON loaders on the committed fixture pairs (and a VITON-HD-style copy at native size)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecomgen.models.tryon import ARMS, BACKGROUND, HEAD, LOWER, UPPER
from training.viton import (
    fake_tryon,
    load_pairs,
    load_regions,
    own_cloth,
    read_pairs,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "viton"


def test_paired_reads_each_persons_own_garment():
    pairs = read_pairs(FIXTURES, "test", paired=True)
    assert [p.person.name for p in pairs] == ["000001_0.jpg", "000010_0.jpg", "000020_0.jpg", "000028_0.jpg"]
    assert [p.cloth.name for p in pairs] == ["000001_1.jpg", "000010_1.jpg", "000020_1.jpg", "000028_1.jpg"]
    assert all(p.parse is not None and p.parse.exists() for p in pairs)


def test_unpaired_follows_the_pairs_file():
    pairs = read_pairs(FIXTURES, "test", paired=False)
    assert [p.cloth.name for p in pairs] == ["000010_1.jpg", "000020_1.jpg", "000028_1.jpg", "000001_1.jpg"]


def test_load_pairs_gives_uint8_images_and_regions():
    data = load_pairs(read_pairs(FIXTURES, "test"))
    assert data.person.shape == (4, 256, 192, 3) and data.person.dtype == np.uint8
    assert data.cloth.shape == (4, 256, 192, 3)
    assert data.regions.shape == (4, 256, 192)
    for regions in data.regions:  # every fixture person has a head, a top, a lower body and background
        present = set(np.unique(regions).tolist())
        assert {BACKGROUND, HEAD, UPPER, LOWER} <= present
        assert present <= {BACKGROUND, HEAD, UPPER, ARMS, LOWER}


def test_lip_labels_merge_into_regions(tmp_path):
    labels = np.array([[0, 2, 13, 5], [6, 14, 15, 9], [12, 16, 18, 3]], dtype=np.uint8)
    path = tmp_path / "parse.png"
    Image.fromarray(labels, mode="L").save(path)
    regions = load_regions(path, size=(3, 4))
    assert regions.tolist() == [
        [BACKGROUND, HEAD, HEAD, UPPER],
        [UPPER, ARMS, ARMS, LOWER],
        [LOWER, LOWER, LOWER, ARMS],
    ]


def test_native_resolution_download_is_resized(tmp_path):
    """A VITON-HD-style copy (2x size, image-parse-v3, pairs file inside the split)."""
    root = tmp_path / "viton-hd"
    split = root / "test"
    for sub in ("image", "cloth"):
        (split / sub).mkdir(parents=True)
        for f in (FIXTURES / "test" / sub).iterdir():
            Image.open(f).resize((384, 512)).save(split / sub / f.name)
    (split / "image-parse-v3").mkdir()
    for f in (FIXTURES / "test" / "image-parse").iterdir():
        Image.open(f).resize((384, 512), Image.Resampling.NEAREST).save(split / "image-parse-v3" / f.name)
    shutil.copy(FIXTURES / "test_pairs.txt", split / "test_pairs.txt")
    data = load_pairs(read_pairs(root, "test"))
    native = load_pairs(read_pairs(FIXTURES, "test"))
    assert data.person.shape == native.person.shape == (4, 256, 192, 3)
    assert (data.regions == native.regions).mean() > 0.97
    assert np.abs(data.person.astype(int) - native.person.astype(int)).mean() < 6


def test_missing_layout_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="VITON/CP-VTON layout"):
        read_pairs(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="no garment"):
        own_cloth("999_0.jpg", FIXTURES / "test" / "cloth")


def test_fake_data_has_the_same_layout():
    data = fake_tryon(3)
    assert data.person.shape == (3, 256, 192, 3) and len(data) == 3
    assert (data.regions == UPPER).any()


def test_cached_split_memory_maps_the_same_arrays(tmp_path):
    from training.viton import cached_split

    cached = cached_split(FIXTURES, "test", cache=tmp_path)
    again = cached_split(FIXTURES, "test", cache=tmp_path)  # read back, not decoded again
    direct = load_pairs(read_pairs(FIXTURES, "test"))
    assert isinstance(again.person, np.memmap)
    for name in ("person", "cloth", "regions"):
        assert np.array_equal(getattr(cached, name), getattr(direct, name))
    assert cached.gmask is not None and set(np.unique(cached.gmask).tolist()) <= {0, 1}
    assert cached.subset(np.array([2, 0])).pairs == [direct.pairs[2], direct.pairs[0]]


def test_validation_hold_out_is_stable_and_small():
    from training.viton import is_validation

    names = [f"{i:06d}_0.jpg" for i in range(4000)]
    share = np.mean([is_validation(n) for n in names])
    assert 0.015 < share < 0.045
    assert [is_validation(n) for n in names[:50]] == [is_validation(Path("x") / n) for n in names[:50]]


def test_read_pose_gives_18_keypoints_or_zeros(tmp_path):
    from training.viton import read_pose

    path = tmp_path / "p_keypoints.json"
    path.write_text('{"people": [{"pose_keypoints": [' + ", ".join(["1.5, 2.5, 0.9"] * 18) + "]}]}")
    pose = read_pose(path)
    assert pose.shape == (18, 3) and pose[17].tolist() == [1.5, 2.5, pytest.approx(0.9)]
    assert not read_pose(tmp_path / "missing.json").any()


def _tiny_release(root: Path) -> Path:
    """A folder laid out like the cp-vton-plus repository: data/<split>/..., data/*_pairs.txt."""
    data = root / "data"
    for split in ("train", "test"):
        for folder in ("image", "cloth", "cloth-mask", "image-parse", "pose"):
            (data / split / folder).mkdir(parents=True)
            (data / split / folder / "000001_0.x").write_bytes(f"{split}{folder}".encode())
        (data / f"{split}_pairs.txt").write_text("000001_0.jpg 000001_1.jpg\n")
    return root


def test_viton_full_places_from_a_folder_and_from_git(tmp_path):
    import subprocess

    from training.viton_full import compare_splits, place

    repo = _tiny_release(tmp_path / "repo")
    from_folder = place(repo, tmp_path / "a")
    assert (from_folder / "test" / "pose" / "000001_0.x").read_bytes() == b"testpose"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "data"], check=True)
    subprocess.run([*git, "commit", "-qm", "data"], check=True)
    from_git = place(repo / ".git", tmp_path / "b")
    assert compare_splits(from_git, from_folder)["identical"] is True
    (from_git / "test" / "cloth" / "000001_0.x").write_bytes(b"changed")
    check = compare_splits(from_git, from_folder)
    assert check["identical"] is False and check["folders"]["cloth"]["differ"] == 1
    assert compare_splits(tmp_path / "nowhere", from_folder)["identical"] is None
