"""Large frames: fused in tiles when the whole frame would not fit the memory limit, with a result
equal to the untiled one; clear errors for frames over max_pixels or too large for any tile."""

from __future__ import annotations

import numpy as np
import pytest
from runtime_helpers import demo_frames

from mfif.errors import ConfigError, InputError
from mfif.runtime import Fuser
from mfif.runtime.fuser import WORKING_BYTES_PER_PIXEL_PER_SOURCE

pytest.importorskip("onnxruntime")


def limit_for_tiles(frames, side: int) -> int:
    """A memory_limit that makes the Fuser choose tiles of about ``side`` for these frames (with the
    shipped model's overlap: its receptive radius rounded up to its pad multiple)."""
    info = Fuser(memory_limit=None).info
    margin = -(-info.receptive_radius // info.pad_to) * info.pad_to
    io_bytes = sum(frame.nbytes for frame in frames) + frames[0].nbytes
    return io_bytes + (side + 2 * margin + 16) ** 2 * WORKING_BYTES_PER_PIXEL_PER_SOURCE * len(frames)


@pytest.fixture(scope="module")
def frames():
    a, b, _ = demo_frames(700, 1000, seed=4)   # not a multiple of the pad grid (32) on either axis
    return [a, b]


def test_tiles_give_the_untiled_result(frames):
    whole, whole_weights = Fuser(memory_limit=None)(*frames, return_weights=True)
    tiled_fuser = Fuser(memory_limit=limit_for_tiles(frames, 256))
    side = tiled_fuser._tile_side(frames, 0.0)
    assert side is not None and side <= 288                  # 3 x 4 tiles or more, not one
    tiled, tiled_weights = tiled_fuser(*frames, return_weights=True)
    assert tiled.shape == whole.shape and tiled.dtype == whole.dtype
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1
    np.testing.assert_allclose(tiled_weights, whole_weights, atol=2e-3)
    assert tiled_fuser.stats.last_ms["compute"] > 0


def test_tiles_with_alignment_give_the_untiled_result(frames):
    import cv2

    shift = np.float32([[1, 0, 3.0], [0, 1, -2.0]])
    moved = cv2.warpAffine(frames[1], shift, (frames[1].shape[1], frames[1].shape[0]), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)
    pair = [frames[0], moved]
    whole = Fuser(memory_limit=None, align="each")(*pair)
    tiled = Fuser(memory_limit=limit_for_tiles(pair, 320), align="each")(*pair)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1


def test_frames_over_max_pixels_are_refused_by_name(frames):
    fuser = Fuser(max_pixels=500_000)
    with pytest.raises(InputError, match=r"frames of 1000x700 \(0\.7 megapixels\) exceed max_pixels=500000"):
        fuser(*frames)
    with pytest.raises(ConfigError, match="max_pixels must be >= 1"):
        Fuser(max_pixels=0)
    with pytest.raises(ConfigError, match="memory_limit must be a number of bytes > 0"):
        Fuser(memory_limit=-1)


def test_a_limit_too_small_for_any_tile_names_the_sizes(frames):
    fuser = Fuser(memory_limit=4 * 2**20)
    with pytest.raises(InputError, match=r"frames of 1000x700 \(0\.7 megapixels, 2 sources\) do not fit "
                                         r"memory_limit=0\.00 GiB even in tiles"):
        fuser(*frames)


def test_smoothing_needs_the_whole_frame(frames):
    fuser = Fuser(memory_limit=limit_for_tiles(frames, 256), smoothing=0.5)
    with pytest.raises(ConfigError, match="temporal smoothing needs the whole frame"):
        fuser(*frames)


def test_fuse_command_tiles_large_images_and_refuses_ones_over_max_pixels(tmp_path, frames, capsys):
    from mfif.cli import main
    from mfif.imageio import read_image, write_image

    paths = [str(write_image(tmp_path / "a.png", frames[0])), str(write_image(tmp_path / "b.png", frames[1]))]
    common = ["fuse", *paths, "--no-align"]
    assert main([*common, "-o", str(tmp_path / "whole.png"), "--memory-limit", "8"]) == 0
    limit_gib = limit_for_tiles(frames, 256) / 2**30
    assert main([*common, "-o", str(tmp_path / "tiled.png"), "--memory-limit", f"{limit_gib:.4f}"]) == 0
    whole, tiled = read_image(tmp_path / "whole.png"), read_image(tmp_path / "tiled.png")
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1
    capsys.readouterr()
    assert main([*common, "-o", str(tmp_path / "refused.png"), "--max-pixels", "100000"]) == 2
    assert "is 1000x700 (0.7 megapixels), over the limit of 0.1 megapixels" in capsys.readouterr().err
    assert main([*common, "-o", str(tmp_path / "x.png"), "--memory-limit", "0"]) == 2
    assert "--memory-limit must be a number of GiB > 0, not 0.0" in capsys.readouterr().err
