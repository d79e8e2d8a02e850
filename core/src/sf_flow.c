/* sf_flow.c -- coupling layers: the density pass u -> z with its log
 * determinant, and the hand-written reverse pass for d log p / du.
 *
 * Layers are stored in generative order (layer 0 acts first on z), so the
 * density pass runs them from the last to the first and the reverse pass
 * from the first to the last.  State l (B x D) is the input of generative
 * layer l; state L is u. */
#include "sf_internal.h"

#include <math.h>
#include <string.h>

#define TWO_PI (2.0 * SF_PI)

static double wrap01(double v) { return v - floor(v); }

static double *state_of(sf_workspace *ws, int l, int B) { return ws->state + (size_t)l * B * ws->model->D; }

/* Conditioner input: interval dim -> 2u - 1, circular -> (cos, sin). */
static void encode(const sf_model *m, const sf_layer *L, int B, const double *y, double *enc)
{
    const int D = m->D, W = L->width[0];
    for (int b = 0; b < B; b++) {
        double *e = enc + (size_t)b * W;
        const double *yb = y + (size_t)b * D;
        for (int i = 0, o = 0; i < L->n_cond; i++) {
            int d = L->cond[i];
            if (sfM_is_circular(m, d)) {
                e[o++] = cos(TWO_PI * yb[d]);
                e[o++] = sin(TWO_PI * yb[d]);
            } else {
                e[o++] = 2 * yb[d] - 1;
            }
        }
    }
}

/* Adds d(loss)/d(conditioning dims) given d(loss)/d(encoding). */
static void encode_backward(const sf_model *m, const sf_layer *L, int B, const double *y, const double *genc,
                            double *gy)
{
    const int D = m->D, W = L->width[0];
    for (int b = 0; b < B; b++) {
        const double *g = genc + (size_t)b * W;
        const double *yb = y + (size_t)b * D;
        double *gb = gy + (size_t)b * D;
        for (int i = 0, o = 0; i < L->n_cond; i++) {
            int d = L->cond[i];
            if (sfM_is_circular(m, d)) {
                gb[d] += TWO_PI * (-g[o] * sin(TWO_PI * yb[d]) + g[o + 1] * cos(TWO_PI * yb[d]));
                o += 2;
            } else {
                gb[d] += 2 * g[o++];
            }
        }
    }
}

sf_status sfF_log_density(const sf_model *m, sf_workspace *ws, int B, const double *u, double *logp, int *max_iters,
                          sf_error *err)
{
    const int D = m->D, NL = m->n_layers;
    memcpy(state_of(ws, NL, B), u, (size_t)B * D * sizeof(double));
    for (int b = 0; b < B; b++) ws->logdet[b] = 0;
    for (int l = NL - 1; l >= 0; l--) {
        const sf_layer *L = &m->layers[l];
        const double *y = state_of(ws, l + 1, B);
        double *x = state_of(ws, l, B);
        double *enc = ws->enc + l * ws->enc_stride, *act = ws->act + l * ws->act_stride;
        double *params = ws->params + l * ws->params_stride;
        memcpy(x, y, (size_t)B * D * sizeof(double));
        encode(m, L, B, y, enc);
        sfN_forward(L, B, enc, act, params);
        const int out = L->n_trans * L->P;
        for (int b = 0; b < B; b++) {
            for (int i = 0; i < L->n_trans; i++) {
                const int d = L->trans[i], circ = sfM_is_circular(m, d);
                const double *raw = params + (size_t)b * out + (size_t)i * L->P;
                sfT_params p;
                sfT_prepare(&m->smooth, L->K, raw, &p);
                double yy = y[(size_t)b * D + d], xx, f, f1;
                if (L->direction == SF_DIR_GENERATIVE) {
                    if (circ) yy = wrap01(yy - p.t);
                    int it = sfT_solve(&p, yy, &xx);
                    if (it < 0)
                        return sfE_locate(err, sfE_set(err, SF_ERR_NUMERIC,
                                                       "molecule %d: inverse of layer %d, dimension %d did not "
                                                       "converge (y = %.17g)", b, l, d, yy),
                                          b, -1, -1, -1, -1);
                    if (max_iters && it > *max_iters) *max_iters = it;
                    sfT_eval(&p, xx, &f, &f1, NULL);
                    ws->logdet[b] -= log(f1);
                } else {
                    sfT_eval(&p, yy, &f, &f1, NULL);
                    xx = circ ? wrap01(f + p.t) : f;
                    ws->logdet[b] += log(f1);
                }
                x[(size_t)b * D + d] = xx;
            }
        }
    }
    /* Uniform prior: log p_Z = 0 on the unit cube/torus. */
    for (int b = 0; b < B; b++) logp[b] = ws->logdet[b];
    return SF_OK;
}

void sfF_log_density_gradient(const sf_model *m, sf_workspace *ws, int B, const double *weight, double *grad)
{
    const int D = m->D, NL = m->n_layers;
    double *g = ws->gstate; /* d(loss)/d(state l), starting at z */
    memset(g, 0, (size_t)B * D * sizeof(double));
    for (int l = 0; l < NL; l++) {
        const sf_layer *L = &m->layers[l];
        const double *x = state_of(ws, l, B), *y = state_of(ws, l + 1, B);
        const double *params = ws->params + l * ws->params_stride;
        const double *act = ws->act + l * ws->act_stride;
        const int out = L->n_trans * L->P, K = L->K;
        memset(ws->gparams, 0, (size_t)B * out * sizeof(double));
        for (int b = 0; b < B; b++) {
            const double w = weight[b];
            for (int i = 0; i < L->n_trans; i++) {
                const int d = L->trans[i], circ = sfM_is_circular(m, d);
                const double *raw = params + (size_t)b * out + (size_t)i * L->P;
                double *graw = ws->gparams + (size_t)b * out + (size_t)i * L->P;
                const double abar = g[(size_t)b * D + d];
                const int gen = L->direction == SF_DIR_GENERATIVE;
                /* The transform is evaluated at its input: x for a generative
                 * layer (inverted here), y for a density layer. */
                const double at = gen ? x[(size_t)b * D + d] : y[(size_t)b * D + d];
                double f, f1, f2, a, bc, gy, gt;
                sfT_params p;
                sfT_prepare(&m->smooth, K, raw, &p);
                sfT_eval(&p, at, &f, &f1, &f2);
                if (gen) {
                    /* x = F^-1(y - t), logdet -log F'(x): inverse function theorem. */
                    a = -abar / f1 + w * f2 / (f1 * f1);
                    bc = -w / f1;
                    gy = -a;
                    gt = a;
                } else {
                    /* x = F(y) + t, logdet log F'(y). */
                    a = abar;
                    bc = w / f1;
                    gy = abar * f1 + w * f2 / f1;
                    gt = abar;
                }
                sfT_vjp(&p, &m->smooth, raw, at, a, bc, graw);
                graw[4 * K + 1] = circ ? gt : 0;
                g[(size_t)b * D + d] = gy;
            }
        }
        sfN_backward(L, B, act, ws->gparams, ws->genc, ws->scratch, m->max_width);
        encode_backward(m, L, B, y, ws->genc, g);
    }
    memcpy(grad, g, (size_t)B * D * sizeof(double));
}
