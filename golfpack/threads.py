"""Per-process CPU thread defaults that stay sane on shared and many-process machines.

Left alone, every torch process starts one OpenMP thread per core. When one command starts
several processes (torchrun ranks, a test suite's subprocesses) or the machine is shared,
threads outnumber cores and each parallel region waits on a descheduled thread: a tiny
training step measured 18.5 s with the default against 1.3 s with one thread per process on
a shared 2-core machine. The default here is the process's share of the cores it may run on:
cores // local processes, where the local process count comes from torchrun
(LOCAL_WORLD_SIZE) or from GOLF_LOCAL_PROCESSES (set by whoever starts siblings), and no
more than its share of the cores left idle by the rest of the machine (1-minute load
average): a busy shared machine gets one thread per process, an idle one all its cores.

Precedence: an explicit --threads option, then GOLF_THREADS, then OMP_NUM_THREADS (the user's
or the launcher's choice, which torch already honours), then the share above.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

ENV_THREADS = "GOLF_THREADS"
ENV_LOCAL_PROCESSES = "GOLF_LOCAL_PROCESSES"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return max(1, os.cpu_count() or 1)


def _positive_int(env: Mapping[str, str], key: str) -> int | None:
    try:
        value = int(env.get(key, ""))
    except ValueError:
        return None
    return value if value >= 1 else None


def local_processes(env: Mapping[str, str] | None = None) -> int:
    """How many processes of this command share the machine (1 when unknown)."""
    env = os.environ if env is None else env
    return max(_positive_int(env, "LOCAL_WORLD_SIZE") or 1,
               _positive_int(env, ENV_LOCAL_PROCESSES) or 1)


def machine_load() -> float:
    """The 1-minute load average (0 where the platform has none)."""
    try:
        return max(0.0, os.getloadavg()[0])
    except (AttributeError, OSError):  # pragma: no cover
        return 0.0


def default_threads(env: Mapping[str, str] | None = None, cores: int | None = None,
                    load: float | None = None) -> int:
    """The thread count a process of this command should use (see the module docstring)."""
    env = os.environ if env is None else env
    for key in (ENV_THREADS, "OMP_NUM_THREADS"):
        value = _positive_int(env, key)
        if value is not None:
            return value
    cores = usable_cores() if cores is None else cores
    load = machine_load() if load is None else load
    local = local_processes(env)
    idle_share = int((cores - load) / local + 0.5)
    return max(1, min(cores // local, idle_share))


def apply_thread_defaults(threads: int | None = None) -> int:
    """Set this process's thread count: `threads` when given, else default_threads().

    Before torch is imported this sets OMP_NUM_THREADS (read once, when OpenMP starts);
    after, it also calls torch.set_num_threads. Returns the count in force.
    """
    n = threads if threads is not None else default_threads()
    os.environ["OMP_NUM_THREADS"] = str(n)  # also what the processes this one starts inherit
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
