"""`tfllm chat ckpt=DIR`: a streamed conversation on the terminal (/reset, /exit), with a local
model (kept warm between launches by a resident worker: `tfllm.commands.resident`), an export
(`ckpt=exports/NAME/VERSION`: its signatures, as a server runs them) or a served export
(`server=host:port model_name=NAME`, which describes its template, tokens and context), and an
optional safety filter."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import CommandError, run_hydra, settings, user_error
from tfllm.commands.generate import safety_filter
from tfllm.serving.in_process import export_version


def open_session(plain: dict[str, Any], loaded: tuple | None = None) -> Any:
    """The `ChatSession` the settings describe: a local model, or a served one. `loaded`:
    `(model, tokenizer, run config, streamer)` already loaded from `plain["ckpt"]` (a resident
    worker's), used instead of loading them again."""
    from tfllm.generation.chat import ChatSession
    from tfllm.generation.settings import GenerationConfig

    config = settings(GenerationConfig, plain)
    remote, specials, streamer = None, None, None
    version = None if plain["server"] or loaded is not None else export_version(plain["ckpt"])
    if plain["server"]:  # without TensorFlow: the server tokenizes, counts and generates
        from tfllm.runs import load_config_and_special_tokens
        from tfllm.serving.client import Client

        host, _, port = str(plain["server"]).rpartition(":")
        if not host or not port.isdigit() or not plain["model_name"]:
            raise CommandError("server= takes host:port, and model_name= names the served model")
        with user_error():  # a certificate without its key
            remote = Client(
                host,
                int(port),
                plain["model_name"],
                token=plain["auth_token"],
                tls=bool(plain["tls"]),
                tls_ca_file=plain["tls_ca_file"],
                tls_cert_file=plain["tls_cert_file"],
                tls_key_file=plain["tls_key_file"],
            )
        model = tokenizer = None
        if plain["ckpt"]:  # the export's version folder: its files, as the server has them
            run_cfg, specials = load_config_and_special_tokens(plain["ckpt"])
        else:  # what the export says of itself (its `describe` signature)
            run_cfg, specials = served_settings(remote, plain)
    elif version is not None:  # an export: its signatures, called in this process
        from tfllm.runs import load_config_and_special_tokens
        from tfllm.serving.in_process import InProcessExport

        run_cfg, specials = load_config_and_special_tokens(version)
        model = tokenizer = None
        # At a terminal the export loads, and the graphs a chat calls initialize, while the
        # user types the first message.
        interactive = sys.stdin.isatty()
        with user_error():
            remote = InProcessExport(version, in_background=interactive)
        if interactive:
            remote.warm(chat_signatures)
    elif loaded is not None:
        model, tokenizer, run_cfg, streamer = loaded
    else:
        from tfllm.runs import load_run

        model, tokenizer, run_cfg = load_run(plain["ckpt"])
    template = plain["template"] or (run_cfg.get("chat") or {}).get("template")
    if not template:
        source = plain["ckpt"] or f"the served model '{plain['model_name']}'"
        raise CommandError(f"ckpt: {source} has no chat template; pass template=")
    grounding = {}
    if plain.get("kb"):
        from tfllm.retrieval.knowledge_base import KnowledgeBase

        k = plain["kb_k"]
        if not isinstance(k, int) or k < 1:
            raise CommandError(f"kb_k: must be a positive number of passages, got {k!r}")
        with user_error():
            kb = KnowledgeBase.load(plain["kb"])
        grounding["retriever"] = lambda question: [h.passage for h in kb.search(question, k)]
        if plain.get("grounding_template"):
            grounding["grounding_template"] = plain["grounding_template"]
    with user_error():
        return ChatSession(
            model,
            tokenizer,
            template,
            plain["system_prompt"],
            config,
            plain["jit_compile"],
            remote=remote,
            context=run_cfg["model"]["max_sequence_length"],
            special_tokens=specials,
            streamer=streamer,
            **grounding,
        )


def chat_signatures(names: set[str]) -> tuple[str, ...]:
    """The signatures a chat with an export calls: `count_tokens` to fit the conversation,
    then the streaming ones, or `generate` where the export has none."""
    from tfllm.serving.openai_stream import STREAM_SIGNATURES

    streams = set(STREAM_SIGNATURES) <= names
    return ("count_tokens", *(STREAM_SIGNATURES if streams else ("generate",)))


def served_settings(client: Any, plain: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """`(run config, special tokens)` for a chat with a served export, from its `describe`
    signature: the chat template and the context, in the run config's layout."""
    from tfllm.serving.client import ServingClientError

    try:
        described = client.describe(["chat_template", "special_tokens", "context"])
    except LookupError as e:
        raise CommandError(f"server: {e}; or pass ckpt= the export's version folder") from None
    except (ServingClientError, OSError) as e:
        raise CommandError(f"server: {plain['server']}: {e}") from None
    run_cfg = {
        "chat": {"template": described["chat_template"]},
        "model": {"max_sequence_length": int(described["context"])},
    }
    return run_cfg, dict(described["special_tokens"])


def check_settings(plain: dict[str, Any]) -> None:
    """What `open_session` would refuse, checked without loading the model."""
    from tfllm.generation.settings import GenerationConfig
    from tfllm.runs import load_run_config

    settings(GenerationConfig, plain)
    with user_error():
        run_cfg = load_run_config(plain["ckpt"])
    if not (plain["template"] or (run_cfg.get("chat") or {}).get("template")):
        raise CommandError(f"ckpt: {plain['ckpt']} has no chat template; pass template=")
    k = plain["kb_k"]
    if plain.get("kb") and (not isinstance(k, int) or k < 1):
        raise CommandError(f"kb_k: must be a positive number of passages, got {k!r}")


def chat_job(plain: dict[str, Any]) -> None:
    if not plain["ckpt"] and not plain["server"]:
        raise CommandError(
            "ckpt: required, not set (pass ckpt=... a checkpoint, an export or a pretrained "
            "model's name, or server=HOST:PORT model_name=NAME for a served export)"
        )
    keep_alive = plain.get("keep_alive") or 0
    if not isinstance(keep_alive, (int, float)) or keep_alive < 0:
        raise CommandError(
            f"keep_alive: seconds to keep the model loaded (0: off), got {keep_alive!r}"
        )
    # A warm worker holds a run's model between launches (an export loads in this process).
    if keep_alive > 0 and not plain["server"] and export_version(plain["ckpt"]) is None:
        from tfllm.commands.resident import open_resident_session

        check_settings(plain)  # here, before a worker spends seconds loading the model
        session = open_resident_session(plain)
    else:
        session = open_session(plain)
    try:
        converse(plain, session)
    finally:
        if hasattr(session, "close"):
            session.close()


def converse(plain: dict[str, Any], session: Any) -> None:
    """Read messages from stdin and print the replies until /exit or the end of input."""
    from tfllm.serving.client import ServingClientError
    from tfllm.serving.in_process import ExportLoadError

    safety = safety_filter(plain.get("safety"))
    interactive = sys.stdin.isatty()
    if interactive:
        partner = plain["ckpt"] or f"{plain['model_name']} on {plain['server']}"
        print("chatting with", partner, "- /reset starts over, /exit (or Ctrl-D) quits")

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

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
        show("assistant> ")
        try:
            # With a safety filter the reply is checked whole before it is shown.
            reply = session.reply(message, on_text=show if safety is None else None)
            if safety is not None:
                verdict = safety.verdicts([reply])[0]
                if verdict.flagged:
                    print(f"(safety filter: {', '.join(verdict.reasons)})", file=sys.stderr)
                show(verdict.text)
            if session.finish_reason == "length":
                limit = session.config.max_new_tokens
                show(" [...]" if interactive else "")
                print(
                    f"\n(the reply was cut at max_new_tokens={limit} or the model's context)",
                    file=sys.stderr,
                )
        except ExportLoadError as e:  # loading in the background: nothing can answer
            print()
            raise CommandError(str(e)) from None
        except (ValueError, ServingClientError) as e:  # report it and keep chatting
            print(f"\ntfllm: error: {e}", file=sys.stderr)
        show("\n")
        for number, passage in enumerate(session.sources, 1):  # with kb=: what it was given
            mark = " (cited)" if number in session.cited else ""
            print(f"  [{number}] {passage.id}{mark}: {passage.text[:70]}", flush=True)


def main(argv: Sequence[str]) -> None:
    run_hydra("chat", "chat", chat_job, argv)
