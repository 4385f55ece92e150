"""MQTT plumbing in one place: connection, last will, capped reconnect, resubscribe.

Services and clients both use `MqttSession`; nothing else touches paho directly.
Credentials and (optionally) host/port come from the environment:
SLOWCTL_MQTT_HOST, SLOWCTL_MQTT_PORT, SLOWCTL_MQTT_USERNAME, SLOWCTL_MQTT_PASSWORD.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from slowctl.config import MqttConfig

log = logging.getLogger(__name__)

Handler = Callable[[mqtt.MQTTMessage], None]


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None

    @classmethod
    def from_config(cls, cfg: MqttConfig, env: Mapping[str, str] = os.environ) -> Endpoint:
        port = env.get("SLOWCTL_MQTT_PORT")
        return cls(
            host=env.get("SLOWCTL_MQTT_HOST", cfg.host),
            port=int(port) if port else cfg.port,
            username=env.get("SLOWCTL_MQTT_USERNAME") or None,
            password=env.get("SLOWCTL_MQTT_PASSWORD") or None,
            tls_ca=env.get("SLOWCTL_MQTT_TLS_CA", cfg.tls_ca),
        )


def publish_properties(**props: object) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    for key, value in props.items():
        setattr(p, key, value)
    return p


def response_of(msg: mqtt.MQTTMessage) -> tuple[str | None, Properties | None]:
    """An MQTT v5 request's response topic (None without one) and the properties its answer carries (the
    request's correlation data)."""
    props = getattr(msg, "properties", None)
    topic = getattr(props, "ResponseTopic", None)
    correlation = getattr(props, "CorrelationData", None)
    return (topic if isinstance(topic, str) else None), (
        publish_properties(CorrelationData=correlation) if correlation else None
    )


class MqttSession:
    """One MQTT v5 connection that survives broker restarts."""

    def __init__(
        self,
        endpoint: Endpoint,
        client_id: str,
        *,
        keepalive: int = 10,
        reconnect: tuple[float, float] = (0.1, 2.0),
        will: tuple[str, str] | None = None,
        on_connect: Callable[[], None] | None = None,
        session_expiry: int | None = None,
        manual_ack: bool = False,
    ) -> None:
        """`session_expiry` (s): a persistent session the broker keeps (and queues QoS 1 for) while we are
        away; `manual_ack`: a QoS 1 message is acknowledged only when the handler calls `ack` (once it
        is safe on disk), so that the broker sends it again after a crash."""
        self.endpoint = endpoint
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.connected = threading.Event()
        self.refused = threading.Event()  # the broker answered with a refusal (e.g. bad credentials)
        self.connect_failure: str | None = None
        self._on_connect_hook = on_connect
        self._subs: dict[str, SubscribeOptions] = {}
        self.subscribed = threading.Event()  # the broker acknowledged the subscriptions made on connecting
        self._connect_suback: int | None = None
        self._refused: dict[int, ReasonCode] = {}  # mid -> the broker's reason, for publishes it refused
        self._subacks: dict[int, threading.Event] = {}
        self._suback_lock = threading.Lock()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
        if endpoint.username:
            c.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls_ca:
            c.tls_set(ca_certs=endpoint.tls_ca)
        if will:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.reconnect_delay_set(min_delay=reconnect[0], max_delay=reconnect[1])  # type: ignore[arg-type]
        c.max_queued_messages_set(1000)  # a long broker outage must not grow memory without bound
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        self.client = c

    # --- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        props = None
        if self.session_expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry
        self.client.connect_async(
            self.endpoint.host,
            self.endpoint.port,
            keepalive=self.keepalive,
            clean_start=self.session_expiry is None,
            properties=props,
        )
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """True once connected; False on timeout or when the broker refused us."""
        deadline = time.monotonic() + timeout
        while not self.connected.wait(0.02):
            if self.refused.is_set() or time.monotonic() > deadline:
                return False
        return True

    def stop(self, last_words: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (), timeout: float = 2.0) -> None:
        """Publish `last_words` (retained) if connected, then disconnect cleanly (no last will)."""
        if self.connected.is_set():
            infos = [self.client.publish(t, p, qos=1, retain=True) for t, p in last_words]
            for info in infos:
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError):
                    pass
        self.client.disconnect()
        self.client.loop_stop()

    # --- messaging ------------------------------------------------------------
    def subscribe(self, topic: str, handler: Handler, qos: int = 1, wait: float | None = None) -> bool:
        """Subscribe (again after every reconnect); with `wait`, block until the broker acknowledged.

        Retain flags arrive as published, so a handler can tell a retained message from a live one.
        """
        self.client.message_callback_add(topic, lambda _c, _u, msg: self._dispatch(handler, msg))
        self._subs[topic] = SubscribeOptions(qos=qos, retainAsPublished=True)
        if not self.connected.is_set():
            return False
        acked = threading.Event()
        with self._suback_lock:
            _, mid = self.client.subscribe(topic, options=self._subs[topic])
            if mid is None:  # not sent (no connection): the on-connect resubscribe covers it
                return False
            self._subacks[mid] = acked
        return acked.wait(wait) if wait else True

    def publish(
        self,
        topic: str,
        payload: str | bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def refusal(self, info: mqtt.MQTTMessageInfo, timeout: float) -> ReasonCode | None:
        """Waits up to `timeout` s for the PUBACK of a QoS 1 publish: the broker's reason when it refused it
        (MQTT v5: 135 "Not authorized" when the ACL denies the topic), else None (accepted, or no answer)."""
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return None  # not sent (no connection): the caller's wait for an answer says so
        with self._suback_lock:
            return self._refused.pop(info.mid, None)

    def ack(self, msg: mqtt.MQTTMessage) -> None:
        """With manual_ack: the message is safe, the broker may forget it."""
        if msg.qos > 0:
            self.client.ack(msg.mid, msg.qos)

    @staticmethod
    def _dispatch(handler: Handler, msg: mqtt.MQTTMessage) -> None:
        # a handler bug must never kill the network thread (tracker_dcs died of exactly that)
        try:
            handler(msg)
        except Exception:
            log.exception("handler for %s failed", msg.topic)

    # --- paho callbacks ---------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self.connect_failure = str(reason)
            self.refused.set()
            log.warning("broker %s:%s refused the connection: %s", self.endpoint.host, self.endpoint.port, reason)
            return
        self.connect_failure = None
        self.refused.clear()
        sock = client.socket()
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # commands and status are small packets
        if self._subs:
            _, mid = client.subscribe(list(self._subs.items()))
            with self._suback_lock:
                self._connect_suback = mid
        else:
            self.subscribed.set()
        self.connected.set()
        log.info("connected to %s:%s", self.endpoint.host, self.endpoint.port)
        if self._on_connect_hook:
            try:
                self._on_connect_hook()
            except Exception:
                log.exception("on-connect hook failed")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._suback_lock:
            event = self._subacks.pop(mid, None)
            if mid == self._connect_suback:
                self.subscribed.set()  # retained messages of these subscriptions follow the SUBACK at once
        if event:
            event.set()

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        if reason.is_failure:
            with self._suback_lock:
                if len(self._refused) >= 100:  # nobody asked about the oldest ones
                    self._refused.pop(next(iter(self._refused)))
                self._refused[mid] = reason

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        if self.connected.is_set() and reason.is_failure:
            log.warning("disconnected from broker: %s", reason)
        self.connected.clear()
        self.subscribed.clear()
