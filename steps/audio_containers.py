"""Is an audio file whole? Header checks that catch a file cut short.

libsndfile shrinks a WAV's frame count to the bytes present and reads an Ogg up to its last whole
page, so a file cut in half decodes as a good, shorter recording. `inspect_container` reads only
headers (seeking, never the whole file) and compares what the container declares with the bytes
present:

- WAV (RIFF, RIFX, WAVE_FORMAT_EXTENSIBLE), RF64/BW64 (64-bit size in `ds64`), Sony Wave64: the
  `data` chunk's size against the bytes after it. A chunk before `data` that runs past the end, or
  no `data` chunk at all, is a cut header. Streaming writers that cannot seek back leave the size
  as 0xFFFFFFFF (ffmpeg, sox), 0x7FFFFFFF (arecord) or 0: those mean "up to the end of the file"
  (as libsndfile reads them) and are never called truncated; a cut in such a file cannot be seen.
- AIFF/AIFC: the `SSND` chunk's size; AU/SND: the data size field (0xFFFFFFFF = unknown).
- FLAC: every metadata block must be whole; STREAMINFO's total sample count is returned in
  `declared_frames` so the decoder can compare it with what it decoded (0 = unknown).
- Ogg (Vorbis, Opus, FLAC in Ogg): every page must be whole and every logical stream must end with
  an end-of-stream page; a file cut on a page boundary lacks that page.
- MP3 (MPEG audio, with or without ID3v2/ID3v1/APE tags): the last frame must be whole, and a
  Xing/Info or VBRI header's frame count must be reached. A file without such a header, cut on a
  frame boundary, cannot be seen.
- MP4/M4A: every top-level box must be whole (a cut lands in `mdat`, or `moov` when it comes last).
Other containers libsndfile reads (CAF, W64-like rarities, NIST, IRCAM, ...) are not checked.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Optional

# RIFF data sizes that streaming writers leave in place of the real one: not a truncation
STREAMED_DATA_SIZES = (0, 0xFFFFFFFF, 0x7FFFFFFF)


@dataclass(frozen=True)
class ContainerInfo:
    kind: str  # wav, rf64, w64, aiff, au, flac, ogg, mp3, mp4, or unknown
    truncated: Optional[str] = None  # why the file is cut short, or None
    declared_frames: Optional[int] = None  # frames the header promises (FLAC STREAMINFO), to check after decoding


def inspect_container(f: BinaryIO) -> ContainerInfo:
    """Identify the container of a seekable binary file and check it is whole (see the module doc).
    Leaves the file position at 0."""
    size = f.seek(0, 2)
    head = _read_at(f, 0, 16)
    try:
        if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
            return _riff(f, size, big_endian=head[:4] == b"RIFX", kind="wav")
        if head[:4] in (b"RF64", b"BW64") and head[8:12] == b"WAVE":
            return _riff(f, size, big_endian=False, kind="rf64")
        if head[:4] == b"riff" and head[4:16] == _W64_TAIL:
            return _w64(f, size)
        if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            return _aiff(f, size)
        if head[:4] == b".snd":
            return _au(f, size)
        if head[:4] == b"OggS":
            return _ogg(f, size)
        if head[4:8] == b"ftyp":
            return _mp4(f, size)
        start = _id3v2_end(head)
        if _read_at(f, start, 4) == b"fLaC":
            return _flac(f, size, start)
        if start or _frame_header(_read_at(f, 0, 4)) is not None:
            return _mp3(f, size, start)
        return ContainerInfo("unknown")
    finally:
        f.seek(0)


def _read_at(f: BinaryIO, pos: int, n: int) -> bytes:
    f.seek(pos)
    return f.read(n)


def _cut(kind: str, what: str, declared: int, present: int, unit: str = "bytes") -> ContainerInfo:
    return ContainerInfo(kind, truncated=f"{what} declares {declared} {unit}, only {present} are present: "
                                         "the file was cut short")


# ---- RIFF family --------------------------------------------------------------------------------


def _riff(f: BinaryIO, size: int, big_endian: bool, kind: str) -> ContainerInfo:
    u32 = ">I" if big_endian else "<I"
    pos, ds64_data = 12, None
    while pos + 8 <= size:
        header = _read_at(f, pos, 8)
        chunk_id, chunk_size = header[:4], struct.unpack(u32, header[4:])[0]
        if chunk_id == b"ds64":
            body = _read_at(f, pos + 8, 16)
            if len(body) == 16:
                ds64_data = struct.unpack("<Q", body[8:16])[0]
        if chunk_id == b"data":
            present = size - pos - 8
            if kind == "rf64" and chunk_size == 0xFFFFFFFF and ds64_data is not None:
                declared = ds64_data
            elif chunk_size in STREAMED_DATA_SIZES:
                return ContainerInfo(kind)  # a streamed writer's placeholder: data runs to the end
            else:
                declared = chunk_size
            if present < declared:
                return _cut(kind, "the data chunk", declared, present)
            return ContainerInfo(kind)
        end = pos + 8 + chunk_size + (chunk_size & 1)
        if end > size:
            return _cut(kind, f"the {chunk_id.decode('latin-1')!r} chunk", chunk_size, size - pos - 8)
        pos = end
    return ContainerInfo(kind, truncated=f"the file ends after {size} bytes, before its data chunk: "
                                         "the file was cut short")


_W64_TAIL = bytes.fromhex("2e91cf11a5d628db04c10000")  # the rest of the 'riff' GUID


def _w64(f: BinaryIO, size: int) -> ContainerInfo:
    pos = 40  # riff GUID + size + wave GUID
    while pos + 24 <= size:
        header = _read_at(f, pos, 24)
        chunk_size = struct.unpack("<Q", header[16:24])[0]  # includes the 24-byte header
        if header[:4] == b"data":
            if pos + chunk_size > size:
                return _cut("w64", "the data chunk", chunk_size - 24, size - pos - 24)
            return ContainerInfo("w64")
        if chunk_size < 24 or pos + chunk_size > size:
            return _cut("w64", f"the {header[:4].decode('latin-1')!r} chunk", chunk_size, size - pos)
        pos += (chunk_size + 7) // 8 * 8
    return ContainerInfo("w64", truncated="the file ends before its data chunk: the file was cut short")


def _aiff(f: BinaryIO, size: int) -> ContainerInfo:
    pos = 12
    while pos + 8 <= size:
        header = _read_at(f, pos, 8)
        chunk_id, chunk_size = header[:4], struct.unpack(">I", header[4:])[0]
        if pos + 8 + chunk_size > size:
            return _cut("aiff", f"the {chunk_id.decode('latin-1')!r} chunk", chunk_size, size - pos - 8)
        if chunk_id == b"SSND":
            return ContainerInfo("aiff")
        pos += 8 + chunk_size + (chunk_size & 1)
    return ContainerInfo("aiff", truncated="the file ends before its SSND chunk: the file was cut short")


def _au(f: BinaryIO, size: int) -> ContainerInfo:
    header = _read_at(f, 0, 12)
    if len(header) < 12:
        return ContainerInfo("au", truncated="the header is cut short")
    offset, data_size = struct.unpack(">II", header[4:12])
    if data_size != 0xFFFFFFFF and size - offset < data_size:
        return _cut("au", "the header", data_size, size - offset)
    return ContainerInfo("au")


# ---- FLAC ---------------------------------------------------------------------------------------


def _flac(f: BinaryIO, size: int, start: int) -> ContainerInfo:
    pos, total = start + 4, None
    while True:
        header = _read_at(f, pos, 4)
        if len(header) < 4:
            return ContainerInfo("flac", truncated="the file ends inside its metadata: the file was cut short")
        last, block_type = header[0] & 0x80, header[0] & 0x7F
        length = int.from_bytes(header[1:4], "big")
        if pos + 4 + length > size:
            return _cut("flac", f"metadata block {block_type}", length, size - pos - 4)
        if block_type == 0:
            info = _read_at(f, pos + 4, 18)
            total = ((info[13] & 0x0F) << 32) | struct.unpack(">I", info[14:18])[0]
        pos += 4 + length
        if last:
            break
    if pos >= size and total:
        return ContainerInfo("flac", truncated=f"STREAMINFO declares {total} samples but the file ends after "
                                               "its metadata: the file was cut short")
    return ContainerInfo("flac", declared_frames=total or None)


# ---- Ogg ----------------------------------------------------------------------------------------


def _ogg(f: BinaryIO, size: int) -> ContainerInfo:
    pos, open_streams, seen = 0, {}, False
    while pos < size:
        header = _read_at(f, pos, 27)
        if header[:4] != b"OggS":
            break  # trailing bytes that are not a page: left to the decoder
        if len(header) < 27:
            return ContainerInfo("ogg", truncated=f"the last Ogg page header (at byte {pos}) is cut short: "
                                                  "the file was cut short")
        flags, granule, serial, segments = header[5], struct.unpack("<q", header[6:14])[0], header[14:18], header[26]
        lacing = _read_at(f, pos + 27, segments)
        body = sum(lacing)
        end = pos + 27 + segments + body
        if len(lacing) < segments or end > size:
            return _cut("ogg", f"the last Ogg page (at byte {pos})", 27 + segments + body, size - pos)
        seen = True
        if flags & 0x04:
            open_streams.pop(serial, None)
        else:
            open_streams[serial] = granule
        pos = end
    if seen and open_streams:
        granule = next(iter(open_streams.values()))
        return ContainerInfo("ogg", truncated=f"the Ogg stream has no end-of-stream page (the last page present "
                                              f"ends at granule position {granule}): the file was cut short")
    return ContainerInfo("ogg")


# ---- MPEG audio (MP3) ---------------------------------------------------------------------------


def _id3v2_end(head: bytes) -> int:
    if head[:3] != b"ID3" or len(head) < 10:
        return 0
    syncsafe = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
    return 10 + syncsafe + (10 if head[5] & 0x10 else 0)


_BITRATES = {  # kbit/s by (MPEG-1?, layer)
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _frame_header(b: bytes) -> Optional[tuple[int, int]]:
    """(frame length in bytes, Xing/Info offset) of an MPEG audio frame header, or None."""
    if len(b) < 4 or b[0] != 0xFF or (b[1] & 0xE0) != 0xE0:
        return None
    version, layer_bits = (b[1] >> 3) & 3, (b[1] >> 1) & 3
    bitrate_index, rate_index, padding = b[2] >> 4, (b[2] >> 2) & 3, (b[2] >> 1) & 1
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None  # reserved values, or free format (no length in the header)
    layer, mpeg1 = 4 - layer_bits, version == 3
    bitrate, rate = _BITRATES[(mpeg1, layer)][bitrate_index] * 1000, _RATES[version][rate_index]
    if layer == 1:
        length = (12 * bitrate // rate + padding) * 4
    else:
        length = (144 if mpeg1 or layer == 2 else 72) * bitrate // rate + padding
    mono = (b[3] >> 6) == 3
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    return length, 4 + side_info


def _mp3(f: BinaryIO, size: int, start: int) -> ContainerInfo:
    end = size
    if end - 128 >= start and _read_at(f, end - 128, 3) == b"TAG":
        end -= 128
    footer = _read_at(f, end - 32, 32) if end - 32 >= start else b""
    if footer[:8] == b"APETAGEX":
        tag_size, flags = struct.unpack("<II", footer[12:20])
        end -= tag_size + (32 if flags & 0x80000000 else 0)
    pos, frames, declared = start, 0, None
    while pos + 4 <= end:
        header = _read_at(f, pos, 4)
        parsed = _frame_header(header)
        if parsed is None:
            break  # not a frame (junk, or a tag we do not know): left to the decoder
        length, xing_at = parsed
        if pos + length > end:
            return _cut("mp3", f"the last MPEG frame (at byte {pos})", length, end - pos)
        if frames == 0 and declared is None:
            declared = _vbr_frame_count(_read_at(f, pos, min(length, 200)), xing_at)
            if declared is not None:
                pos += length  # the Xing/Info/VBRI frame itself holds no audio
                continue
        frames += 1
        pos += length
    if 0 < end - pos < 4 and _read_at(f, pos, 1) == b"\xff":
        return ContainerInfo("mp3", truncated=f"the file ends inside an MPEG frame header (at byte {pos}): "
                                              "the file was cut short")
    if declared is not None and frames < declared:
        return _cut("mp3", "the Xing/Info header", declared, frames, unit="frames")
    return ContainerInfo("mp3")


def _vbr_frame_count(frame: bytes, xing_at: int) -> Optional[int]:
    tag = frame[xing_at:xing_at + 4]
    if tag in (b"Xing", b"Info") and len(frame) >= xing_at + 12:
        flags = struct.unpack(">I", frame[xing_at + 4:xing_at + 8])[0]
        return struct.unpack(">I", frame[xing_at + 8:xing_at + 12])[0] if flags & 1 else None
    if frame[36:40] == b"VBRI" and len(frame) >= 54:
        return struct.unpack(">I", frame[50:54])[0]
    return None


# ---- MP4 / M4A ----------------------------------------------------------------------------------


def _mp4(f: BinaryIO, size: int) -> ContainerInfo:
    pos = 0
    while pos + 8 <= size:
        header = _read_at(f, pos, 16)
        box_size, box_type = struct.unpack(">I", header[:4])[0], header[4:8].decode("latin-1")
        header_size = 8
        if box_size == 1:
            if len(header) < 16:
                return ContainerInfo("mp4", truncated=f"the {box_type!r} box header is cut short")
            box_size, header_size = struct.unpack(">Q", header[8:16])[0], 16
        elif box_size == 0:
            return ContainerInfo("mp4")  # the last box runs to the end of the file
        if box_size < header_size:
            return ContainerInfo("mp4")  # not a box: left to the decoder
        if pos + box_size > size:
            return _cut("mp4", f"the {box_type!r} box", box_size, size - pos)
        pos += box_size
    if 0 < size - pos:
        return ContainerInfo("mp4", truncated=f"the file ends inside a box header (at byte {pos}): "
                                              "the file was cut short")
    return ContainerInfo("mp4")
