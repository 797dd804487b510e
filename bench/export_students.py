"""Export the teacher and the student architectures of `unpaired distill` with random weights
(speed does not depend on them) into a store, for `bench.engine_throughput --model`:

    python -m bench.export_students /tmp/speedstore
    python -m bench.engine_throughput --store /tmp/speedstore --sizes 256 --batches 1,8 \\
        --model teacher-resnet9-ngf64 --model mobile-resnet9-ngf32 --model narrow-resnet6-ngf16
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.harness import err

#: (model name, generator, width): the paper's generator and the two students of issue 20
MODELS = (
    ("teacher-resnet9-ngf64", "resnet_9blocks", 64),
    ("mobile-resnet9-ngf32", "mobile_resnet_9blocks", 32),
    ("narrow-resnet6-ngf16", "resnet_6blocks", 16),
)


def main() -> None:
    import torch

    from models import build_generator
    from models.manifest import Architecture
    from training.export import ExportOptions, export_generators

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path, help="store folder to export into (new names)")
    parser.add_argument("--no-int8", action="store_true", help="no int8 graphs (GPU runs)")
    parser.add_argument(
        "--only",
        action="append",
        choices=[name for name, _, _ in MODELS],
        help="export only this one (repeatable; default: all)",
    )
    args = parser.parse_args()
    # no fidelity floor for int8: a random-weight network is far more sensitive to it
    options = ExportOptions(tiled=False, int8=not args.no_int8, int8_min_psnr=0.0)
    for name, generator, ngf in MODELS:
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        net = build_generator(generator, ngf=ngf).eval()
        arch = Architecture(generator=generator, ngf=ngf, norm="instance")
        export_generators(
            {"AtoB": net}, args.store / name, name=name, architecture=arch, options=options
        )
        err.print(f"exported {name} ({generator}, ngf {ngf}) to {args.store}")


if __name__ == "__main__":
    main()
