"""The bounded-well study (studies/alanine_dipeptide/bounded_wells.py): its replacement bonds
have the force field's minimum and curvature and the stated depth, and one short NVE run per
case reports what it should."""
import numpy as np
import openmm
import openmm.unit as unit
import pytest

from alanine_dipeptide import bounded_wells, data, forcefield


def _energy(system, x):
    c = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    c.setPositions(x)
    return c.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


@pytest.mark.parametrize("shape", ["tanh2", "morse"])
def test_bounded_bonds_match_the_force_field_near_r0_and_level_off_at_depth(shape):
    x = data.load_reference("obc").test.positions[0]
    harmonic = bounded_wells.bounded_system("harmonic", 0.0)
    deep, shallow = bounded_wells.bounded_system(shape, 1e6), bounded_wells.bounded_system(shape, 30.0)
    # a very deep well is the harmonic bond to high accuracy at thermal bond lengths
    assert _energy(deep, x) == pytest.approx(_energy(harmonic, x), abs=0.05)
    # only the bonds: pull the last atom (a methyl H, one bond) 1 nm out; that bond then gives D
    bonds_only = openmm.System()
    for _ in range(22):
        bonds_only.addParticle(1.0)
    well = next(f for f in shallow.getForces() if isinstance(f, openmm.CustomBondForce))
    bonds_only.addForce(openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(well)))
    i, j, r0, _ = next(b for b in bounded_wells.bonds_of(harmonic) if 21 in b[:2])
    other = j if i == 21 else i
    far = x.copy()
    far[21] = x[other] + (r0 + 1.0) * (x[21] - x[other]) / np.linalg.norm(x[21] - x[other])
    rise = _energy(bonds_only, far) - _energy(bonds_only, x)
    assert rise == pytest.approx(30.0, abs=1.0)   # minus the bond's thermal energy at x (< 1 kJ/mol)


def test_one_nve_run_per_outcome():
    x = data.load_reference("obc").test.positions[0]
    ok = bounded_wells.nve(("harmonic", 0.0, 1.0, 0.2, 0, x, 100))
    assert not ok["failed"] and 0 < ok["ratio"] < 0.2
    lost = bounded_wells.nve(("tanh2", 5.0, 2.0, 2.0, 0, x, 100))   # 2 kT wells: bonds leave at once
    assert lost["failed"] and lost["ratio"] is None
    rows = bounded_wells.summarize([ok, lost, {**ok, "start": 1, "ratio": 0.3}])
    assert [(r["shape"], r["failed"], r["runs"]) for r in rows] == [("harmonic", 0, 2), ("tanh2", 1, 1)]
    assert rows[0]["ratio"] == pytest.approx((ok["ratio"] + 0.3) / 2)
