"""Alignment benchmark (docs/alignment.md): how well and how fast ``mfif.runtime.align`` registers
real-looking captures, and what it costs the paths that use it.

    python -m mfif.benchmarks.alignment                      # every section
    python -m mfif.benchmarks.alignment --sections accuracy,speed --pairs 24

Sections:
- ``accuracy``: misaligned synthetic pairs made from the sharp photographs in ../shared/data/sharp
  (B magnified 1.00-1.05, turned by up to 1 degree, shifted by up to 10 px; Gaussian or disk blur;
  another gain and offset per channel): corner error per transform model, and the fused PSNR
  against the ground truth of source A alone, no alignment, alignment, and the same pair
  registered (whole frame, and the area every source covers).
- ``speed``: estimation time of a 520x520 pair on one core (median and best of repeated runs).
- ``registered``: the real pair sets of ../shared/data/pairs through ``Fuser(align="each")``: how
  many are found registered and fuse bit-identically to ``align="off"``, and how far the others
  are out of register.
- ``parallax``: a depth-dependent shift (near layer 6 px, far layer 2 px): what a global transform
  leaves, and what a dense refinement (OpenCV DIS optical flow) would change.
- ``folder``: twenty misaligned 520x520 pairs fused with alignment by one ``mfif fuse`` process
  against twenty enfuse runs (which do not align), both writing LZW TIFF.
- ``stream``: a 640x480 pair of videos fused with a fixed rig against without alignment.
- ``stack``: the real stack ../shared/data/stacks/pcb_sweep10 through ``mfif align --stack`` (the
  chained scale factors and residuals) and ``mfif fuse --stack`` with and without alignment; writes
  before/after crops to docs/ with ``--crops``.

Every section prints a short table; all figures go to ``--json``. The synthetic pair makers here are
also what the tests use.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from mfif.errors import DataError
from mfif.lazy import require
from mfif.paths import shared_data_dir
from mfif import scenes

SECTIONS = ("accuracy", "speed", "parallax", "registered", "folder", "stream", "stack")


def _cv2():
    return require("cv2", extra="cpu", purpose="the alignment benchmark")


# ---- synthetic captures ----------------------------------------------------------------------

def sharp_photos(count: int, seed: int = 0, min_side: int = 300) -> list[np.ndarray]:
    """``count`` all-in-focus photographs from ../shared/data/sharp (those not flagged as shallow
    depth of field), drawn with ``seed``; DataError when the shared data is absent."""
    root = shared_data_dir()
    manifest = root / "sharp" / "MANIFEST.csv" if root else None
    if manifest is None or not manifest.is_file():
        raise DataError("the sharp photographs of ../shared/data/sharp are not here (set MFIF_DATA)")
    with open(manifest, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if not row["flags"]]
    rows = [row for row in rows if min(int(v) for v in row["WxH"].split("x")) >= min_side]
    picks = np.random.default_rng(seed).choice(len(rows), size=min(count, len(rows)), replace=False)
    from mfif.imageio import read_image

    return [read_image(root / "sharp" / rows[i]["filename"], "colour") for i in picks]


def similarity(scale: float, rotation_deg: float, shift: tuple[float, float], width: int, height: int) -> np.ndarray:
    """A similarity about the frame centre (reference pixel -> source pixel)."""
    from mfif.runtime.align import similarity_matrix

    return similarity_matrix(scale, rotation_deg, shift, ((width - 1) / 2, (height - 1) / 2))


def random_misalignment(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Scale 1.00-1.05, rotation up to 1 degree, shift up to 10 px: focus breathing and a rig's offset."""
    return similarity(rng.uniform(1.0, 1.05), rng.uniform(-1.0, 1.0), tuple(rng.uniform(-10, 10, 2)), width, height)


def camera_view(image: np.ndarray, matrix: np.ndarray, width: int, height: int, margin: int) -> np.ndarray:
    """What a camera sees of ``image`` (float32): the width x height view whose pixel p shows the
    point ``margin + matrix^-1 p`` of the image, sampled as a sensor does (cubic on a 2x finer grid,
    then averaged over each pixel), so a registered view and a moved one are made the same way."""
    cv2 = _cv2()
    offset = np.array([[1.0, 0, margin], [0, 1.0, margin], [0, 0, 1.0]])
    fine = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1.0]])  # 2x finer grid -> view pixels
    sampling = offset @ np.linalg.inv(matrix) @ fine
    upsampled = cv2.warpPerspective(image, sampling, (2 * width, 2 * height),
                                    flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
    return cv2.resize(upsampled, (width, height), interpolation=cv2.INTER_AREA)


def misaligned_pair(photo: np.ndarray, seed=0, matrix: np.ndarray | None = None, gain=(1.0, 1.0, 1.0),
                    offset=(0.0, 0.0, 0.0), blur: tuple[str, float] | None = None, margin: int = 32) -> dict:
    """A multi-focus pair with ground truth from a sharp photo: complementary blob-shaped focus
    regions, B seen through ``matrix`` (reference pixel -> B pixel; random when None) and with
    ``gain * value + offset`` per channel. Returns uint8 frames 'a', 'b', 'b_registered' (B without
    the misalignment), 'truth', and 'matrix'. The frame is the photo less ``margin`` on every side."""
    cv2 = _cv2()
    rng = np.random.default_rng(seed)
    height, width = photo.shape[0] - 2 * margin, photo.shape[1] - 2 * margin
    sharp = photo.astype(np.float32)
    cells = rng.integers(2, 5, size=2)
    field = cv2.resize(rng.random((int(cells[0]), int(cells[1]))).astype(np.float32), photo.shape[1::-1],
                       interpolation=cv2.INTER_CUBIC)
    near = cv2.GaussianBlur((field > np.median(field)).astype(np.float32), (0, 0), 2.0)[..., None]
    kind, size = blur or (("gaussian", "disk")[int(rng.integers(2))], float(rng.uniform(2.0, 5.0)))
    blurred = scenes.blur(sharp, kind, size)
    a_full = near * sharp + (1 - near) * blurred
    b_full = (1 - near) * sharp + near * blurred
    if matrix is None:
        matrix = random_misalignment(rng, width, height)
    identity = np.eye(3)
    gain, offset = np.float32(gain), np.float32(offset)

    def quantize(image):
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)

    return {"a": quantize(camera_view(a_full, identity, width, height, margin)),
            "b": quantize(camera_view(b_full, matrix, width, height, margin) * gain + offset),
            "b_registered": quantize(camera_view(b_full, identity, width, height, margin) * gain + offset),
            "truth": quantize(camera_view(sharp, identity, width, height, margin)),
            "matrix": matrix}


def parallax_pair(photo: np.ndarray, seed=0, near_shift: float = 6.0, far_shift: float = 2.0, margin: int = 24) -> dict:
    """Two side-by-side cameras: a round near object (A focused on it) before a far background (B
    focused on it); B sees the far layer shifted right by ``far_shift`` px and the near one by
    ``near_shift`` px. Returns 'a', 'b', 'b_registered' (no parallax), 'truth', 'near' (bool mask)."""
    cv2 = _cv2()
    rng = np.random.default_rng(seed)
    h, w = photo.shape[:2]
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, radius = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.35, 0.65), min(h, w) * 0.25
    near = cv2.GaussianBlur((((cols - cx) ** 2 + (rows - cy) ** 2) < radius ** 2).astype(np.float32), (0, 0), 1.5)
    sharp = photo.astype(np.float32)
    blurred = scenes.blur(sharp, "disk", 3.0)
    a_full = near[..., None] * sharp + (1 - near[..., None]) * blurred
    b_full = (1 - near[..., None]) * sharp + near[..., None] * blurred
    inner = (slice(margin, h - margin), slice(margin, w - margin))
    shift = far_shift + (near_shift - far_shift) * near[inner]
    b = cv2.remap(b_full, cols[inner] - shift, rows[inner], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)

    def quantize(image):
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)

    return {"a": quantize(a_full[inner]), "b": quantize(b), "b_registered": quantize(b_full[inner]),
            "truth": photo[inner].copy(), "near": near[inner] > 0.5}


def psnr(image: np.ndarray, truth: np.ndarray, box=None, mask=None) -> float:
    if box is not None:
        x, y, w, h = box
        image, truth = image[y:y + h, x:x + w], truth[y:y + h, x:x + w]
    error = (image.astype(np.float64) - truth.astype(np.float64)) ** 2
    if mask is not None:
        error = error[mask]
    return float(10 * np.log10(255.0 ** 2 / max(error.mean(), 1e-12)))


# ---- sections --------------------------------------------------------------------------------

def _one_core_fuser(align="off"):
    from mfif.runtime import Fuser
    from mfif.runtime.backends import load_backend

    return Fuser(load_backend(None, "onnxruntime", "cpu", threads=1), align=align)


def features_and_ransac(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    """The similarity from ORB or SIFT keypoints matched across the pair and RANSAC (OpenCV), the
    alternative to ECC that the accuracy section measures."""
    cv2 = _cv2()
    grey_a, grey_b = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in (a, b))
    detector = cv2.ORB_create(1500) if kind == "orb" else cv2.SIFT_create(1500)
    keys_a, desc_a = detector.detectAndCompute(grey_a, None)
    keys_b, desc_b = detector.detectAndCompute(grey_b, None)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING if kind == "orb" else cv2.NORM_L2, crossCheck=True)
    matches = matcher.match(desc_a, desc_b)
    points_a = np.float32([keys_a[m.queryIdx].pt for m in matches])
    points_b = np.float32([keys_b[m.trainIdx].pt for m in matches])
    found, _ = cv2.estimateAffinePartial2D(points_a, points_b, method=cv2.RANSAC, ransacReprojThreshold=2.0)
    return np.vstack([found, [0.0, 0.0, 1.0]]) if found is not None else np.eye(3)


def accuracy(pairs: int, seed: int) -> dict:
    from mfif.runtime.align import MODELS, Warper, corner_error, estimate_rig

    fuser = _one_core_fuser()
    photos = sharp_photos(pairs, seed)
    errors = {model: [] for model in MODELS}
    errors.update({"orb_ransac": [], "sift_ransac": []})
    costs = {"ecc_similarity": [], "orb_ransac": [], "sift_ransac": []}
    rows = []
    rng = np.random.default_rng(seed)
    for index, photo in enumerate(photos):
        gain = tuple(rng.uniform(0.85, 1.0, 3))
        offset = tuple(rng.uniform(0.0, 10.0, 3))
        pair = misaligned_pair(photo, seed=seed * 1000 + index, gain=gain, offset=offset)
        a, b, truth = pair["a"], pair["b"], pair["truth"]
        height, width = a.shape[:2]
        for model in MODELS:
            start = time.process_time()
            rig = estimate_rig([a, b], model)
            if model == "similarity":
                costs["ecc_similarity"].append((time.process_time() - start) * 1e3)
            errors[model].append(corner_error(rig.sources[1].matrix, pair["matrix"], width, height))
        for kind in ("orb", "sift"):
            start = time.process_time()
            found = features_and_ransac(a, b, kind)
            costs[f"{kind}_ransac"].append((time.process_time() - start) * 1e3)
            errors[f"{kind}_ransac"].append(corner_error(found, pair["matrix"], width, height))
        rig = estimate_rig([a, b])
        warper = Warper(rig, "cubic")
        aligned = fuser.fuse(warper.apply([a, b]))
        box = warper.common_area()
        other = {name: fuser.fuse(Warper(rig, name).apply([a, b])) for name in ("linear", "lanczos")}
        # The floor of resampling: B warped with the true transform (and the estimated gain).
        true_rig = dataclasses.replace(rig, sources=[rig.sources[0], dataclasses.replace(rig.sources[1],
                                                                                         matrix=pair["matrix"])])
        oracle = fuser.fuse(Warper(true_rig, "cubic").apply([a, b]))
        # The registered pair through the same stage: its geometry is found to be identity, its
        # gain and offset are corrected like those of the misaligned pair.
        registered_pair = [a, pair["b_registered"]]
        registered = fuser.fuse(Warper(estimate_rig(registered_pair), "cubic").apply(registered_pair))
        rows.append({"a_alone": psnr(a, truth), "unaligned": psnr(fuser(a, b), truth),
                     "aligned": psnr(aligned, truth), "registered": psnr(registered, truth),
                     "aligned_common": psnr(aligned, truth, box), "registered_common": psnr(registered, truth, box),
                     "linear_common": psnr(other["linear"], truth, box), "lanczos_common": psnr(other["lanczos"], truth, box),
                     "true_transform_common": psnr(oracle, truth, box),
                     "common_fraction": box[2] * box[3] / (width * height)})
    summary = {"pairs": len(photos), "size": f"{photos[0].shape[1] - 64}x{photos[0].shape[0] - 64} and similar",
               "corner_error_px": {m: {"median": float(np.median(e)), "p90": float(np.percentile(e, 90)),
                                       "max": float(np.max(e))} for m, e in errors.items()},
               "psnr_db": {key: float(np.mean([row[key] for row in rows])) for key in rows[0]},
               "cpu_ms": {key: float(np.median(values)) for key, values in costs.items()}}
    print(f"accuracy: {len(photos)} misaligned synthetic pairs from ../shared/data/sharp")
    print(f"  {'model':<12} {'median px':>9} {'p90 px':>8} {'max px':>8}   (corner error, RMS of the 4 corners)")
    for model, stats in summary["corner_error_px"].items():
        print(f"  {model:<12} {stats['median']:9.3f} {stats['p90']:8.3f} {stats['max']:8.3f}")
    print("  median CPU ms per pair: " + ", ".join(f"{key} {value:.1f}" for key, value in summary["cpu_ms"].items()))
    p = summary["psnr_db"]
    print(f"  fused PSNR vs ground truth, mean dB: A alone {p['a_alone']:.2f}, no alignment {p['unaligned']:.2f}, "
          f"aligned {p['aligned']:.2f}, registered pair {p['registered']:.2f}")
    print(f"  in the area every source covers ({p['common_fraction']:.0%} of the frame): aligned "
          f"{p['aligned_common']:.2f}, registered {p['registered_common']:.2f}; resampling B bilinear "
          f"{p['linear_common']:.2f}, bicubic (used) {p['aligned_common']:.2f}, Lanczos {p['lanczos_common']:.2f}; "
          f"bicubic with the true transform {p['true_transform_common']:.2f} (the floor of resampling)")
    return summary


def speed(repeat: int, seed: int) -> dict:
    from mfif.runtime.align import estimate_rig

    cv2 = _cv2()
    cv2.setNumThreads(1)
    photos = sharp_photos(4, seed + 1)
    cases = []
    for index, photo in enumerate(photos):
        photo = cv2.resize(photo, (584, 584), interpolation=cv2.INTER_AREA)
        pair = misaligned_pair(photo, seed=index)
        cases.append((pair["a"], pair["b"]))
    times, cpu = [], []
    for a, b in cases:
        estimate_rig([a, b])
        for _ in range(repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            estimate_rig([a, b])
            times.append((time.perf_counter() - start) * 1e3)
            cpu.append((time.process_time() - start_cpu) * 1e3)
    # CPU time is what one core spends, whatever else the machine runs; wall time includes waiting.
    result = {"size": "520x520", "threads": 1, "runs": len(times), "cpu_median_ms": statistics.median(cpu),
              "cpu_p90_ms": float(np.percentile(cpu, 90)), "wall_median_ms": statistics.median(times),
              "wall_best_ms": min(times)}
    print(f"speed: estimation of a 520x520 pair (similarity + gain/offset), one core, {len(times)} runs: "
          f"CPU time median {result['cpu_median_ms']:.1f} ms (p90 {result['cpu_p90_ms']:.1f}); wall time median "
          f"{result['wall_median_ms']:.1f} ms, best {result['wall_best_ms']:.1f} ms (goal 30)")
    return result


def parallax(pairs: int, seed: int) -> dict:
    from mfif.runtime.align import Warper, estimate_rig

    cv2 = _cv2()
    fuser = _one_core_fuser()
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    rows = []
    for index, photo in enumerate(sharp_photos(pairs, seed + 2)):
        pair = parallax_pair(photo, seed=index)
        a, b, truth, near = pair["a"], pair["b"], pair["truth"], pair["near"]
        height, width = a.shape[:2]
        rig = estimate_rig([a, b])
        warper = Warper(rig, "cubic")
        warped = warper.apply([a, b])[1].copy()
        start = time.perf_counter()
        field = flow.calc(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.cvtColor(warped, cv2.COLOR_BGR2GRAY), None)
        flow_ms = (time.perf_counter() - start) * 1e3
        rows_, cols_ = np.mgrid[0:height, 0:width].astype(np.float32)
        refined = cv2.remap(warped, cols_ + field[..., 0], rows_ + field[..., 1], cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REPLICATE)
        box = warper.common_area()
        fused, fused_refined = fuser(a, warped), fuser(a, refined)
        rows.append({"unaligned": psnr(fuser(a, b), truth), "global": psnr(fused, truth, box),
                     "global_dis": psnr(fused_refined, truth, box),
                     "no_parallax": psnr(fuser(a, pair["b_registered"]), truth, box),
                     "global_near": psnr(fused, truth, mask=near), "global_dis_near": psnr(fused_refined, truth, mask=near),
                     "shift_found_px": rig.sources[1].shift(width, height)[0], "dis_ms": flow_ms})
    result = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    result["pairs"] = len(rows)
    # The same refinement on misaligned pairs without parallax: what it costs where it is not needed.
    plain, refined_all = [], []
    for index, photo in enumerate(sharp_photos(len(rows), seed + 4)):
        pair = misaligned_pair(photo, seed=index)
        a, b, truth = pair["a"], pair["b"], pair["truth"]
        height, width = a.shape[:2]
        warper = Warper(estimate_rig([a, b]), "cubic")
        warped = warper.apply([a, b])[1].copy()
        field = flow.calc(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.cvtColor(warped, cv2.COLOR_BGR2GRAY), None)
        rows_, cols_ = np.mgrid[0:height, 0:width].astype(np.float32)
        refined = cv2.remap(warped, cols_ + field[..., 0], rows_ + field[..., 1], cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REPLICATE)
        box = warper.common_area()
        plain.append(psnr(fuser(a, warped), truth, box))
        refined_all.append(psnr(fuser(a, refined), truth, box))
    result["no_parallax_global"], result["no_parallax_global_dis"] = float(np.mean(plain)), float(np.mean(refined_all))
    print(f"parallax: {len(rows)} pairs, far layer shifted 2 px, near layer 6 px; fused PSNR (dB, common area):")
    print(f"  no alignment {result['unaligned']:.2f}, global similarity {result['global']:.2f} (it finds a "
          f"{result['shift_found_px']:.2f} px shift), global + DIS flow {result['global_dis']:.2f}, "
          f"no parallax {result['no_parallax']:.2f}; near layer: {result['global_near']:.2f} -> "
          f"{result['global_dis_near']:.2f}; DIS {result['dis_ms']:.0f} ms")
    print(f"  the same DIS refinement on {len(plain)} misaligned pairs without parallax: {result['no_parallax_global']:.2f} "
          f"-> {result['no_parallax_global_dis']:.2f} dB")
    return result


def registered(sets: list[str]) -> dict:
    from mfif.imageio import find_pairs, read_image

    root = shared_data_dir()
    if root is None:
        raise DataError("../shared/data is not here")
    fuser = _one_core_fuser()
    aligning = _one_core_fuser("each")
    aligning.alignment.interpolation = "cubic"
    result = {}
    for name in sets:
        counts = {"pairs": 0, "identical": 0, "registered": 0, "photometric_only": 0, "aligned": 0, "fallback": 0}
        displacements = []
        for pair in find_pairs(root / "pairs" / name):
            a, b = read_image(pair.a), read_image(pair.b)
            if a.shape != b.shape:
                continue
            counts["pairs"] += 1
            identical = np.array_equal(aligning(a, b), fuser(a, b))
            counts["identical"] += identical
            source = aligning.alignment.rig.sources[1]
            height, width = a.shape[:2]
            if source.status.startswith("fallback"):
                counts["fallback"] += 1
            elif source.geometric_identity:
                counts["registered" if source.photometric_identity else "photometric_only"] += 1
            else:
                counts["aligned"] += 1
                displacements.append(source.displacement_px(width, height))
        counts["aligned_displacement_px"] = ([float(np.min(displacements)), float(np.max(displacements))]
                                             if displacements else None)
        result[name] = counts
        moved = (f", corners moved {counts['aligned_displacement_px'][0]:.1f}-{counts['aligned_displacement_px'][1]:.1f} px"
                 if displacements else "")
        print(f"registered: {name}: {counts['pairs']} pairs, {counts['identical']} fused bit-identically to --no-align; "
              f"{counts['registered']} found registered, {counts['photometric_only']} gain/offset only, "
              f"{counts['aligned']} warped{moved}, {counts['fallback']} fell back")
    return result


def _write_misaligned_folder(folder: Path, count: int, seed: int) -> None:
    from mfif.imageio import write_image

    cv2 = _cv2()
    photos = sharp_photos(count, seed + 3)
    for index, photo in enumerate(photos):
        photo = cv2.resize(photo, (584, 584), interpolation=cv2.INTER_AREA)
        pair = misaligned_pair(photo, seed=index)
        write_image(folder / f"p{index:02d}_A.png", pair["a"])
        write_image(folder / f"p{index:02d}_B.png", pair["b"])


def _timed(command: list[str], cpu: list | None = None) -> float:
    """Wall seconds of a command; its CPU seconds (user + system) are appended to ``cpu``."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def folder(count: int, repeat: int, seed: int) -> dict:
    from mfif.evaluation.enfuse import FOCUS_STACK_ARGS, find_enfuse
    from mfif.imageio import find_pairs

    enfuse = find_enfuse()
    with tempfile.TemporaryDirectory() as temp:
        pairs_dir = Path(temp) / "pairs"
        _write_misaligned_folder(pairs_dir, count, seed)
        pairs = find_pairs(pairs_dir)
        mfif = [sys.executable, "-m", "mfif.cli", "fuse", str(pairs_dir), "--format", "tif"]
        ours, theirs, unaligned = [], [], []
        cpu = {"aligned": [], "unaligned": [], "enfuse": []}
        for run in range(repeat):
            ours.append(_timed([*mfif, "-o", str(Path(temp) / f"aligned{run}")], cpu["aligned"]))
            unaligned.append(_timed([*mfif, "--no-align", "-o", str(Path(temp) / f"plain{run}")], cpu["unaligned"]))
            spent = []
            theirs.append(sum(_timed([enfuse, *FOCUS_STACK_ARGS, "-o", str(Path(temp) / f"{pair.name}.tif"),
                                      str(pair.a), str(pair.b)], spent) for pair in pairs))
            cpu["enfuse"].append(sum(spent))
    result = {"pairs": len(pairs), "size": "520x520", "repeat": repeat, "mfif_aligned_s": statistics.median(ours),
              "mfif_unaligned_s": statistics.median(unaligned), "enfuse_s": statistics.median(theirs),
              "runs": {"aligned": ours, "unaligned": unaligned, "enfuse": theirs},
              "cpu_s": {key: statistics.median(values) for key, values in cpu.items()}}
    result["ratio"] = result["mfif_aligned_s"] / result["enfuse_s"]
    print(f"folder: {len(pairs)} misaligned 520x520 pairs, median of {repeat} runs: mfif fuse (aligning) "
          f"{result['mfif_aligned_s']:.2f} s, with --no-align {result['mfif_unaligned_s']:.2f} s, enfuse once per pair "
          f"{result['enfuse_s']:.2f} s: ratio {result['ratio']:.2f} (goal < 0.5)")
    print(f"  CPU seconds (user + system): mfif aligning {result['cpu_s']['aligned']:.2f}, --no-align "
          f"{result['cpu_s']['unaligned']:.2f}, enfuse {result['cpu_s']['enfuse']:.2f}")
    return result


def stream(frames: int, repeat: int) -> dict:
    from mfif.runtime import Fuser
    from mfif.runtime.align import Rig, SourceTransform
    from mfif.scenes import demo_pair

    cv2 = _cv2()
    width, height = 640, 480
    matrix = similarity(1.02, 0.3, (4.0, -3.0), width, height)
    a, b, _ = demo_pair(height, width)
    b_seen = cv2.warpPerspective(b, np.linalg.inv(matrix), (width, height), flags=cv2.INTER_CUBIC,
                                 borderMode=cv2.BORDER_REFLECT)
    rig = Rig((width, height), 3, 0, "similarity",
              [SourceTransform(np.eye(3), (1.0,) * 3, (0.0,) * 3, status="reference"),
               SourceTransform(matrix, (1.0,) * 3, (0.0,) * 3)])
    # What applying the rig costs per frame, for each resampling (CPU time, one core).
    from mfif.runtime.align import INTERPOLATIONS, Warper

    apply_ms = {}
    for name in INTERPOLATIONS:
        warper = Warper(rig, name)
        warper.apply([a, b_seen])
        start = time.process_time()
        for _ in range(20):
            warper.apply([a, b_seen])
        apply_ms[name] = (time.process_time() - start) / 20 * 1e3
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as temp:
        paths = []
        for name, frame in (("a", a), ("b", b_seen)):
            path = Path(temp) / f"{name}.avi"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (width, height))
            for _ in range(frames):
                noisy = np.clip(frame + rng.normal(0, 2, frame.shape), 0, 255).astype(np.uint8)
                writer.write(noisy)
            writer.release()
            paths.append(str(path))
        rates = {"off": [], "rig": []}
        fuser_ms = {"off": [], "rig": []}
        for _ in range(repeat):
            for mode in ("off", "rig"):
                fuser = Fuser(align=rig if mode == "rig" else "off")  # as a user runs it: default threads
                with fuser.stream(*paths) as running:
                    for _ in running:
                        pass
                rates[mode].append(running.stats["fps"])
                fuser_ms[mode].append(fuser.stats.mean_ms["total"])  # the fuser alone, alignment included
    off, aligned = statistics.median(rates["off"]), statistics.median(rates["rig"])
    result = {"size": f"{width}x{height}", "frames": frames, "repeat": repeat, "fps_off": off, "fps_rig": aligned,
              "slower": off / aligned - 1, "runs": rates, "fuser_ms_off": statistics.median(fuser_ms["off"]),
              "fuser_ms_rig": statistics.median(fuser_ms["rig"]), "fuser_ms_runs": fuser_ms, "apply_cpu_ms": apply_ms}
    print(f"stream: {width}x{height} pair of MJPG files, {frames} frames, default Fuser, median of {repeat}: "
          f"{off:.1f} fps without alignment, {aligned:.1f} fps with a fixed rig: {result['slower']:+.1%} time per "
          "frame (goal <= 15%)")
    print("  applying the rig to one frame pair, CPU ms: " + ", ".join(f"{k} {v:.1f}" for k, v in apply_ms.items()))
    print(f"  the fuser's own time per frame (mean of the last 100): {result['fuser_ms_off']:.1f} ms without, "
          f"{result['fuser_ms_rig']:.1f} ms with the rig ({result['fuser_ms_rig'] / result['fuser_ms_off'] - 1:+.1%})")
    return result


def stack(crops: bool, keep: Path | None = None) -> dict:
    root = shared_data_dir()
    folder_ = root / "stacks" / "pcb_sweep10" if root else None
    if folder_ is None or not folder_.is_dir():
        raise DataError("../shared/data/stacks/pcb_sweep10 is not here")
    cv2 = _cv2()
    command = [sys.executable, "-m", "mfif.cli"]
    with tempfile.TemporaryDirectory() as temp:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            temp = str(keep)
        rig_path = Path(temp) / "pcb_rig.json"
        start = time.perf_counter()
        done = subprocess.run([*command, "align", "--stack", str(folder_), "-o", str(rig_path)], check=True,
                              capture_output=True, text=True)
        align_s = time.perf_counter() - start
        print(done.stdout)
        rig = json.loads(rig_path.read_text())
        outputs = {}
        for name, extra in (("aligned", []), ("unaligned", ["--no-align"])):
            output = Path(temp) / f"pcb_{name}.png"
            start = time.perf_counter()
            subprocess.run([*command, "fuse", "--stack", str(folder_), "-o", str(output), *extra], check=True,
                           capture_output=True)
            outputs[name] = (output, time.perf_counter() - start)
        from mfif.runtime.align import SourceTransform

        scales = [SourceTransform(np.array(s["matrix"])).scale for s in rig["sources"]]
        steps = np.diff(scales)
        monotonic = bool(np.all(steps > 0) or np.all(steps < 0))
        result = {"frames": len(scales), "scales": scales, "monotonic": monotonic,
                  "residuals_px": [s["residual_px"] for s in rig["sources"]],
                  "correlations": [s["correlation"] for s in rig["sources"]], "align_s": align_s,
                  "fuse_aligned_s": outputs["aligned"][1], "fuse_unaligned_s": outputs["unaligned"][1]}
        if crops:
            docs = Path(__file__).resolve().parent.parent / "docs"
            fused = {name: cv2.imread(str(path)) for name, (path, _) in outputs.items()}
            x, y, width, height = 860, 150, 400, 280   # the silkscreen label "SW1" above the switch
            for name, image in fused.items():
                crop = image[y:y + height, x:x + width]
                path = docs / f"alignment_pcb_{name}.jpg"
                cv2.imwrite(str(path), crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
                result[f"crop_{name}"] = str(path.relative_to(docs.parent))
    print(f"stack: pcb_sweep10 ({result['frames']} frames 2048x1536): chained scales "
          + " ".join(f"{s:.4f}" for s in scales) + f" ({'monotonic' if monotonic else 'NOT monotonic'}); "
          f"mfif align {align_s:.1f} s, mfif fuse --stack {result['fuse_aligned_s']:.1f} s aligned, "
          f"{result['fuse_unaligned_s']:.1f} s with --no-align")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--pairs", type=int, default=24, help="synthetic pairs for accuracy (default 24)")
    parser.add_argument("--repeat", type=int, default=3, help="repeated runs for the timings (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crops", action="store_true", help="write the pcb before/after crops into docs/")
    parser.add_argument("--keep", type=Path, help="keep the stack section's fused images and rig in this folder")
    parser.add_argument("--json", type=Path, default=Path("bench/alignment.json"))
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from mfif.benchmarks.report import machine_description, write_json

    results = {"machine": machine_description()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for section in chosen:
            if section == "accuracy":
                results[section] = accuracy(args.pairs, args.seed)
            elif section == "speed":
                results[section] = speed(max(5, args.repeat * 5), args.seed)
            elif section == "parallax":
                results[section] = parallax(max(4, args.pairs // 3), args.seed)
            elif section == "registered":
                results[section] = registered(["mfi_whu", "mfifb_aymaz", "mfifb_tsai", "classic", "mfifb_mffw",
                                               "mfifb_savic"])
            elif section == "folder":
                results[section] = folder(20, args.repeat, args.seed)
            elif section == "stream":
                results[section] = stream(150, args.repeat)
            elif section == "stack":
                results[section] = stack(args.crops, args.keep)
    write_json(args.json, results)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
