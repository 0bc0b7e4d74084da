#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: subhost_info
short_description: List the subhosts of an infrastructure host and their state
description:
  - Runs C(subhost-launch list --json) on the managed host and returns its list,
    optionally only the subhost named I(name).
version_added: 0.1.0
author:
  - subhost contributors
requirements:
  - subhost-launch on the managed host (root)
attributes:
  check_mode:
    support: full
options:
  name:
    description:
      - Return only this subhost (an empty list when there is none of that name).
    type: str
  subhost_dir:
    description:
      - Where subhosts live on the managed host; defaults to its C($SUBHOST), else C(/opt/subhost).
    type: path
  launcher:
    description:
      - The C(subhost-launch) program, a name looked up on C(PATH) or a path.
    type: str
    default: subhost-launch
seealso:
  - module: subhost.fleet.subhost
"""

EXAMPLES = r"""
- name: What runs on this host
  subhost.fleet.subhost_info:
  register: info

- name: Names of the running subhosts
  ansible.builtin.debug:
    msg: "{{ info.subhosts | selectattr('state', 'equalto', 'running') | map(attribute='name') | list }}"

- name: One subhost
  subhost.fleet.subhost_info:
    name: web
  register: web
"""

RETURN = r"""
subhosts:
  description:
    - One object per subhost, as C(subhost-launch list --json) gives it; see C(subhost-launch list --help)
      for the keys. States are C(running), C(hibernating), C(stopped) and C(broken). C(services) holds
      one object per supervised service (C(SERVICE_<name>)) of a running subhost, with C(name), C(state),
      C(pid), C(uptime), C(restarts), C(last_exit) and C(health).
  returned: always
  type: list
  elements: dict
  sample:
    - name: web
      dir: /opt/subhost/web
      state: running
      pid: 4242
      uptime_seconds: 3
      root: overlay
      image: false
      cables: [{host: web0, bridge: br0, mac: "02:00:00:00:01:01", present: true}]
      memory_bytes: null
      pids: null
      services:
        - {name: web, state: running, pid: 4250, uptime: 3, restarts: 0, last_exit: null, health: ok}
      problems: []
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.subhost.fleet.plugins.module_utils.subhost import (
    Launcher,
    name_problem,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            subhost_dir=dict(type="path"),
            launcher=dict(type="str", default="subhost-launch"),
        ),
        supports_check_mode=True,
    )
    name = module.params["name"]
    if name is not None and name_problem(name):
        module.fail_json(msg=name_problem(name))
    launcher = Launcher(module)
    if not os.path.isdir(launcher.base):
        # No subhost was ever made here: nothing to list.
        module.exit_json(changed=False, subhosts=[])
    subhosts = launcher.list()
    if name is not None:
        subhosts = [s for s in subhosts if s.get("name") == name]
    module.exit_json(changed=False, subhosts=subhosts)


if __name__ == "__main__":
    main()
