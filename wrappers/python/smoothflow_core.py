"""ctypes binding of the SmoothFlow C core (libsmoothflow.so).

A thin, dependency-free (numpy only) way to call the C core from Python
without OpenMM: used by the tests that compare the core with the PyTorch
reference, and by the benchmarks.  The library is looked up in
``$SMOOTHFLOW_CORE_LIB``, then in the build folder next to this checkout.

>>> model = CoreModel.from_file("model.safetensors")
>>> energies, forces = model.evaluate(positions)     # (B, N, 3) nm
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

__all__ = ["CoreError", "CoreModel", "load_library"]

_ROOT = Path(__file__).resolve().parents[2]
_MESSAGE_SIZE = 512


class CoreError(RuntimeError):
    """A non-zero status of the C core, with its message and, for evaluation
    errors, the molecule (batch index) and model atoms involved."""

    def __init__(self, code: int, message: str, molecule: int = -1, atoms=()):
        super().__init__(message)
        self.code = code
        self.molecule = molecule
        self.atoms = tuple(a for a in atoms if a >= 0)


class _Error(ctypes.Structure):
    # Must mirror sf_error in core/include/smoothflow.h field for field.
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * _MESSAGE_SIZE),
                ("molecule", ctypes.c_int), ("atoms", ctypes.c_int * 4)]


class _Info(ctypes.Structure):
    _fields_ = [("wall_dims", ctypes.c_int), ("max_newton_iters", ctypes.c_int)]


_lib = None
_dp = ctypes.POINTER(ctypes.c_double)


def load_library(path: str | os.PathLike | None = None) -> ctypes.CDLL:
    """Load libsmoothflow.so once and declare its signatures."""
    global _lib
    if _lib is not None and path is None:
        return _lib
    candidates = [path, os.environ.get("SMOOTHFLOW_CORE_LIB"),
                  _ROOT / "build" / "lib" / "libsmoothflow.so"]
    found = next((str(c) for c in candidates if c and Path(c).exists()), None)
    if found is None:
        raise FileNotFoundError("libsmoothflow.so not found: build the project (scripts/build.sh) "
                                "or set SMOOTHFLOW_CORE_LIB")
    lib = ctypes.CDLL(found)
    vp, sz, ip = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
    ep = ctypes.POINTER(_Error)
    lib.sf_model_load_bytes.argtypes = [ctypes.c_char_p, sz, ctypes.POINTER(vp), ep]
    lib.sf_model_load_file.argtypes = [ctypes.c_char_p, ctypes.POINTER(vp), ep]
    lib.sf_model_free.argtypes = [vp]
    for name in ("sf_model_num_atoms", "sf_model_num_dims", "sf_model_num_layers",
                 "sf_model_format_version", "sf_model_support_policy"):
        getattr(lib, name).argtypes = [vp]
        getattr(lib, name).restype = ip
    for name in ("sf_model_temperature", "sf_model_kT", "sf_model_energy_offset"):
        getattr(lib, name).argtypes = [vp]
        getattr(lib, name).restype = ctypes.c_double
    lib.sf_model_config_json.argtypes = [vp]
    lib.sf_model_config_json.restype = ctypes.c_char_p
    lib.sf_workspace_new.argtypes = [vp, ip, ctypes.POINTER(vp), ep]
    lib.sf_workspace_free.argtypes = [vp]
    lib.sf_evaluate.argtypes = [vp, vp, ip, _dp, _dp, _dp, _dp, ctypes.POINTER(_Info), ep]
    lib.sf_internal_coordinates.argtypes = [vp, _dp, _dp, _dp, ep]
    lib.sf_log_density.argtypes = [vp, vp, _dp, _dp, _dp, ep]
    lib.sf_smooth_forward.argtypes = [_dp, ip, _dp, ip, ctypes.c_double, _dp, _dp, _dp]
    lib.sf_smooth_inverse.argtypes = [_dp, ip, _dp, ip, ctypes.c_double, _dp]
    lib.sf_smooth_inverse.restype = ip
    _lib = lib
    return lib


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data_as(_dp)


def _check(code: int, err: _Error) -> None:
    if code != 0:
        raise CoreError(code, err.message.decode(errors="replace"), err.molecule, list(err.atoms))


class CoreModel:
    """A loaded model and a workspace for batches of up to ``max_batch``."""

    def __init__(self, handle: ctypes.c_void_p, max_batch: int = 1):
        self._lib = load_library()
        self._handle = handle
        self._ws = ctypes.c_void_p()
        self._max_batch = 0
        self._grow(max_batch)
        self.n_atoms = self._lib.sf_model_num_atoms(handle)
        self.n_dims = self._lib.sf_model_num_dims(handle)
        self.kT = self._lib.sf_model_kT(handle)
        self.temperature = self._lib.sf_model_temperature(handle)

    @classmethod
    def from_bytes(cls, data: bytes, max_batch: int = 1) -> "CoreModel":
        lib, err, h = load_library(), _Error(), ctypes.c_void_p()
        _check(lib.sf_model_load_bytes(data, len(data), ctypes.byref(h), ctypes.byref(err)), err)
        return cls(h, max_batch)

    @classmethod
    def from_file(cls, path: str | os.PathLike, max_batch: int = 1) -> "CoreModel":
        lib, err, h = load_library(), _Error(), ctypes.c_void_p()
        _check(lib.sf_model_load_file(os.fsencode(path), ctypes.byref(h), ctypes.byref(err)), err)
        return cls(h, max_batch)

    def _grow(self, batch: int) -> None:
        if batch <= self._max_batch:
            return
        if self._ws:
            self._lib.sf_workspace_free(self._ws)
            self._ws = ctypes.c_void_p()
        err = _Error()
        _check(self._lib.sf_workspace_new(self._handle, batch, ctypes.byref(self._ws), ctypes.byref(err)), err)
        self._max_batch = batch

    def close(self) -> None:
        if self._ws:
            self._lib.sf_workspace_free(self._ws)
            self._ws = ctypes.c_void_p()
        if self._handle:
            self._lib.sf_model_free(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def config_json(self) -> str:
        return self._lib.sf_model_config_json(self._handle).decode()

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
        err, info = _Error(), _Info()
        _check(self._lib.sf_evaluate(self._handle, self._ws, batch, _ptr(pos), _ptr(b), _ptr(energies),
                                     _ptr(f), ctypes.byref(info), ctypes.byref(err)), err)
        self.last_info = {"wall_dims": info.wall_dims, "max_newton_iters": info.max_newton_iters}
        if single:
            return (energies[0], f[0] if forces else None)
        return energies, f

    def internal_coordinates(self, positions, box=None) -> np.ndarray:
        pos = np.ascontiguousarray(positions, dtype=np.float64).reshape(self.n_atoms, 3)
        u = np.empty(self.n_dims)
        b = None if box is None else np.ascontiguousarray(box, dtype=np.float64).reshape(3, 3)
        err = _Error()
        _check(self._lib.sf_internal_coordinates(self._handle, _ptr(pos), _ptr(b), _ptr(u), ctypes.byref(err)), err)
        return u

    def log_density(self, u):
        """log p_U(u) and its gradient for one point of the unit cube."""
        u = np.ascontiguousarray(u, dtype=np.float64)
        lp, g, err = ctypes.c_double(), np.empty(self.n_dims), _Error()
        _check(self._lib.sf_log_density(self._handle, self._ws, _ptr(u), ctypes.byref(lp), _ptr(g),
                                        ctypes.byref(err)), err)
        return lp.value, g


def smooth_forward(raw, x: float, circular: bool = False, constants=(0.01, 0.1, 0.99, 1)):
    """y, dy/dx, d2y/dx2 of the smooth transform with raw parameters (4K+2)."""
    lib = load_library()
    raw = np.ascontiguousarray(raw, dtype=np.float64)
    K = (raw.size - 2) // 4
    c = _constants(constants)
    y, dy, d2y = ctypes.c_double(), ctypes.c_double(), ctypes.c_double()
    lib.sf_smooth_forward(ctypes.cast(ctypes.byref(c), _dp), K, _ptr(raw), int(circular), x,
                          ctypes.byref(y), ctypes.byref(dy), ctypes.byref(d2y))
    return y.value, dy.value, d2y.value


def smooth_inverse(raw, y: float, circular: bool = False, constants=(0.01, 0.1, 0.99, 1)):
    """x with T(x) = y, and the iterations the core needed (-1: no convergence)."""
    lib = load_library()
    raw = np.ascontiguousarray(raw, dtype=np.float64)
    K = (raw.size - 2) // 4
    c = _constants(constants)
    x = ctypes.c_double()
    it = lib.sf_smooth_inverse(ctypes.cast(ctypes.byref(c), _dp), K, _ptr(raw), int(circular), y, ctypes.byref(x))
    return x.value, it


class _Constants(ctypes.Structure):
    _fields_ = [("s_min", ctypes.c_double), ("alpha_min", ctypes.c_double), ("c_max", ctypes.c_double),
                ("beta", ctypes.c_int)]


def _constants(values) -> _Constants:
    s_min, alpha_min, c_max, beta = values
    return _Constants(s_min, alpha_min, c_max, int(beta))
