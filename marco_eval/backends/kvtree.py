"""KVTree: the search tree's KV cache, shared along paths, capped in memory.

An entry stands for one token sequence S (a node's prompt + path, or a finished
continuation) and holds the keys/values of S[:-1] — the invariant "cache length = token
count - 1": the last token is fed when the sequence is continued, which yields the logits
for the next one, so nothing else (no logits) needs keeping.

Entries are stored as deltas: an entry keeps only the positions its parent entry does not
cover (a step's tokens, not the whole prompt again), so K siblings and a long prompt are
held once. `materialize` concatenates a path's segments when a row needs its full cache.

Memory: a cap in bytes; when over it, least-recently-used entries without children are
dropped (children first, so no entry ever loses its base). A request whose entry was
evicted finds a shorter cached prefix and recomputes the rest: slower, never wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values): [1, heads, positions, dim]


@dataclass(eq=False)
class Entry:
    key: tuple[int, ...]
    parent: "Entry | None"
    segment: KV  # positions [start, len(key) - 1)
    start: int
    last_used: int = 0
    children: int = 0
    nbytes: int = field(default=0)

    @property
    def length(self) -> int:  # cached positions = len(key) - 1
        return len(self.key) - 1


class KVTree:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: dict[tuple[int, ...], Entry] = {}
        self._lengths: dict[int, int] = {}  # key length -> number of entries of that length
        self.nbytes = 0
        self._clock = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, seq: tuple[int, ...]) -> Entry | None:
        """The entry of the longest cached prefix of `seq` (`seq` itself included)."""
        for n in sorted((n for n in self._lengths if n <= len(seq)), reverse=True):
            entry = self.entries.get(seq if n == len(seq) else seq[:n])
            if entry is not None:
                self._touch(entry)
                self.hits += n == len(seq)
                return entry
        self.misses += 1
        return None

    def insert(self, key: tuple[int, ...], parent: Entry | None, segment: KV) -> Entry:
        """Cache `key`; `segment` holds positions [parent.length, len(key) - 1)."""
        if key in self.entries:
            self._touch(self.entries[key])
            return self.entries[key]
        start = parent.length if parent is not None else 0
        entry = Entry(key, parent, segment, start, nbytes=sum(k.nbytes + v.nbytes for k, v in segment))
        if parent is not None:
            parent.children += 1
        self.entries[key] = entry
        self._lengths[len(key)] = self._lengths.get(len(key), 0) + 1
        self.nbytes += entry.nbytes
        self._touch(entry)
        return entry

    def materialize(self, entry: Entry | None) -> KV | None:
        """Full keys/values of entry.key[:-1], concatenated from its path's segments."""
        if entry is None:
            return None
        chain = []
        while entry is not None:
            chain.append(entry)
            entry = entry.parent
        chain.reverse()
        n_layers = len(chain[-1].segment)
        return [(torch.cat([e.segment[i][0] for e in chain], dim=-2),
                 torch.cat([e.segment[i][1] for e in chain], dim=-2)) for i in range(n_layers)]

    def evict_to_cap(self, pinned: set[int] = frozenset()) -> None:
        """Drop least-recently-used childless entries until under the cap."""
        if self.nbytes <= self.max_bytes:
            return
        leaves = sorted((e for e in self.entries.values() if e.children == 0), key=lambda e: e.last_used)
        while self.nbytes > self.max_bytes and leaves:
            entry = leaves.pop(0)
            if id(entry) in pinned:
                continue
            self._remove(entry)
            parent = entry.parent
            if parent is not None and parent.children == 0 and id(parent) not in pinned:
                # the parent became a leaf: it competes by its own last use
                leaves.append(parent)
                leaves.sort(key=lambda e: e.last_used)

    def clear(self) -> None:
        self.entries.clear()
        self._lengths.clear()
        self.nbytes = 0

    def _remove(self, entry: Entry) -> None:
        del self.entries[entry.key]
        self._lengths[len(entry.key)] -= 1
        if not self._lengths[len(entry.key)]:
            del self._lengths[len(entry.key)]
        self.nbytes -= entry.nbytes
        if entry.parent is not None:
            entry.parent.children -= 1
        self.evictions += 1

    def _touch(self, entry: Entry) -> None:
        self._clock += 1
        entry.last_used = self._clock
