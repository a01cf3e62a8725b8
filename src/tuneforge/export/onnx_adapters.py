"""Several LoRA adapters of one base in one ONNX model, the way ``olive generate-adapter`` makes them.

onnxruntime-genai's model builder, given ``adapter_path``, writes the LoRA path of every adapted
projection as two MatMuls beside the base one (``...lora_A.MatMul.weight`` [in, r] and
``...lora_B.MatMul.weight`` [r, out], the PEFT scaling folded into B) but as constants. Here each
adapter is built that way, then its LoRA constants are lifted out: the base graph gets them as
inputs with a free rank dimension (default: rank 0, an empty tensor, so without an adapter the
model is exactly the base) and each adapter's values go into ``<name>.onnx_adapter``
(``onnxruntime.AdapterFormat``). ONNX Runtime GenAI loads them with ``og.Adapters(model).load(file,
name)`` and switches per generator (``Generator.set_active_adapter``); adapters of different ranks
share the model. ``adapters.json`` names each adapter file and the run it came from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tuneforge.export import ExportError

ADAPTERS_FILE = "adapters.json"
RANK = "lora_rank"


def is_lora_weight(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def run_builder(model_dir: Path, out_dir: Path, precision: str, cache: Path, adapter_dir: Path | None = None) -> None:
    """``python -m onnxruntime_genai.models.builder`` for the CPU; ``ExportError`` with its last lines when it fails."""
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir), "-o", str(out_dir),
               "-p", precision, "-e", "cpu", "-c", str(cache)]
    if adapter_dir is not None:
        command += ["--extra_options", f"adapter_path={adapter_dir}"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise ExportError(f"onnxruntime-genai's model builder failed (exit {done.returncode}):\n{tail}")


def lora_weights(model_path: Path) -> dict[str, np.ndarray]:
    """The LoRA constants of a model the builder wrote with ``adapter_path``, by initializer name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer if is_lora_weight(init.name)}


def lift_lora_weights(built: Path, out_dir: Path, filename: str = "model.onnx") -> list[str]:
    """Write ``built``'s graph to ``out_dir`` with its LoRA constants turned into rank-free inputs (rank 0 by default)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(built / filename))
    kept, lifted = [], []
    for init in model.graph.initializer:
        if not is_lora_weight(init.name):
            kept.append(init)
            continue
        rows, columns = init.dims
        shape: list[Any] = [rows, RANK] if ".lora_A." in init.name else [RANK, columns]
        empty = np.zeros((rows, 0) if ".lora_A." in init.name else (0, columns), dtype=onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
        model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, shape))
        kept.append(numpy_helper.from_array(empty, init.name))  # the default when no adapter is active
        lifted.append(init.name)
    if not lifted:
        raise ExportError(f"onnxruntime-genai's builder wrote no LoRA weights into {built / filename}; the adapter's "
                          "target modules are not ones it maps (export without --lora: merged)")
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    # The builder also declared the shapes of the LoRA weights and of the lora_A outputs with the first
    # adapter's rank; ONNX Runtime plans its buffers from them, so another rank would fail ("Shape mismatch
    # attempting to re-use buffer"). Drop those declarations: the rank is free.
    declared = [info for info in model.graph.value_info if info.name not in lifted and "/lora_A/" not in info.name]
    del model.graph.value_info[:]
    model.graph.value_info.extend(declared)
    onnx.save(model, str(out_dir / filename), save_as_external_data=True, location=f"{filename}.data")
    return lifted


def write_adapter_file(weights: dict[str, np.ndarray], path: Path) -> None:
    """``weights`` as an ONNX Runtime LoRA adapter file (``.onnx_adapter``)."""
    import onnxruntime

    adapter = onnxruntime.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    # OrtValue.ortvalue_from_numpy does not copy: the arrays (and these values) must live until the file
    # is written, or export_adapter writes freed memory (seen here: NaN logits from a garbage adapter).
    values = {name: onnxruntime.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array)) for name, array in weights.items()}
    adapter.set_parameters(values)
    adapter.export_adapter(str(path))
    del values


def read_adapter_file(path: Path) -> dict[str, np.ndarray]:
    """The parameters of an ``.onnx_adapter`` file as numpy arrays (fed as the model's LoRA inputs)."""
    import onnxruntime

    adapter = onnxruntime.AdapterFormat.read_adapter(str(path))
    # .numpy() views memory the AdapterFormat owns: copy while it is alive (else NaN once it is freed)
    return {name: np.array(value.numpy(), copy=True) for name, value in adapter.get_parameters().items()}


def adapter_name(run: Any, taken: set[str]) -> str:
    """A file-safe adapter name from the run directory's name, unique among ``taken``."""
    base = "".join(c if c.isalnum() or c in "-_" else "-" for c in run.run_dir.resolve().name) or "adapter"
    name, counter = base, 2
    while name in taken:
        name, counter = f"{base}-{counter}", counter + 1
    return name


def check_same_base(first: Any, other: Any) -> None:
    """``ExportError`` unless ``other`` is a LoRA run on ``first``'s base adapting the same modules."""
    if other.base_model != first.base_model:
        raise ExportError(f"{other.run_dir} was trained on {other.base_model}, not on {first.base_model}; adapters in one "
                          "ONNX model must share its base")
    modules = [set(_targets(run.weights_dir)) for run in (first, other)]
    if modules[0] != modules[1]:
        raise ExportError(f"{other.run_dir} adapts {', '.join(sorted(modules[1]))}, {first.run_dir} adapts "
                          f"{', '.join(sorted(modules[0]))}; adapters in one ONNX model must adapt the same modules "
                          "(train them with the same --lora-target-modules)")


def _targets(adapter_dir: Path) -> list[str]:
    targets = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8")).get("target_modules") or []
    return [targets] if isinstance(targets, str) else list(targets)


def build_with_adapters(runs: list[Any], out_dir: Path, precision: str, scratch: Path) -> dict[str, Any]:
    """The base ONNX model with rank-free LoRA inputs in ``out_dir`` and one ``.onnx_adapter`` per run in ``runs``.

    Returns the ``adapters.json`` contents (also written): adapter name -> file, run directory, rank.
    """
    import shutil

    names: dict[str, Any] = {}
    lifted: list[str] | None = None
    for index, run in enumerate(runs):
        built = scratch / f"built-{index}"
        run_builder(run.base_dir(), built, precision, scratch / "cache", adapter_dir=run.weights_dir)
        weights = lora_weights(built / "model.onnx")
        if lifted is None:
            for item in built.iterdir():  # genai_config.json, tokenizer files ...
                if not item.name.startswith("model.onnx"):
                    shutil.copy2(item, out_dir / item.name)
            lifted = lift_lora_weights(built, out_dir)
        elif sorted(weights) != sorted(lifted):
            raise ExportError(f"the ONNX graph of {run.run_dir}'s adapter has other LoRA weights than the first one's; "
                              "adapters in one ONNX model must adapt the same modules")
        name = adapter_name(run, set(names))
        write_adapter_file(weights, out_dir / f"{name}.onnx_adapter")
        rank = next(array.shape[1] for key, array in weights.items() if ".lora_A." in key)
        names[name] = {"file": f"{name}.onnx_adapter", "run_dir": str(run.run_dir.resolve()), "rank": int(rank)}
        shutil.rmtree(built, ignore_errors=True)
    (out_dir / ADAPTERS_FILE).write_text(json.dumps(names, indent=2) + "\n", encoding="utf-8")
    return names


def read_adapters(directory: Path) -> dict[str, Any]:
    """``adapters.json`` of an ONNX export made with ``--lora`` (empty for a merged ONNX export)."""
    path = directory / ADAPTERS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
