"""Image sets for fine-tuning: layouts, the seeded stratified split, errors, transforms,
the sample generator, and zip extraction that hostile archives cannot abuse."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_demo.core.errors import UserError
from resnet_demo.data import (
    SAMPLE_CLASSES,
    ZipLimits,
    load_image_set,
    make_sample_dataset,
    multi_view_transform,
    safe_extract_zip,
    stratified_split,
    train_transform,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _jpeg(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ----------------------------------------------------------------------------- layouts


def test_sample_generator_writes_an_image_folder(tmp_path: Path) -> None:
    root = make_sample_dataset(tmp_path / "flat", num_classes=4, images_per_class=5, image_size=48, seed=1)
    assert sorted(p.name for p in root.iterdir()) == sorted(list(SAMPLE_CLASSES)[:4])
    with Image.open(next((root / "circle").iterdir())) as im:
        assert im.size == (48, 48) and im.mode == "RGB"
    images = load_image_set(root, val_fraction=0.2, seed=0)
    assert images.class_names == ("circle", "square", "star", "triangle")
    assert images.counts("train") == dict.fromkeys(images.class_names, 4)
    assert images.counts("val") == dict.fromkeys(images.class_names, 1)
    # Same seed, same pictures: the generator is a fixture, not a lottery.
    again = make_sample_dataset(tmp_path / "again", num_classes=4, images_per_class=5, image_size=48, seed=1)
    assert (again / "star" / "star_003.jpg").read_bytes() == (root / "star" / "star_003.jpg").read_bytes()

    split = make_sample_dataset(tmp_path / "split", num_classes=2, images_per_class=8, image_size=48, val_fraction=0.25)
    images = load_image_set(split)
    assert images.split == "train/ and val/ folders"
    assert (len(images.train), len(images.val)) == (12, 4)
    with pytest.raises(UserError, match="2 to 6 classes"):
        make_sample_dataset(tmp_path / "one", num_classes=1)


def test_stratified_split_is_seeded_and_keeps_every_class_on_both_sides() -> None:
    samples = [(f"a{i}.jpg", 0) for i in range(10)] + [(f"b{i}.jpg", 1) for i in range(3)] + [("c0.jpg", 2)]
    train, val = stratified_split(samples, val_fraction=0.2, seed=7)
    assert stratified_split(list(reversed(samples)), val_fraction=0.2, seed=7) == (train, val)  # order-free
    assert stratified_split(samples, val_fraction=0.2, seed=8) != (train, val)
    assert sorted(train + val) == sorted(samples)
    assert [sum(1 for _, c in val if c == k) for k in range(3)] == [2, 1, 0]  # a 1-image class keeps it to train
    assert {c for _, c in train} == {0, 1, 2}


def test_unreadable_images_are_skipped_and_counted_and_a_wrapping_folder_is_seen_through(tmp_path: Path) -> None:
    root = tmp_path / "upload" / "my photos"  # what zipping a folder gives
    for cls in ("cat", "dog"):
        for i in range(3):
            _write(root / cls / f"{i}.jpg", _jpeg())
    _write(root / "cat" / "broken.jpg", b"not really a jpeg")
    _write(root / "dog" / "truncated.jpg", _jpeg(size=(200, 200))[:300])
    _write(root / "dog" / "notes.txt", b"ignored: not an image")
    _write(root / ".DS_Store", b"ignored")
    images = load_image_set(tmp_path / "upload")
    assert images.root == root and images.class_names == ("cat", "dog")
    assert len(images.train) + len(images.val) == 6
    assert sorted(Path(p).name for p in images.skipped) == ["broken.jpg", "truncated.jpg"]
    assert "Skipped 2 unreadable file(s)" in images.summary()


def test_too_few_classes_or_an_empty_class_is_a_clear_error(tmp_path: Path) -> None:
    one = tmp_path / "one"
    _write(one / "cat" / "0.jpg", _jpeg())
    _write(one / "cat" / "1.jpg", _jpeg())
    with pytest.raises(UserError, match="1 class folder.*at least 2"):
        load_image_set(one)
    empty = tmp_path / "empty"
    _write(empty / "cat" / "0.jpg", _jpeg())
    _write(empty / "cat" / "1.jpg", _jpeg())
    (empty / "dog").mkdir()
    _write(empty / "bird" / "0.jpg", b"broken")
    with pytest.raises(UserError, match=r"without a readable image.*bird, dog.*1 unreadable"):
        load_image_set(empty)
    with pytest.raises(UserError, match="No folder"):
        load_image_set(tmp_path / "missing")


def test_messages_name_the_data_never_the_server_folder(tmp_path: Path) -> None:
    server = tmp_path / "k8x2mq9d" / "data-1a2b"  # where an upload is unpacked
    _write(server / "shapes" / "train" / "cat" / "0.jpg", _jpeg())
    _write(server / "shapes" / "val" / "cat" / "0.jpg", _jpeg())
    with pytest.raises(UserError) as e:
        load_image_set(server, name="pets.zip")
    assert str(e.value).startswith("pets.zip/shapes/train has 1 class folder(s); fine-tuning needs at least 2.")
    assert str(tmp_path) not in str(e.value) and "k8x2mq9d" not in str(e.value)
    _write(server / "shapes" / "train" / "dog" / "0.jpg", _jpeg())
    (server / "shapes" / "val" / "cat" / "0.jpg").unlink()
    with pytest.raises(UserError, match=r"^pets.zip/shapes/val has no readable images; .* split pets.zip/shapes/train"):
        load_image_set(server, name="pets.zip")
    with pytest.raises(UserError, match="^No folder named gone: "):
        load_image_set(tmp_path / "gone")


def test_val_folder_with_an_unknown_class_is_refused(tmp_path: Path) -> None:
    for part, classes in (("train", ("a", "b")), ("val", ("a", "b", "c"))):
        for cls in classes:
            _write(tmp_path / part / cls / "0.jpg", _jpeg())
    with pytest.raises(UserError, match="lacks: c"):
        load_image_set(tmp_path)


# ----------------------------------------------------------------------------- transforms


RLO, LRI, PDI = "\u202e", "\u2066", "\u2069"  # right-to-left override, left-to-right isolate, its end


def test_class_folder_names_lose_their_direction_controls(tmp_path: Path) -> None:
    for cls in (f"{RLO}gpj.tac", f"{LRI}dog{PDI}"):
        for i in range(3):
            _write(tmp_path / "flat" / cls / f"{i}.jpg", _jpeg())
    images = load_image_set(tmp_path / "flat")
    assert sorted(images.class_names) == ["dog", "gpj.tac"] and sum(images.counts().values()) == len(images.train)
    from resnet_demo.core.class_names import BIDI_CONTROLS

    assert not any(c in name for name in images.class_names for c in BIDI_CONTROLS)
    assert "gpj.tac" in images.summary() and RLO not in images.summary()
    for split in ("train", "val"):  # the user's own split: the same classes found under both
        for cls in (f"{RLO}gpj.tac", "dog"):
            _write(tmp_path / "split" / split / cls / "0.jpg", _jpeg())
    split = load_image_set(tmp_path / "split")
    assert sorted(split.class_names) == ["dog", "gpj.tac"] and len(split.val) == 2
    _write(tmp_path / "twice" / "cat" / "0.jpg", _jpeg())
    _write(tmp_path / "twice" / f"c{RLO}at" / "0.jpg", _jpeg())
    with pytest.raises(UserError, match="both named 'cat' once invisible direction marks are removed"):
        load_image_set(tmp_path / "twice")


def _step(side: int) -> int:
    """The grey levels per pixel of a ramp across ``side`` pixels: as steep as 8 bits allow."""
    return 255 // (side - 1)


def _ramps(width: int, height: int) -> Image.Image:
    """Red rises with x, green with y: every pixel says where in the photo it comes from (linear
    ramps, which bilinear resizing keeps linear)."""
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([_step(width) * x, _step(height) * y, 0 * x], axis=-1).astype(np.uint8))


def _source_coordinates(out: torch.Tensor, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo's x and y that each pixel of a normalised crop shows, read back from its red and green."""
    rgb = (out.numpy() * np.array(STD)[:, None, None] + np.array(MEAN)[:, None, None]) * 255
    return rgb[0] / _step(width), rgb[1] / _step(height)  # (crop, crop) each


@pytest.mark.parametrize(("width", "height"), [(120, 80), (80, 120)])  # the short side is either one
def test_train_transform_scales_the_short_side_then_crops(width: int, height: int) -> None:
    tf = train_transform(crop_size=32, scale_range=(36, 60), mean=MEAN, std=STD, color_jitter=0.0)
    torch.manual_seed(0)
    sides, flips, lefts = set(), set(), set()
    for _ in range(30):
        out = tf(_ramps(width, height))
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
        x, y = _source_coordinates(out, width, height)
        # Photo pixels per crop pixel, down the rows and along the columns: the slopes of the averaged
        # ramps, fitted away from the crop's edges (where the photo's border may blur them).
        inner = np.arange(2, 30)
        per_row = float(np.polyfit(inner, y.mean(axis=1)[inner], 1)[0])
        per_col = float(np.polyfit(inner, x.mean(axis=0)[inner], 1)[0])
        assert per_row > 0 and abs(abs(per_col) - per_row) < 0.03 * per_row  # one scale: the aspect kept
        short = min(width, height) / per_row  # the short side's length after the random resize
        assert 36 - 1 <= short <= 60 + 1
        # The crop lies inside the resized photo: every pixel shows a place in the photo.
        assert x.min() >= -1 and x.max() <= width and y.min() >= -1 and y.max() <= height
        sides.add(round(short))
        flips.add(per_col < 0)  # the columns run backwards: mirrored
        lefts.add(round(float(x.min())))
    # Random scales, both mirror states and many crop positions: not one fixed resize and center crop.
    assert max(sides) - min(sides) >= 10 and flips == {False, True} and len(lefts) >= 10
    assert train_transform(crop_size=32, scale_range=(36, 60), mean=MEAN, std=STD, random_resized_crop=True)(
        _ramps(width, height)
    ).shape == (3, 32, 32)
    with pytest.raises(UserError, match="crop size"):
        train_transform(crop_size=64, scale_range=(36, 60), mean=MEAN, std=STD)


def test_multi_view_transform_gives_ten_crops_per_scale() -> None:
    views = multi_view_transform(crop_size=32, resize_sizes=(36, 48), mean=MEAN, std=STD)(Image.new("RGB", (90, 60)))
    assert views.shape == (20, 3, 32, 32)  # (V, C, H, W)


# ----------------------------------------------------------------------------- zip files


def _zip(path: Path, entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_a_good_zip_extracts_its_images_only(tmp_path: Path) -> None:
    z = _zip(
        tmp_path / "set.zip",
        {
            "pets/cat/0.jpg": _jpeg(),
            "pets/cat/1.JPG": _jpeg(),
            "pets/dog/0.png": _jpeg(),
            "pets/dog/readme.txt": b"text",
            "pets/run.sh": b"rm -rf /",
            "__MACOSX/pets/cat/._0.jpg": b"meta",
            "pets/dog/.hidden.jpg": b"meta",
        },
    )
    dest = safe_extract_zip(z, tmp_path / "work" / "data")
    assert _files(dest) == {"pets", "pets/cat", "pets/dog", "pets/cat/0.jpg", "pets/cat/1.JPG", "pets/dog/0.png"}
    assert load_image_set(dest).class_names == ("cat", "dog")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"cat/0.jpg": b"x", "../../evil.jpg": b"x"}, "climbs out"),
        ({"cat/0.jpg": b"x", "cat/../../../evil.jpg": b"x"}, "climbs out"),
        ({"cat/0.jpg": b"x", "/tmp/evil.jpg": b"x"}, "absolute path"),
        ({"cat/0.jpg": b"x", "C:/evil.jpg": b"x"}, "absolute path"),
        ({"cat/0.jpg": b"x", "..\\evil.jpg": b"x"}, "climbs out"),
    ],
)
def test_zip_slip_entries_are_refused_and_nothing_is_written(
    tmp_path: Path, entries: dict[str, bytes], message: str
) -> None:
    z = _zip(tmp_path / "evil.zip", entries)
    work = tmp_path / "work"
    work.mkdir()
    before = _files(tmp_path)
    with pytest.raises(UserError, match=message):
        safe_extract_zip(z, work / "data")
    assert _files(tmp_path) == before  # not even the data folder
    assert not Path("/tmp/evil.jpg").exists()


def test_symlink_entries_are_refused(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("cat/link.jpg")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")
        zf.writestr("cat/0.jpg", _jpeg())
    with pytest.raises(UserError, match="symbolic link"):
        safe_extract_zip(tmp_path / "link.zip", tmp_path / "work" / "data")
    assert not (tmp_path / "work").exists()


def test_zip_bombs_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    # 64 MiB of zeros deflates to ~64 KiB: a ratio of ~1000.
    bomb = _zip(tmp_path / "bomb.zip", {"cat/0.jpg": _jpeg(), "cat/huge.bmp": bytes(64 * 1024**2)})
    with pytest.raises(UserError, match="zip bomb"):
        safe_extract_zip(bomb, tmp_path / "work" / "data")
    assert not (tmp_path / "work").exists()

    stored = _zip(tmp_path / "big.zip", {f"cat/{i}.jpg": _jpeg() for i in range(4)}, compression=zipfile.ZIP_STORED)
    with pytest.raises(UserError, match="over the limit"):
        safe_extract_zip(stored, tmp_path / "work" / "data", limits=ZipLimits(max_total_bytes=1000))
    many = _zip(tmp_path / "many.zip", {f"cat/{i}.txt": b"" for i in range(30)})
    with pytest.raises(UserError, match="30 entries"):
        safe_extract_zip(many, tmp_path / "work" / "data", limits=ZipLimits(max_entries=20))
    assert not (tmp_path / "work").exists()


def test_a_damaged_zip_is_refused_and_its_partial_output_removed(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 16
    good = _zip(tmp_path / "ok.zip", {"cat/0.jpg": _jpeg(), "cat/1.bmp": payload}, compression=zipfile.ZIP_STORED)
    data = bytearray(good.read_bytes())
    at = data.index(payload)
    data[at : at + 64] = bytes(64)  # the second entry no longer matches its CRC
    (tmp_path / "damaged.zip").write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged"):
        safe_extract_zip(tmp_path / "damaged.zip", tmp_path / "work" / "data")  # after 0.jpg was written
    assert not (tmp_path / "work").exists()


def test_empty_or_imageless_or_broken_zips_are_clear_errors(tmp_path: Path) -> None:
    empty = _zip(tmp_path / "empty.zip", {})
    with pytest.raises(UserError, match="holds no images"):
        safe_extract_zip(empty, tmp_path / "work" / "data")
    text = _zip(tmp_path / "text.zip", {"cat/readme.txt": b"hello"})
    with pytest.raises(UserError, match="holds no images"):
        safe_extract_zip(text, tmp_path / "work" / "data")
    (tmp_path / "fake.zip").write_bytes(b"PK\x03\x04 not a zip at all")
    with pytest.raises(UserError, match="not a readable zip"):
        safe_extract_zip(tmp_path / "fake.zip", tmp_path / "work" / "data")
    assert not (tmp_path / "work").exists()
