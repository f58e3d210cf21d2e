"""Jobs as users start and manage them: every action is checked against the user's role.

``JobQueue`` (core) runs jobs for anyone who calls it, as the CLI and schedules do. What a
*user* does goes through here: starting a job needs ``run_jobs``; cancelling or retrying one's
own job needs ``run_jobs`` too, someone else's ``manage_jobs`` (``rbac.job_action``); seeing
everyone's jobs needs ``manage_jobs``. A refusal is audited (``AccessControl``).
"""

from __future__ import annotations

from collections.abc import Collection

from stalwart.core.access import AccessControl
from stalwart.core.jobs import Job, JobQueue, JobResult
from stalwart.core.rbac import ENQUEUE_JOB, Permission, Principal, job_action
from stalwart.core.tracking import JOB_START, track


class JobService:
    """Enqueue, cancel, retry and list jobs on behalf of a principal."""

    def __init__(self, queue: JobQueue, access: AccessControl) -> None:
        self.queue = queue
        self.access = access

    def enqueue(self, actor: Principal, job: Job) -> str:
        """Start ``job`` as ``actor`` (its owner); returns the job's id."""
        self.access.authorize(actor, ENQUEUE_JOB, entity="job", entity_id=job.function)
        owned = (
            job if job.owner == actor.username else job.model_copy(update={"owner": actor.username})
        )
        job_id = self.queue.enqueue(owned, user=actor.username)
        track(JOB_START, {"function": job.function, "job_id": job_id}, actor=actor)
        return job_id

    def cancel(self, actor: Principal, job_id: str) -> JobResult:
        """Cancel a job: ``actor``'s own, or anyone's for a role that manages jobs."""
        self._may_act_on(actor, job_id)
        return self.queue.cancel(job_id, user=actor.username)

    def retry(self, actor: Principal, job_id: str) -> JobResult:
        """Queue a failed or cancelled job again, under the same rule as ``cancel``."""
        self._may_act_on(actor, job_id)
        return self.queue.retry(job_id, user=actor.username)

    def may_manage(self, actor: Principal) -> bool:
        """True if ``actor`` may see and act on everyone's jobs."""
        return actor.can(Permission.MANAGE_JOBS)

    def list_jobs(
        self,
        actor: Principal,
        *,
        everyone: bool = False,
        status: Collection[str] | None = None,
        limit: int = 100,
    ) -> list[JobResult]:
        """``actor``'s jobs, or with ``everyone`` (``manage_jobs``) every user's; newest first."""
        if everyone:
            self.access.authorize(actor, Permission.MANAGE_JOBS, entity="job", entity_id="*")
            return self.queue.list_jobs(status=status, limit=limit)
        return self.queue.list_jobs(owner=actor.username, status=status, limit=limit)

    def _may_act_on(self, actor: Principal, job_id: str) -> None:
        job = self.queue.poll(job_id)
        self.access.authorize(actor, job_action(actor, job.owner), entity="job", entity_id=job_id)
