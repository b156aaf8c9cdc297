"""The archive spark-submit ships to the driver and executors (`--py-files`).

    python -m retail_lake.package --out dist/retail_lake.zip [--conf conf]

The zip holds the `retail_lake` package from where it is installed (the checkout's `lib/`
for an editable install) and the checkout's `conf/` folder as `retail_lake/_conf/`, so a
cluster run imports the library, and can find its configuration, without the checkout.
`__pycache__` folders and compiled files are left out.
"""

from __future__ import annotations

import argparse
import logging
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import retail_lake

log = logging.getLogger(__name__)

PACKAGE = "retail_lake"
CONF_IN_ARCHIVE = f"{PACKAGE}/_conf"
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}


class PackageError(RuntimeError):
    """The archive cannot be built: a missing package or conf folder."""


def package_dir() -> Path:
    """The folder `retail_lake` is imported from."""
    return Path(retail_lake.__file__).resolve().parent


def default_conf_dir() -> Path:
    """The checkout's `conf/` folder beside `lib/` (where an editable install points)."""
    return package_dir().parents[1] / "conf"


def _files(folder: Path) -> Iterator[Path]:
    """Files under `folder`, sorted, without caches and compiled files."""
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part in _SKIP_DIRS for part in relative.parts):
            continue
        if path.is_file() and path.suffix not in _SKIP_SUFFIXES:
            yield path


def build_archive(out: str | Path, conf_dir: str | Path | None = None) -> Path:
    """Writes the zip of the package and its configuration.

    Args:
        out: the zip to write (its folder is created; an existing file is replaced).
        conf_dir: the conf folder to bundle as `retail_lake/_conf`; the checkout's `conf/`
            when omitted.

    Returns:
        The absolute path of the archive.

    Raises:
        PackageError: the package is itself inside an archive, or the conf folder has no
            `base.yaml`.
    """
    source = package_dir()
    if not (source / "__init__.py").is_file():
        raise PackageError(
            f"{PACKAGE} is not imported from a folder ({source}): "
            "build the archive from a checkout or an installed package"
        )
    conf = Path(conf_dir).resolve() if conf_dir else default_conf_dir()
    if not (conf / "base.yaml").is_file():
        raise PackageError(f"no base.yaml in {conf}: pass the conf folder with --conf")
    target = Path(out).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    count = 0
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in _files(source):
            archive.write(path, f"{PACKAGE}/{path.relative_to(source).as_posix()}")
            count += 1
        for path in _files(conf):
            archive.write(path, f"{CONF_IN_ARCHIVE}/{path.relative_to(conf).as_posix()}")
            count += 1
    # Replace atomically: a spark-submit reading the old archive never sees half a zip.
    partial.replace(target)
    log.info("wrote %s: %d files from %s and %s", target, count, source, conf)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: builds the archive and prints its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default="dist/retail_lake.zip",
        help="the zip to write (default: dist/retail_lake.zip)",
    )
    parser.add_argument("--conf", help="conf folder to bundle (default: the checkout's conf/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = build_archive(args.out, args.conf)
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
