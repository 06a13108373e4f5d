"""Models as run artifacts: a Keras model saved into a run, and loaded back; a full disk is said with the place the
model was going to."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sweeper.domain.errors import StoreError, disk_full


def log_keras(client: Any, run_id: str, model: Any, artifact: str) -> None:
    """A Keras model as a run's artifact; a full disk is said with the place it was going to."""
    from sweeper.ml.formats import save_keras

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact).name
        save_keras(model, path)
        try:
            client.log_artifact(run_id, str(path), artifact_path=str(Path(artifact).parent))
        except OSError as exc:  # MLflow's copy names no file: say where the model was going
            full = disk_full(exc, _artifact_place(client, run_id, artifact))
            if full is None:
                raise
            raise full from exc


def _artifact_place(client, run_id: str, artifact: str) -> str:
    """Where a run's artifact lives, for messages (a path relative to this folder when it is under it)."""
    from urllib.parse import urlparse

    uri = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact}"
    if not uri.startswith("file:"):
        return uri
    place = Path(urlparse(uri).path)
    return str(place.relative_to(Path.cwd())) if place.is_relative_to(Path.cwd()) else str(place)


def load_keras_artifact(client: Any, run_id: str, artifact: str) -> Any:
    """A run's Keras model artifact, loaded; a damaged one is a StoreError that names its place."""
    from sweeper.ml.formats import UNREADABLE_KERAS_FILE, load_keras

    with tempfile.TemporaryDirectory() as tmp:
        try:
            return load_keras(client.download_artifacts(run_id, artifact, tmp))
        except UNREADABLE_KERAS_FILE as exc:
            raise StoreError(f"{_artifact_place(client, run_id, artifact)}: not a readable Keras model ({exc}), "
                             f"damaged since run {run_id} saved it; restore the file, or run the sweep again under "
                             f"another --study") from exc
