"""openmmsmoothflow: an OpenMM plugin whose SmoothFlowForce evaluates
U = -kT log p(x) of a normalizing flow over a molecule's internal coordinates, or of a
free-form flow's equivariant encoder over identical particles (Reference and CPU platforms).

Importing the package loads the plugin's kernels (Reference, CPU, OpenCL and CUDA platforms)
from the package's own folder; nothing is copied into OpenMM's plugin folder.

>>> import openmm, openmmsmoothflow
>>> force = openmmsmoothflow.SmoothFlowForce('model.safetensors')
>>> system.addForce(force)
"""
import os as _os

import openmm as _openmm

# The SWIG module links libSmoothFlowPlugin.so (found through RPATH $ORIGIN),
# which registers the XML serialization proxy as it loads.
from .smoothflow import SmoothFlowForce
from .topology import (SmoothFlowConfigurationError, addSmoothFlowForce, checkConfiguration, equivalentAtoms,
                       mapModelToTopology)
from .zmatrix import buildZMatrix

__version__ = '0.1.0'
__all__ = ['SmoothFlowForce', 'addSmoothFlowForce', 'mapModelToTopology', 'checkConfiguration', 'equivalentAtoms',
           'SmoothFlowConfigurationError', 'buildZMatrix', 'pluginDirectory']


def pluginDirectory():
    """The folder holding the plugin's shared libraries."""
    return _os.path.dirname(_os.path.abspath(__file__))


def _loadKernels():
    # loadPluginLibrary runs the library's registerKernelFactories(): the
    # Reference kernel, then the CPU platform's threaded kernel where this
    # build has one (it needs OpenMM's CPU platform library).
    _openmm.Platform.loadPluginLibrary(_os.path.join(pluginDirectory(), 'libSmoothFlowPluginReference.so'))
    cpu = _os.path.join(pluginDirectory(), 'libSmoothFlowPluginCPU.so')
    if _os.path.exists(cpu):
        _openmm.Platform.loadPluginLibrary(cpu)
    # The GPU kernels, where this build has them.  A machine without a usable OpenCL
    # runtime, or without a CUDA driver (libSmoothFlowPluginCUDA needs OpenMM's CUDA
    # platform, openmm-cuda-13, and the driver), cannot load them, and then has no such
    # platform to run them on either.
    for name in ('libSmoothFlowPluginOpenCL.so', 'libSmoothFlowPluginCUDA.so'):
        path = _os.path.join(pluginDirectory(), name)
        if _os.path.exists(path):
            try:
                _openmm.Platform.loadPluginLibrary(path)
            except Exception:
                pass

_loadKernels()
