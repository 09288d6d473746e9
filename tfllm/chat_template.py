"""Rendering a conversation with a checkpoint's chat template: what turns messages into the
text a tokenizer encodes, for chat data, `tfllm chat` and the server's OpenAI-compatible chat
endpoint alike (one renderer, so they cannot drift). Imports nothing of tfllm's: the sealed
serving room uses it."""

from __future__ import annotations

import functools


def render_template(
    template: str,
    messages: list[dict[str, str]],
    tokenizer=None,
    add_generation_prompt: bool = True,
) -> str:
    """Render a Hugging Face-style Jinja chat template (with a generation prompt by default).

    Runs in Jinja's immutable sandbox (templates come with downloaded checkpoints), with the
    variables and helpers such templates expect: `messages`, `add_generation_prompt`,
    `bos_token`, `eos_token` and `raise_exception`. `tokenizer` gives those two: a tfllm
    tokenizer, or a dict of special tokens by role.
    """
    from jinja2 import TemplateError

    # A tokenizer, or its special tokens by role (a client of a served model has only those).
    found = tokenizer if isinstance(tokenizer, dict) else getattr(tokenizer, "special_tokens", {})
    specials = dict(found or {})
    try:
        return _compiled(template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=specials.get("bos", ""),
            eos_token=specials.get("eos", ""),
        )
    except TemplateError as e:
        raise ValueError(f"chat template: {e}") from None


@functools.lru_cache(maxsize=16)
def _compiled(template: str):
    """The template compiled once in the sandbox (compiling costs milliseconds; chat data
    renders each conversation several times).

    Raises:
        jinja2.TemplateError: the template does not parse.
    """
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)
