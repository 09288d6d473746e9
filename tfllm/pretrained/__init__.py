"""Pretrained checkpoints into tfllm models: GGUF (Llama layout) and Hugging Face layouts
(Llama, GPT-2, BERT), the packaged SmolLM2 and MiniLM, and `tfllm convert`."""
