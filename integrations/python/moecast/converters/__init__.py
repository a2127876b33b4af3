"""Converters between moecast's files and the serving/training stacks' files.

Run them with `moecast-convert --help` (moecast.converters.cli); the formats
are described in integrations/python/CONVERTERS.md.
"""

from .common import ConvertError  # noqa: F401
