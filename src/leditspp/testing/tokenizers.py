"""Offline tokenizers for the tiny models: the real CLIP BPE tokenizer and a small T5-style one.

Nothing can be downloaded here. The CLIP tokenizer is derived from CLIP's BPE vocabulary, vendored
beside this module (``bpe_simple_vocab_16e6.txt.gz``, as OpenAI's CLIP and ``open-clip-torch`` ship it;
MIT-licensed, the licence in ``bpe_simple_vocab_16e6.LICENSE.txt``); the T5 tokenizer is a
word-level Unigram model of a small English corpus (:func:`t5_corpus`).
"""

from __future__ import annotations

import collections
import gzip
import json
import math
import string
from pathlib import Path
from typing import Any


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte → printable-unicode table used by the BPE vocabulary."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def clip_bpe_path() -> Path:
    """CLIP's BPE vocabulary (byte-pair merges, gzipped), shipped with this package."""
    return Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")


def write_clip_tokenizer_files(folder: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the CLIP tokenizer (49,408 tokens) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(clip_bpe_path()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return folder


def clip_tokenizer(folder: str | Path, **kwargs: Any) -> Any:
    """A real ``CLIPTokenizer`` (model_max_length 77) built offline in ``folder``.

    ``kwargs`` go to the tokenizer, e.g. ``pad_token="!"`` as in SD 2.x and SDXL's second tokenizer.
    """
    from transformers import CLIPTokenizer

    folder = write_clip_tokenizer_files(folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77, **kwargs)


#: The English the tiny T5 tokenizer knows as whole words: test prompts, edit concepts and the
#: captions of a few ordinary photos. Word counts (and so the pieces' scores) come from it.
T5_CORPUS = (
    "a photo of a cat",
    "a photo of a dog",
    "a photo of a cat wearing a red hat",
    "a photo of a dog wearing sunglasses",
    "a portrait of a man with a beard and glasses",
    "a portrait of a woman with long hair and a smile",
    "a close up photo of a face",
    "a house in the snow",
    "snow on the trees in winter",
    "a red square and a blue circle on a white background",
    "a green triangle next to a yellow star",
    "a painting of a mountain lake at sunset",
    "an oil painting in the style of van gogh",
    "a watercolor drawing of flowers",
    "a bowl of fruit on a wooden table",
    "a car on a road in the city",
    "a horse in a field of grass",
    "a boat on the sea under a cloudy sky",
    "a bird sitting on a branch",
    "a child playing with a ball in the park",
    "a cup of coffee and a book",
    "an old man wearing a hat",
    "a young girl wearing a crown",
    "a smiling person with a mask",
    "a cartoon of a robot",
    "a pencil sketch of a building",
    "the sun and the moon",
    "rain fire water light dark",
    "big small tall short round bright",
    "high quality detailed realistic blurry",
    "stone glass metal wood paper",
    "add remove make turn into from to by for is are",
)

#: Colours and shapes, every pairing of which joins the corpus ("a red square", …).
T5_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")
T5_SHAPES = ("square", "circle", "triangle", "star", "heart", "disc", "ring", "cube", "sphere", "hat")

#: Characters every prompt may fall back to, one piece each, so ASCII text never becomes ``<unk>``.
T5_ALPHABET = string.ascii_letters + string.digits + string.punctuation


def t5_corpus() -> list[str]:
    """:data:`T5_CORPUS` plus "a {colour} {shape}" for every colour and shape."""
    return [*T5_CORPUS, *(f"a {c} {s}" for c in T5_COLOURS for s in T5_SHAPES)]


def t5_unigram_pieces(corpus: list[str]) -> list[tuple[str, float]]:
    """The pieces and log-probability scores of a word-level Unigram model of ``corpus``.

    T5's special tokens come first (``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2). Each word ``w``
    with count ``n`` of ``N`` gives ``▁w`` (score ``ln(n/N)``) and, 2 nats less likely, ``w``
    without the word-start marker ``▁`` and ``▁W`` capitalised; ``▁`` and the characters of
    :data:`T5_ALPHABET` score 5 nats below the rarest word, so known words stay whole and others
    spell out. Sorted by score, then piece: the same list every time.
    """
    counts = collections.Counter(w for line in corpus for w in line.split())
    total = sum(counts.values())
    scores: dict[str, float] = {}
    for word, n in counts.items():
        score = math.log(n / total)
        scores["▁" + word] = score
        scores.setdefault(word, score - 2.0)
        scores.setdefault("▁" + word.capitalize(), score - 2.0)
    floor = min(scores.values()) - 5.0
    for char in ["▁", *T5_ALPHABET]:
        scores.setdefault(char, floor)
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    return specials + sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def t5_backend_tokenizer(pieces: list[tuple[str, float]]) -> Any:
    """A ``tokenizers.Tokenizer`` shaped like T5's: Unigram over ``pieces`` (``<unk>`` = 2), split
    on whitespace with the Metaspace ``▁`` prefix, ``</s>`` (id 1) appended to every sequence."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram

    backend = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    metaspace = {"replacement": "▁", "prepend_scheme": "always", "split": True}
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(**metaspace)]
    )
    backend.decoder = decoders.Metaspace(**metaspace)
    backend.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)]
    )
    return backend


def t5_tokenizer(folder: str | Path, **kwargs: Any) -> Any:
    """A T5-style ``T5TokenizerFast`` built offline, saved to ``folder`` and loaded back from it.

    A word-level Unigram model of :func:`t5_corpus` (about 500 pieces, plus T5's 100 ``<extra_id_*>``
    sentinels; see :func:`t5_unigram_pieces`) — not trained with ``tokenizers``' Unigram trainer,
    which on a corpus this small splits "red" into "re" + "d" and gives slightly different scores
    from run to run. ``kwargs`` go to the tokenizer; ``model_max_length`` defaults to 512, as in
    SD3's and FLUX.1's T5 tokenizers (the pipelines pass their own ``max_sequence_length``).
    """
    from transformers import T5TokenizerFast

    kwargs.setdefault("model_max_length", 512)
    backend = t5_backend_tokenizer(t5_unigram_pieces(t5_corpus()))
    T5TokenizerFast(tokenizer_object=backend, **kwargs).save_pretrained(str(folder))
    return T5TokenizerFast.from_pretrained(str(folder))
