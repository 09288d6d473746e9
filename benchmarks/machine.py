"""What the benchmark tables say about the machine they ran on (imported by the scripts here,
which put this folder last on `sys.path`: after the installed packages, so
benchmarks/tokenizers.py never shadows the `tokenizers` package)."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The instruction-set flags that decide which matmul kernels are fast (AVX-512, bf16,
    VNNI, AMX), of those the CPU has."""
    try:
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
    except OSError:
        return []
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")
    return [w for w in wanted if w in words]
