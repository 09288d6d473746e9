"""PPO with a KL penalty to a frozen reference (RLHF): rollouts, rewards, GAE, clipped updates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from tfllm import registry
from tfllm.tasks.base import example_means
from tfllm.tasks.causal_lm import CausalLM
from tfllm.tasks.reference import copy_policy, frozen_reference


def token_log_probs(logits, ids):
    """Log-probability `(B, L-1)` of each token `ids[:, 1:]` under the logits of the position
    before it (`logits[:, :-1]`), and the entropy of those distributions."""
    logits = tf.cast(logits[:, :-1], tf.float32)  # (B, L-1, V)
    log_p = tf.nn.log_softmax(logits)
    chosen = tf.gather(log_p, ids[:, 1:], batch_dims=2)  # (B, L-1)
    entropy = -tf.reduce_sum(tf.exp(log_p) * log_p, axis=-1)  # (B, L-1)
    return chosen, entropy


def generalized_advantages(rewards, values, mask, gamma: float, lam: float):
    """GAE (Schulman et al. 2016) over the masked time steps of `(B, T)` rewards and values;
    the value after the last step is 0. Returns `(advantages, returns)`."""
    next_values = tf.concat([values[:, 1:] * mask[:, 1:], tf.zeros_like(values[:, :1])], axis=1)
    deltas = (rewards + gamma * next_values - values) * mask  # (B, T)
    next_mask = tf.concat([mask[:, 1:], tf.zeros_like(mask[:, :1])], axis=1)

    def step(carry, inputs):
        delta, m = inputs
        return delta + gamma * lam * m * carry

    # Scan backwards over time: (T, B) elements.
    advantages = tf.scan(
        step,
        (tf.reverse(tf.transpose(deltas), [0]), tf.reverse(tf.transpose(next_mask), [0])),
        initializer=tf.zeros_like(deltas[:, 0]),
    )
    advantages = tf.transpose(tf.reverse(advantages, [0])) * mask
    return advantages, (advantages + values) * mask


def masked_mean(x, mask):
    return tf.math.divide_no_nan(tf.reduce_sum(x * mask), tf.reduce_sum(mask))


@registry.register("reward", "token_frequency")
class TokenFrequencyReward:
    """A programmatic reward: the share of generated tokens that are among the tokens of
    `target` (for example `"aeiou"` with a character tokenizer), in [0, 1]. Earning it means
    shifting the policy's distribution, as RLHF does."""

    def __init__(self, target: str = "a", tokenizer: Any = None):
        ids = sorted(set(tokenizer.encode_one(target))) if tokenizer is not None else []
        if not ids:
            raise ValueError(f"target {target!r} encodes to no tokens")
        self.target = target
        self.target_ids = ids

    def __call__(self, ids, response_mask):
        targets = tf.constant(self.target_ids, tf.int32)
        hits = tf.reduce_any(ids[:, :, None] == targets[None, None, :], axis=-1)  # (B, L)
        hits = tf.cast(hits, tf.float32) * response_mask
        return tf.math.divide_no_nan(tf.reduce_sum(hits, 1), tf.reduce_sum(response_mask, 1))


@registry.register("reward", "reward_model")
class RewardModelReward:
    """The score of a reward model trained by tfllm (`task=reward`), frozen, on the prompt and
    the generated reply."""

    def __init__(self, path: str | None = None, tokenizer: Any = None):
        from tfllm.runs import load_run

        if not path:
            raise ValueError("reward_model needs task.reward.path=RUN_DIR of a task=reward run")
        self.model, reward_tokenizer, cfg = load_run(path)
        if cfg["task"]["name"] != "reward":
            raise ValueError(f"{path} is a '{cfg['task']['name']}' run, not a reward model")
        if (
            tokenizer is not None
            and reward_tokenizer.get_vocabulary() != tokenizer.get_vocabulary()
        ):
            raise ValueError(f"{path} uses another tokenizer than the policy")
        self.model.trainable = False

    def __call__(self, ids, response_mask):
        last = tf.reduce_max(
            tf.cast(response_mask > 0, tf.int32) * tf.range(tf.shape(ids)[1])[None, :], axis=1
        )  # (B,) position of the last reply token
        lengths = last + 1
        mask = tf.range(tf.shape(ids)[1])[None, :] < lengths[:, None]
        return self.model(ids, padding_mask=mask)


@registry.register("task", "ppo")
class ProximalPolicyOptimization(CausalLM):
    """RLHF with PPO: the policy (this causal LM) samples replies to prompts, a reward (a
    registered reward function, or a tfllm reward model) scores them, a per-token KL penalty to
    a frozen reference keeps the policy near where it started, GAE turns rewards and a value
    head's estimates into advantages, and `ppo_epochs` clipped updates follow each rollout.

    The rollout is the single-graph decode loop, run inside the training step
    (`prepare_batch`); the KL coefficient adapts toward `target_kl` (Ziegler et al. 2019).
    TensorBoard gets reward, KL, KL coefficient, entropy, clip fraction, value loss and reply
    length per step; validation rolls out greedy-free samples of the validation prompts and
    reports their mean reward and KL.

    Args:
        backbone, head: as in `CausalLM` (the policy; `init_from=` an SFT run).
        reward: dict or None. `{"name": "token_frequency", "target": "aeiou"}` or
            `{"name": "reward_model", "path": RUN_DIR}` (registry kind `reward`); None is
            `token_frequency` of `"a"`.
        special_tokens: role -> id (set by the builder); eos ends a reply.
        max_new_tokens: int. Reply length limit.
        temperature: float. Sampling temperature of rollouts.
        kl_coef: float. Initial KL penalty coefficient.
        target_kl: float or None. Per-reply KL the controller aims at (None: fixed coef).
        kl_horizon: int. Controller horizon (in replies).
        clip_ratio: float. PPO's policy ratio clip.
        value_clip: float. Clip of the value update.
        value_coef: float. Weight of the value loss.
        entropy_coef: float. Weight of the entropy bonus.
        gamma, lam: floats. Discount and GAE parameter.
        ppo_epochs: int. Updates per rollout.
        seed: int. Sampling seed.

    Reference: Schulman et al. 2017 (PPO); Ziegler et al. 2019; Ouyang et al. 2022.
    """

    # What `prepare_batch` and `update_statistics` report each step (TensorBoard `train/`).
    step_statistics = (
        "reward",
        "kl",
        "kl_coef",
        "reply_length",
        "entropy",
        "clip_fraction",
        "value_loss",
    )

    def __init__(
        self,
        backbone: Any,
        head: dict[str, Any] | None = None,
        reward: dict[str, Any] | None = None,
        special_tokens: dict[str, int] | None = None,
        tokenizer: Any = None,
        max_new_tokens: int = 16,
        temperature: float = 1.0,
        kl_coef: float = 0.05,
        target_kl: float | None = 6.0,
        kl_horizon: int = 10000,
        clip_ratio: float = 0.2,
        value_clip: float = 0.2,
        value_coef: float = 0.1,
        entropy_coef: float = 0.0,
        gamma: float = 1.0,
        lam: float = 0.95,
        ppo_epochs: int = 4,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(backbone, head=head, **kwargs)
        for key, value in (("max_new_tokens", max_new_tokens), ("ppo_epochs", ppo_epochs)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive for rollouts, got {temperature}")
        self.reward_spec = dict(reward or {"name": "token_frequency"})
        self.special_tokens = dict(special_tokens or {})
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.initial_kl_coef = kl_coef
        self.target_kl = target_kl
        self.kl_horizon = kl_horizon
        self.clip_ratio = clip_ratio
        self.value_clip = value_clip
        self.value_coef = value_coef
        self.entropy_coef = entropy_coef
        self.gamma = gamma
        self.lam = lam
        self.updates_per_batch = ppo_epochs
        self.seed = seed
        self.reward_fn = (
            registry.build("reward", self.reward_spec, {"tokenizer": tokenizer}, key="task.reward")
            if tokenizer is not None
            else None
        )
        self.value_head = self.build_head({"name": "scalar", "pooling": "none"}, None, "value_head")
        self.reference = frozen_reference(self)
        self.kl_coef = self.add_weight(
            name="kl_coef",
            shape=(),
            initializer=keras.initializers.Constant(kl_coef),
            trainable=False,
        )
        # Counts training rollouts, so each step samples afresh (and a resumed run alike).
        self.rollouts = self.add_weight(
            name="rollouts", shape=(), initializer="zeros", dtype="int32", trainable=False
        )

    def on_initialized(self) -> None:
        """The reference starts as a copy of the policy (after `init_from`)."""
        copy_policy(self, self.reference)

    def _policy(self, ids, mask, training=False):
        hidden = self.backbone(ids, padding_mask=mask, training=training)  # (B, L, D)
        logits = self.head(hidden, token_embedding=self.backbone.token_embedding)
        values = self.value_head(hidden)  # (B, L)
        return logits, values

    def prepare_batch(self, batch: dict[str, Any], update: bool = True):
        """Roll out replies to `batch["prompt_ids"]` and score them: the batch the PPO loss
        reads, and the step's statistics."""
        from tfllm.generation.decoder import decode_loop

        if self.reward_fn is None:
            raise ValueError("ppo was built without a tokenizer: no reward function")
        buffer = tf.cast(batch["prompt_ids"], tf.int32)  # (B, L)
        prompt_lengths = tf.cast(batch["prompt_lengths"], tf.int32)
        eos = self.special_tokens.get("eos", -1)
        pad = self.special_tokens.get("pad", 0)
        fingerprint = tf.reduce_sum(buffer * (tf.range(tf.shape(buffer)[1]) + 1)) % 2147483647
        fingerprint = (fingerprint + 7919 * tf.cast(self.rollouts, tf.int32)) % 2147483647
        if update:
            self.rollouts.assign_add(1)
        ids, lengths = decode_loop(
            self,
            buffer,
            prompt_lengths,
            self.max_new_tokens,
            tf.constant(self.temperature, tf.float32),
            tf.constant(0, tf.int32),
            tf.constant(1.0, tf.float32),
            (fingerprint + self.seed) % 2147483647,
            tf.constant([eos], tf.int32),
            tf.constant(pad, tf.int32),
        )
        ids = tf.stop_gradient(ids)
        positions = tf.range(tf.shape(ids)[1])[None, :]
        real = positions < lengths[:, None]  # (B, L)
        response = tf.cast(real & (positions >= prompt_lengths[:, None]), tf.float32)
        action_mask = response[:, 1:]  # (B, L-1): token t+1 was generated
        logits, values = self._policy(ids, real)
        old_lp, _ = token_log_probs(logits, ids)
        ref_lp, _ = token_log_probs(self.reference(ids, padding_mask=real), ids)
        values = values[:, :-1] * action_mask  # value of the state before each action
        kl = (old_lp - ref_lp) * action_mask  # (B, L-1)
        score = tf.cast(self.reward_fn(ids, response), tf.float32)  # (B,)
        last = tf.one_hot(lengths - 2, tf.shape(action_mask)[1]) * action_mask
        rewards = -self.kl_coef * kl + score[:, None] * last
        advantages, returns = generalized_advantages(
            rewards, values, action_mask, self.gamma, self.lam
        )
        mean = masked_mean(advantages, action_mask)
        var = masked_mean(tf.square(advantages - mean), action_mask)
        advantages = (advantages - mean) * tf.math.rsqrt(var + 1e-8) * action_mask
        kl_per_reply = tf.reduce_sum(kl, axis=1)  # (B,)
        if update and self.target_kl is not None:
            error = tf.clip_by_value(tf.reduce_mean(kl_per_reply) / self.target_kl - 1, -0.2, 0.2)
            n = tf.cast(tf.shape(ids)[0], tf.float32)
            self.kl_coef.assign(self.kl_coef * (1 + error * n / self.kl_horizon))
        prepared = {
            "ids": ids,
            "mask": real,
            "action_mask": action_mask,
            "old_log_probs": tf.stop_gradient(old_lp),
            "old_values": tf.stop_gradient(values),
            "advantages": tf.stop_gradient(advantages),
            "returns": tf.stop_gradient(returns),
            "row_weights": tf.cast(batch.get("loss_weights", tf.ones_like(score)), tf.float32),
            "score": tf.stop_gradient(score),
            "kl_per_reply": tf.stop_gradient(kl_per_reply),
        }
        stats = {
            "reward": tf.reduce_mean(score),
            "kl": tf.reduce_mean(kl_per_reply),
            "kl_coef": tf.identity(self.kl_coef),
            "reply_length": tf.reduce_mean(tf.reduce_sum(response, 1)),
        }
        return prepared, stats

    def loss_normalizer(self, batch: dict[str, Any]):
        return tf.reduce_sum(batch["action_mask"] * batch["row_weights"][:, None])

    def loss_terms(self, batch: dict[str, Any], training: bool = False):
        """Summed clipped policy loss, weighted value loss and entropy bonus over the generated
        tokens, and their count."""
        terms = self._ppo_terms(batch, training)
        mask = batch["action_mask"] * batch["row_weights"][:, None]
        total = (
            terms["policy"]
            + self.value_coef * terms["value"]
            - self.entropy_coef * terms["entropy"]
        )
        return tf.reduce_sum(total * mask), tf.reduce_sum(mask)

    def _ppo_terms(self, batch, training):
        logits, values = self._policy(batch["ids"], batch["mask"], training)
        new_lp, entropy = token_log_probs(logits, batch["ids"])
        values = values[:, :-1]
        ratio = tf.exp(new_lp - batch["old_log_probs"])
        adv = batch["advantages"]
        clipped_ratio = tf.clip_by_value(ratio, 1 - self.clip_ratio, 1 + self.clip_ratio)
        policy = tf.maximum(-adv * ratio, -adv * clipped_ratio)
        old_v = batch["old_values"]
        clipped_v = old_v + tf.clip_by_value(values - old_v, -self.value_clip, self.value_clip)
        value = 0.5 * tf.maximum(
            tf.square(values - batch["returns"]), tf.square(clipped_v - batch["returns"])
        )
        return {
            "policy": policy,
            "value": value,
            "entropy": entropy,
            "clipped": tf.cast(tf.abs(ratio - 1) > self.clip_ratio, tf.float32),
        }

    def update_statistics(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Entropy, clip fraction and value loss of the policy after the step's updates."""
        terms = self._ppo_terms(batch, False)
        mask = batch["action_mask"]
        return {
            "entropy": masked_mean(terms["entropy"], mask),
            "clip_fraction": masked_mean(terms["clipped"], mask),
            "value_loss": masked_mean(terms["value"], mask),
        }

    def summarize_eval(self, loss: float, statistics: Mapping[str, Any]) -> dict[str, float]:
        return example_means(loss, statistics)

    def eval_statistics(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Summed reward and KL of the validation rollouts (the trainer averages them)."""
        weights = batch["row_weights"]
        return {
            "reward": tf.reduce_sum(batch["score"] * weights),
            "kl": tf.reduce_sum(batch["kl_per_reply"] * weights),
            "examples": tf.reduce_sum(weights),
        }

    def task_config(self) -> dict[str, Any]:
        return {
            **super().task_config(),
            "reward": self.reward_spec,
            "special_tokens": self.special_tokens,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "kl_coef": self.initial_kl_coef,
            "target_kl": self.target_kl,
            "kl_horizon": self.kl_horizon,
            "clip_ratio": self.clip_ratio,
            "value_clip": self.value_clip,
            "value_coef": self.value_coef,
            "entropy_coef": self.entropy_coef,
            "gamma": self.gamma,
            "lam": self.lam,
            "ppo_epochs": self.updates_per_batch,
            "seed": self.seed,
        }
