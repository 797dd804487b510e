"""The serving side: inference engine, REST API, batching, Celery workers, bulk jobs.

Built in the export/serving issues; it imports `models` (networks and the image convention in
`models.imaging`) and never `training`.
"""
