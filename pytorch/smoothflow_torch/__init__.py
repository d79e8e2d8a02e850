"""smoothflow_torch: the PyTorch trainer's model of openmm-smoothflow.

A :class:`SmoothFlow` is a coupling flow with C-infinity smooth mixture transforms over
a molecule's normalized internal coordinates; its energy ``-kT log q(r) + U0`` is the MD
potential that the C core evaluates from the exported model file.

Modules
-------
zmatrix      internal coordinates <-> Cartesian positions
transforms   the smooth mixture transform, its inverse and derivatives
conditioner  MLP conditioners with the interval/circle input encoding
coupling     coupling layers (generative or density direction)
flow         SmoothFlow: the model, its energy, forces and sampling
export       model files (safetensors, docs/model-format.md)
testing      random and preset flows, Z-matrices and configurations
"""

from .transforms import (SmoothConstants, SmoothParameters, SmoothTransformer, exact_softplus,
                         smooth_forward, smooth_inverse, smooth_mixture, smooth_parameters,
                         smooth_step, solve_inverse)
from .conditioner import MLPConditioner, encode
from .coupling import SmoothCouplingLayer
from .flow import MOLAR_GAS_CONSTANT, SmoothFlow, wall_clamp
from .export import (FORMAT, FORMAT_VERSION, ModelFormatError, export_model, load_model,
                     load_model_bytes, model_to_bytes, read_model_bytes, validate_config)
from . import zmatrix, testing

__version__ = "0.1.0"

__all__ = [
    "SmoothConstants", "SmoothParameters", "SmoothTransformer", "exact_softplus",
    "smooth_forward", "smooth_inverse", "smooth_mixture", "smooth_parameters", "smooth_step",
    "solve_inverse", "MLPConditioner", "encode", "SmoothCouplingLayer", "MOLAR_GAS_CONSTANT",
    "SmoothFlow", "wall_clamp", "FORMAT", "FORMAT_VERSION", "ModelFormatError",
    "export_model", "load_model", "load_model_bytes", "model_to_bytes", "read_model_bytes",
    "validate_config", "zmatrix", "testing",
]
