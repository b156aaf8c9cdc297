"""A fresh lake fed from the real data sets, for the benches that run jobs end to end."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@contextmanager
def landed(*sources: str) -> Iterator[list[str]]:
    """`--set` items for a fresh lake root and a landing folder that links
    ../shared/data/<source> for each of `sources`; both removed afterwards.

    Raises:
        SystemExit: a data set is missing.
    """
    for name in sources:
        if not (SHARED / name).exists():
            raise SystemExit(f"{SHARED / name} is missing: the real {name} data is needed")
    work = Path(tempfile.mkdtemp(prefix="retail-lake-bench-"))
    try:
        landing = work / "landing"
        landing.mkdir()
        for name in sources:
            (landing / name).symlink_to(SHARED / name, target_is_directory=True)
        yield [f"paths.root={work / 'lake'}", f"paths.landing={landing}"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
