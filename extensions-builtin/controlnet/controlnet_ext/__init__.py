"""The ControlNet extension's package (on sys.path through the extension loader, as Lora's
`lora_networks`). Its modules import torch, diffusers and cv2 only inside functions or when they
are the ones that need them, so listing models and building the UI stay light."""
