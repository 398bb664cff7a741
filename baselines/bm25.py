"""BM25 (Okapi): lexical similarity of each candidate to each target in-domain sample, with no
model pass. Documents are the candidates' texts, each target sample's text is a query; the
[candidates, target samples] score matrix, each column divided by its maximum (BM25 scores of
different queries are on different scales), goes through the configured rule (default
`max`). Scores come from rank_bm25's BM25Okapi (k1, b and the idf floor epsilon as it defines
them) over lower-cased word tokens (naitbench.select.text). No candidate-to-candidate
similarity is defined, so `knn_kde` is refused."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from naitbench.select.protocol import SelectionContext
from naitbench.select.targeted import SimilaritySelector
from naitbench.select.text import sample_text, words


class BM25Selector(SimilaritySelector):
    """Candidate-to-target-sample BM25 scores, turned into a subset by a rule."""

    def __init__(self, name: str = "bm25", k1: float = 1.5, b: float = 0.75,
                 epsilon: float = 0.25, **kwargs):
        super().__init__(name, **kwargs)
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"bm25: k1={k1} must be >= 0 and b={b} in [0, 1]")
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self._index: tuple[int, object] | None = None

    def _bm25(self, ctx: SelectionContext):
        """The index of the pool (built once per pool: bootstrap draws reuse it)."""
        from rank_bm25 import BM25Okapi

        if self._index is None or self._index[0] != id(ctx.pool):
            corpus = [words(sample_text(r)) or [""] for r in ctx.pool]
            self._index = (id(ctx.pool), BM25Okapi(corpus, k1=self.k1, b=self.b,
                                                   epsilon=self.epsilon))
        return self._index[1]

    def similarity(self, ctx: SelectionContext, target: str) -> np.ndarray:
        index = self._bm25(ctx)
        columns = [index.get_scores(words(sample_text(r)))
                   for r in tqdm(ctx.targets[target], desc=f"bm25 {target}", leave=False)]
        matrix = np.stack(columns, axis=1).astype(np.float64)
        # a long query scores high everywhere: each query's scores over its best candidate,
        # a similarity in [0, 1] that every rule reads alike
        return matrix / np.maximum(matrix.max(axis=0, keepdims=True), 1e-12)
