"""A model as text: ``Sequential.summary``."""

import numpy as np

from .layers import Dense, Residual


def table(model):
    """The layers (Residual blocks indented), their output widths and parameter
    counts, then the totals, loss, optimizer and dtype."""
    lines = [f"{'layer':<40}{'output':>12}{'params':>12}"]

    def rows(layers, indent):
        for layer in layers:
            if isinstance(layer, Residual):
                lines.append(f"{indent}Residual: x + f(x), f =")
                rows(layer.layers, indent + "  ")
            elif isinstance(layer, Dense):
                lines.append(
                    f"{indent + repr(layer):<40}{layer.units:>12}"
                    f"{layer.weight.size + layer.bias.size:>12}"
                )
            else:
                lines.append(f"{indent + repr(layer):<40}{'':>12}{0:>12}")

    rows(model.layers, "")
    lines.append(
        f"total parameters: {model.count_params()}; loss: {model.loss.name};"
        f" optimizer: {model.optimizer!r}; dtype: {np.dtype(model.dtype).name}"
    )
    return "\n".join(lines)
