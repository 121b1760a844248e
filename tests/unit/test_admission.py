"""The door's admission tickets (ecomgen/serving/admission.py), driven with explicit clocks."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from ecomgen.errors import Overloaded
from ecomgen.serving.admission import Admission, remove_tables, table_path

S = 1_000_000_000  # one second in ns


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ecomgen-admission-1-door"


def test_the_bound_holds_and_a_release_frees_a_slot(path: Path) -> None:
    door = Admission("door", 2, path)
    door.admit(100 * S, now_ns=S)
    door.admit(100 * S, now_ns=S)
    with pytest.raises(Overloaded, match="Exceeds maximum queue size: door has 2 requests in flight"):
        door.admit(100 * S, now_ns=S)
    door.release(100 * S, now_ns=2 * S)
    door.admit(100 * S, now_ns=2 * S)
    assert door.inside(now_ns=2 * S) == 2


def test_a_ticket_never_given_back_frees_itself_at_its_deadline(path: Path) -> None:
    door = Admission("door", 1, path)
    door.admit(5 * S, now_ns=S)  # the request fails halfway: the exit never sees it
    with pytest.raises(Overloaded):
        door.admit(50 * S, now_ns=4 * S)
    door.admit(50 * S, now_ns=6 * S)  # past the first one's deadline


def test_door_and_exit_share_the_table_across_processes(path: Path) -> None:
    door = Admission("door", 1, path)
    door.admit(100 * S)
    exit_ = multiprocessing.get_context("spawn").Process(target=_release, args=(str(path), 100 * S))
    exit_.start()
    exit_.join(60)
    assert exit_.exitcode == 0
    assert door.inside() == 0


def _release(path: str, deadline: int) -> None:
    Admission("door", 1, Path(path)).release(deadline)


def test_a_request_that_would_answer_late_is_refused_at_the_door(path: Path) -> None:
    door = Admission("door", 64, path)
    # Ten answers 0.5 s apart while busy: the service time converges to 0.5 s an answer.
    for i in range(10):
        door.admit(1000 * S, now_ns=i * S // 2)
        door.release(1000 * S, now_ns=(i + 1) * S // 2)
    assert door.service_s() == pytest.approx(0.5, rel=0.01)
    now = 10 * S
    for _ in range(5):
        door.admit(now + 100 * S, now_ns=now)
    # 5 ahead + itself at 0.5 s each = 3 s: a 2 s deadline cannot be met, a 4 s one can.
    with pytest.raises(Overloaded, match=r"would answer in about 3.00 s \(5 requests ahead, 500 ms each\)"):
        door.admit(now + 2 * S, now_ns=now)
    door.admit(now + 4 * S, now_ns=now)


def test_idle_time_does_not_count_as_service_time(path: Path) -> None:
    door = Admission("door", 4, path)
    door.admit(1000 * S, now_ns=0)
    door.release(1000 * S, now_ns=S // 10)  # 100 ms alone
    door.admit(1000 * S, now_ns=500 * S)  # after 8 idle minutes
    door.release(1000 * S, now_ns=500 * S + S // 10)
    assert door.service_s() == pytest.approx(0.1, rel=0.01)


def test_tables_of_stopped_servers_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ecomgen.serving.admission as admission

    monkeypatch.setattr(admission, "SHM_DIR", tmp_path)
    gone = table_path("tryon_pre", server_pid=2**22 + 12345)  # no such process
    live = table_path("tryon_pre", server_pid=1)
    for p in (gone, live):
        Admission("tryon_pre", 2, p).close()
    assert remove_tables() == [gone]
    assert remove_tables(1) == [live]
