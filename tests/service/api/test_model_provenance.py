"""Where a model came from, in ``GET /v1/models/{name}`` and on the web page: trained here (the
run, step, dataset and metrics) or imported (the source files, their sha256 and what the
importer found), its description and license, how large images are tiled, and for a distilled
student its teacher, MACs and fidelity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from models.manifest import MANIFEST_FILE, ImportSource, SourceFile
from service.store.model_store import ModelStore
from tests.conftest import TINY_ARCH, edited_copy, tiny_model
from tests.service.api.browser import wait
from tests.service.api.conftest import ClientFactory, png
from tests.service.servers import running_server, service_env
from training.export import ExportOptions, ModelAbout

SECRET = "/srv/secret-place"  # where the exporter read its files: never in an answer
SHA_A = "a1" * 32
SHA_B = "b2" * 32
MAPPING = {
    "architecture": "resnet_6blocks",
    "ngf": 4,
    "blocks": 6,
    "norm": "instance",
    "key": "netG_A",
    "tensors": 28,
    "first": "netG_A.model.1.weight -> model.1.weight",
    "last": "netG_A.model.19.bias -> model.19.bias",
}
XSS = '<img src=x onerror="window.__xss = 1"> & <b>bold</b>'


def imported_about(description: str = "Horses to zebras, from the CycleGAN paper") -> ModelAbout:
    source = ImportSource(
        format="pth",
        files={
            "AtoB": SourceFile(
                name=f"{SECRET}/horse2zebra.pth", sha256=SHA_A, bytes=1234, key="netG_A"
            ),
            "BtoA": SourceFile(name="zebra2horse.pth", sha256=SHA_B, bytes=5678),
        },
        mapping={"AtoB": MAPPING, "BtoA": {**MAPPING, "key": None}},
    )
    return ModelAbout(source=source, description=description, license="BSD-3-Clause")


@pytest.fixture(scope="module")
def imported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model(
        tmp_path_factory.mktemp("imported"),
        "imported",
        about=imported_about(),
        options=ExportOptions(tiled=False),
    )


def trained_model(exported: Path, target: Path) -> Path:
    """`exported` as `export_run` records a training run (at an absolute path on the server)."""
    run_dir = f"{SECRET}/runs/day2night-r6"
    training = {
        "source": "run",
        "run_dir": run_dir,
        "checkpoint": "step_00000020",
        "model": "cyclegan",
        "dataset": f"{SECRET}/data/day2night",
        "size": 64,
        "config_digest": "0123456789ab",
    }
    score = {"n": 4, "psnr": 21.5, "ssim": 0.7, "baseline_psnr": 19.0, "baseline_ssim": 0.6}
    metrics = {
        "run_dir": run_dir,
        "checkpoint": f"{run_dir}/checkpoints/step_00000020",
        "step": 20,
        "directions": {"AtoB": {**score, "gain_db": 2.5}, "BtoA": {**score, "gain_db": 2.5}},
    }
    return edited_copy(
        exported,
        target,
        training=training,
        metrics=metrics,
        description="Day to night",
        license="CC-BY-4.0",
    )


TEACHER_SHA = "c3" * 32


def distillation(teacher: dict[str, Any]) -> dict[str, Any]:
    """A manifest's `distillation` block, as `unpaired distill` writes it."""
    return {
        "teacher": teacher,
        "student": TINY_ARCH,
        "macs": 1_200_000_000,
        "teacher_macs": 24_000_000_000,
        "fidelity": {
            "AtoB": {"psnr_db": 31.24, "identity_psnr_db": 14.81, "images": 40},
            "BtoA": {"psnr_db": 29.96, "identity_psnr_db": 15.02, "images": 40},
        },
    }


def foreign_onnx_model(exported: Path, target: Path) -> Path:
    """`exported` made into what `--from-onnx` gives for a network this project does not
    define: no architecture, no weights, no tiled graph (the hashes are of the graph files, so
    the manifest can be edited without re-checksumming)."""
    edited_copy(exported, target)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    manifest["architecture"] = None
    for files in manifest["directions"].values():
        for kind in ("weights", "onnx_tiled"):
            name = files.pop(kind, None)
            if name:
                del manifest["files"][name]
                (target / name).unlink()
    manifest["parity"] = {d: {"fp32_max_abs": 0.0} for d in manifest["directions"]}
    onnx = {"value_range": "-1,1", "channels": 3, "tiling": "plain (overlap blending)"}
    manifest["source"] = {
        "format": "onnx",
        "files": {"AtoB": {"name": "C:\\Users\\alice\\styliser.onnx", "sha256": SHA_A, "bytes": 9}},
        "mapping": {"AtoB": onnx, "BtoA": onnx},
    }
    manifest["description"] = "someone's styliser"
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    return target


@pytest.fixture
def provenance_store(
    model_store: Path, imported_model: Path, exported_model: Path, tmp_path: Path
) -> Path:
    """The tiny model plus an imported, a trained, a foreign-ONNX one and a student distilled
    from a training run."""
    store = ModelStore(model_store)
    store.publish(imported_model)
    store.publish(trained_model(exported_model, tmp_path / "trained"))
    store.publish(foreign_onnx_model(exported_model, tmp_path / "foreign"))
    teacher = {"name": f"{SECRET}/runs/teacher-r9", "kind": "run", "sha256": {"AtoB": TEACHER_SHA}}
    store.publish(
        edited_copy(exported_model, tmp_path / "student", distillation=distillation(teacher))
    )
    return model_store


def get_model(api: ClientFactory, name: str) -> tuple[dict[str, Any], str]:
    with api() as client:
        answer = client.get(f"/v1/models/{name}")
        listing = client.get("/v1/models")
    assert answer.status_code == 200, answer.text
    assert listing.status_code == 200 and not listing.json()["problems"]
    assert answer.json() in listing.json()["models"]
    return answer.json(), answer.text


@pytest.mark.usefixtures("provenance_store")
def test_an_imported_model_names_its_files_and_what_the_importer_found(
    api: ClientFactory,
) -> None:
    model, text = get_model(api, "imported")
    assert model["description"] == "Horses to zebras, from the CycleGAN paper"
    assert model["license"] == "BSD-3-Clause"
    assert model["architecture"]["generator"] == "resnet_6blocks"
    provenance = model["provenance"]
    assert provenance["kind"] == "imported" and provenance["format"] == "pth"
    assert provenance["files"] == {
        "AtoB": {"name": "horse2zebra.pth", "sha256": SHA_A, "bytes": 1234, "key": "netG_A"},
        "BtoA": {"name": "zebra2horse.pth", "sha256": SHA_B, "bytes": 5678, "key": None},
    }
    assert provenance["mapping"]["AtoB"] == MAPPING
    assert provenance["mapping"]["BtoA"]["key"] is None
    assert {d["name"]: d["tiling"] for d in model["directions"]} == {
        "AtoB": "overlap_blending",
        "BtoA": "overlap_blending",
    }
    assert SECRET not in text


@pytest.mark.usefixtures("provenance_store")
def test_a_foreign_onnx_model_has_no_architecture_and_is_tiled_plainly(
    api: ClientFactory,
) -> None:
    model, text = get_model(api, "foreign")
    assert model["architecture"] is None
    assert model["provenance"]["kind"] == "imported" and model["provenance"]["format"] == "onnx"
    assert model["provenance"]["files"]["AtoB"]["name"] == "styliser.onnx"
    assert model["provenance"]["mapping"]["AtoB"]["value_range"] == "-1,1"
    assert model["description"] == "someone's styliser" and model["license"] is None
    assert all(not d["tiled"] and d["tiling"] == "overlap_blending" for d in model["directions"])
    assert "alice" not in text
    with api() as client:  # onnxruntime serves it without a network definition
        served = client.post(
            "/v1/models/foreign/translate?direction=AtoB",
            content=png(),
            headers={"content-type": "image/png"},
        )
    assert served.status_code == 200, served.text


@pytest.mark.usefixtures("provenance_store")
def test_a_trained_model_shows_its_run_step_dataset_and_metrics_but_no_server_path(
    api: ClientFactory,
) -> None:
    model, text = get_model(api, "trained")
    assert model["provenance"] == {
        "kind": "trained",
        "run": "day2night-r6",
        "checkpoint": "step_00000020",
        "step": 20,
        "weights": None,  # exported before runs kept a moving average: not recorded
        "model": "cyclegan",
        "dataset": "day2night",
        "size": 64,
        "config_digest": "0123456789ab",
        "metrics": {
            d: {"n": 4, "psnr": 21.5, "ssim": 0.7, "gain_db": 2.5} for d in ("AtoB", "BtoA")
        },
    }
    assert model["description"] == "Day to night" and model["license"] == "CC-BY-4.0"
    assert model["training"]["run_dir"] == "day2night-r6"  # kept, without the path
    assert model["metrics"]["checkpoint"] == "step_00000020"
    assert model["metrics"]["directions"]["AtoB"]["baseline_psnr"] == 19.0
    assert all(d["tiled"] and d["tiling"] == "shared_statistics" for d in model["directions"])
    assert SECRET not in text


def test_a_model_that_does_not_say_where_it_came_from(api: ClientFactory) -> None:
    model, _ = get_model(api, "tiny")
    assert model["provenance"] is None
    assert model["description"] is None and model["license"] is None
    assert model["distillation"] is None


@pytest.mark.usefixtures("provenance_store")
def test_a_student_names_its_teacher_its_macs_and_how_closely_it_follows(
    api: ClientFactory,
) -> None:
    model, text = get_model(api, "student")
    assert model["distillation"] == {
        "teacher": {"name": "teacher-r9", "kind": "run", "sha256": {"AtoB": TEACHER_SHA}},
        "student": {
            **TINY_ARCH,
            "use_dropout": False,
            "input_nc": 3,
            "output_nc": 3,
            "conv_bias": None,
            "upsample": "transpose",
        },
        "macs": 1_200_000_000,
        "teacher_macs": 24_000_000_000,
        "macs_ratio": 20.0,
        "fidelity": {
            "AtoB": {"psnr_db": 31.24, "identity_psnr_db": 14.81, "images": 40},
            "BtoA": {"psnr_db": 29.96, "identity_psnr_db": 15.02, "images": 40},
        },
    }
    assert SECRET not in text
    for name in ("imported", "trained", "foreign"):
        assert get_model(api, name)[0]["distillation"] is None


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_page_shows_where_the_model_came_from_as_text(
    browser: webdriver.Chrome, model_store: Path, imported_model: Path, tmp_path: Path
) -> None:
    ModelStore(model_store).publish(
        edited_copy(imported_model, tmp_path / "hostile", description=XSS)
    )
    with running_server(service_env(model_store), tmp_path / "api.log") as server:
        browser.get(server.url + "/")
        wait(browser).until(lambda d: d.find_element(By.ID, "model").is_enabled())
        info = browser.find_element(By.ID, "model-info")
        Select(browser.find_element(By.ID, "model")).select_by_value("tiny")
        wait(browser).until(lambda d: "not recorded" in info.text)
        assert "overlapping tiles that share" in info.text
        Select(browser.find_element(By.ID, "model")).select_by_value("hostile")
        wait(browser).until(lambda d: "horse2zebra.pth" in info.text)
        description = info.find_element(By.CSS_SELECTOR, ".description")
        assert description.text == XSS  # shown as text, not as markup
        assert not info.find_elements(By.CSS_SELECTOR, "img, b")
        assert browser.execute_script("return window.__xss") is None
        assert "BSD-3-Clause" in info.text
        assert f"Imported from horse2zebra.pth (sha256 {SHA_A[:12]}…)" in info.text
        assert "architecture resnet_6blocks" in info.text and "norm instance" in info.text
        assert "plain overlapping tiles" in info.text
        assert SECRET not in info.text


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_page_shows_what_a_student_was_distilled_from(
    browser: webdriver.Chrome, model_store: Path, exported_model: Path, tmp_path: Path
) -> None:
    teacher = {"name": "tiny", "kind": "model", "sha256": {"AtoB": TEACHER_SHA}}
    ModelStore(model_store).publish(
        edited_copy(exported_model, tmp_path / "student", distillation=distillation(teacher))
    )
    with running_server(service_env(model_store), tmp_path / "api.log") as server:
        browser.get(server.url + "/")
        wait(browser).until(lambda d: d.find_element(By.ID, "model").is_enabled())
        info = browser.find_element(By.ID, "model-info")
        Select(browser.find_element(By.ID, "model")).select_by_value("tiny")
        wait(browser).until(lambda d: "not recorded" in info.text)
        assert "Distilled from" not in info.text
        Select(browser.find_element(By.ID, "model")).select_by_value("student")
        wait(browser).until(lambda d: "Distilled from" in info.text)
        assert (
            f"Distilled from tiny (sha256 {TEACHER_SHA[:12]}…): 20.0× fewer MACs "
            "(1.2 G per 256x256, teacher 24.0 G), fidelity AtoB 31.2 dB (identity 14.8 dB, "
            "40 images), BtoA 30.0 dB (identity 15.0 dB, 40 images)"
        ) in info.text
