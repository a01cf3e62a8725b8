"""Duplicate detection: 64-bit keys for exact copies, MinHash LSH (``datasketch``) for near copies.

Exact keys are compared after Unicode NFC and whitespace collapsing, so two rows that differ only
in spacing count as copies. Near copies are pairs whose character 5-gram sets have an estimated
Jaccard similarity of at least the threshold.
"""

from __future__ import annotations

import hashlib
import unicodedata
import zlib
from typing import Any, Hashable

import numpy as np

from tuneforge.data.examples import TrainingExample

SHINGLE_CHARS = 5
MAX_SHINGLED_CHARS = 4000  # long texts are compared on their first characters: enough to catch copies
NUM_PERM = 64


def normalize_text(text: str) -> str:
    """NFC, whitespace runs collapsed to one space, ends stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def key64(text: str) -> int:
    """A stable 64-bit key of ``text`` (the same on every run and machine)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little", signed=True)


def example_text(example: TrainingExample) -> str:
    """The whole example as one string: every turn with its role (and weight when set)."""
    if example.is_text:
        return normalize_text(example.text or "")
    return "\x1e".join(f"{m['role']}\x1f{normalize_text(m['content'])}\x1f{m.get('weight', 1)}" for m in example.messages)


def prompt_text(example: TrainingExample) -> str:
    """What the model is asked (system prompt included); the text itself for text examples."""
    if example.is_text:
        return normalize_text(example.text or "")
    return "\x1e".join(f"{m['role']}\x1f{normalize_text(m['content'])}" for m in example.prompt_messages)


def answer_text(example: TrainingExample) -> str:
    """The final answer, case-folded: answers differing only in case or spacing do not conflict."""
    return normalize_text(example.output).casefold()


def example_keys(example: TrainingExample) -> tuple[int, int, int, str]:
    """``(whole, prompt, answer)`` 64-bit keys and the whole normalised text, normalising each turn once."""
    if example.is_text:
        text = normalize_text(example.text or "")
        key = key64(text)
        return key, key, key, text
    turns = [(m["role"], normalize_text(m["content"]), m.get("weight", 1)) for m in example.messages]
    whole = "\x1e".join(f"{role}\x1f{content}\x1f{weight}" for role, content, weight in turns)
    cut = len(example.prompt_messages)
    prompt = "\x1e".join(f"{role}\x1f{content}" for role, content, _ in turns[:cut])
    answer = turns[cut][1].casefold() if cut < len(turns) else ""
    return key64(whole), key64(prompt), key64(answer), whole


def shingles(text: str) -> set[str]:
    """Character 5-grams of the lower-cased text (the whole text when shorter)."""
    text = normalize_text(text).lower()[:MAX_SHINGLED_CHARS]
    if len(text) <= SHINGLE_CHARS:
        return {text} if text else set()
    return {text[i : i + SHINGLE_CHARS] for i in range(len(text) - SHINGLE_CHARS + 1)}


def _crc32(value: str) -> int:
    return zlib.crc32(value.encode("utf-8", "surrogatepass"))


class NearDuplicateIndex:
    """Finds, for each text added, the earlier texts that are near copies of it."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 128) -> None:
        from datasketch import MinHash, MinHashLSH

        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._template = MinHash(num_perm=num_perm, hashfunc=_crc32)
        # A lower LSH threshold than the one verified: fewer near copies slip through the banding.
        self._lsh = MinHashLSH(threshold=max(0.5, threshold - 0.15), num_perm=num_perm)
        self._sketches: dict[Hashable, Any] = {}

    def sketch(self, text: str) -> Any:
        minhash = self._template.copy()
        minhash.update_batch(shingles(text))
        return minhash

    def add(self, key: Hashable, text: str) -> list[tuple[Hashable, float]]:
        """Index ``text`` under ``key``; return earlier ``(key, similarity)`` with similarity ≥ threshold."""
        minhash, matches = self.match(text)
        self.insert(key, minhash)
        return matches

    def match(self, text: str) -> tuple[Any, list[tuple[Hashable, float]]]:
        """``(sketch, matches)`` of ``text`` against the texts indexed so far, best first; indexes nothing."""
        minhash = self.sketch(text)
        if minhash.is_empty():
            return minhash, []
        matches = []
        for other in self._lsh.query(minhash):
            similarity = float(minhash.jaccard(self._sketches[other]))
            if similarity >= self.threshold:
                matches.append((other, similarity))
        matches.sort(key=lambda item: (-item[1], str(item[0])))
        return minhash, matches

    def insert(self, key: Hashable, minhash: Any) -> None:
        if minhash.is_empty():
            return
        self._lsh.insert(key, minhash)
        self._sketches[key] = minhash

    def __len__(self) -> int:
        return len(self._sketches)


class KeyColumns:
    """Per-example 64-bit keys kept in compact arrays (40 bytes an example) for the end-of-file checks."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._buffer: list[tuple[int, int, int, int, int]] = []

    def add(self, whole: int, prompt: int, answer: int, line: int, split: int) -> None:
        self._buffer.append((whole, prompt, answer, line, split))
        if len(self._buffer) >= 8192:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._chunks.append(np.array(self._buffer, dtype=np.int64))
            self._buffer = []

    def table(self) -> np.ndarray:
        """An (N, 5) int64 array: whole key, prompt key, answer key, line (or row), split index."""
        self._flush()
        if not self._chunks:
            return np.zeros((0, 5), dtype=np.int64)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]


def duplicate_groups(keys: np.ndarray) -> list[np.ndarray]:
    """Indices of rows sharing a key, one array per key seen more than once, each in input order."""
    if len(keys) < 2:
        return []
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    groups = [order[s:e] for s, e in zip(starts, ends) if e - s > 1]
    groups.sort(key=lambda group: int(group[0]))
    return groups


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, element-wise on uint64 arrays holding 32-bit values."""
    values = values ^ (values >> np.uint64(16))
    values = (values * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    values = values ^ (values >> np.uint64(13))
    values = (values * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    return values ^ (values >> np.uint64(16))


def _bands_for(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows)`` with bands*rows == num_perm whose LSH threshold (1/b)^(1/r) is the highest one at
    or below ``threshold`` (candidates are then verified, so erring low only costs time)."""
    options = [(b, num_perm // b) for b in range(1, num_perm + 1) if num_perm % b == 0]
    below = [(b, r) for b, r in options if (1 / b) ** (1 / r) <= threshold]
    return max(below, key=lambda br: (1 / br[0]) ** (1 / br[1])) if below else options[-1]


class BatchNearDuplicates:
    """Near-duplicate search for a stream: MinHash signatures computed in vectorised batches (numpy), LSH
    banding and verification at the end. Memory: ``4 * num_perm`` bytes per text added.

    Shingles are byte 5-grams of the lower-cased, whitespace-collapsed UTF-8 text (the same as
    character 5-grams for ASCII). ``pairs()`` gives, for each text with an earlier near copy, the most
    similar earlier one.
    """

    BATCH = 128  # texts per vectorised batch: bounds the (perms x shingles) temporary to a few MB
    VERIFY_CHUNK = 65536  # candidate pairs verified at a time

    def __init__(self, threshold: float = 0.85, num_perm: int = NUM_PERM, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.threshold = threshold
        self.num_perm = num_perm
        self.a = rng.integers(1, 2**32, num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**32, num_perm, dtype=np.uint64)
        self._a32, self._b32 = self.a.astype(np.uint32), self.b.astype(np.uint32)
        self.bands, self.rows = _bands_for(threshold, num_perm)
        self._powers = (np.uint64(257) ** np.arange(SHINGLE_CHARS, dtype=np.uint64)) & np.uint64(0xFFFFFFFF)
        self._texts: list[bytes] = []
        self._ids: list[int] = []
        self._signatures: list[np.ndarray] = []
        self._kept_ids: list[np.ndarray] = []
        self.count = 0

    def add(self, key: int, text: str) -> None:
        data = normalize_text(text).lower()[:MAX_SHINGLED_CHARS].encode("utf-8", "surrogatepass")
        if len(data) < SHINGLE_CHARS:
            return
        self._texts.append(data)
        self._ids.append(key)
        self.count += 1
        if len(self._texts) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._texts:
            return
        lengths = np.array([len(t) for t in self._texts], dtype=np.int64)
        joined = np.frombuffer(b"".join(self._texts), dtype=np.uint8).astype(np.uint64)
        windows = np.lib.stride_tricks.sliding_window_view(joined, SHINGLE_CHARS)  # (bytes-4, 5)
        hashes = _fmix32((windows * self._powers).sum(axis=1) & np.uint64(0xFFFFFFFF))
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        valid_counts = lengths - SHINGLE_CHARS + 1  # windows that stay inside one text
        keep = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, valid_counts)])
        hashes = hashes[keep]
        offsets = np.r_[0, np.cumsum(valid_counts)[:-1]]
        # uint32 arithmetic wraps mod 2**32: the affine permutation a*h + b of each shingle hash.
        permuted = self._a32[:, None] * hashes.astype(np.uint32)[None, :] + self._b32[:, None]  # (perms, shingles)
        signatures = np.ascontiguousarray(np.minimum.reduceat(permuted, offsets, axis=1).T)  # (texts, perms)
        self._signatures.append(signatures)
        self._kept_ids.append(np.array(self._ids, dtype=np.int64))
        self._texts, self._ids = [], []

    def signatures(self) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, signatures)`` of every text added so far: int64 keys and an (n, num_perm) uint32 array."""
        self._flush()
        if not self._signatures:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.num_perm), dtype=np.uint32)
        signatures, ids = np.concatenate(self._signatures), np.concatenate(self._kept_ids)
        self._signatures, self._kept_ids = [signatures], [ids]
        return ids, signatures

    def band_keys(self, signatures: np.ndarray, band: int) -> np.ndarray:
        """One hashable key per row for LSH band ``band``: rows sharing it are near-copy candidates."""
        block = np.ascontiguousarray(signatures[:, band * self.rows:(band + 1) * self.rows])
        return block.view(np.dtype((np.void, block.dtype.itemsize * self.rows))).ravel()

    def pairs(self, small_bucket: int = 12) -> list[tuple[int, int, float]]:
        """``(later key, earlier key, similarity)``: each text's most similar earlier near copy."""
        ids, signatures = self.signatures()
        if not len(ids):
            return []
        best: dict[int, tuple[int, float]] = {}
        for band in range(self.bands):
            keys = self.band_keys(signatures, band)
            order = np.argsort(keys, kind="stable")  # a bucket's members stay in the order they were added
            ordered = keys[order]
            starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
            sizes = np.diff(np.r_[starts, len(ordered)])
            # Every member against the first of its bucket (vectorised) ...
            first = np.repeat(order[starts], sizes)
            later, earlier = [order[first != order]], [first[first != order]]
            # ... and, in small buckets, against every earlier member too.
            small = (sizes > 2) & (sizes <= small_bucket)
            for start, size in zip(starts[small], sizes[small]):
                members = order[start:start + size]
                for position in range(2, size):
                    later.append(np.full(position - 1, members[position]))
                    earlier.append(members[1:position])
            self._verify(signatures, np.concatenate(later), np.concatenate(earlier), best)
        return sorted((int(ids[later]), int(ids[earlier]), value) for later, (earlier, value) in best.items())

    def _verify(self, signatures: np.ndarray, later: np.ndarray, earlier: np.ndarray, best: dict[int, tuple[int, float]]) -> None:
        """Keep candidate pairs whose estimated similarity reaches the threshold, chunk by chunk (bounded memory)."""
        for start in range(0, len(later), self.VERIFY_CHUNK):
            a, b = later[start:start + self.VERIFY_CHUNK], earlier[start:start + self.VERIFY_CHUNK]
            similarity = (signatures[a] == signatures[b]).mean(axis=1)
            good = similarity >= self.threshold
            for x, y, value in zip(a[good].tolist(), b[good].tolist(), similarity[good].tolist()):
                if x not in best or value > best[x][1] or (value == best[x][1] and y < best[x][0]):
                    best[x] = (y, value)
