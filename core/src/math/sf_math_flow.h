/* sf_math_flow.h -- the per-element pieces of a coupling layer around its
 * transform: the conditioner's input encoding of each conditioning dimension
 * (interval: 2u - 1; circle: (cos 2 pi u, sin 2 pi u)) and its derivative, and
 * the prior: truncated normals of the interval dimensions of z, von Mises
 * densities of the torsion dimensions. */
#ifndef SF_MATH_FLOW_H
#define SF_MATH_FLOW_H

DEVICE real sfm_encode_interval(real u) { return 2 * u - 1; }

DEVICE void sfm_encode_circular(real u, real *c, real *s)
{
    *c = cos(SFM_TWO_PI * u);
    *s = sin(SFM_TWO_PI * u);
}

/* d(loss)/du from d(loss)/d(encoding). */
DEVICE real sfm_encode_interval_grad(real g) { return 2 * g; }

DEVICE real sfm_encode_circular_grad(real u, real g_cos, real g_sin)
{
    return SFM_TWO_PI * (-g_cos * sin(SFM_TWO_PI * u) + g_sin * cos(SFM_TWO_PI * u));
}

/* One interval dimension's share of -log p_Z(z) under the truncated-normal
 * prior, without its normalization: ((z - mean) / sigma)^2 / 2. */
DEVICE real sfm_prior_term(real z, real mean, real sigma)
{
    const real t = (z - mean) / sigma;
    return SFM_C(0.5) * t * t;
}

/* d(weight log p_Z)/dz of that dimension. */
DEVICE real sfm_prior_gradient(real z, real mean, real sigma, real weight)
{
    return -weight * (z - mean) / (sigma * sigma);
}

/* One torsion dimension's share of -log p_Z(z) under its von Mises density on
 * the circle [0, 1), without its normalization: kappa (1 - cos 2 pi (z - mean)). */
DEVICE real sfm_torsion_prior_term(real z, real mean, real kappa)
{
    return kappa * (1 - cos(SFM_TWO_PI * (z - mean)));
}

/* d(weight log p_Z)/dz of that dimension. */
DEVICE real sfm_torsion_prior_gradient(real z, real mean, real kappa, real weight)
{
    return -weight * kappa * SFM_TWO_PI * sin(SFM_TWO_PI * (z - mean));
}

#endif /* SF_MATH_FLOW_H */
