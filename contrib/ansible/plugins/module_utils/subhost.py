# -*- coding: utf-8 -*-
# Shared by the subhost.fleet modules: finding and running subhost-launch,
# reading its JSON, and the subhost name rule.
# SPDX-License-Identifier: MIT OR Apache-2.0

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import re

DEFAULT_DIR = "/opt/subhost"

# The launcher's own rule (1-12 of a-z 0-9 _ -, no leading '-'). Checked here
# too because the module builds paths from the name before the launcher sees
# it: "../x" must never reach os.path.join.
NAME_RE = re.compile(r"^[a-z0-9_][a-z0-9_-]{0,11}$")


def name_problem(name):
    """Why NAME is not a valid subhost name, or None when it is."""
    if not NAME_RE.match(name or ""):
        return (
            "invalid subhost name %r: use 1-12 characters of a-z, 0-9, _ and -, "
            "not starting with '-' (it also names the netns and the cables NAME0..NAME99)" % (name,)
        )
    return None


def subhost_dir(module):
    """The subhost directory: the option, else $SUBHOST, else /opt/subhost."""
    return module.params.get("subhost_dir") or os.environ.get("SUBHOST") or DEFAULT_DIR


def launcher_path(module):
    launcher = module.params.get("launcher") or "subhost-launch"
    if "/" in launcher:
        if not os.access(launcher, os.X_OK):
            module.fail_json(msg="launcher %s is not an executable file" % launcher)
        return launcher
    # sbin is not always on a non-login PATH; the launcher is a root tool.
    return module.get_bin_path(
        launcher, required=True, opt_dirs=["/usr/local/sbin", "/usr/sbin", "/sbin"]
    )


class Launcher(object):
    """subhost-launch with --subhost-dir fixed."""

    def __init__(self, module, base=None):
        self.module = module
        self.path = launcher_path(module)
        self.base = base or subhost_dir(module)

    def argv(self, *args):
        return [self.path, "--subhost-dir", self.base] + list(args)

    def run(self, *args):
        """(rc, stdout, stderr) of `subhost-launch ARGS`."""
        return self.module.run_command(self.argv(*args), environ_update={"LC_ALL": "C"})

    def run_or_fail(self, what, *args):
        rc, out, err = self.run(*args)
        if rc != 0:
            self.fail(what, rc, out, err)
        return out

    def fail(self, what, rc, out, err, **extra):
        """Fails the task with the launcher's own message."""
        message = (err or out or "").strip() or "exit status %d" % rc
        self.module.fail_json(msg="%s: %s" % (what, message), rc=rc, stdout=out, stderr=err, **extra)

    def status(self, name):
        """`status --json NAME` as a dict."""
        out = self.run_or_fail("subhost-launch status %s" % name, "status", "--json", name)
        return parse_json(self.module, out, "status --json")

    def list(self):
        out = self.run_or_fail("subhost-launch list", "list", "--json")
        return parse_json(self.module, out, "list --json")


def parse_json(module, text, what):
    try:
        return json.loads(text)
    except ValueError as e:
        module.fail_json(msg="cannot read the output of subhost-launch %s: %s" % (what, e), stdout=text)


def remove_tree_mount_free(path):
    """Removes PATH and everything in it without ever entering another
    mount. Every directory is opened relative to its parent without
    following a link, and one on another device or listed in this mount
    namespace's table stops the removal with an OSError: nothing from that
    mount down is touched (a bind of / left there would otherwise be
    emptied)."""
    points = set(mounts_below(path))
    real = os.path.realpath(path)
    top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if real in points:
            raise OSError(errno.EBUSY, "%s is a mount point: nothing was removed" % real)
        _empty_dir(top, os.fstat(top).st_dev, real, points)
    finally:
        os.close(top)
    os.rmdir(path)


def _empty_dir(fd, dev, where, points):
    for entry in list(os.scandir(fd)):
        here = os.path.join(where, entry.name)
        if entry.is_dir(follow_symlinks=False):
            sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            try:
                if os.fstat(sub).st_dev != dev or here in points:
                    raise OSError(
                        errno.EBUSY, "%s is a mount point: nothing from it down was removed" % here
                    )
                _empty_dir(sub, dev, here, points)
            finally:
                os.close(sub)
            os.rmdir(entry.name, dir_fd=fd)
        else:
            os.unlink(entry.name, dir_fd=fd)


def mounts_below(path):
    """Mount points at or below PATH, from this mount namespace's table."""
    path = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split(" ")[4]
                for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
                    point = point.replace(esc, ch)
                if point == path or point.startswith(path + "/"):
                    found.append(point)
    except IOError:
        pass
    return found
