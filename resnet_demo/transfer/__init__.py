"""The same ResNet backbone at work in torchvision's segmentation and detection models.

- ``weights.py``: the published entries (categories, transforms, metrics from the enums), loaded lazily, once each;
- ``backbone.py``: the backbone's weights mapped into this project's own :class:`~resnet_demo.core.model.ResNet`;
- ``segment.py`` / ``detect.py``: masks with their classes, boxes with labels and scores;
- ``object_mask.py``: DeepLabV3's mask of a named VOC class: the object of the explanation's pointing games;
- ``explain.py``: one photo through a model: its answer, Grad-CAM at every backbone stage for a
  segmentation class or one detection (one backward; the classifier's Grad-CAM,
  :mod:`resnet_demo.core.cam`, through a :func:`~resnet_demo.core.shell.shell` of the model), the feature maps;
- ``check.py``: the backbone's stage outputs against our ResNet's, on the user's photo;
- ``drawing.py``: masks and boxes over the photo;
- ``cli.py``: the ``transfer`` command.
"""
