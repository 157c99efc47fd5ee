"""Grad-CAM: the heat map lies where the model's evidence is; the report shows it for the most disagreed-on joints."""

import base64
import dataclasses
import html.parser
import os

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SMALL_MODEL
from torch import nn

from erosion.cli.main import main
from erosion.io import runs
from erosion.model import checkpoint
from erosion.model.network import ErosionCNN, probabilities
from erosion.report import cam, figures, report, tables
from erosion.score import scoring

PNG = b"\x89PNG\r\n\x1a\n"
BRIGHT, GREY = 255, 102  # 1.0 and 0.4 once scaled to [0, 1]


class _Stack(nn.Sequential):
    """A plain stack of layers that keeps the models' contract (``forward`` is ``output(embed(x))``): its last layer
    is the output, the others the embedding."""

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self[:-1](x)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return self[-1](x)


def _two_detectors() -> nn.Module:
    """A hand-built model of the CNN's layout (conv, batch norm, ReLU, pooling, dense) on 32x32 crops.

    Channel 0 of its one conv block fires on bright pixels (x > 0.7), channel 1 on darker ones (x < 0.7). Stage 2's
    logit sums channel 0 over the crop, stage 4's channel 1, stage 3's channel 0 minus channel 1 (darkness speaks
    against it); the other stages' logits are 0.
    """
    model = _Stack(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.BatchNorm2d(2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * 16 * 16, 6),
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model[0].weight[:, 0, 1, 1] = torch.tensor([1.0, -1.0])  # the centre pixel only
        model[0].bias[:] = torch.tensor([-0.7, 0.7])
        model[1].weight.fill_(1.0)
        head = model[5].weight.view(6, 2, 16, 16)
        head[2, 0] = 1.0
        head[4, 1] = 1.0
        head[3] = head[2] - head[4]
    return model.eval()


def _bright_patch() -> tuple[np.ndarray, np.ndarray]:
    """A grey 32x32 crop with a bright 8x8 patch off the corners, and the patch's mask."""
    crop = np.full((32, 32), GREY, np.uint8)
    crop[4:12, 20:28] = BRIGHT
    return crop, crop == BRIGHT


def test_the_heat_map_lies_on_the_region_the_target_stage_depends_on():
    model, (crop, patch) = _two_detectors(), _bright_patch()
    for stage, region in ((2, patch), (4, ~patch), (3, patch)):
        heat = cam.grad_cam(model, crop[None], np.array([stage]))[0]
        assert heat[region].sum() / heat.sum() > 0.99, stage
        np.testing.assert_allclose(heat, region.astype(np.float32), atol=1e-5)  # Grad-CAM by hand: the region, 1
    predicted = probabilities(model, crop[None]).argmax(1)[0]
    assert predicted == 4  # the grey area is larger than the patch
    np.testing.assert_array_equal(cam.grad_cam(model, crop[None])[0], cam.grad_cam(model, crop[None], [4])[0])


def test_a_stage_nothing_speaks_for_gets_an_empty_map():
    heat = cam.grad_cam(_two_detectors(), _bright_patch()[0][None], np.array([0]))
    assert heat.dtype == np.float32 and not heat.any()


def test_the_last_block_of_the_cnn_is_its_last_activation_before_pooling():
    model = ErosionCNN(SMALL_MODEL)
    assert cam.last_conv_block(model) is model.features[-2]
    assert isinstance(model.features[-2], nn.ReLU) and isinstance(model.features[-3], nn.BatchNorm2d)
    with pytest.raises(ValueError, match="has none"):
        cam.last_conv_block(nn.Sequential(nn.Flatten(), nn.Linear(4, 6)))


def test_shapes_range_and_determinism_on_the_cnn():
    torch.manual_seed(0)
    model = ErosionCNN(SMALL_MODEL)
    model.train()  # grad_cam runs it in eval mode and gives the mode back
    pixels = np.random.default_rng(0).integers(0, 256, (5, 64, 64), dtype=np.uint8)
    heat = cam.grad_cam(model, pixels, batch_size=2)
    assert heat.shape == (5, 64, 64) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() <= 1
    assert np.all((heat.max(axis=(1, 2)) == 1) | (heat.max(axis=(1, 2)) == 0))
    np.testing.assert_array_equal(heat, cam.grad_cam(model, pixels, batch_size=2))
    np.testing.assert_allclose(cam.grad_cam(model, pixels), heat, atol=1e-5)  # a crop's map ignores its batch
    assert model.training
    assert not any(m._forward_hooks for m in model.modules())


def test_bad_arguments_name_what_was_expected():
    model = _two_detectors()
    crop = _bright_patch()[0]
    with pytest.raises(ValueError, match="uint8"):
        cam.grad_cam(model, crop[None].astype(np.float32))
    with pytest.raises(ValueError, match="one per crop"):
        cam.grad_cam(model, crop[None], np.array([1, 2]))
    with pytest.raises(ValueError, match="0-5"):
        cam.grad_cam(model, crop[None], np.array([6]))
    assert not any(m._forward_hooks for m in model.modules())


@pytest.fixture(scope="module")
def patch_finder() -> nn.Module:
    """A small CNN trained briefly (seeded) to tell crops with a bright 6x6 patch (stage 1) from those without (0)."""
    torch.manual_seed(0)
    model = _Stack(
        *(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)),
        *(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)),
        *(nn.Flatten(), nn.Linear(8 * 8 * 8, 6)),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains fastest on one thread, most of all on a busy machine
    try:
        for _ in range(60):
            pixels, labels = _patch_crops(rng, 32)
            loss = nn.functional.cross_entropy(model(torch.from_numpy(pixels).unsqueeze(1).float() / 255), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _patch_crops(rng: np.random.Generator, n: int, patch: bool | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """Noisy grey 32x32 crops, a bright 6x6 patch at a random place in those of stage 1."""
    pixels = rng.integers(70, 140, (n, 32, 32)).astype(np.uint8)
    labels = rng.integers(0, 2, n) if patch is None else np.full(n, int(patch))
    for crop, label in zip(pixels, labels, strict=True):
        if label:
            top, left = rng.integers(0, 27, 2)
            crop[top : top + 6, left : left + 6] = 230
    return pixels, torch.from_numpy(labels)


def _window(heat: np.ndarray, size: int, pick) -> tuple[int, int]:
    """The top-left corner of the size x size window (stride 2) of highest (pick=max) or lowest mean heat."""
    corners = [(y, x) for y in range(0, 33 - size, 2) for x in range(0, 33 - size, 2)]
    return pick(corners, key=lambda c: heat[c[0] : c[0] + size, c[1] : c[1] + size].mean())


def test_occluding_the_hottest_region_changes_the_stage_probability_more_than_the_coldest(patch_finder):
    pixels, _ = _patch_crops(np.random.default_rng(1), 12, patch=True)
    before = probabilities(patch_finder, pixels)
    assert (before.argmax(1) == 1).mean() >= 0.9  # it learned the task
    heat = cam.grad_cam(patch_finder, pixels, np.ones(len(pixels), np.int64))
    changes = []
    for region in (max, min):
        occluded = pixels.copy()
        for crop, h in zip(occluded, heat, strict=True):
            y, x = _window(h, 10, region)
            crop[y : y + 10, x : x + 10] = 105  # the background's mean
        changes.append(np.abs(probabilities(patch_finder, occluded)[:, 1] - before[:, 1]))
    hottest, coldest = changes
    assert np.all(hottest > coldest), (hottest, coldest)
    assert hottest.mean() > 0.5 > coldest.mean()


def test_most_disagreed_takes_the_largest_gaps_to_the_humans_mean_with_ties_by_joint_id():
    stages = pd.DataFrame(
        {
            "joint": ["mcp1"] * 6,
            "model": [3.0, 0.0, 5.0, 1.0, 4.0, np.nan],
            "r1": [0.0, 3.0, 5.0, 1.0, np.nan, 0.0],
            "r2": [1.0, 3.0, np.nan, np.nan, np.nan, 0.0],
        },
        index=pd.Index(["e", "d", "c", "b", "a", "f"], name="joint_id"),
    )
    # gaps: e 2.5, d 3, c 0, b 0; a no human; f no model
    assert cam.most_disagreed(stages, "model", ["r1", "r2"], 2) == ["d", "e"]
    assert cam.most_disagreed(stages, "model", ["r1", "r2"], 10) == ["d", "e", "b", "c"]
    assert cam.most_disagreed(stages, "model", ["r1", "r2"], 0) == []
    with pytest.raises(ValueError, match=">= 0"):
        cam.most_disagreed(stages, "model", ["r1"], -1)


def test_the_overlay_is_a_png():
    crop, patch = _bright_patch()
    png = cam.overlay_png(crop, patch.astype(np.float32), "pip2: model 3, registry 0")
    assert png[:8] == PNG and len(png) > 2000
    with pytest.raises(ValueError, match="same shape"):
        cam.overlay_png(crop, patch[:8], "x")


class _Page(html.parser.HTMLParser):
    """The page's links, embedded images, table rows (cell texts) and text."""

    def __init__(self):
        super().__init__()
        self.links, self.images, self.rows, self.text = [], [], [], []
        self._cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self.rows[-1].append("")
            self._cell = True

    def handle_endtag(self, tag):
        self._cell = self._cell and tag not in ("td", "th")

    def handle_data(self, data):
        self.text.append(data)
        if self._cell:
            self.rows[-1][-1] += data


@pytest.fixture(scope="module")
def scored(ray_local, small_registry, untrained_model, tmp_path_factory) -> str:
    """A real scoring run of the small synthetic registry by a seeded untrained model; returns the run's folder."""
    folder = tmp_path_factory.mktemp("cam")
    model = untrained_model(folder / "model", SMALL_MODEL)
    return scoring.score(scoring.ScoreConfig(f"{small_registry}/registry", model, str(folder / "runs"), "cam")).run


def _stages(run: str, ratings: str) -> tuple[pd.DataFrame, str, list[str]]:
    """An independent join of a run's scores and the ratings: the stages, the model's name and the human raters."""
    scores = pq.read_table(runs.manifest(run).path("scores")).to_pandas().set_index("joint_id")
    rater = tables.model_rater(runs.manifest(run).model_version)
    wide = pq.read_table(ratings).to_pandas().pivot(index="joint_id", columns="rater", values="ratingen")
    stages = scores[["joint"]].assign(**{rater: scores["ratingen_pred"].astype(float)}).join(wide.astype(float))
    return stages, rater, list(wide.columns)


@pytest.mark.slow
def test_the_report_draws_and_links_heat_maps_of_the_most_disagreed_on_joints(scored, small_registry):
    run, ratings = scored, f"{small_registry}/ratings"
    argv = ["report", "--scores", run, "--ratings", ratings, "--cam", "3", "--registry", f"{small_registry}/registry"]
    assert main(argv) == 0
    out = runs.manifest(f"{run}/report").path("tables")
    cams = sorted(f for f in os.listdir(f"{out}/figures") if f.startswith("cam_"))
    assert len(cams) == 3
    for name in cams:
        assert open(f"{out}/figures/{name}", "rb").read(8) == PNG

    stages, rater, humans = _stages(run, ratings)
    chosen = cam.most_disagreed(stages, rater, humans, 3)
    assert sorted(figures.cam_file_name(j) for j in chosen) == cams

    page = _Page()
    page.feed(open(f"{out}/report.html", encoding="utf-8").read())
    text = " ".join(page.text)
    assert "What the model looked at" in text and "Table 6." in text
    assert sorted(link for link in page.links if "cam_" in link) == [f"figures/{name}" for name in cams]
    embedded = {open(f"{out}/figures/{name}", "rb").read() for name in cams}
    inline = {base64.b64decode(src.split(",", 1)[1]) for src in page.images}
    assert embedded <= inline
    header = next(row for row in page.rows if row[:2] == ["Joint", rater])
    assert header == ["Joint", rater, *humans, "Heat map"]  # every human rater's stage
    shown = {row[0]: row for row in page.rows if row and row[0] in chosen}
    for joint_id in chosen:
        want = [joint_id] + ["\u2014" if np.isnan(v) else f"{v:.0f}" for v in stages.loc[joint_id, header[1:-1]]]
        assert shown[joint_id][:-1] == want
        assert shown[joint_id][-1].startswith("figures/cam_")
        assert f"the model gave stage {stages.loc[joint_id, rater]:.0f}" in text


@pytest.mark.slow
def test_a_joint_gone_from_the_registry_is_listed_with_the_reason_and_another_model_is_refused(
    scored, small_registry, tmp_path
):
    ratings = f"{small_registry}/ratings"
    stages, rater, humans = _stages(scored, ratings)
    gone = cam.most_disagreed(stages, rater, humans, 2)[1]
    registry = pq.read_table(f"{small_registry}/registry")
    os.makedirs(tmp_path / "registry")
    pq.write_table(registry.filter(pc.not_equal(registry["joint_id"], gone)), tmp_path / "registry" / "part-0.parquet")
    config = report.ReportConfig(
        scored, ratings, out=str(tmp_path / "report"), cam=2, registry=str(tmp_path / "registry")
    )
    folder = report.report(config).out
    assert len([f for f in os.listdir(f"{folder}/figures") if f.startswith("cam_")]) == 1
    page = _Page()
    page.feed(open(f"{folder}/report.html", encoding="utf-8").read())
    row = next(row for row in page.rows if row and row[0] == gone)
    assert row[-1] == f"not in the registry: {tmp_path / 'registry'}"

    other = tmp_path / "other"
    model = ErosionCNN(SMALL_MODEL).eval()
    checkpoint.write(str(other), model, checkpoint.ModelCard("", SMALL_MODEL, 0, []))
    run = dataclasses.replace(runs.manifest(scored), model=str(other))
    with pytest.raises(ValueError, match="would explain another model"):
        report.build(config, str(tmp_path / "built"), run)
