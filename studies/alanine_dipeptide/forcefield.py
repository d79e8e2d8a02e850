"""Amber ff99SB-ILDN for alanine dipeptide: OBC implicit solvent (the main setting) or vacuum.

No constraints: the flow models every bond, so the force field must let them move too.
"""
import openmm
import openmm.app as app

from . import molecule

SETTINGS = ("obc", "vacuum")
TEMPERATURE = 300.0  # K
MOLAR_GAS_CONSTANT = 0.00831446261815324  # kJ/mol/K (CODATA 2018, as OpenMM)
KT = MOLAR_GAS_CONSTANT * TEMPERATURE  # kJ/mol


def forcefield(setting: str = "obc") -> app.ForceField:
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, not {setting!r}")
    files = ["amber99sbildn.xml"] + (["amber99_obc.xml"] if setting == "obc" else [])
    return app.ForceField(*files)


def system(setting: str = "obc") -> openmm.System:
    """The force field's System for the molecule of `molecule.topology()` (no cutoff, no constraints)."""
    return forcefield(setting).createSystem(molecule.topology(), nonbondedMethod=app.NoCutoff,
                                            constraints=None, rigidWater=False,
                                            removeCMMotion=False)
