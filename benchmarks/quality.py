"""Quality benchmark (``mfif evaluate``): fusion methods scored with the fusion metrics over pairs.

Sources of pairs: folders in the shared layout (``<name>_A.*``, ``<name>_B.*``, optional
``<name>_GT.*``) or the numbered layout of the Liu 2020 reference set (``<name>_1.*``,
``<name>_2.*``), and synthetic pairs with ground truth (a sharp image, blurred in complementary
blob-shaped regions). Methods come from :mod:`evaluation.methods`; fused images that already exist
(an outside tool's output, named ``<name>.*`` or ``<name>_<method>.*``) are scored in the same
pipeline with ``--results``.

Outputs in ``--out``: ``per_pair.csv``/``.md`` (one row per set, pair and method, with the fusion
time), ``means.csv``/``.md`` (per set and method), ``grid_<set>.png`` (sources and every method's
result for a few pairs) and, with ``--paper-tables``, ``paper_tables.md``/``.csv``.

A pair that fails (unreadable file, sizes that differ, a method error, a metric that is not finite)
gets a row with status ``failed: <reason>``; it is left out of every mean of its set (so all
methods are averaged over the same pairs) and counted in the ``failed``/``excluded`` columns.
Resumable: rows already scored with every asked metric are read back from ``per_pair.csv`` and
skipped.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfif.errors import ConfigError, DataError, InputError, MfifError

TRUTH_NAMES = ("PSNR", "SSIM")
PIELLA_METRICS = {"PiellaQ": "piella_q", "PiellaQw": "piella_qw"}
# The seed paper's columns (Xu et al. 2018, Tables 1-3) and the metrics that give them.
PAPER_COLUMNS = {"IE": "EN", "MI": "MI", "Xydeas": "QG", "Q": "PiellaQ", "Qw": "PiellaQw", "Qe": "QE"}
PAPER_PAIRS = {"Table 1": "clock", "Table 2": "pepsi", "Table 3": "cameraman"}
PAPER_BASELINES = ("dwt", "lp", "gff")
# Columns where no "best" is marked: they reward noise and halos (see docs/metrics.md).
UNRANKED = frozenset({"EN", "SF", "AG", "SD"})
BASE_COLUMNS = ("set", "pair", "method", "status", "time_ms")
# File-name suffixes of sources and ground truth: never a method's name in a results folder.
ROLE_SUFFIXES = ("A", "B", "1", "2", "GT")


# ---------------------------------------------------------------------------------------------
# Pairs

@dataclass(frozen=True)
class Item:
    """One pair to score: ``load()`` returns (frames, ground truth or None)."""
    set: str
    name: str
    load: Callable[[], tuple[list[np.ndarray], np.ndarray | None]]


def discover_pairs(folder: str | Path):
    """Pairs of a folder, as :class:`mfif.imageio.Pair`: the shared layout through
    :func:`mfif.imageio.find_pairs`, or the numbered layout ``<name>_1.*``/``<name>_2.*`` (the
    Liu 2020 reference sources). A source without its partner is a DataError naming it."""
    from mfif.imageio import IMAGE_SUFFIXES, Pair, find_pairs

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"pair folder not found: {folder}")
    files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and "_" in p.stem]
    roles = {p.stem.rsplit("_", 1)[1].upper() for p in files}
    if roles & {"A", "B"} or not roles & {"1", "2"}:
        return find_pairs(folder)
    parts: dict[str, dict[str, Path]] = {}
    for path in files:
        name, role = path.stem.rsplit("_", 1)
        if role.upper() in ("1", "2", "GT"):
            parts.setdefault(name, {})[role.upper()] = path
    pairs = []
    for name, found in sorted(parts.items()):
        missing = [role for role in ("1", "2") if role not in found]
        if missing:
            raise DataError(f"pair '{name}' in {folder} lacks its _{missing[0]} image (found: "
                            f"{', '.join(p.name for p in found.values())}): add or remove it")
        pairs.append(Pair(name, found["1"], found["2"], found.get("GT")))
    return pairs


def load_pair(pair) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Read a pair's sources (and ground truth) as uint8, checking that they match."""
    from mfif.imageio import read_image

    a, b = read_image(pair.a), read_image(pair.b)
    if a.shape != b.shape:
        raise InputError(f"pair '{pair.name}': {pair.a.name} is {_shape(a)} but {pair.b.name} is {_shape(b)}; "
                         "both sources must have one size and one mode (grey or colour)")
    truth = None
    if pair.ground_truth is not None:
        truth = read_image(pair.ground_truth, mode="grey" if a.ndim == 2 else "colour")
        if truth.shape != a.shape:
            raise InputError(f"pair '{pair.name}': ground truth {pair.ground_truth.name} is {_shape(truth)}, "
                             f"the sources are {_shape(a)}")
    return [a, b], truth


def folder_items(folders: list[str | Path], limit: int | None = None) -> list[Item]:
    """Items of every pair in the folders; a set is named after its folder (its parent too when
    two folders share a name)."""
    folders = [Path(f) for f in folders]
    names = [f.name for f in folders]
    items = []
    for folder in folders:
        set_name = folder.name if names.count(folder.name) == 1 else f"{folder.parent.name}/{folder.name}"
        for pair in discover_pairs(folder)[:limit]:
            items.append(Item(set_name, pair.name, lambda pair=pair: load_pair(pair)))
    return items


def synthetic_pair(seed: int, size: tuple[int, int] = (192, 256), colour: bool = True,
                   sharp: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """A multi-focus pair with ground truth: a sharp image (procedural texture, or ``sharp``)
    blurred (Gaussian, sigma 1.5..3) in complementary blob-shaped regions of A and B."""
    cv2 = _cv2()
    rng = np.random.default_rng(seed)
    height, width = size if sharp is None else sharp.shape[:2]
    if sharp is None:
        sharp = _texture(rng, height, width, colour)
    # Blobs: a coarse random field, smoothly enlarged, cut at its median (about half each).
    cells = rng.integers(2, 6, size=2)
    field = cv2.resize(rng.random((cells[0], cells[1])).astype(np.float32), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    in_a = field > np.median(field)
    if in_a.all() or not in_a.any():
        in_a = np.zeros((height, width), bool)
        in_a[:, : width // 2] = True
    mask = in_a[:, :, None] if sharp.ndim == 3 else in_a
    blurred = cv2.GaussianBlur(sharp, (0, 0), float(rng.uniform(1.5, 3.0)))
    a = np.where(mask, sharp, blurred)
    b = np.where(mask, blurred, sharp)
    return [a, b], sharp


def _texture(rng, height: int, width: int, colour: bool) -> np.ndarray:
    """Sharp procedural scene: smooth shading, filled shapes and lines, fine-grained noise."""
    cv2 = _cv2()
    channels = 3 if colour else 1
    base = cv2.resize(rng.random((4, 4, channels)).astype(np.float32), (width, height),
                      interpolation=cv2.INTER_CUBIC).reshape(height, width, channels)
    image = np.ascontiguousarray(np.clip(base, 0, 1) * 160 + 40).astype(np.uint8)
    for _ in range(int(rng.integers(12, 24))):
        color = tuple(int(c) for c in rng.integers(0, 256, channels))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(4, max(5, min(height, width) // 4)))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.circle(image, (x, y), r, color, -1)
        elif kind == 1:
            cv2.rectangle(image, (x, y), (x + r, y + r // 2 + 2), color, -1)
        else:
            cv2.line(image, (x, y), (int(rng.integers(0, width)), int(rng.integers(0, height))), color,
                     int(rng.integers(1, 3)))
    noise = rng.normal(0.0, 12.0, image.shape)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return image if colour else image[:, :, 0]


def synthetic_items(count: int, size: tuple[int, int] = (192, 256), seed: int = 0,
                    sharp_folder: str | Path | None = None) -> list[Item]:
    """``count`` synthetic pairs (set 'synthetic'), from procedural scenes or from the sharp
    photographs in ``sharp_folder`` (cropped to ``size``)."""
    if count < 1:
        raise ConfigError(f"--synthetic needs a count >= 1, not {count}")
    photos = None
    if sharp_folder is not None:
        from mfif.imageio import IMAGE_SUFFIXES

        photos = sorted(p for p in Path(sharp_folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not photos:
            raise DataError(f"no images in the sharp folder {sharp_folder}")

    def load(index: int):
        sharp = None
        if photos is not None:
            from mfif.imageio import read_image

            sharp = read_image(photos[index % len(photos)])[: size[0], : size[1]]
        return synthetic_pair(seed + index, size, sharp=sharp)

    return [Item("synthetic", f"syn{seed + i:04d}", lambda i=i: load(i)) for i in range(count)]


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
    from mfif.imageio import IMAGE_SUFFIXES

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
# Metrics

def resolve_metrics(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split the asked metrics into those that can run and those whose module is missing
    (name -> reason). An unknown name is a ConfigError."""
    from mfif.evaluation.metrics import IMAGE_METRICS, SOURCE_METRICS, TRUTH_METRICS, get_metric

    known = [*SOURCE_METRICS, *TRUTH_METRICS, *IMAGE_METRICS, *PIELLA_METRICS]
    ready, missing = [], {}
    for name in names:
        if name not in known:
            raise ConfigError(f"unknown metric {name!r}; known: {', '.join(known)}")
        if name in PIELLA_METRICS:
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
          metrics: list[str]) -> dict[str, float]:
    """The metrics of one fused image (first two frames as the sources). Ground-truth metrics
    are skipped without truth. A value that is not finite raises InputError."""
    from mfif.evaluation import piella
    from mfif.evaluation.metrics import compute_metrics, reference_grey

    a, b = frames[0], frames[1]
    if fused.shape[:2] != a.shape[:2]:
        raise InputError(f"fused image is {_shape(fused)}, the sources are {_shape(a)}")
    named = [m for m in metrics if m not in PIELLA_METRICS and (truth is not None or m not in TRUTH_NAMES)]
    values = compute_metrics(a, b, fused, named, truth=truth) if named else {}
    extra = [m for m in metrics if m in PIELLA_METRICS]
    if extra:
        greys = [reference_grey(x) for x in (a, b, fused)]
        for name in extra:
            values[name] = float(getattr(piella, PIELLA_METRICS[name])(*greys))
    for name, value in values.items():
        if not math.isfinite(value):
            raise InputError(f"metric {name} is {value} for this image (constant or degenerate input?)")
    return values


# ---------------------------------------------------------------------------------------------
# Result tables

def read_rows(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not set(BASE_COLUMNS) <= set(reader.fieldnames):
            raise DataError(f"{path} is not a per-pair table of this benchmark (columns {reader.fieldnames}); "
                            "choose another --out folder or pass --no-resume")
        return {(r["set"], r["pair"], r["method"]): r for r in reader}


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    partial = path.with_suffix(".csv.partial")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, path)


def _is_done(row: dict | None, metrics: list[str], has_truth: bool) -> bool:
    if row is None or row.get("status") != "ok":
        return False
    needed = [m for m in metrics if has_truth or m not in TRUTH_NAMES]
    return all(row.get(m) not in (None, "") for m in needed)


def summarize(rows: dict, items: list[Item], labels: list[str], metrics: list[str]) -> list[dict]:
    """Mean of every metric and of the time per set and method, over the pairs of the set that
    every method scored ('pairs'); 'failed' counts this method's failures, 'excluded' the pairs
    left out because some method failed on them. With several sets, a pooled 'all' row too."""
    sets: dict[str, list[str]] = {}
    for item in items:
        sets.setdefault(item.set, []).append(item.name)
    groups = list(sets.items())
    if len(sets) > 1:
        groups.append(("all", [(s, n) for s, names in sets.items() for n in names]))
    summary = []
    for set_name, names in groups:
        keys = [(set_name, n) if isinstance(n, str) else n for n in names]
        common = [k for k in keys if all(rows.get((*k, m), {}).get("status") == "ok" for m in labels)]
        for label in labels:
            used = [rows[(*k, label)] for k in common]
            entry = {"set": set_name, "method": label, "pairs": len(common),
                     "failed": sum(rows.get((*k, label), {}).get("status") != "ok" for k in keys),
                     "excluded": len(keys) - len(common)}
            times = [float(r["time_ms"]) for r in used if r.get("time_ms") not in (None, "")]
            entry["time_ms"] = float(np.mean(times)) if times else None
            for metric in metrics:
                values = [r.get(metric) for r in used]
                entry[metric] = float(np.mean([float(v) for v in values])) if values and all(
                    v not in (None, "") for v in values) else None
            summary.append(entry)
    return summary


def _fmt(value, digits: int = 4) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, (int, np.integer)):
        return str(value)
    try:
        value = float(value)
    except ValueError:
        return str(value)
    return f"{value:.{min(digits, 2)}f}" if abs(value) >= 100 else f"{value:.{digits}f}"


def _best(entries: list[dict], metric: str):
    from mfif.evaluation.metrics import LOWER_IS_BETTER

    values = [e[metric] for e in entries if e.get(metric) is not None]
    if metric in UNRANKED or len(values) < 2:
        return None
    return min(values) if metric in LOWER_IS_BETTER else max(values)


def markdown_table(entries: list[dict], columns: list[str], headers: list[str] | None = None,
                   bold: list[str] = ()) -> str:
    headers = headers or columns
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(columns)]
    best = {c: _best(entries, c) for c in bold}
    for entry in entries:
        cells = []
        for column in columns:
            text = _fmt(entry.get(column), 1 if column == "time_ms" else 4)
            if best.get(column) is not None and entry.get(column) == best[column]:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def metric_header(metric: str) -> str:
    from mfif.evaluation.metrics import LOWER_IS_BETTER

    return metric + (" (lower better)" if metric in LOWER_IS_BETTER else "")


# ---------------------------------------------------------------------------------------------
# Image grid

def image_grid(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], tile_height: int = 200) -> np.ndarray:
    """One row per pair: captioned tiles (sources, truth, each method), scaled to one height."""
    cv2 = _cv2()
    caption = 22
    lines = []
    for pair_name, tiles in rows:
        row = []
        for title, image in tiles:
            image = _as_uint8(image)
            if not (image.ndim == 3 and image.shape[2] == 3):
                image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
            width = max(1, round(image.shape[1] * tile_height / image.shape[0]))
            tile = cv2.resize(image, (width, tile_height), interpolation=cv2.INTER_AREA)
            label = np.full((caption, width, 3), 255, np.uint8)
            cv2.putText(label, f"{pair_name} {title}"[: max(4, width // 8)], (3, 16), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45, (0, 0, 0), 1, cv2.LINE_AA)
            row.append(np.vstack([label, tile]))
            row.append(np.full((tile_height + caption, 4, 3), 255, np.uint8))
        lines.append(np.hstack(row))
    width = max(line.shape[1] for line in lines)
    padded = [np.pad(line, ((0, 4), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines]
    return np.vstack(padded)


# ---------------------------------------------------------------------------------------------
# The run

@dataclass
class Report:
    rows: dict
    summary: list[dict]
    metrics: list[str]
    missing_metrics: dict[str, str]
    labels: list[str]
    computed: int
    skipped: int
    failures: list[tuple[str, str, str, str]]
    files: list[Path]


def evaluate(items: list[Item], methods: list, out: str | Path, metrics: list[str] | None = None,
             results: list[ResultsMethod] = (), resume: bool = True, grid_pairs: int = 2,
             grid_names: list[str] | None = None, save_fused: bool = False, progress: bool = True) -> Report:
    """Score ``methods`` (:class:`evaluation.methods.Method`) and ``results`` over ``items`` and
    write the tables and grids into ``out``."""
    from mfif.evaluation.metrics import REFERENCE_METRICS
    from mfif.imageio import write_image

    if not items:
        raise DataError("no pairs to evaluate")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    asked = list(metrics) if metrics else [*REFERENCE_METRICS, *TRUTH_NAMES]
    metrics, missing = resolve_metrics(asked)
    if not metrics:
        raise ConfigError(f"none of the metrics {asked} can run here: " + "; ".join(
            f"{k}: {v}" for k, v in missing.items()))
    labels = [m.label for m in methods] + [r.label for r in results]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two methods share a label in {labels}: give the results a --results-prefix")
    csv_path = out / "per_pair.csv"
    rows = read_rows(csv_path) if resume else {}
    producers = [(m.label, _computed(m)) for m in methods] + [(r.label, _stored(r)) for r in results]
    grid_counts: dict[str, int] = {}
    kept: dict[tuple[str, str], dict[str, np.ndarray | None]] = {}
    counts = {"computed": 0, "skipped": 0}

    def process(item: Item) -> None:
        key = (item.set, item.name)
        in_grid = item.name in grid_names if grid_names else grid_counts.get(item.set, 0) < grid_pairs
        # Ground-truth metrics count only where there is truth, known once the pair is read.
        todo = [label for label, _ in producers if not _is_done(rows.get((*key, label)), metrics, True)]
        frames = truth = None
        if todo or in_grid:
            try:
                frames, truth = item.load()
            except Exception as exc:  # noqa: BLE001  unreadable or mismatched: recorded, counted
                for label in todo:
                    rows[(*key, label)] = _failed(key, label, exc)
                counts["computed"] += len(todo)
                counts["skipped"] += len(producers) - len(todo)
                return
            todo = [label for label, _ in producers
                    if not _is_done(rows.get((*key, label)), metrics, truth is not None)]
        counts["skipped"] += len(producers) - len(todo)
        if in_grid:
            grid_counts[item.set] = grid_counts.get(item.set, 0) + 1
            kept[key] = {"A": frames[0], "B": frames[1], **({"truth": truth} if truth is not None else {})}
        for label, produce in producers:
            if label not in todo:
                if in_grid:
                    kept[key][label] = _safe(lambda: produce(item, frames)[0])
                continue
            bar.set_postfix_str(f"{item.set}/{item.name} {label}")
            try:
                fused, elapsed = produce(item, frames)
                if not isinstance(fused, np.ndarray) or fused.shape[:2] != frames[0].shape[:2]:
                    raise InputError(f"the fused image is a {type(fused).__name__} of shape {_shape(fused)}, "
                                     f"not an image of the sources' shape {_shape(frames[0])}")
                values = score(frames, fused, truth, metrics)
                rows[(*key, label)] = {"set": item.set, "pair": item.name, "method": label, "status": "ok",
                                       "time_ms": "" if elapsed is None else f"{elapsed:.2f}",
                                       **{k: repr(v) for k, v in values.items()}}
                if in_grid:
                    kept[key][label] = fused
                if save_fused and elapsed is not None:
                    write_image(out / "fused" / item.set / f"{item.name}_{label}.png", _as_uint8(fused))
            except Exception as exc:  # noqa: BLE001  a failing pair is recorded, counted and excluded
                rows[(*key, label)] = _failed(key, label, exc)
            counts["computed"] += 1

    bar = _progress(len(items), progress)
    for item in items:
        process(item)
        write_csv(csv_path, list(rows.values()), _columns(rows, metrics))
        bar.update(1)
    bar.close()
    columns = _columns(rows, metrics)

    keys_run = {(i.set, i.name) for i in items}
    failures = [(k[0], k[1], k[2], r["status"]) for k, r in rows.items()
                if k[:2] in keys_run and k[2] in labels and r["status"] != "ok"]
    summary = summarize(rows, items, labels, metrics)
    files = [csv_path, *_write_tables(out, rows, columns, summary, items, labels, metrics, missing, failures)]
    for set_name in dict.fromkeys(k[0] for k in kept):
        grid_rows = [(k[1], [(t, im) for t, im in kept[k].items() if im is not None])
                     for k in kept if k[0] == set_name]
        files.append(write_image(out / f"grid_{_safe_name(set_name)}.png", image_grid(grid_rows)))
    return Report(rows, summary, metrics, missing, labels, counts["computed"], counts["skipped"], failures, files)


def _columns(rows: dict, metrics: list[str]) -> list[str]:
    present = [m for m in metrics]
    for row in rows.values():
        for key in row:
            if key not in BASE_COLUMNS and key not in present:
                present.append(key)
    return [*BASE_COLUMNS, *present]


def _computed(method):
    """Fused image and fusion time (ms) of a method; its first call is a warm-up (model load,
    caches) that is not timed."""
    warm = []

    def produce(item: Item, frames):
        if not warm:
            method.fuse(frames)
            warm.append(True)
        start = time.perf_counter()
        fused = method.fuse(frames)
        return fused, (time.perf_counter() - start) * 1000.0

    return produce


def _stored(result: ResultsMethod):
    """Fused image of a results folder (no time)."""
    from mfif.imageio import read_image

    def produce(item: Item, frames):
        path = result.files.get((item.set, item.name))
        if path is None:
            raise DataError(f"no fused image for pair '{item.name}' from method '{result.label}'")
        return read_image(path), None

    return produce


def _failed(key, label: str, exc: BaseException) -> dict:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, MfifError):
        reason = f"{type(exc).__name__}: {reason}"
    return {"set": key[0], "pair": key[1], "method": label, "status": f"failed: {reason}", "time_ms": ""}


def _safe(function):
    """For the picture only: the result, or None when the method fails on this pair."""
    try:
        return function()
    except Exception:  # noqa: BLE001  the failure is already in the table
        return None


def _as_uint8(image: np.ndarray) -> np.ndarray:
    return image if image.dtype == np.uint8 else np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def _write_tables(out: Path, rows: dict, columns: list[str], summary: list[dict], items: list[Item],
                  labels: list[str], metrics: list[str], missing: dict[str, str], failures) -> list[Path]:
    metric_columns = [c for c in columns if c not in BASE_COLUMNS]
    mean_columns = ["set", "method", "pairs", "failed", "excluded", *metrics, "time_ms"]
    write_csv(out / "means.csv", [{k: ("" if v is None else v) for k, v in e.items()} for e in summary],
              mean_columns)
    lines = ["# Fusion quality: means per set", ""]
    lines.append("Means over the pairs of a set that every method scored (`pairs`); `failed`: pairs this "
                 "method failed on, `excluded`: pairs left out of the means because some method failed. "
                 "Time: fusion only, ms per pair. Best value per metric in bold (EN, SF, AG, SD unranked).")
    if missing:
        lines += ["", "Metrics not computed (module missing): " + ", ".join(
            f"{name} ({reason})" for name, reason in missing.items())]
    for set_name in dict.fromkeys(e["set"] for e in summary):
        entries = [e for e in summary if e["set"] == set_name]
        shown = [m for m in metrics if any(e.get(m) is not None for e in entries)]
        lines += ["", f"## {set_name}", "", markdown_table(
            entries, ["method", "pairs", "failed", "excluded", *shown, "time_ms"],
            ["method", "pairs", "failed", "excluded", *map(metric_header, shown), "ms/pair"], bold=shown)]
    if failures:
        lines += ["", "## Failed", ""] + [f"- {s}/{p} {m}: {status}" for s, p, m, status in failures]
    means_md = out / "means.md"
    means_md.write_text("\n".join(lines) + "\n")
    order = {(i.set, i.name): n for n, i in enumerate(items)}
    listed = sorted((r for k, r in rows.items() if k[:2] in order and k[2] in labels),
                    key=lambda r: (order[(r["set"], r["pair"])], labels.index(r["method"])))
    per_pair_md = out / "per_pair.md"
    per_pair_md.write_text("# Fusion quality per pair\n\n" + markdown_table(
        listed, ["set", "pair", "method", "status", *metric_columns, "time_ms"]) + "\n")
    return [out / "means.csv", means_md, per_pair_md]


def paper_tables(report: Report, out: Path) -> list[Path]:
    """The seed paper's Tables 1-3 (Xu et al. 2018) from the rows of a run over the classic set."""
    lines = ["# Xu et al. 2018, Tables 1-3, regenerated", "",
             "Columns as in the paper: IE (entropy, EN), MI (MI(A,F) + MI(B,F)), Xydeas (QG, Qabf), "
             "Piella Q, Qw and Qe (the metrics package's QE). The paper's absolute values come from an "
             "unknown metric pipeline: compare the orderings of the methods (rank in brackets, 1 = best), "
             "not the digits.", ""]
    records = []
    for table, pair in PAPER_PAIRS.items():
        entries = []
        for (set_name, name, method), row in report.rows.items():
            if name != pair or method not in report.labels or row["status"] != "ok":
                continue
            entry = {"method": method}
            for header, metric in PAPER_COLUMNS.items():
                value = row.get(metric)
                entry[header] = float(value) if value not in (None, "") else None
            entries.append(entry)
            records.append({"table": table, "pair": pair, **entry})
        entries.sort(key=lambda e: report.labels.index(e["method"]))
        ranked = []
        for entry in entries:
            cells = {"method": entry["method"]}
            for header in PAPER_COLUMNS:
                value = entry[header]
                rank = 1 + sum(e[header] is not None and value is not None and e[header] > value for e in entries)
                cells[header] = "" if value is None else f"{value:.4f} ({rank})"
            ranked.append(cells)
        lines += [f"## {table}: {pair}", "",
                  markdown_table(ranked, ["method", *PAPER_COLUMNS]) if ranked else "(pair not found or failed)", ""]
    paths = [out / "paper_tables.md", out / "paper_tables.csv"]
    paths[0].write_text("\n".join(lines))
    write_csv(paths[1], records, ["table", "pair", "method", *PAPER_COLUMNS])
    return paths


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="evaluate", unit="pair", disable=not enabled, dynamic_ncols=True)


def _cv2():
    from mfif.lazy import require

    return require("cv2", extra="eval", purpose="the quality benchmark")


def _shape(image) -> str:
    return "x".join(str(n) for n in getattr(image, "shape", ())) or "?"


# ---------------------------------------------------------------------------------------------
# Command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folders", nargs="*", type=Path,
                        help="folders of pairs: <name>_A.*, <name>_B.* (optional <name>_GT.*) "
                             "or <name>_1.*, <name>_2.*")
    parser.add_argument("--methods", default=None,
                        help="comma-separated: average, lp, dwt, gff, decision (or 'baselines'), enfuse, focusmap, "
                             "model:<file.onnx> (default: the baselines and enfuse when installed)")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metric names (default: QMI,QNCIE,QG,QP,QE,QY,QCB,QCV and PSNR,SSIM "
                             "where there is ground truth; also MI, EN, SF, AG, SD, PiellaQ, PiellaQw)")
    parser.add_argument("--results", type=Path, action="append", default=[],
                        help="folder of existing fused images <pair>.* or <pair>_<method>.* to score (repeatable)")
    parser.add_argument("--results-prefix", default="", help="put this before the method names of --results")
    parser.add_argument("--results-label", default=None,
                        help="method name for files named <pair>.* (default: the results folder's name)")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="also score N synthetic pairs with ground truth")
    parser.add_argument("--synthetic-size", default="192x256", metavar="HxW", help="size of the synthetic pairs")
    parser.add_argument("--sharp", type=Path, default=None,
                        help="make the synthetic pairs from the sharp photographs in this folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic pairs")
    parser.add_argument("--limit", type=int, default=None, help="at most this many pairs per folder")
    parser.add_argument("--out", type=Path, default=Path("evaluation_out"), help="output folder")
    parser.add_argument("--grid", type=int, default=2, metavar="N", help="pairs per set in the image grid (0: none)")
    parser.add_argument("--grid-pairs", default=None, help="comma-separated pair names for the image grid")
    parser.add_argument("--save-fused", action="store_true", help="write every fused image under OUT/fused/<set>/")
    parser.add_argument("--no-resume", action="store_true", help="recompute pairs already in OUT/per_pair.csv")
    parser.add_argument("--paper-tables", action="store_true",
                        help="regenerate Xu et al. 2018 Tables 1-3 (clock, pepsi, cameraman of the classic set) "
                             "for DWT, LP, GFF and the --methods")
    parser.add_argument("--list-methods", action="store_true", help="list the method names and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from mfif.evaluation import methods as registry

    if args.list_methods:
        for name, text in registry.DESCRIPTIONS.items():
            print(f"{name:<14} {text}")
        return 0
    names = args.methods.split(",") if args.methods else registry.default_method_names()
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    if args.paper_tables:
        names = [*PAPER_BASELINES, *(n for n in (args.methods.split(",") if args.methods else []))]
        metrics = list(dict.fromkeys([*PAPER_COLUMNS.values(), *(metrics or [])]))
        items = _paper_items(args.folders)
    else:
        items = folder_items(args.folders, args.limit) if args.folders else []
        if args.synthetic:
            items += synthetic_items(args.synthetic, _size(args.synthetic_size), args.seed, args.sharp)
        if not items:
            raise ConfigError("nothing to evaluate: give folders of pairs, --synthetic N, or --paper-tables")
    methods = registry.get_methods(names) if names else []
    results = []
    for folder in args.results:
        results += find_results(folder, items, args.results_prefix, args.results_label)
    report = evaluate(items, methods, args.out, metrics, results, resume=not args.no_resume,
                      grid_pairs=args.grid, grid_names=args.grid_pairs.split(",") if args.grid_pairs else None,
                      save_fused=args.save_fused, progress=not args.quiet)
    if args.paper_tables:
        report.files += paper_tables(report, Path(args.out))
    _print_summary(report)
    return 0


def _paper_items(folders: list[Path]) -> list[Item]:
    from mfif.paths import shared_data_dir

    if not folders:
        data = shared_data_dir()
        if data is None:
            raise DataError("--paper-tables needs the classic pairs: pass the folder holding clock_A/B, pepsi_A/B "
                            "and cameraman_A/B, or set MFIF_DATA to the shared data folder")
        folders = [data / "pairs" / "classic"]
    items = [i for i in folder_items(folders) if i.name in PAPER_PAIRS.values()]
    found = {i.name for i in items}
    if not found:
        raise DataError(f"none of the pairs {list(PAPER_PAIRS.values())} in {', '.join(map(str, folders))}")
    return items


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--synthetic-size takes HxW, e.g. 192x256; got {text!r}") from None
    if height < 1 or width < 1:
        raise ConfigError(f"--synthetic-size must be positive; got {text!r}")
    return height, width


def _print_summary(report: Report) -> None:
    shown = [m for m in report.metrics if m not in UNRANKED][:10]
    print(f"\nscored {report.computed}, skipped (already scored) {report.skipped}, failed {len(report.failures)}")
    if report.missing_metrics:
        print("metrics not computed (module missing): " + ", ".join(report.missing_metrics))
    for set_name in dict.fromkeys(e["set"] for e in report.summary):
        entries = [e for e in report.summary if e["set"] == set_name]
        print(f"\n{set_name} ({entries[0]['pairs']} pairs, {entries[0]['excluded']} excluded)")
        print(f"{'method':<14}" + "".join(f"{m:>9}" for m in shown) + f"{'ms':>9}")
        for e in entries:
            cells = "".join(f"{_fmt(e.get(m)):>9}" for m in shown)
            print(f"{e['method']:<14}{cells}{_fmt(e['time_ms'], 1):>9}")
    for path in report.files:
        print(f"wrote {path}")
