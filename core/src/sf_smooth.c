/* sf_smooth.c -- the public one-dimension entry points of the smooth
 * mixture transform (docs/flow-math.md sections 4 and 5).  Its mathematics
 * (ramp, prepared parameter block, F, F', F'', the bracketed Newton inverse,
 * the fused adjoint) is in math/sf_math_smooth.h, shared with the GPU
 * kernels; the flow (sf_flow.c) calls it there directly. */
#include "sf_internal.h"

#include <string.h>

/* A prepared copy of a raw parameter block, for the one-dimension entry points. */
static sfm_smooth prepared_copy(const sf_smooth_constants *c, int K, const double *raw, double *block)
{
    sf_assert(K >= 1 && K <= SF_MAX_COMPONENTS);
    memcpy(block, raw, (size_t)(4 * K + 2) * sizeof(double));
    sfm_smooth_prepare(block, K, c->s_min, c->c_max);
    return sfm_smooth_view(block, K, c->beta, c->alpha_min);
}

void sf_smooth_forward(const sf_smooth_constants *c, int K, const double *raw, int circular, double x, double *y,
                       double *dy, double *d2y)
{
    double f, f1, f2, block[4 * SF_MAX_COMPONENTS + 2];
    const sfm_smooth p = prepared_copy(c, K, raw, block);
    sfm_smooth_eval(&p, x, &f, &f1, &f2);
    *y = circular ? sfm_wrap01(f + p.t) : f;
    if (dy) *dy = f1;
    if (d2y) *d2y = f2;
}

int sf_smooth_inverse(const sf_smooth_constants *c, int K, const double *raw, int circular, double y, double *x)
{
    double block[4 * SF_MAX_COMPONENTS + 2];
    const sfm_smooth p = prepared_copy(c, K, raw, block);
    if (circular) y = sfm_wrap01(y - p.t);
    return sfm_smooth_solve(&p, y, x);
}
