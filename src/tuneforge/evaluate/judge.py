"""LLM-as-judge: a local model grades each answer against the reference with a rubric prompt.

The judge is any model tuneforge can load (the pipeline's default: the run's base model). It is
asked, per example, for PASS or FAIL; ``judge_score`` is the share judged PASS (an unreadable reply
counts as FAIL and is counted in ``judge_unparsed``). Because a small judge can be unreliable, its
agreement with exact match is reported beside it — ``judge_agreement`` (share of examples where
PASS ⇔ exact match) and Cohen's ``judge_kappa`` — so users can see whether to trust it.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from tuneforge.evaluate.metrics import normalize_answer
from tuneforge.inference import GenerationRequest, InferenceEngine

DEFAULT_RUBRIC = (
    "You grade answers. Given a question, the reference answer and an answer to grade, reply PASS when the answer "
    "means the same as the reference (wording may differ) and FAIL otherwise. Reply with one word: PASS or FAIL."
)
JUDGE_MAX_NEW_TOKENS = 4
_PASS = re.compile(r"\b(pass|yes|correct)\b")
_FAIL = re.compile(r"\b(fail|no|incorrect|wrong)\b")


def judge_messages(item: Mapping[str, Any], rubric: str = DEFAULT_RUBRIC) -> list[dict[str, str]]:
    """The judge's chat for one answer: the rubric as the system turn, the question, reference and answer as the user turn."""
    return [{"role": "system", "content": rubric},
            {"role": "user", "content": f"Question:\n{item['input']}\n\nReference answer:\n{item['reference']}\n\n"
                                        f"Answer to grade:\n{item['prediction']}\n\nVerdict (PASS or FAIL):"}]


def read_verdict(reply: str) -> bool | None:
    """PASS → True, FAIL → False, from the judge's reply; None when it says neither (or both)."""
    text = reply.strip().lower()
    passed, failed = bool(_PASS.search(text)), bool(_FAIL.search(text))
    return None if passed == failed else passed


def agreement(judged: Sequence[bool], exact: Sequence[bool]) -> tuple[float, float]:
    """(share of examples where the judge and exact match agree, Cohen's kappa; 0 when undefined)."""
    if not judged:
        return 0.0, 0.0
    share = sum(j == e for j, e in zip(judged, exact)) / len(judged)
    p_judge, p_exact = sum(judged) / len(judged), sum(exact) / len(exact)
    chance = p_judge * p_exact + (1 - p_judge) * (1 - p_exact)
    kappa = 0.0 if chance >= 1 else (share - chance) / (1 - chance)
    return float(share), float(kappa)


def judge_answers(model: Any, tokenizer: Any, predictions: Sequence[Mapping[str, Any]], rubric: str = DEFAULT_RUBRIC,
                  batch_size: int = 16) -> dict[str, Any]:
    """Grade every ``{"input", "reference", "prediction"}`` with the judge model (greedy).

    Returns ``judge_score``, ``judge_agreement``, ``judge_kappa``, ``judge_unparsed`` and the per-example
    ``verdicts`` (True, False or None) and ``replies``.
    """
    if not predictions:
        return {"judge_score": 0.0, "judge_agreement": 0.0, "judge_kappa": 0.0, "judge_unparsed": 0, "verdicts": [], "replies": []}
    engine = InferenceEngine(model, tokenizer, batch_size=batch_size)
    requests = [GenerationRequest(messages=judge_messages(item, rubric), max_new_tokens=JUDGE_MAX_NEW_TOKENS) for item in predictions]
    replies = [result.text.strip() for result in engine.generate(requests)]
    verdicts = [read_verdict(reply) for reply in replies]
    passed = [verdict is True for verdict in verdicts]
    exact = [normalize_answer(p["prediction"]) == normalize_answer(p["reference"]) for p in predictions]
    share, kappa = agreement(passed, exact)
    return {"judge_score": sum(passed) / len(passed), "judge_agreement": share, "judge_kappa": kappa,
            "judge_unparsed": sum(verdict is None for verdict in verdicts), "verdicts": verdicts, "replies": replies}
