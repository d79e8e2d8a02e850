"""The alanine-dipeptide study runs on the pipeline's code (issue 21, part 3) and keeps its own
configuration semantics: its defaults, its ``temperature`` key, ``init_from`` relative to the
repository, its data files and kT. Each test checks the study against something it does not
share with the pipeline: the shipped model files, the study's documented defaults, a data file
written here."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip('torch')
train = pytest.importorskip('alanine_dipeptide.train')
from alanine_dipeptide import data, energy_conservation, forcefield, generate_data, molecule  # noqa: E402
from alanine_dipeptide.zmatrix import ZMATRIX  # noqa: E402
from smoothflow_torch import export_model, load_model  # noqa: E402
from smoothflow_torch.pipeline import model as pipeline_model  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(train.__file__), 'configs')


@pytest.fixture(scope='module')
def frames():
    return data.load_reference('obc').test.positions


def _model(name):
    with open(os.path.join(CONFIGS, f'{name}.json')) as f:
        return json.load(f)['model']


@pytest.mark.parametrize('kind', ['smooth', 'spline', 'affine'])
def test_each_shipped_config_builds_the_shipped_models_architecture(kind, frames):
    """The final stage's config (without init_from, whose run is not shipped) gives the shipped
    model's layers, molecule, temperature, support and transform constants; bond bounds and the
    prior's moments come from the full data set, which is not shipped, so only their form is compared."""
    model = {k: v for k, v in _model(kind).items() if k != 'init_from'}
    built = train.build_flow(model, frames, 0).config()
    shipped = load_model(os.path.join(train.REPO, 'models', 'alanine_dipeptide', f'{kind}.safetensors')).config()
    assert built.keys() == shipped.keys()
    for key in built:
        if key == 'prior':
            assert built[key]['kind'] == shipped[key]['kind'] == 'truncated_normal'
            assert len(built[key]['mean']) == len(shipped[key]['mean']) == 2 * molecule.N_ATOMS - 3
        else:
            assert json.dumps(built[key], sort_keys=True) == json.dumps(shipped[key], sort_keys=True), key


def test_the_studys_defaults_not_the_pipelines(frames):
    """A config that names nothing gets the study's documented defaults (train.py: ic_hierarchy,
    one angle block, a uniform prior, 300 K), which differ from the pipeline's."""
    flow = train.build_flow({'hidden': [8]}, frames, 0)
    config = flow.config()
    assert config['prior'] == 'uniform' and config['temperature'] == 300.0
    assert len(config['layers']) == 2 * 4 + 2 * 1 + 2        # torsion blocks, angle blocks, angles, bonds
    bonds, angles, torsions = train.dims(molecule.N_ATOMS)
    assert config['layers'][8]['transformed'] == bonds and config['layers'][8]['conditioning'] == angles
    assert config['layers'][-1]['conditioning'] == angles + torsions
    pipeline = pipeline_model.build_flow({'hidden': [8]}, ZMATRIX, molecule.atoms_metadata(), 300.0, frames, 0)
    assert pipeline.config()['prior'] != 'uniform' and len(pipeline.config()['layers']) != len(config['layers'])


def test_the_studys_temperature_key_and_unknown_keys(frames):
    flow = train.build_flow({'hidden': [8], 'temperature': 310.0}, frames, 0)
    assert flow.temperature == 310.0 and flow.config()['temperature'] == 310.0
    with pytest.raises(ValueError, match='unknown keys'):
        pipeline_model.model_section({'temperature': 310.0})    # the study's key, not the pipeline's
    with pytest.raises(ValueError, match=r"unknown keys \['n_component'\].*'temperature'"):
        train.build_flow({'n_component': 4}, frames, 0)


def test_init_from_is_relative_to_the_repository(frames, tmp_path):
    start = train.build_flow({'hidden': [8]}, frames, 1)
    with torch.no_grad():
        for p in start.parameters():
            p.add_(0.01)
    export_model(start, tmp_path / 'start.safetensors')
    flow = train.build_flow({'hidden': [8], 'init_from': str(tmp_path / 'start.safetensors')}, frames, 0)
    a, b = start.state_dict(), flow.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    missing = os.path.join('runs', 'no_such_stage', 'model.safetensors')
    with pytest.raises(FileNotFoundError, match=str(train.REPO / missing)):
        train.build_flow({'hidden': [8], 'init_from': missing}, frames, 0)


def _data_file(directory, bias):
    ref = data.load_reference('obc').test
    n = len(ref)
    np.savez(directory / 'obc.npz', positions=ref.positions.astype(np.float32),
             forces=ref.forces.astype(np.float32), energies=ref.energies.astype(np.float32),
             chain=np.zeros(n, np.int16), time_ps=np.arange(n, dtype=np.float32),
             split=(np.arange(n) >= 150).astype(np.uint8), bias=bias.astype(np.float32))
    return ref


def test_the_study_reads_its_data_with_its_temperature(tmp_path):
    bias = -4.0 * np.random.default_rng(2).random(200)
    ref = _data_file(tmp_path, bias)
    test = data.load('obc', 'test', tmp_path)
    v = bias.astype(np.float32).astype(np.float64)
    w = np.exp(v / (0.00831446261815324 * 300.0))      # exp(V/kT) at the study's 300 K, mean 1
    w /= w.mean()
    np.testing.assert_allclose(test.weights, w[150:], rtol=1e-12)
    np.testing.assert_array_equal(test.positions, ref.positions[150:].astype(np.float32))
    assert len(data.load('obc', 'train', tmp_path)) == 150
    with pytest.raises(FileNotFoundError, match='alanine_dipeptide.generate_data'):
        data.load('vacuum', 'train', tmp_path)
    bias[3] = np.nan
    _data_file(tmp_path, bias)
    with pytest.raises(ValueError, match='finite'):
        data.load('obc', 'train', tmp_path)


def test_data_generation_masses_and_populations():
    system = generate_data.prepared_system('obc')
    plain = forcefield.system('obc')
    masses = np.array([system.getParticleMass(i)._value for i in range(molecule.N_ATOMS)])
    before = np.array([plain.getParticleMass(i)._value for i in range(molecule.N_ATOMS)])
    hydrogens = [a.index for a in molecule.topology().atoms() if a.element.symbol == 'H']
    assert np.all(masses[hydrogens] == generate_data.HYDROGEN_MASS) and len(hydrogens) == 12
    assert masses.sum() == pytest.approx(before.sum(), abs=1e-9)
    assert masses[molecule.PHI_ATOMS[1]] == pytest.approx(before[molecule.PHI_ATOMS[1]] - (3.0 - before[7]), abs=1e-12)
    phi = np.array([-1.0, 1.0, 2.0, -2.0, 1.5, -0.5])
    pop = generate_data.phi_population(phi, np.array([1.0, 3.0, 1.0, 1.0, 1.0, 1.0]), np.array([0, 0, 0, 1, 1, 1]))
    assert pop['phi_positive_fraction'] == pytest.approx(5 / 8)
    assert pop['phi_positive_fraction_per_chain'] == pytest.approx([4 / 5, 1 / 3])
    assert pop['phi_positive_fraction_stderr'] == pytest.approx(np.std([0.8, 1 / 3], ddof=1) / np.sqrt(2))


def test_energy_conservation_summary_per_degree_of_freedom():
    runs = [{'potential': 'smooth', 'dt_fs': 1.0, 'start': s, 'error': None, 'ratio': r, 'drift_kj_mol_ns': d}
            for s, (r, d) in enumerate([(0.02, 6.6), (0.04, 13.2)])]
    runs.append({'potential': 'smooth', 'dt_fs': 1.0, 'start': 2, 'error': 'unstable after 1.000 ps'})
    (row,) = energy_conservation.summarize(runs)
    assert row['ratio'] == pytest.approx(0.03) and row['failed'] == 1 and row['runs'] == 3
    assert row['drift_per_dof'] == pytest.approx(9.9 / (3 * 22))    # no constraints: 66 degrees of freedom
    assert row['errors'] == ['smooth at 1 fs, start 2: unstable after 1.000 ps']


def test_the_phi_bias_is_built_by_the_pipelines_metadynamics_with_the_studys_settings(tmp_path):
    from alanine_dipeptide import phi_bias
    settings = phi_bias.build('obc', 0.002, tmp_path, generate_data.prepared_system, progress=False)
    assert {k: settings[k] for k in ('ns', 'bias_factor', 'height_kj_mol', 'width_rad', 'pace_ps', 'grid', 'seed')} \
        == {'ns': 0.002, 'bias_factor': 4.0, 'height_kj_mol': 1.0, 'width_rad': 0.35, 'pace_ps': 1.0, 'grid': 181,
            'seed': 999}
    table, loaded = phi_bias.load('obc', tmp_path)
    assert loaded == settings and table.shape == (181,) and table.max() == 0.0
    # two Gaussians of at most 1 kJ/mol deposited, seen as (1 - 1/4) of the free energy: a dip, V <= 0
    assert -2.0 <= table.min() < -0.1
    system = forcefield.system('obc')
    phi_bias.add_static_bias(system, table)     # periodic and finite, as the data chains need it
    assert system.getForce(system.getNumForces() - 1).getForceGroup() == phi_bias.BIAS_GROUP == 31
