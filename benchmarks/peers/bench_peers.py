"""The peers' side of benchmarks/bench_cpu.py, run in the peers' environment
(benchmarks/peers/setup_peers.sh: torch 2.9, openmm-torch 1.5).

A long-lived server: bench_cpu.py starts it once and sends one JSON request per line on
stdin; each answer is one JSON line on stdout (anything else the libraries print goes to
stderr). Timing happens here, in blocks that bench_cpu.py asks for in its round-robin,
so the peers take their turns between the other cases of each round.

Cases (``kind``):
  torchforce   openmm-torch's TorchForce over all n molecules' particles, running the
               flow's energy as TorchScript made by the project's own model code
               (smoothflow_torch.torchscript.trace_energy, traced here with this
               environment's torch; forces by TorchScript autograd inside TorchForce)
  pythonforce  OpenMM's PythonForce whose computation calls
               smoothflow_torch's SmoothFlow.energy_and_forces (PyTorch autograd) on the
               (n, N, 3) batch
Both in a Context with a VerletIntegrator; one timed unit is integrator.step(1).

Requests:
  {"op": "info"}
  {"op": "build", "id": ..., "kind": ..., "model": path, "positions": .npy (n, N, 3) nm,
   "platform": "CPU" | "Reference", "torchscript_dir": folder, "dt": ps}
  {"op": "time", "id": ..., "threads": t, "steps": k}  -> seconds for k steps
  {"op": "evaluate", "id": ..., "threads": t, "out": .npz}  -> energy; forces written
  {"op": "quit"}
"""
import json
import os
import platform
import sys
import time
import traceback

import numpy as np
# torch first: openmm loads its plugins on import, and openmm-torch's find libtorch's CUDA
# libraries (libnvrtc.so.12) only once torch has loaded them
import torch
import openmm

# openmmtorch's import prints a deprecation notice on stdout: keep stdout for answers
_stdout = sys.stdout
sys.stdout = sys.stderr
import openmmtorch  # noqa: E402
from smoothflow_torch import load_model  # noqa: E402
from smoothflow_torch.torchscript import save_torchscript  # noqa: E402

CASES = {}


def _context(system, positions, platform_name, dt):
    integ = openmm.VerletIntegrator(dt)
    plat = openmm.Platform.getPlatformByName(platform_name)
    props = {"Threads": "1"} if platform_name == "CPU" else {}
    ctx = openmm.Context(system, integ, plat, props)
    ctx.setPositions(positions)
    return ctx, integ


def build(req):
    x = np.load(req["positions"])
    n, N, _ = x.shape
    flow = load_model(req["model"])
    system = openmm.System()
    for _ in range(n * N):
        system.addParticle(12.0)
    t0 = time.perf_counter()
    if req["kind"] == "torchforce":
        path = os.path.join(req["torchscript_dir"],
                            os.path.basename(req["model"]) + f".n{n}.pt")
        if not os.path.exists(path):
            save_torchscript(flow, path)
        force = openmmtorch.TorchForce(path)
    elif req["kind"] == "pythonforce":
        def compute(state, flow=flow, n=n, N=N):
            pos = state.getPositions(asNumpy=True)._value.reshape(n, N, 3)
            e, f = flow.energy_and_forces(torch.from_numpy(pos))
            return float(e.sum()), f.reshape(n * N, 3).numpy()
        force = openmm.PythonForce(compute)
    else:
        raise ValueError(f"unknown peer kind {req['kind']!r}")
    system.addForce(force)
    ctx, integ = _context(system, x.reshape(-1, 3), req["platform"], req["dt"])
    CASES[req["id"]] = {"ctx": ctx, "integ": integ, "x0": x.reshape(-1, 3)}
    return {"build_seconds": time.perf_counter() - t0}


def timed(req):
    c = CASES[req["id"]]
    torch.set_num_threads(int(req["threads"]))
    c["ctx"].setPositions(c["x0"])          # every block starts from the same state
    c["ctx"].setVelocities(np.zeros_like(c["x0"]))
    step = c["integ"].step
    k = int(req["steps"])
    t0 = time.perf_counter()
    for _ in range(k):
        step(1)
    return {"seconds": time.perf_counter() - t0, "steps": k}


def evaluate(req):
    c = CASES[req["id"]]
    torch.set_num_threads(int(req["threads"]))
    c["ctx"].setPositions(c["x0"])
    st = c["ctx"].getState(getEnergy=True, getForces=True)
    e = st.getPotentialEnergy()._value
    np.savez(req["out"], forces=st.getForces(asNumpy=True)._value)
    return {"energy": e}


def info(_req):
    return {"python": platform.python_version(), "torch": torch.__version__,
            "openmm": openmm.__version__, "openmmtorch": _version("openmmtorch"),
            "numpy": np.__version__, "torch_default_threads": torch.get_num_threads(),
            "executable": sys.executable}


def _version(dist):
    from importlib.metadata import version
    try:
        return version(dist)
    except Exception:
        return "unknown"


OPS = {"build": build, "time": timed, "evaluate": evaluate, "info": info}


def main(ops=None):
    """Serve requests from stdin until "quit"; ``ops`` (default OPS) maps each op to its handler
    (bench_peers_free_form.py serves its own build with the same loop)."""
    ops = OPS if ops is None else ops
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "quit":
            break
        try:
            ans = {"ok": True, **ops[req["op"]](req)}
        except Exception as e:   # the driver records the case as failed, with the reason
            traceback.print_exc(file=sys.stderr)
            ans = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        _stdout.write(json.dumps(ans) + "\n")
        _stdout.flush()


if __name__ == "__main__":
    main()
