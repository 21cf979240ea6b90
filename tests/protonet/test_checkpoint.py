import pytest
import torch

from protonet.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from protonet.errors import CheckpointError
from protonet.model import EncoderConfig, build_encoder
from protonet.preprocessing import InputSpec


def make_checkpoint(seed: int = 0) -> Checkpoint:
    torch.manual_seed(seed)
    return Checkpoint(
        encoder_config=EncoderConfig(),
        input_spec=InputSpec(),
        state_dict=build_encoder(EncoderConfig()).state_dict(),
        training_config={"way": 60, "lr": 1e-3},
        data_fingerprint="sha256:abc",
        evaluation={"evaluation": [{"way": 5, "accuracy": 0.99}]},
        metadata={"seed": seed, "torch": torch.__version__},  # a str subclass, stored as str
    )


def test_round_trip_loads_with_weights_only(tmp_path):
    original = make_checkpoint()
    path = save_checkpoint(original, tmp_path / "model.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "protonet-checkpoint" and raw["version"] == original.version
    loaded = load_checkpoint(path)
    assert loaded.version == original.version
    assert loaded.encoder_config == original.encoder_config
    assert loaded.input_spec == original.input_spec
    assert loaded.training_config == {"way": 60, "lr": 1e-3}
    x = torch.rand(4, 1, 28, 28)
    encoder = build_encoder(EncoderConfig()).eval()
    encoder.load_state_dict(original.state_dict)
    torch.testing.assert_close(loaded.build_encoder()(x), encoder(x))


def test_versions_differ_for_different_weights():
    assert make_checkpoint(0).version != make_checkpoint(1).version


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_files_raise_checkpoint_error(tmp_path, damage):
    path = save_checkpoint(make_checkpoint(), tmp_path / "model.pt")
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"\x00junk" * 100, "empty": b""}[damage]
    )
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_other_format_version_and_foreign_files_are_refused(tmp_path):
    payload = make_checkpoint().to_dict()
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a protonet-checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_tampered_weights_are_detected(tmp_path):
    payload = make_checkpoint().to_dict()
    payload["state_dict"]["blocks.0.0.weight"] += 1.0
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="recorded version"):
        load_checkpoint(tmp_path / "tampered.pt")
