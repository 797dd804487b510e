"""A network this project does not define, published from its ONNX file and served everywhere.

The issue's "done when": a small U-shaped net (convolutions down, transposed convolutions up
with skip concatenations, a sigmoid: it takes and gives [0, 1], sides multiples of 4) is
exported to ONNX here, published with `unpaired export --from-onnx`, and one real photo is
translated by the CLI, the embedded API, the distributed API (Redis and a real worker) and a
bulk job in each mode: every answer is the same PNG bytes, and the picture is the torch
network's own output within one level per channel.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

from cli.local_redis import LocalRedis
from tests.cli.test_cli import assert_user_error, unpaired
from tests.service.jobs_http import outputs, wait_for_job
from tests.service.servers import running_server, running_workers, service_env, wait_for_workers
from tests.training.test_onnx_import import save, two_inputs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

URL = "/v1/models/foreign/translate"


class TinyUNet(nn.Module):
    """Two stride-2 convolutions down, two transposed up, skips concatenated, sigmoid out."""

    def __init__(self) -> None:
        super().__init__()
        self.inc = nn.Conv2d(3, 8, 3, padding=1)
        self.down1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(16, 16, 4, stride=2, padding=1)
        self.up1 = nn.ConvTranspose2d(32, 8, 4, stride=2, padding=1)
        self.out = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) in [0, 1]
        a = torch.relu(self.inc(x))  # (N, 8, H, W)
        b = torch.relu(self.down1(a))  # (N, 16, H/2, W/2)
        c = torch.relu(self.down2(b))  # (N, 16, H/4, W/4)
        u = torch.relu(self.up2(c))  # (N, 16, H/2, W/2)
        u = torch.relu(self.up1(torch.cat([u, b], 1)))  # (N, 8, H, W)
        return torch.sigmoid(self.out(torch.cat([u, a], 1)))


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TinyUNet]:
    """The net exported to ONNX (names and dynamic axes its own) and published by the CLI."""
    root = tmp_path_factory.mktemp("foreign")
    torch.manual_seed(0)
    net = TinyUNet().eval()
    dynamic = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC}
    program = torch.onnx.export(
        net,
        (torch.rand(2, 3, 64, 68),),
        dynamo=True,
        input_names=["image"],
        output_names=["prediction"],
        dynamic_shapes=({**dynamic, 3: torch.export.Dim.DYNAMIC},),
        external_data=False,
    )
    assert program is not None
    program.save(str(root / "unet.onnx"))
    store = root / "store"
    result = unpaired(
        "export", "--from-onnx", root / "unet.onnx", "--value-range", "0,1", "--name", "foreign",
        "--store", store, "--license", "MIT", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "AtoB: value_range 0,1, channels 3, input image, output prediction" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["directions"] == ["AtoB"] and summary["parity"]["AtoB"]["fp32_max_abs"] <= 1e-4
    mapping = summary["source"]["mapping"]["AtoB"]
    assert (mapping["multiple"], mapping["multiple_from"]) == (4, "probed")
    return store, net


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((256, 256), Image.Resampling.BICUBIC).save(path)
    return path


def torch_output(net: TinyUNet, path: Path) -> np.ndarray:
    """The source network's own answer on the photo, as uint8 (H, W, 3)."""
    rgb = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
    with torch.no_grad():
        y = net(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    return np.round(y * 255).astype(np.uint8)


def job_output(url: str, photo: Path) -> bytes:
    """A bulk job of the one photo, run to the end; its one output."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(photo, photo.name)
    submitted = httpx.post(
        f"{url}/v1/jobs",
        data={"model": "foreign"},
        files={"archive": ("in.zip", archive.getvalue(), "application/zip")},
        timeout=60,
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert wait_for_job(url, job_id, timeout=120)["state"] == "succeeded"
    (output,) = outputs(url, job_id).values()
    return output


def translated(url: str, photo: Path) -> bytes:
    response = httpx.post(
        url + URL, content=photo.read_bytes(), headers={"content-type": "image/png"}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.content


def test_a_foreign_graph_gives_the_same_bytes_everywhere_and_the_networks_picture(
    foreign: tuple[Path, TinyUNet],
    astronaut: Path,
    redis_server: LocalRedis,
    tmp_path: Path,
) -> None:
    store, net = foreign
    cli = unpaired("translate", "foreign", astronaut, "--out", tmp_path / "cli", "--store", store)
    assert cli.returncode == 0, cli.stderr
    expected = (tmp_path / "cli" / "astronaut.png").read_bytes()
    picture = np.asarray(Image.open(io.BytesIO(expected)).convert("RGB"))
    assert np.abs(picture.astype(int) - torch_output(net, astronaut)).max() <= 1
    answers = {}
    with running_server(service_env(store), tmp_path / "embedded.log") as server:
        answers["embedded"] = translated(server.url, astronaut)
        answers["embedded job"] = job_output(server.url, astronaut)
    env = service_env(store, broker_url=redis_server.url)
    with (
        running_workers(env, tmp_path, count=1),
        running_server(env, tmp_path / "distributed.log", ready=False) as server,
    ):
        wait_for_workers(server.url, 1)
        answers["distributed"] = translated(server.url, astronaut)
        answers["distributed job"] = job_output(server.url, astronaut)
    assert {mode: answer == expected for mode, answer in answers.items()} == dict.fromkeys(
        answers, True
    )


def test_a_graph_that_is_not_image_to_image_is_refused_and_nothing_is_published(
    tmp_path: Path,
) -> None:
    graph = save(two_inputs(), tmp_path / "two.onnx")
    store = tmp_path / "store"
    result = unpaired("export", "--from-onnx", graph, "--name", "bad", "--store", store)
    assert_user_error(result, "the graph has 2 inputs (x, mask); an image-to-image graph takes one")
    assert not store.exists() or not any(store.iterdir())
