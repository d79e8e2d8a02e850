/* smoothflow.cc -- the SmoothFlowForce kernels in OpenMM's common compute
 * dialect (KERNEL, GLOBAL, LOCAL, SYNC_THREADS, real, mixed, mm_long, ...).
 * Compiled after OpenMM's prelude and the shared mathematics
 * (sf_math_kernel_source, core/src/math): every per-element formula is an
 * sfm_ function of those headers; here are only the loops, the memory
 * layout and the reductions (docs/gpu-platforms.md).
 *
 * One work-group of WORK_GROUP_SIZE threads evaluates one molecule at a
 * time: its threads split the atoms, the internal coordinates, the rows of
 * each matrix product and the transformed dimensions of each layer, with a
 * barrier between stages.  A molecule's intermediate values live in its own
 * slice of `scratch` (the model header's stride of reals; offsets *_AT and
 * the layer table's LF_ENC, LF_ACT, LF_PARAMS).
 *
 * Compile-time constants (CommonSmoothFlowKernels.cpp) are the shape only:
 * NUM_ATOMS (N), NUM_DIMS (D), NUM_INTERVAL (2N - 3), NUM_LAYERS, PERIODIC,
 * WALL, HAS_PRIOR, WORK_GROUP_SIZE and the scratch offsets that follow from
 * N and the layer count (*_AT); and BATCHED_STAGES, which picks the kernels:
 * 0 the fused path's computeSmoothFlow and sumSmoothFlowEnergy, 1 the
 * batched path's computeSmoothFlowStage (a second program, compiled only
 * when that path may run).  Everything that differs between models of
 * one shape (widths, constants, weights) is data, and the number of
 * molecules and atoms are arguments, so such models share one program (and
 * PoCL's cache of it). */

/* modelInt: the Z-matrix rows (4 N), then these fields, then the layer table. */
#define MI_HEADER (4 * NUM_ATOMS)
#define MI_STRIDE 0 /* reals of scratch per molecule */
#define MI_GENC 1   /* scratch offsets of the encoding gradient and the two hidden-gradient buffers */
#define MI_GA 2
#define MI_GB 3
#define MI_BETA 4   /* the smooth ramp's exponent */
#define LAYER_TABLE (MI_HEADER + 8)
#define LAYER_FIELDS 16
/* modelReal: these constants, then the bond bounds, the prior's means and
 * sigmas, the wall's edge forces (lower, then upper; 0 when the model has
 * none), and the torsions' von Mises means and kappas (0 when uniform):
 * MR_BONDS + 2 (N - 1) + 2 (2N - 3) + 2 (2N - 3) + 2 (N - 3) reals. */
#define MR_MARGIN 0
#define MR_WALL_K 1
#define MR_S_MIN 2
#define MR_C_MAX 3
#define MR_ALPHA_MIN 4
#define MR_MIN_WIDTH 5
#define MR_MIN_HEIGHT 6
#define MR_MIN_DERIVATIVE 7
#define MR_SCALE_MAX 8
#define MR_ANGLE_MARGIN 9
#define MR_BONDS 10
#define MR_EDGES (MR_BONDS + 2 * (NUM_ATOMS - 1) + 2 * NUM_INTERVAL)

/* The model's constants, read once per kernel launch into private memory. */
typedef struct sf_constants {
    int stride, genc, ga, gb, beta;
    real kT, margin, angleMargin, wallK, sMin, cMax, alphaMin, minW, minH, minD, scaleMax;
} sf_constants;

/* Error codes, one per molecule in `status` (0: fine); the host reruns the
 * molecule through the C core for the message. */
#define SF_DEVICE_INPUT 1      /* a position is not finite */
#define SF_DEVICE_GEOMETRY 2   /* coincident atoms, collinear angle or torsion */
#define SF_DEVICE_COORDINATE 3 /* u not finite, wall energy not finite, or (error policy) outside the support */
#define SF_DEVICE_STEP 4       /* Newton did not converge, or the affine input on its boundary */
#define SF_DEVICE_NONFINITE 5  /* a layer's output or log-determinant is not finite */
#define SF_DEVICE_ENERGY 6     /* the energy is not finite */
#define SF_DEVICE_FORCE 7      /* a force contribution is not finite */
#define SF_DEVICE_AFFINE_FLOAT 8 /* (float) an affine input rounded to exactly 0 or 1 */

/* Fields of one layer in the layer table (LAYER_TABLE + l * LAYER_FIELDS). */
#define LF_TRANSFORM 0
#define LF_GENERATIVE 1
#define LF_NTRANS 2
#define LF_NCOND 3
#define LF_K 4
#define LF_P 5
#define LF_ACTIVATION 6
#define LF_NLINEAR 7
#define LF_TRANS 8   /* offset of the transformed dims in modelInt */
#define LF_COND 9    /* offset of the conditioning dims in modelInt */
#define LF_WIDTH 10  /* offset of the n_linear + 1 widths in modelInt */
#define LF_LINEAR 11 /* offset of (weight, bias) offsets into weights, per linear map, in modelInt */
#define LF_ENC 12    /* scratch offset of the encoded input */
#define LF_ACT 13    /* scratch offset of the hidden (aux, post) blocks */
#define LF_PARAMS 14 /* scratch offset of the conditioner's output */

DEVICE void sf_fail(GLOBAL int *status, GLOBAL int *errorFlag, int molecule, int code)
{
    /* The first stage's code is kept (stages are separated by barriers; within
     * one stage any of its codes will do, the host finds the cause again). */
    if (status[molecule] == 0) status[molecule] = code;
    errorFlag[0] = 1;
}

DEVICE int sf_finite(real v) { return isfinite(v) ? 1 : 0; }

/* The model atoms of dimension d's coordinate (its Z-matrix row) and how many. */
DEVICE int sf_dim_atoms(GLOBAL const int *zmatrix, int d, int *atoms)
{
    int row, n;
    if (d < NUM_ATOMS - 1) { row = d + 1; n = 2; }
    else if (d < NUM_INTERVAL) { row = d - NUM_ATOMS + 3; n = 3; }
    else { row = d - 2 * NUM_ATOMS + 6; n = 4; }
    for (int c = 0; c < 4; c++) atoms[c] = zmatrix[4 * row + c];
    return n;
}

/* The normalization of dimension d. */
DEVICE void sf_scale_of(GLOBAL const real *bondLo, GLOBAL const real *bondHi, int d, real *offset, real *scale)
{
    const int kind = sfm_dim_kind(d, NUM_ATOMS);
    sfm_dim_scale(kind, kind == SFM_BOND ? bondLo[d] : 0, kind == SFM_BOND ? bondHi[d] : 0, offset, scale);
}

/* Where linear map m of a layer keeps its output before the activation (its
 * aux block, followed by its post block of the same width; the last map's
 * output is the conditioner's output at LF_PARAMS). */
DEVICE int sf_hidden_at(GLOBAL const int *info, GLOBAL const int *width, int m)
{
    int at = info[LF_ACT];
    for (int j = 1; j <= m; j++) at += 2 * width[j];
    return at;
}

/* The conditioner's reverse pass goes from the output gradient (GPARAMS)
 * through ga and gb alternately to the encoding's gradient (genc): the
 * buffers that linear map m writes and reads. */
DEVICE int sf_backward_dst(int genc, int ga, int gb, int nLinear, int m)
{
    return m == 0 ? genc : ((nLinear - 1 - m) % 2 == 0 ? ga : gb);
}
DEVICE int sf_backward_src(int genc, int ga, int gb, int nLinear, int m)
{
    return m == nLinear - 1 ? GPARAMS_AT : sf_backward_dst(genc, ga, gb, nLinear, m + 1);
}

/* The conditioner of layer `info`: enc -> params through its hidden layers
 * (activations kept in act for the reverse pass), rows split over threads. */
DEVICE void sf_conditioner_forward(GLOBAL const int *info, GLOBAL const int *modelInt, GLOBAL const real *weights,
                                   GLOBAL real *mol)
{
    const int nLinear = info[LF_NLINEAR], act = info[LF_ACTIVATION];
    GLOBAL const int *width = modelInt + info[LF_WIDTH];
    GLOBAL const int *linear = modelInt + info[LF_LINEAR];
    for (int m = 0; m < nLinear; m++) {
        const int nIn = width[m], nOut = width[m + 1];
        GLOBAL const real *W = weights + linear[2 * m];
        GLOBAL const real *bias = weights + linear[2 * m + 1];
        GLOBAL const real *x = m == 0 ? mol + info[LF_ENC] : mol + sf_hidden_at(info, width, m - 1) + nIn;
        const int last = m == nLinear - 1;
        GLOBAL real *aux = last ? mol + info[LF_PARAMS] : mol + sf_hidden_at(info, width, m);
        GLOBAL real *post = aux + nOut;
        for (int r = LOCAL_ID; r < nOut; r += LOCAL_SIZE) {
            real z = bias[r];
            GLOBAL const real *row = W + r * nIn;
            for (int i = 0; i < nIn; i++) z += row[i] * x[i];
            if (last) aux[r] = z;
            else {
                real a;
                post[r] = sfm_activate(act, z, &a);
                aux[r] = a;
            }
        }
        SYNC_THREADS;
    }
}

/* The conditioner's reverse pass: gparams -> genc (input gradient only, the
 * weights are fixed), rows of W^T split over threads. */
DEVICE void sf_conditioner_backward(GLOBAL const int *info, GLOBAL const int *modelInt, GLOBAL const real *weights,
                                    GLOBAL real *mol, const sf_constants *k)
{
    const int nLinear = info[LF_NLINEAR], act = info[LF_ACTIVATION];
    GLOBAL const int *width = modelInt + info[LF_WIDTH];
    GLOBAL const int *linear = modelInt + info[LF_LINEAR];
    for (int m = nLinear - 1; m >= 0; m--) {
        const int nIn = width[m], nOut = width[m + 1];
        GLOBAL const real *W = weights + linear[2 * m];
        GLOBAL const real *g = mol + sf_backward_src(k->genc, k->ga, k->gb, nLinear, m);
        GLOBAL real *dst = mol + sf_backward_dst(k->genc, k->ga, k->gb, nLinear, m);
        GLOBAL const real *aux = m > 0 ? mol + sf_hidden_at(info, width, m - 1) : 0;
        for (int i = LOCAL_ID; i < nIn; i += LOCAL_SIZE) {
            real s = 0;
            for (int r = 0; r < nOut; r++) s += W[r * nIn + i] * g[r];
            dst[i] = m > 0 ? s * sfm_activate_grad(act, aux[i], aux[nIn + i]) : s;
        }
        SYNC_THREADS;
    }
}

/* The density pass of one transformed dimension (cf. step() in sf_flow.c):
 * 0 or the Newton iterations, -1 without convergence, -2 outside the affine
 * transform's support. */
DEVICE int sf_step(const sf_constants *k, int transform, int generative, int K, GLOBAL real *raw, int circular,
                   real in, real *out, real *logdet)
{
    if (transform == 0) {
        sfm_smooth_prepare(raw, K, k->sMin, k->cMax);
        const sfm_smooth p = sfm_smooth_view(raw, K, k->beta, k->alphaMin);
        return sfm_smooth_step(&p, circular, generative, in, out, logdet);
    }
    if (transform == 1) {
        const sfm_spline p = sfm_spline_view(raw, K, circular, k->minW, k->minH, k->minD);
        return sfm_spline_step(&p, generative, in, out, logdet);
    }
    const sfm_affine p = sfm_affine_view(raw[0], raw[1], k->scaleMax);
    return sfm_affine_step(&p, generative, in, out, logdet);
}

/* The reverse pass of one transformed dimension (cf. adjoint() in sf_flow.c). */
DEVICE real sf_adjoint(const sf_constants *k, int transform, int generative, int K, GLOBAL const real *raw,
                       int circular, real in, real out, real abar, real w, GLOBAL real *graw)
{
    if (transform == 0) {
        const sfm_smooth p = sfm_smooth_view(raw, K, k->beta, k->alphaMin);
        return sfm_smooth_adjoint(&p, k->sMin, k->cMax, circular, generative, in, out, abar, w, graw);
    }
    if (transform == 1) {
        const sfm_spline p = sfm_spline_view(raw, K, circular, k->minW, k->minH, k->minD);
        return sfm_spline_adjoint(&p, generative, in, out, abar, w, graw);
    }
    const sfm_affine p = sfm_affine_view(raw[0], raw[1], k->scaleMax);
    real gs, gt;
    const real gin = sfm_affine_adjoint(&p, generative, in, abar, w, &gs, &gt);
    graw[0] += gs;
    graw[1] += gt;
    return gin;
}

/* The model's constants, read once per kernel launch into private memory. */
DEVICE void sf_load_constants(GLOBAL const int *modelInt, GLOBAL const real *modelReal, mixed kT, sf_constants *k)
{
    GLOBAL const int *header = modelInt + MI_HEADER;
    k->stride = header[MI_STRIDE];
    k->genc = header[MI_GENC];
    k->ga = header[MI_GA];
    k->gb = header[MI_GB];
    k->beta = header[MI_BETA];
    k->kT = (real) kT;
    k->margin = modelReal[MR_MARGIN];
    k->angleMargin = modelReal[MR_ANGLE_MARGIN];
    k->wallK = modelReal[MR_WALL_K];
    k->sMin = modelReal[MR_S_MIN];
    k->cMax = modelReal[MR_C_MAX];
    k->alphaMin = modelReal[MR_ALPHA_MIN];
    k->minW = modelReal[MR_MIN_WIDTH];
    k->minH = modelReal[MR_MIN_HEIGHT];
    k->minD = modelReal[MR_MIN_DERIVATIVE];
    k->scaleMax = modelReal[MR_SCALE_MAX];
}

/* The stages of one molecule's evaluation, each run by the molecule's
 * work-group and ending with a barrier.  The fused kernel runs them all in
 * one launch; the batched path launches them one by one for every molecule
 * and does the conditioners' matrix products with the platform's BLAS in
 * between (docs/gpu-platforms.md).  Each thread's share of the energy and of
 * the wall count follows it through the stages (`energy`, `walls`); a
 * thread handles the same dimensions in both paths. */

/* 1-2. Gather the model atoms; internal coordinates, their Wilson B rows,
 * the normalization, the wall and the log-Jacobian: u is the flow's last state. */
DEVICE void sf_stage_coordinates(int molecule, GLOBAL const real4 *RESTRICT posq,
                                 GLOBAL const int *RESTRICT particleIndex, GLOBAL const int *RESTRICT modelInt,
                                 GLOBAL const real *RESTRICT modelReal, GLOBAL real *RESTRICT mol,
                                 GLOBAL int *RESTRICT status, GLOBAL int *RESTRICT errorFlag, const real *box,
                                 const sf_constants *k, mixed kT, mixed *energy, int *walls)
{
    GLOBAL const int *zmatrix = modelInt;
    GLOBAL const real *bondLo = modelReal + MR_BONDS, *bondHi = bondLo + (NUM_ATOMS - 1);
    GLOBAL real *pos = mol + POS_AT, *q = mol + Q_AT, *slope = mol + SLOPE_AT, *rows = mol + ROWS_AT;
    for (int a = LOCAL_ID; a < NUM_ATOMS; a += LOCAL_SIZE) {
        const real4 p = posq[particleIndex[molecule * NUM_ATOMS + a]];
        pos[3 * a] = p.x;
        pos[3 * a + 1] = p.y;
        pos[3 * a + 2] = p.z;
        if (!sf_finite(p.x) || !sf_finite(p.y) || !sf_finite(p.z)) sf_fail(status, errorFlag, molecule, SF_DEVICE_INPUT);
    }
    SYNC_THREADS;
    GLOBAL real *u = mol + STATE_AT + NUM_LAYERS * NUM_DIMS;
    for (int d = LOCAL_ID; d < NUM_DIMS; d += LOCAL_SIZE) {
        int at[4];
        const int n = sf_dim_atoms(zmatrix, d, at);
        real r[4][3], value = 0, g[12];
        for (int j = 0; j < n; j++)
            for (int c = 0; c < 3; c++) r[j][c] = pos[3 * at[j] + c];
        int bad;
        if (n == 2) bad = sfm_bond(r[0], r[1], PERIODIC, box, &value, g);
        else if (n == 3) bad = sfm_angle(r[0], r[1], r[2], PERIODIC, box, &value, g);
        else bad = sfm_torsion(r[0], r[1], r[2], r[3], PERIODIC, box, &value, g);
        if (bad) {
            sf_fail(status, errorFlag, molecule, SF_DEVICE_GEOMETRY);
            value = 0;
            for (int j = 0; j < 12; j++) g[j] = 0;
        }
        q[d] = value;
        for (int j = 0; j < 12; j++) rows[12 * d + j] = j < 3 * n ? g[j] : 0;
        real offset, scale, unused, s = 1;
        sf_scale_of(bondLo, bondHi, d, &offset, &scale);
        real v = sfm_normalize(value, offset, scale, d >= NUM_INTERVAL);
        if (!sf_finite(v)) sf_fail(status, errorFlag, molecule, SF_DEVICE_COORDINATE);
        if (d < NUM_INTERVAL) {
#if WALL
            const real c = sfm_smooth_clamp(v, d < NUM_ATOMS - 1 ? k->margin : k->angleMargin, &s);
            if (c != v) {
                (*walls)++;
                const real w = sfm_wall_energy(v, c, k->wallK,
                                               sfm_wall_edge_force(v, modelReal[MR_EDGES + d],
                                                                   modelReal[MR_EDGES + NUM_INTERVAL + d]));
                if (!sf_finite(w)) sf_fail(status, errorFlag, molecule, SF_DEVICE_COORDINATE);
                *energy += w;
            }
            v = c;
#else
            if (v < 0 || v > 1) sf_fail(status, errorFlag, molecule, SF_DEVICE_COORDINATE);
#endif
        }
        slope[d] = s;
        u[d] = v;
        *energy += kT * sfm_log_jacobian(sfm_dim_kind(d, NUM_ATOMS), offset + scale * v, &unused);
    }
    SYNC_THREADS;
}

/* 3a. Layer l's density pass begins: state l + 1 copied to state l, and the
 * conditioning dimensions encoded into the conditioner's input. */
DEVICE void sf_stage_encode(int l, GLOBAL const int *RESTRICT modelInt, GLOBAL real *RESTRICT mol)
{
    GLOBAL const int *info = modelInt + LAYER_TABLE + l * LAYER_FIELDS;
    GLOBAL const real *y = mol + STATE_AT + (l + 1) * NUM_DIMS;
    GLOBAL real *x = mol + STATE_AT + l * NUM_DIMS;
    GLOBAL const int *cond = modelInt + info[LF_COND];
    GLOBAL real *enc = mol + info[LF_ENC];
    for (int d = LOCAL_ID; d < NUM_DIMS; d += LOCAL_SIZE) x[d] = y[d];
    /* The encoding's slot of conditioning dim i: one per interval dim and
     * two per circular dim before it (a short scan per thread). */
    for (int i = LOCAL_ID; i < info[LF_NCOND]; i += LOCAL_SIZE) {
        int o = 0;
        for (int j = 0; j < i; j++) o += cond[j] >= NUM_INTERVAL ? 2 : 1;
        const int d = cond[i];
        if (d >= NUM_INTERVAL) {
            real c, s;
            sfm_encode_circular(y[d], &c, &s);
            enc[o] = c;
            enc[o + 1] = s;
        } else {
            enc[o] = sfm_encode_interval(y[d]);
        }
    }
    SYNC_THREADS;
}

/* 3b (batched path). The bias and activation of linear map m of layer l,
 * after the matrix product has put W x into its output block. */
DEVICE void sf_stage_bias_activate(int l, int m, GLOBAL const int *RESTRICT modelInt,
                                   GLOBAL const real *RESTRICT weights, GLOBAL real *RESTRICT mol)
{
    GLOBAL const int *info = modelInt + LAYER_TABLE + l * LAYER_FIELDS;
    GLOBAL const int *width = modelInt + info[LF_WIDTH];
    GLOBAL const int *linear = modelInt + info[LF_LINEAR];
    const int nOut = width[m + 1], act = info[LF_ACTIVATION];
    GLOBAL const real *bias = weights + linear[2 * m + 1];
    if (m == info[LF_NLINEAR] - 1) {
        GLOBAL real *params = mol + info[LF_PARAMS];
        for (int r = LOCAL_ID; r < nOut; r += LOCAL_SIZE) params[r] += bias[r];
    } else {
        GLOBAL real *aux = mol + sf_hidden_at(info, width, m), *post = aux + nOut;
        for (int r = LOCAL_ID; r < nOut; r += LOCAL_SIZE) {
            real a;
            post[r] = sfm_activate(act, aux[r] + bias[r], &a);
            aux[r] = a;
        }
    }
    SYNC_THREADS;
}

/* 3c. Layer l's transformed dimensions: state l + 1 -> state l, and -kT log-determinant. */
DEVICE void sf_stage_step(int l, int molecule, GLOBAL const int *RESTRICT modelInt, GLOBAL real *RESTRICT mol,
                          GLOBAL int *RESTRICT status, GLOBAL int *RESTRICT errorFlag, const sf_constants *k,
                          mixed kT, mixed *energy)
{
    GLOBAL const int *info = modelInt + LAYER_TABLE + l * LAYER_FIELDS;
    GLOBAL const real *y = mol + STATE_AT + (l + 1) * NUM_DIMS;
    GLOBAL real *x = mol + STATE_AT + l * NUM_DIMS;
    GLOBAL const int *trans = modelInt + info[LF_TRANS];
    const int P = info[LF_P];
    for (int i = LOCAL_ID; i < info[LF_NTRANS]; i += LOCAL_SIZE) {
        const int d = trans[i];
        real out = y[d], logdet = 0;
        const int it = sf_step(k, info[LF_TRANSFORM], info[LF_GENERATIVE], info[LF_K], mol + info[LF_PARAMS] + i * P,
                               d >= NUM_INTERVAL, y[d], &out, &logdet);
        if (it < 0) {
#ifdef USE_DOUBLE_PRECISION
            sf_fail(status, errorFlag, molecule, SF_DEVICE_STEP);
#else
            /* The affine states pass through a sigmoid, which in float is
             * exactly 1 once the logit passes about 17 (in double, 37). */
            sf_fail(status, errorFlag, molecule, it == -2 ? SF_DEVICE_AFFINE_FLOAT : SF_DEVICE_STEP);
#endif
            out = y[d];
            logdet = 0;
        } else if (!sf_finite(out) || !sf_finite(logdet)) {
            sf_fail(status, errorFlag, molecule, SF_DEVICE_NONFINITE);
        }
        x[d] = out;
        *energy -= kT * logdet;
    }
    SYNC_THREADS;
}

/* 4. The prior and the molecule's energy: the threads' shares summed in
 * mixed precision, in a fixed order.  Then, when forces follow, the reverse
 * pass's start: d(weight log p_U)/du of the prior, weight = -kT. */
DEVICE void sf_stage_energy(int molecule, GLOBAL const real *RESTRICT modelReal, GLOBAL real *RESTRICT mol,
                            GLOBAL mixed *RESTRICT moleculeEnergy, GLOBAL mm_long *RESTRICT wallCounts,
                            GLOBAL int *RESTRICT status, GLOBAL int *RESTRICT errorFlag, const sf_constants *k,
                            mixed kT, mixed energyConstant, int includeForces, int commit, mixed energy, int walls,
                            LOCAL_ARG mixed *energyShare, LOCAL_ARG int *wallShare)
{
#if HAS_PRIOR
    GLOBAL const real *z = mol + STATE_AT;
    GLOBAL const real *priorMean = modelReal + MR_BONDS + 2 * (NUM_ATOMS - 1), *priorSigma = priorMean + NUM_INTERVAL;
    for (int d = LOCAL_ID; d < NUM_INTERVAL; d += LOCAL_SIZE)
        energy += kT * sfm_prior_term(z[d], priorMean[d], priorSigma[d]);
#endif
#if HAS_TORSION_PRIOR
    GLOBAL const real *torsionMean = priorMean + 4 * NUM_INTERVAL, *torsionKappa = torsionMean + (NUM_ATOMS - 3);
    for (int t = LOCAL_ID; t < NUM_ATOMS - 3; t += LOCAL_SIZE)
        energy += kT * sfm_torsion_prior_term(z[NUM_INTERVAL + t], torsionMean[t], torsionKappa[t]);
#endif
    energyShare[LOCAL_ID] = energy;
    wallShare[LOCAL_ID] = walls;
    SYNC_THREADS;
    if (LOCAL_ID == 0) {
        mixed sum = energyConstant;
        int wallSum = 0;
        for (int t = 0; t < WORK_GROUP_SIZE; t++) {
            sum += energyShare[t];
            wallSum += wallShare[t];
        }
        if (!isfinite(sum)) sf_fail(status, errorFlag, molecule, SF_DEVICE_ENERGY);
        moleculeEnergy[molecule] = sum;
        if (commit) wallCounts[molecule] += wallSum;
    }
    if (includeForces) {
        GLOBAL real *gstate = mol + GSTATE_AT;
        for (int d = LOCAL_ID; d < NUM_DIMS; d += LOCAL_SIZE) {
#if HAS_TORSION_PRIOR
            gstate[d] = d < NUM_INTERVAL ? sfm_prior_gradient(z[d], priorMean[d], priorSigma[d], -k->kT)
                                         : sfm_torsion_prior_gradient(z[d], torsionMean[d - NUM_INTERVAL],
                                                                      torsionKappa[d - NUM_INTERVAL], -k->kT);
#elif HAS_PRIOR
            gstate[d] = d < NUM_INTERVAL ? sfm_prior_gradient(z[d], priorMean[d], priorSigma[d], -k->kT) : 0;
#else
            gstate[d] = 0;
#endif
        }
    }
    SYNC_THREADS;  /* also before the next molecule reuses the shares */
}

/* 5a. The reverse pass through layer l's transformed dimensions (layer 0
 * first): their adjoints and the gradient of the conditioner's output. */
DEVICE void sf_stage_adjoint(int l, GLOBAL const int *RESTRICT modelInt, GLOBAL real *RESTRICT mol, const sf_constants *k)
{
    GLOBAL const int *info = modelInt + LAYER_TABLE + l * LAYER_FIELDS;
    GLOBAL const real *x = mol + STATE_AT + l * NUM_DIMS, *y = mol + STATE_AT + (l + 1) * NUM_DIMS;
    GLOBAL const int *trans = modelInt + info[LF_TRANS];
    GLOBAL real *gstate = mol + GSTATE_AT, *gparams = mol + GPARAMS_AT;
    const int P = info[LF_P], nParams = info[LF_NTRANS] * P;
    const real weight = -k->kT;
    for (int j = LOCAL_ID; j < nParams; j += LOCAL_SIZE) gparams[j] = 0;
    SYNC_THREADS;
    for (int i = LOCAL_ID; i < info[LF_NTRANS]; i += LOCAL_SIZE) {
        const int d = trans[i];
        /* The density pass took y (state l + 1) to x (state l). */
        gstate[d] = sf_adjoint(k, info[LF_TRANSFORM], info[LF_GENERATIVE], info[LF_K], mol + info[LF_PARAMS] + i * P,
                               d >= NUM_INTERVAL, y[d], x[d], gstate[d], weight, gparams + i * P);
    }
    SYNC_THREADS;
}

/* 5b (batched path). After the transposed product of linear map m (m > 0)
 * has put W^T g into its gradient buffer: times the activation's derivative. */
DEVICE void sf_stage_activation_grad(int l, int m, GLOBAL const int *RESTRICT modelInt, GLOBAL real *RESTRICT mol,
                                     const sf_constants *k)
{
    GLOBAL const int *info = modelInt + LAYER_TABLE + l * LAYER_FIELDS;
    GLOBAL const int *width = modelInt + info[LF_WIDTH];
    const int nIn = width[m], act = info[LF_ACTIVATION];
    GLOBAL real *dst = mol + sf_backward_dst(k->genc, k->ga, k->gb, info[LF_NLINEAR], m);
    GLOBAL const real *aux = mol + sf_hidden_at(info, width, m - 1), *post = aux + nIn;
    for (int i = LOCAL_ID; i < nIn; i += LOCAL_SIZE) dst[i] *= sfm_activate_grad(act, aux[i], post[i]);
    SYNC_THREADS;
}

/* 5c. The encoding's gradient into the conditioning dimensions of layer l. */
DEVICE void sf_stage_encode_grad(int l, GLOBAL const int *RESTRICT modelInt, GLOBAL real *RESTRICT mol,
                                 const sf_constants *k)
{
    GLOBAL const int *info = modelInt + LAYER_TABLE + l * LAYER_FIELDS;
    GLOBAL const real *y = mol + STATE_AT + (l + 1) * NUM_DIMS;
    GLOBAL const int *cond = modelInt + info[LF_COND];
    GLOBAL const real *genc = mol + k->genc;
    GLOBAL real *gstate = mol + GSTATE_AT;
    for (int i = LOCAL_ID; i < info[LF_NCOND]; i += LOCAL_SIZE) {
        int o = 0;
        for (int j = 0; j < i; j++) o += cond[j] >= NUM_INTERVAL ? 2 : 1;
        const int d = cond[i];
        if (d >= NUM_INTERVAL) gstate[d] += sfm_encode_circular_grad(y[d], genc[o], genc[o + 1]);
        else gstate[d] += sfm_encode_interval_grad(genc[o]);
    }
    SYNC_THREADS;
}

/* 6. dE/dq and F = -B^T dE/dq, added atom by atom in fixed point (not on a
 * calibration run, commit = 0, which only times the path). */
DEVICE void sf_stage_forces(int molecule, GLOBAL const int *RESTRICT particleIndex,
                            GLOBAL const int *RESTRICT modelInt, GLOBAL const real *RESTRICT modelReal,
                            GLOBAL real *RESTRICT mol, GLOBAL mm_ulong *RESTRICT forceBuffers,
                            GLOBAL int *RESTRICT status, GLOBAL int *RESTRICT errorFlag, int paddedNumAtoms,
                            const sf_constants *k, int commit)
{
    GLOBAL const int *zmatrix = modelInt;
    GLOBAL const real *bondLo = modelReal + MR_BONDS, *bondHi = bondLo + (NUM_ATOMS - 1);
    GLOBAL const real *q = mol + Q_AT, *slope = mol + SLOPE_AT, *rows = mol + ROWS_AT, *gstate = mol + GSTATE_AT;
    for (int d = LOCAL_ID; d < NUM_DIMS; d += LOCAL_SIZE) {
        real offset, scale, dlogj, v = 0, c = 0, s = 1;
        sf_scale_of(bondLo, bondHi, d, &offset, &scale);
        const int walled = WALL && d < NUM_INTERVAL;
        if (walled) {
            v = (q[d] - offset) / scale;
            c = sfm_smooth_clamp(v, d < NUM_ATOMS - 1 ? k->margin : k->angleMargin, &s);
        }
        sfm_log_jacobian(sfm_dim_kind(d, NUM_ATOMS), walled ? offset + scale * c : q[d], &dlogj);
        const real wall = walled ? sfm_wall_gradient(v, c, slope[d], k->wallK,
                                                     sfm_wall_edge_force(v, modelReal[MR_EDGES + d],
                                                                         modelReal[MR_EDGES + NUM_INTERVAL + d]))
                                 : 0;
        const real gq = sfm_coordinate_gradient(gstate[d], k->kT, dlogj, scale, slope[d], wall);
        int at[4];
        const int n = sf_dim_atoms(zmatrix, d, at);
        for (int j = 0; j < n; j++) {
            const int atom = particleIndex[molecule * NUM_ATOMS + at[j]];
            for (int comp = 0; comp < 3; comp++) {
                const real f = -gq * rows[12 * d + 3 * j + comp];
                if (!sf_finite(f)) sf_fail(status, errorFlag, molecule, SF_DEVICE_FORCE);
                if (commit) ATOMIC_ADD(&forceBuffers[atom + comp * paddedNumAtoms], (mm_ulong) realToFixedPoint(f));
            }
        }
    }
    SYNC_THREADS;
}

#if !BATCHED_STAGES
/* Energy and forces of every molecule in one launch (the fused path): one
 * work-group per molecule at a time (OpenMM caps the number of work-groups,
 * so each takes every NUM_GROUPS-th molecule), the conditioners' products
 * as plain loops.  particleIndex holds, per molecule and model atom, the
 * atom's current index in OpenMM's reordered arrays.  Each molecule's energy
 * goes to moleculeEnergy (summed by sumSmoothFlowEnergy), its forces
 * straight into OpenMM's fixed-point force buffer (integer sums: the order
 * of the atomic adds does not change the result). */
KERNEL void computeSmoothFlow(GLOBAL const real4 *RESTRICT posq, GLOBAL const int *RESTRICT particleIndex,
                              GLOBAL const int *RESTRICT modelInt, GLOBAL const real *RESTRICT modelReal,
                              GLOBAL const real *RESTRICT weights, GLOBAL real *RESTRICT scratch,
                              GLOBAL mixed *RESTRICT moleculeEnergy, GLOBAL mm_ulong *RESTRICT forceBuffers,
                              GLOBAL int *RESTRICT status, GLOBAL int *RESTRICT errorFlag,
                              GLOBAL mm_long *RESTRICT wallCounts, int numMolecules, int paddedNumAtoms,
                              mixed kT, mixed energyConstant, int includeForces, int commit, real4 boxA, real4 boxB,
                              real4 boxC)
{
    LOCAL mixed energyShare[WORK_GROUP_SIZE];
    LOCAL int wallShare[WORK_GROUP_SIZE];
    sf_constants k;
    sf_load_constants(modelInt, modelReal, kT, &k);
    const real box[9] = {boxA.x, boxA.y, boxA.z, boxB.x, boxB.y, boxB.z, boxC.x, boxC.y, boxC.z};
    for (int molecule = GROUP_ID; molecule < numMolecules; molecule += NUM_GROUPS) {
        GLOBAL real *mol = scratch + (size_t) molecule * k.stride;
        mixed energy = 0;
        int walls = 0;
        sf_stage_coordinates(molecule, posq, particleIndex, modelInt, modelReal, mol, status, errorFlag, box, &k, kT,
                             &energy, &walls);
        for (int l = NUM_LAYERS - 1; l >= 0; l--) {
            sf_stage_encode(l, modelInt, mol);
            sf_conditioner_forward(modelInt + LAYER_TABLE + l * LAYER_FIELDS, modelInt, weights, mol);
            sf_stage_step(l, molecule, modelInt, mol, status, errorFlag, &k, kT, &energy);
        }
        sf_stage_energy(molecule, modelReal, mol, moleculeEnergy, wallCounts, status, errorFlag, &k, kT, energyConstant,
                        includeForces, commit, energy, walls, energyShare, wallShare);
        if (!includeForces) continue;  /* uniform over the work-group: no barrier is skipped by some threads only */
        for (int l = 0; l < NUM_LAYERS; l++) {
            sf_stage_adjoint(l, modelInt, mol, &k);
            sf_conditioner_backward(modelInt + LAYER_TABLE + l * LAYER_FIELDS, modelInt, weights, mol, &k);
            sf_stage_encode_grad(l, modelInt, mol, &k);
        }
        sf_stage_forces(molecule, particleIndex, modelInt, modelReal, mol, forceBuffers, status, errorFlag,
                        paddedNumAtoms, &k, commit);
    }
}

/* The molecules' energies into OpenMM's energy buffer: one work-group, each
 * thread a fixed stride of molecules, so the sum does not depend on timing. */
KERNEL void sumSmoothFlowEnergy(GLOBAL const mixed *RESTRICT moleculeEnergy, GLOBAL mixed *RESTRICT energyBuffer,
                                int numMolecules)
{
    mixed sum = 0;
    for (int m = LOCAL_ID; m < numMolecules; m += LOCAL_SIZE) sum += moleculeEnergy[m];
    energyBuffer[GLOBAL_ID] += sum;
}
#else

/* The stages of the batched path (SF_STAGE_*), one launch each for every
 * molecule, between the matrix products the host hands to the platform's
 * BLAS (CommonSmoothFlowKernels.cpp).  `layer` and `linear` say which
 * layer and which of its linear maps.  Each thread's energy and wall-count
 * shares wait in energyPartial and wallPartial between launches. */
#define SF_STAGE_COORDINATES 0
#define SF_STAGE_ENCODE 1
#define SF_STAGE_BIAS_ACTIVATE 2
#define SF_STAGE_STEP 3
#define SF_STAGE_ENERGY 4
#define SF_STAGE_ADJOINT 5
#define SF_STAGE_ACTIVATION_GRAD 6
#define SF_STAGE_ENCODE_GRAD 7
#define SF_STAGE_FORCES 8
KERNEL void computeSmoothFlowStage(int stage, int layer, int linear, GLOBAL const real4 *RESTRICT posq,
                                   GLOBAL const int *RESTRICT particleIndex, GLOBAL const int *RESTRICT modelInt,
                                   GLOBAL const real *RESTRICT modelReal, GLOBAL const real *RESTRICT weights,
                                   GLOBAL real *RESTRICT scratch, GLOBAL mixed *RESTRICT moleculeEnergy,
                                   GLOBAL mm_ulong *RESTRICT forceBuffers, GLOBAL int *RESTRICT status,
                                   GLOBAL int *RESTRICT errorFlag, GLOBAL mm_long *RESTRICT wallCounts,
                                   GLOBAL mixed *RESTRICT energyPartial, GLOBAL int *RESTRICT wallPartial,
                                   int numMolecules, int paddedNumAtoms, mixed kT, mixed energyConstant,
                                   int includeForces, int commit, real4 boxA, real4 boxB, real4 boxC)
{
    LOCAL mixed energyShare[WORK_GROUP_SIZE];
    LOCAL int wallShare[WORK_GROUP_SIZE];
    sf_constants k;
    sf_load_constants(modelInt, modelReal, kT, &k);
    const real box[9] = {boxA.x, boxA.y, boxA.z, boxB.x, boxB.y, boxB.z, boxC.x, boxC.y, boxC.z};
    for (int molecule = GROUP_ID; molecule < numMolecules; molecule += NUM_GROUPS) {
        GLOBAL real *mol = scratch + (size_t) molecule * k.stride;
        const int share = molecule * WORK_GROUP_SIZE + LOCAL_ID;
        mixed energy = stage == SF_STAGE_COORDINATES ? 0 : energyPartial[share];
        int walls = stage == SF_STAGE_COORDINATES ? 0 : wallPartial[share];
        switch (stage) {
        case SF_STAGE_COORDINATES:
            sf_stage_coordinates(molecule, posq, particleIndex, modelInt, modelReal, mol, status, errorFlag, box, &k,
                                 kT, &energy, &walls);
            break;
        case SF_STAGE_ENCODE: sf_stage_encode(layer, modelInt, mol); break;
        case SF_STAGE_BIAS_ACTIVATE: sf_stage_bias_activate(layer, linear, modelInt, weights, mol); break;
        case SF_STAGE_STEP: sf_stage_step(layer, molecule, modelInt, mol, status, errorFlag, &k, kT, &energy); break;
        case SF_STAGE_ENERGY:
            sf_stage_energy(molecule, modelReal, mol, moleculeEnergy, wallCounts, status, errorFlag, &k, kT,
                            energyConstant, includeForces, commit, energy, walls, energyShare, wallShare);
            break;
        case SF_STAGE_ADJOINT: sf_stage_adjoint(layer, modelInt, mol, &k); break;
        case SF_STAGE_ACTIVATION_GRAD: sf_stage_activation_grad(layer, linear, modelInt, mol, &k); break;
        case SF_STAGE_ENCODE_GRAD: sf_stage_encode_grad(layer, modelInt, mol, &k); break;
        default:
            sf_stage_forces(molecule, particleIndex, modelInt, modelReal, mol, forceBuffers, status, errorFlag,
                            paddedNumAtoms, &k, commit);
        }
        if (stage == SF_STAGE_COORDINATES || stage == SF_STAGE_STEP) {
            energyPartial[share] = energy;
            wallPartial[share] = walls;
        }
    }
}
#endif
