"""The `privacy` click group: calibrate writes a loadable parameter set; show reads it; bad input is refused."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from pipeline.privacy import PrivacyParams
from pipeline.privacy.cli import privacy


def test_calibrate_then_show(tmp_path, rng):
    people = rng.standard_normal((3000, 16)) * np.geomspace(0.1, 2, 16) + 1.0
    a = people[:300] + 0.05 * rng.standard_normal((300, 16))
    b = people[:300] + 0.05 * rng.standard_normal((300, 16))
    np.savez(tmp_path / "emb.npz", embeddings=people.astype(np.float32))
    np.savez(tmp_path / "pairs.npz", same_a=a.astype(np.float32), same_b=b.astype(np.float32))
    out = tmp_path / "p.json"
    res = CliRunner().invoke(privacy, ["calibrate", "--embeddings", str(tmp_path / "emb.npz"), "--pairs",
                                       str(tmp_path / "pairs.npz"), "--version", "pp-cli-test", "--out", str(out),
                                       "--dims", "8", "--seed", "5"])
    assert res.exit_code == 0, res.output
    p = PrivacyParams.load(out)
    assert p.version == "pp-cli-test" and p.seed == 5 and p.reference.reduced_dim == 8
    assert p.hash_offsets is not None and p.hash_offsets.shape == (1000,)
    shown = CliRunner().invoke(privacy, ["show", str(out)])
    assert shown.exit_code == 0 and "pp-cli-test" in shown.output and "discriminant-whitening" in shown.output


def test_calibrate_names_missing_arrays(tmp_path):
    np.savez(tmp_path / "x.npz", wrong=np.zeros((3, 3)))
    res = CliRunner().invoke(privacy, ["calibrate", "--embeddings", str(tmp_path / "x.npz"), "--version", "v",
                                       "--out", str(tmp_path / "p.json")])
    assert res.exit_code != 0 and "lacks array(s) embeddings" in res.output


def test_show_refuses_unknown_keys(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"version": "x", "surprise": 1}')
    res = CliRunner().invoke(privacy, ["show", str(path)])
    assert res.exit_code != 0 and "surprise" in res.output
