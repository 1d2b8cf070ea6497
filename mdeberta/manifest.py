"""Stage manifests: what a finished stage read, with which settings, and what it wrote.

A rerun whose inputs and output-relevant settings equal the manifest's is skipped. Inputs are
fingerprinted by size and modification time, not content hashes: hashing a 2.5 TB corpus on every
rerun would cost more than the check saves.
"""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .storage import write_text_atomic

MANIFEST = "manifest.json"


def package_versions(*names: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("mdeberta", *names):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def is_complete(out: Path, inputs: list[dict], settings: dict) -> bool:
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return manifest.get("inputs") == _jsonable(inputs) and manifest.get("settings") == _jsonable(settings)


def write_manifest(out: Path, stage: str, inputs: list[dict], settings: dict, started: float,
                   outputs: dict | None = None, packages: tuple[str, ...] = ()) -> None:
    manifest = {
        "stage": stage,
        "inputs": inputs,
        "settings": settings,
        "outputs": outputs or {},
        "versions": package_versions(*packages),
        "elapsed_s": round(time.time() - started, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(out / MANIFEST, manifest)


def file_stamp(path: Path) -> dict:
    """A file's size and modification time: a rewritten file gets a new stamp, a copy made with
    its times (``cp -a``, ``rsync -a``) keeps it, and nothing is read."""
    stat = Path(path).stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n")
