"""Base preference objectives (RE-PO Table 1): the loss of a pair as labelled, as reversed, and Delta.

Every objective is written as the pair (L(obs), L(rev)) computed from per-sequence log-prob sums;
the robust modes (robust.py) only combine these two terms, so any robust mode works with any base
objective. Delta = L(rev) - L(obs) is the logit of the loss-induced preference probability (Eq. 2).
"""

from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor

OBJECTIVES = ("dpo", "ipo", "simpo", "cpo")
NLL_NORMALIZATIONS = ("sum", "mean")


@dataclass(frozen=True)
class ObjectiveConfig:
    name: str = "dpo"
    beta: float = 0.1
    ipo_length_normalize: bool = False      # TRL's IPO divides each log-ratio by its length
    simpo_gamma_beta_ratio: float = 0.5     # SimPO's target margin gamma = beta * ratio
    cpo_lambda: float = 1.0                 # weight of the NLL term on the chosen response
    cpo_nll_normalize: str = "sum"          # sum (paper) | mean (TRL: token-mean NLL)

    def __post_init__(self):
        if self.name not in OBJECTIVES:
            raise ValueError(f"objective.name must be one of {OBJECTIVES}, got {self.name!r}")
        if not self.beta > 0:
            raise ValueError(f"objective.beta must be > 0, got {self.beta}")
        if self.simpo_gamma_beta_ratio < 0:
            raise ValueError(f"objective.simpo_gamma_beta_ratio must be >= 0, got {self.simpo_gamma_beta_ratio}")
        if self.cpo_lambda < 0:
            raise ValueError(f"objective.cpo_lambda must be >= 0, got {self.cpo_lambda}")
        if self.cpo_nll_normalize not in NLL_NORMALIZATIONS:
            raise ValueError(f"objective.cpo_nll_normalize must be one of {NLL_NORMALIZATIONS}, "
                             f"got {self.cpo_nll_normalize!r}")

    @property
    def needs_reference(self) -> bool:
        """DPO and IPO compare against a frozen reference policy; SimPO and CPO do not."""
        return self.name in ("dpo", "ipo")


class ReferenceMode(str, Enum):
    """Where the reference log-prob sums of a pair come from (resolved once, from model.reference
    and the objective, by resolve_reference_mode)."""
    MODEL = "model"               # a frozen copy of the initial policy, forward-only every step
    PRECOMPUTED = "precomputed"   # every batch carries reference_chosen / reference_rejected
    NONE = "none"                 # SimPO / CPO: the objective uses no reference


REQUESTED_REFERENCE_MODES = (ReferenceMode.MODEL.value, ReferenceMode.PRECOMPUTED.value)


def resolve_reference_mode(objective: ObjectiveConfig,
                           requested: "ReferenceMode | str" = ReferenceMode.MODEL) -> ReferenceMode:
    """The reference mode of a run: `requested` (model.reference: model | precomputed) for an
    objective with a reference, NONE for SimPO / CPO (with them, precomputed is an error)."""
    if requested not in REQUESTED_REFERENCE_MODES:
        raise ValueError(f"model.reference must be one of {REQUESTED_REFERENCE_MODES}, got {requested!r}")
    requested = ReferenceMode(requested)
    if objective.needs_reference:
        return requested
    if requested is ReferenceMode.PRECOMPUTED:
        raise ValueError(f"model.reference=precomputed, but objective {objective.name!r} uses no "
                         "reference model (SimPO / CPO): remove the override (model.reference=model "
                         "builds no reference for them either)")
    return ReferenceMode.NONE


@dataclass
class SequenceLogProbs:
    """Per-pair sums of completion-token log-probs (shape [B] each) and completion token counts."""

    policy_chosen: Tensor
    policy_rejected: Tensor
    chosen_tokens: Tensor
    rejected_tokens: Tensor
    reference_chosen: Tensor | None = None
    reference_rejected: Tensor | None = None


@dataclass
class BaseTerms:
    """L(obs), L(rev) and Delta per pair, plus the implicit rewards that a trainer logs."""

    loss_observed: Tensor
    loss_reversed: Tensor
    delta: Tensor
    chosen_reward: Tensor
    rejected_reward: Tensor


def _dpo(logps: SequenceLogProbs, cfg: ObjectiveConfig) -> BaseTerms:
    chosen = cfg.beta * (logps.policy_chosen - logps.reference_chosen)
    rejected = cfg.beta * (logps.policy_rejected - logps.reference_rejected)
    x = chosen - rejected                                   # beta * h
    return BaseTerms(F.softplus(-x), F.softplus(x), x, chosen, rejected)


def _ipo(logps: SequenceLogProbs, cfg: ObjectiveConfig) -> BaseTerms:
    chosen = logps.policy_chosen - logps.reference_chosen
    rejected = logps.policy_rejected - logps.reference_rejected
    if cfg.ipo_length_normalize:
        chosen = chosen / logps.chosen_tokens
        rejected = rejected / logps.rejected_tokens
    h = chosen - rejected
    target = 1.0 / (2.0 * cfg.beta)
    return BaseTerms((h - target) ** 2, (h + target) ** 2, 2.0 * h / cfg.beta,
                     cfg.beta * chosen, cfg.beta * rejected)


def _simpo(logps: SequenceLogProbs, cfg: ObjectiveConfig) -> BaseTerms:
    chosen = cfg.beta * logps.policy_chosen / logps.chosen_tokens
    rejected = cfg.beta * logps.policy_rejected / logps.rejected_tokens
    s = chosen - rejected
    gamma = cfg.beta * cfg.simpo_gamma_beta_ratio
    loss_observed = F.softplus(gamma - s)                   # -logsig(s - gamma)
    loss_reversed = F.softplus(gamma + s)                   # -logsig(-s - gamma)
    delta = F.logsigmoid(s - gamma) - F.logsigmoid(-s - gamma)
    return BaseTerms(loss_observed, loss_reversed, delta, chosen, rejected)


def _cpo(logps: SequenceLogProbs, cfg: ObjectiveConfig) -> BaseTerms:
    chosen = cfg.beta * logps.policy_chosen
    rejected = cfg.beta * logps.policy_rejected
    x = chosen - rejected
    nll_chosen, nll_rejected = -logps.policy_chosen, -logps.policy_rejected
    if cfg.cpo_nll_normalize == "mean":
        nll_chosen = nll_chosen / logps.chosen_tokens
        nll_rejected = nll_rejected / logps.rejected_tokens
    return BaseTerms(F.softplus(-x) + cfg.cpo_lambda * nll_chosen,
                     F.softplus(x) + cfg.cpo_lambda * nll_rejected,
                     x + cfg.cpo_lambda * (nll_rejected - nll_chosen), chosen, rejected)


_BASE_OBJECTIVES = {"dpo": _dpo, "ipo": _ipo, "simpo": _simpo, "cpo": _cpo}


def base_terms(logps: SequenceLogProbs, cfg: ObjectiveConfig) -> BaseTerms:
    """L(obs), L(rev), Delta and rewards of objective `cfg.name` for every pair."""
    if cfg.needs_reference and (logps.reference_chosen is None or logps.reference_rejected is None):
        raise ValueError(f"objective {cfg.name!r} needs reference log-prob sums "
                         "(reference_chosen / reference_rejected)")
    return _BASE_OBJECTIVES[cfg.name](logps, cfg)


def as_float(x: Tensor | float, like: Tensor) -> Tensor:
    """Token counts may arrive as integers; the math needs the log-probs' floating dtype."""
    return torch.as_tensor(x, device=like.device).to(like.dtype)
