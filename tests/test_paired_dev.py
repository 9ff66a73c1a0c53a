"""scripts/paired_dev.py: the exact McNemar test, the per-run and per-pair counts, and the checks on its inputs
(the whole command on a reproduction folder: tests/test_reproduce_sst2.py)."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script():
    spec = importlib.util.spec_from_file_location("paired_dev", os.path.join(ROOT, "scripts", "paired_dev.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mcnemar_p_is_the_exact_two_sided_binomial_test():
    module = load_script()
    assert module.mcnemar_p(0, 0) == 1.0
    assert module.mcnemar_p(7, 7) == 1.0
    assert module.mcnemar_p(5, 0) == pytest.approx(2 / 32)  # 5 discordant pairs, all one way
    # 2 x P(X <= 3), X ~ Bin(12, 1/2) = 2 x (1 + 12 + 66 + 220) / 4096
    assert module.mcnemar_p(3, 9) == pytest.approx(2 * 299 / 4096)
    assert module.mcnemar_p(9, 3) == module.mcnemar_p(3, 9)
    # a large uneven split: far below 0.05, and the two-sided p never exceeds 1
    assert module.mcnemar_p(88, 40) < 1e-4
    assert 0 < module.mcnemar_p(6, 5) <= 1.0


def test_analyse_counts_agreement_and_disagreements_by_hand():
    module = load_script()
    # 8 sentences; the teacher is right on 6, the labels-only student on 4, the distilled one on 7
    labels = "11110000"
    predictions = {"dev_sha256": "0" * 64, "labels": labels, "runs": {
        "teacher/s1": "11100001",   # wrong on sentences 4 and 8
        "labels/s1": "11000011",    # wrong on 3, 4, 7 and 8
        "td_aug/s1": "11110001",    # wrong on 8 only
    }}
    lines = module.analyse(predictions)
    table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines
             if line.startswith("| ") and "/s" in line.split("|")[1]}
    assert table["teacher/s1"] == ["75.00", "100.00%", "0", "0"]
    # labels/s1 right on 1, 2, 5, 6 (4 of 8); agrees with the teacher on all but 3 and 7 (6 of 8: on 4 and 8 both
    # are wrong, the same way); the teacher alone is right on 3 and 7
    assert table["labels/s1"] == ["50.00", "75.00%", "2", "0"]
    # td_aug/s1 right on 7; agrees with the teacher on 7 of 8 (not sentence 4, which only it gets right)
    assert table["td_aug/s1"] == ["87.50", "87.50%", "0", "1"]
    pair = next(line for line in lines if line.startswith("| td_aug | labels | 1 |"))
    cells = [c.strip() for c in pair.split("|")[1:-1]]
    # only td_aug right: sentences 3, 4, 7; only labels right: none
    assert cells[3:6] == ["3", "0", f"{100 * 3 / 8:+.2f}"]
    assert float(cells[6]) == pytest.approx(module.mcnemar_p(3, 0), abs=5e-4)
    # pairs whose rows were not run are left out, not reported as zeros
    assert not any(line.startswith("| td | labels |") for line in lines)


def test_read_dev_names_the_line_it_cannot_read(tmp_path):
    module = load_script()
    good = tmp_path / "dev.tsv"
    good.write_text("sentence\tlabel\na fine film .\t1\na dull one .\t0\n", encoding="utf-8")
    sentences, labels, sha = module.read_dev(str(good))
    assert sentences == ["a fine film .", "a dull one ."] and labels == "10" and len(sha) == 64
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\na fine film .\t1\nno label here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.tsv:3: expected 'sentence<TAB>0\|1'"):
        module.read_dev(str(bad))


def test_predictions_of_another_dev_file_are_refused(tmp_path):
    module = load_script()
    ours = {"dev_sha256": "a" * 64, "labels": "10", "runs": {"labels/s1": "10"}}
    theirs = {"dev_sha256": "b" * 64, "labels": "10", "runs": {"td/s1": "11"}}
    with pytest.raises(ValueError, match="another dev file"):
        module.merge(ours, theirs, "RECORD/dev_predictions.json")
    same = dict(theirs, dev_sha256="a" * 64)
    merged = module.merge(ours, same, "x")
    assert merged["runs"] == {"labels/s1": "10", "td/s1": "11"}
    broken = tmp_path / module.PREDICTIONS
    broken.write_text(json.dumps({"labels": "10", "runs": {}}), encoding="utf-8")
    with pytest.raises(ValueError, match="no 'dev_sha256'"):
        module.load_predictions(str(broken))


def test_record_alone_without_predictions_is_a_clear_error(tmp_path):
    module = load_script()
    with pytest.raises(SystemExit) as exc:
        module.main(["--record", str(tmp_path)])
    assert "no predictions in" in str(exc.value) and str(tmp_path) in str(exc.value)
