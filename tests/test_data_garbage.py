"""Garbage in, never a verdict out (issue 11): values are never changed silently, and every data
error is one line naming the file and row (or tensor file and key), the value and what was expected."""
import os
import re
import signal
import types
from contextlib import contextmanager

import numpy as np
import pytest
from pydantic import ValidationError
import torch
from PIL import Image, ImageFile

from auditor.loaders import auditor_load_data
from auditor.errors import DataError, SpecError
from auditor.spec import DataSection



def section(tmp_path, **values):
    return DataSection.model_validate(values, context={"base_dir": str(tmp_path)})


def load(tmp_path, size=(8, 8), **values):
    return auditor_load_data(section(tmp_path, **values), tmp_path, 0, size)


def read_all(source, batch_size=4):
    return list(source.batches(batch_size))


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and "BytesIO" not in text
    return text


# --- tensor values ------------------------------------------------------------------------------

PIXELS = torch.arange(4 * 3 * 8 * 8).reshape(4, 3, 8, 8) % 256  # 0..255


@pytest.mark.parametrize("x, observed, hint", [
    (PIXELS.float(), r"values in \[0, 255\] \(float32\)", "data.rescale: 255"),
    (PIXELS, r"values in \[0, 255\] \(int64\)", "data.rescale: 255"),
    (PIXELS / 127.5 - 1, r"values in \[-1, 1\] \(float32\)", "normalized"),
])
def test_out_of_range_tensor_values_refused_not_clamped(tmp_path, x, observed, hint):
    torch.save({"x": x}, tmp_path / "d.pt")
    with pytest.raises(DataError) as exc:
        load(tmp_path, path="d.pt")
    text = one_line(exc)
    assert text.startswith(f"{tmp_path / 'd.pt'} key 'x': ")
    assert re.search(observed + r"; expected \[0, 1\]", text), text
    assert hint in text


def test_nan_tensor_values_refused(tmp_path):
    x = torch.rand(3, 3, 4, 4)
    x[2, 1, 0, 0] = float("nan")
    torch.save({"x": x}, tmp_path / "d.pt")
    with pytest.raises(DataError, match=r"d.pt key 'x': sample 2 holds nan; expected finite"):
        load(tmp_path, path="d.pt")


def test_uint8_accepted_both_layouts_and_binary_int_in_range(tmp_path):
    images = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    np.savez(tmp_path / "hwc.npz", x=images.numpy())
    torch.save({"x": images.permute(0, 3, 1, 2).contiguous()}, tmp_path / "chw.pt")
    a = read_all(load(tmp_path, path="hwc.npz"))[0].x
    b = read_all(load(tmp_path, path="chw.pt"))[0].x
    assert torch.equal(a, b) and torch.allclose(a, images.permute(0, 3, 1, 2).float() / 255)
    torch.save({"x": torch.randint(0, 2, (2, 3, 8, 8))}, tmp_path / "bits.pt")  # int64 already in [0, 1]
    assert read_all(load(tmp_path, path="bits.pt"))[0].x.max() <= 1


def test_rescale_255_and_none(tmp_path):
    x = PIXELS.float()
    torch.save({"x": x}, tmp_path / "d.pt")
    batch = read_all(load(tmp_path, path="d.pt", rescale=255))[0]
    assert torch.allclose(batch.x, x / 255)
    torch.save({"x": x * 2}, tmp_path / "big.pt")
    with pytest.raises(DataError, match=r"values in \[0, 510\] \(float32\), divided by 255"):
        load(tmp_path, path="big.pt", rescale=255)
    torch.save({"x": PIXELS.to(torch.uint8)}, tmp_path / "u8.pt")
    with pytest.raises(DataError, match=r"u8.pt key 'x': values in \[0, 255\] \(uint8\); expected "
                                        r"\[0, 1\] \(uint8 pixels are divided by 255 with "):
        load(tmp_path, path="u8.pt", rescale="none")
    with pytest.raises(ValidationError, match=r"rescale\n  Input should be 'auto', 255 or 'none'"):
        load(tmp_path, path="d.pt", rescale=100)  # the spec schema refuses it (data.rescale)


def test_four_channel_tensor_refused(tmp_path):
    torch.save({"x": torch.rand(2, 4, 8, 8)}, tmp_path / "rgba.pt")
    with pytest.raises(DataError) as exc:
        load(tmp_path, path="rgba.pt")
    assert one_line(exc) == (f"{tmp_path / 'rgba.pt'} key 'x': shape [2, 4, 8, 8] has 4 channels; "
                             "expected 1 (grayscale) or 3 (RGB) as [N,C,H,W] (or uint8 [N,H,W,C]); "
                             "drop alpha first")
    np.savez(tmp_path / "rgba.npz", x=np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(DataError, match=r"rgba.npz key 'x': shape \[2, 8, 8, 4\] has 4 channels"):
        load(tmp_path, path="rgba.npz")


def test_labels_and_masks_must_match_x(tmp_path):
    x = torch.rand(5, 3, 8, 8)
    torch.save({"x": x, "y": torch.arange(3)}, tmp_path / "short.pt")
    with pytest.raises(DataError) as exc:
        load(tmp_path, path="short.pt")
    assert one_line(exc) == (f"{tmp_path / 'short.pt'} key 'y': 3 labels of shape [3] for 5 images "
                             "in 'x'; expected shape [5] (one class index per image)")
    torch.save({"x": x, "y": torch.tensor([0, 1, 1.5, 0, 0])}, tmp_path / "frac.pt")
    with pytest.raises(DataError, match=r"frac.pt key 'y': y\[2\] = 1.5; expected whole class"):
        load(tmp_path, path="frac.pt")
    torch.save({"x": x, "y": torch.tensor([0, 1, -1, 0, 0])}, tmp_path / "neg.pt")
    with pytest.raises(DataError, match=r"neg.pt key 'y': y\[2\] = -1; expected class indices >= 0"):
        load(tmp_path, path="neg.pt")
    torch.save({"x": x, "masks": torch.ones(5, 4, 4, dtype=torch.bool)}, tmp_path / "m.pt")
    with pytest.raises(DataError, match=r"m.pt key 'masks': shape \[5, 4, 4\]; expected \[N,H,W\] = "
                                        r"\[5, 8, 8\]"):
        load(tmp_path, path="m.pt")


# --- images -------------------------------------------------------------------------------------

def test_16_bit_png_scaled_by_65535(tmp_path):
    values = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    mask = np.zeros((8, 8), np.uint16)
    mask[:4] = 65535
    Image.fromarray(mask).save(tmp_path / "m16.png")
    (tmp_path / "m.csv").write_text("path,mask\ng16.png,m16.png\n")
    batch = read_all(load(tmp_path, size=None, path="m.csv"))[0]
    expected = torch.from_numpy(values / 65535.0).float()
    assert torch.allclose(batch.x[0], expected.expand(3, -1, -1), atol=1e-6)
    assert batch.mask[0, :4].all() and not batch.mask[0, 4:].any()
    resized = read_all(load(tmp_path, size=(4, 4), path="m.csv"))[0]
    assert 0 < resized.x.min() < resized.x.max() < 1  # not white


def test_0_1_mask_is_not_empty(tmp_path):
    save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1
    save(tmp_path / "a_m.png", mask)
    (tmp_path / "m.csv").write_text("path,mask\na.png,a_m.png\n")
    assert read_all(load(tmp_path, path="m.csv"))[0].mask.sum() == 16


def test_mask_of_another_size_than_its_image_is_refused(tmp_path):
    save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    save(tmp_path / "a_m.png", np.ones((8, 6), np.uint8))
    (tmp_path / "m.csv").write_text("path,mask\na.png,a_m.png\n")
    with pytest.raises(DataError, match=r"m.csv row 2: mask a_m.png is 6x8 pixels; expected the "
                                        r"image's 8x8"):
        read_all(load(tmp_path, path="m.csv"))


def test_decompression_bomb_refused_and_skippable(tmp_path, monkeypatch):
    save(tmp_path / "ok.png", np.zeros((8, 8, 3), np.uint8))
    save(tmp_path / "bomb.png", np.zeros((20, 20, 3), np.uint8))    # 400 px: Pillow's error
    save(tmp_path / "big.png", np.zeros((12, 12, 3), np.uint8))     # 144 px: Pillow only warns
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    (tmp_path / "m.csv").write_text("path\nok.png\nbomb.png\nbig.png\n")
    with pytest.raises(DataError) as exc:
        read_all(load(tmp_path, path="m.csv"))
    assert one_line(exc) == (f"cannot read image {tmp_path / 'bomb.png'} ({tmp_path / 'm.csv'} row 3): "
                             "400 pixels is over Pillow's limit of 100 (PIL.Image.MAX_IMAGE_PIXELS); "
                             "refused as a possible decompression bomb")
    with pytest.warns(UserWarning, match="skipped: .*decompression bomb"):
        source = load(tmp_path, path="m.csv", on_error="skip")
        batches = read_all(source)
    assert [b.ids for b in batches] == [("ok.png",)]
    assert [s["id"] for s in source.skipped] == ["bomb.png", "big.png"]
    assert "144 pixels is over Pillow's limit of 100" in source.skipped[1]["reason"]


def test_truncated_jpeg_refused_after_weasyprint(tmp_path):
    from auditor.report import render_pdf

    render_pdf("<p>x</p>")
    assert ImageFile.LOAD_TRUNCATED_IMAGES  # WeasyPrint switched it on for the whole process
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    (tmp_path / "m.csv").write_text("path\ncut.jpg\n")
    with pytest.raises(DataError) as exc:
        read_all(load(tmp_path, path="m.csv"))
    assert one_line(exc).startswith(f"cannot read image {tmp_path / 'cut.jpg'} ("
                                    f"{tmp_path / 'm.csv'} row 2): image file is truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES  # restored for WeasyPrint


def test_unreadable_image_names_the_file_not_a_buffer(tmp_path):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError) as exc:
        read_all(load(tmp_path, path="."))
    assert one_line(exc) == (f"cannot read image {tmp_path / 'cls' / 'junk.png'}: not an image "
                             "format Pillow can decode (12 bytes)")


# --- CSV manifests ------------------------------------------------------------------------------

@pytest.mark.parametrize("cells, message", [
    ("abc,0,4,4", "x0 is 'abc'; expected a number of pixels"),
    ("0,nan,4,4", "y0 is 'nan'; expected a finite number of pixels"),
    ("0,0,,4", "x1 is empty; expected a number of pixels"),
    ("-2,0,4,4", "box x0,y0,x1,y1 = -2,0,4,4 is negative, empty, inverted or outside the 8x8 image; "
                 "expected 0 <= x0 < x1 <= 8 and 0 <= y0 < y1 <= 8"),
    ("6,0,2,4", "box x0,y0,x1,y1 = 6,0,2,4 is negative, empty, inverted"),
    ("0,0,4,9", "box x0,y0,x1,y1 = 0,0,4,9 is negative, empty, inverted or outside the 8x8 image"),
])
def test_bad_boxes_name_the_row_and_are_skippable(tmp_path, cells, message):
    save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    save(tmp_path / "b.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "m.csv").write_text(f"path,x0,y0,x1,y1\na.png,0,0,4,4\nb.png,{cells}\n")
    with pytest.raises(DataError) as exc:
        read_all(load(tmp_path, path="m.csv"))
    assert one_line(exc).startswith(f"{tmp_path / 'm.csv'} row 3: {message}")
    with pytest.warns(UserWarning, match="skipped: .*row 3"):
        source = load(tmp_path, path="m.csv", on_error="skip")
        assert [b.ids for b in read_all(source)] == [("a.png",)]
    assert source.skipped == [{"id": "b.png", "reason": str(exc.value)}]


def test_duplicate_rows_counted_once_conflicting_rows_refused(tmp_path):
    for name in "abc":
        save(tmp_path / f"{name}.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "m.csv").write_text("path,label\na.png,0\nb.png,1\na.png,0\n./b.png,1\nc.png,0\n")
    with pytest.warns(UserWarning) as caught:
        source = load(tmp_path, path="m.csv")
    assert len(source) == 3
    assert [i for b in read_all(source) for i in b.ids] == ["a.png", "b.png", "c.png"]
    assert source.skipped == [
        {"id": "a.png", "reason": f"{tmp_path / 'm.csv'} row 4 repeats row 2; counted once"},
        {"id": "./b.png", "reason": f"{tmp_path / 'm.csv'} row 5 repeats row 3; counted once"}]
    assert [str(w.message) for w in caught] == [f"skipped: {s['reason']}" for s in source.skipped]
    (tmp_path / "c.csv").write_text("path,label\na.png,0\nb.png,1\na.png,1\n")
    with pytest.raises(DataError) as exc:
        load(tmp_path, path="c.csv")
    assert one_line(exc) == (f"{tmp_path / 'c.csv'} row 4: path 'a.png' is already on row 2 with "
                             "other values; expected one row per image")


def test_bom_csv_is_read(tmp_path):
    save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "m.csv").write_bytes("path,label\na.png,zebra\n".encode("utf-8-sig"))
    source = load(tmp_path, path="m.csv")
    assert source.classes == ["zebra"] and read_all(source)[0].ids == ("a.png",)


def test_latin1_csv_names_the_row_and_byte(tmp_path):
    save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "m.csv").write_bytes("path,label\na.png,cat\na.png,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError) as exc:
        load(tmp_path, path="m.csv")
    assert one_line(exc) == (f"{tmp_path / 'm.csv'} row 3: byte 0xe9 is not UTF-8; expected a "
                             "UTF-8 CSV manifest (save it as UTF-8)")


def test_bad_label_cells_and_short_rows_name_the_row(tmp_path):
    save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    cases = {"a.png,-1": "label -1; expected a class index >= 0",
             "a.png,": "label is empty; expected a class index or class name",
             "a.png": "1 fields; expected 2 as in the header",
             "a.png,0,extra": "3 fields; expected 2 as in the header",
             ",0": "path is empty; expected an image path relative to the CSV"}
    for i, (row, message) in enumerate(cases.items()):
        (tmp_path / f"m{i}.csv").write_text(f"path,label\n{row}\n")
        with pytest.raises(DataError) as exc:
            read_all(load(tmp_path, path=f"m{i}.csv"))
        assert one_line(exc) == f"{tmp_path / f'm{i}.csv'} row 2: {message}"


# --- FIFOs and skipped samples ------------------------------------------------------------------

@contextmanager
def deadline(seconds: float):
    """Fail instead of hanging (opening a FIFO for reading blocks until a writer appears)."""
    def expire(*_):
        raise TimeoutError("blocked: the FIFO was opened")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "data.csv")
    with deadline(5), pytest.raises(SpecError) as exc:
        load(tmp_path, path="data.csv")
    assert one_line(exc) == (f"data.path: {tmp_path / 'data.csv'}: not a regular file or directory "
                             "(a FIFO, socket or device cannot be read)")
    save(tmp_path / "ok.png", np.zeros((8, 8, 3), np.uint8))
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "m.csv").write_text("path\nok.png\npipe.png\n")
    with deadline(5), pytest.raises(DataError) as exc:
        read_all(load(tmp_path, path="m.csv"))
    assert one_line(exc) == (f"cannot read image {tmp_path / 'pipe.png'} ({tmp_path / 'm.csv'} row 3): "
                             "not a regular file (a FIFO, socket or device cannot be read)")
    (tmp_path / "folder" / "cls").mkdir(parents=True)
    os.mkfifo(tmp_path / "folder" / "cls" / "pipe.png")
    with deadline(5), pytest.warns(UserWarning, match="skipped: .*pipe.png"):
        source = load(tmp_path, path="folder", on_error="skip")
        assert read_all(source) == []
    assert [s["id"] for s in source.skipped] == [os.path.join("cls", "pipe.png")]


def test_skipped_samples_recorded_once_over_passes(tmp_path):
    save(tmp_path / "ok.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "m.csv").write_text("path\nok.png\nbroken.png\nmissing.png\n")
    with pytest.warns(UserWarning) as caught:
        source = load(tmp_path, path="m.csv", on_error="skip")
        for _ in range(2):  # the engine streams the data twice (predict, then measure)
            assert [b.ids for b in read_all(source)] == [("ok.png",)]
    csv_path = tmp_path / "m.csv"
    assert source.skipped == [
        {"id": "broken.png", "reason": f"cannot read image {tmp_path / 'broken.png'} ({csv_path} "
                                       "row 3): not an image format Pillow can decode (12 bytes)"},
        {"id": "missing.png", "reason": f"cannot read image {tmp_path / 'missing.png'} ({csv_path} "
                                        "row 4): file not found"}]
    assert len(caught) == 2


def test_cli_prints_one_line_naming_file_and_row(tiny_dir, tiny_spec, tmp_path, capsys):
    from auditor.cli import main

    bad = tiny_dir / f"bad_box_{tmp_path.name}.csv"
    bad.write_text("path,label,x0,y0,x1,y1\nimg/0.png,0,0,0,8,8\nimg/1.png,1,9,0,3,8\n")
    code = main(["run", str(tiny_spec(data={"path": bad.name, "batch_size": 4}))])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == [f"error: {bad} row 3: box x0,y0,x1,y1 = 9,0,3,8 is negative, empty, inverted or "
                     "outside the 16x16 image; expected 0 <= x0 < x1 <= 16 and 0 <= y0 < y1 <= 16"]


def test_empty_tensor_file_has_no_samples(tmp_path):
    torch.save({"x": torch.zeros(0, 3, 8, 8)}, tmp_path / "empty.pt")
    assert len(load(tmp_path, path="empty.pt")) == 0
