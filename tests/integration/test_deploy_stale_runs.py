"""``make deploy`` after ``make stop``: the runs that came due meanwhile are cancelled.

While the worker is stopped, the server (or, once it starts again, its scheduler) keeps
creating runs of the scheduled deployments; they sit Scheduled, then Late. A new worker
would work through every one of them before the on-demand run (the pool runs one flow run
at a time): 445 s instead of 74 once. ``deploy.cancel_stale_runs``, which ``up`` calls
before it starts a worker, cancels each run due before now and leaves later ones alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.level2_cicd import deploy
from tests.conftest import prefect_client_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def target(
    prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[deploy.Target]:
    """The session's Prefect test server, as a deploy target."""
    with prefect_client_of(prefect_server, tmp_path_factory.mktemp("prefect_home")) as url:
        yield deploy.Target(api_url=url)


def _scheduled(target: deploy.Target, deployment: str, pool: str, when: list[dt.datetime]) -> list:
    """A deployment on ``pool`` with one Scheduled run at each of ``when``; their ids."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.states import Scheduled

    with deploy._client(target) as client:
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        flow_id = client.create_flow_from_name("new-data-sensor")
        deployment_id = client.create_deployment(
            flow_id=flow_id, name=deployment, work_pool_name=pool
        )
        return [
            client.create_flow_run_from_deployment(
                deployment_id, state=Scheduled(scheduled_time=at)
            ).id
            for at in when
        ]


def _states(target: deploy.Target, ids: list) -> list[str]:
    with deploy._client(target) as client:
        return [client.read_flow_run(i).state.type.value for i in ids]


def test_runs_due_while_no_worker_polled_are_cancelled_and_later_ones_stay(
    target: deploy.Target, tmp_path: Path
) -> None:
    # Given a sensor's runs every 5 minutes for the last hour (the worker was stopped),
    # its next run in 5 minutes, and a due run of another work pool
    now = dt.datetime.now(dt.UTC)
    past = [now - dt.timedelta(minutes=5 * k) for k in range(1, 13)]
    stale = _scheduled(target, "new-data-sensor", deploy.POOL, past)
    upcoming = _scheduled(
        target, "new-data-sensor-next", deploy.POOL, [now + dt.timedelta(minutes=5)]
    )
    foreign = _scheduled(target, "elsewhere", "another-pool", [now - dt.timedelta(minutes=5)])

    # When make deploy is about to start a worker
    said = deploy.cancel_stale_runs(target, now)

    # Then the twelve stale runs are cancelled, and it says so per deployment
    assert said == ["new-data-sensor x12"]
    assert set(_states(target, stale)) == {"CANCELLED"}
    # And the upcoming run and the other pool's run are untouched
    assert _states(target, upcoming) == ["SCHEDULED"]
    assert _states(target, foreign) == ["SCHEDULED"]
    # And a second call has nothing left to cancel
    assert deploy.cancel_stale_runs(target, now) == []
