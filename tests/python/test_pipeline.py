"""The whole pipeline (smoothflow prepare / simulate / train / evaluate / md) on a tiny budget, for a
molecule used nowhere else: N-acetyl-L-serine amide, ACE-SER-NHE (tests/data/pipeline/, 20 atoms).

One module-scoped run through the command line's main() (seconds of MD with a phi bias, a
two-stage training of a few steps, 64 flow samples, NVE at two time steps), then checks of what
it wrote against independent computations: the flow in the C core (SmoothFlowForce) is finite,
equals the PyTorch flow and its forces match finite differences; the reports hold the numbers the
run produced; a rerun of simulate continues the chains instead of starting over.
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
    {'name': 'second', 'iterations': 3, 'weights': {'force_matching': 4e-3}, 'lr': 3e-4},
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
    assert set(rows) == {('flow', 0.5), ('flow', 1.0), ('force field', 0.5), ('force field', 1.0)}
    ff05, ff1 = rows[('force field', 0.5)], rows[('force field', 1.0)]
    assert ff05['failed'] == 0 and 0 < ff05['ratio'] < ff1['ratio'] < 0.2     # the dt^2 law's direction
    for r in results['summary']:
        if 'ratio' in r:
            assert f"| {r['potential']} | {r['dt_fs']:g} | {r['ratio']:.5g} |" in report
    if 'ratio' in rows[('flow', 0.5)]:
        rel = rows[('flow', 0.5)]['ratio'] / ff05['ratio']
        assert results['relative']['flow']['0.5'] == pytest.approx(rel)
        assert f"| flow | 0.5 | {rel:.3f} |" in report
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
    for step in ('prepare', 'simulate', 'train', 'evaluate', 'md'):
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
