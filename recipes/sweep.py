"""Experiment runner: methods x noise levels x seeds on the held-out-prompt benchmark.

    python -m recipes.sweep [--grid conf/sweep/default.yaml] [--out runs/sweep] [--jobs 2]
                            [--methods dpo,re_dpo] [--noise 0.3] [--seeds 1,2] [--report-only]
                            [extra overrides ...]

Each grid cell is one `python -m recipes.train` process (OMP_NUM_THREADS=1; --jobs at once) in
<out>/<noise>/<method>/seed<seed>; a cell whose eval.json exists is not run again, so an
interrupted sweep continues where it stopped. Writes to <out>:
  results.csv        one row per run: held-out accuracy, per-annotator eta_hat and |eta_hat - eta*|,
                     flag precision / recall (w < 0.5 vs the truly flipped pairs) per annotator
  results.md         mean +- std over seeds of accuracy per method and noise level; for RE methods
                     max |eta_hat - eta*| and the per-annotator flag precision / recall
  accuracy.png       held-out accuracy vs noise per method (mean, min-max band over seeds)
  eta_<noise>.png    eta_hat over the steps per annotator for each RE method (first seed), eta* dashed
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GRID = REPO / "conf" / "sweep" / "default.yaml"


def expected_flip_rate(etas: list[float], proportions: list[float]) -> float:
    return sum(p * (1.0 - e) for e, p in zip(etas, proportions))


def cell_overrides(grid: dict, method: str, noise: str, seed: int, extra: list[str],
                   proportions: list[float]) -> list[str]:
    etas = grid["noise"][noise]
    flip_rate = f"{expected_flip_rate(etas, proportions):.4f}"
    method_overrides = [o.replace("{flip_rate}", flip_rate) for o in grid["methods"][method]]
    return [*grid["base"], f"data.synthetic.etas=[{','.join(str(e) for e in etas)}]",
            *method_overrides, f"run.seed={seed}", *extra]


def run_cell(run_dir: Path, overrides: list[str]) -> float:
    """Train one cell (skipped when its eval.json exists); returns seconds spent."""
    if (run_dir / "eval.json").is_file():
        return 0.0
    command = [sys.executable, "-m", "recipes.train", f"run.dir={run_dir}", "checkpoint.resume=false",
               *overrides]
    path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path)}
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(run_dir / "train.log", "w") as log:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{run_dir}: training failed with exit code {done.returncode} "
                           f"(see {run_dir / 'train.log'})")
    return time.time() - start


def truth_of(run_dir: Path) -> dict:
    """truth.json of the benchmark the run trained on (its resolved config names the data)."""
    from nemo_repo.data.pipeline import build_data_config, materialize_synthetic
    from nemo_repo.data.synthetic import load_truth

    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    return load_truth(materialize_synthetic(build_data_config(resolved["data"])).truth)


def summarise_run(run_dir: Path, truth: dict) -> dict:
    """One results.csv row (without the grid coordinates)."""
    from nemo_repo.objectives import RobustConfig
    from nemo_repo.training.outputs import read_records

    eval_metrics = json.loads((run_dir / "eval.json").read_text())
    row = {"accuracy": eval_metrics.get("true_label_accuracy")}
    weights = read_records(run_dir / "pair_weights.jsonl")
    reliability = {r["annotator_id"]: r for r in json.loads((run_dir / "reliability.json").read_text())}
    robust = RobustConfig(mode=yaml.safe_load((run_dir / "config.yaml").read_text())["robust"]["mode"])
    flipped = set(truth["flipped_ids"])
    errors = []
    for name, info in truth["annotators"].items():
        if not robust.trains_reliability:
            continue
        eta = reliability[name]["eta"]
        errors.append(abs(eta - info["eta_star"]))
        mine = [r for r in weights if r["annotator_id"] == name and r["w"] is not None]
        flagged = {r["id"] for r in mine if r["w"] < 0.5}
        truly = {r["id"] for r in mine} & flipped
        hits = len(flagged & truly)
        row.update({f"eta_hat/{name}": eta, f"eta_err/{name}": eta - info["eta_star"],
                    f"flagged/{name}": len(flagged),
                    f"precision/{name}": hits / len(flagged) if flagged else None,
                    f"recall/{name}": hits / len(truly) if truly else None})
    row["max_eta_err"] = max(errors) if errors else None
    return row


def _fmt(values: list[float], digits: int = 3, spread: bool = True) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1 or not spread:
        return f"{statistics.mean(values):.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown(rows: list[dict], methods: list[str], noises: list[str], annotators: list[str]) -> str:
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"Held-out accuracy (validation prompts never seen in training), mean ± std over seeds "
             f"{seeds}", "", "| method | " + " | ".join(f"noise {n}" for n in noises) + " |",
             "|---|" + "---|" * len(noises)]
    for method in methods:
        cells = [_fmt([r["accuracy"] for r in rows if r["method"] == method and r["noise"] == n])
                 for n in noises]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    re_rows = [r for r in rows if r.get("max_eta_err") is not None]
    if re_rows:
        lines += ["", "RE methods: eta_hat - eta* per annotator, and flag precision / recall of "
                  "w < 0.5 per annotator (mean over seeds)", "",
                  "| method | noise | max abs err | " + " | ".join(f"err {a}" for a in annotators)
                  + " | " + " | ".join(f"P/R {a}" for a in annotators) + " |",
                  "|---|---|---|" + "---|" * (2 * len(annotators))]
        for method in methods:
            for noise in noises:
                cell = [r for r in re_rows if r["method"] == method and r["noise"] == noise]
                if not cell:
                    continue
                errs = [_fmt([r[f"eta_err/{a}"] for r in cell], 3, False) for a in annotators]
                pr = [f"{_fmt([r[f'precision/{a}'] for r in cell], 2, False)} / "
                      f"{_fmt([r[f'recall/{a}'] for r in cell], 2, False)}" for a in annotators]
                lines.append(f"| {method} | {noise} | {_fmt([r['max_eta_err'] for r in cell], 3, False)} | "
                             + " | ".join(errs) + " | " + " | ".join(pr) + " |")
    return "\n".join(lines) + "\n"


def plots(out: Path, rows: list[dict], methods: list[str], noises: list[str], truths: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nemo_repo.training.outputs import read_records

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [float(n) for n in noises]
    for method in methods:
        per_noise = [[r["accuracy"] for r in rows if r["method"] == method and r["noise"] == n
                      and r["accuracy"] is not None] for n in noises]
        if not any(per_noise):
            continue
        points = [(xi, v) for xi, v in zip(x, per_noise) if v]
        ax.plot([p[0] for p in points], [statistics.mean(p[1]) for p in points], "o-", label=method)
        ax.fill_between([p[0] for p in points], [min(p[1]) for p in points],
                        [max(p[1]) for p in points], alpha=0.15)
    ax.set(xlabel="expected label flip rate", ylabel="held-out accuracy", title="accuracy vs noise")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)
    for noise in noises:
        re_cells = sorted({(r["method"], r["run_dir"]) for r in rows if r["noise"] == noise
                           and r.get("max_eta_err") is not None and r["seed"] == min(
                               s["seed"] for s in rows)})
        if not re_cells:
            continue
        fig, axes = plt.subplots(1, len(re_cells), figsize=(4 * len(re_cells), 3.5), squeeze=False)
        for ax, (method, run_dir) in zip(axes[0], re_cells):
            records = [r for r in read_records(Path(run_dir) / "metrics.jsonl") if r["split"] == "eta"]
            for i, (name, info) in enumerate(truths[noise]["annotators"].items()):
                color = f"C{i}"
                ax.plot([r["step"] for r in records], [r[f"eta/{name}"] for r in records], color=color,
                        label=name)
                ax.axhline(info["eta_star"], color=color, linestyle="--", linewidth=0.8)
            ax.set(title=method, xlabel="step", ylim=(0, 1.02))
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("eta_hat (eta* dashed)")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"eta_{noise}.png", dpi=110)
        plt.close(fig)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default=str(DEFAULT_GRID))
    parser.add_argument("--out", default="runs/sweep")
    parser.add_argument("--methods", help="comma-separated subset of the grid's methods")
    parser.add_argument("--noise", help="comma-separated subset of the grid's noise levels")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the grid's)")
    parser.add_argument("--jobs", type=int, default=2, help="cells trained at once (one process each)")
    parser.add_argument("--report-only", action="store_true", help="train nothing: tables and plots "
                        "from the cells that have finished")
    args, extra = parser.parse_known_args(argv)
    grid = yaml.safe_load(Path(args.grid).read_text())
    methods = args.methods.split(",") if args.methods else list(grid["methods"])
    noises = args.noise.split(",") if args.noise else [str(n) for n in grid["noise"]]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(grid["seeds"])
    unknown = sorted(set(methods) - set(grid["methods"])) + sorted(set(noises) - set(grid["noise"]))
    if unknown:
        sys.exit(f"{args.grid}: no method / noise level named {unknown}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proportions = _proportions(grid)
    cells = [(noise, method, seed) for noise in noises for method in methods for seed in seeds]
    rows, truths, start = [], {}, time.time()

    if args.report_only:   # tables and plots from the cells already trained
        cells = [c for c in cells if (out / c[0] / c[1] / f"seed{c[2]}" / "eval.json").is_file()]

    def run(cell):
        noise, method, seed = cell
        run_dir = out / noise / method / f"seed{seed}"
        return run_dir, run_cell(run_dir, cell_overrides(grid, method, noise, seed, extra, proportions))

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:   # each cell is its own process
        for (noise, method, seed), (run_dir, spent) in zip(cells, pool.map(run, cells)):
            truths.setdefault(noise, truth_of(run_dir))
            row = {"method": method, "noise": noise, "seed": seed, "run_dir": str(run_dir),
                   **summarise_run(run_dir, truths[noise])}
            rows.append(row)
            print(f"[{time.time() - start:6.0f} s] noise {noise} {method:<18} seed {seed}: "
                  f"accuracy {row['accuracy']:.3f}"
                  + (f"  max|eta err| {row['max_eta_err']:.3f}" if row["max_eta_err"] is not None else "")
                  + (f"  ({spent:.0f} s)" if spent else "  (cached)"), flush=True)
    annotators = list(next(iter(truths.values()))["annotators"])
    columns = sorted({key for row in rows for key in row}, key=lambda k: (k not in (
        "method", "noise", "seed", "accuracy", "max_eta_err"), k))
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    table = markdown(rows, methods, noises, annotators)
    (out / "results.md").write_text(table)
    plots(out, rows, methods, noises, truths)
    print("\n" + table + f"\nsweep {time.time() - start:.0f} s; results in {out}/")


def _proportions(grid: dict) -> list[float]:
    """The benchmark's annotator proportions (the base recipe's data settings)."""
    from hydra import compose, initialize_config_dir

    overrides = [o for o in grid["base"] if o.startswith(("recipe=", "data=", "data."))]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return list(cfg.data.synthetic.proportions)


if __name__ == "__main__":
    main(sys.argv[1:])
