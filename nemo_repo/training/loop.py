"""The training loop: one process per rank, started by recipes/train.py (torchrun or srun).

Per optimizer step: this DP rank's micro-batches of the global batch -> StepRunner.train_step
(megatron schedule, loss, optimizer + LR step, eta update) -> the pairs' last-visit Delta
(train.final_pass=last_visit) -> metrics on rank 0 -> every `train.eval_interval` steps a
validation pass -> every `checkpoint.interval` steps a checkpoint -> a collective check for
SIGTERM / SIGUSR1 (then: checkpoint, exit 75). At the end: final validation (eval.json), final
checkpoint, the training pairs' w with the final eta (pair_weights.jsonl, reliability.json: from
the last-visit Deltas, or a forward pass over them with train.final_pass=full), and PNG figures
(plots/).
"""

import math
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
from nemo_repo.objectives import ReferenceMode, posterior_weight
from nemo_repo.ranks import on_rank_zero
from nemo_repo.reliability import ReliabilityState
from nemo_repo.training.build import build_training
from nemo_repo.training import outputs, plots
from nemo_repo.training.checkpoint import load_newest_loadable, save_checkpoint
from nemo_repo.training.config import ConfigError, Settings
from nemo_repo.training.last_visit import LastVisits
from nemo_repo.training.outputs import FinalPass
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
                                   reference=settings.reference is ReferenceMode.PRECOMPUTED)
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
        self.runner = stack.runner
        self.policy, self.optimizer, self.scheduler = stack.model_chunks, stack.optimizer, stack.scheduler
        if settings.init_from:   # pretrained weights for the policy and the frozen reference
            for chunks in (stack.model_chunks, stack.reference_chunks):
                if chunks is not None:
                    load_model_weights(settings.init_from, chunks)
        if settings.reference is ReferenceMode.PRECOMPUTED:
            for split, tokenized in self.data.splits.items():
                if not self.data.has_reference(split):
                    raise ConfigError(
                        f"model.reference=precomputed, but the {split} rows ({tokenized.file}) have no "
                        f"reference_chosen / reference_rejected columns: write them with "
                        f"`python -m recipes.precompute_reference ... +out=DIR` and train on DIR's files")
        self.last_visits = LastVisits(self.data.num_pairs("train")) \
            if settings.train.final_pass is FinalPass.LAST_VISIT else None
        self.step = 0

    # ------------------------------------------------------------------ checkpoints
    def _common_state(self) -> dict:
        common = {"scheduler": self.scheduler.state_dict(), "sampler": self.data.sampler.state_dict(),
                  "config": self.settings.resolved}
        if self.last_visits is not None:
            common["last_visits"] = self.last_visits.state_dict()
        return common

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
        if self.last_visits is not None and "last_visits" in common:
            self.last_visits.load_state_dict(common["last_visits"])
        elif self.last_visits is not None and _is_logging_rank():
            print(f"warning: {latest} holds no last-visit Deltas (saved with another "
                  f"train.final_pass): pairs visited before it get w null unless visited again",
                  flush=True)
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
        metrics, per_pair = self.runner.evaluate(batches)
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
        """The training pairs' Delta by train.final_pass, reliability.final_refit on them (after
        the final checkpoint, which keeps the training eta), their w with the final eta, the last
        eta record, then the output files."""
        final_pass = self.settings.train.final_pass
        pairs = self._final_pairs()
        refit = self.settings.robust.trains_reliability and self.reliability.config.final_refit
        if pairs is not None and refit:
            scored = ~pairs["delta"].isnan()
            self.reliability.refit(pairs["annotator_index"][scored], pairs["delta"][scored],
                                   pairs["pair_index"][scored])
        if pairs is not None and (refit or final_pass is FinalPass.LAST_VISIT):
            eta = self.reliability.eta_for(pairs["annotator_index"]).to(torch.float64)
            pairs["w"] = posterior_weight(pairs["delta"], eta, self.reliability.scale)   # NaN: no Delta
        self.log_eta(logger)
        if _is_logging_rank():
            merged = outputs.merge_pairs(pairs)
            merged["w"] = [None if math.isnan(w) else w for w in merged["w"]]
            unvisited = sum(w is None for w in merged["w"])
            if unvisited and final_pass is FinalPass.LAST_VISIT:
                logger.write(f"{unvisited} of {len(merged['w'])} training pairs were never visited "
                             f"(train.max_steps is shorter than an epoch): w null in "
                             f"{outputs.PAIR_WEIGHTS_FILE}, not in reliability.json's mean_w")
            outputs.write_run_outputs(
                self.run_dir, merged, self.data.pair_ids("train"), self.data.annotators.ids(),
                self.reliability.eta, {"step": self.step, **eval_metrics},
                pair_weights=final_pass is not FinalPass.NONE)
            plots.write_plots(self.run_dir)

    def _final_pairs(self) -> dict | None:
        """{pair_index, annotator_index, delta, w} (1-D tensors; NaN: none) of the training pairs
        by train.final_pass: the full pass's (on DP rank 0, None elsewhere), the last visits'
        (w still to compute), or none at all (final_pass none)."""
        final_pass = self.settings.train.final_pass
        if final_pass is FinalPass.FULL:
            return self.runner.evaluate(self.data.eval_batches("train", None))[1]
        count = self.data.num_pairs("train")
        delta = torch.full((count,), float("nan"), dtype=torch.float64)
        if final_pass is FinalPass.LAST_VISIT:
            delta = torch.where(self.last_visits.visited, self.last_visits.delta, delta)
        return {"pair_index": torch.arange(count),
                "annotator_index": torch.tensor(self.data.annotator_indices("train"), dtype=torch.long),
                "delta": delta, "w": torch.full((count,), float("nan"), dtype=torch.float64)}

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        from megatron.core import parallel_state

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
                result = self.runner.train_step(batches, self.optimizer, self.scheduler)
                if self.last_visits is not None:
                    self.last_visits.record(result.pairs, parallel_state.get_data_parallel_group())
                metrics = result.metrics
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
