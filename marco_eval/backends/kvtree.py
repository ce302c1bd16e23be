"""The transformers backend's keys/values: the search tree's (KVTree) and the batch's (BatchKV);
the cache layer that hands BatchKV to a model is in hf_cache.py.

KVTree: the search tree's KV cache, shared along paths, capped in memory.

An entry stands for one token sequence S (a node's prompt + path, or a finished
continuation) and holds the keys/values of S[:-1] — the invariant "cache length = token
count - 1": the last token is fed when the sequence is continued, which yields the logits
for the next one, so nothing else (no logits) needs keeping.

Entries are stored as deltas: an entry keeps only the positions its parent entry does not
cover (a step's tokens, not the whole prompt again), so K siblings and a long prompt are
held once. A row joining the batch copies its path's segments straight into its batch row
(`path_segments`, `BatchKV.join`); `materialize` concatenates them only where a one-row
prefill needs the cache as one tensor.

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
    # Every position from 0 made by the canonical chunked prefill (hf.py, `prefill_chunks`),
    # none by a decode step: such positions are bit-identical wherever the same tokens
    # start a sequence, so another prompt may share them (`share`).
    prefilled: bool = False

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

    def share(self, seq: tuple[int, ...], base: Entry | None, block: int) -> Entry | None:
        """`seq` leaves the cache at `base` (its longest cached prefix, None: none), but a
        sibling entry may share more tokens with it: two prompts with the same few-shot
        exemplars or instructions. Split the prefilled sibling sharing the most whole blocks
        beyond `base` (positions up to a multiple of `block`) there, so those positions are
        cached, and prefilled, once; returns the entry of the shared part, else None.

        Only block-aligned positions of prefilled entries are shared: the prefill forwards
        block-aligned chunks, so those keys/values are exactly what `seq`'s own prefill
        would compute (same tokens, same chunks), and sharing changes no output, in bf16 too."""
        done = base.length if base is not None else 0
        if done % block or (base is not None and not base.prefilled):
            return None
        best, best_m = None, done
        for entry in self.entries.values():
            if entry.parent is base and entry.prefilled and entry.key[:done + block] == seq[:done + block]:
                # positions [0, m) of key[:m + 1], a prefix of both sequences
                m = min(common_prefix(entry.key, seq) - 1, entry.length) // block * block
                if m > best_m:
                    best, best_m = entry, m
        if best is None:
            return None
        self._touch(best)
        return best if best_m == best.length else self._split(best, best_m + 1)

    def _split(self, entry: Entry, n: int) -> Entry:
        """Cut `entry` into a new entry for key[:n] (positions [start, n - 1)) and the rest,
        which becomes its child. Both halves are copied out so that neither holds the other's
        memory."""
        cut = n - 1 - entry.start
        head = [(k[:, :, :cut].clone(), v[:, :, :cut].clone()) for k, v in entry.segment]
        tail = [(k[:, :, cut:].clone(), v[:, :, cut:].clone()) for k, v in entry.segment]
        if entry.parent is not None:
            entry.parent.children -= 1  # the head takes the entry's place under its parent
        self.nbytes -= entry.nbytes
        middle = self.insert(entry.key[:n], entry.parent, head, prefilled=entry.prefilled)
        entry.parent, entry.segment, entry.start = middle, tail, n - 1
        entry.nbytes = sum(k.nbytes + v.nbytes for k, v in tail)
        self.nbytes += entry.nbytes
        middle.children += 1
        return middle

    def insert(self, key: tuple[int, ...], parent: Entry | None, segment: KV, prefilled: bool = False) -> Entry:
        """Cache `key`; `segment` holds positions [parent.length, len(key) - 1); `prefilled`:
        the parent is prefilled and so is the segment (Entry.prefilled)."""
        if key in self.entries:
            self._touch(self.entries[key])
            return self.entries[key]
        start = parent.length if parent is not None else 0
        entry = Entry(key, parent, segment, start, nbytes=sum(k.nbytes + v.nbytes for k, v in segment),
                      prefilled=prefilled)
        if parent is not None:
            parent.children += 1
        self.entries[key] = entry
        self._lengths[len(key)] = self._lengths.get(len(key), 0) + 1
        self.nbytes += entry.nbytes
        self._touch(entry)
        return entry

    @staticmethod
    def path_segments(entry: Entry | None) -> list[KV]:
        """The segments that make up entry.key[:-1], root first (none for None)."""
        chain = []
        while entry is not None:
            chain.append(entry.segment)
            entry = entry.parent
        return chain[::-1]

    def materialize(self, entry: Entry | None) -> KV | None:
        """Full keys/values of entry.key[:-1], concatenated from its path's segments."""
        if entry is None:
            return None
        chain = self.path_segments(entry)
        return [(torch.cat([seg[i][0] for seg in chain], dim=-2),
                 torch.cat([seg[i][1] for seg in chain], dim=-2)) for i in range(len(chain[-1]))]

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


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Length of the longest common prefix (slice comparisons run in C: a binary search)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class BatchKV:
    """Keys/values of the rows decoding together, written in place.

    Per layer one buffer [max_rows, kv_heads, cols, head_dim]. Live rows are 0..n-1,
    left-padded to a common right edge `end`: row r holds its lengths[r] cached positions in
    columns [end - lengths[r], end) and the batch attends to the window [start, end), start =
    end - max(lengths). A decode step writes column `end` of every row and moves `end` on
    (nothing else is copied); a row leaves by having the last row
    moved into its place (one row copied, not the batch); the window's left edge follows the
    longest live row without a copy. The window is copied to fresh buffers only when no
    column is left on the right (at most once every `right_room` steps) or a joining row is
    longer than the columns left of `end`. Columns a row does not use hold stale, finite
    values (buffers start zeroed) and are masked out, as zero padding was.
    """

    def __init__(self, n_layers: int, kv_heads: int, head_dim: int, dtype, device, max_rows: int,
                 right_room: int = 256, left_room: int = 64):
        self.n_layers, self.kv_heads, self.head_dim = n_layers, kv_heads, head_dim
        self.dtype, self.device, self.max_rows = dtype, device, max_rows
        self.right_room, self.left_room = right_room, left_room
        self.keys: list[torch.Tensor] = []  # per layer [max_rows, kv_heads, cols, head_dim]
        self.values: list[torch.Tensor] = []
        self.mask = torch.zeros((max_rows, 0), dtype=torch.long, device=device)  # [max_rows, cols]: 1 = a row's position
        self.lengths: list[int] = []  # cached positions per live row
        self.end = 0
        self.relayouts = 0

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def start(self) -> int:
        return self.end - max(self.lengths, default=0)

    def window_mask(self) -> torch.Tensor:
        return self.mask[:self.rows, self.start:self.end]  # [rows, max(lengths)]

    def join(self, rows: list[list[KV]]) -> None:
        """New rows after the live ones; each is given as the segments (root first) whose
        concatenation along positions is its cache (KVTree.path_segments)."""
        lengths = [sum(seg[0][0].shape[2] for seg in pieces) for pieces in rows]
        if self.rows + len(rows) > self.max_rows:
            raise ValueError(f"{self.rows} + {len(rows)} rows do not fit a batch of {self.max_rows}")
        longest = max(lengths, default=0)
        if not self.keys or longest > self.end or self.end >= self.mask.shape[1]:
            self._relayout(max(longest, self.end - self.start))
        for pieces, n in zip(rows, lengths):
            r, col = self.rows, self.end - n
            self.mask[r].zero_()
            self.mask[r, col:self.end] = 1
            for seg in pieces:
                m = seg[0][0].shape[2]
                for layer, (k, v) in enumerate(seg):  # k, v: [1, kv_heads, m, head_dim]
                    self.keys[layer][r, :, col:col + m] = k[0]
                    self.values[layer][r, :, col:col + m] = v[0]
                col += m
            self.lengths.append(n)

    def open_column(self) -> torch.Tensor:
        """Room for this step's column, marked attended; the step's mask [rows, max(lengths) + 1]."""
        if self.end >= self.mask.shape[1]:
            self._relayout(self.end - self.start)
        self.mask[:self.rows, self.end] = 1
        return self.mask[:self.rows, self.start:self.end + 1]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's keys/values (k, v: [rows, kv_heads, 1, head_dim]) into column `end`;
        returns the layer's window [rows, kv_heads, max(lengths) + 1, head_dim] (views)."""
        n, e, s = self.rows, self.end, self.start
        self.keys[layer][:n, :, e:e + 1] = k
        self.values[layer][:n, :, e:e + 1] = v
        return self.keys[layer][:n, :, s:e + 1], self.values[layer][:n, :, s:e + 1]

    def close_column(self) -> None:
        self.end += 1
        self.lengths = [n + 1 for n in self.lengths]

    def row_tail(self, row: int, n: int) -> KV:
        """Views of a row's last n positions, per layer [1, kv_heads, n, head_dim]."""
        return [(k[row: row + 1, :, self.end - n: self.end], v[row: row + 1, :, self.end - n: self.end])
                for k, v in zip(self.keys, self.values)]

    def drop(self, rows: list[int]) -> list[int]:
        """Rows leave; the last live rows move into their places. Returns, per remaining row,
        the index it had before."""
        order = list(range(self.rows))
        for r in sorted(set(rows), reverse=True):  # rows above r that leave are gone already
            last = len(order) - 1
            if r != last:
                first = self.end - self.lengths[last]
                for k, v in zip(self.keys, self.values):  # [max_rows, kv_heads, cols, head_dim]
                    k[r, :, first:self.end] = k[last, :, first:self.end]
                    v[r, :, first:self.end] = v[last, :, first:self.end]
                self.mask[r] = self.mask[last]
                order[r], self.lengths[r] = order[last], self.lengths[last]
            order.pop()
            self.lengths.pop()
        return order

    def _relayout(self, width: int) -> None:
        """Fresh buffers with `width` + left_room columns left of `end` and right_room right of it;
        the live window is copied over."""
        new_end = width + self.left_room
        cols = new_end + self.right_room
        shape = (self.max_rows, self.kv_heads, cols, self.head_dim)
        start, span, n = self.start, self.end - self.start, self.rows
        mask = torch.zeros((self.max_rows, cols), dtype=torch.long, device=self.device)  # [max_rows, cols]
        mask[:n, new_end - span:new_end] = self.mask[:n, start:self.end]
        keys, values = [], []
        for layer in range(self.n_layers):
            k = torch.zeros(shape, dtype=self.dtype, device=self.device)  # [max_rows, kv_heads, cols, head_dim]
            v = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if self.keys and span:
                k[:n, :, new_end - span:new_end] = self.keys[layer][:n, :, start:self.end]
                v[:n, :, new_end - span:new_end] = self.values[layer][:n, :, start:self.end]
            keys.append(k)
            values.append(v)
            if self.keys:  # let the old layer go before the next is made: one layer extra at a time
                self.keys[layer] = self.values[layer] = None
        self.keys, self.values, self.mask, self.end = keys, values, mask, new_end
        self.relayouts += 1

