/* sf_flow.c -- coupling layers: the density pass u -> z with its log
 * determinant, and the hand-written reverse pass for d log p / du.  The
 * one-dimensional transforms (math/sf_math_smooth.h, sf_math_spline.h,
 * sf_math_affine.h, shared with the GPU kernels) are reached through one
 * dispatch per transformed dimension: prepare, step (density pass) and
 * adjoint (reverse pass).
 *
 * Layers are stored in generative order (layer 0 acts first on z), so the
 * density pass runs them from the last to the first and the reverse pass
 * from the first to the last.  State l (B x D) is the input of generative
 * layer l; state L is u. */
#include "sf_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static double *state_of(sf_workspace *ws, int l, int B) { return ws->state + (size_t)l * B * ws->model->D; }

/* The smooth mixture's sums F, F', F'' that layer l's density pass kept for dimension d of
 * molecule b, for its reverse pass. */
static double *sums_of(sf_workspace *ws, int l, int B, int b, int d)
{
    return ws->sums + (((size_t)l * B + b) * ws->model->D + d) * 3;
}

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
                sfm_encode_circular(yb[d], &e[o], &e[o + 1]);
                o += 2;
            } else {
                e[o++] = sfm_encode_interval(yb[d]);
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
                gb[d] += sfm_encode_circular_grad(yb[d], g[o], g[o + 1]);
                o += 2;
            } else {
                gb[d] += sfm_encode_interval_grad(g[o++]);
            }
        }
    }
}

/* ------------------------------------------------ one transformed dimension */

/* The density pass on one dimension from its block of conditioner outputs
 * raw: 0 or the Newton iterations; -1 when the inverse did not converge, -2
 * when in lies outside the transform's support.  The smooth transform's block
 * is turned into its constrained values here, in place, so the reverse pass
 * only views it; the baselines (a few per cent of the cost) view the raw
 * block each time. */
SF_VECTOR_CLONES static int step(const sf_model *m, const sf_layer *L, double *raw, int circ, double in, double *out,
                                  double *logdet, double *sums)
{
    const int gen = L->direction == SF_DIR_GENERATIVE;
    if (L->transform == SF_TRANSFORM_SMOOTH) {
        sfm_smooth_prepare(raw, L->K, m->smooth.s_min, m->smooth.c_max);
        const sfm_smooth p = sfm_smooth_view(raw, L->K, m->smooth.beta, m->smooth.alpha_min);
        return sfm_smooth_step_sums(&p, circ, gen, in, out, logdet, sums);
    }
    if (L->transform == SF_TRANSFORM_SPLINE) {
        const sfm_spline p = sfm_spline_view(raw, L->K, circ, m->spline.min_bin_width, m->spline.min_bin_height,
                                             m->spline.min_derivative);
        return sfm_spline_step(&p, gen, in, out, logdet);
    }
    const sfm_affine p = sfm_affine_view(raw[0], raw[1], m->affine.scale_max);
    return sfm_affine_step(&p, gen, in, out, logdet);
}

/* The reverse pass on one dimension, after step: *gin = abar dout/din +
 * w dlogdet/din, and graw (zeroed by the caller) += abar dout/draw +
 * w dlogdet/draw. */
SF_VECTOR_CLONES static void adjoint(const sf_model *m, const sf_layer *L, const double *raw, int circ, double in, double out,
                    const double *sums, double abar, double w, double *gin, double *graw)
{
    const int gen = L->direction == SF_DIR_GENERATIVE;
    if (L->transform == SF_TRANSFORM_SMOOTH) {
        const sfm_smooth p = sfm_smooth_view(raw, L->K, m->smooth.beta, m->smooth.alpha_min);
        *gin = sfm_smooth_adjoint_sums(&p, m->smooth.s_min, m->smooth.c_max, circ, gen, in, out, sums, abar, w, graw);
    } else if (L->transform == SF_TRANSFORM_SPLINE) {
        const sfm_spline p = sfm_spline_view(raw, L->K, circ, m->spline.min_bin_width, m->spline.min_bin_height,
                                             m->spline.min_derivative);
        *gin = sfm_spline_adjoint(&p, gen, in, out, abar, w, graw);
    } else {
        const sfm_affine p = sfm_affine_view(raw[0], raw[1], m->affine.scale_max);
        double gs, gt;
        *gin = sfm_affine_adjoint(&p, gen, in, abar, w, &gs, &gt);
        graw[0] += gs;
        graw[1] += gt;
    }
}

/* The model atoms of the internal coordinate behind dimension d. */
static void dim_atoms(const sf_model *m, int d, int atoms[4])
{
    int r, n;
    if (d < m->N - 1) { r = d + 1; n = 2; }
    else if (d < 2 * m->N - 3) { r = d - m->N + 3; n = 3; }
    else { r = d - 2 * m->N + 6; n = 4; }
    for (int c = 0; c < 4; c++) atoms[c] = c < n ? m->zmatrix[r][c] : -1;
}

static const char *coordinate_kind(const sf_model *m, int d)
{
    return d < m->N - 1 ? "bond" : (d < 2 * m->N - 3 ? "angle" : "torsion");
}

static sf_status step_error(const sf_model *m, int code, int b, int l, int d, double in, sf_error *err)
{
    int at[4];
    dim_atoms(m, d, at);
    if (code == -2) {
        sfE_set(err, SF_ERR_SUPPORT,
                "molecule %d: layer %d (affine) receives dimension %d (a %s) at %.17g, on the boundary of the "
                "affine transform's support (0, 1)", b, l, d, coordinate_kind(m, d), in);
        return sfE_locate(err, SF_ERR_SUPPORT, b, at[0], at[1], at[2], at[3]);
    }
    sfE_set(err, SF_ERR_NUMERIC, "molecule %d: inverse of layer %d, dimension %d did not converge (y = %.17g)", b, l,
            d, in);
    return sfE_locate(err, SF_ERR_NUMERIC, b, -1, -1, -1, -1);
}

/* A step whose output or log-determinant is not finite: the layer, the
 * dimension with its coordinate's atoms, and the cause: the conditioner's
 * parameters, or else the transform itself (its input is finite: u is
 * checked by the callers, and every state as it is made).  The smooth block
 * was prepared in place, but preparation maps finite values to finite
 * values, so a non-finite entry there was one in the conditioner's output. */
static sf_status nonfinite_step(const sf_model *m, const sf_layer *L, int b, int l, int d, const double *raw,
                                double in, double out, double logdet, sf_error *err)
{
    static const char *const kinds[] = {"smooth", "spline", "affine"};
    int at[4], params_finite = 1;
    dim_atoms(m, d, at);
    for (int j = 0; j < L->P; j++) params_finite &= isfinite(raw[j]) != 0;
    char atoms[64];
    int n = snprintf(atoms, sizeof atoms, "%d-%d", at[0], at[1]);
    for (int c = 2; c < 4 && at[c] >= 0; c++) n += snprintf(atoms + n, sizeof atoms - (size_t)n, "-%d", at[c]);
    sfE_set(err, SF_ERR_NUMERIC,
            "molecule %d: layer %d (%s, %s) maps dimension %d (%s %s) from %.17g to %g with log-determinant %g: %s",
            b, l, kinds[L->transform], L->direction == SF_DIR_GENERATIVE ? "generative" : "density", d,
            coordinate_kind(m, d), atoms, in, out, logdet,
            params_finite ? "the transform overflows" : "its conditioner's parameters are not finite");
    return sfE_locate(err, SF_ERR_NUMERIC, b, at[0], at[1], at[2], at[3]);
}

/* ------------------------------------------------------------------ passes */

/* log p_Z(z) of one point: 0 for the uniform prior; the truncated-normal prior adds a
 * Gaussian term per interval dimension, and its torsion dims a von Mises term each when it
 * has them (else they are uniform on the circle). */
static double log_prior(const sf_model *m, const double *z)
{
    if (!m->prior_mean) return 0.0;
    const int n = 2 * m->N - 3;
    double s = -m->prior_log_norm;
    for (int d = 0; d < n; d++) {
        s -= sfm_prior_term(z[d], m->prior_mean[d], m->prior_sigma[d]);
    }
    for (int t = 0; m->torsion_mean && t < m->N - 3; t++) {
        s -= sfm_torsion_prior_term(z[n + t], m->torsion_mean[t], m->torsion_kappa[t]);
    }
    return s;
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
                double *raw = params + (size_t)b * out + (size_t)i * L->P;
                const double in = y[(size_t)b * D + d];
                double xx, ld;
                int it = step(m, L, raw, circ, in, &xx, &ld, sums_of(ws, l, B, b, d));
                if (it < 0) return step_error(m, it, b, l, d, in, err);
                /* Every state and log-determinant finite, so no NaN reaches a later layer. */
                if (!isfinite(xx) || !isfinite(ld)) return nonfinite_step(m, L, b, l, d, raw, in, xx, ld, err);
                if (max_iters && it > *max_iters) *max_iters = it;
                ws->logdet[b] += ld;
                x[(size_t)b * D + d] = xx;
            }
        }
    }
    const double *z = state_of(ws, 0, B);
    for (int b = 0; b < B; b++) logp[b] = ws->logdet[b] + log_prior(m, z + (size_t)b * D);
    return SF_OK;
}

void sfF_log_density_gradient(const sf_model *m, sf_workspace *ws, int B, const double *weight, double *grad)
{
    const int D = m->D, NL = m->n_layers;
    double *g = ws->gstate; /* d(loss)/d(state l), starting at z */
    memset(g, 0, (size_t)B * D * sizeof(double));
    if (m->prior_mean) { /* d(weight log p_Z)/dz of the truncated-normal prior */
        const double *z = state_of(ws, 0, B);
        for (int b = 0; b < B; b++)
            for (int d = 0; d < 2 * m->N - 3; d++)
                g[(size_t)b * D + d] = sfm_prior_gradient(z[(size_t)b * D + d], m->prior_mean[d], m->prior_sigma[d],
                                                          weight[b]);
        const int n = 2 * m->N - 3;
        for (int b = 0; m->torsion_mean && b < B; b++)
            for (int t = 0; t < m->N - 3; t++)
                g[(size_t)b * D + n + t] = sfm_torsion_prior_gradient(z[(size_t)b * D + n + t], m->torsion_mean[t],
                                                                      m->torsion_kappa[t], weight[b]);
    }
    for (int l = 0; l < NL; l++) {
        const sf_layer *L = &m->layers[l];
        const double *x = state_of(ws, l, B), *y = state_of(ws, l + 1, B);
        double *params = ws->params + l * ws->params_stride; /* as the density pass left them */
        const double *act = ws->act + l * ws->act_stride;
        const int out = L->n_trans * L->P;
        memset(ws->gparams, 0, (size_t)B * out * sizeof(double));
        for (int b = 0; b < B; b++) {
            for (int i = 0; i < L->n_trans; i++) {
                const int d = L->trans[i], circ = sfM_is_circular(m, d);
                const double *raw = params + (size_t)b * out + (size_t)i * L->P;
                double *graw = ws->gparams + (size_t)b * out + (size_t)i * L->P;
                const size_t at = (size_t)b * D + d;
                /* The density pass took y (state l + 1) to x (state l). */
                adjoint(m, L, raw, circ, y[at], x[at], sums_of(ws, l, B, b, d), g[at], weight[b], &g[at], graw);
            }
        }
        sfN_backward(L, B, act, ws->gparams, ws->genc, ws->scratch, m->max_width);
        encode_backward(m, L, B, y, ws->genc, g);
    }
    memcpy(grad, g, (size_t)B * D * sizeof(double));
}
