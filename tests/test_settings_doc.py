"""The README's configuration tables are generated from ``Settings`` (``make docs``) and must
not drift from it; ``provgraph settings`` and ``provgraph --version``."""

import re
from importlib.metadata import version
from pathlib import Path

import pytest

from server.cli import main
from server.settings import Settings
from server.settings_doc import BEGIN, END, settings_markdown, with_settings_tables

README = Path(__file__).parent.parent / "README.md"
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")


def rows() -> dict[str, list[str]]:
    """Each generated table row's cells (default, meaning), by variable."""
    found: dict[str, list[str]] = {}
    for line in settings_markdown().splitlines():
        match = re.fullmatch(r"\| `([A-Z0-9_]+)` (.*)", line)
        if match:
            cells = [cell.strip() for cell in CELL_SEPARATOR.split(match[2])]
            assert (cells[0], cells[-1]) == ("", ""), line
            assert match[1] not in found, f"{match[1]} is listed twice"
            found[match[1]] = cells[1:-1]
    return found


def test_readme_tables_are_the_generated_ones():
    text = README.read_text(encoding="utf-8")
    no_section = (
        f"README.md has no {BEGIN} ... {END} section for the configuration tables: "
        "add the two lines, then run make docs"
    )
    assert BEGIN in text, no_section
    assert END in text, no_section
    assert with_settings_tables(text) == text, (
        "README.md's configuration tables differ from server/settings.py: run make docs"
    )


def test_every_setting_has_one_row_of_three_cells():
    listed = rows()
    assert set(listed) == {name.upper() for name in Settings.model_fields}
    # RATE_LIMIT's meaning holds "N/second|minute|hour|day": its pipes must not split it.
    assert all(len(cells) == 2 for cells in listed.values()), listed
    assert "N/second|minute|hour|day" in listed["RATE_LIMIT"][1].replace("\\|", "|")


def test_defaults_are_shown_as_they_are_written_in_the_environment(monkeypatch):
    listed = rows()
    written = {}
    for variable, (default, _) in listed.items():
        if default.startswith("`"):
            written[variable.lower()] = default.strip("`").replace("\\|", "|")
            monkeypatch.setenv(variable, written[variable.lower()])
    assert {"uws_timeout_s", "auth_disabled", "log_format", "rate_limit"} <= set(written)
    # Every default shown, set in the environment, gives the field its default back.
    configured = Settings(_env_file=None)
    for name in written:
        assert getattr(configured, name) == Settings.model_fields[name].default, name
    assert listed["AUTH_JWT_LEEWAY_S"][0] == "`30`"
    assert listed["UWS_BASE_URL"][0] == "unset"
    assert listed["ALLOWED_ORIGINS"][0] == "none"
    # The built-in cursor secret is only named, never printed.
    assert listed["CURSOR_SECRET"][0] == "a development value"
    built_in = Settings.model_fields["cursor_secret"].default.get_secret_value()
    assert built_in not in settings_markdown()


def test_only_the_marked_section_is_rewritten():
    text = f"# Title\n\nbefore\n\n{BEGIN}\n| a hand-written row |\n{END}\n\nafter\n"
    rewritten = with_settings_tables(text)
    assert rewritten.startswith(f"# Title\n\nbefore\n\n{BEGIN}\n")
    assert rewritten.endswith(f"\n{END}\n\nafter\n")
    assert settings_markdown() in rewritten
    assert "a hand-written row" not in rewritten
    assert with_settings_tables(rewritten) == rewritten


@pytest.mark.parametrize(
    "text", ["no markers\n", f"{BEGIN}\nno end\n", f"{END}\nend first\n{BEGIN}\n"]
)
def test_a_text_without_the_section_is_refused(text):
    with pytest.raises(ValueError, match="settings:begin"):
        with_settings_tables(text)


def test_provgraph_settings_rewrites_a_readme(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{BEGIN}\n{END}\n", encoding="utf-8")
    main(["settings", "--readme", str(readme)])
    assert (
        readme.read_text(encoding="utf-8") == f"intro\n\n{BEGIN}\n\n{settings_markdown()}\n{END}\n"
    )
    main(["settings"])
    assert capsys.readouterr().out == settings_markdown()

    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"provgraph settings: .*settings:begin"):
        main(["settings", "--readme", str(readme)])
    assert readme.read_text(encoding="utf-8") == "no markers\n"


def test_provgraph_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"provgraph {version('provisioning-graph')}\n"
