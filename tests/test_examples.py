"""The example scripts (examples/gcn.py, gat.py, sage.py, demo.py) run and report a test accuracy.

A few epochs on Cora each, in this process (their ``main(argv)``), plus one real ``python
examples/demo.py`` subprocess, so that the file-as-script path (``import common`` from the
script's directory) is covered too. Accuracy itself is measured by running the scripts with
``--seeds 10`` (README, "Accuracy"), not here.
"""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
ACCURACY = re.compile(r"test accuracy (\d+(?:\.\d+)?)(?: \+- (\d+(?:\.\d+)?))? %")


def _example(name: str):
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    module = importlib.import_module(name)
    assert os.path.dirname(os.path.abspath(module.__file__)) == EXAMPLES
    return module


def _accuracies(text: str) -> list[float]:
    found = [float(m.group(1)) for m in ACCURACY.finditer(text)]
    assert found, f"no 'test accuracy' line in:\n{text}"
    for value in found:
        assert 0.0 <= value <= 100.0
    return found


@pytest.mark.parametrize("name", ["gcn", "gat", "sage"])
def test_example_trains_and_reports_accuracy(name, capsys):
    runs = _example(name).main(["--dataset", "cora", "--epochs", "3", "--no-progress", "--log-every", "1"])
    out = capsys.readouterr().out
    assert len(_accuracies(out)) == 1
    assert len(runs) == 1 and runs[0].epochs_run == 3 and 1 <= runs[0].best_epoch <= 3
    assert 0.0 <= runs[0].test_acc <= 1.0
    assert "epoch    3" in out and "ms/epoch" in out


@pytest.mark.parametrize("name", ["gcn", "gat", "sage", "demo"])
def test_example_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _example(name).main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--dataset", "--epochs", "--patience", "--seeds", "--backend", "--device"):
        assert option in out
    assert "best validation accuracy" in " ".join(out.split())   # the model selection rule


def test_seeds_report_mean_and_std_without_tqdm(capsys, monkeypatch):
    common = _example("common")
    monkeypatch.setattr(common, "tqdm", None)   # as without tqdm installed: plain lines
    runs = _example("sage").main(["--epochs", "2", "--seeds", "2", "--log-every", "1"])
    out = capsys.readouterr().out
    assert [r.seed for r in runs] == [0, 1]
    assert "[seed 1] epoch    2" in out
    summary = [m for m in ACCURACY.finditer(out) if m.group(2) is not None]
    assert len(summary) == 1 and "over 2 seeds" in out
    assert len(_accuracies(out)) == 3


def test_patience_stops_early(capsys):
    runs = _example("gcn").main(["--epochs", "50", "--patience", "1", "--lr", "0", "--no-progress",
                                 "--log-every", "0"])
    capsys.readouterr()
    # lr 0: nothing ever improves after epoch 1, so the run stops at epoch 2
    assert runs[0].epochs_run == 2 and runs[0].best_epoch == 1


def test_demo_runs_as_a_script():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, "demo.py"), "--epochs", "2",
                             "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert len(_accuracies(result.stdout)) == 1
    assert "generated kernels" in result.stdout and "ms/epoch" in result.stdout
