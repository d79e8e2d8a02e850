/* sf_math_affine.h -- the affine (RealNVP) transform in logit space
 * (docs/model-format.md section 7.2):
 *
 *     s = scale_max tanh(s~ / scale_max),   v = logit(x),   z = e^s v + t~
 *     T(x) = sigmoid(z),   log T'(x) = s + log sigma'(z) - log sigma'(v)
 *
 * with sigma'(u) = sigma(u) sigma(-u) (= x (1 - x) at u = v).  Every
 * dimension, circular ones included, is treated as the open interval (0, 1).
 * The log-determinant and all derivatives are formed from the logits v and z,
 * never from 1 - T(x): they stay exact where T(x) rounds to 0 or 1.  An input
 * at exactly 0 or 1 has an infinite logit and is outside the support. */
#ifndef SF_MATH_AFFINE_H
#define SF_MATH_AFFINE_H

typedef struct sfm_affine {
    real s, e, einv, t; /* s, e^s, e^-s, t~ */
    real ds;            /* ds / ds~ = 1 - tanh^2 */
} sfm_affine;

/* From the raw pair (s~, t~). */
DEVICE sfm_affine sfm_affine_view(real s_raw, real t_raw, real scale_max)
{
    sfm_affine p;
    const real th = tanh(s_raw / scale_max);
    p.s = scale_max * th;
    p.e = exp(p.s);
    p.einv = exp(-p.s);
    p.t = t_raw;
    p.ds = 1 - th * th;
    return p;
}

/* Whether v is inside the support (0, 1). */
DEVICE int sfm_affine_inside(real v) { return v > 0 && v < 1; }

/* T, T' and T'' at x in (0, 1), and log T' (from logit space, exact where
 * T(x) rounds to 0 or 1). */
DEVICE void sfm_affine_eval(const sfm_affine *p, real x, real *y, real *dy, real *d2y, real *logdy)
{
    const real v = sfm_logit(x), z = p->e * v + p->t;
    const real ty = sfm_sigmoid(z), sx = x * (1 - x);
    const real l = p->s + sfm_log_dsigmoid(z) - sfm_log_dsigmoid(v);
    *y = ty;
    const real f1 = exp(l);
    *dy = f1;
    /* (log T')' = (e^s (1 - 2 T) - (1 - 2 x)) / (x (1 - x)) */
    *d2y = f1 * (p->e * (1 - 2 * ty) - (1 - 2 * x)) / sx;
    *logdy = l;
}

/* The density pass on one dimension (see sfm_smooth_step): 0, or -2 when in
 * is outside (0, 1). */
DEVICE int sfm_affine_step(const sfm_affine *p, int generative, real in, real *out, real *logdet)
{
    if (!sfm_affine_inside(in)) return -2;
    if (generative) {
        /* x = sigmoid((logit(y) - t) e^-s), logdet -log T'(x). */
        const real z = sfm_logit(in), v = (z - p->t) * p->einv;
        *out = sfm_sigmoid(v);
        *logdet = -(p->s + sfm_log_dsigmoid(z) - sfm_log_dsigmoid(v));
        return 0;
    }
    const real v = sfm_logit(in), z = p->e * v + p->t;
    *out = sfm_sigmoid(z);
    *logdet = p->s + sfm_log_dsigmoid(z) - sfm_log_dsigmoid(v);
    return 0;
}

/* The adjoint of one dimension: returns d(loss)/d in and the derivatives with
 * respect to the raw s~ and t~ into *gs_raw, *gt_raw (the caller adds them). */
DEVICE real sfm_affine_adjoint(const sfm_affine *p, int generative, real in, real abar, real wt, real *gs_raw,
                               real *gt_raw)
{
    real gz, gv, gs, gt, gin;
    if (generative) {
        /* in = y: z = logit(y), v = (z - t) e^-s, out = sigmoid(v),
         * logdet = -s - log sigma'(z) + log sigma'(v). */
        const real z = sfm_logit(in), v = (z - p->t) * p->einv;
        gv = abar * sfm_dsigmoid(v) + wt * (1 - 2 * sfm_sigmoid(v));
        gz = gv * p->einv - wt * (1 - 2 * in);
        gin = gz / (in * (1 - in));
        gt = -gv * p->einv;
        gs = -wt - gv * v;
    } else {
        /* in = x: v = logit(x), z = e^s v + t, out = sigmoid(z),
         * logdet = s + log sigma'(z) - log sigma'(v). */
        const real v = sfm_logit(in), z = p->e * v + p->t;
        gz = abar * sfm_dsigmoid(z) + wt * (1 - 2 * sfm_sigmoid(z));
        gv = gz * p->e - wt * (1 - 2 * in);
        gin = gv / (in * (1 - in));
        gt = gz;
        gs = wt + gz * p->e * v;
    }
    *gs_raw = gs * p->ds;
    *gt_raw = gt;
    return gin;
}

#endif /* SF_MATH_AFFINE_H */
