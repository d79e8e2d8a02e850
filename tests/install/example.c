/*
 * example.c -- a plain C program that uses the installed libsmoothflow.
 *
 *     example <model.safetensors> <model.reference.txt>
 *
 * Loads the model, evaluates every configuration of the reference file in one
 * batch and checks the energies (1e-10 relative) and forces (1e-8 relative to
 * each atom's force, or absolute below 1 kJ/mol/nm) against PyTorch's values
 * stored there.  Exit status 0 only when all of them agree.
 *
 * The reference file (tests/data/make_fixtures.py): '#' lines are comments;
 * then "N B" (atoms, configurations); then per configuration a line with the
 * energy (kJ/mol) and N lines "x y z fx fy fz" (nm, kJ/mol/nm).
 */
#include <smoothflow.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every number of the file outside comment lines, in order. */
static double *read_numbers(const char *path, size_t *count) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "example: cannot open reference file '%s'\n", path);
        return NULL;
    }
    size_t n = 0, capacity = 256;
    double *numbers = malloc(capacity * sizeof *numbers);
    char line[4096];
    while (numbers != NULL && fgets(line, sizeof line, f) != NULL) {
        if (line[0] == '#')
            continue;
        char *p = line, *end;
        for (double v = strtod(p, &end); end != p; v = strtod(p, &end)) {
            if (n == capacity) {
                double *grown = realloc(numbers, 2 * capacity * sizeof *numbers);
                if (grown == NULL) {
                    free(numbers);
                    numbers = NULL;
                    break;
                }
                numbers = grown;
                capacity *= 2;
            }
            numbers[n++] = v;
            p = end;
        }
    }
    fclose(f);
    *count = n;
    return numbers;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <model.safetensors> <model.reference.txt>\n", argv[0]);
        return 2;
    }
    size_t count;
    double *ref = read_numbers(argv[2], &count);
    if (ref == NULL)
        return 1;
    int N = count >= 2 ? (int) ref[0] : 0, B = count >= 2 ? (int) ref[1] : 0;
    if (N <= 0 || B <= 0 || count != 2 + (size_t) B * (1 + 6 * (size_t) N)) {
        fprintf(stderr, "example: malformed reference file '%s' (%zu numbers)\n", argv[2], count);
        free(ref);
        return 1;
    }

    sf_model *model = NULL;
    sf_workspace *ws = NULL;
    sf_error err;
    if (sf_model_load_file(argv[1], &model, &err) != SF_OK) {
        fprintf(stderr, "example: %s\n", err.message);
        free(ref);
        return 1;
    }
    int failures = 0;
    if (sf_model_num_atoms(model) != N) {
        fprintf(stderr, "example: the model has %d atoms, the reference file %d\n",
                sf_model_num_atoms(model), N);
        failures++;
    }
    double *positions = malloc(sizeof(double) * 3 * N * B);
    double *forces = malloc(sizeof(double) * 3 * N * B);
    double *energies = malloc(sizeof(double) * B);
    if (failures == 0 && (positions == NULL || forces == NULL || energies == NULL)) {
        fprintf(stderr, "example: out of memory\n");
        failures++;
    }
    if (failures == 0 && sf_workspace_new(model, B, &ws, &err) != SF_OK) {
        fprintf(stderr, "example: %s\n", err.message);
        failures++;
    }
    if (failures == 0) {
        for (int b = 0; b < B; b++) {
            const double *c = ref + 2 + (size_t) b * (1 + 6 * N);
            for (int i = 0; i < N; i++)
                memcpy(positions + 3 * ((size_t) b * N + i), c + 1 + 6 * i, 3 * sizeof(double));
        }
        if (sf_evaluate(model, ws, B, positions, NULL, energies, forces, NULL, &err) != SF_OK) {
            fprintf(stderr, "example: %s\n", err.message);
            failures++;
        }
    }
    for (int b = 0; failures == 0 && b < B; b++) {
        const double *c = ref + 2 + (size_t) b * (1 + 6 * N);
        double e_ref = c[0];
        if (!(fabs(energies[b] - e_ref) <= 1e-10 * fabs(e_ref))) {
            fprintf(stderr, "example: configuration %d: energy %.17g kJ/mol, reference %.17g\n",
                    b, energies[b], e_ref);
            failures++;
        }
        for (int i = 0; i < N; i++) {
            const double *f = forces + 3 * ((size_t) b * N + i), *f_ref = c + 1 + 6 * i + 3;
            double diff = 0, norm = 0;
            for (int k = 0; k < 3; k++) {
                diff += (f[k] - f_ref[k]) * (f[k] - f_ref[k]);
                norm += f_ref[k] * f_ref[k];
            }
            if (!(sqrt(diff) <= 1e-8 * fmax(sqrt(norm), 1.0))) {
                fprintf(stderr, "example: configuration %d, atom %d: force (%.17g, %.17g, %.17g), "
                        "reference (%.17g, %.17g, %.17g)\n", b, i, f[0], f[1], f[2],
                        f_ref[0], f_ref[1], f_ref[2]);
                failures++;
            }
        }
        if (failures == 0)
            printf("configuration %d: energy %.12f kJ/mol (reference %.12f)\n", b, energies[b], e_ref);
    }
    if (failures == 0)
        printf("libsmoothflow %s: %d configurations of %d atoms match the reference\n",
               SF_VERSION_STRING, B, N);
    sf_workspace_free(ws);
    sf_model_free(model);
    free(positions);
    free(forces);
    free(energies);
    free(ref);
    return failures == 0 ? 0 : 1;
}
