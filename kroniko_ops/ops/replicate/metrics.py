"""``replicate --metrics-file``: replica lag and last success in Prometheus' textfile format.

Written through ``prometheus_client`` (HELP and TYPE lines; ``write_to_textfile`` writes a temp
file and renames it, so the node exporter never reads half a file). A run that fails writes
the file too, carrying the last success time forward from the previous file, so an alert on
``time() - kroniko_last_success_timestamp_seconds`` keeps counting.
"""

from __future__ import annotations

import os

OPERATION = "replicate"


def previous_success(path: str) -> float | None:
    """The last success time the metrics file at ``path`` records, if any."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 20)
    except OSError:
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name == "kroniko_last_success_timestamp_seconds"
                        and sample.labels.get("operation") == OPERATION):
                    return float(sample.value)
    except ValueError:
        return None
    return None


def write(path: str, lag_positions: int | None, lag_seconds: float | None, last_success: float | None) -> None:
    """Write the metrics file (a gauge left out when its value is unknown)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    reg = CollectorRegistry()
    if lag_positions is not None:
        Gauge("kroniko_replica_lag_positions", "Positions the replica is behind the store's synced head.",
              registry=reg).set(lag_positions)
    if lag_seconds is not None:
        Gauge("kroniko_replica_lag_seconds", "Seconds the oldest batch not yet in the replica has been committed "
              "(0 when the replica holds the synced head).", registry=reg).set(lag_seconds)
    if last_success is not None:
        Gauge("kroniko_last_success_timestamp_seconds", "Unix time of the last successful run of the operation.",
              ["operation"], registry=reg).labels(operation=OPERATION).set(last_success)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    write_to_textfile(path, reg)
