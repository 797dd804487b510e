"""`unpaired distill`: a compact student trained to reproduce a teacher (a run or a store model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from cli.common import EXIT_INTERRUPTED, err, user_errors
from cli.export_cmd import StoreOption, store_url


def _run_teacher(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """A training run as teacher: its latest generators, and the data it was trained on."""
    import torch
    from PIL import Image

    from models import input_multiple
    from models.manifest import sha256_file
    from training import checkpoint as ckpt
    from training.distill import TeacherRecord
    from training.evaluate import generator_architecture, load_run_generators, translate
    from training.networks import build_run_discriminator

    cfg, checkpoint, nets = load_run_generators(run_dir, torch.device("cpu"))
    judges = {"D_Y": build_run_discriminator(cfg), "D_X": build_run_discriminator(cfg)}
    ckpt.load_weights(checkpoint, judges)  # D_Y judges AtoB's outputs, D_X BtoA's
    multiple = input_multiple(cfg.generator)

    def runner(net: torch.nn.Module) -> Any:
        def run(images: list[np.ndarray]) -> list[np.ndarray]:
            outputs = translate(
                net, [Image.fromarray(i) for i in images], multiple, torch.device("cpu")
            )
            return [np.asarray(o) for o in outputs]

        return run

    digest = sha256_file(checkpoint / ckpt.WEIGHTS_FILE)
    record = TeacherRecord(
        name=run_dir.name,
        kind="run",
        sha256={"weights": digest},
        architecture=generator_architecture(cfg),
        translate={d: runner(net) for d, net in nets.items()},
        networks=nets,
        discriminators={"AtoB": judges["D_Y"], "BtoA": judges["D_X"]},
    )
    data = {"dataset": cfg.dataset, "dataroot": cfg.dataroot, "size": cfg.size}
    return record, data


def _model_teacher(name: str, store: str | None, threads: int | None) -> tuple[Any, dict[str, Any]]:
    """A store model as teacher, run by the serving engine: what its users get is what the
    student learns (any model the service serves, imported ones included)."""
    from service.inference.engine import Engine, EngineOptions
    from service.inference.image_io import DecodedImage
    from service.store.model_store import ModelStore
    from training.distill import TeacherRecord

    model = ModelStore(store_url(store)).open(name)
    manifest = model.manifest
    options = EngineOptions(device="auto", threads=threads)
    engines = {d: Engine(model, d, options) for d in manifest.directions}
    # the torch generators, where the model carries weights (an imported ONNX graph has none)
    networks: dict[str, Any] = {}
    if manifest.architecture is not None:
        from models.registry import load_generator

        for direction, files in manifest.directions.items():
            if files.weights is not None:
                path = model.path(files.weights)
                networks[direction] = load_generator(manifest.architecture, path).eval()

    def runner(engine: Engine) -> Any:
        def run(images: list[np.ndarray]) -> list[np.ndarray]:
            decoded = [DecodedImage(rgb=image, alpha=None) for image in images]
            return [out.rgb for out in engine.translate(decoded)]

        return run

    record = TeacherRecord(
        name=manifest.name,
        kind="model",
        sha256={d: manifest.files[files.onnx].sha256 for d, files in manifest.directions.items()},
        architecture=manifest.architecture,
        translate={d: runner(e) for d, e in engines.items()},
        networks=networks,
    )
    dataset = manifest.training.get("dataset")
    directions = tuple(manifest.directions)
    return record, {
        "dataset": dataset if isinstance(dataset, str) else None,
        "direction": directions[0] if len(directions) == 1 else "both",
    }


def distill(
    teacher: Annotated[
        str, typer.Argument(help="the teacher: a training run folder or a store model")
    ],
    out: Annotated[Path, typer.Option(help="run directory of the student (created)")],
    student: Annotated[
        str | None,
        typer.Option(
            help="student generator: mobile_resnet_9blocks (default), resnet_6blocks, ..."
        ),
    ] = None,
    ngf: Annotated[int | None, typer.Option(help="student width (default 32)")] = None,
    dataroot: Annotated[
        Path | None, typer.Option(help="folder with trainA/ trainB/ testA/ testB/")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="built-in synthetic pair")] = None,
    store: StoreOption = None,
    config: Annotated[Path | None, typer.Option(help="YAML config file")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    size: Annotated[int | None, typer.Option(help="training crop side")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads")] = None,
    checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the student in --out")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="any config option: --set lambda_ssim=0.5")
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Distil TEACHER into a compact student: it learns the teacher's outputs on the source
    domain's images (L1 + SSIM), both directions; export it with `unpaired export OUT`."""
    from training import checkpoint as ckpt
    from training.config import check_resume_compatible, load_config, parse_set_options
    from training.runner import TrainingInterrupted, train

    with user_errors():
        as_run = Path(teacher)
        if as_run.is_dir() and ckpt.list_checkpoints(as_run):
            record, data = _run_teacher(as_run)
        else:
            record, data = _model_teacher(teacher, store, threads)
        flags: dict[str, Any] = {
            "model": "distill", "teacher": teacher, "generator": student, "ngf": ngf,
            "out": out, "max_steps": max_steps, "batch_size": batch_size, "device": device,
            "threads": threads, "checkpoint_every": checkpoint_every,
            "size": size or data.get("size"), "direction": data.get("direction", "both"),
        }  # fmt: skip
        if dataroot is not None or dataset is not None:
            flags |= {"dataroot": dataroot, "dataset": dataset}
        else:
            flags |= {"dataroot": data.get("dataroot"), "dataset": data.get("dataset")}
        flags.update(parse_set_options(set_ or []))
        cfg = load_config(config, flags)
        if resume:
            saved = load_config(ckpt.latest_checkpoint(out) / ckpt.CONFIG_FILE)
            cfg = check_resume_compatible(saved, cfg.model_dump())
        err.print(
            f"{'resuming' if resume else 'distilling'} {record.name} into {cfg.generator} "
            f"(ngf {cfg.ngf}) on {cfg.dataset or cfg.dataroot} -> {cfg.out}"
        )
        try:
            result = train(cfg, resume=resume, progress=progress, teacher=record)
        except TrainingInterrupted as stop:
            err.print(
                f"interrupted at step {stop.step}; checkpoint {stop.checkpoint}. Continue with: "
                f"unpaired distill {teacher} --out {cfg.out} --resume"
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    err.print(f"done: step {result.step}, checkpoint {result.checkpoint}")
