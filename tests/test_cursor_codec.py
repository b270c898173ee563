"""Cursors keep their layout: one issued before a change to the encoder still resumes.

The layout (resolvers/cursors.py) is what clients hold between requests, so the cursors
below, issued by an earlier encoder, are pinned byte for byte; and any fields, present
or absent, read back as they were written.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resolvers.cursors import CursorCodec, CursorError

SECRET = "pinned-secret"
KIND = "h"
SCOPE = CursorCodec.scope("h", "iccid", "X", None, None, None)
PINNED = [
    (
        [1, 2, 3, 4, 5, 6, 7, 8],
        "rdb7jiqSo3D0sWiwbrZHmCtZtv8AAAAAAAAAAQAAAAAAAAACAAAAAAAAAAMAAAAAAAAABAAAAAAAAAAFAAAAA"
        "AAAAAYAAAAAAAAABwAAAAAAAAAI",
    ),
    (
        [-1, 2**62, 3, 0, 5, 6, None, None],  # a range's last event: no next position
        "q0phnpm_vNW0rWiwbrZHmCtZtj___________0AAAAAAAAAAAAAAAAAAAAMAAAAAAAAAAAAAAAAAAAAFAAAA"
        "AAAAAAY",
    ),
]
FIELD = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))


@pytest.mark.parametrize(("fields", "cursor"), PINNED)
def test_cursors_keep_their_layout(fields, cursor):
    codec = CursorCodec(SECRET)
    assert codec.encoder(KIND, SCOPE)(fields) == cursor
    assert codec.decode(cursor, KIND, SCOPE, len(fields)) == fields


@given(st.lists(st.lists(FIELD, min_size=1, max_size=8), min_size=1, max_size=4))
def test_fields_read_back_as_written(cursors):
    codec = CursorCodec(SECRET)
    encode = codec.encoder(KIND, SCOPE)  # one encoder for cursors of any fields, in turn
    for fields in cursors:
        assert codec.decode(encode(fields), KIND, SCOPE, len(fields)) == fields


def test_a_cursor_of_another_scope_or_secret_is_refused():
    cursor = CursorCodec(SECRET).encoder(KIND, SCOPE)([1, 2, 3, 4, 5, 6, 7, 8])
    with pytest.raises(CursorError, match="another connection"):
        CursorCodec(SECRET).decode(cursor, KIND, CursorCodec.scope("other"), 8)
    with pytest.raises(CursorError, match="not one this API issued"):
        CursorCodec("another-secret").decode(cursor, KIND, SCOPE, 8)
