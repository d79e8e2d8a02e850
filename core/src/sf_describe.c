/* sf_describe.c -- the model description of smoothflow.h: a loaded model's
 * constants, layer shapes and weights, for the device platforms that copy
 * them to their memory (platforms/common) and for tools.  Reads only. */
#include "sf_internal.h"

sf_status sf_model_describe(const sf_model *m, sf_model_description *out)
{
    /* The description is that of coupling layers over internal coordinates; a free-form
     * model has none of its fields (its encoder is described by sf_model_describe_free_form,
     * sf_describe_free_form.c). */
    if (!m || !out || m->kind == SF_FLOW_FREE_FORM) return SF_ERR_ARG;
    out->N = m->N;
    out->D = m->D;
    out->n_layers = m->n_layers;
    out->policy = m->policy;
    out->has_prior = m->prior_mean != NULL;
    out->kT = m->kT;
    out->energy_offset = m->energy_offset;
    out->log_scale_sum = m->log_scale_sum;
    out->prior_log_norm = m->prior_mean ? m->prior_log_norm : 0.0;
    out->margin = m->margin;
    out->angle_margin = m->angle_margin;
    out->wall_constant = m->wall_constant;
    out->smooth = m->smooth;
    out->spline = m->spline;
    out->affine = m->affine;
    return SF_OK;
}

sf_status sf_model_describe_layer(const sf_model *m, int layer, sf_layer_description *out)
{
    if (!m || !out || layer < 0 || layer >= m->n_layers) return SF_ERR_ARG;
    const sf_layer *L = &m->layers[layer];
    out->transform = L->transform;
    out->generative = L->direction == SF_DIR_GENERATIVE;
    out->n_trans = L->n_trans;
    out->n_cond = L->n_cond;
    out->K = L->K;
    out->P = L->P;
    out->activation = (int)L->activation;
    out->n_linear = L->n_linear;
    out->trans = L->trans;
    out->cond = L->cond;
    out->width = L->width;
    return SF_OK;
}

static const sf_layer *linear_of(const sf_model *m, int layer, int linear)
{
    if (!m || layer < 0 || layer >= m->n_layers) return NULL;
    const sf_layer *L = &m->layers[layer];
    return linear >= 0 && linear < L->n_linear ? L : NULL;
}

const double *sf_model_layer_weight(const sf_model *m, int layer, int linear)
{
    const sf_layer *L = linear_of(m, layer, linear);
    if (!L) return NULL;
    /* under SF_WEIGHTS_FLOAT32 the core applies the weights rounded to float */
    return L->weight_rounded ? L->weight_rounded[linear] : L->weight[linear];
}

const double *sf_model_layer_bias(const sf_model *m, int layer, int linear)
{
    const sf_layer *L = linear_of(m, layer, linear);
    return L ? L->bias[linear] : NULL;
}

sf_status sf_model_bond_bounds(const sf_model *m, int d, double *lo, double *hi)
{
    if (!m || !lo || !hi || !m->bond_lo || d < 0 || d >= m->N - 1) return SF_ERR_ARG;
    *lo = m->bond_lo[d];
    *hi = m->bond_hi[d];
    return SF_OK;
}

sf_status sf_model_prior(const sf_model *m, int d, double *mean, double *sigma)
{
    if (!m || !mean || !sigma || !m->prior_mean || d < 0 || d >= 2 * m->N - 3) return SF_ERR_ARG;
    *mean = m->prior_mean[d];
    *sigma = m->prior_sigma[d];
    return SF_OK;
}

sf_status sf_model_torsion_prior(const sf_model *m, int t, double *mean, double *kappa)
{
    if (!m || !mean || !kappa || !m->torsion_mean || t < 0 || t >= m->N - 3) return SF_ERR_ARG;
    *mean = m->torsion_mean[t];
    *kappa = m->torsion_kappa[t];
    return SF_OK;
}

sf_status sf_model_edge_force(const sf_model *m, int d, double *lower, double *upper)
{
    if (!m || !lower || !upper || m->kind == SF_FLOW_FREE_FORM || d < 0 || d >= 2 * m->N - 3) return SF_ERR_ARG;
    *lower = m->edge_lower ? m->edge_lower[d] : 0;
    *upper = m->edge_upper ? m->edge_upper[d] : 0;
    return SF_OK;
}
