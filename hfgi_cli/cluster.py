"""What a Ray cluster can run, and what it waits for (``hfgi invert|edit --ray``; ``ray.py`` runs the job).

Ray schedules what fits and waits for the rest, silently: an actor that finds no node with room
never starts, a pool whose actors take every CPU leaves none for the tasks that feed them, and a
dead address is retried for minutes. So the pools are planned from the nodes' resources and checked
to fit (actors and at least one task at once) before anything is submitted, the address is tried
first, and a run where nothing finishes for a while says on stderr what Ray is waiting for.

Pure Python: Ray is passed in where it is needed, so the CLI checks an address before it loads
torch or a model.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .reasons import short_reason


class ClusterError(ValueError):
    """The cluster cannot run this job as asked (cannot be joined, no GPU for --device cuda, pools
    that do not fit)."""


# ----------------------------------------------------------------------------------------- pools
@dataclass(frozen=True)
class Pools:
    """How many model actors and CPU tasks a run uses, from the cluster's resources."""

    actors: int
    """Model actors: one per GPU (``--workers``); CPU actors on a cluster without GPUs."""
    gpus_per_actor: float
    cpus_per_actor: float
    """The CPU actors' torch threads (Ray sets OMP_NUM_THREADS from it)."""
    cpu_tasks: int
    """Concurrent prepare tasks, and as many write tasks: the CPUs the actors leave."""
    device: str
    batch_size: int
    """Faces per model call, and inputs per actor batch."""
    cpus_per_task: float = 1.0
    actor_memory: float = 0.0
    """Host memory each actor asks Ray for (bytes; ``_actor_memory``)."""


Node = Mapping[str, float]
"""One node's resources, as Ray counts them (``CPU``, ``GPU``, ``memory`` in bytes)."""


def _room(node: Node, n: int, cpus: float, gpus: float, memory: float, reserved_cpus: float = 0.0) -> int:
    """How many of ``n`` actors (each ``cpus``, ``gpus``, ``memory``) fit on ``node`` beside
    ``reserved_cpus``."""
    free = node.get("CPU", 0.0) - reserved_cpus
    if free < -1e-9:
        return -1
    limits = [n]
    for need, have in ((cpus, free), (gpus, node.get("GPU", 0.0)), (memory, node.get("memory", 0.0))):
        if need > 0:
            limits.append(math.floor(have / need + 1e-9))
    return max(0, min(limits))


def fits(nodes: Sequence[Node], pools: Pools) -> bool:
    """Whether all the actors and at least one CPU task can run at once, each on one node.

    Ray schedules what fits and waits for the rest: an actor that finds no room never starts, and a
    pool whose actors take every CPU leaves none for the tasks that feed them; either run waits
    forever."""
    room = [_room(node, pools.actors, pools.cpus_per_actor, pools.gpus_per_actor, pools.actor_memory)
            for node in nodes]
    for j, node in enumerate(nodes):
        beside_task = _room(node, pools.actors, pools.cpus_per_actor, pools.gpus_per_actor, pools.actor_memory,
                            pools.cpus_per_task)
        if beside_task >= 0 and sum(room) - room[j] + beside_task >= pools.actors:
            return True
    return False


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def _describe(nodes: Sequence[Node], memory: bool) -> str:
    cpus = sum(n.get("CPU", 0.0) for n in nodes)
    gpus = sum(n.get("GPU", 0.0) for n in nodes)
    text = f"{len(nodes)} node{'s' * (len(nodes) != 1)}, {cpus:g} CPU{'s' * (cpus != 1)}"
    text += f", {gpus:g} GPU{'s' * (gpus != 1)}" if gpus else ""
    if memory:
        text += f", at most {_gb(max(n.get('memory', 0.0) for n in nodes))} of memory on a node"
    return text


def plan_pools(nodes: Sequence[Node], device: str, workers: int | None, batch_size: int | None,
               actor_memory: float = 0.0) -> Pools:
    """Pools that fit the cluster (``fits``), from the resources of its nodes (``ray.nodes()``).

    GPUs: one actor per GPU (1 CPU each, none when that would leave no CPU for a task), the other
    CPUs prepare and write. No GPU (or --device cpu): half the CPUs run the model, in actors of up
    to 8 threads (fewer where the nodes are smaller), the other half prepare and write. An explicit
    ``workers`` that cannot fit beside one task is refused (ClusterError, naming the most that fit),
    never shrunk: the caller asked for it. ``actor_memory``: what each actor asks Ray for (bytes).
    """
    nodes = [n for n in nodes if n.get("CPU", 0.0) > 0 or n.get("GPU", 0.0) > 0]
    cpus, gpus = sum(n.get("CPU", 0.0) for n in nodes), int(sum(n.get("GPU", 0.0) for n in nodes))
    if device.startswith("cuda") and gpus == 0:
        raise ClusterError(f"--device {device}: the Ray cluster has no GPU")
    if device == "mps":
        raise ClusterError("--device mps: Ray actors run on CUDA GPUs or CPUs; use auto, cuda or cpu")
    if not any(n.get("CPU", 0.0) > 0 for n in nodes):
        raise ClusterError("--ray: the Ray cluster has no CPU for the prepare and write tasks")
    if device != "cpu" and gpus > 0:
        def gpu_plan(actors: int, cpus_per_actor: float) -> Pools:
            left = max(1, int(cpus - actors * cpus_per_actor))
            return Pools(actors, 1.0, cpus_per_actor, left, "cuda", batch_size or 8, actor_memory=actor_memory)

        candidates = [gpu_plan(n, c) for n in ([workers] if workers else range(gpus, 0, -1)) for c in (1.0, 0.0)]
        largest = [gpu_plan(n, 0.0) for n in range(max(gpus, workers or 0), 0, -1)]
    elif cpus < 2:  # one core: the actor and one task share it
        def cpu_plan(actors: int, threads: float) -> Pools:
            return Pools(actors, 0.0, threads, 1, "cpu", batch_size or 1, cpus_per_task=0.5,
                         actor_memory=actor_memory)

        candidates = [cpu_plan(workers or 1, 0.5)]
        largest = [cpu_plan(1, 0.5)]
    else:
        def cpu_plan(actors: int, threads: float) -> Pools:
            left = max(1, int(cpus - actors * threads))
            return Pools(actors, 0.0, threads, left, "cpu", batch_size or 1, actor_memory=actor_memory)

        model_cpus = max(1, int(cpus) // 2)
        counts = [workers] if workers else range(max(1, -(-model_cpus // 8)), 0, -1)
        candidates = [cpu_plan(n, float(t)) for n in counts for t in range(max(1, model_cpus // n), 0, -1)]
        largest = [cpu_plan(n, 1.0) for n in range(max(int(cpus), workers or 0), 0, -1)]
    for pools in candidates:  # the first that fits: the most actors, then the most threads each
        if fits(nodes, pools):
            return pools
    most = next((p.actors for p in largest if fits(nodes, p)), 0)
    if most == 0:
        raise ClusterError(f"--ray: a model actor ({_gb(actor_memory)} of memory) and a prepare task do not fit "
                           f"on the Ray cluster ({_describe(nodes, True)})")
    cluster = _describe(nodes, actor_memory > 0)
    raise ClusterError(f"--workers {workers}: the Ray cluster ({cluster}) holds at most {most} model "
                       f"actor{'s' * (most != 1)} beside a prepare or write task")


# ----------------------------------------------------------------------------------------- joining
def unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why nothing answers at ``address`` (``host:port``, or ``ray://host:port``), or None: Ray
    itself retries a dead address for minutes, printing native warnings, before it gives up."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None  # "auto", "local", or a form Ray reads its own way
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except socket.gaierror as exc:
        return f"unknown host {host} ({exc.strerror})"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)


def connect(ray: Any, address: str | None) -> bool:
    """Join ``address`` (else $RAY_ADDRESS, else a cluster started on this machine with ``ray
    start``), or start a local one for the run; returns whether this call started the connection."""
    if ray.is_initialized():
        return False
    where = address or os.environ.get("RAY_ADDRESS")
    reason = unreachable(where) if where else None
    if reason is not None:
        raise ClusterError(f"--ray: cannot join {where}: {reason}")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError) as exc:  # no cluster at that address, or it refused us
        where = where or "a local cluster"
        raise ClusterError(f"--ray: cannot join {where}: {short_reason(exc)}") from None
    return True


# ----------------------------------------------------------------------------------------- watchdog
STALL_AFTER = 60.0
"""Seconds without a finished input before the driver says what Ray is waiting for."""
STALL_EVERY = 30.0
"""And then again at this interval (the CLI's status interval), while nothing finishes."""


def _resources(bundle: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {_gb(v)}" if k == "memory" else f"{k} {v:g}" for k, v in sorted(bundle.items())
                     if k in ("CPU", "GPU", "memory") and v)


def waiting_for(ray: Any) -> str:
    """What the cluster is waiting for, in one line: the resource requests it cannot place yet
    (tasks and actors, of every job), what is free, and the state of this job's model actors."""
    parts = []
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        demand = get_cluster_status(ray.get_runtime_context().gcs_address, timeout=10).resource_demands
        requests = [f"{r.count} x {{{_resources(r.bundle)}}}" for d in demand.ray_task_actor_demand
                    for r in d.bundles_by_count]
        parts.append(f"requests Ray cannot place yet: {'; '.join(requests)}" if requests else
                     "no request waits for resources (the stages are working)")
    except Exception:  # an API of Ray's autoscaler: without it, the resources still say much
        pass
    free, total = ray.available_resources(), ray.cluster_resources()
    parts.append("free: " + ", ".join(
        f"{_gb(free.get(k, 0.0))} of {_gb(total[k])} memory" if k == "memory" else
        f"{free.get(k, 0.0):g} of {total[k]:g} {k}" for k in ("CPU", "GPU", "memory") if total.get(k)))
    try:
        job = ray.get_runtime_context().get_job_id()
        states = Counter(info["State"] for info in ray._private.state.actors().values()
                         if info["JobID"] == job and info["ActorClassName"].startswith("MapWorker(")
                         and info["State"] != "DEAD")  # those of this job's earlier datasets, or replaced
        parts.append("model actors: " + (", ".join(f"{n} {state.lower().replace('_', ' ')}"
                                                   for state, n in sorted(states.items())) or "none yet"))
    except Exception:  # Ray's actor table is not a public API
        pass
    return "; ".join(parts)


class Watchdog:
    """A thread that says (``say``, one line) what Ray is waiting for when no input has finished
    for ``after`` seconds, and again every ``every`` seconds while that lasts: a run that makes no
    progress is never silent."""

    def __init__(self, ray: Any, say: Callable[[str], None], after: float, every: float) -> None:
        self.ray, self.say, self.after, self.every = ray, say, after, every
        self.last = time.monotonic()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True, name="hfgi-ray-watchdog")

    def __enter__(self) -> Watchdog:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def progressed(self) -> None:
        self.last = time.monotonic()

    def _watch(self) -> None:
        said = -math.inf
        while not self.done.wait(min(1.0, self.after, self.every)):
            now = time.monotonic()
            idle = now - self.last
            if idle >= self.after and now - max(said, self.last) >= min(self.every, idle):
                said = now
                try:
                    line = waiting_for(self.ray)
                except Exception as exc:  # the cluster going away as the run ends
                    line = f"the cluster cannot be asked ({exc.__class__.__name__}: {exc})"
                self.say(f"note: --ray: no input finished for {idle:.0f} s; {line}")


def say_on_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
