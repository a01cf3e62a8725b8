"""``tuneforge export RUN_DIR --format ...``: parse, call ``tuneforge.export.export_model``, render."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXPORT_EXAMPLES = """\
examples:
  tuneforge export runs/mine --format merged                 HF safetensors, adapter merged in
  tuneforge export runs/mine --format gguf --quantize q8_0   llama.cpp (default quantization: f16)
  tuneforge export runs/mine --format ollama --quantize q4_k_m   GGUF + Modelfile for `ollama create`
  tuneforge export runs/mine --format ollama --lora          base GGUF + the LoRA GGUF on an ADAPTER line
  tuneforge export runs/mine --format gguf-lora              the adapter alone, for llama.cpp --lora
  tuneforge export runs/mine --format onnx --quantize int4   ONNX Runtime GenAI (fp32 default, fp16, int4)
  tuneforge export runs/a --format onnx --lora --add-adapter runs/b   one ONNX base + an adapter file per run
  tuneforge export runs/mine --format gguf --check-only      re-run the parity check on an export

every export is checked against the trained model on the run's test split (or --data): tokenizer
agreement, top-1 agreement, max |dlogit|, mean KL, greedy-answer agreement and accuracy. It fails
(exit 1, the export kept for inspection) under 99 % greedy agreement for merged/f16/bf16 and 95 % for
q8_0; lower quantizations only report unless --min-agreement is given.
"""


def add_export_command(subparsers: Any) -> None:
    """Register ``export`` on the ``tuneforge`` sub-command parser."""
    from tuneforge.cli.flags import bounded

    export = subparsers.add_parser(
        "export", help="export a finished run (merged, GGUF, GGUF LoRA, Ollama, ONNX), checked against the trained model",
        description="Write RUN_DIR/export/<format>[-<quantization>]/ (or --out) with the exported model and "
        "export_manifest.json (source run, files with SHA-256, tool versions, parity figures).",
        epilog=EXPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="a finished tuneforge run directory")
    export.add_argument("--format", required=True, metavar="FORMAT", help="merged, gguf, gguf-lora, ollama or onnx "
                        "(or a plug-in module:attribute)")
    export.add_argument("--quantize", default=None, metavar="TYPE", help="gguf/ollama: f16 (default), bf16, q8_0, q4_k_m, "
                        "q4_0, q5_k_m, q6_k, ...; onnx: fp32 (default), fp16, int4")
    export.add_argument("--out", default=None, metavar="DIR", help="where to write it (default: RUN_DIR/export/<format>)")
    export.add_argument("--data", default=None, metavar="FILE", help="check on these examples (default: the run's test split)")
    export.add_argument("--min-agreement", type=bounded(float, ge=0, le=1), default=None, metavar="X",
                        help="greedy agreement required, 0..1 (default: 0.99 merged/f16/bf16, 0.95 q8_0, none below)")
    export.add_argument("--lora", action="store_true", help="keep the LoRA adapter apart from its base: ollama writes "
                        "a base GGUF and an ADAPTER line, onnx a base model and an .onnx_adapter file")
    export.add_argument("--add-adapter", action="append", default=[], metavar="RUN_DIR", help="onnx --lora: another "
                        "LoRA run of the same base to serve from the same ONNX model (repeatable)")
    export.add_argument("--check-only", action="store_true", help="re-run the parity check on an existing export")
    export.add_argument("--json", action="store_true", help="print the manifest as JSON")
    export.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from tuneforge.export import export_model

    result = export_model(args.run_dir, args.format, out_dir=args.out, quantize=args.quantize, data=args.data,
                          min_agreement=args.min_agreement, check_only=args.check_only, lora=args.lora,
                          extra_adapters=args.add_adapter)
    if args.json:
        print(json.dumps(result.details, indent=2))
        return 0
    parity = result.details.get("parity") or {}
    print(f"exported {args.format} to {result.out_dir}")
    for name, entry in (result.details.get("files") or {}).items():
        print(f"  {name}  {entry['bytes'] / 1e6:.2f} MB  sha256 {entry['sha256'][:16]}")
    if parity:
        accuracy = ""
        if parity.get("trained_accuracy") is not None:
            accuracy = f"; accuracy {parity['export_accuracy']:.3f} (trained {parity['trained_accuracy']:.3f})"
        print(f"parity on {parity['examples']} examples: greedy agreement {parity['greedy_agreement']:.1%}, "
              f"top-1 {parity['top1_agreement']:.1%}, tokenizer {parity['tokenizer_agreement']:.1%}, "
              f"max |dlogit| {parity['max_abs_logit_diff']:.4g}, mean KL {parity['mean_kl']:.4g}{accuracy}")
    if result.details.get("modelfile"):
        print(f"Modelfile: TEMPLATE renders {result.details['modelfile']['golden_conversations']} golden conversations "
              "exactly as the HF chat template")
    for name, entry in (result.details.get("adapters") or {}).items():
        print(f"adapter {name}: greedy agreement {entry['greedy_agreement']:.1%}, top-1 {entry['top1_agreement']:.1%}, "
              f"max |dlogit| {entry['max_abs_logit_diff']:.4g}")
    return 0
