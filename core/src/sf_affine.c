/* sf_affine.c -- the affine (RealNVP) transform in logit space
 * (docs/model-format.md section 7.2):
 *
 *     s = scale_max tanh(s~ / scale_max),   v = logit(x),   z = e^s v + t~
 *     T(x) = sfU_sigmoid(z),   log T'(x) = s + log sigma'(z) - log sigma'(v)
 *
 * with sigma'(u) = sigma(u) sigma(-u) (= x (1 - x) at u = v).  Every
 * dimension, circular ones included, is treated as the open interval (0, 1).
 * The log-determinant and all derivatives are formed from the logits v and z,
 * never from 1 - T(x): they stay exact where T(x) rounds to 0 or 1.  An input
 * at exactly 0 or 1 has an infinite logit and is outside the support (-2). */
#include "sf_internal.h"

#include <math.h>

static double logit(double x) { return log(x) - log1p(-x); }

/* log sigma'(u) = -softplus(u) - softplus(-u), for any finite u. */
static double log_dsigmoid(double u)
{
    double a = fabs(u);
    return -a - 2 * log1p(exp(-a));
}

/* sigma'(u) = sigma(u) (1 - sigma(u)) without cancellation. */
static double dsigmoid(double u)
{
    double e = exp(-fabs(u));
    return e / ((1 + e) * (1 + e));
}

static int inside(double v) { return v > 0 && v < 1; }

void sfA_prepare(const sf_affine_constants *c, const double *raw, sfA_params *p)
{
    double th = tanh(raw[0] / c->scale_max);
    p->s = c->scale_max * th;
    p->e = exp(p->s);
    p->einv = exp(-p->s);
    p->t = raw[1];
    p->ds = 1 - th * th;
}

void sfA_eval(const sfA_params *p, double x, double *y, double *dy, double *d2y, double *logdy)
{
    double v = logit(x), z = p->e * v + p->t;
    double ty = sfU_sigmoid(z), sx = x * (1 - x);
    double l = p->s + log_dsigmoid(z) - log_dsigmoid(v);
    *y = ty;
    double f1 = exp(l);
    if (dy) *dy = f1;
    /* (log T')' = (e^s (1 - 2 T) - (1 - 2 x)) / (x (1 - x)) */
    if (d2y) *d2y = f1 * (p->e * (1 - 2 * ty) - (1 - 2 * x)) / sx;
    if (logdy) *logdy = l;
}

int sfA_step(const sfA_params *p, int generative, double in, double *out, double *logdet)
{
    if (!inside(in)) return -2;
    if (generative) {
        /* x = sigmoid((logit(y) - t) e^-s), logdet -log T'(x). */
        double z = logit(in), v = (z - p->t) * p->einv;
        *out = sfU_sigmoid(v);
        *logdet = -(p->s + log_dsigmoid(z) - log_dsigmoid(v));
        return 0;
    }
    double v = logit(in), z = p->e * v + p->t;
    *out = sfU_sigmoid(z);
    *logdet = p->s + log_dsigmoid(z) - log_dsigmoid(v);
    return 0;
}

void sfA_adjoint(const sfA_params *p, int generative, double in, double abar, double w, double *gin, double *graw)
{
    double gz, gv, gs, gt;
    if (generative) {
        /* in = y: z = logit(y), v = (z - t) e^-s, out = sigmoid(v),
         * logdet = -s - log sigma'(z) + log sigma'(v). */
        double z = logit(in), v = (z - p->t) * p->einv;
        gv = abar * dsigmoid(v) + w * (1 - 2 * sfU_sigmoid(v));
        gz = gv * p->einv - w * (1 - 2 * in);
        *gin = gz / (in * (1 - in));
        gt = -gv * p->einv;
        gs = -w - gv * v;
    } else {
        /* in = x: v = logit(x), z = e^s v + t, out = sigmoid(z),
         * logdet = s + log sigma'(z) - log sigma'(v). */
        double v = logit(in), z = p->e * v + p->t;
        gz = abar * dsigmoid(z) + w * (1 - 2 * sfU_sigmoid(z));
        gv = gz * p->e - w * (1 - 2 * in);
        *gin = gv / (in * (1 - in));
        gt = gz;
        gs = w + gz * p->e * v;
    }
    graw[0] += gs * p->ds;
    graw[1] += gt;
}

/* ------------------------------------------------------------ public API */

int sf_affine_forward(const sf_affine_constants *c, const double *raw, double x, double *y, double *dy, double *d2y)
{
    if (!inside(x)) return -1;
    sfA_params p;
    double l;
    sfA_prepare(c, raw, &p);
    sfA_eval(&p, x, y, dy, d2y, &l);
    return 0;
}

int sf_affine_inverse(const sf_affine_constants *c, const double *raw, double y, double *x)
{
    if (!inside(y)) return -1;
    sfA_params p;
    double l;
    sfA_prepare(c, raw, &p);
    sfA_step(&p, 1, y, x, &l);
    return 0;
}
