/* sf_workspace.c -- the caller-owned scratch memory of evaluations.  One
 * block holds every array an evaluation of up to max_batch molecules needs,
 * so sf_evaluate never allocates. */
#include "sf_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SF_ALIGN 16

typedef struct layout {
    size_t u, state, enc, act, params, gstate, gparams, genc, scratch, q, gq, logdet, logp, weight, slope, icgrad, sums,
        ff_x, ff_grad, ff_scratch, total;
    size_t enc_stride, act_stride, params_stride;
} layout;

static size_t round_up(size_t n) { return (n + SF_ALIGN - 1) / SF_ALIGN * SF_ALIGN; }

/* A free-form model evaluates one configuration at a time (sf_energy.c): its workspace is
 * that of one configuration whatever the batch, and the coupling flow's arrays are empty. */
static layout plan_free_form(const sf_model *m)
{
    layout p;
    memset(&p, 0, sizeof p);
    const size_t nd = (size_t)m->N * (size_t)m->egnn.dim;
    size_t off = round_up(sizeof(sf_workspace));
#define TAKE(field, bytes) (p.field = off, off = round_up(off + (bytes)))
    TAKE(ff_x, nd * sizeof(double));
    TAKE(ff_grad, nd * sizeof(double));
    TAKE(ff_scratch, sfG_workspace_doubles(&m->egnn) * sizeof(double));
#undef TAKE
    p.total = off;
    return p;
}

static layout plan(const sf_model *m, int B)
{
    if (m->kind == SF_FLOW_FREE_FORM) return plan_free_form(m);
    layout p;
    memset(&p, 0, sizeof p);
    size_t D = (size_t)m->D, L = (size_t)m->n_layers, b = (size_t)B;
    size_t max_in = 1, max_act = 1;
    for (int l = 0; l < m->n_layers; l++) {
        size_t in = (size_t)m->layers[l].width[0], act = sfN_activation_size(&m->layers[l]);
        max_in = in > max_in ? in : max_in;
        max_act = act > max_act ? act : max_act;
    }
    p.enc_stride = b * max_in;
    p.act_stride = b * max_act;
    p.params_stride = b * (size_t)m->max_params;
    size_t off = round_up(sizeof(sf_workspace));
#define TAKE(field, bytes) (p.field = off, off = round_up(off + (bytes)))
    TAKE(u, b * D * sizeof(double));
    TAKE(state, (L + 1) * b * D * sizeof(double));
    TAKE(enc, L * p.enc_stride * sizeof(double));
    TAKE(act, L * p.act_stride * sizeof(double));
    TAKE(params, L * p.params_stride * sizeof(double));
    TAKE(gstate, b * D * sizeof(double));
    TAKE(gparams, p.params_stride * sizeof(double));
    TAKE(genc, p.enc_stride * sizeof(double));
    TAKE(scratch, (2 * b + SF_PANEL) * (size_t)(m->max_width > 0 ? m->max_width : 1) * sizeof(double));
    TAKE(q, b * D * sizeof(double));
    TAKE(gq, b * D * sizeof(double));
    TAKE(logdet, b * sizeof(double));
    TAKE(logp, b * sizeof(double));
    TAKE(weight, b * sizeof(double));
    TAKE(slope, b * D * sizeof(double));
    TAKE(icgrad, b * D * sizeof(sf_icgrad));
    TAKE(sums, L * b * D * 3 * sizeof(double));
#undef TAKE
    p.total = off;
    return p;
}

size_t sf_workspace_size(const sf_model *model, int max_batch)
{
    if (!model || max_batch < 1) return 0;
    return plan(model, max_batch).total;
}

sf_status sf_workspace_init(const sf_model *model, int max_batch, void *memory, size_t size, sf_workspace **out,
                            sf_error *err)
{
    if (!model || !memory || !out || max_batch < 1)
        return sfE_set(err, SF_ERR_ARG, "sf_workspace_init: NULL argument or max_batch < 1");
    if ((uintptr_t)memory % SF_ALIGN)
        return sfE_set(err, SF_ERR_ARG, "sf_workspace_init: memory is not aligned to %d bytes", SF_ALIGN);
    layout p = plan(model, max_batch);
    if (size < p.total)
        return sfE_set(err, SF_ERR_ARG, "sf_workspace_init: %zu bytes given, %zu needed", size, p.total);
    unsigned char *base = memory;
    memset(base, 0, p.total);
    sf_workspace *ws = (sf_workspace *)base;
    ws->model = model;
    ws->max_batch = max_batch;
    ws->owns_memory = 0;
    if (model->kind == SF_FLOW_FREE_FORM) { /* the coupling flow's arrays stay NULL */
        ws->ff_x = (double *)(base + p.ff_x);
        ws->ff_grad = (double *)(base + p.ff_grad);
        ws->ff_scratch = (double *)(base + p.ff_scratch);
        *out = ws;
        return SF_OK;
    }
    ws->u = (double *)(base + p.u);
    ws->state = (double *)(base + p.state);
    ws->enc = (double *)(base + p.enc);
    ws->act = (double *)(base + p.act);
    ws->params = (double *)(base + p.params);
    ws->gstate = (double *)(base + p.gstate);
    ws->gparams = (double *)(base + p.gparams);
    ws->genc = (double *)(base + p.genc);
    ws->scratch = (double *)(base + p.scratch);
    ws->q = (double *)(base + p.q);
    ws->gq = (double *)(base + p.gq);
    ws->logdet = (double *)(base + p.logdet);
    ws->logp = (double *)(base + p.logp);
    ws->weight = (double *)(base + p.weight);
    ws->slope = (double *)(base + p.slope);
    ws->icgrad = (sf_icgrad *)(base + p.icgrad);
    ws->sums = (double *)(base + p.sums);
    ws->enc_stride = p.enc_stride;
    ws->act_stride = p.act_stride;
    ws->params_stride = p.params_stride;
    *out = ws;
    return SF_OK;
}

sf_status sf_workspace_new(const sf_model *model, int max_batch, sf_workspace **out, sf_error *err)
{
    if (!model || !out || max_batch < 1)
        return sfE_set(err, SF_ERR_ARG, "sf_workspace_new: NULL argument or max_batch < 1");
    size_t size = sf_workspace_size(model, max_batch);
    void *memory = aligned_alloc(SF_ALIGN, round_up(size));
    if (!memory) return sfE_set(err, SF_ERR_NOMEM, "out of memory: workspace of %zu bytes", size);
    sf_status rc = sf_workspace_init(model, max_batch, memory, size, out, err);
    if (rc != SF_OK) { free(memory); return rc; }
    (*out)->owns_memory = 1;
    return SF_OK;
}

void sf_workspace_free(sf_workspace *ws)
{
    if (ws && ws->owns_memory) free(ws);
}
