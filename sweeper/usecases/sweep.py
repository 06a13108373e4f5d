"""One sweep: a plan run (or resumed, or joined) until its budget is spent; the last worker to finish evaluates,
logs and registers the best model. Never leaves a run RUNNING: an interrupt ends the sweep run KILLED with what
finished, any other error FAILED."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from sweeper.domain.budget import TimeBudget
from sweeper.domain.errors import StoreError, SweeperError, SweepInterrupted, Terminated, UsageError, disk_full
from sweeper.domain.events import SweepListener, SweepResult
from sweeper.domain.space import SearchSpace, dump_space
from sweeper.domain.urls import mask
from sweeper.domain.wording import plural
from sweeper.engines import engine_class, make_engine
from sweeper.runtime.heap import long_lived_objects_frozen
from sweeper.store import SweepRecorder, describe_store
from sweeper.usecases.final import best_or_none, count_metrics, finish, load_data, result_of
from sweeper.usecases.plan import SweepPlan
from sweeper.usecases.pool import RECYCLE_AFTER, WorkerPool
from sweeper.usecases.runner import REAPED_NOTE, TrialRunner
from sweeper.usecases.studies import recorded_result


def run_sweep(plan: SweepPlan, listener: SweepListener | None = None) -> SweepResult:
    """Run (or resume, or join) the plan's study until its budget is spent; the last worker to finish evaluates,
    logs and registers its best model. A full disk anywhere stops it with DiskFull."""
    try:
        return _run_sweep(plan, listener or SweepListener(), started=time.monotonic())
    except (KeyboardInterrupt, SweeperError):
        raise
    except Exception as exc:
        full = disk_full(exc, describe_store(plan.tracking_uri or _default_uri()))
        if full is None:
            raise
        raise full from exc


def _default_uri() -> str:
    from sweeper.store import default_tracking_uri

    return default_tracking_uri()


def _run_sweep(plan: SweepPlan, listener: SweepListener, started: float) -> SweepResult:
    with contextlib.ExitStack() as stack:
        early = None
        if _may_run_in_workers(plan):  # started now, they import Keras and load the data while the stores open
            began = time.time() - (time.monotonic() - started)  # the workers share a wall clock
            early = stack.enter_context(WorkerPool(plan, listener, started=began))
            early.start()
        recorder = SweepRecorder.open(plan.study, plan.tracking_uri)
        _check_against_study(recorder, plan)
        recorder.reap_dead_runs()
        with _open_engine(plan, recorder) as engine:
            return _sweep_on(plan, listener, started, recorder, engine, early)


def _sweep_on(plan: SweepPlan, listener: SweepListener, started: float, recorder: SweepRecorder, engine,
              early: WorkerPool | None) -> SweepResult:
    """The sweep, its stores open: its trials run, then its final model made (or its stored result)."""
    done = _storedresult_of(plan, recorder, engine)
    if done is not None:
        return done
    with engine.study_lock():
        _open_search(recorder, plan)
    reaped = engine.reap()
    recorder.end_trial_runs(engine.take_reaped(), REAPED_NOTE)
    listener.search_started(plan.study, plan.space.trials, engine.counts(), engine.best_value())
    if recorder.joined:
        listener.sweep_joined(recorder.parent_id)
    if reaped:
        listener.trials_reaped(reaped)
    with _search_ended_on_error(plan, recorder, engine):
        pool, budget = _run_trials(plan, listener, started, recorder, engine, early)
    if not _last_to_finish(recorder, engine):
        result = result_of(plan, recorder, engine.counts(), best_or_none(recorder))
        result.finished_elsewhere = True
        return result
    with _search_ended_on_error(plan, recorder, engine, finishing=True):
        if plan.cluster:  # made on a Dask worker: this process may lack the data and TensorFlow
            from sweeper.usecases.cluster import finish_on_cluster

            return finish_on_cluster(plan, recorder.parent_id, listener)
        if pool is not None and pool.can_finish:  # by the pool's last worker, whose data and Keras are loaded
            return pool.finish()
        time_left = budget.time_left if budget else pool.time_left if pool else None
        return finish(plan, load_data(plan), engine, recorder, listener, time_left)


def _run_trials(plan: SweepPlan, listener: SweepListener, started: float, recorder: SweepRecorder, engine,
                early: WorkerPool | None) -> tuple[WorkerPool | None, TimeBudget | None]:
    """The sweep's trials run on a cluster, in `early`'s worker processes, or in this one; returns the pool or the
    budget they ran under."""
    if plan.cluster:
        from sweeper.usecases.cluster import run_on_cluster

        run_on_cluster(plan, recorder.parent_id, listener)  # the workers are Dask tasks
        return None, None
    if early is not None and _in_worker_processes(plan, engine):
        early.run(recorder.parent_id)  # this process loads no data nor TensorFlow
        return early, None
    if early is not None:
        early.close()  # a resumed study with few trials left: they run in this process
    dataset = load_data(plan)
    listener.data_loaded(dataset.describe_splits())
    # opening the store and the data count too
    budget = TimeBudget(plan.timeout, started=started, retrainings=plan.space.retrainings,
                        objective=plan.space.objective)
    runner = TrialRunner(plan, dataset, recorder, listener, engine.top_values, engine.take_reaped,
                         out_of_time=budget.out_of_time)
    with long_lived_objects_frozen():
        engine.optimize(runner, trials=plan.space.trials, budget=budget)
    return None, budget


@contextlib.contextmanager
def _search_ended_on_error(plan: SweepPlan, recorder: SweepRecorder, engine, finishing: bool = False):
    """An interrupt ends the sweep run KILLED (SweepInterrupted carries what finished); any other error ends it
    FAILED; unless other workers still run trials under it. Never left RUNNING by this process."""
    try:
        yield
    except KeyboardInterrupt as exc:
        counts = engine.counts()
        _stop_search(recorder, engine, "KILLED", counts)
        raise SweepInterrupted(result_of(plan, recorder, counts, best_or_none(recorder)),
                               terminated=isinstance(exc, Terminated), finishing=finishing) from None
    except BaseException:
        with contextlib.suppress(Exception):  # a full disk may refuse this write: the next sweep reaps the run
            _stop_search(recorder, engine, "FAILED", engine.counts())
        raise


@contextlib.contextmanager
def _open_engine(plan: SweepPlan, recorder: SweepRecorder):
    """The study's engine, once the store is known to be whole: MLflow runs without their engine study, or an
    engine study without its MLflow runs, is refused (before anything is written) unless --start-over says to
    drop the half that is left."""
    options = plan.engine_options()
    engine = engine_class(plan.backend)
    recorded = recorder.trial_run_count()
    where, study = f"the MLflow store {describe_store(recorder.uri)}", plan.study
    if recorded and not engine.study_exists(options):
        if not plan.start_over:
            raise StoreError(
                f"{engine.describe_storage(options)} holds no study '{study}', but {where} holds "
                f"{plural(recorded, 'trial run')} of it: the study's storage was deleted or moved, or --storage "
                f"points elsewhere, and going on would run its trials again from trial 0 beside the old runs. "
                f"Restore it (or point --storage at it), or add --start-over to set the MLflow runs aside "
                f"(experiment renamed and deleted, restorable) and sweep the study afresh")
        recorder.set_study_aside()
    opened = engine(options)
    try:
        trained = opened.finished_trials()
        if trained and not recorded:
            if not plan.start_over:
                raise StoreError(
                    f"{where} holds no run of study '{study}', but {engine.describe_storage(options)} holds "
                    f"{plural(trained, 'finished trial')} of it: the MLflow store was deleted or moved, or "
                    f"--tracking-uri points elsewhere, and going on would record only new trials, without a model for "
                    f"the old ones. Restore it (or point --tracking-uri at it), or add --start-over to delete the "
                    f"engine's study and sweep it afresh")
            opened.delete_study()
            opened.close()
            opened = engine(options)
        yield opened
    finally:
        opened.close()


def _storedresult_of(plan: SweepPlan, recorder: SweepRecorder, engine) -> SweepResult | None:
    """A study whose budget is spent and whose last sweep ended with its best trial's final model: that sweep's
    result as MLflow holds it (running the same command again retrains nothing and opens no new sweep run)."""
    counts = engine.counts()
    if counts["complete"] + counts["pruned"] < plan.space.trials or counts["running"]:
        return None
    best = best_or_none(recorder)
    last = recorder.last_search()
    if best is None or last is None or last.status != "FINISHED" or last.tags.get("best_run_id") != best.run_id:
        return None
    recorder.parent_id = last.run_id
    result = recorded_result(recorder.store, recorder.record(), last, counts, best)
    result.already_complete = True
    return result


@dataclass
class CreatedStudy:
    study: str
    dataset: str
    space: SearchSpace
    storage: str  # masked, as every URL shown
    tracking_uri: str
    parent_run_id: str


def create_study(plan: SweepPlan) -> CreatedStudy:
    """Make a study and its sweep run once, for workers on any host to join (`sweeper search --study NAME`):
    N workers then start together without racing to create anything, and take the budget recorded here."""
    if plan.backend != "optuna":
        raise UsageError(f"only optuna studies can be shared by workers; a {plan.backend} study serves one "
                         f"process at a time")
    recorder = SweepRecorder.open(plan.study, plan.tracking_uri)
    _check_against_study(recorder, plan)
    with make_engine(plan.backend, plan.engine_options()) as engine, engine.study_lock():
        if not engine.is_new:
            raise UsageError(f"study '{plan.study}' already exists in {mask(plan.storage) or 'the embedded store'} "
                             f"({sum(engine.counts().values())} trials); workers join it with: sweeper search "
                             f"{plan.dataset} --study {plan.study}")
        _open_search(recorder, plan, shared=True)
    return CreatedStudy(plan.study, plan.dataset, plan.space, mask(plan.storage) or "the embedded store",
                        mask(recorder.uri), recorder.parent_id)


def _stop_search(recorder: SweepRecorder, engine, status: str, counts: dict) -> None:
    """End the sweep run on an interrupt or a fatal error, unless other workers still run trials under it."""
    if recorder.joined and engine.running_elsewhere():
        return
    recorder.end_search(status, metrics=count_metrics(counts))


def _last_to_finish(recorder: SweepRecorder, engine) -> bool:
    """Whether this worker evaluates, registers and ends the sweep: no trial runs anywhere, and no other
    worker has claimed it (decided under the study's lock, so exactly one worker does)."""
    engine.reap()
    recorder.end_trial_runs(engine.take_reaped(), REAPED_NOTE)
    with engine.study_lock():
        return not engine.running_elsewhere() and recorder.claim_finish()


def _may_run_in_workers(plan: SweepPlan) -> bool:
    """Whether the trials may run in worker processes (`_in_worker_processes` decides once the study is open)."""
    if plan.cluster or (plan.space.model and plan.space.model.startswith("local:")):
        return False  # a model builder given in memory: other processes cannot import it
    return plan.jobs > 1 or (plan.backend == "optuna" and plan.space.trials > RECYCLE_AFTER)


def _in_worker_processes(plan: SweepPlan, engine) -> bool:
    """`--jobs N`, or a sweep with enough trials left that one process would grow (TensorFlow keeps memory per
    model)."""
    counts = engine.counts()
    remaining = plan.space.trials - counts["complete"] - counts["pruned"]
    return plan.jobs > 1 or remaining > RECYCLE_AFTER


def _open_search(recorder: SweepRecorder, plan: SweepPlan, shared: bool = False) -> bool:
    space = plan.space
    text = Path(space.source).read_text(encoding="utf-8") if space.source else dump_space(space)
    return recorder.open_search(plan.study_record(), space_signature=space.signature(), settings=plan.settings(),
                                space_text=text, lineage=plan.lineage, budget=plan.budget() if shared else None,
                                shared=shared)


def _check_against_study(recorder: SweepRecorder, plan: SweepPlan) -> None:
    """The engine, dataset, objectives and space match what MLflow holds for the study."""
    recorder.check_study(plan.study_record(), plan.space.signature())
