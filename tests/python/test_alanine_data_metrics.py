"""Alanine dipeptide: the molecule and Z-matrix, the force field, the data loader, the metrics."""
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
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(molecule.standard_positions() * unit.nanometer)
    openmm.LocalEnergyMinimizer.minimize(ctx)
    e = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert -200 < e < 0


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


def test_kl_of_identical_histograms_is_zero_and_positive_otherwise():
    h = np.random.default_rng(2).integers(0, 50, size=(30, 30))
    assert metrics.histogram_kl(h, h) == pytest.approx(0.0, abs=1e-12)
    g = h.copy()
    g[0, 0] += 500
    assert metrics.histogram_kl(h, g) > 0.01
    with pytest.raises(ValueError):
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
    np.testing.assert_allclose(ref.test.positions[-1], pos[-1], atol=1e-7)


def test_shipped_reference_matches_its_provenance():
    """The shipped summary (data/alanine_dipeptide/obc.reference.npz) agrees with obc.json."""
    import json
    ref = data.load_reference("obc")
    meta = json.loads((data.DATA_DIR / "obc.json").read_text())
    assert len(ref.phi) == meta["frames"]
    assert np.mean(ref.phi > 0) == pytest.approx(meta["phi_positive_fraction"], abs=1e-4)
