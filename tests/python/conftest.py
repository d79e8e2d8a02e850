"""Shared fixtures of the Python tests.

The OpenMM plugin's tests (test_openmm_*.py) import openmmsmoothflow: installed
(cmake --build build --target PythonInstall) or from a build tree
(PYTHONPATH=build/python; <repo>/build/python is tried by default).  Without it
they are skipped, unless SMOOTHFLOW_REQUIRE_PLUGIN=1 (as ctest sets), where
that is an error.  Tests that compare with PyTorch need smoothflow_torch
(installed, or <repo>/pytorch) and are skipped without it.
"""
import importlib
import json
import os
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
DATA_DIR = os.path.join(REPO, 'tests', 'data')


def _import(name, fallbackPath):
    try:
        return importlib.import_module(name)
    except ImportError:
        if not os.path.isdir(fallbackPath):
            raise
        sys.path.insert(0, fallbackPath)
        return importlib.import_module(name)


@pytest.fixture(scope='session')
def sf():
    """The openmmsmoothflow package."""
    try:
        return _import('openmmsmoothflow', os.path.join(REPO, 'build', 'python'))
    except ImportError as e:
        if os.environ.get('SMOOTHFLOW_REQUIRE_PLUGIN'):
            raise
        pytest.skip(f'openmmsmoothflow is not built or installed ({e}); build it with '
                    f'"cmake --build build --target PythonInstall" or set PYTHONPATH=build/python')


@pytest.fixture(scope='session')
def sftorch():
    """The PyTorch reference package smoothflow_torch."""
    try:
        return _import('smoothflow_torch', os.path.join(REPO, 'pytorch'))
    except ImportError as e:
        pytest.skip(f'smoothflow_torch is not importable yet ({e})')


@pytest.fixture(scope='session')
def fixtures():
    """tests/data/reference.json: PyTorch's energies and forces for the fixture models."""
    with open(os.path.join(DATA_DIR, 'reference.json')) as f:
        reference = json.load(f)
    for entry in reference.values():
        entry['path'] = os.path.join(DATA_DIR, entry['model'])
    return reference


@pytest.fixture
def makeContext():
    """makeContext(force, numParticles, platform='Reference', box=None) -> openmm.Context."""
    import openmm

    contexts = []

    def make(force, numParticles, platform='Reference', box=None):
        system = openmm.System()
        for _ in range(numParticles):
            system.addParticle(12.0)
        if box is not None:
            system.setDefaultPeriodicBoxVectors(*box)
        system.addForce(force)
        try:
            platformObject = openmm.Platform.getPlatformByName(platform)
        except Exception:
            pytest.skip(f'platform {platform} is not available')
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), platformObject)
        contexts.append((system, context))  # the Context must not outlive its System
        return context

    yield make
    contexts.clear()


@pytest.fixture(scope='session')
def evaluate():
    """evaluate(context, positions nm, groups=-1) -> (energy kJ/mol, forces (N, 3) kJ/mol/nm)."""
    import numpy as np
    from openmm import unit

    def run(context, positions, groups=-1):
        context.setPositions(np.asarray(positions, dtype=float))
        state = context.getState(getEnergy=True, getForces=True, groups=groups)
        return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))

    return run
