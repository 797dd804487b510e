"""`unpaired export` (a run or public .pth files -> ONNX model in the store) and `models list`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    from_pth: Annotated[
        Path | None, typer.Option(help="public CycleGAN generator .pth for AtoB instead of a run")
    ] = None,
    reverse_pth: Annotated[
        Path | None, typer.Option(help="with --from-pth: a second .pth for BtoA")
    ] = None,
    arch: Annotated[str, typer.Option(help="with --from-pth: generator architecture")] = (
        "resnet_9blocks"
    ),
    ngf: Annotated[int, typer.Option(help="with --from-pth: generator width")] = 64,
    norm: Annotated[str, typer.Option(help="with --from-pth: instance|batch|none")] = "instance",
    dataroot: Annotated[
        Path | None, typer.Option(help="evaluate against this ground truth; stored as metrics")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="evaluate on this built-in pair; stored as metrics")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a model of the same name")] = False,
    as_json: JsonOption = False,
) -> None:
    """Export both directions to ONNX (dynamic batch/height/width), check parity with PyTorch,
    and publish the model with a checksummed manifest."""
    from models.manifest import NAME_RULE, Architecture, is_valid_name
    from service.store.model_store import ModelStore
    from training.evaluate import evaluate_run
    from training.export import ExportOptions, export_pth, export_run, staging_dir

    if (run_dir is None) == (from_pth is None):
        fail("give a RUN_DIR or --from-pth FILE (one of them)")
    if not is_valid_name(name):
        fail(f"--name is required: {NAME_RULE} (e.g. horse2zebra)")
    if reverse_pth is not None and from_pth is None:
        fail("--reverse-pth needs --from-pth")
    options = ExportOptions(fp16=fp16, int8=int8, tiled=tiled)
    aliases, domain_names = tuple(alias or ()), _domains(domains)
    with user_errors(), staging_dir() as scratch:
        target = ModelStore(store_url(store))
        folder = Path(scratch) / name
        if run_dir is not None:
            metrics = None
            if dataroot is not None or dataset is not None:
                evaluation = evaluate_run(run_dir, dataroot=dataroot, dataset=dataset)
                metrics = evaluation.to_dict()
            err.print(f"exporting {run_dir} ...")
            manifest = export_run(
                run_dir,
                folder,
                name=name,
                aliases=aliases,
                domains=domain_names,
                metrics=metrics,
                options=options,
            )
        else:
            assert from_pth is not None
            pth = {"AtoB": from_pth} | ({"BtoA": reverse_pth} if reverse_pth else {})
            architecture = Architecture(generator=arch, ngf=ngf, norm=norm)
            err.print(f"exporting {', '.join(map(str, pth.values()))} ...")
            manifest = export_pth(
                pth,
                folder,
                name=name,
                architecture=architecture,
                aliases=aliases,
                domains=domain_names,
                options=options,
            )
        target.publish(folder, overwrite=overwrite)
    summary = {
        "name": manifest.name,
        "store": target.url,
        "directions": sorted(manifest.directions),
        "parity": manifest.parity,
        "files": {f: r.bytes for f, r in manifest.files.items()},
    }
    if as_json:
        print_json(summary)
        return
    for direction, checks in manifest.parity.items():
        worst = ", ".join(f"{k} {v:.2g}" for k, v in checks.items())
        err.print(f"  {direction}: parity {worst}")
    err.print(f"published {manifest.name!r} to {target.url}")


def _row(manifest: Any) -> dict[str, Any]:
    return {
        "name": manifest.name,
        "aliases": list(manifest.aliases),
        "domains": manifest.domains,
        "directions": sorted(manifest.directions),
        "fp16": all(d.onnx_fp16 for d in manifest.directions.values()),
        "int8": all(d.onnx_int8 for d in manifest.directions.values()),
        "generator": manifest.architecture.generator,
        "ngf": manifest.architecture.ngf,
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
            f"{r['generator']} ngf {r['ngf']}",
            f"{r['bytes'] / 2**20:.1f}",
            r["created"],
        )
    err.print(f"store {target.url}: {len(rows)} model(s)")
    if rows:
        err.print(table)
    for problem in problems:
        warning(problem)
