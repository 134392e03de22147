"""One way to declare a command's options: a frozen dataclass (one field, one docstring line, `Literal` for choices)
parsed by jsonargparse, as LightningCLI parses the training options. Every command therefore takes `--config FILE`
(YAML of its fields), `--print_config` and `--help` (each field's docstring, type and default), and validates types and
choices before anything runs; a dataclass's `__post_init__` checks ranges. Each default exists once, in its field.

Spelling on the command line: `--num_frames 8` and `--num-frames 8` are the same option; a list takes its values
space-separated (`--questions a.jsonl b.jsonl`), as JSON (`--questions '[a.jsonl]'`) or repeated with `+`
(`--questions+ a.jsonl`); a boolean is `--flag`, `--no-flag` or `--flag=false`. An error is one line, `error: ...`,
exit status 2; `--debug` shows the traceback of an error while running.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from jsonargparse import ActionConfigFile
from jsonargparse import ArgumentParser as JsonArgumentParser

from llavaction.utils.errors import run_cli


class ArgumentParser(JsonArgumentParser):
    """jsonargparse's parser with a one-line error (`error: ...`, exit status 2) instead of the usage text."""

    def error(self, message: str, ex: Exception | None = None):
        print(f"error: {one_line(message)}", file=sys.stderr)
        raise SystemExit(2)


def one_line(message: str) -> str:
    """jsonargparse's multi-line messages ('Parser key "mode":\\n  Expected ...') on one line; a value outside an
    option's choices as `--mode: expected one of generate, score, got scor`; a value that no type of an optional
    option takes as the one reason that matters (`--data.train: task 'mqaa' not in ...`), not every type's."""
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    key = re.search(r'Parser key "([^"]+)"', text)
    choices = re.search(r"Literal\[([^\]]*)\]", text)
    given = re.search(r"(?:Given|Got) value: (.*?)(?: Subtypes:|$)", text)
    if key and choices and given:
        listed = ", ".join(choice.strip().strip("'\"") for choice in choices.group(1).split(","))
        optional = " (or null)" if "NoneType" in text else ""
        return f"--{key.group(1)}: expected one of {listed}{optional}, got {given.group(1).strip()}"
    union = re.search(
        r"Does not validate against any of the Union subtypes .*?Errors: (.*?)(?: Given value type:|$)", text
    )
    if key and union:
        reasons = [r.strip() for r in re.split(r"(?:^|\s)- ", union.group(1)) if r.strip() and "NoneType" not in r]
        if len(reasons) == 1:  # the one type the option takes besides null
            reason = re.sub(r"^Not of type \w+: ", "", reasons[0])
            reason = re.sub(r"^Expected a <class '(\w+)'>", r"expected a \1", reason)
            given = re.search(r"Given value type: <class '(\w+)'>", text)
            reason += f", given a {given.group(1)}" if given and reason.startswith("expected a") else ""
            return f"--{key.group(1)}: {reason}"
    return text


@dataclass(frozen=True)
class Command:
    """A command: its options dataclass and the function that runs it (returns the exit status)."""

    options: type
    run: Callable[[Any], int]
    help: str = ""


def _fields(options: type) -> dict[str, Any]:
    hints = typing.get_type_hints(options)
    return {f.name: hints[f.name] for f in dataclasses.fields(options)}


def _is_list(kind) -> bool:
    if get_origin(kind) in (list, tuple):
        return True
    return any(_is_list(arg) for arg in get_args(kind) if arg is not type(None)) if get_origin(kind) else False


def _is_bool(kind) -> bool:
    return kind is bool or (get_origin(kind) is not None and bool in get_args(kind) and len(get_args(kind)) <= 2)


def normalize(args: list[str], options: type) -> tuple[list[str], bool]:
    """The arguments in jsonargparse's spelling: dashes in option names become underscores, a list given as several
    values becomes one JSON list, a bare boolean flag `--x` becomes `--x=true` and `--no-x` `--x=false`; tokens that
    follow no option go to the options' POSITIONAL field. Returns them and whether --debug was given."""
    import json

    kinds = _fields(options)
    positional = getattr(options, "POSITIONAL", None)
    out, stray, debug, index = [], [], False, 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--debug":
            debug = True
            continue
        if not arg.startswith("--") or arg == "--":
            stray.append(arg)
            continue
        name, equals, value = arg[2:].partition("=")
        plus = name.endswith("+")
        name = name.rstrip("+").replace("-", "_")
        if name.startswith("no_") and name[3:] in kinds and _is_bool(kinds[name[3:]]) and not equals:
            out.append(f"--{name[3:]}=false")
            continue
        if name not in kinds:  # jsonargparse's own (--config, --print_config) or unknown: its values as given
            out.append(f"--{name}{'+' if plus else ''}" + (f"={value}" if equals else ""))
            while not equals and index < len(args) and not args[index].startswith("--"):
                out.append(args[index])
                index += 1
            continue
        values = [value] if equals else []
        while not equals and index < len(args) and not args[index].startswith("--"):
            values.append(args[index])
            index += 1
            if not _is_list(kinds[name]):
                break
        if not values and _is_bool(kinds[name]):
            values = ["true"]
        if _is_list(kinds[name]) and not plus and len(values) >= 1 and not values[0].lstrip().startswith("["):
            values = [json.dumps(values)]
        out.append(f"--{name}{'+' if plus else ''}")
        out += values
    if stray:
        if positional is None:
            raise SystemExit(_fail(f"unexpected argument {stray[0]!r}"))
        out += [f"--{positional}", json.dumps(stray) if _is_list(kinds[positional]) else stray[0]]
    return out, debug


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def parser_for(options: type, prog: str, description: str | None = None) -> ArgumentParser:
    summary = (description or options.__doc__ or "").split("\n\n")[0]
    parser = ArgumentParser(prog=prog, description=summary, exit_on_error=True)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_class_arguments(options, nested_key=None, as_group=False)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def parse(options: type, args: list[str], prog: str, description: str | None = None):
    """The options dataclass built from the command line (its __post_init__ checks run when it is built), and
    whether --debug was given. A parse error exits with one line."""
    normalized, debug = normalize(args, options)
    namespace = parser_for(options, prog, description).parse_args(normalized)
    values = {name: namespace.get(name) for name in _fields(options)}
    return values, debug or bool(namespace.get("debug"))


def main_of(options: type, run: Callable[[Any], int], prog: str, description: str | None = None):
    """The `main(argv)` of a command with one options dataclass."""

    def main(argv: list[str] | None = None) -> int:
        values, debug = parse(options, sys.argv[1:] if argv is None else list(argv), prog, description)
        return run_cli(lambda: run(options(**values)), debug=debug)

    return main


def dispatch(commands: dict[str, Command], argv: list[str] | None, prog: str, description: str) -> int:
    """`prog <command> [options]`: the command's options parsed and run; `--help` lists the commands."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        width = max(len(name) for name in commands)
        lines = [description, "", f"usage: {prog} <command> [options]   ({prog} <command> --help)", "", "commands:"]
        lines += [f"  {name:<{width}}  {command.help}" for name, command in commands.items()]
        print("\n".join(lines))
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in commands:
        return _fail(f"unknown command {name!r}; expected one of {', '.join(commands)}")
    command = commands[name]
    return main_of(command.options, command.run, f"{prog} {name}", command.help or None)(rest)
