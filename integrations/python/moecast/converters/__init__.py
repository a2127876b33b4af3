"""Converters between moecast's files and the serving/training stacks' files.

Run them with `python3 integrations/converters/moecast_convert.py --help`; the
formats are described in integrations/converters/README.md.
"""

from .common import ConvertError  # noqa: F401
