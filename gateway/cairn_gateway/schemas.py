"""The API's answers as pydantic models: every route's response is typed in ``/openapi.json``.

Times are epoch seconds; record keys 64 hex digits; a value is in its kind (a number,
``true``/``false``, a string; data as hex). Field descriptions are what ``/docs`` shows.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["Device", "Integrity", "Latest", "Member", "MissingRange", "Pending",
           "Rollup", "Sample", "State", "Stream", "Value"]

#: a sample's value in its kind: a number, a boolean, a string (data: hex)
Value = float | bool | str | None


class Device(BaseModel):
    id: int
    record_key: str = Field(description="64 hex digits: the device's identity in the fleet")
    name: str = Field(description="the enrolled name (unenrolled- and the key's start before "
                                  "enrollment existed)")
    enrolled: bool
    removed: bool
    enrolled_at: float | None
    removed_at: float | None
    first_seen: float
    last_seen: float
    reachable: bool | None = Field(description="its edge answered the last try (null: not "
                                               "tried yet)")
    failures: int = Field(description="failed tries in a row")
    backoff: float = Field(description="seconds: the current wait after failures")
    retry_in: float = Field(description="seconds to the next try")
    error: str | None
    reach: str | None = Field(description="why it is or is not collected (null: not tried)")
    holder: str | None = Field(None, description="the gateway collecting it now (its public "
                               "key, hex), when several share a PostgreSQL store (null: no "
                               "lease held; a gateway alone holds every device)")


class Pending(BaseModel):
    record_key: str
    first_seen: float
    last_seen: float
    streams: list[str] = Field(description="the stream names its record lists")
    record_time: float | None
    error: str | None = Field(description="why its record could not be read")


class Member(BaseModel):
    """A device of the roster, as enrolled or removed."""

    name: str | None
    record_key: str
    status: str = Field(description="enrolled, removed or pending")
    enrolled: float | None
    removed: float | None
    first_seen: float | None
    last_seen: float | None
    streams: list[str]
    record_time: float | None
    error: str | None


class Stream(BaseModel):
    id: int
    device_id: int
    device: str = Field(description="its device's name")
    record_key: str
    name: str = Field(description="device/quantity: what the stream parameter takes")
    unit: str | None
    stored_blocks: int
    status: str = Field(description="ok, or why its collection stopped")
    verified: bool = Field(description="every block verified to its device's key, which is "
                                       "enrolled")
    removed: bool
    kind: str | None = Field(description="number, boolean, string or data (null before its "
                                         "first sample)")
    other_kind: int = Field(description="samples stored of another kind")


class Sample(BaseModel):
    time: float
    value: Value
    kind: str = Field(description="the sample's kind of value")
    stream_kind: str | None
    block: int = Field(description="the log block it was signed in")
    fork: int


class Rollup(BaseModel):
    time: int = Field(description="the bucket's start")
    n: int
    mean: float | None = Field(description="a boolean stream's: the share of true; null for "
                                           "strings and data")
    min: float | None
    max: float | None
    last: Value = Field(description="strings and data: the bucket's last value (else null)")
    kind: str | None
    step: int = Field(description="the bucket width served, in seconds")


class State(BaseModel):
    time: int = Field(description="the bucket's start")
    n: int
    last: Value = Field(description="the bucket's last value")
    kind: str | None
    step: int = Field(description="the bucket width served, in seconds")


class Latest(BaseModel):
    stream: int
    device: str
    record_key: str
    name: str
    unit: str | None
    time: float
    value: Value
    kind: str
    stream_kind: str | None
    verified: bool
    removed: bool


class MissingRange(BaseModel):
    start: int
    stop: int = Field(description="exclusive")
    reason: str = Field(description="damaged or not served")
    since: float


class Integrity(BaseModel):
    stream: int
    name: str
    status: str
    stored_blocks: int
    missing: str | None = Field(description="the holes in one line")
    missing_blocks: int
    missing_ranges: list[MissingRange]
    refused: int = Field(description="samples refused for their time")
    problem: str | None
    alert: bool = Field(description="stopped or holes")
