"""Pseudonymisation of personal identifiers: HMAC-SHA256 with a secret key.

The same identifier always gets the same token (so joins and counts still work), and
without the key a token cannot be traced back to the identifier or recomputed from a
guess. The key comes from the environment variable named by `privacy.key_env` (a cluster
sets it from its secret store). Without it, and only when the lake root is a local folder,
a random key is generated once into `<privacy.key_dir>/<lake id>.key` (mode 0600; the lake's
id is `<root>/_secrets/lake_id`) and reused by every later run on that root: outside the
lake, so a copy of the lake does not carry its key. A key a lake made before under
`<root>/_secrets/pseudonymisation.key` is moved there on first use. The key is never
written to the repository or `conf/`. A local root also records the key's id (a hash of
it, not the key) in `<root>/_secrets/key_id` on first use, and a later run with another key
(a mistyped `privacy.key_env` that falls back to the file, another secret, a copied lake
without its key file) is refused: its tokens would not match the ones already in the lake.

The token is computed inside Spark from built-in functions (no Python UDF):
HMAC(K, m) = SHA256((K' ^ opad) || SHA256((K' ^ ipad) || m)), as RFC 2104 defines it.
The two pads (which give the key back) are never literals of a query: `Pseudonymiser.keyed`
joins them to the rows from a one-row frame that Spark broadcasts, so `explain`, the Spark
UI and the event log show a `LocalTableScan` of two columns, not their values.
`token()` computes the same value in Python (used where ingest masks a broken line).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from retail_lake.config import Config, ConfigError

LEGACY_KEY_FILE = "_secrets/pseudonymisation.key"  # where older lakes generated theirs
KEY_ID_FILE = "_secrets/key_id"
ROTATION_FILE = "_secrets/rotation"  # a key rotation begun and not finished (JSON)
LAKE_ID_FILE = "_secrets/lake_id"
MIN_KEY_BYTES = 16
_BLOCK = 64  # SHA-256 block size in bytes
log = logging.getLogger(__name__)
_INTEGRAL = re.compile(r"^\s*(\d+)(?:\.0+)?\s*$")


def local_path(root: str) -> Path | None:
    """The folder of a local lake root (a path or a file: URI); None for a remote one."""
    if root.startswith("file:"):
        return Path("/" + root[len("file:") :].lstrip("/"))
    if "://" in root:
        return None
    return Path(root)


def load_key(
    cfg: Config, environ: Mapping[str, str] | None = None, rotating: bool = False
) -> bytes:
    """The pseudonymisation key: from the environment, else the local root's key file.

    `rotating`: for the key rotation itself, which may find the lake between two keys (the
    key's id is then not checked against the lake's).

    Raises:
        ConfigError: the key is too short, the root is not local and no key is set, the key
            is not the one the lake's tokens were made with, or a key rotation has not
            finished (`retail-lake privacy rotate-key` finishes it).
    """
    env = os.environ if environ is None else environ
    var = cfg.get("privacy.key_env")
    local = local_path(cfg.root)
    pending = rotation_pending(cfg)
    if pending and not rotating:
        raise ConfigError(
            f"a rotation of the pseudonymisation key (key id {pending['from']} -> "
            f"{pending['to']}, run {pending['run_id']}) has not finished: its tables hold "
            "both keys' tokens. Run `retail-lake privacy rotate-key` again to finish it"
        )
    if rotating:
        if env.get(var):
            return env[var].encode("utf-8")
        if local is None:
            raise ConfigError(f"no pseudonymisation key: set ${var}")
        return _file_key(key_path(cfg))
    if env.get(var):
        key = env[var].encode("utf-8")
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"${var}: the pseudonymisation key must be at least 16 bytes")
        if local is not None:
            path = key_path(cfg)
            _move_legacy_key(local, path)
            _check_key_id(local, key, f"${var}", var, path)
        return key
    if local is None:
        raise ConfigError(
            f"no pseudonymisation key: set ${var} (the lake root {cfg.root} is not a local "
            "folder, so no key is generated there)"
        )
    path = key_path(cfg)
    _move_legacy_key(local, path)
    recorded = local / KEY_ID_FILE
    if not path.exists() and recorded.exists():
        raise ConfigError(
            f"${var} is not set, and this lake's tokens were made with key id "
            f"{recorded.read_text().strip()} (recorded in {recorded}), which is not at {path}: "
            f"set ${var} (privacy.key_env names it) to that key, or put its key file there "
            "(a copy of a lake does not carry its key)"
        )
    _write_once(path, secrets.token_hex(32))
    key = _file_key(path)
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{path}: the pseudonymisation key is shorter than 16 bytes")
    _check_key_id(local, key, f"{path} (${var} is not set)", var, path)
    return key


def key_path(cfg: Config) -> Path:
    """Where a local root's generated key is kept: `<privacy.key_dir>/<lake id>.key`; the
    lake's id (random, made once) is read from `<root>/_secrets/lake_id`."""
    local = local_path(cfg.root)
    if local is None:
        raise ConfigError(f"the lake root {cfg.root} is not a local folder: it has no key file")
    _write_once(local / LAKE_ID_FILE, secrets.token_hex(8) + "\n")
    lake_id = (local / LAKE_ID_FILE).read_text().strip()
    return Path(cfg.get("privacy.key_dir")) / f"{lake_id}.key"


def rotation_pending(cfg: Config) -> dict | None:
    """The key rotation begun on this (local) lake and not finished, if any: its run id and
    the ids of the key it replaces (`from`) and of the new one (`to`)."""
    local = local_path(cfg.root)
    path = None if local is None else local / ROTATION_FILE
    if path is None or not path.exists():
        return None
    return json.loads(path.read_text())


def _move_legacy_key(local: Path, path: Path) -> None:
    """A key an older release generated under the lake root, moved to `path` (the same key:
    the lake's tokens stay as they are)."""
    legacy = local / LEGACY_KEY_FILE
    if not legacy.exists():
        return
    if not path.exists():
        _write_once(path, legacy.read_text())
    if _file_key(path) != _file_key(legacy):
        raise ConfigError(f"{legacy} and {path} hold different keys: keep the one of key id "
                          f"in {local / KEY_ID_FILE} and remove the other")  # fmt: skip
    legacy.unlink()
    log.warning("the pseudonymisation key was moved out of the lake root to %s", path)


def _file_key(path: Path) -> bytes:
    """The key a local root's key file holds."""
    return path.read_text().strip().encode("utf-8")


def _write_once(path: Path, text: str) -> None:
    """Creates `path` (mode 0600, its folder 0700) holding `text`, unless it exists.

    The text goes to a file of its own first, which is then linked to `path` (atomic, and
    refused when `path` exists): a process racing another never reads a half-written file.
    """
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        with contextlib.suppress(FileExistsError):  # the other process's file stays
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def key_id(key: bytes) -> str:
    """A short public id of `key` (a hash; the key cannot be recovered from it)."""
    return hashlib.sha256(b"retail-lake key id:" + key).hexdigest()[:16]


def _check_key_id(local: Path, key: bytes, origin: str, var: str, made: Path) -> None:
    """Records the key's id on a local root's first use; refuses another key afterwards.
    `made`: where the root's generated key is (or would be) kept."""
    path = local / KEY_ID_FILE
    mine = key_id(key)
    if made.exists() and not path.exists():
        # A lake from before key ids were recorded: its tokens were made with its key file.
        _write_once(path, key_id(_file_key(made)) + "\n")
    _write_once(path, mine + "\n")
    recorded = path.read_text().strip()
    if recorded != mine:
        raise ConfigError(
            f"the pseudonymisation key from {origin} (key id {mine}) is not the key this "
            f"lake's tokens were made with (key id {recorded}, recorded in {path}): every "
            f"token would change. Set ${var} (privacy.key_env names it) to that key"
        )


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


INNER_PAD, OUTER_PAD = "_hmac_inner_pad", "_hmac_outer_pad"


def hmac_column(value: Column) -> Column:
    """HMAC-SHA256 of `value` (as UTF-8 text) in lower-case hex; null stays null. The key's
    pads are read from the row's `_hmac_inner_pad` / `_hmac_outer_pad` columns, which
    `Pseudonymiser.keyed` adds."""
    text = F.encode(value.cast("string"), "UTF-8")
    inner = F.unhex(F.sha2(F.concat(F.col(INNER_PAD), text), 256))
    return F.sha2(F.concat(F.col(OUTER_PAD), inner), 256)


def canonical_id(value: Column) -> Column:
    """An identifier as text, trimmed, with a float export's `.0` removed (17850.0 -> 17850)."""
    trimmed = F.trim(value.cast("string"))
    return F.when(
        trimmed.rlike(r"^[0-9]+(\.0+)?$"), F.regexp_replace(trimmed, r"\.0+$", "")
    ).otherwise(trimmed)


def canonical_id_text(value: str) -> str:
    """`canonical_id` for one Python string."""
    match = _INTEGRAL.match(value)
    return match.group(1) if match else value.strip()


def token(value: str, key: bytes) -> str:
    """The pseudonym of one identifier, computed in Python (same as `hmac_column`)."""
    return hmac.new(key, canonical_id_text(value).encode("utf-8"), hashlib.sha256).hexdigest()


class Pseudonymiser:
    """Tokens of personal identifiers with one key, the key kept out of every query plan.

    `keyed(df)` adds the key's HMAC pads to each row (a broadcast join of a one-row frame:
    data, not literals); `self(column)` is then the column's token (null or blank
    identifiers stay null); select the columns you keep, and the pads are gone.

    Example:
        >>> pseudonymise = Pseudonymiser(load_key(cfg))
        >>> keyed = pseudonymise.keyed(bronze)
        >>> tokens = keyed.select(pseudonymise(F.col("customer_id")).alias("customer_token"))
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:  # never the key itself
        return f"Pseudonymiser(key id {key_id(self._key)})"

    def keyed(self, df: DataFrame) -> DataFrame:
        """`df` with the two pad columns `self(...)` reads."""
        inner, outer = _pads(self._key)
        pads = df.sparkSession.createDataFrame(
            [(bytearray(inner), bytearray(outer))], f"{INNER_PAD} binary, {OUTER_PAD} binary"
        )
        return df.crossJoin(F.broadcast(pads))

    def __call__(self, value: Column) -> Column:
        canonical = canonical_id(value)
        return F.when(canonical != "", hmac_column(canonical))


def pseudonymiser(key: bytes) -> Pseudonymiser:
    """The `Pseudonymiser` of `key`."""
    return Pseudonymiser(key)
