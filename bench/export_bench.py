"""Export a run of the embedded model to every format: file size, export time, parity; generation speed.

    .venv/bin/python bench/export_bench.py [--run RUN_DIR] [--formats merged,gguf:f16,...] [--no-write]

Without ``--run`` a demo-data LoRA run of SmolLM2-135M-Instruct is trained first (1 epoch, 20 steps).
Each export is made by ``tuneforge.export.export_model`` (so its time includes the parity check,
reported apart), and the figures come from its ``export_manifest.json``. Generation speed: greedy
answers to the same rendered test prompts, one stream, ``--new-tokens`` tokens each (no early
stop), by torch on the trained model as tuneforge loads it (``runs.load_trained``: fp32, adapter
unmerged; HF ``generate`` with ``min_new_tokens``, so every engine makes the same number of tokens,
which tuneforge's ``InferenceEngine`` cannot be told), by llama.cpp (llama-cpp-python) on the q8_0
and q4_k_m GGUFs, and by ONNX Runtime GenAI on the int4 model.
Writes bench/results/export.json and export.md (``bench/write_benchmarks.py`` includes export.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LLAMA_CPP_PYTHON = "0.3.36"
RESULTS = ROOT / "bench" / "results"
from bench_common import write_results  # noqa: E402  (bench/ is on sys.path: these run as scripts)
# FORMAT[:QUANTIZATION][+lora] (+lora: the adapter kept apart, --lora)
FORMATS = ["merged", "gguf:f16", "gguf:bf16", "gguf:q8_0", "gguf:q4_k_m", "gguf-lora:f16", "ollama:q8_0", "ollama:q4_k_m+lora",
           "onnx:fp32", "onnx:fp32+lora", "onnx:fp16", "onnx:int4"]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def train_demo_run(directory: Path) -> Path:
    data = ROOT / "src" / "tuneforge" / "samples" / "customer_intents.jsonl"
    subprocess.run([sys.executable, "-m", "tuneforge.cli.main", "finetune", "--data", str(data), "--epochs", "1",
                    "--max-steps", "20", "--no-baselines", "--no-forgetting-check", "--max-eval-examples", "8", "--output", str(directory), "--json"], check=True, stdout=subprocess.DEVNULL)
    return directory


def export_all(run_dir: Path, formats: list[str], out_root: Path, data: Path) -> dict[str, Any]:
    from tuneforge.core.errors import TuneforgeError
    from tuneforge.export import export_model

    rows: dict[str, Any] = {}
    for spec in formats:
        plain, lora = spec.removesuffix("+lora"), spec.endswith("+lora")
        name, _, quantize = plain.partition(":")
        started = time.perf_counter()
        try:
            result = export_model(run_dir, name, quantize=quantize or None, out_dir=out_root / spec.replace(":", "-").replace("+", "-"),
                                  min_agreement=0.0, data=data, lora=lora)
        except TuneforgeError as error:
            rows[spec] = {"error": str(error).splitlines()[0]}
            print(spec, "failed:", error, flush=True)
            continue
        manifest = result.details
        rows[spec] = {"seconds_total": round(time.perf_counter() - started, 1), "export_seconds": manifest["export_seconds"],
                      "bytes": sum(f["bytes"] for f in manifest["files"].values()), "parity": manifest["parity"],
                      "dir": str(result.out_dir), "load_average": [round(x, 2) for x in os.getloadavg()]}
        print(spec, json.dumps({k: v for k, v in rows[spec].items() if k != "parity"}), flush=True)
    return rows


def collect_exports(out_root: Path, formats: list[str]) -> dict[str, Any]:
    """The rows of exports already published under ``out_root`` (their ``export_manifest.json``), in ``formats`` order."""
    rows: dict[str, Any] = {}
    for spec in formats:
        manifest_path = out_root / spec.replace(":", "-").replace("+", "-") / "export_manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            rows[spec] = {"seconds_total": None, "export_seconds": manifest["export_seconds"], "parity": manifest["parity"],
                          "bytes": sum(f["bytes"] for f in manifest["files"].values()), "dir": str(manifest_path.parent)}
    return rows


def prompts_of(run_dir: Path, count: int) -> list[str]:
    from tuneforge.data.manager import TrainingDataManager
    from tuneforge.data.tokenize import render_prompt
    from tuneforge.runs import load_trained

    _, tokenizer, _ = load_trained(run_dir, device="cpu")
    examples = TrainingDataManager().load(run_dir / "data" / "test.jsonl")[0][:count]
    return [render_prompt(tokenizer, example) for example in examples]


def torch_speed(run_dir: Path, prompts: list[str], new_tokens: int) -> float:
    import torch

    from tuneforge.runs import load_trained

    model, tokenizer, _ = load_trained(run_dir, device="cpu")
    model.eval()
    produced, seconds = 0, 0.0
    for prompt in prompts:  # one stream: HF generate, greedy, exactly new_tokens tokens
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        seconds += time.perf_counter() - started
        produced += out.shape[1] - ids["input_ids"].shape[1]
    return produced / seconds


def llama_cpp_speed(gguf: Path, prompts: list[str], new_tokens: int) -> float:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=os.cpu_count() or 1, verbose=False)
    produced, seconds = 0, 0.0
    for prompt in prompts:
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        llm.reset()
        started = time.perf_counter()
        count = 0
        for token in llm.generate(tokens, temp=0.0, top_k=1, reset=True):
            count += 1
            if count >= new_tokens:
                break
        seconds += time.perf_counter() - started
        produced += count
    return produced / seconds


def onnx_speed(directory: Path, prompts: list[str], new_tokens: int) -> float:
    import onnxruntime_genai as og

    model = og.Model(str(directory))
    tokenizer = og.Tokenizer(model)
    produced, seconds = 0, 0.0
    for prompt in prompts:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=len(tokenizer.encode(prompt)) + new_tokens, min_length=0)
        started = time.perf_counter()
        generator = og.Generator(model, params)
        generator.append_tokens(tokenizer.encode(prompt))
        count = 0
        while not generator.is_done() and count < new_tokens:
            generator.generate_next_token()
            count += 1
        seconds += time.perf_counter() - started
        produced += count
    return produced / seconds


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def markdown(report: dict[str, Any]) -> str:
    lines = ["## Export: every format checked against the trained model", "",
             f"Measured by `bench/export_bench.py` on {report['date']} on {report['machine']} ({report['cpus']} cores, shared with "
             f"other agents' work: load average {report['load_average']['start']} at the start, "
             f"{report['load_average']['end']} at the end) "
             f"for a LoRA run of SmolLM2-135M-Instruct on the demo data (20 steps), parity on the first "
             f"N of its test examples (column N). Export s excludes the parity check, total s includes it "
             "(both models answer every example greedily; the trained one by full re-evaluation). `+lora`: the adapter "
             "kept apart (`--lora`: Ollama base GGUF + ADAPTER; ONNX base model + `.onnx_adapter`).", "",
             "| format | size | export s | total s | N | greedy agreement | top-1 agreement | tokenizer | max abs dlogit | mean KL | accuracy (trained) | load (1 min) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for spec, row in report["exports"].items():
        if "error" in row:
            lines.append(f"| {spec} | — | — | — | | refused: {row['error'][:160]} | | | | | | |")
            continue
        p = row["parity"]
        accuracy = "—" if p["export_accuracy"] is None else f"{p['export_accuracy']:.3f} ({p['trained_accuracy']:.3f})"
        lines.append(f"| {spec} | {row['bytes'] / 1e6:.1f} MB | {row['export_seconds']:.1f} | {_seconds(row.get('seconds_total'))} | {p['examples']} | {p['greedy_agreement']:.1%} | "
                     f"{p['top1_agreement']:.1%} | {p['tokenizer_agreement']:.0%} | {p['max_abs_logit_diff']:.3g} | "
                     f"{p['mean_kl']:.2g} | {accuracy} | {row.get('load_average', ['?'])[0]} |")
    if report.get("speed"):
        lines += ["", f"Generation, one stream, greedy, {report['new_tokens']} tokens per answer on "
                  f"{report['prompts']} test prompts (tokens/s, higher is better):", "",
                  "| engine | tokens/s |", "|---|---:|"]
        lines += [f"| {name} | {value:.1f} |" for name, value in report["speed"].items()]
    if report.get("llama_build_seconds"):
        lines += ["", f"Building llama-cpp-python {LLAMA_CPP_PYTHON} from its sdist (`make setup-export`, `GGML_NATIVE=off`, "
                  f"2 build jobs, on this machine while other agents' work ran): {report['llama_build_seconds'] / 60:.0f} min."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/tuneforge-export-bench"))
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--examples", type=int, default=16, help="test examples the parity check runs on (the first N)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--llama-build-seconds", type=float, default=None,
                        help="how long `make setup-export`'s llama-cpp-python build took, for the table")
    parser.add_argument("--add", action="store_true", help="add these formats' rows to bench/results/export.json")
    parser.add_argument("--collect", action="store_true", help="export nothing: report the exports already under "
                        "OUT/exports (their manifests; the total time with the check is then unknown)")
    parser.add_argument("--speed", default="torch,llama.cpp,onnx", help="which generation speeds to measure")
    args = parser.parse_args()
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    run_dir = args.run or train_demo_run(args.out / "run")
    lines = (run_dir / "data" / "test.jsonl").read_text(encoding="utf-8").splitlines()[: args.examples]
    data = args.out / "parity-examples.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.collect:  # the exports an earlier (interrupted) run of this script published, from their manifests
        exports = collect_exports(args.out / "exports", args.formats.split(","))
    else:
        exports = export_all(run_dir, args.formats.split(","), args.out / "exports", data)
    prompts = prompts_of(run_dir, args.prompts)
    speed: dict[str, float] = {}
    measures = []
    if "torch" in args.speed:
        measures.append(("tuneforge torch (HF generate, fp32, adapter)", lambda: torch_speed(run_dir, prompts, args.new_tokens)))
    for spec, label in (("gguf:q8_0", "llama.cpp q8_0"), ("gguf:q4_k_m", "llama.cpp q4_k_m")):
        if "dir" in exports.get(spec, {}) and "llama.cpp" in args.speed:
            path = next(Path(exports[spec]["dir"]).glob("model-*.gguf"))
            measures.append((label, lambda path=path: llama_cpp_speed(path, prompts, args.new_tokens)))
    if "dir" in exports.get("onnx:int4", {}) and "onnx" in args.speed:
        measures.append(("ONNX Runtime GenAI int4", lambda: onnx_speed(Path(exports["onnx:int4"]["dir"]), prompts, args.new_tokens)))
    for label, measure in measures:
        try:
            speed[label] = measure()
        except Exception as error:  # a missing engine is reported, not fatal to the other figures
            print(label, "failed:", error, flush=True)
        print(label, speed.get(label), flush=True)
    if args.add and (RESULTS / "export.json").is_file():
        before = json.loads((RESULTS / "export.json").read_text())
        exports, speed = {**before["exports"], **exports}, {**before["speed"], **speed}
        exports = {spec: exports[spec] for spec in FORMATS + [s for s in exports if s not in FORMATS] if spec in exports}
    first = next((row for row in exports.values() if "parity" in row), None)
    report = {"machine": cpu_model(), "cpus": os.cpu_count(), "exports": exports, "date": started_at,
              "load_average": {"start": load_at_start, "end": [round(x, 2) for x in os.getloadavg()]},
              "speed": speed, "new_tokens": args.new_tokens, "prompts": len(prompts),
              "examples": first["parity"]["examples"] if first else 0,
              "llama_build_seconds": args.llama_build_seconds}
    if args.add and (RESULTS / "export.json").is_file():
        report["llama_build_seconds"] = args.llama_build_seconds or before.get("llama_build_seconds")
        report["date"] = f"{before.get('date')} and {started_at}"  # rows added by a second run
        report["load_average"]["start"] = before.get("load_average", {}).get("start", load_at_start)
    write_results("export", report, markdown(report), write=not args.no_write)


if __name__ == "__main__":
    main()
