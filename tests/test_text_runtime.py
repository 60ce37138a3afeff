"""Text models on the device side: a real WordPiece tokenizer shipped in the bundle, int64 (input_ids,
attention_mask) feeds with dynamic batch and sequence axes, export parity over several lengths, dynamic INT8 /
FP16 / static INT8, `edgekd verify` and `edgekd bench`, the example app, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.deploy.errors import ChecksumMismatch, InputFileError, UsageError
from edgekd.deploy.runtime import load_bundle
from edgekd.deploy.runtime.text import TextPreprocessing
from tests.conftest import ROOT, blocked_env, run_cli

tokenizers = pytest.importorskip("tokenizers")

MAX_LENGTH = 48
LABELS = ("negative", "positive", "sizing")
#: (text, label) — real-looking product reviews; label 2 is about the fit
REVIEWS = [
    ("lovely fabric and the colour is exactly as shown", 1), ("terrible quality, the seams split", 0),
    ("runs small, order one size up", 2), ("beautiful dress, I wore it to a wedding", 1),
    ("the material feels cheap and scratchy", 0), ("fits true to size and very comfortable", 2),
    ("perfect for summer evenings, light and soft", 1), ("it shrank after the first wash", 0),
    ("too tight around the shoulders", 2), ("great value for the price", 1),
    ("the zipper broke on day two", 0), ("sleeves are far too long for me", 2),
    ("gorgeous print, I get compliments every time", 1), ("faded badly, very disappointed", 0),
    ("runs large, I had to return it for a smaller size", 2), ("soft, warm and well made", 1),
    ("arrived with a hole in the seam", 0), ("the waist is snug but the hips are loose", 2),
    ("my favourite sweater this winter", 1), ("the colour looks nothing like the photos", 0),
    ("length is perfect for a tall person", 2), ("elegant and flattering, highly recommend", 1),
    ("poorly stitched and the buttons fell off", 0), ("order a size down, it is roomy", 2),
    ("so comfortable I bought two", 1), ("thin fabric, you can see through it", 0),
    ("the fit is boxy and short", 2), ("lovely detail on the collar", 1),
    ("pilled after a week of wear", 0), ("tight in the chest, fine elsewhere", 2),
    ("the best jeans I have owned", 1), ("smells of chemicals and feels stiff", 0),
    ("sizing chart is accurate", 2), ("stylish and easy to dress up or down", 1),
    ("returned it, the quality is awful", 0), ("fits petite frames well", 2),
    ("cosy and soft, lovely colour", 1), ("the lining ripped the first time I wore it", 0),
    ("legs are too short even on the long size", 2), ("beautiful cut and a lovely drape", 1),
    ("cheap looking and badly finished", 0), ("one size fits all but it does not", 2),
    ("wonderful quality for everyday wear", 1), ("the stitching came undone quickly", 0),
    ("runs narrow in the feet", 2), ("bright, cheerful and well made", 1),
    ("not worth the money at all", 0), ("generous fit, size down if between sizes", 2),
    ("café naïve élan — très chic", 1), ("meh 😐 the print cracked", 0),
]


def train_tokenizer(texts):
    """A small real WordPiece tokenizer (BERT-style normaliser and [CLS] … [SEP] template)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def tiny_text_model(vocab: int, classes: int):
    """Embedding → masked mean pool → MLP: padding-invariant by construction."""
    import torch

    class TinyText(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(vocab, 24, padding_idx=0)
            self.head = torch.nn.Sequential(torch.nn.Linear(24, 32), torch.nn.ReLU(), torch.nn.Linear(32, classes))

        def forward(self, input_ids, attention_mask):
            mask = attention_mask.unsqueeze(-1).to(torch.float32)
            pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(pooled)

    return TinyText()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """Tokenizer + trained tiny model + its verified ONNX export + a bundle."""
    import torch

    from edgekd.deploy.bundle import manifest_for, write_bundle
    from edgekd.deploy.export import export_metadata, export_verified

    torch.manual_seed(0)
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("text")
    texts, labels = [t for t, _ in REVIEWS], np.array([y for _, y in REVIEWS])
    tok = train_tokenizer(texts)
    tok.save(str(folder / "tokenizer.json"))
    pre = TextPreprocessing(max_length=MAX_LENGTH)
    train = pre.encode(texts, tok, padding="max_length")
    model = tiny_text_model(tok.get_vocab_size(), len(LABELS))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    ids, mask, y = (torch.from_numpy(train["input_ids"]), torch.from_numpy(train["attention_mask"]),
                    torch.from_numpy(labels))
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(ids, mask), y).backward()
        opt.step()
    model.eval()
    feeds = text_feeds(pre, tok)
    example = (ids[:2], mask[:2])
    outcome = export_verified(model, example, folder / "student.onnx", feeds,
                              input_names=list(pre.input_names), output_names=["logits"],
                              dynamic_axes=text_axes(pre), dim_max=pre.axis_sizes(),
                              metadata=export_metadata("test", preprocessing=pre, labels=list(LABELS)))
    manifest = manifest_for(outcome.path, pre, LABELS)
    bundle = write_bundle(folder / "bundle", outcome.path, manifest,
                          extra_files={"tokenizer.json": folder / "tokenizer.json"})
    return {"folder": folder, "tok": tok, "pre": pre, "model": model, "onnx": outcome.path, "bundle": bundle,
            "outcome": outcome, "texts": texts, "labels": labels}


def text_axes(pre: TextPreprocessing) -> dict:
    return {**{n: {0: "batch", 1: "sequence"} for n in pre.input_names}, "logits": {0: "batch"}}


def text_feeds(pre: TextPreprocessing, tok, lengths=(5, 16, 33, MAX_LENGTH), n: int = 8) -> list[dict]:
    """Real token feeds of exactly each length (texts long enough, truncated by the contract)."""
    from dataclasses import replace

    out = []
    for length in lengths:
        texts = [" ".join(t for t, _ in REVIEWS[i:i + 12]) for i in range(n)]
        out.append(replace(pre, max_length=length).encode(texts, tok, padding="max_length"))
    return out


def torch_logits(model, feed: dict) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])).numpy()


def test_export_parity_over_lengths_and_batches(text_run):
    """(d) The export gate ran on real token feeds of several lengths at batch 1, 3 and 8 — and a fresh check
    against PyTorch agrees at lengths and batches it did not see."""
    from edgekd.deploy.verify import check_parity_feeds, sequence_feeds

    outcome = text_run["outcome"]
    assert outcome.parity.passed and outcome.parity.max_abs_diff <= 1e-4
    shapes = {line.rsplit("[input ", 1)[1] for line in outcome.parity.lines}
    assert shapes == {"5]", "16]", "33]", f"{MAX_LENGTH}]"}, outcome.parity.lines
    pre, tok, model = text_run["pre"], text_run["tok"], text_run["model"]
    feeds = text_feeds(pre, tok, lengths=(3, 7, 24))
    report = check_parity_feeds(lambda f: torch_logits(model, f), text_run["onnx"], feeds, batch_sizes=(1, 3, 8))
    assert report.samples == 24 and report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0
    cut = sequence_feeds(pre.encode(text_run["texts"][:6], tok, padding="max_length"), lengths=(2, 9, 500))
    assert [f["input_ids"].shape for f in cut] == [(6, 2), (6, 9), (6, MAX_LENGTH)]
    report = check_parity_feeds(lambda f: torch_logits(model, f), text_run["onnx"], cut, batch_sizes=(1, 3))
    assert report.passed and len(report.lines) == 3


def test_bundle_carries_the_tokenizer_and_names_it(text_run):
    bundle = text_run["bundle"]
    manifest = json.loads((bundle / "model.json").read_text())
    assert manifest["task"] == "text-classification" and manifest["files"] == {"tokenizer": "tokenizer.json"}
    assert [(i["name"], i["dtype"], i["shape"]) for i in manifest["inputs"]] == [
        ("input_ids", "int64", ["batch", "sequence"]), ("attention_mask", "int64", ["batch", "sequence"])]
    assert "tokenizer.json" in (bundle / "SHA256SUMS").read_text()


def test_write_bundle_refuses_a_text_bundle_without_a_readable_tokenizer(text_run, tmp_path):
    from edgekd.deploy.bundle import manifest_for, write_bundle

    manifest = manifest_for(text_run["onnx"], text_run["pre"], LABELS)
    with pytest.raises(UsageError, match="needs its tokenizer"):
        write_bundle(tmp_path / "a", text_run["onnx"], manifest)
    bad = tmp_path / "tok.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(InputFileError, match="not a tokenizers JSON file"):
        write_bundle(tmp_path / "b", text_run["onnx"], manifest, extra_files={"tokenizer.json": bad})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_bundle_predicts_strings_without_torch_or_transformers(text_run, tmp_path):
    """(a) Raw strings in, labels out, with torch, transformers and onnx unavailable; same logits as PyTorch."""
    texts = ["runs small, lovely fabric", "the seams split after a wash", "café naïve 😐", ""]
    code = ("import json, sys, numpy as np\n"
            "from edgekd.deploy.runtime import load_bundle\n"
            "p = load_bundle(sys.argv[1])\n"
            "labels, probs = p.predict(json.loads(sys.argv[2]))\n"
            "logits = p.logits(p.preprocess(json.loads(sys.argv[2])))\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'onnx'))\n"
            "assert not bad, bad\n"
            "print(json.dumps({'labels': labels, 'logits': logits.tolist()}))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(text_run["bundle"]), json.dumps(texts)],
                          env=blocked_env(tmp_path, "torch", "transformers", "onnx"), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    ref = torch_logits(text_run["model"], text_run["pre"].encode(texts, text_run["tok"]))
    np.testing.assert_allclose(np.array(got["logits"]), ref, atol=1e-4)
    assert got["labels"] == [LABELS[i] for i in ref.argmax(1)]


@pytest.mark.parametrize("text", ["café naïve", "Café NAÏVE élan", "meh 😐 👗 the print cracked", "",
                                  "lovely " * 200, "zxqv unseen-wordpiece ☃ 中文"])
def test_bundle_tokenizer_matches_the_training_tokenizer(text_run, text):
    """(b) The tokenizer read from the bundle gives the training tokenizer's ids (truncated to max_length, the
    [SEP] kept), on accents, emoji, an empty and an over-long text."""
    from tokenizers import Tokenizer

    pre, bundle = text_run["pre"], text_run["bundle"]
    feed = pre.feed([text], ["input_ids", "attention_mask"], bundle)
    reference = Tokenizer.from_str(text_run["tok"].to_str())
    reference.enable_truncation(MAX_LENGTH)
    want = reference.encode(text).ids
    assert feed["input_ids"].dtype == np.int64 and feed["attention_mask"].dtype == np.int64
    assert feed["input_ids"][0].tolist() == want and feed["attention_mask"][0].tolist() == [1] * len(want)
    assert len(want) <= MAX_LENGTH and want[0] == 2 and want[-1] == 3
    if len(text) > 1000:
        assert len(want) == MAX_LENGTH
    assert text_run["tok"].truncation is None and text_run["tok"].padding is None  # left as it was


def test_exported_model_is_padding_invariant(text_run):
    """(c) Padding to the batch's longest text or to max_length gives the same logits (the device pads to the
    longest); a text alone gives the same logits as inside a batch."""
    from edgekd.deploy.runtime.ort import OnnxrtRunner

    pre, tok, texts = text_run["pre"], text_run["tok"], text_run["texts"][:10]
    longest, full = pre.encode(texts, tok), pre.encode(texts, tok, padding="max_length")
    assert longest["input_ids"].shape[1] < full["input_ids"].shape[1] == MAX_LENGTH
    with OnnxrtRunner(text_run["onnx"], threads=1) as runner:
        a, b = runner.infer(longest)["logits"], runner.infer(full)["logits"]
        alone = runner.infer(pre.encode(texts[:1], tok))["logits"]
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(alone[0], a[0], atol=1e-5)


def test_dynamic_int8_fp16_and_static_int8_text_models(text_run):
    """(e) ONNX Runtime dynamic INT8 (MatMul + the embedding Gather), FP16 and static INT8 (calibrated on int64
    token feeds, which stay int64) load, keep the int64 inputs and agree with FP32 on the sentences."""
    from edgekd.deploy.quantize import quantize
    from edgekd.deploy.runtime.ort import OnnxrtRunner

    pre, tok, folder = text_run["pre"], text_run["tok"], text_run["folder"]
    feed = pre.encode(text_run["texts"], tok, padding="max_length")
    with OnnxrtRunner(text_run["onnx"], threads=1) as runner:
        ref = runner.infer(feed)["logits"]
    for mode in ("dynamic", "fp16", "static"):
        res = quantize(mode, text_run["onnx"], folder / f"{mode}.onnx", feed, min_calib_samples=1) \
            if mode == "static" else quantize(mode, text_run["onnx"], folder / f"{mode}.onnx", feed)
        with OnnxrtRunner(res.path, threads=1) as runner:
            assert [(s.name, s.dtype) for s in runner.inputs()] == [("input_ids", "int64"),
                                                                   ("attention_mask", "int64")]
            got = runner.infer(pre.encode(text_run["texts"], tok))["logits"]  # padded to the longest
        agree = float((got.argmax(1) == ref.argmax(1)).mean())
        assert agree >= 0.9, (mode, agree)
        assert np.abs(got - ref).max() < (0.01 if mode == "fp16" else 0.5), mode
    import onnx

    ops = {n.op_type for n in onnx.load(str(folder / "dynamic.onnx")).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops


def test_verify_and_bench_cli_on_a_text_bundle(text_run, tmp_path):
    """(f) `edgekd verify` and `edgekd bench` pass on a text bundle; bench reports one row per batch and
    sequence length (clipped to max_length), each with tokenization and end-to-end times."""
    from edgekd.benchmarks.results import load_results

    ok = run_cli("verify", str(text_run["bundle"]))
    assert ok.returncode == 0, ok.stderr
    assert "preprocessing text" in ok.stdout and "inference" in ok.stdout
    out = tmp_path / "bench.json"
    proc = run_cli("bench", str(text_run["bundle"]), "--batch", "1,4", "--seq-len", "16,64", "--threads", "1",
                   "--min-runs", "5", "--min-time-s", "0", "--warmup-runs", "1", "--warmup-s", "0", "--rounds", "1",
                   "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "tokenize" in proc.stdout and "by sequence length" in proc.stdout
    rows = load_results(out).artifacts
    assert sorted((r.batch, r.seq_len) for r in rows) == [(1, 16), (1, MAX_LENGTH), (4, 16), (4, MAX_LENGTH)]
    for r in rows:
        assert r.latency.p50 > 0 and r.tokenize.p50 > 0 and r.end_to_end.p50 >= r.latency.min
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(json.loads(out.read_text()), json.loads((ROOT / "docs" / "results.schema.json").read_text()))


def test_bench_a_bare_text_onnx_file_without_a_tokenizer(text_run):
    from edgekd.benchmarks.bench import Timing, bench_models

    rows = bench_models([text_run["onnx"]], batches=(2,), threads=1, seq_lens=(8, 500),
                        timing=Timing(0, 1, 3, 0, 1))
    assert [(r.batch, r.seq_len, r.error) for r in rows] == [(2, 8, None), (2, MAX_LENGTH, None)]
    assert all(r.tokenize is None and r.latency.runs >= 3 for r in rows)


def test_bad_text_input_is_refused_clearly(text_run):
    with load_bundle(text_run["bundle"], threads=1) as predictor:
        with pytest.raises(UsageError, match="no texts given"):
            predictor.predict([])
        with pytest.raises(UsageError, match=r"text #1 is a bytes"):
            predictor.predict(["fine", b"bytes"])
        with pytest.raises(UsageError, match="list of strings"):
            predictor.predict(42)
        labels, probs = predictor.predict("one string alone")
        assert len(labels) == 1 and probs.shape == (1, len(LABELS))


def test_missing_or_tampered_tokenizer(text_run, tmp_path):
    """(g) A bundle without its tokenizer, or with a changed one, fails with one line and exit code 5; a
    folder without the tokenizer file (no bundle) names the file and the fix."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(text_run["bundle"], bundle)
    (bundle / "tokenizer.json").unlink()
    gone = run_cli("verify", str(bundle))
    assert gone.returncode == 5 and "Traceback" not in gone.stderr
    assert "tokenizer.json" in gone.stderr.splitlines()[0] and "missing" in gone.stderr.splitlines()[0]
    shutil.copy(text_run["folder"] / "tokenizer.json", bundle / "tokenizer.json")
    tok = json.loads((bundle / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["the"], vocab["and"] = vocab["and"], vocab["the"]  # a subtly different tokenizer
    (bundle / "tokenizer.json").write_text(json.dumps(tok))
    tampered = run_cli("bench", str(bundle))
    assert tampered.returncode == 5 and "checksum mismatch" in tampered.stderr and "tokenizer.json" in tampered.stderr
    with pytest.raises(ChecksumMismatch, match="tokenizer.json"):
        load_bundle(bundle)
    with pytest.raises(InputFileError, match=r"tokenizer file not found: .*tokenizer\.json") as err:
        text_run["pre"].feed(["hello"], ["input_ids", "attention_mask"], tmp_path)
    assert "edgekd bundle" in err.value.hint
    (tmp_path / "tokenizer.json").write_text("{ not json")
    with pytest.raises(InputFileError, match="cannot read tokenizer"):
        text_run["pre"].feed(["hello"], ["input_ids", "attention_mask"], tmp_path)


EXAMPLE = ROOT / "deploy" / "examples" / "classify_text.py"


def test_classify_text_example_matches_the_bundle_with_no_edgekd(text_run, tmp_path):
    """deploy/examples/classify_text.py needs numpy, onnxruntime and tokenizers only: edgekd, torch,
    transformers and onnx are all blocked; its labels and probabilities are load_bundle's."""
    texts = ["runs small, order a size up", "terrible quality, the zipper broke", "café naïve 😐"]
    env = blocked_env(tmp_path, "edgekd", "torch", "transformers", "onnx")
    proc = subprocess.run([sys.executable, str(EXAMPLE), str(text_run["bundle"]), *texts, "--top", "2"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with load_bundle(text_run["bundle"], threads=1) as predictor:
        labels, probs = predictor.predict(texts)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, label, row, text in zip(lines, labels, probs, texts, strict=True):
        first, p1, _, p2, shown = line.split("\t")
        assert first == label and shown == text and abs(float(p1) - row.max()) < 1e-4
        assert float(p2) <= float(p1)
    piped = subprocess.run([sys.executable, str(EXAMPLE), str(text_run["bundle"]), "-"], input="\n".join(texts),
                           env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert piped.returncode == 0 and [ln.split("\t")[0] for ln in piped.stdout.splitlines()] == labels


def test_classify_text_example_refuses_a_tampered_bundle(text_run, tmp_path):
    import shutil

    copy = Path(shutil.copytree(text_run["bundle"], tmp_path / "bundle"))
    with open(copy / "tokenizer.json", "a") as f:
        f.write(" ")
    proc = subprocess.run([sys.executable, str(EXAMPLE), str(copy), "hello"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "checksum mismatch" in proc.stderr and "tokenizer.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_text_contract_is_parsed_strictly():
    from edgekd.deploy.runtime.preprocess import parse_preprocessing
    from edgekd.deploy.typed import DocumentError

    pre = parse_preprocessing({"kind": "text", "max_length": 64})
    assert pre == TextPreprocessing(64) and pre.axis_sizes() == {"sequence": 64}
    with pytest.raises(DocumentError, match="did you mean 'max_length'"):
        parse_preprocessing({"kind": "text", "max_len": 64})
    with pytest.raises(DocumentError, match="a file name inside the bundle"):
        parse_preprocessing({"kind": "text", "max_length": 8, "tokenizer": "../../etc/tok.json"})



def test_model_json_names_the_text_contract_problem(text_run, tmp_path):
    """model.json's preprocessing is ImagePreprocessing | TextPreprocessing, picked by `kind`: a mistake in a
    text contract is reported as such, not as 'fits none of'."""
    from edgekd.deploy.runtime.bundle import read_manifest
    from edgekd.deploy.typed import DocumentError

    data = json.loads((text_run["bundle"] / "model.json").read_text())
    data["preprocessing"]["maxlen"] = data["preprocessing"].pop("max_length")
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(DocumentError, match=r"unknown key 'preprocessing.maxlen' \(did you mean"):
        read_manifest(tmp_path)


def test_verify_refuses_a_fixed_sequence_axis_with_longest_padding(text_run, tmp_path):
    """A text model exported with a fixed sequence length cannot take batches padded to their longest text:
    `edgekd verify` says so (and `padding: max_length` at that length is accepted)."""
    import dataclasses

    import torch

    from edgekd.deploy.bundle import manifest_for, verify_bundle, write_bundle
    from edgekd.deploy.errors import VerificationError
    from edgekd.deploy.export import export_onnx

    pre = text_run["pre"]
    feed = pre.encode(text_run["texts"][:2], text_run["tok"], padding="max_length")
    example = tuple(torch.from_numpy(feed[n]) for n in pre.input_names)
    fixed = export_onnx(text_run["model"], example, tmp_path / "fixed.onnx", input_names=list(pre.input_names),
                        exporter="torchscript", fallback=None).path
    tokenizer = {"tokenizer.json": text_run["folder"] / "tokenizer.json"}
    bad = write_bundle(tmp_path / "bad", fixed, manifest_for(fixed, pre, LABELS), extra_files=tokenizer)
    with pytest.raises(VerificationError, match="fixed sequence length 48"):
        verify_bundle(bad)
    padded = dataclasses.replace(pre, padding="max_length")
    good = write_bundle(tmp_path / "good", fixed, manifest_for(fixed, padded, LABELS), extra_files=tokenizer)
    assert any("inference" in line for line in verify_bundle(good))


def test_quantize_cli_calibrates_a_text_model_from_named_arrays(text_run, tmp_path):
    """`edgekd quantize --calib CALIB.npz` with input_ids/attention_mask arrays (int64) → static INT8."""
    feed = text_run["pre"].encode(text_run["texts"], text_run["tok"], padding="max_length")
    np.savez(tmp_path / "calib.npz", **feed)
    out = tmp_path / "static.onnx"
    proc = run_cli("quantize", str(text_run["onnx"]), "--calib", str(tmp_path / "calib.npz"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "static INT8 (QDQ" in proc.stdout and out.is_file()
    with load_bundle(text_run["bundle"], threads=1) as predictor:  # the float bundle, for the reference
        ref = predictor.logits(feed)
    from edgekd.deploy.runtime.ort import OnnxrtRunner

    with OnnxrtRunner(out, threads=1) as runner:
        got = runner.infer(feed)["logits"]
    assert float((got.argmax(1) == ref.argmax(1)).mean()) >= 0.9


def test_time_text_rows_times_pytorch_and_onnx_runners_alike(text_run):
    """The pipeline's entry: entered runners sharing one contract (a TorchRunner and an ONNX Runtime runner)
    timed per batch and length on real token feeds, with the tokenizer timed too."""
    from edgekd.benchmarks.bench import Timing
    from edgekd.benchmarks.text import time_text_rows
    from edgekd.deploy.runtime.ort import OnnxrtRunner
    from edgekd.deploy.runtime.runner import TensorSpec
    from edgekd.deploy.torch_runner import TorchRunner

    pre = text_run["pre"]
    specs = [TensorSpec(n, "int64", ("batch", "sequence")) for n in pre.input_names]
    with TorchRunner(text_run["model"], specs, threads=1) as torch_runner, \
            OnnxrtRunner(text_run["onnx"], threads=1) as ort_runner:
        runners = {"student-pytorch": torch_runner, "student-onnx": ort_runner}
        base = {"student-pytorch": {"fmt": "pytorch", "precision": "fp32"},
                "student-onnx": {"fmt": "onnx", "precision": "fp32"}}
        rows = time_text_rows(runners, base, pre, text_run["tok"], batches=(1, 3), seq_lens=(10, 30),
                              timing=Timing(0, 1, 3, 0, 1))
    assert sorted((r.name, r.batch, r.seq_len) for r in rows) == sorted(
        (n, b, s) for n in runners for b in (1, 3) for s in (10, 30))
    assert all(r.error is None and r.tokenize.p50 > 0 and r.end_to_end.runs >= 3 for r in rows)


def test_without_tokenizers_the_error_names_the_extra(text_run, tmp_path):
    proc = run_cli("verify", str(text_run["bundle"]), env=blocked_env(tmp_path, "tokenizers"))
    assert proc.returncode == 7 and "Traceback" not in proc.stderr
    assert "pip install 'edgekd[text]'" in proc.stderr and "tokenizers" in proc.stderr.splitlines()[0]
