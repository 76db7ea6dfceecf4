"""The built-in dataset's shape families as analytic SDF builders (negative inside).

Each builder maps points (N, 3) in the family's own frame (z up, fitting in [-1, 1]^3,
centred vertically) and a parameter mapping to SDF values (N,). Parameter names and
ranges live in :mod:`shapes3d.data.synth`; derived sizes are computed here so that the
stored parameters stay independent numbers.
"""

from __future__ import annotations

import numpy as np

from shapes3d.data.shapes_sdf import (
    box,
    box2d,
    curve_profile,
    cylinder,
    difference,
    extrude,
    fold_xy,
    intersection,
    lathe,
    meridian,
    polygon2d,
    rotate_x,
    rotate_z,
    round_box,
    smooth_union,
    sphere,
    torus,
    union,
)


def chair(p: np.ndarray, q) -> np.ndarray:
    w, d, t = q["seat_w"], q["seat_d"], q["seat_t"]
    z0 = -0.5 * (q["seat_h"] + q["back_h"])
    zs = z0 + q["seat_h"]  # top of the seat
    parts = [round_box(p, (0, 0, zs - t / 2), (w / 2, d / 2, t / 2), 0.02)]
    r, inset = q["leg_r"], q["leg_inset"]
    f = fold_xy(p)
    lx, ly = w / 2 - inset - r, d / 2 - inset - r
    if q["round_legs"]:
        parts.append(cylinder(f, (lx, ly, z0), (lx, ly, zs - t / 2), r))
    else:
        parts.append(box(f, (lx, ly, (z0 + zs - t / 2) / 2), (r, r, (zs - t / 2 - z0) / 2)))
    # Backrest in a frame pivoting about its bottom edge; tilt leans the top towards +y.
    bt, bh = q["back_t"], q["back_h"]
    b = rotate_x(p - np.array([0.0, d / 2 - bt / 2, zs]), q["back_tilt"])
    if q["back_frame"]:
        post = 0.5 * bt + 0.02
        rail = 0.18 * bh
        fb = b.copy()
        fb[:, 0] = np.abs(fb[:, 0])
        parts += [
            box(fb, (w / 2 - post, 0, bh / 2), (post, bt / 2, bh / 2)),
            box(b, (0, 0, bh - rail / 2), (w / 2, bt / 2, rail / 2)),
            box(b, (0, 0, 0.45 * bh), (w / 2, bt / 2, rail / 4)),
        ]
    else:
        parts.append(round_box(b, (0, 0, bh / 2), (w / 2, bt / 2, bh / 2), 0.02))
    if q["arms"]:
        fa = p.copy()
        fa[:, 0] = np.abs(fa[:, 0])
        za = zs + q["arm_h"]
        y0, y1 = -d / 2 + 0.03, d / 2 - bt / 2
        parts += [
            box(fa, (w / 2 - 0.04, (y0 + y1) / 2, za), (0.04, (y1 - y0) / 2, 0.03)),
            box(fa, (w / 2 - 0.04, y0 + 0.04, (zs + za) / 2), (0.035, 0.035, (za - zs) / 2)),
        ]
    return union(*parts)


def table(p: np.ndarray, q) -> np.ndarray:
    hx, hy, tt, height = q["top_w"] / 2, q["top_d"] / 2, q["top_t"], q["height"]
    z0, zt = -height / 2, height / 2
    rc = q["corner"] * min(hx, hy) * 0.999
    top = extrude(box2d(p[:, :2], (0, 0), (hx, hy), rc), p[:, 2] - (zt - tt / 2), tt / 2)
    r = q["leg_r"]
    if q["pedestal"]:
        base_r = 0.6 * min(hx, hy)
        legs = union(
            cylinder(p, (0, 0, z0), (0, 0, zt - tt / 2), 1.5 * r),
            cylinder(p, (0, 0, z0), (0, 0, z0 + 0.05), base_r),
        )
    else:
        # Keep each leg inside the rounded corner of the top.
        m = max(q["leg_inset"] + r, rc - (rc - q["leg_inset"] - r) / np.sqrt(2.0))
        f = fold_xy(p)
        if q["round_legs"]:
            legs = cylinder(f, (hx - m, hy - m, z0), (hx - m, hy - m, zt - tt / 2), r)
        else:
            legs = box(f, (hx - m, hy - m, (z0 + zt - tt / 2) / 2), (r, r, (zt - tt / 2 - z0) / 2))
    return union(top, legs)


def lamp(p: np.ndarray, q) -> np.ndarray:
    height, sh, st = q["height"], q["shade_h"], q["shade_t"]
    z0, zt = -height / 2, height / 2
    rb = q["shade_r"]
    rt = rb * q["shade_top"]
    # Shade: a hollow frustum, open at the bottom, capped on top where the pole meets it.
    shade = lathe(p, [(0, zt - st), (rt - st, zt - st), (rb - st, zt - sh), (rb, zt - sh), (rt, zt), (0, zt)])
    base = cylinder(p, (0, 0, z0), (0, 0, z0 + q["base_t"]), q["base_r"])
    pole = cylinder(p, (0, 0, z0 + q["base_t"] / 2), (0, 0, zt - st / 2), q["pole_r"])
    bulb = sphere(p, (0, 0, zt - 0.45 * sh), q["bulb_r"])
    return union(shade, smooth_union(base, pole, 0.06), bulb)


def mug(p: np.ndarray, q) -> np.ndarray:
    r, height, t, tb = q["radius"], q["height"], q["wall_t"], q["bottom_t"]
    a = q["handle_frac"] * height / 2  # handle centre-line radius
    b = q["handle_r"]
    c = np.array([-(a + b) / 2, 0.0, 0.0])  # centre the cup+handle box in x
    z0, z1 = -height / 2, height / 2
    cup = lathe(p, [(0, z0), (r, z0), (r, z1), (r - t, z1), (r - t, z0 + tb), (0, z0 + tb)], center=c)
    solid = cylinder(p, c + (0, 0, z0), c + (0, 0, z1), r)
    # Only the outer half of the torus is kept: the handle joins the wall at two places (genus 1).
    handle = difference(torus(p, c + (r, 0, q["handle_z"] * height), a, b, axis=1), solid)
    return union(cup, handle)


def bottle(p: np.ndarray, q) -> np.ndarray:
    rb, rn = q["body_r"], q["neck_r"]
    hb, hs, hn, hl = q["body_h"], q["shoulder_h"], q["neck_h"], q["lip_h"]
    z0 = -(hb + hs + hn + hl) / 2
    zb, zs, zn = z0 + hb, z0 + hb + hs, z0 + hb + hs + hn
    rl = rn + q["lip_dr"]
    shoulder = curve_profile(rb, rn, zb, zs, exponent=q["shoulder_e"])
    prof = [(0, z0), (rb, z0), *shoulder, (rn, zn), (rl, zn), (rl, zn + hl), (0, zn + hl)]
    return lathe(p, prof) - q["round"]


def bowl(p: np.ndarray, q) -> np.ndarray:
    ro, t = q["radius"], q["wall_t"]
    foot_h = q["foot_h"] if q["foot"] else 0.0
    top_rel, bottom_rel = q["rim"] * ro, -q["flat"] * ro - foot_h
    zc = -(top_rel + bottom_rel) / 2
    z_rim, z_floor = zc + top_rel, zc - q["flat"] * ro
    solid = intersection(sphere(p, (0, 0, zc), ro), p[:, 2] - z_rim, z_floor - p[:, 2])
    cavity = intersection(sphere(p, (0, 0, zc), ro - t), z_floor + q["bottom_t"] - p[:, 2])
    parts = [difference(solid, cavity)]
    if q["foot"]:
        fr = 0.8 * np.sqrt(max(1.0 - q["flat"] ** 2, 0.0)) * ro
        ring = extrude(np.abs(meridian(p)[:, 0] - fr) - 0.04, p[:, 2] - (z_floor - foot_h / 2 + 0.01), foot_h / 2 + 0.01)
        parts.append(ring)
    return union(*parts)


def ring(p: np.ndarray, q) -> np.ndarray:
    hw, hh = q["half_w"], q["half_h"]
    rc = q["roundness"] * min(hw, hh) * 0.999
    return box2d(meridian(p), (q["major_r"], 0.0), (hw, hh), rc)


def rocket(p: np.ndarray, q) -> np.ndarray:
    br, bh, nh, zh = q["body_r"], q["body_h"], q["nose_h"], q["nozzle_h"]
    sweep, fh = q["fin_sweep"], q["fin_h"]
    low = max(zh, sweep)
    zb = -(bh + nh - low) / 2  # bottom of the body, so the whole rocket is centred in z
    zn = zb + bh
    nose = curve_profile(br, 0.0, zn, zn + nh, exponent=q["nose_e"])
    prof = [(0, zb - zh), (q["nozzle_r"] * br, zb - zh), (0.5 * br, zb), (br, zb), *nose]
    parts = [lathe(p, prof)]
    fin = np.array([(0.8 * br, zb), (0.8 * br, zb + fh), (br + q["fin_span"], zb - sweep + 0.5 * fh), (br + q["fin_span"], zb - sweep)])
    n = int(q["n_fins"])
    for k in range(n):
        f = rotate_z(p, -2.0 * np.pi * k / n)
        parts.append(extrude(polygon2d(f[:, [0, 2]], fin), f[:, 1], q["fin_t"] / 2))
    return union(*parts)


def sofa(p: np.ndarray, q) -> np.ndarray:
    hw, hd, rr = q["width"] / 2, q["depth"] / 2, q["round"]
    z0 = -(q["seat_h"] + q["back_h"]) / 2
    zl, zs = z0 + q["leg_h"], z0 + q["seat_h"]
    bt, aw = q["back_t"], q["arm_w"]
    fx = p.copy()
    fx[:, 0] = np.abs(fx[:, 0])
    za = zs + q["arm_h"]
    return union(
        round_box(p, (0, -bt / 2, (zl + zs) / 2), (hw, hd - bt / 2, (zs - zl) / 2), rr),
        round_box(p, (0, hd - bt / 2, (zl + zs + q["back_h"]) / 2), (hw, bt / 2, (zs + q["back_h"] - zl) / 2), rr),
        round_box(fx, (hw - aw / 2, 0, (zl + za) / 2), (aw / 2, hd, (za - zl) / 2), rr),
        # Legs sit inside the rounded corners and reach into the base, leaving no sub-cell gap.
        cylinder(fold_xy(p), (hw - 0.12, hd - 0.12, z0), (hw - 0.12, hd - 0.12, zl + 0.06), 0.045),
    )


def bed(p: np.ndarray, q) -> np.ndarray:
    hw, hl = q["width"] / 2, q["length"] / 2
    z0 = -(q["frame_top"] + q["mattress_t"] + q["head_h"]) / 2
    zl, zf = z0 + q["leg_h"], z0 + q["frame_top"]
    zm = zf + q["mattress_t"]
    ht = q["head_t"]
    parts = [
        box(p, (0, 0, (zl + zf) / 2), (hw, hl, (zf - zl) / 2)),
        # The mattress overlaps both boards: a sub-cell gap would give marching cubes slivers.
        round_box(p, (0, 0, (zf + zm) / 2 - 0.01), (hw - 0.03, hl - ht + 0.01, (zm - zf) / 2 + 0.01), 0.04),
        round_box(p, (0, hl - ht / 2, (z0 + zm + q["head_h"]) / 2), (hw, ht / 2, (zm + q["head_h"] - z0) / 2), 0.02),
        round_box(p, (0, -hl + ht / 2, (z0 + zf + q["foot_h"]) / 2), (hw, ht / 2, (zf + q["foot_h"] - z0) / 2), 0.02),
        box(fold_xy(p), (hw - 0.06, hl - 0.06, (z0 + zl) / 2 + 0.01), (0.05, 0.05, (zl - z0) / 2 + 0.01)),
    ]
    if q["pillow"]:
        ph = 0.06
        parts.append(round_box(p, (0, hl - ht - 0.2, zm + ph - 0.01), (0.75 * hw, 0.16, ph), 0.05))
    return union(*parts)


def monitor(p: np.ndarray, q) -> np.ndarray:
    hw, sh, st = q["screen_w"] / 2, q["screen_h"], q["screen_t"]
    z0 = -(q["base_t"] + q["neck_h"] + sh) / 2
    zb = z0 + q["base_t"]
    zs = zb + q["neck_h"]  # bottom edge of the screen
    bf, bt, nt = q["back_frac"], q["back_t"], q["neck_t"]
    yn = st / 2 + bt - nt / 2  # neck runs down the back of the bulge
    return union(
        round_box(p, (0, 0, zs + sh / 2), (hw, st / 2, sh / 2), q["round"]),
        round_box(p, (0, st / 2 + bt / 2 - 0.01, zs + sh / 2), (bf * hw, bt / 2 + 0.01, bf * sh / 2), q["round"]),
        box(p, (0, yn, (zb + zs + sh / 2) / 2), (q["neck_w"] / 2, nt / 2, (zs + sh / 2 - zb) / 2 + 0.01)),
        round_box(p, (0, yn - q["base_d"] / 4, (z0 + zb) / 2), (q["base_w"] / 2, q["base_d"] / 2, q["base_t"] / 2), 0.015),
    )


FAMILY_SDFS = {
    "chair": chair,
    "table": table,
    "lamp": lamp,
    "mug": mug,
    "bottle": bottle,
    "bowl": bowl,
    "ring": ring,
    "rocket": rocket,
    "sofa": sofa,
    "bed": bed,
    "monitor": monitor,
}
"""Family name -> builder ``(points (N, 3), params) -> sdf (N,)`` in the family's own frame."""
