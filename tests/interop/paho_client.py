#!/usr/bin/env python3
"""Drives paho-mqtt 2.x (Python) against an MQTT broker and prints what it observes.

Usage: paho_client.py SCENARIO HOST PORT VERSION [ARGS...]

VERSION is 3.1.1 or 5.0. Scenarios:

  pubsub SUB_QOS   a subscriber at SUB_QOS; a publisher sends one message at QoS 0, 1
                   and 2 (the QoS 2 one binary) and a 70000-byte one at QoS 1, each once
                   the previous one is acknowledged and has reached the subscriber
  retained         a retained message, then a subscription, then a live retained publish
                   to the established subscription
  will             wills of: a normal DISCONNECT, a socket shut down without DISCONNECT
                   (FIN), a socket reset (RST), and on 5.0 a DISCONNECT with reason 0x04
  session          a persistent session subscribes at QoS 1 and disconnects; three
                   messages are published; the session reconnects
  auth USER PASS   one connection with that user name and password
  acl              SUBSCRIBE [secret/x, open/x] and [secret/#], then a publish to each

Every line on standard output is one JSON object with an "ev" key:
  {"ev": "connack", "client", "rc", "session_present"}    rc as on the wire (3.1.1
                                                          return code, 5.0 reason code)
  {"ev": "suback", "client", "codes"}                     codes as on the wire
  {"ev": "published", "client", "topic", "qos", "rc"}     the publish completed (QoS 1:
                                                          PUBACK, QoS 2: PUBCOMP); rc is
                                                          the 5.0 PUBACK/PUBREC reason
                                                          code, null on 3.1.1 and QoS 0
  {"ev": "message", "client", "topic", "payload", "qos", "retain"}
                                                          payload in hex
  {"ev": "disconnected", "client"}                        the client closed normally
  {"ev": "dropped", "client", "how"}                      the client closed its socket
                                                          without DISCONNECT (fin, rst)
  {"ev": "done"}                                          the scenario ran to its end
Judging what was observed is left to the caller. Exit status 0: the scenario ran to its
end; 1: a step failed or timed out (message on standard error); 2: usage or setup error.
"""

import json
import os
import signal
import socket
import struct
import sys
import threading
import time

try:
    import paho.mqtt
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode
except ImportError as e:
    sys.stderr.write(f"paho-mqtt is not installed ({e}): run `pip install paho-mqtt`\n")
    sys.exit(2)

if int(paho.mqtt.__version__.split(".")[0]) < 2:
    sys.stderr.write(
        f"paho-mqtt {paho.mqtt.__version__} is too old: run `pip install -U 'paho-mqtt>=2'`\n"
    )
    sys.exit(2)

# One step (a CONNACK, a SUBACK, an acknowledgement, the expected messages) must happen
# within STEP seconds; the whole script ends after DEADLINE seconds whatever happens.
STEP = 10.0
DEADLINE = 60
# How long to keep listening for messages that must NOT arrive.
GRACE = 1.0

_out = threading.Lock()


def emit(ev, **fields):
    with _out:
        sys.stdout.write(json.dumps({"ev": ev, **fields}, sort_keys=True) + "\n")
        sys.stdout.flush()


class Failed(Exception):
    pass


class Peer:
    """One paho client with its network thread; records what it receives."""

    def __init__(self, name, host, port, version, client_id=None, clean=True,
                 session_expiry=None, will=None, user=None, password=None):
        self.name = name
        self.host = host
        self.port = port
        self.v5 = version == "5.0"
        self.clean = clean
        self.session_expiry = session_expiry
        client_id = client_id or f"paho-{name}-{version}"
        # PAHO_TRANSPORT=websockets runs the scenario over WebSocket (path /mqtt).
        transport = os.environ.get("PAHO_TRANSPORT", "tcp")
        if self.v5:
            self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                 protocol=mqtt.MQTTv5, transport=transport)
        else:
            self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                 protocol=mqtt.MQTTv311, clean_session=clean,
                                 transport=transport)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        # A refused connection is reported, not retried.
        self.c.reconnect_delay_set(min_delay=60, max_delay=60)
        if will is not None:
            topic, payload = will
            self.c.will_set(topic, payload, qos=1, retain=False)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.cond = threading.Condition()
        self.connacks = []
        self.subacks = {}
        self.completed = {}
        self.messages = []
        self.disconnected = False
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect

    # Callbacks run on the network thread.

    def _on_connect(self, client, userdata, flags, reason, properties):
        # The CONNACK as on the wire: paho maps 3.1.1 return codes to 5.0 reason codes,
        # so read the variable header it has just decoded.
        raw = getattr(client, "_in_packet", {}).get("packet")
        if raw is not None and len(raw) >= 2:
            rc, sp = raw[1], bool(raw[0] & 1)
        elif self.v5:
            rc, sp = reason.value, bool(flags.session_present)
        else:
            rc, sp = None, bool(flags.session_present)
        emit("connack", client=self.name, rc=rc, session_present=sp)
        with self.cond:
            self.connacks.append((rc, sp))
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        codes = [r.value if isinstance(r, ReasonCode) else int(r) for r in reason_codes]
        emit("suback", client=self.name, codes=codes)
        with self.cond:
            self.subacks[mid] = codes
            self.cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason, properties):
        with self.cond:
            self.completed[mid] = reason.value if (self.v5 and reason is not None) else None
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        emit("message", client=self.name, topic=msg.topic, payload=msg.payload.hex(),
             qos=msg.qos, retain=bool(msg.retain))
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    # Steps, each bounded by STEP.

    def _wait(self, what, pred, timeout=STEP):
        with self.cond:
            if not self.cond.wait_for(pred, timeout):
                raise Failed(f"{self.name}: no {what} within {timeout}s")

    def connect(self, expect_accept=True):
        """Connects and waits for the CONNACK; returns (rc, session_present)."""
        n = len(self.connacks)
        self.disconnected = False
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            if self.session_expiry is not None:
                props.SessionExpiryInterval = self.session_expiry
            self.c.connect(self.host, self.port, keepalive=30, clean_start=self.clean,
                           properties=props)
        else:
            self.c.connect(self.host, self.port, keepalive=30)
        self.c.loop_start()
        self._wait("CONNACK", lambda: len(self.connacks) > n)
        rc, sp = self.connacks[n]
        if expect_accept and rc != 0:
            raise Failed(f"{self.name}: connection refused, CONNACK code {rc}")
        return rc, sp

    def subscribe(self, filters):
        """filters: [(filter, qos)]; waits for the SUBACK and returns its codes."""
        rc, mid = self.c.subscribe(filters)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise Failed(f"{self.name}: subscribe: {mqtt.error_string(rc)}")
        self._wait("SUBACK", lambda: mid in self.subacks)
        return self.subacks[mid]

    def publish(self, topic, payload, qos, retain=False):
        """Publishes and waits until it completes (QoS 0: written, 1: PUBACK, 2: PUBCOMP)."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise Failed(f"{self.name}: publish {topic}: {mqtt.error_string(info.rc)}")
        self._wait(f"completion of the QoS {qos} publish to {topic}",
                   lambda: info.mid in self.completed)
        emit("published", client=self.name, topic=topic, qos=qos,
             rc=self.completed[info.mid] if qos > 0 else None)

    def wait_messages(self, n, timeout=STEP):
        """Waits until n messages have arrived or timeout passed; never fails."""
        with self.cond:
            self.cond.wait_for(lambda: len(self.messages) >= n, timeout)

    def wait_topics(self, topics, timeout=STEP):
        """Waits until a message arrived on each of topics or timeout passed; never fails."""
        want = set(topics)
        with self.cond:
            self.cond.wait_for(lambda: want <= {m.topic for m in self.messages}, timeout)

    def disconnect(self, reasoncode=None):
        """A normal DISCONNECT; waits until the client has closed."""
        if reasoncode is None:
            self.c.disconnect()
        else:
            self.c.disconnect(reasoncode=reasoncode)
        self._wait("close after DISCONNECT", lambda: self.disconnected)
        self.c.loop_stop()
        emit("disconnected", client=self.name)

    def drop(self, reset):
        """Closes the network connection without DISCONNECT: stops the network thread
        (which sends nothing more), then shuts the socket down (FIN) or resets it (RST)."""
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is None:
            raise Failed(f"{self.name}: no socket to close")
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        emit("dropped", client=self.name, how="rst" if reset else "fin")

    def stop(self):
        self.c.loop_stop()


def scenario_pubsub(host, port, version, args):
    if len(args) != 1 or args[0] not in ("0", "1", "2"):
        raise SystemExit("pubsub takes SUB_QOS (0, 1 or 2)")
    sub_qos = int(args[0])
    topic = f"paho/pubsub/{version}"
    sub = Peer("sub", host, port, version)
    sub.connect()
    sub.subscribe([(topic, sub_qos)])
    pub = Peer("pub", host, port, version)
    pub.connect()
    payloads = [b"m0", b"m1", bytes(range(256)), bytes(i % 251 for i in range(70000))]
    for n, (qos, payload) in enumerate(zip((0, 1, 2, 1), payloads), 1):
        pub.publish(topic, payload, qos)
        # paho hands an incoming QoS 2 message over on PUBREL, so a later QoS 1 message
        # may overtake it in on_message; one message at a time keeps the order.
        sub.wait_messages(n)
    time.sleep(GRACE / 2)
    pub.disconnect()
    sub.disconnect()


def no_args(scenario, args):
    if args:
        raise SystemExit(f"{scenario} takes no arguments")


def scenario_retained(host, port, version, args):
    no_args("retained", args)
    pub = Peer("pub", host, port, version)
    pub.connect()
    pub.publish("paho/ret/a", b"kept", 1, retain=True)
    sub = Peer("sub", host, port, version)
    sub.connect()
    sub.subscribe([("paho/ret/#", 1)])
    sub.wait_messages(1)
    # A retained publish matching the subscription that now exists.
    pub.publish("paho/ret/b", b"live", 1, retain=True)
    sub.wait_messages(2)
    time.sleep(GRACE / 2)
    pub.disconnect()
    sub.disconnect()


def scenario_will(host, port, version, args):
    no_args("will", args)
    watch = Peer("watch", host, port, version)
    watch.connect()
    watch.subscribe([("paho/will/#", 1)])

    normal = Peer("normal", host, port, version, will=("paho/will/normal", b"normal"))
    normal.connect()
    normal.disconnect()

    fin = Peer("fin", host, port, version, will=("paho/will/fin", b"fin"))
    fin.connect()
    fin.drop(reset=False)

    rst = Peer("rst", host, port, version, will=("paho/will/rst", b"rst"))
    rst.connect()
    rst.drop(reset=True)

    expected = ["paho/will/fin", "paho/will/rst"]
    if version == "5.0":
        # 0x04 Disconnect with Will Message: the client wants its will published.
        rc4 = Peer("rc4", host, port, version, will=("paho/will/rc4", b"rc4"))
        rc4.connect()
        rc4.disconnect(ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        expected.append("paho/will/rc4")

    watch.wait_topics(expected)
    # The normal disconnect came first; give a wrong will from it time to show up anyway.
    time.sleep(GRACE)
    watch.disconnect()


def scenario_session(host, port, version, args):
    no_args("session", args)
    topic = f"paho/session/{version}"
    sub = Peer("sub", host, port, version, client_id=f"paho-session-{version}",
               clean=False, session_expiry=300)
    sub.connect()
    sub.subscribe([(topic, 1)])
    sub.disconnect()

    pub = Peer("pub", host, port, version)
    pub.connect()
    for qos, payload in ((1, b"q1"), (2, b"q2"), (1, b"q3")):
        pub.publish(topic, payload, qos)
    pub.disconnect()

    # The same client object reconnects, so it keeps its own session state as well.
    sub.connect()
    sub.wait_messages(3)
    time.sleep(GRACE / 2)
    sub.disconnect()


def scenario_auth(host, port, version, args):
    if len(args) != 2:
        raise SystemExit("auth takes USER PASSWORD")
    user, password = args
    peer = Peer("auth", host, port, version, user=user, password=password)
    rc, _ = peer.connect(expect_accept=False)
    if rc == 0:
        peer.disconnect()
    else:
        peer.stop()


def scenario_acl(host, port, version, args):
    no_args("acl", args)
    sub = Peer("sub", host, port, version)
    sub.connect()
    sub.subscribe([("paho/secret/x", 1), ("paho/open/x", 1)])
    sub.subscribe([("paho/secret/#", 1)])
    pub = Peer("pub", host, port, version)
    pub.connect()
    pub.publish("paho/secret/x", b"hidden", 1)
    pub.publish("paho/open/x", b"visible", 1)
    sub.wait_topics(["paho/open/x"])
    time.sleep(GRACE)
    pub.disconnect()
    sub.disconnect()


SCENARIOS = {
    "pubsub": scenario_pubsub,
    "retained": scenario_retained,
    "will": scenario_will,
    "session": scenario_session,
    "auth": scenario_auth,
    "acl": scenario_acl,
}


def main(argv):
    if len(argv) < 5 or argv[1] not in SCENARIOS or argv[4] not in ("3.1.1", "5.0"):
        sys.stderr.write(__doc__)
        return 2
    scenario, host, port, version, args = argv[1], argv[2], int(argv[3]), argv[4], argv[5:]

    def deadline(signum, frame):
        sys.stderr.write(f"{scenario} {version}: still running after {DEADLINE}s\n")
        sys.stderr.flush()
        os._exit(1)

    signal.signal(signal.SIGALRM, deadline)
    signal.alarm(DEADLINE)
    try:
        SCENARIOS[scenario](host, port, version, args)
    except (Failed, OSError) as e:
        sys.stderr.write(f"{scenario} {version}: {e}\n")
        return 1
    except SystemExit as e:
        sys.stderr.write(f"{e}\n")
        return 2
    emit("done")
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # Network threads of clients left running must not keep the process alive.
    os._exit(code)
