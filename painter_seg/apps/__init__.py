"""Predictors over a model and a strategy: arrays and PIL images in, label maps out.

* :mod:`~painter_seg.apps.few_shot`: :class:`~painter_seg.apps.few_shot.FewShotSegmenter`
  (example pairs or a tuned prompt -> labels of query images);
* :mod:`~painter_seg.apps.video`: ``VideoPropagator`` (a first-frame mask through a video);
* :mod:`~painter_seg.apps.prompts`: boxes and scribbles turned into prompt masks.

The jobs that read files and write outputs around them live in :mod:`painter_seg.jobs`.
"""
