/*
 * test_egnn.c -- the free-form flow's EGNN potential of the C core (src/sf_egnn.c) against
 * PyTorch and against itself:
 *
 *   reference   f(x), log p(x), sign det J_V and d log p / dx vs smoothflow_torch (float64,
 *               autograd of the exact log-det) on the networks of tests/data/egnn/reference.txt,
 *               whose weights both sides draw from splitmix64 (make_reference.py);
 *   finite      the gradient vs central differences of the C log p itself;
 *   symmetry    log p and its gradient under rotations, a reflection, translations and a
 *               permutation of the particles; f's equivariance;
 *   errors      det J_V = 0, non-finite and overflowing positions: SF_ERR_NUMERIC, a message
 *               naming the configuration, the gradient untouched.
 *
 * SMOOTHFLOW_EGNN_TIMING=1 also prints the time of one evaluation of the LJ13-sized network
 * (n = 13, d = 3, hidden 32, 3 layers); nothing is asserted about it.
 *
 * sf_egnn.c is internal to the library (not exported), so it is compiled into this program.
 */
#include "sf_egnn.h"
#include "sf_internal.h"
#include "test_check.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef SMOOTHFLOW_OPENBLAS
void openblas_set_num_threads(int num_threads);
#endif

#ifndef SMOOTHFLOW_TEST_DATA_DIR
#define SMOOTHFLOW_TEST_DATA_DIR "tests/data"
#endif

/* ------------------------------------------------ random networks */

/* splitmix64, exactly as make_reference.py: uniform() is the top 53 bits / 2^53. */
typedef struct rng64 { uint64_t state; } rng64;

static uint64_t rng_next(rng64 *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_uniform(rng64 *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

static double rng_normal(rng64 *r)
{
    const double u = rng_uniform(r), v = rng_uniform(r);
    return sqrt(-2 * log(1 - u)) * cos(2 * SF_PI * v);
}

typedef struct test_net {
    sfG_net net;
    sfG_layer *layers;
    double *store;
} test_net;

/* One Linear's weight then bias, (2u - 1) / sqrt(n_in) * gain, in make_reference.py's order. */
static double *fill_linear(sfG_linear *lin, int n_in, int n_out, double gain, rng64 *r, double *at)
{
    const double bound = 1.0 / sqrt((double)n_in);
    lin->n_in = n_in;
    lin->n_out = n_out;
    lin->weight = at;
    for (int k = 0; k < n_in * n_out; k++) *at++ = (2.0 * rng_uniform(r) - 1.0) * bound * gain;
    lin->bias = at;
    for (int k = 0; k < n_out; k++) *at++ = (2.0 * rng_uniform(r) - 1.0) * bound * gain;
    return at;
}

/* The network of make_reference.weights(EGNN(n, d, hidden, layers, scale), seed, gain). */
static test_net random_net(int n, int d, int H, int L, double scale, double gain, uint64_t seed)
{
    test_net t;
    size_t per_layer = (size_t)H * (2 * H + 1) + H + 2 * ((size_t)H * H + H) + H + 1;
    size_t node = (size_t)H * 2 * H + H + (size_t)H * H + H;
    t.store = malloc(((size_t)H + L * (per_layer + node)) * sizeof(double));
    t.layers = calloc((size_t)L, sizeof(sfG_layer));
    if (!t.store || !t.layers) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    rng64 r = {seed};
    double *at = t.store;
    t.net.n_particles = n;
    t.net.dim = d;
    t.net.hidden = H;
    t.net.n_layers = L;
    t.net.inv_scale2 = 1.0 / (scale * scale);
    t.net.h0 = at;
    for (int k = 0; k < H; k++) *at++ = (2.0 * rng_uniform(&r) - 1.0) * 1.0 * 1.0;
    for (int l = 0; l < L; l++) {
        sfG_layer *ly = &t.layers[l];
        at = fill_linear(&ly->edge1, 2 * H + 1, H, 1.0, &r, at);
        at = fill_linear(&ly->edge2, H, H, 1.0, &r, at);
        at = fill_linear(&ly->coord1, H, H, 1.0, &r, at);
        at = fill_linear(&ly->coord2, H, 1, gain, &r, at);
        ly->has_node = l < L - 1;
        if (ly->has_node) {
            at = fill_linear(&ly->node1, 2 * H, H, 1.0, &r, at);
            at = fill_linear(&ly->node2, H, H, 1.0, &r, at);
        }
    }
    t.net.layers = t.layers;
    return t;
}

static void free_net(test_net *t)
{
    free(t->store);
    free(t->layers);
}

static double *new_workspace(const sfG_net *net)
{
    double *ws = malloc(sfG_workspace_doubles(net) * sizeof(double));
    if (!ws) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return ws;
}

/* --------------------------------------------------- reference file */

#define MAX_CONFIGS 8
typedef struct ref_case {
    char name[64];
    int n, d, H, L, configs;
    double scale, gain;
    unsigned long long seed;
    double *x[MAX_CONFIGS], *z[MAX_CONFIGS], *grad[MAX_CONFIGS];
    double logp[MAX_CONFIGS], sign[MAX_CONFIGS];
} ref_case;

static int expect_word(FILE *f, const char *word)
{
    char tok[64];
    if (fscanf(f, "%63s", tok) != 1 || strcmp(tok, word) != 0) {
        printf("reference file: expected '%s', read '%s'\n", word, tok);
        return 0;
    }
    return 1;
}

static double *read_vector(FILE *f, const char *word, int count)
{
    if (!expect_word(f, word)) return NULL;
    double *v = malloc((size_t)count * sizeof(double));
    for (int k = 0; v && k < count; k++)
        if (fscanf(f, "%lf", &v[k]) != 1) {
            free(v);
            return NULL;
        }
    return v;
}

/* Reads the next case (1), the end (0) or fails (-1). */
static int read_case(FILE *f, ref_case *c)
{
    char tok[64];
    int c_rc;
    do { /* skip comment lines */
        if (fscanf(f, "%63s", tok) != 1) return -1;
        if (tok[0] == '#')
            while ((c_rc = fgetc(f)) != EOF && c_rc != '\n') {}
    } while (tok[0] == '#');
    if (strcmp(tok, "end") == 0) return 0;
    if (strcmp(tok, "case") != 0) return -1;
    if (fscanf(f, "%63s %d %d %d %d %lf %lf %llu %d", c->name, &c->n, &c->d, &c->H, &c->L, &c->scale, &c->gain,
               &c->seed, &c->configs) != 9 || c->configs > MAX_CONFIGS)
        return -1;
    const int nd = c->n * c->d;
    for (int k = 0; k < c->configs; k++) {
        c->x[k] = read_vector(f, "x", nd);
        c->z[k] = read_vector(f, "z", nd);
        if (!c->x[k] || !c->z[k] || !expect_word(f, "logp") || fscanf(f, "%lf", &c->logp[k]) != 1 ||
            !expect_word(f, "sign") || fscanf(f, "%lf", &c->sign[k]) != 1)
            return -1;
        c->grad[k] = read_vector(f, "grad", nd);
        if (!c->grad[k]) return -1;
    }
    return 1;
}

static void free_case(ref_case *c)
{
    for (int k = 0; k < c->configs; k++) {
        free(c->x[k]);
        free(c->z[k]);
        free(c->grad[k]);
    }
}

static double max_abs(const double *v, int count)
{
    double m = 0;
    for (int k = 0; k < count; k++) m = fmax(m, fabs(v[k]));
    return m;
}

static double max_abs_diff(const double *a, const double *b, int count)
{
    double m = 0;
    for (int k = 0; k < count; k++) m = fmax(m, fabs(a[k] - b[k]));
    return m;
}

/* Tolerances against PyTorch (float64; the two sides sum in different orders, BLAS against
 * PyTorch's kernels, and take the determinant in different bases of V):
 *  f       1e-12 relative to max |z|: a few layers of products of order-one weights, each
 *          rounding at ~1e-16 relative; measured <= 3e-16.
 *  log p   1e-12 relative to max(1, |log p|): log |det| is a sum of D log |pivot|, each off by
 *          about kappa(J_V) eps; measured <= 5e-16.
 *  grad    1e-10 relative to max |grad|: it goes through C^-1 (relative error ~ kappa(J_V)
 *          eps, kappa up to ~1e3 near the folds of dw4_deep) and a reverse pass over D
 *          tangents; measured <= 3e-14 (dw4_deep), <= 1e-15 elsewhere.
 * Mutations that each dropped one term of the gradient failed by 1e-4 to 1e-1 relative. */
#define TOL_F 1e-12
#define TOL_LOGP 1e-12
#define TOL_GRAD 1e-10

static void check_reference(const ref_case *c, const test_net *t, double *ws)
{
    const int nd = c->n * c->d;
    double *z = malloc((size_t)nd * sizeof(double)), *g = malloc((size_t)nd * sizeof(double));
    double worst_f = 0, worst_l = 0, worst_g = 0;
    for (int k = 0; k < c->configs; k++) {
        sfG_forward(&t->net, c->x[k], z, ws);
        const double ef = max_abs_diff(z, c->z[k], nd) / max_abs(c->z[k], nd);
        CHECK(ef <= TOL_F, "%s config %d: f(x) differs from PyTorch by %.3g relative", c->name, k, ef);
        double lp = NAN, sg = 0;
        sf_error err = {0};
        sf_status rc = sfG_log_density(&t->net, c->x[k], k, &lp, &sg, g, ws, &err);
        CHECK(rc == SF_OK, "%s config %d: status %d (%s)", c->name, k, (int)rc, err.message);
        const double el = fabs(lp - c->logp[k]) / fmax(1.0, fabs(c->logp[k]));
        CHECK(el <= TOL_LOGP, "%s config %d: log p %.17g, PyTorch %.17g (%.3g relative)", c->name, k, lp, c->logp[k],
              el);
        CHECK(sg == c->sign[k], "%s config %d: sign of det J_V %g, PyTorch %g", c->name, k, sg, c->sign[k]);
        const double eg = max_abs_diff(g, c->grad[k], nd) / max_abs(c->grad[k], nd);
        CHECK(eg <= TOL_GRAD, "%s config %d: gradient differs from PyTorch by %.3g relative", c->name, k, eg);
        for (int a = 0; a < c->d; a++) { /* log p is translation invariant: no net force */
            double sum = 0;
            for (int i = 0; i < c->n; i++) sum += g[i * c->d + a];
            CHECK(fabs(sum) <= 1e-13 * c->n * max_abs(g, nd), "%s config %d: gradient sums to %g along axis %d",
                  c->name, k, sum, a);
        }
        worst_f = fmax(worst_f, ef);
        worst_l = fmax(worst_l, el);
        worst_g = fmax(worst_g, eg);
    }
    printf("%-9s n=%-2d d=%d H=%-2d L=%d: vs PyTorch, max relative error f %.1e, log p %.1e, grad %.1e\n", c->name,
           c->n, c->d, c->H, c->L, worst_f, worst_l, worst_g);
    free(z);
    free(g);
}

/* --------------------------------------------- finite differences */

static double log_p_at(const test_net *t, const double *x, double *ws)
{
    double lp = NAN, sg;
    sf_error err = {0};
    if (sfG_log_density(&t->net, x, 0, &lp, &sg, NULL, ws, &err) != SF_OK) printf("  (%s)\n", err.message);
    return lp;
}

/* d log p / dx_k vs central differences with steps h and 2h.  Their difference estimates the
 * truncation error (f''' h^2 / 6 for step h is a third of it), so the tolerance follows the
 * curvature at this x: 2 |D(2h) - D(h)|, plus the rounding of log p amplified by 1/h. */
static void check_finite_differences(const char *name, const test_net *t, const double *x0, double *ws)
{
    const int nd = t->net.n_particles * t->net.dim;
    double *x = malloc((size_t)nd * sizeof(double)), *g = malloc((size_t)nd * sizeof(double));
    memcpy(x, x0, (size_t)nd * sizeof(double));
    double lp, sg;
    sf_error err = {0};
    CHECK(sfG_log_density(&t->net, x, 0, &lp, &sg, g, ws, &err) == SF_OK, "%s: %s", name, err.message);
    const double h = 1e-5, gmax = max_abs(g, nd);
    /* log p rounds at ~36 ulp (the sum of D log-pivots and |z|^2 / 2), amplified by 1/h */
    const double rounding = 8e-15 * fmax(1.0, fabs(lp)) / h;
    double worst = 0, worst_tol = 0;
    for (int k = 0; k < nd; k++) {
        double v[4];
        const double steps[4] = {h, -h, 2 * h, -2 * h};
        for (int s = 0; s < 4; s++) {
            x[k] = x0[k] + steps[s];
            v[s] = log_p_at(t, x, ws);
        }
        x[k] = x0[k];
        const double d1 = (v[0] - v[1]) / (2 * h), d2 = (v[2] - v[3]) / (4 * h);
        const double tol = 2 * fabs(d2 - d1) + rounding + 1e-12 * gmax;
        const double e = fabs(g[k] - d1);
        CHECK(e <= tol, "%s: d log p / dx[%d] = %.12g, central difference %.12g (error %.3g > tolerance %.3g)", name, k,
              g[k], d1, e, tol);
        if (e / gmax > worst) worst = e / gmax, worst_tol = tol / gmax;
    }
    printf("%-9s gradient vs central differences (h = 1e-5): max error %.1e of max |grad| (tolerance there %.1e)\n",
           name, worst, worst_tol);
    free(x);
    free(g);
}

/* ------------------------------------------------------- symmetries */

/* A random orthogonal d x d matrix (Gram-Schmidt of Gaussian columns); det -1 if reflect. */
static void random_orthogonal(int d, rng64 *r, int reflect, double *R)
{
    for (int k = 0; k < d * d; k++) R[k] = rng_normal(r);
    for (int c = 0; c < d; c++) {
        for (int p = 0; p < c; p++) {
            double dot = 0;
            for (int a = 0; a < d; a++) dot += R[a * d + c] * R[a * d + p];
            for (int a = 0; a < d; a++) R[a * d + c] -= dot * R[a * d + p];
        }
        double norm = 0;
        for (int a = 0; a < d; a++) norm += R[a * d + c] * R[a * d + c];
        for (int a = 0; a < d; a++) R[a * d + c] /= sqrt(norm);
    }
    /* the sign of det R: make it +1, then flip one column for a reflection */
    double det = 1;
    if (d == 2) det = R[0] * R[3] - R[1] * R[2];
    if (d == 3)
        det = R[0] * (R[4] * R[8] - R[5] * R[7]) - R[1] * (R[3] * R[8] - R[5] * R[6]) +
              R[2] * (R[3] * R[7] - R[4] * R[6]);
    if (d == 1) det = R[0];
    if ((det < 0) != (reflect != 0))
        for (int a = 0; a < d; a++) R[a * d] = -R[a * d];
}

/* y_i = x_i R (row vectors), for n particles. */
static void rotate(int n, int d, const double *R, const double *x, double *y)
{
    for (int i = 0; i < n; i++)
        for (int b = 0; b < d; b++) {
            double s = 0;
            for (int a = 0; a < d; a++) s += x[i * d + a] * R[a * d + b];
            y[i * d + b] = s;
        }
}

static void check_symmetries(const char *name, const test_net *t, const double *x, double *ws, uint64_t seed)
{
    const int n = t->net.n_particles, d = t->net.dim, nd = n * d;
    rng64 r = {seed};
    double *y = malloc((size_t)nd * sizeof(double)), *g = malloc((size_t)nd * sizeof(double));
    double *gy = malloc((size_t)nd * sizeof(double)), *gt = malloc((size_t)nd * sizeof(double));
    double *z = malloc((size_t)nd * sizeof(double)), *zy = malloc((size_t)nd * sizeof(double));
    double *zt = malloc((size_t)nd * sizeof(double));
    double R[9], lp, sg, lpy, sgy;
    sf_error err = {0};
    CHECK(sfG_log_density(&t->net, x, 0, &lp, &sg, g, ws, &err) == SF_OK, "%s: %s", name, err.message);
    sfG_forward(&t->net, x, z, ws);
    const double gmax = max_abs(g, nd), zmax = max_abs(z, nd), ltol = 1e-12 * fmax(1.0, fabs(lp));
    double worst_l = 0, worst_g = 0;
    for (int kind = 0; kind < 4; kind++) { /* rotation, reflection, translation, permutation */
        static const char *what[4] = {"rotation", "reflection", "translation", "permutation"};
        int perm[64];
        if (kind < 2) {
            random_orthogonal(d, &r, kind == 1, R);
            rotate(n, d, R, x, y);
        } else if (kind == 2) {
            for (int a = 0; a < d; a++) {
                const double shift = 10 * rng_normal(&r);
                for (int i = 0; i < n; i++) y[i * d + a] = x[i * d + a] + shift;
            }
        } else {
            for (int i = 0; i < n; i++) perm[i] = i;
            for (int i = n - 1; i > 0; i--) { /* Fisher-Yates; a transposition when n = 2 */
                const int j = (int)(rng_next(&r) % (uint64_t)i);
                const int s = perm[i];
                perm[i] = perm[j];
                perm[j] = s;
            }
            for (int i = 0; i < n; i++) memcpy(y + i * d, x + perm[i] * d, (size_t)d * sizeof(double));
        }
        CHECK(sfG_log_density(&t->net, y, 0, &lpy, &sgy, gy, ws, &err) == SF_OK, "%s: %s", name, err.message);
        sfG_forward(&t->net, y, zy, ws);
        /* expected: grad and f transform like x (translations leave both unchanged) */
        if (kind < 2) {
            rotate(n, d, R, g, gt);
            rotate(n, d, R, z, zt);
        } else if (kind == 2) {
            memcpy(gt, g, (size_t)nd * sizeof(double));
            memcpy(zt, z, (size_t)nd * sizeof(double));
        } else {
            for (int i = 0; i < n; i++) {
                memcpy(gt + i * d, g + perm[i] * d, (size_t)d * sizeof(double));
                memcpy(zt + i * d, z + perm[i] * d, (size_t)d * sizeof(double));
            }
        }
        CHECK(fabs(lpy - lp) <= ltol, "%s, %s: log p %.17g, untransformed %.17g", name, what[kind], lpy, lp);
        CHECK(sgy == sg, "%s, %s: sign of det J_V changed", name, what[kind]);
        const double eg = max_abs_diff(gy, gt, nd) / gmax, ez = max_abs_diff(zy, zt, nd) / zmax;
        CHECK(eg <= 1e-11, "%s, %s: gradient not equivariant (%.3g relative)", name, what[kind], eg);
        CHECK(ez <= 1e-12, "%s, %s: f not equivariant (%.3g relative)", name, what[kind], ez);
        worst_l = fmax(worst_l, fabs(lpy - lp) / fmax(1.0, fabs(lp)));
        worst_g = fmax(worst_g, eg);
    }
    printf("%-9s symmetries (rotation, reflection, translation, permutation): log p within %.1e, grad within %.1e\n",
           name, worst_l, worst_g);
    free(y);
    free(g);
    free(gy);
    free(gt);
    free(z);
    free(zy);
    free(zt);
}

/* ----------------------------------------------------------- errors */

static int mentions(const char *message, const char *part) { return strstr(message, part) != NULL; }

/* Evaluates x expecting SF_ERR_NUMERIC with a message holding "configuration 7" and part;
 * grad must keep its sentinel values, log p and the sign theirs. */
static void expect_numeric_error(const char *what, const test_net *t, const double *x, const char *part, double *ws)
{
    const int nd = t->net.n_particles * t->net.dim;
    double *g = malloc((size_t)nd * sizeof(double));
    for (int k = 0; k < nd; k++) g[k] = 12345.0 + k;
    double lp = -777.0, sg = 5.0;
    sf_error err = {0};
    const sf_status rc = sfG_log_density(&t->net, x, 7, &lp, &sg, g, ws, &err);
    CHECK(rc == SF_ERR_NUMERIC && err.code == SF_ERR_NUMERIC, "%s: status %d, expected SF_ERR_NUMERIC", what, (int)rc);
    CHECK(mentions(err.message, "configuration 7") && mentions(err.message, part),
          "%s: message '%s' should name configuration 7 and '%s'", what, err.message, part);
    int untouched = lp == -777.0 && sg == 5.0;
    for (int k = 0; k < nd; k++) untouched &= g[k] == 12345.0 + k;
    CHECK(untouched, "%s: outputs written on error", what);
    printf("error path, %s: \"%s\"\n", what, err.message);
    free(g);
}

static void check_errors(void)
{
    /* A network whose coordinate MLP is the constant phi = -(n - 1)/n (coord2's weights 0):
     * x_i' = x_i - (x_i - mean x) maps V to {0}, so J_V = 0 exactly.  With integer positions
     * and n = 4 every product is exact (phi = -3/4), so the LU meets an exactly zero pivot. */
    test_net t = random_net(4, 2, 8, 2, 2.0, 0.5, 99);
    double *ws = new_workspace(&t.net);
    for (int l = 0; l < 2; l++) {
        double *w = (double *)t.layers[l].coord2.weight, *b = (double *)t.layers[l].coord2.bias;
        for (int k = 0; k < 8; k++) w[k] = 0;
        b[0] = l == 0 ? -0.75 : 0.0; /* the second layer then adds nothing */
    }
    const double xs[8] = {1, 0, -1, 2, 3, -1, -3, -1};
    double z[8];
    sfG_forward(&t.net, xs, z, ws);
    CHECK(max_abs(z, 8) == 0, "singular network: f(x) = %g, expected 0 exactly", max_abs(z, 8));
    expect_numeric_error("det J_V = 0", &t, xs, "det J_V = 0", ws);
    free(ws);
    free_net(&t);

    /* non-finite input, and input so large that |x_i - x_j|^2 overflows */
    t = random_net(4, 2, 8, 2, 2.0, 0.5, 11);
    ws = new_workspace(&t.net);
    double x[8] = {0.3, -1.2, 1.1, 0.4, -0.7, 0.9, -0.2, -0.5};
    x[5] = NAN;
    expect_numeric_error("NaN position", &t, x, "particle 2", ws);
    x[5] = -INFINITY;
    expect_numeric_error("infinite position", &t, x, "particle 2", ws);
    for (int k = 0; k < 8; k++) x[k] = 1e200 * (k % 3 - 1);
    expect_numeric_error("overflowing positions", &t, x, "not finite", ws);
    free(ws);
    free_net(&t);
}

/* ------------------------------------------------------------ timing */

static double now_seconds(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void print_timing(const ref_case *c, const test_net *t, double *ws)
{
    const int nd = c->n * c->d;
    double *g = malloc((size_t)nd * sizeof(double)), lp, sg;
    sf_error err;
    for (int mode = 0; mode < 3; mode++) {
        static const char *what[3] = {"f(x) only", "log p (forward with tangents, LU)", "log p and gradient"};
        int reps = 0;
        const double t0 = now_seconds();
        double t1 = t0;
        while (t1 - t0 < 1.0 || reps < 3) {
            if (mode == 0)
                sfG_forward(&t->net, c->x[0], g, ws);
            else
                sfG_log_density(&t->net, c->x[0], 0, &lp, &sg, mode == 2 ? g : NULL, ws, &err);
            reps++;
            t1 = now_seconds();
        }
        printf("timing %s (n=%d d=%d H=%d L=%d): %s: %.3f ms per configuration (%d runs)\n", c->name, c->n, c->d,
               c->H, c->L, what[mode], 1e3 * (t1 - t0) / reps, reps);
    }
    printf("timing: workspace %zu doubles (%.1f MB)\n", sfG_workspace_doubles(&t->net),
           sfG_workspace_doubles(&t->net) * 8e-6);
    free(g);
}

/* -------------------------------------------------------------- main */

int main(int argc, char **argv)
{
#ifdef SMOOTHFLOW_OPENBLAS
    openblas_set_num_threads(1); /* as the library does at the first model load */
#endif
    const char *path = argc > 1 ? argv[1] : SMOOTHFLOW_TEST_DATA_DIR "/egnn/reference.txt";
    const int timing = getenv("SMOOTHFLOW_EGNN_TIMING") != NULL;
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("cannot open %s\n", path);
        return 1;
    }
    int cases = 0, rc;
    ref_case c;
    while ((rc = read_case(f, &c)) == 1) {
        test_net t = random_net(c.n, c.d, c.H, c.L, c.scale, c.gain, c.seed);
        double *ws = new_workspace(&t.net);
        check_reference(&c, &t, ws);
        for (int k = 0; k < c.configs; k++) {
            /* finite differences on every configuration of the small cases, one of LJ13 */
            if (k > 0 && c.n > 8) break;
            char label[96];
            snprintf(label, sizeof label, "%s#%d", c.name, k);
            check_finite_differences(label, &t, c.x[k], ws);
        }
        check_symmetries(c.name, &t, c.x[0], ws, 1000 + c.seed);
        if (timing && c.n == 13) print_timing(&c, &t, ws);
        free(ws);
        free_net(&t);
        free_case(&c);
        cases++;
    }
    fclose(f);
    CHECK(rc == 0, "%s: malformed reference file after %d cases", path, cases);
    CHECK(cases >= 4, "%s: %d cases, expected at least 4", path, cases);
    check_errors();
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
