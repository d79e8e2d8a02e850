/* sf_mlp.c -- conditioner networks: batched forward pass and the
 * reverse pass for input gradients (weights are fixed, so no weight
 * gradients).  Matrices are row-major, W is out x in as in PyTorch. */
#include "sf_internal.h"

#include <cblas.h>

#include <math.h>
#include <string.h>

/* The activations and their derivatives are math/sf_math_mlp.h (sfm_activate,
 * sfm_activate_grad), shared with the GPU kernels; sf_activation's values are
 * its SFM_ACT_ codes. */

/* out (B x n_out) = in (B x n_in) W^T + bias, W stored once (n_out x n_in, row-major, as
 * PyTorch's nn.Linear).  Through CBLAS, so any BLAS can be linked; one molecule is a
 * matrix-vector product, which BLAS runs as such. */
static void linear(int B, int n_in, int n_out, const double *W, const double *bias, const double *in, double *out)
{
    for (int b = 0; b < B; b++) memcpy(out + (size_t)b * n_out, bias, (size_t)n_out * sizeof(double));
    if (n_in == 0) return; /* a layer without conditioning dims: the bias alone (BLAS refuses lda = 0) */
    if (B == 1)
        cblas_dgemv(CblasRowMajor, CblasNoTrans, n_out, n_in, 1.0, W, n_in, in, 1, 1.0, out, 1);
    else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n_out, n_in, 1.0, in, n_in, W, n_in, 1.0, out, n_out);
}

/* gin (B x n_in) = gout (B x n_out) W. */
static void linear_backward(int B, int n_in, int n_out, const double *W, const double *gout, double *gin)
{
    if (n_in == 0) return; /* no inputs, no input gradient */
    if (B == 1)
        cblas_dgemv(CblasRowMajor, CblasTrans, n_out, n_in, 1.0, W, n_in, gout, 1, 0.0, gin, 1);
    else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, n_in, n_out, 1.0, gout, n_out, W, n_in, 0.0, gin,
                    n_in);
}

/* One molecule with float32 weights.  BLAS has no product of float weights with double
 * vectors, and one molecule is bound by the bytes of W it streams, so these loops read
 * W as floats and accumulate in double.  W is packed in panels of SF_PANEL rows
 * (sf_model.c: panel[p][i][r] = W[p SF_PANEL + r][i], the last panel padded with
 * zero rows), so both products run over whole vectors of one panel column with no
 * horizontal sum in the inner loop: the forward pass broadcasts x[i] over the rows of
 * a panel, the reverse pass keeps one vector of partial sums per input and reduces
 * each once at the end. */
#if SF_PANEL != 8
#error "the float32 products are written for panels of 8 rows"
#endif

#if defined(__GNUC__)
/* Portable C: GCC/Clang vector types, 8 doubles and 8 floats (the compiler splits
 * them into the registers the target has). */
typedef double sf_v8d __attribute__((vector_size(64)));
typedef float sf_v8f __attribute__((vector_size(32)));
/* the same in memory aligned only as double (the workspace guarantees no more) */
typedef double sf_v8d_mem __attribute__((vector_size(64), aligned(8)));

static void linear_f32_c(int n_in, int n_out, const float *Wp, const double *bias, const double *x, double *out)
{
    const int panels = (n_out + SF_PANEL - 1) / SF_PANEL;
    for (int p = 0; p < panels; p++) {
        const float *w = Wp + (size_t)p * n_in * SF_PANEL;
        sf_v8d acc = {0};
        for (int i = 0; i < n_in; i++) {
            sf_v8f column;
            memcpy(&column, w + (size_t)i * SF_PANEL, sizeof column);
            acc += __builtin_convertvector(column, sf_v8d) * x[i];
        }
        const int rows = n_out - p * SF_PANEL < SF_PANEL ? n_out - p * SF_PANEL : SF_PANEL;
        for (int r = 0; r < rows; r++) out[p * SF_PANEL + r] = bias[p * SF_PANEL + r] + acc[r];
    }
}

static void linear_backward_f32_c(int n_in, int n_out, const float *Wp, const double *g, double *gin, double *partial)
{
    const int panels = (n_out + SF_PANEL - 1) / SF_PANEL;
    sf_v8d_mem *acc = (sf_v8d_mem *)partial; /* one vector of partial sums per input */
    for (int i = 0; i < n_in; i++) acc[i] = (sf_v8d){0};
    for (int p = 0; p < panels; p++) {
        const float *w = Wp + (size_t)p * n_in * SF_PANEL;
        sf_v8d gp = {0};
        for (int r = 0; r < SF_PANEL && p * SF_PANEL + r < n_out; r++) gp[r] = g[p * SF_PANEL + r];
        for (int i = 0; i < n_in; i++) {
            sf_v8f column;
            memcpy(&column, w + (size_t)i * SF_PANEL, sizeof column);
            acc[i] += __builtin_convertvector(column, sf_v8d) * gp;
        }
    }
    for (int i = 0; i < n_in; i++) {
        const sf_v8d v = acc[i];
        gin[i] = ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
    }
}
#else
/* Any other C11 compiler: the same products as plain loops. */
static void linear_f32_c(int n_in, int n_out, const float *Wp, const double *bias, const double *x, double *out)
{
    const int panels = (n_out + SF_PANEL - 1) / SF_PANEL;
    for (int p = 0; p < panels; p++) {
        const float *w = Wp + (size_t)p * n_in * SF_PANEL;
        double acc[SF_PANEL] = {0};
        for (int i = 0; i < n_in; i++)
            for (int r = 0; r < SF_PANEL; r++) acc[r] += (double)w[(size_t)i * SF_PANEL + r] * x[i];
        const int rows = n_out - p * SF_PANEL < SF_PANEL ? n_out - p * SF_PANEL : SF_PANEL;
        for (int r = 0; r < rows; r++) out[p * SF_PANEL + r] = bias[p * SF_PANEL + r] + acc[r];
    }
}

static void linear_backward_f32_c(int n_in, int n_out, const float *Wp, const double *g, double *gin, double *partial)
{
    const int panels = (n_out + SF_PANEL - 1) / SF_PANEL;
    memset(partial, 0, (size_t)n_in * SF_PANEL * sizeof(double));
    for (int p = 0; p < panels; p++) {
        const float *w = Wp + (size_t)p * n_in * SF_PANEL;
        for (int i = 0; i < n_in; i++)
            for (int r = 0; r < SF_PANEL && p * SF_PANEL + r < n_out; r++)
                partial[(size_t)i * SF_PANEL + r] += (double)w[(size_t)i * SF_PANEL + r] * g[p * SF_PANEL + r];
    }
    for (int i = 0; i < n_in; i++) {
        const double *v = partial + (size_t)i * SF_PANEL;
        gin[i] = ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
    }
}
#endif

/* AVX-512: one panel column is one register of 8 doubles, converted from 8 floats by
 * one instruction.  Chosen at run time where the CPU has it (sfN_forward). */
#if defined(SF_USE_LIBMVEC) && defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define SF_HAVE_AVX512_F32 1

/* The lanes of a panel that hold rows: the first min(rows, SF_PANEL). */
static inline __mmask8 panel_mask(int rows)
{
    return (__mmask8)(rows >= SF_PANEL ? 0xffu : (1u << rows) - 1u);
}

__attribute__((target("avx512f"))) static void linear_f32_avx512(int n_in, int n_out, const float *Wp,
                                                                  const double *bias, const double *x, double *out)
{
    const int panels = (n_out + SF_PANEL - 1) / SF_PANEL;
    for (int p = 0; p < panels; p++) {
        const float *w = Wp + (size_t)p * n_in * SF_PANEL;
        /* two sums, so consecutive products do not wait on each other's additions */
        __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
        int i = 0;
        for (; i + 2 <= n_in; i += 2) {
            acc0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(w + (size_t)i * SF_PANEL)),
                                   _mm512_set1_pd(x[i]), acc0);
            acc1 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(w + (size_t)(i + 1) * SF_PANEL)),
                                   _mm512_set1_pd(x[i + 1]), acc1);
        }
        if (i < n_in)
            acc0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(w + (size_t)i * SF_PANEL)),
                                   _mm512_set1_pd(x[i]), acc0);
        acc0 = _mm512_add_pd(acc0, acc1);
        const int rows = n_out - p * SF_PANEL < SF_PANEL ? n_out - p * SF_PANEL : SF_PANEL;
        const __mmask8 mask = panel_mask(rows);
        _mm512_mask_storeu_pd(out + p * SF_PANEL, mask,
                              _mm512_add_pd(_mm512_maskz_loadu_pd(mask, bias + p * SF_PANEL), acc0));
    }
}

__attribute__((target("avx512f"))) static void linear_backward_f32_avx512(int n_in, int n_out, const float *Wp,
                                                                           const double *g, double *gin,
                                                                           double *partial)
{
    const int panels = (n_out + SF_PANEL - 1) / SF_PANEL;
    for (int i = 0; i < n_in; i++) _mm512_storeu_pd(partial + (size_t)i * SF_PANEL, _mm512_setzero_pd());
    int p = 0;
    /* two panels per sweep over the inputs: half the loads and stores of the partial sums */
    for (; p + 2 <= panels; p += 2) {
        const float *w0 = Wp + (size_t)p * n_in * SF_PANEL, *w1 = w0 + (size_t)n_in * SF_PANEL;
        const int left = n_out - (p + 1) * SF_PANEL;
        const __m512d g0 = _mm512_loadu_pd(g + p * SF_PANEL);
        const __m512d g1 = _mm512_maskz_loadu_pd(panel_mask(left), g + (p + 1) * SF_PANEL);
        for (int i = 0; i < n_in; i++) {
            double *a = partial + (size_t)i * SF_PANEL;
            __m512d v = _mm512_loadu_pd(a);
            v = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(w0 + (size_t)i * SF_PANEL)), g0, v);
            v = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(w1 + (size_t)i * SF_PANEL)), g1, v);
            _mm512_storeu_pd(a, v);
        }
    }
    if (p < panels) {
        const float *w0 = Wp + (size_t)p * n_in * SF_PANEL;
        const int left = n_out - p * SF_PANEL;
        const __m512d g0 = _mm512_maskz_loadu_pd(panel_mask(left), g + p * SF_PANEL);
        for (int i = 0; i < n_in; i++) {
            double *a = partial + (size_t)i * SF_PANEL;
            _mm512_storeu_pd(a, _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(w0 + (size_t)i * SF_PANEL)), g0,
                                                _mm512_loadu_pd(a)));
        }
    }
    for (int i = 0; i < n_in; i++) gin[i] = _mm512_reduce_add_pd(_mm512_loadu_pd(partial + (size_t)i * SF_PANEL));
}
#endif

static void linear_f32(int n_in, int n_out, const float *Wp, const double *bias, const double *x, double *out)
{
#ifdef SF_HAVE_AVX512_F32
    if (__builtin_cpu_supports("avx512f")) { /* GCC's cached cpuid */
        linear_f32_avx512(n_in, n_out, Wp, bias, x, out);
        return;
    }
#endif
    linear_f32_c(n_in, n_out, Wp, bias, x, out);
}

static void linear_backward_f32(int n_in, int n_out, const float *Wp, const double *g, double *gin, double *partial)
{
#ifdef SF_HAVE_AVX512_F32
    if (__builtin_cpu_supports("avx512f")) {
        linear_backward_f32_avx512(n_in, n_out, Wp, g, gin, partial);
        return;
    }
#endif
    linear_backward_f32_c(n_in, n_out, Wp, g, gin, partial);
}

/* Linear map m of a layer in its weight precision. */
static void layer_linear(const sf_layer *L, int m, int B, const double *in, double *out)
{
    const int n_in = L->width[m], n_out = L->width[m + 1];
    if (!L->weight32) linear(B, n_in, n_out, L->weight[m], L->bias[m], in, out);
    else if (B == 1) linear_f32(n_in, n_out, L->weight32[m], L->bias[m], in, out);
    else linear(B, n_in, n_out, L->weight_rounded[m], L->bias[m], in, out);
}

static void layer_linear_backward(const sf_layer *L, int m, int B, const double *gout, double *gin, double *partial)
{
    const int n_in = L->width[m], n_out = L->width[m + 1];
    if (!L->weight32) linear_backward(B, n_in, n_out, L->weight[m], gout, gin);
    else if (B == 1) linear_backward_f32(n_in, n_out, L->weight32[m], gout, gin, partial);
    else linear_backward(B, n_in, n_out, L->weight_rounded[m], gout, gin);
}

size_t sfN_activation_size(const sf_layer *L)
{
    size_t n = 0;
    for (int m = 1; m < L->n_linear; m++) n += 2 * (size_t)L->width[m];
    return n;
}

/* The activation of n pre-activations, aux in place (see sfm_activate), one
 * vector loop per activation so the lanes share no branch. */
SF_VECTOR_CLONES static void activate(int activation, size_t n, double *aux, double *post)
{
    switch (activation) {
    case SFM_ACT_TANH:
        SFM_SIMD
        for (size_t i = 0; i < n; i++) post[i] = sfm_activate(SFM_ACT_TANH, aux[i], &aux[i]);
        break;
    case SFM_ACT_SILU:
        SFM_SIMD
        for (size_t i = 0; i < n; i++) post[i] = sfm_activate(SFM_ACT_SILU, aux[i], &aux[i]);
        break;
    default:
        SFM_SIMD
        for (size_t i = 0; i < n; i++) post[i] = sfm_activate(activation, aux[i], &aux[i]);
        break;
    }
}

void sfN_forward(const sf_layer *L, int B, const double *in, double *act, double *out)
{
    const double *x = in;
    for (int m = 0; m < L->n_linear; m++) {
        const int n_out = L->width[m + 1];
        if (m == L->n_linear - 1) {
            layer_linear(L, m, B, x, out);
            break;
        }
        double *aux = act, *post = act + (size_t)B * n_out;
        layer_linear(L, m, B, x, aux); /* z, then replaced by aux */
        activate(L->activation, (size_t)B * n_out, aux, post);
        x = post;
        act = post + (size_t)B * n_out;
    }
}

void sfN_backward(const sf_layer *L, int B, const double *act, const double *gout, double *gin, double *scratch,
                  int max_width)
{
    /* Walk the hidden layers backwards; their (aux, post) blocks are laid
     * out in act in forward order, so start from the end of act. */
    size_t end = (size_t)B * sfN_activation_size(L);
    double *ga = scratch, *gb = scratch + (size_t)B * (size_t)max_width;
    double *partial = scratch + 2 * (size_t)B * (size_t)max_width; /* max_width x SF_PANEL */
    const double *g = gout;
    for (int m = L->n_linear - 1; m >= 1; m--) {
        const int n_in = L->width[m];
        double *dst = (g == ga) ? gb : ga;
        layer_linear_backward(L, m, B, g, dst, partial);
        end -= 2 * (size_t)B * n_in;
        const double *aux = act + end, *post = aux + (size_t)B * n_in;
        for (size_t i = 0; i < (size_t)B * n_in; i++) dst[i] *= sfm_activate_grad(L->activation, aux[i], post[i]);
        g = dst;
    }
    layer_linear_backward(L, 0, B, g, gin, partial);
}
