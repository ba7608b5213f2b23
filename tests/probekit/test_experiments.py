"""Built-in experiments and the demo: the registry feeds the CLI; each runs end to end at --quick size."""

from __future__ import annotations

import json

import pytest

from probekit import experiments
from probekit.cli import main


def test_unknown_experiment_exit_2_names_closest(tmp_path, capsys):
    assert main(["experiment", "inducton", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'induction'" in err[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", experiments.names())
def test_experiment_quick_writes_report(name, tmp_path):
    out = tmp_path / name
    index = experiments.get(name)(out, quick=True, progress=False)
    assert index == out / "index.html" and index.is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["sections"]
    for sec in report["sections"]:
        if sec["page"]:
            assert (out / sec["page"]).stat().st_size > 0
