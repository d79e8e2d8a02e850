"""cffi binding of the SmoothFlow C core (libsmoothflow.so).

A thin way to call the C core from Python without OpenMM (cffi and numpy only):
used by the tests that compare the core with the PyTorch reference, and by the
benchmarks.  The declarations come from the core's own header,
core/include/smoothflow.h, read at import (cffi's ABI mode), so the binding
cannot drift from the library's structs and signatures.

Where things are looked up:
  - the library: ``$SMOOTHFLOW_CORE_LIB``, then ``build/lib/`` of the checkout
    this module lies in (an editable install), then the dynamic loader's path
    (an installed libsmoothflow.so);
  - the header: ``$SMOOTHFLOW_CORE_INCLUDE`` (the header or its folder), then
    ``core/include/`` of the checkout, then ``include/`` next to the library's
    ``lib/`` folder, then the ``include/`` of ``sys.prefix``, /usr/local and /usr.
The header is run through the C preprocessor (``$CC``, default ``cc``) so that
its macros are resolved as a C compiler resolves them.

>>> model = CoreModel.from_file("model.safetensors")
>>> energies, forces = model.evaluate(positions)     # (B, N, 3) nm

Both kinds of model file load the same way; ``model.flow_kind`` says which it holds
(``"internal_coordinates"`` or ``"free_form"``, whose encoder reads the first
``model.spatial_dim`` components of each particle).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from cffi import FFI

__all__ = ["CoreError", "CoreModel", "load_library", "header_declarations",
           "smooth_forward", "smooth_inverse", "spline_forward", "spline_inverse",
           "affine_forward", "affine_inverse", "ffi"]

_HEADER = "smoothflow.h"
_LIBRARY = "libsmoothflow.so"
# <checkout>/wrappers/python/smoothflow_core.py -> <checkout>; meaningful only for an editable
# install or a run from the source tree (the candidates below are checked for existence).
_CHECKOUT = Path(__file__).resolve().parents[2]


class CoreError(RuntimeError):
    """A non-zero status of the C core, with its message and, for evaluation
    errors, the molecule (batch index) and model atoms involved."""

    def __init__(self, code: int, message: str, molecule: int = -1, atoms=()):
        super().__init__(message)
        self.code = code
        self.molecule = molecule
        self.atoms = tuple(a for a in atoms if a >= 0)


# ----------------------------------------------------------- the header

def _find_header(library: Path | None) -> Path:
    env = os.environ.get("SMOOTHFLOW_CORE_INCLUDE")
    if env:
        given = Path(env)
        header = given / _HEADER if given.is_dir() else given
        if not header.is_file():
            raise FileNotFoundError(f"SMOOTHFLOW_CORE_INCLUDE={env} holds no {_HEADER}")
        return header
    candidates = [_CHECKOUT / "core" / "include" / _HEADER]
    if library is not None:
        candidates.append(library.parent.parent / "include" / _HEADER)
    candidates += [Path(p) / "include" / _HEADER for p in (sys.prefix, "/usr/local", "/usr")]
    for header in candidates:
        if header.is_file():
            return header
    raise FileNotFoundError(f"{_HEADER} not found (looked in {', '.join(str(c.parent) for c in candidates)}); "
                            f"set SMOOTHFLOW_CORE_INCLUDE to the folder that holds it")


# System headers are left out: cffi knows size_t and the fixed-width integer types, and the
# declarations of a libc header are more than its C parser accepts.
_SYSTEM_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include[ \t]*<[^>\n]*>", re.MULTILINE)


def header_declarations(header: str | os.PathLike) -> str:
    """The C declarations of ``header`` after the preprocessor, as cffi's ``cdef`` takes them.

    ``-undef`` drops the compiler's own macros (``__GNUC__``, ``_WIN32``), so an export macro
    such as ``SF_API`` takes its plain, empty definition; ``__attribute__`` and ``__declspec``
    are defined empty for any that a header spells out unconditionally.
    """
    header = Path(header)
    text = _SYSTEM_INCLUDE.sub("", header.read_text())
    cc = shlex.split(os.environ.get("CC", "cc"))
    command = cc + ["-E", "-P", "-undef", "-x", "c", "-std=c11", "-D__attribute__(x)=",
                    "-D__declspec(x)=", "-I", str(header.parent), "-"]
    try:
        result = subprocess.run(command, input=text, capture_output=True, text=True)
    except FileNotFoundError:
        raise RuntimeError(f"no C preprocessor to read {header}: '{cc[0]}' is not installed "
                           f"(set CC to a C compiler)") from None
    if result.returncode != 0:
        raise RuntimeError(f"the C preprocessor failed on {header}:\n{result.stderr.strip()}")
    return result.stdout


# ---------------------------------------------------------- the library

ffi = FFI()
_lib = None
_header: Path | None = None


def _find_library(path) -> str:
    """A path to dlopen, or the bare name for the dynamic loader's own search."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such library")
        return str(path)
    env = os.environ.get("SMOOTHFLOW_CORE_LIB")
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"SMOOTHFLOW_CORE_LIB={env}: no such file")
        return env
    built = _CHECKOUT / "build" / "lib" / _LIBRARY
    return str(built) if built.is_file() else _LIBRARY


def load_library(path: str | os.PathLike | None = None):
    """Load libsmoothflow.so once, with the declarations of its header; returns the cffi
    library object (every function and enum constant of smoothflow.h, e.g. ``lib.SF_OK``).
    ``path`` loads that file instead of the default lookup (module docstring)."""
    global _lib, _header
    if _lib is not None and path is None:
        return _lib
    found = _find_library(path)
    library = Path(found).resolve() if os.sep in found else None
    header = _find_header(library)
    if _header is None:
        ffi.cdef(header_declarations(header))
        _header = header
    elif header != _header:
        raise RuntimeError(f"the binding already holds the declarations of {_header}; "
                           f"cannot switch to {header} in the same process")
    try:
        lib = ffi.dlopen(found)
    except OSError as e:
        raise FileNotFoundError(f"{_LIBRARY} not found or not loadable ({e}): build the project "
                                f"(scripts/build.sh) or set SMOOTHFLOW_CORE_LIB") from None
    _lib = lib
    return lib


def _doubles(a: np.ndarray | None):
    """A double* onto a C-contiguous float64 array (NULL for None); keeps it alive."""
    return ffi.NULL if a is None else ffi.from_buffer("double[]", a)


def _check(code: int, err) -> None:
    if code != 0:
        raise CoreError(code, ffi.string(err.message).decode(errors="replace"), err.molecule,
                        list(err.atoms))


class CoreModel:
    """A loaded model and a workspace for batches of up to ``max_batch``."""

    def __init__(self, handle, max_batch: int = 1):
        """``handle``: an ``sf_model *`` this object takes ownership of."""
        self._lib = load_library()
        self._handle = handle
        self._ws = ffi.NULL
        self._max_batch = 0
        self._grow(max_batch)
        self.n_atoms = self._lib.sf_model_num_atoms(handle)
        self.n_dims = self._lib.sf_model_num_dims(handle)
        self.kT = self._lib.sf_model_kT(handle)
        self.temperature = self._lib.sf_model_temperature(handle)

    @classmethod
    def from_bytes(cls, data: bytes, max_batch: int = 1) -> "CoreModel":
        lib, err, h = load_library(), ffi.new("sf_error *"), ffi.new("sf_model **")
        _check(lib.sf_model_load_bytes(ffi.from_buffer(data), len(data), h, err), err)
        return cls(h[0], max_batch)

    @classmethod
    def from_file(cls, path: str | os.PathLike, max_batch: int = 1) -> "CoreModel":
        lib, err, h = load_library(), ffi.new("sf_error *"), ffi.new("sf_model **")
        _check(lib.sf_model_load_file(os.fsencode(path), h, err), err)
        return cls(h[0], max_batch)

    def _grow(self, batch: int) -> None:
        if batch <= self._max_batch:
            return
        if self._ws != ffi.NULL:
            self._lib.sf_workspace_free(self._ws)
            self._ws = ffi.NULL
        err, ws = ffi.new("sf_error *"), ffi.new("sf_workspace **")
        _check(self._lib.sf_workspace_new(self._handle, batch, ws, err), err)
        self._ws = ws[0]
        self._max_batch = batch

    def close(self) -> None:
        if self._ws != ffi.NULL:
            self._lib.sf_workspace_free(self._ws)
            self._ws = ffi.NULL
        if self._handle != ffi.NULL:
            self._lib.sf_model_free(self._handle)
            self._handle = ffi.NULL

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def flow_kind(self) -> str:
        """``"internal_coordinates"`` or ``"free_form"`` (sf_model_flow_kind)."""
        free_form = self._lib.sf_model_flow_kind(self._handle) == self._lib.SF_FLOW_FREE_FORM
        return "free_form" if free_form else "internal_coordinates"

    @property
    def spatial_dim(self) -> int:
        """d: the Cartesian components of each particle the model reads (3, or 2 or 3 for a
        free-form model; sf_model_spatial_dim)."""
        return self._lib.sf_model_spatial_dim(self._handle)

    _PRECISIONS = {"float64": 0, "float32": 1}

    @property
    def weight_precision(self) -> str:
        """``"float64"`` (the stored weights) or ``"float32"`` (each rounded to float32)."""
        code = self._lib.sf_model_weight_precision(self._handle)
        return next(k for k, v in self._PRECISIONS.items() if v == code)

    @weight_precision.setter
    def weight_precision(self, precision: str) -> None:
        if precision not in self._PRECISIONS:
            raise ValueError(f"weight precision {precision!r}: expected 'float64' or 'float32'")
        err = ffi.new("sf_error *")
        _check(self._lib.sf_model_set_weight_precision(self._handle, self._PRECISIONS[precision], err), err)

    @property
    def config_json(self) -> str:
        return ffi.string(self._lib.sf_model_config_json(self._handle)).decode()

    def evaluate(self, positions, box=None, forces: bool = True):
        """Energies (B,) in kJ/mol and forces (B, N, 3) in kJ/mol/nm."""
        pos = np.ascontiguousarray(positions, dtype=np.float64)
        single = pos.ndim == 2
        pos = pos.reshape(-1, self.n_atoms, 3)
        batch = pos.shape[0]
        self._grow(batch)
        energies = np.empty(batch)
        f = np.empty_like(pos) if forces else None
        b = None if box is None else np.ascontiguousarray(box, dtype=np.float64).reshape(3, 3)
        err, info = ffi.new("sf_error *"), ffi.new("sf_eval_info *")
        _check(self._lib.sf_evaluate(self._handle, self._ws, batch, _doubles(pos), _doubles(b),
                                     _doubles(energies), _doubles(f), info, err), err)
        self.last_info = {"wall_dims": info.wall_dims, "max_newton_iters": info.max_newton_iters}
        if single:
            return (energies[0], f[0] if forces else None)
        return energies, f

    def internal_coordinates(self, positions, box=None) -> np.ndarray:
        pos = np.ascontiguousarray(positions, dtype=np.float64).reshape(self.n_atoms, 3)
        u = np.empty(self.n_dims)
        b = None if box is None else np.ascontiguousarray(box, dtype=np.float64).reshape(3, 3)
        err = ffi.new("sf_error *")
        _check(self._lib.sf_internal_coordinates(self._handle, _doubles(pos), _doubles(b),
                                                 _doubles(u), err), err)
        return u

    def log_density(self, u):
        """log p_U(u) and its gradient for one point of the unit cube."""
        u = np.ascontiguousarray(u, dtype=np.float64)
        lp, g, err = ffi.new("double *"), np.empty(self.n_dims), ffi.new("sf_error *")
        _check(self._lib.sf_log_density(self._handle, self._ws, _doubles(u), lp, _doubles(g), err), err)
        return lp[0], g


# ------------------------------------------------ one-dimensional transforms

def _raw(raw) -> np.ndarray:
    return np.ascontiguousarray(raw, dtype=np.float64)


def _outputs(n: int):
    return [ffi.new("double *") for _ in range(n)]


def smooth_forward(raw, x: float, circular: bool = False, constants=(0.01, 0.1, 0.99, 1)):
    """y, dy/dx, d2y/dx2 of the smooth transform with raw parameters (4K+2);
    constants = (s_min, alpha_min, c_max, beta)."""
    lib, raw = load_library(), _raw(raw)
    s_min, alpha_min, c_max, beta = constants
    c = ffi.new("sf_smooth_constants *", (s_min, alpha_min, c_max, int(beta)))
    y, dy, d2y = _outputs(3)
    lib.sf_smooth_forward(c, (raw.size - 2) // 4, _doubles(raw), int(circular), x, y, dy, d2y)
    return y[0], dy[0], d2y[0]


def smooth_inverse(raw, y: float, circular: bool = False, constants=(0.01, 0.1, 0.99, 1)):
    """x with T(x) = y, and the iterations the core needed (-1: no convergence)."""
    lib, raw = load_library(), _raw(raw)
    s_min, alpha_min, c_max, beta = constants
    c = ffi.new("sf_smooth_constants *", (s_min, alpha_min, c_max, int(beta)))
    (x,) = _outputs(1)
    it = lib.sf_smooth_inverse(c, (raw.size - 2) // 4, _doubles(raw), int(circular), y, x)
    return x[0], it


def spline_forward(raw, x: float, circular: bool = False, constants=(1e-3, 1e-3, 1e-3)):
    """y, dy/dx, d2y/dx2 of the rational-quadratic spline with raw parameters (3K+2);
    constants = (min_bin_width, min_bin_height, min_derivative)."""
    lib, raw = load_library(), _raw(raw)
    c = ffi.new("sf_spline_constants *", tuple(constants))
    y, dy, d2y = _outputs(3)
    lib.sf_spline_forward(c, (raw.size - 2) // 3, _doubles(raw), int(circular), x, y, dy, d2y)
    return y[0], dy[0], d2y[0]


def spline_inverse(raw, y: float, circular: bool = False, constants=(1e-3, 1e-3, 1e-3)) -> float:
    """x with S(x) = y (analytic)."""
    lib, raw = load_library(), _raw(raw)
    c = ffi.new("sf_spline_constants *", tuple(constants))
    (x,) = _outputs(1)
    lib.sf_spline_inverse(c, (raw.size - 2) // 3, _doubles(raw), int(circular), y, x)
    return x[0]


def affine_forward(raw, x: float, scale_max: float = 3.0):
    """y, dy/dx, d2y/dx2 of the affine transform with raw parameters (s~, t~).
    ValueError when x is not strictly inside (0, 1), the transform's support."""
    lib, raw = load_library(), _raw(raw)
    c = ffi.new("sf_affine_constants *", (scale_max,))
    y, dy, d2y = _outputs(3)
    if lib.sf_affine_forward(c, _doubles(raw), x, y, dy, d2y) != 0:
        raise ValueError(f"x = {x!r} is outside the affine transform's support (0, 1)")
    return y[0], dy[0], d2y[0]


def affine_inverse(raw, y: float, scale_max: float = 3.0) -> float:
    """x with T(x) = y; ValueError when y is not strictly inside (0, 1)."""
    lib, raw = load_library(), _raw(raw)
    c = ffi.new("sf_affine_constants *", (scale_max,))
    (x,) = _outputs(1)
    if lib.sf_affine_inverse(c, _doubles(raw), y, x) != 0:
        raise ValueError(f"y = {y!r} is outside the affine transform's support (0, 1)")
    return x[0]
