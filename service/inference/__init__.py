"""Inference: one engine, the image path around it, and the micro-batcher in front of it.

Everything here runs inside one process: the embedded API, every Celery worker, the CLI and the
benchmarks all translate through :class:`~service.inference.local_translator.LocalTranslator`
or :class:`~service.inference.engine.Engine` directly. It imports ``service.store`` (to open a
verified model) and nothing above it.
"""
