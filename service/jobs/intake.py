"""Turning what a caller submitted into a job's items: an archive, several files, or a folder.

Uploaded images are written under the job's own ``inputs/`` folder, under names checked here
(archive members by :mod:`service.jobs.archives`, which never extracts anything itself), so nothing
lands outside it. Each item's output keeps its input's relative path with the output format's
suffix, as ``unpaired translate`` names them; two inputs that would write the same output
(``a.png`` and ``a.jpg``) are refused as one failed item, never overwritten.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from service.errors import IntakeError
from service.files import OutputNames, output_name
from service.inference.videos.formats import is_video_name
from service.jobs.archives import ArchiveLimits, Member, Rejected, read_archive
from service.jobs.records import Item, ItemError
from service.jobs.storage import Storage

__all__ = ["Intake"]


@dataclass
class Intake:
    """Collects a job's items; inputs are written to `inputs` as they arrive."""

    inputs: Storage
    suffix: str  # of image outputs (".png")
    max_items: int
    video_suffix: str = ".mp4"  # of video outputs
    items: list[Item] = field(default_factory=list)
    refused: list[ItemError] = field(default_factory=list)
    _inputs: OutputNames = field(default_factory=OutputNames)  # input names seen
    _outputs: OutputNames = field(default_factory=OutputNames)  # output name -> its input

    @property
    def total(self) -> int:
        return len(self.items) + len(self.refused)

    def _count(self) -> None:
        if self.total >= self.max_items:
            raise IntakeError(
                f"more than {self.max_items} images in one job (UNPAIRED_MAX_JOB_ITEMS)",
                too_large=True,
            )

    def refuse(self, name: str, reason: str) -> None:
        self._count()
        self.refused.append(ItemError(name, reason))

    def _claim(self, name: str) -> str | None:
        """Why `name` cannot be an item here (a duplicate input or output), or None."""
        same = self._inputs.claim(name, name)
        if same is not None:
            return f"duplicate name (same as {same})"
        output = self.output_for(name)
        writer = self._outputs.claim(output, name)
        if writer is not None:
            return f"output {output} would also be written from {writer}"
        return None

    def add_upload(self, name: str, data: bytes, write: bool = True) -> None:
        """One image under `name` (already a safe relative name)."""
        self._count()
        problem = self._claim(name) or ("empty file" if not data else None)
        if problem is not None:
            self.refused.append(ItemError(name, problem))
            return
        if write:
            self.inputs.write_atomic(data, name)
        self.items.append(Item(name, self.output_for(name)))

    def add_archive(self, source: BinaryIO, limits: ArchiveLimits) -> None:
        """Every member of a zip or tar; hostile entries become failed items."""
        for entry in read_archive(source, limits):
            if isinstance(entry, Rejected):
                self.refuse(entry.name, entry.reason)
            else:
                self._add_member(entry)

    def _add_member(self, member: Member) -> None:
        self.add_upload(member.name, member.data)

    def add_existing(self, names: Iterable[str]) -> None:
        """Images already in place (a source folder): nothing is copied."""
        for name in names:
            self._count()
            problem = self._claim(name)
            if problem is not None:
                self.refused.append(ItemError(name, problem))
            else:
                self.items.append(Item(name, self.output_for(name)))

    def output_for(self, name: str) -> str:
        """A video's output is a clip, an image's an image (each in its configured format)."""
        return output_name(name, self.video_suffix if is_video_name(name) else self.suffix)

    def chunks(self, size: int) -> Iterator[list[Item]]:
        """Images `size` at a time; each video a chunk of its own (a worker each)."""
        images = [item for item in self.items if not is_video_name(item.name)]
        for start in range(0, len(images), size):
            yield images[start : start + size]
        for item in self.items:
            if is_video_name(item.name):
                yield [item]
