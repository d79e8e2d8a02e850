/*
 * example_md.c -- velocity-Verlet MD of one molecule with a SmoothFlow model,
 * through the C API of the core alone (docs/engine-api.md): what an MD engine
 * written in C does to use the flow as its potential.
 *
 *     example_md MODEL START OUT [STEPS [DT]]
 *     example_md --version
 *
 * MODEL  a model file (models/alanine_dipeptide/smooth.safetensors)
 * START  the starting state (wrappers/data/ala2_start.txt): '#' lines are
 *        comments; then the number of atoms N; then N lines
 *        "mass x y z vx vy vz" (amu, nm, nm/ps), atoms in the model's order
 * OUT    written: one line per step "step time E_pot E_kin E_tot"
 *        (ps, kJ/mol), step 0 being the start
 * STEPS  number of steps (default 1000); DT the time step in ps (default 0.0005)
 *
 * At the end it prints the fluctuation ratio RMS(E_tot - <E_tot>) /
 * RMS(E_kin - <E_kin>) over steps 0..STEPS, the definition of the
 * energy-conservation study (studies/alanine_dipeptide/energy_conservation.py).
 * wrappers/fortran/example_md.f90 is the same program in Fortran, operation
 * for operation, so the two print the same numbers.  Exit status 0 on
 * success, 1 on any error (the message names what is wrong), 2 on bad usage.
 */
#include <smoothflow.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The starting state: N atoms, masses[N], positions and velocities N x 3. */
typedef struct start_state {
    int n;
    double *mass, *x, *v;
} start_state;

static void free_start(start_state *s) {
    free(s->mass);
    free(s->x);
    free(s->v);
}

/* Reads START; on failure prints a message naming the file and line. */
static int read_start(const char *path, start_state *s) {
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "example_md: cannot open start file '%s': %s\n", path, strerror(errno));
        return 0;
    }
    char line[1024];
    int lineno = 0, atom = 0, ok = 1;
    while (ok && atom < (s->n > 0 ? s->n : 1) && fgets(line, sizeof line, f) != NULL) {
        lineno++;
        if (line[0] == '#' || strspn(line, " \t\r\n") == strlen(line))
            continue;
        if (s->n == 0) {
            if (sscanf(line, "%d", &s->n) != 1 || s->n <= 0) {
                fprintf(stderr, "example_md: %s line %d: expected the number of atoms\n", path, lineno);
                ok = 0;
                break;
            }
            s->mass = malloc((size_t)s->n * sizeof *s->mass);
            s->x = malloc(3 * (size_t)s->n * sizeof *s->x);
            s->v = malloc(3 * (size_t)s->n * sizeof *s->v);
            if (s->mass == NULL || s->x == NULL || s->v == NULL) {
                fprintf(stderr, "example_md: out of memory for %d atoms\n", s->n);
                ok = 0;
            }
            continue;
        }
        double *x = s->x + 3 * atom, *v = s->v + 3 * atom;
        if (sscanf(line, "%lf %lf %lf %lf %lf %lf %lf", &s->mass[atom], &x[0], &x[1], &x[2], &v[0], &v[1],
                   &v[2]) != 7) {
            fprintf(stderr, "example_md: %s line %d: expected 'mass x y z vx vy vz' of atom %d\n", path, lineno,
                    atom);
            ok = 0;
        } else if (!(s->mass[atom] > 0)) {
            fprintf(stderr, "example_md: %s line %d: atom %d has mass %g; masses must be positive\n", path, lineno,
                    atom, s->mass[atom]);
            ok = 0;
        }
        atom++;
    }
    fclose(f);
    if (ok && (s->n == 0 || atom < s->n)) {
        fprintf(stderr, "example_md: %s ends after %d of %d atoms\n", path, atom, s->n);
        ok = 0;
    }
    if (!ok)
        free_start(s);
    return ok;
}

static double kinetic_energy(int n, const double *mass, const double *v) {
    double e = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 3; k++)
            e += 0.5 * mass[i] * v[3 * i + k] * v[3 * i + k];
    return e;
}

/* RMS of a - <a> (numpy's std with ddof 0): two passes, in index order. */
static double rms_deviation(long n, const double *a) {
    double mean = 0, sum = 0;
    for (long i = 0; i < n; i++)
        mean += a[i];
    mean /= (double)n;
    for (long i = 0; i < n; i++)
        sum += (a[i] - mean) * (a[i] - mean);
    return sqrt(sum / (double)n);
}

/* A library of another ABI than this program's header: same major.minor
 * while the major version is 0, same major from 1.0 on (docs/engine-api.md). */
static int library_compatible(void) {
    int lib = sf_version_number();
    return SF_VERSION_MAJOR == 0 ? lib / 100 == SF_VERSION_NUMBER / 100 : lib / 10000 == SF_VERSION_NUMBER / 10000;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("example_md: header %s, library %s\n", SF_VERSION_STRING, sf_version());
        return library_compatible() ? 0 : 1;
    }
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: %s MODEL START OUT [STEPS [DT_PS]]\n", argv[0]);
        return 2;
    }
    if (!library_compatible()) {
        fprintf(stderr, "example_md: libsmoothflow %s is not compatible with the header %s it was built with\n",
                sf_version(), SF_VERSION_STRING);
        return 1;
    }
    long steps = 1000;
    double dt = 0.0005;
    char *end;
    if (argc > 4 && ((steps = strtol(argv[4], &end, 10)) < 1 || steps > 100000000 || *end != '\0')) {
        fprintf(stderr, "example_md: STEPS must be an integer from 1 to 100000000, not '%s'\n", argv[4]);
        return 2;
    }
    if (argc > 5 && (!((dt = strtod(argv[5], &end)) > 0) || !isfinite(dt) || *end != '\0')) {
        fprintf(stderr, "example_md: DT must be a positive number of ps, not '%s'\n", argv[5]);
        return 2;
    }

    start_state s;
    if (!read_start(argv[2], &s))
        return 1;

    sf_error err;
    sf_model *model = NULL;
    sf_workspace *ws = NULL;
    FILE *out = NULL;
    double *f = NULL, *etot = NULL, *ekin = NULL;
    int status = 1;
    if (sf_model_load_file(argv[1], &model, &err) != SF_OK) {
        fprintf(stderr, "example_md: %s\n", err.message);
        goto done;
    }
    if (sf_model_num_atoms(model) != s.n) {
        fprintf(stderr, "example_md: the model '%s' has %d atoms, the start file '%s' %d\n", argv[1],
                sf_model_num_atoms(model), argv[2], s.n);
        goto done;
    }
    if (sf_workspace_new(model, 1, &ws, &err) != SF_OK) {
        fprintf(stderr, "example_md: %s\n", err.message);
        goto done;
    }
    f = malloc(3 * (size_t)s.n * sizeof *f);
    etot = malloc((size_t)(steps + 1) * sizeof *etot);
    ekin = malloc((size_t)(steps + 1) * sizeof *ekin);
    if (f == NULL || etot == NULL || ekin == NULL) {
        fprintf(stderr, "example_md: out of memory for %ld steps\n", steps);
        goto done;
    }
    if ((out = fopen(argv[3], "w")) == NULL) {
        fprintf(stderr, "example_md: cannot write '%s': %s\n", argv[3], strerror(errno));
        goto done;
    }
    fprintf(out, "# velocity Verlet, dt = %.17g ps, model %s, start %s\n", dt, argv[1], argv[2]);
    fprintf(out, "# step time(ps) E_pot E_kin E_tot (kJ/mol)\n");

    /* Velocity Verlet: half kick, drift, new forces, half kick. */
    double epot;
    for (long step = 0; step <= steps; step++) {
        if (step > 0) {
            for (int i = 0; i < 3 * s.n; i++) {
                s.v[i] += 0.5 * dt * f[i] / s.mass[i / 3];
                s.x[i] += dt * s.v[i];
            }
        }
        if (sf_evaluate(model, ws, 1, s.x, NULL, &epot, f, NULL, &err) != SF_OK) {
            fprintf(stderr, "example_md: step %ld: %s\n", step, err.message);
            goto done;
        }
        if (step > 0)
            for (int i = 0; i < 3 * s.n; i++)
                s.v[i] += 0.5 * dt * f[i] / s.mass[i / 3];
        ekin[step] = kinetic_energy(s.n, s.mass, s.v);
        etot[step] = epot + ekin[step];
        fprintf(out, "%ld %.17g %.17g %.17g %.17g\n", step, (double)step * dt, epot, ekin[step], etot[step]);
    }
    if (fclose(out) != 0) {
        out = NULL;
        fprintf(stderr, "example_md: error writing '%s'\n", argv[3]);
        goto done;
    }
    out = NULL;
    printf("example_md (C): %ld steps of %g ps; E_tot %.10g -> %.10g kJ/mol\n", steps, dt, etot[0], etot[steps]);
    printf("fluctuation ratio RMS(dE_tot)/RMS(dE_kin) = %.16e\n",
           rms_deviation(steps + 1, etot) / rms_deviation(steps + 1, ekin));
    status = 0;
done:
    if (out != NULL)
        fclose(out);
    free(f);
    free(etot);
    free(ekin);
    sf_workspace_free(ws);
    sf_model_free(model);
    free_start(&s);
    return status;
}
