"""Optuna's journal file, made safe against crashes and full disks.

Optuna appends each batch of operations as JSON lines. Two things can break such a file for good: a
record torn by a crash or a full disk (the next append then lands after it and the line no longer
parses), and stray bytes. Here appends are whole or absent (a failed write is cut back off), a torn
tail is set aside with a warning naming the file and the byte offset before anything is appended
after it, and a line that does not parse is a `StoreError` naming the file, the line and the repair.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import get_lock_file

from sweeper.domain.errors import StoreError, disk_full
from sweeper.runtime.interrupts import deferred

logger = logging.getLogger(__name__)
REPAIR = "sweeper doctor --repair"


class SafeJournalFileBackend(JournalFileBackend):
    """A JournalFileBackend whose appends are all-or-nothing and whose reader names a corrupted line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            super().__init__(str(self.path))
            if self._torn() and os.access(self.path, os.W_OK):
                with get_lock_file(self._lock):
                    self._set_aside_torn_tail()
        except OSError as exc:
            raise (disk_full(exc, str(self.path)) or exc) from exc

    def append_logs(self, logs: list[dict]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode("utf-8")
        try:
            with get_lock_file(self._lock), deferred():
                self._set_aside_torn_tail()  # a process killed mid-append since we last looked
                size = self.path.stat().st_size
                try:
                    with open(self.path, "ab") as f:
                        f.write(text)
                        f.flush()
                        os.fsync(f.fileno())
                except BaseException:
                    os.truncate(self.path, size)  # never leave half a record behind
                    raise
        except OSError as exc:
            raise (disk_full(exc, str(self.path)) or exc) from exc

    def read_logs(self, log_number_from: int):
        try:
            yield from super().read_logs(log_number_from)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError, Optuna's "Invalid log format."
            raise StoreError(corruption_message(self.path)) from None

    def _torn(self) -> bool:
        size = self.path.stat().st_size
        if not size:
            return False
        with open(self.path, "rb") as f:
            f.seek(size - 1)
            return f.read(1) != b"\n"

    def _set_aside_torn_tail(self) -> None:
        """Under the journal's lock: move a last line without its newline into a file of its own."""
        if not self._torn():
            return
        offset = _last_line_start(self.path)
        with open(self.path, "rb") as f:
            f.seek(offset)
            tail = f.read()
        aside = self.path.with_name(f"{self.path.name}.torn-{offset}")
        aside.write_bytes(tail)
        os.truncate(self.path, offset)
        logger.warning(f"{self.path} ended in a torn record ({len(tail)} bytes at byte offset {offset}, left by a "
                       f"crash or a full disk); set it aside in {aside.name} and went on without it")


def _last_line_start(path: Path, chunk: int = 65536) -> int:
    """The byte offset just after the file's last newline (0 if it has none)."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            found = f.read(end - start).rfind(b"\n")
            if found >= 0:
                return start + found + 1
            end = start
    return 0


@dataclass
class BadLine:
    number: int  # 1-based
    offset: int  # byte offset of the line's start
    reason: str


def scan(path: Path) -> tuple[int, list[BadLine]]:
    """Every line of a journal file checked: (good records, the lines that are not records)."""
    good, bad, offset = 0, [], 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                bad.append(BadLine(number, offset, "a torn record (no end of line)"))
            else:
                try:
                    json.loads(line)
                    good += 1
                except ValueError as exc:
                    bad.append(BadLine(number, offset, f"{type(exc).__name__}: {exc}"))
            offset += len(line)
    return good, bad


def corruption_message(path: Path) -> str:
    _, bad = scan(path)
    first = bad[0] if bad else BadLine(0, 0, "unreadable")
    more = f" ({len(bad)} bad lines in all)" if len(bad) > 1 else ""
    return (f"the Optuna journal {path} is corrupted: line {first.number} (byte offset {first.offset}) is not a "
            f"journal record ({first.reason[:120]}){more}; `{REPAIR}` sets the bad lines aside and keeps the "
            f"rest, or restore the file from a backup")


def repair(path: Path) -> tuple[list[BadLine], Path | None]:
    """Keep the journal's good lines (the whole file is kept beside it first); returns the bad lines and the
    copy of the original (None when nothing needed repairing)."""
    _, bad = scan(path)
    if not bad:
        return [], None
    backup = path.with_name(f"{path.name}.before-repair-{time.strftime('%Y%m%d-%H%M%S')}")
    skip = {line.number for line in bad}
    repaired = path.with_name(f".{path.name}.repaired-{os.getpid()}")
    try:
        with open(path, "rb") as source, open(repaired, "wb") as target:
            for number, line in enumerate(source, start=1):
                if number not in skip:
                    target.write(line)
            target.flush()
            os.fsync(target.fileno())
        os.link(path, backup)
        os.replace(repaired, path)
    finally:
        repaired.unlink(missing_ok=True)
    return bad, backup


def studies_load(path: Path) -> str | None:
    """What stops the journal's studies from loading (None: every one loads, with its trials)."""
    import optuna

    try:
        storage = optuna.storages.JournalStorage(SafeJournalFileBackend(path))
        for study in storage.get_all_studies():
            storage.get_all_trials(study._study_id, deepcopy=False)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
