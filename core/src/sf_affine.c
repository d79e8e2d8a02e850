/* sf_affine.c -- the public one-dimension entry points of the affine
 * (RealNVP) transform in logit space (docs/model-format.md section 7.2).
 * Its mathematics is in math/sf_math_affine.h, shared with the GPU kernels;
 * the flow (sf_flow.c) calls it there directly. */
#include "sf_internal.h"

int sf_affine_forward(const sf_affine_constants *c, const double *raw, double x, double *y, double *dy, double *d2y)
{
    if (!sfm_affine_inside(x)) return -1;
    const sfm_affine p = sfm_affine_view(raw[0], raw[1], c->scale_max);
    double f1, f2, l;
    sfm_affine_eval(&p, x, y, &f1, &f2, &l);
    if (dy) *dy = f1;
    if (d2y) *d2y = f2;
    return 0;
}

int sf_affine_inverse(const sf_affine_constants *c, const double *raw, double y, double *x)
{
    if (!sfm_affine_inside(y)) return -1;
    const sfm_affine p = sfm_affine_view(raw[0], raw[1], c->scale_max);
    double l;
    sfm_affine_step(&p, 1, y, x, &l);
    return 0;
}
