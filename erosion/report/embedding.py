"""``erosion embed``: a scoring run's embeddings as a 2-D t-SNE map coloured by stage, and each joint's nearest
rated neighbours.

A run scored with ``--embeddings`` holds each crop's penultimate-layer activations (``schema.embeddings``). This
maps a seeded random sample of one embedding space (the model, or fold model, with the most rows, unless one is
named) to 2-D with scikit-learn's t-SNE, as the thesis did with its last hidden layer (section 4.6), and plots
it coloured by the predicted stage and, where the rater rated the joint, by the rated stage. With ``--map`` (an
earlier embed's folder) and openTSNE installed (``pip install 'erosion[tsne]'``) the sample is placed into that
map instead (``TSNEEmbedding.transform``: the earlier map's points stay where they are), so that a new night's
crops land among the old ones; scikit-learn's t-SNE cannot place new points.

Each sampled joint's k nearest rated neighbours (:mod:`erosion.core.neighbours`: same space, other patients)
are listed with their stages, their stage mix and, for a rated joint, their disagreement with its rating; the
review queue (:mod:`erosion.report.queue`) ranks by the same disagreement. The folder (default
``<scores>/embedding``) is a committed run; the run's agreement report shows its map (:func:`map_figure`).
"""

from __future__ import annotations

import dataclasses
import posixpath
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow as pa

from erosion.core import neighbours
from erosion.core.domain import NUM_STAGES
from erosion.core.settings import setting
from erosion.io import runs, storage
from erosion.io.ratings import rater_stages
from erosion.report import figures

FIGURE = "map.png"


@dataclass(frozen=True)
class EmbedConfig:
    """Which run's embeddings to map, how, and whose ratings the neighbours carry."""

    scores: str = setting("a committed scoring run made with --embeddings, <out>/<run_id>")
    ratings: str = setting("the ratings table: the rated stages of the map and of the neighbours", "")
    rater: str = setting("whose ratings the neighbours carry", "registry")
    out: str = setting("the map's folder (a committed run); default <scores>/embedding", "")
    sample: int = setting("crops mapped, drawn at random (0: all of the space)", 2000)
    seed: int = setting("the seed of the sample and of t-SNE", 0)
    perplexity: float = setting("t-SNE's perplexity (at most a third of the sample)", 30.0)
    k: int = setting("nearest rated neighbours per joint (same space, other patients)", 10)
    space: str = setting("the embedding space, <model_version>/<fold>; default the one with the most rows", "")
    map: str = setting("an earlier embed's folder: place this sample into its map (needs openTSNE)", "")
    options: storage.StorageOptions = setting("S3 settings", factory=storage.StorageOptions)


@dataclass(frozen=True)
class Embedded:
    """Embedded joints: keys from the scores and each one's space, (N, D) float32 embeddings in the same order."""

    joints: pd.DataFrame  # joint_id, space, patient_id, joint, ratingen_pred
    embeddings: np.ndarray

    def only(self, space: str) -> Embedded:
        """The joints of one space; ValueError where there are none."""
        kept = (self.joints["space"] == space).to_numpy()
        if not kept.any():
            raise ValueError(f"no crop of space {space!r}; the run has {sorted(set(self.joints['space']))}.")
        return Embedded(self.joints[kept].reset_index(drop=True), self.embeddings[kept])


@dataclass(frozen=True)
class EmbedResult:
    """Where the map went and what it holds."""

    out: str
    space: str
    coordinates: pd.DataFrame  # joint_id, space, patient_id, joint, ratingen_pred, rating, x, y
    neighbours: pd.DataFrame  # per sampled joint: its neighbours, their stages, mix and disagreement
    placed: bool  # placed into an earlier map (openTSNE), not mapped afresh
    png: bytes


def read(run: runs.RunManifest, options: storage.StorageOptions) -> Embedded:
    """The run's embeddings, each with its space (``<model_version>/<fold>``) and its scores' keys and predicted
    stage; ValueError for a run scored without ``--embeddings`` or one that embedded nothing."""
    if "embeddings" not in run.outputs:
        raise ValueError(f"run {run.run} has no embeddings: score it with --embeddings.")
    keys, parts = [], []
    for _, _, batch in storage.iter_batches(run.path("embeddings"), None, 8192, options):
        keys.append(batch.select(["joint_id", "model_version", "fold"]).to_pandas())
        width = batch.schema.field("embedding").type.list_size
        parts.append(batch["embedding"].flatten().to_numpy(zero_copy_only=False).reshape(-1, width))
    found = pd.concat(keys, ignore_index=True) if keys else pd.DataFrame()
    if found.empty:
        raise ValueError(f"run {run.run} embedded no crop (every row carried over or failed).")
    found["space"] = found["model_version"] + "/" + found["fold"].astype(str)
    scores = storage.read_table(run.path("scores"), ["joint_id", "patient_id", "joint", "ratingen_pred"], options)
    joints = found[["joint_id", "space"]].merge(scores.to_pandas(), on="joint_id", how="left", validate="1:1")
    return Embedded(joints, np.concatenate(parts).astype(np.float32))


def rated(config: EmbedConfig) -> pd.Series:
    """joint_id -> the rater's stage (0-5; of a joint rated twice, the last); empty without ratings."""
    if not config.ratings:
        return pd.Series(dtype=np.int64)
    stages = rater_stages(config.ratings, config.rater, config.options).to_pandas()
    stages = stages[stages["label"].between(0, NUM_STAGES - 1)].drop_duplicates("joint_id", keep="last")
    return pd.Series(stages["label"].to_numpy(np.int64), index=pd.Index(stages["joint_id"], dtype=object))


def rated_neighbours(embedded: Embedded, queries: np.ndarray, stages: pd.Series, k: int) -> pd.DataFrame:
    """Per query (indices into ``embedded``): its k nearest joints rated in ``stages`` (same space, other
    patients), their stages, distances and stage mix, its own rating (NaN: none) and their disagreement with it."""
    joints = embedded.joints
    reference = np.flatnonzero(joints["joint_id"].isin(stages.index).to_numpy())
    spaces = joints["space"].to_numpy(dtype=object)
    patients = joints["patient_id"].to_numpy(dtype=object)
    index, distance = neighbours.nearest(
        neighbours.Points(embedded.embeddings[queries], spaces[queries], patients[queries]),
        neighbours.Points(embedded.embeddings[reference], spaces[reference], patients[reference]),
        k,
    )
    reference_stages = stages.reindex(joints["joint_id"].to_numpy()[reference]).to_numpy(np.int64)
    found = neighbours.neighbour_stages(index, reference_stages)
    ids = joints["joint_id"].to_numpy(dtype=object)
    rating = stages.reindex(ids[queries]).to_numpy(np.float64)
    own = np.where(np.isnan(rating), 0, rating).astype(np.int64)
    disagreement = np.where(np.isnan(rating), np.nan, neighbours.disagreement(found, own))
    return pd.DataFrame(
        {
            "joint_id": ids[queries],
            "rating": rating,
            "neighbours": [ids[reference[row[row >= 0]]].tolist() for row in index],
            "neighbour_stages": [row[row >= 0].tolist() for row in found],
            "distances": [row[np.isfinite(row)].round(4).tolist() for row in distance],
            "stage_mix": list(neighbours.stage_mix(found)),
            "disagreement": disagreement,
        }
    )


def tsne(points: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """(N, 2) a fresh t-SNE map of (N, D) points (scikit-learn; PCA start, so a seed gives one map)."""
    from sklearn.manifold import TSNE  # here: scikit-learn costs every other command its import

    if len(points) < 4:
        raise ValueError(f"a t-SNE map needs at least 4 crops, got {len(points)}.")
    perplexity = min(perplexity, (len(points) - 1) / 3)
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def place(reference: np.ndarray, reference_map: np.ndarray, points: np.ndarray, perplexity: float, seed: int):
    """(N, 2) new points placed into an existing map of ``reference`` (openTSNE's ``transform``: the map's own
    points stay where they are); ValueError where openTSNE is not installed."""
    try:
        from openTSNE import TSNEEmbedding, affinity
    except ImportError as error:
        raise ValueError("placing crops into an earlier map needs openTSNE: pip install 'erosion[tsne]'.") from error
    perplexity = min(perplexity, (len(reference) - 1) / 3)
    affinities = affinity.PerplexityBasedNN(reference, perplexity=perplexity, random_state=seed, verbose=False)
    fitted = TSNEEmbedding(reference_map.astype(np.float64), affinities, random_state=seed)
    return np.asarray(fitted.transform(points))


def plot(coordinates: pd.DataFrame, title: str, background: pd.DataFrame | None = None) -> bytes:
    """The map as PNG: coloured by the predicted stage, and beside it by the rated stage where the joints have
    ratings (grey: not rated); ``background``: an earlier map's points, in light grey underneath."""
    columns = [("ratingen_pred", "predicted stage")] + [("rating", "rated stage")] * bool(
        coordinates["rating"].notna().any()
    )
    fig, axes = plt.subplots(1, len(columns), figsize=(5.6 * len(columns), 5.0), constrained_layout=True, squeeze=False)
    colours = plt.get_cmap("viridis", NUM_STAGES)
    for ax, (column, name) in zip(axes[0], columns, strict=True):
        if background is not None:
            ax.scatter(background["x"], background["y"], s=4, color="#dddddd", label="earlier map")
        missing = coordinates[column].isna()
        ax.scatter(coordinates.loc[missing, "x"], coordinates.loc[missing, "y"], s=5, color="#999999", label="none")
        for stage in range(NUM_STAGES):
            at = coordinates[column] == stage
            if at.any():
                ax.scatter(coordinates.loc[at, "x"], coordinates.loc[at, "y"], s=7, color=colours(stage),
                           label=f"stage {stage}")  # fmt: skip
        ax.set(title=f"{title}: {name}", xticks=[], yticks=[])
        ax.legend(fontsize=7, markerscale=2, loc="best")
    return figures.to_png(fig)


def embed(config: EmbedConfig, folder: str) -> EmbedResult:
    """Map (or place) the sample, list its neighbours, write ``coordinates.parquet``, ``neighbours.parquet`` and
    the PNG into ``folder``."""
    if config.sample < 0 or config.k < 1:
        raise ValueError(f"sample must be >= 0 and k >= 1, got {config.sample} and {config.k}.")
    run = runs.manifest(config.scores, config.options)
    earlier = runs.manifest(config.map, config.options) if config.map else None
    everything = read(run, config.options)
    space = config.space or (earlier.config["space"] if earlier else everything.joints["space"].mode()[0])
    embedded = everything.only(space)
    rng = np.random.default_rng(config.seed)
    count = len(embedded.joints)
    sample = np.sort(rng.permutation(count)[: config.sample]) if config.sample else np.arange(count)
    stages = rated(config)
    coordinates = embedded.joints.iloc[sample].reset_index(drop=True)
    coordinates["rating"] = stages.reindex(coordinates["joint_id"].to_numpy()).to_numpy(np.float64)
    background = None
    if earlier:
        background = storage.read_table(earlier.path("coordinates"), options=config.options).to_pandas()
        before = read(runs.manifest(earlier.scores, config.options), config.options).only(space)
        position = pd.Index(before.joints["joint_id"]).get_indexer(background["joint_id"])
        if (position < 0).any():
            raise ValueError(f"the map {config.map} holds crops its run {earlier.scores} no longer has in {space}.")
        xy = place(before.embeddings[position], background[["x", "y"]].to_numpy(), embedded.embeddings[sample],
                   earlier.config["perplexity"], config.seed)  # fmt: skip
    else:
        xy = tsne(embedded.embeddings[sample], config.perplexity, config.seed)
    coordinates["x"], coordinates["y"] = xy[:, 0].astype(np.float32), xy[:, 1].astype(np.float32)
    listed = rated_neighbours(embedded, sample, stages, config.k)
    png = plot(coordinates, f"run {run.run_id}, {len(sample):,} crops", background)
    storage.write_table(f"{folder}/coordinates.parquet", pa.Table.from_pandas(coordinates), config.options)
    storage.write_table(f"{folder}/neighbours.parquet", pa.Table.from_pandas(listed), config.options)
    storage.write_bytes(f"{folder}/{FIGURE}", png, config.options)
    return EmbedResult(folder, space, coordinates, listed, earlier is not None, png)


def map_embedding(config: EmbedConfig) -> EmbedResult:
    """Build the map in a new attempt folder and commit it as the run ``config.out`` (default
    ``<scores>/embedding``)."""
    out = (config.out or posixpath.join(config.scores.rstrip("/"), "embedding")).rstrip("/")
    parent, name = posixpath.split(out)
    storage.reach(config.scores, out, options=config.options)
    with runs.begin(parent, name, config.options) as attempt:
        built = embed(config, attempt.url)
        manifest = runs.RunManifest(
            kind="embed",
            run_id=name,
            committed_at=runs.now(),
            rows={"mapped": len(built.coordinates), "rated": int(built.coordinates["rating"].notna().sum())},
            config=dataclasses.asdict(config) | {"options": None, "space": built.space},
            ratings=config.ratings,
            raters=[config.rater] if config.ratings else [],
            scores=config.scores,
            outputs={"coordinates": attempt.output("coordinates.parquet"),
                     "neighbours": attempt.output("neighbours.parquet"), "figure": attempt.output(FIGURE)},
        )  # fmt: skip
        attempt.commit(manifest)
    return built


def map_figure(scores: str, options: storage.StorageOptions | None = None) -> bytes | None:
    """The PNG of the scoring run's committed map (``<scores>/embedding``), or None where there is none."""
    try:
        found = runs.manifest(posixpath.join(scores.rstrip("/"), "embedding"), options)
    except FileNotFoundError:
        return None
    return storage.read_bytes(found.path("figure"), options)
