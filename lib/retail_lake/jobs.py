"""The job registry: name -> the library function `run(ctx) -> JobResult`.

Both `retail-lake run <job>` and `spark-submit jobs/<job>.py` resolve jobs here, so both
call the same function. Imports are lazy: a job's heavy dependencies (torch, horovod) load
only when that job runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

JOBS: dict[str, str] = {
    "ingest": "retail_lake.ingest:run",
    "cleanse": "retail_lake.cleanse:run",
    "features": "retail_lake.features:run",
    "train_forecaster": "retail_lake.forecasting.train:run",
    "forecast": "retail_lake.forecasting.score:run",
    "score_locations": "retail_lake.locations.score:run",
    "recommend": "retail_lake.recommend.job:run",
    "train_image_classifier": "retail_lake.images.train:run",
    "classify_images": "retail_lake.images.score:run",
}

# Jobs whose results depend on a logical date / as-of snapshot.
TIME_DEPENDENT = {"features", "train_forecaster", "forecast", "recommend"}


class UnknownJobError(KeyError):
    def __str__(self) -> str:
        return f"unknown job {self.args[0]!r} (jobs: {', '.join(JOBS)})"


def resolve(name: str) -> Callable:
    if name not in JOBS:
        raise UnknownJobError(name)
    module, func = JOBS[name].split(":")
    return getattr(importlib.import_module(module), func)
