# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
name: subhost
short_description: Run tasks inside subhosts, on this host or on an infrastructure host over ssh
description:
  - Runs commands inside a running subhost with C(subhost-launch enter NAME -- /bin/sh -c ...),
    and moves files in and out through the same C(enter), byte for byte.
  - With I(subhost_host) set, the same commands run on that infrastructure host over ssh, so one
    controller reaches the subhosts of many hosts.
  - Tasks run as root inside the subhost. Modules need a Python 3.9+ inside it (an overlay with
    C(LOWER=/) has the host's).
version_added: 0.1.0
author:
  - subhost contributors
options:
  remote_addr:
    description:
      - The subhost's name.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_subhost_host
  subhost_dir:
    description:
      - Where subhosts live on the host that runs the launcher (C(--subhost-dir)).
      - Unset, the launcher's default there applies (C($SUBHOST), else C(/opt/subhost)).
    type: str
    vars:
      - name: subhost_dir
  launcher:
    description:
      - The C(subhost-launch) program on the host that runs it, a name on C(PATH) or a path.
    type: str
    default: subhost-launch
    vars:
      - name: subhost_launcher
  subhost_host:
    description:
      - The infrastructure host holding the subhost, reached with C(ssh), as C([USER@]HOST).
      - Unset, the subhost is on the controller itself and the launcher runs directly.
    type: str
    vars:
      - name: subhost_host
  ssh_executable:
    description:
      - The ssh client used for I(subhost_host).
    type: str
    default: ssh
    vars:
      - name: subhost_ssh_executable
  ssh_args:
    description:
      - Extra arguments for ssh to I(subhost_host) (port, identity, options), split like a shell would.
    type: str
    default: ""
    vars:
      - name: subhost_ssh_args
  ssh_control_persist:
    description:
      - How long an idle shared ssh connection to I(subhost_host) stays open (ssh's C(ControlPersist));
        every task then reuses one connection. C(no) opens a connection per command.
    type: str
    default: 60s
    vars:
      - name: subhost_ssh_control_persist
  ssh_control_path_dir:
    description:
      - Where the shared ssh connections' sockets live.
    type: str
    default: ~/.ansible/cp
    env:
      - name: ANSIBLE_SSH_CONTROL_PATH_DIR
    ini:
      - section: ssh_connection
        key: control_path_dir
    vars:
      - name: subhost_ssh_control_path_dir
  pipelining:
    description:
      - Send modules on the stdin of the remote Python instead of copying them in first; one
        C(enter) per task instead of several.
      - On by default, since tasks run as root inside and so need no C(requiretty) exception.
    type: bool
    default: true
    env:
      - name: ANSIBLE_PIPELINING
    ini:
      - section: defaults
        key: pipelining
      - section: connection
        key: pipelining
    vars:
      - name: ansible_pipelining
      - name: ansible_subhost_pipelining
"""

EXAMPLES = r"""
# inventory.yml: web runs on infra1.example.net, as subhost web.
# all:
#   hosts:
#     web:
#       ansible_connection: subhost.fleet.subhost
#       subhost_host: root@infra1.example.net
#       ansible_python_interpreter: /usr/bin/python3

- hosts: web
  gather_facts: false
  tasks:
    - ansible.builtin.command: hostname
"""

import hashlib
import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

# ssh reports its own failures (unreachable host, refused key) with 255.
SSH_FAILED = 255


class Connection(ConnectionBase):
    """Runs tasks inside a subhost through `subhost-launch enter`."""

    transport = "subhost.fleet.subhost"
    has_pipelining = True
    # Tasks run as the subhost's root; become switches from there.
    default_user = "root"

    def __init__(self, play_context, new_stdin, *args, **kwargs):
        super(Connection, self).__init__(play_context, new_stdin, *args, **kwargs)
        self._name = None

    def _connect(self):
        if not self._connected:
            self._name = self.get_option("remote_addr")
            where = self.get_option("subhost_host") or "this host"
            display.vvv("ESTABLISH SUBHOST CONNECTION to %s on %s" % (self._name, where), host=self._name)
            self._connected = True
        return self

    def _launcher_argv(self, inner):
        """`subhost-launch [--subhost-dir D] enter NAME -- INNER...`, wrapped
        in ssh when the subhost is on another host."""
        argv = [self.get_option("launcher")]
        if self.get_option("subhost_dir"):
            argv += ["--subhost-dir", self.get_option("subhost_dir")]
        argv += ["enter", self._name, "--"] + list(inner)
        host = self.get_option("subhost_host")
        if not host:
            return argv
        ssh = [self.get_option("ssh_executable"), "-T", "-o", "BatchMode=yes"]
        persist = self.get_option("ssh_control_persist")
        if persist and persist != "no":
            cp_dir = os.path.expanduser(self.get_option("ssh_control_path_dir"))
            if not os.path.isdir(cp_dir):
                os.makedirs(cp_dir, 0o700)
            # ssh's own %C is 40 characters: too long for a socket path under
            # many temp dirs. Ten of a hash of everything that picks the
            # connection, as Ansible's ssh plugin does.
            key = "\0".join([host, self.get_option("ssh_args") or "", self.get_option("ssh_executable")])
            digest = hashlib.sha1(to_bytes(key, errors="surrogate_or_strict")).hexdigest()[:10]
            ssh += [
                "-o", "ControlMaster=auto",
                "-o", "ControlPersist=%s" % persist,
                "-o", "ControlPath=%s" % os.path.join(cp_dir, "subhost-" + digest),
            ]
        ssh += shlex.split(self.get_option("ssh_args") or "")
        # The remote side runs this through the login shell: one quoted word each.
        return ssh + [host, "--", " ".join(shlex.quote(a) for a in argv)]

    def _run(self, inner, stdin, stdout=subprocess.PIPE):
        argv = self._launcher_argv(inner)
        display.vvv("EXEC %s" % " ".join(shlex.quote(a) for a in argv), host=self._name)
        try:
            return subprocess.Popen(
                [to_bytes(a, errors="surrogate_or_strict") for a in argv],
                stdin=stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
            )
        except OSError as e:
            raise AnsibleConnectionFailure("cannot run %s: %s" % (argv[0], to_native(e)))

    def _check_reached(self, rc, stderr):
        """Failures of the way in (ssh, the launcher) are connection
        failures, not failures of the command inside."""
        text = to_text(stderr, errors="surrogate_or_replace").strip()
        if self.get_option("subhost_host") and rc == SSH_FAILED:
            raise AnsibleConnectionFailure(
                "ssh to %s failed: %s" % (self.get_option("subhost_host"), text)
            )
        # enter's own errors: 1 (cannot enter), 125 (usage), always with
        # the launcher's prefix, which a command inside would have to print
        # itself to be mistaken for one.
        if rc in (1, 125, 127) and text.startswith("subhost-launch: error:"):
            raise AnsibleConnectionFailure("subhost %s: %s" % (self._name, text))
        launcher = os.path.basename(self.get_option("launcher"))
        if rc == 127 and self.get_option("subhost_host") and launcher in text and "not found" in text:
            raise AnsibleConnectionFailure(
                "subhost %s: no %s on %s: %s"
                % (self._name, self.get_option("launcher"), self.get_option("subhost_host"), text)
            )

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        executable = self._play_context.executable or "/bin/sh"
        display.vvv("EXEC in %s: %s" % (self._name, cmd), host=self._name)
        p = self._run([executable, "-c", cmd], subprocess.PIPE)
        stdout, stderr = p.communicate(in_data)
        self._check_reached(p.returncode, stderr)
        return p.returncode, stdout, stderr

    def put_file(self, in_path, out_path):
        super(Connection, self).put_file(in_path, out_path)
        display.vvv("PUT %s TO %s" % (in_path, out_path), host=self._name)
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound("file or module does not exist: %s" % in_path)
        out = shlex.quote(out_path)
        # The file is the child's stdin: the kernel streams it, whatever its
        # size, and no byte passes through Python.
        with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as f:
            p = self._run(["/bin/sh", "-c", "cat > %s" % out], f)
            _, stderr = p.communicate()
        self._check_reached(p.returncode, stderr)
        if p.returncode != 0:
            raise AnsibleError(
                "failed to transfer %s to %s in subhost %s: %s"
                % (in_path, out_path, self._name, to_native(stderr).strip())
            )

    def fetch_file(self, in_path, out_path):
        super(Connection, self).fetch_file(in_path, out_path)
        display.vvv("FETCH %s TO %s" % (in_path, out_path), host=self._name)
        src = shlex.quote(in_path)
        out_b = to_bytes(out_path, errors="surrogate_or_strict")
        # Straight into the local file: the child writes it, nothing is
        # held in memory here.
        try:
            with open(out_b, "wb") as f:
                p = self._run(["/bin/sh", "-c", "cat -- %s" % src], subprocess.DEVNULL, stdout=f)
                _, stderr = p.communicate()
        except IOError as e:
            raise AnsibleError("cannot write %s: %s" % (out_path, to_native(e)))
        self._check_reached(p.returncode, stderr)
        if p.returncode != 0:
            try:
                os.unlink(out_b)
            except OSError:
                pass
            raise AnsibleError(
                "failed to fetch %s from subhost %s: %s" % (in_path, self._name, to_native(stderr).strip())
            )

    def reset(self):
        # Nothing is held open per subhost; a shared ssh connection stays
        # for the next task.
        self.close()

    def close(self):
        self._connected = False
