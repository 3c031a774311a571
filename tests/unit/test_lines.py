"""Line numbers for messages: CSV record start lines, undecodable lines, mappable encodings."""

from __future__ import annotations

import csv
import io
import itertools
import random

import numpy as np
import pytest

from prepflow.processing.lines import (
    find_undecodable_line,
    is_line_mappable,
    map_record_lines,
    map_record_lines_exactly,
    record_start_lines,
)

# --- Reference -------------------------------------------------------------------------------
# An independent model of record numbering: physical lines are split by hand (CRLF, LF, or a
# lone CR end a line), and Python's csv module groups them into records. A record that csv
# returns as [] is a blank line, which the CSV reader skips and does not number.


def split_physical_lines(text: str) -> list[str]:
    """Split text into lines that keep their terminator. CRLF counts as one terminator."""
    lines: list[str] = []
    start = 0
    index = 0
    while index < len(text):
        character = text[index]
        if character == "\n":
            lines.append(text[start : index + 1])
            start = index + 1
        elif character == "\r":
            if index + 1 < len(text) and text[index + 1] == "\n":
                index += 1
            lines.append(text[start : index + 1])
            start = index + 1
        index += 1
    if start < len(text):
        lines.append(text[start:])
    return lines


def reference_start_lines(text: str, quote: str | None) -> dict[int, int]:
    """Map each non-blank record number (1-based) to the physical line it starts on."""
    if quote is None:
        reader = csv.reader(split_physical_lines(text), quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(split_physical_lines(text), quotechar=quote, strict=True)

    starts: dict[int, int] = {}
    lines_consumed = 0
    for row in reader:
        first_line = lines_consumed + 1
        lines_consumed = reader.line_num
        if row:
            starts[len(starts) + 1] = first_line
    return starts


def scan(
    data: bytes,
    records: list[int] | range,
    *,
    chunk_size: int | None = None,
    quote: str | None = '"',
    header: bool = True,
) -> dict[int, int]:
    """Run record_start_lines over ``data`` cut into chunks of ``chunk_size`` bytes."""
    size = chunk_size or max(len(data), 1)
    chunks = [data[offset : offset + size] for offset in range(0, len(data), size)]
    return record_start_lines(chunks, records, quote=quote, header=header)


def all_records(data: bytes) -> range:
    """Every record number that could exist in ``data``, plus 0 and one past the end."""
    return range(0, data.count(b"\n") + data.count(b"\r") + 3)


# --- Generated CSV texts ---------------------------------------------------------------------

LINE_ENDINGS = ("\n", "\r\n", "\r")
PLAIN_CHARACTERS = "abcxyz019 ;é"
QUOTED_CHARACTERS = 'ab ,é""\n\r'


def random_field(rng: random.Random, quote: str | None) -> str:
    kind = rng.random()
    if quote is None:
        # Without quoting, a quote character is ordinary data and no field contains a line break.
        return "".join(rng.choice('ab1 "é') for _ in range(rng.randint(0, 4)))
    if kind < 0.2:
        return ""
    if kind < 0.55:
        return "".join(rng.choice(PLAIN_CHARACTERS) for _ in range(rng.randint(1, 5)))

    parts: list[str] = []
    for _ in range(rng.randint(0, 6)):
        piece = rng.choice([*QUOTED_CHARACTERS, "\r\n"])
        # A quote inside a quoted field is written doubled.
        parts.append(piece + piece if piece == quote else piece)
    return quote + "".join(parts) + quote


def random_csv(rng: random.Random, quote: str | None) -> str:
    pieces: list[str] = []
    for _ in range(rng.randint(0, 12)):
        if rng.random() < 0.3:
            # Blank lines between records, in any line ending.
            pieces.extend(rng.choice(LINE_ENDINGS) for _ in range(rng.randint(1, 3)))
        if rng.random() < 0.1:
            # A line of spaces is not blank: it is a record with one field.
            pieces.append("  ")
        else:
            fields = [random_field(rng, quote) for _ in range(rng.randint(1, 3))]
            pieces.append(",".join(fields))
        pieces.append(rng.choice(LINE_ENDINGS))
    if pieces and rng.random() < 0.3:
        pieces.pop()  # no line break after the last record
    return "".join(pieces)


# --- Reference self-checks -------------------------------------------------------------------


def test_reference_splits_crlf_once() -> None:
    assert split_physical_lines("a\r\nb\rc\n\nd") == ["a\r\n", "b\r", "c\n", "\n", "d"]


def test_reference_skips_blank_lines() -> None:
    assert reference_start_lines('h\n\n"a\nb"\r\n\r\nc', '"') == {1: 1, 2: 3, 3: 6}


# --- record_start_lines: fixed cases ---------------------------------------------------------


def test_lf_lines_one_per_record() -> None:
    data = b"h1,h2\na,1\nb,2\n"

    assert scan(data, [1, 2, 3]) == {1: 1, 2: 2, 3: 3}


def test_crlf_counts_as_one_break() -> None:
    data = b"h1,h2\r\na,1\r\nb,2\r\n"

    assert scan(data, [1, 2, 3]) == {1: 1, 2: 2, 3: 3}


def test_cr_only_line_endings() -> None:
    data = b"h1,h2\ra,1\rb,2\r"

    assert scan(data, [1, 2, 3]) == {1: 1, 2: 2, 3: 3}


def test_blank_lines_are_skipped() -> None:
    data = b"h\n\na\n\n\nb\n"

    assert scan(data, [1, 2, 3]) == {1: 1, 2: 3, 3: 6}


def test_crlf_blank_lines_are_skipped() -> None:
    data = b"h\r\n\r\na\r\n\r\n\r\nb\r\n"

    assert scan(data, [1, 2, 3]) == {1: 1, 2: 3, 3: 6}


def test_leading_blank_lines_shift_header() -> None:
    data = b"\n\r\nh\na\n"

    assert scan(data, [1, 2]) == {1: 3, 2: 4}


def test_quoted_newline_stays_in_record() -> None:
    data = b'h,note\n1,"two\nlines"\n2,x\n'

    assert scan(data, [1, 2, 3]) == {1: 1, 2: 2, 3: 4}


def test_quoted_crlf_and_cr_stay_in_record() -> None:
    data = b'h\r\n"a\r\nb\rc"\r\nd\r\n'

    assert scan(data, [1, 2, 3]) == {1: 1, 2: 2, 3: 5}


def test_quoted_blank_line_is_content() -> None:
    data = b'h\n"\n\n"\nnext\n'

    assert scan(data, [1, 2, 3]) == {1: 1, 2: 2, 3: 5}


def test_doubled_quotes_keep_quote_state() -> None:
    data = b'h\n"say ""hi""\nthere"\nnext\n'

    assert scan(data, [1, 2, 3]) == {1: 1, 2: 2, 3: 4}


def test_empty_quoted_field_is_not_blank() -> None:
    data = b'h\n""\nx\n'

    assert scan(data, [1, 2, 3]) == {1: 1, 2: 2, 3: 3}


def test_quote_inside_unquoted_field_detected() -> None:
    # pyarrow and Python's csv module read a quote after the start of an unquoted field as
    # data, so these are five one-line records. The fast scan flips its quote state there,
    # so it must report a different record total, which sends callers to the exact scan.
    data = b'h\na"b\nc\nd"e\nf\n'

    _, _, total = map_record_lines([data], np.arange(1, 6), quote='"')

    assert total != 5


def test_exact_scan_reads_literal_quotes() -> None:
    data = 'h\na"b\nc\nd"e\nf\n'

    numbers, lines = map_record_lines_exactly(
        io.StringIO(data, newline=""), np.arange(1, 6), delimiter=",", quote='"'
    )

    assert dict(zip(numbers.tolist(), lines.tolist(), strict=True)) == {
        1: 1,
        2: 2,
        3: 3,
        4: 4,
        5: 5,
    }


def test_no_quote_character_ignores_quotes() -> None:
    data = b'h\n"a\nb"\n'

    assert scan(data, [1, 2, 3], quote=None) == {1: 1, 2: 2, 3: 3}


def test_other_quote_character() -> None:
    data = b"h\n'a\nb',\"\nc\n"

    assert scan(data, [1, 2, 3], quote="'") == {1: 1, 2: 2, 3: 4}


def test_last_record_without_newline() -> None:
    data = b"h\na\n\nb"

    assert scan(data, [1, 2, 3]) == {1: 1, 2: 2, 3: 4}


def test_records_out_of_range_are_omitted() -> None:
    data = b"h\na\n"

    assert scan(data, [0, -1, 3, 100]) == {}


def test_duplicate_record_numbers_accepted() -> None:
    data = b"h\n\na\n"

    assert scan(data, [2, 2, 1]) == {1: 1, 2: 3}


def test_no_records_requested() -> None:
    assert scan(b"h\na\n", []) == {}


def test_empty_data_has_no_records() -> None:
    assert record_start_lines([], [1], quote='"', header=True) == {}


def test_empty_chunks_are_harmless() -> None:
    chunks = [b"", b"h\r", b"", b"\na", b"", b"\r", b"", b"\nb", b""]

    assert record_start_lines(chunks, [1, 2, 3], quote='"', header=True) == {1: 1, 2: 2, 3: 3}


def test_header_flag_keeps_numbering() -> None:
    data = b"a\n\nb\n"

    assert scan(data, [1, 2], header=False) == scan(data, [1, 2], header=True)


def test_crlf_split_across_chunks() -> None:
    data = b"h\r\n\r\na\r\n"

    assert scan(data, [1, 2], chunk_size=2) == {1: 1, 2: 3}


def test_records_accepts_generator() -> None:
    data = b"h\na\nb\n"

    assert scan(data, (number for number in (3, 1))) == {1: 1, 3: 3}  # type: ignore[arg-type]


# --- record_start_lines: property over generated texts ---------------------------------------


def generated_cases(count: int, seed: int) -> list[tuple[str, str | None]]:
    rng = random.Random(seed)
    cases: list[tuple[str, str | None]] = []
    for _ in range(count):
        quote = None if rng.random() < 0.2 else '"'
        cases.append((random_csv(rng, quote), quote))
    return cases


@pytest.mark.parametrize(("text", "quote"), generated_cases(300, seed=20240611))
def test_every_chunk_size_matches_reference(text: str, quote: str | None) -> None:
    data = text.encode("utf-8")
    expected = reference_start_lines(text, quote)
    records = all_records(data)

    for size in range(1, len(data) + 1):
        found = scan(data, records, chunk_size=size, quote=quote)
        assert found == expected, f"chunk size {size}, data {data!r}"


@pytest.mark.parametrize("seed", range(20))
def test_random_chunk_cuts_match_reference(seed: int) -> None:
    rng = random.Random(seed)
    quote = '"'
    text = "\n".join(random_csv(rng, quote) for _ in range(3))
    data = text.encode("utf-8")
    expected = reference_start_lines(text, quote)

    for _ in range(30):
        cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data), rng.randint(1, 8))))
        bounds = [0, *cuts, len(data)]
        chunks = [data[low:high] for low, high in itertools.pairwise(bounds)]
        found = record_start_lines(chunks, all_records(data), quote=quote, header=True)
        assert found == expected, f"chunks {chunks!r}"


# --- find_undecodable_line -------------------------------------------------------------------


def test_valid_utf8_returns_none() -> None:
    file = io.BytesIO("h\nété\n".encode())

    assert find_undecodable_line(file, "utf-8") is None


def test_invalid_utf8_names_line() -> None:
    file = io.BytesIO(b"h\nok\nbad \xff here\n")

    message = find_undecodable_line(file, "utf-8")

    assert message is not None
    assert message.startswith("line 3 is not valid utf-8")


def test_invalid_utf8_names_byte() -> None:
    file = io.BytesIO(b"h\nok\nbad \xff here\n")

    message = find_undecodable_line(file, "utf-8")

    assert message is not None
    assert "0xFF" in message


def test_invalid_utf8_names_offset() -> None:
    file = io.BytesIO(b"h\nok\nbad \xff here\n")

    message = find_undecodable_line(file, "utf-8")

    assert message is not None
    assert "byte offset 9 " in message


def test_invalid_utf8_suggests_fix() -> None:
    file = io.BytesIO(b"\xc3\n")

    message = find_undecodable_line(file, "utf-8")

    assert message is not None
    assert "input.encoding" in message


def test_truncated_sequence_shows_bytes() -> None:
    file = io.BytesIO(b"ab\xe2\x82\n")

    message = find_undecodable_line(file, "utf-8")

    assert message is not None
    assert "0xE2 0x82" in message


def test_first_bad_line_wins() -> None:
    file = io.BytesIO(b"a\n\xff\n\xfe\n")

    message = find_undecodable_line(file, "utf-8")

    assert message is not None
    assert message.startswith("line 2 ")


def test_cp1252_undefined_byte() -> None:
    file = io.BytesIO(b"caf\xe9\nx\x81\n")

    message = find_undecodable_line(file, "cp1252")

    assert message is not None
    assert message.startswith("line 2 is not valid cp1252")


def test_latin1_decodes_every_byte() -> None:
    file = io.BytesIO(bytes(range(256)))

    assert find_undecodable_line(file, "latin-1") is None


def test_crlf_lines_counted_once() -> None:
    file = io.BytesIO(b"a\r\nb\r\n\xff\r\n")

    message = find_undecodable_line(file, "utf-8")

    assert message is not None
    assert message.startswith("line 3 ")


def test_empty_file_returns_none() -> None:
    assert find_undecodable_line(io.BytesIO(b""), "utf-8") is None


# --- is_line_mappable ------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "UTF8", "latin-1", "cp1252", "ascii", "utf-8-sig"])
def test_ascii_compatible_is_mappable(encoding: str) -> None:
    assert is_line_mappable(encoding) is True


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "cp037"])
def test_wide_or_ebcdic_not_mappable(encoding: str) -> None:
    assert is_line_mappable(encoding) is False


def test_unknown_encoding_not_mappable() -> None:
    assert is_line_mappable("no-such-codec") is False


def test_missing_encoding_not_mappable() -> None:
    assert is_line_mappable(None) is False
