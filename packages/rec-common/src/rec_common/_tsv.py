"""Vectorized parser for blocks of Criteo TSV lines (the format is defined in rec_common.criteo).

Python splits lines at about 1 µs per field, far too slow for 45M lines of 40 fields, so a
block of lines is parsed with whole-array numpy operations instead:

1. positions of every tab and newline (one ``flatnonzero``); when each line has exactly 39 tabs
   the positions reshape to ``[rows, 40]`` field ends, and field starts follow from them;
2. for every field, the 8 bytes that end at the field's last byte are read as one little-endian
   ``uint64`` (an unaligned strided view over the block), so the field's characters sit in the
   word's high bytes; bytes before the field are masked off by length;
3. SWAR arithmetic on those words checks the characters (decimal digits, hex digits) and packs
   them into numbers: 8 decimal digits into an integer in three multiply-add steps, 8 hex digits
   into 32 bits in three shift-or steps. Fields of 9-16 characters read a second word; integers
   with more than 16 digits (never in real data) are parsed by Python one at a time (as float64:
   correctly rounded, and saturated at float64's max beyond its range).

Only when a check fails does the code look for the first bad line and column, to build the
error. The caller passes blocks of about ``SUB_BLOCK_BYTES`` (small blocks stay in the CPU cache,
which makes the ~60 array passes cheap, and bound memory); a block starts with ``PAD`` zero bytes
so that the word ending at the first field can be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from rec_common.criteo_tables import FIELD_NAMES, NUM_DENSE, NUM_FIELDS, NUM_SPARSE

_FLOAT64_MAX = float(np.finfo(np.float64).max)

PAD = 16  # zero bytes in front of every block (words may start up to 16 bytes before a field)
SUB_BLOCK_BYTES = 256 << 10  # text parsed at once: ~1000 lines, so the working set stays in cache
MAX_HEX_DIGITS = 16

_TAB, _NL, _CR, _MINUS, _ZERO, _ONE = 9, 10, 13, 45, 48, 49
_U = np.uint64


def _rep(byte: int) -> np.uint64:
    return _U(byte * 0x0101010101010101)


_HIGH = _rep(0x80)
_LOW_NIBBLES = _rep(0x0F)
_HIGH_NIBBLES = _rep(0xF0)
_C06, _C10, _C20, _C30 = _rep(0x06), _rep(0x10), _rep(0x20), _rep(0x30)
_C3A, _C61, _C67 = _rep(0x3A), _rep(0x61), _rep(0x67)
_EVEN_BYTES = _U(0x00FF00FF00FF00FF)
_EVEN_SHORTS = _U(0x0000FFFF0000FFFF)
_LOW_WORD = _U(0xFFFFFFFF)
# _KEEP[n]: mask of the n high bytes of a word, i.e. the last n characters before the word's end.
_KEEP = np.array(
    [0] + [((1 << 64) - 1) << (8 * (8 - n)) & ((1 << 64) - 1) for n in range(1, 9)], dtype=np.uint64
)
_S4, _S7, _S8, _S16, _S32 = _U(4), _U(7), _U(8), _U(16), _U(32)
_INT_RE = re.compile(rb"-?[0-9]+")

EXPECTED_FIELDS = (
    f"expected {NUM_FIELDS} tab-separated fields (label, I1-I{NUM_DENSE}, C1-C{NUM_SPARSE})"
)


class CriteoFormatError(ValueError):
    """A line that is not valid Criteo TSV.

    ``path`` and ``line`` (1-based, counted from the start of that file) locate it; ``column`` is
    the field's name (``label``, ``I1``..``I13``, ``C1``..``C26``) and ``field`` its 1-based
    position among the 40, both None when the line has the wrong number of fields.
    """

    def __init__(
        self,
        path: str,
        line: int | None,
        column: str | None,
        detail: str,
        field: int | None = None,
    ) -> None:
        super().__init__(path, line, column, detail, field)
        self.path, self.line, self.column, self.detail, self.field = (
            path,
            line,
            column,
            detail,
            field,
        )

    def __str__(self) -> str:
        where = f"{self.path}: line {self.line}" if self.line is not None else str(self.path)
        if self.column is not None:
            where += f": column {self.column} (field {self.field} of {NUM_FIELDS})"
        return f"{where}: {self.detail}"

    def __reduce__(self):
        return (type(self), (self.path, self.line, self.column, self.detail, self.field))


@dataclass
class ParsedBlock:
    """The good lines of a block, in file order."""

    labels: np.ndarray  # float32 [n]
    dense: np.ndarray  # float32 [n, 13] = log1p(max(x, 0))
    cat: np.ndarray  # uint64 [n, 26]: the hex value (0 when empty)
    cat_empty: np.ndarray  # bool [n, 26]
    lines: int  # lines in the block, good and bad
    skipped: int  # bad lines dropped (on_bad_line="skip")
    examples: list[dict] = field(default_factory=list)  # a few dropped lines: line, reason


# ---------------------------------------------------------------------------- SWAR helpers
def _digits_ok(words: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """True where every kept byte of the word is an ASCII decimal digit."""
    high = (words & _HIGH_NIBBLES & keep) ^ (_C30 & keep)  # high nibble must be 3
    low = ((words & _LOW_NIBBLES) + _C06) & _C10 & keep  # low nibble must be <= 9
    return (high | low) == 0


def _pack_decimal(digits: np.ndarray) -> np.ndarray:
    """8 digit values (one per byte, first digit in the low byte) -> the integer they spell."""
    v = (digits * _U(10) + (digits >> _S8)) & _EVEN_BYTES
    v = (v * _U(100) + (v >> _S16)) & _EVEN_SHORTS
    return (v * _U(10000) + (v >> _S32)) & _LOW_WORD


def _hex_nibbles(words: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ok, nibbles): ok where every kept byte is [0-9a-fA-F]; nibbles holds their values."""
    x = words & keep
    ascii_ok = (x & _HIGH) == 0
    xh = x | _HIGH  # every lane >= 0x80, so lane-wise subtraction never borrows
    is_digit = ((xh - _C30) & ~(xh - _C3A)) & _HIGH  # 0x30 <= c < 0x3A
    fh = xh | _C20  # fold A-F onto a-f
    is_letter = ((fh - _C61) & ~(fh - _C67)) & _HIGH  # 0x61 <= c|0x20 < 0x67
    want = keep & _HIGH
    ok = (((is_digit | is_letter) & want) == want) & ascii_ok
    nibbles = ((x & _LOW_NIBBLES) + (is_letter >> _S7) * _U(9)) & keep
    return ok, nibbles


def _pack_hex(nibbles: np.ndarray) -> np.ndarray:
    """8 nibbles (one per byte, first in the low byte) -> the 32-bit value they spell."""
    v = ((nibbles << _S4) | (nibbles >> _S8)) & _EVEN_BYTES
    v = ((v << _S8) | (v >> _S16)) & _EVEN_SHORTS
    return ((v << _S16) | (v >> _S32)) & _LOW_WORD


# ---------------------------------------------------------------------------- block parser
def parse_block(
    buf: np.ndarray,
    *,
    path: str,
    first_line: int,
    on_bad_line: str = "error",
) -> ParsedBlock:
    """Parse the lines in ``buf[PAD:]`` (uint8, ``PAD`` leading zeros, ends with a newline).

    ``first_line`` is the file line number of the block's first line, used in errors. With
    ``on_bad_line="error"`` the first bad line raises :class:`CriteoFormatError`; with
    ``"skip"`` bad lines are dropped and counted.
    """
    a = buf
    delim = a == _TAB
    delim |= a == _NL
    d = np.flatnonzero(delim)
    del delim
    is_nl = a[d] == _NL
    newlines = d[is_nl]
    n_lines = newlines.size
    line_start = np.empty(n_lines, np.int64)
    if n_lines:
        line_start[0] = PAD
        line_start[1:] = newlines[:-1] + 1
    bad_structure = None  # line indices with a wrong field count, and their field counts
    if d.size == NUM_FIELDS * n_lines and is_nl[NUM_FIELDS - 1 :: NUM_FIELDS].all():
        ends = d.reshape(n_lines, NUM_FIELDS)
        row_line = None  # row i is line i
    else:
        line_of = np.cumsum(is_nl) - is_nl  # the line each delimiter belongs to
        tabs = np.bincount(line_of[~is_nl], minlength=n_lines)
        good_line = tabs == NUM_FIELDS - 1
        bad_structure = (np.flatnonzero(~good_line), tabs[~good_line] + 1)
        ends = d[good_line[line_of]].reshape(-1, NUM_FIELDS)
        row_line = np.flatnonzero(good_line)
        line_start = line_start[good_line]
    del d, is_nl
    n = ends.shape[0]
    starts = np.empty((n, NUM_FIELDS), np.int64)
    starts[:, 0] = line_start
    starts[:, 1:] = ends[:, :-1] + 1
    ends[:, -1] -= a[ends[:, -1] - 1] == _CR  # CRLF: the CR is not part of the last field
    lens = ends - starts

    # label: exactly one character, 0 or 1
    label_byte = a[starts[:, 0]]
    bad_label = (lens[:, 0] != 1) | ((label_byte != _ZERO) & (label_byte != _ONE))

    words_view = np.ndarray((a.size - 7,), dtype="<u8", buffer=a, strides=(1,))
    feat_ends = ends[:, 1:]
    feat_lens = lens[:, 1:]
    words = words_view[feat_ends - 8]

    # integers: optional '-', then 1+ decimal digits
    ilen = feat_lens[:, :NUM_DENSE]
    negative = (a[starts[:, 1 : 1 + NUM_DENSE]] == _MINUS) & (ilen > 0)
    ndig = ilen - negative
    keep = _KEEP[np.minimum(ndig, 8)]
    iwords = words[:, :NUM_DENSE]
    bad_int = ~_digits_ok(iwords, keep)
    bad_int |= negative & (ndig == 0)
    ivalue = _pack_decimal(iwords & keep & _LOW_NIBBLES)
    huge_rc = None
    long_int = ndig > 8
    if long_int.any():
        r, c = np.nonzero(long_int)
        hwords = words_view[feat_ends[r, c] - 16]
        hkeep = _KEEP[np.minimum(ndig[r, c] - 8, 8)]
        bad_int[r, c] |= ~_digits_ok(hwords, hkeep)
        ivalue[r, c] += _pack_decimal(hwords & hkeep & _LOW_NIBBLES) * _U(100_000_000)
        huge = ndig[r, c] > 16
        if huge.any():
            huge_rc = (r[huge], c[huge])

    # categoricals: 0-16 hex digits
    clen = feat_lens[:, NUM_DENSE:]
    cwords = words[:, NUM_DENSE:]
    ok, nib = _hex_nibbles(cwords, _KEEP[np.minimum(clen, 8)])
    bad_cat = ~ok
    bad_cat |= clen > MAX_HEX_DIGITS
    cat = _pack_hex(nib)
    del ok, nib, words
    long_cat = (clen > 8) & (clen <= MAX_HEX_DIGITS)
    if long_cat.any():
        r, c = np.nonzero(long_cat)
        hwords = words_view[feat_ends[r, NUM_DENSE + c] - 16]
        hok, hnib = _hex_nibbles(hwords, _KEEP[clen[r, c] - 8])
        bad_cat[r, c] |= ~hok
        cat[r, c] |= _pack_hex(hnib) << _S32
    cat_empty = clen == 0

    dense_float = np.where(negative, 0, ivalue.view(np.int64)).astype(np.float64)  # exact < 2**53
    if huge_rc is not None:  # more than 16 digits: one field at a time, correctly rounded
        for r, c in zip(*huge_rc):
            text = a[starts[r, 1 + c] : ends[r, 1 + c]].tobytes()
            if _INT_RE.fullmatch(text) is None:
                bad_int[r, c] = True
            elif not negative[r, c]:
                # Over 308 digits float() gives inf: saturate at float64's max (log1p = 709.78).
                dense_float[r, c] = min(float(text), _FLOAT64_MAX)

    bad_row = bad_label | bad_int.any(axis=1) | bad_cat.any(axis=1)
    bad_rows = np.flatnonzero(bad_row)
    skipped = 0
    examples: list[dict] = []
    if bad_rows.size or bad_structure is not None:
        rows_line = bad_rows if row_line is None else row_line[bad_rows]
        struct_lines = bad_structure[0] if bad_structure is not None else np.empty(0, np.int64)
        problems = sorted(
            [(int(ln), "row", int(r)) for ln, r in zip(rows_line[:5], bad_rows[:5])]
            + [(int(ln), "structure", k) for k, ln in enumerate(struct_lines[:5])]
        )
        if on_bad_line == "error":
            ln, kind, k = problems[0]
            raise _problem_error(a, path, first_line + ln, kind, k, bad_structure,
                                 starts, ends, bad_label, bad_int, bad_cat)  # fmt: skip
        skipped = int(bad_rows.size + struct_lines.size)
        for ln, kind, k in problems[:5]:
            err = _problem_error(a, path, first_line + ln, kind, k, bad_structure,
                                 starts, ends, bad_label, bad_int, bad_cat)  # fmt: skip
            examples.append({"line": err.line, "column": err.column, "reason": str(err.detail)})
        good = ~bad_row
        label_byte, cat, cat_empty = label_byte[good], cat[good], cat_empty[good]
        dense_float = dense_float[good]

    dense = np.log1p(dense_float).astype(np.float32)
    labels = (label_byte - _ZERO).astype(np.float32)
    return ParsedBlock(labels, dense, cat, cat_empty, n_lines, skipped, examples)


def _show(text: bytes) -> str:
    s = text.decode("utf-8", errors="backslashreplace")
    return repr(s if len(s) <= 40 else s[:40] + "...")


def _problem_error(a, path, line, kind, k, bad_structure, starts, ends,
                   bad_label, bad_int, bad_cat) -> CriteoFormatError:  # fmt: skip
    """The error for one bad line: a wrong field count, or its first bad field."""
    if kind == "structure":
        found = int(bad_structure[1][k])
        return CriteoFormatError(path, line, None, f"{EXPECTED_FIELDS}, found {found}")
    r = k
    bad = np.concatenate([bad_label[r : r + 1], bad_int[r], bad_cat[r]])
    f = int(np.flatnonzero(bad)[0])
    text = a[starts[r, f] : ends[r, f]].tobytes()
    found = "an empty field" if not text else _show(text)
    if f == 0:
        expected = "expected the label 0 or 1"
    elif f <= NUM_DENSE:
        expected = "expected an integer (optional '-' then decimal digits) or an empty field"
    elif len(text) > MAX_HEX_DIGITS:
        expected = f"expected at most {MAX_HEX_DIGITS} hex digits or an empty field"
        found = f"{len(text)} characters ({_show(text)})"
    else:
        expected = "expected hex digits [0-9a-fA-F] or an empty field"
    return CriteoFormatError(path, line, FIELD_NAMES[f], f"{expected}, found {found}", f + 1)
