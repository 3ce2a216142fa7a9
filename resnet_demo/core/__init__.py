"""The shared core: everything the engines, the command line and the app stand on.

No gradio, plotly or captum here, and nothing from the layers above.

* :mod:`.model`: the ResNet with torchvision's names, and the one block forward;
* :mod:`.weights`: named weights, checkpoints, the cache of shared models;
* :mod:`.hub_cache`: the named weights in the Hugging Face Hub cache (timm's copies of torchvision's);
* :mod:`.state_dict_fit`: the one strict load of a state_dict, and what keeps one from fitting;
* :mod:`.checkpoint_files`: a ``.pth`` read as hostile input (file type, sizes, NaNs, metadata);
* :mod:`.safetensors_files`: a ``.safetensors`` read as hostile input, and written with its metadata;
* :mod:`.class_names`: class names read from files, without the characters that reorder text;
* :mod:`.images`: photos in (any mode, EXIF, bombs) and the weights' exact preprocessing;
* :mod:`.fold`: the folded, in-place inference copy of a model;
* :mod:`.devices`: device and CPU-core rules;
* :mod:`.precision`: the forward's number format (float32, bfloat16, auto) and native-bfloat16 detection;
* :mod:`.errors`: :class:`UserError`, the one kind of error a user is shown;
* :mod:`.render`: overlays and grids (numpy + PIL);
* :mod:`.features`: a stage's strongest channels as a grid;
* :mod:`.complexity`: parameters and multiply-accumulates;
* :mod:`.cam`: Grad-CAM from activations and gradients, and the one finishing of every
  class-activation map (upsample, then scale to [0, 1]), for both engines;
* :mod:`.shell`: a per-call copy of a shared model's module tree, sharing its weights, to
  hook, switch or swap children on;
* :mod:`.cache`: :class:`~.cache.BoundedCache`, the one bounded cache (least recently used out first).
"""
