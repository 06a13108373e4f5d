"""The few exceptions the library raises; `cli.py` turns them into `Error:` lines."""


class SweeperError(Exception):
    """Base of every error sweeper reports to the user (exit 1)."""


class SearchSpaceError(SweeperError):
    """A search-space file is not valid; the message names file, line and key."""

    def __init__(self, message, *, path=None, line=None, key=None):
        self.path, self.line, self.key = path, line, key
        where = ":".join(str(p) for p in (path, line) if p is not None)
        parts = [p for p in (where, key) if p]
        super().__init__(": ".join(parts + [message]))


class DatasetError(SweeperError):
    """A dataset cannot be found, read or understood."""


class TrackingError(SweeperError):
    """The MLflow store holds nothing usable for the request (no study, no model)."""


class SweepError(SweeperError):
    """The sweep as a whole cannot go on (e.g. too many consecutive failed trials)."""


class UsageError(SweeperError):
    """Options that cannot work together; the CLI reports it as a usage error (exit 2)."""


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

    def __init__(self, result, terminated: bool = False):
        super().__init__("interrupted")
        self.result, self.terminated = result, terminated


class ExportError(SweeperError):
    """A model cannot be written, read back or used in the format asked for."""
