"""``mfif evaluate``: score fusion methods with the fusion metrics over folders of pairs, synthetic
pairs or existing results, and write the tables (see :mod:`evaluation.quality`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mfif.errors import ConfigError, DataError
from mfif.sizes import parse_resolution

PAPER_BASELINES = ("dwt", "lp", "gff")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folders", nargs="*", type=Path,
                        help="folders of pairs: <name>_A.*, <name>_B.* (optional <name>_GT.*) "
                             "or <name>_1.*, <name>_2.*")
    parser.add_argument("--methods", default=None,
                        help="comma-separated: average, lp, dwt, gff, decision (or 'baselines'), enfuse, focusmap, "
                             "model:<file> (a .onnx, .engine/.plan or .safetensors model) (default: the baselines "
                             "and enfuse when installed)")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metric names (default: QMI,QNCIE,QG,QP,QE,QY,QCB,QCV and PSNR,SSIM "
                             "where there is ground truth, BandPSNR (PSNR within 10 px of the focus-region "
                             "borders: halos) on synthetic pairs; also MI, EN, SF, AG, SD, PiellaQ, PiellaQw)")
    parser.add_argument("--results", type=Path, action="append", default=[],
                        help="folder of existing fused images <pair>.* or <pair>_<method>.* to score (repeatable)")
    parser.add_argument("--results-prefix", default="", help="put this before the method names of --results")
    parser.add_argument("--results-label", default=None,
                        help="method name for files named <pair>.* (default: the results folder's name)")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="also score N synthetic pairs with ground truth")
    parser.add_argument("--synthetic-size", default="256x192", metavar="WxH",
                        help="size of the synthetic pairs, WIDTHxHEIGHT")
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
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (there is none when stderr is not a terminal: one line per set instead)")


def run(args: argparse.Namespace) -> int:
    from mfif.evaluation import methods as registry
    from mfif.evaluation import tables
    from mfif.evaluation.quality import evaluate
    from mfif.evaluation.scoring import find_results, folder_items, synthetic_items

    if args.list_methods:
        for name, text in registry.DESCRIPTIONS.items():
            print(f"{name:<14} {text}")
        return 0
    names = args.methods.split(",") if args.methods else registry.default_method_names()
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    if args.paper_tables:
        names = [*PAPER_BASELINES, *(n for n in (args.methods.split(",") if args.methods else []))]
        metrics = list(dict.fromkeys([*tables.PAPER_COLUMNS.values(), *(metrics or [])]))
        items = _paper_items(args.folders)
    else:
        items = folder_items(args.folders, args.limit) if args.folders else []
        if args.synthetic:
            items += synthetic_items(args.synthetic, parse_resolution(args.synthetic_size, option="--synthetic-size"), args.seed, args.sharp)
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
        report.files += tables.paper_tables(report.rows, report.labels, Path(args.out))
    print(f"\nscored {report.computed}, skipped (already scored) {report.skipped}, failed {len(report.failures)}")
    if report.missing_metrics:
        print("metrics not computed (module missing): " + ", ".join(report.missing_metrics))
    print(tables.format_summary(report.summary, report.metrics, report.method_summary))
    for path in report.files:
        print(f"wrote {path}")
    return 0


def _paper_items(folders: list[Path]):
    from mfif.evaluation.scoring import folder_items
    from mfif.evaluation.tables import PAPER_PAIRS
    from mfif.paths import shared_data_dir

    if not folders:
        data = shared_data_dir()
        if data is None:
            raise DataError("--paper-tables needs the classic pairs: pass the folder holding clock_A/B, pepsi_A/B "
                            "and cameraman_A/B, or set MFIF_DATA to the shared data folder")
        folders = [data / "pairs" / "classic"]
    items = [i for i in folder_items(folders) if i.name in PAPER_PAIRS.values()]
    if not items:
        raise DataError(f"none of the pairs {list(PAPER_PAIRS.values())} in {', '.join(map(str, folders))}")
    return items
