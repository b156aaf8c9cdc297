"""Rotating the pseudonymisation key: `retail-lake privacy rotate-key`.

Every token in the lake is re-made with a new key in one recorded run (`ops.job_runs`, job
`rotate_key`): the ids are taken from bronze (a source's `personal_columns`), each id's old
and new token computed in Spark (the keys' pads as data, never literals), and every table
holding tokens rewritten through the runner, so each passes its contract and quality gate
before anything is written, and each is written in one MERGE commit: the pseudonym columns
(`Col.pseudonym`) of silver and gold, and the tokens in quarantined payloads. A token no
id in bronze maps (a retracted file's rows that cleanse has not yet retired) stops the run
before anything is written, naming the table. The tables are then vacuumed with
`privacy.erasure_retain_hours`, so no old file keeps the old tokens, and the new key
becomes the lake's: a generated key file is replaced (the old key is gone), the recorded
key id changes; a key from the environment (`privacy.key_env`) is replaced by the one in
`privacy.new_key_env`, which `privacy.key_env` must name from then on.

The rotation is recorded in `<root>/_secrets/rotation` while it runs: every other job
refuses to start until it has finished (tables would hold both keys' tokens), and running
the command again after a crash finishes it with the same new key (a table already
rewritten has nothing to change). Local roots only: a remote root keeps no key files.

Example:
    From a shell::

        retail-lake privacy rotate-key                            # a generated key
        RETAIL_LAKE_NEW_PSEUDONYM_KEY=... retail-lake privacy rotate-key   # keys from a vault

    From Python:

    >>> from retail_lake.rotation import rotate_key
    >>> from retail_lake.registry import run_job
    >>> ctx, writes = run_job(spark, cfg, "rotate_key", rotate_key())
    >>> ctx.state["rotation"]["to"]
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from retail_lake.config import Config
from retail_lake.erasure import personal_bronze, pseudonym_tables
from retail_lake.maintenance import vacuum_tables
from retail_lake.privacy import (
    KEY_ID_FILE,
    MIN_KEY_BYTES,
    ROTATION_FILE,
    Pseudonymiser,
    _write_once,
    canonical_id,
    key_id,
    key_path,
    load_key,
    local_path,
    rotation_pending,
)
from retail_lake.quarantine import QUARANTINE
from retail_lake.runner import JobContext, JobError, JobResult, Output

log = logging.getLogger(__name__)

OLD, NEW = "_old_token", "_new_token"
_TOKEN = re.compile(r"[0-9a-f]{64}")


class RotationError(JobError):
    """The key cannot be rotated (a token without an id, no new key, a remote root)."""


def rotate_key(environ: Mapping[str, str] | None = None) -> Callable[[JobContext], JobResult]:
    """The job that re-makes every token of the lake with a new key (see the module)."""
    env = os.environ if environ is None else environ

    def run(ctx: JobContext) -> JobResult:
        cfg = ctx.cfg
        root = local_path(cfg.root)
        if root is None:
            raise RotationError(
                f"rotate-key: {cfg.root} is not a local folder: rotating the key of a remote "
                "lake is not supported yet"
            )
        old = load_key(cfg, env, rotating=True)
        pending = rotation_pending(cfg)
        if pending and key_id(old) == pending["to"]:  # the key was switched: finish up
            _finish(cfg, root, old, env)
            ctx.state["rotation"] = pending
            return JobResult()
        new = _new_key(cfg, env, pending)
        state = {"run_id": ctx.run_id, "from": key_id(old), "to": key_id(new)}
        if pending is None:
            _write_json(root / ROTATION_FILE, state)
        ctx.state["rotation"] = state
        log.info("rotating the pseudonymisation key: key id %s -> %s", state["from"], state["to"])
        mapping = _mapping(ctx, Pseudonymiser(old), Pseudonymiser(new)).persist()
        outputs = [_retokenised(ctx, c, mapping) for c in pseudonym_tables(ctx)]
        if ctx.lake.exists(QUARANTINE):
            outputs.append(_quarantine(ctx, mapping))
        # The row-count expectations of silver are relative to the bronze rows read.
        read = {t: ctx.read(t).count() for t in personal_bronze(ctx)}
        result = JobResult(outputs=outputs, cached=[mapping], rows_read=read)

        def switch(writes) -> None:
            hours = float(cfg.get("privacy.erasure_retain_hours"))
            state["files_vacuumed"] = vacuum_tables(ctx, [o.table for o in outputs], hours)
            _finish(cfg, root, new, env)
            log.info("the lake's tokens are made with key id %s now", state["to"])

        result.after_publish = switch
        return result

    return run


def _new_key(cfg: Config, env: Mapping[str, str], pending: dict | None) -> bytes:
    """The key the tokens are re-made with: `privacy.new_key_env`'s, else (a generated key)
    a new one kept beside the lake's key file until the rotation finishes."""
    var = cfg.get("privacy.new_key_env")
    if env.get(var):
        new = env[var].encode("utf-8")
        if len(new) < MIN_KEY_BYTES:
            raise RotationError(f"${var}: the new key must be at least 16 bytes")
    elif env.get(cfg.get("privacy.key_env")):
        raise RotationError(
            f"the key comes from ${cfg.get('privacy.key_env')}: put the new one in ${var} "
            "(privacy.new_key_env names it) to rotate to it"
        )
    else:
        path = _next_key_path(cfg)
        _write_once(path, secrets.token_hex(32))
        new = path.read_text().strip().encode("utf-8")
    if pending and key_id(new) != pending["to"]:
        raise RotationError(
            f"the rotation begun by run {pending['run_id']} goes to key id {pending['to']}, "
            f"not {key_id(new)}: finish it with that key"
        )
    return new


def _next_key_path(cfg: Config) -> Path:
    current = key_path(cfg)
    return current.with_name(current.stem + ".next.key")


def _finish(cfg: Config, root: Path, new: bytes, env: Mapping[str, str]) -> None:
    """The new key becomes the lake's: its id recorded, a generated key file replaced (the
    old key gone), the rotation's record removed: in that order, each step atomic."""
    _write_json(root / KEY_ID_FILE, None, text=key_id(new) + "\n")
    if not env.get(cfg.get("privacy.key_env")):
        nxt = _next_key_path(cfg)
        if nxt.exists():
            nxt.replace(key_path(cfg))
    (root / ROTATION_FILE).unlink(missing_ok=True)
    if env.get(cfg.get("privacy.key_env")):
        log.warning(
            "set $%s to the new key (the one in $%s) from now on: the old key no longer "
            "matches this lake's tokens",
            cfg.get("privacy.key_env"),
            cfg.get("privacy.new_key_env"),
        )


def _write_json(path: Path, value: dict | None, text: str | None = None) -> None:
    """Replaces `path` (mode 0600) atomically with `value` as JSON (or `text`)."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(json.dumps(value) if text is None else text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _mapping(ctx: JobContext, old: Pseudonymiser, new: Pseudonymiser) -> DataFrame:
    """(old token, new token) of every personal id in bronze."""
    ids = None
    for table, columns in personal_bronze(ctx).items():
        for column in columns:
            found = ctx.read(table).select(canonical_id(F.col(column)).alias("id"))
            ids = found if ids is None else ids.unionByName(found)
    if ids is None:
        raise RotationError("rotate-key: no bronze table holds a personal column")
    ids = ids.where(F.col("id").isNotNull() & (F.col("id") != "")).distinct()
    with_old = old.keyed(ids).select("id", old(F.col("id")).alias(OLD))
    return new.keyed(with_old).select(OLD, new(F.col("id")).alias(NEW))


def _retokenised(ctx: JobContext, contract, mapping: DataFrame) -> Output:
    """The table's rows with each token replaced by its new one (merged: rows whose key is
    a token are replaced, the others updated)."""
    rows = ctx.read(contract.name).drop("_run_id", "_content_hash")
    for column in contract.pseudonyms:
        pairs = mapping.select(F.col(OLD).alias("_o"), F.col(NEW).alias("_n"))
        joined = rows.join(pairs, rows[column] == F.col("_o"), "left")
        unmapped = joined.where(F.col(column).isNotNull() & F.col("_n").isNull())
        made = mapping.select(F.col(NEW).alias("_made"))
        strays = unmapped.join(made, F.col(column) == F.col("_made"), "left_anti").count()
        if strays:
            raise RotationError(
                f"rotate-key: {strays} row(s) of {contract.name} hold a {column} that no id in "
                "bronze makes (rows of a retracted file cleanse has not retired yet?): run "
                "cleanse, then rotate again; nothing was written"
            )
        rows = joined.withColumn(column, F.coalesce(F.col("_n"), F.col(column))).drop("_o", "_n")
    return Output(contract.name, rows, mode="merge", retire=_owned(contract))


def _owned(contract) -> str | None:
    """A table keyed by a token loses the old-token rows (retired); others only update."""
    return "true" if set(contract.keys) & set(contract.pseudonyms) else None


def _quarantine(ctx: JobContext, mapping: DataFrame) -> Output:
    """Quarantined payloads with every old token in them replaced by its new one."""
    pairs = {r[OLD]: r[NEW] for r in mapping.collect()}
    shared = ctx.spark.sparkContext.broadcast(pairs)

    @F.pandas_udf("string")
    def swap(payloads: pd.Series) -> pd.Series:
        table = shared.value
        return payloads.map(
            lambda p: p if p is None else _TOKEN.sub(lambda m: table.get(m.group(0), m.group(0)), p)
        )

    rows = ctx.read(QUARANTINE).drop("_run_id", "_content_hash")
    return Output(QUARANTINE, rows.withColumn("payload", swap(F.col("payload"))), mode="merge")
