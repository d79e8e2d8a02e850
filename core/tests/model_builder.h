/* model_builder.h -- builds SmoothFlow model files in memory for the C
 * tests: random architectures and weights, in the documented format. */
#ifndef MODEL_BUILDER_H
#define MODEL_BUILDER_H

#include <stddef.h>

typedef struct mb_spec {
    int n_atoms;
    int n_layers;
    int K;
    int n_hidden;
    int hidden[4];
    const char *activation;   /* "tanh", "silu", "softplus" */
    int mixed_directions;     /* 0 all generative, 1 alternate generative / density, 2 all density */
    double weight_scale;      /* spread of the random weights */
    const char *policy;       /* "error" or "wall" */
    int float32;              /* store tensors as F32 */
    unsigned seed;
    const char *transform;    /* "smooth" (NULL), "spline", "affine", or "mixed":
                                 layer l is smooth, spline, affine for l % 3 = 0, 1, 2 */
} mb_spec;

/* The transform kind of layer l of a spec. */
const char *mb_layer_transform(const mb_spec *spec, int l);

/* A default spec: small molecule, two layers. */
mb_spec mb_default_spec(unsigned seed);

/* The model file's bytes (malloc'd; caller frees).  config_override, when
 * non-NULL, replaces the config JSON; version_override replaces the format
 * version string. */
unsigned char *mb_build(const mb_spec *spec, const char *config_override, const char *version_override,
                        size_t *size);

/* Cartesian positions (n_atoms x 3, model atom order) built from random
 * internal coordinates inside the support (bonds in the middle of their
 * bounds, angles 60..150 degrees). */
void mb_positions(const mb_spec *spec, unsigned seed, double *positions);

/* Deterministic uniform and normal random numbers. */
double mb_uniform(unsigned long long *state);
double mb_normal(unsigned long long *state);

#endif
