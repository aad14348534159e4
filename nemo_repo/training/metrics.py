"""Rank-0 metrics sinks: metrics.jsonl (one JSON object per record), TensorBoard, tqdm progress bar.

Every record carries `step` and `split` ("train", "eval", "eta"); keys starting with "time/" hold
wall-clock figures (throughput, elapsed) and are the only fields that differ between a resumed
and an uninterrupted run.
"""

import json
import math
from pathlib import Path

from tqdm import tqdm

from nemo_repo.training.outputs import read_records, write_records

METRICS_FILE = "metrics.jsonl"


def _plain(value):
    """JSON-friendly scalar: tensors and numpy numbers become Python numbers."""
    if hasattr(value, "item"):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return float(value)


class MetricsLogger:
    """Writes metrics on the logging rank only; every method is a no-op elsewhere.

    On resume, records of steps after the checkpoint (logged before the interruption) are dropped
    so that metrics.jsonl matches the uninterrupted run.
    """

    def __init__(self, run_dir, enabled: bool, total_steps: int, start_step: int = 0,
                 tensorboard: bool = True, progress: bool = True, log_interval: int = 1):
        self.enabled = enabled
        self.total_steps = total_steps
        self.log_interval = max(int(log_interval), 1)
        self._writer = self._bar = self._file = None
        self._tokens_since, self._seconds_since, self._steps_since = 0, 0.0, 0
        if not enabled:
            return
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / METRICS_FILE
        self._truncate_after(path, start_step)
        self._file = open(path, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1)
        if progress:
            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                             dynamic_ncols=True)

    @staticmethod
    def _truncate_after(path: Path, step: int) -> None:
        if path.exists():
            write_records(path, [record for record in read_records(path) if record["step"] <= step])

    def log(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)) \
                        and not isinstance(value, bool):
                    self._writer.add_scalar(f"{split}/{key}", value, step)

    def train_step(self, step: int, metrics: dict, tokens: int, seconds: float) -> None:
        """Called after every optimizer step (`seconds`: its wall-clock time): advances the
        progress bar, whose rate and ETA cover everything (evaluation, checkpoints), and every
        `log_interval` steps (and at the last) writes the step's metrics with the throughput of
        the optimizer steps since the previous record: their tokens over their time."""
        if not self.enabled:
            return
        self._tokens_since += tokens
        self._seconds_since += seconds
        self._steps_since += 1
        if step % self.log_interval == 0 or step == self.total_steps:
            timing = {"time/step_s": self._seconds_since / self._steps_since,
                      "time/tokens_per_s": self._tokens_since / self._seconds_since
                      if self._seconds_since > 0 else math.nan}
            self._tokens_since, self._seconds_since, self._steps_since = 0, 0.0, 0
            self.log(step, "train", {**metrics, **timing})
            if self._bar is not None:
                postfix = {"loss": metrics.get("loss"), "acc": metrics.get("reward_accuracy"),
                           "w": metrics.get("w_mean"), "tok/s": timing["time/tokens_per_s"]}
                self._bar.set_postfix({k: f"{_plain(v):.4g}" for k, v in postfix.items()
                                       if v is not None}, refresh=False)
        if self._bar is not None:
            if step == self.total_steps:   # close() draws the final line: draw it once
                self._bar.n = step
            else:
                self._bar.update(1)

    def write(self, message: str) -> None:
        """Print a line without breaking the progress bar."""
        if self.enabled:
            (self._bar.write if self._bar is not None else print)(message)

    def close(self) -> None:
        for handle in (self._bar, self._writer, self._file):
            if handle is not None:
                handle.close()
