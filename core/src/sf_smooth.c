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

void sfT_prepare(const sf_smooth_constants *c, int K, const double *raw, sfT_params *p)
{
    sf_assert(K <= SF_MAX_COMPONENTS);
    double mx = raw[0], sum = 0;
    for (int k = 1; k < K; k++) mx = raw[k] > mx ? raw[k] : mx;
    for (int k = 0; k < K; k++) sum += (p->w[k] = exp(raw[k] - mx));
    for (int k = 0; k < K; k++) {
        p->w[k] /= sum;
        p->b[k] = sfU_sigmoid(raw[K + k]);
        p->s[k] = c->s_min + (1 - c->s_min) * sfU_sigmoid(raw[2 * K + k]);
        p->alpha[k] = c->alpha_min + sfU_softplus(raw[3 * K + k]);
        p->start[k] = p->b[k] * (1 - p->s[k]);
    }
    p->K = K;
    p->beta = c->beta;
    p->c = c->c_max * sfU_sigmoid(raw[4 * K]);
    p->t = raw[4 * K + 1];
}

void sfT_eval(const sfT_params *p, double x, double *y, double *dy, double *d2y)
{
    double f = 0, f1 = 0, f2 = 0;
    for (int k = 0; k < p->K; k++) {
        double inv_s = 1 / p->s[k];
        ramp r = eval_ramp(p->alpha[k], p->beta, (x - p->start[k]) * inv_s);
        f += p->w[k] * r.s0;
        f1 += p->w[k] * r.s1 * inv_s;
        f2 += p->w[k] * r.s2 * inv_s * inv_s;
    }
    /* Every term of F' is positive: no cancellation in log F'. */
    *y = (1 - p->c) * x + p->c * f;
    if (dy) *dy = (1 - p->c) + p->c * f1;
    if (d2y) *d2y = p->c * f2;
}

void sfT_vjp(const sfT_params *p, const sf_smooth_constants *c, const double *raw, double x, double a, double b,
             double *g)
{
    const int K = p->K;
    const double cc = p->c;
    double S0 = 0, S1 = 0, gw_mean = 0;
    for (int k = 0; k < K; k++) {
        const double w = p->w[k], s = p->s[k];
        double h = (x - p->start[k]) / s;
        ramp r = eval_ramp(p->alpha[k], p->beta, h);
        S0 += w * r.s0;
        S1 += w * r.s1 / s;
        /* Softmax: d/dw~_k = w_k (gw_k - sum_j w_j gw_j); the sum is
         * subtracted after the loop. */
        double gw = cc * (a * r.s0 + b * r.s1 / s);
        g[k] += w * gw;
        gw_mean += w * gw;
        double dh_db = (s - 1) / s;
        double dh_ds = -(x - p->b[k]) / (s * s);
        double gh = a * cc * w * r.s1 + b * cc * w * r.s2 / s; /* a dF/dh + b dF'/dh */
        double sb = p->b[k], ss = (s - c->s_min) / (1 - c->s_min);
        g[K + k] += gh * dh_db * sb * (1 - sb);
        double gs = gh * dh_ds - b * cc * w * r.s1 / (s * s);
        g[2 * K + k] += gs * (1 - c->s_min) * ss * (1 - ss);
        double galpha = cc * w * (a * r.a0 + b * r.a1 / s);
        g[3 * K + k] += galpha * sfU_sigmoid(raw[3 * K + k]);
    }
    for (int k = 0; k < K; k++) g[k] -= p->w[k] * gw_mean;
    double gc = a * (S0 - x) + b * (S1 - 1);
    double sc = cc / c->c_max;
    g[4 * K] += gc * c->c_max * sc * (1 - sc);
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

void sfT_adjoint(const sfT_params *p, const sf_smooth_constants *c, const double *raw, int circular, int generative,
                 double in, double out, double abar, double w, double *gin, double *graw)
{
    /* The transform is evaluated at its input: x = out for a generative
     * layer (inverted), y = in for a density layer. */
    const double at = generative ? out : in;
    double f, f1, f2, a, bc, gt;
    sfT_eval(p, at, &f, &f1, &f2);
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
    sfT_vjp(p, c, raw, at, a, bc, graw);
    graw[4 * p->K + 1] = circular ? gt : 0;
}

/* ------------------------------------------------------------ public API */

void sf_smooth_forward(const sf_smooth_constants *c, int K, const double *raw, int circular, double x, double *y,
                       double *dy, double *d2y)
{
    double f, f1, f2;
    sfT_params p;
    sfT_prepare(c, K, raw, &p);
    sfT_eval(&p, x, &f, &f1, &f2);
    *y = circular ? sfU_wrap01(f + raw[4 * K + 1]) : f;
    if (dy) *dy = f1;
    if (d2y) *d2y = f2;
}

int sf_smooth_inverse(const sf_smooth_constants *c, int K, const double *raw, int circular, double y, double *x)
{
    sfT_params p;
    sfT_prepare(c, K, raw, &p);
    if (circular) y = sfU_wrap01(y - p.t);
    return sfT_solve(&p, y, x);
}
