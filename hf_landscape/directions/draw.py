"""Gaussian draws that give the same bits on every device: a keyed counter-based hash and a tabulated inverse CDF.

Entry `i` (row-major) of the raw draw of parameter `name` for (seed, axis) is a function of (seed, axis, name, i)
alone, a counter-based generator in the sense of Salmon et al. (2011, "Parallel random numbers: as easy as 1, 2,
3"). It is computed with integer operations and exactly rounded float32 operations only (no `log`, `exp` or
`cos`, whose last bit differs between CPU and GPU libraries), so a direction can be drawn on the device where its
weight lives and still equal, bit for bit, the one drawn on the CPU.

* **Bits.** Three rounds of `x <- mix(x ^ k_r)` over the 32-bit counter, with round keys `k_0..k_2` taken from
  SHA-256 of (seed, axis, name), and `mix` the 32-bit integer hash `x ^= x >> 16; x *= 0x21f0aaad;
  x ^= x >> 15; x *= 0x735a2d97; x ^= x >> 15` (found by C. Wellons' hash-prospector search). Both multipliers
  are below 2^31, so on a GPU the products of 32-bit values held in int64 never overflow; on the CPU numpy's
  uint32 arithmetic (modulo 2^32 by definition) computes the same function at a fifth of the cost.
* **Normal.** Bit 31 is the sign, bits 16-30 pick one of 2^15 equally likely bins of the half-normal and bits
  0-15 the position `f` inside it, interpolated between tabulated quantiles: `z = T[b] + (f * 2^-16) * D[b]`,
  two exactly rounded float32 operations. The outermost bin (|z| > 4.17, probability 2^-15), whose end is at
  infinity, is split into 2^16 finer bins instead, `f` picking one, and `z` is the quantile at its middle (at most
  6.33). The tables are float64 quantiles (`torch.special.ndtri`, Cephes) rounded to float32 once.

Tensors of 2^32 elements or more take fresh keys for each 2^32 elements (the counter's segment).
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch

GENERATOR = "counter-hash-v1"  # recorded in random directions' configs; a change of the draw must change this name
CHUNK = 1 << 22  # elements hashed at a time (bounds the int64 temporaries on a GPU: 32 MiB each)
NUMPY_BLOCK = 1 << 18  # on the CPU, in blocks whose temporaries stay in cache (2x faster than whole chunks)
COARSE_BITS = 15  # bins of the half-normal
_M1, _M2 = 0x21F0AAAD, 0x735A2D97
_MASK = 0xFFFFFFFF
_FRACTION = 2.0**-16  # bits 0-15 as a fraction of a bin (exact in float32)


def round_keys(seed: int, axis: int, name: str, segment: int = 0) -> tuple[int, ...]:
    """The three 32-bit round keys of (seed, axis, parameter name) for counters `segment * 2^32 ...`."""
    digest = hashlib.sha256(f"hf_landscape:draw:{seed}:{axis}:{name}:{segment}".encode()).digest()
    return tuple(int.from_bytes(digest[4 * r : 4 * r + 4], "little") for r in range(3))


def hash_numpy(counter: np.ndarray, keys: tuple[int, ...]) -> np.ndarray:
    """The keyed hash of uint32 `counter` (modified in place and returned): numpy, modulo 2^32 by definition."""
    x = counter
    for k in keys:
        x ^= np.uint32(k)
        x ^= x >> np.uint32(16)
        x *= np.uint32(_M1)
        x ^= x >> np.uint32(15)
        x *= np.uint32(_M2)
        x ^= x >> np.uint32(15)
    return x


def hash_torch(counter: torch.Tensor, keys: tuple[int, ...]) -> torch.Tensor:
    """The same hash of int64 `counter` (values below 2^32; modified in place and returned), in torch ops that never
    overflow: a 32-bit value times a multiplier below 2^31 stays below 2^63."""
    x = counter
    for k in keys:
        x.bitwise_xor_(k)
        x.bitwise_xor_(x >> 16)
        x.mul_(_M1).bitwise_and_(_MASK)
        x.bitwise_xor_(x >> 15)
        x.mul_(_M2).bitwise_and_(_MASK)
        x.bitwise_xor_(x >> 15)
    return x


@functools.lru_cache(maxsize=1)
def host_tables() -> tuple[np.ndarray, ...]:
    """(T, D, F) as float32 arrays: T[h] and D[h] the signed quantile and step of coarse bin `h & 0x7fff` (bit 15 of
    `h` is the sign); F[s * 2^16 + f] the signed midpoint quantile of fine bin `f` of the outermost coarse bin."""
    # Half-normal quantile of v: Q(v) = -Φ^{-1}((1 - v) / 2). Coarse bin b starts at v = b / 2^15; fine bin f of the
    # outermost coarse bin spans v in 1 - 2^-15 + [f, f + 1) * 2^-31, and is represented by its midpoint.
    coarse_p = (2**COARSE_BITS - np.arange(2**COARSE_BITS, dtype=np.float64)) * 2.0 ** -(COARSE_BITS + 1)
    fine_p = (2**16 - np.arange(2**16, dtype=np.float64) - 0.5) * 2.0 ** -(COARSE_BITS + 17)
    quantiles = -torch.special.ndtri(torch.from_numpy(np.concatenate([coarse_p, fine_p]))).numpy() + 0.0
    coarse, fine = quantiles[: 2**COARSE_BITS], quantiles[2**COARSE_BITS :]
    step = np.append(np.diff(coarse), 0.0)  # the outermost coarse bin is looked up in F instead
    # Negation is exact and rounding symmetric, so the negative half's z = (-T) + f * (-D) is exactly -(T + f * D).
    t = np.concatenate([coarse, -coarse]).astype(np.float32)
    d = np.concatenate([step, -step]).astype(np.float32)
    return t, d, np.concatenate([fine, -fine]).astype(np.float32)


_device_tables: dict[torch.device, torch.Tensor] = {}


def _device_table(device: torch.device) -> torch.Tensor:
    """(2^16 + 2^17, 2) float32 on `device`: rows (T[h], D[h]) for the coarse bins, then (F[i], 0) for the fine ones,
    so that one row gather and `value + fraction * step` serve both (adding 0 leaves F exact)."""
    if device not in _device_tables:
        t, d, f = host_tables()
        rows = np.stack([np.concatenate([t, f]), np.concatenate([d, np.zeros_like(f)])], axis=1)
        _device_tables[device] = torch.from_numpy(rows).to(device)
    return _device_tables[device]


def uses_numpy(device: torch.device) -> bool:
    """Whether draws on `device` are computed with numpy (the CPU) or with torch ops on the device."""
    return device.type == "cpu"


_LAST = 2**COARSE_BITS - 1  # the outermost coarse bin
_OUTER = _LAST << 16  # bits 16-30 all set: the outermost coarse bin


def fill_normal(out: torch.Tensor, start: int, seed: int, axis: int, name: str) -> None:
    """Write the draws of counters `start .. start + out.numel()` of (seed, axis, name) into flat float32 `out`
    (on any device; within one 2^32 segment)."""
    n = out.numel()
    segment, offset = divmod(start, 2**32)
    if offset + n > 2**32:
        raise ValueError(f"counters {start}..{start + n} cross a 2^32 segment; fill them in two calls.")
    keys = round_keys(seed, axis, name, segment)
    if uses_numpy(out.device):
        target = out.numpy()
        for s in range(0, n, NUMPY_BLOCK):
            _normal_numpy(target[s : s + NUMPY_BLOCK], offset + s, keys)
    else:
        _normal_torch(out, offset, keys)


def _normal_numpy(out: np.ndarray, offset: int, keys: tuple[int, ...]) -> None:
    t, d, f = host_tables()
    h = hash_numpy(np.arange(offset, offset + out.size, dtype=np.uint32), keys)
    low = h & np.uint32(0xFFFF)
    index = (h >> np.uint32(16)).astype(np.intp)
    # z = T[b] + (f * 2^-16) * D[b]: each product and sum is one exactly rounded float32 operation on every device.
    out[...] = low  # exact: below 2^16
    out *= np.float32(_FRACTION)
    out *= d[index]
    out += t[index]
    outer = np.flatnonzero((h & np.uint32(_OUTER)) == _OUTER)
    if outer.size:
        out[outer] = f[((h[outer] >> np.uint32(15)) & np.uint32(0x10000)) | low[outer]]


def _normal_torch(out: torch.Tensor, offset: int, keys: tuple[int, ...]) -> None:
    """`_normal_numpy`'s values with torch ops on any device. It uses only kernels that a model's forward has
    usually loaded already, besides the bitwise and shift ones (each new kernel file costs 10-30 ms to load on a
    GPU): the outermost bin is selected by arithmetic, not by a comparison and `where`, and the tables are
    gathered with `index_select`, as an embedding is."""
    table = _device_table(out.device)
    h = hash_torch(torch.arange(offset, offset + out.numel(), dtype=torch.int64, device=out.device), keys)
    low = h.bitwise_and(0xFFFF)
    high = h.bitwise_right_shift_(16)  # sign and coarse bin
    outer = high.bitwise_and(_LAST).add_(1).bitwise_right_shift_(COARSE_BITS)  # 1 in the outermost bin, else 0
    # Row of the table: `high` for a coarse bin, 2^16 + (sign * 2^16 + low) for a fine one.
    fine = high.bitwise_right_shift(COARSE_BITS).mul_(2**16).add_(low).add_(2**16).sub_(high)
    rows = table.index_select(0, fine.mul_(outer).add_(high))
    # z = T[b] + (f * 2^-16) * D[b], the same exactly rounded float32 operations as `_normal_numpy`.
    torch.mul(low.to(torch.float32), _FRACTION, out=out)
    out.mul_(rows[:, 1]).add_(rows[:, 0])


def gaussian(
    shape: torch.Size | tuple[int, ...], seed: int, axis: int, name: str, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The raw N(0, 1) draw of parameter `name` for (seed, axis): float32, on `device`, equal on every device."""
    out = torch.empty(shape, dtype=torch.float32, device=device)
    flat = out.view(-1)
    for start in range(0, flat.numel(), CHUNK):
        fill_normal(flat[start : start + CHUNK], start, seed, axis, name)
    return out
