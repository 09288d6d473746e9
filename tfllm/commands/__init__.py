"""One module per `tfllm` command: each turns its composed config into typed settings once, at
its top, then calls the library. Only `tfllm.cli` imports this package."""
