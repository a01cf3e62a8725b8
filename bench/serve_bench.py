"""Serving speed of ``tuneforge serve``: one chat stream, concurrent requests across 2 adapters, request overhead.

    python bench/serve_bench.py            # about 4 minutes on 2 busy CPU cores; writes bench/results/serve.{json,md}

On the embedded SmolLM2-135M-Instruct (offline, fp32) with two LoRA adapters (random weights: the
speed of an adapter does not depend on what it learned), a live uvicorn server on 127.0.0.1 in this
process and an asyncio httpx client:

1. one chat stream: time to first token and tokens/s (completion tokens / total time);
2. 1 (twice in a row), 4 and 16 requests sent at once, alternately on adapter A and B:
   aggregate completion tokens/s over the wall time;
3. the first 4 prompts through a plain transformers loop: ``PeftModel.set_adapter`` + ``generate``
   one prompt at a time, greedy, the same token limit;
4. request overhead on the tiny test model: the median time of a 1-token chat completion over
   HTTP minus the median time of the same request given to the engine directly.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # the tiny model builder and the live-server helper

import httpx  # noqa: E402

KEY = "bench-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_TOKENS = 32
TOPICS = ["a lighthouse keeper", "a lost robot", "the first snow", "a city under the sea", "an old violin",
          "a dragon who bakes", "a train at midnight", "a garden on Mars", "two rival chess players", "a silent forest",
          "a map with no roads", "the last library", "a clockmaker's apprentice", "a storm at sea", "a fox and a crow",
          "a village of kites"]
PROMPTS = [f"Write a long, detailed story about {topic}." for topic in TOPICS]
ADAPTER_IDS = ["ft:smollm2-135m-instruct:a:ftjob-0000000000000000000000a1",
               "ft:smollm2-135m-instruct:b:ftjob-0000000000000000000000b2"]


class AdapterDirectory:
    """The two benchmark adapters as the server's manager: resolve, list, get (what serving asks of FineTuningManager)."""

    def __init__(self, base: str, adapters: dict[str, Path]) -> None:
        self.base, self.adapters = base, adapters

    def resolve_model(self, model_id: str) -> tuple[str, Path]:
        from tuneforge.core.errors import TuneforgeError

        if model_id not in self.adapters:
            error = TuneforgeError(f"no model {model_id}")
            error.http_status = 404  # type: ignore[attr-defined]
            raise error
        return self.base, self.adapters[model_id]

    def list_models(self) -> list[dict[str, Any]]:
        return [{"id": m, "object": "model", "created": 0, "owned_by": "org-local"} for m in self.adapters]

    def get_model(self, model_id: str) -> dict[str, Any]:
        self.resolve_model(model_id)
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "org-local"}


def save_adapters(model_dir: Path, out: Path, seeds: tuple[int, ...] = (1, 2)) -> list[Path]:
    """LoRA adapters (r=8 on q/v) with small random weights, one per seed, from one loaded base."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from tuneforge.model.load import load_model

    base = load_model(model_dir, "cpu")
    paths = []
    for seed in seeds:
        model = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                               init_lora_weights=False))
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.002)  # a small change, so answers stay text
        model.save_pretrained(out / f"adapter-{seed}")
        paths.append(out / f"adapter-{seed}")
    return paths


def chat_body(model: str, prompt: str, stream: bool = False, max_tokens: int | None = None) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens or MAX_TOKENS,
            "temperature": 0}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


async def one_stream(url: str, model: str, prompt: str) -> dict[str, float]:
    """TTFT and tokens/s of one streamed chat completion."""
    async with httpx.AsyncClient(timeout=600) as http:
        start = time.perf_counter()
        first = None
        tokens = 0
        async with http.stream("POST", url + "/chat/completions", headers=AUTH, json=chat_body(model, prompt, True)) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
                    first = time.perf_counter() - start
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        total = time.perf_counter() - start
    return {"ttft_s": first or total, "seconds": total, "tokens": tokens, "tokens_per_s": tokens / total}


async def concurrent(url: str, in_flight: int) -> dict[str, float]:
    """``in_flight`` requests sent at once (adapters alternating; one request: twice in a row): aggregate tokens/s."""
    latencies: list[float] = []
    rounds = 2 if in_flight == 1 else 1

    async def one(http: httpx.AsyncClient, index: int) -> int:
        start = time.perf_counter()
        response = await http.post(url + "/chat/completions", headers=AUTH,
                                   json=chat_body(ADAPTER_IDS[index % 2], PROMPTS[index % len(PROMPTS)]))
        latencies.append(time.perf_counter() - start)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]

    tokens: list[int] = []
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=32)) as http:
        start = time.perf_counter()
        for round_ in range(rounds):
            tokens += await asyncio.gather(*(one(http, round_ * in_flight + i) for i in range(in_flight)))
        wall = time.perf_counter() - start
    return {"in_flight": in_flight, "requests": len(tokens), "tokens": sum(tokens), "seconds": wall,
            "tokens_per_s": sum(tokens) / wall, "median_latency_s": statistics.median(latencies)}


def transformers_loop(model_dir: Path, adapters: list[Path], prompts: int = 4) -> dict[str, float]:
    """The first ``prompts`` prompts through PeftModel.set_adapter + generate, one at a time, greedy."""
    import torch
    from peft import PeftModel

    from tuneforge.data.tokenize import render_chat
    from tuneforge.model.load import end_of_turn_ids, load_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = PeftModel.from_pretrained(load_model(model_dir, "cpu"), str(adapters[0]), adapter_name="a")
    model.load_adapter(str(adapters[1]), adapter_name="b")
    model.eval()
    stops = end_of_turn_ids(tokenizer)
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for index, prompt in enumerate(PROMPTS[:prompts]):
            model.set_adapter("ab"[index % 2])
            text = render_chat(tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
            out = model.generate(**ids, max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id)
            tokens += out.shape[1] - ids["input_ids"].shape[1]
    wall = time.perf_counter() - start
    return {"requests": prompts, "tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall}


async def overhead(url: str, host: Any, repeats: int = 60) -> dict[str, float]:
    """Median HTTP time of a 1-token chat completion minus the engine's own median for the same request."""
    from tuneforge.inference import GenerationRequest

    body = chat_body("tiny", "what color is the sky?", max_tokens=1)
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(5):  # warm up: model load, connection
            (await http.post(url + "/chat/completions", headers=AUTH, json=body)).raise_for_status()
        http_times = []
        for _ in range(repeats):
            start = time.perf_counter()
            (await http.post(url + "/chat/completions", headers=AUTH, json=body)).raise_for_status()
            http_times.append(time.perf_counter() - start)
    engine_times = []
    for _ in range(repeats):
        request = GenerationRequest(messages=[{"role": "user", "content": "what color is the sky?"}], max_new_tokens=1)
        start = time.perf_counter()
        host.engine.generate([request])
        engine_times.append(time.perf_counter() - start)
    http_median, engine_median = statistics.median(http_times), statistics.median(engine_times)
    return {"http_ms": http_median * 1000, "engine_ms": engine_median * 1000,
            "overhead_ms": (http_median - engine_median) * 1000, "repeats": repeats}


def machine() -> dict[str, Any]:
    import torch
    import transformers

    cpu = platform.processor() or "unknown CPU"
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        cpu = f"{fields.get('Model name', cpu)} ({fields.get('CPU(s)', '?')} CPUs)"
    except (OSError, subprocess.CalledProcessError):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "load_average": load,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> dict[str, Any]:
    from helpers import build_tiny_model
    from server_support import live_server

    from tuneforge.model.resolve import resolve_model
    from tuneforge.server import ServerSettings, create_app

    began = time.perf_counter()
    model_dir = resolve_model("smollm2-135m-instruct")
    scratch = Path(tempfile.mkdtemp(prefix="tuneforge-serve-bench-"))
    adapters = save_adapters(model_dir, scratch)
    manager = AdapterDirectory("smollm2-135m-instruct", dict(zip(ADAPTER_IDS, adapters)))
    settings = ServerSettings(models=["smollm2-135m-instruct"], home=scratch / "home", max_batch=16)
    results: dict[str, Any] = {"machine": machine(), "max_tokens": MAX_TOKENS, "prompts": len(PROMPTS),
                               "batch_gap_ms": settings.batch_gap_ms}
    app = create_app(settings, manager=manager, api_key=KEY)
    with live_server(app) as url:
        asyncio.run(one_stream(url, ADAPTER_IDS[0], PROMPTS[0]))  # load the model and both adapters
        asyncio.run(one_stream(url, ADAPTER_IDS[1], PROMPTS[1]))
        streams = [asyncio.run(one_stream(url, ADAPTER_IDS[i % 2], PROMPTS[i])) for i in range(3)]
        results["stream"] = {k: statistics.median(s[k] for s in streams) for k in streams[0]}
        results["concurrent"] = [asyncio.run(concurrent(url, n)) for n in (1, 4, 16)]
        host = app.state.tuneforge.hosts["smollm2-135m-instruct"]
        results["largest_batch"] = host.largest_batch
    app.state.tuneforge.close()
    results["transformers_loop"] = transformers_loop(model_dir, adapters)

    tiny_dir = build_tiny_model(scratch / "tiny")
    for key, gap in (("overhead", None), ("overhead_no_gap", 0.0)):  # the default batching wait, and none
        options = {} if gap is None else {"batch_gap_ms": gap}
        tiny_app = create_app(ServerSettings(models=[f"tiny={tiny_dir}"], home=scratch / "home", **options), api_key=KEY)
        with live_server(tiny_app) as url:
            results[key] = asyncio.run(overhead(url, tiny_app.state.tuneforge.hosts["tiny"]))
        tiny_app.state.tuneforge.close()
    results["seconds"] = time.perf_counter() - began
    return results


def markdown(r: dict[str, Any]) -> str:
    m, s, loop = r["machine"], r["stream"], r["transformers_loop"]
    by_n = {c["in_flight"]: c for c in r["concurrent"]}
    ratio = by_n[16]["tokens_per_s"] / s["tokens_per_s"]
    lines = [
        "## Serving: `tuneforge serve` on one base model with two adapters",
        "",
        f"Reproduce: `python bench/serve_bench.py`. Measured {m['when']} on {m['cpu']}, {m['torch_threads']} torch threads, "
        f"torch {m['torch']}, transformers {m['transformers']}, load average {m['load_average']:.1f} at the start "
        "(the 2 cores were shared with other work). Model: the embedded SmolLM2-135M-Instruct in fp32 with two LoRA "
        f"adapters (r=8 on q/v); greedy, at most {r['max_tokens']} new tokens, different prompts per request; a live "
        "uvicorn server on 127.0.0.1 in the same process, an asyncio httpx client.",
        "",
        "| what | requests | in flight | completion tokens | seconds | tokens/s | vs one stream |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| one chat stream (median of 3), time to first token {s['ttft_s'] * 1000:.0f} ms | 1 | 1 | {s['tokens']:.0f} | "
        f"{s['seconds']:.2f} | {s['tokens_per_s']:.1f} | 1.00× |",
    ]
    for n in (1, 4, 16):
        c = by_n[n]
        lines.append(f"| chat requests sent together, adapters A/B alternating | {c['requests']} | {n} | {c['tokens']} | "
                     f"{c['seconds']:.2f} | "
                     f"{c['tokens_per_s']:.1f} | {c['tokens_per_s'] / s['tokens_per_s']:.2f}× |")
    lines.append(f"| plain transformers loop (`set_adapter` + `generate`), same prompts | {loop['requests']} | 1 | {loop['tokens']} | "
                 f"{loop['seconds']:.2f} | {loop['tokens_per_s']:.1f} | {loop['tokens_per_s'] / s['tokens_per_s']:.2f}× |")
    o = r["overhead"]
    goal = "met" if ratio >= 4 else "not met"
    lines += [
        "",
        f"16 requests in flight give **{ratio:.1f}×** one stream's throughput (goal ≥ 4×: {goal}); the largest engine "
        f"batch was {r['largest_batch']} rows, requests for both adapters in it (PEFT mixed-adapter batches). Against the "
        f"plain transformers loop on the same prompts: {by_n[16]['tokens_per_s'] / loop['tokens_per_s']:.1f}×.",
        "",
        f"Request overhead on the tiny test model (a 1-token chat completion, median of {o['repeats']}): "
        f"{o['http_ms']:.2f} ms over HTTP against {o['engine_ms']:.2f} ms in the engine directly: "
        f"**{o['overhead_ms']:.2f} ms** of server (goal < 5 ms: {'met' if o['overhead_ms'] < 5 else 'not met'}), of which "
        f"up to {r['batch_gap_ms']:g} ms is the batching queue's wait for a following request (`batch_gap_ms`; a busy "
        "machine oversleeps it); with that wait off "
        f"(`batch_gap_ms=0`): {r['overhead_no_gap']['overhead_ms']:.2f} ms.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    measured = main()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps(measured, indent=2) + "\n")
    (out / "serve.md").write_text(markdown(measured))
    print(markdown(measured))
    print(f"({measured['seconds']:.0f} s)")
    sys.path.insert(0, str(ROOT / "bench"))
    from write_benchmarks import main as write_benchmarks  # noqa: E402

    write_benchmarks()
