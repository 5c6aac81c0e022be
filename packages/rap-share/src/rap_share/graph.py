"""The preprocessing graph and its mapping onto GPUs.

Each script line becomes a :class:`Node` (op, parameters, input, output column); edges
follow column names, the last writer winning. The final writer of every written column is a
model feature: a float column is a **dense** feature, an integer column with a bounded id range
(after sigrid_hash, bucketize, mapid, ...) is a **sparse** feature with its own embedding
table of that many rows. Widths (values per row, what the cost model reads) start at 1 for
raw columns and follow :func:`rap_share.ops.out_width`.

Mapping (RAP section 3): dense chains run data-parallel on every GPU for its local batch
``B``; a sparse chain runs only on the GPU that owns the feature's table, for the global batch
``B * n_gpus`` (table-wise sharding), so no input all-to-all is needed. A node feeding both
kinds, or sparse features on several GPUs, is duplicated into each :class:`Task` list::

    int_0 -> fill_null -> logit           dense: every GPU, batch B
                       \\-> bucketize      sparse: owner of table "b_0", batch B*n
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rap_share import ops as _ops
from rap_share.errors import PlanError
from rap_share.script import Statement

RAW_INT_PREFIXES = ("int_", "cat_", "label")


@dataclass(frozen=True)
class Node:
    id: int
    op: str
    params: dict
    source: int | str  # producing node id, or a raw column name
    out: str
    line: int
    in_width: float
    width: float
    is_float: bool
    id_range: int | None


@dataclass(frozen=True)
class Feature:
    name: str
    node: int
    kind: str  # "dense" | "sparse"
    table_size: int | None
    width: float


@dataclass(frozen=True)
class Task:
    """One node instance on one GPU: ``batch`` is "local" (B rows) or "global" (B * n rows)."""

    node: Node
    batch: str

    @property
    def key(self) -> str:
        return f"{self.batch[0]}{self.node.id}"

    @property
    def kind(self) -> str:
        """What fuses with what: same op on the same batch."""
        return f"{self.node.op}@{self.batch}"


@dataclass
class GpuGraph:
    gpu: int
    tasks: list[Task]  # topological (script) order
    preds: dict[str, list[str]]  # task key -> producing task keys
    dense_features: list[Feature]
    sparse_features: list[Feature]  # owned by this GPU
    raw_local: list[str] = field(default_factory=list)  # raw columns read for B rows
    raw_global: list[str] = field(default_factory=list)  # raw columns read for B * n rows

    def subgraph(self, batch: str) -> list[Task]:
        return [t for t in self.tasks if t.batch == batch]


class PrepGraph:
    """Nodes of a parsed script with features, widths and id ranges (see module docstring)."""

    def __init__(self, statements: Sequence[Statement]) -> None:
        if not statements:
            raise PlanError("the script has no statements")
        writer: dict[str, int] = {}
        nodes: list[Node] = []
        for s in statements:
            src = writer.get(s.input, s.input)
            if isinstance(src, int):
                p = nodes[src]
                in_w, in_f, in_r = p.width, p.is_float, p.id_range
            else:
                in_w, in_f, in_r = 1, False, None
            _ops.check_input(
                s.op, s.input, is_float=in_f, is_list=in_w != 1, has_nulls=False, params=s.params
            )
            nodes.append(Node(
                len(nodes), s.op, s.params, src, s.out, s.line, in_w,
                _ops.out_width(s.op, s.params, in_w), _ops.out_is_float(s.op, in_f),
                _ops.id_range(s.op, s.params, in_r),
            ))  # fmt: skip
            writer[s.out] = len(nodes) - 1
        self.nodes = nodes
        self.features: list[Feature] = []
        for name, nid in writer.items():
            n = nodes[nid]
            if n.is_float or n.id_range is None:
                if n.width != 1:
                    raise PlanError(
                        f"line {n.line}: column {name!r} is a dense feature (float or no id range) "
                        f"with {n.width} values per row; dense features need one value per row"
                    )
                self.features.append(Feature(name, nid, "dense", None, 1))
            else:
                self.features.append(Feature(name, nid, "sparse", n.id_range, n.width))
        self.raw_columns = sorted({n.source for n in nodes if isinstance(n.source, str)})

    @property
    def dense_features(self) -> list[Feature]:
        return [f for f in self.features if f.kind == "dense"]

    @property
    def sparse_features(self) -> list[Feature]:
        return [f for f in self.features if f.kind == "sparse"]

    @property
    def table_sizes(self) -> list[int]:
        return [int(f.table_size) for f in self.sparse_features]

    def chain(self, node_id: int) -> list[int]:
        """Node ids a node depends on, itself included, in script order."""
        out = []
        cur: int | str = node_id
        while isinstance(cur, int):
            out.append(cur)
            cur = self.nodes[cur].source
        return out[::-1]

    def raw_of(self, node_id: int) -> str:
        return self.nodes[self.chain(node_id)[0]].source  # type: ignore[return-value]

    def map_to_gpus(self, n_gpus: int, placement: Sequence[int] | None = None) -> list[GpuGraph]:
        """One :class:`GpuGraph` per GPU (dense tasks everywhere, sparse tasks on owners)."""
        if n_gpus < 1:
            raise PlanError(f"n_gpus must be >= 1, got {n_gpus}")
        sparse = self.sparse_features
        placement = (
            list(placement) if placement is not None else balance_tables(self.table_sizes, n_gpus)
        )
        check_placement(placement, len(sparse), n_gpus)
        dense_nodes = {i for f in self.dense_features for i in self.chain(f.node)}
        graphs = []
        for g in range(n_gpus):
            owned = [f for f, p in zip(sparse, placement) if p == g]
            sparse_nodes = {i for f in owned for i in self.chain(f.node)}
            tasks = [Task(n, "local") for n in self.nodes if n.id in dense_nodes]
            tasks += [Task(n, "global") for n in self.nodes if n.id in sparse_nodes]
            tasks.sort(key=lambda t: (t.node.id, t.batch))
            preds = {
                t.key: ([f"{t.batch[0]}{t.node.source}"] if isinstance(t.node.source, int) else [])
                for t in tasks
            }
            raw_local = sorted({self.raw_of(f.node) for f in self.dense_features})
            raw_global = sorted({self.raw_of(f.node) for f in owned})
            graphs.append(
                GpuGraph(g, tasks, preds, self.dense_features, owned, raw_local, raw_global)
            )
        return graphs


def check_placement(placement: Sequence[int], n_tables: int, n_gpus: int) -> None:
    if len(placement) != n_tables:
        raise PlanError(
            f"placement: {len(placement)} entries for {n_tables} sparse features (tables)"
        )
    for i, p in enumerate(placement):
        if not (isinstance(p, int) and 0 <= p < n_gpus):
            raise PlanError(f"placement[{i}] = {p!r}: expected a GPU index in [0, {n_gpus})")


def balance_tables(table_sizes: Sequence[int], n_gpus: int, dim: int = 1) -> list[int]:
    """Table-wise placement balancing rows per GPU: largest table first onto the least-loaded
    GPU (ties to the lower index), as a size-based TorchRec planner would.

    >>> balance_tables([100, 10, 60, 50], 2)
    [0, 0, 1, 1]
    """
    if n_gpus < 1:
        raise PlanError(f"n_gpus must be >= 1, got {n_gpus}")
    load = [0] * n_gpus
    out = [0] * len(table_sizes)
    for i in sorted(range(len(table_sizes)), key=lambda i: (-table_sizes[i], i)):
        g = min(range(n_gpus), key=lambda g: (load[g], g))
        out[i] = g
        load[g] += int(table_sizes[i]) * dim
    return out
