"""From ``recipe=NAME key.sub=value ...`` to a validated, typed config.

The dataclass schemas in :mod:`dllm_rl.config` are the source of truth; a YAML recipe and the
command-line overrides are merged onto them, in that order. Validation runs in two passes, both
before anything expensive loads:

1. our own walk over the nested keys, so that an unknown or misspelled key names its close
   matches with the full dotted path (``traning.lr`` -> did you mean ``training.lr``?);
2. pydantic's ``TypeAdapter`` over the (standard-library) dataclasses for the types: a wrong type
   says the expected type, a ``Literal`` lists its choices, and every ``__post_init__`` check runs.

OmegaConf/Hydra are not used: they pin ``antlr4-python3-runtime==4.9.*``, which would downgrade the
antlr that math-verify's LaTeX parser is built for.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

if typing.TYPE_CHECKING:  # importlib.resources.abc is Python 3.11+
    from importlib.resources.abc import Traversable

RUN_KEYS = (
    "output_dir",
    "seed",
    "max_steps",
    "save_steps",
    "eval_steps",
    "logging_steps",
    "report_to",
    "resume_from",
    "dry_run",
    "print_config",
)
"""Run-level keys accepted at the top level of the command line; they live in ``run.*``."""


class ConfigError(ValueError):
    """A recipe or override that does not fit the schema; the message says how to fix it."""


# ----------------------------------------------------------------------------- command line
def parse_overrides(argv: Sequence[str]) -> tuple[str | None, dict[str, Any], bool]:
    """Split ``recipe=NAME a.b=1 c=x`` into the recipe, a nested override dict, and ``--help``.

    Values are read as YAML scalars/flow collections (``3`` -> int, ``true`` -> bool,
    ``[a, b]`` -> list, ``null`` -> None); :func:`build_config` turns them back into strings where
    the schema wants a string. Run-level keys (:data:`RUN_KEYS`) may be given without ``run.``.

    Raises:
        ConfigError: an argument that is not ``key=value``, or a key given twice.
    """
    recipe, flat, want_help = None, {}, False
    for arg in argv:
        if arg in ("-h", "--help", "help"):
            want_help = True
            continue
        key, sep, raw = arg.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key:
            raise ConfigError(
                f"cannot read the argument {arg!r}: arguments are key=value "
                "(e.g. recipe=cj_grpo_tiny max_steps=3 training.lr=1e-5)"
            )
        if key == "recipe":
            recipe = raw
            continue
        if key in RUN_KEYS:
            key = f"run.{key}"
        if key in flat:
            raise ConfigError(f"{key} is given twice on the command line")
        flat[key] = _Raw(raw)
    return recipe, unflatten(flat), want_help


class _Raw(str):
    """A command-line value: parsed as YAML, unless the schema asks for a string."""

    def parsed(self) -> Any:
        try:
            return yaml.safe_load(self) if self.strip() else ""
        except yaml.YAMLError:
            return str(self)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2}`` -> ``{"a": {"b": 1, "c": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: {part} is set to a value and used as a section")
            node = child
        node[parts[-1]] = value
    return out


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in ``override`` replaces (an empty
    mapping too: ``data.options={}`` clears the recipe's options)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and value and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# ----------------------------------------------------------------------------- recipes
def recipe_folder() -> Traversable:
    """Where the bundled recipes live: the installed ``dllm_rl.recipes`` package data, or the
    checkout's top-level ``recipes/`` folder when ``dllm_rl`` is imported from a source tree
    (there the folder is not a subpackage of ``dllm_rl``; ``pyproject.toml`` maps it on install)."""
    try:
        return resources.files("dllm_rl.recipes")
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "recipes"
        if checkout.is_dir():
            return checkout
        raise


def recipe_names() -> list[str]:
    """The bundled recipe names (``recipes/*.yaml``, installed as ``dllm_rl.recipes``)."""
    folder = recipe_folder()
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """Read a recipe by bundled name or YAML path; returns ``(name, mapping)``.

    Raises:
        ConfigError: unknown name (with close matches), unreadable file, or not a mapping.
    """
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"recipe file {str(path)!r} does not exist")
        text, name = path.read_text(), path.stem
    else:
        names = recipe_names()
        if name_or_path not in names:
            close = difflib.get_close_matches(name_or_path, names, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ConfigError(
                f"unknown recipe {name_or_path!r}.{hint} Bundled recipes: {', '.join(names)}; "
                "or pass a path to a YAML file."
            )
        text = recipe_folder().joinpath(f"{name_or_path}.yaml").read_text()
        name = name_or_path
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"recipe {name!r} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(
            f"recipe {name!r} must be a mapping of sections, got {type(data).__name__}"
        )
    return name, data


# ----------------------------------------------------------------------------- validation
def build_config(schema: type, data: Mapping[str, Any]) -> Any:
    """Validate ``data`` against the dataclass ``schema`` and build it.

    Raises:
        ConfigError: unknown keys (with close matches and the full dotted path), or a value of
            the wrong type / out of range (with the expected type or the check that failed).
    """
    from pydantic import TypeAdapter, ValidationError

    cleaned = _check_keys(schema, data, prefix="", root=schema)
    try:
        return TypeAdapter(schema).validate_python(cleaned)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(p) for p in item["loc"])
            got = item.get("input")
            shown = "" if isinstance(got, Mapping) else f" (got {got!r})"
            value_error = item["type"] == "value_error"  # a __post_init__ check: says it all
            expected = None if value_error else _expected_type(schema, item["loc"])
            msg = item["msg"].removeprefix("Value error, ")
            tail = f"; expected {expected}" if expected else ""
            problems.append(f"{where or '<top>'}: {msg}{shown}{tail}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems)) from None


def _check_keys(schema: type, data: Any, prefix: str, root: type) -> Any:
    """Reject unknown keys (naming close matches); turn command-line values into their types."""
    if not isinstance(data, Mapping):
        if isinstance(data, _Raw):
            return data.parsed()
        return data
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    out = {}
    for key, value in data.items():
        if key not in fields:
            path = prefix + str(key)
            asked = [path + "." + leaf for leaf in _leaf_paths(value)] or [path]
            candidates = _all_paths(root)
            close = []
            for wanted in asked:
                for match in difflib.get_close_matches(wanted, candidates, n=3, cutoff=0.6):
                    if match not in close:
                        close.append(match)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            known = ", ".join(fields)
            section = prefix.rstrip(".") or "the top level"
            raise ConfigError(
                f"unknown config key {' / '.join(map(repr, asked))}.{hint} Keys of {section}: {known}. "
                "(`--help` lists every key.)"
            )
        hint_type = hints[key]
        sub = _dataclass_in(hint_type)
        if sub is not None and isinstance(value, Mapping):
            checked = _check_keys(sub, value, prefix=f"{prefix}{key}.", root=root)
            out[key] = {**_section_defaults(fields[key], sub), **checked}
        elif isinstance(value, _Raw):
            out[key] = str(value) if _wants_str(hint_type) else value.parsed()
        else:
            out[key] = _plain(value)
    return out


def _section_defaults(f: dataclasses.Field, sub: type) -> dict[str, Any]:
    """The values a section's own default sets where they differ from its class's defaults
    (the training ``rollout:`` section samples at T = 1, the sampler class at T = 0), so a
    partial section given in a recipe or on the command line keeps them."""
    factory = f.default_factory  # type: ignore[misc]
    if factory is dataclasses.MISSING or not dataclasses.is_dataclass(sub):
        return {}
    made = factory()
    if not isinstance(made, sub):
        return {}

    def class_default(g: dataclasses.Field) -> Any:
        if g.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            return g.default_factory()  # type: ignore[misc]
        return g.default

    return {
        g.name: getattr(made, g.name)
        for g in dataclasses.fields(sub)
        if getattr(made, g.name) != class_default(g)
    }


def _plain(value: Any) -> Any:
    """Command-line values nested in free-form fields (``data.options.size=64``) parsed."""
    if isinstance(value, _Raw):
        return value.parsed()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _leaf_paths(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves of a nested mapping given for an unknown key."""
    if not isinstance(value, Mapping):
        return [prefix.rstrip(".")] if prefix else []
    paths = []
    for key, sub in value.items():
        paths.extend(_leaf_paths(sub, f"{prefix}{key}."))
    return paths


def _all_paths(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key of a schema (sections and leaves)."""
    paths = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        path = prefix + f.name
        paths.append(path)
        sub = _dataclass_in(hints[f.name])
        if sub is not None:
            paths.extend(_all_paths(sub, path + "."))
    return paths


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass inside ``tp`` (``X``, ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def _wants_str(tp: Any) -> bool:
    if tp is str:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return bool(args) and all(a is str for a in args)
    return False


def _expected_type(schema: type, loc: Sequence[Any]) -> str | None:
    """A readable name of the annotated type at ``loc`` (None when it cannot be found)."""
    tp: Any = schema
    for part in loc:
        sub = _dataclass_in(tp)
        if sub is None or not isinstance(part, str):
            return None
        hints = typing.get_type_hints(sub)
        if part not in hints:
            return None
        tp = hints[part]
    return type_name(tp)


def type_name(tp: Any) -> str:
    """``int | None`` -> ``'int or null'``; ``Literal['a', 'b']`` -> ``"one of 'a', 'b'"``."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, dict):
        args = ", ".join(type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)
        return f"{origin.__name__}[{args}]"
    if dataclasses.is_dataclass(tp):
        return f"a {tp.__name__} section"
    return getattr(tp, "__name__", str(tp))


# ----------------------------------------------------------------------------- output
def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain data (for YAML and JSON)."""
    return dataclasses.asdict(config)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None, width=100)


def help_text(schema: type, title: str, values: Any | None = None) -> str:
    """Every key of ``schema`` with its type, default and help (the ``--help`` output).

    Args:
        values: a config built from a recipe (and overrides): each key whose value differs from
            the schema's default also shows that value (``recipe 10``).
    """
    lines = [title, ""]
    lines.extend(_help_lines(schema, "", values))
    return "\n".join(lines)


def _help_lines(
    schema: type, prefix: str, values: Any | None = None, defaults: Any | None = None
) -> list[str]:
    """``defaults``: the section's own default instance (its field's default_factory), whose
    values are the defaults shown where they differ from the class's."""
    lines = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        sub = _dataclass_in(hints[f.name])
        text = f.metadata.get("help", "")
        value = getattr(values, f.name, None) if values is not None else None
        if sub is not None:
            lines.append(f"{prefix}{f.name}:  {text}".rstrip())
            own = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
            own = own if isinstance(own, sub) else None
            lines.extend(_help_lines(sub, prefix + f.name + ".", value, own))
            continue
        if defaults is not None:
            default = getattr(defaults, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = dataclasses.MISSING
        shown = "required" if default is dataclasses.MISSING else repr(default)
        recipe = ""
        if values is not None and (default is dataclasses.MISSING or value != default):
            recipe = f", recipe {value!r}"
        lines.append(
            f"  {prefix}{f.name} ({type_name(hints[f.name])}, default {shown}{recipe})  {text}"
        )
    return lines
