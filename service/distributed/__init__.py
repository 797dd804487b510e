"""Distributed mode: Celery on Redis between the API and any number of GPU workers.

The API side publishes requests (:mod:`.remote_translator`) and awaits their results on one
pub/sub connection (:mod:`.result_waiter`); workers (:mod:`.worker`) run the interactive task
(:mod:`.interactive_task`) and bulk-job chunks (:mod:`.bulk_task`) through the same in-process
translator as embedded mode. It imports ``service.jobs`` (a worker runs job chunks) and
``service.inference``; nothing below imports it.
"""
