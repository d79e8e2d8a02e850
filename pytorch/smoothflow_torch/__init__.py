"""smoothflow_torch: the PyTorch trainer's model of openmm-smoothflow.

A :class:`SmoothFlow` is a coupling flow with C-infinity smooth mixture transforms (or the
spline and affine baselines) over a molecule's normalized internal coordinates; its energy
``-kT log q(r) + U0`` is the MD potential that the C core evaluates from the exported model
file.

Modules
-------
zmatrix      internal coordinates <-> Cartesian positions
transforms   the smooth mixture transform (inverse and derivatives), spline and affine
conditioner  MLP conditioners with the interval/circle input encoding
coupling     coupling layers (generative or density direction)
flow         SmoothFlow: the model, its energy, forces and sampling
export       model files (safetensors, docs/model-format.md)
testing      random and preset flows, Z-matrices and configurations
"""

from .transforms import (TRANSFORMS, AffineConstants, AffineTransformer, SmoothConstants,
                         SmoothParameters, SmoothTransformer, SplineConstants, SplineParameters,
                         SplineTransformer, affine_forward, affine_inverse, affine_parameters,
                         exact_softplus, make_transformer, params_per_dim, rq_spline,
                         rq_spline_inverse, smooth_forward, smooth_inverse, smooth_mixture,
                         smooth_parameters, smooth_step, solve_inverse, spline_forward,
                         spline_inverse, spline_parameters)
from .conditioner import MLPConditioner, encode
from .coupling import CouplingLayer, SmoothCouplingLayer
from .flow import MOLAR_GAS_CONSTANT, SmoothFlow, wall_clamp
from .export import (FORMAT, FORMAT_VERSION, ModelFormatError, export_model, load_model,
                     load_model_bytes, model_to_bytes, read_model_bytes, validate_config)
from . import zmatrix, testing, openmm_bridge, training

__version__ = "0.1.0"

__all__ = [
    "SmoothConstants", "SmoothParameters", "SmoothTransformer", "exact_softplus",
    "smooth_forward", "smooth_inverse", "smooth_mixture", "smooth_parameters", "smooth_step",
    "solve_inverse", "TRANSFORMS", "params_per_dim", "make_transformer", "SplineConstants",
    "SplineParameters", "SplineTransformer", "spline_parameters", "rq_spline",
    "rq_spline_inverse", "spline_forward", "spline_inverse", "AffineConstants",
    "AffineTransformer", "affine_parameters", "affine_forward", "affine_inverse",
    "MLPConditioner", "encode", "CouplingLayer", "SmoothCouplingLayer", "MOLAR_GAS_CONSTANT",
    "SmoothFlow", "wall_clamp", "FORMAT", "FORMAT_VERSION", "ModelFormatError",
    "export_model", "load_model", "load_model_bytes", "model_to_bytes", "read_model_bytes",
    "validate_config", "zmatrix", "testing", "openmm_bridge", "training",
]
