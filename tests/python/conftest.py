"""Shared fixtures of the Python tests.

The OpenMM plugin's tests (test_openmm_*.py) import openmmsmoothflow: installed
(scripts/build.sh, or cmake --build build --target PythonInstall) or from a build
tree through PYTHONPATH=<build>/python (as ctest sets it).  Without it they are
skipped, unless SMOOTHFLOW_REQUIRE_PLUGIN=1 (as ctest sets), where that is an
error.  smoothflow_torch, smoothflow_core and alanine_dipeptide are installed
into the environment by scripts/setup.sh.
"""
import importlib
import json
import os

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
DATA_DIR = os.path.join(REPO, 'tests', 'data')


@pytest.fixture(scope='session')
def sf():
    """The openmmsmoothflow package."""
    try:
        return importlib.import_module('openmmsmoothflow')
    except ImportError as e:
        if os.environ.get('SMOOTHFLOW_REQUIRE_PLUGIN'):
            raise
        pytest.skip(f'openmmsmoothflow is not built or installed ({e}); build it with '
                    f'scripts/build.sh or set PYTHONPATH=<build>/python')


@pytest.fixture(scope='session')
def sftorch():
    """The PyTorch reference package smoothflow_torch (installed by scripts/setup.sh)."""
    return importlib.import_module('smoothflow_torch')


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
