/* test_threads.c -- concurrent evaluation of one model: four threads, each
 * with its own workspace, evaluate the same configurations as a serial pass
 * and must reproduce its energies and forces bit for bit.  One sf_model is
 * shared read-only by all threads (the documented contract of smoothflow.h);
 * built with -fsanitize=thread (core/tests/sanitize) it shows any data race
 * in the core, and as a plain program any result that depends on timing. */
#include "model_builder.h"
#include "smoothflow.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_THREADS 4
#define N_CONFIGS 24
#define N_ROUNDS 3

typedef struct job {
    const sf_model *model;
    const double *positions; /* N_CONFIGS x n x 3 */
    int n_atoms, first;      /* each thread starts at another configuration */
    double energies[N_CONFIGS];
    double *forces;          /* N_CONFIGS x n x 3 */
    int failed;
    char message[SF_ERROR_MESSAGE_SIZE];
} job;

/* Evaluates every configuration N_ROUNDS times, molecule by molecule, keeping
 * the last result of each; fails on any error or any result that changes
 * between rounds. */
static void *evaluate_all(void *arg)
{
    job *j = arg;
    sf_workspace *ws = NULL;
    sf_error err;
    size_t per = 3 * (size_t)j->n_atoms;
    if (sf_workspace_new(j->model, 1, &ws, &err) != SF_OK) {
        j->failed = 1;
        snprintf(j->message, sizeof j->message, "workspace: %s", err.message);
        return NULL;
    }
    double *f = malloc(sizeof(double) * per);
    for (int round = 0; round < N_ROUNDS && !j->failed && f; round++) {
        for (int k = 0; k < N_CONFIGS; k++) {
            int c = (j->first + k) % N_CONFIGS;
            double e;
            if (sf_evaluate(j->model, ws, 1, j->positions + c * per, NULL, &e, f, NULL, &err) != SF_OK) {
                j->failed = 1;
                snprintf(j->message, sizeof j->message, "configuration %d: %s", c, err.message);
                break;
            }
            if (round > 0 && (memcmp(&e, &j->energies[c], sizeof e) != 0 ||
                              memcmp(f, j->forces + c * per, sizeof(double) * per) != 0)) {
                j->failed = 1;
                snprintf(j->message, sizeof j->message, "configuration %d changed between rounds", c);
                break;
            }
            j->energies[c] = e;
            memcpy(j->forces + c * per, f, sizeof(double) * per);
        }
    }
    if (!f) {
        j->failed = 1;
        snprintf(j->message, sizeof j->message, "out of memory");
    }
    free(f);
    sf_workspace_free(ws);
    return NULL;
}

int main(void)
{
    /* Every transform kind, both layer directions, the wall policy. */
    mb_spec spec = {22, 6, 4, 2, {24, 24, 0, 0}, "silu", 1, 0.6, "wall", 0, 1234u, "mixed"};
    size_t size;
    unsigned char *bytes = mb_build(&spec, NULL, NULL, &size);
    sf_model *model = NULL;
    sf_error err;
    if (!bytes || sf_model_load_bytes(bytes, size, &model, &err) != SF_OK) {
        printf("FAIL: cannot load the test model: %s\n", bytes ? err.message : "out of memory");
        return 1;
    }
    free(bytes);
    int n = sf_model_num_atoms(model);
    size_t per = 3 * (size_t)n;
    double *positions = malloc(sizeof(double) * per * N_CONFIGS);
    for (int c = 0; c < N_CONFIGS; c++) mb_positions(&spec, 100u + (unsigned)c, positions + c * per);

    /* The serial reference. */
    job serial = {model, positions, n, 0, {0}, malloc(sizeof(double) * per * N_CONFIGS), 0, ""};
    evaluate_all(&serial);
    if (serial.failed) {
        printf("FAIL: serial evaluation: %s\n", serial.message);
        return 1;
    }

    job jobs[N_THREADS];
    pthread_t threads[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        jobs[t] = serial;
        jobs[t].first = t * N_CONFIGS / N_THREADS;
        jobs[t].forces = malloc(sizeof(double) * per * N_CONFIGS);
        if (pthread_create(&threads[t], NULL, evaluate_all, &jobs[t]) != 0) {
            printf("FAIL: cannot start thread %d\n", t);
            return 1;
        }
    }
    int failures = 0;
    for (int t = 0; t < N_THREADS; t++) {
        pthread_join(threads[t], NULL);
        if (jobs[t].failed) {
            printf("FAIL: thread %d: %s\n", t, jobs[t].message);
            failures++;
            continue;
        }
        for (int c = 0; c < N_CONFIGS; c++) {
            if (memcmp(&jobs[t].energies[c], &serial.energies[c], sizeof(double)) != 0 ||
                memcmp(jobs[t].forces + c * per, serial.forces + c * per, sizeof(double) * per) != 0) {
                printf("FAIL: thread %d, configuration %d: energy %.17g, serial %.17g (or forces differ)\n",
                       t, c, jobs[t].energies[c], serial.energies[c]);
                failures++;
            }
        }
        free(jobs[t].forces);
    }
    printf("%d threads x %d configurations x %d rounds: %s\n", N_THREADS, N_CONFIGS, N_ROUNDS,
           failures ? "results differ from the serial evaluation" : "bit-identical to the serial evaluation");
    free(serial.forces);
    free(positions);
    sf_model_free(model);
    return failures ? 1 : 0;
}
