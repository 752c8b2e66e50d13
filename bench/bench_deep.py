"""Speed and memory of the compact CNN on PBC (not a timed test; numbers depend on the machine).

1. Training time per epoch and peak memory at 64 and 96 px (``--sizes``).
2. Streamed embedding of every PBC image at 64 px: paths are processed in chunks of
   ``--chunk``; each chunk is decoded at reduced JPEG scale (``read_image(min_side=size)``),
   resized, embedded with one batched call, and dropped, so no more than one chunk of decoded
   images is ever held. Prints images/s (decode + resize + predict) with the split between
   decoding and prediction, and the ratio against a one-image-at-a-time ``model.predict`` loop.

Usage (data from $MEDFUSE_DATA or ../shared/datasets)::

    TF_CPP_MIN_LOG_LEVEL=2 nice -n 10 python bench/bench_deep.py --train-images 1500 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from medfuse.imageio import read_image  # noqa: E402
from medfuse_plugins.cnn import CNNEmbedding  # noqa: E402


def pbc_files(root: Path) -> tuple[list[Path], np.ndarray]:
    paths = sorted((root / "pbc").glob("*/*.jpg"))
    if not paths:
        sys.exit(f"no PBC images under {root / 'pbc'}")
    return paths, np.asarray([p.parent.name for p in paths], dtype=object)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare_all(ex: CNNEmbedding, paths: list[Path]) -> np.ndarray:
    return np.stack([ex.prepare(read_image(p, min_side=ex.size)) for p in paths])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96])
    ap.add_argument("--train-images", type=int, default=0, help="cap on training images (0: all)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs timed per size")
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--single", type=int, default=100, help="images in the one-at-a-time predict loop")
    ap.add_argument("--no-deterministic", action="store_true", help="leave TF op determinism off")
    args = ap.parse_args()
    env = os.environ.get("MEDFUSE_DATA")
    root = args.data or (Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
    paths, labels = pbc_files(root)
    print(f"PBC: {len(paths)} images; cpu count {os.cpu_count()}; deterministic ops: {not args.no_deterministic}")

    # ---- 1. training time per epoch and peak memory --------------------------------------------
    rng = np.random.default_rng(0)
    train_idx = np.sort(rng.permutation(len(paths))[: args.train_images or len(paths)])
    fitted: dict[int, CNNEmbedding] = {}
    for size in args.sizes:
        ex = CNNEmbedding(size=size, epochs=args.epochs, patience=args.epochs, random_state=0,
                          deterministic=not args.no_deterministic)
        t = time.perf_counter()
        P = prepare_all(ex, [paths[i] for i in train_idx])
        prep_s = time.perf_counter() - t
        tracemalloc.start()
        t = time.perf_counter()
        ex.fit(P, labels[train_idx])
        fit_s = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        sec = ex.history_["seconds_per_epoch"]
        print(f"train {size}px: {ex.n_params_} params, {ex.history_['n_train']} train + {ex.history_['n_val']} val "
              f"images; prepare {prep_s:.1f}s; seconds per epoch {[round(s, 1) for s in sec]} "
              f"(first includes graph tracing); fit total {fit_s:.1f}s; "
              f"peak traced Python/NumPy memory during fit {peak / 2**20:.0f} MiB; "
              f"process peak RSS so far {rss_mib():.0f} MiB", flush=True)
        fitted[size] = ex
        del P

    # ---- 2. streamed embedding of all images -------------------------------------------------------
    size = 64 if 64 in fitted else args.sizes[0]
    ex = fitted[size]
    ex.transform(np.zeros((2, size, size, 3), np.uint8))  # trace the inference graph once
    tracemalloc.start()
    t0 = time.perf_counter()
    decode_s = predict_s = 0.0
    n = 0
    for start in range(0, len(paths), args.chunk):
        t = time.perf_counter()
        P = np.stack([ex.prepare(read_image(p, min_side=size)) for p in paths[start:start + args.chunk]])
        decode_s += time.perf_counter() - t
        t = time.perf_counter()
        E = ex.transform(P)
        predict_s += time.perf_counter() - t
        n += len(E)
    total = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rate = n / total
    print(f"stream {size}px: {n} images in {total:.1f}s = {rate:.0f} img/s (decode+resize {decode_s:.1f}s = "
          f"{n / decode_s:.0f} img/s; batched predict {predict_s:.1f}s = {n / predict_s:.0f} img/s); "
          f"chunk {args.chunk}; peak traced memory {peak / 2**20:.1f} MiB", flush=True)

    # ---- 3. one image at a time with model.predict ---------------------------------------------
    model = ex._net("embedding")
    subset = paths[: args.single]
    model.predict(np.zeros((1, size, size, 3), np.float32), verbose=0)
    t = time.perf_counter()
    for p in subset:
        x = ex.prepare(read_image(p))[None].astype(np.float32)
        model.predict(x, verbose=0)
    single = len(subset) / (time.perf_counter() - t)
    print(f"one-at-a-time model.predict (full decode + resize + predict) on {len(subset)} images: "
          f"{single:.1f} img/s; streamed/batched is {rate / single:.0f}x faster")
    print(f"process peak RSS {rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
