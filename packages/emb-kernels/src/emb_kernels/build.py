"""Pre-build the CUDA modules with NVRTC into the on-disk cache.

The baseline source is built once per register cap (OptMT is a cap), the fast and L2P sources
once, for the architecture of the current GPU or the one given (no GPU needed then).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from emb_kernels import nvrtc_build
from emb_kernels.constants import SWEEP_REGISTER_CAPS

EXAMPLE = "example: python -m emb_kernels.build --caps 32,40,42,48,none --arch sm_90"


def parse_caps(text: str) -> list[int | None]:
    caps: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part in ("none", "0"):
            caps.append(None)
            continue
        try:
            caps.append(nvrtc_build.check_cap(int(part)))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"--caps: {exc}") from None
    if not caps:
        raise argparse.ArgumentTypeError("--caps: expected a comma-separated list like 32,42,none")
    return caps


def jobs_for(caps: list[int | None]) -> list[tuple[str, int | None]]:
    jobs = [("bag_baseline.cu", c) for c in dict.fromkeys(caps)]
    if None not in caps:
        jobs.append(("bag_baseline.cu", None))
    return [
        *jobs,
        ("bag_fast.cu", None),
        ("bag_fast_x.cu", None),
        ("bag_fast_async.cu", None),
        ("l2p.cu", None),
    ]


def _build_one(source: str, arch: str, cap: int | None) -> tuple[str, int | None, float, bool]:
    t0 = time.perf_counter()
    cached = nvrtc_build.cubin_path(source, arch, cap).is_file()
    nvrtc_build.build_cubin(source, arch, cap)
    return source, cap, time.perf_counter() - t0, cached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emb_kernels.build",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    default_caps = ",".join("none" if c is None else str(c) for c in SWEEP_REGISTER_CAPS)
    parser.add_argument(
        "--caps",
        type=parse_caps,
        default=parse_caps(default_caps),
        help="register caps for the baseline source ('none' = no cap)",
    )
    parser.add_argument("--arch", default=None, help="e.g. sm_90; default: the current GPU's")
    parser.add_argument("--jobs", type=int, default=4, help="parallel NVRTC processes")
    args = parser.parse_args(argv)
    try:
        nvrtc_build.nvrtc_module()
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    arch = args.arch
    if arch is None:
        import torch

        if not torch.cuda.is_available():
            print("error: no GPU here; pass --arch (e.g. --arch sm_90)", file=sys.stderr)
            return 1
        major, minor = torch.cuda.get_device_capability()
        arch = f"sm_{major}{minor}"
    try:
        nvrtc_build.check_arch(arch)
    except ValueError as exc:
        parser.error(str(exc))
    jobs = jobs_for(args.caps)
    t0 = time.perf_counter()
    failed = False
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=get_context("spawn")) as ex:
        futures = [ex.submit(_build_one, src, arch, cap) for src, cap in jobs]
        for fut in futures:
            try:
                src, cap, secs, cached = fut.result()
            except RuntimeError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed = True
                continue
            state = "cached" if cached else f"built in {secs:.1f} s"
            print(f"{src} cap={cap or 'none'} {arch}: {state}")
    print(
        f"{len(jobs)} modules for {arch} in {nvrtc_build.cache_dir()} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
