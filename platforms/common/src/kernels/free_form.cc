/* free_form.cc -- the free-form flow's potential (issue 23; docs/free-form-kernels.md) in
 * OpenMM's common compute dialect (KERNEL, GLOBAL, LOCAL, SYNC_THREADS, real, mixed, ...):
 *
 *     U(x) = -kT [log N(f(x); 0, I_D) + log |det J_V(x)|] + U0,   F = kT d log p / dx,
 *
 * for an E(n)-equivariant encoder f over N particles in DIM dimensions.  The algorithm is the
 * C core's, step by step (core/src/sf_egnn.c, whose header comment derives it): a forward pass
 * carrying S = T + 1 slots (values, and the tangents along the T = (N - 1) DIM basis vectors
 * P e_(p,a) of the centre-of-mass-free subspace V), the LU of the T x T matrix J_V with partial
 * pivoting for log |det J_V|, then one reverse pass with A = J_V^-T held fixed.  SiLU and its
 * two derivatives are sfm_silu2 of the shared mathematics (core/src/math/sf_math_mlp.h),
 * compiled before this text; the matrix products are plain loops.
 *
 * One work-group evaluates one copy (molecule) at a time: its threads split the rows x columns
 * of every product, the (group, column) pairs of every SiLU, the edges of a receiving particle
 * and the rows of the LU, with a barrier between stages.  Each work-group has its own slice of
 * `scratch` (FF_WORKSPACE reals: the C core's workspace layout) and takes every NUM_GROUPS-th
 * copy.  Storage is in real; products, sums over edges and the energy accumulate in mixed
 * (double in mixed and double precision).
 *
 * Each region between two barriers holds at most one loop strided by LOCAL_SIZE: with two in
 * one region PoCL 3.1 (on the CPU) ran the first one for none or only some of its
 * iterations once the work-group had more threads than that loop had items.
 *
 * Compile-time constants (CommonFreeFormKernel.cpp): FF_N, FF_DIM, FF_H, FF_L (particles,
 * dimensions, hidden width, layers) and WORK_GROUP_SIZE.  The weights of layer l start at
 * l * FF_LAYER_WEIGHTS in `weights` (the offsets FF_W_* below, zero where the last layer has no
 * node update), then h0. */

#define FF_T ((FF_N - 1) * FF_DIM)
#define FF_S (FF_T + 1)
#define FF_R ((FF_N - 1) * FF_S)
#define FF_LD1 (2 * FF_H + 1)

/* One layer's weights, in this order (W row-major [out, in] as nn.Linear's). */
#define FF_W_E1 0
#define FF_B_E1 (FF_W_E1 + FF_H * FF_LD1)
#define FF_W_E2 (FF_B_E1 + FF_H)
#define FF_B_E2 (FF_W_E2 + FF_H * FF_H)
#define FF_W_C1 (FF_B_E2 + FF_H)
#define FF_B_C1 (FF_W_C1 + FF_H * FF_H)
#define FF_W_C2 (FF_B_C1 + FF_H)
#define FF_B_C2 (FF_W_C2 + FF_H)
#define FF_W_N1 (FF_B_C2 + 1)
#define FF_B_N1 (FF_W_N1 + 2 * FF_H * FF_H)
#define FF_W_N2 (FF_B_N1 + FF_H)
#define FF_B_N2 (FF_W_N2 + FF_H * FF_H)
#define FF_LAYER_WEIGHTS (FF_B_N2 + FF_H)
#define FF_H0 (FF_L * FF_LAYER_WEIGHTS)

/* A work-group's workspace (reals), as egnn_layout of sf_egnn.c with S = T + 1; rows are
 * particle i, slot s at i S + s (H or DIM columns), a block's rows jj S + s. */
#define FF_NSD (FF_N * FF_S * FF_DIM)
#define FF_NSH (FF_N * FF_S * FF_H)
#define FF_RH (FF_R * FF_H)
#define FF_XS 0                               /* (L + 1) NSD: each layer's input positions, then f's */
#define FF_HS (FF_XS + (FF_L + 1) * FF_NSD)  /* L NSH: each layer's input node features */
#define FF_AGG (FF_HS + FF_L * FF_NSH)       /* L NSH: each layer's aggregated messages */
#define FF_PM (FF_AGG + FF_L * FF_NSH)       /* NSH: W_a h_i + b, the edge map's half for i */
#define FF_QM (FF_PM + FF_NSH)               /* NSH: W_b h_j */
#define FF_PBAR (FF_QM + FF_NSH)
#define FF_QBAR (FF_PBAR + FF_NSH)
#define FF_BLK (FF_QBAR + FF_NSH)            /* 8 RH: a1 s1 a2 m c1 sc and two adjoint blocks */
#define FF_PHI (FF_BLK + 8 * FF_RH)          /* R */
#define FF_PHIBAR (FF_PHI + FF_R)            /* R */
#define FF_DBAR (FF_PHIBAR + FF_R)           /* R DIM: adjoints of x_i - x_j */
#define FF_N1 (FF_DBAR + FF_R * FF_DIM)      /* NSH: node map's pre-activation */
#define FF_SN (FF_N1 + FF_NSH)               /* NSH: its activation, or adjoint */
#define FF_XBO (FF_SN + FF_NSH)              /* NSD each: adjoints of a layer's output, input positions */
#define FF_XBI (FF_XBO + FF_NSD)
#define FF_HBO (FF_XBI + FF_NSD)             /* NSH each: the same for node features */
#define FF_HBI (FF_HBO + FF_NSH)
#define FF_AGGBAR (FF_HBI + FF_NSH)
#define FF_Z (FF_AGGBAR + FF_NSH)            /* N DIM: positions, then f(x) */
#define FF_LU (FF_Z + FF_N * FF_DIM)         /* T T: J_V, then its LU */
#define FF_AINV (FF_LU + FF_T * FF_T)        /* T T: A = J_V^-T */
#define FF_WORKSPACE (FF_AINV + FF_T * FF_T)

/* Error codes, one per copy in `status` (0: fine); the host reruns the copy through the C
 * core for the message (CommonFreeFormKernel::reportError). */
#define FF_DEVICE_INPUT 1     /* a position is not finite */
#define FF_DEVICE_SINGULAR 2  /* a zero pivot of J_V's LU (det J_V = 0, or J_V not finite) */
#define FF_DEVICE_ENERGY 3    /* f(x), log p or the energy is not finite */
#define FF_DEVICE_FORCE 4     /* a force is not finite */

/* ------------------------------------------------------------------ products, SiLU */

/* Y (M x N) = X (M x K, ldx) W^T (+ Y if accumulate), W (N x K, ldw); plus bias[c] on the rows
 * r with r % biasSlots == 0 (slot 0 of each group: the bias moves values, not tangents), when
 * biasSlots > 0. */
DEVICE void ff_mul_wt(int M, int N, int K, GLOBAL const real *X, int ldx, GLOBAL const real *W, int ldw,
                      GLOBAL const real *bias, int biasSlots, int accumulate, GLOBAL real *Y)
{
    for (int idx = LOCAL_ID; idx < M * N; idx += LOCAL_SIZE) {
        const int r = idx / N, c = idx - r * N;
        GLOBAL const real *x = X + (size_t) r * ldx;
        GLOBAL const real *w = W + (size_t) c * ldw;
        mixed sum = accumulate ? (mixed) Y[idx] : (mixed) 0;
        if (biasSlots > 0 && r % biasSlots == 0) sum += bias[c];
        for (int k = 0; k < K; k++) sum += x[k] * w[k];
        Y[idx] = (real) sum;
    }
    SYNC_THREADS;
}

/* Xb (M x K, ldx) = Yb (M x N) W (+ Xb if accumulate), W (N x K, ldw): ff_mul_wt's adjoint. */
DEVICE void ff_mul_w(int M, int N, int K, GLOBAL const real *Yb, GLOBAL const real *W, int ldw, int accumulate,
                     GLOBAL real *Xb, int ldx)
{
    for (int idx = LOCAL_ID; idx < M * K; idx += LOCAL_SIZE) {
        const int r = idx / K, c = idx - r * K;
        GLOBAL const real *yb = Yb + (size_t) r * N;
        mixed sum = accumulate ? (mixed) Xb[(size_t) r * ldx + c] : (mixed) 0;
        for (int j = 0; j < N; j++) sum += yb[j] * W[(size_t) j * ldw + c];
        Xb[(size_t) r * ldx + c] = (real) sum;
    }
    SYNC_THREADS;
}

/* SiLU over G groups of S rows x H: slot 0 silu(a), slot t silu'(a_0) a_t.  One thread per
 * (group, column). */
DEVICE void ff_silu_forward(int G, GLOBAL const real *A, GLOBAL real *Y)
{
    for (int idx = LOCAL_ID; idx < G * FF_H; idx += LOCAL_SIZE) {
        const int g = idx / FF_H, k = idx - g * FF_H;
        const size_t at = (size_t) g * FF_S * FF_H + k;
        real d1, d2;
        Y[at] = sfm_silu2(A[at], &d1, &d2);
        for (int s = 1; s < FF_S; s++) Y[at + (size_t) s * FF_H] = d1 * A[at + (size_t) s * FF_H];
    }
    SYNC_THREADS;
}

/* Its adjoint, Ybar -> Abar (may be the same array): Abar_0 = silu'(a_0) Ybar_0 +
 * silu''(a_0) sum_t a_t Ybar_t, Abar_t = silu'(a_0) Ybar_t.  Each thread owns its column. */
DEVICE void ff_silu_reverse(int G, GLOBAL const real *A, GLOBAL const real *Yb, GLOBAL real *Ab)
{
    for (int idx = LOCAL_ID; idx < G * FF_H; idx += LOCAL_SIZE) {
        const int g = idx / FF_H, k = idx - g * FF_H;
        const size_t at = (size_t) g * FF_S * FF_H + k;
        real d1, d2;
        sfm_silu2(A[at], &d1, &d2);
        mixed acc = 0;
        for (int s = 1; s < FF_S; s++) acc += A[at + (size_t) s * FF_H] * Yb[at + (size_t) s * FF_H];
        const real first = (real) (d1 * Yb[at] + d2 * acc);
        for (int s = 1; s < FF_S; s++) Ab[at + (size_t) s * FF_H] = d1 * Yb[at + (size_t) s * FF_H];
        Ab[at] = first;
    }
    SYNC_THREADS;
}

/* ------------------------------------------------------------------------- layers */

/* The edge block of receiving particle i: a1, s1, a2, m, c1, sc (each R x H) and phi (R), from
 * the layer's input positions x (N S x DIM) and the edge map's halves in FF_PM, FF_QM. */
DEVICE void ff_edge_block(GLOBAL const real *w, int i, GLOBAL const real *x, GLOBAL real *ws, real invScale2)
{
    GLOBAL real *a1 = ws + FF_BLK, *s1 = a1 + FF_RH, *a2 = s1 + FF_RH, *m = a2 + FF_RH, *c1 = m + FF_RH;
    GLOBAL real *sc = c1 + FF_RH, *phi = ws + FF_PHI;
    GLOBAL const real *pm = ws + FF_PM, *qm = ws + FF_QM, *wr = w + FF_W_E1 + 2 * FF_H;
    GLOBAL const real *xi = x + (size_t) i * FF_S * FF_DIM;
    for (int idx = LOCAL_ID; idx < FF_RH; idx += LOCAL_SIZE) {
        const int row = idx / FF_H, k = idx - row * FF_H, jj = row / FF_S, s = row - jj * FF_S;
        const int j = jj < i ? jj : jj + 1;
        GLOBAL const real *xj = x + (size_t) j * FF_S * FF_DIM;
        /* r = |x_i - x_j|^2 / s^2, its tangent 2 (x_i - x_j).(xdot_i - xdot_j) / s^2 */
        real r = 0;
        for (int a = 0; a < FF_DIM; a++) {
            const real diff = xi[a] - xj[a];
            r += diff * (s == 0 ? diff : xi[s * FF_DIM + a] - xj[s * FF_DIM + a]);
        }
        r *= s == 0 ? invScale2 : 2 * invScale2;
        a1[idx] = pm[((size_t) i * FF_S + s) * FF_H + k] + qm[((size_t) j * FF_S + s) * FF_H + k] + wr[k * FF_LD1] * r;
    }
    SYNC_THREADS;
    ff_silu_forward(FF_N - 1, a1, s1);
    ff_mul_wt(FF_R, FF_H, FF_H, s1, FF_H, w + FF_W_E2, FF_H, w + FF_B_E2, FF_S, 0, a2);
    ff_silu_forward(FF_N - 1, a2, m);
    ff_mul_wt(FF_R, FF_H, FF_H, m, FF_H, w + FF_W_C1, FF_H, w + FF_B_C1, FF_S, 0, c1);
    ff_silu_forward(FF_N - 1, c1, sc);
    for (int r = LOCAL_ID; r < FF_R; r += LOCAL_SIZE) {
        GLOBAL const real *row = sc + (size_t) r * FF_H;
        mixed v = r % FF_S == 0 ? (mixed) w[FF_B_C2] : (mixed) 0;
        for (int k = 0; k < FF_H; k++) v += row[k] * w[FF_W_C2 + k];
        phi[r] = (real) v;
    }
    SYNC_THREADS;
}

/* pm = h W_a^T + b_e1, qm = h W_b^T (the edge map's weight is [W_a | W_b | w_r]). */
DEVICE void ff_edge_halves(GLOBAL const real *w, GLOBAL const real *h, GLOBAL real *ws)
{
    ff_mul_wt(FF_N * FF_S, FF_H, FF_H, h, FF_H, w + FF_W_E1, FF_LD1, w + FF_B_E1, FF_S, 0, ws + FF_PM);
    ff_mul_wt(FF_N * FF_S, FF_H, FF_H, h, FF_H, w + FF_W_E1 + FF_H, FF_LD1, w, 0, 0, ws + FF_QM);
}

/* n1 = [h, agg] W_n1^T + b_n1. */
DEVICE void ff_node_preactivation(GLOBAL const real *w, GLOBAL const real *h, GLOBAL const real *agg,
                                  GLOBAL real *n1)
{
    ff_mul_wt(FF_N * FF_S, FF_H, FF_H, h, FF_H, w + FF_W_N1, 2 * FF_H, w + FF_B_N1, FF_S, 0, n1);
    ff_mul_wt(FF_N * FF_S, FF_H, FF_H, agg, FF_H, w + FF_W_N1 + FF_H, 2 * FF_H, w, 0, 1, n1);
}

/* Layer l forward: (x, h) -> (xo, ho), the aggregated messages into agg.  The last layer's node
 * update reaches no output (node = 0; ho is not written when hasHo = 0). */
DEVICE void ff_layer_forward(int l, GLOBAL const real *weights, GLOBAL const real *x, GLOBAL const real *h,
                             GLOBAL real *xo, int hasHo, GLOBAL real *ho, GLOBAL real *agg, GLOBAL real *ws,
                             real invScale2)
{
    GLOBAL const real *w = weights + (size_t) l * FF_LAYER_WEIGHTS;
    const int node = hasHo && l < FF_L - 1;
    GLOBAL const real *m = ws + FF_BLK + 3 * FF_RH, *phi = ws + FF_PHI;
    const mixed c = (mixed) 1 / (FF_N - 1);
    ff_edge_halves(w, h, ws);
    for (int i = 0; i < FF_N; i++) {
        ff_edge_block(w, i, x, ws, invScale2);
        GLOBAL const real *xi = x + (size_t) i * FF_S * FF_DIM;
        /* x_i' = x_i + c sum_j (x_i - x_j) phi_ij, and its tangents (product rule) */
        for (int idx = LOCAL_ID; idx < FF_S * FF_DIM; idx += LOCAL_SIZE) {
            const int s = idx / FF_DIM, a = idx - s * FF_DIM;
            mixed acc = 0;
            for (int jj = 0; jj < FF_N - 1; jj++) {
                GLOBAL const real *xj = x + (size_t) (jj < i ? jj : jj + 1) * FF_S * FF_DIM;
                const real diff = xi[a] - xj[a], p0 = phi[jj * FF_S];
                if (s == 0)
                    acc += diff * p0;
                else
                    acc += (xi[idx] - xj[idx]) * p0 + diff * phi[jj * FF_S + s];
            }
            xo[(size_t) i * FF_S * FF_DIM + idx] = (real) (xi[idx] + c * acc);
        }
        SYNC_THREADS;
        if (node)
            for (int idx = LOCAL_ID; idx < FF_S * FF_H; idx += LOCAL_SIZE) {
                mixed sum = 0;
                for (int jj = 0; jj < FF_N - 1; jj++) sum += m[(size_t) jj * FF_S * FF_H + idx];
                agg[(size_t) i * FF_S * FF_H + idx] = (real) sum;
            }
        SYNC_THREADS;
    }
    if (!hasHo) return;
    for (int idx = LOCAL_ID; idx < FF_NSH; idx += LOCAL_SIZE) ho[idx] = h[idx];
    SYNC_THREADS;
    if (!node) return;
    GLOBAL real *n1 = ws + FF_N1, *sn = ws + FF_SN;
    ff_node_preactivation(w, h, agg, n1);
    ff_silu_forward(FF_N, n1, sn);
    ff_mul_wt(FF_N * FF_S, FF_H, FF_H, sn, FF_H, w + FF_W_N2, FF_H, w + FF_B_N2, FF_S, 1, ho);
}

/* Layer l's reverse pass: the adjoints xbo, hbo (hasHbo = 0: zero, the last layer) of its
 * outputs give those of its inputs, xbi and hbi; x, h, agg are its stored inputs.  The edge
 * blocks are recomputed, one receiving particle at a time. */
DEVICE void ff_layer_reverse(int l, GLOBAL const real *weights, GLOBAL const real *x, GLOBAL const real *h,
                             GLOBAL const real *agg, GLOBAL const real *xbo, int hasHbo, GLOBAL const real *hbo,
                             GLOBAL real *xbi, GLOBAL real *hbi, GLOBAL real *ws, real invScale2)
{
    GLOBAL const real *w = weights + (size_t) l * FF_LAYER_WEIGHTS;
    const int node = hasHbo && l < FF_L - 1;
    GLOBAL real *a1 = ws + FF_BLK, *a2 = a1 + 2 * FF_RH, *c1 = a1 + 4 * FF_RH, *g1 = a1 + 6 * FF_RH;
    GLOBAL real *g2 = a1 + 7 * FF_RH, *phi = ws + FF_PHI, *phibar = ws + FF_PHIBAR, *dbar = ws + FF_DBAR;
    GLOBAL real *pbar = ws + FF_PBAR, *qbar = ws + FF_QBAR, *aggbar = ws + FF_AGGBAR;
    GLOBAL const real *wr = w + FF_W_E1 + 2 * FF_H;
    const real c = (real) 1 / (FF_N - 1), twoS2 = 2 * invScale2;

    for (int idx = LOCAL_ID; idx < FF_NSD; idx += LOCAL_SIZE) xbi[idx] = xbo[idx];
    SYNC_THREADS;
    for (int idx = LOCAL_ID; idx < FF_NSH; idx += LOCAL_SIZE) hbi[idx] = hasHbo ? hbo[idx] : 0;
    SYNC_THREADS;
    if (node) {
        /* h' = h + W_n2 silu(n1) + b: sbar = hbo W_n2, n1bar through SiLU, then h and agg */
        GLOBAL real *n1 = ws + FF_N1, *sb = ws + FF_SN;
        ff_node_preactivation(w, h, agg, n1);
        ff_mul_w(FF_N * FF_S, FF_H, FF_H, hbo, w + FF_W_N2, FF_H, 0, sb, FF_H);
        ff_silu_reverse(FF_N, n1, sb, sb);
        ff_mul_w(FF_N * FF_S, FF_H, FF_H, sb, w + FF_W_N1, 2 * FF_H, 1, hbi, FF_H);
        ff_mul_w(FF_N * FF_S, FF_H, FF_H, sb, w + FF_W_N1 + FF_H, 2 * FF_H, 0, aggbar, FF_H);
    }
    ff_edge_halves(w, h, ws);
    for (int idx = LOCAL_ID; idx < FF_NSH; idx += LOCAL_SIZE) {
        pbar[idx] = 0;
        qbar[idx] = 0;
    }
    SYNC_THREADS;

    for (int i = 0; i < FF_N; i++) {
        ff_edge_block(w, i, x, ws, invScale2);
        GLOBAL const real *xi = x + (size_t) i * FF_S * FF_DIM, *xb = xbo + (size_t) i * FF_S * FF_DIM;
        /* The coordinate update's adjoint, one edge per thread (sf_egnn.c, layer_reverse):
         * phibar_0 = c (xbar_0.diff + sum_t xbar_t.diffdot_t), phibar_t = c xbar_t.diff,
         * diffbar_0 = c (xbar_0 phi_0 + sum_t xbar_t phi_t), diffdotbar_t = c xbar_t phi_0. */
        for (int jj = LOCAL_ID; jj < FF_N - 1; jj += LOCAL_SIZE) {
            GLOBAL const real *xj = x + (size_t) (jj < i ? jj : jj + 1) * FF_S * FF_DIM;
            GLOBAL const real *ph = phi + jj * FF_S;
            GLOBAL real *pb = phibar + jj * FF_S, *db = dbar + (size_t) jj * FF_S * FF_DIM;
            mixed pb0 = 0, db0[FF_DIM];
            for (int a = 0; a < FF_DIM; a++) {
                pb0 += xb[a] * (xi[a] - xj[a]);
                db0[a] = xb[a] * ph[0];
            }
            for (int s = 1; s < FF_S; s++) {
                mixed pbs = 0;
                for (int a = 0; a < FF_DIM; a++) {
                    const real diff = xi[a] - xj[a], ddot = xi[s * FF_DIM + a] - xj[s * FF_DIM + a];
                    const real xbs = xb[s * FF_DIM + a];
                    pb0 += xbs * ddot;
                    pbs += xbs * diff;
                    db0[a] += xbs * ph[s];
                    db[s * FF_DIM + a] = c * xbs * ph[0];
                }
                pb[s] = (real) (c * pbs);
            }
            pb[0] = (real) (c * pb0);
            for (int a = 0; a < FF_DIM; a++) db[a] = (real) (c * db0[a]);
        }
        SYNC_THREADS;
        /* phi = sc . w_c2 -> scbar = phibar w_c2, then back through coord1, edge2, edge1 */
        for (int idx = LOCAL_ID; idx < FF_RH; idx += LOCAL_SIZE) {
            const int r = idx / FF_H;
            g1[idx] = phibar[r] * w[FF_W_C2 + idx - r * FF_H];
        }
        SYNC_THREADS;
        ff_silu_reverse(FF_N - 1, c1, g1, g1);
        ff_mul_w(FF_R, FF_H, FF_H, g1, w + FF_W_C1, FF_H, 0, g2, FF_H);
        if (node) { /* agg_i = sum_j m_ij: every edge of i receives agg_i's adjoint */
            for (int idx = LOCAL_ID; idx < FF_RH; idx += LOCAL_SIZE)
                g2[idx] += aggbar[(size_t) i * FF_S * FF_H + idx % (FF_S * FF_H)];
            SYNC_THREADS;
        }
        ff_silu_reverse(FF_N - 1, a2, g2, g2);
        ff_mul_w(FF_R, FF_H, FF_H, g2, w + FF_W_E2, FF_H, 0, g1, FF_H);
        ff_silu_reverse(FF_N - 1, a1, g1, g1);
        /* a1 = pm_i + qm_j + w_r r: into pbar (row i, summed over its edges), qbar (row j: one
         * edge each), and rbar = w_r . a1bar per edge and slot (into phibar, no longer needed) */
        for (int idx = LOCAL_ID; idx < FF_S * FF_H; idx += LOCAL_SIZE) {
            mixed sum = pbar[(size_t) i * FF_S * FF_H + idx];
            for (int jj = 0; jj < FF_N - 1; jj++) sum += g1[(size_t) jj * FF_S * FF_H + idx];
            pbar[(size_t) i * FF_S * FF_H + idx] = (real) sum;
        }
        SYNC_THREADS;
        for (int idx = LOCAL_ID; idx < FF_RH; idx += LOCAL_SIZE) {
            const int jj = idx / (FF_S * FF_H), rest = idx - jj * FF_S * FF_H;
            qbar[(size_t) (jj < i ? jj : jj + 1) * FF_S * FF_H + rest] += g1[idx];
        }
        SYNC_THREADS;
        for (int r = LOCAL_ID; r < FF_R; r += LOCAL_SIZE) {
            mixed rb = 0;
            for (int k = 0; k < FF_H; k++) rb += wr[k * FF_LD1] * g1[(size_t) r * FF_H + k];
            phibar[r] = (real) rb;
        }
        SYNC_THREADS;
        /* r = |diff|^2 / s^2 (slot 0), 2 diff.diffdot / s^2 (slots t): into diffbar, per edge */
        for (int jj = LOCAL_ID; jj < FF_N - 1; jj += LOCAL_SIZE) {
            GLOBAL const real *xj = x + (size_t) (jj < i ? jj : jj + 1) * FF_S * FF_DIM;
            GLOBAL real *db = dbar + (size_t) jj * FF_S * FF_DIM;
            mixed db0[FF_DIM];
            for (int a = 0; a < FF_DIM; a++) db0[a] = db[a] + twoS2 * phibar[jj * FF_S] * (xi[a] - xj[a]);
            for (int s = 1; s < FF_S; s++) {
                const real rb = twoS2 * phibar[jj * FF_S + s];
                for (int a = 0; a < FF_DIM; a++) {
                    db0[a] += rb * (xi[s * FF_DIM + a] - xj[s * FF_DIM + a]);
                    db[s * FF_DIM + a] += rb * (xi[a] - xj[a]);
                }
            }
            for (int a = 0; a < FF_DIM; a++) db[a] = (real) db0[a];
        }
        SYNC_THREADS;
        /* diff = x_i - x_j in every slot: + to row i (summed over the edges), - to each row j */
        for (int idx = LOCAL_ID; idx < FF_S * FF_DIM; idx += LOCAL_SIZE) {
            mixed sum = xbi[(size_t) i * FF_S * FF_DIM + idx];
            for (int jj = 0; jj < FF_N - 1; jj++) sum += dbar[(size_t) jj * FF_S * FF_DIM + idx];
            xbi[(size_t) i * FF_S * FF_DIM + idx] = (real) sum;
        }
        SYNC_THREADS;
        for (int idx = LOCAL_ID; idx < FF_R * FF_DIM; idx += LOCAL_SIZE) {
            const int jj = idx / (FF_S * FF_DIM), rest = idx - jj * FF_S * FF_DIM;
            xbi[(size_t) (jj < i ? jj : jj + 1) * FF_S * FF_DIM + rest] -= dbar[idx];
        }
        SYNC_THREADS;
    }
    ff_mul_w(FF_N * FF_S, FF_H, FF_H, pbar, w + FF_W_E1, FF_LD1, 1, hbi, FF_H);
    ff_mul_w(FF_N * FF_S, FF_H, FF_H, qbar, w + FF_W_E1 + FF_H, FF_LD1, 1, hbi, FF_H);
}

/* ----------------------------------------------------------------------- kernels */

DEVICE void ff_fail(GLOBAL int *status, GLOBAL int *errorFlag, int molecule, int code)
{
    if (status[molecule] == 0) status[molecule] = code;
    errorFlag[0] = 1;
}

/* Energy and forces of every copy: one work-group per copy at a time, its workspace
 * scratch + GROUP_ID * FF_WORKSPACE.  particleIndex holds, per copy and model particle, the
 * particle's index in OpenMM's reordered arrays.  Each copy's energy goes to moleculeEnergy
 * (summed by sumFreeFormEnergy), its forces into OpenMM's fixed-point force buffer (integer
 * sums: the order of the atomic adds does not change the result).  energyConstant =
 * U0 + kT (T/2) log(2 pi). */
KERNEL void computeFreeForm(GLOBAL const real4 *RESTRICT posq, GLOBAL const int *RESTRICT particleIndex,
                            GLOBAL const real *RESTRICT weights, GLOBAL real *RESTRICT scratch,
                            GLOBAL mixed *RESTRICT moleculeEnergy, GLOBAL mm_ulong *RESTRICT forceBuffers,
                            GLOBAL int *RESTRICT status, GLOBAL int *RESTRICT errorFlag, int numMolecules,
                            int paddedNumAtoms, real invScale2, mixed kT, mixed energyConstant, int includeForces)
{
    LOCAL mixed share[WORK_GROUP_SIZE];
    LOCAL int pivot[FF_T];
    LOCAL int failed;
    GLOBAL real *ws = scratch + (size_t) GROUP_ID * FF_WORKSPACE;
    GLOBAL real *z = ws + FF_Z, *lu = ws + FF_LU, *at = ws + FF_AINV;
    GLOBAL const real *xl = ws + FF_XS + (size_t) FF_L * FF_NSD;
    for (int molecule = GROUP_ID; molecule < numMolecules; molecule += NUM_GROUPS) {
        if (LOCAL_ID == 0) failed = 0;
        SYNC_THREADS;
        /* 1. the first DIM components of each particle, then P x in slot 0 and the basis
         * P e_(p,a) in slots 1 + t, t = p DIM + a; h = h0 (a constant: zero tangents) */
        for (int k = LOCAL_ID; k < FF_N * FF_DIM; k += LOCAL_SIZE) {
            const int i = k / FF_DIM, a = k - i * FF_DIM;
            const real4 p = posq[particleIndex[molecule * FF_N + i]];
            const real v = a == 0 ? p.x : (a == 1 ? p.y : p.z);
            if (!isfinite(v)) {
                ff_fail(status, errorFlag, molecule, FF_DEVICE_INPUT);
                failed = 1;
            }
            z[k] = v;
        }
        SYNC_THREADS;
        for (int k = LOCAL_ID; k < FF_NSD; k += LOCAL_SIZE) {
            const int i = k / (FF_S * FF_DIM), rest = k - i * FF_S * FF_DIM, s = rest / FF_DIM, a = rest - s * FF_DIM;
            real v;
            if (s == 0) {
                mixed mean = 0;
                for (int j = 0; j < FF_N; j++) mean += z[j * FF_DIM + a];
                v = (real) (z[i * FF_DIM + a] - mean / FF_N);
            } else {
                const int p = (s - 1) / FF_DIM, axis = (s - 1) - p * FF_DIM;
                v = axis == a ? (i == p ? (real) 1 : (real) 0) - (real) 1 / FF_N : (real) 0;
            }
            ws[FF_XS + k] = v;
        }
        SYNC_THREADS;
        for (int k = LOCAL_ID; k < FF_NSH; k += LOCAL_SIZE) {
            const int col = k % FF_H, s = (k / FF_H) % FF_S;
            ws[FF_HS + k] = s == 0 ? weights[FF_H0 + col] : (real) 0;
        }
        SYNC_THREADS;
        /* 2. forward through the layers, slots and all */
        for (int l = 0; l < FF_L; l++)
            ff_layer_forward(l, weights, ws + FF_XS + (size_t) l * FF_NSD, ws + FF_HS + (size_t) l * FF_NSH,
                             ws + FF_XS + (size_t) (l + 1) * FF_NSD, l + 1 < FF_L,
                             ws + FF_HS + (size_t) (l + 1 < FF_L ? l + 1 : l) * FF_NSH,
                             ws + FF_AGG + (size_t) l * FF_NSH, ws, invScale2);
        /* 3. z = P f, |z|^2; J_V in the basis: C[(p,a)][t] = xdot_t(p,a) - xdot_t(N-1,a) */
        mixed zz = 0;
        for (int k = LOCAL_ID; k < FF_N * FF_DIM; k += LOCAL_SIZE) {
            const int i = k / FF_DIM, a = k - i * FF_DIM;
            mixed mean = 0;
            for (int j = 0; j < FF_N; j++) mean += xl[(size_t) j * FF_S * FF_DIM + a];
            const real v = (real) (xl[(size_t) i * FF_S * FF_DIM + a] - mean / FF_N);
            z[k] = v;
            zz += v * (mixed) v;
        }
        share[LOCAL_ID] = zz;
        SYNC_THREADS;
        for (int idx = LOCAL_ID; idx < FF_T * FF_T; idx += LOCAL_SIZE) {
            const int row = idx / FF_T, t = idx - row * FF_T, p = row / FF_DIM, a = row - p * FF_DIM;
            lu[idx] = xl[((size_t) p * FF_S + 1 + t) * FF_DIM + a] - xl[((size_t) (FF_N - 1) * FF_S + 1 + t) * FF_DIM + a];
        }
        SYNC_THREADS;
        /* 4. LU with partial pivoting, rows split among the threads; the pivot search by one */
        for (int k = 0; k < FF_T; k++) {
            if (LOCAL_ID == 0) {
                int p = k;
                real best = fabs(lu[k * FF_T + k]);
                for (int r = k + 1; r < FF_T; r++)
                    if (fabs(lu[r * FF_T + k]) > best) {
                        best = fabs(lu[r * FF_T + k]);
                        p = r;
                    }
                pivot[k] = p;
                if (!(best > 0)) failed = 2;  /* also NaN */
            }
            SYNC_THREADS;
            const int p = pivot[k];
            if (p != k)
                for (int col = LOCAL_ID; col < FF_T; col += LOCAL_SIZE) {
                    const real t = lu[k * FF_T + col];
                    lu[k * FF_T + col] = lu[p * FF_T + col];
                    lu[p * FF_T + col] = t;
                }
            SYNC_THREADS;
            const real u = lu[k * FF_T + k];
            for (int r = k + 1 + LOCAL_ID; r < FF_T; r += LOCAL_SIZE) lu[r * FF_T + k] /= u;
            SYNC_THREADS;
            const int rest = FF_T - k - 1;
            for (int idx = LOCAL_ID; idx < rest * rest; idx += LOCAL_SIZE) {
                const int r = k + 1 + idx / rest, col = k + 1 + idx % rest;
                lu[r * FF_T + col] -= lu[r * FF_T + k] * lu[k * FF_T + col];
            }
            SYNC_THREADS;
        }
        /* 5. log |det J_V| and the energy: thread 0, in a fixed order */
        if (LOCAL_ID == 0) {
            mixed logdet = 0, sum = 0;
            for (int k = 0; k < FF_T; k++) logdet += log(fabs((mixed) lu[k * FF_T + k]));
            for (int t = 0; t < WORK_GROUP_SIZE; t++) sum += share[t];
            const mixed energy = energyConstant - kT * (logdet - sum / 2);
            if (failed == 2)
                ff_fail(status, errorFlag, molecule, FF_DEVICE_SINGULAR);
            else if (!isfinite(energy)) {
                ff_fail(status, errorFlag, molecule, FF_DEVICE_ENERGY);
                failed = 3;
            }
            moleculeEnergy[molecule] = energy;
        }
        SYNC_THREADS;
        const int skip = !includeForces || failed != 0;
        SYNC_THREADS;  /* every thread has read `failed` before the next copy resets it */
        if (skip) continue;  /* uniform over the work-group: no barrier is skipped by some threads only */
        /* 6. A = C^-T: row col of at solves C y = e_col, one column per thread */
        for (int col = LOCAL_ID; col < FF_T; col += LOCAL_SIZE) {
            GLOBAL real *y = at + (size_t) col * FF_T;
            for (int r = 0; r < FF_T; r++) y[r] = r == col ? (real) 1 : (real) 0;
            for (int k = 0; k < FF_T; k++) {
                const int p = pivot[k];
                if (p != k) {
                    const real t = y[k];
                    y[k] = y[p];
                    y[p] = t;
                }
            }
            for (int r = 1; r < FF_T; r++) {
                mixed s = y[r];
                for (int k = 0; k < r; k++) s -= lu[r * FF_T + k] * y[k];
                y[r] = (real) s;
            }
            for (int r = FF_T - 1; r >= 0; r--) {
                mixed s = y[r];
                for (int k = r + 1; k < FF_T; k++) s -= lu[r * FF_T + k] * y[k];
                y[r] = (real) (s / lu[r * FF_T + r]);
            }
        }
        SYNC_THREADS;
        /* 7. adjoint seeds: -z on slot 0 (log N), A on the tangents (log |det C|): row p < N - 1
         * of slot 1 + t gets A[(p,a)][t], row N - 1 minus their sum */
        for (int k = LOCAL_ID; k < FF_NSD; k += LOCAL_SIZE) {
            const int i = k / (FF_S * FF_DIM), rest = k - i * FF_S * FF_DIM, s = rest / FF_DIM, a = rest - s * FF_DIM;
            mixed v = 0;
            if (s == 0)
                v = -z[i * FF_DIM + a];
            else if (i < FF_N - 1)
                v = at[(size_t) (i * FF_DIM + a) * FF_T + s - 1];
            else
                for (int p = 0; p < FF_N - 1; p++) v -= at[(size_t) (p * FF_DIM + a) * FF_T + s - 1];
            ws[FF_XBO + k] = (real) v;
        }
        SYNC_THREADS;
        /* 8. the reverse pass, last layer first, the adjoints alternating between the two
         * buffers (layer l reads the pair FF_XBO/FF_HBO when L - 1 - l is even) */
        for (int l = FF_L - 1; l >= 0; l--) {
            const int even = (FF_L - 1 - l) % 2 == 0;
            ff_layer_reverse(l, weights, ws + FF_XS + (size_t) l * FF_NSD, ws + FF_HS + (size_t) l * FF_NSH,
                             ws + FF_AGG + (size_t) l * FF_NSH, ws + (even ? FF_XBO : FF_XBI), l < FF_L - 1,
                             ws + (even ? FF_HBO : FF_HBI), ws + (even ? FF_XBI : FF_XBO),
                             ws + (even ? FF_HBI : FF_HBO), ws, invScale2);
        }
        GLOBAL const real *xb = ws + (FF_L % 2 == 0 ? FF_XBO : FF_XBI);
        /* 9. F = kT P (slot 0's adjoint) on the first DIM components */
        for (int k = LOCAL_ID; k < FF_N * FF_DIM; k += LOCAL_SIZE) {
            const int i = k / FF_DIM, a = k - i * FF_DIM;
            mixed mean = 0;
            for (int j = 0; j < FF_N; j++) mean += xb[(size_t) j * FF_S * FF_DIM + a];
            const real f = (real) (kT * (xb[(size_t) i * FF_S * FF_DIM + a] - mean / FF_N));
            if (!isfinite(f))
                ff_fail(status, errorFlag, molecule, FF_DEVICE_FORCE);
            else
                ATOMIC_ADD(&forceBuffers[particleIndex[molecule * FF_N + i] + a * paddedNumAtoms],
                           (mm_ulong) realToFixedPoint(f));
        }
        SYNC_THREADS;
    }
}

/* The copies' energies into OpenMM's energy buffer: one work-group, each thread a fixed
 * stride of copies, so the sum does not depend on timing. */
KERNEL void sumFreeFormEnergy(GLOBAL const mixed *RESTRICT moleculeEnergy, GLOBAL mixed *RESTRICT energyBuffer,
                              int numMolecules)
{
    mixed sum = 0;
    for (int m = LOCAL_ID; m < numMolecules; m += LOCAL_SIZE) sum += moleculeEnergy[m];
    energyBuffer[GLOBAL_ID] += sum;
}
