"""Great Expectations Data Docs: every validation a run performs, rendered under the root.

`quality.validate()` hands each validation to `DataDocs.render()` (passed and failed gates
alike: a failed gate is when an engineer opens the docs); results of quality's Spark engine
first become GX's own validation record (`suite_validation`). See `DataDocs` for how the
site accumulates across runs and processes.
"""

from __future__ import annotations

import fcntl
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retail_lake.config import Config
from retail_lake.contracts import TableContract

log = logging.getLogger(__name__)

DATA_DOCS_DIR = "data_docs"
_SITE = "retail_lake"
_SUITES_STORE = "data_docs_suites"
_RESULTS_STORE = "data_docs_results"


def _local_dir(root: str) -> Path | None:
    """`root` as a local folder, or None for a remote URI (hdfs://, s3a://)."""
    if root.startswith("file:"):
        return Path("/" + root[len("file:") :].lstrip("/"))
    return None if "://" in root else Path(root)


def suite_validation(
    contract: TableContract, expectations: list[Any], results: list[Any], run_id: Any
) -> tuple[Any, Any]:
    """GX's suite and validation record for results evaluated outside GX's engine.

    `results` (GX `ExpectationValidationResult`s, one per expectation) become the
    `ExpectationSuiteValidationResult` that `ValidationDefinition.run` would have returned for
    the pending frame (statistics, batch and run metadata), ready for `DataDocs.render`.
    """
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    source, asset = f"pending_{contract.short_name}", contract.short_name
    stats = calc_validation_statistics(results)
    outcome = ExpectationSuiteValidationResult(
        success=stats.success,
        results=results,
        suite_name=contract.name,
        statistics={
            "evaluated_expectations": stats.evaluated_expectations,
            "successful_expectations": stats.successful_expectations,
            "unsuccessful_expectations": stats.unsuccessful_expectations,
            "success_percent": stats.success_percent,
        },
        meta={
            "great_expectations_version": gx.__version__,
            "batch_spec": {"batch_data": "SparkDataFrame"},
            "batch_markers": {"ge_load_time": run_id.run_time.strftime("%Y%m%dT%H%M%S.%fZ")},
            "active_batch_definition": {
                "datasource_name": source,
                "data_connector_name": "fluent",
                "data_asset_name": asset,
                "batch_identifiers": {"dataframe": "<DATAFRAME>"},
            },
            "checkpoint_id": None,
            "batch_parameters": {"dataframe": "<DATAFRAME>"},
        },
        batch_id=f"{source}-{asset}",
    )
    # As ValidationDefinition.run: set after construction (the run id is not plain JSON).
    outcome.meta["run_id"] = run_id
    outcome.meta["validation_time"] = run_id.run_time
    return gx.ExpectationSuite(name=contract.name, expectations=expectations), outcome


@dataclass(frozen=True)
class DataDocs:
    """A Great Expectations Data Docs site that validations of one run render into.

    The site is GX's own (`SiteBuilder` over a `TupleFilesystemStoreBackend`) in
    `<root>/data_docs/`: `index.html` lists every validation (newest first) by table
    (expectation suite) and run name (the runner's run id), linking its page. GX rebuilds
    the index from its validation results store and deletes pages whose result is not in
    it, so the results (`_results/`) and the latest suite of each table (`_suites/`) are
    stored as JSON beside the site: every run and process adds to the same site and none
    wipes another's pages. A lock file serialises writers on one host.

    A remote root (hdfs://, s3a://) renders nothing (a warning per run): GX writes through
    the local filesystem, and keeping a remote site whole would mean copying the stored
    results down and the site back up on every validation.
    """

    directory: Path
    run_name: str
    # Validations listed on the index page, newest first (0: all). Older pages stay on disk;
    # the index build reads every listed result, so this bounds its cost.
    index_limit: int = 500

    @classmethod
    def for_run(cls, cfg: Config, run_id: str) -> DataDocs | None:
        """The site under `cfg.root` for run `run_id`; None when off or the root is remote."""
        if not cfg.get("quality.data_docs", True):
            return None
        local = _local_dir(cfg.root)
        if local is None:
            log.warning(
                "[%s] Data Docs are not rendered: paths.root %s is not a local folder",
                run_id,
                cfg.root,
            )
            return None
        return cls(local / DATA_DOCS_DIR, run_id, cfg.get("quality.data_docs_index_limit", 500))

    @property
    def index(self) -> Path:
        return self.directory / "index.html"

    def run_identifier(self):
        """The GX run id of a validation in this run: named by the run, timed now."""
        from great_expectations.core.run_identifier import RunIdentifier

        return RunIdentifier(run_name=self.run_name, run_time=datetime.now(UTC))

    def render(self, contract: TableContract, suite: Any, outcome: Any) -> Path | None:
        """Stores `outcome` and renders its page, the suite's page and the index.

        Returns the validation's page, or None (with a warning) when rendering failed: the
        docs never fail a job.
        """
        from great_expectations.data_context.types.resource_identifiers import (
            ExpectationSuiteIdentifier,
            ValidationResultIdentifier,
        )

        clock = time.monotonic()
        try:
            suite_key = ExpectationSuiteIdentifier(name=contract.name)
            result_key = ValidationResultIdentifier(
                expectation_suite_identifier=suite_key,
                run_id=outcome.meta["run_id"],
                batch_identifier=contract.short_name,
            )
            with self._lock():
                context = self._context()
                context.stores[_SUITES_STORE].set(suite_key, suite)
                context.stores[_RESULTS_STORE].set(result_key, outcome)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    context.build_data_docs(
                        site_names=[_SITE], resource_identifiers=[suite_key, result_key]
                    )
            page = self.directory.joinpath(
                "validations", *result_key.to_tuple()[:-1], f"{result_key.to_tuple()[-1]}.html"
            )
        except Exception as exc:  # rendering is a by-product: it must not fail the run
            log.warning(
                "[%s] Data Docs for %s not rendered: %s: %s",
                self.run_name,
                contract.name,
                type(exc).__name__,
                exc,
            )
            return None
        log.debug(
            "[%s] Data Docs page for %s rendered in %.2fs: %s",
            self.run_name,
            contract.name,
            time.monotonic() - clock,
            page,
        )
        return page

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # GX writes index.html and the stores in place: one writer at a time on this host.
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _context(self):
        """An ephemeral GX context whose results and suites stores and site are these files."""
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
        )

        def files(folder: Path) -> dict[str, Any]:
            return {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(folder),
                "suppress_store_backend_id": True,
            }

        defaults = InMemoryStoreBackendDefaults()
        stores = {
            **defaults.stores,
            _SUITES_STORE: {
                "class_name": "ExpectationsStore",
                "store_backend": files(self.directory / "_suites"),
            },
            _RESULTS_STORE: {
                "class_name": "ValidationResultsStore",
                "store_backend": files(self.directory / "_results"),
            },
        }
        index_builder: dict[str, Any] = {"class_name": "DefaultSiteIndexBuilder"}
        if self.index_limit:
            index_builder["validation_results_limit"] = self.index_limit
        site = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": files(self.directory),
            "site_index_builder": index_builder,
            "site_section_builders": {
                "expectations": {"source_store_name": _SUITES_STORE},
                "validations": {"source_store_name": _RESULTS_STORE},
                "profiling": "None",
            },
        }
        config = DataContextConfig(
            store_backend_defaults=defaults,
            stores=stores,
            data_docs_sites={_SITE: site},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import great_expectations as gx

            return gx.get_context(project_config=config, mode="ephemeral")
