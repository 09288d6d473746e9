"""What a checkpoint holds, under names that do not depend on Python object tracking.

Keras 3 keeps sub-layers in its own tracked lists, which `tf.train.Checkpoint`'s object graph
does not follow: a model's blocks would be reachable only through the optimizer's variable
list, so a model-only restore (generation, export) would silently skip them. Naming every
model variable by its path inside the model makes checkpoints complete and restores exact.
"""

from __future__ import annotations

from typing import Any


def model_variables(model: Any) -> dict[str, Any]:
    """`{stable name: tf.Variable}` for every weight and random-generator state of `model`.

    Names are paths inside the model with each direct child's auto-numbered name
    (`decoder_backbone_3`) replaced by its class name, so two instances of one architecture,
    in one process or two, map to the same names.
    """
    prefixes: dict[str, str] = {}
    for child in model._layers:
        key = type(child).__name__
        while key in prefixes.values():
            key += "_"
        prefixes[child.name] = key
    named: dict[str, Any] = {}
    for v in model.weights:
        head, _, rest = v.path.partition("/")
        path = f"{prefixes.get(head, head)}/{rest}" if rest else v.path
        if path in named:
            raise ValueError(f"two weights share the checkpoint name '{path}'")
        named[path] = getattr(v, "value", v)
    # Dropout's seed generators carry RNG state: a resumed run must continue the same stream.
    generators = [g for layer in model._flatten_layers() for g in layer._seed_generators]
    for i, gen in enumerate(generators):
        named[f"rng/{i}"] = getattr(gen.state, "value", gen.state)
    return named
