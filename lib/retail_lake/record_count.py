"""The records of a CSV file, counted from its bytes without the ingest parser.

Ingest conservation compares this count with what the parser produced (bronze rows +
quarantined), so a parser that skips a line or merges two is caught. The count follows the
record contract of `retail_lake.ingest.records_of`, stated on bytes:

- A line is a run of bytes ended by LF (a final line may lack it); trailing CRs are not
  content. With a header, the first line is the header and no record.
- A line read outside quotes starts a record. If it ends inside a quoted field, the record
  goes on over the next lines until the quote closes, `max_record_lines` lines at most. A
  quote still open then (or at the end of the file), or a continuation line that cannot be
  read (undecodable, text after a closing quote), makes the first line a record of its own
  and the lines after it are read again.

Where quotes open and close is found with numpy: within a line whose quotes are all well
placed (an opening quote starts a field; a closing one ends it or is doubled), a line flips
the quoted state exactly when it holds an odd number of quotes. Only the rare lines that are
not well formed (a quote inside an unquoted field, text after a closing quote, a bare CR)
are scanned a byte at a time with the rules of Python's csv module (strict, doubled quotes),
as are the few lines that follow an opened quote. Quote, delimiter and line ends must be
single ASCII bytes in the file's encoding.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# Bytes read at a time: small enough for the CPU cache, large enough for numpy to pay off.
CHUNK_BYTES = 1 << 20
_LF, _CR = 0x0A, 0x0D
# How a line ends when read from a given quoted state.
CLOSED, OPEN, BROKEN = 0, 1, 2
# csv states while scanning a line.
_FIELD_START, _IN_FIELD, _IN_QUOTES, _QUOTE_IN_QUOTES = range(4)


def dialect_bytes(delimiter: str, quote: str, encoding: str) -> tuple[int, int]:
    """The delimiter and quote as bytes; ValueError if the count cannot work on bytes."""
    try:
        d, q, lf = (c.encode(encoding) for c in (delimiter, quote, "\n"))
    except (LookupError, UnicodeError) as exc:
        raise ValueError(f"cannot encode the CSV dialect in {encoding}: {exc}") from exc
    usable = len(d) == len(q) == 1 and d != q and max(d[0], q[0]) < 0x80
    if lf != b"\n" or not usable or {d[0], q[0]} & {_LF, _CR}:
        raise ValueError(
            f"records are counted on bytes: delimiter {delimiter!r} and quote {quote!r} must be "
            f"distinct single ASCII characters other than CR and LF, and {encoding} must write "
            "LF as one byte"
        )
    return d[0], q[0]


def count_csv_records(
    chunks: Iterable[bytes],
    delimiter: str,
    quote: str,
    encoding: str,
    header: bool,
    max_record_lines: int,
) -> int:
    """The number of records in a CSV file given as consecutive chunks of its bytes."""
    counter = _Counter(*dialect_bytes(delimiter, quote, encoding), encoding, max_record_lines)
    counter.skip_header = header
    for chunk in chunks:
        counter.feed(chunk, final=False)
    counter.feed(b"", final=True)
    return counter.records


def scan_line(line: bytes, inside: bool, delimiter: int, quote: int) -> int:
    """How a line's content (no line end) ends, read from outside or inside quotes."""
    state = _IN_QUOTES if inside else _FIELD_START
    for c in line:
        if state == _IN_QUOTES:
            if c == quote:
                state = _QUOTE_IN_QUOTES
        elif state == _QUOTE_IN_QUOTES:
            if c == quote:
                state = _IN_QUOTES
            elif c == delimiter:
                state = _FIELD_START
            else:  # strict: only a delimiter may follow a closing quote (a CR ends it early)
                return BROKEN
        elif c == _CR:  # a line break outside quotes with more text after it
            return BROKEN
        elif c == delimiter:
            state = _FIELD_START
        elif state == _FIELD_START:
            state = _IN_QUOTES if c == quote else _IN_FIELD
    return OPEN if state == _IN_QUOTES else CLOSED


class _Lines:
    """The lines of one buffer of whole lines, classified with numpy."""

    def __init__(self, buf: bytes, final: bool, delimiter: int, quote: int) -> None:
        self.buf, self.delimiter, self.quote = buf, delimiter, quote
        a = np.frombuffer(buf, dtype=np.uint8)
        ends = np.flatnonzero(a == _LF)
        if final and len(a) and a[-1] != _LF:
            ends = np.append(ends, len(a))  # the last line has no line break
        n = len(ends)
        starts = np.zeros(n, dtype=np.int64)
        starts[1:] = ends[:-1] + 1
        stops = ends.copy()  # content ends before trailing CRs (the parser strips them)
        while n:
            crs = (stops > starts) & (a[np.maximum(stops - 1, 0)] == _CR)
            if not crs.any():
                break
            stops[crs] -= 1
        self.n, self.starts, self.ends, self.stops = n, starts, ends, stops

        q = np.flatnonzero(a[: ends[-1] if n else 0] == quote)
        line = np.searchsorted(ends, q)
        self.odd = (np.bincount(line, minlength=n) & 1).astype(bool)
        nth = np.arange(len(q)) - np.searchsorted(q, starts)[line]  # 0 = first of its line
        at_line_start = q == starts[line]
        prev = a[np.maximum(q - 1, 0)]
        at_line_end = q + 1 == stops[line]
        after = a[np.minimum(q + 1, max(len(a) - 1, 0))]
        # An opening quote starts a field (or doubles the quote just closed); a closing one
        # ends its field (or is doubled).
        opens_well = at_line_start | (prev == delimiter) | (prev == quote)
        closes_well = at_line_end | (after == delimiter) | (after == quote)
        even = nth % 2 == 0
        bad_outside = np.bincount(line[~np.where(even, opens_well, closes_well)], minlength=n)
        bad_inside = np.bincount(line[~np.where(even, closes_well, opens_well)], minlength=n)
        cr = np.flatnonzero(a == _CR)
        cr_line = np.searchsorted(ends, cr)
        keep = cr_line < n
        cr, cr_line = cr[keep], cr_line[keep]
        bare_cr = np.bincount(cr_line[cr < stops[cr_line]], minlength=n)
        self.bad_outside = (bad_outside + bare_cr) > 0
        self.bad_inside = (bad_inside + bare_cr) > 0

    def content(self, i: int) -> bytes:
        return self.buf[self.starts[i] : self.stops[i]]

    def openers(self) -> np.ndarray:
        """Lines that end inside a quoted field when read from outside quotes."""
        clean = np.flatnonzero(self.odd & ~self.bad_outside)
        scanned = [
            i
            for i in np.flatnonzero(self.bad_outside)
            if scan_line(self.content(i), False, self.delimiter, self.quote) == OPEN
        ]
        return np.union1d(clean, np.asarray(scanned, dtype=np.int64))

    def from_inside(self, i: int) -> int:
        if not self.bad_inside[i]:
            return CLOSED if self.odd[i] else OPEN
        return scan_line(self.content(i), True, self.delimiter, self.quote)


class _Counter:
    """Counts records over consecutive chunks; a record still open at a chunk's end is
    carried, from its first line, into the next."""

    def __init__(self, delimiter: int, quote: int, encoding: str, max_record_lines: int) -> None:
        self.delimiter, self.quote, self.encoding = delimiter, quote, encoding
        self.max_lines = max_record_lines
        self.skip_header = False
        self.records = 0
        self.carry: list[bytes] = []  # bytes not counted yet: lines still to be read

    def _decodes(self, lines: _Lines, i: int) -> bool:
        try:
            lines.buf[lines.starts[i] : lines.ends[i] + 1].decode(self.encoding)
        except UnicodeDecodeError:
            return False
        return True

    def feed(self, chunk: bytes, final: bool) -> None:
        if not final and b"\n" not in chunk:  # a long line: joined once it ends
            self.carry.append(chunk)
            return
        buf = b"".join([*self.carry, chunk])
        cut = len(buf) if final else buf.rfind(b"\n") + 1
        lines = _Lines(buf[:cut], final, self.delimiter, self.quote)
        stop = self._count(lines, final)
        self.carry = [buf[lines.starts[stop] :] if stop < lines.n else buf[cut:]]

    def _count(self, lines: _Lines, final: bool) -> int:
        """Counts the records of `lines`; returns the line where counting stopped (a record
        still open at the end of a chunk), or the number of lines."""
        n, i = lines.n, 0
        if self.skip_header and n:
            self.skip_header, i = False, 1
        openers = lines.openers()
        k = int(np.searchsorted(openers, i))
        while k < len(openers):
            start = int(openers[k])
            if start < i:  # inside a record already counted
                k += 1
                continue
            self.records += start - i  # one record per line read outside quotes
            last = min(start + self.max_lines, n) - 1  # the last line this record may reach
            resolved = not self._decodes(lines, start)  # an undecodable line opens nothing
            closed_at, j = None, start + 1
            while not resolved and j <= last:
                how = lines.from_inside(j) if self._decodes(lines, j) else BROKEN
                resolved, closed_at, j = how != OPEN, j if how == CLOSED else None, j + 1
            if not resolved and not final and start + self.max_lines > n:
                return start  # still open at the chunk's end: read again with the next one
            self.records += 1
            i = start + 1 if closed_at is None else closed_at + 1
            k += 1
        self.records += n - i
        return n
