"""Late score fusion: learned per-modality weights on the two baselines' log-probabilities
plus a per-class bias, fitted on ``val`` by L-BFGS (the baselines stay frozen)."""
from __future__ import annotations

import torch
from torch import nn


class LateFusion(nn.Module):
    uses = ("text", "image")

    def __init__(self, spec: dict):
        super().__init__()
        self.spec = spec
        self.weights = nn.Parameter(torch.ones(2))  # text, image
        self.bias = nn.Parameter(torch.zeros(spec["n_classes"]))

    def forward(self, batch: dict) -> torch.Tensor:
        # batch["logp_text"], batch["logp_image"]: (batch, n_classes) log-probabilities
        return self.weights[0] * batch["logp_text"] + self.weights[1] * batch["logp_image"] + self.bias

    def fit(self, logp_text: torch.Tensor, logp_image: torch.Tensor, y: torch.Tensor,
            class_weights: torch.Tensor, l2: float = 1e-3) -> "LateFusion":
        opt = torch.optim.LBFGS(self.parameters(), lr=0.5, max_iter=200, line_search_fn="strong_wolfe")
        loss_fn = nn.CrossEntropyLoss(weight=class_weights)
        batch = {"logp_text": logp_text, "logp_image": logp_image}

        def closure():
            opt.zero_grad()
            loss = loss_fn(self(batch), y) + l2 * (self.weights - 1).pow(2).sum()
            loss.backward()
            return loss
        opt.step(closure)
        return self
