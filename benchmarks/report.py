"""What every benchmark prints: summaries of repeated measurements and the JSON report."""

import json
import statistics


def quartiles(values):
    q = statistics.quantiles(values, n=4)
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2],
            "min": min(values), "max": max(values)}


def emit(report: dict, path: str | None = None) -> None:
    """Print the report as JSON; also write it to `path` when given (--json)."""
    text = json.dumps(report, indent=2)
    print(text)
    if path:
        with open(path, "w") as handle:
            handle.write(text + "\n")
