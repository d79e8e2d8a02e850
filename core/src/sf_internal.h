/*
 * sf_internal.h -- private structures and helpers of the C core.
 * Prefixes: sfU_ string utilities, sfE_ errors, sfS_ safetensors container, sfM_ model,
 * sfZ_ internal coordinates, sfN_ conditioner networks, sfF_ flow layers,
 * sfW_ workspace; sfm_ the per-element mathematics of math/ (shared with the
 * GPU kernels).
 */
#ifndef SF_INTERNAL_H
#define SF_INTERNAL_H

#include "smoothflow.h"
#include "sf_egnn.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The per-element mathematics, written once for the core and the GPU
 * kernels (core/src/math, docs/kernel-math.md): functions sfm_*, in double. */
#include "math/host/sf_math.h"

#ifdef SF_DEBUG
#include <assert.h>
#define sf_assert(c) assert(c)
#else
#define sf_assert(c) ((void)0)
#endif

#define SF_GAS_CONSTANT 0.00831446261815324 /* kJ/mol/K */
#define SF_PI 3.14159265358979323846
/* A torsion's von Mises concentration: 1e4 is a spread of 1/sqrt(kappa) = 0.6 degrees. */
#define SF_MAX_TORSION_KAPPA 1e4
/* Mixture components (smooth) or bins (spline) of one transformed dimension. */
#define SF_MAX_COMPONENTS 64
_Static_assert(SFM_SPLINE_CACHE >= SF_MAX_COMPONENTS, "the CPU cache of math/ holds every bin");

/* The functions that run the per-component loops are compiled twice, for
 * x86-64 as such and for AVX-512 (x86-64-v4), and the loader picks one for
 * the machine (GCC's target_clones, an ifunc): one library, vectors where
 * the CPU has them.  flatten inlines the math/ functions they call into each
 * clone, so the loops are compiled for the clone's instruction set. */
#if defined(SF_USE_LIBMVEC) && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SF_VECTOR_CLONES __attribute__((target_clones("default", "arch=x86-64-v4"), flatten))
#else
#define SF_VECTOR_CLONES
#endif

/* ----------------------------------------------------- numeric utilities */

/* A malloc'd copy of s, or NULL. */
static inline char *sfU_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---------------------------------------------------------------- errors */

/* Fill err (if any) with code and a printf-style message; returns code. */
sf_status sfE_set(sf_error *err, sf_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Record where an evaluation error happened (after sfE_set). */
sf_status sfE_locate(sf_error *err, sf_status code, int molecule, int a, int b, int c, int d);

/* ------------------------------------------------------------------ model */

typedef enum sf_activation { SF_ACT_TANH = SFM_ACT_TANH, SF_ACT_SILU = SFM_ACT_SILU, SF_ACT_SOFTPLUS = SFM_ACT_SOFTPLUS } sf_activation;
typedef enum sf_direction { SF_DIR_GENERATIVE, SF_DIR_DENSITY } sf_direction;

typedef struct sf_layer {
    sf_transform_kind transform;
    sf_direction direction;
    int n_trans, n_cond;
    int *trans;            /* transformed dims */
    int *cond;             /* conditioning dims */
    int K;                 /* mixture components (smooth) or bins (spline) */
    int P;                 /* parameters per transformed dim: 4K + 2, 3K + 2 or 2 */
    sf_activation activation;
    int n_linear;          /* linear maps: hidden layers + 1 */
    int *width;            /* n_linear + 1 widths; width[0] = encoded input */
    double **weight;       /* [m] -> width[m+1] x width[m], row-major */
    double **bias;         /* [m] -> width[m+1] */
    /* SF_WEIGHTS_FLOAT32 only (NULL otherwise): the weights rounded to float, and the
     * same values as doubles for the batched products (BLAS has no mixed product). */
    float **weight32;
    double **weight_rounded;
} sf_layer;

typedef struct sf_atom_info {
    char *name, *residue;
    int residue_index;
} sf_atom_info;

struct sf_model {
    sf_flow_kind kind;
    int N, D;                   /* free-form kind: N particles, D = (N - 1) d */
    int version;
    double temperature, kT, energy_offset;
    int (*zmatrix)[4];
    double *bond_lo, *bond_hi;  /* N - 1 */
    double log_scale_sum;       /* sum over dims of log(scale) */
    /* Truncated-normal prior of the interval dims (NULL: uniform prior); 2N - 3 each. */
    double *prior_mean, *prior_sigma;
    /* Its von Mises densities of the torsion dims (NULL: torsions uniform); N - 3 each. */
    double *torsion_mean, *torsion_kappa;
    double prior_log_norm;      /* sum over interval dims of log(sigma sqrt(2 pi) mass in [0, 1]),
                                   plus over torsion dims of log I0e(kappa) */
    sf_smooth_constants smooth;
    sf_spline_constants spline;
    sf_affine_constants affine;
    sf_support_policy policy;
    /* The wall's margin of bonds and of angles (angle_margin: the key of that
     * name, or margin when absent), in units of u. */
    double margin, angle_margin, wall_constant;
    /* The wall's edge forces of the interval dims (2N - 3 each; NULL: none, 0). */
    double *edge_lower, *edge_upper;
    int n_layers;
    sf_layer *layers;
    sf_atom_info *atoms;        /* NULL when the file has none */
    char *config_json;
    int max_width;              /* widest activation over all conditioners */
    sf_weight_precision weight_precision;
    int max_params;             /* largest n_trans * P */
    /* The free-form kind (SF_FLOW_FREE_FORM; docs/model-format.md section 9): its encoder,
     * whose layers and weights the model owns (egnn_tensors: every tensor read, freed with
     * the model; the sfG structures point into them).  Unused by the internal kind, whose
     * fields above (zmatrix, layers, ...) are in turn unused here. */
    sfG_net egnn;
    sfG_layer *egnn_layers;
    double **egnn_tensors;
    int n_egnn_tensors;
};

static inline int sfM_is_circular(const sf_model *m, int dim) { return dim >= 2 * m->N - 3; }

/* -------------------------------------------------------- safetensors */

typedef enum sf_dtype { SF_DTYPE_F64, SF_DTYPE_F32 } sf_dtype;

typedef struct sf_tensor {
    char *name;
    sf_dtype dtype;
    int ndim;
    long long shape[4];
    const unsigned char *data;  /* into the file buffer */
    size_t nbytes;
    int used;                   /* claimed by the model loader */
} sf_tensor;

typedef struct sf_safetensors {
    sf_tensor *tensors;
    int n_tensors;
    char *metadata_format, *metadata_version, *metadata_config;
} sf_safetensors;

sf_status sfS_parse(const unsigned char *data, size_t size, sf_safetensors *out, sf_error *err);
void sfS_free(sf_safetensors *st);
sf_tensor *sfS_find(sf_safetensors *st, const char *name);
/* Copy a tensor's values as doubles into dst (count elements). */
void sfS_read_doubles(const sf_tensor *t, double *dst, size_t count);

/* --------------------------------------------------- internal coordinates */

/* Cartesian derivative of one internal coordinate: up to 4 atoms x 3
 * (row k at d[3 k], as sfm_bond, sfm_angle and sfm_torsion write it). */
typedef struct sf_icgrad {
    int atom[4];
    int n;
    double d[12];
} sf_icgrad;

/* Raw internal coordinates q (nm, rad) of one molecule in dim order and their
 * gradients; fails on degenerate geometry.  mol names the molecule in
 * messages. */
sf_status sfZ_compute(const sf_model *m, const double *pos, const double *box,
                      double *q, sf_icgrad *grad, int mol, sf_error *err);

/* The transforms' per-dimension mathematics (prepare, step, adjoint) is in
 * math/sf_math_smooth.h, sf_math_spline.h and sf_math_affine.h; sf_flow.c
 * dispatches over them; sf_smooth.c, sf_spline.c and sf_affine.c hold the
 * one-dimension entry points of the public API. */

/* --------------------------------------------------- conditioner network */

/* Forward pass over a batch: in (B x width[0]) -> out, storing each hidden
 * layer's pre-activations and activations in act (B x sfN_activation_size). */
void sfN_forward(const sf_layer *L, int B, const double *in, double *act, double *out);
/* Rows per panel of the packed float32 weights (sf_mlp.c). */
#define SF_PANEL 8

/* Backward pass: gout (B x out) -> gin (B x width[0]); scratch holds
 * 2 x B x max_width doubles (max_width >= every hidden width). */
void sfN_backward(const sf_layer *L, int B, const double *act, const double *gout,
                  double *gin, double *scratch, int max_width);
size_t sfN_activation_size(const sf_layer *L);

/* -------------------------------------------------------------- workspace */

struct sf_workspace {
    const sf_model *model;
    int max_batch;
    int owns_memory;
    double *u;          /* B x D  coordinates entering the flow */
    double *state;      /* (L + 1) x B x D  density-pass states */
    double *enc;        /* L x B x max_in */
    double *act;        /* L x B x max_act */
    double *params;     /* L x B x max_params */
    double *gstate;     /* B x D */
    double *gparams;    /* B x max_params */
    double *genc;       /* B x max_in */
    double *scratch;    /* (2 B + SF_PANEL) x max_width */
    double *q;          /* B x D raw coordinates */
    double *gq;         /* B x D */
    double *logdet;     /* B */
    double *logp;       /* B */
    double *weight;     /* B   adjoint weights of log p */
    double *slope;      /* B x D  slope of the wall policy's clamp */
    sf_icgrad *icgrad;  /* B x D */
    double *sums;       /* L x B x D x 3  smooth mixture sums kept for the reverse pass */
    /* The free-form kind only (the arrays above are then empty): one configuration at a
     * time, its first d components per particle (N d), d log p / dx (N d), and the encoder's
     * scratch (sfG_workspace_doubles). */
    double *ff_x, *ff_grad, *ff_scratch;
    size_t act_stride, enc_stride, params_stride;
};

/* ------------------------------------------------------------------- flow */

/* log p_U of B points (u: B x D), keeping the states the backward needs. */
sf_status sfF_log_density(const sf_model *m, sf_workspace *ws, int B, const double *u,
                          double *logp, int *max_iters, sf_error *err);
/* Gradient of sum_b weight[b] * log p_U(u_b) w.r.t. u, after sfF_log_density. */
void sfF_log_density_gradient(const sf_model *m, sf_workspace *ws, int B,
                              const double *weight, double *grad);

#endif /* SF_INTERNAL_H */
