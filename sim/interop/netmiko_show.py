#!/usr/bin/env python3
"""Runs show commands on a device with netmiko's cisco_xe driver.

Usage: netmiko_show.py HOST PORT USER PASSWORD [--secret S] CMD...
Prints one JSON object: {"prompt": ..., "outputs": {cmd: text}}.
netmiko opens the session the way it does on a real switch: finds the
prompt, `terminal width 511`, `terminal length 0`, `enable` if needed.
"""
import json
import sys

from netmiko import ConnectHandler


def main(argv):
    host, port, user, password, *rest = argv
    secret = ""
    if rest[:1] == ["--secret"]:
        secret, rest = rest[1], rest[2:]
    conn = ConnectHandler(
        device_type="cisco_xe",
        host=host,
        port=int(port),
        username=user,
        password=password,
        secret=secret,
        use_keys=False,
        allow_agent=False,
        ssh_strict=False,
        system_host_keys=False,
        timeout=20,
        fast_cli=False,
    )
    if secret and not conn.check_enable_mode():
        conn.enable()
    out = {"prompt": conn.find_prompt(), "enabled": conn.check_enable_mode(), "outputs": {}}
    for cmd in rest:
        out["outputs"][cmd] = conn.send_command(cmd, read_timeout=20)
    conn.disconnect()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
