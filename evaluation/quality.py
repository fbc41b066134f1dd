"""The quality evaluation behind ``mfif evaluate``: fusion methods scored with the fusion metrics
over pairs, written as tables and an image grid.

Sources of pairs: folders (:func:`mfif.imageio.find_pairs`: ``<name>_A.*``, ``<name>_B.*``,
optional ``<name>_GT.*``, or the numbered layout ``<name>_1.*``, ``<name>_2.*`` of the Liu 2020
reference set) and synthetic pairs with ground truth (:mod:`mfif.scenes`). Methods come from
:mod:`evaluation.methods`; fused images that already exist (an outside tool's output) are scored
in the same pipeline. Scoring is :mod:`evaluation.scoring`, the files :mod:`evaluation.tables`.

Outputs in ``out``: ``per_pair.csv``/``.md`` (one row per set, pair and method, with the fusion
time), ``means.csv``/``.md`` (per set and method, over the pairs every method scored),
``means_by_method.csv`` (each method over the pairs it scored), ``grid_<set>.png`` (sources and
every method's result for a few pairs). Resumable: rows already scored with every asked metric, by
the same model file (its sha256), are read back from ``per_pair.csv`` and skipped;
``per_pair.csv`` is rewritten after every pair.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfif.errors import ConfigError, DataError
from mfif.evaluation import tables
from mfif.evaluation.scoring import (BAND_NAMES, TRUTH_NAMES, Computed, Item, ResultsMethod, Stored, resolve_metrics,
                                    score_pair, summarize)
from mfif.progress import Progress, format_seconds


@dataclass
class Report:
    rows: dict                                  # (set, pair, method) -> per-pair row
    summary: list[dict]                         # means per set and method over the pairs all methods scored
    metrics: list[str]
    missing_metrics: dict[str, str]             # asked for but not computable here: name -> reason
    labels: list[str]
    computed: int                               # (pair, method) scores made in this run
    skipped: int                                # read back from an earlier run
    failures: list[tuple[str, str, str, str]]   # (set, pair, method, status)
    files: list[Path]
    method_summary: list[dict] = field(default_factory=list)  # each method over the pairs it scored


def evaluate(items: list[Item], methods: list, out: str | Path, metrics: list[str] | None = None,
             results: list[ResultsMethod] = (), resume: bool = True, grid_pairs: int = 2,
             grid_names: list[str] | None = None, save_fused: bool = False, progress: bool = True) -> Report:
    """Score ``methods`` (:class:`evaluation.methods.Method`) and ``results`` over ``items`` and
    write the tables and grids into ``out``. ``grid_pairs`` pairs per set (or the pairs named in
    ``grid_names``) go into the image grid; ``save_fused`` writes every fused image computed."""
    from mfif.evaluation.metrics import REFERENCE_METRICS
    from mfif.imageio import write_image

    if not items:
        raise DataError("no pairs to evaluate")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    asked = list(metrics) if metrics else [*REFERENCE_METRICS, *TRUTH_NAMES, *BAND_NAMES]
    metrics, missing = resolve_metrics(asked)
    if not metrics:
        raise ConfigError(f"none of the metrics {asked} can run here: " + "; ".join(
            f"{k}: {v}" for k, v in missing.items()))
    labels = [m.label for m in methods] + [r.label for r in results]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two methods share a label in {labels}: give the results a --results-prefix")
    csv_path = out / "per_pair.csv"
    rows = tables.read_rows(csv_path) if resume else {}
    producers = [(m.label, Computed(m)) for m in methods] + [(r.label, Stored(r)) for r in results]

    grid: dict[tuple[str, str], dict[str, np.ndarray | None]] = {}
    in_grid_per_set: dict[str, int] = {}
    done = skipped = 0
    with Progress(total=len(items), desc="evaluate", unit="pair", enabled=progress) as bar:
        for index, item in enumerate(items):
            bar.set_postfix_str(f"{item.set}/{item.name}")
            wanted = item.name in grid_names if grid_names else in_grid_per_set.get(item.set, 0) < grid_pairs
            pair = score_pair(item, producers, metrics, rows, with_images=wanted)
            rows.update(pair.rows)
            done += len(pair.rows)
            skipped += pair.skipped
            if pair.images is not None:
                grid[(item.set, item.name)] = pair.images
                in_grid_per_set[item.set] = in_grid_per_set.get(item.set, 0) + 1
            if save_fused:
                for label, fused in pair.fused.items():
                    if rows[(item.set, item.name, label)]["time_ms"]:
                        write_image(out / "fused" / item.set / f"{item.name}_{label}.png", tables.as_uint8(fused))
            tables.write_csv(csv_path, list(rows.values()), tables.columns(rows, metrics))
            bar.update(1)
            if progress and not bar.shown and (index + 1 == len(items) or items[index + 1].set != item.set):
                bar.note(f"evaluate: set {item.set} done ({index + 1} of {len(items)} pairs, "
                         f"{format_seconds(time.perf_counter() - bar.started)})")

    order = [(i.set, i.name) for i in items]
    in_run = set(order)
    failures = [(*key, row["status"]) for key, row in rows.items()
                if key[:2] in in_run and key[2] in labels and row["status"] != "ok"]
    summary = summarize(rows, items, labels, metrics)
    method_summary = summarize(rows, items, labels, metrics, common=False)
    files = [csv_path, *tables.write_tables(out, rows, summary, order, labels, metrics, missing, failures,
                                            method_summary)]
    for set_name in dict.fromkeys(key[0] for key in grid):
        grid_rows = [(key[1], [(title, image) for title, image in images.items() if image is not None])
                     for key, images in grid.items() if key[0] == set_name]
        files.append(write_image(out / f"grid_{tables.safe_name(set_name)}.png", tables.image_grid(grid_rows)))
    return Report(rows, summary, metrics, missing, labels, done, skipped, failures, files, method_summary)
