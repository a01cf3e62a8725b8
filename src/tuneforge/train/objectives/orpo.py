"""``orpo``: Odds Ratio Preference Optimization (Hong et al., 2024): SFT and preference in one loss, no reference.

For each pair, with ``p`` the mean log-probability per answer token (length-normalised, as in the paper
and TRL):

    log_odds = (p_chosen − p_rejected) − (log(1 − e^p_chosen) − log(1 − e^p_rejected))
    loss = NLL(chosen) − λ · log σ(log_odds)

where NLL(chosen) is the mean cross-entropy over the chosen answer's tokens and λ is ``orpo_alpha``
(TRL's ``beta``); averaged over the pairs. The odds-ratio term equals TRL 1.16's
``ORPOTrainer.odds_ratio_loss`` (TRL takes the NLL over prompt and answer tokens; here, as in the paper,
the answer only). Logged: ``reward_chosen`` / ``reward_rejected`` (λ × p), ``reward_margin``,
``preference_accuracy``, ``log_odds_ratio`` (log σ(log_odds)), ``nll``. Needs no adapter: works with
every method, full fine-tuning included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuneforge.core.registries import OBJECTIVES

if TYPE_CHECKING:
    import torch

    from tuneforge.model.loss import LossSums


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, stable at both ends (Mächler 2012)."""
    import math

    import torch

    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class OrpoObjective:
    """The ORPO loss with odds-ratio weight ``alpha`` (``orpo_alpha``, the paper's λ)."""

    name = "orpo"
    pairwise = True
    supports_packing = False
    options = ("orpo_alpha",)

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha

    def configure(self, config: Any) -> OrpoObjective:
        return OrpoObjective(config.orpo_alpha)

    def __call__(self, model: Any, batch: dict[str, Any], *, through_wrapper: bool = False) -> LossSums:
        import torch.nn.functional as F

        from tuneforge.model.loss import LossSums
        from tuneforge.train.objectives.pairs import preference_metrics, sequence_log_probs, split_pairs

        sums, counts = sequence_log_probs(model, batch, through_wrapper)
        mean = sums / counts.clamp(min=1)
        chosen, rejected = split_pairs(mean)
        log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
        ratio = F.logsigmoid(log_odds)
        nll = -chosen
        losses = nll - self.alpha * ratio
        correct, metrics = preference_metrics(self.alpha * chosen.detach(), self.alpha * rejected.detach(), chosen, rejected)
        metrics.update(log_odds_ratio=float(ratio.detach().sum()), nll=float(nll.detach().sum()))
        return LossSums(losses.sum(), int(losses.numel()), correct, metrics)


ORPO = OBJECTIVES.register("orpo", OrpoObjective())
