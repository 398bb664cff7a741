"""DSIR (Xie et al., 2023, arXiv 2302.03169): data selection with importance resampling on
hashed n-gram features, no model pass.

Each text becomes counts of its lower-cased unigrams and bigrams hashed into `num_buckets`
buckets (WordPunct tokens); a bag-of-n-grams distribution is fitted to the target in-domain
samples and one to the pool; a candidate's log importance weight is the sum over its n-gram
counts of log p_target - log p_pool. Features, fit and weights are those of the authors'
package (data-selection's HashedNgramDSIR); the pool is small enough to fit on every token.
Resampling without replacement in proportion to the weights is Gumbel top-k: score = log
weight + Gumbel noise drawn from the selection seed (`sampling: gumbel`, the paper's);
`sampling: top_k` keeps the highest weights instead. The package's filter of examples under
100 words, meant for pretraining documents, is not applied: most instruction pairs are
shorter.
"""

from __future__ import annotations

import tempfile

import numpy as np

from naitbench.select.protocol import SelectionContext, Selector
from naitbench.select.text import sample_text

SAMPLINGS = ("gumbel", "top_k")


def log_importance_weights(pool: list[str], target: list[str], *, ngrams: int = 2,
                           num_buckets: int = 10000) -> np.ndarray:
    """DSIR's log importance weight of every pool text for the target texts."""
    from data_selection import HashedNgramDSIR

    texts = {"pool": pool, "target": target}
    with tempfile.TemporaryDirectory(prefix="dsir-") as cache:
        dsir = HashedNgramDSIR(["pool"], ["target"], cache_dir=cache,
                               raw_load_dataset_fn=texts.__getitem__,
                               target_load_dataset_fn=texts.__getitem__,
                               raw_parse_example_fn=None, target_parse_example_fn=None,
                               num_proc=1, ngrams=ngrams, num_buckets=num_buckets)
        dsir.fit_importance_estimator(num_tokens_to_fit="all")
        return np.array([dsir.importance_estimator(dsir.featurizer(t)) for t in pool],
                        dtype=np.float64)


class DSIRSelector(Selector):
    """Importance resampling of the pool toward the target's n-gram distribution."""

    targeted = True

    def __init__(self, name: str = "dsir", ngrams: int = 2, num_buckets: int = 10000,
                 sampling: str = "gumbel", **kwargs):
        super().__init__(name, **kwargs)
        if sampling not in SAMPLINGS:
            raise ValueError(f"selector.sampling={sampling!r}: use one of {list(SAMPLINGS)}")
        if ngrams < 1 or num_buckets < 1:
            raise ValueError(f"dsir: ngrams={ngrams} and num_buckets={num_buckets} must be >= 1")
        self.ngrams, self.num_buckets, self.sampling = int(ngrams), int(num_buckets), sampling

    def score(self, ctx: SelectionContext) -> np.ndarray:
        if not ctx.targets:
            raise ValueError("dsir is targeted: the context has no target in-domain set")
        target = [sample_text(r) for records in ctx.targets.values() for r in records]
        weights = log_importance_weights([sample_text(r) for r in ctx.pool], target,
                                         ngrams=self.ngrams, num_buckets=self.num_buckets)
        if self.sampling == "top_k":
            return weights
        return weights + np.random.default_rng(ctx.seed).gumbel(size=len(weights))
