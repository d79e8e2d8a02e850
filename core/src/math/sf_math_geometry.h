/* sf_math_geometry.h -- Z-matrix internal coordinates of a few atoms and
 * their Cartesian derivatives (Wilson B-matrix rows), with minimum-image
 * displacements in OpenMM's reduced triclinic box.
 *
 * Points are 3 reals, the box 9 (row v is box vector v), all in the calling
 * thread's private memory.  Each coordinate function returns 0, or 1 when
 * the geometry is degenerate (coincident atoms, collinear angle or torsion),
 * and writes its derivative rows d q / d r_atom, 3 reals per atom in the
 * order of its arguments, to g. */
#ifndef SF_MATH_GEOMETRY_H
#define SF_MATH_GEOMETRY_H

DEVICE real sfm_dot3(const real *a, const real *b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

DEVICE void sfm_cross3(const real *a, const real *b, real *out)
{
    out[0] = a[1] * b[2] - a[2] * b[1];
    out[1] = a[2] * b[0] - a[0] * b[2];
    out[2] = a[0] * b[1] - a[1] * b[0];
}

/* b - a, to its minimum image when periodic: box vector c, then b, then a. */
DEVICE void sfm_displacement(const real *a, const real *b, int periodic, const real *box, real *out)
{
    for (int c = 0; c < 3; c++) out[c] = b[c] - a[c];
    if (!periodic) return;
    for (int v = 2; v >= 0; v--) {
        const real shift = floor(out[v] / box[3 * v + v] + SFM_C(0.5));
        for (int c = 0; c < 3; c++) out[c] -= shift * box[3 * v + c];
    }
}

/* |r_a - r_j|; rows for a, j. */
DEVICE int sfm_bond(const real *ra, const real *rj, int periodic, const real *box, real *q, real *g)
{
    real d[3];
    sfm_displacement(rj, ra, periodic, box, d); /* r_a - r_j */
    const real b = sqrt(sfm_dot3(d, d));
    if (!(b > 0)) return 1;
    *q = b;
    for (int c = 0; c < 3; c++) {
        g[c] = d[c] / b;
        g[3 + c] = -d[c] / b;
    }
    return 0;
}

/* The angle a-j-k in [0, pi]; rows for a, j, k. */
DEVICE int sfm_angle(const real *ra, const real *rj, const real *rk, int periodic, const real *box, real *q, real *g)
{
    real u[3], v[3], n[3], un[3], nv[3];
    sfm_displacement(rj, ra, periodic, box, u); /* r_a - r_j */
    sfm_displacement(rj, rk, periodic, box, v); /* r_k - r_j */
    sfm_cross3(u, v, n);
    const real uu = sfm_dot3(u, u), vv = sfm_dot3(v, v), nn = sfm_dot3(n, n);
    if (!(nn > SFM_COLLINEAR_SIN2 * uu * vv)) return 1;
    const real nlen = sqrt(nn);
    *q = atan2(nlen, sfm_dot3(u, v));
    sfm_cross3(u, n, un);
    sfm_cross3(n, v, nv);
    for (int c = 0; c < 3; c++) {
        g[c] = un[c] / (uu * nlen);
        g[6 + c] = nv[c] / (vv * nlen);
        g[3 + c] = -g[c] - g[6 + c];
    }
    return 0;
}

/* The torsion a-j-k-l in (-pi, pi], IUPAC sign; rows for a, j, k, l. */
DEVICE int sfm_torsion(const real *ra, const real *rj, const real *rk, const real *rl, int periodic,
                       const real *box, real *q, real *g)
{
    real b1[3], b2[3], b3[3], m[3], n[3];
    sfm_displacement(ra, rj, periodic, box, b1); /* r_j - r_a */
    sfm_displacement(rj, rk, periodic, box, b2); /* r_k - r_j */
    sfm_displacement(rk, rl, periodic, box, b3); /* r_l - r_k */
    sfm_cross3(b1, b2, m);
    sfm_cross3(b2, b3, n);
    const real mm = sfm_dot3(m, m), nn = sfm_dot3(n, n), g2 = sfm_dot3(b2, b2);
    if (!(mm > SFM_COLLINEAR_SIN2 * sfm_dot3(b1, b1) * g2) || !(nn > SFM_COLLINEAR_SIN2 * sfm_dot3(b3, b3) * g2))
        return 1;
    const real glen = sqrt(g2);
    /* atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3)). */
    *q = atan2(glen * sfm_dot3(b1, n), sfm_dot3(m, n));
    /* Blondel-Karplus: with F = r_a - r_j = -b1, G = r_j - r_k = -b2,
     * H = r_l - r_k = b3, A = F x G = m, B = H x G = n. */
    const real fg = sfm_dot3(b1, b2);  /* F.G */
    const real hg = -sfm_dot3(b3, b2); /* H.G */
    for (int c = 0; c < 3; c++) {
        const real da = -glen / mm * m[c];
        const real dl = glen / nn * n[c];
        const real ta = fg / (mm * glen) * m[c];
        const real tb = hg / (nn * glen) * n[c];
        g[c] = da;
        g[9 + c] = dl;
        g[3 + c] = -da + ta - tb;
        g[6 + c] = -ta + tb - dl;
    }
    return 0;
}

#endif /* SF_MATH_GEOMETRY_H */
