"""One BertModel for teacher and student: shapes, masking, dynamic length, heads, explicit init."""
import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor

from src.config import bert_preset
from src.model.bert import ATTENTION_MASK_VALUE, BertModel, BertModelOutput
from src.model.heads import BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification, HeadOutput, count_parameters


def inputs(config, batch=2, seq=8, valid=(8, 5), seed=0):
    """Random ids with the last positions of each row padded (ids 0, mask 0)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.vocab_size, (batch, seq))
    mask = np.zeros((batch, seq), np.int32)
    for row, n in enumerate(valid):
        mask[row, :n] = 1
    types = np.zeros((batch, seq), np.int32)
    types[:, seq // 2:] = 1
    ids = ids * mask
    return Tensor(ids, ms.int32), Tensor(types * mask, ms.int32), Tensor(mask, ms.int32)


def test_output_structure_in_both_modes(tiny_config, mode):
    ms.set_seed(0)
    net = BertModel(tiny_config)
    net.set_train(False)
    out = BertModelOutput(*net(*inputs(tiny_config)))
    b, s, h, n = 2, 8, tiny_config.hidden_size, tiny_config.num_attention_heads
    assert out.sequence_output.shape == (b, s, h)
    assert out.pooled_output.shape == (b, h)
    assert len(out.hidden_states) == tiny_config.num_hidden_layers + 1
    assert all(x.shape == (b, s, h) for x in out.hidden_states)
    assert len(out.attention_scores) == tiny_config.num_hidden_layers
    assert all(x.shape == (b, n, s, s) for x in out.attention_scores)
    np.testing.assert_array_equal(out.hidden_states[-1].asnumpy(), out.sequence_output.asnumpy())


def test_graph_and_pynative_agree(tiny_config):
    ms.set_seed(1)
    net = BertModel(tiny_config)
    net.set_train(False)
    x = inputs(tiny_config)
    eager = net(*x)[0].asnumpy()
    ms.set_context(mode=ms.GRAPH_MODE)
    graph = net(*x)[0].asnumpy()
    np.testing.assert_allclose(graph, eager, atol=1e-5)


def test_padding_does_not_change_valid_positions(tiny_config, mode):
    ms.set_seed(2)
    net = BertModel(tiny_config)
    net.set_train(False)
    ids, types, mask = inputs(tiny_config, valid=(8, 5))
    noisy = ids.asnumpy().copy()
    noisy[1, 5:] = [7, 8, 9]  # change only padded tokens of row 1
    noisy_types = types.asnumpy().copy()
    noisy_types[1, 5:] = 0
    a = BertModelOutput(*net(ids, types, mask))
    b = BertModelOutput(*net(Tensor(noisy, ms.int32), Tensor(noisy_types, ms.int32), mask))
    for ha, hb in zip(a.hidden_states[1:], b.hidden_states[1:]):
        np.testing.assert_allclose(ha.asnumpy()[:, :5], hb.asnumpy()[:, :5], atol=1e-5)
    np.testing.assert_allclose(a.pooled_output.asnumpy(), b.pooled_output.asnumpy(), atol=1e-5)
    assert not np.allclose(a.hidden_states[1].asnumpy()[1, 5:], b.hidden_states[1].asnumpy()[1, 5:])


def test_attention_scores_are_pre_softmax_with_mask_applied(tiny_config):
    net = BertModel(tiny_config)
    net.set_train(False)
    scores = BertModelOutput(*net(*inputs(tiny_config, valid=(8, 5)))).attention_scores[0].asnumpy()
    assert np.all(scores[1, :, :, 5:] < ATTENTION_MASK_VALUE / 2)  # padded keys carry the additive mask
    assert np.all(np.abs(scores[1, :, :, :5]) < 100)  # real keys: raw scaled dot products
    assert not np.allclose(scores.sum(-1), 1.0)  # not probabilities


def test_sequence_length_comes_from_the_input(tiny_config):
    net = BertModel(tiny_config)
    net.set_train(False)
    for seq in (5, 12):
        ids, types, mask = inputs(tiny_config, seq=seq, valid=(seq, seq))
        assert net(ids, types, mask)[0].shape == (2, seq, tiny_config.hidden_size)


def test_dropout_only_in_training(tiny_config):
    net = BertModel(tiny_config)
    x = inputs(tiny_config)
    net.set_train(False)
    np.testing.assert_array_equal(net(*x)[0].asnumpy(), net(*x)[0].asnumpy())
    net.set_train(True)
    assert not np.allclose(net(*x)[0].asnumpy(), net(*x)[0].asnumpy())


@pytest.mark.slow
def test_task_heads_take_the_same_inputs_in_the_same_order(tiny_config, mode):
    x = inputs(tiny_config)
    for net, shape in ((BertForSequenceClassification(tiny_config, 3), (2, 3)),
                       (BertForSequenceClassification(tiny_config, 3, pooled_activation="none"), (2, 3)),
                       (BertForTokenClassification(tiny_config, 5), (2, 8, 5)),
                       (BertForMaskedLM(tiny_config), (2, 8, tiny_config.vocab_size))):
        net.set_train(False)
        out = HeadOutput(*net(input_ids=x[0], token_type_ids=x[1], attention_mask=x[2]))
        assert out.logits.shape == shape
        assert len(out.hidden_states) == tiny_config.num_hidden_layers + 1
        assert len(out.attention_scores) == tiny_config.num_hidden_layers


def test_relu_head_matches_its_definition(tiny_config):
    net = BertForSequenceClassification(tiny_config, 2, pooled_activation="relu")
    net.set_train(False)
    x = inputs(tiny_config)
    pooled = BertModelOutput(*net.bert(*x)).pooled_output.asnumpy()
    w, b = net.classifier.weight.asnumpy(), net.classifier.bias.asnumpy()
    np.testing.assert_allclose(net(*x)[0].asnumpy(), np.maximum(pooled, 0) @ w.T + b, atol=1e-5)
    with pytest.raises(ValueError, match="pooled_activation: got 'tanh'"):
        BertForSequenceClassification(tiny_config, 2, pooled_activation="tanh")


def test_mlm_decoder_is_tied_to_word_embeddings(tiny_config):
    net = BertForMaskedLM(tiny_config)
    names = [p.name for p in net.get_parameters()]
    assert "cls.predictions.bias" in names and not any("decoder" in n for n in names)


def test_every_parameter_gets_a_gradient(tiny_config, mode):
    net = BertForSequenceClassification(tiny_config, 2)
    net.set_train(True)
    x = inputs(tiny_config)

    def loss_fn(*args):
        logits, hidden, scores = net(*args)
        return logits.sum() + hidden[0].mean()

    grads = ms.value_and_grad(loss_fn, None, net.trainable_params())(*x)[1]
    for p, g in zip(net.trainable_params(), grads):
        g = g.asnumpy()
        assert np.all(np.isfinite(g)), p.name
        assert np.abs(g).sum() > 0, p.name
    by_name = {p.name: g.asnumpy() for p, g in zip(net.trainable_params(), grads)}
    # Embedding tables: exactly the rows that were looked up get gradient.
    assert np.abs(by_name["bert.embeddings.position_embeddings.weight"][:8]).sum(1).min() > 0
    assert np.abs(by_name["bert.embeddings.position_embeddings.weight"][8:]).sum() == 0


def test_initialisation_is_explicit(tiny_config):
    ms.set_seed(3)
    config = bert_preset("tinybert-4l-312")
    net = BertModel(config)
    word = net.embeddings.word_embeddings.weight.asnumpy()
    dense = net.encoder.layer[0].attention.self.query.weight.asnumpy()
    for w in (word, dense):
        assert abs(w.std() - 0.0176) < 0.002  # TruncatedNormal(0.02) cut at 2 sigma has std 0.88 * 0.02
        assert np.abs(w).max() <= 2 * 0.02 + 1e-6
    np.testing.assert_array_equal(net.encoder.layer[0].attention.self.query.bias.asnumpy(), 0)
    np.testing.assert_array_equal(net.embeddings.LayerNorm.weight.asnumpy(), 1)


def test_layer_norm_uses_configured_epsilon(tiny_config):
    from src.model.bert import LayerNorm
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32) * 1e-4
    for eps in (1e-12, 1e-2):
        got = LayerNorm(4, eps)(Tensor(x)).asnumpy()
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        np.testing.assert_allclose(got, (x - mu) / np.sqrt(var + eps), rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_parameter_counts_of_presets():
    # Paper TinyBERT-4: 14.5M in the paper's table counts the 312->768 projection; the encoder is 14.35M.
    assert count_parameters(BertModel(bert_preset("tinybert-4l-312"))) == 14_350_248
    assert count_parameters(BertModel(bert_preset("bert-base-uncased"))) == 109_482_240
