"""Commands that look at what is installed or measured: `tfllm list`, `tfllm plugins`,
`tfllm attention`, `tfllm scaling` and `tfllm bench`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from tfllm.commands.common import CommandError, config_dir, key_values


def list_main(argv: Sequence[str]) -> None:
    """`tfllm list [kind]`: registered components and their packages (from the catalog
    cache, `tfllm.commands.catalog`, while nothing installed has changed)."""
    from tfllm.commands.catalog import read_catalog

    catalog = read_catalog()
    kind = argv[0] if argv else None
    if kind is not None and kind not in catalog["kinds"]:
        import difflib

        close = difflib.get_close_matches(kind, catalog["kinds"], n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise CommandError(
            f"Unknown registry kind '{kind}'.{hint} Kinds: {', '.join(catalog['kinds'])}."
        )
    entries = [e for e in catalog["entries"] if kind is None or e[0] == kind]
    width = max((len(f"{k}/{n}") for k, n, _, _ in entries), default=10)
    pkg_width = max((len(p) for _, _, p, _ in entries), default=7)
    for k, n, package, summary in entries:
        print(f"{k + '/' + n:<{width}}  {package:<{pkg_width}}  {summary}")


def plugins_main(argv: Sequence[str]) -> None:
    """`tfllm plugins`: every discovered plugin, its version, what it added, and any failure
    (from the catalog cache while nothing installed has changed; a failure is never cached)."""
    from tfllm import plugins
    from tfllm.commands.catalog import read_catalog

    if argv:
        raise CommandError(f"`tfllm plugins` takes no arguments, got {list(argv)}")
    if plugins.autoload_disabled():
        print(f"plugin autoload is disabled ({plugins.DISABLE_ENV} is set)")
        return
    found = [plugins.PluginStatus(**fields) for fields in read_catalog()["plugins"]]
    if not found:
        print(f"no plugins installed (none declares a '{plugins.GROUP}' entry point)")
        return
    core_conf = config_dir()
    for status in found:
        state = f"loaded, plugin API {status.api_version}" if status.loaded else "FAILED"
        print(
            f"{status.distribution} {status.version}  [{state}]  entry point {status.name} = "
            f"{status.module}"
        )
        if status.components:
            print(f"  components: {', '.join(status.components)}")
        if status.conf_dir:
            print(f"  configs:    {status.conf_dir}")
            shadowed = plugins.shadowed_configs(status.conf_dir, core_conf)
            if shadowed:
                print(f"  shadowed by tfllm's own configs (never used): {', '.join(shadowed)}")
        if status.error:
            print(f"  error:      {status.error}")


def bench_main(argv: Sequence[str]) -> None:
    """`tfllm bench peak [size=4096] [dtype=float32] [repeats=10]`: measure peak FLOP/s."""
    from tfllm.training.flops import measure_peak_flops, save_peak

    if argv[:1] != ["peak"]:
        raise CommandError("usage: tfllm bench peak [size=4096] [dtype=float32] [repeats=10]")
    options = key_values(
        "tfllm bench peak", argv[1:], {"size": "4096", "dtype": "float32", "repeats": "10"}
    )
    try:
        result = measure_peak_flops(int(options["size"]), options["dtype"], int(options["repeats"]))
    except ValueError as e:
        raise CommandError(str(e)) from None
    path = save_peak(result)
    spread = f"{min(result.samples) / 1e9:.1f}-{max(result.samples) / 1e9:.1f}"
    print(
        f"peak {result.dtype} matmul ({result.size}x{result.size}) on {result.device}: "
        f"{result.flops / 1e9:.1f} GFLOP/s median of {len(result.samples)} (range {spread}); "
        f"saved to {path}: training runs now report MFU against it"
    )


def scaling_main(argv: Sequence[str]) -> None:
    """`tfllm scaling chinchilla compute=FLOPS` | `tfllm scaling fit sweep_dir=DIR [out=DIR]`."""
    if argv[:1] == ["chinchilla"]:
        scaling_chinchilla(argv[1:])
    elif argv[:1] == ["fit"]:
        scaling_fit(argv[1:])
    else:
        raise CommandError(
            "usage: tfllm scaling chinchilla compute=FLOPS | tfllm scaling fit sweep_dir=DIR"
        )


def scaling_chinchilla(argv: Sequence[str]) -> None:
    from tfllm.evaluation.scaling_laws import chinchilla

    args = key_values("tfllm scaling chinchilla", argv, {"compute": None})
    try:
        compute = float(args["compute"])
    except ValueError:
        raise CommandError(f"compute={args['compute']} is not a number of FLOPs") from None
    r = chinchilla(compute)
    print(
        f"compute {r['compute_flops']:.3g} FLOPs -> {r['params']:.3g} parameters, "
        f"{r['tokens']:.3g} tokens ({r['tokens_per_param']:.1f} tokens per parameter); "
        f"expected loss {r['expected_loss']:.3f} (Hoffmann et al. 2022, "
        "L = 1.69 + 406.4/N^0.34 + 410.7/D^0.28)"
    )
    print(json.dumps(r))


def scaling_fit(argv: Sequence[str]) -> None:
    from tfllm.evaluation.scaling_laws import fit_power_law, plot_fit, read_sweep

    args = key_values(
        "tfllm scaling fit", argv, {"sweep_dir": None, "out": "", "metric": "val_loss"}
    )
    out = args["out"] or args["sweep_dir"]
    fit = fit_power_law(read_sweep(args["sweep_dir"], args["metric"]))
    os.makedirs(out, exist_ok=True)
    png = plot_fit(fit, os.path.join(out, "scaling_law.png"))
    with open(os.path.join(out, "scaling_law.json"), "w", encoding="utf-8") as f:
        json.dump(fit.as_dict(), f, indent=1)
    print("| run | parameters | tokens | loss | fitted |")
    print("|---|---|---|---|---|")
    for p in fit.points:
        print(
            f"| {os.path.relpath(p.run_dir, args['sweep_dir'])} | {p.params:,} | "
            f"{p.tokens:,} | {p.loss:.4f} | {fit.loss(p.params):.4f} |"
        )
    print(
        f"\nL(N) = {fit.E:.4f} + {fit.A:.4g} / N^{fit.alpha:.4f} "
        f"(rmse {fit.residual_rmse:.4f}); plot {png}"
    )


def attention_main(argv: Sequence[str]) -> None:
    """`tfllm attention ckpt=DIR text="..." [out=attention]`: per-layer, per-head heatmaps."""
    args = key_values("tfllm attention", argv, {"ckpt": None, "text": None, "out": "attention"})
    from tfllm.evaluation.attention_maps import attention_probabilities, plot_attention
    from tfllm.runs import load_run

    model, tokenizer, _ = load_run(args["ckpt"])
    tokens, maps = attention_probabilities(model, tokenizer, args["text"])
    paths = plot_attention(tokens, maps, args["out"])
    layers, heads = maps.shape[:2]
    print(f"{layers} layers x {heads} heads over {len(tokens)} tokens:")
    for path in paths:
        print(path)
