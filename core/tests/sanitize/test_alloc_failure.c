/* test_alloc_failure.c -- allocation-failure injection for the C core.
 *
 * Linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc
 * (core/tests/sanitize/CMakeLists.txt), so every allocation the core's
 * statically compiled sources make goes through the wrappers below.  For
 * each operation -- loading tests/data/tiny.safetensors, wall.safetensors and
 * von_mises.safetensors
 * from bytes and from its file, sf_workspace_new, one sf_evaluate with forces,
 * sf_internal_coordinates -- the loop fails the 1st, 2nd, ... allocation the
 * call makes, and requires SF_ERR_NOMEM with an "out of memory" message and
 * no output each time, until n exceeds the call's allocation count, when the
 * call must succeed and give the reference result.  LeakSanitizer (on in
 * this sub-project) checks at exit that no failed call leaked.  cJSON and
 * BLAS are shared libraries and keep the real allocator. */
#include "smoothflow.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__real_aligned_alloc(size_t alignment, size_t size);

/* armed: count allocations; fail_at: the 1-based allocation that fails. */
static int armed = 0;
static long fail_at = 0, count = 0;

static int inject(void)
{
    if (!armed) return 0;
    return ++count == fail_at;
}

void *__wrap_malloc(size_t size) { return inject() ? NULL : __real_malloc(size); }
void *__wrap_calloc(size_t n, size_t size) { return inject() ? NULL : __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t size) { return inject() ? NULL : __real_realloc(p, size); }
void *__wrap_aligned_alloc(size_t alignment, size_t size)
{
    return inject() ? NULL : __real_aligned_alloc(alignment, size);
}

#include "../test_check.h"


/* No operation here makes anywhere near this many allocations. */
#define MAX_ALLOCATIONS 100000

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    *size = (size_t)n;
    return b;
}

/* The first configuration of <model>.reference.txt: "N count", the energy,
 * then N lines "x y z fx fy fz". */
static int read_reference(const char *path, int *n_atoms, double **pos, double *energy)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[512];
    int N = 0, count_ = 0, ok = 0;
    if (fgets(line, sizeof line, f) && line[0] == '#' && fscanf(f, "%d %d %lf", &N, &count_, energy) == 3 && N > 0) {
        *pos = malloc((size_t)N * 3 * sizeof(double));
        ok = 1;
        for (int a = 0; a < N && ok; a++) {
            double fx, fy, fz;
            ok = fscanf(f, "%lf %lf %lf %lf %lf %lf", &(*pos)[3 * a], &(*pos)[3 * a + 1], &(*pos)[3 * a + 2], &fx, &fy,
                        &fz) == 6;
        }
    }
    fclose(f);
    *n_atoms = N;
    return ok;
}

/* The checks every injected failure must pass; returns 1 when allocation n
 * was reached (so the loop goes on), 0 when the call made fewer than n. */
static int injected(sf_status rc, const sf_error *err, const char *what, long n)
{
    if (count < n) return 0;
    CHECK(rc == SF_ERR_NOMEM, "%s: allocation %ld of %ld failed, status %d (%s), want SF_ERR_NOMEM", what, n, count, rc,
          err->message);
    CHECK(err->code == rc && strstr(err->message, "out of memory") != NULL,
          "%s: allocation %ld failed, message '%s' does not say 'out of memory'", what, n, err->message);
    return 1;
}

static void arm(long n)
{
    count = 0;
    fail_at = n;
    armed = 1;
}

static void check_model(const char *name)
{
    char path[1024];
    size_t size = 0;
    snprintf(path, sizeof path, "%s/%s.safetensors", SMOOTHFLOW_TEST_DATA_DIR, name);
    unsigned char *bytes = read_file(path, &size);
    CHECK(bytes != NULL, "cannot read %s", path);
    int N = 0;
    double *pos = NULL, e_ref = 0;
    snprintf(path, sizeof path, "%s/%s.reference.txt", SMOOTHFLOW_TEST_DATA_DIR, name);
    CHECK(read_reference(path, &N, &pos, &e_ref), "cannot read %s", path);
    if (!bytes || !pos) { free(bytes); free(pos); return; }

    sf_error err;
    sf_model *m = NULL;
    long n, loads = 0;
    for (n = 1; n <= MAX_ALLOCATIONS; n++) {
        memset(&err, 0, sizeof err);
        m = NULL;
        arm(n);
        sf_status rc = sf_model_load_bytes(bytes, size, &m, &err);
        armed = 0;
        if (!injected(rc, &err, name, n)) {
            CHECK(rc == SF_OK && m, "%s: load without an injected failure: status %d (%s)", name, rc, err.message);
            loads = count;
            break;
        }
        CHECK(m == NULL, "%s: a failed load returned a model", name);
        sf_model_free(m);
    }
    CHECK(n <= MAX_ALLOCATIONS, "%s: loading never stopped failing", name);
    CHECK(loads > 0, "%s: loading made no allocation, so nothing was injected", name);
    printf("%s: load makes %ld allocations, each failure reported\n", name, loads);
    if (!m) { free(bytes); free(pos); return; }
    CHECK(sf_model_num_atoms(m) == N, "%s: %d atoms, reference has %d", name, sf_model_num_atoms(m), N);

    /* The same from the file: its read buffer is one more allocation that may fail. */
    snprintf(path, sizeof path, "%s/%s.safetensors", SMOOTHFLOW_TEST_DATA_DIR, name);
    long file_loads = 0;
    for (n = 1; n <= MAX_ALLOCATIONS; n++) {
        memset(&err, 0, sizeof err);
        sf_model *mf = NULL;
        arm(n);
        sf_status rc = sf_model_load_file(path, &mf, &err);
        armed = 0;
        if (!injected(rc, &err, "sf_model_load_file", n)) {
            CHECK(rc == SF_OK && mf, "%s: load_file without an injected failure: status %d (%s)", name, rc,
                  err.message);
            file_loads = count;
            sf_model_free(mf);
            break;
        }
        CHECK(mf == NULL, "%s: a failed load_file returned a model", name);
    }
    CHECK(file_loads > loads, "%s: load_file made %ld allocations, load_bytes %ld: the file buffer is one more",
          name, file_loads, loads);

    sf_workspace *ws = NULL;
    for (n = 1; n <= MAX_ALLOCATIONS; n++) {
        memset(&err, 0, sizeof err);
        ws = NULL;
        arm(n);
        sf_status rc = sf_workspace_new(m, 2, &ws, &err);
        armed = 0;
        if (!injected(rc, &err, "sf_workspace_new", n)) {
            CHECK(rc == SF_OK && ws, "%s: workspace: status %d (%s)", name, rc, err.message);
            CHECK(count == 1, "%s: sf_workspace_new made %ld allocations, want exactly one", name, count);
            break;
        }
        CHECK(ws == NULL, "%s: a failed sf_workspace_new returned a workspace", name);
    }

    double *f = malloc((size_t)N * 3 * sizeof *f);
    double e = NAN;
    if (ws) {
        /* Evaluation allocates nothing: no failure can be injected. */
        memset(&err, 0, sizeof err);
        arm(1);
        sf_status rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
        armed = 0;
        CHECK(count == 0, "%s: sf_evaluate made %ld allocations, want none", name, count);
        CHECK(rc == SF_OK, "%s: sf_evaluate with the allocator failing: status %d (%s)", name, rc, err.message);
        CHECK(fabs(e - e_ref) <= 1e-7 * (1 + fabs(e_ref)), "%s: energy %.17g, reference %.17g", name, e, e_ref);
    }

    int D = sf_model_num_dims(m);
    double *u = malloc((size_t)D * sizeof *u);
    for (n = 1; n <= MAX_ALLOCATIONS; n++) {
        memset(&err, 0, sizeof err);
        for (int d = 0; d < D; d++) u[d] = -1;
        arm(n);
        sf_status rc = sf_internal_coordinates(m, pos, NULL, u, &err);
        armed = 0;
        if (!injected(rc, &err, "sf_internal_coordinates", n)) {
            CHECK(rc == SF_OK, "%s: internal coordinates: status %d (%s)", name, rc, err.message);
            for (int d = 0; d < D; d++)
                CHECK(u[d] >= 0 && u[d] <= 1, "%s: u[%d] = %g outside [0, 1]", name, d, u[d]);
            break;
        }
    }
    CHECK(n <= MAX_ALLOCATIONS, "%s: sf_internal_coordinates never stopped failing", name);

    /* The float32 weights: a failed switch leaves the model as it was (float64, same energy). */
    for (n = 1; n <= MAX_ALLOCATIONS; n++) {
        memset(&err, 0, sizeof err);
        arm(n);
        sf_status rc = sf_model_set_weight_precision(m, SF_WEIGHTS_FLOAT32, &err);
        armed = 0;
        if (!injected(rc, &err, "sf_model_set_weight_precision", n)) {
            CHECK(rc == SF_OK && sf_model_weight_precision(m) == SF_WEIGHTS_FLOAT32, "%s: float32: status %d (%s)",
                  name, rc, err.message);
            break;
        }
        CHECK(sf_model_weight_precision(m) == SF_WEIGHTS_FLOAT64, "%s: a failed switch changed the precision", name);
        if (ws) {
            double e2 = NAN;
            sf_evaluate(m, ws, 1, pos, NULL, &e2, NULL, NULL, NULL);
            CHECK(e2 == e, "%s: a failed switch changed the energy: %.17g vs %.17g", name, e2, e);
        }
    }
    CHECK(n <= MAX_ALLOCATIONS, "%s: sf_model_set_weight_precision never stopped failing", name);

    free(u);
    free(f);
    sf_workspace_free(ws);
    sf_model_free(m);
    free(bytes);
    free(pos);
}

int main(void)
{
    /* The wrappers must see the allocations: one injected failure of a
     * plain malloc proves the link option took effect. */
    void *(*volatile allocate)(size_t) = malloc; /* not elided by the compiler */
    arm(1);
    void *p = allocate(16);
    armed = 0;
    CHECK(p == NULL && count == 1, "the malloc wrapper is not linked in (-Wl,--wrap=malloc)");
    free(p);

    check_model("tiny");
    check_model("wall");
    check_model("von_mises"); /* the prior's torsion arrays */
    printf("%s\n", failures ? "FAILED" : "all injected allocation failures reported, no crash");
    return failures ? 1 : 0;
}
