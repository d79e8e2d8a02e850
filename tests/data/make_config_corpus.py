"""Write tests/data/config_corpus/: model configurations, valid and invalid, one JSON file each.

Every rule of the model configuration's contract (pytorch/smoothflow_torch/model_config.schema.json
and the rules listed in its description) with its edges just inside and just outside.
tests/python/test_model_config_contract.py loads each through the PyTorch reader, the C core
and jsonschema, and requires the verdicts recorded here.  A case file holds

  name          its file name without .json
  description   what it tries
  rule          the schema path it exercises ("smooth.beta", "layers[].hidden") or the
                bracketed name of a rule the schema cannot express ("[zmatrix-order]")
  valid         the verdict of both readers
  schema_valid  the verdict of the JSON Schema alone on the parsed object (true where only a
                bracketed rule is broken); null where Python's json module cannot parse the text
  config        the configuration object, or
  config_text   the exact metadata string, for what an object cannot carry (syntax, repeated keys)
  tensors_from  for invalid cases: the valid case whose tensors the model file carries (the
                readers refuse at the configuration, before the tensors)

The free-form kind ("kind": "free_form", docs/model-format.md section 9): its invalid cases are
cases like any other (both readers refuse them at the configuration); its valid cases are
written to config_corpus/free_form/, which tests/python/test_free_form_model.py loads with an
encoder's tensors (test_model_config_contract.py builds its valid cases as flows over internal
coordinates).

Deterministic: run it and the folder is rewritten byte for byte.
    python tests/data/make_config_corpus.py
"""
import copy
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "config_corpus")

ATOMS4 = [{"name": n, "residue": "MOL", "residue_index": 0, "element": "C"} for n in ("C1", "C2", "C3", "C4")]

# n_atoms 4: D = 6, bonds 0-2, angles 3-4, torsion 5
SMOOTH = {
    "n_atoms": 4, "temperature": 300.0, "energy_offset": 0.5,
    "zmatrix": [[1, -1, -1, -1], [0, 1, -1, -1], [2, 1, 0, -1], [3, 2, 1, 0]],
    "atoms": ATOMS4,
    "prior": "uniform",
    "smooth": {"s_min": 0.01, "alpha_min": 0.1, "c_max": 0.99, "beta": 1},
    "support": {"policy": "error", "margin": 0.01, "wall_constant": 1000.0},
    "layers": [
        {"transform": "smooth", "direction": "generative", "transformed": [0, 2, 4],
         "conditioning": [1, 3, 5], "n_components": 2, "hidden": [4], "activation": "silu"},
        {"transform": "smooth", "direction": "density", "transformed": [1, 3, 5],
         "conditioning": [0, 2, 4], "n_components": 3, "hidden": [], "activation": "tanh"},
    ],
}

# n_atoms 5: D = 9, bonds 0-3, angles 4-6, torsions 7-8; all three kinds
MIXED = {
    "n_atoms": 5, "temperature": 310.0, "energy_offset": -2.0,
    "zmatrix": [[2, -1, -1, -1], [1, 2, -1, -1], [3, 2, 1, -1], [0, 1, 2, 3], [4, 3, 2, 1]],
    "prior": {"kind": "truncated_normal", "mean": [0.5, 0.4, 0.6, 0.5, 0.3, 0.7, 0.5],
              "sigma": [0.2, 0.3, 0.25, 0.2, 0.5, 0.1, 1.0]},
    "smooth": {"s_min": 0.02, "alpha_min": 0.2, "c_max": 0.95, "beta": 2},
    "spline": {"min_bin_width": 0.001, "min_bin_height": 0.002, "min_derivative": 0.001},
    "affine": {"scale_max": 2.5},
    "support": {"policy": "wall", "margin": 0.02, "wall_constant": 500.0},
    "layers": [
        {"transform": "smooth", "direction": "generative", "transformed": [0, 2, 4, 6, 8],
         "conditioning": [1, 3, 5, 7], "n_components": 2, "hidden": [5, 3], "activation": "softplus"},
        {"transform": "spline", "direction": "density", "transformed": [1, 3, 5, 7],
         "conditioning": [0, 2, 4, 6, 8], "n_components": 4, "hidden": [6], "activation": "silu"},
        {"transform": "affine", "direction": "generative", "transformed": [0, 1, 2, 7],
         "conditioning": [3, 8], "n_components": 8, "hidden": [3], "activation": "tanh"},
    ],
}

# only the required keys: a spline layer needs no section
MINIMAL = {
    "n_atoms": 4, "temperature": 300,
    "zmatrix": [[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 0, -1], [3, 2, 1, 0]],
    "layers": [{"transform": "spline", "direction": "generative", "transformed": [0, 1, 2, 3, 4, 5],
                "conditioning": [], "n_components": 3, "hidden": [], "activation": "tanh"}],
}

cases = []


def case(name, description, rule, valid, config=None, config_text=None, schema_valid=None,
         tensors_from="valid-smooth"):
    if schema_valid is None and config is not None:
        # a bracketed rule is beyond the schema: the object itself satisfies it
        schema_valid = valid or rule.startswith("[")
    entry = {"name": name, "description": description, "rule": rule, "valid": valid,
             "schema_valid": schema_valid}
    if config_text is not None:
        entry["config_text"] = config_text
    else:
        entry["config"] = config
    if not valid:
        entry["tensors_from"] = tensors_from
    assert name not in {c["name"] for c in cases}, name
    cases.append(entry)


def edit(base, path, value=None, delete=False):
    """A deep copy of base with the item at path (a tuple of keys and indices) replaced or deleted."""
    cfg = copy.deepcopy(base)
    node = cfg
    for p in path[:-1]:
        node = node[p]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return cfg


def ok(name, description, rule, config):
    case("valid-" + name, description, rule, True, config)


def bad(name, description, rule, config, base="valid-smooth", **kw):
    case("invalid-" + name, description, rule, False, config, tensors_from=base, **kw)


# ------------------------------------------------------------------ valid
ok("smooth", "two smooth layers, every optional key given", "layers[].transform", SMOOTH)
ok("mixed", "smooth, spline and affine layers, truncated-normal prior, wall policy", "layers[].transform",
   MIXED)
ok("minimal", "only the required keys (a spline layer needs no 'spline' section)", "layers", MINIMAL)
ok("n-atoms-3", "the smallest molecule: D = 3, no torsion", "n_atoms",
   {"n_atoms": 3, "temperature": 300.0,
    "zmatrix": [[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 0, -1]],
    "smooth": SMOOTH["smooth"],
    "layers": [{"transform": "smooth", "direction": "generative", "transformed": [0, 2],
                "conditioning": [1], "n_components": 1, "hidden": [2], "activation": "silu"}]})
ok("integers-written-as-floats", "integers with a zero fraction (4.0) are integers", "n_atoms",
   edit(edit(edit(SMOOTH, ("n_atoms",), 4.0), ("smooth", "beta"), 2.0), ("layers", 0, "transformed"),
        [0.0, 2.0, 4.0]))
ok("temperature-tiny", "temperature just above 0", "temperature", edit(SMOOTH, ("temperature",), 1e-300))
ok("temperature-max", "temperature at its limit, 1e6 K", "temperature", edit(SMOOTH, ("temperature",), 1e6))
ok("energy-offset-large", "energy_offset at its limit, -1e12 kJ/mol", "energy_offset",
   edit(SMOOTH, ("energy_offset",), -1e12))
ok("no-atoms", "atoms omitted", "atoms", edit(SMOOTH, ("atoms",), delete=True))
ok("atoms-edges", "residue_index 999999, empty strings", "atoms[].residue_index",
   edit(edit(SMOOTH, ("atoms", 1, "residue_index"), 999999), ("atoms", 2, "name"), ""))
ok("prior-edges", "prior mean just inside (0, 1), sigma at 1e-4 and 10", "prior.sigma",
   edit(MIXED, ("prior",), {"kind": "truncated_normal", "mean": [1e-9, 1 - 1e-9, 0.5, 0.5, 0.5, 0.5, 0.5],
                            "sigma": [1e-4, 10, 10, 1e-4, 0.1, 0.1, 0.1]}))
ok("prior-uniform-omitted", "prior omitted: uniform", "prior", edit(SMOOTH, ("prior",), delete=True))
ok("prior-torsions", "von Mises torsions: kappa 2.5 and 40", "prior.torsion_kappa",
   edit(edit(MIXED, ("prior", "torsion_mean"), [0.3, 0.9]), ("prior", "torsion_kappa"), [2.5, 40.0]))
ok("prior-torsion-edges", "von Mises torsions: mean 0 and just below 1, kappa 0 and 1e4", "prior.torsion_mean",
   edit(edit(MIXED, ("prior", "torsion_mean"), [0.0, 1 - 1e-9]), ("prior", "torsion_kappa"), [0.0, 1e4]))
for beta in (1, 8):
    ok(f"smooth-beta-{beta}", f"beta = {beta}, an edge of 1..8", "smooth.beta",
       edit(SMOOTH, ("smooth", "beta"), beta))
ok("smooth-edges", "s_min, c_max just inside (0, 1), alpha_min just above 0", "smooth.s_min",
   edit(SMOOTH, ("smooth",), {"s_min": 1 - 1e-12, "alpha_min": 1e-6, "c_max": 0.99999, "beta": 3}))
ok("smooth-s-min-small", "s_min at its limit 1e-6, alpha_min at its limit 1e6, c_max just above 0",
   "smooth.c_max", edit(SMOOTH, ("smooth",), {"s_min": 1e-6, "alpha_min": 1e6, "c_max": 1e-12, "beta": 1}))
ok("smooth-without-smooth-layers", "a valid 'smooth' section beside spline layers only", "smooth",
   dict(MINIMAL, smooth=SMOOTH["smooth"]))
ok("support-empty", "an empty 'support': every default", "support", edit(SMOOTH, ("support",), {}))
ok("support-omitted", "no 'support'", "support", edit(SMOOTH, ("support",), delete=True))
ok("support-edges", "margin just inside (0, 0.25), wall_constant 0", "support.margin",
   edit(SMOOTH, ("support",), {"policy": "wall", "margin": 0.25 - 1e-12, "wall_constant": 0}))
ok("support-margin-small", "margin just above 0, policy alone", "support.margin",
   edit(SMOOTH, ("support",), {"policy": "error", "margin": 1e-12}))
ok("support-angle-margin-edges", "angle_margin just inside (0, 0.25) beside a small margin", "support.angle_margin",
   edit(SMOOTH, ("support",), {"policy": "wall", "margin": 0.01, "angle_margin": 0.25 - 1e-12}))
ok("support-angle-margin-small", "angle_margin just above 0", "support.angle_margin",
   edit(SMOOTH, ("support",), {"policy": "wall", "angle_margin": 1e-12}))
ok("spline-empty", "an empty 'spline': every default", "spline", dict(MINIMAL, spline={}))
ok("spline-edges", "spline constants just inside their ranges", "spline.min_bin_width",
   dict(MINIMAL, spline={"min_bin_width": 1e-12, "min_bin_height": 0.3, "min_derivative": 1e-12}))
ok("spline-bins-just-fit", "K = 64 bins with K * min_bin_width just below 1", "[spline-bins]",
   edit(dict(MINIMAL, spline={"min_bin_width": 0.0156, "min_bin_height": 0.0156}),
        ("layers", 0, "n_components"), 64))
ok("affine-without-n-components", "an affine layer may omit n_components", "layers[].n_components",
   edit(MINIMAL, ("layers", 0), {"transform": "affine", "direction": "density", "transformed": [5, 0],
                                 "conditioning": [1], "hidden": [2], "activation": "softplus"}))
ok("affine-section-alone", "an 'affine' section beside smooth layers", "affine",
   dict(SMOOTH, affine={"scale_max": 1e-9}))
ok("affine-scale-max-50", "scale_max at its limit, 50", "affine.scale_max", dict(SMOOTH, affine={"scale_max": 50}))
ok("support-wall-constant-max", "wall_constant at its limit, 1e12 kJ/mol", "support.wall_constant",
   edit(SMOOTH, ("support", "wall_constant"), 1e12))
for K in (1, 64):
    ok(f"n-components-{K}", f"K = {K}, an edge of 1..64", "layers[].n_components",
       edit(SMOOTH, ("layers", 1, "n_components"), K))
ok("conditioning-empty", "a layer that conditions on nothing", "layers[].conditioning",
   edit(SMOOTH, ("layers", 0, "conditioning"), []))
ok("hidden-width-1", "hidden widths of 1, three hidden layers", "layers[].hidden",
   edit(SMOOTH, ("layers", 0, "hidden"), [1, 1, 1]))
ok("hidden-width-max", "the largest hidden width, 1048576 (a one-dimension affine layer keeps it small)",
   "layers[].hidden",
   edit(MINIMAL, ("layers",), [
       {"transform": "affine", "direction": "generative", "transformed": [4], "conditioning": [],
        "hidden": [1048576], "activation": "tanh"},
       {"transform": "spline", "direction": "density", "transformed": [0, 1, 2, 3, 5], "conditioning": [4],
        "n_components": 2, "hidden": [], "activation": "tanh"}]))
ok("zmatrix-reordered", "a Z-matrix that places the atoms in another order", "zmatrix",
   edit(SMOOTH, ("zmatrix",), [[3, -1, -1, -1], [2, 3, -1, -1], [0, 2, 3, -1], [1, 0, 2, 3]]))
case("valid-unicode-names", "atom names beyond ASCII: a raw letter and an escaped surrogate pair",
     "atoms[].name", True, config_text=json.dumps(SMOOTH, ensure_ascii=False).replace(
         '"C2"', '"C\u00e9"').replace('"C3"', '"C\\ud83d\\ude00"'), schema_valid=True)
case("valid-whitespace-around", "whitespace around the object", "[json-syntax]", True,
     config_text=" \n\t" + json.dumps(SMOOTH) + "\r\n ", schema_valid=True)

# ------------------------------------------------------------------ top level
for key in ("n_atoms", "temperature", "zmatrix", "layers"):
    bad(f"missing-{key.replace('_', '-')}", f"the required key '{key}' is missing", key,
        edit(SMOOTH, (key,), delete=True))
bad("unknown-top-level-key", "an unknown key at the top level", "additionalProperties",
    dict(SMOOTH, comment="what is this?"))
bad("many-unknown-keys", "70 unknown keys at the top level", "additionalProperties",
    dict(SMOOTH, **{f"extra{i}": i for i in range(70)}))
for value, what in ((2, "2"), (1000001, "1000001"), (4.5, "4.5"), ("4", "a string"), (True, "true"), (None, "null")):
    bad(f"n-atoms-{what.replace('.', '_').replace(' ', '-')}", f"n_atoms = {what}", "n_atoms",
        edit(SMOOTH, ("n_atoms",), value))
for value, what in ((0, "0"), (-1.0, "-1"), ("300", "a string"), (None, "null"), (1.000001e6, "above 1e6"),
                    (1e308, "1e308")):
    bad(f"temperature-{what.replace(' ', '-')}", f"temperature = {what}", "temperature",
        edit(SMOOTH, ("temperature",), value))
for value, what in ((-1.7e308, "-1.7e308"), (1.000001e12, "above-1e12")):
    bad(f"energy-offset-{what}", f"energy_offset = {value!r}, beyond |U0| <= 1e12 kJ/mol", "energy_offset",
        edit(SMOOTH, ("energy_offset",), value))
bad("energy-offset-string", "energy_offset a string", "energy_offset", edit(SMOOTH, ("energy_offset",), "0"))
bad("energy-offset-null", "energy_offset null (omit it instead)", "energy_offset",
    edit(SMOOTH, ("energy_offset",), None))
bad("layers-empty", "no layers", "layers", edit(SMOOTH, ("layers",), []))
bad("layers-object", "layers an object", "layers", edit(SMOOTH, ("layers",), {"0": SMOOTH["layers"][0]}))

# ------------------------------------------------------------------ zmatrix
bad("zmatrix-object", "zmatrix an object", "zmatrix", edit(SMOOTH, ("zmatrix",), {}))
bad("zmatrix-too-few-rows", "3 rows for 4 atoms", "[zmatrix-rows]", edit(SMOOTH, ("zmatrix",), SMOOTH["zmatrix"][:3]))
bad("zmatrix-too-many-rows", "5 rows for 4 atoms", "[zmatrix-rows]",
    edit(SMOOTH, ("zmatrix",), SMOOTH["zmatrix"] + [[3, 2, 1, 0]]))
bad("zmatrix-row-short", "a row of 3 entries", "zmatrix", edit(SMOOTH, ("zmatrix", 3), [3, 2, 1]))
bad("zmatrix-row-long", "a row of 5 entries", "zmatrix", edit(SMOOTH, ("zmatrix", 0), [1, -1, -1, -1, -1]))
bad("zmatrix-row0-reference", "row 0 with a reference", "zmatrix", edit(SMOOTH, ("zmatrix", 0), [1, 0, -1, -1]))
bad("zmatrix-row1-no-reference", "row 1 without its bond partner", "zmatrix",
    edit(SMOOTH, ("zmatrix", 1), [0, -1, -1, -1]))
bad("zmatrix-row2-torsion", "row 2 with a torsion atom", "zmatrix", edit(SMOOTH, ("zmatrix", 2), [2, 1, 0, 3]))
bad("zmatrix-row3-missing-torsion", "row 3 without its torsion atom", "zmatrix",
    edit(SMOOTH, ("zmatrix", 3), [3, 2, 1, -1]))
bad("zmatrix-negative-atom", "an atom index -2", "zmatrix", edit(SMOOTH, ("zmatrix", 3), [3, 2, 1, -2]))
bad("zmatrix-atom-n", "atom index n_atoms", "[zmatrix-atoms]", edit(SMOOTH, ("zmatrix", 3), [4, 2, 1, 0]))
bad("zmatrix-placed-twice", "atom 2 placed twice (and 3 never)", "[zmatrix-order]",
    edit(SMOOTH, ("zmatrix", 3), [2, 1, 0, 2]))
bad("zmatrix-unplaced-reference", "row 2 refers to atom 3, placed later", "[zmatrix-order]",
    edit(SMOOTH, ("zmatrix",), [[1, -1, -1, -1], [0, 1, -1, -1], [2, 1, 3, -1], [3, 2, 1, 0]]))
bad("zmatrix-repeated-in-row", "row 3 names atom 1 twice", "[zmatrix-order]",
    edit(SMOOTH, ("zmatrix", 3), [3, 1, 0, 1]))
bad("zmatrix-fraction", "an atom index 1.5", "zmatrix", edit(SMOOTH, ("zmatrix", 3), [3, 2, 1.5, 0]))
bad("zmatrix-string", "an atom index given as a string", "zmatrix", edit(SMOOTH, ("zmatrix", 3), [3, 2, "1", 0]))

# ------------------------------------------------------------------ atoms
bad("atoms-count", "3 atoms entries for 4 atoms", "[atoms-count]", edit(SMOOTH, ("atoms",), ATOMS4[:3]))
bad("atoms-object", "atoms an object", "atoms", edit(SMOOTH, ("atoms",), {}))
bad("atoms-null", "atoms null (omit it instead)", "atoms", edit(SMOOTH, ("atoms",), None))
bad("atoms-entry-string", "an atoms entry that is a string", "atoms", edit(SMOOTH, ("atoms", 0), "C1"))
for key in ("name", "residue", "residue_index", "element"):
    bad(f"atoms-missing-{key.replace('_', '-')}", f"an atoms entry without '{key}'", f"atoms[].{key}",
        edit(SMOOTH, ("atoms", 1, key), delete=True))
for key, value, what in (("name", 1, "number"), ("residue", None, "null"), ("element", 6, "number"),
                         ("residue_index", "0", "string"), ("residue_index", -1, "negative"),
                         ("residue_index", 1000000, "too-large"), ("residue_index", 1.5, "fraction")):
    bad(f"atoms-{key.replace('_', '-')}-{what}", f"atoms[2].{key} = {value!r}", f"atoms[].{key}",
        edit(SMOOTH, ("atoms", 2, key), value))
bad("atoms-unknown-key", "an unknown key in an atoms entry", "atoms[].additionalProperties",
    edit(SMOOTH, ("atoms", 0, "charge"), -0.5))

# ------------------------------------------------------------------ prior
PRIOR = MIXED["prior"]
bad("prior-unknown-name", "prior 'gaussian'", "prior", edit(MIXED, ("prior",), "gaussian"), base="valid-mixed")
bad("prior-null", "prior null (omit it instead)", "prior", edit(MIXED, ("prior",), None), base="valid-mixed")
bad("prior-number", "prior a number", "prior", edit(MIXED, ("prior",), 0), base="valid-mixed")
bad("prior-unknown-kind", "prior kind 'normal'", "prior.kind", edit(MIXED, ("prior", "kind"), "normal"),
    base="valid-mixed")
for key in ("kind", "mean", "sigma"):
    bad(f"prior-missing-{key}", f"a truncated-normal prior without '{key}'", f"prior.{key}",
        edit(MIXED, ("prior", key), delete=True), base="valid-mixed")
bad("prior-unknown-key", "an unknown key in the prior", "prior.additionalProperties",
    edit(MIXED, ("prior", "low"), 0.0), base="valid-mixed")
bad("prior-mean-short", "6 means for 2 n_atoms - 3 = 7 dimensions", "[prior-length]",
    edit(MIXED, ("prior", "mean"), PRIOR["mean"][:6]), base="valid-mixed")
bad("prior-sigma-long", "8 sigmas for 7 dimensions", "[prior-length]",
    edit(MIXED, ("prior", "sigma"), PRIOR["sigma"] + [0.1]), base="valid-mixed")
for value, what in ((0, "0"), (1, "1"), ("0.5", "string")):
    bad(f"prior-mean-{what}", f"a prior mean = {value!r}", "prior.mean",
        edit(MIXED, ("prior", "mean", 3), value), base="valid-mixed")
for value, what in ((9.99e-5, "below-1e-4"), (10.0001, "above-10"), (0, "0")):
    bad(f"prior-sigma-{what}", f"a prior sigma = {value!r}", "prior.sigma",
        edit(MIXED, ("prior", "sigma", 2), value), base="valid-mixed")
bad("prior-mean-object", "prior mean an object", "prior.mean", edit(MIXED, ("prior", "mean"), {}),
    base="valid-mixed")
TORSIONS = edit(edit(MIXED, ("prior", "torsion_mean"), [0.3, 0.9]), ("prior", "torsion_kappa"), [2.5, 40.0])
for key in ("torsion_mean", "torsion_kappa"):
    other = "torsion_kappa" if key == "torsion_mean" else "torsion_mean"
    bad(f"prior-{key.replace('_', '-')}-alone", f"'{key}' without '{other}'", "[prior-length]",
        edit(TORSIONS, ("prior", other), delete=True), base="valid-prior-torsions")
    bad(f"prior-{key.replace('_', '-')}-long", f"3 entries of '{key}' for n_atoms - 3 = 2 torsions", "[prior-length]",
        edit(TORSIONS, ("prior", key), TORSIONS["prior"][key] + [0.5]), base="valid-prior-torsions")
for value, what in ((1, "1"), (-0.1, "negative"), ("0.5", "string")):
    bad(f"prior-torsion-mean-{what}", f"a torsion_mean = {value!r}", "prior.torsion_mean",
        edit(TORSIONS, ("prior", "torsion_mean", 1), value), base="valid-prior-torsions")
for value, what in ((-1.0, "negative"), (10000.5, "above-1e4")):
    bad(f"prior-torsion-kappa-{what}", f"a torsion_kappa = {value!r}", "prior.torsion_kappa",
        edit(TORSIONS, ("prior", "torsion_kappa", 0), value), base="valid-prior-torsions")

# ------------------------------------------------------------------ smooth
bad("smooth-missing", "smooth layers without 'smooth'", "smooth", edit(SMOOTH, ("smooth",), delete=True))
for value, what in (("default", "string"), (1, "number"), ([], "list"), (None, "null")):
    bad(f"smooth-{what}", f"'smooth' a {what}", "smooth", edit(SMOOTH, ("smooth",), value))
for key in ("s_min", "alpha_min", "c_max", "beta"):
    bad(f"smooth-missing-{key.replace('_', '-')}", f"'smooth' without '{key}'", f"smooth.{key}",
        edit(SMOOTH, ("smooth", key), delete=True))
for key, value, what in (("s_min", 0, "0"), ("s_min", 1, "1"), ("alpha_min", 0, "0"), ("alpha_min", -1, "-1"),
                         ("c_max", 0, "0"), ("c_max", 1, "1"), ("beta", 0, "0"), ("beta", 9, "9"),
                         ("beta", 1.5, "1_5"), ("beta", True, "true"), ("s_min", "0.01", "string"),
                         ("c_max", None, "null"), ("s_min", 9.99e-7, "below-1e-6"),
                         ("alpha_min", 9.99e-7, "below-1e-6"), ("alpha_min", 1.000001e6, "above-1e6"),
                         ("alpha_min", 1e300, "1e300")):
    bad(f"smooth-{key.replace('_', '-')}-{what}", f"smooth.{key} = {value!r}", f"smooth.{key}",
        edit(SMOOTH, ("smooth", key), value))
bad("smooth-unknown-key", "an unknown key in 'smooth'", "smooth.additionalProperties",
    edit(SMOOTH, ("smooth", "gamma"), 1))
bad("smooth-invalid-without-smooth-layers", "beta 9 in a 'smooth' section beside spline layers only",
    "smooth.beta", dict(MINIMAL, smooth=dict(SMOOTH["smooth"], beta=9)), base="valid-minimal")

# ------------------------------------------------------------------ spline
for value, what in (("default", "string"), (None, "null"), ([1e-3], "list")):
    bad(f"spline-{what}", f"'spline' a {what}", "spline", dict(MINIMAL, spline=value), base="valid-minimal")
for key, value, what in (("min_bin_width", 0, "0"), ("min_bin_width", 1, "1"), ("min_bin_height", 0, "0"),
                         ("min_bin_height", 1, "1"), ("min_derivative", 0, "0"), ("min_derivative", "a", "string"),
                         ("min_bin_width", -1, "-1"), ("min_bin_width", 9.99e-13, "below-1e-12"),
                         ("min_bin_height", 9.99e-13, "below-1e-12"), ("min_derivative", 9.99e-13, "below-1e-12"),
                         ("min_derivative", 1.000001e6, "above-1e6")):
    bad(f"spline-{key.replace('_', '-')}-{what}", f"spline.{key} = {value!r}", f"spline.{key}",
        dict(MINIMAL, spline={key: value}), base="valid-minimal")
bad("spline-unknown-key", "an unknown key in 'spline'", "spline.additionalProperties",
    dict(MINIMAL, spline={"tail_bound": 1}), base="valid-minimal")
bad("spline-bins-width", "K = 10 bins of min_bin_width 0.1: K * width = 1", "[spline-bins]",
    edit(dict(MINIMAL, spline={"min_bin_width": 0.1}), ("layers", 0, "n_components"), 10), base="valid-minimal")
bad("spline-bins-height", "K = 64 bins with the default width but min_bin_height 0.02", "[spline-bins]",
    edit(dict(MINIMAL, spline={"min_bin_height": 0.02}), ("layers", 0, "n_components"), 64), base="valid-minimal")

# ------------------------------------------------------------------ affine
for value, what in ((3.0, "number"), ("3", "string"), (None, "null")):
    bad(f"affine-{what}", f"'affine' a {what}", "affine", dict(SMOOTH, affine=value))
for value, what in ((0, "0"), (-1, "-1"), ("3", "string"), (50.000001, "above-50"), (1e308, "1e308")):
    bad(f"affine-scale-max-{what}", f"affine.scale_max = {value!r}", "affine.scale_max",
        dict(SMOOTH, affine={"scale_max": value}))
bad("affine-unknown-key", "an unknown key in 'affine'", "affine.additionalProperties",
    dict(SMOOTH, affine={"scale_max": 3, "shift_max": 1}))

# ------------------------------------------------------------------ support
for value, what in (("wall", "string"), (1, "number"), ([], "list"), (None, "null")):
    bad(f"support-{what}", f"'support' a {what} (a string \"wall\" once loaded as \"error\")", "support",
        edit(SMOOTH, ("support",), value))
for value, what in ((1, "number"), ("soft", "unknown"), (None, "null"), (["wall"], "list"), ("Wall", "capital")):
    bad(f"support-policy-{what}", f"support.policy = {value!r}", "support.policy",
        edit(SMOOTH, ("support", "policy"), value))
for value, what in ((0, "0"), (0.25, "0_25"), (-0.01, "negative"), ("0.01", "string")):
    bad(f"support-margin-{what}", f"support.margin = {value!r}", "support.margin",
        edit(SMOOTH, ("support", "margin"), value))
for value, what in ((0, "0"), (0.25, "0_25"), (-0.075, "negative"), ("0.075", "string"), (None, "null")):
    bad(f"support-angle-margin-{what}", f"support.angle_margin = {value!r}", "support.angle_margin",
        edit(SMOOTH, ("support", "angle_margin"), value))
for value, what in ((-1e-9, "negative"), ("1000", "string"), (None, "null"), (1.000001e12, "above-1e12")):
    bad(f"support-wall-constant-{what}", f"support.wall_constant = {value!r}", "support.wall_constant",
        edit(SMOOTH, ("support", "wall_constant"), value))
bad("support-unknown-key", "an unknown key in 'support'", "support.additionalProperties",
    edit(SMOOTH, ("support", "width"), 0.1))
# the wall's edge forces: 2 n_atoms - 3 = 7 each for MIXED (wall policy)
EDGES = {"edge_force_lower": [0.0, 10.0, 250.5, 1e12, 3.0, 0.5, 7.0],
         "edge_force_upper": [1.0, 0.0, 99.0, 4.0, 1e3, 2.0, 0.0]}
ok("support-edge-forces", "the wall's edge forces, 0 and 1e12 included", "support.edge_force_lower",
   edit(MIXED, ("support",), {**MIXED["support"], **EDGES}))
bad("support-edge-force-lower-alone", "edge_force_lower without edge_force_upper", "support.dependentRequired",
    edit(MIXED, ("support", "edge_force_lower"), EDGES["edge_force_lower"]), base="valid-mixed")
bad("support-edge-force-upper-alone", "edge_force_upper without edge_force_lower", "support.dependentRequired",
    edit(MIXED, ("support", "edge_force_upper"), EDGES["edge_force_upper"]), base="valid-mixed")
bad("support-edge-forces-error-policy", "edge forces under the 'error' policy (nothing would use them)",
    "support.dependentSchemas", edit(SMOOTH, ("support",), {**SMOOTH["support"], "edge_force_lower": [1.0] * 5,
                                                            "edge_force_upper": [1.0] * 5}))
bad("support-edge-forces-policy-default", "edge forces without a policy (the default is 'error')",
    "support.dependentRequired", edit(SMOOTH, ("support",), {"edge_force_lower": [1.0] * 5,
                                                             "edge_force_upper": [1.0] * 5}))
bad("support-edge-force-short", "6 lower edge forces for 7 interval dimensions", "[edge-force-length]",
    edit(MIXED, ("support",), {**MIXED["support"], **EDGES, "edge_force_lower": EDGES["edge_force_lower"][:6]}),
    base="valid-mixed")
bad("support-edge-force-long", "8 upper edge forces for 7 interval dimensions", "[edge-force-length]",
    edit(MIXED, ("support",), {**MIXED["support"], **EDGES, "edge_force_upper": EDGES["edge_force_upper"] + [1.0]}),
    base="valid-mixed")
for value, what in ((-1e-9, "negative"), (1.000001e12, "above-1e12"), ("5", "string"), (None, "null")):
    bad(f"support-edge-force-{what}", f"an edge force = {value!r}", "support.edge_force_lower",
        edit(MIXED, ("support",), {**MIXED["support"], **EDGES,
                                   "edge_force_lower": EDGES["edge_force_lower"][:2] + [value] + EDGES["edge_force_lower"][3:]}),
        base="valid-mixed")
bad("support-edge-force-not-list", "edge_force_upper a number", "support.edge_force_upper",
    edit(MIXED, ("support",), {**MIXED["support"], **EDGES, "edge_force_upper": 5.0}), base="valid-mixed")

# ------------------------------------------------------------------ layers
bad("layer-string", "a layer that is a string", "layers", edit(SMOOTH, ("layers", 1), "smooth"))
bad("layer-unknown-key", "an unknown key in a layer", "layers[].additionalProperties",
    edit(SMOOTH, ("layers", 0, "dropout"), 0.1))
for key in ("transform", "direction", "transformed", "conditioning", "hidden", "activation", "n_components"):
    bad(f"layer-missing-{key.replace('_', '-')}", f"a smooth layer without '{key}'", f"layers[].{key}",
        edit(SMOOTH, ("layers", 1, key), delete=True))
bad("layer-spline-missing-n-components", "a spline layer without n_components", "layers[].n_components",
    edit(MINIMAL, ("layers", 0, "n_components"), delete=True), base="valid-minimal")
for key, value, what in (("transform", "cubic", "unknown"), ("transform", 1, "number"),
                         ("transform", "Smooth", "capital"),
                         ("direction", "sideways", "unknown"), ("direction", None, "null"),
                         ("activation", "relu", "unknown"), ("activation", ["silu"], "list"),
                         ("transformed", [], "empty"), ("transformed", [0, 2, 2], "repeat"),
                         ("transformed", "0, 2, 4", "string"), ("transformed", [0, 2.5], "fraction"),
                         ("transformed", [0, -1], "negative"), ("conditioning", [1, 3, 1], "repeat"),
                         ("conditioning", None, "null"), ("conditioning", [1, True], "bool"),
                         ("n_components", 0, "0"), ("n_components", 65, "65"), ("n_components", 2.5, "fraction"),
                         ("n_components", "2", "string"),
                         ("hidden", [0], "0"), ("hidden", [4, 1048577], "too-wide"), ("hidden", 4, "number"),
                         ("hidden", ["4"], "string"), ("hidden", [-4], "negative")):
    bad(f"layer-{key.replace('_', '-')}-{what}", f"layers[0].{key} = {value!r}", f"layers[].{key}",
        edit(SMOOTH, ("layers", 0, key), value))
bad("layer-transformed-d", "a transformed dimension D = 6 (dims are 0..5)", "[layer-dims]",
    edit(SMOOTH, ("layers", 0, "transformed"), [0, 2, 6]))
bad("layer-conditioning-d", "a conditioning dimension D = 6", "[layer-dims]",
    edit(SMOOTH, ("layers", 1, "conditioning"), [0, 2, 4, 6]))
bad("layer-dims-n-atoms-3", "dimension 3 with n_atoms 3 (D = 3)", "[layer-dims]",
    edit(edit(SMOOTH, ("n_atoms",), 3), ("zmatrix",), SMOOTH["zmatrix"][:3]) | {
        "atoms": ATOMS4[:3], "layers": [{"transform": "smooth", "direction": "generative", "transformed": [0, 3],
                                         "conditioning": [1], "n_components": 1, "hidden": [],
                                         "activation": "silu"}]})
bad("layer-overlap", "a dimension both transformed and conditioning", "[layer-disjoint]",
    edit(SMOOTH, ("layers", 0, "conditioning"), [1, 3, 4]))
bad("layer-affine-n-components-65", "an affine layer's given n_components is checked too",
    "layers[].n_components", edit(MIXED, ("layers", 2, "n_components"), 65), base="valid-mixed")
bad("layer-affine-n-components-0", "an affine layer with n_components 0", "layers[].n_components",
    edit(MIXED, ("layers", 2, "n_components"), 0), base="valid-mixed")

# ------------------------------------------------------------------ cost limits
# valid-hidden-width-max needs 6291556 doubles of workspace; four such layers need 10485798, more than
# 2^23 = 8388608 (64 MiB), with only 12.6 million parameters.
WIDE = {"transform": "affine", "direction": "generative", "transformed": [4], "conditioning": [],
        "hidden": [1048576], "activation": "tanh"}
bad("cost-workspace", "four layers with a hidden width of 1048576: a workspace of 80 MiB per molecule",
    "[cost-limits]", edit(MINIMAL, ("layers",), [dict(WIDE, transformed=[d]) for d in (4, 0, 1, 2)]),
    base="valid-minimal")
bad("cost-parameters", "hidden widths [10000, 10000]: 100350030 weights and biases, more than 1e8",
    "[cost-limits]", edit(SMOOTH, ("layers", 0, "hidden"), [10000, 10000]))

# ------------------------------------------------------------------ the free-form kind
# 4 particles in 2D (D = 6): DW4's shape
FREE = {
    "kind": "free_form", "n_atoms": 4, "temperature": 120.27, "energy_offset": 0.5, "atoms": ATOMS4,
    "network": {"kind": "egnn", "spatial_dim": 2, "hidden": 4, "layers": 2, "distance_scale": 1.5},
    "latent": "standard_normal_com_free",
}
free_form_valid = []


def free_ok(name, description, rule, config):
    entry = {"name": "valid-free-form-" + name, "description": description, "rule": rule, "valid": True,
             "schema_valid": True, "config": config}
    assert entry["name"] not in {c["name"] for c in free_form_valid}, name
    free_form_valid.append(entry)


def free_bad(name, description, rule, config):
    bad("free-form-" + name, description, rule, config)


free_ok("dw4", "4 particles in 2D, every key given", "kind", FREE)
free_ok("lj13", "13 particles in 3D, only the required keys", "kind",
        {"kind": "free_form", "n_atoms": 13, "temperature": 120.27,
         "network": {"kind": "egnn", "spatial_dim": 3, "hidden": 6, "layers": 3, "distance_scale": 1.1},
         "latent": "standard_normal_com_free"})
free_ok("two-particles", "the smallest system, 2 particles in 3D (D = 3), one layer (no node update)",
        "n_atoms", edit(edit(edit(FREE, ("n_atoms",), 2), ("atoms",), ATOMS4[:2]), ("network",),
                        {"kind": "egnn", "spatial_dim": 3, "hidden": 1, "layers": 1, "distance_scale": 1e-6}))
free_ok("edges", "integers written as floats, distance_scale 1e6, temperature 1e6, energy_offset -1e12",
        "network.distance_scale",
        edit(edit(edit(edit(FREE, ("network",), {"kind": "egnn", "spatial_dim": 2.0, "hidden": 3.0, "layers": 2.0,
                                                 "distance_scale": 1e6}), ("n_atoms",), 4.0),
                  ("temperature",), 1e6), ("energy_offset",), -1e12))
# (D + 1) n (L + 10) (2H + d) + 2 D^2 = 1671 * 836 * 11 * 4 + 2 * 1670^2 = 67043864 doubles, just inside
# the workspace limit of 2^26
FREE_WIDE = {"kind": "free_form", "n_atoms": 836, "temperature": 300,
             "network": {"kind": "egnn", "spatial_dim": 2, "hidden": 1, "layers": 1, "distance_scale": 1},
             "latent": "standard_normal_com_free"}
free_ok("cost-workspace-edge", "836 particles in 2D, hidden 1: a workspace measure of 67043864 doubles, just below "
        "the limit of 67108864", "[free-form-cost]", FREE_WIDE)

for key in ("n_atoms", "temperature", "network", "latent"):
    free_bad(f"missing-{key.replace('_', '-')}", f"a free-form model without '{key}'", key,
             edit(FREE, (key,), delete=True))
for key, value in (("zmatrix", SMOOTH["zmatrix"]), ("layers", SMOOTH["layers"]), ("prior", "uniform"),
                   ("smooth", SMOOTH["smooth"]), ("spline", {}), ("affine", {}), ("support", {})):
    free_bad(f"with-{key}", f"a free-form model with the internal-coordinate key '{key}'", key,
             dict(FREE, **{key: value}))
bad("network-without-kind", "'network' in a flow over internal coordinates", "network",
    dict(SMOOTH, network=FREE["network"]))
bad("latent-without-kind", "'latent' in a flow over internal coordinates", "latent",
    dict(SMOOTH, latent=FREE["latent"]))
for value, what in (("internal_coordinates", "internal-coordinates"), ("Free_Form", "capital"), (None, "null"),
                    (1, "number")):
    bad(f"kind-{what}", f"kind = {value!r}", "kind", edit(FREE, ("kind",), value))
bad("kind-on-internal", "kind free_form on a flow over internal coordinates", "kind", dict(SMOOTH, kind="free_form"))
free_bad("unknown-key", "an unknown key in a free-form model", "additionalProperties", dict(FREE, beta=10.0))
for value, what in ((1, "1"), (1000001, "1000001"), (2.5, "2_5"), ("4", "string")):
    free_bad(f"n-atoms-{what}", f"n_atoms = {value!r} particles", "n_atoms", edit(FREE, ("n_atoms",), value))
free_bad("atoms-count", "3 atoms entries for 4 particles", "[atoms-count]", edit(FREE, ("atoms",), ATOMS4[:3]))
free_bad("temperature-0", "temperature 0", "temperature", edit(FREE, ("temperature",), 0))
free_bad("energy-offset-above-1e12", "energy_offset above 1e12 kJ/mol", "energy_offset",
         edit(FREE, ("energy_offset",), 1.000001e12))
for value, what in (("egnn", "string"), ([], "list"), (None, "null")):
    free_bad(f"network-{what}", f"'network' a {what}", "network", edit(FREE, ("network",), value))
for key in ("kind", "spatial_dim", "hidden", "layers", "distance_scale"):
    free_bad(f"network-missing-{key.replace('_', '-')}", f"'network' without '{key}'", f"network.{key}",
             edit(FREE, ("network", key), delete=True))
free_bad("network-unknown-key", "an unknown key in 'network'", "network.additionalProperties",
         edit(FREE, ("network", "activation"), "silu"))
for key, value, what in (("kind", "gcn", "unknown"), ("kind", "EGNN", "capital"), ("kind", None, "null"),
                         ("spatial_dim", 1, "1"), ("spatial_dim", 4, "4"), ("spatial_dim", 2.5, "2_5"),
                         ("spatial_dim", "2", "string"), ("spatial_dim", True, "true"),
                         ("hidden", 0, "0"), ("hidden", 65537, "65537"), ("hidden", 4.5, "4_5"),
                         ("layers", 0, "0"), ("layers", 10001, "10001"), ("layers", "2", "string"),
                         ("distance_scale", 0, "0"), ("distance_scale", -1.5, "negative"),
                         ("distance_scale", 9.99e-7, "below-1e-6"), ("distance_scale", 1.000001e6, "above-1e6"),
                         ("distance_scale", "1.5", "string"), ("distance_scale", None, "null")):
    free_bad(f"network-{key.replace('_', '-')}-{what}", f"network.{key} = {value!r}", f"network.{key}",
             edit(FREE, ("network", key), value))
for value, what in (("standard_normal", "unknown"), ({"kind": "standard_normal_com_free"}, "object"),
                    (None, "null"), ("Standard_Normal_Com_Free", "capital")):
    free_bad(f"latent-{what}", f"latent = {value!r}", "latent", edit(FREE, ("latent",), value))
# [free-form-cost]: 2000 particles in 2D, H = 1: a workspace of 384 million doubles (work 2.7e11, within its limit)
free_bad("cost-workspace", "2000 particles: a workspace measure of 383880008 doubles, more than 67108864",
         "[free-form-cost]", edit(edit(FREE, ("n_atoms",), 2000), ("atoms",), delete=True) | {
             "network": {"kind": "egnn", "spatial_dim": 2, "hidden": 1, "layers": 1, "distance_scale": 1}})
# 13 particles in 3D, H = 4096, 2 layers: 1.26e12 multiply-adds (workspace 47 million doubles, within its limit)
free_bad("cost-work", "hidden 4096 and 2 layers on 13 particles: 1.26e12 multiply-adds, more than 1e12",
         "[free-form-cost]", edit(FREE, ("network",), {"kind": "egnn", "spatial_dim": 3, "hidden": 4096, "layers": 2,
                                                       "distance_scale": 1}) | {"n_atoms": 13, "atoms": [
             {"name": f"P{i}", "residue": "LJ", "residue_index": 0, "element": "Ar"} for i in range(13)]})
# valid-free-form-cost-workspace-edge with one particle more: 67204412 doubles
free_bad("cost-workspace-just-over", "837 particles in 2D, hidden 1: 67204412 doubles, more than 67108864",
         "[free-form-cost]", edit(FREE_WIDE, ("n_atoms",), 837))

# ------------------------------------------------------------------ the JSON text
TEXT = json.dumps(SMOOTH)


def text_case(name, description, rule, text, schema_valid):
    case("invalid-" + name, description, rule, False, config_text=text, schema_valid=schema_valid)


def with_offset(literal):
    return TEXT.replace('"energy_offset": 0.5', f'"energy_offset": {literal}')


text_case("json-broken", "not JSON: the object never closes", "[json-syntax]", TEXT[:-1], None)
text_case("json-array", "a JSON array, not an object", "[json-syntax]", "[1, 2]", False)
text_case("json-trailing-text", "text after the object", "[json-syntax]", TEXT + " x", None)
text_case("json-two-objects", "a second object after the first", "[json-syntax]", TEXT + "{}", None)
text_case("json-nan", "energy_offset NaN", "[json-syntax]", with_offset("NaN"), True)
# Every number of the schema is bounded, so the schema alone refuses the infinities Python's json
# module makes of these; NaN compares false with every bound and passes it.
text_case("json-infinity", "energy_offset Infinity", "[json-syntax]", with_offset("Infinity"), False)
text_case("json-minus-infinity", "energy_offset -Infinity", "[json-syntax]", with_offset("-Infinity"), False)
text_case("json-leading-zero", "the number 05", "[json-syntax]", with_offset("05"), None)
text_case("json-plus-sign", "the number +5", "[json-syntax]", with_offset("+5"), None)
text_case("json-trailing-dot", "the number 5.", "[json-syntax]", with_offset("5."), None)
text_case("json-leading-dot", "the number .5", "[json-syntax]", with_offset(".5"), None)
text_case("json-control-in-string", "a raw control character inside a string", "[json-syntax]",
          TEXT.replace('"C2"', '"C\u00012"'), None)
text_case("json-control-outside", "a control character between tokens", "[json-syntax]",
          TEXT.replace(', "zmatrix"', ',\u0001"zmatrix"'), None)
text_case("json-nul-in-string", "an atom name holding the escape \\u0000 (NUL), which ends a C string",
          "[json-syntax]", TEXT.replace('"C2"', '"C\\u00002"'), True)
text_case("json-lone-surrogate", "an atom name with the unpaired surrogate escape \\ud800", "[json-syntax]",
          TEXT.replace('"C2"', '"C\\ud800"'), True)
text_case("json-bom", "a byte order mark before the object", "[json-syntax]", "\ufeff" + TEXT, None)
text_case("json-overflow", "energy_offset 1e999 overflows a double", "[finite-numbers]", with_offset("1e999"),
          False)
text_case("json-overflow-negative-temperature", "temperature -1e999", "[finite-numbers]",
          TEXT.replace('"temperature": 300.0', '"temperature": -1e999'), False)
text_case("json-overflow-integer", "energy_offset a 400-digit integer", "[finite-numbers]",
          with_offset("1" + "0" * 400), False)
text_case("json-repeated-top-level-key", "n_atoms given twice (5, then 4)", "[duplicate-keys]",
          TEXT.replace('{"n_atoms": 4,', '{"n_atoms": 5, "n_atoms": 4,'), True)
text_case("json-repeated-policy", "support.policy given twice (\"wall\", then \"error\")", "[duplicate-keys]",
          TEXT.replace('"policy": "error"', '"policy": "wall", "policy": "error"'), True)
text_case("json-repeated-layer-key", "a layer's activation given twice", "[duplicate-keys]",
          TEXT.replace('"activation": "tanh"', '"activation": "silu", "activation": "tanh"'), True)
FREE_TEXT = json.dumps(FREE)
text_case("json-free-form-repeated-network-key", "a free-form network's hidden given twice", "[duplicate-keys]",
          FREE_TEXT.replace('"hidden": 4', '"hidden": 3, "hidden": 4'), True)
text_case("json-free-form-nan-scale", "a free-form network's distance_scale NaN", "[json-syntax]",
          FREE_TEXT.replace('"distance_scale": 1.5', '"distance_scale": NaN'), True)
text_case("json-free-form-overflow-scale", "a free-form network's distance_scale 1e999", "[finite-numbers]",
          FREE_TEXT.replace('"distance_scale": 1.5', '"distance_scale": 1e999'), False)


def render(c) -> str:
    """A case file's text: one key per line."""
    return "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in c.items()) + "\n}\n"


FREE_FORM_OUT = os.path.join(OUT, "free_form")


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(FREE_FORM_OUT)
    for folder, group in ((OUT, cases), (FREE_FORM_OUT, free_form_valid)):
        for c in group:
            with open(os.path.join(folder, c["name"] + ".json"), "w", encoding="utf-8") as f:
                f.write(render(c))
    print(f"{len(cases)} cases in {OUT}, {len(free_form_valid)} valid free-form cases in {FREE_FORM_OUT}")


if __name__ == "__main__":
    main()
