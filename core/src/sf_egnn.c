/*
 * sf_egnn.c -- the free-form flow's EGNN encoder f, the exact log density it defines on the
 * centre-of-mass-free subspace V, and the exact gradient of that log density (sf_egnn.h;
 * docs/free-form-flows.md, sections 1, 3 and 7).  Reference: egnn.EGNN and
 * potential.log_density_and_gradient of smoothflow_torch.particles, float64.
 *
 * The three passes of one evaluation:
 *
 * 1. Forward with tangents.  The state of the network (positions x, n x d, and node
 *    features h, n x H) is carried in S = 1 + T "slots": slot 0 the values, slot 1 + t the
 *    derivative of the state along the input direction b_t (forward mode).  Every Linear map
 *    acts on all slots at once (one matrix-matrix product, bias on slot 0 only); every SiLU
 *    maps slot 0 to silu(a) and slot t to silu'(a) a_t.  Edges are processed in blocks of
 *    one receiving particle i (its n - 1 edges x S slots as the rows of each product).
 *
 * 2. log |det J_V| by LU with partial pivoting of the T x T matrix C of f's Jacobian on V.
 *    Basis.  The determinant of the linear map J|_V : V -> V is the same in every basis of V,
 *    orthonormal or not (a change of basis B is a similarity, B^-1 J_V B), so this file uses
 *    the simplest one: b_(p,a) = P e_(p,a) for the first n - 1 particles p and every axis a
 *    (T = D = (n - 1) d directions).  The input tangents are then projected unit vectors, and
 *    the coordinates of w in V in that basis are w_(p,a) - w_(n-1,a), a difference of two
 *    outputs.  This is cheaper than the projector form det(J + (I_n - P_n) (x) I_d), which
 *    needs all n d tangents and an n d x n d LU (8 vs 6 tangents for DW4, 39 vs 36 for LJ13,
 *    6 vs 3 for n = 2, d = 3: the edge products scale with the tangent count), and simpler
 *    than the orthonormal Helmert basis, whose seeds and read-out are dense.  Orthonormality
 *    only matters for the density's coordinates (log p_Z uses the plain norm of f(x) on V),
 *    not for the determinant of an endomorphism.  The basis has condition number sqrt(n):
 *    no loss of accuracy worth the extra work.
 *
 * 3. Reverse over forward.  log p = log N(f(x)) + log |det C|, and d log |det C| =
 *    sum_rt (C^-T)_rt dC_rt, so with A = C^-T held fixed the gradient is that of the scalar
 *    -|z|^2 / 2 + sum_rt A_rt C_rt, a function of the forward pass of 1. (values and
 *    tangents), by one reverse pass through it: adjoints for every slot; a Linear map's
 *    adjoint is one product with W per block; a SiLU's is a_0bar = silu'(a_0) y_0bar +
 *    silu''(a_0) sum_t a_t y_tbar and a_tbar = silu'(a_0) y_tbar (the second derivative
 *    enters here); the tangents' seeds are constants, so the gradient is P times the input
 *    adjoint of slot 0.  Each layer's edge block is recomputed in the reverse pass from the
 *    layer's stored input (x, h, and the aggregated messages), so the workspace holds
 *    O(L S n H) doubles and one block, not every edge's activations (O(L S n^2 H): 13 MB
 *    for LJ13, 1 GB for LJ55).
 *
 * Cost of one evaluation (flops, a multiply-add counting 2), E = n (n - 1) edges, S = T + 1:
 *   forward, per layer: 4 E S H^2 (edge2, coord1 over every edge and slot), 4 n S H^2 (the
 *     edge1 halves, per particle), 6 n S H^2 (node1, node2; not in the last layer);
 *   reverse, per layer: the forward's edge and edge1 products again (recomputation) and as
 *     many transposed, 8 E S H^2 + 8 n S H^2, and 10 n S H^2 for the node update;
 *   LU (2/3) T^3, the inverse 2 T^3; the elementwise work, O(E S (H + d)), is a few %.
 *   In all: L (12 E S H^2 + 12 n S H^2) + (L - 1) 16 n S H^2 + (8/3) T^3.
 * For LJ13 (n = 13, d = 3, T = 36, H = 32, 3 layers; E = 156, S = 37): forward 83 Mflop,
 * reverse 164 Mflop, LU and inverse 0.12 Mflop: 0.25 Gflop, 86 % of it in the
 * (n - 1) S x H x H = 444 x 32 x 32 block products (BLAS dgemm), the LU negligible.
 * The tangents make it S = 37 forward passes and the reverse about twice that: the price of
 * the exact log-determinant gradient.  (Measured on a shared 2-core machine: about 20-50 ms.)
 *
 * Row layouts (row-major, H or d columns): per-particle arrays have row i S + s (particle i,
 * slot s); a block's arrays have row jj S + s, jj counting the particles j != i in order.
 */
#include "sf_egnn.h"
#include "sf_internal.h"

#include <cblas.h>

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------- workspace */

/* Offsets (in doubles) of every array one evaluation with S slots uses. */
typedef struct egnn_layout {
    int n, d, H, L, S;
    size_t xs;            /* (L + 1) x n S d: each layer's input positions, then the output */
    size_t hs;            /* L x n S H: each layer's input node features */
    size_t agg;           /* L x n S H: each layer's aggregated messages */
    size_t pm, qm;        /* n S H: the edge1 halves W_a h_i + b, W_b h_j */
    size_t pbar, qbar;    /* n S H: their adjoints */
    size_t blk;           /* 8 x R H, R = (n - 1) S: a1 s1 a2 m c1 sc and two adjoint arrays */
    size_t phi, phibar;   /* R */
    size_t dbar;          /* R d: adjoints of x_i - x_j */
    size_t n1, sn;        /* n S H: node update pre-activation, activation (or adjoints) */
    size_t xbo, xbi;      /* n S d: adjoints of a layer's output and input positions */
    size_t hbo, hbi;      /* n S H: the same for node features */
    size_t aggbar;        /* n S H */
    size_t tmp;           /* 3 H: per-group SiLU derivatives */
    size_t z;             /* n d */
    size_t lu, ainv;      /* T x T: C (then its LU), A = C^-T */
    size_t piv;           /* T pivot rows */
    size_t total;
} egnn_layout;

static void layout_make(const sfG_net *net, int S, egnn_layout *lo)
{
    const size_t n = (size_t)net->n_particles, d = (size_t)net->dim, H = (size_t)net->hidden;
    const size_t L = (size_t)net->n_layers, s = (size_t)S, T = (size_t)(S - 1);
    const size_t nsd = n * s * d, nsh = n * s * H, R = (n - 1) * s;
    size_t at = 0;
#define TAKE(field, count) (lo->field = at, at += (count))
    lo->n = net->n_particles;
    lo->d = net->dim;
    lo->H = net->hidden;
    lo->L = net->n_layers;
    lo->S = S;
    TAKE(xs, (L + 1) * nsd);
    TAKE(hs, L * nsh);
    TAKE(agg, L * nsh);
    TAKE(pm, nsh);
    TAKE(qm, nsh);
    TAKE(pbar, nsh);
    TAKE(qbar, nsh);
    TAKE(blk, 8 * R * H);
    TAKE(phi, R);
    TAKE(phibar, R);
    TAKE(dbar, R * d);
    TAKE(n1, nsh);
    TAKE(sn, nsh);
    TAKE(xbo, nsd);
    TAKE(xbi, nsd);
    TAKE(hbo, nsh);
    TAKE(hbi, nsh);
    TAKE(aggbar, nsh);
    TAKE(tmp, 3 * H);
    TAKE(z, n * d);
    TAKE(lu, T * T);
    TAKE(ainv, T * T);
    TAKE(piv, T);
#undef TAKE
    lo->total = at;
}

size_t sfG_workspace_doubles(const sfG_net *net)
{
    egnn_layout lo;
    layout_make(net, (net->n_particles - 1) * net->dim + 1, &lo);
    return lo.total;
}

/* ----------------------------------------------------- small kernels */

/* Y (M x N) = X (M x K, ldx) W^T + beta Y, W (N x K, ldw) row-major as nn.Linear's weight. */
static void mul_wt(int M, int N, int K, const double *X, int ldx, const double *W, int ldw, double beta,
                   double *Y)
{
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0, X, ldx, W, ldw, beta, Y, N);
}

/* Xbar (M x K, ldx) = Ybar (M x N) W + beta Xbar, W (N x K, ldw): the adjoint of mul_wt. */
static void mul_w(int M, int N, int K, const double *Yb, const double *W, int ldw, double beta, double *Xb,
                  int ldx)
{
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0, Yb, N, W, ldw, beta, Xb, ldx);
}

/* Add b (N) to slot 0 of each of G groups of S rows: the bias moves values, not tangents. */
static void add_bias(int G, int S, int N, const double *b, double *Y)
{
    for (int g = 0; g < G; g++) {
        double *y = Y + (size_t)g * S * N;
        for (int k = 0; k < N; k++) y[k] += b[k];
    }
}

/* Forward of SiLU over G groups of S rows x H: slot 0 silu(a), slot t silu'(a_0) a_t.  SiLU and
 * its derivatives are sfm_silu2 (math/sf_math_mlp.h), which the GPU kernel compiles too
 * (platforms/common/src/kernels/free_form.cc). */
static void silu_fwd(int G, int S, int H, const double *A, double *Y, double *tmp)
{
    double *d1 = tmp, unused;
    for (int g = 0; g < G; g++) {
        const double *a = A + (size_t)g * S * H;
        double *y = Y + (size_t)g * S * H;
        for (int k = 0; k < H; k++) y[k] = sfm_silu2(a[k], &d1[k], &unused);
        for (int s = 1; s < S; s++)
            for (int k = 0; k < H; k++) y[(size_t)s * H + k] = d1[k] * a[(size_t)s * H + k];
    }
}

/* Adjoint of silu_fwd: from Ybar to Abar (may be the same array), A the pre-activations.
 * Abar_0 = silu'(a_0) Ybar_0 + silu''(a_0) sum_t a_t Ybar_t, Abar_t = silu'(a_0) Ybar_t. */
static void silu_rev(int G, int S, int H, const double *A, const double *Yb, double *Ab, double *tmp)
{
    double *d1 = tmp, *d2 = tmp + H, *acc = tmp + 2 * H;
    for (int g = 0; g < G; g++) {
        const size_t o = (size_t)g * S * H;
        const double *a = A + o, *yb = Yb + o;
        double *ab = Ab + o;
        for (int k = 0; k < H; k++) {
            sfm_silu2(a[k], &d1[k], &d2[k]);
            acc[k] = 0;
        }
        for (int s = 1; s < S; s++)
            for (int k = 0; k < H; k++) acc[k] += a[(size_t)s * H + k] * yb[(size_t)s * H + k];
        for (int k = 0; k < H; k++) ab[k] = d1[k] * yb[k] + d2[k] * acc[k];
        for (int s = 1; s < S; s++)
            for (int k = 0; k < H; k++) ab[(size_t)s * H + k] = d1[k] * yb[(size_t)s * H + k];
    }
}

/* ------------------------------------------------------------ layers */

/* The edge block of receiving particle i: a1, s1, a2, m, c1, sc (each R x H) and phi (R)
 * from the layer's input positions x (n S x d) and the edge1 halves pm, qm. */
static void edge_block(const sfG_net *net, const sfG_layer *ly, const egnn_layout *lo, int i,
                       const double *x, const double *pm, const double *qm, double *ws)
{
    const int n = lo->n, d = lo->d, H = lo->H, S = lo->S, R = (n - 1) * S;
    const size_t RH = (size_t)R * H;
    double *a1 = ws + lo->blk, *s1 = a1 + RH, *a2 = s1 + RH, *m = a2 + RH, *c1 = m + RH, *sc = c1 + RH;
    double *phi = ws + lo->phi, *tmp = ws + lo->tmp;
    const double *W1 = ly->edge1.weight;
    const int ld1 = 2 * H + 1;
    const double two_s2 = 2 * net->inv_scale2;
    const double *xi = x + (size_t)i * S * d;
    for (int j = 0, jj = 0; j < n; j++) {
        if (j == i) continue;
        const double *xj = x + (size_t)j * S * d;
        for (int s = 0; s < S; s++) {
            /* the edge's scalar input: r = |x_i - x_j|^2 / s^2, its tangent 2 (x_i - x_j).(xdot_i - xdot_j) / s^2 */
            double r = 0;
            for (int a = 0; a < d; a++) {
                const double diff = xi[a] - xj[a];
                r += diff * (s == 0 ? diff : xi[(size_t)s * d + a] - xj[(size_t)s * d + a]);
            }
            r = s == 0 ? r * net->inv_scale2 : r * two_s2;
            const double *p = pm + ((size_t)i * S + s) * H, *q = qm + ((size_t)j * S + s) * H;
            double *row = a1 + ((size_t)jj * S + s) * H;
            for (int k = 0; k < H; k++) row[k] = p[k] + q[k] + W1[(size_t)k * ld1 + 2 * H] * r;
        }
        jj++;
    }
    silu_fwd(n - 1, S, H, a1, s1, tmp);
    mul_wt(R, H, H, s1, H, ly->edge2.weight, H, 0.0, a2);
    add_bias(n - 1, S, H, ly->edge2.bias, a2);
    silu_fwd(n - 1, S, H, a2, m, tmp);
    mul_wt(R, H, H, m, H, ly->coord1.weight, H, 0.0, c1);
    add_bias(n - 1, S, H, ly->coord1.bias, c1);
    silu_fwd(n - 1, S, H, c1, sc, tmp);
    const double *wc2 = ly->coord2.weight;
    for (int r = 0; r < R; r++) {
        const double *row = sc + (size_t)r * H;
        double v = r % S == 0 ? ly->coord2.bias[0] : 0.0;
        for (int k = 0; k < H; k++) v += row[k] * wc2[k];
        phi[r] = v;
    }
}

/* pm = h W_a^T + b1, qm = h W_b^T: edge1's weight is [W_a | W_b | w_r] (H x 2H+1). */
static void edge_halves(const sfG_layer *ly, const egnn_layout *lo, const double *h, double *ws)
{
    const int H = lo->H, rows = lo->n * lo->S;
    mul_wt(rows, H, H, h, H, ly->edge1.weight, 2 * H + 1, 0.0, ws + lo->pm);
    add_bias(lo->n, lo->S, H, ly->edge1.bias, ws + lo->pm);
    mul_wt(rows, H, H, h, H, ly->edge1.weight + H, 2 * H + 1, 0.0, ws + lo->qm);
}

/* n1 = [h, agg] node1^T + b (its pre-activation). */
static void node_preactivation(const sfG_layer *ly, const egnn_layout *lo, const double *h, const double *agg,
                               double *n1)
{
    const int H = lo->H, rows = lo->n * lo->S;
    mul_wt(rows, H, H, h, H, ly->node1.weight, 2 * H, 0.0, n1);
    mul_wt(rows, H, H, agg, H, ly->node1.weight + H, 2 * H, 1.0, n1);
    add_bias(lo->n, lo->S, H, ly->node1.bias, n1);
}

/* One layer forward: (x, h) -> (xo, ho), storing the aggregated messages in agg.  The last
 * layer's node update reaches no output and is skipped (ho = NULL there). */
static void layer_forward(const sfG_net *net, const sfG_layer *ly, const egnn_layout *lo, const double *x,
                          const double *h, double *xo, double *ho, double *agg, double *ws)
{
    const int n = lo->n, d = lo->d, H = lo->H, S = lo->S;
    const int node = ho != NULL && ly->has_node;
    const double *m = ws + lo->blk + 3 * (size_t)(n - 1) * S * H, *phi = ws + lo->phi;
    edge_halves(ly, lo, h, ws);
    for (int i = 0; i < n; i++) {
        edge_block(net, ly, lo, i, x, ws + lo->pm, ws + lo->qm, ws);
        const double *xi = x + (size_t)i * S * d;
        for (int s = 0; s < S; s++)
            for (int a = 0; a < d; a++) {
                /* x_i += sum_j (x_i - x_j) phi_ij / (n - 1), and its tangent (product rule) */
                double acc = 0;
                for (int j = 0, jj = 0; j < n; j++) {
                    if (j == i) continue;
                    const double *xj = x + (size_t)j * S * d;
                    const double diff = xi[a] - xj[a], p0 = phi[(size_t)jj * S];
                    if (s == 0)
                        acc += diff * p0;
                    else
                        acc += (xi[(size_t)s * d + a] - xj[(size_t)s * d + a]) * p0 + diff * phi[(size_t)jj * S + s];
                    jj++;
                }
                xo[((size_t)i * S + s) * d + a] = xi[(size_t)s * d + a] + acc / (n - 1);
            }
        if (node) {
            double *g = agg + (size_t)i * S * H;
            memset(g, 0, (size_t)S * H * sizeof(double));
            for (int jj = 0; jj < n - 1; jj++)
                for (size_t k = 0; k < (size_t)S * H; k++) g[k] += m[(size_t)jj * S * H + k];
        }
    }
    if (!ho) return;
    const size_t nsh = (size_t)n * S * H;
    memcpy(ho, h, nsh * sizeof(double));
    if (!node) return;
    double *n1 = ws + lo->n1, *sn = ws + lo->sn;
    node_preactivation(ly, lo, h, agg, n1);
    silu_fwd(n, S, H, n1, sn, ws + lo->tmp);
    mul_wt(n * S, H, H, sn, H, ly->node2.weight, H, 1.0, ho);
    add_bias(n, S, H, ly->node2.bias, ho);
}

/* One layer's reverse pass: the adjoints xbo, hbo (NULL: zero, the last layer) of its outputs
 * give those of its inputs, xbi and hbi.  x, h, agg are the layer's stored inputs. */
static void layer_reverse(const sfG_net *net, const sfG_layer *ly, const egnn_layout *lo, const double *x,
                          const double *h, const double *agg, const double *xbo, const double *hbo, double *xbi,
                          double *hbi, double *ws)
{
    const int n = lo->n, d = lo->d, H = lo->H, S = lo->S, R = (n - 1) * S;
    const size_t RH = (size_t)R * H, nsh = (size_t)n * S * H;
    const int node = hbo != NULL && ly->has_node;
    double *a1 = ws + lo->blk, *a2 = a1 + 2 * RH, *c1 = a1 + 4 * RH, *g1 = a1 + 6 * RH, *g2 = a1 + 7 * RH;
    double *phi = ws + lo->phi, *phibar = ws + lo->phibar, *dbar = ws + lo->dbar, *tmp = ws + lo->tmp;
    double *pbar = ws + lo->pbar, *qbar = ws + lo->qbar, *aggbar = ws + lo->aggbar;
    const double *W1 = ly->edge1.weight, *wc2 = ly->coord2.weight;
    const int ld1 = 2 * H + 1;
    const double c = 1.0 / (n - 1), two_s2 = 2 * net->inv_scale2;

    memcpy(xbi, xbo, (size_t)n * S * d * sizeof(double));
    if (hbo)
        memcpy(hbi, hbo, nsh * sizeof(double));
    else
        memset(hbi, 0, nsh * sizeof(double));
    if (node) {
        /* h' = h + node2(silu(n1)): sbar = hbo node2, n1bar = silu'(...), then h and agg */
        double *n1 = ws + lo->n1, *sb = ws + lo->sn;
        node_preactivation(ly, lo, h, agg, n1);
        mul_w(n * S, H, H, hbo, ly->node2.weight, H, 0.0, sb, H);
        silu_rev(n, S, H, n1, sb, sb, tmp);
        mul_w(n * S, H, H, sb, ly->node1.weight, 2 * H, 1.0, hbi, H);
        mul_w(n * S, H, H, sb, ly->node1.weight + H, 2 * H, 0.0, aggbar, H);
    }
    edge_halves(ly, lo, h, ws);
    memset(pbar, 0, nsh * sizeof(double));
    memset(qbar, 0, nsh * sizeof(double));

    for (int i = 0; i < n; i++) {
        edge_block(net, ly, lo, i, x, ws + lo->pm, ws + lo->qm, ws);
        const double *xi = x + (size_t)i * S * d, *xb = xbo + (size_t)i * S * d;
        /* the coordinate update x_i' = x_i + c sum_j diff_ij phi_ij (slot 0) and
         * xdot_i' = xdot_i + c sum_j (diffdot_ij phi_ij + diff_ij phidot_ij) (slots t), with
         * xbar the adjoint of x_i': phibar_0 = c (xbar_0.diff + sum_t xbar_t.diffdot_t),
         * phibar_t = c xbar_t.diff, diffbar_0 = c (xbar_0 phi_0 + sum_t xbar_t phi_t),
         * diffdotbar_t = c xbar_t phi_0 (into dbar, slot by slot) */
        for (int j = 0, jj = 0; j < n; j++) {
            if (j == i) continue;
            const double *xj = x + (size_t)j * S * d;
            const double *ph = phi + (size_t)jj * S;
            double *pb = phibar + (size_t)jj * S, *db = dbar + (size_t)jj * S * d;
            double pb0 = 0;
            for (int a = 0; a < d; a++) {
                const double diff = xi[a] - xj[a];
                pb0 += xb[a] * diff;
                db[a] = xb[a] * ph[0];
            }
            for (int s = 1; s < S; s++) {
                double pbs = 0;
                for (int a = 0; a < d; a++) {
                    const double diff = xi[a] - xj[a];
                    const double ddot = xi[(size_t)s * d + a] - xj[(size_t)s * d + a];
                    const double xbs = xb[(size_t)s * d + a];
                    pb0 += xbs * ddot;
                    pbs += xbs * diff;
                    db[a] += xbs * ph[s];
                    db[(size_t)s * d + a] = c * xbs * ph[0];
                }
                pb[s] = c * pbs;
            }
            pb[0] = c * pb0;
            for (int a = 0; a < d; a++) db[a] *= c;
            jj++;
        }
        /* phi = sc . wc2 -> scbar = phibar wc2^T, then back through coord1, edge2, edge1 */
        for (int r = 0; r < R; r++)
            for (int k = 0; k < H; k++) g1[(size_t)r * H + k] = phibar[r] * wc2[k];
        silu_rev(n - 1, S, H, c1, g1, g1, tmp);
        mul_w(R, H, H, g1, ly->coord1.weight, H, 0.0, g2, H);
        if (node) /* agg_i = sum_j m_ij: every edge of i receives agg_i's adjoint */
            for (int jj = 0; jj < n - 1; jj++)
                for (size_t k = 0; k < (size_t)S * H; k++) g2[(size_t)jj * S * H + k] += aggbar[(size_t)i * S * H + k];
        silu_rev(n - 1, S, H, a2, g2, g2, tmp);
        mul_w(R, H, H, g2, ly->edge2.weight, H, 0.0, g1, H);
        silu_rev(n - 1, S, H, a1, g1, g1, tmp);
        /* a1 = pm_i + qm_j + w_r r, r = |diff|^2 / s^2 (slot 0), 2 diff.diffdot / s^2 (slots t) */
        for (int j = 0, jj = 0; j < n; j++) {
            if (j == i) continue;
            const double *xj = x + (size_t)j * S * d;
            double *db = dbar + (size_t)jj * S * d;
            for (int s = 0; s < S; s++) {
                const double *ab = g1 + ((size_t)jj * S + s) * H;
                double *pb = pbar + ((size_t)i * S + s) * H, *qb = qbar + ((size_t)j * S + s) * H;
                double rb = 0;
                for (int k = 0; k < H; k++) {
                    pb[k] += ab[k];
                    qb[k] += ab[k];
                    rb += W1[(size_t)k * ld1 + 2 * H] * ab[k];
                }
                for (int a = 0; a < d; a++) {
                    const double diff = xi[a] - xj[a];
                    if (s == 0) {
                        db[a] += two_s2 * rb * diff;
                    } else {
                        db[a] += two_s2 * rb * (xi[(size_t)s * d + a] - xj[(size_t)s * d + a]);
                        db[(size_t)s * d + a] += two_s2 * rb * diff;
                    }
                }
            }
            /* diff = x_i - x_j in every slot */
            for (size_t k = 0; k < (size_t)S * d; k++) {
                xbi[(size_t)i * S * d + k] += db[k];
                xbi[(size_t)j * S * d + k] -= db[k];
            }
            jj++;
        }
    }
    mul_w(n * S, H, H, pbar, W1, ld1, 1.0, hbi, H);
    mul_w(n * S, H, H, qbar, W1 + H, ld1, 1.0, hbi, H);
}

/* Forward through every layer from the stored xs[0] (positions and tangents) and h0. */
static void forward_layers(const sfG_net *net, const egnn_layout *lo, double *ws)
{
    const int n = lo->n, d = lo->d, H = lo->H, S = lo->S, L = lo->L;
    const size_t nsd = (size_t)n * S * d, nsh = (size_t)n * S * H;
    double *hs = ws + lo->hs;
    memset(hs, 0, nsh * sizeof(double)); /* h0 is a constant: zero tangents */
    for (int i = 0; i < n; i++) memcpy(hs + (size_t)i * S * H, net->h0, (size_t)H * sizeof(double));
    for (int l = 0; l < L; l++)
        layer_forward(net, &net->layers[l], lo, ws + lo->xs + l * nsd, hs + l * nsh, ws + lo->xs + (l + 1) * nsd,
                      l + 1 < L ? hs + (l + 1) * nsh : NULL, ws + lo->agg + l * nsh, ws);
}

/* xs[0] slot 0 = P x; slot 1 + t = P e_t for t = (p, a), p < n - 1 (the basis of V). */
static void seed_input(const egnn_layout *lo, const double *x, double *ws)
{
    const int n = lo->n, d = lo->d, S = lo->S;
    double *x0 = ws + lo->xs;
    memset(x0, 0, (size_t)n * S * d * sizeof(double));
    for (int a = 0; a < d; a++) {
        double mean = 0;
        for (int i = 0; i < n; i++) mean += x[(size_t)i * d + a];
        mean /= n;
        for (int i = 0; i < n; i++) x0[(size_t)i * S * d + a] = x[(size_t)i * d + a] - mean;
    }
    for (int t = 0; t < S - 1; t++) {
        const int p = t / d, a = t % d;
        for (int i = 0; i < n; i++) x0[((size_t)i * S + 1 + t) * d + a] = (i == p ? 1.0 : 0.0) - 1.0 / n;
    }
}

/* z = P (slot 0 of the last layer's positions). */
static void read_output(const egnn_layout *lo, const double *ws, double *z)
{
    const int n = lo->n, d = lo->d, S = lo->S;
    const double *xl = ws + lo->xs + (size_t)lo->L * n * S * d;
    for (int a = 0; a < d; a++) {
        double mean = 0;
        for (int i = 0; i < n; i++) mean += xl[(size_t)i * S * d + a];
        mean /= n;
        for (int i = 0; i < n; i++) z[(size_t)i * d + a] = xl[(size_t)i * S * d + a] - mean;
    }
}

void sfG_forward(const sfG_net *net, const double *x, double *z, double *ws)
{
    egnn_layout lo;
    layout_make(net, 1, &lo);
    seed_input(&lo, x, ws);
    forward_layers(net, &lo, ws);
    read_output(&lo, ws, z);
}

/* ------------------------------------------------------ log density */

/* LU of the T x T matrix a (row-major) in place with partial pivoting (piv[k]: the row
 * swapped with k).  Returns the index of the first zero pivot, or -1; *logabs and *sign of
 * the determinant. */
static int lu_factor(int T, double *a, double *piv, double *logabs, double *sign)
{
    double la = 0, sg = 1;
    for (int k = 0; k < T; k++) {
        int p = k;
        double best = fabs(a[(size_t)k * T + k]);
        for (int r = k + 1; r < T; r++)
            if (fabs(a[(size_t)r * T + k]) > best) {
                best = fabs(a[(size_t)r * T + k]);
                p = r;
            }
        piv[k] = p;
        if (!(best > 0)) return k;
        if (p != k) {
            for (int c = 0; c < T; c++) {
                const double t = a[(size_t)k * T + c];
                a[(size_t)k * T + c] = a[(size_t)p * T + c];
                a[(size_t)p * T + c] = t;
            }
            sg = -sg;
        }
        const double *uk = a + (size_t)k * T, u = uk[k];
        if (u < 0) sg = -sg;
        la += log(fabs(u));
        for (int r = k + 1; r < T; r++) {
            double *ar = a + (size_t)r * T;
            const double l = ar[k] / u;
            ar[k] = l;
            for (int c = k + 1; c < T; c++) ar[c] -= l * uk[c];
        }
    }
    *logabs = la;
    *sign = sg;
    return -1;
}

/* at = C^-T from the LU of C: row c of at is y with C y = e_c, column c of C^-1. */
static void lu_inverse_transpose(int T, const double *lu, const double *piv, double *at)
{
    for (int c = 0; c < T; c++) {
        double *y = at + (size_t)c * T;
        memset(y, 0, (size_t)T * sizeof(double));
        y[c] = 1;
        for (int k = 0; k < T; k++) {
            const int p = (int)piv[k];
            if (p != k) {
                const double t = y[k];
                y[k] = y[p];
                y[p] = t;
            }
        }
        for (int r = 1; r < T; r++) {
            double s = y[r];
            for (int k = 0; k < r; k++) s -= lu[(size_t)r * T + k] * y[k];
            y[r] = s;
        }
        for (int r = T - 1; r >= 0; r--) {
            double s = y[r];
            for (int k = r + 1; k < T; k++) s -= lu[(size_t)r * T + k] * y[k];
            y[r] = s / lu[(size_t)r * T + r];
        }
    }
}

sf_status sfG_log_density(const sfG_net *net, const double *x, int config, double *log_p, double *sign,
                          double *grad, double *ws, sf_error *err)
{
    if (!net || !x || !log_p || !sign || !ws)
        return sfE_set(err, SF_ERR_ARG, "sfG_log_density: NULL argument (configuration %d)", config);
    const int n = net->n_particles, d = net->dim, T = (n - 1) * d;
    for (int k = 0; k < n * d; k++)
        if (!isfinite(x[k]))
            return sfE_set(err, SF_ERR_NUMERIC, "EGNN potential, configuration %d: coordinate %d of particle %d is %g",
                           config, k % d, k / d, x[k]);
    egnn_layout lo;
    layout_make(net, T + 1, &lo);
    const int S = lo.S, L = lo.L, H = lo.H;
    seed_input(&lo, x, ws);
    forward_layers(net, &lo, ws);

    double *z = ws + lo.z;
    read_output(&lo, ws, z);
    double zz = 0;
    for (int k = 0; k < n * d; k++) zz += z[k] * z[k];
    if (!isfinite(zz))
        return sfE_set(err, SF_ERR_NUMERIC, "EGNN potential, configuration %d: f(x) is not finite", config);

    /* C = J_V in the basis P e_(p,a), p < n - 1: C[(p,a)][t] = xdot_t(p,a) - xdot_t(n-1,a) */
    const double *xl = ws + lo.xs + (size_t)L * n * S * d;
    double *lu = ws + lo.lu;
    for (int p = 0; p < n - 1; p++)
        for (int a = 0; a < d; a++)
            for (int t = 0; t < T; t++) {
                const double v = xl[((size_t)p * S + 1 + t) * d + a] - xl[((size_t)(n - 1) * S + 1 + t) * d + a];
                if (!isfinite(v))
                    return sfE_set(err, SF_ERR_NUMERIC,
                                   "EGNN potential, configuration %d: the Jacobian J_V is not finite (entry %d, %d)",
                                   config, p * d + a, t);
                lu[((size_t)p * d + a) * T + t] = v;
            }
    double logdet = 0, sg = 1;
    const int zero = lu_factor(T, lu, ws + lo.piv, &logdet, &sg);
    if (zero >= 0)
        return sfE_set(err, SF_ERR_NUMERIC,
                       "EGNN potential, configuration %d: det J_V = 0 (the flow's Jacobian on the "
                       "centre-of-mass-free subspace is singular: LU pivot %d of %d is zero)",
                       config, zero, T);
    const double lp = -0.5 * zz - 0.5 * T * log(2 * SF_PI) + logdet;
    if (!isfinite(lp))
        return sfE_set(err, SF_ERR_NUMERIC,
                       "EGNN potential, configuration %d: log p is not finite (log |det J_V| = %g)", config, logdet);

    if (grad) {
        /* adjoint seeds: -z on slot 0 (log N), A = C^-T on the tangents (log |det C|) */
        const size_t nsd = (size_t)n * S * d, nsh = (size_t)n * S * H;
        double *at = ws + lo.ainv; /* A = C^-T, A[r][t] at r T + t */
        lu_inverse_transpose(T, lu, ws + lo.piv, at);
        double *xb = ws + lo.xbo, *xb2 = ws + lo.xbi, *hb = ws + lo.hbo, *hb2 = ws + lo.hbi;
        memset(xb, 0, nsd * sizeof(double));
        for (int i = 0; i < n; i++)
            for (int a = 0; a < d; a++) xb[(size_t)i * S * d + a] = -z[(size_t)i * d + a];
        for (int t = 0; t < T; t++)
            for (int a = 0; a < d; a++) {
                double sum = 0;
                for (int p = 0; p < n - 1; p++) {
                    const double v = at[(size_t)(p * d + a) * T + t];
                    xb[((size_t)p * S + 1 + t) * d + a] = v;
                    sum += v;
                }
                xb[((size_t)(n - 1) * S + 1 + t) * d + a] = -sum;
            }
        for (int l = L - 1; l >= 0; l--) {
            layer_reverse(net, &net->layers[l], &lo, ws + lo.xs + l * nsd, ws + lo.hs + l * nsh, ws + lo.agg + l * nsh,
                          xb, l == L - 1 ? NULL : hb, xb2, hb2, ws);
            double *t1 = xb, *t2 = hb;
            xb = xb2, xb2 = t1, hb = hb2, hb2 = t2;
        }
        /* x enters as P x: the gradient is P of slot 0's adjoint; written only if finite */
        double *g = ws + lo.z; /* z is no longer needed */
        for (int a = 0; a < d; a++) {
            double mean = 0;
            for (int i = 0; i < n; i++) mean += xb[(size_t)i * S * d + a];
            mean /= n;
            for (int i = 0; i < n; i++) g[(size_t)i * d + a] = xb[(size_t)i * S * d + a] - mean;
        }
        for (int k = 0; k < n * d; k++)
            if (!isfinite(g[k]))
                return sfE_set(err, SF_ERR_NUMERIC,
                               "EGNN potential, configuration %d: the gradient of log p is not finite "
                               "(coordinate %d of particle %d; log |det J_V| = %g)",
                               config, k % d, k / d, logdet);
        memcpy(grad, g, (size_t)n * d * sizeof(double));
    }
    *log_p = lp;
    *sign = sg;
    return SF_OK;
}
