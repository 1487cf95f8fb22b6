"""Streaming reads of zstandard-compressed JSON lines (`.jsonl.zstd`, `.jsonl.zst`), as Common
Crawl publishes Nemotron-CC.

Decompression is streamed frame by frame (a file may hold several frames), so memory stays
bounded by one chunk and one line. A file that ends inside a frame (a truncated download) or that
is not zstandard data raises an error (steps.sharding turns it into a ValueError naming the file); zstandard's own stream reader would
return the truncated text silently.

    with fs.open(path, "rb") as raw:
        for line in iter_lines(raw, path): ...   # steps.sharding.iter_record_batches reads .jsonl.zstd so
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

ZSTD_SUFFIXES = (".zstd", ".zst")
CHUNK_BYTES = 1 << 20


def is_zstd(path: str) -> bool:
    return path.endswith(ZSTD_SUFFIXES)


def zstd_errors() -> tuple[type[BaseException], ...]:
    """The exceptions zstandard raises on bad data (for callers that turn them into ValueError)."""
    import zstandard

    return (zstandard.ZstdError,)


def iter_decompressed(raw: BinaryIO, where: str, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Decompressed blocks of the zstandard stream `raw`; EOFError naming `where` if the input
    ends inside a frame."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    frame = None
    while True:
        data = raw.read(chunk)
        if not data:
            break
        while data:
            if frame is None:
                frame = dctx.decompressobj()
            out = frame.decompress(data)
            if out:
                yield out
            if frame.eof:  # the frame ended; what follows starts the next one
                data, frame = frame.unused_data, None
            else:
                data = b""
    if frame is not None:
        raise EOFError(f"{where}: the zstandard data ends inside a frame (truncated file)")


def iter_lines(raw: BinaryIO, where: str, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The lines (without the newline) of the zstandard stream `raw`."""
    pending = b""
    for block in iter_decompressed(raw, where, chunk):
        pending += block
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        yield pending
