"""The benches' peer plumbing without training anything: the speed bench's bf16 skip, the scale bench's peer keys,
Olive's scale command and the scale table's peer rows beside tuneforge's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import olive_peer  # noqa: E402
import scale_bench  # noqa: E402
import scale_peers  # noqa: E402
import speed_bench  # noqa: E402

PEAKS = {"fp32": 180.0, "bf16": 1.1}


@pytest.mark.parametrize("name", ["trl-bf16", "trl-defaults"])
def test_bf16_configs_are_skipped_without_native_bf16_unless_asked(name: str) -> None:
    config = speed_bench.CONFIGS[name]
    reason = speed_bench.bf16_skip_reason(config, native_bf16=False, asked=False, peaks=PEAKS)
    assert reason is not None and "1.1" in reason and "180" in reason and "--only" in reason
    assert speed_bench.bf16_skip_reason(config, native_bf16=False, asked=True, peaks=PEAKS) is None
    assert speed_bench.bf16_skip_reason(config, native_bf16=True, asked=False, peaks=PEAKS) is None


def test_only_bf16_configs_are_skipped() -> None:
    skipped = {name for name, config in speed_bench.CONFIGS.items()
               if speed_bench.bf16_skip_reason(config, native_bf16=False, asked=False, peaks=PEAKS)}
    assert skipped == {"trl-bf16", "trl-defaults", "olive-bf16"}  # tuneforge's `auto` falls back to fp32 there: it runs
    forced = {"framework": "tuneforge", "batch_size": 8, "precision": "bf16"}
    assert speed_bench.bf16_skip_reason(forced, native_bf16=False, asked=False, peaks=PEAKS)


def test_benchmarks_show_the_bf16_skip_reason() -> None:
    from bench.write_benchmarks import speed_section

    reason = speed_bench.bf16_skip_reason(speed_bench.CONFIGS["trl-bf16"], False, False, PEAKS)
    report = {"machine": {"cpu": "x", "cores": 2, "memory_gb": 1, "python": "3", "torch": "t", "threads": 1,
                          "transformers": "t", "peft": "p", "trl": "r"},
              "date": "d", "matmul_peak_gflops": PEAKS, "flops_per_token": {"lora": 6e8, "full": 9e8},
              "work": {"rows": 64, "real_tokens": 1000}, "results": {"trl-bf16": {"skipped": reason}}}
    row = next(line for line in speed_section(report).splitlines() if line.startswith("| TRL SFTTrainer, bf16"))
    assert f"skipped: {reason}" in row
    report["machine"]["cpu_isa"] = "AVX2"  # recorded since 2026-12-02: the heading tells CPUs of one name apart
    assert speed_section(report).splitlines()[0].endswith("(x, AVX2)")


@pytest.mark.parametrize("key, parsed", [
    ("smollm2-135m:lora:512", ("tuneforge", "smollm2-135m", "lora", 512)),
    ("olive:smollm2-360m:lora:512", ("olive", "smollm2-360m", "lora", 512)),
    ("trl:qwen2.5-0.5b:lora:2048", ("trl", "qwen2.5-0.5b", "lora", 2048)),
])
def test_keys_parse_and_name_their_rows(key: str, parsed: tuple) -> None:
    assert scale_peers.parse_key(key) == parsed
    assert scale_bench.key_of(scale_bench.identity(key)) == key


@pytest.mark.parametrize("key", ["unsloth:smollm2-135m:lora:512", "olive:smollm2-135m:qlora:512",
                                 "smollm2-135m:lora", "smollm2-135m:lora:long"])
def test_bad_keys_are_refused_with_the_forms(key: str) -> None:
    with pytest.raises(ValueError, match="MODEL:METHOD:LENGTH|LoRA only"):
        scale_peers.parse_key(key)


def test_peer_keys_never_collide_with_tuneforge_rows() -> None:
    limited = scale_bench.identity("smollm2-1.7b:lora:1024", memory_limit="12GB")
    assert scale_bench.key_of(limited) == "smollm2-1.7b:lora:1024@12GB"
    assert "memory_limit" not in scale_bench.identity("olive:smollm2-135m:lora:512", memory_limit="12GB")
    keys = scale_bench.default_keys()
    assert len(keys) == len(set(keys))
    for framework, model, method, length in scale_peers.PEERS:
        ours = keys.index(f"{model}:{method}:{length}")
        assert f"{framework}:{model}:{method}:{length}" in keys[ours + 1:ours + 1 + len(scale_peers.PEER_FRAMEWORKS)]


def test_olive_scale_command_trains_the_same_rows_and_steps(tmp_path: Path) -> None:
    config = {"batch_size": 2, "text_field": "text", "max_samples": 6, "max_steps": 3}
    args = olive_peer.finetune_args(config, tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "o", 512)
    value = {flag: args[args.index(flag) + 1] for flag in ("--text_field", "--max_samples", "--max_steps",
                                                           "--per_device_train_batch_size", "--max_seq_len")}
    assert value == {"--text_field": "text", "--max_samples": "6", "--max_steps": "3",
                     "--per_device_train_batch_size": "2", "--max_seq_len": "512"}
    assert "--use_chat_template" not in args  # exclusive with --text_field in Olive's CLI


def _rows() -> list[dict]:
    ours = {"model": "smollm2-135m", "method": "lora", "max_length": 512, "batch_size": 2, "parameters": 139_000_000,
            "trainable": 4_884_480, "precision": "fp32", "tokens_per_second": 20.0, "seconds_per_step": 51.2,
            "peak_rss_mb": 3000.0, "planned_peak_mb": 2900.0, "plan_changed": {}, "load_average": 2.0,
            "commit": "abc", "wall_seconds": 200.0}
    olive = {"framework": "olive", "model": "smollm2-135m", "method": "lora", "max_length": 512, "batch_size": 2,
             "tokens_per_second": 10.0, "seconds_per_step": 102.4, "peak_rss_mb": 6000.0, "load_average": 2.1,
             "olive_command": "olive finetune -m <random smollm2-135m>"}
    trl = {"framework": "trl", "model": "smollm2-135m", "method": "lora", "max_length": 512, "skipped": "TRL is not installed"}
    return [ours, olive, trl]


def test_peer_rows_sit_beside_tuneforge_with_the_ratios() -> None:
    text = "\n".join(scale_peers.peer_lines(_rows(), scale_bench.key_of))
    olive = next(line for line in text.splitlines() if line.startswith("| smollm2-135m | lora | 512 | olive |"))
    # tuneforge's figures (peak RSS recorded in MiB, shown in GB: 3,000 MiB = 3.15 GB), then speed and memory ratios
    assert olive.endswith("| 6.29 | 2.1 / 2.0 | 20.0 | 3.15 | 2.00× | 0.50× |")
    trl = next(line for line in text.splitlines() if "| trl |" in line)
    assert "| trl | | skipped: TRL is not installed |" in trl  # batch empty, the reason where tokens/s would be
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert trl.count("|") == olive.count("|") == header.count("|")
    assert "`olive finetune -m <random smollm2-135m>`" in text and "Left out" in text


def test_scale_table_keeps_peer_rows_out_of_tuneforge_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale_bench, "RESULTS", tmp_path)
    report = {"machine": {"cpu": "x", "cores": 2, "memory_gb": 1, "torch": "t"}, "date": "d",
              "matmul_peak_gflops": PEAKS, "rows": sorted(_rows(), key=scale_bench.row_order(_rows()))}
    scale_bench.write_markdown(report)
    text = (tmp_path / "scale.md").read_text()
    main_table = text.split("### Beside")[0]
    assert "| smollm2-135m | 139M | lora | 512 | 2 | glibc | 20.0 |" in main_table and "olive" not in main_table.split("| --- |")[-1]
    assert [row.get("framework", "") for row in report["rows"]] == ["", "olive", "trl"]


def test_the_cpu_isa_names_the_widest_matrix_instructions() -> None:
    from bench_common import cpu_isa

    def info(flags: str) -> str:
        return f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 {flags}\n"

    assert cpu_isa(info("avx fma avx2")) == "AVX2"
    assert cpu_isa(info("avx2 avx512f avx512bw")) == "AVX-512"
    assert cpu_isa(info("avx2 avx512f avx512_bf16 avx512_vnni")) == "AVX512-BF16"
    assert cpu_isa(info("avx2 avx512f avx512_bf16 amx_bf16 amx_tile")) == "AMX-BF16"
    assert cpu_isa(info("sse4_2")) == "none" and cpu_isa("") == "none"

