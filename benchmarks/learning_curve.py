"""Learning curves on real pairs: a metric (default QG) for every kept epoch of training runs
(``mfif train --save-period N`` keeps OUT/epoch_NNN.safetensors) and for the checkpoint a
fine-tuning run started from (its ``--init``, step 0), beside the run's validation PSNR and
classical baselines. Shows whether more training still moves a model and where it stands against
the baselines at each step. Writes curve.csv, curve.md and curve.png (needs matplotlib) into --out;
re-running scores only the checkpoints not scored before.

    python -m mfif.benchmarks.learning_curve runs/xu2018 runs/mustafa2019 \\
        --pairs ../shared/data/pairs/classic --pair clock --baselines lp,dwt,gff --out out/curves
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from mfif.benchmarks.report import run_command
from mfif.errors import ConfigError, DataError, MfifError
from mfif.hashing import sha256_file


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(steps trained in this run, file) for the run's starting checkpoint (fine-tuning runs) and
    every kept epoch, in training order."""
    from mfif.train.checkpoint import load_checkpoint

    config_path = run / "train_config.json"
    if not config_path.is_file():
        raise DataError(f"{run} holds no training run (no train_config.json): give folders written by mfif train")
    found = []
    config = json.loads(config_path.read_text())
    init = config.get("init")
    if init:
        if not Path(init).is_file():
            problem = "is gone"
        elif "init_sha256" not in config:
            problem = "cannot be checked (the run predates mfif recording its sha256)"
        elif config["init_sha256"] != sha256_file(init):
            problem = "has changed since the run started"
        else:
            problem = None
            found.append((0, Path(init)))
        if problem:
            print(f"{run}: its starting checkpoint {init} {problem}: the curve starts at the first kept epoch")
    for path in sorted(run.glob("epoch_*.safetensors")):
        found.append((int(load_checkpoint(path).metadata["train.step"]), path))
    if len(found) < 2:
        raise DataError(f"{run} keeps {len(found)} checkpoint(s) to draw a curve from: train it with --save-period N")
    return found


def validation_psnr(run: Path) -> dict[int, float]:
    """Validation PSNR by step, from the run's results.csv."""
    path = run / "results.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {int(row["step"]): float(row["psnr"]) for row in csv.DictReader(handle)}


def scores(items, methods, out: Path, metric: str, pairs: list[str]) -> dict[str, dict[str, float]]:
    """label -> {'mean': metric over all items, pair: metric on that pair} via mfif evaluate's scoring."""
    from mfif.evaluation.quality import evaluate

    report = evaluate(items, methods, out, metrics=[metric], grid_pairs=0, progress=False)
    if report.failures:
        raise MfifError(f"scoring failed: {report.failures[:3]}")
    result = {}
    for method in methods:
        values = {item.name: float(report.rows[(item.set, item.name, method.label)][metric]) for item in items}
        result[method.label] = {"mean": sum(values.values()) / len(values),
                                **{pair: values[pair] for pair in pairs}}
    return result


def plot(curves: dict[str, list[dict]], baselines: dict[str, dict[str, float]], columns: list[str], metric: str,
         path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'mfif[eval]')")
        return None
    figure, axes = plt.subplots(1, len(columns), figsize=(5 * len(columns), 3.6), squeeze=False)
    for axis, column in zip(axes[0], columns):
        for run, rows in curves.items():
            axis.plot([r["step"] for r in rows], [r[column] for r in rows], marker="o", markersize=3, label=run)
        for index, (name, values) in enumerate(baselines.items()):
            axis.axhline(values[column], linestyle="--", linewidth=1, color=f"C{len(curves) + index}", label=name)
        axis.set_title(f"{metric}, {'mean over the pairs' if column == 'mean' else column}")
        axis.set_xlabel("training steps in the run")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    from mfif.files import atomic_path

    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    plt.close(figure)
    return path


def run(args: argparse.Namespace) -> int:
    from mfif.evaluation.methods import get_method, get_methods
    from mfif.evaluation.scoring import folder_items
    from mfif.files import write_bytes_atomic

    items = folder_items(args.pairs)
    if not items:
        raise DataError(f"no pairs in {', '.join(map(str, args.pairs))}")
    missing = [pair for pair in args.pair if pair not in {item.name for item in items}]
    if missing:
        raise ConfigError(f"--pair {', '.join(missing)}: no such pair in {', '.join(map(str, args.pairs))}")
    columns = ["mean", *args.pair]
    out = Path(args.out)
    baselines = scores(items, get_methods(args.baselines), out / "baselines", args.metric, args.pair) \
        if args.baselines else {}
    curves = {}
    for folder in args.runs:
        folder = Path(folder)
        found = checkpoints(folder)
        methods = [get_method(f"model:{path}") for _, path in found]
        scored = scores(items, methods, out / folder.name, args.metric, args.pair)
        psnr = validation_psnr(folder)
        curves[folder.name] = [{"step": step, "checkpoint": str(path), "val_psnr": psnr.get(step),
                                **scored[method.label]} for (step, path), method in zip(found, methods)]
    csv_text = io.StringIO()
    writer = csv.writer(csv_text, lineterminator="\n")
    writer.writerow(["run", "step", "checkpoint", "val_psnr", *columns])
    table = [f"| run | step | validation PSNR | {' | '.join(f'{args.metric} {c}' for c in columns)} |",
             "|" + "---|" * (len(columns) + 3)]
    for name, rows in curves.items():
        for row in rows:
            psnr = "" if row["val_psnr"] is None else f"{row['val_psnr']:.2f}"
            writer.writerow([name, row["step"], row["checkpoint"], psnr, *(f"{row[c]:.4f}" for c in columns)])
            table.append(f"| {name} | {row['step']} | {psnr} | " + " | ".join(f"{row[c]:.4f}" for c in columns) + " |")
    for name, values in baselines.items():
        table.append(f"| {name} (baseline) | | | " + " | ".join(f"{values[c]:.4f}" for c in columns) + " |")
    print("\n".join(table))
    out.mkdir(parents=True, exist_ok=True)
    for path, content in ((out / "curve.csv", csv_text.getvalue()), (out / "curve.md", "\n".join(table) + "\n")):
        write_bytes_atomic(path, content.encode())
        print(f"wrote {path}")
    if plot(curves, baselines, columns, args.metric, out / "curve.png"):
        print(f"wrote {out / 'curve.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mfif.benchmarks.learning_curve",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders of mfif train (with --save-period)")
    parser.add_argument("--pairs", nargs="+", required=True, help="folders of real pairs to score on")
    parser.add_argument("--pair", action="append", default=[], help="also give this one pair's score (repeatable)")
    parser.add_argument("--baselines", default="lp,dwt,gff", help="methods drawn as horizontal lines ('' for none)")
    parser.add_argument("--metric", default="QG", help="metric of mfif evaluate (default QG)")
    parser.add_argument("--out", default="learning_curve", help="output folder (default learning_curve)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)

if __name__ == "__main__":
    sys.exit(main())
