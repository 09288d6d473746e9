"""What a command line may make Hydra run, and what a run writes down: overrides that name
arbitrary callables are refused before anything runs, and values read from the environment are
never saved in runs or exports."""

import os

import pytest
from conftest import export_here, run_cli

from tfllm.commands.overrides import refused_hydra_override
from tfllm.runs import load_run_config


@pytest.mark.parametrize(
    "override",
    [
        "+hydra.callbacks.x._target_=shutil.copyfile",
        "+hydra.callbacks.x={_target_:builtins.open,file:PWNED,mode:w}",
        "++hydra.callbacks={x:{_target_:os.makedirs,name:PWNED}}",
        "hydra.launcher._target_=os.system",
        "+hydra.sweeper.sampler._target_=pathlib.Path.touch",
        "++hydra.job_logging.handlers.x.class=shutil.rmtree",
    ],
)
def test_hydra_overrides_naming_callables_are_refused(override):
    problem = refused_hydra_override([override])
    assert problem is not None and problem.startswith("hydra."), problem


@pytest.mark.parametrize(
    "override",
    [
        "hydra/launcher=basic",
        "hydra.job.chdir=false",
        "+hydra.callbacks.log._target_=hydra.experimental.callbacks.LogJobReturnCallback",
        "+hydra.sweeper.sampler._target_=optuna.samplers.TPESampler",
        "++hydra.job_logging.handlers.file.class=logging.FileHandler",
        "~hydra.callbacks",
        "trainer.max_steps=5",
    ],
)
def test_documented_hydra_overrides_pass(override):
    assert refused_hydra_override([override]) is None


def test_a_refused_callback_runs_nothing_through_the_cli(tmp_path):
    target = tmp_path / "PWNED"
    proc = run_cli(
        [
            "train",
            f"+hydra.callbacks.x={{_target_:os.makedirs,name:{target}}}",
            f"run_dir={tmp_path / 'run'}",
        ],
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "tfllm: error: hydra.callbacks.x._target_: 'os.makedirs'" in proc.stderr
    assert not target.exists() and not (tmp_path / "run").exists()


def test_environment_values_are_used_but_never_saved(tiny_corpus, tmp_path, monkeypatch):
    run = tmp_path / "run"
    proc = run_cli(
        [
            "train",
            "debug=fast",
            "trainer.max_steps=2",
            "trainer.callbacks=[]",
            "data.path=${oc.env:TFLLM_TEST_CORPUS}",
            f"run_dir={run}",
        ],
        env={"TFLLM_TEST_CORPUS": str(tiny_corpus)},
    )
    assert proc.returncode == 0
    saved = (run / "config.yaml").read_text()
    assert str(tiny_corpus) not in saved, "the environment's value was written to config.yaml"
    assert load_run_config(str(run))["data"]["path"] == "${oc.env:TFLLM_TEST_CORPUS}"
    assert os.path.exists(run / "checkpoints")  # it trained on the corpus the variable named
    # An export of the run carries the interpolation text, not the value, in assets.extra.
    monkeypatch.setenv("TFLLM_TEST_CORPUS", str(tiny_corpus))
    export_here(run, tmp_path / "exports", "lm", validate=False)
    extra = next((tmp_path / "exports" / "lm").iterdir()) / "assets.extra"
    exported = (extra / "config.yaml").read_text()
    assert str(tiny_corpus) not in exported and "oc.env:TFLLM_TEST_CORPUS" in exported
