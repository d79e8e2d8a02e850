"""Statistics of importance weights (ESS/n pooled over sets, PSIS k-hat, the largest weights,
reweighted fractions with intervals): the same code serves every molecule, so it lives in the
pipeline (smoothflow_torch.pipeline.weights) and is re-exported here for the study."""
from smoothflow_torch.pipeline.weights import (  # noqa: F401
    ess_fraction, ess_interval, gpd_fit_zhang_stephens, largest_weights, log_sum_exp, normalized_weights,
    pareto_k_hat, pooled_ess, reweighted_fraction, summary, tail_length)
