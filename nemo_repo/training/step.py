"""StepRunner: one optimizer step, or one evaluation pass, of preference optimisation on
megatron-core (the trainer side; the model class is nemo_repo.model.preference.PreferenceModel).

One optimizer step (`train_step`) over this data-parallel rank's micro-batches of the step:
  1. eta snapshot: eta_for(annotator_index) of every micro-batch, taken before any forward and
     held fixed for the whole step (in every robust mode when a ReliabilityState is given: the
     posterior w is then reported by every mode and trains in RE mode only).
  2. reference (ReferenceMode.MODEL: DPO/IPO with a frozen reference model): one forward-only
     pipelined pass of the reference (CompletionScorer.score); its per-pair log-prob sums stay on
     the last stage. With precomputed reference sums (in the batch) or for SimPO/CPO
     (ReferenceMode.NONE) there is no such pass.
  3. policy: PreferenceModel.run, megatron's get_forward_backward_func (1F1B when PP > 1): the
     GPTModel runs chosen+rejected rows together; on the last stage `loss_func` computes per-pair
     log-prob sums, preference_loss(...) and returns the scaled loss (below).
  4. per-pair values (delta, w, log-prob sums) of all micro-batches are broadcast from the last
     pipeline stage over the pipeline group, so every rank (all TP and PP ranks) holds them; each
     rank accumulates w and calls ReliabilityState.step(dp_group) after the optimizer step. With
     reliability.estimate_from=holdout the held-out scoring pairs get w (and feed the M-step) but
     no loss: the step's loss is the mean over the trained pairs. Each (TP, PP) coordinate has its
     own DP group spanning every DP replica, so every rank reduces the same global sums and eta
     ends identical everywhere (no broadcast of eta needed).
  5. metrics (sums on the last stage) are broadcast over the pipeline group and summed over DP.

Loss normalisation: the step's loss is the mean of per-pair losses over the GLOBAL batch of G
pairs. The schedule divides each micro-batch loss by M (micro-batches per rank) and mcore DDP
averages gradients over D data-parallel ranks, so loss_func returns sum(per-pair loss) * M * D / G:
gradients then equal d/dtheta (1/G) sum_i loss_i whatever M, D, TP, PP (tested).
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist

from nemo_repo.device import all_reduce, broadcast, current_device
from nemo_repo.model.preference import CompletionScorer, PassState, PreferenceModel
from nemo_repo.objectives import ReferenceMode

# Per-pair sums reduced for the step metrics (order of the packed tensor).
_SUM_KEYS = ("loss", "reward_accuracy", "chosen_reward", "rejected_reward", "margin", "w",
             "w_below_half", "pairs", "tokens")
# Per-pair values sent from the last pipeline stage to every rank.
_PAIR_KEYS = ("delta", "w", "chosen_logp", "rejected_logp")   # w is NaN without reliability


@dataclass
class StepResult:
    """metrics: reduced over DP, identical on every rank. pairs: this DP rank's pairs of the step
    {pair_index, annotator_index, delta, w} (1-D CPU tensors, identical on its TP/PP ranks)."""
    metrics: dict
    pairs: dict


def _cat(parts: list, dtype: torch.dtype) -> torch.Tensor:
    """torch.cat, or an empty tensor of `dtype` for a rank without pairs."""
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


def broadcast_from_last_stage(packed: torch.Tensor) -> torch.Tensor:
    """float64 values filled on the last pipeline stage (zeros elsewhere) -> every stage, on CPU."""
    from megatron.core import parallel_state

    if parallel_state.get_pipeline_model_parallel_world_size() > 1:
        broadcast(packed, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                  group=parallel_state.get_pipeline_model_parallel_group())
    return packed.cpu()


def gather_to_first_dp_rank(local: dict) -> dict | None:
    """{key: 1-D tensor} of every DP rank concatenated in DP-rank order on DP rank 0 (every TP/PP
    rank of it); None on the other DP ranks."""
    from megatron.core import parallel_state

    group = parallel_state.get_data_parallel_group()
    gathered = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, local, group=group)
    if parallel_state.get_data_parallel_rank() != 0:
        return None
    return {key: torch.cat([part[key] for part in gathered]) for key in local}


def score_pairs(scorer: CompletionScorer, micro_batches) -> dict | None:
    """Collective: the scorer's completion log-prob sums of this DP rank's micro-batches,
    gathered to DP rank 0 as {pair_index, annotator_index, chosen_logp, rejected_logp} (1-D CPU
    tensors in DP-rank order); None on other DP ranks."""
    from megatron.core import parallel_state

    micro_batches = list(micro_batches)
    sums = scorer.score(micro_batches)
    total = sum(b.num_pairs for b in micro_batches)
    packed = torch.zeros(2 * total, dtype=torch.float64, device=current_device())
    if parallel_state.is_pipeline_last_stage() and micro_batches:
        packed[:total] = torch.cat([chosen.double() for chosen, _ in sums])
        packed[total:] = torch.cat([rejected.double() for _, rejected in sums])
    packed = broadcast_from_last_stage(packed)
    return gather_to_first_dp_rank({
        "pair_index": _cat([b.pair_index.cpu() for b in micro_batches], torch.int64),
        "annotator_index": _cat([b.annotator_index.cpu() for b in micro_batches], torch.int64),
        "chosen_logp": packed[:total], "rejected_logp": packed[total:]})


class StepRunner:
    """Optimizer steps and evaluation passes of a PreferenceModel.

    Args:
        model: the PreferenceModel (policy, objective, robust mode).
        reference_mode: objectives.resolve_reference_mode(objective, model.reference): MODEL needs
            `reference` (chunks from policy.build_reference, frozen, forward-only each step);
            PRECOMPUTED: every batch must carry reference_chosen / reference_rejected; NONE:
            SimPO / CPO.
        reliability: ReliabilityState, required when robust.trains_reliability; in other modes
            optional (with it, w = posterior at the fixed eta is reported; eta is not updated).
    """

    def __init__(self, model: PreferenceModel, reference_mode: ReferenceMode, reliability=None,
                 reference=None):
        self.model = model
        self.reference_mode = ReferenceMode(reference_mode)
        self.reliability = reliability
        if model.robust.trains_reliability and reliability is None:
            raise ValueError("robust.mode='re' needs a ReliabilityState (reliability=...)")
        if (reference is not None) != (self.reference_mode is ReferenceMode.MODEL):
            raise ValueError(f"reference mode {self.reference_mode.value!r}: reference chunks must be "
                             f"given exactly when the mode is 'model'")
        self.reference = None if reference is None else CompletionScorer(reference, model.model_config)

    # ---------------------------------------------------------------- public API
    def train_step(self, micro_batches, optimizer, scheduler=None) -> StepResult:
        """One optimizer step over this DP rank's micro-batches (every TP/PP rank of a DP rank
        passes the same list; CPU tensors are fine, forward_step moves them to the device).
        Metrics: loss, reward_accuracy, chosen_reward, rejected_reward, margin, pairs, tokens,
        grad_norm, lr; with a reliability state also w_mean, w_frac_below_half; for RE eta_mean /
        eta_min / eta_max over the annotators with training labels (after the update)."""
        from megatron.core import parallel_state

        micro_batches = list(micro_batches)
        state = self._pass_state(micro_batches, training=True)
        state.loss_scale = (len(micro_batches) * parallel_state.get_data_parallel_world_size()
                            / self._global_pairs(micro_batches, state))
        for chunk in self.model.policy:
            chunk.zero_grad_buffer()
        optimizer.zero_grad()
        self.model.run(micro_batches, state, forward_only=False)
        lr = optimizer.param_groups[0]["lr"]
        update_ok, grad_norm, _ = optimizer.step()
        if scheduler is not None:
            scheduler.step(increment=1)
        per_pair = self._pipeline_broadcast(micro_batches, state)
        if self.model.robust.trains_reliability:
            for batch, w, delta in zip(micro_batches, per_pair["w"], per_pair["delta"]):
                self.reliability.accumulate(batch.annotator_index.cpu(), w.double(), batch.pair_index.cpu(),
                                            delta)
            self.reliability.step(parallel_state.get_data_parallel_group())
        metrics = self._reduce_metrics(per_pair["sums"])
        metrics["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
        metrics["update_successful"] = bool(update_ok)
        metrics["lr"] = lr
        return StepResult(metrics, self._local_pairs(micro_batches, per_pair, keys=("delta", "w")))

    @torch.no_grad()
    def evaluate(self, micro_batches) -> tuple[dict, dict | None]:
        """Forward-only pass with the current eta (no update; the policy in eval mode, restored
        after). Returns (metrics reduced over DP, per-pair outputs). The per-pair dict
        {pair_index, annotator_index, delta, w, chosen_logp, rejected_logp} (1-D CPU tensors in
        DP-rank order; w is NaN without reliability; *_logp are the policy's completion log-prob
        sums) is gathered to DP rank 0 (every TP/PP rank of it); None on other DP ranks."""
        micro_batches = list(micro_batches)
        state = None
        if micro_batches:   # a DP rank gets none when the split has fewer pairs than DP ranks
            state = self._pass_state(micro_batches)
            self.model.run(micro_batches, state, forward_only=True)
        per_pair = self._pipeline_broadcast(micro_batches, state)
        metrics = self._reduce_metrics(per_pair["sums"])
        return metrics, gather_to_first_dp_rank(self._local_pairs(micro_batches, per_pair, _PAIR_KEYS))

    # ---------------------------------------------------------------- internals
    def _pass_state(self, micro_batches, training: bool = False) -> PassState:
        """eta snapshot, reference sums (the reference pass in mode MODEL) and trained-pair mask."""
        device = current_device()
        eta = [None] * len(micro_batches)
        trained = [None] * len(micro_batches)   # None: every pair trains
        if self.reliability is not None:
            eta = [self.reliability.eta_for(b.annotator_index.cpu()).to(device) for b in micro_batches]
        if training and self.model.robust.trains_reliability \
                and self.reliability.config.estimate_from == "holdout":
            trained = [(~self.reliability.held_out(b.pair_index)).to(device) for b in micro_batches]
        if self.reference_mode is ReferenceMode.MODEL:
            reference = self.reference.score(micro_batches)
        elif self.reference_mode is ReferenceMode.PRECOMPUTED:
            reference = [self._precomputed(i, b, device) for i, b in enumerate(micro_batches)]
        else:
            reference = [None] * len(micro_batches)
        scale = self.reliability.scale if self.reliability is not None else 1.0
        return PassState(eta=eta, reference=reference, trained=trained, scale=scale)

    def _precomputed(self, index: int, batch, device) -> tuple:
        if batch.reference_chosen is None or batch.reference_rejected is None:
            raise ValueError(
                f"objective {self.model.objective.name!r} needs reference log-probs: micro-batch {index} "
                "has no reference_chosen/reference_rejected and no reference model was given")
        return batch.reference_chosen.to(device), batch.reference_rejected.to(device)

    def _global_pairs(self, micro_batches, state: PassState) -> int:
        """Pairs of the global batch the loss averages over (held-out scoring pairs excluded)."""
        from megatron.core import parallel_state

        trained = sum(b.num_pairs if mask is None else int(mask.sum())
                      for b, mask in zip(micro_batches, state.trained))
        count = torch.tensor([trained], dtype=torch.float64, device=current_device())
        all_reduce(count, group=parallel_state.get_data_parallel_group())
        return max(int(count.item()), 1)

    @staticmethod
    def _local_pairs(micro_batches, per_pair: dict, keys) -> dict:
        return {"pair_index": _cat([b.pair_index.cpu() for b in micro_batches], torch.int64),
                "annotator_index": _cat([b.annotator_index.cpu() for b in micro_batches], torch.int64),
                **{key: _cat(per_pair[key], torch.float32 if key == "w" else torch.float64)
                   for key in keys}}

    def _pipeline_broadcast(self, micro_batches, state: PassState | None) -> dict:
        """Per-pair values (_PAIR_KEYS) and the metric sums (_SUM_KEYS), from the last pipeline
        stage to every stage. Returns {key: [per micro-batch tensor]} and "sums"."""
        from megatron.core import parallel_state

        sizes = [b.num_pairs for b in micro_batches]
        total = sum(sizes)
        packed = torch.zeros(len(_PAIR_KEYS) * total + len(_SUM_KEYS), dtype=torch.float64,
                             device=current_device())
        if parallel_state.is_pipeline_last_stage() and micro_batches:
            records = state.records
            has_w = records[0].w is not None

            def cat(name):
                return torch.cat([getattr(r, name).double() for r in records])

            per_pair = {"delta": cat("delta"), "chosen_logp": cat("chosen_logp"),
                        "rejected_logp": cat("rejected_logp")}
            per_pair["w"] = cat("w") if has_w else torch.full((total,), float("nan"), dtype=torch.float64)
            w = per_pair["w"]
            sums = [cat("loss").sum(), cat("reward_accuracy").sum(), cat("chosen_reward").sum(),
                    cat("rejected_reward").sum(), cat("margin").sum(),
                    w.sum() if has_w else 0.0, (w < 0.5).sum() if has_w else 0.0, total,
                    sum(float(r.tokens) for r in records)]
            for i, key in enumerate(_PAIR_KEYS):
                packed[i * total:(i + 1) * total] = per_pair[key]
            packed[len(_PAIR_KEYS) * total:] = torch.tensor([float(v) for v in sums], dtype=torch.float64)
        packed = broadcast_from_last_stage(packed)
        out = {key: list(torch.split(packed[i * total:(i + 1) * total], sizes))
               for i, key in enumerate(_PAIR_KEYS)}
        out["w"] = [w.float() for w in out["w"]]
        out["sums"] = packed[len(_PAIR_KEYS) * total:]
        return out

    def _reduce_metrics(self, sums: torch.Tensor) -> dict:
        from megatron.core import parallel_state

        sums = sums.to(current_device())
        all_reduce(sums, group=parallel_state.get_data_parallel_group())
        values = dict(zip(_SUM_KEYS, sums.cpu().tolist()))
        pairs = values["pairs"]
        metrics = {key: values[key] / pairs for key in
                   ("loss", "reward_accuracy", "chosen_reward", "rejected_reward", "margin")}
        metrics.update(pairs=int(pairs), tokens=int(values["tokens"]))
        if self.reliability is not None:
            metrics.update(w_mean=values["w"] / pairs, w_frac_below_half=values["w_below_half"] / pairs)
        if self.model.robust.trains_reliability:
            eta = self.reliability.labelled_eta()
            if eta.numel():
                metrics.update(eta_mean=float(eta.mean()), eta_min=float(eta.min()),
                               eta_max=float(eta.max()))
            metrics["e_step_scale"] = self.reliability.scale
        return metrics
