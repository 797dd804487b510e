"""Bulk jobs: many images through one model, chunked, durable, resumable."""
