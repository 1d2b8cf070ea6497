"""A recipe: one TOML file with a section per stage ([corpus] [tokenizer] [pretrain] [xnli]) and
[pipeline]. A stage command reads its own section; the pipeline reads the file once and checks
every section before any stage starts."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .corpora.settings import CorpusSettings
from .model import SHARING
from .pretrain.settings import PretrainSettings
from .settings import SettingsError, build_settings, setting
from .tokenizer.settings import TokenizerSettings
from .xnli.data import DEFAULT_DATA
from .xnli.settings import PROTOCOLS, XnliSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe's sections by name; a missing file or bad TOML is one line."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"recipe not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{path}: not valid TOML ({err})") from None


def section_settings(cls, recipe: str | Path | None, section: str, overrides: dict | None = None):
    """A stage command's settings: defaults, then the recipe's ``[section]`` (when a recipe is
    given), then the flags the user gave."""
    values = read_recipe(recipe).get(section, {}) if recipe is not None else {}
    return build_settings(cls, values, f"{recipe} [{section}]", overrides)


@dataclass
class PipelineSettings:
    xnli_data: str = setting(DEFAULT_DATA, "XNLI data: hub dataset name, a folder of saved datasets per "
                             "language, or a folder holding the unpacked XNLI-1.0/ and XNLI-MT-1.0/")
    xnli_settings: list[str] = setting([], "XNLI settings to run, each in xnli/<setting>/ (default: the [xnli] "
                                       "section's setting)")
    sharing: list[str] = setting([], "pretrain one model per embedding sharing (es, nes, gdes) on the same "
                                 "corpus and tokenizer and compare them in ablation.md (default: one model with "
                                 "the [pretrain] section's sharing)")

    def __post_init__(self):
        for name, allowed in (("xnli_settings", PROTOCOLS), ("sharing", SHARING)):
            unknown = [v for v in getattr(self, name) if v not in allowed]
            if unknown:
                raise SettingsError(f"[pipeline] {name}: {', '.join(map(str, unknown))} not one of "
                                    f"{', '.join(allowed)}")


SECTIONS = {"corpus": CorpusSettings, "tokenizer": TokenizerSettings, "pretrain": PretrainSettings,
            "xnli": XnliSettings, "pipeline": PipelineSettings}


@dataclass
class Recipe:
    """Every section of a recipe, validated before any stage starts."""
    path: Path
    corpus: CorpusSettings
    tokenizer: TokenizerSettings
    pretrain: PretrainSettings
    xnli: XnliSettings
    pipeline: PipelineSettings

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        sections = read_recipe(path)
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            raise SettingsError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}; a recipe has "
                                f"{', '.join(SECTIONS)}")
        recipe = cls(path, **{name: build_settings(kind, sections.get(name, {}), f"{path} [{name}]")
                              for name, kind in SECTIONS.items()})
        recipe.xnli_runs()  # each XNLI setting's settings are checked now, not after pretraining
        return recipe

    @property
    def sharings(self) -> list[str]:
        return list(dict.fromkeys(self.pipeline.sharing)) or [self.pretrain.sharing]

    @property
    def xnli_settings(self) -> list[str]:
        return self.pipeline.xnli_settings or [self.xnli.setting]

    def xnli_runs(self) -> list[XnliSettings]:
        """The [xnli] settings once per XNLI setting to run (``replace`` re-runs their validation)."""
        return [replace(self.xnli, setting=name) for name in self.xnli_settings]
