"""Multi-turn chat: a model's own chat template, history that fits the context, streaming."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from tfllm.components.tokenizers.chat_template import render_template
from tfllm.generation import prompts
from tfllm.generation.settings import GenerationConfig
from tfllm.retrieval.grounding import GROUNDING_TEMPLATE, citations, grounded_question

__all__ = ["ChatSession", "render_template"]  # render_template lives with the tokenizers

log = logging.getLogger(__name__)


class ChatSession:
    """A conversation with a causal LM, rendered with the checkpoint's chat template.

    History is kept as messages; before each reply the oldest turns (never the system prompt
    or the newest user message) are dropped until the conversation leaves room for the reply
    (`max_new_tokens`, at most half the context: `tfllm.generation.prompts.reply_room`). The
    reply then follows the rules of every generation path: it writes what fits, and
    `finish_reason` says whether it ended at a stop (`stop`) or was cut (`length`). Replies
    stream token by token through `on_text`.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer.
        template: a Jinja chat template (`chat.template` of a converted checkpoint).
        system_prompt: the system message, or None to let the template choose its default.
        config: sampling settings for every reply.
        jit_compile: XLA-compile the decode step.
        remote: a `tfllm.serving.Client` of a server that serves this model's export: replies
            come from its `generate` signature (whole, not streamed), the conversation is
            measured with its `count_tokens`, and `model` and `tokenizer` may be None, so a
            remote chat runs without TensorFlow.
        context: the model's context length (needed only when `model` is None).
        special_tokens: the tokenizer's special tokens by role (`bos`, `eos`) for the template,
            when `tokenizer` is None.
        retriever: grounding: `question -> passages` (e.g. `lambda q: [h.passage for h in
            kb.search(q, 3)]`). Each user message is then sent as `grounding_template` filled
            with the retrieved passages, numbered, and the message; the history keeps the
            message alone. After a reply, `sources` holds the passages it was given,
            `cited` the numbers of those it cites (`[n]`), and `sent` the rendered
            conversation the model read.
        grounding_template: with `{passages}` and `{question}`
            (`tfllm.retrieval.grounding.GROUNDING_TEMPLATE` by default).
        streamer: a `TokenStreamer` of `model` to share (its decode step is traced once for
            every session that shares it), else the session makes its own.

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
        special_tokens: dict[str, str] | None = None,
        retriever=None,
        grounding_template: str = GROUNDING_TEMPLATE,
        streamer=None,
    ):
        if not template:
            raise ValueError("this checkpoint has no chat template: set template=")
        if model is None and (remote is None or context is None):
            raise ValueError("without a local model, pass remote= and context=")
        if tokenizer is None and remote is None:
            raise ValueError("a local model needs its tokenizer")
        self.model = model
        self.tokenizer = tokenizer
        self.special_tokens = dict(
            (special_tokens or {}) if tokenizer is None else tokenizer.special_tokens
        )
        self.template = template
        self.system_prompt = system_prompt
        self.config = config or GenerationConfig(max_new_tokens=256)
        self.config.validate()
        self.remote = remote
        self.context = int(context or model.max_sequence_length)
        self.streamer = streamer
        if model is not None and streamer is None:
            from tfllm.generation.streaming import TokenStreamer

            self.streamer = TokenStreamer(model, jit_compile=jit_compile)
        self.history: list[dict[str, str]] = []
        self.turns = 0
        self.finish_reason: str | None = None  # of the last reply: "stop" or "length"
        self.retriever = retriever
        self.grounding_template = grounding_template
        self.sources: list = []  # passages the last reply was given (with a retriever)
        self.cited: list[int] = []  # the numbers (1-based) of those it cites
        self._grounded: tuple[dict[str, str], str] | None = None  # (message, what is sent)
        self.sent = ""  # the rendered conversation the last reply was generated from

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.history = []

    def _messages(self, history: list[dict[str, str]]) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        if self._grounded is not None and history and history[-1] is self._grounded[0]:
            # The newest question is sent with its passages; the history keeps it alone.
            history = history[:-1] + [{"role": "user", "content": self._grounded[1]}]
        return system + history

    def _render(self, history: list[dict[str, str]]) -> str:
        return render_template(self.template, self._messages(history), self.special_tokens)

    def _candidates(self) -> list[list[dict[str, str]]]:
        """The history, then with each oldest exchange dropped in turn (never the newest user
        message): what is tried, in order, until the conversation fits."""
        history, out = list(self.history), [list(self.history)]
        while len(history) > 1:
            history = history[2:] if len(history) > 2 else history[-1:]
            out.append(history)
        return out

    def _fit(self, lengths: Callable[[list[str]], Iterable[int]]) -> tuple[int, list[str]]:
        """The rendered candidates and which one to send: the first whose length (`lengths`
        of rendered texts) leaves room for the reply (`tfllm.generation.prompts.reply_room`),
        else the shortest (its start is cut as every prompt's is)."""
        budget = self.context - prompts.reply_room(self.context, self.config.max_new_tokens)
        candidates = self._candidates()
        texts = [self._render(h) for h in candidates]
        chosen = len(candidates) - 1
        for i, n in enumerate(lengths(texts)):
            if n <= budget:
                chosen = i
                break
        if chosen:
            dropped = len(self.history) - len(candidates[chosen])
            log.info("dropped %d old messages to fit the context", dropped)
        self.sent = texts[chosen]
        return chosen, texts

    def prompt_ids(self) -> list[int]:
        """The rendered, tokenized conversation, cut to leave room for the reply: whole old
        exchanges are dropped first, then the rest is cut as every prompt is
        (`tfllm.generation.prompts`; the template writes its own bos)."""
        encoded: list[list[int]] = []  # each candidate tried, tokenized once

        def lengths(texts: list[str]) -> Iterator[int]:  # lazily: usually the first one fits
            for text in texts:
                encoded.append(prompts.prompt_ids(self.tokenizer, text, add_bos=False))
                yield len(encoded[-1])

        chosen, _ = self._fit(lengths)  # the chosen one was tried, so it is encoded
        return prompts.crop_prompt(encoded[chosen], self.context)

    def prompt_text(self) -> str:
        """The conversation a served model is sent, fitted the same way with the lengths its
        `count_tokens` signature reports (the server cuts the start as every prompt's)."""
        chosen, texts = self._fit(self.remote.count_tokens)
        return texts[chosen]

    def stops(self) -> tuple[list[int], list[str]]:
        """The stop ids that end a reply in the decode loop, and the strings that end its text."""
        return prompts.stop_tokens(self.tokenizer, self.config.stop, self.config.stop_at_eos)

    def reply(self, message: str, on_text: Callable[[str], None] | None = None) -> str:
        """Add a user message, generate the assistant's answer (streamed), and return it."""
        if not message.strip():
            raise ValueError("the message is empty")
        self.history.append({"role": "user", "content": message})
        self._grounded, self.sources, self.cited = None, [], []
        if self.retriever is not None:
            self.sources = list(self.retriever(message))
            sent = grounded_question(message, self.sources, self.grounding_template)
            self._grounded = (self.history[-1], sent)
        config = replace(self.config, seed=self.config.seed + 7919 * self.turns)
        self.turns += 1
        if self.remote is not None:
            text, self.finish_reason = self._remote_reply(self.prompt_text(), config, on_text)
            self.history.append({"role": "assistant", "content": text})
            self.cited = citations(text, len(self.sources))
            return text
        ids = self.prompt_ids()
        stop_ids, stop_strings = self.stops()
        generated: list[int] = []
        shown = ""
        # Decoded as the generator decodes (special tokens dropped, the stop token kept until
        # the text is cut at the stop strings), so a reply equals `Generator.generate`'s.
        for token in self.streamer.stream(ids, config, stop_ids, yield_stop=True):
            generated.append(token)
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue  # a multi-byte character is still incomplete
            if prompts.cut_at_stops(text, stop_strings) != text:
                break  # a stop string is complete: the reply ends before it
            # Hold back what could still turn out to begin a stop string.
            visible = text[: len(text) - prompts.held_back(text, stop_strings)]
            if on_text is not None and len(visible) > len(shown):
                on_text(visible[len(shown) :])
            shown = visible
        full = self.tokenizer.decode(generated, skip_special_tokens=True)
        text = prompts.cut_at_stops(full, stop_strings)
        budget = prompts.new_token_budget(self.context, len(ids), config.max_new_tokens)
        self.finish_reason = prompts.finish_reason(generated, budget, stop_ids, text != full)
        if on_text is not None and len(text) > len(shown):
            on_text(text[len(shown) :])
        self.history.append({"role": "assistant", "content": text})
        self.cited = citations(text, len(self.sources))
        return text

    def _remote_reply(
        self, prompt: str, config: GenerationConfig, on_text: Callable[[str], None] | None
    ) -> tuple[str, str]:
        # The server tokenizes the rendered text in its graph (special tokens written in it
        # become their ids) and cuts its start as every prompt's; the reply streams in pieces.
        text, reason = "", prompts.FINISH_LENGTH
        for piece, finish in self.remote.stream(
            prompt,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            seed=config.seed,
            stop=config.stop,
        ):
            text += piece
            if piece and on_text is not None:
                on_text(piece)
            reason = finish or reason
        return text, reason
