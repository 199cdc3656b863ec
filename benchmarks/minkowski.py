"""Benchmark: exact Minkowski measures vs scikit-image, and the cost of the relaxed loss's gradient.

Run by hand from the repository root::

    .venv/bin/python benchmarks/minkowski.py [--patches 32] [--repeats 5]

Data: 128 x 128 NaN-free wet patches of OPERA rain rate (the shared day when available, else the sample shipped
with nemic), 21 thresholds at wet-pixel quantiles. nemic computes area, perimeter and Euler characteristic for all
patches and thresholds in one jitted call; the peer, measured in the same run, loops over patches and thresholds
with scikit-image (``mask.sum()``, ``skimage.measure.perimeter``, ``skimage.measure.euler_number``). scikit-image's
``perimeter`` is a different (weighted) boundary estimator, so the identity of the perimeter is asserted against a
numpy pixel-edge count, which is timed as a second peer. Medians of ``--repeats`` runs after a warm-up; compile
time reported separately; results written to ``benchmarks/results/minkowski.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from skimage.measure import euler_number, label, perimeter

from nemic.data.opera import extract_patches, load_sample, open_opera, wet_quantile_thresholds
from nemic.metrics.minkowski import MinkowskiLoss, connected_components, minkowski_functionals

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "data" / "opera" / "opera_rain_2023-08-01_0000-1600.nc"


def load_patches(n: int) -> tuple[np.ndarray, str]:
    if SHARED.exists():
        ds = open_opera(SHARED)
        rr = ds.rain_rate.isel(time=slice(0, 64, 8))
        p = extract_patches(rr, size=128, min_wet_fraction=0.2)
        src = "shared OPERA day (8 frames)"
    else:
        p = extract_patches(load_sample().rain_rate, size=128, stride=64, min_wet_fraction=0.1)
        src = "shipped OPERA sample"
    vals = p.values
    if vals.shape[0] < n:
        vals = np.concatenate([vals] * (n // vals.shape[0] + 1))
    return vals[:n].astype(np.float32), src


def timeit(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    x, src = load_patches(args.patches)
    thr = wet_quantile_thresholds(x, 21).astype(np.float32)
    n, t_count = x.shape[0], thr.size
    xj, tj = jnp.asarray(x), jnp.asarray(thr)

    exact = jax.jit(lambda a, u: minkowski_functionals(a, u, connectivity=8))
    t0 = time.perf_counter()
    res = jax.block_until_ready(exact(xj, tj))
    compile_exact = time.perf_counter() - t0
    t_nemic = timeit(lambda: jax.block_until_ready(exact(xj, tj)), args.repeats)

    # peer: scikit-image, same float32 values and thresholds (so the masks are identical)
    sk = {}

    def peer_skimage():
        for i in range(n):
            for k, u in enumerate(thr):
                m = x[i] >= u
                sk[i, k] = (int(m.sum()), perimeter(m), euler_number(m, connectivity=2))

    edges = {}

    def peer_numpy_edges():
        for i in range(n):
            for k, u in enumerate(thr):
                m = np.pad(x[i] >= u, 1)
                edges[i, k] = int(np.count_nonzero(m[:, 1:] != m[:, :-1]) + np.count_nonzero(m[1:] != m[:-1]))

    t_sk = timeit(peer_skimage, max(1, args.repeats // 2))
    t_np = timeit(peer_numpy_edges, max(1, args.repeats // 2))

    area, perim, euler = (np.asarray(v) for v in res[:3])
    for (i, k), (a, _, e) in sk.items():
        assert area[i, k] == a and euler[i, k] == e, (i, k)
        assert perim[i, k] == edges[i, k], (i, k)
    # 4-connectivity, once (not timed): scikit-image's connectivity=1
    r4 = minkowski_functionals(xj[:4], tj, connectivity=4)
    for i in range(4):
        for k, u in enumerate(thr):
            assert int(r4.euler[i, k]) == euler_number(x[i] >= u, connectivity=1)

    # components: iterative labelling vs scikit-image label (fewer patches: the peer is slow too)
    nc = min(n, 8)
    comp = jax.jit(lambda a, u: connected_components(a, u, connectivity=8))
    t0 = time.perf_counter()
    cres = np.asarray(jax.block_until_ready(comp(xj[:nc], tj)))
    compile_comp = time.perf_counter() - t0
    t_comp = timeit(lambda: jax.block_until_ready(comp(xj[:nc], tj)), args.repeats)
    lab = {}

    def peer_label():
        for i in range(nc):
            for k, u in enumerate(thr):
                lab[i, k] = label(x[i] >= u, connectivity=2, return_num=True)[1]

    t_lab = timeit(peer_label, max(1, args.repeats // 2))
    assert all(cres[i, k] == v for (i, k), v in lab.items())

    # relaxed loss: gradient vs forward
    loss = MinkowskiLoss(thr, temperature=0.05, transform="log1p")
    target = xj[::-1]
    fwd = jax.jit(lambda p: loss(p, target))
    grad = jax.jit(jax.grad(lambda p: loss(p, target)))
    t0 = time.perf_counter()
    jax.block_until_ready(fwd(xj))
    compile_fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(grad(xj))
    compile_grad = time.perf_counter() - t0
    t_fwd = timeit(lambda: jax.block_until_ready(fwd(xj)), args.repeats)
    t_grad = timeit(lambda: jax.block_until_ready(grad(xj)), args.repeats)

    med = lambda v: float(np.median(v))  # noqa: E731
    per_patch = {
        "nemic_exact_ms": 1e3 * med(t_nemic) / n,
        "skimage_area_perimeter_euler_ms": 1e3 * med(t_sk) / n,
        "numpy_edge_count_ms": 1e3 * med(t_np) / n,
        "nemic_components_ms": 1e3 * med(t_comp) / nc,
        "skimage_label_ms": 1e3 * med(t_lab) / nc,
        "relaxed_loss_forward_ms": 1e3 * med(t_fwd) / n,
        "relaxed_loss_grad_ms": 1e3 * med(t_grad) / n,
    }
    ratios = {
        "skimage / nemic exact": per_patch["skimage_area_perimeter_euler_ms"] / per_patch["nemic_exact_ms"],
        "numpy edges / nemic exact": per_patch["numpy_edge_count_ms"] / per_patch["nemic_exact_ms"],
        "skimage label / nemic components": per_patch["skimage_label_ms"] / per_patch["nemic_components_ms"],
        "relaxed grad / forward": per_patch["relaxed_loss_grad_ms"] / per_patch["relaxed_loss_forward_ms"],
    }
    print(f"data: {src}; {n} patches of 128 x 128, {t_count} thresholds; {jax.devices()[0].platform}, "
          f"dtype float32; medians of {args.repeats} (peers {max(1, args.repeats // 2)})")
    print(f"{'per patch (all thresholds)':<40}{'ms':>10}")
    for k, v in per_patch.items():
        print(f"{k:<40}{v:>10.3f}")
    print(f"{'ratio':<40}{'x':>10}")
    for k, v in ratios.items():
        print(f"{k:<40}{v:>10.1f}")
    print(f"compile (s): exact {compile_exact:.2f}, components {compile_comp:.2f}, "
          f"loss forward {compile_fwd:.2f}, loss grad {compile_grad:.2f}")
    print("identical numbers: area, Euler (8 and 4) = scikit-image; perimeter = numpy edge count; "
          "components = skimage.measure.label")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    rec = {
        "benchmark": "minkowski", "data": src, "patches": n, "thresholds": t_count, "patch_size": 128,
        "repeats": args.repeats, "per_patch_ms": per_patch, "ratios": ratios,
        "compile_s": {"exact": compile_exact, "components": compile_comp, "loss_forward": compile_fwd,
                      "loss_grad": compile_grad},
        "identical": True, "machine": platform.platform(), "jax": jax.__version__,
    }
    (out / "minkowski.json").write_text(json.dumps(rec, indent=2) + "\n")


if __name__ == "__main__":
    main()
