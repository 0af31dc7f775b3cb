"""Face detection and cropping (invgen.metrics.faces) on a real photograph that scikit-image ships."""

import sys

import numpy as np
import pytest
from PIL import Image
from skimage import data

from invgen.errors import InvgenConfigError, InvgenDataError
from invgen.metrics.faces import (
    HaarDetector,
    crop_face,
    detect_faces,
    largest_faces,
    load_detector,
)

ASTRONAUT = data.astronaut()  # (512, 512, 3) uint8: Eileen Collins, her face around x 170-240, y 70-150
FACE = ASTRONAUT[30:210, 110:290]  # a 180-pixel square around her face, with hair and collar


def resized(image, side):
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BICUBIC))


def center(box):
    x, y, w, h = box
    return x + w / 2, y + h / 2


def test_finds_the_astronauts_face():
    boxes = detect_faces(ASTRONAUT)
    assert len(boxes) == 1
    cx, cy = center(boxes[0])
    assert 150 <= cx <= 250 and 50 <= cy <= 160, boxes
    assert 50 <= boxes[0][2] <= 150, boxes  # face-sized: neither a patch of it nor the whole picture
    assert detect_faces(ASTRONAUT, "haar") == boxes == detect_faces(ASTRONAUT, load_detector("default"))


def test_no_face_in_flat_gray_or_noise():
    assert detect_faces(np.full((256, 256, 3), 128, np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert detect_faces(noise) == []


def test_largest_face_first():
    canvas = np.full((400, 640, 3), 128, np.uint8)
    canvas[10:190, 400:580] = FACE  # small copy right, pasted first: order must come from size alone
    big = resized(FACE, 300)
    canvas[60:360, 30:330] = big
    boxes = detect_faces(canvas)
    assert len(boxes) == 2, boxes
    (bx, by), (sx, sy) = center(boxes[0]), center(boxes[1])
    assert 30 <= bx <= 330 and 60 <= by <= 360 and 400 <= sx <= 580 and 10 <= sy <= 190, boxes
    assert boxes[0][2] * boxes[0][3] > boxes[1][2] * boxes[1][3]


def test_small_generated_face_is_upsampled_before_detection():
    small = resized(FACE, 32)
    boxes = detect_faces(small)
    assert len(boxes) == 1 and all(0 <= v <= 32 for v in boxes[0]), boxes
    # Without the upsampling the cascade cannot fire: at 32 pixels the face is barely wider than its window.
    path = load_detector("default").path
    assert HaarDetector(path, min_side=1)(small) == []


def test_face_filling_the_picture_is_found_thanks_to_the_border():
    tight = resized(ASTRONAUT[60:170, 150:260], 64)  # forehead to chin, like "a photo of the face of ..." samples
    boxes = detect_faces(tight)
    assert len(boxes) == 1 and 20 <= center(boxes[0])[0] <= 44 and 20 <= center(boxes[0])[1] <= 44, boxes
    assert HaarDetector(load_detector("default").path, pad=0.0)(tight) == []


def test_custom_detector_results_come_largest_first():
    def detector(image):
        return [(0, 0, 2, 2), (5, 5, 10, 3), (1, 1, 4, 4), (9, 9, 4, 4)]

    assert detect_faces(np.zeros((20, 20, 3), np.uint8), detector) == [
        (5, 5, 10, 3),
        (1, 1, 4, 4),
        (9, 9, 4, 4),
        (0, 0, 2, 2),
    ]


def test_crop_geometry():
    # Pixel (y, x) holds (x, y, 7): a crop shows exactly where it was cut from.
    yy, xx = np.mgrid[0:80, 0:100]
    image = np.stack([xx, yy, np.full_like(xx, 7)], axis=-1).astype(np.uint8)  # H 80, W 100
    # side 40 * 1.5 = 60 around center (30, 40): x 0..60, y 10..70
    np.testing.assert_array_equal(crop_face(image, (10, 20, 40, 40)), image[10:70, 0:60])
    # non-square box: the longer side, 20 * 2 = 40, around center (40, 35)
    np.testing.assert_array_equal(crop_face(image, (30, 30, 20, 10), margin=0.5), image[15:55, 20:60])
    # top-left border: side 40 around (10, 10) starts at (-10, -10): black above and left
    crop = crop_face(image, (0, 0, 20, 20), margin=0.5)
    assert crop.shape == (40, 40, 3)
    np.testing.assert_array_equal(crop[10:, 10:], image[0:30, 0:30])
    assert not crop[:10].any() and not crop[:, :10].any()
    # bottom-right border: side 30 around (95, 75) covers x 80..110, y 60..90; the image ends at 100, 80
    crop = crop_face(image, (90, 70, 10, 10), margin=1.0)
    np.testing.assert_array_equal(crop[:20, :20], image[60:80, 80:100])
    assert not crop[20:].any() and not crop[:, 20:].any()
    # resized to `size`
    flat = np.zeros((50, 50, 3), np.uint8) + np.array([200, 10, 30], np.uint8)
    out = crop_face(flat, (10, 10, 30, 30), margin=0.0, size=12)
    assert out.shape == (12, 12, 3) and out.dtype == np.uint8 and (out == [200, 10, 30]).all()


def test_largest_faces():
    gray = np.full((300, 200, 3), 128, np.uint8)
    crops, found = largest_faces([ASTRONAUT, gray], load_detector("default"), size=64)
    assert crops.shape == (2, 64, 64, 3) and crops.dtype == np.uint8
    assert found.tolist() == [True, False] and not crops[1].any()
    np.testing.assert_array_equal(crops[0], crop_face(ASTRONAUT, detect_faces(ASTRONAUT)[0], 0.25, 64))


def test_none_keeps_whole_images():
    assert load_detector("none") is None
    red = np.zeros((30, 40, 3), np.uint8) + np.array([255, 0, 0], np.uint8)
    blue = np.zeros((16, 16, 3), np.uint8) + np.array([0, 0, 255], np.uint8)
    assert detect_faces(red, "none") == [(0, 0, 40, 30)]
    crops, found = largest_faces([red, blue], None, size=16)
    assert found.tolist() == [True, True] and crops.shape == (2, 16, 16, 3)
    assert (crops[0] == [255, 0, 0]).all() and (crops[1] == [0, 0, 255]).all()
    crops, found = largest_faces(np.stack([blue, blue]), "none", size=8)
    assert found.all() and (crops == [0, 0, 255]).all()


def test_bad_images():
    cases = [
        (
            lambda: detect_faces(np.zeros((8, 8), np.uint8)),
            "face detection needs an (H, W, 3) uint8 RGB image, got shape (8, 8) and dtype uint8",
        ),
        (
            lambda: detect_faces(np.zeros((8, 8, 3), np.float32)),
            "face detection needs an (H, W, 3) uint8 RGB image, got shape (8, 8, 3) and dtype float32",
        ),
        (lambda: detect_faces([[0, 0, 0]]), "face detection needs an (H, W, 3) uint8 RGB image, got a list"),
        (
            lambda: largest_faces([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 4), np.uint8)], None),
            "image 1: face detection needs an (H, W, 3) uint8 RGB image, got shape (8, 8, 4) and dtype uint8",
        ),
        (
            lambda: largest_faces(np.zeros((8, 8, 3), np.uint8), None),
            "face detection needs images (N, H, W, 3) uint8, got shape (8, 8, 3) and dtype uint8",
        ),
        (
            lambda: crop_face(np.zeros((8, 8, 3), np.uint8), (1, 1, 0, 4)),
            "a face box needs a width and height of 1 or more, got (1, 1, 0, 4)",
        ),
    ]
    for call, message in cases:
        with pytest.raises(InvgenDataError) as e:
            call()
        assert str(e.value) == message


def test_bad_detectors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.xml").write_text("this is no cascade", encoding="utf-8")
    (tmp_path / "empty.xml").write_text(
        '<?xml version="1.0"?>\n<opencv_storage>\n</opencv_storage>\n', encoding="utf-8"
    )
    cases = {
        "mtcnn": "unknown face detector 'mtcnn' (use default, haar[:PATH] or none)",
        "none:x": "face detector 'none:x' takes no argument",
        "haar:": "face detector 'haar:': give the cascade file after the colon (haar:PATH)",
        "haar:missing.xml": "face detector 'haar:missing.xml': no cascade file missing.xml",
        "haar:empty.xml": "face detector 'haar:empty.xml': empty.xml is not a valid cascade XML",
        "haar:bad.xml": "face detector 'haar:bad.xml': bad.xml is not a valid cascade XML (Input file is invalid)",
    }
    for spec, message in cases.items():
        with pytest.raises(InvgenConfigError) as e:
            load_detector(spec)
        assert str(e.value) == message, spec
    with pytest.raises(InvgenConfigError) as e:
        crop_face(np.zeros((8, 8, 3), np.uint8), (1, 1, 2, 2), margin=-0.5)
    assert str(e.value) == "the face crop margin must be a finite number, 0 or more, got -0.5"
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    with pytest.raises(InvgenConfigError) as e:
        load_detector("default")
    assert str(e.value).startswith("face detector 'default' needs OpenCV, which cannot be imported (")
    assert str(e.value).endswith("): pip install 'opencv-python-headless<5'")
