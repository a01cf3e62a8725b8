"""``dpo``: Direct Preference Optimization (Rafailov et al., 2023), TRL's ``sigmoid`` loss.

For each pair, with log-probabilities summed over the answer tokens and the reference model being the
base with the adapter switched off (no second copy of the model; its log-probs are computed once per
batch under ``no_grad``):

    loss = -log σ(β · [(log π(chosen) − log π_ref(chosen)) − (log π(rejected) − log π_ref(rejected))])

averaged over the pairs (each pair weighs the same). Logged: ``reward_chosen`` / ``reward_rejected``
(β × the log-ratio), ``reward_margin``, ``preference_accuracy`` (pairs whose chosen reward is higher;
also the step's ``accuracy``), ``logp_chosen`` / ``logp_rejected``. Equal to TRL 1.16's
``DPOTrainer`` loss on the same batch (tests/test_preference_objectives.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.core.registries import OBJECTIVES

if TYPE_CHECKING:
    from tuneforge.model.loss import LossSums


class DpoObjective:
    """The DPO loss with inverse temperature ``beta`` (``dpo_beta``)."""

    name = "dpo"
    pairwise = True  # trains on EncodedPair batches: chosen rows, then rejected rows
    supports_packing = False
    options = ("dpo_beta",)

    def __init__(self, beta: float = 0.1) -> None:
        self.beta = beta

    def configure(self, config: Any) -> DpoObjective:
        """This run's objective: its ``dpo_beta``."""
        return DpoObjective(config.dpo_beta)

    def config_problems(self, config: Any, method: Any) -> list[str]:
        """DPO's reference is the base with the adapter off: the method must train a PEFT adapter."""
        if method is None or hasattr(method, "peft_config"):
            return []
        return [f"objective dpo: its reference model is the base model with the adapter switched off, and method "
                f"{config.method!r} has no PEFT adapter to switch off; use an adapter method (--method lora, qlora, dora, "
                "ia3, ...), or --objective orpo, which needs no reference model"]

    def __call__(self, model: Any, batch: dict[str, Any], *, through_wrapper: bool = False) -> LossSums:
        import torch.nn.functional as F

        from tuneforge.model.loss import LossSums
        from tuneforge.train.objectives.pairs import preference_metrics, reference_model, sequence_log_probs, split_pairs

        policy, _ = sequence_log_probs(model, batch, through_wrapper)
        with reference_model(model):
            reference, _ = sequence_log_probs(model, batch, through_wrapper)
        (chosen, rejected), (ref_chosen, ref_rejected) = split_pairs(policy), split_pairs(reference)
        chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
        losses = -F.logsigmoid(self.beta * (chosen_ratio - rejected_ratio))
        correct, metrics = preference_metrics(self.beta * chosen_ratio.detach(), self.beta * rejected_ratio.detach(),
                                              chosen, rejected)
        return LossSums(losses.sum(), int(losses.numel()), correct, metrics)


DPO = OBJECTIVES.register("dpo", DpoObjective())
