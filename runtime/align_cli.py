"""``mfif align``: estimate how the sources map onto the reference, print the transforms and their
residuals, and save them as a rig file for ``mfif fuse --rig`` and ``Fuser(align="rig.json")``.

    mfif align A.png B.png -o rig.json                 # a two-camera rig: B onto A
    mfif align --stack DIR -o rig.json                 # every image in DIR, chained to the middle one
    mfif align --video left.mp4 right.mp4 -o rig.json  # from the first frames of two sources (or cameras: 0 1)
    mfif align --video bracket.mp4 --bracket 3 -o rig.json   # one transform per bracket position

Calibrate on a textured scene that fills the frame, at the resolution you fuse at (docs/alignment.md).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from mfif.errors import ConfigError, DataError, SourceError
from mfif.imageio import list_images
from mfif.lazy import require
from mfif.runtime.align import DEFAULT_MODEL, MODELS, AlignmentWarning, estimate_rig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n")[1]
    parser.add_argument("sources", nargs="*", help="two or more images of one scene (the first is the reference of a pair)")
    parser.add_argument("-o", "--output", metavar="RIG.json", help="write the rig file here")
    parser.add_argument("--stack", metavar="DIR", help="every image in DIR, in name order (a focus stack or bracket)")
    parser.add_argument("--video", nargs="+", metavar="SRC", help="two synchronized sources, or one with --bracket: "
                        "video files, camera indices, /dev/videoN, GStreamer pipelines, URLs")
    parser.add_argument("--bracket", type=int, default=2, help="focus positions of a single bracketing source (default 2)")
    parser.add_argument("--skip", type=int, default=0, metavar="N",
                        help="frame sets to skip before the one estimated on (a camera's first frames may be dark)")
    parser.add_argument("--model", choices=MODELS, default=DEFAULT_MODEL,
                        help=f"transform model (default {DEFAULT_MODEL}: shift, scale and rotation)")
    parser.add_argument("--no-photometric", action="store_true", help="estimate no gain and offset per channel")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a video source to deliver")


def run(args: argparse.Namespace) -> int:
    modes = [name for name, given in (("images", args.sources), ("--stack", args.stack), ("--video", args.video)) if given]
    if len(modes) != 1:
        raise ConfigError("give one of: two or more images, --stack DIR, or --video SRC [SRC]"
                          + (f"; got {' and '.join(modes)}" if modes else ""))
    if args.skip < 0:
        raise ConfigError(f"--skip must be >= 0, not {args.skip}")
    if args.video:
        frames, names = _video_frames(args)
    else:
        paths = list_images(args.stack) if args.stack else [Path(p) for p in args.sources]
        if len(paths) < 2:
            raise ConfigError(f"alignment needs at least two images; got {len(paths)}")
        from mfif.imageio import read_image

        frames, names = [read_image(path) for path in paths], [path.name for path in paths]
    shapes = {frame.shape for frame in frames}
    if len(shapes) > 1:
        listed = ", ".join(f"{name} {frame.shape[1]}x{frame.shape[0]}" for name, frame in zip(names, frames))
        raise DataError(f"the sources differ in size ({listed}); a rig maps sources of one size")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AlignmentWarning)
        rig = estimate_rig(frames, args.model, names=names, photometric=not args.no_photometric)
    for warning in caught:
        print(f"mfif align: warning: {warning.message}", file=sys.stderr)
    width, height = rig.frame_size
    print(f"{rig.count} sources, {width}x{height}, model {rig.model}, reference {names[rig.reference]} "
          "(shift of the reference's centre in the source, pixels; scale and rotation of the source; gain per channel)")
    print(rig.describe(names))
    if args.output:
        print(f"wrote {rig.save(args.output)}")
    return 0


def _video_frames(args) -> tuple[list, list[str]]:
    """The (skip + 1)-th frame set of the sources: one frame per source, or ``bracket`` frames of one."""
    from mfif.runtime.stream import describe_source

    cv2 = require("cv2", extra="cpu", purpose="reading video and camera sources")
    if len(args.video) > 2:
        raise ConfigError(f"--video takes two synchronized sources or one bracketing source; got {len(args.video)}")
    if len(args.video) == 1 and args.bracket < 2:
        raise ConfigError(f"--bracket must be >= 2 focus positions for a single source, not {args.bracket}")
    sources = [describe_source(spec) for spec in args.video]
    captures = [source.open(cv2, args.timeout) for source in sources]
    try:
        per_set = args.bracket if len(sources) == 1 else 1
        frames = []
        for _ in range(args.skip + 1):
            frames = []
            for source, capture in zip(sources, captures):
                for _ in range(per_set):
                    ok, frame = capture.read()
                    if not ok:
                        raise SourceError(f"{source.name} ended before frame set {args.skip + 1} (--skip {args.skip})")
                    frames.append(frame)
    finally:
        for capture in captures:
            capture.release()
    if len(sources) == 1:
        names = [f"position {k}" for k in range(args.bracket)]
    else:
        names = [source.name for source in sources]
    return frames, names
