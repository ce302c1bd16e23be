"""KVTree bookkeeping on small tensors: prefixes, deltas, eviction order."""

import torch

from marco_eval.backends.kvtree import KVTree


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
