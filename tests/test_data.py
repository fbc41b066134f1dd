"""Training data: synthetic pairs (ground truth, where the blur lands), photo loading with the
manifest and bad files, reproducibility, the validation split, real-pair crops."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
torch = pytest.importorskip("torch")

from mfif.errors import ConfigError, DataError  # noqa: E402
from mfif.scenes import blur, disk_kernel, scene  # noqa: E402
from mfif.train.data import (DataWarning, RealPairCrops, SynthConfig, SyntheticPairs,  # noqa: E402
                        focus_regions, is_validation, layer_masks, load_photos, make_sample, validation_set)


PHOTO = (160, 200)  # height and width of the generated photos (mfif.scenes: detail everywhere to blur)


def write_photos(folder, count: int, size=(160, 200)):
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"photo{i:02d}.png"
        cv2.imwrite(str(folder / name), scene(*size, seed=i))
        names.append(name)
    return names


def high_frequency(image: np.ndarray) -> np.ndarray:
    """Local energy of the Laplacian per pixel (channels averaged)."""
    lap = np.abs(np.stack([cv2.Laplacian(np.ascontiguousarray(c), cv2.CV_32F) for c in image])).mean(0)
    return cv2.blur(lap, (5, 5))


def test_ground_truth_is_the_sharp_photo_and_blur_lands_where_the_mask_says():
    config = SynthConfig(crop=96, grey_fraction=0.0).clean()
    for seed in range(4):
        sample = make_sample(scene(*PHOTO, seed=seed), np.random.default_rng(seed), config)
        sources, truth, focus = sample["sources"], sample["truth"], sample["focus"]
        assert sources.shape == (2, 3, 96, 96) and truth.shape == (3, 96, 96) and focus.shape == (2, 96, 96)
        assert np.allclose(focus.sum(0), 1.0, atol=1e-5)
        for k in range(2):
            sharp, blurred = focus[k] > 0.999, focus[k] < 0.001
            assert sharp.sum() > 100 or blurred.sum() > 100
            # In focus: the ground truth (a pixel strays from it by at most its blurred share 1 - focus).
            # Out of focus: blurred (much less high-frequency energy).
            assert (np.abs(sources[k] - truth) <= (1 - focus[k]) + 1e-6).all()
            assert np.abs(sources[k][:, sharp] - truth[:, sharp]).max() < 2e-3
            if blurred.sum() > 100:
                assert np.abs(sources[k][:, blurred] - truth[:, blurred]).mean() > 0.01
                assert high_frequency(sources[k])[blurred].mean() < 0.5 * high_frequency(truth)[blurred].mean()
        # A is blurred where the mask (B's region) is set, B on the complement.
        assert np.allclose(focus[0] + focus[1], 1.0, atol=1e-5)


def test_grey_samples_and_three_sources():
    grey = make_sample(scene(*PHOTO, seed=1), np.random.default_rng(0), SynthConfig(crop=64, channels=1))
    assert grey["sources"].shape == (2, 1, 64, 64) and grey["truth"].shape == (1, 64, 64)
    grey3 = make_sample(scene(*PHOTO, seed=1), np.random.default_rng(0), SynthConfig(crop=64, grey_fraction=1.0))
    assert np.array_equal(grey3["sources"][:, 0], grey3["sources"][:, 2])
    three = make_sample(scene(*PHOTO, seed=2), np.random.default_rng(3), SynthConfig(crop=64, sources=3))
    assert three["sources"].shape == (3, 3, 64, 64) and three["focus"].shape == (3, 64, 64)
    assert np.allclose(three["focus"].sum(0), 1.0, atol=1e-5) and three["focus"].min() >= 0


def test_blur_kernels():
    kernel = disk_kernel(4.0)
    assert kernel.shape == (9, 9) and abs(kernel.sum() - 1) < 1e-6 and kernel[4, 4] > kernel[0, 0]
    image = scene(*PHOTO, seed=0).astype(np.float32) / 255
    for kind in ("gaussian", "disk"):
        out = blur(image, kind, 3.0)
        assert out.shape == image.shape and abs(out.mean() - image.mean()) < 0.01
        assert np.abs(np.diff(out, axis=1)).mean() < 0.5 * np.abs(np.diff(image, axis=1)).mean()
    with pytest.raises(ConfigError, match="blur kind"):
        blur(image, "box", 3.0)


def test_regions_partition():
    masks = layer_masks(np.random.default_rng(0), 50, 70, 4, feather=2.0)
    regions = focus_regions(masks)
    assert masks.shape == (3, 50, 70) and regions.shape == (4, 50, 70)
    assert np.allclose(regions.sum(0), 1, atol=1e-5) and regions.min() >= 0
    np.testing.assert_allclose(regions[3], masks[2])          # the front layer is never covered


def test_blurred_front_layer_spills_over_the_sharp_background():
    clean = SynthConfig(crop=96, grey_fraction=0.0, sigma_range=(2.5, 3.0)).clean()
    spill = SynthConfig(**{**clean.__dict__, "occlusion_fraction": 1.0})
    checked = 0
    for seed in range(6):
        plain = make_sample(scene(*PHOTO, seed=seed), np.random.default_rng(seed), clean)
        layered = make_sample(scene(*PHOTO, seed=seed), np.random.default_rng(seed), spill)
        truth, focus = layered["truth"], layered["focus"][0]
        np.testing.assert_array_equal(plain["truth"], truth)       # same photo, masks and blurs
        covered = cv2.dilate((focus < 0.99).astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        near = (focus >= 0.99) & covered                           # background, next to the object
        far = cv2.erode((focus > 0.999).astype(np.uint8), np.ones((31, 31), np.uint8)).astype(bool)
        if near.sum() < 50 or far.sum() < 50:
            continue
        checked += 1
        error = lambda sample, where: np.abs(sample["sources"][0][:, where] - truth[:, where]).mean()  # noqa: E731
        # Far from the blurred object the background is the sharp photo in both; next to it, the
        # object's blur spills over the background only in the layered model.
        assert error(layered, far) < 1e-3 and error(plain, far) < 1e-3
        assert error(layered, near) > 2 * error(plain, near)
    assert checked >= 2


def test_items_are_reproducible_with_a_seed():
    photos = [scene(*PHOTO, seed=i) for i in range(3)]
    config = SynthConfig(crop=48)
    first, second = SyntheticPairs(photos, config, 4, seed=7), SyntheticPairs(photos, config, 4, seed=7)
    for i in range(4):
        assert torch.equal(first[i]["sources"], second[i]["sources"])
        assert torch.equal(first[i]["truth"], second[i]["truth"])
    other_seed = SyntheticPairs(photos, config, 4, seed=8)
    assert not torch.equal(first[0]["sources"], other_seed[0]["sources"])
    second.set_epoch(1)
    assert not torch.equal(first[0]["sources"], second[0]["sources"])


def test_load_photos_skips_flagged_unreadable_and_tiny(tmp_path):
    names = write_photos(tmp_path / "set", 6)
    (tmp_path / "set" / "broken.jpg").write_bytes(b"not a jpeg at all")
    cv2.imwrite(str(tmp_path / "set" / "tiny.png"), scene(20, 30, seed=9))
    (tmp_path / "MANIFEST.csv").write_text("filename,flags\n" + "".join(
        f"set/{name},{'defocus_suspect' if i == 0 else ''}\n" for i, name in enumerate(names)))
    with pytest.warns(DataWarning, match=r"skipped 2 of 8 images.*1 unreadable \(set/broken.jpg\).*1 smaller"):
        photos = load_photos(tmp_path, split="all")
    assert len(photos) == 5                       # 6 photos minus the flagged one
    assert all(p.dtype == np.uint8 and p.shape == (160, 200, 3) for p in photos)


def test_load_photos_bad_folders(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_photos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_photos(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"\x89PNG broken")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError, match="no usable photos.*1 unreadable"):
            load_photos(tmp_path / "bad", split="all")
    with pytest.raises(ConfigError):
        load_photos(tmp_path, split="test")


def test_validation_split_is_fixed_and_disjoint(tmp_path):
    names = write_photos(tmp_path, 40, size=(80, 100))
    val_names = [n for n in names if is_validation(n)]
    assert 0 < len(val_names) < len(names)
    assert len(load_photos(tmp_path, "val")) == len(val_names)
    assert len(load_photos(tmp_path, "train")) == len(names) - len(val_names)
    config = SynthConfig(crop=48)
    first, second = validation_set(tmp_path, config, count=3), validation_set(tmp_path, config, count=3)
    assert all(torch.equal(a["sources"], b["sources"]) and torch.equal(a["truth"], b["truth"])
               for a, b in zip(first, second))


def test_real_pair_crops(tmp_path):
    for i, size in enumerate([(120, 150), (40, 50)]):
        photo = scene(*size, seed=i)
        cv2.imwrite(str(tmp_path / f"p{i}_A.png"), photo)
        cv2.imwrite(str(tmp_path / f"p{i}_B.png"), cv2.GaussianBlur(photo, (0, 0), 3))
    with pytest.warns(DataWarning, match="skipped 1 real pairs: p1"):
        data = RealPairCrops([tmp_path], crop=64, length=5)
    item = data[0]
    assert set(item) == {"sources"} and item["sources"].shape == (2, 3, 64, 64)
    with pytest.warns(DataWarning):
        again = RealPairCrops([tmp_path], crop=64, length=5)
    assert torch.equal(data[3]["sources"], again[3]["sources"])
    with pytest.warns(DataWarning), pytest.raises(DataError, match="no usable real pairs"):
        RealPairCrops([tmp_path], crop=200, length=5)


def test_config_errors():
    with pytest.raises(ConfigError):
        SynthConfig(crop=8)
    with pytest.raises(ConfigError):
        SynthConfig(sigma_range=(5.0, 2.0))
    with pytest.raises(ConfigError):
        SynthConfig(channels=2)
