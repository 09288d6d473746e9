"""A plain (non-editable) wheel carries the Hydra configs and works from any directory."""

import os
import pathlib
import subprocess
import sys
import tomllib
import zipfile

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_package():
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        str(pathlib.Path(root).relative_to(REPO)).replace(os.sep, ".")
        for root, _, files in os.walk(REPO / "tfllm")
        if "__init__.py" in files and "__pycache__" not in root
    }
    assert listed == found | {"tfllm.conf"}


def test_wheel_ships_conf_and_finds_it_outside_the_checkout(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("tfllm-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if n.startswith("tfllm/conf/") and n.endswith(".yaml")}
    expected = {
        "tfllm/conf/" + str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")
    }
    assert shipped == expected
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    out = subprocess.run(
        [sys.executable, "-c", "from tfllm.config import config_dir; print(config_dir())"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert pathlib.Path(out.stdout.strip()) == (site / "tfllm" / "conf").resolve()
