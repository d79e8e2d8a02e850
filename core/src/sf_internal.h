/*
 * sf_internal.h -- private structures and helpers of the C core.
 * Prefixes: sfU_ numeric and string utilities, sfE_ errors, sfS_ safetensors container, sfM_ model,
 * sfZ_ internal coordinates, sfT_ smooth transform, sfR_ rational-quadratic
 * spline, sfA_ affine transform, sfN_ conditioner networks, sfF_ flow
 * layers, sfW_ workspace.
 */
#ifndef SF_INTERNAL_H
#define SF_INTERNAL_H

#include "smoothflow.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#ifdef SF_DEBUG
#include <assert.h>
#define sf_assert(c) assert(c)
#else
#define sf_assert(c) ((void)0)
#endif

#define SF_GAS_CONSTANT 0.00831446261815324 /* kJ/mol/K */
#define SF_PI 3.14159265358979323846

/* ----------------------------------------------------- numeric utilities */

/* The logistic function without overflow for either sign. */
static inline double sfU_sigmoid(double v) { return v >= 0 ? 1.0 / (1.0 + exp(-v)) : exp(v) / (1.0 + exp(v)); }
/* Exact softplus, log(1 + e^v), without cancellation or overflow. */
static inline double sfU_softplus(double v) { return (v > 0 ? v : 0.0) + log1p(exp(-fabs(v))); }
/* A point of the circle [0, 1). */
static inline double sfU_wrap01(double v) { return v - floor(v); }
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

typedef enum sf_activation { SF_ACT_TANH, SF_ACT_SILU, SF_ACT_SOFTPLUS } sf_activation;
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
} sf_layer;

typedef struct sf_atom_info {
    char *name, *residue;
    int residue_index;
} sf_atom_info;

struct sf_model {
    int N, D;
    int version;
    double temperature, kT, energy_offset;
    int (*zmatrix)[4];
    double *bond_lo, *bond_hi;  /* N - 1 */
    double log_scale_sum;       /* sum over dims of log(scale) */
    /* Truncated-normal prior of the interval dims (NULL: uniform prior); 2N - 3 each. */
    double *prior_mean, *prior_sigma;
    double prior_log_norm;      /* sum over interval dims of log(sigma sqrt(2 pi) mass in [0, 1]) */
    sf_smooth_constants smooth;
    sf_spline_constants spline;
    sf_affine_constants affine;
    sf_support_policy policy;
    double margin, wall_constant;
    int n_layers;
    sf_layer *layers;
    sf_atom_info *atoms;        /* NULL when the file has none */
    char *config_json;
    int max_width;              /* widest activation over all conditioners */
    int max_params;             /* largest n_trans * P */
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

/* Cartesian derivative of one internal coordinate: up to 4 atoms x 3. */
typedef struct sf_icgrad {
    int atom[4];
    int n;
    double d[4][3];
} sf_icgrad;

/* Raw internal coordinates q (nm, rad) of one molecule in dim order and their
 * gradients; fails on degenerate geometry.  mol names the molecule in
 * messages. */
sf_status sfZ_compute(const sf_model *m, const double *pos, const double *box,
                      double *q, sf_icgrad *grad, int mol, sf_error *err);
/* Minimum-image displacement b - a. */
void sfZ_displacement(const double *a, const double *b, const double *box, double out[3]);

/* ------------------------------------------------------- smooth transform */

/* The constrained parameters of one transformed dimension.  The conditioner's
 * raw block [w~ (K), b~ (K), s~ (K), a~ (K), c~, t~] is turned into them once,
 * in place (sfT_prepare_block): [w = softmax(w~), b = sigmoid(b~),
 * s = s_min + (1 - s_min) sigmoid(s~), softplus(a~), c = c_max sigmoid(c~), t~];
 * the density pass, every Newton step and the reverse pass then read that block
 * through a view, so the transcendental functions of the parameters are
 * evaluated once per dimension and evaluation. */
#define SF_MAX_COMPONENTS 64
typedef struct sfT_params {
    int K, beta;
    double c, t, alpha_min;
    const double *w, *b, *s, *sp; /* sp = softplus(a~): alpha = alpha_min + sp */
} sfT_params;

void sfT_prepare_block(const sf_smooth_constants *c, int K, double *block);
void sfT_view(const sf_smooth_constants *c, int K, const double *block, sfT_params *p);
/* F(x), F'(x), F''(x) of the interval transform (the circle adds t mod 1). */
void sfT_eval(const sfT_params *p, double x, double *y, double *dy, double *d2y);
/* Solve F(x) = y on [0, 1]; returns iterations, or -1 without convergence. */
int sfT_solve(const sfT_params *p, double y, double *x);

/* Every kind offers the same two operations to the flow (sf_flow.c), on one
 * transformed dimension with its prepared parameters:
 *
 *   step:    the density pass, in (state l + 1) -> *out (state l), with
 *            *logdet = log |d out / d in|: T for a density layer, T^-1 for a
 *            generative one (circle: the shift t~ and the wrap mod 1 included).
 *            Returns the Newton iterations used (0 when analytic), -1 when
 *            the inverse did not converge, -2 when in or the point T is
 *            evaluated at lies outside the transform's support.
 *   adjoint: given the adjoints abar of out and w of logdet, sets *gin to
 *            abar dout/din + w dlogdet/din and adds abar dout/draw +
 *            w dlogdet/draw to graw (the P raw values, zeroed by the caller;
 *            on the circle the t~ slot too, on the interval it stays 0).
 *            in and out are the step's; no iteration is differentiated. */
int sfT_step(const sfT_params *p, int circular, int generative, double in, double *out, double *logdet);
void sfT_adjoint(const sfT_params *p, const sf_smooth_constants *c, int circular, int generative, double in,
                 double out, double abar, double w, double *gin, double *graw);

/* ------------------------------------------ rational-quadratic spline */

/* Bins, knots and knot derivatives of one dimension (model-format 7.1). */
typedef struct sfR_params {
    int K, circular;
    double scale_w, scale_h;                      /* 1 - K m_w, 1 - K m_h */
    double t;
    double sw[SF_MAX_COMPONENTS], sh[SF_MAX_COMPONENTS]; /* softmax(w~), softmax(h~) */
    double W[SF_MAX_COMPONENTS], H[SF_MAX_COMPONENTS];   /* bin widths, heights */
    double x[SF_MAX_COMPONENTS + 1], y[SF_MAX_COMPONENTS + 1]; /* knots */
    double delta[SF_MAX_COMPONENTS + 1];          /* knot derivatives */
} sfR_params;

void sfR_prepare(const sf_spline_constants *c, int K, const double *raw, int circular, sfR_params *p);
/* S(x), S'(x) and (log S')'(x) = S''/S' of the interval spline. */
void sfR_eval(const sfR_params *p, double x, double *y, double *dy, double *dlogdy);
/* S^-1(y) on [0, 1], analytic. */
double sfR_solve(const sfR_params *p, double y);
/* Accumulate into g (the 3K + 1 raw values before t~) a dS/draw + b dlogS'/draw at x. */
void sfR_vjp(const sfR_params *p, const double *raw, double x, double a, double b, double *g);
int sfR_step(const sfR_params *p, int generative, double in, double *out, double *logdet);
void sfR_adjoint(const sfR_params *p, const double *raw, int generative, double in, double out, double abar,
                 double w, double *gin, double *graw);

/* ------------------------------------------------- affine transform */

typedef struct sfA_params {
    double s, e, einv, t;  /* s, e^s, e^-s, t~ */
    double ds;             /* ds / ds~ = 1 - tanh^2 */
} sfA_params;

void sfA_prepare(const sf_affine_constants *c, const double *raw, sfA_params *p);
/* T, T' and T'' at x in (0, 1), and log T' (from logit space, exact where
 * T(x) rounds to 0 or 1). */
void sfA_eval(const sfA_params *p, double x, double *y, double *dy, double *d2y, double *logdy);
int sfA_step(const sfA_params *p, int generative, double in, double *out, double *logdet);
void sfA_adjoint(const sfA_params *p, int generative, double in, double abar, double w, double *gin,
                 double *graw);

/* --------------------------------------------------- conditioner network */

/* Forward pass over a batch: in (B x width[0]) -> out, storing each hidden
 * layer's pre-activations and activations in act (B x sfN_activation_size). */
void sfN_forward(const sf_layer *L, int B, const double *in, double *act, double *out);
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
    double *scratch;    /* 2 x B x max_width */
    double *q;          /* B x D raw coordinates */
    double *gq;         /* B x D */
    double *logdet;     /* B */
    double *logp;       /* B */
    double *weight;     /* B   adjoint weights of log p */
    double *slope;      /* B x D  slope of the wall policy's clamp */
    sf_icgrad *icgrad;  /* B x D */
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
