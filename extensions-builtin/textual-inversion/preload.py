"""Flags of the textual-inversion extension (A1111 has them in its core flags)."""


def preload(parser):
    parser.add_argument("--embeddings-dir", type=str, default=None,
                        help="another folder of textual-inversion embeddings, besides the data folder's embeddings/")
    parser.add_argument("--hypernetwork-dir", type=str, default=None,
                        help="hypernetworks folder (default: models/hypernetworks); listed by the API, not applied")
