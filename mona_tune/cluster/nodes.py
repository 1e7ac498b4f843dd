"""The nodes of the Ray cluster a search runs on, and tasks pinned to one of them."""

from __future__ import annotations

from dataclasses import dataclass

from mona_tune.errors import MonaError


@dataclass(frozen=True)
class Node:
    node_id: str
    ip: str
    cpus: float
    gpus: float

    @property
    def label(self) -> str:
        return f"node {self.ip} ({self.node_id[:8]})"


def nodes_of(table: list[dict]) -> list[Node]:
    """The alive nodes of a node table as ``ray.nodes()`` returns it."""
    out = []
    for n in table:
        if n.get("Alive"):
            res = n.get("Resources", {})
            out.append(Node(n["NodeID"], n.get("NodeManagerAddress", "?"),
                            float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))))
    return out


def alive_nodes() -> list[Node]:
    import ray

    return nodes_of(ray.nodes())


def lost_nodes(before: list[Node]) -> list[Node]:
    """The nodes of ``before`` (alive when the search started) that Ray no longer lists as alive:
    dead (a killed raylet, a lost machine; Ray marks a node dead once its health checks fail) or
    gone from its node table."""
    alive = {n.node_id for n in alive_nodes()}
    return [n for n in before if n.node_id not in alive]


def pinned(fn, node: Node, **options):
    """``fn`` as a Ray task that runs on ``node`` only (never elsewhere, never queued for a node
    that cannot hold it: callers size ``num_cpus`` from the node's own resources)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    strategy = NodeAffinitySchedulingStrategy(node.node_id, soft=False)
    return ray.remote(max_retries=0, **options)(fn).options(scheduling_strategy=strategy)


def gather(refs: dict, timeout: float, what: str) -> dict:
    """``ray.get`` of node -> ref with a deadline: a node that does not answer is named."""
    import ray

    ready, pending = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
    if pending:
        late = [n for n, r in refs.items() if r in pending]
        for r in pending:
            ray.cancel(r, force=True)
        raise MonaError(f"{late[0].label}: {what} did not finish within {timeout:g} s"
                        + (f" (and {len(late) - 1} more nodes)" if len(late) > 1 else ""))
    out = {}
    for node, ref in refs.items():
        try:
            out[node] = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause()
            msg = cause.args[0] if isinstance(cause, MonaError) and cause.args else \
                f"{type(cause).__name__}: {cause}".splitlines()[0]
            raise MonaError(f"{node.label}: {what}: {msg}") from None
    return out
