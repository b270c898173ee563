"""All configuration, read once from the environment and an optional ``.env`` file."""

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from soap.simulator.server import MOUNT as SIMULATOR_MOUNT

SIMULATOR_USERNAME = "demo"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    uws_base_url: str | None = Field(
        default=None,
        description="The UWS v2 base URL, e.g. https://<host>/api/v2. Unset: the embedded "
        "simulator, served by this process at /simulator/api/v2.",
    )
    uws_token: SecretStr | None = Field(
        default=None, description="A fixed UWS session token; takes precedence over a login."
    )
    uws_username: str | None = Field(default=None, description="UWS login user name.")
    uws_password: SecretStr | None = Field(default=None, description="UWS login password.")
    uws_timeout_s: float = Field(
        default=10.0, gt=0, description="Upper bound on one upstream call, seconds."
    )
    database_url: str = Field(
        default="sqlite+aiosqlite:///./provgraph.db", description="SQLAlchemy async URL."
    )
    cache_url: str = Field(default="memory://", description="memory:// or redis://host:port/db")
    broker_url: str = Field(default="memory://", description="memory:// or redis://host:port/db")
    cache_max_events: int = Field(
        default=200_000,
        ge=1,
        description="Bound of the in-process cache, in events and devices held (LRU).",
    )
    cache_settle_s: float = Field(
        default=3600.0,
        ge=0,
        description="A window whose range ended this long ago is taken as final.",
    )
    cache_ttl_immutable_s: float = Field(
        default=7 * 86_400.0, gt=0, description="Lifetime of a final window in the cache."
    )
    cache_ttl_recent_s: float = Field(
        default=30.0,
        gt=0,
        description="Lifetime of a window that touches the present; also the rounding of "
        "the default occurredBefore.",
    )
    device_list_ttl_s: float = Field(
        default=300.0, gt=0, description="Lifetime of a cached GetDeviceList page."
    )
    cursor_secret: SecretStr = Field(
        default=SecretStr("provisioning-graph-development-cursor-secret"),
        description="Signs cursors. Set the same value on every replica in production.",
    )
    upstream_concurrency: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Upstream calls in flight at once, for the whole process (reports "
        "read this many devices at a time).",
    )
    outbox_retention_s: float = Field(
        default=7 * 86_400.0,
        gt=0,
        description="How long emitted events are kept for replay (subscriptions' after).",
    )
    subscriber_queue_size: int = Field(
        default=1000,
        ge=1,
        description="Events one subscriber may fall behind before it is dropped.",
    )
    events_poll_s: float = Field(
        default=5.0,
        gt=0,
        description="How often each replica also reads the outbox unprompted, so that a "
        "broker outage delays events but never loses them.",
    )
    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to bind.")
    log_level: str = Field(default="info", description="Python log level name.")

    @property
    def uses_simulator(self) -> bool:
        return not self.uws_base_url

    @property
    def upstream_url(self) -> str:
        if self.uws_base_url:
            return self.uws_base_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}{SIMULATOR_MOUNT}"

    def upstream_credentials(self) -> dict[str, str | None]:
        """Keyword arguments for the UWS client; the simulator's demo login by default."""
        if self.uws_token:
            return {"token": self.uws_token.get_secret_value()}
        if self.uws_username and self.uws_password:
            return {
                "username": self.uws_username,
                "password": self.uws_password.get_secret_value(),
            }
        if self.uses_simulator:
            return {"username": SIMULATOR_USERNAME, "password": SIMULATOR_USERNAME}
        raise ValueError(
            "UWS_BASE_URL is set, so UWS_TOKEN or UWS_USERNAME and UWS_PASSWORD must be too"
        )
