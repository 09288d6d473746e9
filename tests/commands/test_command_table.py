"""The CLI's one table of commands drives help, dispatch and "did you mean"; every entry
names a function that exists; `--help` and `--version` import no TensorFlow."""

import importlib
import subprocess
import sys

import pytest

from tfllm import cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_dispatches_to_a_function_and_is_in_the_help(name):
    command = cli.COMMANDS[name]
    module = importlib.import_module(f"tfllm.commands.{command.module}")
    assert callable(getattr(module, command.function))
    assert f"\n  {name} " in cli.usage()


def test_unknown_commands_get_a_suggestion_from_the_table(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["trian"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "tfllm: error: unknown command 'trian'. Did you mean 'train'?" in err


def test_help_and_version_do_not_import_tensorflow():
    code = (
        "import sys; from tfllm import cli; cli.main(['--help']); cli.main(['--version']); "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: tfllm [--verbose] <command>" in out.stdout and "tfllm 0." in out.stdout
    assert out.stdout.strip().endswith("False")


def test_a_plain_command_reports_user_errors_as_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "nope"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "tfllm: error: usage: tfllm bench peak [size=4096] [dtype=float32] [repeats=10]"
    )


PLAIN = ["chat", "client", "convert", "embed", "export", "generate", "prune", "quantize", "serve"]


@pytest.mark.parametrize("name", PLAIN)
def test_a_commands_help_shows_its_own_settings_with_their_comments(name, capsys):
    """A command whose config composes no groups answers `--help` with its YAML as written:
    every setting it reads and the comment that explains it, not the training config's
    groups (which Hydra's own help would list)."""
    import yaml

    cli.main([name, "--help"])
    out = capsys.readouterr().out
    assert out.startswith(f"# `tfllm {name}")  # the file's first line says what it does
    assert "Configuration groups" not in out and "defaults:" not in out
    body = out.split("\n\nOverride any key as key=value")[0]
    file = "_client/client.yaml" if name == "client" else f"{name}.yaml"
    with open(f"{config_dir()}/{file}") as f:
        expected = yaml.safe_load(f)
    expected.pop("defaults"), expected.pop("hydra", None)
    assert yaml.safe_load(body) == expected
    assert "#" in body.split("\n", 2)[2]  # the settings' own comments are kept


def test_a_command_that_composes_groups_keeps_hydras_help(capsys):
    with pytest.raises(SystemExit) as exit_info:  # Hydra's help exits
        cli.main(["evaluate", "--help"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "Configuration groups" in out and "eval: " in out


def config_dir():
    from tfllm.commands.common import config_dir

    return config_dir()
