"""The thesis's regression head: % eroded surface as a distribution over 101 whole percentages, trained with CRPS.

The head has 101 outputs, one per % j = 0..100. Their softmax is the probability of each %, and its running
sum F(j) = P(% <= j) is the predicted cumulative distribution: non-decreasing, with F(100) = 1, by construction.
(The thesis puts a sigmoid on each output, which does not keep F monotone; the running sum of a softmax does.)
The loss is the discrete continuous ranked probability score, the mean over j of (F(j) - H(j - y))^2 with H the
unit step at the true % y: zero only for a point mass at y.

Everything else follows from F. The stage probabilities are the mass of each stage's range (P(stage 0) = F(0),
P(stage k) = F(20k) - F(20k - 20), P(stage 5) = 1 - F(80)), so scoring, Rau scores and agreement treat the head
like the classifier; the predicted % is the distribution's mean, the estimate with the least squared error (the
thesis reports mean squared and absolute errors).
"""

from __future__ import annotations

import torch

from erosion.core.domain import STAGE_UPPER_PCT

BINS = 101
"""Outputs of the head: whole % eroded surface 0..100."""


def crps(outputs: torch.Tensor, pct: torch.Tensor) -> torch.Tensor:
    """(N,) discrete CRPS of each crop's predicted distribution (``outputs``, (N, 101) logits) at its true %."""
    cumulative = torch.cumsum(torch.softmax(outputs.float(), dim=1), dim=1)
    steps = torch.arange(BINS, device=outputs.device, dtype=torch.float32)
    observed = (steps[None, :] >= pct.float()[:, None]).float()  # H(j - y): 1 from the true % on
    return (cumulative - observed).square().mean(dim=1)


def stage_probabilities(mass: torch.Tensor) -> torch.Tensor:
    """(N, 6) P(stage k) of (N, 101) probabilities of each whole %: the mass of each stage's range."""
    ends = torch.tensor([int(p) for p in STAGE_UPPER_PCT], device=mass.device)
    cumulative = torch.cumsum(mass, dim=1)[:, ends]
    return torch.diff(cumulative, dim=1, prepend=torch.zeros_like(cumulative[:, :1]))


def expected_pct(mass: torch.Tensor) -> torch.Tensor:
    """(N,) the mean % eroded surface of (N, 101) probabilities of each whole %."""
    return mass @ torch.arange(BINS, device=mass.device, dtype=mass.dtype)
