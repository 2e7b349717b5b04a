"""acbus.address: Sentinel addresses as URLs and as config keys, checked with errors that say what is wrong."""

from pathlib import Path

import pytest

from acbus.address import BusAddress
from acdaemon.config import ConfigError
from agent.config import load_config as load_agent_config
from controller.config import load_config as load_controller_config


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database():
    address = BusAddress.from_url("redis+sentinel://bus:secret@s1:26379,s2:26380,s3/ac/2")
    assert address.sentinels == (("s1", 26379), ("s2", 26380), ("s3", 26379)), "26379 unless said"
    assert (address.service, address.db, address.tls) == ("ac", 2, False)
    assert (address.username, address.password) == ("bus", "secret"), "the URL's credentials are the data nodes'"
    assert address.url == "redis+sentinel://bus@s1:26379,s2:26380,s3:26379/ac/2", "never the password"
    tls = BusAddress.from_url("rediss+sentinel://s1:26379/ac", sentinel_password="theirs", ca_file="ca.pem")
    assert (tls.tls, tls.db, tls.sentinel_password) == (True, 0, "theirs")
    assert tls.sentinel("s1", 26379).redis_kwargs()["password"] == "theirs", "a sentinel gets its own credentials"
    assert tls.node("10.0.0.5", 6380).url == "rediss://10.0.0.5:6380/0", "the master it names: ours, and TLS"


def test_a_plain_url_is_what_it_was():
    address = BusAddress.from_url("redis://127.0.0.1:6379/0")
    assert (address.sentinels, address.service, address.wait) == ((), "", None)
    assert address.redis_kwargs()["host"] == "127.0.0.1"


@pytest.mark.parametrize(("url", "problem"), [
    ("redis+sentinel://s1:26379", "no service name: give redis+sentinel://host:port[,host:port...]/<service>/<db>"),
    ("redis+sentinel://s1:26379/", "no service name"),
    ("redis+sentinel://s1:port/ac/0", "'s1:port' is not a sentinel host:port"),
    ("redis+sentinel://s1:26379,/ac/0", "'' is not a sentinel host:port"),
    ("redis+sentinel://s1:26379/ac/zero", "after the sentinels comes /<service>/<db> (db a number)"),
    ("redis+sentinel://s1:26379/ac/0?ssl_ca_certs=x", "a Sentinel URL takes no ?query"),
    ("sentinel://s1:26379/ac/0", "scheme must be redis://, rediss://, unix:// or redis+sentinel://"),
])
def test_a_bad_sentinel_url_says_what_is_wrong(url, problem):
    with pytest.raises(ValueError, match=".*") as caught:
        BusAddress.from_url(url)
    assert problem in str(caught.value) and repr(url) in str(caught.value)


def test_the_daemons_take_sentinel_addresses_and_their_credentials_from_their_configs(tmp_path: Path):
    agent = tmp_path / "agent2.toml"
    agent.write_text('[main]\ngid = 1\nnid = 2\n[controllers.main]\n'
                     'url = "rediss+sentinel://s1:26379,s2:26379/ac/0"\nwait_replicas = 1\nwait_timeout = 0.5\n'
                     '[controllers.main.security]\npassword = "nodes"\nsentinel_password = "sentinels"\n'
                     'certificate_authority = "ca.pem"\n')
    bus = load_agent_config(agent).bus
    assert (bus.service, bus.password, bus.sentinel_password, bus.ca_file) == ("ac", "nodes", "sentinels",
                                                                               str(tmp_path / "ca.pem"))
    assert bus.wait == ("WAIT", 1, 500)
    controller = tmp_path / "controller.toml"
    controller.write_text('[bus]\nurl = "redis+sentinel://s1:26379/ac/0"\n[bus.security]\nsentinel_username = "u"\n')
    assert load_controller_config(controller).bus.sentinel_username == "u"
    agent.write_text('[main]\ngid = 1\nnid = 2\n[controllers.main]\nurl = "redis+sentinel://s1:26379"\n')
    with pytest.raises(ConfigError, match=r"\[controllers.main\] url: bus URL .*: no service name"):
        load_agent_config(agent)
    agent.write_text('[main]\ngid = 1\nnid = 2\n[controllers.main]\nurl = "redis://h"\nwait_replicas = -1\n')
    with pytest.raises(ConfigError, match=r"\[controllers.main\] wait_replicas: must be 0 \(do not wait\) or more"):
        load_agent_config(agent)
