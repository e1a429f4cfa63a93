"""The agent outbox: monotonic seqs, deletion only on ack, bounded with reported gaps."""

from __future__ import annotations

from pathlib import Path

from agent.outbox import Outbox, max_items_for


def test_seqs_increase_and_survive_reopen_and_deletes(tmp_path: Path) -> None:
    """Seqs keep growing after acks and after reopening the file; nothing is reused."""
    box = Outbox(tmp_path / "o.db", max_items=100)
    seqs = [box.add("health", {"i": i}, float(i)) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert box.ack("health", seqs[-1]) == 5
    box.close()
    box = Outbox(tmp_path / "o.db", max_items=100)
    assert box.add("health", {}, 9.0) > seqs[-1]
    assert box.last_seq() == seqs[-1] + 1
    box.close()


def test_only_acked_items_are_deleted(tmp_path: Path) -> None:
    """ack(up_to) removes exactly the items with seq <= up_to, oldest first in pending()."""
    box = Outbox(tmp_path / "o.db", max_items=100)
    for i in range(10):
        box.add("health", {"i": i}, float(i))
    first = box.pending("health", 4)
    assert [i.body["i"] for i in first] == [0, 1, 2, 3]
    box.ack("health", first[-1].seq)
    assert [i.body["i"] for i in box.pending("health", 100)] == list(range(4, 10))
    box.close()


def test_overflow_drops_oldest_and_records_one_widening_gap(tmp_path: Path) -> None:
    """Beyond the bound the oldest are dropped, counted and described by a gap, never silently."""
    box = Outbox(tmp_path / "o.db", max_items=5)
    seqs = [box.add("health", {}, float(i)) for i in range(12)]
    assert box.count("health") == 5
    assert [i.seq for i in box.pending("health", 10)] == seqs[-5:]
    gaps = box.gaps("health")
    assert len(gaps) == 1
    assert (gaps[0].from_seq, gaps[0].to_seq, gaps[0].dropped) == (seqs[0], seqs[6], 7)
    assert box.dropped_total("health") == 7
    box.close()


def test_gap_acked_only_if_unchanged_since_sent(tmp_path: Path) -> None:
    """A gap widened after it was sent survives the ack, so the wider one is reported too."""
    box = Outbox(tmp_path / "o.db", max_items=2)
    for i in range(4):
        box.add("health", {}, float(i))
    sent = box.gaps("health")
    box.add("health", {}, 5.0)  # widens the gap while "in flight"
    box.ack("health", 0, sent)
    assert box.gaps("health")[0].dropped == 3
    box.ack("health", 0, box.gaps("health"))
    assert box.gaps("health") == []
    box.close()


def test_bound_from_days_and_interval() -> None:
    """Seven days at 60 s is 10,080 samples; never less than one."""
    assert max_items_for(7, 60) == 10080
    assert max_items_for(0, 60) == 1


def test_renumber_above_a_higher_server_seq_moves_pending_and_gaps(tmp_path: Path) -> None:
    """A fresh outbox behind the server's highest seq shifts its items and gaps above it and keeps
    numbering from there; an outbox at or ahead of the server is left alone."""
    box = Outbox(tmp_path / "o.db", max_items=3)
    for i in range(5):
        box.add("health", {"i": i}, float(i))
    assert box.renumber_above(5) == 0
    assert box.renumber_above(100) == 100
    assert [(i.seq, i.body["i"]) for i in box.pending("health", 10)] == [(103, 2), (104, 3), (105, 4)]
    assert [(g.from_seq, g.to_seq, g.dropped) for g in box.gaps("health")] == [(101, 102, 2)]
    assert box.add("health", {"i": 5}, 5.0) == 106
    assert box.renumber_above(106) == 0
    box.close()
    box.close()  # closing twice is harmless


def test_renumber_above_on_an_empty_outbox(tmp_path: Path) -> None:
    """An outbox that never issued a seq starts right above the server's highest one."""
    box = Outbox(tmp_path / "o.db", max_items=10)
    assert box.renumber_above(41) == 41
    assert box.add("health", {}, 1.0) == 42
    box.close()
