"""The preference model class on megatron-core: what one pipelined pass over micro-batches computes.

    scorer = CompletionScorer(chunks, model_config)       # any GPTModel chunks (e.g. the reference)
    sums = scorer.score(micro_batches)                    # per-pair completion log-prob sums
    model = PreferenceModel(policy, model_config, objective, robust)
    model.run(micro_batches, PassState(...), forward_only=False)   # loss + backward, records

Both drive megatron's get_forward_backward_func (1F1B when PP > 1) with their own
`forward_step`: the GPTModel runs chosen and rejected rows of a micro-batch together; on the last
pipeline stage `loss_func` turns the logits into per-pair log-prob sums (vocab-parallel, true
vocabulary) and, for the policy, into preference_loss(...). What a pass needs beyond the batch
(eta, reference sums, the trained-pair mask, the loss scale) comes in a PassState and what it
yields stays in it (`records`, last stage only). The step around the passes (reference pass,
optimizer, reliability, metrics) is nemo_repo.training.step.StepRunner.
"""

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from nemo_repo.device import current_device
from nemo_repo.model.logprobs import pair_logprobs


@dataclass
class MicroBatchRecord:
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


@dataclass
class PassState:
    """Inputs of one policy pass, per micro-batch, fixed for the pass, and its records.

    eta        the reliability of each pair's annotator ([B] on the device), or None (no w)
    reference  (reference_chosen, reference_rejected) sums, or None (reference-free objective)
    trained    bool [B] of the pairs in the loss, or None (all; holdout pairs are scored only)
    scale      the E-step's calibration of Delta (ReliabilityState.scale; 1 = the paper)
    loss_scale what loss_func multiplies the summed per-pair loss by (training: M * D / G)
    records    filled by loss_func on the last pipeline stage, one per micro-batch
    """
    eta: list
    reference: list
    trained: list
    scale: float = 1.0
    loss_scale: float = 1.0
    records: list = field(default_factory=list)

    def __post_init__(self):
        if not self.records:
            self.records = [None] * len(self.eta)


class CompletionScorer:
    """Forward-only passes of GPTModel `chunks` (this rank's pipeline stage) that yield per-pair
    completion log-prob sums; `model_config.vocab_size` is the true vocabulary."""

    def __init__(self, chunks, model_config):
        self.chunks = list(chunks)
        self.model_config = model_config

    def forward_step(self, data_iterator, model):
        """forward_step_func for get_forward_backward_func: the iterator yields
        (index, batch, loss_func(index, batch, output_tensor))."""
        index, batch, loss_func = next(data_iterator)
        batch = batch.to(current_device(), non_blocking=True)
        output = model(batch.tokens, batch.position_ids, batch.attention_mask)
        return output, lambda output_tensor: loss_func(index, batch, output_tensor)

    def score(self, micro_batches) -> list:
        """(chosen, rejected) completion log-prob sums per micro-batch, detached, on the last
        pipeline stage (None on the others). The chunks run in eval mode and are left in the mode
        they were in (a frozen reference stays in eval mode)."""
        sums = [None] * len(micro_batches)

        def keep(index, batch, output_tensor):
            logps = pair_logprobs(output_tensor, batch, self.model_config.vocab_size)
            sums[index] = (logps["chosen"].detach(), logps["rejected"].detach())
            return output_tensor.new_zeros(()), {}

        if micro_batches:
            with eval_mode(self.chunks):
                self._schedule(micro_batches, keep, forward_only=True)
        return sums

    def _schedule(self, micro_batches, loss_func, forward_only: bool) -> None:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        context = torch.no_grad() if forward_only else torch.enable_grad()
        with context:
            get_forward_backward_func()(
                forward_step_func=self.forward_step,
                data_iterator=iter([(i, batch, loss_func) for i, batch in enumerate(micro_batches)]),
                model=self.chunks, num_microbatches=len(micro_batches),
                seq_length=max(b.tokens.shape[1] for b in micro_batches),
                micro_batch_size=micro_batches[0].tokens.shape[0], forward_only=forward_only)


@contextmanager
def eval_mode(chunks):
    """`chunks` in eval mode inside, each back in its own previous mode after."""
    modes = [chunk.training for chunk in chunks]
    for chunk in chunks:
        chunk.eval()
    try:
        yield
    finally:
        for chunk, training in zip(chunks, modes):
            chunk.train(training)


class PreferenceModel(CompletionScorer):
    """The policy under preference optimisation (DPO / IPO / SimPO / CPO x robust modes, RE-PO).

    Args:
        policy: model chunks from policy.build_policy (mcore DDP, one chunk per rank).
        model_config: presets.ModelConfig (true vocabulary size for log-probs).
        objective, robust: nemo_repo.objectives configs.
    """

    def __init__(self, policy, model_config, objective, robust):
        super().__init__(policy, model_config)
        self.objective = objective
        self.robust = robust

    @property
    def policy(self) -> list:
        return self.chunks

    def loss_func(self, state: PassState, index: int, batch, output_tensor):
        """Last stage only: per-pair loss of micro-batch `index` (recorded in `state.records`);
        returns (sum of the trained pairs' loss * state.loss_scale, {})."""
        from nemo_repo.objectives import SequenceLogProbs, preference_loss

        logps = pair_logprobs(output_tensor, batch, self.model_config.vocab_size)
        ref_chosen, ref_rejected = state.reference[index] or (None, None)
        sequence_logps = SequenceLogProbs(
            policy_chosen=logps["chosen"], policy_rejected=logps["rejected"],
            chosen_tokens=logps["chosen_tokens"], rejected_tokens=logps["rejected_tokens"],
            reference_chosen=ref_chosen, reference_rejected=ref_rejected)
        out = preference_loss(sequence_logps, self.objective, self.robust, state.eta[index], state.scale)
        trained = state.trained[index]
        loss = out.loss if trained is None else out.loss * trained.to(out.loss)
        state.records[index] = MicroBatchRecord(
            loss=out.loss.detach().clone(), delta=out.delta.detach().clone(),
            w=None if out.w is None else out.w.detach().clone(),
            chosen_reward=out.chosen_reward.detach().clone(),
            rejected_reward=out.rejected_reward.detach().clone(),
            margin=out.margin.detach().clone(), reward_accuracy=out.reward_accuracy.detach().clone(),
            tokens=(logps["chosen_tokens"] + logps["rejected_tokens"]).sum().detach(),
            chosen_logp=logps["chosen"].detach().clone(), rejected_logp=logps["rejected"].detach().clone())
        return loss.sum() * state.loss_scale, {}

    def run(self, micro_batches, state: PassState, forward_only: bool) -> None:
        """One pass of the policy over `micro_batches` (forward and backward unless
        `forward_only`: then in eval mode, restored after)."""
        def loss_func(index, batch, output_tensor):
            return self.loss_func(state, index, batch, output_tensor)

        if forward_only:
            with eval_mode(self.chunks):
                self._schedule(micro_batches, loss_func, forward_only=True)
        else:
            self._schedule(micro_batches, loss_func, forward_only=False)
