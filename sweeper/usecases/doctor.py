"""`sweeper doctor`: check the stores a folder's sweeps use, and repair what can be repaired without loss.

- The Optuna journal: every line must be a whole JSON record. Repair keeps the good lines (the original
  file is kept beside it as journal.log.before-repair-TIMESTAMP) and checks that every study still loads.
- The MLflow SQLite store: it must open; one that an interrupted first run left half-created, holding
  no run, is set aside as mlflow.db.half-created-TIMESTAMP (the next `sweeper search` makes a fresh one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sweeper.domain.errors import SweeperError


@dataclass
class Finding:
    store: str  # what was checked, e.g. a file's path
    healthy: bool
    message: str
    repaired: bool = False


def check(storage: str | None = None, tracking_uri: str | None = None, repair: bool = False) -> list[Finding]:
    """Check (and with `repair`, mend) the Optuna journal and the MLflow store that `sweeper search` would use
    with these options. An RDB storage or a tracking server is left to its own tools."""
    from sweeper.engines.optuna_engine import journal_path

    findings = []
    journal = journal_path(storage)
    if journal is not None:
        findings.append(_journal(journal, repair))
    findings.append(_mlflow(tracking_uri, repair))
    return findings


def _journal(path: Path, repair: bool) -> Finding:
    from sweeper.engines import journal

    if not path.exists():
        return Finding(str(path), True, "no Optuna journal yet (the first `sweeper search` makes it)")
    good, bad = journal.scan(path)
    if not bad:
        return Finding(str(path), True, f"{good:,} records, all whole")
    listed = "; ".join(f"line {b.number} (byte offset {b.offset}): {b.reason[:80]}" for b in bad[:3])
    more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
    found = f"{len(bad)} bad line{'s' if len(bad) > 1 else ''} among {good + len(bad):,}: {listed}{more}"
    if not repair:
        return Finding(str(path), False, f"{found}; `sweeper doctor --repair` keeps the {good:,} good ones")
    _, backup = journal.repair(path)
    problem = journal.studies_load(path)
    if problem:
        return Finding(str(path), False, f"{found}; without them the studies do not load ({problem}): restore "
                                         f"{backup.name} or a backup", repaired=True)
    return Finding(str(path), True, f"{found}; set them aside and kept {good:,} records (the original is kept as "
                                    f"{backup.name}); every study loads", repaired=True)


def _mlflow(tracking_uri: str | None, repair: bool) -> Finding:
    from sweeper.store import Store, default_tracking_uri
    from sweeper.store.files import half_created, set_aside, sqlite_path

    uri = tracking_uri or default_tracking_uri()
    database = sqlite_path(uri)
    if database is None:
        return Finding(uri, True, "not an SQLite file: left to the server's or the database's own tools")
    if not database.exists():
        return Finding(str(database), True, "no MLflow store yet (the first `sweeper search` makes it)")
    broken = half_created(database)
    if broken is not None:
        if not repair:
            return Finding(str(database), False, f"half-created by an interrupted first run ({broken}) and holds no "
                                                 f"runs; `sweeper doctor --repair` sets it aside")
        aside = set_aside(database, "half-created")
        return Finding(str(database), True, f"half-created ({broken}), held no runs: set aside as {aside.name}",
                       repaired=True)
    try:
        studies = Store.open(uri, create=False).study_names()
    except SweeperError as exc:
        return Finding(str(database), False, str(exc))
    return Finding(str(database), True, f"opens; {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}")
