/* test_model_config.c -- every refusal of the model loader, each with its
 * documented status and a message that names what is wrong
 * (docs/model-format.md section 1 and the rules of
 * pytorch/smoothflow_torch/model_config.schema.json): the configuration JSON
 * key by key, its JSON syntax, the metadata, the tensors, the container's
 * header, the file itself; then the values accepted configurations must give
 * (defaults, the model description, the truncated-normal prior, the smooth
 * ramp's integer power, UTF-8 names), and the evaluation's input checks that need a model of a
 * particular shape.  Models are made from configuration text (config_cases.h). */
#define _POSIX_C_SOURCE 200809L /* mkstemp, ftruncate, pwrite: test_files, on POSIX systems */
#include "config_cases.h"
#include "smoothflow.h"
/* Only for test_nonfinite_angle_white_box, which writes a value the loader refuses into a
 * loaded sf_model; every other test uses the public API alone. */
#include "../src/sf_internal.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define HAVE_POSIX_FILES 1
#endif

#include "test_check.h"


/* Loads `bytes`; on an expected failure checks the status, that no model is
 * handed out, that err carries the same code, and that the message holds
 * each needle (NULL: none).  Returns the model when one was expected. */
static sf_model *expect_load(const unsigned char *bytes, size_t size, sf_status code, const char *needle1,
                             const char *needle2, const char *what)
{
    sf_model *m = (sf_model *)&m; /* must be reset to NULL on failure */
    sf_error err = {SF_OK, "", -1, {-1, -1, -1, -1}};
    sf_status rc = sf_model_load_bytes(bytes, size, &m, &err);
    if (code == SF_OK) {
        CHECK(rc == SF_OK && m, "%s: refused (%d: %s)", what, rc, err.message);
        return rc == SF_OK ? m : NULL;
    }
    CHECK(rc == code && err.code == code && m == NULL, "%s: status %d (want %d): %s", what, rc, code, err.message);
    CHECK(!needle1 || strstr(err.message, needle1), "%s: message lacks \"%s\": %s", what, needle1, err.message);
    CHECK(!needle2 || strstr(err.message, needle2), "%s: message lacks \"%s\": %s", what, needle2, err.message);
    if (rc == SF_OK) sf_model_free(m);
    return NULL;
}

/* ------------------------------------------------- the configuration, key by key */

typedef struct edit_case {
    const char *path, *value; /* value NULL: the key is removed */
    sf_status code;
    const char *needle1, *needle2;
} edit_case;

#define TM "model config: "
static const char *const prior_ok =
    "{\"kind\": \"truncated_normal\", \"mean\": [0.5, 0.4, 0.6, 0.5, 0.45, 0.55, 0.5],"
    " \"sigma\": [0.2, 0.3, 0.25, 1.0, 0.15, 0.2, 0.5]}";

static const edit_case edits[] = {
    /* top level */
    {"n_atoms", NULL, SF_ERR_MODEL, TM "'n_atoms' must be an integer in 3..1000000", NULL},
    {"n_atoms", "4.5", SF_ERR_MODEL, "'n_atoms' must be an integer", NULL},
    {"n_atoms", "2", SF_ERR_MODEL, "'n_atoms' must be an integer", NULL},
    {"n_atoms", "1000001", SF_ERR_MODEL, "'n_atoms' must be an integer", NULL},
    {"n_atoms", "\"5\"", SF_ERR_MODEL, "'n_atoms' must be an integer", NULL},
    {"n_atoms", "6", SF_ERR_MODEL, "'zmatrix' must be an array of n_atoms = 6 rows", NULL},
    {"temperature", NULL, SF_ERR_MODEL, TM "'temperature' must be a number in (0, 1e+06] (kelvin)", NULL},
    {"temperature", "\"300\"", SF_ERR_MODEL, "'temperature' must be a number", NULL},
    {"temperature", "0", SF_ERR_MODEL, "'temperature' must be a number", NULL},
    {"temperature", "-300", SF_ERR_MODEL, "'temperature' must be a number", NULL},
    {"temperature", "1000001", SF_ERR_MODEL, "'temperature' must be a number", NULL},
    {"energy_offset", "\"1\"", SF_ERR_MODEL, TM "'energy_offset' must be a number in [-1e+12, 1e+12] (kJ/mol)", NULL},
    {"energy_offset", "-1.5e12", SF_ERR_MODEL, "'energy_offset' must be a number", NULL},
    {"energy_offset", "1.5e12", SF_ERR_MODEL, "'energy_offset' must be a number", NULL},
    {"charge", "0", SF_ERR_MODEL, TM "the top level has the unknown key 'charge'", NULL},
    {"layers", NULL, SF_ERR_MODEL, TM "'layers' must be a non-empty array", NULL},
    {"layers", "[]", SF_ERR_MODEL, "'layers' must be a non-empty array", NULL},
    {"layers", "{}", SF_ERR_MODEL, "'layers' must be a non-empty array", NULL},
    /* zmatrix */
    {"zmatrix", NULL, SF_ERR_MODEL, TM "the required key 'zmatrix' is missing", NULL},
    {"zmatrix", "{}", SF_ERR_MODEL, "'zmatrix' must be an array of n_atoms = 5 rows", NULL},
    {"zmatrix[5]", "[0, 1, 2, 3]", SF_ERR_MODEL, "'zmatrix' must be an array of n_atoms = 5 rows", NULL},
    {"zmatrix[2]", "[2, 1, 0]", SF_ERR_MODEL, "zmatrix row 2 is not 4 integers", NULL},
    {"zmatrix[2]", "[2, 1, 0.5, -1]", SF_ERR_MODEL, "zmatrix row 2 is not 4 integers", NULL},
    {"zmatrix[2]", "\"2 1 0\"", SF_ERR_MODEL, "zmatrix row 2 is not 4 integers", NULL},
    {"zmatrix[0][1]", "0", SF_ERR_MODEL, "zmatrix row 0 column 1 must be -1", NULL},
    {"zmatrix[2][3]", "3", SF_ERR_MODEL, "zmatrix row 2 column 3 must be -1", NULL},
    {"zmatrix[1][0]", "5", SF_ERR_MODEL, "zmatrix row 1 names atom 5, outside 0..4", NULL},
    {"zmatrix[1][1]", "-1", SF_ERR_MODEL, "zmatrix row 1 names atom -1, outside 0..4", NULL},
    {"zmatrix[2][0]", "1", SF_ERR_MODEL, "zmatrix places atom 1 twice (row 2)", NULL},
    {"zmatrix[2][2]", "3", SF_ERR_MODEL, "zmatrix row 2 refers to atom 3 before it is placed", NULL},
    {"zmatrix[2][2]", "1", SF_ERR_MODEL, "zmatrix row 2 repeats atom 1", NULL},
    {"zmatrix[3][3]", "2", SF_ERR_MODEL, "zmatrix row 3 repeats atom 2", NULL},
    /* atoms */
    {"atoms", "{}", SF_ERR_MODEL, TM "'atoms' must list n_atoms = 5 entries", NULL},
    {"atoms[5]", "{\"name\": \"X\", \"residue\": \"R\", \"residue_index\": 0, \"element\": \"C\"}", SF_ERR_MODEL,
     "'atoms' must list n_atoms = 5 entries", NULL},
    {"atoms[1]", "\"C2\"", SF_ERR_MODEL, TM "atoms[1] must be an object", NULL},
    {"atoms[1].charge", "0", SF_ERR_MODEL, TM "atoms[1] has the unknown key 'charge'", NULL},
    {"atoms[1].name", NULL, SF_ERR_MODEL, TM "atoms[1] needs strings 'name', 'residue', 'element'", "0..999999"},
    {"atoms[2].residue", "7", SF_ERR_MODEL, "atoms[2] needs strings", NULL},
    {"atoms[3].element", NULL, SF_ERR_MODEL, "atoms[3] needs strings", NULL},
    {"atoms[4].residue_index", "1000000", SF_ERR_MODEL, "atoms[4] needs strings", "'residue_index' in 0..999999"},
    {"atoms[4].residue_index", "-1", SF_ERR_MODEL, "atoms[4] needs strings", NULL},
    {"atoms[4].residue_index", "0.5", SF_ERR_MODEL, "atoms[4] needs strings", NULL},
    {"atoms[4].residue_index", NULL, SF_ERR_MODEL, "atoms[4] needs strings", NULL},
    /* prior */
    {"prior", "\"gaussian\"", SF_ERR_MODEL, TM "prior must be \"uniform\" or {\"kind\": \"truncated_normal\"", NULL},
    {"prior", "3", SF_ERR_MODEL, "prior must be \"uniform\"", NULL},
    {"prior", "{\"mean\": [0.5]}", SF_ERR_MODEL, "prior must be \"uniform\"", NULL},
    {"prior", "{\"kind\": \"normal\"}", SF_ERR_MODEL, "prior must be \"uniform\"", NULL},
    {"prior", "{\"kind\": \"truncated_normal\", \"mean\": [], \"sigma\": [], \"scale\": 1}", SF_ERR_MODEL,
     TM "'prior' has the unknown key 'scale'", NULL},
    {"prior", "{\"kind\": \"truncated_normal\", \"sigma\": [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]}", SF_ERR_MODEL,
     TM "prior has 'sigma' without 'mean' (give both or neither)", NULL},
    {"prior", "{\"kind\": \"truncated_normal\"}", SF_ERR_MODEL,
     TM "a truncated_normal prior needs 'mean' and 'sigma', arrays of 2 n_atoms - 3 = 7 numbers", NULL},
    {"prior", "{\"kind\": \"truncated_normal\", \"mean\": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],"
              " \"sigma\": [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]}", SF_ERR_MODEL, "= 7 numbers", NULL},
    {"prior", "{\"kind\": \"truncated_normal\", \"mean\": {\"0\": 0.5},"
              " \"sigma\": [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]}", SF_ERR_MODEL, "= 7 numbers", NULL},
    {"prior", "{\"kind\": \"truncated_normal\", \"mean\": [0.5, 0.5, 0.5, \"0.5\", 0.5, 0.5, 0.5],"
              " \"sigma\": [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]}", SF_ERR_MODEL, "= 7 numbers", NULL},
    {"prior", "{\"kind\": \"truncated_normal\", \"mean\": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]}", SF_ERR_MODEL,
     "prior has 'mean' without 'sigma'", NULL},
    {"prior", "{\"kind\": \"truncated_normal\", \"mean\": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],"
              " \"sigma\": [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, null]}", SF_ERR_MODEL, "= 7 numbers", NULL},
    {"prior", "{\"kind\": \"truncated_normal\", \"mean\": [0.5, 0.5, 0.5, 0, 0.5, 0.5, 0.5],"
              " \"sigma\": [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]}", SF_ERR_MODEL,
     TM "prior dimension 3 has mean 0 (need 0 < mean < 1) and sigma 0.2", NULL},
    {"prior", "{\"kind\": \"truncated_normal\", \"mean\": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1],"
              " \"sigma\": [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]}", SF_ERR_MODEL, "prior dimension 6 has mean 1", NULL},
    {"prior", "{\"kind\": \"truncated_normal\", \"mean\": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],"
              " \"sigma\": [0.2, 0.00009, 0.2, 0.2, 0.2, 0.2, 0.2]}", SF_ERR_MODEL,
     "prior dimension 1 has mean 0.5", "sigma 9e-05 (need 1e-4 <= sigma <= 10)"},
    {"prior", "{\"kind\": \"truncated_normal\", \"mean\": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],"
              " \"sigma\": [0.2, 0.2, 10.5, 0.2, 0.2, 0.2, 0.2]}", SF_ERR_MODEL, "prior dimension 2", "sigma 10.5"},
    /* the torsions' von Mises terms (two torsions: dims 7 and 8) */
#define TN "{\"kind\": \"truncated_normal\", \"mean\": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], \"sigma\": [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2], "
    {"prior", TN "\"torsion_mean\": [0.1, 0.2]}", SF_ERR_MODEL,
     TM "prior has 'torsion_mean' without 'torsion_kappa' (give both or neither)", NULL},
    {"prior", TN "\"torsion_kappa\": [1, 2]}", SF_ERR_MODEL, "prior has 'torsion_kappa' without 'torsion_mean'", NULL},
    {"prior", TN "\"torsion_mean\": [0.1, 0.2, 0.3], \"torsion_kappa\": [1, 2]}", SF_ERR_MODEL,
     TM "prior 'torsion_mean' and 'torsion_kappa' must be arrays of n_atoms - 3 = 2 numbers", NULL},
    {"prior", TN "\"torsion_mean\": [0.1, 0.2], \"torsion_kappa\": [1, \"2\"]}", SF_ERR_MODEL, "= 2 numbers", NULL},
    {"prior", TN "\"torsion_mean\": [0.1, 1], \"torsion_kappa\": [1, 2]}", SF_ERR_MODEL,
     TM "prior torsion 1 (dimension 8) has torsion_mean 1 (need 0 <= mean < 1)", NULL},
    {"prior", TN "\"torsion_mean\": [-0.1, 0.2], \"torsion_kappa\": [1, 2]}", SF_ERR_MODEL,
     "prior torsion 0 (dimension 7) has torsion_mean -0.1", NULL},
    {"prior", TN "\"torsion_mean\": [0.1, 0.2], \"torsion_kappa\": [-1, 2]}", SF_ERR_MODEL,
     "prior torsion 0", "torsion_kappa -1 (need 0 <= kappa <= 10000)"},
    {"prior", TN "\"torsion_mean\": [0.1, 0.2], \"torsion_kappa\": [1, 10000.5]}", SF_ERR_MODEL,
     "prior torsion 1", "torsion_kappa 10000.5"},
#undef TN
    /* smooth */
    {"smooth", "\"default\"", SF_ERR_MODEL, TM "'smooth' must be an object, not a string", NULL},
    {"smooth", "1", SF_ERR_MODEL, "'smooth' must be an object, not a number", NULL},
    {"smooth", "[0.01, 0.1, 0.99, 1]", SF_ERR_MODEL, "'smooth' must be an object, not a list", NULL},
    {"smooth", "null", SF_ERR_MODEL, "'smooth' must be an object, not a literal", NULL},
    {"smooth", "true", SF_ERR_MODEL, "'smooth' must be an object, not a literal", NULL},
    {"smooth", NULL, SF_ERR_MODEL, TM "'smooth' (s_min, alpha_min, c_max, beta) is required with smooth layers", NULL},
    {"smooth.s_min", NULL, SF_ERR_MODEL, TM "'smooth' lacks the required key 's_min'", NULL},
    {"smooth.beta", NULL, SF_ERR_MODEL, "'smooth' lacks the required key 'beta'", NULL},
    {"smooth.gamma", "1", SF_ERR_MODEL, TM "'smooth' has the unknown key 'gamma'", NULL},
    {"smooth.s_min", "\"0.01\"", SF_ERR_MODEL, TM "'smooth' constants must be numbers (beta an integer)", NULL},
    {"smooth.alpha_min", "null", SF_ERR_MODEL, "'smooth' constants must be numbers", NULL},
    {"smooth.c_max", "true", SF_ERR_MODEL, "'smooth' constants must be numbers", NULL},
    {"smooth.beta", "1.5", SF_ERR_MODEL, "'smooth' constants must be numbers (beta an integer)", NULL},
    {"smooth.s_min", "9e-7", SF_ERR_MODEL, TM "smooth constants out of range (s_min=9e-07 in [1e-06,1)", NULL},
    {"smooth.s_min", "1", SF_ERR_MODEL, "smooth constants out of range (s_min=1 in", NULL},
    {"smooth.alpha_min", "9e-7", SF_ERR_MODEL, "alpha_min=9e-07 in [1e-06,1e+06]", NULL},
    {"smooth.alpha_min", "2e6", SF_ERR_MODEL, "alpha_min=2e+06 in [1e-06,1e+06]", NULL},
    {"smooth.c_max", "0", SF_ERR_MODEL, "c_max=0 in (0,1)", NULL},
    {"smooth.c_max", "1", SF_ERR_MODEL, "c_max=1 in (0,1)", NULL},
    {"smooth.beta", "0", SF_ERR_MODEL, "beta=0 in 1..8", NULL},
    {"smooth.beta", "9", SF_ERR_MODEL, "beta=9 in 1..8", NULL},
    /* spline */
    {"spline", "[]", SF_ERR_MODEL, TM "'spline' must be an object, not a list", NULL},
    {"spline.max_bins", "8", SF_ERR_MODEL, TM "'spline' has the unknown key 'max_bins'", NULL},
    {"spline.min_bin_width", "\"0.001\"", SF_ERR_MODEL, TM "'spline' constants must be numbers", NULL},
    {"spline.min_bin_height", "null", SF_ERR_MODEL, "'spline' constants must be numbers", NULL},
    {"spline.min_derivative", "false", SF_ERR_MODEL, "'spline' constants must be numbers", NULL},
    {"spline.min_bin_width", "1e-13", SF_ERR_MODEL, TM "spline constants out of range (min_bin_width=1e-13", NULL},
    {"spline.min_bin_width", "1", SF_ERR_MODEL, "spline constants out of range (min_bin_width=1 ", NULL},
    {"spline.min_bin_height", "1e-13", SF_ERR_MODEL, "min_bin_height=1e-13 in [1e-12,1)", NULL},
    {"spline.min_bin_height", "1", SF_ERR_MODEL, "min_bin_height=1 in [1e-12,1)", NULL},
    {"spline.min_derivative", "1e-13", SF_ERR_MODEL, "min_derivative=1e-13 in [1e-12,1e+06]", NULL},
    {"spline.min_derivative", "2e6", SF_ERR_MODEL, "min_derivative=2e+06 in [1e-12,1e+06]", NULL},
    {"spline.min_bin_width", "0.25", SF_ERR_MODEL,
     TM "layer 1 has 4 spline bins, too many for min_bin_width=0.25 and min_bin_height=0.002", NULL},
    {"spline.min_bin_height", "0.3", SF_ERR_MODEL, "layer 1 has 4 spline bins, too many", "min_bin_height=0.3"},
    /* affine */
    {"affine", "true", SF_ERR_MODEL, TM "'affine' must be an object, not a literal", NULL},
    {"affine.scale_min", "1", SF_ERR_MODEL, TM "'affine' has the unknown key 'scale_min'", NULL},
    {"affine.scale_max", "\"3\"", SF_ERR_MODEL, TM "'affine' constant scale_max must be a number", NULL},
    {"affine.scale_max", "0", SF_ERR_MODEL, TM "affine scale_max=0 must be in (0, 50]", NULL},
    {"affine.scale_max", "50.5", SF_ERR_MODEL, "affine scale_max=50.5 must be in (0, 50]", NULL},
    /* support */
    {"support", "5", SF_ERR_MODEL, TM "'support' must be an object, not a number", NULL},
    {"support.clamp", "1", SF_ERR_MODEL, TM "'support' has the unknown key 'clamp'", NULL},
    {"support.policy", "1", SF_ERR_MODEL, TM "support policy must be the string \"error\" or \"wall\"", NULL},
    {"support.policy", "null", SF_ERR_MODEL, "support policy must be the string", NULL},
    {"support.policy", "\"Wall\"", SF_ERR_MODEL, "support policy must be the string \"error\" or \"wall\", not 'Wall'",
     NULL},
    {"support.margin", "\"0.02\"", SF_ERR_MODEL,
     TM "support margin must be a number in (0, 0.25) and wall_constant a number in [0, 1e+12] (kJ/mol)", NULL},
    {"support.margin", "0", SF_ERR_MODEL, "support margin must be a number in (0, 0.25)", NULL},
    {"support.margin", "0.25", SF_ERR_MODEL, "support margin must be a number in (0, 0.25)", NULL},
    {"support.angle_margin", "\"0.1\"", SF_ERR_MODEL, TM "support angle_margin must be a number in (0, 0.25)", NULL},
    {"support.angle_margin", "0", SF_ERR_MODEL, TM "support angle_margin must be a number in (0, 0.25)", NULL},
    {"support.angle_margin", "0.25", SF_ERR_MODEL, TM "support angle_margin must be a number in (0, 0.25)", NULL},
    {"support.wall_constant", "null", SF_ERR_MODEL, "wall_constant a number in [0, 1e+12]", NULL},
    {"support.wall_constant", "-1", SF_ERR_MODEL, "wall_constant a number in [0, 1e+12]", NULL},
    {"support.wall_constant", "2e12", SF_ERR_MODEL, "wall_constant a number in [0, 1e+12]", NULL},
    /* the wall's edge forces: both or neither, 2N - 3 = 7 numbers in [0, 1e12], only under "wall" */
    {"support.edge_force_lower", "[1, 2, 3, 4, 5, 6, 7]", SF_ERR_MODEL,
     TM "support has 'edge_force_lower' without 'edge_force_upper' (give both or neither)", NULL},
    {"support.edge_force_upper", "[1, 2, 3, 4, 5, 6, 7]", SF_ERR_MODEL,
     TM "support has 'edge_force_upper' without 'edge_force_lower'", NULL},
    {"support", "{\"edge_force_lower\": [1, 2, 3, 4, 5, 6, 7], \"edge_force_upper\": [1, 2, 3, 4, 5, 6, 7]}",
     SF_ERR_MODEL, TM "support edge forces are given but the policy is \"error\" (they act only under \"wall\")", NULL},
    {"support", "{\"policy\": \"wall\", \"edge_force_lower\": [1, 2, 3, 4, 5, 6], \"edge_force_upper\": [1, 2, 3, 4, 5, 6, 7]}",
     SF_ERR_MODEL, TM "support 'edge_force_lower' and 'edge_force_upper' must be arrays of 2 n_atoms - 3 = 7 numbers",
     NULL},
    {"support", "{\"policy\": \"wall\", \"edge_force_lower\": [1, 2, 3, 4, 5, 6, 7], \"edge_force_upper\": [1, 2, 3, \"4\", 5, 6, 7]}",
     SF_ERR_MODEL, "must be arrays of 2 n_atoms - 3 = 7 numbers", NULL},
    {"support", "{\"policy\": \"wall\", \"edge_force_lower\": 5, \"edge_force_upper\": [1, 2, 3, 4, 5, 6, 7]}",
     SF_ERR_MODEL, "must be arrays of 2 n_atoms - 3 = 7 numbers", NULL},
    {"support", "{\"policy\": \"wall\", \"edge_force_lower\": [1, 2, -3, 4, 5, 6, 7], \"edge_force_upper\": [1, 2, 3, 4, 5, 6, 7]}",
     SF_ERR_MODEL, TM "support edge forces of interval dimension 2 are -3 (lower) and 3 (upper); each must be in [0, 1e+12]",
     NULL},
    {"support", "{\"policy\": \"wall\", \"edge_force_lower\": [1, 2, 3, 4, 5, 6, 7], \"edge_force_upper\": [1, 2, 3, 4, 5, 6, 2e12]}",
     SF_ERR_MODEL, "support edge forces of interval dimension 6 are 7 (lower) and 2e+12 (upper)", NULL},
    /* layers */
    {"layers[1]", "7", SF_ERR_MODEL, TM "layer 1 must be an object", NULL},
    {"layers[0].mask", "[]", SF_ERR_MODEL, TM "layer 0 has the unknown key 'mask'", NULL},
    {"layers[0].transform", NULL, SF_ERR_MODEL, TM "layer 0 has no 'transform' (\"smooth\", \"spline\" or \"affine\")",
     NULL},
    {"layers[0].transform", "3", SF_ERR_MODEL, "layer 0 has no 'transform'", NULL},
    {"layers[0].transform", "\"Smooth\"", SF_ERR_MODEL,
     TM "layer 0 transform 'Smooth' is unknown to this reader (it knows \"smooth\", \"spline\" and \"affine\")", NULL},
    {"layers[0].direction", NULL, SF_ERR_MODEL, TM "layer 0 direction must be \"generative\" or \"density\"", NULL},
    {"layers[1].direction", "\"inverse\"", SF_ERR_MODEL, "layer 1 direction must be", NULL},
    {"layers[0].activation", NULL, SF_ERR_MODEL, TM "layer 0 activation must be tanh, silu or softplus", NULL},
    {"layers[2].activation", "\"relu\"", SF_ERR_MODEL, "layer 2 activation must be tanh, silu or softplus", NULL},
    {"layers[0].transformed", NULL, SF_ERR_MODEL, TM "layer 0 lacks the required key 'transformed'", NULL},
    {"layers[1].conditioning", NULL, SF_ERR_MODEL, "layer 1 lacks the required key 'conditioning'", NULL},
    {"layers[0].conditioning", "\"1 3 5 7\"", SF_ERR_MODEL,
     TM "layer 0 'conditioning' must be an array of integers", NULL},
    {"layers[0].transformed[1]", "2.5", SF_ERR_MODEL, "layer 0 'transformed' must be an array of integers", NULL},
    {"layers[0].transformed[0]", "9", SF_ERR_MODEL, TM "layer 0 'transformed' names dimension 9, outside 0..8", NULL},
    {"layers[1].conditioning[2]", "-1", SF_ERR_MODEL, "layer 1 'conditioning' names dimension -1, outside 0..8",
     NULL},
    {"layers[0].transformed[2]", "0", SF_ERR_MODEL, TM "layer 0 'transformed' repeats dimension 0", NULL},
    {"layers[0].transformed", "[]", SF_ERR_MODEL, TM "layer 0 transforms no dimension", NULL},
    {"layers[0].conditioning[1]", "2", SF_ERR_MODEL,
     TM "layer 0 uses dimension 2 twice (transformed and conditioning sets must be disjoint)", NULL},
    {"layers[0].n_components", NULL, SF_ERR_MODEL, TM "layer 0 n_components must be an integer in 1..64", NULL},
    {"layers[1].n_components", NULL, SF_ERR_MODEL, "layer 1 n_components must be an integer in 1..64", NULL},
    {"layers[0].n_components", "0", SF_ERR_MODEL, "layer 0 n_components must be an integer in 1..64", NULL},
    {"layers[0].n_components", "65", SF_ERR_MODEL, "layer 0 n_components must be an integer in 1..64", NULL},
    {"layers[0].n_components", "2.5", SF_ERR_MODEL, "layer 0 n_components must be an integer in 1..64", NULL},
    {"layers[0].n_components", "\"3\"", SF_ERR_MODEL, "layer 0 n_components must be an integer in 1..64", NULL},
    {"layers[2].n_components", "0", SF_ERR_MODEL, "layer 2 n_components must be an integer in 1..64", NULL},
    {"layers[0].hidden", NULL, SF_ERR_MODEL, TM "layer 0 'hidden' must be an array of widths in 1..1048576", NULL},
    {"layers[0].hidden", "[0]", SF_ERR_MODEL, "layer 0 'hidden' must be an array of widths in 1..1048576", NULL},
    {"layers[1].hidden", "[5, 1048577]", SF_ERR_MODEL, "layer 1 'hidden' must be an array of widths", NULL},
    {"layers[0].hidden", "\"6\"", SF_ERR_MODEL, "layer 0 'hidden' must be an array of widths", NULL},
    /* [cost-limits]: the numbers in the message */
    {"layers[0].hidden", "[1048576, 1048576]", SF_ERR_MODEL,
     TM "evaluating one molecule needs a workspace of", "more than the limit of 8388608 doubles (64 MiB): 3 layers, D = 9"},
    {"layers[0].hidden", "[10000, 10000]", SF_ERR_MODEL,
     TM "the conditioners hold 100770473 weights and biases, more than the limit of 100000000", NULL},
};

/* Valid edits: the model loads (the facts are checked in test_accepted_configs). */
static const edit_case accepted_edits[] = {
    {"energy_offset", NULL, SF_OK, NULL, NULL},
    {"atoms", NULL, SF_OK, NULL, NULL},
    {"prior", NULL, SF_OK, NULL, NULL},
    {"spline", "{}", SF_OK, NULL, NULL},
    {"affine", "{}", SF_OK, NULL, NULL},
    {"support", NULL, SF_OK, NULL, NULL},
    {"support", "{}", SF_OK, NULL, NULL},
    {"support.policy", NULL, SF_OK, NULL, NULL},
    {"support.policy", "\"wall\"", SF_OK, NULL, NULL},
    {"support", "{\"policy\": \"wall\", \"edge_force_lower\": [0, 2, 3, 4, 5, 6, 1e12], \"edge_force_upper\": [1, 2, 3, 4, 5, 6, 0]}",
     SF_OK, NULL, NULL},
    {"layers[2].n_components", "5", SF_OK, NULL, NULL},
    {"layers[0].activation", "\"tanh\"", SF_OK, NULL, NULL},
};

static void run_edit(const edit_case *c)
{
    char *config = cc_edit(cc_base_config, c->path, c->value);
    CHECK(config != NULL, "edit %s: no such path", c->path);
    if (!config) return;
    char what[160];
    snprintf(what, sizeof what, "%s = %.100s", c->path, c->value ? c->value : "(removed)");
    size_t size;
    unsigned char *bytes = cc_model(config, c->code == SF_OK ? config : cc_base_config, 0.5, &size);
    sf_model *m = expect_load(bytes, size, c->code, c->needle1, c->needle2, what);
    if (m) CHECK(strcmp(sf_model_config_json(m), config) == 0, "%s: the config is not handed back as stored", what);
    sf_model_free(m);
    free(bytes);
    free(config);
}

static void test_config_refusals(void)
{
    size_t size;
    unsigned char *bytes = cc_model(cc_base_config, NULL, 0.5, &size);
    sf_model *m = expect_load(bytes, size, SF_OK, NULL, NULL, "the base configuration");
    sf_model_free(m);
    free(bytes);
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) run_edit(&edits[i]);
    for (size_t i = 0; i < sizeof accepted_edits / sizeof accepted_edits[0]; i++) run_edit(&accepted_edits[i]);
}

/* --------------------------------------------------------- the JSON itself */

typedef struct text_case {
    const char *text;
    sf_status code;
    const char *needle1, *needle2;
} text_case;

#define NOT_OBJECT "model file: metadata 'config' is not a JSON object"
static const text_case texts[] = {
    /* [json-syntax]: what cJSON would take and RFC 8259 does not, named */
    {"{\"n_atoms\": 5, \"te\x01mp\": 1}", SF_ERR_FORMAT, NOT_OBJECT ": it holds a raw control character inside a string",
     NULL},
    {"{\"n_atoms\": 5, \"a\\u0000b\": 1}", SF_ERR_FORMAT, "a NUL character (\\u0000) inside a string", NULL},
    {"{\"n_atoms\": -x}", SF_ERR_FORMAT, "it holds a number without digits", NULL},
    {"{\"n_atoms\": -.5}", SF_ERR_FORMAT, "it holds a number without digits", NULL},
    {"{\"n_atoms\": 5.}", SF_ERR_FORMAT, "a number with no digit after '.'", NULL},
    {"{\"n_atoms\": 5.e3}", SF_ERR_FORMAT, "a number with no digit after '.'", NULL},
    {"{\"n_atoms\": 5. }", SF_ERR_FORMAT, "a number with no digit after '.'", NULL},
    {"{\"n_atoms\": 5e}", SF_ERR_FORMAT, "a number with an empty exponent", NULL},
    {"{\"n_atoms\": 5E+}", SF_ERR_FORMAT, "a number with an empty exponent", NULL},
    {"{\"n_atoms\": 05}", SF_ERR_FORMAT, "a number not in JSON syntax (a leading zero", NULL},
    {"{\"n_atoms\": 5.0.1}", SF_ERR_FORMAT, "a number not in JSON syntax", NULL},
    {"{\"n_atoms\": 5e1e1}", SF_ERR_FORMAT, "a number not in JSON syntax", NULL},
    {"{\"n_atoms\": 5E1E1}", SF_ERR_FORMAT, "a number not in JSON syntax", NULL},
    {"{\"n_atoms\": 5+1}", SF_ERR_FORMAT, "a number not in JSON syntax", NULL},
    {"{\"n_atoms\": 5-1}", SF_ERR_FORMAT, "a number not in JSON syntax", NULL},
    {"{\"n_atoms\": 5, \"temperature\": NaN}", SF_ERR_FORMAT, "NaN and Infinity are not JSON", NULL},
    /* grammar left to cJSON: no detail to give */
    {"{\"n_atoms", SF_ERR_FORMAT, NOT_OBJECT, NULL},
    {"{\"n_atoms\\", SF_ERR_FORMAT, NOT_OBJECT, NULL},
    {"{\"n_atoms\": tru}", SF_ERR_FORMAT, NOT_OBJECT, NULL},
    {"{} {}", SF_ERR_FORMAT, NOT_OBJECT, NULL},
    {"\"config\"", SF_ERR_FORMAT, NOT_OBJECT, NULL},
    /* [finite-numbers], [duplicate-keys] */
    {"{\"n_atoms\": 5, \"temperature\": 1e400}", SF_ERR_FORMAT,
     "model config: 'temperature' holds a number that is not a finite double", NULL},
    /* an array's items are named by the array's key */
    {"{\"n_atoms\": 5, \"layers\": [1, -1e999]}", SF_ERR_FORMAT, "model config: 'layers' holds a number that is not a finite",
     NULL},
    {"{\"n_atoms\": 5, \"smooth\": {\"beta\": 1, \"s_min\": 0.1, \"beta\": 2}}", SF_ERR_FORMAT,
     "model config: an object holds the key 'beta' twice", NULL},
    {"{\"n_atoms\": 5, \"n_atoms\": 5}", SF_ERR_FORMAT, "an object holds the key 'n_atoms' twice", NULL},
    /* a key with an escaped quote is read as such and is unknown */
    {"{\"n_\\\"atoms\": 5}", SF_ERR_MODEL, "the top level has the unknown key 'n_\"atoms'", NULL},
};

/* An object of 65 keys (more than any object of the format has): refused without
 * the quadratic search for a repeated key. */
static void test_config_text(void)
{
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        size_t size;
        unsigned char *bytes = cc_model(texts[i].text, cc_base_config, 0.5, &size);
        expect_load(bytes, size, texts[i].code, texts[i].needle1, texts[i].needle2, texts[i].text);
        free(bytes);
    }
    char big[65 * 16 + 8] = "{";
    for (int k = 0; k < 65; k++) snprintf(big + strlen(big), sizeof big - strlen(big), "%s\"k%d\": %d", k ? ", " : "", k, k);
    strcat(big, "}");
    size_t size;
    unsigned char *bytes = cc_model(big, cc_base_config, 0.5, &size);
    expect_load(bytes, size, SF_ERR_MODEL, "model config: an object with 65 keys repeats a key or holds unknown ones",
                NULL, "65 keys");
    free(bytes);

    /* JSON's whitespace (tab, CR, LF) and numbers with exponents and signs are read exactly. */
    const char *from = "{\"n_atoms\": 5, \"temperature\": 300.0, \"energy_offset\": 1.5,";
    const char *to = "\t{\r\n\"n_atoms\"\t: 5 ,\r\n\"temperature\": 3.0E+2, \"energy_offset\":-25e-1,";
    CHECK(strncmp(cc_base_config, from, strlen(from)) == 0, "the base config begins otherwise");
    char *text = malloc(strlen(cc_base_config) + 64);
    snprintf(text, strlen(cc_base_config) + 64, "%s%s \n", to, cc_base_config + strlen(from));
    bytes = cc_model(text, cc_base_config, 0.5, &size);
    sf_model *m = expect_load(bytes, size, SF_OK, NULL, NULL, "whitespace and exponents");
    if (m) {
        CHECK(sf_model_temperature(m) == 300.0 && sf_model_energy_offset(m) == -2.5,
              "3.0E+2 K and -25e-1 kJ/mol read as %.17g and %.17g", sf_model_temperature(m), sf_model_energy_offset(m));
        CHECK(strcmp(sf_model_config_json(m), text) == 0, "config text not handed back unchanged");
    }
    sf_model_free(m);
    free(bytes);
    free(text);
}

/* ------------------------------------------------------ accepted configurations */

static sf_model *load_config(const char *config, double scale)
{
    size_t size;
    unsigned char *bytes = cc_model(config, NULL, scale, &size);
    sf_model *m = expect_load(bytes, size, SF_OK, NULL, NULL, config);
    free(bytes);
    return m;
}

static void test_accepted_configs(void)
{
    sf_model *m = load_config(cc_base_config, 0.5);
    if (!m) return;
    CHECK(sf_model_num_atoms(m) == 5 && sf_model_num_dims(m) == 9 && sf_model_num_layers(m) == 3,
          "N, D, layers: %d %d %d", sf_model_num_atoms(m), sf_model_num_dims(m), sf_model_num_layers(m));
    CHECK(sf_model_format_version(m) == 1 && sf_model_support_policy(m) == SF_SUPPORT_ERROR, "version, policy");
    CHECK(fabs(sf_model_kT(m) - 0.00831446261815324 * 300) < 1e-15, "kT %.17g", sf_model_kT(m));
    CHECK(sf_model_energy_offset(m) == 1.5, "energy offset %g", sf_model_energy_offset(m));
    /* the atoms list, and out-of-range indices */
    CHECK(strcmp(sf_model_atom_name(m, 2), "N3") == 0 && strcmp(sf_model_atom_residue(m, 2), "GLY") == 0 &&
              sf_model_atom_residue_index(m, 2) == 1 && sf_model_atom_residue_index(m, 4) == 999999,
          "atom 2: %s %s %d", sf_model_atom_name(m, 2), sf_model_atom_residue(m, 2), sf_model_atom_residue_index(m, 2));
    CHECK(!sf_model_atom_name(m, -1) && !sf_model_atom_name(m, 5) && !sf_model_atom_residue(m, -1) &&
              !sf_model_atom_residue(m, 5) && sf_model_atom_residue_index(m, -1) == -1 &&
              sf_model_atom_residue_index(m, 5) == -1,
          "atom facts outside 0..4");
    int row[4];
    sf_model_zmatrix_row(m, 4, row);
    CHECK(row[0] == 4 && row[1] == 3 && row[2] == 2 && row[3] == 1, "zmatrix row 4");
    sf_model_zmatrix_row(m, 5, row);
    CHECK(row[0] == -1 && row[3] == -1, "zmatrix row 5 is all -1");
    sf_model_free(m);

    /* Without atoms every atom fact is absent. */
    char *c = cc_edit(cc_base_config, "atoms", NULL);
    m = load_config(c, 0.5);
    if (m)
        CHECK(!sf_model_atom_name(m, 0) && !sf_model_atom_residue(m, 0) && sf_model_atom_residue_index(m, 0) == -1,
              "facts of a model without atoms");
    sf_model_free(m);
    free(c);

    /* Defaults: no energy_offset is 0; no support section, or no policy in it, is "error";
     * "wall" is read. */
    c = cc_edit(cc_base_config, "energy_offset", NULL);
    m = load_config(c, 0.5);
    if (m) CHECK(sf_model_energy_offset(m) == 0.0, "default energy offset %g", sf_model_energy_offset(m));
    sf_model_free(m);
    free(c);
    const char *supports[][2] = {{"support", NULL}, {"support.policy", NULL}, {"support.policy", "\"wall\""}};
    for (int i = 0; i < 3; i++) {
        c = cc_edit(cc_base_config, supports[i][0], supports[i][1]);
        m = load_config(c, 0.5);
        if (m)
            CHECK(sf_model_support_policy(m) == (i == 2 ? SF_SUPPORT_WALL : SF_SUPPORT_ERROR), "policy of case %d", i);
        sf_model_free(m);
        free(c);
    }

    /* Without smooth layers the smooth section may be absent. */
    c = cc_edit(cc_base_config, "layers[0].transform", "\"spline\"");
    char *c2 = cc_edit(c, "smooth", NULL);
    m = load_config(c2, 0.5);
    sf_model_free(m);
    free(c);
    free(c2);

    /* UTF-8 in strings: two-, three- and four-byte forms. */
    c = cc_edit(cc_base_config, "atoms[0].name", "\"C\xce\xb1\"");
    c2 = cc_edit(c, "atoms[1].residue", "\"\xe2\x82\xac\xf0\x9f\x98\x80\"");
    m = load_config(c2, 0.5);
    if (m)
        CHECK(strcmp(sf_model_atom_name(m, 0), "C\xce\xb1") == 0 &&
                  strcmp(sf_model_atom_residue(m, 1), "\xe2\x82\xac\xf0\x9f\x98\x80") == 0,
              "UTF-8 names: %s %s", sf_model_atom_name(m, 0), sf_model_atom_residue(m, 1));
    sf_model_free(m);
    free(c);
    free(c2);
}

/* The model description (sf_model_describe and its companions) reports what the
 * configuration and the tensors say, and refuses each argument out of range on its own. */
static void test_description(void)
{
    cc_tensors ts;
    cc_tensors_for(cc_base_config, 0.5, 7, &ts); /* the tensors cc_model writes */
    sf_model *m = load_config(cc_base_config, 0.5);
    if (!m) {
        cc_free_tensors(&ts);
        return;
    }
    sf_model_description md;
    CHECK(sf_model_describe(m, &md) == SF_OK, "describe");
    CHECK(md.N == 5 && md.D == 9 && md.n_layers == 3 && md.policy == SF_SUPPORT_ERROR && !md.has_prior &&
              md.prior_log_norm == 0 && md.kT == sf_model_kT(m) && md.energy_offset == 1.5 && md.margin == 0.02 &&
              md.angle_margin == 0.02 && md.wall_constant == 500.0,
          "model facts of the description");
    CHECK(md.smooth.s_min == 0.01 && md.smooth.alpha_min == 0.1 && md.smooth.c_max == 0.99 && md.smooth.beta == 2 &&
              md.spline.min_bin_width == 0.001 && md.spline.min_bin_height == 0.002 &&
              md.spline.min_derivative == 0.001 && md.affine.scale_max == 3.0,
          "constants of the description");
    /* log_scale_sum: sum of log(hi - lo) over bonds, log pi per angle, log 2 pi per torsion */
    const double pi = 3.14159265358979323846;
    const double scales = 4 * log(CC_BOND_HI - CC_BOND_LO) + 3 * log(pi) + 2 * log(2 * pi);
    CHECK(fabs(md.log_scale_sum - scales) < 1e-12, "log_scale_sum %.17g, want %.17g", md.log_scale_sum, scales);
    const struct {
        sf_transform_kind transform;
        int generative, n_trans, n_cond, K, P, activation, n_linear, widths[4];
    } want[3] = {{SF_TRANSFORM_SMOOTH, 1, 5, 4, 3, 14, 2, 2, {5, 6, 70}},
                 {SF_TRANSFORM_SPLINE, 0, 4, 5, 4, 14, 0, 3, {6, 5, 4, 56}},
                 {SF_TRANSFORM_AFFINE, 1, 4, 5, 1, 2, 1, 1, {7, 8}}};
    const int trans1[4] = {1, 3, 5, 7}, cond1[5] = {0, 2, 4, 6, 8};
    for (int l = 0; l < 3; l++) {
        sf_layer_description ld;
        CHECK(sf_model_describe_layer(m, l, &ld) == SF_OK, "describe layer %d", l);
        int same = ld.transform == want[l].transform && ld.generative == want[l].generative &&
                   ld.n_trans == want[l].n_trans && ld.n_cond == want[l].n_cond && ld.K == want[l].K &&
                   ld.P == want[l].P && ld.activation == want[l].activation && ld.n_linear == want[l].n_linear;
        for (int k = 0; same && k <= ld.n_linear; k++) same = ld.width[k] == want[l].widths[k];
        CHECK(same, "layer %d description", l);
        if (l == 1)
            CHECK(memcmp(ld.trans, trans1, sizeof trans1) == 0 && memcmp(ld.cond, cond1, sizeof cond1) == 0,
                  "layer 1 dims");
        for (int k = 0; same && k < ld.n_linear; k++) {
            char name[64];
            snprintf(name, sizeof name, "layers.%d.net.%d.weight", l, k);
            const cc_tensor *w = cc_find(&ts, name);
            snprintf(name, sizeof name, "layers.%d.net.%d.bias", l, k);
            const cc_tensor *b = cc_find(&ts, name);
            const double *mw = sf_model_layer_weight(m, l, k), *mb = sf_model_layer_bias(m, l, k);
            CHECK(mw && mb && memcmp(mw, w->v, cc_count(w) * sizeof(double)) == 0 &&
                      memcmp(mb, b->v, cc_count(b) * sizeof(double)) == 0,
                  "layer %d map %d: the stored weights and biases", l, k);
        }
    }
    /* Under float32 weights the description gives the weights rounded as applied. */
    CHECK(sf_model_set_weight_precision(m, SF_WEIGHTS_FLOAT32, NULL) == SF_OK, "float32");
    const double *w32 = sf_model_layer_weight(m, 1, 2);
    const cc_tensor *w = cc_find(&ts, "layers.1.net.2.weight");
    int rounded = w32 != NULL;
    for (size_t i = 0; rounded && i < cc_count(w); i++) rounded = w32[i] == (double)(float)w->v[i];
    CHECK(rounded, "float32 weights of the description");
    CHECK(sf_model_set_weight_precision(m, SF_WEIGHTS_FLOAT64, NULL) == SF_OK, "float64");
    double lo = 0, hi = 0, mean = 0, sigma = 0;
    CHECK(sf_model_bond_bounds(m, 3, &lo, &hi) == SF_OK && lo == CC_BOND_LO && hi == CC_BOND_HI, "bond 3 bounds");
    CHECK(sf_model_prior(m, 0, &mean, &sigma) == SF_ERR_ARG, "the uniform prior has no mean and sigma");
    CHECK(sf_model_edge_force(m, 6, &lo, &hi) == SF_OK && lo == 0 && hi == 0, "no edge forces: 0 and 0");
    CHECK(sf_model_edge_force(NULL, 0, &lo, &hi) == SF_ERR_ARG && sf_model_edge_force(m, 0, NULL, &hi) == SF_ERR_ARG &&
              sf_model_edge_force(m, 0, &lo, NULL) == SF_ERR_ARG && sf_model_edge_force(m, -1, &lo, &hi) == SF_ERR_ARG &&
              sf_model_edge_force(m, 7, &lo, &hi) == SF_ERR_ARG,
          "edge forces out of range (7 interval dims)");

    /* Each argument out of range alone. */
    sf_layer_description ld;
    CHECK(sf_model_describe(NULL, &md) == SF_ERR_ARG && sf_model_describe(m, NULL) == SF_ERR_ARG, "describe NULL");
    CHECK(sf_model_describe_layer(NULL, 0, &ld) == SF_ERR_ARG && sf_model_describe_layer(m, 0, NULL) == SF_ERR_ARG &&
              sf_model_describe_layer(m, -1, &ld) == SF_ERR_ARG && sf_model_describe_layer(m, 3, &ld) == SF_ERR_ARG,
          "describe_layer out of range");
    CHECK(!sf_model_layer_weight(NULL, 0, 0) && !sf_model_layer_weight(m, -1, 0) && !sf_model_layer_weight(m, 3, 0) &&
              !sf_model_layer_weight(m, 0, -1) && !sf_model_layer_weight(m, 0, 2) && !sf_model_layer_bias(m, 2, 1) &&
              sf_model_layer_bias(m, 2, 0),
          "weights out of range");
    CHECK(sf_model_bond_bounds(NULL, 0, &lo, &hi) == SF_ERR_ARG && sf_model_bond_bounds(m, 0, NULL, &hi) == SF_ERR_ARG &&
              sf_model_bond_bounds(m, 0, &lo, NULL) == SF_ERR_ARG && sf_model_bond_bounds(m, -1, &lo, &hi) == SF_ERR_ARG &&
              sf_model_bond_bounds(m, 4, &lo, &hi) == SF_ERR_ARG,
          "bond bounds out of range");
    sf_model_free(m);

    /* With the truncated-normal prior: its means and sigmas, and its normalization. */
    const double pm[7] = {0.5, 0.4, 0.6, 0.5, 0.45, 0.55, 0.5}, ps[7] = {0.2, 0.3, 0.25, 1.0, 0.15, 0.2, 0.5};
    char *c = cc_edit(cc_base_config, "prior", prior_ok);
    m = load_config(c, 0.5);
    if (m) {
        double norm = 0;
        int same = 1;
        for (int d = 0; d < 7; d++) {
            same &= sf_model_prior(m, d, &mean, &sigma) == SF_OK && mean == pm[d] && sigma == ps[d];
            norm += log(ps[d] * sqrt(2 * pi) *
                        (0.5 * erfc(-(1 - pm[d]) / ps[d] / sqrt(2.0)) - 0.5 * erfc(pm[d] / ps[d] / sqrt(2.0))));
        }
        CHECK(same, "prior means and sigmas");
        CHECK(sf_model_describe(m, &md) == SF_OK && md.has_prior && fabs(md.prior_log_norm - norm) < 1e-12,
              "prior normalization %.17g, want %.17g", md.prior_log_norm, norm);
        CHECK(sf_model_prior(NULL, 0, &mean, &sigma) == SF_ERR_ARG && sf_model_prior(m, 0, NULL, &sigma) == SF_ERR_ARG &&
                  sf_model_prior(m, 0, &mean, NULL) == SF_ERR_ARG && sf_model_prior(m, -1, &mean, &sigma) == SF_ERR_ARG &&
                  sf_model_prior(m, 7, &mean, &sigma) == SF_ERR_ARG,
              "prior out of range (7 interval dims)");
    }
    sf_model_free(m);
    free(c);

    /* With edge forces: the accessor gives each dimension's pair as stored. */
    c = cc_edit(cc_base_config, "support",
                "{\"policy\": \"wall\", \"edge_force_lower\": [0, 1.5, 2, 3, 4, 5, 1e12], "
                "\"edge_force_upper\": [7, 6, 5, 4, 3, 2.25, 0]}");
    m = load_config(c, 0.5);
    if (m) {
        CHECK(sf_model_edge_force(m, 1, &lo, &hi) == SF_OK && lo == 1.5 && hi == 6, "edge forces of dim 1");
        CHECK(sf_model_edge_force(m, 6, &lo, &hi) == SF_OK && lo == 1e12 && hi == 0, "edge forces of dim 6");
        CHECK(sf_model_edge_force(m, 7, &lo, &hi) == SF_ERR_ARG, "dim 7 is a torsion: no edge force");
    }
    sf_model_free(m);
    free(c);
    cc_free_tensors(&ts);
}

/* ---------------------------------------------- metadata, version, tensors */

static void expect_file(const char *format, const char *version, const char *config, const cc_tensors *ts,
                        sf_status code, const char *needle1, const char *needle2, const char *what)
{
    size_t size;
    unsigned char *bytes = cc_file(format, version, config, ts, 0, &size);
    expect_load(bytes, size, code, needle1, needle2, what);
    free(bytes);
}

static void test_metadata_and_tensors(void)
{
    const char *cfg = cc_base_config, *F = "openmm-smoothflow";
    cc_tensors ts;
    cc_tensors_for(cfg, 0.5, 3, &ts);
    const char *not_ours = "model file: metadata 'format' is not \"openmm-smoothflow\"";
    expect_file(NULL, "1", cfg, &ts, SF_ERR_FORMAT, not_ours, NULL, "no format");
    expect_file("safetensors", "1", cfg, &ts, SF_ERR_FORMAT, not_ours, NULL, "another format");
    expect_file(F, NULL, cfg, &ts, SF_ERR_FORMAT, "metadata lacks 'format_version' or 'config'", NULL, "no version");
    expect_file(F, "1", NULL, &ts, SF_ERR_FORMAT, "metadata lacks 'format_version' or 'config'", NULL, "no config");
    const char *versions[] = {"01", "1a", "", "-1", " 1", "0", "99999999999999999999999"};
    for (int i = 0; i < 7; i++) {
        char needle[80];
        snprintf(needle, sizeof needle, "format_version '%s' is not a positive integer in plain digits", versions[i]);
        expect_file(F, versions[i], cfg, &ts, SF_ERR_FORMAT, needle, NULL, versions[i]);
    }
    expect_file(F, "2", cfg, &ts, SF_ERR_VERSION, "format version 2; this build of openmm-smoothflow reads versions up to 1",
                NULL, "version 2");

    /* Tensors missing, of the wrong shape, or not part of the architecture. */
    cc_tensors t2;
    cc_tensor saved = ts.t[0];
    ts.t[0] = ts.t[--ts.n]; /* bond_lo replaced by the last tensor */
    expect_file(F, "1", cfg, &ts, SF_ERR_MODEL, "model file: tensor 'bond_lo' is missing", NULL, "no bond_lo");
    ts.t[ts.n++] = ts.t[0];
    ts.t[0] = saved;
    struct {
        const char *name;
        int ndim;
        long long d0, d1;
        const char *needle;
    } shapes[] = {
        {"bond_lo", 1, 5, 0, "tensor 'bond_lo' has shape [5], the architecture needs [4]"},
        {"bond_hi", 2, 4, 1, "tensor 'bond_hi' has shape [4, 1], the architecture needs [4]"},
        {"layers.0.net.0.weight", 2, 6, 7, "tensor 'layers.0.net.0.weight' has shape [6, 7], the architecture needs [6, 5]"},
        {"layers.0.net.0.weight", 2, 7, 5, "has shape [7, 5], the architecture needs [6, 5]"},
        {"layers.1.net.2.weight", 1, 56, 0, "tensor 'layers.1.net.2.weight' has shape [56], the architecture needs [56, 4]"},
        {"layers.2.net.0.bias", 2, 8, 1, "tensor 'layers.2.net.0.bias' has shape [8, 1], the architecture needs [8]"},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        cc_tensors_for(cfg, 0.5, 3, &t2);
        cc_tensor *t = cc_find(&t2, shapes[i].name);
        t->ndim = shapes[i].ndim;
        t->shape[0] = shapes[i].d0;
        t->shape[1] = shapes[i].d1;
        t->v = realloc(t->v, (cc_count(t) + 1) * sizeof(double));
        for (size_t j = 0; j < cc_count(t); j++) t->v[j] = 0.125;
        expect_file(F, "1", cfg, &t2, SF_ERR_MODEL, shapes[i].needle, NULL, shapes[i].name);
        cc_free_tensors(&t2);
    }
    cc_tensors_for(cfg, 0.5, 3, &t2);
    cc_add(&t2, "layers.3.net.0.weight", 2, 2, 2);
    expect_file(F, "1", cfg, &t2, SF_ERR_MODEL, "model file: tensor 'layers.3.net.0.weight' is not part of the architecture",
                NULL, "an extra tensor");
    cc_free_tensors(&t2);

    /* Bond bounds: 0 <= lo < hi <= 1000 nm, hi - lo >= 1e-6 nm. */
    struct {
        int bond;
        double lo, hi;
        const char *needle;
    } bounds[] = {
        {2, -0.01, 0.2, "model file: bond 2 has bounds [-0.01, 0.2] nm (need 0 <= lo < hi)"},
        {1, 0.2, 0.1, "bond 1 has bounds [0.2, 0.1] nm (need 0 <= lo < hi)"},
        {3, 0.1, 1000.5, "bond 3 has bounds [0.1, 1000.5] nm (need hi <= 1000 nm and hi - lo >= 1e-06 nm)"},
        {0, 0.1, 0.1000005, "bond 0 has bounds [0.1, 0.100001] nm (need hi <= 1000 nm and hi - lo >= 1e-06 nm)"},
    };
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        cc_tensors_for(cfg, 0.5, 3, &t2);
        cc_find(&t2, "bond_lo")->v[bounds[i].bond] = bounds[i].lo;
        cc_find(&t2, "bond_hi")->v[bounds[i].bond] = bounds[i].hi;
        expect_file(F, "1", cfg, &t2, SF_ERR_MODEL, bounds[i].needle, NULL, bounds[i].needle);
        cc_free_tensors(&t2);
    }

    /* [value-bounds]: the affine layer's one map (8 x 7, inputs in [-1, 1]).  Rows of 6e7 each
     * bound every output by 6e7 but sum to 1.2e8; a bias of 2e8 bounds an output by 2e8. */
    cc_tensors_for(cfg, 0.5, 3, &t2);
    cc_tensor *w = cc_find(&t2, "layers.2.net.0.weight");
    for (size_t j = 0; j < cc_count(w); j++) w->v[j] = 0;
    w->v[0] = 6e7;
    w->v[7] = 6e7;
    cc_find(&t2, "layers.2.net.0.bias")->v[0] = 0;
    cc_find(&t2, "layers.2.net.0.bias")->v[1] = 0;
    expect_file(F, "1", cfg, &t2, SF_ERR_VALUE,
                "model file: layers.2.net.0 can overflow: its outputs are bounded only by 6e+07 and the sum of its "
                "|weights| is 1.2e+08 (each must be at most 1e+08)", NULL, "weights summing past the bound");
    w->v[7] = 0;
    cc_find(&t2, "layers.2.net.0.bias")->v[3] = -2e8;
    expect_file(F, "1", cfg, &t2, SF_ERR_VALUE, "layers.2.net.0 can overflow: its outputs are bounded only by 2e+08",
                NULL, "a bias past the bound");
    cc_free_tensors(&t2);
    cc_free_tensors(&ts);
}

/* ------------------------------------------------------- the container header */

/* A file of the header text `header` and `buffer` bytes of data (zeros). */
static void expect_header(const char *header, size_t buffer, sf_status code, const char *needle, const char *what)
{
    size_t n = strlen(header), size = 8 + n + buffer;
    unsigned char *b = calloc(size, 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((unsigned long long)n >> (8 * i));
    memcpy(b + 8, header, n);
    expect_load(b, size, code, needle, NULL, what);
    free(b);
}

#define META "\"__metadata__\": {\"format\": \"openmm-smoothflow\"}"
static void test_container(void)
{
    expect_header("", 8, SF_ERR_FORMAT, "header is not a JSON object (its first byte must be '{')", "empty header");
    expect_header("{}", 0, SF_ERR_FORMAT, "metadata 'format' is not \"openmm-smoothflow\"", "no metadata, no tensors");
    expect_header("{" META "}", 0, SF_ERR_FORMAT, "metadata lacks 'format_version' or 'config'", "format alone");
    expect_header("{\"__metadata__\": \"openmm-smoothflow\"}", 0, SF_ERR_FORMAT,
                  "model file header: __metadata__ is not an object", "metadata a string");
    expect_header("{\"__metadata__\": {\"format\": [\"openmm-smoothflow\"]}}", 0, SF_ERR_FORMAT,
                  "model file header: metadata 'format' is not a string", "metadata value a list");
    expect_header("{" META ", \"w\": \"F64\"}", 0, SF_ERR_FORMAT,
                  "model file header: the entry of tensor 'w' is not an object", "tensor entry a string");
    const char *incomplete[] = {
        "{\"w\": {\"dtype\": \"F64\", \"shape\": [1]}}",
        "{\"w\": {\"dtype\": [], \"shape\": [1], \"data_offsets\": [0, 8]}}",
        "{\"w\": {\"dtype\": \"F64\", \"shape\": {}, \"data_offsets\": [0, 8]}}",
        "{\"w\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0]}}",
        "{\"w\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": \"0 8\"}}",
    };
    for (int i = 0; i < 5; i++)
        expect_header(incomplete[i], 8, SF_ERR_FORMAT, "model file header: tensor 'w' needs dtype, shape and data_offsets",
                      incomplete[i]);
    expect_header("{\"w\": {\"dtype\": \"F64\", \"shape\": [1, 1, 1, 1, 1], \"data_offsets\": [0, 8]}}", 8, SF_ERR_FORMAT,
                  "model file: tensor 'w' has 5 dimensions (at most 4)", "5 dimensions");
    expect_header("{\"w\": {\"dtype\": \"F64\", \"shape\": [\"1\"], \"data_offsets\": [0, 8]}}", 8, SF_ERR_FORMAT,
                  "model file: tensor 'w' has an invalid shape", "a shape of strings");
    expect_header("{\"w\": {\"dtype\": \"F64\", \"shape\": [1000000000001], \"data_offsets\": [0, 8]}}", 8,
                  SF_ERR_FORMAT, "model file: tensor 'w' has an invalid shape", "a dimension above 1e12");
    expect_header("{\"w\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [[0], 8]}}", 8, SF_ERR_FORMAT,
                  "model file: tensor 'w' has data offsets outside the data buffer of 8 bytes", "an offset a list");
    expect_header("{\"w\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 16]}}", 8, SF_ERR_FORMAT,
                  "tensor 'w' has data offsets outside the data buffer of 8 bytes", "an end past the buffer");
    /* Tiling: overlaps are named before gaps; a zero-size tensor may sit where another begins. */
    expect_header("{\"a\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]},"
                  " \"b\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]},"
                  " \"c\": {\"dtype\": \"F64\", \"shape\": [0], \"data_offsets\": [24, 24]}}",
                  24, SF_ERR_FORMAT, "model file: tensors 'a' and 'b' overlap in the data buffer", "overlap");
    expect_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]},"
                  " \"z\": {\"dtype\": \"F64\", \"shape\": [0, 3], \"data_offsets\": [8, 8]}}",
                  16, SF_ERR_FORMAT,
                  "model file: a gap of 8 bytes in the data buffer before tensor 'z' (the tensors must tile the buffer)",
                  "gap");
    expect_header("{\"z\": {\"dtype\": \"F64\", \"shape\": [0], \"data_offsets\": [0, 0]},"
                  " \"a\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]}," META "}",
                  8, SF_ERR_FORMAT, "metadata lacks 'format_version' or 'config'", "zero-size tensor first");
    /* The header's strings: escapes, \u0000, UTF-8. */
    expect_header("{\"__metadata__\": {\"format\": \"openmm-\\u0073moothflow\"}}", 0, SF_ERR_FORMAT,
                  "metadata lacks 'format_version' or 'config'", "an escape other than \\u0000");
    expect_header("{\"__metadata__\": {\"format\": \"a\\u0000b\"}}", 0, SF_ERR_FORMAT,
                  "model file: header holds a NUL character (\\u0000) in a string", "\\u0000");
    expect_header("{\"__metadata__\": {\"format\": \"\\u00", 0, SF_ERR_FORMAT, "model file: header is not a JSON object",
                  "a cut \\u escape");
    expect_header("{\"__metadata__\": {\"format\": \"\\", 0, SF_ERR_FORMAT, "model file: header is not a JSON object",
                  "a backslash at the end");
    expect_header("{\"__metadata__\":\r\n\t{\"format\": \"openmm-smoothflow\"}}", 0, SF_ERR_FORMAT,
                  "metadata lacks 'format_version' or 'config'", "CR, LF and tab between tokens");
    const char *utf8[] = {
        "{\"__metadata__\": {\"format\": \"\xc3",             /* cut two-byte form */
        "{\"__metadata__\": {\"format\": \"\xc3\x41\"}}",     /* continuation byte missing */
        "{\"__metadata__\": {\"format\": \"\xe0\x80\x80\"}}", /* overlong */
        "{\"__metadata__\": {\"format\": \"\xed\xa0\x80\"}}", /* surrogate */
        "{\"__metadata__\": {\"format\": \"\xf4\x90\x80\x80\"}}", /* above U+10FFFF */
        "{\"__metadata__\": {\"format\": \"\xf5\x80\x80\x80\"}}", /* no such lead byte */
    };
    for (int i = 0; i < 6; i++)
        expect_header(utf8[i], 0, SF_ERR_FORMAT, "model file: header is not valid UTF-8", "invalid UTF-8");
    expect_header("{\"__metadata__\": {\"format\": \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"}}", 0,
                  SF_ERR_FORMAT, "metadata 'format' is not \"openmm-smoothflow\"", "valid UTF-8 up to U+10FFFF");

    /* Sizes: more than the file limit is refused before a byte is read. */
    unsigned char small[16] = {0};
    sf_model *m = NULL;
    sf_error err;
    sf_status rc = sf_model_load_bytes(small, SF_MAX_FILE_SIZE + 1, &m, &err);
    CHECK(rc == SF_ERR_FORMAT && !m && strstr(err.message, "model file is 1073741825 bytes, more than the limit of "
                                                           "1073741824 bytes (1 GiB)"),
          "1 GiB + 1 bytes: %d %s", rc, err.message);
    rc = sf_model_load_bytes(NULL, 0, &m, &err);
    CHECK(rc == SF_ERR_FORMAT && !m && strstr(err.message, "0 bytes: too short"), "no bytes: %d %s", rc, err.message);
    rc = sf_model_load_bytes(NULL, 8, &m, &err);
    CHECK(rc == SF_ERR_ARG && !m, "NULL data of 8 bytes: %d %s", rc, err.message);
    rc = sf_model_load_bytes(small, 16, NULL, &err);
    CHECK(rc == SF_ERR_ARG, "NULL out: %d %s", rc, err.message);
}

/* ------------------------------------------------------------------ the file */

static void test_files(void)
{
#ifdef HAVE_POSIX_FILES
    char path[] = "/tmp/smoothflow-config-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0) return;
    sf_model *m = NULL;
    sf_error err;
    /* A refusal of the content names the file. */
    size_t size;
    char *bad = cc_edit(cc_base_config, "smooth.beta", "9");
    unsigned char *bytes = cc_model(bad, cc_base_config, 0.5, &size);
    CHECK(write(fd, bytes, size) == (ssize_t)size, "write");
    sf_status rc = sf_model_load_file(path, &m, &err);
    char needle[128];
    snprintf(needle, sizeof needle, "%s: model config: smooth constants out of range", path);
    CHECK(rc == SF_ERR_MODEL && !m && strncmp(err.message, needle, strlen(needle)) == 0, "file message: %s",
          err.message);
    CHECK(sf_model_load_file(path, &m, NULL) == SF_ERR_MODEL && !m, "refused without an sf_error");
    free(bytes);
    free(bad);
    /* The good model from the same file. */
    bytes = cc_model(cc_base_config, NULL, 0.5, &size);
    CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, bytes, size, 0) == (ssize_t)size, "rewrite");
    rc = sf_model_load_file(path, &m, &err);
    CHECK(rc == SF_OK && m && sf_model_num_layers(m) == 3, "good file: %s", err.message);
    sf_model_free(m);
    m = NULL;
    free(bytes);
    /* A (sparse) file of 1 GiB + 1 byte is refused from its size alone. */
    CHECK(ftruncate(fd, (off_t)SF_MAX_FILE_SIZE + 1) == 0, "ftruncate");
    rc = sf_model_load_file(path, &m, &err);
    CHECK(rc == SF_ERR_FORMAT && !m && strstr(err.message, "is 1073741825 bytes, more than the limit of 1073741824 bytes"),
          "1 GiB + 1: %d %s", rc, err.message);
    close(fd);
    unlink(path);

    /* Linux: /proc files are regular files whose size says 0 but that hold more (the
     * size grew while it was read), and /proc/self/mem fails at address 0 (a read error). */
    FILE *probe = fopen("/proc/self/status", "rb");
    if (probe) {
        fclose(probe);
        rc = sf_model_load_file("/proc/self/status", &m, &err);
        CHECK(rc == SF_ERR_IO && !m && strstr(err.message, "model file '/proc/self/status' changed while it was read"),
              "/proc/self/status: %d %s", rc, err.message);
        rc = sf_model_load_file("/proc/self/mem", &m, &err);
        CHECK(rc == SF_ERR_IO && !m && strstr(err.message, "error reading model file '/proc/self/mem'"),
              "/proc/self/mem: %d %s", rc, err.message);
    }
#endif
}

/* ---------------------------------------------------- values of accepted models */

static double normal_cdf(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }

/* The truncated-normal prior through an identity flow: one affine layer over every dim with
 * zero weights and biases is T(x) = sigmoid(logit(x)) = x, with log T' = 0, so log p_U(u)
 * is log p_Z(u) (docs/model-format.md): per interval dim -(u - mean)^2 / (2 sigma^2) -
 * log(sigma sqrt(2 pi) (Phi((1 - mean) / sigma) - Phi(-mean / sigma))), torsions 0; its
 * gradient -(u - mean) / sigma^2. */
static void test_truncated_normal_prior(void)
{
    const double mean[7] = {0.5, 0.4, 0.6, 0.5, 0.45, 0.55, 0.5}, sigma[7] = {0.2, 0.3, 0.25, 1.0, 0.15, 0.2, 0.5};
    char *c1 = cc_edit(cc_base_config, "prior", prior_ok);
    char *c2 = cc_edit(c1, "layers",
                       "[{\"transform\": \"affine\", \"direction\": \"density\", \"transformed\": [0, 1, 2, 3, 4, 5, 6, 7, 8],"
                       " \"conditioning\": [], \"hidden\": [], \"activation\": \"tanh\"}]");
    char *c3 = cc_edit(c2, "smooth", NULL);
    size_t size;
    unsigned char *bytes = cc_model(c3, NULL, 0.0, &size); /* scale 0: every weight and bias 0 */
    sf_model *m = expect_load(bytes, size, SF_OK, NULL, NULL, "identity flow with a truncated-normal prior");
    if (m) {
        sf_workspace *ws = NULL;
        CHECK(sf_workspace_new(m, 1, &ws, NULL) == SF_OK, "workspace");
        const double u[9] = {0.3, 0.7, 0.5, 0.1, 0.9, 0.45, 0.62, 0.2, 0.8};
        double lp = 0, g[9], want = 0, worst = 0;
        sf_error err;
        CHECK(sf_log_density(m, ws, u, &lp, g, &err) == SF_OK, "log density: %s", err.message);
        for (int d = 0; d < 7; d++) {
            const double t = (u[d] - mean[d]) / sigma[d];
            want -= 0.5 * t * t +
                    log(sigma[d] * sqrt(2 * 3.14159265358979323846) * (normal_cdf((1 - mean[d]) / sigma[d]) - normal_cdf(-mean[d] / sigma[d])));
            worst = fmax(worst, fabs(g[d] + (u[d] - mean[d]) / (sigma[d] * sigma[d])));
        }
        worst = fmax(worst, fmax(fabs(g[7]), fabs(g[8])));
        CHECK(fabs(lp - want) < 1e-12 * fmax(1, fabs(want)), "log p_Z: %.17g, want %.17g", lp, want);
        CHECK(worst < 1e-9, "prior gradient off by %g", worst);
        sf_workspace_free(ws);
    }
    /* In the energy the prior adds -kT log p_Z(u) to that of the same flow with the uniform prior. */
    char *c4 = cc_edit(c3, "prior", "\"uniform\"");
    sf_model *uniform = load_config(c4, 0.0);
    if (m && uniform) {
        sf_workspace *ws = NULL, *ws_u = NULL;
        sf_workspace_new(m, 1, &ws, NULL);
        sf_workspace_new(uniform, 1, &ws_u, NULL);
        double pos[15], u[9], e = 0, e_u = 0, want = 0;
        sf_error err;
        cc_positions(c3, 0.14, 1.9, 0.7, pos);
        CHECK(sf_internal_coordinates(m, pos, NULL, u, &err) == SF_OK, "u: %s", err.message);
        for (int d = 0; d < 7; d++) {
            const double t = (u[d] - mean[d]) / sigma[d];
            want += 0.5 * t * t + log(sigma[d] * sqrt(2 * 3.14159265358979323846) *
                                      (normal_cdf((1 - mean[d]) / sigma[d]) - normal_cdf(-mean[d] / sigma[d])));
        }
        want *= sf_model_kT(m);
        CHECK(sf_evaluate(m, ws, 1, pos, NULL, &e, NULL, NULL, &err) == SF_OK &&
                  sf_evaluate(uniform, ws_u, 1, pos, NULL, &e_u, NULL, NULL, &err) == SF_OK,
              "energies: %s", err.message);
        CHECK(fabs((e - e_u) - want) < 1e-10 * fmax(1, fabs(want)), "prior energy %.17g, want -kT log p_Z = %.17g",
              e - e_u, want);
        sf_workspace_free(ws);
        sf_workspace_free(ws_u);
    }
    sf_model_free(uniform);
    sf_model_free(m);
    free(bytes);
    free(c1);
    free(c2);
    free(c3);
    free(c4);
}

/* The torsions' von Mises terms through the identity flow of test_truncated_normal_prior: log p_U(u)
 * gains kappa_t (cos 2 pi (u_d - m_t) - 1) - log I0e(kappa_t) per torsion (docs/model-format.md 5.4),
 * with log I0e from mpmath (30 digits) as the outside oracle, on both sides of the core's switch
 * from the power series to the asymptotic one at kappa = 20, and at the limit 1e4; the gradient
 * -2 pi kappa sin 2 pi (u_d - m_t); sf_model_torsion_prior reports the values. */
static void test_von_mises_torsion_prior(void)
{
    static const struct { double kappa[2], log_i0e[2]; } cases[] = {
        {{3.5, 60.0}, {-1.5014698283911258019, -2.9640098103448573933}},
        {{20.0, 0.0}, {-2.4103895717557257092, 0.0}},
        {{1e4, 3.5}, {-5.5240962185676989955, -1.5014698283911258019}},
    };
    const double mean[2] = {0.15, 0.9};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char prior[512];
        snprintf(prior, sizeof prior,
                 "{\"kind\": \"truncated_normal\", \"mean\": [0.5, 0.4, 0.6, 0.5, 0.45, 0.55, 0.5],"
                 " \"sigma\": [0.2, 0.3, 0.25, 1.0, 0.15, 0.2, 0.5], \"torsion_mean\": [%.17g, %.17g],"
                 " \"torsion_kappa\": [%.17g, %.17g]}", mean[0], mean[1], cases[c].kappa[0], cases[c].kappa[1]);
        char *c1 = cc_edit(cc_base_config, "prior", prior);
        char *c2 = cc_edit(cc_base_config, "prior", prior_ok);
        const char *identity = "[{\"transform\": \"affine\", \"direction\": \"density\", \"transformed\": "
                               "[0, 1, 2, 3, 4, 5, 6, 7, 8], \"conditioning\": [], \"hidden\": [], \"activation\": \"tanh\"}]";
        char *c3 = cc_edit(c1, "layers", identity), *c4 = cc_edit(c2, "layers", identity);
        char *c5 = cc_edit(c3, "smooth", NULL), *c6 = cc_edit(c4, "smooth", NULL);
        sf_model *m = load_config(c5, 0.0), *plain = load_config(c6, 0.0);
        CHECK(m && plain, "identity flows with and without von Mises torsions");
        if (m && plain) {
            double mk, kk;
            CHECK(sf_model_torsion_prior(m, 1, &mk, &kk) == SF_OK && mk == mean[1] && kk == cases[c].kappa[1],
                  "sf_model_torsion_prior");
            CHECK(sf_model_torsion_prior(m, 2, &mk, &kk) == SF_ERR_ARG && sf_model_torsion_prior(plain, 0, &mk, &kk) ==
                      SF_ERR_ARG, "sf_model_torsion_prior out of range or without the prior");
            sf_workspace *ws = NULL, *wp = NULL;
            sf_workspace_new(m, 1, &ws, NULL);
            sf_workspace_new(plain, 1, &wp, NULL);
            const double u[9] = {0.3, 0.7, 0.5, 0.1, 0.9, 0.45, 0.62, 0.2, 0.8};
            double lp = 0, lp0 = 0, g[9], g0[9], want = 0;
            sf_error err;
            CHECK(sf_log_density(m, ws, u, &lp, g, &err) == SF_OK && sf_log_density(plain, wp, u, &lp0, g0, &err) == SF_OK,
                  "log densities: %s", err.message);
            for (int t = 0; t < 2; t++) {
                const double k = cases[c].kappa[t], a = 2 * 3.14159265358979323846 * (u[7 + t] - mean[t]);
                want += k * (cos(a) - 1) - cases[c].log_i0e[t];
                CHECK(fabs(g[7 + t] + 2 * 3.14159265358979323846 * k * sin(a)) < 1e-9 * fmax(1, k),
                      "torsion %d gradient %.17g, want %.17g", t, g[7 + t], -2 * 3.14159265358979323846 * k * sin(a));
            }
            CHECK(fabs((lp - lp0) - want) < 1e-12 * fmax(1, fabs(want)), "von Mises log p_Z %.17g, want %.17g (case %zu)",
                  lp - lp0, want, c);
            sf_workspace_free(ws);
            sf_workspace_free(wp);
        }
        sf_model_free(m);
        sf_model_free(plain);
        free(c1);
        free(c2);
        free(c3);
        free(c4);
        free(c5);
        free(c6);
    }
}

/* The smooth ramp's integer power beta = 1..8 (sfm_small_power): with one component and raw
 * values all 0, w = 1, b = 1/2, s = s_min + (1 - s_min)/2, alpha = alpha_min + log 2,
 * c = c_max / 2, and F(x) = (1 - c) x + c logistic(alpha ((1 - h)^-beta - h^-beta)) with
 * h = (x - b (1 - s)) / s (docs/flow-math.md section 4), computed here with pow(). */
static void test_smooth_beta(void)
{
    const double raw[6] = {0, 0, 0, 0, 0, 0};
    for (int beta = 1; beta <= 8; beta++) {
        sf_smooth_constants k = {0.01, 0.1, 0.99, beta};
        const double s = 0.01 + 0.99 * 0.5, alpha = 0.1 + log(2.0), c = 0.99 * 0.5;
        double worst = 0, worst_dy = 0;
        for (int i = 1; i < 20; i++) {
            const double x = 0.25 + 0.5 * i / 20.0, h = (x - 0.5 * (1 - s)) / s;
            const double L = alpha * (pow(1 - h, -beta) - pow(h, -beta));
            const double sig = 1 / (1 + exp(-L));
            const double Lp = alpha * beta * (pow(1 - h, -beta - 1) + pow(h, -beta - 1));
            const double want = (1 - c) * x + c * sig, want_dy = (1 - c) + c * sig * (1 - sig) * Lp / s;
            double y, dy, y2;
            sf_smooth_forward(&k, 1, raw, 0, x, &y, &dy, NULL);
            sf_smooth_forward(&k, 1, raw, 0, x, &y2, NULL, NULL);
            worst = fmax(worst, fabs(y - want));
            worst_dy = fmax(worst_dy, fabs(dy - want_dy) / want_dy);
            CHECK(y2 == y, "beta %d: y without dy differs", beta);
        }
        CHECK(worst < 1e-14 && worst_dy < 1e-12, "beta %d: F off by %g, F' by %g (relative)", beta, worst, worst_dy);
    }
    /* The other one-dimension entry points without the derivative outputs give the same y. */
    sf_spline_constants sc = {1e-3, 1e-3, 1e-3};
    double sraw[3 * 2 + 2] = {0.1, -0.2, 0.3, 0.0, 0.5, -0.5, 0.2, 0.0}, y1, y2, d1;
    sf_spline_forward(&sc, 2, sraw, 0, 0.3, &y1, &d1, NULL);
    sf_spline_forward(&sc, 2, sraw, 0, 0.3, &y2, NULL, NULL);
    CHECK(y1 == y2 && d1 > 0, "spline without dy");
    sf_affine_constants ac = {3.0};
    double araw[2] = {0.4, -0.3};
    CHECK(sf_affine_forward(&ac, araw, 0.3, &y1, &d1, NULL) == 0 && sf_affine_forward(&ac, araw, 0.3, &y2, NULL, NULL) == 0 &&
              y1 == y2,
          "affine without dy");
}

/* The spline's analytic inverse where the quadratic's discriminant rounds to 0 or below (a
 * root at the end of the last bin, y one ulp below 1): the root is still the clamped one, x = 1,
 * and S(x) gives y back exactly (found by a random search over raw values). */
static void test_spline_inverse_degenerate(void)
{
    const sf_spline_constants c = {1.4162477351593435e-10, 7.7172458260437526e-12, 2.5404572642177825e-08};
    const double raw[8] = {16.227780722479103, -7.7643590975312797, -5.4572378776961932, 0.075457959993069437,
                           -6.5263829776185016, 4.8305497885800088, -0.38839089839833119, 1.1549950167548007};
    const double y = 0.99999999999999989;
    double x = -1, back = -1, slope = 0;
    CHECK(sf_spline_inverse(&c, 2, raw, 0, y, &x) == 0, "spline inverse status");
    sf_spline_forward(&c, 2, raw, 0, x, &back, &slope, NULL);
    CHECK(x == 1 && back == y && slope > 0.5, "degenerate root: x = %.17g, S(x) = %.17g (y = %.17g), S' = %g", x,
          back, y, slope);
}

/* -------------------------------------------------- evaluation input checks */

static void test_evaluation_inputs(void)
{
    sf_model *m = load_config(cc_base_config, 0.5);
    if (!m) return;
    sf_workspace *ws = NULL;
    sf_workspace_new(m, 2, &ws, NULL);
    double pos[15], e = 0, f[15], u[9];
    sf_error err;
    cc_positions(cc_base_config, 0.14, 1.9, 0.7, pos);
    CHECK(sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err) == SF_OK && isfinite(e), "inside: %s", err.message);
    /* the box: finite, positive diagonal */
    const double good_box[9] = {3, 0, 0, 0, 3, 0, 0, 0, 3};
    for (int i = 0; i < 5; i++) {
        double box[9];
        memcpy(box, good_box, sizeof box);
        const int at[5] = {0, 4, 8, 0, 3};
        const double bad[5] = {NAN, 0, -3, -3, INFINITY};
        box[at[i]] = bad[i];
        CHECK(sf_evaluate(m, ws, 1, pos, box, &e, f, NULL, &err) == SF_ERR_INPUT &&
                  strstr(err.message, "periodic box vectors are not finite and positive"),
              "box %d: %s", i, err.message);
    }
    CHECK(sf_evaluate(m, ws, 1, pos, good_box, &e, f, NULL, &err) == SF_OK, "a good box: %s", err.message);
    /* an error without an sf_error */
    double nan_pos[15];
    memcpy(nan_pos, pos, sizeof pos);
    nan_pos[7] = NAN;
    CHECK(sf_evaluate(m, ws, 1, nan_pos, NULL, &e, f, NULL, NULL) == SF_ERR_INPUT, "NaN without sf_error");
    /* sf_internal_coordinates: non-finite positions, collinear atoms */
    CHECK(sf_internal_coordinates(m, nan_pos, NULL, u, &err) == SF_ERR_INPUT &&
              strstr(err.message, "positions are not finite (NaN or inf)"),
          "u of NaN positions: %s", err.message);
    double line[15];
    memcpy(line, pos, sizeof pos);
    for (int c = 0; c < 3; c++) line[6 + c] = 2 * pos[3 + c] - pos[c]; /* atom 2 on the line 0-1, beyond 1 */
    CHECK(sf_internal_coordinates(m, line, NULL, u, &err) == SF_ERR_GEOMETRY &&
              strstr(err.message, "atoms 2-1-0 are collinear (angle 0 or 180 degrees)"),
          "collinear angle: %s", err.message);
    CHECK(sf_evaluate(m, ws, 1, line, NULL, &e, f, NULL, &err) == SF_ERR_GEOMETRY && err.atoms[0] == 2 &&
              err.atoms[1] == 1 && err.atoms[2] == 0,
          "collinear angle in evaluation: %s", err.message);
    /* bonds outside the support under the "error" policy: too long and too short */
    double far[15];
    const double bonds[2] = {0.3, 0.05};
    for (int i = 0; i < 2; i++) {
        cc_positions(cc_base_config, bonds[i], 1.9, 0.7, far);
        CHECK(sf_evaluate(m, ws, 1, far, NULL, &e, f, NULL, &err) == SF_ERR_SUPPORT && strstr(err.message, "bond"),
              "bond %g nm: %s", bonds[i], err.message);
    }
    /* sf_log_density: u outside [0, 1] */
    const double outside[3] = {-0.1, 1.1, NAN};
    for (int i = 0; i < 3; i++) {
        double v[9] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5}, lp;
        v[4] = outside[i];
        CHECK(sf_log_density(m, ws, v, &lp, NULL, &err) == SF_ERR_SUPPORT && strstr(err.message, "u[4] = "),
              "u = %g: %s", outside[i], err.message);
    }
    sf_workspace_free(ws);
    sf_model_free(m);

    /* A torsion whose far half is collinear: row 4 = (4, 1, 0, 3) with 1, 0, 3 on a line
     * (no angle of the Z-matrix has those three atoms, so only the torsion sees it). */
    char *c = cc_edit(cc_base_config, "zmatrix[4]", "[4, 1, 0, 3]");
    m = load_config(c, 0.5);
    if (m) {
        const double p[15] = {0, 0, 0, 0.14, 0, 0, 0.2, 0.12, 0, -0.14, 0, 0, 0.2, -0.05, 0.11};
        CHECK(sf_internal_coordinates(m, p, NULL, u, &err) == SF_ERR_GEOMETRY &&
                  strstr(err.message, "torsion 4-1-0-3 is undefined (three atoms collinear)"),
              "collinear torsion: %s", err.message);
    }
    sf_model_free(m);
    free(c);
}

/* An affine layer at the edge of its support (0, 1): a bond exactly at its lower bound
 * (u = 0), and a torsion of exactly 180 degrees (u = 0), reach the affine layer first. */
static void test_affine_boundary(void)
{
    char *c1 = cc_edit(cc_base_config, "layers[2].direction", "\"density\"");
    sf_model *m = load_config(c1, 0.5);
    if (m) {
        sf_workspace *ws = NULL;
        sf_workspace_new(m, 1, &ws, NULL);
        double pos[15], e, f[15];
        sf_error err;
        /* bond 0 (atoms 1-0, along x) exactly at its lower bound, the others inside */
        cc_positions(c1, 0.14, 1.9, 0.7, pos);
        pos[3] = CC_BOND_LO;
        sf_status rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
        CHECK(rc == SF_ERR_SUPPORT && strstr(err.message, "layer 2 (affine) receives dimension") &&
                  strstr(err.message, "(a bond) at 0, on the boundary"),
              "bond at its lower bound: %d %s", rc, err.message);
        sf_workspace_free(ws);
    }
    sf_model_free(m);
    char *c2 = cc_edit(c1, "layers[2].transformed", "[7, 8]");
    char *c3 = cc_edit(c2, "layers[2].conditioning", "[0, 1, 2, 3, 4, 5, 6]");
    m = load_config(c3, 0.5);
    if (m) {
        sf_workspace *ws = NULL;
        sf_workspace_new(m, 1, &ws, NULL);
        /* planar zig-zag: torsion 3-2-1-0 of exactly 180 degrees */
        const double pos[15] = {0, 0, 0, 0.14, 0, 0, 0.2, 0.12, 0, 0.34, 0.12, 0, 0.4, 0.24, 0.05};
        double e, f[15], u[9];
        sf_error err;
        CHECK(sf_internal_coordinates(m, pos, NULL, u, &err) == SF_OK && u[7] == 0, "torsion u = %.17g", u[7]);
        sf_status rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
        CHECK(rc == SF_ERR_SUPPORT && strstr(err.message, "layer 2 (affine) receives dimension 7 (a torsion) at 0"),
              "torsion at 180 degrees: %d %s", rc, err.message);
        sf_workspace_free(ws);
    }
    sf_model_free(m);
    free(c1);
    free(c2);
    free(c3);
}

/* A non-finite raw parameter of an angle's transform (the loader's [value-bounds] keep every
 * stored model from making one, so it is written into the loaded model): the error names the
 * layer, the dimension as an angle with its three atoms, and the cause.  The spline layer 1
 * transforms dims 1, 3, 5, 7 with P = 3 K + 2 = 14 raw values each; dim 5 is the angle of
 * Z-matrix row 3, atoms 3-2-1, and its block starts at output 2 * 14 of the last map. */
static void test_nonfinite_angle_white_box(void)
{
    sf_model *m = load_config(cc_base_config, 0.5);
    if (!m) return;
    sf_layer *L = &m->layers[1];
    CHECK(L->transform == SF_TRANSFORM_SPLINE && L->n_trans == 4 && L->trans[2] == 5 && L->P == 14, "layer 1 layout");
    L->bias[L->n_linear - 1][2 * 14] = NAN;
    sf_workspace *ws = NULL;
    sf_workspace_new(m, 1, &ws, NULL);
    double pos[15], e, f[15];
    sf_error err;
    cc_positions(cc_base_config, 0.14, 1.9, 0.7, pos);
    sf_status rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
    CHECK(rc == SF_ERR_NUMERIC && strstr(err.message, "layer 1 (spline, density) maps dimension 5 (angle 3-2-1)") &&
              strstr(err.message, "its conditioner's parameters are not finite") && err.atoms[0] == 3 &&
              err.atoms[1] == 2 && err.atoms[2] == 1 && err.atoms[3] == -1,
          "NaN parameter of an angle: %d %s", rc, err.message);
    /* The smooth generative layer 0 with a NaN mixture weight for dim 4 (the angle of row 2,
     * atoms 2-1-0; block 2 of [0, 2, 4, 6, 8], P = 4 K + 2 = 14): its inverse still ends in
     * [0, 1] (the bracketed iteration bisects), but log F' is NaN, and that is named. */
    L->bias[L->n_linear - 1][2 * 14] = 0.25;
    sf_layer *L0 = &m->layers[0];
    CHECK(L0->transform == SF_TRANSFORM_SMOOTH && L0->direction == SF_DIR_GENERATIVE && L0->trans[2] == 4 &&
              L0->P == 14, "layer 0 layout");
    L0->bias[L0->n_linear - 1][2 * 14] = NAN;
    rc = sf_evaluate(m, ws, 1, pos, NULL, &e, f, NULL, &err);
    CHECK(rc == SF_ERR_NUMERIC && strstr(err.message, "layer 0 (smooth, generative) maps dimension 4 (angle 2-1-0)") &&
              strstr(err.message, "nan: its conditioner's parameters are not finite"),
          "NaN mixture weight of an angle: %d %s", rc, err.message);
    sf_workspace_free(ws);
    sf_model_free(m);
}

/* ------------------------------------------------------- the free-form kind */

#define FF_SCALE "network 'distance_scale' must be a number in [1e-06, 1e+06] (nm)"
static const edit_case free_form_edits[] = {
    {"kind", "\"flow\"", SF_ERR_MODEL, TM "'kind' 'flow' is unknown to this reader (it knows \"free_form\"", NULL},
    {"kind", "3", SF_ERR_MODEL, TM "'kind' (not a string) is unknown to this reader", NULL},
    {"zmatrix", "[[0, -1, -1, -1]]", SF_ERR_MODEL, TM "the top level of a free-form model has the unknown key 'zmatrix'",
     NULL},
    {"layers", "[]", SF_ERR_MODEL, "free-form model has the unknown key 'layers'", NULL},
    {"support", "{}", SF_ERR_MODEL, "free-form model has the unknown key 'support'", NULL},
    {"n_atoms", "1", SF_ERR_MODEL, TM "'n_atoms' (the particles of a free-form model) must be an integer in 2..1000000",
     NULL},
    {"n_atoms", NULL, SF_ERR_MODEL, "'n_atoms' (the particles of a free-form model) must be an integer", NULL},
    {"n_atoms", "4.5", SF_ERR_MODEL, "'n_atoms' (the particles of a free-form model) must be an integer", NULL},
    {"n_atoms", "5", SF_ERR_MODEL, TM "'atoms' must list n_atoms = 5 entries", NULL},
    {"temperature", NULL, SF_ERR_MODEL, TM "'temperature' must be a number in (0, 1e+06] (kelvin)", NULL},
    {"temperature", "0", SF_ERR_MODEL, TM "'temperature' must be a number", NULL},
    {"energy_offset", "1.000001e12", SF_ERR_MODEL, TM "'energy_offset' must be a number in [-1e+12, 1e+12]", NULL},
    {"network", NULL, SF_ERR_MODEL, TM "a free-form model lacks the required key 'network'", NULL},
    {"network", "[]", SF_ERR_MODEL, TM "'network' must be an object", NULL},
    {"network.activation", "\"silu\"", SF_ERR_MODEL, TM "'network' has the unknown key 'activation'", NULL},
    {"network.kind", NULL, SF_ERR_MODEL, TM "'network' lacks the required key 'kind'", NULL},
    {"network.spatial_dim", NULL, SF_ERR_MODEL, TM "'network' lacks the required key 'spatial_dim'", NULL},
    {"network.hidden", NULL, SF_ERR_MODEL, TM "'network' lacks the required key 'hidden'", NULL},
    {"network.layers", NULL, SF_ERR_MODEL, TM "'network' lacks the required key 'layers'", NULL},
    {"network.distance_scale", NULL, SF_ERR_MODEL, TM "'network' lacks the required key 'distance_scale'", NULL},
    {"network.kind", "\"gcn\"", SF_ERR_MODEL, TM "network kind 'gcn' is unknown to this reader (it knows \"egnn\")", NULL},
    {"network.kind", "null", SF_ERR_MODEL, TM "network kind (not a string) is unknown", NULL},
    {"network.spatial_dim", "1", SF_ERR_MODEL, TM "network 'spatial_dim' must be the integer 2 or 3", NULL},
    {"network.spatial_dim", "4", SF_ERR_MODEL, TM "network 'spatial_dim' must be the integer 2 or 3", NULL},
    {"network.spatial_dim", "2.5", SF_ERR_MODEL, TM "network 'spatial_dim' must be the integer 2 or 3", NULL},
    {"network.hidden", "0", SF_ERR_MODEL, TM "network 'hidden' must be an integer in 1..65536", NULL},
    {"network.hidden", "65537", SF_ERR_MODEL, TM "network 'hidden' must be an integer in 1..65536", NULL},
    {"network.layers", "0", SF_ERR_MODEL, TM "network 'layers' must be an integer in 1..10000", NULL},
    {"network.layers", "10001", SF_ERR_MODEL, TM "network 'layers' must be an integer in 1..10000", NULL},
    {"network.distance_scale", "0", SF_ERR_MODEL, TM FF_SCALE, NULL},
    {"network.distance_scale", "9.99e-7", SF_ERR_MODEL, TM FF_SCALE, NULL},
    {"network.distance_scale", "1000001", SF_ERR_MODEL, TM FF_SCALE, NULL},
    {"network.distance_scale", "\"1.5\"", SF_ERR_MODEL, TM FF_SCALE, NULL},
    {"latent", NULL, SF_ERR_MODEL, TM "a free-form model lacks the required key 'latent'", NULL},
    {"latent", "\"normal\"", SF_ERR_MODEL,
     TM "'latent' 'normal' is unknown to this reader (it knows \"standard_normal_com_free\")", NULL},
    {"latent", "{}", SF_ERR_MODEL, TM "'latent' (not a string) is unknown", NULL},
    /* accepted edits */
    {"atoms", NULL, SF_OK, NULL, NULL},
    {"energy_offset", NULL, SF_OK, NULL, NULL},
    {"network.spatial_dim", "3.0", SF_OK, NULL, NULL},
    {"network.distance_scale", "1e-6", SF_OK, NULL, NULL},
};

static void run_free_form_edit(const edit_case *c)
{
    char *config = cc_edit(cc_free_form_config, c->path, c->value);
    CHECK(config != NULL, "free-form edit %s: no such path", c->path);
    if (!config) return;
    char what[160];
    snprintf(what, sizeof what, "free-form %s = %.100s", c->path, c->value ? c->value : "(removed)");
    size_t size;
    unsigned char *bytes = cc_free_form_model(config, c->code == SF_OK ? config : cc_free_form_config, 0.5, &size);
    sf_model *m = expect_load(bytes, size, c->code, c->needle1, c->needle2, what);
    if (m) CHECK(strcmp(sf_model_config_json(m), config) == 0, "%s: the config is not handed back as stored", what);
    sf_model_free(m);
    free(bytes);
    free(config);
}

/* A free-form file of the base configuration with one tensor edited by `edit`. */
static void expect_free_form_tensors(void (*edit)(cc_tensors *), sf_status code, const char *needle, const char *what)
{
    cc_tensors ts;
    cc_free_form_tensors(cc_free_form_config, 0.5, 3, &ts);
    edit(&ts);
    size_t size;
    unsigned char *bytes = cc_file("openmm-smoothflow", "1", cc_free_form_config, &ts, 0, &size);
    sf_model_free(expect_load(bytes, size, code, needle, NULL, what));
    free(bytes);
    cc_free_tensors(&ts);
}

static void ff_drop_h0(cc_tensors *ts) { snprintf(cc_find(ts, "h0")->name, 64, "h1"); }
static void ff_add_bond(cc_tensors *ts) { cc_add(ts, "bond_lo", 1, 3, 0); }
static void ff_node_in_last(cc_tensors *ts) { cc_add(ts, "layers.1.node.2.bias", 1, 3, 0); }
static void ff_edge_shape(cc_tensors *ts) { cc_find(ts, "layers.0.edge.0.weight")->shape[1] = 6; }
static void ff_nan(cc_tensors *ts) { cc_find(ts, "layers.1.coord.2.weight")->v[1] = NAN; }
static void ff_big(cc_tensors *ts) { cc_find(ts, "layers.0.edge.2.bias")->v[2] = 1.5e8; }
static void ff_none(cc_tensors *ts) { (void)ts; }

/* Positions of 4 particles (x, y, z) and the same rotated by `angle` in the plane and moved. */
static void ff_positions(double *pos, double *moved, double angle)
{
    const double p[12] = {0.1, -0.9, 0.3, 1.2, 0.4, -0.7, -0.5, 1.1, 0.2, -0.8, -0.6, 1.9};
    for (int i = 0; i < 4; i++) {
        pos[3 * i] = p[3 * i], pos[3 * i + 1] = p[3 * i + 1], pos[3 * i + 2] = p[3 * i + 2];
        moved[3 * i] = cos(angle) * p[3 * i] - sin(angle) * p[3 * i + 1] + 0.3;
        moved[3 * i + 1] = sin(angle) * p[3 * i] + cos(angle) * p[3 * i + 1] - 0.2;
        moved[3 * i + 2] = p[3 * i + 2] + 5.0; /* the third component is not read */
    }
}

static void test_free_form(void)
{
    for (size_t i = 0; i < sizeof free_form_edits / sizeof free_form_edits[0]; i++)
        run_free_form_edit(&free_form_edits[i]);

    /* [free-form-cost], each limit alone, with the numbers in the message */
    const char *costs[2][3] = {
        {"{\"kind\": \"free_form\", \"n_atoms\": 2000, \"temperature\": 300, \"network\": {\"kind\": \"egnn\", "
         "\"spatial_dim\": 2, \"hidden\": 1, \"layers\": 1, \"distance_scale\": 1}, \"latent\": "
         "\"standard_normal_com_free\"}",
         "needs a workspace of 383880008 doubles (2929 MiB), more than the limit of 67108864 doubles (512 MiB)",
         "2000 particles, hidden 1, 1 layers"},
        {"{\"kind\": \"free_form\", \"n_atoms\": 13, \"temperature\": 300, \"network\": {\"kind\": \"egnn\", "
         "\"spatial_dim\": 3, \"hidden\": 4096, \"layers\": 2, \"distance_scale\": 1}, \"latent\": "
         "\"standard_normal_com_free\"}",
         "takes about 1.259e+12 multiply-adds, more than the limit of 1e+12",
         "13 particles in 3 dimensions (D = 36), hidden 4096, 2 layers"}};
    for (int i = 0; i < 2; i++) {
        size_t size;
        unsigned char *bytes = cc_free_form_model(costs[i][0], cc_free_form_config, 0.5, &size);
        expect_load(bytes, size, SF_ERR_MODEL, costs[i][1], costs[i][2], "free-form cost");
        free(bytes);
    }

    /* the tensors */
    expect_free_form_tensors(ff_none, SF_OK, NULL, "free-form tensors as the config implies");
    expect_free_form_tensors(ff_drop_h0, SF_ERR_MODEL, "model file: tensor 'h0' is missing", "no h0");
    expect_free_form_tensors(ff_add_bond, SF_ERR_MODEL,
                             "model file: tensor 'bond_lo' is not part of the free-form encoder", "a bond_lo");
    expect_free_form_tensors(ff_node_in_last, SF_ERR_MODEL, "tensor 'layers.1.node.2.bias' is not part of",
                             "a node update in the last layer");
    expect_free_form_tensors(ff_edge_shape, SF_ERR_MODEL,
                             "tensor 'layers.0.edge.0.weight' has shape [3, 6], the architecture needs [3, 7]",
                             "edge.0 of width 2H");
    expect_free_form_tensors(ff_nan, SF_ERR_VALUE, "tensor 'layers.1.coord.2.weight' holds a non-finite value",
                             "a NaN weight");
    expect_free_form_tensors(ff_big, SF_ERR_VALUE,
                             "tensor 'layers.0.edge.2.bias' can overflow: the sum of its |entries| is", "a large bias");

    /* what the model says of itself, and what it refuses */
    size_t size;
    unsigned char *bytes = cc_free_form_model(cc_free_form_config, NULL, 0.5, &size);
    sf_model *m = expect_load(bytes, size, SF_OK, NULL, NULL, "the free-form base configuration");
    free(bytes);
    if (!m) return;
    CHECK(sf_model_flow_kind(m) == SF_FLOW_FREE_FORM && sf_model_spatial_dim(m) == 2 && sf_model_num_atoms(m) == 4 &&
              sf_model_num_dims(m) == 6 && sf_model_num_layers(m) == 0,
          "free-form facts: kind %d, d %d, N %d, D %d, layers %d", sf_model_flow_kind(m), sf_model_spatial_dim(m),
          sf_model_num_atoms(m), sf_model_num_dims(m), sf_model_num_layers(m));
    CHECK(fabs(sf_model_kT(m) - 0.00831446261815324 * 120.27) < 1e-15 && sf_model_energy_offset(m) == -2.5,
          "free-form kT %.17g, U0 %g", sf_model_kT(m), sf_model_energy_offset(m));
    CHECK(strcmp(sf_model_atom_name(m, 3), "P4") == 0, "free-form atom names");
    int row[4];
    sf_model_zmatrix_row(m, 0, row);
    CHECK(row[0] == -1 && row[1] == -1 && row[2] == -1 && row[3] == -1, "a free-form model has no Z-matrix");
    sf_error err;
    CHECK(sf_model_set_weight_precision(m, SF_WEIGHTS_FLOAT32, &err) == SF_ERR_ARG &&
              strstr(err.message, "a free-form model's encoder runs in float64 only") &&
              sf_model_weight_precision(m) == SF_WEIGHTS_FLOAT64,
          "float32 weights: %s", err.message);
    CHECK(sf_model_set_weight_precision(m, SF_WEIGHTS_FLOAT64, &err) == SF_OK, "float64 weights");
    sf_model_description d;
    sf_layer_description ld;
    double lo, hi;
    CHECK(sf_model_describe(m, &d) == SF_ERR_ARG && sf_model_describe_layer(m, 0, &ld) == SF_ERR_ARG &&
              sf_model_bond_bounds(m, 0, &lo, &hi) == SF_ERR_ARG && sf_model_prior(m, 0, &lo, &hi) == SF_ERR_ARG &&
              sf_model_edge_force(m, 0, &lo, &hi) == SF_ERR_ARG && !sf_model_layer_weight(m, 0, 0) &&
              !sf_model_layer_bias(m, 0, 0),
          "the descriptions of the internal kind refuse a free-form model");
    CHECK(sf_workspace_size(m, 1) == sf_workspace_size(m, 9) && sf_workspace_size(m, 1) > 0,
          "a free-form workspace does not grow with the batch: %zu, %zu", sf_workspace_size(m, 1),
          sf_workspace_size(m, 9));
    sf_workspace *ws = NULL;
    CHECK(sf_workspace_new(m, 3, &ws, &err) == SF_OK, "free-form workspace: %s", err.message);
    if (!ws) { sf_model_free(m); return; }
    double pos[24], e[2], f[24], u[6], lp;
    ff_positions(pos, pos + 12, 0.7);
    CHECK(sf_internal_coordinates(m, pos, NULL, u, &err) == SF_ERR_ARG &&
              strstr(err.message, "a free-form model has no internal coordinates"),
          "free-form internal coordinates: %s", err.message);
    CHECK(sf_log_density(m, ws, u, &lp, NULL, &err) == SF_ERR_ARG && strstr(err.message, "free-form model"),
          "free-form sf_log_density: %s", err.message);
    const double box[9] = {3, 0, 0, 0, 3, 0, 0, 0, 3};
    CHECK(sf_evaluate(m, ws, 1, pos, box, e, f, NULL, &err) == SF_ERR_ARG &&
              strstr(err.message, "a free-form model is not periodic"),
          "a box with a free-form model: %s", err.message);
    sf_eval_info info = {-1, -1};
    CHECK(sf_evaluate(m, ws, 2, pos, NULL, e, f, &info, &err) == SF_OK, "free-form evaluation: %s", err.message);
    /* rotation and translation in the plane leave the energy, and rotate the forces */
    CHECK(fabs(e[1] - e[0]) <= 1e-12 * fabs(e[0]) && isfinite(e[0]), "free-form energy %.17g vs moved %.17g", e[0],
          e[1]);
    double largest = 0, sum[2] = {0, 0}, rot = 0;
    for (int i = 0; i < 4; i++) {
        const double *a = f + 3 * i, *b = f + 12 + 3 * i;
        largest = fmax(largest, fmax(fabs(a[0]), fabs(a[1])));
        sum[0] += a[0], sum[1] += a[1];
        rot = fmax(rot, fabs(cos(0.7) * a[0] - sin(0.7) * a[1] - b[0]));
        rot = fmax(rot, fabs(sin(0.7) * a[0] + cos(0.7) * a[1] - b[1]));
        CHECK(a[2] == 0 && b[2] == 0, "free-form 2D: force z of particle %d is %g", i, a[2]);
    }
    CHECK(largest > 1e-6 && fabs(sum[0]) <= 1e-12 * largest && fabs(sum[1]) <= 1e-12 * largest &&
              rot <= 1e-11 * largest,
          "free-form forces: max %g, sum (%g, %g), rotation error %g", largest, sum[0], sum[1], rot);
    CHECK(info.wall_dims == 0 && info.max_newton_iters == 0, "free-form info: %d %d", info.wall_dims,
          info.max_newton_iters);
    /* the forces are minus the energy's gradient */
    const double h = 1e-5;
    for (int c = 0; c < 8; c++) {
        double p1[12], p2[12], e1, e2;
        memcpy(p1, pos, sizeof p1);
        memcpy(p2, pos, sizeof p2);
        const int at = 3 * (c / 2) + c % 2;
        p1[at] += h;
        p2[at] -= h;
        sf_evaluate(m, ws, 1, p1, NULL, &e1, NULL, NULL, NULL);
        sf_evaluate(m, ws, 1, p2, NULL, &e2, NULL, NULL, NULL);
        const double fd = -(e1 - e2) / (2 * h);
        CHECK(fabs(fd - f[at]) <= 1e-6 * largest, "free-form force %d: %.12g, differences %.12g", at, f[at], fd);
    }
    /* energy only gives the same energies */
    double e_only[2];
    CHECK(sf_evaluate(m, ws, 2, pos, NULL, e_only, NULL, NULL, &err) == SF_OK && e_only[0] == e[0] &&
              e_only[1] == e[1],
          "free-form energy only: %s", err.message);
    pos[14] = INFINITY;
    CHECK(sf_evaluate(m, ws, 2, pos, NULL, e, f, NULL, &err) == SF_ERR_INPUT && err.molecule == 1,
          "free-form non-finite third component: %s", err.message);
    sf_workspace_free(ws);
    sf_model_free(m);
}

int main(void)
{
    test_config_refusals();
    test_config_text();
    test_accepted_configs();
    test_description();
    test_metadata_and_tensors();
    test_container();
    test_files();
    test_truncated_normal_prior();
    test_von_mises_torsion_prior();
    test_smooth_beta();
    test_spline_inverse_degenerate();
    test_evaluation_inputs();
    test_affine_boundary();
    test_nonfinite_angle_white_box();
    test_free_form();
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
