"""The Ray engine (``--engine ray``): ``hudd test``, ``hudd assign`` and ``hudd heatmaps
--improvement`` on Ray Data, from one machine to a cluster, resumable, with the local
engine's result files.

The images of a set are listed on the driver (``files.txt`` or a folder scan, as the local
engine does) and cut into *shards* of ``shard_size`` consecutive positions. Ray Data streams
the pending shards: CPU tasks decode the images (:func:`decode_batch`, the local engine's
reading and skipping rules), then a pool of stateful actors (``map_batches`` with a callable
class: the model is loaded once per actor) runs the model. :class:`AssignActor` holds the
RCC members' index, runs LRP at the selected layer and the nearest-cluster search, and emits
only each image's kept candidates (cluster columns and distances), never heatmaps;
:class:`PredictActor` emits the model's outputs. The driver gathers the rows of each shard
and writes it, when complete, as ``part-<k>.parquet`` (atomically) under ``T/Assign/shards``
(``T/.partial/ray_test_<set>`` for the test). A rerun with the same signature skips the
completed shards, so a killed driver resumes; Ray itself restarts a killed actor and retries
its batches. The greedy quota selection (or ``--select``'s, over the softmax and the
penultimate features the actors then emit beside the candidates) runs on the driver over
all the candidates (:func:`hudd_core.assign.finish_assign`), so ``unsafe_set.csv`` is the
local engine's.
:class:`RelevanceActor` emits every layer's relevance for ``heatmaps --improvement`` (the
heatmaps are that step's product), in order, into the local engine's heatmap store.

Connecting: :func:`connect` calls ``ray.init()``, which joins the cluster of ``RAY_ADDRESS``
when set, else starts a local one sized to the machine.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from hudd_core.data.datasets import load_image, readable_path
from hudd_core.options import (
    LOCAL_RAY,
    NO_PREPROCESS,
    REFERENCE_ASSIGN,
    AssignOptions,
    Preprocess,
    RayOptions,
)
from hudd_core.selection import PAPER

SHARD_GLOB = "part-*.parquet"


def connect(progress: bool = False) -> None:
    """``ray.init()`` once per process: the cluster of ``RAY_ADDRESS`` when set, else a
    local cluster sized to the machine (no dashboard: it costs a core on small hosts)."""
    import ray
    import ray.data

    if not ray.is_initialized():
        local = not os.environ.get("RAY_ADDRESS")
        ray.init(include_dashboard=False if local else None, logging_level=logging.WARNING,
                 log_to_driver=False)  # fmt: skip
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress and _on_terminal()


def _on_terminal() -> bool:
    from hudd_core.progress import on_terminal

    return on_terminal()


# --- decoding (CPU tasks) ----------------------------------------------------------------


class _Listed(Dataset):
    """The images ``names`` of ``folder`` (relative paths or URIs) as a dataset of
    ``(tensor, 0)``, read as the local engine reads them
    (:func:`hudd_core.data.datasets.readable_path`, then ``load_image``)."""

    def __init__(self, folder: str, names: Sequence[str], load: Mapping[str, Any]) -> None:
        self.folder, self.names, self.load = Path(folder), list(names), dict(load)
        self.follow_symlinks = bool(self.load.pop("follow_symlinks", False))
        self.ids = [f"{self.folder.name}/{n}" for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = readable_path(self.folder, self.names[i], self.follow_symlinks)
        return load_image(path, **self.load), 0


def preprocessing(dataset: Any) -> dict[str, Any]:
    """How a dataset of :mod:`hudd_core.data.datasets` turns its files into tensors:
    ``load_image``'s options and ``readable_path``'s ``follow_symlinks``."""
    return {"channels": dataset.channels, "image_size": dataset.image_size,
            "mean": dataset.mean, "std": dataset.std, "max_pixels": dataset.max_pixels,
            "follow_symlinks": dataset.follow_symlinks}  # fmt: skip


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    folder: str,
    load: Mapping[str, Any],
    shape: Sequence[int],
) -> dict[str, np.ndarray]:
    """``{"pos", "name"}`` rows → ``{"pos", "x", "skip"}``: the image tensors (zeros for an
    image left out) and the reason it was left out (``""`` when read), with the local
    engine's rules and messages (:class:`hudd_core.data.robust.Skipping`)."""
    from hudd_core.data.robust import Skipping

    items = Skipping(_Listed(folder, [str(n) for n in batch["name"]], load), shape)
    x = np.zeros((len(items), *shape), dtype=np.float32)
    skip = np.full(len(items), "", dtype=object)
    ids = np.array(items.dataset.ids, dtype=object)
    for i in range(len(items)):
        img, _, _, reason = items[i]
        if reason is None:
            x[i] = img.numpy()
        else:
            skip[i] = reason
    return {"pos": np.asarray(batch["pos"], dtype=np.int64), "id": ids, "x": x, "skip": skip}


# --- the actors --------------------------------------------------------------------------


class _ModelActor:
    """Common part of the actors: the model on the actor's device, torch threads as the
    actor's CPUs (Ray sets ``OMP_NUM_THREADS`` to them)."""

    def __init__(self, model: torch.nn.Module, device: str) -> None:
        from hudd_core.models.train import resolve_device

        self.threads = max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()

    def read(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, torch.Tensor | None]:
        """The rows read and their images. Sets the threads first: Ray calls the actor from
        another thread than its constructor's, and OpenMP's thread count is per thread."""
        torch.set_num_threads(self.threads)
        ok = np.asarray(batch["skip"] == "", dtype=bool)
        return ok, (torch.from_numpy(np.ascontiguousarray(batch["x"][ok])) if ok.any() else None)


class PredictActor(_ModelActor):
    """The model's outputs (float32, flattened) for the images read of each batch."""

    def __init__(self, model: torch.nn.Module, device: str, width: int) -> None:
        super().__init__(model, device)
        self.width = width

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok, x = self.read(batch)
        out = np.zeros((len(ok), self.width), dtype=np.float32)
        if x is not None:
            with torch.inference_mode():
                out[ok] = self.model(x.to(self.device)).float().cpu().reshape(len(x), -1).numpy()
        return {"pos": batch["pos"], "skip": batch["skip"], "out": out}


class AssignActor(_ModelActor):
    """LRP at ``layer`` and the nearest-member search of every RCC
    (:class:`hudd_core.assign.GroupedIndex`); emits per image read its ``top`` closest
    cluster columns and distances, and with ``rank="uncertainty"`` the softmax entropy of
    the same forward pass (column ``uncertainty``); with ``embed_widths`` (``--select``
    but ``hudd``) each image's softmax and penultimate features (``probs``, ``features``)."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: str,
        *,
        layer: str,
        keypoint_of: Mapping[int, int] | None,
        members: np.ndarray,
        labels: np.ndarray,
        backend: str,
        composite: str,
        top: int,
        rank: str = "distance",
        embed_widths: tuple[int, int] | None = None,
    ) -> None:
        from hudd_core.assign import GroupedIndex, assign_relevance, pool_embedding

        super().__init__(model, device)
        relevance = assign_relevance(self.model, layer, keypoint_of, composite=composite,
                                     device=str(self.device), rank=rank)  # fmt: skip
        self.index = GroupedIndex(members, labels, relevance, backend)
        self.layer, self.top, self.rank = layer, top, rank
        # --select but hudd: the softmax and penultimate features (widths C, D) per image
        self.widths = embed_widths
        self.embed = pool_embedding(self.model, str(self.device)) if embed_widths else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from hudd_core.assign import batch_uncertainty, non_finite_message, top_candidates

        ok, x = self.read(batch)
        idx = np.full((len(ok), self.top), -1, dtype=np.int32)
        dist = np.full((len(ok), self.top), np.inf, dtype=np.float32)
        unc = np.zeros((len(ok), 1), dtype=np.float32)
        if x is not None:
            distances, bad_row, outputs = self.index.search(x)
            if distances is None:
                image = str(batch["id"][np.flatnonzero(ok)[bad_row]])
                raise ValueError(non_finite_message(self.layer, image))
            idx[ok], dist[ok] = top_candidates(distances, self.top)
            if self.rank == "uncertainty":
                unc[ok, 0] = batch_uncertainty(self.rank, outputs)
        out = {"pos": batch["pos"], "skip": batch["skip"], "cluster_idx": idx, "distance": dist}
        if self.embed is not None:
            out |= self.embedding(ok, x)
        return out | ({"uncertainty": unc} if self.rank == "uncertainty" else {})

    def embedding(self, ok: np.ndarray, x: torch.Tensor | None) -> dict[str, np.ndarray]:
        """The ``probs`` and ``features`` columns of a batch (zeros where not read)."""
        probs = np.zeros((len(ok), self.widths[0]), dtype=np.float32)
        features = np.zeros((len(ok), self.widths[1]), dtype=np.float32)
        if x is not None:
            probs[ok], features[ok] = self.embed(x)
        return {"probs": probs, "features": features}


class RelevanceActor(_ModelActor):
    """LRP relevance of every recorded layer (``hudd heatmaps --improvement``: the
    heatmaps are the step's product), flattened, one column ``rel:<layer>`` each."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: str,
        *,
        composite: str,
        layers: Sequence[str],
        shape: Sequence[int],
    ) -> None:
        from hudd_core.lrp import LRP

        super().__init__(model, device)
        self.lrp = LRP(self.model, composite, list(layers))
        self.widths = {k: math.prod(s) for k, s in self.lrp.shapes(tuple(shape)).items()}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok, x = self.read(batch)
        out = {"pos": batch["pos"], "skip": batch["skip"], "failed": ~ok}
        if x is None or not ok.all():  # the driver stops at the first unreadable image
            # zeros: every batch has the same columns
            return out | {f"rel:{k}": np.zeros((len(ok), w), np.float32)
                          for k, w in self.widths.items()}  # fmt: skip
        relevance = self.lrp(x.to(self.device))
        for name, r in relevance.items():
            out[f"rel:{name}"] = r.float().cpu().reshape(len(x), -1).numpy()
        return out


# --- shards ------------------------------------------------------------------------------


@dataclass
class ShardJob:
    """One streamed pass of an actor over the images ``names`` of ``folder``.

    ``columns`` names the actor's output arrays (2-D, one row per image) kept in the
    shards; ``signature`` must match for completed shards to be reused. The shard size is
    rounded up to a multiple of the batch size: the batches are then the local engine's
    (the same consecutive positions), and so are the float results, bit for bit.
    """

    folder: Path
    names: Sequence[str]
    out: Path
    signature: dict
    load: dict
    shape: tuple[int, ...]
    actor: type
    actor_kwargs: dict
    columns: tuple[str, ...]
    batch_size: int = 64
    shard_size: int = 4096
    concurrency: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        self.shard_size = math.ceil(self.shard_size / self.batch_size) * self.batch_size

    def shard_path(self, k: int) -> Path:
        return self.out / f"part-{k:06d}.parquet"

    @property
    def shards(self) -> int:
        return math.ceil(len(self.names) / self.shard_size)

    def bounds(self, k: int) -> tuple[int, int]:
        return k * self.shard_size, min((k + 1) * self.shard_size, len(self.names))


def validate_ray_options(
    concurrency: int, cpus_per_actor: float, gpus_per_actor: float, shard_size: int
) -> None:
    """A ValueError naming the option whose value cannot work."""
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"--ray-concurrency must be a positive integer, got {concurrency!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"--ray-shard-size must be a positive integer, got {shard_size!r}")
    if not cpus_per_actor > 0:
        raise ValueError(f"--ray-cpus-per-actor must be positive, got {cpus_per_actor!r}")
    if not gpus_per_actor >= 0:
        raise ValueError(f"--ray-gpus-per-actor must be 0 or more, got {gpus_per_actor!r}")


def actor_resources(ray: RayOptions) -> dict[str, Any]:
    """The :class:`ShardJob` fields the ``--ray-*`` options set, checked first."""
    validate_ray_options(ray.concurrency, ray.cpus_per_actor, ray.gpus_per_actor,
                         ray.shard_size)  # fmt: skip
    return {"shard_size": ray.shard_size, "concurrency": ray.concurrency,
            "cpus_per_actor": ray.cpus_per_actor,
            "gpus_per_actor": ray.gpus_per_actor}  # fmt: skip


def open_shards(job: ShardJob) -> list[int]:
    """Prepares ``job.out`` and returns the shards still to compute: completed shards of
    another signature (other inputs, model or options) are removed first."""
    job.out.mkdir(parents=True, exist_ok=True)
    sig_file = job.out / "signature.json"
    sig = json.dumps({**job.signature, "shard_size": job.shard_size}, sort_keys=True)
    if not sig_file.is_file() or sig_file.read_text() != sig:
        for p in job.out.glob(SHARD_GLOB):
            p.unlink()
        from hudd_core.fileio import atomic_write_text

        atomic_write_text(sig_file, sig)
    return [k for k in range(job.shards) if not job.shard_path(k).is_file()]


def _write_shard(job: ShardJob, k: int, parts: list[dict[str, np.ndarray]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hudd_core.fileio import atomic_write

    rows = {c: np.concatenate([p[c] for p in parts]) for c in ("pos", "skip", *job.columns)}
    order = np.argsort(rows["pos"], kind="stable")
    cols = {"pos": pa.array(rows["pos"][order]),
            "skip": pa.array([str(s) for s in rows["skip"][order]], pa.string())}  # fmt: skip
    for c in job.columns:
        a = np.ascontiguousarray(rows[c][order])
        cols[c] = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])
    atomic_write(job.shard_path(k), lambda tmp: pq.write_table(pa.table(cols), tmp))


def read_shards(job: ShardJob) -> dict[str, np.ndarray]:
    """Every shard's rows, in position order: ``pos``, ``skip`` and the job's columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(job.shard_path(k)) for k in range(job.shards)]
    t = pa.concat_tables(tables) if tables else None
    if t is None or t.num_rows == 0:
        return {"pos": np.zeros(0, np.int64), "skip": np.zeros(0, object)}
    out = {"pos": t["pos"].to_numpy(), "skip": np.array(t["skip"].to_pylist(), dtype=object)}
    for c in job.columns:
        col = t[c].combine_chunks()
        out[c] = col.flatten().to_numpy().reshape(t.num_rows, col.type.list_size)
    return out


def stream(
    job: ShardJob, ranges: Sequence[tuple[int, int]], *, preserve_order: bool = False
) -> Iterator[dict[str, np.ndarray]]:
    """The actor's output batches for the positions ``ranges`` (one block each): decode
    tasks, then the actor pool, streamed with Ray Data's backpressure."""
    import pyarrow as pa
    import ray.data

    tables = [pa.table({"pos": pa.array(np.arange(a, b, dtype=np.int64)),
                        "name": pa.array(job.names[a:b], pa.string())})
              for a, b in ranges]  # fmt: skip
    ray.data.DataContext.get_current().execution_options.preserve_order = preserve_order
    ds = ray.data.from_arrow(tables)
    ds = ds.map_batches(decode_batch, batch_size=job.batch_size, batch_format="numpy",
                        fn_kwargs={"folder": str(job.folder), "load": job.load,
                                   "shape": tuple(job.shape)})  # fmt: skip
    ds = ds.map_batches(
        job.actor,
        fn_constructor_kwargs=job.actor_kwargs,
        compute=ray.data.ActorPoolStrategy(size=job.concurrency),
        num_cpus=job.cpus_per_actor,
        num_gpus=job.gpus_per_actor or None,
        batch_size=job.batch_size,
        batch_format="numpy",
    )
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def run_shards(job: ShardJob, *, progress: bool = True) -> dict[str, np.ndarray]:
    """Streams the pending shards of ``job`` through Ray Data (decode tasks, then the
    actor pool), writes each completed shard, and returns every shard's rows."""
    from hudd_core.progress import bar as progress_bar

    pending = open_shards(job)
    done = len(job.names) - sum(b - a for a, b in map(job.bounds, pending))
    if pending:
        connect(progress)
        parts: dict[int, list[dict[str, np.ndarray]]] = {k: [] for k in pending}
        left = {k: job.bounds(k)[1] - job.bounds(k)[0] for k in pending}
        with progress_bar(total=len(job.names), initial=done, desc=job.out.name, unit="img",
                          enabled=progress) as bar:  # fmt: skip
            for batch in stream(job, [job.bounds(k) for k in pending]):
                shard = batch["pos"] // job.shard_size
                for k in np.unique(shard).tolist():
                    rows = {c: v[shard == k] for c, v in batch.items()}
                    parts[k].append(rows)
                    left[k] -= len(rows["pos"])
                    if left[k] == 0:
                        _write_shard(job, k, parts.pop(k))
                bar.update(len(batch["pos"]))
        if parts:  # Ray lost rows: never write a partial shard
            raise RuntimeError(f"Ray returned no rows for shards {sorted(parts)} of {job.out}")
    return read_shards(job)


def skipped_rows(rows: dict[str, np.ndarray]) -> list[tuple[int, str]]:
    """``(position, reason)`` of the images left out."""
    return [(int(p), str(s)) for p, s in zip(rows["pos"], rows["skip"], strict=True) if s]


# --- the steps ---------------------------------------------------------------------------


def ray_assign(
    workdir: str | Path,
    data_root: str | Path,
    model: torch.nn.Module,
    layer: str,
    keypoint_of: Mapping[int, int] | None,
    *,
    input_shape: tuple[int, int, int],
    options: AssignOptions = REFERENCE_ASSIGN,
    prep: Preprocess = NO_PREPROCESS,
    ray: RayOptions = LOCAL_RAY,
    batch_size: int = 256,
    device: str = "auto",
    explained_by: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict:
    """The AssignModule on Ray (:func:`hudd_core.assign.run_assign`'s outputs, the same
    ``unsafe_set.csv`` and ``T/skipped.csv``); candidates in ``T/Assign/shards``.

    ``keypoint_of``: a keypoint regressor's cluster → explained keypoint
    (:func:`hudd_core.assign.rcc_keypoints`), None for a classifier. ``options``: the
    local engine's (its ``composite`` is the actors' LRP rules); the actors emit the
    entropy under ``rank="uncertainty"`` (refused here, before Ray starts, for a keypoint
    regressor).
    """
    from hudd_core.assign import check_rank, finish_assign, plan_assign, resolve_backend
    from hudd_core.data.robust import SkipLog

    resources = actor_resources(ray)
    check_rank(options.rank, keypoint_of)
    workdir, data_root = Path(workdir), Path(data_root)
    plan = plan_assign(workdir, data_root, options=options, prep=prep, input_shape=input_shape,
                       explained_by=explained_by)  # fmt: skip
    job = assign_job(plan, model, keypoint_of, options, device=device, batch_size=batch_size,
                     input_shape=input_shape, out=workdir / "Assign" / "shards",
                     resources=resources)  # fmt: skip
    rows = run_shards(job, progress=progress)
    skips = SkipLog(workdir)
    for pos, reason in skipped_rows(rows):
        skips.add("assign", plan.pool.ids[pos], reason)
    read = rows["skip"] == ""
    # what "auto" resolves to here; GPU actors may resolve it to a GPU search
    shown = options.backend if ray.gpus_per_actor else resolve_backend(options.backend)
    unc = rows["uncertainty"][read, 0] if options.rank == "uncertainty" else None
    embedding = (rows["probs"][read], rows["features"][read]) if "probs" in rows else None
    return finish_assign(workdir, data_root, plan, rows["pos"][read],
                         rows["cluster_idx"][read], rows["distance"][read], unc,
                         skipped=len(skips.images("assign")), backend=shown,
                         gifs=options.gifs, embedding=embedding)  # fmt: skip


def assign_job(
    plan: Any,
    model: torch.nn.Module,
    keypoint_of: Mapping[int, int] | None,
    options: AssignOptions,
    *,
    device: str,
    batch_size: int,
    input_shape: tuple[int, int, int],
    out: Path,
    resources: Mapping[str, Any],
) -> ShardJob:
    """The :class:`AssignActor` pass over the pool of ``plan``
    (:class:`hudd_core.assign.AssignPlan`): its RCCs with a quota, their members."""
    searched = None
    if keypoint_of is not None:
        searched = {int(c): int(k) for c, k in keypoint_of.items() if c in plan.quotas}
    widths = embedding_widths(model, input_shape) if plan.select != PAPER else None
    kwargs = {"layer": plan.layer, "keypoint_of": searched, "members": plan.members,
              "labels": plan.labels, "backend": options.backend,
              "composite": options.composite, "top": plan.top,
              "rank": options.rank, "embed_widths": widths}  # fmt: skip
    uncertainty = ("uncertainty",) if options.rank == "uncertainty" else ()
    uncertainty += ("probs", "features") if widths else ()
    return ShardJob(
        folder=plan.pool.folder,
        names=plan.pool.names[: plan.n],
        out=out,
        signature={**plan.signature, "backend": options.backend},
        load=preprocessing(plan.pool),
        shape=tuple(input_shape),
        actor=AssignActor,
        actor_kwargs={"model": model.cpu(), "device": device, **kwargs},
        columns=("cluster_idx", "distance", *uncertainty),
        batch_size=batch_size,
        **resources,
    )


def embedding_widths(model: torch.nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """``(classes, penultimate width)`` of ``model``'s :func:`~hudd_core.assign.pool_embedding`
    (one forward pass of a blank image): the columns of a batch with no image read."""
    from hudd_core.assign import pool_embedding

    probs, features = pool_embedding(model, "cpu")(torch.zeros((1, *input_shape)))
    return probs.shape[1], features.shape[1]


def ray_predictor(
    ray: RayOptions = LOCAL_RAY,
) -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, str]]]]:
    """A drop-in for :func:`hudd_core.testing.predict_readable` (what
    :func:`hudd_core.testing.run_test` calls per set) that runs the model on Ray."""
    resources = actor_resources(ray)

    def predict(model, dataset, *, resume: Path, batch_size=64, device="auto", progress=True,
                check=None, desc="test", **_) -> tuple:  # fmt: skip
        from hudd_core.data.robust import common_shape
        from hudd_core.testing import predict_readable

        shape = common_shape(dataset)
        if shape is None:  # no image readable: nothing for Ray to do, the local rules say why
            return predict_readable(model, dataset, batch_size=batch_size, device=device,
                                    progress=False, check=check, desc=desc)  # fmt: skip
        with torch.inference_mode():
            probe = model.cpu().eval()(torch.zeros(1, *shape))
        if check is not None:
            check(probe.float())
        out = Path(resume).with_name("ray_" + Path(resume).stem)  # beside the local one
        job = predict_job(model, dataset, shape, int(probe[0].numel()), out, device=device,
                          batch_size=batch_size, resources=resources)  # fmt: skip
        rows = run_shards(job, progress=progress)
        read = rows["skip"] == ""
        positions = rows["pos"][read]
        outs = rows["out"][read].reshape(len(positions), *probe.shape[1:])
        targets = np.asarray(dataset.targets)[positions]
        if getattr(dataset, "task", "classifier") == "keypoints":
            targets = (targets * dataset.scale).astype(np.float32)
        return outs, targets, positions, skipped_rows(rows)

    return predict


def predict_job(
    model: torch.nn.Module,
    dataset: Any,
    shape: Sequence[int],
    width: int,
    out: Path,
    *,
    device: str,
    batch_size: int,
    resources: Mapping[str, Any],
) -> ShardJob:
    """The :class:`PredictActor` pass over ``dataset`` (outputs ``width`` wide), its
    shards in ``out``, signed by the images and the model."""
    from hudd_core.models.checkpoint import model_fingerprint

    ids = list(dataset.ids)
    signature = {"n": len(ids), "ids": ids[:1] + ids[-1:], "shape": list(shape),
                 "model": model_fingerprint(model)}  # fmt: skip
    return ShardJob(
        folder=dataset.folder,
        names=dataset.names,
        out=out,
        signature=signature,
        load=preprocessing(dataset),
        shape=tuple(shape),
        actor=PredictActor,
        actor_kwargs={"model": model.cpu(), "device": device, "width": width},
        columns=("out",),
        batch_size=batch_size,
        **resources,
    )


def ray_heatmap_source(
    ray: RayOptions = LOCAL_RAY,
) -> Callable[..., Iterator[tuple[dict[str, torch.Tensor] | None, list[tuple[int, str]]]]]:
    """The relevance batches of :func:`hudd_core.heatmaps.compute_heatmaps` computed on
    Ray (classifier images without labels: ``hudd heatmaps --improvement``), in position
    order from ``start``; ``(None, [(position, reason)])`` at the first unreadable image.
    The resume point is the heatmap store's own (its rows written so far)."""
    resources = actor_resources(ray)

    def source(model, dataset, shape, start, *, composite, layers, batch_size, device,
               progress=False):  # fmt: skip
        job = ShardJob(
            folder=dataset.folder,
            names=dataset.names,
            out=Path(),
            signature={},
            load=preprocessing(dataset),
            shape=tuple(shape),
            actor=RelevanceActor,
            actor_kwargs={
                "model": model.cpu(),
                "device": device,
                "composite": composite,
                "layers": list(layers),
                "shape": tuple(shape),
            },
            columns=(),
            batch_size=batch_size,
            **resources,
        )
        n = len(dataset.names)
        ranges = [(a, min(a + job.shard_size, n)) for a in range(start, n, job.shard_size)]
        if not ranges:
            return
        connect(progress)
        for batch in stream(job, ranges, preserve_order=True):
            if batch["failed"].any():
                bad = [(int(p), str(r)) for p, r in zip(batch["pos"], batch["skip"], strict=True)]
                yield None, [b for b in bad if b[1]]
                return
            rel = {k[4:]: torch.from_numpy(np.array(v)) for k, v in batch.items() if "rel:" in k}
            yield rel, []

    return source
