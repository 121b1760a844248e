"""Try-on metrics: SSIM conventions, arm positions, arm and hand preservation, warp smoothness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecomgen.models.tryon import ARMS, UPPER
from training.tryon import second_order_smoothness
from training.tryon_ablate import fold_share
from training.tryon_metrics import arm_position, arm_preservation, paired_scores, sleeve_ends, ssim_skimage


def test_skimage_convention_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 40, 30, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-50, 50, a.shape), 0, 255).astype(np.uint8)
    want = [metrics.structural_similarity(a[i], b[i], channel_axis=2, data_range=255) for i in range(2)]
    np.testing.assert_allclose(ssim_skimage(a, b), want, rtol=1e-9)


def test_paired_scores_both_conventions_differ_and_are_one_for_copies():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 64, 48, 3), dtype=np.uint8)
    same = paired_scores(a, a)
    assert np.allclose(same["ssim"], 1, atol=1e-5) and np.allclose(same["ssim_skimage"], 1)
    b = np.clip(a.astype(int) + 30, 0, 255).astype(np.uint8)
    s = paired_scores(b, a)
    assert not np.allclose(s["ssim"], s["ssim_skimage"])


def test_arm_position_runs_shoulder_elbow_wrist_and_beyond():
    chain = np.array([[10.0, 10.0], [10.0, 30.0], [10.0, 50.0]])
    t, d = arm_position(np.array([[10.0, 10.0], [12.0, 20.0], [10.0, 50.0], [10.0, 60.0]]), chain)
    np.testing.assert_allclose(t, [0, 0.5, 2, 2.5])
    np.testing.assert_allclose(d, [0, 2, 0, 0])


def _arm_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A person with one vertical bare arm (x 8..12, y 10..60), skin colour (200, 150, 120)."""
    regions = np.zeros((64, 32), np.uint8)
    regions[5:10, 5:25] = UPPER
    regions[10:60, 8:13] = ARMS
    person = np.full((64, 32, 3), 255, np.uint8)
    person[regions == ARMS] = (200, 150, 120)
    pose = np.zeros((18, 3), np.float32)
    pose[2:5] = [[10, 10, 1], [10, 30, 1], [10, 50, 1]]  # right shoulder, elbow, wrist
    return person, regions, pose


def test_arm_preservation_requires_only_what_no_sleeve_covers():
    person, regions, pose = _arm_scene()
    kept, required = arm_preservation(person, person, regions, pose, [0.0, None])
    assert kept == required > 0  # a copy keeps every required pixel
    _, fewer = arm_preservation(person, person, regions, pose, [1.5, None])
    assert 0 < fewer < required  # a long sleeve (to mid forearm) excuses the upper part
    covered = person.copy()
    covered[regions == ARMS] = (20, 20, 160)  # the garment painted over the whole arm
    kept, required = arm_preservation(covered, person, regions, pose, [0.0, None])
    assert kept == 0 and required > 0
    assert arm_preservation(person, person, regions, pose, [None, None]) == (0, 0)  # no keypoints


def test_sleeve_end_is_where_the_wearers_skin_starts():
    _, regions, pose = _arm_scene()
    assert sleeve_ends(regions, pose)[0] == pytest.approx(0.0, abs=0.15)
    regions[regions == ARMS] = UPPER  # long sleeves: no skin on that arm
    assert sleeve_ends(regions, pose) == [2.0, None]


def test_second_order_smoothness_ignores_affine_flow_and_folds_are_found():
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 24), indexing="ij")
    affine = torch.stack([0.1 * xs + 0.05 * ys, -0.2 * ys])[None]
    assert second_order_smoothness(affine) < 1e-6
    assert second_order_smoothness(torch.randn(1, 2, 32, 24)) > 0.1
    region = torch.ones(1, 1, 32, 24)
    assert fold_share(affine, region) == 0
    mirror = torch.stack([-2 * xs, torch.zeros_like(ys)])[None]  # x -> -x: every pixel folds
    assert fold_share(mirror, region) > 0.9
