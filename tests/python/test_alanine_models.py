"""The shipped alanine dipeptide models: they load in the C core, the OpenMM plugin and
PyTorch, and the C core's energies and forces equal PyTorch's on held-out frames."""
import json
from pathlib import Path

import numpy as np
import openmm.app as app
import pytest
import torch

from alanine_dipeptide import data, molecule
from smoothflow_core import CoreModel
from smoothflow_torch import load_model

MODELS = Path(__file__).resolve().parents[2] / "models" / "alanine_dipeptide"
STRUCTURE = Path(__file__).resolve().parents[2] / "studies" / "alanine_dipeptide" / "alanine_dipeptide.pdb"
KINDS = ["smooth", "spline", "affine"]


def model_path(kind: str) -> Path:
    return MODELS / f"{kind}.safetensors"


def _metadata(path: Path) -> dict:
    """The model file's safetensors metadata (JSON strings: config, training, ...)."""
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        return f.metadata()


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_model_matches_pytorch_on_held_out_frames(kind):
    path = model_path(kind)
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


@pytest.mark.parametrize("kind", KINDS)
def test_shipped_model_carries_its_provenance_and_atoms(kind):
    meta = _metadata(model_path(kind))
    training = json.loads(meta["training"])
    assert training["config"]["model"]["transform"] == kind and training["steps"] > 0
    config = json.loads(meta["config"])
    # the study's atoms in model order, named as OpenMM's PDBFile names the study's structure (the
    # names the pipeline's `prepare` records; the file itself has the Amber names of molecule.ATOMS)
    assert [(a["residue"], a["element"]) for a in config["atoms"]] == [(r, e) for r, _, e in molecule.ATOMS]
    pdb = app.PDBFile(str(STRUCTURE))
    assert [a["name"] for a in config["atoms"]] == [a.name for a in pdb.topology.atoms()]
    assert [n for _, n, _ in molecule.ATOMS] == [line[12:16].strip() for line in STRUCTURE.read_text().splitlines()
                                                if line.startswith(("ATOM", "HETATM"))]


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
