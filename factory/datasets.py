"""Segmentation datasets: CamVid (SegNet layout), Cityscapes (official layout), a generic folder, camvid-mini.

A data spec names one on the command line: ``camvid:PATH``, ``cityscapes:PATH``, ``folder:PATH`` or
``camvid-mini``. :func:`open_dataset` returns a :class:`SegDataset` whose items are raw ``(image, mask)`` pairs:
``image`` uint8 (H, W, 3) RGB, ``mask`` int64 (H, W) with class ids ``0..K-1`` and ignore pixels equal to
``ignore_index``. Reading checks each pair and raises :class:`InputError` naming the file on any problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from segfactory.factory.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
SPEC_KINDS = ("camvid", "cityscapes", "folder")

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                  "pedestrian", "bicyclist")
CAMVID_IGNORE = 11
CAMVID_PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light", "traffic_sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")
CITYSCAPES_IGNORE = 255
# Official labelId -> trainId (cityscapesScripts labels.py); labelIds 0..33 occur, every other id maps to 255.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                      (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                      (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                      (0, 80, 100), (0, 0, 230), (119, 11, 32))


@dataclass
class SegDataset:
    """Image/mask pairs of one split. ``dataset[i]`` -> (uint8 (H, W, 3) RGB, int64 (H, W) class ids)."""

    spec: str
    split: str
    images: list[Path]
    masks: list[Path]
    num_classes: int
    ignore_index: int
    class_names: tuple[str, ...]
    # 1-D lookup from the stored mask value to the class id (Cityscapes labelIds); None: values are ids already.
    label_map: np.ndarray | None = None
    palette: tuple[tuple[int, int, int], ...] = field(default=())

    @property
    def names(self) -> list[str]:
        return [p.stem for p in self.images]

    @property
    def sequences(self) -> list[str]:
        """The recording each item comes from (see :func:`sequence_labels`)."""
        return sequence_labels(self.spec, self.names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        image = read_image(self.images[i])
        mask = self.read_mask(i)
        if mask.shape != image.shape[:2]:
            raise InputError(
                f"mask {self.masks[i]} is {_hw(mask.shape)} but its image {self.images[i]} is {_hw(image.shape)}"
            )
        return image, mask

    def read_mask(self, i: int) -> np.ndarray:
        """The mask of item ``i`` as class ids, checked: every value is a class id or ``ignore_index``."""
        path = self.masks[i]
        raw = _read_raw_mask(path)
        if self.label_map is not None:
            if raw.max(initial=0) >= len(self.label_map) or raw.min(initial=0) < 0:
                bad = raw[(raw < 0) | (raw >= len(self.label_map))].flat[0]
                raise InputError(f"mask {path} has label value {int(bad)} outside 0..{len(self.label_map) - 1}")
            mapped = self.label_map[raw]
            if (mapped < 0).any():
                bad = raw[mapped < 0].flat[0]
                raise InputError(f"mask {path} has label value {int(bad)}, which is not a {self.spec} label id")
            return mapped.astype(np.int64)
        mask = raw.astype(np.int64)
        bad = (mask < 0) | ((mask >= self.num_classes) & (mask != self.ignore_index))
        if bad.any():
            value = int(mask[bad].flat[0])
            raise InputError(
                f"mask {path} has label value {value} out of range: classes are 0..{self.num_classes - 1} "
                f"and the ignore index is {self.ignore_index}"
            )
        return mask

    def check_sizes(self) -> None:
        """Check every image and mask have the same size, reading only the file headers."""
        from PIL import Image

        for img, msk in zip(self.images, self.masks):
            try:
                with Image.open(img) as a, Image.open(msk) as b:
                    if a.size != b.size:
                        raise InputError(
                            f"mask {msk} is {b.size[1]}x{b.size[0]} but its image {img} is {a.size[1]}x{a.size[0]}"
                        )
            except (OSError, SyntaxError) as e:
                raise InputError(f"cannot read {img} or {msk}: {e}") from None


FOLDER_SEQUENCES = 8  # folder: data has no recordings to go by: its name order is cut into this many blocks


def sequence_labels(spec: str, names: list[str]) -> list[str]:
    """Which recording each frame comes from: CamVid's file-name prefix before ``_`` (0001TP, 0006R0, 0016E5,
    Seq05VD), Cityscapes' city (the prefix before ``_``), and for ``folder:`` data (or anything else)
    :data:`FOLDER_SEQUENCES` contiguous blocks of the names in sorted order. Neighbouring frames of a recording
    are near copies, so held-out frames are chosen per recording (search proxy)."""
    kind = "camvid" if spec == "camvid-mini" else str(spec).partition(":")[0]
    if kind in ("camvid", "cityscapes") and all("_" in n for n in names):
        return [n.split("_", 1)[0] for n in names]
    order = sorted(range(len(names)), key=lambda i: names[i])
    labels = [""] * len(names)
    for rank, i in enumerate(order):
        labels[i] = f"block{rank * FOLDER_SEQUENCES // max(1, len(names))}"
    return labels


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise InputError(f"image {path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"image {path} cannot be read: {e}") from None


def _read_raw_mask(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                raise InputError(f"mask {path} has {len(im.getbands())} channels; masks are single-channel class ids")
            if im.mode in ("P", "L", "1"):
                return np.asarray(im, dtype=np.uint8).astype(np.int64)
            return np.asarray(im).astype(np.int64)
    except InputError:
        raise  # already names the mask (InputError is a ValueError: keep it out of the clause below)
    except FileNotFoundError:
        raise InputError(f"mask {path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"mask {path} cannot be read: {e}") from None


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]}"


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """``kind:PATH`` -> (kind, PATH); ``camvid-mini`` -> ("camvid-mini", None)."""
    if spec == "camvid-mini":
        return "camvid-mini", None
    kind, sep, path = str(spec).partition(":")
    if not sep or kind not in SPEC_KINDS or not path:
        raise InputError(
            f"unknown data spec {spec!r}: use camvid:PATH, cityscapes:PATH, folder:PATH or camvid-mini"
        )
    return kind, Path(path).expanduser()


def camvid_mini_path() -> Path:
    """The repository's ``data/camvid-mini`` (not shipped in the wheel)."""
    root = Path(__file__).resolve().parents[1] / "data" / "camvid-mini"
    if not (root / "train").is_dir() or not (root / "trainannot").is_dir():
        raise InputError(
            "camvid-mini is kept in the segfactory repository (data/camvid-mini), not in the installed package; "
            "pass --data camvid:PATH (or folder:PATH) instead"
        )
    return root


def open_dataset(spec: str, split: str, *, num_classes: int | None = None,
                 ignore_index: int | None = None) -> SegDataset:
    """Open split ``split`` of the dataset ``spec`` names.

    ``num_classes``/``ignore_index`` are required for ``folder:`` data (ignore defaults to 255) and, for
    CamVid and Cityscapes, must agree with the dataset's own when given.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    kind, path = parse_spec(spec)
    if kind == "camvid-mini":
        ds = _camvid(camvid_mini_path(), split, spec)
    else:
        assert path is not None
        if not path.is_dir():
            raise InputError(f"data folder {path} does not exist (from --data {spec})")
        if kind == "camvid":
            ds = _camvid(path, split, spec)
        elif kind == "cityscapes":
            ds = _cityscapes(path, split, spec)
        else:
            return _folder(path, split, spec, num_classes, ignore_index)
    if num_classes is not None and num_classes != ds.num_classes:
        raise InputError(f"{spec} has {ds.num_classes} classes, but {num_classes} were asked for")
    if ignore_index is not None and ignore_index != ds.ignore_index:
        raise InputError(f"{spec} uses ignore index {ds.ignore_index}, but {ignore_index} was asked for")
    return ds


def list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    stems: dict[str, Path] = {}
    for p in files:
        if p.stem in stems:
            raise InputError(f"two images share the name {p.stem!r} in {folder}: {stems[p.stem].name} and {p.name}")
        stems[p.stem] = p
    return files


def _pair(images: list[Path], mask_dir: Path, mask_name) -> list[Path]:
    masks = []
    for img in images:
        m = mask_dir / mask_name(img)
        if not m.is_file():
            raise InputError(f"image {img} has no mask (expected {m})")
        masks.append(m)
    return masks


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{what} folder {path} does not exist")
    return path


def _nonempty(images: list[Path], folder: Path) -> list[Path]:
    if not images:
        raise InputError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def _camvid(root: Path, split: str, spec: str) -> SegDataset:
    img_dir = _require_dir(root / split, f"CamVid {split}")
    mask_dir = _require_dir(root / f"{split}annot", f"CamVid {split} label")
    images = _nonempty(list_images(img_dir), img_dir)
    masks = _pair(images, mask_dir, lambda p: p.stem + ".png")
    return SegDataset(spec, split, images, masks, len(CAMVID_CLASSES), CAMVID_IGNORE, CAMVID_CLASSES,
                      palette=CAMVID_PALETTE)


def _cityscapes(root: Path, split: str, spec: str) -> SegDataset:
    img_dir = _require_dir(root / "leftImg8bit" / split, f"Cityscapes {split}")
    mask_dir = _require_dir(root / "gtFine" / split, f"Cityscapes {split} label")
    images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
    _nonempty(images, img_dir)

    def mask_name(p: Path) -> str:
        return f"{p.parent.name}/{p.name[: -len('_leftImg8bit.png')]}_gtFine_labelIds.png"

    masks = _pair(images, mask_dir, mask_name)
    lut = np.full(256, CITYSCAPES_IGNORE, dtype=np.int64)
    lut[34:] = -1  # not a labelId
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        lut[label_id] = train_id
    return SegDataset(spec, split, images, masks, len(CITYSCAPES_CLASSES), CITYSCAPES_IGNORE, CITYSCAPES_CLASSES,
                      label_map=lut, palette=CITYSCAPES_PALETTE)


def _folder(root: Path, split: str, spec: str, num_classes: int | None, ignore_index: int | None) -> SegDataset:
    """``PATH/SPLIT/{images,masks}`` when present, else ``PATH/{images,masks}`` for every split."""
    if num_classes is None:
        raise InputError(f"{spec}: folder datasets need the number of classes (--num-classes)")
    ignore = 255 if ignore_index is None else int(ignore_index)
    if 0 <= ignore < num_classes:
        raise InputError(f"ignore index {ignore} is a class id (0..{num_classes - 1})")
    base = root / split if (root / split / "images").is_dir() else root
    img_dir = _require_dir(base / "images", "image")
    mask_dir = _require_dir(base / "masks", "mask")
    images = _nonempty(list_images(img_dir), img_dir)
    masks = _pair(images, mask_dir, lambda p: p.stem + ".png")
    names_file = root / "classes.txt"
    names: tuple[str, ...] = tuple(f"class_{i}" for i in range(num_classes))
    if names_file.is_file():
        listed = tuple(line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip())
        if len(listed) != num_classes:
            raise InputError(f"{names_file} lists {len(listed)} class names for {num_classes} classes")
        names = listed
    return SegDataset(spec, split, images, masks, num_classes, ignore, names)


def load_images(spec: str, split: str, count: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """The first ``count`` images of a split (all of them if it holds fewer) as uint8 (N, H, W, 3).

    With ``size`` (H, W) each is resized bilinearly; without it they must share one size.
    """
    from PIL import Image

    if count < 1:
        raise InputError(f"image count {count} must be positive")
    kind, path = parse_spec(spec)
    if kind == "folder":
        assert path is not None
        base = path / split if (path / split / "images").is_dir() else path
        files = _nonempty(list_images(_require_dir(base / "images", "image")), base / "images")
    else:
        files = open_dataset(spec, split).images
    out = []
    for p in files[:count]:
        img = read_image(p)
        if size is not None and img.shape[:2] != tuple(size):
            img = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))
        if out and img.shape != out[0].shape:
            raise InputError(f"image {p} is {_hw(img.shape)}, unlike {_hw(out[0].shape)}; pass a size to resize")
        out.append(img)
    return np.stack(out)


def palette_for(num_classes: int, palette: tuple[tuple[int, int, int], ...] = ()) -> np.ndarray:
    """(K, 3) uint8 colours: the dataset's own where it has them, else a fixed pseudo-random set."""
    if len(palette) >= num_classes:
        return np.asarray(palette[:num_classes], dtype=np.uint8)
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(num_classes, 3), dtype=np.uint8)
    colours[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return colours
