"""Trainer callbacks (registry kind `callback`): progress bar, TensorBoard, text samples."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from tfllm.registry import register

if TYPE_CHECKING:
    from tfllm.training.trainer import Trainer

log = logging.getLogger(__name__)


class TrainerCallback:
    """Hooks the trainer calls on the chief. Override what you need.

    `logs` holds floats: `loss`, `learning_rate`, `grad_norm`, `tokens_per_sec`, and after
    evaluation `val_loss`, `val_perplexity`.
    """

    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None: ...

    def on_eval_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Trainer, logs: dict[str, float]) -> None: ...


@register("callback", "progress")
class ProgressBar(TrainerCallback):
    """A Keras progress bar over optimizer steps on a terminal; one line per log otherwise.

    Args:
        interactive: bool or None. Draw a bar (True) or print lines (False); None decides by
            whether stderr is a terminal.
    """

    def __init__(self, interactive: bool | None = None):
        self.interactive = interactive
        self.bar: Any = None

    def on_train_begin(self, trainer):
        if self.interactive is None:
            self.interactive = sys.stderr.isatty()
        if self.interactive:
            self.bar = keras.utils.Progbar(
                trainer.max_steps,
                stateful_metrics=["loss", "lr", "tok/s", "val_loss"],
                unit_name="step",
            )
            self.bar.update(trainer.start_step)
        elif trainer.start_step:
            print(f"resuming at step {trainer.start_step}", file=sys.stderr, flush=True)

    def on_step_end(self, trainer, step, logs):
        values = [
            ("loss", logs["loss"]),
            ("lr", logs["learning_rate"]),
            ("tok/s", logs["tokens_per_sec"]),
        ]
        if self.bar is not None:
            self.bar.update(step, values=values)
        else:
            print(
                f"step {step}/{trainer.max_steps}  loss {logs['loss']:.4f}  "
                f"lr {logs['learning_rate']:.3g}  grad_norm {logs['grad_norm']:.3g}  "
                f"tok/s {logs['tokens_per_sec']:,.0f}",
                file=sys.stderr,
                flush=True,
            )

    def on_eval_end(self, trainer, step, logs):
        if self.bar is not None:
            self.bar.update(step, values=[("val_loss", logs["val_loss"])])
        else:
            extra = "  ".join(
                f"{k} {v:.4f}" for k, v in logs.items() if k != "val_loss" and k.startswith("val_")
            )
            print(
                f"step {step}/{trainer.max_steps}  val_loss {logs['val_loss']:.4f}  {extra}",
                file=sys.stderr,
                flush=True,
            )


@register("callback", "tensorboard")
class TensorBoard(TrainerCallback):
    """Scalars (loss, learning rate, gradient norm, tokens/s, val loss, perplexity) to
    `<run_dir>/tensorboard`."""

    def __init__(self, subdir: str = "tensorboard"):
        self.subdir = subdir
        self.writer: Any = None

    def on_train_begin(self, trainer):
        self.writer = tf.summary.create_file_writer(os.path.join(trainer.run_dir, self.subdir))

    def _write(self, step, logs, prefix=""):
        with self.writer.as_default(step=step):
            for key, value in logs.items():
                tf.summary.scalar(prefix + key, value)
        self.writer.flush()

    def on_step_end(self, trainer, step, logs):
        self._write(step, logs, "train/")

    def on_eval_end(self, trainer, step, logs):
        self._write(step, logs, "eval/")
        confusion = getattr(trainer, "last_confusion", None)
        if confusion is not None:
            image = confusion_image(confusion, getattr(trainer.model, "labels", None))
            if image is not None:
                with self.writer.as_default(step=step):
                    tf.summary.image("eval/confusion_matrix", image)
                self.writer.flush()

    def on_train_end(self, trainer, logs):
        self.writer.close()


def confusion_image(confusion, labels=None):
    """A confusion matrix drawn as an RGBA image `(1, H, W, 4)` uint8, or None without
    matplotlib (the `eval` extra)."""
    try:
        import matplotlib
    except ImportError:
        log.warning("matplotlib is not installed: no confusion-matrix image in TensorBoard")
        return None
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(confusion, dtype=np.float64)
    labels = list(labels) if labels is not None else [str(i) for i in range(len(m))]
    size = 1.2 + 0.6 * len(m)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    ax.imshow(m, cmap="Blues")
    for i in range(len(m)):
        for j in range(len(m)):
            color = "white" if m[i, j] > m.max() / 2 else "black"
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", color=color)
    ax.set_xticks(range(len(m)), labels)
    ax.set_yticks(range(len(m)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return tf.image.decode_png(buffer.getvalue(), channels=4)[None]


@register("callback", "text_samples")
class TextSamples(TrainerCallback):
    """Generates text from fixed prompts every `every` steps; logs it to TensorBoard.

    A causal LM continues each prompt; an encoder-decoder reads it as a source. With
    `validation_prompts=N` the prompts are the first N of the validation split instead, as
    templated for training (`data=prompts`: what PPO's policy answers).

    Args:
        every: int. Steps between samples (also at the end of training).
        prompts: list of str. Prompts to continue (or sources to transform).
        max_new_tokens: int. Length of each sample.
        temperature: float. Sampling temperature (0 is greedy).
        top_k: int. Top-k filter.
        validation_prompts: int. Sample from this many validation prompts (0: use `prompts`).
    """

    def __init__(
        self,
        every: int = 500,
        prompts: tuple[str, ...] = ("\n",),
        max_new_tokens: int = 64,
        temperature: float = 0.8,
        top_k: int = 40,
        subdir: str = "tensorboard",
        validation_prompts: int = 0,
    ):
        self.every = every
        self.prompts = list(prompts)
        self.validation_prompts = validation_prompts
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.subdir = subdir
        self.writer: Any = None
        self.samples: list[tuple[int, list[str]]] = []

    def on_train_begin(self, trainer):
        self.writer = tf.summary.create_file_writer(os.path.join(trainer.run_dir, self.subdir))
        if self.validation_prompts:
            val = trainer.tokens.val
            if not hasattr(val, "lengths"):
                raise ValueError("text_samples: validation_prompts needs data=prompts")
            rows = range(min(self.validation_prompts, len(val)))
            self.prompts = [
                trainer.tokenizer.decode(val.ids[i, : val.lengths[i]], skip_special_tokens=False)
                for i in rows
            ]

    def _sample(self, trainer, step):
        from tfllm.generation.decoder import GenerationConfig
        from tfllm.generation.seq2seq import make_generator

        limit = trainer.model.max_sequence_length - 1
        config = GenerationConfig(
            max_new_tokens=min(self.max_new_tokens, limit),
            temperature=self.temperature,
            top_k=self.top_k,
            seed=step,
        )
        gen = make_generator(trainer.model, trainer.tokenizer)
        texts = [c[0] for c in gen.generate(self.prompts, config)]
        self.samples.append((step, texts))
        with self.writer.as_default(step=step):
            for i, (prompt, text) in enumerate(zip(self.prompts, texts, strict=True)):
                tf.summary.text(f"samples/{i}", f"**{prompt!r}** → {text}")
        self.writer.flush()

    def on_step_end(self, trainer, step, logs):
        if self.every and step % self.every == 0:
            self._sample(trainer, step)

    def on_train_end(self, trainer, logs):
        if not self.samples or self.samples[-1][0] != trainer.step:
            self._sample(trainer, trainer.step)
        self.writer.close()
