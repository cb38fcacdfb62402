"""Label Studio's brush format: the RLE of brush masks, pre-annotations, and the
labeling config of a chip export (pure NumPy, no I/O).

Label Studio stores a brush mask as the run-length code of its RGBA pixels
(thi.ng's ``rle-pack``): a 32-bit value count, a 5-bit word size minus one, four
4-bit run-length field sizes minus one, then chunks. A chunk is a repeat flag bit, a
2-bit index into the field sizes, a run length minus one in that many bits, then one
word (repeat: the value of the whole run) or that many words (literal). Bits are
packed most significant first and the code is zero-padded to whole bytes. The mask is
the alpha channel: a painted pixel has alpha 255.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from rasteret.errors import ConfigurationError

#: The name of the ``<Image>`` tag the tasks' pictures are shown in.
IMAGE_TAG = "image"
#: The run-length field sizes of the code we write (those Label Studio writes).
RLE_SIZES = (3, 4, 8, 16)
_WORD_BITS = 8
_MAX_RUN = 1 << RLE_SIZES[-1]


def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of a 2-D mask (True or non-zero: painted).

    Args:
        mask: ``(height, width)``; any non-zero pixel is painted.

    Returns:
        The code as a list of byte values, as Label Studio's ``value.rle``.

    Raises:
        ConfigurationError: ``mask`` is not 2-D.
    """
    if mask.ndim != 2:
        raise ConfigurationError(f"a brush mask is 2-D (height, width), got shape {mask.shape}")
    # Every pixel is four equal RGBA words: 0 or 255.
    values = np.repeat(np.where(mask.ravel() != 0, 255, 0).astype(np.uint8), 4)
    bits = [f"{values.size:032b}", f"{_WORD_BITS - 1:05b}",
            *(f"{size - 1:04b}" for size in RLE_SIZES)]
    if values.size:
        change = np.flatnonzero(values[1:] != values[:-1]) + 1
        starts = np.concatenate(([0], change))
        lengths = np.diff(np.concatenate((starts, [values.size])))
        for start, length in zip(starts.tolist(), lengths.tolist()):
            word = f"{int(values[start]):08b}"
            while length > 0:
                run = min(length, _MAX_RUN)
                length -= run
                if run == 1:
                    bits.append("0" + "00" + "0" * RLE_SIZES[0] + word)
                    continue
                index = next(i for i, size in enumerate(RLE_SIZES) if run - 1 < 1 << size)
                bits.append(f"1{index:02b}{run - 1:0{RLE_SIZES[index]}b}{word}")
    code = "".join(bits)
    code += "0" * (-len(code) % 8)
    return list(int(code, 2).to_bytes(len(code) // 8, "big")) if code else []


def decode_brush_values(rle: Sequence[int]) -> np.ndarray:
    """Decode any ``rle-pack`` code into its flat values (``uint8``/``16``/``32``).

    Raises:
        ConfigurationError: The code is truncated or malformed.
    """
    data = np.asarray(rle, dtype=np.int64)
    if data.size < 7 or not ((data >= 0) & (data <= 255)).all():
        raise ConfigurationError(
            "not a Label Studio brush RLE: expected a list of byte values with a 7-byte "
            "header (export the project as JSON, brush results carry value.rle)")
    bits = "".join(np.unpackbits(data.astype(np.uint8)).astype("U1"))
    position = 0

    def read(count: int) -> int:
        nonlocal position
        if position + count > len(bits):
            raise ConfigurationError("a Label Studio brush RLE is truncated")
        value = int(bits[position : position + count], 2) if count else 0
        position += count
        return value

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8 if word <= 8 else np.uint16 if word <= 16 else np.uint32)
    i = 0
    while i < num:
        repeat = read(1)
        end = min(num, i + 1 + read(sizes[read(2)]))
        if repeat:
            out[i:end] = read(word)
        else:
            for j in range(i, end):
                out[j] = read(word)
        i = end
    return out


def decode_brush_rle(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """The painted pixels of a Label Studio brush RLE as a boolean ``(height, width)``.

    Raises:
        ConfigurationError: The code is malformed or does not hold
            ``height * width`` RGBA pixels.
    """
    values = decode_brush_values(rle)
    if values.size != height * width * 4:
        raise ConfigurationError(
            f"a brush RLE holds {values.size} values, not {height}x{width} RGBA pixels: "
            "original_width/original_height do not match the chip")
    return np.asarray(values.reshape(height, width, 4)[:, :, 3] > 0)


def brush_results(mask: np.ndarray, classes: Mapping[int, str], *, from_name: str,
                  to_name: str = IMAGE_TAG) -> list[dict[str, Any]]:
    """Label Studio ``brushlabels`` results, one per class present in ``mask``.

    Args:
        mask: ``(height, width)`` class values.
        classes: Class value -> label name; values not listed (e.g. background or
            nodata) get no result.
        from_name: The ``<BrushLabels>`` tag's name.
        to_name: The ``<Image>`` tag's name.
    """
    height, width = mask.shape
    results = []
    for value in np.unique(mask).tolist():
        if value not in classes:
            continue
        results.append({
            "id": f"{from_name}-{value}",
            "type": "brushlabels",
            "from_name": from_name,
            "to_name": to_name,
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": {"format": "rle", "rle": encode_brush_rle(mask == value),
                      "brushlabels": [classes[value]]},
        })
    return results


def labeling_config(controls: Mapping[str, Mapping[int, str]]) -> str:
    """A Label Studio labeling config: the chip image and one ``<BrushLabels>`` per
    label band, listing its class names.

    Args:
        controls: Label band (the tag's name) -> class value -> label name.
    """
    lines = ["<View>", f"  <Image name={quoteattr(IMAGE_TAG)} value=\"$image\" zoom=\"true\"/>"]
    for name, classes in controls.items():
        lines.append(f"  <BrushLabels name={quoteattr(name)} toName={quoteattr(IMAGE_TAG)}>")
        lines += [f"    <Label value={quoteattr(label)}/>" for label in classes.values()]
        lines.append("  </BrushLabels>")
    lines.append("</View>")
    return "\n".join(lines) + "\n"
