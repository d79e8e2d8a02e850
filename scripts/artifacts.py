#!/usr/bin/env python3
"""The repository's artifact manifest (``artifacts.json``): what is shipped in the working
tree, and what was kept for comparison and now lives only in git history.

    python3 scripts/artifacts.py list                      # every entry, current and archived
    python3 scripts/artifacts.py show NAME                 # one entry: files, commit, config, results
    python3 scripts/artifacts.py restore NAME [--to DIR]   # bring an archived entry back
    python3 scripts/artifacts.py restore NAME --model-to FILE   # only its model file, to FILE
    python3 scripts/artifacts.py check                     # current files match their SHA-256
    python3 scripts/artifacts.py archive NAME PATH... --kind KIND --note TEXT
                                                           # keep files in history only

``restore`` writes each file of the entry with ``git show COMMIT:PATH`` (into DIR, default
the repository, at the path it had; or, with ``--model-to``, just the model file where a
training config's ``init_from`` expects it) and verifies its SHA-256; it needs the repository's full
history (a shallow clone lacks the commits). Standard library only, so it runs with any
Python 3.9+.

``archive`` is how a state that must outlive its machine (a training stage's checkpoint or
finished model under the ignored ``runs/``, an intermediate flow) reaches the next session
without entering the working tree: it commits the files (force-added where git ignores them),
removes them from the index in a second commit that adds the archived entry (commit, SHA-256 of
each file) to the manifest, and leaves the files where they are on disk. ``restore NAME`` then
puts them back at the same paths on any clone.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
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
    before anything is written. Refused where a file would land on a current entry's path in
    the repository itself (an earlier generation of a shipped file)."""
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
    if to is None and model_to is None:
        # an archived generation may have lived at a path the working tree now ships from
        shipped = {f["path"] for e in manifest.get("current", []) for f in e["files"]}
        clash = sorted(path for path, _ in blobs if path in shipped)
        if clash:
            raise ArtifactError(f"{name}: {', '.join(clash)} is a current (shipped) file now; restore it "
                                f"elsewhere with --to DIR or --model-to FILE")
    written = []
    for path, data in blobs:
        out = Path(model_to) if model_to is not None else root / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        written.append(out)
    return written


def _git(repo: Path, *args: str, index: Path | None = None) -> str:
    env = None if index is None else {**os.environ, "GIT_INDEX_FILE": str(index)}
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise ArtifactError(f"git {' '.join(args[:2])} failed: {r.stderr.strip()}")
    return r.stdout


def archive(name: str, paths, kind: str, note: str, repo: Path = REPO, manifest_path: Path = MANIFEST,
            results: dict | None = None) -> str:
    """Commit ``paths`` (files under ``repo``, ignored ones too), then untrack them in a second
    commit that records them as archived entry ``name`` in the manifest; the files stay on disk.
    Both commits are built in a separate index from HEAD, so whatever else is staged stays
    staged and out of them. Returns the commit that holds the files."""
    manifest = load_manifest(manifest_path)
    if any(e["name"] == name for _, e in entries(manifest)):
        raise ArtifactError(f"an artifact named {name!r} is in the manifest already")
    if not kind or not note:
        raise ArtifactError("an archived entry needs a kind and a note (what it is, how to use it)")
    rel = []
    for p in paths:
        full = (repo / p) if not Path(p).is_absolute() else Path(p)
        if not full.is_file():
            raise ArtifactError(f"{p} is not a file")
        rel.append(full.resolve().relative_to(repo.resolve()).as_posix())
    if not rel:
        raise ArtifactError("nothing to archive: name at least one file")
    tracked = set(_git(repo, "ls-files", "--", *rel).split())
    if tracked:
        raise ArtifactError(f"already tracked by git (archive keeps untracked files): {sorted(tracked)}")
    manifest_rel = manifest_path.resolve().relative_to(repo.resolve()).as_posix()
    if _git(repo, "status", "--porcelain", "--", manifest_rel).strip():
        raise ArtifactError(f"{manifest_rel} has changes of its own: commit them first")
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        _git(repo, "read-tree", "HEAD", index=index)
        _git(repo, "add", "-f", "--", *rel, index=index)
        _git(repo, "commit", "-q", "-m", f"keep {name} in history ({kind}): {len(rel)} file(s)", index=index)
        commit = _git(repo, "rev-parse", "HEAD").strip()
        entry = {"name": name, "kind": kind, "note": note, "commit": commit,
                 "files": [{"path": p, "sha256": sha256_bytes((repo / p).read_bytes())} for p in rel],
                 "results": results or {}}
        manifest.setdefault("archived", []).append(entry)
        manifest_path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        _git(repo, "rm", "-q", "--cached", "--", *rel, index=index)
        _git(repo, "add", "--", manifest_rel, index=index)
        _git(repo, "commit", "-q", "-m", f"archive {name}: the files live in {commit[:10]}, "
             f"`scripts/artifacts.py restore {name}` brings them back", index=index)
    _git(repo, "reset", "-q", "--", manifest_rel)     # the real index's manifest entry, to the new HEAD
    return commit


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
    p = sub.add_parser("archive", help="commit files (ignored ones too) into history only, as an archived entry")
    p.add_argument("name")
    p.add_argument("paths", nargs="+", help="files under the repository")
    p.add_argument("--kind", required=True, help="what it is, e.g. 'run state' or 'candidate model'")
    p.add_argument("--note", required=True, help="what it is for and how to use it once restored")
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
        elif args.command == "archive":
            commit = archive(args.name, args.paths, args.kind, args.note, manifest_path=args.manifest)
            print(f"{args.name}: {len(args.paths)} file(s) in commit {commit}; "
                  f"`scripts/artifacts.py restore {args.name}` brings them back")
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
