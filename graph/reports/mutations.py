"""Root mutations: start a report job, cancel one."""

import strawberry

from graph.context import Info
from graph.permissions import needs
from graph.recipes.types import UserError
from graph.reports.queries import report_job
from graph.reports.types import (
    ProvisioningReportInput,
    ProvisioningReportJob,
    StartProvisioningReportPayload,
    report_request,
)
from models.errors import UserErrorCode
from models.principal import REPORTS_WRITE
from resolvers.jobs import TooManyJobs
from resolvers.reports import ReportRequest, check_account_scope


async def start_provisioning_report(
    info: Info, input: ProvisioningReportInput
) -> StartProvisioningReportPayload:
    request = report_request(input, info.context.services.limits.report_max_devices)
    if not isinstance(request, ReportRequest):
        return StartProvisioningReportPayload(job=None, user_errors=request)
    check_account_scope(request, info.context.principal)
    try:
        job = await info.context.services.jobs.start(info.context.principal.subject, request)
    except TooManyJobs as error:
        refusal = UserError(field=["input"], code=UserErrorCode.TOO_MANY_JOBS, message=str(error))
        return StartProvisioningReportPayload(job=None, user_errors=[refusal])
    return StartProvisioningReportPayload(job=ProvisioningReportJob.of(job), user_errors=[])


async def cancel_provisioning_report(info: Info, id: strawberry.ID) -> ProvisioningReportJob | None:
    return await report_job(info, id, cancel=True)


@strawberry.type
class Mutation:
    start_provisioning_report: StartProvisioningReportPayload = strawberry.mutation(
        resolver=start_provisioning_report,
        description="A report job that belongs to the caller. Needs reports:write.",
        extensions=needs(REPORTS_WRITE),
    )
    cancel_provisioning_report: ProvisioningReportJob | None = strawberry.mutation(
        resolver=cancel_provisioning_report,
        description="Stops a job of the caller's. Needs reports:write.",
        extensions=needs(REPORTS_WRITE),
    )
