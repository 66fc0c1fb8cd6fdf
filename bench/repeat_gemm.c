/* Back-to-back calls of a BLIS typed gemm (bli_sgemm_ex or bli_dgemm_ex), for timing it
 * the way bench/blis_products.py times fastbp's products (_core.matmul's
 * `repeats`): the loop in C, so that no Python call is timed with the product.
 *
 * bench/blis_products.py builds it as a shared library with the C compiler and
 * passes the address of the function from the blis package's own library (ctypes):
 *
 *     cc -O2 -shared -fPIC bench/repeat_gemm.c -o /tmp/repeat_gemm.so
 *
 * The prototype is BLIS's expert typed API: C = beta * C + alpha * op(A) @ op(B),
 * each matrix given by its row and column strides (row-major: a row stride of its
 * width and a column stride of 1), trans_t an enum (0: as stored, 8: transposed),
 * then the context (the kernels and block sizes of one configuration, set up by
 * its bli_cntx_init_<name>; NULL: those BLIS chose for this CPU) and the runtime
 * (NULL: the global one, its thread count set to 1 by the caller).
 */
#include <stdint.h>

typedef void (*bli_gemm_fn)(int transa, int transb, int64_t m, int64_t n, int64_t k,
                            const void *alpha, const void *a, int64_t rsa, int64_t csa,
                            const void *b, int64_t rsb, int64_t csb, const void *beta,
                            void *c, int64_t rsc, int64_t csc, void *cntx, void *rntm);

void repeat_gemm(void *fn, int64_t repeats, int transa, int transb, int64_t m, int64_t n,
                 int64_t k, const void *alpha, const void *a, int64_t rsa, int64_t csa,
                 const void *b, int64_t rsb, int64_t csb, const void *beta, void *c,
                 int64_t rsc, int64_t csc, void *cntx)
{
    bli_gemm_fn gemm = (bli_gemm_fn)fn;
    for (int64_t r = 0; r < repeats; r++)
        gemm(transa, transb, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc, cntx,
             (void *)0);
}
