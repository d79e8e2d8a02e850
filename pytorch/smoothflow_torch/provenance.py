"""Where and when a number was measured: the one machine record that benchmarks, studies and
scripts write beside their numbers (the brief: machine, date and commit with every number)."""
import datetime
import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Optional

#: The repository this package lives in (pytorch/smoothflow_torch/ -> the checkout).
ROOT = Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def file_sha256(path: os.PathLike) -> str:
    """The SHA-256 (hex) of a file, read in 1 MiB blocks (data files are tens of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_commit(root: Optional[os.PathLike] = None) -> str:
    """The checkout's short commit, with ``+dirty`` when tracked files differ from it."""
    git = ["git", "-C", str(root or ROOT)]
    try:
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.strip()
    except OSError:
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def machine(root: Optional[os.PathLike] = None, versions: Optional[dict] = None) -> dict:
    """date (UTC), commit, cpu, cores, platform, python, load_average (the other work sharing
    the cores, which inflates timings) and the ``versions`` of the packages the numbers depend on."""
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(root), "cpu": cpu_model(), "cores": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average": [round(v, 2) for v in os.getloadavg()], "versions": dict(versions or {})}
