"""CTranslate2 sampling on the tiny model: seeded per decoding call (across backend instances and
processes), the model's own log-probs as torch's teacher-forced pass computes them, and the
distribution transformers' warpers make."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from xlgen.backends import decode, installed
from xlgen.backends.batching import pad_batch
from xlgen.backends.export import export_dir
from xlgen.backends.torch_backend import sequence_logprobs
from xlgen.decoding import DecodingConfig
from xlgen.model import XLGenModel, export_model

pytestmark = pytest.mark.skipif(not installed("ctranslate2"), reason="ctranslate2 is not installed")

TEXTS = ["I love this so much", "this is terrible and sad", "what a surprise", "thanks a lot", "meh", "ok then",
         "why would you do that", "best day ever"]
TOP_K_TOP_P = DecodingConfig(strategy="sample", num_samples=5, top_k=20, top_p=0.9, max_new_tokens=8, batch_size=3, seed=1)


@pytest.fixture(scope="module")
def ct2_dir(trained_tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a CTranslate2 export computing in float32."""
    import shutil

    path = tmp_path_factory.mktemp("ct2") / "model"
    shutil.copytree(trained_tiny_run / "model", path)
    export_model(path, "ctranslate2", compute_type="float32")
    return path


def backend(ct2_dir: Path, threads: int = 1):  # type: ignore[no-untyped-def]
    from xlgen.backends.ct2_backend import CT2Backend

    xm = XLGenModel.load(ct2_dir, backend="torch")
    return CT2Backend(export_dir(ct2_dir, "ctranslate2"), xm.tokenizer.eos_id, compute_type="float32", threads=threads)


def sampled(ct2_dir: Path, cfg: DecodingConfig) -> list[list[tuple[tuple[str, ...], float]]]:
    xm = XLGenModel.load(ct2_dir, backend="torch")
    got = decode(backend(ct2_dir), xm.tokenizer, xm.encode_inputs(TEXTS), cfg)
    return [[(c.labels, round(c.logprob, 4)) for c in doc] for doc in got]


def test_auto_samples_on_ctranslate2(ct2_dir: Path):
    xm = XLGenModel.load(ct2_dir)
    assert xm.backend is not None and xm.backend.name == "ctranslate2"
    assert xm.backend.pick(xm.model, TOP_K_TOP_P) is xm.backend.members[0]


def test_a_seed_repeats_the_samples_across_instances_calls_and_processes(ct2_dir: Path):
    first = sampled(ct2_dir, TOP_K_TOP_P)
    assert [len(doc) for doc in first] == [5] * len(TEXTS)
    assert sampled(ct2_dir, TOP_K_TOP_P) == first  # another backend instance
    one = backend(ct2_dir)
    xm = XLGenModel.load(ct2_dir, backend="torch")
    inputs = xm.encode_inputs(TEXTS)
    assert decode(one, xm.tokenizer, inputs, TOP_K_TOP_P) == decode(one, xm.tokenizer, inputs, TOP_K_TOP_P)  # the same one, twice
    other = replace(TOP_K_TOP_P, seed=2)
    assert sampled(ct2_dir, other) != first
    code = ("import json, sys; from tests.unit.test_ct2_sampling import *; "
            f"print(json.dumps(sampled(Path({str(ct2_dir)!r}), TOP_K_TOP_P)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2], env={**os.environ, "OMP_NUM_THREADS": "1"})
    again = [[(tuple(labels), lp) for labels, lp in doc] for doc in json.loads(out.stdout.strip().splitlines()[-1])]
    assert again == first  # another process


@pytest.mark.parametrize("threads", [1, 2])
def test_sampled_logprobs_are_the_models_own(ct2_dir: Path, threads: int):
    """Before any warping (temperature, top-k, top-p), as torch's teacher-forced pass scores the sequences;
    on two threads the documents, dealt out to two sampling translators, come back each in its place
    (the first batch of a call seeds the translators, the second runs them at once)."""
    xm = XLGenModel.load(ct2_dir, backend="torch")
    t5, tok = xm.t5, xm.tokenizer
    ids, mask = pad_batch(xm.encode_inputs(TEXTS), tok.pad_id, "cpu")
    one = backend(ct2_dir, threads)
    assert one.sampling_workers == threads
    rng = np.random.default_rng(0)
    for cfg in (TOP_K_TOP_P, DecodingConfig(strategy="sample", num_samples=4, temperature=0.5, max_new_tokens=8), TOP_K_TOP_P):
        gen = one.generate(ids, mask, None, cfg, rng)  # one decoding call: its translators are made once
        assert len(gen.tokens) == len(TEXTS) * cfg.num_samples
        width = max(len(t) for t in gen.tokens)
        seqs = torch.tensor([[tok.pad_id, *t] + [tok.pad_id] * (width - len(t)) for t in gen.tokens])
        with torch.inference_mode():
            states = t5.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
            n = cfg.num_samples
            want, n_tok = sequence_logprobs(t5, states.repeat_interleave(n, 0), mask.repeat_interleave(n, 0), seqs, tok.eos_id)
        assert [len(t) for t in gen.tokens] == n_tok.tolist()
        np.testing.assert_allclose(gen.logprob, want.numpy(), atol=1e-3)


def warped(logp: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """transformers' warpers (temperature, then top-k, then top-p) on one row of log-probs: probabilities."""
    scores = logp / temperature
    order = np.argsort(-scores, kind="stable")
    keep = np.zeros_like(scores, dtype=bool)
    keep[order[: top_k or len(scores)]] = True
    p = np.exp(scores - scores.max()) * keep
    p /= p.sum()
    mass_before = np.cumsum(p[order]) - p[order]
    keep[order[mass_before >= top_p]] = False
    p = p * keep
    return p / p.sum()


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (2.0, 4, 1.0), (3.0, 0, 0.5), (0.7, 6, 0.8)])
def test_first_tokens_follow_the_warped_distribution(ct2_dir: Path, temperature: float, top_k: int, top_p: float):
    xm = XLGenModel.load(ct2_dir, backend="torch")
    t5, tok = xm.t5, xm.tokenizer
    ids, mask = pad_batch(xm.encode_inputs(TEXTS[:1]), tok.pad_id, "cpu")
    n = 4000
    cfg = DecodingConfig(strategy="sample", num_samples=n, temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=1)
    gen = backend(ct2_dir).generate(ids, mask, None, cfg, np.random.default_rng(0))
    with torch.inference_mode():
        logits = t5(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.tensor([[tok.pad_id]])).logits[0, 0]
    want = warped(torch.log_softmax(logits.double(), -1).numpy(), temperature, top_k, top_p)  # (vocab,)
    firsts = np.array([t[0] for t in gen.tokens])
    assert set(firsts.tolist()) <= set(np.flatnonzero(want).tolist())  # nothing outside the nucleus / the top k
    shares = np.bincount(firsts, minlength=len(want)) / n
    assert np.abs(shares - want).max() < 0.03
    # total variation over the 10 most likely tokens and the rest in one bin (a flat tail is noise at n draws)
    top = np.argsort(-want)[:10]
    binned = [np.append(x[top], 1.0 - x[top].sum()) for x in (shares, want)]
    assert 0.5 * np.abs(binned[0] - binned[1]).sum() < 0.05


def test_chunked_calls_return_what_one_forward_pass_does(ct2_dir: Path):
    """Decoding a batch in chunks of documents (``chunk_docs``) keeps every document's beams and their
    order; seeded samples stay reproducible and keep their per-document shape."""
    from xlgen.backends.ct2_backend import CHUNK_DOCS, CT2Backend

    xm = XLGenModel.load(ct2_dir, backend="torch")
    inputs = xm.encode_inputs(TEXTS)
    path, eos = export_dir(ct2_dir, "ctranslate2"), xm.tokenizer.eos_id
    whole = CT2Backend(path, eos, compute_type="float32", threads=1, chunk_docs=0)
    chunked = CT2Backend(path, eos, compute_type="float32", threads=1, chunk_docs=3)  # 8 documents: chunks of 3, 3, 2
    beam = DecodingConfig(strategy="beam", num_beams=4, max_new_tokens=8, batch_size=8)
    got, want = decode(chunked, xm.tokenizer, inputs, beam), decode(whole, xm.tokenizer, inputs, beam)
    assert [[c.labels for c in doc] for doc in got] == [[c.labels for c in doc] for doc in want]
    np.testing.assert_allclose([c.logprob for doc in got for c in doc], [c.logprob for doc in want for c in doc], atol=1e-5)
    assert [len(doc) for doc in got] == [4] * len(TEXTS)
    cfg = replace(TOP_K_TOP_P, batch_size=8)
    first = decode(chunked, xm.tokenizer, inputs, cfg)
    assert [len(doc) for doc in first] == [5] * len(TEXTS)
    assert decode(CT2Backend(path, eos, compute_type="float32", threads=1, chunk_docs=3), xm.tokenizer, inputs, cfg) == first
    one, two = CT2Backend(path, eos, threads=1), CT2Backend(path, eos, threads=2)
    assert one.chunk_docs == two.chunk_docs == CHUNK_DOCS > 0  # chunks on CPU by default
    assert two.translator.num_translators == 2  # two one-thread beam workers
    assert CT2Backend(path, eos, threads=2, workers=1).translator.num_translators == one.translator.num_translators == 1
    got, want = decode(two, xm.tokenizer, inputs, beam), decode(CT2Backend(path, eos, threads=2, workers=1), xm.tokenizer, inputs, beam)
    assert [[c.labels for c in doc] for doc in got] == [[c.labels for c in doc] for doc in want]  # the workers' chunks of 4, one worker's of 8
    np.testing.assert_allclose([c.logprob for doc in got for c in doc], [c.logprob for doc in want for c in doc], atol=1e-5)
    # a call too small for a chunk per beam worker is cut so that each gets one (a service micro-batch of 8: 4 + 4)
    assert [two.chunk_size(n) for n in (1, 3, 8, 16, 32)] == [CHUNK_DOCS, 2, 4, CHUNK_DOCS, CHUNK_DOCS]
    assert [one.chunk_size(n) for n in (3, 8)] == [CHUNK_DOCS] * 2 and whole.chunk_size(3) == 0
    real, sizes = two.translator, list[int]()

    class Spy:
        def translate_batch(self, source, **options):  # type: ignore[no-untyped-def]
            sizes.append(options["max_batch_size"])
            return real.translate_batch(source, **options)

    two.translator = Spy()
    decode(two, xm.tokenizer, inputs[:6], beam)
    two.translator = real
    assert sizes == [3]
    sample2 = replace(cfg, seed=5, batch_size=3)  # three batches: the two sampling translators seeded in the first
    load, loads = two._load, []
    two._load = lambda: loads.append(1) or load()
    got = decode(two, xm.tokenizer, inputs, sample2)
    assert got == decode(CT2Backend(path, eos, threads=2), xm.tokenizer, inputs, sample2)
    assert two.sampling_workers == 2 and len(loads) == 2  # a translator per worker, for the whole call
    assert not two._samplers  # released when the call ended
    assert got != decode(one, xm.tokenizer, inputs, sample2)  # other streams than one thread's
    with pytest.raises(ValueError, match="chunk_docs"):
        CT2Backend(path, eos, chunk_docs=-1)
    with pytest.raises(ValueError, match="workers"):
        CT2Backend(path, eos, workers=0)


def test_concurrent_calls_keep_their_own_seeded_samples(ct2_dir: Path):
    """Two decoding calls at once on one two-thread backend (as the service may run them): each gets
    the samples it gets alone, its sampling translators seeded under the lock before they run."""
    from concurrent.futures import ThreadPoolExecutor

    xm = XLGenModel.load(ct2_dir, backend="torch")
    inputs = xm.encode_inputs(TEXTS * 4)
    cfgs = [replace(TOP_K_TOP_P, seed=s, batch_size=8) for s in (11, 12, 13, 14)]
    alone = [decode(backend(ct2_dir, 2), xm.tokenizer, inputs, c) for c in cfgs]
    shared = backend(ct2_dir, 2)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda c: decode(shared, xm.tokenizer, inputs, c), cfgs))
    assert together == alone
    assert len({str(a) for a in alone}) == len(cfgs)  # the seeds differ, so do the samples


def test_loading_ctranslate2_models_keeps_torchs_threads(ct2_dir: Path, tiny_encoder_dir: Path, cache_dir: Path):
    """CTranslate2 sets the loading thread's OpenMP thread count to a model's intra-op threads, which torch reads
    as its own: one-thread workers (the generator's beam workers, its sampling translators, the encoder's
    workers) must not leave a two-thread process running torch on one."""
    from xlgen.encoders import EncoderConfig, SentenceEncoder

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = backend(ct2_dir, threads=2)
        assert torch.get_num_threads() == 2
        xm = XLGenModel.load(ct2_dir, backend="torch")
        decode(two, xm.tokenizer, xm.encode_inputs(TEXTS), TOP_K_TOP_P)  # loads one-thread sampling translators
        assert torch.get_num_threads() == 2
        enc = SentenceEncoder.load(EncoderConfig(name=str(tiny_encoder_dir), backend="ctranslate2", threads=2))
        assert enc._ct2 is not None and enc._ct2.workers == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
