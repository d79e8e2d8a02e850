"""The SmoothFlow potential for openmm-ml.

Registered through the entry point group ``openmmml.potentials`` under the name
``smoothflow``:

>>> from openmmml import MLPotential
>>> potential = MLPotential('smoothflow', modelPath='model.safetensors')
>>> system = potential.createSystem(topology)

The model's atoms are matched to the Topology by its bonds and elements, names only
breaking ties (openmmsmoothflow.mapModelToTopology; by names where the Topology has no
bonds); every copy of the molecule gets the potential.  Give the positions, so that
equivalent atoms (methyl hydrogens, ...) are labelled as the model expects and a start
far outside the flow's support is reported:

>>> system = potential.createSystem(pdb.topology, positions=pdb.positions)

createMixedSystem works too (it removes the force field's terms among the selected
atoms first): the selected atoms must be whole copies of the molecule.  A free-form
model (identical particles, docs/free-form-flows.md) takes each N consecutive selected
atoms as one copy, and is never periodic.
"""
import os

from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

__all__ = ['SmoothFlowPotentialImplFactory', 'SmoothFlowPotentialImpl']


class SmoothFlowPotentialImplFactory(MLPotentialImplFactory):
    """Creates SmoothFlowPotentialImpl objects for MLPotential('smoothflow', ...)."""

    def createImpl(self, name, modelPath=None, modelBytes=None, **args):
        return SmoothFlowPotentialImpl(name, modelPath=modelPath, modelBytes=modelBytes)


class SmoothFlowPotentialImpl(MLPotentialImpl):
    """The MLPotentialImpl of a SmoothFlow model.

    Parameters
    ----------
    name : str
        the name the potential was created with ('smoothflow')
    modelPath : str or os.PathLike, optional
        the model file
    modelBytes : bytes, optional
        the model file's content, instead of modelPath
    """

    def __init__(self, name, modelPath=None, modelBytes=None):
        # Imported here so that loading the entry point (which openmmml does
        # for every installed potential) stays cheap.
        from .smoothflow import SmoothFlowForce
        if (modelPath is None) == (modelBytes is None):
            raise ValueError(f"MLPotential('{name}') needs exactly one of modelPath=... or modelBytes=...")
        self.name = name
        # Load once now, so that a bad model fails here; keep the bytes so
        # every System gets its own force and the file may change afterwards.
        if modelPath is not None:
            force = SmoothFlowForce(os.fspath(modelPath))
        else:
            force = SmoothFlowForce.createFromBytes(modelBytes)
        self.modelBytes = force.getModelBytes()

    def addForces(self, topology, system, atoms, forceGroup, periodic=None, positions=None, replace=False,
                  onProblem='error', **args):
        """createSystem's and createMixedSystem's extra arguments: positions (resolve equivalent
        atoms, check the start), replace (remove force-field terms among the molecule's atoms
        that a System already holds) and onProblem ('error' or 'warn'); see addSmoothFlowForce."""
        # addSmoothFlowForce maps the model by its bond graph and refuses a model atom that is a
        # virtual site of the System (createMixedSystem starts from a System that may hold them),
        # and force-field terms that the flow would count twice (createMixedSystem has removed them).
        from .topology import addSmoothFlowForce
        addSmoothFlowForce(system, topology, self.modelBytes, atoms=atoms, forceGroup=forceGroup, periodic=periodic,
                           positions=positions, replace=replace, onProblem=onProblem)

    def getMLLongRange(self):
        # Only the internal coordinates of each molecule enter the energy.
        return False
