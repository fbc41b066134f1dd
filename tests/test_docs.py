"""The commands the docs mark runnable run as written, so the docs cannot rot.

A block is runnable when the line before its opening fence (```bash or ```python) is the HTML
comment ``<!-- runnable -->`` (invisible on GitHub). Each such block in README.md and docs/*.md
runs in a fresh temporary folder that holds tiny inputs:

- ``A.jpg``, ``B.jpg``: a generated multi-focus pair, 96x128;
- ``near.avi``, ``far.avi``: 6 frames of that pair (MJPG);
- ``runtime/`` and ``train/``: links to the repository's folders (the shipped models and weights).

bash blocks run with ``set -e -o pipefail`` (every command must succeed), python blocks with this
interpreter; ``mfif`` and ``python`` are this environment's. A block gets at most BLOCK_SECONDS
of wall-clock time (a guard against hangs); all of them together stay within TOTAL_CPU_SECONDS of
CPU time (user + system of the block's processes: a measure that other jobs on the machine do not
inflate). Mark only blocks that run on a CPU in a few seconds; a block whose command needs a GPU,
a camera or large data stays unmarked.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MARKER = "<!-- runnable -->"
LANGUAGES = ("bash", "python")
BLOCK_SECONDS = 90
TOTAL_CPU_SECONDS = 60
DURATIONS: dict[str, float] = {}


def runnable_blocks() -> list[tuple[str, str, str]]:
    """(where, language, code) of every marked block; a marker not followed by a bash or python
    block is returned with language None, so that its test fails and names it."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if line.strip() != MARKER:
                continue
            where = f"{path.relative_to(REPO)}:{index + 1}"
            fence = re.fullmatch(r"```(\w+)", lines[index + 1].strip()) if index + 1 < len(lines) else None
            if not fence or fence.group(1) not in LANGUAGES:
                found.append((where, None, ""))
                continue
            end = next((i for i in range(index + 2, len(lines)) if lines[i].strip() == "```"), None)
            found.append((where, fence.group(1), "\n".join(lines[index + 2:end]) if end else ""))
    return found


BLOCKS = runnable_blocks()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The tiny inputs every block finds in its folder."""
    import cv2

    from mfif.scenes import demo_pair

    folder = tmp_path_factory.mktemp("doc-inputs")
    a, b, _ = demo_pair(96, 128)
    cv2.imwrite(str(folder / "A.jpg"), a)
    cv2.imwrite(str(folder / "B.jpg"), b)
    for name, frame in (("near.avi", a), ("far.avi", b)):
        writer = cv2.VideoWriter(str(folder / name), cv2.VideoWriter_fourcc(*"MJPG"), 25, (128, 96))
        for _ in range(6):
            writer.write(frame)
        writer.release()
    return folder


def workspace(inputs: Path, folder: Path) -> Path:
    for item in inputs.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    for name in ("runtime", "train"):
        (folder / name).symlink_to(REPO / name, target_is_directory=True)
    return folder


def test_the_docs_have_runnable_blocks():
    languages = {language for _, language, _ in BLOCKS}
    assert len(BLOCKS) >= 5 and {"bash", "python"} <= languages, BLOCKS


@pytest.mark.parametrize("where, language, code", BLOCKS, ids=[where for where, _, _ in BLOCKS])
def test_runnable_block(where, language, code, inputs, tmp_path):
    assert language in LANGUAGES, f"{where}: {MARKER} must be the line right before a ```bash or ```python block"
    assert code.strip(), f"{where}: the runnable block is empty or its closing ``` is missing"
    folder = workspace(inputs, tmp_path)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):    # no preview windows
        env.pop(name, None)
    if language == "bash":
        command = ["bash", "-c", "set -e -o pipefail\n" + code]
    else:
        (folder / "block.py").write_text(code + "\n")
        command = [sys.executable, "block.py"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=BLOCK_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{where}: the block ran past {BLOCK_SECONDS} s; make its inputs smaller or unmark it:\n{code}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    DURATIONS[where] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert result.returncode == 0, (f"{where}: the block failed with exit status {result.returncode}:\n{code}\n"
                                    f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")


def test_runnable_blocks_stay_within_the_budget():
    if len(DURATIONS) < len(BLOCKS):
        pytest.skip("not every runnable block ran in this session")
    total = sum(DURATIONS.values())
    slowest = ", ".join(f"{where} {seconds:.1f} s" for where, seconds in
                        sorted(DURATIONS.items(), key=lambda item: -item[1])[:3])
    assert total <= TOTAL_CPU_SECONDS, (f"the runnable blocks took {total:.0f} s of CPU time (budget "
                                        f"{TOTAL_CPU_SECONDS} s); slowest: {slowest}")
