"""The inference engine on the tiny model: greedy parity with transformers, sampling, stops, streaming, adapters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tuneforge.core.errors import InferenceError
from tuneforge.data.examples import TrainingExample
from tuneforge.data.tokenize import render_chat, render_prompt
from tuneforge.inference import GenerationRequest, InferenceEngine
from tuneforge.model.load import end_of_turn_ids

QUESTIONS = ["sky?", "what color is the grass in spring?", "rose", "name the color of a cherry, please, now", "hi"]


def prompts(tokenizer) -> list[str]:
    return [render_prompt(tokenizer, TrainingExample.from_pair(q, "x")) for q in QUESTIONS]


def transformers_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> list[int]:
    """Plain ``model.generate`` greedy tokens of one prompt, the end-of-turn token left out."""
    encoded = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    stop = end_of_turn_ids(tokenizer)
    output = model.generate(**encoded, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stop,
                            pad_token_id=tokenizer.pad_token_id)
    tokens = output[0, encoded["input_ids"].shape[1] :].tolist()
    return tokens[: next((i for i, t in enumerate(tokens) if t in stop), len(tokens))]


def test_greedy_equals_transformers_generate(tiny_model, tiny_tokenizer):
    engine = InferenceEngine(tiny_model, tiny_tokenizer)
    results = engine.generate([GenerationRequest(prompt=p, max_new_tokens=12) for p in prompts(tiny_tokenizer)])
    for prompt, result in zip(prompts(tiny_tokenizer), results):
        expected = transformers_greedy(tiny_model, tiny_tokenizer, prompt, 12)
        assert result.token_ids == expected
        assert result.text == tiny_tokenizer.decode(expected, skip_special_tokens=True)
        assert result.prompt_tokens == len(tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert any(len(r.token_ids) > 3 for r in results)  # the comparison covered real continuations


def test_batched_equals_one_at_a_time(tiny_model, tiny_tokenizer):
    engine = InferenceEngine(tiny_model, tiny_tokenizer)
    requests = [GenerationRequest(prompt=p, max_new_tokens=3 + 2 * i) for i, p in enumerate(prompts(tiny_tokenizer))]
    batched = engine.generate(requests, batch_size=8)
    single = [engine.generate([request])[0] for request in requests]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in single]


def test_sampling_is_reproducible_per_seed(tiny_model, tiny_tokenizer):
    engine = InferenceEngine(tiny_model, tiny_tokenizer)
    prompt = prompts(tiny_tokenizer)[1]

    def sample(seed: int, top_p: float = 1.0) -> list[int]:
        return engine.generate([GenerationRequest(prompt=prompt, max_new_tokens=12, temperature=1.0, top_p=top_p, seed=seed)])[0].token_ids

    assert sample(7) == sample(7)
    assert len({tuple(sample(seed)) for seed in range(4)}) > 1  # different seeds, different texts
    # A seeded row gives the same text whatever shares its batch.
    others = [GenerationRequest(prompt=p, max_new_tokens=12, temperature=1.0, seed=99) for p in prompts(tiny_tokenizer)[2:]]
    mixed = engine.generate([GenerationRequest(prompt=prompt, max_new_tokens=12, temperature=1.0, seed=7), *others])
    assert mixed[0].token_ids == sample(7)
    # A nucleus this small holds only the most likely token: sampling becomes greedy.
    greedy = engine.generate([GenerationRequest(prompt=prompt, max_new_tokens=12)])[0].token_ids
    assert sample(3, top_p=1e-9) == greedy


def test_stop_sequences_cut_the_text(tiny_model, tiny_tokenizer):
    engine = InferenceEngine(tiny_model, tiny_tokenizer)
    prompt = prompts(tiny_tokenizer)[1]
    full = engine.generate([GenerationRequest(prompt=prompt, max_new_tokens=16)])[0]
    assert full.finish_reason == "length" and len(full.text) > 6
    stop = full.text[4:6]
    cut = engine.generate([GenerationRequest(prompt=prompt, max_new_tokens=16, stop=[stop, "never there"])])[0]
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens  # generation ended there


def test_streaming_pieces_add_up_to_the_text(tiny_model, tiny_tokenizer):
    engine = InferenceEngine(tiny_model, tiny_tokenizer)
    full = engine.generate([GenerationRequest(prompt=prompts(tiny_tokenizer)[1], max_new_tokens=16)])[0]
    requests = [GenerationRequest(prompt=p, max_new_tokens=16) for p in prompts(tiny_tokenizer)]
    requests[1].stop = (full.text[5:8],)
    requests[2].temperature, requests[2].seed = 1.0, 5
    pieces: dict[int, list[str]] = {i: [] for i in range(len(requests))}
    results = engine.generate(requests, on_token=lambda i, text: pieces[i].append(text))
    for i, result in enumerate(results):
        assert "".join(pieces[i]) == result.text
    assert max(len(p) for p in pieces.values()) > 3  # streamed in several pieces, not once at the end
    assert results[1].finish_reason == "stop"


@pytest.fixture
def force_tokens(tiny_model):
    """``force_tokens(first, then)``: the model predicts ``first`` as its next token, ``then`` ever after."""
    handles = []

    def force(first: int, then: int) -> None:
        calls = {"n": 0}

        def hook(module, inputs, output):
            output = output.clone()
            output[..., first if calls["n"] == 0 else then] += 1e4
            calls["n"] += 1
            return output

        handles.append(tiny_model.get_output_embeddings().register_forward_hook(hook))

    yield force
    for handle in handles:
        handle.remove()


def test_finish_reason_and_token_counts(tiny_model, tiny_tokenizer, force_tokens):
    engine = InferenceEngine(tiny_model, tiny_tokenizer)
    (b,) = tiny_tokenizer("b", add_special_tokens=False)["input_ids"]
    force_tokens(b, tiny_tokenizer.convert_tokens_to_ids("<|im_end|>"))
    stopped = engine.generate([GenerationRequest(prompt=prompts(tiny_tokenizer)[0], max_new_tokens=10)])[0]
    assert (stopped.text, stopped.finish_reason, stopped.completion_tokens) == ("b", "stop", 2)  # "b" then end of turn
    force_tokens(b, b)
    long = engine.generate([GenerationRequest(prompt=prompts(tiny_tokenizer)[0], max_new_tokens=5)])[0]
    assert (long.text, long.finish_reason, long.completion_tokens) == ("bbbbb", "length", 5)


def test_chat_messages_use_the_chat_template(tiny_model, tiny_tokenizer):
    engine = InferenceEngine(tiny_model, tiny_tokenizer)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "sky?"}]
    by_messages = engine.generate([GenerationRequest(messages=messages, max_new_tokens=8)])[0]
    prompt = render_chat(tiny_tokenizer, messages, add_generation_prompt=True)
    assert by_messages == engine.generate([GenerationRequest(prompt=prompt, max_new_tokens=8)])[0]


def test_invalid_requests_are_named(tiny_model, tiny_tokenizer):
    engine = InferenceEngine(tiny_model, tiny_tokenizer)
    bad = [GenerationRequest(prompt="x", max_new_tokens=0), GenerationRequest(), GenerationRequest(prompt="x", top_p=0),
           GenerationRequest(prompt="x", temperature=-1), GenerationRequest(prompt="x", adapter="nope")]
    with pytest.raises(InferenceError) as error:
        engine.generate(bad)
    message = str(error.value)
    for text in ("request 0: max_new_tokens", "request 1: give exactly one", "request 2: top_p", "request 3: temperature",
                 "request 4: adapter 'nope' is not loaded"):
        assert text in message
    assert tiny_model.training is False


def make_adapter(model_dir: Path, directory: Path, seed: int) -> Path:
    """A LoRA adapter on the tiny model whose B matrices are random (so it changes the outputs), saved."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2.0)
    peft_model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def two_adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return make_adapter(tiny_model_dir, root / "a", 1), make_adapter(tiny_model_dir, root / "b", 2)


def test_mixed_adapter_batch_equals_each_adapter_alone(tiny_model_dir, tiny_tokenizer, two_adapters):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    engine = InferenceEngine(base, tiny_tokenizer)
    engine.load_adapter("a", two_adapters[0])
    engine.load_adapter("b", two_adapters[1])
    assert engine.adapters == ["a", "b"] and engine.default_adapter == "base"
    texts = prompts(tiny_tokenizer)
    names = ["a", "b", "base", None, "b", "a"]
    requests = [GenerationRequest(prompt=texts[i % len(texts)], max_new_tokens=8, adapter=name) for i, name in enumerate(names)]
    mixed = engine.generate(requests)
    alone = [engine.generate([request])[0] for request in requests]
    assert [r.token_ids for r in mixed] == [r.token_ids for r in alone]
    assert [r.adapter for r in mixed] == ["a", "b", None, None, "b", "a"]
    # The adapters really differ from each other and from the base on the same prompt.
    same_prompt = [engine.generate([GenerationRequest(prompt=texts[1], max_new_tokens=8, adapter=n)])[0].token_ids for n in ("a", "b", "base")]
    assert len({tuple(tokens) for tokens in same_prompt}) == 3
    # The base rows equal a plain model without any adapter.
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert mixed[2].token_ids == InferenceEngine(plain, tiny_tokenizer).generate([requests[2]])[0].token_ids
    # set_adapter changes what requests without an adapter use.
    engine.set_adapter("b")
    assert engine.generate([GenerationRequest(prompt=texts[1], max_new_tokens=8)])[0].token_ids == same_prompt[1]


def test_load_adapter_errors(tiny_model, tiny_tokenizer, tmp_path):
    engine = InferenceEngine(tiny_model, tiny_tokenizer)
    with pytest.raises(InferenceError, match="adapter_config.json"):
        engine.load_adapter("x", tmp_path)
    with pytest.raises(InferenceError, match="means the base model"):
        engine.load_adapter("base", tmp_path)


def test_shared_prompt_prefix_gives_the_same_tokens(tiny_model, tiny_tokenizer):
    """Prompts with one long common start (an instruction) compute it once; the answers do not change."""
    instruction = "name the color of a thing: blue, green or red. the color of the sky is blue and the sea is blue."
    texts = [render_chat(tiny_tokenizer, [{"role": "system", "content": instruction}, {"role": "user", "content": q}],
                         add_generation_prompt=True) for q in QUESTIONS]
    engine = InferenceEngine(tiny_model, tiny_tokenizer)
    assert engine._shared_prefix([engine._row(i, GenerationRequest(prompt=t), engine.encode(GenerationRequest(prompt=t)))
                                  for i, t in enumerate(texts)]) >= 20
    batched = engine.generate([GenerationRequest(prompt=t, max_new_tokens=10) for t in texts])
    for text, result in zip(texts, batched):
        assert result.token_ids == transformers_greedy(tiny_model, tiny_tokenizer, text, 10)


def test_prompt_tuning_generates_through_the_wrapper(tiny_model_dir, tiny_tokenizer):
    """Prompt learning injects virtual tokens in the wrapper's forward: the engine's answers are the wrapper's own greedy ones."""
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.normal_(0, 3.0)
    model.eval()
    engine = InferenceEngine(model, tiny_tokenizer)
    texts = prompts(tiny_tokenizer)[:3]
    results = engine.generate([GenerationRequest(prompt=t, max_new_tokens=8) for t in texts])
    for text, result in zip(texts, results):
        assert result.token_ids == transformers_greedy(model, tiny_tokenizer, text, 8)
    # The virtual tokens count: the first answer token's scores differ from the bare base model's.
    encoded = tiny_tokenizer(texts[0], add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        tuned_logits = model(**encoded).logits[0, -1]
        with model.disable_adapter():
            base_logits = model(**encoded).logits[0, -1]
    assert not torch.allclose(tuned_logits, base_logits, atol=1e-3)
    sampled = [engine.generate([GenerationRequest(prompt=texts[0], max_new_tokens=8, temperature=1.0, seed=3)])[0].token_ids for _ in range(2)]
    assert sampled[0] == sampled[1]
