"""The tunnel wire: specs, gateways, stream ids, bells and messages are checked before use."""

import pytest

from protocol import tunnels as wire
from protocol.errors import ProtocolError

STREAM = "0123456789abcdef0123456789abcdef"


def test_a_spec_from_the_wire():
    spec = wire.TunnelSpec.from_wire({"local": 0, "gateway": "2.1", "ip": "10.0.0.5", "remote": 22})
    assert spec == wire.TunnelSpec(0, "2.1", "10.0.0.5", 22)
    assert wire.TunnelSpec.from_wire(spec.to_wire()) == spec
    assert wire.TunnelSpec.from_wire({"gateway": "controller", "ip": "db.local", "remote": 5432}).local == 0


@pytest.mark.parametrize(("data", "message"), [
    ({"gateway": "2.1", "ip": "h", "remote": 1, "port": 3}, "data.port: unknown key"),
    ({"local": -1, "gateway": "2.1", "ip": "h", "remote": 1}, "data.local: expected a port number 0-65535"),
    ({"local": True, "gateway": "2.1", "ip": "h", "remote": 1}, "data.local: expected a port number"),
    ({"gateway": "2.1", "ip": "h", "remote": 0}, "data.remote: expected a port number 1-65535"),
    ({"gateway": "2.1", "ip": "h"}, "data.remote: expected a port number"),
    ({"gateway": "2:1", "ip": "h", "remote": 1}, 'data.gateway: expected "<gid>.<nid>" or "controller"'),
    ({"gateway": "0.1", "ip": "h", "remote": 1}, "data.gateway"),
    ({"ip": "h", "remote": 1}, "data.gateway"),
    ({"gateway": "2.1", "ip": "", "remote": 1}, "data.ip: expected an address"),
    ({"gateway": "2.1", "ip": "a b", "remote": 1}, "data.ip: not a usable address"),
    ({"gateway": "2.1", "ip": "x" * 256, "remote": 1}, "data.ip: not a usable address"),
])
def test_a_bad_spec_names_its_field(data, message):
    with pytest.raises(ProtocolError, match=message):
        wire.TunnelSpec.from_wire(data)


def test_gateways():
    assert wire.parse_gateway("12.345") == (12, 345)
    assert wire.parse_gateway("controller") is None
    assert wire.gateway_name(1, 7) == "1.7"
    for bad in ("1.", ".1", "a.b", "1.2.3", "01.2", 5, None, "Controller"):
        with pytest.raises(ProtocolError):
            wire.parse_gateway(bad)


def test_stream_ids_become_key_names_only_when_hex():
    assert wire.check_stream_id(wire.new_stream_id())
    for bad in ("", "x" * 32, STREAM.upper(), STREAM + "0", "../" + STREAM[3:], None):
        with pytest.raises(ProtocolError):
            wire.check_stream_id(bad)


def test_bells():
    assert wire.parse_bell(wire.REQUESTS.encode()) == ("requests", "", "")
    assert wire.parse_bell(wire.bell(wire.DATA, STREAM).encode()) == ("data", STREAM, "")
    reset = wire.bell(wire.RESET, STREAM, "cannot connect to 10.0.0.5:22: Connection refused")
    assert wire.parse_bell(reset.encode()) == ("reset", STREAM, "cannot connect to 10.0.0.5:22: Connection refused")
    hostile = wire.parse_bell(b"reset " + STREAM.encode() + b" line\nbreak" + b"x" * 5000)[2]
    assert hostile.startswith("line?break") and len(hostile) == 1000
    for bad in (b"", b"boom " + STREAM.encode(), b"relay", b"room nothex", b"\xff\xfe"):
        with pytest.raises(ProtocolError):
            wire.parse_bell(bad)


def test_messages_round_trip():
    opened = wire.encode(wire.OPEN, stream=STREAM, gateway="2.1", ip="127.0.0.1", remote=22)
    assert wire.decode_request(opened.encode())["remote"] == 22
    answer = wire.encode(wire.PROBE, probe="p1", error=None)
    assert wire.decode_order(answer.encode())["error"] is None
    order = wire.encode(wire.CONNECT, stream=STREAM, ip="127.0.0.1", remote=22, peer="1.1")
    assert wire.decode_order(order.encode())["peer"] == "1.1"


@pytest.mark.parametrize(("raw", "message"), [
    (b"not json", "request: not JSON"),
    (b"[]", "request: expected an object"),
    (b'{"op": "launch"}', "request.op: unknown"),
    (b'{"op": "connect", "stream": "' + STREAM.encode() + b'", "ip": "h", "remote": 1, "peer": "1.1"}',
     "request.op: unknown"),  # an order is not a request
    (b'{"op": "open", "stream": "x", "gateway": "2.1", "ip": "h", "remote": 1}', "request.stream"),
    (b'{"op": "open", "stream": "' + STREAM.encode() + b'", "gateway": "2.1", "ip": "h", "remote": "22"}',
     "request.remote: expected an integer"),
    (b'{"op": "open", "stream": "' + STREAM.encode() + b'", "gateway": "2.1", "ip": "h", "remote": 70000}',
     "request.remote: expected a port number"),
    (b'{"op": "probe", "probe": "p", "gateway": "me"}', "request.gateway"),
])
def test_bad_requests_are_refused(raw, message):
    with pytest.raises(ProtocolError, match=message):
        wire.decode_request(raw)
