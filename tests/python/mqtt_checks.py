#!/usr/bin/env python3
"""The device MQTT API of the emulator seen by a stock client: paho-mqtt (pinned in
hack/tools.sh) on the device side, the management API over urllib on the cloud side, and
content download over HTTP on the TLS MQTT port selected by ALPN `http/1.1`, with Python's
`ssl` and `http.client` as the OTA guide's example does (exosite-platform.md §3.1, §4).

Each check prints `ok <name>`; the first failure prints `FAIL <name>: <why>` and exits 1.
The last line is a JSON summary. Exit 2 on bad usage.

    mqtt_checks.py --mqtt 127.0.0.1:1883 --management http://127.0.0.1:8080/api:1 \
        --management-token T --connector CID --identity dev1 \
        [--mqtts 127.0.0.1:8883 --cafile cert.pem --content-id ID --content-sha256 HEX]
"""

import argparse
import hashlib
import http.client
import json
import socket
import ssl
import sys
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

WAIT = 10.0


class CheckFailed(Exception):
    pass


class Cloud:
    """The management API (device2) of one connector."""

    def __init__(self, base, token, connector):
        self.base = base.rstrip("/")
        self.token = token
        self.connector = connector

    def call(self, method, path, body=None):
        url = f"{self.base}/service/{self.connector}/device2{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            text = r.read().decode()
            return json.loads(text) if text else None

    def whitelist(self, identity):
        self.call("PUT", f"/identity/{identity}", {})

    def set(self, identity, alias, value):
        self.call("PATCH", f"/identity/{identity}/state", {alias: value})

    def state(self, identity):
        return self.call("GET", f"/identity/{identity}/state")


class Device:
    """One paho-mqtt client with a queue of received messages."""

    def __init__(self, host, port, username=None, password=None, tls_context=None):
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if username is not None or password is not None:
            self.client.username_pw_set(username or "", password)
        if tls_context is not None:
            self.client.tls_set_context(tls_context)
        self.messages = []
        self.connack = None
        self.granted = None
        self.cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.host, self.port = host, port

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.connack = reason_code
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload.decode()))
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cond:
            self.granted = [int(rc.value) for rc in reason_codes]
            self.cond.notify_all()

    def wait(self, what, predicate):
        deadline = time.monotonic() + WAIT
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CheckFailed(f"timed out waiting for {what}")
                self.cond.wait(left)

    def connect(self):
        self.client.connect(self.host, self.port, keepalive=60)
        self.client.loop_start()
        self.wait("CONNACK", lambda: self.connack is not None)
        return self.connack

    def message(self, prefix):
        """The first received message whose topic starts with `prefix` (removed)."""
        found = []

        def has():
            for i, (topic, payload) in enumerate(self.messages):
                if topic.startswith(prefix):
                    found.append(self.messages.pop(i))
                    return True
            return False

        self.wait(f"a message on {prefix}*", has)
        return found[0]

    def publish(self, topic, payload, qos=1):
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(WAIT)
        if not info.is_published():
            raise CheckFailed(f"publish on {topic} not acknowledged")

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


def eventually(what, predicate):
    deadline = time.monotonic() + WAIT
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out waiting for {what}")
        time.sleep(0.05)


def host_port(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


class AlpnHttps(http.client.HTTPSConnection):
    """HTTPS to an address with its own SNI name: the guide's device reaches
    `<cid>.m2.exosite.io:8883`; here the name resolves nowhere, so connect by address and send
    the name in SNI and Host."""

    def __init__(self, address, server_name, context):
        super().__init__(server_name, address[1], context=context, timeout=WAIT)
        self.address = address
        self.server_name = server_name
        self.tls_context = context

    def connect(self):
        raw = socket.create_connection(self.address, timeout=WAIT)
        self.sock = self.tls_context.wrap_socket(raw, server_hostname=self.server_name)


def alpn_download(args, summary):
    """Content over the MQTT port: TLS with ALPN http/1.1, then plain HTTP/1.1 requests."""
    context = ssl.create_default_context(cafile=args.cafile)
    context.set_alpn_protocols(["http/1.1"])
    name = f"{args.connector}.m2.localhost"
    conn = AlpnHttps(host_port(args.mqtts), name, context)
    headers = {"X-Exosite-CIK": summary["token"], "Host": f"{name}:{host_port(args.mqtts)[1]}"}
    conn.request("GET", "/provision/download", headers=headers)
    r = conn.getresponse()
    listing = r.read().decode()
    if conn.sock.selected_alpn_protocol() != "http/1.1":
        raise CheckFailed(f"ALPN chose {conn.sock.selected_alpn_protocol()!r}")
    if r.status != 200 or args.content_id not in listing.split():
        raise CheckFailed(f"list: {r.status} {listing!r}")
    conn.request("GET", f"/provision/download?id={args.content_id}&info=true", headers=headers)
    r = conn.getresponse()
    info = r.read().decode().strip().split(",")
    size = int(info[1])
    conn.request("GET", f"/provision/download?id={args.content_id}", headers=headers)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200 or len(body) != size:
        raise CheckFailed(f"download: {r.status}, {len(body)} bytes of {size}")
    digest = hashlib.sha256(body).hexdigest()
    if digest != args.content_sha256:
        raise CheckFailed(f"sha256 {digest} != {args.content_sha256}")
    ranged = dict(headers, Range="bytes=0-9")
    conn.request("GET", f"/provision/download?id={args.content_id}", headers=ranged)
    r = conn.getresponse()
    part = r.read()
    if r.status != 206 or part != body[:10]:
        raise CheckFailed(f"range: {r.status} {part!r}")
    conn.close()
    summary["downloaded_sha256"] = digest
    print("ok alpn_http_download_on_the_mqtt_tls_port", flush=True)


def run(args, summary):
    cloud = Cloud(args.management, args.management_token, args.connector)
    host, port = host_port(args.mqtt)
    ident = args.identity

    cloud.whitelist(ident)
    anon = Device(host, port)
    if anon.connect() != "Success":
        raise CheckFailed(f"anonymous CONNACK {anon.connack}")
    anon.client.publish(f"$provision/{ident}", b"", qos=0)
    topic, token = anon.message(f"$provision/{ident}")
    anon.stop()
    if len(token) != 40:
        raise CheckFailed(f"token {token!r}")
    summary["token"] = token
    print("ok paho_provision_without_subscribe", flush=True)

    bad = Device(host, port, "", "wrong-token")
    code = bad.connect()
    bad.client.loop_stop()
    if code != "Bad user name or password":
        raise CheckFailed(f"bad credentials answered {code}")
    print("ok paho_bad_credentials_connack_4", flush=True)

    dev = Device(host, port, "", token)
    if dev.connect() != "Success":
        raise CheckFailed(f"token CONNACK {dev.connack}")
    dev.publish("$resource/otau_in", json.dumps({"version": "1.0.0", "status": "INSTALLED_VERSION", "message": ""}))
    manifest = json.dumps({"version": "1.1.0", "attempt": 1, "files": []})
    cloud.set(ident, "config_otau", manifest)
    topic, value = dev.message("$resource/config_otau/")
    micros = topic.rsplit("/", 1)[1]
    if value != manifest or not micros.isdigit() or len(micros) != 16:
        raise CheckFailed(f"cloud write arrived as {topic} {value!r}")
    print("ok paho_cloud_write_published_without_subscribe", flush=True)

    dev.publish("$resource/config_otau", value)
    dev.publish("$resource/otau_in", json.dumps({"version": "1.1.0", "status": "INSTALLED_VERSION", "message": ""}))
    state = eventually("the ack in the state", lambda: (lambda s: s if s["config_otau"]["reported"] == s["config_otau"]["set"] else None)(cloud.state(ident)))
    if json.loads(state["otau_in"]["reported"])["version"] != "1.1.0":
        raise CheckFailed(f"otau_in {state['otau_in']}")
    print("ok paho_ack_and_otau_in_reported", flush=True)

    batch = [{"timestamp": int(time.time()), "values": {"otau_in": '{"status":"INIT"}'}}]
    dev.publish("$resource.batch", json.dumps(batch))
    eventually("the batch in the state", lambda: cloud.state(ident)["otau_in"]["reported"] == '{"status":"INIT"}')
    print("ok paho_batch_in_seconds", flush=True)

    dev.client.subscribe("$resource/#", qos=2)
    dev.wait("SUBACK", lambda: dev.granted is not None)
    if dev.granted != [1]:
        raise CheckFailed(f"granted {dev.granted}")
    print("ok paho_subscribe_granted_qos1", flush=True)
    dev.stop()

    offline = json.dumps({"version": "1.2.0", "attempt": 1, "files": []})
    cloud.set(ident, "config_otau", offline)
    again = Device(host, port, "", token)
    again.connect()
    topic, value = again.message("$resource/config_otau/")
    if value != offline:
        raise CheckFailed(f"replay {value!r}")
    print("ok paho_replay_on_reconnect_clean_session", flush=True)
    again.stop()

    if args.mqtts:
        context = ssl.create_default_context(cafile=args.cafile)
        tls = Device(*host_port(args.mqtts), "", token, tls_context=context)
        if tls.connect() != "Success":
            raise CheckFailed(f"TLS CONNACK {tls.connack}")
        tls.publish("$resource/otau_in", '{"status":"TLS"}')
        tls.stop()
        print("ok paho_mqtt_over_tls_without_alpn", flush=True)
        alpn_download(args, summary)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mqtt", required=True)
    p.add_argument("--management", required=True)
    p.add_argument("--management-token", required=True)
    p.add_argument("--connector", required=True)
    p.add_argument("--identity", required=True)
    p.add_argument("--mqtts")
    p.add_argument("--cafile")
    p.add_argument("--content-id")
    p.add_argument("--content-sha256")
    args = p.parse_args()
    if args.mqtts and not (args.cafile and args.content_id and args.content_sha256):
        p.error("--mqtts needs --cafile, --content-id and --content-sha256")
    summary = {"identity": args.identity}
    try:
        run(args, summary)
    except (CheckFailed, OSError, ValueError, KeyError) as e:
        print(f"FAIL: {e}", flush=True)
        summary.pop("token", None)
        print(json.dumps(summary))
        return 1
    summary.pop("token", None)
    summary["ok"] = True
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
