"""Root fields: a report computed now, and a report job."""

import strawberry

from graph.context import Info
from graph.errors import user_error
from graph.permissions import needs
from graph.relay import global_id, node_loader, parse_global_id
from graph.reports.types import (
    ProvisioningReport,
    ProvisioningReportInput,
    ProvisioningReportJob,
    report_of,
    report_request,
)
from models.principal import REPORTS_READ
from resolvers.reports import (
    Progress,
    ReportRequest,
    check_account_scope,
    report_devices,
    report_json,
    run_report,
)


async def provisioning_report(info: Info, input: ProvisioningReportInput) -> ProvisioningReport:
    services = info.context.services
    request = report_request(input, services.limits.report_max_devices)
    if not isinstance(request, ReportRequest):
        raise user_error("; ".join(f"{'.'.join(e.field)}: {e.message}" for e in request), "input")
    check_account_scope(request, info.context.principal)
    progress = Progress(cost=info.context.cost)
    # A whole account larger than a request may read fails here (REPORT_TOO_LARGE),
    # before any history is read.
    devices = await report_devices(
        services.upstream, progress.cost, request, at_most=services.limits.report_max_devices
    )
    spec = request.spec(devices)
    report = await run_report(
        services.upstream, spec, progress, services.limits.upstream_concurrency
    )
    return report_of(report_json(report, spec))


def job_id_of(value: str) -> str | None:
    """The job a global id names, or None for an id of something else."""
    type_name, parts = parse_global_id(value)
    return parts[0] if type_name == "ProvisioningReportJob" and len(parts) == 1 else None


async def report_job(info: Info, id: strawberry.ID, cancel: bool) -> ProvisioningReportJob | None:
    job_id = job_id_of(id)
    if job_id is None:
        return None
    jobs, owner = info.context.services.jobs, info.context.principal.subject
    job = await (jobs.cancel(job_id, owner) if cancel else jobs.get(job_id, owner, request=False))
    return ProvisioningReportJob.of(job) if job else None


async def provisioning_report_job(info: Info, id: strawberry.ID) -> ProvisioningReportJob | None:
    return await report_job(info, id, cancel=False)


@node_loader("ProvisioningReportJob")
async def job_node(info: Info, parts: list[str]) -> ProvisioningReportJob | None:
    return await report_job(info, global_id("ProvisioningReportJob", *parts), cancel=False)


@strawberry.type
class Query:
    provisioning_report: ProvisioningReport = strawberry.field(
        resolver=provisioning_report,
        description="A report over the devices' histories, computed in this request; "
        "for large fleets start a job instead (a whole account of more than "
        "REPORT_MAX_DEVICES devices fails with REPORT_TOO_LARGE). Its cost is in "
        "extensions.cost. Needs reports:read.",
        extensions=needs(REPORTS_READ),
    )
    provisioning_report_job: ProvisioningReportJob | None = strawberry.field(
        resolver=provisioning_report_job,
        description="A report job of the caller's, from any replica. Needs reports:read.",
        extensions=needs(REPORTS_READ),
    )
