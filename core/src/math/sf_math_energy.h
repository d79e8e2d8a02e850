/* sf_math_energy.h -- from internal coordinates to the unit cube and back to
 * the energy: the normalization of each dimension with the torsion tie, the
 * wall policy's smooth clamp and energy, the log-Jacobian terms of the map
 * from Cartesian to internal coordinates, the chain rule of one dimension's
 * coordinate gradient and the sum that makes a molecule's energy
 * (docs/model-format.md section 5). */
#ifndef SF_MATH_ENERGY_H
#define SF_MATH_ENERGY_H

/* The kinds of dimension, in dim order: N - 1 bonds, N - 2 angles, N - 3 torsions. */
#define SFM_BOND 0
#define SFM_ANGLE 1
#define SFM_TORSION 2

DEVICE int sfm_dim_kind(int d, int N) { return d < N - 1 ? SFM_BOND : (d < 2 * N - 3 ? SFM_ANGLE : SFM_TORSION); }

/* u = (q - offset) / scale: bonds between their bounds [lo, hi] (nm),
 * angles over [0, pi], torsions over [-pi, pi). */
DEVICE void sfm_dim_scale(int kind, real bond_lo, real bond_hi, real *offset, real *scale)
{
    if (kind == SFM_BOND) {
        *offset = bond_lo;
        *scale = bond_hi - bond_lo;
    } else if (kind == SFM_ANGLE) {
        *offset = 0;
        *scale = SFM_PI;
    } else {
        *offset = -SFM_PI;
        *scale = 2 * SFM_PI;
    }
}

/* u of a coordinate q.  A torsion's u is a point of the circle [0, 1):
 * (phi + pi) / (2 pi) = 1, which atan2's phi = +pi gives (and phi an ulp
 * below pi, by rounding), is taken as u = 0, the same point as phi = -pi.
 * One representative matters: a transform that is only C1 on the circle (the
 * spline) has different one-sided forces at u = 0 and u = 1. */
DEVICE real sfm_normalize(real q, real offset, real scale, int circular)
{
    real v = (q - offset) / scale;
    if (circular && v >= 1) v -= 1;
    return v;
}

/* The wall policy's smooth clamp c(u) into [margin, 1 - margin], the
 * identity on [2 margin, 1 - 2 margin], and its slope c'(u). */
DEVICE real sfm_smooth_clamp(real u, real margin, real *slope)
{
    if (u < 2 * margin) {
        const real t = tanh((u - 2 * margin) / margin);
        *slope = 1 - t * t;
        return 2 * margin + margin * t;
    }
    if (u > 1 - 2 * margin) {
        const real t = tanh((1 - u - 2 * margin) / margin);
        *slope = 1 - t * t;
        return 1 - (2 * margin + margin * t);
    }
    *slope = 1;
    return u;
}

/* The wall's energy k/2 (u - c)^2 + g |u - c| (kJ/mol): a harmonic term on
 * what the clamp removed, and a linear one whose slope g (kJ/mol per unit of
 * u; 0 without edge forces) is the flow's restoring force at the zone's edge
 * on u's side: it takes over as the flow's own force fades with c', so the
 * restoring force does not dip in the zone (docs/flow-math.md, "Curvature in
 * the zone"). */
DEVICE real sfm_wall_energy(real u, real clamped, real k, real g)
{
    const real t = u - clamped;
    return SFM_C(0.5) * k * t * t + g * (t < 0 ? -t : t);
}

/* The edge force of u's side: the lower face's below 1/2, the upper's above. */
DEVICE real sfm_wall_edge_force(real u, real lower, real upper) { return u < SFM_C(0.5) ? lower : upper; }

/* dE_wall/du = (k (u - c) + g sign(u - c)) (1 - c'). */
DEVICE real sfm_wall_gradient(real u, real clamped, real slope, real k, real g)
{
    const real t = u - clamped;
    return (k * t + (t > 0 ? g : t < 0 ? -g : 0)) * (1 - slope);
}

/* log J of one coordinate (bond: log q^2, angle: log sin q, torsion: 0) and
 * its derivative d log J / dq. */
DEVICE real sfm_log_jacobian(int kind, real q, real *derivative)
{
    if (kind == SFM_BOND) {
        *derivative = 2 / q;
        return 2 * log(q);
    }
    if (kind == SFM_ANGLE) {
        *derivative = cos(q) / sin(q);
        return log(sin(q));
    }
    *derivative = 0;
    return 0;
}

/* dE/dq of one dimension from dE_flow/du (gu), the derivative of log J where
 * the flow is (dlogj), the normalization's scale, the clamp's slope and the
 * wall's dE_wall/du (sfm_wall_gradient; 0 for a dimension without a wall). */
DEVICE real sfm_coordinate_gradient(real gu, real kT, real dlogj, real scale, real slope, real wall_gradient)
{
    return ((gu + kT * dlogj * scale) * slope + wall_gradient) / scale;
}

/* A molecule's energy before the flow: kT (sum log scale + log J) + U0 + wall. */
DEVICE real sfm_energy_base(real kT, real log_scale_sum, real log_jac, real offset, real wall)
{
    return kT * (log_scale_sum + log_jac) + offset + wall;
}

/* ... and with the flow's log density: E = base - kT log p_U(u). */
DEVICE real sfm_energy_total(real base, real kT, real log_density) { return base - kT * log_density; }

#endif /* SF_MATH_ENERGY_H */
