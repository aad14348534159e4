"""Robust modes: ways of combining L(obs), L(rev) and Delta of any base objective into one loss.

RE (RE-PO) is the point of the project: the E-step posterior w that the label is correct,
w = sigma(stopgrad(Delta) + logit(eta_k)) (Eq. 4, formed from logits, never by dividing
probabilities), and the M-step loss w * softplus(-Delta) + (1 - w) * softplus(Delta) (Eq. 5).
"""

from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor

from nemo_repo.objectives.base import BaseTerms



class RobustMode(str, Enum):
    """robust.mode (YAML strings compare and convert as they are: RobustMode("re") == "re")."""
    NONE = "none"       # the base objective as labelled
    LS = "ls"           # label smoothing
    RDPO = "rdpo"       # unbiased loss for a known flip rate
    HOLDER = "holder"   # Hölder-DPO
    ROPO = "ropo"
    RE = "re"           # RE-PO: EM over per-annotator reliability


ROBUST_MODES = tuple(mode.value for mode in RobustMode)
RE_FORMS = ("induced", "weighted")


@dataclass(frozen=True)
class RobustConfig:
    mode: RobustMode = RobustMode.NONE
    epsilon: float = 0.1          # label smoothing rate (ls) / known flip rate (rdpo)
    holder_gamma: float = 2.0     # Hölder-DPO exponent
    ropo_alpha: float = 14.0      # ROPO trade-off a
    re_form: str = "induced"      # induced (paper: induced logistic loss) | weighted (w L_obs + (1-w) L_rev)

    def __post_init__(self):
        if self.mode not in ROBUST_MODES:
            raise ValueError(f"robust.mode must be one of {ROBUST_MODES}, got {self.mode!r}")
        object.__setattr__(self, "mode", RobustMode(self.mode))
        if not 0.0 <= self.epsilon < 0.5:
            raise ValueError(f"robust.epsilon must be in [0, 0.5), got {self.epsilon}")
        if not self.holder_gamma > 0:
            raise ValueError(f"robust.holder_gamma must be > 0, got {self.holder_gamma}")
        if not self.ropo_alpha > 0:
            raise ValueError(f"robust.ropo_alpha must be > 0, got {self.ropo_alpha}")
        if self.re_form not in RE_FORMS:
            raise ValueError(f"robust.re_form must be one of {RE_FORMS}, got {self.re_form!r}")

    @property
    def trains_reliability(self) -> bool:
        """RE mode: the loss uses the posterior w and every optimizer step updates eta."""
        return self.mode is RobustMode.RE


def posterior_weight(delta: Tensor, eta: Tensor, scale: float = 1.0) -> Tensor:
    """E-step (Eq. 4): P(label correct | pair) = sigma(Delta + logit(eta)), with no gradient.
    `scale` != 1 scores with the calibrated probability sigma(scale * Delta) instead of
    sigma(Delta) (reliability.calibrate; 1 = the paper).

    eta = 0 or 1 give logit = -inf / +inf and w = 0 / 1 exactly (sigma saturates, no NaN)."""
    if scale != 1.0:
        delta = delta * scale
    logits = delta.detach().to(torch.float64) + torch.logit(eta.detach().to(torch.float64))
    return torch.sigmoid(logits).to(delta.dtype)


def robust_loss(terms: BaseTerms, cfg: RobustConfig, w: Tensor | None = None) -> Tensor:
    """Per-pair loss of robust mode `cfg.mode`; `w` (detached) is required for mode "re"."""
    obs, rev, delta = terms.loss_observed, terms.loss_reversed, terms.delta
    if cfg.mode is RobustMode.NONE:
        return obs
    if cfg.mode is RobustMode.LS:
        return (1.0 - cfg.epsilon) * obs + cfg.epsilon * rev
    if cfg.mode is RobustMode.RDPO:
        return ((1.0 - cfg.epsilon) * obs - cfg.epsilon * rev) / (1.0 - 2.0 * cfg.epsilon)
    if cfg.mode is RobustMode.HOLDER:
        log_p = F.logsigmoid(delta)                     # p = sigma(Delta); = sigma(beta h) for DPO
        g = cfg.holder_gamma
        return -(1.0 + g) * torch.exp(g * log_p) + g * torch.exp((1.0 + g) * log_p)
    if cfg.mode is RobustMode.ROPO:
        a = cfg.ropo_alpha
        return (4 * a / (1 + a) ** 2) * F.softplus(-delta) + (4 * a * a / (1 + a) ** 2) * torch.sigmoid(-delta)
    if w is None:
        raise ValueError("robust.mode 're' needs the posterior weights w")
    if cfg.re_form == "weighted":
        return w * obs + (1.0 - w) * rev
    return w * F.softplus(-delta) + (1.0 - w) * F.softplus(delta)
