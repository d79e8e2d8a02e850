/*
 * sf_egnn.h -- the free-form flow's encoder (issue 23, part 4): an E(n)-equivariant graph
 * network f on n identical particles in d dimensions, and the exact log density it defines on
 * the centre-of-mass-free subspace V (docs/free-form-flows.md, sections 1, 3 and 7):
 *
 *     log p(x) = log N(f(x); 0, I_D) + log |det J_V(x)|,   D = (n - 1) d,
 *     f(x) = P EGNN(P x),   P x = x - mean_i x_i,
 *
 * with J_V the Jacobian of f restricted to V in an orthonormal basis of V, and its exact
 * gradient in x (second derivatives of the network; never a stochastic estimate).  The
 * reference is smoothflow_torch.particles (egnn.EGNN, fff.exact_log_det), float64.
 *
 * Prefix sfG_.  The structure only points at weights; whoever builds it (the loader) owns
 * them.  Evaluation does not allocate: it works in a caller-provided array of
 * sfG_workspace_doubles() doubles per configuration.
 */
#ifndef SF_EGNN_H
#define SF_EGNN_H

#include "smoothflow.h"

#include <stddef.h>

/* y = W x + b with W row-major (n_out x n_in). */
typedef struct sfG_linear {
    int n_in, n_out;
    const double *weight;   /* n_out * n_in */
    const double *bias;     /* n_out */
} sfG_linear;

/* One message-passing layer, exactly as egnn.EGNNLayer (H = hidden):
 *     m_ij = silu(edge2(silu(edge1([h_i, h_j, |x_i - x_j|^2 inv_scale2]))))   for j != i
 *     x_i += (1 / (n - 1)) sum_{j != i} (x_i - x_j) coord2(silu(coord1(m_ij)))
 *     h_i += node2(silu(node1([h_i, sum_{j != i} m_ij])))        (only if has_node)
 * Shapes: edge1 (2H+1 -> H), edge2 (H -> H), coord1 (H -> H), coord2 (H -> 1),
 * node1 (2H -> H), node2 (H -> H).  The last layer has no node update (has_node = 0 and
 * node1, node2 are unused). */
typedef struct sfG_layer {
    sfG_linear edge1, edge2, coord1, coord2, node1, node2;
    int has_node;
} sfG_layer;

typedef struct sfG_net {
    int n_particles;        /* n >= 2 */
    int dim;                /* d >= 1: the first d Cartesian components of each particle */
    int hidden;             /* H >= 1 */
    int n_layers;           /* >= 1 */
    double inv_scale2;      /* 1 / s^2, s the distance scale */
    const double *h0;       /* H: the initial node feature, shared by every particle */
    const sfG_layer *layers;
} sfG_net;

/* Doubles of scratch one configuration's sfG_log_density needs. */
size_t sfG_workspace_doubles(const sfG_net *net);

/* z = f(x): x and z are n*d doubles, particle-major (x[i*d + k]). */
void sfG_forward(const sfG_net *net, const double *x, double *z, double *ws);

/* log p(x) as above (nats), the sign of det J_V, and (if grad is not NULL) d log p / dx
 * (n*d doubles; mean-free, since log p is translation invariant).  SF_ERR_NUMERIC (message
 * naming the configuration index `config` and what failed) where det J_V = 0 or a value is
 * not finite; nothing is written to grad then. */
sf_status sfG_log_density(const sfG_net *net, const double *x, int config, double *log_p,
                          double *sign, double *grad, double *ws, sf_error *err);

/* Notes on the three functions above (sf_egnn.c):
 * - ws holds sfG_workspace_doubles(net) doubles, which also covers sfG_forward; a workspace
 *   serves one evaluation at a time (no global state: threads use one workspace each).
 * - On an error sfG_log_density writes none of log_p, sign and grad.
 * - J_V is taken in the basis P e_(p,a), p < n - 1, of V: the determinant of J restricted
 *   to V is the same in every basis (a similarity), and this one needs only D tangents. */

#endif
