import pytest

from xlgen.tokenizer import (
    SEP,
    TASK_CLUSTERS,
    TASK_LABELS,
    SentencePieceTokenizer,
    cluster_token,
    encode_input,
    encode_target,
    load_tokenizer,
    split_generated,
)

TEXTS = ["the cat sat on the mat", "dogs bark at night", "I love this so much", "what a terrible day"] * 20
LABELS = ["animals", "home life", "joy", "anger", "label with spaces"] * 5


@pytest.fixture(scope="module")
def tok():
    return SentencePieceTokenizer.train(TEXTS, LABELS, vocab_size=100, n_cluster_tokens=8)


def test_special_tokens_are_single_distinct_ids(tok):
    ids = [tok.token_id(t) for t in (SEP, TASK_LABELS, TASK_CLUSTERS, cluster_token(0), cluster_token(7))]
    assert len(set(ids)) == len(ids)
    assert tok.pad_id == 0 and tok.eos_id == 1 and tok.sep_id == ids[0]
    assert tok.sep_id in tok.encode(SEP)
    with pytest.raises(KeyError):
        tok.token_id(cluster_token(8))


def test_labels_with_spaces_roundtrip(tok):
    labels = ["label with spaces", "joy", "unseen ünïcödé label"]
    ids = encode_target(tok, labels)
    assert ids[-1] == tok.eos_id and ids.count(tok.eos_id) == 1  # exactly one eos
    assert split_generated(tok, ids) == labels
    assert split_generated(tok, ids + [tok.pad_id, 5, 6]) == labels  # stops at eos


def test_target_truncates_at_label_boundary(tok):
    ids = encode_target(tok, ["joy", "anger", "animals", "home life"], max_length=6)
    assert len(ids) <= 6
    assert all(x in ["joy", "anger", "animals", "home life"] for x in split_generated(tok, ids))


def test_input_keeps_first_word_prefix_and_suffix(tok):
    suffix = [tok.token_id(cluster_token(1)), tok.token_id(cluster_token(2))]
    ids = encode_input(tok, "dogs bark at night " * 20, max_length=12, suffix=suffix)
    assert len(ids) == 12
    assert ids[0] == tok.token_id(TASK_LABELS)
    assert ids[1:3] == tok.encode("dogs bark")[:2]
    assert ids[-3:] == [*suffix, tok.eos_id]


def test_save_load_gives_same_encodings(tok, tmp_path):
    tok.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert len(loaded) == len(tok)
    for t in TEXTS[:4] + LABELS[:5]:
        assert loaded.encode(t) == tok.encode(t)
    assert loaded.cluster_ids() == tok.cluster_ids()
