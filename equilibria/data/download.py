"""Fetching data files: look for them on disk, download when allowed, explain when neither works."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from .base import DataNotFoundError

TIMEOUT_SECONDS = 30.0


def find_file(folders: Sequence[Path], names: Sequence[str]) -> Path | None:
    """The first existing file among every folder x name, or None."""
    for folder in folders:
        for name in names:
            path = folder / name
            if path.is_file():
                return path
    return None


def download(urls: Sequence[str], destination: Path) -> list[str]:
    """Download the first of `urls` that answers into `destination` (atomically).

    Returns the failures as "url: reason" lines; an empty list means the file is in place.
    """
    failures = []
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.part")
    for url in urls:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "equilibria"})
            with (
                urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response,
                open(partial, "wb") as out,
            ):
                shutil.copyfileobj(response, out)
            os.replace(partial, destination)
            return []
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            failures.append(f"{url}: {reason}")
        finally:
            partial.unlink(missing_ok=True)
    return failures


def fetch(
    what: str,
    folder: Path,
    names: Sequence[str],
    urls: Sequence[str],
    *,
    allow_download: bool,
    search: Sequence[Path] = (),
    instructions: str,
) -> Path:
    """The path of a data file: found in `folder` (or `search`), else downloaded, else an error.

    Args:
        what: a human name for the file ("the MNIST training images").
        folder: the data folder; a download lands here under `names[0]`.
        names: accepted file names, preferred first.
        urls: where to download from, tried in order.
        allow_download: whether to try downloading at all.
        search: extra folders to look in (after `folder`).
        instructions: how to get the file by hand, for the error message.
    """
    folders = [folder, *search]
    found = find_file(folders, names)
    if found is not None:
        return found
    looked = ", ".join(str(f) for f in folders)
    shown = ", ".join(names)
    if not allow_download:
        raise DataNotFoundError(
            f"{what} not found: looked in {looked} for {shown}; downloading is off "
            f"(data.download=false). {instructions}"
        )
    destination = folder / names[0]
    failures = download(urls, destination)
    if failures:
        raise DataNotFoundError(
            f"{what} not found: looked in {looked} for {shown}, and the download failed "
            f"(offline?): {'; '.join(failures)}. {instructions}"
        )
    return destination
