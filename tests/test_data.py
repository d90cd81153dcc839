"""Datasets: the manifest format, per-sample checks, the synthetic set, the RF1M importer, rfad-data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from rfad.trainer.data.cli import main as data_cli
from rfad.trainer.data.manifest import (
    CLASS_NAMES,
    ManifestError,
    ManifestRow,
    check_rows,
    read_manifest,
    write_manifest,
)
from rfad.trainer.data.rf1m import RF1MFormatError, import_rf1m
from rfad.trainer.data.synth import write_synthetic_dataset


def test_class_names_are_the_papers_order():
    assert CLASS_NAMES == (
        "Available", "Space Mismatch", "Size Mismatch", "Indistinctiveness", "Shape Hallucination",
    )


# ---------------------------------------------------------------- manifest format

ROWS = [
    ManifestRow(id="a", generated="images/a.png", product="products/a.png", prompt="a mug on a table",
                caption="röd mugg 350ml", label="Available", split="train", depth="depth/a.png",
                saliency="saliency/a.png"),
    ManifestRow(id="b", generated="images/b.png", product="products/b.png"),  # unlabeled, unsplit
    ManifestRow(id="c", generated="/abs/c.jpg", product="products/c.webp", caption="c",
                label="Shape Hallucination", split="test"),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_manifest_round_trip(tmp_path, suffix):
    path = write_manifest(ROWS, tmp_path / "sub" / f"manifest{suffix}")
    assert path.is_file() and not list(path.parent.glob("*.partial"))
    assert read_manifest(path) == ROWS


def test_manifest_unknown_suffix_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"unknown manifest format '\.csv'.*\.jsonl.*\.parquet"):
        write_manifest(ROWS, tmp_path / "manifest.csv")
    with pytest.raises(ValueError, match="unknown manifest format"):
        read_manifest(tmp_path / "manifest.txt")


def _jsonl(tmp_path, *lines: str) -> Path:
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = '{"id": "x%d", "generated": "g.png", "product": "p.png"}'


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"id": "x9", "generated": "g.png", "product": ', r"line 3: not valid JSON"),
        ('{"id": "x9", "generated": "g.png"}', r"line 3: missing required field 'product'"),
        ('{"id": "x9", "generated": "g.png", "product": null}', r"line 3: missing required field 'product'"),
        ('{"id": "x9", "generated": "g.png", "product": "p.png", "label": 2}', r"line 3: field 'label' must be a string or null, got int"),
        ('{"id": "x9", "generated": "g.png", "product": "p.png", "split": "dev"}', r"line 3: field 'split' is 'dev'"),
        ('{"id": "x9", "generated": "g.png", "product": "p.png", "lable": "Available"}', r"line 3: unknown field 'lable'"),
        ('{"id": "x1", "generated": "g.png", "product": "p.png"}', r"line 3: duplicate id 'x1' \(first at .* line 1\)"),
        ('["x9", "g.png", "p.png"]', r"line 3: expected a JSON object, got list"),
    ],
)
def test_broken_jsonl_manifest_names_line_and_field(tmp_path, bad_line, message):
    path = _jsonl(tmp_path, GOOD % 1, "", bad_line)  # the blank line 2 is allowed
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_broken_parquet_manifest_names_row_and_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "generated": ["g", "g"]}), path)
    with pytest.raises(ManifestError, match="missing required column 'product'"):
        read_manifest(path)
    pq.write_table(pa.table({"id": ["a", "b"], "generated": ["g", "g"], "product": ["p", None]}), path)
    with pytest.raises(ManifestError, match="row 2: missing required field 'product'"):
        read_manifest(path)
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ManifestError, match="not a readable Parquet file"):
        read_manifest(path)


def test_unknown_label_is_left_to_check_rows_unless_strict(tmp_path):
    path = _jsonl(tmp_path, GOOD % 1, '{"id": "x2", "generated": "g.png", "product": "p.png", "label": "Blurry"}')
    assert read_manifest(path)[1].label == "Blurry"
    with pytest.raises(ManifestError, match="line 2: field 'label' is 'Blurry'"):
        read_manifest(path, strict_labels=True)


# ---------------------------------------------------------------- per-sample checks

def _png(path: Path, mode: str) -> None:
    """A 16x16 PNG; in RGBA a green 8x8 product on a transparent background."""
    if mode == "RGBA":
        image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
        image.paste((10, 200, 30, 255), (4, 4, 12, 12))
    else:
        image = Image.new(mode, (16, 16), (10, 200, 30))
    image.save(path)


def test_check_rows_drops_and_counts_bad_samples(tmp_path):
    _png(tmp_path / "gen.png", "RGB")
    _png(tmp_path / "prod.png", "RGBA")
    _png(tmp_path / "prod_rgb.png", "RGB")
    Image.new("RGBA", (16, 16), (1, 2, 3, 255)).save(tmp_path / "prod_opaque.png")
    Image.new("RGBA", (16, 16), (1, 2, 3, 0)).save(tmp_path / "prod_empty.png")
    whole = (tmp_path / "gen.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (tmp_path / "depth.png").write_bytes(b"not an image")

    def row(id_, generated="gen.png", product="prod.png", **kw):
        return ManifestRow(id=id_, generated=generated, product=product, **kw)

    rows = [
        row("good", label="Available"),
        row("good-unlabeled"),
        row("missing-gen", generated="nope.png"),
        row("missing-saliency", saliency="maps/nope.png"),
        row("unknown-label", label="Unsuitable"),
        row("truncated", generated="truncated.png"),
        row("garbage", generated="garbage.png"),
        row("corrupt-depth", depth="depth.png"),
        row("rgb-product", product="prod_rgb.png"),
        row("opaque-product", product="prod_opaque.png"),
        row("empty-product", product="prod_empty.png"),
    ]
    good, report = check_rows(rows, tmp_path)
    assert [r.id for r in good] == ["good", "good-unlabeled"]
    assert report.total == 11 and report.kept == 2 and report.n_skipped == 9
    assert report.skipped == {
        "missing_file": 2, "unknown_label": 1, "corrupt_image": 3,
        "product_no_alpha": 1, "product_alpha_opaque": 1, "product_alpha_empty": 1,
    }
    assert "missing-gen" in report.examples["missing_file"][0] and "nope.png" in report.examples["missing_file"][0]
    assert "saliency maps/nope.png not found" in report.examples["missing_file"][1]
    assert "'Unsuitable'" in report.examples["unknown_label"][0]
    assert {e.split(":")[0] for e in report.examples["corrupt_image"]} == {"id 'truncated'", "id 'garbage'", "id 'corrupt-depth'"}
    assert "mode RGB" in report.examples["product_no_alpha"][0]
    json.dumps(report.to_dict())
    text = report.format()
    assert "11 rows, 2 kept, 9 skipped" in text and "corrupt_image" in text


def test_check_rows_keeps_few_examples(tmp_path):
    rows = [ManifestRow(id=f"r{i}", generated="none.png", product="none.png") for i in range(10)]
    good, report = check_rows(rows, tmp_path, max_examples=2)
    assert good == [] and report.skipped == {"missing_file": 10} and len(report.examples["missing_file"]) == 2


# ---------------------------------------------------------------- synthetic dataset

@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, 100, seed=3)
    return out


def test_synthetic_dataset_is_balanced_complete_and_decodable(synth_dir):
    rows = read_manifest(synth_dir / "manifest.jsonl", strict_labels=True)
    assert len(rows) == 100
    assert {name: sum(r.label == name for r in rows) for name in CLASS_NAMES} == dict.fromkeys(CLASS_NAMES, 20)
    assert [r.label for r in rows[:10]] != [CLASS_NAMES[i % 5] for i in range(10)]  # shuffled
    for name in CLASS_NAMES:  # stratified split: 3 test, 3 val, 14 train per class
        splits = [r.split for r in rows if r.label == name]
        assert (splits.count("test"), splits.count("val"), splits.count("train")) == (3, 3, 14)
    assert all(r.prompt and r.caption and r.depth is None and r.saliency is None for r in rows)
    good, report = check_rows(rows, synth_dir)
    assert len(good) == 100, report.format()
    for row in rows[:10]:
        with Image.open(synth_dir / row.generated) as ad, Image.open(synth_dir / row.product) as product:
            assert ad.mode == "RGB" and ad.size == (128, 128)
            assert product.mode == "RGBA"
            low, high = product.getchannel("A").getextrema()
            assert (low, high) == (0, 255)
        assert row.caption.split()[0] in ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "teal", "black")


def test_synthetic_dataset_is_byte_identical_for_a_seed(tmp_path):
    first = write_synthetic_dataset(tmp_path / "a", 10, seed=7, size=64).parent
    second = write_synthetic_dataset(tmp_path / "b", 10, seed=7, size=64).parent
    other = write_synthetic_dataset(tmp_path / "c", 10, seed=8, size=64).parent
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 21
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    assert (first / "manifest.jsonl").read_bytes() != (other / "manifest.jsonl").read_bytes()


def test_synthetic_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n must be at least 1"):
        write_synthetic_dataset(tmp_path, 0)
    with pytest.raises(ValueError, match="sum to less than 1"):
        write_synthetic_dataset(tmp_path, 10, val_fraction=0.5, test_fraction=0.5)


def _product_colour(product: Image.Image) -> np.ndarray:
    """Mean colour of the product cut-out's opaque pixels."""
    pixels = np.asarray(product.convert("RGBA"), dtype=np.float32)
    return pixels[pixels[..., 3] > 128][:, :3].mean(axis=0)


def test_synthetic_labels_are_learnable_by_hand_features(synth_dir):
    """No network: two one-number features, each with a threshold, separate two class pairs.

    - product-colour area: the fraction of ad pixels within distance 60 of the product's mean
      colour. A Size Mismatch product is tiny, an Available one is not.
    - background distance: distance between the product's mean colour and the ad's median
      colour (the background: the product covers under a quarter of the image).
      Indistinctiveness puts the product on a background of its own colour.
    """
    area: dict[str, list[float]] = {name: [] for name in CLASS_NAMES}
    contrast: dict[str, list[float]] = {name: [] for name in CLASS_NAMES}
    for row in read_manifest(synth_dir / "manifest.jsonl"):
        with Image.open(synth_dir / row.product) as product, Image.open(synth_dir / row.generated) as ad:
            colour = _product_colour(product)
            pixels = np.asarray(ad, dtype=np.float32).reshape(-1, 3)
        area[row.label].append(float((np.linalg.norm(pixels - colour, axis=1) < 60).mean()))
        contrast[row.label].append(float(np.linalg.norm(np.median(pixels, axis=0) - colour)))
    assert max(area["Size Mismatch"]) < min(area["Available"]), (area["Size Mismatch"], area["Available"])
    assert max(contrast["Indistinctiveness"]) < min(contrast["Available"]), (contrast["Indistinctiveness"], contrast["Available"])


# ---------------------------------------------------------------- RF1M import

@pytest.fixture()
def rf1m(tmp_path):
    """A small RF1M-like release: images in archive folders, products as .png or .webp."""
    images, products = tmp_path / "images", tmp_path / "products"
    for rel in ["part01/a1.jpg", "part01/a2.jpg", "part02/a3.png", "part02/a4.jpg", "part02/a5.jpg",
                "part02/a6.jpg", "part02/u1.jpg", "part02/u2.jpg", "part02/np.jpg",
                "part01/twin.jpg", "part02/twin.jpg"]:
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(images / rel)
    products.mkdir()
    for stem in ["a1", "a2", "a3", "a4", "a5", "u1", "u2", "twin"]:
        _png(products / f"{stem}.png", "RGBA")
    Image.new("RGBA", (16, 16)).save(products / "a6.webp")
    Image.new("RGBA", (16, 16)).save(products / "a1.webp")  # a1.png is preferred
    return tmp_path


LABELS = """name,label
# RF1M labels, mixed separators on purpose
a1.jpg\tAvailable

part01/a2.jpg,space_mismatch
a3   SpaceMismatch
a4.jpg 3
a5 Indistinctiveness
a6.jpg,shape-hallucination
u1.jpg 1
u2.jpg,UNSUITABLE
np.jpg\t0
gone.jpg\tAvailable
a1.jpg\tSize Mismatch
x9.jpg\tBlurry
x8.jpg\t7
twin.jpg\t0
"""


def test_rf1m_import_accepts_names_indices_and_separators(rf1m):
    (rf1m / "label.txt").write_text(LABELS)
    out = rf1m / "out" / "rf1m.jsonl"
    report = import_rf1m(rf1m / "label.txt", rf1m / "images", rf1m / "products", out)
    rows = {r.id: r for r in read_manifest(out, strict_labels=True)}
    assert {k: v.label for k, v in rows.items()} == {
        "a1.jpg": "Available", "part01/a2.jpg": "Space Mismatch", "a3": "Space Mismatch",
        "a4.jpg": "Size Mismatch", "a5": "Indistinctiveness", "a6.jpg": "Shape Hallucination",
    }
    assert rows["a1.jpg"].generated == "../images/part01/a1.jpg"
    assert rows["a1.jpg"].product == "../products/a1.png"
    assert rows["a6.jpg"].product == "../products/a6.webp"
    assert rows["a3"].generated == "../images/part02/a3.png"
    assert all(r.prompt == "" and r.caption == "" and r.split is None for r in rows.values())
    for r in rows.values():
        assert all(path.is_file() for path in r.files(out.parent).values())

    assert report.total == 14 and report.kept == 6
    assert report.skipped == {
        "unsuitable_dropped": 2, "product_missing": 1, "generated_missing": 1, "duplicate_name": 1,
        "unknown_label": 2, "generated_ambiguous": 1,
    }
    assert report.examples["duplicate_name"] == ["line 14: a1.jpg (first on line 3)"]
    assert report.examples["unsuitable_dropped"] == ["line 10: u1.jpg", "line 11: u2.jpg"]
    assert report.examples["product_missing"][0].startswith("line 12: np.jpg")
    assert report.examples["generated_missing"][0].startswith("line 13: gone.jpg")
    assert report.examples["unknown_label"] == ["line 15: x9.jpg (label 'Blurry')", "line 16: x8.jpg (label '7')"]
    assert report.labels == {"Available": 1, "Space Mismatch": 2, "Size Mismatch": 1,
                             "Indistinctiveness": 1, "Shape Hallucination": 1}
    assert json.loads(json.dumps(report.to_dict()))["skipped"]["unsuitable_dropped"] == 2
    text = report.format()
    assert "14 labelled lines, 6 rows written" in text and "Space Mismatch" in text and "generated_ambiguous" in text


def test_rf1m_import_keeps_unsuitable_and_reads_captions(rf1m):
    (rf1m / "label.txt").write_text("a1.jpg 0\nu1.jpg 1\nu2.jpg Unsuitable\n")
    (rf1m / "captions.tsv").write_text("a1.jpg\tred ceramic mug 350ml\nu1\tblue bottle 1L\n")
    out = rf1m / "rf1m.parquet"
    report = import_rf1m(rf1m / "label.txt", rf1m / "images", rf1m / "products", out,
                         keep_unsuitable=True, captions=rf1m / "captions.tsv")
    rows = read_manifest(out)
    assert [(r.id, r.label, r.caption) for r in rows] == [
        ("a1.jpg", "Available", "red ceramic mug 350ml"), ("u1.jpg", "Unsuitable", "blue bottle 1L"),
        ("u2.jpg", "Unsuitable", ""),
    ]
    assert report.kept == 3 and report.skipped == {} and report.captioned == 2
    # The 5-class trainer never sees them: check_rows drops the 6th label.
    good, check = check_rows(rows, out.parent)
    assert [r.id for r in good] == ["a1.jpg"] and check.skipped == {"unknown_label": 2}


def test_rf1m_captions_jsonl_sets_caption_and_prompt_and_refuses_bad_lines(rf1m):
    (rf1m / "label.txt").write_text("a1.jpg 0\n")
    captions = rf1m / "captions.jsonl"
    captions.write_text('{"name": "a1", "caption": "red mug", "prompt": "a mug on a desk"}\n')
    out = rf1m / "m.jsonl"
    import_rf1m(rf1m / "label.txt", rf1m / "images", rf1m / "products", out, captions=captions)
    (row,) = read_manifest(out)
    assert (row.caption, row.prompt) == ("red mug", "a mug on a desk")
    captions.write_text('{"name": "a1", "caption": "red mug"}\n{"name": "a2"}\n')
    with pytest.raises(RF1MFormatError, match=r"captions.jsonl line 2: expected"):
        import_rf1m(rf1m / "label.txt", rf1m / "images", rf1m / "products", out, captions=captions)


@pytest.mark.parametrize(
    "bad_line",
    ["just_one_field", "a.jpg\tAvailable\textra", "a.jpg,0,0.93", "a.jpg 0.93", '{"name": "a.jpg", "label": 0}'],
)
def test_rf1m_import_refuses_other_formats_with_the_line_number(rf1m, bad_line):
    (rf1m / "label.txt").write_text(f"a1.jpg\t0\n\n{bad_line}\na2.jpg\t0\n")
    out = rf1m / "rf1m.jsonl"
    with pytest.raises(RF1MFormatError, match="line 3: ") as error:
        import_rf1m(rf1m / "label.txt", rf1m / "images", rf1m / "products", out)
    assert repr(bad_line) in str(error.value)
    assert not out.exists()


# ---------------------------------------------------------------- rfad-data CLI

def test_cli_synth_and_check(tmp_path):
    runner = CliRunner()
    result = runner.invoke(data_cli, ["synth", "--out", str(tmp_path / "s"), "--n", "10", "--size", "64"])
    assert result.exit_code == 0, result.output
    assert "wrote 10 samples" in result.output and "Size Mismatch" in result.output and "train" in result.output
    result = runner.invoke(data_cli, ["check", str(tmp_path / "s" / "manifest.jsonl")])
    assert result.exit_code == 0, result.output
    assert "10 rows, 10 kept, 0 skipped" in result.output


def test_cli_import_rf1m(rf1m):
    (rf1m / "label.txt").write_text(LABELS)
    runner = CliRunner()
    args = ["import-rf1m", "--labels", str(rf1m / "label.txt"), "--images", str(rf1m / "images"),
            "--products", str(rf1m / "products"), "--out", str(rf1m / "m.jsonl"),
            "--json-report", str(rf1m / "report.json")]
    result = runner.invoke(data_cli, args)
    assert result.exit_code == 0, result.output
    assert "6 rows written" in result.output and "unsuitable_dropped" in result.output
    assert json.loads((rf1m / "report.json").read_text())["kept"] == 6

    result = runner.invoke(data_cli, args + ["--keep-unsuitable"])
    assert result.exit_code == 0 and "8 rows written" in result.output

    (rf1m / "label.txt").write_text("a1.jpg 0\na2.jpg 0 0.5 junk!\n")
    result = runner.invoke(data_cli, args)
    assert result.exit_code == 1
    assert "line 2" in result.output and "a2.jpg 0 0.5 junk!" in result.output
    assert "Traceback" not in result.output and result.exception is not None  # SystemExit(1)

    result = runner.invoke(data_cli, args[:2] + [str(rf1m / "missing.txt")] + args[3:])
    assert result.exit_code == 1 and "labels file not found" in result.output
