"""Benchmarks: ``python -m resnet_demo bench`` and its variants, each module one of them.

- ``explain.py``: the explanation engine against reference pipelines (the default);
- ``train.py``: the fine-tune step against the PyTorch ImageNet example (``--train``);
- ``trust.py``: the faithfulness curves and the cost of every cheap map (``--trust``);
- ``slim.py``: a pruned and a distilled model against the original (``--slim``);
- ``serve.py``: the app as its visitors see it (``--serve``), with ``serve_page.py`` (the page in
  Chromium) and ``process_cpu.py`` (a process's CPU use, to tell when the server is quiet);
- ``transfer.py``: the segmentation and detection models and their Grad-CAM, against the
  classifier's forward (``--transfer``);
- ``audit.py``: the audit's batched Grad-CAM at every stage against torchvision's forward, and
  the clustering of 1,000 maps (``--audit``);
- ``report.py``: what they share: interleaved timing, the description of the machine, and
  the table writers;
- ``cli.py``: the command.
"""
