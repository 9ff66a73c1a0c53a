"""Distillation stages on tiny configs: losses fall, every trained parameter gets a gradient, the teacher is frozen."""
import dataclasses
import re
import numpy as np
import mindspore as ms
import pytest

from src.config import BertConfig, DistillConfig, StageConfig, resolve_layer_map
from src.distill.loss import LOSS_TERMS, DistillError, DistillLoss, build_fit_dense
from src.model.bert import BertModel
from src.model.heads import BertForSequenceClassification, BertForTokenClassification
from src.training.step import TrainStep
from src.training.optim import lr_at, parameter_groups

TEACHER = BertConfig(vocab_size=99, hidden_size=48, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
STUDENT = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
PAIRS = resolve_layer_map("uniform", 4, 2)  # (0, 0), (1, 2), (2, 4)


def batch(ner=False):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 99, (4, 12)).astype(np.int32)
    mask = np.ones((4, 12), np.int32)
    mask[1, 8:] = 0
    mask[3, 5:] = 0
    ids[mask == 0] = 0
    labels = np.where(mask == 1, rng.integers(0, 3, (4, 12)), -1).astype(np.int32) if ner else \
        np.array([0, 1, 1, 0], np.int32)
    return [ms.Tensor(ids), ms.Tensor(np.zeros_like(ids)), ms.Tensor(mask), ms.Tensor(labels)]


def build(stage, ner=False, fit="shared"):
    ms.set_seed(3)
    if stage == "gd":
        student, teacher = BertModel(STUDENT), BertModel(TEACHER)
    elif ner:
        student, teacher = BertForTokenClassification(STUDENT, 3), BertForTokenClassification(TEACHER, 3)
    else:
        student, teacher = BertForSequenceClassification(STUDENT, 2), BertForSequenceClassification(TEACHER, 2)
    if stage == "prediction":  # a confident teacher, so the soft targets are far from the student's start
        weight = teacher.classifier.weight
        weight.set_data(weight * 200.0)
    fit_dense = build_fit_dense(STUDENT, TEACHER, PAIRS, fit) if stage in ("gd", "intermediate") else None
    teacher_arg = None if stage == "finetune" else teacher
    net = DistillLoss(student, teacher_arg, stage, DistillConfig(), PAIRS, "ner" if ner else "classification",
                      fit_dense)
    return net, student, teacher


CASES = [("gd", False), ("intermediate", False), ("prediction", False), ("prediction", True), ("finetune", False),
         ("intermediate", True)]


@pytest.mark.slow
@pytest.mark.parametrize("stage,ner", CASES)
def test_stage_trains_in_graph_mode(stage, ner):
    net, student, teacher = build(stage, ner)
    params = net.optimizer_params()
    teacher_before = {p.name: p.asnumpy().copy() for p in teacher.get_parameters()}
    step = TrainStep(net, params, StageConfig(lr=2e-3, warmup_ratio=0.0), total_steps=100, graph=True)
    data = batch(ner)
    totals = []
    for _ in range(6):
        outputs, finite, norm, scale = step.step(*data)
        assert bool(finite) and np.isfinite(float(norm))
        totals.append(float(outputs[0]))
    terms = dict(zip(LOSS_TERMS, [float(v) for v in outputs[1:]]))
    assert all(np.isfinite(totals))
    assert totals[-1] < totals[0] * 0.9, totals
    if stage in ("gd", "intermediate"):
        assert terms["attention"] > 0 and terms["hidden"] > 0 and terms["embedding"] > 0
        assert terms["prediction"] == 0 and terms["hard_label"] == 0
        assert totals[-1] == pytest.approx(terms["attention"] + terms["hidden"] + terms["embedding"], rel=1e-5)
    elif stage == "prediction":
        assert terms["prediction"] > 0 and terms["attention"] == 0
    else:
        assert terms["hard_label"] > 0 and totals[-1] == pytest.approx(terms["hard_label"], rel=1e-6)
    assert step.global_step == 6
    for p in teacher.get_parameters():  # frozen, never in the optimizer
        np.testing.assert_array_equal(p.asnumpy(), teacher_before[p.name])
        assert all(p is not q for q in params)


@pytest.mark.parametrize("stage,ner", CASES)
def test_every_trained_parameter_gets_a_gradient(stage, ner):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net, student, _ = build(stage, ner, fit="per_layer")
    params = net.optimizer_params()
    grad_fn = ms.value_and_grad(lambda *b: net(*b)[0], None, params)
    _, grads = grad_fn(*batch(ner))
    no_grad = [p.name for p, g in zip(params, grads) if not np.any(g.asnumpy())]
    assert not no_grad, no_grad
    names = {p.name for p in params}
    if stage == "gd":  # the pooler is unused by GD losses and is left out of the optimizer
        assert not any(".pooler." in n for n in names)
    if stage == "intermediate":
        assert not any("classifier" in n or ".pooler." in n for n in names)
        assert sum("fit_dense" in n for n in names) == 2 * len(PAIRS)
    if stage in ("prediction", "finetune"):
        assert not any("fit_dense" in n for n in names)
        unused = 2 if ner else 0  # NER never uses the pooler
        assert len(params) == len(list(student.trainable_params())) - unused


@pytest.mark.slow
def test_gradients_match_finite_differences():
    """The step's gradient of the GD loss agrees with a central difference on one weight."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net, student, _ = build("gd")
    params = net.optimizer_params()
    data = batch()
    target = next(p for p in params if "encoder.layer.1.intermediate.dense.weight" in p.name)
    grad_fn = ms.value_and_grad(lambda *b: net(*b)[0], None, [target])
    _, (grad,) = grad_fn(*data)
    original = target.asnumpy().copy()
    eps = 1e-2
    for index in [(0, 0), (5, 3)]:
        values = []
        for sign in (1, -1):
            changed = original.copy()
            changed[index] += sign * eps
            target.set_data(ms.Tensor(changed))
            values.append(float(net(*data)[0]))
        target.set_data(ms.Tensor(original))
        numeric = (values[0] - values[1]) / (2 * eps)
        assert grad.asnumpy()[index] == pytest.approx(numeric, rel=0.05, abs=1e-4)


def test_overflow_step_is_skipped_and_scale_halved():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net, student, _ = build("finetune")
    step = TrainStep(net, net.optimizer_params(), StageConfig(), total_steps=10, graph=False)
    data = batch()
    before = {p.name: p.asnumpy().copy() for p in student.get_parameters()}
    scale = step.loss_scale
    bad = data[:]
    weight = student.classifier.weight
    saved = weight.asnumpy().copy()
    weight.set_data(ms.Tensor(np.full_like(saved, np.inf)))
    _, finite, _, _ = step.step(*bad)
    weight.set_data(ms.Tensor(saved))
    assert not bool(finite)
    assert step.loss_scale == scale / 2 and step.global_step == 0
    for p in student.get_parameters():
        if p.name != weight.name:
            np.testing.assert_array_equal(p.asnumpy(), before[p.name])


def test_attention_loss_needs_equal_heads():
    other = BertConfig(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                       intermediate_size=37, max_position_embeddings=64)
    with pytest.raises(DistillError, match="student.num_attention_heads=3, teacher.num_attention_heads=4"):
        DistillLoss(BertModel(other), BertModel(TEACHER), "gd", DistillConfig(), PAIRS,
                    fit_dense=build_fit_dense(other, TEACHER, PAIRS, "shared"))
    # without the attention term the pair is fine
    DistillLoss(BertModel(other), BertModel(TEACHER), "gd", DistillConfig(attention_weight=0.0), PAIRS,
                fit_dense=build_fit_dense(other, TEACHER, PAIRS, "shared"))


def test_learning_rate_schedule_and_groups():
    stage = StageConfig(lr=1e-4, end_lr=0.0, warmup_ratio=0.1, power=1.0)
    assert lr_at(stage, 0, 100) == 0.0
    assert lr_at(stage, 5, 100) == pytest.approx(5e-5)
    assert lr_at(stage, 10, 100) == pytest.approx(9e-5)  # decay measured from step 0 (Google BERT, the reference)
    assert lr_at(stage, 100, 100) == 0.0
    net, _, _ = build("prediction")
    groups = parameter_groups(net.optimizer_params(), StageConfig(weight_decay=0.01))
    decay = {p.name for p in groups[0]["params"]}
    no_decay = {p.name for p in groups[1]["params"]}
    assert all("LayerNorm" in n or n.endswith("bias") for n in no_decay)
    assert not any("LayerNorm" in n or n.endswith("bias") for n in decay)
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0


# ---- student initialisation from the teacher --------------------------------------------------------
def _named(net):
    from src.model.checkpoint import named_parameters
    return {n: p.asnumpy() for n, p in named_parameters(net)}


@pytest.mark.parametrize("mode, expected", [("teacher_lower_layers", [0, 1]), ("teacher_mapped_layers", [1, 3])])
def test_student_init_copies_the_chosen_teacher_layers(tiny_config, mode, expected):
    from src.distill.student_init import copy_teacher_layers
    ms.set_seed(3)
    teacher = BertForSequenceClassification(dataclasses.replace(tiny_config, num_hidden_layers=4), 3)
    student = BertForSequenceClassification(tiny_config, 3)
    pairs = resolve_layer_map("uniform", 4, 2)  # student 1 <- teacher 2, student 2 <- teacher 4 (1-based)
    assert copy_teacher_layers(student, teacher, mode, pairs) == expected
    t, s = _named(teacher), _named(student)
    for name, value in s.items():
        source = re.sub(r"encoder\.layer\.(\d+)\.", lambda m: f"encoder.layer.{expected[int(m.group(1))]}.", name)
        np.testing.assert_array_equal(value, t[source], err_msg=f"{name} <- {source}")
    # The classifier came from the teacher too, and the layers really differ (the check above is not vacuous).
    assert any("classifier" in n for n in s)
    assert not np.array_equal(t["bert.encoder.layer.0.output.dense.weight"], t["bert.encoder.layer.1.output.dense.weight"])


def test_teacher_selected_cuts_every_weight_to_the_student_by_the_same_evenly_spaced_indices(tiny_config):
    """Teacher 4 layers x 32 wide (4 heads of 8, FFN 37); student 2 layers x 18 (3 heads of 6, FFN 20). Every
    student tensor is the mapped teacher layer's, cut by indices written out here, independently of the code."""
    from src.distill.student_init import copy_teacher_layers
    ms.set_seed(5)
    teacher = BertForSequenceClassification(dataclasses.replace(tiny_config, num_hidden_layers=4), 3)
    student_cfg = dataclasses.replace(tiny_config, hidden_size=18, num_attention_heads=3, intermediate_size=20)
    student = BertForSequenceClassification(student_cfg, 3)
    assert copy_teacher_layers(student, teacher, "teacher_selected", resolve_layer_map("uniform", 4, 2)) == [1, 3]
    t, s = _named(teacher), _named(student)
    h = [0, 1, 3, 5, 7, 8, 10, 12, 14, 16, 17, 19, 21, 23, 24, 26, 28, 30]  # 18 of 32: (i * 32) // 18
    heads = [0, 1, 2]                                                      # 3 of 4 heads: (i * 4) // 3
    inside = [0, 1, 2, 4, 5, 6]                                            # 6 of 8 dimensions: (i * 8) // 6
    qkv = [head * 8 + d for head in heads for d in inside]
    f = [(i * 37) // 20 for i in range(20)]
    layer = {0: 1, 1: 3}  # student layer <- teacher layer (0-based)
    for name, value in s.items():
        src = re.sub(r"encoder\.layer\.(\d+)\.", lambda m: f"encoder.layer.{layer[int(m.group(1))]}.", name)
        want = t[src]
        if "embeddings" in name and name.endswith("embeddings.weight"):
            want = want[:, h]
        elif "LayerNorm" in name or name.endswith(("output.dense.bias", "pooler.dense.bias")):
            want = want[h]
        elif re.search(r"(query|key|value)\.weight$", name):
            want = want[qkv][:, h]
        elif re.search(r"(query|key|value)\.bias$", name):
            want = want[qkv]
        elif name.endswith("attention.output.dense.weight"):
            want = want[h][:, qkv]
        elif name.endswith("intermediate.dense.weight"):
            want = want[f][:, h]
        elif name.endswith("intermediate.dense.bias"):
            want = want[f]
        elif name.endswith("output.dense.weight"):
            want = want[h][:, f]
        elif name.endswith("pooler.dense.weight"):
            want = want[h][:, h]
        elif name == "classifier.weight":
            want = want[:, h]
        else:
            assert name == "classifier.bias", name
        np.testing.assert_array_equal(value, want, err_msg=f"{name} <- {src}")
    # a teacher as wide as the student: selection keeps everything, the same start as teacher_mapped_layers
    same = BertForSequenceClassification(tiny_config, 3)
    copy_teacher_layers(same, teacher, "teacher_selected", resolve_layer_map("uniform", 4, 2))
    mapped = BertForSequenceClassification(tiny_config, 3)
    copy_teacher_layers(mapped, teacher, "teacher_mapped_layers", resolve_layer_map("uniform", 4, 2))
    for (name, a), b in zip(_named(same).items(), _named(mapped).values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    # another label count: everything but the classifier, which stays as the student's own init
    other = BertForSequenceClassification(student_cfg, 5)
    before = _named(other)["classifier.weight"]
    copy_teacher_layers(other, teacher, "teacher_selected", resolve_layer_map("uniform", 4, 2))
    np.testing.assert_array_equal(_named(other)["classifier.weight"], before)


def test_gd_config_starts_its_student_by_selection_from_its_own_teacher_and_student_presets():
    """gd_config.yaml's default start (teacher_selected) works for the shapes it names: BERT-base (12 x 768, 12 heads
    of 64, FFN 3072) into TinyBERT-4 (4 x 312, 12 heads of 26, FFN 1200) and into the zoo's 4 x 384 student its
    comment offers, through the layer map it gives (student layer i <- teacher layer 3i)."""
    import os
    from conftest import ROOT
    from src.config import bert_preset, load_config
    from src.distill.student_init import copy_teacher_layers
    cfg = load_config(os.path.join(ROOT, "gd_config.yaml"))
    assert cfg.checkpoint.student_init == "teacher_selected"
    ms.set_seed(11)
    teacher = BertModel(cfg.teacher)
    t = _named(teacher)
    for student_cfg in (cfg.student, bert_preset("ms-zoo-tinybert-4l-384")):
        student = BertModel(student_cfg)
        pairs = resolve_layer_map(cfg.distill.layer_map, cfg.teacher.num_hidden_layers, student_cfg.num_hidden_layers)
        assert copy_teacher_layers(student, teacher, cfg.checkpoint.student_init, pairs) == [2, 5, 8, 11]
        s = _named(student)
        width, heads = student_cfg.hidden_size, student_cfg.num_attention_heads
        h = (np.arange(width) * 768) // width
        inside = (np.arange(width // heads) * 64) // (width // heads)
        qkv = (np.arange(12)[:, None] * 64 + inside[None, :]).reshape(-1)
        f = (np.arange(student_cfg.intermediate_size) * 3072) // student_cfg.intermediate_size
        np.testing.assert_array_equal(s["embeddings.word_embeddings.weight"],
                                      t["embeddings.word_embeddings.weight"][:, h])
        np.testing.assert_array_equal(s["encoder.layer.3.attention.self.query.weight"],
                                      t["encoder.layer.11.attention.self.query.weight"][qkv][:, h])
        np.testing.assert_array_equal(s["encoder.layer.0.output.dense.weight"],
                                      t["encoder.layer.2.output.dense.weight"][h][:, f])


def test_attention_heads_are_contiguous_blocks_of_the_query_and_key_rows(tiny_config):
    """What teacher_selected relies on: head j's scores come from rows j*d .. (j+1)*d - 1 of the query and key
    weights (the layout its "qkv" indices assume), checked against the model's own attention scores."""
    from src.model.bert import ATTENTION_SCORES, HIDDEN_STATES
    ms.set_seed(7)
    net = BertModel(tiny_config)
    net.set_train(False)
    rng = np.random.default_rng(0)
    ids = ms.Tensor(rng.integers(0, tiny_config.vocab_size, (2, 5)).astype(np.int32))
    ones = ms.Tensor(np.ones((2, 5), np.int32))
    out = net(ids, ms.Tensor(np.zeros((2, 5), np.int32)), ones)
    x = out[HIDDEN_STATES][0].asnumpy()  # the embeddings' output: layer 0's input
    scores = out[ATTENTION_SCORES][0].asnumpy()  # [B, N, S, S]
    p = _named(net)
    q = x @ p["encoder.layer.0.attention.self.query.weight"].T + p["encoder.layer.0.attention.self.query.bias"]
    k = x @ p["encoder.layer.0.attention.self.key.weight"].T + p["encoder.layer.0.attention.self.key.bias"]
    d = tiny_config.hidden_size // tiny_config.num_attention_heads
    for j in range(tiny_config.num_attention_heads):
        block = slice(j * d, (j + 1) * d)
        want = q[..., block] @ np.swapaxes(k[..., block], -1, -2) / np.sqrt(d)
        np.testing.assert_allclose(scores[:, j], want, rtol=1e-4, atol=1e-5, err_msg=f"head {j}")


def test_teacher_selected_refuses_a_student_wider_than_its_teacher(tiny_config):
    from src.config import ConfigError
    from src.distill.student_init import copy_teacher_layers
    teacher = BertModel(dataclasses.replace(tiny_config, num_hidden_layers=4))
    # the way out is named: the configs that start from the teacher by default (gd_config.yaml) can start randomly
    with pytest.raises(ConfigError, match=r"student hidden_size <= teacher hidden_size \(40 vs 32\); or start the "
                                          r"student from a random init: --checkpoint.student_init=random"):
        copy_teacher_layers(BertModel(dataclasses.replace(tiny_config, hidden_size=40)), teacher,
                            "teacher_selected", resolve_layer_map("uniform", 4, 2))
    with pytest.raises(ConfigError, match=r"attention head size .* \(16 vs 8\)"):  # 2 heads of 16 from heads of 8
        copy_teacher_layers(BertModel(dataclasses.replace(tiny_config, num_attention_heads=2)), teacher,
                            "teacher_selected", resolve_layer_map("uniform", 4, 2))


def test_student_init_refuses_other_widths_and_unmapped_layers(tiny_config):
    from src.config import ConfigError
    from src.distill.student_init import copy_teacher_layers
    teacher = BertModel(dataclasses.replace(tiny_config, num_hidden_layers=4))
    with pytest.raises(ConfigError, match="student.hidden_size == teacher.hidden_size"):
        copy_teacher_layers(BertModel(dataclasses.replace(tiny_config, hidden_size=16)), teacher,
                            "teacher_mapped_layers", resolve_layer_map("uniform", 4, 2))
    with pytest.raises(ConfigError, match=r"student layer\(s\) \[2\]"):
        copy_teacher_layers(BertModel(tiny_config), teacher, "teacher_mapped_layers", ((0, 0), (1, 2)))
