"""Progress bars (:mod:`kroniko_ops.progress`): in events (and bytes), on stderr, only on a
terminal, and never ahead of the work."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from kroniko_ops import Event, EventStore
from kroniko_ops.progress import Meter


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_an_item_counts_once_it_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", _Terminal())
    with Meter("work", 30, progress=True) as meter:
        seen = []
        for _item in meter.over([10, 20], lambda n: (n, n * 100)):
            seen.append((meter.events, meter.bar.n))  # while an item is worked on, it is not counted yet
        assert seen == [(0, 0), (10, 10)] and (meter.events, meter.bytes, meter.bar.n) == (30, 3000, 30)
        meter.to(20)  # never goes back
        assert meter.bar.n == 30
    assert "work" in sys.stderr.getvalue() and "ev" in sys.stderr.getvalue()


def test_hidden_when_not_a_terminal_or_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert Meter("x", 10, progress=True).bar is None
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert Meter("x", 10, progress=False).bar is None
    assert sys.stderr.getvalue() == ""


def _on_a_terminal(*args: str) -> tuple[int, bytes, bytes]:
    """Run the CLI with stderr on a pseudo-terminal (120 columns), stdout on a pipe."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", "from kroniko_ops.cli import main; main()", *args],
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    err = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            err += chunk
        out = proc.stdout.read()  # type: ignore[union-attr]
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
        proc.stdout.close()  # type: ignore[union-attr]
    return proc.returncode, out, err


def test_long_operations_show_events_on_a_terminal_and_nothing_when_quiet(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    with EventStore(store, durable=False, segment_bytes=1 << 16) as s:
        for _b in range(40):
            s.append([Event("A", {"i": i, "pad": "x" * 100}) for i in range(50)])
    code, out, err = _on_a_terminal("fsck", store)
    assert code == 0 and b"clean" in out
    assert b"fsck full" in err and b"/2000" in err and b"ev" in err  # counted in events, of the head
    code, out, err = _on_a_terminal("backup", store, "--into", str(tmp_path / "set"))
    assert code == 0 and b"backup" in err and b"/2000" in err
    code, out, err = _on_a_terminal("restore", str(tmp_path / "set"), str(tmp_path / "r"))
    assert code == 0 and b"restore: copy" in err and b"restore: index" in err and b"fsck full" in err
    code, out, err = _on_a_terminal("verify-backup", str(tmp_path / "set"), "--quiet")
    assert code == 0 and err == b""
