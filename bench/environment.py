"""What a benchmark's service runs with, said in its output: the figures hold for the
defaults, and a default that moves a figure out of its bar must show up here."""

from collections.abc import Mapping

_NOT_SHOWN = ("AUTH_JWT_", "UWS_USERNAME", "UWS_PASSWORD")
"""The benchmark's own identity provider and the simulator's login: not tuning."""


def settings_line(environment: Mapping[str, str]) -> str:
    overrides = [
        f"{name}={value}"
        for name, value in sorted(environment.items())
        if not name.startswith(_NOT_SHOWN)
    ]
    return "service settings: the defaults, except " + (", ".join(overrides) or "none")
