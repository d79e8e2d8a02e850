/* sf_spline.c -- the public one-dimension entry points of the
 * rational-quadratic spline (docs/model-format.md section 7.1).  Its
 * mathematics (bins and knots, S, S', (log S')', the analytic inverse, the
 * adjoint) is in math/sf_math_spline.h, shared with the GPU kernels; the
 * flow (sf_flow.c) calls it there directly. */
#include "sf_internal.h"

static sfm_spline view(const sf_spline_constants *c, int K, const double *raw, int circular)
{
    sf_assert(K >= 1 && K <= SF_MAX_COMPONENTS);
    return sfm_spline_view(raw, K, circular, c->min_bin_width, c->min_bin_height, c->min_derivative);
}

void sf_spline_forward(const sf_spline_constants *c, int K, const double *raw, int circular, double x, double *y,
                       double *dy, double *d2y)
{
    const sfm_spline p = view(c, K, raw, circular);
    double f, f1, l1;
    sfm_spline_eval(&p, x, &f, &f1, &l1);
    *y = circular ? sfm_wrap01(f + p.t) : f;
    if (dy) *dy = f1;
    if (d2y) *d2y = f1 * l1;
}

int sf_spline_inverse(const sf_spline_constants *c, int K, const double *raw, int circular, double y, double *x)
{
    const sfm_spline p = view(c, K, raw, circular);
    *x = sfm_spline_solve(&p, circular ? sfm_wrap01(y - p.t) : y);
    return 0;
}
