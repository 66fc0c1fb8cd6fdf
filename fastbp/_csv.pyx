# cython: language_level=3
"""The command line's CSV parser: numeric fields straight into a preallocated float32
array, without the GIL and without a Python object per cell.

``fastbp._table`` reads a file in blocks of whole lines and calls ``parse_block`` on
each; this module only turns bytes into numbers and reports where it could not.

- Fields are separated by commas, lines by ``\\n`` (a ``\\r`` before it is dropped);
  blank lines are skipped. A field may be quoted (``"1.5"``, ``"a, b"``, ``""``
  inside for a quote); a line break inside quotes is not supported.
- Numbers: an optional sign, digits with an optional decimal point, an optional
  exponent, spaces around them ignored. With at most 15 significant digits and a
  decimal exponent within [-22, 22] (Clinger's fast path: both factors exact in
  float64) the value is one correctly rounded division or multiplication; anything
  else (more digits, larger exponents, "nan", "inf") goes to the C library's
  ``strtod``, which rounds correctly. The float64 result is rounded to float32, as
  NumPy and pandas do when asked for float32.
- An empty field, or one that reads as NaN, is missing: NaN in the output, counted,
  and the first one's line and column reported.

Column roles (``roles[j]`` for column ``j`` of the file): ``>= 0`` the output
column to fill, ``SKIP`` ignored, ``TEXT`` the target column, whose field bounds
(offsets into the block) and value (NaN when empty, NaN-valued or not a number)
are recorded per row.
"""

from libc.math cimport NAN, isfinite, isnan
from libc.stdlib cimport strtod
from libc.string cimport memchr, strcmp

DEF SKIP = -1
DEF TEXT = -2

# status codes (``info[STATUS]``), named for Python in ``fastbp._table``
DEF OK = 0
DEF TOO_FEW = 1
DEF TOO_MANY = 2
DEF NOT_NUMBER = 3
DEF BAD_QUOTE = 4
DEF NOT_FINITE = 5

# info slots
DEF ROWS = 0          # data rows parsed
DEF STATUS = 1
DEF ERROR_LINE = 2    # line of the block (from 0) of the error
DEF ERROR_COLUMN = 3  # column of the file (from 0) of the error, or the fields found
DEF MISSING = 4       # missing feature cells
DEF MISSING_LINE = 5  # line of the block of the first missing cell (-1: none)
DEF MISSING_COLUMN = 6
DEF TEXT_VALUES = 7   # target fields that are not empty and not numbers
DEF LINES = 8         # lines of the block read (blank ones included)
DEF N_INFO = 9

N_INFO_SLOTS = N_INFO

cdef double[23] POW10 = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
]


cdef inline bint _space(unsigned char c) noexcept nogil:
    return c == 32 or c == 9


cdef int _number(const unsigned char* s, Py_ssize_t n, double* out) noexcept nogil:
    """Parse s[0:n] (trimmed of spaces here): 0 a number, 1 empty, 2 not a number."""
    cdef Py_ssize_t i = 0, end = n
    cdef bint negative = False
    cdef unsigned long long mantissa = 0
    cdef int significant = 0, exponent = 0, exp_value = 0
    cdef bint any_digit = False, exp_negative = False
    cdef char[64] copy
    cdef char* stop
    while i < end and _space(s[i]):
        i += 1
    while end > i and _space(s[end - 1]):
        end -= 1
    if i == end:
        return 1
    cdef Py_ssize_t start = i
    if s[i] == 45 or s[i] == 43:  # - +
        negative = s[i] == 45
        i += 1
    while i < end and 48 <= s[i] <= 57:
        any_digit = True
        if significant or s[i] != 48:
            significant += 1
            if significant <= 19:
                mantissa = mantissa * 10 + (s[i] - 48)
            else:
                exponent += 1
        i += 1
    if i < end and s[i] == 46:  # .
        i += 1
        while i < end and 48 <= s[i] <= 57:
            any_digit = True
            if significant or s[i] != 48:
                significant += 1
                if significant <= 19:
                    mantissa = mantissa * 10 + (s[i] - 48)
                    exponent -= 1
            else:
                exponent -= 1
            i += 1
    if any_digit and i < end and (s[i] == 101 or s[i] == 69):  # e E
        i += 1
        if i < end and (s[i] == 45 or s[i] == 43):
            exp_negative = s[i] == 45
            i += 1
        if i == end or not (48 <= s[i] <= 57):
            return 2
        while i < end and 48 <= s[i] <= 57:
            if exp_value < 100000:
                exp_value = exp_value * 10 + (s[i] - 48)
            i += 1
        exponent += -exp_value if exp_negative else exp_value
    if any_digit and i == end and significant <= 15 and -22 <= exponent <= 22:
        out[0] = <double>mantissa
        if exponent < 0:
            out[0] /= POW10[-exponent]
        else:
            out[0] *= POW10[exponent]
        if negative:
            out[0] = -out[0]
        return 0
    # Everything else: the C library (correctly rounded; also nan, inf, infinity),
    # but not its hexadecimal floats; the usual words for a missing value are empty.
    if end - start >= 63:
        return 2
    for i in range(end - start):
        copy[i] = <char>s[start + i]
        if copy[i] == 120 or copy[i] == 88:  # x X
            return 2
    copy[end - start] = 0
    out[0] = strtod(copy, &stop)
    if stop != copy + (end - start):
        return 1 if _missing_word(copy) else 2
    return 0


cdef bint _missing_word(const char* text) noexcept nogil:
    """NA, N/A, n/a, null, NULL, None, #N/A, <NA> (pandas' usual missing markers)."""
    cdef const char* words[8]
    words[:] = [b"NA", b"N/A", b"n/a", b"null", b"NULL", b"None", b"#N/A", b"<NA>"]
    cdef int w
    for w in range(8):
        if strcmp(text, words[w]) == 0:
            return True
    return False


def parse_block(
    const unsigned char[::1] buf,
    const int[::1] roles,
    float[:, ::1] out,
    Py_ssize_t out_row,
    Py_ssize_t[:, ::1] spans,
    double[::1] target,
    long long[::1] info,
):
    """Parse the whole lines in ``buf`` into ``out[out_row:]`` (and the target's
    ``spans`` and ``target`` from ``out_row``), stopping at the first error.

    ``out`` must have a row for every line of ``buf``. ``info`` (N_INFO_SLOTS
    int64) receives the counts and the error's place (see the slots above).
    """
    cdef Py_ssize_t n = buf.shape[0], n_columns = roles.shape[0]
    cdef Py_ssize_t pos = 0, line_end, next_line, p, field_start, field_end, column
    cdef Py_ssize_t row = out_row, line = 0
    cdef const unsigned char* base = &buf[0] if n > 0 else NULL
    cdef const unsigned char* found
    cdef int role, code
    cdef double value
    cdef bint quoted
    cdef long long status = OK, missing = 0, missing_line = -1, missing_column = -1
    cdef long long error_line = -1, error_column = -1, text_values = 0
    with nogil:
        while pos < n:
            found = <const unsigned char*>memchr(base + pos, 10, n - pos)
            next_line = n if found == NULL else (found - base) + 1
            line_end = n if found == NULL else (found - base)
            if line_end > pos and base[line_end - 1] == 13:
                line_end -= 1
            if line_end == pos:  # a blank line
                pos = next_line
                line += 1
                continue
            p = pos
            column = 0
            while True:
                quoted = False
                while p < line_end and _space(base[p]):
                    p += 1
                if p < line_end and base[p] == 34:  # a quoted field
                    quoted = True
                    p += 1
                    field_start = p
                    while True:
                        while p < line_end and base[p] != 34:
                            p += 1
                        if p + 1 < line_end and base[p + 1] == 34:  # "" inside
                            p += 2
                            continue
                        break
                    if p >= line_end:
                        status = BAD_QUOTE
                        break
                    field_end = p
                    p += 1
                    while p < line_end and _space(base[p]):
                        p += 1
                    if p < line_end and base[p] != 44:
                        status = BAD_QUOTE
                        break
                else:
                    field_start = p
                    while p < line_end and base[p] != 44:
                        p += 1
                    field_end = p
                if column >= n_columns:
                    status = TOO_MANY
                    break
                role = roles[column]
                if role >= 0:
                    code = _number(base + field_start, field_end - field_start, &value)
                    if code == 2:
                        status = NOT_NUMBER
                        break
                    if code == 1 or isnan(value):
                        missing += 1
                        if missing_line < 0:
                            missing_line, missing_column = line, column
                        out[row, role] = NAN
                    elif not isfinite(value) or not isfinite(<float>value):
                        status = NOT_FINITE
                        break
                    else:
                        out[row, role] = <float>value
                elif role == TEXT:
                    spans[row, 0] = field_start
                    spans[row, 1] = field_end
                    code = _number(base + field_start, field_end - field_start, &value)
                    if code == 0 and not isfinite(value) and not isnan(value):
                        code = 2
                    if code == 2:
                        text_values += 1
                    target[row] = value if code == 0 else NAN
                column += 1
                if p < line_end:  # at a comma
                    p += 1
                    continue
                break
            if status == OK and column < n_columns:
                status = TOO_FEW
            if status != OK:
                error_line = line
                error_column = column
                break
            row += 1
            line += 1
            pos = next_line
    info[ROWS] = row - out_row
    info[STATUS] = status
    info[ERROR_LINE] = error_line
    info[ERROR_COLUMN] = error_column
    info[MISSING] = missing
    info[MISSING_LINE] = missing_line
    info[MISSING_COLUMN] = missing_column
    info[TEXT_VALUES] = text_values
    info[LINES] = line
