"""Acceptance on real text: the UDHR in the 15 XNLI languages (not shipped; skipped when absent)."""

import importlib.util

import pytest

from tests.conftest import ROOT, UDHR

pytestmark = pytest.mark.skipif(not UDHR.is_dir(), reason=f"UDHR sample not found at {UDHR} (set MDEBERTA_UDHR)")


def test_document_language_accuracy_at_default_settings():
    spec = importlib.util.spec_from_file_location("udhr_langid", ROOT / "benchmarks" / "udhr_langid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.language_accuracy(UDHR)
    print("\n" + table.to_markdown(floatfmt=".3f"))
    assert table.loc["all", "documents"] == 15 * 31
    assert table.loc["all", "accuracy"] >= 0.99
