"""REDIS_URL in its forms (TLS to a Sentinel group or a Cluster included), the passwords merged in
from REDIS_PASSWORD and REDIS_SENTINEL_PASSWORD, and the one rule that tells sharded topics from
broadcast ones."""

from __future__ import annotations

import pytest

from realtime_gateway_protocol.events import REVOCATIONS_TOPIC
from realtime_gateway_protocol.key_events import KEYS_TOPIC
from shared.bus import is_sharded, sharded_topic, topic_channel
from shared.config.env import ConfigError
from shared.redis.connect import RedisTarget, Topology, env_redis_url, parse_redis_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:6379/2", RedisTarget(Topology.SERVER, "redis://h:6379/2")),
        ("rediss://:pw@h:6380/0", RedisTarget(Topology.SERVER, "rediss://:pw@h:6380/0")),
        (
            "redis+sentinel://h1:26379,h2:26380/mymaster",
            RedisTarget(
                Topology.SENTINEL,
                "redis+sentinel://h1:26379,h2:26380/mymaster",
                (("h1", 26379), ("h2", 26380)),
                master="mymaster",
            ),
        ),
        (
            "redis+sentinel://app:p%40ss@h1,h2:1/main?db=3",
            RedisTarget(
                Topology.SENTINEL,
                "redis+sentinel://app:p%40ss@h1,h2:1/main?db=3",
                (("h1", 26379), ("h2", 1)),
                master="main",
                db=3,
                username="app",
                password="p@ss",
            ),
        ),
        (
            "redis+cluster://:pw@h1:7000,h2:7001",
            RedisTarget(
                Topology.CLUSTER,
                "redis+cluster://:pw@h1:7000,h2:7001",
                (("h1", 7000), ("h2", 7001)),
                password="pw",
            ),
        ),
        (
            "rediss+sentinel://:d@h1/m?sentinel_password=s%26t&ssl_ca_certs=/ca.pem"
            "&ssl_check_hostname=False",
            RedisTarget(
                Topology.SENTINEL,
                "rediss+sentinel://:d@h1/m?sentinel_password=s%26t&ssl_ca_certs=/ca.pem"
                "&ssl_check_hostname=False",
                (("h1", 26379),),
                master="m",
                password="d",
                sentinel_password="s&t",
                tls=(("ssl_ca_certs", "/ca.pem"), ("ssl_check_hostname", False)),
            ),
        ),
        (
            "rediss+cluster://h1:7000",
            RedisTarget(Topology.CLUSTER, "rediss+cluster://h1:7000", (("h1", 7000),), tls=()),
        ),
    ],
)
def test_the_forms(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("memcached://h:11211", "unknown scheme 'memcached'"),
        ("rediss+clustr://h:7000", "unknown scheme 'rediss+clustr'"),
        ("redis+sentinel://h1/m?ssl_ca_certs=/ca.pem", "TLS options ['ssl_ca_certs'] without TLS"),
        ("redis+cluster://h1:7000?ssl_certfile=/c.pem", "without TLS"),
        ("rediss+cluster://h1:7000?ssl_check_hostname=maybe", "must be true or false"),
        ("rediss+cluster://h1:7000?sentinel_password=x", "unknown options ['sentinel_password']"),
        ("rediss+cluster://h1:7000?ssl_cert_reqs=none", "unknown options ['ssl_cert_reqs']"),
        ("h:6379", "must be one of"),
        ("redis://", "names no host"),
        ("redis+sentinel://h1:26379,h2:26379", "names no Sentinel master"),
        ("redis+sentinel://h1:26379/a/b", "names no Sentinel master"),
        ("redis+sentinel://h1:26379/m?db=x", "db must be a number"),
        ("redis+sentinel://h1:26379/m?timeout=1", "unknown options ['timeout']"),
        ("redis+cluster://h1:7000/1", "only database 0"),
        ("redis+cluster://h1:7000?db=1", "only database 0"),
        ("redis+cluster://h1:70000", "bad port '70000'"),
        ("redis+cluster://h1:\u00b2", "bad port"),
        ("redis+sentinel://h1:26379/m?db=\u0661", "db must be a number"),
        ("redis+cluster://h1:7000,,h2:7001", "empty host"),
        ("redis://:s3cret@h:abc/0", "unreadable host or port"),
        ("redis://h:99999/0", "unreadable host or port"),
        ("redis://[::1:6379/0", "unreadable host or port"),
        ("redis://h:6379/0?socket_timeout=abc", "Invalid value for 'socket_timeout'"),
    ],
)
def test_anything_else_stops_start_up_with_a_clear_message(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_redis_url(url)
    assert complaint in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_the_password_is_never_in_an_error_or_a_repr() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_redis_url("redis+cluster://:s3cret@h1:7000/4")
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in repr(parse_redis_url("redis+cluster://:s3cret@h1:7000"))


def test_redis_password_goes_into_every_form() -> None:
    env = {"REDIS_PASSWORD": "p@ss:w/rd"}
    single = env_redis_url({**env, "REDIS_URL": "redis://h:6379/0"})
    assert single == "redis://:p%40ss%3Aw%2Frd@h:6379/0"
    for url in ("redis+sentinel://h1,h2/m", "redis+cluster://h1:7000,h2:7001"):
        merged = env_redis_url({**env, "REDIS_URL": url})
        assert parse_redis_url(merged).password == "p@ss:w/rd"
    assert env_redis_url({}) == ""
    with pytest.raises(ConfigError, match="unknown scheme"):
        env_redis_url({"REDIS_URL": "redis+sentinal://h/m"})


def test_redis_sentinel_password_goes_into_a_sentinel_url_only() -> None:
    env = {"REDIS_SENTINEL_PASSWORD": "s&t=1", "REDIS_PASSWORD": "d"}
    merged = env_redis_url({**env, "REDIS_URL": "rediss+sentinel://h1,h2/m?db=2"})
    target = parse_redis_url(merged)
    assert (target.sentinel_password, target.password, target.db) == ("s&t=1", "d", 2)
    assert "s%26t" not in repr(target) and "s&t" not in repr(target)
    for url in ("redis://h:6379/0", "redis+cluster://h1:7000", ""):
        with pytest.raises(ConfigError, match="names no Sentinel group"):
            env_redis_url({"REDIS_SENTINEL_PASSWORD": "s", "REDIS_URL": url})
    with pytest.raises(ConfigError, match="already holds a sentinel_password"):
        env_redis_url({**env, "REDIS_URL": "redis+sentinel://h1/m?sentinel_password=x"})


@pytest.mark.parametrize(
    ("topic", "sharded"),
    [
        ("chan:{chat:general}", True),
        ("pres:{chat:general}", True),
        (REVOCATIONS_TOPIC, False),
        (KEYS_TOPIC, False),
        ("ws.server_api", False),
        ("channel:x", False),
    ],
)
def test_channel_and_presence_topics_are_sharded_and_the_rest_broadcast(
    topic: str, sharded: bool
) -> None:
    assert is_sharded(topic) is sharded


def test_a_sharded_topic_is_tagged_with_its_channel() -> None:
    topic = sharded_topic("chan:", "chat:general")
    assert topic == "chan:{chat:general}"
    assert topic_channel(topic) == "chat:general"
    with pytest.raises(ValueError, match="not a sharded"):
        sharded_topic("gateway.", "x")
