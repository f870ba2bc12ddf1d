import math

import pytest
import torch

from xlgen.backends import decode
from xlgen.backends.torch_backend import TorchBackend, sequence_logprobs
from xlgen.decoding import Candidate, DecodingConfig, label_scores


def test_config_validation():
    with pytest.raises(ValueError, match="unknown decoding strategy"):
        DecodingConfig(strategy="topsy")
    with pytest.raises(ValueError):
        DecodingConfig(temperature=0)
    with pytest.raises(ValueError):
        DecodingConfig(top_p=0)
    assert DecodingConfig().num_return == 5
    assert DecodingConfig(strategy="greedy").num_return == 1


def test_label_scores_are_beam_mass_and_sample_fraction():
    cands = [Candidate(("a", "b"), math.log(0.5), 3), Candidate(("a",), math.log(0.2), 2), Candidate(("c",), math.log(0.1), 2)]
    beam = label_scores(cands, "beam")
    assert beam == pytest.approx({"a": 0.7, "b": 0.5, "c": 0.1})
    assert list(beam) == ["a", "b", "c"]
    sample = label_scores(cands, "sample")
    assert sample == pytest.approx({"a": 2 / 3, "b": 1 / 3, "c": 1 / 3})


def test_rescored_logprob_matches_generate_scores(tiny_model):
    """The teacher-forced rescoring equals the sum of generate's own greedy token log-probs."""
    t5, tok = tiny_model.t5, tiny_model.tokenizer
    ids = tiny_model.encode_inputs(["thank you so much!"])
    x = torch.tensor(ids)
    out = t5.generate(input_ids=x, max_new_tokens=12, do_sample=False, num_beams=1, output_scores=True,
                      return_dict_in_generate=True, decoder_start_token_id=tok.pad_id, eos_token_id=tok.eos_id)
    trans = t5.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)[0]
    gen = out.sequences[0, 1:]
    n = int((gen == tok.eos_id).nonzero()[0, 0]) + 1 if (gen == tok.eos_id).any() else len(gen)
    enc = t5.get_encoder()(input_ids=x).last_hidden_state
    logprob, n_tok = sequence_logprobs(t5, enc, torch.ones_like(x), out.sequences, tok.eos_id)
    assert int(n_tok[0]) == n
    assert float(logprob[0]) == pytest.approx(float(trans[:n].sum()), abs=1e-4)


def test_beam_returns_sorted_candidates_and_cache_reuses_encoder(tiny_model):
    texts = ["I am so happy for you", "this is awful", "ok", "why would you do that?"]
    inputs = tiny_model.encode_inputs(texts)
    cfg = DecodingConfig(strategy="beam", num_beams=3, max_new_tokens=12, batch_size=3)
    calls = []
    enc = tiny_model.t5.get_encoder()
    handle = enc.register_forward_hook(lambda *a: calls.append(1))
    try:
        cache: dict = {}
        backend = TorchBackend(tiny_model.t5, tiny_model.tokenizer.eos_id, tiny_model.tokenizer.pad_id)
        first = decode(backend, tiny_model.tokenizer, inputs, cfg, encoder_cache=cache)
        n_first = len(calls)
        second = decode(backend, tiny_model.tokenizer, inputs, cfg, encoder_cache=cache)
    finally:
        handle.remove()
    assert n_first == 2  # two batches
    assert len(calls) == n_first  # the second pass read every encoder state from the cache
    assert [[c.labels for c in cs] for cs in first] == [[c.labels for c in cs] for cs in second]
    for cs in first:
        assert len(cs) == 3
        assert [c.logprob for c in cs] == sorted((c.logprob for c in cs), reverse=True)
        for c1, c2 in zip(cs, second[first.index(cs)], strict=True):
            assert c1.logprob == pytest.approx(c2.logprob, abs=1e-4)


def test_sampling_is_seeded(tiny_model):
    cfg = DecodingConfig(strategy="sample", num_samples=4, temperature=1.5, top_k=20, top_p=0.9, max_new_tokens=12, seed=3)
    a = tiny_model.predict(["what a day", "love it"], cfg)
    b = tiny_model.predict(["what a day", "love it"], cfg)
    assert [p.all_scores for p in a] == [p.all_scores for p in b]
    assert all(len(p.candidates) == 4 for p in a)


@pytest.mark.parametrize("temperature", [5e-324, 1e-3, 1e3, float("inf"), float("nan")])
def test_temperature_out_of_range_is_refused(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature must lie in"):
        DecodingConfig(strategy="sample", temperature=temperature)
    DecodingConfig(strategy="sample", temperature=0.01)
    DecodingConfig(strategy="sample", temperature=100)
