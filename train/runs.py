"""The folder of a training run and the files it writes beside its checkpoints: the settings
(``train_config.json``), one record per epoch (``log.jsonl``, and the same as a table,
``results.csv``) and the learning curve (``results.png``). A run never writes into another run's
folder: the default ``runs/MODEL`` is numbered (``runs/MODEL2``, ``runs/MODEL3``, ...) when it
holds a run, any other folder that holds one is refused, and ``--resume`` continues in the folder
of the checkpoint it resumes. Every file is written atomically and readable by others (0644
under the usual umask). No torch here."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mfif.errors import ConfigError
from mfif.files import atomic_path, write_bytes_atomic

CONFIG, LOG, TABLE, CURVE = "train_config.json", "log.jsonl", "results.csv", "results.png"
# A folder holds a run when any of these is in it.
RUN_MARKERS = (CONFIG, LOG, "last.safetensors")


def default_out(model: str) -> str:
    """Where a run of ``model`` goes when --out is not given."""
    return f"runs/{model}"


def holds_run(folder: str | Path) -> bool:
    return any((Path(folder) / name).exists() for name in RUN_MARKERS)


def run_folder(out: str | Path, model: str, resume: str = "") -> Path:
    """The folder this run writes to: ``out`` when it holds no run, or is the folder of the
    checkpoint being resumed; the next free numbered name when ``out`` is the default
    (:func:`default_out`); otherwise a ConfigError, so that no run replaces another's best
    checkpoint or appends to its log."""
    out = Path(out)
    if resume and out.resolve() == Path(resume).resolve().parent:
        return out
    if not holds_run(out):
        return out
    if out == Path(default_out(model)):
        number = 2
        while holds_run(out.with_name(f"{out.name}{number}")):
            number += 1
        return out.with_name(f"{out.name}{number}")
    raise ConfigError(f"{out} holds an earlier run ({describe(out)}); a new run would replace its checkpoints: "
                      f"choose another --out, continue that run with --resume {out / 'last.safetensors'}, or "
                      "remove the folder")


def records(folder: str | Path) -> list[dict]:
    """The epoch records of the run in ``folder`` (empty when there are none)."""
    path = Path(folder) / LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def describe(folder: str | Path) -> str:
    """'best validation PSNR 31.80 dB at epoch 6 of 6', or what the folder holds."""
    scored = [r for r in records(folder) if "psnr" in r]
    if not scored:
        return "no finished epoch"
    best = max(scored, key=lambda r: r["psnr"])
    return f"best validation PSNR {best['psnr']:.2f} dB at epoch {best['epoch']} of {scored[-1]['epoch']}"


def write_config(folder: Path, config: dict) -> Path:
    return write_bytes_atomic(folder / CONFIG, (json.dumps(config, indent=2) + "\n").encode())


def add_record(folder: Path, record: dict) -> list[dict]:
    """Append ``record`` to ``log.jsonl`` and rewrite ``results.csv`` from all records; returns them."""
    path = folder / LOG
    earlier = path.read_text() if path.is_file() else ""
    write_bytes_atomic(path, (earlier + json.dumps(record) + "\n").encode())
    rows = records(folder)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(folder / TABLE, text.getvalue().encode())
    return rows


def plot_curve(folder: Path, title: str = "") -> Path | None:
    """``results.png``: the training loss and the validation PSNR (with the pixel average's) per
    epoch, the best epoch marked. None without matplotlib (the ``eval`` extra) or records."""
    rows = [r for r in records(folder) if "psnr" in r]
    if not rows:
        return None
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print(f"matplotlib is not installed: no {CURVE} (pip install 'mfif[eval]'); the figures are in {folder / TABLE}")
        return None
    epochs = [r["epoch"] for r in rows]
    best = max(rows, key=lambda r: r["psnr"])
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    loss, psnr = figure.subplots(1, 2)
    loss.plot(epochs, [r["loss"] for r in rows], marker="o", markersize=3)
    loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    psnr.plot(epochs, [r["psnr"] for r in rows], marker="o", markersize=3, label="model")
    psnr.plot(epochs, [r["average_psnr"] for r in rows], linestyle="--", color="grey", label="pixel average")
    psnr.plot([best["epoch"]], [best["psnr"]], marker="*", markersize=12, linestyle="none", color="C3",
              label=f"best: {best['psnr']:.2f} dB (epoch {best['epoch']})")
    psnr.set(xlabel="epoch", ylabel="validation PSNR (dB)", title="validation")
    psnr.legend(loc="lower right", fontsize="small")
    for axis in (loss, psnr):
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title, fontsize="medium")
    path = folder / CURVE
    with atomic_path(path) as partial:
        figure.savefig(partial, dpi=90, format="png")
    return path
