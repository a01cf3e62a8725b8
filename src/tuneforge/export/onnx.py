"""``onnx``: an ONNX Runtime GenAI model (``model.onnx``, ``genai_config.json``, tokenizer) of the merged run.

Built by onnxruntime-genai's own model builder (the Olive route: ``python -m
onnxruntime_genai.models.builder``), for the CPU at fp32 (default) or int4 (fp16: refused, see
``FP16_CPU``). With ``lora`` the adapter stays apart: the base model plus ``<run>.onnx_adapter``, and ``extra_adapters`` adds
more LoRA runs of the same base to the same model (``export.onnx_adapters``). The check runs the
decoder with ONNX Runtime itself on the HF tokenizer's ids (all positions at once, an empty KV
cache; each adapter's weights fed as the LoRA inputs), compares the export's own tokenizer
(``onnxruntime_genai.Tokenizer``) with HF's, and takes the greedy answers from ONNX Runtime GenAI's
own generation loop (KV cache, ``set_active_adapter``), as an application runs it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tuneforge.core.registries import EXPORTERS
from tuneforge.export import ExportCheck, ExportError, ExportResult

PRECISIONS = ("fp32", "int4")
# Measured here (onnxruntime-genai 0.18.0, onnxruntime 1.32.0, tiny Llama and SmolLM2-135M shapes): the builder
# does emit fp16 for the CPU (MultiHeadAttention + repeat_kv instead of the fp32-only CPU GroupQueryAttention),
# and ONNX Runtime runs the prompt, but the second decoding step with the KV cache fails in a Cast it inserts:
FP16_CPU = ("ONNX fp16 is not exported for the CPU: onnxruntime-genai's builder emits it, but ONNX Runtime {ort} "
            "cannot decode with it (the 2nd token, with the KV cache, fails: \"Non-zero status code returned while "
            "running Cast node. Name:'InsertedPrecisionFreeCast_/model/layers.1/attn/v_proj/repeat_kv/Reshape_4/output_0' "
            "... Shape mismatch attempting to re-use buffer. {{1,1,576}} != {{1,8,576}}\"); choose fp32 (as trained) or "
            "int4 (a quarter of the size)")
INSTALL = "install the export extra: `pip install 'tuneforge[export]'` (onnxruntime-genai, onnxruntime, onnx, onnx-ir)"


def require_builder() -> None:
    """``ExportError`` naming what to install when onnxruntime-genai's builder cannot be imported."""
    for module in ("onnxruntime", "onnxruntime_genai", "onnx", "onnx_ir"):
        try:
            __import__(module)
        except ImportError as error:
            raise ExportError(f"{module} is not installed ({error}); {INSTALL}") from None


class OnnxExporter:
    name = "onnx"
    description = "ONNX Runtime GenAI model (onnxruntime-genai's model builder), CPU fp32 or int4; --lora: adapter files"
    methods: tuple[str, ...] = ()
    supports_lora = True

    def resolve_quantization(self, quantize: str | None) -> str:
        require_builder()
        name = (quantize or "fp32").lower()
        if name == "fp16":
            import onnxruntime

            raise ExportError(FP16_CPU.format(ort=onnxruntime.__version__))
        if name not in PRECISIONS:
            raise ExportError(f"unknown ONNX precision {quantize!r}; choose from: {', '.join(PRECISIONS)}")
        return name

    def preflight(self, run: Any, quantize: str | None = None, lora: bool = False, extra_adapters: Any = (),
                  **_: Any) -> None:
        if lora:
            self._preflight_lora(run, quantize, extra_adapters)
        if run.is_adapter and not run.method.mergeable and not lora:
            raise ExportError(f"the run was trained with {run.method.name}, whose weights cannot be merged; "
                              "ONNX export needs a merged model")
        config = json.loads(((run.weights_dir if not run.is_adapter else run.base_dir()) / "config.json").read_text())
        supported = ("Llama", "Mistral", "Qwen2", "Qwen3", "Phi3", "Gemma", "Gemma2", "Gemma3", "Olmo", "Granite", "SmolLM3")
        architectures = config.get("architectures") or []
        if not any(arch.startswith(supported) for arch in architectures):
            raise ExportError(f"onnxruntime-genai's model builder does not build {', '.join(architectures) or 'this model'}; "
                              "export --format merged or gguf instead")
        heads = config.get("num_attention_heads") or 1
        head_size = config.get("head_dim") or (config.get("hidden_size", 0) // heads)
        if head_size % 16:
            raise ExportError(f"the model's attention head size is {head_size}; ONNX Runtime's CPU GroupQueryAttention "
                              "(which the builder emits) needs a multiple of 16: export --format merged or gguf instead")

    def _preflight_lora(self, run: Any, quantize: str | None, extra_adapters: Any) -> None:
        from tuneforge.export.gguf import refuse_what_lora_gguf_cannot_hold
        from tuneforge.export.onnx_adapters import check_same_base

        if quantize == "int4":
            raise ExportError("--lora with --quantize int4: the builder quantizes the LoRA weights into the graph with "
                              "the base's; export the adapters with fp32, or merge them (drop --lora)")
        for each in [run, *extra_adapters]:
            if not each.is_adapter or each.method.name != "lora":
                raise ExportError(f"{each.run_dir} was trained with {each.method.name}, not lora; only LoRA adapters "
                                  "become ONNX adapter files (export it without --lora: merged)")
            refuse_what_lora_gguf_cannot_hold(each.weights_dir, each.base_dir())  # whole saved modules: not a LoRA
            check_same_base(run, each)

    def export(self, run_dir: Path, out_dir: Path, quantize: str | None = None, lora: bool = False,
               extra_adapters: Any = (), **_: Any) -> ExportResult:
        from tuneforge.export.merged import merge, write_hf_directory
        from tuneforge.export.onnx_adapters import build_with_adapters, run_builder
        from tuneforge.export.run import open_run

        run = open_run(run_dir)
        precision = self.resolve_quantization(quantize)
        self.preflight(run, quantize=precision, lora=lora, extra_adapters=extra_adapters)
        details: dict[str, Any] = {"precision": precision, "builder": "onnxruntime_genai.models.builder"}
        with tempfile.TemporaryDirectory(prefix="tuneforge-onnx-", dir=out_dir.parent) as scratch:
            if lora:
                details["adapters"] = build_with_adapters([run, *extra_adapters], out_dir, precision, Path(scratch))
            else:
                hf_dir = Path(scratch) / "hf"
                model, tokenizer = run.load_trained()
                write_hf_directory(merge(model), tokenizer, hf_dir)
                del model
                run_builder(hf_dir, out_dir, precision, Path(scratch) / "cache")
        return ExportResult(out_dir=out_dir, files=sorted(out_dir.iterdir()), details=details)

    def check(self, run_dir: Path, out_dir: Path, **options: Any) -> ExportCheck:
        """The parity check of the export (with ``--lora``: of every adapter file against its own run)."""
        from tuneforge.export.onnx_adapters import read_adapters
        from tuneforge.export.parity import check_against_run

        adapters = read_adapters(out_dir)
        if not adapters:
            return check_against_run(run_dir, lambda trained, tokenizer: OnnxModel(out_dir), **options)
        checks = {name: check_against_run(entry["run_dir"], lambda trained, tokenizer, name=name: OnnxModel(out_dir, adapter=name),
                                          **options) for name, entry in adapters.items()}
        first = next(iter(checks.values()))  # the exported run itself comes first
        problems = [f"adapter {name}: {problem}" for name, check in checks.items() for problem in check.problems]
        return ExportCheck(passed=all(check.passed for check in checks.values()), problems=problems,
                           details={"parity": first.details["parity"],
                                    "adapters": {name: check.details["parity"] for name, check in checks.items()}})


class OnnxModel:
    """The exported decoder run by ONNX Runtime, with ONNX Runtime GenAI's tokenizer and generation loop.

    ``adapter``: the name of one of the export's adapter files (``adapters.json``) to apply.
    """

    def __init__(self, directory: Path, adapter: str | None = None) -> None:
        import onnxruntime
        import onnxruntime_genai

        from tuneforge.export.onnx_adapters import read_adapter_file, read_adapters

        config = json.loads((directory / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]
        self.session = onnxruntime.InferenceSession(str(directory / config["filename"]), providers=["CPUExecutionProvider"])
        self.layers, self.kv_heads, self.head_size = config["num_hidden_layers"], config["num_key_value_heads"], config["head_size"]
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.names = set(inputs)
        self.kv_dtype = np.float16 if "float16" in inputs["past_key_values.0.key"].type else np.float32
        self.genai = onnxruntime_genai.Model(str(directory))
        self.tokenizer = onnxruntime_genai.Tokenizer(self.genai)
        self.adapter, self.adapter_weights, self.adapters = adapter, {}, None
        if adapter is not None:
            file = directory / read_adapters(directory)[adapter]["file"]
            self.adapter_weights = read_adapter_file(file)
            self.adapters = onnxruntime_genai.Adapters(self.genai)
            self.adapters.load(str(file), adapter)

    def encode(self, text: str) -> list[int]:
        return [int(token) for token in self.tokenizer.encode(text)]

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        feed: dict[str, Any] = {"input_ids": np.array([list(ids)], dtype=np.int64),
                                "attention_mask": np.ones((1, len(ids)), dtype=np.int64)}
        if "position_ids" in self.names:
            feed["position_ids"] = np.arange(len(ids), dtype=np.int64)[None]
        empty = np.zeros((1, self.kv_heads, 0, self.head_size), dtype=self.kv_dtype)
        for layer in range(self.layers):
            feed[f"past_key_values.{layer}.key"] = empty
            feed[f"past_key_values.{layer}.value"] = empty
        feed.update(self.adapter_weights)
        return self.session.run(["logits"], feed)[0][0].astype(np.float32)

    def greedy(self, prompt_ids: Sequence[int], stop_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        """The greedy answer by ONNX Runtime GenAI's own loop (KV cache, the active adapter), as applications run it."""
        import onnxruntime_genai

        params = onnxruntime_genai.GeneratorParams(self.genai)
        params.set_search_options(do_sample=False, max_length=len(prompt_ids) + max_new_tokens)
        generator = onnxruntime_genai.Generator(self.genai, params)
        if self.adapters is not None:
            generator.set_active_adapter(self.adapters, self.adapter)
        generator.append_tokens(list(prompt_ids))
        answer: list[int] = []
        try:
            while len(answer) < max_new_tokens and not generator.is_done():  # done: genai's own EOS or max_length
                generator.generate_next_token()
                token = int(generator.get_next_tokens()[0])
                if token in stop_ids:
                    break
                answer.append(token)
        except RuntimeError as error:  # the model runs on the whole prompt but not step by step with its KV cache
            first = str(error).splitlines()[0][:400]
            raise ExportError(f"ONNX Runtime GenAI cannot generate with this export on the CPU (it fails at step "
                              f"{len(answer) + 1} with the KV cache: {first}); choose another --quantize (fp32, int4)") from None
        return answer


EXPORTERS.register("onnx", OnnxExporter())
