"""An example jumpscript: client.execute_jumpscript(gid, nid, "demo", "hello", data={"name": "you"})."""


def action(data):
    name = (data or {}).get("name", "world")
    return {"greeting": f"hello {name}"}
