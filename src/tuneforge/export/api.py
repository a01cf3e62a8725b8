"""``export_model``: the one way a run becomes an export (the CLI, and later the server, call it).

Order of work, so nothing half-written is ever left at ``out_dir``: check the input (run finished, has
weights, the format and quantization exist, the optional extra is installed), export into a staging
directory beside ``out_dir``, run the parity check on it, write ``export_manifest.json``, then publish
the directory in one rename (``core.paths.publish_directory``). Any error removes the staging directory.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from tuneforge.export import ExportCheck, ExportError, ExportResult, ParityError, get_exporter
from tuneforge.export.run import open_run

MANIFEST = "export_manifest.json"


def default_out_dir(run_dir: Path, format: str, quantize: str | None, lora: bool = False) -> Path:
    """``RUN_DIR/export/<format>[-<quantization>][-lora]``."""
    return run_dir / "export" / ((f"{format}-{quantize}" if quantize else format) + ("-lora" if lora else ""))


def export_model(run_dir: str | Path, format: str, out_dir: str | Path | None = None, quantize: str | None = None,
                 data: str | Path | None = None, min_agreement: float | None = None,
                 check_only: bool = False, lora: bool = False,
                 extra_adapters: Sequence[str | Path] = ()) -> ExportResult:
    """Export the finished run in ``run_dir`` as ``format`` and check it against the trained model.

    ``quantize``: the format's quantization (``f16``, ``q8_0``, ``q4_k_m`` for GGUF; ``fp32``/``int4``
    for ONNX; the format's default when None). ``data``: the examples for the parity check (default:
    the run's own test split). ``min_agreement``: the greedy agreement required (default by
    quantization, ``parity.DEFAULT_THRESHOLDS``). ``check_only``: re-run the check on an existing export.

    Returns the ``ExportResult`` (``details``: the manifest). Raises ``ExportError`` for bad input and
    ``ParityError`` (after publishing the export and its manifest, so it can be inspected) when the
    export answers under the threshold.
    """
    exporter = get_exporter(format)
    run = open_run(run_dir)
    lora = lora or bool(extra_adapters)
    if lora and not getattr(exporter, "supports_lora", False):
        raise ExportError(f"--format {format} has no separate-adapter mode (--lora, --add-adapter): use --format ollama "
                          "or onnx for that, or --format gguf-lora for the adapter alone")
    quantize = exporter.resolve_quantization(quantize) if hasattr(exporter, "resolve_quantization") else quantize
    target = Path(out_dir) if out_dir else default_out_dir(run.run_dir, format, quantize, lora)
    options: dict[str, Any] = {"quantize": quantize, "data": data, "min_agreement": min_agreement}
    if lora:  # only then: a plug-in exporter without the mode never sees these options
        options.update(lora=True, extra_adapters=[open_run(path) for path in extra_adapters])
    if check_only:
        return _recheck(exporter, run, target, options)
    if hasattr(exporter, "preflight"):
        exporter.preflight(run, **options)  # bad input fails here, before anything is written
    staging = target.parent / f".{target.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        started = time.perf_counter()
        result = exporter.export(run.run_dir, staging, **options)
        seconds = time.perf_counter() - started
        check = exporter.check(run.run_dir, staging, **options)
        manifest = build_manifest(run, format, quantize, staging, check, seconds, result.details)
        manifest["lora"] = lora
        for key in ("modelfile", "adapters", "generation"):  # what a format's check adds beside the parity figures
            if key in check.details:
                manifest[key] = check.details[key]
        from tuneforge.core.paths import atomic_write_json, publish_directory

        atomic_write_json(staging / MANIFEST, manifest)
        publish_directory(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = sorted(target / name for name in manifest["files"])
    published = ExportResult(out_dir=target, files=files, details=manifest)
    _raise_if_failed(check, target)
    return published


def _recheck(exporter: Any, run: Any, target: Path, options: dict[str, Any]) -> ExportResult:
    from tuneforge.core.paths import atomic_write_json, read_json_object

    if not (target / MANIFEST).is_file():
        raise ExportError(f"{target} holds no export ({MANIFEST} missing); export first without --check-only, "
                          "or name the export directory with --out")
    manifest = read_json_object(target / MANIFEST, "export again without --check-only")
    check = exporter.check(run.run_dir, target, **options)
    manifest["parity"] = check.details.get("parity")
    for key in ("modelfile", "adapters", "generation"):
        if key in check.details:
            manifest[key] = check.details[key]
    manifest["checked_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(target / MANIFEST, manifest)
    result = ExportResult(out_dir=target, files=sorted(target / name for name in manifest.get("files", {})), details=manifest)
    _raise_if_failed(check, target)
    return result


def _raise_if_failed(check: ExportCheck, target: Path) -> None:
    if check.passed:
        return
    parity = check.details.get("parity") or {}
    lines = "\n".join(f"  - {problem}" for problem in check.problems)
    raise ParityError(f"the export in {target} does not answer like the trained model:\n{lines}\n"
                      f"most likely cause: {parity.get('likely_cause') or 'unknown'}\n"
                      f"(figures in {target / MANIFEST}; accept lower agreement with --min-agreement X)", parity)


def build_manifest(run: Any, format: str, quantize: str | None, directory: Path, check: ExportCheck,
                   seconds: float, details: dict[str, Any]) -> dict[str, Any]:
    """``export_manifest.json``: source run, format, quantization, files (bytes, SHA-256), tools, parity."""
    from tuneforge.core.paths import file_sha256

    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[str(path.relative_to(directory))] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    return {
        "kind": "tuneforge export", "version": 1, "format": format, "quantization": quantize,
        "source_run": {"run_dir": str(run.run_dir.resolve()), "method": run.method.name,
                       "weights": str(run.weights_dir.relative_to(run.run_dir)) if run.weights_dir.is_relative_to(run.run_dir)
                       else str(run.weights_dir), "base_model": run.base_model},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "export_seconds": round(seconds, 3),
        "files": files, "tools": tool_versions(), "details": details, "parity": check.details.get("parity"),
    }


def tool_versions() -> dict[str, str]:
    """Versions of the libraries an export may have used (those installed)."""
    from importlib import metadata

    from tuneforge.core.version import __version__

    versions = {"tuneforge": __version__}
    for name in ("torch", "transformers", "peft", "safetensors", "llama-cpp-python", "onnx", "onnxruntime",
                 "onnxruntime-genai"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
