"""The ``probekit`` command line as a whole: help, ``tasks``, exit codes, a light start, and the installed console script.

The expected commands come from the CLI's own registry (``probekit/commands/<name>.py``, each registering
on ``probekit.cli.app``) and the expected tasks from ``probekit.tasks``, so no list here can drift.
"""

from __future__ import annotations

import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import probekit as pk
import probekit.commands
from probekit import cli, runs
from probekit.cli import main
from probekit.precision import PRECISIONS as LIGHT_PRECISIONS
from probekit.training import PRECISIONS, TrainConfig

TINY = ["--layers", "1", "--d-model", "16", "--heads", "2", "--steps", "3", "--batch-size", "4", "--no-progress"]
#: Unicode box-drawing block (U+2500–U+257F): what rich-formatted errors are drawn with.
BOX = re.compile("[\u2500-\u257f]")


def registered_commands() -> list[str]:
    """Names of the commands the CLI registers (its registry, not a list kept here)."""
    cli._register_commands()
    return [c.name for c in cli.app.registered_commands]


def listed_commands(help_text: str) -> list[str]:
    """The command names in the ``Commands:`` section of a help page."""
    section = help_text.split("Commands:", 1)[1]
    return [m.group(1) for m in re.finditer(r"^  (\S+)", section, flags=re.M)]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and not BOX.search(err), err
    return lines[0]


# ---- help ----

def test_every_command_module_registers_a_command():
    names = registered_commands()
    assert len(names) == len(set(names))  # registering again (main runs many times in-process) adds nothing
    modules = [m.name for m in pkgutil.iter_modules(probekit.commands.__path__) if not m.name.startswith("_")]
    assert modules and sorted(names) == sorted(modules)  # one command per module, named for it
    for _ in range(2):
        assert main(["--help"]) == 0
    assert registered_commands() == names


@pytest.mark.parametrize("argv", [["--help"], []], ids=["--help", "no-args"])
def test_help_lists_every_registered_command(capsys, argv):
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Usage: probekit") and err == ""
    assert sorted(listed_commands(out)) == sorted(registered_commands())


@pytest.mark.parametrize("name", registered_commands())
def test_each_command_has_help(capsys, name):
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: probekit {name}")


def test_help_names_registry_choices_filled_in_when_shown(capsys):
    from circuits import targets
    from probekit import metrics
    from probes.trainer import KINDS

    expected = {"probe": KINDS, "sweep": KINDS, "patch": [*targets.names(), *metrics.names()]}
    for name, choices in expected.items():
        assert main([name, "--help"]) == 0
        out = " ".join(capsys.readouterr().out.split())  # help wraps lines
        assert not re.search(r"\{(kinds|targets|metrics)\}", out) and all(c in out.replace("- ", "-") for c in choices), (name, out)


# ---- probekit tasks ----

def _blocks(out: str) -> dict[str, list[str]]:
    """``probekit tasks`` output split per task: a block starts at a line without indentation."""
    blocks: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line and not line[0].isspace():
            name, _, rest = line.partition(" ")
            blocks[name] = [rest.strip()]
        elif line.strip():
            blocks[list(blocks)[-1]].append(line.strip())
    return blocks


def test_tasks_lists_every_registered_task_with_labels_and_control_key(capsys):
    assert main(["tasks"]) == 0
    blocks = _blocks(capsys.readouterr().out)
    assert list(blocks) == pk.tasks.names()
    for name, lines in blocks.items():
        try:
            task = pk.tasks.get(name)
        except pk.ProbekitError:  # needs data this machine lacks: listed, and said so
            assert "unavailable" in lines[0]
            continue
        assert lines[0] == task.description
        assert [ln for ln in lines if ln.startswith("control key:")] == [f"control key: {task.control_key}"]
        labels = [re.match(r"label (\S+) \((\w+)\)", ln).groups() for ln in lines if ln.startswith("label ")]
        assert labels == [(s.name, s.kind) for s in task.label_specs]
        assert len(lines) == 2 + len(task.label_specs)


# ---- exit codes ----

def _inject_internal_error(monkeypatch):
    """Fault injection: the ``tasks`` command's call into the task registry raises a RuntimeError."""
    cli._register_commands()  # registration reads the registry too; do it before the fault is in place

    def boom():
        raise RuntimeError("injected fault")

    monkeypatch.setattr(pk.tasks, "names", boom)


def test_internal_error_exits_1_with_one_line(monkeypatch, capsys):
    monkeypatch.delenv("PROBEKIT_DEBUG", raising=False)
    _inject_internal_error(monkeypatch)
    assert main(["tasks"]) == 1
    out, err = capsys.readouterr()
    line = one_line(err)
    assert line.startswith("probekit: internal error: RuntimeError: injected fault")
    assert "PROBEKIT_DEBUG=1" in line and out == ""


def test_internal_error_raises_under_probekit_debug(monkeypatch):
    monkeypatch.setenv("PROBEKIT_DEBUG", "1")
    _inject_internal_error(monkeypatch)
    with pytest.raises(RuntimeError, match="injected fault"):  # the console script then prints the traceback
        main(["tasks"])


@pytest.mark.parametrize("argv, expected", [
    (["tsks"], "No such command 'tsks'"),
    (["train", "--task", "parens", "--out", "r", "--stepz", "3"], "No such option: --stepz"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, expected):
    assert main(argv) == 2
    assert expected in one_line(capsys.readouterr().err)


# ---- train --precision ----

def test_precision_choices_come_from_the_config(capsys):
    flags = [p.replace("_", "-") for p in PRECISIONS]  # TrainConfig's Literal, kebab-case
    assert main(["train", "--help"]) == 0
    assert f"--precision {'|'.join(flags)} " in capsys.readouterr().out


def test_precision_choices_are_re_exported_from_the_light_module():
    assert PRECISIONS is LIGHT_PRECISIONS


def test_bad_precision_exits_2_naming_valid_values(tmp_path, capsys):
    assert main(["train", "--task", "parens", "--out", str(tmp_path / "r"), *TINY, "--precision", "fp16"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "'fp16'" in line and all(p in line for p in PRECISIONS)
    assert not (tmp_path / "r").exists()


def test_bf16_on_cpu_falls_back_to_fp32_with_a_warning_and_trains(tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level("WARNING", logger="probekit.training"):
        assert main(["train", "--task", "parens", "--out", str(out), *TINY, "--precision", "bf16", "--device", "cpu"]) == 0
    assert any(r.levelname == "WARNING" and "bf16" in r.getMessage() and "fp32" in r.getMessage()
               for r in caplog.records), caplog.text
    info = runs.read_run(out)
    tc = TrainConfig.from_dict(info.train_config)
    assert tc.precision == "bf16"  # what was asked for is recorded
    # the oracle: the same run in fp32 through the Python API, weight for weight
    task = pk.tasks.get("parens")
    model = pk.build_model(info.model_config, tokenizer=task.tokenizer())
    result = pk.train(model, task, tc.replace(precision="fp32"), progress=False)
    loaded = pk.load(out)
    a, b = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert result.steps == 3 and runs.read_metrics(out) == result.history


# ---- the installed console script, in a subprocess ----

def _console_script() -> str:
    exe = shutil.which("probekit", path=str(Path(sys.executable).parent))
    assert exe is not None, f"no probekit console script next to {sys.executable} (pip install -e .)"
    return exe


def _run(argv: list[str], **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "PROBEKIT_DEBUG"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**clean, **env})


# ---- a light start: help needs neither torch, TransformerLens nor transformers ----

HEAVY = ("torch", "transformer_lens", "transformers")

#: commands whose help names choices from a registry that lives in a module importing torch at module level
#: (probes/trainer.py via probes/__init__.py; circuits/targets.py via circuits/__init__.py; probekit/metrics.py).
#: Their help fills those choices in only when shown, so only their own help page pays for torch.
HEAVY_HELP = {"probe", "sweep", "patch"}


def _heavy_modules_after(code: str) -> list[str]:
    """The heavy packages present in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    check = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    proc = _run([sys.executable, "-c", check])
    assert proc.returncode == 0, proc.stderr
    return [m for m in proc.stdout.strip().splitlines()[-1].split(",") if m] if proc.stdout.strip() else []


def test_import_probekit_is_light():
    assert _heavy_modules_after("import probekit, probekit.tasks, probekit.activations\n"
                                "assert set(probekit.__all__) <= set(dir(probekit))\n"
                                "assert probekit.tasks.names()") == []


def test_root_help_is_light():
    code = ("import contextlib, io\nimport probekit.cli as cli\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n    assert cli.main(['--help']) == 0\n"
            "assert out.getvalue().startswith('Usage: probekit')")
    assert _heavy_modules_after(code) == []


@pytest.mark.parametrize("name", registered_commands())
def test_command_help_is_light(name):
    """A command's help loads neither TransformerLens nor transformers; only the help pages that list a registry
    living in a torch module (``HEAVY_HELP``) load torch."""
    code = ("import contextlib, io\nimport probekit.cli as cli\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            f"    assert cli.main([{name!r}, '--help']) == 0\n"
            f"assert out.getvalue().startswith('Usage: probekit {name}')")
    allowed = {"torch"} if name in HEAVY_HELP else set()
    assert set(_heavy_modules_after(code)) - allowed == set()


def test_lazy_public_names_are_the_defining_modules_objects():
    import probekit.activations.cache
    import probekit.activations.store
    import probekit.model
    from probekit.tasks import base

    assert pk.ModelConfig is probekit.model.ModelConfig and pk.build_model is probekit.model.build_model
    assert pk.fingerprint is probekit.model.fingerprint
    assert pk.ActivationStore is probekit.activations.store.ActivationStore is probekit.activations.ActivationStore
    assert pk.cache_activations is probekit.activations.cache.cache_activations
    assert pk.tasks.Task is base.Task and pk.tasks.TaskBatch is base.TaskBatch
    for module in (pk, pk.tasks, probekit.activations):
        assert set(module.__all__) <= set(dir(module))
        for name in module.__all__:
            assert getattr(module, name) is not None
    with pytest.raises(AttributeError):
        pk.no_such_name  # noqa: B018
    # every submodule stays reachable as an attribute, as when `import probekit` imported them eagerly
    import importlib

    for sub in ("hooks", "data", "runs", "tokenizer", "errors"):
        assert getattr(pk, sub) is importlib.import_module(f"probekit.{sub}")


def test_console_script_help_and_bad_input(tmp_path):
    exe = _console_script()
    ok = _run([exe, "--help"])
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""
    assert sorted(listed_commands(ok.stdout)) == sorted(registered_commands())

    bad = _run([exe, "train", "--task", "inducton", "--out", str(tmp_path / "r")])
    assert bad.returncode == 2
    line = one_line(bad.stderr)
    assert line.startswith("probekit: error: unknown task 'inducton'") and "did you mean 'induction'" in line
    assert all(name in line for name in pk.tasks.names())
    assert bad.stdout == "" and not (tmp_path / "r").exists()


_FAULTY = ("import sys, probekit.tasks as t\n"
           "def boom(): raise RuntimeError('injected fault')\n"
           "from probekit.cli import main, _register_commands\n"
           "_register_commands(); t.names = boom\n"
           "sys.exit(main(['tasks']))\n")


def test_internal_error_in_a_process_one_line_or_traceback_with_debug():
    short = _run([sys.executable, "-c", _FAULTY])
    assert short.returncode == 1
    assert "injected fault" in one_line(short.stderr)
    debug = _run([sys.executable, "-c", _FAULTY], PROBEKIT_DEBUG="1")
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback") and debug.stderr.rstrip().endswith("RuntimeError: injected fault")
