"""Access read model: users, their access tokens, and who holds which permission on what."""
