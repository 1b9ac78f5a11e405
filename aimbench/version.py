"""aimbench's version, in a module of its own: every stage records it (records, exported
features) without importing the package root and what it re-exports."""

__version__ = "0.1.0"
