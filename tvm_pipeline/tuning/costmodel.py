"""MetaSchedule's XGBoost cost model, kept with the tuning logs so that tuning starts trained.

A fresh XGBoost model predicts nothing for its first 100 measurements (MetaSchedule's
``num_warmup_samples``: random scores) and then learns only from the model being tuned. The
features it learns from (``per-store-feature``: loop structure, arithmetic and memory traffic per
buffer store) carry over between kernels of one target, so the model trained while tuning the
shipped logs ranks candidates of a kernel nobody tuned from the first batch.

``tune`` loads ``cost_model.npz`` from the target's database folders (the writable root's first,
then the shipped logs'), passes the model to MetaSchedule, and saves it back into the writable
folder when it stops (Ctrl-C included). ``distill --merge`` merges the scratch root's file into the
target's. The file holds the trained booster and the measurements it was trained on (features as
float16, compressed; at most ``MAX_SAMPLES`` of them, shared among the kernels: each kernel keeps
its fastest candidates and an even spread of the rest, so that the first re-training after a load
costs seconds, not minutes). It is plain arrays, never a pickle.

A file that cannot be read is reported and ignored: the model then starts untrained, as stock
MetaSchedule does.
"""

from __future__ import annotations

import io
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tvm.s_tir.meta_schedule.cost_model.xgb_model import FeatureGroup, XGBModel

from ..paths import atomic_write
from ..target.spec import physical_cores

FILE = "cost_model.npz"
FORMAT = 1
MAX_SAMPLES = 6000          # measurements kept in a saved model, all kernels together
KEEP_FASTEST = 0.25         # share of a kernel's kept measurements that are its fastest


@dataclass(frozen=True)
class Loaded:
    model: XGBModel
    samples: int                # measurements it was trained on
    kernels: int
    sources: tuple[Path, ...]   # files read
    problems: tuple[str, ...]   # files that could not be read, and why

    def summary(self) -> str:
        if not self.samples:
            text = "cost model: untrained (no saved model for this target)"
        else:
            text = (f"cost model: trained on {self.samples} measurements of {self.kernels} kernels "
                    f"({', '.join(str(p) for p in self.sources)})")
        return text + "".join(f"; ignored {p}" for p in self.problems)


def new_model() -> XGBModel:
    return XGBModel(num_tuning_cores=physical_cores())


def load(folders: list[Path]) -> Loaded:
    """The saved model of the first of ``folders`` that has a readable one (the writable root's
    holds what the shipped one held when it was first tuned, and everything measured since);
    untrained when none has."""
    problems: list[str] = []
    for path in _files(folders):
        loaded = _union([path], problems)
        if loaded.samples:
            return loaded
    return Loaded(new_model(), 0, 0, (), tuple(problems))


def _files(folders: list[Path]) -> list[Path]:
    paths = dict.fromkeys(Path(f).resolve() / FILE for f in folders)
    return [p for p in paths if p.is_file()]


def _union(paths: list[Path], problems: list[str]) -> Loaded:
    """A model with the measurements of every readable file of ``paths`` and the first booster."""
    model = new_model()
    data: OrderedDict = OrderedDict()
    sources, booster = [], None
    for path in paths:
        try:
            groups, raw = _read(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            problems.append(f"{path} ({err})")
            continue
        if booster is None and raw:
            booster = _booster(raw, path, problems)
        for group in groups:
            _add(data, group)
        sources.append(path)
    _set_data(model, data)
    model.booster = booster if model.data_size else None
    return Loaded(model, model.data_size, len(data), tuple(sources), tuple(problems))


def save(model: XGBModel, folder: Path) -> int:
    """Write ``model`` (booster and a bounded sample of its measurements) into ``folder``
    atomically; returns the measurements kept (0 and no file when it has none)."""
    groups = list(model.data.values())
    if not groups:
        return 0
    limit = _level([len(g.costs) for g in groups], MAX_SAMPLES)
    hashes, sizes, stores, features, costs = [], [], [], [], []
    for group in groups:
        kept = _kept(np.asarray(group.costs), limit)
        hashes.append(group.group_hash)
        sizes.append(len(kept))
        for i in kept:
            stores.append(len(group.features[i]))
            features.append(np.asarray(group.features[i], dtype=np.float16))
            costs.append(group.costs[i])
    raw = bytes(model.booster.save_raw("ubj")) if model.booster is not None else b""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, format=np.array(FORMAT), hashes=np.array(hashes),
                        sizes=np.array(sizes, dtype=np.int64),
                        stores=np.array(stores, dtype=np.int64),
                        features=np.concatenate(features), costs=np.array(costs, dtype=np.float32),
                        booster=np.frombuffer(raw, dtype=np.uint8))
    atomic_write(Path(folder) / FILE, buffer.getvalue())
    return len(costs)


def merge(into: Path, sources: list[Path]) -> tuple[int, tuple[str, ...]]:
    """Merge the saved models of ``sources`` into ``into``'s (the measurements of all, re-trained
    on them); returns the measurements saved and the files that could not be read, and why."""
    problems: list[str] = []
    loaded = _union(_files([into, *sources]), problems)
    if not loaded.samples:
        return 0, tuple(problems)
    retrain(loaded.model)
    return save(loaded.model, into), tuple(problems)


def add_to(folder: Path, model: XGBModel) -> int:
    """Save ``model``'s measurements into ``folder`` together with those already saved there (for a
    model that did not start from that file: ``tune --cold``)."""
    loaded = _union(_files([folder]), [])
    for group in model.data.values():
        _add(loaded.model.data, group)
    _set_data(loaded.model, loaded.model.data)
    if loaded.model.booster is None:
        loaded.model.booster = model.booster
    return save(loaded.model, folder)


def retrain(model: XGBModel) -> None:
    """Train ``model``'s booster on all its measurements (as MetaSchedule's update does)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = [f for g in model.data.values() for f in g.features]
        ys = np.concatenate([np.divide(g.min_cost, g.costs, out=np.zeros_like(g.costs),
                                       where=g.costs != 0) for g in model.data.values()])
    model._train(xs=xs, ys=ys)   # pylint: disable=protected-access  # MetaSchedule's own training
    model.last_train_size = model.data_size


def _level(sizes: list[int], total: int) -> int:
    """The per-kernel limit that keeps at most ``total`` measurements (at least 8 per kernel):
    kernels with fewer keep all of theirs and leave the rest to the others."""
    remaining, count = total, len(sizes)
    for i, size in enumerate(sorted(sizes)):
        if size * (count - i) > remaining:
            return max(8, remaining // (count - i))
        remaining -= size
    return max(sizes)


def _kept(costs: np.ndarray, limit: int) -> list[int]:
    """Indices of at most ``limit`` measurements: the fastest ones, then an even spread of the rest
    (failed runs, recorded as 1e10 s, are spread like any other)."""
    order = list(np.argsort(costs, kind="stable"))
    if len(order) <= limit:
        return order
    fastest = max(1, int(limit * KEEP_FASTEST))
    rest = order[fastest:]
    picks = np.linspace(0, len(rest) - 1, limit - fastest).round().astype(int)
    return order[:fastest] + [rest[i] for i in dict.fromkeys(picks)]


def _read(path: Path) -> tuple[list[FeatureGroup], bytes]:
    with np.load(path, allow_pickle=False) as arrays:
        if int(arrays["format"]) != FORMAT:
            raise ValueError(f"format {int(arrays['format'])}, this version reads {FORMAT}")
        features = arrays["features"].astype(np.float32)
        stores, costs, sizes = arrays["stores"], arrays["costs"], arrays["sizes"]
        if len(stores) != len(costs) or sizes.sum() != len(costs) or stores.sum() != len(features):
            raise ValueError("its arrays disagree in length")
        starts = np.concatenate([[0], np.cumsum(stores)])
        per_sample = [features[starts[i]:starts[i + 1]] for i in range(len(stores))]
        groups, first = [], 0
        for group_hash, size in zip(arrays["hashes"], sizes):
            groups.append(FeatureGroup(str(group_hash), per_sample[first:first + size],
                                       costs[first:first + size].copy()))
            first += size
        return groups, arrays["booster"].tobytes()


def _booster(raw: bytes, path: Path, problems: list[str]):
    import xgboost as xgb  # pylint: disable=import-outside-toplevel

    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(raw))
    except xgb.core.XGBoostError as err:
        problems.append(f"{path} (its booster: {str(err).splitlines()[0]})")
        return None
    return booster


def _set_data(model: XGBModel, data: OrderedDict) -> None:
    """Give ``model`` the measurements ``data`` (MetaSchedule keeps their count beside them)."""
    model.data = data
    model.data_size = sum(len(g.costs) for g in data.values())


def _add(data: OrderedDict, group: FeatureGroup) -> None:
    if group.group_hash in data:
        data[group.group_hash].append(group.features, group.costs)
    else:
        data[group.group_hash] = group
