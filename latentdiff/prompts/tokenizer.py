"""Train a small CLIP-format BPE tokenizer from a list of texts.

The vocabulary starts with all 256 byte symbols (alone and as word ends), so any text,
in any script, tokenizes to something: unknown words fall back to byte pieces instead of
vanishing. The result is a plain `CLIPTokenizer` (vocab + merges) that diffusers loads.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's pre-tokenizer pattern, with \p{L}/\p{N} approximated by the re module's classes.
_WORDS = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+""", re.IGNORECASE)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _word_symbols(word: str) -> tuple[str, ...]:
    table = bytes_to_unicode()
    chars = [table[b] for b in word.encode("utf-8")]
    return tuple(chars[:-1]) + (chars[-1] + "</w>",)


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def train_bpe(texts: list[str], num_merges: int = 2000, min_count: int = 2) -> tuple[dict, list[tuple[str, str]]]:
    """Learn BPE merges over lower-cased words; return (vocab, merges) in CLIP's layout."""
    words = Counter(w for t in texts for w in _WORDS.findall(t.lower().strip()))
    corpus = {_word_symbols(w): c for w, c in words.items()}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for symbols, count in corpus.items():
            for a, b in zip(symbols, symbols[1:]):
                pairs[a, b] += count
        if not pairs:
            break
        # Ties broken by the pair itself so the result does not depend on dict order.
        best, count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if count < min_count:
            break
        merges.append(best)
        corpus = {_merge(s, best): c for s, c in corpus.items()}
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def build_tokenizer(texts: list[str], num_merges: int = 2000, max_length: int = 77):
    """A `CLIPTokenizer` trained on `texts` (padding with EOS, as SD1's tokenizer does)."""
    from transformers import CLIPTokenizer

    vocab, merges = train_bpe(texts, num_merges)
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    tok.model_max_length = max_length
    return tok
