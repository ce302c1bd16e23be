"""KVTree bookkeeping on small tensors: prefixes, deltas, eviction order."""

import torch

from marco_eval.backends.kvtree import BatchKV, KVTree


def seg(start, end, layers=2):
    """Fake keys/values whose values are their absolute positions."""
    pos = torch.arange(start, end, dtype=torch.float32).view(1, 1, -1, 1)
    return [(pos.clone(), -pos.clone()) for _ in range(layers)]


def test_longest_prefix_lookup_and_materialize_concatenates_the_path():
    t = KVTree(max_bytes=10**9)
    root = t.insert((1, 2, 3, 4), None, seg(0, 3))  # caches positions 0..2
    child = t.insert((1, 2, 3, 4, 5, 6), root, seg(3, 5))
    assert t.lookup((1, 2, 3, 4, 5, 6)) is child
    assert t.lookup((1, 2, 3, 4, 5, 6, 7, 8)) is child  # longest cached prefix
    assert t.lookup((1, 2, 3, 4, 9)) is root
    assert t.lookup((9, 9)) is None
    kv = t.materialize(child)
    assert kv[0][0].flatten().tolist() == [0, 1, 2, 3, 4]  # len(key) - 1 positions, in order
    assert kv[1][1].flatten().tolist() == [0, -1, -2, -3, -4]


def test_eviction_is_lru_and_never_orphans_a_child():
    one_entry = sum(k.nbytes + v.nbytes for k, v in seg(0, 3))
    t = KVTree(max_bytes=10**9)
    root = t.insert((1, 2, 3, 4), None, seg(0, 3))
    a = t.insert((1, 2, 3, 4, 5, 6, 7), root, seg(3, 6))
    b = t.insert((1, 2, 3, 4, 8, 9, 10), root, seg(3, 6))
    t.lookup((1, 2, 3, 4, 5, 6, 7))  # a used more recently than b
    t.max_bytes = 2 * one_entry
    t.evict_to_cap()
    assert (1, 2, 3, 4, 8, 9, 10) not in t.entries and a.key in t.entries and root.key in t.entries
    t.max_bytes = 0
    t.evict_to_cap()
    assert len(t) == 0 and t.nbytes == 0 and t.evictions == 3
    assert b.parent is root  # evicted entries keep their links; nothing dangles in the tree


def test_same_key_is_stored_once():
    t = KVTree(max_bytes=10**9)
    e1 = t.insert((5, 6), None, seg(0, 1))
    e2 = t.insert((5, 6), None, seg(0, 1))
    assert e1 is e2 and len(t) == 1


def row_seq(kv: BatchKV, row: int, layer: int = 0) -> list[float]:
    """A row's cached keys, left to right, read through the batch window and its mask."""
    keys = kv.keys[layer][row, 0, kv.start:kv.end, 0]
    return keys[kv.window_mask()[row].bool()].tolist()


def test_batch_kv_writes_in_place_moves_rows_and_relayouts_only_when_out_of_room():
    kv = BatchKV(n_layers=2, kv_heads=1, head_dim=1, dtype=torch.float32, device="cpu", max_rows=3,
                 right_room=3, left_room=1)
    a = [seg(0, 4), seg(4, 6)]  # a row given as its path's segments: positions 0..5
    kv.join([a, [seg(0, 2)]])
    assert kv.relayouts == 1 and kv.rows == 2 and kv.window_mask().shape == (2, 6)
    assert row_seq(kv, 0) == [0, 1, 2, 3, 4, 5] and row_seq(kv, 1) == [0, 1]
    for step in range(5):  # a step writes one column per row, no copy; every 3rd runs out of room
        mask = kv.open_column()
        new = torch.tensor([[[[10.0 + step]]], [[[20.0 + step]]]])  # [rows, heads, 1, dim]
        for layer in range(2):
            keys, _ = kv.write(layer, new, -new)
            assert keys.shape[2] == mask.shape[1]
        kv.close_column()
    assert kv.relayouts == 2  # columns 7, 8, 9 fit; the 4th step needed fresh room
    assert row_seq(kv, 0) == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14]
    assert row_seq(kv, 1, layer=1) == [0, 1, 20, 21, 22, 23, 24]
    assert [k.tolist() for k, _ in kv.row_tail(1, 2)][0] == [[[[23.0], [24.0]]]]
    kv.join([[seg(0, 1)]])
    order = kv.drop([0])  # the last row moves into the hole; the window shrinks to the longest left
    assert order == [2, 1] and kv.lengths == [1, 7] and kv.window_mask().shape == (2, 7)
    assert row_seq(kv, 0) == [0] and row_seq(kv, 1) == [0, 1, 20, 21, 22, 23, 24]
    assert kv.relayouts == 2


def test_a_prompt_sharing_a_prefix_with_a_cached_one_splits_it_and_reuses_the_shared_whole_blocks():
    t = KVTree(max_bytes=10**9)
    a = t.insert((1, 2, 3, 4, 5, 6, 7), None, seg(0, 6), prefilled=True)  # prompt A: positions 0..5
    kid = t.insert((1, 2, 3, 4, 5, 6, 7, 8, 9), a, seg(6, 8))  # decoded: not prefilled
    b = (1, 2, 3, 4, 5, 6, 9, 9)  # prompt B shares 6 tokens, so positions 0..4, with A
    assert t.lookup(b) is None and t.share(b, None, block=6) is None  # not one whole block in common
    assert t.share(b, a, block=2) is None  # a base whose length is not on a block edge
    shared = t.share(b, None, block=2)  # positions 0..3: two whole blocks, not position 4
    assert shared.key == (1, 2, 3, 4, 5) and shared.parent is None and a.parent is shared and kid.parent is a
    assert shared.prefilled and a.prefilled and not kid.prefilled
    assert t.lookup(b) is shared  # now B's longest cached prefix
    assert t.materialize(shared)[0][0].flatten().tolist() == [0, 1, 2, 3]
    assert t.materialize(a)[0][0].flatten().tolist() == [0, 1, 2, 3, 4, 5]  # A reads the same as before
    assert t.materialize(kid)[1][1].flatten().tolist() == [0, -1, -2, -3, -4, -5, -6, -7]
    assert t.nbytes == sum(e.nbytes for e in t.entries.values()) == sum(k.nbytes + v.nbytes for k, v in seg(0, 8))  # 8 positions, each once
    assert (shared.children, a.children) == (1, 1)
    c = (1, 2, 3, 4, 5, 6, 7, 8, 9, 1)  # shares everything of `kid`, but kid's positions were decoded
    assert t.share(c, a, block=2) is None
    t.max_bytes = 0
    t.evict_to_cap()  # children first: the shared head goes last, nothing orphaned
    assert len(t) == 0 and t.nbytes == 0
