"""`tfllm list` reads a cached catalog of the registry while nothing installed changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import run_cli


def test_list_is_cached_and_equals_the_registry(tmp_path):
    env = {"TFLLM_CACHE": str(tmp_path)}
    first = run_cli(["list"], env=env)
    assert (tmp_path / "catalog.json").exists()
    script = (
        "import sys\n"
        "from tfllm import cli\n"
        "cli.main(['list'])\n"
        "assert 'tensorflow' not in sys.modules, 'the cached listing loaded TensorFlow'\n"
    )
    second = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout == first.stdout
    # The registry of a fresh process (this one holds what other tests registered).
    names = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tfllm import registry\n"
            "print('\\n'.join(f'{e.kind}/{e.name}' for e in registry.list_entries()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [line.split()[0] for line in first.stdout.splitlines()] == names
    bad = run_cli(["list", "atention"], env=env, check=False)
    assert bad.returncode == 2 and "Did you mean 'attention'?" in bad.stderr


def test_a_changed_install_rebuilds_the_catalog(tmp_path, monkeypatch):
    from tfllm.commands import catalog

    monkeypatch.setenv("TFLLM_CACHE", str(tmp_path))
    built = catalog.read_catalog()
    path = tmp_path / catalog.CATALOG_FILE
    stale = json.loads(path.read_text())
    stale["state"][0] = "0.0.0-older"
    stale["entries"] = [["attention", "gone", "old-plugin", ""]]
    path.write_text(json.dumps(stale))
    again = catalog.read_catalog()
    assert again["entries"] == built["entries"] and again["state"] == built["state"]
