#!/usr/bin/env python3
"""A small OTAU device client for the Exosite device HTTP API (standard library only), or over MQTT.

It follows the device flow of exosite-platform.md §2.2 over the wire formats of §3:

1. activate:  POST /provision/activate (form id=<identity>) -> 40-character token
2. boot:      write otau_in = INSTALLED_VERSION with the current version
3. long poll: GET /onep:v1/stack/alias?config_otau with Request-Timeout and If-Modified-Since
              (0 first, then the Last-Modified of the last 200)
4. ack:       write the received config_otau value back unchanged
5. report:    INIT, TEST, TEST_SUCCESS, DOWNLOAD, DOWNLOAD_STEP..., DOWNLOAD_SUCCESS, INSTALL,
              INSTALL_SUCCESS
6. content:   GET /provision/download?id=<id>&info=true (type,size,updated,description), then
              the file, checked against the size (and a Range request for its first bytes);
              links (with a host) are recorded, not fetched
7. finish:    write otau_in = INSTALLED_VERSION with the new version

With --guide it behaves the way the OTA guide's example script does: every long poll sends
If-Modified-Since: 0, it keeps no memory of the manifests it handled, and it acks (echo) before
the install. Under the long-poll rule of exosite-platform.md §3.9 such a device gets the same
manifest again at once after each update, and installs it again: --updates N then counts N runs
of the same update.

With --mqtt HOST:PORT it follows the same flow over the device MQTT API of exosite-platform.md §4
with paho-mqtt (a stock client from PyPI; only this mode imports it): provision with an anonymous
session (publish $provision/<identity>, the token comes back on that topic), connect with the
token as password (empty client id and user name), report and ack by publishing
$resource/otau_in and $resource/config_otau at QoS 1, and receive config_otau as the push
$resource/config_otau/<µs> (no SUBSCRIBE needed; one is sent anyway, as stock clients do, and
must be accepted). MQTT has no read: at boot it reads config_otau once over HTTP, and it downloads
content over HTTP (§4.4), so --url is still needed.

It is a check that the wire format works for a client not written in Rust. Exit status 0 after
--updates updates, 1 on error or timeout, 2 on bad usage. The last line on stdout is a JSON
summary.
"""

import argparse
import http.client
import json
import sys
import time
import urllib.parse

FORM = "application/x-www-form-urlencoded; charset=utf-8"


class DeviceError(Exception):
    """A request failed in a way the flow cannot continue from."""


class Device:
    def __init__(self, url, identity, version, host=None, timeout=10.0):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise DeviceError(f"--url must be http://host:port, got {url!r}")
        self.address = (parsed.hostname, parsed.port or 80)
        self.host = host
        self.identity = identity
        self.version = version
        self.timeout = timeout
        self.token = None
        self.statuses = []
        self.downloaded = {}
        self.links = []

    def request(self, method, path, body=None, headers=None, timeout=None):
        """One HTTP request on a fresh connection; returns (status, headers, body bytes)."""
        conn = http.client.HTTPConnection(*self.address, timeout=timeout or self.timeout)
        all_headers = dict(headers or {})
        if self.host:
            all_headers["Host"] = self.host
        if self.token:
            all_headers["X-Exosite-CIK"] = self.token
        try:
            conn.request(method, path, body=body, headers=all_headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def activate(self):
        body = urllib.parse.urlencode({"id": self.identity})
        status, _, data = self.request("POST", "/provision/activate", body, {"Content-Type": FORM})
        if status != 200:
            raise DeviceError(f"activate {self.identity}: HTTP {status} {data[:200]!r}")
        token = data.decode().strip()
        if len(token) != 40:
            raise DeviceError(f"activate returned a token of {len(token)} characters, not 40")
        self.token = token

    def write(self, alias, value):
        body = urllib.parse.urlencode({alias: value})
        status, _, data = self.request("POST", "/onep:v1/stack/alias", body, {"Content-Type": FORM})
        if status != 204:
            raise DeviceError(f"write {alias}: HTTP {status} {data[:200]!r}")

    def report(self, status, version, message=""):
        self.statuses.append(status)
        self.write("otau_in", json.dumps({"version": version, "status": status, "message": message}))

    def poll(self, since, request_timeout_ms):
        """Long poll config_otau; returns (value or None, new since)."""
        headers = {
            "Accept": FORM,
            "Request-Timeout": str(request_timeout_ms),
            "If-Modified-Since": since,
        }
        status, resp_headers, data = self.request(
            "GET", "/onep:v1/stack/alias?config_otau", None, headers,
            timeout=request_timeout_ms / 1000.0 + self.timeout)
        if status == 304:
            return None, since
        if status == 204:
            return None, since
        if status != 200:
            raise DeviceError(f"long poll: HTTP {status} {data[:200]!r}")
        values = urllib.parse.parse_qs(data.decode(), keep_blank_values=True)
        value = values.get("config_otau", [None])[0]
        return value, resp_headers.get("last-modified", since)

    def download(self, content_id):
        """Info line, whole file and a Range request; returns the size."""
        query = urllib.parse.urlencode({"id": content_id})
        status, _, info = self.request("GET", f"/provision/download?{query}&info=true")
        if status != 200:
            raise DeviceError(f"content info {content_id!r}: HTTP {status}")
        fields = info.decode().strip().split(",")
        if len(fields) < 4:
            raise DeviceError(f"content info line {info!r} is not type,size,updated,description")
        size = int(fields[1])
        status, headers, data = self.request("GET", f"/provision/download?{query}")
        if status != 200 or len(data) != size:
            raise DeviceError(f"download {content_id!r}: HTTP {status}, {len(data)} bytes, info said {size}")
        if size > 1:
            status, headers, part = self.request(
                "GET", f"/provision/download?{query}", None, {"Range": "bytes=0-1"})
            if status != 206 or part != data[:2] or not headers.get("content-range", "").startswith("bytes 0-1/"):
                raise DeviceError(f"range request on {content_id!r}: HTTP {status} {headers.get('content-range')}")
        self.downloaded[content_id] = size
        return size

    def update(self, raw):
        """Runs one update for a config_otau value; returns the new version."""
        manifest = json.loads(raw)
        version = manifest["version"]
        items = manifest.get("payload", [])
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list):
            items = []
        self.report("INIT", version)
        self.report("TEST", version)
        self.report("TEST_SUCCESS", version)
        self.report("DOWNLOAD", version)
        for n, item in enumerate(items, 1):
            parts = urllib.parse.urlsplit(item)
            if parts.scheme and parts.netloc:
                self.links.append(item)
            else:
                self.download(item)
            self.report("DOWNLOAD_STEP", version, f"Downloaded file {n} of {len(items)}")
        self.report("DOWNLOAD_SUCCESS", version)
        self.report("INSTALL", version)
        self.report("INSTALL_SUCCESS", version)
        self.version = version
        self.report("INSTALLED_VERSION", version)
        return version


class MqttSession:
    """The device's MQTT side (paho-mqtt): provisioning, publishes at QoS 1, config_otau pushes."""

    def __init__(self, address, identity, timeout=10.0):
        import queue

        import paho.mqtt.client as mqtt  # only MQTT mode needs paho-mqtt

        self.mqtt = mqtt
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise DeviceError(f"--mqtt must be HOST:PORT, got {address!r}")
        self.host, self.port = host, int(port)
        self.identity = identity
        self.timeout = timeout
        self.pushes = queue.Queue()
        self.client = None

    def _client(self, password):
        c = self.mqtt.Client(self.mqtt.CallbackAPIVersion.VERSION2, client_id="",
                             protocol=self.mqtt.MQTTv311, clean_session=True)
        c.username_pw_set("", password)
        return c

    def _connect(self, client):
        """Connects and waits for the CONNACK; raises on a refusal (return code 4: bad credentials)."""
        import threading

        done = threading.Event()
        result = {}

        def on_connect(_c, _u, _flags, reason, _props):
            result["reason"] = reason
            done.set()

        client.on_connect = on_connect
        client.connect(self.host, self.port, keepalive=60)
        client.loop_start()
        if not done.wait(self.timeout):
            client.loop_stop()
            raise DeviceError("no CONNACK within the timeout")
        if result["reason"].is_failure:
            client.loop_stop()
            raise DeviceError(f"MQTT connection refused: {result['reason']}")

    def provision(self):
        """Anonymous session: publish $provision/<identity>, the token arrives on that topic."""
        import queue

        replies = queue.Queue()
        topic = f"$provision/{self.identity}"
        c = self._client("")
        c.on_message = lambda _c, _u, msg: replies.put(msg) if msg.topic == topic else None
        self._connect(c)
        try:
            c.publish(topic, b"", qos=1).wait_for_publish(self.timeout)
            try:
                msg = replies.get(timeout=self.timeout)
            except queue.Empty:
                raise DeviceError(f"no reply on {topic}") from None
        finally:
            c.disconnect()
            c.loop_stop()
        token = msg.payload.decode().strip()
        if len(token) != 40:
            raise DeviceError(f"provisioning returned a token of {len(token)} characters, not 40")
        return token

    def connect(self, token):
        c = self._client(token)

        def on_message(_c, _u, msg):
            parts = msg.topic.split("/")
            if len(parts) == 3 and parts[0] == "$resource" and parts[1] == "config_otau":
                self.pushes.put(msg.payload.decode())

        c.on_message = on_message
        self._connect(c)
        c.subscribe("$resource/#", qos=1)
        self.client = c

    def publish(self, alias, value):
        info = self.client.publish(f"$resource/{alias}", value.encode(), qos=1)
        info.wait_for_publish(self.timeout)
        if not info.is_published():
            raise DeviceError(f"publish to $resource/{alias} was not acknowledged")

    def close(self):
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


class MqttDevice(Device):
    """A Device whose writes are MQTT publishes and whose config_otau comes as pushes."""

    def __init__(self, url, identity, version, mqtt_address, host=None, timeout=10.0):
        super().__init__(url, identity, version, host, timeout)
        self.session = MqttSession(mqtt_address, identity, timeout)

    def activate(self):
        self.token = self.session.provision()
        self.session.connect(self.token)

    def write(self, alias, value):
        self.session.publish(alias, value)

    def read_config(self):
        """config_otau once over HTTP (MQTT has no read): the value, or None."""
        status, _, data = self.request("GET", "/onep:v1/stack/alias?config_otau", None, {"Accept": FORM})
        if status == 204:
            return None
        if status != 200:
            raise DeviceError(f"read config_otau: HTTP {status} {data[:200]!r}")
        return urllib.parse.parse_qs(data.decode(), keep_blank_values=True).get("config_otau", [None])[0]

    def next_config(self, wait_s):
        """The next config_otau push within wait_s seconds, or None."""
        import queue

        try:
            return self.session.pushes.get(timeout=wait_s)
        except queue.Empty:
            return None


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="device API base URL, http://127.0.0.1:PORT")
    p.add_argument("--identity", required=True)
    p.add_argument("--version", default="1.0.0", help="version the device runs at boot")
    p.add_argument("--host", help="Host header naming the connector (<cid>.m2.<domain>)")
    p.add_argument("--updates", type=int, default=1, help="exit after this many updates")
    p.add_argument("--deadline", type=float, default=60.0, help="give up after this many seconds")
    p.add_argument("--poll-ms", type=int, default=5000, help="Request-Timeout of each long poll")
    p.add_argument("--ack", choices=["echo", "after-install", "literal"], default="echo")
    p.add_argument("--mqtt", metavar="HOST:PORT",
                   help="talk MQTT (paho-mqtt) to the device MQTT listener at HOST:PORT; content and "
                        "the boot read still go to --url")
    p.add_argument("--guide", action="store_true",
                   help="the OTA guide's example: If-Modified-Since: 0 always, no memory of "
                        "handled manifests, ack (echo) before the install")
    args = p.parse_args(argv)
    if args.guide and args.ack != "echo":
        print("otau_device: --guide acks by echo before the install; leave --ack out", file=sys.stderr)
        return 2
    if args.guide and args.mqtt:
        print("otau_device: --guide is the guide's HTTP polling loop; leave it out with --mqtt", file=sys.stderr)
        return 2

    try:
        if args.mqtt:
            device = MqttDevice(args.url, args.identity, args.version, args.mqtt, args.host)
        else:
            device = Device(args.url, args.identity, args.version, args.host)
    except ImportError as e:
        print(f"otau_device: --mqtt needs paho-mqtt (hack/tools.sh installs it): {e}", file=sys.stderr)
        return 2
    except DeviceError as e:
        print(f"otau_device: {e}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.deadline
    handled = None
    done = 0
    since = "0"
    try:
        device.activate()
        device.report("INSTALLED_VERSION", device.version, "boot")
        boot_read = args.mqtt is not None
        while done < args.updates:
            if time.monotonic() > deadline:
                raise DeviceError(f"no update within {args.deadline} s")
            if args.mqtt and boot_read:
                value, boot_read = device.read_config(), False
            elif args.mqtt:
                value = device.next_config(args.poll_ms / 1000.0)
            else:
                value, since = device.poll("0" if args.guide else since, args.poll_ms)
            if value is None:
                continue
            try:
                manifest = json.loads(value)
                key = (manifest["version"], manifest.get("attempt", 1))
            except (ValueError, KeyError, TypeError):
                if args.guide:
                    time.sleep(0.2)  # answered at once with the same value: do not spin
                continue  # an ACK or junk: not a manifest
            if key == handled and not args.guide:
                continue  # the same update (same version and attempt) again
            handled = key
            if args.ack == "echo":
                device.write("config_otau", value)
            elif args.ack == "literal":
                device.write("config_otau", "ACK")
            device.update(value)
            if args.ack == "after-install":
                device.write("config_otau", value)
            done += 1
    except (DeviceError, OSError) as e:
        print(f"otau_device: {e}", file=sys.stderr)
        print(json.dumps({"identity": args.identity, "ok": False, "error": str(e), "statuses": device.statuses}))
        return 1
    finally:
        if isinstance(device, MqttDevice):
            device.session.close()
    print(json.dumps({
        "identity": args.identity,
        "ok": True,
        "version": device.version,
        "updates": done,
        "statuses": device.statuses,
        "downloaded": device.downloaded,
        "links": device.links,
        "transport": "mqtt" if args.mqtt else "http",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
