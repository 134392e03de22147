"""Config files that build on one another: a YAML whose first line is `# base: PATH` stacks PATH (and PATH's own base,
recursively) before it, exactly as if each had been given with its own `--config`, in order. LightningCLI merges
stacked configs key by key (lists are replaced, or extended with `key+:`), so a config states only what it changes:
the experiments share experiments/base/*.yaml, and each ablation row names the row it adds to."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

BASE_LINE = "# base:"


class ConfigChainError(ValueError):
    pass


def named_base(config: Path) -> Path | None:
    """The config a file names on its first line, found from the working directory or from the file's folders up."""
    first = Path(config).read_text().splitlines()[:1]
    if not first or not first[0].startswith(BASE_LINE):
        return None
    name = Path(first[0][len(BASE_LINE) :].strip())
    for root in (Path.cwd(), *Path(config).resolve().parents):
        if (root / name).is_file():
            return (root / name).resolve()
    raise ConfigChainError(f"{config}: its base {name} is not found")


def config_chain(config: Path) -> list[Path]:
    """The files to stack for a config, its farthest base first and itself last."""
    chain = [Path(config).resolve()]
    while (parent := named_base(chain[0])) is not None:
        if parent in chain:
            raise ConfigChainError(f"{config}: its chain of bases loops at {parent}")
        chain.insert(0, parent)
    return chain


def expand_config_args(args: list[str]) -> list[str]:
    """Command-line arguments with every `--config FILE` preceded by its chain of bases (each file once)."""
    expanded, seen, index = [], set(), 0
    while index < len(args):
        arg = args[index]
        value = None
        if arg == "--config" and index + 1 < len(args):
            value, index = args[index + 1], index + 2
        elif arg.startswith("--config="):
            value, index = arg.split("=", 1)[1], index + 1
        else:
            expanded.append(arg)
            index += 1
            continue
        if not Path(value).is_file():  # an inline YAML string or a missing file: LightningCLI reports it
            expanded += ["--config", value]
            continue
        for path in config_chain(Path(value)):
            if path not in seen:
                seen.add(path)
                expanded += ["--config", str(path)]
    return expanded


def merged_config(paths: list[Path]) -> dict:
    """The configs stacked as LightningCLI stacks them, from the YAML alone (nothing is built): mappings merge key by
    key, other values and lists are replaced, `key+:` extends a list."""
    merged: dict = {}
    for path in paths:
        _merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    return merged


def _merge(into: dict, config: dict) -> None:
    for key, value in config.items():
        if key.endswith("+"):
            name = key[:-1]
            into[name] = list(into.get(name) or []) + list(value or [])
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def flat(config: dict, prefix: str = "") -> dict[str, object]:
    """{dotted key: value} of a config's leaves (lists are leaves)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flat(value, f"{name}.")
        else:
            out[name] = value
    return out


def differences(base: dict, config: dict) -> list[str]:
    """`key: base value -> value` for every dotted key the config sets differently from the base."""
    old, new = flat(base), flat(config)
    shown = lambda value: json.dumps(value, ensure_ascii=False) if value is not ... else "(unset)"  # noqa: E731
    return [
        f"{key}: {shown(old.get(key, ...))} -> {shown(new.get(key, ...))}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, ...) != new.get(key, ...)
    ]
