"""Ahead-of-time buffer assignment: the executor's memory plan.

Before a graph first runs with given dims, every intermediate that a kernel can write into a
given array (``Into`` below: matmuls, fused loops, row kernels, element-wise ops) gets a
byte range of one arena, chosen from the schedule's lifetimes; at run time the kernel
writes there (``out=``) instead of allocating. As in XLA's buffer assignment and TFLite's
arena planner:

- A *group* is the memory one planned step writes. Its lifetime runs from that step to the
  last step that reads it or anything that may be a view of it: an op the plan does not
  write for is taken to return a view of its inputs (a reshape, a transpose, a plugin's
  kernel), unless its OpDef says ``fresh_result``, so a group outlives every value computed
  from it that way.
- In place where safe: an element-wise step (a fused loop, an add) whose input is the last
  use of a group of the same size writes over it, and joins that group.
- A group that an output of the graph may view is not planned: outputs must outlive the
  run, and the arena is reused by the next one.
- Ranges are placed by simulating the schedule with a best-fit free list that merges
  neighbours; the arena is the highest address reached.

``plan_memory`` only computes; ``tgraph.execute`` allocates the arena (one per concurrent
run) and hands each planned step its view.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ALIGN = 64  # bytes: a cache line, and every SIMD width the kernels use


@dataclass(frozen=True)
class Into:
    """How a backend runs a node into a given array: ``fn(out, *arrays)`` returns the result
    (``out`` itself, or a fresh array where the kernel had to hand over to a reference).
    ``in_place``: ``out`` may be one of the inputs (each element read before it is written);
    ``fresh``: ``out`` may be a new buffer."""

    fn: object
    in_place: bool = False
    fresh: bool = True


@dataclass
class MemoryPlan:
    offsets: dict[int, int] = field(default_factory=dict)  # step index -> byte offset
    arena_bytes: int = 0
    heap_peak: int = 0  # the most bytes the unplanned intermediates hold at once

    @property
    def planned_peak(self) -> int:
        """The arena plus what the kernels still allocate: the plan's peak of
        intermediates."""
        return self.arena_bytes + self.heap_peak


@dataclass(frozen=True)
class StepInfo:
    """What the planner needs of one schedule step."""

    ins: tuple[int, ...]  # slots read
    outs: tuple[int, ...]  # slots written
    free: tuple[int, ...]  # slots dead after this step
    nbytes: int  # of the single output; 0 when the step has several or none
    into: Into | None  # None: the kernel allocates its own result
    views: bool = True  # its result may be a view of an input (OpDef.fresh_result False)


def plan_memory(steps: Sequence[StepInfo], sizes: Mapping[int, int], keep: set[int],
                same_layout: set[tuple[int, int]]) -> MemoryPlan:
    """``sizes``: bytes of every intermediate slot; ``keep``: the graph's output slots;
    ``same_layout``: the (step, input position) pairs whose input is a contiguous array of
    the output's shape and dtype (an in-place write reads each element before writing it)."""
    death = {s: i for i, st in enumerate(steps) for s in st.free}
    group_of: dict[int, int] = {}  # planned slot -> its group (the step that created it)
    holders: dict[int, frozenset] = {}  # any slot -> the groups it may view
    members: dict[int, set[int]] = {}  # group -> slots that hold it
    for i, st in enumerate(steps):
        held = (frozenset().union(*(holders.get(s, frozenset()) for s in st.ins))
                if st.views else frozenset())
        plannable = st.into is not None and st.nbytes and len(st.outs) == 1
        g = (_in_place_group(i, st, group_of, members, death, sizes, same_layout)
             if plannable else None)
        if g is None and not (plannable and st.into.fresh):
            for s in st.outs:  # the kernel's own result: it may be a view of any input
                holders[s] = held
                for h in held:
                    members[h].add(s)
            continue
        out = st.outs[0]
        if g is None:
            g = i
            members[g] = set()
        group_of[out], holders[out] = g, frozenset({g})
        members[g].add(out)
    escaping = {g for s in keep for g in holders.get(s, ())}
    planned = {g for g in members if g not in escaping}
    end = {g: max(death.get(s, len(steps)) for s in members[g]) for g in planned}
    size = {g: sizes[steps[g].outs[0]] for g in planned}
    plan = MemoryPlan()
    arena = _Arena()
    where: dict[int, int] = {}
    ending: dict[int, list[int]] = {}
    for g in planned:
        ending.setdefault(end[g], []).append(g)
    live = heap = 0
    for i, st in enumerate(steps):
        g = group_of.get(st.outs[0]) if st.outs else None
        if g in planned:
            if g == i:
                where[g] = arena.take(size[g])
            plan.offsets[i] = where[g]
        else:
            live += sum(sizes.get(s, 0) for s in st.outs)
            heap = max(heap, live)
        live -= sum(sizes.get(s, 0) for s in st.free if group_of.get(s) not in planned)
        for g in ending.get(i, ()):
            arena.give(where[g], size[g])
    plan.arena_bytes, plan.heap_peak = arena.top, heap
    return plan


def _in_place_group(i, st, group_of, members, death, sizes, same_layout) -> int | None:
    """The group step ``i`` may write over: an input's own group that nothing reads after
    this step, of the output's size and layout."""
    if not st.into.in_place:
        return None
    for k, s in enumerate(st.ins):
        g = group_of.get(s)
        if (g is not None and st.ins.count(s) == 1 and (i, k) in same_layout
                and sizes[s] == st.nbytes
                and all(death.get(m, -1) == i for m in members[g])):
            return g
    return None


class _Arena:
    """Best-fit placement of byte ranges; freed neighbours merge."""

    def __init__(self):
        self.top = 0
        self.free: list[tuple[int, int]] = []  # (offset, size), sorted by offset

    def take(self, nbytes: int) -> int:
        nbytes = -(-nbytes // ALIGN) * ALIGN
        fits = [(size, off) for off, size in self.free if size >= nbytes]
        if fits:
            size, off = min(fits)
            k = bisect.bisect_left(self.free, (off, size))
            if size == nbytes:
                del self.free[k]
            else:
                self.free[k] = (off + nbytes, size - nbytes)
            return off
        if self.free and sum(self.free[-1]) == self.top:  # grow the last free range
            off, size = self.free.pop()
        else:
            off, size = self.top, 0
        self.top = off + nbytes
        return off

    def give(self, off: int, nbytes: int) -> None:
        nbytes = -(-nbytes // ALIGN) * ALIGN
        k = bisect.bisect_left(self.free, (off, nbytes))
        if k < len(self.free) and off + nbytes == self.free[k][0]:
            nbytes += self.free.pop(k)[1]
        if k > 0 and sum(self.free[k - 1]) == off:
            off, nbytes = self.free[k - 1][0], self.free[k - 1][1] + nbytes
            self.free.pop(k - 1)
            k -= 1
        self.free.insert(k, (off, nbytes))
