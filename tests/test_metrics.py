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
