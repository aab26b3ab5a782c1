"""The papers' optimizer: SGD with momentum and weight decay as an L2 term (AssembleNet A.6).

It lives in model/ because it is Keras only (both backends run it, and the model tests check it under
each) and because which weights decay is a property of the network's layers (`decays`).
"""

import keras


def decays(variable) -> bool:
    """Whether the L2 term covers `variable`: conv and dense kernels only (AssembleNet A.6's weight
    decay), not batch-norm gamma/beta, biases, the connection weights w (§3.3 of AssembleNet++), the
    static attention v or the peer-attention weights h (§3.5)."""
    return variable.path.rsplit("/", 1)[-1] == "kernel"


@keras.saving.register_keras_serializable(package="assemblenet")
class MomentumL2(keras.optimizers.SGD):
    """SGD with momentum whose weight decay is an L2 term in the loss, as in AssembleNet A.6.

    A.6 trains with "the standard Momentum Optimizer in TensorFlow" and "weight decay 1e-4": there the
    decay is the loss term (l2/2)·||w||², so its gradient l2·w is added to the data gradient *before*
    the momentum: m ← μ·m − lr·(g + l2·w), w ← w + m. Keras' `SGD(weight_decay=...)` instead shrinks
    w by lr·wd·w outside the momentum, which at μ = 0.9 is about 10x weaker. Only the variables
    `decays` selects get the term; the rule is by name, so a reloaded optimizer decays the same ones.
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, l2=0.0, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("MomentumL2: pass the decay as l2=, not weight_decay= (that one is decoupled)")
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        if l2 < 0:
            raise ValueError(f"MomentumL2: l2={l2} must be non-negative")
        self.l2 = float(l2)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._decayed = [decays(v) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        if self.l2 and self._decayed[self._get_variable_index(variable)]:
            # d/dw (l2/2)||w||² = l2·w, entering the momentum with the data gradient.
            gradient = gradient + keras.ops.cast(self.l2, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}
