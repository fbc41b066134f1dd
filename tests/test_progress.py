"""mfif.progress: a bar on a terminal only; pipes and logs get plain lines, and no tqdm is needed."""

from __future__ import annotations

import io
import sys

import pytest

from mfif.progress import Progress, format_seconds, on_terminal


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal_only():
    pytest.importorskip("tqdm")
    screen = Terminal()
    with Progress(total=3, desc="work", unit="step", file=screen) as bar:
        assert bar.shown
        for _ in range(3):
            bar.update(1)
    assert "work" in screen.getvalue() and "3/3" in screen.getvalue() and "\r" in screen.getvalue()
    log = io.StringIO()                                  # a file or a pipe: no bar, nothing written
    with Progress(total=3, desc="work", file=log) as bar:
        assert not bar.shown
        bar.update(3)
    assert log.getvalue() == "" and bar.count == 3
    assert not Progress(total=3, file=Terminal(), enabled=False).shown          # --quiet


def test_without_tqdm_and_without_a_terminal(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    items = list(Progress(range(4), total=4, file=Terminal()))            # no tqdm: no bar, the work goes on
    assert items == [0, 1, 2, 3]
    with Progress(total=2, desc="calibrating", unit="frame", log=True) as bar:
        bar.note("a message")
        bar.update(2)
    err = capsys.readouterr().err
    assert err.startswith("a message\n") and "calibrating: 2 frames in 0 s" in err and "\r" not in err
    assert not on_terminal(io.StringIO()) and on_terminal(Terminal())


def test_format_seconds():
    assert [format_seconds(s) for s in (0.4, 59, 61, 3600 * 2 + 7 * 60)] == ["0 s", "59 s", "1 min 01 s", "2 h 07 min"]
