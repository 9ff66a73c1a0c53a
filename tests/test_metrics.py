"""Task metrics: accuracy, entity-level span F1 (BIOES, BMES, BIO), binary F1, correlations."""
import numpy as np
import pytest

from src import metrics


def test_accuracy_and_errors():
    assert metrics.accuracy(np.array([1, 0, 1, 1]), np.array([1, 1, 1, 0])) == 0.5
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        metrics.accuracy(np.array([1, 0, 1]), np.array([1, 1]))


def test_entity_spans_bioes_bmes_bio():
    bioes = ["B-name", "I-name", "E-name", "O", "S-address", "B-game", "E-game"]
    assert metrics.entity_spans(bioes) == {("name", 0, 2), ("address", 4, 4), ("game", 5, 6)}
    bmes = ["B-name", "M-name", "E-name", "S-book"]
    assert metrics.entity_spans(bmes) == {("name", 0, 2), ("book", 3, 3)}
    bio = ["B-org", "I-org", "O", "B-per", "B-per", "I-per"]
    assert metrics.entity_spans(bio) == {("org", 0, 1), ("per", 3, 3), ("per", 4, 5)}


def test_entity_spans_ill_formed_pieces_are_not_entities():
    # BIOES: B never closed, I of another type, E without B
    assert metrics.entity_spans(["B-name", "I-name", "O", "E-name", "S-book"]) == {("book", 4, 4)}
    assert metrics.entity_spans(["B-name", "I-game", "E-name", "S-x"]) == {("x", 3, 3)}


def test_entity_f1_counts_exact_spans():
    gold = [["B-name", "E-name", "O", "S-book"], ["O", "B-game", "I-game", "E-game"]]
    pred = [["B-name", "E-name", "O", "O"], ["O", "B-game", "E-game", "O"]]  # 1 of 2 predicted right, 1 of 3 gold
    result = metrics.entity_f1(pred, gold)
    assert result["precision"] == pytest.approx(0.5)
    assert result["recall"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert result["per_type"]["name"]["f1"] == 1.0 and result["per_type"]["game"]["f1"] == 0.0


def test_evaluate_ner_logits_both_layouts():
    names = ["O", "B-name", "I-name", "E-name", "S-name"]
    labels = np.array([[-1, 1, 3, 0, -1, -1], [-1, 4, 0, -1, -1, -1]])
    pred_ids = np.array([[0, 1, 3, 0, 2, 2], [0, 4, 4, -0, 1, 1]])
    logits = np.eye(5)[pred_ids]  # [2, 6, 5]
    a = metrics.evaluate("entity_f1", logits, labels, names)
    b = metrics.evaluate("entity_f1", logits.reshape(-1, 5), labels, names)  # [B*S, C] as the 310 program writes
    # Scored positions only: gold spans {(name, 0, 1)}, {(name, 0, 0)}; predicted {(name, 0, 1)}, {(name, 0, 0),
    # (name, 1, 1)}: precision 2/3, recall 1, F1 0.8.
    assert a["precision"] == pytest.approx(2 / 3) and a["recall"] == 1.0
    assert a["f1"] == b["f1"] == pytest.approx(0.8)
    assert a["score"] == a["f1"] and a["examples"] == 2


def test_evaluate_accuracy_f1_pearson():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 1, 1, 1])
    assert metrics.evaluate("accuracy", logits, labels)["score"] == 0.75
    assert metrics.evaluate("f1", logits, labels)["score"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    y = np.array([2.0, 4.0, 6.0, 8.0, 11.0])
    result = metrics.evaluate("pearson", x[:, None], y)
    assert result["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert result["spearman"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="metric 'bleu'"):
        metrics.evaluate("bleu", logits, labels)


def test_mcc_matches_the_binary_formula_by_hand():
    # TP=3 (1,1), TN=2 (0,0), FP=1 (label 0, predicted 1), FN=2 (label 1, predicted 0)
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 1])
    predictions = np.array([1, 1, 1, 0, 0, 1, 0, 0])
    tp, tn, fp, fn = 3, 2, 1, 2
    by_hand = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(by_hand)
    assert by_hand == pytest.approx(4 / np.sqrt(4 * 5 * 3 * 4))
    assert metrics.confusion_matrix(predictions, labels, 2).tolist() == [[tn, fp], [fn, tp]]


def test_mcc_multiclass_is_the_k_class_form_and_agrees_with_correlation():
    # K classes: (c s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)), computed here from the counts
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    predictions = np.array([0, 1, 1, 1, 2, 0, 2, 0])
    s, c = 8, 6
    t = np.array([3, 2, 3])  # true counts
    p = np.array([3, 3, 2])  # predicted counts
    expected = (c * s - p @ t) / np.sqrt((s * s - p @ p) * (s * s - t @ t))
    assert metrics.matthews_corrcoef(predictions, labels, 3) == pytest.approx(expected)
    # two classes: MCC equals Pearson's correlation of the 0/1 vectors
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    assert metrics.matthews_corrcoef(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("predictions,labels", [
    ([1, 1, 1, 1], [0, 1, 0, 1]),   # constant predictions
    ([0, 1, 0, 1], [1, 1, 1, 1]),   # constant labels
    ([0, 0, 0], [0, 0, 0]),         # one class everywhere
])
def test_mcc_of_a_constant_is_zero_not_nan(predictions, labels):
    value = metrics.matthews_corrcoef(np.array(predictions), np.array(labels))
    assert value == 0.0 and not np.isnan(value)


def test_mcc_extremes_and_errors():
    labels = np.array([0, 1, 1, 0])
    assert metrics.matthews_corrcoef(labels, labels) == 1.0
    assert metrics.matthews_corrcoef(1 - labels, labels) == -1.0
    with pytest.raises(ValueError, match=r"label 2 is not a class id in \[0, 2\)"):
        metrics.matthews_corrcoef(np.array([0, 1]), np.array([0, 2]))
    with pytest.raises(ValueError, match="no examples"):
        metrics.matthews_corrcoef(np.array([], int), np.array([], int))


def test_evaluate_mcc_and_f1_report_accuracy_and_pearson_reports_spearman():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    labels = np.array([0, 1, 1, 1, 0])  # predictions 0 1 0 1 0: TP 2, TN 2, FP 0, FN 1
    result = metrics.evaluate("mcc", logits, labels)
    assert result["score"] == result["mcc"] == pytest.approx(4 / np.sqrt(2 * 3 * 2 * 3))
    assert result["accuracy"] == 0.8 and result["examples"] == 5
    f1 = metrics.evaluate("f1", logits, labels)
    assert f1["score"] == f1["f1"] == pytest.approx(0.8) and f1["accuracy"] == 0.8
    constant = metrics.evaluate("mcc", np.tile([[1.0, 0.0]], (5, 1)), labels)
    assert constant["score"] == 0.0 and constant["accuracy"] == 0.4
    scores = np.array([0.0, 1.2, 2.5, 3.8, 5.0], np.float32)
    result = metrics.evaluate("pearson", np.array([[0.1], [1.0], [2.9], [3.0], [4.8]]), scores)
    assert result["spearman"] == 1.0 and 0.95 < result["pearson"] < 1.0 and result["score"] == result["pearson"]
    with pytest.raises(ValueError, match=r"pearson: logits \(5, 2\).*expected \[N\] or \[N, 1\]"):
        metrics.evaluate("pearson", logits, scores)
    with pytest.raises(ValueError, match=r"mcc: logits \(5,\).*expected \[N, C\] and \[N\]"):
        metrics.evaluate("mcc", scores, labels)
