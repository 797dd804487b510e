"""The README's video figure: a few frames of a pan over a real photo, as they came in, translated
frame by frame, and steadied by the blend, side by side (with the warping error of each row).

    python -m bench.video_figure --store model-store --model vintage --out docs/video-frames.jpg
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from bench.clips import pan_frames, write_clip
from models.sample_photos import load_photo
from service.inference.engine import Engine, EngineOptions
from service.inference.videos.options import TemporalOptions, VideoLimits, VideoOptions
from service.inference.videos.pipeline import translate_clip
from service.store.model_store import ModelStore

_LABEL_WIDTH = 150


def frames_of(path: Path, wanted: list[int]) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return [decoded[i] for i in wanted]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="model-store")
    parser.add_argument("--model", default="vintage")
    parser.add_argument("--photo", default="astronaut")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--show", default="0,8,16,23", help="frame indices shown")
    parser.add_argument("--out", type=Path, default=Path("docs/video-frames.jpg"))
    args = parser.parse_args(argv)
    model = ModelStore(args.store).open(args.model)
    engine = Engine(model, model.manifest.resolve_direction(None), EngineOptions())
    shown = [int(i) for i in args.show.split(",")]
    rows: list[tuple[str, list[np.ndarray]]] = []
    with tempfile.TemporaryDirectory(prefix="video-figure-") as scratch:
        source = Path(scratch) / "pan.mp4"
        write_clip(str(source), pan_frames(load_photo(args.photo), args.frames, args.side))
        rows.append(("input", frames_of(source, shown)))
        for mode in ("none", "blend"):
            target = Path(scratch) / f"{mode}.mp4"
            options = VideoOptions(temporal=TemporalOptions(mode=mode))
            report = translate_clip(
                str(source), str(target), engine.translate_each, limits=VideoLimits(),
                options=options,
            )  # fmt: skip
            label = f"{'per frame' if mode == 'none' else 'blend'}\nwarping error\n"
            label += f"{report.warping_error:.6f}"
            rows.append((label, frames_of(target, shown)))
        rows[0] = (f"input\nwarping error\n{report.input_warping_error:.6f}", rows[0][1])
    side = args.side
    sheet = Image.new("RGB", (_LABEL_WIDTH + side * len(shown), side * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (label, frames) in enumerate(rows):
        draw.multiline_text((8, row * side + side // 2 - 24), label, fill="black", spacing=4)
        for column, frame in enumerate(frames):
            sheet.paste(Image.fromarray(frame), (_LABEL_WIDTH + column * side, row * side))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, quality=85)
    print(f"wrote {args.out}: frames {shown} of {args.frames}, {args.model}")


if __name__ == "__main__":
    main()
