"""The picture accuracy benchmark's smoke run: a synthetic emoji folder, an untrained picture
head (the identity: it must score as the normalised frozen base) and an untrained Conv-4."""

from benchmarks import picture_accuracy
from protonet.checkpoint import Checkpoint, save_checkpoint
from protonet.mobilenet import FEATURE_DIM, ImageBaseSpec
from protonet.model import EncoderConfig, build_encoder, linear_head_config
from protonet.preprocessing import InputSpec, picture_spec
from training.emoji import subcategory_split

from ..training.emoji_data import write_emoji_folder

TEST = [s for s in (f"sub-{i}" for i in range(60)) if subcategory_split(s) == "test"][:10]


def test_the_benchmark_prints_a_row_per_setting_for_three_encoders(tmp_path, capsys):
    data = write_emoji_folder(tmp_path / "emoji", TEST, icon_sets=4)  # 6 drawings per emoji
    head = linear_head_config(FEATURE_DIM)
    pictures = Checkpoint(
        head, picture_spec(32), build_encoder(head).state_dict(), image_base=ImageBaseSpec()
    )
    conv4 = Checkpoint(EncoderConfig(), InputSpec(), build_encoder(EncoderConfig()).state_dict())
    args = ["--data", str(data), "--episodes", "5", "--cache-dir", str(tmp_path / "cache")]
    args += ["--pictures", str(save_checkpoint(pictures, tmp_path / "pictures.pt"))]
    args += ["--omniglot", str(save_checkpoint(conv4, tmp_path / "conv4.pt"))]
    assert picture_accuracy.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "20 emoji of 10 test subcategories, 120 drawings"
    header, rows = lines[2], lines[4:]
    assert "picture model (%) | frozen base (%) | Omniglot Conv-4 (%)" in header
    assert [row.split(" | ")[0] for row in rows] == [
        "| 5-way 1-shot",
        "| 5-way 5-shot",
        "| 20-way 1-shot",
    ]
