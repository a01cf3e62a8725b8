"""The parity check: does an export answer like the trained model it came from?

The same token ids (from the run's HF tokenizer) go into the trained model and into the export; the
export's *own* tokenizer is compared with HF's on the same texts (special tokens included). Figures:
``tokenizer_agreement`` (share of texts tokenized identically), ``top1_agreement`` (share of positions
whose most likely next token is the same), ``max_abs_logit_diff``, ``mean_kl`` (KL(trained || export)
per position, nats), ``greedy_agreement`` (share of examples whose greedy answer is token-for-token the
same) and the answers' accuracy for both models. An exporter gives the export as an ``ExportedModel``;
``measure_parity`` does the rest, so every format is checked the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

# Greedy agreement an export must reach unless --min-agreement says otherwise, by quantization.
# Lower quantizations (q4_k_m, ...) report without failing.
DEFAULT_THRESHOLDS = {None: 0.99, "f32": 0.99, "f16": 0.99, "bf16": 0.99, "fp32": 0.99, "fp16": 0.99, "q8_0": 0.95}
MAX_EXAMPLES = 32
MAX_NEW_TOKENS = 16


class ExportedModel(Protocol):
    """What the check needs from an export: its own tokenizer and next-token logits for given ids."""

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` by the export's own tokenizer (special tokens parsed, no BOS added)."""

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token logits at every position of ``ids``: shape (len(ids), vocabulary)."""


@dataclass
class ParityReport:
    """The figures of one parity check (see the module docstring) and whether they pass ``threshold``."""

    examples: int
    tokenizer_agreement: float
    top1_agreement: float
    max_abs_logit_diff: float
    mean_kl: float
    greedy_agreement: float
    trained_accuracy: float | None
    export_accuracy: float | None
    threshold: float | None
    passed: bool
    likely_cause: str | None = None
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        accuracy = ""
        if self.trained_accuracy is not None:
            accuracy = f", accuracy {self.export_accuracy:.3f} (trained model {self.trained_accuracy:.3f})"
        return (f"{self.examples} examples: greedy agreement {self.greedy_agreement:.1%}, top-1 agreement "
                f"{self.top1_agreement:.1%}, tokenizer agreement {self.tokenizer_agreement:.1%}, max |Δlogit| "
                f"{self.max_abs_logit_diff:.4g}, mean KL {self.mean_kl:.4g}{accuracy}")


@dataclass
class ParityCase:
    """One example as the check feeds it: the rendered prompt, the full conversation, the reference answer."""

    prompt: str
    full_text: str
    reference: str | None


def threshold_for(quantization: str | None, min_agreement: float | None) -> float | None:
    """The greedy agreement to require: ``min_agreement`` if given, else the default of the quantization."""
    if min_agreement is not None:
        return min_agreement
    return DEFAULT_THRESHOLDS.get(quantization.lower() if quantization else None)


def reference_model(model: Any) -> ExportedModel:
    """The trained torch model (and no tokenizer of its own) as an ``ExportedModel`` for the comparison."""
    import torch

    class TorchReference:
        def encode(self, text: str) -> list[int]:  # never asked: the HF tokenizer is the reference
            raise NotImplementedError

        def logits(self, ids: Sequence[int]) -> np.ndarray:
            device = next(model.parameters()).device
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([list(ids)], device=device)).logits[0]
            return out.float().cpu().numpy()

    return TorchReference()


def greedy_answer(model: ExportedModel, prompt_ids: Sequence[int], stop_ids: Sequence[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation of ``prompt_ids``: by the export's own generation loop when it has one (``greedy``:
    ONNX Runtime GenAI's, with its KV cache), else by full re-evaluation per token (slow, same for every backend)."""
    if hasattr(model, "greedy"):
        return list(model.greedy(prompt_ids, stop_ids, max_new_tokens))
    ids, answer = list(prompt_ids), []
    for _ in range(max_new_tokens):
        token = int(np.argmax(model.logits(ids)[-1]))
        if token in stop_ids:
            break
        answer.append(token)
        ids.append(token)
    return answer


def measure_parity(trained: Any, tokenizer: Any, export: ExportedModel, cases: Sequence[ParityCase],
                   threshold: float | None, stop_ids: Sequence[int], max_new_tokens: int = MAX_NEW_TOKENS,
                   decode: Callable[[list[int]], str] | None = None) -> ParityReport:
    """Compare ``export`` with the ``trained`` torch model on ``cases`` (see the module docstring)."""
    from tuneforge.evaluate.metrics import normalize_answer

    reference = reference_model(trained)
    decode = decode or (lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
    same_tokens = top1_same = positions = 0
    max_diff, kl_sum, greedy_same, right = 0.0, 0.0, 0, [0, 0]
    mismatches: list[dict[str, Any]] = []
    scored = 0
    for case in cases:
        hf_ids = tokenizer(case.full_text, add_special_tokens=False)["input_ids"]
        own_ids = export.encode(case.full_text)
        same_tokens += own_ids == hf_ids
        if own_ids != hf_ids and len(mismatches) < 5:
            mismatches.append({"kind": "tokenizer", "text": case.full_text[:200], "hf": hf_ids[:40], "export": own_ids[:40]})
        expected, got = reference.logits(hf_ids), export.logits(hf_ids)
        width = min(expected.shape[1], got.shape[1])  # a padded GGUF/ONNX vocabulary may be longer
        expected, got = expected[:, :width], got[:, :width]
        top1_same += int((expected.argmax(1) == got.argmax(1)).sum())
        positions += expected.shape[0]
        max_diff = max(max_diff, float(np.abs(expected - got).max()))
        kl_sum += float(_kl(expected, got).sum())
        prompt_ids = tokenizer(case.prompt, add_special_tokens=False)["input_ids"]
        trained_answer = greedy_answer(reference, prompt_ids, stop_ids, max_new_tokens)
        export_answer = greedy_answer(export, prompt_ids, stop_ids, max_new_tokens)
        greedy_same += trained_answer == export_answer
        if trained_answer != export_answer and len(mismatches) < 10:
            mismatches.append({"kind": "answer", "prompt": case.prompt[-200:], "trained": decode(trained_answer),
                               "export": decode(export_answer)})
        if case.reference is not None:
            scored += 1
            wanted = normalize_answer(case.reference)
            right[0] += normalize_answer(decode(trained_answer)) == wanted
            right[1] += normalize_answer(decode(export_answer)) == wanted
    count = max(len(cases), 1)
    report = ParityReport(
        examples=len(cases), tokenizer_agreement=same_tokens / count, top1_agreement=top1_same / max(positions, 1),
        max_abs_logit_diff=round(max_diff, 6), mean_kl=round(kl_sum / max(positions, 1), 8),
        greedy_agreement=greedy_same / count, trained_accuracy=right[0] / scored if scored else None,
        export_accuracy=right[1] / scored if scored else None, threshold=threshold, passed=True, mismatches=mismatches)
    report.passed = threshold is None or report.greedy_agreement >= threshold
    if not report.passed or report.tokenizer_agreement < 1.0:
        report.likely_cause = likely_cause(report)
    return report


def likely_cause(report: ParityReport) -> str:
    """The most likely reason an export answers differently, from the figures."""
    if report.tokenizer_agreement < 1.0:
        return ("tokenizer: the export's own tokenizer splits the texts differently from the HF tokenizer "
                "(an unrecognised pre-tokenizer or special token); prompts sent to it as text will differ")
    if report.top1_agreement > 0.999 and report.greedy_agreement < 1.0:
        return "template or end-of-turn tokens: the next-token predictions agree but answers end differently"
    return ("quantization: the export's logits drift from the trained model's (max |Δlogit| "
            f"{report.max_abs_logit_diff:.3g}); choose a finer quantization (q8_0, f16) or lower --min-agreement")


def _kl(expected: np.ndarray, got: np.ndarray) -> np.ndarray:
    p = _log_softmax(expected.astype(np.float64))
    q = _log_softmax(got.astype(np.float64))
    return (np.exp(p) * (p - q)).sum(axis=1)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def parity_cases(tokenizer: Any, examples: Sequence[Any], max_examples: int = MAX_EXAMPLES) -> list[ParityCase]:
    """The examples as the check feeds them: chat rendered with the run's chat template, text as it is."""
    from tuneforge.data.tokenize import render_chat, render_prompt

    cases = []
    for example in list(examples)[:max_examples]:
        if example.is_text:
            cases.append(ParityCase(prompt=example.text or "", full_text=example.text or "", reference=None))
        else:
            cases.append(ParityCase(prompt=render_prompt(tokenizer, example), full_text=render_chat(tokenizer, example.messages),
                                    reference=example.output))
    return cases


def answer_budget(tokenizer: Any, cases: Sequence[ParityCase]) -> int:
    """New tokens per greedy answer: the longest reference plus a little, at most ``MAX_NEW_TOKENS``."""
    references = [case.reference for case in cases if case.reference]
    if not references:
        return MAX_NEW_TOKENS
    longest = max(len(tokenizer(ref, add_special_tokens=False)["input_ids"]) for ref in references)
    return min(MAX_NEW_TOKENS, longest + 4)


def check_against_run(run_dir: Any, open_export: Callable[[Any, Any], ExportedModel], quantize: str | None = None,
                      data: Any = None, min_agreement: float | None = None, **_: Any) -> Any:
    """The ``ExportCheck`` of an export: load the run's trained model, open the export, compare on its examples.

    ``open_export(trained_model, tokenizer)`` returns the export as an ``ExportedModel``.
    """
    from tuneforge.export import ExportCheck
    from tuneforge.export.run import open_run, parity_examples
    from tuneforge.model.load import end_of_turn_ids

    run = open_run(run_dir)
    trained, tokenizer = run.load_trained()
    cases = parity_cases(tokenizer, parity_examples(run, data))
    export = open_export(trained, tokenizer)
    threshold = threshold_for(quantize, min_agreement)
    report = measure_parity(trained, tokenizer, export, cases, threshold, end_of_turn_ids(tokenizer),
                            answer_budget(tokenizer, cases))
    problems = []
    if not report.passed:
        problems.append(f"greedy agreement {report.greedy_agreement:.1%} is under the required {threshold:.1%} "
                        f"({report.summary()})")
    return ExportCheck(passed=report.passed, problems=problems, details={"parity": report.to_dict()})
