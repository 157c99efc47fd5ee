import dataclasses
import subprocess
import sys

import pytest
import torch
from conftest import SMALL_MODEL

from erosion.model import checkpoint
from erosion.model.network import ErosionCNN, ModelConfig


def _card(config: ModelConfig = SMALL_MODEL) -> checkpoint.ModelCard:
    history = [{"epoch": 0, "val_balanced_accuracy": 0.3}, {"epoch": 1, "val_balanced_accuracy": 0.4}]
    return checkpoint.ModelCard("", config, epoch=1, history=history, preprocess=checkpoint.preprocess_settings(config))


@pytest.mark.slow
def test_a_checkpoint_loads_in_a_plain_process_without_ray(tmp_path):
    torch.manual_seed(0)
    model = ErosionCNN(SMALL_MODEL).eval()
    card = checkpoint.write(str(tmp_path / "ck"), model, _card(), torch.optim.Adam(model.parameters()))
    x = torch.rand(3, 1, 64, 64)
    torch.save(model(x).detach(), tmp_path / "expected.pt")
    torch.save(x, tmp_path / "x.pt")
    script = f"""
import sys, torch
from erosion.model import checkpoint
model, card = checkpoint.load({str(tmp_path / "ck")!r})
assert "ray" not in sys.modules, "loading a checkpoint imported Ray"
x, expected = torch.load({str(tmp_path / "x.pt")!r}), torch.load({str(tmp_path / "expected.pt")!r})
torch.testing.assert_close(model(x), expected)
print(card.model_version, card.classes, card.preprocess["input_size"], len(card.history))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [card.model_version, "[0,", "1,", "2,", "3,", "4,", "5]", "64", "2"]


def test_the_model_version_is_a_content_hash(tmp_path):
    torch.manual_seed(0)
    a, b = ErosionCNN(SMALL_MODEL), ErosionCNN(SMALL_MODEL)
    b.load_state_dict(a.state_dict())
    version = checkpoint.model_version(a.state_dict(), SMALL_MODEL)
    assert version == checkpoint.model_version(b.state_dict(), SMALL_MODEL)
    with torch.no_grad():
        b.head[-2].bias[0] += 1e-6
    assert checkpoint.model_version(b.state_dict(), SMALL_MODEL) != version
    assert checkpoint.model_version(a.state_dict(), dataclasses.replace(SMALL_MODEL, dropout=0.4)) != version


def test_weights_that_do_not_match_the_card_are_refused(tmp_path):
    model = ErosionCNN(SMALL_MODEL)
    checkpoint.write(str(tmp_path / "ck"), model, _card())
    with torch.no_grad():
        model.head[-2].bias[0] += 1.0
    torch.save(model.state_dict(), tmp_path / "ck" / checkpoint.WEIGHTS)
    with pytest.raises(ValueError, match="do not match"):
        checkpoint.load(str(tmp_path / "ck"))
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        checkpoint.load(str(tmp_path))


def test_a_checkpoint_round_trips_through_s3(s3_bucket):
    model = ErosionCNN(SMALL_MODEL).eval()
    card = checkpoint.write(f"{s3_bucket}/run/model", model, _card())
    loaded, loaded_card = checkpoint.load(f"{s3_bucket}/run")  # a run's folder finds its model/
    assert loaded_card == card
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
