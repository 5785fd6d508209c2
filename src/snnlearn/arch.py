"""Architecture strings, e.g. ``784-400-10``, ``160x250-4-4-2``, ``15C5-P2-40C5-P2-300-10``,
``28x28-40C5-P2-1000-10`` or ``2x34x34-12C5-P2-64C5-P2-10``.

Tokens, separated by ``-``:

* ``N`` (integer): a fully connected layer of N neurons, or, as the first token, a flat input size
  (see below);
* ``HxW`` / ``CxHxW`` as the first token: the input shape;
* ``<out>C<k>`` with optional ``p<pad>`` / ``s<stride>``: a convolution, e.g. ``32C5p2``;
* ``P<k>`` (max/sum pooling, kernel = stride = k) or ``A<k>`` (average pooling);
* ``D<p>`` dropout with probability p, e.g. ``D0.2``.

The input token is optional: when the string starts with a layer, the dataset's shape is used.
A leading integer is read without ambiguity, given the data's input size n (784 on MNIST):

* equal to n: the input (``784-400-10`` is 784 inputs, 400 hidden, 10 outputs; ``784-10`` is one
  layer);
* smaller than n: the first layer (``400-400-10`` is two hidden layers of 400 on MNIST);
* larger than n: an error, since it is most likely a mistyped input size (``785-10`` on MNIST). A
  first layer wider than the input follows an explicit input: ``784-1000-10`` or ``28x28-1000-10``.

A single integer (``10``) is always a layer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_CONV = re.compile(r"^(\d+)C(\d+)(?:p(\d+))?(?:s(\d+))?$")
_POOL = re.compile(r"^([PA])(\d+)$")
_DROP = re.compile(r"^D(0?\.\d+|0|1)$")
_SHAPE = re.compile(r"^\d+(x\d+){1,2}$")


@dataclass(frozen=True)
class LayerSpec:
    kind: str  # "linear" | "conv" | "pool" | "avgpool" | "dropout"
    out_shape: tuple[int, ...]
    size: int = 0  # linear: neurons; conv: out channels
    kernel: int = 0
    padding: int = 0
    stride: int = 1
    p: float = 0.0


@dataclass(frozen=True)
class Architecture:
    text: str
    input_shape: tuple[int, ...]
    layers: tuple[LayerSpec, ...]

    @property
    def n_outputs(self) -> int:
        return math.prod(self.layers[-1].out_shape)

    @property
    def linear_sizes(self) -> list[int]:
        """Sizes of the input (flattened) and of every fully connected layer, e.g. [784, 400, 10]."""
        return [math.prod(self.input_shape)] + [l.size for l in self.layers if l.kind == "linear"]


class ArchitectureError(ValueError):
    pass


def parse_arch(text: str, input_shape: tuple[int, ...] | None = None) -> Architecture:
    """Parse an architecture string. ``input_shape`` (C, H, W) or (N,) is used when the string has no
    input token, and checked for consistency when it has one."""
    tokens = [t.strip() for t in str(text).split("-") if t.strip()]
    if not tokens:
        raise ArchitectureError("empty architecture string")
    shape: tuple[int, ...]
    first = tokens[0]
    if _SHAPE.match(first):
        dims = tuple(int(d) for d in first.split("x"))
        shape = dims if len(dims) == 3 else (1, *dims)
        tokens = tokens[1:]
    elif first.isdigit() and len(tokens) > 1 and (input_shape is None or int(first) == math.prod(input_shape)):
        shape = (int(first),)
        tokens = tokens[1:]
    elif first.isdigit() and len(tokens) > 1 and int(first) > math.prod(input_shape):
        n_in = math.prod(input_shape)
        raise ArchitectureError(
            f"architecture {text!r}: the leading {first} is not the data's input size {n_in} (shape "
            f"{tuple(input_shape)}), and a first layer wider than the input must follow an explicit input: "
            f"write '{n_in}-{text}' for a first layer of {first}, or '{n_in}-{'-'.join(tokens[1:])}' if {first} "
            f"was meant as the input size"
        )
    elif input_shape is not None:
        shape = tuple(input_shape)
    else:
        raise ArchitectureError(f"{text!r}: cannot tell the input shape; start with e.g. 28x28 or 784")
    if input_shape is not None and math.prod(shape) != math.prod(input_shape):
        raise ArchitectureError(
            f"architecture {text!r} expects {math.prod(shape)} inputs per sample but the data has "
            f"shape {tuple(input_shape)} ({math.prod(input_shape)} values)"
        )
    if input_shape is not None and len(shape) == 1 and len(input_shape) > 1:
        shape = (shape[0],)
    layers: list[LayerSpec] = []
    cur = shape
    for tok in tokens:
        if tok.isdigit():
            n = int(tok)
            if n <= 0:
                raise ArchitectureError(f"{text!r}: layer size must be positive, got {tok}")
            cur = (n,)
            layers.append(LayerSpec("linear", cur, size=n))
        elif m := _CONV.match(tok):
            if len(cur) != 3:
                raise ArchitectureError(f"{text!r}: convolution {tok} needs an image input (CxHxW)")
            out, k = int(m[1]), int(m[2])
            pad = int(m[3] or 0)
            stride = int(m[4] or 1)
            h = (cur[1] + 2 * pad - k) // stride + 1
            w = (cur[2] + 2 * pad - k) // stride + 1
            if h <= 0 or w <= 0:
                raise ArchitectureError(f"{text!r}: {tok} does not fit a {cur} input")
            cur = (out, h, w)
            layers.append(LayerSpec("conv", cur, size=out, kernel=k, padding=pad, stride=stride))
        elif m := _POOL.match(tok):
            if len(cur) != 3:
                raise ArchitectureError(f"{text!r}: pooling {tok} needs an image input (CxHxW)")
            k = int(m[2])
            cur = (cur[0], cur[1] // k, cur[2] // k)
            layers.append(LayerSpec("pool" if m[1] == "P" else "avgpool", cur, kernel=k, stride=k))
        elif m := _DROP.match(tok):
            layers.append(LayerSpec("dropout", cur, p=float(m[1])))
        else:
            raise ArchitectureError(
                f"{text!r}: cannot parse token {tok!r} (expected N, <out>C<k>[p<pad>], P<k>, A<k> or D<p>)"
            )
    if not layers:
        raise ArchitectureError(f"{text!r}: no layers")
    return Architecture(text=str(text), input_shape=shape, layers=tuple(layers))
