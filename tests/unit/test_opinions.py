"""Second opinions without any endpoint: the prompt, the parser of the chat model's answer, and the agreement of
stored opinions with the annotators' labels."""

from __future__ import annotations

import json

import pytest

from xlgen.service.opinions import (
    MAX_PROMPT_CHARS,
    Opinion,
    OpinionParseError,
    agreement,
    latest_labels,
    parse_opinions,
    prompt,
    relevance_of,
    scores,
    unrated,
)
from xlgen.service.storage import Annotation

LABELS = ["joy", "Love", "anger"]


def _answer(*items: dict) -> str:
    return json.dumps({"labels": list(items)})


# ------------------------------------------------------------------------------------------- prompt


def test_prompt_lists_every_candidate_and_asks_for_json_on_the_scale() -> None:
    labels = ["joy", "sadness", 'a "quoted" label', "ümlaut"]
    system, user = prompt("I am so happy today.", labels)
    assert system["role"] == "system" and user["role"] == "user"
    for word in ("0", "1", "2", "not relevant", "clearly relevant", "one sentence", '{"labels": [{"label"', '"relevance"', '"explanation"'):
        assert word in str(system["content"])
    content = str(user["content"])
    assert "I am so happy today." in content and "cut" not in content
    for label in labels:
        assert f"- {json.dumps(label, ensure_ascii=False)}" in content
    assert "Candidate labels (4)" in content and "ONLY with JSON" in content


def test_prompt_cuts_a_long_text_and_says_so() -> None:
    text = "a" * MAX_PROMPT_CHARS + "TAIL" + "b" * 6000
    content = str(prompt(text, ["joy"])[1]["content"])
    assert "a" * MAX_PROMPT_CHARS in content and "TAIL" not in content
    assert f"first {MAX_PROMPT_CHARS:,} of {len(text):,} characters" in content
    assert "cut" in str(prompt("short", ["joy"], max_chars=3)[1]["content"])


# ------------------------------------------------------------------------------------------- parser


def test_parses_plain_json_in_candidate_order() -> None:
    answer = _answer({"label": "anger", "relevance": 0, "explanation": "Nothing angry."},
                     {"label": "joy", "relevance": 2, "explanation": "  Clearly\n happy. "},
                     {"label": "Love", "relevance": 1, "explanation": "Maybe."})
    assert parse_opinions(answer, LABELS) == [Opinion("joy", 2, "Clearly happy."), Opinion("Love", 1, "Maybe."),
                                              Opinion("anger", 0, "Nothing angry.")]


def test_parses_fenced_json_and_json_with_text_around_it() -> None:
    body = _answer({"label": "joy", "relevance": 2, "explanation": "Happy."})
    want = [Opinion("joy", 2, "Happy.")]
    assert parse_opinions(f"```json\n{body}\n```", LABELS) == want
    assert parse_opinions(f"Here are my ratings:\n```\n{body}\n```\nHope this helps!", LABELS) == want
    assert parse_opinions(f"Sure! {body} Let me know [if] you need more.", LABELS) == want
    assert parse_opinions(f"<think>maybe {{not}} [this]</think>\n{body}", LABELS) == want


def test_parses_a_bare_list_and_a_single_rating() -> None:
    items = [{"label": "joy", "relevance": 2, "explanation": "Happy."}, {"label": "anger", "relevance": 0}]
    assert parse_opinions(json.dumps(items), LABELS) == [Opinion("joy", 2, "Happy."), Opinion("anger", 0, "")]
    assert parse_opinions("Ratings: " + json.dumps(items) + " (done)", LABELS)[0] == Opinion("joy", 2, "Happy.")
    assert parse_opinions(json.dumps(items[0]), LABELS) == [Opinion("joy", 2, "Happy.")]


@pytest.mark.parametrize(("value", "want"), [
    (0, 0), (1, 1), (2, 2), ("2", 2), (" 1 ", 1), (2.0, 2), ("0.0", 0),
    (3, None), (-1, None), (1.5, None), ("high", None), (True, None), (None, None), ([2], None), (float("nan"), None),
])
def test_relevance_must_be_0_1_or_2(value: object, want: int | None) -> None:
    assert relevance_of(value) == want


def test_out_of_range_relevance_is_dropped_not_clamped() -> None:
    answer = _answer({"label": "joy", "relevance": "2", "explanation": "x"}, {"label": "Love", "relevance": 5},
                     {"label": "anger", "relevance": -1})
    got = parse_opinions(answer, LABELS)
    assert got == [Opinion("joy", 2, "x")]
    assert unrated(LABELS, got) == ["Love", "anger"]


def test_unknown_labels_are_dropped_and_case_maps_back_to_the_candidate() -> None:
    answer = _answer({"label": "JOY", "relevance": 2}, {"label": " love ", "relevance": 1}, {"label": "surprise", "relevance": 2},
                     {"label": "joy", "relevance": 0, "explanation": "a second rating of joy is ignored"})
    got = parse_opinions(answer, LABELS)
    assert got == [Opinion("joy", 2, ""), Opinion("Love", 1, "")]
    assert unrated(LABELS, got) == ["anger"]


def test_an_exact_spelling_wins_over_a_case_insensitive_match() -> None:
    got = parse_opinions(_answer({"label": "Joy", "relevance": 1}, {"label": "joy", "relevance": 2}), ["joy", "Joy"])
    assert got == [Opinion("joy", 2, ""), Opinion("Joy", 1, "")]


def test_missing_candidates_are_reported_not_invented() -> None:
    got = parse_opinions(_answer({"label": "anger", "relevance": 0, "explanation": "calm"}), LABELS)
    assert got == [Opinion("anger", 0, "calm")]
    assert unrated(LABELS, got) == ["joy", "Love"]


def test_explanations_are_flattened_and_cut() -> None:
    got = parse_opinions(_answer({"label": "joy", "relevance": 2, "explanation": "word " * 500}), LABELS)
    assert got[0].explanation.endswith("...") and len(got[0].explanation) == 503 and "\n" not in got[0].explanation
    assert parse_opinions(_answer({"label": "joy", "relevance": 2, "reason": "because"}), LABELS)[0].explanation == "because"


@pytest.mark.parametrize("answer", [
    "", "I think joy fits best.", "{not json}", '{"labels": "joy"}', '{"verdict": 2}', "42",
    _answer({"label": "surprise", "relevance": 2}), _answer({"label": "joy", "relevance": 7}), _answer(), '[{"relevance": 2}]',
])
def test_an_answer_without_usable_ratings_raises(answer: str) -> None:
    with pytest.raises(OpinionParseError):
        parse_opinions(answer, LABELS)


def test_the_parse_error_quotes_the_answer_briefly() -> None:
    with pytest.raises(OpinionParseError, match=r"no JSON in the answer 'I would say joy\.'"):
        parse_opinions("I would say\n joy.", LABELS)
    with pytest.raises(OpinionParseError) as info:
        parse_opinions("x" * 5000, LABELS)
    assert len(str(info.value)) < 400


# ------------------------------------------------------------------------------------------ agreement

# (relevance, chosen by the annotator) of ten pairs
PAIRS = [(2, True), (2, True), (1, True), (1, False), (0, False), (0, False), (0, False), (2, False), (0, True), (1, False)]


def test_scores_on_a_hand_computed_example() -> None:
    # relevance >= 1: called yes 6 of 10, annotators yes 4 of 10; TP 3, FP 3, FN 1, TN 3
    got = scores(PAIRS, 1)
    assert got.accuracy == pytest.approx(0.6) and got.precision == pytest.approx(0.5) and got.recall == pytest.approx(0.75)
    # chance agreement 0.6 * 0.4 + 0.4 * 0.6 = 0.48; kappa (0.6 - 0.48) / (1 - 0.48) = 3 / 13
    assert got.kappa == pytest.approx(3 / 13)
    # relevance == 2: called yes 3 of 10; TP 2, FP 1, FN 2, TN 5
    got = scores(PAIRS, 2)
    assert got.accuracy == pytest.approx(0.7) and got.precision == pytest.approx(2 / 3) and got.recall == pytest.approx(0.5)
    # chance agreement 0.3 * 0.4 + 0.7 * 0.6 = 0.54; kappa (0.7 - 0.54) / (1 - 0.54) = 8 / 23
    assert got.kappa == pytest.approx(8 / 23)


def test_scores_undefined_parts_are_none() -> None:
    assert scores([], 1).accuracy is None and scores([], 1).kappa is None
    never = scores([(0, False), (0, False)], 1)  # no yes call, no human yes: perfect agreement, kappa undefined
    assert never.accuracy == 1.0 and never.precision is None and never.recall is None and never.kappa is None
    opposite = scores([(2, False), (0, True)], 2)
    assert opposite.accuracy == 0.0 and opposite.precision == 0.0 and opposite.recall == 0.0 and opposite.kappa == pytest.approx(-1.0)


def test_agreement_pairs_opinions_with_the_latest_round_of_annotated_documents() -> None:
    labels = [f"l{i}" for i in range(len(PAIRS))]
    opinions = [("d1" if i < 5 else "d2", label, r) for i, (label, (r, _)) in enumerate(zip(labels, PAIRS, strict=True))]
    chosen = [label for label, (_, c) in zip(labels, PAIRS, strict=True) if c]
    annotations = [
        Annotation("d1", 0, ["l4"], "", 1.0),  # an older round: replaced by round 1
        Annotation("d1", 1, [x for x in chosen if x in labels[:5]] + ["not-asked"], "", 2.0),
        Annotation("d2", 0, [x for x in chosen if x in labels[5:]], "", 3.0),
        Annotation("d3", 0, ["l1"], "", 4.0),  # annotated, no opinion
    ]
    human = latest_labels(annotations)
    assert human["d1"] == {"l0", "l1", "l2", "not-asked"}
    got = agreement([*opinions, ("d9", "l0", 2)], human)  # d9: an opinion, no annotation
    assert got.n == 10 and got.documents == 2
    assert got.relevant.min_relevance == 1 and got.relevant.kappa == pytest.approx(3 / 13) and got.relevant.recall == pytest.approx(0.75)
    assert got.clearly_relevant.min_relevance == 2 and got.clearly_relevant.kappa == pytest.approx(8 / 23)
    shares = {b.relevance: (b.count, b.chosen, b.share) for b in got.by_relevance}
    assert shares[0] == (4, 1, pytest.approx(0.25)) and shares[1] == (3, 1, pytest.approx(1 / 3))
    assert shares[2] == (3, 2, pytest.approx(2 / 3))


def test_agreement_without_pairs_is_zero_and_nulls() -> None:
    for opinions, human in (([], {}), ([("d1", "joy", 2)], {}), ([], {"d1": {"joy"}})):
        got = agreement(opinions, human)
        assert got.n == 0 and got.documents == 0
        for s in (got.relevant, got.clearly_relevant):
            assert (s.accuracy, s.precision, s.recall, s.kappa) == (None, None, None, None)
        assert [(b.relevance, b.count, b.chosen, b.share) for b in got.by_relevance] == [(0, 0, 0, None), (1, 0, 0, None), (2, 0, 0, None)]
