"""The alanine-dipeptide training configs, pipeline configs of three stages each
(``configs/<kind>.json``; smoothflow_torch.pipeline.train): the stages are named for the runs
they produce, the three flow kinds share one budget at every stage, each stage starts from the
one before it, the shipped model was trained with exactly the settings of its final stage, and
the coupling layers they build cover every dimension."""
import json
from pathlib import Path

import pytest
from safetensors import safe_open

from smoothflow_torch.pipeline import model as pipeline_model
from smoothflow_torch.pipeline.train import stages
from smoothflow_torch.training import TrainConfig

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "studies" / "alanine_dipeptide" / "configs"
KINDS = ("smooth", "spline", "affine")
# the shipped flow <kind>.safetensors comes from three stages: <kind>_stage1, <kind>_stage2, <kind>
STAGES = ("{}_stage1", "{}_stage2", "{}")
#: where the study's project reads its frames (relative to the project folder runs/alanine_dipeptide)
FRAMES = "../../data/alanine_dipeptide/obc.npz"


def _stages(kind):
    return [c.to_dict() for c in stages(CONFIGS / f"{kind}.json")]


def _without(c, *model_keys, top=("name", "_comment")):
    """The config less its name, comment and the given model keys."""
    return {k: ({kk: vv for kk, vv in v.items() if kk not in model_keys} if k == "model" else v)
            for k, v in c.items() if k not in top}


def test_every_config_is_a_valid_pipeline_config_named_for_its_runs():
    assert sorted(p.stem for p in CONFIGS.glob("*.json")) == sorted(KINDS + ("tiny", "smooth_hot", "smooth_von_mises",
                                                                          "smooth_von_mises_hot", "smooth_von_mises_sharp",
                                                                          "smooth_von_mises_sharp_hot"))
    for kind in KINDS:
        assert [c["name"] for c in _stages(kind)] == [s.format(kind) for s in STAGES]
        for c in _stages(kind):
            assert c["data"] == {"frames": FRAMES, "max_train_frames": None}
            assert c["target"] == {"high_energy": 1000.0, "platform": "Reference"}
    (tiny,) = _stages("tiny")
    assert tiny["name"] == "tiny" and tiny["iterations"] == 4


def test_the_hot_md_fine_tune_starts_from_the_shipped_smooth_flow_with_its_final_settings():
    """configs/smooth_hot.json (not shipped; docs/reliability.md section 5): the shipped smooth
    flow's final stage with the curvature bound added, then the stiffness bound at hot frames."""
    from smoothflow_torch.pipeline.train import stages
    first, second = stages(CONFIGS / "smooth_hot.json")
    final = _stages("smooth")[-1]
    assert first.model == {**final["model"], "init_from": "../../models/alanine_dipeptide/smooth.safetensors"}
    assert first.weights["curvature"] == 10.0 and first.weights["stiffness"] == 0.0 and first.iterations == 2000
    assert second.model["init_from"] == "runs/smooth_curvature/model.safetensors"
    assert second.weights["stiffness"] == 30.0 and second.stiffness_dt_fs == 2.5
    assert second.data["curvature_frames"] == ["data/hot_frames.npz", "data/hot_frames_smooth_curvature.npz"]


def test_the_von_mises_fine_tune_is_smooth_hot_from_the_von_mises_flow_with_a_3_fs_target():
    """configs/smooth_von_mises_hot.json (not shipped; docs/reliability.md section 5): smooth_hot.json's
    two stages from the von Mises flow's final model, the stiffness target at 3.0 fs."""
    first, second = stages(CONFIGS / "smooth_von_mises_hot.json")
    hot_first, hot_second = stages(CONFIGS / "smooth_hot.json")
    final = _stages("smooth_von_mises")[-1]
    assert first.model == {**final["model"], "init_from": "runs/smooth/model.safetensors"}
    assert _without(first.to_dict(), "init_from", "prior") == _without(hot_first.to_dict(), "init_from", "prior")
    assert second.model["init_from"] == "runs/vm_curvature/model.safetensors"
    assert second.stiffness_dt_fs == 3.0 and hot_second.stiffness_dt_fs == 2.5
    assert second.data["curvature_frames"] == ["data/hot_frames.npz", "data/hot_frames_vm_curvature.npz"]
    assert _without(second.to_dict(), "init_from", "prior", top=("name", "_comment", "data", "stiffness_dt_fs")) == \
        _without(hot_second.to_dict(), "init_from", "prior", top=("name", "_comment", "data", "stiffness_dt_fs"))


def test_the_von_mises_config_is_the_smooth_config_with_von_mises_torsions():
    """configs/smooth_von_mises.json (not shipped; docs/reliability.md section 5): the shipped
    smooth flow's three stages with only the prior's torsions changed."""
    plain, vm = _stages("smooth"), [c.to_dict() for c in stages(CONFIGS / "smooth_von_mises.json")]
    assert len(vm) == 3
    for a, b in zip(plain, vm):
        assert b["model"]["prior"] == {"kind": "truncated_normal", "width": 1.0, "torsions": "von_mises"}
        assert _without(a, "prior", top=("_comment",)) == _without(b, "prior", top=("_comment",))


@pytest.mark.parametrize("name", ["smooth_von_mises", "smooth_von_mises_hot"])
def test_the_sharp_von_mises_configs_differ_from_the_von_mises_ones_only_in_the_stiff_torsion_width(name):
    """configs/smooth_von_mises_sharp.json and its _hot fine-tune (not shipped; docs/reliability.md
    section 5): stage for stage the von Mises configs with model.prior.stiff_torsion_width 0.6."""
    plain = [c.to_dict() for c in stages(CONFIGS / f"{name}.json")]
    sharp = [c.to_dict() for c in stages(CONFIGS / f"{name.replace('von_mises', 'von_mises_sharp')}.json")]
    assert len(sharp) == len(plain)
    for a, b in zip(plain, sharp):
        assert b["model"]["prior"] == {**a["model"]["prior"], "stiff_torsion_width": 0.6}
        assert _without(a, "prior", top=("_comment",)) == _without(b, "prior", top=("_comment",))


@pytest.mark.parametrize("stage", range(3))
def test_the_three_kinds_share_one_budget(stage):
    cfgs = [_stages(k)[stage] for k in KINDS]
    assert [c["model"]["transform"] for c in cfgs] == list(KINDS)
    # alpha_min is a smooth-transform constant (1 for the smooth flow, the default 0.1 where
    # no layer reads it): it cannot change the spline or affine flows
    plain = [_without(c, "transform", "init_from") for c in cfgs]
    for p in plain:
        p["model"]["smooth"] = {k: v for k, v in p["model"]["smooth"].items() if k != "alpha_min"}
    assert plain[0] == plain[1] == plain[2]
    assert cfgs[0]["model"]["smooth"]["alpha_min"] == 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_each_stage_starts_from_the_run_before(kind):
    first, second, last = _stages(kind)
    assert not first["model"].get("init_from")
    assert second["model"]["init_from"] == f"runs/{first['name']}/model.safetensors"
    assert last["model"]["init_from"] == f"runs/{second['name']}/model.safetensors"
    # later stages refine with more force matching and a lower learning rate
    fm = [c["weights"]["force_matching"] for c in (first, second, last)]
    lr = [c["lr"] for c in (first, second, last)]
    assert fm == sorted(fm) and lr == sorted(lr, reverse=True)


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_model_was_trained_with_its_config(kind):
    """The shipped file's own provenance (its `training` metadata) holds the settings it was
    trained with by the study's former script; they equal the final stage's but for the run's
    name, where its start came from (the run was named <kind>_v5_stage3b and started from a
    committed file) and how the data and target are named: the former script's ``setting: obc``
    is the project's force field (amber99sbildn + amber99_obc) and the frames file ``obc.npz``."""
    with safe_open(str(REPO / "models" / "alanine_dipeptide" / f"{kind}.safetensors"), framework="numpy") as f:
        recorded = json.loads(f.metadata()["training"])["config"]
    current = _stages(kind)[-1]
    # (progress: whether a progress bar was drawn, which cannot change the run)
    top = ("name", "_comment", "progress", "data", "target")
    # fields added to TrainConfig since (the alpha-divergence loss, the curvature, stiffness and velocity
    # Verlet bounds, force matching at extra frames) take
    # their defaults, which switch them off: the recorded run is the same run under today's config
    completed = TrainConfig.from_dict(recorded).to_dict()
    assert set(completed) - set(recorded) <= {"alpha", "alpha_batch_size", "curvature_limit", "curvature_noise",
                                              "curvature_extra_batch", "stiffness_dt_fs", "stiffness_batch",
                                              "stiffness_iterations", "tail_matching_torsions", "verlet_dt_fs",
                                              "verlet_temperature", "verlet_steps", "verlet_batch", "verlet_limit",
                                              "force_matching_extra_batch"}
    assert completed["weights"]["alpha_divergence"] == completed["weights"]["curvature"] == 0.0
    assert completed["force_matching_extra_batch"] == 0
    assert completed["weights"]["stiffness"] == 0.0
    # The angles' wall margin was given to the shipped file after training, with its edge forces
    # (python -m smoothflow_torch.edge_force --angle-margin): the file carries the config's value,
    # the training record predates the key.
    with safe_open(str(REPO / "models" / "alanine_dipeptide" / f"{kind}.safetensors"), framework="numpy") as f:
        shipped_support = json.loads(f.metadata()["config"])["support"]
    assert shipped_support["angle_margin"] == current["model"]["support"]["angle_margin"] == 0.1
    assert "angle_margin" not in recorded["model"]["support"]
    current = {**current, "model": {**current["model"], "support": {
        k: v for k, v in current["model"]["support"].items() if k != "angle_margin"}}}
    assert _without(completed, "init_from", top=top) == _without(current, "init_from", top=top)
    assert recorded["data"] == {"setting": "obc", "max_train_frames": current["data"]["max_train_frames"]}
    assert Path(current["data"]["frames"]).name == f"{recorded['data']['setting']}.npz"
    assert recorded["target"] == {"setting": "obc", **current["target"]}
    # every model key the former script defaulted differently from the pipeline is explicit
    assert TrainConfig.from_dict(recorded).model.keys() >= {"scheme", "n_angle_blocks", "prior"}


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


def test_the_tetrapeptide_configs_are_the_dipeptides_with_von_mises_torsions():
    """studies/alanine_tetrapeptide/train{,_spline,_affine}.json (issue 21 part 5): each kind's
    three stages are the dipeptide's config of that kind with the tetrapeptide's frames, von
    Mises torsions in the prior of all three (one budget, one prior) and a first stage of 2000
    steps, not 10 000 (the tetrapeptide's data are overfitted after that; the stage names say
    "short")."""
    tetra = REPO / "studies" / "alanine_tetrapeptide"
    for kind, name in (("smooth", "train"), ("spline", "train_spline"), ("affine", "train_affine")):
        mine = [c.to_dict() for c in stages(tetra / f"{name}.json")]
        theirs = _stages(kind)
        assert [c["name"] for c in mine] == [c["name"].replace(kind, f"{kind}_short") for c in theirs]
        assert (mine[0]["iterations"], theirs[0]["iterations"]) == (2000, 10000)
        for a, b in zip(mine, theirs):
            assert a["model"]["prior"] == {**b["model"]["prior"], "torsions": "von_mises"}
            assert _without(a, "prior", "init_from", top=("name", "_comment", "data", "iterations")) == \
                _without(b, "prior", "init_from", top=("name", "_comment", "data", "iterations"))
        assert [a["iterations"] for a in mine[1:]] == [b["iterations"] for b in theirs[1:]]


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
