/* sf_math_spline.h -- the rational-quadratic spline (Durkan et al. 2019) on
 * [0, 1] and its circular variant (docs/model-format.md section 7.1): bins
 * and knots from the raw parameters, S, S' and (log S')', the analytic
 * inverse, the density-pass step and the adjoint.
 *
 * raw holds 3K + 2 values [w~ (K), h~ (K), d~ (K + 1), t~].  Bin sizes are
 * m + (1 - K m) softmax(raw), the knots their running sums with the last one
 * set to exactly 1, each bin's size the difference of its knots (so S is
 * continuous at every knot to the last bit, S(0) = 0, S(1) = 1, and on the
 * circle S'(1) = delta_K = delta_0 = S'(0)).  Nothing per bin is stored: the
 * view keeps the two softmax normalizers and each use recomputes the knots
 * it needs from raw, unless the includer defines SFM_SPLINE_CACHE (the most
 * bins; the C core), when the view also keeps the softmax values (2 x that
 * many reals: too many registers for a kernel, cheaper for a CPU than
 * their exponentials again).  The numbers are the same either way.
 *
 * In bin k, with xi = (x - x_k) / W_k, s = H_k / W_k and the knot
 * derivatives d0 = delta_k, d1 = delta_{k+1}:
 *
 *     den = s + (d0 + d1 - 2 s) xi (1 - xi)
 *     S   = y_k + H_k (s xi^2 + d0 xi (1 - xi)) / den
 *     S'  = s^2 (d1 xi^2 + 2 s xi (1 - xi) + d0 (1 - xi)^2) / den^2
 *
 * The reverse pass differentiates S and log S' with respect to the six
 * local quantities (x_k, W_k, y_k, H_k, d0, d1), then through the running
 * sums, the softmax of the widths and heights and the softplus of the knot
 * derivatives. */
#ifndef SF_MATH_SPLINE_H
#define SF_MATH_SPLINE_H

typedef struct sfm_spline {
    const GLOBAL real *raw;
    int K, circular;
    real min_w, min_h, min_d; /* the model's minimum bin width, height, derivative */
    real scale_w, scale_h;    /* 1 - K m_w, 1 - K m_h */
    real max_w, sum_w;        /* softmax(w~)_j = exp(w~_j - max_w) / sum_w */
    real max_h, sum_h;
    real t;
#ifdef SFM_SPLINE_CACHE
    real soft[2][SFM_SPLINE_CACHE]; /* softmax(w~), softmax(h~) */
#endif
} sfm_spline;

DEVICE sfm_spline sfm_spline_view(const GLOBAL real *raw, int K, int circular, real min_w, real min_h, real min_d)
{
    sfm_spline p;
    p.raw = raw;
    p.K = K;
    p.circular = circular;
    p.min_w = min_w;
    p.min_h = min_h;
    p.min_d = min_d;
    p.scale_w = 1 - K * min_w;
    p.scale_h = 1 - K * min_h;
    for (int part = 0; part < 2; part++) {
        const GLOBAL real *v = raw + part * K;
        real mx = v[0], sum = 0;
        for (int k = 1; k < K; k++) mx = v[k] > mx ? v[k] : mx;
        for (int k = 0; k < K; k++) {
            const real e = exp(v[k] - mx);
            sum += e;
#ifdef SFM_SPLINE_CACHE
            p.soft[part][k] = e;
#endif
        }
#ifdef SFM_SPLINE_CACHE
        for (int k = 0; k < K; k++) p.soft[part][k] /= sum;
#endif
        if (part == 0) {
            p.max_w = mx;
            p.sum_w = sum;
        } else {
            p.max_h = mx;
            p.sum_h = sum;
        }
    }
    p.t = raw[3 * K + 1];
    return p;
}

/* softmax(w~)_j (heights = 0) or softmax(h~)_j (heights = 1). */
DEVICE real sfm_spline_soft(const sfm_spline *p, int heights, int j)
{
#ifdef SFM_SPLINE_CACHE
    return p->soft[heights][j];
#else
    return heights ? exp(p->raw[p->K + j] - p->max_h) / p->sum_h : exp(p->raw[j] - p->max_w) / p->sum_w;
#endif
}

/* The knot derivative delta_k = m_d + softplus(d~_k), k = 0..K; on the circle
 * delta_K is delta_0 (d~_K is ignored). */
DEVICE real sfm_spline_delta(const sfm_spline *p, int k)
{
    if (p->circular && k == p->K) k = 0;
    return p->min_d + sfm_softplus(p->raw[2 * p->K + k]);
}

/* The size of bin k from its left knot (the running sum of the sizes
 * before it); the last bin ends at 1 exactly. */
DEVICE real sfm_spline_next_knot(const sfm_spline *p, int heights, int k, real knot)
{
    if (k + 1 == p->K) return 1;
    const real m = heights ? p->min_h : p->min_w, scale = heights ? p->scale_h : p->scale_w;
    return knot + (m + scale * sfm_spline_soft(p, heights, k));
}

/* The bin of v among the knots 0 = knot_0 < ... < knot_K = 1:
 * knot_k <= v < knot_{k+1}, clamped to 0..K-1 (v = 1 is in the last bin);
 * its left knot and size into *left, *size. */
DEVICE int sfm_spline_find(const sfm_spline *p, int heights, real v, real *left, real *size)
{
    real knot = 0;
    int k = 0;
    for (;;) {
        const real next = sfm_spline_next_knot(p, heights, k, knot);
        if (k + 1 == p->K || !(next <= v)) {
            *left = knot;
            *size = next - knot;
            return k;
        }
        knot = next;
        k++;
    }
}

/* Left knot and size of bin k. */
DEVICE real sfm_spline_knot(const sfm_spline *p, int heights, int k, real *size)
{
    real knot = 0;
    for (int j = 0; j < k; j++) knot = sfm_spline_next_knot(p, heights, j, knot);
    *size = sfm_spline_next_knot(p, heights, k, knot) - knot;
    return knot;
}

/* The quantities of bin k at x that S, S' and their derivatives share. */
typedef struct sfm_spline_bin {
    int k;
    real xk, yk, W, H, s, d0, d1, xi, om, q, c2, den, num, np;
} sfm_spline_bin;

DEVICE sfm_spline_bin sfm_spline_bin_at(const sfm_spline *p, real x)
{
    sfm_spline_bin l;
    l.k = sfm_spline_find(p, 0, x, &l.xk, &l.W);
    l.yk = sfm_spline_knot(p, 1, l.k, &l.H);
    l.s = l.H / l.W;
    l.d0 = sfm_spline_delta(p, l.k);
    l.d1 = sfm_spline_delta(p, l.k + 1);
    l.xi = (x - l.xk) / l.W;
    l.om = 1 - l.xi;
    l.q = l.xi * l.om;
    l.c2 = l.d0 + l.d1 - 2 * l.s;
    l.den = l.s + l.c2 * l.q;
    l.num = l.s * l.xi * l.xi + l.d0 * l.q;
    l.np = l.d1 * l.xi * l.xi + 2 * l.s * l.q + l.d0 * l.om * l.om; /* the numerator of S' / s^2 */
    return l;
}

/* d log S' / d xi */
DEVICE real sfm_spline_dlog_dxi(const sfm_spline_bin *l)
{
    return 2 * (l->d1 * l->xi + l->s * (1 - 2 * l->xi) - l->d0 * l->om) / l->np -
           2 * l->c2 * (1 - 2 * l->xi) / l->den;
}

/* S(x), S'(x) and (dlogdy non-null) (log S')'(x) = S''/S' of the interval spline. */
DEVICE void sfm_spline_eval(const sfm_spline *p, real x, real *y, real *dy, real *dlogdy)
{
    const sfm_spline_bin l = sfm_spline_bin_at(p, x);
    *y = l.yk + l.H * l.num / l.den;
    *dy = l.s * l.s * l.np / (l.den * l.den);
    if (dlogdy) *dlogdy = sfm_spline_dlog_dxi(&l) / l.W;
}

/* S^-1(y) on [0, 1], analytic. */
DEVICE real sfm_spline_solve(const sfm_spline *p, real y)
{
    real yk, H, W;
    const int k = sfm_spline_find(p, 1, y, &yk, &H);
    const real xk = sfm_spline_knot(p, 0, k, &W);
    const real s = H / W, d0 = sfm_spline_delta(p, k), d1 = sfm_spline_delta(p, k + 1);
    const real dy = y - yk, c2 = d0 + d1 - 2 * s;
    const real a = H * (s - d0) + dy * c2, b = H * d0 - dy * c2, c = -s * dy;
    const real disc = b * b - 4 * a * c;
    /* The root of a xi^2 + b xi + c in [0, 1], in the form without
     * cancellation (b > 0 wherever c = 0). */
    real xi = c == 0 ? 0 : 2 * c / (-b - sqrt(disc > 0 ? disc : 0));
    xi = xi > 0 ? (xi < 1 ? xi : 1) : 0;
    const real x = xk + xi * W;
    return x < 1 ? x : 1;
}

/* Add to g (the 3K + 1 raw values before t~) a dS/draw + b dlogS'/draw at x. */
DEVICE void sfm_spline_vjp(const sfm_spline *p, real x, real a, real b, GLOBAL real *g)
{
    const int K = p->K;
    const sfm_spline_bin l = sfm_spline_bin_at(p, x);
    const int k = l.k;
    const real den2 = l.den * l.den, S1 = l.s * l.s * l.np / den2;
    /* S and log S' as functions of xi, s (= H / W), d0, d1 and, explicitly, H and y_k. */
    const real dS_dxi = l.W * S1;
    const real dS_ds = l.H * (l.xi * l.xi * l.den - l.num * (1 - 2 * l.q)) / den2;
    const real dS_dd0 = l.H * l.q * (l.den - l.num) / den2;
    const real dS_dd1 = -l.H * l.q * l.num / den2;
    const real dL_dxi = sfm_spline_dlog_dxi(&l);
    const real dL_ds = 2 / l.s + 2 * l.q / l.np - 2 * (1 - 2 * l.q) / l.den;
    const real dL_dd0 = l.om * l.om / l.np - 2 * l.q / l.den;
    const real dL_dd1 = l.xi * l.xi / l.np - 2 * l.q / l.den;
    const real G_xi = a * dS_dxi + b * dL_dxi, G_s = a * dS_ds + b * dL_ds;
    /* xi = (x - x_k) / W, s = H / W. */
    const real G_xk = -G_xi / l.W;
    const real G_W = -(G_xi * l.xi + G_s * l.s) / l.W;
    const real G_yk = a;
    const real G_H = a * l.num / l.den + G_s / l.W;
    /* x_k = W_0 + ... + W_{k-1}: d/dW_j is G_xk for j < k, G_W for j = k, 0
     * after; then the softmax, d/dw~_j = scale sw_j (gW_j - sum_i sw_i gW_i). */
    real below_w = 0, below_h = 0;
    for (int j = 0; j < k; j++) {
        below_w += sfm_spline_soft(p, 0, j);
        below_h += sfm_spline_soft(p, 1, j);
    }
    const real mean_w = G_xk * below_w + G_W * sfm_spline_soft(p, 0, k);
    const real mean_h = G_yk * below_h + G_H * sfm_spline_soft(p, 1, k);
    for (int j = 0; j < K; j++) {
        const real gw = j < k ? G_xk : (j == k ? G_W : 0), gh = j < k ? G_yk : (j == k ? G_H : 0);
        g[j] += p->scale_w * sfm_spline_soft(p, 0, j) * (gw - mean_w);
        g[K + j] += p->scale_h * sfm_spline_soft(p, 1, j) * (gh - mean_h);
    }
    /* delta = m_d + softplus(d~); on the circle delta_K is delta_0. */
    const int k1 = (p->circular && k + 1 == K) ? 0 : k + 1;
    g[2 * K + k] += (a * dS_dd0 + b * dL_dd0) * sfm_sigmoid(p->raw[2 * K + k]);
    g[2 * K + k1] += (a * dS_dd1 + b * dL_dd1) * sfm_sigmoid(p->raw[2 * K + k1]);
}

/* The density pass on one dimension (see sfm_smooth_step); always analytic: 0. */
DEVICE int sfm_spline_step(const sfm_spline *p, int generative, real in, real *out, real *logdet)
{
    real f, f1;
    if (generative) {
        /* x = S^-1((y - t) mod 1), logdet -log S'(x). */
        *out = sfm_spline_solve(p, p->circular ? sfm_wrap01(in - p->t) : in);
        sfm_spline_eval(p, *out, &f, &f1, 0);
        *logdet = -log(f1);
        return 0;
    }
    /* x = (S(y) + t) mod 1, logdet log S'(y). */
    sfm_spline_eval(p, in, &f, &f1, 0);
    *out = p->circular ? sfm_wrap01(f + p->t) : f;
    *logdet = log(f1);
    return 0;
}

/* The adjoint of one dimension (see sfm_smooth_adjoint): returns d(loss)/d in,
 * adds to graw (3K + 2 values, zeroed by the caller) and sets its t~ slot. */
DEVICE real sfm_spline_adjoint(const sfm_spline *p, int generative, real in, real out, real abar, real wt,
                               GLOBAL real *graw)
{
    const real at = generative ? out : in;
    real f, f1, l1, a, b, gin;
    sfm_spline_eval(p, at, &f, &f1, &l1);
    if (generative) {
        /* x = S^-1(y - t), logdet = -log S'(x): dx/dy = 1/S', dx/dtheta =
         * -(dS/dtheta)/S', and d(-log S'(x)) = -(log S')' dx - dlogS'/dtheta. */
        a = -(abar - wt * l1) / f1;
        b = -wt;
        gin = -a;
    } else {
        a = abar;
        b = wt;
        gin = abar * f1 + wt * l1;
    }
    sfm_spline_vjp(p, at, a, b, graw);
    graw[3 * p->K + 1] = p->circular ? a : 0;
    return gin;
}

#endif /* SF_MATH_SPLINE_H */
