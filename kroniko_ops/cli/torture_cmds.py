"""Command: torture — the proof harness against a store on this machine's filesystem."""

from __future__ import annotations

import os
import sys

import click

from ..harness.mutants import MUTANTS
from ..harness.powerloss.model import parse_state
from ..harness.powerloss.simulate import power_loss, replay
from ..harness.torture import Figures, torture
from ..postgres import is_url
from . import cli
from .contract import Run, command
from .output import print_report

FIGURES = ("operations", "commits", "rejections", "unknown", "reads", "kills", "recoveries", "rounds",
           "violations", "seed")


@command(cli, "torture", path="store", examples_=(
    "kroniko-ops torture /tmp/torture --duration 60 --workers 4",
    "kroniko-ops torture /tmp/torture --rounds 5 --seed 42 --json",
    "kroniko-ops torture /tmp/powerloss --power-loss --operation backup"))
@click.argument("store", type=click.Path(file_okay=False), required=False)  # not with --mutant list, --replay
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Writer processes per round.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds to run (default 60 when --rounds is not given either).")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Rounds to run (with --duration too: whichever ends first).")
@click.option("--kill-rate", type=click.FloatRange(0.0, 1.0), default=0.2, show_default=True,
              help="Chance that a worker is SIGKILLed in a round (a quarter as many appends also kill "
                   "themselves mid-commit).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the schedules and kill plans (printed; the same seed draws the same ones).")
@click.option("--no-fsync", is_flag=True, help="Skip fsync (faster; a process kill loses nothing either way).")
@click.option("--segment-bytes", type=click.IntRange(4096, 1 << 30), default=None,
              help="Segment size when torture creates the store (4096: segments roll every dozen events).")
@click.option("--power-loss", is_flag=True,
              help="Instead: record each operation's changes to the disk in STORE (a scratch folder) and check "
                   "every state a power cut could leave (see docs/HARNESS.md).")
@click.option("--operation", "operations", multiple=True, help="With --power-loss: only this operation "
              "(append, batch, concurrent, roll, compact, backup, restore, reindex, recover, migrate, lost-tail: the "
              "disk loses acknowledged records).")
@click.option("--states", type=click.IntRange(min=1), default=600, show_default=True,
              help="With --power-loss: single-fault states checked per run at most (all of them when fewer).")
@click.option("--samples", type=click.IntRange(min=0), default=150, show_default=True,
              help="With --power-loss: random multi-fault states per run.")
@click.option("--io-stride", type=click.IntRange(min=0), default=1, show_default=True,
              help="With --power-loss: then fail every Nth file operation of each maintenance operation with EIO "
                   "and ENOSPC, once and from then on, and every call site of the append path once (0: skip "
                   "these sweeps).")
@click.option("--replay", type=click.Path(file_okay=False, exists=True), default=None,
              help="With --power-loss: a run folder a failure named; rebuild and check --state of it.")
@click.option("--state", "state_text", default=None, help="With --replay: the state as the failure printed it.")
@click.option("--mutant", default=None, metavar="NAME",
              help="Run the harness against a deliberately broken engine (it must exit 4 with the violation "
                   "printed); 'list' prints them (docs/HARNESS.md).")
def torture_cmd(run: Run, store: str | None, workers: int, duration: float | None, rounds: int | None,
                kill_rate: float, seed: int | None, no_fsync: bool, segment_bytes: int | None, power_loss: bool,
                operations: tuple[str, ...], states: int, samples: int, io_stride: int, replay: str | None,
                state_text: str | None, mutant: str | None) -> None:
    """Hammer STORE with concurrent conditional appends, reads, retries and SIGKILLs, then prove
    the results: positions gap-free, acknowledged events kept, conditions honoured, rejections
    explained, real-time order kept, every read a committed prefix, and recover + fsck clean
    after every kill.

    STORE (a folder, or a postgresql:// URL) must be new, empty, or one torture used before.
    Exit 0 when no violation was found, 4 when one was (each printed with the operations involved
    and the seed to replay it). With --mutant NAME the same runs go against a broken engine and
    must exit 4; --mutant list prints the broken engines.
    """
    as_json = run.as_json
    if mutant == "list":
        _list_mutants(run)
        return
    if store is None and not (power_loss and replay):
        raise click.UsageError("missing argument STORE (a new or scratch folder)")
    if mutant is not None and mutant not in MUTANTS:
        raise click.UsageError(f"no mutant {mutant!r}; --mutant list prints them")
    if not power_loss:  # options of the simulator alone would be ignored silently: refuse them
        ctx = click.get_current_context()
        only = ("operations", "states", "samples", "io_stride", "replay", "state_text")
        given = [p.opts[0] for p in ctx.command.params if p.name in only
                 and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with --power-loss only")
    if power_loss:
        if store is not None and is_url(store):
            raise click.UsageError("--power-loss simulates a file store's disk; give it a scratch folder")
        _power_loss(store, seed, rounds or 1, states, samples, list(operations), io_stride, replay, state_text,
                    mutant, run)
        return
    assert store is not None
    if mutant is not None and MUTANTS[mutant].operation != "torture":
        click.echo(f"note: the mutant {mutant} breaks what the power-loss simulator checks (add --power-loss); "
                   "a process kill keeps the page cache, so this run may well pass", err=True)
    tty = sys.stderr.isatty() and not as_json

    def tick(f: Figures) -> None:
        if tty:
            click.echo(f"\r{f.rounds} rounds, {f.operations} ops, {f.kills} kills", err=True, nl=False)

    if duration is None and rounds is None:
        duration = 60.0
    report = torture(store, workers=workers, duration=duration, rounds=rounds, kill_rate=kill_rate, seed=seed,
                     durable=not no_fsync, segment_bytes=segment_bytes, on_round=tick, mutant=mutant)
    if tty:
        click.echo("", err=True)
    if as_json:
        print_report(report, as_json=True)
    else:
        for f in report.findings:
            click.echo(f.message)
        fig = report.figures
        length = f"{fig['duration']:g}s" if fig["duration"] is not None else f"{fig['rounds']} rounds"
        click.echo(f"torture {report.path}: {fig['workers']} workers, {length}, kill rate "
                   f"{fig['kill_rate']:g}, head {report.head}" + (f", mutant {mutant}" if mutant else ""))
        for name in FIGURES:
            click.echo(f"  {name:<11} {fig[name]}")
        if fig.get("interrupted"):
            click.echo("  (interrupted: the figures cover the rounds done)")
        if "failing_round" in fig:
            click.echo(f"  failing round {fig['failing_round']} (round seed {fig['failing_round_seed']}); "
                       f"replay with --seed {fig['seed']}")
    click.get_current_context().exit(report.exit_code)


PL_FIGURES = ("runs", "crash_states", "acknowledged_checked", "events_lost", "violations")


def _list_mutants(run: Run) -> None:
    """``torture --mutant list``: every broken engine, the run that catches it and what it breaks
    (with ``--json``: in the summary line, under ``mutants``)."""
    if not run.as_json:
        for m in MUTANTS.values():
            where = "torture STORE" + ("" if m.operation == "torture" else f" --power-loss (operation {m.operation})")
            click.echo(f"{m.name:<27} {where}\n{'':<27} breaks: {m.breaks}")
    run.done(0, mutants=[{"name": m.name, "operation": m.operation, "breaks": m.breaks, "caught_as": m.caught_as}
                         for m in MUTANTS.values()])


def _power_loss(folder: str | None, seed: int | None, runs: int, states: int, samples: int, operations: list[str],
                io_stride: int, replay_dir: str | None, state_text: str | None, mutant: str | None,
                run: Run) -> None:
    """``torture --power-loss``: the simulator's figures per operation, or one replayed state."""
    as_json = run.as_json
    if replay_dir is not None:
        if not state_text:
            raise click.UsageError("--replay needs --state (as the failure printed it)")
        outcome = replay(replay_dir, parse_state(state_text), folder or os.path.join(replay_dir, "replay"), mutant)
        if not as_json:
            for problem in outcome.problems:
                click.echo(problem)
            click.echo(f"state {outcome.state.describe()}: {len(outcome.problems)} problem(s), "
                       f"{outcome.acked_checked} acknowledged events checked")
        run.done(4 if outcome.problems else 0, problems=list(outcome.problems),
                 acknowledged_checked=outcome.acked_checked)
        return
    assert folder is not None
    report = power_loss(folder, seed=seed, runs=runs, exhaustive_limit=states, samples=samples,
                        operations=operations or None, io_stride=io_stride, mutant=mutant)
    if as_json:
        print_report(report, as_json=True)
    else:
        for f in report.findings:
            click.echo(f.message)
        click.echo(f"torture --power-loss {report.path}: seed {report.figures['seed']}"
                   + (f", mutant {mutant}" if mutant else ""))
        click.echo(f"  {'operation':<11}" + "".join(f"{name:>22}" for name in PL_FIGURES))
        for name, fig in report.figures.items():
            if isinstance(fig, dict) and "crash_states" in fig:
                click.echo(f"  {name:<11}" + "".join(f"{fig[k]:>22}" for k in PL_FIGURES))
        click.echo(f"  total: {report.figures['crash_states']} crash states, {report.figures['events_lost']} events "
                   f"lost, {report.figures['violations']} violations")
        sweep = report.figures.get("io_errors") or {}
        if sweep:
            click.echo(f"  I/O errors (EIO, ENOSPC, once and from then on):  {'operation':<11}{'cases':>8}"
                       f"{'call sites':>12}{'corrupted stores':>18}")
            for name, fig in sweep.items():
                click.echo(f"  {'':<50}{name:<11}{fig['cases']:>8}{fig['call_sites']:>12}{fig['corrupted_stores']:>18}")
    click.get_current_context().exit(report.exit_code)
