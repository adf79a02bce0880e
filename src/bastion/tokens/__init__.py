"""Issuing tokens: access tokens (RFC 9068) now; refresh tokens and grants live
in sibling modules."""

from __future__ import annotations

from bastion.tokens.access import AccessTokenIssuer, IssuedToken

__all__ = ["AccessTokenIssuer", "IssuedToken"]
