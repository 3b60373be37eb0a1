"""The XGBoost cost model kept with the tuning logs: saved, loaded, bounded, merged, and a damaged
file ignored with a note (real XGBoost training, no tuning run)."""

from __future__ import annotations

import numpy as np
from tvm.s_tir.meta_schedule.cost_model.xgb_model import FeatureGroup

from tvm_pipeline.tuning import costmodel


def _trained(groups: dict[str, int], seed: int = 0):
    """A cost model with ``n`` measurements for each group hash, trained on them."""
    rng = np.random.default_rng(seed)
    model = costmodel.new_model()
    for name, n in groups.items():
        features = [rng.random((int(rng.integers(1, 4)), 164)).astype(np.float32)
                    for _ in range(n)]
        costs = rng.uniform(1e-5, 1e-3, n).astype(np.float32)
        model.data[name] = FeatureGroup(name, features, costs)
    model.data_size = sum(groups.values())
    costmodel.retrain(model)
    return model


def test_saved_model_loads_with_its_booster_and_measurements(tmp_path):
    model = _trained({"a": 40, "b": 70})
    assert costmodel.save(model, tmp_path) == 110
    loaded = costmodel.load([tmp_path / "missing", tmp_path])
    assert (loaded.samples, loaded.kernels) == (110, 2)
    assert loaded.sources == ((tmp_path / costmodel.FILE).resolve(),)
    assert "trained on 110 measurements of 2 kernels" in loaded.summary()
    assert bytes(loaded.model.booster.save_raw("ubj")) == bytes(model.booster.save_raw("ubj"))
    for name in ("a", "b"):
        before, after = model.data[name], loaded.model.data[name]
        assert sorted(after.costs) == sorted(before.costs)
        assert before.min_cost == after.min_cost
        fastest = int(np.argmin(before.costs))
        same = int(np.argmin(after.costs))
        np.testing.assert_allclose(after.features[same], before.features[fastest], rtol=1e-3)


def test_saved_measurements_are_bounded_and_keep_each_kernels_fastest(tmp_path, monkeypatch):
    monkeypatch.setattr(costmodel, "MAX_SAMPLES", 100)
    model = _trained({"big": 500, "small": 10})
    kept = costmodel.save(model, tmp_path)
    loaded = costmodel.load([tmp_path]).model
    assert kept == len(loaded.data["big"].costs) + 10 <= 100
    big = np.sort(model.data["big"].costs)
    np.testing.assert_array_equal(np.sort(loaded.data["big"].costs)[:12], big[:12])
    assert loaded.data["big"].costs.max() == big[-1]          # the spread reaches the slowest


def test_damaged_file_is_ignored_with_a_note_and_the_next_one_is_used(tmp_path):
    bad, good = tmp_path / "bad", tmp_path / "good"
    bad.mkdir()
    (bad / costmodel.FILE).write_bytes(b"not a zip archive")
    costmodel.save(_trained({"a": 30}), good)
    loaded = costmodel.load([bad, good])
    assert loaded.samples == 30 and loaded.model.booster is not None
    assert str(bad / costmodel.FILE) in loaded.summary() and "ignored" in loaded.summary()
    alone = costmodel.load([bad])
    assert alone.samples == 0 and alone.model.booster is None
    assert alone.summary().startswith("cost model: untrained")


def test_merge_unites_measurements_and_retrains(tmp_path):
    into, other, bad = tmp_path / "into", tmp_path / "other", tmp_path / "bad"
    costmodel.save(_trained({"a": 30}), into)
    costmodel.save(_trained({"a": 20, "b": 25}, seed=1), other)
    bad.mkdir()
    (bad / costmodel.FILE).write_bytes(b"cut short")
    samples, ignored = costmodel.merge(into, [other, bad])
    assert samples == 75 and len(ignored) == 1 and str(bad / costmodel.FILE) in ignored[0]
    loaded = costmodel.load([into])
    assert {k: len(g.costs) for k, g in loaded.model.data.items()} == {"a": 50, "b": 25}
    assert loaded.model.booster is not None and loaded.model.last_train_size == 0


def test_a_cold_run_adds_to_the_saved_measurements(tmp_path):
    costmodel.save(_trained({"a": 30}), tmp_path)
    assert costmodel.add_to(tmp_path, _trained({"b": 12}, seed=2)) == 42
    assert costmodel.load([tmp_path]).kernels == 2
