"""One table of the pooled importance-weight statistics of every shipped flow, from the JSON files
the evaluations wrote (the alanine-dipeptide study's ``evaluate --weights-only`` and the
pipeline's ``smoothflow weights``, which share a layout), into docs/importance-weights.md
between its table markers. ``--check`` only says whether the document's table is current (the
test command runs it), so the document cannot drift from the numbers.

    python scripts/importance_table.py            # rewrite the table
    python scripts/importance_table.py --check    # exit 1 if the table differs
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pytorch"))

from smoothflow_torch.pipeline.importance import table_header, table_row  # noqa: E402

#: (molecule, the JSON its evaluation wrote), in the table's order
SOURCES = [("alanine dipeptide", "studies/alanine_dipeptide/results/evaluation/importance_weights.json"),
           ("alanine tetrapeptide", "studies/alanine_tetrapeptide/results/importance_weights/importance_weights.json")]
DOC = ROOT / "docs" / "importance-weights.md"
BEGIN, END = "<!-- table: scripts/importance_table.py -->", "<!-- end of table -->"


def table(root: Path = ROOT) -> str:
    """The markdown table: one row per flow of every source, labelled with its molecule."""
    rows = table_header()
    for molecule, source in SOURCES:
        doc = json.loads((root / source).read_text())
        rows += [table_row(f"{molecule}, {r['label']}", r["pooled"], indicator_column=True) for r in doc["results"]]
    return "\n".join(rows)


def replace_table(text: str, new: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"{DOC} has no table markers {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{new}\n{END}{tail}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the document's table is current")
    args = ap.parse_args(argv)
    text = DOC.read_text()
    new = replace_table(text, table())
    if args.check:
        if new != text:
            print(f"{DOC.relative_to(ROOT)}: the table differs from the evaluations' JSON: run "
                  f"python scripts/importance_table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
