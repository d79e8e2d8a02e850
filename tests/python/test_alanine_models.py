"""The shipped alanine dipeptide models: they load in the C core, the OpenMM plugin and
PyTorch, and the C core's energies and forces equal PyTorch's on held-out frames."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from alanine_dipeptide import data, molecule
from smoothflow_core import CoreModel
from smoothflow_torch import load_model

MODELS = Path(__file__).resolve().parents[2] / "models" / "alanine_dipeptide"
KINDS = ["smooth", "spline", "affine"]
# models/alanine_dipeptide/ (the shipped set: the v5 stage-3b flows) and every stage it was
# trained through (v5/, v5_stage2/, v5_stage3b/); v1/ and its stage1/, v2/, v2_stage2/, v3/ and
# v3_stage2/ (the smooth flow shipped before v5; v3's spline and affine flows were v2's); the v4
# experiment's flows, v5 stage 3 and the 12-chain data pilot (docs/alanine-dipeptide.md)
STAGES = {"final": KINDS, "v1": KINDS, "v1/stage1": KINDS, "v2": KINDS, "v2_stage2": KINDS,
          "v3": ["smooth"], "v3_stage2": ["smooth"], "v4_stage2": ["smooth", "spline"],
          "v4_stage3": ["smooth", "spline"], "v5": KINDS, "v5_stage2": KINDS,
          "v5_stage3": ["smooth", "spline"], "v5_stage3b": KINDS,
          "pilot_data12": ["smooth"]}
CASES = [(k, s) for s, kinds in STAGES.items() for k in kinds]


def model_path(kind: str, stage: str) -> Path:
    return (MODELS if stage == "final" else MODELS / stage) / f"{kind}.safetensors"


def _metadata(path: Path) -> dict:
    """The model file's safetensors metadata (JSON strings: config, training, ...)."""
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        return f.metadata()


@pytest.mark.parametrize("kind, stage", CASES)
def test_shipped_model_matches_pytorch_on_held_out_frames(kind, stage):
    path = model_path(kind, stage)
    assert path.exists(), f"{path} is missing"
    flow = load_model(path)
    assert {layer["transform"] for layer in flow.config()["layers"]} == {kind}
    core = CoreModel.from_file(path, max_batch=50)
    x = data.load_reference("obc").test.positions[:50]
    e_t, f_t = flow.energy_and_forces(torch.from_numpy(x))
    e_c, f_c = core.evaluate(x)
    np.testing.assert_allclose(e_c, e_t.detach().numpy(), rtol=1e-10, atol=1e-9)
    f_t = f_t.detach().numpy()
    assert np.abs(f_c - f_t).max() / np.abs(f_t).max() < 1e-8


@pytest.mark.parametrize("kind, stage", CASES)
def test_shipped_model_carries_its_provenance_and_atoms(kind, stage):
    meta = _metadata(model_path(kind, stage))
    training = json.loads(meta["training"])
    assert training["config"]["model"]["transform"] == kind and training["steps"] > 0
    config = json.loads(meta["config"])
    assert [(a["residue"], a["name"]) for a in config["atoms"]] == [(r, n) for r, n, _ in molecule.ATOMS]


def test_smooth_model_runs_in_openmm_from_a_topology():
    import openmm
    import openmm.unit as unit
    import openmmsmoothflow
    system = openmm.System()
    for res, name, el in molecule.ATOMS:
        system.addParticle(openmm.app.element.get_by_symbol(el).mass)
    force = openmmsmoothflow.addSmoothFlowForce(system, molecule.topology(), str(MODELS / "smooth.safetensors"))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("Reference"))
    x = data.load_reference("obc").test.positions[0]
    ctx.setPositions(x * unit.nanometer)
    e = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    e_core, _ = CoreModel.from_file(MODELS / "smooth.safetensors").evaluate(x)
    assert e == pytest.approx(e_core, rel=1e-12)
    assert force.getNumModelAtoms() == 22


def _training(path: Path) -> dict:
    return json.loads(_metadata(path)["training"])


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_set_is_the_v5_stage3b_family(kind):
    """The shipped flows are byte copies of the v5 stage-3b runs: one config family, one budget,
    each continued from its own kind's v5 stage 2 with force matching at 4e-3."""
    assert model_path(kind, "final").read_bytes() == model_path(kind, "v5_stage3b").read_bytes()
    config = _training(model_path(kind, "final"))["config"]
    assert config["name"] == f"{kind}_v5_stage3b"
    assert config["model"]["init_from"] == f"models/alanine_dipeptide/v5_stage2/{kind}.safetensors"
    assert config["model"]["n_angle_blocks"] == 4
    assert config["weights"]["force_matching"] == 0.004


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_flows_training_chain_is_in_the_repository(kind):
    """Every stage the shipped flow was continued from is committed, so each stage's config
    retrains from a clean clone (stage 1 from scratch, the later ones from the file before)."""
    root = MODELS.parents[1]
    names, path = [], model_path(kind, "final")
    while True:
        config = _training(path)["config"]
        names.append(config["name"])
        if not config["model"].get("init_from"):
            break
        path = root / config["model"]["init_from"]
        assert path.exists(), f"{names[-1]} was continued from {path}, which is not in the repository"
    assert names == [f"{kind}_v5_stage3b", f"{kind}_v5_stage2", f"{kind}_v5"]


def test_previously_shipped_smooth_flow_is_kept():
    """v3_stage2/ holds the smooth flow shipped before v5 (the comparison in docs/results.md)."""
    config = _training(model_path("smooth", "v3_stage2"))["config"]
    assert config["name"] == "smooth_v3_stage2"
    assert config["model"]["init_from"] == "models/alanine_dipeptide/v3/smooth.safetensors"
