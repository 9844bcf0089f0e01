"""The LoRA extension's command-line flag, added before the final parse (as A1111's Lora preload.py)."""

import argparse


def preload(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lora-dir", default=None, help="folder with LoRA files (default: models/Lora)")
