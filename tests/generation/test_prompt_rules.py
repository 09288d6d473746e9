"""One set of prompt rules (tfllm.generation.prompts) for every generation path: the
generator, chat (streamed), beam search and the exported `generate` signatures treat empty,
over-long and stop-string prompts and lengths that do not fit alike, and their greedy answers
and finish reasons agree."""

import pytest
import tensorflow as tf

from tfllm.config import compose
from tfllm.export.exporter import export_model
from tfllm.export.serving_module import ExportSettings
from tfllm.generation import prompts
from tfllm.generation.beam import beam_generate
from tfllm.generation.chat import ChatSession
from tfllm.generation.decoder import GenerationConfig, Generator
from tfllm.runs import load_run
from tfllm.training.trainer import Trainer

CONTEXT = 32
NEW = 8
TEXT = (
    "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
    "BERNARDO:\nLong live the king!\n\nFRANCISCO:\nBernardo?\n\nBERNARDO:\nHe.\n\n"
) * 20
LONG = "FRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n" * 3  # > CONTEXT


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt_rules")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    cfg = compose(
        "config",
        [
            "debug=fast",
            "run_dir=unused",
            f"data.path={root / 'corpus.txt'}",
            f"model.max_sequence_length={CONTEXT}",
            "data.sequence_length=32",
            "trainer.max_steps=40",
            "schedule.peak_learning_rate=1e-2",
        ],
    )
    cfg.pop("run_dir")
    Trainer(cfg, str(root / "run")).fit()
    model, tokenizer, run_cfg = load_run(str(root / "run"))
    return model, tokenizer, run_cfg, root


@pytest.fixture(scope="module")
def paths(lm):
    """One generator and one chat session for the module (each traces its graphs once)."""
    model, tokenizer, _, _ = lm
    chat = ChatSession(model, tokenizer, "{{ messages[-1]['content'] }}")
    return Generator(model, tokenizer), chat


def generator_answer(paths, prompt, stop=()):
    config = GenerationConfig(max_new_tokens=NEW, temperature=0.0, stop=tuple(stop))
    return paths[0].generate([prompt], config)[0][0]


def beam_answer(lm, prompt, stop=()):
    model, tokenizer, _, _ = lm
    return beam_generate(model, tokenizer, [prompt], num_beams=1, max_new_tokens=NEW, stop=stop)[0][
        0
    ]


def chat_answer(paths, message, stop=()):
    session = paths[1]
    session.reset()
    session.config = GenerationConfig(max_new_tokens=NEW, temperature=0.0, stop=tuple(stop))
    shown = []
    reply = session.reply(message, on_text=shown.append)
    assert "".join(shown) == reply  # the stream never shows what the reply does not hold
    return reply


@pytest.fixture(scope="module")
def exported(lm):
    """`exported(stop)`: the `serving_default` and `generate` signatures of an export with
    those stop strings, reloaded (one export per stop list)."""
    model, tokenizer, run_cfg, root = lm
    loaded = {}

    def load(stop=()):
        if tuple(stop) not in loaded:
            settings = ExportSettings(max_new_tokens=NEW, max_new_tokens_limit=64, stop=tuple(stop))
            name = f"lm{len(loaded)}"
            result = export_model(
                model, tokenizer, run_cfg, str(root / "exports"), name, 1, settings, validate=False
            )
            loaded[tuple(stop)] = tf.saved_model.load(result.path).signatures
        return loaded[tuple(stop)]

    return load


def served(signatures, prompt):
    out = signatures["serving_default"](prompts=tf.constant([prompt]))
    return out["completions"].numpy()[0].decode("utf-8")


def streamed(signatures, prompt):
    """`serving_default`'s completion of `prompt`, streamed in pieces through the streaming
    signatures: no piece shows text that a stop string later cuts."""
    from tfllm.serving.openai_stream import IncrementalCompletions

    def run(signature, inputs):
        out = signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in out.items()}

    shown = ""
    for _, piece, _ in IncrementalCompletions(run, [prompt], NEW, 0.0, 1.0, 0):
        shown += piece
    return shown


def assert_held_back(lm, signatures, text, stops):
    """`completion_text` on every prefix of `text`: cut at the stops, and `held` the characters
    at its end that begin a stop string (what a streaming client must not show yet)."""
    tokenizer = lm[1]
    rows = [tokenizer.encode_one(text[:j]) for j in range(1, len(text) + 1)]
    width = max(len(r) for r in rows)
    out = signatures["completion_text"](
        token_ids=tf.constant([r + [0] * (width - len(r)) for r in rows], tf.int32),
        lengths=tf.constant([len(r) for r in rows], tf.int32),
    )
    answers = zip(out["completions"].numpy(), out["held"].numpy(), strict=True)
    for j, (got, held) in enumerate(answers, 1):
        cut = prompts.cut_at_stops(text[:j], stops)
        begins = [k for s in stops for k in range(1, len(s)) if cut.endswith(s[:k])]
        assert (got.decode(), int(held)) == (cut, max(begins, default=0)), text[:j]


def served_generate(signatures, prompt, max_new_tokens):
    """`(completion, finish reason, new tokens)` of a greedy `generate` request."""
    out = signatures["generate"](
        prompts=tf.constant([prompt]),
        max_new_tokens=tf.constant(max_new_tokens, tf.int32),
        temperature=tf.constant(0.0),
        top_k=tf.constant(0),
        top_p=tf.constant(1.0),
        seed=tf.constant(0),
    )
    return (
        out["completions"].numpy()[0].decode("utf-8"),
        out["finish_reasons"].numpy()[0].decode("utf-8"),
        int(out["lengths"].numpy()[0]),
    )


def test_an_empty_prompt_starts_from_eos_everywhere(lm, paths, exported):
    _, tokenizer, _, _ = lm
    assert prompts.encode_prompt(tokenizer, "", CONTEXT) == [tokenizer.eos_id]
    expected = generator_answer(paths, "")
    assert beam_answer(lm, "") == expected
    assert served(exported(), "") == expected


def test_an_over_long_prompt_keeps_its_last_tokens_everywhere(lm, paths, exported):
    _, tokenizer, _, _ = lm
    ids = prompts.encode_prompt(tokenizer, LONG, CONTEXT)
    assert len(tokenizer.encode_one(LONG)) > CONTEXT
    assert ids == tokenizer.encode_one(LONG)[-(CONTEXT - 1) :]
    expected = generator_answer(paths, LONG)
    assert len(expected) == 1  # the kept tail leaves room for one token
    # The same as generating from the kept tail alone.
    assert expected == generator_answer(paths, tokenizer.decode(ids))
    assert beam_answer(lm, LONG) == expected
    assert chat_answer(paths, LONG) == expected
    assert served(exported(), LONG) == expected


def test_stop_strings_end_the_text_before_them_everywhere(lm, paths, exported):
    prompt = "BERNARDO:\n"
    free = generator_answer(paths, prompt)
    assert len(free) >= 4, free
    single, double = free[2], free[1:3]  # one-token and two-token stops found in the text
    free_beam = beam_answer(lm, prompt)
    assert free_beam == free  # one beam is greedy decoding
    for stop in ([single], [double], [double, single]):
        expected = prompts.cut_at_stops(free, stop)
        assert len(expected) < len(free)
        assert generator_answer(paths, prompt, stop) == expected, stop
        assert chat_answer(paths, prompt, stop) == expected, stop
        if len(stop) == 2:  # one export holds both kinds of stop (each export takes ~20 s)
            assert served(exported(stop), prompt) == expected, stop
            assert streamed(exported(stop), prompt) == expected, stop
            assert_held_back(lm, exported(stop), free, stop)
        # Beam search finishes a hypothesis at a one-token stop, which can change which one
        # wins; its text still ends before every stop string.
        beam = beam_answer(lm, prompt, stop)
        assert not any(s in beam for s in stop), (stop, beam)
    assert beam_answer(lm, prompt, [double]) == prompts.cut_at_stops(free_beam, [double])


def test_a_length_that_does_not_fit_gets_what_fits_everywhere(lm, paths, exported):
    model, tokenizer, _, _ = lm
    prompt = "BERNARDO:\n"
    fits = CONTEXT - len(prompts.encode_prompt(tokenizer, prompt, CONTEXT))
    config = GenerationConfig(max_new_tokens=4 * CONTEXT, temperature=0.0, stop_at_eos=False)
    (answer,) = paths[0].complete([prompt], config)[0]
    assert (len(answer.token_ids), answer.finish_reason) == (fits, "length")
    # The same tokens as asking for exactly what fits, which is also a "length" finish.
    (exact,) = paths[0].complete([prompt], GenerationConfig(max_new_tokens=fits))[0]
    assert (exact.text, exact.finish_reason) == (answer.text, "length")
    (shorter,) = paths[0].complete([prompt], GenerationConfig(max_new_tokens=fits - 3))[0]
    assert (shorter.text, shorter.finish_reason) == (answer.text[: fits - 3], "length")
    beam = beam_generate(model, tokenizer, [prompt], num_beams=1, max_new_tokens=4 * CONTEXT)
    assert beam[0][0] == answer.text
    session = paths[1]
    session.reset()
    session.config = GenerationConfig(max_new_tokens=4 * CONTEXT, temperature=0.0)
    assert session.reply(prompt) == answer.text
    assert session.finish_reason == "length"
    assert served_generate(exported(), prompt, 2 * CONTEXT) == (answer.text, "length", fits)
    # A stop string ends a row early, with the reason "stop", in Python and in the export.
    stop = answer.text[3:5]
    (stopped,) = paths[0].complete([prompt], GenerationConfig(max_new_tokens=fits, stop=(stop,)))[0]
    assert (
        stopped.finish_reason == "stop" and stopped.text == answer.text[: answer.text.index(stop)]
    )
    text, reason, _ = served_generate(exported((stop,)), prompt, fits)
    assert (text, reason) == (stopped.text, "stop")
    # max_new_tokens=0 asks for the export's default; past its limit is INVALID_ARGUMENT.
    assert served_generate(exported(), prompt, 0)[0] == served(exported(), prompt)
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"max_new_tokens must be in \[0, 64\]"
    ):
        served_generate(exported(), prompt, 65)


def test_an_export_with_default_settings_fits_the_context_and_replays_its_warmup(lm, tmp_path):
    """An export left at its defaults (the README's `tfllm export ckpt=...`) answers the
    prompts users send, validation calls `serving_default` as a client does and replays the
    warmup records, and a warmup record that fails stops validation."""
    import contextlib

    from tfllm import progress
    from tfllm.export.exporter import WARMUP_FILE, write_warmup
    from tfllm.export.validate import ExportValidationError, run_in_fresh_process

    model, tokenizer, run_cfg, _ = lm
    reported = []

    @contextlib.contextmanager
    def record(what, total, unit):
        reported.append([what, total, 0])
        yield lambda n=1: reported[-1].__setitem__(2, reported[-1][2] + n)

    progress.set_reporter(record)
    try:
        result = export_model(model, tokenizer, run_cfg, str(tmp_path), "lm", 1, ExportSettings())
    finally:
        progress.set_reporter(None)
    assert reported == [["export lm/1", 4, 4]]  # the export reports its steps as they end
    assert f"serving_default ({CONTEXT // 2} tokens)" in result.validation["compared"]
    # serving_default twice, then each of the other eight signatures once
    assert result.validation["warmup_records"] == 2 + 8
    signatures = tf.saved_model.load(result.path).signatures
    out = signatures["serving_default"](prompts=tf.constant(["ROMEO:", LONG]))
    config = GenerationConfig(max_new_tokens=CONTEXT // 2)
    expected = Generator(model, tokenizer).complete(["ROMEO:", LONG], config)
    assert [c.decode() for c in out["completions"].numpy()] == [e[0].text for e in expected]
    assert [r.decode() for r in out["finish_reasons"].numpy()] == [
        e[0].finish_reason for e in expected
    ]
    assert out["tokens"].shape[1] == CONTEXT // 2
    # A warmup record TF Serving would fail to replay (an empty batch) fails validation's
    # fresh process (validate_export's first step), before any request runs.
    bad = [("count_tokens", {"prompts": (["Hello"], "string")})]
    bad += [("serving_default", {"prompts": ([], "string")})]
    write_warmup(f"{result.path}/assets.extra/{WARMUP_FILE}", "lm", bad)
    with pytest.raises(ExportValidationError, match=r"warmup record 1 \(serving_default\) fails"):
        run_in_fresh_process(result.path, {"count_tokens": {"prompts": (["Hello"], "string")}})


def test_any_shape_traces_the_loop_once_and_answers_as_the_default_generator(lm):
    """`Generator(any_shape=True)` (an export's validation) traces one loop for every batch
    and length; the default traces again for shapes it has not seen. Both answer alike."""
    model, tokenizer, _, _ = lm
    once = Generator(model, tokenizer, any_shape=True)
    by_shape = Generator(model, tokenizer)
    config = GenerationConfig(max_new_tokens=4, temperature=0.0)
    for batch in (["ROMEO:"], ["JULIET: O"], ["ROMEO:", "JULIET: O"], ["A", "BB", "CCC"]):
        assert once.generate(batch, config) == by_shape.generate(batch, config)
    assert once._fn.experimental_get_tracing_count() == 1
    assert by_shape._fn.experimental_get_tracing_count() > 1


def test_the_decode_graph_is_the_loop_generate_ids_runs(paths):
    generator, _ = paths
    config = GenerationConfig(max_new_tokens=5, temperature=0.0)
    concrete = generator.decode_graph([[3, 4, 5], [6]], config)
    ops = {op.type for op in concrete.graph.get_operations()}
    assert ops & {"While", "StatelessWhile"}  # one graph with the decode loop inside
    # (its shapes may be generalized to (None, None) once other buffers were traced)
    ids, lengths = concrete.structured_outputs
    assert (ids.dtype, ids.shape.rank, lengths.shape.rank) == (tf.int32, 2, 1)
    assert concrete.structured_input_signature[0][0].shape.is_compatible_with((2, 8))
    buffer, prompt_lengths, out = generator.generate_ids([[3, 4, 5], [6]], config)
    assert buffer.shape == (2, 8) and prompt_lengths.tolist() == [3, 1] and out.tolist() == [8, 6]
