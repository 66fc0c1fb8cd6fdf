/* The small-product kernel (fastbp/_smallgemm.h) in plain C, without Python: every
 * version this CPU runs against a reference sum in double precision, over the forms
 * of the training step (NN, NT, TN, and TT), odd shapes (partial register blocks and
 * strips, one and two rows, k past a chunk of B^T), both dtypes, C overwritten and
 * accumulated, in a matrix wider than the product (strides beyond the shapes).
 *
 * tools/cross_check.sh builds it for this machine and for arm64 (run under qemu), so
 * that the portable version's NEON build, which no CI machine runs natively, is
 * checked as well. Prints one line a version and exits 1 on the first wrong entry.
 *
 * The bound: each entry of C is a sum of k products, each product and partial sum
 * rounded once (twice where the multiply-add is not fused), so it lies within
 * 2 (k + 2) eps sum_p |a_ip b_pj| (+ |c| when accumulating) of the exact sum; the
 * reference, in double, is far closer than that for float and within the same
 * bound for double.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_smallgemm.h"

#if !FBP_SMALL_GEMM
int main(void)
{
    printf("no small-product kernel on this CPU and compiler: nothing to check\n");
    return 0;
}
#else

static unsigned long long state = 0x9E3779B97F4A7C15ull;

/* A value in [-1, 1) from a 64-bit linear congruential stream (its high bits). */
static double draw(void)
{
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(state >> 11) / (double)(1ull << 52) - 1.0;
}

static const ptrdiff_t SIZES[] = {1, 2, 7, 13, 31, 33, 65};
#define N_SIZES (sizeof SIZES / sizeof SIZES[0])
#define PAD 3 /* extra columns of every stored matrix: strides beyond the shapes */

static const char *NAMES[] = {"none", "portable", "avx2", "avx512"};

/* One product of version isa: returns 0 when every entry lies within the bound. */
#define DEFINE_CHECK(T, SUFFIX, EPS)                                                    \
static int check_##SUFFIX(int isa, int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n,  \
                          ptrdiff_t k, int accumulate)                                  \
{                                                                                       \
    ptrdiff_t ar = trans_a ? k : m, ac = trans_a ? m : k;                               \
    ptrdiff_t br = trans_b ? n : k, bc = trans_b ? k : n;                               \
    ptrdiff_t lda = ac + PAD, ldb = bc + PAD, ldc = n + PAD, i, j, p;                   \
    T *a = malloc(sizeof(T) * ar * lda), *b = malloc(sizeof(T) * br * ldb);             \
    T *c = malloc(sizeof(T) * m * ldc), *c0 = malloc(sizeof(T) * m * ldc);              \
    T *again = malloc(sizeof(T) * m * ldc);                                             \
    int bad = 0;                                                                        \
    for (i = 0; i < ar * lda; i++) a[i] = (T)draw();                                    \
    for (i = 0; i < br * ldb; i++) b[i] = (T)draw();                                    \
    for (i = 0; i < m * ldc; i++) c0[i] = (T)draw();                                    \
    memcpy(c, c0, sizeof(T) * m * ldc);                                                 \
    fbp_gemm_small_##SUFFIX(isa, trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, \
                            c, ldc);                                                    \
    memcpy(again, c0, sizeof(T) * m * ldc);                                             \
    fbp_gemm_small_##SUFFIX(isa, trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, \
                            again, ldc);                                                \
    for (i = 0; i < m && !bad; i++)                                                     \
        for (j = 0; j < ldc && !bad; j++) {                                             \
            double sum = accumulate ? (double)c0[i * ldc + j] : 0.0, size = fabs(sum);  \
            if (j >= n) { /* past the product's columns: untouched */                   \
                bad = memcmp(&c[i * ldc + j], &c0[i * ldc + j], sizeof(T)) != 0;        \
                continue;                                                               \
            }                                                                           \
            for (p = 0; p < k; p++) {                                                   \
                double x = trans_a ? a[p * lda + i] : a[i * lda + p];                   \
                double y = trans_b ? b[j * ldb + p] : b[p * ldb + j];                   \
                sum += x * y;                                                           \
                size += fabs(x * y);                                                    \
            }                                                                           \
            bad = !(fabs((double)c[i * ldc + j] - sum) <= 2.0 * (k + 2) * (EPS) * size); \
            bad = bad || memcmp(&c[i * ldc + j], &again[i * ldc + j], sizeof(T)) != 0;  \
            if (bad)                                                                    \
                printf("%s %s: trans_a %d trans_b %d m %td n %td k %td accumulate %d: " \
                       "C[%td][%td] = %.17g, the sum is %.17g\n", NAMES[isa], #SUFFIX,   \
                       trans_a, trans_b, m, n, k, accumulate, i, j,                     \
                       (double)c[i * ldc + j], sum);                                    \
        }                                                                               \
    free(a); free(b); free(c); free(c0); free(again);                                   \
    return bad;                                                                         \
}
DEFINE_CHECK(float, f32, 5.960464477539063e-08)
DEFINE_CHECK(double, f64, 1.1102230246251565e-16)

int main(void)
{
    int top = fbp_small_gemm_cpu(), isa, form, acc;
    size_t im, in, ik;
    for (isa = FBP_GEMM_PORTABLE; isa <= top; isa++) {
        long products = 0;
        for (form = 0; form < 4; form++)
            for (acc = 0; acc < 2; acc++) {
                int ta = form & 1, tb = form >> 1;
                for (im = 0; im < N_SIZES; im++)
                    for (in = 0; in < N_SIZES; in++)
                        for (ik = 0; ik < N_SIZES; ik++) {
                            ptrdiff_t m = SIZES[im], n = SIZES[in], k = SIZES[ik];
                            if (check_f32(isa, ta, tb, m, n, k, acc)
                                || check_f64(isa, ta, tb, m, n, k, acc))
                                return 1;
                            products += 2;
                        }
                /* k past one chunk of B^T (FBP_GEMM_KB rows), and B copied first */
                if (check_f32(isa, ta, tb, 50, 33, FBP_GEMM_KB + 45, acc)
                    || check_f64(isa, ta, tb, 50, 33, FBP_GEMM_KB + 45, acc)
                    || check_f32(isa, ta, tb, FBP_GEMM_PACK_M + 1, 40, 64, acc)
                    || check_f64(isa, ta, tb, FBP_GEMM_PACK_M + 1, 40, 64, acc))
                    return 1;
                products += 4;
            }
        printf("%s: %ld products within the bound, each the same twice\n", NAMES[isa],
               products);
    }
    return 0;
}
#endif
