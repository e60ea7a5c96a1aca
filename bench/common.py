"""Shared helpers of the benchmarks: loading generated modules, timing, saved bytes."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def load_generated(stem: str, class_name: str):
    spec = importlib.util.spec_from_file_location(
        f"bench_{stem}", ROOT / "generated" / f"{stem}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, class_name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_times(
    functions: dict, device: torch.device, repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds of each function, the functions interleaved repeat by repeat."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def saved_bytes(step) -> int:
    """Bytes of the tensors autograd keeps for backward while `step()` builds the graph."""
    seen = {}

    def pack(t):
        seen[(t.data_ptr(), tuple(t.shape), t.dtype)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = step()
    loss.backward()
    return sum(seen.values())


ALLOCATOR_UNAVAILABLE = "allocator setting unavailable (not glibc, or mallopt refused it)"


def keep_large_blocks_mapped() -> bool:
    """Make glibc's malloc keep freed large blocks mapped, as a caching allocator does.

    By default glibc serves every block above 32 MB with a fresh `mmap` and unmaps it on
    free, so each large out-of-place result pays one page fault per 4 KB page on first
    touch (the kernel also zeroes the page). Raising the mmap and trim thresholds serves
    such blocks from the heap and keeps them there, so a freed result's pages are reused
    warm: the cost jemalloc, tcmalloc or CUDA's caching allocator never pay. Process-wide
    and not undoable; returns False where the C library is not glibc or refuses the values.
    The heap grows into the working set over the first calls; timings after a warm-up.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    limit = ctypes.c_int(2**31 - 1)
    return bool(mallopt(m_mmap_threshold, limit)) and bool(mallopt(m_trim_threshold, limit))
