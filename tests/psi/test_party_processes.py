"""The two party processes of ``pec psi local`` (``run_parties``), under either start method."""

import os
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

import pec.psi_local
from psi.batch import mask_and_truncate
from psi.errors import PsiError
from psi.wire import Role

pytestmark = pytest.mark.integration


def _dies_or_listens(job: tuple[str, Path], conn: Connection, events: Any) -> None:
    """The left party dies at once; the right one writes down how it learns of that."""
    action, marker = job
    if action == "die":
        os._exit(3)
    started = time.monotonic()
    try:
        if conn.poll(60):
            conn.recv_bytes()
        seen = "nothing"
    except EOFError:
        seen = "eof"
    marker.write_text(f"{seen} {time.monotonic() - started:.2f}")


def _echo(job: tuple[str, Path], conn: Connection, events: Any) -> None:
    """Each side sends its name over the pipe and reports what it received."""
    role, _ = job
    conn.send_bytes(role.encode())
    events.put(("result", role, {"got": conn.recv_bytes().decode(), "pid": os.getpid()}))


@pytest.fixture(params=["fork", "spawn"])
def method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(pec.psi_local, "start_method", lambda: request.param)
    return str(request.param)


def test_the_parties_talk_only_to_each_other(method: str, tmp_path: Path) -> None:
    jobs = {Role.LEFT: ("left", tmp_path), Role.RIGHT: ("right", tmp_path)}
    reports = pec.psi_local.run_parties(_echo, jobs, "pec-test", 30, None)
    assert reports["left"]["got"] == "right"
    assert reports["right"]["got"] == "left"
    assert reports["left"]["pid"] != reports["right"]["pid"] != os.getpid()


def test_a_party_that_dies_is_an_error_and_its_peer_sees_the_link_close(
    method: str, tmp_path: Path
) -> None:
    # A forked party inherits both ends of the pipe; unless it closes its peer's end, it would
    # wait out its timeout instead of seeing EOF when the peer dies.
    marker = tmp_path / "right-saw"
    jobs = {Role.LEFT: ("die", marker), Role.RIGHT: ("listen", marker)}
    with pytest.raises(PsiError, match="left party exited without a result"):
        pec.psi_local.run_parties(_dies_or_listens, jobs, "pec-test", 30, None)
    seen, seconds = marker.read_text().split()
    assert seen == "eof"
    assert float(seconds) < 30


def _right_party_dies(*args: Any, **kwargs: Any) -> bytes:
    import multiprocessing

    if multiprocessing.current_process().name.endswith("-right"):
        os._exit(3)
    return mask_and_truncate(*args, **kwargs)  # the left party works as usual


def test_a_party_dying_mid_run_leaves_the_output_folder_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The right party dies once it has masked its own values and starts on the left's: the run
    # fails, and the outputs of an earlier run stay as they were, with no partial folder left.
    import psi.batch
    from pec.psi_local import PsiLocalOptions, parse_key_spec, run_psi_local
    from psi.wire import Reveal

    monkeypatch.setattr(pec.psi_local, "start_method", lambda: "fork")  # inherits the patch
    monkeypatch.setattr(psi.batch, "mask_and_truncate", _right_party_dies)
    (tmp_path / "l.csv").write_text("id\n" + "".join(f"u{i}\n" for i in range(50)))
    (tmp_path / "r.csv").write_text("id\n" + "".join(f"u{i}\n" for i in range(0, 100, 2)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("an earlier run\n")
    options = PsiLocalOptions(keys=(parse_key_spec("id:raw"),), reveal=Reveal.BOTH, timeout=30)
    gone = "right party exited without a result|left party failed: PsiAborted: the peer closed"
    with pytest.raises(PsiError, match=gone):
        run_psi_local(tmp_path / "l.csv", tmp_path / "r.csv", out, options)
    assert [p.name for p in out.iterdir()] == ["summary.json"]
    assert (out / "summary.json").read_text() == "an earlier run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.csv", "out", "r.csv"]


class _Gone:
    def is_alive(self) -> bool:
        return False


def test_the_cause_of_a_failure_is_reported_not_the_peers_echo() -> None:
    # The left cannot read its table and closes the link; the right's "peer closed" can reach
    # the parent first. The report names the left's input.
    import queue

    from pec.errors import InputError

    events: queue.Queue[tuple[str, ...]] = queue.Queue()
    events.put(("error", "right", "protocol", "PsiAborted: the peer closed the link"))
    events.put(("error", "left", "input", "InputError: file l.csv: cannot read as CSV (line 4)"))
    processes = {Role.LEFT: _Gone(), Role.RIGHT: _Gone()}
    with pytest.raises(InputError, match=r"^left file l.csv: cannot read as CSV \(line 4\)$"):
        pec.psi_local.collect_reports(processes, events, 30, None)
    # a real failure beats the peer's abort, whichever comes first
    events.put(("error", "left", "protocol", "PsiAborted: the peer aborted the run (X): y"))
    events.put(("error", "right", "protocol", "InvalidPeerPoint: point 3 is not valid"))
    with pytest.raises(PsiError, match="the right party failed: InvalidPeerPoint"):
        pec.psi_local.collect_reports(processes, events, 30, None)
