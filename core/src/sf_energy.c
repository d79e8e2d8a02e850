/* sf_energy.c -- the potential of a flow and its exact forces:
 * positions -> internal coordinates -> unit cube (support policy) -> flow
 * log density, plus the normalization and Jacobian terms; forces by the
 * reverse pass and the Wilson B-matrix transpose. */
#include "sf_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Normalization of dim d: u = (q - offset) / scale. */
static void dim_scale(const sf_model *m, int d, double *offset, double *scale)
{
    const int kind = sfm_dim_kind(d, m->N);
    sfm_dim_scale(kind, kind == SFM_BOND ? m->bond_lo[d] : 0, kind == SFM_BOND ? m->bond_hi[d] : 0, offset, scale);
}

/* u of dimension d from its coordinate q (the torsion tie: sfm_normalize). */
static double normalized(const sf_model *m, int d, double q)
{
    double offset, scale;
    dim_scale(m, d, &offset, &scale);
    return sfm_normalize(q, offset, scale, sfM_is_circular(m, d));
}

static int check_finite(const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

static sf_status support_error(const sf_model *m, int mol, int d, double q, sf_error *err)
{
    /* Only bonds can leave [0, 1]: angles and torsions are bounded. */
    int r = d + 1;
    sfE_set(err, SF_ERR_SUPPORT,
            "molecule %d: bond %d (atoms %d-%d) is %.6g nm, outside the flow's support [%.6g, %.6g] nm", mol, d,
            m->zmatrix[r][0], m->zmatrix[r][1], q, m->bond_lo[d], m->bond_hi[d]);
    return sfE_locate(err, SF_ERR_SUPPORT, mol, m->zmatrix[r][0], m->zmatrix[r][1], -1, -1);
}

/* "bond 4-3", "angle 2-1-0" or "torsion 3-2-1-0": the coordinate of dimension
 * d by its model atoms (from its Wilson B row), into buf. */
static const char *coordinate_name(const sf_model *m, int d, const sf_icgrad *g, char *buf, size_t size)
{
    static const char *const kinds[] = {"bond", "angle", "torsion"};
    int n = snprintf(buf, size, "%s %d", kinds[sfm_dim_kind(d, m->N)], g->atom[0]);
    for (int k = 1; k < g->n; k++) n += snprintf(buf + n, size - (size_t)n, "-%d", g->atom[k]);
    return buf;
}

/* An evaluation error at the atoms of one coordinate. */
static sf_status locate_coordinate(sf_error *err, int mol, const sf_icgrad *g)
{
    int at[4];
    for (int k = 0; k < 4; k++) at[k] = k < g->n ? g->atom[k] : -1;
    return sfE_locate(err, SF_ERR_NUMERIC, mol, at[0], at[1], at[2], at[3]);
}

/* A coordinate whose normalized value or wall energy is not finite: finite
 * positions far enough outside the support (a bond of 1e152 nm) overflow
 * them, and the flow must never see a NaN or an infinity. */
static sf_status coordinate_error(const sf_model *m, int mol, int d, const sf_icgrad *g, double q, double v,
                                  double wall, sf_error *err)
{
    static const char *const units[] = {"nm", "rad", "rad"};
    const char *unit = units[sfm_dim_kind(d, m->N)];
    char name[64];
    double offset, scale;
    dim_scale(m, d, &offset, &scale);
    coordinate_name(m, d, g, name, sizeof name);
    if (!isfinite(v))
        sfE_set(err, SF_ERR_NUMERIC,
                "molecule %d: dimension %d (%s) is %.6g %s, whose normalized value (q - %.6g) / %.6g is not finite "
                "(%g)", mol, d, name, q, unit, offset, scale, v);
    else
        sfE_set(err, SF_ERR_NUMERIC,
                "molecule %d: dimension %d (%s) is %.6g %s, so far outside the flow's support [%.6g, %.6g] that its "
                "wall energy (wall_constant %g kJ/mol) is not finite (%g)", mol, d, name, q, unit, offset,
                offset + scale, m->wall_constant, wall);
    return locate_coordinate(err, mol, g);
}

/* log J of dimension d's coordinate q and d log J / dq (0 for torsions). */
static double log_jacobian_term(const sf_model *m, int d, double q, double *derivative)
{
    return sfm_log_jacobian(sfm_dim_kind(d, m->N), q, derivative);
}

/* The wall's edge force of interval dim d on u's side (0 without edge forces). */
static double edge_force(const sf_model *m, int d, double u)
{
    return m->edge_lower ? sfm_wall_edge_force(u, m->edge_lower[d], m->edge_upper[d]) : 0;
}

/* The wall's margin of interval dim d: bonds (d < N - 1) take margin, angles
 * angle_margin (their zone starts where the Z-matrix's torsion derivatives,
 * ~1/sin theta, are still mild: docs/model-format.md 5.2). */
static double wall_margin(const sf_model *m, int d)
{
    return d < m->N - 1 ? m->margin : m->angle_margin;
}

/* Internal coordinates of molecule b into ws (q raw, u as the flow sees it),
 * log J, the wall energy and the clamp slopes.  Under the wall policy the whole
 * -kT log p_X, Jacobian included, is evaluated at the clamped point: log J
 * diverges at collinear angles and zero bonds, and a flow's density does
 * not vanish there, so the unclamped energy would have no lower bound. */
static sf_status prepare_molecule(const sf_model *m, sf_workspace *ws, int b, const double *pos, const double *box,
                                  double *log_jac, double *wall_energy, int *wall_dims, double *slope, sf_error *err)
{
    const int D = m->D;
    double *q = ws->q + (size_t)b * D, *u = ws->u + (size_t)b * D;
    const sf_icgrad *g = ws->icgrad + (size_t)b * D;
    sf_status rc = sfZ_compute(m, pos, box, q, ws->icgrad + (size_t)b * D, b, err);
    if (rc != SF_OK) return rc;
    *wall_energy = 0;
    *log_jac = 0;
    for (int d = 0; d < D; d++) {
        double offset, scale, unused;
        dim_scale(m, d, &offset, &scale);
        double v = normalized(m, d, q[d]);
        /* The clamp would pass a NaN on to the flow. */
        if (!isfinite(v)) return coordinate_error(m, b, d, &g[d], q[d], v, 0, err);
        slope[d] = 1;
        if (d < 2 * m->N - 3) {
            if (m->policy == SF_SUPPORT_WALL) {
                double c = sfm_smooth_clamp(v, wall_margin(m, d), &slope[d]);
                if (c != v) {
                    (*wall_dims)++;
                    const double w = sfm_wall_energy(v, c, m->wall_constant, edge_force(m, d, v));
                    if (!isfinite(w)) return coordinate_error(m, b, d, &g[d], q[d], v, w, err);
                    *wall_energy += w;
                }
                v = c;
            } else if (v < 0 || v > 1) {
                return support_error(m, b, d, q[d], err);
            }
        }
        u[d] = v;
        *log_jac += log_jacobian_term(m, d, offset + scale * v, &unused);
    }
    return SF_OK;
}

/* dE/dq for molecule b (into ws->gq) given dE_flow/du (gu) and the clamp
 * slopes. */
static void coordinate_gradient(const sf_model *m, sf_workspace *ws, int b, const double *gu, const double *slope)
{
    const int D = m->D;
    const double *q = ws->q + (size_t)b * D;
    double *gq = ws->gq + (size_t)b * D;
    for (int d = 0; d < D; d++) {
        double offset, scale, dlogj, v = 0, c = 0, s = 1;
        dim_scale(m, d, &offset, &scale);
        const int walled = m->policy == SF_SUPPORT_WALL && d < 2 * m->N - 3;
        if (walled) {
            v = (q[d] - offset) / scale;
            c = sfm_smooth_clamp(v, wall_margin(m, d), &s);
        }
        /* E contains +kT log J, evaluated where the flow is; the clamp's
         * slope s equals slope[d] (both from the same v). */
        log_jacobian_term(m, d, walled ? offset + scale * c : q[d], &dlogj);
        const double wall = walled ? sfm_wall_gradient(v, c, slope[d], m->wall_constant, edge_force(m, d, v)) : 0;
        gq[d] = sfm_coordinate_gradient(gu[d], m->kT, dlogj, scale, slope[d], wall);
    }
}

/* Molecule b's energy is not finite although each wall term and every
 * layer's output were: their sum overflowed (two walled bonds, each with a
 * wall energy near the largest double). */
static sf_status energy_error(const sf_model *m, int b, double energy, double base, double logp, sf_error *err)
{
    sfE_set(err, SF_ERR_NUMERIC,
            "molecule %d: the energy is not finite (%g kJ/mol): kT (sum log scale + log J) + U0 + the wall energy is "
            "%g kJ/mol and -kT log p_U is %g kJ/mol", b, energy, base, -m->kT * logp);
    return sfE_locate(err, SF_ERR_NUMERIC, b, -1, -1, -1, -1);
}

/* The force on model atom a of molecule b is not finite.  It sums, over the
 * coordinates of a, dE/dq times dq/dx_a: name the first such coordinate whose
 * values are not finite, at the first stage that is not, in the order they
 * were computed (the flow's reverse pass dE_flow/du, the chain rule to dE/dq,
 * the Wilson B row dq/dx); if every one is finite, the sum overflowed. */
static sf_status force_error(const sf_model *m, sf_workspace *ws, int b, const double *gu, int a, const double *f,
                             sf_error *err)
{
    const int D = m->D;
    const double *gq = ws->gq + (size_t)b * D;
    const sf_icgrad *ig = ws->icgrad + (size_t)b * D;
    for (int d = 0; d < D; d++) {
        const sf_icgrad *g = &ig[d];
        int involved = 0, row = -1;
        for (int k = 0; k < g->n; k++) involved |= g->atom[k] == a;
        for (int k = 0; k < 3 * g->n && row < 0; k++)
            if (!isfinite(g->d[k])) row = k;
        const char *what = !isfinite(gu[d])  ? "the flow's reverse pass gives dE/du ="
                           : !isfinite(gq[d]) ? "the chain rule through the Jacobian, wall and normalization "
                                                "gives dE/dq ="
                           : row >= 0         ? "its derivative with respect to its atoms' positions (which grows as "
                                                "1 / distance) overflows: dq/dx ="
                                              : NULL;
        if (!involved || !what) continue;
        char name[64];
        sfE_set(err, SF_ERR_NUMERIC,
                "molecule %d: the force on model atom %d is not finite: for dimension %d (%s) %s %g", b, a, d,
                coordinate_name(m, d, g, name, sizeof name), what,
                !isfinite(gu[d]) ? gu[d] : !isfinite(gq[d]) ? gq[d] : g->d[row]);
        return locate_coordinate(err, b, g);
    }
    sfE_set(err, SF_ERR_NUMERIC,
            "molecule %d: the force on model atom %d is not finite (%g, %g, %g kJ/mol/nm): the sum of its "
            "coordinates' finite contributions overflows", b, a, f[3 * a], f[3 * a + 1], f[3 * a + 2]);
    return sfE_locate(err, SF_ERR_NUMERIC, b, a, -1, -1, -1);
}

/* The free-form kind (docs/model-format.md section 9.5): U = -kT log p(x) + U0, with log p
 * = log N(f(x)) + log |det J_V(x)| and its gradient from the encoder (sf_egnn.h), x the first
 * d components of each particle; F = kT d log p / dx on those, 0 on the others.  One
 * configuration at a time in the workspace. */
static sf_status evaluate_free_form(const sf_model *m, sf_workspace *ws, int batch, const double *positions,
                                    double *energies, double *forces, sf_eval_info *info, sf_error *err)
{
    const int N = m->N, d = m->egnn.dim;
    for (int b = 0; b < batch; b++) {
        const double *pos = positions + (size_t)b * N * 3;
        for (int i = 0; i < N; i++)
            for (int k = 0; k < d; k++) ws->ff_x[i * d + k] = pos[3 * i + k];
        double log_p = 0, sign = 0;
        sf_status rc = sfG_log_density(&m->egnn, ws->ff_x, b, &log_p, &sign, forces ? ws->ff_grad : NULL,
                                       ws->ff_scratch, err);
        if (rc != SF_OK) return sfE_locate(err, rc, b, -1, -1, -1, -1);
        (void)sign; /* det J_V < 0: the energy of |det J_V| (docs/model-format.md section 9.5) */
        energies[b] = m->energy_offset - m->kT * log_p;
        if (!isfinite(energies[b]))
            return sfE_locate(err, sfE_set(err, SF_ERR_NUMERIC,
                                           "molecule %d: the energy is not finite (%g kJ/mol): log p = %g and kT = %g "
                                           "kJ/mol", b, energies[b], log_p, m->kT),
                              b, -1, -1, -1, -1);
        if (!forces) continue;
        double *f = forces + (size_t)b * N * 3;
        for (int i = 0; i < N; i++) {
            for (int k = 0; k < 3; k++) f[3 * i + k] = k < d ? m->kT * ws->ff_grad[i * d + k] : 0.0;
            if (!check_finite(f + 3 * i, 3))
                return sfE_locate(err, sfE_set(err, SF_ERR_NUMERIC,
                                               "molecule %d: the force on particle %d is not finite (%g, %g, %g "
                                               "kJ/mol/nm)", b, i, f[3 * i], f[3 * i + 1], f[3 * i + 2]),
                                  b, i, -1, -1, -1);
        }
    }
    if (info) *info = (sf_eval_info){0, 0};
    return SF_OK;
}

sf_status sf_evaluate(const sf_model *m, sf_workspace *ws, int batch, const double *positions, const double *box,
                      double *energies, double *forces, sf_eval_info *info, sf_error *err)
{
    if (!m || !ws || !positions || !energies)
        return sfE_set(err, SF_ERR_ARG, "sf_evaluate: NULL model, workspace, positions or energies");
    if (ws->model != m) return sfE_set(err, SF_ERR_ARG, "sf_evaluate: workspace was made for another model");
    if (batch < 1 || batch > ws->max_batch)
        return sfE_set(err, SF_ERR_ARG, "sf_evaluate: batch %d outside 1..%d (the workspace's size)", batch,
                       ws->max_batch);
    if (box && m->kind == SF_FLOW_FREE_FORM)
        return sfE_set(err, SF_ERR_ARG, "sf_evaluate: a free-form model is not periodic (its encoder sees every pair "
                       "of particles at their plain distance): evaluate it without a box");
    const int N = m->N, D = m->D;
    for (int b = 0; b < batch; b++)
        for (int a = 0; a < N; a++)
            if (!check_finite(positions + ((size_t)b * N + a) * 3, 3))
                return sfE_locate(err, sfE_set(err, SF_ERR_INPUT,
                                               "molecule %d: position of model atom %d is not finite (NaN or inf)", b, a),
                                  b, a, -1, -1, -1);
    if (m->kind == SF_FLOW_FREE_FORM) return evaluate_free_form(m, ws, batch, positions, energies, forces, info, err);
    if (box) {
        if (!check_finite(box, 9) || !(box[0] > 0 && box[4] > 0 && box[8] > 0))
            return sfE_set(err, SF_ERR_INPUT, "periodic box vectors are not finite and positive");
    }
    sf_eval_info local = {0, 0};
    for (int b = 0; b < batch; b++) {
        double wall_energy = 0, log_jac = 0;
        sf_status rc = prepare_molecule(m, ws, b, positions + (size_t)b * N * 3, box, &log_jac, &wall_energy,
                                        &local.wall_dims, ws->slope + (size_t)b * D, err);
        if (rc != SF_OK) return rc;
        energies[b] = sfm_energy_base(m->kT, m->log_scale_sum, log_jac, m->energy_offset, wall_energy);
    }
    double *logp = ws->logp;
    sf_status rc = sfF_log_density(m, ws, batch, ws->u, logp, &local.max_newton_iters, err);
    if (rc != SF_OK) return rc;
    for (int b = 0; b < batch; b++) {
        const double base = energies[b];
        energies[b] = sfm_energy_total(base, m->kT, logp[b]);
        if (!isfinite(energies[b])) return energy_error(m, b, energies[b], base, logp[b], err);
    }
    if (forces) {
        double *weight = ws->weight; /* dE/dlog p = -kT for every molecule */
        for (int b = 0; b < batch; b++) weight[b] = -m->kT;
        double *gu = ws->u; /* u is not needed any more: reuse it for dE/du */
        sfF_log_density_gradient(m, ws, batch, weight, gu);
        memset(forces, 0, (size_t)batch * N * 3 * sizeof(double));
        for (int b = 0; b < batch; b++) {
            coordinate_gradient(m, ws, b, gu + (size_t)b * D, ws->slope + (size_t)b * D);
            /* F = -B^T dE/dq */
            double *f = forces + (size_t)b * N * 3;
            const sf_icgrad *ig = ws->icgrad + (size_t)b * D;
            const double *gq = ws->gq + (size_t)b * D;
            for (int d = 0; d < D; d++)
                for (int k = 0; k < ig[d].n; k++)
                    for (int c = 0; c < 3; c++) f[3 * ig[d].atom[k] + c] -= gq[d] * ig[d].d[3 * k + c];
            /* A non-finite value at any stage of the reverse pass reaches the forces. */
            for (int a = 0; a < N; a++)
                if (!check_finite(f + 3 * a, 3)) return force_error(m, ws, b, gu + (size_t)b * D, a, f, err);
        }
    }
    if (info) *info = local;
    return SF_OK;
}

sf_status sf_internal_coordinates(const sf_model *m, const double *positions, const double *box, double *u,
                                  sf_error *err)
{
    if (!m || !positions || !u) return sfE_set(err, SF_ERR_ARG, "sf_internal_coordinates: NULL argument");
    if (m->kind == SF_FLOW_FREE_FORM)
        return sfE_set(err, SF_ERR_ARG, "sf_internal_coordinates: a free-form model has no internal coordinates (it "
                       "reads the particles' Cartesian positions)");
    if (!check_finite(positions, (size_t)m->N * 3))
        return sfE_set(err, SF_ERR_INPUT, "positions are not finite (NaN or inf)");
    sf_icgrad *g = malloc((size_t)m->D * sizeof *g);
    if (!g) return sfE_set(err, SF_ERR_NOMEM, "out of memory");
    sf_status rc = sfZ_compute(m, positions, box, u, g, 0, err);
    free(g);
    for (int d = 0; rc == SF_OK && d < m->D; d++) u[d] = normalized(m, d, u[d]);
    return rc;
}

sf_status sf_log_density(const sf_model *m, sf_workspace *ws, const double *u, double *log_density, double *gradient,
                         sf_error *err)
{
    if (!m || !ws || !u || !log_density) return sfE_set(err, SF_ERR_ARG, "sf_log_density: NULL argument");
    if (ws->model != m) return sfE_set(err, SF_ERR_ARG, "sf_log_density: workspace was made for another model");
    if (m->kind == SF_FLOW_FREE_FORM)
        return sfE_set(err, SF_ERR_ARG, "sf_log_density: a free-form model has no unit cube of internal coordinates; "
                       "its log density over positions is -(U - U0) / kT of sf_evaluate");
    for (int d = 0; d < m->D; d++)
        if (!(u[d] >= 0 && u[d] <= 1))
            return sfE_set(err, SF_ERR_SUPPORT, "sf_log_density: u[%d] = %g is outside [0, 1]", d, u[d]);
    sf_status rc = sfF_log_density(m, ws, 1, u, log_density, NULL, err);
    if (rc != SF_OK || !gradient) return rc;
    double one = 1.0;
    sfF_log_density_gradient(m, ws, 1, &one, gradient);
    for (int d = 0; d < m->D; d++)
        if (!isfinite(gradient[d]))
            return sfE_locate(err, sfE_set(err, SF_ERR_NUMERIC,
                                           "molecule 0: the flow's reverse pass gives d log p_U/du = %g for dimension "
                                           "%d, which is not finite", gradient[d], d),
                              0, -1, -1, -1, -1);
    return SF_OK;
}
