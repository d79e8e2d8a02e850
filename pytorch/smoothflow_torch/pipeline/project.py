"""A pipeline project: one molecule, its force field and everything made for it, in one folder.

``prepare`` makes the folder; every later step reads ``project.json`` from it:

    project.json     the molecule (atoms, Z-matrix, torsions of interest), force field, temperature
    topology.pdb     the structure (with hydrogens; OpenMM's names); its positions start the MD
    zmatrix.txt      the Z-matrix, one readable line per row (openmmsmoothflow.zmatrix.describeZMatrix)
    train.json       a training config to edit (stages, architecture, losses; see train.py)
    data/            simulate: frames.npz, summary.json, the chains' checkpoints, bias.npz
    runs/<name>/     train: one folder per stage (log, checkpoints, model.safetensors)
    model.safetensors  train: the last stage's flow
    evaluation/      evaluate: report.md, evaluation.json, PNG plots
    md/              md: report.md, results.json, PNG plots

openmm is imported inside the functions that need it.
"""
from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

PROJECT_FORMAT = "smoothflow-project"
PROJECT_VERSION = 1
#: the alanine-dipeptide study's setting: Amber ff99SB-ILDN with OBC implicit solvent
DEFAULT_FORCEFIELD = ("amber99sbildn.xml", "amber99_obc.xml")
DEFAULT_TEMPERATURE = 300.0
MOLAR_GAS_CONSTANT = 0.00831446261815324   # kJ/mol/K, as OpenMM


def atom_label(atom) -> str:
    """``RESNAME<id>:NAME``, e.g. ``SER2:CA`` (the labels of zmatrix.txt and of torsion specs)."""
    return f"{atom.residue.name}{atom.residue.id}:{atom.name}"


class Project:
    """A project folder (module docstring). ``Project(path)`` opens one made by :func:`prepare`."""

    def __init__(self, path):
        self.path = Path(path).absolute()
        f = self.path / "project.json"
        if not f.exists():
            raise FileNotFoundError(f"{self.path} is not a pipeline project (no project.json): make one with "
                                    f"`smoothflow prepare STRUCTURE.pdb {self.path}`")
        self.meta = json.loads(f.read_text())
        if self.meta.get("format") != PROJECT_FORMAT or self.meta.get("version") != PROJECT_VERSION:
            raise ValueError(f"{f} is not a {PROJECT_FORMAT} version {PROJECT_VERSION} file")
        self.zmatrix = np.array(self.meta["zmatrix"], dtype=np.int64)
        self._pdb = None

    # ------------------------------------------------------------------ molecule
    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def n_atoms(self) -> int:
        return len(self.meta["atoms"])

    @property
    def temperature(self) -> float:
        return float(self.meta["temperature"])

    @property
    def kT(self) -> float:
        return MOLAR_GAS_CONSTANT * self.temperature

    @property
    def forcefield_files(self) -> List[str]:
        return list(self.meta["forcefield"])

    @property
    def forcefield_label(self) -> str:
        return " + ".join(self.forcefield_files)

    @property
    def torsions(self) -> List[dict]:
        """Torsions of interest: ``{"name", "atoms": [4 indices], "dim"}`` (backbone phi/psi/omega,
        and any given to prepare), for plots and the bias."""
        return list(self.meta["torsions"])

    def _read_pdb(self):
        if self._pdb is None:
            import openmm.app as app
            self._pdb = app.PDBFile(str(self.path / "topology.pdb"))
        return self._pdb

    def topology(self):
        return self._read_pdb().topology

    def positions(self) -> np.ndarray:
        """The structure's positions (N, 3) in nm."""
        import openmm.unit as unit
        return np.asarray(self._read_pdb().getPositions(asNumpy=True).value_in_unit(unit.nanometer), float)

    def forcefield(self):
        import openmm.app as app
        return app.ForceField(*self.forcefield_files)

    def system(self):
        """The force field's System: no cutoff, no constraints (the flow models every bond, so the
        force field must let every bond move), no centre-of-mass remover."""
        import openmm.app as app
        return self.forcefield().createSystem(self.topology(), nonbondedMethod=app.NoCutoff, constraints=None,
                                              rigidWater=False, removeCMMotion=False)

    def torsion(self, spec) -> dict:
        """A torsion of interest by name (``phi:SER2``; ``phi``, ``psi``, ``omega``: the first one), or a
        new one from four atoms (:func:`parse_atoms`)."""
        if isinstance(spec, dict):
            return spec
        for t in self.torsions:
            if spec == t["name"] or (spec in ("phi", "psi", "omega") and t["name"].startswith(spec + ":")):
                return t
        return make_torsion(self.topology(), self.zmatrix, spec)

    # ------------------------------------------------------------------ files
    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def frames_path(self) -> Path:
        return self.data_dir / "frames.npz"

    @property
    def model_path(self) -> Path:
        return self.path / "model.safetensors"

    def resolve(self, path) -> Path:
        """A path relative to the project folder (absolute paths stay)."""
        p = Path(path)
        return p if p.is_absolute() else self.path / p


# ---------------------------------------------------------------------- torsions
def parse_atoms(topology, spec) -> List[int]:
    """Four atom indices from ``"ACE1:C SER2:N SER2:CA SER2:C"`` (``RESNAME<id>:NAME`` or
    ``<id>:NAME``, separated by spaces or commas) or ``"4,6,8,15"`` (0-based indices)."""
    parts = [p for p in re.split(r"[\s,]+", str(spec).strip()) if p]
    if len(parts) != 4:
        raise ValueError(f"a torsion needs four atoms, got {len(parts)} in {spec!r} (give e.g. "
                         f"'ACE1:C SER2:N SER2:CA SER2:C' or four 0-based atom indices)")
    atoms = list(topology.atoms())
    out = []
    for p in parts:
        if p.isdigit():
            i = int(p)
            if i >= len(atoms):
                raise ValueError(f"atom index {i} in {spec!r} is out of range ({len(atoms)} atoms)")
            out.append(i)
            continue
        if ":" not in p:
            raise ValueError(f"{p!r} in {spec!r}: name an atom as RESNAME<id>:NAME (e.g. SER2:CA) or by index")
        res, name = p.rsplit(":", 1)
        hits = [a.index for a in atoms if a.name == name and res in (f"{a.residue.name}{a.residue.id}", a.residue.id)]
        if len(hits) != 1:
            raise ValueError(f"{p!r} in {spec!r} matches {len(hits)} atoms; the atoms are "
                             + ", ".join(atom_label(a) for a in atoms))
        out.append(hits[0])
    if len(set(out)) != 4:
        raise ValueError(f"the torsion {spec!r} names an atom twice")
    return out


def make_torsion(topology, zmatrix, spec, name: Optional[str] = None) -> dict:
    """A torsion of interest from four atoms (:func:`parse_atoms`), with its flow dimension when one
    Z-matrix row has it (None otherwise: it is then a function of several coordinates)."""
    from openmmsmoothflow.zmatrix import torsionDimension
    idx = parse_atoms(topology, spec)
    atoms = list(topology.atoms())
    try:
        dim = int(torsionDimension(zmatrix, idx))
    except ValueError:
        dim = None
    return {"name": name or "-".join(atom_label(atoms[i]) for i in idx), "atoms": idx, "dim": dim}


def backbone(topology, zmatrix) -> List[dict]:
    """phi, psi and omega of a peptide (openmmsmoothflow.zmatrix.backboneTorsions) as torsions of
    interest, named ``phi:SER2``; empty for a non-peptide."""
    from openmmsmoothflow.zmatrix import backboneTorsions, torsionDimension
    residues = list(topology.residues())
    out = []
    for kind, residue, atoms in backboneTorsions(topology):
        r = residues[residue] if isinstance(residue, int) else residue
        try:
            dim = int(torsionDimension(zmatrix, atoms))
        except ValueError:
            dim = None
        out.append({"name": f"{kind}:{r.name}{r.id}", "atoms": [int(a) for a in atoms], "dim": dim})
    return out


def dihedral(x: np.ndarray, idx: Sequence[int]) -> np.ndarray:
    """IUPAC dihedral (radians, in [-pi, pi]) of atoms ``idx`` over frames ``x`` (n, N, 3)."""
    x = np.asarray(x, float)
    b1 = x[:, idx[1]] - x[:, idx[0]]
    b2 = x[:, idx[2]] - x[:, idx[1]]
    b3 = x[:, idx[3]] - x[:, idx[2]]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.einsum("ij,ij->i", b1, n2)
    return np.arctan2(y, np.einsum("ij,ij->i", n1, n2))


def ramachandran_pairs(project: Project) -> List[tuple]:
    """(residue label, phi torsion, psi torsion) of every residue with both."""
    by = {t["name"]: t for t in project.torsions}
    return [(name.split(":")[1], by[name], by["psi:" + name.split(":")[1]])
            for name in by if name.startswith("phi:") and "psi:" + name.split(":")[1] in by]


# ---------------------------------------------------------------------- prepare
def read_zmatrix(zmatrix, topology) -> np.ndarray:
    """A given Z-matrix (array, or a JSON / text file), checked: one row per atom, every atom
    placed once, every reference placed before (docs/model-format.md section 3)."""
    if isinstance(zmatrix, (str, Path)):
        text = Path(zmatrix).read_text()
        try:
            zmatrix = json.loads(text)
        except json.JSONDecodeError:
            zmatrix = [[int(v) for v in line.split()[:4]] for line in text.splitlines()
                       if line.strip() and not line.lstrip().startswith("#")]
    z = np.asarray(zmatrix, dtype=np.int64)
    n = topology.getNumAtoms()
    if z.shape != (n, 4):
        raise ValueError(f"the Z-matrix has shape {z.shape}; the structure has {n} atoms, so (N, 4) = ({n}, 4)")
    if sorted(z[:, 0].tolist()) != list(range(n)):
        raise ValueError("the Z-matrix's first column must place every atom exactly once")
    placed = set()
    for r, row in enumerate(z):
        refs = [int(v) for v in row[1:min(r, 3) + 1]]
        if any(v not in placed for v in refs) or any(v != -1 for v in row[min(r, 3) + 1:]):
            raise ValueError(f"Z-matrix row {r} {row.tolist()}: its first min(row, 3) references must be atoms placed "
                             f"in earlier rows, the rest -1")
        placed.add(int(row[0]))
    return z


def warn_unguarded_torsions(zmatrix, topology) -> list:
    """Warn, naming the atoms, about torsions built on an implied angle
    (openmmsmoothflow.zmatrix.unguardedTorsions); returns their rows."""
    import warnings
    from openmmsmoothflow.zmatrix import unguardedTorsions
    rows = unguardedTorsions(zmatrix)
    if rows:
        atoms = list(topology.atoms())
        label = lambda i: f"{atoms[i].residue.name}{atoms[i].residue.id}:{atoms[i].name}"
        listed = "; ".join(f"row {r}: {'-'.join(label(int(i)) for i in zmatrix[r])}" for r in rows)
        warnings.warn(f"the Z-matrix has torsions whose reference angle (j-k-l) is no Z-matrix angle, so nothing "
                      f"keeps it from 0 or 180 degrees, where the torsion turns singular ({listed}); choose l so "
                      f"that j-k-l is the angle of j's own row (the builder does)", stacklevel=3)
    return rows


def _read_structure(path: Path):
    import openmm.app as app
    if path.suffix.lower() in (".cif", ".pdbx"):
        return app.PDBxFile(str(path))
    return app.PDBFile(str(path))


def prepare(structure, project, forcefield: Sequence[str] = DEFAULT_FORCEFIELD,
            temperature: float = DEFAULT_TEMPERATURE, torsions: Sequence[str] = (), add_hydrogens: bool = False,
            name: Optional[str] = None, train_config: Optional[dict] = None, overwrite: bool = False,
            zmatrix=None) -> Project:
    """Make a project folder from a structure and force-field files (module docstring).

    Parameters
    ----------
    structure : path
        PDB (or PDBx/mmCIF) of one molecule, with hydrogens unless ``add_hydrogens``.
    project : path
        The folder to create.
    forcefield : sequence of str
        OpenMM force-field XML files (``ForceField(*forcefield)``); implicit solvent belongs here
        (``amber99_obc.xml``); explicit water is not supported (the flow describes one molecule).
    temperature : float
        Kelvin, of the data, the flow and the MD.
    torsions : sequence of str
        Extra torsions of interest, each four atoms (``"ACE1:C SER2:N SER2:CA SER2:C"``), for the
        bias and the plots; a peptide's phi, psi and omega are found by themselves.
    add_hydrogens : bool
        Add missing hydrogens with Modeller (the force field's protonation at pH 7).
    name : str, optional
        Label in reports (default: the structure's file name).
    train_config : dict, optional
        train.json's content (default :func:`smoothflow_torch.pipeline.train.default_config`).
    overwrite : bool
        Replace an existing project.json.
    zmatrix : array-like or path, optional
        A Z-matrix to use instead of the builder's (rows ``[a, j, k, l]`` of 0-based atom indices,
        -1 where unused; a path to a JSON list of rows or a text file of four integers per line),
        e.g. a hand-written one such as the alanine-dipeptide study's.
    """
    import openmm
    import openmm.app as app
    from openmmsmoothflow.zmatrix import buildZMatrix, describeZMatrix

    from .train import default_config

    structure, out = Path(structure), Path(project)
    if (out / "project.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a project; choose another folder or pass overwrite")
    forcefield = list(forcefield)
    if not forcefield:
        raise ValueError("give at least one force-field XML file")
    if not (temperature > 0):
        raise ValueError(f"temperature must be > 0 K, got {temperature}")
    pdb = _read_structure(structure)
    ff = app.ForceField(*forcefield)
    topology, positions = pdb.topology, pdb.positions
    if add_hydrogens:
        modeller = app.Modeller(topology, positions)
        modeller.addHydrogens(ff, platform=openmm.Platform.getPlatformByName("Reference"))
        topology, positions = modeller.topology, modeller.positions
    waters = [r for r in topology.residues() if r.name in ("HOH", "WAT", "SOL")]
    if waters:
        raise ValueError(f"{structure} holds {len(waters)} water residues: the flow describes one molecule in "
                         f"vacuum or implicit solvent; remove the water (Modeller.deleteWater) and use an "
                         f"implicit-solvent force field file")
    try:
        ff.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    except ValueError as e:
        hint = "" if add_hydrogens else " (missing hydrogens? rerun with --add-hydrogens)"
        raise ValueError(f"the force field {forcefield} cannot parameterize {structure}{hint}: {e}") from None
    zmatrix = buildZMatrix(topology, positions) if zmatrix is None else read_zmatrix(zmatrix, topology)
    warn_unguarded_torsions(zmatrix, topology)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "topology.pdb", "w") as f:
        app.PDBFile.writeFile(topology, positions, f, keepIds=True)
    # read back, so that every later step sees exactly the saved topology (names, bonds)
    saved = app.PDBFile(str(out / "topology.pdb")).topology
    if [a.name for a in saved.atoms()] != [a.name for a in topology.atoms()]:
        raise RuntimeError("topology.pdb does not read back with the same atoms")
    interest = backbone(saved, zmatrix)
    for spec in torsions:
        interest.append(make_torsion(saved, zmatrix, spec))
    atoms = [{"name": a.name, "residue": a.residue.name, "residue_index": a.residue.index,
              "element": a.element.symbol} for a in saved.atoms()]
    meta = {"format": PROJECT_FORMAT, "version": PROJECT_VERSION, "name": name or structure.stem,
            "structure": str(structure), "forcefield": forcefield, "temperature": float(temperature),
            "atoms": atoms, "zmatrix": zmatrix.tolist(), "torsions": interest,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "openmm": openmm.__version__}
    (out / "project.json").write_text(json.dumps(meta, indent=1) + "\n")
    (out / "zmatrix.txt").write_text(describeZMatrix(zmatrix, saved) + "\n")
    cfg = train_config if train_config is not None else default_config()
    if not (out / "train.json").exists() or overwrite:
        (out / "train.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return Project(out)
