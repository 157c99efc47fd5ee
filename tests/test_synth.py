import hashlib
import io
import json
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
import pytest
from PIL import Image
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from erosion.core import domain
from erosion.io import storage
from erosion.registry import phantom, synth


@pytest.fixture(scope="module")
def big_registry(tmp_path_factory):
    """>= 10^4 joints (150 patients, ~3.5 visits, 20 joints a visit)."""
    out = str(tmp_path_factory.mktemp("big"))
    manifest = synth.generate(synth.SynthConfig(patients=150, out=out, seed=11, rows_per_file=4_000))
    assert manifest.rows["registry"] >= 10_000
    return out


@pytest.mark.slow
def test_the_registry_raters_class_mix_follows_table_1_and_the_truth_the_mix_solved_for_it(big_registry):
    # Joints of a patient are correlated, so 150 patients vary more than 10^4 independent joints would:
    # stages 0 and 1 within 3 points, the rare stages within 1 point.
    ratings = storage.read_table(f"{big_registry}/ratings")
    registry = pc.filter(ratings["ratingen"], pc.equal(ratings["rater"], "registry")).to_numpy()
    rated = np.bincount(registry, minlength=6) / len(registry)
    np.testing.assert_allclose(rated[:2], synth.TABLE1_MIX[:2], atol=0.03)
    np.testing.assert_allclose(rated[2:], synth.TABLE1_MIX[2:], atol=0.01)
    truth = storage.read_table(f"{big_registry}/truth")
    share = np.bincount(truth["ratingen"].to_numpy(), minlength=6) / truth.num_rows
    manifest = json.loads(storage.filesystem(big_registry)[0].cat(f"{big_registry}/manifest.json"))
    np.testing.assert_allclose(share[:2], manifest["config"]["truth_mix"][:2], atol=0.03)
    np.testing.assert_allclose(share[2:], manifest["config"]["truth_mix"][2:], atol=0.01)
    assert (share > 0).all()


def test_the_true_mix_read_by_the_registry_rater_gives_the_target_mix():
    # independent of the solve: draw joints from the solved true mix and read them as generate does
    mix = synth.truth_mix(synth.TABLE1_MIX)
    rated = np.array(synth.TABLE1_MIX)
    assert ((mix >= 0.99 * rated / 1.5) & (mix <= 1.01 * rated * 1.5)).all()  # bounded, then summed to 1
    rng = np.random.default_rng(1)
    pct = synth._pct_from_uniform(rng.random(200_000), np.cumsum(mix))
    read = domain.ratingen_stage(synth._read(rng, synth.RATERS[0], pct))
    np.testing.assert_allclose(np.bincount(read, minlength=6) / len(read), synth.TABLE1_MIX, atol=0.01)


@pytest.mark.slow
def test_true_stage_is_the_stage_of_the_true_pct(big_registry):
    truth = storage.read_table(f"{big_registry}/truth")
    np.testing.assert_array_equal(domain.ratingen_stage(truth["erosion_pct"].to_numpy()), truth["ratingen"].to_numpy())


@pytest.mark.slow
def test_erosion_never_heals_over_a_patients_visits(big_registry):
    registry = storage.read_table(
        f"{big_registry}/registry", columns=["joint_id", "patient_id", "visit_date", "body_part", "joint"]
    )
    truth = storage.read_table(f"{big_registry}/truth").to_pandas()
    frame = registry.to_pandas().merge(truth, on="joint_id").sort_values("visit_date")
    steps = frame.groupby(["patient_id", "body_part", "joint"])["erosion_pct"].diff().dropna()
    assert len(steps) > 5_000 and (steps >= 0).all() and (steps > 0).any()
    assert frame.groupby("patient_id")["visit_date"].nunique().between(1, 6).all()


@pytest.mark.slow
def test_ten_joints_per_radiograph(big_registry):
    registry = storage.read_table(f"{big_registry}/registry", columns=["sop_iuid", "joint"]).to_pandas()
    per_radiograph = registry.groupby("sop_iuid")["joint"].agg(["count", "nunique"])
    assert (per_radiograph["count"] == 10).all() and (per_radiograph["nunique"] == 10).all()


@pytest.mark.slow
def test_pairwise_quadratic_kappa_of_the_raters_is_near_the_papers(big_registry):
    ratings = storage.read_table(f"{big_registry}/ratings").to_pandas()
    wide = ratings.pivot(index="joint_id", columns="rater", values="ratingen")
    assert wide["registry"].notna().all()
    rescored = wide.dropna()
    assert len(rescored) >= 500
    for a, b in [("registry", "rescorer_1"), ("registry", "rescorer_2"), ("rescorer_1", "rescorer_2")]:
        kappa = cohen_kappa_score(rescored[a], rescored[b], weights="quadratic")
        assert 0.5 <= kappa <= 0.75, (a, b, kappa)


@pytest.mark.slow
def test_crops_mix_formats_sizes_and_bit_depths(big_registry):
    images = storage.read_table(f"{big_registry}/registry", columns=["image"])["image"].slice(0, 600).to_pylist()
    formats, modes, sizes = set(), set(), set()
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            formats.add(image.format)
            modes.add(image.mode)
            sizes.add(image.size)
    assert formats == {"JPEG", "PNG"}
    assert {"L", "I;16"} <= modes
    assert len(sizes) > 100


@pytest.mark.slow
def test_feet_and_wrists_have_the_class_mix_and_the_raters_of_the_fingers(tmp_path):
    out = str(tmp_path / "feet")
    config = synth.SynthConfig(patients=40, out=out, seed=3, body_parts=domain.BODY_PARTS, wrists=True)
    synth.generate(config)
    registry = storage.read_table(f"{out}/registry", columns=["joint_id", "sop_iuid", "body_part", "joint"]).to_pandas()
    per_radiograph = registry.groupby("sop_iuid").agg(part=("body_part", "first"), joints=("joint", frozenset))
    assert set(per_radiograph["part"]) == set(domain.BODY_PARTS)
    for part, joints in zip(per_radiograph["part"], per_radiograph["joints"], strict=True):
        assert joints == set(domain.joints_of(part)), part  # 11 a hand (with the wrist), 5 a foot
    ratings = storage.read_table(f"{out}/ratings").to_pandas().merge(registry, on="joint_id")
    feet = ratings[ratings["body_part"].str.startswith("foot")]
    assert set(feet["rater"]) == {rater.name for rater in synth.RATERS}
    for kind in ("mtp", "wrist"):  # the registry rater's mix as for fingers: 40 patients, correlated joints
        stages = ratings[(ratings["rater"] == "registry") & ratings["joint"].str.startswith(kind)]["ratingen"]
        mix = np.bincount(stages, minlength=6) / len(stages)
        assert abs(mix[0] - synth.TABLE1_MIX[0]) < 0.08 and abs(mix[1] - synth.TABLE1_MIX[1]) < 0.08, (kind, mix)


@pytest.mark.parametrize("joint", ["mtp1", "mtp4", "wrist", "mcp2"])
def test_a_crops_dark_share_at_the_joint_grows_with_its_true_erosion(joint):
    # bites cut the bright subchondral plate and bone ends: the centre of the crop darkens as the % grows
    def dark_share(image):
        h, w = image.shape
        centre = image[int(h * 0.3) : int(h * 0.7), int(w * 0.3) : int(w * 0.7)]
        return (centre < 0.5 * np.percentile(image, 95)).mean()

    rng = np.random.default_rng(0)
    pct = rng.uniform(0, 100, 80)
    rho, p = spearmanr(pct, [dark_share(phantom.render_joint(rng, value, joint)) for value in pct])
    assert rho > 0.3 and p < 1e-3, (rho, p)


def test_the_same_seed_gives_the_same_bytes(tmp_path):
    digests = []
    for run in ("a", "b"):
        synth.generate(synth.SynthConfig(patients=4, out=str(tmp_path / run), seed=5, rows_per_file=50))
        files = sorted((tmp_path / run).rglob("*.parquet"))
        digests.append([(f.relative_to(tmp_path / run), hashlib.sha256(f.read_bytes()).hexdigest()) for f in files])
    assert digests[0] == digests[1] and len(digests[0]) > 3


def test_another_seed_gives_other_patients(tmp_path):
    ids = []
    for seed in (1, 2):
        out = str(tmp_path / str(seed))
        synth.generate(synth.SynthConfig(patients=2, out=out, seed=seed))
        ids.append(
            set(pc.unique(storage.read_table(f"{out}/registry", columns=["patient_id"])["patient_id"]).to_pylist())
        )
    assert not ids[0] & ids[1]


def test_writes_to_s3(s3_bucket):
    manifest = synth.generate(synth.SynthConfig(patients=2, out=f"{s3_bucket}/reg", seed=1))
    assert storage.read_table(f"{s3_bucket}/reg/ratings").num_rows == manifest.rows["ratings"]
    assert storage.read_json(f"{s3_bucket}/reg/manifest.json")["rows"] == manifest.rows


_PEAK = """
import resource, sys
from erosion.registry import phantom, synth
synth.generate(synth.SynthConfig(patients=int(sys.argv[1]), out=sys.argv[2], rows_per_file=1000))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_memory_stays_flat_as_the_registry_grows(tmp_path):
    peaks = {}
    for patients in (20, 200):  # about 1,400 and 14,000 joints
        result = subprocess.run(
            [sys.executable, "-c", _PEAK, str(patients), str(tmp_path / str(patients))],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[patients] = int(result.stdout.split()[-1])
    manifest = json.loads((tmp_path / "200" / "manifest.json").read_text())
    assert manifest["rows"]["registry"] >= 12_000
    assert peaks[200] <= 1.2 * peaks[20], peaks
