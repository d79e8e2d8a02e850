"""One test body for every platform that runs the SmoothFlow kernel off the Reference platform:
OpenCL and CUDA (the common kernels of platforms/common) in each of their precisions, and the CPU
platform (platforms/cpu, the core in double), each case against the Reference platform.

Checked per case: random models of every transform kind in both layer directions and the shipped
alanine-dipeptide flows, 1, 7 and 300 molecules (300 in double, and in mixed for the shipped smooth
and spline flows), periodic and not; the wall zone and its count; forces against finite
differences of the case's own energy; a serialized System; float32 weights; atoms reordered by
OpenMM under a periodic nonbonded force; bad input (NaN positions, a bond outside the support)
reported with the Reference platform's message, which names the force, the molecule and the
System particles, and the Context recovering; a failure in a forces-only evaluation reported by
the next energy evaluation; and, on each GPU platform in mixed precision, NVE energy conservation
against Reference's.

Cases: CASES is built at import from PLATFORMS and AXES.  A platform is in when OpenMM has it
and its SmoothFlow kernel library loads (SMOOTHFLOW_<PLATFORM>_PLUGIN, e.g.
SMOOTHFLOW_OPENCL_PLUGIN or SMOOTHFLOW_CUDA_PLUGIN as ctest sets them, else the package's
folder, else the build tree's lib/).  Otherwise its cases are skipped with the reason, except
that with SMOOTHFLOW_REQUIRE_PLUGIN=1 a missing OpenCL is a failure (CI runs OpenCL on PoCL).

Tolerances (docs/gpu-platforms.md), relative to max(1, |E|) and to max(1, the largest force
component): double 1e-9; single and mixed, whose flow runs in float, 5e-5 on the energy and 5e-4
on the forces, against Reference at the positions rounded to float, plus a per-molecule allowance
for ill-conditioned configurations (_compare).

Reference results are computed once per System and positions and shared by the cases; PoCL
caches compiled programs on disk, and Systems of one model shape share a program."""
import contextlib
import itertools
import os
import re
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import unit

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / 'models' / 'alanine_dipeptide'
KJ, KJ_NM = unit.kilojoule_per_mole, unit.kilojoule_per_mole / unit.nanometer
TOLERANCE = {'double': (1e-9, 1e-9), 'mixed': (5e-5, 5e-4), 'single': (5e-5, 5e-4)}

# ------------------------------------------------------------------------------- the cases ---
# The platforms under test.  GPU platforms have OpenMM's three precisions; OpenMM's CPU platform
# has no Precision property, and its SmoothFlow kernel runs the core in double.
GPU_PLATFORMS = ('OpenCL', 'CUDA')
PLATFORMS = GPU_PLATFORMS + ('CPU',)
PRECISIONS = {'OpenCL': ('double', 'mixed', 'single'), 'CUDA': ('double', 'mixed', 'single'), 'CPU': ('double',)}
# Platforms whose absence fails the tests instead of skipping them.
REQUIRED = ('OpenCL',) if os.environ.get('SMOOTHFLOW_REQUIRE_PLUGIN') == '1' else ()

# The axes a case varies over besides its platform: (name, the values a platform takes, how a
# value reaches the Context: 'property:<name>', a platform property set where the platform has
# it, or 'env:<name>', an environment variable set while the Context is created).  One more axis
# is one more line, e.g.
#   ('path', lambda p: ('auto', 'fused', 'batched') if p in GPU_PLATFORMS else ('auto',), 'env:SMOOTHFLOW_DEVICE_PATH'),
AXES = (
    ('precision', lambda platform: PRECISIONS[platform], 'property:Precision'),
)


class Case:
    """One platform with one value on every axis: case.platform, case.precision, ..."""

    def __init__(self, platform, values):
        self.platform, self.values = platform, dict(values)

    def __getattr__(self, name):
        try:
            return self.__dict__['values'][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def gpu(self):
        return self.platform in GPU_PLATFORMS

    def __repr__(self):
        return '-'.join([self.platform, *map(str, self.values.values())])


def _plugin_path(platform):
    """The platform's SmoothFlow kernel library, or None."""
    name = f'libSmoothFlowPlugin{platform}.so'
    variable = f'SMOOTHFLOW_{platform.upper()}_PLUGIN'
    if os.environ.get(variable):
        return os.environ[variable]  # named explicitly: used even if missing, so that is reported
    try:
        import openmmsmoothflow
    except ImportError:
        return None
    for path in (os.path.join(openmmsmoothflow.pluginDirectory(), name),
                 os.path.join(openmmsmoothflow.pluginDirectory(), '..', '..', 'lib', name)):
        if os.path.exists(path):
            return os.path.abspath(path)
    return None


def _unavailable(platform):
    """Why the platform cannot be tested here, or None when it can (its kernel library loaded)."""
    try:
        import openmmsmoothflow  # noqa: F401  (loads the Reference kernel, and those it finds)
    except ImportError as e:
        return f'openmmsmoothflow is not importable ({e})'
    try:
        openmm.Platform.getPlatformByName(platform)
    except Exception:
        failures = [f for f in openmm.Platform.getPluginLoadFailures() if f'/libOpenMM{platform}.so:' in f]
        return f'OpenMM has no {platform} platform here' + (f' ({"; ".join(failures)})' if failures else '')
    path = _plugin_path(platform)
    variable = f'SMOOTHFLOW_{platform.upper()}_PLUGIN'
    if path is None:
        return f'no SmoothFlow {platform} kernel library (libSmoothFlowPlugin{platform}.so; set {variable})'
    if not os.path.exists(path):
        return f'{variable}={path} does not exist'
    try:
        openmm.Platform.loadPluginLibrary(path)
    except Exception as e:
        return f'the SmoothFlow {platform} kernel library {path} does not load: {e}'
    if not openmm.Platform.getPlatformByName(platform).supportsKernels(['CalcSmoothFlowForce']):
        return f'{path} did not register CalcSmoothFlowForce on the {platform} platform'
    return None


def _build_cases():
    cases = []
    for platform in PLATFORMS:
        why = _unavailable(platform)
        axes = [[(name, value) for value in values(platform)] for name, values, _ in AXES]
        for combination in itertools.product(*axes):
            case = Case(platform, combination)
            case.unavailable = why
            # A required platform's cases stay in and fail in the `ready` fixture.
            marks = pytest.mark.skip(reason=why) if why and platform not in REQUIRED else ()
            cases.append(pytest.param(case, id=repr(case), marks=marks))
    return cases


CASES = _build_cases()


def cases(where=lambda case: True):
    """The cases for which where(case) holds."""
    return [param for param in CASES if where(param.values[0])]


_probed = {}


@pytest.fixture
def ready(sf, case):
    """The case's platform, loaded and with a usable device (one Context made once per
    platform); a platform without a device is skipped, or fails if it is required."""
    if case.unavailable:
        raise AssertionError(f'{case.platform} is required here (SMOOTHFLOW_REQUIRE_PLUGIN=1): {case.unavailable}')
    if case.platform not in _probed:
        system = openmm.System()
        system.addParticle(1.0)
        try:
            openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(case.platform))
            _probed[case.platform] = None
        except Exception as e:
            _probed[case.platform] = f'the {case.platform} platform has no usable device: {e}'
    if _probed[case.platform]:
        if case.platform in REQUIRED:
            raise AssertionError(_probed[case.platform])
        pytest.skip(_probed[case.platform])
    return case


# ----------------------------------------------------------------------------- the helpers ---
@contextlib.contextmanager
def _environment(variables):
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _context(system, case=None, step=0.001):
    """A Context of the case's platform with the case's settings, or of Reference (case None)."""
    platform = openmm.Platform.getPlatformByName(case.platform if case else 'Reference')
    properties, variables = {}, {}
    for name, _, target in (AXES if case else ()):
        kind, key = target.split(':')
        if kind == 'env':
            variables[key] = str(case.values[name])
        elif key in platform.getPropertyNames():
            properties[key] = str(case.values[name])
    with _environment(variables):
        return openmm.Context(system, openmm.VerletIntegrator(step), platform, properties)


def _system(sf, path, numMolecules, numAtoms, box=None):
    """(System, its SmoothFlowForce): numMolecules copies of the model on consecutive particles."""
    system = openmm.System()
    for _ in range(numMolecules * numAtoms):
        system.addParticle(12.0)
    force = sf.SmoothFlowForce(str(path))
    for m in range(numMolecules):
        force.addMolecule(list(range(m * numAtoms, (m + 1) * numAtoms)))
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*box)
        force.setUsesPeriodicBoundaryConditions(True)
    system.addForce(force)
    return system, force


def _evaluate(context, positions, groups=-1):
    context.setPositions(np.asarray(positions).reshape(-1, 3))
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    return state.getPotentialEnergy().value_in_unit(KJ), np.asarray(state.getForces(asNumpy=True).value_in_unit(KJ_NM))


_references = {}


def _reference(key, system, positions):
    """Reference's energy and forces, once per key (the System and positions it stands for)."""
    if key not in _references:
        _references[key] = _evaluate(_context(system), positions)
    return _references[key]


def _assert_close(reference, found, rtolEnergy, rtolForce, what=''):
    (er, fr), (e, f) = reference, found
    assert abs(e - er) <= rtolEnergy * max(1.0, abs(er)), (what, e, er, abs(e - er) / max(1.0, abs(er)))
    error = np.abs(f - fr).max() / max(1.0, np.abs(fr).max())
    assert error <= rtolForce, (what, error)


def _compare(key, system, positions, case):
    """The case's energy and forces for positions (molecules, atoms, 3) against Reference's.

    In single and mixed precision OpenMM holds positions in float, so Reference evaluates them
    rounded to float.  The flow's float arithmetic is then off by a rounding of about one unit
    in the last place of every difference of positions, and some configurations are
    ill-conditioned (the steep random models, atoms spread over periodic images): there a
    rounding moves even Reference's forces by more than the float tolerance.  So in float each
    molecule is allowed, beyond the tolerance, ten times the change of Reference's energy and
    forces when every atom's position relative to the molecule's first atom is scaled by a
    random 1 +- 2^-23 (the larger change of two such perturbations).  Measured on PoCL: that
    allowance is below a fifth of the tolerance for most molecules, and above it for the few
    ill-conditioned ones (e.g. 1e3 kJ/mol/nm for one periodic molecule of a random model, whose
    float forces are 4e-3 of the largest component off)."""
    found = _evaluate(_context(system, case), positions)
    if case.precision == 'double':
        _assert_close(_reference(key, system, positions), found, *TOLERANCE['double'], what=(key, case))
        return
    rounded = positions.astype(np.float32).astype(np.float64)
    (er, fr), (e, f) = _reference(key + ('float',), system, rounded), found
    slackEnergy, slackForces = _float_sensitivity(key, system, rounded)
    rtolEnergy, rtolForce = TOLERANCE[case.precision]
    assert abs(e - er) <= rtolEnergy * max(1.0, abs(er)) + 10 * slackEnergy, (key, case, e, er, slackEnergy)
    errors = np.abs(f - fr).reshape(len(positions), -1).max(axis=1)
    allowed = rtolForce * max(1.0, np.abs(fr).max()) + 10 * slackForces
    worst = np.argmax(errors / allowed)
    assert errors[worst] <= allowed[worst], (key, case, 'molecule', worst, errors[worst], allowed[worst])


def _float_sensitivity(key, system, rounded):
    """(energy, per-molecule largest force component): the larger change of Reference's results
    under two random perturbations of the positions (molecules, atoms, 3), each atom's position
    relative to the molecule's first atom scaled by 1 + u, |u| < 2^-23."""
    if key + ('sensitivity',) not in _references:
        er, fr = _reference(key + ('float',), system, rounded)
        energy, forces = 0.0, np.zeros(len(rounded))
        for seed in (1, 2):
            shift = np.random.default_rng(seed).uniform(-2.0**-23, 2.0**-23, size=rounded.shape)
            moved = rounded + (rounded - rounded[:, :1]) * shift
            e, f = _evaluate(_context(system), moved)
            energy = max(energy, abs(e - er))
            forces = np.maximum(forces, np.abs(f - fr).reshape(len(rounded), -1).max(axis=1))
        _references[key + ('sensitivity',)] = energy, forces
    return _references[key + ('sensitivity',)]


def _box(size):
    return [openmm.Vec3(size, 0, 0), openmm.Vec3(0, size, 0), openmm.Vec3(0, 0, size)]


_models = {}


@pytest.fixture(scope='module')
def random_model(sftorch, tmp_path_factory):
    """random_model(transform, directions, seed=3, prior=None) -> (flow, path), exported once."""
    folder = tmp_path_factory.mktemp('models')

    def get(transform, directions, seed=3, prior=None):
        key = (transform, directions, seed, prior)
        if key not in _models:
            flow = sftorch.testing.random_flow(n_atoms=7, n_layers=4, n_components=3, hidden=(12,),
                                               directions=directions, transform=transform, seed=seed, prior=prior,
                                               support={'policy': 'wall', 'margin': 0.02, 'wall_constant': 500.0})
            path = folder / f'{transform}-{directions}-{seed}-{prior}.safetensors'
            sftorch.export_model(flow, path)
            _models[key] = flow, path
        return _models[key]

    return get


def _molecule_counts(case, many=True):
    # 300 molecules in double and in one float precision (mixed, the GPU's usual one).
    return (1, 7, 300) if case.precision == 'double' or (many and case.precision == 'mixed') else (1, 7)


def _shipped_positions(n):
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions
    return x[np.arange(n) % len(x)]


# ------------------------------------------------------------------------------- the tests ---
@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('transform', ['smooth', 'spline', 'affine'])
@pytest.mark.parametrize('directions', ['generative', 'density'])
def test_random_models_match_reference(sf, sftorch, random_model, ready, case, transform, directions):
    flow, path = random_model(transform, directions)
    x = sftorch.testing.random_positions(flow, 300, seed=5, margin=0.05).numpy()
    # 300 in double only, for time (the shipped flows cover 300 molecules in mixed).
    for numMolecules in _molecule_counts(case, many=False):
        _compare((path, numMolecules), _system(sf, path, numMolecules, 7)[0], x[:numMolecules], case)
    # Periodic: every molecule's atoms spread over images of a 1.1 nm box.
    periodic = x[:7] + np.random.default_rng(1).integers(-2, 3, size=(7, 7, 3)) * 1.1
    _compare((path, 'periodic'), _system(sf, path, 7, 7, box=_box(1.1))[0], periodic, case)


@pytest.mark.parametrize('case', cases(lambda case: case.gpu))
def test_affine_input_that_rounds_to_one_in_float(sf, sftorch, random_model, ready, case):
    """Molecule 152 of the density-direction affine model's random positions: a state between
    affine layers whose logit (about 20) is beyond float's sigmoid range rounds to exactly 1 in
    float, on the affine support's boundary, where the double core has it inside. Clamping it
    would move the energy by about 1 kJ/mol (tried): the float kernel refuses instead, with a
    message that says why and to use double precision; in double it matches Reference."""
    flow, path = random_model('affine', 'density')
    x = sftorch.testing.random_positions(flow, 300, seed=5, margin=0.05).numpy()[152:153]
    system = _system(sf, path, 1, 7)[0]
    if case.precision == 'double':
        _compare((path, 'molecule 152'), system, x, case)
        return
    with pytest.raises(openmm.OpenMMException) as error:
        _evaluate(_context(system, case), x)
    assert "affine layer's input that rounds to exactly 0 or 1 in float" in str(error.value)
    assert 'Precision=double' in str(error.value) and 'System particles 0, 1, 2, 3, 4, 5, 6' in str(error.value)


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('kind', ['smooth', 'spline', 'affine'])
def test_shipped_flows_match_reference(sf, ready, case, kind):
    path = SHIPPED / f'{kind}.safetensors'
    x = _shipped_positions(300)
    # The affine flow's 300 in double only: its test configuration 159 is ill-conditioned
    # (Reference's forces move by 30 kJ/mol/nm, 1 %, when the positions move by 6e-8 relative;
    # the float kernel is 60 kJ/mol/nm off there, beyond what _compare allows).
    for numMolecules in _molecule_counts(case, many=kind != 'affine'):
        _compare((path, numMolecules), _system(sf, path, numMolecules, 22)[0], x[:numMolecules], case)
    # Periodic: every molecule's atoms spread over images of a 3 nm box (minimum image).
    shifted = x[:7] + np.random.default_rng(2).integers(-1, 2, size=(7, 22, 3)) * 3.0
    _compare((path, 'periodic'), _system(sf, path, 7, 22, box=_box(3.0))[0], shifted, case)


@pytest.mark.parametrize('case', CASES)
def test_truncated_normal_prior_and_wall_zone(sf, sftorch, random_model, ready, case):
    """Positions inside the wall zone (u within 2 margins of the support's edge), with a
    truncated-normal prior: the same energies, forces and wall counts as Reference."""
    flow, path = random_model('smooth', 'mixed', seed=8, prior='truncated_normal')
    x = sftorch.testing.random_positions(flow, 7, seed=4, margin=0.005).numpy()
    system, force = _system(sf, path, 7, 7)
    reference, context = _context(system), _context(system, case)
    _assert_close(_evaluate(reference, x), _evaluate(context, x), *TOLERANCE[case.precision])
    assert force.getWallCount(reference) > 0, 'the positions do not reach the wall zone: the test would not test it'
    assert force.getWallCount(context) == force.getWallCount(reference)


@pytest.mark.parametrize('case', CASES)
def test_von_mises_torsion_prior(sf, sftorch, ready, case, tmp_path):
    """Von Mises torsions in the prior (docs/model-format.md 5.4), kappa 5 to 100 (an improper's
    is tens): the same energies and forces as Reference, and the torsion terms are really there
    (the same flow with uniform torsions differs by many kT)."""
    import torch
    flow = sftorch.testing.random_flow(n_atoms=7, n_layers=4, n_components=3, hidden=(12,), directions='mixed',
                                       seed=8, prior='von_mises')
    flow.prior['torsion_kappa'] = [5.0, 20.0, 50.0, 100.0]
    flow.torsion_kappa.copy_(torch.tensor(flow.prior['torsion_kappa']))
    path, plain = tmp_path / 'von_mises.safetensors', tmp_path / 'uniform_torsions.safetensors'
    sftorch.export_model(flow, path)
    flow.prior = {k: v for k, v in flow.prior.items() if not k.startswith('torsion_')}
    sftorch.export_model(flow, plain)
    x = sftorch.testing.random_positions(flow, 7, seed=4).numpy()
    system, _ = _system(sf, path, 7, 7)
    e_ref = _evaluate(_context(system), x)
    _assert_close(e_ref, _evaluate(_context(system, case), x), *TOLERANCE[case.precision])
    e_plain = _evaluate(_context(_system(sf, plain, 7, 7)[0]), x)
    assert abs(e_ref[0] - e_plain[0]) > 100.0


@pytest.mark.parametrize('case', CASES)
def test_wall_edge_forces(sf, sftorch, ready, case, tmp_path):
    """The wall's linear term (docs/model-format.md 5.2) on the device: positions in the wall
    zone of both faces, a model with edge forces, the same energies and forces as Reference,
    which differ from the harmonic wall's (so a kernel that dropped the term would fail)."""
    n = 7
    interval = 2 * n - 3
    support = {'policy': 'wall', 'margin': 0.02, 'wall_constant': 500.0}
    flow = sftorch.testing.random_flow(n_atoms=n, n_layers=4, n_components=3, hidden=(12,), directions='mixed',
                                       seed=11, support=support)
    plain = tmp_path / 'plain.safetensors'
    sftorch.export_model(flow, plain)
    flow.set_support(**support, edge_force_lower=[100.0 + 20 * d for d in range(interval)],
                     edge_force_upper=[300.0 - 10 * d for d in range(interval)])
    path = tmp_path / 'edges.safetensors'
    sftorch.export_model(flow, path)
    x = sftorch.testing.random_positions(flow, 7, seed=4, margin=0.005).numpy()
    system, force = _system(sf, path, 7, n)
    reference, context = _context(system), _context(system, case)
    found = _evaluate(reference, x)
    _assert_close(found, _evaluate(context, x), *TOLERANCE[case.precision])
    assert force.getWallCount(reference) > 0, 'the positions do not reach the wall zone: the test would not test it'
    without = _evaluate(_context(_system(sf, plain, 7, n)[0]), x)
    assert found[0] - without[0] > 1e-3, (found[0], without[0])


@pytest.mark.parametrize('case', CASES)
def test_wall_angle_margin(sf, sftorch, ready, case, tmp_path):
    """The angles' own margin (support.angle_margin, docs/model-format.md 5.2) on the device:
    angles between 2 margin and 2 angle_margin of their faces, the same energies, forces and
    wall count as Reference, which differ from those of the bonds' margin (so a kernel that
    used margin for every dimension would fail)."""
    n = 7
    support = {'policy': 'wall', 'margin': 0.02, 'wall_constant': 500.0}
    flow = sftorch.testing.random_flow(n_atoms=n, n_layers=4, n_components=3, hidden=(12,), directions='mixed',
                                       seed=12, support=support)
    plain = tmp_path / 'plain.safetensors'
    sftorch.export_model(flow, plain)
    flow.set_support(**support, angle_margin=0.12)
    path = tmp_path / 'angle_margin.safetensors'
    sftorch.export_model(flow, path)
    x = sftorch.testing.random_positions(flow, 7, seed=5, margin=0.1).numpy()   # angles in (0.15, 0.85)
    system, force = _system(sf, path, 7, n)
    reference, context = _context(system), _context(system, case)
    found = _evaluate(reference, x)
    _assert_close(found, _evaluate(context, x), *TOLERANCE[case.precision])
    assert force.getWallCount(context) == force.getWallCount(reference) > 0
    plainSystem, plainForce = _system(sf, plain, 7, n)
    plainContext = _context(plainSystem)
    without = _evaluate(plainContext, x)
    assert plainForce.getWallCount(plainContext) == 0, 'the bonds\' margin must not reach these angles'
    assert abs(found[0] - without[0]) > 1e-3, (found[0], without[0])


@pytest.mark.parametrize('case', CASES)
def test_forces_are_the_energy_gradient(sf, ready, case):
    """Five-point central differences of the case's energy against its forces, on the shipped
    smooth flow (C-infinity; the random test models are too steep for differences, and the
    spline is only C1).  Measured on PoCL: 2.6e-7 (double, h = 1e-4 nm) and 2.2e-3 (mixed,
    h = 1e-3 nm, where the float energy's rounding dominates) of the largest force component."""
    x = _shipped_positions(1)[0]
    context = _context(_system(sf, SHIPPED / 'smooth.safetensors', 1, 22)[0], case)
    _, forces = _evaluate(context, x)
    h = 1e-4 if case.precision == 'double' else 1e-3

    def energy(atom, c, shift):
        moved = x.copy()
        moved[atom, c] += shift
        return _evaluate(context, moved)[0]

    worst = 0.0
    for atom in range(22):
        for c in range(3):
            derivative = (8 * (energy(atom, c, h) - energy(atom, c, -h))
                          - (energy(atom, c, 2 * h) - energy(atom, c, -2 * h))) / (12 * h)
            worst = max(worst, abs(-derivative - forces[atom, c]))
    scale = max(1.0, np.abs(forces).max())
    assert worst <= (1e-6 if case.precision == 'double' else 1e-2) * scale, (worst, scale)


@pytest.mark.parametrize('case', CASES)
def test_float32_weights_match_reference(sf, ready, case):
    """SmoothFlowForce.setWeightPrecision(WeightsFloat32): the case applies the same rounded
    weights as the core.  Rounding moves the shipped flow's energy by only ~1e-10 relative, below
    the double tolerance, so in double the case must match Reference's rounded-weight results 100
    times closer than those differ from the stored weights' (a kernel ignoring the option fails);
    in float, where the weights are rounded anyway, to the float tolerance."""
    x = _shipped_positions(7)
    system, _ = _system(sf, SHIPPED / 'smooth.safetensors', 7, 22)
    stored = _reference((SHIPPED / 'smooth.safetensors', 7), system, x)
    system, force = _system(sf, SHIPPED / 'smooth.safetensors', 7, 22)
    force.setWeightPrecision(sf.SmoothFlowForce.WeightsFloat32)
    rounded = _evaluate(_context(system), x)
    found = _evaluate(_context(system, case), x)
    if case.precision == 'double':
        assert abs(found[0] - rounded[0]) <= 0.01 * abs(rounded[0] - stored[0])
        assert np.abs(found[1] - rounded[1]).max() <= 0.01 * np.abs(rounded[1] - stored[1]).max()
    else:
        _assert_close(rounded, found, *TOLERANCE[case.precision])


@pytest.mark.parametrize('case', CASES)
def test_serialized_system_gives_the_same_results(sf, ready, case):
    """A periodic System in force group 3, through XML: its copy gives Reference's results for
    the original (group 3 only, molecules spread over images, so a copy that lost the group or
    the periodic flag fails), and the original's results on the same platform."""
    x = _shipped_positions(7) + (np.arange(7)[:, None, None] % 3 - 1) * np.array([3.0, 0.0, -3.0])
    system, force = _system(sf, SHIPPED / 'smooth.safetensors', 7, 22, box=_box(3.0))
    force.setForceGroup(3)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    found = _evaluate(_context(copy, case), x, groups={3})
    # In float, Reference at the positions the case holds (rounded to float; see _compare).
    rounded = x if case.precision == 'double' else x.astype(np.float32).astype(np.float64)
    _assert_close(_evaluate(_context(system), rounded, groups={3}), found, *TOLERANCE[case.precision])
    _assert_close(_evaluate(_context(system, case), x, groups={3}), found, 1e-12, 1e-12)


@pytest.mark.parametrize('case', CASES)
def test_reordered_atoms_in_a_periodic_nonbonded_system(sf, ready, case):
    """An ML/MM-like System: 7 flow molecules among argon-like particles under a periodic
    cutoff force, for which OpenMM reorders its atom arrays; after a few steps the flow's
    energy and forces (its own force group) still match Reference at the same positions."""
    x = _shipped_positions(7)
    rng = np.random.default_rng(3)
    size = 4.0
    molecules = x - x.mean(axis=1, keepdims=True) + rng.uniform(0.5, size - 0.5, size=(7, 1, 3))
    solvent = rng.uniform(0, size, size=(200, 3))
    system, _ = _system(sf, SHIPPED / 'smooth.safetensors', 7, 22, box=_box(size))
    for _ in range(200):
        system.addParticle(40.0)
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nonbonded.setCutoffDistance(1.0)
    for _ in range(system.getNumParticles()):
        nonbonded.addParticle(0.0, 0.1, 0.001)
    nonbonded.setForceGroup(1)
    system.addForce(nonbonded)
    context = _context(system, case, step=0.0002)
    context.setPositions(np.concatenate([molecules.reshape(-1, 3), solvent]))
    context.getIntegrator().step(20)
    moved = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    found = context.getState(getEnergy=True, getForces=True, groups={0})
    _assert_close(_evaluate(_context(system), moved, groups={0}),
                  (found.getPotentialEnergy().value_in_unit(KJ), found.getForces(asNumpy=True).value_in_unit(KJ_NM)),
                  *TOLERANCE[case.precision])


def _message(context, positions):
    with pytest.raises(openmm.OpenMMException) as raised:
        _evaluate(context, positions)
    return str(raised.value)


@pytest.mark.parametrize('case', cases(lambda case: case.gpu))
def test_nan_positions_give_the_reference_message(sf, ready, case):
    """A NaN position of a later molecule: the GPU kernel's message is the Reference
    platform's (the C core evaluates the failing molecule again), naming the force, the molecule
    and the System particle; the Context then recovers.  (OpenMM's CPU platform rejects a NaN
    coordinate itself, before any force runs.)"""
    x = _shipped_positions(3)
    system, _ = _system(sf, SHIPPED / 'smooth.safetensors', 3, 22)
    context = _context(system, case)
    good = _evaluate(context, x)
    bad = x.copy()
    bad[2, 5, 1] = np.nan
    message = _message(context, bad)
    assert re.search(r'SmoothFlowForce: evaluation failed: molecule 2: position of model atom 5 is not finite'
                     r'.*\[System particle 49\]', message), message
    assert message == _message(_context(system), bad)
    again = _evaluate(context, x)
    assert again[0] == good[0] and np.array_equal(again[1], good[1])


@pytest.mark.parametrize('case', CASES)
def test_outside_the_support_gives_the_reference_message(sf, sftorch, tmp_path, ready, case):
    """Under the error policy, a bond of the second molecule five times its length: the case's
    message is the Reference platform's (it names the bond and its System particles), and good
    positions evaluate again.  Under the shipped flow's wall policy a stretched bond is finite
    and matches Reference."""
    flow = sftorch.testing.random_flow(n_atoms=7, n_layers=2, seed=4)  # the error policy
    path = tmp_path / 'error.safetensors'
    sftorch.export_model(flow, path)
    x = sftorch.testing.random_positions(flow, 2, seed=6).numpy()
    a, j = int(flow.zmatrix[1][0]), int(flow.zmatrix[1][1])
    bad = x.copy()
    bad[1, a] = x[1, j] + 5.0 * (x[1, a] - x[1, j])
    system, _ = _system(sf, path, 2, 7)
    context = _context(system, case)
    message = _message(context, bad)
    assert re.search(r'SmoothFlowForce: evaluation failed: molecule 1: bond 0 .*outside the flow\'s support'
                     rf'.*\[System particles ({a + 7}, {j + 7}|{j + 7}, {a + 7})\]', message), message
    assert message == _message(_context(system), bad)
    _assert_close(_evaluate(_context(system), x), _evaluate(context, x), *TOLERANCE[case.precision])

    stretched = _shipped_positions(1).copy()
    stretched[0, 1] += np.array([0.08, 0.0, 0.0])
    system, _ = _system(sf, SHIPPED / 'smooth.safetensors', 1, 22)
    _compare(('stretched',), system, stretched, case)


@pytest.mark.parametrize('case', CASES)
def test_forces_only_failure_is_reported_by_the_next_energy(sf, ready, case):
    """A GPU step that asks for forces only reads nothing back from the device: a failure there
    is kept and reported by the next evaluation that asks for the energy, then cleared.  The CPU
    platform evaluates on the host and reports it at once, with Reference's message."""
    x = _shipped_positions(2)
    system, _ = _system(sf, SHIPPED / 'smooth.safetensors', 2, 22)
    context = _context(system, case)
    good = _evaluate(context, x)
    bad = x.copy()
    bad[1, 0, 0] = np.inf
    context.setPositions(bad.reshape(-1, 3))
    if case.gpu:
        context.getState(getForces=True)
        context.setPositions(x.reshape(-1, 3))
        with pytest.raises(openmm.OpenMMException,
                           match=rf'molecule 1: the {case.precision}-precision device kernel found a position '
                                 r'that is not finite in this evaluation or a forces-only one'
                                 r'.*\[System particles 22, 23, .*, 43\]'):
            context.getState(getEnergy=True)
    else:
        with pytest.raises(openmm.OpenMMException, match=r'molecule 1: position of model atom 0 is not finite'):
            context.getState(getForces=True)
    again = _evaluate(context, x)
    assert again[0] == good[0] and np.array_equal(again[1], good[1])


_nve_reference = {}


def _fluctuation_ratio(system, case, dt, start, velocities):
    """std(E_total) / std(E_kinetic) over 0.5 ps of velocity Verlet, sampled every 5 steps."""
    context = _context(system, case, step=dt * 1e-3)
    context.setPositions(start)
    context.setVelocities(velocities)
    rows = []
    for i in range(0, int(round(500 / dt)) + 1, 5):
        if i:
            context.getIntegrator().step(5)
        state = context.getState(getEnergy=True)
        rows.append((state.getPotentialEnergy().value_in_unit(KJ), state.getKineticEnergy().value_in_unit(KJ)))
    energies = np.array(rows)
    return np.std(energies.sum(axis=1)) / np.std(energies[:, 1])


@pytest.mark.parametrize('case', cases(lambda case: case.gpu and case.precision == 'mixed'))
@pytest.mark.parametrize('dt', [0.5, 1.0])
def test_nve_energy_conservation_in_mixed_precision(sf, ready, case, dt):
    """NVE velocity Verlet with the shipped smooth flow as the only force, 0.5 ps from the same
    positions and velocities: the fluctuation ratio in mixed precision is within 1.2x of the
    Reference platform's (measured on PoCL: 0.94 to 1.01x over several starts at 0.5 and 1 fs)."""
    from alanine_dipeptide import data, energy_conservation as ec
    system = ec.flow_system(ec.MODELS / 'smooth.safetensors')
    start = data.load_reference('obc').test.positions[0]
    if dt not in _nve_reference:
        context = _context(system)
        context.setPositions(start)
        context.setVelocitiesToTemperature(300 * unit.kelvin, 100)
        velocities = context.getState(getVelocities=True).getVelocities()
        _nve_reference[dt] = velocities, _fluctuation_ratio(system, None, dt, start, velocities)
    velocities, reference = _nve_reference[dt]
    ratio = _fluctuation_ratio(system, case, dt, start, velocities)
    assert 0 < ratio <= 1.2 * reference, (ratio, reference)
