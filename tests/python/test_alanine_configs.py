"""The alanine-dipeptide training configs, pipeline configs of five stages each
(``configs/<kind>.json``; smoothflow_torch.pipeline.train): the stages are named for the runs
they produce, the three flow kinds share one budget at every stage, each stage starts from the
one before it, the shipped model was trained with exactly the settings of its final stage in the
project the configs name (the H-N-C-C Z-matrix), and the coupling layers they build cover every
dimension."""
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from alanine_dipeptide import zmatrix
from smoothflow_torch.pipeline import model as pipeline_model
from smoothflow_torch.pipeline.train import DATA_DEFAULTS, stages

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "studies" / "alanine_dipeptide" / "configs"
KINDS = ("smooth", "spline", "affine")
# the shipped flow <kind>.safetensors comes from five stages, each from the one before
STAGES = ("{}_stage1", "{}_stage2_hot", "{}_stage3_hot", "{}_stage4_settle", "{}")
#: where the study's project reads its frames (relative to the project folder runs/alanine_dipeptide)
FRAMES = "../../data/alanine_dipeptide/obc.npz"
#: force-field frames at 1000-2000 K for force matching (made in the project by `smoothflow hot-frames`)
HOT_FRAMES = "data/hot_frames.npz"
#: the run that made the shipped smooth flow, in the project where the five stages were first run
#: under other names (k16_h128_stage1, k16_h128_hot_stage2, k16_h128_hot, k16_h128_hot_settle;
#: artifacts.json: alanine_dipeptide/tempered_candidates)
TRAINED_AS = {"smooth": ("k16_h128_settle_tempered", "runs/k16_h128_hot_settle/model.safetensors"),
              "spline": ("spline", "runs/spline_stage4_settle/model.safetensors"),
              "affine": ("affine", "runs/affine_stage4_settle/model.safetensors")}


def _stages(kind):
    return [c.to_dict() for c in stages(CONFIGS / f"{kind}.json")]


def _without(c, *model_keys, top=("name", "_comment")):
    """The config less its name, comment and the given model keys."""
    return {k: ({kk: vv for kk, vv in v.items() if kk not in model_keys} if k == "model" else v)
            for k, v in c.items() if k not in top}


def _one_budget(c):
    """The config less what may differ between kinds of one budget: the name, comment, start,
    transform, and alpha_min, a smooth-transform constant (1 for the smooth flow, the default 0.1
    where no layer reads it) that cannot change the spline or affine flows."""
    plain = _without(c, "transform", "init_from")
    plain["model"]["smooth"] = {k: v for k, v in plain["model"]["smooth"].items() if k != "alpha_min"}
    return plain


def _metadata(kind):
    with safe_open(str(REPO / "models" / "alanine_dipeptide" / f"{kind}.safetensors"), framework="numpy") as f:
        return f.metadata()


def test_every_config_is_a_valid_pipeline_config_named_for_its_runs():
    assert sorted(p.stem for p in CONFIGS.glob("*.json")) == sorted(KINDS + ("tiny",))
    for kind in KINDS:
        assert [c["name"] for c in _stages(kind)] == [s.format(kind) for s in STAGES]
        for c in _stages(kind):
            assert c["data"]["frames"] == FRAMES and c["data"]["max_train_frames"] is None
            assert c["target"] == {"high_energy": 1000.0, "platform": "Reference"}
    (tiny,) = _stages("tiny")
    assert tiny["name"] == "tiny" and tiny["iterations"] == 4


@pytest.mark.parametrize("stage", range(len(STAGES)))
def test_the_three_kinds_share_one_budget(stage):
    cfgs = [_stages(k)[stage] for k in KINDS]
    assert [c["model"]["transform"] for c in cfgs] == list(KINDS)
    plain = [_one_budget(c) for c in cfgs]
    assert plain[0] == plain[1] == plain[2]
    assert cfgs[0]["model"]["smooth"]["alpha_min"] == 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_each_stage_starts_from_the_run_before_with_the_studys_recipe(kind):
    """From scratch, then each from the last; force matching grows and the learning rate falls;
    the hot force-field frames join the force matching in stages 2 and 3 (with position noise from
    stage 2 on), and only the last stage draws its likelihood batches by tempered weights."""
    cfgs = _stages(kind)
    assert not cfgs[0]["model"].get("init_from")
    for before, c in zip(cfgs, cfgs[1:]):
        assert c["model"]["init_from"] == f"runs/{before['name']}/model.safetensors"
    assert [c["iterations"] for c in cfgs] == [10000, 1500, 800, 400, 800]
    fm = [c["weights"]["force_matching"] for c in cfgs]
    lr = [c["lr"] for c in cfgs]
    assert fm == sorted(fm) and lr == sorted(lr, reverse=True) and fm[0] == 2e-4 and fm[-1] == 4e-3
    assert [c["data"].get("force_matching_frames") for c in cfgs] == [None, HOT_FRAMES, HOT_FRAMES, None, None]
    assert [c["force_matching_extra_batch"] for c in cfgs] == [0, 64, 64, 0, 0]
    assert [c["force_matching_noise"] for c in cfgs] == [0.0] + [0.004] * 4
    assert [c["data"].get("weight_power", 1.0) for c in cfgs] == [1.0] * 4 + [0.75]
    # the architecture: K = 16 smooth components, two hidden layers of 128, the sharp von Mises prior
    model = cfgs[-1]["model"]
    assert (model["n_components"], model["hidden"]) == (16, [128, 128])
    assert model["prior"] == {"kind": "truncated_normal", "width": 1.0, "torsions": "von_mises",
                              "stiff_torsion_width": 0.6}


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_model_was_trained_with_its_config(kind):
    """The shipped file's own provenance (its `training` metadata, written by the pipeline) holds
    the settings of the run that made it: the final stage's, but for the run's name and start
    where the stages ran under other names (TRAINED_AS)."""
    training = json.loads(_metadata(kind)["training"])
    recorded, current = training["config"], _stages(kind)[-1]
    name, start = TRAINED_AS[kind]
    assert recorded["name"] == training["name"] == name and recorded["model"]["init_from"] == start
    assert training["completed"] and training["steps"] == current["iterations"]
    # (progress: whether a progress bar was drawn, which cannot change the run)
    top = ("name", "_comment", "progress", "notes")
    # (data keys at their defaults may be written or left out)
    recorded, current = ({**c, "data": {**DATA_DEFAULTS, **c["data"]}} for c in (recorded, current))
    assert _without(recorded, "init_from", top=top) == _without(current, "init_from", top=top)
    assert training["data"]["file"] == FRAMES and training["data"]["weight_power"] == 0.75
    assert training["pipeline"]["forcefield"] == ["amber99sbildn.xml", "amber99_obc.xml"]


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_model_has_the_studys_zmatrix(kind):
    """The project the configs run in is prepared with zmatrix_amide_h_on_heavy_atoms.txt
    (README.md): the model's Z-matrix is that file's rows."""
    rows = zmatrix.read(zmatrix.AMIDE_H_ON_HEAVY_ATOMS_FILE)
    assert np.array_equal(json.loads(_metadata(kind)["config"])["zmatrix"], rows)


def test_coupling_layers_cover_every_dimension():
    model = _stages("smooth")[-1]["model"]
    model = {k: v for k, v in model.items() if k != "init_from"}
    for scheme in pipeline_model.SCHEMES:
        covered = set()
        for L in pipeline_model.coupling_layers(22, {**model, "scheme": scheme}):
            assert not set(L["transformed"]) & set(L["conditioning"])
            covered |= set(L["transformed"])
        assert covered == set(range(60)), scheme
    layers = pipeline_model.coupling_layers(22, {**model, "scheme": "ic_hierarchy"})
    # phi (dim 43) and psi (dim 44) are in different torsion halves
    assert (43 in layers[0]["transformed"]) != (44 in layers[0]["transformed"])
    with pytest.raises(ValueError, match="unknown keys"):
        pipeline_model.coupling_layers(22, {"n_component": 4})
    # ic_coupled (the shipped scheme): each half of the angles (and of the bonds) is
    # conditioned on the other half
    assert model["scheme"] == "ic_coupled"
    bonds, angles, _ = pipeline_model.dims(22)
    for L in pipeline_model.coupling_layers(22, model):
        t = set(L["transformed"])
        for group in (set(angles), set(bonds)):
            if t <= group:
                assert group - t <= set(L["conditioning"])


def test_the_tetrapeptide_configs_share_one_budget_with_short_first_stages():
    """studies/alanine_tetrapeptide/train{,_spline,_affine}.json (issue 21 part 5): the alanine
    dipeptide's former three-stage recipe (the flows shipped until December 2026: K = 8, 2 x 64,
    2000 + 1500 + 800 steps here, not 10 000 + 1500 + 800: the tetrapeptide's data are overfitted
    after 2000; the stage names say "short") with von Mises torsions in every kind's prior; the
    kinds differ only in the transform and the names (one budget, one prior)."""
    tetra = REPO / "studies" / "alanine_tetrapeptide"
    plain = {}
    for kind, name in (("smooth", "train"), ("spline", "train_spline"), ("affine", "train_affine")):
        mine = [c.to_dict() for c in stages(tetra / f"{name}.json")]
        assert [c["name"] for c in mine] == [f"{kind}_short_stage1", f"{kind}_short_stage2", f"{kind}_short"]
        assert not mine[0]["model"].get("init_from")
        for before, c in zip(mine, mine[1:]):
            assert c["model"]["init_from"] == f"runs/{before['name']}/model.safetensors"
        assert [c["iterations"] for c in mine] == [2000, 1500, 800]
        assert [c["weights"]["force_matching"] for c in mine] == [2e-4, 2e-3, 4e-3]
        assert [c["lr"] for c in mine] == [1e-3, 3e-4, 1e-4]
        for c in mine:
            assert c["model"]["transform"] == kind
            assert (c["model"]["n_components"], c["model"]["hidden"]) == (8, [64, 64])
            assert c["model"]["prior"] == {"kind": "truncated_normal", "width": 1.0, "torsions": "von_mises"}
        plain[kind] = [_one_budget(c) for c in mine]
    assert plain["smooth"] == plain["spline"] == plain["affine"]


def test_the_tetrapeptide_stiffness_stages_continue_each_flow_alike():
    """studies/alanine_tetrapeptide/train{,_spline}_stiff.json: two stages each, from that kind's
    final model of train{,_spline}.json: the stiffness bound on the force field's hot frames and
    that flow's own 2-fs NVE frames, then the same with force matching at displaced frames; the two
    kinds differ only in the transform, the start and the flow's own frames (one budget), and keep
    the final stage's architecture and prior."""
    tetra = REPO / "studies" / "alanine_tetrapeptide"
    done = {}
    for kind, base, stiff in (("smooth", "train", "train_stiff"), ("spline", "train_spline", "train_spline_stiff")):
        final = [c.to_dict() for c in stages(tetra / f"{base}.json")][-1]
        c, noisy = [c.to_dict() for c in stages(tetra / f"{stiff}.json")]
        assert c["name"] == f"{final['name']}_stiff" and noisy["name"] == f"{final['name']}_noisy_fm"
        assert noisy["model"]["init_from"] == f"runs/{c['name']}/model.safetensors"
        assert (c["force_matching_noise"], noisy["force_matching_noise"]) == (0.0, 0.004)
        assert _without(noisy, "init_from", top=("name", "_comment", "force_matching_noise")) == \
            _without(c, "init_from", top=("name", "_comment", "force_matching_noise"))
        assert c["model"]["init_from"] == f"runs/{final['name']}/model.safetensors"
        assert _without(c, "init_from")["model"] == _without(final, "init_from")["model"]
        assert c["weights"]["stiffness"] > 0 and c["weights"]["nll"] == 1.0
        assert c["stiffness_dt_fs"] >= 2.0 / 2 ** 0.5 * 2.0          # past the fourth-order resonance of a 2-fs step
        assert c["data"]["curvature_frames"] == ["data/hot_frames.npz", f"data/nve_frames_{final['name']}.npz"]
        assert c["data"]["frames"] == final["data"]["frames"]
        done[kind] = _without(c, "transform", "init_from", "smooth", "spline", top=("name", "_comment", "data"))
    assert done["smooth"] == done["spline"]
