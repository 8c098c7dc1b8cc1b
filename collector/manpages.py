"""The man pages: vmcore-save(8), vmcore-rearrange(8) and vmcore-collector(8) list every option
of the commands' argument parsers with its help text; vmcore-collector.conf(5) is the example
configuration that ships (initramfs/vmcore-collector.conf), each of its comment blocks the
description of the settings under it. Only the prose around them is written here, so a page
cannot name an option the command lacks, or miss one.

``python -m collector.manpages [DIR]`` writes them into DIR (default man/); setup.py installs
the files in man/, and tests/test_manpages.py checks that they are this module's output."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .capture import arm
from .capture.paths import CONFIG_PATH
from .cli import HELP, REARRANGE, build_parser, build_rearrange_parser
from .errors import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE
from .integrity import EXIT_DAMAGED, EXIT_INTACT, EXIT_NO_MANIFEST
from .progress import PROGRAM
from .savejob import LOG_NAME
from .version import DISTRIBUTION, version

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "initramfs" / "vmcore-collector.conf"
DEFAULT_DIR = REPO / "man"


def escape(text: str) -> str:
    """``text`` as roff source: backslashes and hyphens escaped, no line starting a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _bold(text: str) -> str:
    return f"\\fB{escape(text)}\\fR"


def _italic(text: str) -> str:
    return f"\\fI{escape(text)}\\fR"


@dataclass(frozen=True)
class Section:
    title: str
    roff: str  # the body, roff source


def prose(*paragraphs: str) -> str:
    return "\n.PP\n".join(escape(paragraph) for paragraph in paragraphs)


def _option_heading(action: argparse.Action) -> str:
    if not action.option_strings:
        return _italic(str(action.metavar or action.dest))
    takes_value = action.nargs != 0 and not isinstance(action, (argparse._StoreConstAction, argparse._StoreTrueAction))
    value = f" {_italic(str(action.metavar or action.dest.upper()))}" if takes_value else ""
    return ", ".join(_bold(option) for option in action.option_strings) + value


def options_roff(actions: Iterable[argparse.Action]) -> str:
    """One tagged paragraph per option: its spellings and value, then its help text."""
    return "\n".join(f".TP\n{_option_heading(action)}\n{escape(action.help or '')}" for action in actions
                     if action.help != argparse.SUPPRESS)


def parser_sections(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> list[Section]:
    """OPTIONS and a subsection per argument group of ``parser`` (positionals first), leaving out
    the options named in ``skip``."""
    body = []
    for group in parser._action_groups:
        actions = [action for action in group._group_actions
                   if not isinstance(action, argparse._SubParsersAction) and not set(action.option_strings) & set(skip)]
        if not actions:
            continue
        if group.title not in ("positional arguments", "options"):
            body.append(f".SS {escape(group.title or '')}")
            if group.description:
                body.append(escape(group.description))
        body.append(options_roff(actions))
    return [Section("OPTIONS", "\n".join(body))]


def page(name: str, section: int, summary: str, synopsis: str, sections: list[Section]) -> str:
    header = (f'.TH {name.upper()} {section} "" "{DISTRIBUTION} {version()}" '
              f'"{"System Administration" if section == 8 else "File Formats"}"\n'
              ".nh\n.ad l\n"
              f".SH NAME\n{escape(name)} \\- {escape(summary)}\n.SH SYNOPSIS\n{synopsis}\n")
    return header + "".join(f".SH {section.title}\n{section.roff}\n" for section in sections)


def _usage(parser: argparse.ArgumentParser) -> str:
    """The parser's own usage line, as a synopsis: the program in bold."""
    usage = " ".join(parser.format_usage().removeprefix("usage: ").split())
    program, _, rest = usage.partition(" ")
    return f"{_bold(program)} {escape(rest)}\n.br"


def _see_also(*pages: str) -> Section:
    """SEE ALSO for ``name(section)`` entries: each name in bold."""
    return Section("SEE ALSO", ",\n".join(f"{_bold(name)}({number}" for name, number in
                                          (entry.split("(") for entry in pages)))


def vmcore_save_page() -> str:
    usage = HELP.splitlines()[0].removeprefix("usage: ").removeprefix(PROGRAM).strip()
    description = Section("DESCRIPTION", prose(
        f"{PROGRAM} saves the memory of a crashed Linux kernel, /proc/vmcore in the kdump capture kernel, "
        "as a kdump-compressed dump that crash, drgn and libkdumpfile open. It leaves out the pages an analyst "
        "does not need by makedumpfile's dump levels and compresses each page (zstd by default).",
        f"With DEST (a directory, nfs:// or ssh://) it creates DEST/<host>-<date>/ and saves there the crashed "
        f"kernel's log ({LOG_NAME}), the triage record (vmcore-triage.txt and vmcore-triage.json), then the dump: "
        "written as vmcore-incomplete and renamed to vmcore only when complete, with its integrity manifest "
        "beside it. A dump cut short (a full disk, a failing target) stays a valid file, flagged incomplete; "
        "with --fallback the whole dump is then saved again on the next destination. With --output it writes "
        "exactly one file and nothing else. Nothing is ever written over: an existing file is replaced "
        "(--force) only by a complete one.",
        f"Run with no arguments while {CONFIG_PATH} exists (as in the capture kernel's emergency shell), "
        "it does the configured job: see vmcore-collector.conf(5).",
        "Every problem is one line naming its object and what to do; --help prints a summary that fits an "
        "80x24 console, --help-all adds makedumpfile's options."))
    exit_status = Section("EXIT STATUS", prose(
        f"{EXIT_OK}: saved. {EXIT_FAILED}: failed (no destination took the dump). {EXIT_USAGE}: bad input "
        f"(an option, the vmcore, the configuration), nothing written. {EXIT_INCOMPLETE}: saved incomplete "
        "but readable.",
        f"--info and --triage: {EXIT_OK} for a complete vmcore or dump, {EXIT_INCOMPLETE} for a dump with "
        f"pages missing, {EXIT_USAGE} for a file that cannot be read. --verify: {EXIT_INTACT} intact, "
        f"{EXIT_DAMAGED} damaged (the ranges that differ are named), {EXIT_NO_MANIFEST} no manifest."))
    files = Section("FILES", f".TP\n{_bold(CONFIG_PATH)}\nthe configured job, used when no argument is given")
    return page(PROGRAM, 8, "save a crashed kernel's memory as a dump that crash and drgn open",
                f"{_bold(PROGRAM)} {escape(usage)}",
                [description, *parser_sections(build_parser()), exit_status, files,
                 _see_also("vmcore-rearrange(8)", "vmcore-collector(8)", "vmcore-collector.conf(5)",
                           "makedumpfile(8)", "crash(8)")])


def vmcore_rearrange_page() -> str:
    parser = build_rearrange_parser()
    description = Section("DESCRIPTION", prose(
        f"{REARRANGE} reads a flattened stream (vmcore-save --format flat, or makedumpfile -F) from FLAT or "
        "standard input and writes the kdump-compressed file it carries, as makedumpfile -R does. OUTPUT is "
        "written as a new file and appears only once complete; a stream cut short is refused with one line."))
    exit_status = Section("EXIT STATUS", prose(f"{EXIT_OK}: written. {EXIT_USAGE}: bad input (a stream cut short "
                                               f"or malformed, an existing OUTPUT without --force). "
                                               f"{EXIT_FAILED}: the output could not be written."))
    return page(REARRANGE, 8, "rebuild a kdump file from a flattened stream", _usage(parser),
                [description, *parser_sections(parser), exit_status,
                 _see_also("vmcore-save(8)", "makedumpfile(8)")])


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return commands


def vmcore_collector_page() -> str:
    parser = arm.build_parser()
    commands = _subcommands(parser)
    summaries = {choice.dest: choice.help or "" for choice in commands._choices_actions}
    common = ("-h", "--help", "--version")
    body = []
    for name, subparser in commands.choices.items():
        body.append(f".SS {escape(name)}\n{_usage(subparser)}\n{escape(summaries[name].capitalize())}"
                    + ("" if summaries[name].endswith(("?", ".")) else "."))
        actions = [action for action in subparser._actions if not set(action.option_strings) & set(common)]
        body.append(options_roff(actions))
    description = Section("DESCRIPTION", prose(
        f"{arm.PROGRAM} prepares a machine so that a crash is captured with no human: build-initramfs makes "
        "the capture initramfs with dracut (Python with only the modules the collector needs, the collector, "
        f"the configuration {CONFIG_PATH}, the SSH key and known_hosts, the kernel modules the targets need), "
        "arm loads it with kexec -p as the capture kernel's initramfs, disarm unloads it, status says whether "
        "a crash is going to be captured. After a crash the capture kernel runs vmcore-save's configured job "
        "and then the configured final action.",
        "These commands change the running system: run them on the machine to protect."))
    options = Section("OPTIONS", options_roff(action for action in parser._actions
                                              if set(action.option_strings) & set(common)))
    exit_status = Section("EXIT STATUS", prose(f"{EXIT_OK}: done (status: a crash is going to be captured). "
                                               f"{EXIT_FAILED}: failed (status: it is not). "
                                               f"{EXIT_USAGE}: bad input (an option, the configuration)."))
    files = Section("FILES", "\n".join([
        f".TP\n{_bold(CONFIG_PATH)}\nthe configuration: vmcore-collector.conf(5)",
        f".TP\n{_bold(arm.DEFAULT_IMAGE_DIR + '/initrd-V.img')}\nthe capture initramfs for kernel release V",
        f".TP\n{_bold('vmcore-collector.service')}\nthe unit that arms at boot (rebuilding the image first "
        "when the configuration is newer)"]))
    return page(arm.PROGRAM, 8, "capture crashes automatically: build the capture initramfs, arm, check",
                f"{_bold(arm.PROGRAM)} {_italic('COMMAND')} [{_italic('options')}]",
                [description, options, Section("COMMANDS", "\n".join(body)), exit_status, files,
                 _see_also("vmcore-collector.conf(5)", "vmcore-save(8)", "kexec(8)", "dracut(8)")])


def config_page(example: str | None = None) -> str:
    """vmcore-collector.conf(5) from the example configuration: its first comment block is the
    description; every later block describes the settings that follow it."""
    text = EXAMPLE_CONFIG.read_text() if example is None else example
    blocks = [block.splitlines() for block in re.split(r"\n\s*\n", text.strip())]
    # "# /etc/vmcore-collector.conf: what it is." heads the file: the page's summary.
    summary = blocks[0][0].lstrip("#").strip().removeprefix(f"{CONFIG_PATH}:").strip().rstrip(".")
    description = " ".join(line.lstrip("#").strip() for line in blocks[0][1:])
    body = []
    for block in blocks[1:]:
        comments = [line[1:] for line in block if line.startswith("#") and not _SETTING.match(line)]
        settings = [line.lstrip("#").strip() for line in block if _SETTING.match(line)]
        keys = list(dict.fromkeys(_SETTING.match(line).group(1) for line in settings))  # type: ignore[union-attr]
        body.append(".TP\n" + ", ".join(_bold(key) for key in keys))
        body.append(_comment_roff(comments))
        body.append(".IP\nExample" + ("s" if len(settings) > 1 else "") + ":\n.nf\n"
                    + "\n".join(escape(line) for line in settings) + "\n.fi")
    description_section = Section("DESCRIPTION", prose(
        f"{CONFIG_PATH}: {summary}. {arm.PROGRAM} build-initramfs copies it into the capture initramfs. "
        + description,
        f"Instead of it, {arm.PROGRAM} can {_other_configurations()}: see vmcore-collector(8)."))
    return page("vmcore-collector.conf", 5, summary,
                _bold(CONFIG_PATH),
                [description_section, Section("SETTINGS", "\n".join(body)),
                 _see_also("vmcore-collector(8)", "vmcore-save(8)", "kdump.conf(5)")])


def _other_configurations() -> str:
    """What vmcore-collector reads instead of our file, as its options say (``read X instead of
    --config``): "read X with --option FILE; ..."."""
    build = _subcommands(arm.build_parser()).choices["build-initramfs"]
    return "; ".join(f"{(action.help or '').replace(' instead of --config', '')} with {action.option_strings[0]} "
                     f"{action.metavar}" for action in build._actions if "instead of --config" in (action.help or ""))


# A setting line of the example: "key = value", commented out or not.
_SETTING = re.compile(r"^#?([a-z_]+) = ")


def _comment_roff(comments: list[str]) -> str:
    """A comment block as roff: prose lines filled, lines indented by more than one blank (syntax,
    tables) kept as they are."""
    out: list[str] = []
    verbatim = False
    for line in comments:
        literal = line.startswith("  ")
        if literal != verbatim:
            out.append(".nf" if literal else ".fi")
            verbatim = literal
        out.append(escape(line.strip() if not literal else line[1:]))
    if verbatim:
        out.append(".fi")
    return "\n".join(out)


PAGES = {"vmcore-save.8": vmcore_save_page, f"{REARRANGE}.8": vmcore_rearrange_page,
         f"{arm.PROGRAM}.8": vmcore_collector_page, "vmcore-collector.conf.5": config_page}


def pages() -> dict[str, str]:
    """File name -> roff source of every page."""
    return {name: make() for name, make in PAGES.items()}


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    directory = Path(arguments[0]) if arguments else DEFAULT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in pages().items():
        (directory / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
