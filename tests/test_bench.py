"""benchmarks/bench_smoothgrad.py's JSON record: the spread of the timings, the rows, the environment, the file."""

import json
from datetime import datetime

import pytest

from benchmarks import bench_smoothgrad as bench


def test_spread_is_the_median_quartiles_and_range_of_the_rounds():
    assert bench.spread([0.4, 0.1, 0.3, 0.2, 0.5]) == pytest.approx(
        {"median": 0.3, "q1": 0.2, "q3": 0.4, "min": 0.1, "max": 0.5, "rounds": 5}
    )
    assert bench.spread([0.2]) == {"median": 0.2, "q1": 0.2, "q3": 0.2, "min": 0.2, "max": 0.2, "rounds": 1}
    assert bench.spread([]) is None  # out of memory in every round
    assert bench.medians({"a": [3.0, 1.0, 2.0], "b": []}) == {"a": 2.0, "b": None}


def test_the_record_round_trips_through_json(tmp_path):
    times = {"ours fp32, default": [0.02, 0.03, 0.025], "Captum fp32, default": []}
    results = bench.rows("EfficientNet-Lite0", 16, times, {"ours fp32, default": 512.0, "Captum fp32, default": None})
    run = bench.record(bench.environment("cpu"), {"n_samples": bench.N_SAMPLES, "repeats": 3}, results)
    path = tmp_path / "results" / "bench.json"
    bench.write_record(path, run)
    back = json.loads(path.read_text())
    assert back == run
    for key in ("device", "torch", "cuda", "python", "captum", "cpu_capability"):
        assert key in back
    assert back["benchmark"] == "bench_smoothgrad" and back["device_type"] == "cpu" and back["cudnn"] is None
    assert datetime.fromisoformat(back["date"]).tzinfo is not None
    assert back["settings"] == {"n_samples": 50, "repeats": 3}
    first, second = back["results"]
    assert first["model"] == "EfficientNet-Lite0" and first["images"] == 16 and first["peak_mib"] == 512.0
    assert first["method"] == "ours fp32, default" and first["seconds"]["median"] == 0.025
    assert second["seconds"] is None and second["peak_mib"] is None


def test_results_name_names_the_device():
    assert bench.results_name({"device": "NVIDIA H200"}) == "smoothgrad-nvidia-h200.json"
    assert bench.results_name({"device": "CPU, 2 threads"}) == "smoothgrad-cpu-2-threads.json"
