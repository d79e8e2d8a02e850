"""docs/importance-weights.md holds the table scripts/importance_table.py makes from the
evaluations' JSON files: the document cannot drift from the numbers."""
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import importance_table  # noqa: E402


def test_the_documents_table_is_the_one_the_json_files_give():
    assert importance_table.main(["--check"]) == 0


def test_a_changed_number_changes_the_table(tmp_path):
    """The check can fail: the table made from a copy of the sources with one pooled ESS/n
    changed differs in that row only, and names the new value."""
    for _, source in importance_table.SOURCES:
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        doc = json.loads((ROOT / source).read_text())
        (tmp_path / source).write_text(json.dumps(doc))
    original = importance_table.table(tmp_path).splitlines()
    _, source = importance_table.SOURCES[-1]
    doc = json.loads((tmp_path / source).read_text())
    changed = copy.deepcopy(doc)
    changed["results"][0]["pooled"]["ess"]["pooled"] = 0.123
    (tmp_path / source).write_text(json.dumps(changed))
    new = importance_table.table(tmp_path).splitlines()
    diff = [i for i, (a, b) in enumerate(zip(original, new)) if a != b]
    assert len(diff) == 1 and "| 12.3 % |" in new[diff[0]]
    rows = sum(len(json.loads((ROOT / s).read_text())["results"]) for _, s in importance_table.SOURCES)
    assert len(new) == 2 + rows
