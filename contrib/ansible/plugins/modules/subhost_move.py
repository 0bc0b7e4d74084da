#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: subhost_move
short_description: Move a stopped or hibernating subhost to another infrastructure host over ssh
description:
  - Runs on the source host (use C(delegate_to) the source) and pipes C(subhost-launch send NAME)
    into C(ssh DEST subhost-launch receive NAME). The stream goes from host to host through a
    kernel pipe and ssh: it never passes through the controller, nor through Python's memory.
  - The source copy is kept: remove it with the C(subhost.fleet.subhost) module (C(state=absent))
    once the destination runs it. Both copies must not run at the same time.
  - Refused, with nothing changed, when the source is running or broken (stop it or let it
    hibernate first), when the destination already has a subhost NAME with other contents, and,
    by the destination's C(receive), when the base it needs is missing there or differs by digest.
    A failed or cut C(receive) leaves nothing on the destination (the launcher builds the subhost
    aside and renames it in only once the whole stream checked out).
  - When the destination already has NAME with the same contents (the two streams' digests,
    with owners taken relative to each side's USERNS range, are equal) nothing is done and the
    task reports no change. That comparison reads the subhost on both hosts; only the digest
    comes back over ssh.
version_added: 0.1.0
author:
  - subhost contributors
requirements:
  - subhost-launch on both hosts (root)
  - Python 3.9+ on both hosts
  - ssh from the source host to the destination, non-interactive (keys, C(BatchMode=yes))
attributes:
  check_mode:
    support: full
    details: Reports whether the subhost would move and moves nothing.
  diff_mode:
    support: none
options:
  name:
    description: The subhost's name, on both hosts.
    type: str
    required: true
  dest:
    description:
      - The destination host as ssh takes it from the source host, C([USER@]HOST); its user must
        be able to run the launcher as root.
    type: str
    required: true
  ssh_args:
    description: Extra ssh arguments, split as a shell would, e.g. C(-p 2222 -i /root/.ssh/move).
    type: str
    default: ""
  subhost_dir:
    description: The subhost directory on the source host. Default C($SUBHOST), else C(/opt/subhost).
    type: path
  launcher:
    description: The launcher on the source host (a path, or a name looked up on C(PATH) and in the sbin dirs).
    type: str
    default: subhost-launch
  dest_subhost_dir:
    description: The subhost directory on the destination; default the launcher's own there (C($SUBHOST) of the ssh session, else C(/opt/subhost)).
    type: str
  dest_launcher:
    description: The launcher on the destination.
    type: str
    default: subhost-launch
  dest_python:
    description: A Python 3 on the destination, for the digest of an existing subhost there.
    type: str
    default: python3
"""

EXAMPLES = r"""
- name: web moves from infra1 to infra2 (stopped first)
  hosts: infra1.example.net
  tasks:
    - subhost.fleet.subhost: {name: web, state: stopped}
    - subhost.fleet.subhost_move:
        name: web
        dest: root@infra2.example.net
        ssh_args: -i /root/.ssh/move_key
    - subhost.fleet.subhost: {name: web, state: started}
      delegate_to: infra2.example.net
"""

RETURN = r"""
moved:
  description: Whether the stream was sent (false when the destination already had it, and in check mode).
  type: bool
  returned: always
source:
  description: C(subhost-launch status --json NAME) on the source host before the task.
  type: dict
  returned: always
digest:
  description: The stream digest both sides agree on, when the destination already had the subhost.
  type: str
  returned: when not moved because it was already there
stdout:
  description: What the destination's C(receive) said.
  type: str
  returned: when moved
"""

import shlex
import subprocess
import sys

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.subhost.fleet.plugins.module_utils.subhost import (
    Launcher,
    name_problem,
    parse_json,
)

# A digest of a `send` stream that is the same on both hosts for the same
# subhost: the stream carries host ids, and a USERNS subhost gets another
# range on the destination, so ids inside the sender's range (owners, ACL
# entries, a v3 capability's root id) count relative to its base. The
# header's range and the end entry (a CRC over those ids) are left out.
# Runs as `python3 -c` on the destination too: only the digest travels.
DIGEST = r"""
import hashlib, json, struct, sys, tarfile
h = hashlib.sha256()
base = count = 0
def rel(i):
    return i - base if count and base <= i < base + count else i
def xattr(name, v):
    if name in ("system.posix_acl_access", "system.posix_acl_default") and len(v) >= 4:
        out = bytearray(v[:4])
        for o in range(4, len(v) - 7, 8):
            tag, perm, i = struct.unpack_from("<HHI", v, o)
            out += struct.pack("<HHI", tag, perm, rel(i) if tag in (2, 8) else i)
        return bytes(out)
    if name == "security.capability" and len(v) == 24:
        return v[:20] + struct.pack("<I", rel(struct.unpack_from("<I", v, 20)[0]))
    return v
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as t:
    for m in t:
        if m.name == "subhost-stream.end":
            continue
        if m.name == "subhost-stream.json":
            j = json.loads(t.extractfile(m).read())
            u = j.pop("userns", None) or {}
            base, count = u.get("base", 0), u.get("count", 0)
            h.update(json.dumps(j, sort_keys=True).encode() + b"\0")
            continue
        p = m.pax_headers
        h.update(repr((m.name, m.type, m.mode, rel(m.uid), rel(m.gid), p.get("mtime", m.mtime),
                       m.size, m.linkname, m.devmajor, m.devminor)).encode())
        for k in sorted(p):
            v = p[k]
            if k.startswith("SCHILY.xattr."):
                v = xattr(k[13:], v.encode("utf-8", "surrogateescape"))
            elif k.startswith("SUBHOST.xattr."):
                v = xattr(k[14:], bytes.fromhex(v))
            elif k in ("path", "linkpath", "mtime", "uid", "gid", "size"):
                continue
            else:
                v = str(v).encode("utf-8", "surrogateescape")
            h.update(repr((k, v)).encode())
        if m.isfile():
            f = t.extractfile(m)
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                h.update(b)
print(h.hexdigest())
"""


class Dest(object):
    """The destination: the launcher there, over ssh."""

    def __init__(self, module):
        self.module = module
        p = module.params
        self.ssh = ["ssh", "-T", "-o", "BatchMode=yes"] + shlex.split(p["ssh_args"] or "") + [p["dest"], "--"]
        words = [p["dest_launcher"]]
        if p["dest_subhost_dir"]:
            words += ["--subhost-dir", p["dest_subhost_dir"]]
        self.launcher = " ".join(shlex.quote(w) for w in words)

    def argv(self, script):
        return self.ssh + [script]

    def run(self, script):
        rc, out, err = self.module.run_command(self.argv(script), environ_update={"LC_ALL": "C"})
        if rc == 255:
            self.module.fail_json(
                msg="ssh to %s failed, nothing changed: %s" % (self.module.params["dest"], err.strip()),
                rc=rc,
                stderr=err,
            )
        return rc, out, err

    def status(self, name):
        """status --json NAME there, or None when there is no such subhost."""
        rc, out, err = self.run("%s status --json %s" % (self.launcher, shlex.quote(name)))
        if rc != 0:
            if ("no subhost %s" % name) in err:
                return None
            self.module.fail_json(
                msg="subhost-launch status %s on %s: %s" % (name, self.module.params["dest"], err.strip()),
                rc=rc,
            )
        return parse_json(self.module, out, "status --json on the destination")


def source_digest(module, src, name):
    send = subprocess.Popen(src.argv("send", name), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    digest = subprocess.run(
        [sys.executable, "-c", DIGEST],
        stdin=send.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    send.stdout.close()
    err = send.stderr.read().decode("utf-8", "replace")
    if send.wait() != 0 or digest.returncode != 0:
        module.fail_json(
            msg="digest of %s on the source failed: %s %s"
            % (name, err.strip(), digest.stderr.decode("utf-8", "replace").strip())
        )
    return digest.stdout.decode().strip()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            dest=dict(type="str", required=True),
            ssh_args=dict(type="str", default=""),
            subhost_dir=dict(type="path"),
            launcher=dict(type="str", default="subhost-launch"),
            dest_subhost_dir=dict(type="str"),
            dest_launcher=dict(type="str", default="subhost-launch"),
            dest_python=dict(type="str", default="python3"),
        ),
        supports_check_mode=True,
    )
    name = module.params["name"]
    problem = name_problem(name)
    if problem:
        module.fail_json(msg=problem)
    src = Launcher(module)
    dest = Dest(module)
    where = module.params["dest"]

    rc, out, err = src.run("status", "--json", name)
    if rc != 0:
        src.fail("subhost %s on the source, nothing changed" % name, rc, out, err)
    source = parse_json(module, out, "status --json")
    state = source.get("state")
    if state not in ("stopped", "hibernating"):
        module.fail_json(
            msg="subhost %s is %s on the source: stop it or let it hibernate first "
            "(subhost.fleet.subhost state=stopped); nothing changed" % (name, state),
            source=source,
        )

    there = dest.status(name)
    if there is not None:
        mine = source_digest(module, src, name)
        script = "%s send %s | %s -c %s" % (
            dest.launcher,
            shlex.quote(name),
            shlex.quote(module.params["dest_python"]),
            shlex.quote(DIGEST),
        )
        rc, out, err = dest.run("set -o pipefail 2>/dev/null; " + script)
        theirs = out.strip()
        if rc == 0 and theirs == mine:
            module.exit_json(changed=False, moved=False, source=source, digest=mine)
        module.fail_json(
            msg="%s already has a subhost %s (%s) with other contents than the source's: "
            "nothing changed; remove or rename one of them first%s"
            % (where, name, there.get("state"), (": " + err.strip()) if rc != 0 else ""),
            source=source,
        )

    if module.check_mode:
        module.exit_json(changed=True, moved=False, source=source)

    send = subprocess.Popen(src.argv("send", name), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    receive = subprocess.run(
        dest.argv("%s receive %s" % (dest.launcher, shlex.quote(name))),
        stdin=send.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Only the child holds the pipe now: a receive that quits early makes
    # send fail on a broken pipe instead of blocking.
    send.stdout.close()
    send_err = send.stderr.read().decode("utf-8", "replace").strip()
    send_rc = send.wait()
    out = receive.stdout.decode("utf-8", "replace")
    err = receive.stderr.decode("utf-8", "replace").strip()
    if receive.returncode != 0 or send_rc != 0:
        msg = "moving subhost %s to %s failed, nothing was made there" % (name, where)
        if receive.returncode != 0:
            msg += "; receive: %s" % (err or "exit status %d" % receive.returncode)
        if send_rc != 0:
            msg += "; send: %s" % (send_err or "exit status %d" % send_rc)
        module.fail_json(msg=msg, source=source, stdout=out, stderr=err)
    module.exit_json(changed=True, moved=True, source=source, stdout=out)


if __name__ == "__main__":
    main()
