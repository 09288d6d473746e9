"""One set of prompt rules (tfllm.generation.prompts) for every generation path: the
generator, chat (streamed), beam search and the exported `generate` signatures treat empty,
over-long and stop-string prompts alike, and their greedy answers agree."""

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
LONG = "FRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n" * 3  # > CONTEXT - NEW


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


def test_an_empty_prompt_starts_from_eos_everywhere(lm, paths, exported):
    _, tokenizer, _, _ = lm
    assert prompts.encode_prompt(tokenizer, "", CONTEXT, NEW) == [tokenizer.eos_id]
    expected = generator_answer(paths, "")
    assert beam_answer(lm, "") == expected
    assert served(exported(), "") == expected


def test_an_over_long_prompt_keeps_its_last_tokens_everywhere(lm, paths, exported):
    _, tokenizer, _, _ = lm
    ids = prompts.encode_prompt(tokenizer, LONG, CONTEXT, NEW)
    assert len(tokenizer.encode_one(LONG)) > CONTEXT - NEW
    assert ids == tokenizer.encode_one(LONG)[-(CONTEXT - NEW) :]
    expected = generator_answer(paths, LONG)
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
        # Beam search finishes a hypothesis at a one-token stop, which can change which one
        # wins; its text still ends before every stop string.
        beam = beam_answer(lm, prompt, stop)
        assert not any(s in beam for s in stop), (stop, beam)
    assert beam_answer(lm, prompt, [double]) == prompts.cut_at_stops(free_beam, [double])


def test_no_room_for_a_prompt_is_refused_everywhere(lm, paths, exported):
    model, tokenizer, _, _ = lm
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        prompts.encode_prompt(tokenizer, "a", CONTEXT, CONTEXT)
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        beam_generate(model, tokenizer, ["a"], num_beams=1, max_new_tokens=CONTEXT)
    config = GenerationConfig(max_new_tokens=CONTEXT, temperature=0.0)
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        ChatSession(model, tokenizer, "{{ messages[-1]['content'] }}", config=config).reply("a")
    fn = exported()["generate"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="leaves no room for a prompt"):
        fn(
            prompts=tf.constant(["a"]),
            max_new_tokens=tf.constant(CONTEXT, tf.int32),
            temperature=tf.constant(0.0),
            top_k=tf.constant(0),
            top_p=tf.constant(1.0),
            seed=tf.constant(0),
        )
