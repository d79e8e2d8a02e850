"""The free-form kind on the GPU platforms (issue 23 part 4; docs/free-form-kernels.md): the
kernel of platforms/common/src/kernels/free_form.cc, on OpenCL and CUDA in each precision,
against the Reference platform (the C core in double).

Checked per case: random EGNN encoders far from the identity (test_free_form_force.py's
construction), DW4-like (4 particles, d = 2: z is ignored and gets exactly zero force; 3 layers,
so a middle layer's node update is exercised) and LJ13-like (13 particles, d = 3), many copies
with permuted and interleaved particles and one particle in no copy, at several configurations;
then, in double, a failure (a NaN position) reported with the Reference platform's message and
the Context going on, a short NVE run that conserves energy, and the refusal of a model whose
device workspace is too large.

Platforms are found as in test_device_platforms.py (SMOOTHFLOW_OPENCL_PLUGIN /
SMOOTHFLOW_CUDA_PLUGIN, the package's folder, or the build tree's lib/; with
SMOOTHFLOW_REQUIRE_PLUGIN=1 a missing OpenCL fails instead of skipping).

Tolerances, relative to max(1, |E|) and max(1, the largest force component of the copy's
System): double 1e-9 (the forces go through OpenMM's fixed-point buffer, 2^-32 kJ/mol/nm);
single and mixed, whose network runs in float with sums in `mixed`, against Reference at the
positions rounded to float: TOLERANCE below, 20 and 30 times the largest errors measured on PoCL
(docs/free-form-kernels.md, "Precision").  Each is far below what a wrong kernel gives (measured
by breaking the kernel on purpose): without SiLU's second derivative in the reverse pass the
forces are off by 9e-4 (DW4-like) and 4e-2 (LJ13-like) of their size; with the sign of the LU's
elimination step flipped the energy is off by 1e-5 and 3e-3."""
import math
import os

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from test_device_platforms import GPU_PLATFORMS, PRECISIONS, REQUIRED, _unavailable

from smoothflow_torch.particles.egnn import EGNN
from smoothflow_torch.particles.export import export_free_form

torch.set_num_threads(1)

KJ, KJ_NM = unit.kilojoule_per_mole, unit.kilojoule_per_mole / unit.nanometer
R = 0.00831446261815324
REDUCED_T = 1.0 / R
# relative (energy, force) tolerances
TOLERANCE = {'double': (1e-9, 1e-9), 'mixed': (2e-6, 1e-5), 'single': (2e-6, 1e-5)}
# name: (n, d, hidden, layers, distance scale, temperature K, energy offset kJ/mol, seed, copies)
MODELS = {'dw4': (4, 2, 8, 3, 4.0, 300.0, -3.25, 4, 21),
          'lj13': (13, 3, 8, 2, 1.5, REDUCED_T, 0.0, 13, 3)}

CASES = []
for _platform in GPU_PLATFORMS:
    _why = _unavailable(_platform)
    for _precision in PRECISIONS[_platform]:
        _marks = pytest.mark.skip(reason=_why) if _why and _platform not in REQUIRED else ()
        CASES.append(pytest.param((_platform, _precision, _why), id=f'{_platform}-{_precision}', marks=_marks))

_probed = {}


@pytest.fixture
def case(request):
    """(platform, precision) with a usable device; skipped without one unless required."""
    platform, precision, why = request.param
    if why:
        raise AssertionError(f'{platform} is required here (SMOOTHFLOW_REQUIRE_PLUGIN=1): {why}')
    if platform not in _probed:
        system = openmm.System()
        system.addParticle(1.0)
        try:
            openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
            _probed[platform] = None
        except Exception as e:
            _probed[platform] = f'the {platform} platform has no usable device: {e}'
    if _probed[platform]:
        if platform in REQUIRED:
            raise AssertionError(_probed[platform])
        pytest.skip(_probed[platform])
    return platform, precision


def _double_cases():
    return [param for param in CASES if param.values[0][1] == 'double']


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """name -> model path: a random EGNN far from the identity, with a random h0."""
    folder = tmp_path_factory.mktemp('free_form_device')
    out = {}
    for name, (n, d, hidden, layers, scale, temperature, offset, seed, _) in MODELS.items():
        torch.manual_seed(seed)
        enc = EGNN(n, d, hidden=hidden, layers=layers, distance_scale=scale, coord_gain=1.0).double()
        with torch.no_grad():
            enc.h0.normal_(0.0, 0.5)
        out[name] = str(folder / f'{name}.safetensors')
        export_free_form(enc, out[name], temperature=temperature, energy_offset=offset)
    return out


def _copies(name):
    """The copies' particle lists: copy c holds particles c, c + k, c + 2k, ... (k copies, so
    the copies interleave), each in a permuted order; particle n k belongs to none."""
    n, copies = MODELS[name][0], MODELS[name][-1]
    rng = np.random.default_rng(17)
    return [[int(p) for p in rng.permutation(range(c, n * copies, copies))] for c in range(copies)]


def _system(sf, path, name):
    n, copies = MODELS[name][0], MODELS[name][-1]
    system = openmm.System()
    for _ in range(n * copies + 1):
        system.addParticle(1.0)
    force = sf.SmoothFlowForce(path)
    for copy in _copies(name):
        force.addMolecule(copy)
    system.addForce(force)
    return system


def _positions(name, seed):
    """Each copy a cluster of the model's size (pair distances of order its distance scale); z
    random too (a d = 2 model must ignore it).  The copies overlap: they do not interact."""
    n, copies, scale = MODELS[name][0], MODELS[name][-1], MODELS[name][4]
    return 0.6 * scale * np.random.default_rng(seed).standard_normal((n * copies + 1, 3))


def _context(system, platform='Reference', precision=None, step=0.001):
    platformObject = openmm.Platform.getPlatformByName(platform)
    properties = {'Precision': precision} if precision else {}
    return openmm.Context(system, openmm.VerletIntegrator(step), platformObject, properties)


def _evaluate(context, x):
    context.setPositions(x)
    state = context.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy().value_in_unit(KJ), np.asarray(state.getForces(asNumpy=True).value_in_unit(KJ_NM))


def relative_errors(reference, found):
    """(energy error / max(1, |E|), largest force error / max(1, largest force component))."""
    (er, fr), (e, f) = reference, found
    return abs(e - er) / max(1.0, abs(er)), np.abs(f - fr).max() / max(1.0, np.abs(fr).max())


@pytest.mark.parametrize('case', CASES, indirect=True)
@pytest.mark.parametrize('name', sorted(MODELS))
def test_energy_and_forces_match_reference(sf, models, case, name):
    platform, precision = case
    system = _system(sf, models[name], name)
    reference, device = _context(system), _context(system, platform, precision)
    rtolEnergy, rtolForce = TOLERANCE[precision]
    d = MODELS[name][1]
    for seed in (1, 2, 3):
        x = _positions(name, seed)
        if precision != 'double':  # OpenMM holds positions in float: Reference sees the same ones
            x = x.astype(np.float32).astype(np.float64)
        expected, found = _evaluate(reference, x), _evaluate(device, x)
        assert np.abs(expected[1]).max() > 1e-2  # forces that are not all but vanishing
        errorEnergy, errorForce = relative_errors(expected, found)
        assert errorEnergy <= rtolEnergy, (name, case, seed, found[0], expected[0], errorEnergy)
        assert errorForce <= rtolForce, (name, case, seed, errorForce)
        assert np.all(found[1][-1] == 0.0)  # the particle in no copy
        if d == 2:
            assert np.all(found[1][:, 2] == 0.0)  # z is not read


@pytest.mark.parametrize('case', _double_cases(), indirect=True)
def test_nan_position_gives_the_reference_message(sf, models, case):
    platform, precision = case
    system = _system(sf, models['dw4'], 'dw4')
    x = _positions('dw4', 4)
    bad = x.copy()
    bad[_copies('dw4')[5][2], 1] = np.nan
    messages = []
    for context in (_context(system), _context(system, platform, precision)):
        context.setPositions(bad)
        with pytest.raises(openmm.OpenMMException) as info:
            context.getState(getEnergy=True)
        messages.append(str(info.value))
        # the Context goes on once the positions are fixed
        assert math.isfinite(_evaluate(context, x)[0])
    assert 'not finite' in messages[0] or 'nan' in messages[0], messages[0]
    assert messages[1] == messages[0]


@pytest.mark.parametrize('case', _double_cases(), indirect=True)
def test_velocity_verlet_conserves_energy(sf, models, case):
    """200 velocity-Verlet steps of one LJ13-like copy (mass 1, kT = 1: reduced units) at dt =
    0.002 on the device in double: the total energy's largest excursion stays below 1e-4 kJ/mol
    while the potential energy moves by more than 0.1 kJ/mol, and the trajectory follows the
    Reference platform's."""
    platform, precision = case
    n = MODELS['lj13'][0]
    system = openmm.System()
    for _ in range(n):
        system.addParticle(1.0)
    system.addForce(sf.SmoothFlowForce(models['lj13']))
    x = 0.6 * MODELS['lj13'][4] * np.random.default_rng(12).standard_normal((n, 3))
    runs = []
    for context in (_context(system, step=0.002), _context(system, platform, precision, step=0.002)):
        context.setPositions(x)
        context.setVelocitiesToTemperature(REDUCED_T, 5)
        total, potential = [], []
        for _ in range(200):
            context.getIntegrator().step(1)
            state = context.getState(getEnergy=True)
            u = state.getPotentialEnergy().value_in_unit(KJ)
            total.append(u + state.getKineticEnergy().value_in_unit(KJ))
            potential.append(u)
        runs.append((np.array(total), np.array(potential)))
    (_, referencePotential), (total, potential) = runs
    assert np.ptp(potential) > 0.1
    assert np.abs(total - total[0]).max() < 1e-4
    np.testing.assert_allclose(potential, referencePotential, rtol=0, atol=1e-6)


@pytest.mark.parametrize('case', _double_cases(), indirect=True)
def test_a_model_too_large_for_the_device_is_refused(sf, tmp_path, case):
    """100 particles in 3 dimensions, hidden width 64: the C core takes it (its limits,
    docs/model-format.md section 9.4), but one copy's device workspace is 281 MiB in double,
    beyond the kernel's 256 MiB."""
    platform, precision = case
    torch.manual_seed(0)
    path = str(tmp_path / 'large.safetensors')
    export_free_form(EGNN(100, 3, hidden=64, layers=1, distance_scale=1.0).double(), path, temperature=300.0)
    system = openmm.System()
    for _ in range(100):
        system.addParticle(1.0)
    system.addForce(sf.SmoothFlowForce(path))
    with pytest.raises(openmm.OpenMMException, match=r"free-form model \(100 particles in 3 dimensions, hidden width "
                                                     r"64, 1 layers\) needs 28\d\.\d+ MiB of device workspace per copy "
                                                     rf"evaluated at once, more than the {platform} kernel's limit of "
                                                     r"256 MiB: create the Context on the Reference or CPU platform, "
                                                     r"or in single or mixed precision"):
        _context(system, platform, precision)
