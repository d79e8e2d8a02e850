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
    if (B == 1)
        cblas_dgemv(CblasRowMajor, CblasNoTrans, n_out, n_in, 1.0, W, n_in, in, 1, 1.0, out, 1);
    else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n_out, n_in, 1.0, in, n_in, W, n_in, 1.0, out, n_out);
}

/* gin (B x n_in) = gout (B x n_out) W. */
static void linear_backward(int B, int n_in, int n_out, const double *W, const double *gout, double *gin)
{
    if (B == 1)
        cblas_dgemv(CblasRowMajor, CblasTrans, n_out, n_in, 1.0, W, n_in, gout, 1, 0.0, gin, 1);
    else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, n_in, n_out, 1.0, gout, n_out, W, n_in, 0.0, gin,
                    n_in);
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
            linear(B, n_in, n_out, L->weight[m], L->bias[m], x, out);
            break;
        }
        double *aux = act, *post = act + (size_t)B * n_out;
        linear(B, n_in, n_out, L->weight[m], L->bias[m], x, aux); /* z, then replaced by aux */
        for (size_t i = 0; i < (size_t)B * n_out; i++) post[i] = sfm_activate(L->activation, aux[i], &aux[i]);
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
    const double *g = gout;
    for (int m = L->n_linear - 1; m >= 1; m--) {
        int n_in = L->width[m], n_out = L->width[m + 1];
        double *dst = (g == ga) ? gb : ga;
        linear_backward(B, n_in, n_out, L->weight[m], g, dst);
        end -= 2 * (size_t)B * n_in;
        const double *aux = act + end, *post = aux + (size_t)B * n_in;
        for (size_t i = 0; i < (size_t)B * n_in; i++) dst[i] *= sfm_activate_grad(L->activation, aux[i], post[i]);
        g = dst;
    }
    linear_backward(B, L->width[0], L->width[1], L->weight[0], g, gin);
}
