import contextlib
import os
import pathlib
import re
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# `tfllm chat` in tests chats in its own process unless a test asks for a resident worker
# (tests/commands/test_resident_chat.py): no worker outlives the suite.
os.environ.setdefault("TFLLM_KEEP_ALIVE", "0")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


# The heaviest files first (most seconds on this machine first): `--dist loadfile` hands files to
# the workers in collection order, so a heavy file collected last would run alone at the
# end while the other workers idle.
HEAVY_FIRST = (
    "tests/serving/test_serving.py",
    "tests/serving/test_openai_api.py",
    "tests/pretrained/test_pretrained.py",
    "tests/tasks/test_seq2seq.py",
    "tests/serving/test_task_exports.py",
    "tests/training/test_run_safety.py",
    "tests/tasks/test_alignment.py",
    "tests/commands/test_output_hygiene.py",
    "tests/serving/test_qa_export.py",
    "tests/generation/test_prompt_rules.py",
    "tests/commands/test_python_api.py",
    "tests/commands/test_resident_chat.py",
    "plugins/tfllm-plugin-example/tests/test_example_integration.py",
    "tests/training/test_distributed.py",
    "tests/data/test_prepared.py",
    "tests/compression/test_efficiency.py",
    "tests/components/test_subword_tokenizers.py",
    "tests/evaluation/test_evaluation.py",
    "tests/retrieval/test_knowledge_base.py",
    "tests/training/test_trainer.py",
)


def pytest_collection_modifyitems(session, config, items):
    root = pathlib.Path(str(config.rootpath))
    rank = {path: i for i, path in enumerate(HEAVY_FIRST)}

    def weight(item):
        try:
            relative = pathlib.Path(str(item.path)).relative_to(root).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(relative, len(rank))

    items.sort(key=weight)  # stable: each file keeps its own order


def pytest_configure(config):
    from tfllm import registry

    registry.ensure_loaded()


@pytest.fixture
def tiny_corpus(tmp_path):
    """A small public-domain text (Hamlet's opening) written to a file."""
    text = (
        "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
        "BERNARDO:\nLong live the king!\n\nFRANCISCO:\nBernardo?\n\nBERNARDO:\nHe.\n\n"
        "FRANCISCO:\nYou come most carefully upon your hour.\n\n"
        "BERNARDO:\n'Tis now struck twelve; get thee to bed, Francisco.\n\n"
        "FRANCISCO:\nFor this relief much thanks: 'tis bitter cold,\nAnd I am sick at heart.\n\n"
    ) * 12
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path


def checkpoint_state(run_dir):
    """Every tensor of a run's latest checkpoint (weights, optimizer moments, step), by name."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints"))
    return {
        k: reader.get_tensor(k)
        for k in reader.get_variable_to_shape_map()
        if not k.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")
    }


def kill_at_checkpoint(cmd, run_dir, step):
    """Start the training command `cmd` and SIGKILL it once `run_dir` holds the checkpoint of
    `step`; checks that it was killed there, before it finished."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = pathlib.Path(run_dir) / "checkpoints" / f"ckpt-{step}.index"
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "the run never wrote a checkpoint"
    assert not (pathlib.Path(run_dir) / "metrics.json").exists(), (
        "the run finished before it was killed"
    )


class AtStep:
    """A trainer callback that calls `act(trainer)` once training reaches `step`."""

    def __init__(self, step):
        self.step = step

    def act(self, trainer):
        raise NotImplementedError

    def on_train_begin(self, trainer):
        pass

    def on_step_end(self, trainer, step, logs):
        if step == self.step:
            self.act(trainer)

    def on_eval_end(self, trainer, step, logs):
        pass

    def on_train_end(self, trainer, logs):
        pass


class SigtermAt(AtStep):
    """Sends this process SIGTERM at `step`: the trainer saves a checkpoint at the next boundary
    and stops, as when a scheduler preempts it."""

    def act(self, trainer):
        import signal

        os.kill(os.getpid(), signal.SIGTERM)


# Lines TensorFlow, XLA, absl, CUDA or oneDNN would write (tfllm's own lines never match).
FOREIGN = re.compile(
    r"^[IWEF]\d{4} |absl|cuda|cuInit|oneDNN|tensorflow/|xla/|rebuild TensorFlow", re.IGNORECASE
)


def foreign_lines(stderr: str) -> list[str]:
    """The lines of `stderr` that TensorFlow and its libraries wrote, not tfllm."""
    return [line for line in stderr.splitlines() if FOREIGN.search(line)]


def train_here(overrides, run_dir):
    """`tfllm train OVERRIDES` in this process, into `run_dir`: for fixtures that need a trained
    run (the command's own path is tested by tests/commands), without starting a process."""
    from tfllm.config import compose
    from tfllm.training.trainer import Trainer

    cfg = compose("config", [*overrides, "run_dir=unused"])
    cfg.pop("run_dir")
    Trainer(cfg, str(run_dir)).fit()


def export_here(run_dir, base_path, name, validate=True, **settings):
    """`tfllm export ckpt=RUN` in this process (validated in a fresh one, as the command does):
    for fixtures that serve a task's export (the command's own path is tested by
    tests/serving/test_serving.py). Returns the `ExportResult`."""
    from tfllm.export.exporter import export_model
    from tfllm.export.serving_module import ExportSettings
    from tfllm.runs import load_run

    model, tokenizer, cfg = load_run(str(run_dir))
    return export_model(
        model,
        tokenizer,
        cfg,
        str(base_path),
        name,
        settings=ExportSettings(**settings),
        validate=validate,
    )


def run_cli(args, cwd=None, timeout=300, check=True, env=None, input_text=None):
    """Run the real `tfllm` console script in a fresh process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "tfllm.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"tfllm {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr[-4000:]}"
        )
    return proc


def self_signed(cert, key) -> tuple[str, str]:
    """A self-signed certificate for localhost and 127.0.0.1 (its own CA) at `cert`, with its
    key at `key` (skips the test without the openssl command)."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key)]
        + ["-out", str(cert), "-days", "2", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def predict_error(port, model, signature, **inputs):
    """The `grpc.RpcError` a Predict request with `inputs` gets from the server on `port`,
    sent with the stock `tensorflow_serving.apis` stub (fails the test if it succeeds)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=60)
    return info.value


@contextlib.contextmanager
def serve_process(model_dir, model_name, timeout=120, extra=()):
    """`tfllm serve` for `model_dir` (None: `extra` names the models) in its own process on free
    ports of 127.0.0.1; yields `(process, (grpc_port, rest_port))` (with the OpenAI API's port
    third when `extra` turns it on) and stops the server after."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    models = [f"model_base_path={model_dir}", f"model_name={model_name}"] if model_dir else []
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tfllm.cli",
            "serve",
            *models,
            "port=0",
            "rest_port=0",
            "file_system_poll_wait_seconds=0.3",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    ports = None
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"serving gRPC on 127\.0\.0\.1:(\d+), REST on 127\.0\.0\.1:(\d+)", line)
        if match:
            ports = int(match[1]), int(match[2])
            openai = re.search(r"OpenAI API on 127\.0\.0\.1:(\d+)", line)
            if openai:
                ports += (int(openai[1]),)
            break
    if ports is None:
        proc.kill()
        raise AssertionError(f"server did not start: {''.join(lines)}{proc.stderr.read()}")
    try:
        yield proc, ports
    finally:
        proc.terminate()
        proc.wait(timeout=30)
