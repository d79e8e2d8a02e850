/*
 * smoothflow.h -- the C core of openmm-smoothflow.
 *
 * Evaluates the potential energy implied by a normalizing flow over a
 * molecule's internal coordinates, and its exact Cartesian forces:
 *
 *     U(r) = -kT [ log p_U(u(q(r))) - sum log(scale) - log J(q(r)) ] + U0
 *
 * (docs/flow-math.md and docs/model-format.md; choices in docs/design.md), or
 * that of a free-form flow's E(n)-equivariant encoder f over N identical
 * particles (docs/free-form-flows.md, docs/model-format.md section 9):
 *
 *     U(x) = -kT [ log N(f(x); 0, I_D) + log |det J_V(x)| ] + U0.
 *
 * The model comes from a safetensors file written by the PyTorch trainer
 * (docs/model-format.md); sf_model_flow_kind says which of the two it holds.
 *
 * Contract, in the manner of SQLite and Lua:
 *   - Portable C11, double precision, no global state.  Every function that
 *     can fail returns an sf_status code; when the caller passes a non-NULL
 *     sf_error, it receives the code and a message naming the problem.
 *   - A model (sf_model) is immutable after loading and may be shared by any
 *     number of threads.  All scratch memory of an evaluation lives in a
 *     caller-owned workspace (sf_workspace), so evaluation is reentrant and
 *     does not allocate: one workspace per thread.
 *   - Positions are in nm, energies in kJ/mol, forces in kJ/mol/nm.  Atoms are
 *     in the model's atom order; the caller maps them onto its own particles.
 *   - A batch of B molecules is evaluated in one call; the conditioner
 *     networks then run as matrix-matrix products over the batch.
 */
#ifndef SMOOTHFLOW_H
#define SMOOTHFLOW_H

#include <stddef.h>

/* SF_API marks the public functions.  libsmoothflow is built with hidden
 * visibility, so the functions declared here are all it exports; the
 * internal helpers (sfE_, sfM_, ... in src/sf_internal.h) stay private.  SF_BUILDING_LIBRARY is
 * defined only while the library itself is compiled (it selects dllexport on
 * Windows); SF_STATIC by a program that compiles the core's sources into
 * itself. */
#if defined(SF_STATIC)
#  define SF_API
#elif defined(_WIN32) || defined(__CYGWIN__)
#  if defined(SF_BUILDING_LIBRARY)
#    define SF_API __declspec(dllexport)
#  else
#    define SF_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define SF_API __attribute__((visibility("default")))
#else
#  define SF_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- version */

/* The version of this header, equal to project(VERSION) of the top-level
 * CMakeLists.txt (configuring the build fails where they differ; see
 * wrappers/CMakeLists.txt).  SF_VERSION_NUMBER is major * 10000 + minor * 100
 * + patch.  sf_version() and sf_version_number() give the version of the
 * library actually loaded, which a program compares with these macros to
 * detect a header/library mismatch.  ABI policy (docs/engine-api.md): while
 * the major version is 0, libraries of the same major.minor are
 * interchangeable (the SONAME is libsmoothflow.so.0.1); from 1.0 on, the
 * same major version. */
#define SF_VERSION_MAJOR 0
#define SF_VERSION_MINOR 1
#define SF_VERSION_PATCH 0
#define SF_VERSION_STRING "0.1.0"
#define SF_VERSION_NUMBER (SF_VERSION_MAJOR * 10000 + SF_VERSION_MINOR * 100 + SF_VERSION_PATCH)
/* Highest model-file format version this core reads. */
#define SF_FORMAT_VERSION 1

/* Limits of a model (docs/model-format.md section 1, "Limits"); a model
 * beyond any of them is refused at load, the message giving both numbers. */
#define SF_MAX_FILE_SIZE (1024ull * 1024ull * 1024ull) /* bytes of a model file (1 GiB)          */
#define SF_MAX_HEADER_SIZE 100000000                   /* bytes of its JSON header (100 MB)      */
#define SF_MAX_WORKSPACE_DOUBLES 8388608               /* per molecule: 2^23 doubles, 64 MiB     */
#define SF_MAX_PARAMETERS 100000000                    /* conditioner weights and biases, total  */
/* The free-form kind's cost limits (docs/model-format.md section 9.4), from its
 * configuration: n particles, d dimensions, H hidden, L layers, D = (n - 1) d. */
#define SF_MAX_FREE_FORM_WORKSPACE 67108864  /* (D + 1) n (L + 10) (2H + d) + 2 D^2 doubles: 2^26, 512 MiB */
#define SF_MAX_FREE_FORM_WORK 1e12           /* L n^2 (6 H^2 + 3 H) (D + 1) + 2 D^3 multiply-adds       */

/* ----------------------------------------------------------------- status */

typedef enum sf_status {
    SF_OK = 0,
    SF_ERR_ARG,       /* invalid argument passed by the caller (NULL, bad size) */
    SF_ERR_NOMEM,     /* allocation failed */
    SF_ERR_IO,        /* file missing or unreadable */
    SF_ERR_FORMAT,    /* not a valid safetensors file / header JSON */
    SF_ERR_VERSION,   /* model format version newer than this core reads */
    SF_ERR_MODEL,     /* architecture inconsistent: shapes, indices, constants */
    SF_ERR_VALUE,     /* non-finite numbers in the model's tensors */
    SF_ERR_INPUT,     /* non-finite positions or box */
    SF_ERR_SUPPORT,   /* outside the flow's support (policy "error"; affine layer at 0 or 1) */
    SF_ERR_GEOMETRY,  /* degenerate geometry: zero bond, collinear angle atoms */
    SF_ERR_NUMERIC    /* an inverse did not converge, or a value of the evaluation is not finite */
} sf_status;

#define SF_ERROR_MESSAGE_SIZE 512

/* Optional out-parameter of every fallible call.  Plain data: no cleanup.
 * Errors of an evaluation also say where: the molecule's index in the batch
 * and the model atoms involved (-1 where not applicable), so a caller can
 * name its own particles. */
typedef struct sf_error {
    sf_status code;
    char message[SF_ERROR_MESSAGE_SIZE];
    int molecule;
    int atoms[4];
} sf_error;

/* A short static description of a status code ("model file is corrupt"). */
SF_API const char *sf_status_string(sf_status code);

/* The loaded library's version: "major.minor.patch" (a static string) and
 * major * 10000 + minor * 100 + patch. */
SF_API const char *sf_version(void);
SF_API int sf_version_number(void);

/* ------------------------------------------------------------------ model */

typedef struct sf_model sf_model;

/* What a model file holds (its configuration's "kind", docs/model-format.md
 * sections 2 and 9). */
typedef enum sf_flow_kind {
    SF_FLOW_INTERNAL_COORDINATES = 0, /* coupling layers over a Z-matrix's internal coordinates
                                         (no "kind" key: every file before the free-form kind) */
    SF_FLOW_FREE_FORM = 1             /* "kind": "free_form": an E(n)-equivariant encoder over
                                         N identical particles in d = 2 or 3 dimensions */
} sf_flow_kind;

/* Transform kinds of a coupling layer (the layer's "transform" in the model
 * file; docs/model-format.md sections 2, 4 and 7).  Each kind has its own
 * raw-parameter block of P values per transformed dimension. */
typedef enum sf_transform_kind {
    SF_TRANSFORM_SMOOTH = 0,  /* C-infinity mixture of smooth ramps (the product); P = 4K + 2 */
    SF_TRANSFORM_SPLINE = 1,  /* rational-quadratic spline (baseline), C1;        P = 3K + 2 */
    SF_TRANSFORM_AFFINE = 2   /* affine / RealNVP in logit space (baseline);      P = 2      */
} sf_transform_kind;

/* What happens when a bond or angle leaves the flow's support. */
typedef enum sf_support_policy {
    SF_SUPPORT_ERROR = 0,  /* evaluation fails with SF_ERR_SUPPORT              */
    SF_SUPPORT_WALL = 1    /* smooth clamp plus harmonic wall (docs/model-format.md 5.2) */
} sf_support_policy;

/* The precision the conditioner networks' weights are applied in. */
typedef enum sf_weight_precision {
    SF_WEIGHTS_FLOAT64 = 0, /* the stored weights (the default)                          */
    SF_WEIGHTS_FLOAT32 = 1  /* every weight rounded to the nearest float32, then used in
                               double arithmetic: a slightly different, exactly
                               differentiated potential whose one-molecule evaluation
                               streams half the bytes (docs/c-core.md, "Weight precision") */
} sf_weight_precision;

/* Load a model from a file, or from a copy of `size` bytes at `data`.
 * On success *out owns a new model (free with sf_model_free). */
SF_API sf_status sf_model_load_file(const char *path, sf_model **out, sf_error *err);
SF_API sf_status sf_model_load_bytes(const void *data, size_t size, sf_model **out, sf_error *err);
SF_API void sf_model_free(sf_model *model); /* NULL: does nothing */

/* Read-only facts about a loaded model.  For the free-form kind N counts the
 * particles, D = (N - 1) d (the centre-of-mass-free subspace) and the number
 * of (coupling) layers is 0. */
SF_API sf_flow_kind sf_model_flow_kind(const sf_model *model);
SF_API int sf_model_spatial_dim(const sf_model *model);      /* d: 3, or 2 or 3 (free-form) */
SF_API int sf_model_num_atoms(const sf_model *model);        /* N                    */
SF_API int sf_model_num_dims(const sf_model *model);         /* D = 3N - 6           */
SF_API int sf_model_num_layers(const sf_model *model);
SF_API double sf_model_temperature(const sf_model *model);   /* K                    */
SF_API double sf_model_kT(const sf_model *model);            /* kJ/mol               */
SF_API double sf_model_energy_offset(const sf_model *model); /* U0, kJ/mol           */
SF_API int sf_model_format_version(const sf_model *model);
SF_API sf_support_policy sf_model_support_policy(const sf_model *model);
/* Z-matrix row r (r = 0..N-1) as model atom indices; -1 where unused (every
 * entry for a free-form model, which has no Z-matrix). */
SF_API void sf_model_zmatrix_row(const sf_model *model, int r, int out[4]);
/* The header's "atoms" entry for model atom a, or NULL where the file has
 * none.  Strings live as long as the model. */
SF_API const char *sf_model_atom_name(const sf_model *model, int a);
SF_API const char *sf_model_atom_residue(const sf_model *model, int a);
SF_API int sf_model_atom_residue_index(const sf_model *model, int a);
/* Switch the weights the evaluation applies (SF_WEIGHTS_FLOAT64 after load).
 * FLOAT32 allocates a float32 copy and a double copy of the rounded weights
 * (1.5 times the stored weights' bytes), FLOAT64 frees them.  Not safe while
 * another thread evaluates the model: call it before the first evaluation.
 * SF_ERR_ARG for an unknown precision or FLOAT32 on a free-form model (its
 * encoder runs in float64 only), SF_ERR_NOMEM (model unchanged). */
SF_API sf_status sf_model_set_weight_precision(sf_model *model, sf_weight_precision precision, sf_error *err);
SF_API sf_weight_precision sf_model_weight_precision(const sf_model *model);

/* The model's configuration JSON exactly as stored in the file. */
SF_API const char *sf_model_config_json(const sf_model *model);

/* ------------------------------------------------------------- workspace */

typedef struct sf_workspace sf_workspace;

/* Bytes a workspace for batches of up to max_batch molecules needs (a free-form
 * model's does not grow with max_batch: it evaluates one configuration at a time). */
SF_API size_t sf_workspace_size(const sf_model *model, int max_batch);
/* Lay a workspace out in `memory` (caller-owned, sf_workspace_size bytes,
 * aligned to 16 bytes) or, with sf_workspace_new, in memory the core
 * allocates once.  Neither is touched by evaluation other than as scratch. */
SF_API sf_status sf_workspace_init(const sf_model *model, int max_batch, void *memory,
                                   size_t size, sf_workspace **out, sf_error *err);
SF_API sf_status sf_workspace_new(const sf_model *model, int max_batch,
                                  sf_workspace **out, sf_error *err);
SF_API void sf_workspace_free(sf_workspace *ws); /* only for sf_workspace_new; NULL: nothing */

/* ------------------------------------------------------------ evaluation */

/* A periodic box is passed as 9 doubles, the box vectors a, b, c as rows
 * (a = box[0..2], b = box[3..5], c = box[6..8]) in OpenMM's reduced form:
 * a = (ax,0,0), b = (bx,by,0), c = (cx,cy,cz).  NULL means non-periodic. */

/* Per-call diagnostics (optional output). */
typedef struct sf_eval_info {
    int wall_dims;          /* interval coordinates inside the wall zone     */
    int max_newton_iters;   /* most iterations any inverse needed            */
} sf_eval_info;

/* Energy and forces of `batch` molecules.
 *   positions: batch x N x 3 doubles, molecule after molecule.
 *   box:       NULL, or the 9 doubles of the periodic box (same for every molecule).
 *   energies:  batch doubles, kJ/mol (required).
 *   forces:    batch x N x 3 doubles, kJ/mol/nm, or NULL for energy only.
 *   info:      NULL, or receives diagnostics summed over the batch.
 * Fails without touching the outputs' meaning on non-finite input, on a
 * configuration outside the support under the "error" policy, and on
 * degenerate geometry; the message names the molecule, coordinate, atoms and
 * value.  Succeeds only when every energy and force written is finite;
 * otherwise SF_ERR_NUMERIC naming the layer or coordinate and its atoms
 * (docs/reliability.md).  With forces NULL only the energies are checked.
 * A free-form model reads the first d components of each particle (the
 * others get zero force), refuses a box (SF_ERR_ARG: the encoder is not
 * periodic), and fails with SF_ERR_NUMERIC where det J_V = 0 or a value is
 * not finite (docs/model-format.md section 9.5). */
SF_API sf_status sf_evaluate(const sf_model *model, sf_workspace *ws, int batch,
                             const double *positions, const double *box,
                             double *energies, double *forces, sf_eval_info *info,
                             sf_error *err);

/* The normalized internal coordinates u in [0,1]^D (bonds, angles,
 * torsions; docs/model-format.md) of one molecule, for tests and tools.
 * Torsions lie in [0, 1): a torsion of exactly +-180 degrees is u = 0.
 * SF_ERR_ARG for a free-form model (it has no internal coordinates). */
SF_API sf_status sf_internal_coordinates(const sf_model *model, const double *positions,
                                         const double *box, double *u, sf_error *err);

/* log p_U(u) of one point of the unit cube/torus, and optionally its
 * gradient (D doubles).  Uses the workspace as scratch (batch 1).
 * SF_ERR_NUMERIC when the log density or the gradient is not finite.
 * SF_ERR_ARG for a free-form model (its log density over positions is
 * -(U - U0) / kT of sf_evaluate). */
SF_API sf_status sf_log_density(const sf_model *model, sf_workspace *ws, const double *u,
                                double *log_density, double *gradient, sf_error *err);

/* ------------------------------------------------ one-dimensional pieces */

/* The smooth mixture transform of docs/flow-math.md section 4 on one
 * dimension, exposed for tests.  raw holds 4K+2 unconstrained values
 * (w~[K], b~[K], s~[K], a~[K], c~, t~); t~ is used only when circular. */
typedef struct sf_smooth_constants {
    double s_min, alpha_min, c_max;
    int beta;
} sf_smooth_constants;

/* y = T(x) with T'(x) and T''(x). */
SF_API void sf_smooth_forward(const sf_smooth_constants *c, int K, const double *raw,
                              int circular, double x, double *y, double *dy, double *d2y);
/* x = T^{-1}(y); returns the Newton iterations used, or -1 when the
 * bracketed iteration did not converge (x is then the best bracket point).
 * y <= 0 gives 0, y >= 1 gives 1, NaN gives NaN (0 iterations). */
SF_API int sf_smooth_inverse(const sf_smooth_constants *c, int K, const double *raw,
                             int circular, double y, double *x);

/* The rational-quadratic spline of docs/model-format.md section 7.1.  raw
 * holds 3K+2 values (w~[K], h~[K], d~[K+1], t~); on the circle d~_K and
 * on the interval t~ are ignored.  S is C1: y, T' and T'' exist everywhere,
 * T'' is one-sided (the bin to the right) at the knots, where it jumps. */
typedef struct sf_spline_constants {
    double min_bin_width, min_bin_height, min_derivative;
} sf_spline_constants;

SF_API void sf_spline_forward(const sf_spline_constants *c, int K, const double *raw,
                              int circular, double x, double *y, double *dy, double *d2y);
/* x = T^{-1}(y), analytic; returns 0. */
SF_API int sf_spline_inverse(const sf_spline_constants *c, int K, const double *raw,
                             int circular, double y, double *x);

/* The affine transform of docs/model-format.md section 7.2, on (0, 1):
 * T(x) = sigmoid(e^s logit(x) + t~), s = scale_max tanh(s~ / scale_max);
 * raw holds (s~, t~).  It is the same on interval and circular dimensions.
 * Both return 0, or -1 (leaving the outputs untouched) when the argument
 * is not strictly inside (0, 1), outside the transform's support. */
typedef struct sf_affine_constants {
    double scale_max;
} sf_affine_constants;

SF_API int sf_affine_forward(const sf_affine_constants *c, const double *raw, double x,
                             double *y, double *dy, double *d2y);
SF_API int sf_affine_inverse(const sf_affine_constants *c, const double *raw, double y, double *x);

/* ---------------------------------------------------- model description
 * What a device platform copies to its memory once (the OpenCL and CUDA
 * kernels of platforms/common), and what a tool may inspect: the model's
 * constants, each coupling layer's shape, and its weights as the core
 * applies them.  Pointers stay owned by the model and valid while it lives. */

typedef struct sf_model_description {
    int N, D, n_layers;
    sf_support_policy policy;
    int has_prior;               /* truncated-normal prior of the interval dims */
    double kT, energy_offset;    /* kJ/mol */
    double log_scale_sum;        /* sum over dims of log(scale) (docs/model-format.md 5) */
    double prior_log_norm;       /* 0 without a prior; includes the torsions' von Mises terms */
    double margin, wall_constant;
    double angle_margin;         /* the wall's margin of the angle dims (margin: of the bonds) */
    sf_smooth_constants smooth;
    sf_spline_constants spline;
    sf_affine_constants affine;
} sf_model_description;

typedef struct sf_layer_description {
    sf_transform_kind transform;
    int generative;              /* 1 generative direction, 0 density direction */
    int n_trans, n_cond;         /* transformed and conditioning dims */
    int K, P;                    /* components or bins; raw parameters per transformed dim */
    int activation;              /* 0 tanh, 1 SiLU, 2 softplus */
    int n_linear;                /* linear maps of the conditioner */
    const int *trans, *cond;     /* n_trans, n_cond dims */
    const int *width;            /* n_linear + 1 widths; width[0] = encoded input */
} sf_layer_description;

/* SF_ERR_ARG for a NULL argument or a layer out of range (*out untouched), and
 * for a free-form model, which these descriptions do not cover (every layer
 * is out of range: it has none). */
SF_API sf_status sf_model_describe(const sf_model *model, sf_model_description *out);
SF_API sf_status sf_model_describe_layer(const sf_model *model, int layer, sf_layer_description *out);
/* Linear map `linear` of layer `layer`: W (width[linear + 1] x width[linear],
 * row-major) as the core applies it (each weight rounded to float32 under
 * SF_WEIGHTS_FLOAT32), and its bias; NULL when out of range. */
SF_API const double *sf_model_layer_weight(const sf_model *model, int layer, int linear);
SF_API const double *sf_model_layer_bias(const sf_model *model, int layer, int linear);
/* Bond d's support [lo, hi] in nm (d < N - 1); the prior's mean and sigma of
 * interval dim d < 2N - 3 (models with a prior).  SF_ERR_ARG out of range and
 * for a free-form model (no bonds, no such prior). */
SF_API sf_status sf_model_bond_bounds(const sf_model *model, int d, double *lo, double *hi);
SF_API sf_status sf_model_prior(const sf_model *model, int d, double *mean, double *sigma);
/* The von Mises prior of torsion t < N - 3 (flow dim 2N - 3 + t): its mean in [0, 1) and
 * its kappa (docs/model-format.md 5.4).  SF_ERR_ARG out of range and for a model whose
 * torsions are uniform (no such prior, or a free-form model). */
SF_API sf_status sf_model_torsion_prior(const sf_model *model, int t, double *mean, double *kappa);
/* The wall's edge forces of interval dim d < 2N - 3 (kJ/mol per unit of u,
 * docs/model-format.md section 5.2): 0 and 0 when the model has none.
 * SF_ERR_ARG out of range and for a free-form model. */
SF_API sf_status sf_model_edge_force(const sf_model *model, int d, double *lower, double *upper);

/* ------------------------------------------ free-form model description
 * The same for the free-form kind (docs/model-format.md section 9): its
 * encoder f, an E(n)-equivariant graph network (EGNN) over N identical
 * particles in d dimensions, with the constants of
 *     U(x) = -kT [ -|f(x)|^2 / 2 - latent_log_norm + log |det J_V(x)| ] + U0.
 * Layer k (k < n_layers) updates, with H = hidden, s = distance_scale:
 *     m_ij = silu(EDGE2 silu(EDGE1 [h_i, h_j, |x_i - x_j|^2 / s^2]))   (j != i)
 *     x_i += 1/(N - 1) sum_{j != i} (x_i - x_j) COORD2 silu(COORD1 m_ij)
 *     h_i += NODE2 silu(NODE1 [h_i, sum_{j != i} m_ij])   (has_node only)
 * every h_i starting as h0, and f(x) = the final x minus its mean (the input
 * centred first).  Every layer but the last has the node update.  Pointers
 * stay owned by the model and valid while it lives; the weights are the
 * stored ones (a free-form model runs in float64 only). */

/* The linear maps of one EGNN layer (y = W x + b), in the order of the
 * model file's tensors layers.k.{edge.0, edge.2, coord.0, coord.2, node.0,
 * node.2}. */
typedef enum sf_egnn_linear {
    SF_EGNN_EDGE1 = 0,   /* edge.0:  2H + 1 -> H */
    SF_EGNN_EDGE2 = 1,   /* edge.2:  H -> H      */
    SF_EGNN_COORD1 = 2,  /* coord.0: H -> H      */
    SF_EGNN_COORD2 = 3,  /* coord.2: H -> 1      */
    SF_EGNN_NODE1 = 4,   /* node.0:  2H -> H     (layers with has_node) */
    SF_EGNN_NODE2 = 5    /* node.2:  H -> H      (layers with has_node) */
} sf_egnn_linear;
#define SF_EGNN_NUM_LINEAR 6

typedef struct sf_free_form_description {
    int n_particles;             /* N >= 2 */
    int dim;                     /* d: 2 or 3, the first d components of each particle */
    int D;                       /* (N - 1) d: the latent's and J_V's dimension */
    int hidden;                  /* H: node features and messages */
    int n_layers;                /* L >= 1 */
    int activation;              /* 1 (SiLU), the code of sf_layer_description */
    double inv_scale2;           /* 1 / s^2 (nm^-2), exactly as the encoder applies it */
    double distance_scale;       /* s = 1 / sqrt(inv_scale2), nm: the file's value to rounding */
    double kT, energy_offset;    /* kJ/mol */
    double latent_log_norm;      /* (D / 2) log(2 pi): the standard normal latent's
                                    log normalizer on the centre-of-mass-free subspace */
    const double *h0;            /* H: every particle's initial node feature */
} sf_free_form_description;

typedef struct sf_free_form_layer_description {
    int has_node;                /* 1 with the node update, 0 (the last layer) without */
    int n_linear;                /* 6 with the node update, 4 without */
} sf_free_form_layer_description;

/* One linear map: W (n_out x n_in, row-major) and b (n_out). */
typedef struct sf_free_form_linear {
    int n_out, n_in;
    const double *weight, *bias;
} sf_free_form_linear;

/* SF_ERR_ARG (*out untouched) for a NULL argument, a model that is not of the
 * free-form kind, a layer out of range, or a linear map the layer lacks (the
 * node maps of the last layer). */
SF_API sf_status sf_model_describe_free_form(const sf_model *model, sf_free_form_description *out);
SF_API sf_status sf_model_describe_free_form_layer(const sf_model *model, int layer,
                                                   sf_free_form_layer_description *out);
SF_API sf_status sf_model_free_form_linear(const sf_model *model, int layer, sf_egnn_linear linear,
                                           sf_free_form_linear *out);

#ifdef __cplusplus
}
#endif

#endif /* SMOOTHFLOW_H */
