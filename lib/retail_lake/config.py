"""Configuration: conf/base.yaml, a profile overlay, --set overrides and the environment.

`conf/base.yaml` is the schema: it lists every key with its default. A profile
(`conf/profiles/<name>.yaml`) and `--set key=value` may only change keys that exist there, and
only with a value of the same type; anything else is a `ConfigError` naming the file and key.
Mappings that are empty in base (such as `spark.conf`) are free-form.

Environment variables (read at load time):
    RETAIL_LAKE_CONF_DIR   the conf folder (default: ./conf, else the one beside the package)
    RETAIL_LAKE_ROOT       overrides paths.root
    RETAIL_LAKE_KEY_DIR    overrides privacy.key_dir
    RETAIL_LAKE_IVY_DIR    overrides spark.ivy_dir
    RETAIL_LAKE_CLASS_ARCHIVE  overrides spark.class_archive
Secrets are never stored in config: keys name the environment variable that holds them.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

ENV_OVERRIDES = {
    "RETAIL_LAKE_ROOT": "paths.root",
    "RETAIL_LAKE_IVY_DIR": "spark.ivy_dir",
    "RETAIL_LAKE_CLASS_ARCHIVE": "spark.class_archive",
    "RETAIL_LAKE_KEY_DIR": "privacy.key_dir",
}


# `training.launcher.BACKENDS`, repeated so that loading config imports nothing of training
# (tests/test_training.py checks they agree).
TRAINING_BACKENDS = ("horovod", "torch_distributor", "in_process")

# What evaluates the quality gates (`quality.engine`; see retail_lake.quality.validate).
QUALITY_ENGINES = ("spark", "great_expectations")


class ConfigError(ValueError):
    """Configuration that cannot be used: missing file, unknown key, wrong type."""


# A source added by configuration alone (a `sources.<name>` base.yaml does not list): its
# keys and their defaults. It is read as CSV; its bronze contract is derived from `columns`
# (`retail_lake.registry.components`).
SOURCE_DEFAULTS: Mapping[str, Any] = {
    "format": "csv",
    "pattern": None,  # required: glob under paths.landing, e.g. shop_sales/*.csv*
    "table": None,  # required: bronze.<name>
    "columns": None,  # required: the header's columns, in order
    "delimiter": ",",
    "quote": '"',
    "encoding": "utf-8",
    "header": True,
    # auto: lines end in LF or CRLF; cr: in a carriage return only (classic Mac OS exports)
    "line_ending": "auto",
    # field values that mean "missing" (e.g. NA): null in bronze
    "null_markers": [],
    "on_drift": "stop",
    "personal_columns": [],
}
LINE_ENDINGS = ("auto", "cr")


def _new_source(name: str, value: Any, origin: str) -> dict[str, Any]:
    """A source entry base.yaml does not list, checked against `SOURCE_DEFAULTS`."""
    where = f"{origin}: source '{name}'"
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping, got {_type_name(value)} {value!r}")
    unknown = sorted(set(value) - set(SOURCE_DEFAULTS))
    if unknown:
        known = ", ".join(SOURCE_DEFAULTS)
        raise ConfigError(f"{where}: unknown key(s) {unknown} (known: {known})")
    missing = [k for k, v in SOURCE_DEFAULTS.items() if v is None and k not in value]
    if missing:
        raise ConfigError(
            f"{where}: missing {missing} (a new source needs pattern, table, columns)"
        )
    if value.get("format", "csv") != "csv":
        raise ConfigError(
            f"{where}: format {value['format']!r}: a source added by configuration alone is "
            "read as csv (another format needs its reader in retail_lake.registry.FORMATS)"
        )
    entry = copy.deepcopy(dict(SOURCE_DEFAULTS))
    for key, given in value.items():
        default = SOURCE_DEFAULTS[key]
        entry[key] = (
            given if default is None else _coerce(default, given, f"sources.{name}.{key}", origin)
        )
    columns = entry["columns"]
    if not (isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns)):
        raise ConfigError(f"{where}: columns must be a non-empty list of names, got {columns!r}")
    for key in ("pattern", "table"):
        if not isinstance(entry[key], str) or not entry[key].strip():
            raise ConfigError(f"{where}: {key} must be a non-empty string, got {entry[key]!r}")
    return entry


def find_conf_dir() -> Traversable:
    """Locates the conf folder.

    In order: $RETAIL_LAKE_CONF_DIR, ./conf, the `_conf` folder inside the package (the
    archive spark-submit ships; read through importlib.resources, as it may be a zip), the
    checkout's conf beside lib/.
    """
    env = os.environ.get("RETAIL_LAKE_CONF_DIR")
    if env:  # named explicitly: never fall back to another folder
        if not (Path(env) / "base.yaml").is_file():
            raise ConfigError(f"RETAIL_LAKE_CONF_DIR={env}: no base.yaml in that folder")
        return Path(env)
    candidates: list[Traversable] = []
    candidates += [
        Path.cwd() / "conf",
        resources.files("retail_lake") / "_conf",
        Path(__file__).resolve().parents[2] / "conf",  # lib/retail_lake -> checkout
    ]
    for cand in candidates:
        if (cand / "base.yaml").is_file():
            return cand
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"no conf/base.yaml found (tried {tried}); set RETAIL_LAKE_CONF_DIR")


def _read_yaml(path: Traversable) -> dict[str, Any]:
    if not path.is_file():  # works for files inside a zip archive too
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _type_name(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
    }.get(type(value), type(value).__name__)


def _coerce(base_value: Any, value: Any, key: str, origin: str) -> Any:
    """Returns `value` checked (and widened where safe) against the type of `base_value`."""
    if base_value is None:
        return value
    if isinstance(base_value, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(base_value, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(base_value, float):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(base_value, str):
        if isinstance(value, str):
            return value
        if origin.startswith("--set") and isinstance(value, int | float | bool):
            return str(value)
        # YAML reads an unquoted 2011-12-09 as a date: a text key takes it as written.
        if isinstance(value, date):
            return value.isoformat()
    elif isinstance(base_value, list):
        if isinstance(value, list):
            return value
    elif isinstance(base_value, dict) and isinstance(value, dict):
        return value
    raise ConfigError(
        f"{origin}: '{key}' must be a {_type_name(base_value)}, got {_type_name(value)} {value!r}"
    )


def _free_form(data: dict[str, Any], prefix: str = "") -> frozenset[str]:
    """Dotted paths of the mappings that are empty in base.yaml: any key goes there."""
    found = set()
    for key, value in data.items():
        if isinstance(value, dict):
            if value:
                found |= _free_form(value, f"{prefix}{key}.")
            else:
                found.add(f"{prefix}{key}")
    return frozenset(found)


def _merge(
    base: dict[str, Any],
    overlay: Mapping[str, Any],
    origin: str,
    prefix: str = "",
    free: frozenset[str] = frozenset(),
) -> None:
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if prefix.rstrip(".") in free:  # free-form mapping (empty in base.yaml)
            base[key] = value
            continue
        if key not in base and prefix == "sources.":  # the open map of sources
            base[key] = _new_source(key, value, origin)
            continue
        if key not in base:
            known = ", ".join(sorted(base)) or "(none)"
            raise ConfigError(f"{origin}: unknown key '{dotted}' (known here: {known})")
        current = base[key]
        if isinstance(current, dict) and isinstance(value, dict):
            _merge(current, value, origin, f"{dotted}.", free)
        else:
            base[key] = _coerce(current, value, dotted, origin)


def _set_dotted(
    data: dict[str, Any], dotted: str, value: Any, origin: str, free: frozenset[str]
) -> None:
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{origin}: unknown key '{'.'.join(parts[: i + 1])}'")
        node = node[part]
        if ".".join(parts[: i + 1]) in free:  # free-form: the rest is one key
            node[".".join(parts[i + 1 :])] = value
            return
    prefix = ".".join(parts[:-1]) + "." if parts[:-1] else ""
    _merge(node, {parts[-1]: value}, origin, prefix, free)


def parse_set(item: str) -> tuple[str, Any]:
    """Parses one `key=value` override; the value is read as YAML (so `2` is an integer)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if value is None and raw.strip() == "~" and key.startswith("paths."):
        value = "~"  # YAML's null, but a user giving a path means the home folder
    return key, value


@dataclass(frozen=True)
class Config:
    """Validated configuration. Read values with `cfg.get("spark.master")` or `cfg["paths"]`."""

    data: dict[str, Any]
    profile: str
    sources: tuple[str, ...] = field(default_factory=tuple)

    def get(self, dotted: str, default: Any = ...) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is not ...:
                    return default
                raise KeyError(f"no config key '{dotted}'")
            node = node[part]
        return copy.deepcopy(node)

    def __getitem__(self, section: str) -> Any:
        return self.get(section)

    @property
    def root(self) -> str:
        return self.data["paths"]["root"]


def _absolute(path: str) -> str:
    if "://" in path or path.startswith("file:"):
        return path
    return str(Path(path).expanduser().resolve())


def _finish(data: dict[str, Any]) -> dict[str, Any]:
    root = data["paths"]["root"]
    if not isinstance(root, str) or not root.strip():
        raise ConfigError(
            f"paths.root is empty ({root!r}): give the lake's folder or URI, e.g. --root /data/lake"
        )
    data["paths"]["root"] = _absolute(root)
    if data["paths"]["root"] in ("/", "file:/", "file:///"):
        raise ConfigError("paths.root is the filesystem's root: give a folder for the lake")
    if data["paths"]["landing"]:
        data["paths"]["landing"] = _absolute(data["paths"]["landing"])
    data["spark"]["ivy_dir"] = _absolute(data["spark"]["ivy_dir"])
    if data["spark"]["jvm_log_dir"]:
        data["spark"]["jvm_log_dir"] = _absolute(data["spark"]["jvm_log_dir"])
    if data["spark"]["class_archive"]:
        data["spark"]["class_archive"] = _absolute(data["spark"]["class_archive"])
    key_dir = data["privacy"]["key_dir"]
    if not isinstance(key_dir, str) or not key_dir.strip() or "://" in key_dir:
        raise ConfigError(f"privacy.key_dir must be a local folder, got {key_dir!r}")
    data["privacy"]["key_dir"] = _absolute(key_dir)
    if data["privacy"]["key_dir"] == "/":
        raise ConfigError("privacy.key_dir is the filesystem's root: give a folder for keys")
    if data["ingest"]["max_payload_chars"] < 0:
        raise ConfigError("ingest.max_payload_chars must be 0 (no cap) or more")
    if data["runner"]["lease_seconds"] < 1:
        raise ConfigError("runner.lease_seconds must be at least 1")
    if data["training"]["num_proc"] < 1:
        raise ConfigError("training.num_proc must be at least 1")
    if data["training"]["backend"] not in TRAINING_BACKENDS:
        raise ConfigError(
            f"training.backend must be one of {TRAINING_BACKENDS}, "
            f"got {data['training']['backend']!r}"
        )
    _check_sources(data.get("sources", {}))
    if data["quality"]["engine"] not in QUALITY_ENGINES:
        raise ConfigError(
            f"quality.engine must be one of {QUALITY_ENGINES}, got {data['quality']['engine']!r}"
        )
    return data


def _check_sources(sources: Mapping[str, Any]) -> None:
    """Each source writes its own bronze table, and its options have known values."""
    owners: dict[str, str] = {}
    for name, spec in sources.items():
        table = spec.get("table", "")
        if not re.fullmatch(r"bronze\.[a-z_][a-z0-9_]*", str(table)):
            raise ConfigError(
                f"sources.{name}.table must be bronze.<name> (lower case, digits, _), got {table!r}"
            )
        if table in owners:
            raise ConfigError(
                f"sources.{name}.table: {table} is already the table of source {owners[table]}"
            )
        owners[table] = name
        ending = spec.get("line_ending", "auto")
        if ending not in LINE_ENDINGS:
            raise ConfigError(
                f"sources.{name}.line_ending must be one of {LINE_ENDINGS}, got {ending!r}"
            )
        markers = spec.get("null_markers", [])
        if not all(isinstance(m, str) for m in markers):
            raise ConfigError(f"sources.{name}.null_markers must be text values, got {markers!r}")


def load_config(
    profile: str = "local",
    overrides: Iterable[str] = (),
    conf_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Loads base.yaml, the profile overlay, environment overrides and `--set` items.

    Args:
        profile: name of `conf/profiles/<profile>.yaml`.
        overrides: `key=value` strings, applied last.
        conf_dir: the conf folder; found with `find_conf_dir()` when omitted.
        environ: environment to read (default: `os.environ`).

    Raises:
        ConfigError: a missing file, unknown key or wrong type, naming it.
    """
    env = os.environ if environ is None else environ
    folder = Path(conf_dir) if conf_dir else find_conf_dir()
    base_path = folder / "base.yaml"
    data = _read_yaml(base_path)
    free = _free_form(data)
    profile_path = folder / "profiles" / f"{profile}.yaml"
    if not profile_path.is_file():
        available = sorted(
            p.name.removesuffix(".yaml")
            for p in (folder / "profiles").iterdir()
            if p.name.endswith(".yaml")
        )
        raise ConfigError(
            f"profile '{profile}' not found: no file {profile_path} "
            f"(profiles: {', '.join(available)})"
        )
    _merge(data, _read_yaml(profile_path), str(profile_path), free=free)
    for var, dotted in ENV_OVERRIDES.items():
        if env.get(var):
            _set_dotted(data, dotted, env[var], f"--set {dotted} (from ${var})", free)
    for item in overrides:
        key, value = parse_set(item)
        _set_dotted(data, key, value, f"--set {key}", free)
    return Config(_finish(data), profile, tuple(sorted(data.get("sources", {}))))
