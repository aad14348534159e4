from nemo_repo.training import plots
from nemo_repo.training.metrics import METRICS_FILE
from nemo_repo.training.outputs import PAIR_WEIGHTS_FILE, write_records

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_re_run_gets_training_eta_and_w_figures(tmp_path):
    write_records(tmp_path / METRICS_FILE, [
        {"step": 1, "split": "train", "loss": 0.69, "reward_accuracy": 0.5},
        {"step": 2, "split": "train", "loss": 0.60, "reward_accuracy": 0.7},
        {"step": 2, "split": "eval", "loss": 0.62, "reward_accuracy": 0.6, "true_label_accuracy": 0.8},
        {"step": 2, "split": "eta", "eta/alice": 0.88, "eta/bob": 0.71}])
    write_records(tmp_path / PAIR_WEIGHTS_FILE, [{"id": "a", "annotator_id": "alice", "w": 0.9},
                                              {"id": "b", "annotator_id": "bob", "w": 0.2}])
    written = plots.write_plots(tmp_path)
    assert [p.name for p in written] == ["training.png", "eta.png", "w_hist.png"]
    for path in written:
        assert path.parent == tmp_path / plots.PLOTS_DIR and path.read_bytes()[:8] == PNG_MAGIC


def test_files_without_eta_records_or_weights_get_only_the_training_figure(tmp_path):
    write_records(tmp_path / METRICS_FILE, [{"step": 1, "split": "train", "loss": 0.69}])
    assert [p.name for p in plots.write_plots(tmp_path)] == ["training.png"]


def test_a_single_eta_record_is_drawn(tmp_path):
    """A short run logs eta once or twice: a lone point must still show (as a marker)."""
    import matplotlib.image
    import numpy as np

    write_records(tmp_path / METRICS_FILE, [{"step": 3, "split": "eta", "eta/alice": 0.5}])
    image = matplotlib.image.imread(plots.write_plots(tmp_path)[1])[..., :3]
    first_colour = np.array([0x1f, 0x77, 0xb4]) / 255   # matplotlib's C0, the first annotator's
    assert (np.abs(image - first_colour).max(axis=-1) < 0.05).sum() > 10
