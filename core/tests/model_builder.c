/* model_builder.c -- random SmoothFlow model files for the C tests. */
#include "model_builder.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double mb_uniform(unsigned long long *s)
{
    /* splitmix64 */
    unsigned long long z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return ((z >> 11) + 0.5) / 9007199254740992.0;
}

double mb_normal(unsigned long long *s)
{
    double u1 = mb_uniform(s), u2 = mb_uniform(s);
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

mb_spec mb_default_spec(unsigned seed)
{
    mb_spec s = {7, 3, 3, 2, {9, 7, 0, 0}, "silu", 1, 0.6, "error", 0, seed, "smooth"};
    return s;
}

const char *mb_layer_transform(const mb_spec *spec, int l)
{
    static const char *cycle[3] = {"smooth", "spline", "affine"};
    if (!spec->transform) return "smooth";
    if (strcmp(spec->transform, "mixed") == 0) return cycle[l % 3];
    return spec->transform;
}

/* Raw parameters per transformed dimension (docs/model-format.md 4 and 7). */
static int params_per_dim(const char *kind, int K)
{
    if (strcmp(kind, "spline") == 0) return 3 * K + 2;
    if (strcmp(kind, "affine") == 0) return 2;
    return 4 * K + 2;
}

/* Atom placed by row r, a deterministic permutation of the model order. */
static void permutation(const mb_spec *spec, int *perm)
{
    unsigned long long st = spec->seed * 7919ULL + 11;
    int n = spec->n_atoms;
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(mb_uniform(&st) * (i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static cJSON *int_array(const int *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static char *config_json(const mb_spec *spec, int *widths_out, int *n_linear)
{
    int N = spec->n_atoms, D = 3 * N - 6;
    int *perm = malloc(sizeof(int) * N);
    permutation(spec, perm);
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddNumberToObject(cfg, "n_atoms", N);
    cJSON_AddNumberToObject(cfg, "temperature", 300.0);
    cJSON_AddNumberToObject(cfg, "energy_offset", 1.5);
    cJSON *zm = cJSON_AddArrayToObject(cfg, "zmatrix");
    for (int r = 0; r < N; r++) {
        int row[4] = {perm[r], r >= 1 ? perm[r - 1] : -1, r >= 2 ? perm[r - 2] : -1, r >= 3 ? perm[r - 3] : -1};
        cJSON_AddItemToArray(zm, int_array(row, 4));
    }
    cJSON_AddStringToObject(cfg, "prior", "uniform");
    cJSON *sm = cJSON_AddObjectToObject(cfg, "smooth");
    cJSON_AddNumberToObject(sm, "s_min", 0.01);
    cJSON_AddNumberToObject(sm, "alpha_min", 0.1);
    cJSON_AddNumberToObject(sm, "c_max", 0.99);
    cJSON_AddNumberToObject(sm, "beta", 1);
    int uses_spline = 0, uses_affine = 0;
    for (int l = 0; l < spec->n_layers; l++) {
        uses_spline |= strcmp(mb_layer_transform(spec, l), "spline") == 0;
        uses_affine |= strcmp(mb_layer_transform(spec, l), "affine") == 0;
    }
    if (uses_spline) {
        cJSON *sp = cJSON_AddObjectToObject(cfg, "spline");
        cJSON_AddNumberToObject(sp, "min_bin_width", 1e-3);
        cJSON_AddNumberToObject(sp, "min_bin_height", 2e-3);
        cJSON_AddNumberToObject(sp, "min_derivative", 1e-3);
    }
    if (uses_affine) cJSON_AddNumberToObject(cJSON_AddObjectToObject(cfg, "affine"), "scale_max", 3.0);
    cJSON *sup = cJSON_AddObjectToObject(cfg, "support");
    cJSON_AddStringToObject(sup, "policy", spec->policy);
    cJSON_AddNumberToObject(sup, "margin", 0.02);
    cJSON_AddNumberToObject(sup, "wall_constant", 500.0);
    cJSON *layers = cJSON_AddArrayToObject(cfg, "layers");
    int *trans = malloc(sizeof(int) * D), *cond = malloc(sizeof(int) * D);
    for (int l = 0; l < spec->n_layers; l++) {
        int nt = 0, nc = 0;
        /* Alternate halves with a shift so every dim is transformed. */
        for (int d = 0; d < D; d++) {
            if ((d + l) % 2 == 0) trans[nt++] = d;
            else cond[nc++] = d;
        }
        cJSON *L = cJSON_CreateObject();
        cJSON_AddStringToObject(L, "transform", mb_layer_transform(spec, l));
        cJSON_AddStringToObject(L, "direction", (spec->mixed_directions == 2 || (spec->mixed_directions == 1 && l % 2)) ? "density" : "generative");
        cJSON_AddItemToObject(L, "transformed", int_array(trans, nt));
        cJSON_AddItemToObject(L, "conditioning", int_array(cond, nc));
        cJSON_AddNumberToObject(L, "n_components", spec->K);
        cJSON_AddItemToObject(L, "hidden", int_array(spec->hidden, spec->n_hidden));
        cJSON_AddStringToObject(L, "activation", spec->activation);
        cJSON_AddItemToArray(layers, L);
        if (widths_out) {
            int w0 = 0;
            for (int i = 0; i < nc; i++) w0 += cond[i] >= 2 * N - 3 ? 2 : 1;
            int *w = widths_out + l * 8;
            w[0] = w0;
            for (int h = 0; h < spec->n_hidden; h++) w[h + 1] = spec->hidden[h];
            w[spec->n_hidden + 1] = nt * params_per_dim(mb_layer_transform(spec, l), spec->K);
        }
    }
    *n_linear = spec->n_hidden + 1;
    char *text = cJSON_PrintUnformatted(cfg);
    cJSON_Delete(cfg);
    free(perm);
    free(trans);
    free(cond);
    return text;
}

typedef struct blob {
    unsigned char *data;
    size_t size, cap;
} blob;

static void append(blob *b, const void *p, size_t n)
{
    if (b->size + n > b->cap) {
        b->cap = (b->size + n) * 2;
        b->data = realloc(b->data, b->cap);
    }
    memcpy(b->data + b->size, p, n);
    b->size += n;
}

static void add_tensor(cJSON *header, blob *data, const char *name, const double *v, int rows, int cols, int f32)
{
    size_t n = (size_t)rows * (cols ? cols : 1), begin = data->size;
    for (size_t i = 0; i < n; i++) {
        if (f32) {
            float f = (float)v[i];
            append(data, &f, 4);
        } else {
            append(data, &v[i], 8);
        }
    }
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "dtype", f32 ? "F32" : "F64");
    int shape[2] = {rows, cols};
    cJSON_AddItemToObject(t, "shape", int_array(shape, cols ? 2 : 1));
    cJSON *off = cJSON_CreateArray();
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)begin));
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)data->size));
    cJSON_AddItemToObject(t, "data_offsets", off);
    cJSON_AddItemToObject(header, name, t);
}

unsigned char *mb_build(const mb_spec *spec, const char *config_override, const char *version_override, size_t *size)
{
    int N = spec->n_atoms, n_linear = 0;
    int widths[64 * 8];
    char *config = config_json(spec, widths, &n_linear);
    unsigned long long st = spec->seed * 104729ULL + 3;
    cJSON *header = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(header, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "openmm-smoothflow");
    cJSON_AddStringToObject(meta, "format_version", version_override ? version_override : "1");
    cJSON_AddStringToObject(meta, "config", config_override ? config_override : config);
    blob data = {0};
    double *lo = malloc(sizeof(double) * N), *hi = malloc(sizeof(double) * N);
    for (int i = 0; i < N - 1; i++) {
        lo[i] = 0.09 + 0.02 * mb_uniform(&st);
        hi[i] = lo[i] + 0.05 + 0.05 * mb_uniform(&st);
    }
    add_tensor(header, &data, "bond_lo", lo, N - 1, 0, spec->float32);
    add_tensor(header, &data, "bond_hi", hi, N - 1, 0, spec->float32);
    for (int l = 0; l < spec->n_layers; l++) {
        for (int m = 0; m < n_linear; m++) {
            int in = widths[l * 8 + m], out = widths[l * 8 + m + 1];
            double *w = malloc(sizeof(double) * (size_t)(in * out + 1)), *b = malloc(sizeof(double) * out);
            double scale = spec->weight_scale / sqrt(in > 0 ? in : 1);
            for (int i = 0; i < in * out; i++) w[i] = scale * mb_normal(&st);
            for (int i = 0; i < out; i++) b[i] = spec->weight_scale * mb_normal(&st);
            char name[64];
            snprintf(name, sizeof name, "layers.%d.net.%d.weight", l, m);
            add_tensor(header, &data, name, w, out, in, spec->float32);
            snprintf(name, sizeof name, "layers.%d.net.%d.bias", l, m);
            add_tensor(header, &data, name, b, out, 0, spec->float32);
            free(w);
            free(b);
        }
    }
    char *htext = cJSON_PrintUnformatted(header);
    size_t hlen = strlen(htext);
    blob file = {0};
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((unsigned long long)hlen >> (8 * i));
    append(&file, len8, 8);
    append(&file, htext, hlen);
    append(&file, data.data, data.size);
    free(htext);
    free(data.data);
    free(lo);
    free(hi);
    free(config);
    cJSON_Delete(header);
    *size = file.size;
    return file.data;
}

static void sub(const double *a, const double *b, double *o) { for (int c = 0; c < 3; c++) o[c] = a[c] - b[c]; }
static void cross3(const double *a, const double *b, double *o)
{
    o[0] = a[1] * b[2] - a[2] * b[1];
    o[1] = a[2] * b[0] - a[0] * b[2];
    o[2] = a[0] * b[1] - a[1] * b[0];
}
static void normalize(double *v)
{
    double n = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    for (int c = 0; c < 3; c++) v[c] /= n;
}

/* NeRF: place d with |cd| = bond, angle(d,c,b) = theta, dihedral(d,c,b,a) = phi. */
static void place(const double *a, const double *b, const double *c, double bond, double theta, double phi, double *d)
{
    double bc[3], ab[3], n[3], m[3];
    sub(c, b, bc);
    normalize(bc);
    sub(b, a, ab);
    cross3(ab, bc, n);
    normalize(n);
    cross3(n, bc, m);
    double d2[3] = {-bond * cos(theta), bond * sin(theta) * cos(phi), bond * sin(theta) * sin(phi)};
    for (int k = 0; k < 3; k++) d[k] = c[k] + d2[0] * bc[k] + d2[1] * m[k] + d2[2] * n[k];
}

void mb_positions(const mb_spec *spec, unsigned seed, double *pos)
{
    int N = spec->n_atoms;
    int *perm = malloc(sizeof(int) * N);
    permutation(spec, perm);
    /* The bond bounds are drawn in mb_build from this stream: replay it. */
    unsigned long long bst = spec->seed * 104729ULL + 3, st = seed * 31337ULL + 5;
    double *bond = malloc(sizeof(double) * N);
    for (int i = 0; i < N - 1; i++) {
        double lo = 0.09 + 0.02 * mb_uniform(&bst);
        double hi = lo + 0.05 + 0.05 * mb_uniform(&bst);
        bond[i] = lo + (0.25 + 0.5 * mb_uniform(&st)) * (hi - lo);
    }
    double *p0 = &pos[3 * perm[0]];
    p0[0] = p0[1] = p0[2] = 0;
    double *p1 = &pos[3 * perm[1]];
    p1[0] = bond[0];
    p1[1] = p1[2] = 0;
    for (int r = 2; r < N; r++) {
        double theta = (60 + 90 * mb_uniform(&st)) * 3.141592653589793 / 180;
        double phi = (2 * mb_uniform(&st) - 1) * 3.141592653589793;
        double ghost[3] = {0, 1, 0};
        const double *a = r >= 3 ? &pos[3 * perm[r - 3]] : ghost;
        place(a, &pos[3 * perm[r - 2]], &pos[3 * perm[r - 1]], bond[r - 1], theta, phi, &pos[3 * perm[r]]);
    }
    free(bond);
    free(perm);
}
