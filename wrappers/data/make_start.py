"""Write ala2_start.txt: the starting state of the engine-wrapper examples.

    python wrappers/data/make_start.py [--out wrappers/data/ala2_start.txt]

The state the C and Fortran examples (wrappers/c/example_md.c,
wrappers/fortran/example_md.f90) integrate from, and tests/python/test_engine_wrappers.py
gives OpenMM:
  - positions: the first held-out frame of the study's reference MD,
    alanine_dipeptide.data.load_reference('obc').test.positions[0] (nm);
  - masses: the element masses OpenMM's element table gives the atoms of
    alanine_dipeptide.molecule (amu);
  - velocities: a Maxwell-Boltzmann draw at 300 K from numpy's default generator with a
    fixed seed, then the centre-of-mass velocity removed (nm/ps).
Atoms are in the model's atom order, which is the order of alanine_dipeptide.molecule.ATOMS;
the script checks residues and elements against the `atoms` entry of the shipped smooth flow.

Numbers are written as Python's repr (the shortest text that reads back as the same double),
so every reader that rounds correctly (C's strtod, gfortran's list-directed input, numpy) gets
the same bits.  Never imports torch.
"""
import argparse
import json
from pathlib import Path

import numpy as np
from safetensors import safe_open

from alanine_dipeptide import data, forcefield, molecule

HERE = Path(__file__).resolve().parent
MODEL = HERE.parents[1] / "models" / "alanine_dipeptide" / "smooth.safetensors"
SEED = 2024
TEMPERATURE = forcefield.TEMPERATURE  # K


def model_atoms(path: Path) -> list:
    """(residue, element) of each model atom, from the model file's configuration (the names
    follow a convention, OpenMM's in the shipped flows, Amber's in alanine_dipeptide.molecule)."""
    with safe_open(str(path), framework="numpy") as f:
        config = json.loads(f.metadata()["config"])
    return [(a["residue"], a["element"]) for a in config["atoms"]]


def masses() -> np.ndarray:
    """Element masses (amu) of the molecule's atoms, as OpenMM's element table has them."""
    import openmm.unit as unit
    return np.array([atom.element.mass.value_in_unit(unit.dalton) for atom in molecule.topology().atoms()])


def maxwell_boltzmann(m: np.ndarray, seed: int) -> np.ndarray:
    """Velocities (n, 3) in nm/ps drawn at TEMPERATURE, centre-of-mass velocity removed."""
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(forcefield.MOLAR_GAS_CONSTANT * TEMPERATURE / m)  # nm/ps: kJ/mol/amu = (nm/ps)^2
    v = rng.standard_normal((len(m), 3)) * sigma[:, None]
    return v - (m[:, None] * v).sum(axis=0) / m.sum()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "ala2_start.txt"))
    args = ap.parse_args()

    expected = [(res, element) for res, _, element in molecule.ATOMS]
    if model_atoms(MODEL) != expected:
        raise SystemExit(f"{MODEL}: its atom order differs from alanine_dipeptide.molecule.ATOMS")
    x = data.load_reference("obc").test.positions[0]
    m = masses()
    v = maxwell_boltzmann(m, SEED)
    ekin = 0.5 * float((m[:, None] * v * v).sum())
    t_kin = 2 * ekin / (3 * len(m) * forcefield.MOLAR_GAS_CONSTANT)

    lines = [
        "# Alanine dipeptide starting state for the engine-wrapper examples (wrappers/README.md).",
        "# Written by wrappers/data/make_start.py: positions = the first held-out frame of the",
        "# study's reference MD (load_reference('obc').test.positions[0]), OpenMM's element masses,",
        f"# velocities drawn from Maxwell-Boltzmann at {TEMPERATURE:g} K (numpy default_rng({SEED}))",
        f"# with the centre-of-mass velocity removed: E_kin {ekin:.6f} kJ/mol ({t_kin:.2f} K over 3N dof).",
        "# Atoms in the model's order (models/alanine_dipeptide/*.safetensors, alanine_dipeptide.molecule).",
        "# Lines starting with '#' are comments; then the number of atoms; then one line per atom:",
        "#   mass (amu)  x y z (nm)  vx vy vz (nm/ps)",
        str(len(m)),
    ]
    for i in range(len(m)):
        lines.append(" ".join(repr(float(t)) for t in (m[i], *x[i], *v[i])))
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}: {len(m)} atoms, E_kin {ekin:.6f} kJ/mol ({t_kin:.2f} K)")


if __name__ == "__main__":
    main()
