"""Preprocessing as a job array: shards into separate caches, merged, then read by training without recomputing."""

from __future__ import annotations

from shapes3d.cli.main import main


def test_sdf_shards_merge_into_the_cache_training_reads(tiny_synth, tmp_path, capsys):
    small = ["--set", "samples.n_samples=2000", "--set", "samples.n_uniform=200"]
    for i in range(2):
        assert main(["-q", "data", "preprocess", str(tiny_synth), "--task", "sdf", "--out", str(tmp_path / f"s{i}"),
                     "--shard", f"{i}/2", *small]) == 0
    out = capsys.readouterr().out
    assert "SDF samples (shard 0/2): 8 computed, 0 cached, 0 skipped" in out
    assert "SDF samples (shard 1/2): 7 computed, 0 cached, 0 skipped" in out
    assert main(["-q", "data", "merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out",
                 str(tmp_path / "all")]) == 0
    assert "merge: 15 copied, 0 duplicates skipped, 0 invalid left out" in capsys.readouterr().out
    # the merged cache holds every entry the whole (unsharded) job would have written
    assert main(["-q", "data", "preprocess", str(tiny_synth), "--task", "sdf", "--out", str(tmp_path / "all"),
                 *small]) == 0
    assert "SDF samples: 0 computed, 15 cached, 0 skipped" in capsys.readouterr().out
