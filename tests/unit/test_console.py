"""Terminal helpers: table alignment, colour rules, status lines that stay silent off a terminal."""

from __future__ import annotations

import io

import pytest

from prepflow import console


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_table_aligns_columns():
    lines = console.format_table(
        ("NAME", "N", "NOTE"),
        [("a", "5", "first"), ("longer", "123", "x")],
        right_aligned=frozenset({1}),
    )

    assert lines == [
        "NAME      N  NOTE",
        "a         5  first",
        "longer  123  x",
    ]


def test_table_colour_keeps_widths():
    lines = console.format_table(
        ("S", "X"),
        [("ok", "1")],
        colours=lambda column, cell: "green" if column == 0 else None,
        colour=True,
    )

    assert lines[1] == "\x1b[32mok\x1b[0m  1"
    assert lines[0] == "\x1b[1mS \x1b[0m  \x1b[1mX\x1b[0m"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [({}, True), ({"NO_COLOR": "1"}, False), ({"TERM": "dumb"}, False)],
)
def test_colour_rules(monkeypatch, variables, expected):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    assert console.colour_enabled(FakeTerminal()) is expected
    assert console.colour_enabled(io.StringIO()) is False


def test_status_line_redraws_in_place():
    stream = FakeTerminal()
    line = console.StatusLine(stream, enabled=True)

    line.show("uploading a.csv: 50%")
    line.show("done")
    line.clear()

    assert stream.getvalue() == ("\ruploading a.csv: 50%" + "\rdone" + " " * 16 + "\r    \r")


def test_disabled_status_line_writes_nothing():
    stream = io.StringIO()
    line = console.StatusLine(stream, enabled=False)
    source = io.BytesIO(b"x" * 100)
    reader = console.UploadProgress(source, name="a.csv", total=100, line=line, min_bytes=0)

    while reader.read(10):
        pass
    line.clear()

    assert reader.done == 100
    assert stream.getvalue() == ""


def test_upload_progress_reaches_full():
    stream = FakeTerminal()
    line = console.StatusLine(stream, enabled=True)
    reader = console.UploadProgress(
        io.BytesIO(b"x" * 3072), name="a.csv", total=3072, line=line, min_bytes=1
    )

    while reader.read(1024):
        pass

    assert stream.getvalue().startswith("\ruploading a.csv: 1.0 KiB of 3.0 KiB (33%)")
    assert stream.getvalue().endswith("uploading a.csv: 3.0 KiB of 3.0 KiB (100%)")


def test_small_upload_shows_nothing():
    stream = FakeTerminal()
    line = console.StatusLine(stream, enabled=True)
    reader = console.UploadProgress(
        io.BytesIO(b"x" * 10), name="a.csv", total=10, line=line, min_bytes=1024
    )

    while reader.read(4):
        pass

    assert stream.getvalue() == ""


def test_wait_status_text():
    status = console.WaitStatus(console.StatusLine(io.StringIO(), enabled=False), ["a", "b", "c"])

    status.update(["b", "c"])
    several = status.text()
    status.update(["c"])
    one_left = status.text()

    assert several.startswith("waiting for 2 of 3 jobs (1 ended) ... ")
    assert several.endswith(" s")
    assert one_left.startswith("waiting for 1 of 3 jobs (2 ended) ... ")


def test_wait_status_single_job_names_it():
    status = console.WaitStatus(console.StatusLine(io.StringIO(), enabled=False), ["job-1"])

    assert status.text().startswith("waiting for job-1 ... ")


@pytest.mark.parametrize(
    ("size", "text"),
    [(512, "512 B"), (1536, "1.5 KiB"), (10 << 20, "10.0 MiB"), (3 << 30, "3.0 GiB")],
)
def test_format_bytes(size, text):
    assert console.format_bytes(size) == text


@pytest.mark.parametrize(("seconds", "text"), [(3.21, "3.2 s"), (65, "1m05s"), (3600, "60m00s")])
def test_format_elapsed(seconds, text):
    assert console.format_elapsed(seconds) == text
