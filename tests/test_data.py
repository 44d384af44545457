"""Data sources: image folder, CSV manifest (mask or box), tensor files; seeded subsets; bad images."""
import numpy as np
import pytest
import torch
from PIL import Image

from auditor.loaders import auditor_load_data
from auditor.errors import DataError, SpecError
from auditor.spec import DataSection


def section(tmp_path, **values) -> DataSection:
    return DataSection.model_validate(values, context={"base_dir": str(tmp_path)})


def load(tmp_path, size=(8, 8), seed=0, **values):
    return auditor_load_data(section(tmp_path, **values), tmp_path, seed, size)


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_labels_and_streaming(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        for i in range(5):
            save(tmp_path / "imgs" / cls / f"{i}.png", rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    source = load(tmp_path, path="imgs")
    assert source.classes == ["cat", "dog"] and len(source) == 10
    batches = list(source.batches(4))
    assert [len(b.ids) for b in batches] == [4, 4, 2]
    assert batches[0].x.shape == (4, 3, 8, 8) and 0 <= batches[0].x.min() and batches[0].x.max() <= 1
    assert batches[-1].label.tolist() == [1, 1]


def test_csv_with_masks_boxes_and_class_names(tmp_path):
    for name in ("a.png", "b.png"):
        save(tmp_path / name, np.full((20, 20, 3), 200, np.uint8))
    mask = np.zeros((20, 20), np.uint8)
    mask[:10] = 255
    save(tmp_path / "a_mask.png", mask)
    (tmp_path / "m.csv").write_text("path,label,mask\na.png,zebra,a_mask.png\nb.png,ant,a_mask.png\n")
    source = load(tmp_path, size=(10, 10), path="m.csv")
    batch = next(source.batches(2))
    assert source.classes == ["ant", "zebra"] and batch.label.tolist() == [1, 0]
    assert batch.mask.shape == (2, 10, 10) and batch.mask[0, :5].all() and not batch.mask[0, 5:].any()
    assert torch.allclose(batch.x, torch.full_like(batch.x, 200 / 255))
    (tmp_path / "b.csv").write_text("path,label,x0,y0,x1,y1\na.png,0,0,0,10,20\n")
    box = next(load(tmp_path, size=(10, 10), path="b.csv").batches(1)).mask[0]
    assert box[:, :5].all() and not box[:, 5:].any()  # box in original pixels, scaled to 10x10


def test_tensor_files_pt_and_npz(tmp_path):
    x = torch.rand(5, 3, 8, 8)
    torch.save({"x": x, "y": torch.arange(5)}, tmp_path / "d.pt")
    batch = next(load(tmp_path, path="d.pt").batches(5))
    assert torch.allclose(batch.x, x) and batch.label.tolist() == [0, 1, 2, 3, 4]
    images = (np.random.default_rng(1).random((3, 16, 16, 3)) * 255).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=images, masks=np.ones((3, 16, 16), bool))
    batch = next(load(tmp_path, path="d.npz").batches(3))
    assert batch.x.shape == (3, 3, 8, 8) and batch.label is None and batch.mask.all()
    torch.save([1, 2], tmp_path / "bad.pt")
    with pytest.raises(SpecError, match=r"data.path: .*bad.pt: expected a mapping"):
        load(tmp_path, path="bad.pt")


def test_limit_is_a_seeded_subset(tmp_path):
    torch.save({"x": torch.rand(50, 3, 4, 4)}, tmp_path / "d.pt")
    ids = lambda seed: [i for b in load(tmp_path, seed=seed, path="d.pt", limit=10).batches(4) for i in b.ids]
    assert ids(0) == ids(0) and ids(0) != ids(1) and len(set(ids(0))) == 10


def test_corrupt_image_named_or_skipped(tmp_path):
    save(tmp_path / "ok.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "m.csv").write_text("path\nok.png\nbroken.png\n")
    with pytest.raises(DataError, match="broken.png"):
        list(load(tmp_path, path="m.csv").batches(2))
    with pytest.warns(UserWarning, match="skipped: cannot read image .*broken.png"):
        source = load(tmp_path, path="m.csv", on_error="skip")
        batches = list(source.batches(2))
    assert [b.ids for b in batches] == [("ok.png",)]
    assert [s["id"] for s in source.skipped] == ["broken.png"]
