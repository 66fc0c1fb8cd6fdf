# cython: language_level=3
"""The command line's CSV parser: numeric fields straight into a preallocated float32
array, without the GIL and without a Python object per cell.

``fastbp._table`` reads a file in blocks of whole lines and calls ``parse_block`` on
each; this module only turns bytes into numbers and reports where it could not.

- Fields are separated by commas, lines by ``\\n`` (a ``\\r`` before it is dropped);
  blank lines are skipped. A field may be quoted (``"1.5"``, ``"a, b"``, ``""``
  inside for a quote); a line break inside quotes is not supported.
- Numbers: an optional sign, digits with an optional decimal point, an optional
  exponent, spaces around them ignored. With at most 15 significant digits (or a
  mantissa below 2**53) and a decimal exponent within [-22, 22] (Clinger's fast
  path: both factors exact in float64) the value is one correctly rounded division
  or multiplication; anything else (more digits, larger exponents, "nan", "inf")
  goes to the C library's ``strtod``, which rounds correctly. The float64 result is
  rounded to float32, as NumPy and pandas do when asked for float32.
- An empty field, or one that reads as NaN, is missing: NaN in the output, counted,
  and the first one's line and column reported.

Speed (a million rows of 50 numbers in about half of pandas' time): a feature field
that is a plain number (an optional sign, digits, a point, digits, an exponent)
followed by its comma or the line's end is read in the same pass that finds its
end (``_plain``), eight digits at a time (``_digits8``: one 8-byte load, a mask for
where the digits stop, three multiplications for their value, no branch per digit
nor on the sign). Anything else (spaces, quotes, an empty field, a missing word,
more than 19 digits, a large exponent) is parsed again by the general ``_number``,
which gives the same value for whatever both read. (Finding a line's commas first,
so that its fields would be independent work, measured slower: 18 ns a field
against 15.)

Column roles (``roles[j]`` for column ``j`` of the file): ``>= 0`` the output
column to fill, ``SKIP`` ignored, ``TEXT`` the target column, whose value (NaN when
empty, NaN-valued or not a number) is recorded per row, and where that is NaN its
field's bounds (offsets into the block), the only ones read back as text (so that
a numeric target leaves the bounds' pages untouched: neither time nor memory).
"""

from libc.math cimport NAN, isfinite, isnan
from libc.stdlib cimport strtod
from libc.stdint cimport uint64_t
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
DEF NO_ROOM = 6  # more rows than ``out`` has: the file changed while it was read

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


cdef unsigned long long[20] POW10_INT = [
    1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000,
    10000000000, 100000000000, 1000000000000, 10000000000000, 100000000000000,
    1000000000000000, 10000000000000000, 100000000000000000, 1000000000000000000,
    10000000000000000000,
]

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(_MSC_VER)
    #include <intrin.h>
    static inline int fastbp_ctz64(uint64_t x) {
        unsigned long i;
        _BitScanForward64(&i, x);
        return (int)i;
    }
    #else
    static inline int fastbp_ctz64(uint64_t x) { return __builtin_ctzll(x); }
    #endif
    /* The number of ASCII digits that start the 8 bytes at s (0 to 8), and their
       value in *value. The bytes are loaded as one little-endian word (the first
       in the lowest byte); a byte is a digit when its high nibble is 3 and adding
       6 keeps it so. Only bytes after the first non-digit can be disturbed by a
       carry or borrow between bytes, and those are shifted out. The digits' value
       is then three multiplications (as in simdjson and fast_float). */
    static inline int fastbp_digits8(const unsigned char *s, uint64_t *value) {
        uint64_t v, d;
        int k;
        memcpy(&v, s, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        d = ((v & 0xF0F0F0F0F0F0F0F0ULL) ^ 0x3030303030303030ULL)
            | (((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL)
               ^ 0x3030303030303030ULL);
        k = d ? fastbp_ctz64(d) >> 3 : 8;
        if (k == 0) {
            *value = 0;
            return 0;
        }
        v = (v - 0x3030303030303030ULL) << (8 * (8 - k));  /* k digits, zeros before */
        v = v * 10 + (v >> 8);
        v = (((v & 0x000000FF000000FFULL) * (100 + (1000000ULL << 32)))
             + (((v >> 16) & 0x000000FF000000FFULL) * (1 + (10000ULL << 32)))) >> 32;
        *value = v;
        return k;
    }
    """
    int _digits8 "fastbp_digits8"(const unsigned char* s, uint64_t* value) noexcept nogil


cdef inline int _digit_run(
    const unsigned char** at, const unsigned char* end, const unsigned char* limit,
    unsigned long long* mantissa, int* n_digits,
) noexcept nogil:
    """Read the digits at ``*at`` (up to ``end``) into ``*mantissa`` and count them
    in ``*n_digits``; 8-byte loads only before ``limit``. 0, or 1 past 19 digits."""
    cdef const unsigned char* s = at[0]
    cdef uint64_t chunk
    cdef int k
    while True:
        if limit - s >= 8:
            k = _digits8(s, &chunk)
        else:
            k, chunk = 0, 0
            while k < 8 and s + k < end and 48 <= s[k] <= 57:
                chunk = chunk * 10 + (s[k] - 48)
                k += 1
        if k == 0:
            break
        if n_digits[0] + k > 19:
            return 1
        mantissa[0] = mantissa[0] * POW10_INT[k] + chunk
        n_digits[0] += k
        s += k
        if k < 8:
            break
    at[0] = s
    return 0


cdef inline const unsigned char* _plain(
    const unsigned char* s, const unsigned char* end, const unsigned char* limit,
    double* out,
) noexcept nogil:
    """A plain number at ``s``, followed by a comma or ``end`` (the line's end):
    its value in ``*out`` and the end of its text; NULL when it is anything else or
    its value needs more than the fast path (the general ``_number`` takes those).

    ``limit`` is the block's end: 8-byte loads stay before it. Within the block a
    line's digits cannot run past its end (a newline, or a return, follows it)."""
    cdef unsigned long long mantissa = 0
    cdef int n_digits = 0, n_integer, exponent = 0, exp_value = 0
    cdef bint negative = False, exp_negative = False
    cdef double value
    if s < end:  # an optional sign, without a branch (signs are random in data)
        negative = s[0] == 45
        s += (s[0] == 45) | (s[0] == 43)
    if _digit_run(&s, end, limit, &mantissa, &n_digits):
        return NULL
    n_integer = n_digits
    if s < end and s[0] == 46:  # .
        s += 1
        if _digit_run(&s, end, limit, &mantissa, &n_digits):
            return NULL
        exponent = n_integer - n_digits
    if n_digits == 0:
        return NULL
    if s < end and (s[0] == 101 or s[0] == 69):  # e E
        s += 1
        if s < end and (s[0] == 45 or s[0] == 43):
            exp_negative = s[0] == 45
            s += 1
        if not (s < end and 48 <= s[0] <= 57):
            return NULL
        while s < end and 48 <= s[0] <= 57:
            if exp_value < 100000:
                exp_value = exp_value * 10 + (s[0] - 48)
            s += 1
        exponent += -exp_value if exp_negative else exp_value
    if s < end and s[0] != 44:  # not followed by its comma
        return NULL
    if mantissa > (1ULL << 53) or not -22 <= exponent <= 22:
        return NULL
    value = <double>mantissa
    if exponent < 0:
        value /= POW10[-exponent]
    else:
        value *= POW10[exponent]
    out[0] = -value if negative else value
    return s


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

    ``out`` (and ``spans`` and ``target`` with a target column) should have a row
    for every line of ``buf``: past its last row the parse stops (NO_ROOM). ``info``
    (N_INFO_SLOTS int64) receives the counts and the error's place (see the slots
    above).
    """
    cdef Py_ssize_t n = buf.shape[0], n_columns = roles.shape[0]
    cdef Py_ssize_t pos = 0, line_end, next_line, p, field_start, field_end, column
    cdef Py_ssize_t row = out_row, line = 0, out_rows = out.shape[0]
    cdef const unsigned char* base = &buf[0] if n > 0 else NULL
    cdef const unsigned char* found
    cdef const unsigned char* plain_end
    cdef const int* role_of = &roles[0] if n_columns > 0 else NULL
    cdef Py_ssize_t width = out.shape[1]
    cdef float* out_base = &out[0, 0] if out.shape[0] > 0 and width > 0 else NULL
    cdef float* out_row_at
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
            if row >= out_rows:
                status = NO_ROOM
                error_line = line
                break
            p = pos
            column = 0
            out_row_at = out_base + row * width if out_base != NULL else NULL
            while True:
                if column < n_columns and role_of[column] >= 0:
                    plain_end = _plain(base + p, base + line_end, base + n, &value)
                    if plain_end != NULL:  # a plain number: stored, and on
                        out_row_at[role_of[column]] = <float>value
                        column += 1
                        p = plain_end - base
                        if p < line_end:  # at its comma
                            p += 1
                            continue
                        break
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
                    code = _number(base + field_start, field_end - field_start, &value)
                    if code == 0 and not isfinite(value) and not isnan(value):
                        code = 2
                    if code == 2:
                        text_values += 1
                    target[row] = value if code == 0 else NAN
                    if target[row] != target[row]:  # only these are read as text
                        spans[row, 0] = field_start
                        spans[row, 1] = field_end
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


def count_newlines(const unsigned char[::1] buf):
    """The newline bytes in ``buf`` (a plain loop the compiler vectorizes)."""
    cdef Py_ssize_t i, n = buf.shape[0], count = 0
    cdef const unsigned char* at = &buf[0] if n > 0 else NULL
    with nogil:
        for i in range(n):
            count += at[i] == 10
    return count
