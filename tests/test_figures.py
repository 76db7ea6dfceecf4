"""The figures people read: sizes at 100 %, labels, titles, colour bars, steps vs epochs, log ticks, grey in ->
grey out (issue 17 item 2, issue 16 item 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shapes3d.engine import plots
from shapes3d.engine.plots import curves_figure, filters_figure, log_ticks, plot_filters, write_step_log

# ----------------------------------------------------------------------------- helpers


def _visible_ticks(ax, axis: str = "y") -> list[float]:
    """Labelled major tick values inside the axis's view."""
    lo, hi = sorted(getattr(ax, f"get_{axis}lim")())
    target = getattr(ax, f"{axis}axis")
    fmt = target.get_major_formatter()
    return [t for t in target.get_majorticklocs() if lo <= t <= hi and fmt(t, 0)]


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def _dark_columns(path, y0: int, y1: int) -> np.ndarray:
    """Which pixel columns have any dark (text) pixel between rows y0 and y1."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"))[y0:y1]
    return (a < 100).any(axis=0)


# ----------------------------------------------------------------------------- filters (issue 16, item 5)
def test_filters_figure_is_a_labelled_grid_with_a_shared_colour_bar(tmp_path):
    w = np.random.default_rng(0).normal(size=(32, 1, 5, 5, 5)) * 0.1
    fig = filters_figure(w, title="first-layer filters of run/best.pt")
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 32
    filters = [ax for ax in images if ax.get_ylabel().startswith("#")]
    assert [ax.get_ylabel() for ax in filters] == [f"#{i}" for i in range(32)]
    # One symmetric scale for all: every filter image uses the same limits.
    assert {filt.images[0].get_clim() for filt in filters} == {(-np.abs(w).max(), np.abs(w).max())}
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "weight value"]
    assert len(bars) == 1
    assert "run/best.pt" in fig._suptitle.get_text() and "z-slices" in fig._suptitle.get_text()
    # A mosaic: 5 slices of 5 voxels with 1-voxel gaps, labelled z0..z4 under the bottom row.
    assert filters[0].images[0].get_array().shape == (5, 29)
    assert [t.get_text() for t in filters[-1].get_xticklabels()] == [f"z{k}" for k in range(5)]
    path = plot_filters(w, tmp_path / "filters.png", title="t")
    width, height = _png_size(path)
    assert width >= 1000 and height >= 600 and width / height < 2.5  # a grid, not a 270 x 1601 strip


def test_filter_mosaic_puts_z_slices_side_by_side():
    w = np.arange(5 ** 3, dtype=float).reshape(5, 5, 5)  # [x, y, z]
    m = plots.filter_mosaic(w)
    assert np.isnan(m[:, 5]).all() and not np.isnan(m[:, :5]).any()
    np.testing.assert_array_equal(m[:, 6:11], w[:, :, 1].T[::-1])  # slice z = 1, y up
    assert m[-1, 0] == w[0, 0, 0]  # bottom-left voxel of slice 0 is (x, y) = (0, 0)


# ----------------------------------------------------------------------------- curves
def test_log_ticks_give_at_least_four_labels_per_decade():
    for lo, hi in ((1.0, 10.0), (0.02, 0.2), (3.0, 9.0), (9.1, 27.3), (1e-4, 1e2), (0.5, 0.9), (1.14, 1.43)):
        ticks = log_ticks(lo, hi)
        assert len(ticks) >= 4 and all(lo <= t <= hi for t in ticks), (lo, hi, ticks)
    assert len(log_ticks(1e-8, 1e8)) <= 10


def test_epoch_curves_have_units_titles_and_a_readable_log_axis():
    rows = [{"epoch": e, "train_loss": 2 * 0.8 ** e, "val_loss": 2.2 * 0.8 ** e, "train_acc": 1 - 0.7 ** e,
             "val_acc": 1 - 0.75 ** e} for e in range(1, 12)]
    fig = curves_figure(rows, title="VoxNet training: run r1")
    assert fig._suptitle.get_text() == "VoxNet training: run r1"
    loss, acc = fig.axes
    assert loss.get_title() == "loss" and loss.get_yscale() == "log" and loss.get_xlabel() == "epoch"
    assert loss.get_ylabel() == "loss (log scale)"
    assert acc.get_yscale() == "linear" and acc.get_ylabel() == "accuracy (fraction correct)"
    assert len(_visible_ticks(loss)) >= 4  # the loss spans about one decade
    narrow = curves_figure([{"epoch": e, "train_loss": 1.4 - 0.02 * e} for e in range(1, 12)])
    assert narrow.axes[0].get_yscale() == "linear"  # 1.18 .. 1.38: no log axis with nothing labelled


def test_step_logs_say_optimiser_step(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    history = [{"step": s, "total": 10 * 0.9 ** s, "style": 8 * 0.9 ** s, "preserve": 0.3} for s in range(1, 31)]
    write_step_log(history, tmp_path, title="style shape ring (optimise code)",
                   panels={"loss": ["total"], "style": ["style"], "preserve": ["preserve"]})
    (fig,) = figures
    assert fig._suptitle.get_text() == "style shape ring (optimise code)"
    assert [ax.get_xlabel() for ax in fig.axes] == ["optimiser step"] * 3
    assert [ax.get_title() for ax in fig.axes] == ["loss", "style", "preserve"]
    assert all(len(_visible_ticks(ax)) >= 4 for ax in fig.axes if ax.get_yscale() == "log")
    assert (tmp_path / "log.csv").exists()


# ----------------------------------------------------------------------------- sheets
def test_sheet_scales_small_views_up_and_labels_rows_and_columns(tmp_path):
    from shapes3d.render.images import write_sheet

    rows = [("target shaded", np.full((4, 48, 48), 0.4)), ("fitted shaded", np.full((4, 48, 48), 0.6))]
    heads = [f"az {a}\u00b0" for a in (0, 90, 180, 270)]
    path = write_sheet(rows, tmp_path / "sheet.png", min_size=192, col_labels=heads, title="fit-views x: t vs f")
    width, height = _png_size(path)
    assert width >= 4 * 192 + 60 and height >= 2 * 192 + 20  # views at >= 192 px, a margin for the row labels
    with Image.open(path) as im:
        a = np.asarray(im.convert("L"))
    grey = np.nonzero((a == round(0.4 * 255)).sum(axis=0) >= 192)[0]  # columns crossing a first-row tile
    assert grey.size >= 4 * 192 and grey[0] > 60  # tiles start right of the row-label margin
    assert _dark_columns(path, 0, 40)[:grey[0]].any()  # the title


def test_interpolation_strip_has_views_as_rows_and_weights_as_columns(tmp_path, monkeypatch):
    import trimesh

    from shapes3d.deepsdf import jobs

    class Extracted:
        empty = False

        def __init__(self, mesh):
            self.mesh = mesh

    monkeypatch.setattr(jobs, "load_deepsdf", lambda path: type("M", (), {"decoder": None})())
    monkeypatch.setattr(jobs, "shape_code", lambda model, name: (name, torch.zeros(4) + len(name), None))
    meshes = iter([trimesh.creation.box(), trimesh.creation.icosphere(subdivisions=1), trimesh.creation.box()])
    monkeypatch.setattr(jobs, "extract_shape", lambda *a, **k: Extracted(next(meshes)))
    (tmp_path / "run").mkdir()
    res = jobs.interpolate(tmp_path / "run" / "last.pt", "a", "bb", steps=3, out=tmp_path / "interp")
    width, height = _png_size(res.strip)
    assert jobs.INTERP_VIEWS >= 3 and jobs.INTERP_SIZE >= 128
    assert width >= 3 * 128 and height >= 3 * 128 and res.n_meshes == 3


# ----------------------------------------------------------------------------- style: panels and colour
def _style_cfg(**kw):
    from shapes3d.style.config import StyleConfig

    base = dict(weights="random", size=32, steps=3, device="cpu", style_layers=("relu1_1", "relu2_1"),
                content_layers=("relu2_1",))
    return StyleConfig(**{**base, **kw})


def _grey_exemplar() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.random((32, 32)) * 255).astype(np.uint8)  # (H, W): R = G = B


def _mean_rg(image: torch.Tensor) -> float:
    return float((image[:, 0] - image[:, 1]).abs().mean())


def test_grey_exemplar_gives_a_grey_texture_and_a_labelled_panel(tmp_path):
    from shapes3d.style.jobs import texture

    res = texture(_grey_exemplar(), _style_cfg(), tmp_path / "auto")
    assert res.result.color == "luminance" and _mean_rg(res.result.image) < 2 / 255
    width, height = _png_size(res.panel)
    assert width >= 2 * 192 and height >= 192
    full = texture(_grey_exemplar(), _style_cfg(color="full"), tmp_path / "full")
    assert full.result.color == "full" and _mean_rg(full.result.image) > 2 / 255  # the speckle the option removes


def test_luminance_transfer_keeps_the_content_colours_and_writes_the_panel(tmp_path):
    from shapes3d.style.jobs import transfer
    from shapes3d.style.synthesis import rgb_to_yiq

    rng = np.random.default_rng(2)
    content = rng.random((32, 32, 3)).astype(np.float32)
    res = transfer(content, _grey_exemplar(), _style_cfg(init="content"), tmp_path / "t")
    assert res.result.color == "luminance"
    chroma_in = rgb_to_yiq(torch.from_numpy(content).permute(2, 0, 1)[None])[:, 1:]
    chroma_out = rgb_to_yiq(res.result.image)[:, 1:]
    # Chroma is kept except where clamping RGB to [0, 1] cut it.
    assert float((chroma_out - chroma_in).abs().median()) < 0.02
    width, height = _png_size(res.panel)
    assert width >= 3 * 192 and height >= 192
    grey = transfer(_grey_exemplar(), _grey_exemplar(), _style_cfg(), tmp_path / "g")
    assert _mean_rg(grey.result.image) < 2 / 255


def test_color_option_is_checked():
    with pytest.raises(ValueError, match="color must be 'auto', 'full' or 'luminance', got 'grey'"):
        _style_cfg(color="grey")
