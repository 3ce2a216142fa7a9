"""Image input that never crashes, and preprocessing equal to torchvision's pipeline."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.models as tvm
import torchvision.transforms as T
from PIL import Image, JpegImagePlugin

from resnet_demo.core.images import CropBox, ImageError, load_image, preprocess, to_rgb
from resnet_demo.core.weights import Preprocessing, weights_spec

from .conftest import EXAMPLES

WHITE = (255, 255, 255)


def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _png(array: np.ndarray, *, color_type: int) -> bytes:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB): color type 0 grey, 2 RGB, 4 grey+alpha."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    h, w = array.shape[:2]
    rows = array.astype(">u2").reshape(h, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _pixel(image: Image.Image) -> tuple[int, ...]:
    assert image.mode == "RGB"
    return image.getpixel((0, 0))  # type: ignore[return-value]


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 1) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------- every PIL mode


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("1", 1, WHITE),
        ("1", 0, (0, 0, 0)),
        ("L", 77, (77, 77, 77)),
        ("RGB", (1, 2, 3), (1, 2, 3)),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
        ("RGBA", (255, 0, 0, 0), WHITE),  # fully transparent: the white background
        ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
        ("RGBA", (0, 0, 255, 128), (127, 127, 255)),  # half transparent blue on white
        ("RGBa", (128, 0, 0, 128), (255, 127, 127)),  # premultiplied
        ("LA", (0, 0), WHITE),
        ("LA", (0, 255), (0, 0, 0)),
        ("La", (64, 128), (191, 191, 191)),  # premultiplied grey 128 at half alpha
        ("PA", (0, 0), WHITE),
        ("CMYK", (0, 0, 0, 0), WHITE),
        ("CMYK", (255, 0, 0, 0), (0, 255, 255)),
        ("YCbCr", (128, 128, 128), (128, 128, 128)),
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("LAB", (128, 128, 128), (119, 119, 119)),  # a colour transform, not a channel copy
        ("I;16", 65535, WHITE),
        ("I;16", 32896, (128, 128, 128)),  # 128 * 257: scaled, not clamped
        ("I;16B", 257 * 40, (40, 40, 40)),
        ("I;16L", 257 * 40, (40, 40, 40)),
        ("I", 200, (200, 200, 200)),  # 8-bit values in a 32-bit container stay
        ("I", 257 * 90, (90, 90, 90)),  # 16-bit values in a 32-bit container are scaled
        ("F", 0.5, (128, 128, 128)),  # floats in [0, 1]
    ],
)
def test_every_mode_becomes_rgb(mode: str, value, expected: tuple[int, int, int]) -> None:
    image = Image.new(mode, (3, 2), value)
    out = load_image(image)
    assert out.mode == "RGB" and out.size == (3, 2)
    assert _close(_pixel(out), expected), (mode, value, _pixel(out))


def test_palette_with_transparency_is_composited_on_white() -> None:
    p = Image.new("P", (4, 4), 0)
    p.putpalette([10, 20, 30] + [200, 100, 50] * 255)
    p.putpixel((1, 1), 1)
    out = load_image(_bytes(p, "PNG", transparency=0))
    assert _pixel(out) == WHITE
    assert out.getpixel((1, 1)) == (200, 100, 50)
    assert _pixel(load_image(_bytes(p, "PNG"))) == (10, 20, 30)  # without transparency: the colour


@pytest.mark.parametrize(("mode", "value"), [("L", 7), ("RGB", (1, 2, 3))])
def test_trns_colour_key_is_transparent(mode: str, value) -> None:
    image = Image.new(mode, (4, 4), value)
    image.putpixel((2, 2), 99 if mode == "L" else (9, 9, 9))
    out = load_image(_bytes(image, "PNG", transparency=value))
    assert _pixel(out) == WHITE
    assert out.getpixel((2, 2)) == ((99,) * 3 if mode == "L" else (9, 9, 9))


def test_16_bit_grey_png_is_scaled_not_clamped() -> None:
    ramp = (np.arange(64 * 16).reshape(16, 64) * 64).astype(np.uint16)  # 0 .. 65472
    data = _png(ramp, color_type=0)
    naive = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert (naive == 255).mean() > 0.9  # the pitfall: PIL's convert clamps nearly everything to white
    out = np.asarray(load_image(data))[..., 0].astype(int)
    expected = np.rint(ramp / 257.0).astype(int)
    assert np.abs(out - expected).max() <= 1
    assert out.min() == 0 and out.max() >= 254


def test_16_bit_rgb_and_grey_alpha_pngs() -> None:
    rgb = np.zeros((4, 5, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 257 * 100, 0
    assert _close(_pixel(load_image(_png(rgb, color_type=2))), (255, 100, 0))
    ga = np.zeros((4, 5, 2), np.uint16)
    ga[..., 0], ga[..., 1] = 0, 0  # black, fully transparent
    ga[0, 1] = (0, 65535)  # black, opaque
    out = load_image(_png(ga, color_type=4))
    assert _pixel(out) == WHITE and out.getpixel((1, 0)) == (0, 0, 0)


def test_unconvertible_mode_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    cmyk = Image.new("CMYK", (2, 2))

    def refuse(*args, **kwargs):
        raise ValueError("conversion not supported")

    monkeypatch.setattr(Image.Image, "convert", refuse)  # as for a mode PIL cannot convert
    with pytest.raises(ImageError, match="not supported"):
        to_rgb(cmyk)


# --------------------------------------------------------------------------- files


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = load_image(_bytes(image, "JPEG", exif=exif, quality=95))
    assert out.size == (20, 40)
    assert _close(out.getpixel((10, 3)), (255, 0, 0), tol=6)  # the left edge is now at the top
    assert _close(out.getpixel((10, 36)), (0, 0, 255), tol=6)


def test_corrupt_exif_keeps_the_photo(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageOps

    def broken(image):
        raise SyntaxError("bad EXIF")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    assert load_image(_bytes(Image.new("RGB", (8, 6), (5, 6, 7)), "PNG")).size == (8, 6)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert _close(_pixel(load_image(data)), (255, 0, 0), tol=2)
    gif = Image.open(io.BytesIO(data))
    gif.seek(1)  # a caller's image left on another frame
    assert _close(_pixel(load_image(gif)), (255, 0, 0), tol=2)


def test_animated_png_gives_first_frame() -> None:
    frames = [Image.new("RGBA", (8, 8), c) for c in ((0, 255, 0, 255), (0, 0, 255, 255))]
    data = _bytes(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert _pixel(load_image(data)) == (0, 255, 0)


def test_tiny_image_works_end_to_end() -> None:
    out = load_image(_bytes(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"))
    x, crop, box = preprocess(out, preprocessing=weights_spec(arch="resnet50").preprocessing)
    assert x.shape == (1, 3, 224, 224) and crop.size == (224, 224)
    assert torch.isfinite(x).all()
    # Resized to 232x232, then cropped at (4, 4): the box is that, in the 1-pixel original.
    assert box == CropBox(4 / 232, 4 / 232, 224 / 232, 224 / 232)


def test_huge_jpeg_is_downscaled_while_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    drafts = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        drafts.append(size)
        return real(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    big = Image.new("RGB", (3000, 2000), (90, 120, 150))
    out = load_image(_bytes(big, "JPEG"), max_pixels=300_000)
    assert drafts and drafts[0][0] < 3000  # decoded at reduced scale, never full size
    assert out.width * out.height <= 300_000
    assert abs(out.width / out.height - 1.5) < 0.01


def test_huge_png_is_downscaled() -> None:
    out = load_image(_bytes(Image.new("L", (1200, 300), 50), "PNG"), max_pixels=40_000)
    assert out.width * out.height <= 40_000 and abs(out.width / out.height - 4.0) < 0.05
    assert _pixel(out) == (50, 50, 50)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [90, 200])  # over PIL's limit (PIL warns), over twice it (PIL raises)
def test_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch, side: int) -> None:
    data = _bytes(Image.new("1", (side, side)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    with pytest.raises(ImageError, match="decompression bomb") as e:
        load_image(data)
    assert "pixels" in str(e.value)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(Image.new("1", (side, side)))


def test_pil_limit_is_kept() -> None:
    assert Image.MAX_IMAGE_PIXELS is not None  # nobody switched the guard off on import
    import resnet_demo.explain  # noqa: F401

    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # PIL's default: 1 GiB of 3-byte pixels / 4


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_a_clear_error(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = _bytes(noise, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="Could not read") as e:
        load_image(path)
    assert path.name in str(e.value) and "truncated" in str(e.value)
    assert str(path.parent) not in str(e.value)  # a server's folder layout is never shown


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"this is text, not a photo", "not an image"),
        (b"", "empty"),
        ("no/such/file.jpg", "No file at"),
    ],
)
def test_not_an_image(source, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        load_image(source)


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_path_bytes_and_pil_agree() -> None:
    path = EXAMPLES / "coffee.jpg"
    a, b, c = load_image(path), load_image(path.read_bytes()), load_image(Image.open(path))
    assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a), np.asarray(c))


# --------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("name", ["imagenet-v1", "imagenet-v2"])
@pytest.mark.parametrize("photo", sorted(p.name for p in EXAMPLES.glob("*.jpg")))
def test_preprocessing_equals_torchvision(name: str, photo: str) -> None:
    entry = {"imagenet-v1": tvm.ResNet50_Weights.IMAGENET1K_V1, "imagenet-v2": tvm.ResNet50_Weights.IMAGENET1K_V2}[name]
    path = EXAMPLES / photo
    expected = entry.transforms()(Image.open(path).convert("RGB"))
    x, crop, _ = preprocess(load_image(path), preprocessing=weights_spec(arch="resnet50", weights=name).preprocessing)
    assert torch.equal(x[0], expected)
    assert crop.size == (224, 224)


@pytest.mark.parametrize("size", [(1, 1), (300, 20), (17, 500), (232, 232), (224, 224), (640, 427)])
def test_preprocessing_equals_torchvision_on_odd_sizes(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    x, crop, _ = preprocess(image, preprocessing=weights_spec(arch="resnet50").preprocessing)
    assert torch.equal(x[0], tvm.ResNet50_Weights.IMAGENET1K_V2.transforms()(image))
    # The crop is exactly the pixels the tensor was made from.
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    back = (x[0] * std[:, None, None] + mean[:, None, None]) * 255
    assert torch.allclose(back, torch.from_numpy(np.array(crop)).permute(2, 0, 1).float(), atol=1e-3)


def test_crop_larger_than_resize_pads_like_torchvision() -> None:
    pre = Preprocessing(resize_size=100, crop_size=128)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (150, 300, 3), dtype=np.uint8))
    reference = T.Compose(
        [
            T.Resize(100, antialias=True),
            T.CenterCrop(128),
            T.PILToTensor(),
            T.ConvertImageDtype(torch.float),
            T.Normalize(pre.mean, pre.std),
        ]
    )
    x, crop, box = preprocess(image, preprocessing=pre)
    assert torch.equal(x[0], reference(image))
    assert crop.size == (128, 128)
    assert box.top < 0 and box.bottom > image.height  # the padded rows lie outside the photo
    assert box.left > 0 and box.right < image.width


def test_crop_box_locates_the_crop_in_the_original() -> None:
    # A smooth image, so that resampling twice differs only by rounding.
    yy, xx = np.mgrid[0:300, 0:400]
    smooth = np.stack([xx * 255 / 400, yy * 255 / 300, (xx + yy) * 255 / 700], axis=-1).astype(np.uint8)
    image = Image.fromarray(smooth)
    _, crop, box = preprocess(image, preprocessing=weights_spec(arch="resnet50").preprocessing)
    assert box.width == pytest.approx(224 * 400 / 309) and box.height == pytest.approx(300 * 224 / 232)
    again = image.resize((224, 224), Image.Resampling.BILINEAR, box=(box.left, box.top, box.right, box.bottom))
    diff = np.abs(np.asarray(again, dtype=float) - np.asarray(crop, dtype=float))
    assert diff.mean() < 1.5
