"""`unpaired export` (a run or public .pth files -> ONNX model in the store) and `models list`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from cli.common import err, fail, print_json, user_errors, warning

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store", help="model store folder or fsspec URL (env UNPAIRED_STORE; ./model-store)"
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="one JSON object on stdout")]


def store_url(store: str | None) -> str:
    from service.settings import get_settings

    if store:
        return store
    with user_errors():
        return get_settings().store


def _domains(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if len(names) != 2 or not all(names):
        raise typer.BadParameter("give two names separated by a comma, e.g. horse,zebra")
    return {"A": names[0], "B": names[1]}


def _value_range(text: str) -> tuple[float, float]:
    ranges = {"-1,1": (-1.0, 1.0), "0,1": (0.0, 1.0)}
    if text.replace(" ", "") not in ranges:
        raise typer.BadParameter("give -1,1 or 0,1: the values the graph takes and returns")
    return ranges[text.replace(" ", "")]


def _pairs(first: Path | None, second: Path | None) -> dict[str, Path]:
    return ({"AtoB": first} if first else {}) | ({"BtoA": second} if second else {})


def _sources(
    run_dir: Path | None, from_pth: Path | None, from_onnx: Path | None
) -> Literal["run", "pth", "onnx"]:
    given = [k for k, v in (("run", run_dir), ("pth", from_pth), ("onnx", from_onnx)) if v]
    if len(given) != 1:
        fail("give one of: a RUN_DIR, --from-pth FILE or --from-onnx FILE")
    return given[0]  # type: ignore[return-value]


def export(
    run_dir: Annotated[
        Path | None, typer.Argument(help="training run to export (its latest checkpoint)")
    ] = None,
    name: Annotated[str, typer.Option(help="model name in the store, e.g. horse2zebra")] = "",
    store: StoreOption = None,
    fp16: Annotated[bool, typer.Option(help="also write an fp16 graph (GPU serving)")] = False,
    int8: Annotated[
        bool, typer.Option(help="also write an int8 graph for CPU serving (calibrated, measured)")
    ] = False,
    tiled: Annotated[
        bool, typer.Option(help="also write the graph that tiles large images consistently")
    ] = True,
    alias: Annotated[list[str] | None, typer.Option(help="another name (repeatable)")] = None,
    domains: Annotated[
        str | None, typer.Option(help="human names of domains A and B, e.g. horse,zebra")
    ] = None,
    description: Annotated[
        str | None, typer.Option(help="what the model does, shown by the API and the web page")
    ] = None,
    license_: Annotated[
        str | None, typer.Option("--license", help="the weights' license, e.g. BSD-3-Clause")
    ] = None,
    from_pth: Annotated[
        Path | None,
        typer.Option(
            help="generator weights from other code (.pth/.pt/.ckpt/.safetensors), for AtoB; "
            "a file holding both generators gives both directions"
        ),
    ] = None,
    reverse_pth: Annotated[
        Path | None, typer.Option(help="with --from-pth: a second file, for BtoA")
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="with --from-pth: the network to take from a file of several")
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(help="with --from-pth: the generator, when the file is ambiguous"),
    ] = None,
    norm: Annotated[
        str | None,
        typer.Option(help="with --from-pth: instance|instance_affine|batch|none, when ambiguous"),
    ] = None,
    upsample: Annotated[
        str | None,
        typer.Option(help="with --from-pth: nearest|bilinear, for a resize-convolution decoder"),
    ] = None,
    from_onnx: Annotated[
        Path | None, typer.Option(help="an image-to-image ONNX graph of any network, for AtoB")
    ] = None,
    reverse_onnx: Annotated[
        Path | None, typer.Option(help="with --from-onnx: a second graph, for BtoA")
    ] = None,
    fp16_onnx: Annotated[
        Path | None, typer.Option(help="with --from-onnx: the fp16 variant of the AtoB graph")
    ] = None,
    reverse_fp16_onnx: Annotated[
        Path | None, typer.Option(help="with --from-onnx: the fp16 variant of the BtoA graph")
    ] = None,
    value_range: Annotated[
        str,
        typer.Option(help="with --from-onnx: values the graph takes and gives: -1,1 or 0,1"),
    ] = "-1,1",
    channels: Annotated[
        int, typer.Option(help="with --from-onnx: 3 (RGB) or 1 (grey) channels in and out")
    ] = 3,
    multiple: Annotated[
        int | None,
        typer.Option(help="with --from-onnx: sides must be multiples of this (default: probed)"),
    ] = None,
    min_side: Annotated[
        int | None,
        typer.Option(help="with --from-onnx: smallest side the graph runs on (default: probed)"),
    ] = None,
    dataroot: Annotated[
        Path | None, typer.Option(help="evaluate against this ground truth; stored as metrics")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="evaluate on this built-in pair; stored as metrics")
    ] = None,
    ema: Annotated[
        bool,
        typer.Option("--ema/--no-ema", help="a run's generators' moving average, if it kept one"),
    ] = True,
    overwrite: Annotated[bool, typer.Option(help="replace a model of the same name")] = False,
    as_json: JsonOption = False,
) -> None:
    """Publish a model: a training run, generator weights from other CycleGAN code, or any
    image-to-image ONNX graph. Every graph is checked (parity with PyTorch, or probe runs) before
    the store sees it; nothing is written when a check fails."""
    from models.manifest import NAME_RULE, is_valid_name
    from service.store.model_store import ModelStore
    from training.export import ExportOptions, ModelAbout, staging_dir

    kind = _sources(run_dir, from_pth, from_onnx)
    if not is_valid_name(name):
        fail(f"--name is required: {NAME_RULE} (e.g. horse2zebra)")
    pth_only = {"--reverse-pth": reverse_pth, "--key": key, "--arch": arch, "--norm": norm}
    onnx_only: dict[str, object] = {"--reverse-onnx": reverse_onnx, "--fp16-onnx": fp16_onnx}
    onnx_only |= {"--reverse-fp16-onnx": reverse_fp16_onnx, "--multiple": multiple}
    onnx_only |= {"--min-side": min_side}
    for flag, needs, given in [
        *((f, "--from-pth", v) for f, v in (pth_only | {"--upsample": upsample}).items()),
        *((f, "--from-onnx", v) for f, v in onnx_only.items()),
    ]:
        if given is not None and kind != needs.removeprefix("--from-"):
            fail(f"{flag} needs {needs}")
    if (dataroot is not None or dataset is not None) and kind != "run":
        fail("--dataroot/--dataset evaluate a training run; give a RUN_DIR")
    options = ExportOptions(fp16=fp16, int8=int8, tiled=tiled, ema=ema)
    about = ModelAbout(description=description, license=license_)
    common: dict[str, Any] = {
        "name": name,
        "aliases": tuple(alias or ()),
        "domains": _domains(domains),
        "about": about,
    }
    with user_errors(), staging_dir() as scratch:
        target = ModelStore(store_url(store))
        folder = Path(scratch) / name
        if kind == "run":
            assert run_dir is not None
            manifest = _export_run(run_dir, folder, dataroot, dataset, options, common)
        elif kind == "pth":
            from models.weight_import import ImportChoices
            from training.export import export_pth

            files = _pairs(from_pth, reverse_pth)
            err.print(f"importing {', '.join(map(str, files.values()))} ...")
            choices = ImportChoices(arch=arch, norm=norm, upsample=upsample, key=key)
            manifest = export_pth(files, folder, choices=choices, options=options, **common)
            _print_mapping(manifest)
        else:
            from training.onnx_import import OnnxImportOptions, import_onnx

            graphs = _pairs(from_onnx, reverse_onnx)
            err.print(f"importing {', '.join(map(str, graphs.values()))} ...")
            onnx_options = OnnxImportOptions(
                value_range=_value_range(value_range),
                channels=channels,
                multiple=multiple,
                min_side=min_side,
                fp16_graphs=_pairs(fp16_onnx, reverse_fp16_onnx),
            )
            manifest = import_onnx(graphs, folder, onnx_options=onnx_options, **common)
            _print_mapping(manifest)
        target.publish(folder, overwrite=overwrite)
    summary = {
        "name": manifest.name,
        "store": target.url,
        "directions": sorted(manifest.directions),
        "parity": manifest.parity,
        "source": manifest.source.model_dump(mode="json") if manifest.source else None,
        "files": {f: r.bytes for f, r in manifest.files.items()},
    }
    if as_json:
        print_json(summary)
        return
    for direction, checks in manifest.parity.items():
        worst = ", ".join(f"{k} {v:.2g}" for k, v in checks.items())
        err.print(f"  {direction}: parity {worst}")
    err.print(f"published {manifest.name!r} to {target.url}")


def _export_run(
    run_dir: Path,
    folder: Path,
    dataroot: Path | None,
    dataset: str | None,
    options: Any,
    common: dict[str, Any],
) -> Any:
    from training.evaluate import evaluate_run
    from training.export import export_run

    metrics = None
    if dataroot is not None or dataset is not None:
        metrics = evaluate_run(
            run_dir, dataroot=dataroot, dataset=dataset, ema=options.ema
        ).to_dict()
    err.print(f"exporting {run_dir} ...")
    return export_run(run_dir, folder, metrics=metrics, options=options, **common)


def _print_mapping(manifest: Any) -> None:
    """What the importer found and assumed, per direction, so a user can check it."""
    if manifest.source is None:
        return
    for direction, found in manifest.source.mapping.items():
        if not isinstance(found, dict):
            continue
        err.print(f"  {direction}: " + ", ".join(f"{k} {v}" for k, v in found.items()))


def _row(manifest: Any) -> dict[str, Any]:
    return {
        "name": manifest.name,
        "aliases": list(manifest.aliases),
        "domains": manifest.domains,
        "directions": sorted(manifest.directions),
        "fp16": all(d.onnx_fp16 for d in manifest.directions.values()),
        "int8": all(d.onnx_int8 for d in manifest.directions.values()),
        "generator": manifest.architecture.generator if manifest.architecture else "onnx",
        "ngf": manifest.architecture.ngf if manifest.architecture else None,
        "input_multiple": manifest.input.multiple,
        "bytes": sum(r.bytes for r in manifest.files.values()),
        "created": manifest.created.isoformat(timespec="seconds"),
    }


def models_list(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """List the models in the store (broken entries are reported, not hidden)."""
    from service.store.model_store import ModelStore

    with user_errors():
        target = ModelStore(store_url(store))
        manifests, problems = target.manifests()
    rows = [_row(m) for m in manifests]
    if as_json:
        print_json({"store": target.url, "models": rows, "problems": problems})
        return
    table = Table("name", "aliases", "domains A / B", "directions", "generator", "MB", "created")
    for r in rows:
        table.add_row(
            r["name"],
            ", ".join(r["aliases"]),
            f"{r['domains']['A']} / {r['domains']['B']}",
            " ".join(r["directions"]) + "".join(f" +{p}" for p in ("fp16", "int8") if r[p]),
            f"{r['generator']} ngf {r['ngf']}" if r["ngf"] else r["generator"],
            f"{r['bytes'] / 2**20:.1f}",
            r["created"],
        )
    err.print(f"store {target.url}: {len(rows)} model(s)")
    if rows:
        err.print(table)
    for problem in problems:
        warning(problem)
