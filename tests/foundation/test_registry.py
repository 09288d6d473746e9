"""The registry and entry-point plugin discovery, with real distributions on sys.path."""

import copy
import sys
import textwrap
import warnings

import pytest

from tfllm import plugins, registry
from tfllm.registry import ConfigError, RegistryError


@pytest.fixture
def clean_registry():
    saved = copy.deepcopy({k: dict(v) for k, v in registry._ENTRIES.items()})
    saved_status, saved_flag = list(plugins._status), plugins._autoloaded
    yield
    registry._ENTRIES.clear()
    registry._ENTRIES.update(saved)
    plugins._status[:] = saved_status
    plugins._autoloaded = saved_flag


def install_distribution(root, dist, module, body, entry=None):
    """Write an importable module plus a dist-info declaring a `tfllm.plugins` entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[tfllm.plugins]\n{entry or module} = {module}\n")


def test_unknown_names_list_what_exists_and_suggest(clean_registry):
    with pytest.raises(RegistryError) as e:
        registry.get("positional", "ropee")
    msg = str(e.value)
    assert (
        "Did you mean 'rope'" in msg and "alibi, learned, none, relative, rope, sinusoidal" in msg
    )
    assert "tfllm list positional" in msg
    with pytest.raises(RegistryError, match="Unknown registry kind 'positionl'"):
        registry.get("positionl", "rope")


def test_duplicate_registration_is_an_error_unless_overriding(clean_registry):
    with pytest.raises(RegistryError, match="already registered by package 'tfllm'"):

        @registry.register("attention", "mha")
        class Other:  # noqa: F841
            pass

    @registry.register("attention", "mha", override=True)
    class Replacement:
        pass

    assert registry.get("attention", "mha") is Replacement


def test_build_passes_context_only_where_the_constructor_takes_it():
    layer = registry.build(
        "positional", {"name": "alibi"}, context={"num_heads": 4, "hidden_dim": 16, "head_dim": 4}
    )
    assert layer.num_heads == 4
    with pytest.raises(ConfigError, match="positional.slopes: positional 'alibi' takes no"):
        registry.build("positional", {"name": "alibi", "slopes": [1]}, {"num_heads": 4})
    with pytest.raises(ConfigError, match="needs 'num_heads'"):
        registry.build("positional", {"name": "alibi"})
    with pytest.raises(ConfigError, match="attention.name is missing"):
        registry.build("attention", {"num_heads": 2})


def test_registered_keras_classes_are_serializable():
    import keras

    cls = registry.get("ffn", "swiglu")
    assert keras.saving.get_registered_object("tfllm>SwiGLU") is cls


def test_plugins_load_from_entry_points_and_failures_name_the_distribution(
    tmp_path, monkeypatch, clean_registry
):
    install_distribution(
        tmp_path,
        "tfllm-good-plugin",
        "good_plugin",
        """
        import keras
        from tfllm.registry import register

        TFLLM_API_VERSION = 1

        @register("norm", "goodnorm")
        class GoodNorm(keras.layers.Layer):
            '''A plugin norm.'''
    """,
    )
    install_distribution(
        tmp_path,
        "tfllm-broken-plugin",
        "broken_plugin",
        """
        raise ImportError("needs a library that is not installed")
    """,
    )
    install_distribution(
        tmp_path,
        "tfllm-clashing-plugin",
        "clashing_plugin",
        """
        import keras
        from tfllm.registry import register

        TFLLM_API_VERSION = 1

        @register("ffn", "clashing_ffn")
        class Fine(keras.layers.Layer):
            pass

        @keras.saving.register_keras_serializable(package="clashing")
        class Helper(keras.layers.Layer):
            pass

        @register("attention", "mha")
        class NotMha:
            pass
    """,
    )
    install_distribution(
        tmp_path,
        "tfllm-exiting-plugin",
        "exiting_plugin",
        """
        import sys

        sys.exit(0)
    """,
    )
    install_distribution(
        tmp_path,
        "tfllm-future-plugin",
        "future_plugin",
        """
        from tfllm.registry import register

        TFLLM_API_VERSION = 99

        @register("ffn", "future_ffn")
        class Future:
            pass
    """,
    )
    install_distribution(
        tmp_path,
        "tfllm-undeclared-plugin",
        "undeclared_plugin",
        """
        from tfllm.registry import register

        @register("ffn", "undeclared_ffn")
        class Undeclared:
            pass
    """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.DISABLE_ENV, raising=False)
    plugins._autoloaded = False
    plugins._status.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        statuses = {s.distribution: s for s in plugins.autoload()}
    messages = [str(w.message) for w in caught]
    assert statuses["tfllm-good-plugin"].loaded
    assert statuses["tfllm-good-plugin"].components == ["norm/goodnorm"]
    assert statuses["tfllm-good-plugin"].api_version == 1
    entry = registry.get_entry("norm", "goodnorm")
    assert entry.package == "tfllm-good-plugin"
    assert not statuses["tfllm-broken-plugin"].loaded
    assert any("tfllm-broken-plugin" in m and "not installed" in m for m in messages)
    assert not statuses["tfllm-clashing-plugin"].loaded
    assert any("tfllm-clashing-plugin" in m and "already registered" in m for m in messages)
    # A failed plugin leaves nothing behind: its first, valid registration was rolled back.
    assert statuses["tfllm-clashing-plugin"].components == []
    with pytest.raises(RegistryError, match="Plugin 'tfllm-clashing-plugin' was not loaded"):
        registry.get("ffn", "clashing_ffn")
    import keras

    left = [name for name in keras.saving.get_custom_objects() if "lashing" in name]
    assert left == [], f"the refused plugin left Keras custom objects behind: {left}"
    # A plugin that exits at import is contained like any other failure.
    exiting = statuses["tfllm-exiting-plugin"]
    assert not exiting.loaded and exiting.error.startswith("SystemExit")
    assert any("tfllm-exiting-plugin" in m and "failed to load" in m for m in messages)
    future = statuses["tfllm-future-plugin"]
    assert not future.loaded and future.components == []
    assert "targets tfllm plugin API version 99" in future.error
    assert "supports version 1" in future.error
    assert any("tfllm-future-plugin" in m and "was refused" in m for m in messages)
    undeclared = statuses["tfllm-undeclared-plugin"]
    assert not undeclared.loaded and "does not declare TFLLM_API_VERSION" in undeclared.error
    assert registry.get("attention", "mha").__module__ == "tfllm.components.attention.mha"
    assert registry.get("ffn", "mlp")  # everything else keeps working
    for module in (
        "good_plugin",
        "clashing_plugin",
        "exiting_plugin",
        "future_plugin",
        "undeclared_plugin",
    ):
        sys.modules.pop(module, None)


def test_autoload_can_be_disabled(tmp_path, monkeypatch, clean_registry):
    install_distribution(
        tmp_path,
        "tfllm-off-plugin",
        "off_plugin",
        """
        from tfllm.registry import register

        @register("norm", "offnorm")
        class OffNorm:
            pass
    """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.DISABLE_ENV, "1")
    plugins._autoloaded = False
    assert plugins.autoload() == list(plugins._status)
    with pytest.raises(RegistryError):
        registry.get("norm", "offnorm")


def test_a_plugin_conf_folder_joins_the_hydra_search_path(tmp_path, monkeypatch, clean_registry):
    from tfllm.config import compose, config_dir, with_plugin_search_path

    package = tmp_path / "conf_plugin"
    (package / "conf" / "attention").mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from tfllm.registry import register

            TFLLM_API_VERSION = 1

            @register("attention", "fancy")
            class Fancy:
                def __init__(self, hidden_dim, num_heads, sharpness: float = 1.0):
                    pass
            """
        )
    )
    (package / "conf" / "attention" / "fancy.yaml").write_text("name: fancy\nsharpness: 2.0\n")
    (package / "conf" / "attention" / "mha.yaml").write_text("name: fancy\n")  # shadowed
    info = tmp_path / "tfllm_conf_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tfllm-conf-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tfllm.plugins]\nconf_plugin = conf_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.DISABLE_ENV, raising=False)

    conf = f"file://{(package / 'conf').resolve()}"
    assert conf in plugins.config_search_path()
    merged = with_plugin_search_path(["attention=fancy", "hydra.searchpath=[file:///mine]"])
    assert merged[0] == "attention=fancy"
    assert merged[-1].startswith("hydra.searchpath=[file:///mine,") and conf in merged[-1]
    cfg = compose("config", ["attention=fancy", "run_dir=x"])
    assert cfg["attention"] == {"name": "fancy", "sharpness": 2.0}
    # tfllm's own option wins over a plugin file of the same name, and that is reported.
    assert compose("config", ["attention=mha", "run_dir=x"])["attention"]["name"] == "mha"
    shadowed = plugins.shadowed_configs(str(package / "conf"), config_dir())
    assert shadowed == ["attention/mha.yaml"]

    monkeypatch.setenv(plugins.DISABLE_ENV, "1")
    assert plugins.config_search_path() == []
    sys.modules.pop("conf_plugin", None)


def test_plugins_command_reports_loaded_and_failed_plugins(
    tmp_path, monkeypatch, clean_registry, capsys
):
    from tfllm.commands.inspect import plugins_main as plugins_command

    install_distribution(
        tmp_path,
        "tfllm-listed-plugin",
        "listed_plugin",
        """
        from tfllm.registry import register

        TFLLM_API_VERSION = 1

        @register("ffn", "listed_ffn")
        class Listed:
            '''A listed ffn.'''
    """,
    )
    install_distribution(
        tmp_path,
        "tfllm-old-plugin",
        "old_plugin",
        """
        TFLLM_API_VERSION = 0
    """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(plugins.DISABLE_ENV, raising=False)
    plugins._autoloaded = False
    plugins._status.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plugins_command([])
    out = capsys.readouterr().out
    assert "tfllm-listed-plugin 0.3  [loaded, plugin API 1]" in out
    assert "components: ffn/listed_ffn" in out
    assert "tfllm-old-plugin 0.3  [FAILED]" in out
    assert "targets tfllm plugin API version 0" in out
    monkeypatch.setenv(plugins.DISABLE_ENV, "1")
    plugins_command([])
    assert "plugin autoload is disabled" in capsys.readouterr().out
    for module in ("listed_plugin", "old_plugin"):
        sys.modules.pop(module, None)


def test_a_plugin_that_exits_or_ships_broken_yaml_is_one_line_naming_it(tmp_path):
    """Through the real command line: `sys.exit(0)` in a plugin does not end `tfllm list`
    silently, and a plugin config that is not YAML is one error naming the file and plugin."""
    from conftest import run_cli

    install_distribution(
        tmp_path, "tfllm-exiting-plugin", "exiting_plugin", "import sys\nsys.exit(0)\n"
    )
    package = tmp_path / "yaml_plugin"
    (package / "conf" / "attention").mkdir(parents=True)
    (package / "__init__.py").write_text("TFLLM_API_VERSION = 1\n")
    (package / "conf" / "attention" / "broken.yaml").write_text("name: mha\nnum_heads: [1, 2\n")
    info = tmp_path / "tfllm_yaml_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tfllm-yaml-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tfllm.plugins]\nyaml_plugin = yaml_plugin\n")
    import os

    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, "TFLLM_DISABLE_PLUGIN_AUTOLOAD": ""}

    listed = run_cli(["list", "ffn"], env=env, check=False)
    assert listed.returncode == 0 and "swiglu" in listed.stdout, listed.stderr[-2000:]
    assert "tfllm-exiting-plugin" in listed.stderr and "SystemExit" in listed.stderr

    proc = run_cli(
        ["train", "attention=broken", f"run_dir={tmp_path / 'run'}"], env=env, check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tfllm: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "broken.yaml, line 3" in errors[0] and "plugin 'tfllm-yaml-plugin'" in errors[0]
    assert not (tmp_path / "run").exists()
