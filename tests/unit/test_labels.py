import random

import pytest

from xlgen.data import Document
from xlgen.labels import LabelSpace, simulate_pu


@pytest.fixture()
def space():
    docs = [Document(str(i), "t", labels) for i, labels in enumerate([("b", "a"), ("a",), ("c", "b"), ("d",), ("a", "c")])]
    return LabelSpace.from_documents(docs)


def test_frequency_order_and_deterministic_ties(space):
    # a:3, b:2, c:2, d:1 -> ties (b, c) broken by the label string
    assert space.labels == ("a", "b", "c", "d")
    assert space.counts == (3, 2, 2, 1)
    assert space.order(["d", "c", "a", "b"]) == ["a", "b", "c", "d"]
    assert space.order(["d", "new", "a"]) == ["a", "d", "new"]  # unknown labels go last
    assert space.order(["d", "c", "a"], "inverse") == ["d", "c", "a"]
    assert space.order(["d", "c", "a"], "given") == ["d", "c", "a"]


def test_random_order_reshuffles(space):
    rng = random.Random(0)
    orders = {tuple(space.order(["a", "b", "c", "d"], "random", rng)) for _ in range(30)}
    assert len(orders) > 5
    assert all(sorted(o) == ["a", "b", "c", "d"] for o in orders)
    with pytest.raises(ValueError, match="needs an rng"):
        space.order(["a"], "random")
    with pytest.raises(ValueError, match="unknown label order"):
        space.order(["a"], "sideways")


def test_save_load_roundtrip(space, tmp_path):
    space.save(tmp_path / "labels.json")
    loaded = LabelSpace.load(tmp_path / "labels.json")
    assert loaded == space
    assert loaded.count("a") == 3 and loaded.count("zzz") == 0
    ext = space.extend(["e", "a"])
    assert ext.labels[-1] == "e" and ext.count("e") == 0 and len(ext) == 5


def test_simulate_pu_drops_seeded_fraction():
    docs = [Document(str(i), "t", tuple(f"l{j}" for j in range(10))) for i in range(50)]
    pu = simulate_pu(docs, 0.5, seed=1)
    assert all(len(d.labels) == 5 for d in pu)
    assert all(set(p.labels) <= set(d.labels) for p, d in zip(pu, docs, strict=True))
    assert pu == simulate_pu(docs, 0.5, seed=1)
    assert pu != simulate_pu(docs, 0.5, seed=2)
    single = simulate_pu([Document("x", "t", ("only",))], 0.8, seed=0)
    assert single[0].labels == ("only",)  # never leaves a document without labels
    with pytest.raises(ValueError):
        simulate_pu(docs, 1.0)
