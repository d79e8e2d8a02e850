/*
 * test_describe_free_form.c -- the free-form model description of smoothflow.h
 * (sf_model_describe_free_form, sf_model_describe_free_form_layer, sf_model_free_form_linear;
 * src/sf_describe_free_form.c), which the OpenCL and CUDA kernels read a free-form model's
 * encoder through (platforms/common/src/CommonFreeFormKernel.cpp).
 *
 * The oracle is the model file itself: the test writes free-form model files (config_cases.h:
 * the configuration JSON and the encoder's tensors, in float64 and in float32), then reads each
 * file back with its own minimal safetensors reader (8-byte header length, the header JSON,
 * each tensor's dtype, shape and data_offsets) and requires every described number to equal the
 * configuration's and every described tensor to equal the file's bytes exactly (shape, and
 * every value bit for bit).  The constants' meaning is checked against sf_evaluate on an
 * encoder that is the identity on the centre-of-mass-free subspace (coord.2 = 0 in every
 * layer: f(x) = P x, J_V = I), whose energy is kT (|P x|^2 / 2 + latent_log_norm) + U0.
 * Then the refusals: NULL arguments, a model of the internal-coordinate kind, layers and maps
 * out of range, the node maps of the last layer, sf_model_describe on a free-form model.
 */
#include "config_cases.h"
#include "smoothflow.h"
#include "test_check.h"

#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The molar gas constant OpenMM and the core use for kT (CODATA 2018, kJ/mol/K). */
#define GAS_CONSTANT 0.00831446261815324

/* ------------------------------------------------- an independent file reader */

typedef struct file_view {
    const unsigned char *bytes;
    size_t size, data_start;
    cJSON *header, *config;
} file_view;

static int view_open(file_view *v, const unsigned char *bytes, size_t size)
{
    memset(v, 0, sizeof *v);
    if (size < 8) return 0;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)bytes[i] << (8 * i);
    if (n > size - 8) return 0;
    v->bytes = bytes;
    v->size = size;
    v->data_start = 8 + (size_t)n;
    v->header = cJSON_ParseWithLength((const char *)bytes + 8, (size_t)n);
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(v->header, "__metadata__");
    const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(meta, "config");
    v->config = cJSON_IsString(cfg) ? cJSON_Parse(cfg->valuestring) : NULL;
    return v->header && v->config;
}

static void view_close(file_view *v)
{
    cJSON_Delete(v->header);
    cJSON_Delete(v->config);
}

/* Tensor `name` of the file as doubles (malloc'd), its shape in rows x cols (cols 1 for a
 * vector), or NULL where the file lacks it. */
static double *view_tensor(const file_view *v, const char *name, int *rows, int *cols)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(v->header, name);
    if (!e) return NULL;
    const char *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype")->valuestring;
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    *rows = cJSON_GetArrayItem(shape, 0)->valueint;
    *cols = cJSON_GetArraySize(shape) == 2 ? cJSON_GetArrayItem(shape, 1)->valueint : 1;
    const size_t count = (size_t)*rows * (size_t)*cols, begin = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
    const int f32 = strcmp(dtype, "F32") == 0;
    if (v->data_start + begin + count * (f32 ? 4 : 8) > v->size) return NULL;
    double *out = malloc((count + 1) * sizeof *out);
    const unsigned char *at = v->bytes + v->data_start + begin;
    for (size_t i = 0; i < count; i++) {
        if (f32) {
            float f;
            memcpy(&f, at + 4 * i, 4);
            out[i] = f;
        } else {
            memcpy(&out[i], at + 8 * i, 8);
        }
    }
    return out;
}

static double config_number(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(it) ? it->valuedouble : NAN;
}

/* ------------------------------------------------------------ the model files */

/* 5 particles in 3D, hidden 4, three layers (two with a node update), no atoms list. */
static const char *const config_3d =
    "{\"kind\": \"free_form\", \"n_atoms\": 5, \"temperature\": 300.0, \"energy_offset\": 1.25,"
    " \"network\": {\"kind\": \"egnn\", \"spatial_dim\": 3, \"hidden\": 4, \"layers\": 3, \"distance_scale\": 0.7},"
    " \"latent\": \"standard_normal_com_free\"}";

/* 3 particles in 2D, hidden 2, one layer: no node update anywhere. */
static const char *const config_one_layer =
    "{\"kind\": \"free_form\", \"n_atoms\": 3, \"temperature\": 77.5, \"energy_offset\": 0,"
    " \"network\": {\"kind\": \"egnn\", \"spatial_dim\": 2, \"hidden\": 2, \"layers\": 1, \"distance_scale\": 3.0},"
    " \"latent\": \"standard_normal_com_free\"}";

static unsigned char *write_model(const char *config, int f32, unsigned seed, int identity, size_t *size)
{
    cc_tensors ts;
    cc_free_form_tensors(config, 1.0, seed, &ts);
    if (identity) /* coord.2 = 0 in every layer: no coordinate update, f = P x */
        for (int i = 0; i < ts.n; i++)
            if (strstr(ts.t[i].name, ".coord.2.")) memset(ts.t[i].v, 0, cc_count(&ts.t[i]) * sizeof(double));
    unsigned char *bytes = cc_file("openmm-smoothflow", "1", config, &ts, f32, size);
    cc_free_tensors(&ts);
    return bytes;
}

static sf_model *load(const unsigned char *bytes, size_t size, const char *what)
{
    sf_model *m = NULL;
    sf_error err;
    const sf_status rc = sf_model_load_bytes(bytes, size, &m, &err);
    CHECK(rc == SF_OK, "%s: load failed (%d): %s", what, (int)rc, err.message);
    return rc == SF_OK ? m : NULL;
}

/* ------------------------------------------------ every number and tensor */

static const char *const linear_names[SF_EGNN_NUM_LINEAR] = {"edge.0", "edge.2", "coord.0", "coord.2", "node.0",
                                                            "node.2"};

static void check_tensor(const file_view *v, const char *name, const double *got, int got_rows, int got_cols,
                         const char *what)
{
    int rows = 0, cols = 0;
    double *want = view_tensor(v, name, &rows, &cols);
    CHECK(want != NULL, "%s: the file has no tensor '%s'", what, name);
    if (!want) return;
    CHECK(got != NULL, "%s: '%s' described as NULL", what, name);
    CHECK(got_rows == rows && got_cols == cols, "%s: '%s' described as %d x %d, the file's is %d x %d", what, name,
          got_rows, got_cols, rows, cols);
    if (got && got_rows == rows && got_cols == cols) {
        int same = 1;
        for (int i = 0; i < rows * cols && same; i++) same = memcmp(&got[i], &want[i], sizeof(double)) == 0;
        CHECK(same, "%s: '%s' differs from the file's values", what, name);
    }
    free(want);
}

static void check_description(const char *config, int f32, unsigned seed, const char *what)
{
    size_t size = 0;
    unsigned char *bytes = write_model(config, f32, seed, 0, &size);
    file_view v;
    CHECK(view_open(&v, bytes, size), "%s: the test's reader cannot read the file it wrote", what);
    sf_model *m = load(bytes, size, what);
    if (!m || !v.config) {
        sf_model_free(m);
        view_close(&v);
        free(bytes);
        return;
    }
    const cJSON *net = cJSON_GetObjectItemCaseSensitive(v.config, "network");
    const int N = (int)config_number(v.config, "n_atoms"), d = (int)config_number(net, "spatial_dim");
    const int H = (int)config_number(net, "hidden"), L = (int)config_number(net, "layers");
    const double s = config_number(net, "distance_scale"), T = config_number(v.config, "temperature");
    const double U0 = config_number(v.config, "energy_offset");

    sf_free_form_description desc;
    memset(&desc, 0xA5, sizeof desc);
    CHECK(sf_model_describe_free_form(m, &desc) == SF_OK, "%s: sf_model_describe_free_form failed", what);
    CHECK(desc.n_particles == N, "%s: n_particles %d, config %d", what, desc.n_particles, N);
    CHECK(desc.dim == d, "%s: dim %d, config %d", what, desc.dim, d);
    CHECK(desc.D == (N - 1) * d, "%s: D %d, expected (N - 1) d = %d", what, desc.D, (N - 1) * d);
    CHECK(desc.hidden == H, "%s: hidden %d, config %d", what, desc.hidden, H);
    CHECK(desc.n_layers == L, "%s: n_layers %d, config %d", what, desc.n_layers, L);
    CHECK(desc.activation == 1, "%s: activation %d, expected 1 (SiLU)", what, desc.activation);
    CHECK(fabs(desc.inv_scale2 - 1.0 / (s * s)) <= 1e-15 / (s * s), "%s: inv_scale2 %.17g, 1 / s^2 = %.17g", what,
          desc.inv_scale2, 1.0 / (s * s));
    CHECK(fabs(desc.distance_scale - s) <= 4e-16 * s, "%s: distance_scale %.17g, config %.17g", what,
          desc.distance_scale, s);
    CHECK(fabs(desc.kT - GAS_CONSTANT * T) <= 1e-15 * GAS_CONSTANT * T, "%s: kT %.17g, R T = %.17g", what, desc.kT,
          GAS_CONSTANT * T);
    CHECK(desc.energy_offset == U0, "%s: energy_offset %.17g, config %.17g", what, desc.energy_offset, U0);
    const double log_norm = 0.5 * (N - 1) * d * log(2 * 3.14159265358979323846);
    CHECK(fabs(desc.latent_log_norm - log_norm) <= 1e-14 * log_norm, "%s: latent_log_norm %.17g, (D/2) log 2 pi = "
          "%.17g", what, desc.latent_log_norm, log_norm);
    CHECK(desc.D == sf_model_num_dims(m) && desc.n_particles == sf_model_num_atoms(m) &&
              desc.dim == sf_model_spatial_dim(m) && desc.kT == sf_model_kT(m),
          "%s: the description disagrees with sf_model_num_dims / num_atoms / spatial_dim / kT", what);
    check_tensor(&v, "h0", desc.h0, H, 1, what);

    for (int k = 0; k < L; k++) {
        sf_free_form_layer_description ld;
        CHECK(sf_model_describe_free_form_layer(m, k, &ld) == SF_OK, "%s: layer %d not described", what, k);
        const int node = k < L - 1; /* the file has node.* for every layer but the last */
        CHECK(ld.has_node == node && ld.n_linear == (node ? 6 : 4), "%s: layer %d has_node %d, n_linear %d", what,
              k, ld.has_node, ld.n_linear);
        for (int j = 0; j < SF_EGNN_NUM_LINEAR; j++) {
            char name[96], bias[96];
            snprintf(name, sizeof name, "layers.%d.%s.weight", k, linear_names[j]);
            snprintf(bias, sizeof bias, "layers.%d.%s.bias", k, linear_names[j]);
            sf_free_form_linear lin;
            memset(&lin, 0, sizeof lin);
            const sf_status rc = sf_model_free_form_linear(m, k, (sf_egnn_linear)j, &lin);
            if (j >= SF_EGNN_NODE1 && !node) {
                int r, c;
                double *absent = view_tensor(&v, name, &r, &c);
                CHECK(absent == NULL, "%s: the test's file has %s", what, name); /* the oracle itself */
                free(absent);
                CHECK(rc == SF_ERR_ARG, "%s: %s of the last layer described (%d), which has none", what, name,
                      (int)rc);
                continue;
            }
            CHECK(rc == SF_OK, "%s: %s not described (%d)", what, name, (int)rc);
            check_tensor(&v, name, lin.weight, lin.n_out, lin.n_in, what);
            check_tensor(&v, bias, lin.bias, lin.n_out, 1, what);
        }
    }
    sf_model_free(m);
    view_close(&v);
    free(bytes);
}

/* ---------------------------------------- the constants against the energy */

static void check_energy_constants(const char *config, const char *what)
{
    size_t size = 0;
    unsigned char *bytes = write_model(config, 0, 5, 1, &size);
    sf_model *m = load(bytes, size, what);
    free(bytes);
    if (!m) return;
    sf_free_form_description desc;
    CHECK(sf_model_describe_free_form(m, &desc) == SF_OK, "%s: not described", what);
    const int N = desc.n_particles, d = desc.dim;
    double *x = calloc((size_t)N * 3, sizeof *x), mean[3] = {0, 0, 0};
    unsigned long long st = 99;
    for (int i = 0; i < N; i++)
        for (int a = 0; a < d; a++) {
            x[i * 3 + a] = 1.3 * mb_normal(&st) + 0.7 * a; /* off the origin: P matters */
            mean[a] += x[i * 3 + a] / N;
        }
    double zz = 0;
    for (int i = 0; i < N; i++)
        for (int a = 0; a < d; a++) zz += (x[i * 3 + a] - mean[a]) * (x[i * 3 + a] - mean[a]);
    sf_workspace *ws = NULL;
    sf_error err;
    double energy = NAN;
    CHECK(sf_workspace_new(m, 1, &ws, &err) == SF_OK, "%s: workspace: %s", what, err.message);
    const sf_status rc = ws ? sf_evaluate(m, ws, 1, x, NULL, &energy, NULL, NULL, &err) : SF_ERR_ARG;
    CHECK(rc == SF_OK, "%s: evaluate failed: %s", what, err.message);
    const double want = desc.kT * (0.5 * zz + desc.latent_log_norm) + desc.energy_offset;
    CHECK(fabs(energy - want) <= 1e-12 * (fabs(want) + 1), "%s: energy %.17g of the identity encoder, from the "
          "description kT (|Px|^2/2 + latent_log_norm) + U0 = %.17g", what, energy, want);
    sf_workspace_free(ws);
    sf_model_free(m);
    free(x);
}

/* ----------------------------------------------------------------- refusals */

static void check_refusals(void)
{
    size_t size = 0;
    unsigned char *bytes = write_model(cc_free_form_config, 0, 3, 0, &size);
    sf_model *ff = load(bytes, size, "refusals");
    free(bytes);
    unsigned char *ic_bytes = cc_model(cc_base_config, NULL, 0.5, &size);
    sf_model *ic = load(ic_bytes, size, "internal-coordinate model");
    free(ic_bytes);
    if (!ff || !ic) {
        sf_model_free(ff);
        sf_model_free(ic);
        return;
    }
    sf_free_form_description desc, sentinel;
    sf_free_form_layer_description ld, ld_sentinel;
    sf_free_form_linear lin, lin_sentinel;
    memset(&sentinel, 0x5A, sizeof sentinel);
    memset(&ld_sentinel, 0x5A, sizeof ld_sentinel);
    memset(&lin_sentinel, 0x5A, sizeof lin_sentinel);
#define UNTOUCHED(var, ref) (memcmp(&(var), &(ref), sizeof(var)) == 0)
#define EXPECT_DESC_REFUSED(model, what)                                                                  \
    do {                                                                                                  \
        desc = sentinel;                                                                                  \
        const sf_status rc_ = sf_model_describe_free_form(model, &desc);                                 \
        CHECK(rc_ == SF_ERR_ARG && UNTOUCHED(desc, sentinel), "describe_free_form(%s): %d, or wrote", what, \
              (int)rc_);                                                                                  \
    } while (0)
#define EXPECT_LAYER_REFUSED(model, k, what)                                                                     \
    do {                                                                                                         \
        ld = ld_sentinel;                                                                                        \
        const sf_status rc_ = sf_model_describe_free_form_layer(model, k, &ld);                                 \
        CHECK(rc_ == SF_ERR_ARG && UNTOUCHED(ld, ld_sentinel), "describe_free_form_layer(%s): %d, or wrote", what, \
              (int)rc_);                                                                                         \
    } while (0)
#define EXPECT_LINEAR_REFUSED(model, k, j, what)                                                               \
    do {                                                                                                       \
        lin = lin_sentinel;                                                                                    \
        const sf_status rc_ = sf_model_free_form_linear(model, k, (sf_egnn_linear)(j), &lin);                 \
        CHECK(rc_ == SF_ERR_ARG && UNTOUCHED(lin, lin_sentinel), "free_form_linear(%s): %d, or wrote", what, \
              (int)rc_);                                                                                       \
    } while (0)

    EXPECT_DESC_REFUSED(NULL, "NULL model");
    EXPECT_DESC_REFUSED(ic, "internal-coordinate model");
    CHECK(sf_model_describe_free_form(ff, NULL) == SF_ERR_ARG, "describe_free_form(out NULL) accepted");
    /* cc_free_form_config: 2 layers, the second without node update */
    EXPECT_LAYER_REFUSED(NULL, 0, "NULL model");
    EXPECT_LAYER_REFUSED(ic, 0, "internal-coordinate model, layer 0");
    EXPECT_LAYER_REFUSED(ff, -1, "layer -1");
    EXPECT_LAYER_REFUSED(ff, 2, "layer 2 of 2");
    CHECK(sf_model_describe_free_form_layer(ff, 0, NULL) == SF_ERR_ARG, "describe_free_form_layer(out NULL) accepted");
    EXPECT_LINEAR_REFUSED(NULL, 0, SF_EGNN_EDGE1, "NULL model");
    EXPECT_LINEAR_REFUSED(ic, 0, SF_EGNN_EDGE1, "internal-coordinate model");
    EXPECT_LINEAR_REFUSED(ff, -1, SF_EGNN_EDGE1, "layer -1");
    EXPECT_LINEAR_REFUSED(ff, 2, SF_EGNN_EDGE1, "layer 2 of 2");
    EXPECT_LINEAR_REFUSED(ff, 0, -1, "map -1");
    EXPECT_LINEAR_REFUSED(ff, 0, SF_EGNN_NUM_LINEAR, "map 6");
    EXPECT_LINEAR_REFUSED(ff, 1, SF_EGNN_NODE1, "node.0 of the last layer");
    EXPECT_LINEAR_REFUSED(ff, 1, SF_EGNN_NODE2, "node.2 of the last layer");
    CHECK(sf_model_free_form_linear(ff, 0, SF_EGNN_EDGE1, NULL) == SF_ERR_ARG, "free_form_linear(out NULL) accepted");
    CHECK(sf_model_free_form_linear(ff, 0, SF_EGNN_NODE2, &lin) == SF_OK, "node.2 of layer 0 refused");

    /* the internal-coordinate description still refuses the free-form kind */
    sf_model_description md;
    sf_layer_description mld;
    CHECK(sf_model_describe(ff, &md) == SF_ERR_ARG, "sf_model_describe accepted a free-form model");
    CHECK(sf_model_describe_layer(ff, 0, &mld) == SF_ERR_ARG, "sf_model_describe_layer accepted a free-form model");
    CHECK(sf_model_layer_weight(ff, 0, 0) == NULL, "sf_model_layer_weight of a free-form model");
    CHECK(sf_model_describe(ic, &md) == SF_OK, "sf_model_describe refused an internal-coordinate model");
    sf_model_free(ff);
    sf_model_free(ic);
}

int main(void)
{
    check_description(cc_free_form_config, 0, 11, "dw4-like (4 x 2D, H 3, L 2), float64");
    check_description(config_3d, 0, 23, "5 x 3D, H 4, L 3, float64");
    check_description(config_3d, 1, 29, "5 x 3D, H 4, L 3, float32 file");
    check_description(config_one_layer, 0, 31, "3 x 2D, H 2, L 1, float64");
    check_energy_constants(cc_free_form_config, "energy, 4 x 2D");
    check_energy_constants(config_3d, "energy, 5 x 3D");
    check_refusals();
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
