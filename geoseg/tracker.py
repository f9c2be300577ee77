"""The driver's bookkeeping of a run's vectors: which fragment groups are complete and which network cells
have all their shares, from the small metadata block tasks return (:class:`geoseg.assemble.VectorParts`).

No pixel, crop or geometry passes through here: a completed group or cell becomes a
:class:`geoseg.assemble.ReduceJob` naming the parts on disk that a worker joins and finishes. The union-find
is the in-memory reduction's own (:class:`geoseg.vectorize.reduce.FragmentGroups`), so both emit the same
groups; only the frontier of done blocks is held (the bounded-memory invariant).
"""

from __future__ import annotations

from collections import defaultdict

from geoseg.assemble import Cell, ReduceJob, VectorParts
from geoseg.parts import ARRAYS_SUFFIX, cell_part_name, fragment_name
from geoseg.vectorize.options import VectorSpec
from geoseg.vectorize.reduce import FragmentGroups, cell_parts_expected


class Tracker:
    """Feed each block's :class:`VectorParts` in; get back the reduction jobs it makes ready."""

    def __init__(self, vs: VectorSpec) -> None:
        self.vs = vs
        self.done: set[tuple[int, int]] = set()
        self.groups = {c.k: FragmentGroups() for c in vs.classes if not c.network}
        self.names: dict[int, dict[int, str]] = {k: {} for k in self.groups}  # fragment id -> its part's name
        self.cell_size = {c.k: vs.cell_px(c) for c in vs.classes if c.network}
        self.cells: dict[int, dict[Cell, list[str | None]]] = {k: defaultdict(list) for k in self.cell_size}

    def add(self, block: tuple[int, int], parts: VectorParts) -> list[ReduceJob]:
        self.done.add(block)
        jobs = []
        for k, groups in self.groups.items():
            sides, strips = parts.fragments.get(k, ([], {}))
            gids, complete = groups.add(block, sides, strips, self.done)
            names = self.names[k]
            for n, g in enumerate(gids):
                names[g] = fragment_name(k, block, n)
            if complete:  # one task for every group this block completes, named after its first fragment
                members = tuple(tuple(names.pop(g) for g in group) for group in complete)
                jobs.append(ReduceJob(k, f"g_{min(n for g in members for n in g)}", groups=members))
        for k, waiting in self.cells.items():
            ready = []
            for cell, has_pixels in parts.cells.get(k, []):
                got = waiting[cell]
                got.append(cell_part_name(k, cell, block) if has_pixels else None)
                if len(got) == cell_parts_expected(cell, self.cell_size[k], self.vs):
                    shares = tuple(sorted(n for n in waiting.pop(cell) if n is not None))
                    if shares:
                        ready.append((cell, shares))
            if ready:
                jobs.append(ReduceJob(k, f"c_k{k}_{ready[0][0][0]}_{ready[0][0][1]}{ARRAYS_SUFFIX}", cells=tuple(ready)))
        return jobs

    def pending(self) -> int:
        """Fragments and cells still waiting (0 once every block is in)."""
        return sum(len(g) for g in self.groups.values()) + sum(len(c) for c in self.cells.values())
