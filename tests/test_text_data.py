"""Character-level text: reading files (plain and gzip), vocabulary, splits and windows."""

import gzip

import pytest
import torch

from equilibria.data import DataFormatError, DataNotFoundError
from equilibria.data.text import Vocabulary, default_corpus, load_text, read_text, text_data


def test_plain_and_gzip_files_read_the_same_text(tmp_path):
    text = "To be, or not to be: that is the question.\nÜber naïve café.\n"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(text.encode()))
    assert read_text(tmp_path / "a.txt") == read_text(tmp_path / "a.txt.gz") == text
    data = load_text(tmp_path / "a.txt.gz", val_fraction=0.25)
    assert data.name == "a.txt" and len(data.train) + len(data.val) == len(text)
    assert data.vocab.decode(torch.cat((data.train, data.val))) == text
    assert len(data.val) == len(text) // 4


def test_bad_text_files_are_clear_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="lm.text: no text file at"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataFormatError, match="is empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("line one\ncaf\xe9".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"not UTF-8 text: byte 12 \(line 2\) is b'\\xe9'"):
        read_text(tmp_path / "latin1.txt")
    (tmp_path / "fake.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match="not a readable gzip file"):
        read_text(tmp_path / "fake.gz")
    with pytest.raises(DataFormatError, match="at least 2 distinct characters"):
        text_data("aaaaaaaa", "one letter")
    with pytest.raises(DataFormatError, match="too short to split"):
        text_data("ab", "tiny")


def test_a_window_longer_than_a_split_is_a_clear_error():
    data = text_data("abcdefghij" * 10, "letters", val_fraction=0.2)  # 80 train, 20 val
    data.check_length(19)
    with pytest.raises(DataFormatError, match=r"lm.seq_len=20 is too long .* use at most 19"):
        data.check_length(20)


def test_windows_predict_the_next_character():
    data = text_data("abcdefghij" * 10, "letters", val_fraction=0.2)
    inputs, targets = data.windows(data.train, torch.tensor([0, 5]), 4)
    assert data.vocab.decode(inputs[1]) == "fghi" and data.vocab.decode(targets[1]) == "ghij"
    starts = data.random_starts(50, 4, torch.Generator().manual_seed(0))
    assert int(starts.max()) + 4 < len(data.train)
    assert data.val_starts(4, 12).tolist() == [0, 4, 8]
    assert data.val_starts(4, 10_000).tolist() == [0, 4, 8, 12]  # 20 val chars: 4 full windows


def test_vocabulary_round_trips_and_names_unknown_characters():
    vocab = Vocabulary.of("hello world")
    assert vocab.chars == " dehlorw"
    assert vocab.decode(vocab.encode("low")) == "low"
    with pytest.raises(DataFormatError, match=r"the prompt contains 2 character\(s\).*'!', 'x'"):
        vocab.encode("hex!", "the prompt")


def test_the_default_corpus_is_python_s_bundled_documentation():
    text = default_corpus()
    assert len(text) > 100_000 and "def " in text
    data = load_text(None)
    assert data.name == "pydoc-topics" and len(data.vocab) > 60
