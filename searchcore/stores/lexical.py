"""The lexical side of text search: BM25 over each product's words (title and attributes).

A small text tower cannot learn brand names or rare product words from a few thousand titles;
BM25 finds them by construction. The ranking is ``bm25s`` (sparse matrices in numpy/scipy, no
server, loads without pickle), with PyStemmer's English stemmer and English stop words; see
``benchmarks/bench_text.py`` for its comparison with ``tantivy``.

What is indexed, per catalog row: the title and every other text column a shop has (brand,
category, colour, gender, description...), except the id, photo, price and the live shop's own
columns. Words are case- and accent-folded, punctuation splits them, a hyphenated compound is
indexed both as its parts and joined ("t-shirt" -> "shirt", "tshirt"), and plurals stem to
their singular. A query word that is not in the vocabulary is replaced by the vocabulary's
words one edit away, when there are any (a cheap typo rule: deletions only, like SymSpell).

An index folder stores the lexical index as ``lexical-<key>/`` (bm25s's own files), where the
key is the sha256 of the indexed texts and of this module's format: a commit that changes no
words (a price edit) reuses the folder as it is. The manifest's ``lexical`` entry lists each
file with its sha256, checked when the folder is opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from searchcore.catalog import MANAGED, Catalog
from searchcore.errors import IndexMismatchError
from searchcore.fsutil import file_sha256, fsync_dir, fsync_file

LEXICAL_FORMAT = 1
NOT_TEXT = ("id", "price", *MANAGED)
_WORD = re.compile(r"\w+(?:[-'\u2019]\w+)+")
_MAX_QUERY_WORDS = 32


def normalise(text: str) -> str:
    """Case- and accent-folded text, with each hyphenated compound also written joined."""
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c)).casefold()
    joined = [re.sub(r"[-'\u2019]", "", m) for m in _WORD.findall(folded)]
    return " ".join([folded, *joined])


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer  # PyStemmer: Snowball stemmers in C

    return Stemmer.Stemmer("english")


def _bm25s() -> Any:
    """bm25s, imported on first use. It sets its own logger to DEBUG on import, so every build
    would print "Building index from tokens" through an application's handlers: warnings only."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Words of each text as the index sees them: normalised, stop words out, stemmed."""
    return _bm25s().tokenize(
        [normalise(t) for t in texts],
        stopwords="en",
        stemmer=_stemmer(),
        return_ids=False,
        show_progress=False,
    )


def text_columns(df: pd.DataFrame) -> list[str]:
    """The columns whose words are indexed: the title first, then every other text column."""
    cols = ["title"] if "title" in df else []
    return cols + [c for c in df.columns if c not in NOT_TEXT and c != "title"]


def record_text(record: Mapping[str, Any]) -> str:
    """One product's words (a catalog row as a dict), by the same rule as :func:`product_texts`."""
    keys = (["title"] if "title" in record else []) + [
        k for k in record if k not in NOT_TEXT and k != "title"
    ]
    return " ".join(str(record[k]) for k in keys)


def product_texts(df: pd.DataFrame) -> list[str]:
    cols = text_columns(df)
    if not cols:
        return [""] * len(df)
    out = df[cols[0]].astype(str)
    for col in cols[1:]:  # column by column: vectorised, unlike a join per row
        out = out + " " + df[col].astype(str)
    return out.tolist()


class LexicalSide(Protocol):
    """What the engine asks of the lexical side: this module's :class:`LexicalIndex`, or a
    store's own full-text search (Milvus's BM25, :class:`searchcore.stores.milvus.MilvusLexical`).
    ``allowed`` masks catalog rows, ``filters`` are the query's (a side applies what it can:
    the engine folds the filters into ``allowed`` too)."""

    key: str

    def search(
        self, query: str, k: int, allowed: np.ndarray | None = None, filters: Any = None
    ) -> LexicalHits: ...


@dataclass(frozen=True)
class LexicalHits:
    rows: np.ndarray  # catalog rows, best first
    scores: np.ndarray  # their BM25 scores (> 0)
    words: tuple[str, ...]  # the query's words as searched (after stemming and typo rules)
    best: float = 0.0  # the highest score any product could reach for these words

    def normalised(self) -> np.ndarray:
        """Scores in [0, 1]: 1 for a product that matches every word as well as any product
        matches it (so one common word matched scores low, whatever the ranking's top)."""
        return self.scores / self.best if self.best > 0 else np.zeros_like(self.scores)


class LexicalIndex:
    """BM25 over one catalog's rows (document ``i`` is catalog row ``i``: label == row)."""

    def __init__(self, model: Any, rows: int, key: str, avgdl: float | None = None) -> None:
        self._model = model
        self.rows = rows
        self.key = key
        self.avgdl = avgdl  # mean words per product (None: a folder from before it was kept)
        self._vocab = set(model.vocab_dict) if rows else set()
        self._deletes: dict[str, set[str]] | None = None
        self._term_max: np.ndarray | None = None

    @classmethod
    def build(cls, catalog: Catalog | pd.DataFrame) -> LexicalIndex:
        bm25s = _bm25s()

        df = catalog.df if isinstance(catalog, Catalog) else catalog
        texts = product_texts(df)
        model = bm25s.BM25()  # Lucene's BM25 variant, k1 = 1.5, b = 0.75
        tokens = tokenize(texts) if texts else []
        if texts:
            model.index(tokens, show_progress=False)
        avgdl = float(np.mean([len(t) for t in tokens])) if tokens else 0.0
        return cls(model, len(texts), texts_key(texts), avgdl)

    # -- queries ---------------------------------------------------------------------------
    def words(self, query: str, extra: Mapping[str, Any] | None = None) -> tuple[str, ...]:
        """The query's searchable words: stemmed, stop words out, typos mapped to the vocabulary
        words one edit away, and two words written apart that the catalog writes as one ("t
        shirt" -> "tshirt") joined. ``extra``: more vocabulary (words of changed products)."""
        extra = extra or {}
        query = query[:2000]
        tokens = tokenize([query])[0][:_MAX_QUERY_WORDS]
        out: list[str] = []
        for tok in tokens:
            if tok in self._vocab or tok in extra:
                out.append(tok)
            else:
                near = self._near(tok) | {w for w in extra if len(tok) >= 4 and _one_edit(tok, w)}
                out.extend(sorted(near))
        raw = re.findall(r"\w+", normalise(query))[:_MAX_QUERY_WORDS]
        pairs = [a + b for a, b in itertools.pairwise(raw)]
        if pairs:
            joined = tokenize([" ".join(pairs)])[0]
            out.extend(t for t in joined if t in self._vocab or t in extra)
        return tuple(dict.fromkeys(out))

    def scores(self, words: Sequence[str]) -> np.ndarray:
        """Each row's BM25 score for ``words`` (words outside the vocabulary score nothing)."""
        known = [w for w in words if w in self._vocab]
        if not known or self.rows == 0:
            return np.zeros(self.rows, dtype=np.float32)
        return np.asarray(self._model.get_scores(known), dtype=np.float32)

    def stats(self, word: str) -> tuple[int, float]:
        """How many rows hold ``word``, and its highest score in any row."""
        index = self._model.vocab_dict.get(word) if self.rows else None
        if index is None:
            return 0, 0.0
        indptr = np.asarray(self._model.scores["indptr"])
        return int(indptr[index + 1] - indptr[index]), float(self._word_maxima()[index])

    def search(
        self, query: str, k: int, allowed: np.ndarray | None = None, filters: Any = None
    ) -> LexicalHits:
        """The ``k`` best rows for ``query`` among ``allowed`` (a boolean mask over rows; the
        caller folds its filters into it, so ``filters`` is not needed here)."""
        words = self.words(query)
        if not words or self.rows == 0 or k < 1:
            return LexicalHits(np.zeros(0, dtype=np.int64), np.zeros(0, np.float32), words, 0.0)
        return top_hits(self.scores(words), k, allowed, words, self.best_score(words))

    def best_score(self, words: Sequence[str]) -> float:
        """The sum over ``words`` of each word's highest score in any product: no product can
        score more (BM25 adds the words' scores), and a product matching them all scores it."""
        maxima, vocab = self._word_maxima(), self._model.vocab_dict
        return float(sum(maxima[vocab[w]] for w in words if w in vocab))

    def _word_maxima(self) -> np.ndarray:
        """Each vocabulary word's highest score in any row (computed once)."""
        if self._term_max is None:
            sc = self._model.scores
            data, indptr = np.asarray(sc["data"]), np.asarray(sc["indptr"])
            term_max = np.zeros(len(indptr) - 1, dtype=np.float32)
            filled = np.flatnonzero(np.diff(indptr) > 0)
            if len(filled):
                term_max[filled] = np.maximum.reduceat(data, indptr[filled])
            self._term_max = term_max
        return self._term_max

    def matches(self, texts: Sequence[str]) -> bool:
        """True when this index holds exactly ``texts`` (one per catalog row)."""
        return len(texts) == self.rows and texts_key(texts) == self.key

    def _near(self, token: str) -> set[str]:
        """Vocabulary words one edit from ``token`` (insertion, deletion or substitution),
        through the shared-deletion rule; none for words under 4 letters (too many false
        friends)."""
        if len(token) < 4:
            return set()
        if self._deletes is None:
            table: dict[str, set[str]] = {}
            for word in self._vocab:
                if len(word) >= 3:
                    for variant in {word, *_deletions(word)}:
                        table.setdefault(variant, set()).add(word)
            self._deletes = table
        near: set[str] = set()
        for variant in {token, *_deletions(token)}:
            near |= self._deletes.get(variant, set())
        return {word for word in near if _one_edit(token, word)}

    # -- files -----------------------------------------------------------------------------
    def save(self, folder: Path) -> dict[str, Any]:
        """Write ``lexical-<key>/`` into ``folder`` (atomically: a temp folder renamed) unless it
        is there already; returns the manifest's ``lexical`` entry."""
        name = f"lexical-{self.key[:16]}"
        target = folder / name
        if target.is_dir():
            try:
                return _entry(folder, name, self.rows, self.key)
            except OSError:
                shutil.rmtree(target, ignore_errors=True)
        tmp = folder / f".lexical-{uuid.uuid4().hex}.tmp"
        try:
            tmp.mkdir(parents=True)
            if self.rows:
                self._model.save(str(tmp), show_progress=False)
            info = {"rows": self.rows, "key": self.key, "avgdl": self.avgdl}
            (tmp / "rows.json").write_text(json.dumps(info))
            for path in tmp.iterdir():
                fsync_file(path)
            fsync_dir(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        fsync_dir(folder)
        return _entry(folder, name, self.rows, self.key)

    @classmethod
    def load(cls, folder: Path, entry: Any, *, fix: str) -> LexicalIndex:
        """Open the lexical index a manifest names, refusing anything it does not vouch for."""
        bm25s = _bm25s()

        if (
            not isinstance(entry, dict)
            or entry.get("format") != LEXICAL_FORMAT
            or not isinstance(entry.get("dir"), str)
            or not re.fullmatch(r"lexical-[0-9a-f]{16}", entry["dir"])
            or not isinstance(entry.get("files"), dict)
            or not isinstance(entry.get("rows"), int)
        ):
            raise IndexMismatchError(
                f"{folder} has an unreadable lexical index entry; rebuild with `{fix}`"
            )
        path = folder / entry["dir"]
        for name, sha in entry["files"].items():
            file = path / str(name)
            if "/" in str(name) or not file.is_file() or file_sha256(file) != sha:
                raise IndexMismatchError(
                    f"lexical index file {entry['dir']}/{name} is missing or corrupt; "
                    f"rebuild with `{fix}`"
                )
        if entry["rows"] == 0:
            return cls(bm25s.BM25(), 0, str(entry.get("key", "")), 0.0)
        model = bm25s.BM25.load(str(path), allow_pickle=False, show_progress=False, verbosity=0)
        avgdl = None
        with contextlib.suppress(OSError, ValueError, AttributeError):  # checked above
            avgdl = json.loads((path / "rows.json").read_text()).get("avgdl")
        avgdl = float(avgdl) if isinstance(avgdl, int | float) and avgdl > 0 else None
        return cls(model, entry["rows"], str(entry.get("key", "")), avgdl)


class LiveLexical:
    """The last snapshot's :class:`LexicalIndex` plus the words of the products changed since.

    A changed product's old words leave the ranking and its new ones are scored by BM25 with
    the snapshot's statistics (documents holding each word, mean length), the way Lucene scores
    a new segment until segments are merged; compaction builds one index again. Changing it
    makes a new object (:meth:`with_texts`): a query keeps reading the one its view holds.
    """

    def __init__(self, base: LexicalIndex, rows: int | None = None) -> None:
        self.base = base
        self.rows = base.rows if rows is None else rows
        self.key = base.key  # the files it rests on
        self._docs: dict[int, int] = {}  # changed row -> its length in words
        self._new: dict[int, str] = {}  # changed row -> its text now
        self._old: dict[int, str] = {}  # changed row the snapshot had -> its text there
        self._postings: dict[str, dict[int, int]] = {}  # word -> changed row -> count
        self._added = 0  # changed rows the snapshot did not have

    @property
    def changed(self) -> int:
        return len(self._docs)

    def with_texts(
        self, texts: Mapping[int, str], old: Mapping[int, str], rows: int
    ) -> LiveLexical:
        """This index with ``texts`` as the words of those rows (``old``: their texts before,
        for rows the snapshot holds) and ``rows`` catalog rows in all."""
        out = LiveLexical(self.base, rows)
        out._docs, out._new, out._old = dict(self._docs), dict(self._new), dict(self._old)
        out._postings = dict(self._postings)
        copied: set[str] = set()  # each word's row table copied once per change (copy on write)

        def table(word: str) -> dict[int, int]:
            if word not in copied:
                out._postings[word] = dict(out._postings.get(word, {}))
                copied.add(word)
            return out._postings[word]

        todo = {r: t for r, t in texts.items() if r in out._new or r >= self.base.rows}
        todo.update({r: t for r, t in texts.items() if r not in todo and old.get(r) != t})
        for row, tokens in zip(todo, tokenize(list(todo.values())), strict=True):
            if row in out._new:  # its words change again
                for word in set(tokenize([out._new[row]])[0]):
                    table(word).pop(row, None)
            elif row < self.base.rows:
                out._old[row] = old[row]
            out._docs[row], out._new[row] = len(tokens), todo[row]
            for word in set(tokens):
                table(word)[row] = tokens.count(word)
        out._added = sum(1 for r in out._docs if r >= self.base.rows)
        return out

    def matches(self, texts: Sequence[str]) -> bool:
        """True when this index holds exactly ``texts`` (one per catalog row)."""
        n = self.base.rows
        if len(texts) != self.rows or any(r not in self._new for r in range(n, self.rows)):
            return False
        before = [self._old.get(i, t) for i, t in enumerate(texts[:n])]
        return self.base.matches(before) and all(texts[r] == t for r, t in self._new.items())

    def search(
        self, query: str, k: int, allowed: np.ndarray | None = None, filters: Any = None
    ) -> LexicalHits:
        words = self.base.words(query, self._postings)
        if not words or self.rows == 0 or k < 1:
            return LexicalHits(np.zeros(0, dtype=np.int64), np.zeros(0, np.float32), words, 0.0)
        scores = np.zeros(self.rows, dtype=np.float32)
        scores[: self.base.rows] = self.base.scores(words)
        best = 0.0
        if self._docs:
            scores[np.fromiter(self._docs, dtype=np.int64)] = 0.0  # their old words are gone
        for word in words:
            held, top = self.base.stats(word)
            for row, score in self._scores(word, held).items():
                scores[row] += score
                top = max(top, score)
            best += top
        return top_hits(scores, k, allowed, words, best)

    def _scores(self, word: str, held: int) -> dict[int, float]:
        """BM25 (Lucene's variant, as bm25s's) of ``word`` in each changed row holding it."""
        postings = self._postings.get(word)
        if not postings:
            return {}
        k1, b = 1.5, 0.75
        n = self.base.rows + self._added
        held = held + len(postings)
        idf = np.log(1.0 + (n - held + 0.5) / (held + 0.5))
        avgdl = self.base.avgdl or float(np.mean(list(self._docs.values()))) or 1.0
        return {
            row: float(idf * tf / (k1 * (1 - b + b * self._docs[row] / avgdl) + tf))
            for row, tf in postings.items()
        }


def top_hits(
    scores: np.ndarray,
    k: int,
    allowed: np.ndarray | None,
    words: tuple[str, ...],
    best: float,
) -> LexicalHits:
    """The ``k`` best rows of ``scores`` among ``allowed``, best first (ties by row)."""
    if allowed is not None:
        scores = np.where(allowed[: len(scores)], scores, 0.0)
    found = np.flatnonzero(scores > 0)
    if len(found) > k:
        found = found[np.argpartition(-scores[found], k - 1)[:k]]
    order = found[np.lexsort((found, -scores[found]))]
    return LexicalHits(order.astype(np.int64), scores[order].astype(np.float32), words, best)


def texts_key(texts: Sequence[str]) -> str:
    digest = hashlib.sha256(f"lexical-format-{LEXICAL_FORMAT}\n".encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


def lexical_files(entry: Any) -> set[str]:
    """The folder a manifest's lexical entry names (for pruning)."""
    if isinstance(entry, dict) and isinstance(entry.get("dir"), str):
        return {entry["dir"]}
    return set()


def _entry(folder: Path, name: str, rows: int, key: str) -> dict[str, Any]:
    files = {p.name: file_sha256(p) for p in sorted((folder / name).iterdir()) if p.is_file()}
    return {"format": LEXICAL_FORMAT, "dir": name, "rows": rows, "key": key, "files": files}


def _one_edit(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` differ by one insertion, deletion or substitution."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        return a[i + 1 :] == b[i + 1 :]
    return a[i + 1 :] == b[i:] if len(a) > len(b) else a[i:] == b[i + 1 :]


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}
