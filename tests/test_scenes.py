"""Generated scenes and multi-focus sources (mfif.scenes), and reading and writing pairs
(mfif.imageio)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from mfif.errors import ConfigError, DataError  # noqa: E402
from mfif.imageio import find_pairs, read_pair, write_image, write_pair  # noqa: E402
from mfif.scenes import LAYOUTS, demo_pair, focus_regions, multi_focus, scene  # noqa: E402


def test_synthetic_pair_is_complementary():
    truth = scene(50, 70, seed=5)
    a, b = multi_focus(truth, "blobs", seed=5)
    from_a = np.all(a == truth, axis=-1)
    from_b = np.all(b == truth, axis=-1)
    assert np.all(from_a | from_b)
    assert 0.2 < from_a.mean() < 0.8 and 0.2 < from_b.mean() < 0.8


@pytest.mark.parametrize("layout", LAYOUTS)
def test_regions_partition_the_frame(layout):
    for count, feather in ((2, 0.0), (3, 1.5)):
        regions = focus_regions(layout, 40, 52, count, seed=1, feather=feather)
        assert regions.shape == (count, 40, 52) and regions.dtype == np.float32
        np.testing.assert_allclose(regions.sum(axis=0), 1.0, atol=1e-5)
        assert all(region.max() > 0.99 for region in regions)  # every source is sharp somewhere


def test_scenes_are_seeded_and_sized():
    assert np.array_equal(scene(30, 40, seed=2), scene(30, 40, seed=2))
    assert not np.array_equal(scene(30, 40, seed=2), scene(30, 40, seed=3))
    assert scene(30, 40, colour=False).shape == (30, 40) and scene(1, 1).shape == (1, 1, 3)
    a, b, sharp = demo_pair(48, 64, colour=False)
    assert a.shape == b.shape == sharp.shape == (48, 64) and a.dtype == np.uint8
    assert np.abs(a[:, :8].astype(int) - sharp[:, :8]).mean() < np.abs(b[:, :8].astype(int) - sharp[:, :8]).mean()
    with pytest.raises(ConfigError, match="layout"):
        focus_regions("rings", 10, 10)
    with pytest.raises(ConfigError, match="count >= 2"):
        multi_focus(sharp, count=1)
    with pytest.raises(ConfigError, match="5x0"):
        scene(5, 0)


def test_pairs_round_trip_in_both_layouts(tmp_path):
    a, b, sharp = demo_pair(24, 32)
    write_pair(tmp_path / "shared", "p", [a, b], sharp)
    write_pair(tmp_path / "numbered", "g_01", [a, b], roles=("1", "2"))
    for folder, truth in (("shared", sharp), ("numbered", None)):
        (pair,) = find_pairs(tmp_path / folder)
        sources, read_truth = read_pair(pair)
        assert np.array_equal(sources[0], a) and np.array_equal(sources[1], b)
        assert (read_truth is None) == (truth is None)
    grey, _ = read_pair(find_pairs(tmp_path / "shared")[0], "grey")
    assert grey[0].shape == (24, 32)
    write_image(tmp_path / "shared" / "p_B.png", b[:, :30])
    with pytest.raises(DataError, match="p_A.png is 32x24 colour but p_B.png is 30x24 colour"):
        read_pair(find_pairs(tmp_path / "shared")[0])
