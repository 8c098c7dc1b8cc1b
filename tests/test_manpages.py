"""The man pages: installed as collector/manpages.py makes them, naming every option of their
command and every setting of the configuration, rendered by man without a warning."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess

import pytest

from collector import manpages
from collector.capture import arm, config
from collector.cli import build_parser, build_rearrange_parser
from tests.conftest import REPO

MAN_DIR = REPO / "man"
REGENERATE = ".venv/bin/python -m collector.manpages"


def rendered(name: str) -> str:
    """What `man -l` shows of man/NAME on an 80-column terminal, as plain ASCII."""
    assert shutil.which("man"), "man is missing: ./dev setup installs man-db"
    proc = subprocess.run(["man", "--warnings", "-l", str(MAN_DIR / name)], capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C", "MANWIDTH": "80", "MAN_KEEP_FORMATTING": ""},
                          check=False)
    assert proc.returncode == 0 and proc.stderr == "", (name, proc.stderr)
    return proc.stdout


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and of its subcommands, and the subcommands' names."""
    found = set()
    for action in parser._actions:
        found |= set(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                found |= {name, *options_of(subparser)}
    return found


def says(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_installed_man_pages_are_what_the_parsers_and_the_example_configuration_make():
    generated = manpages.pages()
    assert sorted(generated) == sorted(path.name for path in MAN_DIR.iterdir())
    stale = [name for name, text in generated.items() if (MAN_DIR / name).read_text() != text]
    assert not stale, f"man/{stale} differ from what the parsers make now: run {REGENERATE}"
    setup = (REPO / "setup.py").read_text()
    assert all(f'"man/{name}"' in setup for name in generated)  # installed with the package


@pytest.mark.parametrize(("page", "parser"), [("vmcore-save.8", build_parser), ("vmcore-rearrange.8",
                                              build_rearrange_parser), ("vmcore-collector.8", arm.build_parser)])
def test_a_command_page_names_every_option_and_subcommand_and_renders_without_warnings(page, parser):
    text = rendered(page)
    options = options_of(parser())
    assert options and not [option for option in options if not says(text, option)]
    assert all(says(text, section) for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS"))


def test_the_makedumpfile_options_have_their_own_section_in_vmcore_save_8():
    text = rendered("vmcore-save.8")
    section = text[text.index("makedumpfile's options"):]
    assert all(says(section, flag) for flag in ("-c", "-l", "-p", "-z", "-E", "-F", "--num-threads",
                                                "--message-level"))
    assert "lzo is not written" in section and "-o DUMPFILE" in section


def test_the_configuration_page_describes_every_setting_and_only_settings_that_exist():
    text = rendered("vmcore-collector.conf.5")
    plural = {"targets": "target", "pre_hooks": "pre_hook", "post_hooks": "post_hook"}
    keys = [plural.get(f.name, f.name) for f in dataclasses.fields(config.Config) if f.name != "warnings"]
    assert not [key for key in keys if not says(text, key)]
    # Every example setting on the page is one the parser knows.
    examples = re.findall(r"^ +([a-z_]+ = .+)$", text, re.M)
    assert {example.split()[0] for example in examples} == set(keys)
    for example in examples:
        try:
            config.parse(example)
        except config.ConfigError as e:
            assert "unknown setting" not in str(e), example


def readme_section(title: str) -> str:
    """README's ``### title`` section, up to the next heading of its level or above."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n### {title}\n")
    end = re.search(r"\n##? ", text[start + 1:])
    return text[start:start + 1 + end.start()] if end else text[start:]


@pytest.mark.parametrize(("title", "parser"), [("vmcore-save", build_parser), ("vmcore-rearrange",
                                               build_rearrange_parser), ("vmcore-collector", arm.build_parser)])
def test_the_readme_section_of_each_command_lists_every_option(title, parser):
    section = readme_section(title)
    assert not [option for option in options_of(parser()) if not says(section, option)]


def test_the_readme_table_for_makedumpfile_users_says_what_each_flag_becomes():
    section = readme_section("Coming from makedumpfile")
    for flag, becomes in (("-c", "--compress zlib"), ("-z", "--compress zstd"), ("-E", "--format elf"),
                          ("-F", "--format flat"), ("-R", "vmcore-rearrange"), ("--num-threads N", "--threads N"),
                          ("-l", "zstd level -3"), ("--message-level N", "-q")):
        row = next(line for line in section.splitlines() if line.startswith(f"| `{flag}"))
        assert becomes in row, row
