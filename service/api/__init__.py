"""The REST API: :func:`create_app` builds the FastAPI application (see ``app.py``)."""

from service.api.app import create_app

__all__ = ["create_app"]
