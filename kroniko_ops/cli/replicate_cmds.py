"""Command: replicate (see docs/RUNBOOK.md, "Off the machine")."""

from __future__ import annotations

import signal
import threading

import click

from ..objstore import Retry
from ..ops.replicate import parse_duration
from ..ops.replicate import replicate as run_replicate
from . import cli
from .contract import Run, command
from .params import FileStore


@command(cli, "replicate", path="url", subject="url", metrics_file=True, examples_=(
    "kroniko-ops replicate /srv/events s3://acme-dr/events --once --retain 7d        # from cron",
    "kroniko-ops replicate /srv/events s3://acme-dr/events --interval 1 --metrics-file /var/lib/node_exporter/r.prom",
    "kroniko-ops replicate /srv/events /mnt/other-disk/events-replica --once --json"))
@click.argument("store", type=FileStore(file_okay=False))
@click.argument("url")
@click.option("--once", is_flag=True, help="Ship what the store holds now, then exit (for cron).")
@click.option("--interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True, metavar="SECONDS",
              help="When following: seconds between rounds.")
@click.option("--retain", default=None, metavar="DURATION",
              help="Keep what restores within DURATION need (e.g. 7d, 36h) and delete older manifests and the "
                   "objects only they name. Default: delete nothing.")
@click.option("--retry-for", type=click.FloatRange(min=0), default=120.0, show_default=True, metavar="SECONDS",
              help="Retry a failing object store call with back-off this long, then exit 8.")
def replicate(run: Run, store: str, url: str, once: bool, interval: float, retain: str | None,
              retry_for: float) -> None:
    """Ship STORE to URL (s3://BUCKET/PREFIX, or a folder) and keep it up to date.

    Sealed segments and packs are uploaded once; the active segment's synced records go up as
    increments of whole batches; a manifest naming every object is written last. Without
    --once it follows the store every --interval seconds until SIGTERM or Ctrl-C. Credentials
    and endpoint come from the AWS SDK's environment and files (AWS_ACCESS_KEY_ID,
    AWS_ENDPOINT_URL, ~/.aws/...). --metrics-file is written after every round, with the
    replica's lag. Exit 2: URL holds another store's replica or something else (nothing
    written); 8: the object store kept failing.
    """
    seconds = parse_duration(retain) if retain is not None else None
    # The library records every round (with the lag) and a failure; the run's own end-of-run
    # record would drop the lag gauges.
    metrics_file, run.metrics_file = run.metrics_file, None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        report = run_replicate(store, url, once=once, interval=interval, retain=seconds, metrics_file=metrics_file,
                               retry=Retry(seconds=retry_for), stop=stop)
    finally:
        signal.signal(signal.SIGTERM, previous)
    run.finish(report)
