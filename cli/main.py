"""`unpaired`: the one command line in front of training, evaluation and (later) serving.

Human-readable output goes to stderr; `--json` prints exactly one JSON object on stdout.
Errors a user can cause print one clear line and exit non-zero, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from cli import distill_cmd, export_cmd, jobs_cmd, published_cmd, serve_cmd, translate_cmd
from cli.common import EXIT_INTERRUPTED, err, print_json, user_errors

if TYPE_CHECKING:  # imported when a command runs: `unpaired --help` stays quick
    from training.config import TrainConfig

WORK_ORDER = (
    "datasets", "train", "evaluate", "distill", "export", "models",
    "translate", "serve", "worker", "jobs", "settings",
)  # fmt: skip


class CommandsInWorkOrder(TyperGroup):
    """`unpaired --help` lists commands in the order of the work (make data, train, ..., serve),
    not in the order the modules happen to register them."""

    def list_commands(self, ctx: Any) -> list[str]:  # the Context of typer's own click
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(WORK_ORDER)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))


app = typer.Typer(
    name="unpaired",
    cls=CommandsInWorkOrder,
    help="Unpaired image-to-image translation (CycleGAN, DiscoGAN): train, export, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
datasets_app = typer.Typer(help="Built-in synthetic domain pairs.", no_args_is_help=True)
app.add_typer(
    datasets_app, name="datasets", short_help="List and write the built-in synthetic pairs."
)
models_app = typer.Typer(help="Models in the model store.", no_args_is_help=True)
app.add_typer(models_app, name="models", short_help="List the models in the store.")
app.add_typer(
    jobs_cmd.app, name="jobs", short_help="Bulk jobs on a server: submit, watch, get, cancel."
)
app.command(short_help="Publish a run, imported weights or an ONNX graph to the store.")(
    export_cmd.export
)
app.command(short_help="Distil a model into a small, fast student for CPUs.")(distill_cmd.distill)
app.command(short_help="Translate images and folders with a stored model.")(translate_cmd.translate)
app.command(short_help="Serve the REST API and the web page.")(serve_cmd.serve)
app.command(short_help="Run a Celery worker that batches translations from Redis.")(
    serve_cmd.worker
)
models_app.command("list")(export_cmd.models_list)
models_app.command("fetch")(published_cmd.fetch)

# --- settings --------------------------------------------------------------------------------


@app.command("settings", short_help="Show the UNPAIRED_* settings of `serve` and `worker`.")
def settings_show(
    env_example: Annotated[
        bool, typer.Option("--env-example", help="print .env.example: every variable, defaults")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The UNPAIRED_* settings this environment gives `serve` and `worker` (keys hidden)."""
    from service.settings_env import env_example as example
    from service.settings_env import env_value, variable

    if env_example:
        print(example(), end="")
        return
    from service.settings import load_settings

    with user_errors():
        settings = load_settings()
    values = {  # keys are secrets: say how many, never which
        variable(name): f"({len(value)} set)" if name == "api_keys" and value else env_value(value)
        for name, value in settings
    }
    if settings.memory_budget_mb is None:  # say what the default comes to on this machine
        from service.inference.admission import budget_bytes

        values[variable("memory_budget_mb")] = (
            f"{budget_bytes(settings) // 2**20} (default: half the memory available now)"
        )
    if as_json:
        print_json(values)
        return
    table = Table("variable", "value")
    for name, value in values.items():
        table.add_row(name, value)
    err.print(table)


# --- datasets --------------------------------------------------------------------------------


def _photos_description() -> str:
    from models.sample_photos import HELD_OUT

    return (
        f"the real photos scikit-image ships (A only; held out: {', '.join(HELD_OUT)}), "
        "to distil a one-way photo model on"
    )


@datasets_app.command("list")
def datasets_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the built-in synthetic domain pairs."""
    from training.synthetic import PAIRS

    if as_json:
        print_json(
            {
                "datasets": [
                    {"name": p.name, "A": p.domain_a, "B": p.domain_b, "description": p.description}
                    for p in PAIRS.values()
                ]
            }
        )
        return
    table = Table("name", "A", "B", "description")
    for p in PAIRS.values():
        table.add_row(p.name, p.domain_a, p.domain_b, p.description)
    table.add_row(
        "photos",
        "photo",
        "-",
        "the real photos scikit-image ships (A only; held out: "
        "chelsea, coffee), to distil a one-way photo model on",
    )
    err.print(table)


@datasets_app.command("make")
def datasets_make(
    name: Annotated[
        str, typer.Argument(help="built-in pair or `photos`, see `unpaired datasets list`")
    ],
    out: Annotated[Path, typer.Option("--out", help="folder to write (created)")],
    size: Annotated[int, typer.Option(min=8)] = 64,
    n_train: Annotated[int, typer.Option("--n-train", min=1)] = 1000,
    n_test: Annotated[int, typer.Option("--n-test", min=1)] = 200,
    seed: int = 0,
) -> None:
    """Write NAME as trainA/ trainB/ testA/ testB/ plus ground truth testA_to_B/ testB_to_A/;
    `photos`: the real photos scikit-image ships, trainA/ and held-out testA/ (for distill)."""
    from training.make_dataset import PHOTOS_DATASET, write_photo_dataset, write_synthetic_dataset

    with user_errors():
        if name == PHOTOS_DATASET:
            counts = write_photo_dataset(out)
        else:
            counts = write_synthetic_dataset(
                name, out, size=size, n_train=n_train, n_test=n_test, seed=seed
            )
    err.print(f"wrote {name} to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


# --- train -------------------------------------------------------------------------------------


@app.command(short_help="Train a CycleGAN, DiscoGAN, CUT or FastCUT.")
def train(
    dataroot: Annotated[Path | None, typer.Option(help="folder with trainA/ and trainB/")] = None,
    dataset: Annotated[str | None, typer.Option(help="built-in synthetic pair")] = None,
    model: Annotated[str | None, typer.Option(help="cyclegan | discogan | cut | fastcut")] = None,
    direction: Annotated[
        str | None, typer.Option(help="cut/fastcut: AtoB | BtoA | both (default)")
    ] = None,
    size: Annotated[int | None, typer.Option(help="training crop side")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    out: Annotated[Path | None, typer.Option(help="run directory")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config file")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="continue the run in this directory from its checkpoint")
    ] = None,
    resume_or_start: Annotated[
        bool,
        typer.Option(
            "--resume-or-start",
            help="continue the run in --out from its newest checkpoint if it has one, else "
            "start it (a retried Job); a checkpoint of another configuration is refused",
        ),
    ] = False,
    generator: Annotated[str | None, typer.Option(help="e.g. resnet_9blocks, unet_256")] = None,
    discriminator: Annotated[str | None, typer.Option(help="basic | n_layers | pixel")] = None,
    ngf: Annotated[int | None, typer.Option()] = None,
    ndf: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    amp: Annotated[str | None, typer.Option(help="none | bf16 | fp16")] = None,
    channels_last: Annotated[
        bool | None, typer.Option("--channels-last/--no-channels-last")
    ] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    checkpoint_every: Annotated[int | None, typer.Option("--checkpoint-every")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="any config option: --set lambda_cycle=5 (repeatable)"),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Train a CycleGAN, DiscoGAN, CUT or FastCUT on a folder dataset or a built-in pair."""
    from training.config import (
        ConfigError,
        check_resume_compatible,
        load_config,
        parse_set_options,
        read_config_file,
    )
    from training.runner import TrainingInterrupted
    from training.runner import train as run_training

    flags: dict[str, Any] = {
        "dataroot": dataroot,
        "dataset": dataset,
        "model": model,
        "direction": direction,
        "size": size,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "out": out,
        "generator": generator,
        "discriminator": discriminator,
        "ngf": ngf,
        "ndf": ndf,
        "lr": lr,
        "device": device,
        "amp": amp,
        "channels_last": channels_last,
        "compile": compile,
        "threads": threads,
        "seed": seed,
        "checkpoint_every": checkpoint_every,
    }
    with user_errors():
        flags.update(parse_set_options(set_ or []))
        if resume is not None and resume_or_start:
            raise ConfigError(
                "--resume and --resume-or-start exclude each other: --resume RUN_DIR continues "
                "a run from its saved config, --resume-or-start continues or starts --out"
            )
        if resume is not None:
            requested = {k: v for k, v in flags.items() if v is not None}
            requested.setdefault("out", resume)
            if config is not None:
                requested = {**read_config_file(config), **requested}
            cfg = check_resume_compatible(_saved_config(resume), requested)
        else:
            cfg = load_config(config, flags)
            if resume_or_start:
                resume = _resumable(cfg)
                if resume is not None:
                    cfg = check_resume_compatible(_saved_config(resume), cfg.model_dump())
        err.print(
            f"{'resuming' if resume else 'training'} {cfg.model} "
            f"({cfg.generator} / {cfg.discriminator}) on {cfg.dataset or cfg.dataroot} "
            f"-> {cfg.out}",
        )
        try:
            result = run_training(cfg, resume=resume is not None, progress=progress)
        except TrainingInterrupted as stop:
            again = "the same command" if resume_or_start else f"unpaired train --resume {cfg.out}"
            err.print(
                f"interrupted at step {stop.step}; checkpoint {stop.checkpoint}. "
                f"Continue with: {again}",
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    err.print(f"done: step {result.step}, checkpoint {result.checkpoint}")


def _saved_config(run_dir: Path) -> TrainConfig:
    """The config saved in the run's newest checkpoint."""
    from training.checkpoint import CONFIG_FILE, latest_checkpoint
    from training.config import load_config

    return load_config(latest_checkpoint(run_dir) / CONFIG_FILE)


def _resumable(cfg: TrainConfig) -> Path | None:
    """--resume-or-start: `cfg.out` when it holds a checkpoint to continue, else None (start).

    The whole config this command would train is then held against the checkpoint's, so only
    what a resume may change can differ: the same refusal as --resume, naming the fields."""
    from training.checkpoint import list_checkpoints

    if not list_checkpoints(cfg.out):
        return None
    err.print(f"{cfg.out} holds a checkpoint: continuing that run")
    return Path(cfg.out)


# --- evaluate ----------------------------------------------------------------------------------


@app.command(short_help="Score a run against the ground truth (PSNR, SSIM).")
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="a training run directory")],
    dataroot: Annotated[
        Path | None, typer.Option(help="folder with testA/ testB/ and testA_to_B/ testB_to_A/")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="built-in pair, test split on the fly")
    ] = None,
    n_test: Annotated[int, typer.Option("--n-test", min=1)] = 200,
    device: Annotated[str, typer.Option()] = "cpu",
    ema: Annotated[
        bool, typer.Option("--ema/--no-ema", help="the generators' moving average, if kept")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
) -> None:
    """PSNR / SSIM of G(x) against the ground truth, every direction the run learned, next to
    the identity baseline (x itself against the truth)."""
    from training.evaluate import evaluate_run

    with user_errors():
        result = evaluate_run(
            run_dir, dataroot=dataroot, dataset=dataset, n_test=n_test, device=device, ema=ema
        )
    if as_json:
        print_json(result.to_dict())
        return
    table = Table("direction", "n", "PSNR", "SSIM", "baseline PSNR", "baseline SSIM", "gain dB")
    for direction, s in result.directions.items():
        table.add_row(
            direction,
            str(s.n),
            f"{s.psnr:.2f}",
            f"{s.ssim:.3f}",
            f"{s.baseline_psnr:.2f}",
            f"{s.baseline_ssim:.3f}",
            f"{s.gain_db:+.2f}",
        )
    err.print(f"{result.run_dir} (step {result.step}, {result.weights} weights)")
    err.print(table)
