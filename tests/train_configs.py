"""The composed training config the in-process trainer tests start from, importable by tests in
every folder (this folder is on `sys.path` because it holds the suite's conftest)."""

from hydra import compose, initialize_config_dir

from tfllm.config import config_dir, to_plain


def train_config(corpus, *overrides):
    """`config.yaml` with `debug=fast` on `corpus` and `overrides`, as a plain dict without
    `run_dir` (each test gives the trainer its own)."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(
            "config", overrides=["debug=fast", f"data.path={corpus}", "run_dir=unused", *overrides]
        )
    plain = to_plain(cfg)
    plain.pop("run_dir")
    return plain
