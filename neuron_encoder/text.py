"""Tokenization with the checkpoint's own tokenizer, and padding to a fixed (bucket) length.

Every kind of tokenizer (WordPiece, byte-level BPE, Unigram) runs through the `tokenizers` library from
the checkpoint's tokenizer.json, with the checkpoint's own post-processor for special tokens and pairs;
older layouts (a bare vocab.txt, or sentencepiece.bpe.model) are read or converted into one.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .errors import CheckpointError, ConfigError, ShapeError
from .files import read_json_file


@dataclass
class Batch:
    """Model inputs, all int64 (B, T); `lengths` are the real token counts before padding."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor

    @property
    def lengths(self) -> list[int]:
        return self.attention_mask.sum(1).tolist()

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.input_ids, self.attention_mask, self.token_type_ids

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)

    def padded(self, batch: int, seq: int, pad_id: int) -> Batch:
        """This (rows, T) block placed in a (batch, seq) one, in one allocation: the padding of inputs
        that are already tensors (pad_rows pads token-id lists). Filler rows attend to one token, so no
        row is all-masked (which would give NaN)."""
        rows, length = self.shape
        if (rows, length) == (batch, seq):
            return self
        out = torch.zeros((3, batch, seq), dtype=torch.long)  # ids, mask, types
        out[0].fill_(pad_id)
        out[0, :rows, :length], out[1, :rows, :length], out[2, :rows, :length] = self.as_tuple()
        out[1, rows:, 0] = 1
        return Batch(out[0], out[1], out[2])


def pad_rows(rows: Sequence[Sequence[int]], batch: int, seq: int, pad_id: int,
             types: Sequence[Sequence[int]] | None = None) -> Batch:
    """Ragged token-id rows (a tokenizer's output) in one (batch, seq) block, padded once: pad ids after
    each row, masked out; rows past len(rows) are filler that attend to one token, so no row is
    all-masked (which would give NaN). One flat list per tensor: far faster than a row at a time."""
    filler = batch - len(rows)
    lengths = torch.tensor([len(ids) for ids in rows] + [1] * filler)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()  # (B, T)
    return Batch(_flat(rows, batch, seq, pad_id), mask,
                 torch.zeros_like(mask) if types is None else _flat(types, batch, seq, 0))


def _flat(rows: Sequence[Sequence[int]], batch: int, seq: int, fill: int) -> torch.Tensor:
    flat: list[int] = []
    for values in rows:
        flat += values
        flat += [fill] * (seq - len(values))
    flat += [fill] * (seq * (batch - len(rows)))
    return torch.tensor(flat, dtype=torch.long).view(batch, seq)


DIRECTIONS = ("right", "left")  # which end of a text over the limit is cut (TEI's truncation_direction)
STRATEGIES = ("longest_first", "only_second")  # how a pair over the limit is cut (Hugging Face's names)

# What a tokenizer is made of in a checkpoint: copied as they are into a compiled artifact.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
# The files a tokenizer can be read from, in order of preference.
SOURCES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model")


@dataclass(frozen=True)
class Token:
    """One token of a text, as text-embeddings-inference's /tokenize shows it."""

    id: int
    text: str  # the piece of the input it covers, or the special token itself
    special: bool
    start: int | None  # character offsets into the input; None for special tokens
    stop: int | None


def cut(ids: list[int], limit: int, direction: str = "right") -> list[int]:
    """At most `limit` ids, keeping the first ([CLS]) and the last ([SEP]): the right cut drops the
    end of the text, the left cut its beginning."""
    if len(ids) <= limit:
        return ids
    if direction == "left":
        return ids[:1] + ids[len(ids) - limit + 1:]
    return ids[:limit - 1] + ids[-1:]


def longest_first(first: int, second: int, budget: int) -> tuple[int, int]:
    """How many tokens of each text of a pair to keep within `budget`: the longer one is cut first, and
    when both must be, each keeps half. Hugging Face tokenizers' `longest_first` rule, to the token."""
    if first + second <= budget:
        return first, second
    short, long = sorted((first, second))
    long = short if short > budget else max(short, budget - short)
    if short + long > budget:
        short, long = budget // 2, budget // 2 + budget % 2
    return (long, short) if first > second else (short, long)


def has_tokenizer(directory: str | Path) -> bool:
    return any((Path(directory) / name).exists() for name in SOURCES)


class Row(list):
    """One input's token ids, with the type id of each (a pair's second text is type 1 where the model
    has token types): a list of ids wherever ids are expected."""

    __slots__ = ("types",)

    def __init__(self, ids: Sequence[int], types: Sequence[int] | None = None) -> None:
        super().__init__(ids)
        self.types = list(types) if types is not None else [0] * len(self)


class Tokenizer:
    """A thin wrapper over Hugging Face `tokenizers`, reading tokenizer.json, vocab.txt (BERT's
    WordPiece, lowercased as tokenizer_config.json says) or sentencepiece.bpe.model (converted)."""

    def __init__(self, directory: str | Path, max_length: int = 512) -> None:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers.implementations import BertWordPieceTokenizer
        directory = Path(directory)
        self.directory = directory
        settings = _settings(directory)
        if (directory / "tokenizer.json").exists():
            self._tok = HFTokenizer.from_file(str(directory / "tokenizer.json"))
        elif (directory / "vocab.txt").exists():
            self._tok = BertWordPieceTokenizer(str(directory / "vocab.txt"),
                                               lowercase=settings.get("do_lower_case", True))
        elif (directory / "sentencepiece.bpe.model").exists():
            self._tok = _convert_sentencepiece(directory)
        else:
            raise CheckpointError(f"{directory} has no tokenizer.json, vocab.txt or sentencepiece.bpe.model")
        # We pad and truncate ourselves, to bucket lengths; the file's own settings would fight that.
        self._tok.no_padding()
        self._tok.no_truncation()
        self.max_length = max_length
        self.pad_id = _pad_id(self._tok, settings)

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Token counts of texts, special tokens included, before any truncation."""
        return [len(encoding.ids) for encoding in self._tok.encode_batch(list(texts))]

    def save(self, directory: str | Path) -> None:
        """Copy the files this tokenizer was read from into `directory` (an artifact's tokenizer/)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if (self.directory / name).exists():
                shutil.copyfile(self.directory / name, directory / name)
        if not has_tokenizer(directory):  # converted from sentencepiece: keep the conversion
            self._tok.save(str(directory / "tokenizer.json"))

    def encode(self, texts: Sequence[str] | Sequence[tuple[str, str]], pad_to: int | None = None,
               truncate: bool = True, direction: str = "right", strategy: str = "longest_first") -> Batch:
        """Tokenise texts (or text pairs, in the tokenizer's own pair template) and pad to `pad_to` or the
        longest.

        A text over the limit loses its end (`direction` "left": its beginning, as TEI's truncation_direction);
        a pair is cut `longest_first`, or `only_second` (reranking: the query whole, a query that leaves no
        room for its text a ShapeError). truncate=False raises a ShapeError instead of cutting.
        """
        limit = min(pad_to or self.max_length, self.max_length)
        rows = self.rows(texts, limit, truncate, direction, strategy)
        length = pad_to or max(len(ids) for ids in rows)
        return pad_rows(rows, len(rows), length, self.pad_id, [ids.types for ids in rows])

    def rows(self, texts: Sequence[str] | Sequence[tuple[str, str]], limit: int, truncate: bool = True,
             direction: str = "right", strategy: str = "longest_first") -> list[Row]:
        """Each text's (or pair's) ids and type ids within `limit`, unpadded, cut as `encode` says: for
        callers that pack rows themselves (the server's queue carries them)."""
        if direction not in DIRECTIONS or strategy not in STRATEGIES:
            raise ConfigError(f"truncation direction {direction!r} and strategy {strategy!r} must be one of "
                             f"{DIRECTIONS} and {STRATEGIES}")
        if isinstance(texts, str):
            raise ShapeError("pass a list of texts, not a single string")
        if not texts:
            raise ShapeError("no texts to encode")
        encodings = self._tok.encode_batch(list(texts))
        rows = []
        for number, (text, enc) in enumerate(zip(texts, encodings)):
            ids, types = enc.ids, enc.type_ids
            if len(ids) > limit:
                if not truncate:
                    raise ShapeError(f"input {number} has {len(ids)} tokens, more than the limit {limit}: "
                                     f"{str(text)[:60]!r}...")
                if isinstance(text, str):
                    ids, types = cut(ids, limit, direction), cut(types, limit, direction)  # keeps [CLS], [SEP]
                else:
                    ids, types = self._truncated_pair(text, limit, direction, strategy)
            rows.append(Row(ids, types))
        return rows

    def _truncated_pair(self, pair: tuple[str, str], limit: int, direction: str = "right",
                        strategy: str = "longest_first") -> tuple[list[int], list[int]]:
        """A pair cut to `limit` tokens as Hugging Face cuts it: each text without special tokens, cut by
        `strategy`, then the checkpoint's post-processor adds the specials."""
        first, second = (self._tok.encode(text, add_special_tokens=False) for text in pair)
        budget = limit - self._tok.num_special_tokens_to_add(is_pair=True)
        if strategy == "only_second":
            if len(first.ids) >= budget:
                raise ShapeError(f"the query has {len(first.ids)} tokens: with the special tokens it leaves no "
                                 f"room for a text within the limit of {limit}; shorten the query")
            keep_first, keep_second = len(first.ids), budget - len(first.ids)
        else:
            keep_first, keep_second = longest_first(len(first.ids), len(second.ids), budget)
        first.truncate(keep_first, direction=direction)
        second.truncate(keep_second, direction=direction)
        enc = self._tok.post_process(first, second)
        return enc.ids, enc.type_ids

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The ids of each text with its special tokens, neither padded nor cut: for callers that pack
        and truncate themselves (the server). One text skips the batch call's thread pool."""
        if len(texts) == 1:
            return [self._tok.encode(texts[0]).ids]
        return [encoding.ids for encoding in self._tok.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids, special tokens left out (an HTTP benchmark sends a batch's text)."""
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def tokens(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[Token]]:
        """Each text's tokens with their ids and character offsets (the server's /tokenize)."""
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [[Token(i, token, True, None, None) if special else Token(i, text[start:stop], False, start, stop)
                 for i, token, special, (start, stop) in zip(enc.ids, enc.tokens, enc.special_tokens_mask,
                                                             enc.offsets)]
                for text, enc in zip(texts, encodings)]


def random_batch(config, lengths: torch.Tensor, seq_len: int, generator: torch.Generator) -> Batch:
    """Random token ids with `lengths` real tokens per row, padded to seq_len, segment ids zero.

    Ids start past BERT's special and unused tokens (1000) and never equal the pad id, so the mask
    alone says what is real: inputs for models without a tokenizer, and for the numerics gate.
    """
    low = 1000 if config.vocab_size > 2000 else 1
    ids = torch.randint(low, config.vocab_size - 1, (len(lengths), seq_len), generator=generator)
    if config.pad_token_id >= low:
        ids += (ids >= config.pad_token_id).long()  # skip over the pad id
    rows = [row[:length] for row, length in zip(ids.tolist(), lengths.tolist())]
    return pad_rows(rows, len(rows), seq_len, config.pad_token_id)


def _settings(directory: Path) -> dict:
    """tokenizer_config.json (lowercasing, the pad token), or nothing when the checkpoint has none."""
    path = directory / "tokenizer_config.json"
    settings = read_json_file(path, "tokenizer file", CheckpointError) if path.exists() else {}
    if not isinstance(settings, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return settings


def _pad_id(tokenizer, settings: dict) -> int:
    """The pad token's id: the one tokenizer_config.json names, else BERT's or RoBERTa's spelling
    ("<pad>" is 1 in RoBERTa's vocabulary, where 0 is "<s>"), else 0."""
    named = settings.get("pad_token")
    if isinstance(named, dict):  # older files: {"content": "<pad>", ...}
        named = named.get("content")
    for token in (named, "[PAD]", "<pad>"):
        token_id = tokenizer.token_to_id(token) if isinstance(token, str) else None
        if token_id is not None:
            return token_id
    return 0


def _convert_sentencepiece(directory: Path):
    """A `tokenizers` tokenizer converted from sentencepiece.bpe.model by transformers (some XLM-R
    repositories ship only that file)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise CheckpointError(f"{directory} has only sentencepiece.bpe.model; converting it needs "
                              "transformers: pip install transformers sentencepiece protobuf") from None
    try:
        return AutoTokenizer.from_pretrained(str(directory)).backend_tokenizer
    except Exception as exc:  # a missing sentencepiece or protobuf, or a file it cannot read
        raise CheckpointError(f"cannot convert {directory / 'sentencepiece.bpe.model'} "
                              f"(pip install sentencepiece protobuf): {exc}") from exc


def load_tokenizer(model) -> Tokenizer:
    """The tokenizer a compiled artifact carries; an Encoder carries none (models.load_model gives a
    checkpoint's)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise CheckpointError("this model carries no tokenizer: pass one, e.g. "
                              "models.load_model(spec).tokenizer for a checkpoint's")
    return tokenizer
