/* sf_describe_free_form.c -- the free-form model description of smoothflow.h: a loaded
 * free-form model's constants, its EGNN encoder's shape and each layer's linear maps, for
 * the device platforms that copy them to their memory (platforms/common/src/
 * CommonFreeFormKernel.cpp) and for tools.  Reads only; the encoder is the sfG_net the
 * loader built (sf_model.c, read_free_form_config and read_free_form_tensors). */
#include "sf_internal.h"

#include <math.h>

static const sfG_net *free_form_net(const sf_model *m)
{
    return m && m->kind == SF_FLOW_FREE_FORM ? &m->egnn : NULL;
}

sf_status sf_model_describe_free_form(const sf_model *m, sf_free_form_description *out)
{
    const sfG_net *net = free_form_net(m);
    if (!net || !out) return SF_ERR_ARG;
    out->n_particles = net->n_particles;
    out->dim = net->dim;
    out->D = m->D;
    out->hidden = net->hidden;
    out->n_layers = net->n_layers;
    out->activation = (int)SF_ACT_SILU; /* the encoder's only activation (sf_egnn.c) */
    out->inv_scale2 = net->inv_scale2;
    out->distance_scale = 1.0 / sqrt(net->inv_scale2);
    out->kT = m->kT;
    out->energy_offset = m->energy_offset;
    /* log N(z; 0, I_D) = -|z|^2 / 2 - (D / 2) log(2 pi), as sf_egnn.c's log density */
    out->latent_log_norm = 0.5 * m->D * log(2.0 * SF_PI);
    out->h0 = net->h0;
    return SF_OK;
}

static const sfG_layer *layer_of(const sf_model *m, int layer)
{
    const sfG_net *net = free_form_net(m);
    return net && layer >= 0 && layer < net->n_layers ? &net->layers[layer] : NULL;
}

sf_status sf_model_describe_free_form_layer(const sf_model *m, int layer, sf_free_form_layer_description *out)
{
    const sfG_layer *g = layer_of(m, layer);
    if (!g || !out) return SF_ERR_ARG;
    out->has_node = g->has_node != 0;
    out->n_linear = g->has_node ? 6 : 4;
    return SF_OK;
}

sf_status sf_model_free_form_linear(const sf_model *m, int layer, sf_egnn_linear linear, sf_free_form_linear *out)
{
    const sfG_layer *g = layer_of(m, layer);
    if (!g || !out) return SF_ERR_ARG;
    const sfG_linear *lin;
    switch (linear) {
    case SF_EGNN_EDGE1: lin = &g->edge1; break;
    case SF_EGNN_EDGE2: lin = &g->edge2; break;
    case SF_EGNN_COORD1: lin = &g->coord1; break;
    case SF_EGNN_COORD2: lin = &g->coord2; break;
    case SF_EGNN_NODE1: lin = g->has_node ? &g->node1 : NULL; break;
    case SF_EGNN_NODE2: lin = g->has_node ? &g->node2 : NULL; break;
    default: lin = NULL; break; /* an int cast to the enum out of its range */
    }
    if (!lin) return SF_ERR_ARG;
    out->n_out = lin->n_out;
    out->n_in = lin->n_in;
    out->weight = lin->weight;
    out->bias = lin->bias;
    return SF_OK;
}
