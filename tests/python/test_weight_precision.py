"""The float32 weight option of the C core (sf_model_set_weight_precision).

Its definition is exact: every conditioner weight is rounded to the nearest float32 and
the flow is then evaluated in double.  So the outside oracle is the PyTorch flow whose
weights were rounded the same way, in double, to the same tolerances as the default;
one molecule (the core's mixed float/double products) and a batch (BLAS on the rounded
doubles) must both match it.  Against the stored weights the option's energies and
forces differ by the amounts docs/c-core.md ("Weight precision") states, checked here.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from smoothflow_core import CoreModel, ffi
from smoothflow_torch import load_model, model_to_bytes
from smoothflow_torch.testing import random_flow, random_positions

torch.set_num_threads(1)
MODELS = Path(__file__).resolve().parents[2] / "models" / "alanine_dipeptide"


def torch_reference(flow, x):
    """Energies and forces of `flow` with its conditioner weights rounded to float32."""
    saved = {k: v.clone() for k, v in flow.state_dict().items()}
    with torch.no_grad():
        for name, p in flow.named_parameters():
            if name.endswith(".weight") and p.dim() == 2:
                p.copy_(p.to(torch.float32).to(torch.float64))
    try:
        e, f = flow.energy_and_forces(x)
        return e.detach().numpy(), f.detach().numpy()
    finally:
        flow.load_state_dict(saved)


FLOWS = {
    "smooth-mixed": dict(n_atoms=8, n_layers=4, n_components=8, hidden=(32, 32), activation="silu",
                         directions="mixed", seed=11),
    "spline-density": dict(n_atoms=7, n_layers=3, n_components=6, hidden=(20,), activation="tanh",
                           directions="density", seed=12, transform="spline"),
    "affine-generative": dict(n_atoms=6, n_layers=3, n_components=1, hidden=(16, 16), activation="softplus",
                              directions="generative", seed=13, transform="affine"),
}


def _flow(name):
    if name in FLOWS:
        return random_flow(**FLOWS[name])
    return load_model(MODELS / f"{name}.safetensors")


@pytest.mark.parametrize("name", list(FLOWS) + ["smooth", "spline"])
@pytest.mark.parametrize("batch", [1, 7])
def test_float32_weights_equal_the_rounded_flow(name, batch):
    flow = _flow(name)
    core = CoreModel.from_bytes(model_to_bytes(flow), max_batch=batch)
    core.weight_precision = "float32"
    assert core.weight_precision == "float32"
    x = random_positions(flow, batch, seed=5)
    e_ref, f_ref = torch_reference(flow, x)
    e, f = core.evaluate(x.numpy())
    # 1e-12: a thousand times below the distance to the stored flow's energies (>= 2e-9)
    assert np.abs(e - e_ref).max() / max(1.0, np.abs(e_ref).max()) < 1e-12
    assert np.abs(f - f_ref).max() / np.abs(f_ref).max() < 1e-11
    # and it is not the stored flow: rounding moved the energy
    e64, _ = flow.energy_and_forces(x)
    assert np.abs(e - e64.detach().numpy()).max() > 0


def test_one_molecule_and_a_batch_agree():
    """The mixed float/double product (one molecule) and BLAS on the rounded doubles (a
    batch) are the same arithmetic up to the order of the sums."""
    flow = load_model(MODELS / "smooth.safetensors")
    core = CoreModel.from_bytes(model_to_bytes(flow), max_batch=16)
    core.weight_precision = "float32"
    x = random_positions(flow, 16, seed=8).numpy()
    e_batch, f_batch = core.evaluate(x)
    for i in range(0, 16, 5):
        e1, f1 = core.evaluate(x[i])
        assert abs(e1 - e_batch[i]) <= 1e-12 * max(1.0, abs(e_batch[i]))
        assert np.abs(f1 - f_batch[i]).max() <= 1e-10 * np.abs(f_batch[i]).max()


@pytest.mark.parametrize("name", ["smooth", "spline", "affine"])
def test_distance_from_the_stored_weights_is_as_documented(name):
    """docs/c-core.md: on the shipped flows, over random configurations inside the support
    (energies of 10^4 kJ/mol), the float32 option moves energies by less than 3e-4 kJ/mol
    (1e-4 kT) and forces by less than 2e-6 of the largest force; at the held-out MD frames, by
    less than 1e-5 kJ/mol."""
    from alanine_dipeptide import data
    core = CoreModel.from_file(MODELS / f"{name}.safetensors", max_batch=64)
    flow = load_model(MODELS / f"{name}.safetensors")
    x = random_positions(flow, 64, seed=21).numpy()
    held_out = data.load_reference("obc").test.positions[:64]
    e64, f64 = core.evaluate(x)
    h64, _ = core.evaluate(held_out)
    core.weight_precision = "float32"
    e32, f32 = core.evaluate(x)
    h32, _ = core.evaluate(held_out)
    assert np.abs(e32 - e64).max() <= 3e-4
    assert np.abs(f32 - f64).max() <= 2e-6 * np.abs(f64).max()
    assert 0 < np.abs(h32 - h64).max() <= 1e-5
    assert np.abs(e32 - e64).max() > 0


def test_switching_back_restores_the_stored_weights():
    core = CoreModel.from_file(MODELS / "smooth.safetensors")
    flow = load_model(MODELS / "smooth.safetensors")
    x = random_positions(flow, 1, seed=2).numpy()[0]
    e0, f0 = core.evaluate(x)
    core.weight_precision = "float32"
    e1, _ = core.evaluate(x)
    core.weight_precision = "float64"
    e2, f2 = core.evaluate(x)
    assert e1 != e0 and e2 == e0 and np.array_equal(f2, f0)


def test_unknown_precision_is_refused():
    core = CoreModel.from_file(MODELS / "smooth.safetensors")
    with pytest.raises(ValueError):
        core.weight_precision = "float16"
    lib = core._lib
    err = ffi.new("sf_error *")
    assert lib.sf_model_set_weight_precision(core._handle, 7, err) != 0
    assert b"unknown precision 7" in ffi.string(err.message)
    assert core.weight_precision == "float64"
