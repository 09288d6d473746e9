"""tfllm from Python: load a model and call it, train and evaluate with the CLI's overrides.

>>> import tfllm
>>> lm = tfllm.load("runs/default")  # doctest: +SKIP
>>> lm.generate("ROMEO:", max_new_tokens=20)  # doctest: +SKIP

`load` reads a training run, a converted checkpoint (`tfllm pretrained pull`, `tfllm convert`)
or an export (a version folder, or a model folder whose newest version is taken); the object it
returns has the same methods either way. See docs/python.md.
"""

from __future__ import annotations

from tfllm.api.jobs import evaluate, train
from tfllm.api.loading import load

__all__ = ["evaluate", "load", "train"]
