"""The training loop: one process per rank, started by recipes/train.py (torchrun or srun).

Per optimizer step: this DP rank's micro-batches of the global batch -> PreferenceAligner.train_step
(megatron schedule, loss, optimizer + LR step, eta update) -> metrics on rank 0 -> every
`train.eval_interval` steps a validation pass -> every `checkpoint.interval` steps a checkpoint ->
a collective check for SIGTERM / SIGUSR1 (then: checkpoint, exit 75). At the end: final
checkpoint, final validation (eval.json), a forward pass over the training pairs with the final
eta (pair_weights.jsonl, reliability.json), and PNG figures (plots/).
"""

import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from nemo_repo.data.pipeline import PreferenceData
from nemo_repo.model.parallel import destroy_parallel, initialize_parallel
from nemo_repo.model.weights import load_model_weights
from nemo_repo.ranks import on_rank_zero
from nemo_repo.reliability import ReliabilityState
from nemo_repo.training.build import build_training
from nemo_repo.training import outputs, plots
from nemo_repo.training.checkpoint import load_newest_loadable, save_checkpoint
from nemo_repo.training.config import ConfigError, Settings
from nemo_repo.training.metrics import MetricsLogger
from nemo_repo.training.signals import EXIT_REQUEUE, StopRequest


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _is_logging_rank() -> bool:
    return dist.get_rank() == 0


def true_label_accuracy(per_pair: dict, label_correct) -> float | None:
    """Fraction of pairs whose learned preference (Delta > 0: the labelled chosen response wins)
    agrees with the TRUE preference; `label_correct[pair_index]` is True when the dataset label
    is right, None when the data has no ground truth."""
    if label_correct is None:
        return None
    index = per_pair["pair_index"].tolist()
    prefers_label = (per_pair["delta"] > 0).tolist()
    hits = [prefers == bool(label_correct[i]) for i, prefers in zip(index, prefers_label)]
    return sum(hits) / max(len(hits), 1)


class Trainer:
    """Builds everything from validated Settings; `run()` returns the process exit code."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.run_dir = Path(settings.run.dir)
        seed_everything(settings.run.seed)
        self.layout = initialize_parallel(settings.parallel, settings.model, seed=settings.run.seed,
                                          device=settings.run.device)
        from megatron.core import parallel_state

        self.data = PreferenceData(settings.data, settings.parallel.micro_batch_size,
                                   settings.parallel.global_batch_size,
                                   parallel_state.get_data_parallel_rank(), self.layout["dp"],
                                   reference=settings.reference == "precomputed")
        if self.data.vocab_size > settings.model.vocab_size:
            raise ConfigError(f"the tokenizer ({settings.data.tokenizer}) has {self.data.vocab_size} "
                              f"tokens but model {settings.model.name} only {settings.model.vocab_size}: "
                              f"choose a model.preset (or an imported model) with a vocabulary at "
                              f"least as large")
        # every robust mode keeps the same state: eta per annotator of the data (fixed at eta0
        # unless robust.mode=re), so outputs, logs and checkpoints have one form
        self.reliability = ReliabilityState(settings.reliability, self.data.annotators)
        stack = build_training(settings.model, settings.parallel, settings.objective, settings.robust,
                               settings.optim, reliability=self.reliability, seed=settings.run.seed,
                               reference=settings.reference)
        self.aligner = stack.aligner
        self.policy, self.optimizer, self.scheduler = stack.model_chunks, stack.optimizer, stack.scheduler
        if settings.init_from:   # pretrained weights for the policy and the frozen reference
            for chunks in (stack.model_chunks, stack.reference_chunks):
                if chunks is not None:
                    load_model_weights(settings.init_from, chunks)
        if stack.aligner.reference_mode == "precomputed":
            for split, tokenized in self.data.splits.items():
                if not self.data.has_reference(split):
                    raise ConfigError(
                        f"model.reference=precomputed, but the {split} rows ({tokenized.file}) have no "
                        f"reference_chosen / reference_rejected columns: write them with "
                        f"`python -m recipes.precompute_reference ... +out=DIR` and train on DIR's files")
        self.step = 0

    # ------------------------------------------------------------------ checkpoints
    def _common_state(self) -> dict:
        return {"scheduler": self.scheduler.state_dict(), "sampler": self.data.sampler.state_dict(),
                "config": self.settings.resolved}

    def save(self) -> None:
        ckpt = self.settings.checkpoint
        save_checkpoint(ckpt.dir, self.step, self.policy, self.optimizer, self.reliability,
                        common=self._common_state(), keep_last=ckpt.keep_last)

    def maybe_resume(self) -> None:
        ckpt = self.settings.checkpoint
        found = load_newest_loadable(ckpt.dir, self.policy, self.optimizer, self.reliability) \
            if ckpt.resume else None
        if found is None:
            return
        latest, common = found
        self.scheduler.load_state_dict(common["scheduler"])
        self.data.sampler.load_state_dict(common["sampler"])
        if common["config"]["optim"] != self.settings.resolved["optim"] \
                or common["config"]["train"]["max_steps"] != self.settings.train.max_steps:
            print(f"warning: {latest} was saved with other optim / train.max_steps settings; the "
                  f"LR schedule continues from the checkpoint's", flush=True)
        self.step = int(common["step"])
        if _is_logging_rank():
            print(f"resumed from {latest} (step {self.step})", flush=True)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, split: str = "validation") -> dict:
        batches = self.data.eval_batches(split, self.settings.train.eval_max_pairs)
        metrics, per_pair = self.aligner.evaluate(batches)
        if per_pair is not None:
            accuracy = true_label_accuracy(per_pair, self.data.label_correct(split))
            if accuracy is not None:
                metrics["true_label_accuracy"] = accuracy
        return metrics

    def _write_run_files(self) -> None:
        """Rank 0, at the start of run(): the resolved config and the data report."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.settings.resolved, sort_keys=False))
        self.data.report.log_to(self.run_dir)   # printed, and run_dir/data_report.json

    def log_eta(self, logger: MetricsLogger) -> None:
        names = self.data.annotators.ids()
        eta = self.reliability.eta.tolist()
        logger.log(self.step, "eta", {f"eta/{name}": eta[k] for k, name in enumerate(names)})

    def write_outputs(self, eval_metrics: dict, logger: MetricsLogger) -> None:
        """Final pass over the training pairs (and reliability.final_refit on it: after the final
        checkpoint, which keeps the training eta), the last eta record, then the output files."""
        metrics, per_pair = self.aligner.evaluate(self.data.eval_batches("train", None))
        if per_pair is not None and self.settings.robust.mode == "re" and self.reliability.config.final_refit:
            self._refit_final(per_pair)
        self.log_eta(logger)
        if _is_logging_rank():
            outputs.write_run_outputs(
                self.run_dir, outputs.merge_pairs(per_pair), self.data.pair_ids("train"),
                self.data.annotators.ids(), self.reliability.eta, {"step": self.step, **eval_metrics})
            plots.write_plots(self.run_dir)

    def _refit_final(self, per_pair: dict) -> None:
        """reliability.final_refit: converged EM on the final pass; w re-scored with its eta."""
        from nemo_repo.objectives import posterior_weight

        self.reliability.refit(per_pair["annotator_index"], per_pair["delta"], per_pair["pair_index"])
        eta = self.reliability.eta_for(per_pair["annotator_index"]).to(torch.float64)
        per_pair["w"] = posterior_weight(per_pair["delta"].to(torch.float64), eta, self.reliability.scale)

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        settings = self.settings
        train, log_cfg, ckpt = settings.train, settings.logging, settings.checkpoint
        self.maybe_resume()
        rank0 = _is_logging_rank()
        on_rank_zero(self._write_run_files)   # if rank 0 cannot, every rank raises at once
        logger = MetricsLogger(self.run_dir, rank0, train.max_steps, start_step=self.step,
                               tensorboard=log_cfg.tensorboard, progress=log_cfg.progress,
                               log_interval=log_cfg.log_interval)
        stop = StopRequest()
        try:
            while self.step < train.max_steps:
                started = time.perf_counter()
                batches = self.data.sampler.next_step()
                metrics = self.aligner.train_step(batches, self.optimizer, self.scheduler)
                seconds = time.perf_counter() - started
                if self.data.sampler.last_plan.last_in_epoch:
                    self.reliability.end_epoch()   # exact M-step (Eq. 6) when reliability.update=epoch
                self.step += 1
                logger.train_step(self.step, metrics, tokens=metrics["tokens"], seconds=seconds)
                if train.eval_interval and self.step % train.eval_interval == 0 \
                        and self.step < train.max_steps:
                    logger.log(self.step, "eval", self.evaluate())
                if log_cfg.eta_log_interval and self.step % log_cfg.eta_log_interval == 0 \
                        and self.step < train.max_steps:
                    self.log_eta(logger)
                saved = ckpt.interval and self.step % ckpt.interval == 0 and self.step < train.max_steps
                if saved:
                    self.save()
                settings.fault.maybe_fire(self.step)
                if stop.agreed():
                    if not saved:
                        self.save()
                    logger.write(f"{stop.received or 'stop signal'}: checkpoint at step {self.step} "
                                 f"saved, exiting with {EXIT_REQUEUE} (requeue)")
                    return EXIT_REQUEUE
                if self.step == train.stop_at_step and self.step < train.max_steps:
                    if not saved:
                        self.save()
                    logger.write(f"train.stop_at_step={self.step}: checkpoint saved, stopping")
                    return 0
            eval_metrics = self.evaluate()
            logger.log(self.step, "eval", eval_metrics)
            if ckpt.save_final:
                self.save()
            self.write_outputs(eval_metrics, logger)
            return 0
        finally:
            stop.restore()
            logger.close()


def run_training(settings: Settings) -> int:
    """Train from validated settings; returns 0, or EXIT_REQUEUE (75) after a stop signal."""
    trainer = Trainer(settings)
    try:
        return trainer.run()
    finally:
        destroy_parallel()
