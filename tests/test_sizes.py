import pytest

from connectome.errors import ConnectomeError
from connectome.sizes import parse_count


@pytest.mark.parametrize("text,expected", [("12345", 12345), ("250k", 250_000), ("1M", 1_000_000),
                                           ("1.5M", 1_500_000), ("20%", 200_000), ("1_000", 1000), (" 3K ", 3000)])
def test_parses(text, expected):
    assert parse_count(text, 1_000_000 if "%" in text else 10_000_000) == expected


@pytest.mark.parametrize("text", ["", "abc", "-5", "0", "1.5", "1.2345k", "5x", "1M2"])
def test_rejects_malformed_zero_negative(text):
    with pytest.raises(ConnectomeError):
        parse_count(text, 10_000_000)


def test_rejects_more_than_prunable():
    with pytest.raises(ConnectomeError, match="exceeds"):
        parse_count("2M", 1_000_000)

