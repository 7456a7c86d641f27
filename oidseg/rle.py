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
from typing import Iterator, Sequence

import numpy as np

#: largest declared image (H x W) accepted anywhere a submission is read:
#: 67,108,864 pixels (8192 x 8192). Keeps every total exact in pycocotools'
#: uint32 runs and bounds the memory one mask string may take (about 75 MB).
MAX_IMAGE_PIXELS = 1 << 26

#: characters of RLE text checked per numpy pass: one mask longer than this is
#: inflated and checked piece by piece (:func:`inflate_chunks`,
#: :class:`RunCounter`), shorter ones in batches of about this size
CHUNK_CHARS = 1 << 18

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


def inflate_chunks(data: bytes, max_length: int, chunk: int = CHUNK_CHARS) -> Iterator[bytes]:
    """zlib-decompress ``data`` piece by piece: pieces of at most ``chunk``
    bytes, at most ``max_length`` bytes in all.

    Raises ``ValueError`` (the messages of :func:`inflate_bounded`) on bad or
    truncated zlib data and as soon as the output passes ``max_length``;
    never holds more than one piece. Bytes after the end of the zlib stream
    are ignored.
    """
    inflater = zlib.decompressobj()
    produced = 0
    pending = data
    while True:
        try:
            out = inflater.decompress(pending, chunk)
        except zlib.error as exc:
            raise ValueError(f"EncodedMask is not valid zlib data ({exc})") from exc
        produced += len(out)
        if produced > max_length:
            raise ValueError(
                f"EncodedMask inflates to more than {max_length} bytes, longer than any "
                "COCO RLE of a mask of the declared ImageHeight x ImageWidth"
            )
        if out:
            yield out
        if inflater.eof:
            return
        pending = inflater.unconsumed_tail
        if not pending and not out:
            raise ValueError("EncodedMask is not valid zlib data (truncated stream)")


def _values(groups: np.ndarray, ends: np.ndarray, nchars: np.ndarray) -> np.ndarray:
    """The numbers whose last 5-bit group is at ``ends`` (``nchars`` groups
    each, at most :data:`MAX_NUMBER_CHARS`): the last group is signed (bit
    0x10 the sign), the earlier ones unsigned digits, least significant first."""
    values = ((groups[ends] << np.uint8(3)).view(np.int8) >> np.int8(3)).astype(np.int64)
    multi = np.flatnonzero(nchars > 1)
    if multi.size:
        k_last = nchars[multi] - 1
        starts = ends[multi] - k_last
        low = np.zeros(multi.size, dtype=np.int64)
        for k in range(MAX_NUMBER_CHARS - 1):
            sel = np.flatnonzero(k_last > k)
            if sel.size == 0:
                break
            low[sel] |= (groups[starts[sel] + k] & np.uint8(0x1F)).astype(np.int64) << (5 * k)
        values[multi] = (values[multi] << (5 * k_last)) + low
    return values


class RunCounter:
    """:func:`parse_runs` of ONE string that arrives in pieces (``feed``),
    in memory bounded by the piece: a few numpy arrays of the piece's length
    (about 60 bytes per character), nothing kept between pieces but the
    last two runs, the count of numbers and an incomplete number (at most
    :data:`MAX_NUMBER_CHARS` - 1 characters).

    ``limit`` (the mask's pixel count): a run longer than that stops the
    count (``too_long`` is set to that run): the mask cannot fit, and every
    run kept stays below ``limit``, so no sum can overflow.
    After :meth:`finish`, ``problem`` is ``OK`` or a :data:`PROBLEMS` code
    and ``total`` the exact sum of the runs (when ``problem`` is ``OK`` and
    ``too_long`` is 0). A string with several problems reports the first
    one met, piece by piece (:func:`parse_runs` ranks them instead).
    """

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.problem = OK
        self.too_long = 0
        self.total = 0
        self._numbers = 0
        self._tail = b""
        self._last = [0, 0]  # last run at an even / odd position (0 before any)

    @property
    def stopped(self) -> bool:
        return self.problem != OK or self.too_long > 0

    def feed(self, data: bytes) -> bool:
        """Parse the next piece; False once the string is known to be bad."""
        if self.stopped:
            return False
        buf = self._tail + data if self._tail else data
        groups = np.frombuffer(buf, dtype=np.uint8) - np.uint8(48)
        top = int(groups.max()) if groups.size else 0
        if top > 63:
            self.problem = BAD_SYNTAX
            return False
        # the last group of a number has no "more" bit (0x20)
        ends = np.arange(groups.size) if top < 32 else np.flatnonzero(groups < 32)
        if ends.size == 0:
            self._tail = bytes(buf)
            if len(self._tail) >= MAX_NUMBER_CHARS:
                self.problem = BAD_NUMBER
            return not self.stopped
        self._tail = bytes(buf[int(ends[-1]) + 1:])
        if len(self._tail) >= MAX_NUMBER_CHARS:
            self.problem = BAD_NUMBER
            return False
        if ends.size == int(ends[-1]) + 1:  # every character a number (all runs short)
            values = ((groups[: ends.size] << np.uint8(3)).view(np.int8) >> np.int8(3)).astype(np.int64)
        else:
            nchars = np.diff(ends, prepend=-1)
            if int(nchars.max()) > MAX_NUMBER_CHARS:
                self.problem = BAD_NUMBER
                return False
            values = _values(groups, ends, nchars)
        # runs: c0, c1, c2 as written, c[i] = x[i] + c[i - 2] from i = 3 on: a
        # running sum along each parity chain, carried over from the last piece
        first = self._numbers == 0
        if first and values[0] < 0:
            self.problem = BAD_RUN
            return False
        even = self._numbers & 1  # values[even::2] are at even positions
        runs = np.empty_like(values)
        last = list(self._last)
        for parity, offset in ((0, even), (1, 1 - even)):
            chain = values[offset::2]
            if chain.size == 0:
                continue
            if first and parity == 0:
                chain = chain.copy()
                chain[0] = 0  # c0 is on no chain
            sums = np.cumsum(chain)  # contiguous: much faster than into a strided view
            sums += last[parity]
            runs[offset::2] = sums
            last[parity] = int(sums[-1])
        if first:
            runs[0] = values[0]
        if values.size > first and int(runs[int(first):].min()) < 1:
            self.problem = BAD_RUN
            return False
        longest = int(runs.max())
        if longest > self.limit:
            self.too_long = longest
            return False
        self._last = last
        self.total += int(runs.sum())
        self._numbers += values.size
        return True

    def finish(self) -> "RunCounter":
        """End of the string: an empty string or one cut inside a number is
        ``BAD_SYNTAX``."""
        if not self.stopped and (self._tail or self._numbers == 0):
            self.problem = BAD_SYNTAX
        return self


def parse_runs(counts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Check COCO compressed-RLE strings and sum their runs.

    Returns ``(totals, problems)``: per string, the exact sum of its runs
    (int64; -1 where the string is invalid) and a problem code (``OK`` or
    one of :data:`PROBLEMS`). A string is valid when it uses COCO's alphabet,
    ends with a complete number, no number is longer than
    :data:`MAX_NUMBER_CHARS`, the first run is >= 0 and every later run >= 1.
    One pass of numpy over the concatenated strings (a few operations per
    character, the rest per number; ``bench/bench_postprocess.py``).
    """
    n = len(counts)
    totals = np.full(n, -1, dtype=np.int64)
    problems = np.zeros(n, dtype=np.int8)
    if n == 0:
        return totals, problems
    lengths = np.fromiter(map(len, counts), dtype=np.int64, count=n)
    bounds = np.cumsum(lengths)  # end (exclusive) of each string
    # 5-bit groups; a character below '0' wraps above 63
    groups = np.frombuffer(b"".join(counts), dtype=np.uint8) - np.uint8(48)
    # syntax: non-empty, alphabet 48..111, last group without the "more" bit
    bad = lengths == 0
    outside = np.flatnonzero(groups > 63)
    if outside.size:
        bad[np.searchsorted(bounds, outside, side="right")] = True
    nonempty = ~bad
    bad[nonempty] |= groups[bounds[nonempty] - 1] >= 32
    problems[bad] = BAD_SYNTAX
    if bad.any():
        groups = groups[np.repeat(~bad, lengths)]
        lengths = np.where(bad, 0, lengths)
        bounds = np.cumsum(lengths)
    # numbers (none crosses a string boundary now): the last group of each
    # has no "more" bit (0x20)
    ends = np.flatnonzero(groups < 32)
    m = ends.size
    if m == 0:
        return totals, problems
    per_string = np.diff(np.searchsorted(ends, bounds), prepend=0)
    nchars = np.diff(ends, prepend=-1)
    if nchars.max() > MAX_NUMBER_CHARS:
        too_long = np.searchsorted(bounds, ends[nchars > MAX_NUMBER_CHARS], side="right")
        problems[too_long] = BAD_NUMBER
        rest = np.flatnonzero(problems == OK)
        totals[rest], problems[rest] = parse_runs([counts[i] for i in rest])
        return totals, problems
    values = _values(groups, ends, nchars)
    has = per_string > 0
    first = (np.cumsum(per_string) - per_string)[has]
    # runs: c0, c1, c2 as written; c[i] = x[i] + c[i - 2] from i = 3 on, so
    # within a string each parity chain (i = 1, 3, ... and i = 2, 4, ...) is a
    # running sum. The numbers of one chain share their global parity: two
    # global running sums (even and odd positions, the strings' first numbers
    # left out) minus their value at each string's first number.
    chain = values.copy()
    chain[first] = 0
    run_even = chain.copy()
    run_even[1::2] = 0
    np.cumsum(run_even, out=run_even)
    run_odd = chain
    run_odd[0::2] = 0
    np.cumsum(run_odd, out=run_odd)
    in_string = per_string[has]
    base = np.repeat(run_even[first], in_string)
    base[1::2] = np.repeat(run_odd[first], in_string)[1::2]
    runs = run_even
    runs[1::2] = run_odd[1::2]
    runs -= base
    runs[first] = values[first]
    bad_run = runs < 1  # every run after the first >= 1, the first >= 0
    bad_run[first] = values[first] < 0
    if bad_run.any():
        problems[np.searchsorted(bounds, ends[bad_run], side="right")] = BAD_RUN
    strings = np.flatnonzero(has)
    sums = np.add.reduceat(runs, first)
    good = problems[strings] == OK
    totals[strings[good]] = sums[good]
    return totals, problems
