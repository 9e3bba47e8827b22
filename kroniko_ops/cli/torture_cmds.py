"""Command: torture — the proof harness against a store on this machine's filesystem."""

from __future__ import annotations

import sys

import click

from ..harness.torture import Figures, torture
from . import cli
from .output import json_option, print_report

FIGURES = ("operations", "commits", "rejections", "unknown", "kills", "recoveries", "full_fscks", "rounds",
           "violations", "seed")


@cli.command("torture")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Writer processes per round.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds to run.")
@click.option("--kill-rate", type=click.FloatRange(0.0, 1.0), default=0.2, show_default=True,
              help="Chance that a worker is SIGKILLed in a round (a quarter as many appends also kill "
                   "themselves mid-commit).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the schedules and kill plans (printed; the same seed draws the same ones).")
@click.option("--no-fsync", is_flag=True, help="Skip fsync (faster; a process kill loses nothing either way).")
@json_option
def torture_cmd(store: str, workers: int, duration: float, kill_rate: float, seed: int | None, no_fsync: bool,
                as_json: bool) -> None:
    """Hammer STORE with concurrent conditional appends, reads, retries and SIGKILLs, then prove
    the results: positions gap-free, acknowledged events kept, conditions honoured, rejections
    explained, real-time order kept, and recover + fsck clean after every kill.

    STORE must be new, empty, or one torture used before. Exit 0 when no violation was found,
    4 when one was (each printed with the operations involved and the seed to replay it).
    """
    tty = sys.stderr.isatty() and not as_json

    def tick(f: Figures) -> None:
        if tty:
            click.echo(f"\r{f.rounds} rounds, {f.operations} ops, {f.kills} kills", err=True, nl=False)

    report = torture(store, workers=workers, duration=duration, kill_rate=kill_rate, seed=seed,
                     durable=not no_fsync, on_round=tick)
    if tty:
        click.echo("", err=True)
    if as_json:
        print_report(report, as_json=True)
    else:
        for f in report.findings:
            click.echo(f.message)
        fig = report.figures
        click.echo(f"torture {report.path}: {fig['workers']} workers, {fig['duration']:g}s, kill rate "
                   f"{fig['kill_rate']:g}, head {report.head}")
        for name in FIGURES:
            click.echo(f"  {name:<11} {fig[name]}")
        if fig.get("interrupted"):
            click.echo("  (interrupted: the figures cover the rounds done)")
        if not fig["property6"]:
            click.echo("  (recover/fsck not available: property 6 was not checked)")
        if "failing_round" in fig:
            click.echo(f"  failing round {fig['failing_round']} (round seed {fig['failing_round_seed']}); "
                       f"replay with --seed {fig['seed']}")
    click.get_current_context().exit(report.exit_code)
