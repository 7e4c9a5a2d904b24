"""The hf engine's sampling loop on a real (tiny, random) Llama: exact stops, logprobs, padding, determinism."""

from __future__ import annotations

import pytest
import torch

from toolrl.rollout.engine import GenRequest, SamplingSpec
from toolrl.rollout.hf_engine import HFEngine, sample_next


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from toolrl.models import load_model, load_tokenizer

    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module", params=["continuous", "static"])
def engine(tiny, request):
    model, tok = tiny
    # A random model rarely emits EOS; make none of its tokens end generation so lengths are controlled.
    return HFEngine(model, tok, eos_token_ids={-1}, batch_size=4, mode=request.param, admit_every=2)


def _prompt(engine, text: str) -> list[int]:
    return engine.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_greedy_is_deterministic_and_batch_independent(engine) -> None:
    a, b = _prompt(engine, "Hello there, compute"), _prompt(engine, "A much longer prompt that needs left padding here")
    greedy = SamplingSpec(temperature=0.0)
    alone = engine.generate([GenRequest(a, 12)], greedy)[0].token_ids
    batched = engine.generate([GenRequest(b, 12), GenRequest(a, 12)], greedy)
    assert batched[1].token_ids == alone  # left padding does not change a row's tokens
    assert engine.generate([GenRequest(a, 12)], greedy)[0].token_ids == alone


def test_stop_string_cuts_at_the_completing_token(engine) -> None:
    p = _prompt(engine, "Stop test")
    spec = SamplingSpec(temperature=1.0, seed=5)  # seeded: the same token stream with and without the stop
    free = engine.generate([GenRequest(p, 20)], spec)[0].token_ids
    tok = engine.tokenizer
    # a stop string that the stream first completes at some token k (found from the free run)
    for k in range(3, len(free)):
        stop = tok.decode(free[:k])[-2:]
        if stop.strip() and stop not in tok.decode(free[: k - 1]):
            break
    else:
        raise AssertionError("no usable stop string in the free run")
    out = engine.generate([GenRequest(p, 20, stop=[stop])], spec)[0]
    assert out.finish == "stop" and out.stop_str == stop
    assert out.token_ids == free[: len(out.token_ids)]
    assert stop in tok.decode(out.token_ids) and stop not in tok.decode(out.token_ids[:-1])


def test_length_limit_per_request(engine) -> None:
    p = _prompt(engine, "Lengths")
    outs = engine.generate([GenRequest(p, 3), GenRequest(p, 9)], SamplingSpec(0.0))
    assert [len(o.token_ids) for o in outs] == [3, 9] and all(o.finish == "length" for o in outs)
    assert outs[1].token_ids[:3] == outs[0].token_ids


def test_logprobs_match_a_teacher_forced_forward_pass(engine) -> None:
    p = _prompt(engine, "Logprob check")
    out = engine.generate([GenRequest(p, 8)], SamplingSpec(temperature=1.0, seed=3))[0]
    ids = torch.tensor([p + out.token_ids])
    with torch.no_grad():
        logits = engine.model(ids).logits[0, len(p) - 1 : -1].float()
    ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(out.logprobs), ref, atol=1e-4)


def test_seeded_sampling_reproducible(engine) -> None:
    p = _prompt(engine, "Seeds")
    s = SamplingSpec(temperature=1.0, seed=11)
    assert engine.generate([GenRequest(p, 10)], s)[0].token_ids == engine.generate([GenRequest(p, 10)], s)[0].token_ids


def test_top_k_one_equals_greedy() -> None:
    logits = torch.randn(5, 50)
    tok, _ = sample_next(logits, SamplingSpec(temperature=0.7, top_k=1), torch.Generator().manual_seed(0))
    assert torch.equal(tok, logits.argmax(-1))


def test_top_p_never_samples_outside_nucleus() -> None:
    logits = torch.tensor([[5.0, 4.0, -3.0, -3.0, -3.0]]).repeat(200, 1)
    tok, lp = sample_next(logits, SamplingSpec(temperature=1.0, top_p=0.5), torch.Generator().manual_seed(0))
    assert set(tok.tolist()) <= {0}  # token 0 alone holds > 50% of the mass
    assert torch.allclose(lp, torch.zeros_like(lp))


# ------------------------------------------------------------------ continuous batching: rows join and leave
@pytest.fixture()
def cont(tiny):
    model, tok = tiny
    return HFEngine(model, tok, eos_token_ids={-1}, batch_size=2, mode="continuous", admit_every=2)


def _requests(engine, lengths):
    texts = ["a", "Hello there, compute", "A much longer prompt that needs left padding here", "x y z", "Seven"]
    return [GenRequest(_prompt(engine, texts[i % len(texts)] + f" {i}"), n, request_id=f"r{i}")
            for i, n in enumerate(lengths)]


@pytest.mark.parametrize("spec", [SamplingSpec(0.0), SamplingSpec(1.0, top_p=0.9, seed=7)], ids=["greedy", "seeded"])
def test_joining_and_leaving_rows_get_the_tokens_they_get_alone(cont, spec) -> None:
    reqs = _requests(cont, [3, 12, 5, 9, 4])  # 5 requests through a batch of 2: rows leave early, others join
    together = cont.generate(reqs, spec)
    for r, out in zip(reqs, together):
        alone = cont.generate([r], spec)[0]
        assert out.token_ids == alone.token_ids and len(out.token_ids) == r.max_new_tokens
        assert torch.allclose(torch.tensor(out.logprobs), torch.tensor(alone.logprobs), atol=1e-4)


def test_a_short_request_does_not_wait_for_the_longest_row(cont) -> None:
    short, long_, late = _requests(cont, [2, 30, 3])
    spec = SamplingSpec(0.0)
    cont.submit("long", long_, spec)
    cont.submit("short", short, spec)
    finished: dict[str, int] = {}
    steps = 0
    while cont.has_unfinished():
        steps += 1
        if steps == 4:
            cont.submit("late", late, spec)  # arrives while the long row runs, and joins it
        for key, out in cont.step():
            finished[key] = steps
    assert finished["short"] == 2 and finished["long"] == 30
    assert finished["late"] < finished["long"]  # joined the running batch instead of waiting for it to drain
    assert cont.tokens_generated >= 2 + 30 + 3


def test_a_joined_row_has_exact_logprobs(cont) -> None:
    first, joined = _requests(cont, [16, 8])
    spec = SamplingSpec(temperature=1.0, seed=3)
    cont.submit("first", first, spec)
    for _ in range(5):
        cont.step()
    cont.submit("joined", joined, spec)
    outs = {}
    while cont.has_unfinished():
        outs.update(dict(cont.step()))
    out = outs["joined"]
    p = joined.prompt_ids
    with torch.no_grad():
        logits = cont.model(torch.tensor([p + out.token_ids])).logits[0, len(p) - 1: -1].float()
    ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(out.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(out.logprobs), ref, atol=1e-4)


def test_aborted_requests_never_come_back(cont) -> None:
    a, b = _requests(cont, [20, 4])
    spec = SamplingSpec(0.0)
    cont.submit("a", a, spec)
    cont.submit("b", b, spec)
    cont.step()
    cont.abort(["a"])
    keys = []
    while cont.has_unfinished():
        keys += [k for k, _ in cont.step()]
    assert keys == ["b"]
