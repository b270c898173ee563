"""Live progress of a report job."""

from collections.abc import AsyncGenerator

import strawberry

from graph.context import Info
from graph.errors import user_error
from graph.permissions import needs
from graph.reports.queries import job_id_of
from graph.reports.types import ProvisioningReportJob
from models.principal import REPORTS_READ


async def provisioning_report_progress(
    info: Info, job_id: strawberry.ID
) -> AsyncGenerator[ProvisioningReportJob, None]:
    job = job_id_of(job_id)
    if job is None:
        raise user_error(f"{job_id!r} is not a report job id.", "jobId")
    async for state in info.context.services.jobs.watch(job, info.context.principal.subject):
        yield ProvisioningReportJob.of(state)


@strawberry.type
class Subscription:
    # A subscription field is typed as its stream; the schema shows what the stream yields.
    provisioning_report_progress: AsyncGenerator[ProvisioningReportJob, None] = (
        strawberry.subscription(
            resolver=provisioning_report_progress,
            description="Progress of a report job until it ends; the last message carries "
            "the final state. Needs reports:read.",
            extensions=needs(REPORTS_READ),
        )
    )
