"""tf.data pipelines: corpora, packing, batching and sharding under a strategy."""
