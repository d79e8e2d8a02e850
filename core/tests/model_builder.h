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
    int mixed_directions;     /* alternate generative / density layers */
    double weight_scale;      /* spread of the random weights */
    const char *policy;       /* "error" or "wall" */
    int float32;              /* store tensors as F32 */
    unsigned seed;
} mb_spec;

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
