"""Alignment of real captures: estimation (mfif.runtime.align), application in Fuser(align=...),
rig files, streams, and the commands mfif align and mfif fuse --align/--rig/--crop."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
from runtime_helpers import read_video, write_video

from mfif.cli import main
from mfif.errors import DataError, RigError
from mfif.imageio import read_image, write_image
from mfif.runtime import Fuser
from mfif.runtime.align import (MODELS, AlignmentWarning, Rig, SourceTransform, Warper, corner_error,
                                estimate_rig, similarity_matrix)

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def photos():
    """Three sharp photographs from ../shared/data/sharp (about 417x257 once the margin is cut)."""
    from mfif.benchmarks.alignment import sharp_photos

    try:
        return sharp_photos(3, seed=5)
    except DataError as exc:
        pytest.skip(f"needs the sharp photographs of ../shared/data/sharp: {exc}")


@pytest.fixture(scope="module")
def fuser():
    return Fuser()


def aligned_fuser(fuser, align) -> Fuser:
    """A Fuser on the module's loaded model with its own alignment setting."""
    twin = fuser.for_another_thread()
    twin.align = align
    return twin


def pair_from(photo, **options) -> dict:
    from mfif.benchmarks.alignment import misaligned_pair

    return misaligned_pair(photo, **options)


def psnr(image, truth, box=None) -> float:
    from mfif.benchmarks.alignment import psnr as measure

    return measure(image, truth, box)


def transform_of(model: str, width: int, height: int) -> np.ndarray:
    """A known transform of each model, of the size focus breathing and rigs produce."""
    centre = ((width - 1) / 2, (height - 1) / 2)
    if model == "translation":
        return similarity_matrix(1.0, 0.0, (6.3, -4.7), centre)
    matrix = similarity_matrix(1.03, 0.7, (5.0, -3.0), centre)
    if model == "affine":
        shear = np.array([[1.01, 0.008, 0.0], [0.0, 0.995, 0.0], [0.0, 0.0, 1.0]])
        return _about(shear, centre) @ matrix
    if model == "homography":
        tilt = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [2.5e-5, -2e-5, 1.0]])
        return _about(tilt, centre) @ matrix
    return matrix


def _about(matrix: np.ndarray, centre) -> np.ndarray:
    """``matrix`` applied about ``centre`` instead of the origin."""
    to_centre = np.array([[1.0, 0, -centre[0]], [0, 1.0, -centre[1]], [0, 0, 1.0]])
    return np.linalg.inv(to_centre) @ matrix @ to_centre


# ---- estimation ------------------------------------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
def test_a_known_transform_is_recovered_within_0_3_px(photos, model):
    index = MODELS.index(model)
    photo = photos[index % 2]
    height, width = photo.shape[0] - 64, photo.shape[1] - 64
    truth = transform_of(model, width, height)
    pair = pair_from(photo, seed=index, matrix=truth, blur=(("gaussian", "disk")[index // 2], 3.0))
    rig = estimate_rig([pair["a"], pair["b"]], model)
    source = rig.sources[1]
    assert source.status == "aligned" and source.correlation > 0.9
    assert corner_error(source.matrix, truth, width, height) <= 0.3, (model, source.matrix, truth)
    assert source.residual_px is not None and source.residual_px < 0.5


def test_alignment_brings_the_fused_result_close_to_the_registered_pair(photos, fuser):
    pair = pair_from(photos[2], seed=7, gain=(0.9, 0.95, 0.85), offset=(4.0, 0.0, 8.0))
    a, b, truth = pair["a"], pair["b"], pair["truth"]
    warper = Warper(estimate_rig([a, b]), "cubic")
    aligned = fuser.fuse(warper.apply([a, b]))
    registered = fuser.fuse(Warper(estimate_rig([a, pair["b_registered"]]), "cubic").apply([a, pair["b_registered"]]))
    box = warper.common_area()
    assert box[2] * box[3] > 0.8 * a.shape[0] * a.shape[1]
    unaligned = psnr(fuser(a, b), truth, box)
    # Resampling B costs some of its sharpness (docs/alignment.md); the misalignment's ghosts are gone.
    assert psnr(aligned, truth, box) > unaligned + 8.0
    assert psnr(aligned, truth, box) > psnr(registered, truth, box) - 2.5
    # What the estimate loses, apart from resampling: B warped with the true transform (and the
    # estimated gain) sets the floor, and the estimated transform comes within 0.5 dB of it.
    rig = warper.rig
    true_rig = dataclasses.replace(rig, sources=[rig.sources[0], dataclasses.replace(rig.sources[1],
                                                                                     matrix=pair["matrix"])])
    oracle = fuser.fuse(Warper(true_rig, "cubic").apply([a, b]))
    assert psnr(aligned, truth, box) > psnr(oracle, truth, box) - 0.5


def test_gain_and_offset_per_channel_are_recovered(photos):
    gain, offset = np.array([0.9, 0.8, 0.95]), np.array([6.0, 12.0, -4.0])
    pair = pair_from(photos[0], seed=1, gain=tuple(gain), offset=tuple(offset))
    source = estimate_rig([pair["a"], pair["b"]]).sources[1]
    # The correction (gain_c * value + offset_c) must undo B's (gain * value + offset).
    for value in (40.0, 128.0, 210.0):
        corrected = np.array(source.gain) * (gain * value + offset) + np.array(source.offset)
        assert np.abs(corrected - value).max() < 3.0, (source.gain, source.offset)
    registered = estimate_rig([pair["a"], pair["b_registered"]]).sources[1]
    assert registered.geometric_identity and registered.status == "registered"
    assert not registered.photometric_identity   # the exposure difference alone is still corrected


def _no_overlap(photo):
    half = photo.shape[1] // 2
    return photo[:, :half - 10].copy(), photo[:, half + 10:2 * half].copy()


@pytest.mark.parametrize("case", ["flat", "turned 90 degrees", "no overlap"])
def test_estimation_falls_back_to_identity_with_a_warning_naming_the_source(photos, fuser, case):
    photo = photos[1]
    if case == "flat":
        a, b = photo, np.full_like(photo, 117)
    elif case == "turned 90 degrees":
        side = min(photo.shape[:2])
        a = np.ascontiguousarray(photo[:side, :side])
        b = np.ascontiguousarray(cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE))
    else:
        a, b = _no_overlap(photo)
    with pytest.warns(AlignmentWarning, match=r"cannot align B\.png \(source 1\)"):
        rig = estimate_rig([a, b], names=["A.png", "B.png"])
    source = rig.sources[1]
    assert source.status.startswith("fallback: ") and source.geometric_identity
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AlignmentWarning)
        aligned = aligned_fuser(fuser, "each")(a, b)
    assert np.array_equal(aligned, fuser(a, b))   # unaligned, not warped: no wild warp, no crash


# ---- application -----------------------------------------------------------------------------

def _rig(width: int, height: int, *matrices) -> Rig:
    sources = [SourceTransform(np.eye(3), (1.0,) * 3, (0.0,) * 3, status="reference")]
    sources += [SourceTransform(m, (1.0,) * 3, (0.0,) * 3) for m in matrices]
    return Rig((width, height), 3, 0, "similarity", sources)


def test_pixels_a_warped_source_does_not_cover_get_weight_0(photos, fuser):
    pair = pair_from(photos[0], seed=2)
    a, b = pair["a"], pair["b"]
    height, width = a.shape[:2]
    shifted = similarity_matrix(1.0, 0.0, (9.5, -6.25))
    rig = _rig(width, height, shifted)
    aligned = aligned_fuser(fuser, rig)
    fused, weights = aligned.fuse([a, b], return_weights=True)
    coverage = aligned.alignment.coverage
    outside = coverage[1] == 0
    assert outside[:, -9:].all() and outside[:7].all() and not outside[10:-10, 10:-12].any()
    assert np.all(weights[1][outside] == 0) and np.allclose(weights.sum(axis=0), 1.0, atol=1e-5)
    assert np.abs(fused[outside].astype(int) - a[outside]).max() <= 1   # there the result is A
    # Three sources: the uncovered source's weight goes to the others, and the frame is blended again.
    third = similarity_matrix(1.0, 0.0, (-7.0, 5.0))
    rig3 = Rig((width, height), 3, 1, "similarity",
               [SourceTransform(shifted, (1.0,) * 3, (0.0,) * 3), SourceTransform(np.eye(3), status="reference"),
                SourceTransform(third, (1.0,) * 3, (0.0,) * 3)])
    fuser3 = aligned_fuser(fuser, rig3)
    blurred = cv2.GaussianBlur(b, (0, 0), 2.0)
    fused3, weights3 = fuser3.fuse([b, a, blurred], return_weights=True)
    coverage3 = fuser3.alignment.coverage
    for k in (0, 2):
        assert np.all(weights3[k][coverage3[k] == 0] == 0)
    assert np.allclose(weights3.sum(axis=0), 1.0, atol=1e-5)
    frames = fuser3.alignment.warper.apply([b, a, blurred])
    expected = sum(w[..., None] * f.astype(np.float32) for w, f in zip(weights3, frames))
    assert np.abs(fused3 - expected).max() <= 1.0


def test_a_registered_pair_skips_the_warp_and_comes_out_bit_identical(photos, fuser):
    pair = pair_from(photos[1], seed=3, matrix=np.eye(3))
    frames = [pair["a"], pair["b_registered"]]
    aligned = aligned_fuser(fuser, "each")
    assert np.array_equal(aligned.fuse(frames), fuser.fuse(frames))
    source = aligned.alignment.rig.sources[1]
    assert source.status == "registered" and source.geometric_identity and source.photometric_identity
    assert aligned.alignment.warper.identity and aligned.alignment.coverage is None


def test_common_area_and_crop(photos, fuser, tmp_path, capsys):
    pair = pair_from(photos[2], seed=4, matrix=similarity_matrix(1.02, 0.5, (6.0, 4.0), (180, 120)))
    write_image(tmp_path / "A.png", pair["a"])
    write_image(tmp_path / "B.png", pair["b"])
    assert main(["fuse", str(tmp_path / "A.png"), str(tmp_path / "B.png"), "-o", str(tmp_path / "f.png"), "--crop"]) == 0
    out = capsys.readouterr().out
    assert "aligned onto A.png (similarity)" in out and "B.png" in out
    cropped = read_image(tmp_path / "f.png")
    aligned = aligned_fuser(fuser, "each")
    aligned(pair["a"], pair["b"])
    x, y, width, height = aligned.alignment.common_area()
    assert cropped.shape[:2] == (height, width) and width < pair["a"].shape[1] and height < pair["a"].shape[0]
    assert aligned.alignment.coverage[1][y:y + height, x:x + width].all()


# ---- rigs, streams and commands --------------------------------------------------------------

def test_a_rig_file_round_trips_and_drives_a_fuser(photos, fuser, tmp_path):
    pair = pair_from(photos[0], seed=5, gain=(0.9, 1.0, 1.1), offset=(3.0, 0.0, -5.0))
    rig = estimate_rig([pair["a"], pair["b"]])
    path = rig.save(tmp_path / "rig.json")
    loaded = Rig.load(path)
    assert loaded.frame_size == rig.frame_size and loaded.reference == 0 and loaded.model == "similarity"
    for mine, theirs in zip(rig.sources, loaded.sources):
        assert np.allclose(mine.matrix, theirs.matrix, atol=1e-9)
        assert np.allclose(mine.gain, theirs.gain, atol=1e-6) and np.allclose(mine.offset, theirs.offset, atol=1e-4)
        assert mine.status == theirs.status
    from_file = aligned_fuser(fuser, str(path))
    from_object = aligned_fuser(fuser, rig)
    assert np.array_equal(from_file(pair["a"], pair["b"]), from_object(pair["a"], pair["b"]))
    assert from_file.align == "rig"


def test_bad_rig_files_say_what_is_wrong(photos, fuser, tmp_path):
    a = pair_from(photos[0], seed=6)["a"]
    height, width = a.shape[:2]
    rig = _rig(width, height, similarity_matrix(1.0, 0.0, (2.0, 1.0)))
    data = rig.to_dict()
    path = tmp_path / "rig.json"
    path.write_text(json.dumps({**data, "version": 7}))
    with pytest.raises(RigError, match="version 7; this mfif reads rig version 1"):
        Rig.load(path)
    path.write_text("{not json")
    with pytest.raises(RigError, match="not readable JSON"):
        Rig.load(path)
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(RigError, match="not an mfif rig"):
        Rig.load(path)
    with pytest.raises(RigError, match="rig file not found"):
        Rig.load(tmp_path / "missing.json")
    rig.save(path)
    with pytest.raises(RigError, match=r"is for 2 sources, but 3 frames were given"):
        aligned_fuser(fuser, path).fuse([a, a, a])
    small = np.ascontiguousarray(a[:120, :160])
    with pytest.raises(RigError, match=rf"made for {width}x{height} frames, but these are 160x120"):
        aligned_fuser(fuser, path)(small, small)
    assert main(["fuse", str(tmp_path / "x.png"), str(tmp_path / "y.png"), "--rig", str(tmp_path / "missing.json"),
                 "-o", str(tmp_path / "f.png")]) == 2


def test_a_bracketing_source_gets_one_transform_per_position(tmp_path):
    from mfif.scenes import demo_pair

    near, far, sharp = demo_pair(240, 320, seed=2)
    middle = cv2.GaussianBlur(sharp, (0, 0), 1.0)
    height, width = near.shape[:2]
    centre = ((width - 1) / 2, (height - 1) / 2)
    truths = [similarity_matrix(1.025, 0.0, (0.0, 0.0), centre), np.eye(3), similarity_matrix(1.0, 0.0, (5.0, -3.0))]
    # position k shows at pixel truth_k p what the middle position shows at p
    positions = [cv2.warpPerspective(frame, truth, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
                 for frame, truth in zip((near, middle, far), truths)]
    video = write_video(tmp_path / "bracket.avi", positions * 4)
    fuser = Fuser(align="once")
    with fuser.stream(str(video), bracket=3) as stream:
        fused = list(stream)
    assert len(fused) == 4 and fused[0].shape == near.shape
    rig = fuser.alignment.rig
    assert rig.count == 3 and rig.reference == 1
    for truth, source in zip(truths, rig.sources):
        assert corner_error(source.matrix, truth, width, height) < 0.5, (source.matrix, truth)
    fuser.realign()
    assert fuser.alignment.rig is None


def test_mfif_align_writes_a_rig_that_mfif_fuse_applies_to_videos(photos, tmp_path, capsys):
    pair = pair_from(photos[1], seed=8, matrix=similarity_matrix(1.015, -0.4, (-5.0, 3.0), (180, 120)))
    a, b = pair["a"][:240, :320], pair["b"][:240, :320]
    write_image(tmp_path / "A.png", a)
    write_image(tmp_path / "B.png", b)
    assert main(["align", str(tmp_path / "A.png"), str(tmp_path / "B.png"), "-o", str(tmp_path / "rig.json")]) == 0
    out = capsys.readouterr().out
    assert "reference A.png" in out and "resid px" in out and "wrote" in out
    rig = Rig.load(tmp_path / "rig.json")
    assert rig.sources[1].status == "aligned" and abs(rig.sources[1].scale - 1.015) < 0.003
    videos = [write_video(tmp_path / f"{name}.avi", [frame] * 5) for name, frame in (("a", a), ("b", b))]
    output = tmp_path / "fused.avi"
    assert main(["fuse", "--video", str(videos[0]), str(videos[1]), "--rig", str(tmp_path / "rig.json"),
                 "-o", str(output), "--preview", "off"]) == 0
    assert len(read_video(output)) == 5
    assert main(["fuse", "--video", str(videos[0]), str(videos[1]), "--rig", str(tmp_path / "rig.json"),
                 "--align", "each", "-o", str(output)]) == 2
    assert "does not go with --align each" in capsys.readouterr().err


def test_no_align_and_align_agree_on_a_registered_pair(tmp_path, capsys):
    from mfif.scenes import demo_pair

    a, b, _ = demo_pair(120, 160)
    write_image(tmp_path / "A.png", a)
    write_image(tmp_path / "B.png", b)
    for name, extra in (("aligned", []), ("plain", ["--no-align"])):
        assert main(["fuse", str(tmp_path / "A.png"), str(tmp_path / "B.png"), "-o", str(tmp_path / f"{name}.png"),
                     *extra]) == 0
    assert "registered" in capsys.readouterr().out
    assert np.array_equal(read_image(tmp_path / "aligned.png"), read_image(tmp_path / "plain.png"))


def test_parallax_is_what_a_global_transform_cannot_fix(photos, fuser):
    """Two side-by-side cameras: the far layer shifts 2 px, the near one 6 px. One transform can
    match one depth only: measured here, the layer it does not match keeps ghosts (docs/alignment.md)."""
    from mfif.benchmarks.alignment import parallax_pair

    pair = parallax_pair(photos[2], seed=1)
    a, b, truth, near = pair["a"], pair["b"], pair["truth"], pair["near"]
    height, width = a.shape[:2]
    rig = estimate_rig([a, b])
    found = rig.sources[1].shift(width, height)[0]
    assert 2.0 - 0.5 < found < 6.0 + 0.5               # somewhere between the two depths
    aligned = fuser.fuse(Warper(rig, "cubic").apply([a, b]))
    no_parallax = fuser(a, pair["b_registered"])
    losses = [psnr(no_parallax[layer], truth[layer]) - psnr(aligned[layer], truth[layer]) for layer in (near, ~near)]
    assert max(losses) > 3.0                          # the mismatched layer loses more than 3 dB
    assert psnr(aligned, truth) > psnr(fuser(a, b), truth) + 1.0   # still better than not aligning


def test_grey_float_and_tiny_frames(fuser):
    from mfif.scenes import demo_pair

    a, b, _ = demo_pair(120, 160, seed=4)
    truth = similarity_matrix(1.02, 0.3, (3.0, -2.0), (79.5, 59.5))
    b = cv2.warpPerspective(b, truth, (160, 120), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    aligned = aligned_fuser(fuser, "each")
    for frames in ([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in (a, b)], [f.astype(np.float32) / 255 for f in (a, b)]):
        fused = aligned.fuse(frames)           # float frames stay in [0, 1] through bicubic resampling
        assert fused.shape == frames[0].shape and fused.dtype == frames[0].dtype
        assert corner_error(aligned.alignment.rig.sources[1].matrix, truth, 160, 120) < 0.5
    tiny = np.random.default_rng(0).integers(0, 256, (5, 3, 3), dtype=np.uint8)
    with pytest.warns(AlignmentWarning, match="too small to align"):
        assert np.array_equal(aligned(tiny, tiny), fuser(tiny, tiny))
