"""Shared helpers of the benchmarks: loading generated modules, timing, saved bytes,
peak memory, and the hand-written references of the catalog's rules."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import statistics
import sys
import time
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parent.parent


def load_generated(stem: str, class_name: str):
    spec = importlib.util.spec_from_file_location(
        f"bench_{stem}", ROOT / "generated" / f"{stem}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # torch.compile looks a function's globals up by module
    spec.loader.exec_module(module)
    return getattr(module, class_name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved_times(
    functions: dict, device: torch.device, repeats: int, warmup: int = 2
) -> dict[str, list[float]]:
    """Seconds of each call of each function, the functions interleaved repeat by repeat.

    The order rotates from one repeat to the next, so that each function runs after each
    other one equally often: in a fixed order, a function that runs right after another
    on the same weights finds them in cache (a generated model and its hand-written twin
    share their blocks), which made the second of the two up to 8% faster."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    names = list(functions)
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn = functions[name]
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def median_times(
    functions: dict, device: torch.device, repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds of each function, the functions interleaved repeat by repeat."""
    times = interleaved_times(functions, device, repeats, warmup)
    return {name: statistics.median(v) for name, v in times.items()}


def best_times(
    functions: dict, device: torch.device, repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Least seconds of each function over interleaved repeats. On a loaded machine a call
    of a few milliseconds waits for a core at random (a 10 ms time slice is longer than the
    call): the least disturbed call is the steady-state time, where the median is not."""
    times = interleaved_times(functions, device, repeats, warmup)
    return {name: min(v) for name, v in times.items()}


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


class PeakTensorBytes(TorchDispatchMode):
    """The peak of live tensor bytes while the mode is on, forward and backward.

    Every storage an operator returns is counted from its creation until it is freed
    (a weak reference on the storage), so the figure does not depend on the allocator:
    on CPU it plays the part of CUDA's `max_memory_allocated`, counted from the moment
    the mode starts (parameters and inputs made before are not in it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # A view or an in-place result shares an input's storage: no new memory (and a
        # view of a parameter must not count as an allocation that is never freed).
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self._count(t.untyped_storage())
        return out

    def _count(self, storage) -> None:
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self.live:
            return  # already counted (a view of an earlier result)
        self.live[key] = size
        self.now += size
        self.peak = max(self.peak, self.now)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)


def peak_bytes(step, device: torch.device) -> int:
    """Peak memory of `step()` beyond what was allocated before it: CUDA's allocator
    peak on CUDA, live tensor bytes (PeakTensorBytes) elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with PeakTensorBytes() as tracker:
        step()
    return tracker.peak


# Hand-written references: the catalog's rules as a researcher types them (ordinary
# operators), on the blocks and params of a generated network, so that both compute the
# same function. `slots` are what the layer loop carries (the generated `init_slots`);
# `call(block, z)` runs one block (checkpointed in bench/memory.py's baseline).


def call_block(block, z):
    return block(z)


def rule_value(net, name: str):
    """A param of a generated network as its forward reads it (learnable: with grad)."""
    spec = net.LEARNABLE_PARAMS.get(name)
    if spec is not None:
        return spec.value(getattr(net, spec.attr))
    return net.fixed_params[name]


def hand_gd(net, slots, call=call_block):
    t = rule_value(net, "t")
    (x,) = slots
    for block in net.blocks["T"]:
        x = x - t * call(block, x)
    return (x,)


def hand_heavy_ball(net, slots, call=call_block):
    t, beta = rule_value(net, "t"), rule_value(net, "beta")
    x, x_prev = slots
    for block in net.blocks["T"]:
        x, x_prev = x - t * call(block, x) + beta * (x - x_prev), x
    return (x, x_prev)


def hand_nesterov(net, slots, call=call_block):
    t, beta = rule_value(net, "t"), rule_value(net, "beta")
    x, y = slots
    for block in net.blocks["T"]:
        x_next = y - t * call(block, y)
        y = x_next + beta * (x_next - x)
        x = x_next
    return (x, y)


def hand_apg2(net, slots, call=call_block):
    t = rule_value(net, "t")
    x, z = slots
    for k, block in enumerate(net.blocks["T"], start=getattr(net, "start", 0)):
        theta = 2 / (k + 2)
        y = (1 - theta) * x + theta * z
        z = z - (t / theta) * call(block, y)
        x = (1 - theta) * x + theta * z
    return (x, z)


# rule name: (the layers, the slots a stage starts from)
HAND_RULES = {
    "gd": (hand_gd, lambda x: (x,)),
    "heavy_ball": (hand_heavy_ball, lambda x: (x, x)),
    "nesterov": (hand_nesterov, lambda x: (x, x)),
    "apg2": (hand_apg2, lambda x: (x, x)),
}


class HandWrittenNetwork(torch.nn.Module):
    """A generated network's rule typed by hand, on that network's blocks and params."""

    def __init__(self, generated: torch.nn.Module, rule: str, call=call_block):
        super().__init__()
        self.generated = generated  # for its blocks and params only
        self.layers, self.init = HAND_RULES[rule]
        self.call = call

    def forward(self, x):
        return self.layers(self.generated, self.init(x), self.call)[0]


class HandWrittenModel(torch.nn.Module):
    """A generated staged model typed by hand: stem, the stages' rules, transitions
    applied to every carried slot in one batch (one BatchNorm statistic), head."""

    def __init__(self, generated: torch.nn.Module, rule: str):
        super().__init__()
        self.generated = generated
        self.layers, self.init = HAND_RULES[rule]

    def forward(self, x):
        g = self.generated
        slots = self.init(g.stem(x))
        for i, stage in enumerate(g.stages):
            slots = self.layers(stage, slots)
            if i < len(g.transitions):
                slots = g.transitions[i](torch.cat(slots)).chunk(len(slots))
        return g.head(slots[0])


def release_free_memory() -> None:
    """Hand the C library's free heap pages back to the system (glibc's malloc_trim), so
    that a later VmHWM growth counts the memory a step touches, not what it reused."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass
