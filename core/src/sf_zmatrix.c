/* sf_zmatrix.c -- Z-matrix internal coordinates and their Cartesian
 * derivatives (Wilson B-matrix rows), with minimum-image displacements. */
#include "sf_internal.h"

#include <math.h>

/* sin^2 below this (relative) counts as collinear: the angle's and torsion's
 * derivatives are then undefined. */
#define SF_COLLINEAR_SIN2 1e-24

static double dot(const double a[3], const double b[3]) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

static void cross(const double a[3], const double b[3], double out[3])
{
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

void sfZ_displacement(const double *a, const double *b, const double *box, double out[3])
{
    for (int c = 0; c < 3; c++) out[c] = b[c] - a[c];
    if (!box) return;
    /* OpenMM's reduced triclinic box: c, then b, then a. */
    for (int v = 2; v >= 0; v--) {
        double shift = floor(out[v] / box[3 * v + v] + 0.5);
        for (int c = 0; c < 3; c++) out[c] -= shift * box[3 * v + c];
    }
}

static sf_status bond(const double *pos, const double *box, int a, int j, double *q, sf_icgrad *g, int mol,
                      sf_error *err)
{
    double d[3];
    sfZ_displacement(&pos[3 * j], &pos[3 * a], box, d); /* r_a - r_j */
    double b = sqrt(dot(d, d));
    if (!(b > 0))
        return sfE_locate(err, sfE_set(err, SF_ERR_GEOMETRY, "molecule %d: atoms %d and %d coincide (zero bond length)",
                                       mol, a, j), mol, a, j, -1, -1);
    *q = b;
    g->n = 2;
    g->atom[0] = a;
    g->atom[1] = j;
    for (int c = 0; c < 3; c++) {
        g->d[0][c] = d[c] / b;
        g->d[1][c] = -d[c] / b;
    }
    return SF_OK;
}

static sf_status angle(const double *pos, const double *box, int a, int j, int k, double *q, sf_icgrad *g, int mol,
                       sf_error *err)
{
    double u[3], v[3], n[3], un[3], nv[3];
    sfZ_displacement(&pos[3 * j], &pos[3 * a], box, u); /* r_a - r_j */
    sfZ_displacement(&pos[3 * j], &pos[3 * k], box, v); /* r_k - r_j */
    cross(u, v, n);
    double uu = dot(u, u), vv = dot(v, v), nn = dot(n, n);
    if (!(nn > SF_COLLINEAR_SIN2 * uu * vv))
        return sfE_locate(err, sfE_set(err, SF_ERR_GEOMETRY,
                                       "molecule %d: atoms %d-%d-%d are collinear (angle 0 or 180 degrees)", mol, a, j, k),
                          mol, a, j, k, -1);
    double nlen = sqrt(nn);
    *q = atan2(nlen, dot(u, v));
    cross(u, n, un);
    cross(n, v, nv);
    g->n = 3;
    g->atom[0] = a;
    g->atom[1] = j;
    g->atom[2] = k;
    for (int c = 0; c < 3; c++) {
        g->d[0][c] = un[c] / (uu * nlen);
        g->d[2][c] = nv[c] / (vv * nlen);
        g->d[1][c] = -g->d[0][c] - g->d[2][c];
    }
    return SF_OK;
}

static sf_status torsion(const double *pos, const double *box, const int row[4], double *q, sf_icgrad *g, int mol,
                         sf_error *err)
{
    int a = row[0], j = row[1], k = row[2], l = row[3];
    double b1[3], b2[3], b3[3], m[3], n[3], mn[3];
    sfZ_displacement(&pos[3 * a], &pos[3 * j], box, b1); /* r_j - r_a */
    sfZ_displacement(&pos[3 * j], &pos[3 * k], box, b2); /* r_k - r_j */
    sfZ_displacement(&pos[3 * k], &pos[3 * l], box, b3); /* r_l - r_k */
    cross(b1, b2, m);
    cross(b2, b3, n);
    double mm = dot(m, m), nn = dot(n, n), g2 = dot(b2, b2);
    if (!(mm > SF_COLLINEAR_SIN2 * dot(b1, b1) * g2) || !(nn > SF_COLLINEAR_SIN2 * dot(b3, b3) * g2))
        return sfE_locate(err, sfE_set(err, SF_ERR_GEOMETRY,
                                       "molecule %d: torsion %d-%d-%d-%d is undefined (three atoms collinear)", mol, a,
                                       j, k, l),
                          mol, a, j, k, l);
    double glen = sqrt(g2);
    cross(m, n, mn);
    /* IUPAC sign: atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3)). */
    *q = atan2(glen * dot(b1, n), dot(m, n));
    /* Blondel-Karplus: with F = r_a - r_j = -b1, G = r_j - r_k = -b2,
     * H = r_l - r_k = b3, A = F x G = m, B = H x G = n. */
    double fg = dot(b1, b2);  /* F.G */
    double hg = -dot(b3, b2);        /* H.G = -b3.b2 */
    g->n = 4;
    g->atom[0] = a;
    g->atom[1] = j;
    g->atom[2] = k;
    g->atom[3] = l;
    for (int c = 0; c < 3; c++) {
        double da = -glen / mm * m[c];
        double dl = glen / nn * n[c];
        double ta = fg / (mm * glen) * m[c];
        double tb = hg / (nn * glen) * n[c];
        g->d[0][c] = da;
        g->d[3][c] = dl;
        g->d[1][c] = -da + ta - tb;
        g->d[2][c] = -ta + tb - dl;
    }
    return SF_OK;
}

sf_status sfZ_compute(const sf_model *m, const double *pos, const double *box, double *q, sf_icgrad *grad, int mol,
                      sf_error *err)
{
    const int N = m->N;
    sf_status rc = SF_OK;
    for (int r = 1; rc == SF_OK && r < N; r++)
        rc = bond(pos, box, m->zmatrix[r][0], m->zmatrix[r][1], &q[r - 1], &grad[r - 1], mol, err);
    for (int r = 2; rc == SF_OK && r < N; r++) {
        int d = N - 1 + r - 2;
        rc = angle(pos, box, m->zmatrix[r][0], m->zmatrix[r][1], m->zmatrix[r][2], &q[d], &grad[d], mol, err);
    }
    for (int r = 3; rc == SF_OK && r < N; r++) {
        int d = 2 * N - 3 + r - 3;
        rc = torsion(pos, box, m->zmatrix[r], &q[d], &grad[d], mol, err);
    }
    return rc;
}
