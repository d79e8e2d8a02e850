/* fuzz_model_load.c -- libFuzzer target: the loader and one evaluation.
 *
 * The input is a model file.  If sf_model_load_bytes accepts it, the model's
 * accessors are read, a workspace is made, and the model is evaluated once on
 * a fixed configuration (a chain from a seeded generator, for the model's atom
 * count) and its log density once at the centre of the unit cube.  Errors are
 * expected and fine; a crash, a sanitizer report, an error without a message,
 * or a success with a non-finite result is a finding (abort).
 *
 * Built two ways: with clang -fsanitize=fuzzer by scripts/fuzz.sh, and with
 * regression_main.c as a plain program that replays the regression corpus
 * (tests/data/fuzz_regression/model) in the test command. */
#include "smoothflow.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void finding(const char *what, const sf_error *err)
{
    fprintf(stderr, "fuzz_model_load: %s%s%s\n", what, err ? ": " : "", err ? err->message : "");
    abort();
}

/* An error must come with a non-empty, terminated message. */
static void check_error(sf_status rc, const sf_error *err)
{
    if (rc == SF_OK) return;
    if (memchr(err->message, '\0', sizeof err->message) == NULL) finding("error message not terminated", NULL);
    if (err->message[0] == '\0') finding("error without a message", NULL);
}

/* xorshift64*: a fixed stream, so a replay evaluates the same configuration. */
static double next_uniform(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (double)((*s * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}

/* A self-avoiding-enough chain: steps of 0.1 to 0.16 nm in random
 * directions, so no bond is zero and few angles are straight. */
static void chain_positions(int n, double *pos)
{
    uint64_t s = 0x9e3779b97f4a7c15ull;
    pos[0] = pos[1] = pos[2] = 0.0;
    for (int a = 1; a < n; a++) {
        double z = 2.0 * next_uniform(&s) - 1.0, phi = 6.283185307179586 * next_uniform(&s);
        double r = sqrt(1.0 - z * z), len = 0.1 + 0.06 * next_uniform(&s);
        pos[3 * a + 0] = pos[3 * (a - 1) + 0] + len * r * cos(phi);
        pos[3 * a + 1] = pos[3 * (a - 1) + 1] + len * r * sin(phi);
        pos[3 * a + 2] = pos[3 * (a - 1) + 2] + len * z;
    }
}

static void exercise(const sf_model *m)
{
    sf_error err;
    int n = sf_model_num_atoms(m), d = sf_model_num_dims(m);
    int free_form = sf_model_flow_kind(m) == SF_FLOW_FREE_FORM;
    if (free_form ? (n < 2 || d != (n - 1) * sf_model_spatial_dim(m)) : (n < 3 || d != 3 * n - 6))
        finding("atom and dimension counts disagree", NULL);
    for (int r = 0; r < n; r++) {
        int row[4];
        sf_model_zmatrix_row(m, r, row);
        (void)sf_model_atom_name(m, r);
        (void)sf_model_atom_residue(m, r);
    }
    if (!isfinite(sf_model_kT(m)) || !isfinite(sf_model_energy_offset(m)))
        finding("non-finite kT or energy offset accepted", NULL);
    (void)sf_model_config_json(m);

    sf_workspace *ws = NULL;
    sf_status rc = sf_workspace_new(m, 1, &ws, &err);
    check_error(rc, &err);
    if (rc != SF_OK) return;

    double *pos = malloc(sizeof(double) * 3 * (size_t)n);
    double *forces = malloc(sizeof(double) * 3 * (size_t)n);
    double *u = malloc(sizeof(double) * (size_t)(d > 0 ? d : 1));
    double *grad = malloc(sizeof(double) * (size_t)(d > 0 ? d : 1));
    if (!pos || !forces || !u || !grad) finding("out of memory in the harness", NULL);
    chain_positions(n, pos);

    double energy = NAN;
    sf_eval_info info;
    rc = sf_evaluate(m, ws, 1, pos, NULL, &energy, forces, &info, &err);
    check_error(rc, &err);
    if (rc == SF_OK) {
        if (!isfinite(energy)) finding("sf_evaluate succeeded with a non-finite energy", NULL);
        for (int i = 0; i < 3 * n; i++)
            if (!isfinite(forces[i])) finding("sf_evaluate succeeded with a non-finite force", NULL);
    }

    for (int i = 0; i < d; i++) u[i] = 0.5;
    double logp = NAN;
    rc = sf_log_density(m, ws, u, &logp, grad, &err);
    check_error(rc, &err);
    if (rc == SF_OK) {
        if (!isfinite(logp)) finding("sf_log_density succeeded with a non-finite value", NULL);
        for (int i = 0; i < d; i++)
            if (!isfinite(grad[i])) finding("sf_log_density succeeded with a non-finite gradient", NULL);
    }
    free(pos);
    free(forces);
    free(u);
    free(grad);
    sf_workspace_free(ws);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sf_model *m = NULL;
    sf_error err;
    sf_status rc = sf_model_load_bytes(data, size, &m, &err);
    check_error(rc, &err);
    if (rc != SF_OK) {
        if (m != NULL) finding("failed load left a model", NULL);
        return 0;
    }
    exercise(m);
    sf_model_free(m);
    return 0;
}
