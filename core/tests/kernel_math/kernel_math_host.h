/* kernel_math_host.h -- what the kernel-math test programs share on the host:
 * the inputs of the cases, the reference outputs (the cases of
 * kernel_math_cases.h compiled as C, in double, from the same headers as the
 * core), file reading and the comparison. */
#ifndef KERNEL_MATH_HOST_H
#define KERNEL_MATH_HOST_H

#include "host/sf_math.h"
#include "kernel_math_cases.h"
#include "read_file.h"

#include <stdio.h>
#include <stdlib.h>

/* Deterministic uniform numbers in [0, 1). */
static double kmt_uniform(unsigned long long *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*state >> 11) * (1.0 / 9007199254740992.0);
}

static double kmt_between(unsigned long long *state, double lo, double hi) { return lo + (hi - lo) * kmt_uniform(state); }

/* Well-conditioned inputs of n cases: raw parameters of moderate size,
 * points inside (0, 1) away from its ends, a bent chain of four atoms
 * (bonds ~0.15 nm, no angle near 0 or pi), a triclinic box in OpenMM's
 * reduced form, and clamp points over all of [0, 1] (the wall zones
 * included). */
static void kmt_inputs(int n, double *in)
{
    unsigned long long st = 12345;
    for (int i = 0; i < n; i++) {
        double *c = in + (size_t)i * SFMT_NIN;
        for (int j = 0; j < SFMT_PS; j++) c[SFMT_IN_SMOOTH + j] = kmt_between(&st, -1.5, 1.5);
        for (int j = 0; j < SFMT_PR; j++) c[SFMT_IN_SPLINE + j] = kmt_between(&st, -1.5, 1.5);
        c[SFMT_IN_AFFINE] = kmt_between(&st, -1.5, 1.5);
        c[SFMT_IN_AFFINE + 1] = kmt_between(&st, -1.5, 1.5);
        c[SFMT_IN_X] = kmt_between(&st, 0.05, 0.95);
        c[SFMT_IN_X + 1] = kmt_between(&st, 0.05, 0.95);
        c[SFMT_IN_X + 2] = kmt_between(&st, 0.5, 1.5);
        c[SFMT_IN_X + 3] = kmt_between(&st, 0.5, 1.5);
        const double chain[12] = {0, 0, 0, 0.15, 0, 0, 0.2, 0.14, 0, 0.35, 0.16, 0.1};
        const double box[9] = {1.2, 0, 0, 0.3, 1.1, 0, -0.2, 0.25, 1.3};
        for (int j = 0; j < 12; j++) c[SFMT_IN_ATOMS + j] = chain[j] + kmt_between(&st, -0.02, 0.02);
        /* Atoms 1 and 3 in other images: the minimum image brings them back. */
        for (int j = 0; j < 3; j++) {
            c[SFMT_IN_ATOMS + 3 + j] += box[3 + j];
            c[SFMT_IN_ATOMS + 9 + j] -= box[j] + box[6 + j];
        }
        for (int j = 0; j < 9; j++) c[SFMT_IN_BOX + j] = box[j];
        c[SFMT_IN_U] = kmt_between(&st, 0.001, 0.999);
        c[SFMT_IN_Z] = kmt_between(&st, -4, 4);
    }
}

/* The reference outputs; fails when a case does not write SFMT_NOUT values. */
static int kmt_reference(int n, const double *in, double *out)
{
    for (int i = 0; i < n; i++) {
        const int written = sfmt_case(i, in, out);
        if (written != SFMT_NOUT) {
            fprintf(stderr, "FAIL: a case writes %d outputs, SFMT_NOUT is %d\n", written, SFMT_NOUT);
            return 0;
        }
    }
    return 1;
}


static double kmt_abs(double v) { return v < 0 ? -v : v; }

/* The largest normwise relative difference over all outputs, with where it
 * is: output j of case i differs by |got - want| / max(|want|, |got|, S_j),
 * S_j the largest |want| of output j over the cases.  An output that is 0 in
 * exact arithmetic (the softmax gradient of a saturated mixture) comes out
 * as rounding noise on both sides, so a difference is measured against the
 * output's scale, not its own value.  NaN counts as the worst. */
static double kmt_compare(int n, const double *want, const double *got, int *worst)
{
    double max_rel = 0;
    *worst = -1;
    for (int j = 0; j < SFMT_NOUT; j++) {
        double scale = 0;
        for (int i = 0; i < n; i++)
            if (kmt_abs(want[i * SFMT_NOUT + j]) > scale) scale = kmt_abs(want[i * SFMT_NOUT + j]);
        for (int i = 0; i < n; i++) {
            const int k = i * SFMT_NOUT + j;
            double s = scale;
            if (kmt_abs(want[k]) > s) s = kmt_abs(want[k]);
            if (kmt_abs(got[k]) > s) s = kmt_abs(got[k]);
            const double rel = s > 0 ? kmt_abs(got[k] - want[k]) / s : (got[k] == want[k] ? 0 : 1e300);
            if (!(rel <= max_rel)) {
                max_rel = rel == rel ? rel : 1e300;
                *worst = k;
            }
        }
    }
    return max_rel;
}

#endif /* KERNEL_MATH_HOST_H */
