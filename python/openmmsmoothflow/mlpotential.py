"""The SmoothFlow potential for openmm-ml.

Registered through the entry point group ``openmmml.potentials`` under the name
``smoothflow``:

>>> from openmmml import MLPotential
>>> potential = MLPotential('smoothflow', modelPath='model.safetensors')
>>> system = potential.createSystem(topology)

The model's atoms are matched to the Topology by residue and atom names
(openmmsmoothflow.mapModelToTopology); every copy of the molecule gets the
potential.  createMixedSystem works too: the selected atoms must be whole copies.
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

    def addForces(self, topology, system, atoms, forceGroup, periodic=None, **args):
        # addSmoothFlowForce maps the model by names and refuses a model atom that is a
        # virtual site of the System (createMixedSystem starts from a System that may hold them).
        from .topology import addSmoothFlowForce
        addSmoothFlowForce(system, topology, self.modelBytes, atoms=atoms, forceGroup=forceGroup, periodic=periodic)

    def getMLLongRange(self):
        # Only the internal coordinates of each molecule enter the energy.
        return False
