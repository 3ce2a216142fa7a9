"""Benchmarks: ``python -m resnet_demo bench`` (the explanation engine against reference
pipelines, :mod:`.explain`) and ``python -m resnet_demo bench --train`` (the fine-tune step
against the PyTorch ImageNet example, :mod:`.train`). :mod:`.report` holds what both share:
interleaved timing, the description of the machine, and the table writers; :mod:`.cli`
the command.
"""
