"""The configuration tables of the README, written from ``Settings``: each field's variable,
default and description, one table per group (``json_schema_extra={"group": ...}``).
``provgraph settings`` prints them; ``make docs`` rewrites them in README.md, between
``BEGIN`` and ``END``."""

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from server.settings import Settings

BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"

GROUPS = {
    "service": "Service",
    "authentication": "Authentication",
    "limits": "Limits",
    "upstream": "When the upstream falters",
}
"""Each group's caption, in the order the tables appear."""


def _cell(text: str) -> str:
    # A bare | ends a table cell, even within backticks.
    return text.replace("|", "\\|")


def _default(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "a development value"  # a secret is never printed, not even a built-in one
    if isinstance(value, list):
        return ", ".join(f"`{item}`" for item in value) or "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"  # as it is written in the environment
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def _group_and_meaning(name: str, info: FieldInfo) -> tuple[str, str]:
    extra = info.json_schema_extra
    group = extra.get("group") if isinstance(extra, dict) else None
    if not isinstance(group, str) or group not in GROUPS or not info.description:
        raise ValueError(
            f"Settings.{name} needs a description and a group, one of {', '.join(GROUPS)}"
        )
    return group, info.description


def settings_markdown() -> str:
    """A caption and a table (variable, default, meaning) for each group of settings."""
    rows: dict[str, list[str]] = {group: [] for group in GROUPS}
    for name, info in Settings.model_fields.items():
        group, meaning = _group_and_meaning(name, info)
        rows[group].append(f"| `{name.upper()}` | {_cell(_default(info))} | {_cell(meaning)} |")
    return "\n".join(
        f"**{caption}**\n\n| variable | default | meaning |\n| --- | --- | --- |\n"
        + "".join(f"{row}\n" for row in rows[group])
        for group, caption in GROUPS.items()
    )


def with_settings_tables(text: str) -> str:
    """``text`` with what lies between ``BEGIN`` and ``END`` replaced by the tables."""
    before, begin, rest = text.partition(BEGIN)
    _, end, after = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"no {BEGIN} line followed by an {END} line")
    return f"{before}{BEGIN}\n\n{settings_markdown()}\n{END}{after}"
