"""Preference objectives in pure torch (no megatron): one call from log-prob sums to per-pair loss.

    out = preference_loss(SequenceLogProbs(...), ObjectiveConfig(name="dpo"), RobustConfig(mode="re"), eta)
    out.loss.mean().backward()
"""

from dataclasses import dataclass

from torch import Tensor

from nemo_repo.objectives.base import (ObjectiveConfig, ReferenceMode, SequenceLogProbs, as_float,
                                       base_terms, resolve_reference_mode)
from nemo_repo.objectives.robust import RobustConfig, RobustMode, posterior_weight, robust_loss

__all__ = ["ObjectiveConfig", "ReferenceMode", "resolve_reference_mode", "RobustConfig", "RobustMode",
           "SequenceLogProbs", "PreferenceLossOutput", "preference_loss", "posterior_weight"]


@dataclass
class PreferenceLossOutput:
    """Per-pair results (shape [B] each). Only `loss` and `delta` carry gradient."""

    loss: Tensor
    delta: Tensor
    w: Tensor | None              # posterior that the label is correct (E-step); None without eta.
                                  # Trains only in mode "re"; a diagnostic (fixed eta) otherwise
    chosen_reward: Tensor
    rejected_reward: Tensor
    margin: Tensor
    reward_accuracy: Tensor       # 1.0 where chosen_reward > rejected_reward


def preference_loss(logps: SequenceLogProbs, objective: ObjectiveConfig, robust: RobustConfig,
                    eta: Tensor | None = None, scale: float = 1.0) -> PreferenceLossOutput:
    """Per-pair loss and diagnostics. `eta` ([B], the reliability of each pair's annotator) is
    required when robust.mode == "re"; given in another mode, it only yields the diagnostic w.
    `scale` is the E-step's calibration of Delta (posterior_weight; 1 = the paper)."""
    like = logps.policy_chosen
    logps = SequenceLogProbs(
        logps.policy_chosen, logps.policy_rejected,
        as_float(logps.chosen_tokens, like), as_float(logps.rejected_tokens, like),
        logps.reference_chosen, logps.reference_rejected)
    terms = base_terms(logps, objective)
    if robust.trains_reliability and eta is None:
        raise ValueError("robust.mode 're' needs eta (the reliability of each pair's annotator)")
    w = None if eta is None else posterior_weight(terms.delta, as_float(eta, like), scale)
    chosen, rejected = terms.chosen_reward.detach(), terms.rejected_reward.detach()
    margin = chosen - rejected
    return PreferenceLossOutput(
        loss=robust_loss(terms, robust, w if robust.trains_reliability else None), delta=terms.delta, w=w,
        chosen_reward=chosen, rejected_reward=rejected, margin=margin,
        reward_accuracy=(margin > 0).to(like.dtype))
