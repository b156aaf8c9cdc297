"""Secrets kept out of what the lake records (ops.job_runs parameters, statements, errors).

A parameter whose name looks like a secret's is recorded as `<redacted>`; in any recorded
text, a URI's password (`scheme://user:password@host`) and the value given to a secret-looking
name (`fs.s3a.secret.key=...`, `password 'x'`) are replaced.

>>> redact({"set.spark.conf.spark.hadoop.fs.s3a.secret.key": "abc", "statement": "SELECT 1"})
{'set.spark.conf.spark.hadoop.fs.s3a.secret.key': '<redacted>', 'statement': 'SELECT 1'}
>>> redact_text("SET spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net=abc")
'SET spark.hadoop.fs.azure.account.key.acct.dfs.core.windows.net=<redacted>'
"""

from __future__ import annotations

import re
from collections.abc import Mapping

REDACTED = "<redacted>"
_SECRET = (
    r"secret|passw|token|credential"
    r"|(?:access|private|api|sas|account|encryption)[._-]?key"
)
# A name (a --set key, a Spark conf, a parameter) that holds a secret.
SECRET_KEY = re.compile(_SECRET, re.IGNORECASE)
# The password of a URI's user (scheme://user:password@host).
URI_PASSWORD = re.compile(r"(://[^/:@\s]+:)[^@/\s]+@")
# In a text: a secret-looking name, then `=` (or blanks before a quoted value), then the value.
SECRET_VALUE = re.compile(
    rf"([\w.-]*(?:{_SECRET})[\w.-]*(?:\s*=\s*|\s+(?=['\"])))('[^']*'|\"[^\"]*\"|[^\s,;)]+)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """`text` with URI passwords and the values of secret-looking names replaced."""
    text = URI_PASSWORD.sub(r"\1" + REDACTED + "@", text)
    return SECRET_VALUE.sub(r"\1" + REDACTED, text)


def redact(params: Mapping[str, str]) -> dict[str, str]:
    """`params` as recorded: a secret-looking name's value replaced, every other value's
    text redacted (`redact_text`)."""
    return {k: REDACTED if SECRET_KEY.search(k) else redact_text(v) for k, v in params.items()}
