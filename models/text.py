"""Text that nothing we store or forward can hold."""

import re

# NUL: PostgreSQL text and XML 1.0 (the upstream's) cannot hold it (SQLite would). A lone
# surrogate is not a character at all: UTF-8, hence no database and no JSON reply, can
# encode it.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_RULE = "must not hold NUL (U+0000) or unpaired surrogates (U+D800 to U+DFFF)."


def storable(text: str) -> bool:
    return _UNSTORABLE.search(text) is None
