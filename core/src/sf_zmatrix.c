/* sf_zmatrix.c -- a molecule's Z-matrix internal coordinates and their
 * Cartesian derivatives (Wilson B-matrix rows), with minimum-image
 * displacements.  The geometry is math/sf_math_geometry.h, shared with the
 * GPU kernels; here are the loop over the Z-matrix and the messages. */
#include "sf_internal.h"

static sf_status bond(const double *pos, const double *box, int a, int j, double *q, sf_icgrad *g, int mol,
                      sf_error *err)
{
    if (sfm_bond(&pos[3 * a], &pos[3 * j], box != NULL, box, q, g->d))
        return sfE_locate(err, sfE_set(err, SF_ERR_GEOMETRY, "molecule %d: atoms %d and %d coincide (zero bond length)",
                                       mol, a, j), mol, a, j, -1, -1);
    g->n = 2;
    g->atom[0] = a;
    g->atom[1] = j;
    return SF_OK;
}

static sf_status angle(const double *pos, const double *box, int a, int j, int k, double *q, sf_icgrad *g, int mol,
                       sf_error *err)
{
    if (sfm_angle(&pos[3 * a], &pos[3 * j], &pos[3 * k], box != NULL, box, q, g->d))
        return sfE_locate(err, sfE_set(err, SF_ERR_GEOMETRY,
                                       "molecule %d: atoms %d-%d-%d are collinear (angle 0 or 180 degrees)", mol, a, j, k),
                          mol, a, j, k, -1);
    g->n = 3;
    g->atom[0] = a;
    g->atom[1] = j;
    g->atom[2] = k;
    return SF_OK;
}

static sf_status torsion(const double *pos, const double *box, const int row[4], double *q, sf_icgrad *g, int mol,
                         sf_error *err)
{
    const int a = row[0], j = row[1], k = row[2], l = row[3];
    if (sfm_torsion(&pos[3 * a], &pos[3 * j], &pos[3 * k], &pos[3 * l], box != NULL, box, q, g->d))
        return sfE_locate(err, sfE_set(err, SF_ERR_GEOMETRY,
                                       "molecule %d: torsion %d-%d-%d-%d is undefined (three atoms collinear)", mol, a,
                                       j, k, l),
                          mol, a, j, k, l);
    g->n = 4;
    g->atom[0] = a;
    g->atom[1] = j;
    g->atom[2] = k;
    g->atom[3] = l;
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
