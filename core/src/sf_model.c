/* sf_model.c -- model loading: configuration, validation, weights. */
#define _POSIX_C_SOURCE 200809L /* open, fstat, fdopen: what a model path names is examined first */
#include "sf_internal.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef _WIN32
#include <io.h>
#ifndef S_ISREG
#define S_ISREG(mode) (((mode) & S_IFMT) == S_IFREG)
#endif
#else
#include <fcntl.h>
#include <unistd.h>
#endif

/* ------------------------------------------------------------ JSON reads */
/* The rules are those of pytorch/smoothflow_torch/model_config.schema.json and
 * the list in its description ([json-syntax], [zmatrix-order], ...); the
 * PyTorch reader enforces the same, and tests/data/config_corpus/ runs both. */

#define SF_MAX_ATOMS 1000000
#define SF_MAX_HIDDEN_WIDTH (1 << 20)
#define SF_MAX_INDEX 999999 /* residue_index */
/* Value ranges that keep every intermediate of an evaluation far inside the
 * doubles (the schema states the same; docs/model-format.md section 1, "Limits"). */
#define SF_MAX_TEMPERATURE 1e6       /* K: kT <= 8314 kJ/mol */
#define SF_MAX_ENERGY_OFFSET 1e12    /* |U0|, kJ/mol */
#define SF_MAX_WALL_CONSTANT 1e12    /* kJ/mol */
#define SF_MAX_EDGE_FORCE 1e12       /* kJ/mol per unit of u */
#define SF_MIN_S_MIN 1e-6            /* smooth: 1 / s and its square stay <= 1e12 */
#define SF_MIN_ALPHA_MIN 1e-6        /* smooth: an unsaturated ramp has h^-beta <= ~1e9 */
#define SF_MAX_ALPHA_MIN 1e6
#define SF_MIN_SPLINE_CONSTANT 1e-12 /* spline: bin slopes <= 1e12, knot derivatives >= 1e-12 */
#define SF_MAX_MIN_DERIVATIVE 1e6
#define SF_MAX_SCALE_MAX 50.0        /* affine: e^s <= e^50 */
#define SF_MAX_BOND 1000.0           /* nm, bond_hi */
#define SF_MIN_BOND_WIDTH 1e-6       /* nm, bond_hi - bond_lo: u = (b - lo) / width stays finite */
#define SF_MAX_NET_BOUND 1e8         /* bound of a linear map's outputs and of its weights' sum */
/* The free-form kind (docs/model-format.md section 9): ranges of its network section. */
#define SF_MAX_EGNN_HIDDEN 65536
#define SF_MAX_EGNN_LAYERS 10000
#define SF_MIN_DISTANCE_SCALE 1e-6   /* 1 / s^2 <= 1e12 */
#define SF_MAX_DISTANCE_SCALE 1e6

/* [json-syntax]: what cJSON tolerates and RFC 8259 does not (a number with a
 * leading zero or '+', raw control characters, other bytes outside strings).
 * Returns NULL or what is wrong; cJSON checks the rest of the grammar. */
static const char *json_syntax_problem(const char *s)
{
    for (const char *p = s; *p;) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            for (p++; *p && *p != '"'; p++) {
                if ((unsigned char)*p < 0x20) return "a raw control character inside a string";
                /* cJSON would end the C string at NUL, hiding the rest from this reader */
                if (*p == '\\' && strncmp(p + 1, "u0000", 5) == 0) return "a NUL character (\\u0000) inside a string";
                if (*p == '\\' && p[1]) p++;
            }
            if (*p) p++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            const char *q = p + (c == '-');
            if (*q == '0') q++;
            else if (*q >= '1' && *q <= '9') while (*q >= '0' && *q <= '9') q++;
            else return "a number without digits";
            if (*q == '.') {
                if (!(q[1] >= '0' && q[1] <= '9')) return "a number with no digit after '.'";
                for (q++; *q >= '0' && *q <= '9'; q++) {}
            }
            if (*q == 'e' || *q == 'E') {
                q += (q[1] == '+' || q[1] == '-') ? 2 : 1;
                if (!(*q >= '0' && *q <= '9')) return "a number with an empty exponent";
                while (*q >= '0' && *q <= '9') q++;
            }
            if ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' || *q == '+' || *q == '-')
                return "a number not in JSON syntax (a leading zero or a second '.' or exponent)";
            p = q;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || strchr("{}[]:,", c) ||
                   (c >= 'a' && c <= 'z')) {
            p++; /* structure, or the words true/false/null that cJSON checks */
        } else {
            return "a character JSON does not allow outside strings (NaN and Infinity are not JSON)";
        }
    }
    return NULL;
}

/* [duplicate-keys] and [finite-numbers], anywhere in the tree. */
static sf_status json_tree_check(const cJSON *v, const char *key, sf_error *err)
{
    if (cJSON_IsNumber(v) && !isfinite(v->valuedouble))
        return sfE_set(err, SF_ERR_FORMAT, "model config: '%.100s' holds a number that is not a finite double",
                       key ? key : "(array item)");
    /* No object of the format has more than 11 keys: a larger one repeats a key or holds an
     * unknown one, so it is refused without the quadratic search below. */
    if (cJSON_IsObject(v) && cJSON_GetArraySize(v) > 64)
        return sfE_set(err, SF_ERR_MODEL, "model config: an object with %d keys repeats a key or holds unknown ones",
                       cJSON_GetArraySize(v));
    for (const cJSON *c = v->child; c; c = c->next) {
        if (cJSON_IsObject(v))
            for (const cJSON *d = v->child; d != c; d = d->next)
                if (strcmp(d->string, c->string) == 0)
                    return sfE_set(err, SF_ERR_FORMAT, "model config: an object holds the key '%.100s' twice",
                                   c->string);
        sf_status rc = json_tree_check(c, cJSON_IsObject(v) ? c->string : key, err);
        if (rc != SF_OK) return rc;
    }
    return SF_OK;
}

/* An object's keys must be among `allowed` (NULL-terminated): a reader cannot
 * know what another key means. */
static sf_status json_known_keys(const cJSON *obj, const char *where, const char *const *allowed, sf_error *err)
{
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *const *a = allowed;
        while (*a && strcmp(*a, c->string) != 0) a++;
        if (!*a) return sfE_set(err, SF_ERR_MODEL, "model config: %s has the unknown key '%.100s'", where, c->string);
    }
    return SF_OK;
}

/* 1 where v is a number with no fraction in lo..hi. */
static int json_is_int(const cJSON *v, double lo, double hi)
{
    return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && v->valuedouble >= lo &&
           v->valuedouble <= hi;
}

/* A number: a missing optional key keeps *out; 1 on success. */
static int json_number(const cJSON *obj, const char *key, int required, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return !required;
    if (!cJSON_IsNumber(v)) return 0;
    *out = v->valuedouble;
    return 1;
}

static const char *json_string(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* An array of integers in lo..hi into a fresh array; its length, -1 when it
 * is not such an array, or JSON_NOMEM, so that callers report the right status. */
enum { JSON_NOMEM = -2 };
static int json_int_array(const cJSON *arr, int lo, int hi, int **out)
{
    *out = NULL;
    if (!cJSON_IsArray(arr)) return -1;
    int n = cJSON_GetArraySize(arr);
    *out = malloc((n > 0 ? (size_t)n : 1) * sizeof(int));
    if (!*out) return JSON_NOMEM;
    int i = 0;
    for (const cJSON *v = arr->child; v; v = v->next, i++) {
        if (!json_is_int(v, lo, hi)) {
            free(*out);
            *out = NULL;
            return -1;
        }
        (*out)[i] = (int)v->valuedouble;
    }
    return n;
}

/* ---------------------------------------------------------------- freeing */

void sf_model_free(sf_model *m)
{
    if (!m) return;
    sf_model_set_weight_precision(m, SF_WEIGHTS_FLOAT64, NULL); /* frees the rounded copies */
    for (int l = 0; m->layers && l < m->n_layers; l++) {
        sf_layer *L = &m->layers[l];
        for (int k = 0; k < L->n_linear; k++) {
            if (L->weight) free(L->weight[k]);
            if (L->bias) free(L->bias[k]);
        }
        free(L->weight);
        free(L->bias);
        free(L->width);
        free(L->trans);
        free(L->cond);
    }
    free(m->layers);
    if (m->atoms)
        for (int a = 0; a < m->N; a++) {
            free(m->atoms[a].name);
            free(m->atoms[a].residue);
        }
    free(m->atoms);
    free(m->zmatrix);
    free(m->bond_lo);
    free(m->bond_hi);
    free(m->prior_mean);
    free(m->prior_sigma);
    free(m->torsion_mean);
    free(m->torsion_kappa);
    free(m->edge_lower);
    free(m->edge_upper);
    for (int i = 0; m->egnn_tensors && i < m->n_egnn_tensors; i++) free(m->egnn_tensors[i]);
    free(m->egnn_tensors);
    free(m->egnn_layers);
    free(m->config_json);
    free(m);
}

/* ------------------------------------------------------- configuration */

static sf_status read_zmatrix(sf_model *m, const cJSON *cfg, sf_error *err)
{
    const cJSON *zm = cJSON_GetObjectItemCaseSensitive(cfg, "zmatrix");
    if (!zm) return sfE_set(err, SF_ERR_MODEL, "model config: the required key 'zmatrix' is missing");
    if (!cJSON_IsArray(zm) || cJSON_GetArraySize(zm) != m->N)
        return sfE_set(err, SF_ERR_MODEL, "model config: 'zmatrix' must be an array of n_atoms = %d rows", m->N);
    m->zmatrix = calloc((size_t)m->N, sizeof *m->zmatrix);
    int *placed = calloc((size_t)m->N, sizeof(int));
    sf_status rc = (m->zmatrix && placed) ? SF_OK : sfE_set(err, SF_ERR_NOMEM, "out of memory");
    int r = 0;
    for (const cJSON *row = zm->child; rc == SF_OK && row; row = row->next, r++) {
        int *v = NULL;
        int nv = json_int_array(row, -1000000000, 1000000000, &v);
        if (nv == JSON_NOMEM) {
            rc = sfE_set(err, SF_ERR_NOMEM, "out of memory");
        } else if (nv != 4) {
            rc = sfE_set(err, SF_ERR_MODEL, "model config: zmatrix row %d is not 4 integers", r);
        } else {
            int need = r < 3 ? r : 3; /* references this row must have */
            for (int c = 0; c < 4 && rc == SF_OK; c++) {
                int a = v[c];
                if (c > need) {
                    if (a != -1)
                        rc = sfE_set(err, SF_ERR_MODEL, "model config: zmatrix row %d column %d must be -1", r, c);
                } else if (a < 0 || a >= m->N) {
                    rc = sfE_set(err, SF_ERR_MODEL, "model config: zmatrix row %d names atom %d, outside 0..%d", r,
                                 a, m->N - 1);
                } else if (c == 0 && placed[a]) {
                    rc = sfE_set(err, SF_ERR_MODEL, "model config: zmatrix places atom %d twice (row %d)", a, r);
                } else if (c > 0 && !placed[a]) {
                    rc = sfE_set(err, SF_ERR_MODEL,
                                 "model config: zmatrix row %d refers to atom %d before it is placed", r, a);
                }
                for (int c2 = 0; c2 < c && c <= need && rc == SF_OK; c2++)
                    if (v[c2] == a)
                        rc = sfE_set(err, SF_ERR_MODEL, "model config: zmatrix row %d repeats atom %d", r, a);
            }
            if (rc == SF_OK) {
                memcpy(m->zmatrix[r], v, sizeof m->zmatrix[r]);
                placed[v[0]] = 1;
            }
        }
        free(v);
    }
    free(placed);
    return rc;
}

static sf_status read_atoms(sf_model *m, const cJSON *cfg, sf_error *err)
{
    static const char *const keys[] = {"name", "residue", "residue_index", "element", NULL};
    const cJSON *atoms = cJSON_GetObjectItemCaseSensitive(cfg, "atoms");
    if (!atoms) return SF_OK;
    if (!cJSON_IsArray(atoms) || cJSON_GetArraySize(atoms) != m->N)
        return sfE_set(err, SF_ERR_MODEL, "model config: 'atoms' must list n_atoms = %d entries", m->N);
    m->atoms = calloc((size_t)m->N, sizeof *m->atoms);
    if (!m->atoms) return sfE_set(err, SF_ERR_NOMEM, "out of memory");
    int a = 0;
    for (const cJSON *it = atoms->child; it; it = it->next, a++) {
        char where[32];
        snprintf(where, sizeof where, "atoms[%d]", a);
        if (!cJSON_IsObject(it))
            return sfE_set(err, SF_ERR_MODEL, "model config: %s must be an object", where);
        sf_status rc = json_known_keys(it, where, keys, err);
        if (rc != SF_OK) return rc;
        const char *name = json_string(it, "name"), *res = json_string(it, "residue");
        const cJSON *ri = cJSON_GetObjectItemCaseSensitive(it, "residue_index");
        if (!name || !res || !json_string(it, "element") || !json_is_int(ri, 0, SF_MAX_INDEX))
            return sfE_set(err, SF_ERR_MODEL,
                           "model config: %s needs strings 'name', 'residue', 'element' and an integer "
                           "'residue_index' in 0..%d", where, SF_MAX_INDEX);
        m->atoms[a].name = sfU_strdup(name);
        m->atoms[a].residue = sfU_strdup(res);
        m->atoms[a].residue_index = (int)ri->valuedouble;
        if (!m->atoms[a].name || !m->atoms[a].residue) return sfE_set(err, SF_ERR_NOMEM, "out of memory");
    }
    return SF_OK;
}

/* Reads an array of exactly n numbers into a fresh array; 1 on success, 0
 * when it is not such an array, JSON_NOMEM when out of memory. */
static int json_number_array(const cJSON *arr, int n, double **out)
{
    *out = NULL;
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != n) return 0;
    *out = malloc((n > 0 ? (size_t)n : 1) * sizeof(double));
    if (!*out) return JSON_NOMEM;
    int i = 0;
    for (const cJSON *v = arr->child; v; v = v->next, i++) {
        if (!cJSON_IsNumber(v)) {
            free(*out);
            *out = NULL;
            return 0;
        }
        (*out)[i] = v->valuedouble;
    }
    return 1;
}

/* Two parallel lists of n numbers under keys ka and kb of obj ("where" names obj and
 * "count" says what n is, for the messages).  Both absent: SF_OK with *pa and *pb NULL,
 * the caller decides whether that is allowed; one absent or either not n numbers: an error
 * naming both keys. */
static sf_status json_array_pair(const cJSON *obj, const char *where, const char *ka, const char *kb, int n,
                                 const char *count, double **pa, double **pb, sf_error *err)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, ka);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(obj, kb);
    if (!a && !b) return SF_OK;
    if (!a || !b)
        return sfE_set(err, SF_ERR_MODEL, "model config: %s has '%s' without '%s' (give both or neither)", where,
                       a ? ka : kb, a ? kb : ka);
    const int ok_a = json_number_array(a, n, pa);
    const int ok_b = ok_a == 1 ? json_number_array(b, n, pb) : 0;
    if (ok_a == JSON_NOMEM || ok_b == JSON_NOMEM) return sfE_set(err, SF_ERR_NOMEM, "out of memory");
    if (ok_a != 1 || ok_b != 1)
        return sfE_set(err, SF_ERR_MODEL, "model config: %s '%s' and '%s' must be arrays of %s = %d numbers", where,
                       ka, kb, count, n);
    return SF_OK;
}

static double normal_cdf(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

/* log(exp(-k) I0(k)) for 0 <= k <= SF_MAX_TORSION_KAPPA, to a few ulp: the power series
 * sum_j (k^2 / 4)^j / (j!)^2 (positive terms, no cancellation) up to k = 20, the
 * asymptotic series exp(k) / sqrt(2 pi k) sum_j prod_{i<=j} (2i - 1)^2 / (8 i k) above
 * (its smallest term near j = 2k is below 1e-17 there). */
static double log_i0e(double k)
{
    double sum = 1.0, term = 1.0;
    if (k <= 20.0) {
        const double q = 0.25 * k * k;
        for (int j = 1; j < 200 && term > 1e-17 * sum; j++) {
            term *= q / ((double)j * j);
            sum += term;
        }
        return log(sum) - k;
    }
    for (int j = 1; j < 200; j++) {
        const double next = term * (2.0 * j - 1) * (2.0 * j - 1) / (8.0 * j * k);
        if (next >= term || next < 1e-17 * sum) break; /* converged, or the asymptotic series turns */
        term = next;
        sum += term;
    }
    return log(sum) - 0.5 * log(2.0 * SF_PI * k);
}

/* The optional von Mises densities of the torsion dims inside a truncated-normal prior:
 * "torsion_mean" (in [0, 1)) and "torsion_kappa" (in [0, SF_MAX_TORSION_KAPPA]), N - 3
 * numbers each, both or neither.  Adds their normalization to m->prior_log_norm. */
static sf_status read_torsion_prior(sf_model *m, const cJSON *prior, sf_error *err)
{
    const int n = m->N - 3;
    sf_status rc = json_array_pair(prior, "prior", "torsion_mean", "torsion_kappa", n, "n_atoms - 3",
                                   &m->torsion_mean, &m->torsion_kappa, err);
    if (rc != SF_OK || !m->torsion_mean) return rc;
    for (int t = 0; t < n; t++) {
        const double mu = m->torsion_mean[t], k = m->torsion_kappa[t];
        if (!(mu >= 0 && mu < 1) || !(k >= 0 && k <= SF_MAX_TORSION_KAPPA))
            return sfE_set(err, SF_ERR_MODEL,
                           "model config: prior torsion %d (dimension %d) has torsion_mean %g (need 0 <= mean < 1) "
                           "and torsion_kappa %g (need 0 <= kappa <= %g)", t, 2 * m->N - 3 + t, mu, k,
                           SF_MAX_TORSION_KAPPA);
        m->prior_log_norm += log_i0e(k);
    }
    return SF_OK;
}

/* "uniform" (log p_Z = 0), or {"kind": "truncated_normal", "mean": [...], "sigma": [...]}: a
 * normal density per interval dimension (bonds, angles), truncated to [0, 1]; torsions
 * uniform on the circle, or von Mises densities with "torsion_mean" and "torsion_kappa"
 * (docs/model-format.md 5.4). */
static sf_status read_prior(sf_model *m, const cJSON *cfg, sf_error *err)
{
    static const char *const keys[] = {"kind", "mean", "sigma", "torsion_mean", "torsion_kappa", NULL};
    const cJSON *prior = cJSON_GetObjectItemCaseSensitive(cfg, "prior");
    if (!prior || (cJSON_IsString(prior) && strcmp(prior->valuestring, "uniform") == 0)) return SF_OK;
    const char *kind = cJSON_IsObject(prior) ? json_string(prior, "kind") : NULL;
    if (!kind || strcmp(kind, "truncated_normal") != 0)
        return sfE_set(err, SF_ERR_MODEL,
                       "model config: prior must be \"uniform\" or {\"kind\": \"truncated_normal\", ...}");
    sf_status rc = json_known_keys(prior, "'prior'", keys, err);
    if (rc != SF_OK) return rc;
    const int n = 2 * m->N - 3;
    rc = json_array_pair(prior, "prior", "mean", "sigma", n, "2 n_atoms - 3", &m->prior_mean, &m->prior_sigma, err);
    if (rc != SF_OK) return rc;
    if (!m->prior_mean)
        return sfE_set(err, SF_ERR_MODEL, "model config: a truncated_normal prior needs 'mean' and 'sigma', arrays of "
                       "2 n_atoms - 3 = %d numbers", n);
    double norm = 0.0;
    for (int d = 0; d < n; d++) {
        const double mu = m->prior_mean[d], sd = m->prior_sigma[d];
        if (!(mu > 0 && mu < 1) || !(sd >= 1e-4 && sd <= 10))
            return sfE_set(err, SF_ERR_MODEL,
                           "model config: prior dimension %d has mean %g (need 0 < mean < 1) and sigma %g "
                           "(need 1e-4 <= sigma <= 10)", d, mu, sd);
        norm += log(sd * sqrt(2.0 * SF_PI) * (normal_cdf((1 - mu) / sd) - normal_cdf(-mu / sd)));
    }
    m->prior_log_norm = norm;
    return read_torsion_prior(m, prior, err);
}

/* A constants section: absent (NULL, *rc SF_OK), or an object with known keys. */
static const cJSON *section(const cJSON *cfg, const char *name, const char *const *keys, sf_status *rc,
                            sf_error *err)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(cfg, name);
    *rc = SF_OK;
    if (!s) return NULL;
    char where[32];
    snprintf(where, sizeof where, "'%s'", name);
    if (!cJSON_IsObject(s))
        *rc = sfE_set(err, SF_ERR_MODEL, "model config: '%s' must be an object, not a %s", name,
                      cJSON_IsString(s) ? "string" : cJSON_IsNumber(s) ? "number" : cJSON_IsArray(s) ? "list"
                                                                                         : "literal");
    else
        *rc = json_known_keys(s, where, keys, err);
    return s;
}

/* smooth: required with smooth layers, every key required (no defaults). */
static sf_status read_smooth(sf_model *m, const cJSON *cfg, int has_smooth_layer, sf_error *err)
{
    static const char *const keys[] = {"s_min", "alpha_min", "c_max", "beta", NULL};
    sf_status rc;
    const cJSON *s = section(cfg, "smooth", keys, &rc, err);
    if (rc != SF_OK) return rc;
    m->smooth = (sf_smooth_constants){0.01, 0.1, 0.99, 1}; /* placeholders for models without smooth layers */
    if (!s) {
        if (has_smooth_layer)
            return sfE_set(err, SF_ERR_MODEL,
                           "model config: 'smooth' (s_min, alpha_min, c_max, beta) is required with smooth layers");
        return SF_OK;
    }
    for (const char *const *k = keys; *k; k++)
        if (!cJSON_GetObjectItemCaseSensitive(s, *k))
            return sfE_set(err, SF_ERR_MODEL, "model config: 'smooth' lacks the required key '%s'", *k);
    const cJSON *beta = cJSON_GetObjectItemCaseSensitive(s, "beta");
    if (!json_number(s, "s_min", 1, &m->smooth.s_min) || !json_number(s, "alpha_min", 1, &m->smooth.alpha_min) ||
        !json_number(s, "c_max", 1, &m->smooth.c_max) || !json_is_int(beta, -1e9, 1e9))
        return sfE_set(err, SF_ERR_MODEL, "model config: 'smooth' constants must be numbers (beta an integer)");
    m->smooth.beta = (int)beta->valuedouble;
    if (!(m->smooth.s_min >= SF_MIN_S_MIN && m->smooth.s_min < 1) ||
        !(m->smooth.alpha_min >= SF_MIN_ALPHA_MIN && m->smooth.alpha_min <= SF_MAX_ALPHA_MIN) ||
        !(m->smooth.c_max > 0 && m->smooth.c_max < 1) || m->smooth.beta < 1 || m->smooth.beta > 8)
        return sfE_set(err, SF_ERR_MODEL,
                       "model config: smooth constants out of range (s_min=%g in [%g,1), alpha_min=%g in [%g,%g], "
                       "c_max=%g in (0,1), beta=%d in 1..8)",
                       m->smooth.s_min, SF_MIN_S_MIN, m->smooth.alpha_min, SF_MIN_ALPHA_MIN, SF_MAX_ALPHA_MIN,
                       m->smooth.c_max, m->smooth.beta);
    return SF_OK;
}

/* The wall's edge forces (docs/model-format.md section 5.2): both lists or
 * neither, 2N - 3 numbers each in [0, SF_MAX_EDGE_FORCE], only under the wall
 * policy (elsewhere nothing would use them). */
static sf_status read_edge_forces(sf_model *m, const cJSON *sup, sf_error *err)
{
    const int n = 2 * m->N - 3;
    sf_status rc = json_array_pair(sup, "support", "edge_force_lower", "edge_force_upper", n, "2 n_atoms - 3",
                                   &m->edge_lower, &m->edge_upper, err);
    if (rc != SF_OK || !m->edge_lower) return rc;
    if (m->policy != SF_SUPPORT_WALL)
        return sfE_set(err, SF_ERR_MODEL, "model config: support edge forces are given but the policy is \"error\" "
                       "(they act only under \"wall\")");
    for (int d = 0; d < n; d++)
        if (!(m->edge_lower[d] >= 0 && m->edge_lower[d] <= SF_MAX_EDGE_FORCE) ||
            !(m->edge_upper[d] >= 0 && m->edge_upper[d] <= SF_MAX_EDGE_FORCE))
            return sfE_set(err, SF_ERR_MODEL,
                           "model config: support edge forces of interval dimension %d are %g (lower) and %g "
                           "(upper); each must be in [0, %g] kJ/mol per unit of u", d, m->edge_lower[d],
                           m->edge_upper[d], SF_MAX_EDGE_FORCE);
    return SF_OK;
}

/* spline, affine, support: optional sections, each key optional with its default. */
static sf_status read_constants(sf_model *m, const cJSON *cfg, int has_smooth_layer, sf_error *err)
{
    static const char *const spline_keys[] = {"min_bin_width", "min_bin_height", "min_derivative", NULL};
    static const char *const affine_keys[] = {"scale_max", NULL};
    static const char *const support_keys[] = {"policy", "margin", "angle_margin", "wall_constant",
                                               "edge_force_lower", "edge_force_upper", NULL};
    sf_status rc = read_prior(m, cfg, err);
    if (rc == SF_OK) rc = read_smooth(m, cfg, has_smooth_layer, err);
    if (rc != SF_OK) return rc;

    m->spline = (sf_spline_constants){1e-3, 1e-3, 1e-3};
    const cJSON *sp = section(cfg, "spline", spline_keys, &rc, err);
    if (rc != SF_OK) return rc;
    if (sp && (!json_number(sp, "min_bin_width", 0, &m->spline.min_bin_width) ||
               !json_number(sp, "min_bin_height", 0, &m->spline.min_bin_height) ||
               !json_number(sp, "min_derivative", 0, &m->spline.min_derivative)))
        return sfE_set(err, SF_ERR_MODEL, "model config: 'spline' constants must be numbers");
    if (!(m->spline.min_bin_width >= SF_MIN_SPLINE_CONSTANT && m->spline.min_bin_width < 1) ||
        !(m->spline.min_bin_height >= SF_MIN_SPLINE_CONSTANT && m->spline.min_bin_height < 1) ||
        !(m->spline.min_derivative >= SF_MIN_SPLINE_CONSTANT && m->spline.min_derivative <= SF_MAX_MIN_DERIVATIVE))
        return sfE_set(err, SF_ERR_MODEL,
                       "model config: spline constants out of range (min_bin_width=%g and min_bin_height=%g in "
                       "[%g,1), min_derivative=%g in [%g,%g])",
                       m->spline.min_bin_width, m->spline.min_bin_height, SF_MIN_SPLINE_CONSTANT,
                       m->spline.min_derivative, SF_MIN_SPLINE_CONSTANT, SF_MAX_MIN_DERIVATIVE);

    m->affine = (sf_affine_constants){3.0};
    const cJSON *af = section(cfg, "affine", affine_keys, &rc, err);
    if (rc != SF_OK) return rc;
    if (af && !json_number(af, "scale_max", 0, &m->affine.scale_max))
        return sfE_set(err, SF_ERR_MODEL, "model config: 'affine' constant scale_max must be a number");
    if (!(m->affine.scale_max > 0 && m->affine.scale_max <= SF_MAX_SCALE_MAX))
        return sfE_set(err, SF_ERR_MODEL, "model config: affine scale_max=%g must be in (0, %g]", m->affine.scale_max,
                       SF_MAX_SCALE_MAX);

    m->policy = SF_SUPPORT_ERROR;
    m->margin = 0.01;
    m->angle_margin = m->margin;
    m->wall_constant = 1000.0;
    const cJSON *sup = section(cfg, "support", support_keys, &rc, err);
    if (rc != SF_OK || !sup) return rc;
    const cJSON *policy = cJSON_GetObjectItemCaseSensitive(sup, "policy");
    if (policy && cJSON_IsString(policy) && strcmp(policy->valuestring, "wall") == 0)
        m->policy = SF_SUPPORT_WALL;
    else if (policy && !(cJSON_IsString(policy) && strcmp(policy->valuestring, "error") == 0))
        return sfE_set(err, SF_ERR_MODEL, "model config: support policy must be the string \"error\" or \"wall\"%s%.60s%s",
                       cJSON_IsString(policy) ? ", not '" : "", cJSON_IsString(policy) ? policy->valuestring : "",
                       cJSON_IsString(policy) ? "'" : "");
    if (!json_number(sup, "margin", 0, &m->margin) || !json_number(sup, "wall_constant", 0, &m->wall_constant) ||
        !(m->margin > 0 && m->margin < 0.25) || !(m->wall_constant >= 0 && m->wall_constant <= SF_MAX_WALL_CONSTANT))
        return sfE_set(err, SF_ERR_MODEL,
                       "model config: support margin must be a number in (0, 0.25) and wall_constant a number in "
                       "[0, %g] (kJ/mol)", SF_MAX_WALL_CONSTANT);
    /* The angles' margin defaults to the bonds' (files without the key read as before). */
    m->angle_margin = m->margin;
    if (!json_number(sup, "angle_margin", 0, &m->angle_margin) || !(m->angle_margin > 0 && m->angle_margin < 0.25))
        return sfE_set(err, SF_ERR_MODEL, "model config: support angle_margin must be a number in (0, 0.25)");
    return read_edge_forces(m, sup, err);
}

/* A layer's transformed or conditioning list: integers in 0..D-1, no repeats. */
static sf_status read_dims(const cJSON *layer, const char *key, int D, int l, int **out, int *n, sf_error *err)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(layer, key);
    if (!arr) return sfE_set(err, SF_ERR_MODEL, "model config: layer %d lacks the required key '%s'", l, key);
    *n = json_int_array(arr, -1000000000, 1000000000, out);
    if (*n == JSON_NOMEM) return sfE_set(err, SF_ERR_NOMEM, "out of memory");
    if (*n < 0) return sfE_set(err, SF_ERR_MODEL, "model config: layer %d '%s' must be an array of integers", l, key);
    for (int i = 0; i < *n; i++) {
        if ((*out)[i] < 0 || (*out)[i] >= D)
            return sfE_set(err, SF_ERR_MODEL, "model config: layer %d '%s' names dimension %d, outside 0..%d", l, key,
                           (*out)[i], D - 1);
        for (int j = 0; j < i; j++)
            if ((*out)[j] == (*out)[i])
                return sfE_set(err, SF_ERR_MODEL, "model config: layer %d '%s' repeats dimension %d", l, key,
                               (*out)[i]);
    }
    return SF_OK;
}

/* The layer's kind, or -1 where its transform is not a known string. */
static int layer_transform(const cJSON *js)
{
    const char *t = cJSON_IsObject(js) ? json_string(js, "transform") : NULL;
    if (!t) return -1;
    if (strcmp(t, "smooth") == 0) return SF_TRANSFORM_SMOOTH;
    if (strcmp(t, "spline") == 0) return SF_TRANSFORM_SPLINE;
    if (strcmp(t, "affine") == 0) return SF_TRANSFORM_AFFINE;
    return -1;
}

static sf_status read_layer(sf_model *m, const cJSON *js, int l, sf_error *err)
{
    static const char *const keys[] = {"transform",    "direction", "transformed", "conditioning",
                                       "n_components", "hidden",    "activation",  NULL};
    sf_layer *L = &m->layers[l];
    char where[32];
    snprintf(where, sizeof where, "layer %d", l);
    if (!cJSON_IsObject(js)) return sfE_set(err, SF_ERR_MODEL, "model config: layer %d must be an object", l);
    sf_status rc = json_known_keys(js, where, keys, err);
    if (rc != SF_OK) return rc;
    const char *transform = json_string(js, "transform"), *direction = json_string(js, "direction");
    const char *activation = json_string(js, "activation");
    if (!transform)
        return sfE_set(err, SF_ERR_MODEL, "model config: layer %d has no 'transform' (\"smooth\", \"spline\" or "
                       "\"affine\")", l);
    int kind = layer_transform(js);
    if (kind < 0)
        return sfE_set(err, SF_ERR_MODEL, "model config: layer %d transform '%.100s' is unknown to this reader "
                       "(it knows \"smooth\", \"spline\" and \"affine\")", l, transform);
    L->transform = (sf_transform_kind)kind;
    if (direction && strcmp(direction, "generative") == 0) L->direction = SF_DIR_GENERATIVE;
    else if (direction && strcmp(direction, "density") == 0) L->direction = SF_DIR_DENSITY;
    else return sfE_set(err, SF_ERR_MODEL, "model config: layer %d direction must be \"generative\" or \"density\"", l);
    if (activation && strcmp(activation, "tanh") == 0) L->activation = SF_ACT_TANH;
    else if (activation && strcmp(activation, "silu") == 0) L->activation = SF_ACT_SILU;
    else if (activation && strcmp(activation, "softplus") == 0) L->activation = SF_ACT_SOFTPLUS;
    else return sfE_set(err, SF_ERR_MODEL, "model config: layer %d activation must be tanh, silu or softplus", l);
    if ((rc = read_dims(js, "transformed", m->D, l, &L->trans, &L->n_trans, err)) != SF_OK) return rc;
    if ((rc = read_dims(js, "conditioning", m->D, l, &L->cond, &L->n_cond, err)) != SF_OK) return rc;
    if (L->n_trans == 0) return sfE_set(err, SF_ERR_MODEL, "model config: layer %d transforms no dimension", l);
    for (int i = 0; i < L->n_trans; i++)
        for (int j = 0; j < L->n_cond; j++)
            if (L->trans[i] == L->cond[j])
                return sfE_set(err, SF_ERR_MODEL, "model config: layer %d uses dimension %d twice (transformed and "
                               "conditioning sets must be disjoint)", l, L->trans[i]);
    /* n_components: required by smooth and spline; affine ignores it but a given one must be valid too. */
    const cJSON *K = cJSON_GetObjectItemCaseSensitive(js, "n_components");
    if ((K || L->transform != SF_TRANSFORM_AFFINE) && !json_is_int(K, 1, SF_MAX_COMPONENTS))
        return sfE_set(err, SF_ERR_MODEL, "model config: layer %d n_components must be an integer in 1..%d", l,
                       SF_MAX_COMPONENTS);
    if (L->transform == SF_TRANSFORM_AFFINE) {
        L->K = 1;
        L->P = 2;
    } else {
        L->K = (int)K->valuedouble;
        L->P = L->transform == SF_TRANSFORM_SMOOTH ? 4 * L->K + 2 : 3 * L->K + 2;
    }
    if (L->transform == SF_TRANSFORM_SPLINE &&
        !(L->K * m->spline.min_bin_width < 1 && L->K * m->spline.min_bin_height < 1))
        return sfE_set(err, SF_ERR_MODEL,
                       "model config: layer %d has %d spline bins, too many for min_bin_width=%g and "
                       "min_bin_height=%g (K times each must be < 1)",
                       l, L->K, m->spline.min_bin_width, m->spline.min_bin_height);
    int *hidden = NULL;
    const cJSON *hj = cJSON_GetObjectItemCaseSensitive(js, "hidden");
    int n_hidden = json_int_array(hj, 1, SF_MAX_HIDDEN_WIDTH, &hidden);
    if (n_hidden == JSON_NOMEM) return sfE_set(err, SF_ERR_NOMEM, "out of memory");
    if (n_hidden < 0)
        return sfE_set(err, SF_ERR_MODEL, "model config: layer %d 'hidden' must be an array of widths in 1..%d", l,
                       SF_MAX_HIDDEN_WIDTH);
    L->n_linear = n_hidden + 1;
    L->width = malloc((size_t)(n_hidden + 2) * sizeof(int));
    if (!L->width) { free(hidden); return sfE_set(err, SF_ERR_NOMEM, "out of memory"); }
    L->width[0] = 0;
    for (int i = 0; i < L->n_cond; i++) L->width[0] += sfM_is_circular(m, L->cond[i]) ? 2 : 1;
    for (int i = 0; i < n_hidden; i++) L->width[i + 1] = hidden[i];
    L->width[n_hidden + 1] = L->n_trans * L->P;
    free(hidden);
    for (int i = 0; i <= L->n_linear; i++)
        if (L->width[i] > m->max_width) m->max_width = L->width[i];
    if (L->n_trans * L->P > m->max_params) m->max_params = L->n_trans * L->P;
    return SF_OK;
}

/* [cost-limits]: the memory and work one molecule's evaluation takes, from the configuration
 * alone (docs/model-format.md section 1, "Limits").  With w_0..w_{H+1} a layer's widths, the
 * workspace measure is (L + 1) D + L (I + A + P) + 2 W doubles: the flow's states, and per
 * layer room for the widest encoded input I, the largest sum A of 2 w_m over hidden widths,
 * the widest parameter block P, plus two rows of the widest map W (the C core's workspace for
 * one molecule is that and O(D) more).  The parameters are the sum of (w_m + 1) w_{m+1}: the
 * multiply-adds of one pass.  Doubles are exact far beyond both limits. */
static sf_status check_cost_limits(const sf_model *m, sf_error *err)
{
    double in = 0, act = 0, block = 0, widest = 0, parameters = 0;
    for (int l = 0; l < m->n_layers; l++) {
        const sf_layer *L = &m->layers[l];
        double a = 0;
        for (int k = 1; k < L->n_linear; k++) a += 2.0 * L->width[k];
        for (int k = 0; k <= L->n_linear; k++) widest = fmax(widest, L->width[k]);
        for (int k = 0; k < L->n_linear; k++) parameters += ((double)L->width[k] + 1) * L->width[k + 1];
        in = fmax(in, L->width[0]);
        act = fmax(act, a);
        block = fmax(block, L->width[L->n_linear]);
    }
    const double layers = m->n_layers;
    const double workspace = (layers + 1) * m->D + layers * (in + act + block) + 2 * widest;
    if (workspace > SF_MAX_WORKSPACE_DOUBLES)
        return sfE_set(err, SF_ERR_MODEL,
                       "model config: evaluating one molecule needs a workspace of %.0f doubles (%.0f MiB), more than "
                       "the limit of %d doubles (64 MiB): %d layers, D = %d, widest map %.0f",
                       workspace, workspace * 8 / 1048576, SF_MAX_WORKSPACE_DOUBLES, m->n_layers, m->D, widest);
    if (parameters > SF_MAX_PARAMETERS)
        return sfE_set(err, SF_ERR_MODEL,
                       "model config: the conditioners hold %.0f weights and biases, more than the limit of %d",
                       parameters, SF_MAX_PARAMETERS);
    return SF_OK;
}

/* temperature (required) and energy_offset (optional, default 0): both kinds. */
static sf_status read_thermo(sf_model *m, const cJSON *cfg, sf_error *err)
{
    m->energy_offset = 0.0;
    if (!json_number(cfg, "temperature", 1, &m->temperature) ||
        !(m->temperature > 0 && m->temperature <= SF_MAX_TEMPERATURE))
        return sfE_set(err, SF_ERR_MODEL, "model config: 'temperature' must be a number in (0, %g] (kelvin)",
                       SF_MAX_TEMPERATURE);
    if (!json_number(cfg, "energy_offset", 0, &m->energy_offset) || !(fabs(m->energy_offset) <= SF_MAX_ENERGY_OFFSET))
        return sfE_set(err, SF_ERR_MODEL, "model config: 'energy_offset' must be a number in [-%g, %g] (kJ/mol)",
                       SF_MAX_ENERGY_OFFSET, SF_MAX_ENERGY_OFFSET);
    m->kT = SF_GAS_CONSTANT * m->temperature;
    return SF_OK;
}

/* [free-form-cost]: the memory and work of one configuration's energy and forces, from the
 * configuration alone (docs/model-format.md section 9.4).  With n particles, d dimensions,
 * H hidden, L layers and D = (n - 1) d, the encoder carries the values and D tangents
 * (D + 1 slots) of every particle's state through every layer: a workspace measure of
 * (D + 1) n (L + 10) (2H + d) + 2 D^2 doubles (an upper bound of sfG_workspace_doubles, which
 * the tests check), and a work measure of L n^2 (6 H^2 + 3 H) (D + 1) + 2 D^3 multiply-adds
 * (the edge products of the forward pass, their recomputation and transpose in the reverse
 * pass, the LU and inverse of J_V).  Formed in double, as in the PyTorch reader; both are
 * exact far beyond the limits. */
static sf_status check_free_form_costs(const sf_model *m, sf_error *err)
{
    const double n = m->N, d = m->egnn.dim, H = m->egnn.hidden, L = m->egnn.n_layers, D = m->D;
    const double workspace = (D + 1) * n * (L + 10) * (2 * H + d) + 2 * D * D;
    const double work = L * n * n * (6 * H * H + 3 * H) * (D + 1) + 2 * D * D * D;
    if (workspace > SF_MAX_FREE_FORM_WORKSPACE)
        return sfE_set(err, SF_ERR_MODEL,
                       "model config: evaluating one configuration of this free-form model needs a workspace of %.0f "
                       "doubles (%.0f MiB), more than the limit of %d doubles (512 MiB): %d particles, hidden %d, %d "
                       "layers", workspace, workspace * 8 / 1048576, SF_MAX_FREE_FORM_WORKSPACE, m->N,
                       m->egnn.hidden, m->egnn.n_layers);
    if (work > SF_MAX_FREE_FORM_WORK)
        return sfE_set(err, SF_ERR_MODEL,
                       "model config: one energy and force of this free-form model takes about %.4g multiply-adds, "
                       "more than the limit of %g: %d particles in %d dimensions (D = %d), hidden %d, %d layers",
                       work, SF_MAX_FREE_FORM_WORK, m->N, m->egnn.dim, m->D, m->egnn.hidden, m->egnn.n_layers);
    return SF_OK;
}

/* The configuration of a free-form flow's encoder (docs/model-format.md section 9):
 * kind, n_atoms (particles), temperature, energy_offset, atoms, network, latent. */
static sf_status read_free_form_config(sf_model *m, const cJSON *cfg, sf_error *err)
{
    static const char *const keys[] = {"kind", "n_atoms", "temperature", "energy_offset", "atoms", "network",
                                       "latent", NULL};
    static const char *const net_keys[] = {"kind", "spatial_dim", "hidden", "layers", "distance_scale", NULL};
    m->kind = SF_FLOW_FREE_FORM;
    sf_status rc = json_known_keys(cfg, "the top level of a free-form model", keys, err);
    if (rc != SF_OK) return rc;
    const cJSON *n_atoms = cJSON_GetObjectItemCaseSensitive(cfg, "n_atoms");
    if (!json_is_int(n_atoms, 2, SF_MAX_ATOMS))
        return sfE_set(err, SF_ERR_MODEL, "model config: 'n_atoms' (the particles of a free-form model) must be an "
                       "integer in 2..%d", SF_MAX_ATOMS);
    m->N = (int)n_atoms->valuedouble;
    if ((rc = read_thermo(m, cfg, err)) != SF_OK || (rc = read_atoms(m, cfg, err)) != SF_OK) return rc;

    const cJSON *net = cJSON_GetObjectItemCaseSensitive(cfg, "network");
    if (!net) return sfE_set(err, SF_ERR_MODEL, "model config: a free-form model lacks the required key 'network'");
    if (!cJSON_IsObject(net)) return sfE_set(err, SF_ERR_MODEL, "model config: 'network' must be an object");
    if ((rc = json_known_keys(net, "'network'", net_keys, err)) != SF_OK) return rc;
    for (const char *const *k = net_keys; *k; k++)
        if (!cJSON_GetObjectItemCaseSensitive(net, *k))
            return sfE_set(err, SF_ERR_MODEL, "model config: 'network' lacks the required key '%s'", *k);
    const char *net_kind = json_string(net, "kind");
    if (!net_kind || strcmp(net_kind, "egnn") != 0)
        return sfE_set(err, SF_ERR_MODEL, "model config: network kind %s%.60s%s is unknown to this reader (it knows "
                       "\"egnn\")", net_kind ? "'" : "(not a string", net_kind ? net_kind : "", net_kind ? "'" : ")");
    const cJSON *dim = cJSON_GetObjectItemCaseSensitive(net, "spatial_dim");
    const cJSON *hidden = cJSON_GetObjectItemCaseSensitive(net, "hidden");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(net, "layers");
    double scale = 0;
    if (!json_is_int(dim, 2, 3))
        return sfE_set(err, SF_ERR_MODEL, "model config: network 'spatial_dim' must be the integer 2 or 3");
    if (!json_is_int(hidden, 1, SF_MAX_EGNN_HIDDEN))
        return sfE_set(err, SF_ERR_MODEL, "model config: network 'hidden' must be an integer in 1..%d",
                       SF_MAX_EGNN_HIDDEN);
    if (!json_is_int(layers, 1, SF_MAX_EGNN_LAYERS))
        return sfE_set(err, SF_ERR_MODEL, "model config: network 'layers' must be an integer in 1..%d",
                       SF_MAX_EGNN_LAYERS);
    if (!json_number(net, "distance_scale", 1, &scale) ||
        !(scale >= SF_MIN_DISTANCE_SCALE && scale <= SF_MAX_DISTANCE_SCALE))
        return sfE_set(err, SF_ERR_MODEL, "model config: network 'distance_scale' must be a number in [%g, %g] (nm)",
                       SF_MIN_DISTANCE_SCALE, SF_MAX_DISTANCE_SCALE);
    const cJSON *latent = cJSON_GetObjectItemCaseSensitive(cfg, "latent");
    if (!latent) return sfE_set(err, SF_ERR_MODEL, "model config: a free-form model lacks the required key 'latent'");
    if (!cJSON_IsString(latent) || strcmp(latent->valuestring, "standard_normal_com_free") != 0)
        return sfE_set(err, SF_ERR_MODEL, "model config: 'latent' %s%.60s%s is unknown to this reader (it knows "
                       "\"standard_normal_com_free\")", cJSON_IsString(latent) ? "'" : "(not a string",
                       cJSON_IsString(latent) ? latent->valuestring : "", cJSON_IsString(latent) ? "'" : ")");
    m->egnn.n_particles = m->N;
    m->egnn.dim = (int)dim->valuedouble;
    m->egnn.hidden = (int)hidden->valuedouble;
    m->egnn.n_layers = (int)layers->valuedouble;
    m->egnn.inv_scale2 = 1.0 / (scale * scale);
    m->D = (m->N - 1) * m->egnn.dim;
    return check_free_form_costs(m, err);
}

static sf_status read_config(sf_model *m, const char *text, sf_error *err)
{
    static const char *const keys[] = {"n_atoms", "temperature", "energy_offset", "zmatrix", "atoms", "prior",
                                       "smooth",  "spline",      "affine",        "support", "layers", NULL};
    const char *syntax = json_syntax_problem(text);
    cJSON *cfg = syntax ? NULL : cJSON_ParseWithOpts(text, NULL, 1);
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return sfE_set(err, SF_ERR_FORMAT, "model file: metadata 'config' is not a JSON object%s%s",
                       syntax ? ": it holds " : "", syntax ? syntax : "");
    }
    sf_status rc = json_tree_check(cfg, NULL, err);
    /* "kind" absent: the internal-coordinate flow of every file before the free-form kind. */
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(cfg, "kind");
    if (rc == SF_OK && kind) {
        if (cJSON_IsString(kind) && strcmp(kind->valuestring, "free_form") == 0)
            rc = read_free_form_config(m, cfg, err);
        else
            rc = sfE_set(err, SF_ERR_MODEL,
                         "model config: 'kind' %s%.60s%s is unknown to this reader (it knows \"free_form\"; without "
                         "'kind' the file holds an internal-coordinate flow)",
                         cJSON_IsString(kind) ? "'" : "(not a string", cJSON_IsString(kind) ? kind->valuestring : "",
                         cJSON_IsString(kind) ? "'" : ")");
        cJSON_Delete(cfg);
        return rc;
    }
    if (rc == SF_OK) rc = json_known_keys(cfg, "the top level", keys, err);
    m->energy_offset = 0.0;
    const cJSON *n_atoms = cJSON_GetObjectItemCaseSensitive(cfg, "n_atoms");
    if (rc == SF_OK && !json_is_int(n_atoms, 3, SF_MAX_ATOMS))
        rc = sfE_set(err, SF_ERR_MODEL, "model config: 'n_atoms' must be an integer in 3..%d", SF_MAX_ATOMS);
    if (rc == SF_OK) {
        m->N = (int)n_atoms->valuedouble;
        rc = read_thermo(m, cfg, err);
    }
    if (rc == SF_OK) {
        m->D = 3 * m->N - 6;
        rc = read_zmatrix(m, cfg, err);
    }
    if (rc == SF_OK) rc = read_atoms(m, cfg, err);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(cfg, "layers");
    if (rc == SF_OK && (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) < 1))
        rc = sfE_set(err, SF_ERR_MODEL, "model config: 'layers' must be a non-empty array");
    int has_smooth_layer = 0;
    for (const cJSON *js = rc == SF_OK ? layers->child : NULL; js; js = js->next)
        has_smooth_layer |= layer_transform(js) == SF_TRANSFORM_SMOOTH;
    if (rc == SF_OK) rc = read_constants(m, cfg, has_smooth_layer, err);
    if (rc == SF_OK) {
        m->n_layers = cJSON_GetArraySize(layers);
        m->layers = calloc((size_t)m->n_layers, sizeof *m->layers);
        if (!m->layers) rc = sfE_set(err, SF_ERR_NOMEM, "out of memory");
    }
    int l = 0;
    for (const cJSON *js = rc == SF_OK ? layers->child : NULL; rc == SF_OK && js; js = js->next, l++)
        rc = read_layer(m, js, l, err);
    if (rc == SF_OK) rc = check_cost_limits(m, err);
    cJSON_Delete(cfg);
    return rc;
}

/* ---------------------------------------------------------------- tensors */

static sf_status take_tensor(sf_safetensors *st, const char *name, int ndim, long long d0, long long d1,
                             double **out, sf_error *err)
{
    sf_tensor *t = sfS_find(st, name);
    if (!t) return sfE_set(err, SF_ERR_MODEL, "model file: tensor '%s' is missing", name);
    int ok = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!ok) {
        char shape[96] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), d ? ", %lld" : "%lld", t->shape[d]);
        if (ndim == 1)
            return sfE_set(err, SF_ERR_MODEL, "model file: tensor '%s' has shape [%s], the architecture needs [%lld]",
                           name, shape, d0);
        return sfE_set(err, SF_ERR_MODEL,
                       "model file: tensor '%s' has shape [%s], the architecture needs [%lld, %lld]", name, shape, d0,
                       d1);
    }
    size_t count = (size_t)(d0 * (ndim == 1 ? 1 : d1));
    *out = malloc((count ? count : 1) * sizeof(double));
    if (!*out) return sfE_set(err, SF_ERR_NOMEM, "out of memory");
    sfS_read_doubles(t, *out, count);
    for (size_t i = 0; i < count; i++)
        if (!isfinite((*out)[i]))
            return sfE_set(err, SF_ERR_VALUE, "model file: tensor '%s' holds a non-finite value (%g) at element %zu",
                           name, (*out)[i], i);
    t->used = 1;
    return SF_OK;
}

/* [value-bounds] of one conditioner (docs/model-format.md section 1, "Limits"): its encoded
 * inputs lie in [-1, 1], so with A_0 = 1 each output of map k is at most
 * B_k = max_i (sum_j |W_ij| A_k + |b_i|) in magnitude, and the next map's inputs at most
 * A_{k+1} = min(B_k, 1) (tanh), B_k (SiLU: |silu(z)| <= |z|) or B_k + log 2 (softplus).  Every
 * B_k, and every map's sum of |W_ij| (which bounds what the reverse pass multiplies by), must
 * be at most SF_MAX_NET_BOUND: then the raw parameters and every activation are finite and
 * moderate whatever the configuration.  Sums run in storage order, left to right, exactly as
 * in the PyTorch reader, so both reach the same verdict. */
static sf_status check_net_bounds(const sf_model *m, int l, sf_error *err)
{
    const sf_layer *L = &m->layers[l];
    double A = 1.0;
    for (int k = 0; k < L->n_linear; k++) {
        const int n_in = L->width[k], n_out = L->width[k + 1];
        const double *W = L->weight[k], *b = L->bias[k];
        double B = 0, total = 0;
        for (int i = 0; i < n_out; i++) {
            double row = 0;
            for (int j = 0; j < n_in; j++) {
                row += fabs(W[(size_t)i * n_in + j]);
                total += fabs(W[(size_t)i * n_in + j]);
            }
            B = fmax(B, row * A + fabs(b[i]));
        }
        if (!(B <= SF_MAX_NET_BOUND) || !(total <= SF_MAX_NET_BOUND))
            return sfE_set(err, SF_ERR_VALUE,
                           "model file: layers.%d.net.%d can overflow: its outputs are bounded only by %g and the sum "
                           "of its |weights| is %g (each must be at most %g)",
                           l, k, B, total, SF_MAX_NET_BOUND);
        A = L->activation == SF_ACT_TANH ? fmin(B, 1.0) : L->activation == SF_ACT_SILU ? B : B + log(2.0);
    }
    return SF_OK;
}

/* One tensor of the free-form encoder, kept by the model; its sum of |entries|, formed in
 * storage order as in the PyTorch reader, at most SF_MAX_NET_BOUND (docs/model-format.md
 * section 9.3). */
static sf_status take_egnn_tensor(sf_model *m, sf_safetensors *st, const char *name, int ndim, long long d0,
                                  long long d1, const double **out, sf_error *err)
{
    double **slot = &m->egnn_tensors[m->n_egnn_tensors++];
    sf_status rc = take_tensor(st, name, ndim, d0, d1, slot, err);
    if (rc != SF_OK) return rc;
    const size_t count = (size_t)(d0 * (ndim == 1 ? 1 : d1));
    double total = 0;
    for (size_t i = 0; i < count; i++) total += fabs((*slot)[i]);
    if (!(total <= SF_MAX_NET_BOUND))
        return sfE_set(err, SF_ERR_VALUE,
                       "model file: tensor '%s' can overflow: the sum of its |entries| is %g, more than the limit of %g",
                       name, total, SF_MAX_NET_BOUND);
    *out = *slot;
    return SF_OK;
}

/* A linear map `prefix`.weight (n_out x n_in) and `prefix`.bias (n_out). */
static sf_status take_egnn_linear(sf_model *m, sf_safetensors *st, int k, const char *prefix, int n_in, int n_out,
                                  sfG_linear *lin, sf_error *err)
{
    char name[96];
    lin->n_in = n_in;
    lin->n_out = n_out;
    snprintf(name, sizeof name, "layers.%d.%s.weight", k, prefix);
    sf_status rc = take_egnn_tensor(m, st, name, 2, n_out, n_in, &lin->weight, err);
    snprintf(name, sizeof name, "layers.%d.%s.bias", k, prefix);
    if (rc == SF_OK) rc = take_egnn_tensor(m, st, name, 1, n_out, 0, &lin->bias, err);
    return rc;
}

/* The encoder's tensors, named as the PyTorch module egnn.EGNN's state_dict: h0, and per
 * layer k the Linear maps edge.0, edge.2, coord.0, coord.2 and (all but the last layer)
 * node.0, node.2 (docs/model-format.md section 9.3). */
static sf_status read_free_form_tensors(sf_model *m, sf_safetensors *st, sf_error *err)
{
    const int H = m->egnn.hidden, L = m->egnn.n_layers;
    m->egnn_layers = calloc((size_t)L, sizeof *m->egnn_layers);
    m->egnn_tensors = calloc((size_t)L * 12 + 1, sizeof *m->egnn_tensors);
    if (!m->egnn_layers || !m->egnn_tensors) return sfE_set(err, SF_ERR_NOMEM, "out of memory");
    sf_status rc = take_egnn_tensor(m, st, "h0", 1, H, 0, &m->egnn.h0, err);
    for (int k = 0; rc == SF_OK && k < L; k++) {
        sfG_layer *g = &m->egnn_layers[k];
        g->has_node = k < L - 1;
        rc = take_egnn_linear(m, st, k, "edge.0", 2 * H + 1, H, &g->edge1, err);
        if (rc == SF_OK) rc = take_egnn_linear(m, st, k, "edge.2", H, H, &g->edge2, err);
        if (rc == SF_OK) rc = take_egnn_linear(m, st, k, "coord.0", H, H, &g->coord1, err);
        if (rc == SF_OK) rc = take_egnn_linear(m, st, k, "coord.2", H, 1, &g->coord2, err);
        if (rc == SF_OK && g->has_node) rc = take_egnn_linear(m, st, k, "node.0", 2 * H, H, &g->node1, err);
        if (rc == SF_OK && g->has_node) rc = take_egnn_linear(m, st, k, "node.2", H, H, &g->node2, err);
    }
    m->egnn.layers = m->egnn_layers;
    return rc;
}

static sf_status read_tensors(sf_model *m, sf_safetensors *st, sf_error *err)
{
    if (m->kind == SF_FLOW_FREE_FORM) {
        sf_status rc = read_free_form_tensors(m, st, err);
        for (int i = 0; rc == SF_OK && i < st->n_tensors; i++)
            if (!st->tensors[i].used)
                rc = sfE_set(err, SF_ERR_MODEL, "model file: tensor '%s' is not part of the free-form encoder",
                             st->tensors[i].name);
        return rc;
    }
    sf_status rc = take_tensor(st, "bond_lo", 1, m->N - 1, 0, &m->bond_lo, err);
    if (rc == SF_OK) rc = take_tensor(st, "bond_hi", 1, m->N - 1, 0, &m->bond_hi, err);
    for (int i = 0; rc == SF_OK && i < m->N - 1; i++)
        if (!(m->bond_hi[i] > m->bond_lo[i]) || !(m->bond_lo[i] >= 0))
            rc = sfE_set(err, SF_ERR_MODEL, "model file: bond %d has bounds [%g, %g] nm (need 0 <= lo < hi)", i,
                         m->bond_lo[i], m->bond_hi[i]);
        else if (!(m->bond_hi[i] <= SF_MAX_BOND) || !(m->bond_hi[i] - m->bond_lo[i] >= SF_MIN_BOND_WIDTH))
            rc = sfE_set(err, SF_ERR_MODEL,
                         "model file: bond %d has bounds [%g, %g] nm (need hi <= %g nm and hi - lo >= %g nm)", i,
                         m->bond_lo[i], m->bond_hi[i], SF_MAX_BOND, SF_MIN_BOND_WIDTH);
    for (int l = 0; rc == SF_OK && l < m->n_layers; l++) {
        sf_layer *L = &m->layers[l];
        L->weight = calloc((size_t)L->n_linear, sizeof(double *));
        L->bias = calloc((size_t)L->n_linear, sizeof(double *));
        if (!L->weight || !L->bias) return sfE_set(err, SF_ERR_NOMEM, "out of memory");
        for (int k = 0; rc == SF_OK && k < L->n_linear; k++) {
            char name[96];
            snprintf(name, sizeof name, "layers.%d.net.%d.weight", l, k);
            rc = take_tensor(st, name, 2, L->width[k + 1], L->width[k], &L->weight[k], err);
            snprintf(name, sizeof name, "layers.%d.net.%d.bias", l, k);
            if (rc == SF_OK) rc = take_tensor(st, name, 1, L->width[k + 1], 0, &L->bias[k], err);
        }
        if (rc == SF_OK) rc = check_net_bounds(m, l, err);
    }
    for (int i = 0; rc == SF_OK && i < st->n_tensors; i++)
        if (!st->tensors[i].used)
            rc = sfE_set(err, SF_ERR_MODEL, "model file: tensor '%s' is not part of the architecture",
                         st->tensors[i].name);
    return rc;
}

static void compute_log_scales(sf_model *m)
{
    if (m->kind == SF_FLOW_FREE_FORM) return; /* no internal coordinates */
    double s = 0.0;
    for (int i = 0; i < m->N - 1; i++) s += log(m->bond_hi[i] - m->bond_lo[i]);
    s += (m->N - 2) * log(SF_PI) + (m->N - 3) * log(2.0 * SF_PI);
    m->log_scale_sum = s;
}

/* ------------------------------------------------------------ public API */

#ifdef SMOOTHFLOW_OPENBLAS
#include <pthread.h>
void openblas_set_num_threads(int num_threads);
static void blas_one_thread(void) { openblas_set_num_threads(1); }
#endif

/* The CPU platform calls BLAS from its own threads: OpenBLAS must not start
 * threads of its own inside each product (docs/design.md, "The CPU platform").
 * Once per process, before the first model can be evaluated. */
static void hold_blas_to_one_thread(void)
{
#ifdef SMOOTHFLOW_OPENBLAS
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, blas_one_thread);
#endif
}

sf_status sf_model_load_bytes(const void *data, size_t size, sf_model **out, sf_error *err)
{
    if (!out || (!data && size)) return sfE_set(err, SF_ERR_ARG, "sf_model_load_bytes: NULL argument");
    *out = NULL;
    hold_blas_to_one_thread();
    sf_safetensors st;
    sf_status rc = sfS_parse(data, size, &st, err);
    if (rc != SF_OK) return rc;
    if (!st.metadata_format || strcmp(st.metadata_format, "openmm-smoothflow") != 0)
        rc = sfE_set(err, SF_ERR_FORMAT, "model file: metadata 'format' is not \"openmm-smoothflow\" "
                     "(a safetensors file, but not a SmoothFlow model)");
    else if (!st.metadata_version || !st.metadata_config)
        rc = sfE_set(err, SF_ERR_FORMAT, "model file: metadata lacks 'format_version' or 'config'");
    sf_model *m = NULL;
    if (rc == SF_OK) {
        char *end = NULL;
        errno = 0;
        /* Plain digits without a leading zero, [1-9][0-9]* (no sign or space strtol would take). */
        const char *ver = st.metadata_version;
        long v = (ver[0] >= '1' && ver[0] <= '9' && strspn(ver, "0123456789") == strlen(ver)) ? strtol(ver, &end, 10) : 0;
        if (v < 1 || errno)
            rc = sfE_set(err, SF_ERR_FORMAT,
                         "model file: format_version '%.40s' is not a positive integer in plain digits", ver);
        else if (v > SF_FORMAT_VERSION)
            rc = sfE_set(err, SF_ERR_VERSION,
                         "model file has format version %ld; this build of openmm-smoothflow reads versions up to %d",
                         v, SF_FORMAT_VERSION);
        else if (!(m = calloc(1, sizeof *m)))
            rc = sfE_set(err, SF_ERR_NOMEM, "out of memory");
        else
            m->version = (int)v;
    }
    if (rc == SF_OK) rc = read_config(m, st.metadata_config, err);
    if (rc == SF_OK) rc = read_tensors(m, &st, err);
    if (rc == SF_OK && !(m->config_json = sfU_strdup(st.metadata_config)))
        rc = sfE_set(err, SF_ERR_NOMEM, "out of memory");
    sfS_free(&st);
    if (rc != SF_OK) {
        sf_model_free(m);
        return rc;
    }
    compute_log_scales(m);
    *out = m;
    if (err) { err->code = SF_OK; err->message[0] = 0; }
    return SF_OK;
}

/* ------------------------------------------------------ weight precision */

static void free_rounded(sf_layer *L)
{
    for (int k = 0; k < L->n_linear; k++) {
        if (L->weight32) free(L->weight32[k]);
        if (L->weight_rounded) free(L->weight_rounded[k]);
    }
    free(L->weight32);
    free(L->weight_rounded);
    L->weight32 = NULL;
    L->weight_rounded = NULL;
}

/* One layer's float32 weights (packed) and their double values; on failure nothing is kept. */
static int make_rounded(sf_layer *L)
{
    L->weight32 = calloc((size_t)L->n_linear, sizeof(float *));
    L->weight_rounded = calloc((size_t)L->n_linear, sizeof(double *));
    if (!L->weight32 || !L->weight_rounded) goto fail;
    for (int k = 0; k < L->n_linear; k++) {
        const int n_in = L->width[k], n_out = L->width[k + 1];
        const int panels = (n_out + SF_PANEL - 1) / SF_PANEL;
        const size_t n = (size_t)n_out * (size_t)n_in;
        /* packed in panels of SF_PANEL rows, column by column (sf_mlp.c), zero-padded */
        L->weight32[k] = calloc((size_t)panels * SF_PANEL * (size_t)n_in, sizeof(float));
        L->weight_rounded[k] = malloc(n * sizeof(double));
        if (!L->weight32[k] || !L->weight_rounded[k]) goto fail;
        for (int o = 0; o < n_out; o++) {
            for (int i = 0; i < n_in; i++) {
                const float w = (float)L->weight[k][(size_t)o * n_in + i];
                L->weight32[k][((size_t)(o / SF_PANEL) * n_in + i) * SF_PANEL + o % SF_PANEL] = w;
                L->weight_rounded[k][(size_t)o * n_in + i] = (double)w;
            }
        }
    }
    return 1;
fail:
    free_rounded(L);
    return 0;
}

sf_status sf_model_set_weight_precision(sf_model *m, sf_weight_precision precision, sf_error *err)
{
    if (!m) return sfE_set(err, SF_ERR_ARG, "sf_model_set_weight_precision: model is NULL");
    if (precision != SF_WEIGHTS_FLOAT64 && precision != SF_WEIGHTS_FLOAT32)
        return sfE_set(err, SF_ERR_ARG, "sf_model_set_weight_precision: unknown precision %d (0 = float64, "
                       "1 = float32)", (int)precision);
    if (precision == SF_WEIGHTS_FLOAT32 && m->kind == SF_FLOW_FREE_FORM)
        return sfE_set(err, SF_ERR_ARG, "sf_model_set_weight_precision: float32 weights apply to the conditioners of "
                       "internal-coordinate models; a free-form model's encoder runs in float64 only");
    if (precision == m->weight_precision) return SF_OK;
    for (int l = 0; m->layers && l < m->n_layers; l++) free_rounded(&m->layers[l]);
    m->weight_precision = SF_WEIGHTS_FLOAT64;
    if (precision == SF_WEIGHTS_FLOAT32) {
        for (int l = 0; l < m->n_layers; l++) {
            if (!make_rounded(&m->layers[l])) {
                for (int j = 0; j < l; j++) free_rounded(&m->layers[j]);
                return sfE_set(err, SF_ERR_NOMEM, "out of memory for the float32 weights");
            }
        }
        m->weight_precision = SF_WEIGHTS_FLOAT32;
    }
    return SF_OK;
}

sf_weight_precision sf_model_weight_precision(const sf_model *m)
{
    return m ? m->weight_precision : SF_WEIGHTS_FLOAT64;
}

/* Only a regular file, and at most SF_MAX_FILE_SIZE bytes of it: a directory, a device such
 * as /dev/zero or a FIFO is refused before anything is read. */
sf_status sf_model_load_file(const char *path, sf_model **out, sf_error *err)
{
    if (!path || !out) return sfE_set(err, SF_ERR_ARG, "sf_model_load_file: NULL argument");
    *out = NULL;
#ifdef _WIN32
    FILE *f = fopen(path, "rb");
#else
    /* O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever (it has no
     * effect on the regular files that are read). */
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "rb");
    if (fd >= 0 && !f) close(fd);
#endif
    if (!f) return sfE_set(err, SF_ERR_IO, "cannot open model file '%.300s': %s", path, strerror(errno));
    struct stat info;
    if (fstat(fileno(f), &info) != 0) {
        int e = errno;
        fclose(f);
        return sfE_set(err, SF_ERR_IO, "cannot examine model file '%.300s': %s", path, strerror(e));
    }
    if (!S_ISREG(info.st_mode)) {
        fclose(f);
        return sfE_set(err, SF_ERR_IO, "model file '%.300s' is not a regular file (a directory, device or pipe)",
                       path);
    }
    if ((unsigned long long)info.st_size > SF_MAX_FILE_SIZE) {
        fclose(f);
        return sfE_set(err, SF_ERR_FORMAT, "model file '%.300s' is %llu bytes, more than the limit of %llu bytes (1 GiB)",
                       path, (unsigned long long)info.st_size, (unsigned long long)SF_MAX_FILE_SIZE);
    }
    /* Read what the size promised and one byte more, to see a file that grew meanwhile. */
    size_t cap = (size_t)info.st_size + 1, size = 0;
    unsigned char *buf = malloc(cap);
    sf_status rc = buf ? SF_OK : sfE_set(err, SF_ERR_NOMEM, "out of memory reading '%.300s'", path);
    while (rc == SF_OK && size < cap) {
        size_t got = fread(buf + size, 1, cap - size, f);
        size += got;
        if (got == 0) {
            if (ferror(f)) rc = sfE_set(err, SF_ERR_IO, "error reading model file '%.300s'", path);
            break;
        }
    }
    fclose(f);
    if (rc == SF_OK && size == cap)
        rc = sfE_set(err, SF_ERR_IO, "model file '%.300s' changed while it was read", path);
    if (rc == SF_OK) {
        rc = sf_model_load_bytes(buf, size, out, err);
        if (rc != SF_OK && err) {
            /* Name the file in the message. */
            char msg[SF_ERROR_MESSAGE_SIZE];
            snprintf(msg, sizeof msg, "%.200s: %.300s", path, err->message);
            memcpy(err->message, msg, sizeof msg);
        }
    }
    free(buf);
    return rc;
}

sf_flow_kind sf_model_flow_kind(const sf_model *m) { return m->kind; }
int sf_model_spatial_dim(const sf_model *m) { return m->kind == SF_FLOW_FREE_FORM ? m->egnn.dim : 3; }
int sf_model_num_atoms(const sf_model *m) { return m->N; }
int sf_model_num_dims(const sf_model *m) { return m->D; }
int sf_model_num_layers(const sf_model *m) { return m->n_layers; }
double sf_model_temperature(const sf_model *m) { return m->temperature; }
double sf_model_kT(const sf_model *m) { return m->kT; }
double sf_model_energy_offset(const sf_model *m) { return m->energy_offset; }
int sf_model_format_version(const sf_model *m) { return m->version; }
sf_support_policy sf_model_support_policy(const sf_model *m) { return m->policy; }
const char *sf_model_config_json(const sf_model *m) { return m->config_json; }

void sf_model_zmatrix_row(const sf_model *m, int r, int out[4])
{
    for (int c = 0; c < 4; c++) out[c] = (m->zmatrix && r >= 0 && r < m->N) ? m->zmatrix[r][c] : -1;
}

const char *sf_model_atom_name(const sf_model *m, int a)
{
    return (m->atoms && a >= 0 && a < m->N) ? m->atoms[a].name : NULL;
}

const char *sf_model_atom_residue(const sf_model *m, int a)
{
    return (m->atoms && a >= 0 && a < m->N) ? m->atoms[a].residue : NULL;
}

int sf_model_atom_residue_index(const sf_model *m, int a)
{
    return (m->atoms && a >= 0 && a < m->N) ? m->atoms[a].residue_index : -1;
}
