"""PNG figures of a finished run, drawn from the files it wrote (so they can be redrawn any time).

plots/training.png   train and validation loss; reward accuracy (and accuracy against the true
                     labels, where the data has them) per step
plots/eta.png        per-annotator reliability eta over the steps (the "eta" records; flat at eta0
                     unless robust.mode=re)
plots/w_hist.png     histogram of the final per-pair posterior w, the label audit
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402

from nemo_repo.training.metrics import METRICS_FILE  # noqa: E402
from nemo_repo.training.outputs import PAIR_WEIGHTS_FILE, read_records  # noqa: E402

PLOTS_DIR = "plots"


def _series(records: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if r["split"] == split and r.get(key) is not None]
    return [s for s, _ in points], [v for _, v in points]


def _training_figure(records: list[dict], out: Path) -> None:
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for split, style in (("train", "-"), ("eval", "o-")):
        loss_ax.plot(*_series(records, split, "loss"), style, label=split, markersize=3)
        acc_ax.plot(*_series(records, split, "reward_accuracy"), style, markersize=3,
                    label=f"{split} reward accuracy")
    steps, values = _series(records, "eval", "true_label_accuracy")
    if steps:
        acc_ax.plot(steps, values, "s--", markersize=3, label="eval accuracy vs true labels")
    loss_ax.set(title="loss", xlabel="step")
    acc_ax.set(title="accuracy", xlabel="step", ylim=(-0.02, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _eta_figure(records: list[dict], out: Path) -> bool:
    eta = [r for r in records if r["split"] == "eta"]
    names = sorted({k for r in eta for k in r if k.startswith("eta/")})
    if not names:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names[:20]:   # a legend of hundreds of annotators is unreadable
        # markers: a short run has one or two eta records, and a lone point draws no line
        ax.plot(*_series(eta, "eta", name), "o-", markersize=3, label=name[len("eta/"):])
    title = "annotator reliability eta" + (f" (first 20 of {len(names)})" if len(names) > 20 else "")
    ax.set(title=title, xlabel="step", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def _w_figure(pairs: list[dict], out: Path) -> bool:
    w = [p["w"] for p in pairs if p.get("w") is not None]
    if not w:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(w, bins=50, range=(0, 1))
    below = sum(v < 0.5 for v in w)
    ax.set(title=f"posterior w per training pair ({below} of {len(w)} below 0.5)",
           xlabel="w = P(label is correct)", ylabel="pairs")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def write_plots(run_dir: str | Path) -> list[Path]:
    """Draw the figures that the run's files support into run_dir/plots; returns their paths."""
    run_dir = Path(run_dir)
    records = read_records(run_dir / METRICS_FILE)
    out = run_dir / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if records:
        _training_figure(records, out / "training.png")
        written.append(out / "training.png")
        if _eta_figure(records, out / "eta.png"):
            written.append(out / "eta.png")
    if _w_figure(read_records(run_dir / PAIR_WEIGHTS_FILE), out / "w_hist.png"):
        written.append(out / "w_hist.png")
    return written
