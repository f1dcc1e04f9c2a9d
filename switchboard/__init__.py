"""Switchboard's shared domain: topic scheme, payloads, tables, accounts and settings.

The three services (``broker``, ``bridge``, ``api``) import this package and never each other.
"""

__version__ = "0.1.0"
