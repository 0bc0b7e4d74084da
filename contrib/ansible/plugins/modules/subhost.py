#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: subhost
short_description: Manage subhosts (sandboxed machines without VMs) on an infrastructure host
description:
  - Makes a subhost exist, run detached, stop, or vanish, and writes its C(config) file,
    through C(subhost-launch) on the managed host.
  - Every config is checked by the launcher itself (C(subhost-launch start --dry-run) on a
    scratch copy) before anything on the host changes, so an unknown key, a list for a
    single-value key or a bad value fails the task with the launcher's message and changes nothing.
  - Launcher errors (a missing bridge, a bad LOWER) fail the task with the launcher's own message.
    When such an error happens after this task changed something, the change is undone
    (a subhost it created is removed again; a changed config is put back and a subhost that was
    running is started again).
version_added: 0.1.0
author:
  - subhost contributors
requirements:
  - subhost-launch on the managed host (root)
  - Python 3.9+ on the managed host
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows the config file before and after.
options:
  name:
    description:
      - The subhost's name, 1-12 characters of C(a-z), C(0-9), C(_) and C(-), not starting with C(-).
      - Its directory is I(subhost_dir)/NAME.
    type: str
    required: true
  state:
    description:
      - C(present) makes sure the directory exists (with C(subhost-launch create), so with C(root/),
        C(work/), C(live/) and a commented config) and, when I(config) is given, holds that config.
        A running subhost stays running.
      - C(started) is C(present) and running detached (C(subhost-launch start --detach)), whose init
        runs the config's C(BOOT) and C(START) services. A hibernating subhost is woken detached;
        a broken one is stopped first.
      - C(stopped) is C(present) and stopped (C(subhost-launch stop)), with no processes, mounts or netns left.
      - C(absent) stops the subhost and then removes its whole directory, including C(root/),
        the image file and everything else in it. That deletes the subhost's data; it is what
        absent means. The directory is only removed when nothing is mounted below it any more.
    type: str
    choices: [present, started, stopped, absent]
    default: present
  config:
    description:
      - The config file's keys, e.g. C(LOWER), C(BRIDGES), C(HOSTNAME), C(SHARE), C(BOOT), C(START);
        see C(subhost-launch man).
      - A string, number is written as C(KEY='value'); a list as an array C(KEY=('a' 'b c')).
        Values are quoted literally, so C($) and quotes mean nothing special (no expansion of
        C($SUB) and the like). A null value leaves the key out.
      - The file is replaced by exactly these keys (with a header comment), and only when its
        content differs. Omit I(config) to leave the file alone.
      - Keys are written in the order given, so supervised services (C(SERVICE_<name>)) start in
        that order, as the launcher starts them in the order declared. The same keys in another
        order are another config, reported as a change (and restart a running subhost).
      - When the config changes while the subhost is running (or hibernating, which keeps the old
        cables and mounts), it is stopped and started again, unless I(restart=false).
    type: dict
  restart:
    description:
      - Whether a config change stops and starts a running subhost.
      - With C(false) the change is only written and reported (C(restart_needed)).
    type: bool
    default: true
  image:
    description:
      - When this task creates the subhost, keep its C(root/) and C(work/) in a sparse ext4 image
        file of this size (C(subhost-launch create --image SIZE), e.g. C(2G)).
      - Ignored for an existing subhost.
    type: str
  subhost_dir:
    description:
      - Where subhosts live on the managed host.
      - Defaults to the managed host's C($SUBHOST), else C(/opt/subhost).
    type: path
  launcher:
    description:
      - The C(subhost-launch) program, a name looked up on C(PATH) (and C(/usr/local/sbin),
        C(/usr/sbin), C(/sbin)) or a path.
    type: str
    default: subhost-launch
notes:
  - The module runs C(subhost-launch) on the managed host, so it needs root there (C(become)).
  - A running subhost restarted for a config change comes back detached, even if it was started
    in the foreground.
seealso:
  - module: subhost.fleet.subhost_info
"""

EXAMPLES = r"""
- name: A web subhost on bridge br0, overlay over the base debian (not the host's root), running
  subhost.fleet.subhost:
    name: web
    state: started
    config:
      LOWER: /opt/subhost/.bases/debian/root
      BRIDGES: [br0]
      HOSTNAME: web.example.net
      START: [nginx]
      MEMORY_MAX: 512M

- name: Change a limit without restarting, just report it
  subhost.fleet.subhost:
    name: web
    state: started
    restart: false
    config:
      LOWER: /
      BRIDGES: [br0]
      HOSTNAME: web.example.net
      START: [nginx]
      MEMORY_MAX: 1G

- name: Supervised services, restarted when they fail or fail their health check
  subhost.fleet.subhost:
    name: web
    state: started
    config:
      LOWER: /
      BRIDGES: [br0]
      SERVICE_web: [/usr/sbin/nginx, -g, "daemon off;"]
      HEALTH_web: [curl, -fsS, "http://127.0.0.1/"]
      SERVICE_worker: [/usr/local/bin/worker, --queue, jobs]
      RESTART_worker: always
      HEALTH_INTERVAL: 10

- name: A subhost with its addresses, routes and a port published on the host
  subhost.fleet.subhost:
    name: app
    state: started
    config:
      LOWER: /
      BRIDGES: [sub0]
      ADDRESS: [10.0.0.5/24, fd00::5/64]
      GATEWAY: 10.0.0.1
      GATEWAY6: fd00::1
      PUBLISH: [tcp:8080:80, udp:5353:53]
      BOOT: [sh, -c, cd /srv && python3 -m http.server 80 &]

- name: Stop it
  subhost.fleet.subhost:
    name: web
    state: stopped

- name: Remove it, data and all
  subhost.fleet.subhost:
    name: web
    state: absent
"""

RETURN = r"""
subhost:
  description:
    - C(subhost-launch status --json NAME) after the task (before it in check mode); an empty dict
      when the subhost does not exist.
  returned: always
  type: dict
  sample:
    name: web
    dir: /opt/subhost/web
    state: running
    pid: 4242
    uptime_seconds: 3
    root: overlay
    image: false
    cables: [{host: web0, bridge: br0, mac: "02:00:00:00:01:01", present: true}]
    memory_bytes: 10485760
    pids: 3
    problems: []
config_changed:
  description: Whether the config file was (or in check mode would be) rewritten.
  returned: always
  type: bool
restart_needed:
  description: The config changed while the subhost was up and I(restart=false) kept it from restarting.
  returned: always
  type: bool
actions:
  description: What the task did (or in check mode would do), in order.
  returned: always
  type: list
  elements: str
  sample: [create, write config, start --detach]
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible_collections.subhost.fleet.plugins.module_utils.subhost import (
    Launcher,
    mounts_below,
    name_problem,
    remove_tree_mount_free,
)

HEADER = "# Written by Ansible (subhost.fleet.subhost); edits here are replaced on its next run.\n"


def quote(value):
    """VALUE as one bash word that means exactly VALUE."""
    return "'" + value.replace("'", "'\\''") + "'"


def scalar(module, key, value):
    if isinstance(value, bool):
        module.fail_json(
            msg="config %s: %r is a boolean; give a string (quote it in YAML, e.g. 'yes')" % (key, value)
        )
    if isinstance(value, bytes):
        value = to_text(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    module.fail_json(
        msg="config %s: a value must be a string, a number or a list of them, not %s"
        % (key, type(value).__name__)
    )


def render(module, config):
    """The config file for CONFIG: one assignment a line, in CONFIG's order
    (the order the task gave): the launcher starts SERVICE_<name> services
    in the order they are declared."""
    lines = [HEADER]
    for key in config:
        value = config[key]
        if value is None:
            continue
        if not key or not (key[0].isalpha() or key[0] == "_") or not all(
            c.isalnum() or c == "_" for c in key
        ) or not key.isascii():
            module.fail_json(msg="config key %r is not a variable name (e.g. LOWER, BRIDGES)" % (key,))
        if isinstance(value, (list, tuple)):
            words = [quote(scalar(module, key, v)) for v in value]
            lines.append("%s=(%s)\n" % (key, " ".join(words)))
        else:
            lines.append("%s=%s\n" % (key, quote(scalar(module, key, value))))
    return "".join(lines)


def read_text(path):
    try:
        with open(path, "rb") as f:
            return to_text(f.read(), errors="surrogate_or_strict")
    except IOError:
        return None


def write_config(module, path, text):
    """Replaces PATH atomically, keeping its mode (0644 when new)."""
    directory = os.path.dirname(path)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=".config.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(to_bytes(text))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except Exception as e:  # noqa: BLE001 - reported, and the temp file removed
        try:
            os.unlink(tmp)
        except OSError:
            pass
        module.fail_json(msg="cannot write %s: %s" % (path, e))


def validate(module, launcher, name, text, detach, real_config):
    """Has the launcher check TEXT as NAME's config, on a scratch copy:
    `start --dry-run` parses it with the same parser `start` uses and plans
    every step, and changes nothing. Fails the task with the launcher's
    message, naming the real config file."""
    scratch = tempfile.mkdtemp(prefix="subhost-check-", dir=module.tmpdir)
    try:
        d = os.path.join(scratch, name)
        os.makedirs(os.path.join(d, "root"))
        cfg = os.path.join(d, "config")
        with open(cfg, "wb") as f:
            f.write(to_bytes(text))
        check = Launcher(module, base=scratch)
        args = ["start", "--dry-run"] + (["--detach"] if detach else []) + [name]
        rc, out, err = check.run(*args)
        if rc != 0:
            message = (err or out or "").strip().replace(cfg, real_config).replace(scratch, launcher.base)
            module.fail_json(
                msg="config of subhost %s refused, nothing changed: %s" % (name, message),
                rc=rc,
            )
    finally:
        try:
            remove_tree_mount_free(scratch)
        except OSError as e:
            module.warn("scratch directory %s left in place: %s" % (scratch, e))


class Subhost(object):
    def __init__(self, module):
        self.module = module
        p = module.params
        self.name = p["name"]
        self.state = p["state"]
        self.launcher = Launcher(module)
        self.dir = os.path.join(self.launcher.base, self.name)
        self.config_path = os.path.join(self.dir, "config")
        self.actions = []
        self.check = module.check_mode

    def exists(self):
        return os.path.isdir(self.dir)

    def status(self):
        return self.launcher.status(self.name) if self.exists() else {}

    def do(self, action, *args):
        """Runs `subhost-launch ARGS` unless in check mode; records ACTION."""
        self.actions.append(action)
        if self.check:
            return 0, "", ""
        return self.launcher.run(*args)

    def must(self, action, *args, **undo):
        rc, out, err = self.do(action, *args)
        if rc != 0:
            note = self.undo(**undo)
            self.launcher.fail(
                "subhost-launch %s %s failed%s" % (action, self.name, note),
                rc,
                out,
                err,
                actions=self.actions,
            )
        return out

    def undo(self, created=False, old_config=None, restore=False, was_running=False):
        """Puts things back after a launcher failure: a subhost this task
        created goes again; a config this task replaced comes back, and a
        subhost that was running is started again with it. Returns what it
        did, for the task's message."""
        if created:
            self.launcher.run("stop", self.name)
            if mounts_below(self.dir):
                return " (the subhost this task created is still mounted: not removed)"
            try:
                remove_tree_mount_free(self.dir)
            except OSError as e:
                return " (the subhost this task created could not be removed: %s)" % e
            return " (the subhost this task created was removed again)"
        if not restore:
            return ""
        if old_config is None:
            try:
                os.unlink(self.config_path)
            except OSError:
                pass
        else:
            write_config(self.module, self.config_path, old_config)
        if not was_running:
            return " (the previous config was put back)"
        self.launcher.run("stop", self.name)
        rc, out, err = self.launcher.run("start", "--detach", self.name)
        if rc != 0:
            return " (the previous config was put back, but starting the subhost with it failed too: %s)" % (
                (err or out).strip()
            )
        return " (the previous config was put back and the subhost started again with it)"

    def remove(self):
        self.actions.append("remove %s" % self.dir)
        if self.check:
            return
        left = mounts_below(self.dir)
        if left:
            self.module.fail_json(
                msg="not removing %s: still mounted below it: %s (run `subhost-launch stop %s` and "
                "unmount what is left)" % (self.dir, ", ".join(left), self.name),
                actions=self.actions,
            )
        try:
            remove_tree_mount_free(self.dir)
        except OSError as e:
            self.module.fail_json(msg="cannot remove %s: %s" % (self.dir, e), actions=self.actions)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "started", "stopped", "absent"]),
            config=dict(type="dict"),
            restart=dict(type="bool", default=True),
            image=dict(type="str"),
            subhost_dir=dict(type="path"),
            launcher=dict(type="str", default="subhost-launch"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    problem = name_problem(p["name"])
    if problem:
        module.fail_json(msg=problem)

    s = Subhost(module)
    name = s.name
    existed = s.exists()
    before = s.status() if existed else {}
    running = before.get("state") == "running"
    old_config = read_text(s.config_path) if existed else None

    new_config = None
    if s.state != "absent" and p["config"] is not None:
        new_config = render(module, p["config"])
        validate(module, s.launcher, name, new_config, s.state == "started", s.config_path)
    config_changed = new_config is not None and new_config != old_config

    result = dict(changed=False, config_changed=config_changed, restart_needed=False)
    if module._diff:
        result["diff"] = dict(
            before_header=s.config_path,
            after_header=s.config_path,
            before=old_config or "",
            after=(old_config or "") if new_config is None else new_config,
        )

    if s.state == "absent":
        if existed:
            if before.get("state") != "stopped":
                s.must("stop", "stop", name)
            s.remove()
            if module._diff:
                result["diff"]["after"] = ""
        result.update(changed=bool(s.actions), actions=s.actions, subhost=before if s.check else {})
        module.exit_json(**result)

    created = False
    if not existed:
        args = ["create", name] + (["--image", p["image"]] if p["image"] else [])
        s.must("create", *args)
        created = True
        if not s.check:
            # create wrote its documented default config.
            old_config = read_text(s.config_path)
            config_changed = new_config is not None and new_config != old_config
            result["config_changed"] = config_changed

    current = "stopped" if created else before.get("state")
    undo = dict(created=created, old_config=old_config, restore=config_changed, was_running=running)
    if config_changed:
        if current != "stopped" and (p["restart"] or s.state == "stopped"):
            # Stopped with the old config: its START services and HALT are
            # the ones that ran. A running subhost comes back (detached).
            s.must("stop", "stop", name, **dict(undo, restore=False))
            if current == "running" and s.state == "present":
                s.state = "started"
            current = "stopped"
        elif current != "stopped":
            result["restart_needed"] = True
            module.warn(
                "the config of subhost %s changed while it is %s; it keeps the old one until "
                "stopped and started again (restart=false)" % (name, current)
            )
        s.actions.append("write config")
        if not s.check:
            write_config(module, s.config_path, new_config)

    if s.state == "started" and current != "running":
        if current == "broken":
            s.must("stop", "stop", name, **undo)
        s.must("start --detach", "start", "--detach", name, **undo)
    elif s.state == "stopped" and current != "stopped":
        s.must("stop", "stop", name, **undo)

    result["changed"] = bool(s.actions)
    result["actions"] = s.actions
    result["subhost"] = before if s.check else s.status()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
