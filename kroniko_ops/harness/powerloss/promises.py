"""What a recorded run's history promises, by time: every crash state after a promise must keep it."""

from __future__ import annotations


class Promises:
    """What a run's history promises, by time: acknowledged events, events shown to readers,
    conflicts named by rejections (each with the moment it was promised), every batch tried."""

    def __init__(self, history: list[dict]) -> None:
        self.acked: list[tuple[int, int, str, str]] = []  # (t1, position, id, who)
        shown: dict[tuple[int, str], tuple[int, str]] = {}
        self.rejected: list[tuple[int, int, str, list[str], str]] = []  # (t1, conflict, its tag, batch, who)
        self.tried: list[list[str]] = []
        for h in history:
            if h["ev"] == "append":
                first = h["last"] - len(h["ids"]) + 1
                self.acked += [(h["t1"], p, i, h["who"]) for p, i in zip(range(first, h["last"] + 1), h["ids"],
                                                                         strict=True)]
            elif h["ev"] == "read":
                for pos, eid in h["events"]:
                    if (pos, eid) not in shown or shown[pos, eid][0] > h["t1"]:
                        shown[pos, eid] = (h["t1"], h["who"])
            elif h["ev"] == "reject":
                self.rejected.append((h["t1"], h["conflict"], h["tag"], h["ids"], h["who"]))
            elif h["ev"] == "try":
                self.tried.append(h["ids"])
        self.shown = [(t, p, i, who) for (p, i), (t, who) in shown.items()]
        # Batches the run wrote (acknowledged, or orphaned by a writer that died before its fsync):
        # a state that lost one still has it in an index taken as the run ended.
        written = {i for _t, _p, i, _w in self.acked}
        written |= {i for h in history if h["ev"] == "try" and h["who"].endswith("-orphan") for i in h["ids"]}
        self.written = written
