import subprocess
import sys

import pytest

from mdeberta.cli import main
from tests.conftest import SAMPLE


def test_help_lists_the_stages(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "corpus" in capsys.readouterr().out


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "mdeberta", "corpus", "prepare", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--lid-threshold" in result.stdout and "--shard-index" in result.stdout


@pytest.mark.parametrize("argv, message", [
    (["missing-folder"], "input not found: missing-folder"),
    ([str(SAMPLE), "--langs", "en,klingon"], "--langs: unknown language 'klingon'"),
    ([str(SAMPLE), "--langs", "zu"], "no label for 'zu' (Zulu)"),
    ([str(SAMPLE), "--lid-model", "nowhere/lid.176.bin"], "--lid-model: file not found: nowhere/lid.176.bin"),
    ([str(SAMPLE), "--lid-thresholds", "sw"], "'lid_thresholds' takes KEY=NUMBER pairs"),
    ([str(SAMPLE), "--shard-index", "3", "--num-shards", "2"], "--shard-index must be in 0..1"),
    ([str(SAMPLE), "--dedup-task", "0"], "--dedup-task needs --dedup-tasks"),
    ([str(SAMPLE), "--dedup-task", "4", "--dedup-tasks", "4"], "--dedup-task must be in 0..3"),
    ([str(SAMPLE), "--dedup-task", "0", "--dedup-tasks", "4"], "--dedup-task: 15 shard(s) not cleaned yet"),
    ([str(SAMPLE), "--recipe", "nowhere.toml"], "recipe not found: nowhere.toml"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, argv, message):
    assert main(["corpus", "prepare", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("mdeberta: error:")


def test_recipe_section_with_cli_override(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[corpus]\ninputs = ["%s"]\nlangs = ["fr"]\nlid_threshold = 0.9\nmin_doc_words = 5\n' % SAMPLE)
    assert main(["corpus", "prepare", "--out", str(tmp_path / "out"), "--recipe", str(recipe),
                 "--lid-threshold", "0.6", "--no-progress", "--workers", "1"]) == 0
    import json
    saved = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert saved["lid_threshold"] == 0.6 and saved["langs"] == ["fr"] and saved["inputs"] == [str(SAMPLE)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["fr"]


def test_unknown_recipe_key(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[corpus]\nlid_treshold = 0.9\n")
    assert main(["corpus", "prepare", str(SAMPLE), "--out", str(tmp_path / "o"), "--recipe", str(recipe)]) == 2
    assert "unknown key 'lid_treshold' (did you mean 'lid_threshold'?)" in capsys.readouterr().err


def test_languages_command(capsys):
    assert main(["corpus", "languages"]) == 0
    out = capsys.readouterr().out
    assert "| sw " in out and "Swahili" in out and "(none)" in out


def test_unwritable_output_is_one_clear_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["corpus", "prepare", str(SAMPLE), "--out", str(blocker / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mdeberta: error:") and str(blocker) in err and len(err.splitlines()) == 1


def test_help_and_the_corpus_stage_do_not_import_torch(tmp_path):
    """torch and transformers take seconds and hundreds of MB to import; only the model stages need them."""
    code = ("import sys; from mdeberta.cli import main; code = main(sys.argv[1:]); "
            "print(code, sorted(name for name in ('torch', 'transformers') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, "corpus", "prepare", str(SAMPLE), "--out",
                             str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stdout[-500:] + result.stderr[-2000:]
