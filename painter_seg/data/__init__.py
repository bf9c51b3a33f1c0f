"""Data: the procedural generator, folder readers and in-context training samples.

- :mod:`painter_seg.data.synthetic`: generated episodes, clips and scene views.
- :mod:`painter_seg.data.folders`: image/mask folder layouts (FSS-1000, PerSeg, DAVIS, ...).
- :mod:`painter_seg.data.in_context`: training samples (SegGPT canvases) and datasets.
"""
