"""Datasets, specs, their errors, and augmentation alignment."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from segfactory.factory.datasets import (
    CITYSCAPES_TRAIN_IDS,
    camvid_mini_path,
    load_images,
    open_dataset,
    parse_spec,
)
from segfactory.factory.errors import InputError
from segfactory.factory.transforms import TrainTransform, random_crop, random_hflip, random_scale, resize_mask

from tests.synthetic_seg import make_camvid, make_folder


def test_camvid_layout(tmp_path):
    make_camvid(tmp_path)
    ds = open_dataset(f"camvid:{tmp_path}", "train")
    assert len(ds) == 6 and ds.num_classes == 11 and ds.ignore_index == 11 and len(ds.class_names) == 11
    assert ds.names == [f"seq_{i:04d}" for i in range(6)]
    image, mask = ds[0]
    assert image.shape == (64, 96, 3) and image.dtype == np.uint8
    assert mask.shape == (64, 96) and mask.dtype == np.int64
    assert mask[0, 0] == 11 and set(np.unique(mask)) <= set(range(12))
    assert len(open_dataset(f"camvid:{tmp_path}", "val")) == 3


def test_folder_layout_and_classes(tmp_path):
    make_folder(tmp_path, num_classes=3)
    ds = open_dataset(f"folder:{tmp_path}", "val", num_classes=3)
    assert ds.ignore_index == 255 and ds.class_names == ("class_0", "class_1", "class_2")
    _, mask = ds[1]
    assert set(np.unique(mask)) <= {0, 1, 2, 255}
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    assert open_dataset(f"folder:{tmp_path}", "train", num_classes=3).class_names == ("a", "b", "c")
    with pytest.raises(InputError, match="num-classes"):
        open_dataset(f"folder:{tmp_path}", "train")


def test_cityscapes_label_ids_map_to_train_ids(tmp_path):
    img_dir = tmp_path / "leftImg8bit" / "val" / "aachen"
    gt_dir = tmp_path / "gtFine" / "val" / "aachen"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    ids = np.array([[7, 8, 0, 33], [26, 24, 1, 4]], dtype=np.uint8)
    Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(img_dir / "aachen_000000_000019_leftImg8bit.png")
    Image.fromarray(ids).save(gt_dir / "aachen_000000_000019_gtFine_labelIds.png")
    ds = open_dataset(f"cityscapes:{tmp_path}", "val")
    assert ds.num_classes == 19 and ds.ignore_index == 255
    _, mask = ds[0]
    assert mask.tolist() == [[0, 1, 255, 18], [13, 11, 255, 255]]
    assert len(CITYSCAPES_TRAIN_IDS) == 19
    Image.fromarray(np.full((2, 4), 40, np.uint8)).save(gt_dir / "aachen_000000_000019_gtFine_labelIds.png")
    with pytest.raises(InputError, match=r"labelIds.png has label value 40"):
        ds[0]


def test_camvid_mini_is_in_the_repository():
    root = camvid_mini_path()
    assert (root / "README.md").is_file()
    train, val = open_dataset("camvid-mini", "train"), open_dataset("camvid-mini", "val")
    assert len(train) == 40 and len(val) == 12
    image, mask = val[0]
    assert image.shape == (180, 240, 3) and mask.shape == (180, 240)
    assert not set(train.names) & set(val.names)


def test_load_images(tmp_path):
    make_camvid(tmp_path)
    batch = load_images(f"camvid:{tmp_path}", "train", 4)
    assert batch.shape == (4, 64, 96, 3) and batch.dtype == np.uint8
    assert np.array_equal(batch[0], open_dataset(f"camvid:{tmp_path}", "train")[0][0])
    assert load_images(f"camvid:{tmp_path}", "val", 100, size=(32, 48)).shape == (3, 32, 48, 3)
    make_folder(tmp_path / "f")
    assert load_images(f"folder:{tmp_path / 'f'}", "train", 2, (16, 16)).shape == (2, 16, 16, 3)


@pytest.mark.parametrize(
    "spec, match",
    [("nonsense", "unknown data spec"), ("camvid:", "unknown data spec"), ("voc:/x", "unknown data spec"),
     ("camvid:/does/not/exist", "does not exist")],
)
def test_bad_specs(spec, match):
    with pytest.raises(InputError, match=match):
        open_dataset(spec, "train")
    if spec == "nonsense":
        with pytest.raises(InputError):
            parse_spec(spec)


def test_bad_split(tmp_path):
    make_camvid(tmp_path)
    with pytest.raises(InputError, match="unknown split"):
        open_dataset(f"camvid:{tmp_path}", "dev")
    with pytest.raises(InputError, match=r"CamVid test folder .*test does not exist"):
        open_dataset(f"camvid:{tmp_path}", "test")


def test_image_without_mask(tmp_path):
    make_camvid(tmp_path)
    (tmp_path / "trainannot" / "seq_0002.png").unlink()
    with pytest.raises(InputError, match=r"image .*seq_0002.png has no mask \(expected .*trainannot"):
        open_dataset(f"camvid:{tmp_path}", "train")


def test_size_mismatch(tmp_path):
    make_camvid(tmp_path)
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(tmp_path / "trainannot" / "seq_0001.png")
    ds = open_dataset(f"camvid:{tmp_path}", "train")
    with pytest.raises(InputError, match=r"seq_0001.png is 32x48 but its image .* is 64x96"):
        ds[1]
    with pytest.raises(InputError, match="32x48"):
        ds.check_sizes()


def test_label_out_of_range_names_file_and_value(tmp_path):
    make_camvid(tmp_path)
    bad = np.zeros((64, 96), np.uint8)
    bad[5, 5] = 17
    Image.fromarray(bad).save(tmp_path / "valannot" / "seq_0001.png")
    ds = open_dataset(f"camvid:{tmp_path}", "val")
    with pytest.raises(InputError, match=r"valannot/seq_0001.png has label value 17 out of range"):
        ds[1]


def test_colour_mask_is_refused(tmp_path):
    make_folder(tmp_path, count=1)
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(tmp_path / "masks" / "img0.png")
    with pytest.raises(InputError, match="3 channels"):
        open_dataset(f"folder:{tmp_path}", "train", num_classes=3)[0]


def test_ignore_index_must_not_be_a_class(tmp_path):
    make_folder(tmp_path, count=1)
    with pytest.raises(InputError, match="ignore index 1 is a class id"):
        open_dataset(f"folder:{tmp_path}", "train", num_classes=3, ignore_index=1)


def test_fixed_datasets_refuse_other_class_counts(tmp_path):
    make_camvid(tmp_path)
    with pytest.raises(InputError, match="has 11 classes, but 19"):
        open_dataset(f"camvid:{tmp_path}", "train", num_classes=19)


# -- augmentation keeps image and mask aligned ------------------------------------------------------------------

def _coded_pair(h: int = 40, w: int = 56):
    """An image whose pixels encode their own coordinates, and the mask that encodes the same."""
    ys, xs = np.mgrid[0:h, 0:w]
    mask = (ys * w + xs) % 10  # class ids 0..9
    image = np.stack([mask * 20, mask * 20, np.full_like(mask, 7)], axis=-1).astype(np.uint8)
    return image, mask.astype(np.int64)


def _aligned(image: np.ndarray, mask: np.ndarray, ignore: int) -> bool:
    labelled = mask != ignore
    return bool(np.array_equal(image[..., 0][labelled], (mask[labelled] * 20).astype(np.uint8)))


@pytest.mark.parametrize("seed", range(5))
def test_every_augmentation_keeps_alignment(seed):
    rng = np.random.default_rng(seed)
    image, mask = _coded_pair()
    # Scaling by an integer factor with nearest neighbour on both keeps the code exact.
    s_img, s_mask = random_scale(image, mask, np.random.default_rng(seed), (1.0, 1.0))
    assert _aligned(s_img, s_mask, 255)
    big = (resize_mask(image, (80, 112)), resize_mask(mask, (80, 112)))
    assert _aligned(*big, 255)
    c_img, c_mask = random_crop(image, mask, rng, (48, 64), 255)  # larger than the input: padded
    assert c_img.shape == (48, 64, 3) and c_mask.shape == (48, 64)
    assert (c_mask == 255).sum() == 48 * 64 - 40 * 56 and _aligned(c_img, c_mask, 255)
    c_img, c_mask = random_crop(image, mask, rng, (16, 16), 255)
    assert _aligned(c_img, c_mask, 255)
    f_img, f_mask = random_hflip(image, mask, rng)
    assert _aligned(f_img, f_mask, 255)


@pytest.mark.parametrize("seed", range(3))
def test_train_transform_alignment_and_determinism(seed):
    image, mask = _coded_pair()
    # Bilinear scaling blurs codes at region borders, so check alignment on the geometry with scale fixed ...
    t = TrainTransform((32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 255, scale=(1.0, 1.0))
    a_img, a_mask = t.augment(image, mask, np.random.default_rng(seed))
    assert _aligned(a_img, a_mask, 255)
    # ... and that a scaled mask follows the scaled image: flat regions stay put.
    blocks = np.kron(np.arange(12).reshape(3, 4) % 10, np.ones((16, 16), np.int64))
    img = np.stack([blocks * 20] * 3, axis=-1).astype(np.uint8)
    t2 = TrainTransform((40, 40), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 255, scale=(0.75, 1.5))
    s_img, s_mask = t2.augment(img, blocks, np.random.default_rng(seed))
    # interior pixels: the mask is constant over a 7x7 window inside the crop, so blur cannot reach them
    padded = np.pad(s_mask, 3, constant_values=-1)  # the crop border: neighbours unseen
    windows = np.lib.stride_tricks.sliding_window_view(padded, (7, 7))
    keep = (windows.min(axis=(2, 3)) == windows.max(axis=(2, 3))) & (s_mask != 255)
    assert keep.sum() > 100
    assert np.abs(s_img[..., 0][keep].astype(int) - s_mask[keep] * 20).max() <= 1
    x1, y1 = t2(img, blocks, np.random.default_rng(seed))
    x2, y2 = t2(img, blocks, np.random.default_rng(seed))
    assert x1.shape == (3, 40, 40) and y1.shape == (40, 40)
    assert np.array_equal(x1.numpy(), x2.numpy()) and np.array_equal(y1.numpy(), y2.numpy())
