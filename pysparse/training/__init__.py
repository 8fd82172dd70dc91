"""Training sparse hand landmark models: hand image sources, augmentation, distillation from
the dense model, and evaluation against it (needs torch, Pillow and tqdm)."""
