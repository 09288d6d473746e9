"""Multi-turn chat: a model's own chat template, history that fits the context, streaming."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from tfllm.generation.decoder import GenerationConfig
from tfllm.generation.streaming import TokenStreamer

log = logging.getLogger(__name__)


def render_template(
    template: str,
    messages: list[dict[str, str]],
    tokenizer=None,
    add_generation_prompt: bool = True,
) -> str:
    """Render a Hugging Face-style Jinja chat template (with a generation prompt by default).

    Runs in Jinja's immutable sandbox (templates come with downloaded checkpoints), with the
    variables and helpers such templates expect: `messages`, `add_generation_prompt`,
    `bos_token`, `eos_token` and `raise_exception`.
    """
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    specials = dict(getattr(tokenizer, "special_tokens", {}) or {})
    try:
        return env.from_string(template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=specials.get("bos", ""),
            eos_token=specials.get("eos", ""),
        )
    except TemplateError as e:
        raise ValueError(f"chat template: {e}") from None


class ChatSession:
    """A conversation with a causal LM, rendered with the checkpoint's chat template.

    History is kept as messages; before each reply the oldest turns (never the system prompt
    or the newest user message) are dropped until the prompt and `max_new_tokens` fit the
    model's context. Replies stream token by token through `on_text`.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer.
        template: a Jinja chat template (`chat.template` of a converted checkpoint).
        system_prompt: the system message, or None to let the template choose its default.
        config: sampling settings for every reply.
        jit_compile: XLA-compile the decode step.
        remote: a `tfllm.serving.Client` of a server that serves this model's export: replies
            come from its `generate` signature (whole, not streamed) and `model` may be None.
        context: the model's context length (needed only when `model` is None).

    Example:

    >>> chat = ChatSession(model, tokenizer, cfg["chat"]["template"])  # doctest: +SKIP
    >>> chat.reply("What is the capital of France?")  # doctest: +SKIP
    'The capital of France is Paris.'
    """

    def __init__(
        self,
        model,
        tokenizer,
        template: str,
        system_prompt: str | None = None,
        config: GenerationConfig | None = None,
        jit_compile: bool = False,
        remote=None,
        context: int | None = None,
    ):
        if not template:
            raise ValueError("this checkpoint has no chat template: set template=")
        if model is None and (remote is None or context is None):
            raise ValueError("without a local model, pass remote= and context=")
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.system_prompt = system_prompt
        self.config = config or GenerationConfig(max_new_tokens=256)
        self.config.validate()
        self.remote = remote
        self.context = int(context or model.max_sequence_length)
        self.streamer = TokenStreamer(model, jit_compile=jit_compile) if model is not None else None
        self.history: list[dict[str, str]] = []
        self.turns = 0

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.history = []

    def _messages(self, history: list[dict[str, str]]) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + history

    def prompt_ids(self) -> list[int]:
        """The rendered, tokenized conversation, cut to leave room for the reply."""
        budget = self.context - self.config.max_new_tokens
        history = list(self.history)
        while True:
            text = render_template(self.template, self._messages(history), self.tokenizer)
            ids = self.tokenizer.encode_one(text)
            if len(ids) <= budget or len(history) <= 1:
                break
            history = history[2:] if len(history) > 2 else history[-1:]  # oldest exchange
        if len(history) < len(self.history):
            log.info("dropped %d old messages to fit the context", len(self.history) - len(history))
        if len(ids) > budget:
            log.warning("the message alone exceeds the context: keeping its last %d tokens", budget)
            ids = ids[-budget:]
        return ids

    def stop_ids(self) -> list[int]:
        stops = [self.tokenizer.eos_id] if self.tokenizer.eos_id is not None else []
        for s in self.config.stop:
            ids = self.tokenizer.encode_one(s)
            if len(ids) == 1:
                stops.append(ids[0])
        return stops

    def reply(self, message: str, on_text: Callable[[str], None] | None = None) -> str:
        """Add a user message, generate the assistant's answer (streamed), and return it."""
        if not message.strip():
            raise ValueError("the message is empty")
        self.history.append({"role": "user", "content": message})
        ids = self.prompt_ids()
        config = replace(self.config, seed=self.config.seed + 7919 * self.turns)
        self.turns += 1
        if self.remote is not None:
            text = self._remote_reply(ids, config)
            if on_text is not None:
                on_text(text)
            self.history.append({"role": "assistant", "content": text})
            return text
        generated: list[int] = []
        shown = ""
        for token in self.streamer.stream(ids, config, self.stop_ids()):
            generated.append(token)
            text = self.tokenizer.decode(generated)
            if text.endswith("\ufffd"):
                continue  # a multi-byte character is still incomplete
            if on_text is not None and len(text) > len(shown):
                on_text(text[len(shown) :])
            shown = text
        text = self.tokenizer.decode(generated)
        if on_text is not None and len(text) > len(shown):
            on_text(text[len(shown) :])
        self.history.append({"role": "assistant", "content": text})
        return text

    def _remote_reply(self, ids: list[int], config: GenerationConfig) -> str:
        # The server tokenizes in its graph: send the (possibly cut) prompt as text, with its
        # special tokens spelled out so they tokenize back to themselves.
        prompt = self.tokenizer.decode(ids, skip_special_tokens=False)
        text = self.remote.generate(
            [prompt],
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            seed=config.seed,
        )[0]
        for stop in config.stop:
            text = text.split(stop)[0]
        return text
