"""Small deterministic media files for the demo tasks, written by hand with the standard library: a PNG
(``zlib``), a WAV (``wave``) and an animated GIF (its LZW codes kept at 9 bits by a clear code every few
pixels: larger than a real encoder's output, and any decoder reads it)."""

from __future__ import annotations

import io
import math
import struct
import wave
import zlib

#: Frames per second of the demo GIF, and the sample rate of the demo WAV.
GIF_FPS = 10
WAV_RATE_HZ = 22050
#: Literal codes between two GIF clear codes: the code table stays under 512 entries, so codes stay 9 bits wide.
_GIF_CODES_PER_CLEAR = 250


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _pixel(x: int, y: int, width: int, height: int, seed: int) -> tuple[int, int, int]:
    """A colour pattern: gradients and rings that change with ``seed``."""
    ring = int(127 + 127 * math.sin(math.hypot(x - width / 2, y - height / 2) / 6 + seed))
    return (255 * x // max(width - 1, 1), ring, 255 * y // max(height - 1, 1))


def make_png(width: int, height: int, seed: int = 0) -> bytes:
    """An RGB PNG of ``width`` x ``height`` pixels."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows.extend(_pixel(x, y, width, height, seed))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(bytes(rows), 6)),
            _png_chunk(b"IEND", b""),
        )
    )


def make_wav(duration_s: float, frequency_hz: float = 440.0) -> bytes:
    """A mono 16-bit WAV: a tone of ``frequency_hz`` that fades out over ``duration_s``."""
    frames = round(duration_s * WAV_RATE_HZ)
    samples = (
        int(20000 * (1 - i / max(frames, 1)) * math.sin(2 * math.pi * frequency_hz * i / WAV_RATE_HZ))
        for i in range(frames)
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(WAV_RATE_HZ)
        out.writeframes(struct.pack(f"<{frames}h", *samples))
    return buffer.getvalue()


def _gif_palette() -> bytes:
    """256 colours: 6 x 6 x 6 levels of red, green and blue, then greys."""
    colours = [(r * 51, g * 51, b * 51) for r in range(6) for g in range(6) for b in range(6)]
    colours += [(level * 6, level * 6, level * 6) for level in range(256 - len(colours))]
    return b"".join(bytes(colour) for colour in colours)


def _lzw_9bit(indexes: bytes) -> bytes:
    """GIF image data (minimum code size 8) for ``indexes``: literal codes only, a clear code before each run."""
    clear, end = 256, 257
    codes: list[int] = []
    for start in range(0, len(indexes), _GIF_CODES_PER_CLEAR):
        codes.append(clear)
        codes.extend(indexes[start : start + _GIF_CODES_PER_CLEAR])
    codes.append(end)
    packed = bytearray()
    bits, count = 0, 0
    for code in codes:
        bits |= code << count
        count += 9
        while count >= 8:
            packed.append(bits & 0xFF)
            bits >>= 8
            count -= 8
    if count:
        packed.append(bits & 0xFF)
    blocks = b"".join(bytes([len(packed[i : i + 255])]) + packed[i : i + 255] for i in range(0, len(packed), 255))
    return b"\x08" + blocks + b"\x00"


def make_gif(width: int, height: int, frames: int) -> bytes:
    """An animated GIF, looping, of a disc moving across a gradient."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF7, 0, 0) + _gif_palette())
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    delay_cs = 100 // GIF_FPS
    for frame in range(frames):
        cx = width * (frame + 0.5) / frames
        pixels = bytearray()
        for y in range(height):
            for x in range(width):
                inside = math.hypot(x - cx, y - height / 2) < height / 4
                pixels.append(215 if inside else 36 * (5 * y // max(height, 1)) + 5 * x // max(width, 1))
        out += b"\x21\xf9\x04\x04" + struct.pack("<H", delay_cs) + b"\x00\x00"
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
        out += _lzw_9bit(bytes(pixels))
    out += b"\x3b"
    return bytes(out)
