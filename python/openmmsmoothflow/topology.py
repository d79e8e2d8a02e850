"""Map a SmoothFlow model's atoms onto an OpenMM Topology.

A model file names its atoms (atom name, residue name, residue index within the
molecule).  The Topology is matched residue by residue and atom by atom by
name, as openmm-ml's createSystem does, and may hold several copies of the
molecule: each copy becomes one molecule of the SmoothFlowForce.
"""
import os

from .smoothflow import SmoothFlowForce

__all__ = ['mapModelToTopology', 'addSmoothFlowForce']


def _describeResidue(residue):
    return f"{residue.name} {residue.id} (residue index {residue.index}, chain {residue.chain.index})"


def _describeModelAtom(force, a):
    return (f"model atom {a} '{force.getModelAtomName(a)}' of model residue "
            f"{force.getModelAtomResidueIndex(a)} '{force.getModelAtomResidueName(a)}'")


def _selectedAtoms(topology, atoms):
    allAtoms = list(topology.atoms())
    if atoms is None:
        return allAtoms
    selected = []
    for i in atoms:
        if not 0 <= i < len(allAtoms):
            raise ValueError(f"atom index {i} is out of range: the Topology has {len(allAtoms)} atoms")
        selected.append(allAtoms[i])
    return selected


def mapModelToTopology(force, topology, atoms=None):
    """Find the copies of a model's molecule in a Topology.

    Parameters
    ----------
    force : SmoothFlowForce
        the force whose model is mapped (only its model is used)
    topology : openmm.app.Topology
        the Topology to search
    atoms : iterable of int, optional
        the indices of the atoms the model applies to; all atoms by default.
        Their residues, in order, must be whole copies of the model's residues.

    Returns
    -------
    list of list of int
        one list per copy: the Topology atom index of each model atom, in
        model atom order (what SmoothFlowForce.addMolecule expects)

    Raises
    ------
    ValueError
        naming the residue or atom that does not match the model
    """
    numAtoms = force.getNumModelAtoms()
    selected = _selectedAtoms(topology, atoms)
    if not force.hasModelAtomInfo():
        # Without names, only the order can be used.
        if len(selected) == 0 or len(selected) % numAtoms != 0:
            raise ValueError(f"the model file names no atoms, so the {len(selected)} selected atoms must be whole "
                             f"copies of its {numAtoms} atoms in model order")
        indices = [atom.index for atom in selected]
        return [indices[i:i + numAtoms] for i in range(0, len(indices), numAtoms)]

    # The model's residues: index -> name.
    modelResidues = {}
    for a in range(numAtoms):
        modelResidues.setdefault(force.getModelAtomResidueIndex(a), force.getModelAtomResidueName(a))
    numModelResidues = max(modelResidues) + 1
    if sorted(modelResidues) != list(range(numModelResidues)):
        raise ValueError(f"the model's residue indices {sorted(modelResidues)} are not 0, 1, 2, ...")

    # The selected atoms grouped by residue, residues in order of appearance.
    residues = []
    atomsOfResidue = {}
    for atom in selected:
        if atom.residue.index not in atomsOfResidue:
            residues.append(atom.residue)
            atomsOfResidue[atom.residue.index] = []
        atomsOfResidue[atom.residue.index].append(atom)
    if len(residues) == 0 or len(residues) % numModelResidues != 0:
        expected = ', '.join(modelResidues[r] for r in range(numModelResidues))
        raise ValueError(f"the selected atoms lie in {len(residues)} residues, which is not a whole number of copies "
                         f"of the model's {numModelResidues} residues ({expected})")

    molecules = []
    for first in range(0, len(residues), numModelResidues):
        copy = residues[first:first + numModelResidues]
        for r, residue in enumerate(copy):
            if residue.name != modelResidues[r]:
                raise ValueError(f"residue {_describeResidue(residue)} does not match model residue {r} "
                                 f"'{modelResidues[r]}'")
        byName = []
        for residue in copy:
            names = {}
            for atom in atomsOfResidue[residue.index]:
                if atom.name in names:
                    raise ValueError(f"residue {_describeResidue(residue)} has two atoms named '{atom.name}' "
                                     f"(atoms {names[atom.name].index} and {atom.index})")
                names[atom.name] = atom
            byName.append(names)
        molecule = []
        used = set()
        for a in range(numAtoms):
            r = force.getModelAtomResidueIndex(a)
            atom = byName[r].get(force.getModelAtomName(a))
            if atom is None:
                raise ValueError(f"{_describeModelAtom(force, a)} has no atom of that name in residue "
                                 f"{_describeResidue(copy[r])}; its atoms are "
                                 f"{', '.join(sorted(byName[r]))}")
            molecule.append(atom.index)
            used.add(atom.index)
        for residue in copy:
            for atom in atomsOfResidue[residue.index]:
                if atom.index not in used:
                    raise ValueError(f"atom '{atom.name}' (index {atom.index}) of residue {_describeResidue(residue)} "
                                     f"is not in the model")
        molecules.append(molecule)
    return molecules


def _createForce(model):
    if isinstance(model, SmoothFlowForce):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        return SmoothFlowForce.createFromBytes(model)
    return SmoothFlowForce(os.fspath(model))


def _refuseVirtualSites(system, topology, force, molecules):
    """A model atom must be a real particle: a virtual site has no mass of its own and its
    position follows other particles.  The same rule as the force's own check at Context
    creation, raised here, before the System is changed, naming the Topology atom."""
    allAtoms = list(topology.atoms())
    for m, molecule in enumerate(molecules):
        for a, p in enumerate(molecule):
            if p < system.getNumParticles() and system.isVirtualSite(p):
                atom = allAtoms[p] if p < len(allAtoms) else None
                where = (f"atom '{atom.name}' of residue {_describeResidue(atom.residue)}" if atom is not None
                         else "no Topology atom")
                model = _describeModelAtom(force, a) if force.hasModelAtomInfo() else f"model atom {a}"
                raise ValueError(f"particle {p} ({where}; {model}, molecule {m}) is a virtual site: the "
                                 f"atoms of a SmoothFlow model must be real particles")


def addSmoothFlowForce(system, topology, model, atoms=None, forceGroup=0, periodic=None):
    """Create a SmoothFlowForce for every copy of the model's molecule in a
    Topology and add it to a System.

    Parameters
    ----------
    system : openmm.System
        the System to add the force to (its particles follow the Topology's atoms)
    topology : openmm.app.Topology
        the Topology the System was made from
    model : str, os.PathLike, bytes or SmoothFlowForce
        the model file, its bytes, or a force not yet added to a System
    atoms : iterable of int, optional
        the atoms the model applies to (all by default); see mapModelToTopology
    forceGroup : int
        the force group of the new force
    periodic : bool, optional
        whether the force uses periodic boundary conditions; by default, when
        the Topology has a box or the System already uses them

    Returns
    -------
    SmoothFlowForce
        the force, now owned by the System

    Raises
    ------
    ValueError
        where the Topology does not match the model, or a particle the model would act on is
        a virtual site of the System (naming it)
    """
    force = _createForce(model)
    molecules = mapModelToTopology(force, topology, atoms)
    _refuseVirtualSites(system, topology, force, molecules)
    for i, molecule in enumerate(molecules):
        if i == 0:
            force.setParticles(molecule)  # replaces any molecules a given force had
        else:
            force.addMolecule(molecule)
    if periodic is None:
        periodic = topology.getPeriodicBoxVectors() is not None or system.usesPeriodicBoundaryConditions()
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.setForceGroup(forceGroup)
    system.addForce(force)
    return force
