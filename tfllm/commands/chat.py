"""`tfllm chat ckpt=DIR`: a streamed conversation on the terminal (/reset, /exit), with a local
model or a served export (`server=host:port model_name=NAME`) and an optional safety filter."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import CommandError, run_hydra, settings, user_error
from tfllm.commands.generate import safety_filter


def open_session(plain: dict[str, Any]) -> Any:
    """The `ChatSession` the settings describe: a local model, or a served one."""
    from tfllm.generation.chat import ChatSession
    from tfllm.generation.settings import GenerationConfig

    config = settings(GenerationConfig, plain)
    remote, specials = None, None
    if plain["server"]:  # without TensorFlow: the server tokenizes, counts and generates
        from tfllm.runs import load_config_and_special_tokens
        from tfllm.serving.client import Client

        host, _, port = str(plain["server"]).rpartition(":")
        if not host or not port.isdigit() or not plain["model_name"]:
            raise CommandError("server= takes host:port, and model_name= names the served model")
        run_cfg, specials = load_config_and_special_tokens(plain["ckpt"])
        model = tokenizer = None
        remote = Client(host, int(port), plain["model_name"])
    else:
        from tfllm.runs import load_run

        model, tokenizer, run_cfg = load_run(plain["ckpt"])
    template = plain["template"] or (run_cfg.get("chat") or {}).get("template")
    if not template:
        raise CommandError(f"ckpt: {plain['ckpt']} has no chat template; pass template=")
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
            **grounding,
        )


def chat_job(plain: dict[str, Any]) -> None:
    from tfllm.serving.client import ServingClientError

    session = open_session(plain)
    safety = safety_filter(plain.get("safety"))
    interactive = sys.stdin.isatty()
    if interactive:
        print("chatting with", plain["ckpt"], "- /reset starts over, /exit (or Ctrl-D) quits")

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
        except (ValueError, ServingClientError) as e:  # report it and keep chatting
            print(f"\ntfllm: error: {e}", file=sys.stderr)
        show("\n")
        for number, passage in enumerate(session.sources, 1):  # with kb=: what it was given
            mark = " (cited)" if number in session.cited else ""
            print(f"  [{number}] {passage.id}{mark}: {passage.text[:70]}", flush=True)


def main(argv: Sequence[str]) -> None:
    run_hydra("chat", "chat", chat_job, argv)
