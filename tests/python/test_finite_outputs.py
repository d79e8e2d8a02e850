"""Every outcome finite or an error (docs/reliability.md, "Every outcome finite or an error").

Models that load, and finite positions, whose evaluation overflowed and was reported as a
success with an infinite energy or non-finite forces: a bond of 1e152 nm under the wall
policy (its wall energy), two walled bonds whose wall energies sum past the largest double, a
bond of 1e-110 nm (an angle's Cartesian derivatives grow as 1 / distance), and a stack of
affine layers whose derivatives compound beyond the doubles (the loader's bounds hold each
layer, not their product).  Each is now SF_ERR_NUMERIC with a message that starts with
"molecule <n>:" and names the coordinate and its atoms, through the C core's binding and
through OpenMM's Reference and CPU platforms (where the message names the force and the
System particles).  The PyTorch reference shows that the wall and layer cases are what they
claim: it gives the same infinite energy or non-finite forces.  A sweep over models whose
conditioners sit at the loader's bound, at configurations inside and far outside the
support, holds every outcome to the rule.
"""
import re

import numpy as np
import pytest
import torch

from smoothflow_core import CoreError, CoreModel, load_library, smooth_inverse
from smoothflow_torch import SmoothFlow, export_model, model_to_bytes
from smoothflow_torch.testing import chain_flow, random_flow, random_positions

torch.set_num_threads(1)
NUMERIC = load_library().SF_ERR_NUMERIC
WALL = {"policy": "wall", "margin": 0.02, "wall_constant": 1000.0}


def _pull(x, atom, frm, length):
    """x with `atom` at `length` nm from `frm`, along their present direction (in place)."""
    d = x[atom] - x[frm]
    x[atom] = x[frm] + length * (d / np.linalg.norm(d))
    return x


def _expect_numeric(core, x, molecule, pattern, atoms=None):
    with pytest.raises(CoreError) as e:
        core.evaluate(x)
    err = e.value
    assert err.code == NUMERIC, str(err)
    assert str(err).startswith(f"molecule {molecule}:"), str(err)
    assert re.search(pattern, str(err)), str(err)
    assert err.molecule == molecule
    if atoms is not None:
        assert err.atoms == tuple(atoms), (err.atoms, str(err))
    return err


def _torch(flow, x):
    """The PyTorch reference's energies and forces."""
    e, f = flow.energy_and_forces(torch.as_tensor(x))
    return e.detach().numpy(), f.detach().numpy()


@pytest.fixture(scope="module")
def chain():
    """A six-atom chain (Z-matrix rows [r, r-1, r-2, r-3], bonds in [0.13, 0.18] nm) under the
    wall policy, and three configurations inside its support."""
    flow = chain_flow(6, seed=1, support=WALL)
    return flow, CoreModel.from_bytes(model_to_bytes(flow), max_batch=4), random_positions(flow, 3, seed=3).numpy()


def test_a_bond_whose_wall_energy_overflows_is_an_error_naming_it(chain):
    flow, core, x = chain
    x = x.copy()
    _pull(x[2], 5, 4, 1e140)  # the last atom along its bond: no angle or torsion changes
    e, f = core.evaluate(x)
    assert np.isfinite(e).all() and np.isfinite(f).all() and e[2] > 1e280
    _pull(x[2], 5, 4, 1e152)  # wall energy 500 (1e152 / 0.05)^2 = 2e306 x 1e3
    assert np.isinf(_torch(flow, x[2:])[0]).all()
    _expect_numeric(core, x, 2, r"^molecule 2: dimension 4 \(bond 5-4\) is 1e\+152 nm, so far outside the flow's "
                                r"support \[0\.13, 0\.18\] that its wall energy .* is not finite", atoms=(5, 4))
    with pytest.raises(CoreError, match="^molecule 2: dimension 4"):
        core.evaluate(x, forces=False)


def test_wall_energies_that_sum_past_the_largest_double_are_an_error(chain):
    flow, core, x = chain
    x = x[:1].copy()
    length = 0.05 * np.sqrt(1.2 * (np.finfo(float).max / 1000))  # each wall energy 0.6 DBL_MAX
    _pull(x[0], 5, 4, length)
    _pull(x[0], 0, 1, length)
    assert np.isinf(_torch(flow, x)[0]).all()
    _expect_numeric(core, x, 0, r"the energy is not finite \(inf kJ/mol\): kT \(sum log scale \+ log J\) \+ U0 \+ "
                                r"the wall energy is inf kJ/mol")
    with pytest.raises(CoreError, match="the energy is not finite"):
        core.evaluate(x, forces=False)


def test_an_angle_whose_derivatives_overflow_is_an_error_naming_it(chain):
    """A bond of 1e-110 nm (atom 4 at the origin, so it is exact): the wall clamps it and the
    energy is finite, but the Wilson B row of the angle 5-4-3, (u x n) / (|u|^2 |n|), has a
    denominator of 1e-331, below the doubles.  (PyTorch's autograd through atan2 stays finite
    here, near 1e111: the row's formula, in math/sf_math_geometry.h, is where it overflows.)"""
    flow, core, x = chain
    x = x[:1] - x[0, 4]
    _pull(x[0], 5, 4, 1e-90)
    e, f = core.evaluate(x)
    assert np.isfinite(e).all() and np.isfinite(f).all()
    _pull(x[0], 5, 4, 1e-110)
    _expect_numeric(core, x, 0, r"^molecule 0: the force on model atom [345] is not finite: for dimension 8 \(angle 5-4-3\)"
                                r" its derivative with respect to its atoms' positions .* overflows", atoms=(5, 4, 3))
    e, _ = core.evaluate(x, forces=False)  # the energy alone is finite and is no error
    np.testing.assert_allclose(e, _torch(flow, x)[0], rtol=1e-10)


def _compounding_flow(n_layers):
    """Four atoms; n_layers density affine layers on the angle 2-1-0 (dimension 3) with
    s = scale_max = 50 and t = 0 (every conditioner weight zero, biases (1000, 0)); a
    truncated-normal prior whose gradient at z is not zero.  At u = 0.5 exactly each layer
    maps 0.5 to 0.5 with derivative e^50 ~ 5e21: the log-determinant is 50 per layer, the
    derivative of the stack (5e21)^n_layers, beyond the doubles from 15 layers on."""
    zmatrix = [[0, -1, -1, -1], [1, 0, -1, -1], [2, 1, 0, -1], [3, 2, 1, 0]]
    layers = [{"transform": "affine", "direction": "density", "transformed": [3], "conditioning": [0, 1, 2, 4, 5],
               "hidden": []} for _ in range(n_layers)]
    prior = {"kind": "truncated_normal", "mean": [0.5, 0.5, 0.5, 0.3, 0.5], "sigma": [0.2] * 5}
    flow = SmoothFlow(zmatrix, [0.1] * 3, [0.2] * 3, layers, affine={"scale_max": 50.0}, prior=prior)
    with torch.no_grad():
        for name, value in flow.state_dict().items():
            if name.startswith("layers."):
                value.zero_()
                if name.endswith("bias"):
                    value[0] = 1000.0
    return flow


# Dyadic coordinates: any integer translation is exact, so the angle 2-1-0 stays a right angle
# (u = 0.5 exactly) wherever the molecule is put.
RIGHT_ANGLE = np.array([[0.125, 0, 0], [0, 0, 0], [0, 0.125, 0], [0.03125, 0.1875, 0.125]])


def test_layers_whose_derivatives_compound_beyond_the_doubles_are_an_error():
    x = RIGHT_ANGLE[None].copy()
    ten = _compounding_flow(10)  # (5e21)^10 = 1e217: finite, and the same as PyTorch's
    e, f = CoreModel.from_bytes(model_to_bytes(ten)).evaluate(x)
    et, ft = _torch(ten, x)
    assert np.isfinite(f).all() and np.abs(f).max() > 1e200
    np.testing.assert_allclose(e, et, rtol=1e-10)
    assert np.abs(f - ft).max() <= 1e-8 * np.abs(ft).max()

    flow = _compounding_flow(16)
    core = CoreModel.from_bytes(model_to_bytes(flow))
    et, ft = _torch(flow, x)
    assert np.isfinite(et).all() and not np.isfinite(ft).any()  # what the core returned as a success
    e, _ = core.evaluate(x, forces=False)
    np.testing.assert_allclose(e, et, rtol=1e-10)
    _expect_numeric(core, x, 0, r"^molecule 0: the force on model atom \d is not finite: for dimension \d \((bond|angle|"
                                r"torsion) [-\d]+\) the flow's reverse pass gives dE/du = -?(nan|inf)")
    u = core.internal_coordinates(x[0])
    assert u[3] == 0.5
    with pytest.raises(CoreError, match=r"^molecule 0: the flow's reverse pass gives d log p_U/du = -?(nan|inf) for "
                                        r"dimension \d, which is not finite") as e:
        core.log_density(u)
    assert e.value.code == NUMERIC


@pytest.mark.parametrize("circular", [False, True])
def test_the_smooth_inverse_keeps_a_nan(circular):
    """It returned 0 for NaN, so a generative smooth layer made a finite state of a NaN."""
    raw = np.random.default_rng(5).normal(size=4 * 3 + 2)
    x, iterations = smooth_inverse(raw, float("nan"), circular)
    assert np.isnan(x) and iterations == 0
    assert smooth_inverse(raw, -0.25)[0] == 0 and smooth_inverse(raw, float("inf"))[0] == 1


# ------------------------------------------------------------ the rule, swept

def _net_bound(weights, biases, activation):
    """The loader's bound (docs/reliability.md 1): the largest output bound B_m and weight sum of
    each linear map, maps in order."""
    A, out = 1.0, []
    for W, b in zip(weights, biases):
        W, b = np.abs(W), np.abs(b)
        B = (W.sum(axis=1) * A + b).max() if W.size else b.max()
        out.append((B, W.sum()))
        A = min(B, 1.0) if activation == "tanh" else B if activation == "silu" else B + np.log(2.0)
    return out


def _at_the_bound(flow, activation, target=0.9e8):
    """flow with each conditioner's last map scaled so that its output bound (or its weight
    sum, whichever is larger) is `target`: parameters as large as the loader allows."""
    state = flow.state_dict()
    with torch.no_grad():
        for l in range(len(flow.layers)):
            names = sorted({k.rsplit(".", 1)[0] for k in state if k.startswith(f"layers.{l}.net.")},
                           key=lambda k: int(k.rsplit(".", 1)[1]))
            W = [state[n + ".weight"].numpy() for n in names]
            b = [state[n + ".bias"].numpy() for n in names]
            B, total = _net_bound(W, b, activation)[-1]
            scale = target / max(B, total)
            state[names[-1] + ".weight"].mul_(scale)
            state[names[-1] + ".bias"].mul_(scale)
    return flow


def _configurations(flow, seed):
    """Inside the support, and the last atom pulled along its bond to factors of its length
    up to 1e153, and to 1e-100 and 1e-120 nm of its neighbour."""
    x = random_positions(flow, 1, seed=seed).numpy()[0]
    a, j = int(flow.zmatrix[-1][0]), int(flow.zmatrix[-1][1])
    out = [x.copy()]
    length = np.linalg.norm(x[a] - x[j])
    for factor in [0.5, 1.5, 3.0, 1e3, 1e10, 1e100, 1e150, 1e151, 1e152, 1e153]:
        out.append(_pull(x.copy(), a, j, factor * length))
    for length in [1e-100, 1e-120]:
        y = x - x[j]
        out.append(_pull(y, a, j, length))
    return out


@pytest.mark.parametrize("transform", ["smooth", "spline", "affine"])
@pytest.mark.parametrize("policy", ["wall", "error"])
def test_models_at_the_loaders_bounds_give_finite_results_or_errors(transform, policy):
    """Conditioners whose last map reaches 1e2 (most configurations finite) or 0.9e8 (the
    loader's bound 1e8), three directions and activations, twelve configurations, alone and
    as a batch of two: each outcome is finite energies and forces or an error that names its
    molecule."""
    outcomes = {"finite": 0, "error": 0}
    cases = [("generative", "silu", 1e2), ("density", "tanh", 1e2), ("mixed", "softplus", 1e2),
             ("generative", "silu", 0.9e8), ("density", "tanh", 0.9e8), ("mixed", "softplus", 0.9e8)]
    for seed, (directions, activation, target) in enumerate(cases):
        flow = random_flow(n_atoms=6, n_layers=4, n_components=3, hidden=(8,), activation=activation,
                           directions=directions, seed=seed, transform=transform, weight_scale=2.0,
                           support={"policy": policy, "margin": 0.02, "wall_constant": 1e12},
                           affine={"scale_max": 50.0})
        core = CoreModel.from_bytes(model_to_bytes(_at_the_bound(flow, activation, target)), max_batch=2)
        for i, x in enumerate(_configurations(flow, seed)):
            for batch in (x[None], np.stack([x, x])):
                try:
                    e, f = core.evaluate(batch)
                except CoreError as err:
                    outcomes["error"] += 1
                    assert str(err).startswith(f"molecule {err.molecule}:") and 0 <= err.molecule < len(batch), \
                        str(err)
                    continue
                outcomes["finite"] += 1
                assert np.isfinite(e).all() and np.isfinite(f).all(), (transform, policy, seed, i, e)
    assert outcomes["finite"] > 0 and outcomes["error"] > 0, outcomes


# ----------------------------------------------------------------- OpenMM

@pytest.fixture
def openmm_case(sf, tmp_path):
    """evaluate(flow, positions (M, N, 3), platform, threads) through a SmoothFlowForce over M
    molecules placed on the System's particles in reverse order after one spare particle, so that
    model atom a of molecule m is particle 1 + (M - 1 - m) N + a: the message must name those."""
    import openmm

    def evaluate(flow, positions, platform, threads=None):
        path = tmp_path / "model.safetensors"
        export_model(flow, path)
        M, N = positions.shape[:2]
        system = openmm.System()
        for _ in range(1 + M * N):
            system.addParticle(12.0)
        force = sf.SmoothFlowForce(str(path))
        force.setName("flow potential")
        order = [1 + (M - 1 - m) * N + np.arange(N) for m in range(M)]
        for m in range(M):
            force.addMolecule([int(p) for p in order[m]])
        system.addForce(force)
        try:
            chosen = openmm.Platform.getPlatformByName(platform)
        except Exception:
            pytest.skip(f"OpenMM has no {platform} platform here")
        props = {"Threads": str(threads)} if threads else {}
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), chosen, props)
        x = np.zeros((1 + M * N, 3))
        for m in range(M):
            x[order[m]] = positions[m]
        context.setPositions(x)
        try:
            context.getState(getEnergy=True, getForces=True)
        finally:
            del context
        return order

    return evaluate


PLATFORMS = [("Reference", None), ("CPU", 1), ("CPU", 2)]


@pytest.mark.parametrize("platform, threads", PLATFORMS)
def test_openmm_names_the_force_and_particles_of_a_wall_energy_overflow(openmm_case, platform, threads):
    import openmm
    flow = chain_flow(6, seed=1, support=WALL)
    x = random_positions(flow, 150, seed=3).numpy()
    _pull(x[149], 5, 4, 1e152)
    with pytest.raises(openmm.OpenMMException) as e:
        openmm_case(flow, x, platform, threads)
    message = str(e.value)
    assert re.search(r"SmoothFlowForce.*evaluation failed: molecule 149: dimension 4 \(bond 5-4\) is 1e\+152 nm.*"
                     r"wall energy .* is not finite.*\[System particles (\d+), (\d+)\]", message), message
    # molecule 149 lies on particles 1 + 0 * 6 + atom: model atoms 5 and 4 are particles 6 and 5
    assert message.endswith("[System particles 6, 5]"), message


@pytest.mark.parametrize("platform, threads", PLATFORMS)
def test_openmm_names_the_force_and_particles_of_compounding_layers(openmm_case, platform, threads):
    import openmm
    x = RIGHT_ANGLE[None] + np.arange(70)[:, None, None] * np.array([2.0, 0, 0])
    flow = _compounding_flow(10)
    openmm_case(flow, x, platform, threads)  # finite
    flow = _compounding_flow(16)
    with pytest.raises(openmm.OpenMMException) as e:
        openmm_case(flow, x, platform, threads)
    message = str(e.value)
    found = re.search(r"SmoothFlowForce.*evaluation failed: molecule 0: the force on model atom (\d) is not finite: "
                      r"for dimension \d \((bond|angle|torsion) ([-\d]+)\) the flow's reverse pass gives dE/du = "
                      r"-?(nan|inf) \[System particles ([\d, ]+)\]", message)
    assert found, message
    # molecule 0 lies on particles 1 + 69 * 4 + atom
    atoms = [int(a) for a in found.group(3).split("-")]
    assert [int(p) for p in found.group(5).split(", ")] == [1 + 69 * 4 + a for a in atoms], message
