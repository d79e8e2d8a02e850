"""The whole pipeline (smoothflow prepare / simulate / train / evaluate / md) on a tiny budget, for a
molecule used nowhere else: N-acetyl-L-serine amide, ACE-SER-NHE (tests/data/pipeline/, 20 atoms).

One module-scoped run through the command line's main() (seconds of MD with a phi bias, a
two-stage training of a few steps, 64 flow samples, NVE at two time steps), then checks of what
it wrote against independent computations: the flow in the C core (SmoothFlowForce) is finite,
equals the PyTorch flow and its forces match finite differences; the reports hold the numbers the
run produced; a rerun of simulate continues the chains instead of starting over. A second project
runs simulate under two biased torsions (phi + psi): the frames' bias is the sum of the two tables.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

STRUCTURE = os.path.join(os.path.dirname(__file__), '..', 'data', 'pipeline', 'ace_ser_nhe.pdb')
CHI1 = 'SER2:N SER2:CA SER2:CB SER2:OG'
SIMULATE = ['--interval-ps', '0.1', '--equilibration-ps', '1', '--chains', '2', '--bias', 'phi',
            '--bias-ns', '0.005', '--checkpoint-ps', '2', '--no-progress']
CONFIG = {'stages': [
    {'name': 'first', 'seed': 0, 'iterations': 4, 'batch_size': 16,
     'weights': {'nll': 1.0, 'force_matching': 1e-3}, 'lr': 1e-3, 'eval_every': 2, 'eval_frames': 20,
     'eval_batch_size': 20, 'eval_samples': 8, 'checkpoint_every': 2, 'threads': 1, 'progress': False,
     'model': {'n_torsion_blocks': 1, 'n_angle_blocks': 1, 'n_components': 2, 'hidden': [16]}},
    {'name': 'second', 'iterations': 3, 'weights': {'force_matching': 4e-3}, 'lr': 3e-4,
     'data': {'weight_power': 0.5}},
]}


def _cli(*args):
    from smoothflow_torch.pipeline.cli import main
    rc = main([str(a) for a in args])
    assert rc == 0, f'smoothflow {args[0]} failed'


def _chain_frames(project, c):
    with np.load(project / 'data' / f'chain{c}.npz') as d:
        return d['positions'].copy()


@pytest.fixture(scope='module')
def run(sf, tmp_path_factory):
    """Run every step once; keep what the checks need from between the steps."""
    root = tmp_path_factory.mktemp('pipeline')
    project = root / 'serine'
    seen = {'project': project}
    _cli('prepare', STRUCTURE, project, '--torsion', CHI1)
    # simulate 10 ps per chain, then continue to 16 ps: the rerun must append
    _cli('simulate', project, '--ns', '0.01', *SIMULATE)
    seen['first'] = [_chain_frames(project, c) for c in range(2)]
    seen['bias'] = (project / 'data' / 'bias.npz').read_bytes()
    _cli('simulate', project, '--ns', '0.016', *SIMULATE)
    seen['second'] = [_chain_frames(project, c) for c in range(2)]
    seen['chain_mtime'] = (project / 'data' / 'chain0.npz').stat().st_mtime_ns
    no_metadynamics = [a for a in SIMULATE if a not in ('--bias-ns', '0.005')]
    _cli('simulate', project, '--ns', '0.016', *no_metadynamics)     # nothing left to run; the bias as built
    (root / 'tiny.json').write_text(json.dumps(CONFIG))
    here = os.getcwd()
    os.chdir(root)
    try:
        _cli('train', project, 'tiny.json', '--no-progress')       # a config relative to the caller
    finally:
        os.chdir(here)
    seen['model_mtime'] = [(project / f).stat().st_mtime_ns
                           for f in ('model.safetensors', 'runs/first/model.safetensors', 'runs/second/log.jsonl')]
    _cli('train', project, root / 'tiny.json', '--no-progress')   # both stages done: skipped
    # paths relative to the working directory, as a user types them
    here = os.getcwd()
    os.chdir(root)
    try:
        _cli('evaluate', 'serine', '--samples', '64', '--seeds', '2')
        _cli('md', 'serine', 'serine/runs/second/model.safetensors', '--dt-fs', '0.5', '1', '--ps', '0.05',
             '--starts', '1', '--samples', '25', '--no-progress')
    finally:
        os.chdir(here)
    return seen


def test_prepare_writes_the_molecule_and_its_zmatrix(run):
    from openmmsmoothflow.zmatrix import buildZMatrix
    import openmm.app as app
    from smoothflow_torch.pipeline import Project
    project = Project(run['project'])
    pdb = app.PDBFile(STRUCTURE)
    assert project.n_atoms == 20 and [a['name'] for a in project.meta['atoms']] == [a.name for a in pdb.topology.atoms()]
    assert np.array_equal(project.zmatrix, buildZMatrix(pdb.topology, pdb.positions))
    names = [t['name'] for t in project.torsions]
    assert names == ['omega:SER2', 'phi:SER2', 'psi:SER2', 'SER2:N-SER2:CA-SER2:CB-SER2:OG']
    phi = project.torsion('phi')
    assert phi['atoms'] == [4, 6, 8, 15]        # C(ACE)-N-CA-C
    row = phi['dim'] - (2 * 20 - 3) + 3          # a single Z-matrix torsion
    assert sorted(project.zmatrix[row]) == sorted(phi['atoms'])
    assert (run['project'] / 'zmatrix.txt').read_text().count('\n') == 20


def test_simulate_rerun_appends_to_the_chains(run):
    from smoothflow_torch.pipeline import Project
    from smoothflow_torch.pipeline.data import load
    project = Project(run['project'])
    for first, second in zip(run['first'], run['second']):
        assert first.shape == (100, 20, 3) and second.shape == (160, 20, 3)
        assert np.array_equal(second[:100], first)            # continued, not restarted
        # the continuation starts where the chain stood (0.1 ps on), not at a fresh equilibration
        assert np.abs(second[100] - first[-1]).max() < 0.1
    assert not np.array_equal(run['second'][0], run['second'][1])   # independent chains
    assert (run['project'] / 'data' / 'bias.npz').read_bytes() == run['bias']   # metadynamics not rerun
    assert (run['project'] / 'data' / 'chain0.npz').stat().st_mtime_ns == run['chain_mtime']
    every = load(project.frames_path, project.kT, 20, 'all')
    test = load(project.frames_path, project.kT, 20, 'test')
    assert len(every) == 320 and len(test) == 64               # the last 20 % of each chain
    # the stored forces are the force field's alone (no bias), and the weights are exp(V / kT)
    import openmm
    context = openmm.Context(project.system(), openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(every.positions[-1])
    state = context.getState(getEnergy=True, getForces=True)
    f = state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
    assert np.allclose(f, every.forces[-1], rtol=1e-3, atol=0.5)
    with np.load(project.frames_path) as d:
        bias = d['bias'].astype(float)
    assert bias.std() > 0
    w = np.exp(bias / project.kT)
    assert np.allclose(every.weights, w / w.mean())


def test_simulate_refuses_other_dynamics(run):
    from smoothflow_torch.pipeline import simulate
    with pytest.raises(ValueError, match=r"other \['dt_fs'\]"):
        simulate(run['project'], ns=0.016, chains=2, interval_ps=0.1, dt_fs=1.0, equilibration_ps=1, bias='phi',
                 bias_ns=0.005, progress=False)


# ---------------------------------------------------------------------- several biased torsions
TWO_BIASES = ['phi:SER2', 'psi:SER2']
BIASED_RUN = ['--interval-ps', '0.1', '--equilibration-ps', '1', '--chains', '2', '--checkpoint-ps', '2',
              '--no-progress']
#: the keys of a one-torsion bias.npz's info as the first version wrote them
ONE_BIAS_INFO_KEYS = {'torsion', 'method', 'ns', 'bias_factor', 'height_kj_mol', 'width_rad', 'pace_ps', 'grid',
                      'seed', 'wall_seconds', 'positive_fraction_during_run', 'crossings_of_0_during_run'}


def _iupac_dihedral(x, idx):
    b1, b2, b3 = x[:, idx[1]] - x[:, idx[0]], x[:, idx[2]] - x[:, idx[1]], x[:, idx[3]] - x[:, idx[2]]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    return np.arctan2(np.linalg.norm(b2, axis=1) * (b1 * n2).sum(1), (n1 * n2).sum(1))


def _periodic_spline(table, angles):
    """The periodic natural cubic spline through ``table`` (equal steps over [-pi, pi], first ==
    last) at ``angles``: what OpenMM's periodic Continuous1DFunction evaluates."""
    y = np.asarray(table, float)[:-1]
    n = len(y)
    h = 2 * np.pi / n
    cyclic = 4 * np.eye(n) + np.roll(np.eye(n), 1, 1) + np.roll(np.eye(n), -1, 1)
    m = np.linalg.solve(cyclic, 6 / h ** 2 * (np.roll(y, 1) - 2 * y + np.roll(y, -1)))   # second derivatives
    u = (np.asarray(angles, float) + np.pi) / h
    i = np.minimum(np.floor(u).astype(int), n - 1)
    j = (i + 1) % n
    t = (u - i) * h
    slope = (y[j] - y[i]) / h - h * (2 * m[i] + m[j]) / 6
    return y[i] + slope * t + m[i] / 2 * t ** 2 + (m[j] - m[i]) / (6 * h) * t ** 3


@pytest.fixture(scope='module')
def two_biases(sf, tmp_path_factory):
    """ACE-SER-NHE under phi + psi: 4 ps per chain with repeated --bias, then continued to 5 ps
    with the comma-separated form and no --bias-ns (the tables as built)."""
    project = tmp_path_factory.mktemp('two_biases') / 'serine'
    _cli('prepare', STRUCTURE, project, '--torsion', CHI1)
    _cli('simulate', project, '--ns', '0.004', '--bias', 'phi', '--bias', 'psi:SER2', '--bias-ns', '0.02',
         *BIASED_RUN)
    seen = {'project': project, 'first': [_chain_frames(project, c) for c in range(2)],
            'bias': (project / 'data' / 'bias.npz').read_bytes()}
    _cli('simulate', project, '--ns', '0.005', '--bias', ','.join(TWO_BIASES), *BIASED_RUN)
    return seen


def test_two_biased_torsions_store_the_sum_of_their_tables(two_biases):
    import openmm
    from smoothflow_torch.pipeline import Project
    from smoothflow_torch.pipeline.simulate import add_static_biases
    project = Project(two_biases['project'])
    with np.load(project.data_dir / 'bias.npz') as d:
        assert sorted(d.files) == ['bias', 'grid', 'info']
        tables, info = d['bias'].astype(float), json.loads(str(d['info']))
    # one well-tempered metadynamics run per torsion, its own seed, the same settings
    assert tables.shape == (2, 181) and [i['torsion']['name'] for i in info] == TWO_BIASES
    assert [i['seed'] for i in info] == [999, 998] and all(set(i) == ONE_BIAS_INFO_KEYS for i in info)
    assert all(i['ns'] == 0.02 and i['bias_factor'] == 4.0 for i in info)
    assert not np.allclose(tables[0], tables[1])
    settings = json.loads((project.data_dir / 'settings.json').read_text())
    assert settings['bias'] == [{'name': i['torsion']['name'], 'atoms': i['torsion']['atoms'], 'metadynamics_ns': 0.02}
                                for i in info]
    # the rerun appended under the same tables
    assert (project.data_dir / 'bias.npz').read_bytes() == two_biases['bias']
    for c in range(2):
        assert np.array_equal(_chain_frames(project.path, c)[:40], two_biases['first'][c])
    with np.load(project.frames_path) as d:
        x, stored, chain = d['positions'].astype(float), d['bias'].astype(float), d['chain']
    assert len(x) == 100
    parts = [_periodic_spline(t, _iupac_dihedral(x, i['torsion']['atoms'])) for t, i in zip(tables, info)]
    assert all(np.ptp(p) > 0.1 for p in parts)          # each table moves the stored value
    # frames are float32: positions to ~1e-7 relative move a torsion by ~1e-6 rad, V by a few 1e-6 kJ/mol
    assert np.abs(stored - (parts[0] + parts[1])).max() < 1e-4
    # the chains' force itself, in double precision at the same positions, is the sum to 1e-6 kJ/mol
    system = openmm.System()
    for _ in range(project.n_atoms):
        system.addParticle(1.0)
    add_static_biases(system, [(i['torsion']['atoms'], t) for t, i in zip(tables, info)])
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    energy = []
    for p in x:
        context.setPositions(p)
        energy.append(context.getState(getEnergy=True, groups={31}).getPotentialEnergy().value_in_unit(
            openmm.unit.kilojoule_per_mole))
    assert np.abs(np.array(energy) - (parts[0] + parts[1])).max() < 1e-6
    # the summary reports phi > 0 and psi > 0, both biased, reweighted with exp(V/kT)
    summary = json.loads((project.data_dir / 'summary.json').read_text())
    fractions = summary['positive_fractions']
    assert [(f['torsion'], f['biased']) for f in fractions] == [(n, True) for n in TWO_BIASES]
    w = np.exp((stored - stored.max()) / project.kT)
    for f, i in zip(fractions, info):
        up = _iupac_dihedral(x, i['torsion']['atoms']) > 0
        assert f['reweighted'] == pytest.approx(np.average(up, weights=w), abs=1e-6)
        assert f['per_chain'] == pytest.approx([np.average(up[chain == c], weights=w[chain == c]) for c in (0, 1)],
                                               abs=1e-6)
    assert summary['positive_fraction'] == fractions[0]


def test_a_rerun_with_another_bias_list_is_refused_naming_the_difference(two_biases, tmp_path):
    from smoothflow_torch.pipeline import simulate
    project = two_biases['project']
    kept = {f.name: f.read_bytes() for f in (project / 'data').iterdir() if f.is_file()}
    again = dict(ns=0.005, chains=2, interval_ps=0.1, equilibration_ps=1, progress=False)
    for bias, said in [('phi', r'dropped psi:SER2'),
                       (TWO_BIASES + [CHI1], r'added SER2:N-SER2:CA-SER2:CB-SER2:OG'),
                       (TWO_BIASES[::-1], r'the same torsions in another order'),
                       (None, r'dropped phi:SER2, psi:SER2')]:
        with pytest.raises(ValueError, match=r"other \['bias'\] \(bias: .*" + said):
            simulate(project, bias=bias, **again)
    with pytest.raises(ValueError, match=r"psi:SER2: 0\.02 ns of metadynamics before, 0\.03 now"):
        simulate(project, bias=TWO_BIASES, bias_ns=0.03, **again)
    assert {f.name: f.read_bytes() for f in (project / 'data').iterdir() if f.is_file()} == kept
    # without settings.json, the tables themselves are checked, torsion by torsion
    copy = tmp_path / 'copy'
    shutil.copytree(project, copy)
    (copy / 'data' / 'settings.json').unlink()
    with pytest.raises(ValueError, match=r"bias\.npz was built for phi:SER2 \+ psi:SER2, not phi:SER2 \+ "
                                         r"SER2:N-SER2:CA-SER2:CB-SER2:OG \(added SER2:N-SER2:CA-SER2:CB-SER2:OG; "
                                         r"dropped psi:SER2\)"):
        simulate(copy, bias=['phi:SER2', CHI1], **again)


def test_an_interrupted_build_reruns_only_the_missing_tables(two_biases, tmp_path):
    """Finished tables wait in data/bias.part<i>.npz: a rebuild keeps them and runs the rest
    (same seed, so the same table on the Reference platform)."""
    from smoothflow_torch.pipeline import Project
    from smoothflow_torch.pipeline.simulate import bias_torsions, build_biases, load_biases
    copy = Project(shutil.copytree(two_biases['project'], tmp_path / 'copy'))
    (table0, info0), (table1, _) = load_biases(copy)
    settings = json.loads((copy.data_dir / 'settings.json').read_text())
    (copy.data_dir / 'bias.npz').unlink()
    np.savez(copy.data_dir / 'bias.part0.npz', bias=table0 - 1.0, info=json.dumps(info0))   # marked: kept, not rerun
    build_biases(copy, bias_torsions(copy, TWO_BIASES), 0.02, settings, progress=False)
    (new0, _), (new1, _) = load_biases(copy)
    assert np.array_equal(new0, table0 - 1.0) and np.array_equal(new1, table1)
    assert not list(copy.data_dir.glob('bias.part*'))

def test_bias_lists_are_parsed_and_checked(run):
    from smoothflow_torch.pipeline import Project
    from smoothflow_torch.pipeline.simulate import bias_torsions
    project = Project(run['project'])
    names = lambda bias: [t['name'] for t in bias_torsions(project, bias)]
    assert names(None) == [] and names([]) == []
    assert names('phi') == ['phi:SER2'] and names(['phi', 'psi:SER2']) == TWO_BIASES
    assert names(' phi:SER2 , psi:SER2 ') == TWO_BIASES
    assert [t['atoms'] for t in bias_torsions(project, '6,8,10,13')] == [[6, 8, 10, 13]]   # four atoms, one torsion
    assert names([CHI1, 'omega']) == [CHI1.replace(' ', '-'), 'omega:SER2']
    with pytest.raises(ValueError, match=r"one torsion twice: 'phi' \(phi:SER2\) and '4,6,8,15'"):
        bias_torsions(project, ['phi', '4,6,8,15'])
    with pytest.raises(ValueError, match=r"one torsion twice"):
        bias_torsions(project, 'phi:SER2,phi')
    with pytest.raises(ValueError, match=r"no torsion of interest is named 'phi:ALA3'; the project's are omega:SER2"):
        bias_torsions(project, 'phi:SER2,phi:ALA3')


def test_one_bias_keeps_the_first_versions_layout(run, tmp_path):
    """One torsion: bias.npz and settings.json as the first version wrote them, and the alanine
    study's shipped table, installed by its generate_data.install_bias, drives the chains."""
    alanine = pytest.importorskip('alanine_dipeptide.generate_data')
    from alanine_dipeptide import data as study_data
    from smoothflow_torch.pipeline import Project, simulate
    from smoothflow_torch.pipeline.simulate import load_bias, load_biases
    with np.load(run['project'] / 'data' / 'bias.npz') as d:
        assert d.files == ['grid', 'bias', 'info'] and d['grid'].shape == d['bias'].shape == (181,)
        info = json.loads(str(d['info']))
    assert set(info) == ONE_BIAS_INFO_KEYS and info['torsion']['name'] == 'phi:SER2' and info['seed'] == 999
    settings = json.loads((run['project'] / 'data' / 'settings.json').read_text())
    assert settings['bias'] == {'name': 'phi:SER2', 'atoms': [4, 6, 8, 15], 'metadynamics_ns': 0.005}
    # the study's table in a fresh copy of the project (no data), then one frame per chain under it
    copy = Project(shutil.copytree(run['project'], tmp_path / 'p', ignore=shutil.ignore_patterns('data', 'runs')))
    assert alanine.install_bias(copy, 'obc', study_data.DATA_DIR)
    table, info = load_bias(copy)
    with np.load(study_data.DATA_DIR / 'obc.bias.npz') as d:
        assert np.array_equal(table, d['bias'])
    assert len(load_biases(copy)) == 1 and info['ns'] == 10.0
    simulate(copy, ns=0.0002, chains=1, interval_ps=0.1, equilibration_ps=0.1, bias='phi', progress=False)
    assert json.loads((copy.data_dir / 'settings.json').read_text())['bias'] == \
        {'name': 'phi:SER2', 'atoms': [4, 6, 8, 15], 'metadynamics_ns': 10.0}
    with np.load(copy.frames_path) as d:
        x, stored = d['positions'].astype(float), d['bias'].astype(float)
    assert np.abs(stored - _periodic_spline(table, _iupac_dihedral(x, [4, 6, 8, 15]))).max() < 1e-4


def test_train_stages_chain_and_the_model_runs_in_the_c_core(run):
    import openmm
    import openmm.app as app
    import openmmsmoothflow
    import torch
    from smoothflow_torch import load_model
    from smoothflow_torch.pipeline import Project
    from smoothflow_torch.pipeline.data import load
    project = Project(run['project'])
    second = json.loads((run['project'] / 'runs' / 'second' / 'config.json').read_text())
    assert second['model']['init_from'] == 'runs/first/model.safetensors'
    assert second['model']['hidden'] == [16] and second['weights']['force_matching'] == 4e-3
    summaries = [json.loads((run['project'] / 'runs' / s / 'summary.json').read_text()) for s in ('first', 'second')]
    assert [s['data']['weight_power'] for s in summaries] == [1.0, 0.5]
    model = run['project'] / 'model.safetensors'
    assert model.read_bytes() == (run['project'] / 'runs' / 'second' / 'model.safetensors').read_bytes()
    assert [(run['project'] / f).stat().st_mtime_ns for f in ('model.safetensors', 'runs/first/model.safetensors',
            'runs/second/log.jsonl')] == run['model_mtime']      # the rerun skipped the finished stages
    x = load(project.frames_path, project.kT, 20, 'test').positions[3]
    topology = app.PDBFile(str(run['project'] / 'topology.pdb')).topology
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    force = openmmsmoothflow.addSmoothFlowForce(system, topology, str(model), positions=x)
    # the mapping is the identity up to the labelling of equivalent atoms (methyl hydrogens, the
    # NH2 hydrogens), which addSmoothFlowForce chooses by the flow's lowest energy
    particles = list(force.getMoleculeParticles(0))
    assert sorted(particles) == list(range(20))
    assert all(particles[a] == a for a in range(20) if project.meta['atoms'][a]['element'] != 'H')
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))

    def energy(p):
        context.setPositions(p)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)

    e = energy(x)
    context.setPositions(x)
    forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
        openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
    flow = load_model(model)
    assert np.isfinite(e)
    assert e == pytest.approx(float(flow.energy(torch.from_numpy(x[particles][None])).detach()[0]), rel=1e-9, abs=1e-9)
    h = 1e-6      # central differences: error ~1e-4 kJ/mol/nm here, against forces of thousands
    scale = np.abs(forces).max()
    for i in range(20):
        for k in range(3):
            xp, xm = x.copy(), x.copy()
            xp[i, k] += h
            xm[i, k] -= h
            fd = -(energy(xp) - energy(xm)) / (2 * h)
            assert abs(fd - forces[i, k]) < 1e-5 * scale + 1e-3, (i, k, fd, forces[i, k])


def test_hot_frames_are_the_force_fields_and_the_curvature_bound_visits_them(run, tmp_path):
    """smoothflow hot-frames: each frame's energy and forces against a fresh force-field Context
    (the oracle), the starts are the Boltzmann-spread training frames, the summary's bond ratio
    recomputed; then a training stage whose curvature bound visits the frames records them and
    logs their curvature, and a file of another molecule is refused naming it."""
    import openmm
    import openmm.unit as unit
    from smoothflow_torch.pipeline import Project, train
    from smoothflow_torch.pipeline.data import boltzmann_indices, load
    project = Project(run['project'])
    out = tmp_path / 'hot.npz'
    _cli('hot-frames', project.path, '--temperatures', '1000', '2000', '--ps', '0.02', '--starts', '2',
         '--interval-ps', '0.01', '--equilibration-ps', '0.01', '--out', out, '--no-progress')
    with np.load(out) as d:
        hot = {k: d[k] for k in d.files}
    assert hot['positions'].shape == (8, 20, 3) and list(hot['temperature']) == [1000.0] * 4 + [2000.0] * 4
    train_frames = load(project.frames_path, project.kT, 20, 'train')
    assert list(hot['start']) == list(np.repeat(boltzmann_indices(train_frames.weights, 2), 2)) * 2
    context = openmm.Context(project.system(), openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    for i in (0, 7):
        context.setPositions(hot['positions'][i].astype(np.float64))
        st = context.getState(getEnergy=True, getForces=True)
        e = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        f = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        assert hot['energies'][i] == pytest.approx(e, rel=1e-4, abs=0.05)   # positions stored in float32
        assert np.abs(hot['forces'][i] - f).max() < 1e-3 * np.abs(f).max() + 1.0
    summary = json.loads(out.with_suffix('.json').read_text())
    pairs = np.array([(a.index, b.index) for a, b in project.topology().bonds()])
    length = lambda x: np.linalg.norm(x[:, pairs[:, 0]] - x[:, pairs[:, 1]], axis=-1)
    longest = length(train_frames.positions).max(axis=0)
    for entry, T in zip(summary['per_temperature'], (1000.0, 2000.0)):
        mine = hot['positions'][hot['temperature'] == T].astype(np.float64)
        assert entry['temperature'] == T and entry['frames'] == 4
        assert entry['longest_bond_over_data'] == pytest.approx((length(mine) / longest).max(), rel=1e-5)
    stage = {'name': 'hot', 'seed': 0, 'iterations': 2, 'batch_size': 8, 'eval_every': 0, 'eval_frames': 0,
             'eval_samples': 0, 'checkpoint_every': 0, 'progress': False, 'curvature_extra_batch': 4,
             'force_matching_extra_batch': 3, 'weights': {'nll': 1.0, 'curvature': 1.0, 'force_matching': 0.01},
             'model': {'n_torsion_blocks': 1, 'n_angle_blocks': 1, 'n_components': 2, 'hidden': [16]},
             'data': {'curvature_frames': str(out), 'force_matching_frames': [str(out)]}}
    shipped = (project.path / 'model.safetensors').read_bytes()     # train() replaces it: the later tests need it
    try:
        train(project, {'stages': [stage]}, log=None)
    finally:
        (project.path / 'model.safetensors').write_bytes(shipped)
    done = json.loads((project.path / 'runs' / 'hot' / 'summary.json').read_text())
    assert done['curvature_frames']['frames'] == 8
    import hashlib
    assert done['curvature_frames']['sha256'] == [hashlib.sha256(out.read_bytes()).hexdigest()]
    steps = [json.loads(line) for line in (project.path / 'runs' / 'hot' / 'log.jsonl').read_text().splitlines()]
    assert all(e['curvature_extra_max'] > 0 for e in steps if e.get('kind') == 'train')
    # the force field's hot frames matched too: their RMSE logged beside the data's
    assert done['force_matching_frames'] == {'files': [str(out)], 'frames': 8,
                                             'sha256': [hashlib.sha256(out.read_bytes()).hexdigest()]}
    assert all(e['force_rmse_extra'] > 0 and e['fm_extra_invalid'] == 0 for e in steps if e.get('kind') == 'train')
    np.savez(tmp_path / 'other.npz', positions=np.zeros((3, 22, 3)))
    stage.update(name='hot_bad', data={'curvature_frames': str(tmp_path / 'other.npz')})
    with pytest.raises(ValueError, match=r'other.npz: positions of shape \(3, 22, 3\)'):
        train(project, {'stages': [stage]}, log=None)
    shutil.rmtree(project.path / 'runs' / 'hot')


def test_hot_frames_of_a_flow_keep_the_force_fields_numbers_and_list_failures(run, tmp_path):
    """--model runs the flow as the potential: its frames still carry the force field's energies
    and forces (oracle: a fresh force-field Context); a time step far too long fails every run,
    which is an error naming the cause, never frames from a blown-up run."""
    import openmm
    import openmm.unit as unit
    from smoothflow_torch.pipeline import Project, hot_frames
    project = Project(run['project'])
    out = tmp_path / 'flow_hot.npz'
    summary = hot_frames(project, temperatures=[1000.0], ps=0.02, starts=1, interval_ps=0.01, equilibration_ps=0.01,
                         model=run['project'] / 'model.safetensors', out=out, progress=False)
    assert summary['potential'].endswith('model.safetensors')
    with np.load(out) as d:
        pos, ene, frc = d['positions'].astype(np.float64), d['energies'], d['forces']
    assert len(pos) + 2 * len(summary['failures']) >= 2 and len(pos) >= 1
    context = openmm.Context(project.system(), openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(pos[-1])
    st = context.getState(getEnergy=True, getForces=True)
    assert ene[-1] == pytest.approx(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole), rel=1e-4, abs=0.05)
    f = st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    assert np.abs(frc[-1] - f).max() < 1e-3 * np.abs(f).max() + 1.0
    with pytest.raises(RuntimeError, match='every hot run failed.*kinetic temperature'):
        hot_frames(project, temperatures=[2000.0], ps=0.5, starts=1, interval_ps=0.25, dt_fs=25.0,
                   equilibration_ps=0.0, out=tmp_path / 'x.npz', progress=False)
    assert not (tmp_path / 'x.npz').exists()
    with pytest.raises(FileNotFoundError, match='model file .*nothing.safetensors does not exist'):
        hot_frames(project, model=tmp_path / 'nothing.safetensors', out=tmp_path / 'z.npz', progress=False)
    with pytest.raises(ValueError, match='temperatures must be finite and > 0'):
        hot_frames(project, temperatures=[-5.0], out=tmp_path / 'y.npz', progress=False)


def test_hot_frames_with_verlet_are_the_nve_trajectory_and_stop_when_it_heats(run, tmp_path):
    """--verlet: the frames are the velocity Verlet trajectory itself (oracle: a fresh
    VerletIntegrator Context from the same start frame and velocity seed, stepped by hand), with
    no bath; a step far too long makes every run heat past twice its temperature, an error."""
    import openmm
    import openmm.unit as unit
    from smoothflow_torch.pipeline import Project, hot_frames
    from smoothflow_torch.pipeline.data import boltzmann_indices, load
    project = Project(run['project'])
    out = tmp_path / 'nve.npz'
    summary = hot_frames(project, temperatures=[300.0], ps=0.02, starts=1, interval_ps=0.01, dt_fs=1.0,
                         equilibration_ps=0.01, seed=7, verlet=True, out=out, progress=False)
    assert summary['settings']['integrator'] == 'velocity Verlet' and summary['settings']['friction_per_ps'] is None
    with np.load(out) as d:
        pos = d['positions'].astype(np.float64)
    train_frames = load(project.frames_path, project.kT, 20, 'train')
    start = train_frames.positions[boltzmann_indices(train_frames.weights, 1)[0]]
    integrator = openmm.VerletIntegrator(1.0 * unit.femtoseconds)
    context = openmm.Context(project.system(), integrator, openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(start * unit.nanometer)
    context.setVelocitiesToTemperature(300.0 * unit.kelvin, 7)
    integrator.step(10)                               # the equilibration: 0.01 ps
    for k in range(2):
        integrator.step(10)
        x = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        assert np.abs(pos[k] - x).max() < 1e-6       # float32 storage
    langevin = hot_frames(project, temperatures=[300.0], ps=0.02, starts=1, interval_ps=0.01, dt_fs=1.0,
                          equilibration_ps=0.01, seed=7, out=tmp_path / 'bath.npz', progress=False)
    with np.load(tmp_path / 'bath.npz') as d:
        assert np.abs(d['positions'][1] - pos[1]).max() > 1e-4     # the bath's trajectory is another one
    assert langevin['settings']['integrator'] == 'Langevin middle'
    with pytest.raises(RuntimeError, match='every hot run failed.*kinetic temperature'):
        hot_frames(project, temperatures=[300.0], ps=0.5, starts=1, interval_ps=0.25, dt_fs=25.0,
                   equilibration_ps=0.0, verlet=True, out=tmp_path / 'x.npz', progress=False)


def test_evaluate_report_holds_the_numbers_of_the_run(run):
    import openmm
    import torch
    from smoothflow_torch import load_model
    from smoothflow_torch.pipeline import Project
    from smoothflow_torch.pipeline.data import load
    project = Project(run['project'])
    out = run['project'] / 'evaluation'
    result = json.loads((out / 'evaluation.json').read_text())['results'][0]
    report = (out / 'report.md').read_text()
    assert (out / 'free_energy.png').stat().st_size > 1000 and (out / 'ramachandran.png').stat().st_size > 1000
    # the held-out NLL, recomputed: the weighted mean of -log q over the held-out frames
    flow = load_model(run['project'] / 'model.safetensors')
    test = load(project.frames_path, project.kT, 20, 'test')
    nll = -flow.log_prob(torch.from_numpy(test.positions)).detach().numpy()
    assert result['outside_support'] == 0
    assert result['nll_nats'] == pytest.approx(np.average(nll, weights=test.weights), rel=1e-9)
    _, f = flow.energy_and_forces(torch.from_numpy(test.positions))
    sq = ((f.detach().numpy() - test.forces) ** 2).sum((1, 2))
    assert result['force_rmse_kj_mol_nm'] == pytest.approx(np.sqrt(np.average(sq, weights=test.weights) / 60), rel=1e-9)
    assert f"| {result['nll_nats']:.4f} | {result['force_rmse_kj_mol_nm']:.3f} |" in report
    # ESS/n of the first set, recomputed: the same samples (seed 0), energies from a fresh Context
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        xs, log_q = flow.sample(64, generator=gen, return_log_prob=True)
    context = openmm.Context(project.system(), openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName('Reference'))
    u = []
    for p in xs.numpy():
        context.setPositions(p)
        u.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
            openmm.unit.kilojoule_per_mole) / project.kT)
    log_w = -np.array(u) - log_q.numpy()
    w = np.exp(log_w - log_w.max())
    assert result['ess_fraction'] == pytest.approx(w.sum() ** 2 / (w ** 2).sum() / 64, rel=1e-6)
    assert f"| {100 * result['ess_fraction']:.3f} % |" in report
    lo, hi = result['ess_fraction_95']
    assert lo <= hi and f"{100 * lo:.3f}-{100 * hi:.3f} %" in report
    pooled = result['pooled_ess']
    assert len(pooled['per_set']) == 2 and pooled['per_set'][0] == pytest.approx(result['ess_fraction'])
    assert f"pooled over 2 sets {100 * pooled['pooled']:.3f} %" in report
    chi1 = result['torsions']['SER2:N-SER2:CA-SER2:CB-SER2:OG']
    assert f"{100 * chi1['md_positive_fraction']:.2f} %" in report
    assert 'KL(MD || flow) of the phi/psi histograms of SER2' in report


def test_md_report_holds_the_numbers_of_the_run(run):
    out = run['project'] / 'md'
    results = json.loads((out / 'results.json').read_text())
    report = (out / 'report.md').read_text()
    rows = {(r['potential'], r['dt_fs']): r for r in results['summary']}
    # the model is the run 'second''s model.safetensors: labelled by its run
    assert set(rows) == {('flow second', 0.5), ('flow second', 1.0), ('force field', 0.5), ('force field', 1.0)}
    ff05, ff1 = rows[('force field', 0.5)], rows[('force field', 1.0)]
    assert ff05['failed'] == 0 and 0 < ff05['ratio'] < ff1['ratio'] < 0.2     # the dt^2 law's direction
    for r in results['summary']:
        if 'ratio' in r:
            assert f"| {r['potential']} | {r['dt_fs']:g} | {r['ratio']:.5g} |" in report
    if 'ratio' in rows[('flow second', 0.5)]:
        rel = rows[('flow second', 0.5)]['ratio'] / ff05['ratio']
        assert results['relative']['flow second']['0.5'] == pytest.approx(rel)
        assert f"| flow second | 0.5 | {rel:.3f} |" in report
    for png in ('fluctuation_ratio_vs_dt.png', 'total_energy.png'):
        assert (out / png).stat().st_size > 1000


def test_md_starts_from_a_given_file(run, tmp_path):
    import openmm
    from smoothflow_torch.pipeline import Project, md
    from smoothflow_torch.pipeline.data import load
    project = Project(run['project'])
    frames = load(project.frames_path, project.kT, 20, 'test').positions[[5, 9, 17, 30]]
    np.savez(tmp_path / 'starts.npz', positions=frames)
    result = md(project, dt_fs=[0.5], ps=0.01, starts=2, samples=5, out=tmp_path / 'md', progress=False,
                starts_from=tmp_path / 'starts.npz')
    assert result['meta']['start_frames'] == [0, 2]
    assert 'Starts: frames [0, 2] of' in (tmp_path / 'md' / 'report.md').read_text()
    saved = json.loads((tmp_path / 'md' / 'results.json').read_text())
    assert saved['runs'] == json.loads(json.dumps(result['runs']))
    context = openmm.Context(project.system(), openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName('Reference'))
    for run_ in result['runs']:          # each run began at its start's frame: frames 0 and 2 of the file
        context.setPositions(frames[2 * run_['start']])
        e0 = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
        if run_['potential'] == 'force field':
            assert run_['epot_start'] == pytest.approx(e0, rel=1e-9)
        else:
            assert np.isfinite(run_['epot_start']) and run_['epot_start'] != pytest.approx(e0, rel=1e-3)
    with pytest.raises(ValueError, match='need'):
        md(project, dt_fs=[0.5], ps=0.01, starts=5, out=tmp_path / 'md', progress=False,
           starts_from=tmp_path / 'starts.npz')


def test_evaluate_and_md_read_another_frames_file(run, tmp_path):
    """--frames: a file without a split holds held-out frames only, its bias still weighing them
    (here every other held-out frame of the project, in reverse order): evaluate's NLL is theirs,
    md's start is drawn from them."""
    import openmm
    import torch
    from smoothflow_torch import load_model
    from smoothflow_torch.pipeline import Project, md
    project = Project(run['project'])
    with np.load(project.frames_path) as d:
        pick = np.flatnonzero(d['split'] == 1)[::-2]
        sub = {k: d[k][pick] for k in ('positions', 'forces', 'energies', 'bias')}
    np.savez(tmp_path / 'held_out.npz', **sub)
    _cli('evaluate', project.path, '--samples', '8', '--frames', tmp_path / 'held_out.npz', '--out', tmp_path / 'ev')
    ours = json.loads((tmp_path / 'ev' / 'evaluation.json').read_text())['results'][0]
    flow = load_model(project.model_path)
    x = torch.from_numpy(sub['positions'].astype(np.float64))
    nll = -flow.log_prob(x).detach().numpy()
    w = np.exp(sub['bias'].astype(np.float64) / project.kT)
    assert ours['test_frames'] == len(pick)
    assert ours['nll_nats'] == pytest.approx(np.average(nll, weights=w), rel=1e-9)
    result = md(project, dt_fs=[0.5], ps=0.01, starts=1, samples=5, out=tmp_path / 'md', progress=False,
                frames=tmp_path / 'held_out.npz')
    (i,) = result['meta']['start_frames']
    context = openmm.Context(project.system(), openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(sub['positions'][i].astype(np.float64))
    e0 = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    ff = [r for r in result['runs'] if r['potential'] == 'force field'][0]
    assert ff['epot_start'] == pytest.approx(e0, rel=1e-9)


def test_command_line_help_and_errors(sf, tmp_path, capsys):
    env = dict(os.environ)
    out = subprocess.run([sys.executable, '-m', 'smoothflow_torch.pipeline', '--help'], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0
    for step in ('prepare', 'simulate', 'hot-frames', 'train', 'evaluate', 'md'):
        assert f'smoothflow {step}' in out.stdout
    # a structure without hydrogens: refused with the hint, accepted with --add-hydrogens
    import openmm.app as app
    pdb = app.PDBFile(STRUCTURE)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.delete([a for a in modeller.topology.atoms() if a.element.symbol == 'H' and a.residue.name != 'NHE'])
    bare = tmp_path / 'bare.pdb'
    with open(bare, 'w') as f:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, f)
    from smoothflow_torch.pipeline.cli import main
    assert main(['prepare', str(bare), str(tmp_path / 'p')]) == 2
    assert '--add-hydrogens' in capsys.readouterr().err
    assert main(['prepare', str(bare), str(tmp_path / 'p'), '--add-hydrogens']) == 0
    assert json.loads((tmp_path / 'p' / 'project.json').read_text())['atoms'].__len__() == 20
    assert main(['prepare', str(bare), str(tmp_path / 'p')]) == 2          # no silent overwrite
    assert 'already holds a project' in capsys.readouterr().err
    shutil.rmtree(tmp_path / 'p')


def test_prepare_takes_a_given_zmatrix(sf, tmp_path):
    from openmmsmoothflow.zmatrix import buildZMatrix
    import openmm.app as app
    from smoothflow_torch.pipeline import prepare
    pdb = app.PDBFile(STRUCTURE)
    z = buildZMatrix(pdb.topology, pdb.positions)
    z[[7, 8]] = z[[8, 7]]                 # another valid placement order (both placed off row 3's atoms)
    text = tmp_path / 'z.txt'
    text.write_text('# a b c d\n' + '\n'.join(' '.join(map(str, row)) for row in z) + '\n')
    project = prepare(STRUCTURE, tmp_path / 'given', zmatrix=text)
    assert np.array_equal(project.zmatrix, z)
    bad = z.copy()
    bad[[3, 10]] = bad[[10, 3]]           # a row that refers to an atom placed later
    with pytest.raises(ValueError, match='placed in earlier rows'):
        prepare(STRUCTURE, tmp_path / 'bad', zmatrix=bad)


def test_ess_interval_brackets_known_cases():
    from smoothflow_torch.pipeline import weights
    assert weights.ess_interval(np.zeros(50)) == pytest.approx((1.0, 1.0), rel=1e-12)
    # half the samples at weight 1, half at weight 0: ESS/n 1/2 in every resample that keeps the mix
    lw = np.where(np.arange(400) % 2 == 0, 0.0, -np.inf)
    lo, hi = weights.ess_interval(lw)
    assert 0.4 < lo <= 0.5 <= hi < 0.6
    # one sample carrying nearly all the weight: ESS/n near 1/n, unless a resample misses it
    lw = np.zeros(100)
    lw[7] = 50.0
    lo, hi = weights.ess_interval(lw)
    assert lo == pytest.approx(0.01, rel=1e-6) and hi <= 1.0 + 1e-12


def test_init_from_keeps_the_start_models_prior_when_the_data_differ(run):
    """A flow fine-tuned from a model trained on other data starts as that model: its prior
    (fitted to the data, and not a state_dict tensor) comes from the start, not from the new
    data (before, a shipped flow fine-tuned on regenerated data began as another flow)."""
    import torch
    from smoothflow_torch import load_model
    from smoothflow_torch.pipeline import Project
    from smoothflow_torch.pipeline.data import load
    from smoothflow_torch.pipeline.model import build_flow
    project = Project(run['project'])
    start_path = run['project'] / 'runs' / 'first' / 'model.safetensors'
    start = load_model(start_path)
    frames = load(project.frames_path, project.kT, 20, 'train').positions
    other = frames[: max(4, len(frames) // 5)]          # another data set: another fitted prior
    model = dict(CONFIG['stages'][0]['model'], init_from=str(start_path))
    flow = build_flow(model, project.zmatrix, project.meta['atoms'], project.temperature, other, 0)
    fresh = build_flow(CONFIG['stages'][0]['model'], project.zmatrix, project.meta['atoms'],
                       project.temperature, other, 0)
    assert fresh.prior['mean'] != start.prior['mean']    # the data would give another prior
    x = torch.from_numpy(load(project.frames_path, project.kT, 20, 'test').positions[:6])
    assert torch.equal(flow.energy(x), start.energy(x))
    assert flow.prior == start.prior


def test_export_checkpoint_writes_the_stage_in_progress_as_the_run_would_have_exported_it(run, tmp_path):
    """`smoothflow train --export-checkpoint`: a stage stopped at step 2 of 4, exported, is the flow
    that a 2-step run of the same stage exports (constant learning rate, so the first two updates
    are the same), marked unfinished; refusals when there is nothing to export."""
    import torch
    from smoothflow_torch import load_model
    from smoothflow_torch.pipeline.cli import main
    from smoothflow_torch.pipeline import Project
    from smoothflow_torch.pipeline.data import load
    project = tmp_path / 'serine'
    shutil.copytree(run['project'], project, ignore=shutil.ignore_patterns('runs', 'evaluation', 'md'))
    stage = {**CONFIG['stages'][0], 'iterations': 4, 'lr_schedule': 'constant', 'eval_every': 0,
             'eval_samples': 0}
    paused, short = {**stage, 'name': 'paused'}, {**stage, 'name': 'short', 'iterations': 2}
    (tmp_path / 'paused.json').write_text(json.dumps(paused))
    (tmp_path / 'short.json').write_text(json.dumps(short))
    assert main(['train', str(project), str(tmp_path / 'paused.json'), '--export-checkpoint',
                 str(tmp_path / 'x.safetensors')]) == 2          # no checkpoint yet
    _cli('train', project, tmp_path / 'paused.json', '--stop-at', '2', '--no-progress')
    interim = tmp_path / 'interim.safetensors'
    _cli('train', project, tmp_path / 'paused.json', '--export-checkpoint', interim)
    _cli('train', project, tmp_path / 'short.json', '--no-progress')
    from smoothflow_torch.export import read_model_bytes
    meta = json.loads(read_model_bytes(interim.read_bytes())[1]['training'])
    assert meta['completed'] is False and meta['steps'] == 2 and meta['name'] == 'paused'
    _cli('train', project, tmp_path / 'paused.json', '--no-progress')      # on to step 4
    p = Project(project)
    x = torch.from_numpy(load(p.frames_path, p.kT, 20, 'test').positions[:8])
    with torch.no_grad():
        e_interim = load_model(interim).energy(x)
        e_short = load_model(project / 'runs' / 'short' / 'model.safetensors').energy(x)
        e_final = load_model(project / 'runs' / 'paused' / 'model.safetensors').energy(x)
    assert torch.allclose(e_interim, e_short, rtol=0, atol=1e-9)
    assert (e_interim - e_final).abs().max() > 1e-6     # step 2 is not step 4
    assert main(['train', str(project), str(tmp_path / 'short.json'), '--export-checkpoint',
                 str(tmp_path / 'y.safetensors')]) == 2          # every stage finished
    assert not (tmp_path / 'x.safetensors').exists() and not (tmp_path / 'y.safetensors').exists()


def _langevin_temperatures(system, x0, temperature, seed, n_samples):
    """The oracle of the hot-md tests: the kinetic temperature (3N degrees of freedom) every 100 fs
    of a Langevin run (middle, friction 1/ps, 0.5 fs, Reference) built from OpenMM alone."""
    import openmm
    import openmm.unit as unit
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, 1 / unit.picosecond,
                                                 0.5 * unit.femtoseconds)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(x0)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    gas = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    temps = []
    for _ in range(n_samples):
        integrator.step(200)
        ke = context.getState(getEnergy=True).getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temps.append(2 * ke / (3 * system.getNumParticles() * gas))
    return temps


def test_hot_md_reports_the_runs_kinetic_temperature_and_failures(run, tmp_path):
    """smoothflow hot-md: the kinetic temperature it reports is that of an independent Langevin run
    of the same flow, seed and start (3N degrees of freedom, sampled every 100 fs); a time step far
    too long is a failed run that does not hold; bad input is refused."""
    import openmm
    import openmmsmoothflow
    from smoothflow_torch.pipeline import Project
    from smoothflow_torch.pipeline.cli import main
    from smoothflow_torch.pipeline.data import load
    from smoothflow_torch.pipeline.hot_md import hot_md, repartition_hydrogen_mass
    project = Project(run['project'])
    model = run['project'] / 'model.safetensors'
    out = tmp_path / 'hot'
    _cli('hot-md', project.path, model, '--temperatures', '400', '--seeds', '3', '--ps', '1', '--dt-fs', '0.5',
         '--nve-ps', '0.05', '--nve-dt-fs', '0.25', '--start', '2', '--out', out)
    r = json.loads((out / 'hot_md.json').read_text())['results'][0]
    assert r['failure'] is None and r['ps_run'] == pytest.approx(1.0) and len(r['t_kin_tenths_k']) == 10
    assert r['nve']['failure'] is None and r['nve']['ps'] == pytest.approx(0.05)
    # the oracle: the same run built here from openmmsmoothflow and OpenMM alone
    x0 = load(project.frames_path, project.kT, 20, 'test').positions[2]
    ff = project.system()
    system = openmm.System()
    for i in range(ff.getNumParticles()):
        system.addParticle(ff.getParticleMass(i))
    openmmsmoothflow.addSmoothFlowForce(system, project.topology(), str(model), positions=x0)
    temps = _langevin_temperatures(system, x0, 400.0, 3, 10)
    assert r['t_kin_mean_k'] == pytest.approx(np.mean(temps), rel=1e-6)
    assert r['holds'] == (abs(np.mean(temps) - 400) <= 40 and r['max_bond_ratio'] <= 1.5)   # (the tiny flow heats)
    assert set(r['inverted_before_heating']) <= set(r['inverted_centres']) <= set(range(20))
    assert '| 400 K | 3 | 1.00 ps | none |' in (out / 'hot_md.md').read_text()
    meta = json.loads((out / 'hot_md.json').read_text())['meta']      # serine's CA, not its CH2 (CB)
    assert [project.meta['atoms'][i]['name'] for i in meta['stereocentres']] == ['CA']
    assert 'A stereocentre (four neighbours the bond graph tells apart: SER2:CA)' in (out / 'hot_md.md').read_text()
    # 20 fs with hydrogens: the run blows up, is reported as failed and does not hold
    failed = hot_md(project, model, temperatures=[2000.0], ps=2.0, dt_fs=20.0, out=tmp_path / 'fail')['results'][0]
    assert failed['failure'] is not None and not failed['holds'] and 'nve' not in failed
    assert failed['ps_run'] < 2.0
    # hydrogen mass repartitioning keeps the total mass
    masses = [ff.getParticleMass(i)._value for i in range(20)]
    repartition_hydrogen_mass(ff, project.topology(), 3.0)
    heavy = [ff.getParticleMass(i)._value for i in range(20)]
    assert sum(heavy) == pytest.approx(sum(masses), rel=1e-12)
    assert all(h == 3.0 for h, a in zip(heavy, project.meta['atoms']) if a['element'] == 'H')
    # a sound Langevin run whose velocity Verlet step is far too long: the NVE run fails, so the run does not hold
    blown = hot_md(project, model, temperatures=[400.0], seeds=[3], ps=0.2, dt_fs=0.5, nve_ps=1.0, nve_dt_fs=20.0,
                   start=2, out=tmp_path / 'nve')['results'][0]
    assert blown['failure'] is None and blown['nve']['failure'] is not None and not blown['holds']
    assert blown['nve']['ps'] < 1.0 and 'fails at' in (tmp_path / 'nve' / 'hot_md.md').read_text()
    assert main(['hot-md', str(project.path), str(tmp_path / 'none.safetensors')]) == 2
    assert main(['hot-md', str(project.path), str(model), '--temperatures', '0']) == 2
    assert main(['hot-md', str(project.path), str(model), '--start', '100000']) == 2
    assert main(['hot-md', str(project.path)]) == 2                                  # neither a model nor --force-field
    assert main(['hot-md', str(project.path), str(model), '--force-field']) == 2     # both


def test_hot_md_force_field_baseline_is_the_force_fields_own_langevin_run(run, tmp_path):
    """smoothflow hot-md --force-field: the same measurements with the project's force field; its
    kinetic temperature is that of a Langevin run of project.system() built here (same seed,
    start, sampling), and it has no wall count."""
    from smoothflow_torch.pipeline import Project
    from smoothflow_torch.pipeline.data import load
    project = Project(run['project'])
    out = tmp_path / 'ff'
    _cli('hot-md', project.path, '--force-field', '--temperatures', '500', '--seeds', '4', '--ps', '0.5',
         '--dt-fs', '0.5', '--nve-ps', '0.05', '--start', '1', '--out', out)
    result = json.loads((out / 'hot_md.json').read_text())
    r = result['results'][0]
    assert result['meta']['force_field'] == project.forcefield_label and result['meta']['model'] is None
    assert r['wall_count'] is None and r['nve']['failure'] is None
    x0 = load(project.frames_path, project.kT, 20, 'test').positions[1]
    temps = _langevin_temperatures(project.system(), x0, 500.0, 4, 5)
    assert r['t_kin_mean_k'] == pytest.approx(np.mean(temps), rel=1e-6)
    text = (out / 'hot_md.md').read_text()
    assert text.startswith('# Hot Langevin runs with the force field') and '| 500 K | 4 | 0.50 ps | none |' in text
    assert not (out / 'nve_before_failure.npz').exists()          # no NVE run failed
    # velocity Verlet at 2.9 fs from 1000 K fails after a few samples: the frames before the failure
    # (below twice the bath) are kept, in the form curvature_frames read; each one's potential
    # energy, evaluated here, is at most its recorded total energy (the kinetic part is >= 0)
    import openmm
    from smoothflow_torch.pipeline.hot_frames import load_positions
    from smoothflow_torch.pipeline.hot_md import hot_md
    blown = hot_md(project, force_field=True, temperatures=[1000.0], seeds=[3], ps=0.2, dt_fs=0.5, nve_ps=10.0,
                   nve_dt_fs=2.9, start=2, out=tmp_path / 'nve')['results'][0]
    n = blown['nve']['frames_before_failure']
    assert blown['nve']['failure'] is not None and n >= 2
    text = (tmp_path / 'nve' / 'hot_md.md').read_text()
    assert f'({n} frames before it kept)' in text
    assert f"Velocity Verlet at 2.9 fs after the bath, per bath: 1000 K: 1 of 1 fail, lasting " \
           f"{blown['nve']['failure']['time_ps']:.3g} ps in the median" in text
    context = openmm.Context(project.system(), openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    with np.load(tmp_path / 'nve' / 'nve_before_failure.npz') as kept:
        assert kept['positions'].shape == (n, 20, 3) and list(kept['run']) == [0] * n
        assert np.all(kept['time_ps'] < blown['nve']['failure']['time_ps']) and np.all(kept['t_kin_k'] <= 2000.0)
        assert np.all(kept['seed'] == 3) and np.all(kept['temperature'] == 1000.0)
        for x, e in zip(kept['positions'], kept['e_total_kj_mol']):
            context.setPositions(x.astype(float))
            assert context.getState(getEnergy=True).getPotentialEnergy()._value <= e + 1e-3
    assert load_positions(tmp_path / 'nve' / 'nve_before_failure.npz', 20).shape == (n, 20, 3)


def test_angle_deficit_is_zero_for_a_planar_centre_and_known_for_a_tetrahedral_one():
    from smoothflow_torch.pipeline.hot_md import angle_deficit, coordinated
    planar = np.array([[0, 0, 0], [1, 0, 0], [-0.5, 0.8660254037844386, 0], [-0.5, -0.8660254037844386, 0]], float)
    # three bonds of a regular tetrahedron: each pair at arccos(-1/3) = 109.47 degrees
    tetra = np.array([[0, 0, 0], [1, 1, 1], [1, -1, -1], [-1, 1, -1]], float)
    folded = np.array([[0, 0, 0], [1, 0, 0], [1, 0.01, 0], [1, 0, 0.01]], float)
    centres = coordinated(np.array([[0, 1], [0, 2], [3, 0]]), 4, 3)
    assert centres == [(0, (1, 2, 3))]
    d = angle_deficit(np.stack([planar, tetra, folded]), centres)[:, 0]
    assert d[0] == pytest.approx(0.0, abs=1e-9)
    assert d[1] == pytest.approx(360 - 3 * np.degrees(np.arccos(-1 / 3)), abs=1e-9)
    assert d[2] > 358


def test_handedness_changes_under_a_mirror_and_not_under_a_rotation_or_a_methyl_turn():
    """hot-md's inversion check: the sign at a four-coordinate centre flips for the mirror image
    (an L centre turned D) and stays for a rigid rotation and for a cyclic relabelling of three
    hydrogens (a methyl rotor's turn)."""
    from scipy.spatial.transform import Rotation
    from smoothflow_torch.pipeline.hot_md import coordinated, handedness
    tetra = np.array([[0, 0, 0], [1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    centres = coordinated(np.array([[0, 1], [0, 2], [0, 3], [4, 0]]), 5, 4)
    assert centres == [(0, (1, 2, 3, 4))]
    turned = Rotation.from_euler('xyz', [0.3, -1.1, 2.0]).apply(tetra)
    mirror = tetra * np.array([1, 1, -1])
    rotor = tetra[[0, 2, 3, 1, 4]]          # the three hydrogens 1, 2, 3 moved on by one place
    h = handedness(np.stack([tetra, turned, mirror, rotor]), centres)[:, 0]
    assert h[0] != 0 and h[1] == h[0] and h[2] == -h[0] and h[3] == h[0]


def test_stereocentres_are_the_centres_with_four_distinguishable_neighbours():
    """hot-md marks as stereocentres only the four-coordinate atoms whose neighbours the bond
    graph tells apart (known answers): alanine dipeptide's CA and nothing else (its three methyl
    carbons carry three equivalent hydrogens); CHFClBr yes, CH2FCl no; isobutane's central carbon
    no (two equal methyl branches), 2-butanol's C2 yes (methyl against ethyl, told apart only two
    bonds out)."""
    from openmm import app
    from smoothflow_torch.pipeline.hot_md import coordinated, stereocentres
    pdb = app.PDBFile(os.path.join(os.path.dirname(__file__), '..', '..', 'studies', 'alanine_dipeptide',
                                 'alanine_dipeptide.pdb'))
    pairs = np.array([(a.index, b.index) for a, b in pdb.topology.bonds()])
    elements = [a.element.symbol for a in pdb.topology.atoms()]
    names = [a.name for a in pdb.topology.atoms()]
    stereo = stereocentres(pairs, elements, coordinated(pairs, len(elements), 4))
    assert [names[i] for i in stereo] == ['CA']

    def centres_of(elements, bonds):
        pairs = np.array(bonds)
        return stereocentres(pairs, elements, coordinated(pairs, len(elements), 4))
    assert centres_of(['C', 'H', 'F', 'Cl', 'Br'], [(0, 1), (0, 2), (0, 3), (0, 4)]) == [0]
    assert centres_of(['C', 'H', 'H', 'F', 'Cl'], [(0, 1), (0, 2), (0, 3), (0, 4)]) == []
    # isobutane CH(CH3)3 and 2-butanol CH3-CH(OH)-CH2-CH3, heavy atoms first, then hydrogens
    iso = ['C', 'C', 'C', 'C'] + ['H'] * 10
    iso_bonds = [(0, 1), (0, 2), (0, 3), (0, 4)] + [(c, 5 + 3 * k + m) for k, c in enumerate((1, 2, 3)) for m in range(3)]
    assert centres_of(iso, iso_bonds) == []
    but = ['C', 'C', 'C', 'C', 'O'] + ['H'] * 10
    but_bonds = ([(0, 1), (1, 2), (2, 3), (1, 4), (4, 5), (1, 6)] + [(0, 7 + m) for m in range(3)]
                 + [(2, 10), (2, 11)] + [(3, 12 + m) for m in range(3)])
    assert centres_of(but, but_bonds) == [1]


def test_von_mises_torsions_are_fitted_as_scipy_fits_them(run):
    """model.prior.torsions = 'von_mises': each torsion's mean and kappa are the maximum-likelihood
    von Mises fit of the training frames (oracle: scipy.stats.vonmises.fit), kappa divided by
    width^2; the flow carries them, and init_from refuses a start whose torsions differ."""
    stats = pytest.importorskip('scipy.stats')
    import torch
    from smoothflow_torch import zmatrix as zm
    from smoothflow_torch.pipeline import Project
    from smoothflow_torch.pipeline.data import load
    from smoothflow_torch.pipeline.model import bond_bounds, build_flow, data_prior
    project = Project(run['project'])
    frames = load(project.frames_path, project.kT, 20, 'train').positions[:400]
    Z = np.asarray(project.zmatrix)
    lo, hi = bond_bounds(Z, frames, 1.0, 0.05)
    prior = data_prior({'kind': 'truncated_normal', 'width': 1.0, 'torsions': 'von_mises'}, Z, frames, lo, hi)
    wide = data_prior({'kind': 'truncated_normal', 'width': 2.0, 'torsions': 'von_mises'}, Z, frames, lo, hi)
    u = zm.normalize(*zm.internal_coordinates(torch.from_numpy(frames), Z), torch.as_tensor(lo),
                     torch.as_tensor(hi)).numpy()[:, 2 * 20 - 3:]
    assert len(prior['torsion_kappa']) == 17
    for t in range(17):
        kappa, loc, _ = stats.vonmises.fit(2 * np.pi * u[:, t] - np.pi, fscale=1)
        assert prior['torsion_kappa'][t] == pytest.approx(kappa, rel=1e-4, abs=1e-6), t
        assert wide['torsion_kappa'][t] == pytest.approx(kappa / 4, rel=1e-4, abs=1e-6), t
        d = (prior['torsion_mean'][t] - (loc + np.pi) / (2 * np.pi)) % 1.0
        assert min(d, 1 - d) < 1e-4 or kappa < 1e-3, t
    assert max(prior['torsion_kappa']) > 20          # planar groups are sharp
    # stiff_torsion_width narrows only the torsions fitted at kappa >= 10 (the planar groups)
    sharp = data_prior({'kind': 'truncated_normal', 'width': 1.0, 'torsions': 'von_mises',
                        'stiff_torsion_width': 0.5}, Z, frames, lo, hi)
    for k, k2 in zip(prior['torsion_kappa'], sharp['torsion_kappa']):
        assert k2 == pytest.approx(4 * k if k >= 10 else k, rel=1e-12)
    assert any(k >= 10 for k in prior['torsion_kappa']) and any(k < 10 for k in prior['torsion_kappa'])
    assert sharp['torsion_mean'] == prior['torsion_mean'] and sharp['sigma'] == prior['sigma']
    for bad, match in (({'stiff_torsion_width': 0.5}, "needs 'torsions': 'von_mises'"),
                       ({'torsions': 'von_mises', 'stiff_torsion_width': 0.0}, 'must be > 0'),
                       ({'torsions': 'von_mises', 'stiff_width': 0.5}, 'model.prior must be')):
        with pytest.raises(ValueError, match=match):
            data_prior({'kind': 'truncated_normal', **bad}, Z, frames, lo, hi)
    model = {**CONFIG['stages'][0]['model'], 'prior': {'kind': 'truncated_normal', 'torsions': 'von_mises'}}
    flow = build_flow(model, project.zmatrix, project.meta['atoms'], project.temperature, frames, 0)
    assert flow.config()['prior']['torsion_kappa'] == pytest.approx(prior['torsion_kappa'])
    start = run['project'] / 'model.safetensors'          # trained with uniform torsions
    with pytest.raises(ValueError, match='truncated-normal prior, this config a truncated-normal with von Mises'):
        build_flow({**model, 'init_from': str(start)}, project.zmatrix, project.meta['atoms'], project.temperature,
                   frames, 0)
    with pytest.raises(ValueError, match="'torsions': 'uniform' or 'von_mises'"):
        data_prior({'kind': 'truncated_normal', 'torsions': 'normal'}, Z, frames, lo, hi)


def test_joint_phi_states_count_which_residues_have_phi_above_zero_at_once():
    """Three phi torsions on random 6-atom frames: each joint state's MD population (weighted),
    flow fraction and flow reweighted fraction equal hand counts; the report prints the table."""
    from smoothflow_torch.pipeline import data as pdata
    import importlib
    from smoothflow_torch.pipeline.project import dihedral
    ev = importlib.import_module("smoothflow_torch.pipeline.evaluate")   # the package exports the function
    rng = np.random.default_rng(3)
    phis = [{"name": f"phi:ALA{i + 2}", "atoms": [i, i + 1, i + 2, i + 3]} for i in range(3)]
    md_x, flow_x = rng.normal(size=(400, 6, 3)), rng.normal(size=(300, 6, 3))
    md_w = rng.uniform(0.1, 2.0, 400)
    log_w = rng.normal(size=300)
    log_w[5] = -np.inf                                   # a sample the force field gives no mass
    every = pdata.Frames(md_x, np.zeros_like(md_x), np.zeros(400), md_w)
    angles = {t["name"]: dihedral(flow_x, t["atoms"]) for t in phis}
    rows = ev.joint_phi_states(phis, every, angles, log_w)
    md_signs = [tuple(bool(dihedral(md_x[i:i + 1], t["atoms"])[0] > 0) for t in phis) for i in range(400)]
    flow_signs = [tuple(bool(angles[t["name"]][i] > 0) for t in phis) for i in range(300)]
    assert len(rows) == len(set(md_signs) | set(flow_signs)) and rows[0]["state"] == "none"
    w = np.exp(log_w)
    for row in rows:
        pattern = tuple(f"ALA{i + 2}" in row["state"].split(" + ") for i in range(3))
        md_mass = sum(wi for wi, s in zip(md_w, md_signs) if s == pattern) / md_w.sum()
        assert row["md"] == pytest.approx(md_mass, rel=1e-12, abs=1e-15)
        assert row["flow"] == pytest.approx(flow_signs.count(pattern) / 300)
        rw = sum(wi for wi, s in zip(w, flow_signs) if s == pattern) / w.sum()
        assert row["flow_reweighted"]["estimate"] == pytest.approx(rw, rel=1e-12, abs=1e-15)
    assert sum(r["md"] for r in rows) == pytest.approx(1.0)
    project = type("P", (), {"name": "tiny", "forcefield_label": "ff", "temperature": 300.0, "torsions": []})()
    result = {"model": "m.safetensors", "sha256": "0" * 16, "transform": "smooth", "nll_nats": 0.0,
              "force_rmse_kj_mol_nm": 0.0, "outside_support": 0, "test_frames": 1, "ess_fraction": 0.5,
              "ess_fraction_95": [0.4, 0.6], "k_hat": 0.1, "invalid_samples": 1, "torsions": {},
              "joint_phi_states": rows}
    text = ev.report(project, [result], {"date": "today", "test_frames": 1, "samples": 300, "seeds": 1, "seed": 0,
                                         "seconds": 1.0}, [])
    assert "which residues have phi > 0 at once" in text
    assert f"| ALA2 + ALA3 | {100 * rows[[r['state'] for r in rows].index('ALA2 + ALA3')]['md']:.3f} % |" in text


def test_model_labels_tell_the_models_apart():
    import importlib
    ev = importlib.import_module("smoothflow_torch.pipeline.evaluate")
    assert ev.model_labels(["P/runs/smooth/model.safetensors", "P/runs/spline/model.safetensors"]) == ["smooth", "spline"]
    assert ev.model_labels(["P/model.safetensors", "other.safetensors"]) == ["flow", "other"]
    assert ev.model_labels(["a/runs/smooth/model.safetensors", "b/runs/smooth/model.safetensors"]) == \
        ["a/runs/smooth/model", "b/runs/smooth/model"]
    assert ev.model_labels(["x/m.safetensors", "y/m.safetensors", "z.safetensors"]) == ["x/m", "y/m", "z"]


def test_weights_pool_resumable_sets_and_recompute(run, tmp_path):
    """smoothflow weights: the pooled ESS/n, k-hat input and reweighted phi > 0 fraction equal
    ones recomputed from the same draws with energies from a fresh Context; the sets are saved
    and reused (a rerun with more seeds computes only the new one); a saved set of the wrong size
    is refused by name."""
    import openmm
    import torch
    from smoothflow_torch import load_model
    from smoothflow_torch.pipeline import Project, weights
    from smoothflow_torch.pipeline.project import dihedral
    project = Project(run['project'])
    model = run['project'] / 'model.safetensors'
    out, sets = tmp_path / 'out', tmp_path / 'sets'
    _cli('weights', project.path, model, '--samples', '48', '--seeds', '3', '--seed', '5', '--batch', '32',
         '--out', out, '--sets', sets)
    doc = json.loads((out / 'importance_weights.json').read_text())
    p = doc['results'][0]['pooled']
    assert p['seeds'] == [5, 6, 7] and p['indicator'] == 'phi:SER2' and len(p['sets']) == 3
    flow = load_model(model)
    context = openmm.Context(project.system(), openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName('Reference'))
    phi_atoms = project.torsion('phi')['atoms']
    log_w, up = [], []
    for seed in (5, 6, 7):
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            parts = [flow.sample(n, generator=gen, return_log_prob=True) for n in (32, 16)]
        xs = torch.cat([a for a, _ in parts]).numpy()
        lq = torch.cat([b for _, b in parts]).numpy()
        u = []
        for x in xs:
            context.setPositions(x)
            u.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
                openmm.unit.kilojoule_per_mole) / project.kT)
        log_w.append(-np.array(u) - lq)
        up.append(dihedral(xs, phi_atoms) > 0)
    lw = np.concatenate(log_w)
    w = np.exp(lw - lw.max())
    assert p['ess']['pooled'] == pytest.approx(w.sum() ** 2 / (w ** 2).sum() / len(w), rel=1e-6)
    assert p['fraction']['estimate'] == pytest.approx((w * np.concatenate(up)).sum() / w.sum(), rel=1e-6, abs=1e-12)
    top = p['largest'][0]
    assert top['relative_to_mean'] == pytest.approx(w.max() / w.mean(), rel=1e-6)
    assert log_w[top['set']][top['index']] == pytest.approx(lw.max(), rel=1e-9)
    assert p['k_hat'] == pytest.approx(weights.pareto_k_hat(lw), rel=1e-6)
    report = (out / 'importance_weights.md').read_text()
    assert f"| {100 * p['ess']['pooled']:.3g} % |" in report and 'SER2:N-SER2:CA-SER2:CB-SER2:OG' in report
    # a rerun with one more seed reuses the three saved sets and adds the fourth
    saved = sorted(sets.rglob('*.npz'))
    mtimes = [f.stat().st_mtime_ns for f in saved]
    _cli('weights', project.path, model, '--samples', '48', '--seeds', '4', '--seed', '5', '--batch', '32',
         '--out', out, '--sets', sets)
    assert [f.stat().st_mtime_ns for f in saved] == mtimes and len(list(sets.rglob('*.npz'))) == 4
    p4 = json.loads((out / 'importance_weights.json').read_text())['results'][0]['pooled']
    assert p4['ess']['per_set'][:3] == p['ess']['per_set']
    # a set of the wrong size under the right name is refused, naming the file
    with np.load(saved[0]) as d:
        np.savez(saved[0], **{k: d[k][:10] if k != 'names' else d[k] for k in d.files})
    from smoothflow_torch.pipeline.cli import main
    assert main(['weights', str(project.path), str(model), '--samples', '48', '--seeds', '1', '--seed', '5',
                 '--batch', '32', '--out', str(out), '--sets', str(sets)]) == 2


def test_weight_power_tempers_the_training_weights():
    """data.weight_power g: the likelihood's batch weights are w^g scaled to mean 1, after thinning;
    1 leaves the Boltzmann weights, 0 the frames as sampled; outside [0, 1] is an error."""
    from smoothflow_torch.pipeline.data import Frames
    from smoothflow_torch.pipeline.model import spread_indices
    from smoothflow_torch.pipeline.train import training_arrays
    rng = np.random.default_rng(3)
    n = 12
    w = np.exp(rng.normal(0, 2, n))
    w /= w.mean()
    frames = Frames(rng.normal(size=(n, 4, 3)), rng.normal(size=(n, 4, 3)), rng.normal(size=n), w)
    _, _, same = training_arrays(frames, None, 1.0)
    assert np.array_equal(same, w)
    _, _, half = training_arrays(frames, None, 0.5)
    assert np.allclose(half, np.sqrt(w) * n / np.sqrt(w).sum(), rtol=1e-14)
    assert np.allclose(half / half[0], np.sqrt(w / w[0]), rtol=1e-12)       # ratios are the powers
    _, _, flat = training_arrays(frames, None, 0.0)
    assert np.allclose(flat, 1.0)
    pos, _, thin = training_arrays(frames, 4, 0.5)
    idx = spread_indices(n, 4)
    assert np.array_equal(pos, frames.positions[idx])
    assert np.allclose(thin, np.sqrt(w[idx]) / np.sqrt(w[idx]).mean(), rtol=1e-14)
    for bad in (-0.1, 1.5, float('nan')):
        with pytest.raises(ValueError, match='weight_power'):
            training_arrays(frames, None, bad)
