"""`tfllm client model=NAME prompt="..."`: query a served model over gRPC or REST."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tfllm.commands.common import CommandError, run_hydra, texts_argument

CALLS = {  # what to call, by the signature an export has
    "generate": "generate",
    "classify": "classification",
    "regress": "regression",
    "fill_mask": "fill_mask",
    "tag": "tag",
    "answer": "answer",
    "embed": "embed",
}


def pick_call(client, plain: dict[str, Any]) -> str:
    """The call asked for; else `generate` (prompts alone) or `regress` (prompts and
    replies); else the one the model's signatures offer."""
    asked = plain.get("call")
    if asked is not None:
        if asked not in CALLS:
            raise CommandError(f"call: unknown call '{asked}'; calls are {', '.join(CALLS)}")
        return asked
    if plain.get("prompt") is not None or plain.get("prompts") is not None:
        replies = plain.get("reply") is not None or plain.get("replies") is not None
        return "regress" if replies else "generate"
    signatures = client.signatures()
    for call, signature in CALLS.items():
        if signature in signatures:
            return call
    raise CommandError(f"the model serves none of tfllm's calls: signatures {sorted(signatures)}")


def run_call(client, call: str, plain: dict[str, Any]) -> list[str]:
    """Lines to print for one call."""
    import json

    if call == "generate":
        prompts = texts_argument(plain, "prompt", "prompts")
        completions = client.generate(
            prompts,
            max_new_tokens=plain["max_new_tokens"],
            temperature=plain["temperature"],
            top_k=plain["top_k"],
            top_p=plain["top_p"],
            seed=plain["seed"],
        )
        echo = client.continues_prompts()  # an encoder-decoder's output stands alone
        return [(p if echo else "") + c for p, c in zip(prompts, completions, strict=True)]
    if call == "regress":
        prompts = texts_argument(plain, "prompt", "prompts")
        replies = texts_argument(plain, "reply", "replies")
        if len(replies) != len(prompts):
            raise CommandError(f"{len(replies)} replies for {len(prompts)} prompts")
        return [f"{s:.6g}" for s in client.regress(prompts, replies)]
    if call == "answer":
        questions = texts_argument(plain, "question", "questions")
        contexts = texts_argument(plain, "context", "contexts")
        if len(contexts) == 1 and len(questions) > 1:
            contexts = contexts * len(questions)  # several questions about one context
        if len(contexts) != len(questions):
            raise CommandError(f"{len(contexts)} contexts for {len(questions)} questions")
        return [json.dumps(a, ensure_ascii=False) for a in client.answer(questions, contexts)]
    texts = texts_argument(plain, "text", "texts")
    if call == "classify":
        pairs = plain.get("text_pairs")
        if pairs is not None and len(pairs) != len(texts):
            raise CommandError(f"{len(pairs)} text_pairs for {len(texts)} texts")
        lines = []
        for scores in client.classify(texts, pairs):
            best = max(scores, key=scores.get)
            lines.append(f"{best}\t{json.dumps(scores)}")
        return lines
    if call == "tag":
        return [json.dumps(tagged, ensure_ascii=False) for tagged in client.tag(texts)]
    if call == "fill_mask":
        return [
            json.dumps([[[w, round(p, 6)] for w, p in fill] for fill in fills], ensure_ascii=False)
            for fills in client.fill_mask(texts)
        ]
    return [json.dumps([round(float(x), 6) for x in row]) for row in client.embed(texts)]


def stream_call(client, plain: dict[str, Any]) -> None:
    """Print one prompt's completion as the server decodes it (`stream=true`)."""
    prompts = texts_argument(plain, "prompt", "prompts")
    if len(prompts) != 1:
        raise CommandError(f"stream=true takes one prompt, got {len(prompts)}")
    if client.continues_prompts():  # an encoder-decoder's output stands alone
        print(prompts[0], end="", flush=True)
    for piece, _ in client.stream(
        prompts[0],
        max_new_tokens=plain["max_new_tokens"] or 0,
        temperature=plain["temperature"] or 0.0,
        top_k=plain["top_k"] or 0,
        top_p=1.0 if plain["top_p"] is None else plain["top_p"],
        seed=plain["seed"] or 0,
    ):
        print(piece, end="", flush=True)
    print()


def client_job(plain: dict[str, Any]) -> None:
    from tfllm.serving.client import Client, ServingClientError

    try:
        client = Client(
            plain["host"],
            plain["port"],
            plain["model"],
            plain["transport"],
            plain["version"],
            plain["timeout"],
            token=plain.get("auth_token"),
            tls=bool(plain.get("tls")),
            tls_ca_file=plain.get("tls_ca_file"),
            tls_cert_file=plain.get("tls_cert_file"),
            tls_key_file=plain.get("tls_key_file"),
        )
        with client:
            call = pick_call(client, plain)
            if plain.get("stream"):
                if call != "generate":
                    raise CommandError(f"stream=true streams generate, not {call}")
                stream_call(client, plain)
                return
            lines = run_call(client, call, plain)
    except ServingClientError as e:
        hint = ""
        if e.code == "UNAVAILABLE":
            hint = (
                f" (no server answers at {client.host}:{client.port}: start one with "
                "`tfllm serve`, or pass host= and port=)"
            )
        raise CommandError(f"{e}{hint}") from None
    except ValueError as e:
        raise CommandError(str(e)) from None
    for line in lines:
        print(line)


def main(argv: Sequence[str]) -> None:
    # In its own folder: there `model=` is a plain key, not the `model` config group.
    run_hydra("client", "client", client_job, argv, subdir="_client")
