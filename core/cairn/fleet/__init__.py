"""The fleet contract: what an edge and a gateway agree on, and nothing else.

- :mod:`cairn.fleet.identity`: the seed file, and the key pairs derived from it by name
  (Noise static key, device record key, watermark key);
- :mod:`cairn.fleet.record`: the device's signed DHT record, the fleet topic and the fleet-name
  rule;
- :mod:`cairn.fleet.enrollment`: the enrollment string (a device's record key and suggested
  name, checksummed) and the device-name rule;
- :mod:`cairn.fleet.watermark`: a gateway's watermark record;
- :mod:`cairn.fleet.units`: SenML units and the units of well-known quantities.

The gateway imports these, never an edge module (pinned by ``tests/unit/test_packaging.py``).
"""

from __future__ import annotations

from cairn.fleet.enrollment import (
    Enrollment,
    EnrollmentError,
    check_device_name,
    parse_enrollment,
)
from cairn.fleet.identity import (
    SeedError,
    load_seed,
    noise_key_pair,
    record_key_pair,
    watermark_key_pair,
)
from cairn.fleet.record import (
    DeviceRecord,
    LatestReading,
    RecordError,
    check_fleet_name,
    decode_record,
    encode_record,
    fleet_topic,
)
from cairn.fleet.watermark import WatermarkError, decode_watermarks, encode_watermarks

__all__ = [
    "DeviceRecord",
    "Enrollment",
    "EnrollmentError",
    "LatestReading",
    "RecordError",
    "SeedError",
    "WatermarkError",
    "check_device_name",
    "check_fleet_name",
    "decode_record",
    "decode_watermarks",
    "encode_record",
    "encode_watermarks",
    "fleet_topic",
    "load_seed",
    "noise_key_pair",
    "parse_enrollment",
    "record_key_pair",
    "watermark_key_pair",
]
