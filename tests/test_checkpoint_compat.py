"""Models trained before the redesign (``shapes3d/training/``, commit c2a97c7) load and compute what they did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "pre_redesign"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def _grids() -> np.ndarray:
    g = np.zeros((2, 2, 16, 16, 16), np.uint8)
    g[0, :, 4:12, 4:12, 4:12] = 1
    g[1, :, 2:14, 7:9, 2:14] = 1
    return g


def test_pre_redesign_classifier_loads_and_predicts_as_before():
    from shapes3d.classify import load_classifier, predict_proba

    model, cfg, classes = load_classifier(FIXTURES / "classify_last.pt", device="cpu")
    assert classes == EXPECTED["classes"] and cfg.data.resolution == 16
    p = predict_proba(model, _grids(), vote=True, device=torch.device("cpu"))
    np.testing.assert_allclose(p, EXPECTED["proba"], rtol=0, atol=1e-6)


def test_pre_redesign_deepsdf_loads_and_decodes_as_before():
    from shapes3d.deepsdf import load_deepsdf

    m = load_deepsdf(FIXTURES / "deepsdf_last.pt", device="cpu")
    assert [Path(n).stem for n in m.names] == [Path(n).stem for n in EXPECTED["names"]] and m.codes.shape == (4, 4)
    xyz = torch.tensor(EXPECTED["sdf_points"])
    with torch.no_grad():
        sdf = m.decoder(m.codes[1].expand(len(xyz), -1), xyz).squeeze(-1)
    np.testing.assert_allclose(sdf.numpy(), EXPECTED["sdf_code1"], rtol=0, atol=1e-6)
