"""The options table (hudd_core.options) drives the configuration and every command's flags:
one default, one help text, the steps that read each option."""

from __future__ import annotations

import argparse
import ast
import logging
from pathlib import Path

import pytest

from hudd_core.cli import build_parser, main
from hudd_core.config import DEFAULTS, load_config, read_toml
from hudd_core.options import (
    OPTIONS,
    SHARED,
    STEPS,
    AssignOptions,
    Preprocess,
    RayOptions,
    RetrainOptions,
    step_options,
)


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flags(p: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in p._actions if a.option_strings}


def test_every_option_is_a_flag_of_run_and_of_each_step_that_reads_it():
    commands = _commands()
    run = _flags(commands["run"])
    assert set(OPTIONS) <= set(run)
    for step in STEPS:
        flags = _flags(commands[step])
        assert set(step_options(step)) <= set(flags), step
        assert set(SHARED) <= set(flags), step  # a script may pass the same flags to each
        for name in (*SHARED, *step_options(step)):
            action, opt = flags[name], OPTIONS[name]
            assert action.default is None, (step, name)  # None: not given; the table fills in
            assert opt.flag in action.option_strings or f"--no-{opt.flag[2:]}" in (
                action.option_strings
            )
            assert opt.help in action.help, (step, name)  # the table's help, written once
            assert run[name].help == action.help
        # a step takes no option of the table that it does not read, but the shared ones
        others = {k for k in flags if k in OPTIONS} - set(SHARED) - set(step_options(step))
        assert not others, (step, others)


def test_one_default_per_option_in_the_configuration_and_the_dataclasses():
    cfg = load_config(None, {})
    assert {k for k in cfg} == set(OPTIONS) == set(DEFAULTS)
    for k, opt in OPTIONS.items():
        if k not in ("k_range", "repeats"):  # parsed / resolved by load_config
            assert cfg[k] == opt.default, k
    assert AssignOptions.from_config(cfg) == AssignOptions()
    assert RetrainOptions.from_config({**cfg, "repeats": None}) == RetrainOptions()
    assert RayOptions.from_config(cfg) == RayOptions()
    assert Preprocess.from_config({**cfg, "mean": [0.5]}) == Preprocess(mean=[0.5])
    assert RayOptions.from_config({**cfg, "ray_shard_size": 16}).shard_size == 16
    assert RetrainOptions(train_batch_size=16).hp["batch_size"] == 16
    for opt in OPTIONS.values():
        if opt.choices and not opt.list and opt.default is not None:
            assert opt.default in opt.choices, opt.name


@pytest.mark.parametrize("step", [*STEPS, "run", "demo"])
def test_help_of_every_command(step, capsys):
    with pytest.raises(SystemExit) as stop:
        main([step, "--help"])
    assert stop.value.code == 0
    assert "--workdir" in capsys.readouterr().out


def test_hudd_help():
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0


def test_a_shared_flag_a_step_does_not_read_is_ignored_with_one_log_line(
    tmp_path, monkeypatch, caplog
):
    import hudd_core.cli.cluster as cluster_cli
    import hudd_core.cli.report as report_cli

    seen = {}

    def fake(args):
        seen.update(vars(args))
        return 0

    monkeypatch.setattr(cluster_cli, "run", fake)
    monkeypatch.setattr(report_cli, "run", fake)
    shared = ["--workdir", str(tmp_path / "T"), "--model", "alexnet", "--weights", "w.pt",
              "--image-size", "32", "--engine", "ray", "--seed", "3"]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="hudd"):
        assert main(["cluster", *shared, "--k-range", "2:4"]) == 0
    lines = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert lines == ["cluster: --model, --weights, --image-size, --engine not used by this "
                     "step, ignored"]  # fmt: skip
    assert (
        seen["seed"] == 3 and seen["k_range"] == (2, 4) and seen["workdir"] == str(tmp_path / "T")
    )
    assert seen["cfg"]["selection"] == "wicd-knee" and seen["gifs"] is True  # the table's
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hudd"):
        assert main(["report", *shared]) == 0
    lines = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert len(lines) == 1 and "--seed" in lines[0] and "--model" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hudd"):
        assert main(["cluster", "--workdir", str(tmp_path / "T")]) == 0
    assert not [r for r in caplog.records if "not used" in r.getMessage()]


def test_a_toml_unknown_key_names_the_key_and_the_file(tmp_path, capsys):
    toml = tmp_path / "hudd.toml"
    toml.write_text('workdir = "T"\n[assign]\ntopp = 3\n')
    with pytest.raises(ValueError, match=r"hudd\.toml: unknown setting 'topp'"):
        read_toml(toml)
    assert main(["run", "--config", str(toml)]) == 2
    err = capsys.readouterr().err
    assert str(toml) in err and "topp" in err
    toml.write_text("[asign]\ntop = 3\n")
    with pytest.raises(ValueError, match=r"hudd\.toml: unknown table \[asign\]"):
        read_toml(toml)
    toml.write_text('[retrain]\nrepeats = 2\nbaselines = ["BL2"]\n')
    assert load_config(toml, {})["repeats"] == 2


def test_cli_common_imports_no_command():
    path = Path(__file__).resolve().parents[1] / "hudd_core" / "cli" / "common.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    assert not {n for n in names if n.startswith("hudd_core.cli")}


@pytest.mark.parametrize(
    "name",
    sorted(
        n
        for n, o in OPTIONS.items()
        if not o.list and (o.choices or n in {"composite", "method", "backend"})
    ),
)
def test_the_run_validation_reads_every_choice_from_the_table(name):
    """``hudd run`` checks each option with choices before its first step, naming it; the
    table's default passes."""
    from hudd_core.pipeline import validate

    validate(load_config(None, {}))
    with pytest.raises(ValueError, match=f"--{name.replace('_', '-')}"):
        validate(load_config(None, {name: "no-such-choice"}))
