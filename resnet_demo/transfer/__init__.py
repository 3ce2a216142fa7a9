"""The same ResNet backbone at work in torchvision's segmentation and detection models.

- ``weights.py``: the published entries (categories, transforms, metrics from the enums), loaded lazily, once each;
- ``backbone.py``: the backbone's weights mapped into this project's own :class:`~resnet_demo.model.ResNet`;
- ``segment.py`` / ``detect.py``: masks with their classes, boxes with labels and scores;
- ``explain.py``: Grad-CAM at a backbone stage for a segmentation class or one detection;
- ``run.py``: one photo through a model, explained, with the backbone check;
- ``drawing.py``: masks and boxes over the photo;
- ``cli.py``: the ``transfer`` command.
"""
