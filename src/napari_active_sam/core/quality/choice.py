"""Which of SAM's three masks to show for a lone click, chosen by the quality ensemble.

A lone click is ambiguous (a part, the object, a whole), so SAM answers with three masks and
shows the one its IoU head rates best. On images unlike its training data that rating is
the weakest of the quality estimators: on the real validation set it often picks the larger
mask that swallows a nucleus's neighbours, or a small piece of a brain. The ensemble of
:mod:`~napari_active_sam.core.quality.estimators` ranks masks better there (it adds the
posterior's spread and what the image around each mask looks like), so the annotator, the
benchmark and the demo let it choose: :meth:`QualityModels.judge
<napari_active_sam.core.quality.estimators.QualityModels.judge>` judges the three masks and
records the verdict in :attr:`Prediction.judged
<napari_active_sam.core.engine.predictor.Prediction.judged>`, which every later choice of
the best multimask head follows. A box or several clicks are not ambiguous and are left to
SAM (:func:`~napari_active_sam.core.engine.predictor.shown_head`).
"""

from __future__ import annotations

import numpy as np

from ..engine.predictor import Prediction, Predictor
from ..engine.store import Embedding
from ..engine.zoom import JudgedDecoder, ZoomingPredictor
from ..prompts import PromptSet
from .estimators import QualityModels, can_judge

__all__ = ["Decoder", "JudgingPredictor", "can_judge"]


Decoder = Predictor | ZoomingPredictor
"""What decodes prompts."""


class JudgingPredictor(JudgedDecoder):
    """A decoder whose answers to a lone click come with their multimask heads judged by the
    quality ensemble (a zooming decoder's at the magnification judged best), for the
    episodes of a benchmark on one slice.

    Parameters
    ----------
    decoder : Decoder
    models : QualityModels
        For the decoder's model.
    image : np.ndarray
        uint8 ``(H, W, 3)`` SAM input of the slice.
    """

    def __init__(self, decoder: Decoder, models: QualityModels, image: np.ndarray):
        super().__init__(decoder, self._judge)
        self.models, self.image = models, image

    def _judge(self, prediction: Prediction, prompts: PromptSet, embedding: Embedding):
        return self.models.judge(prediction, prompts, embedding, self.image)
