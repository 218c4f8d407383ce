"""Noise XX and secret-stream cores, two of them connected in memory (no sockets, no clocks)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from cairn.crypto import KeyPair, key_pair
from cairn.errors import LocalError, RemoteError
from cairn.replication.noise import (
    MESSAGE_SIZES,
    HandshakeError,
    HandshakePayload,
    NoiseHandshake,
    dh,
    hkdf,
)
from cairn.replication.secret_stream import (
    ABYTES,
    HEADER_SIZE,
    MAX_FRAME_SIZE,
    MAX_MESSAGE_SIZE,
    Closed,
    FrameTooLargeError,
    Handshaken,
    Message,
    SecretStream,
    SecretStreamError,
    SecretStreamEvent,
    stream_id,
)
from cairn.testing import SeededRandom, memory_stream_pair

ALICE = key_pair(bytes([1]) * 32)
BOB = key_pair(bytes([2]) * 32)


def pair(seed: int = 0, **options: int) -> tuple[SecretStream, SecretStream]:
    rng = SeededRandom(seed)
    a = SecretStream(True, ALICE, rng.fork("initiator"), **options)
    b = SecretStream(False, BOB, rng.fork("responder"), **options)
    a.start()
    b.start()
    return a, b


def events(stream: SecretStream) -> list[SecretStreamEvent]:
    out = []
    while (event := stream.next_event()) is not None:
        out.append(event)
    return out


def shuttle(
    a: SecretStream, b: SecretStream
) -> tuple[list[SecretStreamEvent], list[SecretStreamEvent]]:
    """Move bytes both ways until neither side has anything to send; the events each saw."""
    seen_a: list[SecretStreamEvent] = []
    seen_b: list[SecretStreamEvent] = []
    while True:
        to_b, to_a = a.data_to_send(), b.data_to_send()
        if not to_a and not to_b:
            return seen_a, seen_b
        if to_b:
            b.receive_data(to_b)
            seen_b += events(b)
        if to_a:
            a.receive_data(to_a)
            seen_a += events(a)


def frames(data: bytes) -> list[bytes]:
    out = []
    while data:
        n = int.from_bytes(data[:3], "little")
        out.append(data[3 : 3 + n])
        data = data[3 + n :]
    return out


def framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + payload


# -- Noise ---------------------------------------------------------------------------------


def send(handshake: NoiseHandshake) -> bytes:
    """This side's next handshake message (empty payload)."""
    handshake.send()
    return handshake.data_to_send()


def receive(handshake: NoiseHandshake, message: bytes) -> bytes:
    """Take the peer's message; its payload."""
    handshake.receive_data(message)
    match handshake.next_event():
        case HandshakePayload(payload=payload):
            return payload
        case other:
            raise AssertionError(f"expected the message's payload, got {other!r}")


def run_noise(seed: int = 0) -> tuple[NoiseHandshake, NoiseHandshake, list[bytes]]:
    rng = SeededRandom(seed)
    i = NoiseHandshake(True, ALICE, rng.fork("i"))
    r = NoiseHandshake(False, BOB, rng.fork("r"))
    m1 = send(i)
    assert receive(r, m1) == b""
    m2 = send(r)
    assert receive(i, m2) == b""
    m3 = send(i)
    assert receive(r, m3) == b""
    return i, r, [m1, m2, m3]


def test_noise_xx_messages_keys_and_hash() -> None:
    i, r, messages = run_noise()
    assert [len(m) for m in messages] == list(MESSAGE_SIZES) == [32, 96, 64]
    assert i.complete and r.complete
    assert i.handshake_hash == r.handshake_hash and len(i.handshake_hash) == 64
    assert i.remote_public_key == BOB.public_key
    assert r.remote_public_key == ALICE.public_key
    assert i.tx_key == r.rx_key and i.rx_key == r.tx_key and i.tx_key != i.rx_key
    assert len(i.tx_key) == 32


def test_noise_is_reproducible_under_a_seed_and_differs_across_seeds() -> None:
    _, _, first = run_noise(5)
    _, _, again = run_noise(5)
    _, _, other = run_noise(6)
    assert first == again
    assert first[0] != other[0]


def test_noise_events_are_each_payload_then_handshaken_on_both_sides() -> None:
    rng = SeededRandom(4)
    i = NoiseHandshake(True, ALICE, rng.fork("i"))
    r = NoiseHandshake(False, BOB, rng.fork("r"))
    i.send(b"one")
    r.receive_data(i.data_to_send())
    r.send(b"two")
    i.receive_data(r.data_to_send())
    i.send(b"three")
    assert i.data_to_send() != b"" and i.data_to_send() == b""  # handed out once
    assert [i.next_event(), i.next_event(), i.next_event()] == [
        HandshakePayload(b"two"),
        Handshaken(BOB.public_key, i.handshake_hash),
        None,
    ]
    assert r.next_event() == HandshakePayload(b"one")
    assert r.next_event() is None  # message 3 not taken yet


def test_noise_initial_state_mixes_the_empty_prologue() -> None:
    # h0 = name zero-padded to 64, then h = BLAKE2b-512(h0 ‖ "") for the prologue, then e
    i = NoiseHandshake(True, ALICE, SeededRandom(1))
    m1 = send(i)
    h0 = b"Noise_XX_Ed25519_ChaChaPoly_BLAKE2b".ljust(64, b"\x00")
    h = hashlib.blake2b(h0, digest_size=64).digest()
    h = hashlib.blake2b(h + m1, digest_size=64).digest()
    h = hashlib.blake2b(h, digest_size=64).digest()  # the empty payload, hashed all the same
    assert i._state.h == h


def test_dh_is_ed25519_point_multiplication_and_symmetric() -> None:
    assert dh(ALICE, BOB.public_key) == dh(BOB, ALICE.public_key)
    assert len(dh(ALICE, BOB.public_key)) == 32
    with pytest.raises(HandshakeError):
        dh(ALICE, bytes(32))  # small-order point
    with pytest.raises(HandshakeError):
        dh(ALICE, b"\x01" * 31)


def test_hkdf_is_hmac_blake2b() -> None:
    ck, ikm = bytes(range(64)), b"input"
    prk = hmac.new(ck, ikm, hashlib.blake2b).digest()
    o1 = hmac.new(prk, b"\x01", hashlib.blake2b).digest()
    o2 = hmac.new(prk, o1 + b"\x02", hashlib.blake2b).digest()
    assert hkdf(ck, ikm) == (o1, o2)


def test_noise_misuse_is_a_local_error() -> None:
    i = NoiseHandshake(True, ALICE, SeededRandom(1))
    with pytest.raises(LocalError):
        i.receive_data(bytes(32))  # the initiator speaks first
    with pytest.raises(LocalError):
        _ = i.handshake_hash
    r = NoiseHandshake(False, BOB, SeededRandom(2))
    with pytest.raises(LocalError):
        r.send()
    with pytest.raises(LocalError):
        NoiseHandshake(True, KeyPair(ALICE.public_key), SeededRandom(1))


@pytest.mark.parametrize("step", [0, 1, 2])
def test_noise_short_or_bad_messages_raise_handshake_error(step: int) -> None:
    rng = SeededRandom(3)
    i = NoiseHandshake(True, ALICE, rng.fork("i"))
    r = NoiseHandshake(False, BOB, rng.fork("r"))
    m1 = send(i)
    if step == 0:
        with pytest.raises(HandshakeError):
            r.receive_data(m1[:31])
        with pytest.raises(HandshakeError):
            r.receive_data(bytes(32))  # not a valid point
        return
    r.receive_data(m1)
    m2 = send(r)
    if step == 1:
        with pytest.raises(HandshakeError):
            i.receive_data(m2[:95])
        tampered = bytearray(m2)
        tampered[50] ^= 1
        with pytest.raises(HandshakeError):
            i.receive_data(bytes(tampered))
        return
    i.receive_data(m2)
    m3 = send(i)
    tampered = bytearray(m3)
    tampered[-1] ^= 1
    with pytest.raises(HandshakeError):
        r.receive_data(bytes(tampered))


# -- secret-stream -------------------------------------------------------------------------


def test_handshake_completes_and_messages_flow_both_ways() -> None:
    a, b = pair()
    seen_a, seen_b = shuttle(a, b)
    assert seen_a == [Handshaken(BOB.public_key, a.handshake_hash or b"")]
    assert seen_b == [Handshaken(ALICE.public_key, a.handshake_hash or b"")]
    assert a.handshake_hash == b.handshake_hash
    assert a.remote_public_key == BOB.public_key and b.remote_public_key == ALICE.public_key

    for i in range(3):
        a.send(b"ping %d" % i)
        b.send(b"pong %d" % i)
    seen_a, seen_b = shuttle(a, b)
    assert seen_b == [Message(b"ping %d" % i) for i in range(3)]
    assert seen_a == [Message(b"pong %d" % i) for i in range(3)]


def test_wire_layout_frames_header_and_overhead() -> None:
    a, b = pair()
    m1 = a.data_to_send()
    assert m1[:3] == (32).to_bytes(3, "little") and len(m1) == 35
    b.receive_data(m1)
    assert events(b) == []
    m2 = b.data_to_send()
    assert frames(m2) == [m2[3:]] and len(m2) == 3 + 96
    a.receive_data(m2)
    assert isinstance(a.next_event(), Handshaken)
    a.send(b"hello")
    out = frames(a.data_to_send())
    assert [len(f) for f in out] == [64, HEADER_SIZE, 5 + ABYTES]
    assert out[1][:32] == stream_id(a.handshake_hash or b"", True)


def test_send_before_handshake_is_queued_and_delivered() -> None:
    a, b = pair()
    a.send(b"early from the initiator")
    b.send(b"early from the responder")
    seen_a, seen_b = shuttle(a, b)
    assert seen_a[1:] == [Message(b"early from the responder")]
    assert seen_b[1:] == [Message(b"early from the initiator")]


def test_delivery_one_byte_at_a_time() -> None:
    a, b = pair()
    left, right = memory_stream_pair()
    a.send(b"x" * 1000)
    b.send(b"y")
    got_a: list[SecretStreamEvent] = []
    got_b: list[SecretStreamEvent] = []
    for _ in range(5000):
        left.write(a.data_to_send())
        right.write(b.data_to_send())
        if right.available():
            b.receive_data(right.read(1))
            got_b += events(b)
        if left.available():
            a.receive_data(left.read(1))
            got_a += events(a)
        if not left.available() and not right.available() and len(got_a) == 2 == len(got_b):
            break
    assert got_b[1:] == [Message(b"x" * 1000)]
    assert got_a[1:] == [Message(b"y")]


def test_same_seed_same_bytes() -> None:
    def transcript(seed: int) -> bytes:
        a, b = pair(seed)
        a.send(b"data")
        out = bytearray()
        for _ in range(3):
            chunk = a.data_to_send()
            out += chunk
            b.receive_data(chunk)
            events(b)
            back = b.data_to_send()
            out += back
            a.receive_data(back)
            events(a)
        return bytes(out)

    assert transcript(7) == transcript(7)
    assert transcript(7) != transcript(8)


def test_keepalive_is_an_empty_frame_and_is_skipped() -> None:
    a, b = pair()
    shuttle(a, b)
    frame = a.keepalive()
    assert len(frame) == 3 + ABYTES and frame[:3] == ABYTES.to_bytes(3, "little")
    b.receive_data(frame)
    assert events(b) == []
    a.send(b"after")
    b.receive_data(a.data_to_send())
    assert events(b) == [Message(b"after")]


def test_keepalive_keeps_order_with_waiting_data() -> None:
    a, b = pair()
    shuttle(a, b)
    a.send(b"first")
    out = a.keepalive()  # "first" then the keepalive, in encryption order
    assert len(out) == (3 + ABYTES + 5) + (3 + ABYTES)
    b.receive_data(out)
    assert events(b) == [Message(b"first")]


def test_keepalive_before_the_handshake_sends_only_what_waits() -> None:
    a, _ = pair()
    assert len(a.keepalive()) == 35  # Noise message 1, no keepalive


def test_a_tampered_data_frame_is_refused_and_the_stream_fails() -> None:
    a, b = pair()
    shuttle(a, b)
    a.send(b"secret")
    data = bytearray(a.data_to_send())
    data[10] ^= 0x40
    b.receive_data(bytes(data))
    with pytest.raises(SecretStreamError, match="decrypt"):
        b.next_event()
    with pytest.raises(SecretStreamError):
        b.next_event()  # failed for good
    with pytest.raises(LocalError):
        b.send(b"more")


def test_frames_out_of_order_do_not_decrypt() -> None:
    a, b = pair()
    shuttle(a, b)
    a.send(b"one")
    one = a.data_to_send()
    a.send(b"two")
    b.receive_data(a.data_to_send() + one)
    with pytest.raises(SecretStreamError):
        b.next_event()


def test_every_flipped_byte_of_the_initiator_transcript_is_caught() -> None:
    reference_a, reference_b = pair(9)
    reference_a.send(b"payload")
    m1 = reference_a.data_to_send()
    reference_b.receive_data(m1)
    events(reference_b)
    m2 = reference_b.data_to_send()
    reference_a.receive_data(m2)
    events(reference_a)
    rest = reference_a.data_to_send()  # message 3, header, one data frame
    for position in range(len(m1) + len(rest)):
        a, b = pair(9)
        a.send(b"payload")
        wire = bytearray(a.data_to_send())
        b.receive_data(wire if position >= len(m1) else _flip(wire, position))
        with pytest.raises(RemoteError):
            _drain_with_eof(a, b, flip_at=position - len(m1))


def _flip(data: bytearray, position: int) -> bytes:
    out = bytearray(data)
    out[position] ^= 0x01
    return bytes(out)


def _drain_with_eof(a: SecretStream, b: SecretStream, flip_at: int) -> None:
    """Finish the exchange, flipping byte `flip_at` of the initiator's second flight, then
    close both ends so a stalled frame shows as a truncation."""
    events(b)
    back = b.data_to_send()
    if back:
        a.receive_data(back)
        events(a)
    second = bytearray(a.data_to_send())
    if flip_at >= 0:
        second = bytearray(_flip(second, flip_at))
    if second:
        b.receive_data(bytes(second))
    b.receive_data(b"")
    events(b)
    pytest.fail(f"flip at {flip_at} of the second flight went unnoticed")


def test_a_wrong_header_stream_id_is_refused() -> None:
    for wrong_role in (True, False):
        a, b = pair()
        b.receive_data(a.data_to_send())
        events(b)
        a.receive_data(b.data_to_send())
        events(a)
        m3, header = frames(a.data_to_send())
        assert header[:32] == stream_id(a.handshake_hash or b"", True)
        b.receive_data(framed(m3))
        assert isinstance(b.next_event(), Handshaken)
        fake = stream_id(b.handshake_hash or b"", False) if not wrong_role else bytes(32)
        b.receive_data(framed(fake + header[32:]))
        with pytest.raises(SecretStreamError, match="stream id"):
            b.next_event()


def test_a_header_of_the_wrong_size_is_refused() -> None:
    a, b = pair()
    b.receive_data(a.data_to_send())
    events(b)
    a.receive_data(b.data_to_send())
    events(a)
    m3, header = frames(a.data_to_send())
    b.receive_data(framed(m3) + framed(header + b"\x00"))
    with pytest.raises(SecretStreamError, match="header frame is 57 bytes"):
        events(b)


def test_truncated_stream_is_an_error_and_a_clean_end_is_closed() -> None:
    a, b = pair()
    shuttle(a, b)
    a.send(b"cut short")
    data = a.data_to_send()
    b.receive_data(data[:-1])
    assert b.next_event() is None
    b.receive_data(b"")
    with pytest.raises(SecretStreamError, match="ended inside a frame"):
        b.next_event()

    a, b = pair()
    shuttle(a, b)
    b.receive_data(b"")
    assert b.next_event() == Closed("the peer ended the stream")
    assert b.next_event() is None
    with pytest.raises(LocalError):
        b.receive_data(b"late")

    a, b = pair()
    b.receive_data(a.data_to_send()[:2])
    b.receive_data(b"")
    with pytest.raises(SecretStreamError, match="frame length"):
        b.next_event()

    _, b = pair()
    b.receive_data(b"")
    closed = b.next_event()
    assert isinstance(closed, Closed) and "before the handshake" in closed.reason


def test_oversized_frames_are_refused_before_buffering() -> None:
    a, b = pair(max_frame_size=1024)
    shuttle(a, b)
    a.send(bytes(2000))
    data = a.data_to_send()
    b.receive_data(data[:3])  # only the length: refused without waiting for the body
    with pytest.raises(FrameTooLargeError, match="2017 bytes; the limit is 1024"):
        b.next_event()

    # during the handshake, frames are Noise messages: at most 65535 bytes
    _, b = pair()
    b.receive_data(b"\xff\xff\xff")
    with pytest.raises(FrameTooLargeError, match="16777215"):
        b.next_event()


def test_size_limits_on_the_sending_side() -> None:
    a, b = pair()
    shuttle(a, b)
    a.send(bytes(MAX_MESSAGE_SIZE))  # the largest message still fits one frame
    assert len(a.data_to_send()) == 3 + MAX_FRAME_SIZE
    with pytest.raises(LocalError, match="larger than one frame"):
        a.send(bytes(MAX_MESSAGE_SIZE + 1))
    with pytest.raises(ValueError, match="max_frame_size"):
        SecretStream(True, ALICE, SeededRandom(0), max_frame_size=MAX_FRAME_SIZE + 1)
    with pytest.raises(ValueError, match="max_frame_size"):
        SecretStream(True, ALICE, SeededRandom(0), max_frame_size=10)


def test_short_data_frame_is_refused() -> None:
    a, b = pair()
    shuttle(a, b)
    b.receive_data(framed(bytes(ABYTES - 1)))
    with pytest.raises(SecretStreamError, match="shorter than 17"):
        b.next_event()


def test_garbage_instead_of_a_handshake_is_a_remote_error() -> None:
    _, b = pair()
    b.receive_data(framed(bytes(32)))  # the identity point is no ephemeral key
    with pytest.raises(HandshakeError):
        b.next_event()
    a, _ = pair()
    a.receive_data(framed(bytes(96)))
    with pytest.raises(HandshakeError):
        a.next_event()


def test_api_misuse_is_a_local_error() -> None:
    s = SecretStream(True, ALICE, SeededRandom(0))
    with pytest.raises(LocalError, match="start"):
        s.receive_data(b"x")
    s.start()
    with pytest.raises(LocalError):
        s.start()
    s.close()
    with pytest.raises(LocalError):
        s.send(b"x")


@pytest.mark.parametrize("direct", [True, False], ids=["libsodium-direct", "pynacl-wrapper"])
def test_frames_decrypt_alike_through_libsodium_or_pynacls_wrapper(
        direct: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames are pulled through PyNaCl's private cffi handle when it is there (the fast path),
    else through its public wrapper: the same messages, the same refusal of a tampered one."""
    import cairn.replication.secret_stream as ss

    if not direct:
        monkeypatch.setattr(ss, "_lib", None)
    a, b = pair()
    shuttle(a, b)
    for text in (b"one", b"", b"three" * 300):
        a.send(text)
    b.receive_data(a.data_to_send())
    assert events(b) == [Message(b"one"), Message(b"three" * 300)]  # (an empty one is nothing)
    a.send(b"secret")
    data = bytearray(a.data_to_send())
    data[10] ^= 0x40
    b.receive_data(bytes(data))
    with pytest.raises(SecretStreamError, match="decrypt"):
        b.next_event()
