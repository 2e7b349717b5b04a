"""Config files: every problem names the file, the section and the key."""

import pytest

from acdaemon.config import ConfigError
from agent.config import load_config as load_agent_config
from agent.config import swarm_member
from controller.config import event_argv
from controller.config import load_config as load_controller_config
from protocol.levels import ALL_LEVELS

GOOD_AGENT = """
[main]
gid = 1
nid = 2
roles = ["web"]

[controllers.main]
url = "redis://127.0.0.1:6379/0"
"""


def write(tmp_path, text, name="agent2.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_agent_config(tmp_path):
    config = load_agent_config(write(tmp_path, GOOD_AGENT + '\n[channel]\ncmds = ["main"]\n'))
    assert (config.gid, config.nid, config.roles, config.max_jobs) == (1, 2, ("web",), 100)
    assert config.bus.port == 6379
    assert config.history_file == tmp_path / "history.db"
    assert config.home == tmp_path



def test_swarm_members_are_the_next_nodes_with_files_of_their_own(tmp_path):
    config = load_agent_config(write(tmp_path, GOOD_AGENT + '\n[metrics]\nlisten = "127.0.0.1:0"\n'))
    assert swarm_member(config, 0) is config
    third = swarm_member(config, 2)
    assert (third.gid, third.nid, third.roles, third.metrics_listen) == (1, 4, ("web",), "")
    folder = tmp_path / "swarm" / "1-4"
    assert (third.history_file, third.message_id_file) == (folder / "history.db", folder / "message.id")
    assert [logger.log_dir for logger in third.loggers if logger.type == "DB"] == [str(folder / "db-db")]


@pytest.mark.parametrize(("text", "message"), [
    (GOOD_AGENT.replace("gid = 1\n", ""), "[main]: missing required key 'gid'"),
    (GOOD_AGENT + "\n[main2]\n", "unknown section [main2]"),
    (GOOD_AGENT.replace("nid = 2", "nid = 2\ncolour = 1"), "[main]: unknown key 'colour'"),
    (GOOD_AGENT.replace("nid = 2", "nid = 2\nmax_jobs = 0"), "[main] max_jobs: must be greater than 0, got 0"),
    (GOOD_AGENT.replace("nid = 2", "nid = 2\nmax_jobs = -3"), "[main] max_jobs: must be greater than 0"),
    (GOOD_AGENT.replace("nid = 2", "nid = 2\nheartbeat_interval = 0"), "[main] heartbeat_interval: must be greater"),
    (GOOD_AGENT.replace("nid = 2", 'nid = "2"'), "[main] nid: expected an integer, got '2'"),
    (GOOD_AGENT.replace('roles = ["web"]', 'roles = ["web", 1]'), "[main] roles: must be a list of strings"),
    (GOOD_AGENT.replace("redis://", "http://"), "[controllers.main] url: bus URL"),
    (GOOD_AGENT.replace('url = "redis://127.0.0.1:6379/0"', ""), "[controllers.main]: missing required key 'url'"),
    ("[main]\ngid = 1\nnid = 1\n", "missing section [controllers.<name>]"),
    ("[controllers.main]\nurl = 'redis://x'\n", "missing section [main]"),
    (GOOD_AGENT + "\n[controllers.main.security]\ncertfile = 'x'\n", "[controllers.main.security]: unknown key"),
    (GOOD_AGENT + '\n[channel]\ncmds = ["other"]\n', "[channel] cmds: no controller 'other'"),
    (GOOD_AGENT + "\n[stats]\ninterval = 0\n", "[stats] interval: must be greater than 0"),
    (GOOD_AGENT + "\n[logging.db]\ntype = 'file'\n", "[logging.db] type: expected one of DB, AC, console"),
    (GOOD_AGENT + "\n[logging.db]\ntype = 'DB'\n", "[logging.db]: missing required key 'log_dir'"),
    (GOOD_AGENT + "\n[logging.db]\ntype = 'DB'\nlog_dir = 'x'\nlevels = '1-x'\n", "[logging.db] levels: 'x'"),
    (GOOD_AGENT + "\n[logging.ac]\ntype = 'AC'\nflush_int = -1\n", "[logging.ac] flush_int: must be greater"),
    (GOOD_AGENT + "\n[logging.ac]\ntype = 'AC'\nlog_dir = 'x'\n", "[logging.ac]: unknown key 'log_dir'"),
    (GOOD_AGENT + "\n[extensions.js]\ncwd = '/opt'\n", "[extensions.js]: missing required key 'binary'"),
    (GOOD_AGENT + "\n[extensions.js]\nbinary = 'py'\nenv = {A = 1}\n", "[extensions.js] env: values must be strings"),
    (GOOD_AGENT + "\n[startup.x]\nname = 'execute'\nargs = {max_time = 'x'}\n", "[startup.x] args.max_time"),
    (GOOD_AGENT + "\n[startup.x]\ndata = ''\n", "[startup.x]: missing required key 'name'"),
    ("[main\n", "not valid TOML"),
    (GOOD_AGENT.replace("nid = 2", "nid = 2\nkill_grace = 0"), "[main] kill_grace: must be greater than 0"),
    (GOOD_AGENT.replace("nid = 2", "nid = 2\nhistory_file = ''"), "[main] history_file: must not be empty"),
    (GOOD_AGENT + "\n[extensions.js]\nbinary = ' '\n", "[extensions.js] binary: must not be empty"),
    (GOOD_AGENT + "\n[extensions.js]\nbinary = 'py'\nargs = ['{nope}']\n",
     "[extensions.js] args: template '{nope}': {nope} is not a run argument"),
    (GOOD_AGENT + "\n[extensions.js]\nbinary = 'py'\nargs = ['-{args}']\n", "{args} must be a whole element"),
    (GOOD_AGENT + "\n[startup.x]\nname = 'ping'\n", "[startup.x] name: 'ping' is not a command a startup job"),
    (GOOD_AGENT + "\n[logging.ac]\ntype = 'AC'\ncontrollers = ['other']\n", "[logging.ac] controllers: no controller"),
    (GOOD_AGENT + "\n[stats]\ncontrollers = ['other']\n", "[stats] controllers: no controller 'other'"),
    (GOOD_AGENT + "\n[logging.db]\ntype = 'DB'\nlog_dir = 'x'\nmax_bytes = 0\n", "[logging.db] max_bytes: must be"),
    (GOOD_AGENT + "\n[logging.ac]\ntype = 'AC'\nbatch_size = 0\n", "[logging.ac] batch_size: must be greater"),
])
def test_broken_agent_config_is_named_precisely(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_agent_config(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_agent_defaults_paths_and_loggers(tmp_path):
    config = load_agent_config(write(tmp_path, GOOD_AGENT + "\n[extensions.js]\nbinary = 'py'\ncwd = 'scripts'\n"))
    assert (config.kill_grace, config.max_jobs, config.stats_interval) == (5.0, 100, 60.0)
    assert config.message_id_file == tmp_path / "message.id"
    assert config.extensions["js"].cwd == str(tmp_path / "scripts")
    db, console = config.loggers  # no [logging]: a DB of everything, warnings and errors on the console
    assert (db.type, db.log_dir, len(db.levels)) == ("DB", str(tmp_path / "logs"), 256)
    assert (console.type, sorted(console.levels)) == ("console", [7, 8, 9])
    explicit = load_agent_config(write(tmp_path, GOOD_AGENT + "\n[logging.c]\ntype = 'console'\n"))
    assert [logger.type for logger in explicit.loggers] == ["console"]


@pytest.mark.parametrize("empty", ["[]", "''", "'  '"])
def test_empty_logger_levels_mean_every_level_as_in_agent2(tmp_path, empty):
    text = GOOD_AGENT + f"\n[logging.db]\ntype = 'DB'\nlog_dir = 'logs'\nlevels = {empty}\n" \
        f"[logging.ac]\ntype = 'AC'\nlevels = {empty}\n"
    db, ac = load_agent_config(write(tmp_path, text)).loggers
    assert db.levels == ac.levels == ALL_LEVELS


def test_missing_agent_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_agent_config(tmp_path / "nope.toml")


def test_controller_defaults_and_override(tmp_path):
    config = load_controller_config(None)
    assert (config.result_ttl, config.joblog_max) == (86400, 100_000)
    path = write(tmp_path, '[bus]\nurl = "redis://h:1/0"\n[results]\nresult_ttl = 60\n', "controller.toml")
    config = load_controller_config(path, bus_override="redis://other:2/3")
    assert (config.bus.host, config.bus.port, config.bus.db, config.result_ttl) == ("other", 2, 3, 60)


@pytest.mark.parametrize(("text", "message"), [
    ("[results]\nresult_ttl = 0\n", "[results] result_ttl: must be greater than 0"),
    ("[results]\njoblog_max = 'many'\n", "[results] joblog_max: expected an integer"),
    ("[routing]\nbatch = 5\n", "[routing]: unknown key 'batch'"),
    ("[bus]\nurl = 'tcp://x'\n", "[bus] url: bus URL"),
    ("[buss]\n", "unknown section [buss]"),
])
def test_broken_controller_config(tmp_path, text, message):
    path = write(tmp_path, text, "controller.toml")
    with pytest.raises(ConfigError, match=None) as error:
        load_controller_config(path)
    assert message in str(error.value)


def test_new_controller_keys_have_defaults_and_are_read(tmp_path):
    defaults = load_controller_config(None)
    assert (defaults.takeover_after, defaults.agent_registered, defaults.handler_timeout) == (5.0, "", 30.0)
    path = write(tmp_path, '[routing]\ntakeover_after = 2\n[events]\nagent_returned = "notify {gid}:{nid}"\n',
                 "controller.toml")
    config = load_controller_config(path)
    assert config.takeover_after == 2
    assert config.event_handler("agent_returned") == "notify {gid}:{nid}"
    assert config.event_handler("agent_registered") == ""


@pytest.mark.parametrize(("text", "message"), [
    ("[routing]\nbatch_size = 0\n", "[routing] batch_size: must be 1 to 1000, got 0"),
    ("[routing]\nbatch_size = 5000\n", "[routing] batch_size: must be 1 to 1000, got 5000"),
    ("[routing]\ntakeover_after = 0.5\n", "[routing] takeover_after: must be at least twice [agents] sweep_interval"),
    ("[routing]\ntakeover_after = -1\n", "[routing] takeover_after: must be greater than 0"),
    ("[events]\nagent_registered = 'run {host}'\n", "[events] agent_registered: not a usable command line"),
    ("[events]\nagent_returned = 'run \"{gid}'\n", "[events] agent_returned: not a usable command line"),
    ("[events]\nagent_lost = 'x'\n", "[events]: unknown key 'agent_lost'"),
    ("[events]\nagent_registered = '   '\n", "[events] agent_registered: is blank"),
    ("[events]\nhandler_timeout = 0\n", "[events] handler_timeout: must be greater than 0"),
])
def test_broken_new_controller_keys_are_named(tmp_path, text, message):
    path = write(tmp_path, text, "controller.toml")
    with pytest.raises(ConfigError) as error:
        load_controller_config(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_event_command_lines_are_split_without_a_shell_and_filled():
    argv = event_argv("/opt/hook --node '{gid}:{nid}' \"a b\" $HOME;rm", 3, 14)
    assert argv == ["/opt/hook", "--node", "3:14", "a b", "$HOME;rm"]
