"""COCO compressed-RLE strings, checked exactly and cheaply (no pixel decoded).

A COCO compressed RLE (pycocotools ``rleToString``) writes the run lengths
``c0, c1, c2, ...`` of a column-major H x W mask (the first run counts zeros
and may be 0; every later run is >= 1; the runs sum to H x W). Each number is
written in groups of 5 bits, least significant first, as the character
``48 + group`` with bit 0x20 set on every group but the last and bit 0x10 of
the last group the sign; from the fourth number on, the number written is the
difference ``c[i] - c[i - 2]``.

:func:`parse_runs` parses a whole list of such strings with numpy (one pass
over the concatenated bytes) and checks every run, so a negative run cannot
hide behind a total that is right modulo 2**32 (pycocotools keeps runs as
``uint32`` and wraps them).

:func:`rle_length_bound` is the longest string that an H x W mask can have:
a number ``x`` takes one character for ``-16 <= x < 16`` and ``k`` characters
only when ``|x| >= 16 * 32 ** (k - 2)``, so it takes at most ``1 + |x| / 16``
characters. A mask has at most ``H * W + 1`` runs, and the numbers written sum
in absolute value to at most ``2 * H * W`` (``|c[i] - c[i-2]| <= c[i] +
c[i-2]``), so the string has at most ``H * W + 1 + H * W / 8`` characters.
:func:`inflate_bounded` stops zlib at that length, so a "zlib bomb" costs
no more memory than the largest legal mask string.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

#: largest declared image (H x W) accepted anywhere a submission is read:
#: 67,108,864 pixels (8192 x 8192). Keeps every total exact in pycocotools'
#: uint32 runs and bounds the memory one mask string may take (about 75 MB).
MAX_IMAGE_PIXELS = 1 << 26

#: characters of one number: 7 x 5 bits hold every run and every difference
#: of runs of a mask below 2**32 pixels
MAX_NUMBER_CHARS = 7

#: problem codes of :func:`parse_runs`
OK, BAD_SYNTAX, BAD_NUMBER, BAD_RUN = 0, 1, 2, 3
PROBLEMS = {
    BAD_SYNTAX: "EncodedMask is not a valid COCO RLE (empty, a character outside "
    "COCO's alphabet, or a number cut off at the end)",
    BAD_NUMBER: f"EncodedMask is not a valid COCO RLE (a number longer than "
    f"{MAX_NUMBER_CHARS} characters)",
    BAD_RUN: "EncodedMask is not a valid COCO RLE (a negative run, or an empty run "
    "after the first)",
}


def parse_positive_int(text: str) -> int | None:
    """``text`` as a positive integer, or None. Only ASCII digits make a
    number: ``'²'`` or Arabic-Indic digits (which ``str.isdigit`` and ``int``
    accept) are not numbers here."""
    if text.isascii() and text.isdigit():
        value = int(text)
        if value > 0:
            return value
    return None


def rle_length_bound(pixels: int) -> int:
    """Most characters a COCO compressed RLE of a ``pixels``-pixel mask takes."""
    return pixels + 1 + pixels // 8 + 1


def inflate_bounded(data: bytes, max_length: int) -> bytes:
    """zlib-decompress ``data``, producing at most ``max_length`` bytes.

    Raises ``ValueError`` on bad or truncated zlib data and when the data
    inflate to more than ``max_length`` bytes (decompression stops there).
    Bytes after the end of the zlib stream are ignored, as by
    ``zlib.decompress``.
    """
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max_length + 1)
    except zlib.error as exc:
        raise ValueError(f"EncodedMask is not valid zlib data ({exc})") from exc
    if len(out) > max_length:
        raise ValueError(
            f"EncodedMask inflates to more than {max_length} bytes, longer than any "
            "COCO RLE of a mask of the declared ImageHeight x ImageWidth"
        )
    if not inflater.eof:
        raise ValueError("EncodedMask is not valid zlib data (truncated stream)")
    return out


def _numbers(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numbers of a concatenation of well-terminated strings: (end position
    of each number, start position, character count)."""
    ends = np.flatnonzero((groups & 0x20) == 0)
    starts = np.empty_like(ends)
    if ends.size:
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    return ends, starts, ends - starts + 1


def parse_runs(counts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Check COCO compressed-RLE strings and sum their runs.

    Returns ``(totals, problems)``: per string, the exact sum of its runs
    (int64; -1 where the string is invalid) and a problem code (``OK`` or
    one of :data:`PROBLEMS`). A string is valid when it uses COCO's alphabet,
    ends with a complete number, no number is longer than
    :data:`MAX_NUMBER_CHARS`, the first run is >= 0 and every later run >= 1.
    """
    n = len(counts)
    totals = np.full(n, -1, dtype=np.int64)
    problems = np.zeros(n, dtype=np.int8)
    if n == 0:
        return totals, problems
    lengths = np.fromiter(map(len, counts), dtype=np.int64, count=n)
    groups = np.frombuffer(b"".join(counts), dtype=np.uint8).astype(np.int64) - 48
    owner = np.repeat(np.arange(n), lengths)
    # syntax: non-empty, alphabet 48..111, last group without the "more" bit
    bad = lengths == 0
    bad[owner[(groups < 0) | (groups > 63)]] = True
    last = np.cumsum(lengths) - 1
    bad[~bad] |= (groups[last[~bad]] & 0x20) != 0
    problems[bad] = BAD_SYNTAX
    if bad.any():
        keep = ~bad[owner]
        groups, owner = groups[keep], owner[keep]
    # numbers (none crosses a string boundary now); drop strings with a too long one
    ends, starts, nchars = _numbers(groups)
    too_long = nchars > MAX_NUMBER_CHARS
    if too_long.any():
        problems[owner[ends[too_long]]] = BAD_NUMBER
        keep = problems[owner] == OK
        groups, owner = groups[keep], owner[keep]
        ends, starts, nchars = _numbers(groups)
    m = ends.size
    if m == 0:
        return totals, problems
    within = np.arange(groups.size) - np.repeat(starts, nchars)
    values = np.add.reduceat((groups & 0x1F) << (5 * within), starts)
    values -= ((groups[ends] & 0x10) != 0) << (5 * nchars)  # sign of the last group
    # runs: c0, c1, c2 as written; c[i] = x[i] + c[i - 2] from i = 3 on, i.e.
    # running sums over the odd positions and over the even positions >= 2 of
    # each string (segmented sums: global running sums minus their value
    # before the string's first number)
    num_owner = owner[ends]
    is_first = np.empty(m, dtype=bool)
    is_first[0] = True
    np.not_equal(num_owner[1:], num_owner[:-1], out=is_first[1:])
    first = np.flatnonzero(is_first)
    per_string = np.diff(np.append(first, m))
    index = np.arange(m) - np.repeat(first, per_string)
    odd = (index & 1).astype(bool)
    runs = np.where(index == 0, values, 0)
    for chain in (odd, ~odd & (index > 0)):
        part = np.where(chain, values, 0)
        running = np.cumsum(part)
        before = np.repeat(running[first] - part[first], per_string)
        runs += np.where(chain, running - before, 0)
    bad_run = runs < (index > 0)  # first run >= 0, later runs >= 1
    strings = num_owner[first]
    if bad_run.any():
        problems[num_owner[bad_run]] = BAD_RUN
    sums = np.add.reduceat(runs, first)
    good = problems[strings] == OK
    totals[strings[good]] = sums[good]
    return totals, problems
