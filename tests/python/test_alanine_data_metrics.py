"""Alanine dipeptide: the molecule and Z-matrix, the force field, the data loader, the metrics."""
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
import pytest

from alanine_dipeptide import data, forcefield, metrics, molecule
from alanine_dipeptide.zmatrix import PHI_DIM, PSI_DIM, ZMATRIX


def test_zmatrix_places_every_atom_once_after_its_references():
    placed = set()
    for r, row in enumerate(ZMATRIX):
        a = int(row[0])
        assert a not in placed
        refs = [int(v) for v in row[1:min(r, 3) + 1]]
        assert all(v in placed for v in refs) and len(set(refs + [a])) == len(refs) + 1
        placed.add(a)
    assert placed == set(range(molecule.N_ATOMS))


def test_zmatrix_bonds_are_chemical_bonds_and_hydrogens_sit_on_heavy_atoms():
    bonds = {tuple(sorted(b)) for b in molecule.BONDS}
    for row in ZMATRIX[1:]:
        assert tuple(sorted((int(row[0]), int(row[1])))) in bonds
        if molecule.ATOMS[int(row[0])][2] == "H":
            assert molecule.ATOMS[int(row[1])][2] != "H"
    # torsion references of heavy atoms are heavy atoms
    for row in ZMATRIX[3:]:
        if molecule.ATOMS[int(row[0])][2] != "H":
            assert all(molecule.ATOMS[int(v)][2] != "H" for v in row[1:])


def test_phi_and_psi_are_torsion_dimensions_of_the_zmatrix():
    # dims 2N-3+r-3 hold the torsion of row r; a dihedral read backwards is the same angle
    assert list(ZMATRIX[PHI_DIM - 41 + 3]) == list(molecule.PHI_ATOMS[::-1])
    assert list(ZMATRIX[PSI_DIM - 41 + 3]) == list(molecule.PSI_ATOMS[::-1])


@pytest.mark.parametrize("setting", forcefield.SETTINGS)
def test_force_field_builds_and_minimizes_the_standard_structure(setting):
    system = forcefield.system(setting)
    assert system.getNumParticles() == 22 and system.getNumConstraints() == 0
    # amber99sb-ildn's terms, implicit solvent only in the obc setting, a bond term per bond
    terms = {type(f).__name__: f for f in system.getForces()}
    assert sorted(terms) == sorted(["HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce",
                                    "NonbondedForce"] + (["GBSAOBCForce"] if setting == "obc" else []))
    bonds = {tuple(sorted(terms["HarmonicBondForce"].getBondParameters(i)[:2]))
             for i in range(terms["HarmonicBondForce"].getNumBonds())}
    assert bonds == {tuple(sorted(b)) for b in molecule.BONDS}
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(molecule.standard_positions() * unit.nanometer)
    e0 = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    openmm.LocalEnergyMinimizer.minimize(ctx, 1.0)
    state = ctx.getState(getEnergy=True, getForces=True)
    e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    # a minimum: lower than the start and (nearly) force free (OpenMM's tolerance: RMS of the
    # force components below 1 kJ/mol/nm)
    assert -200 < e < min(e0, 0.0)
    assert np.sqrt(np.mean(f ** 2)) < 1.0


def test_loader_reads_a_generated_file_and_splits_it(tmp_path):
    n = 10
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(n, 22, 3)).astype(np.float32)
    split = np.array([0] * 8 + [1] * 2, np.uint8)
    np.savez(tmp_path / "obc.npz", positions=pos, forces=2 * pos, energies=np.arange(n, dtype=np.float32),
             chain=np.zeros(n, np.int16), time_ps=np.arange(n, dtype=np.float32), split=split)
    train = data.load("obc", "train", tmp_path)
    test = data.load("obc", "test", tmp_path)
    assert len(train) == 8 and len(test) == 2 and train.positions.dtype == np.float64
    np.testing.assert_array_equal(test.energies, [8, 9])
    np.testing.assert_allclose(train.forces, 2 * train.positions)
    with pytest.raises(ValueError, match="split"):
        data.load("obc", "validation", tmp_path)
    with pytest.raises(FileNotFoundError, match="generate_data"):
        data.load("vacuum", "train", tmp_path)
    np.savez(tmp_path / "bad.npz", positions=pos[:, :5], forces=pos[:, :5], energies=np.zeros(n),
             split=split)
    with pytest.raises(ValueError, match="shapes"):
        data.load("bad", "all", tmp_path)


def test_ess_of_the_exact_density_is_n():
    rng = np.random.default_rng(1)
    x = rng.normal(size=1000)
    # the flow is the target: log w = -u(x) - log q(x) is constant
    u = 0.5 * x ** 2
    log_q = -0.5 * x ** 2 - 0.5 * np.log(2 * np.pi)
    assert metrics.effective_sample_size(metrics.log_weights(u, log_q)) == pytest.approx(1000)
    assert metrics.sampling_efficiency(metrics.log_weights(u, log_q)) == pytest.approx(1.0)


def test_ess_of_a_single_dominant_weight_is_one_and_a_known_mixture():
    assert metrics.effective_sample_size(np.array([0.0, -800.0, -900.0])) == pytest.approx(1.0)
    # weights 1,1,2,2: (6)^2 / (1+1+4+4) = 3.6
    assert metrics.effective_sample_size(np.log([1.0, 1.0, 2.0, 2.0]) + 123.0) == pytest.approx(3.6)


def test_kl_of_identical_histograms_is_zero_and_known_otherwise():
    h = np.random.default_rng(2).integers(0, 50, size=(30, 30))
    assert metrics.histogram_kl(h, h) == pytest.approx(0.0, abs=1e-12)
    # two bins, p = (1/2, 1/2), q = (1/4, 3/4): KL = (1/2) log 2 + (1/2) log (2/3)
    assert metrics.histogram_kl(np.array([5, 5]), np.array([2, 6])) == pytest.approx(
        0.5 * np.log(2.0) + 0.5 * np.log(2.0 / 3.0), rel=1e-5)
    g = h.copy()
    g[0, 0] += 500
    # KL(p || q) of the normalized histograms, each bin raised by the pseudocount 1e-6
    p, q = ((v.ravel() / v.sum() + 1e-6) / (1 + 900e-6) for v in (h, g))
    assert metrics.histogram_kl(h, g) == pytest.approx(np.sum(p * np.log(p / q)), rel=1e-10)
    assert metrics.histogram_kl(g, h) == pytest.approx(np.sum(q * np.log(q / p)), rel=1e-10)
    assert np.sum(p * np.log(p / q)) > 0.01
    with pytest.raises(ValueError, match=r"histograms differ in shape: \(900,\) vs \(150,\)"):
        metrics.histogram_kl(h, h[:5])


def test_free_energy_profile_of_a_known_distribution():
    bins = np.linspace(0, 2, 3)
    values = np.array([0.5] * 300 + [1.5] * 100)
    f = metrics.free_energy_profile(values, bins, kT=2.0)
    np.testing.assert_allclose(f, [0.0, 2.0 * np.log(3.0)])


def test_reference_summary_round_trip(tmp_path):
    n = 50
    rng = np.random.default_rng(3)
    pos = (molecule.standard_positions()[None] + 0.01 * rng.normal(size=(n, 22, 3))).astype(np.float32)
    split = np.array([0] * 40 + [1] * 10, np.uint8)
    np.savez(tmp_path / "obc.npz", positions=pos, forces=pos, energies=np.zeros(n, np.float32),
             chain=np.zeros(n, np.int16), time_ps=np.arange(n, dtype=np.float32), split=split)
    data.write_reference("obc", tmp_path, n_test=5)
    ref = data.load_reference("obc", tmp_path)
    assert len(ref.test) == 5 and ref.phi.shape == (n,)
    phi, psi = data.backbone_dihedrals(pos.astype(np.float64))
    np.testing.assert_allclose(ref.phi, phi, atol=1e-6)
    np.testing.assert_allclose(ref.weights, 1.0)
    # unbiased: systematic resampling picks held-out frames 0, 2, 4, 6, 8 (of 40..49)
    np.testing.assert_allclose(ref.test.positions, pos[40:50:2], atol=1e-7)


def test_biased_frames_carry_boltzmann_weights(tmp_path):
    """Frames of phi-biased chains get w = exp(V/kT) (mean 1); weighted averages undo the bias."""
    from alanine_dipeptide.generate_data import frame_weights, phi_population
    kt = forcefield.MOLAR_GAS_CONSTANT * forcefield.TEMPERATURE
    bias = np.array([0.0, -kt * np.log(4.0), 0.0, -kt * np.log(4.0)])
    np.testing.assert_allclose(frame_weights(bias), [1.6, 0.4, 1.6, 0.4])
    n = 4
    pos = np.tile(molecule.standard_positions()[None], (n, 1, 1)).astype(np.float32)
    np.savez(tmp_path / "obc.npz", positions=pos, forces=pos, energies=np.zeros(n, np.float32),
             chain=np.zeros(n, np.int16), time_ps=np.arange(n, dtype=np.float32),
             split=np.array([0, 0, 1, 1], np.uint8), bias=bias.astype(np.float32))
    np.testing.assert_allclose(data.load("obc", "test", tmp_path).weights, [1.6, 0.4], rtol=1e-6)
    # a biased chain that spends half its frames at phi > 0 with weight 1/4 there: 20 % unbiased
    phi = np.array([-1.0, 1.0, -1.0, 1.0])
    pop = phi_population(phi, frame_weights(bias), np.array([0, 0, 1, 1]))
    assert pop["phi_positive_fraction"] == pytest.approx(0.2)
    assert pop["phi_positive_fraction_per_chain"] == pytest.approx([0.2, 0.2])
    assert pop["phi_positive_fraction_stderr"] == pytest.approx(0.0)
    # resampling by weight: 5 of 6 picks land on the heavy frame
    idx = data.boltzmann_indices(np.array([5.0, 1.0]), 6)
    assert list(idx) == [0, 0, 0, 0, 0, 1]


def test_static_phi_bias_is_its_table_and_stays_out_of_the_stored_forces(tmp_path):
    """The bias force reproduces its table at phi, and a data chain stores the force field's
    forces and energy alone, with the bias energy beside them."""
    import json
    import openmm.unit as u
    from alanine_dipeptide import generate_data, phi_bias
    grid = np.linspace(-np.pi, np.pi, phi_bias.GRID)
    table = 5.0 * np.cos(grid) - 5.0
    system = forcefield.system("obc")
    phi_bias.add_static_bias(system, table)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    x = molecule.standard_positions()
    ctx.setPositions(x * u.nanometer)
    v = ctx.getState(getEnergy=True, groups={phi_bias.BIAS_GROUP}).getPotentialEnergy().value_in_unit(
        u.kilojoule_per_mole)
    phi = data.backbone_dihedrals(x[None])[0][0]
    assert v == pytest.approx(5.0 * np.cos(phi) - 5.0, abs=1e-3)
    with pytest.raises(ValueError, match="table"):
        phi_bias.add_static_bias(system, table[:-1])
    # a data chain of the study's project (generate_data: the pipeline's simulate under the
    # installed table), two frames after 1 ps of equilibration
    np.savez(tmp_path / "obc.bias.npz", phi=grid, bias=table, settings=json.dumps({"ns": 0.0}))
    project = generate_data.make_project("obc", tmp_path / "project")
    assert generate_data.install_bias(project, "obc", tmp_path)
    from smoothflow_torch import pipeline
    pipeline.simulate(project, ns=0.004, chains=1, interval_ps=2.0, equilibration_ps=1.0, bias="phi", progress=False)
    d = np.load(project.frames_path)
    ff = openmm.Context(forcefield.system("obc"), openmm.VerletIntegrator(0.001),
                        openmm.Platform.getPlatformByName("Reference"))
    for k in range(2):
        xk = d["positions"][k].astype(np.float64)
        ff.setPositions(xk * u.nanometer)
        s = ff.getState(getEnergy=True, getForces=True)
        np.testing.assert_allclose(d["forces"][k], s.getForces(asNumpy=True).value_in_unit(
            u.kilojoule_per_mole / u.nanometer), rtol=1e-4, atol=0.05)
        assert d["energies"][k] == pytest.approx(s.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole),
                                                 abs=0.05)
        phik = data.backbone_dihedrals(xk[None])[0][0]
        assert d["bias"][k] == pytest.approx(5.0 * np.cos(phik) - 5.0, abs=1e-2)


def test_shipped_reference_matches_its_provenance():
    """The shipped summary (data/alanine_dipeptide/obc.reference.npz) agrees with obc.json."""
    import json
    ref = data.load_reference("obc")
    meta = json.loads((data.DATA_DIR / "obc.json").read_text())
    assert len(ref.phi) == meta["frames"] == len(ref.weights)
    assert np.average(ref.phi > 0, weights=ref.weights) == pytest.approx(meta["phi_positive_fraction"], abs=1e-4)
    assert np.mean(ref.phi > 0) == pytest.approx(meta["phi_positive_fraction_biased"], abs=1e-4)


def test_well_depth_of_known_profiles():
    r = np.linspace(-1, 1, 401)
    assert metrics.well_depth(30.0 * np.tanh(5 * r) ** 2) == pytest.approx(30.0 * np.tanh(5.0) ** 2, rel=1e-12)
    # the lower side decides: a Morse well can be left towards long bonds only
    morse = 50.0 * (1 - np.exp(-3 * r)) ** 2
    assert metrics.well_depth(morse) == pytest.approx(morse[-1])
    assert metrics.well_depth(np.where(np.abs(r) < 0.5, r ** 2, np.inf)) == np.inf
    assert metrics.well_depth(r ** 2 + 7.0) == pytest.approx(1.0)


def test_stiffness_ratio_of_the_flow_against_itself_and_a_scaled_copy():
    """The evaluation's curvature ratio is 1 when the 'force field' is the flow itself and 1/2
    when it is twice the flow (up to a constant)."""
    import torch
    from alanine_dipeptide import evaluate
    from smoothflow_torch import load_model
    from pathlib import Path
    flow = load_model(Path(__file__).resolve().parents[2] / "models/alanine_dipeptide/smooth.safetensors")
    frames = data.load_reference("obc").test
    itself = lambda x: flow.energy(torch.from_numpy(x)).detach().numpy() + 3.0
    twice = lambda x: 2 * flow.energy(torch.from_numpy(x)).detach().numpy()
    one = evaluate.stiffness_ratios(flow, frames, itself, n_frames=1)
    half = evaluate.stiffness_ratios(flow, frames, twice, n_frames=1)
    assert one["stiffness_ratio_bonds"] == pytest.approx(1.0, rel=1e-9)
    assert one["stiffness_ratio_angles"] == pytest.approx(1.0, rel=1e-9)
    assert half["stiffness_ratio_angles"] == pytest.approx(0.5, rel=1e-9)
    depths = evaluate.well_depths(flow, frames, n_frames=1, grid=25)
    # recomputed: along each bond and angle u_d over [0.02, 0.98] (25 points), the others at
    # the first held-out frame, the depth of -kT log p_U; bonds are the first 21 coordinates
    u0 = flow.internal_coordinates(torch.from_numpy(frames.positions[:1]))[0]
    grid = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)
    want = []
    for d in range(flow.n_interval):
        u = u0.repeat(25, 1)
        u[:, d] = grid
        want.append(metrics.well_depth(-flow.kT * flow.log_prob_u(u).detach().numpy()))
    want = np.array(want)
    assert np.isfinite(want).all()      # the support is bounded, so every well is finite
    assert depths["well_depth_bonds_kj_mol"] == pytest.approx(want[:21].min(), rel=1e-12)
    assert depths["well_depth_angles_kj_mol"] == pytest.approx(want[21:].min(), rel=1e-12)
    assert depths["well_depth_median_kj_mol"] == pytest.approx(np.median(want), rel=1e-12)
    assert depths["shallowest_well"] == flow.describe_dimension(int(np.argmin(want)))


def test_evaluation_cache_reuses_only_the_same_model_and_settings(tmp_path, monkeypatch):
    """evaluate_cached computes once per model file and settings, and recomputes when either
    changes; a reused result carries the angles the plots need."""
    from alanine_dipeptide import evaluate
    calls = []

    def fake(path, test, reference, ff, n_samples, seed, bins):
        calls.append((path.read_bytes(), n_samples))
        return {"transform": "smooth", "label": "x", "model": str(path), "sampling_efficiency": 0.5,
                "_angles": (np.arange(3.0), np.arange(3.0) + 1, np.ones(3))}
    monkeypatch.setattr(evaluate, "evaluate_model", fake)
    model, cache = tmp_path / "a.safetensors", tmp_path / "cache"
    model.write_bytes(b"one")
    args = (None, None, None, 10, 7, 60)
    first = evaluate.evaluate_cached(model, cache, "obc", *args)
    again = evaluate.evaluate_cached(model, cache, "obc", *args)
    assert len(calls) == 1 and again["sampling_efficiency"] == 0.5
    assert np.array_equal(again["_angles"][1], first["_angles"][1])
    evaluate.evaluate_cached(model, cache, "obc", None, None, None, 20, 7, 60)   # other sample count
    model.write_bytes(b"two")                                                     # other model
    evaluate.evaluate_cached(model, cache, "obc", *args)
    assert [c for c in calls] == [(b"one", 10), (b"one", 20), (b"two", 10)]


def test_evaluation_cache_key_follows_the_computing_code_not_the_report(tmp_path, monkeypatch):
    """A change to evaluate.py or metrics.py gives a new key; the report's layout
    (results_report.py) is not part of it."""
    from alanine_dipeptide import evaluate, results_report
    model = tmp_path / "a.safetensors"
    model.write_bytes(b"one")
    key = lambda: evaluate._cache_key(model, 10, 7, 60, "obc")
    before = key()
    for module in (evaluate, metrics, results_report):
        copy = tmp_path / Path(module.__file__).name
        copy.write_text(Path(module.__file__).read_text() + "\n# changed\n")
        monkeypatch.setattr(module, "__file__", str(copy))
        changed = key()
        monkeypatch.undo()
        assert (changed != before) == (module is not results_report), module.__name__
    assert key() == before


def test_sampling_efficiency_interval_brackets_the_estimate_and_is_exact_for_equal_weights():
    equal = np.zeros(500)
    assert metrics.sampling_efficiency_interval(equal) == pytest.approx((1.0, 1.0))
    lw = np.random.default_rng(1).normal(0.0, 1.0, 20000)      # ESS/n = exp(-1) for n -> inf
    lo, hi = metrics.sampling_efficiency_interval(lw, n_boot=100)
    assert lo < metrics.sampling_efficiency(lw) < hi and lo < np.exp(-1.0) < hi and hi - lo < 0.05


def test_report_lists_the_sampling_efficiency_with_its_interval(tmp_path):
    from alanine_dipeptide import results_report
    r = {"label": "smooth", "transform": "smooth", "nll_nats": -218.5, "force_rmse_kj_mol_nm": 73.6,
         "sampling_efficiency": 0.4139, "sampling_efficiency_95": [0.3911, 0.4389],
         "kl_phi_psi_flow": 0.03, "kl_phi_psi_reweighted": 0.04, "phi_positive_fraction_flow": 0.018,
         "phi_positive_fraction_reweighted": 0.022, "well_depth_bonds_kj_mol": 160.0,
         "well_depth_angles_kj_mol": 320.0, "well_depth_median_kj_mol": 229.0, "shallowest_well": "bond 12-10",
         "stiffness_ratio_bonds": 1.0, "stiffness_ratio_angles": 0.93}
    meta = {"date": "d", "commit": "c", "machine": "m", "samples": 10, "test_frames": 5, "setting": "obc",
            "reference_phi_positive": 0.02}
    results_report.write_report([r], meta, tmp_path, tmp_path / "results.md")
    row = next(l for l in (tmp_path / "results.md").read_text().splitlines() if l.startswith("| smooth | -218.50"))
    assert "| 41.4 % (39.1-43.9 %) | 42 % |" in row


def test_free_energy_figure_gives_each_flow_its_own_phi_and_psi_panels():
    """Four flows: eight titled panels, each with the reference, the flow and its reweighting
    (three curves), and the grid's spare panels hidden."""
    from alanine_dipeptide import results_report
    rng = np.random.default_rng(0)
    angles = lambda n: (rng.uniform(-np.pi, np.pi, n), rng.uniform(-np.pi, np.pi, n), np.ones(n))
    results = [{"label": f"flow {i}", "_angles": angles(2000)} for i in range(4)]
    fig = results_report._free_energy_figure(results, angles(2000), bins=12)
    shown = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in shown] == [f"flow {i}: {a}" for i in range(4) for a in ("phi", "psi")]
    assert all(len(ax.get_lines()) == 3 for ax in shown)
    assert len(fig.axes) == 2 * results_report.FREE_ENERGY_FLOWS_PER_ROW * 2   # two rows of three flows


def test_nll_gap_is_zero_on_the_same_frames_and_subsets_draw_without_replacement():
    """nll_gap compares a training subset with the held-out frames: with both the same frames
    the gap is exactly 0, and a subset holds distinct frames of the set it came from."""
    from alanine_dipeptide import nll_gap
    from smoothflow_torch import load_model
    from pathlib import Path
    flow = load_model(Path(__file__).resolve().parents[2] / "models/alanine_dipeptide/smooth.safetensors")
    frames = data.load_reference("obc").test
    r = nll_gap.nll_gap(flow, frames, frames, n_frames=len(frames), seed=0)
    assert r["gap"] == 0.0 and r["train_force_rmse"] == r["test_force_rmse"]
    part = nll_gap.subset(frames, 50, seed=3)
    rows = {tuple(np.round(x.ravel()[:6], 6)) for x in part.positions}
    assert len(part) == 50 and len(rows) == 50
    assert all(any(np.array_equal(x, y) for y in frames.positions) for x in part.positions[:5])
    # frames of unequal weight (as from biased chains)
    weights = np.random.default_rng(4).uniform(0.2, 2.0, 50)
    part = data.Frames(part.positions, part.forces, part.energies, weights)
    r = nll_gap.nll_gap(flow, part, frames, n_frames=50, seed=0)
    # weighted mean -log p(x) of each set, recomputed
    import torch

    def nll(f):
        lp = flow.log_prob(torch.from_numpy(f.positions)).detach().numpy()
        return -np.sum(f.weights * lp) / np.sum(f.weights)
    assert r["train_nll"] == pytest.approx(nll(part), rel=1e-12)
    assert r["test_nll"] == pytest.approx(nll(frames), rel=1e-12)
    assert r["gap"] == pytest.approx(nll(frames) - nll(part), rel=1e-9)


def test_generate_data_keeps_the_shipped_summary_and_reference(tmp_path):
    """A rerun of generate_data writes its <setting>.json and .reference.npz beside the project's
    data when the shipped ones exist (they back the documented numbers), into the data folder
    when none is there or when told to replace them."""
    from types import SimpleNamespace
    from alanine_dipeptide import generate_data
    project = SimpleNamespace(data_dir=tmp_path / "project" / "data")
    out = tmp_path / "ship"
    out.mkdir()
    dest = generate_data.summary_destinations(project, "obc", out, replace_shipped=False)
    assert dest == (out / "obc.json", out / "obc.reference.npz", False)
    (out / "obc.reference.npz").write_bytes(b"shipped")
    dest = generate_data.summary_destinations(project, "obc", out, replace_shipped=False)
    assert dest == (project.data_dir / "obc.json", project.data_dir / "obc.reference.npz", True)
    dest = generate_data.summary_destinations(project, "obc", out, replace_shipped=True)
    assert dest == (out / "obc.json", out / "obc.reference.npz", False)
    with pytest.raises(SystemExit):
        generate_data.main(["--help"])
