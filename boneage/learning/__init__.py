"""Networks and their training: the image store and batches, augmentation, the architectures
(torchvision and EfficientNet-Lite), the training spec, the trainer with its checkpoints and cached
frozen blocks, and inference. May import :mod:`boneage.imaging`; never :mod:`boneage.results`."""
