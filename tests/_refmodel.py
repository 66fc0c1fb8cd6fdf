"""A fastbp model described, through its public API, in fastbp._reference's terms."""

import fastbp
from fastbp import _reference


def dense_layers(model):
    """The Dense layers in order, and each one's residual source (None, -1 for the
    network input, or the index of the Dense layer whose output it adds)."""
    dense, skips = [], []
    for layer in model.layers:
        if isinstance(layer, fastbp.Residual):
            source = len(dense) - 1
            inner = [d for d in layer.layers if isinstance(d, fastbp.Dense)]
            if any(isinstance(d, fastbp.Dropout) and d.rate for d in layer.layers):
                raise ValueError("the reference has no dropout")
            dense += inner
            skips += [None] * (len(inner) - 1) + [source]
        elif isinstance(layer, fastbp.Dense):
            dense.append(layer)
            skips.append(None)
        elif layer.rate:
            raise ValueError("the reference has no dropout")
    return dense, skips


def network(model):
    """The network keyword arguments of the reference's functions (``activations``,
    ``loss``, ``skips``, ``act_params``, ``penalties``, ``loss_param``) for a built
    model, its output activation fused into the loss as fastbp does."""
    dense, skips = dense_layers(model)
    activations = [layer.activation for layer in dense]
    loss = model.loss.name
    if skips[-1] is None and activations[-1] == _reference.FUSED.get(loss):
        activations[-1] = "identity"

    def penalty(layer):
        k, b = layer.kernel_regularizer, layer.bias_regularizer
        return (k.l1 if k else 0.0, k.l2 if k else 0.0, b.l1 if b else 0.0, b.l2 if b else 0.0)

    act_params = [
        {"leaky_relu": layer.negative_slope, "elu": layer.alpha}.get(layer.activation)
        for layer in dense
    ]
    regularizers = [
        r for layer in dense for r in (layer.kernel_regularizer, layer.bias_regularizer)
    ]
    return dict(
        activations=activations,
        loss={"squared_error": "mse"}.get(loss, loss),  # the same loss, scaled by row_scale
        skips=skips,
        act_params=act_params,
        penalties=[penalty(layer) for layer in dense],
        loss_param=getattr(model.loss, "delta", 1.0),
        row_scale=model.loss.row_scale(dense[-1].units),
        per_sample_penalty=any(r is not None and r.per_sample for r in regularizers),
        half_deviance=getattr(model.loss, "half_deviance", False),
    )


def trainable(model):
    return [bool(layer.trainable) for layer in dense_layers(model)[0]]


def optimizer(model):
    """A reference optimizer with the model's optimizer's configuration (fresh state)."""
    opt = model.optimizer
    return _reference.Optimizer(type(opt).__name__.lower(), **opt.get_config())


def predict(model, X):
    """What ``model.predict(X)`` returns, by the reference: the trained network's output,
    then the activation fused into the loss."""
    net = network(model)
    out = _reference.forward(
        model.get_weights(), net["activations"], X, net["skips"], net["act_params"]
    )[-1]
    return (
        _reference.activate(_reference.FUSED[net["loss"]], out)
        if net["loss"] in _reference.FUSED
        else out
    )
