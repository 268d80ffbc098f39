"""The keys login attempts are counted under: bounded, normalised, validated."""

from __future__ import annotations

import pytest

from app.services.login_throttle import account_key, client_key


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "client:203.0.113.7"),
        ("::ffff:203.0.113.7", "client:203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "client:2001:db8:1:2::/64"),
        ("2001:0db8:0001:0002:ffff::1", "client:2001:db8:1:2::/64"),
        ("::1", "client:::/64"),
        (None, "client:unknown"),
        ("", "client:unknown"),
        ("not-an-ip", "client:unknown"),
        ("1.2.3.4'; drop table user", "client:unknown"),
        ("x" * 100_000, "client:unknown"),
    ],
)
def test_client_key_is_a_validated_address(host: str | None, key: str) -> None:
    assert client_key(host) == key


def test_account_key_is_the_lookup_form_of_the_email_and_bounded() -> None:
    assert account_key("Bob@Example.COM") == "account:bob@example.com"
    assert account_key("a" * 243 + "@example.com") == "account:" + "a" * 243 + "@example.com"
    assert account_key("a" * 244 + "@example.com") is None  # longer than any stored email
    assert account_key("A" * 100_000) is None
