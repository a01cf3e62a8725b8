"""The llama.cpp, Ollama and ONNX exports of a tiny LoRA run, each checked against the trained model.

Tests that need the ``export`` extra (llama-cpp-python and its llama.cpp converters, onnxruntime-genai)
skip with the reason when it is absent; ``make setup-export`` installs it and CI runs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.export import ExportError, export_model
from tuneforge.export.api import MANIFEST


def _missing_llama_cpp() -> str | None:
    try:
        from tuneforge.export.llama_cpp import require_tools

        require_tools()
    except ExportError as error:
        return str(error)
    return None


def _missing_onnx() -> str | None:
    try:
        from tuneforge.export.onnx import require_builder

        require_builder()
    except ExportError as error:
        return str(error)
    return None


needs_llama_cpp = pytest.mark.skipif(bool(_missing_llama_cpp()), reason=f"export extra absent: {_missing_llama_cpp()}")
needs_onnx = pytest.mark.skipif(bool(_missing_onnx()), reason=f"export extra absent: {_missing_onnx()}")


@pytest.fixture(scope="module")
def export_run(lora_run):
    """The shared tiny LoRA run (conftest's ``lora_run``: a test split, trained enough to answer something)."""
    return Path(lora_run.run_dir)


# ---- Ollama Modelfile vs the HF chat template (no extra needed) ---------------------------------

def test_the_modelfile_template_renders_golden_conversations_exactly_as_the_hf_template(tiny_tokenizer):
    from tuneforge.export.ollama import GOLDEN_CONVERSATIONS, learn_chat_format, modelfile, render_go_template

    chat = learn_chat_format(tiny_tokenizer)
    text = modelfile(chat, "model-f16.gguf")
    assert text.startswith("FROM ./model-f16.gguf\nTEMPLATE \"\"\"") and 'PARAMETER stop "<|im_end|>"' in text
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    for messages in GOLDEN_CONVERSATIONS + [[{"role": "user", "content": "{{ not a template }}"}]]:
        expected = tiny_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert render_go_template(template, messages, chat.default_system) == expected


def test_a_template_with_a_default_system_message_gets_a_system_line(tiny_tokenizer):
    from tuneforge.export.ollama import GOLDEN_CONVERSATIONS, learn_chat_format, modelfile, render_go_template

    tokenizer = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
    tokenizer.chat_template = (  # SmolLM2's shape: a system turn is inserted when the conversation has none
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    chat = learn_chat_format(tokenizer)
    assert chat.default_system == "You are helpful."
    assert 'SYSTEM """You are helpful."""' in modelfile(chat, "m.gguf", adapter="a.gguf")
    assert "ADAPTER ./a.gguf" in modelfile(chat, "m.gguf", adapter="a.gguf")
    for messages in GOLDEN_CONVERSATIONS:
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert render_go_template(chat.go_template(), messages, chat.default_system) == expected


def test_a_template_that_is_not_per_message_is_refused_clearly(tiny_tokenizer):
    from tuneforge.export.ollama import learn_chat_format

    tokenizer = type(tiny_tokenizer).from_pretrained(tiny_tokenizer.name_or_path)
    tokenizer.chat_template = (  # Llama-2 style: the system text goes inside the first user turn
        "{% for m in messages %}{% if m['role'] == 'system' %}{% set sys = m['content'] %}{% elif m['role'] == 'user' %}"
        "[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }} {% endif %}{% endfor %}")
    with pytest.raises(ExportError, match="cannot translate the chat template .* into an Ollama TEMPLATE"):
        learn_chat_format(tokenizer)


# ---- GGUF through llama.cpp ---------------------------------------------------------------------

@needs_llama_cpp
@pytest.mark.parametrize("quantize", ["f16", "q8_0"])
def test_gguf_round_trip_through_llama_cpp(export_run, tmp_path, tiny_tokenizer, quantize):
    from tuneforge.export.llama_cpp import GGUFModel, read_metadata

    result = export_model(export_run, "gguf", quantize=quantize, out_dir=tmp_path / "gguf")
    parity = result.details["parity"]
    assert parity["passed"] and parity["tokenizer_agreement"] == 1.0 and parity["greedy_agreement"] >= 0.95
    gguf = tmp_path / "gguf" / f"model-{quantize}.gguf"
    manifest = json.loads((tmp_path / "gguf" / MANIFEST).read_text())
    assert manifest["quantization"] == quantize and f"model-{quantize}.gguf" in manifest["files"]
    assert "llama-cpp-python" in manifest["tools"]
    assert GGUFModel(gguf).chat_template() == tiny_tokenizer.chat_template
    assert read_metadata(gguf)["tokenizer.chat_template"] == tiny_tokenizer.chat_template


@needs_llama_cpp
@pytest.mark.slow  # 60-120 s on a loaded 2-core machine: in the slow stage of CI
def test_gguf_lora_loads_on_its_base_gguf_and_answers_like_the_run(export_run, tmp_path):
    result = export_model(export_run, "gguf-lora", out_dir=tmp_path / "lora")
    parity = result.details["parity"]
    assert parity["passed"] and parity["greedy_agreement"] >= 0.99 and parity["top1_agreement"] > 0.99
    assert [p.name for p in result.files] == ["adapter-f16.gguf"]


@needs_llama_cpp
def test_ollama_directory_has_the_gguf_and_a_modelfile_with_template_and_stops(export_run, tmp_path):
    result = export_model(export_run, "ollama", quantize="q8_0", out_dir=tmp_path / "ollama")
    modelfile = (tmp_path / "ollama" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-q8_0.gguf\n") and 'TEMPLATE """' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and result.details["parity"]["passed"]


@needs_llama_cpp
def test_bad_gguf_input_names_the_valid_choices(export_run, tmp_path):
    with pytest.raises(ExportError, match="unknown GGUF quantization 'q3_x'; choose from: .*q4_k_m.*q8_0"):
        export_model(export_run, "gguf", quantize="q3_x", out_dir=tmp_path / "x")
    with pytest.raises(ExportError, match="a GGUF LoRA adapter can be written as f32, f16, bf16, q8_0"):
        export_model(export_run, "gguf-lora", quantize="q4_k_m", out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


@needs_llama_cpp
def test_an_architecture_the_converter_does_not_know_is_refused(tmp_path):
    from tuneforge.export.llama_cpp import check_architecture

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MadeUpForCausalLM"]}))
    with pytest.raises(ExportError, match="does not support the architecture MadeUpForCausalLM"):
        check_architecture(tmp_path)


def test_a_missing_llama_cpp_says_what_to_install(export_run, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_LLAMA_CPP", str(tmp_path / "no-llama.cpp"))
    with pytest.raises(ExportError, match="make setup-export"):
        export_model(export_run, "gguf", out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_missing_onnx_extra_says_what_to_install(export_run, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime_genai", None)  # as if not installed: importing it fails
    # Where the extra is not installed at all, onnxruntime itself is the first missing module named.
    with pytest.raises(ExportError, match=r"onnxruntime(_genai)? is not installed .*pip install 'tuneforge\[export\]'"):
        export_model(export_run, "onnx", out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


@needs_llama_cpp
def test_an_unsupported_architecture_is_refused_before_anything_is_written(export_run, tmp_path):
    import shutil

    import yaml

    from tuneforge.export.run import open_run

    base = tmp_path / "base"
    shutil.copytree(open_run(export_run).base_dir(), base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "architectures": ["MadeUpForCausalLM"]}))
    run = tmp_path / "run"
    shutil.copytree(export_run, run)
    fields = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**fields, "model": str(base)}))
    for format in ("gguf", "gguf-lora", "ollama"):
        with pytest.raises(ExportError, match="does not support the architecture MadeUpForCausalLM.*merged or onnx"):
            export_model(run, format, out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (run / "export").exists()


def test_a_lora_gguf_of_trained_embeddings_on_a_tied_model_is_refused(tmp_path):
    from tuneforge.export.gguf import refuse_what_lora_gguf_cannot_hold

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text(json.dumps({"tie_word_embeddings": True}))
    (tmp_path / "adapter").mkdir()
    config = {"peft_type": "LORA", "target_modules": ["q_proj", "embed_tokens"]}
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="trains embed_tokens of a model whose embeddings and lm_head are tied"):
        refuse_what_lora_gguf_cannot_hold(tmp_path / "adapter", tmp_path / "base")
    config["modules_to_save"] = ["lm_head"]
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="saves whole modules"):
        refuse_what_lora_gguf_cannot_hold(tmp_path / "adapter", tmp_path / "base")


# ---- ONNX ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_base(tiny_model_dir, tmp_path_factory):
    """A tiny Llama with 16-wide attention heads (ONNX Runtime's CPU attention needs a multiple of 16)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 2, 1, 16
    torch.manual_seed(0)
    model_dir = tmp_path_factory.mktemp("tiny-onnx") / "model"
    LlamaForCausalLM(config).save_pretrained(model_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def onnx_run(train_run, onnx_base):
    """A LoRA run on ``onnx_base``."""
    return Path(train_run(model=str(onnx_base), test_split=0.2, learning_rate=1e-2, epochs=1).run_dir)


@needs_onnx
def test_onnx_refuses_heads_onnx_runtime_cannot_run(export_run, tmp_path):
    with pytest.raises(ExportError, match="head size is 8; ONNX Runtime's CPU GroupQueryAttention"):
        export_model(export_run, "onnx", out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


@needs_onnx
def test_onnx_round_trip_through_onnxruntime(onnx_run, tmp_path):
    result = export_model(onnx_run, "onnx", out_dir=tmp_path / "onnx")
    parity = result.details["parity"]
    assert parity["passed"] and parity["greedy_agreement"] == 1.0 and parity["tokenizer_agreement"] == 1.0
    assert parity["max_abs_logit_diff"] < 1e-3
    assert (tmp_path / "onnx" / "genai_config.json").is_file() and (tmp_path / "onnx" / "model.onnx").is_file()


@needs_onnx
def test_an_unknown_onnx_precision_is_refused(export_run, tmp_path):
    with pytest.raises(ExportError, match="unknown ONNX precision 'int3'; choose from: fp32, int4"):
        export_model(export_run, "onnx", quantize="int3", out_dir=tmp_path / "x")


@needs_onnx
def test_onnx_fp16_is_refused_for_the_cpu_with_the_reason(export_run, tmp_path):
    with pytest.raises(ExportError, match="ONNX fp16 is not exported for the CPU.*cannot decode.*choose fp32.*int4"):
        export_model(export_run, "onnx", quantize="fp16", out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


@needs_onnx
@pytest.mark.slow  # runs the builder (about 20 s on 2 shared cores)
def test_onnx_fp16_cpu_refusal_is_still_true(onnx_run, tmp_path):
    """The refusal is a measured fact: if an upgrade makes fp16 decode on the CPU, this fails and the refusal can go."""
    import onnxruntime_genai as og

    from tuneforge.export.onnx_adapters import run_builder
    from tuneforge.export.run import open_run

    run_builder(open_run(onnx_run).base_dir(), tmp_path / "fp16", "fp16", tmp_path / "cache")
    model = og.Model(str(tmp_path / "fp16"))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=12)
    generator = og.Generator(model, params)
    generator.append_tokens([5, 6, 7, 8])
    generator.generate_next_token()  # the prompt runs
    with pytest.raises(RuntimeError, match="Shape mismatch attempting to re-use buffer"):
        generator.generate_next_token()  # the first step with the KV cache does not


# ---- adapters kept apart: Ollama ADAPTER, several adapters in one ONNX model ---------------------

def test_the_modelfile_check_catches_a_template_or_stop_that_differs_from_the_hf_template(tiny_tokenizer, tmp_path):
    from tuneforge.export.ollama import check_modelfile, learn_chat_format, modelfile

    chat = learn_chat_format(tiny_tokenizer)
    path = tmp_path / "Modelfile"
    path.write_text(modelfile(chat, "base-q8_0.gguf", adapter="adapter-f16.gguf"))
    assert check_modelfile(path, tiny_tokenizer) == []
    path.write_text(modelfile(chat, "m.gguf").replace("<|im_start|>assistant\n", "<|im_start|>assistant"))
    assert any(problem.startswith("template: the Modelfile renders") for problem in check_modelfile(path, tiny_tokenizer))
    path.write_text(modelfile(chat, "m.gguf").replace('PARAMETER stop "<|im_end|>"', ""))
    assert check_modelfile(path, tiny_tokenizer) == ["template: the Modelfile does not stop at the end-of-turn token(s) <|im_end|>"]
    path.write_text("FROM ./m.gguf\n")
    assert "has no TEMPLATE" in check_modelfile(path, tiny_tokenizer)[0]


def test_lora_mode_is_refused_where_a_format_has_none(export_run, tmp_path):
    with pytest.raises(ExportError, match="--format merged has no separate-adapter mode.*ollama or onnx"):
        export_model(export_run, "merged", lora=True, out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()


@needs_llama_cpp
@pytest.mark.slow  # converts/builds twice (about a minute on 2 shared cores)
def test_ollama_lora_mode_serves_the_adapter_on_the_base_gguf_with_an_adapter_line(export_run, tmp_path, capsys):
    from tuneforge.cli.main import main

    out = tmp_path / "ollama"
    assert main(["export", str(export_run), "--format", "ollama", "--lora", "--quantize", "q8_0", "--out", str(out)]) == 0
    assert "golden conversations exactly as the HF chat template" in capsys.readouterr().out
    text = (out / "Modelfile").read_text()
    assert text.startswith("FROM ./base-q8_0.gguf\nADAPTER ./adapter-f16.gguf\nTEMPLATE \"\"\"")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["lora"] is True and {"base-q8_0.gguf", "adapter-f16.gguf", "Modelfile"} <= set(manifest["files"])
    assert manifest["modelfile"]["problems"] == [] and manifest["modelfile"]["adapter"] == "adapter-f16.gguf"
    assert manifest["parity"]["passed"] and manifest["parity"]["greedy_agreement"] >= 0.95
    # the template check is part of --check-only too: a Modelfile edited to a wrong template fails it
    (out / "Modelfile").write_text(text.replace('PARAMETER stop "<|im_end|>"\n', ""))
    with pytest.raises(ExportError, match="does not stop at the end-of-turn token"):
        export_model(export_run, "ollama", out_dir=out, check_only=True)


@pytest.fixture(scope="module")
def second_onnx_run(train_run, onnx_base):
    """Another LoRA run on the same base (other seed, rank and learning rate): a second adapter."""
    return Path(train_run(model=str(onnx_base), test_split=0.2, learning_rate=5e-3, epochs=1, seed=7, lora_r=4).run_dir)


@needs_onnx
@pytest.mark.slow  # converts/builds twice (about a minute on 2 shared cores)
def test_several_lora_adapters_of_one_base_in_one_onnx_model(onnx_run, second_onnx_run, tmp_path):
    import numpy as np
    import onnxruntime_genai as og

    from tuneforge.export.onnx import OnnxModel

    out = tmp_path / "onnx"
    result = export_model(onnx_run, "onnx", lora=True, extra_adapters=[second_onnx_run], out_dir=out)
    adapters = json.loads((out / "adapters.json").read_text())
    assert [entry["run_dir"] for entry in adapters.values()] == [str(onnx_run.resolve()), str(second_onnx_run.resolve())]
    ranks = [json.loads((run / "adapter" / "adapter_config.json").read_text())["r"] for run in (onnx_run, second_onnx_run)]
    assert [entry["rank"] for entry in adapters.values()] == ranks and ranks[0] != ranks[1]  # ranks may differ
    for name, parity in result.details["adapters"].items():  # each adapter file answers like its own run
        assert parity["passed"] and parity["greedy_agreement"] == 1.0 and parity["max_abs_logit_diff"] < 1e-3, name
    # one model, the adapters switched per generator by ONNX Runtime GenAI's own API; none: the base itself
    model = og.Model(str(out))
    loaded = og.Adapters(model)
    for name, entry in adapters.items():
        loaded.load(str(out / entry["file"]), name)
    last_logits = {}
    for name in [None, *adapters]:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=16)
        generator = og.Generator(model, params)
        if name:
            generator.set_active_adapter(loaded, name)
        generator.append_tokens([5, 6, 7, 8, 9])
        last_logits[name] = np.array(generator.get_output("logits"))[0, -1]
    first, second = list(adapters)
    assert not np.allclose(last_logits[first], last_logits[second]) and not np.allclose(last_logits[None], last_logits[first])
    assert np.allclose(last_logits[first], OnnxModel(out, adapter=first).logits([5, 6, 7, 8, 9])[-1], atol=1e-4)
    again = export_model(onnx_run, "onnx", out_dir=out, check_only=True)
    assert set(again.details["adapters"]) == set(adapters)


@needs_onnx
def test_onnx_lora_mode_refuses_int4_and_adapters_of_another_base(onnx_run, export_run, tmp_path):
    with pytest.raises(ExportError, match="--lora with --quantize int4"):
        export_model(onnx_run, "onnx", lora=True, quantize="int4", out_dir=tmp_path / "x")
    with pytest.raises(ExportError, match="adapters in one ONNX model must share its base"):
        export_model(onnx_run, "onnx", extra_adapters=[export_run], out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()
