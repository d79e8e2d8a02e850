"""The engine wrappers (wrappers/): the C and Fortran velocity-Verlet examples against OpenMM.

The examples (wrappers/c/example_md.c, wrappers/fortran/example_md.f90) are found in the
build folder: the parent of the folder of $SMOOTHFLOW_CORE_LIB (scripts/test.sh and the
ctest wrappers.against_openmm name <build>/lib/libsmoothflow.so), else $SMOOTHFLOW_BUILD_DIR,
else build/ of the checkout.  Where a build is named and an example is missing, that is a
failure; the Fortran example may be missing only where the build had no Fortran compiler.

OpenMM's VerletIntegrator is leapfrog: the velocities a Context holds are those half a step
behind the positions, v(t - dt/2), and its kinetic energy is that of v(t - dt/2) + dt/2 F/m
(the Reference kernel's computeShiftedKineticEnergy).  So the OpenMM run starts from
v0 - dt/2 F(x0)/m: its positions, potential and kinetic energies are then those of velocity
Verlet from (x0, v0), up to rounding.  Measured on the development machine, the largest
relative differences over the first 20 / 200 / 1000 steps of 0.5 fs: E_pot 7e-14 / 1.4e-12 /
9.9e-12, E_kin 2.8e-12 / 1.4e-11 / 7.2e-11, E_tot 3.7e-13 / 1.4e-12 / 3.9e-12 (E_kin is the
most sensitive: OpenMM recomputes velocities from position differences at positions near
24 nm; the trajectories part by rounding only, slowly).  So every one of 200 steps is held to
1e-10, a margin of 7; at 1000 steps the margin would be too thin.  C and Fortran do the same operations in the same order
and agree to the last bit (held to 1e-12 per step, and the fluctuation ratio to 1e-10).
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "alanine_dipeptide" / "smooth.safetensors"
START = REPO / "wrappers" / "data" / "ala2_start.txt"
FORTRAN_SOURCE = REPO / "wrappers" / "fortran" / "smoothflow.f90"
DT = 0.0005  # ps, the examples' default
STEPS_VS_OPENMM = 200
RATIO = re.compile(r"fluctuation ratio RMS\(dE_tot\)/RMS\(dE_kin\) = \s*([-+0-9.eE]+)")
STATUS_NAMES = ["SF_OK", "SF_ERR_ARG", "SF_ERR_NOMEM", "SF_ERR_IO", "SF_ERR_FORMAT", "SF_ERR_VERSION",
                "SF_ERR_MODEL", "SF_ERR_VALUE", "SF_ERR_INPUT", "SF_ERR_SUPPORT", "SF_ERR_GEOMETRY",
                "SF_ERR_NUMERIC"]


def build_dir() -> Path:
    lib = os.environ.get("SMOOTHFLOW_CORE_LIB")
    if lib:
        return Path(lib).parent.parent
    return Path(os.environ.get("SMOOTHFLOW_BUILD_DIR", REPO / "build"))


def _build_named() -> bool:
    return bool(os.environ.get("SMOOTHFLOW_CORE_LIB") or os.environ.get("SMOOTHFLOW_BUILD_DIR")
                or os.environ.get("SMOOTHFLOW_REQUIRE_PLUGIN"))


@pytest.fixture(scope="module", params=["c", "fortran"])
def example(request) -> Path:
    """The built example program of one language."""
    language = request.param
    path = build_dir() / "bin" / f"smoothflow_example_md_{language}"
    if path.is_file():
        return path
    if language == "fortran":
        configured = os.environ.get("SMOOTHFLOW_WRAPPERS_FORTRAN")
        if configured == "OFF" or (configured is None and shutil.which("gfortran") is None):
            pytest.skip("the build has no Fortran compiler (apt-get install gfortran), so no Fortran example")
    message = f"{path} is not built (cmake --build {build_dir()})"
    if _build_named():
        pytest.fail(message)
    pytest.skip(message)


def read_start(path=START):
    """(masses (N,), positions (N, 3) nm, velocities (N, 3) nm/ps) of a start file."""
    rows = [line.split() for line in Path(path).read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    n = int(rows[0][0])
    table = np.array(rows[1:1 + n], dtype=float)
    assert table.shape == (n, 7)
    return table[:, 0], table[:, 1:4], table[:, 4:7]


def run_example(program: Path, out: Path, *args, check=True):
    result = subprocess.run([str(program), str(MODEL), str(START), str(out), *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"{program.name} failed:\n{result.stdout}\n{result.stderr}"
    return result


def read_energies(path: Path) -> np.ndarray:
    """Rows (step, time, E_pot, E_kin, E_tot) of an example's output."""
    return np.loadtxt(path, comments="#", ndmin=2)


def printed_ratio(stdout: str) -> float:
    found = RATIO.search(stdout)
    assert found, f"no fluctuation ratio in the output:\n{stdout}"
    return float(found.group(1))


def openmm_verlet(sf, masses, x0, v0, steps, dt):
    """(E_pot, E_kin) at steps 0..steps of OpenMM's VerletIntegrator (Reference platform)
    from the velocity-Verlet state (x0, v0), with the SmoothFlowForce of the same model."""
    import openmm
    from openmm import unit
    system = openmm.System()
    for m in masses:
        system.addParticle(float(m))
    system.addForce(sf.SmoothFlowForce(str(MODEL)))  # particles 0..N-1 are the model's atoms
    integrator = openmm.VerletIntegrator(dt)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x0)
    f0 = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
        unit.kilojoule_per_mole / unit.nanometer)
    context.setVelocities(v0 - 0.5 * dt * f0 / masses[:, None])  # leapfrog holds v(t - dt/2)
    out = []
    for step in range(steps + 1):
        if step:
            integrator.step(1)
        state = context.getState(getEnergy=True)
        out.append((state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                    state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)))
    del context
    return np.array(out)


def relative(a, b):
    return np.abs(a - b) / np.abs(b)


# --------------------------------------------------------------- the examples

def test_example_matches_openmm(example, sf, tmp_path):
    """Every step's E_pot, E_kin and E_tot equal OpenMM's to 1e-10 relative (200 steps),
    and the printed fluctuation ratio equals the one of OpenMM's series to 1e-8."""
    result = run_example(example, tmp_path / "energies.txt", STEPS_VS_OPENMM)
    mine = read_energies(tmp_path / "energies.txt")
    assert mine.shape == (STEPS_VS_OPENMM + 1, 5)
    assert np.array_equal(mine[:, 0], np.arange(STEPS_VS_OPENMM + 1))
    np.testing.assert_allclose(mine[:, 1], mine[:, 0] * DT, rtol=1e-15, atol=0)
    np.testing.assert_allclose(mine[:, 4], mine[:, 2] + mine[:, 3], rtol=1e-15, atol=0)

    masses, x0, v0 = read_start()
    reference = openmm_verlet(sf, masses, x0, v0, STEPS_VS_OPENMM, DT)
    for column, name, values in ((2, "E_pot", reference[:, 0]), (3, "E_kin", reference[:, 1]),
                                 (4, "E_tot", reference.sum(axis=1))):
        worst = relative(mine[:, column], values)
        step = int(np.argmax(worst))
        assert worst[step] < 1e-10, (f"{example.name}: {name} at step {step} is {mine[step, column]!r}, "
                                     f"OpenMM's {values[step]!r} (relative {worst[step]:.2e})")
    etot = reference.sum(axis=1)
    openmm_ratio = np.std(etot) / np.std(reference[:, 1])
    assert printed_ratio(result.stdout) == pytest.approx(openmm_ratio, rel=1e-8)


def test_ratio_is_the_study_definition(example, tmp_path):
    """The printed ratio is np.std(E_tot) / np.std(E_kin) of the written series (1000 steps)."""
    result = run_example(example, tmp_path / "energies.txt")
    mine = read_energies(tmp_path / "energies.txt")
    assert len(mine) == 1001
    ratio = np.std(mine[:, 4]) / np.std(mine[:, 3])
    assert printed_ratio(result.stdout) == pytest.approx(ratio, rel=1e-12)
    # velocity Verlet at 0.5 fs conserves energy: the ratio is small but not zero
    assert 1e-4 < ratio < 0.1


def test_c_and_fortran_agree(tmp_path):
    """The two examples write the same energies (1e-12 per step; they are bit-identical on
    the development machine) and print the same fluctuation ratio (1e-10), default run."""
    programs = {language: build_dir() / "bin" / f"smoothflow_example_md_{language}" for language in ("c", "fortran")}
    if not programs["fortran"].is_file():
        pytest.skip("no Fortran example in this build (test_example_matches_openmm says whether it should be)")
    if not programs["c"].is_file():
        pytest.fail(f"{programs['c']} is not built")
    results, energies = {}, {}
    for language, program in programs.items():
        results[language] = run_example(program, tmp_path / f"{language}.txt")
        energies[language] = read_energies(tmp_path / f"{language}.txt")
    np.testing.assert_allclose(energies["fortran"], energies["c"], rtol=1e-12, atol=0)
    assert printed_ratio(results["fortran"].stdout) == pytest.approx(printed_ratio(results["c"].stdout), rel=1e-10)


def test_example_refuses_bad_input(example, tmp_path):
    """Errors are messages that name the thing that is wrong, and a non-zero exit."""
    missing = tmp_path / "missing.safetensors"
    result = subprocess.run([str(example), str(missing), str(START), str(tmp_path / "out.txt")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and str(missing) in result.stderr

    short = tmp_path / "short.txt"
    lines = START.read_text().splitlines()
    count = lines.index("22")
    short.write_text("\n".join(lines[:count] + ["21"] + lines[count + 1:count + 22]) + "\n")
    result = subprocess.run([str(example), str(MODEL), str(short), str(tmp_path / "out.txt")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "22 atoms" in result.stderr and str(short) in result.stderr

    truncated = tmp_path / "truncated.txt"
    truncated.write_text("\n".join(lines[:count + 5]) + "\n")
    result = subprocess.run([str(example), str(MODEL), str(truncated), str(tmp_path / "out.txt")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and str(truncated) in result.stderr and "4 of 22" in result.stderr

    result = run_example(example, tmp_path / "out.txt", "-5", check=False)
    assert result.returncode == 2 and "STEPS" in result.stderr


# ------------------------------------------------------------ the C API's version

def project_version() -> str:
    found = re.search(r"project\(openmm-smoothflow VERSION ([0-9.]+)", (REPO / "CMakeLists.txt").read_text())
    assert found, "no project(VERSION) in CMakeLists.txt"
    return found.group(1)


def test_version_is_the_project_version():
    """sf_version() of the loaded library, the header's macros and the Fortran module's
    parameters all equal project(VERSION)."""
    from smoothflow_core import ffi, load_library
    version = project_version()
    major, minor, patch = (int(p) for p in version.split("."))
    lib = load_library()
    assert ffi.string(lib.sf_version()).decode() == version
    assert lib.sf_version_number() == major * 10000 + minor * 100 + patch
    header = (REPO / "core" / "include" / "smoothflow.h").read_text()
    assert f'#define SF_VERSION_STRING "{version}"' in header
    fortran = FORTRAN_SOURCE.read_text()
    for name, value in (("MAJOR", major), ("MINOR", minor), ("PATCH", patch)):
        assert re.search(rf"#define SF_VERSION_{name} {value}\b", header), f"SF_VERSION_{name} in smoothflow.h"
        assert re.search(rf"SF_VERSION_{name} = {value}\b", fortran), f"SF_VERSION_{name} in smoothflow.f90"


def test_fortran_status_codes_match_the_header():
    """The Fortran module's SF_* status parameters are the C enum sf_status, value by value,
    and its sf_error mirrors the struct's message size."""
    from smoothflow_core import ffi, load_library
    lib = load_library()
    fortran = FORTRAN_SOURCE.read_text()
    declared = dict((name, int(value)) for name, value in
                    re.findall(r"integer\(c_int\), parameter, public :: (SF_\w+) = (\d+)", fortran))
    header_names = [name for name in dir(lib) if name.startswith("SF_OK") or name.startswith("SF_ERR_")]
    assert sorted(declared) == sorted(header_names), "the Fortran module and smoothflow.h list different statuses"
    for name in header_names:
        assert declared[name] == getattr(lib, name), name
    assert set(STATUS_NAMES) <= set(declared)
    size = re.search(r"SF_ERROR_MESSAGE_SIZE = (\d+)", fortran)
    assert size and int(size.group(1)) == ffi.sizeof(dict(ffi.typeof("sf_error").fields)["message"].type)


# --------------------------------------------------------------- the start file

def test_start_file_is_reproducible(tmp_path):
    """wrappers/data/ala2_start.txt is what make_start.py writes, with zero centre-of-mass
    velocity and OpenMM's element masses in the model's atom order."""
    pytest.importorskip("alanine_dipeptide")
    out = tmp_path / "start.txt"
    subprocess.run([sys.executable, str(REPO / "wrappers" / "data" / "make_start.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    assert out.read_text() == START.read_text()
    masses, x, v = read_start()
    assert np.abs((masses[:, None] * v).sum(axis=0)).max() < 1e-12
    from openmm.app import element
    from alanine_dipeptide import molecule
    assert masses.tolist() == [element.get_by_symbol(el).mass._value for _, _, el in molecule.ATOMS]
