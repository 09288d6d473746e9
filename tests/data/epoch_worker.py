"""One worker of a two-worker MultiWorkerMirroredStrategy on localhost: iterates one epoch of
a prepared dataset's training pipeline and writes the windows its replica got (JSON).

Run by tests/data/test_prepared.py: `python epoch_worker.py DATASET OUT.json` with TF_CONFIG set.
"""

import json
import sys

import numpy as np
import tensorflow as tf

from tfllm.data.prepared import PreparedDataset

path, out, batch_size, sequence_length = sys.argv[1], sys.argv[2], int(sys.argv[3]), 8
strategy = tf.distribute.MultiWorkerMirroredStrategy()
dataset = PreparedDataset(path, sequence_length=sequence_length, batch_size=batch_size)
splits = dataset.token_splits(None)
steps = dataset.steps_per_epoch(len(splits.train))
dist = strategy.distribute_datasets_from_function(
    lambda ctx: dataset.train_dataset(splits.train, ctx, 0, steps)
)
windows = []
for batch in dist:
    ids = strategy.experimental_local_results(batch["token_ids"])
    labels = strategy.experimental_local_results(batch["labels"])
    for x, y in zip(ids, labels, strict=True):  # (b, T) each: the window is x then y's last
        windows += np.concatenate([x.numpy(), y.numpy()[:, -1:]], axis=1).tolist()
with open(out, "w") as f:
    json.dump({"steps": steps, "windows": windows}, f)
