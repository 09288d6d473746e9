"""The training loop: a custom step under tf.distribute, with checkpoints and resumption.

A custom loop rather than `Model.fit`: it runs unchanged under MultiWorkerMirroredStrategy
(where Keras 3 `fit` fails, tensorflow#72388), clips by the *global* gradient norm after the
cross-replica all-reduce (Keras clips per replica, before it), and makes the input a pure
function of the step so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import signal
import threading
import time
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfllm import registry
from tfllm.components.matrices import fused_matrices_of
from tfllm.compression.prune import prunable_weights, prune_model, sparsity_of
from tfllm.models.builder import build_model
from tfllm.models.variables import model_variables
from tfllm.registry import ConfigError
from tfllm.runs import (
    WORKERS_DIR,
    checkpoint_candidates,
    checkpoint_dir,
    latest_checkpoint,
    load_metrics,
    remove_stale_temporaries,
    repair_checkpoint_state,
    save_metrics,
    save_run_config,
    tokenizer_dir,
    worker_checkpoint_dir,
)
from tfllm.tasks.base import TaskModel
from tfllm.tasks.classifier import confusion_metrics
from tfllm.training.preparation import build_dataset, prepare_tokenizer
from tfllm.training.run_config import prepare_config
from tfllm.training.strategy import build_strategy, is_chief, num_workers

log = logging.getLogger(__name__)


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointWriteError(ConfigError):
    """A checkpoint could not be written (a full disk); reported as one error line, and the
    checkpoints before it are intact."""


# The logs of a finished run's metrics.json that are bookkeeping, not results.
BOOKKEEPING = ("step", "weights_sha256", "num_workers", "peak_rss_mb", "first_execution_seconds")


# Exit status of a run stopped by SIGTERM after saving its checkpoint (128 + SIGTERM, as a
# shell reports a process the signal ended): schedulers and `tfllm launch` restart it.
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


def classification_metrics(confusion: np.ndarray) -> dict[str, float]:
    """Validation accuracy and macro-F1 from a confusion matrix (rows: true, columns: predicted)."""
    accuracy, macro_f1 = confusion_metrics(confusion)
    return {"val_accuracy": accuracy, "val_macro_f1": macro_f1}


class Trainer:
    """Trains the task a resolved config describes, in `run_dir`.

    Args:
        cfg: the resolved (plain) training config.
        run_dir: where the config, tokenizer, checkpoints, TensorBoard logs and metrics go.
    """

    def __init__(self, cfg: dict[str, Any], run_dir: str):
        self.run_dir = os.path.abspath(run_dir)
        self.init_from = cfg.get("init_from") or None
        self.cfg = prepare_config(cfg)
        tr = self.cfg["trainer"]
        self.max_steps: int = tr["max_steps"]
        self.accum: int = tr["grad_accum_steps"]
        self.seed: int = int(self.cfg.get("seed", 0))
        self.step = 0
        self.start_step = 0
        self.last_statistics: dict[str, Any] = {}
        # Steps and seconds after the first execution (which includes tracing/compiling).
        self._timing = {"steps": 0, "seconds": 0.0, "first_seconds": 0.0}
        # The strategy comes before any other TensorFlow op (collective ops need it first).
        self._configure_runtime()
        self.dataset = build_dataset(self.cfg)
        self.tokenizer = prepare_tokenizer(self.cfg, self.dataset, self.run_dir)
        self.tokens = self.dataset.token_splits(self.tokenizer)
        with self.strategy.scope():
            self._build_model()
            self._build_pruning_masks()
            self._build_optimizer()
        self._build_checkpointing()
        self._build_callbacks()
        self._compile_steps()

    # ----- setup ------------------------------------------------------------------------------
    def _configure_runtime(self) -> None:
        """Seeds, op determinism, the precision policy and the distribution strategy."""
        tr = self.cfg["trainer"]
        keras.utils.set_random_seed(self.seed)
        if tr["deterministic"]:
            tf.config.experimental.enable_op_determinism()
        # Always set: a policy left by an earlier run in this process must not leak in.
        keras.mixed_precision.set_global_policy(tr["mixed_precision"] or "float32")
        self.strategy = build_strategy(tr["strategy"], tr["logical_cpus"])
        self.chief = is_chief(self.strategy)
        self.num_workers = num_workers(self.strategy)

    def _build_model(self) -> None:
        # Re-seed here so initial weights do not depend on what set-up consumed before.
        keras.utils.set_random_seed(self.seed)
        self.model = build_model(
            self.cfg,
            self.tokenizer.vocabulary_size,
            self.tokenizer.special_token_ids(),
            self.tokenizer.sentinel_ids(),
            self.tokenizer,
        )
        if not isinstance(self.model, TaskModel):
            raise ConfigError(
                f"task.name: task '{self.cfg['task']['name']}' builds a "
                f"{type(self.model).__name__}, which is not a tfllm.tasks.base.TaskModel "
                "(the trainer's contract: see docs/tasks.md)"
            )
        if self.init_from:
            self._init_backbone(self.init_from)
        self.model.on_initialized()
        if self.cfg.get("adapter"):
            trainable = sum(int(np.prod(w.shape)) for w in self.model.trainable_weights)
            total = sum(int(np.prod(w.shape)) for w in self.model.weights)
            log.info(
                "adapter %s: %s of %s weights train (%.2f%%)",
                self.cfg["adapter"]["name"],
                f"{trainable:,}",
                f"{total:,}",
                100.0 * trainable / max(total, 1),
            )

    def _build_pruning_masks(self) -> None:
        """Keep-masks on the gradients of the pruned weights (set in `fit`, once the weights
        are final); the step masks the weights after each update too, so zeros stay zero."""
        self.pruning = self.cfg.get("pruning") or None
        targets = prunable_weights(self.model, self.pruning["targets"]) if self.pruning else []
        self.prune_masks = {
            w.path: tf.Variable(tf.ones(w.shape, w.dtype), trainable=False, name="keep")
            for w in targets
        }

    def _build_optimizer(self) -> None:
        self.schedule = registry.build("schedule", self.cfg["schedule"], key="schedule")
        self.optimizer = registry.build(
            "optimizer",
            self.cfg["optimizer"],
            {
                "learning_rate": self.schedule,
                "variables": self.model.trainable_variables,
                "fused_matrices": fused_matrices_of(self.model),
            },
            key="optimizer",
        )
        if self.cfg["trainer"]["mixed_precision"] == "mixed_float16":
            self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
        self.optimizer.build(self.model.trainable_variables)
        self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")

    def _build_checkpointing(self) -> None:
        if self.chief:
            repaired = repair_checkpoint_state(self._checkpoint_dir())
            if repaired is not None:
                log.warning(
                    "the checkpoint state file in %s was unreadable (kept as %s): rebuilt from "
                    "the checkpoint files present",
                    self._checkpoint_dir(),
                    os.path.basename(repaired),
                )
        self.checkpoint = tf.train.Checkpoint(
            model=model_variables(self.model), optimizer=self.optimizer, step=self.step_var
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            self._checkpoint_dir(),
            max_to_keep=self.cfg["trainer"]["keep_checkpoints"],
            checkpoint_name="ckpt",
        )

    def _build_callbacks(self) -> None:
        specs = self.cfg["trainer"]["callbacks"] if self.chief else []
        self.callbacks = [
            registry.build(
                "callback", {"name": c} if isinstance(c, str) else c, key="trainer.callbacks"
            )
            for c in specs
        ]

    # ----- setup ------------------------------------------------------------------------------
    def _checkpoint_dir(self) -> str:
        if self.chief:
            return checkpoint_dir(self.run_dir)
        task_id = getattr(self.strategy.cluster_resolver, "task_id", 0)
        return worker_checkpoint_dir(self.run_dir, task_id)

    def _init_backbone(self, source: str) -> None:
        """Load the backbone's weights from another run or a converted checkpoint, and every
        other weight of the task that the source holds under the same name and shape (the LM
        head, when fine-tuning a causal LM on chats); other heads start fresh."""
        path = latest_checkpoint(checkpoint_dir(source))
        if path is None:
            raise ConfigError(f"init_from: {source} has no checkpoint")
        prefix = type(self.model.backbone).__name__ + "/"
        variables = {  # adapters (LoRA) start fresh
            k: v
            for k, v in model_variables(self.model).items()
            if not k.startswith("rng/") and "lora_kernel" not in k
        }
        backbone = {k: v for k, v in variables.items() if k.startswith(prefix)}
        status = tf.train.Checkpoint(model=backbone).restore(path).expect_partial()
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            raise ConfigError(
                f"init_from: {path} does not hold this backbone's weights "
                f"({str(e).splitlines()[0]})"
            ) from None
        shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
        rest = {
            k: v
            for k, v in variables.items()
            if k not in backbone
            and shapes.get(f"model/{k.replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE")
            == list(v.shape)
        }
        if rest:
            tf.train.Checkpoint(model=rest).restore(path).expect_partial()
        log.info(
            "initialized from %s: %d backbone weights, %d more", path, len(backbone), len(rest)
        )

    def _chief_checkpoint_dir(self) -> str:
        return checkpoint_dir(self.run_dir)

    def _restore(self) -> None:
        """Resume from the newest readable checkpoint of the chief.

        Every worker restores from the chief's directory, so all start from the same step even if
        a worker died while writing its own copy. A checkpoint that cannot be read (a crash
        mid-write, a truncated or deleted file) is skipped with a warning for the one before it.
        The checkpoints are found from the files present as well as from the state file, so a
        damaged state file is repaired, never a reason to start over.
        """
        mode = self.cfg["trainer"]["resume"]
        directory = self._chief_checkpoint_dir()
        if self.chief:
            for path in remove_stale_temporaries(directory):
                log.info("removed %s, left by a save that was interrupted", path)
        candidates, _ = checkpoint_candidates(directory)
        if mode == "must" and not candidates:
            raise ConfigError(f"trainer.resume=must but {directory} has no checkpoint")
        if mode == "never" or not candidates:
            if mode != "never" and os.path.isdir(directory):
                log.info("no checkpoint in %s: starting from step 0", directory)
            return
        errors: list[str] = []
        for path in candidates:
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except Exception as e:  # noqa: BLE001 - whatever a damaged file raises, try older
                message = str(e).splitlines()[0] if str(e) else type(e).__name__
                errors.append(f"{os.path.basename(path)}: {type(e).__name__}: {message}")
                warnings.warn(
                    f"checkpoint {path} is unreadable ({type(e).__name__}: {message}); "
                    "falling back to the one before it",
                    RuntimeWarning,
                    stacklevel=2,
                )
                log.warning("checkpoint %s is unreadable: %s", path, message)
                continue
            self.start_step = int(self.step_var.numpy())
            log.info("resumed from %s at step %d", path, self.start_step)
            return
        raise ConfigError(
            f"no readable checkpoint in {directory} ({'; '.join(errors)}); move the directory "
            "away to start over, or set trainer.resume=never"
        )

    # ----- steps ------------------------------------------------------------------------------
    def _compile_steps(self) -> None:
        saved = [v for v in self.checkpoint_variables() if tf.as_dtype(v.dtype).is_floating]

        # Every step function is traced without AutoGraph: it has no Python control flow on
        # tensors, and converting the model's code cost seconds in every training process.
        @tf.function(autograph=False)
        def all_finite():
            return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in saved])

        self._all_finite = all_finite
        model, optimizer, accum = self.model, self.optimizer, self.accum
        clip = float(self.cfg["trainer"]["clip_norm"])
        variables = model.trainable_variables
        jit = bool(self.cfg["trainer"]["jit_compile"])
        replicas = self.strategy.num_replicas_in_sync
        single = replicas == 1

        masks = [self.prune_masks.get(v.path) for v in variables]

        def gradients(batch, total_weight):
            micro = {k: tf.reshape(v, [accum, -1, *v.shape[1:]]) for k, v in batch.items()}
            grads = [tf.zeros_like(v) for v in variables]
            loss_sum = tf.constant(0.0, tf.float32)
            for a in range(accum):  # static and small: unrolled
                mb = {k: v[a] for k, v in micro.items()}
                with tf.GradientTape() as tape:
                    ls, _ = model.loss_terms(mb, training=True)
                    objective = ls / total_weight
                    # Losses the layers add in training (mixture-of-experts load balancing):
                    # a mean over micro-batches and replicas, whose gradients are summed.
                    if model.losses:
                        objective += tf.add_n(model.losses) / (accum * replicas)
                    scaled = optimizer.scale_loss(objective)
                g = tape.gradient(scaled, variables)
                grads = [x + tf.cast(y, x.dtype) for x, y in zip(grads, g, strict=True)]
                loss_sum += tf.cast(ls, tf.float32)
            return grads, loss_sum

        grad_fn = gradients if single else tf.function(gradients, jit_compile=jit, autograph=False)

        # The task's contract (tfllm.tasks.base.TaskModel): tasks that make their own training
        # data from each batch (PPO: rollouts) prepare it first, may take several updates per
        # batch, and report statistics per step.
        updates = int(model.updates_per_batch)
        statistic_names = tuple(model.step_statistics)

        def replica_step(batch):
            ctx = tf.distribute.get_replica_context()
            batch, statistics = model.prepare_batch(batch)
            # The loss normalizer must be known before the backward pass (for accumulation):
            # the batch's token weights, or what the task says (masked LM: the picked tokens).
            local_weight = model.loss_normalizer(batch)
            total_weight = ctx.all_reduce("sum", local_weight)
            for _ in range(updates):  # static: unrolled
                grads, loss_sum = grad_fn(batch, total_weight)
                grads = [g if m is None else g * m for g, m in zip(grads, masks, strict=True)]
                global_grads = ctx.all_reduce("sum", grads) if not single else grads
                scale = getattr(optimizer, "dynamic_scale", None)
                norm = tf.linalg.global_norm(global_grads)
                if scale is not None:
                    norm = norm / tf.cast(scale, norm.dtype)
                factor = tf.constant(1.0) if clip <= 0 else clip / tf.maximum(norm, clip)
                optimizer.apply([g * tf.cast(factor, g.dtype) for g in grads], variables)
            loss = ctx.all_reduce("sum", loss_sum) / total_weight
            statistics = {**statistics, **model.update_statistics(batch)}
            statistics = {
                k: ctx.all_reduce("mean", tf.cast(statistics[k], tf.float32))
                for k in statistic_names
            }
            return loss, norm, statistics

        step_fn = (
            tf.function(replica_step, jit_compile=jit, autograph=False) if single else replica_step
        )
        strategy = self.strategy
        pruned = [(v, m) for v, m in zip(variables, masks, strict=True) if m is not None]

        @tf.function(autograph=False)
        def run_steps(iterator, n):
            def body(i, loss_total, norm, totals):
                loss, norm, statistics = strategy.run(step_fn, args=(next(iterator),))
                # Masked gradients keep pruned zeros through Adam and weight decay, but not
                # through Muon, whose orthogonalized update is dense: mask the weights too.
                for v, m in pruned:
                    v.assign(v * tf.cast(m, v.dtype))
                local = strategy.experimental_local_results
                totals = {k: totals[k] + local(statistics[k])[0] for k in statistic_names}
                return i + 1, loss_total + local(loss)[0], local(norm)[0], totals

            zero = tf.constant(0.0)
            _, loss_total, norm, totals = tf.while_loop(
                lambda i, *_: i < n,
                body,
                (tf.constant(0, n.dtype), zero, zero, {k: zero for k in statistic_names}),
            )
            self.step_var.assign_add(tf.cast(n, tf.int64))
            count = tf.cast(n, tf.float32)
            return loss_total / count, norm, {k: v / count for k, v in totals.items()}

        def replica_eval(batch):
            ctx = tf.distribute.get_replica_context()
            batch, _ = model.prepare_batch(batch, update=False)
            ls, w = model.loss_terms(batch, training=False)
            stats = model.eval_statistics(batch)
            stats = {k: ctx.all_reduce("sum", v) for k, v in stats.items()}
            return ctx.all_reduce("sum", tf.cast(ls, tf.float32)), ctx.all_reduce("sum", w), stats

        eval_fn = (
            tf.function(replica_eval, jit_compile=jit, autograph=False) if single else replica_eval
        )

        @tf.function(autograph=False)
        def run_eval(batch):
            ls, w, stats = strategy.run(eval_fn, args=(batch,))
            local = strategy.experimental_local_results
            return local(ls)[0], local(w)[0], {k: local(v)[0] for k, v in stats.items()}

        @tf.function(autograph=False)
        def any_flag(flag):
            per_replica = strategy.run(lambda: tf.identity(flag))
            return strategy.reduce("SUM", per_replica, axis=None)

        self._run_steps = run_steps
        self._run_eval = run_eval
        self._any_flag = any_flag

    # ----- data -------------------------------------------------------------------------------
    def _train_iterator(self):
        start, count = self.start_step, self.max_steps - self.start_step
        fn = lambda ctx: self.dataset.train_dataset(self.tokens.train, ctx, start, count)
        return iter(self.strategy.distribute_datasets_from_function(fn))

    def evaluate(self) -> dict[str, float]:
        """Validation logs over `trainer.eval_batches` batches, as the task summarizes them
        (`summarize_eval`: loss and perplexity by default)."""
        max_batches = self.cfg["trainer"]["eval_batches"]
        n_batches = {}

        def fn(ctx):
            ds, n = self.dataset.eval_dataset(self.tokens.val, ctx, max_batches)
            n_batches["n"] = n
            return ds

        dist = self.strategy.distribute_datasets_from_function(fn)
        if n_batches.get("n", 1) == 0:
            log.warning("validation text is shorter than one batch: no validation loss")
            return {}
        total, weight, stats = 0.0, 0.0, {}
        for batch in dist:
            ls, w, batch_stats = self._run_eval(batch)
            total += float(ls)
            weight += float(w)
            for k, v in batch_stats.items():
                stats[k] = stats.get(k, 0) + v.numpy()
        if weight == 0:
            return {}
        self.last_statistics = stats
        return self.model.summarize_eval(total / weight, stats)

    @property
    def last_confusion(self) -> np.ndarray | None:
        """A classifier's confusion matrix at the last validation (None for other tasks)."""
        return self.last_statistics.get("confusion")

    # ----- loop -------------------------------------------------------------------------------
    def _save_artifacts(self) -> None:
        if not self.chief:
            return
        save_run_config(self.cfg, self.run_dir)
        tok_dir = tokenizer_dir(self.run_dir)
        if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
            self.tokenizer.save_to_directory(tok_dir)

    def _save_checkpoint(self) -> None:
        """Save the weights, optimizer state and step, if every one of them is finite.

        The loss a step reports is computed before its update, so a diverging update can leave
        non-finite weights behind a finite loss: those are never saved (nor named as the last
        good checkpoint). A failed write (a full disk) is one error naming the folder; the
        checkpoints before it are intact.
        """
        if not bool(self._all_finite()):
            raise TrainingDivergedError(
                f"the weights became non-finite at step {self.step} (the update diverged) and "
                f"were not saved; {self._last_good()}. Lower the learning rate or "
                "trainer.clip_norm, or check the data."
            )
        try:
            self.manager.save(checkpoint_number=self.step)
        except (tf.errors.OpError, OSError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            reason = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", reason)  # TF's op name
            remove_stale_temporaries(self._checkpoint_dir())
            raise CheckpointWriteError(
                f"could not write checkpoint ckpt-{self.step} in {self._checkpoint_dir()} "
                f"({type(e).__name__}: {reason}); the last checkpoint written is "
                f"{self.manager.latest_checkpoint}: free space and run the same command again "
                "to resume from it"
            ) from None

    # ----- preemption -------------------------------------------------------------------------
    def _install_sigterm_handler(self):
        """On SIGTERM, finish the current execution, save a checkpoint and stop (main thread
        only; elsewhere, e.g. inside a server, the embedding application handles signals)."""
        self._sigterm = False
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            self._sigterm = True
            log.warning("SIGTERM: saving a checkpoint after the current step")

        return signal.signal(signal.SIGTERM, handler)

    def _agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true if it is true on any worker: one all-reduce, so that every worker
        stops (and saves) at the same step when one is preempted or out of time."""
        if self.num_workers == 1:
            return tuple(bool(f) for f in flags)
        summed = self._any_flag(tf.constant([1.0 if f else 0.0 for f in flags])).numpy()
        return tuple(bool(v > 0) for v in summed)

    def _mfu_setup(self) -> None:
        from tfllm.training.flops import load_peak, training_flops_per_token

        tr = self.cfg["trainer"]
        dtype = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}.get(
            tr["mixed_precision"] or "", "float32"
        )
        self.peak_flops = tr["peak_flops"] or load_peak(dtype)
        self.flops_per_token = training_flops_per_token(self.model, self.dataset.sequence_length)

    def fit(self) -> dict[str, float]:
        """Train to `trainer.max_steps`; return the final logs (with `preempted_at_step` when a
        SIGTERM stopped the run after saving a checkpoint)."""
        self._save_artifacts()
        self._restore()
        if self.pruning:
            kept = prune_model(self.model, **self.pruning)
            for path, mask in kept.items():
                self.prune_masks[path].assign(mask)
            total, _ = sparsity_of(self.model, self.pruning["targets"])
            log.info("pruned %d weights to sparsity %.3f", len(kept), total)
        self._mfu_setup()
        self.step = self.start_step
        previous_handler = self._install_sigterm_handler()
        try:
            return self._loop()
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)

    def _loop(self) -> dict[str, float]:
        tr = self.cfg["trainer"]
        for cb in self.callbacks:
            cb.on_train_begin(self)
        logs: dict[str, float] = {}
        if self.step >= self.max_steps:
            log.info("already at step %d of %d", self.step, self.max_steps)
            finished = load_metrics(self.run_dir) if self.chief else None
            if finished and int(finished.get("step", -1)) == self.step:
                # A rerun of a finished run: its metrics stay as they are, and are the result.
                logs = {
                    k: float(v)
                    for k, v in finished.items()
                    if k not in BOOKKEEPING and isinstance(v, (int, float))
                }
                for cb in self.callbacks:
                    cb.on_train_end(self, logs)
                return logs
        iterator = self._train_iterator() if self.step < self.max_steps else None
        spe = tr["steps_per_execution"]
        events = [tr["log_every"], tr["eval_every"], tr["checkpoint_every"]]
        tokens_per_step = self.dataset.batch_size * self.dataset.sequence_length
        first = True
        deadline, started = tr["max_seconds"], time.perf_counter()
        while self.step < self.max_steps:
            n = min([spe, self.max_steps - self.step] + [e - self.step % e for e in events])
            t0 = time.perf_counter()
            loss, norm, statistics = self._run_steps(iterator, tf.constant(n, tf.int64))
            loss, norm = float(loss), float(norm)
            elapsed = time.perf_counter() - t0
            self.step += n
            if first:  # tracing and compilation: kept out of the throughput figure
                self._timing["first_seconds"] = elapsed
                first = False
            else:
                self._timing["steps"] += n
                self._timing["seconds"] += elapsed
            if not (math.isfinite(loss) and math.isfinite(norm)):
                raise TrainingDivergedError(
                    f"loss became {loss} (gradient norm {norm}) at step {self.step}; "
                    f"{self._last_good()}. Lower the learning rate or trainer.clip_norm, or "
                    "check the data."
                )
            tokens_per_sec = tokens_per_step * n / max(elapsed, 1e-9)
            logs = {
                "loss": loss,
                "learning_rate": float(self.schedule(self.step - 1)),
                "grad_norm": norm,
                "tokens_per_sec": tokens_per_sec,
                **{k: float(v) for k, v in statistics.items()},
            }
            if self.peak_flops:
                logs["mfu"] = self.flops_per_token * tokens_per_sec / self.peak_flops
            out_of_time = deadline is not None and time.perf_counter() - started >= deadline
            preempted, out_of_time = self._agree(self._sigterm, out_of_time)
            final = self.step == self.max_steps or out_of_time
            if self.step % tr["log_every"] == 0 or final:
                for cb in self.callbacks:
                    cb.on_step_end(self, self.step, logs)
            if self.step % tr["eval_every"] == 0 or final:
                eval_logs = self.evaluate()
                logs.update(eval_logs)
                if eval_logs:
                    for cb in self.callbacks:
                        cb.on_eval_end(self, self.step, eval_logs)
            if preempted or final or self.step % tr["checkpoint_every"] == 0:
                self._save_checkpoint()
            if preempted and not final:
                log.warning("preempted: checkpoint saved at step %d", self.step)
                logs["preempted_at_step"] = self.step
                for cb in self.callbacks:
                    cb.on_train_end(self, logs)
                return logs
            if out_of_time and self.step < self.max_steps:
                log.warning("trainer.max_seconds=%s reached at step %d", deadline, self.step)
                logs["stopped_at_step"] = self.step
                break
        self._finish(logs)
        for cb in self.callbacks:
            cb.on_train_end(self, logs)
        return logs

    def _last_good(self) -> str:
        latest = self.manager.latest_checkpoint
        if latest is None:
            return "no checkpoint was saved before it"
        return f"the last good checkpoint is {latest}"

    def checkpoint_variables(self) -> list[tf.Variable]:
        """Every variable a checkpoint holds: the model's, the optimizer's and the step."""
        return [*self.model.weights, *self.optimizer.variables, self.step_var]

    def weights_digest(self) -> str:
        """SHA-256 of every model weight's bytes, in order: equal digests, identical weights."""
        digest = hashlib.sha256()
        for v in self.model.weights:
            digest.update(np.ascontiguousarray(v.numpy()).tobytes())
        return digest.hexdigest()

    def _finish(self, logs: dict[str, float]) -> None:
        import resource

        digest = self.weights_digest()
        if not self.chief:
            # Workers write nothing; their digest in the log shows they hold the chief's weights.
            log.warning("worker finished at step %d, weights sha256 %s", self.step, digest)
            # Each worker removes its own scratch copies after its last save (the chief cannot:
            # a worker may still be writing when the chief finishes); the last one out removes
            # the parent folder.
            shutil.rmtree(self._checkpoint_dir(), ignore_errors=True)
            try:
                os.rmdir(os.path.join(self.run_dir, WORKERS_DIR))
            except OSError:
                pass  # another worker's copies are still there, or it is gone already
            return
        metrics = {"step": self.step, **{k: float(v) for k, v in logs.items()}}
        metrics["weights_sha256"] = digest
        metrics["num_workers"] = self.num_workers
        timing = self._timing
        if timing["steps"]:
            tokens = timing["steps"] * self.dataset.batch_size * self.dataset.sequence_length
            metrics["mean_tokens_per_sec"] = tokens / timing["seconds"]
            metrics["first_execution_seconds"] = timing["first_seconds"]
        metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        save_metrics(metrics, self.run_dir)

    def weights(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.model.weights]
