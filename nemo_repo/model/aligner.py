"""PreferenceAligner: the preference-optimisation model class on megatron-core.

One optimizer step (`train_step`) over this data-parallel rank's micro-batches of the step:
  1. eta snapshot: eta_for(annotator_index) of every micro-batch, taken before any forward and
     held fixed for the whole step (in every robust mode when a ReliabilityState is given: the
     posterior w is then reported by every mode and trains in RE mode only).
  2. reference (DPO/IPO with a frozen reference model): one forward-only pipelined pass of the
     reference over the micro-batches; its per-pair log-prob sums stay on the last stage.
     With precomputed reference sums (in the batch) or for SimPO/CPO there is no such pass.
  3. policy: megatron's get_forward_backward_func (1F1B when PP > 1): `forward_step` runs the
     GPTModel on chosen+rejected rows together; on the last stage `loss_func` computes per-pair
     log-prob sums, preference_loss(...) and returns the scaled loss (below).
  4. w of all micro-batches is broadcast from the last pipeline stage over the pipeline group,
     so every rank (all TP and PP ranks) holds it; each rank accumulates it and calls
     ReliabilityState.step(dp_group) after the optimizer step. With
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
from typing import Any

import torch
import torch.distributed as dist

from nemo_repo.device import all_reduce, broadcast, current_device
from nemo_repo.model.logprobs import pair_logprobs

# Per-pair sums reduced for the step metrics (order of the packed tensor).
_SUM_KEYS = ("loss", "reward_accuracy", "chosen_reward", "rejected_reward", "margin", "w",
             "w_below_half", "pairs", "tokens")
# Per-pair values sent from the last pipeline stage to every rank.
_PAIR_KEYS = ("delta", "w", "chosen_logp", "rejected_logp")   # w is NaN without reliability


def _cat(parts: list, dtype: torch.dtype) -> torch.Tensor:
    """torch.cat, or an empty tensor of `dtype` for a rank without pairs."""
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


@dataclass
class _MicroBatchRecord:
    """What the last stage keeps from loss_func for one micro-batch (all detached)."""
    loss: torch.Tensor
    delta: torch.Tensor
    w: torch.Tensor | None
    chosen_reward: torch.Tensor
    rejected_reward: torch.Tensor
    margin: torch.Tensor
    reward_accuracy: torch.Tensor
    tokens: torch.Tensor
    chosen_logp: torch.Tensor
    rejected_logp: torch.Tensor


class PreferenceAligner:
    """Preference optimisation (DPO / IPO / SimPO / CPO x robust modes, RE-PO) on megatron-core.

    Args:
        policy: model chunks from policy.build_policy (mcore DDP, one chunk per rank).
        model_config: presets.ModelConfig (true vocabulary size for log-probs).
        objective, robust: nemo_repo.objectives configs.
        reliability: ReliabilityState, required when robust.mode == "re"; in other modes optional
            (with it, w = posterior at the fixed eta is reported; eta is only updated in RE mode).
        reference: chunks from policy.build_reference, or None. Reference modes:
            "model"       objective needs a reference and `reference` is given: frozen copy,
                          evaluated forward-only each step (same init / same loaded weights);
            "precomputed" objective needs a reference and `reference` is None: every batch must
                          carry reference_chosen / reference_rejected;
            "none"        SimPO / CPO: no reference at all (a given `reference` is unused).
    """

    def __init__(self, policy, model_config, objective, robust, reliability=None, reference=None):
        self.policy = list(policy)
        self.model_config = model_config
        self.objective = objective
        self.robust = robust
        self.reliability = reliability
        if robust.mode == "re" and reliability is None:
            raise ValueError("robust.mode='re' needs a ReliabilityState (reliability=...)")
        if not objective.needs_reference:
            self.reference_mode, self.reference = "none", None
        elif reference is not None:
            self.reference_mode, self.reference = "model", list(reference)
        else:
            self.reference_mode, self.reference = "precomputed", None
        self._state: dict[str, Any] = {}

    # ---------------------------------------------------------------- megatron hooks
    def forward_step(self, data_iterator, model):
        """forward_step_func for get_forward_backward_func: the iterator yields (index, batch)."""
        index, batch = next(data_iterator)
        batch = batch.to(current_device(), non_blocking=True)
        output = model(batch.tokens, batch.position_ids, batch.attention_mask)
        return output, lambda output_tensor: self.loss_func(index, batch, output_tensor)

    def loss_func(self, index: int, batch, output_tensor):
        """Last stage only: per-pair loss of micro-batch `index`; returns (scaled loss, {})."""
        from nemo_repo.objectives import SequenceLogProbs, preference_loss

        logps = pair_logprobs(output_tensor, batch, self.model_config.vocab_size)
        if self._state["pass"] == "reference":
            self._state["reference"][index] = (logps["chosen"].detach(), logps["rejected"].detach())
            return output_tensor.new_zeros(()), {}
        ref_chosen, ref_rejected = self._reference_sums(index, batch)
        sequence_logps = SequenceLogProbs(
            policy_chosen=logps["chosen"], policy_rejected=logps["rejected"],
            chosen_tokens=logps["chosen_tokens"], rejected_tokens=logps["rejected_tokens"],
            reference_chosen=ref_chosen, reference_rejected=ref_rejected)
        eta = self._state["eta"][index]
        out = preference_loss(sequence_logps, self.objective, self.robust, eta, self._state["scale"])
        trained = self._state["trained"][index]
        loss = out.loss if trained is None else out.loss * trained.to(out.loss)
        self._state["records"][index] = _MicroBatchRecord(
            loss=out.loss.detach().clone(), delta=out.delta.detach().clone(),
            w=None if out.w is None else out.w.detach().clone(),
            chosen_reward=out.chosen_reward.detach().clone(),
            rejected_reward=out.rejected_reward.detach().clone(),
            margin=out.margin.detach().clone(), reward_accuracy=out.reward_accuracy.detach().clone(),
            tokens=(logps["chosen_tokens"] + logps["rejected_tokens"]).sum().detach(),
            chosen_logp=logps["chosen"].detach().clone(), rejected_logp=logps["rejected"].detach().clone())
        return loss.sum() * self._state["loss_scale"], {}

    # ---------------------------------------------------------------- public API
    def train_step(self, micro_batches, optimizer, scheduler=None) -> dict:
        """One optimizer step over this DP rank's micro-batches (every TP/PP rank of a DP rank
        passes the same list; CPU tensors are fine, forward_step moves them to the GPU). Returns metrics reduced over DP, identical on every rank:
        loss, reward_accuracy, chosen_reward, rejected_reward, margin, pairs, tokens, grad_norm,
        lr; with a reliability state also w_mean, w_frac_below_half; for RE eta_mean / eta_min /
        eta_max over the annotators with training labels (after the update)."""
        from megatron.core import parallel_state

        micro_batches = list(micro_batches)
        self._prepare(micro_batches, training=True)
        global_pairs = self._global_pairs(micro_batches)
        if self.reference_mode == "model":
            self._run(self.reference, micro_batches, "reference", forward_only=True)
        for chunk in self.policy:
            chunk.zero_grad_buffer()
        optimizer.zero_grad()
        self._state["loss_scale"] = (len(micro_batches) * parallel_state.get_data_parallel_world_size()
                                     / global_pairs)
        self._run(self.policy, micro_batches, "policy", forward_only=False)
        lr = optimizer.param_groups[0]["lr"]
        update_ok, grad_norm, _ = optimizer.step()
        if scheduler is not None:
            scheduler.step(increment=1)
        per_pair = self._pipeline_broadcast(micro_batches)
        if self.robust.mode == "re":
            for batch, w, delta in zip(micro_batches, per_pair["w"], per_pair["delta"]):
                self.reliability.accumulate(batch.annotator_index.cpu(), w.double(), batch.pair_index.cpu(),
                                            delta)
            self.reliability.step(parallel_state.get_data_parallel_group())
        metrics = self._reduce_metrics(per_pair["sums"])
        metrics["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
        metrics["update_successful"] = bool(update_ok)
        metrics["lr"] = lr
        return metrics

    @torch.no_grad()
    def evaluate(self, micro_batches) -> tuple[dict, dict | None]:
        """Forward-only pass with the current eta (no update). Returns (metrics reduced over DP,
        per-pair outputs). The per-pair dict {pair_index, annotator_index, delta, w, chosen_logp,
        rejected_logp} (1-D CPU tensors in DP-rank order; w is NaN without reliability; *_logp are the
        policy's completion log-prob sums) is gathered to DP rank 0 (every TP/PP rank of it);
        None on other DP ranks."""
        from megatron.core import parallel_state

        micro_batches = list(micro_batches)
        if micro_batches:   # a DP rank gets none when the split has fewer pairs than DP ranks
            self._prepare(micro_batches)
            if self.reference_mode == "model":
                self._run(self.reference, micro_batches, "reference", forward_only=True)
            for chunk in self.policy:
                chunk.eval()
            try:
                self._run(self.policy, micro_batches, "policy", forward_only=True)
            finally:
                for chunk in self.policy:
                    chunk.train()
        per_pair = self._pipeline_broadcast(micro_batches)
        metrics = self._reduce_metrics(per_pair["sums"])
        local = {"pair_index": _cat([b.pair_index.cpu() for b in micro_batches], torch.int64),
                 "annotator_index": _cat([b.annotator_index.cpu() for b in micro_batches], torch.int64),
                 **{key: _cat(per_pair[key], torch.float32 if key == "w" else torch.float64)
                    for key in _PAIR_KEYS}}
        group = parallel_state.get_data_parallel_group()
        gathered = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, local, group=group)
        if parallel_state.get_data_parallel_rank() != 0:
            return metrics, None
        return metrics, {key: torch.cat([part[key] for part in gathered]) for key in local}

    # ---------------------------------------------------------------- internals
    def _global_pairs(self, micro_batches) -> int:
        """Pairs of the global batch the loss averages over (held-out scoring pairs excluded)."""
        from megatron.core import parallel_state

        trained = sum(b.num_pairs if mask is None else int(mask.sum())
                      for b, mask in zip(micro_batches, self._state["trained"]))
        count = torch.tensor([trained], dtype=torch.float64, device=current_device())
        all_reduce(count, group=parallel_state.get_data_parallel_group())
        return max(int(count.item()), 1)

    def _prepare(self, micro_batches, training: bool = False) -> None:
        eta = [None] * len(micro_batches)
        trained = [None] * len(micro_batches)   # None: every pair trains
        if self.reliability is not None:
            eta = [self.reliability.eta_for(b.annotator_index.cpu()).to(current_device())
                   for b in micro_batches]
        if training and self.robust.mode == "re" and self.reliability.config.estimate_from == "holdout":
            trained = [(~self.reliability.held_out(b.pair_index)).to(current_device())
                       for b in micro_batches]
        scale = self.reliability.scale if self.reliability is not None else 1.0
        self._state = {"eta": eta, "trained": trained, "scale": scale,
                       "records": [None] * len(micro_batches), "reference": [None] * len(micro_batches),
                       "loss_scale": 1.0}
        if self.reference_mode == "precomputed":
            for i, batch in enumerate(micro_batches):
                if batch.reference_chosen is None or batch.reference_rejected is None:
                    raise ValueError(
                        f"objective {self.objective.name!r} needs reference log-probs: micro-batch {i} "
                        "has no reference_chosen/reference_rejected and no reference model was given")

    def _reference_sums(self, index, batch):
        if self.reference_mode == "model":
            return self._state["reference"][index]
        if self.reference_mode == "precomputed":
            return batch.reference_chosen, batch.reference_rejected
        return None, None

    def _run(self, chunks, micro_batches, pass_name: str, forward_only: bool) -> None:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        self._state["pass"] = pass_name
        context = torch.no_grad() if forward_only else torch.enable_grad()
        with context:
            get_forward_backward_func()(
                forward_step_func=self.forward_step,
                data_iterator=iter(list(enumerate(micro_batches))),
                model=chunks, num_microbatches=len(micro_batches),
                seq_length=max(b.tokens.shape[1] for b in micro_batches),
                micro_batch_size=micro_batches[0].tokens.shape[0], forward_only=forward_only)

    def _pipeline_broadcast(self, micro_batches) -> dict:
        """Per-pair values (_PAIR_KEYS) and the metric sums (_SUM_KEYS), from the last pipeline
        stage to every stage. Returns {key: [per micro-batch tensor]} and "sums"."""
        from megatron.core import parallel_state

        sizes = [b.num_pairs for b in micro_batches]
        total = sum(sizes)
        packed = torch.zeros(len(_PAIR_KEYS) * total + len(_SUM_KEYS), dtype=torch.float64,
                             device=current_device())
        if parallel_state.is_pipeline_last_stage() and micro_batches:
            records = self._state["records"]
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
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            broadcast(packed, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                      group=parallel_state.get_pipeline_model_parallel_group())
        packed = packed.cpu()
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
        if self.robust.mode == "re":
            eta = self.reliability.labelled_eta()
            if eta.numel():
                metrics.update(eta_mean=float(eta.mean()), eta_min=float(eta.min()),
                               eta_max=float(eta.max()))
            metrics["e_step_scale"] = self.reliability.scale
        return metrics
