"""The machine record written beside every benchmark and study number (smoothflow_torch.provenance)."""
import datetime
import subprocess

from smoothflow_torch import provenance


def test_machine_names_the_checkouts_commit_the_time_and_the_cores():
    m = provenance.machine(versions={"numpy": "1"})
    head = subprocess.run(["git", "-C", str(provenance.ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    assert head and m["commit"].split("+")[0] == head
    when = datetime.datetime.fromisoformat(m["date"])
    assert abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) < 60
    assert m["cores"] >= 1 and len(m["load_average"]) == 3 and m["cpu"]
    assert m["versions"] == {"numpy": "1"}


def test_a_folder_outside_git_gives_unknown_not_an_error(tmp_path):
    assert provenance.git_commit(tmp_path) == "unknown"
