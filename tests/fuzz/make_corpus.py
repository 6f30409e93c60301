#!/usr/bin/env python3
"""make_corpus.py — writes the seed corpora of the fuzz targets into tests/fuzz/corpus/NAME/.

Seeds are small, valid (or nearly valid) inputs in each target's input format, so that fuzzing
starts from the shapes the parsers accept instead of rediscovering them. Running this again
rewrites the seed-* files and leaves every other file alone: regression-* files (inputs of
crashes found and fixed) and inputs copied in by hand stay.

The formats are those described at the top of each tests/fuzz/fuzz_NAME.c. Values that must
match the harness (client keys, org names, fingerprints, the deposit uuid) are the harness's.

    tests/fuzz/make_corpus.py            (run from anywhere)
"""
import base64
import hashlib
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

# Ed25519 public keys of fuzz_api.c's clients: crypto_sign_seed_keypair(seed = 32 x 0x41 / 0x42).
CLIENT_A_KEY = "25lf4lFp0UHKubu6krqgH58uHs599MsqwFGQ83/MH50="
CLIENT_B_KEY = "IVL40Zt5HSRFMkLhXy6rbLfP+ntqXtMAl5YOBpiB2xI="
DEPOSIT_UUID = "5f0c4f4e-8a6b-4c1e-9d2a-3b7e6f1a2c90"
ORG_SECRET = "s3cret-of-acme-0123"


def b64(data):
    return base64.b64encode(data).decode()


def fingerprint(public_key):
    """crypto.h: uppercase hex of the first 20 bytes of BLAKE2b-256(public key)."""
    return hashlib.blake2b(public_key, digest_size=32).digest()[:20].hex().upper()


def write(target, name, data):
    directory = os.path.join(ROOT, target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, "seed-" + name), "wb") as out:
        out.write(data)


# ---- keytrustee.conf / keytrustee-db.conf ------------------------------------------------------

def config():
    write("config", "keytrustee", "# keytrustee.conf\nexternal_address = kt01.example.com:11371\n"
          "accepted_hosts = kt.example.com:443, [2001:db8::1]\n"
          "listen = 0.0.0.0\nport = 11371\nlog_level = info\n")
    write("config", "db-active", "role = active\nreplication_listen = 0.0.0.0\n"
          "replication_port = 11381\nslave = kt02.example.com\nsynchronous = yes\n")
    write("config", "db-passive", "role = passive\nmaster = kt01.example.com\nmaster_port = 11381\n"
          "active_url = https://kt01.example.com:11371\n")
    write("config", "tls", "tls_min_version = 1.2\n"
          "tls_ciphers = TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384:"
          "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256\n")
    write("config", "crlf-blanks", "  port\t=  443 \r\n\r\n# comment\r\nlisten=::1\r\n")
    write("config", "twice", "port = 1\nport = 2\n")
    write("config", "bad-key", "Port = 1\n")
    write("config", "no-equals", "just words\n")
    write("config", "nul", b"port = 1\x00\n")
    write("config", "no-newline", "role = standalone")
    write("config", "numbers", "port = +5\nreplication_port = 99999999999999999999\nmaster_port = 0\n")


# ---- the admin socket --------------------------------------------------------------------------

def frame(message):
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body


def wire():
    write("wire", "status", frame({"op": "status"}))
    write("wire", "two", frame({"op": "org.get", "name": "acme"}) + frame({"op": "org.list"}))
    write("wire", "not-json", frame(b"{nope") + frame({"op": "status"}))
    write("wire", "not-object", frame(b"[1,2,3]"))
    write("wire", "duplicate", frame(b'{"op":"a","op":"b"}'))
    write("wire", "zero", struct.pack(">I", 0))
    write("wire", "huge", struct.pack(">I", 0x7FFFFFFF) + b"{}")
    write("wire", "truncated", struct.pack(">I", 40) + b'{"op":')
    write("wire", "unicode", frame('{"s":"\\u00e9\\ud83d\\ude00","n":1e300,"i":-9223372036854775808}'
                                   .encode()))


def db_ops():
    client = fingerprint(b"\x11" * 32)
    new_key = b"\x22" * 32
    box = b64(b"\xcd" * 48)
    requests = {
        "status": {"op": "status"},
        "org-add": {"op": "org.add", "name": "newco", "contacts": "a@b.c", "auth_box": box},
        "org-get": {"op": "org.get", "name": "acme"},
        "org-list": {"op": "org.list"},
        "org-set-auth": {"op": "org.set_auth", "name": "acme", "auth_box": ""},
        "client-add": {"op": "client.add", "fingerprint": fingerprint(new_key), "org": "acme",
                       "name": "host2", "public_key": b64(new_key)},
        "client-get": {"op": "client.get", "fingerprint": client},
        "client-state": {"op": "client.set_state", "fingerprint": client, "state": "disabled"},
        "client-list": {"op": "client.list", "org": "acme"},
        "deposit-put": {"op": "deposit.put", "client": client,
                        "uuid": "0e5b6a2c-1d3f-4a5b-8c7d-9e0f1a2b3c4d", "handle": "h2",
                        "description": "d", "box": box},
        "deposit-get": {"op": "deposit.get", "client": client, "uuid": DEPOSIT_UUID},
        "deposit-get-handle": {"op": "deposit.get", "client": client, "handle": "db-password"},
        "client-deposit": {"op": "client.deposit", "fingerprint": client, "uuid": DEPOSIT_UUID},
        "client-deposit-handle": {"op": "client.deposit", "fingerprint": client,
                                  "handle": "db-password"},
        "deposit-list": {"op": "deposit.list", "client": client, "search": "demo"},
        "deposit-state": {"op": "deposit.set_state", "client": client, "uuid": DEPOSIT_UUID,
                          "state": "disabled"},
        "deposit-purge": {"op": "deposit.purge", "client": client, "uuid": DEPOSIT_UUID},
        "synchronous": {"op": "replication.set_synchronous", "synchronous": True},
        "unknown-field": {"op": "org.get", "name": "acme", "extra": 1},
        "unknown-op": {"op": "org.drop"},
        "wrong-types": {"op": "client.get", "fingerprint": 42},
    }
    for name, request in requests.items():
        write("db_ops", name, b"\x00" + frame(request))
    write("db_ops", "passive-put", b"\x01" + frame(requests["deposit-put"]))
    write("db_ops", "unavailable-add", b"\x02" + frame(requests["org-add"]))
    write("db_ops", "active-synchronous", b"\x03" + frame(requests["synchronous"]))
    write("db_ops", "add-then-use", b"\x00" + frame(requests["org-add"]) +
          frame({"op": "client.add", "fingerprint": fingerprint(new_key), "org": "newco",
                 "name": "n", "public_key": b64(new_key)}) +
          frame({"op": "client.list", "org": "newco"}))


# ---- keytrusteed requests ----------------------------------------------------------------------

def request(flags, method, target, headers=(), body=b""):
    text = "%s %s\n" % (method, target)
    for name, value in headers:
        text += "%s: %s\n" % (name, value)
    text += "\n"
    if isinstance(body, str):
        body = body.encode()
    return bytes([flags]) + text.encode() + body


def json_request(flags, method, target, value, extra=()):
    body = json.dumps(value).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    return request(flags, method, target, headers + list(extra), body)


def api():
    deposit = "/v1/deposits/" + DEPOSIT_UUID
    register = {"org": "acme", "auth": ORG_SECRET, "name": "host-a", "public_key": CLIENT_A_KEY}
    put = {"handle": "db-password", "secret": b64(b"hunter2"), "description": "the password"}
    write("api", "fingerprint", request(0, "GET", "/?a=fingerprint"))
    write("api", "health", request(0, "GET", "/v1/health"))
    write("api", "status", request(0, "GET", "/v1/status"))
    write("api", "metrics", request(0, "GET", "/metrics"))
    write("api", "register", json_request(1, "POST", "/v1/register", register))
    write("api", "register-open", json_request(1, "POST", "/v1/register",
                                               dict(register, org="open", auth="")))
    write("api", "register-wrong-key", json_request(1, "POST", "/v1/register",
                                                    dict(register, public_key=CLIENT_B_KEY)))
    write("api", "register-off", json_request(1, "POST", "/v1/register", dict(register, org="off")))
    write("api", "put", json_request(1, "POST", "/v1/deposits", put))
    write("api", "put-expect", json_request(1, "POST", "/v1/deposits", put,
                                            [("Expect", "100-continue")]))
    write("api", "get", request(1, "GET", deposit))
    write("api", "get-handle", request(1, "GET", "/v1/deposits?handle=db-password"))
    write("api", "get-handle-off", request(1, "GET", "/v1/deposits?handle=off"))
    write("api", "get-handle-missing", request(1, "GET", "/v1/deposits?handle=missing"))
    write("api", "get-stranger", request(0, "GET", deposit, [
        ("X-KT-Client", "C" * 40), ("X-KT-Timestamp", "1700000000"),
        ("X-KT-Nonce", b64(b"\x01" * 16)), ("X-KT-Signature", b64(b"\x02" * 64))]))
    write("api", "search", request(1, "GET", "/v1/deposits?search=pass+word%21"))
    write("api", "list", request(1, "GET", "/v1/deposits"))
    write("api", "purge", request(1, "DELETE", deposit))
    write("api", "disable", request(1, "POST", deposit + "/disable"))
    write("api", "enable", request(1, "POST", deposit + "/enable"))
    write("api", "disabled-client", request(2, "GET", "/v1/deposits"))
    write("api", "stale", request(3, "GET", deposit))
    for code in range(1, 8):
        write("api", "fault-%d-put" % code, json_request(1 | code << 2, "POST", "/v1/deposits", put))
        write("api", "fault-%d-get" % code, request(1 | code << 2, "GET", deposit))
    write("api", "fault-register-second", json_request(1 | 2 << 2 | 0x40, "POST", "/v1/register",
                                                       register))
    write("api", "fault-client-get", request(1 | 3 << 2 | 0x20, "GET", "/v1/deposits"))
    write("api", "unsigned-put", json_request(0, "POST", "/v1/deposits", put))
    write("api", "forged-headers", request(0, "GET", "/v1/deposits", [
        ("X-KT-Client", fingerprint(base64.b64decode(CLIENT_A_KEY))),
        ("X-KT-Timestamp", "1700000000"), ("X-KT-Nonce", b64(b"\x01" * 16)),
        ("X-KT-Signature", b64(b"\x02" * 64))]))
    write("api", "chunked", request(1, "POST", "/v1/deposits",
                                    [("Transfer-Encoding", "chunked"),
                                     ("Content-Type", "application/json")], "5\r\n{}\r\n0\r\n\r\n"))
    write("api", "too-large", request(1, "POST", "/v1/deposits",
                                      [("Content-Length", "99999999"),
                                       ("Content-Type", "application/json")]))
    write("api", "wrong-type", request(1, "POST", "/v1/deposits",
                                       [("Content-Length", "2"), ("Content-Type", "text/plain")],
                                       "{}"))
    write("api", "short-body", request(1, "POST", "/v1/deposits",
                                       [("Content-Length", "20"),
                                        ("Content-Type", "application/json")], "{}"))
    write("api", "unknown-field", json_request(1, "POST", "/v1/deposits", dict(put, extra=1)))
    write("api", "bad-json", request(1, "POST", "/v1/deposits",
                                     [("Content-Length", "9"), ("Content-Type", "application/json")],
                                     '{"a":1,}x'))
    # Host, the authority each request is signed for (fuzz_api.c: the node is
    # kt01.example.com:11371; flag bit 7 signs for it whatever Host is sent).
    write("api", "host-other-node", request(1, "GET", deposit, [("Host", "kt02.example.com:11371")]))
    # Signed for kt01.example.com:11371, sent to the node's other name: the signature fails.
    write("api", "host-rewritten", request(1 | 0x80, "GET", deposit, [("Host", "127.0.0.1:11371")]))
    write("api", "host-case", request(1, "GET", deposit, [("Host", "KT01.Example.COM:11371")]))
    write("api", "host-default-port", request(1, "GET", deposit, [("Host", "kt01.example.com")]))
    write("api", "host-ipv6", request(1, "GET", "/v1/deposits", [("Host", "[0::1]:11371")]))
    write("api", "host-missing", request(1 | 0x80, "GET", "/v1/deposits"))
    write("api", "host-twice", request(1, "GET", "/v1/deposits", [
        ("Host", "kt01.example.com:11371"), ("Host", "kt01.example.com:11371")]))
    write("api", "not-found", request(0, "GET", "/v2/nothing"))
    write("api", "not-allowed", request(0, "PUT", "/v1/deposits"))
    write("api", "body-on-get", request(0, "GET", "/v1/health", [("Content-Length", "3")], "abc"))
    write("api", "query-on-health", request(0, "GET", "/v1/health?x=1"))


def query():
    for index, text in enumerate(["a=fingerprint", "handle=db%2Dpassword", "search=a+b%20c",
                                  "handle=x&search=y", "&&handle=x&", "%zz", "a=%00", "a=1&a=2",
                                  "unknown=1", "=", "handle", "%41=1", "search=%e2%82%ac"]):
        write("query", str(index), text)


def http_response():
    def response(split, text):
        data = text.encode() if isinstance(text, str) else text
        return struct.pack(">H", min(split, 0xFFFF)) + data

    ok = '{"uuid":"%s","secret":"aGk="}' % DEPOSIT_UUID
    write("http_response", "length", response(40, "HTTP/1.1 200 OK\r\nContent-Type: application/json"
                                                  "\r\nContent-Length: %d\r\n\r\n%s" % (len(ok), ok)))
    write("http_response", "chunked", response(50, "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked"
                                                   "\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n"
                                                   "Trailer: 1\r\n\r\n"))
    write("http_response", "error", response(10, 'HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1'
                                                 '\r\nContent-Length: 57\r\n\r\n{"error":"passive",'
                                                 '"message":"x\\u001b[31m","active":"h"}'))
    write("http_response", "no-content", response(5, "HTTP/1.1 204 No Content\r\n\r\n"))
    write("http_response", "until-close", response(20, "HTTP/1.0 200 OK\r\n\r\nbody bytes"))
    write("http_response", "both", response(20, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                                "Transfer-Encoding: chunked\r\n\r\nhi"))
    write("http_response", "bad-status", response(3, "HTTP/2 200 OK\r\n\r\n"))
    write("http_response", "interim", response(3, "HTTP/1.1 100 Continue\r\n\r\n"))
    write("http_response", "bare-lf", response(3, "HTTP/1.1 200 OK\nContent-Length: 0\n\n"))


def url():
    for index, text in enumerate(["https://kt01.example.com:11371", "https://[::1]:11371/",
                                  "HTTPS://KT01.Example.COM", "https://10.0.0.1", "http://kt01",
                                  "https://user@kt01", "https://kt01:0", "https://kt01:65536",
                                  "https://kt01/path?q#f", "https://[fe80::1%eth0]:1",
                                  "https://-bad.example", "ftp://x"]):
        write("url", str(index), bytes([64]) + text.encode())


def client_config():
    key = "keytrustee-client-key-v1 " + b64(bytes(range(64))) + "\n"
    write("client_config", "conf", "# written by ktclient register\nserver = https://kt01.example.com"
          "\npassive_server = https://kt02.example.com:11371\norg = acme\nname = host1\n"
          "fingerprint = %s\nca_file = /etc/keytrustee/server-ca.pem\nskip_ssl_check = no\n"
          "connect_timeout_ms = 3000\n" % fingerprint(b"\x11" * 32))
    write("client_config", "conf-skip", "server = https://kt01\norg = a\nname = n\nfingerprint = %s\n"
          "passive_server =\nca_file =\nskip_ssl_check = yes\n" % fingerprint(b"\x11" * 32))
    write("client_config", "conf-twice", "server = https://a\nserver = https://b\n")
    write("client_config", "conf-unknown", "colour = blue\n")
    write("client_config", "key", key)
    write("client_config", "hint", "# ktclient failover hint (not secret; safe to delete)\n"
          "avoid = https://kt01.example.com:11371\nuntil = 1764331230\n")
    write("client_config", "key-no-newline", key[:-1])


def server_key():
    line = "keytrustee-server-key-v1 " + b64(bytes(range(32))) + "\n"
    write("server_key", "valid", b"\x00" + line.encode())
    write("server_key", "group-readable", b"\x01" + line.encode())
    write("server_key", "no-newline", b"\x00" + line[:-1].encode())
    write("server_key", "crlf", b"\x00" + line[:-1].encode() + b"\r\n")
    write("server_key", "short", b"\x00" + ("keytrustee-server-key-v1 " + b64(bytes(31)) + "\n")
          .encode())


def base64_texts():
    for index, text in enumerate(["AAAA", "YWJj", "YQ==", "YWI=", "YQ", "YQ=", "Y Q==", "YR==",
                                  "////", "++++", "=AAA", CLIENT_A_KEY, b64(b"x" * 100)]):
        write("base64", str(index), bytes([64]) + text.encode())


# ---- audit log ---------------------------------------------------------------------------------

def audit_line(seq, previous, members):
    body = '{"seq":%d,"time":"2026-11-28T12:00:00.000Z","program":"fuzz","pid":1,%s,"prev":"%s"}' % (
        seq, members, previous)
    digest = hashlib.blake2b(body.encode(), digest_size=32).hexdigest()
    return body[:-1] + ',"hash":"%s"}' % digest, digest


def audit():
    previous = "0" * 64
    lines = []
    line, previous = audit_line(0, previous, '"action":"audit.chain_start"')
    lines.append(line)
    for seq, action in enumerate(["deposit.put", "deposit.get", "org.add"], start=1):
        line, previous = audit_line(seq, previous, '"actor":"A","action":"%s","object":"o",'
                                    '"result":"ok","source":"local"' % action)
        lines.append(line)
    text = "\n".join(lines) + "\n"
    write("audit", "intact", text.encode())
    write("audit", "torn-tail", (text + lines[1][:30]).encode())
    write("audit", "modified", text.replace('"deposit.get"', '"deposit.got"').encode())
    write("audit", "removed", ("\n".join(lines[:2] + lines[3:]) + "\n").encode())
    write("audit", "empty", b"")


# ---- replication -------------------------------------------------------------------------------

POSITION = struct.pack("<QQ", 3, 41) + hashlib.blake2b(b"p", digest_size=32).digest()


def entry(epoch=3, txid=42, page_size=512, frame_count=1, fix=True):
    prev = hashlib.blake2b(b"prev", digest_size=32).digest()
    frames = b"".join(struct.pack("<I", index + 1) + bytes([index]) * page_size
                      for index in range(frame_count))
    fields = struct.pack("<QQIII", epoch, txid, page_size, 2, frame_count)
    chain = hashlib.blake2b(b"keytrustee-repl-chain-v1" + prev + fields + frames,
                            digest_size=32).digest()
    cursor = struct.pack("<BBIIIIQII", 1, 0, page_size, 1, 7, 9, 32 + 24 + page_size, 5, 6)
    header = struct.pack("<QQ", epoch, txid) + prev + (chain if fix else bytes(32))
    return header + struct.pack("<III", page_size, 2, frame_count) + cursor + frames


def repl_messages():
    write("repl_messages", "position", b"\x01" + b"\x01" + struct.pack("<Q", 3) + POSITION + POSITION
          + struct.pack("<II", 4096, 3040001))
    reason = b"the histories forked"
    write("repl_messages", "decision", b"\x02" + b"\x01" + struct.pack("<Q", 3) + POSITION + POSITION
          + struct.pack("<H", len(reason)) + reason)
    write("repl_messages", "tx", b"\x03" + b"\x00" + entry())
    write("repl_messages", "tx-two-frames", b"\x03" + b"\x01" + entry(frame_count=2))
    write("repl_messages", "tx-fix-hash", b"\x83" + b"\x00" + entry(fix=False))
    write("repl_messages", "confirm", b"\x04" + POSITION + struct.pack("<Q", 0))
    write("repl_messages", "ack", b"\x05" + POSITION + struct.pack("<Q", 40))
    write("repl_messages", "nack", b"\x06" + struct.pack("<QB", 42, 2))
    write("repl_messages", "heartbeat", b"\x07" + POSITION + struct.pack("<Q", 41))
    write("repl_messages", "basecopy-begin", b"\x08" + struct.pack("<Q", 3) + POSITION +
          struct.pack("<QI", 8192, 4096))
    body = ("keytrustee-repl-state 1\nepoch 3\napplied 3 41 %s\nbasecopy_pending 0\n"
            % hashlib.blake2b(b"p", digest_size=32).hexdigest())
    check = hashlib.blake2b(body.encode(), digest_size=32).hexdigest()[:16]
    write("repl_messages", "state", b"\x00" + (body + "check %s\n" % check).encode())
    write("repl_messages", "state-damaged", b"\x00" + (body + "check 0000000000000000\n").encode())


def repl_channel():
    def record(kind, payload):
        return bytes([kind]) + struct.pack("<H", len(payload)) + payload

    heartbeat = POSITION + struct.pack("<Q", 41)
    write("repl_channel", "raw-client", b"\x00" + struct.pack("<I", 41) + b"KTREPL1\x00\x01" +
          bytes(32) + struct.pack("<I", 32) + bytes(32))
    write("repl_channel", "raw-server", b"\x01" + struct.pack("<I", 72) + b"KTREPL1\x00" + bytes(64))
    write("repl_channel", "client-messages", b"\x02" + record(7, heartbeat) +
          record(1, b"\x01" + struct.pack("<Q", 3) + POSITION + POSITION +
                 struct.pack("<II", 4096, 3040001)) + record(3, b"\x00" + entry()))
    write("repl_channel", "server-messages", b"\x03" + record(2, b"\x01" + struct.pack("<Q", 3) +
                                                              POSITION + POSITION + b"\x00\x00") +
          record(4, heartbeat) + record(9, b"chunk"))
    write("repl_channel", "replay", b"\x02" + record(7, heartbeat) + record(0xFE, b""))
    write("repl_channel", "raw-after", b"\x03" + record(5, heartbeat) +
          record(0xFF, struct.pack("<I", 17) + bytes(17)))
    write("repl_channel", "basecopy", b"\x06" + record(8, struct.pack("<Q", 3) + POSITION +
                                                       struct.pack("<QI", 8192, 4096)))


def main():
    config()
    wire()
    db_ops()
    api()
    query()
    http_response()
    url()
    client_config()
    server_key()
    base64_texts()
    audit()
    repl_messages()
    repl_channel()


if __name__ == "__main__":
    main()
