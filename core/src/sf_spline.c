/* sf_spline.c -- the rational-quadratic spline (Durkan et al. 2019) on
 * [0, 1] and its circular variant (docs/model-format.md section 7.1): bins
 * and knots from the raw parameters, S, S' and (log S')', the analytic
 * inverse, and products of the parameter derivatives with adjoints.
 *
 * In bin k, with xi = (x - x_k) / W_k, s = H_k / W_k and the knot
 * derivatives d0 = delta_k, d1 = delta_{k+1}:
 *
 *     den = s + (d0 + d1 - 2 s) xi (1 - xi)
 *     S   = y_k + H_k (s xi^2 + d0 xi (1 - xi)) / den
 *     S'  = s^2 (d1 xi^2 + 2 s xi (1 - xi) + d0 (1 - xi)^2) / den^2
 *
 * The reverse pass differentiates S and log S' with respect to the six
 * local quantities (x_k, W_k, y_k, H_k, d0, d1), then through the cumulative
 * sums x_k = W_0 + ... + W_{k-1} (y_k likewise), the softmax of the widths
 * and heights, and the softplus of the knot derivatives. */
#include "sf_internal.h"

#include <math.h>

/* The knots 0 = knot_0 < ... < knot_K = 1 (exactly) of the bin sizes
 * m + (1 - K m) softmax(raw), and each bin's size as the difference of its
 * knots: the same numbers up to rounding, but so S is continuous at every
 * knot to the last bit, S(0) = 0 and S(1) = 1 exactly, and on the circle
 * S'(1) = delta_K = delta_0 = S'(0). */
static void bins(const double *raw, int K, double min, double scale, double *soft, double *size, double *knot)
{
    double mx = raw[0], sum = 0;
    for (int k = 1; k < K; k++) mx = raw[k] > mx ? raw[k] : mx;
    for (int k = 0; k < K; k++) sum += (soft[k] = exp(raw[k] - mx));
    knot[0] = 0;
    for (int k = 0; k < K; k++) {
        soft[k] /= sum;
        knot[k + 1] = knot[k] + (min + scale * soft[k]);
    }
    knot[K] = 1;
    for (int k = 0; k < K; k++) size[k] = knot[k + 1] - knot[k];
}

void sfR_prepare(const sf_spline_constants *c, int K, const double *raw, int circular, sfR_params *p)
{
    sf_assert(K >= 1 && K <= SF_MAX_COMPONENTS);
    p->K = K;
    p->circular = circular;
    p->scale_w = 1 - K * c->min_bin_width;
    p->scale_h = 1 - K * c->min_bin_height;
    bins(raw, K, c->min_bin_width, p->scale_w, p->sw, p->W, p->x);
    bins(raw + K, K, c->min_bin_height, p->scale_h, p->sh, p->H, p->y);
    for (int k = 0; k <= K; k++) p->delta[k] = c->min_derivative + sfU_softplus(raw[2 * K + k]);
    /* The circle matches the derivatives at the ends: d~_K is ignored. */
    if (circular) p->delta[K] = p->delta[0];
    p->t = raw[3 * K + 1];
}

/* The bin k of v among knots[0..K]: knots[k] <= v < knots[k+1], clamped to
 * 0..K-1 (so v = 1 is in the last bin). */
static int find_bin(const double *knots, int K, double v)
{
    int lo = 0, hi = K - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (knots[mid] <= v) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* The quantities of bin k at x that S, S' and their derivatives share. */
typedef struct local {
    int k;
    double W, H, s, d0, d1, xi, om, q, c2, den, num, np;
} local;

static local at_x(const sfR_params *p, double x)
{
    local l;
    l.k = find_bin(p->x, p->K, x);
    l.W = p->W[l.k];
    l.H = p->H[l.k];
    l.s = l.H / l.W;
    l.d0 = p->delta[l.k];
    l.d1 = p->delta[l.k + 1];
    l.xi = (x - p->x[l.k]) / l.W;
    l.om = 1 - l.xi;
    l.q = l.xi * l.om;
    l.c2 = l.d0 + l.d1 - 2 * l.s;
    l.den = l.s + l.c2 * l.q;
    l.num = l.s * l.xi * l.xi + l.d0 * l.q;
    l.np = l.d1 * l.xi * l.xi + 2 * l.s * l.q + l.d0 * l.om * l.om; /* the numerator of S' / s^2 */
    return l;
}

/* d log S' / d xi */
static double dlog_dxi(const local *l)
{
    return 2 * (l->d1 * l->xi + l->s * (1 - 2 * l->xi) - l->d0 * l->om) / l->np - 2 * l->c2 * (1 - 2 * l->xi) / l->den;
}

void sfR_eval(const sfR_params *p, double x, double *y, double *dy, double *dlogdy)
{
    local l = at_x(p, x);
    *y = p->y[l.k] + l.H * l.num / l.den;
    if (dy) *dy = l.s * l.s * l.np / (l.den * l.den);
    if (dlogdy) *dlogdy = dlog_dxi(&l) / l.W;
}

double sfR_solve(const sfR_params *p, double y)
{
    int k = find_bin(p->y, p->K, y);
    double W = p->W[k], H = p->H[k], s = H / W, d0 = p->delta[k], d1 = p->delta[k + 1];
    double dy = y - p->y[k], c2 = d0 + d1 - 2 * s;
    double a = H * (s - d0) + dy * c2, b = H * d0 - dy * c2, c = -s * dy;
    double disc = b * b - 4 * a * c;
    /* The root of a xi^2 + b xi + c in [0, 1], in the form without
     * cancellation (b > 0 wherever c = 0). */
    double xi = c == 0 ? 0 : 2 * c / (-b - sqrt(disc > 0 ? disc : 0));
    xi = xi > 0 ? (xi < 1 ? xi : 1) : 0;
    double x = p->x[k] + xi * W;
    return x < 1 ? x : 1;
}

void sfR_vjp(const sfR_params *p, const double *raw, double x, double a, double b, double *g)
{
    const int K = p->K;
    local l = at_x(p, x);
    const int k = l.k;
    const double den2 = l.den * l.den, S1 = l.s * l.s * l.np / den2;
    /* S and log S' as functions of xi, s (= H / W), d0, d1 and, explicitly, H and y_k. */
    double dS_dxi = l.W * S1;
    double dS_ds = l.H * (l.xi * l.xi * l.den - l.num * (1 - 2 * l.q)) / den2;
    double dS_dd0 = l.H * l.q * (l.den - l.num) / den2;
    double dS_dd1 = -l.H * l.q * l.num / den2;
    double dL_dxi = dlog_dxi(&l);
    double dL_ds = 2 / l.s + 2 * l.q / l.np - 2 * (1 - 2 * l.q) / l.den;
    double dL_dd0 = l.om * l.om / l.np - 2 * l.q / l.den;
    double dL_dd1 = l.xi * l.xi / l.np - 2 * l.q / l.den;
    double G_xi = a * dS_dxi + b * dL_dxi, G_s = a * dS_ds + b * dL_ds;
    /* xi = (x - x_k) / W, s = H / W. */
    double G_xk = -G_xi / l.W;
    double G_W = -(G_xi * l.xi + G_s * l.s) / l.W;
    double G_yk = a;
    double G_H = a * l.num / l.den + G_s / l.W;
    /* x_k = W_0 + ... + W_{k-1}: d/dW_j is G_xk for j < k, G_W for j = k, 0
     * after; then the softmax, d/dw~_j = scale sw_j (gW_j - sum_i sw_i gW_i). */
    double below_w = 0, below_h = 0;
    for (int j = 0; j < k; j++) {
        below_w += p->sw[j];
        below_h += p->sh[j];
    }
    double mean_w = G_xk * below_w + G_W * p->sw[k], mean_h = G_yk * below_h + G_H * p->sh[k];
    for (int j = 0; j < K; j++) {
        double gw = j < k ? G_xk : (j == k ? G_W : 0), gh = j < k ? G_yk : (j == k ? G_H : 0);
        g[j] += p->scale_w * p->sw[j] * (gw - mean_w);
        g[K + j] += p->scale_h * p->sh[j] * (gh - mean_h);
    }
    /* delta = m_d + softplus(d~); on the circle delta_K is delta_0. */
    int k1 = (p->circular && k + 1 == K) ? 0 : k + 1;
    g[2 * K + k] += (a * dS_dd0 + b * dL_dd0) * sfU_sigmoid(raw[2 * K + k]);
    g[2 * K + k1] += (a * dS_dd1 + b * dL_dd1) * sfU_sigmoid(raw[2 * K + k1]);
}

/* ------------------------------------------------- the flow's operations */

int sfR_step(const sfR_params *p, int generative, double in, double *out, double *logdet)
{
    double f, f1;
    if (generative) {
        /* x = S^-1((y - t) mod 1), logdet -log S'(x). */
        *out = sfR_solve(p, p->circular ? sfU_wrap01(in - p->t) : in);
        sfR_eval(p, *out, &f, &f1, NULL);
        *logdet = -log(f1);
        return 0;
    }
    /* x = (S(y) + t) mod 1, logdet log S'(y). */
    sfR_eval(p, in, &f, &f1, NULL);
    *out = p->circular ? sfU_wrap01(f + p->t) : f;
    *logdet = log(f1);
    return 0;
}

void sfR_adjoint(const sfR_params *p, const double *raw, int generative, double in, double out, double abar,
                 double w, double *gin, double *graw)
{
    const double at = generative ? out : in;
    double f, f1, l1, a, b;
    sfR_eval(p, at, &f, &f1, &l1);
    if (generative) {
        /* x = S^-1(y - t), logdet = -log S'(x): dx/dy = 1/S', dx/dtheta =
         * -(dS/dtheta)/S', and d(-log S'(x)) = -(log S')' dx - dlogS'/dtheta. */
        a = -(abar - w * l1) / f1;
        b = -w;
        *gin = -a;
    } else {
        a = abar;
        b = w;
        *gin = abar * f1 + w * l1;
    }
    sfR_vjp(p, raw, at, a, b, graw);
    graw[3 * p->K + 1] = p->circular ? a : 0;
}

/* ------------------------------------------------------------ public API */

void sf_spline_forward(const sf_spline_constants *c, int K, const double *raw, int circular, double x, double *y,
                       double *dy, double *d2y)
{
    sfR_params p;
    double f, f1, l1;
    sfR_prepare(c, K, raw, circular, &p);
    sfR_eval(&p, x, &f, &f1, &l1);
    *y = circular ? sfU_wrap01(f + p.t) : f;
    if (dy) *dy = f1;
    if (d2y) *d2y = f1 * l1;
}

int sf_spline_inverse(const sf_spline_constants *c, int K, const double *raw, int circular, double y, double *x)
{
    sfR_params p;
    sfR_prepare(c, K, raw, circular, &p);
    *x = sfR_solve(&p, circular ? sfU_wrap01(y - p.t) : y);
    return 0;
}
