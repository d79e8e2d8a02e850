/* test_core.c -- unit tests of the C core on random models built in memory:
 * transform inverse and derivatives, forces against finite differences,
 * batch and periodic consistency, smoothness, the wall policy, bad input,
 * and every outcome finite or an error.
 * `--quick` runs a reduced set (for a fast check under valgrind or a sanitizer). */
#include "model_builder.h"
#include "smoothflow.h"
/* Only for test_finite_checks_white_box, which writes values the loader refuses into a
 * loaded sf_model; every other test uses the public API alone. */
#include "../src/sf_internal.h"

#include <cJSON.h>
#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_check.h"

static int quick = 0;

static sf_model *load(const mb_spec *spec)
{
    size_t size;
    unsigned char *bytes = mb_build(spec, NULL, NULL, &size);
    sf_model *m = NULL;
    sf_error err;
    sf_status rc = sf_model_load_bytes(bytes, size, &m, &err);
    CHECK(rc == SF_OK, "load failed: %s", err.message);
    free(bytes);
    return m;
}

static double energy_of(const sf_model *m, sf_workspace *ws, const double *pos, const double *box)
{
    double e = NAN;
    sf_error err;
    sf_status rc = sf_evaluate(m, ws, 1, pos, box, &e, NULL, NULL, &err);
    CHECK(rc == SF_OK, "evaluate: %s", err.message);
    return e;
}

/* ------------------------------------------------------------ transform */

static void random_raw(unsigned long long *st, int K, double scale, double *raw)
{
    for (int i = 0; i < 4 * K + 2; i++) raw[i] = scale * mb_normal(st);
}

static void test_inverse(void)
{
    sf_smooth_constants c = {0.01, 0.1, 0.99, 1};
    unsigned long long st = 42;
    double ys[] = {0.0, 1e-300, 1e-15, 1e-12, 1e-6, 0.01, 0.25, 0.5, 0.75, 0.99, 1 - 1e-9, 1 - 1e-15, 1.0};
    int n_models = quick ? 10 : 200, steep = 0;
    double worst = 0;
    for (int trial = 0; trial < n_models; trial++) {
        int K = 1 + trial % 8;
        double raw[4 * 8 + 2];
        /* Larger scales give steep components: narrow windows, sharp ramps. */
        random_raw(&st, K, 0.5 + 4.0 * (trial % 5) / 4.0, raw);
        for (int circ = 0; circ < 2; circ++) {
            for (size_t i = 0; i < sizeof ys / sizeof ys[0] + 20; i++) {
                double y = i < sizeof ys / sizeof ys[0] ? ys[i] : mb_uniform(&st), x, back;
                int it = sf_smooth_inverse(&c, K, raw, circ, y, &x);
                CHECK(it >= 0, "inverse did not converge: K=%d y=%.17g", K, y);
                double slope;
                sf_smooth_forward(&c, K, raw, circ, x, &back, &slope, NULL);
                double diff = fabs(back - y);
                if (circ) diff = fmin(diff, 1 - diff); /* on the circle 0 == 1 */
                /* 1e-13, unless the transform is so steep (F' > ~500) that
                 * one ulp of x moves F by more: then within a few ulps of x. */
                double tol = fmax(1e-13, 8 * slope * (nextafter(x, 2.0) - x));
                if (diff <= 1e-13) worst = fmax(worst, diff);
                else steep++;
                CHECK(diff <= tol, "F(F^-1(y)) - y = %.3g > %.3g (K=%d circ=%d y=%.17g)", diff, tol, K, circ, y);
            }
        }
    }
    printf("inverse: worst |F(F^-1(y)) - y| = %.3g; %d ulp-limited cases of steep components\n", worst, steep);
}

static void test_transform_derivatives(void)
{
    sf_smooth_constants c = {0.01, 0.1, 0.99, 1};
    unsigned long long st = 7;
    for (int trial = 0; trial < (quick ? 4 : 40); trial++) {
        int K = 1 + trial % 8;
        double raw[4 * 8 + 2];
        random_raw(&st, K, 1.0, raw);
        double x = 0.05 + 0.9 * mb_uniform(&st), f, f1, f2, fp, fm, f1p, f1m;
        double h = 1e-6;
        sf_smooth_forward(&c, K, raw, 0, x, &f, &f1, &f2);
        sf_smooth_forward(&c, K, raw, 0, x + h, &fp, &f1p, NULL);
        sf_smooth_forward(&c, K, raw, 0, x - h, &fm, &f1m, NULL);
        CHECK(fabs((fp - fm) / (2 * h) - f1) <= 1e-6 * (1 + fabs(f1)), "F' mismatch");
        CHECK(fabs((f1p - f1m) / (2 * h) - f2) <= 1e-5 * (1 + fabs(f2)), "F'' mismatch %g vs %g",
              (f1p - f1m) / (2 * h), f2);
        CHECK(f1 >= 1 - c.c_max - 1e-15, "F' below 1 - c_max");
    }
}

/* ---------------------------------------------------------------- forces */

static void net_force_and_torque(const double *pos, const double *f, int N, double *net, double *torque)
{
    double F[3] = {0, 0, 0}, T[3] = {0, 0, 0};
    for (int a = 0; a < N; a++) {
        const double *r = pos + 3 * a, *g = f + 3 * a;
        for (int c = 0; c < 3; c++) F[c] += g[c];
        T[0] += r[1] * g[2] - r[2] * g[1];
        T[1] += r[2] * g[0] - r[0] * g[2];
        T[2] += r[0] * g[1] - r[1] * g[0];
    }
    *net = sqrt(F[0] * F[0] + F[1] * F[1] + F[2] * F[2]);
    *torque = sqrt(T[0] * T[0] + T[1] * T[1] + T[2] * T[2]);
}

static void check_forces(const mb_spec *spec, const sf_model *m, const double *pos0, const double *box,
                         const char *label)
{
    int N = spec->n_atoms;
    sf_workspace *ws;
    sf_error err;
    CHECK(sf_workspace_new(m, 1, &ws, &err) == SF_OK, "workspace: %s", err.message);
    double *pos = malloc(sizeof(double) * 3 * N), *f = malloc(sizeof(double) * 3 * N);
    memcpy(pos, pos0, sizeof(double) * 3 * N);
    double e;
    sf_status rc = sf_evaluate(m, ws, 1, pos, box, &e, f, NULL, &err);
    CHECK(rc == SF_OK, "%s: evaluate failed: %s", label, err.message);
    double fmax = 0, worst = 0;
    for (int i = 0; i < 3 * N; i++) fmax = fmax > fabs(f[i]) ? fmax : fabs(f[i]);
    double h = 5e-6;
    for (int i = 0; i < 3 * N; i++) {
        /* Fourth-order central differences. */
        double x0 = pos[i], e4[4], steps[4] = {2, 1, -1, -2};
        for (int k = 0; k < 4; k++) {
            pos[i] = x0 + steps[k] * h;
            e4[k] = energy_of(m, ws, pos, box);
        }
        pos[i] = x0;
        double fd = -(-e4[0] + 8 * e4[1] - 8 * e4[2] + e4[3]) / (12 * h);
        double diff = fabs(fd - f[i]) / (1 + fmax);
        worst = diff > worst ? diff : worst;
    }
    CHECK(worst < 1e-6, "%s: forces vs finite differences, worst relative %.3g (max |F| %.3g)", label, worst, fmax);
    if (!box) {
        double net, torque;
        net_force_and_torque(pos, f, N, &net, &torque);
        CHECK(net < 1e-9 * (1 + fmax) && torque < 1e-9 * (1 + fmax), "%s: net force %.3g, net torque %.3g", label,
              net, torque);
    }
    free(pos);
    free(f);
    sf_workspace_free(ws);
}

static void test_forces(void)
{
    const char *acts[3] = {"silu", "tanh", "softplus"};
    int n = quick ? 2 : 16;
    for (int i = 0; i < n; i++) {
        mb_spec spec = mb_default_spec(100 + i);
        spec.n_atoms = 4 + i % 6;
        spec.K = 1 + i % 8;
        spec.n_layers = 1 + i % 4;
        spec.activation = acts[i % 3];
        spec.mixed_directions = i % 2;
        spec.n_hidden = i % 3;
        spec.weight_scale = 0.4 + 0.3 * (i % 3);
        sf_model *m = load(&spec);
        if (!m) continue;
        double *pos = malloc(sizeof(double) * 3 * spec.n_atoms);
        for (int conf = 0; conf < 3; conf++) {
            mb_positions(&spec, 1000 * i + conf, pos);
            char label[64];
            snprintf(label, sizeof label, "model %d conf %d", i, conf);
            check_forces(&spec, m, pos, NULL, label);
        }
        free(pos);
        sf_model_free(m);
    }
}

/* The flow's log density gradient against finite differences in u. */
static void check_log_density_gradient(const mb_spec *spec, const char *label)
{
    sf_model *m = load(spec);
    if (!m) return;
    sf_workspace *ws;
    sf_workspace_new(m, 1, &ws, NULL);
    int D = sf_model_num_dims(m);
    double *u = malloc(sizeof(double) * D), *g = malloc(sizeof(double) * D);
    unsigned long long st = 99 + spec->seed;
    for (int d = 0; d < D; d++) u[d] = 0.1 + 0.8 * mb_uniform(&st);
    double lp, lpp, lpm, worst = 0;
    sf_error err;
    CHECK(sf_log_density(m, ws, u, &lp, g, &err) == SF_OK, "%s: log density: %s", label, err.message);
    for (int d = 0; d < D; d++) {
        double u0 = u[d], h = 1e-6;
        u[d] = u0 + h;
        sf_log_density(m, ws, u, &lpp, NULL, NULL);
        u[d] = u0 - h;
        sf_log_density(m, ws, u, &lpm, NULL, NULL);
        u[d] = u0;
        double diff = fabs((lpp - lpm) / (2 * h) - g[d]) / (1 + fabs(g[d]));
        worst = diff > worst ? diff : worst;
    }
    CHECK(worst < 1e-6, "%s: d log p/du vs finite differences: worst %.3g", label, worst);
    free(u);
    free(g);
    sf_workspace_free(ws);
    sf_model_free(m);
}

static void test_log_density_gradient(void)
{
    mb_spec spec = mb_default_spec(5);
    spec.mixed_directions = 1;
    check_log_density_gradient(&spec, "smooth");
}

static void check_batch(const mb_spec *spec_in, const char *label)
{
    mb_spec spec = *spec_in;
    sf_model *m = load(&spec);
    if (!m) return;
    int N = spec.n_atoms, B = 5;
    sf_workspace *ws1, *wsB;
    sf_workspace_new(m, 1, &ws1, NULL);
    /* Caller-owned memory for the batch workspace. */
    size_t size = sf_workspace_size(m, B);
    void *mem = aligned_alloc(16, (size + 15) / 16 * 16);
    sf_error err;
    CHECK(sf_workspace_init(m, B, mem, size, &wsB, &err) == SF_OK, "workspace_init: %s", err.message);
    CHECK(sf_workspace_init(m, B, mem, size - 1, &wsB, &err) == SF_ERR_ARG, "a small buffer must be refused");
    sf_workspace_init(m, B, mem, size, &wsB, NULL);
    double *pos = malloc(sizeof(double) * 3 * N * B), *f = malloc(sizeof(double) * 3 * N * B);
    double *f1 = malloc(sizeof(double) * 3 * N), e[5], e1;
    for (int b = 0; b < B; b++) mb_positions(&spec, 77 + b, pos + 3 * N * b);
    CHECK(sf_evaluate(m, wsB, B, pos, NULL, e, f, NULL, &err) == SF_OK, "batch: %s", err.message);
    CHECK(sf_evaluate(m, wsB, B + 1, pos, NULL, e, f, NULL, &err) == SF_ERR_ARG, "batch beyond workspace refused");
    /* A batch runs the conditioners as matrix-matrix products, which a
     * blocked or threaded implementation may sum in another order than the
     * single-molecule matrix-vector products: equal to rounding (1e-12
     * relative), not necessarily bit for bit. */
    for (int b = 0; b < B; b++) {
        sf_evaluate(m, ws1, 1, pos + 3 * N * b, NULL, &e1, f1, NULL, NULL);
        CHECK(fabs(e1 - e[b]) <= 1e-12 * fmax(1.0, fabs(e1)), "%s: batch energy %d differs: %.17g vs %.17g", label, b,
              e[b], e1);
        double fmax1 = 0, worst = 0;
        for (int i = 0; i < 3 * N; i++) {
            fmax1 = fmax(fmax1, fabs(f1[i]));
            worst = fmax(worst, fabs(f1[i] - f[3 * N * b + i]));
        }
        CHECK(worst <= 1e-12 * fmax(1.0, fmax1), "%s: batch forces of molecule %d differ by %.3g (max |F| %.3g)", label,
              b, worst, fmax1);
    }
    free(pos);
    free(f);
    free(f1);
    free(mem);
    sf_workspace_free(ws1);
    sf_model_free(m);
}

static void test_batch(void)
{
    mb_spec spec = mb_default_spec(17);
    check_batch(&spec, "smooth");
}

/* SF_WEIGHTS_FLOAT32: the forces are the exact derivatives of the rounded-weight
 * energy; one molecule (mixed float/double products, the portable or the AVX-512
 * code) and a batch (BLAS on the rounded doubles) agree; float64 restores the stored
 * weights bit for bit; an unknown precision is refused and changes nothing. */
static void test_float32_weights(void)
{
    const char *kinds[3] = {"smooth", "spline", "affine"};
    for (int t = 0; t < 3; t++) {
        mb_spec spec = mb_default_spec(40 + t);
        spec.n_atoms = 9; /* conditioner outputs not a multiple of the 8-row panels */
        spec.n_hidden = 2;
        spec.hidden[0] = 13;
        spec.hidden[1] = 24;
        spec.transform = kinds[t];
        sf_model *m = load(&spec);
        if (!m) continue;
        const int N = spec.n_atoms, B = 5;
        double *pos = malloc(sizeof(double) * 3 * N * B), *f = malloc(sizeof(double) * 3 * N * B);
        double *f1 = malloc(sizeof(double) * 3 * N), e64[5], e[5], e1;
        for (int b = 0; b < B; b++) mb_positions(&spec, 300 + b, pos + 3 * N * b);
        sf_workspace *ws1, *wsB;
        sf_error err;
        sf_workspace_new(m, 1, &ws1, NULL);
        sf_workspace_new(m, B, &wsB, NULL);
        CHECK(sf_model_weight_precision(m) == SF_WEIGHTS_FLOAT64, "%s: float64 after load", kinds[t]);
        sf_evaluate(m, wsB, B, pos, NULL, e64, NULL, NULL, NULL);
        CHECK(sf_model_set_weight_precision(m, (sf_weight_precision)2, &err) == SF_ERR_ARG &&
                  sf_model_weight_precision(m) == SF_WEIGHTS_FLOAT64,
              "%s: an unknown precision must be refused", kinds[t]);
        CHECK(sf_model_set_weight_precision(m, SF_WEIGHTS_FLOAT32, &err) == SF_OK, "%s: float32: %s", kinds[t],
              err.message);
        CHECK(sf_model_weight_precision(m) == SF_WEIGHTS_FLOAT32, "%s: reads float32", kinds[t]);
        char label[64];
        snprintf(label, sizeof label, "float32 %s", kinds[t]);
        check_forces(&spec, m, pos, NULL, label);
        CHECK(sf_evaluate(m, wsB, B, pos, NULL, e, f, NULL, &err) == SF_OK, "%s: batch: %s", label, err.message);
        double moved = 0;
        for (int b = 0; b < B; b++) {
            moved = fmax(moved, fabs(e[b] - e64[b]));
            sf_evaluate(m, ws1, 1, pos + 3 * N * b, NULL, &e1, f1, NULL, NULL);
            CHECK(fabs(e1 - e[b]) <= 1e-12 * fmax(1.0, fabs(e1)), "%s: one molecule %.17g, batch %.17g", label, e1,
                  e[b]);
            double fmax1 = 0, worst = 0;
            for (int i = 0; i < 3 * N; i++) {
                fmax1 = fmax(fmax1, fabs(f1[i]));
                worst = fmax(worst, fabs(f1[i] - f[3 * N * b + i]));
            }
            CHECK(worst <= 1e-11 * fmax(1.0, fmax1), "%s: forces of molecule %d: one vs batch %.3g", label, b, worst);
        }
        CHECK(moved > 0, "%s: rounding the weights must move the energy", label);
        CHECK(sf_model_set_weight_precision(m, SF_WEIGHTS_FLOAT64, &err) == SF_OK, "%s: back to float64", label);
        sf_evaluate(m, wsB, B, pos, NULL, e, NULL, NULL, NULL);
        for (int b = 0; b < B; b++) CHECK(e[b] == e64[b], "%s: float64 again must restore molecule %d", label, b);
        free(pos);
        free(f);
        free(f1);
        sf_workspace_free(ws1);
        sf_workspace_free(wsB);
        sf_model_free(m);
    }
    CHECK(sf_model_set_weight_precision(NULL, SF_WEIGHTS_FLOAT32, NULL) == SF_ERR_ARG, "NULL model refused");
    CHECK(sf_model_weight_precision(NULL) == SF_WEIGHTS_FLOAT64, "NULL model reads float64");
}

/* sf_model_describe and friends against what the model builder wrote. */
static void test_model_description(void)
{
    mb_spec spec = mb_default_spec(61);
    spec.n_atoms = 7;
    spec.n_hidden = 1;
    spec.hidden[0] = 11;
    spec.transform = "mixed";
    spec.n_layers = 3;
    sf_model *m = load(&spec);
    if (!m) return;
    sf_model_description d;
    CHECK(sf_model_describe(m, &d) == SF_OK, "describe");
    CHECK(d.N == 7 && d.D == 15 && d.n_layers == 3, "N %d D %d layers %d", d.N, d.D, d.n_layers);
    CHECK(d.kT == sf_model_kT(m) && d.policy == sf_model_support_policy(m), "kT and policy as the getters say");
    const char *kinds[3] = {"smooth", "spline", "affine"};
    for (int l = 0; l < 3; l++) {
        sf_layer_description L;
        CHECK(sf_model_describe_layer(m, l, &L) == SF_OK, "layer %d", l);
        CHECK((int)L.transform == l % 3, "layer %d is %s, described as %d", l, kinds[l % 3], (int)L.transform);
        CHECK(L.n_trans + L.n_cond == d.D && L.n_linear == 2 && L.width[1] == 11, "layer %d shape", l);
        CHECK(L.width[2] == L.n_trans * L.P, "layer %d output width %d = %d x %d", l, L.width[2], L.n_trans, L.P);
        CHECK(sf_model_layer_weight(m, l, 1) != NULL && sf_model_layer_bias(m, l, 1) != NULL, "layer %d W", l);
        CHECK(sf_model_layer_weight(m, l, 2) == NULL && sf_model_layer_bias(m, l, -1) == NULL, "out of range: NULL");
    }
    /* the weights as the core applies them: rounded to float under SF_WEIGHTS_FLOAT32 */
    const double w64 = sf_model_layer_weight(m, 0, 0)[3];
    sf_model_set_weight_precision(m, SF_WEIGHTS_FLOAT32, NULL);
    const double w32 = sf_model_layer_weight(m, 0, 0)[3];
    CHECK(w32 == (double)(float)w64 && w32 != w64, "float32 weight %.17g of %.17g", w32, w64);
    sf_layer_description L;
    double lo, hi, mean, sigma;
    CHECK(sf_model_describe_layer(m, 3, &L) == SF_ERR_ARG && sf_model_describe(NULL, &d) == SF_ERR_ARG,
          "out of range or NULL refused");
    CHECK(sf_model_bond_bounds(m, 0, &lo, &hi) == SF_OK && lo > 0 && hi > lo, "bond 0 bounds %g %g", lo, hi);
    CHECK(sf_model_bond_bounds(m, d.N - 1, &lo, &hi) == SF_ERR_ARG, "bond N-1 refused");
    CHECK(sf_model_prior(m, 0, &mean, &sigma) == (d.has_prior ? SF_OK : SF_ERR_ARG), "prior as has_prior says");
    sf_model_free(m);
}

static void test_periodic(void)
{
    mb_spec spec = mb_default_spec(23);
    sf_model *m = load(&spec);
    int N = spec.n_atoms;
    sf_workspace *ws;
    sf_workspace_new(m, 1, &ws, NULL);
    double box[9] = {2.5, 0, 0, 0.4, 2.2, 0, -0.3, 0.5, 2.0}; /* triclinic */
    double *pos = malloc(sizeof(double) * 3 * N), *moved = malloc(sizeof(double) * 3 * N);
    double *f = malloc(sizeof(double) * 3 * N), *fm = malloc(sizeof(double) * 3 * N);
    mb_positions(&spec, 5, pos);
    for (int i = 0; i < 3 * N; i++) pos[i] += 1.0;
    double e, e_free, em;
    sf_evaluate(m, ws, 1, pos, box, &e, f, NULL, NULL);
    sf_evaluate(m, ws, 1, pos, NULL, &e_free, NULL, NULL, NULL);
    CHECK(fabs(e - e_free) < 1e-9 * (1 + fabs(e)), "a compact molecule must not feel the box");
    unsigned long long st = 3;
    memcpy(moved, pos, sizeof(double) * 3 * N);
    for (int a = 0; a < N; a++) {
        int na = (int)(mb_uniform(&st) * 5) - 2, nb = (int)(mb_uniform(&st) * 5) - 2, nc = (int)(mb_uniform(&st) * 5) - 2;
        for (int c = 0; c < 3; c++) moved[3 * a + c] += na * box[c] + nb * box[3 + c] + nc * box[6 + c];
    }
    sf_evaluate(m, ws, 1, moved, box, &em, fm, NULL, NULL);
    CHECK(fabs(e - em) < 1e-9 * (1 + fabs(e)), "periodic images change the energy: %.17g vs %.17g", e, em);
    double worst = 0;
    for (int i = 0; i < 3 * N; i++) worst = fmax(worst, fabs(f[i] - fm[i]));
    CHECK(worst < 1e-7, "periodic images change the forces by %.3g", worst);
    check_forces(&spec, m, moved, box, "periodic");
    free(pos);
    free(moved);
    free(f);
    free(fm);
    sf_workspace_free(ws);
    sf_model_free(m);
}

/* Second differences of the energy along a line through a configuration,
 * at n_points points of [-half, half] (nm along a random unit direction),
 * with steps h, h/2, h/4 (h = 1e-3): where the energy is C2 they converge
 * as h^2, so successive differences have a ratio of 4.  Returns the number
 * of points where they do not; d2 (n_points x 3) receives the differences. */
static int second_difference_failures(const mb_spec *spec, int n_points, double half, double *d2all,
                                      const char *label)
{
    sf_model *m = load(spec);
    if (!m) return -1;
    int N = spec->n_atoms, bad = 0;
    sf_workspace *ws;
    sf_workspace_new(m, 1, &ws, NULL);
    double *pos = malloc(sizeof(double) * 3 * N), *dir = malloc(sizeof(double) * 3 * N);
    double *p = malloc(sizeof(double) * 3 * N);
    mb_positions(spec, 9, pos);
    unsigned long long st = 12;
    double norm = 0;
    for (int i = 0; i < 3 * N; i++) {
        dir[i] = mb_normal(&st);
        norm += dir[i] * dir[i];
    }
    for (int i = 0; i < 3 * N; i++) dir[i] /= sqrt(norm);
    for (int k = 0; k < n_points; k++) {
        double s0 = -half + 2 * half * k / (n_points - 1), *d2 = d2all + 3 * k, h = 1e-3;
        for (int j = 0; j < 3; j++, h /= 2) {
            double e[3];
            for (int t = -1; t <= 1; t++) {
                for (int i = 0; i < 3 * N; i++) p[i] = pos[i] + (s0 + t * h) * dir[i];
                e[t + 1] = energy_of(m, ws, p, NULL);
            }
            d2[j] = (e[2] - 2 * e[1] + e[0]) / (h * h);
        }
        double ratio = (d2[0] - d2[1]) / (d2[1] - d2[2]);
        /* h^2 convergence gives a ratio of 4; allow for round-off. */
        if (!(fabs(ratio - 4) < 0.5)) {
            bad++;
            if (label) printf("%s: point %d ratio %.3f (d2 = %.6g %.6g %.6g)\n", label, k, ratio, d2[0], d2[1], d2[2]);
        }
    }
    free(pos);
    free(dir);
    free(p);
    sf_workspace_free(ws);
    sf_model_free(m);
    return bad;
}

/* Second differences of the energy along a line converge as h^2 (C2+). */
static void test_smoothness(void)
{
    mb_spec spec = mb_default_spec(31);
    spec.mixed_directions = 1;
    spec.K = 6;
    int n_points = quick ? 3 : 12;
    double d2[12 * 3];
    int bad = second_difference_failures(&spec, n_points, 0.01, d2, "smoothness");
    CHECK(bad >= 0 && bad <= 1, "second differences converge as h^2 at only %d of %d points", n_points - bad,
          n_points);
}

/* ------------------------------------------------------------ support */

/* Stretch the bond of Z-matrix row 1 by moving its atom along the bond. */
static void stretch_first_bond(const sf_model *m, double *pos, double factor)
{
    int row[4];
    sf_model_zmatrix_row(m, 1, row);
    /* Move the whole subtree is unnecessary: only the bond length matters. */
    for (int c = 0; c < 3; c++) {
        double d = pos[3 * row[0] + c] - pos[3 * row[1] + c];
        pos[3 * row[0] + c] = pos[3 * row[1] + c] + factor * d;
    }
}

/* Defined with the corrupt-bytes test below: the file's tensor table, read
 * with cJSON independently of the core. */
typedef struct tensor_range tensor_range;
static size_t header_length(const unsigned char *b);
static int tensor_table(const unsigned char *b, tensor_range *t, int max);

/* Bond bounds of a spec's model, read from its file bytes (F64 tensors). */
static void file_bond_bounds(const mb_spec *spec, double *lo, double *hi);

/* Set the bond of Z-matrix row r to `length` nm by moving the atoms of rows
 * r..N-1 together along that bond.  In a chain Z-matrix (row r references
 * rows r-1, r-2, r-3) this changes no other bond, angle or torsion: the
 * angle and torsions that contain the bond see one of their vectors scaled,
 * which leaves their directions alone. */
static void set_bond_of_row(const sf_model *m, double *pos, int r, double length)
{
    int N = sf_model_num_atoms(m), row[4];
    sf_model_zmatrix_row(m, r, row);
    double d[3], len = 0;
    for (int c = 0; c < 3; c++) {
        d[c] = pos[3 * row[0] + c] - pos[3 * row[1] + c];
        len += d[c] * d[c];
    }
    len = sqrt(len);
    for (int s = r; s < N; s++) {
        int a[4];
        sf_model_zmatrix_row(m, s, a);
        for (int c = 0; c < 3; c++) pos[3 * a[0] + c] += (length / len - 1) * d[c];
    }
}

/* The wall policy counts the interval coordinates inside its zone, u < 2m or
 * u > 1 - 2m (m = 0.02 in model_builder): two configurations whose bonds are
 * placed at chosen u (inside, in the zone, beyond the support, and 0.005 on
 * either side of the zone's edges), evaluated alone and as one batch, whose
 * counts add up.  mb_positions draws angles in 60..150 degrees (u in
 * [1/3, 5/6]), so only the bonds chosen here can count. */
static void check_wall_count(const mb_spec *spec, const sf_model *m)
{
    const int N = spec->n_atoms;
    const double margin = 0.02;
    const double pattern[2][6] = {{1.6, 0.5, 0.01, 0.955, 0.97, -0.4}, {0.045, 0.035, 0.5, 3.0, 0.5, 0.965}};
    double lo[64], hi[64], *pos = malloc(sizeof(double) * 6 * N), e[2];
    file_bond_bounds(spec, lo, hi);
    int expected[2] = {0, 0};
    for (int r = 1; r < N; r++) {
        int row[4], prev[4];
        sf_model_zmatrix_row(m, r, row);
        sf_model_zmatrix_row(m, r - 1, prev);
        CHECK(row[1] == prev[0], "model_builder's Z-matrix is no chain at row %d", r);
    }
    for (int k = 0; k < 2; k++) {
        double *p = pos + 3 * N * k;
        mb_positions(spec, 2 + k, p);
        for (int r = 1; r < N; r++) {
            double u = pattern[k][(r - 1) % 6];
            set_bond_of_row(m, p, r, lo[r - 1] + u * (hi[r - 1] - lo[r - 1]));
            expected[k] += u < 2 * margin || u > 1 - 2 * margin;
        }
    }
    sf_workspace *ws;
    sf_error err;
    sf_workspace_new(m, 2, &ws, NULL);
    for (int k = 0; k < 2; k++) {
        sf_eval_info info = {-1, -1};
        sf_status rc = sf_evaluate(m, ws, 1, pos + 3 * N * k, NULL, e + k, NULL, &info, &err);
        CHECK(rc == SF_OK && isfinite(e[k]) && info.wall_dims == expected[k],
              "wall count of configuration %d: rc %d e %g, %d coordinates in the zone, want %d", k, rc, e[k],
              info.wall_dims, expected[k]);
    }
    sf_eval_info info = {-1, -1};
    sf_status rc = sf_evaluate(m, ws, 2, pos, NULL, e, NULL, &info, &err);
    CHECK(rc == SF_OK && info.wall_dims == expected[0] + expected[1], "wall count of a batch: rc %d, %d, want %d", rc,
          info.wall_dims, expected[0] + expected[1]);
    sf_workspace_free(ws);
    free(pos);
}

static void test_support(void)
{
    mb_spec spec = mb_default_spec(41);
    sf_model *m = load(&spec);
    int N = spec.n_atoms;
    sf_workspace *ws;
    sf_workspace_new(m, 1, &ws, NULL);
    double *pos = malloc(sizeof(double) * 3 * N), e;
    mb_positions(&spec, 2, pos);
    stretch_first_bond(m, pos, 3.0);
    sf_error err;
    sf_status rc = sf_evaluate(m, ws, 1, pos, NULL, &e, NULL, NULL, &err);
    CHECK(rc == SF_ERR_SUPPORT, "a stretched bond must be outside the support (rc %d)", rc);
    CHECK(strstr(err.message, "bond 0") && strstr(err.message, "support"), "message: %s", err.message);
    {
        int row[4];
        sf_model_zmatrix_row(m, 1, row);
        CHECK(err.molecule == 0 && err.atoms[0] == row[0] && err.atoms[1] == row[1] && err.atoms[2] == -1,
              "error location: molecule %d atoms %d %d", err.molecule, err.atoms[0], err.atoms[1]);
    }
    sf_workspace_free(ws);
    sf_model_free(m);

    /* The wall policy: finite energy, exact forces, inside and across the zone. */
    spec.policy = "wall";
    m = load(&spec);
    sf_workspace_new(m, 1, &ws, NULL);
    CHECK(sf_model_support_policy(m) == SF_SUPPORT_WALL, "policy read");
    sf_eval_info info;
    rc = sf_evaluate(m, ws, 1, pos, NULL, &e, NULL, &info, &err);
    CHECK(rc == SF_OK && isfinite(e), "wall: rc %d e %g", rc, e);
    check_wall_count(&spec, m);
    check_forces(&spec, m, pos, NULL, "wall, far outside");
    double *p = malloc(sizeof(double) * 3 * N);
    double factors[] = {0.0, 0.5, 0.9, 0.97, 1.0, 1.02, 1.1};
    for (size_t i = 0; i < sizeof factors / sizeof factors[0]; i++) {
        mb_positions(&spec, 2, p);
        /* Put the first bond near and beyond its upper bound. */
        int row[4];
        sf_model_zmatrix_row(m, 1, row);
        double d[3], len = 0;
        for (int c = 0; c < 3; c++) {
            d[c] = p[3 * row[0] + c] - p[3 * row[1] + c];
            len += d[c] * d[c];
        }
        len = sqrt(len);
        double target = 0.09 + factors[i] * 0.2; /* spans the bounds of every seed */
        for (int c = 0; c < 3; c++) p[3 * row[0] + c] = p[3 * row[1] + c] + d[c] * target / len;
        char label[64];
        snprintf(label, sizeof label, "wall, bond %.3f nm", target);
        check_forces(&spec, m, p, NULL, label);
    }
    free(p);
    free(pos);
    sf_workspace_free(ws);
    sf_model_free(m);
}

/* ------------------------------------------------------------ bad input */

static sf_status load_bytes(const unsigned char *b, size_t n, sf_error *err)
{
    sf_model *m = NULL;
    sf_status rc = sf_model_load_bytes(b, n, &m, err);
    sf_model_free(m);
    return rc;
}

static void expect_error(const unsigned char *b, size_t n, sf_status code, const char *needle, const char *what)
{
    sf_error err = {SF_OK, "", -1, {-1, -1, -1, -1}};
    sf_status rc = load_bytes(b, n, &err);
    CHECK(rc == code, "%s: expected status %d, got %d (%s)", what, code, rc, err.message);
    CHECK(strstr(err.message, needle) != NULL, "%s: message '%s' lacks '%s'", what, err.message, needle);
}

static void test_bad_input(void)
{
    mb_spec spec = mb_default_spec(3);
    size_t size;
    unsigned char *good = mb_build(&spec, NULL, NULL, &size);
    sf_error err;
    CHECK(load_bytes(good, size, &err) == SF_OK, "good model: %s", err.message);

    sf_model *m = NULL;
    CHECK(sf_model_load_file("/nonexistent/model.safetensors", &m, &err) == SF_ERR_IO && !m, "missing file");
    CHECK(strstr(err.message, "/nonexistent/model.safetensors") != NULL, "missing file message: %s", err.message);

    /* Truncated at every length: a format error with a message, never a
     * crash (the header's length prefix or a tensor's data_offsets point
     * past the end). */
    size_t step = quick ? size / 7 + 1 : 1;
    for (size_t n = 0; n < size; n += step) {
        sf_error e2 = {SF_OK, "", -1, {-1, -1, -1, -1}};
        sf_status rc = load_bytes(good, n, &e2);
        CHECK(rc == SF_ERR_FORMAT && e2.message[0], "file truncated to %zu of %zu bytes: status %d (%s)", n, size, rc,
              e2.message);
    }
    expect_error(good, size / 2, SF_ERR_FORMAT, "truncated", "truncated file");

    unsigned char *bad = malloc(size);
    /* Not JSON at all. */
    memcpy(bad, good, size);
    memset(bad + 8, '#', 16);
    expect_error(bad, size, SF_ERR_FORMAT, "JSON", "garbage header");
    free(bad);

    size_t n2;
    unsigned char *b2 = mb_build(&spec, "{\"n_atoms\": 7", NULL, &n2);
    expect_error(b2, n2, SF_ERR_FORMAT, "config", "broken config JSON");
    free(b2);
    b2 = mb_build(&spec, "[1, 2]", NULL, &n2);
    expect_error(b2, n2, SF_ERR_FORMAT, "config", "config not an object");
    free(b2);
    b2 = mb_build(&spec, NULL, "2", &n2);
    expect_error(b2, n2, SF_ERR_VERSION, "version 2", "newer format version");
    free(b2);
    b2 = mb_build(&spec, NULL, "one", &n2);
    expect_error(b2, n2, SF_ERR_FORMAT, "format_version", "garbled format version");
    free(b2);

    /* Shapes that disagree with the architecture: the config of a wider net. */
    mb_spec wide = spec;
    wide.hidden[0] = 12;
    unsigned char *wide_bytes = mb_build(&wide, NULL, NULL, &n2);
    /* Its config, spliced onto the narrow weights. */
    sf_model *wm = NULL;
    sf_model_load_bytes(wide_bytes, n2, &wm, NULL);
    CHECK(wm != NULL, "wide model loads");
    if (wm) {
        size_t n3;
        unsigned char *mix = mb_build(&spec, sf_model_config_json(wm), NULL, &n3);
        expect_error(mix, n3, SF_ERR_MODEL, "shape", "shape mismatch");
        free(mix);
    }
    sf_model_free(wm);
    free(wide_bytes);

    /* A NaN among the weights: find the first weight's bytes and poison it. */
    unsigned char *nan_bytes = malloc(size);
    memcpy(nan_bytes, good, size);
    unsigned long long hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | nan_bytes[i];
    double nan_value = NAN;
    /* bond_lo and bond_hi come first (2 x 6 doubles); the weights follow. */
    memcpy(nan_bytes + 8 + hlen + 8 * 2 * (spec.n_atoms - 1) + 8 * 3, &nan_value, 8);
    expect_error(nan_bytes, size, SF_ERR_VALUE, "non-finite", "NaN weight");
    free(nan_bytes);

    /* F32 tensors are accepted. */
    mb_spec f32 = spec;
    f32.float32 = 1;
    b2 = mb_build(&f32, NULL, NULL, &n2);
    CHECK(load_bytes(b2, n2, &err) == SF_OK, "F32 model: %s", err.message);
    free(b2);

    /* NaN positions. */
    m = NULL;
    sf_model_load_bytes(good, size, &m, NULL);
    sf_workspace *ws;
    sf_workspace_new(m, 1, &ws, NULL);
    double pos[3 * 7], e;
    mb_positions(&spec, 1, pos);
    pos[4] = NAN;
    CHECK(sf_evaluate(m, ws, 1, pos, NULL, &e, NULL, NULL, &err) == SF_ERR_INPUT && strstr(err.message, "atom 1"),
          "NaN position: %s", err.message);
    /* Coinciding atoms. */
    mb_positions(&spec, 1, pos);
    int row[4];
    sf_model_zmatrix_row(m, 1, row);
    memcpy(pos + 3 * row[0], pos + 3 * row[1], 3 * sizeof(double));
    CHECK(sf_evaluate(m, ws, 1, pos, NULL, &e, NULL, NULL, &err) == SF_ERR_GEOMETRY, "coinciding atoms: %s",
          err.message);
    sf_workspace_free(ws);
    sf_model_free(m);
    free(good);
}

/* ------------------------------------------------- the container, strictly */

/* A model file with the header text `header` (NUL-terminated) and the data buffer of `b`,
 * followed by `tail` extra bytes of zeros. */
static unsigned char *with_header(const unsigned char *b, size_t size, const char *header, size_t tail,
                                  size_t *out_size)
{
    size_t hlen = header_length(b), n = strlen(header), data = size - 8 - hlen;
    *out_size = 8 + n + data + tail;
    unsigned char *out = calloc(*out_size, 1);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((unsigned long long)n >> (8 * i));
    memcpy(out + 8, header, n);
    memcpy(out + 8 + n, b + 8 + hlen, data);
    return out;
}

/* The header text of b without its space padding (malloc'd). */
static char *header_text(const unsigned char *b)
{
    size_t n = header_length(b);
    while (n > 0 && b[8 + n - 1] == ' ') n--;
    char *t = malloc(n + 1);
    memcpy(t, b + 8, n);
    t[n] = 0;
    return t;
}

static void expect_header(const unsigned char *b, size_t size, const char *header, size_t tail, sf_status code,
                          const char *needle, const char *what)
{
    size_t n;
    unsigned char *f = with_header(b, size, header, tail, &n);
    if (code == SF_OK) {
        sf_error err;
        CHECK(load_bytes(f, n, &err) == SF_OK, "%s: refused (%s)", what, err.message);
    } else {
        expect_error(f, n, code, needle, what);
    }
    free(f);
}

/* docs/model-format.md section 1 as the loader enforces it; run under valgrind by the test
 * core.valgrind, which also sees that a refused file leaks nothing (a repeated __metadata__
 * key once leaked the first copy's strings). */
static void test_strict_container(void)
{
    mb_spec spec = mb_default_spec(3);
    size_t size;
    unsigned char *good = mb_build(&spec, NULL, NULL, &size);
    char *text = header_text(good);
    size_t tlen = strlen(text);
    char *edit = malloc(2 * tlen + 256);

    /* Space padding is the one thing allowed after the object. */
    snprintf(edit, 2 * tlen + 256, "%s        ", text);
    expect_header(good, size, edit, 0, SF_OK, "", "space padding");
    const char *tails[] = {"\n", "\t", " x", "{}"};
    for (int i = 0; i < 4; i++) {
        snprintf(edit, 2 * tlen + 256, "%s%s", text, tails[i]);
        expect_header(good, size, edit, 0, SF_ERR_FORMAT, "after its JSON object", "text after the header");
    }
    snprintf(edit, 2 * tlen + 256, " %s", text);
    expect_header(good, size, edit, 0, SF_ERR_FORMAT, "first byte", "leading space");

    /* A repeated __metadata__ key (and a repeated key anywhere) is an error. */
    cJSON *root = cJSON_Parse(text);
    char *meta = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(root, "__metadata__"));
    snprintf(edit, 2 * tlen + 256, "%.*s,\"__metadata__\":%s}", (int)(tlen - 1), text, meta);
    for (int i = 0; i < 20; i++) /* a leak per load would add up under valgrind */
        expect_header(good, size, edit, 0, SF_ERR_FORMAT, "'__metadata__' twice", "repeated __metadata__");
    const cJSON *tensor = root->child;
    while (tensor && strcmp(tensor->string, "__metadata__") == 0) tensor = tensor->next;
    const char *first = tensor ? tensor->string : "";
    char key[96];
    snprintf(key, sizeof key, "\"%s\":{", first);
    char *at = strstr(text, key);
    CHECK(at != NULL, "no tensor '%s' in the header", first);
    if (at) {
        size_t pos = (size_t)(at - text) + strlen(key);
        snprintf(edit, 2 * tlen + 256, "%.*s\"dtype\":\"F32\",%s", (int)pos, text, text + pos);
        expect_header(good, size, edit, 0, SF_ERR_FORMAT, "'dtype' twice", "repeated dtype");
        snprintf(edit, 2 * tlen + 256, "%.*s\"align\":8,%s", (int)pos, text, text + pos);
        expect_header(good, size, edit, 0, SF_ERR_FORMAT, "exactly dtype, shape and data_offsets", "extra key");
    }
    free(meta);
    cJSON_Delete(root);

    /* Offsets: plain non-negative integers only; the tensors tile the buffer. */
    char *zero = strstr(text, "\"data_offsets\":[0,");
    CHECK(zero != NULL, "no tensor at offset 0");
    const char *literals[] = {"0.0", "0e0", "-0", "00", "null", "true"};
    for (int i = 0; zero && i < 6; i++) {
        size_t pos = (size_t)(zero - text) + strlen("\"data_offsets\":[");
        snprintf(edit, 2 * tlen + 256, "%.*s%s%s", (int)pos, text, literals[i], text + pos + 1);
        expect_header(good, size, edit, 0, SF_ERR_FORMAT, "header", literals[i]);
    }
    expect_header(good, size, text, 8, SF_ERR_FORMAT, "8 bytes after the last tensor", "trailing bytes");

    /* Invalid UTF-8 in a string. */
    snprintf(edit, 2 * tlen + 256, "%s", text);
    char *name = strstr(edit, "\"bond_lo\"");
    CHECK(name != NULL, "no bond_lo");
    if (name) {
        name[3] = (char)0xff;
        expect_header(good, size, edit, 0, SF_ERR_FORMAT, "UTF-8", "invalid UTF-8");
    }

    /* Only regular files are read. */
    sf_model *m = NULL;
    sf_error err;
    sf_status rc = sf_model_load_file(SMOOTHFLOW_TEST_DATA_DIR, &m, &err);
    CHECK(rc == SF_ERR_IO && !m && strstr(err.message, "not a regular file"), "a directory: %d %s", rc, err.message);
    FILE *probe = fopen("/dev/zero", "rb");
    if (probe) {
        fclose(probe);
        rc = sf_model_load_file("/dev/zero", &m, &err);
        CHECK(rc == SF_ERR_IO && !m && strstr(err.message, "not a regular file"), "/dev/zero: %d %s", rc, err.message);
    }
    free(edit);
    free(text);
    free(good);
}

/* ------------------------------------------------------- corrupt bytes */

static char *copy_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* A tensor of a model file: its name and byte range within the data block. */
typedef struct tensor_range {
    char name[64];
    size_t begin, end;
} tensor_range;

static size_t header_length(const unsigned char *b)
{
    unsigned long long n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
    return (size_t)n;
}

/* The tensor table of a well-formed file (as the test reads the format,
 * independently of the core); returns the number of tensors. */
static int tensor_table(const unsigned char *b, tensor_range *t, int max)
{
    cJSON *root = cJSON_ParseWithLength((const char *)b + 8, header_length(b));
    int n = 0;
    for (const cJSON *item = root ? root->child : NULL; item && n < max; item = item->next) {
        if (strcmp(item->string, "__metadata__") == 0) continue;
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
        snprintf(t[n].name, sizeof t[n].name, "%s", item->string);
        t[n].begin = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
        t[n].end = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        n++;
    }
    cJSON_Delete(root);
    return n;
}

static void file_bond_bounds(const mb_spec *spec, double *lo, double *hi)
{
    size_t size;
    unsigned char *b = mb_build(spec, NULL, NULL, &size);
    tensor_range t[64];
    int n = tensor_table(b, t, 64);
    const unsigned char *data = b + 8 + header_length(b);
    for (int j = 0; j < n; j++) {
        double *out = strcmp(t[j].name, "bond_lo") == 0 ? lo : strcmp(t[j].name, "bond_hi") == 0 ? hi : NULL;
        if (out) memcpy(out, data + t[j].begin, t[j].end - t[j].begin);
    }
    free(b);
}

/* The same model with its tensors' bytes stored in the reverse order and
 * data_offsets rewritten to match: a reader that finds a tensor's bytes by
 * anything but its data_offsets loads other weights from one of the two. */
static unsigned char *reversed_layout(const unsigned char *b, size_t size, size_t *out_size)
{
    size_t hlen = header_length(b);
    const unsigned char *data = b + 8 + hlen;
    cJSON *root = cJSON_ParseWithLength((const char *)b + 8, hlen);
    unsigned char *block = malloc(size), *out = NULL;
    size_t at = 0;
    cJSON *items[256];
    int n = 0;
    for (cJSON *item = root->child; item && n < 256; item = item->next)
        if (strcmp(item->string, "__metadata__") != 0) items[n++] = item;
    for (int i = n - 1; i >= 0; i--) {
        cJSON *off = cJSON_GetObjectItemCaseSensitive(items[i], "data_offsets");
        size_t begin = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble, end = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
        memcpy(block + at, data + begin, end - begin);
        cJSON_SetNumberValue(cJSON_GetArrayItem(off, 0), (double)at);
        cJSON_SetNumberValue(cJSON_GetArrayItem(off, 1), (double)(at + end - begin));
        at += end - begin;
    }
    char *text = cJSON_PrintUnformatted(root);
    size_t tlen = strlen(text);
    *out_size = 8 + tlen + at;
    out = malloc(*out_size);
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((unsigned long long)tlen >> (8 * i));
    memcpy(out + 8, text, tlen);
    memcpy(out + 8 + tlen, block, at);
    free(text);
    free(block);
    cJSON_Delete(root);
    return out;
}

/* Energy and forces of one configuration under the model in bytes b: the
 * load status (and message), then the evaluation status. */
static sf_status load_and_evaluate(const unsigned char *b, size_t n, const double *pos, double *e, double *f,
                                   sf_model **out, sf_error *err)
{
    sf_model *m = NULL;
    sf_status rc = sf_model_load_bytes(b, n, &m, err);
    if (rc == SF_OK) {
        sf_workspace *ws = NULL;
        rc = sf_workspace_new(m, 1, &ws, err);
        if (rc == SF_OK) rc = sf_evaluate(m, ws, 1, pos, NULL, e, f, NULL, err);
        if (rc != SF_OK) rc = -rc; /* negative: loaded, but the evaluation failed */
        sf_workspace_free(ws);
    }
    if (out) *out = m;
    else sf_model_free(m);
    return rc;
}

static int same_doubles(const double *a, const double *b, size_t n)
{
    return memcmp(a, b, n * sizeof(double)) == 0;
}

/* The config a corrupted header carries, or NULL where the header or the
 * config is not JSON any more (then the file must be refused as a format
 * error).  *header_ok says whether the header itself still parses. */
static cJSON *config_of(const unsigned char *b, int *header_ok, char **text)
{
    cJSON *root = cJSON_ParseWithLength((const char *)b + 8, header_length(b));
    *header_ok = root != NULL && cJSON_IsObject(root);
    cJSON *meta = *header_ok ? cJSON_GetObjectItemCaseSensitive(root, "__metadata__") : NULL;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(meta, "config");
    cJSON *cfg = cJSON_IsString(c) ? cJSON_Parse(c->valuestring) : NULL;
    if (text) *text = cJSON_IsString(c) ? copy_string(c->valuestring) : NULL;
    cJSON_Delete(root);
    if (cfg && !cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        cfg = NULL;
    }
    return cfg;
}

/* One byte of a valid model file flipped, at every kind of place, with the
 * outcome each place decides:
 *   - the header's length prefix: a format error;
 *   - the header outside the config: refused, or (if the header still says
 *     the same) the very model of the intact file, bit for bit;
 *   - the config: a format error where it is no longer a JSON object;
 *     otherwise refused, or loaded with the facts the corrupted config states
 *     (and, where only temperature or energy_offset changed, the energy
 *     U0' + kT'/kT (E - U0));
 *   - a tensor's bytes: a value error where the new value is not finite, a
 *     model error where bond bounds break 0 <= lo < hi, and otherwise the
 *     model with exactly that element changed: the same energy and forces, bit
 *     for bit, as the reversed-layout file with the same element changed. */
static void test_corrupt_bytes(void)
{
    mb_spec spec = mb_default_spec(3);
    size_t size, rsize;
    unsigned char *good = mb_build(&spec, NULL, NULL, &size);
    unsigned char *rev = reversed_layout(good, size, &rsize);
    size_t hlen = header_length(good), rhlen = header_length(rev);
    tensor_range t[64], rt[64];
    int nt = tensor_table(good, t, 64), nrt = tensor_table(rev, rt, 64);
    CHECK(nt == nrt && nt > 2 && rt[0].begin != t[0].begin, "reversed layout: %d and %d tensors", nt, nrt);
    const int N = spec.n_atoms;
    double pos[3 * 7], e0, f0[3 * 7], e1, f1[3 * 7], e2, f2[3 * 7];
    mb_positions(&spec, 1, pos);
    sf_model *m0 = NULL;
    sf_error err;
    CHECK(load_and_evaluate(good, size, pos, &e0, f0, &m0, &err) == SF_OK, "intact model: %s", err.message);
    CHECK(load_and_evaluate(rev, rsize, pos, &e1, f1, NULL, &err) == SF_OK && e1 == e0 && same_doubles(f0, f1, 3 * N),
          "the reversed layout is the same model: %.17g vs %.17g (%s)", e1, e0, err.message);
    const double kT0 = sf_model_kT(m0), U0 = sf_model_energy_offset(m0);
    sf_model_free(m0);
    /* The config's escaped text inside the header. */
    const char *key = "\"config\":\"", *h = (const char *)good + 8;
    const char *at = NULL;
    for (size_t i = 0; i + strlen(key) <= hlen && !at; i++)
        if (memcmp(h + i, key, strlen(key)) == 0) at = h + i;
    CHECK(at != NULL, "no config in the header");
    if (!at) return;
    size_t cfg_begin = 8 + (size_t)(at - h) + strlen(key), cfg_end = cfg_begin;
    while (good[cfg_end] != '"') cfg_end += good[cfg_end] == '\\' ? 2 : 1;

    /* Random flips in each region in turn, then chosen ones that random
     * flips rarely reach: every digit of the temperature and energy offset
     * (loads with a predicted energy, or refused where the number is no longer
     * valid) and the sign and exponent of bond bounds. */
    enum { N_RANDOM = 2000, N_CHOSEN = 64 };
    size_t where[N_RANDOM + N_CHOSEN];
    unsigned char flips[N_RANDOM + N_CHOSEN];
    int n_trials = 0;
    unsigned long long st = 5;
    for (int trial = 0; trial < (quick ? 40 : N_RANDOM); trial++) {
        int region = trial % 4;
        size_t p;
        if (region == 0) p = (size_t)(mb_uniform(&st) * 8);
        else if (region == 2) p = cfg_begin + (size_t)(mb_uniform(&st) * (cfg_end - cfg_begin));
        else if (region == 3) p = 8 + hlen + (size_t)(mb_uniform(&st) * (size - 8 - hlen));
        else {
            p = 8 + (size_t)(mb_uniform(&st) * (hlen - (cfg_end - cfg_begin)));
            if (p >= cfg_begin) p += cfg_end - cfg_begin;
        }
        where[n_trials] = p;
        flips[n_trials++] = (unsigned char)(1 + mb_uniform(&st) * 255);
    }
    const char *numbers[2] = {"\\\"temperature\\\":", "\\\"energy_offset\\\":"};
    for (int k = 0; k < 2; k++) {
        const char *v = strstr((const char *)good + cfg_begin, numbers[k]);
        CHECK(v != NULL && v < (const char *)good + cfg_end, "config lacks %s", numbers[k]);
        for (v += v ? strlen(numbers[k]) : 0; v && (isdigit((unsigned char)*v) || *v == '.'); v++) {
            for (int d = 0; d < 10 && n_trials < N_RANDOM + N_CHOSEN; d += 3) {
                if (*v == '0' + d) continue;
                where[n_trials] = (size_t)(v - (const char *)good);
                flips[n_trials++] = (unsigned char)(*v ^ ('0' + d));
            }
        }
    }
    for (int j = 0; j < nt; j++) {
        if (strcmp(t[j].name, "bond_lo") != 0 && strcmp(t[j].name, "bond_hi") != 0) continue;
        const unsigned char chosen[3][2] = {{7, 0x80}, {7, 0x40}, {5, 0x01}}; /* sign, exponent, mantissa */
        for (int c = 0; c < 3 && n_trials < N_RANDOM + N_CHOSEN; c++) {
            where[n_trials] = 8 + hlen + t[j].begin + 8 * 2 + chosen[c][0];
            flips[n_trials++] = chosen[c][1];
        }
    }

    unsigned char *bad = malloc(size), *rbad = malloc(rsize);
    int counts[4] = {0}, loaded[4] = {0}, predicted = 0, significant = 0, changed = 0;
    const char *region_name[4] = {"length prefix", "header", "config", "tensor data"};
    for (int trial = 0; trial < n_trials; trial++) {
        size_t p = where[trial];
        int region = p < 8 ? 0 : p >= 8 + hlen ? 3 : p >= cfg_begin && p < cfg_end ? 2 : 1;
        unsigned char flip = flips[trial];
        memcpy(bad, good, size);
        bad[p] ^= flip;
        counts[region]++;
        sf_model *m = NULL;
        sf_error e = {SF_OK, "", -1, {-1, -1, -1, -1}};
        sf_status rc = load_and_evaluate(bad, size, pos, &e1, f1, &m, &e);
        loaded[region] += m != NULL;
        const char *what = region_name[region];
        if (region == 0) {
            CHECK(rc == SF_ERR_FORMAT && e.message[0], "%s byte %zu ^ %d: status %d (%s)", what, p, flip, rc,
                  e.message);
        } else if (region == 1 || region == 2) {
            int header_ok;
            char *text = NULL;
            cJSON *cfg = config_of(bad, &header_ok, &text);
            if (!cfg) {
                CHECK(rc == SF_ERR_FORMAT && e.message[0], "%s byte %zu ^ %d: %s, yet status %d (%s)", what, p, flip,
                      header_ok ? "config not a JSON object" : "header not JSON", rc, e.message);
            } else if (!m) {
                CHECK(rc > SF_OK && e.message[0], "%s byte %zu ^ %d: refused with status %d and message '%s'", what,
                      p, flip, rc, e.message);
            } else if (region == 1) {
                /* Outside the config the header can only say the same again. */
                CHECK(rc == SF_OK && e1 == e0 && same_doubles(f0, f1, 3 * N) &&
                          strcmp(sf_model_config_json(m), text) == 0,
                      "%s byte %zu ^ %d loads a different model: energy %.17g vs %.17g", what, p, flip, e1, e0);
            } else {
                const cJSON *T = cJSON_GetObjectItemCaseSensitive(cfg, "temperature");
                const cJSON *O = cJSON_GetObjectItemCaseSensitive(cfg, "energy_offset");
                const cJSON *A = cJSON_GetObjectItemCaseSensitive(cfg, "n_atoms");
                const cJSON *Z = cJSON_GetObjectItemCaseSensitive(cfg, "zmatrix");
                const cJSON *P = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(cfg, "support"),
                                                                  "policy");
                /* energy_offset and support may be omitted: 0 and "error"
                 * (docs/model-format.md). */
                int facts = cJSON_IsNumber(T) && (!O || cJSON_IsNumber(O)) && cJSON_IsNumber(A) &&
                            (!P || cJSON_IsString(P)) && strcmp(sf_model_config_json(m), text) == 0 &&
                            sf_model_num_atoms(m) == A->valueint && sf_model_temperature(m) == T->valuedouble &&
                            sf_model_energy_offset(m) == (O ? O->valuedouble : 0.0) &&
                            (int)sf_model_support_policy(m) == (P && strcmp(P->valuestring, "wall") == 0);
                for (int r = 0; facts && r < sf_model_num_atoms(m); r++) {
                    int row[4];
                    sf_model_zmatrix_row(m, r, row);
                    for (int c = 0; c < 4; c++)
                        facts &= row[c] == cJSON_GetArrayItem(cJSON_GetArrayItem(Z, r), c)->valueint;
                }
                CHECK(facts, "config byte %zu ^ %d: the loaded model does not state what its config says: %s", p, flip, text);
                /* The energy where only the temperature and offset moved. */
                cJSON *a = cJSON_Duplicate(cfg, 1), *b = config_of(good, &header_ok, NULL);
                const char *scalars[2] = {"temperature", "energy_offset"};
                for (int k = 0; k < 2; k++) {
                    cJSON_DeleteItemFromObjectCaseSensitive(a, scalars[k]);
                    cJSON_DeleteItemFromObjectCaseSensitive(b, scalars[k]);
                }
                if (facts && cJSON_Compare(a, b, 1)) {
                    double kT = sf_model_kT(m), U = sf_model_energy_offset(m), want = U + kT / kT0 * (e0 - U0);
                    predicted++;
                    CHECK(rc == SF_OK && fabs(e1 - want) <= 1e-12 * fmax(1.0, fabs(want)),
                          "config byte %zu ^ %d (T = %g K, U0 = %g): energy %.17g, want %.17g", p, flip, sf_model_temperature(m),
                          U, e1, want);
                }
                cJSON_Delete(a);
                cJSON_Delete(b);
            }
            cJSON_Delete(cfg);
            free(text);
        } else {
            int k = 0;
            size_t off = p - 8 - hlen;
            while (k < nt && !(off >= t[k].begin && off < t[k].end)) k++;
            CHECK(k < nt, "data byte %zu belongs to no tensor", p);
            if (k == nt) continue;
            size_t element = (off - t[k].begin) / 8;
            double before, after;
            memcpy(&before, good + 8 + hlen + t[k].begin + 8 * element, 8);
            memcpy(&after, bad + 8 + hlen + t[k].begin + 8 * element, 8);
            int bound = strcmp(t[k].name, "bond_lo") == 0 || strcmp(t[k].name, "bond_hi") == 0;
            double lo, hi;
            if (bound) {
                /* The pair of bounds of this bond after the flip. */
                const tensor_range *L = &t[0], *H = &t[0];
                for (int j = 0; j < nt; j++) {
                    if (strcmp(t[j].name, "bond_lo") == 0) L = &t[j];
                    if (strcmp(t[j].name, "bond_hi") == 0) H = &t[j];
                }
                memcpy(&lo, bad + 8 + hlen + L->begin + 8 * element, 8);
                memcpy(&hi, bad + 8 + hlen + H->begin + 8 * element, 8);
            }
            if (!isfinite(after)) {
                CHECK(rc == SF_ERR_VALUE && strstr(e.message, t[k].name) && strstr(e.message, "non-finite"),
                      "%s element %zu = %g: status %d (%s)", t[k].name, element, after, rc, e.message);
            } else if (bound && !(lo >= 0 && lo < hi)) {
                CHECK(rc == SF_ERR_MODEL && strstr(e.message, "bond"), "bond %zu bounds [%g, %g]: status %d (%s)",
                      element, lo, hi, rc, e.message);
            } else if (bound && !(hi <= 1000 && hi - lo >= 1e-6)) {
                /* The format's limits: bond_hi <= 1000 nm, a bond's range at least 1e-6 nm. */
                CHECK(rc == SF_ERR_MODEL && strstr(e.message, "bond") && strstr(e.message, "1000"),
                      "bond %zu bounds [%g, %g] beyond the limits: status %d (%s)", element, lo, hi, rc, e.message);
            } else if (!bound && fabs(after) > 1e8) {
                /* One weight or bias beyond 1e8 alone breaks its map's bound (docs/model-format.md,
                 * "Limits"): refused, naming the map. */
                char map[64];
                snprintf(map, sizeof map, "%s", t[k].name);
                *strrchr(map, '.') = 0;
                CHECK(rc == SF_ERR_VALUE && !m && strstr(e.message, map) && strstr(e.message, "overflow"),
                      "%s element %zu = %g: status %d (%s)", t[k].name, element, after, rc, e.message);
            } else {
                /* The same element changed in the other layout. */
                size_t q = 0;
                for (int j = 0; j < nrt; j++)
                    if (strcmp(rt[j].name, t[k].name) == 0) q = 8 + rhlen + rt[j].begin + (off - t[k].begin);
                memcpy(rbad, rev, rsize);
                rbad[q] ^= flip;
                sf_status rc2 = load_and_evaluate(rbad, rsize, pos, &e2, f2, NULL, &err);
                /* Loaded, or (a large weight under a large activation bound) refused for its bound in
                 * both layouts alike. */
                int refused = !m && rc == SF_ERR_VALUE && strstr(e.message, "overflow") && fabs(after) > 10;
                CHECK((m != NULL || refused) && rc2 == rc && (rc != SF_OK || (e1 == e2 && same_doubles(f1, f2, 3 * N))),
                      "%s element %zu %.17g -> %.17g: status %d, energy %.17g; in the reversed layout %d, %.17g",
                      t[k].name, element, before, after, rc, e1, rc2, e2);
                if (fabs(after - before) > 1e-3 * fmax(1.0, fabs(before))) {
                    significant++;
                    changed += rc != SF_OK || e1 != e0;
                }
            }
        }
        sf_model_free(m);
    }
    /* Almost every weight matters (the exceptions: rows of t~ for interval
     * dimensions); a loader that read the weights from elsewhere would leave
     * the energy as it was. */
    CHECK(changed >= significant * 3 / 4, "a large change of a tensor element changed the energy in only %d of %d cases",
          changed, significant);
    printf("corrupt bytes: loaded %d/%d (prefix), %d/%d (header), %d/%d (config; %d energies predicted), %d/%d (data; "
           "%d of %d large changes moved the energy)\n",
           loaded[0], counts[0], loaded[1], counts[1], loaded[2], counts[2], predicted, loaded[3], counts[3], changed,
           significant);
    free(bad);
    free(rbad);
    free(good);
    free(rev);
}

static void test_model_facts(void)
{
    mb_spec spec = mb_default_spec(8);
    sf_model *m = load(&spec);
    CHECK(sf_model_num_atoms(m) == 7 && sf_model_num_dims(m) == 15, "N, D");
    CHECK(fabs(sf_model_kT(m) - 0.00831446261815324 * 300) < 1e-15, "kT");
    CHECK(sf_model_energy_offset(m) == 1.5 && sf_model_format_version(m) == 1, "offset, version");
    CHECK(sf_model_atom_name(m, 0) == NULL, "no atoms metadata");
    CHECK(strcmp(sf_status_string(SF_ERR_SUPPORT), "configuration outside the flow's support") == 0, "status text");
    sf_model_free(m);
}

/* ------------------------------------------------------- PyTorch oracle */

#ifndef SMOOTHFLOW_TEST_DATA_DIR
#error "SMOOTHFLOW_TEST_DATA_DIR must name tests/data (the PyTorch fixtures); core/CMakeLists.txt defines it"
#endif

/* <name>.reference.txt of tests/data (make_fixtures.py): '#' comment lines,
 * then "N B", then per configuration the energy and N lines "x y z fx fy fz".
 * Returns B, or -1 when the file is missing or malformed; *values (malloc'd)
 * receives per configuration 1 + 6N numbers. */
static int read_reference(const char *name, int *n_atoms, double **values)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.reference.txt", SMOOTHFLOW_TEST_DATA_DIR, name);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open the PyTorch fixture %s", path);
    if (!f) return -1;
    char line[4096];
    int N = -1, B = -1;
    size_t count = 0, capacity = 0;
    double *v = NULL;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        if (N < 0) {
            if (sscanf(line, "%d %d", &N, &B) != 2) break;
            capacity = (size_t)B * (1 + 6 * (size_t)N);
            v = malloc(sizeof(double) * (capacity ? capacity : 1));
            continue;
        }
        char *p = line, *end;
        for (double x = strtod(p, &end); end != p && count < capacity; x = strtod(p, &end)) {
            v[count++] = x;
            p = end;
        }
    }
    fclose(f);
    CHECK(N > 0 && B > 0 && count == capacity, "%s: malformed fixture (%zu of %zu numbers)", path, count, capacity);
    if (!(N > 0 && B > 0 && count == capacity)) {
        free(v);
        return -1;
    }
    *n_atoms = N;
    *values = v;
    return B;
}

/* The C core against PyTorch's energies and forces for the fixture models
 * (tests/data, written by smoothflow_torch): an outside oracle, so that a
 * mistake made consistently in the energy and its gradient -- which the
 * finite-difference checks above cannot see -- fails here.  One molecule at a
 * time and all configurations as one batch. */
static void check_fixture(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.safetensors", SMOOTHFLOW_TEST_DATA_DIR, name);
    sf_model *m = NULL;
    sf_error err;
    CHECK(sf_model_load_file(path, &m, &err) == SF_OK, "%s: %s", path, err.message);
    int N = 0;
    double *ref = NULL;
    int B = m ? read_reference(name, &N, &ref) : -1;
    if (B < 0) {
        sf_model_free(m);
        return;
    }
    CHECK(sf_model_num_atoms(m) == N, "%s: model has %d atoms, fixture %d", name, sf_model_num_atoms(m), N);
    const size_t stride = 1 + 6 * (size_t)N;
    sf_workspace *ws = NULL;
    sf_workspace_new(m, B, &ws, NULL);
    double *pos = malloc(sizeof(double) * 3 * N * B), *f = malloc(sizeof(double) * 3 * N * B);
    double *e = malloc(sizeof(double) * B);
    for (int b = 0; b < B; b++)
        for (int a = 0; a < N; a++)
            for (int c = 0; c < 3; c++) pos[3 * (N * b + a) + c] = ref[b * stride + 1 + 6 * a + c];
    double worst_e = 0, worst_f = 0;
    for (int batch = 1; batch >= 0; batch--) {
        /* batch = 1: every configuration in one call; 0: one call each. */
        sf_status rc = SF_OK;
        if (batch) rc = sf_evaluate(m, ws, B, pos, NULL, e, f, NULL, &err);
        for (int b = 0; !batch && rc == SF_OK && b < B; b++)
            rc = sf_evaluate(m, ws, 1, pos + 3 * N * b, NULL, e + b, f + 3 * N * b, NULL, &err);
        CHECK(rc == SF_OK, "%s: evaluate: %s", name, err.message);
        if (rc != SF_OK) continue;
        for (int b = 0; b < B; b++) {
            const double *r = ref + b * stride;
            /* Double precision on both sides: ~1e-14 (energy) and ~4e-13 (forces)
             * were measured; the tolerances leave room for other compilers. */
            worst_e = fmax(worst_e, fabs(e[b] - r[0]) / fmax(1.0, fabs(r[0])));
            CHECK(fabs(e[b] - r[0]) <= 1e-12 * fmax(1.0, fabs(r[0])), "%s configuration %d%s: energy %.17g, PyTorch %.17g",
                  name, b, batch ? " (batch)" : "", e[b], r[0]);
            double fmax_ref = 0, worst = 0;
            for (int a = 0; a < N; a++)
                for (int c = 0; c < 3; c++) {
                    fmax_ref = fmax(fmax_ref, fabs(r[1 + 6 * a + 3 + c]));
                    worst = fmax(worst, fabs(f[3 * (N * b + a) + c] - r[1 + 6 * a + 3 + c]));
                }
            worst_f = fmax(worst_f, worst / fmax(1.0, fmax_ref));
            CHECK(worst <= 1e-10 * fmax(1.0, fmax_ref), "%s configuration %d%s: forces differ from PyTorch's by %.3g (max |F| %.3g)",
                  name, b, batch ? " (batch)" : "", worst, fmax_ref);
        }
    }
    printf("%s fixture: %d configurations, worst relative difference from PyTorch: energy %.3g, forces %.3g\n",
           name, B, worst_e, worst_f);
    free(pos);
    free(f);
    free(e);
    free(ref);
    sf_workspace_free(ws);
    sf_model_free(m);
}

static void test_pytorch_fixtures(void)
{
    check_fixture("tiny"); /* error policy, inside the support */
    check_fixture("wall"); /* wall policy: inside, in the wall zone and beyond the support */
}

/* ------------------------------------------------- baseline transforms */

static const sf_spline_constants spline_constants = {1e-3, 2e-3, 1e-3};

/* The knots of a spline's raw widths, as docs/model-format.md 7.1 defines them. */
static void spline_knots(const double *raw, int K, double min, double *knot)
{
    double mx = raw[0], sum = 0, soft[64];
    for (int k = 1; k < K; k++) mx = fmax(mx, raw[k]);
    for (int k = 0; k < K; k++) sum += (soft[k] = exp(raw[k] - mx));
    knot[0] = 0;
    for (int k = 0; k < K; k++) knot[k + 1] = knot[k] + min + (1 - K * min) * soft[k] / sum;
    knot[K] = 1;
}

/* a - b on the circle (mod 1, in [-1/2, 1/2]) or on the line. */
static double difference(double a, double b, int circ)
{
    double d = a - b;
    return circ ? d - floor(d + 0.5) : d;
}

static void test_spline_transform(void)
{
    const sf_spline_constants *c = &spline_constants;
    unsigned long long st = 21;
    double ys[] = {0.0, 1e-300, 1e-12, 0.01, 0.25, 0.5, 0.75, 0.99, 1 - 1e-12, 1.0};
    int n_trials = quick ? 8 : 120, knots = 0, jumps = 0;
    double worst_inv = 0, worst_c1 = 0;
    for (int trial = 0; trial < n_trials; trial++) {
        int K = 1 + trial % 8;
        double raw[3 * 8 + 2], knot[9];
        for (int i = 0; i < 3 * K + 2; i++) raw[i] = (0.5 + 2.0 * (trial % 4) / 3.0) * mb_normal(&st);
        spline_knots(raw, K, c->min_bin_width, knot);
        for (int circ = 0; circ < 2; circ++) {
            double y0, y1, s0, s1;
            sf_spline_forward(c, K, raw, circ, 0.0, &y0, &s0, NULL);
            sf_spline_forward(c, K, raw, circ, 1.0, &y1, &s1, NULL);
            if (circ) {
                CHECK(fabs(difference(y1, y0, 1)) < 1e-14, "circle spline: T(1) - T(0) = %.3g", y1 - y0);
                CHECK(fabs(s1 - s0) <= 1e-12 * s0, "circle spline: S'(0) = %.17g, S'(1) = %.17g", s0, s1);
            } else {
                CHECK(y0 == 0 && fabs(y1 - 1) <= 1e-15, "spline: S(0) = %.3g, S(1) - 1 = %.3g", y0, y1 - 1);
            }
            /* S' and S'' against finite differences, away from the knots. */
            for (int j = 0; j < 6; j++) {
                double x = 0.01 + 0.98 * mb_uniform(&st), h = 1e-7, y, dy, d2y, yp, dyp, ym, dym;
                int near = 0;
                for (int k = 0; k <= K; k++) near |= fabs(x - knot[k]) < 1e-5;
                if (near) continue;
                sf_spline_forward(c, K, raw, circ, x, &y, &dy, &d2y);
                sf_spline_forward(c, K, raw, circ, x + h, &yp, &dyp, NULL);
                sf_spline_forward(c, K, raw, circ, x - h, &ym, &dym, NULL);
                double fd1 = difference(yp, ym, circ) / (2 * h), fd2 = (dyp - dym) / (2 * h);
                CHECK(dy > 0 && fabs(fd1 - dy) <= 1e-6 * (1 + dy), "spline S' %.10g vs %.10g (K=%d)", dy, fd1, K);
                CHECK(fabs(fd2 - d2y) <= 1e-5 * (1 + fabs(d2y)), "spline S'' %.10g vs %.10g (K=%d)", d2y, fd2, K);
            }
            /* The analytic inverse, both ways round. */
            for (size_t i = 0; i < sizeof ys / sizeof ys[0] + 10; i++) {
                double y = i < sizeof ys / sizeof ys[0] ? ys[i] : mb_uniform(&st), x, back, dy, xx, x2;
                sf_spline_inverse(c, K, raw, circ, y, &x);
                sf_spline_forward(c, K, raw, circ, x, &back, &dy, NULL);
                double diff = fabs(difference(back, y, circ));
                CHECK(x >= 0 && x <= 1 && diff <= fmax(2e-14, 8 * dy * (nextafter(x, 2.0) - x)),
                      "spline S(S^-1(y)) - y = %.3g (K=%d circ=%d y=%.17g)", diff, K, circ, y);
                worst_inv = fmax(worst_inv, diff);
                xx = mb_uniform(&st);
                sf_spline_forward(c, K, raw, circ, xx, &back, &dy, NULL);
                sf_spline_inverse(c, K, raw, circ, back, &x2);
                /* On the circle, y = (S + t) mod 1 rounds at the scale of |t|. */
                double ulp_y = 4.5e-16 * (1 + (circ ? fabs(raw[3 * K + 1]) : 0));
                CHECK(fabs(difference(x2, xx, circ)) <= 1e-15 + 8 * ulp_y / dy,
                      "spline S^-1(S(x)) - x = %.3g (x=%.17g K=%d circ=%d)", x2 - xx, xx, K, circ);
            }
            /* C1 but not C2: at an interior knot S' is continuous, S'' jumps. */
            for (int k = 1; k < K; k++) {
                double eps = 1e-9, ya, da, d2a, yb, db, d2b;
                sf_spline_forward(c, K, raw, circ, knot[k] - eps, &ya, &da, &d2a);
                sf_spline_forward(c, K, raw, circ, knot[k] + eps, &yb, &db, &d2b);
                double scale = 1 + fabs(d2a) + fabs(d2b);
                worst_c1 = fmax(worst_c1, fabs(db - da) / (1 + da) / (eps * scale));
                CHECK(fabs(db - da) <= 4 * eps * scale * (1 + da), "spline S' jumps at knot %d: %.17g vs %.17g", k,
                      da, db);
                knots++;
                jumps += fabs(d2b - d2a) > 1e-3 * scale;
            }
        }
    }
    CHECK(jumps > knots * 9 / 10, "S'' jumps at only %d of %d knots", jumps, knots);
    printf("spline: worst |S(S^-1(y)) - y| = %.3g; S'' jumps at %d of %d interior knots\n", worst_inv, jumps, knots);
}

static void test_affine_transform(void)
{
    const sf_affine_constants c = {3.0};
    double zero[2] = {0, 0}, y, dy, d2y, x;
    CHECK(sf_affine_forward(&c, zero, 0.3, &y, &dy, &d2y) == 0 && fabs(y - 0.3) < 1e-16 && fabs(dy - 1) < 1e-15 &&
              fabs(d2y) < 1e-12, "affine with zero parameters is the identity: %.17g %.17g %.3g", y, dy, d2y);
    /* |s| <= scale_max: T'(1/2) = e^s when t = 0. */
    double big[2] = {50, 0};
    sf_affine_forward(&c, big, 0.5, &y, &dy, NULL);
    CHECK(fabs(dy - exp(3.0)) < 1e-12 * exp(3.0), "affine: T'(1/2) = %.17g, want e^3", dy);
    CHECK(sf_affine_forward(&c, zero, 0.0, &y, &dy, NULL) == -1 && sf_affine_forward(&c, zero, 1.0, &y, &dy, NULL) == -1 &&
              sf_affine_inverse(&c, zero, 0.0, &x) == -1 && sf_affine_inverse(&c, zero, 1.0, &x) == -1,
          "affine: 0 and 1 are outside the support");
    unsigned long long st = 31;
    for (int trial = 0; trial < (quick ? 10 : 200); trial++) {
        double raw[2] = {3 * mb_normal(&st), 2 * mb_normal(&st)};
        double xs[3] = {mb_uniform(&st), 1e-9 * mb_uniform(&st), 1 - 1e-7 * mb_uniform(&st)};
        for (int i = 0; i < 3; i++) {
            double x0 = xs[i], yp, dyp, ym, dym, back;
            /* Steps as the doubles x0 +- h actually are. */
            double xp = x0 + 1e-6 * fmin(x0, 1 - x0), xm = x0 - 1e-6 * fmin(x0, 1 - x0), h2 = xp - xm;
            CHECK(sf_affine_forward(&c, raw, x0, &y, &dy, &d2y) == 0, "affine forward");
            sf_affine_forward(&c, raw, xp, &yp, &dyp, NULL);
            sf_affine_forward(&c, raw, xm, &ym, &dym, NULL);
            /* The differences' round-off: an ulp of y or T' over the step. */
            double noise = 4e-16 * fmax(y, 1e-300) / h2, noise1 = 4e-16 * dy / h2;
            CHECK(fabs((yp - ym) / h2 - dy) <= 1e-6 * dy + noise, "affine T' %.10g vs %.10g", dy, (yp - ym) / h2);
            CHECK(fabs((dyp - dym) / h2 - d2y) <= 1e-5 * (fabs(d2y) + dy / fmin(x0, 1 - x0)) + noise1,
                  "affine T'' %.10g vs %.10g", d2y, (dyp - dym) / h2);
            if (y > 0 && y < 1) {
                CHECK(sf_affine_inverse(&c, raw, y, &back) == 0, "affine inverse");
                /* One rounding of y moves x by ulp(y) / T'; the logits carry
                 * relative errors of a few ulps, and dx/dlogit = x (1 - x). */
                double v = log(x0) - log1p(-x0);
                double tol = 4 * (nextafter(x0, 2.0) - x0) + 4 * (nextafter(y, 2.0) - y) / dy +
                             1e-15 * x0 * (1 - x0) * (1 + fabs(v) + 20 * fabs(raw[1]));
                CHECK(fabs(back - x0) <= tol, "affine T^-1(T(x)) - x = %.3g > %.3g (x=%.17g)", back - x0, tol, x0);
            }
        }
    }
}

/* Forces, log density gradient and batch consistency of spline, affine and
 * mixed-kind flows, in every direction pattern. */
static void test_baseline_flows(void)
{
    const char *kinds[3] = {"spline", "affine", "mixed"}, *acts[3] = {"silu", "tanh", "softplus"};
    const char *dirs[3] = {"generative", "alternating", "density"};
    int n = quick ? 1 : 6;
    for (int kind = 0; kind < 3; kind++) {
        for (int i = 0; i < n; i++) {
            mb_spec spec = mb_default_spec(300 + 10 * kind + i);
            spec.transform = kinds[kind];
            spec.n_atoms = 4 + (2 * i + kind) % 6;
            spec.K = 1 + (3 * i + kind) % 8;
            spec.n_layers = (kind == 2 ? 3 : 1) + i % 4;
            spec.activation = acts[i % 3];
            spec.mixed_directions = (i + kind) % 3;
            spec.n_hidden = i % 3;
            spec.weight_scale = 0.4 + 0.3 * (i % 3);
            sf_model *m = load(&spec);
            if (!m) continue;
            char label[96];
            double *pos = malloc(sizeof(double) * 3 * spec.n_atoms);
            for (int conf = 0; conf < 2; conf++) {
                mb_positions(&spec, 2000 * i + 17 * kind + conf, pos);
                snprintf(label, sizeof label, "%s model %d (%s, K=%d, %d layers) conf %d", kinds[kind], i,
                         dirs[spec.mixed_directions], spec.K, spec.n_layers, conf);
                check_forces(&spec, m, pos, NULL, label);
            }
            free(pos);
            sf_model_free(m);
            snprintf(label, sizeof label, "%s model %d", kinds[kind], i);
            if (i < 2) check_log_density_gradient(&spec, label);
            if (i == 0) check_batch(&spec, label);
        }
    }
}

/* The spline energy is C1 but not C2: along a line through a configuration,
 * second differences fail to converge as h^2 where a coordinate crosses a
 * knot (S'' jumps there; test_spline_transform checks that S' does not),
 * while on the same line the smooth flow of the same architecture (the
 * model of test_smoothness) passes everywhere. */
static void test_spline_not_c2(void)
{
    mb_spec spec = mb_default_spec(31);
    spec.mixed_directions = 1;
    spec.K = 6;
    int n_points = quick ? 5 : 21;
    double d2s[21 * 3], d2p[21 * 3];
    int smooth_bad = second_difference_failures(&spec, n_points, 0.01, d2s, "smooth line");
    spec.transform = "spline";
    int spline_bad = second_difference_failures(&spec, n_points, 0.01, d2p, NULL);
    printf("second differences off h^2 along a line: smooth %d, spline %d of %d points\n", smooth_bad, spline_bad,
           n_points);
    CHECK(smooth_bad >= 0 && smooth_bad <= 1, "smooth: %d of %d points off h^2", smooth_bad, n_points);
    if (!quick) CHECK(spline_bad >= 2, "spline: second differences converge at all but %d points", spline_bad);
}

/* Configuration and support errors of the baseline kinds. */
static void test_baseline_errors(void)
{
    mb_spec spec = mb_default_spec(3);
    spec.transform = "spline";
    sf_model *m = load(&spec);
    char *cfg = m ? copy_string(sf_model_config_json(m)) : NULL;
    sf_model_free(m);
    if (!cfg) return;
    struct { const char *from, *to, *needle; } cases[] = {
        {"\"transform\":\"spline\"", "\"transform\":\"quadratic\"", "'quadratic'"},
        {"\"min_bin_width\":0.001", "\"min_bin_width\":0.5", "K times each"},
        {"\"min_bin_width\":0.001", "\"min_bin_width\":-1", "spline constants out of range"},
        {"\"min_derivative\":0.001", "\"min_derivative\":\"a\"", "'spline' constants"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *at = strstr(cfg, cases[i].from), edited[8192];
        CHECK(at != NULL, "config lacks %s", cases[i].from);
        if (!at) continue;
        snprintf(edited, sizeof edited, "%.*s%s%s", (int)(at - cfg), cfg, cases[i].to, at + strlen(cases[i].from));
        size_t n;
        unsigned char *bytes = mb_build(&spec, edited, NULL, &n);
        expect_error(bytes, n, SF_ERR_MODEL, cases[i].needle, cases[i].to);
        free(bytes);
    }
    free(cfg);

    spec.transform = "affine";
    m = load(&spec);
    cfg = m ? copy_string(sf_model_config_json(m)) : NULL;
    if (cfg) {
        char *at = strstr(cfg, "\"scale_max\":3"), edited[8192];
        CHECK(at != NULL, "config lacks scale_max");
        if (at) {
            snprintf(edited, sizeof edited, "%.*s\"scale_max\":0%s", (int)(at - cfg), cfg, at + 13);
            size_t n;
            unsigned char *bytes = mb_build(&spec, edited, NULL, &n);
            expect_error(bytes, n, SF_ERR_MODEL, "scale_max", "scale_max 0");
            free(bytes);
        }
        free(cfg);
    }
    /* An affine layer cannot take 0 or 1: the last layer (first in the
     * density pass) transforms the even dimensions. */
    sf_workspace *ws;
    sf_workspace_new(m, 1, &ws, NULL);
    int D = sf_model_num_dims(m);
    double u[64], lp, g[64];
    for (int d = 0; d < D; d++) u[d] = 0.5;
    sf_error err;
    CHECK(sf_log_density(m, ws, u, &lp, g, &err) == SF_OK, "affine at the centre: %s", err.message);
    for (int edge = 0; edge < 2; edge++) {
        u[2] = edge;
        sf_status rc = sf_log_density(m, ws, u, &lp, g, &err);
        CHECK(rc == SF_ERR_SUPPORT && strstr(err.message, "dimension 2") && strstr(err.message, "affine"),
              "affine at u = %d: status %d, %s", edge, rc, err.message);
    }
    sf_workspace_free(ws);
    sf_model_free(m);

    /* Through sf_evaluate: a planar trans torsion is phi = +-pi, u = 1 or 0,
     * and the error names its atoms. */
    spec = mb_default_spec(4);
    spec.n_atoms = 4;
    spec.n_layers = 2;
    spec.transform = "affine";
    m = load(&spec);
    sf_workspace_new(m, 1, &ws, NULL);
    int row[4];
    sf_model_zmatrix_row(m, 3, row);
    double pos[12] = {0}, e;
    double place[4][3] = {{-0.05, 0.11, 0}, {0, 0, 0}, {0.13, 0, 0}, {0.18, -0.11, 0}}; /* i j k l */
    for (int a = 0; a < 4; a++) memcpy(pos + 3 * row[a], place[a], sizeof place[a]);
    sf_status rc = sf_evaluate(m, ws, 1, pos, NULL, &e, NULL, NULL, &err);
    CHECK(rc == SF_ERR_SUPPORT && strstr(err.message, "torsion") && err.atoms[0] == row[0] && err.atoms[3] == row[3],
          "planar torsion under an affine flow: status %d, %s", rc, err.message);
    pos[3 * row[3] + 2] = 0.01; /* out of the plane: inside the support */
    rc = sf_evaluate(m, ws, 1, pos, NULL, &e, NULL, NULL, &err);
    CHECK(rc == SF_OK && isfinite(e), "non-planar torsion: status %d, %s", rc, err.message);
    sf_workspace_free(ws);
    sf_model_free(m);
}

/* ------------------------------------------ every outcome finite or an error */

/* Put atom `atom` at `length` nm from atom `from`, along their present direction. */
static void pull_atom(double *pos, int atom, int from, double length)
{
    double d[3], len = 0;
    for (int c = 0; c < 3; c++) {
        d[c] = pos[3 * atom + c] - pos[3 * from + c];
        len += d[c] * d[c];
    }
    len = sqrt(len);
    for (int c = 0; c < 3; c++) pos[3 * atom + c] = pos[3 * from + c] + length * (d[c] / len);
}

static int all_finite(const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

/* One evaluation of molecule `bad` in a batch of two (the other a good copy) that must fail with
 * SF_ERR_NUMERIC, a message that starts "molecule <bad>:" and contains needle, located at atoms
 * a0 and a1 (-1: not checked).  Returns the status of the energy-only evaluation. */
static sf_status expect_numeric(const sf_model *m, const double *good, const double *pos, int bad, const char *needle,
                                int a0, int a1, const char *label)
{
    const int N = sf_model_num_atoms(m);
    sf_workspace *ws;
    sf_workspace_new(m, 2, &ws, NULL);
    double *batch = malloc(sizeof(double) * 6 * N), *f = malloc(sizeof(double) * 6 * N), e[2];
    memcpy(batch + 3 * N * bad, pos, sizeof(double) * 3 * N);
    memcpy(batch + 3 * N * (1 - bad), good, sizeof(double) * 3 * N);
    sf_error err = {SF_OK, "", -1, {-1, -1, -1, -1}};
    sf_status rc = sf_evaluate(m, ws, 2, batch, NULL, e, f, NULL, &err);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "molecule %d:", bad);
    CHECK(rc == SF_ERR_NUMERIC && strncmp(err.message, prefix, strlen(prefix)) == 0 && strstr(err.message, needle),
          "%s: status %d, message '%s' (want SF_ERR_NUMERIC, '%s' ... '%s')", label, rc, err.message, prefix, needle);
    CHECK(err.molecule == bad && (a0 < 0 || err.atoms[0] == a0) && (a1 < 0 || err.atoms[1] == a1),
          "%s: located at molecule %d atoms %d %d, want %d atoms %d %d", label, err.molecule, err.atoms[0],
          err.atoms[1], bad, a0, a1);
    rc = sf_evaluate(m, ws, 2, batch, NULL, e, NULL, NULL, &err);
    free(batch);
    free(f);
    sf_workspace_free(ws);
    return rc;
}

/* Configurations that a valid model file evaluates to infinities or NaN
 * (before: success): the wall energy of a bond of 1e152 nm, two walled bonds
 * whose finite wall energies sum beyond the doubles, and the Cartesian
 * derivatives of an angle at a bond of 1e-110 nm. */
static void test_finite_outcomes(void)
{
    mb_spec spec = mb_default_spec(41);
    spec.policy = "wall"; /* margin 0.02, wall_constant 500 kJ/mol */
    sf_model *m = load(&spec);
    const int N = spec.n_atoms;
    double lo[64], hi[64], *good = malloc(sizeof(double) * 3 * N), *pos = malloc(sizeof(double) * 3 * N);
    file_bond_bounds(&spec, lo, hi);
    mb_positions(&spec, 2, good);
    int last[4], first[4];
    sf_model_zmatrix_row(m, N - 1, last);
    sf_model_zmatrix_row(m, 1, first);
    sf_workspace *ws;
    sf_workspace_new(m, 1, &ws, NULL);
    sf_error err = {SF_OK, "", -1, {-1, -1, -1, -1}};
    double e, *f = malloc(sizeof(double) * 3 * N);

    /* The last atom pulled out along its bond changes no angle or torsion.  At 1e140 nm
     * everything is finite (the rule's other side); at 1e152 nm the wall energy
     * 250 (1e152 / 0.1)^2 is not. */
    memcpy(pos, good, sizeof(double) * 3 * N);
    pull_atom(pos, last[0], last[1], 1e140);
    sf_status rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
    CHECK(rc == SF_OK && isfinite(e) && e > 1e280 && all_finite(f, 3 * (size_t)N),
          "a bond of 1e140 nm under the wall: status %d, energy %g (%s)", rc, e, err.message);
    pull_atom(pos, last[0], last[1], 1e152);
    rc = expect_numeric(m, good, pos, 1, "wall energy", last[0], last[1], "a bond of 1e152 nm");
    CHECK(rc == SF_ERR_NUMERIC, "a bond of 1e152 nm, energy only: status %d", rc);

    /* Two walled bonds at opposite ends of the chain, each with a wall energy of 0.6 DBL_MAX. */
    memcpy(pos, good, sizeof(double) * 3 * N);
    const double r = sqrt(1.2 * (DBL_MAX / 500));
    pull_atom(pos, last[0], last[1], lo[N - 2] + (hi[N - 2] - lo[N - 2]) * r);
    pull_atom(pos, first[1], first[0], lo[0] + (hi[0] - lo[0]) * r);
    rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
    CHECK(rc == SF_ERR_NUMERIC && strstr(err.message, "molecule 0: the energy is not finite") && err.molecule == 0,
          "two walled bonds whose wall energies sum to 1.2 DBL_MAX: status %d, %s", rc, err.message);
    rc = expect_numeric(m, good, pos, 0, "the energy is not finite", -1, -1, "wall energies summing past DBL_MAX");
    CHECK(rc == SF_ERR_NUMERIC, "the same, energy only: status %d", rc);

    /* A bond of 1e-110 nm (its atom at the origin, so the length is exact): the clamp
     * keeps the energy finite, but the angle's derivatives grow as 1 / distance and
     * overflow.  Energy only succeeds: the energy is finite. */
    for (int a = 0; a < N; a++)
        for (int c = 0; c < 3; c++) pos[3 * a + c] = good[3 * a + c] - good[3 * last[1] + c];
    pull_atom(pos, last[0], last[1], 1e-110);
    rc = expect_numeric(m, good, pos, 0, "its derivative with respect to its atoms' positions", last[0], last[1],
                        "a bond of 1e-110 nm");
    CHECK(rc == SF_OK, "a bond of 1e-110 nm, energy only: status %d", rc);
    CHECK(sf_evaluate(m, ws, 1, pos, NULL, &e, NULL, NULL, &err) == SF_OK && isfinite(e),
          "a bond of 1e-110 nm, energy only: %g", e);
    pull_atom(pos, last[0], last[1], 1e-90); /* the derivatives stay finite */
    rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
    CHECK(rc == SF_OK && isfinite(e) && all_finite(f, 3 * (size_t)N), "a bond of 1e-90 nm: status %d (%s)", rc,
          err.message);

    /* The smooth inverse keeps a NaN (it returned 0 for it, so a generative layer turned a
     * NaN into a finite state); y outside [0, 1] still clamps to the ends. */
    sf_smooth_constants c = {0.01, 0.1, 0.99, 1};
    double raw[4 * 3 + 2], x;
    unsigned long long st = 7;
    random_raw(&st, 3, 1.0, raw);
    for (int circ = 0; circ < 2; circ++) {
        x = 0.5;
        int it = sf_smooth_inverse(&c, 3, raw, circ, NAN, &x);
        CHECK(isnan(x) && it == 0, "smooth inverse of NaN (circular %d): x = %g after %d iterations", circ, x, it);
    }
    CHECK(sf_smooth_inverse(&c, 3, raw, 0, -INFINITY, &x) == 0 && x == 0, "smooth inverse of -inf: %g", x);
    CHECK(sf_smooth_inverse(&c, 3, raw, 0, INFINITY, &x) == 0 && x == 1, "smooth inverse of +inf: %g", x);
    CHECK(sf_smooth_inverse(&c, 3, raw, 0, -0.5, &x) == 0 && x == 0, "smooth inverse of -0.5: %g", x);

    free(f);
    free(good);
    free(pos);
    sf_workspace_free(ws);
    sf_model_free(m);
}

/* White box: values that no valid file can hold (the loader refuses them), written into
 * a loaded model to reach the checks a valid file cannot: a conditioner output that is
 * NaN, a transform that overflows (c_max = 1), a bond bound that is NaN, a wall constant
 * of 1e308 (dE/dq overflows while the energy stays finite), and two dE/dq of 0.7 DBL_MAX
 * whose contributions to one atom's force add past DBL_MAX.  sf_model's layout is
 * sf_internal.h's; everything else here is the public API. */
static void test_finite_checks_white_box(void)
{
    mb_spec spec = mb_default_spec(43);
    spec.policy = "wall";
    const int N = spec.n_atoms;
    double *pos = malloc(sizeof(double) * 3 * N), *f = malloc(sizeof(double) * 3 * N), e;
    mb_positions(&spec, 5, pos);
    sf_error err = {SF_OK, "", -1, {-1, -1, -1, -1}};
    sf_status rc;

    /* A NaN conditioner output: the last map's bias of the first mixture weight of a
     * torsion that layer 2 (generative, the first of the density pass) transforms. */
    sf_model *m = load(&spec);
    sf_layer *L = &m->layers[2];
    int t = 0;
    while (t < L->n_trans - 1 && L->trans[t] < 2 * N - 3) t++;
    const int d = L->trans[t];
    CHECK(d >= 2 * N - 3, "layer 2 transforms no torsion");
    int at[4];
    {
        double *poisoned = &L->bias[L->n_linear - 1][t * L->P], saved = *poisoned;
        *poisoned = NAN;
        sf_workspace *ws;
        sf_workspace_new(m, 1, &ws, NULL);
        rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
        char needle[96];
        snprintf(needle, sizeof needle, "molecule 0: layer 2 (smooth, generative) maps dimension %d (", d);
        CHECK(rc == SF_ERR_NUMERIC && strstr(err.message, needle) &&
                  strstr(err.message, "its conditioner's parameters are not finite"),
              "NaN conditioner output: status %d, %s", rc, err.message);
        /* d's atoms: bond rows r = d + 1, angles d - N + 3, torsions d - 2N + 6 */
        int r = d < N - 1 ? d + 1 : d < 2 * N - 3 ? d - N + 3 : d - 2 * N + 6;
        sf_model_zmatrix_row(m, r, at);
        CHECK(err.molecule == 0 && err.atoms[0] == at[0] && err.atoms[3] == at[3], "located at %d %d, want %d %d",
              err.atoms[0], err.atoms[3], at[0], at[3]);
        *poisoned = saved;
        rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
        CHECK(rc == SF_OK, "restored: %s", err.message);

        /* c_max = 1 (the loader requires < 1) with c = 1 and steep, saturated ramps in
         * density layer 1: F' = 0 at most points, and the log-determinant is -inf. */
        L = &m->layers[1];
        const double c_max = m->smooth.c_max;
        m->smooth.c_max = 1;
        const int K = L->K, P = L->P;
        double *bias = L->bias[L->n_linear - 1];
        for (int k = 0; k < K; k++) bias[3 * K + k] += 1e4; /* alpha ~ 1e4 */
        bias[4 * K] += 1e4;                                   /* c~: c = c_max */
        int found = 0;
        for (unsigned seed = 1; seed < 40 && !found; seed++) {
            mb_positions(&spec, seed, pos);
            rc = sf_evaluate(m, ws, 1, pos, NULL, &e, NULL, NULL, &err);
            found = rc == SF_ERR_NUMERIC && strstr(err.message, "layer 1 (smooth, density)") &&
                    strstr(err.message, "with log-determinant -inf: the transform overflows");
        }
        CHECK(found, "c_max = 1 with saturated ramps: status %d, %s (P = %d)", rc, err.message, P);
        m->smooth.c_max = c_max;
        sf_workspace_free(ws);
    }
    sf_model_free(m);

    /* A NaN weight in the row of a parameter the forward pass ignores (t~ of an interval
     * dimension): the energy is finite, but the reverse pass multiplies that row by 0 and
     * carries the NaN into d log p/du. */
    m = load(&spec);
    {
        sf_workspace *ws;
        sf_workspace_new(m, 1, &ws, NULL);
        L = &m->layers[2];
        const int K = L->K, n_in = L->width[L->n_linear - 1];
        CHECK(L->trans[0] < 2 * N - 3, "layer 2's first transformed dimension is an interval");
        L->weight[L->n_linear - 1][(size_t)(4 * K + 1) * n_in] = NAN;
        mb_positions(&spec, 5, pos);
        rc = sf_evaluate(m, ws, 1, pos, NULL, &e, NULL, NULL, &err);
        CHECK(rc == SF_OK && isfinite(e), "NaN behind an ignored parameter, energy only: status %d, %s", rc,
              err.message);
        rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
        CHECK(rc == SF_ERR_NUMERIC && strstr(err.message, "molecule 0: the force on model atom ") &&
                  strstr(err.message, "the flow's reverse pass gives dE/du = "),
              "NaN behind an ignored parameter: status %d, %s", rc, err.message);
        double u[64], lp, g[64];
        CHECK(sf_internal_coordinates(m, pos, NULL, u, &err) == SF_OK, "coordinates: %s", err.message);
        rc = sf_log_density(m, ws, u, &lp, g, &err);
        CHECK(rc == SF_ERR_NUMERIC && isfinite(lp) &&
                  strstr(err.message, "molecule 0: the flow's reverse pass gives d log p_U/du = "),
              "NaN behind an ignored parameter, sf_log_density: status %d, %s", rc, err.message);
        sf_workspace_free(ws);
    }
    sf_model_free(m);

    /* A NaN bond bound: the normalized coordinate is NaN, which the wall's clamp would
     * pass on to the flow. */
    m = load(&spec);
    mb_positions(&spec, 5, pos);
    sf_workspace *ws;
    sf_workspace_new(m, 1, &ws, NULL);
    m->bond_lo[2] = NAN;
    sf_model_zmatrix_row(m, 3, at);
    rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
    CHECK(rc == SF_ERR_NUMERIC && strstr(err.message, "molecule 0: dimension 2 (bond ") &&
              strstr(err.message, "normalized value") && err.atoms[0] == at[0] && err.atoms[1] == at[1],
          "NaN bond bound: status %d, %s", rc, err.message);
    sf_workspace_free(ws);
    sf_model_free(m);

    /* A wall constant of 1e308 (the loader allows 1e12) and a bond 0.7 of its width past
     * its upper bound: the wall energy 0.5e308 (u - c)^2 is finite, its derivative
     * 1e308 (u - c) / width is not. */
    m = load(&spec);
    sf_workspace_new(m, 1, &ws, NULL);
    m->wall_constant = 1e308;
    int row[4];
    sf_model_zmatrix_row(m, N - 1, row);
    const double width = m->bond_hi[N - 2] - m->bond_lo[N - 2];
    pull_atom(pos, row[0], row[1], m->bond_hi[N - 2] + 0.7 * width);
    rc = sf_evaluate(m, ws, 1, pos, NULL, &e, NULL, NULL, &err);
    CHECK(rc == SF_OK && isfinite(e), "wall constant 1e308, energy only: status %d, %s", rc, err.message);
    rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
    char needle[64];
    snprintf(needle, sizeof needle, "dimension %d (bond %d-%d)", N - 2, row[0], row[1]);
    CHECK(rc == SF_ERR_NUMERIC && strstr(err.message, needle) && strstr(err.message, "dE/dq = inf") &&
              err.atoms[0] == row[0] && err.atoms[1] == row[1],
          "wall constant 1e308: status %d, %s", rc, err.message);
    sf_workspace_free(ws);
    sf_model_free(m);

    /* Two bonds that share atom X = row 1's atom, both far past their upper bounds, with
     * neighbours 20 degrees apart on the same side of X: far out the clamp's slope is 0,
     * so dE/dq = k (u - c) / width exactly, here 0.7 DBL_MAX each, and their
     * contributions to X's force add to 1.36 DBL_MAX along x. */
    spec = mb_default_spec(45);
    spec.n_atoms = 4;
    spec.policy = "wall";
    m = load(&spec);
    sf_workspace_new(m, 1, &ws, NULL);
    int z[4][4];
    for (int i = 0; i < 4; i++) sf_model_zmatrix_row(m, i, z[i]);
    const double R = 30, w1 = m->bond_hi[0] - m->bond_lo[0], w2 = m->bond_hi[1] - m->bond_lo[1];
    const double c1 = 1 - 0.02; /* the clamp's far value, 1 - margin */
    const double L1 = m->bond_lo[0] + w1 * (c1 + R * w1), L2 = m->bond_lo[1] + w2 * (c1 + R * w2);
    m->wall_constant = 0.7 * DBL_MAX / R;
    double p4[12] = {0};
    const double angle = 20 * 3.141592653589793 / 180;
    double place[4][3] = {{L1, 0, 0}, {0, 0, 0}, {L2 * cos(angle), L2 * sin(angle), 0}, {0, 0, 0}};
    for (int c = 0; c < 3; c++) place[3][c] = place[2][c] + 0.15 * (c == 0 ? 0.3 : c == 1 ? 0.2 : 0.93);
    for (int a = 0; a < 4; a++) memcpy(p4 + 3 * z[a][0], place[a], sizeof place[a]);
    double f4[12];
    rc = sf_evaluate(m, ws, 1, p4, NULL, &e, f4, NULL, &err);
    snprintf(needle, sizeof needle, "molecule 0: the force on model atom %d is not finite", z[1][0]);
    CHECK(rc == SF_ERR_NUMERIC && strstr(err.message, needle) && strstr(err.message, "the sum of its") &&
              err.atoms[0] == z[1][0],
          "force sum past DBL_MAX: status %d, %s", rc, err.message);
    sf_workspace_free(ws);
    sf_model_free(m);
    free(pos);
    free(f);
}

/* ------------------------------------------------- the API's edge cases */

/* Every status has its own fixed text (core/src/sf_error.c); an unknown code
 * says so instead of crashing or borrowing another's text. */
static void test_status_strings(void)
{
    static const struct { sf_status code; const char *text; } table[] = {
        {SF_OK, "ok"},
        {SF_ERR_ARG, "invalid argument"},
        {SF_ERR_NOMEM, "out of memory"},
        {SF_ERR_IO, "cannot read model file"},
        {SF_ERR_FORMAT, "model file is corrupt"},
        {SF_ERR_VERSION, "unsupported model format version"},
        {SF_ERR_MODEL, "model architecture is inconsistent"},
        {SF_ERR_VALUE, "model holds non-finite or out-of-bound values"},
        {SF_ERR_INPUT, "non-finite positions or box"},
        {SF_ERR_SUPPORT, "configuration outside the flow's support"},
        {SF_ERR_GEOMETRY, "degenerate geometry"},
        {SF_ERR_NUMERIC, "numerical failure"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const char *s = sf_status_string(table[i].code);
        CHECK(s && strcmp(s, table[i].text) == 0, "sf_status_string(%d) = '%s', want '%s'", (int)table[i].code,
              s ? s : "(null)", table[i].text);
    }
    CHECK(strcmp(sf_status_string((sf_status)12345), "unknown status") == 0, "an unknown status code");
    CHECK(strcmp(sf_status_string((sf_status)-1), "unknown status") == 0, "a negative status code");
}

static void test_version(void)
{
    CHECK(strcmp(sf_version(), SF_VERSION_STRING) == 0, "sf_version() = '%s', header says '%s'", sf_version(),
          SF_VERSION_STRING);
    CHECK(sf_version_number() == SF_VERSION_NUMBER, "sf_version_number() = %d, header says %d", sf_version_number(),
          SF_VERSION_NUMBER);
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", SF_VERSION_MAJOR, SF_VERSION_MINOR, SF_VERSION_PATCH);
    CHECK(strcmp(sf_version(), expect) == 0, "version string '%s' is not major.minor.patch '%s'", sf_version(), expect);
}

/* The status, code and exact message of a refused call. */
static void expect_refusal(sf_status rc, const sf_error *err, sf_status code, const char *message, const char *what)
{
    CHECK(rc == code && err->code == code, "%s: status %d (error code %d), want %d", what, rc, err->code, code);
    CHECK(strcmp(err->message, message) == 0, "%s: message '%s', want '%s'", what, err->message, message);
    CHECK(err->molecule == -1 && err->atoms[0] == -1, "%s: an argument error names no molecule or atom", what);
}

static void test_null_arguments(void)
{
    mb_spec spec = mb_default_spec(4);
    sf_model *m = load(&spec), *other = load(&spec);
    sf_workspace *ws = NULL, *ws_other = NULL;
    sf_error err;
    CHECK(sf_workspace_new(m, 1, &ws, &err) == SF_OK && sf_workspace_new(other, 1, &ws_other, &err) == SF_OK,
          "workspaces: %s", err.message);
    const int N = sf_model_num_atoms(m), D = sf_model_num_dims(m);
    double *pos = malloc((size_t)N * 3 * sizeof *pos), *f = malloc((size_t)N * 3 * sizeof *f);
    double *u = malloc((size_t)D * sizeof *u), e = 0, lp = 0;
    mb_positions(&spec, 4, pos);
    unsigned char byte = 0;
    sf_model *out = (sf_model *)&byte; /* must be reset to NULL on failure */
    sf_status rc;

    rc = sf_model_load_bytes(NULL, 10, &out, &err);
    expect_refusal(rc, &err, SF_ERR_ARG, "sf_model_load_bytes: NULL argument", "load_bytes(NULL data)");
    rc = sf_model_load_bytes(&byte, 1, NULL, &err);
    expect_refusal(rc, &err, SF_ERR_ARG, "sf_model_load_bytes: NULL argument", "load_bytes(NULL out)");
    rc = sf_model_load_file(NULL, &out, &err);
    expect_refusal(rc, &err, SF_ERR_ARG, "sf_model_load_file: NULL argument", "load_file(NULL path)");
    rc = sf_model_load_file("x.safetensors", NULL, &err);
    expect_refusal(rc, &err, SF_ERR_ARG, "sf_model_load_file: NULL argument", "load_file(NULL out)");
    /* Without an error record the status alone reports the failure. */
    CHECK(sf_model_load_bytes(NULL, 10, NULL, NULL) == SF_ERR_ARG, "load_bytes without err");
    sf_model_free(NULL);
    sf_workspace_free(NULL);

    const char *ws_msg = "sf_workspace_new: NULL argument or max_batch < 1";
    sf_workspace *wout = NULL;
    expect_refusal(sf_workspace_new(NULL, 1, &wout, &err), &err, SF_ERR_ARG, ws_msg, "workspace_new(NULL model)");
    expect_refusal(sf_workspace_new(m, 1, NULL, &err), &err, SF_ERR_ARG, ws_msg, "workspace_new(NULL out)");
    expect_refusal(sf_workspace_new(m, 0, &wout, &err), &err, SF_ERR_ARG, ws_msg, "workspace_new(max_batch 0)");
    expect_refusal(sf_workspace_new(m, -3, &wout, &err), &err, SF_ERR_ARG, ws_msg, "workspace_new(max_batch -3)");
    CHECK(wout == NULL, "a refused workspace_new wrote its output");

    const char *ev_msg = "sf_evaluate: NULL model, workspace, positions or energies";
    expect_refusal(sf_evaluate(NULL, ws, 1, pos, NULL, &e, f, NULL, &err), &err, SF_ERR_ARG, ev_msg,
                   "evaluate(NULL model)");
    expect_refusal(sf_evaluate(m, NULL, 1, pos, NULL, &e, f, NULL, &err), &err, SF_ERR_ARG, ev_msg,
                   "evaluate(NULL workspace)");
    expect_refusal(sf_evaluate(m, ws, 1, NULL, NULL, &e, f, NULL, &err), &err, SF_ERR_ARG, ev_msg,
                   "evaluate(NULL positions)");
    expect_refusal(sf_evaluate(m, ws, 1, pos, NULL, NULL, f, NULL, &err), &err, SF_ERR_ARG, ev_msg,
                   "evaluate(NULL energies)");
    expect_refusal(sf_evaluate(m, ws_other, 1, pos, NULL, &e, f, NULL, &err), &err, SF_ERR_ARG,
                   "sf_evaluate: workspace was made for another model", "evaluate(another model's workspace)");
    expect_refusal(sf_evaluate(m, ws, 0, pos, NULL, &e, f, NULL, &err), &err, SF_ERR_ARG,
                   "sf_evaluate: batch 0 outside 1..1 (the workspace's size)", "evaluate(batch 0)");

    const char *ic_msg = "sf_internal_coordinates: NULL argument";
    expect_refusal(sf_internal_coordinates(NULL, pos, NULL, u, &err), &err, SF_ERR_ARG, ic_msg, "ic(NULL model)");
    expect_refusal(sf_internal_coordinates(m, NULL, NULL, u, &err), &err, SF_ERR_ARG, ic_msg, "ic(NULL positions)");
    expect_refusal(sf_internal_coordinates(m, pos, NULL, NULL, &err), &err, SF_ERR_ARG, ic_msg, "ic(NULL u)");

    CHECK(sf_internal_coordinates(m, pos, NULL, u, &err) == SF_OK, "internal coordinates: %s", err.message);
    const char *ld_msg = "sf_log_density: NULL argument";
    expect_refusal(sf_log_density(NULL, ws, u, &lp, NULL, &err), &err, SF_ERR_ARG, ld_msg, "log_density(NULL model)");
    expect_refusal(sf_log_density(m, NULL, u, &lp, NULL, &err), &err, SF_ERR_ARG, ld_msg, "log_density(NULL ws)");
    expect_refusal(sf_log_density(m, ws, NULL, &lp, NULL, &err), &err, SF_ERR_ARG, ld_msg, "log_density(NULL u)");
    expect_refusal(sf_log_density(m, ws, u, NULL, NULL, &err), &err, SF_ERR_ARG, ld_msg, "log_density(NULL out)");
    expect_refusal(sf_log_density(m, ws_other, u, &lp, NULL, &err), &err, SF_ERR_ARG,
                   "sf_log_density: workspace was made for another model", "log_density(another model's workspace)");
    /* Only the points of the unit cube have a density. */
    u[D - 1] = 1.5;
    rc = sf_log_density(m, ws, u, &lp, NULL, &err);
    CHECK(rc == SF_ERR_SUPPORT && strstr(err.message, "is outside [0, 1]"), "log_density(u outside): %d %s", rc,
          err.message);

    /* Out-of-range indices of the accessors give the documented "none". */
    int row[4] = {7, 7, 7, 7};
    sf_model_zmatrix_row(m, N, row);
    CHECK(row[0] == -1 && row[1] == -1 && row[2] == -1 && row[3] == -1, "zmatrix row N is all -1");
    sf_model_zmatrix_row(m, -1, row);
    CHECK(row[0] == -1 && row[3] == -1, "zmatrix row -1 is all -1");
    CHECK(sf_model_atom_residue(m, 0) == NULL && sf_model_atom_residue_index(m, 0) == -1,
          "no atoms metadata: no residue");

    sf_workspace_free(ws);
    sf_workspace_free(ws_other);
    sf_model_free(m);
    sf_model_free(other);
    free(pos);
    free(f);
    free(u);
}

/* sf_workspace_size and sf_workspace_init at their edges. */
static void test_workspace_edges(void)
{
    mb_spec spec = mb_default_spec(6);
    sf_model *m = load(&spec);
    sf_error err;
    CHECK(sf_workspace_size(NULL, 1) == 0, "size of no model");
    CHECK(sf_workspace_size(m, 0) == 0 && sf_workspace_size(m, -1) == 0, "size for max_batch < 1");
    const size_t s1 = sf_workspace_size(m, 1), s2 = sf_workspace_size(m, 2), s4 = sf_workspace_size(m, 4);
    CHECK(s1 > 0 && s1 < s2 && s2 < s4, "size grows with the batch: %zu %zu %zu", s1, s2, s4);
    /* A 16-byte aligned buffer with one spare alignment step for the misaligned case. */
    unsigned char *raw = malloc(s2 + 64);
    unsigned char *mem = raw + (16 - (uintptr_t)raw % 16) % 16;
    sf_workspace *ws = NULL;
    char want[160];

    const char *msg = "sf_workspace_init: NULL argument or max_batch < 1";
    expect_refusal(sf_workspace_init(NULL, 1, mem, s2, &ws, &err), &err, SF_ERR_ARG, msg, "init(NULL model)");
    expect_refusal(sf_workspace_init(m, 1, NULL, s2, &ws, &err), &err, SF_ERR_ARG, msg, "init(NULL memory)");
    expect_refusal(sf_workspace_init(m, 1, mem, s2, NULL, &err), &err, SF_ERR_ARG, msg, "init(NULL out)");
    expect_refusal(sf_workspace_init(m, 0, mem, s2, &ws, &err), &err, SF_ERR_ARG, msg, "init(max_batch 0)");
    expect_refusal(sf_workspace_init(m, 1, mem + 8, s2, &ws, &err), &err, SF_ERR_ARG,
                   "sf_workspace_init: memory is not aligned to 16 bytes", "init(8-byte offset)");
    expect_refusal(sf_workspace_init(m, 1, mem + 1, s2, &ws, &err), &err, SF_ERR_ARG,
                   "sf_workspace_init: memory is not aligned to 16 bytes", "init(1-byte offset)");
    snprintf(want, sizeof want, "sf_workspace_init: %zu bytes given, %zu needed", s2 - 1, s2);
    expect_refusal(sf_workspace_init(m, 2, mem, s2 - 1, &ws, &err), &err, SF_ERR_ARG, want, "init(one byte short)");
    snprintf(want, sizeof want, "sf_workspace_init: %zu bytes given, %zu needed", (size_t)0, s1);
    expect_refusal(sf_workspace_init(m, 1, mem, 0, &ws, &err), &err, SF_ERR_ARG, want, "init(no bytes)");
    CHECK(ws == NULL, "a refused init wrote its output");

    /* Exactly the size asked for is enough, and the workspace lies in the
     * caller's memory and evaluates like one from sf_workspace_new. */
    CHECK(sf_workspace_init(m, 2, mem, s2, &ws, &err) == SF_OK, "init with exactly %zu bytes: %s", s2, err.message);
    CHECK((unsigned char *)ws == mem, "the workspace is laid out at the caller's memory");
    sf_workspace *owned = NULL;
    CHECK(sf_workspace_new(m, 1, &owned, &err) == SF_OK, "workspace_new: %s", err.message);
    const int N = sf_model_num_atoms(m);
    double *pos = malloc((size_t)N * 3 * sizeof *pos);
    mb_positions(&spec, 2, pos);
    const double e_init = energy_of(m, ws, pos, NULL), e_new = energy_of(m, owned, pos, NULL);
    CHECK(e_init == e_new, "caller's and core's workspaces give %.17g and %.17g", e_init, e_new);
    sf_workspace_free(ws); /* not owned: must leave the caller's memory alone */
    CHECK(energy_of(m, ws, pos, NULL) == e_init, "sf_workspace_free released a caller's workspace");
    sf_workspace_free(owned);
    free(pos);
    free(raw);
    sf_model_free(m);
}

int main(int argc, char **argv)
{
    quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    test_model_facts();
    test_pytorch_fixtures();
    test_inverse();
    test_transform_derivatives();
    test_log_density_gradient();
    test_forces();
    test_batch();
    test_float32_weights();
    test_model_description();
    test_periodic();
    test_smoothness();
    test_support();
    test_bad_input();
    test_strict_container();
    test_corrupt_bytes();
    test_spline_transform();
    test_affine_transform();
    test_baseline_flows();
    test_spline_not_c2();
    test_baseline_errors();
    test_finite_outcomes();
    test_finite_checks_white_box();
    test_status_strings();
    test_version();
    test_null_arguments();
    test_workspace_edges();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
