"""Study names: one rule that every store and engine accepts, checked before any work."""

from __future__ import annotations

import re

from sweeper.domain.errors import UsageError

MAX_LENGTH = 100
_ALLOWED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_RULE = (f"a study name becomes an MLflow experiment, a registered model (models:/NAME@champion) and a Keras "
         f"Tuner folder, so it must start with a letter or digit, hold only letters, digits, '.', '_' and '-', "
         f"and have at most {MAX_LENGTH} characters")


def check_study_name(name: str) -> str:
    """`name` if every store accepts it as a study's name; else UsageError naming the rule and the offender."""
    if not name:
        raise UsageError(f"the study name is empty; {_RULE}")
    if len(name) > MAX_LENGTH:
        raise UsageError(f"the study name '{name[:20]}...' has {len(name)} characters; {_RULE}")
    if not _ALLOWED.fullmatch(name):
        bad = name[0] if not _ALLOWED.match(name) else next(c for c in name if not re.match(r"[A-Za-z0-9._-]", c))
        raise UsageError(f"the study name '{name}' holds {bad!r}; {_RULE}")
    return name


def safe_study_name(text: str) -> str:
    """A valid study name made from any text (e.g. a CSV file's name): other characters become '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", text).lstrip("._-")[:MAX_LENGTH]
    return name or "study"
