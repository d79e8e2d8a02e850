/* sf_smooth.c -- the C-infinity smooth mixture transform on [0, 1] and on
 * the circle (flow-math section 4), its inverse by bracketed Newton
 * (section 5), and products of its parameter derivatives with adjoints. */
#include "sf_internal.h"

#include <float.h>
#include <math.h>

/* |L| beyond which the logistic is 0 or 1 to double precision and every
 * derivative term underflows: the component is saturated. */
#define SF_SATURATE 700.0
#define SF_MAX_NEWTON 100

static double sigmoid(double v) { return v >= 0 ? 1.0 / (1.0 + exp(-v)) : exp(v) / (1.0 + exp(v)); }

/* Exact softplus, log(1 + e^v), without cancellation or overflow. */
static double softplus(double v) { return (v > 0 ? v : 0.0) + log1p(exp(-fabs(v))); }

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
    double ph = pow(h, -bi), pq = pow(1 - h, -bi);
    double g = pq - ph;
    double L = alpha * g;
    if (fabs(L) > SF_SATURATE) { r.s0 = L > 0 ? 1 : 0; return r; }
    double e = exp(-fabs(L));
    r.s0 = L >= 0 ? 1 / (1 + e) : e / (1 + e);
    double one_minus = L >= 0 ? e / (1 + e) : 1 / (1 + e);
    double q = e / ((1 + e) * (1 + e)); /* sigma (1 - sigma) */
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

/* The constrained parameters of component k. */
typedef struct component {
    double w, b, s, alpha;
} component;

/* Softmax normalizer of the weights: max and log-sum. */
static void weight_norm(int K, const double *raw, double *wmax, double *wsum)
{
    double mx = raw[0];
    for (int k = 1; k < K; k++) mx = raw[k] > mx ? raw[k] : mx;
    double sum = 0;
    for (int k = 0; k < K; k++) sum += exp(raw[k] - mx);
    *wmax = mx;
    *wsum = sum;
}

static component get_component(const sf_smooth_constants *c, int K, const double *raw, int k, double wmax,
                               double wsum)
{
    component p;
    p.w = exp(raw[k] - wmax) / wsum;
    p.b = sigmoid(raw[K + k]);
    p.s = c->s_min + (1 - c->s_min) * sigmoid(raw[2 * K + k]);
    p.alpha = c->alpha_min + softplus(raw[3 * K + k]);
    return p;
}

static double mixing(const sf_smooth_constants *c, int K, const double *raw)
{
    return c->c_max * sigmoid(raw[4 * K]);
}

void sfT_eval(const sf_smooth_constants *c, int K, const double *raw, double x, double *y, double *dy, double *d2y)
{
    double wmax, wsum, cc = mixing(c, K, raw);
    weight_norm(K, raw, &wmax, &wsum);
    double f = 0, f1 = 0, f2 = 0;
    for (int k = 0; k < K; k++) {
        component p = get_component(c, K, raw, k, wmax, wsum);
        ramp r = eval_ramp(p.alpha, c->beta, (x - p.b * (1 - p.s)) / p.s);
        f += p.w * r.s0;
        f1 += p.w * r.s1 / p.s;
        f2 += p.w * r.s2 / (p.s * p.s);
    }
    /* Every term of F' is positive: no cancellation in log F'. */
    *y = (1 - cc) * x + cc * f;
    if (dy) *dy = (1 - cc) + cc * f1;
    if (d2y) *d2y = cc * f2;
}

void sfT_vjp(const sf_smooth_constants *c, int K, const double *raw, double x, double a, double b, double *g)
{
    double wmax, wsum, cc = mixing(c, K, raw);
    weight_norm(K, raw, &wmax, &wsum);
    double S0 = 0, S1 = 0, gw_mean = 0;
    for (int k = 0; k < K; k++) {
        component p = get_component(c, K, raw, k, wmax, wsum);
        double h = (x - p.b * (1 - p.s)) / p.s;
        ramp r = eval_ramp(p.alpha, c->beta, h);
        S0 += p.w * r.s0;
        S1 += p.w * r.s1 / p.s;
        /* Softmax: d/dw~_k = w_k (gw_k - sum_j w_j gw_j); the sum is
         * subtracted after the loop. */
        double gw = cc * (a * r.s0 + b * r.s1 / p.s);
        g[k] += p.w * gw;
        gw_mean += p.w * gw;
        double dh_db = (p.s - 1) / p.s;
        double dh_ds = -(x - p.b) / (p.s * p.s);
        double gh_F = a * cc * p.w * r.s1;             /* a dF/dh */
        double gh_F1 = b * cc * p.w * r.s2 / p.s;      /* b dF'/dh */
        double sb = sigmoid(raw[K + k]), ss = sigmoid(raw[2 * K + k]);
        g[K + k] += (gh_F + gh_F1) * dh_db * sb * (1 - sb);
        double gs = (gh_F + gh_F1) * dh_ds - b * cc * p.w * r.s1 / (p.s * p.s);
        g[2 * K + k] += gs * (1 - c->s_min) * ss * (1 - ss);
        double galpha = cc * p.w * (a * r.a0 + b * r.a1 / p.s);
        g[3 * K + k] += galpha * sigmoid(raw[3 * K + k]);
    }
    for (int k = 0; k < K; k++) g[k] -= exp(raw[k] - wmax) / wsum * gw_mean;
    double gc = a * (S0 - x) + b * (S1 - 1);
    double sc = sigmoid(raw[4 * K]);
    g[4 * K] += gc * c->c_max * sc * (1 - sc);
}

int sfT_solve(const sf_smooth_constants *c, int K, const double *raw, double y, double *x)
{
    if (!(y > 0)) { *x = 0; return 0; }
    if (!(y < 1)) { *x = 1; return 0; }
    /* Newton inside a shrinking bracket [lo, hi]; a bisection step whenever
     * Newton would leave the bracket or fails to halve the previous step
     * (so the bracket shrinks at least geometrically). */
    double lo = 0, hi = 1, xc = y, step = 1, prev_step = 1;
    for (int it = 1; it <= SF_MAX_NEWTON; it++) {
        double f, f1;
        sfT_eval(c, K, raw, xc, &f, &f1, NULL);
        double r = f - y;
        if (r == 0) { *x = xc; return it; }
        if (r > 0) hi = xc; else lo = xc;
        double xn = xc - r / f1;
        if (!(xn > lo && xn < hi) || fabs(2 * r) > fabs(prev_step * f1)) {
            prev_step = step;
            step = 0.5 * (hi - lo);
            xn = lo + step;
        } else {
            prev_step = step;
            step = r / f1;
        }
        double moved = fabs(xn - xc);
        xc = xn;
        if (moved <= 2 * DBL_EPSILON * xc || hi - lo <= 2 * DBL_EPSILON * hi) { *x = xc; return it; }
    }
    *x = xc;
    return -1;
}

/* ------------------------------------------------------------ public API */

static double wrap01(double v) { return v - floor(v); }

void sf_smooth_forward(const sf_smooth_constants *c, int K, const double *raw, int circular, double x, double *y,
                       double *dy, double *d2y)
{
    double f, f1, f2;
    sfT_eval(c, K, raw, x, &f, &f1, &f2);
    *y = circular ? wrap01(f + raw[4 * K + 1]) : f;
    if (dy) *dy = f1;
    if (d2y) *d2y = f2;
}

int sf_smooth_inverse(const sf_smooth_constants *c, int K, const double *raw, int circular, double y, double *x)
{
    if (circular) y = wrap01(y - raw[4 * K + 1]);
    return sfT_solve(c, K, raw, y, x);
}
