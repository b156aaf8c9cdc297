"""Configuration: layering, overrides, environment, and each error naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from retail_lake.config import ConfigError, load_config, parse_set

REPO_CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "base.yaml").write_text((REPO_CONF / "base.yaml").read_text())
    return tmp_path


def write_profile(conf_dir: Path, name: str, data: dict) -> None:
    (conf_dir / "profiles" / f"{name}.yaml").write_text(yaml.safe_dump(data))


def test_profile_overlays_base_and_set_overrides_profile(conf_dir):
    write_profile(conf_dir, "p", {"spark": {"master": "local[3]", "shuffle_partitions": 3}})
    cfg = load_config("p", ["spark.shuffle_partitions=5"], conf_dir=conf_dir, environ={})
    assert cfg.get("spark.master") == "local[3]"  # from the profile
    assert cfg.get("spark.shuffle_partitions") == 5  # --set wins over the profile
    assert cfg.get("spark.driver_memory") == "4g"  # untouched base default
    assert cfg.profile == "p"


def test_set_values_are_typed_and_free_form_maps_accept_new_keys(conf_dir):
    write_profile(conf_dir, "p", {})
    cfg = load_config(
        "p",
        ["forecast.learning_rate=1", "spark.conf.spark.executor.cores=2", "spark.ui_enabled=true"],
        conf_dir=conf_dir,
        environ={},
    )
    assert cfg.get("forecast.learning_rate") == 1.0
    assert isinstance(cfg.get("forecast.learning_rate"), float)
    assert cfg.get("spark.conf") == {"spark.executor.cores": 2}
    assert cfg.get("spark.ui_enabled") is True


def test_environment_overrides_root(conf_dir, tmp_path):
    write_profile(conf_dir, "p", {})
    cfg = load_config("p", conf_dir=conf_dir, environ={"RETAIL_LAKE_ROOT": str(tmp_path / "x")})
    assert cfg.root == str(tmp_path / "x")


def test_relative_root_becomes_absolute(conf_dir, tmp_path, monkeypatch):
    write_profile(conf_dir, "p", {})
    monkeypatch.chdir(tmp_path)
    cfg = load_config("p", conf_dir=conf_dir, environ={})
    assert cfg.root == str(tmp_path / "lake")
    uri = load_config("p", ["paths.root=s3a://bucket/lake"], conf_dir=conf_dir, environ={})
    assert uri.root == "s3a://bucket/lake"


def test_unknown_key_in_profile_names_file_and_key(conf_dir):
    write_profile(conf_dir, "p", {"spark": {"mastr": "local[1]"}})
    with pytest.raises(ConfigError) as err:
        load_config("p", conf_dir=conf_dir, environ={})
    assert "unknown key 'spark.mastr'" in str(err.value)
    assert "p.yaml" in str(err.value)


def test_unknown_key_in_set(conf_dir):
    write_profile(conf_dir, "p", {})
    with pytest.raises(ConfigError, match="unknown key 'forecast.epoch'"):
        load_config("p", ["forecast.epoch=3"], conf_dir=conf_dir, environ={})


def test_wrong_type_names_key_and_expected_type(conf_dir):
    write_profile(conf_dir, "p", {"forecast": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="'forecast.epochs' must be a integer, got string"):
        load_config("p", conf_dir=conf_dir, environ={})
    write_profile(conf_dir, "q", {})
    with pytest.raises(ConfigError, match="'spark.ui_enabled' must be a boolean"):
        load_config("q", ["spark.ui_enabled=3"], conf_dir=conf_dir, environ={})


def test_missing_profile_lists_the_available_ones(conf_dir):
    write_profile(conf_dir, "local", {})
    with pytest.raises(ConfigError, match=r"profile 'nope' not found.*profiles: local"):
        load_config("nope", conf_dir=conf_dir, environ={})


def test_missing_base_file(tmp_path):
    (tmp_path / "profiles").mkdir()
    with pytest.raises(ConfigError, match="config file not found: .*base.yaml"):
        load_config("local", conf_dir=tmp_path, environ={})


def test_invalid_yaml_names_the_file(conf_dir):
    (conf_dir / "profiles" / "bad.yaml").write_text("spark: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config("bad", conf_dir=conf_dir, environ={})


def test_bad_set_syntax_and_backend(conf_dir):
    write_profile(conf_dir, "p", {})
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config("p", ["spark.master"], conf_dir=conf_dir, environ={})
    with pytest.raises(ConfigError, match="training.backend must be one of"):
        load_config("p", ["training.backend=mpi"], conf_dir=conf_dir, environ={})


@pytest.mark.parametrize("profile", ["local", "test", "cluster"])
def test_shipped_profiles_load(profile):
    cfg = load_config(profile, environ={})
    assert cfg.get("spark.master")


def test_set_reaches_into_a_free_form_map_a_profile_filled(conf_dir):
    write_profile(conf_dir, "p", {"spark": {"conf": {"spark.executor.memory": "2g"}}})
    cfg = load_config(
        "p",
        ["spark.conf.spark.executor.memory=1g", "spark.conf.spark.executor.cores=1"],
        conf_dir=conf_dir,
        environ={},
    )
    assert cfg.get("spark.conf") == {"spark.executor.memory": "1g", "spark.executor.cores": 1}


def test_config_loads_from_the_shipped_archive(tmp_path):
    import os
    import subprocess
    import sys

    from retail_lake.package import build_archive

    archive = build_archive(tmp_path / "retail_lake.zip")
    probe = (
        "import retail_lake; from retail_lake.config import load_config, find_conf_dir; "
        "cfg = load_config('cluster'); "
        "print(retail_lake.__file__); print(find_conf_dir()); print(cfg.get('spark.master'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "RETAIL_LAKE_CONF_DIR"}
    env["PYTHONPATH"] = str(archive)
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        text=True,
        capture_output=True,
        check=True,
    ).stdout.splitlines()
    assert out[0].startswith(str(archive))  # imported from the zip, not the checkout
    assert out[1].startswith(str(archive)) and out[1].rstrip("/").endswith("_conf")
    assert out[2] == "spark://127.0.0.1:7077"


def test_a_day_given_unquoted_is_text():
    # YAML reads 2011-12-09 as a date; a text key such as recommend.as_of keeps it as written.
    cfg = load_config("test", ["recommend.as_of=2011-12-09"])
    assert cfg.get("recommend.as_of") == "2011-12-09"


def test_root_must_name_a_folder_and_tilde_is_the_home_folder(conf_dir, monkeypatch, tmp_path):
    write_profile(conf_dir, "p", {})
    for value in ("", "  "):
        with pytest.raises(ConfigError, match="paths.root is empty"):
            load_config("p", [f"paths.root={value}"], conf_dir=conf_dir, environ={})
    with pytest.raises(ConfigError, match="paths.root is the filesystem's root"):
        load_config("p", ["paths.root=/"], conf_dir=conf_dir, environ={})
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_config("p", ["paths.root=~"], conf_dir=conf_dir, environ={}).root == str(tmp_path)
    lake = load_config("p", ["paths.root=~/lake"], conf_dir=conf_dir, environ={})
    assert lake.root == str(tmp_path / "lake")
    # Only a path reads ~ as the home folder; elsewhere it is YAML's null.
    assert parse_set("paths.landing=~") == ("paths.landing", "~")
    assert parse_set("recommend.as_of=~") == ("recommend.as_of", None)


def test_a_conf_dir_named_in_the_environment_must_hold_base_yaml(monkeypatch, tmp_path):
    monkeypatch.setenv("RETAIL_LAKE_CONF_DIR", str(tmp_path / "nonexistent"))
    with pytest.raises(ConfigError, match="RETAIL_LAKE_CONF_DIR=.*nonexistent: no base.yaml"):
        load_config("local", environ={})
    monkeypatch.setenv("RETAIL_LAKE_CONF_DIR", str(REPO_CONF))
    assert load_config("test", environ={}).profile == "test"


def test_the_documented_training_backends_are_accepted(conf_dir):
    write_profile(conf_dir, "p", {})
    for backend in ("horovod", "torch_distributor", "in_process"):
        cfg = load_config("p", [f"training.backend={backend}"], conf_dir=conf_dir, environ={})
        assert cfg.get("training.backend") == backend


def test_secret_values_are_redacted_in_the_recorded_run_parameters():
    from retail_lake.pipeline import _params
    from retail_lake.redaction import REDACTED, redact

    params = redact(
        {
            **_params(
                "ingest",
                None,
                [
                    "spark.conf.spark.hadoop.fs.s3a.secret.key=wJalrXUtnFEMI",
                    "spark.conf.spark.hadoop.fs.s3a.access.key=AKIAIOSFODNN7",
                    "spark.conf.spark.hadoop.fs.azure.sas.key=sv=2020&sig=abc",
                    "spark.conf.fs.azure.account.key.acct.dfs.core.windows.net=c2VjcmV0",
                    "spark.conf.spark.hadoop.fs.s3a.encryption.key=a2V5",
                    "mlflow.tracking_uri=postgresql://analyst:hunter2@db:5432/mlflow",
                    "privacy.key_env=MY_KEY_VARIABLE",
                    "forecast.epochs=3",
                ],
            ),
            # A statement `retail-lake sql --allow-writes` records.
            "statement": "SET spark.hadoop.fs.s3a.secret.key = wJalrXUtnFEMI",
            "options": "CREATE TABLE t USING jdbc OPTIONS (user 'a', password 'hunter2')",
            "query": "SELECT customer_token, store FROM silver.transactions",
        }
    )
    assert params == {
        "set.spark.conf.spark.hadoop.fs.s3a.secret.key": REDACTED,
        "set.spark.conf.spark.hadoop.fs.s3a.access.key": REDACTED,
        "set.spark.conf.spark.hadoop.fs.azure.sas.key": REDACTED,
        "set.spark.conf.fs.azure.account.key.acct.dfs.core.windows.net": REDACTED,
        "set.spark.conf.spark.hadoop.fs.s3a.encryption.key": REDACTED,
        "set.mlflow.tracking_uri": f"postgresql://analyst:{REDACTED}@db:5432/mlflow",
        "set.privacy.key_env": "MY_KEY_VARIABLE",  # the variable's name, not a secret
        "set.forecast.epochs": "3",
        "statement": f"SET spark.hadoop.fs.s3a.secret.key = {REDACTED}",
        "options": f"CREATE TABLE t USING jdbc OPTIONS (user 'a', password {REDACTED})",
        "query": "SELECT customer_token, store FROM silver.transactions",  # names only
    }


def test_jvm_options_of_a_profile_reach_the_driver_beside_the_utc_time_zone(spark):
    """The test profile's JIT options are added to the session's own `-Duser.timezone=UTC`,
    and the running driver JVM has both (its input arguments, read from the JVM itself)."""
    from retail_lake.config import load_config

    wanted = load_config("test")["spark"]["conf"]["spark.driver.extraJavaOptions"].split()
    assert wanted and all(o.startswith("-XX:") for o in wanted)
    jvm = spark.sparkContext._jvm
    args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert "-Duser.timezone=UTC" in args
    assert set(wanted) <= set(args)
    assert jvm.java.util.TimeZone.getDefault().getID() == "UTC"


def test_the_driver_starts_from_the_class_archive_install_made(spark):
    """With the class archive `./setup_cluster.sh install` writes (`spark.class_archive`), the
    test session's JVM maps it (its memory map names the file); without the file, no option."""
    import os

    from retail_lake.class_archive import is_current
    from retail_lake.config import load_config
    from retail_lake.session import jvm_options

    assert jvm_options("") == "" and jvm_options("/nonexistent/classes.jsa") == ""
    path = load_config("test")["spark"]["class_archive"]
    if not is_current(path):
        pytest.skip(f"no current class archive at {path}: ./setup_cluster.sh install makes it")
    jvm = spark.sparkContext._jvm
    args = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert f"-XX:SharedArchiveFile={path}" in args
    pid = jvm.java.lang.ProcessHandle.current().pid()
    with open(f"/proc/{pid}/maps", encoding="utf-8") as fh:
        mapped = {line.split(maxsplit=5)[-1].strip() for line in fh if "/" in line}
    assert os.path.realpath(path) in mapped


def test_a_metastore_uri_where_nothing_answers_is_an_error_saying_what_to_start():
    import socket

    from retail_lake.session import check_metastore

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        check_metastore(f"thrift://127.0.0.1:{port}")  # answers: no error
        # Hive's list form: the first that answers is enough.
        check_metastore(f"thrift://127.0.0.1:1,thrift://127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="no metastore answers there.*metastore start"):
        check_metastore(f"thrift://127.0.0.1:{port}", timeout=1)
    with pytest.raises(ConfigError, match="is not thrift://HOST:PORT"):
        check_metastore("http://127.0.0.1:9083")
