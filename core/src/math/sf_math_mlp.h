/* sf_math_mlp.h -- the conditioner networks' activations and their
 * derivatives (the matrix products stay with the caller: BLAS on the CPU,
 * the platform's BLAS or a fused kernel on a GPU). */
#ifndef SF_MATH_MLP_H
#define SF_MATH_MLP_H

/* Activation codes, as stored in a layer. */
#define SFM_ACT_TANH 0
#define SFM_ACT_SILU 1
#define SFM_ACT_SOFTPLUS 2

/* The activation y of the pre-activation z, and beside it (*aux) what its
 * derivative needs, so the reverse pass calls no transcendental function:
 * z for tanh, the logistic s = sigmoid(z) for SiLU and softplus (one exp
 * serves softplus and its derivative). */
DEVICE real sfm_activate(int act, real z, real *aux)
{
    if (act == SFM_ACT_TANH) {
        *aux = z;
        return tanh(z);
    }
    if (act == SFM_ACT_SILU) {
        *aux = sfm_sigmoid(z);
        return z * *aux;
    }
    if (act == SFM_ACT_SOFTPLUS) {
        const real e = exp(-fabs(z));
        *aux = z >= 0 ? 1 / (1 + e) : e / (1 + e);
        return (z > 0 ? z : SFM_C(0.0)) + log1p(e);
    }
    *aux = z;
    return z;
}

/* dy/dz from aux and y: tanh' = 1 - y^2; SiLU' = s (1 + z (1 - s)) = s + y (1 - s);
 * softplus' = s. */
DEVICE real sfm_activate_grad(int act, real aux, real y)
{
    if (act == SFM_ACT_TANH) return 1 - y * y;
    if (act == SFM_ACT_SILU) return aux + y * (1 - aux);
    if (act == SFM_ACT_SOFTPLUS) return aux;
    return 1;
}

/* SiLU and its first two derivatives, silu(a) = a s, s = sigmoid(a), from
 * one exp (the free-form encoder's activation: its forward pass carries
 * tangents through silu', its reverse pass needs silu'' as well):
 *     silu'  = s + a s (1 - s),
 *     silu'' = s (1 - s) (2 + a (1 - 2 s)),
 * with s (1 - s) = e / (1 + e)^2, e = exp(-|a|), so neither sign of a
 * cancels or overflows. */
DEVICE real sfm_silu2(real a, real *d1, real *d2)
{
    const real e = exp(-fabs(a)), q = 1 / (1 + e);
    const real s = a >= 0 ? q : e * q, ds = e * q * q;
    *d1 = s + a * ds;
    *d2 = ds * (2 + a * (1 - 2 * s));
    return a * s;
}

#endif /* SF_MATH_MLP_H */
