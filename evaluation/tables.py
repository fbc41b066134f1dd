"""Tables and pictures of ``mfif evaluate``: the per-pair CSV (also what a resumed run reads back),
the means per set as CSV and Markdown, the seed paper's Tables 1-3, the image grid and the short
table printed at the end. The numbers come from :mod:`evaluation.scoring`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mfif.errors import DataError
from mfif.files import atomic_path, write_bytes_atomic

BASE_COLUMNS = ("set", "pair", "method", "status", "time_ms")
# What a per-pair row was scored with (not a metric): the sha256 of the model file the method ran,
# which a resumed run compares. Last in the CSV, not in the Markdown tables.
IDENTITY_COLUMNS = ("model_sha256",)
# Columns where no "best" is marked: they reward noise and halos (see docs/metrics.md).
UNRANKED = frozenset({"EN", "SF", "AG", "SD"})
# The seed paper's columns (Xu et al. 2018, Tables 1-3) and the metrics that give them.
PAPER_COLUMNS = {"IE": "EN", "MI": "MI", "Xydeas": "QG", "Q": "PiellaQ", "Qw": "PiellaQw", "Qe": "QE"}
PAPER_PAIRS = {"Table 1": "clock", "Table 2": "pepsi", "Table 3": "cameraman"}


# ---------------------------------------------------------------------------------------------
# CSV

def read_rows(path: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    """The rows of a per-pair CSV by (set, pair, method); empty when there is no file."""
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not set(BASE_COLUMNS) <= set(reader.fieldnames):
            raise DataError(f"{path} is not a per-pair table of this benchmark (columns {reader.fieldnames}); "
                            "choose another --out folder or pass --no-resume")
        return {(r["set"], r["pair"], r["method"]): r for r in reader}


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    with atomic_path(path) as partial, open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def columns(rows: dict, metrics: list[str]) -> list[str]:
    """The per-pair columns: the base ones, the asked metrics, any others the rows hold, then the
    identity columns."""
    present = list(metrics)
    for row in rows.values():
        for key in row:
            if key not in BASE_COLUMNS and key not in IDENTITY_COLUMNS and key not in present:
                present.append(key)
    return [*BASE_COLUMNS, *present, *IDENTITY_COLUMNS]


# ---------------------------------------------------------------------------------------------
# Markdown

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


def write_tables(out: Path, rows: dict, summary: list[dict], order: list[tuple[str, str]], labels: list[str],
                 metrics: list[str], missing: dict[str, str], failures,
                 method_summary: list[dict] = ()) -> list[Path]:
    """``means.csv``, ``means.md``, ``means_by_method.csv`` and ``per_pair.md`` in ``out``;
    ``summary`` holds the means over the pairs every method scored, ``method_summary`` each
    method's over the pairs it scored; ``order`` lists the (set, pair) keys of the run,
    ``failures`` its (set, pair, method, status) of failed rows."""
    metric_columns = [c for c in columns(rows, metrics) if c not in BASE_COLUMNS and c not in IDENTITY_COLUMNS]
    mean_columns = ["set", "method", "pairs", "failed", "excluded", *metrics, "time_ms"]
    write_csv(out / "means.csv", [{k: ("" if v is None else v) for k, v in e.items()} for e in summary],
              mean_columns)
    write_csv(out / "means_by_method.csv", [{k: ("" if v is None else v) for k, v in e.items()}
                                            for e in method_summary], [c for c in mean_columns if c != "excluded"])
    lines = ["# Fusion quality: means per set", ""]
    lines.append("Means over the pairs of a set that every method scored (`pairs`); `failed`: pairs this "
                 "method failed on, `excluded`: pairs left out of the means because some method failed. Where "
                 "pairs were excluded, a second table gives each method's means over the pairs it scored. "
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
        own = [e for e in method_summary if e["set"] == set_name]
        if own and entries[0]["excluded"]:
            shown = [m for m in metrics if any(e.get(m) is not None for e in own)]
            lines += ["", f"Each method over the pairs it scored ({set_name}; the methods' pairs differ, so compare "
                          "with care):", "", markdown_table(
                own, ["method", "pairs", "failed", *shown, "time_ms"],
                ["method", "pairs", "failed", *map(metric_header, shown), "ms/pair"])]
    if failures:
        lines += ["", "## Failed", ""] + [f"- {s}/{p} {m}: {status}" for s, p, m, status in failures]
    means_md = write_text(out / "means.md", "\n".join(lines) + "\n")
    position = {key: n for n, key in enumerate(order)}
    listed = sorted((r for k, r in rows.items() if k[:2] in position and k[2] in labels),
                    key=lambda r: (position[(r["set"], r["pair"])], labels.index(r["method"])))
    per_pair_md = write_text(out / "per_pair.md", "# Fusion quality per pair\n\n" + markdown_table(
        listed, ["set", "pair", "method", "status", *metric_columns, "time_ms"]) + "\n")
    return [out / "means.csv", means_md, out / "means_by_method.csv", per_pair_md]


def paper_tables(rows: dict, labels: list[str], out: Path) -> list[Path]:
    """The seed paper's Tables 1-3 (Xu et al. 2018) from the rows of a run over the classic set."""
    lines = ["# Xu et al. 2018, Tables 1-3, regenerated", "",
             "Columns as in the paper: IE (entropy, EN), MI (MI(A,F) + MI(B,F)), Xydeas (QG, Qabf), "
             "Piella Q, Qw and Qe (the metrics package's QE). The paper's absolute values come from an "
             "unknown metric pipeline: compare the orderings of the methods (rank in brackets, 1 = best), "
             "not the digits.", ""]
    records = []
    for table, pair in PAPER_PAIRS.items():
        entries = []
        for (set_name, name, method), row in rows.items():
            if name != pair or method not in labels or row["status"] != "ok":
                continue
            entry = {"method": method}
            for header, metric in PAPER_COLUMNS.items():
                value = row.get(metric)
                entry[header] = float(value) if value not in (None, "") else None
            entries.append(entry)
            records.append({"table": table, "pair": pair, **entry})
        entries.sort(key=lambda e: labels.index(e["method"]))
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
    write_text(paths[0], "\n".join(lines))
    write_csv(paths[1], records, ["table", "pair", "method", *PAPER_COLUMNS])
    return paths


def format_summary(summary: list[dict], metrics: list[str], method_summary: list[dict] = ()) -> str:
    """The means per set as a short text table (ranked metrics only: at most ten, then the
    ground-truth ones); where some pairs were excluded, each method's means over the pairs it
    scored below it."""
    from mfif.evaluation.scoring import BAND_NAMES, TRUTH_NAMES

    ranked = [m for m in metrics if m not in UNRANKED]
    shown = ranked[:10] + [m for m in ranked[10:] if m in (*TRUTH_NAMES, *BAND_NAMES)]
    header = f"{'method':<14}" + "".join(f"{m:>9}" for m in shown) + f"{'ms':>9}"
    lines = []
    for set_name in dict.fromkeys(e["set"] for e in summary):
        entries = [e for e in summary if e["set"] == set_name]
        lines += ["", f"{set_name} ({entries[0]['pairs']} pairs, {entries[0]['excluded']} excluded)", header]
        for e in entries:
            cells = "".join(f"{_fmt(e.get(m)):>9}" for m in shown)
            lines.append(f"{e['method']:<14}{cells}{_fmt(e['time_ms'], 1):>9}")
        own = [e for e in method_summary if e["set"] == set_name]
        if own and entries[0]["excluded"]:
            lines += [f"{set_name}, each method over the pairs it scored:", header + f"{'pairs':>7}"]
            for e in own:
                cells = "".join(f"{_fmt(e.get(m)):>9}" for m in shown)
                lines.append(f"{e['method']:<14}{cells}{_fmt(e['time_ms'], 1):>9}{e['pairs']:>7}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Image grid

def as_uint8(image: np.ndarray) -> np.ndarray:
    return image if image.dtype == np.uint8 else np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def image_grid(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], tile_height: int = 200) -> np.ndarray:
    """One row per pair: captioned tiles (sources, truth, each method), scaled to one height."""
    from mfif.lazy import require

    cv2 = require("cv2", extra="eval", purpose="the image grid of mfif evaluate")
    caption = 22
    lines = []
    for pair_name, tiles in rows:
        row = []
        for title, image in tiles:
            image = as_uint8(image)
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


def safe_name(text: str) -> str:
    """``text`` usable in a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
