/* sf_mlp.c -- conditioner networks: batched forward pass and the
 * reverse pass for input gradients (weights are fixed, so no weight
 * gradients).  Matrices are row-major, W is out x in as in PyTorch. */
#include "sf_internal.h"

#include <math.h>
#include <string.h>

/* The two matrix kernels dominate the cost; on x86-64 with GCC or Clang they
 * are compiled for AVX2 as well and picked at load time (ifunc), so the
 * library stays portable to any x86-64. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define SF_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SF_VECTOR_CLONES
#endif

static double activate(sf_activation a, double z)
{
    switch (a) {
    case SF_ACT_TANH: return tanh(z);
    case SF_ACT_SILU: return z * sfU_sigmoid(z);
    case SF_ACT_SOFTPLUS: return sfU_softplus(z);
    }
    return z;
}

/* Derivative from the pre-activation z and the activation y. */
static double activate_grad(sf_activation a, double z, double y)
{
    switch (a) {
    case SF_ACT_TANH: return 1 - y * y;
    case SF_ACT_SILU: { double s = sfU_sigmoid(z); return s * (1 + z * (1 - s)); }
    case SF_ACT_SOFTPLUS: return sfU_sigmoid(z);
    }
    return 1;
}

/* out (B x n_out) = in (B x n_in) W^T + bias, as axpy updates with the rows
 * of W^T (wt, n_in x n_out): contiguous and vectorizable; each row is used
 * for the whole batch while it is in cache. */
SF_VECTOR_CLONES static void linear(int B, int n_in, int n_out, const double *wt, const double *bias,
                                    const double *in, double *out)
{
    for (int b = 0; b < B; b++) memcpy(out + (size_t)b * n_out, bias, (size_t)n_out * sizeof(double));
    for (int i = 0; i < n_in; i++) {
        const double *restrict w = wt + (size_t)i * n_out;
        for (int b = 0; b < B; b++) {
            const double xi = in[(size_t)b * n_in + i];
            double *restrict y = out + (size_t)b * n_out;
            for (int o = 0; o < n_out; o++) y[o] += xi * w[o];
        }
    }
}

/* gin (B x n_in) = gout (B x n_out) W, as axpy updates with the rows of W. */
SF_VECTOR_CLONES static void linear_backward(int B, int n_in, int n_out, const double *W, const double *gout,
                                             double *gin)
{
    memset(gin, 0, (size_t)B * n_in * sizeof(double));
    for (int o = 0; o < n_out; o++) {
        const double *restrict w = W + (size_t)o * n_in;
        for (int b = 0; b < B; b++) {
            const double g = gout[(size_t)b * n_out + o];
            double *restrict gx = gin + (size_t)b * n_in;
            for (int i = 0; i < n_in; i++) gx[i] += g * w[i];
        }
    }
}

size_t sfN_activation_size(const sf_layer *L)
{
    size_t n = 0;
    for (int m = 1; m < L->n_linear; m++) n += 2 * (size_t)L->width[m];
    return n;
}

void sfN_forward(const sf_layer *L, int B, const double *in, double *act, double *out)
{
    const double *x = in;
    for (int m = 0; m < L->n_linear; m++) {
        int n_in = L->width[m], n_out = L->width[m + 1];
        if (m == L->n_linear - 1) {
            linear(B, n_in, n_out, L->weight_t[m], L->bias[m], x, out);
            break;
        }
        double *pre = act, *post = act + (size_t)B * n_out;
        linear(B, n_in, n_out, L->weight_t[m], L->bias[m], x, pre);
        for (size_t i = 0; i < (size_t)B * n_out; i++) post[i] = activate(L->activation, pre[i]);
        x = post;
        act = post + (size_t)B * n_out;
    }
}

void sfN_backward(const sf_layer *L, int B, const double *act, const double *gout, double *gin, double *scratch,
                  int max_width)
{
    /* Walk the hidden layers backwards; their (pre, post) blocks are laid
     * out in act in forward order, so start from the end of act. */
    size_t end = (size_t)B * sfN_activation_size(L);
    double *ga = scratch, *gb = scratch + (size_t)B * (size_t)max_width;
    const double *g = gout;
    for (int m = L->n_linear - 1; m >= 1; m--) {
        int n_in = L->width[m], n_out = L->width[m + 1];
        double *dst = (g == ga) ? gb : ga;
        linear_backward(B, n_in, n_out, L->weight[m], g, dst);
        end -= 2 * (size_t)B * n_in;
        const double *pre = act + end, *post = pre + (size_t)B * n_in;
        for (size_t i = 0; i < (size_t)B * n_in; i++) dst[i] *= activate_grad(L->activation, pre[i], post[i]);
        g = dst;
    }
    linear_backward(B, L->width[0], L->width[1], L->weight[0], g, gin);
}
