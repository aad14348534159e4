"""Mutation check: deliberate bugs in the objectives and reliability code must make the tests that
guard them fail. Each mutation is applied to a copy of the package and only its guarding tests run
there (pytest -x: the first failure is enough); the same tests on the unmutated copy must pass, so
a failure is the mutation's doing. A snippet that no longer exists fails this test: update the
mutation with the code."""

import shutil
import subprocess
import sys

import pytest

from tests.dist import REPO_ROOT, clean_env

OBJECTIVE_TESTS = ["tests/objectives/test_closed_form.py", "tests/objectives/test_re_properties.py"]
RELIABILITY_TESTS = ["tests/test_reliability.py"]
ESTIMATOR_TESTS = ["tests/test_reliability_estimators.py"]
DP_TEST = ["tests/test_reliability.py::test_two_ranks_with_half_batches_equal_one_process_bit_for_bit"]

# name: (file, original snippet, mutated snippet, guarding tests)
MUTATIONS = {
    "E-step sign flipped": (
        "nemo_repo/objectives/robust.py",
        "logits = delta.detach().to(torch.float64) + torch.logit(eta.detach()",
        "logits = -delta.detach().to(torch.float64) + torch.logit(eta.detach()",
        [*OBJECTIVE_TESTS, *RELIABILITY_TESTS]),
    "w not detached": (
        "nemo_repo/objectives/robust.py",
        "logits = delta.detach().to(torch.float64) + torch.logit(eta.detach().to(torch.float64))",
        "logits = delta.to(torch.float64) + torch.logit(eta.to(torch.float64))",
        OBJECTIVE_TESTS),
    "eta update skipped": (
        "nemo_repo/reliability.py",
        "self.eta = torch.where(labelled, (1.0 - alpha) * self.eta + alpha * target, self.eta)",
        "pass",
        RELIABILITY_TESTS),
    "exact M-step skipped": (
        "nemo_repo/reliability.py",
        "            self.eta = torch.where(labelled, target, self.eta)",
        "            pass",
        RELIABILITY_TESTS),
    "calibration scale never fitted": (
        "nemo_repo/reliability.py",
        "self.scale = self._likelihood_scale(delta, annotator.long(), self.eta)",
        "pass",
        ESTIMATOR_TESTS),
    "holdout pairs not selected for the M-step": (
        "nemo_repo/reliability.py",
        "w, index = w[keep], index[keep]",
        "pass",
        ESTIMATOR_TESTS),
    "DP reduction skipped": (
        "nemo_repo/reliability.py",
        "dist.all_reduce(sums, group=group)",
        "pass",
        DP_TEST),
}


def copy_of_the_project(root):
    for name in ("nemo_repo", "tests"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", root)
    return root


def run_tests(root, tests):
    return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=root, env=clean_env(PYTHONPATH=str(root)), capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def unmutated(tmp_path_factory):
    root = copy_of_the_project(tmp_path_factory.mktemp("unmutated"))
    every_test = sorted({t for *_, tests in MUTATIONS.values() for t in tests if "::" not in t})
    done = run_tests(root, every_test)
    assert done.returncode == 0, f"the guarding tests fail without any mutation:\n{done.stdout[-3000:]}"
    return root


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_each_deliberate_bug_is_caught(unmutated, tmp_path, name):
    file, original, mutated, tests = MUTATIONS[name]
    root = copy_of_the_project(tmp_path)
    path = root / file
    source = path.read_text()
    assert source.count(original) == 1, f"{file} no longer contains the mutated snippet {original!r}"
    path.write_text(source.replace(original, mutated))
    done = run_tests(root, tests)
    assert done.returncode == 1 and " failed" in done.stdout, \
        f"mutation {name!r} survived (exit {done.returncode}):\n{done.stdout[-3000:]}"
