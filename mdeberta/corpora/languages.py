"""Language codes users can select with ``--langs``: ISO codes, English names and groups.

Output folders are named by the language-ID model's labels (lid.176 uses ISO 639-1 where one
exists, e.g. ``zh`` for both CC-100 files ``zh-Hans`` and ``zh-Hant``).
"""

from __future__ import annotations

import csv
import difflib
from pathlib import Path

from ..errors import UserError

XNLI_LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur")

# CC-100's files (statmt codes, with XLM-R's Table 6 sizes) as shipped in cc100_languages.csv.
# Romanised and script variants (hi_rom, zh-Hant, my_zaw) fold into the base language, which is
# what a language-ID model labels them.
CC100_TABLE = Path(__file__).with_name("cc100_languages.csv")


def _cc100_languages() -> dict[str, str]:
    with CC100_TABLE.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = {}
    for row in rows:
        base = row["code"].split("_")[0].split("-")[0]
        names.setdefault(base, row["name"].split(" (")[0])
    return names


CC100_LANGUAGES = _cc100_languages()

GROUPS = {"xnli": XNLI_LANGUAGES, "cc100": tuple(sorted(CC100_LANGUAGES))}

_BY_NAME = {name.lower(): code for code, name in CC100_LANGUAGES.items()}


class UnknownLanguageError(UserError, ValueError):
    pass


def resolve_languages(spec: str | list[str] | tuple[str, ...], known_labels: set[str] | None = None) -> list[str]:
    """Expand a ``--langs`` value ("xnli", "en,fr", "swahili", ["de", "cc100"]) into codes.

    With ``known_labels`` (the LID model's labels) a code may also be any label of the model, and
    must be one: a language the model cannot emit would silently produce nothing. Members of a
    group that the model lacks are left out instead.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    codes: list[str] = []
    for raw in filter(None, (item.strip() for item in items)):
        if raw.lower() in GROUPS:
            codes.extend(c for c in GROUPS[raw.lower()] if known_labels is None or c in known_labels)
            continue
        code = _BY_NAME.get(raw.lower())
        if code is None and (raw in CC100_LANGUAGES or raw in (known_labels or ())):
            code = raw
        if code is None:
            choices = sorted(set(CC100_LANGUAGES) | set(_BY_NAME) | set(GROUPS) | (known_labels or set()))
            close = difflib.get_close_matches(raw.lower(), choices, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UnknownLanguageError(
                f"--langs: unknown language '{raw}'.{hint} Use ISO codes or English names, or the "
                "groups 'xnli' and 'cc100' (`mdeberta corpus languages` lists them).")
        if known_labels is not None and code not in known_labels:
            raise UnknownLanguageError(
                f"--langs: the language-ID model has no label for '{code}' ({CC100_LANGUAGES.get(code, code)}); "
                "use a model that covers it, e.g. GlotLID, with --lid-model.")
        codes.append(code)
    return list(dict.fromkeys(codes))
