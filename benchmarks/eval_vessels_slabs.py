"""DMV detection on slabs: phantoms whose field of view covers only part of the brain along S-I.

Usage::

    .venv/bin/python benchmarks/eval_vessels_slabs.py --presets term_3t isotropic preterm --seeds 11 12 \
        --slabs 30:10 40:-12 50:15 [--generator independent] [--jobs 2] [--cache DIR] [--out results.csv] \
        [--zero-padded | --rotated DEG [--rotation-axis A] [--whole]] [--skull-stripped]

Each ``THICKNESS:OFFSET`` (mm) keeps the slices, along the voxel axis nearest S-I, whose centres
lie within THICKNESS / 2 of the DMVs' median height (RAS z of the true centrelines) + OFFSET, so
the slab's faces cut through the brain.  The fully automatic pipeline runs on the slab, or:

* ``--zero-padded``: on the slab put back on the phantom's whole grid, 0 elsewhere;
* ``--rotated DEG``: on that grid turned by DEG degrees about its voxel axis ``--rotation-axis``
  (default 0, L-R) through its centre, the slab resampled onto it (linear, 0 outside the slab):
  its faces are then slanted planes of zeros, as a slab resampled onto another scan's oblique
  grid leaves it;
* ``--rotated DEG --whole``: the whole head resampled onto that grid, scored on the same DMVs,
  which separates what the resampling costs from what the cut costs;
* ``--skull-stripped``: the phantom skull-stripped before the slab is cut (0 outside the
  engine's brain mask dilated by one voxel), as a preprocessing pipeline leaves a scan;

and reports:

* ``n_true_inside``: true DMVs with >= 60 % of their centreline inside the slab (>= 1 voxel from
  its faces, and from the rotated grid's faces with ``--rotated``); ``found_inside``: those
  matched by a predicted DMV (``evaluation.match_vessels``);
  ``sensitivity_inside`` = found / n;
* ``ppv``: predicted DMVs matched to any true DMV (one cut by the slab counts);
* ``cut_faces``: the faces the run found cut (``provenance.field_of_view_cuts_brain``);
  ``refused``: the InputError of a refused slab, if any;
* the same with the DMV scorer's veto undone (``*_veto_off``; ``dmvs_vetoed``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from eval_vessels import add_case_arguments, map_cases, phantom_folder, vessels_without_veto, vetoed_dmv_ids     # this folder: the script's own (sys.path[0])


def dmv_median_height_mm(dmvs: list[dict]) -> float:
    """The median RAS z (mm) of the points of the true DMVs' centrelines (``centerline_ras_mm``)."""
    return float(np.median(np.concatenate([np.asarray(v["centerline_ras_mm"])[:, 2] for v in dmvs])))


def slab_of(vol, z_centre_mm: float, thickness_mm: float):
    """The slices of ``vol`` along its voxel axis nearest S-I whose centres (through voxel 0 of
    the other axes) lie within ``thickness_mm`` / 2 of ``z_centre_mm``; None when none do."""
    from NeonatalBrainLib.imageio import Volume

    axis = int(np.argmax(np.abs(vol.affine[2, :3])))
    index = np.arange(vol.shape[axis])
    z = vol.affine[2, axis] * index + vol.affine[2, 3]
    keep = index[np.abs(z - z_centre_mm) <= thickness_mm / 2]
    if keep.size == 0:
        return None
    box = [slice(None)] * 3
    box[axis] = slice(int(keep.min()), int(keep.max()) + 1)
    affine = vol.affine.copy()
    affine[:3, 3] += vol.affine[:3, axis] * keep.min()
    return Volume(np.ascontiguousarray(np.asarray(vol.array)[tuple(box)]), affine)


def zero_padded(slab, whole):
    """``slab`` (a run of ``whole``'s planes, :func:`slab_of`) on ``whole``'s grid, 0 elsewhere: the
    slab as a resampling onto a larger grid leaves it."""
    from NeonatalBrainLib.imageio import Volume

    start = np.rint(np.linalg.solve(whole.affine[:3, :3], slab.affine[:3, 3] - whole.affine[:3, 3])).astype(int)
    array = np.zeros(whole.shape, np.asarray(slab.array).dtype)
    array[tuple(slice(a, a + n) for a, n in zip(start, slab.shape))] = slab.array
    return Volume(array, whole.affine)


def rotated_grid(volume, degrees: float, axis: int = 0):
    """An empty uint8 Volume on ``volume``'s grid turned by ``degrees`` about its voxel axis ``axis``
    through the grid's centre (same shape and spacing)."""
    from NeonatalBrainLib.imageio import Volume

    t = np.deg2rad(degrees)
    u, v = [a for a in range(3) if a != axis]
    turn = np.eye(3)
    turn[u, u], turn[u, v], turn[v, u], turn[v, v] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
    axes = volume.affine[:3, :3] / volume.spacing_mm
    affine = volume.affine.copy()
    affine[:3, :3] = axes @ turn @ np.linalg.inv(axes) @ volume.affine[:3, :3]
    centre_ijk = (np.array(volume.shape) - 1) / 2.0
    affine[:3, 3] = volume.ijk_to_ras([centre_ijk])[0] - affine[:3, :3] @ centre_ijk
    return Volume(np.zeros(volume.shape, np.uint8), affine)


def skull_stripped(volume):
    """``volume`` (float32) with 0 outside the engine's brain mask (``masks.brain_mask``) dilated by
    one voxel: a skull-stripped scan."""
    from scipy import ndimage

    from NeonatalBrainLib.imageio import Volume
    from NeonatalVesselsLib import masks as mk

    image = np.asarray(volume.array, np.float32)
    brain = ndimage.binary_dilation(mk.brain_mask(image, volume.spacing_mm))
    return Volume(np.where(brain, image, 0).astype(np.float32), volume.affine)


def evaluate_slab(job) -> dict:
    preset, seed, cache, generator, thickness, offset, padded, degrees, rotation_axis, whole_head, stripped = job
    from NeonatalBrainLib.imageio import InputError, load_volume
    from NeonatalVesselsLib.evaluation import load_truth
    from NeonatalVesselsLib.pipeline import run_vessel_analysis

    folder = phantom_folder(preset, seed, cache, generator)
    dmvs = [v for v in load_truth(folder)["vessels"] if v["region"] == "dmv"]
    z = dmv_median_height_mm(dmvs)
    row = {"generator": generator, "preset": preset, "seed": seed, "slab_mm": thickness, "offset_mm": offset,
           "zero_padded": padded, "rotated_deg": degrees, "rotation_axis": rotation_axis,
           "whole_head": whole_head, "skull_stripped": stripped}
    whole = load_volume(folder / "swi.nii.gz")
    if stripped:
        whole = skull_stripped(whole)
    slab = slab_of(whole, z + offset, thickness)
    if slab is None:
        return {**row, "refused": "no slice in the slab"}
    grids = [slab]
    if degrees:
        from NeonatalBrainLib.imageio import Volume, resample_to_grid

        turned = resample_to_grid(whole if whole_head else slab, rotated_grid(whole, degrees, rotation_axis))
        scan = Volume(np.asarray(turned.array, np.float32), turned.affine)
        grids.append(scan)
    else:
        scan = zero_padded(slab, whole) if padded else slab
    try:
        a = run_vessel_analysis(scan)
    except InputError as e:
        return {**row, "refused": str(e)}

    def fraction_inside(points):
        inside = True
        for grid in grids:
            inv, shape = np.linalg.inv(grid.affine), np.array(grid.shape)
            ijk = np.asarray(points, float) @ inv[:3, :3].T + inv[:3, 3]
            inside = inside & np.all((ijk >= 1) & (ijk <= shape - 2), axis=1)
        return float(np.mean(inside))

    inside = {v["vessel_id"] for v in dmvs if fraction_inside(v["centerline_ras_mm"]) >= 0.6}
    on = slab_detection(a.vessels, a.centerlines, dmvs, inside)
    veto_off = slab_detection(vessels_without_veto(a), a.centerlines, dmvs, inside)
    return {**row, "n_true_inside": len(inside), **on, "dmvs_vetoed": len(vetoed_dmv_ids(a)),
            **{f"{k}_veto_off": v for k, v in veto_off.items()},
            "cut_faces": " ".join(a.provenance.get("field_of_view_cuts_brain", [])), "refused": ""}


def slab_detection(vessels: pd.DataFrame, centerlines: dict, dmvs: list, inside: set) -> dict:
    """``found_inside``, ``sensitivity_inside``, ``n_pred``, ``ppv`` of the predicted DMVs."""
    from NeonatalVesselsLib.evaluation import match_vessels

    pred = {int(r.vessel_id): centerlines[int(r.vessel_id)] for r in vessels[vessels["region"] == "dmv"].itertuples()}
    matches = match_vessels(pred, dmvs)
    found = {t for t, _ in matches.values() if t}
    n_matched = sum(1 for t, _ in matches.values() if t)
    return {"found_inside": len(found & inside),
            "sensitivity_inside": len(found & inside) / len(inside) if inside else float("nan"),
            "n_pred": len(pred), "ppv": n_matched / len(pred) if pred else float("nan")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(ap)
    ap.add_argument("--slabs", nargs="+", default=["30:10", "40:-12", "50:15"],
                    help="THICKNESS:OFFSET in mm (offset of the slab centre from the DMVs' median height)")
    ap.add_argument("--zero-padded", action="store_true",
                    help="run each slab padded with zeros back onto the phantom's whole grid (as a resampling leaves it)")
    ap.add_argument("--rotated", type=float, default=0.0, metavar="DEG",
                    help="run each slab resampled onto the phantom's whole grid turned by DEG degrees about "
                         "the voxel axis --rotation-axis (slanted borders of zeros)")
    ap.add_argument("--rotation-axis", type=int, choices=(0, 1, 2), default=0,
                    help="with --rotated: the voxel axis turned about (default 0, L-R on the phantoms)")
    ap.add_argument("--whole", action="store_true",
                    help="with --rotated: resample the whole head instead of the slab (scored on the slab's DMVs)")
    ap.add_argument("--skull-stripped", action="store_true",
                    help="skull-strip the phantom first (0 outside the engine's brain mask dilated by one voxel)")
    args = ap.parse_args(argv)
    if args.rotated and args.zero_padded:
        ap.error("--zero-padded and --rotated exclude each other")
    if args.whole and not args.rotated:
        ap.error("--whole needs --rotated")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    slabs = [tuple(float(x) for x in s.split(":")) for s in args.slabs]
    jobs = [(p, s, cache, args.generator, t, o, args.zero_padded, args.rotated, args.rotation_axis, args.whole,
             args.skull_stripped)
            for p in args.presets for s in args.seeds for t, o in slabs]
    df = pd.DataFrame(map_cases(evaluate_slab, jobs, args.jobs))
    print(df.round(3).to_string(index=False))
    ok = df[df["refused"] == ""]
    if len(ok):
        total = ok.groupby(["slab_mm", "offset_mm"]).agg(
            n_true_inside=("n_true_inside", "sum"), found_inside=("found_inside", "sum"),
            n_pred=("n_pred", "sum"), matched=("ppv", lambda p: float((p * ok.loc[p.index, "n_pred"]).sum())),
            no_dmv=("n_pred", lambda n: int((n == 0).sum())))
        total["sensitivity_inside"] = total["found_inside"] / total["n_true_inside"]
        total["ppv"] = total["matched"] / total["n_pred"]
        print(total.drop(columns="matched").round(3).to_string())
    if args.out:
        df.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
