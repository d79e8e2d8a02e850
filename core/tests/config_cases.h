/* config_cases.h -- model files made from a configuration JSON, for
 * test_model_config.c: one base configuration that uses every section and
 * every transform, edits of it by path ("smooth.beta", "layers[1].hidden",
 * "zmatrix[3][1]"), the tensors a valid configuration implies, and the
 * safetensors file around them (docs/model-format.md section 1), written
 * independently of the core.  test_model_config.c and test_describe_free_form.c include it. */
#ifndef CONFIG_CASES_H
#define CONFIG_CASES_H

#include "model_builder.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* N = 5 (D = 9: bonds 0..3, angles 4..6, torsions 7, 8); a smooth, a spline and an
 * affine layer, all three activations, an atoms list and every constants section. */
static const char *const cc_base_config =
    "{\"n_atoms\": 5, \"temperature\": 300.0, \"energy_offset\": 1.5,"
    " \"zmatrix\": [[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 0, -1], [3, 2, 1, 0], [4, 3, 2, 1]],"
    " \"atoms\": [{\"name\": \"C1\", \"residue\": \"ALA\", \"residue_index\": 0, \"element\": \"C\"},"
    "  {\"name\": \"C2\", \"residue\": \"ALA\", \"residue_index\": 0, \"element\": \"C\"},"
    "  {\"name\": \"N3\", \"residue\": \"GLY\", \"residue_index\": 1, \"element\": \"N\"},"
    "  {\"name\": \"C4\", \"residue\": \"GLY\", \"residue_index\": 1, \"element\": \"C\"},"
    "  {\"name\": \"O5\", \"residue\": \"GLY\", \"residue_index\": 999999, \"element\": \"O\"}],"
    " \"prior\": \"uniform\","
    " \"smooth\": {\"s_min\": 0.01, \"alpha_min\": 0.1, \"c_max\": 0.99, \"beta\": 2},"
    " \"spline\": {\"min_bin_width\": 0.001, \"min_bin_height\": 0.002, \"min_derivative\": 0.001},"
    " \"affine\": {\"scale_max\": 3.0},"
    " \"support\": {\"policy\": \"error\", \"margin\": 0.02, \"wall_constant\": 500.0},"
    " \"layers\": ["
    "  {\"transform\": \"smooth\", \"direction\": \"generative\", \"transformed\": [0, 2, 4, 6, 8],"
    "   \"conditioning\": [1, 3, 5, 7], \"n_components\": 3, \"hidden\": [6], \"activation\": \"softplus\"},"
    "  {\"transform\": \"spline\", \"direction\": \"density\", \"transformed\": [1, 3, 5, 7],"
    "   \"conditioning\": [0, 2, 4, 6, 8], \"n_components\": 4, \"hidden\": [5, 4], \"activation\": \"tanh\"},"
    "  {\"transform\": \"affine\", \"direction\": \"generative\", \"transformed\": [0, 1, 2, 3],"
    "   \"conditioning\": [4, 5, 6, 7, 8], \"hidden\": [], \"activation\": \"silu\"}]}";

#define CC_BOND_LO 0.0625 /* nm, every bond of the files made here (exact in binary) */
#define CC_BOND_HI 0.1875

/* --------------------------------------------------------- editing by path */

/* The item at a path of the form key(.key|[i])*, its parent and the last step. */
static cJSON *cc_walk(cJSON *root, const char *path, cJSON **parent, char *last_key, int *last_index)
{
    cJSON *cur = root, *par = NULL;
    const char *p = path;
    *last_index = -1;
    last_key[0] = 0;
    while (*p) {
        par = cur;
        if (*p == '[') {
            int i = atoi(p + 1);
            p = strchr(p, ']') + 1;
            *last_index = i;
            last_key[0] = 0;
            cur = cur ? cJSON_GetArrayItem(cur, i) : NULL;
        } else {
            if (*p == '.') p++;
            size_t n = strcspn(p, ".[");
            memcpy(last_key, p, n);
            last_key[n] = 0;
            *last_index = -1;
            p += n;
            cur = cur ? cJSON_GetObjectItemCaseSensitive(cur, last_key) : NULL;
        }
    }
    *parent = par;
    return cur;
}

/* `config` with the item at `path` replaced by the JSON text `value` (added where
 * absent, appended where the index is the array's length), or removed where
 * value is NULL.  malloc'd, unformatted; NULL if the path has no parent. */
static char *cc_edit(const char *config, const char *path, const char *value)
{
    cJSON *root = cJSON_Parse(config), *parent = NULL;
    char key[64];
    int index;
    cc_walk(root, path, &parent, key, &index);
    char *out = NULL;
    if (parent) {
        cJSON *item = value ? cJSON_Parse(value) : NULL;
        if (index >= 0) {
            if (!item) cJSON_DeleteItemFromArray(parent, index);
            else if (index < cJSON_GetArraySize(parent)) cJSON_ReplaceItemInArray(parent, index, item);
            else cJSON_AddItemToArray(parent, item);
        } else {
            if (!item) cJSON_DeleteItemFromObjectCaseSensitive(parent, key);
            else if (cJSON_GetObjectItemCaseSensitive(parent, key))
                cJSON_ReplaceItemInObjectCaseSensitive(parent, key, item);
            else cJSON_AddItemToObject(parent, key, item);
        }
        out = cJSON_PrintUnformatted(root);
    }
    cJSON_Delete(root);
    return out;
}

/* ------------------------------------------------------------------ tensors */

typedef struct cc_tensor {
    char name[64];
    int ndim;
    long long shape[2];
    double *v; /* shape[0] * (ndim == 2 ? shape[1] : 1) values */
} cc_tensor;

typedef struct cc_tensors {
    cc_tensor t[64];
    int n;
} cc_tensors;

static size_t cc_count(const cc_tensor *t) { return (size_t)(t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1)); }

static cc_tensor *cc_add(cc_tensors *ts, const char *name, int ndim, long long d0, long long d1)
{
    cc_tensor *t = &ts->t[ts->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->v = calloc(cc_count(t) + 1, sizeof(double));
    return t;
}

static cc_tensor *cc_find(cc_tensors *ts, const char *name)
{
    for (int i = 0; i < ts->n; i++)
        if (strcmp(ts->t[i].name, name) == 0) return &ts->t[i];
    return NULL;
}

static void cc_free_tensors(cc_tensors *ts)
{
    for (int i = 0; i < ts->n; i++) free(ts->t[i].v);
    ts->n = 0;
}

/* The tensors a valid configuration implies (docs/model-format.md sections 3, 4 and 7):
 * bonds in [CC_BOND_LO, CC_BOND_HI], and per layer linear maps from the encoded
 * conditioning dims (a torsion encodes as cos and sin) through the hidden widths to
 * n_trans * P raw parameters, normal weights of spread scale / sqrt(fan-in). */
static void cc_tensors_for(const char *config, double scale, unsigned seed, cc_tensors *ts)
{
    cJSON *cfg = cJSON_Parse(config);
    const int N = cJSON_GetObjectItemCaseSensitive(cfg, "n_atoms")->valueint;
    unsigned long long st = seed * 2654435761ULL + 1;
    ts->n = 0;
    cc_tensor *lo = cc_add(ts, "bond_lo", 1, N - 1, 0), *hi = cc_add(ts, "bond_hi", 1, N - 1, 0);
    for (int i = 0; i < N - 1; i++) {
        lo->v[i] = CC_BOND_LO;
        hi->v[i] = CC_BOND_HI;
    }
    int l = 0;
    for (const cJSON *L = cJSON_GetObjectItemCaseSensitive(cfg, "layers")->child; L; L = L->next, l++) {
        const char *kind = cJSON_GetObjectItemCaseSensitive(L, "transform")->valuestring;
        const cJSON *Kj = cJSON_GetObjectItemCaseSensitive(L, "n_components");
        const int K = Kj ? Kj->valueint : 1;
        const int P = strcmp(kind, "smooth") == 0 ? 4 * K + 2 : strcmp(kind, "spline") == 0 ? 3 * K + 2 : 2;
        int width[8], nw = 0, in = 0;
        for (const cJSON *d = cJSON_GetObjectItemCaseSensitive(L, "conditioning")->child; d; d = d->next)
            in += d->valueint >= 2 * N - 3 ? 2 : 1;
        width[nw++] = in;
        for (const cJSON *h = cJSON_GetObjectItemCaseSensitive(L, "hidden")->child; h; h = h->next)
            width[nw++] = h->valueint;
        width[nw++] = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(L, "transformed")) * P;
        for (int k = 0; k + 1 < nw; k++) {
            char name[64];
            snprintf(name, sizeof name, "layers.%d.net.%d.weight", l, k);
            cc_tensor *w = cc_add(ts, name, 2, width[k + 1], width[k]);
            for (size_t i = 0; i < cc_count(w); i++) w->v[i] = scale / sqrt(width[k] ? width[k] : 1) * mb_normal(&st);
            snprintf(name, sizeof name, "layers.%d.net.%d.bias", l, k);
            cc_tensor *b = cc_add(ts, name, 1, width[k + 1], 0);
            for (size_t i = 0; i < cc_count(b); i++) b->v[i] = 0.3 * scale * mb_normal(&st);
        }
    }
    cJSON_Delete(cfg);
}

/* ---------------------------------------------------------------- the file */

/* A safetensors file: 8-byte little-endian header length, the header JSON
 * ({"__metadata__": {format, format_version, config}, tensor entries in order},
 * a NULL metadata value omitted), the tensors' bytes back to back (F32 where f32). */
static unsigned char *cc_file(const char *format, const char *version, const char *config, const cc_tensors *ts,
                              int f32, size_t *size)
{
    cJSON *h = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(h, "__metadata__");
    if (format) cJSON_AddStringToObject(meta, "format", format);
    if (version) cJSON_AddStringToObject(meta, "format_version", version);
    if (config) cJSON_AddStringToObject(meta, "config", config);
    size_t bytes = 0, el = f32 ? 4 : 8;
    for (int i = 0; i < ts->n; i++) {
        const cc_tensor *t = &ts->t[i];
        cJSON *e = cJSON_AddObjectToObject(h, t->name);
        cJSON_AddStringToObject(e, "dtype", f32 ? "F32" : "F64");
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        cJSON *off = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)bytes));
        bytes += cc_count(t) * el;
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)bytes));
    }
    char *text = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    size_t n = strlen(text);
    *size = 8 + n + bytes;
    unsigned char *out = malloc(*size);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((unsigned long long)n >> (8 * i));
    memcpy(out + 8, text, n);
    unsigned char *at = out + 8 + n;
    for (int i = 0; i < ts->n; i++)
        for (size_t j = 0; j < cc_count(&ts->t[i]); j++) {
            if (f32) {
                float f = (float)ts->t[i].v[j];
                memcpy(at, &f, 4);
            } else {
                memcpy(at, &ts->t[i].v[j], 8);
            }
            at += el;
        }
    free(text);
    return out;
}

/* A model file of `config` with the tensors `tensors_from` (a valid configuration) implies. */
static unsigned char *cc_model(const char *config, const char *tensors_from, double scale, size_t *size)
{
    cc_tensors ts;
    cc_tensors_for(tensors_from ? tensors_from : config, scale, 7, &ts);
    unsigned char *b = cc_file("openmm-smoothflow", "1", config, &ts, 0, size);
    cc_free_tensors(&ts);
    return b;
}

/* -------------------------------------------------------- the free-form kind */

/* A free-form encoder (docs/model-format.md section 9): 4 particles in 2D, hidden 3, 2 layers. */
static const char *const cc_free_form_config =
    "{\"kind\": \"free_form\", \"n_atoms\": 4, \"temperature\": 120.27, \"energy_offset\": -2.5,"
    " \"atoms\": [{\"name\": \"P1\", \"residue\": \"DW\", \"residue_index\": 0, \"element\": \"Ar\"},"
    "  {\"name\": \"P2\", \"residue\": \"DW\", \"residue_index\": 0, \"element\": \"Ar\"},"
    "  {\"name\": \"P3\", \"residue\": \"DW\", \"residue_index\": 0, \"element\": \"Ar\"},"
    "  {\"name\": \"P4\", \"residue\": \"DW\", \"residue_index\": 0, \"element\": \"Ar\"}],"
    " \"network\": {\"kind\": \"egnn\", \"spatial_dim\": 2, \"hidden\": 3, \"layers\": 2, \"distance_scale\": 1.5},"
    " \"latent\": \"standard_normal_com_free\"}";

/* The encoder's tensors (the state_dict of smoothflow_torch.particles.egnn.EGNN): h0 and per
 * layer k the maps edge.0 (2H+1 -> H), edge.2, coord.0 (H -> H), coord.2 (H -> 1) and, but
 * for the last layer, node.0 (2H -> H) and node.2; normal weights of spread scale / sqrt(fan-in). */
static void cc_free_form_tensors(const char *config, double scale, unsigned seed, cc_tensors *ts)
{
    cJSON *cfg = cJSON_Parse(config);
    const cJSON *net = cJSON_GetObjectItemCaseSensitive(cfg, "network");
    const int H = cJSON_GetObjectItemCaseSensitive(net, "hidden")->valueint;
    const int L = cJSON_GetObjectItemCaseSensitive(net, "layers")->valueint;
    unsigned long long st = seed * 2654435761ULL + 1;
    ts->n = 0;
    cc_tensor *h0 = cc_add(ts, "h0", 1, H, 0);
    for (int i = 0; i < H; i++) h0->v[i] = 0.5 * mb_normal(&st);
    for (int k = 0; k < L; k++) {
        const char *names[6] = {"edge.0", "edge.2", "coord.0", "coord.2", "node.0", "node.2"};
        const int n_in[6] = {2 * H + 1, H, H, H, 2 * H, H}, n_out[6] = {H, H, H, 1, H, H};
        for (int m = 0; m < (k < L - 1 ? 6 : 4); m++) {
            char name[64];
            snprintf(name, sizeof name, "layers.%d.%s.weight", k, names[m]);
            cc_tensor *w = cc_add(ts, name, 2, n_out[m], n_in[m]);
            for (size_t i = 0; i < cc_count(w); i++) w->v[i] = scale / sqrt(n_in[m]) * mb_normal(&st);
            snprintf(name, sizeof name, "layers.%d.%s.bias", k, names[m]);
            cc_tensor *b = cc_add(ts, name, 1, n_out[m], 0);
            for (size_t i = 0; i < cc_count(b); i++) b->v[i] = 0.3 * scale * mb_normal(&st);
        }
    }
    cJSON_Delete(cfg);
}

/* A free-form model file of `config` with the tensors `tensors_from` (a valid one) implies. */
static unsigned char *cc_free_form_model(const char *config, const char *tensors_from, double scale, size_t *size)
{
    cc_tensors ts;
    cc_free_form_tensors(tensors_from ? tensors_from : config, scale, 11, &ts);
    unsigned char *b = cc_file("openmm-smoothflow", "1", config, &ts, 0, size);
    cc_free_tensors(&ts);
    return b;
}

/* ---------------------------------------------------------------- geometry */

/* Positions (N x 3) of a configuration's Z-matrix: every bond `bond` nm, every angle
 * `angle` rad, torsions from `torsion` in steps of 1.1 rad (rows 0..2 fix the frame). */
static void cc_positions(const char *config, double bond, double angle, double torsion, double *pos)
{
    cJSON *cfg = cJSON_Parse(config);
    const cJSON *zm = cJSON_GetObjectItemCaseSensitive(cfg, "zmatrix");
    int r = 0;
    for (const cJSON *row = zm->child; row; row = row->next, r++) {
        int v[4];
        for (int c = 0; c < 4; c++) v[c] = cJSON_GetArrayItem(row, c)->valueint;
        double *p = &pos[3 * v[0]];
        if (r == 0) {
            p[0] = p[1] = p[2] = 0;
        } else if (r == 1) {
            const double *j = &pos[3 * v[1]];
            p[0] = j[0] + bond;
            p[1] = j[1];
            p[2] = j[2];
        } else {
            /* NeRF with the reference a = row[3] (or a point off the line for row 2). */
            const double *j = &pos[3 * v[1]], *k = &pos[3 * v[2]];
            double ghost[3] = {k[0], k[1] + 1, k[2] + 0.3};
            const double *a = r >= 3 ? &pos[3 * v[3]] : ghost;
            const double phi = r >= 3 ? torsion + 1.1 * (r - 3) : 0.0;
            double bc[3], ab[3], n[3], m[3], len;
            for (int c = 0; c < 3; c++) bc[c] = j[c] - k[c], ab[c] = k[c] - a[c];
            len = sqrt(bc[0] * bc[0] + bc[1] * bc[1] + bc[2] * bc[2]);
            for (int c = 0; c < 3; c++) bc[c] /= len;
            n[0] = ab[1] * bc[2] - ab[2] * bc[1];
            n[1] = ab[2] * bc[0] - ab[0] * bc[2];
            n[2] = ab[0] * bc[1] - ab[1] * bc[0];
            len = sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
            for (int c = 0; c < 3; c++) n[c] /= len;
            m[0] = n[1] * bc[2] - n[2] * bc[1];
            m[1] = n[2] * bc[0] - n[0] * bc[2];
            m[2] = n[0] * bc[1] - n[1] * bc[0];
            const double d2[3] = {-bond * cos(angle), bond * sin(angle) * cos(phi), bond * sin(angle) * sin(phi)};
            for (int c = 0; c < 3; c++) p[c] = j[c] + d2[0] * bc[c] + d2[1] * m[c] + d2[2] * n[c];
        }
    }
    cJSON_Delete(cfg);
}

#endif /* CONFIG_CASES_H */
