"""Hands, feet and wrists: a model per body part, from its card's body parts and joints, and mirrored right crops.

Scoring on a real local Ray and real Parquet: each joint by its body part's model (its probabilities as that model
gives them alone, a right crop mirrored), a joint no model covers with an error, the Rau score over every joint
scored, the report per body part; training on feet from a hand model.
"""

import argparse
import dataclasses
import json
from io import BytesIO

import numpy as np
import pytest
from conftest import SMALL_MODEL
from PIL import Image

from erosion.cli import flags
from erosion.core import domain
from erosion.core.split import split_of
from erosion.io import storage
from erosion.model import checkpoint, models
from erosion.model.network import ModelConfig, probabilities
from erosion.registry import synth
from erosion.registry.preprocess import letterbox
from erosion.report import report
from erosion.score import decoding, scoring
from erosion.train import labelled, training

FEET = ("foot_left", "foot_right")
FOOT_MODEL = ModelConfig(input_size=64, width=0.5)  # other weights than the hand model's: another version


@pytest.fixture(scope="module")
def body_registry(tmp_path_factory) -> str:
    """Ten patients, both hands with their wrists and both feet."""
    out = str(tmp_path_factory.mktemp("body"))
    synth.generate(synth.SynthConfig(patients=10, out=out, seed=5, body_parts=domain.BODY_PARTS, wrists=True))
    return out


def _card_model(folder, untrained_model, body_parts, joints, mirror=False, config=SMALL_MODEL) -> str:
    """A hand-made model whose card names these body parts and joints (and mirrors right crops with ``mirror``)."""
    untrained_model(folder, config)
    card = checkpoint.read_card(str(folder))
    card.body_parts, card.joints = list(body_parts), list(joints)
    card.preprocess = checkpoint.preprocess_settings(config, mirror)
    model, _ = checkpoint.load(str(folder))
    checkpoint.write(str(folder), model, card)
    return str(folder)


def test_a_right_crop_is_mirrored_only_for_a_model_that_says_so():
    ramp = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (50, 1))
    buffer = BytesIO()
    Image.fromarray(ramp).save(buffer, "PNG")
    plain, flipped = letterbox(buffer.getvalue(), 50), letterbox(buffer.getvalue(), 50, mirror=True)
    np.testing.assert_array_equal(flipped, np.fliplr(plain))
    settings = checkpoint.preprocess_settings(SMALL_MODEL, mirror=True)
    assert domain.mirrored(settings, "hand_right") and domain.mirrored(settings, "foot_right")
    assert not domain.mirrored(settings, "hand_left") and not domain.mirrored(settings, "foot_left")
    assert not domain.mirrored(checkpoint.preprocess_settings(SMALL_MODEL), "hand_right")  # a model without it


def test_the_models_of_a_run_come_from_a_folder_pairs_or_a_mapping_file(tmp_path, untrained_model):
    hand = _card_model(tmp_path / "hand", untrained_model, ("hand_left", "hand_right"), domain.HAND_JOINTS)
    foot = _card_model(tmp_path / "foot", untrained_model, FEET, domain.FOOT_JOINTS, True, FOOT_MODEL)
    alone = models.resolve(hand)
    assert alone.parts == {"hand_left": hand, "hand_right": hand}
    assert alone.version == checkpoint.read_card(hand).model_version
    pairs = models.resolve(f"hand_left={hand},hand_right={hand},foot_left={foot},foot_right={foot}")
    mapping = tmp_path / "models.json"
    mapping.write_text(json.dumps(dict.fromkeys(("hand_left", "hand_right"), hand) | dict.fromkeys(FEET, foot)))
    assert models.resolve(str(mapping)).parts == pairs.parts
    assert models.resolve(str(mapping)).version == pairs.version != alone.version
    coverage = pairs.coverage()
    assert coverage["foot_right"] == {"joints": domain.FOOT_JOINTS, "mirror": True}
    assert coverage["hand_right"] == {"joints": domain.HAND_JOINTS, "mirror": False}
    described = pairs.described()
    assert described["foot_left"]["model_version"] == checkpoint.read_card(foot).model_version
    # the flag may be repeated: its values are joined
    parser = argparse.ArgumentParser()
    flags.add(parser, scoring.ScoreConfig)
    args = parser.parse_args(["--registry", "r", "--out", "o", "--model", f"hand_left={hand}", "--model", "x=y"])
    assert flags.build(scoring.ScoreConfig, args).model == f"hand_left={hand},x=y"
    with pytest.raises(ValueError, match=r"may score foot_left, foot_right \(its card\), not hand_left"):
        models.resolve(f"hand_left={foot}")
    with pytest.raises(ValueError, match="two models for hand_left"):
        models.resolve(f"hand_left={hand},hand_left={foot}")
    other = _card_model(tmp_path / "big", untrained_model, FEET, domain.FOOT_JOINTS, config=ModelConfig(input_size=96))
    with pytest.raises(ValueError, match=r"different sizes \(\[64, 96\] px\)"):
        models.resolve(f"hand_left={hand},foot_left={other}")
    mapping.write_text(json.dumps({"knee": hand}))
    with pytest.raises(ValueError, match="must map some of hand_left"):
        models.resolve(str(mapping))


def test_a_joint_no_model_covers_is_named_not_scored():
    coverage = {"hand_left": {"joints": ("mcp1", "pip1"), "mirror": False}}
    assert decoding.row_problem("j", "p", "d", "hand_left", "mcp1", coverage) is None
    assert decoding.row_problem("j", "p", "d", "foot_left", "mtp1", coverage) == "no model for body part: foot_left"
    assert decoding.row_problem("j", "p", "d", "hand_left", "wrist", coverage) == (
        "no model for joint: wrist of hand_left (its model scores mcp1, pip1)"
    )
    assert decoding.row_problem("j", "p", "d", "foot_left", "mcp1", coverage).startswith("invalid joint")


@pytest.mark.slow
def test_each_body_part_is_scored_by_its_model_and_the_rau_and_report_cover_them_all(
    ray_local, body_registry, untrained_model, tmp_path
):
    hand = _card_model(tmp_path / "hand", untrained_model, ("hand_left", "hand_right"), checkpoint.FINGER_JOINTS)
    foot = _card_model(tmp_path / "foot", untrained_model, FEET, domain.FOOT_JOINTS, True, FOOT_MODEL)
    spec = f"hand_left={hand},foot_left={foot},foot_right={foot}"  # no model for hand_right
    result = scoring.score(scoring.ScoreConfig(f"{body_registry}/registry", spec, str(tmp_path / "runs"), "night"))
    registry = storage.read_table(f"{body_registry}/registry").to_pandas().set_index("joint_id")
    scores = storage.read_table(result.manifest.path("scores")).to_pandas().set_index("joint_id")
    assert len(scores) == len(registry) == result.rows
    right = scores["body_part"] == "hand_right"
    wrist = (scores["body_part"] == "hand_left") & (scores["joint"] == "wrist")
    assert (scores.loc[right, "error"] == "no model for body part: hand_right").all()
    assert scores.loc[wrist, "error"].str.startswith("no model for joint: wrist of hand_left").all()
    assert scores.loc[~right & ~wrist, "error"].isna().all()
    assert result.errors == {"no model for body part": right.sum(), "no model for joint": wrist.sum()}
    versions = {part: checkpoint.read_card(folder).model_version for part, folder in (("hand", hand), ("foot", foot))}
    ok = scores["error"].isna()
    assert (scores.loc[ok, "model_version"] == scores.loc[ok, "body_part"].str[:4].map(versions)).all()
    manifest = result.manifest
    assert manifest.model == spec and manifest.models["foot_right"]["model"] == foot
    assert "hand_right" not in manifest.models

    # each joint's probabilities are its own model's of its crop, a right foot's of the mirrored crop
    networks = {"hand": checkpoint.load(hand)[0], "foot": checkpoint.load(foot)[0]}
    for joint_id in scores.index[ok][::37]:
        row = scores.loc[joint_id]
        crop = registry.at[joint_id, "image"]
        mirror = row["body_part"] == "foot_right"
        alone = probabilities(networks[row["body_part"][:4]], letterbox(crop, 64, mirror)[None])[0]
        np.testing.assert_allclose(row["probs"], alone, atol=1e-5)
        if mirror:
            assert not np.allclose(probabilities(networks["foot"], letterbox(crop, 64)[None])[0], alone, atol=1e-4)

    # the Rau score of a visit rests on every joint scored at it, hands and feet
    rau = storage.read_table(result.manifest.path("rau")).to_pandas()
    scored = scores[ok].assign(key=lambda s: s["body_part"] + "/" + s["joint"])
    for visit in rau.itertuples():
        rows = scored[(scored["patient_id"] == visit.patient_id) & (scored["visit_date"] == visit.visit_date)]
        assert sorted(visit.joints) == sorted(rows["key"]) and visit.joints_scored == len(rows)
        assert visit.rau == pytest.approx(rows["ratingen_pred"].sum() * 38 / len(rows), rel=1e-6)
        assert {k.split("/")[0] for k in visit.joints} == {"hand_left", "foot_left", "foot_right"}

    # the agreement report per body part, and heat maps by each joint's model
    built = report.build(
        report.ReportConfig(scores=result.run, ratings=f"{body_registry}/ratings", cam=4), str(tmp_path / "report")
    )
    agreement = built.tables.agreement
    assert {"hand_left", "foot_left", "foot_right"} <= set(agreement["subset"]) and "hand_right" not in set(
        agreement["subset"]
    )
    ratings = storage.read_table(f"{body_registry}/ratings").to_pandas()
    registry_rater = ratings[ratings["rater"] == "registry"].set_index("joint_id")["ratingen"]
    feet = scores[ok & (scores["body_part"] == "foot_right")]
    both = feet.index.intersection(registry_rater.index)
    model_rows = agreement["rater"].str.startswith("model") & (agreement["reference"] == "registry")
    row = agreement[model_rows & (agreement["subset"] == "foot_right")].iloc[0]
    assert row["n"] == len(both)
    explained = [line for line in open(built.html) if "figures/cam_" in line]
    assert len(explained) >= 1


@pytest.mark.slow
def test_a_hand_model_fine_tunes_on_feet_and_its_card_says_what_it_may_score(
    ray_local, body_registry, untrained_model, tmp_path
):
    hand = _card_model(tmp_path / "hand", untrained_model, ("hand_left", "hand_right"), domain.HAND_JOINTS)
    data = labelled.LabelSet(f"{body_registry}/registry", f"{body_registry}/ratings", body_parts=FEET)
    config = training.TrainConfig(data=data, out=str(tmp_path / "runs"), name="feet", init=hand, epochs=2)
    result = training.train(dataclasses.replace(config, batch_size=64, warmup_epochs=1))
    card = result.card
    assert card.body_parts == list(FEET) and card.joints == list(domain.FOOT_JOINTS)
    assert card.init == {"model": hand, "model_version": checkpoint.read_card(hand).model_version}
    assert card.preprocess["mirror"] == "right" and card.model == SMALL_MODEL  # the architecture is the hand model's
    feet_rows = labelled.split_labels(data, "val").size
    ratings = storage.read_table(f"{body_registry}/ratings").to_pandas()
    registry = storage.read_table(f"{body_registry}/registry", ["joint_id", "patient_id", "body_part"]).to_pandas()
    rated = registry[registry["joint_id"].isin(ratings.loc[ratings["rater"] == "registry", "joint_id"])]
    val = rated[rated["patient_id"].map(lambda p: split_of(p, 0)) == "val"]
    assert feet_rows == val["body_part"].isin(FEET).sum() > 0
    assert sum(map(sum, card.history[0]["val_confusion"])) == feet_rows
    # as a plain --model it covers the feet and their joints alone: the hands come out as "no model for body part"
    joints = tuple(domain.FOOT_JOINTS)
    assert models.resolve(result.model).coverage() == {
        "foot_left": {"joints": joints, "mirror": False},
        "foot_right": {"joints": joints, "mirror": True},
    }
    with pytest.raises(ValueError, match="not both"):
        training.train(training.TrainConfig(data=data, out=str(tmp_path / "runs"), init=hand, pretrained="w.pt"))
