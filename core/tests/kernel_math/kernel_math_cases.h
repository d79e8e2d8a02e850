/* kernel_math_cases.h -- one test case of the shared mathematics
 * (core/src/math), written in the same dialect, so that the host (C, after
 * host/sf_math.h), OpenCL and CUDA evaluate exactly the same calls.
 *
 * Case i reads SFMT_NIN inputs at in + i SFMT_NIN and writes SFMT_NOUT
 * outputs at out + i SFMT_NOUT: the smooth ramp, the prepared parameter
 * block, the mixture F, F', F'', the Newton inverse, both steps and both
 * adjoints of the smooth transform (interval and circle), of the spline and
 * of the affine transform, the minimum-image displacement, bond, angle and
 * torsion with their gradient rows, the normalization with its torsion tie,
 * the clamp, the wall energy, the log-Jacobian terms, the coordinate
 * gradient, the encoding, the prior and the activations. */
#ifndef KERNEL_MATH_CASES_H
#define KERNEL_MATH_CASES_H

#define SFMT_KS 4                 /* smooth components */
#define SFMT_KR 5                 /* spline bins */
#define SFMT_PS (4 * SFMT_KS + 2) /* smooth raw block */
#define SFMT_PR (3 * SFMT_KR + 2) /* spline raw block */
/* Input layout of one case. */
#define SFMT_IN_SMOOTH 0
#define SFMT_IN_SPLINE (SFMT_IN_SMOOTH + SFMT_PS)
#define SFMT_IN_AFFINE (SFMT_IN_SPLINE + SFMT_PR)
#define SFMT_IN_X (SFMT_IN_AFFINE + 2) /* x, y, abar, wt in (0, 1) and around 1 */
#define SFMT_IN_ATOMS (SFMT_IN_X + 4)  /* 4 atoms x 3 (nm) */
#define SFMT_IN_BOX (SFMT_IN_ATOMS + 12)
#define SFMT_IN_U (SFMT_IN_BOX + 9)     /* a point of [0, 1] for the clamp */
#define SFMT_IN_Z (SFMT_IN_U + 1)       /* a pre-activation */
#define SFMT_NIN (SFMT_IN_Z + 1)
#define SFMT_NOUT 323

/* Model constants of the cases. */
#define SFMT_S_MIN SFM_C(0.1)
#define SFMT_ALPHA_MIN SFM_C(0.5)
#define SFMT_C_MAX SFM_C(0.95)
#define SFMT_BETA 2
#define SFMT_MIN_BIN SFM_C(0.001)
#define SFMT_SCALE_MAX SFM_C(2.0)
#define SFMT_MARGIN SFM_C(0.05)
#define SFMT_WALL_K SFM_C(100.0)
#define SFMT_EDGE_FORCE SFM_C(30.0)
#define SFMT_KT SFM_C(2.5)

/* Returns the number of outputs written. */
DEVICE int sfmt_case(int i, const GLOBAL real *inputs, GLOBAL real *outputs)
{
    const GLOBAL real *in = inputs + i * SFMT_NIN;
    GLOBAL real *out = outputs + i * SFMT_NOUT;
    int o = 0;
    const real x = in[SFMT_IN_X], y = in[SFMT_IN_X + 1], abar = in[SFMT_IN_X + 2], wt = in[SFMT_IN_X + 3];
    real a, b, c, d;

    /* ----------------------------------------------------------- smooth */
    {
        const sfm_ramp r = sfm_smooth_ramp(SFMT_ALPHA_MIN + y, SFMT_BETA, x);
        out[o++] = r.s0;
        out[o++] = r.s1;
        out[o++] = r.s2;
        out[o++] = r.a0;
        out[o++] = r.a1;
    }
    {
        /* The prepared block is itself an output (prepared in place). */
        GLOBAL real *block = out + o;
        for (int j = 0; j < SFMT_PS; j++) block[j] = in[SFMT_IN_SMOOTH + j];
        sfm_smooth_prepare(block, SFMT_KS, SFMT_S_MIN, SFMT_C_MAX);
        o += SFMT_PS;
        const sfm_smooth p = sfm_smooth_view(block, SFMT_KS, SFMT_BETA, SFMT_ALPHA_MIN);
        sfm_smooth_eval(&p, x, &a, &b, &c);
        out[o++] = a;
        out[o++] = b;
        out[o++] = c;
        sfm_smooth_solve(&p, y, &a);
        out[o++] = a;
        for (int circular = 0; circular < 2; circular++)
            for (int generative = 0; generative < 2; generative++) {
                const real v = generative ? y : x;
                real stepped, logdet;
                sfm_smooth_step(&p, circular, generative, v, &stepped, &logdet);
                out[o++] = stepped;
                out[o++] = logdet;
                GLOBAL real *graw = out + o + 1;
                for (int j = 0; j < SFMT_PS; j++) graw[j] = 0;
                out[o] = sfm_smooth_adjoint(&p, SFMT_S_MIN, SFMT_C_MAX, circular, generative, v, stepped, abar, wt,
                                            graw);
                o += 1 + SFMT_PS;
            }
    }

    /* ----------------------------------------------------------- spline */
    for (int circular = 0; circular < 2; circular++) {
        const sfm_spline p = sfm_spline_view(in + SFMT_IN_SPLINE, SFMT_KR, circular, SFMT_MIN_BIN, SFMT_MIN_BIN,
                                             SFMT_MIN_BIN);
        sfm_spline_eval(&p, x, &a, &b, &c);
        out[o++] = a;
        out[o++] = b;
        out[o++] = c;
        out[o++] = sfm_spline_solve(&p, y);
        for (int generative = 0; generative < 2; generative++) {
            const real v = generative ? y : x;
            real stepped, logdet;
            sfm_spline_step(&p, generative, v, &stepped, &logdet);
            out[o++] = stepped;
            out[o++] = logdet;
            GLOBAL real *graw = out + o + 1;
            for (int j = 0; j < SFMT_PR; j++) graw[j] = 0;
            out[o] = sfm_spline_adjoint(&p, generative, v, stepped, abar, wt, graw);
            o += 1 + SFMT_PR;
        }
    }

    /* ----------------------------------------------------------- affine */
    {
        const sfm_affine p = sfm_affine_view(in[SFMT_IN_AFFINE], in[SFMT_IN_AFFINE + 1], SFMT_SCALE_MAX);
        sfm_affine_eval(&p, x, &a, &b, &c, &d);
        out[o++] = a;
        out[o++] = b;
        out[o++] = c;
        out[o++] = d;
        for (int generative = 0; generative < 2; generative++) {
            const real v = generative ? y : x;
            real stepped, logdet, gs, gt;
            out[o++] = (real)sfm_affine_step(&p, generative, v, &stepped, &logdet);
            out[o++] = stepped;
            out[o++] = logdet;
            out[o++] = sfm_affine_adjoint(&p, generative, v, abar, wt, &gs, &gt);
            out[o++] = gs;
            out[o++] = gt;
        }
    }

    /* --------------------------------------------------------- geometry */
    {
        real r[12], box[9], disp[3], g[12], q;
        for (int j = 0; j < 12; j++) r[j] = in[SFMT_IN_ATOMS + j];
        for (int j = 0; j < 9; j++) box[j] = in[SFMT_IN_BOX + j];
        for (int periodic = 0; periodic < 2; periodic++) {
            sfm_displacement(r, r + 9, periodic, box, disp);
            for (int j = 0; j < 3; j++) out[o++] = disp[j];
            out[o++] = (real)sfm_bond(r, r + 3, periodic, box, &q, g);
            out[o++] = q;
            for (int j = 0; j < 6; j++) out[o++] = g[j];
            out[o++] = (real)sfm_angle(r, r + 3, r + 6, periodic, box, &q, g);
            out[o++] = q;
            for (int j = 0; j < 9; j++) out[o++] = g[j];
            out[o++] = (real)sfm_torsion(r, r + 3, r + 6, r + 9, periodic, box, &q, g);
            out[o++] = q;
            for (int j = 0; j < 12; j++) out[o++] = g[j];
        }
    }

    /* ----------------------------------------------------------- energy */
    {
        const real u = in[SFMT_IN_U];
        real offset, scale, slope, dlogj;
        for (int kind = SFM_BOND; kind <= SFM_TORSION; kind++) {
            sfm_dim_scale(kind, SFM_C(0.1), SFM_C(0.2), &offset, &scale);
            const real qv = offset + scale * u;
            out[o++] = sfm_normalize(qv, offset, scale, kind == SFM_TORSION);
            out[o++] = sfm_log_jacobian(kind, qv, &dlogj);
            out[o++] = dlogj;
        }
        /* The torsion tie: phi = +pi is u = 0. */
        out[o++] = sfm_normalize(SFM_PI, -SFM_PI, 2 * SFM_PI, 1);
        const real clamped = sfm_smooth_clamp(u, SFMT_MARGIN, &slope);
        out[o++] = clamped;
        out[o++] = slope;
        out[o++] = sfm_wall_energy(u, clamped, SFMT_WALL_K, SFMT_EDGE_FORCE);
        out[o++] = sfm_coordinate_gradient(abar, SFMT_KT, dlogj + x, SFM_PI, slope,
                                           sfm_wall_gradient(u, clamped, slope, SFMT_WALL_K, SFMT_EDGE_FORCE));
        const real base = sfm_energy_base(SFMT_KT, x, y, abar, wt);
        out[o++] = base;
        out[o++] = sfm_energy_total(base, SFMT_KT, -x);
    }

    /* ------------------------------------------------- flow and network */
    {
        real cs, sn;
        out[o++] = sfm_encode_interval(x);
        sfm_encode_circular(x, &cs, &sn);
        out[o++] = cs;
        out[o++] = sn;
        out[o++] = sfm_encode_interval_grad(abar);
        out[o++] = sfm_encode_circular_grad(x, abar, wt);
        out[o++] = sfm_prior_term(x, y, SFM_C(0.3));
        out[o++] = sfm_prior_gradient(x, y, SFM_C(0.3), wt);
        const real z = in[SFMT_IN_Z];
        for (int act = SFM_ACT_TANH; act <= SFM_ACT_SOFTPLUS; act++) {
            real aux;
            const real post = sfm_activate(act, z, &aux);
            out[o++] = post;
            out[o++] = sfm_activate_grad(act, aux, post);
        }
        real silu1, silu2;
        out[o++] = sfm_silu2(z, &silu1, &silu2);   /* the free-form encoder's SiLU and two derivatives */
        out[o++] = silu1;
        out[o++] = silu2;
        out[o++] = sfm_sigmoid(z);
        out[o++] = sfm_softplus(z);
        out[o++] = sfm_logit(x);
        out[o++] = sfm_wrap01(z);
    }
    return o;
}

#endif /* KERNEL_MATH_CASES_H */
