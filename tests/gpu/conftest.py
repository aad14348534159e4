"""The GPU smoke suite (`make gpu-test`; marker `gpu`): skipped with a reason where CUDA is absent,
and one verdict line per check at the end of a `-m gpu` run: PASS / FAIL / SKIP <check> <reason>."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for item in items:
        marker = item.get_closest_marker("gpu")
        if marker is None:
            continue
        needed = marker.kwargs.get("min_gpus", 1)
        if gpus < needed:
            reason = (f"needs {needed} CUDA GPU(s), found {gpus} (torch {torch.__version__}, "
                      f"CUDA build {torch.version.cuda})")
            item.add_marker(pytest.mark.skip(reason=reason))


_VERDICTS: dict[str, tuple[str, str]] = {}


def pytest_runtest_logreport(report):
    name = report.nodeid.split("::", 1)[-1]
    if report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _VERDICTS[name] = ("SKIP", reason.removeprefix("Skipped: "))
    elif report.failed:
        message = report.longreprtext.strip().splitlines()
        _VERDICTS[name] = ("FAIL", next((line for line in reversed(message) if line.startswith("E ")),
                                        message[-1] if message else "")[:300])
    elif report.when == "call" and report.passed:
        _VERDICTS.setdefault(name, ("PASS", ""))


def pytest_terminal_summary(terminalreporter, config):
    if "gpu" not in (config.getoption("markexpr") or "") or not _VERDICTS:
        return
    terminalreporter.section("GPU smoke suite: one line per check")
    for name, (verdict, reason) in _VERDICTS.items():
        terminalreporter.write_line(f"{verdict} {name} {reason}".rstrip())
