"""The MLflow layout sweeper writes and reads (a contract: README, "What MLflow holds"), named once.

- experiment = study name; experiment tags carry the engine, the dataset and the objective,
- parent run per sweep: started by `sweeper study create` or by the first `sweeper search`, joined by every worker
  (any host) that starts while it runs, ended by the last to finish; its settings as params (and once, typed, as
  the `settings` tag), the best trial as tags, test metrics, the final model as an MLflow model registered under the
  study's name,
- child run per trial: sampled params, per-epoch metrics with `step=epoch`, `final_*` metrics (the model the trial
  returns, i.e. its best epoch), tags backend, dataset, trial_number, state. A trial's outcome becomes a run
  status through `STATUS`; a trial run is never left RUNNING.
"""

from __future__ import annotations

MODEL_ARTIFACT = "model/model.keras"  # a trial's model, on its trial run
FINAL_MODEL_ARTIFACT = "final_model/model.keras"  # the refit model, on the parent run
CHAMPION = "champion"  # the registry alias of a study's final model
SPACE_TAG = "search_space"  # experiment tag: the space's signature as JSON
SPACE_ARTIFACT = "search_space.yaml"  # on each parent run: the space file it swept
SWEEP_TAG = "sweep_run_id"  # experiment tag: the parent run that every worker of the study's sweep joins
BUDGET_TAG = "budget"  # experiment tag (from `sweeper study create`): trials, max_epochs, patience as JSON
SETTINGS_TAG = "settings"  # parent run tag: the sweep's settings as one JSON document
PARENT_TAG = "mlflow.parentRunId"
REPORT_ARTIFACTS = "report"  # folder on the study's latest search run

#: a trial's outcome -> the status of its MLflow run: a pruned trial is a normal outcome of a search, so the UI
#: shows it without a failure's mark; the `state` tag tells it from a complete one
STATUS = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED", "interrupted": "KILLED",
          "abandoned": "KILLED"}
