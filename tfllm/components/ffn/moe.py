"""A sparse mixture of feed-forward experts with top-k routing (Switch, GShard, Mixtral)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfllm.components.ffn.mlp import ACTIVATIONS, activate
from tfllm.components.matrices import FusedMatrices
from tfllm.registry import register

_EXPERTS = ("swiglu", "mlp")


@register("ffn", "moe")
class MixtureOfExperts(keras.layers.Layer):
    """`sum_k gate_k(x) * expert_{e_k}(x)` over the `top_k` experts a learned router picks.

    Each token goes to its `top_k` experts. In training each expert takes at most
    `capacity = ceil(capacity_factor * tokens * top_k / num_experts)` tokens of the batch (first
    choices before second choices, then token order); a token past an expert's capacity gets
    nothing from it (the residual stream carries it on). Outside training no token is dropped
    (unless `eval_capacity_factor` is set), so a token's output never depends on the other
    tokens in the batch and KV-cached decoding equals recomputation. Dispatch and combine are
    scatters and gathers over `(num_experts, capacity)` slots: the work grows linearly with the
    tokens and with `top_k`, not with `num_experts`.

    In training the layer adds the load-balancing loss of Switch Transformers,
    `aux_loss_weight * num_experts * sum_e f_e * P_e` (`f_e`: share of routed choices that
    picked expert `e`; `P_e`: its mean router probability), and optionally the router z-loss
    (ST-MoE) with `add_loss`; the trainer adds both to the task loss.

    Args:
        hidden_dim: int. Model width (set by the model).
        intermediate_dim: int. Inner width of each expert (set by the model). Equal active
            parameters with a dense FFN of width `I`: `top_k * intermediate_dim = I`.
        num_experts: int. Experts per layer.
        top_k: int. Experts each token uses.
        capacity_factor: float. Training capacity multiplier (>= 1 leaves slack for imbalance).
        eval_capacity_factor: float or None. Capacity outside training; None never drops.
        expert: str. `swiglu` (gated SiLU, Mixtral) or `mlp` (two layers with `activation`).
        activation: str. The `mlp` expert's activation.
        use_bias: bool. Biases on the expert projections.
        normalize_gates: bool. Renormalize the top-k probabilities to sum to one (Mixtral).
        aux_loss_weight: float. Weight of the load-balancing loss.
        router_z_loss_weight: float. Weight of the router z-loss (0 disables it).
        initializer_range: float. Standard deviation of the normal kernel initializers.
        output_initializer_range: float or None. Standard deviation for the experts' output
            projections; None uses `initializer_range`.

    Call arguments:
        x: `(B, T, hidden_dim)`.
        training: bool. Capacity limits and auxiliary losses apply only in training.

    Example:

    >>> import numpy as np
    >>> moe = MixtureOfExperts(hidden_dim=8, intermediate_dim=16, num_experts=4, top_k=2)
    >>> moe(np.ones((2, 3, 8), "float32")).shape
    TensorShape([2, 3, 8])

    Reference: Shazeer et al. 2017; Lepikhin et al. 2020 (GShard); Fedus et al. 2021 (Switch
    Transformers); Zoph et al. 2022 (ST-MoE); Jiang et al. 2024 (Mixtral).
    """

    def __init__(
        self,
        hidden_dim: int,
        intermediate_dim: int,
        num_experts: int = 8,
        top_k: int = 2,
        capacity_factor: float = 1.25,
        eval_capacity_factor: float | None = None,
        expert: str = "swiglu",
        activation: str = "gelu",
        use_bias: bool = False,
        normalize_gates: bool = True,
        aux_loss_weight: float = 0.01,
        router_z_loss_weight: float = 0.0,
        initializer_range: float = 0.02,
        output_initializer_range: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if intermediate_dim <= 0:
            raise ValueError(f"intermediate_dim must be positive, got {intermediate_dim}")
        if num_experts < 1:
            raise ValueError(f"num_experts must be at least 1, got {num_experts}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        if capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be positive, got {capacity_factor}")
        if eval_capacity_factor is not None and eval_capacity_factor <= 0:
            raise ValueError(
                f"eval_capacity_factor must be positive or None, got {eval_capacity_factor}"
            )
        if expert not in _EXPERTS:
            raise ValueError(f"expert must be one of {_EXPERTS}, got '{expert}'")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got '{activation}'")
        if aux_loss_weight < 0 or router_z_loss_weight < 0:
            raise ValueError(
                "aux_loss_weight and router_z_loss_weight must be >= 0, got "
                f"{aux_loss_weight} and {router_z_loss_weight}"
            )
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = float(capacity_factor)
        self.eval_capacity_factor = eval_capacity_factor
        self.expert = expert
        self.activation = activation
        self.use_bias = use_bias
        self.normalize_gates = normalize_gates
        self.aux_loss_weight = float(aux_loss_weight)
        self.router_z_loss_weight = float(router_z_loss_weight)
        self.initializer_range = initializer_range
        self.output_initializer_range = output_initializer_range

    def build(self, input_shape):
        e, d, i = self.num_experts, self.hidden_dim, self.intermediate_dim
        init = keras.initializers.RandomNormal(stddev=self.initializer_range)
        out_std = (
            self.initializer_range
            if self.output_initializer_range is None
            else self.output_initializer_range
        )
        inner = 2 * i if self.expert == "swiglu" else i
        # The router stays float32 under mixed precision: its softmax decides the routing.
        self.router = self.add_weight(
            name="router", shape=(d, e), initializer=init, dtype="float32"
        )
        self.expert_in = self.add_weight(name="expert_in", shape=(e, d, inner), initializer=init)
        self.expert_out = self.add_weight(
            name="expert_out",
            shape=(e, i, d),
            initializer=keras.initializers.RandomNormal(stddev=out_std),
        )
        if self.use_bias:
            self.expert_in_bias = self.add_weight(
                name="expert_in_bias", shape=(e, inner), initializer="zeros"
            )
            self.expert_out_bias = self.add_weight(
                name="expert_out_bias", shape=(e, d), initializer="zeros"
            )
        self.built = True

    def fused_matrices(self):
        """One matrix per expert in `expert_in` (gate and up blocks for swiglu experts) and
        in `expert_out`."""
        i, d = self.intermediate_dim, self.hidden_dim
        inner = (i, i) if self.expert == "swiglu" else (i,)
        return [
            (self.expert_in, FusedMatrices(columns=inner, stacked=True)),
            (self.expert_out, FusedMatrices(columns=(d,), stacked=True)),
        ]

    def _capacity(self, num_tokens, factor: float | None):
        """Slots per expert: `ceil(factor * tokens * top_k / experts)`, or every token when
        `factor` is None. A Python int when the token count is static (XLA needs it)."""
        if factor is None:
            return num_tokens
        if isinstance(num_tokens, int):
            return max(1, math.ceil(factor * num_tokens * self.top_k / self.num_experts))
        slots = tf.math.ceil(
            factor * tf.cast(num_tokens * self.top_k, tf.float32) / self.num_experts
        )
        return tf.maximum(tf.cast(slots, tf.int32), 1)

    def _experts(self, slots):
        """Every expert on its slots: `(E, C, D)` -> `(E, C, D)`."""
        w_in = tf.cast(self.expert_in, slots.dtype)
        h = tf.einsum("ecd,edi->eci", slots, w_in)  # (E, C, I or 2I)
        if self.use_bias:
            h = h + tf.cast(self.expert_in_bias, h.dtype)[:, None, :]
        if self.expert == "swiglu":
            gate, up = tf.split(h, 2, axis=-1)  # (E, C, I) each
            h = activate(gate, "silu") * up
        else:
            h = activate(h, self.activation)
        out = tf.einsum("eci,eid->ecd", h, tf.cast(self.expert_out, h.dtype))  # (E, C, D)
        if self.use_bias:
            out = out + tf.cast(self.expert_out_bias, out.dtype)[:, None, :]
        return out

    def call(self, x, training=None):
        e, k, d = self.num_experts, self.top_k, self.hidden_dim
        shape = tf.shape(x)
        static = x.shape[:-1]
        n = (
            static[0] * static[1]
            if len(static) == 2 and static[0] is not None and static[1] is not None
            else shape[0] * shape[1]
        )
        tokens = tf.reshape(x, [-1, d])  # (N, D)
        logits = tf.matmul(tf.cast(tokens, tf.float32), self.router)  # (N, E) float32
        probs = tf.nn.softmax(logits, axis=-1)
        gates, choice = tf.math.top_k(probs, k=k)  # (N, K) each
        if self.normalize_gates:
            gates = gates / tf.reduce_sum(gates, axis=-1, keepdims=True)

        capacity = self._capacity(
            n, self.capacity_factor if training else self.eval_capacity_factor
        )
        # Slot of each (token, choice) inside its expert: all first choices queue before any
        # second choice, then by token order.
        onehot = tf.one_hot(choice, e, dtype=tf.int32)  # (N, K, E)
        queue = tf.reshape(tf.transpose(onehot, [1, 0, 2]), [-1, e])  # (K*N, E)
        position = tf.cumsum(queue, axis=0, exclusive=True)  # (K*N, E)
        position = tf.transpose(tf.reshape(position, [k, -1, e]), [1, 0, 2])  # (N, K, E)
        slot = tf.reduce_sum(position * onehot, axis=-1)  # (N, K)
        kept = slot < capacity  # (N, K)
        # Dropped choices all land in one spare slot per expert (index `capacity`), never read.
        slot = tf.where(kept, slot, capacity)
        index = tf.reshape(tf.stack([choice, slot], axis=-1), [-1, 2])  # (N*K, 2)
        routed = tf.repeat(tokens, k, axis=0)  # (N*K, D), row n*K + j is token n
        slots = tf.scatter_nd(index, routed, [e, capacity + 1, d])  # (E, C+1, D)
        done = self._experts(slots[:, :capacity])  # (E, C, D)
        done = tf.concat([done, tf.zeros([e, 1, d], done.dtype)], axis=1)  # (E, C+1, D)
        back = tf.reshape(tf.gather_nd(done, index), [-1, k, d])  # (N, K, D)
        weights = gates * tf.cast(kept, gates.dtype)  # (N, K)
        out = tf.reduce_sum(back * tf.cast(weights, back.dtype)[..., None], axis=1)  # (N, D)

        if training:
            if self.aux_loss_weight:
                share = tf.reduce_mean(tf.reduce_sum(tf.cast(onehot, tf.float32), 1), 0) / k
                mean_prob = tf.reduce_mean(probs, axis=0)  # (E,)
                balance = e * tf.reduce_sum(share * mean_prob)
                self.add_loss(self.aux_loss_weight * balance)
            if self.router_z_loss_weight:
                z = tf.reduce_mean(tf.square(tf.reduce_logsumexp(logits, axis=-1)))
                self.add_loss(self.router_z_loss_weight * z)
        return tf.reshape(out, shape)  # (B, T, D)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            num_experts=self.num_experts,
            top_k=self.top_k,
            capacity_factor=self.capacity_factor,
            eval_capacity_factor=self.eval_capacity_factor,
            expert=self.expert,
            activation=self.activation,
            use_bias=self.use_bias,
            normalize_gates=self.normalize_gates,
            aux_loss_weight=self.aux_loss_weight,
            router_z_loss_weight=self.router_z_loss_weight,
            initializer_range=self.initializer_range,
            output_initializer_range=self.output_initializer_range,
        )
        return config
