"""``/examples``: real photos to try a model on, from the server's installed packages.

The web page offers them as one-click inputs, so a first look at a model is a real photo, not
whatever a newcomer has at hand. They are the page's own resources, open like the page (an
``<img>`` sends no API key) and outside the API's schema. They come from
:mod:`models.sample_photos` (scikit-image's sample data); a server without scikit-image (the
torch-free API image) lists none.
"""

from __future__ import annotations

import io
from functools import cache

from fastapi import APIRouter, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from models.sample_photos import available, load_photo, photo_size
from service.api.schemas import Example, ExampleList
from service.errors import ExampleNotFound

router = APIRouter(prefix="/examples", include_in_schema=False)


@router.get("")
async def list_examples() -> ExampleList:
    photos = await run_in_threadpool(lambda: [(p, photo_size(p.name)) for p in available()])
    return ExampleList(
        examples=[
            Example(name=p.name, title=p.title, width=w, height=h, url=f"/examples/{p.name}")
            for p, (w, h) in photos
        ]
    )


@cache
def _png(name: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(load_photo(name)).save(buffer, format="PNG")
    return buffer.getvalue()


@router.get("/{name}", response_class=Response)
async def get_example(name: str) -> Response:
    names = [p.name for p in available()]
    if name not in names:
        raise ExampleNotFound(f"no example {name!r}; this server has: {', '.join(names) or 'none'}")
    body = await run_in_threadpool(_png, name)
    return Response(body, media_type="image/png", headers={"Cache-Control": "max-age=86400"})
