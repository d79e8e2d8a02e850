#!/usr/bin/env python3
"""The repository's artifact manifest (``artifacts.json``): what is shipped in the working
tree, and what was kept for comparison and now lives only in git history.

    python3 scripts/artifacts.py list                      # every entry, current and archived
    python3 scripts/artifacts.py show NAME                 # one entry: files, commit, config, results
    python3 scripts/artifacts.py restore NAME [--to DIR]   # bring an archived entry back
    python3 scripts/artifacts.py restore NAME --model-to FILE   # only its model file, to FILE
    python3 scripts/artifacts.py check                     # current files match their SHA-256

``restore`` writes each file of the entry with ``git show COMMIT:PATH`` (into DIR, default
the repository, at the path it had; or, with ``--model-to``, just the model file where a
training config's ``init_from`` expects it) and verifies its SHA-256; it needs the repository's full
history (a shallow clone lacks the commits). Standard library only, so it runs with any
Python 3.9+.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "artifacts.json"


class ArtifactError(RuntimeError):
    """A manifest entry that cannot be found, restored or verified."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_manifest(path: Path = MANIFEST) -> dict:
    with open(path) as f:
        return json.load(f)


def entries(manifest: dict):
    """(status, entry) for every entry; status is "current" or "archived"."""
    for status in ("current", "archived"):
        for entry in manifest.get(status, []):
            yield status, entry


def find(manifest: dict, name: str):
    for status, entry in entries(manifest):
        if entry["name"] == name:
            return status, entry
    close = [e["name"] for _, e in entries(manifest) if name in e["name"]]
    hint = f"; did you mean one of {close}?" if close else "; `artifacts.py list` names them all"
    raise ArtifactError(f"no artifact named {name!r} in the manifest{hint}")


def git_show(repo: Path, commit: str, path: str) -> bytes:
    try:
        return subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"],
                              check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as e:
        raise ArtifactError(f"git cannot show {path} at commit {commit}: "
                            f"{e.stderr.decode(errors='replace').strip()} (a shallow clone lacks "
                            f"history: `git fetch --unshallow` first)") from None


def restore(manifest: dict, name: str, to: Path | None = None, repo: Path = REPO,
            model_to: Path | None = None) -> list[Path]:
    """Write the files of archived entry ``name`` under ``to`` (default: ``repo``) at their
    recorded paths, or only its model file to ``model_to``; every file's SHA-256 is checked
    before anything is written."""
    status, entry = find(manifest, name)
    if status != "archived":
        raise ArtifactError(f"{name} is current: its files are in the working tree already")
    files = entry["files"]
    if model_to is not None:
        files = [f for f in files if f["path"].endswith(".safetensors")]
        if len(files) != 1:
            raise ArtifactError(f"{name} has {len(files)} model files; --model-to needs exactly one")
    blobs = []
    for f in files:
        data = git_show(repo, entry["commit"], f["path"])
        if sha256_bytes(data) != f["sha256"]:
            raise ArtifactError(f"{f['path']} at {entry['commit']} has SHA-256 {sha256_bytes(data)}, "
                                f"the manifest records {f['sha256']}")
        blobs.append((f["path"], data))
    root = Path(to) if to is not None else repo
    written = []
    for path, data in blobs:
        out = Path(model_to) if model_to is not None else root / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        written.append(out)
    return written


def check(manifest: dict, repo: Path = REPO) -> list[str]:
    """Problems with the current entries: missing files or SHA-256 mismatches."""
    problems = []
    for entry in manifest.get("current", []):
        for f in entry["files"]:
            p = repo / f["path"]
            if not p.is_file():
                problems.append(f"{entry['name']}: {f['path']} is missing")
            elif "sha256" in f and sha256_bytes(p.read_bytes()) != f["sha256"]:
                problems.append(f"{entry['name']}: {f['path']} does not match its SHA-256")
    return problems


def _summary(entry: dict) -> str:
    r = entry.get("results", {})
    bits = []
    if "ess_percent" in r:
        bits.append(f"ESS/n {r['ess_percent']:.3g} %")
    if "nll_nats" in r:
        bits.append(f"NLL {r['nll_nats']:.2f}")
    return ", ".join(bits)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every entry, current and archived")
    p = sub.add_parser("show", help="one entry in full")
    p.add_argument("name")
    p = sub.add_parser("restore", help="write an archived entry's files from git history")
    p.add_argument("name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--to", type=Path, help="folder to write under (default: the repository)")
    where.add_argument("--model-to", type=Path, help="write only the entry's model file, to this path")
    sub.add_parser("check", help="current files exist and match their SHA-256")
    args = ap.parse_args(argv)
    manifest = load_manifest(args.manifest)
    try:
        if args.command == "list":
            for status, e in entries(manifest):
                print(f"{status:8s}  {e['name']:45s}  {e['kind']:22s}  {_summary(e)}")
        elif args.command == "show":
            status, e = find(manifest, args.name)
            print(json.dumps({"status": status, **e}, indent=2))
        elif args.command == "restore":
            for path in restore(manifest, args.name, args.to, model_to=args.model_to):
                print(path)
        elif args.command == "check":
            problems = check(manifest)
            for line in problems:
                print(line, file=sys.stderr)
            if problems:
                return 1
            print(f"{sum(len(e['files']) for e in manifest['current'])} current files match the manifest")
    except ArtifactError as e:
        print(f"artifacts.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
