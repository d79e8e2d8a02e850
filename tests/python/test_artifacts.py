"""The artifact manifest (artifacts.json) and its tool (scripts/artifacts.py): the working tree
holds exactly what the manifest calls current, with matching SHA-256, and the restore command
brings an archived file back from git history byte for byte. The restore tests build their own
small git repository, so they test the tool, not this repository's history."""
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "artifacts.py"
_spec = importlib.util.spec_from_file_location("artifacts", SCRIPT)
artifacts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(artifacts)

MANIFEST = artifacts.load_manifest()
HEX = set("0123456789abcdef")


def _is_hex(s, n):
    return isinstance(s, str) and len(s) == n and set(s) <= HEX


def _git_files(*prefixes):
    """Files git tracks (or would add) under the prefixes, as they are in the working tree."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard",
                          *prefixes], capture_output=True, text=True, check=True).stdout.split()
    return {p for p in out if (REPO / p).exists()}


def test_manifest_entries_are_complete_and_unique():
    names = [e["name"] for _, e in artifacts.entries(MANIFEST)]
    assert len(names) == len(set(names)), "entry names must be unique"
    for status, e in artifacts.entries(MANIFEST):
        assert e["kind"] and e["files"] and "results" in e, e["name"]
        paths = [f["path"] for f in e["files"]]
        assert len(paths) == len(set(paths)), e["name"]
        if status == "archived":
            assert _is_hex(e["commit"], 40), f"{e['name']}: archived entries name a full commit"
            assert all(_is_hex(f["sha256"], 64) for f in e["files"]), e["name"]
        for f in e["files"]:
            if f["path"].endswith(".safetensors"):
                assert _is_hex(f.get("sha256"), 64), f"{f['path']}: every model file has its SHA-256"


def test_current_files_match_their_sha256():
    assert artifacts.check(MANIFEST) == []


def test_models_and_docs_hold_exactly_what_the_manifest_calls_current():
    current = {f["path"] for e in MANIFEST["current"] for f in e["files"]}
    in_tree = _git_files("models", "docs", "studies/alanine_dipeptide/results")
    assert in_tree - current == set(), "files in the tree that the manifest does not list as current"
    assert current - in_tree == set(), "current entries whose files are not in the tree"


def test_archived_files_are_not_in_the_working_tree():
    """An archived file lives only in history (its path may since hold a different file, as
    configs/smooth.json, once v1's stage 1 and now the shipped flow's last stage). Files kept
    from the ignored runs/ (run state) may still lie on the disk that made them: git must not
    track them."""
    tracked = _git_files()
    for e in MANIFEST["archived"]:
        for f in e["files"]:
            p = REPO / f["path"]
            assert not (f["path"] in tracked and hashlib.sha256(p.read_bytes()).hexdigest() == f["sha256"]), \
                f"{f['path']} is archived ({e['name']}) but still in the tree"


def test_shipped_models_name_their_config_and_stages():
    """Each shipped model names the config that produces it and the archived stages before it,
    so a later stage reruns alone after one restore command."""
    shipped = [e for e in MANIFEST["current"] if e["name"].startswith("alanine_dipeptide/")
               and e["kind"] == "shipped model"]
    assert {e["name"] for e in shipped} == {f"alanine_dipeptide/{k}" for k in ("smooth", "spline", "affine")}
    archived = {e["name"]: e for e in MANIFEST["archived"]}
    for e in shipped:
        assert (REPO / e["config"]["path"]).is_file()
        for stage in e["config"]["stages"]:
            models = [f for f in archived[stage]["files"] if f["path"].endswith(".safetensors")]
            assert len(models) == 1, f"{stage} must hold one model file to restore"


# ------------------------------------------------------------------ the tool, on a scratch repo
@pytest.fixture
def scratch(tmp_path):
    """A git repository with one commit holding a model and a report, then both removed."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    model, report = b"\x00model bytes\xff" * 100, b"# report\n"
    (repo / "models" / "m.safetensors").write_bytes(model)
    (repo / "report.md").write_bytes(report)
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True).stdout
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "add", "--allow-empty")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "files")
    commit = git("rev-parse", "HEAD").strip()
    git("rm", "-q", "models/m.safetensors", "report.md")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "archive")
    sha = lambda b: hashlib.sha256(b).hexdigest()
    manifest = {"current": [{"name": "shipped", "kind": "shipped model", "files": [], "results": {}}],
                "archived": [{"name": "old/model", "kind": "model", "commit": commit, "results": {},
                              "files": [{"path": "models/m.safetensors", "sha256": sha(model)},
                                        {"path": "report.md", "sha256": sha(report)}]}]}
    return repo, manifest, model, report


def test_restore_writes_the_recorded_bytes(scratch, tmp_path):
    repo, manifest, model, report = scratch
    written = artifacts.restore(manifest, "old/model", repo=repo)
    assert (repo / "models" / "m.safetensors").read_bytes() == model
    assert (repo / "report.md").read_bytes() == report
    assert len(written) == 2
    out = tmp_path / "elsewhere"
    artifacts.restore(manifest, "old/model", to=out, repo=repo)
    assert (out / "models" / "m.safetensors").read_bytes() == model
    target = tmp_path / "runs" / "stage" / "model.safetensors"
    assert artifacts.restore(manifest, "old/model", repo=repo, model_to=target) == [target]
    assert target.read_bytes() == model


def test_restore_will_not_overwrite_a_shipped_file_of_the_same_path(scratch, tmp_path):
    """An earlier generation of a shipped model has the path the shipped one has now: restoring
    it into the repository is refused, naming the file; elsewhere it is written."""
    repo, manifest, model, _ = scratch
    manifest["current"][0]["files"] = [{"path": "models/m.safetensors", "sha256": "0" * 64}]
    (repo / "models").mkdir(exist_ok=True)
    (repo / "models" / "m.safetensors").write_bytes(b"the shipped one")
    with pytest.raises(artifacts.ArtifactError, match=r"models/m.safetensors is a current \(shipped\) file"):
        artifacts.restore(manifest, "old/model", repo=repo)
    assert (repo / "models" / "m.safetensors").read_bytes() == b"the shipped one"
    assert not (repo / "report.md").exists(), "nothing is written when the restore is refused"
    artifacts.restore(manifest, "old/model", to=tmp_path / "out", repo=repo)
    assert (tmp_path / "out" / "models" / "m.safetensors").read_bytes() == model
    target = tmp_path / "m.safetensors"
    artifacts.restore(manifest, "old/model", repo=repo, model_to=target)
    assert target.read_bytes() == model


def test_restore_refuses_a_wrong_checksum_and_writes_nothing(scratch, tmp_path):
    repo, manifest, _, _ = scratch
    manifest["archived"][0]["files"][1]["sha256"] = "0" * 64
    out = tmp_path / "out"
    with pytest.raises(artifacts.ArtifactError, match="report.md .* SHA-256"):
        artifacts.restore(manifest, "old/model", to=out, repo=repo)
    assert not out.exists(), "nothing is written when any file fails its check"


def test_restore_names_what_is_wrong(scratch):
    repo, manifest, _, _ = scratch
    with pytest.raises(artifacts.ArtifactError, match="no artifact named 'model'.*old/model"):
        artifacts.restore(manifest, "model", repo=repo)
    with pytest.raises(artifacts.ArtifactError, match="is current"):
        artifacts.restore(manifest, "shipped", repo=repo)
    manifest["archived"][0]["commit"] = "1" * 40
    with pytest.raises(artifacts.ArtifactError, match="git cannot show"):
        artifacts.restore(manifest, "old/model", repo=repo)


def test_archive_keeps_ignored_files_in_history_only_and_restore_brings_them_back(tmp_path):
    """archive: the files (here under a git-ignored runs/) go into one commit and out of the index
    in the next, which adds the archived entry; they stay on disk, the working tree tracks none of
    them, something else staged stays staged, and restore on a fresh clone writes the same bytes."""
    repo = tmp_path / "repo"
    (repo / "runs" / "stage").mkdir(parents=True)
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True).stdout
    git("init", "-q")
    git("config", "user.name", "t")
    git("config", "user.email", "t@t")
    (repo / ".gitignore").write_text("/runs/\n")
    manifest_path = repo / "artifacts.json"
    manifest_path.write_text(json.dumps({"current": [], "archived": []}, indent=1) + "\n")
    git("add", ".")
    git("commit", "-qm", "start")
    ckpt, model = b"\x01checkpoint\x00" * 50, b"model bytes"
    (repo / "runs" / "stage" / "step_10.pt").write_bytes(ckpt)
    (repo / "runs" / "stage" / "model.safetensors").write_bytes(model)
    (repo / "other.txt").write_text("staged, not archived\n")
    git("add", "other.txt")
    commit = artifacts.archive("demo/stage", ["runs/stage/step_10.pt", "runs/stage/model.safetensors"],
                               "run state", "resume with the trainer", repo=repo, manifest_path=manifest_path)
    assert git("show", f"{commit}:runs/stage/step_10.pt").encode("latin-1") != b""  # in history
    assert git("ls-files", "runs") == ""                                             # not tracked now
    assert (repo / "runs" / "stage" / "step_10.pt").read_bytes() == ckpt               # still on disk
    assert git("diff", "--cached", "--name-only").split() == ["other.txt"]
    entry = json.loads(manifest_path.read_text())["archived"][0]
    assert entry["commit"] == commit and entry["kind"] == "run state"
    assert [f["sha256"] for f in entry["files"]] == [hashlib.sha256(b).hexdigest() for b in (ckpt, model)]
    assert json.loads(git("show", "HEAD:artifacts.json"))["archived"][0]["name"] == "demo/stage"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    written = artifacts.restore(json.loads((clone / "artifacts.json").read_text()), "demo/stage", repo=clone)
    assert [w.read_bytes() for w in written] == [ckpt, model]
    # refusals: a name taken, a tracked file, a missing file
    with pytest.raises(artifacts.ArtifactError, match="already"):
        artifacts.archive("demo/stage", ["runs/stage/model.safetensors"], "k", "n", repo=repo, manifest_path=manifest_path)
    with pytest.raises(artifacts.ArtifactError, match="already tracked"):
        artifacts.archive("x", [".gitignore"], "k", "n", repo=repo, manifest_path=manifest_path)
    with pytest.raises(artifacts.ArtifactError, match="is not a file"):
        artifacts.archive("y", ["runs/none.pt"], "k", "n", repo=repo, manifest_path=manifest_path)


def test_check_reports_a_changed_file(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    manifest = {"current": [{"name": "x", "files": [{"path": "a.bin", "sha256": hashlib.sha256(b"abc").hexdigest()},
                                                    {"path": "gone.bin"}]}]}
    assert artifacts.check(manifest, repo=tmp_path) == ["x: gone.bin is missing"]
    (tmp_path / "a.bin").write_bytes(b"abd")
    (tmp_path / "gone.bin").write_bytes(b"")
    assert artifacts.check(manifest, repo=tmp_path) == ["x: a.bin does not match its SHA-256"]


def test_command_line_check_and_list():
    run = lambda *a: subprocess.run([sys.executable, str(SCRIPT), *a], capture_output=True, text=True)
    r = run("check")
    assert r.returncode == 0 and "match the manifest" in r.stdout, r.stderr
    r = run("list")
    assert r.returncode == 0 and "alanine_dipeptide/smooth_stage2" in r.stdout
    r = run("restore", "no/such/thing")
    assert r.returncode == 2 and "no artifact named" in r.stderr
