"""oodlib."""
