"""The ControlNet extension's command-line flags, added before the final parse (sd-webui-controlnet's names)."""

import argparse


def preload(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controlnet-dir", default=None,
                        help="another folder of ControlNet models (models/ControlNet is always read)")
    parser.add_argument("--controlnet-annotator-models-path", default=None,
                        help="folder of preprocessor (annotator) weights (default: models/ControlNet-annotators)")
