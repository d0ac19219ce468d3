"""Character-level text: reading a corpus, its vocabulary, and train / validation windows.

The default corpus is the documentation text that ships with Python itself
(`pydoc_data.topics`), so a language model can be trained with no download; any UTF-8 file
(plain or gzip-compressed, `.gz`) can be used instead.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import check_fraction
from .base import DataFormatError, DataNotFoundError

DEFAULT_NAME = "pydoc-topics"


def default_corpus() -> str:
    """Python's bundled documentation topics (about 0.5 MB of English and code)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def read_text(path: str | Path) -> str:
    """The UTF-8 text of `path` (gzip-compressed when it ends in .gz), checked to be non-empty."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"lm.text: no text file at {path}")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DataFormatError(
                f"lm.text: {path} is not a readable gzip file ({error})"
            ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataFormatError(
            f"lm.text: {path} is not UTF-8 text: byte {error.start} (line {line}) is "
            f"{raw[error.start : error.start + 1]!r}; convert the file to UTF-8"
        ) from None
    if not text:
        raise DataFormatError(f"lm.text: {path} is empty; a language model needs text to learn")
    return text


@dataclass(frozen=True)
class Vocabulary:
    """The characters of a corpus, in sorted order; a character's index is its token."""

    chars: str

    def __post_init__(self) -> None:
        if len(self.chars) < 2 or len(set(self.chars)) != len(self.chars):
            raise DataFormatError(
                f"a vocabulary needs at least 2 distinct characters, got {len(set(self.chars))}"
            )

    @classmethod
    def of(cls, text: str) -> Vocabulary:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str, what: str = "the text") -> torch.Tensor:
        """int64 tokens of `text`; a character outside the vocabulary is an error naming it."""
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted({c for c in text if c not in index})
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:8])
            raise DataFormatError(
                f"{what} contains {len(unknown)} character(s) the model never saw ({shown}); "
                "use only characters of the training text"
            )
        return torch.tensor([index[c] for c in text], dtype=torch.int64)

    def decode(self, tokens: torch.Tensor | list[int]) -> str:
        values = tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens
        return "".join(self.chars[i] for i in values)


@dataclass(frozen=True)
class TextData:
    """A corpus as tokens, split into a leading training part and a trailing validation part."""

    name: str
    vocab: Vocabulary
    train: torch.Tensor
    val: torch.Tensor

    @property
    def description(self) -> str:
        return (
            f"{self.name}: {len(self.train) + len(self.val):,} characters, "
            f"{len(self.vocab)} distinct; {len(self.train):,} train / {len(self.val):,} validation"
        )

    def check_length(self, length: int, what: str = "lm.seq_len") -> None:
        """Raise unless both splits hold a window of `length` inputs plus its next character."""
        shortest = min(len(self.train), len(self.val))
        if length + 1 > shortest:
            raise DataFormatError(
                f"{what}={length} is too long for {self.name}: its smaller split has "
                f"{shortest} characters and a window needs {length} + 1; use at most "
                f"{shortest - 1}, or a longer text"
            )

    def windows(
        self, split: torch.Tensor, starts: torch.Tensor, length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (n, length) beginning at `starts` and their targets, the characters after."""
        offsets = starts[:, None] + torch.arange(length + 1)
        chunk = split[offsets]
        return chunk[:, :-1], chunk[:, 1:]

    def random_starts(self, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """`count` uniformly drawn window starts in the training split."""
        return torch.randint(len(self.train) - length, (count,), generator=generator)

    def val_starts(self, length: int, characters: int) -> torch.Tensor:
        """Starts of consecutive, non-overlapping validation windows covering about the first
        `characters` predicted characters (at least one window)."""
        return self.consecutive_starts(self.val, length, characters)

    @staticmethod
    def consecutive_starts(split: torch.Tensor, length: int, characters: int) -> torch.Tensor:
        """Starts of consecutive, non-overlapping windows of `split` covering about its first
        `characters` predicted characters (at least one window)."""
        count = max(min(characters // length, (len(split) - 1) // length), 1)
        return torch.arange(count) * length


def text_data(text: str, name: str, val_fraction: float = 0.1) -> TextData:
    """Tokenize `text`; the last `val_fraction` of it is the validation split."""
    check_fraction("lm.val_fraction", val_fraction)
    if val_fraction >= 1:
        raise DataFormatError("lm.val_fraction must be below 1 so that something is left to train")
    vocab = Vocabulary.of(text)
    tokens = vocab.encode(text)
    cut = len(tokens) - max(int(len(tokens) * val_fraction), 1)
    if cut < 2:
        raise DataFormatError(
            f"{name} has only {len(tokens)} characters: too short to split into training and "
            "validation text"
        )
    return TextData(name, vocab, tokens[:cut], tokens[cut:])


def load_text(path: str | Path | None, val_fraction: float = 0.1) -> TextData:
    """The corpus at `path`, or Python's documentation topics when `path` is None."""
    if path is None:
        return text_data(default_corpus(), DEFAULT_NAME, val_fraction)
    path = Path(path).expanduser()
    name = path.name.removesuffix(".gz")
    return text_data(read_text(path), name, val_fraction)
