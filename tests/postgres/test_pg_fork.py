"""A PostgresEventStore used in a forked child (issue 16 item 1, PostgreSQL side): the pre-fork
pattern of Python servers (open, append at start-up, fork workers, append from each) must give
the child a connection of its own, never the parent's socket. Before, parent and child sent
their statements down one server session: results went to the wrong process, appends failed
or were acknowledged with another's position, and the child's close ended the parent's session."""

from __future__ import annotations

import multiprocessing
import os
import time

from kroniko_ops import Event, Query, QueryItem
from kroniko_ops.ops.postgres.fsck import fsck as pg_fsck
from kroniko_ops.postgres import PostgresEventStore

APPENDS = 60


def _child_appends(store: PostgresEventStore, tag: str, out: int) -> None:
    """In the forked child: append, report each acknowledged position on ``out``, exit."""
    code = 0
    try:
        for i in range(APPENDS):
            pos = store.append(Event("Child", {"i": i}, [tag]))
            os.write(out, f"{pos}\n".encode())
        store.close()
    except BaseException as exc:  # reported to the parent through the exit status
        os.write(out, f"error {exc!r}\n".encode())
        code = 1
    finally:
        os._exit(code)


def test_a_forked_child_gets_its_own_connection(pg_url: str) -> None:
    # The scenario runs in a process of its own: sharing one session can hang it (a reply read
    # by the wrong process), and a hang must fail this test, not stall the suite.
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_scenario, args=(pg_url,))
    proc.start()
    proc.join(180)
    if proc.is_alive():
        proc.kill()
        proc.join(10)
        raise AssertionError("the pre-fork scenario hung (parent and children shared one connection?)")
    assert proc.exitcode == 0
    assert pg_fsck(pg_url).exit_code == 0


def _scenario(pg_url: str) -> None:
    """Open, append, fork two workers that append, append in the parent; check everything."""
    store = PostgresEventStore(pg_url)
    try:
        store.append(Event("Startup", 0))  # the pre-fork append: the connection is in use
        read_fd, write_fd = os.pipe()
        pids = []
        for k in range(2):
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                _child_appends(store, f"child:{k}", write_fd)
            pids.append(pid)
        os.close(write_fd)
        mine = [store.append(Event("Parent", {"i": i}, ["parent"])) for i in range(APPENDS)]
        said = b""
        while chunk := os.read(read_fd, 65536):
            said += chunk
        os.close(read_fd)
        deadline = time.monotonic() + 120
        codes = []
        for pid in pids:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes.append(os.waitstatus_to_exitcode(status))
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    raise AssertionError("a forked child hung")
                time.sleep(0.05)
        lines = said.decode().split()
        assert codes == [0, 0] and "error" not in lines, said.decode()
        theirs = [int(x) for x in lines]
        # Every acknowledged append is there once, at the position it was given; nothing else is.
        acknowledged = [1, *mine, *theirs]
        assert len(set(acknowledged)) == len(acknowledged) == 1 + 3 * APPENDS
        assert store.head() == 1 + 3 * APPENDS  # the parent's session survived its children's exits
        by_tag = {tag: [e.position for e in store.read(Query([QueryItem(tags=[tag])]))]
                  for tag in ("parent", "child:0", "child:1")}
        assert by_tag["parent"] == mine
        assert sorted(by_tag["child:0"] + by_tag["child:1"]) == sorted(theirs)
    finally:
        store.close()
