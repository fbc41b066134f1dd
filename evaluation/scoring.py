"""Scoring for ``mfif evaluate``: the pairs to score, the methods' fused images (computed, or read
from a folder of existing results), the metrics of each, and their means per set. Nothing here
writes files; :mod:`evaluation.tables` does.

A pair that fails (unreadable file, sizes that differ, a method error, a metric that is not finite)
gets a row with status ``failed: <reason>``; it is left out of the common means of its set (so all
methods are averaged over the same pairs) and counted in the ``failed``/``excluded`` columns. The
per-method means (``summarize(..., common=False)``) average each method over the pairs it scored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfif.errors import ConfigError, DataError, InputError, MfifError
from mfif.imageio import IMAGE_SUFFIXES, find_pairs, read_image, read_pair

TRUTH_NAMES = ("PSNR", "SSIM")
# Ground-truth metrics that also need the focus regions (synthetic pairs): the halo metric.
BAND_NAMES = ("BandPSNR",)
PIELLA_METRICS = {"PiellaQ": "piella_q", "PiellaQw": "piella_qw"}
# File-name suffixes of sources and ground truth: never a method's name in a results folder.
ROLE_SUFFIXES = ("A", "B", "1", "2", "GT")


# ---------------------------------------------------------------------------------------------
# Pairs

@dataclass(frozen=True)
class Item:
    """One pair to score: ``load()`` returns (frames, ground truth or None); ``band()``, where
    the focus regions are known (synthetic pairs), the pixels near their borders (bool HxW) that
    BandPSNR scores."""
    set: str
    name: str
    load: Callable[[], tuple[list[np.ndarray], np.ndarray | None]]
    band: Callable[[], np.ndarray] | None = None


def folder_items(folders: list[str | Path], limit: int | None = None) -> list[Item]:
    """Items of every pair in the folders (:func:`mfif.imageio.find_pairs`); a set is named after
    its folder (its parent too when two folders share a name)."""
    folders = [Path(f) for f in folders]
    names = [f.name for f in folders]
    items = []
    for folder in folders:
        set_name = folder.name if names.count(folder.name) == 1 else f"{folder.parent.name}/{folder.name}"
        for pair in find_pairs(folder)[:limit]:
            items.append(Item(set_name, pair.name, lambda pair=pair: read_pair(pair)))
    return items


def synthetic_items(count: int, size: tuple[int, int] = (192, 256), seed: int = 0,
                    sharp_folder: str | Path | None = None) -> list[Item]:
    """``count`` synthetic pairs (set 'synthetic') with ground truth: a generated scene
    (:mod:`mfif.scenes`), or a photograph of ``sharp_folder`` cropped to ``size``, blurred
    (Gaussian, sigma 1.5 to 3) in complementary random regions of A and B; ``band()`` gives the
    pixels within BAND_RADIUS of the regions' border."""
    from functools import lru_cache

    from mfif.evaluation.metrics.structural import boundary_band
    from mfif.scenes import defocus, focus_regions, scene

    if count < 1:
        raise ConfigError(f"--synthetic needs a count >= 1, not {count}")
    photos = None
    if sharp_folder is not None:
        photos = sorted(p for p in Path(sharp_folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            raise DataError(f"no images in the sharp folder {sharp_folder}")

    @lru_cache(maxsize=2)
    def make(index: int):
        rng = np.random.default_rng(seed + index)
        if photos is None:
            sharp = scene(*size, seed=rng)
        else:
            sharp = read_image(photos[index % len(photos)])[: size[0], : size[1]]
        # What multi_focus(sharp, "blobs", seed=rng) draws, with the regions kept for the band.
        regions = focus_regions("blobs", sharp.shape[0], sharp.shape[1], 2, rng)
        return defocus(sharp, regions, rng.uniform(1.5, 3.0, 2)), sharp, boundary_band(regions)

    return [Item("synthetic", f"syn{seed + i:04d}", lambda i=i: make(i)[:2], lambda i=i: make(i)[2])
            for i in range(count)]


# ---------------------------------------------------------------------------------------------
# Existing results

@dataclass(frozen=True)
class ResultsMethod:
    """Fused images read from a folder instead of computed: ``files[(set, pair)] -> path``."""
    label: str
    files: dict[tuple[str, str], Path]


def find_results(folder: str | Path, items: list[Item], prefix: str = "",
                 label: str | None = None) -> list[ResultsMethod]:
    """Fused images in ``folder`` (or in its subfolder named like a set) for the items:
    ``<pair>.*`` is method ``label`` (default: the folder's name), ``<pair>_<method>.*`` is method
    ``<method>``; ``prefix`` goes before every method name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"results folder not found: {folder}")
    label = label or folder.name
    found: dict[str, dict[tuple[str, str], Path]] = {}
    by_set: dict[str, list[str]] = {}
    for item in items:
        by_set.setdefault(item.set, []).append(item.name)
    for set_name, names in by_set.items():
        where = folder / set_name if (folder / set_name).is_dir() else folder
        longest_first = sorted(names, key=len, reverse=True)
        for path in sorted(where.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            stem = path.stem
            for name in longest_first:
                if stem == name:
                    method = label
                elif stem.startswith(name + "_") and stem[len(name) + 1:].upper() not in ROLE_SUFFIXES:
                    method = stem[len(name) + 1:]
                else:
                    continue
                found.setdefault(prefix + method, {})[(set_name, name)] = path
                break
    if not found:
        raise DataError(f"no fused images in {folder} named <pair>.<ext> or <pair>_<method>.<ext> for the "
                        f"{len(items)} pairs (e.g. {items[0].name}.png)" if items else f"no pairs to match in {folder}")
    return [ResultsMethod(name, files) for name, files in sorted(found.items())]


# ---------------------------------------------------------------------------------------------
# Fused images: a producer gives (fused image, fusion time in ms or None) of an item

class Computed:
    """A method's fused image of an item and its fusion time in ms; the first call is a warm-up
    (model load, caches) that is not timed. ``model_sha256``: of the model file the method runs
    ('' for the others), recorded with its rows so that a replaced model is scored again."""

    def __init__(self, method) -> None:
        self.method, self.warm = method, False
        self.model_sha256 = method.model_sha256

    def __call__(self, item: Item, frames: list[np.ndarray]) -> tuple[np.ndarray, float]:
        if not self.warm:
            self.method.fuse(frames)
            self.warm = True
        start = time.perf_counter()
        fused = self.method.fuse(frames)
        return fused, (time.perf_counter() - start) * 1000.0


class Stored:
    """The fused image of an item from a results folder (no time)."""

    model_sha256 = ""

    def __init__(self, result: ResultsMethod) -> None:
        self.result = result

    def __call__(self, item: Item, frames: list[np.ndarray]) -> tuple[np.ndarray, None]:
        path = self.result.files.get((item.set, item.name))
        if path is None:
            raise DataError(f"no fused image for pair '{item.name}' from method '{self.result.label}'")
        return read_image(path), None


# ---------------------------------------------------------------------------------------------
# Metrics

def resolve_metrics(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split the asked metrics into those that can run and those whose module is missing
    (name -> reason). An unknown name is a ConfigError."""
    from mfif.evaluation.metrics import IMAGE_METRICS, SOURCE_METRICS, TRUTH_METRICS, get_metric

    known = [*SOURCE_METRICS, *TRUTH_METRICS, *BAND_NAMES, *IMAGE_METRICS, *PIELLA_METRICS]
    ready, missing = [], {}
    for name in names:
        if name not in known:
            raise ConfigError(f"unknown metric {name!r}; known: {', '.join(known)}")
        if name in PIELLA_METRICS or name in BAND_NAMES:
            ready.append(name)
            continue
        try:
            get_metric(name)
        except (ImportError, AttributeError) as exc:
            missing[name] = f"{type(exc).__name__}: {exc}"
        else:
            ready.append(name)
    return ready, missing


def score(frames: list[np.ndarray], fused: np.ndarray, truth: np.ndarray | None,
          metrics: list[str], band: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of one fused image (first two frames as the sources). Ground-truth metrics
    are skipped without truth, BandPSNR without truth and ``band``. A value that is not finite
    raises InputError."""
    from mfif.evaluation import piella
    from mfif.evaluation.metrics import compute_metrics, reference_grey

    a, b = frames[0], frames[1]
    if not isinstance(fused, np.ndarray) or fused.shape[:2] != a.shape[:2]:
        raise InputError(f"the fused image is a {type(fused).__name__} of shape {shape_text(fused)}, not an image "
                         f"of the sources' shape {shape_text(a)}")
    named = [m for m in metrics if m not in PIELLA_METRICS and m not in BAND_NAMES
             and (truth is not None or m not in TRUTH_NAMES)]
    values = compute_metrics(a, b, fused, named, truth=truth) if named else {}
    if "BandPSNR" in metrics and truth is not None and band is not None:
        from mfif.evaluation.metrics.structural import band_psnr
        values["BandPSNR"] = band_psnr(reference_grey(fused), reference_grey(truth), band)
    extra = [m for m in metrics if m in PIELLA_METRICS]
    if extra:
        greys = [reference_grey(x) for x in (a, b, fused)]
        for name in extra:
            values[name] = float(getattr(piella, PIELLA_METRICS[name])(*greys))
    for name, value in values.items():
        if not math.isfinite(value):
            raise InputError(f"metric {name} is {value} for this image (constant or degenerate input?)")
    return values


def is_scored(row: dict | None, metrics: list[str], has_truth: bool, has_band: bool = False,
              model_sha256: str = "") -> bool:
    """Whether an earlier row already holds every asked metric (ground-truth ones only with truth,
    BandPSNR only with truth and a band), scored with the same model file (``model_sha256``)."""
    if row is None or row.get("status") != "ok" or (row.get("model_sha256") or "") != model_sha256:
        return False
    needed = [m for m in metrics
              if (has_truth or m not in TRUTH_NAMES) and (has_truth and has_band or m not in BAND_NAMES)]
    return all(row.get(m) not in (None, "") for m in needed)


# ---------------------------------------------------------------------------------------------
# One pair

@dataclass
class PairScores:
    """What scoring one pair gave: ``rows`` for the methods scored now ((set, pair, method) ->
    row), ``skipped`` methods whose earlier rows were complete, ``fused`` images made now (method
    -> image), and ``images`` for the picture (sources, truth and every method's fused image, None
    where it failed), or None when the picture was not asked for or the pair could not be read."""
    rows: dict[tuple[str, str, str], dict]
    skipped: int
    fused: dict[str, np.ndarray]
    images: dict[str, np.ndarray | None] | None


def score_pair(item: Item, producers: list[tuple[str, Computed | Stored]], metrics: list[str],
               earlier: dict[tuple[str, str, str], dict], with_images: bool = False) -> PairScores:
    """Score ``item`` with each (label, producer) whose ``earlier`` row lacks a metric."""
    key = (item.set, item.name)
    # Ground-truth metrics count only where there is truth, known once the pair is read.
    todo = [label for label, produce in producers
            if not is_scored(earlier.get((*key, label)), metrics, True, True, produce.model_sha256)]
    if not todo and not with_images:
        return PairScores({}, len(producers), {}, None)
    try:
        frames, truth = item.load()
        band = item.band() if item.band is not None else None
    except Exception as exc:  # noqa: BLE001  unreadable or mismatched: recorded, counted
        return PairScores({(*key, label): failed_row(key, label, exc) for label in todo},
                          len(producers) - len(todo), {}, None)
    todo = [label for label, produce in producers if not is_scored(
        earlier.get((*key, label)), metrics, truth is not None, band is not None, produce.model_sha256)]
    rows, fused_images = {}, {}
    images = {"A": frames[0], "B": frames[1], **({"truth": truth} if truth is not None else {})} if with_images else None
    for label, produce in producers:
        if label not in todo:
            if with_images:
                images[label] = _image_or_none(lambda: produce(item, frames)[0])
            continue
        try:
            fused, elapsed = produce(item, frames)
            values = score(frames, fused, truth, metrics, band)
        except Exception as exc:  # noqa: BLE001  a failing pair is recorded, counted and excluded
            rows[(*key, label)] = failed_row(key, label, exc)
            fused = None
        else:
            rows[(*key, label)] = {"set": item.set, "pair": item.name, "method": label, "status": "ok",
                                   "time_ms": "" if elapsed is None else f"{elapsed:.2f}",
                                   **{k: repr(v) for k, v in values.items()}, "model_sha256": produce.model_sha256}
            fused_images[label] = fused
        if with_images:
            images[label] = fused
    return PairScores(rows, len(producers) - len(todo), fused_images, images)


def failed_row(key: tuple[str, str], label: str, exc: BaseException) -> dict:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, MfifError):
        reason = f"{type(exc).__name__}: {reason}"
    return {"set": key[0], "pair": key[1], "method": label, "status": f"failed: {reason}", "time_ms": ""}


def _image_or_none(function):
    """For the picture only: the result, or None when the method fails on this pair."""
    try:
        return function()
    except Exception:  # noqa: BLE001  the failure is already in the table
        return None


# ---------------------------------------------------------------------------------------------
# Means

def summarize(rows: dict, items: list[Item], labels: list[str], metrics: list[str], common: bool = True) -> list[dict]:
    """Mean of every metric and of the time per set and method. ``common`` (the main table): over
    the pairs of the set that every method scored ('pairs'); 'failed' counts this method's
    failures, 'excluded' the pairs left out because some method failed on them. Otherwise each
    method over the pairs it scored itself ('pairs', 'failed'; no 'excluded'), so that one broken
    method hides none of the others. With several sets, a pooled 'all' row too."""
    sets: dict[str, list[str]] = {}
    for item in items:
        sets.setdefault(item.set, []).append(item.name)
    groups = list(sets.items())
    if len(sets) > 1:
        groups.append(("all", [(s, n) for s, names in sets.items() for n in names]))

    def scored(key, label) -> bool:
        return rows.get((*key, label), {}).get("status") == "ok"

    summary = []
    for set_name, names in groups:
        keys = [(set_name, n) if isinstance(n, str) else n for n in names]
        shared = [k for k in keys if all(scored(k, m) for m in labels)]
        for label in labels:
            mean_over = shared if common else [k for k in keys if scored(k, label)]
            used = [rows[(*k, label)] for k in mean_over]
            entry = {"set": set_name, "method": label, "pairs": len(mean_over),
                     "failed": sum(not scored(k, label) for k in keys)}
            if common:
                entry["excluded"] = len(keys) - len(shared)
            times = [float(r["time_ms"]) for r in used if r.get("time_ms") not in (None, "")]
            entry["time_ms"] = float(np.mean(times)) if times else None
            for metric in metrics:
                values = [r.get(metric) for r in used]
                entry[metric] = float(np.mean([float(v) for v in values])) if values and all(
                    v not in (None, "") for v in values) else None
            summary.append(entry)
    return summary


def shape_text(image) -> str:
    return "x".join(str(n) for n in getattr(image, "shape", ())) or "?"
