"""Authentication and authorization: who is asking, and what they may do.

Knows no HTTP: the API turns headers into calls here and answers into 401 and 403.
"""

from evtrack.access._control import AccessControl, Principal
from evtrack.access._secrets import (
    hash_password,
    hash_password_sync,
    hash_token,
    new_token,
    verify_password,
)

__all__ = [
    "AccessControl",
    "Principal",
    "hash_password",
    "hash_password_sync",
    "hash_token",
    "new_token",
    "verify_password",
]
