"""openstacksdk's bare metal proxy against a running `conductor-writer serve`.

The cloud comes from $OS_CLOUD (clouds.yaml with auth_type: http_basic).
Each command prints its result as one JSON object on stdout; a refused call
prints the exception's class and message on stderr and exits 2.

    sdk_check.py list                      conn.baremetal.nodes(details=True)
    sdk_check.py get NODE                  conn.baremetal.get_node(NODE)
    sdk_check.py provision NODE TARGET [CONFIG_DRIVE_FILE]
                                           set_node_provision_state(..., wait=True)
"""

import json
import sys

import openstack

FIELDS = ("id", "name", "provision_state", "target_provision_state", "last_error", "deploy_interface")


def node_json(node):
    return {field: getattr(node, field) for field in FIELDS}


def main(argv):
    conn = openstack.connect()
    command = argv[0]
    if command == "list":
        result = {"nodes": [node_json(n) for n in conn.baremetal.nodes(details=True)]}
    elif command == "get":
        result = node_json(conn.baremetal.get_node(argv[1]))
    elif command == "provision":
        config_drive = None
        if len(argv) > 3:
            with open(argv[3]) as f:
                config_drive = f.read()
        node = conn.baremetal.set_node_provision_state(
            argv[1], argv[2], config_drive=config_drive, wait=True, timeout=180
        )
        result = node_json(node)
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except openstack.exceptions.SDKException as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)
