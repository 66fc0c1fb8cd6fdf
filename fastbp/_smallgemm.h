/* Small matrix products without packing, for the narrow layers of small networks.
 *
 * OpenBLAS multiplies through packed copies of both operands: for the products of a
 * small network's step (a 32 x 64 block by a 64 x 32 weight, a 100 x 100 layer over
 * 64 rows) copying costs as much as multiplying. These register-blocked kernels read
 * the operands where they lie. On AVX-512 CPUs OpenBLAS has small-product paths of
 * its own, but they still lose to these kernels on rows of C two vectors wide and
 * more (measured on AMD Zen 4: the rule in _core.pyx's _small_product).
 *
 * Row-major C (m x n) = op(A) (m x k) @ op(B) (k x n), or C += it. A block of MR rows
 * by two vectors of columns of C stays in registers while p runs over all k: each
 * step broadcasts MR entries of op(A) and loads two vectors of row p of op(B). A
 * transposed A is read with swapped strides; a transposed B (a weight read as W^T)
 * is first copied, KB rows at a time, into a small buffer of the strip's columns
 * (tiles of one vector's lanes square transposed in registers). B not transposed is
 * read in place, or copied the same way (up to KB rows, see fbp_pack_b_pays) where
 * its rows fall into too few sets of the L1 cache to stay there.
 * A strip at most one vector wide (the last columns of a product whose width is a
 * vector and a bit, or a product at most one vector wide) is computed in "narrow"
 * blocks of 12 rows by one vector instead: the same twelve accumulators, half the
 * multiplications of a two-vector block whose second vector would be masked off; at
 * most half a vector wide, the AVX-512 version computes it with the AVX2 version's
 * narrow blocks, of vectors half as wide.
 * A block of one or two rows would have too few accumulators to hide the FMA's
 * latency: a product of one or two rows (a one-row prediction) is computed, with B
 * not transposed, in blocks WIDE vectors of C wide (eight accumulators), the same
 * sums in the same order; and where fewer than half a block's rows are left below
 * the last whole block (the last rows of a batch), that block and those rows are
 * computed as two blocks of nearly equal height (7 rows: 4 and 3).
 * Each entry of C is the sum over p in order (with B transposed, KB terms at a time
 * added to C), so the kernel's result depends only on the shapes: not on the thread
 * that computes it, nor on the rows of C beside it.
 *
 * Three versions, the same code over different vectors (FBP_DEFINE_SMALL_GEMM), on
 * x86-64 and arm64 with GCC or Clang: a portable one over the compiler's 16-byte
 * vectors (4 floats or 2 doubles: SSE2 on any x86-64, NEON on any arm64, with its
 * fused multiply-add there), and on x86-64 AVX2 with FMA (8 floats or 4 doubles a
 * vector) and AVX-512F (16 or 8, with the CPU's lane masks). fbp_small_gemm_cpu()
 * says which this CPU runs; elsewhere (other CPUs, MSVC) the functions are never
 * called. The versions sum each entry in the same order (p in order, KB terms at a
 * time with B transposed), but their register blocks differ (and the portable one
 * rounds a * b + c twice on x86-64, which has no multiply-add in SSE2), so a
 * product may differ in the last bits between them, never between runs of one.
 */
#ifndef FASTBP_SMALLGEMM_H
#define FASTBP_SMALLGEMM_H

#include <stddef.h>

#if (defined(__x86_64__) || defined(__aarch64__)) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(_MSC_VER)
#define FBP_SMALL_GEMM 1
#include <string.h>
#if defined(__x86_64__)
#define FBP_SMALL_GEMM_X86 1
#include <immintrin.h>
#define FBP_AVX2 __attribute__((target("avx2,fma")))
#else
#define FBP_SMALL_GEMM_X86 0
#include <arm_neon.h>
#endif
#else
#define FBP_SMALL_GEMM 0
#endif

/* Rows of C in a register block (two vectors wide; a narrow one, one vector wide,
 * has twice as many: the literal 12 below), the rows of op(B) copied at a time for
 * B^T, the accumulators of a block of one or two rows (one row by eight vectors of
 * C, two rows by four), and the fewest rows of C for which B read in place is ever
 * copied first (fewer blocks do not pay for the copy: measured, 24 rows lose 1-3%,
 * 48 gain 3-10% where the copy is chosen). */
#define FBP_GEMM_MR 6
#define FBP_GEMM_KB 256
#define FBP_GEMM_WIDE 8
#define FBP_GEMM_PACK_M 48

/* The versions of the kernels (fbp_small_gemm_cpu), each CPU's versions numbered
 * from the narrowest. */
#define FBP_GEMM_NONE 0
#define FBP_GEMM_PORTABLE 1
#define FBP_GEMM_AVX2 2
#define FBP_GEMM_AVX512 3

#if FBP_SMALL_GEMM

/* The widest version of the kernels this CPU runs: on x86-64 FBP_GEMM_AVX512
 * (AVX-512F, with AVX2 and FMA), FBP_GEMM_AVX2 (AVX2 and FMA) or FBP_GEMM_PORTABLE
 * (SSE2); on arm64 FBP_GEMM_PORTABLE (NEON). */
static int fbp_small_gemm_cpu(void)
{
#if FBP_SMALL_GEMM_X86
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return FBP_GEMM_PORTABLE;
    return __builtin_cpu_supports("avx512f") ? FBP_GEMM_AVX512 : FBP_GEMM_AVX2;
#else
    return FBP_GEMM_PORTABLE;
#endif
}

/* Row i of a register block (v0, v1) takes A(i, p) times row p of B (rows the
 * block does not have are left out at compile time: mr is a constant). */
#define FBP_GEMM_FMA(i, v0, v1, BCAST, FMA)                                             \
    if (mr > i) {                                                                       \
        x = BCAST(ap + i * ais);                                                        \
        v0 = FMA(x, b0, v0);                                                            \
        v1 = FMA(x, b1, v1);                                                            \
    }

/* A register block of rows i.. of the strip (mr a constant, see above). */
#define FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, MR)                                           \
    fbp_gemm_block_##KIND##_##SUFFIX(MR, k, a + i * ais, ais, aps, b, ldb, c + i * ldc, \
                                     ldc, m0, m1, accumulate)

/* Row i of a register block (v0, v1) into C (added to what is there when
 * accumulating), masked to the strip's columns. */
#define FBP_GEMM_STORE(i, v0, v1, T, LANES, LOAD, STORE, ADD)                           \
    if (mr > i) {                                                                       \
        T *ci = c + i * ldc;                                                            \
        if (accumulate) {                                                               \
            v0 = ADD(v0, LOAD(ci, m0));                                                 \
            v1 = ADD(v1, LOAD(ci + LANES, m1));                                         \
        }                                                                               \
        STORE(ci, m0, v0);                                                              \
        STORE(ci + LANES, m1, v1);                                                      \
    }

/* Row i of a narrow block (one vector v, the columns of mask m0), as the two above. */
#define FBP_GEMM_FMA1(i, v, BCAST, FMA)                                                 \
    if (mr > i) v = FMA(BCAST(ap + i * ais), b0, v);
#define FBP_GEMM_STORE1(i, v, T, LOAD, STORE, ADD)                                      \
    if (mr > i) {                                                                       \
        T *ci = c + i * ldc;                                                            \
        STORE(ci, m0, accumulate ? ADD(v, LOAD(ci, m0)) : v);                           \
    }

/* The register blocks below a strip's last whole one, a constant mr each (unused
 * accumulators vanish): up to 5 rows (two-vector blocks), up to 11 (narrow ones). */
#define FBP_GEMM_LEFT_6(KIND, SUFFIX)                                                   \
    case 5: FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, 5); break;                                \
    case 4: FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, 4); break;                                \
    case 3: FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, 3); break;                                \
    case 2: FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, 2); break;                                \
    case 1: FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, 1); break;
#define FBP_GEMM_LEFT_12(KIND, SUFFIX)                                                  \
    case 11: FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, 11); break;                              \
    case 10: FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, 10); break;                              \
    case 9: FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, 9); break;                                \
    case 8: FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, 8); break;                                \
    case 7: FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, 7); break;                                \
    case 6: FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, 6); break;                                \
    FBP_GEMM_LEFT_6(KIND, SUFFIX)

/* Whether a strip of B (not transposed; rows ldb_bytes apart) is copied for the
 * kernel first, as B^T always is. A strip, one row of it a cache line, stays in the
 * L1 cache (64 sets of 8 lines of 64 bytes) while the register blocks of its rows
 * of C read it again, unless its rows fall into too few sets: rows a multiple of
 * 64 bytes apart, 2^j lines, share 64 / 2^j sets (a layer 256 floats wide, 4 sets;
 * rows at other distances spread over all). Once the strip's k rows fill those sets,
 * each block reads it from L2; the copy, k rows read once, then pays when there are
 * enough blocks (m rows). Only one chunk of k (k <= KB) is copied, so each entry of
 * C is still summed in one pass: the bits are those of B read in place. */
static inline int fbp_pack_b_pays(ptrdiff_t m, ptrdiff_t k, ptrdiff_t ldb_bytes)
{
    ptrdiff_t lines = ldb_bytes / 64, sets;
    if (m < FBP_GEMM_PACK_M || k > FBP_GEMM_KB || lines == 0 || ldb_bytes % 64 != 0)
        return 0;
    sets = 64 / ((lines & -lines) < 64 ? (lines & -lines) : 64);
    return k >= 8 * sets;
}

/* The kernel for one element type T (vectors V of LANES entries): register blocks
 * and strips in two kinds, "full" (whole vectors, plain loads and stores: AMD's
 * masked stores are slow) and "part" (the last strip, narrower than two vectors,
 * through masked loads and stores), "narrow" ones (a last strip at most one vector
 * wide, masked), the strip of any kind of width w, the strips across columns (B in
 * place), the wide blocks of one or two rows, and fbp_gemm_small_<SUFFIX>. HALF names
 * the version (its MASKS and narrow strips, masks of type HMASK) that computes a
 * strip at most half a vector wide. Every function is compiled for FBP_TARGET, the
 * version's target attribute, defined around each use of the macro. */
#define FBP_DEFINE_SMALL_GEMM(T, SUFFIX, V, LANES, SET0, BCAST, FMA, MLOAD, MSTORE,     \
                              LOADU, STOREU, ADD, MASK, HALF, HMASK)                    \
FBP_DEFINE_GEMM_BLOCK(T, SUFFIX, full, V, LANES, SET0, BCAST, FMA, LOADU, STOREU, ADD,  \
                      MASK)                                                             \
FBP_DEFINE_GEMM_BLOCK(T, SUFFIX, part, V, LANES, SET0, BCAST, FMA, MLOAD, MSTORE, ADD,  \
                      MASK)                                                             \
FBP_DEFINE_GEMM_NARROW(T, SUFFIX, V, SET0, BCAST, FMA, MLOAD, MSTORE, ADD, MASK)        \
FBP_DEFINE_GEMM_STRIP(T, SUFFIX, full, MASK, 6)                                         \
FBP_DEFINE_GEMM_STRIP(T, SUFFIX, part, MASK, 6)                                         \
FBP_DEFINE_GEMM_STRIP(T, SUFFIX, narrow, MASK, 12)                                      \
FBP_TARGET static inline void fbp_gemm_strip_##SUFFIX(                                  \
    ptrdiff_t w, ptrdiff_t m, ptrdiff_t k, const T *a, ptrdiff_t ais, ptrdiff_t aps,    \
    const T *b, ptrdiff_t ldb, T *c, ptrdiff_t ldc, MASK m0, MASK m1, int accumulate)   \
{                                                                                       \
    if (w == 2 * LANES)                                                                 \
        fbp_gemm_strip_full_##SUFFIX(m, k, a, ais, aps, b, ldb, c, ldc, m0, m1,         \
                                     accumulate);                                       \
    else if (w > LANES)                                                                 \
        fbp_gemm_strip_part_##SUFFIX(m, k, a, ais, aps, b, ldb, c, ldc, m0, m1,         \
                                     accumulate);                                       \
    else if (w > LANES / 2)                                                             \
        fbp_gemm_strip_narrow_##SUFFIX(m, k, a, ais, aps, b, ldb, c, ldc, m0, m1,       \
                                       accumulate);                                     \
    else { /* at most half a vector: narrow blocks of the HALF version's vectors */     \
        HMASK h0, h1;                                                                   \
        FBP_MASKS_##HALF(w, &h0, &h1);                                                  \
        fbp_gemm_strip_narrow_##HALF(m, k, a, ais, aps, b, ldb, c, ldc, h0, h1,         \
                                     accumulate);                                       \
    }                                                                                   \
}                                                                                       \
FBP_DEFINE_GEMM_STRIPS(T, SUFFIX, LANES, MASK)                                          \
FBP_DEFINE_PACK_BT(T, SUFFIX, LANES)                                                    \
FBP_DEFINE_PACK_B(T, SUFFIX, LANES, V, LOADU, STOREU)                                   \
FBP_DEFINE_GEMM_WIDE(T, SUFFIX, V, LANES, SET0, BCAST, FMA, LOADU, STOREU, ADD)         \
FBP_DEFINE_GEMM(T, SUFFIX, LANES, MASK)

/* One register block: C[0:mr, 0:W) (=|+=) sum_p A(i, p) B[p, 0:W), where A(i, p) is
 * a[i * ais + p * aps] and row p of B starts at b + p * ldb; the masks keep the
 * columns of the strip that exist (W: two vectors' lanes). */
#define FBP_DEFINE_GEMM_BLOCK(T, SUFFIX, KIND, V, LANES, SET0, BCAST, FMA, LOAD, STORE, \
                              ADD, MASK)                                                \
FBP_TARGET static inline void fbp_gemm_block_##KIND##_##SUFFIX(                         \
    int mr, ptrdiff_t k, const T *a, ptrdiff_t ais, ptrdiff_t aps, const T *b,          \
    ptrdiff_t ldb, T *c, ptrdiff_t ldc, MASK m0, MASK m1, int accumulate)               \
{                                                                                       \
    (void)m0; (void)m1; /* unused by the full kind */                                   \
    V c00 = SET0(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;              \
    V c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;                 \
    for (ptrdiff_t p = 0; p < k; p++) {                                                 \
        const T *bp = b + p * ldb, *ap = a + p * aps;                                   \
        V b0 = LOAD(bp, m0), b1 = LOAD(bp + LANES, m1), x;                              \
        FBP_GEMM_FMA(0, c00, c01, BCAST, FMA)                                           \
        FBP_GEMM_FMA(1, c10, c11, BCAST, FMA)                                           \
        FBP_GEMM_FMA(2, c20, c21, BCAST, FMA)                                           \
        FBP_GEMM_FMA(3, c30, c31, BCAST, FMA)                                           \
        FBP_GEMM_FMA(4, c40, c41, BCAST, FMA)                                           \
        FBP_GEMM_FMA(5, c50, c51, BCAST, FMA)                                           \
    }                                                                                   \
    FBP_GEMM_STORE(0, c00, c01, T, LANES, LOAD, STORE, ADD)                             \
    FBP_GEMM_STORE(1, c10, c11, T, LANES, LOAD, STORE, ADD)                             \
    FBP_GEMM_STORE(2, c20, c21, T, LANES, LOAD, STORE, ADD)                             \
    FBP_GEMM_STORE(3, c30, c31, T, LANES, LOAD, STORE, ADD)                             \
    FBP_GEMM_STORE(4, c40, c41, T, LANES, LOAD, STORE, ADD)                             \
    FBP_GEMM_STORE(5, c50, c51, T, LANES, LOAD, STORE, ADD)                             \
}

/* A narrow register block: C[0:mr, 0:w) (=|+=) sum_p A(i, p) B[p, 0:w) for mr up to
 * 12 rows and w up to one vector's lanes (mask m0; m1 unused), as above. */
#define FBP_DEFINE_GEMM_NARROW(T, SUFFIX, V, SET0, BCAST, FMA, LOAD, STORE, ADD, MASK)  \
FBP_TARGET static inline void fbp_gemm_block_narrow_##SUFFIX(                           \
    int mr, ptrdiff_t k, const T *a, ptrdiff_t ais, ptrdiff_t aps, const T *b,          \
    ptrdiff_t ldb, T *c, ptrdiff_t ldc, MASK m0, MASK m1, int accumulate)               \
{                                                                                       \
    (void)m1;                                                                           \
    V c0 = SET0(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0;                         \
    V c6 = c0, c7 = c0, c8 = c0, c9 = c0, c10 = c0, c11 = c0;                           \
    for (ptrdiff_t p = 0; p < k; p++) {                                                 \
        const T *ap = a + p * aps;                                                      \
        V b0 = LOAD(b + p * ldb, m0);                                                   \
        FBP_GEMM_FMA1(0, c0, BCAST, FMA) FBP_GEMM_FMA1(1, c1, BCAST, FMA)               \
        FBP_GEMM_FMA1(2, c2, BCAST, FMA) FBP_GEMM_FMA1(3, c3, BCAST, FMA)               \
        FBP_GEMM_FMA1(4, c4, BCAST, FMA) FBP_GEMM_FMA1(5, c5, BCAST, FMA)               \
        FBP_GEMM_FMA1(6, c6, BCAST, FMA) FBP_GEMM_FMA1(7, c7, BCAST, FMA)               \
        FBP_GEMM_FMA1(8, c8, BCAST, FMA) FBP_GEMM_FMA1(9, c9, BCAST, FMA)               \
        FBP_GEMM_FMA1(10, c10, BCAST, FMA) FBP_GEMM_FMA1(11, c11, BCAST, FMA)           \
    }                                                                                   \
    FBP_GEMM_STORE1(0, c0, T, LOAD, STORE, ADD)                                         \
    FBP_GEMM_STORE1(1, c1, T, LOAD, STORE, ADD)                                         \
    FBP_GEMM_STORE1(2, c2, T, LOAD, STORE, ADD)                                         \
    FBP_GEMM_STORE1(3, c3, T, LOAD, STORE, ADD)                                         \
    FBP_GEMM_STORE1(4, c4, T, LOAD, STORE, ADD)                                         \
    FBP_GEMM_STORE1(5, c5, T, LOAD, STORE, ADD)                                         \
    FBP_GEMM_STORE1(6, c6, T, LOAD, STORE, ADD)                                         \
    FBP_GEMM_STORE1(7, c7, T, LOAD, STORE, ADD)                                         \
    FBP_GEMM_STORE1(8, c8, T, LOAD, STORE, ADD)                                         \
    FBP_GEMM_STORE1(9, c9, T, LOAD, STORE, ADD)                                         \
    FBP_GEMM_STORE1(10, c10, T, LOAD, STORE, ADD)                                       \
    FBP_GEMM_STORE1(11, c11, T, LOAD, STORE, ADD)                                       \
}

/* All row blocks of one strip of C's columns (the masks' width; KIND full: all 2 x
 * LANES columns, read and written without masks), MR rows a block. */
#define FBP_DEFINE_GEMM_STRIP(T, SUFFIX, KIND, MASK, MR)                                \
FBP_TARGET static void fbp_gemm_strip_##KIND##_##SUFFIX(                                \
    ptrdiff_t m, ptrdiff_t k, const T *a, ptrdiff_t ais, ptrdiff_t aps, const T *b,     \
    ptrdiff_t ldb, T *c, ptrdiff_t ldc, MASK m0, MASK m1, int accumulate)               \
{                                                                                       \
    ptrdiff_t i = 0, whole = m / MR, h;                                                 \
    /* Fewer than MR / 2 rows after a whole block: that block and those rows make two   \
     * blocks of nearly equal height instead (7 rows: 4 and 3), each with enough        \
     * accumulators to keep the FMA units busy. */                                      \
    if (whole > 0 && m % MR > 0 && m % MR < MR / 2) whole--;                            \
    for (; i < whole * MR; i += MR)                                                     \
        FBP_GEMM_BLOCK_CALL(KIND, SUFFIX, MR);                                          \
    for (; i < m; i += h) { /* the one or two blocks left, each below MR rows */        \
        h = m - i > MR ? (m - i + 1) / 2 : m - i;                                       \
        switch (h) {                                                                    \
        FBP_GEMM_LEFT_##MR(KIND, SUFFIX)                                                \
        default: break;                                                                 \
        }                                                                               \
    }                                                                                   \
}

/* Rows 0..m of C, columns j..n, B not transposed: strip after strip, each of the
 * kind its width calls for. */
#define FBP_DEFINE_GEMM_STRIPS(T, SUFFIX, LANES, MASK)                                  \
FBP_TARGET static void fbp_gemm_strips_##SUFFIX(                                        \
    ptrdiff_t j, ptrdiff_t n, ptrdiff_t m, ptrdiff_t k, const T *a, ptrdiff_t ais,      \
    ptrdiff_t aps, const T *b, ptrdiff_t ldb, T *c, ptrdiff_t ldc, int accumulate)      \
{                                                                                       \
    for (; j < n; j += 2 * LANES) {                                                     \
        ptrdiff_t w = n - j < 2 * LANES ? n - j : 2 * LANES;                            \
        MASK m0, m1;                                                                    \
        FBP_MASKS_##SUFFIX(w, &m0, &m1);                                                \
        fbp_gemm_strip_##SUFFIX(w, m, k, a, ais, aps, b + j, ldb, c + j, ldc, m0, m1,   \
                                accumulate);                                            \
    }                                                                                   \
}

/* The copy of a strip of B^T for the kernel: packed[p][q] = B[q][p] for the strip's
 * w <= 2 LANES rows q of B and kb columns p (packed is kb rows of 2 LANES entries;
 * its columns from w on are left as they are: the strip's masks never read them).
 * Whole LANES x LANES tiles are transposed in registers (fbp_transpose_<SUFFIX>),
 * the rest copied entry by entry: a pure copy, whatever the path. */
#define FBP_DEFINE_PACK_BT(T, SUFFIX, LANES)                                            \
FBP_TARGET static inline void fbp_pack_bt_##SUFFIX(const T *b, ptrdiff_t ldb,           \
                                                   ptrdiff_t w, ptrdiff_t kb, T *packed) \
{                                                                                       \
    const ptrdiff_t W = 2 * LANES;                                                      \
    ptrdiff_t q = 0, p;                                                                 \
    for (; q + LANES <= w; q += LANES) {                                                \
        for (p = 0; p + LANES <= kb; p += LANES)                                        \
            fbp_transpose_##SUFFIX(b + q * ldb + p, ldb, packed + p * W + q, W);        \
        for (; p < kb; p++)                                                             \
            for (ptrdiff_t r = q; r < q + LANES; r++) packed[p * W + r] = b[r * ldb + p]; \
    }                                                                                   \
    for (; q < w; q++)                                                                  \
        for (p = 0; p < kb; p++) packed[p * W + q] = b[q * ldb + p];                    \
}

/* The copy of a strip of B for the kernel: packed[p][q] = B[p][q] for the strip's
 * w <= 2 LANES columns q and kb rows p (as fbp_pack_bt: columns from w on are left
 * as they are). */
#define FBP_DEFINE_PACK_B(T, SUFFIX, LANES, V, LOADU, STOREU)                           \
FBP_TARGET static inline void fbp_pack_b_##SUFFIX(const T *b, ptrdiff_t ldb,            \
                                                  ptrdiff_t w, ptrdiff_t kb, T *packed) \
{                                                                                       \
    const ptrdiff_t W = 2 * LANES;                                                      \
    if (w == W) {                                                                       \
        for (ptrdiff_t p = 0; p < kb; p++) {                                            \
            V v0 = LOADU(b + p * ldb, 0), v1 = LOADU(b + p * ldb + LANES, 0);           \
            STOREU(packed + p * W, 0, v0);                                              \
            STOREU(packed + p * W + LANES, 0, v1);                                      \
        }                                                                               \
        return;                                                                         \
    }                                                                                   \
    for (ptrdiff_t p = 0; p < kb; p++)                                                  \
        for (ptrdiff_t q = 0; q < w; q++) packed[p * W + q] = b[p * ldb + q];           \
}

/* Rows 0..mr (mr 1 or 2, a constant) of C across all n columns, B not transposed:
 * blocks of mr rows by WIDE / mr whole vectors while they fit, the columns left over
 * in strips (each entry summed as a strip's block sums it). */
#define FBP_DEFINE_GEMM_WIDE(T, SUFFIX, V, LANES, SET0, BCAST, FMA, LOADU, STOREU, ADD) \
FBP_TARGET static inline void fbp_gemm_wide_##SUFFIX(                                   \
    int mr, ptrdiff_t n, ptrdiff_t k, const T *a, ptrdiff_t ais, ptrdiff_t aps,         \
    const T *b, ptrdiff_t ldb, T *c, ptrdiff_t ldc, int accumulate)                     \
{                                                                                       \
    const int nv = FBP_GEMM_WIDE / mr;                                                  \
    ptrdiff_t j = 0;                                                                    \
    for (; j + nv * LANES <= n; j += nv * LANES) {                                      \
        V acc[FBP_GEMM_WIDE], bv[FBP_GEMM_WIDE];                                        \
        for (int v = 0; v < FBP_GEMM_WIDE; v++) acc[v] = SET0();                        \
        for (ptrdiff_t p = 0; p < k; p++) {                                             \
            const T *bp = b + p * ldb + j, *ap = a + p * aps;                           \
            for (int v = 0; v < nv; v++) bv[v] = LOADU(bp + v * LANES, 0);              \
            for (int i = 0; i < mr; i++) {                                              \
                V x = BCAST(ap + i * ais);                                              \
                for (int v = 0; v < nv; v++)                                            \
                    acc[i * nv + v] = FMA(x, bv[v], acc[i * nv + v]);                   \
            }                                                                           \
        }                                                                               \
        for (int i = 0; i < mr; i++)                                                    \
            for (int v = 0; v < nv; v++) {                                              \
                T *cv = c + i * ldc + j + v * LANES;                                    \
                V sum = acc[i * nv + v];                                                \
                STOREU(cv, 0, accumulate ? ADD(sum, LOADU(cv, 0)) : sum);               \
            }                                                                           \
    }                                                                                   \
    fbp_gemm_strips_##SUFFIX(j, n, mr, k, a, ais, aps, b, ldb, c, ldc, accumulate);     \
}

/* Row-major C (m x n, row stride ldc) = op(A) @ op(B) (accumulate: C += it); A and B
 * have row strides lda and ldb as stored (op(A) = A^T: A is k x m). m, n, k >= 1. */
#define FBP_DEFINE_GEMM(T, SUFFIX, LANES, MASK)                                         \
FBP_TARGET static void fbp_gemm_small_##SUFFIX(                                         \
    int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *a,        \
    ptrdiff_t lda, const T *b, ptrdiff_t ldb, int accumulate, T *c, ptrdiff_t ldc)      \
{                                                                                       \
    const ptrdiff_t W = 2 * LANES;                                                      \
    ptrdiff_t ais = trans_a ? 1 : lda, aps = trans_a ? lda : 1;                         \
    T packed[FBP_GEMM_KB * 2 * LANES];                                                  \
    /* A product of one or two rows: wide blocks (B not transposed). */                 \
    if (!trans_b && m == 1) {                                                           \
        fbp_gemm_wide_##SUFFIX(1, n, k, a, ais, aps, b, ldb, c, ldc, accumulate);       \
        return;                                                                         \
    }                                                                                   \
    if (!trans_b && m == 2) {                                                           \
        fbp_gemm_wide_##SUFFIX(2, n, k, a, ais, aps, b, ldb, c, ldc, accumulate);       \
        return;                                                                         \
    }                                                                                   \
    if (!trans_b && !fbp_pack_b_pays(m, k, ldb * (ptrdiff_t)sizeof(T))) {               \
        fbp_gemm_strips_##SUFFIX(0, n, m, k, a, ais, aps, b, ldb, c, ldc, accumulate);  \
        return;                                                                         \
    }                                                                                   \
    /* Strip after strip, B (or B^T) copied KB rows of op(B) at a time (B not           \
     * transposed is copied only when k <= KB: one chunk, the sums of B in place). */   \
    for (ptrdiff_t j = 0; j < n; j += W) {                                              \
        ptrdiff_t w = n - j < W ? n - j : W;                                            \
        MASK m0, m1;                                                                    \
        FBP_MASKS_##SUFFIX(w, &m0, &m1);                                                \
        for (ptrdiff_t p0 = 0; p0 < k; p0 += FBP_GEMM_KB) {                             \
            ptrdiff_t kb = k - p0 < FBP_GEMM_KB ? k - p0 : FBP_GEMM_KB;                 \
            if (trans_b)                                                                \
                fbp_pack_bt_##SUFFIX(b + j * ldb + p0, ldb, w, kb, packed);             \
            else                                                                        \
                fbp_pack_b_##SUFFIX(b + p0 * ldb + j, ldb, w, kb, packed);              \
            fbp_gemm_strip_##SUFFIX(w, m, kb, a + p0 * aps, ais, aps, packed, W,        \
                                    c + j, ldc, m0, m1, accumulate || p0 > 0);          \
        }                                                                               \
    }                                                                                   \
}

/* The portable version: 16-byte vectors of the compiler's vector extension, whose
 * operations it lowers to SSE2 or NEON. A lane mask is the count of lanes on (from
 * the first); a masked load or store moves those lanes one by one. The multiply-add
 * is NEON's fused one on arm64, a multiply then an add on x86-64 (SSE2 has none). */
typedef float fbp_v4f __attribute__((vector_size(16)));
typedef double fbp_v2d __attribute__((vector_size(16)));

#define FBP_DEFINE_PORTABLE_OPS(T, SUFFIX, V, LANES)                                    \
static inline V fbp_zero_##SUFFIX(void)                                                 \
{                                                                                       \
    V v;                                                                                \
    for (int l = 0; l < LANES; l++) v[l] = 0;                                           \
    return v;                                                                           \
}                                                                                       \
static inline V fbp_splat_##SUFFIX(const T *p)                                          \
{                                                                                       \
    V v;                                                                                \
    for (int l = 0; l < LANES; l++) v[l] = *p;                                          \
    return v;                                                                           \
}                                                                                       \
static inline V fbp_add_##SUFFIX(V a, V b) { return a + b; }                            \
static inline V fbp_loadu_##SUFFIX(const T *p, ptrdiff_t lanes)                         \
{                                                                                       \
    V v;                                                                                \
    (void)lanes;                                                                        \
    memcpy(&v, p, sizeof v);                                                            \
    return v;                                                                           \
}                                                                                       \
static inline void fbp_storeu_##SUFFIX(T *p, ptrdiff_t lanes, V v)                      \
{                                                                                       \
    (void)lanes;                                                                        \
    memcpy(p, &v, sizeof v);                                                            \
}                                                                                       \
static inline V fbp_mload_##SUFFIX(const T *p, ptrdiff_t lanes)                         \
{                                                                                       \
    V v = fbp_zero_##SUFFIX();                                                          \
    if (lanes >= LANES) return fbp_loadu_##SUFFIX(p, lanes);                            \
    for (ptrdiff_t l = 0; l < lanes; l++) v[l] = p[l];                                  \
    return v;                                                                           \
}                                                                                       \
static inline void fbp_mstore_##SUFFIX(T *p, ptrdiff_t lanes, V v)                      \
{                                                                                       \
    if (lanes >= LANES) {                                                               \
        fbp_storeu_##SUFFIX(p, lanes, v);                                               \
        return;                                                                         \
    }                                                                                   \
    for (ptrdiff_t l = 0; l < lanes; l++) p[l] = v[l];                                  \
}                                                                                       \
static inline void FBP_MASKS_##SUFFIX(ptrdiff_t w, ptrdiff_t *m0, ptrdiff_t *m1)        \
{                                                                                       \
    *m0 = w < LANES ? w : LANES;                                                        \
    *m1 = w <= LANES ? 0 : w - LANES < LANES ? w - LANES : LANES;                       \
}                                                                                       \
static inline void fbp_transpose_##SUFFIX(const T *src, ptrdiff_t lds, T *dst,          \
                                          ptrdiff_t ldd)                                \
{                                                                                       \
    for (int q = 0; q < LANES; q++)                                                     \
        for (int r = 0; r < LANES; r++) dst[r * ldd + q] = src[q * lds + r];            \
}
FBP_DEFINE_PORTABLE_OPS(float, portable_f32, fbp_v4f, 4)
FBP_DEFINE_PORTABLE_OPS(double, portable_f64, fbp_v2d, 2)

#if FBP_SMALL_GEMM_X86
static inline fbp_v4f fbp_fma_portable_f32(fbp_v4f a, fbp_v4f b, fbp_v4f c) { return a * b + c; }
static inline fbp_v2d fbp_fma_portable_f64(fbp_v2d a, fbp_v2d b, fbp_v2d c) { return a * b + c; }
#else
static inline fbp_v4f fbp_fma_portable_f32(fbp_v4f a, fbp_v4f b, fbp_v4f c)
{
    return (fbp_v4f)vfmaq_f32((float32x4_t)c, (float32x4_t)a, (float32x4_t)b);
}
static inline fbp_v2d fbp_fma_portable_f64(fbp_v2d a, fbp_v2d b, fbp_v2d c)
{
    return (fbp_v2d)vfmaq_f64((float64x2_t)c, (float64x2_t)a, (float64x2_t)b);
}
#endif

#define FBP_TARGET
FBP_DEFINE_SMALL_GEMM(float, portable_f32, fbp_v4f, 4, fbp_zero_portable_f32,
                      fbp_splat_portable_f32, fbp_fma_portable_f32, fbp_mload_portable_f32,
                      fbp_mstore_portable_f32, fbp_loadu_portable_f32, fbp_storeu_portable_f32,
                      fbp_add_portable_f32, ptrdiff_t, portable_f32, ptrdiff_t)
FBP_DEFINE_SMALL_GEMM(double, portable_f64, fbp_v2d, 2, fbp_zero_portable_f64,
                      fbp_splat_portable_f64, fbp_fma_portable_f64, fbp_mload_portable_f64,
                      fbp_mstore_portable_f64, fbp_loadu_portable_f64, fbp_storeu_portable_f64,
                      fbp_add_portable_f64, ptrdiff_t, portable_f64, ptrdiff_t)
#undef FBP_TARGET

#if FBP_SMALL_GEMM_X86
/* The lane masks of a strip w columns wide: lanes below w on, the rest off. */
FBP_AVX2 static inline void FBP_MASKS_avx2_f32(ptrdiff_t w, __m256i *m0, __m256i *m1)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    *m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w), lane);
    *m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w - 8), lane);
}

FBP_AVX2 static inline void FBP_MASKS_avx2_f64(ptrdiff_t w, __m256i *m0, __m256i *m1)
{
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    *m0 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(w), lane);
    *m1 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(w - 4), lane);
}

/* dst[r][q] = src[q][r] for a tile of one vector's lanes square: rows of src lds
 * apart, rows of dst ldd apart. */
FBP_AVX2 static inline void fbp_transpose_avx2_f32(const float *src, ptrdiff_t lds,
                                                   float *dst, ptrdiff_t ldd)
{
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    /* pairs of rows interleaved, then quadruples, then the 128-bit halves swapped */
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}

FBP_AVX2 static inline void fbp_transpose_avx2_f64(const double *src, ptrdiff_t lds,
                                                   double *dst, ptrdiff_t ldd)
{
    __m256d r0 = _mm256_loadu_pd(src), r1 = _mm256_loadu_pd(src + lds);
    __m256d r2 = _mm256_loadu_pd(src + 2 * lds), r3 = _mm256_loadu_pd(src + 3 * lds);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(dst + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}

/* Whole vectors for full strips (AMD's masked stores are slow); the mask unused. */
#define FBP_LOADU_avx2_f32(p, mask) _mm256_loadu_ps(p)
#define FBP_STOREU_avx2_f32(p, mask, v) _mm256_storeu_ps(p, v)
#define FBP_LOADU_avx2_f64(p, mask) _mm256_loadu_pd(p)
#define FBP_STOREU_avx2_f64(p, mask, v) _mm256_storeu_pd(p, v)

#define FBP_TARGET FBP_AVX2
FBP_DEFINE_SMALL_GEMM(float, avx2_f32, __m256, 8, _mm256_setzero_ps, _mm256_broadcast_ss,
                      _mm256_fmadd_ps, _mm256_maskload_ps, _mm256_maskstore_ps,
                      FBP_LOADU_avx2_f32, FBP_STOREU_avx2_f32, _mm256_add_ps, __m256i,
                      avx2_f32, __m256i)
FBP_DEFINE_SMALL_GEMM(double, avx2_f64, __m256d, 4, _mm256_setzero_pd, _mm256_broadcast_sd,
                      _mm256_fmadd_pd, _mm256_maskload_pd, _mm256_maskstore_pd,
                      FBP_LOADU_avx2_f64, FBP_STOREU_avx2_f64, _mm256_add_pd, __m256i,
                      avx2_f64, __m256i)
#undef FBP_TARGET

/* The AVX-512 version: the same kernel over vectors of 16 floats or 8 doubles (a
 * strip 128 bytes wide), with the CPU's own lane masks. */
#define FBP_AVX512 __attribute__((target("avx512f,avx2,fma")))

/* The lane masks of a strip w columns wide (as FBP_MASKS_avx2_<dtype>), and a tile of
 * one vector's lanes square transposed as four tiles of the AVX2 version's (H lanes
 * square, half a vector). */
#define FBP_DEFINE_AVX512_HELPERS(T, SUFFIX, MASK, LANES, H)                             \
FBP_AVX512 static inline void FBP_MASKS_avx512_##SUFFIX(ptrdiff_t w, MASK *m0, MASK *m1) \
{                                                                                       \
    const MASK all = (MASK)((1u << LANES) - 1);                                         \
    *m0 = w >= LANES ? all : (MASK)((1u << w) - 1);                                     \
    *m1 = w >= 2 * LANES ? all : w <= LANES ? 0 : (MASK)((1u << (w - LANES)) - 1);      \
}                                                                                       \
FBP_AVX512 static inline void fbp_transpose_avx512_##SUFFIX(const T *src, ptrdiff_t lds, \
                                                          T *dst, ptrdiff_t ldd)        \
{                                                                                       \
    fbp_transpose_avx2_##SUFFIX(src, lds, dst, ldd);                                    \
    fbp_transpose_avx2_##SUFFIX(src + H, lds, dst + H * ldd, ldd);                      \
    fbp_transpose_avx2_##SUFFIX(src + H * lds, lds, dst + H, ldd);                      \
    fbp_transpose_avx2_##SUFFIX(src + H * lds + H, lds, dst + H * ldd + H, ldd);        \
}
FBP_DEFINE_AVX512_HELPERS(float, f32, __mmask16, 16, 8)
FBP_DEFINE_AVX512_HELPERS(double, f64, __mmask8, 8, 4)

#define FBP_BCAST_avx512_f32(p) _mm512_set1_ps(*(p))
#define FBP_BCAST_avx512_f64(p) _mm512_set1_pd(*(p))
#define FBP_MLOAD_avx512_f32(p, mask) _mm512_maskz_loadu_ps(mask, p)
#define FBP_MSTORE_avx512_f32(p, mask, v) _mm512_mask_storeu_ps(p, mask, v)
#define FBP_MLOAD_avx512_f64(p, mask) _mm512_maskz_loadu_pd(mask, p)
#define FBP_MSTORE_avx512_f64(p, mask, v) _mm512_mask_storeu_pd(p, mask, v)
#define FBP_LOADU_avx512_f32(p, mask) _mm512_loadu_ps(p)
#define FBP_STOREU_avx512_f32(p, mask, v) _mm512_storeu_ps(p, v)
#define FBP_LOADU_avx512_f64(p, mask) _mm512_loadu_pd(p)
#define FBP_STOREU_avx512_f64(p, mask, v) _mm512_storeu_pd(p, v)

#define FBP_TARGET FBP_AVX512
FBP_DEFINE_SMALL_GEMM(float, avx512_f32, __m512, 16, _mm512_setzero_ps,
                      FBP_BCAST_avx512_f32, _mm512_fmadd_ps, FBP_MLOAD_avx512_f32,
                      FBP_MSTORE_avx512_f32, FBP_LOADU_avx512_f32, FBP_STOREU_avx512_f32,
                      _mm512_add_ps, __mmask16, avx2_f32, __m256i)
FBP_DEFINE_SMALL_GEMM(double, avx512_f64, __m512d, 8, _mm512_setzero_pd,
                      FBP_BCAST_avx512_f64, _mm512_fmadd_pd, FBP_MLOAD_avx512_f64,
                      FBP_MSTORE_avx512_f64, FBP_LOADU_avx512_f64, FBP_STOREU_avx512_f64,
                      _mm512_add_pd, __mmask8, avx2_f64, __m256i)
#undef FBP_TARGET

/* Version isa of the x86-64 kernels, where it is one (the portable version is the
 * caller's). */
#define FBP_GEMM_X86(SUFFIX)                                                            \
    if (isa == FBP_GEMM_AVX512) {                                                       \
        fbp_gemm_small_avx512_##SUFFIX(trans_a, trans_b, m, n, k, a, lda, b, ldb,       \
                                       accumulate, c, ldc);                             \
        return;                                                                         \
    }                                                                                   \
    if (isa == FBP_GEMM_AVX2) {                                                         \
        fbp_gemm_small_avx2_##SUFFIX(trans_a, trans_b, m, n, k, a, lda, b, ldb,         \
                                     accumulate, c, ldc);                               \
        return;                                                                         \
    }
#else
#define FBP_GEMM_X86(SUFFIX)
#endif /* FBP_SMALL_GEMM_X86 */

/* C = op(A) @ op(B) (accumulate: C += it) by version isa of the kernel (one this CPU
 * runs, see fbp_small_gemm_cpu). */
#define FBP_DEFINE_GEMM_SMALL(T, SUFFIX)                                                \
static void fbp_gemm_small_##SUFFIX(int isa, int trans_a, int trans_b, ptrdiff_t m,     \
                                    ptrdiff_t n, ptrdiff_t k, const T *a, ptrdiff_t lda, \
                                    const T *b, ptrdiff_t ldb, int accumulate, T *c,    \
                                    ptrdiff_t ldc)                                      \
{                                                                                       \
    (void)isa; /* one version only, but on x86-64 */                                    \
    FBP_GEMM_X86(SUFFIX)                                                                \
    fbp_gemm_small_portable_##SUFFIX(trans_a, trans_b, m, n, k, a, lda, b, ldb,         \
                                     accumulate, c, ldc);                               \
}
FBP_DEFINE_GEMM_SMALL(float, f32)
FBP_DEFINE_GEMM_SMALL(double, f64)

#else /* no kernels: never called (fbp_small_gemm_cpu() is 0) */

static int fbp_small_gemm_cpu(void) { return FBP_GEMM_NONE; }

static void fbp_gemm_small_f32(int isa, int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n,
                               ptrdiff_t k, const float *a, ptrdiff_t lda, const float *b,
                               ptrdiff_t ldb, int accumulate, float *c, ptrdiff_t ldc)
{
    (void)isa; (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)a;
    (void)lda; (void)b; (void)ldb; (void)accumulate; (void)c; (void)ldc;
}

static void fbp_gemm_small_f64(int isa, int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n,
                               ptrdiff_t k, const double *a, ptrdiff_t lda, const double *b,
                               ptrdiff_t ldb, int accumulate, double *c, ptrdiff_t ldc)
{
    (void)isa; (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)a;
    (void)lda; (void)b; (void)ldb; (void)accumulate; (void)c; (void)ldc;
}

#endif
#endif
