"""controller/fleet.py: inventories (TOML and CSV) read strictly, and the node configs made from them."""

import pytest

from controller.fleet import InventoryError, Node, node_config, read_inventory, write_private

TOML = '''
[[nodes]]
gid = 1
nid = 7
hostname = "web-7.example.net"
roles = ["web", "web", "api"]

[[nodes]]
gid = 1
nid = 8
hostname = "db-8"
'''
CSV = "# the fleet\ngid,nid,hostname,roles\n1,7,web-7.example.net,web api\n\n1,8,db-8,\n2,1,x-1,\"db,backup\"\n"


def test_a_toml_and_a_csv_inventory(tmp_path):
    (tmp_path / "fleet.toml").write_text(TOML)
    assert read_inventory(tmp_path / "fleet.toml") == [Node(1, 7, "web-7.example.net", ("api", "web")),
                                                       Node(1, 8, "db-8", ())]
    (tmp_path / "fleet.csv").write_text(CSV)
    assert read_inventory(tmp_path / "fleet.csv") == [Node(1, 7, "web-7.example.net", ("api", "web")),
                                                      Node(1, 8, "db-8", ()), Node(2, 1, "x-1", ("backup", "db"))]


CSV_PROBLEMS = [
    ("gid,nid,hostname\n1,1,a\n", "the header row must name the columns gid,nid,hostname,roles (found gid,nid,"
                                  "hostname)"),
    ("gid,nid,hostname,roles\n1,x,a,web\n", "line 2: nid must be a positive integer, got 'x'"),
    ("gid,nid,hostname,roles\n0,1,a,web\n", "line 2: gid must be a positive integer, got 0"),
    ("gid,nid,hostname,roles\n1,1,a\n", "line 2: expected 4 columns"),
    ("gid,nid,hostname,roles\n1,1,a,web,extra\n", "line 2: expected 4 columns"),
    ("gid,nid,hostname,roles\n1,1,../etc,web\n", "line 2: hostname '../etc' is not a hostname"),
    ("gid,nid,hostname,roles\n1,1,a b,web\n", "is not a hostname"),
    ("gid,nid,hostname,roles\n1,1,a,w*b\n", "role 'w*b': use letters"),
    ("gid,nid,hostname,roles\n1,1,a,web\n1,1,b,web\n", "line 3: agent 1:1 is already in"),
    ("gid,nid,hostname,roles\n1,1,a,web\n1,2,A,web\n", "line 3: A is already in"),
    ("gid,nid,hostname,roles\n", "names no node"),
    ("# nodes\n\nroles,gid,hostname,nid\n# web\nweb,1,a,x\n", "line 5: nid must be a positive integer, got 'x'"),
]
TOML_PROBLEMS = [
    ("[[nodes]]\ngid = 1\nnid = 1\n", "[[nodes]] #1: missing field 'hostname'"),
    ('[[nodes]]\ngid = 1\nnid = 1\nhostname = "a"\nrole = ["x"]\n', "unknown field 'role'"),
    ('[[nodes]]\ngid = true\nnid = 1\nhostname = "a"\n', "gid must be a positive integer, got True"),
    ('[[nodes]]\ngid = 1\nnid = 1\nhostname = "a"\nroles = "web"\n', "roles must be a list of names"),
    ('[node]\ngid = 1\n', "expected [[nodes]] tables only"),
    ("[[nodes]\n", "not valid TOML"),
]


@pytest.mark.parametrize(("name", "text", "problem"), [*(("fleet.csv", *case) for case in CSV_PROBLEMS),
                                                       *(("fleet.toml", *case) for case in TOML_PROBLEMS)])
def test_problems_name_the_line_and_the_field(tmp_path, name, text, problem):
    (tmp_path / name).write_text(text)
    with pytest.raises(InventoryError) as raised:
        read_inventory(tmp_path / name)
    assert problem in str(raised.value)


def test_other_files_are_refused(tmp_path):
    (tmp_path / "fleet.txt").write_text("1 1 a")
    with pytest.raises(InventoryError, match="a .toml or a .csv file"):
        read_inventory(tmp_path / "fleet.txt")
    with pytest.raises(InventoryError, match="cannot read"):
        read_inventory(tmp_path / "none.csv")


def test_a_node_config_sets_identity_roles_and_bus_over_the_template():
    node = Node(1, 7, "web-7", ("web",))
    template = {"main": {"gid": 99, "max_jobs": 4}, "controllers": {"main": {"url": "redis://x", "security": {
        "certificate_authority": "/etc/pki/ca.pem"}}, "other": {"url": "redis://y"}}, "metrics": {"listen": ":1"}}
    config = node_config(node, "rediss://bus:6379/0", "agent-1-7", "secret", template)
    assert config["main"] == {"gid": 1, "nid": 7, "roles": ["web"], "max_jobs": 4}
    assert config["controllers"]["main"] == {"url": "rediss://bus:6379/0", "security": {
        "certificate_authority": "/etc/pki/ca.pem", "username": "agent-1-7", "password": "secret",
        "client_certificate": "/etc/ac/client.pem", "client_certificate_key": "/etc/ac/client.key"}}
    assert config["controllers"]["other"] == {"url": "redis://y"} and config["metrics"] == {"listen": ":1"}
    assert template["main"]["gid"] == 99, "the template is not changed"
    plain = node_config(node, "redis://bus:6379/0", "agent-1-7", "secret")
    assert plain["controllers"]["main"]["security"] == {"username": "agent-1-7", "password": "secret"}
    assert plain["main"]["history_file"] == "/var/lib/ac-agent/history.db"


def test_private_files_are_written_whole_and_for_their_owner_only(tmp_path):
    path = tmp_path / "agent2.toml"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o600
    assert [item.name for item in tmp_path.iterdir()] == ["agent2.toml"]
