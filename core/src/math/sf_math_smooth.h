/* sf_math_smooth.h -- the C-infinity smooth mixture transform on [0, 1] and
 * on the circle (docs/flow-math.md section 4): the ramp, the parameter
 * constraints, the mixture F, F', F'', its inverse by bracketed Newton
 * (section 5), the density-pass step and the fused adjoint.
 *
 * One dimension's parameters are a block of 4K + 2 reals, the conditioner's
 * raw [w~ (K), b~ (K), s~ (K), a~ (K), c~, t~].  sfm_smooth_prepare turns it
 * into its constrained values once, in place:
 *     [w = softmax(w~), b = sigmoid(b~), s = s_min + (1 - s_min) sigmoid(s~),
 *      softplus(a~), c = c_max sigmoid(c~), t~]
 * and every later use (the density pass, each Newton step, the reverse pass)
 * reads the prepared block through a view, so the transcendental functions
 * of the parameters are evaluated once per dimension and evaluation.  The
 * block lives in global memory on a GPU (the conditioner's output). */
#ifndef SF_MATH_SMOOTH_H
#define SF_MATH_SMOOTH_H

/* One smooth ramp sigma_alpha(h) and what its users need. */
typedef struct sfm_ramp {
    real s0, s1, s2; /* sigma, d sigma/dh, d2 sigma/dh2 */
    real a0, a1;     /* d sigma/d alpha, d sigma'/d alpha */
} sfm_ramp;

/* A view of one prepared block. */
typedef struct sfm_smooth {
    const GLOBAL real *block;
    int K, beta;
    real alpha_min, c, t; /* alpha_k = alpha_min + softplus(a~_k) */
} sfm_smooth;

/* r^n for an integer n in 1..8 (the model's beta), without pow() and
 * without a loop, so it vectorizes inside a loop over components. */
DEVICE real sfm_small_power(real r, int n)
{
    const real r2 = r * r, r4 = r2 * r2;
    real out = (n & 1) ? r : SFM_C(1.0);
    out = (n & 2) ? out * r2 : out;
    out = (n & 4) ? out * r4 : out;
    return (n & 8) ? out * (r4 * r4) : out;
}

/* sigma_alpha(h) = logistic(alpha ((1 - h)^-beta - h^-beta)) on (0, 1), 0 below, 1 above.
 * Branch-free, so a mixture's K components run as one vector (SFM_SIMD): every
 * lane computes at a safe h, then the edges and the saturated lanes select
 * their exact constants.  A NaN h or alpha still gives a NaN sigma. */
DEVICE sfm_ramp sfm_smooth_ramp(real alpha, int beta, real h)
{
    const int inside = (h > 0) & (h < 1);
    const real hc = inside ? h : SFM_C(0.5);
    const real bi = (real)beta;
    /* two divisions per component; the rest are products (a vector division costs ~8 products) */
    const real ih = 1 / hc, iq = 1 / (1 - hc);
    const real ph = sfm_small_power(ih, beta), pq = sfm_small_power(iq, beta);
    const real g = pq - ph;
    const real L = alpha * g;
    /* Beyond SFM_SATURATE the logistic is 0 or 1 and its derivatives vanish. */
    const int live = inside & !(fabs(L) > SFM_SATURATE);
    /* exp's argument clamped, so saturated lanes stay in a vector exp's fast range */
    const real e = exp(fabs(L) > SFM_SATURATE ? -SFM_SATURATE : -fabs(L));
    const real inv = 1 / (1 + e);
    const real sig = L >= 0 ? inv : e * inv;
    const real one_minus = L >= 0 ? e * inv : inv;
    const real q = e * inv * inv; /* sigma (1 - sigma) */
    const real gp = bi * (pq * iq + ph * ih);
    const real gpp = bi * (bi + 1) * (pq * iq * iq - ph * ih * ih);
    const real L1 = alpha * gp, L2 = alpha * gpp;
    const real skew = one_minus - sig; /* 1 - 2 sigma */
    const real edge = h >= 1 ? SFM_C(1.0) : (h <= 0 ? SFM_C(0.0) : h);
    sfm_ramp r;
    r.s0 = live ? sig : (inside ? (L > 0 ? SFM_C(1.0) : SFM_C(0.0)) : edge);
    r.s1 = live ? q * L1 : SFM_C(0.0);
    r.s2 = live ? q * (skew * L1 * L1 + L2) : SFM_C(0.0);
    r.a0 = live ? q * g : SFM_C(0.0);
    r.a1 = live ? q * gp * (skew * L + 1) : SFM_C(0.0);
    return r;
}

/* The raw block -> its constrained values, in place. */
DEVICE void sfm_smooth_prepare(GLOBAL real *block, int K, real s_min, real c_max)
{
    real mx = block[0], sum = 0;
    for (int k = 1; k < K; k++) mx = block[k] > mx ? block[k] : mx;
    SFM_SIMD_SUM(sum)
    for (int k = 0; k < K; k++) sum += (block[k] = exp(block[k] - mx));
    SFM_SIMD
    for (int k = 0; k < K; k++) {
        block[k] /= sum;
        block[K + k] = sfm_sigmoid(block[K + k]);
        block[2 * K + k] = s_min + (1 - s_min) * sfm_sigmoid(block[2 * K + k]);
        block[3 * K + k] = sfm_softplus(block[3 * K + k]);
    }
    block[4 * K] = c_max * sfm_sigmoid(block[4 * K]);
}

DEVICE sfm_smooth sfm_smooth_view(const GLOBAL real *block, int K, int beta, real alpha_min)
{
    sfm_smooth p;
    p.block = block;
    p.K = K;
    p.beta = beta;
    p.alpha_min = alpha_min;
    p.c = block[4 * K];
    p.t = block[4 * K + 1];
    return p;
}

/* Component k's ramp at x: h = (x - b (1 - s)) / s, and 1 / s. */
DEVICE sfm_ramp sfm_smooth_component(const sfm_smooth *p, int k, real x, real *inv_s)
{
    const real s = p->block[2 * p->K + k];
    *inv_s = 1 / s;
    const real h = (x - p->block[p->K + k] * (1 - s)) * *inv_s;
    return sfm_smooth_ramp(p->alpha_min + p->block[3 * p->K + k], p->beta, h);
}

/* Component k's share of the mixture's value and its first two derivatives,
 * added to f, f1, f2 (the sums both F and the adjoint form). */
DEVICE void sfm_smooth_accumulate(const sfm_smooth *p, int k, sfm_ramp r, real inv_s, real *f, real *f1,
                                  real *f2)
{
    const real w = p->block[k];
    *f += w * r.s0;
    *f1 += w * r.s1 * inv_s;
    *f2 += w * r.s2 * inv_s * inv_s;
}

/* The mixture's sums at x: F = sum w_k sigma_k, F' and F'' (before the
 * mixing weight c): what the value, the derivatives and the adjoint share. */
DEVICE void sfm_smooth_sums(const sfm_smooth *p, real x, real *sums)
{
    real f = 0, f1 = 0, f2 = 0;
    SFM_SIMD_SUM(f, f1, f2)
    for (int k = 0; k < p->K; k++) {
        real inv_s;
        const sfm_ramp r = sfm_smooth_component(p, k, x, &inv_s);
        sfm_smooth_accumulate(p, k, r, inv_s, &f, &f1, &f2);
    }
    sums[0] = f;
    sums[1] = f1;
    sums[2] = f2;
}

/* F(x), F'(x) and (d2y non-null) F''(x) of the interval transform from its
 * sums; the circle adds t mod 1.  Every term of F' is positive: no
 * cancellation in log F'. */
DEVICE void sfm_smooth_from_sums(const sfm_smooth *p, real x, const real *sums, real *y, real *dy, real *d2y)
{
    *y = (1 - p->c) * x + p->c * sums[0];
    *dy = (1 - p->c) + p->c * sums[1];
    if (d2y) *d2y = p->c * sums[2];
}

DEVICE void sfm_smooth_eval(const sfm_smooth *p, real x, real *y, real *dy, real *d2y)
{
    real sums[3];
    sfm_smooth_sums(p, x, sums);
    sfm_smooth_from_sums(p, x, sums, y, dy, d2y);
}

/* Solve F(x) = y on [0, 1]; returns the iterations, or -1 without
 * convergence (x is then the last iterate).  Newton inside a shrinking
 * bracket [lo, hi]; a bisection step whenever Newton would leave the bracket
 * or fails to halve the previous step, so the bracket shrinks at least
 * geometrically.  y <= 0 gives 0 and y >= 1 gives 1; a NaN y gives x = NaN
 * (0 iterations), so the caller's check of its outputs sees it. */
DEVICE int sfm_smooth_solve(const sfm_smooth *p, real y, real *x)
{
    if (!(y > 0 && y < 1)) {
        *x = y <= 0 ? 0 : (y >= 1 ? 1 : y);
        return 0;
    }
    real lo = 0, hi = 1, xc = y, last = 1, prev = 1;
    for (int it = 1; it <= SFM_MAX_NEWTON; it++) {
        real f, f1;
        sfm_smooth_eval(p, xc, &f, &f1, 0);
        const real r = f - y;
        if (r == 0) {
            *x = xc;
            return it;
        }
        if (r > 0) hi = xc;
        else lo = xc;
        const real newton = r / f1;
        /* Converged: the Newton correction is below the resolution of x
         * (checked first, since x - newton may round onto the bracket). */
        if (fabs(newton) <= SFM_EPSILON * xc) {
            *x = xc - newton;
            return it;
        }
        real xn = xc - newton;
        if (!(xn > lo && xn < hi) || fabs(2 * r) > fabs(prev * f1)) {
            prev = last;
            last = SFM_C(0.5) * (hi - lo);
            xn = lo + last;
        } else {
            prev = last;
            last = newton;
        }
        const real moved = fabs(xn - xc);
        xc = xn;
        if (moved <= 2 * SFM_EPSILON * xc || hi - lo <= 2 * SFM_EPSILON * hi) {
            *x = xc;
            return it;
        }
    }
    *x = xc;
    return -1;
}

/* The density pass on one dimension, in (state l + 1) -> *out (state l), with
 * *logdet = log |d out / d in|: F for a density layer, F^-1 for a generative
 * one (circle: the shift t~ and the wrap mod 1 included).  Returns the Newton
 * iterations (0 when analytic) or -1 when the inverse did not converge.
 * sums receives the mixture's sums at the point the reverse pass differentiates
 * (in for a density layer, out for a generative one), which
 * sfm_smooth_adjoint_sums then reuses instead of evaluating the K ramps again. */
DEVICE int sfm_smooth_step_sums(const sfm_smooth *p, int circular, int generative, real in, real *out,
                                real *logdet, real *sums)
{
    real f, f1;
    if (generative) {
        /* x = F^-1((y - t) mod 1), logdet -log F'(x). */
        const int it = sfm_smooth_solve(p, circular ? sfm_wrap01(in - p->t) : in, out);
        if (it < 0) return -1;
        sfm_smooth_sums(p, *out, sums);
        sfm_smooth_from_sums(p, *out, sums, &f, &f1, 0);
        *logdet = -log(f1);
        return it;
    }
    /* x = (F(y) + t) mod 1, logdet log F'(y). */
    sfm_smooth_sums(p, in, sums);
    sfm_smooth_from_sums(p, in, sums, &f, &f1, 0);
    *out = circular ? sfm_wrap01(f + p->t) : f;
    *logdet = log(f1);
    return 0;
}

/* The same, for a caller that does not keep the sums for the reverse pass. */
DEVICE int sfm_smooth_step(const sfm_smooth *p, int circular, int generative, real in, real *out, real *logdet)
{
    real sums[3];
    return sfm_smooth_step_sums(p, circular, generative, in, out, logdet, sums);
}

/* ---------------------------------------------------------------- adjoint
 * Given the adjoints abar of out and wt of logdet, the step's input gets
 * abar dout/din + wt dlogdet/din, and the P raw values get abar dout/draw +
 * wt dlogdet/draw.  Written as three pieces (setup, one component, the
 * mixing weight and shift) so a kernel may spread the components over
 * threads; sfm_smooth_adjoint composes them. */

/* What every component's parameter derivatives share: the transform is
 * evaluated at its input x (out for a generative layer, in for a density
 * one), and graw += a dF/draw + bc dF'/draw. */
typedef struct sfm_smooth_adj {
    real x, F, F1, a, bc, gt;
} sfm_smooth_adj;

/* From the mixture sums F, F', F'' at x; returns d(loss)/d in. */
DEVICE real sfm_smooth_adjoint_setup(real c, int generative, real abar, real wt, real x, real F, real F1, real F2,
                                     sfm_smooth_adj *adj)
{
    const real f1 = (1 - c) + c * F1, f2 = c * F2;
    real gin;
    adj->x = x;
    adj->F = F;
    adj->F1 = F1;
    if (generative) {
        /* x = F^-1(y - t), logdet -log F'(x): inverse function theorem. */
        adj->a = -abar / f1 + wt * f2 / (f1 * f1);
        adj->bc = -wt / f1;
        gin = -adj->a;
        adj->gt = adj->a;
    } else {
        /* x = F(y) + t, logdet log F'(y). */
        adj->a = abar;
        adj->bc = wt / f1;
        gin = abar * f1 + wt * f2 / f1;
        adj->gt = abar;
    }
    return gin;
}

/* Component k's contributions to the raw gradient, through the constraining
 * maps of sfm_smooth_prepare (their derivatives from the prepared values):
 * *gw is w_k dL/dw_k (the softmax subtracts w_k sum_j w_j dL/dw_j later),
 * *gb, *gs, *ga the derivatives with respect to b~_k, s~_k, a~_k. */
DEVICE void sfm_smooth_adjoint_component(const sfm_smooth *p, real s_min, const sfm_smooth_adj *adj, int k,
                                         sfm_ramp r, real is, real *gw, real *gb, real *gs, real *ga)
{
    const int K = p->K;
    const real cc = p->c, a = adj->a, bc = adj->bc;
    const real wk = p->block[k], sb = p->block[K + k], s = p->block[2 * K + k];
    *gw = wk * (cc * (a * r.s0 + bc * r.s1 * is));
    const real dh_db = (s - 1) * is;
    const real dh_ds = -(adj->x - sb) * is * is;
    const real gh = a * cc * wk * r.s1 + bc * cc * wk * r.s2 * is; /* a dF/dh + bc dF'/dh */
    const real ss = (s - s_min) / (1 - s_min);
    *gb = gh * dh_db * sb * (1 - sb);
    const real gsv = gh * dh_ds - bc * cc * wk * r.s1 * is * is;
    *gs = gsv * (1 - s_min) * ss * (1 - ss);
    const real galpha = cc * wk * (a * r.a0 + bc * r.a1 * is);
    /* softplus'(a~) = sigmoid(a~) = 1 - exp(-softplus(a~)) */
    *ga = galpha * -expm1(-p->block[3 * K + k]);
}

/* d(loss)/dc~ of the mixing weight c = c_max sigmoid(c~). */
DEVICE real sfm_smooth_adjoint_mixing(const sfm_smooth *p, real c_max, const sfm_smooth_adj *adj)
{
    const real gc = adj->a * (adj->F - adj->x) + adj->bc * (adj->F1 - 1);
    const real sc = p->c / c_max;
    return gc * c_max * sc * (1 - sc);
}

/* The whole adjoint of one dimension, from the sums the density pass kept
 * (sfm_smooth_step_sums): returns d(loss)/d in and adds the raw gradient to
 * graw (4K + 2 values, zeroed by the caller; the t~ slot is set, to the
 * shift's derivative on the circle and 0 on the interval).  in and out are the
 * step's; no Newton iteration is differentiated.  The K ramps are evaluated
 * once here, for the parameter derivatives. */
DEVICE real sfm_smooth_adjoint_sums(const sfm_smooth *p, real s_min, real c_max, int circular, int generative,
                                    real in, real out, const real *sums, real abar, real wt, GLOBAL real *graw)
{
    const int K = p->K;
    const real x = generative ? out : in;
    sfm_smooth_adj adj;
    const real gin = sfm_smooth_adjoint_setup(p->c, generative, abar, wt, x, sums[0], sums[1], sums[2], &adj);
    real gw_mean = 0;
    SFM_SIMD_SUM(gw_mean)
    for (int k = 0; k < K; k++) {
        real gw, gb, gs, ga, is;
        const sfm_ramp r = sfm_smooth_component(p, k, x, &is);
        sfm_smooth_adjoint_component(p, s_min, &adj, k, r, is, &gw, &gb, &gs, &ga);
        graw[k] += gw;
        gw_mean += gw;
        graw[K + k] += gb;
        graw[2 * K + k] += gs;
        graw[3 * K + k] += ga;
    }
    SFM_SIMD
    for (int k = 0; k < K; k++) graw[k] -= p->block[k] * gw_mean;
    graw[4 * K] += sfm_smooth_adjoint_mixing(p, c_max, &adj);
    graw[4 * K + 1] = circular ? adj.gt : 0;
    return gin;
}

/* The same without kept sums: evaluates them first (a second pass over the K
 * ramps; a kernel that cannot keep three values per dimension uses this). */
DEVICE real sfm_smooth_adjoint(const sfm_smooth *p, real s_min, real c_max, int circular, int generative, real in,
                               real out, real abar, real wt, GLOBAL real *graw)
{
    real sums[3];
    sfm_smooth_sums(p, generative ? out : in, sums);
    return sfm_smooth_adjoint_sums(p, s_min, c_max, circular, generative, in, out, sums, abar, wt, graw);
}

#endif /* SF_MATH_SMOOTH_H */
