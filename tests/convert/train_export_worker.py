"""One training step on an imported checkpoint, saved as a training checkpoint, then exported.

On TP * PP ranks: import the HF folder with recipes.convert (at the training layout), build the policy (mcore DDP) + mcore Adam exactly as training does, load the
converted checkpoint (load_model_weights), take one optimizer step through megatron's pipeline
schedule (a language-model loss: this test is about the checkpoint format, not the objective),
save with training/checkpoint.save_checkpoint (model + optimizer + the loop's common "config"
entry naming model.init_from), then run recipes.convert export at EXPORT_TP x EXPORT_PP in the
same world with --verify (tolerance 1e-5).

Usage: train_export_worker.py TRAIN_TP TRAIN_PP EXPORT_TP EXPORT_PP HF IMPORTED ROOT OUT
"""

import sys

import torch

from nemo_repo.convert.bridge import model_config_from_hf
from nemo_repo.model.parallel import ParallelConfig, initialize_parallel
from nemo_repo.model.policy import build_policy
from nemo_repo.model.weights import load_model_weights
from nemo_repo.training.checkpoint import save_checkpoint
from nemo_repo.training.optim import OptimConfig, build_optimizer
from recipes.convert import _parser, run_export, run_import


def one_step(chunks, optimizer, vocab_size: int) -> None:
    from megatron.core.pipeline_parallel import get_forward_backward_func

    tokens = torch.randint(0, vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    seq = tokens.shape[1] - 1
    batch = {"tokens": tokens[:, :-1], "labels": tokens[:, 1:],
             "position_ids": torch.arange(seq).expand(2, seq),
             "attention_mask": torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1)[None, None]}

    def forward_step(data_iterator, model):
        data = next(data_iterator)
        losses = model(data["tokens"], data["position_ids"], data["attention_mask"],
                       labels=data["labels"])
        return losses, lambda per_token: (per_token.float().mean(), {})

    optimizer.zero_grad()
    get_forward_backward_func()(forward_step_func=forward_step, data_iterator=iter([batch]),
                                model=chunks, num_microbatches=1, seq_length=seq,
                                micro_batch_size=2, forward_only=False)
    ok, _, _ = optimizer.step()
    assert ok, "optimizer step failed"


def _run(command, args) -> None:
    code = command(_parser().parse_args([str(a) for a in args]))
    if code != 0:
        raise SystemExit(f"{args[0]}: exit code {code}")


def main(train_tp, train_pp, export_tp, export_pp, hf, imported, root, out) -> None:
    _run(run_import, ["import", "--hf", hf, "--out", imported, "--tp", train_tp, "--pp", train_pp])
    model = model_config_from_hf(imported)
    parallel = ParallelConfig(int(train_tp), int(train_pp))
    initialize_parallel(parallel, model)
    chunks = build_policy(model, parallel)
    optimizer = build_optimizer(OptimConfig(lr=1e-2), chunks)
    load_model_weights(imported, chunks)
    one_step(chunks, optimizer, model.vocab_size)
    common = {"config": {"model": {"preset": None, "init_from": str(imported)}}}
    save_checkpoint(root, 1, chunks, optimizer, common=common)
    _run(run_export, ["export", "--checkpoint", root, "--out", out, "--tp", export_tp,
                      "--pp", export_pp, "--verify", "--tolerance", "1e-5"])


if __name__ == "__main__":
    main(*sys.argv[1:])
