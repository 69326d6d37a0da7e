"""Hidden-state distillation between decoder layers: feature terms on the tokens that take part in the loss."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from lightning_kd.core.feature_terms import FeatureTerms


class TokenFeatureTerms(FeatureTerms):
    """:class:`~lightning_kd.core.feature_terms.FeatureTerms` on token features: hidden-state distillation.

    A causal LM's layers give ``(B, L, H)`` features; the terms see them as ``(n, H)`` rows, one per token that
    takes part in the loss (``mask`` of :meth:`compute`, ``(B, L)`` bool: the positions with a next-token label), so
    padding and prompt positions teach nothing, and a ``connector: true`` term gets a linear map ``H_student →
    H_teacher``. Without a mask (the dry run that sizes connectors) every position is a row. A token-mean loss such
    as :class:`~lightning_kd.losses.FeatureMatchLoss` (``mse``: mean over tokens and width, ``cosine``: mean over
    tokens) then gives the mean over the valid tokens, which the module turns into a sum over them before it
    normalises by the whole step's valid tokens, like the token loss.
    """

    def compute(
        self, index: Tensor | None = None, mask: Tensor | None = None, rows: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Unweighted value of every term on the rows of the tokens where ``mask`` (``(B, L)`` bool) is True; every
        position when ``mask`` is ``None``.

        ``rows`` (optional): the same positions as flat indices into ``B·L``, worked out where the labels were
        on the host (``mask.flatten().nonzero()``): gathered with them, the rows need no device read — selecting
        by a boolean mask has to learn how many rows there are, which waits for the accelerator."""
        return self._compute(self._token_source(mask, rows), index)

    def feature_source(self) -> Callable[[str, str, int], dict[str, Tensor]]:
        """Every position's row (the dry run that sizes connectors has no mask)."""
        return self._token_source(None)

    def _token_source(
        self, mask: Tensor | None, rows: Tensor | None = None
    ) -> Callable[[str, str, int], dict[str, Tensor]]:
        def source(side: str, capture: str, teacher: int) -> dict[str, Tensor]:
            captured = self.features(side, capture, teacher)
            return {path: self._tokens(path, side, f, mask, rows) for path, f in captured.items()}

        return source

    @staticmethod
    def _tokens(path: str, side: str, feature: Tensor, mask: Tensor | None, rows: Tensor | None = None) -> Tensor:
        if feature.dim() != 3:
            raise ValueError(
                f"the {side}'s layer {path!r} gives features of shape {tuple(feature.shape)}, not (batch, sequence, "
                "hidden); hidden-state terms take a decoder layer's (or the final norm's) output, e.g. "
                "model.layers.1."
            )
        if mask is None:
            return feature.flatten(0, 1)
        if feature.shape[:2] != mask.shape:
            raise ValueError(
                f"the {side}'s layer {path!r} gives features for {tuple(feature.shape[:2])} (batch, sequence) "
                f"positions but the batch has {tuple(mask.shape)}; hook a layer that keeps one row per token."
            )
        if rows is not None:
            return feature.flatten(0, 1).index_select(0, rows.to(feature.device, non_blocking=True))
        return feature[mask]
