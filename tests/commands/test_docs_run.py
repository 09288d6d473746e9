"""Every `tfllm` command shown in README.md, docs/*.md and serving/README.md runs, in the order
the page shows it, from a fresh folder, shrunk to a few steps and small lengths: each must
succeed. So a page cannot promise a command that fails. (`test_docs_commands.py` checks that
each still parses, in the default run; docs/python.md runs whole in `test_python_api.py`.)

A page's placeholders (`RUN`, `DIR`, `runs/sft`, `chat.jsonl`, `serving/models/...`) are made
here first, the way the page's own commands or the task's docs say to make them: small data
files, three-step runs, exports of each task, a server holding them. Heavy (about half an hour
on two cores): `pytest -m slow tests/commands/test_docs_run.py -n 2 --dist load`.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, self_signed
from test_docs_commands import COMMAND_LINES, PULLED

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
PAGES = sorted({where.split(":")[0] for where, _ in COMMAND_LINES})

# What cannot run here, and why (everything else must).
NOT_HERE = {
    "source=model.gguf": "needs a GGUF file of one's own (tests/pretrained converts local ones)",
    "source=hf_model_dir": "needs a Hugging Face model folder of one's own (likewise)",
    "source=path/to/hf_model_dir": "needs a Hugging Face model folder of one's own (likewise)",
}
SHRINK_TRAIN = {
    "trainer.max_steps": "3",
    "trainer.eval_every": "3",
    "trainer.log_every": "3",
    "trainer.checkpoint_every": "3",
    "trainer.eval_batches": "2",
    "trainer.callbacks": "[progress]",
}
SMALLER = {  # lengths and counts a page shows, and what this test runs instead
    "data.sequence_length=4096": "data.sequence_length=512",
    "attention.window=128": "attention.window=32",
    "finetune_steps=300": "finetune_steps=3",
    "data.limit=200": "data.limit=8",
}
PLAY = "BERNARDO:\nWho's there?\n\nFRANCISCO:\nNay, answer me: stand, and unfold yourself.\n\n"
# Every printable ASCII character, so a character tokenizer learnt from it can spell any
# template marker and any test sentence.
PRINTABLE = "".join(chr(c) for c in range(32, 127)) + "\n"
COLOURS = {"red": "apple", "yellow": "banana", "green": "lime", "orange": "orange"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def key_of(arg: str) -> str:
    return arg.partition("=")[0].lstrip("+")


def with_overrides(argv: list[str], overrides: dict[str, str]) -> list[str]:
    """`argv` with each `key=value` of `overrides` set: a key already there is replaced in
    place (Hydra refuses a key given twice), others are appended."""
    out, done = [], set()
    for arg in argv:
        key = key_of(arg)
        if "=" in arg and key in overrides:
            out.append(f"{key}={overrides[key]}")
            done.add(key)
        else:
            out.append(arg)
    return out + [f"{k}={v}" for k, v in overrides.items() if k not in done]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_data(root: Path) -> None:
    """The data files the pages name, in the formats docs/data.md and docs/tasks.md give."""
    gen = random.Random(0)
    (root / "my_corpus").mkdir()
    (root / "my_corpus" / "a.txt").write_text(PLAY * 60, encoding="utf-8")
    (root / "corpus").mkdir()
    (root / "corpus" / "a.txt").write_text(PLAY * 60, encoding="utf-8")
    (root / "corpus.txt").write_text((PLAY + PRINTABLE) * 40, encoding="utf-8")
    sentiment = "sentence\tlabel\n" + "a fine play\t1\na dull play\t0\n" * 20
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (root / name).write_text(sentiment, encoding="utf-8")
    (root / "sentiment.tsv").write_text(sentiment, encoding="utf-8")
    # Translation pairs (docs/tasks.md's seq2seq: `source`/`target` columns) where a page
    # trains seq2seq from train.tsv: written by the page's test before that command.
    pairs = "source\ttarget\n" + "".join(
        f"{w}\t{w[::-1]}\n" for w in ("abc", "hello", "play", "stand", "night") * 8
    )
    (root / "pairs.tsv").write_text(pairs, encoding="utf-8")
    nli = (
        "sentence\tsecond\tlabel\n"
        + "a man sleeps\ta man sleeps\t1\na man sleeps\tnobody\t0\n" * 20
    )
    (root / "nli.tsv").write_text(nli, encoding="utf-8")
    chats = [
        {
            "messages": [
                {"role": "user", "content": f"Which fruit is {colour}?"},
                {"role": "assistant", "content": fruit},
            ]
        }
        for colour, fruit in COLOURS.items()
    ]
    write_jsonl(root / "chat.jsonl", chats * 10)
    write_jsonl(root / "chat_val.jsonl", chats)
    prefs = [
        {
            "prompt": f"Which fruit is {c}?",
            "chosen": f,
            "rejected": gen.choice(list(COLOURS.values())),
        }
        for c, f in COLOURS.items()
    ]
    write_jsonl(root / "pairs.jsonl", prefs * 10)
    write_jsonl(root / "pairs_val.jsonl", prefs)
    prompts = [{"prompt": f"Which fruit is {c}?"} for c in COLOURS]
    write_jsonl(root / "prompts.jsonl", prompts * 10)
    # docs/applications.md: notes for a knowledge base, and claims about them.
    (root / "notes").mkdir()
    for colour, fruit in COLOURS.items():
        text = f"The {fruit} in the market of Kellmere is {colour}.\n\nIt costs two coins."
        (root / "notes" / f"{fruit}.txt").write_text(text, encoding="utf-8")
    claims = [
        {"claim": f"The {f} in Kellmere is {c}.", "label": "supported"} for c, f in COLOURS.items()
    ] + [{"claim": "The lime in Kellmere is blue.", "label": "refuted"}]
    write_jsonl(root / "claims.jsonl", claims)
    write_jsonl(root / "prompts_val.jsonl", prompts)
    conll = ["-DOCSTART- -X- O", ""]
    for _ in range(40):
        conll += ["Ada NNP B-PER", "Lovelace NNP I-PER", "lived X O", "in X O", "London NNP B-LOC"]
        conll += [""]
    for name in ("train.conll", "dev.conll"):
        (root / name).write_text("\n".join(conll), encoding="utf-8")
    context = "Ada Lovelace wrote the notes."
    squad = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": str(k),
                                "question": "Who wrote it?",
                                "answers": [{"text": "Ada Lovelace", "answer_start": 0}],
                            }
                            for k in range(40)
                        ],
                    }
                ]
            }
        ]
    }
    for name in ("train-v1.1.json", "dev-v1.1.json"):
        (root / name).write_text(json.dumps(squad), encoding="utf-8")


class Workspace:
    """A fresh folder where a page's commands run in order, with what they refer to made on
    first use (`need`)."""

    def __init__(self, root: Path):
        self.root = root
        self.ports = {"grpc": free_port(), "rest": free_port(), "openai": free_port()}
        self.server: subprocess.Popen | None = None
        self.made: dict[str, str] = {}
        self.env = dict(os.environ, TFLLM_TOKEN="docs-run-token", PYTHONUNBUFFERED="1")
        write_data(root)

    # ----- running -----------------------------------------------------------------------
    def tfllm(self, argv: list[str], stdin: str | None = None, env=None) -> str:
        env = {**self.env, **(env or {})}
        return run_cli(argv, cwd=self.root, timeout=1800, env=env, input_text=stdin).stdout

    def train(self, run_dir: str, *overrides: str) -> str:
        if run_dir not in self.made:
            self.tfllm(with_overrides(["train", f"run_dir={run_dir}", *overrides], SHRINK_TRAIN))
            self.made[run_dir] = run_dir
        return run_dir

    def export(self, ckpt: str, name: str, *overrides: str) -> str:
        base = f"serving/models/{name}"
        if not (self.root / base / "1").exists():
            self.tfllm(
                [
                    "export",
                    f"ckpt={ckpt}",
                    "export.base_path=serving/models",
                    f"export.name={name}",
                    *overrides,
                ]
            )
        return base

    def pulled(self, name: str) -> str:
        """`tfllm pretrained pull NAME` (cached: one process pulls at a time)."""
        lock = Path.home() / ".cache" / "tfllm" / f".docs-run-{name}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            return self.tfllm(["pretrained", "pull", name]).strip().splitlines()[-1]

    def serve(self, argv: list[str], name: str = "lm", tls: bool = False) -> None:
        """Start `tfllm serve ...` in the background (stopping the last one) until it answers."""
        self.stop()
        self.server = subprocess.Popen(
            [sys.executable, "-m", "tfllm.cli", *argv],
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        from tfllm.serving.client import Client

        security = {"token": "docs-run-token", "tls_ca_file": str(self.root / "ca.pem")}
        client = Client(
            "127.0.0.1", self.ports["grpc"], name, timeout=10, **(security if tls else {})
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise AssertionError(f"{argv} exited: {self.server.stderr.read()[-4000:]}")
            try:
                client.signatures()
                return
            except Exception:  # noqa: BLE001 (not up yet)
                time.sleep(0.5)
        raise AssertionError(f"{argv} did not come up")

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=60)
            self.server = None

    # ----- what pages refer to -------------------------------------------------------------
    def need(self, what: str) -> str:
        """A run, export or file a page's command refers to, made on first use."""
        if what in self.made:
            return self.made[what]
        made = getattr(self, "make_" + what.replace("/", "_").replace("-", "_"))()
        self.made[what] = made
        return made

    def make_runs_default(self) -> str:
        return self.train("runs/default")

    def make_runs_a(self) -> str:
        return self.train("runs/a")

    def make_runs_gpt(self) -> str:
        return self.train("runs/gpt")

    def make_runs_base(self) -> str:
        """A decoder whose characters cover every template marker (for chat tasks)."""
        return self.train("runs/base", "data.path=corpus.txt")

    def make_runs_mlm(self) -> str:
        """An encoder: the masked LM of docs/tasks.md."""
        return self.train(
            "runs/mlm",
            "model=bert_tiny",
            "task=masked_lm",
            "tokenizer=char_mlm",
            "data.path=corpus.txt",
        )

    def make_runs_t5(self) -> str:
        return self.train(
            "runs/t5",
            "model=t5_tiny",
            "task=seq2seq",
            "data.train=pairs.tsv",
            "data.val=pairs.tsv",
            "data.source_length=16",
            "data.target_length=16",
        )

    def make_runs_cls(self) -> str:
        return self.train(
            "runs/cls",
            "task=classify",
            f"init_from={self.need('runs/default')}",
            "data.train=sentiment.tsv",
            "data.val=sentiment.tsv",
            "head.pooling=last_token",
        )

    def make_runs_judge(self) -> str:
        return self.train(
            "runs/judge",
            "task=classify",
            f"init_from={self.need('runs/default')}",
            "data.train=sentiment.tsv",
            "data.val=sentiment.tsv",
        )

    def make_runs_sft(self) -> str:
        return self.train(
            "runs/sft",
            "task=sft",
            f"init_from={self.need('runs/base')}",
            "data.train=chat.jsonl",
            "data.val=chat_val.jsonl",
        )

    def make_runs_reward(self) -> str:
        return self.train(
            "runs/reward",
            "task=reward",
            f"init_from={self.need('runs/sft')}",
            "data.train=pairs.jsonl",
            "data.val=pairs_val.jsonl",
        )

    def make_certificates(self) -> str:
        self_signed(self.root / "server.pem", self.root / "server.key")
        shutil.copy(self.root / "server.pem", self.root / "ca.pem")  # self-signed: its own CA
        return "server.pem"

    def make_serving_models(self) -> str:
        """serving/models.config over an export of every task serving/README.md queries, and
        its batching file; a server on it answers the page's client commands."""
        self.export(self.need("runs/a"), "lm")
        sentiment = self.need("runs/cls")
        nli = self.train(
            "runs/nli",
            "task=classify",
            f"init_from={self.need('runs/mlm')}",
            "data.train=nli.tsv",
            "data.val=nli.tsv",
            "data.pair_column=second",
            "head.pooling=cls",
        )
        ner = self.train(
            "runs/ner",
            "task=token_classify",
            f"init_from={self.need('runs/mlm')}",
            "data.train=train.conll",
            "data.val=dev.conll",
            "task.labels=[O,B-PER,I-PER,B-LOC,I-LOC]",
        )
        qa = self.train(
            "runs/qa",
            "task=extractive_qa",
            f"init_from={self.need('runs/mlm')}",
            "data.train=train-v1.1.json",
            "data.val=dev-v1.1.json",
        )
        # BERT's `[MASK]` (the page's fill-mask example): a WordPiece masked LM.
        mlm = self.train(
            "runs/mlm_wordpiece",
            "model=bert_tiny",
            "task=masked_lm",
            "tokenizer=wordpiece",
            "tokenizer.vocab_size=200",
            "data.path=corpus.txt",
        )
        runs = {
            "chat": self.need("runs/sft"),
            "sentiment": sentiment,
            "nli": nli,
            "reward": self.need("runs/reward"),
            "mlm": mlm,
            "ner": ner,
            "qa": qa,
        }
        for name, run in runs.items():
            self.export(run, name)
        config = (
            "model_config_list {\n"
            + "".join(
                f'  config {{ name: "{name}" base_path: "{self.root / "serving/models" / name}" '
                'model_platform: "tensorflow" }\n'
                for name in ["lm", *runs]
            )
            + "}\n"
        )
        (self.root / "serving/models.config").write_text(config, encoding="utf-8")
        shutil.copy(ROOT / "serving/batching_parameters.txt", self.root / "serving")
        self.serve(["serve", "model_config_file=serving/models.config", *self.server_ports()])
        return "serving/models.config"

    def server_ports(self) -> list[str]:
        return [f"port={self.ports['grpc']}", f"rest_port={self.ports['rest']}"]

    # ----- one command -----------------------------------------------------------------------
    def concrete(self, page: str, argv: list[str]) -> list[str]:
        """The page's command as it runs here: placeholders made, lengths shrunk, ports free."""
        name = argv[0]
        out = []
        for arg in argv:
            arg = arg.replace("../shared/", f"{SHARED}/").replace("=/shared/", "=shared/")
            arg = SMALLER.get(arg, arg)
            if PULLED in arg:
                model = re.search(PULLED + r":([\w.-]+)", arg)[1]
                arg = arg.replace(f"{PULLED}:{model}", self.pulled(model))
            out.append(arg)
        text = " ".join(out)
        for i, arg in enumerate(out):
            found = re.match(r"^(ckpt|init_from)=(DIR|RUN)$", arg)
            if found:
                out[i] = f"{found[1]}={self.resolve(page, text, found[2])}"
        for arg in out:  # runs a page reads (as ckpt=, init_from=, inside a spec) made first
            key, _, value = arg.partition("=")
            if key in ("run_dir", "out"):
                continue  # what this command writes
            for run in re.findall(r"runs/(?:default|a|gpt|sft|reward|judge)(?![\w-])", value):
                if not (self.root / run).exists():
                    self.need(run)
        training = name == "train" or (name == "launch" and "train" in out)
        if training:
            out = with_overrides(out, SHRINK_TRAIN)
            if "task=ppo" in out:
                out = with_overrides(
                    out, {"data.sequence_length": "48", "task.max_new_tokens": "8"}
                )
            if "task=classify" in out and "head.pooling=mean" in out:  # MiniLM on SST-2
                out = with_overrides(out, {"data.sequence_length": "32"})
        if name == "serve":
            ports = {"port": str(self.ports["grpc"]), "rest_port": str(self.ports["rest"])}
            if any(key_of(arg) == "openai_port" for arg in out):
                ports["openai_port"] = str(self.ports["openai"])
            out = with_overrides(out, ports)
        if name == "client":
            out = with_overrides(out, {"port": str(self.ports["grpc"])})
        if "server=localhost:8500" in out:
            out[out.index("server=localhost:8500")] = f"server=localhost:{self.ports['grpc']}"
        if name == "evaluate" and "eval=perplexity" in out:
            out = with_overrides(out, {"eval.max_chars": "20000"})
        if name in ("chat", "generate"):
            out = with_overrides(out, {"max_new_tokens": "4"})
        return out

    def resolve(self, page: str, command: str, placeholder: str) -> str:
        """What a page's `DIR` or `RUN` stands for in this command (the page's prose says)."""
        if "eval=fewshot" in command or command.startswith("chat "):
            return self.pulled("smollm2-135m-instruct")  # a chat model with a long context
        if page == "docs/tasks.md" and ("token_classify" in command or "extractive_qa" in command):
            return self.need("runs/mlm")  # an encoder
        if page == "docs/tasks.md" and placeholder == "RUN":
            return self.need("runs/t5")  # the seq2seq run just above it
        return self.need("runs/default")

    def prepare_files(self, command: list[str]) -> None:
        """train.tsv and friends hold what this command reads: translation pairs for seq2seq
        and BLEU, labelled sentences for classifiers (pages use the same names for both)."""
        pairs = (self.root / "pairs.tsv").read_text(encoding="utf-8")
        sentiment = (self.root / "sentiment.tsv").read_text(encoding="utf-8")
        if "task=seq2seq" in command:
            names, text = ("train.tsv", "dev.tsv"), pairs
        elif "eval=bleu" in command:  # `source<TAB>reference` rows (docs/evaluation.md)
            path = next(a.split("=", 1)[1] for a in command if a.startswith("data.path="))
            names = (path,)
            if "data.reference_column=target" not in command:
                text = pairs.replace("source\ttarget", "source\treference", 1)
            else:
                text = pairs
        else:
            names, text = ("train.tsv", "dev.tsv", "test.tsv"), sentiment
        for name in names:
            (self.root / name).write_text(text, encoding="utf-8")

    def run(self, page: str, argv: list[str]) -> None:
        if argv[0] == "client" or "server=localhost:8500" in argv:
            if page == "serving/README.md":
                self.need("serving/models")
            if self.server is None:
                raise AssertionError(f"{argv}: the page queries a server it never started")
        if any("tls_" in a for a in argv):
            self.need("certificates")
        command = self.concrete(page, argv)
        if command[0] == "serve":
            model = next((a.split("=", 1)[1] for a in command if a.startswith("model_name=")), "lm")
            if "model_config_file=serving/models.config" in command:
                self.need("serving/models")
            self.serve(command, model, tls=any("tls_" in a for a in command))
            return
        self.prepare_files(command)
        stdin = "Hi\n" if command[0] == "chat" else None
        env = None
        if command[0] == "train" and "trainer.strategy=multi_worker_mirrored" in command:
            # One worker of a cluster, with the TF_CONFIG the page exports just before.
            cluster = {"worker": [f"127.0.0.1:{free_port()}"]}
            env = {
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": 0}}
                )
            }
        self.tfllm(command, stdin=stdin, env=env)


def page_commands(page: str) -> list[tuple[str, list[str]]]:
    return [(where, argv) for where, argv in COMMAND_LINES if where.split(":")[0] == page]


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_command_of_a_page_runs(page, tmp_path):
    if not (SHARED / "data" / "tinyshakespeare.txt").exists():
        pytest.skip("../shared/data is not here")
    workspace = Workspace(tmp_path)
    ran, skipped = [], []
    try:
        for where, argv in page_commands(page):
            reason = next((why for key, why in NOT_HERE.items() if key in argv), None)
            if reason:
                skipped.append(where)
                continue
            started = time.monotonic()
            workspace.run(page, argv)
            ran.append((where, round(time.monotonic() - started)))
    finally:
        workspace.stop()
    print(page, "ran", ran, "skipped", skipped)
    assert ran, page


def test_shrinking_keeps_what_a_command_means(tmp_path):
    assert with_overrides(
        ["train", "trainer.max_steps=2000", "a=1"], {"trainer.max_steps": "3"}
    ) == [
        "train",
        "trainer.max_steps=3",
        "a=1",
    ]
    assert with_overrides(["train"], {"x": "1"}) == ["train", "x=1"]
    workspace = Workspace.__new__(Workspace)
    workspace.root, workspace.ports, workspace.made = tmp_path, {"grpc": 1, "rest": 2}, {}
    shrunk = workspace.concrete("README.md", ["train", "attention=local", "attention.window=128"])
    assert shrunk[:3] == ["train", "attention=local", "attention.window=32"]
    assert "trainer.max_steps=3" in shrunk
    assert workspace.concrete("README.md", ["client", "model=lm"])[-1] == "port=1"
    path = workspace.concrete("README.md", ["x", "data.path=../shared/d.txt"])[1].split("=")[1]
    assert os.path.isabs(path)


def test_every_page_with_commands_is_run():
    assert {"README.md", "serving/README.md", "docs/tasks.md", "docs/alignment.md"} <= set(PAGES)
