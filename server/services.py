"""What the server holds for the process's lifetime, around the GraphQL layer's services."""

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from graph.context import Context, Services
from models.principal import Principal
from resolvers.auth import Authenticator
from server.development import client_address, is_local
from server.ratelimit import RateLimits
from server.settings import Settings
from soap.client import UwsClient


@dataclass
class ServerServices(Services):
    settings: Settings
    uws: UwsClient
    engine: AsyncEngine
    authenticator: Authenticator
    rate_limits: RateLimits


def services_of(connection: HTTPConnection) -> ServerServices:
    services: ServerServices = connection.app.state.services
    return services


def services_of_context(context: Context) -> ServerServices:
    """The server's services behind a GraphQL context, which the server made."""
    services = context.services
    if not isinstance(services, ServerServices):
        raise TypeError("a GraphQL context made outside the server")
    return services


def context_for(connection: HTTPConnection, principal: Principal) -> Context:
    return Context(
        services=services_of(connection),
        principal=principal,
        local=is_local(connection),
        client_address=client_address(connection),
    )
