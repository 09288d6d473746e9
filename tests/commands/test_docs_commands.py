"""Every `tfllm` command shown in README.md, docs/*.md and serving/README.md still parses: its
command exists, its Hydra overrides compose with the command's config (no renamed key, group or
option), a training config passes tfllm's validation (every registry name and argument
resolves), and plain commands take the arguments shown. So the documentation cannot drift from
the code unnoticed.

(`test_docs_run.py`, under -m slow, runs them all; docs/python.md runs whole in
`test_python_api.py`; README's set-up commands run in CI.)
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from tfllm.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "serving" / "README.md"]
PULLED = "PULLED_CHECKPOINT"  # `$(tfllm pretrained pull NAME)` is written PULLED_CHECKPOINT:NAME

# Hydra commands: (config name, config subfolder).
HYDRA = {
    "train": ("config", None),
    "generate": ("generate", None),
    "chat": ("chat", None),
    "export": ("export", None),
    "serve": ("serve", None),
    "client": ("client", "_client"),
    "evaluate": ("evaluate", "_evaluate"),
    "convert": ("convert", None),
    "quantize": ("quantize", None),
    "prune": ("prune", None),
    "embed": ("embed", None),
    "tokenizer": ("tokenizer_train", None),
}


def documented_commands() -> list[tuple[str, list[str]]]:
    """`(file:line, argv after "tfllm")` of every command line in a code block (transcripts,
    `$ tfllm ...` followed by what it printed, show mistakes on purpose and are left out)."""
    found = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        inside, pending, start = False, "", 0
        for number, line in enumerate(lines, 1):
            if line.lstrip().startswith("```"):
                inside = not inside
                continue
            if not inside:
                continue
            text = line.strip()  # (`$ tfllm ...` lines are transcripts, errors on purpose)
            if not pending and "&& tfllm " in text:  # `pip install ... && tfllm train ...`
                for part in text.split("&&"):
                    if part.strip().startswith("tfllm "):
                        argv = shlex.split(part, comments=True)[1:]
                        found.append((f"{doc.relative_to(ROOT)}:{number}", argv))
                continue
            if not pending and not text.startswith("tfllm "):
                continue
            if not pending:
                start = number
            pending += " " + text.rstrip("\\").strip()
            if text.endswith("\\"):
                continue
            command = re.sub(
                r"\$\(tfllm pretrained pull ([\w.-]+)\)", PULLED + r":\1", pending.strip()
            )
            argv = [bash_tilde(a) for a in shlex.split(command, comments=True)[1:] if a != "..."]
            found.append((f"{doc.relative_to(ROOT)}:{start}", argv))
            pending = ""
    return found


def bash_tilde(arg: str) -> str:
    """`key=~/path` as bash passes it: the tilde after an assignment-like `=` expanded."""
    key, sep, value = arg.partition("=")
    if sep and re.fullmatch(r"[A-Za-z_]\w*", key) and value.startswith("~"):
        return f"{key}={os.path.expanduser(value)}"
    return arg


COMMAND_LINES = documented_commands()


def compose_overrides(config_name: str, subdir: str | None, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tfllm.config import config_dir, with_plugin_search_path

    path = config_dir() if subdir is None else str(Path(config_dir()) / subdir)
    overrides = with_plugin_search_path(overrides) if subdir is None else overrides
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=path, version_base="1.3"):
        return compose(config_name, overrides=overrides)


def hydra_overrides(argv: list[str]) -> list[str]:
    """The overrides of a Hydra command line: flags dropped, a sweep's first value kept."""
    multirun = "-m" in argv or "--multirun" in argv
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--cfg", "-c"):
            skip = True
            continue
        if arg.startswith("-") or arg.startswith("hydra."):
            continue
        key, _, value = arg.partition("=")
        if multirun and "," in value and not value.startswith(("[", "{")):
            arg = f"{key}={value.split(',')[0]}"
        out.append(arg)
    return out


def check(argv: list[str]) -> None:
    from tfllm.commands import launch

    name, rest = argv[0], argv[1:]
    assert name in COMMANDS, f"no command '{name}'"
    if name == "launch":
        options, command = launch.parse_launch_args(rest)
        check(command)
        return
    if name == "export" and rest[:1] in (["run"], ["inspect"]):
        return  # `tfllm export run|inspect DIR ...`: a folder and inputs, no config
    if name == "tokenizer":
        assert rest[:1] == ["train"]
        rest = rest[1:]
    if name in HYDRA:
        config_name, subdir = HYDRA[name]
        overrides = hydra_overrides(rest)
        if name == "train":
            overrides = [o for o in overrides if not o.startswith("run_dir=")] + ["run_dir=x"]
        cfg = compose_overrides(config_name, subdir, overrides)
        if name == "train" and not cfg.get("init_from"):
            from tfllm.config import to_plain
            from tfllm.training.validation import validate_train_config

            plain = to_plain(cfg)
            plain.pop("run_dir")
            validate_train_config(plain)
        return
    plain = {
        "list": lambda: check_list(rest),
        "plugins": lambda: assert_empty(rest),
        "bench": lambda: check_keys(rest, "peak", {"size", "dtype", "repeats"}),
        "scaling": lambda: check_scaling(rest),
        "pretrained": lambda: check_pretrained(rest),
        "attention": lambda: check_keys(["-", *rest], "-", {"ckpt", "text", "out"}),
        "kb": lambda: check_kb(rest),
        "data": lambda: check_data(rest),
    }
    assert name in plain, f"no check for '{name}': add one to this test"
    plain[name]()


def check_kb(rest: list[str]) -> None:
    from tfllm.commands.kb import BUILD_ARGUMENTS, SEARCH_ARGUMENTS

    arguments = {"build": BUILD_ARGUMENTS, "search": SEARCH_ARGUMENTS}[rest[0]]
    given = {a.partition("=")[0] for a in rest[1:]}
    assert given <= set(arguments), rest
    assert {k for k, v in arguments.items() if v is None} <= given, rest


def check_data(rest: list[str]) -> None:
    from tfllm.commands.data import INSPECT_ARGUMENTS, PREPARE_ARGUMENTS

    if rest[0] == "inspect":
        assert "=" not in rest[1] and {a.partition("=")[0] for a in rest[2:]} <= set(
            INSPECT_ARGUMENTS
        ), rest
        return
    assert rest[0] == "prepare", rest
    given = {a.partition("=")[0] for a in rest[1:]}
    assert given <= set(PREPARE_ARGUMENTS), rest
    assert {k for k, v in PREPARE_ARGUMENTS.items() if v is None} <= given, rest


def assert_empty(rest: list[str]) -> None:
    assert not rest


def check_list(rest: list[str]) -> None:
    from tfllm.commands.catalog import read_catalog

    assert len(rest) <= 1 and (not rest or rest[0] in read_catalog()["kinds"])


def check_keys(rest: list[str], first: str, keys: set[str]) -> None:
    assert rest[:1] == [first], rest
    assert {a.partition("=")[0] for a in rest[1:]} <= keys, rest


def check_scaling(rest: list[str]) -> None:
    if rest[:1] == ["chinchilla"]:
        check_keys(rest, "chinchilla", {"compute"})
    else:
        check_keys(rest, "fit", {"sweep_dir", "out"})


def check_pretrained(rest: list[str]) -> None:
    from tfllm.pretrained.packages import CATALOG

    assert rest[:1] in (["list"], ["pull"])
    if rest[0] == "pull":
        assert rest[1] in CATALOG


def test_the_docs_show_commands():
    assert len(COMMAND_LINES) >= 60  # README, docs and serving/README together
    shown = {argv[0] for _, argv in COMMAND_LINES}
    assert {"train", "generate", "export", "serve", "client", "evaluate"} <= shown


@pytest.mark.parametrize("argv", [a for _, a in COMMAND_LINES], ids=[w for w, _ in COMMAND_LINES])
def test_a_documented_command_parses(argv):
    check(argv)
