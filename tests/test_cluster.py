"""Issue 20: the pools always fit the cluster, a dead address fails at once, a run without progress
says what it waits for. Pure Python (``hfgi_cli.cluster``): no Ray cluster is started here."""

from __future__ import annotations

import itertools
import re
import socket
import threading
import time
from collections.abc import Sequence

import pytest

from hfgi_cli.cluster import ClusterError, Node, Pools, Watchdog, plan_pools, unreachable

GB = 2**30


def placeable(nodes: Sequence[Node], pools: Pools) -> bool:
    """By brute force: some placement of every actor, and of one task, on the nodes within their
    CPUs, GPUs and memory (what Ray needs to start the pool and feed it)."""
    for actor_nodes in itertools.combinations_with_replacement(range(len(nodes)), pools.actors):
        for task_node in range(len(nodes)):
            used = [{"CPU": 0.0, "GPU": 0.0, "memory": 0.0} for _ in nodes]
            for i in actor_nodes:
                used[i]["CPU"] += pools.cpus_per_actor
                used[i]["GPU"] += pools.gpus_per_actor
                used[i]["memory"] += pools.actor_memory
            used[task_node]["CPU"] += pools.cpus_per_task
            if all(u[k] <= node.get(k, 0.0) + 1e-9 for node, u in zip(nodes, used) for k in u):
                return True
    return False


CLUSTERS = [[{"CPU": float(c), "GPU": float(g), "memory": 16.0 * GB}] for c in (1, 2, 3, 4, 8, 16)
            for g in (0, 1, 2, 4)]
CLUSTERS += [
    [{"CPU": 2.0, "memory": 16.0 * GB}] * 4,  # small nodes: no actor of half the CPUs fits on one
    [{"CPU": 4.0, "GPU": 2.0, "memory": 16.0 * GB}, {"CPU": 8.0, "memory": 16.0 * GB}],
    [{"CPU": 8.0, "memory": 4.0 * GB}],  # memory holds one actor of 3 GB
    [{"GPU": 2.0, "memory": 16.0 * GB}, {"CPU": 2.0, "memory": 16.0 * GB}],  # GPUs on a node without CPUs
]


@pytest.mark.parametrize("device", ["auto", "cpu"])
def test_pools_always_fit_or_are_refused_with_the_most_that_fit(device: str) -> None:
    """Over a grid of clusters and --workers: the plan places every actor and one task at once, an
    explicit --workers is kept or refused (exit 2: ClusterError) naming the most that fit, and that
    most is accepted while one more is refused (both sides of the line)."""
    checked = refused = 0
    for nodes, workers in itertools.product(CLUSTERS, (None, 1, 2, 3, 4, 8)):
        try:
            pools = plan_pools(nodes, device, workers, None, actor_memory=3 * GB)
        except ClusterError as exc:
            assert workers is not None, (nodes, exc)
            most = int(str(exc).split("holds at most ")[1].split()[0])
            assert most < workers and str(exc).startswith(f"--workers {workers}: the Ray cluster (")
            assert placeable(nodes, plan_pools(nodes, device, most, None, actor_memory=3 * GB))
            with pytest.raises(ClusterError, match="holds at most"):
                plan_pools(nodes, device, most + 1, None, actor_memory=3 * GB)
            refused += 1
            continue
        assert placeable(nodes, pools), (nodes, workers, pools)
        assert workers is None or pools.actors == workers
        assert pools.device == ("cuda" if device == "auto" and any(n.get("GPU") for n in nodes) else "cpu")
        assert pools.cpu_tasks >= 1
        checked += 1
    assert checked > 50 and refused > 20  # both sides of the line, many times


def test_the_issue_s_clusters() -> None:
    """2 actors on 2 CPUs (the run that waited forever), 8 on 4 CPUs, 3 on 2 GPUs with 2 CPUs: refused
    with the reason; the defaults fit."""
    two = [{"CPU": 2.0, "memory": 16.0 * GB}]
    with pytest.raises(ClusterError) as exc:
        plan_pools(two, "auto", 2, None, actor_memory=3 * GB)
    assert str(exc.value) == ("--workers 2: the Ray cluster (1 node, 2 CPUs, at most 16.0 GB of memory on a node) "
                              "holds at most 1 model actor beside a prepare or write task")
    with pytest.raises(ClusterError, match="holds at most 3 model actors"):
        plan_pools([{"CPU": 4.0}], "auto", 8, None)
    with pytest.raises(ClusterError, match=r"--workers 3: the Ray cluster \(1 node, 2 CPUs, 2 GPUs\) holds at most 2"):
        plan_pools([{"CPU": 2.0, "GPU": 2.0}], "auto", 3, None)
    default = plan_pools(two, "auto", None, None, actor_memory=3 * GB)
    assert (default.actors, default.cpus_per_actor, default.cpu_tasks) == (1, 1.0, 1)
    with pytest.raises(ClusterError, match=r"a model actor \(3.0 GB of memory\) and a prepare task do not fit"):
        plan_pools([{"CPU": 2.0, "memory": 2.0 * GB}], "auto", None, None, actor_memory=3 * GB)


def test_pools_follow_the_cluster() -> None:
    two_cores = plan_pools([{"CPU": 2.0}], "auto", None, None)
    assert (two_cores.actors, two_cores.cpus_per_actor, two_cores.cpu_tasks, two_cores.device) == (1, 1, 1, "cpu")
    assert two_cores.batch_size == 1  # as on one machine: the same floating point
    gpus = plan_pools([{"CPU": 32.0, "GPU": 4.0}], "auto", None, None)
    assert (gpus.actors, gpus.gpus_per_actor, gpus.cpu_tasks, gpus.device, gpus.batch_size) == (4, 1, 28, "cuda", 8)
    assert plan_pools([{"CPU": 32.0, "GPU": 4.0}], "cpu", None, None).device == "cpu"
    big_cpu = plan_pools([{"CPU": 64.0}], "auto", None, None)
    assert (big_cpu.actors, big_cpu.cpus_per_actor, big_cpu.cpu_tasks) == (4, 8.0, 32)
    one_core = plan_pools([{"CPU": 1.0}], "auto", None, None)  # the actor and a task share it
    assert one_core.cpus_per_actor + one_core.cpus_per_task <= 1
    all_gpu = plan_pools([{"CPU": 2.0, "GPU": 2.0}], "auto", None, None)
    assert all_gpu.cpus_per_actor == 0 and all_gpu.cpu_tasks == 2
    small_nodes = plan_pools([{"CPU": 2.0}] * 4, "auto", None, None)  # half of 8 CPUs is no node's size
    assert (small_nodes.actors, small_nodes.cpus_per_actor) == (1, 2.0)
    with pytest.raises(ClusterError, match="no GPU"):
        plan_pools([{"CPU": 8.0}], "cuda", None, None)


def test_a_dead_address_is_named_at_once() -> None:
    with socket.socket() as listener:  # a port that was free a moment ago: nothing listens there now
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    start = time.monotonic()
    assert unreachable(f"127.0.0.1:{port}") == "Connection refused"
    assert unreachable(f"ray://127.0.0.1:{port}") == "Connection refused"
    assert unreachable("nosuch.invalid:6379").startswith("unknown host nosuch.invalid")
    assert time.monotonic() - start < 30  # a bound against hanging, not a speed check
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert unreachable(f"127.0.0.1:{server.getsockname()[1]}") is None
    assert unreachable("auto") is None and unreachable("local") is None  # Ray resolves these itself


class FakeRay:
    """What the watchdog asks Ray: the cluster's resources (no autoscaler, no actor table here)."""

    def available_resources(self) -> dict[str, float]:
        return {"CPU": 0.0}

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 2.0, "memory": 4.0 * GB}

    def get_runtime_context(self) -> None:
        raise RuntimeError("not connected")


def test_watchdog_speaks_when_nothing_finishes_and_is_quiet_otherwise() -> None:
    lines: list[str] = []
    with Watchdog(FakeRay(), lines.append, after=1.0, every=0.5) as watchdog:
        deadline = time.monotonic() + 30
        while len(lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(lines) == 2
        assert re.match(r"note: --ray: no input finished for \d+ s; free: 0 of 2 CPU, 0.0 GB of 4.0 GB memory$",
                        lines[0]), lines[0]
        progressing = threading.Event()

        def finish_inputs() -> None:  # an input every 0.1 s: never a second without one
            while not progressing.wait(0.1):
                watchdog.progressed()

        feeder = threading.Thread(target=finish_inputs)
        watchdog.progressed()
        before = len(lines)
        feeder.start()
        time.sleep(1.5)
        progressing.set()
        feeder.join()
        assert len(lines) == before
