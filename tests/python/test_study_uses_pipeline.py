"""The alanine-dipeptide study is a pipeline project (issue 21, part 3): its molecule and
hand-written Z-matrix are a structure file and a Z-matrix file that ``smoothflow prepare`` takes,
its flows are pipeline configs of five stages, and the modules it keeps (data, data generation,
bias, the main job's statistics) call the pipeline's code with the study's settings. Each test
checks the study against something it does not share with the pipeline: the shipped model
files, the study's molecule and force field, a data file written here."""
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('openmmsmoothflow')
from alanine_dipeptide import data, energy_conservation, forcefield, generate_data, molecule  # noqa: E402
from alanine_dipeptide.zmatrix import AMIDE_H_ON_HEAVY_ATOMS_FILE, PHI_DIM, PSI_DIM, ZMATRIX  # noqa: E402
from smoothflow_torch import load_model  # noqa: E402
from smoothflow_torch import pipeline  # noqa: E402
from smoothflow_torch.pipeline import model as pipeline_model  # noqa: E402
from smoothflow_torch.pipeline.train import stages  # noqa: E402

STUDY = Path(molecule.__file__).resolve().parent
REPO = STUDY.parents[1]


@pytest.fixture(scope='module')
def frames():
    return data.load_reference('obc').test.positions


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    """The study's project with the Z-matrix of its own code (zmatrix.txt = zmatrix.ZMATRIX)."""
    return pipeline.prepare(STUDY / 'alanine_dipeptide.pdb', tmp_path_factory.mktemp('p') / 'alanine_dipeptide',
                            zmatrix=STUDY / 'zmatrix.txt', name='alanine dipeptide')


@pytest.fixture(scope='module')
def shipped_project(tmp_path_factory):
    """The project of the shipped flows, made as the README makes it (smoothflow prepare with the
    study's structure and the H-N-C-C Z-matrix file; runs/alanine_dipeptide there)."""
    return pipeline.prepare(STUDY / 'alanine_dipeptide.pdb', tmp_path_factory.mktemp('s') / 'alanine_dipeptide',
                            zmatrix=AMIDE_H_ON_HEAVY_ATOMS_FILE,
                            name='alanine dipeptide (H-N-C-C rows)')


def test_the_project_is_the_studys_molecule_zmatrix_and_force_field(project, frames):
    np.testing.assert_array_equal(project.zmatrix, ZMATRIX)
    assert project.n_atoms == molecule.N_ATOMS and project.temperature == forcefield.TEMPERATURE
    assert [a['element'] for a in project.meta['atoms']] == [el for _, _, el in molecule.ATOMS]
    assert [a['residue'] for a in project.meta['atoms']] == [r for r, _, _ in molecule.ATOMS]
    assert sorted(tuple(sorted((a.index, b.index))) for a, b in project.topology().bonds()) == sorted(molecule.BONDS)
    by_name = {t['name']: t for t in project.torsions}
    assert by_name['phi:ALA2']['atoms'] == list(molecule.PHI_ATOMS) and by_name['phi:ALA2']['dim'] == PHI_DIM
    assert by_name['psi:ALA2']['atoms'] == list(molecule.PSI_ATOMS) and by_name['psi:ALA2']['dim'] == PSI_DIM
    # the project's System is the study's force field: the same energies on held-out frames
    import openmm
    import openmm.unit as unit
    energies = []
    for system in (project.system(), forcefield.system('obc')):
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
        e = []
        for x in frames[:5]:
            ctx.setPositions(x * unit.nanometer)
            e.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        energies.append(e)
    np.testing.assert_allclose(energies[0], energies[1], rtol=1e-12)
    # and the stored energies of the study's data (computed before the positions were stored as float32)
    assert data.load_reference('obc').test.energies[:5] == pytest.approx(energies[0], abs=0.02)


@pytest.mark.parametrize('kind', ['smooth', 'spline', 'affine'])
def test_each_config_builds_the_shipped_models_architecture_in_the_project(kind, shipped_project, frames):
    """The final stage of configs/<kind>.json (without init_from, whose run is not shipped), built
    by the pipeline for the shipped flows' project, gives the shipped model's layers, Z-matrix,
    atoms (the project's, OpenMM's names), temperature, support and transform constants; bond
    bounds and the prior's moments come from the full data set, which is not shipped, so only
    their form is compared."""
    project = shipped_project
    final = stages(STUDY / 'configs' / f'{kind}.json')[-1]
    model = {k: v for k, v in final.model.items() if k != 'init_from'}
    built = pipeline_model.build_flow(model, project.zmatrix, project.meta['atoms'], project.temperature, frames,
                                      final.seed, base=project.path).config()
    shipped = load_model(REPO / 'models' / 'alanine_dipeptide' / f'{kind}.safetensors').config()
    assert built.keys() == shipped.keys()
    for key in built:
        if key == 'prior':
            assert built[key]['kind'] == shipped[key]['kind'] == 'truncated_normal'
            assert len(built[key]['mean']) == len(shipped[key]['mean']) == 2 * molecule.N_ATOMS - 3
        elif key == 'support':
            # the exporter adds the wall's edge forces, measured on the training frames
            edges = ('edge_force_lower', 'edge_force_upper')
            assert all(len(shipped[key][e]) == 2 * molecule.N_ATOMS - 3 for e in edges)
            assert built[key] == {k: v for k, v in shipped[key].items() if k not in edges}
        else:
            assert json.dumps(built[key], sort_keys=True) == json.dumps(shipped[key], sort_keys=True), key
    assert [(a['residue'], a['element']) for a in shipped['atoms']] == [(r, e) for r, _, e in molecule.ATOMS]


def test_the_configs_frames_are_the_studys_data_file():
    """data.frames of every stage, relative to the project folder runs/alanine_dipeptide, is the
    file the study's data generator writes and data.load reads."""
    for kind in ('smooth', 'spline', 'affine'):
        for c in stages(STUDY / 'configs' / f'{kind}.json'):
            assert (REPO / 'runs' / 'alanine_dipeptide' / c.data['frames']).resolve() == data.path('obc').resolve()


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


def test_data_generation_masses_and_populations(project):
    """The study's chains (the pipeline's, on the study's project) carry hydrogens of 3 amu
    taken from their heavy atoms; the phi > 0 populations are weighted per chain."""
    from smoothflow_torch.pipeline.simulate import prepared_system
    system = prepared_system(project, generate_data.CHAINS['hydrogen_mass'])
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


def test_the_studys_data_are_the_pipelines_chains_under_the_shipped_bias(tmp_path):
    """generate_data: the study's project, the shipped phi bias table installed as its
    data/bias.npz, the pipeline's chains under it, exported to the study's files (the frames
    file itself, its provenance with the weighted phi > 0 fraction, the reference summary)."""
    import shutil
    from alanine_dipeptide import phi_bias
    out = tmp_path / 'data'
    out.mkdir()
    shutil.copy(data.DATA_DIR / 'obc.bias.npz', out)
    project = generate_data.make_project('obc', tmp_path / 'project')
    assert generate_data.make_project('obc', tmp_path / 'project').path == project.path    # reopened, not remade
    assert generate_data.install_bias(project, 'obc', out)
    summary = pipeline.simulate(project, ns=0.006, chains=2, interval_ps=1.0, equilibration_ps=1.0, bias='phi',
                                progress=False)
    result = generate_data.export(project, 'obc', out, summary)
    assert (out / 'obc.npz').read_bytes() == project.frames_path.read_bytes()
    table, settings = phi_bias.load('obc', out)
    assert result['phi_bias'] == settings and settings['bias_factor'] == 4.0 and settings['ns'] == 10.0
    every = data.load('obc', 'all', out)
    phi = data.backbone_dihedrals(every.positions)[0]
    with np.load(out / 'obc.npz') as d:
        bias = d['bias'].astype(np.float64)
    # each frame ran under the shipped table: its bias energy is the table's value at its phi
    assert bias == pytest.approx(np.interp(phi, np.linspace(-np.pi, np.pi, phi_bias.GRID), table), abs=0.05)
    w = np.exp(bias / forcefield.KT)
    assert result['frames'] == 12 and result['phi_positive_fraction'] == pytest.approx(np.average(phi > 0, weights=w))
    np.testing.assert_allclose(every.weights, w / w.mean(), rtol=1e-12)
    assert len(data.load_reference('obc', out).test) == 200
