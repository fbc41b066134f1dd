"""``mfif fuse``: fuse a set of images, a stack, a folder of pairs, two videos or live sources.

    mfif fuse --demo demo                              # write demo/demo_A.png, demo/demo_B.png
    mfif fuse A.png B.png -o fused.png                 # two (or more) images of one scene
    mfif fuse --stack DIR -o fused.png                 # every image in DIR (a focus stack)
    mfif fuse PAIRS_DIR -o OUT_DIR                     # every <name>_A / <name>_B pair in PAIRS_DIR
    mfif fuse --video a.mp4 b.mp4 -o fused.mp4         # two synchronized videos (or cameras: 0 1)
    mfif fuse --video bracketing.mp4 --bracket 2 -o fused.mp4   # one source alternating focus
    mfif fuse A.png B.png -o fused.png --crop          # aligned (default for images), cut to what both cover
    mfif fuse --video a.mp4 b.mp4 --rig rig.json -o fused.mp4   # a rig calibrated with mfif align

Top-level imports stay light: the runtime and OpenCV are imported when the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from mfif.device import DEVICE_HELP, parse_device
from mfif.errors import ConfigError, DataError, MfifError
from mfif.lazy import require
from mfif.progress import Progress
from mfif.runtime.video import CODECS as VIDEO_OUTPUT_CODECS
from mfif.runtime.video import VIDEO_CODECS
from mfif.runtime.align import DEFAULT_MODEL as DEFAULT_ALIGN_MODEL
from mfif.runtime.align import MODELS as ALIGN_MODELS
from mfif.runtime.align import AlignmentWarning
from mfif.runtime.fuser import DEFAULT_MEMORY_LIMIT



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n")[1]
    parser.add_argument("inputs", nargs="*", help="two or more images of one scene, or one folder of <name>_A/<name>_B pairs")
    parser.add_argument("-o", "--output",
                        help="output image, folder (for a folder of pairs), or with --video a video file "
                             f"({', '.join(VIDEO_CODECS)}) or an image sequence (frames/%%04d.png)")
    parser.add_argument("--stack", metavar="DIR", help="fuse every image in DIR (a focus stack of one scene)")
    parser.add_argument("--video", nargs="+", metavar="SRC",
                        help="two synchronized sources, or one with --bracket: video files (or file://PATH), camera "
                             "indices, /dev/videoN (or v4l2:///dev/videoN), csi://N (Jetson CSI cameras), GStreamer "
                             "pipelines, rtsp:// URLs")
    parser.add_argument("--demo", metavar="DIR",
                        help="write a generated multi-focus pair DIR/demo_A.png, DIR/demo_B.png and exit")
    model = parser.add_argument_group("model and backend")
    model.add_argument("--model", help="ONNX file, TensorRT engine or .safetensors checkpoint (default: the shipped model)")
    model.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "torch", "tensorrt"])
    model.add_argument("--device", default="auto", help=DEVICE_HELP)
    model.add_argument("--threads", type=int, help="ONNX Runtime CPU threads (default: physical cores)")
    model.add_argument("--stats", action="store_true", help="print the per-stage timings at the end")
    output = parser.add_argument_group("images")
    output.add_argument("--memory-limit", type=float, default=DEFAULT_MEMORY_LIMIT / 2**30, metavar="GIB",
                        help="memory for fusing, with the images and the result, in GiB (default "
                             f"{DEFAULT_MEMORY_LIMIT / 2**30:g}; shared by the --jobs workers): larger images are "
                             "fused in tiles, with the same result")
    output.add_argument("--max-pixels", type=int, metavar="N",
                        help="refuse images of more than N pixels before decoding them (default: no limit)")
    output.add_argument("--jobs", type=int, help="pairs fused at once for a folder of pairs, each by its own "
                        "single-threaded Fuser (default: the physical cores on the CPU, 1 on a GPU)")
    output.add_argument("--format", choices=["png", "tif", "jpg"], default="png",
                        help="file format of the fused images written for a folder of pairs (default png)")
    output.add_argument("--skip-existing", action="store_true",
                        help="for a folder of pairs, skip the pairs whose fused image exists already (resume a run)")
    output.add_argument("--weights-out", metavar="PATH",
                        help="save the weight map: an image (weight of the first source, white = 1; for 3+ sources a "
                             "colour per source, mixed by weight, with a legend of source indices) or .npy (float32 K "
                             "x H x W); a folder with a folder of pairs; with --video a video or image sequence of "
                             "the maps (as -o)")
    align = parser.add_argument_group("alignment (docs/alignment.md)")
    align.add_argument("--align", nargs="?", const="each", choices=["each", "once", "off"],
                       help="register the sources onto the first (a pair) or middle (a stack) one before fusing: 'each' "
                            "frame set (the default for images, folders and stacks), 'once' (on the first frame set, then "
                            "fixed: the default with --rig; for streams), 'off' (the default for --video)")
    align.add_argument("--no-align", dest="align", action="store_const", const="off",
                       help="do not align: the sources are registered already")
    align.add_argument("--rig", metavar="RIG.json", help="apply the fixed transforms of a rig file made by mfif align")
    align.add_argument("--align-model", choices=ALIGN_MODELS, default=DEFAULT_ALIGN_MODEL,
                       help=f"transform estimated (default {DEFAULT_ALIGN_MODEL}: shift, scale and rotation)")
    align.add_argument("--crop", action="store_true",
                       help="cut the output to the rectangle every aligned source covers (default: the reference's size)")
    video = parser.add_argument_group("video and live sources")
    video.add_argument("--bracket", type=int, default=2, help="focus positions per fused frame of a single source (default 2)")
    video.add_argument("--smoothing", type=float, default=0.0, help="temporal smoothing of the weight maps, 0 (off) to <1")
    video.add_argument("--live", action="store_true", help="treat the sources as live (drop frames when slow)")
    video.add_argument("--max-frames", type=int, help="stop after this many fused frames")
    video.add_argument("--reconnect", type=int, default=0, metavar="N",
                       help="reopen a lost network stream up to N times, waiting 0.5 s, 1 s, 2 s ... (at most 8 s) "
                            "before each attempt (default 0: a lost stream ends the run)")
    video.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a source to open or deliver")
    video.add_argument("--preview", choices=["auto", "on", "off"], default="auto",
                       help="show the fused stream in a window (auto: when a display exists)")
    video.add_argument("--headless", dest="preview", action="store_const", const="off",
                       help="no preview window (jetson-utils' name for --preview off)")
    video.add_argument("--input-width", type=int, metavar="PX",
                       help="frame width of the sources: cameras are asked for it, other frames resized to it "
                            "(with --input-height)")
    video.add_argument("--input-height", type=int, metavar="PX", help="frame height of the sources (with --input-width)")
    video.add_argument("--input-rate", type=float, metavar="FPS",
                       help="frame rate asked of cameras (and csi://N), and the output video's rate (default: the "
                            "source's, else 30)")
    video.add_argument("--output-codec", choices=list(VIDEO_OUTPUT_CODECS),
                       help="codec of the output video: mjpeg, mpeg4 (mp4v) or h264 where this OpenCV has an encoder "
                            "(default: by suffix, mjpeg for .avi, else mpeg4)")
    video.add_argument("--bitrate", type=int, metavar="BPS",
                       help="bits per second of H.264 output (GStreamer encoders: nvv4l2h264enc on a Jetson, x264enc, "
                            "openh264enc)")


def run(args: argparse.Namespace) -> int:
    if args.demo:
        return _demo(Path(args.demo))
    modes = [name for name, given in (("images", args.inputs), ("--stack", args.stack), ("--video", args.video)) if given]
    if len(modes) != 1:
        raise ConfigError("give one of: images (A B ...), a folder of pairs, --stack DIR, --video SRC [SRC], or --demo DIR"
                          + (f"; got {' and '.join(modes)}" if modes else ""))
    from mfif.runtime import Fuser
    from mfif.runtime.backends import load_backend

    folder_of_pairs = not args.video and not args.stack and len(args.inputs) == 1 and Path(args.inputs[0]).is_dir()
    align = _align_setting(args)
    jobs = pair_jobs(args) if folder_of_pairs else 1
    if not args.memory_limit > 0:
        raise ConfigError(f"--memory-limit must be a number of GiB > 0, not {args.memory_limit}")
    fuser = Fuser(load_backend(args.model, args.backend, args.device, threads=backend_threads(args, jobs)),
                  align=align, align_model=args.align_model, memory_limit=args.memory_limit * 2**30 / jobs,
                  max_pixels=args.max_pixels)
    if not args.video:
        fuser.alignment.interpolation = "cubic"  # stills: quality first (see mfif.runtime.align.INTERPOLATIONS)
    print(f"model {fuser.info.model} ({fuser.info.precision}) on {fuser.backend_name}: {fuser.device}")
    if jobs > 1 and "CPU" not in fuser.device.upper():
        jobs = 1  # 'auto' chose a GPU: one Fuser keeps it busy, with all the memory
        fuser.memory_limit = args.memory_limit * 2**30
    with _alignment_warnings():
        if args.video:
            code = _video(fuser, args)
        elif args.stack:
            code = _stack(fuser, args)
        elif folder_of_pairs:
            code = _pairs(fuser, args, jobs)
        else:
            code = _images(fuser, [Path(p) for p in args.inputs], args)
    if args.stats:
        print(fuser.stats)
    return code


def _align_setting(args) -> str:
    """What Fuser(align=...) gets: a rig file, or 'each', 'once' or 'off' (by default 'each' for
    images, folders and stacks, 'off' for video)."""
    if args.rig:
        if args.align not in (None, "once"):
            raise ConfigError(f"--rig gives fixed transforms; it does not go with --align {args.align}")
        return args.rig
    align = args.align or ("off" if args.video else "each")
    if args.crop and align == "off":
        raise ConfigError("--crop cuts the output to the area every aligned source covers; with alignment off "
                          "there is nothing to cut (leave out --no-align, or add --align once / --rig for video)")
    return align


@contextlib.contextmanager
def _alignment_warnings():
    """Alignment fallbacks as one line each on stderr: 'mfif fuse: warning: ...'."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, AlignmentWarning):
            print(f"mfif fuse: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", AlignmentWarning)
        warnings.showwarning = show
        yield


def _estimate(fuser, frames: list[np.ndarray]):
    from mfif.runtime.align import estimate_rig

    return estimate_rig(frames, fuser.alignment.model, names=fuser.alignment.names)


def _print_alignment(fuser, names: list[str]) -> None:
    rig = fuser.alignment.rig
    if rig is not None and fuser.align != "off":
        print(f"aligned onto {names[rig.reference]} ({rig.model}):")
        print(rig.describe(names))


def _demo(folder: Path) -> int:
    from mfif.imageio import write_pair
    from mfif.scenes import demo_pair

    a, b, _ = demo_pair()
    paths = write_pair(folder, "demo", [a, b])
    print(f"wrote {paths[0]} and {paths[1]} (near focus, far focus); fuse them with:\n"
          f"  mfif fuse {paths[0]} {paths[1]} -o fused.png")
    return 0


def _require_output(args, what: str) -> Path:
    if not args.output:
        raise ConfigError(f"say where to write {what} with -o/--output")
    return Path(args.output)


# Source colours of the weight pictures for 3+ sources (BGR; matplotlib's tab10), then evenly spaced hues.
SOURCE_COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148), (75, 86, 140),
                  (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]


def source_colours(count: int) -> np.ndarray:
    """(count, 3) uint8 BGR colours, one per source, all distinct."""
    if count <= len(SOURCE_COLOURS):
        return np.array(SOURCE_COLOURS[:count], np.uint8)
    cv2 = require("cv2", extra="cpu", purpose="weight pictures")
    hues = np.arange(count, dtype=np.float32) * (180.0 / count)
    hsv = np.stack([hues, np.full(count, 200, np.float32), np.full(count, 230, np.float32)], -1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]


def weight_picture(weights: np.ndarray, names: list[str] | None = None) -> np.ndarray:
    """The weight maps (K, H, W) as a picture. Two sources: grey, the first source's weight (white
    = 1). Three or more: each pixel the weight-mixed colour of the sources (a source's own colour
    where it alone wins), over a legend band that names each colour by source index (and name)."""
    if len(weights) == 2:
        return np.clip(weights[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    cv2 = require("cv2", extra="cpu", purpose="weight pictures")
    colours = source_colours(len(weights))
    picture = np.clip(np.einsum("khw,kc->hwc", weights, colours.astype(np.float32)) + 0.5, 0, 255).astype(np.uint8)
    labels = [f"{k}" + (f" {names[k][:20]}" if names and k < len(names) else "") for k in range(len(weights))]
    width, font, scale, line = picture.shape[1], cv2.FONT_HERSHEY_SIMPLEX, 0.4, 16
    rows, x = [[]], 4
    for k, label in enumerate(labels):   # swatch + label per source, wrapped to the picture's width
        step = 16 + cv2.getTextSize(label, font, scale, 1)[0][0] + 10
        if x + step > width and rows[-1]:
            rows.append([])
            x = 4
        rows[-1].append((k, x, label))
        x += step
    band = np.full((line * len(rows) + 4, width, 3), 255, np.uint8)
    for row, entries in enumerate(rows):
        top = 2 + row * line
        for k, left, label in entries:
            cv2.rectangle(band, (left, top + 2), (left + 11, top + 13), tuple(int(c) for c in colours[k]), -1)
            cv2.putText(band, label, (left + 16, top + 12), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([picture, band], axis=0)


def _save_weights(path: Path, weights: np.ndarray, names: list[str] | None = None) -> Path:
    from mfif.files import atomic_path
    from mfif.imageio import write_image

    if path.suffix.lower() == ".npy":
        with atomic_path(path) as partial, open(partial, "wb") as handle:
            np.save(handle, weights)
        return path
    return write_image(path, weight_picture(weights, names))


def _read_frames(paths: list[Path], max_pixels: int | None) -> list[np.ndarray]:
    from mfif.imageio import read_image

    return [read_image(path, max_pixels=max_pixels) for path in paths]


def _fuse_frames(fuser, frames: list[np.ndarray], weights_out: Path | None, names: list[str] | None = None,
                 crop: bool = False):
    """The fused frame and the weight maps (None unless ``weights_out`` is asked for); ``names``
    name the sources in alignment warnings; ``crop`` cuts both to what every source covers."""
    fuser.alignment.names = names
    result = fuser.fuse(frames, return_weights=weights_out is not None)
    fused, weights = result if weights_out is not None else (result, None)
    area = fuser.alignment.common_area() if crop else None
    if area is not None:
        x, y, width, height = area
        fused = fused[y:y + height, x:x + width]
        weights = None if weights is None else weights[:, y:y + height, x:x + width]
    return fused, weights


def _write_outputs(output: Path, fused: np.ndarray, weights_out: Path | None, weights,
                   names: list[str] | None = None) -> None:
    from mfif.imageio import write_image

    write_image(output, fused)
    if weights is not None:
        _save_weights(weights_out, weights, names)


def _fuse_files(fuser, paths: list[Path], args) -> Path:
    """Fuse the images at ``paths`` into the one image -o names (and its weight map); returns -o."""
    from mfif.imageio import check_image_output

    output = check_image_output(_require_output(args, "the fused image"))
    weights_out = _weights_path(args)
    if weights_out is not None and weights_out.suffix.lower() != ".npy":
        check_image_output(weights_out)
    fused, weights = _fuse_frames(fuser, _read_frames(paths, args.max_pixels), weights_out, [path.name for path in paths], args.crop)
    _write_outputs(output, fused, weights_out, weights, [path.name for path in paths])
    _print_alignment(fuser, [path.name for path in paths])
    return output


def _weights_path(args) -> Path | None:
    return Path(args.weights_out) if args.weights_out else None


def _images(fuser, paths: list[Path], args) -> int:
    if len(paths) < 2:
        raise ConfigError(f"fusing images needs at least two of them; got {len(paths)} ({paths[0]} is not a folder of pairs)")
    output = _fuse_files(fuser, paths, args)
    print(f"wrote {output} ({fuser.stats.last_ms['total']:.1f} ms)")
    return 0


def _stack(fuser, args) -> int:
    from mfif.imageio import list_images

    folder = Path(args.stack)
    paths = list_images(folder)
    if len(paths) < 2:
        raise DataError(f"a stack needs at least 2 images; {folder} has {len(paths)}")
    output = _fuse_files(fuser, paths, args)
    print(f"fused {len(paths)} images of {folder} into {output} ({fuser.stats.last_ms['total']:.1f} ms)")
    return 0


def pair_jobs(args) -> int:
    """Pairs fused at once in a folder run: one per physical core on the CPU (each with a
    single-threaded Fuser: small frames keep one core busier than two threads keep two), one on
    a GPU."""
    if args.jobs is not None:
        if args.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, not {args.jobs}")
        return args.jobs
    if args.threads is not None or _backend(args) != "onnxruntime" or parse_device(args.device).kind == "cuda":
        return 1
    from mfif.runtime.backends.onnxruntime import physical_cores

    return physical_cores()


def backend_threads(args, jobs: int) -> int | None:
    """The CPU thread count the backend gets: only ONNX Runtime takes one (--threads, or 1 per
    worker when ``jobs`` > 1); None, the backend's own choice, for torch and TensorRT. --threads
    with those is a ConfigError."""
    name = _backend(args)
    if name != "onnxruntime":
        if args.threads is not None:
            raise ConfigError(f"--threads sets ONNX Runtime's CPU threads; {args.model or 'the default model'} runs on "
                              f"{name}, which takes no thread count: leave out --threads")
        return None
    return 1 if jobs > 1 else args.threads


def _backend(args) -> str:
    """The backend that will run the model: 'onnxruntime', 'torch' or 'tensorrt'."""
    from mfif.runtime.backends import backend_name, resolve_model

    return backend_name(resolve_model(args.model, args.backend), args.backend)


def largest_first(pairs: list) -> list:
    """Pairs ordered by file size, largest first, so that parallel workers finish together
    instead of one fusing the biggest pair while the others idle. A file that cannot be read (a
    dangling link) counts as empty here; its pair then fails alone, with its reason."""
    def size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    return sorted(pairs, key=lambda pair: -(size(pair.a) + size(pair.b)))


def _pairs(fuser, args, jobs: int) -> int:
    from mfif.files import check_writable_folder
    from mfif.imageio import check_image_output, find_pairs

    pairs = find_pairs(args.inputs[0])
    if jobs > 1:
        # The workers decode and encode in parallel already; OpenCV's own thread pool on top of them
        # only oversubscribes the cores (JPEG reads took 1.5x as long).
        require("cv2", extra="cpu", purpose="reading and writing images").setNumThreads(1)
    out_dir = _require_output(args, "the fused images (a folder)")
    if out_dir.suffix.lower() in VIDEO_CODECS or (out_dir.exists() and not out_dir.is_dir()):
        raise ConfigError(f"with a folder of pairs, -o names a folder; {out_dir} is not one")
    check_image_output(out_dir / f"x.{args.format}")
    weights_dir = _weights_path(args)
    if weights_dir is not None:
        check_writable_folder(weights_dir)
    total = len(pairs)
    if args.skip_existing:
        pairs = [pair for pair in pairs if not (out_dir / f"{pair.name}.{args.format}").exists()]
        if len(pairs) < total:
            print(f"skipping {total - len(pairs)} pairs already fused in {out_dir}")
    if fuser.align == "once" and pairs:  # one rig for the folder, from its first pair
        first = pairs[0]
        fuser.alignment.names = [first.a.name, first.b.name]
        fuser.align = _estimate(fuser, _read_frames([first.a, first.b], args.max_pixels))
    # One Fuser per worker thread (a Fuser serves one thread), all on the one loaded model; the first
    # worker takes ``fuser``.
    spare, local, lock = [fuser], threading.local(), threading.Lock()

    def process(pair) -> None:
        if not hasattr(local, "fuser"):
            with lock:
                local.fuser = spare.pop() if spare else fuser.for_another_thread()
        weights_path = weights_dir / f"{pair.name}_weights.png" if weights_dir else None
        fused, weights = _fuse_frames(local.fuser, _read_frames([pair.a, pair.b], args.max_pixels), weights_path,
                                      [pair.a.name, pair.b.name], args.crop)
        _write_outputs(out_dir / f"{pair.name}.{args.format}", fused, weights_path, weights)

    failed, done = [], 0
    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="mfif-fuse")
    futures: dict = {}
    try:
        futures = {pool.submit(process, pair): pair for pair in largest_first(pairs)}
        progress = Progress(as_completed(futures), total=len(pairs), unit="pair", desc="fusing")
        for future in progress:
            try:
                future.result()
                done += 1
            except MfifError as exc:
                failed.append(futures[future].name)
                progress.note(f"{futures[future].name}: {exc}")
    except KeyboardInterrupt:
        # Queued pairs are cancelled; the ones being fused finish first (a pair takes well under a
        # second), so that no temporary file is left behind when the process exits.
        pool.shutdown(wait=True, cancel_futures=True)
        done = sum(1 for future in futures if not future.cancelled() and future.exception() is None)
        print(f"interrupted: {done} of {len(pairs)} pairs were fused into {out_dir}; rerun with --skip-existing "
              "to fuse the rest", file=sys.stderr)
        raise
    pool.shutdown()
    elapsed = time.perf_counter() - start
    print(f"fused {done} of {len(pairs)} pairs into {out_dir} in {elapsed:.1f} s")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _preview(mode: str):
    """The preview window (display://0), or None: with 'auto' only where this OpenCV and session
    can show one; with 'on' the reason it cannot is the error."""
    from mfif.runtime.video import VideoOutput

    if mode == "off":
        return None
    try:
        return VideoOutput("display://0")
    except MfifError:
        if mode == "on":
            raise
        return None


def _input_size(args) -> tuple[int, int] | None:
    """(width, height) from --input-width/--input-height (both or neither)."""
    given = (args.input_width, args.input_height)
    if given == (None, None):
        return None
    if None in given:
        raise ConfigError(f"give --input-width and --input-height together (got width {args.input_width}, height "
                          f"{args.input_height})")
    if min(given) < 8:
        raise ConfigError(f"--input-width/--input-height must be at least 8 pixels, not {given[0]}x{given[1]}")
    return given


def _csi_mode(spec: str, size: tuple[int, int] | None, rate: float | None) -> str:
    """A csi://N source takes the mode in its URI (its GStreamer pipeline sets it): add
    --input-width/--input-height/--input-rate there unless the URI has options of its own."""
    if not spec.lower().startswith("csi://") or "?" in spec or not (size or rate):
        return spec
    options = ([f"width={size[0]}", f"height={size[1]}"] if size else []) + \
              ([f"framerate={round(rate)}"] if rate else [])
    return f"{spec}?{'&'.join(options)}"


def _video(fuser, args) -> int:
    from mfif.runtime.video import VideoOutput

    if len(args.video) > 2:
        raise ConfigError(f"--video takes two synchronized sources or one bracketing source; got {len(args.video)}")
    size = _input_size(args)
    sources = [_csi_mode(spec, size, args.input_rate) for spec in args.video]
    source_b = sources[1] if len(sources) == 2 else None
    weights_path = Path(args.weights_out) if args.weights_out else None
    if weights_path and "%" not in weights_path.name and weights_path.suffix.lower() not in VIDEO_CODECS:
        raise ConfigError(f"--weights-out is for images (one map per fused image) and, with --video, takes a video "
                          f"file ({', '.join(VIDEO_CODECS)}) or an image sequence (weights/%04d.png); not {weights_path}")
    if args.weights_out and not fuser.info.has_weight_map:
        raise ConfigError(f"--weights-out: model {fuser.info.model} gives no weight maps (focusmap does)")
    output = VideoOutput(args.output, codec=args.output_codec, bitrate=args.bitrate) if args.output else None
    weights_output = (VideoOutput(args.weights_out, codec=args.output_codec if "%" not in args.weights_out else None,
                                  bitrate=args.bitrate if "%" not in args.weights_out else None)
                      if args.weights_out else None)
    preview = _preview(args.preview)
    if output is None and preview is None:
        raise ConfigError("say where to write the fused video with -o (no display for a preview here)")
    stream = fuser.stream(sources[0], source_b, bracket=None if source_b else args.bracket,
                          live=True if args.live else None, smoothing=args.smoothing,
                          timeout=args.timeout, max_frames=args.max_frames, reconnect=args.reconnect,
                          return_weights=weights_output is not None, size=size, rate=args.input_rate)
    area = None
    try:
        with stream:
            for sink in (output, weights_output):
                if sink is not None:
                    sink.fps = args.input_rate or stream.source_fps or sink.fps
            total = min(stream.frame_count, args.max_frames or stream.frame_count) if stream.frame_count else args.max_frames
            for fused in Progress(stream, total=total, unit="frame", desc="fusing"):
                fused, weights = fused if weights_output is not None else (fused, None)
                if args.crop:  # the area of the first frame set, so that every frame has one size
                    area = area or fuser.alignment.common_area()
                    x, y, width, height = area
                    fused = np.ascontiguousarray(fused[y:y + height, x:x + width])
                    weights = None if weights is None else weights[:, y:y + height, x:x + width]
                if weights_output is not None:
                    weights_output.write(weight_picture(weights))
                if output is not None:
                    output.write(fused)
                if preview is not None:
                    preview.write(fused)
                    if not preview.is_open:  # q, Esc or the window closed
                        break
    finally:
        for sink in (output, weights_output, preview):
            if sink is not None:
                sink.close()
        stats = stream.stats
        print(f"fused {stats['frames_out']} frames at {stats['fps']:.1f} frames/s, dropped {stats['dropped']}"
              + (f", reconnected {stats['reconnects']} times" if stats["reconnects"] else "")
              + (f", wrote {output.frames} to {output.path}" if output is not None and output.frames else "")
              + (f", weight maps to {weights_output.path}" if weights_output is not None and weights_output.frames
                 else "")
              + (f"; {stream.ended_by} ended first" if stream.ended_by and source_b else ""))
    return 0
