"""SavedModel export: signatures with generation in the graph, validation, warmup."""
