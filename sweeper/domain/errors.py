"""The few exceptions the library raises; the command line turns them into `Error:` lines once."""


class SweeperError(Exception):
    """Base of every error sweeper reports to the user (exit 1)."""


class SearchSpaceError(SweeperError):
    """A search-space file is not valid; the message names file, line and key."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, key: str | None = None):
        self.path, self.line, self.key = path, line, key
        self.errors = [self]  # every error of the file, in line order (see `of`)
        where = ":".join(str(p) for p in (path, line) if p is not None)
        parts = [p for p in (where, key) if p]
        super().__init__(": ".join(parts + [message]))

    @classmethod
    def of(cls, errors: list["SearchSpaceError"]) -> "SearchSpaceError":
        """One error for all those of a file: the first by line, its message followed by one `Error:` line for
        each of the others (what the command line prints)."""
        ordered = sorted(errors, key=lambda e: (e.line is None, e.line or 0))
        first = ordered[0]
        if len(ordered) > 1:
            first = cls.__new__(cls)
            Exception.__init__(first, "\nError: ".join(str(e) for e in ordered))
            first.path, first.line, first.key = ordered[0].path, ordered[0].line, ordered[0].key
        first.errors = ordered
        return first


class DatasetError(SweeperError):
    """A dataset cannot be found, read or understood."""


class TrackingError(SweeperError):
    """The MLflow store holds nothing usable for the request (no study, no model)."""


class SweepError(SweeperError):
    """The sweep as a whole cannot go on (e.g. too many consecutive failed trials)."""


class UsageError(SweeperError):
    """Options that cannot work together; the CLI reports it as a usage error (exit 2)."""


class OptionError(UsageError):
    """One option's value is not accepted; `option` names it as the command line spells it (e.g. --algorithm)."""

    def __init__(self, option: str, message: str):
        self.option, self.message = option, message
        super().__init__(f"{option}: {message}")


class StoreError(SweeperError):
    """A store (the Optuna journal, the MLflow database) cannot be read as it is; the message names the file,
    what is wrong with it and how to recover."""


class DiskFull(SweepError):
    """No space left on a device a sweep writes to: fatal for the sweep (the running trial is recorded as
    interrupted, so a resume runs it again), never a failed trial."""

    def __init__(self, path: str | None = None):
        self.path = path
        super().__init__(f"no space left on device writing {path or 'the store'}; free some space and run the "
                         f"same command again to resume")


_DISK_FULL_ERRNOS = {28, 122}  # ENOSPC, EDQUOT
_DISK_FULL_TEXT = ("no space left on device", "database or disk is full", "disk quota exceeded")


def disk_full(exc: BaseException, path: str | None = None) -> DiskFull | None:
    """A DiskFull for `exc` when it, or an exception it came from, says the disk is full (an OSError with
    ENOSPC, SQLite's "database or disk is full", a library's message with the same words); else None. The
    path is the one the OSError names, else `path`."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for link in chain:
        if isinstance(link, DiskFull):
            return link
        if isinstance(link, OSError) and link.errno in _DISK_FULL_ERRNOS:
            return DiskFull(link.filename2 or link.filename or path)  # a copy names its target second
    if any(text in str(link).lower() for link in chain for text in _DISK_FULL_TEXT):
        return DiskFull(path)
    return None


class TrialFailed(Exception):
    """One trial failed (NaN loss, exception in training): recorded, and the sweep goes on."""


class TrialPruned(Exception):
    """One trial was stopped early by the pruner: recorded as pruned."""

    train_seconds: float | None = None  # time spent in fit until then, set by the trainer


class TrialAbandoned(Exception):
    """Other workers failed this trial while it ran (its heartbeats stopped: the process was paused past the
    grace period); its result is dropped, its MLflow run ended KILLED, and the worker goes on."""


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C, so the running trial and the sweep are recorded as interrupted."""


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a sweep; `result` holds what had finished (a resume goes on from there)."""

    def __init__(self, result: object, terminated: bool = False, finishing: bool = False):
        super().__init__("interrupted")
        self.result, self.terminated = result, terminated
        self.finishing = finishing  # stopped while making the final model (every trial had ended)


class ExportError(SweeperError):
    """A model cannot be written, read back or used in the format asked for."""
