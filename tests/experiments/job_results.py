"""What a results directory holds, metric for metric, without the timings (which differ per run)."""

import json

TIMING = {"attack_seconds", "answer_seconds_per_query", "epoch_seconds", "fp_epoch_seconds", "victim"}


def results(out) -> dict:
    found = {}
    for path in sorted((out / "jobs").glob("*/*.json")):
        if path.name in ("result.json", "metrics.json"):
            found[path.parent.name] = {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}
    return found
