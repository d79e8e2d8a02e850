/* sf_math_common.h -- the constants that follow the precision and the scalar
 * functions every other header of core/src/math uses.
 *
 * The headers of this folder are the one source of the per-element
 * mathematics: the C core includes them (through host/sf_math.h) and the GPU
 * platforms compile the same bytes, concatenated into sf_math_kernel_source,
 * as OpenCL C and CUDA.  They are written in the common dialect of
 * docs/kernel-math.md, which the includer defines first:
 *
 *   DEVICE                 qualifier of every function (C: static inline)
 *   real                   the floating type (C: double)
 *   GLOBAL                 qualifier of pointers into global memory
 *   USE_DOUBLE_PRECISION   defined when real is double
 *
 * Rules: no #include, no dynamic memory, no recursion, no static data, no
 * structs holding per-dimension arrays; unqualified pointers point to one
 * thread's private variables; non-integer literals through SFM_C so they
 * take the precision of real. */
#ifndef SF_MATH_COMMON_H
#define SF_MATH_COMMON_H

#ifdef USE_DOUBLE_PRECISION
#define SFM_C(x) x
/* DBL_EPSILON: the spacing of reals at 1. */
#define SFM_EPSILON SFM_C(2.220446049250313080847e-16)
/* |L| beyond which the logistic of the smooth ramp is 0 or 1 to working
 * precision and every derivative term underflows (exp(-700) ~ 1e-304). */
#define SFM_SATURATE SFM_C(700.0)
/* sin^2 (relative) below which an angle or torsion counts as collinear. */
#define SFM_COLLINEAR_SIN2 SFM_C(1e-24)
#else
#define SFM_C(x) x##f
#define SFM_EPSILON SFM_C(1.1920928955078125e-7)
/* exp(-80) ~ 2e-35 is still a normal float; exp(-88) is not. */
#define SFM_SATURATE SFM_C(80.0)
/* Cross products of collinear float vectors carry noise ~ eps^2 in sin^2. */
#define SFM_COLLINEAR_SIN2 SFM_C(1e-10)
#endif

/* Vectorization hints on loops over a transform's components: the C core
 * defines them as OpenMP SIMD pragmas (host/sf_math.h); a GPU thread runs
 * the loop as written.  SFM_SIMD_SUM names the loop's sum variables. */
#ifndef SFM_SIMD
#define SFM_SIMD
#define SFM_SIMD_SUM(...)
#endif

#define SFM_PI SFM_C(3.14159265358979323846)
#define SFM_TWO_PI (2 * SFM_PI)
/* Newton steps of the smooth transform's inverse before giving up. */
#define SFM_MAX_NEWTON 100

/* The logistic function without overflow for either sign. */
DEVICE real sfm_sigmoid(real v)
{
    const real e = exp(-fabs(v)); /* one exp for either sign, so a vector lane runs no branch */
    return v >= 0 ? 1 / (1 + e) : e / (1 + e);
}

/* Exact softplus, log(1 + e^v), without cancellation or overflow. */
DEVICE real sfm_softplus(real v) { return (v > 0 ? v : SFM_C(0.0)) + log1p(exp(-fabs(v))); }

/* A point of the circle [0, 1). */
DEVICE real sfm_wrap01(real v) { return v - floor(v); }

/* logit(x) = log(x / (1 - x)) on (0, 1). */
DEVICE real sfm_logit(real x) { return log(x) - log1p(-x); }

/* log sigma'(u) = -softplus(u) - softplus(-u), for any finite u. */
DEVICE real sfm_log_dsigmoid(real u)
{
    const real a = fabs(u);
    return -a - 2 * log1p(exp(-a));
}

/* sigma'(u) = sigma(u) (1 - sigma(u)) without cancellation. */
DEVICE real sfm_dsigmoid(real u)
{
    const real e = exp(-fabs(u));
    return e / ((1 + e) * (1 + e));
}

#endif /* SF_MATH_COMMON_H */
