/* sf_smooth.c -- the C-infinity smooth mixture transform on [0, 1] and on
 * the circle (flow-math section 4), its inverse by bracketed Newton
 * (section 5), and products of its parameter derivatives with adjoints. */
#include "sf_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* |L| beyond which the logistic is 0 or 1 to double precision and every
 * derivative term underflows: the component is saturated. */
#define SF_SATURATE 700.0
#define SF_MAX_NEWTON 100

/* x^-n for a small positive integer n, without pow(). */
static double inverse_power(double x, int n)
{
    double r = 1 / x;
    double out = r;
    for (int i = 1; i < n; i++) out *= r;
    return out;
}

/* One smooth ramp sigma_alpha(h) and what its users need. */
typedef struct ramp {
    double s0, s1, s2;   /* sigma, d sigma/dh, d2 sigma/dh2 */
    double a0, a1;       /* d sigma/d alpha, d sigma'/d alpha */
} ramp;

static ramp eval_ramp(double alpha, int beta, double h)
{
    ramp r = {0, 0, 0, 0, 0};
    if (h <= 0) return r;
    if (h >= 1) { r.s0 = 1; return r; }
    double bi = (double)beta;
    double ph = inverse_power(h, beta), pq = inverse_power(1 - h, beta);
    double g = pq - ph;
    double L = alpha * g;
    if (fabs(L) > SF_SATURATE) { r.s0 = L > 0 ? 1 : 0; return r; }
    double e = exp(-fabs(L));
    double inv = 1 / (1 + e);
    r.s0 = L >= 0 ? inv : e * inv;
    double one_minus = L >= 0 ? e * inv : inv;
    double q = e * inv * inv; /* sigma (1 - sigma) */
    double gp = bi * (pq / (1 - h) + ph / h);
    double gpp = bi * (bi + 1) * (pq / ((1 - h) * (1 - h)) - ph / (h * h));
    double L1 = alpha * gp, L2 = alpha * gpp;
    double skew = one_minus - r.s0; /* 1 - 2 sigma */
    r.s1 = q * L1;
    r.s2 = q * (skew * L1 * L1 + L2);
    r.a0 = q * g;
    r.a1 = q * gp * (skew * L + 1);
    return r;
}

void sfT_prepare_block(const sf_smooth_constants *c, int K, double *block)
{
    sf_assert(K <= SF_MAX_COMPONENTS);
    double *w = block, *b = block + K, *s = block + 2 * K, *sp = block + 3 * K;
    double mx = w[0], sum = 0;
    for (int k = 1; k < K; k++) mx = w[k] > mx ? w[k] : mx;
    for (int k = 0; k < K; k++) sum += (w[k] = exp(w[k] - mx));
    for (int k = 0; k < K; k++) {
        w[k] /= sum;
        b[k] = sfU_sigmoid(b[k]);
        s[k] = c->s_min + (1 - c->s_min) * sfU_sigmoid(s[k]);
        sp[k] = sfU_softplus(sp[k]);
    }
    block[4 * K] = c->c_max * sfU_sigmoid(block[4 * K]);
}

void sfT_view(const sf_smooth_constants *c, int K, const double *block, sfT_params *p)
{
    p->K = K;
    p->beta = c->beta;
    p->alpha_min = c->alpha_min;
    p->w = block;
    p->b = block + K;
    p->s = block + 2 * K;
    p->sp = block + 3 * K;
    p->c = block[4 * K];
    p->t = block[4 * K + 1];
}

/* Component k's ramp argument h = (x - b (1 - s)) / s and 1 / s. */
static double ramp_argument(const sfT_params *p, int k, double x, double *inv_s)
{
    *inv_s = 1 / p->s[k];
    return (x - p->b[k] * (1 - p->s[k])) * *inv_s;
}

void sfT_eval(const sfT_params *p, double x, double *y, double *dy, double *d2y)
{
    double f = 0, f1 = 0, f2 = 0;
    for (int k = 0; k < p->K; k++) {
        double inv_s;
        const double h = ramp_argument(p, k, x, &inv_s);
        ramp r = eval_ramp(p->alpha_min + p->sp[k], p->beta, h);
        f += p->w[k] * r.s0;
        f1 += p->w[k] * r.s1 * inv_s;
        f2 += p->w[k] * r.s2 * inv_s * inv_s;
    }
    /* Every term of F' is positive: no cancellation in log F'. */
    *y = (1 - p->c) * x + p->c * f;
    if (dy) *dy = (1 - p->c) + p->c * f1;
    if (d2y) *d2y = p->c * f2;
}

int sfT_solve(const sfT_params *p, double y, double *x)
{
    if (!(y > 0)) { *x = 0; return 0; }
    if (!(y < 1)) { *x = 1; return 0; }
    /* Newton inside a shrinking bracket [lo, hi]; a bisection step whenever
     * Newton would leave the bracket or fails to halve the previous step
     * (so the bracket shrinks at least geometrically). */
    double lo = 0, hi = 1, xc = y, step = 1, prev_step = 1;
    for (int it = 1; it <= SF_MAX_NEWTON; it++) {
        double f, f1;
        sfT_eval(p, xc, &f, &f1, NULL);
        double r = f - y;
        if (r == 0) { *x = xc; return it; }
        if (r > 0) hi = xc; else lo = xc;
        double newton = r / f1;
        /* Converged: the Newton correction is below the resolution of x
         * (checked first, since x - newton may round onto the bracket). */
        if (fabs(newton) <= DBL_EPSILON * xc) { *x = xc - newton; return it; }
        double xn = xc - newton;
        if (!(xn > lo && xn < hi) || fabs(2 * r) > fabs(prev_step * f1)) {
            prev_step = step;
            step = 0.5 * (hi - lo);
            xn = lo + step;
        } else {
            prev_step = step;
            step = newton;
        }
        double moved = fabs(xn - xc);
        xc = xn;
        if (moved <= 2 * DBL_EPSILON * xc || hi - lo <= 2 * DBL_EPSILON * hi) { *x = xc; return it; }
    }
    *x = xc;
    return -1;
}

/* ------------------------------------------------- the flow's operations */

int sfT_step(const sfT_params *p, int circular, int generative, double in, double *out, double *logdet)
{
    double f, f1;
    if (generative) {
        /* x = F^-1((y - t) mod 1), logdet -log F'(x). */
        int it = sfT_solve(p, circular ? sfU_wrap01(in - p->t) : in, out);
        if (it < 0) return -1;
        sfT_eval(p, *out, &f, &f1, NULL);
        *logdet = -log(f1);
        return it;
    }
    /* x = (F(y) + t) mod 1, logdet log F'(y). */
    sfT_eval(p, in, &f, &f1, NULL);
    *out = circular ? sfU_wrap01(f + p->t) : f;
    *logdet = log(f1);
    return 0;
}

void sfT_adjoint(const sfT_params *p, const sf_smooth_constants *c, int circular, int generative, double in,
                 double out, double abar, double w, double *gin, double *graw)
{
    /* The transform is evaluated at its input: x = out for a generative
     * layer (inverted), y = in for a density layer.  Its K ramps are
     * evaluated once and serve F', F'' and the parameter derivatives. */
    const int K = p->K;
    const double x = generative ? out : in, cc = p->c;
    ramp r[SF_MAX_COMPONENTS];
    double inv_s[SF_MAX_COMPONENTS];
    double F = 0, F1 = 0, F2 = 0;
    for (int k = 0; k < K; k++) {
        const double h = ramp_argument(p, k, x, &inv_s[k]);
        r[k] = eval_ramp(p->alpha_min + p->sp[k], p->beta, h);
        F += p->w[k] * r[k].s0;
        F1 += p->w[k] * r[k].s1 * inv_s[k];
        F2 += p->w[k] * r[k].s2 * inv_s[k] * inv_s[k];
    }
    const double f1 = (1 - cc) + cc * F1, f2 = cc * F2;
    double a, bc, gt;
    if (generative) {
        /* x = F^-1(y - t), logdet -log F'(x): inverse function theorem. */
        a = -abar / f1 + w * f2 / (f1 * f1);
        bc = -w / f1;
        *gin = -a;
        gt = a;
    } else {
        /* x = F(y) + t, logdet log F'(y). */
        a = abar;
        bc = w / f1;
        *gin = abar * f1 + w * f2 / f1;
        gt = abar;
    }
    /* graw += a dF/draw + bc dF'/draw, through the constraining maps of
     * sfT_prepare_block (their derivatives from the prepared values). */
    double gw_mean = 0;
    for (int k = 0; k < K; k++) {
        const double wk = p->w[k], s = p->s[k], is = inv_s[k], sb = p->b[k];
        /* Softmax: d/dw~_k = w_k (gw_k - sum_j w_j gw_j); the sum is
         * subtracted after the loop. */
        const double gw = cc * (a * r[k].s0 + bc * r[k].s1 * is);
        graw[k] += wk * gw;
        gw_mean += wk * gw;
        const double dh_db = (s - 1) * is;
        const double dh_ds = -(x - sb) * is * is;
        const double gh = a * cc * wk * r[k].s1 + bc * cc * wk * r[k].s2 * is; /* a dF/dh + bc dF'/dh */
        const double ss = (s - c->s_min) / (1 - c->s_min);
        graw[K + k] += gh * dh_db * sb * (1 - sb);
        const double gs = gh * dh_ds - bc * cc * wk * r[k].s1 * is * is;
        graw[2 * K + k] += gs * (1 - c->s_min) * ss * (1 - ss);
        const double galpha = cc * wk * (a * r[k].a0 + bc * r[k].a1 * is);
        /* softplus'(a~) = sigmoid(a~) = 1 - exp(-softplus(a~)) */
        graw[3 * K + k] += galpha * -expm1(-p->sp[k]);
    }
    for (int k = 0; k < K; k++) graw[k] -= p->w[k] * gw_mean;
    const double gc = a * (F - x) + bc * (F1 - 1);
    const double sc = cc / c->c_max;
    graw[4 * K] += gc * c->c_max * sc * (1 - sc);
    graw[4 * K + 1] = circular ? gt : 0;
}

/* ------------------------------------------------------------ public API */

/* A prepared copy of a raw parameter block, for the one-dimension entry points. */
static void prepared_copy(const sf_smooth_constants *c, int K, const double *raw, double *block, sfT_params *p)
{
    memcpy(block, raw, (size_t)(4 * K + 2) * sizeof(double));
    sfT_prepare_block(c, K, block);
    sfT_view(c, K, block, p);
}

void sf_smooth_forward(const sf_smooth_constants *c, int K, const double *raw, int circular, double x, double *y,
                       double *dy, double *d2y)
{
    double f, f1, f2, block[4 * SF_MAX_COMPONENTS + 2];
    sfT_params p;
    prepared_copy(c, K, raw, block, &p);
    sfT_eval(&p, x, &f, &f1, &f2);
    *y = circular ? sfU_wrap01(f + p.t) : f;
    if (dy) *dy = f1;
    if (d2y) *d2y = f2;
}

int sf_smooth_inverse(const sf_smooth_constants *c, int K, const double *raw, int circular, double y, double *x)
{
    double block[4 * SF_MAX_COMPONENTS + 2];
    sfT_params p;
    prepared_copy(c, K, raw, block, &p);
    if (circular) y = sfU_wrap01(y - p.t);
    return sfT_solve(&p, y, x);
}
