"""Field types shared by the request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

# Every time the API shows is timezone-aware UTC; saying so makes the schema `format: date-time`.
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]

# "Not blank": at least one character that str.strip() keeps. Spelled out rather than \S, whose meaning
# varies between regex engines (Hypothesis, JavaScript) while the server's is Python's str.isspace().
NOT_BLANK = r"[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
